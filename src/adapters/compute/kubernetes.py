"""Kubernetes compute adapter (``CONTAINER_ENV=kubernetes`` or ``openshift``).

Each job is one ``batch/v1`` Job named after the job id, whose pods run the plugin with
``parallelism = completions = number_of_workers``. Status requests are answered from a
shared, watch-fed view of this server's Jobs and pods (``k8s_view``), never with one
LIST per poll; logs are read on demand, per pod. Unlike pfcon (docs/wire-contract.md §8.3, §13.1):
a Job that has not run a pod yet is ``notStarted`` with the reason (unschedulable, image
pull, container creation) as its message, failure reasons (OOMKilled, DeadlineExceeded,
Evicted, ...) are in the message, logs cover every pod, a Job never lingers or vanishes
on a TTL, and every API error becomes a domain error naming Kubernetes — never a 500.

Objects are handled as plain JSON dicts (the API's own camelCase form): the pure
functions below map a Job and its pods to a status and build the Job manifest, and are
table-tested without a cluster.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import re
import shlex
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .k8s_view import JOBS, PODS, ClusterView, Gone, owner_uid, slim_job, slim_pod
from .listing import cancelled, iso_utc, job_kind
from .options import ContainerUser
from ...domain.errors import BackendUnavailable, InvalidJobSpec, JobAlreadyExists, JobNotFound
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

log = logging.getLogger(__name__)

BACKEND = "Kubernetes API server"  # how errors name the backend
MANAGED_BY = ("app.kubernetes.io/managed-by", "pfcon")  # on every Job and pod this server creates
# On a Job an operator cancelled: from then on it is finishedWithError, "cancelled", whatever
# its pods and conditions say (docs/adr/0020-cancel-is-not-delete.md). A label, because the
# watch-fed view keeps a Job's labels.
CANCELLED_LABEL = "org.chrisproject.pfcon.cancelled"
MERGE_PATCH = "application/merge-patch+json"
STOREBASE_VOLUME = "storebase"
SHM_VOLUME = "dshm"
DEFAULT_DEADLINE = 7 * 24 * 3600  # pfcon's activeDeadlineSeconds: a stuck Job ends as DeadlineExceeded
LOG_LIMIT_BYTES = 8 * 1024 * 1024  # per pod and request, whatever the tail
# Waiting reasons that are a lasting problem (remembered for the failure message of a
# Job that later fails, e.g. DeadlineExceeded after its pod was deleted).
TRANSIENT_WAITING = frozenset({"ContainerCreating", "PodInitializing", "Pending"})


# -- options ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KubernetesOptions:
    volume_name: str | None = None  # the PVC holding storeBase (COMPUTE_VOLUME_TYPE=kubernetes_pvc)
    namespace: str = "default"
    labels: tuple[tuple[str, str], ...] = ()  # JOB_LABELS
    node_selector: tuple[tuple[str, str], ...] = ()
    image_pull_secrets: tuple[str, ...] = ()
    ignore_limits: bool = False
    container_user: ContainerUser | None = None
    # Groups plugin jobs (never op jobs) also get: the op jobs' group, which owns the
    # key-<jid>/outgoing a plugin writes in (pfcon 6 with an object store).
    supplemental_groups: tuple[int, ...] = ()
    shm_size_mib: int | None = None
    host_network: bool = False
    active_deadline_seconds: int | None = DEFAULT_DEADLINE
    resync_seconds: float = 300.0  # a watch is renewed (from its resourceVersion) this often
    log_refresh_seconds: float = 1.0  # a running pod's log tail is re-read at most this often
    sweep_after_seconds: float = 0.0  # > 0: delete this server's Jobs finished longer ago than this
    capabilities: ComputeCapabilities = field(default_factory=ComputeCapabilities)

    @property
    def selector(self) -> str:
        """The label selector of every object this server creates (its view, its sweep)."""
        labels = {**dict(self.labels), MANAGED_BY[0]: MANAGED_BY[1]}
        return ",".join(f"{k}={v}" for k, v in labels.items())


# -- the Job manifest --------------------------------------------------------------------------

_LABEL_NAME = re.compile(r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*")


def labels_problem(pairs: tuple[tuple[str, str], ...]) -> str | None:
    """Why ``pairs`` are not valid Kubernetes labels (None when they are)."""
    for key, value in pairs:
        prefix, slash, name = key.rpartition("/")
        if slash and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
            return f"label key {key!r}: the prefix must be a DNS subdomain"
        if not _LABEL_NAME.fullmatch(name):
            return f"label key {key!r}: the name must be 1-63 characters [A-Za-z0-9-_.], alphanumeric at both ends"
        if value and not _LABEL_NAME.fullmatch(value):
            return (
                f"label value {value!r} (of {key!r}): at most 63 characters [A-Za-z0-9-_.], alphanumeric at both ends"
            )
    return None


def job_manifest(job: ContainerJob, options: KubernetesOptions, user: tuple[int | None, int | None]) -> dict[str, Any]:
    """The batch/v1 Job for ``job`` (JSON form). Raises InvalidJobSpec for a mount that
    would expose storeBase's root writable."""
    labels = {**dict(options.labels), **job.labels, MANAGED_BY[0]: MANAGED_BY[1]}
    res = job.resources
    quantities: dict[str, str] = {}
    if not options.ignore_limits:
        quantities = {"cpu": f"{res.cpu_limit}m", "memory": f"{res.memory_limit}Mi"}
    if res.gpu_limit > 0:
        quantities["nvidia.com/gpu"] = str(res.gpu_limit)
    security: dict[str, Any] = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    uid, gid = user
    if uid is not None:
        security["runAsUser"] = uid
    if gid is not None:
        security["runAsGroup"] = gid

    mounts: list[dict[str, Any]] = []
    for m in job.mounts:
        source = m.source.strip("/")
        if ".." in source.split("/"):
            raise InvalidJobSpec(f"mount source {m.source!r} leaves storeBase")
        if not source and not m.read_only:
            raise InvalidJobSpec(
                f"refusing to mount the root of storeBase (PVC {options.volume_name}) writable at {m.target}"
            )
        mount: dict[str, Any] = {"name": STOREBASE_VOLUME, "mountPath": m.target, "readOnly": m.read_only}
        if source:
            mount["subPath"] = source
        mounts.append(mount)
    volumes: list[dict[str, Any]] = []
    if mounts:
        if not options.volume_name:
            raise InvalidJobSpec("no PVC is configured for storeBase (VOLUME_NAME)")
        volumes.append({"name": STOREBASE_VOLUME, "persistentVolumeClaim": {"claimName": options.volume_name}})
    if options.shm_size_mib:
        volumes.append({"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": f"{options.shm_size_mib}Mi"}})
        mounts.append({"name": SHM_VOLUME, "mountPath": "/dev/shm"})  # noqa: S108 - a mount point in the pod

    container: dict[str, Any] = {
        "name": job.name,
        "image": job.image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(job.command),
        "env": [{"name": k, "value": v} for k, _, v in (item.partition("=") for item in job.env)],
        "securityContext": security,
        "volumeMounts": mounts,
    }
    if quantities:
        container["resources"] = {"limits": dict(quantities), "requests": dict(quantities)}
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": volumes,
        "automountServiceAccountToken": False,  # plugins do not talk to the API server
        "enableServiceLinks": False,  # nor get the namespace's services as env vars
    }
    groups = [g for g in dict.fromkeys(options.supplemental_groups) if g != gid] if job.run_as is None else []
    if groups:  # a plugin job: the op jobs' group, which owns the key-<jid>/outgoing it writes in
        pod_spec["securityContext"] = {"supplementalGroups": groups}
    if options.host_network:
        pod_spec["hostNetwork"] = True
    if options.node_selector:
        pod_spec["nodeSelector"] = dict(options.node_selector)
    if options.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": name} for name in options.image_pull_secrets]
    spec: dict[str, Any] = {
        "parallelism": res.number_of_workers,
        "completions": res.number_of_workers,
        "backoffLimit": 0,
        "template": {"metadata": {"labels": labels}, "spec": pod_spec},
    }
    if options.active_deadline_seconds:
        spec["activeDeadlineSeconds"] = options.active_deadline_seconds
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": job.name, "labels": labels}, "spec": spec}


# -- status: Job + pods -> JobInfo (pure) ---------------------------------------------------------


def _get(obj: dict[str, Any] | None, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _container_statuses(pod: dict[str, Any]) -> list[dict[str, Any]]:
    status = pod.get("status") or {}
    return [*(status.get("initContainerStatuses") or ()), *(status.get("containerStatuses") or ())]


def _with_message(reason: str, message: Any) -> str:
    message = " ".join(str(message or "").split())  # one line
    return f"{reason}: {message}" if message else reason


def pod_problem(pod: dict[str, Any]) -> str | None:
    """Why a pod has not started its container yet (None when it has, or has ended)."""
    status = pod.get("status") or {}
    if status.get("phase") in ("Running", "Succeeded", "Failed"):
        return None
    for condition in status.get("conditions") or ():
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return _with_message(condition.get("reason") or "Unschedulable", condition.get("message"))
    for cs in _container_statuses(pod):
        waiting = _get(cs, "state", "waiting")
        if waiting:
            return _with_message(waiting.get("reason") or "Waiting", waiting.get("message"))
    if status.get("reason"):
        return _with_message(status["reason"], status.get("message"))
    if any(c.get("type") == "PodScheduled" and c.get("status") == "True" for c in status.get("conditions") or ()):
        return "ContainerCreating"
    return "Pending: waiting for the scheduler"


def lasting_problem(pod: dict[str, Any]) -> str | None:
    """A pod problem worth remembering (not the normal steps of starting a container)."""
    problem = pod_problem(pod)
    if problem is None or problem.split(":")[0] in TRANSIENT_WAITING:
        return None
    return problem


def pod_failure(pod: dict[str, Any]) -> str | None:
    """Why a pod failed or one of its containers ended badly (None otherwise)."""
    status = pod.get("status") or {}
    reason = status.get("reason")  # pod-level: Evicted, DeadlineExceeded, NodeLost, OutOfmemory ...
    if reason and (status.get("phase") == "Failed" or reason in ("Evicted", "DeadlineExceeded")):
        return _with_message(reason, status.get("message"))
    for cs in _container_statuses(pod):
        terminated = _get(cs, "state", "terminated") or _get(cs, "lastState", "terminated")
        if not terminated:
            continue
        code = terminated.get("exitCode")
        reason = terminated.get("reason") or "Error"
        if reason == "Completed" and code == 0:
            continue
        text = f"{reason} (exit code {code})" if code is not None else reason
        if terminated.get("message") and reason not in ("Completed",):
            text = _with_message(text, str(terminated["message"])[:300])
        return text
    if status.get("phase") == "Failed":
        return _with_message("Failed", status.get("message"))
    return None


def _unique(items: Any) -> list[str]:
    out: list[str] = []
    for item in items:
        if item and item not in out:
            out.append(item)
    return out


def _pod_order(pod: dict[str, Any]) -> tuple[str, str]:
    meta = pod.get("metadata") or {}
    return str(meta.get("creationTimestamp") or ""), str(meta.get("name") or "")


def _true_conditions(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    conditions = _get(job, "status", "conditions") or ()
    return {c.get("type"): c for c in conditions if c.get("status") == "True"}


def is_finished(job: dict[str, Any]) -> bool:
    return bool({"Complete", "Failed"} & set(_true_conditions(job)))


def finished_at(job: dict[str, Any]) -> str | None:
    conditions = _true_conditions(job)
    for kind in ("Complete", "Failed"):
        if kind in conditions:
            return (
                str(_get(job, "status", "completionTime") or conditions[kind].get("lastTransitionTime") or "") or None
            )
    return None


def job_status(
    job: dict[str, Any], pods: list[dict[str, Any]], remembered: str | None = None
) -> tuple[JobStatus, str, str]:
    """(status, message, timestamp) of a Job from the Job and its pods (docs/wire-contract.md §8.3,
    without pfcon's bugs: a Job is ``started`` only once a pod runs)."""
    status = job.get("status") or {}
    meta = job.get("metadata") or {}
    pods = sorted(pods, key=_pod_order)
    conditions = _true_conditions(job)

    failed = conditions.get("Failed")
    if failed is not None:
        reasons = _unique(pod_failure(p) for p in pods)
        if not reasons:
            reasons = _unique(pod_problem(p) for p in pods)
        if not reasons and remembered:
            reasons = [remembered]
        head = _with_message(failed.get("reason") or "Failed", failed.get("message"))
        if failed.get("reason") == "DeadlineExceeded" or not reasons:
            reasons = [head, *reasons]
        when = failed.get("lastTransitionTime") or status.get("completionTime") or ""
        return JobStatus.FINISHED_WITH_ERROR, "; ".join(reasons), str(when)

    complete = conditions.get("Complete")
    if complete is not None:
        when = status.get("completionTime") or complete.get("lastTransitionTime") or ""
        return JobStatus.FINISHED_SUCCESSFULLY, "finished", str(when)

    if meta.get("deletionTimestamp"):
        return JobStatus.UNDEFINED, "the Job is being deleted", str(meta["deletionTimestamp"])

    started_at = str(status.get("startTime") or meta.get("creationTimestamp") or "")
    phases = [(p.get("status") or {}).get("phase") for p in pods]
    if any(phase in ("Running", "Succeeded", "Failed", "Unknown") for phase in phases):
        failures = _unique(pod_failure(p) for p in pods if _get(p, "status", "phase") == "Failed")
        if failures:  # backoffLimit 0: the Job controller is about to mark the Job failed
            return JobStatus.STARTED, "finishing: " + "; ".join(failures), started_at
        if "Unknown" in phases and "Running" not in phases:
            return JobStatus.STARTED, "a pod's state is unknown (its node does not report)", started_at
        return JobStatus.STARTED, "running", started_at

    created_at = str(meta.get("creationTimestamp") or "")
    problems = _unique(pod_problem(p) for p in pods)
    if problems:
        return JobStatus.NOT_STARTED, "; ".join(problems), created_at
    if status.get("startTime"):
        # The Job ran a pod that is gone (deleted, not failed): never a success; the
        # Job controller creates another one.
        return JobStatus.NOT_STARTED, "no pod: waiting for the Job controller to create one", created_at
    return JobStatus.NOT_STARTED, "created", created_at


def job_info(job: dict[str, Any], pods: list[dict[str, Any]], remembered: str | None = None) -> JobInfo:
    status, message, timestamp = job_status(job, pods, remembered)
    containers = _get(job, "spec", "template", "spec", "containers") or [{}]
    return JobInfo(
        name=str(_get(job, "metadata", "name") or ""),
        image=str(containers[0].get("image") or ""),
        cmd=shlex.join(containers[0].get("command") or ()),
        status=status,
        message=message,
        timestamp=timestamp,
    )


def pods_lag(job: dict[str, Any], pods: list[dict[str, Any]]) -> bool:
    """Whether the view's pods of a finished Job are behind the Job's own counts."""
    status = job.get("status") or {}
    ended = sum(1 for p in pods if _get(p, "status", "phase") in ("Succeeded", "Failed"))
    return ended < int(status.get("succeeded") or 0) + int(status.get("failed") or 0) or not pods


def container_ran(pod: dict[str, Any]) -> bool:
    """Whether a container of the pod has started (so that it may have logs)."""
    for cs in _container_statuses(pod):
        if _get(cs, "state", "running") or _get(cs, "lastState", "terminated"):
            return True
        terminated = _get(cs, "state", "terminated")
        if terminated and (terminated.get("startedAt") or terminated.get("containerID")):
            return True
    return False


def pod_ended(pod: dict[str, Any]) -> bool:
    return _get(pod, "status", "phase") in ("Succeeded", "Failed")


def format_logs(chunks: list[tuple[str, str, str | None]]) -> str:
    """Logs of a Job: one pod's text as is, several pods each under a header; a pod that
    ended badly gets its reason on a last line (``[OOMKilled (exit code 137)]``)."""
    if not chunks:
        return ""
    parts: list[str] = []
    for pod_name, text, failure in chunks:
        if len(chunks) > 1:
            parts.append(f"==> pod {pod_name} <==\n")
        if text:
            parts.append(text if text.endswith("\n") else text + "\n")
        if failure:
            parts.append(f"[{failure}]\n")
    return "".join(parts)


def is_cancelled(job: dict[str, Any]) -> bool:
    return CANCELLED_LABEL in (_get(job, "metadata", "labels") or {})


def _millicores(quantity: Any) -> int | None:
    text = str(quantity or "")
    try:
        return int(text[:-1]) if text.endswith("m") else round(float(text) * 1000)
    except ValueError:
        return None


_BINARY = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024 * 1024}


def _mebibytes(quantity: Any) -> int | None:
    text = str(quantity or "")
    try:
        for suffix, factor in _BINARY.items():
            if text.endswith(suffix):
                return int(float(text[: -len(suffix)]) * factor)
        return int(float(text)) // (1024 * 1024)
    except ValueError:
        return None


def job_resources(job: dict[str, Any]) -> Resources | None:
    """A job's resources from its Job (the inverse of ``job_manifest``: limits and
    parallelism; None without CPU and memory limits, e.g. IGNORE_LIMITS)."""
    containers = _get(job, "spec", "template", "spec", "containers") or [{}]
    limits = _get(containers[0], "resources", "limits") or {}
    cpu, memory = _millicores(limits.get("cpu")), _mebibytes(limits.get("memory"))
    if not cpu or not memory:
        return None
    workers = int(_get(job, "spec", "parallelism") or 1)
    return Resources(workers, cpu, memory, int(limits.get("nvidia.com/gpu") or 0))


def pod_nodes(pods: list[dict[str, Any]]) -> str:
    """The nodes a Job's pods were placed on (comma-separated, oldest pod first)."""
    return ",".join(_unique(str(_get(p, "spec", "nodeName") or "") for p in sorted(pods, key=_pod_order)))


# -- the API server: a few calls on JSON, each counted ----------------------------------------------


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}" if message else f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.message = message


def _status_message(body: Any) -> str:
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    try:
        data = json.loads(body) if body else {}
    except ValueError:
        return str(body or "")[:300]
    return str(data.get("message") or "")[:500] if isinstance(data, dict) else ""


class _Stream:
    """A watch response read line by line; ``close()`` interrupts a blocked read."""

    def __init__(self, response: Any) -> None:
        self.response = response

    def __iter__(self) -> Iterator[tuple[str, dict[str, Any]]]:
        buffer = b""
        for chunk in self.response.stream(amt=None, decode_content=True):
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line.strip():
                    event = json.loads(line)
                    yield str(event.get("type")), event.get("object") or {}

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.response.shutdown()
        with contextlib.suppress(Exception):
            self.response.release_conn()


class KubeApi:
    """The Kubernetes calls this adapter makes, on JSON dicts, each one counted by verb.

    Every failure to reach the API server, or a 5xx, raises BackendUnavailable naming
    Kubernetes; other HTTP errors raise ApiError for the caller to map.
    """

    def __init__(self, api_client: Any, timeout: tuple[float, float] = (5.0, 30.0)) -> None:
        from kubernetes import client

        self.api_client = api_client
        self.batch: Any = client.BatchV1Api(api_client)
        self.core: Any = client.CoreV1Api(api_client)
        self.version_api: Any = client.VersionApi(api_client)
        self.host = str(api_client.configuration.host)
        self.timeout = timeout
        self._counts: Counter[str] = Counter()
        self._count_lock = threading.Lock()

    @classmethod
    def connect(cls, kubeconfig: str | None = None) -> KubeApi:
        """From a kubeconfig file, else the pod's service account (in-cluster)."""
        import urllib3
        from kubernetes import client, config

        configuration = client.Configuration()
        if kubeconfig:
            config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        # One quick retry of a refused connection, never of a request that was sent
        # (urllib3 does not repeat a POST after a read error): a create is not doubled.
        configuration.retries = urllib3.util.Retry(total=2, connect=2, read=1, redirect=0, status=0, backoff_factor=0.1)
        configuration.keep_alive = True  # a watch behind a silent middlebox still notices
        configuration.connection_pool_maxsize = 64  # worker threads reading logs at once, and the 2 watches
        return cls(client.ApiClient(configuration))

    # -- counting -------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        with self._count_lock:
            return dict(self._counts)

    def total(self) -> int:
        with self._count_lock:
            return sum(self._counts.values())

    def _call(self, verb: str, fn: Any, *args: Any, timeout: Any = None, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        with self._count_lock:
            self._counts[verb] += 1
        try:
            return fn(*args, _preload_content=False, _request_timeout=timeout or self.timeout, **kwargs)
        except ApiException as e:
            if e.status == 0 or e.status >= 500 or e.status == 429:
                detail = _status_message(e.body) or str(e.reason or "")
                raise BackendUnavailable(f"{BACKEND} error ({e.status}): {detail}") from None
            raise ApiError(int(e.status), str(e.reason or ""), _status_message(e.body)) from None
        except Exception as e:  # noqa: BLE001 - urllib3/socket/SSL errors: the server is unreachable
            raise BackendUnavailable(f"{BACKEND} unavailable at {self.host}: {_short(e)}") from None

    def _json(self, verb: str, fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        response = self._call(verb, fn, *args, **kwargs)
        try:
            data = json.loads(response.data)
        except Exception as e:  # noqa: BLE001 - a cut or garbled answer
            raise BackendUnavailable(f"{BACKEND} unavailable at {self.host}: {_short(e)}") from None
        return data if isinstance(data, dict) else {}

    # -- calls ----------------------------------------------------------------------------
    def create_job(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._json("create job", self.batch.create_namespaced_job, namespace, body)

    def read_job(self, namespace: str, name: str) -> dict[str, Any]:
        return self._json("get job", self.batch.read_namespaced_job, name, namespace)

    def delete_job(self, namespace: str, name: str) -> None:
        self._call("delete job", self.batch.delete_namespaced_job, name, namespace, propagation_policy="Background")

    def patch_job(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._json(
            "patch job", self.batch.patch_namespaced_job, name, namespace, body, _content_type=MERGE_PATCH
        )

    def delete_pod_now(self, namespace: str, name: str) -> None:
        self._call("delete pod", self.core.delete_namespaced_pod, name, namespace, grace_period_seconds=0)

    def patch_pod(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._json("patch pod", self.core.patch_namespaced_pod, name, namespace, body, _content_type=MERGE_PATCH)

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        data = self._json("list pods", self.core.list_namespaced_pod, namespace, label_selector=selector)
        return list(data.get("items") or [])

    def pod_log(self, namespace: str, pod: str, container: str | None, tail: int) -> bytes:
        response = self._call(
            "get pod log", self.core.read_namespaced_pod_log, pod, namespace,
            container=container, tail_lines=tail, limit_bytes=LOG_LIMIT_BYTES,
        )  # fmt: skip
        return bytes(response.data)

    def read_pvc(self, namespace: str, name: str) -> dict[str, Any]:
        return self._json("get pvc", self.core.read_namespaced_persistent_volume_claim, name, namespace)

    def version(self) -> dict[str, Any]:
        return self._json("get version", self.version_api.get_code, timeout=(3.0, 5.0))

    def _lister(self, kind: str) -> Any:
        return self.batch.list_namespaced_job if kind == JOBS else self.core.list_namespaced_pod

    def list(
        self, kind: str, namespace: str, selector: str, limit: int | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        data = self._json(f"list {kind}", self._lister(kind), namespace, label_selector=selector, limit=limit)
        return list(data.get("items") or []), str(_get(data, "metadata", "resourceVersion") or "")

    def watch(self, kind: str, namespace: str, selector: str, resource_version: str, timeout: int) -> _Stream:
        try:
            response = self._call(
                f"watch {kind}", self._lister(kind), namespace,
                label_selector=selector, watch=True, resource_version=resource_version,
                allow_watch_bookmarks=True, timeout_seconds=timeout,
                timeout=(self.timeout[0], timeout + 30.0),
            )  # fmt: skip
        except ApiError as e:
            if e.status == 410:
                raise Gone() from None
            raise
        return _Stream(response)


def _short(error: Exception) -> str:
    text = str(error)
    for marker, said in (
        ("Connection refused", "connection refused"),
        ("timed out", "timed out"),
        ("Name or service not known", "unknown host"),
        ("RemoteDisconnected", "connection closed by the server"),
        ("Connection reset", "connection reset"),
        ("CERTIFICATE_VERIFY_FAILED", "TLS certificate not trusted"),
    ):
        if marker in text:
            return said
    first = text.splitlines()[0] if text else type(error).__name__
    return first[:200]


# -- the adapter --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Observed:
    job: dict[str, Any]
    pods: list[dict[str, Any]]
    remembered: str | None


@dataclass(slots=True)
class _Final:
    info: JobInfo
    pods: list[dict[str, Any]]


class KubernetesCompute:
    """Runs each job as a Kubernetes Job named after the job id."""

    def __init__(self, api: Any, options: KubernetesOptions, *, start: bool = True) -> None:
        self.api = api
        self.options = options
        self.capabilities = options.capabilities
        self.namespace = options.namespace
        self.view = ClusterView(
            api, options.namespace, options.selector, resync_seconds=options.resync_seconds, pod_problem=lasting_problem
        )
        self._lock = threading.Lock()
        self._final: OrderedDict[str, _Final] = OrderedDict()  # Job uid -> its final info (stable)
        # Jobs cancelled by this process, until the view shows their label (Job uids)
        self._cancelled: OrderedDict[str, None] = OrderedDict()
        self._logs: OrderedDict[tuple[str, int], tuple[float, bool, str]] = OrderedDict()
        self._reading: dict[tuple[str, int], threading.Lock] = {}
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None
        if start:
            self.start()

    def start(self) -> None:
        self.view.start()
        if self.options.sweep_after_seconds > 0:
            self._sweeper = threading.Thread(target=self._sweep_loop, name="k8s-sweep", daemon=True)
            self._sweeper.start()

    def close(self) -> None:
        self._stop.set()
        self.view.close()
        if self._sweeper is not None:
            self._sweeper.join(timeout=5)

    # -- schedule --------------------------------------------------------------------------
    def _check_workers(self, resources: Resources) -> None:
        why = self.capabilities.workers_problem(resources.number_of_workers)
        if why:
            raise InvalidJobSpec(why)

    def check(self, image: str, resources: Resources) -> None:
        # The image cannot be checked here: the kubelet of whichever node runs the pod
        # pulls it (or not); a problem shows in the status message.
        self._check_workers(resources)

    def _user(self, job: ContainerJob) -> tuple[int | None, int | None]:
        if job.run_as is not None:
            return job.run_as  # an op job: the owner of key-<jid>/, never root
        user = self.options.container_user
        return user.pick() if user is not None else (None, None)

    def schedule(self, job: ContainerJob) -> JobInfo:
        self._check_workers(job.resources)
        manifest = job_manifest(job, self.options, self._user(job))
        try:
            created = self.api.create_job(self.namespace, manifest)
        except ApiError as e:
            if e.status == 409:
                raise JobAlreadyExists(job.name) from None
            if e.status in (400, 422):
                raise InvalidJobSpec(f"rejected by Kubernetes: {e.message or e.reason}") from None
            if e.status == 404:
                raise BackendUnavailable(f"{BACKEND}: namespace {self.namespace!r} not found (JOB_NAMESPACE)") from None
            raise BackendUnavailable(f"{BACKEND} refused to create the Job ({e})") from None
        meta = created.get("metadata") or {}
        return JobInfo(
            name=job.name,
            image=job.image,
            cmd=shlex.join(job.command),
            status=JobStatus.NOT_STARTED,
            message="created",
            timestamp=str(meta.get("creationTimestamp") or ""),
        )

    # -- observe ---------------------------------------------------------------------------
    def _observe(self, name: str) -> _Observed:
        view = self.view
        if view.current():
            job = view.job(name)
            if job is not None:
                uid = str(_get(job, "metadata", "uid") or "")
                return _Observed(job, view.pods_of(uid), view.problem(uid))
        # Not in the view (unknown, just created or just deleted) or the view is stale:
        # ask the API server directly.
        try:
            job = slim_job(self.api.read_job(self.namespace, name))
        except ApiError as e:
            if e.status == 404:
                raise JobNotFound(name) from None
            raise BackendUnavailable(f"{BACKEND} refused to read the Job ({e})") from None
        return _Observed(job, self._direct_pods(job), None)

    def _direct_pods(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        uid = str(_get(job, "metadata", "uid") or "")
        try:
            pods = self.api.list_pods(self.namespace, f"controller-uid={uid}")
        except ApiError as e:
            raise BackendUnavailable(f"{BACKEND} refused to list pods ({e})") from None
        return [slim_pod(p) for p in pods if owner_uid(p) in (uid, None)]

    def _resolve(self, name: str) -> tuple[JobInfo, list[dict[str, Any]]]:
        seen = self._observe(name)
        uid = str(_get(seen.job, "metadata", "uid") or "")
        with self._lock:
            final = self._final.get(uid)
            if final is not None:
                self._final.move_to_end(uid)
                return final.info, final.pods
        info = job_info(seen.job, seen.pods, seen.remembered)
        if is_cancelled(seen.job) or uid in self._cancelled:
            return cancelled(info), seen.pods  # whatever its pods and conditions say
        if not info.status.is_terminal or not is_finished(seen.job):
            return info, seen.pods
        pods = seen.pods
        if pods_lag(seen.job, pods):  # the pod watch is behind the Job watch: read once
            pods = self._direct_pods(seen.job) or pods
            info = job_info(seen.job, pods, seen.remembered)
        with self._lock:
            self._final[uid] = _Final(info, pods)
            while len(self._final) > 4096:
                self._final.popitem(last=False)
        return info, pods

    def info(self, name: str) -> JobInfo:
        return self._resolve(name)[0]

    def state(self, name: str, log_tail: int) -> JobState:
        info, pods = self._resolve(name)
        return JobState(info, self._job_logs(pods, log_tail))

    def _job_logs(self, pods: list[dict[str, Any]], tail: int) -> str:
        if tail <= 0 or not pods:
            return ""
        pods = sorted(pods, key=_pod_order)
        per_pod = tail if len(pods) == 1 else max(1, tail // len(pods))
        chunks = []
        for pod in pods:
            text = self._pod_log(pod, per_pod) if container_ran(pod) else ""
            chunks.append((str(_get(pod, "metadata", "name")), text, pod_failure(pod)))
        return format_logs(chunks)

    def _cached_log(self, key: tuple[str, int], ended: bool) -> str | None:
        with self._lock:
            cached = self._logs.get(key)
            if cached is None:
                return None
            at, final, text = cached
            if final or (not ended and time.monotonic() - at < self.options.log_refresh_seconds):
                self._logs.move_to_end(key)
                return text
            return None

    def _pod_log(self, pod: dict[str, Any], tail: int) -> str:
        name = str(_get(pod, "metadata", "name") or "")
        key = (str(_get(pod, "metadata", "uid") or name), tail)
        ended = pod_ended(pod)
        text = self._cached_log(key, ended)
        if text is not None:
            return text
        with self._lock:
            reading = self._reading.get(key)
            stale = self._logs.get(key)
            if reading is not None and stale is not None and not ended:
                return stale[2]  # a running pod's tail is being re-read: the last one will do
            if reading is None:
                reading = self._reading[key] = threading.Lock()
        with reading:  # one read per pod at a time: the others wait for it and reuse it
            try:
                text = self._cached_log(key, ended)
                if text is not None:
                    return text
                containers = _get(pod, "spec", "containers") or [{}]
                try:
                    raw = self.api.pod_log(self.namespace, name, containers[0].get("name"), tail)
                except ApiError as e:  # the pod went away, or its container cannot give logs
                    return f"[logs of pod {name} unavailable: {e.message or e.reason}]\n"
                text = bytes(raw).decode("utf-8", errors="replace")
                with self._lock:
                    self._logs[key] = (time.monotonic(), ended, text)
                    while len(self._logs) > 256:
                        self._logs.popitem(last=False)
                return text
            finally:
                with self._lock:
                    if self._reading.get(key) is reading:
                        del self._reading[key]

    def remove(self, name: str) -> None:
        job = self.view.job(name) if self.view.current() else None
        if job is None:  # (whether it was cancelled: see _finish_cancelled_pods)
            with contextlib.suppress(ApiError, BackendUnavailable):
                job = self.api.read_job(self.namespace, name)
        uid = str(_get(job, "metadata", "uid") or "") or None
        try:
            self.api.delete_job(self.namespace, name)
        except ApiError as e:
            if e.status == 404:
                self.view.forget(name, uid)
                raise JobNotFound(name) from None
            raise BackendUnavailable(f"{BACKEND} refused to delete the Job ({e})") from None
        self.view.forget(name, uid)
        if uid:
            with self._lock:
                self._final.pop(uid, None)
                cancelled_here = uid in self._cancelled
            if cancelled_here or (job is not None and is_cancelled(job)):
                self._finish_cancelled_pods(uid)

    def _finish_cancelled_pods(self, uid: str) -> None:
        """The pods of a cancelled Job, stopped (or being stopped) at the deadline cancel
        gave them: kubelet 1.20 may never complete their graceful deletion (they stay
        Terminating for good), so they go at once — a cancelled job has nothing left to
        finish. Best effort: the Job itself is deleted already."""
        try:
            pods = self.api.list_pods(self.namespace, f"controller-uid={uid}")
            for pod in pods:
                with contextlib.suppress(ApiError):
                    self.api.delete_pod_now(self.namespace, str(_get(pod, "metadata", "name")))
        except (ApiError, BackendUnavailable) as e:
            log.warning("cancelled_pods_not_removed", extra={"job_uid": uid, "error": str(e)})

    # -- the operator's view: listing and cancel -----------------------------------------
    def list_jobs(self, instance: str) -> list[JobSummary]:
        """Two LISTs whatever the number of jobs (this instance's Jobs and their pods, by
        label selector), read from the API server: the view keeps neither the limits nor
        the pods' nodes, and a listing is right whether or not the view is current."""
        selector = f"{self.options.selector},{JOB_TYPE_LABEL},{INSTANCE_LABEL}={instance}"
        try:
            jobs, _ = self.api.list(JOBS, self.namespace, selector)
            pods, _ = self.api.list(PODS, self.namespace, selector) if jobs else ([], "")
        except ApiError as e:
            raise BackendUnavailable(f"{BACKEND} refused to list Jobs ({e})") from None
        by_job: dict[str, list[dict[str, Any]]] = {}
        for pod in pods:
            by_job.setdefault(owner_uid(pod) or "", []).append(pod)
        summaries = []
        for job in jobs:
            kind = job_kind(_get(job, "metadata", "labels"))
            if kind is None:
                continue
            uid = str(_get(job, "metadata", "uid") or "")
            own = by_job.get(uid, [])
            info = job_info(slim_job(job), [slim_pod(p) for p in own])
            if is_cancelled(job) or uid in self._cancelled:
                info = cancelled(info)
            summaries.append(
                JobSummary(
                    name=info.name,
                    kind=kind,
                    image=info.image,
                    status=info.status,
                    message=info.message,
                    created=iso_utc(_get(job, "metadata", "creationTimestamp")),
                    resources=job_resources(job),
                    node=pod_nodes(own),
                )
            )
        summaries.sort(key=lambda s: (s.created, s.name), reverse=True)
        return summaries

    def _read_for_cancel(self, name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        try:
            job = self.api.read_job(self.namespace, name)
        except ApiError as e:
            if e.status == 404:
                raise JobNotFound(name) from None
            raise BackendUnavailable(f"{BACKEND} refused to read the Job ({e})") from None
        return job, self._direct_pods(slim_job(job))

    def cancel(self, name: str) -> JobInfo:
        """Label the Job cancelled, then stop its pods without deleting them (Kubernetes
        1.20 has no Job suspend): a pod's own ``activeDeadlineSeconds`` is lowered to 1 s,
        so the kubelet kills its container and keeps the pod, its logs with it; the Job
        then fails (backoffLimit 0). A Job with no started pod gets the deadline instead
        (the controller deletes pods that never ran). Read from the API server, never
        the view: a Job that has just finished is left as it is."""
        for attempt in range(3):
            job, pods = self._read_for_cancel(name)
            slim = slim_job(job)
            info = job_info(slim, pods)
            if is_cancelled(job):
                break
            if info.status.is_terminal:
                return info  # finished on its own: as it is
            version = str(_get(job, "metadata", "resourceVersion") or "")
            patch = {"metadata": {"labels": {CANCELLED_LABEL: "true"}, "resourceVersion": version}}
            try:  # only if the Job did not change since it was read (it may have finished)
                job = self.api.patch_job(self.namespace, name, patch)
                break
            except ApiError as e:
                if e.status == 409 and attempt < 2:
                    continue
                if e.status == 404:
                    raise JobNotFound(name) from None
                raise BackendUnavailable(f"{BACKEND} refused to label the Job cancelled ({e})") from None
        uid = str(_get(job, "metadata", "uid") or "")
        with self._lock:
            self._cancelled[uid] = None
            while len(self._cancelled) > 4096:
                self._cancelled.popitem(last=False)
        if not is_finished(job):
            self._stop_pods(name, pods)
        return cancelled(info)

    def _stop_pods(self, name: str, pods: list[dict[str, Any]]) -> None:
        started = [p for p in pods if not pod_ended(p) and _get(p, "status", "startTime")]
        try:
            for pod in started:
                try:
                    self.api.patch_pod(self.namespace, str(_get(pod, "metadata", "name")), {"spec": {"activeDeadlineSeconds": 1}})
                except ApiError as e:
                    if e.status != 404:  # gone already: nothing to stop
                        raise
            if not started:
                self.api.patch_job(self.namespace, name, {"spec": {"activeDeadlineSeconds": 1}})
        except ApiError as e:
            if e.status != 404:
                raise BackendUnavailable(f"{BACKEND} refused to stop the cancelled Job's pods ({e})") from None

    def ping(self) -> None:
        try:
            self.api.version()
        except ApiError as e:
            raise BackendUnavailable(f"{BACKEND} error: {e}") from None

    # -- the sweep of finished Jobs nobody deleted --------------------------------------------
    def sweep(self, now: datetime.datetime | None = None) -> list[str]:
        """Delete this server's Jobs that finished more than ``sweep_after_seconds`` ago
        (only from a current view; returns their names)."""
        if self.options.sweep_after_seconds <= 0 or not self.view.current():
            return []
        now = now or datetime.datetime.now(datetime.UTC)
        swept = []
        for job in self.view.jobs():
            when = finished_at(job)
            if not when:
                continue
            try:
                ended = datetime.datetime.fromisoformat(when.replace("Z", "+00:00"))
            except ValueError:
                continue
            if (now - ended).total_seconds() > self.options.sweep_after_seconds:
                name = str(_get(job, "metadata", "name"))
                with contextlib.suppress(JobNotFound, BackendUnavailable):
                    self.remove(name)
                    swept.append(name)
        if swept:
            log.info("k8s_sweep", extra={"jobs": swept})
        return swept

    def _sweep_loop(self) -> None:
        interval = min(max(self.options.sweep_after_seconds / 4, 1.0), 600.0)
        while not self._stop.wait(interval):
            try:
                self.sweep()
            except Exception:  # never let the sweeper die
                log.exception("k8s_sweep_failed")


def check_storebase_claim(api: KubeApi, namespace: str, claim: str) -> str | None:
    """Why the storeBase PVC is unusable (None when fine, or when not allowed to look)."""
    try:
        pvc = api.read_pvc(namespace, claim)
    except ApiError as e:
        if e.status == 404:
            return f"PersistentVolumeClaim {claim!r} not found in namespace {namespace!r}"
        return None  # e.g. 403: this server may not read PVCs; the pods will tell
    phase = _get(pvc, "status", "phase")
    if phase == "Lost":
        return f"PersistentVolumeClaim {claim!r} is Lost"
    return None
