"""Cromwell compute adapter (``CONTAINER_ENV=cromwell``): one WDL workflow per job.

pfcon 5.3's Cromwell manager (docs/wire-contract.md, spec §7.5) submitted a one-task WDL
workflow per job to a Cromwell server whose site-specific backend (typically SLURM with
Singularity) runs the task's ``docker`` image. This adapter keeps that design and its
labels, and fixes what was broken (spec §12 item 17; docs/adr/0017-cromwell.md):

* ``sharedir`` is the job's directory ``<STOREBASE>/key-<jid>`` (pfcon rendered the repr
  of a dict there), and the runtime attribute ``mounts`` lists *every* mount of the job as
  ``<host path>:<target>:<ro|rw>``, separated by single spaces, so that a backend can bind
  what the standard layout does not cover (a shared output dir, op jobs' storeBase);
* the job's environment is exported at the top of the task's command (a POSIX shell
  script: any backend honours it) and the job's user is the runtime attribute ``user``
  (``uid:gid`` or ``uid``), which the backend passes to ``docker run --user`` or equivalent;
* the status message is readable ("Running", "Failed: <Cromwell's failure message>");
* submitting returns as soon as Cromwell answers (no polling inside the request): until
  the workflow's metadata shows its task running, the job is ``notstarted``;
* removing a finished workflow is not an error. Cromwell cannot delete workflows: a removed
  one is aborted if it still runs and labelled ``org.chrisproject.pfcon.removed``, and the
  label query that finds jobs excludes such workflows, so the name can be used again;
* an unreachable Cromwell is ``BackendUnavailable("Cromwell server ...")`` and every HTTP
  answer is mapped (nothing becomes a 500).

A site's backend must declare and honour these runtime attributes (all strings): ``docker``,
``sharedir`` (bind it at ``/share``) or ``mounts`` (bind each ``host:target:mode``),
``user``, ``cpu``, ``memory`` (``<n>M``), ``gpu_limit``, ``number_of_workers``,
``timelimit`` (minutes). The command is a POSIX shell script (``export`` lines, then the
job's command): the backend's job shell must exist in the image.

Logs: a call's ``stdout`` and ``stderr`` files (paths from the metadata) are read when this
server can read them (a shared filesystem); otherwise the logs say where they are.

Only workflows that carry the label ``org.chrisproject.pfcon.name=<name>`` and are named
``ChRISJob`` are jobs: any other workflow of the server is never reported or removed.

Listing (the operator's view) is one label query on the server instance's label; the
job's kind, image and resources are labels of its workflow too, so that finished jobs
cost no further request; a job still in progress is read from its metadata (the query's
summary lags behind). Cancel is an abort: an aborted workflow's job is
``finishedWithError`` with the message ``cancelled``, which Cromwell itself remembers.
Cromwell's label query reads a summary that it refreshes asynchronously (about a second
late), so the adapter remembers, for a few minutes, the workflows it has just submitted
or removed; the workflows themselves stay the only state.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shlex
import stat
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from .options import ContainerUser
from ...domain.errors import BackendUnavailable, InvalidJobSpec, JobAlreadyExists, JobNotFound
from ...domain.model import (
    CANCELLED_MESSAGE,
    INSTANCE_LABEL,
    JOB_TYPE_LABEL,
    ComputeCapabilities,
    ContainerJob,
    JobInfo,
    JobKind,
    JobState,
    JobStatus,
    JobSummary,
    Resources,
)

log = logging.getLogger(__name__)

BACKEND = "Cromwell server"
API = "/api/workflows/v1"
# pfcon's own label (value: the job name), so that workflows submitted by pfcon 5.3 are jobs too.
JOB_LABEL = "org.chrisproject.pfcon.name"
REMOVED_LABEL = "org.chrisproject.pfcon.removed"
REMOVED_VALUE = "true"
# What the operator's listing shows without reading each workflow's metadata.
IMAGE_LABEL = "org.chrisproject.pfcon.image"  # absent when the image is longer than a label
RESOURCES_LABEL = "org.chrisproject.pfcon.resources"  # "<workers>,<millicores>,<MiB>,<gpus>"
LABEL_MAX = 255  # Cromwell's limit on a label's key and value
WORKFLOW_NAME = "ChRISJob"
TASK_NAME = "plugin_instance"
CALL_NAME = f"{WORKFLOW_NAME}.{TASK_NAME}"
JOB_COMMENT = "# pfcon-job: "  # a one-line JSON header in the WDL: the job's image and command
# How long the adapter bridges the lag of Cromwell's query summary (seconds).
REMEMBER_SECONDS = 600.0
LOG_READ_LIMIT = 8 * 1024 * 1024  # bytes read from the end of a stdout/stderr file
MESSAGE_LIMIT = 1000
LABEL_WAIT_SECONDS = 5.0  # how long removal waits for Cromwell to know a just-submitted workflow

# Workflow states (cromwell.core.WorkflowState) and call execution statuses
# (cromwell.core.ExecutionStatus) before the task's container runs.
_WAITING_WORKFLOW = {"Submitted": "Submitted", "On Hold": "On Hold"}
_CALL_WAITING = frozenset({"NotStarted", "WaitingForQueueSpace", "QueuedInCromwell", "Starting"})
_TERMINAL_WORKFLOW = frozenset({"Succeeded", "Failed", "Aborted"})
_CANCELLED_WORKFLOW = frozenset({"Aborting", "Aborted"})
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# What a WDL single-quoted string (a runtime attribute) and the mounts list may not hold.
_UNSAFE_ATTRIBUTE_RE = re.compile(r"['\"\\\s]|[$~]\{")


@dataclass(frozen=True, slots=True)
class CromwellOptions:
    url: str  # CROMWELL_URL, e.g. http://cromwell:8000
    storebase: str  # STOREBASE: storeBase's path on the backend's nodes (COMPUTE_VOLUME_TYPE=host)
    timelimit_minutes: int  # TIMELIMIT_MINUTES: the ``timelimit`` runtime attribute
    labels: tuple[tuple[str, str], ...] = ()  # JOB_LABELS: added to the workflow's labels
    ignore_limits: bool = False  # IGNORE_LIMITS: no ``cpu`` / ``memory`` attributes
    container_user: ContainerUser | None = None  # CONTAINER_USER: the ``user`` attribute
    timeout_seconds: float = 30.0  # one HTTP request to Cromwell
    capabilities: ComputeCapabilities = field(default_factory=ComputeCapabilities)


def make_client(options: CromwellOptions) -> httpx.Client:
    """The HTTP client the composition root hands to :class:`CromwellCompute`."""
    timeout = httpx.Timeout(options.timeout_seconds, connect=min(options.timeout_seconds, 10.0))
    return httpx.Client(base_url=options.url.rstrip("/"), timeout=timeout, follow_redirects=False)


def attribute_problem(text: str) -> str | None:
    """Why ``text`` cannot be a runtime attribute value (a WDL string), or None."""
    match = _UNSAFE_ATTRIBUTE_RE.search(text)
    if match:
        return f"{text!r} contains {match.group()!r}, which a Cromwell runtime attribute cannot carry"
    return None


# -- the workflow, rendered without a server ------------------------------------------------


def _job_id(job: ContainerJob) -> str:
    """The job id whose ``key-<jid>`` directory the job uses (op jobs: ``<jid>-<kind>``)."""
    try:
        kind = JobKind(job.labels.get(JOB_TYPE_LABEL, JobKind.PLUGIN.value))
    except ValueError:
        return job.name
    suffix = kind.job_name("")
    return job.name[: -len(suffix)] if suffix and job.name.endswith(suffix) else job.name


def _host_path(storebase: str, source: str) -> str:
    return f"{storebase.rstrip('/')}/{source.strip('/')}" if source.strip("/") else storebase


def _wdl_command_text(text: str) -> str:
    """A shell-quoted token made safe inside ``command <<< >>>``: ``~{`` would start a WDL
    placeholder and ``>>>`` end the command. Both can only occur inside a single-quoted
    span of :func:`shlex.quote`'s output, where ``''`` splits the span without changing
    the word the shell sees."""
    return text.replace("~{", "~''{").replace(">>>", ">>''>")


def user_attribute(user: tuple[int | None, int | None]) -> str | None:
    uid, gid = user
    if uid is None:
        return None  # a group alone cannot be expressed: the backend's default user
    return f"{uid}:{gid}" if gid is not None else str(uid)


def render_wdl(job: ContainerJob, options: CromwellOptions, user: tuple[int | None, int | None] = (None, None)) -> str:
    """The WDL 1.0 workflow of ``job``; ``user`` is the (uid, gid) picked for it.

    Raises InvalidJobSpec for what the workflow cannot express (an environment variable
    that is not a shell name, a path with spaces or quotes in a runtime attribute).
    """
    exports: list[str] = []
    for item in job.env:
        name, sep, _ = item.partition("=")
        if not sep or not _ENV_NAME_RE.fullmatch(name):
            raise InvalidJobSpec(f"{name!r} is not a valid variable name for a Cromwell job's shell", field="env")
        exports.append(f"export {_wdl_command_text(shlex.quote(item))}")
    command = " ".join(_wdl_command_text(shlex.quote(token)) for token in job.command)
    mounts = []
    for m in job.mounts:
        spec = f"{_host_path(options.storebase, m.source)}:{m.target}:{'ro' if m.read_only else 'rw'}"
        why = attribute_problem(spec) or (f"{spec!r} has more than two ':'" if spec.count(":") != 2 else None)
        if why:
            raise InvalidJobSpec(why, field="mounts")
        mounts.append(spec)
    attributes: list[tuple[str, str]] = [
        ("docker", job.image),
        ("sharedir", _host_path(options.storebase, f"key-{_job_id(job)}")),
        ("mounts", " ".join(mounts)),
    ]
    user_text = user_attribute(user)
    if user_text is not None:
        attributes.append(("user", user_text))
    if not options.ignore_limits:
        attributes.append(("cpu", str(math.ceil(job.resources.cpu_limit / 1000))))
        attributes.append(("memory", f"{math.ceil(job.resources.memory_limit * 1.048576)}M"))
    attributes += [
        ("gpu_limit", str(job.resources.gpu_limit)),
        ("number_of_workers", str(job.resources.number_of_workers)),
        ("timelimit", str(options.timelimit_minutes)),
    ]
    for name, value in attributes:
        why = None if name == "mounts" else attribute_problem(value)  # each mount is checked above
        if why:
            raise InvalidJobSpec(why, field=name)
    header = json.dumps({"name": job.name, "image": job.image, "cmd": shlex.join(job.command)}, ensure_ascii=True)
    runtime = "\n".join(f"        {name}: '{value}'" for name, value in attributes)
    script = "\n".join([*exports, command])  # unindented: Cromwell strips common indentation
    return (
        "version 1.0\n\n"
        f"{JOB_COMMENT}{header}\n\n"
        f"task {TASK_NAME} {{\n"
        "    command <<<\n"
        f"{script}\n"
        "    >>>\n"
        "    runtime {\n"
        f"{runtime}\n"
        "    }\n"
        "}\n\n"
        f"workflow {WORKFLOW_NAME} {{\n"
        f"    call {TASK_NAME}\n"
        "}\n"
    )


def job_header(wdl: str) -> dict[str, str]:
    """The image and command recorded in a workflow this adapter rendered ({} otherwise)."""
    for line in wdl.splitlines():
        if line.startswith(JOB_COMMENT):
            try:
                data = json.loads(line[len(JOB_COMMENT) :])
            except ValueError:
                return {}
            return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}
    return {}


# -- metadata → job info ------------------------------------------------------------------------


def latest_call(metadata: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The task's latest attempt in the workflow's metadata, or None before it exists."""
    raw = (metadata.get("calls") or {}).get(CALL_NAME) or []
    calls: list[Mapping[str, Any]] = [c for c in raw if isinstance(c, Mapping)]
    if not calls:
        return None
    return max(calls, key=lambda c: (c.get("attempt") or 0, c.get("shardIndex") or -1))


def failure_messages(failures: Any) -> list[str]:
    """The innermost messages of Cromwell's failures (``[{message, causedBy: [...]}]``)."""
    out: list[str] = []
    for failure in failures if isinstance(failures, list) else ():
        if not isinstance(failure, Mapping):
            continue
        inner = failure_messages(failure.get("causedBy"))
        message = str(failure.get("message") or "").strip()
        for text in inner or ([message] if message else []):
            if text not in out:
                out.append(text)
    return out


def _short_message(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 3] + "..."


def workflow_status(metadata: Mapping[str, Any], stderr_tail: str = "") -> tuple[JobStatus, str]:
    """Map a workflow's metadata to a job status and a readable message.

    ``stderr_tail`` is the end of the task's stderr when it could be read: it is added
    to the message of a failed job (Cromwell only says which return code it had).
    """
    status = str(metadata.get("status") or "")
    call = latest_call(metadata)
    if status in _WAITING_WORKFLOW:
        return JobStatus.NOT_STARTED, _WAITING_WORKFLOW[status]
    if status == "Running":
        if call is None:
            return JobStatus.NOT_STARTED, "Running: waiting for the task to be scheduled"
        execution = str(call.get("executionStatus") or "")
        if execution in _CALL_WAITING:
            return JobStatus.NOT_STARTED, f"Running: task {execution}"
        if execution == "Running":
            return JobStatus.STARTED, "Running"
        return JobStatus.STARTED, f"Running: task {execution}"  # finishing, or a retry to come
    if status == "Succeeded":
        return JobStatus.FINISHED_SUCCESSFULLY, "Succeeded"
    if status == "Failed":
        messages = failure_messages((call or {}).get("failures")) or failure_messages(metadata.get("failures"))
        text = "Failed: " + "; ".join(messages) if messages else "Failed"
        if stderr_tail:
            text += f" (stderr: {stderr_tail})"
        return JobStatus.FINISHED_WITH_ERROR, _short_message(text)
    if status in _CANCELLED_WORKFLOW:  # cancelled through this server, or aborted by anyone
        return JobStatus.FINISHED_WITH_ERROR, CANCELLED_MESSAGE
    message = str(metadata.get("message") or "")  # e.g. metadata archived and deleted
    return JobStatus.UNDEFINED, _short_message(f"{status}: {message}" if status and message else status or message)


def job_info(name: str, metadata: Mapping[str, Any], stderr_tail: str = "") -> JobInfo:
    """A job's info from its workflow's metadata (``GET .../{id}/metadata``)."""
    call = latest_call(metadata)
    header = job_header(str((metadata.get("submittedFiles") or {}).get("workflow") or ""))
    image = header.get("image") or str(((call or {}).get("runtimeAttributes") or {}).get("docker") or "")
    cmd = header.get("cmd") or str((call or {}).get("commandLine") or "")
    status, message = workflow_status(metadata, stderr_tail)
    # A workflow not picked up yet has only its submission time (Cromwell always reports it),
    # as the other schedulers give a job's creation time before it runs.
    timestamp = (
        metadata.get("end") or (call or {}).get("start") or metadata.get("start") or metadata.get("submission") or ""
    )
    return JobInfo(name=name, image=image, cmd=cmd, status=status, message=message, timestamp=str(timestamp))


# -- logs ------------------------------------------------------------------------------------------


def read_tail(path: Any, limit: int = LOG_READ_LIMIT) -> str | None:
    """The end of a call's ``stdout`` or ``stderr`` file, or None when this server cannot
    read it. Only regular files of those names are read (paths come from the server)."""
    if not isinstance(path, str) or not os.path.isabs(path) or os.path.basename(path) not in ("stdout", "stderr"):
        return None
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        start = max(0, info.st_size - limit)
        os.lseek(fd, start, os.SEEK_SET)
        chunks = []
        while chunk := os.read(fd, 1024 * 1024):
            chunks.append(chunk)
        data = b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)
    if start:
        data = data.split(b"\n", 1)[-1]  # a partial first line
    return data.decode("utf-8", errors="replace")


def tail_lines(text: str, n: int) -> str:
    if n <= 0:
        return ""
    lines = text.splitlines(keepends=True)
    return "".join(lines[-n:])


def _last_lines(text: str | None, n: int = 3) -> str:
    """The last ``n`` non-blank lines of ``text``, on one line."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    joined = " / ".join(lines[-n:])
    return joined if len(joined) <= 300 else "..." + joined[-297:]


def call_logs(call: Mapping[str, Any] | None, log_tail: int) -> str:
    """The task's output (stdout, then stderr), or where to find it."""
    if call is None:
        return ""
    paths = {key: call.get(key) for key in ("stdout", "stderr") if call.get(key)}
    if not paths:
        return ""
    texts = {key: read_tail(path) for key, path in paths.items()}
    if all(text is not None for text in texts.values()):
        return tail_lines("".join(texts[key] or "" for key in ("stdout", "stderr") if key in texts), log_tail)
    where = "\n".join(f"{key}: {path}" for key, path in paths.items())
    return f"The logs of this job are on the Cromwell backend's filesystem, which this server cannot read:\n{where}\n"


# -- the adapter -----------------------------------------------------------------------------------


def _server_message(response: httpx.Response) -> str:
    """Cromwell's error text (``{"status": "fail"|"error", "message": ...}``) or the body's start."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, Mapping) and body.get("message"):
        return _short_message(str(body["message"]))[:300]
    return _short_message(response.text)[:300] or response.reason_phrase


def _unexpected(what: str, response: httpx.Response) -> BackendUnavailable:
    code = response.status_code
    if code >= 500:
        return BackendUnavailable(f"{BACKEND} unavailable: HTTP {code} to {what}: {_server_message(response)}")
    return BackendUnavailable(f"{BACKEND} refused to {what} (HTTP {code}): {_server_message(response)}")


@dataclass(frozen=True, slots=True)
class _Workflow:
    id: str
    status: str


@dataclass(frozen=True, slots=True)
class _Recent:
    """A workflow this adapter has just submitted (Cromwell's query may not show it yet)."""

    workflow_id: str
    at: float  # monotonic
    submitted: str  # ISO 8601 UTC
    labels: Mapping[str, str]


def _kind(labels: Mapping[str, Any]) -> JobKind | None:
    try:
        return JobKind(str(labels.get(JOB_TYPE_LABEL)))
    except ValueError:
        return None


def _resources(text: Any) -> Resources | None:
    """The resources of the ``RESOURCES_LABEL`` label, or None."""
    parts = str(text or "").split(",")
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        return None
    return Resources(*(int(p) for p in parts))


def resources_label(resources: Resources) -> str:
    r = resources
    return f"{r.number_of_workers},{r.cpu_limit},{r.memory_limit},{r.gpu_limit}"


def utc(text: Any) -> str:
    """An ISO 8601 time of Cromwell's (which may carry the server's offset) in UTC; "" if none."""
    if not text:
        return ""
    try:
        when = datetime.fromisoformat(str(text))
    except ValueError:
        return str(text)
    return when.astimezone(UTC).isoformat() if when.tzinfo else when.replace(tzinfo=UTC).isoformat()


class CromwellCompute:
    """Runs each job as a one-task WDL workflow labelled with the job's name."""

    def __init__(self, client: httpx.Client, options: CromwellOptions) -> None:
        why = attribute_problem(options.storebase)
        if why:
            raise ValueError(f"STOREBASE: {why}")
        self.client = client
        self.options = options
        self.capabilities = options.capabilities
        parts = urlsplit(options.url)
        self.where = f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"  # no credentials
        self._lock = threading.Lock()  # the name check and the submission, together
        self._memory = threading.Lock()
        self._submitted: dict[str, _Recent] = {}  # name -> the workflow just submitted
        self._removed: dict[str, float] = {}  # workflow id -> when
        self._cancelled: dict[str, float] = {}  # workflow id -> when its abort was accepted

    # -- HTTP -------------------------------------------------------------
    def _request(self, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.client.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise BackendUnavailable(
                f"{BACKEND} unavailable: {self.where} did not answer in {self.options.timeout_seconds:g} s (to {what})"
            ) from None
        except httpx.HTTPError as e:
            raise BackendUnavailable(
                f"{BACKEND} unavailable: cannot connect to {self.where} ({type(e).__name__}, to {what})"
            ) from None

    def _json(self, response: httpx.Response, what: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise BackendUnavailable(
                f"{BACKEND} sent an answer that is not JSON (HTTP {response.status_code}, to {what})"
            ) from None

    # -- memory of the query summary's lag ----------------------------------
    def _remember(self, name: str, workflow_id: str, labels: Mapping[str, str]) -> None:
        with self._memory:
            self._submitted[name] = _Recent(workflow_id, time.monotonic(), datetime.now(UTC).isoformat(), labels)

    def _recent_id(self, name: str) -> str:
        recent = self._submitted.get(name)
        return recent.workflow_id if recent is not None else ""

    def _forget(self, name: str, workflow_id: str) -> None:
        with self._memory:
            self._removed[workflow_id] = time.monotonic()
            if self._recent_id(name) == workflow_id:
                del self._submitted[name]

    def _prune(self) -> None:
        horizon = time.monotonic() - REMEMBER_SECONDS
        with self._memory:
            for name in [n for n, r in self._submitted.items() if r.at < horizon]:
                del self._submitted[name]
            for memory in (self._removed, self._cancelled):
                for wid in [w for w, t in memory.items() if t < horizon]:
                    del memory[wid]

    def _cancelling(self, workflow_id: str, metadata: Mapping[str, Any]) -> Mapping[str, Any]:
        """The metadata, as Aborting while Cromwell's own record has not caught up with an
        abort this adapter has just had accepted."""
        with self._memory:
            cancelled = workflow_id in self._cancelled
        if cancelled and str(metadata.get("status") or "") in ("Submitted", "On Hold", "Running"):
            return {**metadata, "status": "Aborting"}
        return metadata

    # -- finding a job's workflow ------------------------------------------
    def _query(self, name: str) -> list[Mapping[str, Any]]:
        what = f"find the workflow of job {name!r}"
        return [
            result
            for result in self._search(f"{JOB_LABEL}:{name}", what)
            if (result.get("labels") or {}).get(JOB_LABEL, name) == name
        ]

    def _search(self, label: str, what: str) -> list[Mapping[str, Any]]:
        """The workflows of this adapter's with the label ``key:value``, removed ones excluded."""
        filters = [
            {"label": label},
            {"excludeLabelOr": f"{REMOVED_LABEL}:{REMOVED_VALUE}"},
            {"additionalQueryResultFields": "labels"},
        ]
        response = self._request("POST", f"{API}/query", what, json=filters)
        if response.status_code != 200:
            raise _unexpected(what, response)
        body = self._json(response, what)
        results = body.get("results") if isinstance(body, Mapping) else None
        if not isinstance(results, list):
            raise BackendUnavailable(f"{BACKEND} sent a query answer without results (to {what})")
        found = []
        with self._memory:
            removed = set(self._removed)
        for result in results:
            if not isinstance(result, Mapping) or not result.get("id"):
                continue
            labels = result.get("labels") or {}
            if not isinstance(labels, Mapping) or result.get("name", WORKFLOW_NAME) != WORKFLOW_NAME:
                continue  # not a workflow of this adapter's
            if result.get("id") in removed or labels.get(REMOVED_LABEL) == REMOVED_VALUE:
                continue
            found.append(result)
        return found

    def _find(self, name: str) -> _Workflow | None:
        self._prune()
        results = self._query(name)
        if results:
            latest = max(results, key=lambda r: str(r.get("submission") or r.get("start") or ""))
            if len(results) > 1:
                log.warning("cromwell_duplicate_job", extra={"job": name, "workflows": [r["id"] for r in results]})
            with self._memory:
                if self._recent_id(name) in {r["id"] for r in results}:
                    del self._submitted[name]  # the summary has caught up
            return _Workflow(str(latest["id"]), str(latest.get("status") or ""))
        with self._memory:
            recent = self._submitted.get(name)
        if recent is not None:
            return _Workflow(recent.workflow_id, "Submitted")
        return None

    def _workflow(self, name: str) -> _Workflow:
        workflow = self._find(name)
        if workflow is None:
            raise JobNotFound(name)
        return workflow

    def _metadata(self, name: str, workflow: _Workflow) -> dict[str, Any]:
        what = f"read the metadata of job {name!r} (workflow {workflow.id})"
        response = self._request("GET", f"{API}/{workflow.id}/metadata", what, params={"expandSubWorkflows": "false"})
        if response.status_code == 404:
            raise JobNotFound(name)
        if response.status_code != 200:
            raise _unexpected(what, response)
        body = self._json(response, what)
        if not isinstance(body, dict):
            raise BackendUnavailable(f"{BACKEND} sent metadata that is not an object (to {what})")
        return body

    # -- the port -------------------------------------------------------------
    def list_jobs(self, instance: str) -> list[JobSummary]:
        self._prune()
        results = self._search(f"{INSTANCE_LABEL}:{instance}", f"list the jobs of server instance {instance!r}")
        listed: dict[str, tuple[str, Mapping[str, Any], str, Any]] = {}  # wid -> (name, labels, status, submitted)
        for result in results:
            labels = result.get("labels") or {}
            name = labels.get(JOB_LABEL)
            if isinstance(name, str) and name and labels.get(INSTANCE_LABEL) == instance:
                listed[str(result["id"])] = (name, labels, str(result.get("status") or ""), result.get("submission"))
        with self._memory:  # just submitted: not in the query's summary yet
            for name, recent in self._submitted.items():
                if recent.workflow_id not in listed and recent.labels.get(INSTANCE_LABEL) == instance:
                    listed[recent.workflow_id] = (name, recent.labels, "Submitted", recent.submitted)
        summaries = []
        for wid, (name, labels, status, submitted) in listed.items():
            kind = _kind(labels)
            if kind is not None:
                summaries.append(self._summary(name, kind, wid, labels, status, submitted))
        summaries.sort(key=lambda s: s.created, reverse=True)
        return summaries

    def _summary(
        self, name: str, kind: JobKind, wid: str, labels: Mapping[str, Any], status: str, submitted: Any
    ) -> JobSummary:
        """One job of the listing: a finished one from its labels and the query's summary,
        one in progress from its metadata (the summary lags behind what the job does)."""
        image = str(labels.get(IMAGE_LABEL) or "")
        metadata: Mapping[str, Any] | None = None
        if status not in _TERMINAL_WORKFLOW or not image or not submitted:
            try:
                metadata = self._cancelling(wid, self._metadata(name, _Workflow(wid, status)))
            except JobNotFound:
                metadata = None  # not readable yet (or any more): the summary's word
        if metadata is not None:
            info = job_info(name, metadata)
            job_status, message = info.status, info.message
            image = image or info.image
            submitted = submitted or metadata.get("submission")
        else:
            job_status, message = workflow_status(self._cancelling(wid, {"status": status}))
        return JobSummary(
            name=name, kind=kind, image=image, status=job_status, message=message, created=utc(submitted),
            resources=_resources(labels.get(RESOURCES_LABEL)),
        )  # fmt: skip

    def cancel(self, name: str) -> JobInfo:
        workflow = self._workflow(name)
        metadata = self._cancelling(workflow.id, self._metadata(name, workflow))
        if str(metadata.get("status") or "") not in _TERMINAL_WORKFLOW | _CANCELLED_WORKFLOW:
            what = f"cancel job {name!r} (workflow {workflow.id})"
            response = self._request("POST", f"{API}/{workflow.id}/abort", what)
            if response.status_code == 200:  # {"status": "Aborted"} before it started, else "Aborting"
                with self._memory:
                    self._cancelled[workflow.id] = time.monotonic()
                log.info("cromwell_cancelled", extra={"job": name, "workflow": workflow.id})
            elif response.status_code not in (403, 404):  # not in progress any more: it ended meanwhile
                raise _unexpected(what, response)
            metadata = self._cancelling(workflow.id, self._metadata(name, workflow))
        return job_info(name, metadata, self._stderr_tail(metadata))

    def ping(self) -> None:
        what = "report its version"
        response = self._request("GET", "/engine/v1/version", what)
        if response.status_code != 200:
            raise _unexpected(what, response)

    def _refuse(self, resources: Resources) -> None:
        why = self.capabilities.workers_problem(resources.number_of_workers)
        if why:
            raise InvalidJobSpec(why)

    def check(self, image: str, resources: Resources) -> None:
        # The image is not checked: the backend's nodes pull it when the task starts.
        self._refuse(resources)

    def _user(self, job: ContainerJob) -> tuple[int | None, int | None]:
        if job.run_as is not None:
            return job.run_as  # an op job: the owner of key-<jid>/
        if self.options.container_user is not None:
            return self.options.container_user.pick()
        return None, None

    def schedule(self, job: ContainerJob) -> JobInfo:
        self._refuse(job.resources)
        wdl = render_wdl(job, self.options, self._user(job))
        ours = {RESOURCES_LABEL: resources_label(job.resources)}
        if len(job.image) <= LABEL_MAX:
            ours[IMAGE_LABEL] = job.image
        labels = {**dict(self.options.labels), **job.labels, **ours, JOB_LABEL: job.name}
        for key, value in labels.items():
            if not key or len(key) > LABEL_MAX or len(value) > LABEL_MAX:
                raise InvalidJobSpec(f"label {key!r}: Cromwell labels have 1 to 255 characters, values at most 255")
        what = f"submit job {job.name!r}"
        with self._lock:
            if self._find(job.name) is not None:
                raise JobAlreadyExists(job.name)
            try:
                response = self._request(
                    "POST",
                    API,
                    what,
                    data={"workflowType": "WDL", "workflowTypeVersion": "1.0"},
                    files={
                        "workflowSource": ("workflow.wdl", wdl.encode("utf-8"), "text/plain"),
                        "labels": ("labels.json", json.dumps(labels).encode("utf-8"), "application/json"),
                    },
                )
            except BackendUnavailable:
                self._discard(job.name)  # the request may have reached Cromwell
                raise
            if response.status_code == 400:
                raise InvalidJobSpec(f"rejected by Cromwell: {_server_message(response)}")
            if response.status_code not in (200, 201):
                raise _unexpected(what, response)
            body = self._json(response, what)
            workflow_id = body.get("id") if isinstance(body, Mapping) else None
            if not isinstance(workflow_id, str) or not workflow_id:
                raise BackendUnavailable(f"{BACKEND} accepted job {job.name!r} without a workflow id")
            self._remember(job.name, workflow_id, labels)
        status = str(body.get("status") or "Submitted")
        log.info("cromwell_submitted", extra={"job": job.name, "workflow": workflow_id, "status": status})
        return JobInfo(
            name=job.name,
            image=job.image,
            cmd=shlex.join(job.command),
            status=JobStatus.NOT_STARTED,
            message=_WAITING_WORKFLOW.get(status, status),
            timestamp="",
        )

    def _discard(self, name: str) -> None:
        """Best effort: remove a workflow a failed submission may have created."""
        try:
            workflow = self._find(name)
            if workflow is not None:
                self._remove(name, workflow)
        except (BackendUnavailable, JobNotFound):
            pass

    def _stderr_tail(self, metadata: Mapping[str, Any]) -> str:
        if metadata.get("status") != "Failed":
            return ""
        call = latest_call(metadata)
        return _last_lines(read_tail((call or {}).get("stderr"), 64 * 1024))

    def info(self, name: str) -> JobInfo:
        workflow = self._workflow(name)
        metadata = self._cancelling(workflow.id, self._metadata(name, workflow))
        return job_info(name, metadata, self._stderr_tail(metadata))

    def state(self, name: str, log_tail: int) -> JobState:
        workflow = self._workflow(name)
        metadata = self._cancelling(workflow.id, self._metadata(name, workflow))
        info = job_info(name, metadata, self._stderr_tail(metadata))
        return JobState(info, call_logs(latest_call(metadata), log_tail))

    def remove(self, name: str) -> None:
        self._remove(name, self._workflow(name))

    def _remove(self, name: str, workflow: _Workflow) -> None:
        if workflow.status not in _TERMINAL_WORKFLOW:
            what = f"abort job {name!r} (workflow {workflow.id})"
            response = self._request("POST", f"{API}/{workflow.id}/abort", what)
            # 403 "in terminal status" (documented), 404 "no workflow with that ID is in
            # progress" (what Cromwell answers for a finished one): nothing left to stop.
            if response.status_code not in (200, 403, 404):
                raise _unexpected(what, response)
        what = f"mark job {name!r} removed (workflow {workflow.id})"
        deadline = time.monotonic() + LABEL_WAIT_SECONDS
        while True:
            response = self._request("PATCH", f"{API}/{workflow.id}/labels", what, json={REMOVED_LABEL: REMOVED_VALUE})
            if response.status_code == 200:
                break
            if response.status_code == 404 and time.monotonic() < deadline:
                # Just submitted: Cromwell's summary, which labelling needs, has not caught up.
                time.sleep(0.2)
                continue
            raise _unexpected(what, response)
        self._forget(name, workflow.id)
        log.info("cromwell_removed", extra={"job": name, "workflow": workflow.id})
