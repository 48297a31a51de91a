"""Docker / Podman compute adapter (``CONTAINER_ENV=docker`` or ``podman``)."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors
import docker.types
import requests.exceptions

from .docker_view import EXITED, RUNNING, ContainerView, Final, labels_match
from .engine_connections import share_engine_connections
from .engine_direct import DirectEngineAPI, direct_engine_api
from .listing import cancelled, iso_utc, job_kind
from .options import ContainerUser
from ...domain.errors import (
    BackendUnavailable,
    ImageNotAvailable,
    InvalidJobSpec,
    JobAlreadyExists,
    JobNotFound,
    ResourceUnavailable,
)
from ...domain.model import (
    CANCELLED_MESSAGE,
    INSTANCE_LABEL,
    JOB_TYPE_LABEL,
    ComputeCapabilities,
    ContainerJob,
    JobInfo,
    JobState,
    JobStatus,
    JobSummary,
    Resources,
)

ZERO_TIME = "0001-01-01T00:00:00Z"
# Under storeBase (as this server mounts it), beside the key-<jid>/ dirs: the adapter's
# own state, i.e. which containers an operator cancelled (a job id never starts with ".").
STATE_DIR = ".pfcon-docker"
# The image a job asked for, as given (Podman reports the name it resolved it to,
# e.g. localhost/<image>): what a listing shows.
IMAGE_LABEL = "org.chrisproject.pfcon.image"
# What a call may raise when the engine is down or fails: the SDK's own errors, and
# the HTTP client's (a refused or dropped connection is not a DockerException).
# An image found present is not looked up again for this long: a submission's early check
# (before staging) then costs no engine round trip. Safe: create() itself still refuses an
# image removed meanwhile, and the submission is rolled back (ImageNotAvailable).
IMAGE_SEEN_SECONDS = 30.0
REMOVE_ATTEMPTS = 4  # a removal the engine fails with a 5xx is retried (0.1, 0.2, 0.4 s apart)
ENGINE_ERRORS: tuple[type[Exception], ...] = (docker.errors.DockerException, requests.exceptions.RequestException)


def docker_status(state: Mapping[str, Any]) -> JobStatus:
    """Map a container's ``State`` (inspect output) to a job status (docs/wire-contract.md §8.1)."""
    if state.get("Running") or state.get("Paused"):
        return JobStatus.STARTED
    status = state.get("Status")
    if status == "stopped":
        # Podman (4.3) shows its transient "exited, not yet cleaned up" state through
        # the Docker-compatible inspect (containers/podman#17728); ExitCode is final.
        status = "exited"
    if status == "created":
        return JobStatus.NOT_STARTED
    if state.get("OOMKilled") or state.get("Dead"):
        return JobStatus.FINISHED_WITH_ERROR
    if status == "exited":
        if state.get("ExitCode") == 0:
            return JobStatus.FINISHED_SUCCESSFULLY
        return JobStatus.FINISHED_WITH_ERROR
    return JobStatus.UNDEFINED


def job_info_from_inspect(name: str, attrs: Mapping[str, Any]) -> JobInfo:
    state = attrs.get("State") or {}
    config = attrs.get("Config") or {}
    finished = state.get("FinishedAt") or ZERO_TIME
    return JobInfo(
        name=name,
        image=config.get("Image") or "",
        cmd=shlex.join(config.get("Cmd") or []),
        status=docker_status(state),
        # Podman's transient "stopped" is Docker's "exited" (see docker_status): the same info
        # before and after Podman's cleanup, so a finished job's info never changes
        message="exited" if state.get("Status") == "stopped" else state.get("Status") or "",
        timestamp=finished if finished != ZERO_TIME else state.get("StartedAt") or ZERO_TIME,
    )


def decode_logs(raw: bytes | str) -> str:
    return raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw


class CancelMarks:
    """Which containers an operator cancelled: a container's labels cannot be changed, so
    each cancellation is a small file ``<directory>/<name>`` holding the container's id
    (docs/adr/0020-cancel-is-not-delete.md). The file outlives the server; a container
    created later under the same name has another id and is not cancelled. Without a
    directory, cancellations are remembered by this process only."""

    def __init__(self, directory: str | None) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._known: dict[str, str] = {}  # name -> the cancelled container's id

    def _path(self, name: str) -> str | None:
        if self.directory is None or not name or name.startswith(".") or "/" in name or "\x00" in name:
            return None
        return os.path.join(self.directory, name)

    def mark(self, name: str, cid: str) -> None:
        """Record the cancellation durably. Raises OSError."""
        path = self._path(name)
        if path is not None:
            assert self.directory is not None
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            temporary = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
            with open(temporary, "w") as f:
                f.write(cid)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, path)
        with self._lock:
            self._known[name] = cid

    def get(self, name: str) -> str | None:
        """The id of the container of ``name`` that was cancelled (None: none)."""
        with self._lock:
            known = self._known.get(name)
        if known is not None:
            return known
        path = self._path(name)
        if path is None:
            return None
        try:
            with open(path) as f:
                cid = f.read().strip()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError:
            return None  # unreadable: the engine's own status shows
        if cid:
            with self._lock:
                self._known[name] = cid
        return cid or None

    def is_cancelled(self, name: str, cid: Any) -> bool:
        return bool(cid) and self.get(name) == cid

    def clear(self, name: str) -> None:
        with self._lock:
            self._known.pop(name, None)
        path = self._path(name)
        if path is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)


_EXIT_CODE = re.compile(r"\((-?\d+)\)")


def listed_state(container: Mapping[str, Any]) -> dict[str, Any]:
    """The ``State`` an inspect would show, as far as a list entry tells it: its state
    and the exit code in its status text ("Exited (3) 2 minutes ago")."""
    status = str(container.get("State") or "").lower()
    if status in ("configured", "initialized"):  # Podman's names of a created container
        status = "created"
    state: dict[str, Any] = {
        "Status": status, "Running": status == "running", "Paused": status == "paused", "Dead": status == "dead",
    }  # fmt: skip
    if status in ("exited", "stopped", "dead"):
        match = _EXIT_CODE.search(str(container.get("Status") or ""))
        state["ExitCode"] = int(match.group(1)) if match else None
    return state


def resources_from_host_config(host_config: Mapping[str, Any]) -> Resources | None:
    """A job's resources from its container's ``HostConfig`` (the inverse of the mapping
    at create; None without CPU and memory limits, e.g. IGNORE_LIMITS)."""
    nano_cpus = int(host_config.get("NanoCpus") or 0)
    memory = int(host_config.get("Memory") or 0)
    if nano_cpus <= 0 or memory <= 0:
        return None
    gpus = sum(max(0, int(r.get("Count") or 0)) for r in host_config.get("DeviceRequests") or ())
    return Resources(1, nano_cpus // 1_000_000, memory // (1024 * 1024), gpus)


@dataclass(frozen=True, slots=True)
class _Details:
    """What a listing needs from an inspect, once per container (it never changes)."""

    image: str
    created: str
    resources: Resources | None


@dataclass(frozen=True, slots=True)
class DockerOptions:
    storebase: str  # host path of storeBase as the engine sees it
    labels: tuple[tuple[str, str], ...] = ()
    ignore_limits: bool = False
    container_user: ContainerUser | None = None
    # Groups plugin jobs (never op jobs) also get: the op jobs' group, which owns the
    # key-<jid>/outgoing a plugin writes in (pfcon 6 with an object store).
    supplemental_groups: tuple[int, ...] = ()
    shm_size_mib: int | None = None
    pull_images: bool = False
    network: str | None = None  # JOB_NETWORK: plugin jobs
    op_network: str | None = None  # PFCON_OP_NETWORK: op jobs (copy, upload, delete) reach the store
    engine_name: str = "Docker engine"  # how errors name the backend ("Podman service", ...)
    # Answer status from a view fed by the engine's event stream, and remember finished
    # jobs (docs/adr/0018-docker-status-view.md); off: every status request inspects.
    status_view: bool = False
    view_resync_seconds: float = 60.0
    # Where cancellations are recorded (a directory this server writes, under its
    # storeBase mount); None: in this process's memory only.
    state_dir: str | None = None
    cancel_grace_seconds: int = 2  # a cancelled job gets SIGTERM, then SIGKILL after this
    capabilities: ComputeCapabilities = field(default_factory=ComputeCapabilities)


def _short(error: Exception) -> str:
    """One line about an engine failure, without the SDK's nested reprs."""
    if isinstance(error, requests.exceptions.ConnectionError):
        return "cannot connect to the engine"
    if isinstance(error, requests.exceptions.Timeout):
        return "the engine did not answer in time"
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text[:300]


def _is_name_conflict(error: docker.errors.APIError) -> bool:
    # Docker answers 409; Podman 500 "... that name is already in use".
    return error.status_code == 409 or "already in use" in str(error.explanation or "")


def _is_exit_race(error: docker.errors.APIError) -> bool:
    # Podman 4.3 inspecting a container whose process is exiting:
    # 500 "read /proc/<pid>/cgroup: no such process" (containers/podman#16383).
    return error.status_code == 500 and "no such process" in str(error.explanation or "")


def _is_ambiguous(error: docker.errors.APIError) -> bool:
    # A name no container has, which the engine then took for the prefix of several
    # container ids: Docker 500 "Multiple IDs found with provided prefix: …", Podman
    # "more than one result for container …".
    text = str(error.explanation or "").lower()
    return "multiple ids found" in text or "more than one result" in text


def _is_named(attrs: Mapping[str, Any], name: str) -> bool:
    """Whether an inspect shows the container called ``name`` (Docker and Podman show the
    name with a leading slash). The engine also finds a container by its id or an id
    prefix when no container has the name asked for: that one is not the job."""
    return str(attrs.get("Name") or "").lstrip("/") == name


def _is_job(attrs: Mapping[str, Any]) -> bool:
    """Whether the container is a job: it carries the job-type label every job of every
    kind has. Any other container of the engine may have a name a client sends as a job
    id (a database's, say): it is not reached through the jobs API."""
    return JOB_TYPE_LABEL in ((attrs.get("Config") or {}).get("Labels") or {})


def _is_gpu_error(error: docker.errors.APIError) -> bool:
    text = str(error).lower()
    return "device driver" in text or "gpu" in text or "nvidia" in text


class DockerCompute:
    """Runs each job as one container named after the job id."""

    def __init__(self, client: docker.DockerClient, options: DockerOptions, *, start: bool = True) -> None:
        self.client = client
        share_engine_connections(client.api)  # one keep-alive pool for every container's URLs
        self.api: Any = direct_engine_api(client.api)  # create, start, inspect, logs: direct (ADR 25)
        self.options = options
        self.capabilities = options.capabilities
        self.marks = CancelMarks(options.state_dir)
        self._details: OrderedDict[str, _Details] = OrderedDict()  # container id -> details
        self._details_lock = threading.Lock()
        self._node: str | None = None
        self.view: ContainerView | None = None
        self._images_seen: dict[str, float] = {}  # image -> monotonic time it was found present
        if options.status_view:
            self.view = ContainerView(self.api, self.selector, resync_seconds=options.view_resync_seconds)
            if start:
                self.view.start()

    @property
    def selector(self) -> tuple[str, ...]:
        """The labels every job container of this adapter carries (the view's filter)."""
        return (JOB_TYPE_LABEL, *(f"{k}={v}" for k, v in self.options.labels))

    def close(self) -> None:
        if self.view is not None:
            self.view.close()
        if isinstance(self.api, DirectEngineAPI):
            self.api.close_direct()

    # -- schedule ---------------------------------------------------------
    def _host_config(self, job: ContainerJob) -> dict[str, Any]:
        opts = self.options
        res = job.resources
        mounts = [
            docker.types.Mount(
                target=m.target,
                source=os.path.join(opts.storebase, m.source) if m.source else opts.storebase,
                type="bind",
                read_only=m.read_only,
            )
            for m in job.mounts
        ]
        kwargs: dict[str, Any] = {
            "mounts": mounts,
            "restart_policy": {"Name": "no", "MaximumRetryCount": 0},
        }
        if not opts.ignore_limits:
            memory = res.memory_limit * 1024 * 1024
            kwargs.update(nano_cpus=res.cpu_limit * 1_000_000, mem_limit=memory, memswap_limit=memory)
        if res.gpu_limit > 0:
            kwargs["device_requests"] = [docker.types.DeviceRequest(count=res.gpu_limit, capabilities=[["gpu"]])]
        if opts.shm_size_mib:
            kwargs["shm_size"] = opts.shm_size_mib * 1024 * 1024
        network = opts.network if job.labels.get(JOB_TYPE_LABEL, "plugin") == "plugin" else opts.op_network
        if network:
            kwargs["network_mode"] = network
        return kwargs

    def _user(self, job: ContainerJob) -> tuple[str | None, list[int] | None]:
        """The job's user and its added groups (None: none)."""
        if job.run_as is not None:
            return f"{job.run_as[0]}:{job.run_as[1]}", None
        uid, gid = self.options.container_user.pick() if self.options.container_user else (None, None)
        user = None if uid is None else f"{uid}:{gid}" if gid is not None else str(uid)
        # no uid: the image's user, with CONTAINER_USER's group added
        groups = [gid] if uid is None and gid is not None else []
        groups += [g for g in self.options.supplemental_groups if g not in groups and g != gid]
        return user, groups or None

    # -- the operator's view: listing and cancel -----------------------------------------
    def _unavailable(self, error: Exception) -> BackendUnavailable:
        return BackendUnavailable(f"{self.options.engine_name} unavailable: {_short(error)}")

    def _node_name(self) -> str:
        """The engine's name (its host's), asked once: every job of this adapter runs there."""
        if self._node is None:
            try:
                self._node = str(self.api.info().get("Name") or "")
            except ENGINE_ERRORS as e:
                raise self._unavailable(e) from e
        return self._node

    def _container_details(self, cids: Iterable[str]) -> dict[str, _Details]:
        """Image, creation time and resources of containers, inspected once each (several
        at a time) and remembered: a listing inspects only containers it has not seen."""
        with self._details_lock:
            known = {cid: self._details[cid] for cid in cids if cid in self._details}
        missing = [cid for cid in cids if cid not in known]

        def inspect(cid: str) -> tuple[str, _Details | None]:
            try:
                attrs = self.api.inspect_container(cid)
            except docker.errors.NotFound:
                return cid, None  # removed since the list
            except ENGINE_ERRORS as e:
                raise self._unavailable(e) from e
            return cid, _Details(
                image=str((attrs.get("Config") or {}).get("Image") or ""),
                created=iso_utc(attrs.get("Created")),
                resources=resources_from_host_config(attrs.get("HostConfig") or {}),
            )

        if missing:
            with ThreadPoolExecutor(max_workers=min(8, len(missing)), thread_name_prefix="docker-list") as pool:
                found = dict(pool.map(inspect, missing))
            with self._details_lock:
                for cid, details in found.items():
                    if details is not None:
                        known[cid] = self._details[cid] = details
                while len(self._details) > 20_000:
                    self._details.popitem(last=False)
        return known

    def list_jobs(self, instance: str) -> list[JobSummary]:
        selector = (*self.selector, f"{INSTANCE_LABEL}={instance}")
        # The engine filters on key=value labels (Podman 4.3 mishandles a key-only one);
        # the job-type label's presence is checked here.
        pairs = [item for item in selector if "=" in item]
        try:
            containers = self.api.containers(all=True, filters={"label": pairs})
        except ENGINE_ERRORS as e:
            raise self._unavailable(e) from e
        mine = [c for c in containers if c.get("Names") and c.get("Id") and labels_match(c.get("Labels"), selector)]
        details = self._container_details([str(c["Id"]) for c in mine])
        node = self._node_name() if mine else ""
        summaries = []
        for c in mine:
            cid, labels = str(c["Id"]), c.get("Labels") or {}
            kind, more = job_kind(labels), details.get(cid)
            if kind is None or more is None:
                continue
            name = str(c["Names"][0]).lstrip("/")
            state = listed_state(c)
            status, message = docker_status(state), state["Status"]
            if self.marks.is_cancelled(name, cid):
                status, message = JobStatus.FINISHED_WITH_ERROR, CANCELLED_MESSAGE
            summaries.append(
                JobSummary(
                    name=name,
                    kind=kind,
                    image=str(labels.get(IMAGE_LABEL) or more.image or c.get("Image") or ""),
                    status=status,
                    message=message,
                    created=more.created or iso_utc(c.get("Created")),
                    resources=more.resources,
                    node=node if state["Status"] != "created" else "",
                )
            )
        summaries.sort(key=lambda s: (s.created, s.name), reverse=True)
        return summaries

    def _as_marked(self, name: str, cid: Any, info: JobInfo) -> JobInfo:
        return cancelled(info) if self.marks.is_cancelled(name, cid) else info

    def cancel(self, name: str) -> JobInfo:
        attrs = self._inspect(name)
        cid = str(attrs.get("Id") or "")
        info = job_info_from_inspect(name, attrs)
        if info.status.is_terminal or self.marks.is_cancelled(name, cid):
            return self._as_marked(name, cid, info)  # finished (or cancelled) already: as it is
        try:
            self.marks.mark(name, cid)  # first: from now on, whatever the exit, it is cancelled
        except OSError as e:
            raise BackendUnavailable(
                f"cannot record the cancellation of {name} in {self.options.state_dir}: {e.strerror or e}"
            ) from None
        if self.view is not None:  # a final state it kept before the mark is not the job's any more
            self.view.forget(name)
        try:
            self.api.stop(cid, timeout=self.options.cancel_grace_seconds)
        except docker.errors.NotFound as e:
            self.marks.clear(name)
            raise JobNotFound(name, str(e)) from None
        except ENGINE_ERRORS as e:
            self.marks.clear(name)  # still running: not cancelled
            raise self._unavailable(e) from e
        with contextlib.suppress(JobNotFound):  # removed meanwhile: the info before the stop
            info = self._observe(name)[1]
        return cancelled(info)

    def ping(self) -> None:
        try:
            self.api.ping()
        except ENGINE_ERRORS as e:
            raise BackendUnavailable(f"{self.options.engine_name} unavailable: {_short(e)}") from None

    def _ensure_image(self, image: str) -> None:
        seen = self._images_seen.get(image)
        if seen is not None and time.monotonic() - seen < IMAGE_SEEN_SECONDS:
            return
        try:
            self.api.inspect_image(image)
            if len(self._images_seen) > 1024:
                self._images_seen.clear()
            self._images_seen[image] = time.monotonic()
            return
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.APIError as e:
            if e.status_code == 400:
                raise InvalidJobSpec(f"image: {e.explanation}") from None
            raise BackendUnavailable(f"{self.options.engine_name} error: {e.explanation}") from None
        except ENGINE_ERRORS as e:
            raise BackendUnavailable(f"{self.options.engine_name} unavailable: {_short(e)}") from None
        if not self.options.pull_images:
            raise ImageNotAvailable(
                f"image: {image!r} is not present on the compute host "
                "(this server does not pull images unless PULL_IMAGES=yes)"
            )
        try:
            self.client.images.pull(image)
        except docker.errors.APIError as e:
            raise ImageNotAvailable(f"image: {image!r} could not be pulled: {e.explanation}") from None
        except ENGINE_ERRORS as e:
            raise BackendUnavailable(f"{self.options.engine_name} unavailable: {_short(e)}") from None

    def _check_workers(self, resources: Resources) -> None:
        why = self.capabilities.workers_problem(resources.number_of_workers)
        if why:
            raise InvalidJobSpec(why)

    def check(self, image: str, resources: Resources) -> None:
        self._check_workers(resources)
        self._ensure_image(image)

    def schedule(self, job: ContainerJob) -> JobInfo:
        self.create(job)
        return self.start(job)

    def create(self, job: ContainerJob) -> None:
        """The container, created and not started (``TwoPhaseComputePort``)."""
        self._check_workers(job.resources)  # the image is checked by create itself
        user, group_add = self._user(job)
        host_config_kwargs = self._host_config(job)
        if group_add:
            host_config_kwargs["group_add"] = group_add
        labels = {**dict(self.options.labels), **job.labels, IMAGE_LABEL: job.image}
        if self.view is not None:
            self.view.forget(job.name)  # what it knew belongs to an earlier container of this name
        self.marks.clear(job.name)  # a cancellation of an earlier container of this name

        def create() -> None:
            self.api.create_container(
                image=job.image,
                command=list(job.command),
                name=job.name,
                environment=list(job.env),
                labels=labels,
                user=user,
                host_config=self.api.create_host_config(**host_config_kwargs),
                detach=True,
            )

        try:
            try:
                create()
            except docker.errors.ImageNotFound:
                self._images_seen.pop(job.image, None)  # removed since it was seen
                self._ensure_image(job.image)  # pulls if allowed, else ImageNotAvailable
                create()
        except docker.errors.APIError as e:
            if _is_name_conflict(e):
                raise JobAlreadyExists(job.name) from None
            if e.status_code == 400:
                raise InvalidJobSpec(f"rejected by the container engine: {e.explanation}") from None
            raise BackendUnavailable(f"{self.options.engine_name} error: {e.explanation}") from e
        except ENGINE_ERRORS as e:
            raise BackendUnavailable(f"{self.options.engine_name} unavailable: {_short(e)}") from e
        if job.resources.gpu_limit > 0 and not self._kept_device_requests(job.name):
            # Podman's Docker-compatible API accepts DeviceRequests and drops them
            # (containers/podman#22645): the job would run without its GPU.
            self._discard(job.name)
            raise ResourceUnavailable(
                f"gpu_limit: this compute host cannot provide {job.resources.gpu_limit} GPU(s) "
                "(the container engine ignored the GPU request)"
            )

    def start(self, job: ContainerJob) -> JobInfo:
        """Start what ``create`` made; on any error the container is removed."""
        try:
            self.api.start(job.name)
        except docker.errors.APIError as e:
            self._discard(job.name)
            if job.resources.gpu_limit > 0 and _is_gpu_error(e):
                raise ResourceUnavailable(
                    f"gpu_limit: this compute host cannot provide {job.resources.gpu_limit} GPU(s)"
                ) from None
            if e.status_code == 400:
                raise InvalidJobSpec(f"rejected by the container engine: {e.explanation}") from None
            raise BackendUnavailable(f"{self.options.engine_name} error: {e.explanation}") from e
        except BaseException:
            self._discard(job.name)
            raise
        return JobInfo(
            name=job.name,
            image=job.image,
            cmd=shlex.join(job.command),
            status=JobStatus.NOT_STARTED,
            message="created",
            timestamp=ZERO_TIME,
        )

    def _kept_device_requests(self, name: str) -> bool:
        try:
            attrs = self._inspect(name, job=False)  # the container create has just made
        except (JobNotFound, BackendUnavailable):
            return True  # let start() decide
        return bool((attrs.get("HostConfig") or {}).get("DeviceRequests"))

    def _discard(self, name: str) -> None:
        # by the id of the container of that very name, never a container an id prefix finds
        with contextlib.suppress(JobNotFound, BackendUnavailable, *ENGINE_ERRORS):
            self.api.remove_container(str(self._inspect(name, job=False).get("Id") or name), force=True)
        if self.view is not None:
            self.view.forget(name)

    # -- observe ----------------------------------------------------------
    def _inspect(self, name: str, *, job: bool = True) -> dict[str, Any]:
        """The job container called ``name``: JobNotFound when there is none, even where
        the engine would answer with another container whose id starts with ``name``, or
        when the container of that name is not a job (``job=False``: any container of that
        very name, e.g. the one this adapter has just created)."""
        attempts = 3
        while True:
            attempts -= 1
            try:
                attrs: dict[str, Any] = self.api.inspect_container(name)
            except docker.errors.NotFound as e:
                raise JobNotFound(name, str(e)) from None
            except docker.errors.APIError as e:
                if _is_ambiguous(e):  # no container has the name (a name is matched first)
                    raise JobNotFound(name, f"no container named {name}") from None
                if attempts and _is_exit_race(e):
                    time.sleep(0.05)
                    continue
                raise BackendUnavailable(f"{self.options.engine_name} unavailable: {_short(e)}") from e
            except ENGINE_ERRORS as e:
                raise BackendUnavailable(f"{self.options.engine_name} unavailable: {_short(e)}") from e
            if not _is_named(attrs, name) or (job and not _is_job(attrs)):
                raise JobNotFound(name, f"no job container named {name}")
            return attrs

    def _observe(self, name: str) -> tuple[dict[str, Any], JobInfo]:
        """Inspect ``name``, and tell the view what the engine showed."""
        attrs = self._inspect(name)
        info = job_info_from_inspect(name, attrs)
        if self.view is not None:
            self.view.observe(name, attrs, info)
        return attrs, info

    def info(self, name: str) -> JobInfo:
        record = self.view.get(name) if self.view is not None else None
        if record is not None:
            if record.final is not None:
                return self._as_marked(name, record.id, record.final.info)
            if record.phase == RUNNING and record.running is not None:
                return self._as_marked(name, record.id, record.running)
        attrs, info = self._observe(name)
        return self._as_marked(name, attrs.get("Id"), info)

    def _logs(self, cid: str, name: str, log_tail: int) -> str:
        """The logs of the container ``cid`` (its id: a name could be taken for an id prefix)."""
        try:
            raw = self.api.logs(cid, stdout=True, stderr=True, tail=log_tail)
        except docker.errors.NotFound as e:
            raise JobNotFound(name, str(e)) from None
        except ENGINE_ERRORS as e:
            raise BackendUnavailable(f"{self.options.engine_name} unavailable: {_short(e)}") from e
        return decode_logs(raw)

    def known_state(self, name: str, log_tail: int) -> JobState | None:
        """A finished job's state from the current view, without I/O (KnownStatePort). Its
        final info was kept already marked (a job that had finished is never cancelled)."""
        view = self.view
        record = view.peek(name) if view is not None else None
        if record is not None and record.final is not None:
            logs = record.final.logs_for(log_tail)
            if logs is not None:
                return JobState(record.final.info, logs)
        return None

    def state(self, name: str, log_tail: int) -> JobState:
        view = self.view
        record = view.get(name) if view is not None else None
        if record is not None:
            # the view is current: a finished job costs nothing, a running one its logs
            if record.final is not None:
                logs = record.final.logs_for(log_tail)
                if logs is not None:
                    return JobState(self._as_marked(name, record.id, record.final.info), logs)
            elif record.phase == RUNNING and record.running is not None:
                return JobState(self._as_marked(name, record.id, record.running), self._logs(record.id, name, log_tail))
        attrs, info = self._observe(name)
        logs = self._logs(str(attrs.get("Id") or name), name, log_tail)
        if view is not None and (attrs.get("State") or {}).get("Status") in ("exited", "dead"):
            # exited before the logs were read: they are final (not Podman's transient "stopped")
            record = view.get(name)
            if record is not None and record.id == attrs.get("Id") and record.phase == EXITED:
                # kept as marked: known_state answers from it without reading the marks
                view.keep_final(name, record.id, Final(self._as_marked(name, record.id, info), log_tail, logs))
        return JobState(self._as_marked(name, attrs.get("Id"), info), logs)

    def remove(self, name: str) -> None:
        # By id, once the container of that very name is found: the engine would remove
        # whatever container an id prefix matches when no container has the name.
        try:
            cid = str(self._inspect(name).get("Id") or name)
        except JobNotFound:
            self._forget_removed(name)
            raise
        for attempt in range(REMOVE_ATTEMPTS):
            try:
                self.api.remove_container(cid, force=True)
                break
            except docker.errors.NotFound as e:
                self._forget_removed(name)
                raise JobNotFound(name, str(e)) from None
            except docker.errors.APIError as e:
                # Podman 4.3 answers 500 "could not be stopped: sending SIGKILL …" when the
                # container's process exits at that very moment: the next try removes it.
                if e.status_code is not None and e.status_code >= 500 and attempt + 1 < REMOVE_ATTEMPTS:
                    time.sleep(0.1 * 2**attempt)
                    continue
                raise BackendUnavailable(f"{self.options.engine_name} unavailable: {_short(e)}") from e
            except ENGINE_ERRORS as e:
                raise BackendUnavailable(f"{self.options.engine_name} unavailable: {_short(e)}") from e
        self._forget_removed(name)

    def _forget_removed(self, name: str) -> None:
        """What this adapter kept about the container ``name``, which is gone."""
        if self.view is not None:
            self.view.forget(name, destroyed=True)
        self.marks.clear(name)


def discover_storebase(
    client: docker.DockerClient, volume_name: str | None, selector: str, storebase_mount: str
) -> str:
    """Host path of storeBase for ``COMPUTE_VOLUME_TYPE=docker_local_volume`` (docs/wire-contract.md §9.5)."""
    if volume_name:
        volume = client.volumes.get(volume_name)
        driver = volume.attrs.get("Driver")
        if driver != "local":
            raise ValueError(f'Volume "{volume_name}" uses unsupported driver: {driver}')
        return str(volume.attrs["Mountpoint"])
    containers = client.containers.list(filters={"label": selector})
    if not containers:
        raise ValueError(f"No container found with label {selector}")
    container = containers[0]
    for mount in container.attrs.get("Mounts") or []:
        if mount.get("Destination") == storebase_mount:
            return str(mount["Source"])
    raise ValueError(f"Container {container.id} does not have a mount to {storebase_mount}")
