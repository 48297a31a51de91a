"""Black-box: schemathesis against the real server's own OpenAPI document, on real Docker.

Every check is on (server errors, documented statuses, content types, response schemas
and headers, 405 with Allow, auth enforced, ...), with a fixed seed and a bounded number
of examples per operation so that the run is repeatable and takes well under 2 minutes.
A real job exists during the run, so that the status and output routes answer 200 too.
Run in zipfile mode (zip upload and download) and in filesystem mode (in-network: input
and output directories, JSON listing of the output).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import uuid
import zipfile
from typing import Any

import pytest
import requests

from .conftest import TEST_IMAGE
from .server import start_server

pytestmark = pytest.mark.docker

MAX_EXAMPLES = int(os.environ.get("PFCON_SCHEMATHESIS_EXAMPLES", "40"))
SEED = int(os.environ.get("PFCON_SCHEMATHESIS_SEED", "20260701"))
TIMEOUT = 300


def _config(token: str, jid: str, output_dir: str | None) -> str:
    """schemathesis.toml: the bearer token, a real job for the status and output routes,
    and the rejections of schema-valid data that are pfcon's, not the schema's."""
    return f"""
[auth.openapi.BearerToken]
bearer = "{token}"

# Valid-looking credentials are still wrong ones: pfcon answers 400, not 401.
[[operations]]
include-name = "POST /api/v1/auth-token"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400"]

# A schema cannot say that the image must exist on the engine nor that data_file must be
# a zip archive: generated jobs are refused with 400 (and a repeated id with 409).
[[operations]]
include-name = "POST /api/v1/jobs"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "409"]

[[operations]]
include-name = "GET /api/v1/jobs/{{jid}}"
parameters = {{ "path.jid" = "{jid}" }}

[[operations]]
include-name = "GET /api/v1/jobs/{{jid}}/file"
parameters = {{ "path.jid" = "{jid}"{f', "query.job_output_path" = "{output_dir}"' if output_dir else ""} }}

# Not the real job: it must stay for the routes above (the test deletes it at the end).
[[operations]]
include-name = "DELETE /api/v1/jobs/{{jid}}"
parameters = {{ "path.jid" = "{jid}-gone" }}

# pfcon 6: the job submitted through pfcon 5 is the same plugin job (one scheduler object).
[[operations]]
include-name = "POST /api/v1/pluginjobs"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "409"]

[[operations]]
include-name = "GET /api/v1/pluginjobs/{{jid}}"
parameters = {{ "path.jid" = "{jid}" }}

[[operations]]
include-name = "GET /api/v1/pluginjobs/{{jid}}/file"
parameters = {{ "path.jid" = "{jid}"{f', "query.job_output_path" = "{output_dir}"' if output_dir else ""} }}
""" + "".join(f"""
[[operations]]
include-name = "DELETE /api/v1/{kind}jobs/{{jid}}"
parameters = {{ "path.jid" = "{jid}-gone" }}
""" for kind in ("plugin", "copy", "upload", "delete")) + "".join(f"""
# An op job needs a job whose other jobs are in the right state: schema-valid ids are refused
# when they end in an op job's suffix (400), or the job they name is not ready (409, 404).
[[operations]]
include-name = "POST /api/v1/{kind}jobs"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "404", "409"]
""" + (_ARRAY_AS_OBJECT if kind == "copy" else "") for kind in ("copy", "upload", "delete"))


# A form field cannot tell an array from an object: `input_dirs={}` arrives as the directory
# name "{}", a valid one (and in a mode that needs no copy, not even looked at).
_ARRAY_AS_OBJECT = 'checks.negative_data_rejection.expected-statuses = ["201", "400", "401", "404", "409"]\n'


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buf.getvalue()


def _submit(api: str, headers: dict[str, str], jid: str, dirs: tuple[str, str] | None) -> requests.Response:
    form: dict[str, Any] = {
        "jid": jid,
        "entrypoint": ["sh", "-c", 'cp -R "$0"/. "$1"/'],
        "auid": "cube",
        "number_of_workers": "1",
        "cpu_limit": "1000",
        "memory_limit": "200",
        "gpu_limit": "0",
        "image": TEST_IMAGE,
        "type": "ds",
    }
    if dirs is not None:
        form["input_dirs"], form["output_dir"] = [dirs[0]], dirs[1]
        return requests.post(f"{api}jobs/", headers=headers, data=form, timeout=60)
    files = {"data_file": ("data.zip", _zip({"a.txt": b"a"}), "application/zip")}
    return requests.post(f"{api}jobs/", headers=headers, data=form, files=files, timeout=60)


def _remove_containers_of(docker_client: Any, storebase: str) -> list[str]:
    """Job containers whose data lives under this server's storeBase (whatever their id)."""
    removed = []
    for c in docker_client.containers.list(all=True, filters={"label": "org.chrisproject.job_type"}):
        sources = [m.get("Source", "") for m in c.attrs.get("Mounts") or ()]
        if any(s == storebase or s.startswith(storebase + os.sep) for s in sources):
            c.remove(force=True)
            removed.append(c.name)
    return removed


MODES = {"zipfile": {}, "filesystem": {"PFCON_INNETWORK": "true", "STORAGE_ENV": "filesystem"}}


@pytest.mark.parametrize("mode", list(MODES))
def test_the_served_openapi_document_holds_for_generated_requests(docker_client: Any, tmp_path: Any, mode: str) -> None:
    storebase = tmp_path / "storeBase"
    storebase.mkdir()
    dirs = None
    if MODES[mode]:
        dirs = ("home/cube/feeds/1/in", "home/cube/feeds/1/out")
        (storebase / dirs[0]).mkdir(parents=True)
        (storebase / dirs[0] / "a.txt").write_bytes(b"a")
        (storebase / dirs[1]).mkdir(parents=True)
    server = start_server(
        str(storebase), str(tmp_path / "server.log"), UPLOAD_DIR=str(tmp_path / "uploads"), **MODES[mode]
    )
    stray: list[str] = []
    try:
        headers = {"Authorization": f"Bearer {server.token()}"}
        jid = f"st-{uuid.uuid4().hex[:12]}"
        r = _submit(server.api, headers, jid, dirs)
        assert r.status_code == 201, r.text
        config = tmp_path / "schemathesis.toml"
        config.write_text(_config(server.token(), jid, dirs[1] if dirs else None))
        report = tmp_path / "report.json"
        started = time.monotonic()
        run = subprocess.run(
            [
                sys.executable, "-m", "schemathesis.cli",
                "--config-file", str(config), "--no-color",
                "run", f"{server.api}schema/openapi.json",
                "--checks", "all",
                "--max-examples", str(MAX_EXAMPLES),
                "--seed", str(SEED),
                "--workers", "2",
                "--request-timeout", "30",
                "--report", "json", "--report-json-path", str(report),
            ],
            capture_output=True, text=True, timeout=TIMEOUT, cwd=tmp_path,
        )
        elapsed = time.monotonic() - started
        output = run.stdout + run.stderr
        assert run.returncode == 0, f"schemathesis found problems:\n{output}\n--- server log tail ---\n{server.logs()[-5000:]}"
        assert elapsed < 150, f"the run took {elapsed:.0f}s"
        summary = json.loads(report.read_text()) if report.exists() else {}
        assert summary, "no JSON report"
        # The real job was reached (its routes answered 200), then it is deleted like CUBE does.
        r = requests.delete(f"{server.api}jobs/{jid}/", headers=headers, timeout=60)
        assert r.status_code == 204, r.text
        r = requests.get(f"{server.api}pluginjobs/{jid}/", headers=headers, timeout=60)
        assert r.status_code == 404  # the same scheduler object, seen through pfcon 6
        # Schemathesis may also have found the real job (the operators' listing names it) and
        # run its op jobs, as CUBE may: removed like CUBE removes them, before the stray check.
        for kind in ("copy", "upload", "delete"):
            r = requests.delete(f"{server.api}{kind}jobs/{jid}/", headers=headers, timeout=60)
            assert r.status_code == 204, r.text
    finally:
        server.stop()
        stray = _remove_containers_of(docker_client, str(storebase))
    # Generated jobs are all refused (no such image, no zip) and the real one was deleted.
    assert stray == []
