"""A fake Cromwell server for the Cromwell adapter's tests (no Cromwell can be installed here).

It answers the part of Cromwell's REST API (``/api/workflows/v1``, ``/engine/v1``) that the
adapter uses, with the status codes and bodies Cromwell documents (docs/api/RESTAPI.md) and
its sources show (``CromwellApiService``, ``MetadataRouteSupport``; error bodies
``{"status": "fail"|"error", "message": ...}``), keeps workflows in memory, and *runs* each
workflow's one task like Cromwell's local Docker backend: ``docker run`` of the runtime's
``docker`` image, with the runtime's ``mounts`` (or ``sharedir`` at ``/share``) bound (a
missing host path fails the task, as Singularity's ``--bind`` does: it is never created) and
its ``user``, the command run by ``/bin/sh``, stdout and stderr written to
``<root>/cromwell-executions/<workflow>/<id>/call-<task>/execution/{stdout,stderr}``.

What it reproduces on purpose:

* submit answers ``201 {"id", "status": "Submitted"}`` at once; the workflow is picked up
  a moment later (``Running``), its call appears (``QueuedInCromwell``, ``Starting``,
  ``Running``) and ends ``Done``/``Failed`` with Cromwell's failure messages;
* the label query reads a *summary* that lags behind (``summary_lag`` seconds), as
  Cromwell's summary refresh does: a just-submitted workflow, a label just patched, or a
  change of status (and the name, start and end that come with it) shows in queries only
  after the lag; ``PATCH .../labels`` on a workflow the summary does not know yet is 404;
  ``GET .../labels`` answers the current labels;
* abort (``WorkflowStoreEngineActor``) answers ``200 {"status": "Aborted"}`` for a workflow
  not picked up yet (``Submitted``, ``On Hold``: it never runs), ``200 {"status":
  "Aborting"}`` for one in progress (its task is stopped in the background, then the
  workflow is ``Aborted``), and ``404 "Couldn't abort <id> because no workflow with that ID
  is in progress"`` for a finished or unknown one; a malformed id is 400 ``Invalid
  workflow ID``;
* query filters ``label``, ``labelor``, ``excludeLabelAnd``, ``excludeLabelOr``, ``id``,
  ``name``, ``status``, ``additionalQueryResultFields`` (unknown keys: 400).
"""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import json
import os
import re
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

CONTAINER_LABEL = "org.chrisproject.test.fake-cromwell"
_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_QUERY_KEYS = {
    "start", "end", "submission", "status", "label", "labelor", "excludeLabelAnd", "excludeLabelOr",
    "name", "id", "additionalQueryResultFields", "includeSubworkflows", "page", "pageSize",
}  # fmt: skip
_TERMINAL = {"Succeeded", "Failed", "Aborted"}


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def dedent_command(text: str) -> str:
    """Cromwell strips the whitespace common to the command's non-blank lines."""
    lines = text.split("\n")
    indents = [len(line) - len(line.lstrip(" \t")) for line in lines if line.strip()]
    cut = min(indents) if indents else 0
    return "\n".join(line[cut:] for line in lines).strip("\n")


@dataclass
class ParsedWdl:
    workflow: str
    task: str
    command: str
    runtime: dict[str, str]


def parse_wdl(source: str) -> ParsedWdl:
    """Just enough WDL 1.0 for one task called by one workflow (what the adapter renders)."""
    if not source.lstrip().startswith("version 1.0"):
        raise ValueError("Workflow source must declare 'version 1.0'")
    workflow = re.search(r"^workflow\s+(\w+)\s*\{", source, re.M)
    task = re.search(r"^task\s+(\w+)\s*\{", source, re.M)
    command = re.search(r"command\s*<<<\n(.*?)\n\s*>>>", source, re.S)
    runtime = re.search(r"runtime\s*\{\n(.*?)\n\s*\}", source, re.S)
    if not (workflow and task and command and runtime):
        raise ValueError("Failed to process workflow definition: expected one task (command <<< >>>, runtime)")
    body = command.group(1)
    if "~{" in body:
        raise ValueError(f"Failed to evaluate placeholder in the command: {body[body.index('~{') :][:40]!r}")
    attributes = {}
    for line in runtime.group(1).splitlines():
        if not line.strip():
            continue
        m = re.fullmatch(r"\s*(\w+):\s*'([^'\\]*)'\s*", line)
        if not m:
            raise ValueError(f"Failed to process runtime section: {line.strip()!r}")
        attributes[m.group(1)] = m.group(2)
    return ParsedWdl(workflow.group(1), task.group(1), dedent_command(body), attributes)


@dataclass
class Workflow:
    id: str
    source: str
    labels: dict[str, str]
    submitted_at: float  # monotonic
    submission: str
    status: str = "Submitted"
    name: str | None = None
    start: str | None = None
    end: str | None = None
    call_name: str | None = None
    call: dict[str, Any] | None = None
    failures: list[dict[str, Any]] = field(default_factory=list)
    label_patches: list[tuple[float, dict[str, str]]] = field(default_factory=list)
    # (when, status, name, start, end): what the summary the query reads learns, lag later
    history: list[tuple[float, str, str | None, str | None, str | None]] = field(default_factory=list)
    aborting: bool = False
    container: str | None = None
    process: subprocess.Popen[bytes] | None = None  # ``docker run`` of the task
    docker_args: list[str] = field(default_factory=list)


class FakeCromwell:
    def __init__(
        self,
        root: str,
        *,
        summary_lag: float = 0.3,
        pickup_delay: float = 0.2,
        bind: str = "mounts",  # "mounts": each runtime mount; "sharedir": sharedir at /share
        docker: str = "docker",
    ) -> None:
        self.root = root
        self.summary_lag = summary_lag
        # Set (a monotonic time): the summary refresh stalls there, as it can fall behind a
        # busy Cromwell; queries show what it knew then.
        self.summary_paused_at: float | None = None
        self.pickup_delay = pickup_delay
        self.bind = bind
        self.docker = docker
        self.workflows: dict[str, Workflow] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.RLock()
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None
        self.port = 0
        self.connections: set[Any] = set()

    # -- lifecycle --------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> str:
        """Listen (again, on the same port after :meth:`stop`); workflows are kept."""
        fake = self

        class Handler(_Handler):
            cromwell = fake

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-cromwell", daemon=True)
        self.thread.start()
        return self.url

    def stop(self) -> None:
        """Stop answering (Cromwell down); running tasks go on, as on a real backend."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        with self.lock:
            connections, self.connections = list(self.connections), set()
        for connection in connections:  # kept-alive connections die with the server
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.stop()
        with self.lock:
            running = [w for w in self.workflows.values() if w.status not in _TERMINAL]
            for wf in self.workflows.values():
                wf.aborting = True
        for wf in running:
            self._kill(wf)

    def _kill(self, wf: Workflow, patience: float = 60.0) -> None:
        """Remove the task's container until its ``docker run`` has ended: the container
        may not exist yet when the abort comes (``docker run`` is still creating it)."""
        deadline = time.monotonic() + patience
        while True:
            with self.lock:
                container, process = wf.container, wf.process
            if container:
                subprocess.run([self.docker, "rm", "-f", container], capture_output=True, check=False)
            if process is None or process.poll() is not None or time.monotonic() > deadline:
                return
            time.sleep(0.1)

    # -- the summary the query reads (it lags) -------------------------------------
    def _summary_time(self) -> float:
        now = time.monotonic()
        return now if self.summary_paused_at is None else min(now, self.summary_paused_at)

    def _summary_labels(self, wf: Workflow, now: float) -> dict[str, str]:
        labels = dict(wf.labels)
        for at, patch in wf.label_patches:
            if at + self.summary_lag <= now:
                labels.update(patch)
        return labels

    def _summarized(self, wf: Workflow, now: float) -> bool:
        return wf.submitted_at + self.summary_lag <= now

    @staticmethod
    def _changed(wf: Workflow) -> None:
        """Record the workflow's status (with its name, start and end) for the summary."""
        wf.history.append((time.monotonic(), wf.status, wf.name, wf.start, wf.end))

    def _summary(self, wf: Workflow, now: float) -> dict[str, Any]:
        """What the query shows of the workflow: its latest state at least the lag old."""
        known = [h for h in wf.history if h[0] + self.summary_lag <= now] or wf.history[:1]
        _, status, name, start, end = known[-1]
        return {"status": status, "name": name, "start": start, "end": end}

    def _current_labels(self, wf: Workflow) -> dict[str, str]:
        labels = dict(wf.labels)
        for _, patch in wf.label_patches:
            labels.update(patch)
        return labels

    # -- API ------------------------------------------------------------------------
    def submit(self, parts: dict[str, bytes]) -> tuple[int, Any]:
        if "workflowSource" not in parts and "workflowUrl" not in parts:
            return 400, fail("Error(s): Either workflowSource or workflowUrl needs to be supplied")
        unknown = set(parts) - {
            "workflowSource", "workflowUrl", "workflowInputs", "workflowOptions", "labels", "workflowType",
            "workflowTypeVersion", "workflowRoot", "workflowDependencies", "workflowOnHold", "requestedWorkflowId",
        }  # fmt: skip
        if unknown:
            return 400, fail(f"Error(s): Unexpected body part name: {sorted(unknown)[0]}")
        labels: dict[str, str] = {}
        if "labels" in parts:
            try:
                raw = json.loads(parts["labels"] or b"{}")
            except ValueError:
                return 400, fail("Error(s): Labels must be a JSON object")
            if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
                return 400, fail("Error(s): Labels must be a JSON object of strings")
            problems = label_problems(raw)
            if problems:
                return 400, fail("Error(s): " + ",".join(problems))
            labels = raw
        wid = str(uuid.uuid4())
        labels["cromwell-workflow-id"] = f"cromwell-{wid}"
        wf = Workflow(wid, parts.get("workflowSource", b"").decode("utf-8"), labels, time.monotonic(), now_iso())
        with self.lock:
            self._changed(wf)
            self.workflows[wid] = wf
        threading.Thread(target=self._run, args=(wf,), name=f"fake-cromwell-{wid[:8]}", daemon=True).start()
        return 201, {"id": wid, "status": "Submitted"}

    def get_workflow(self, wid: str) -> tuple[Workflow | None, tuple[int, Any] | None]:
        if not _UUID_RE.match(wid):
            return None, (400, fail(f"Invalid workflow ID: '{wid}'."))
        wf = self.workflows.get(wid)
        if wf is None:
            return None, (404, fail(f"Unrecognized workflow ID: {wid}"))
        return wf, None

    def status(self, wid: str) -> tuple[int, Any]:
        wf, error = self.get_workflow(wid)
        return error or (200, {"id": wid, "status": wf.status})  # type: ignore[union-attr]

    def metadata(self, wid: str) -> tuple[int, Any]:
        wf, error = self.get_workflow(wid)
        if error:
            return error
        assert wf is not None
        with self.lock:
            body: dict[str, Any] = {
                "id": wf.id,
                "status": wf.status,
                "submission": wf.submission,
                "labels": self._current_labels(wf),
                "submittedFiles": {
                    "workflow": wf.source,
                    "workflowType": "WDL",
                    "workflowTypeVersion": "1.0",
                    "inputs": "{}",
                    "options": "{}",
                    "labels": json.dumps(wf.labels),
                    "root": "",
                    "workflowUrl": "",
                },  # fmt: skip
                "calls": {wf.call_name: [dict(wf.call)]} if wf.call and wf.call_name else {},
                "inputs": {},
                "outputs": {},
            }
            if wf.name:
                body["workflowName"] = wf.name
            for key in ("start", "end"):
                if getattr(wf, key):
                    body[key] = getattr(wf, key)
            if wf.failures:
                body["failures"] = json.loads(json.dumps(wf.failures))
        return 200, body

    def logs(self, wid: str) -> tuple[int, Any]:
        wf, error = self.get_workflow(wid)
        if error:
            return error
        assert wf is not None
        calls = {}
        if wf.call and wf.call_name:
            calls[wf.call_name] = [
                {k: wf.call[k] for k in ("stdout", "stderr", "attempt", "shardIndex") if k in wf.call}
            ]
        return 200, {"id": wid, "calls": calls}

    def query(self, filters: Any) -> tuple[int, Any]:
        if not isinstance(filters, list) or not all(isinstance(f, dict) for f in filters):
            return 400, fail("The query body must be a JSON list of objects")
        params: list[tuple[str, str]] = [(k, str(v)) for f in filters for k, v in f.items()]
        unknown = sorted({k for k, _ in params} - _QUERY_KEYS)
        if unknown:
            return 400, fail(f"Unrecognized query keys: {', '.join(unknown)}")
        by_key: dict[str, list[str]] = {}
        for k, v in params:
            by_key.setdefault(k, []).append(v)
        label_filters: dict[str, list[tuple[str, str]]] = {}
        for key in ("label", "labelor", "excludeLabelAnd", "excludeLabelOr"):
            pairs = []
            for value in by_key.get(key, []):
                k, sep, v = value.partition(":")
                if not sep or not k:
                    return 400, fail(f"Label values do not match allowed pattern label-key:label-value: {value}")
                pairs.append((k, v))
            label_filters[key] = pairs
        extra = by_key.get("additionalQueryResultFields", [])
        if set(extra) - {"labels", "parentWorkflowId"}:
            return 400, fail(f"Unrecognized additionalQueryResultFields: {extra}")
        now = self._summary_time()
        results = []
        with self.lock:
            for wf in self.workflows.values():
                if not self._summarized(wf, now):
                    continue
                labels = self._summary_labels(wf, now)
                has = [labels.get(k) == v for k, v in label_filters["label"]]
                if not all(has):
                    continue
                if label_filters["labelor"] and not any(labels.get(k) == v for k, v in label_filters["labelor"]):
                    continue
                ex_and = label_filters["excludeLabelAnd"]
                if ex_and and all(labels.get(k) == v for k, v in ex_and):
                    continue
                if any(labels.get(k) == v for k, v in label_filters["excludeLabelOr"]):
                    continue
                summary = self._summary(wf, now)
                if "id" in by_key and wf.id not in by_key["id"]:
                    continue
                if "status" in by_key and summary["status"] not in by_key["status"]:
                    continue
                if "name" in by_key and summary["name"] not in by_key["name"]:
                    continue
                result: dict[str, Any] = {"id": wf.id, "status": summary["status"], "submission": wf.submission}
                for key in ("name", "start", "end"):
                    if summary[key]:
                        result[key] = summary[key]
                if "labels" in extra:
                    result["labels"] = labels
                results.append(result)
        return 200, {"results": results, "totalResultsCount": len(results)}

    def patch_labels(self, wid: str, body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict) or not all(isinstance(v, str) for v in body.values()):
            return 400, fail("The labels must be a JSON object of strings")
        problems = label_problems(body)
        if problems:
            return 400, fail(",".join(problems))
        wf, error = self.get_workflow(wid)
        if error and error[0] == 404 or (wf is not None and not self._summarized(wf, self._summary_time())):
            return 404, fail(f"Unrecognized workflow ID: {wid}")
        if error:
            return error
        assert wf is not None
        with self.lock:
            wf.label_patches.append((time.monotonic(), dict(body)))
        return 200, {"id": wid, "labels": dict(body)}

    def abort(self, wid: str) -> tuple[int, Any]:
        if not _UUID_RE.match(wid):
            return 400, fail(f"Invalid workflow ID: '{wid}'.")
        with self.lock:
            wf = self.workflows.get(wid)
            if wf is None or wf.status in _TERMINAL:
                return 404, error(f"Couldn't abort {wid} because no workflow with that ID is in progress")
            wf.aborting = True
            if wf.status in ("Submitted", "On Hold"):  # not picked up: removed from the store, never run
                wf.status = "Aborted"
                wf.end = now_iso()
                self._changed(wf)
                return 200, {"id": wid, "status": "Aborted"}
            wf.status = "Aborting"
            self._changed(wf)
        # Cromwell answers at once and stops the job in the background.
        threading.Thread(target=self._kill, args=(wf,), name=f"fake-cromwell-abort-{wid[:8]}", daemon=True).start()
        return 200, {"id": wid, "status": "Aborting"}

    def get_labels(self, wid: str) -> tuple[int, Any]:
        wf, error = self.get_workflow(wid)
        if error:
            return error
        assert wf is not None
        with self.lock:
            return 200, {"id": wid, "labels": self._current_labels(wf)}

    # -- the backend ---------------------------------------------------------------------
    def _run(self, wf: Workflow) -> None:
        time.sleep(self.pickup_delay)
        with self.lock:
            if wf.aborting:
                return
            wf.status = "Running"
            wf.start = now_iso()
            self._changed(wf)
        try:
            parsed = parse_wdl(wf.source)
        except ValueError as e:
            with self.lock:
                wf.failures = [{"message": "Workflow input processing failed", "causedBy": [
                    {"message": str(e), "causedBy": []}]}]  # fmt: skip
                wf.status = "Failed"
                wf.end = now_iso()
                self._changed(wf)
            return
        call_name = f"{parsed.workflow}.{parsed.task}"
        execution = os.path.join(
            self.root, "cromwell-executions", parsed.workflow, wf.id, f"call-{parsed.task}", "execution"
        )
        os.makedirs(execution, exist_ok=True)
        stdout, stderr = os.path.join(execution, "stdout"), os.path.join(execution, "stderr")
        with open(os.path.join(execution, "script"), "w") as f:
            f.write(parsed.command + "\n")
        container = f"cromwell-fake-{wf.id}"
        args = [
            self.docker,
            "run",
            "--rm",
            "--pull",
            "never",
            "--name",
            container,
            "--label",
            f"{CONTAINER_LABEL}={wf.id}",
        ]
        runtime = parsed.runtime
        if self.bind == "sharedir" and runtime.get("sharedir"):
            args += ["--mount", bind_mount(runtime["sharedir"], "/share", "rw")]
        elif runtime.get("mounts"):
            for spec in runtime["mounts"].split(" "):
                args += ["--mount", bind_mount(*spec.split(":"))]
        if runtime.get("user"):
            args += ["--user", runtime["user"]]
        if int(runtime.get("gpu_limit") or 0) > 0:
            args += ["--gpus", runtime["gpu_limit"]]
        args += ["--entrypoint", "/bin/sh", runtime.get("docker", ""), "-c", parsed.command]
        with self.lock:
            wf.name = parsed.workflow
            self._changed(wf)
            wf.call_name = call_name
            wf.call = {
                "executionStatus": "QueuedInCromwell", "attempt": 1, "shardIndex": -1, "backend": "Local",
                "runtimeAttributes": dict(runtime), "commandLine": parsed.command, "inputs": {},
                "callRoot": os.path.dirname(execution), "stdout": stdout, "stderr": stderr,
            }  # fmt: skip
        time.sleep(0.05)
        with self.lock:
            if wf.aborting:
                self._finish(wf, None)
                return
            wf.call["executionStatus"] = "Starting"
            wf.docker_args = args
            with open(stdout, "wb") as out, open(stderr, "wb") as err:
                process = subprocess.Popen(args, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
            wf.container = container
            wf.process = process
            wf.call["executionStatus"] = "Running"
            wf.call["start"] = now_iso()
            wf.call["jobId"] = str(process.pid)
        limit = int(runtime.get("timelimit") or 0) * 60 or None
        try:
            rc: int | None = process.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            subprocess.run([self.docker, "rm", "-f", container], capture_output=True, check=False)
            process.wait()
            rc = None
        with open(os.path.join(execution, "rc"), "w") as f:
            f.write(f"{process.returncode}\n")
        self._finish(wf, rc, timed_out=rc is None)

    def _finish(self, wf: Workflow, rc: int | None, timed_out: bool = False) -> None:
        with self.lock:
            call = wf.call or {}
            call["end"] = now_iso()
            if rc is not None:
                call["returnCode"] = rc
            if wf.aborting:
                call["executionStatus"] = "Aborted"
                wf.status = "Aborted"
            elif rc == 0:
                call["executionStatus"] = "Done"
                wf.status = "Succeeded"
            else:
                if timed_out:
                    text = f"Job {wf.call_name}:NA:1 exceeded its time limit and was killed"
                else:
                    text = (
                        f"Job {wf.call_name}:NA:1 exited with return code {rc} which has not been declared as a "
                        "valid return code. See 'continueOnReturnCode' runtime attribute for more details."
                    )
                call["executionStatus"] = "Failed"
                call["failures"] = [{"message": text, "causedBy": []}]
                wf.failures = [{"message": "Workflow failed", "causedBy": [{"message": text, "causedBy": []}]}]
                wf.status = "Failed"
            wf.end = now_iso()
            self._changed(wf)


def bind_mount(source: str, target: str, mode: str) -> str:
    """``docker run --mount`` of a bind: unlike ``-v`` it never creates a missing source
    (which would bring back a job's directory the server has just deleted)."""
    return f"type=bind,source={source},target={target}" + (",readonly" if mode == "ro" else "")


def label_problems(labels: dict[str, str]) -> list[str]:
    problems = []
    for key, value in labels.items():
        if not key:
            problems.append(f"Invalid label: `{key}` can't be empty")
        elif len(key) > 255:
            problems.append(f"Invalid label: `{key}` is {len(key)} characters. The maximum is 255.")
        if len(value) > 255:
            problems.append(f"Invalid label: `{value}` is {len(value)} characters. The maximum is 255.")
    return problems


def fail(message: str) -> dict[str, str]:
    return {"status": "fail", "message": message}


def error(message: str) -> dict[str, str]:
    return {"status": "error", "message": message}


class _Handler(BaseHTTPRequestHandler):
    cromwell: FakeCromwell
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        with self.cromwell.lock:
            self.cromwell.connections.add(self.connection)

    def finish(self) -> None:
        with self.cromwell.lock:
            self.cromwell.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def _send(self, code: int, body: Any) -> None:
        data = (json.dumps(body, indent=2) if not isinstance(body, str) else body).encode("utf-8")
        self.send_response(code)
        self.send_header(
            "Content-Type", "application/json" if not isinstance(body, str) else "text/plain; charset=UTF-8"
        )
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _route(self, method: str) -> None:
        path = urlsplit(self.path).path.rstrip("/")
        body = self._body()
        fake = self.cromwell
        fake.requests.append((method, path))
        parts = path.split("/")
        try:
            if path == "/engine/v1/version" and method == "GET":
                return self._send(200, {"cromwell": "86-fake"})
            if path == "/engine/v1/status" and method == "GET":
                return self._send(200, {"Engine Database": {"ok": True}})
            if path == "/api/workflows/v1" and method == "POST":
                return self._send(*fake.submit(multipart(self.headers.get("Content-Type") or "", body)))
            if path == "/api/workflows/v1/query" and method == "POST":
                try:
                    filters = json.loads(body or b"null")
                except ValueError:
                    return self._send(400, "The request content was malformed:\nexpected JSON")
                return self._send(*fake.query(filters))
            if len(parts) == 6 and parts[:4] == ["", "api", "workflows", "v1"]:
                wid, action = parts[4], parts[5]
                routes = {
                    ("GET", "status"): lambda: fake.status(wid),
                    ("GET", "metadata"): lambda: fake.metadata(wid),
                    ("GET", "logs"): lambda: fake.logs(wid),
                    ("GET", "labels"): lambda: fake.get_labels(wid),
                    ("POST", "abort"): lambda: fake.abort(wid),
                    ("PATCH", "labels"): lambda: fake.patch_labels(wid, json.loads(body or b"null")),
                }
                if (method, action) in routes:
                    return self._send(*routes[(method, action)]())
            return self._send(404, "The requested resource could not be found.")
        except ValueError:
            return self._send(400, "The request content was malformed")

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PATCH(self) -> None:
        self._route("PATCH")


def multipart(content_type: str, body: bytes) -> dict[str, bytes]:
    """The parts of a multipart/form-data body, by name."""
    if not content_type.startswith("multipart/form-data"):
        return {}
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    parts: dict[str, bytes] = {}
    for part in message.iter_parts():  # type: ignore[attr-defined]
        name = part.get_param("name", header="content-disposition")
        if name:
            parts[str(name)] = part.get_payload(decode=True) or b""
    return parts
