"""Drive a server with python-pfconclient 4.0.0, which cannot share the test venv with
3.3.0: run by .venv-pfconclient4/bin/python (scripts/install.sh), JSON in on stdin, JSON
out on stdout. Standard library and pfconclient only.

Input: ``{"url": ..., "user": ..., "password": ..., "steps": [...]}``; each step is one of

* ``{"call": "<Client method>", "args": [...], "kwargs": {...}}`` — ``job_type`` values are
  given by name (``"COPY"``, ``"PLUGIN"``, ...) as the first argument; ``data_file_b64``
  in kwargs becomes the ``data_file`` BytesIO;
* ``{"wait": "<JOB TYPE>", "jid": ..., "timeout": s}`` — poll ``get_job_status`` until a
  terminal status;
* ``{"token": true}`` — a token from ``Client.get_auth_token``.

Output: one result per step: ``{"ok": <value>}`` (bytes as ``{"b64": ...}``) or
``{"error": <text>, "code": <status>, "type": <exception class>}``.
"""

import base64
import io
import json
import sys
import time

from pfconclient.client import Client, JobType
from pfconclient.exceptions import PfconRequestException

TERMINAL = ("finishedSuccessfully", "finishedWithError", "undefined")


def encode(value):
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode()}
    return value


def run(request):
    token = Client.get_auth_token(request["url"] + "auth-token/", request["user"], request["password"])
    client = Client(request["url"], token)
    results = []
    for step in request["steps"]:
        try:
            if "wait" in step:
                deadline = time.monotonic() + step.get("timeout", 120)
                while True:
                    status = client.get_job_status(JobType[step["wait"]], step["jid"])
                    if status["compute"]["status"] in TERMINAL or time.monotonic() > deadline:
                        break
                    time.sleep(step.get("interval", 0.3))
                results.append({"ok": status})
                continue
            if "token" in step:
                results.append({"ok": Client.get_auth_token(request["url"] + "auth-token/", request["user"], request["password"])})
                continue
            args = list(step.get("args", []))
            if args and isinstance(args[0], str) and args[0] in JobType.__members__:
                args[0] = JobType[args[0]]
            kwargs = dict(step.get("kwargs", {}))
            if "data_file_b64" in kwargs:
                kwargs["data_file"] = io.BytesIO(base64.b64decode(kwargs.pop("data_file_b64")))
            value = getattr(client, step["call"])(*args, **kwargs)
            results.append({"ok": encode(value)})
        except PfconRequestException as e:
            results.append({"error": str(e), "code": getattr(e, "code", None), "type": type(e).__name__})
    return {"results": results, "client": {"pfcon_innetwork": client.pfcon_innetwork,
            "requires_copy_job": client.requires_copy_job, "requires_upload_job": client.requires_upload_job}}


if __name__ == "__main__":
    json.dump(run(json.load(sys.stdin)), sys.stdout)
