"""Docker Swarm compute adapter (``CONTAINER_ENV=swarm``): one service per job.

Each job is a replicated service of one replica, named after the job id, that is never
restarted; its status is its task's (docs/wire-contract.md §8.2). Unlike pfcon's Swarm manager it
applies CPU and memory limits, the job user, labels and ``/dev/shm``, refuses what it
cannot run (GPUs, several workers) before anything is created, and maps every engine
error: nothing becomes a 500. Why an absent image is only seen once a node tries to run
the task: docs/adr/0012-swarm.md.
"""

from __future__ import annotations

import datetime
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import docker
import docker.errors
import docker.types
import requests.exceptions

from .engine_connections import share_engine_connections
from .docker import ENGINE_ERRORS, decode_logs
from .listing import cancelled, iso_utc, job_kind
from .options import ContainerUser
from ...domain.errors import (
    BackendUnavailable,
    InvalidJobSpec,
    JobAlreadyExists,
    JobNotFound,
    ResourceUnavailable,
)
from ...domain.model import (
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

BACKEND = "Docker Swarm manager"
# The adapter's own mark on every service it creates (value: the job id), so that a
# service it did not create — the server's own, CUBE's — is never reported or removed
# as a job, whatever its name.
JOB_LABEL = "org.chrisproject.pfcon.jid"
# On a service an operator cancelled (value: when, ISO 8601 UTC): from then on the job is
# finishedWithError, "cancelled" (docs/adr/0020-cancel-is-not-delete.md).
CANCELLED_LABEL = "org.chrisproject.pfcon.cancelled"
# A cancelled service's tasks may run on no node: its task is shut down, and the one the
# update creates stays pending (node ids are 25 alphanumeric characters).
CANCELLED_CONSTRAINT = "node.id==cancelled"
SHM_TARGET = "/dev/shm"  # noqa: S108 (the container's shared-memory mount point)
OOM_EXIT_CODE = 128 + 9  # SIGKILL, what the kernel's OOM killer sends
NO_TASK_MESSAGE = "task not available yet"

# Task states (swarmkit api/types.proto, TaskState) before the container runs.
_WAITING = frozenset({"new", "pending", "allocated", "assigned", "accepted", "preparing", "ready", "starting"})
_OOM_RE = re.compile(r"\boom|out of memory", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class SwarmOptions:
    storebase: str  # storeBase's path on every node (COMPUTE_VOLUME_TYPE=host)
    labels: tuple[tuple[str, str], ...] = ()
    ignore_limits: bool = False
    container_user: ContainerUser | None = None
    # Groups plugin jobs (never op jobs) also get: the op jobs' group, which owns the
    # key-<jid>/outgoing a plugin writes in (pfcon 6 with an object store).
    supplemental_groups: tuple[int, ...] = ()
    shm_size_mib: int | None = None
    stop_grace_seconds: float = 1.0  # a removed job is stopped, not waited for
    capabilities: ComputeCapabilities = field(default_factory=ComputeCapabilities)


# -- the service spec, built without an engine -------------------------------------------


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """What ``create_service`` receives for one job."""

    name: str
    labels: dict[str, str]
    task_template: dict[str, Any]  # a docker.types.TaskTemplate (a dict)


def service_spec(
    job: ContainerJob, options: SwarmOptions, user: tuple[int | None, int | None] = (None, None)
) -> ServiceSpec:
    """The service of ``job``; ``user`` is the (uid, gid) picked from CONTAINER_USER (or
    an op job's ``run_as``). A plugin job also gets ``options.supplemental_groups``."""
    mounts = [
        docker.types.Mount(
            target=m.target,
            source=f"{options.storebase.rstrip('/')}/{m.source}" if m.source else options.storebase,
            type="bind",
            read_only=m.read_only,
        )
        for m in job.mounts
    ]
    if options.shm_size_mib:
        mounts.append(
            docker.types.Mount(
                target=SHM_TARGET, source=None, type="tmpfs", tmpfs_size=options.shm_size_mib * 1024 * 1024
            )
        )
    labels = {**dict(options.labels), **job.labels, JOB_LABEL: job.name}
    uid, gid = user
    container_user: str | None = None
    added: list[int] = []
    if uid is not None:
        container_user = f"{uid}:{gid}" if gid is not None else str(uid)
    elif gid is not None:
        added = [gid]  # no uid: the image's user, with the group added (as the Docker adapter does)
    if job.run_as is None:
        added += [g for g in options.supplemental_groups if g not in added and g != gid]
    groups = [str(g) for g in added] or None
    container = docker.types.ContainerSpec(
        image=job.image,
        command=list(job.command),
        env=list(job.env),
        user=container_user,
        groups=groups,
        labels=labels,
        mounts=mounts,
        stop_grace_period=int(options.stop_grace_seconds * 1_000_000_000),
    )
    resources = None
    if not options.ignore_limits:
        memory = job.resources.memory_limit * 1024 * 1024
        # A memory reservation places the job on a node that has the memory; CPU is not
        # reserved (it is shared, and a reservation would serialise small jobs).
        resources = docker.types.Resources(
            cpu_limit=job.resources.cpu_limit * 1_000_000, mem_limit=memory, mem_reservation=memory
        )
    template = docker.types.TaskTemplate(
        container_spec=container,
        resources=resources,
        restart_policy=docker.types.RestartPolicy(condition="none", max_attempts=0),
    )  # no network and no published port: the task needs no overlay (nor iptables)
    return ServiceSpec(name=job.name, labels=labels, task_template=template)


# -- task state → job status ----------------------------------------------------------------


def task_status(task: Mapping[str, Any], memory_limit: int | None = None) -> tuple[JobStatus, str]:
    """Map a task (``docker service ps`` / ``GET /tasks``) to a status and a message.

    ``memory_limit`` is the service's limit in bytes (None: no limit), for the message of
    a job killed out of memory.
    """
    status = task.get("Status") or {}
    state = status.get("State") or ""
    err = status.get("Err") or ""
    message = err or status.get("Message") or state
    if state in _WAITING:
        return JobStatus.NOT_STARTED, message
    if state == "running":
        return JobStatus.STARTED, message
    if state == "complete":
        return JobStatus.FINISHED_SUCCESSFULLY, message
    if state in ("failed", "shutdown"):
        exit_code = (status.get("ContainerStatus") or {}).get("ExitCode")
        if exit_code == OOM_EXIT_CODE or _OOM_RE.search(err):
            return JobStatus.FINISHED_WITH_ERROR, _oom_message(exit_code, memory_limit)
        if state == "shutdown":
            return JobStatus.FINISHED_WITH_ERROR, f"shut down by Docker Swarm before it finished: {message}"
        return JobStatus.FINISHED_WITH_ERROR, message
    if state == "rejected":  # e.g. "No such image: …" on the node: never retried (restart: none)
        return JobStatus.FINISHED_WITH_ERROR, f"rejected by Docker Swarm: {message}"
    return JobStatus.UNDEFINED, message  # remove, orphaned (its node is gone), or unknown


def _oom_message(exit_code: int | None, memory_limit: int | None) -> str:
    code = f" (exit code {exit_code})" if exit_code is not None else ""
    if memory_limit:
        return f"out of memory: killed by the kernel at the job's memory limit of {memory_limit // (1024 * 1024)} MiB{code}"
    return f"out of memory: killed by the kernel{code}"


def latest_task(tasks: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The job's task (one replica, never restarted: normally the only one)."""
    if not tasks:
        return None
    return max(tasks, key=lambda t: (t.get("CreatedAt") or "", (t.get("Version") or {}).get("Index") or 0))


def job_info(name: str, service: Mapping[str, Any], tasks: Sequence[Mapping[str, Any]]) -> JobInfo:
    """A job's info from its service (``inspect_service``) and its tasks."""
    template = (service.get("Spec") or {}).get("TaskTemplate") or {}
    container = template.get("ContainerSpec") or {}
    cmd = shlex.join([*(container.get("Command") or ()), *(container.get("Args") or ())])
    image = container.get("Image") or ""
    task = latest_task(tasks)
    if task is None:
        return JobInfo(name, image, cmd, JobStatus.NOT_STARTED, NO_TASK_MESSAGE, service.get("CreatedAt") or "")
    memory_limit = ((template.get("Resources") or {}).get("Limits") or {}).get("MemoryBytes")
    status, message = task_status(task, memory_limit)
    return JobInfo(name, image, cmd, status, message, (task.get("Status") or {}).get("Timestamp") or "")


def is_cancelled(service: Mapping[str, Any]) -> bool:
    return CANCELLED_LABEL in ((service.get("Spec") or {}).get("Labels") or {})


def service_info(name: str, service: Mapping[str, Any], tasks: Sequence[Mapping[str, Any]]) -> JobInfo:
    """``job_info``, or a cancelled job's info when an operator cancelled it (whatever
    its tasks show since: shut down, or the pending task of the update)."""
    info = job_info(name, service, tasks)
    if is_cancelled(service):
        labels = (service.get("Spec") or {}).get("Labels") or {}
        return replace(cancelled(info), timestamp=str(labels.get(CANCELLED_LABEL) or info.timestamp))
    return info


def service_resources(service: Mapping[str, Any]) -> Resources | None:
    """A job's resources from its service's limits (the inverse of ``service_spec``; None
    without limits, e.g. IGNORE_LIMITS)."""
    template = (service.get("Spec") or {}).get("TaskTemplate") or {}
    limits = (template.get("Resources") or {}).get("Limits") or {}
    nano_cpus, memory = int(limits.get("NanoCPUs") or 0), int(limits.get("MemoryBytes") or 0)
    if nano_cpus <= 0 or memory <= 0:
        return None
    return Resources(1, nano_cpus // 1_000_000, memory // (1024 * 1024), 0)


def placed_node(tasks: Sequence[Mapping[str, Any]]) -> str:
    """The node id of the job's latest task that was placed on a node ("" when none was)."""
    placed = [t for t in tasks if t.get("NodeID")]
    task = latest_task(placed)
    return str(task.get("NodeID") or "") if task is not None else ""


# -- the adapter -------------------------------------------------------------------------------


def _short(error: Exception) -> str:
    """One line about a manager failure, without the SDK's nested reprs."""
    if isinstance(error, requests.exceptions.ConnectionError):
        return "cannot connect to the manager"
    if isinstance(error, requests.exceptions.Timeout):
        return "the manager did not answer in time"
    if isinstance(error, docker.errors.APIError) and error.explanation:
        text = str(error.explanation)
    else:
        text = str(error) or type(error).__name__
    return text.splitlines()[0][:300] if text else type(error).__name__


def _unavailable(error: Exception) -> BackendUnavailable:
    return BackendUnavailable(f"{BACKEND} unavailable: {_short(error)}")


def _is_name_conflict(error: docker.errors.APIError) -> bool:
    return error.status_code == 409 or "name conflicts" in str(error.explanation or "")


class SwarmCompute:
    """Runs each job as a Swarm service named after the job id (one task, no restart)."""

    def __init__(self, client: docker.DockerClient, options: SwarmOptions) -> None:
        self.client = client
        self.api = client.api
        share_engine_connections(self.api)  # one keep-alive pool for every service's URLs
        self.options = options
        self.capabilities = options.capabilities

    # -- the operator's view: listing and cancel -----------------------------------------
    def list_jobs(self, instance: str) -> list[JobSummary]:
        """Three calls whatever the number of jobs: the services and the tasks selected by
        this server's labels (the task filter matches the container labels, which are the
        service's), and the nodes (for their names)."""
        labels = [JOB_LABEL, JOB_TYPE_LABEL, f"{INSTANCE_LABEL}={instance}", *(f"{k}={v}" for k, v in self.options.labels)]
        try:
            services = list(self.api.services(filters={"label": labels}))
            tasks = list(self.api.tasks(filters={"label": labels[1:]})) if services else []
            nodes = {str(n.get("ID")): n for n in self.api.nodes()} if tasks else {}
        except ENGINE_ERRORS as e:
            raise _unavailable(e) from e
        by_service: dict[str, list[dict[str, Any]]] = {}
        for task in tasks:
            by_service.setdefault(str(task.get("ServiceID") or ""), []).append(task)
        summaries = []
        for service in services:
            spec = service.get("Spec") or {}
            name, service_labels = str(spec.get("Name") or ""), spec.get("Labels") or {}
            kind = job_kind(service_labels)
            if kind is None or service_labels.get(JOB_LABEL) != name:
                continue
            own = by_service.get(str(service.get("ID") or ""), [])
            info = service_info(name, service, own)
            node = nodes.get(placed_node(own)) or {}
            summaries.append(
                JobSummary(
                    name=name,
                    kind=kind,
                    image=info.image,
                    status=info.status,
                    message=info.message,
                    created=iso_utc(service.get("CreatedAt")),
                    resources=service_resources(service),
                    node=str((node.get("Description") or {}).get("Hostname") or ""),
                )
            )
        summaries.sort(key=lambda s: (s.created, s.name), reverse=True)
        return summaries

    def cancel(self, name: str) -> JobInfo:
        """Label the service cancelled and move its task to no node: the running task is
        shut down and kept (its container, so its logs, stay), and the task of the
        update never runs. Scaling to 0 would remove the task and its logs."""
        for attempt in range(3):
            service = self._service(name)
            info = service_info(name, service, self._tasks(service))
            if info.status.is_terminal:
                return info  # finished, or cancelled already: as it is
            spec = service.get("Spec") or {}
            now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            template = dict(spec.get("TaskTemplate") or {})
            template["Placement"] = {**(template.get("Placement") or {}), "Constraints": [CANCELLED_CONSTRAINT]}
            try:
                self.api.update_service(
                    service["ID"],
                    version=(service.get("Version") or {}).get("Index"),
                    task_template=template,
                    labels={**(spec.get("Labels") or {}), CANCELLED_LABEL: now},
                    fetch_current_spec=True,
                )
            except docker.errors.NotFound:
                raise JobNotFound(name) from None
            except docker.errors.APIError as e:
                if "out of sequence" in str(e.explanation or "") and attempt < 2:
                    continue  # the service changed meanwhile: look again
                raise _unavailable(e) from e
            except ENGINE_ERRORS as e:
                raise _unavailable(e) from e
            return replace(cancelled(info), timestamp=now)
        raise BackendUnavailable(f"{BACKEND}: the service {name} kept changing while it was cancelled")

    def ping(self) -> None:
        """The manager answers and is a manager: a node out of swarm mode (or a worker)
        answers 503 "This node is not a swarm manager"."""
        try:
            self.api.inspect_swarm()
        except ENGINE_ERRORS as e:
            raise _unavailable(e) from None

    # -- schedule ---------------------------------------------------------
    def _refuse(self, resources: Resources) -> None:
        why = self.capabilities.workers_problem(resources.number_of_workers)
        if why:
            raise InvalidJobSpec(why)
        if resources.gpu_limit > 0 and not self.capabilities.gpus:
            raise ResourceUnavailable(
                f"gpu_limit: Docker Swarm jobs cannot get GPUs here (gpu_limit={resources.gpu_limit})"
            )

    def check(self, image: str, resources: Resources) -> None:
        # The image is not checked: the manager cannot know what each node has or can
        # pull (docs/adr/0012-swarm.md); an absent image shows in the job's status.
        self._refuse(resources)

    def schedule(self, job: ContainerJob) -> JobInfo:
        self._refuse(job.resources)
        user: tuple[int | None, int | None] = (None, None)
        if job.run_as is not None:
            user = job.run_as  # an op job: the owner of key-<jid>/
        elif self.options.container_user:
            user = self.options.container_user.pick()
        spec = service_spec(job, self.options, user)
        try:
            self.api.create_service(
                spec.task_template,
                name=spec.name,
                labels=spec.labels,
                mode=docker.types.ServiceMode("replicated", replicas=1),
            )
        except docker.errors.APIError as e:
            if _is_name_conflict(e):
                raise JobAlreadyExists(job.name) from None
            if e.status_code is not None and 400 <= e.status_code < 500:
                raise InvalidJobSpec(f"rejected by Docker Swarm: {_short(e)}") from None
            raise _unavailable(e) from e
        except ENGINE_ERRORS as e:
            raise _unavailable(e) from e
        return JobInfo(
            name=job.name,
            image=job.image,
            cmd=shlex.join(job.command),
            status=JobStatus.NOT_STARTED,
            message=NO_TASK_MESSAGE,
            timestamp="",
        )

    # -- observe ----------------------------------------------------------
    def _service(self, name: str) -> dict[str, Any]:
        """The job's service. The engine also finds a service by an ID prefix: only a
        service of that exact name, created by this adapter, is the job."""
        try:
            service: dict[str, Any] = self.api.inspect_service(name)
        except docker.errors.APIError as e:
            if e.status_code in (400, 404):  # unknown, or an ambiguous ID prefix
                raise JobNotFound(name) from None
            raise _unavailable(e) from e
        except ENGINE_ERRORS as e:
            raise _unavailable(e) from e
        spec = service.get("Spec") or {}
        if spec.get("Name") != name or (spec.get("Labels") or {}).get(JOB_LABEL) != name:
            raise JobNotFound(name)
        return service

    def _tasks(self, service: Mapping[str, Any]) -> list[dict[str, Any]]:
        try:
            return list(self.api.tasks(filters={"service": service["ID"]}))
        except ENGINE_ERRORS as e:
            raise _unavailable(e) from e

    def info(self, name: str) -> JobInfo:
        service = self._service(name)
        return service_info(name, service, self._tasks(service))

    def state(self, name: str, log_tail: int) -> JobState:
        service = self._service(name)
        info = service_info(name, service, self._tasks(service))
        try:
            chunks = self.api.service_logs(
                service["ID"], stdout=True, stderr=True, tail=log_tail, follow=False, is_tty=False
            )
            logs = b"".join(chunks)  # a stream of the demultiplexed stdout and stderr
        except docker.errors.NotFound:
            raise JobNotFound(name) from None
        except ENGINE_ERRORS as e:
            raise _unavailable(e) from e
        return JobState(info, decode_logs(logs))

    def remove(self, name: str) -> None:
        service = self._service(name)
        try:
            self.api.remove_service(service["ID"])
        except docker.errors.NotFound:
            raise JobNotFound(name) from None
        except ENGINE_ERRORS as e:
            raise _unavailable(e) from e
