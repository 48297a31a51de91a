"""Kubernetes adapter without a cluster: the Job manifest, Job + pods → status (table),
logs, the shared watch-fed view (against an in-memory API with real list/watch
semantics), the API request bound, error mapping of the real client, and the settings."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import http.server
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from pfcon.adapters.compute.k8s_view import ClusterView, Gone
from pfcon.adapters.compute.kubernetes import (
    MANAGED_BY,
    ApiError,
    KubeApi,
    KubernetesCompute,
    KubernetesOptions,
    format_logs,
    job_info,
    job_manifest,
    job_status,
    labels_problem,
    lasting_problem,
    pod_failure,
    pod_problem,
)
from pfcon.adapters.compute.options import parse_container_user
from pfcon.config import ConfigError, load_settings
from pfcon.domain.errors import BackendUnavailable, InvalidJobSpec, JobAlreadyExists, JobNotFound
from pfcon.domain.model import ComputeCapabilities, ContainerJob, JobStatus, Mount, Resources
from pfcon import registry

T0 = "2026-05-01T12:00:00Z"
T1 = "2026-05-01T12:00:05Z"
T2 = "2026-05-01T12:01:00Z"


# -- the manifest ---------------------------------------------------------------------------------


def container_job(**kw: Any) -> ContainerJob:
    return ContainerJob(
        name=kw.pop("name", "chris-jid-1"),
        image=kw.pop("image", "local/pl-simpledsapp:1.0.3"),
        command=kw.pop("command", ("python3", "/usr/local/bin/simpledsapp.py", "/share/incoming", "/share/outgoing")),
        env=kw.pop("env", ("CHRIS_JID=chris-jid-1", "A=b=c", "HOME=/tmp")),
        resources=kw.pop("resources", Resources(3, 1500, 300, 2)),
        mounts=kw.pop("mounts", (
            Mount("key-chris-jid-1/incoming", "/share/incoming", True),
            Mount("key-chris-jid-1/outgoing", "/share/outgoing", False),
        )),
        labels=kw.pop("labels", {"org.chrisproject.job_type": "plugin"}),
    )  # fmt: skip


OPTIONS = KubernetesOptions(
    volume_name="storebase-pvc",
    namespace="chris",
    labels=(("team", "fnndsc"),),
    node_selector=(("disktype", "ssd"), ("gpu", "yes")),
    image_pull_secrets=("regcred", "other"),
    shm_size_mib=70,
)


def validate(manifest: dict[str, Any]) -> None:
    """The official client's (pydantic, extra fields forbidden) model of a Job accepts it."""
    from kubernetes.client import V1Job

    V1Job.from_dict(copy.deepcopy(manifest))
    from kubernetes.client import ApiClient

    # and it serializes back to the same JSON (no field silently dropped)
    assert ApiClient().sanitize_for_serialization(V1Job.from_dict(copy.deepcopy(manifest))) == manifest


def test_manifest_every_field() -> None:
    m = job_manifest(container_job(), OPTIONS, (1001, 2002))
    validate(m)
    assert m["apiVersion"] == "batch/v1" and m["kind"] == "Job"
    assert m["metadata"]["name"] == "chris-jid-1"
    labels = {"team": "fnndsc", "org.chrisproject.job_type": "plugin", MANAGED_BY[0]: MANAGED_BY[1]}
    assert m["metadata"]["labels"] == labels
    spec = m["spec"]
    assert spec["parallelism"] == spec["completions"] == 3
    assert spec["backoffLimit"] == 0
    assert "ttlSecondsAfterFinished" not in spec  # not on 1.20; the sweep or DELETE removes Jobs
    assert spec["activeDeadlineSeconds"] == 7 * 24 * 3600
    template = spec["template"]
    assert template["metadata"]["labels"] == labels
    pod = template["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["nodeSelector"] == {"disktype": "ssd", "gpu": "yes"}
    assert pod["imagePullSecrets"] == [{"name": "regcred"}, {"name": "other"}]
    assert "hostNetwork" not in pod
    assert pod["automountServiceAccountToken"] is False
    assert pod["volumes"] == [
        {"name": "storebase", "persistentVolumeClaim": {"claimName": "storebase-pvc"}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "70Mi"}},
    ]
    [c] = pod["containers"]
    assert c["name"] == "chris-jid-1"
    assert c["image"] == "local/pl-simpledsapp:1.0.3"
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert c["command"] == ["python3", "/usr/local/bin/simpledsapp.py", "/share/incoming", "/share/outgoing"]
    assert c["env"] == [
        {"name": "CHRIS_JID", "value": "chris-jid-1"}, {"name": "A", "value": "b=c"}, {"name": "HOME", "value": "/tmp"},
    ]  # fmt: skip
    quantities = {"cpu": "1500m", "memory": "300Mi", "nvidia.com/gpu": "2"}
    assert c["resources"] == {"limits": quantities, "requests": quantities}
    assert all(isinstance(v, str) for v in quantities.values())
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsUser": 1001, "runAsGroup": 2002,
    }  # fmt: skip
    assert c["volumeMounts"] == [
        {"name": "storebase", "mountPath": "/share/incoming", "readOnly": True, "subPath": "key-chris-jid-1/incoming"},
        {"name": "storebase", "mountPath": "/share/outgoing", "readOnly": False, "subPath": "key-chris-jid-1/outgoing"},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]


def test_manifest_minimal_options() -> None:
    m = job_manifest(container_job(resources=Resources(1, 500, 64, 0)), KubernetesOptions(volume_name="pvc"), (None, None))
    validate(m)
    pod = m["spec"]["template"]["spec"]
    [c] = pod["containers"]
    assert c["resources"] == {"limits": {"cpu": "500m", "memory": "64Mi"}, "requests": {"cpu": "500m", "memory": "64Mi"}}
    assert c["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    assert "nodeSelector" not in pod and "imagePullSecrets" not in pod
    assert [v["name"] for v in pod["volumes"]] == ["storebase"]


def test_manifest_ignore_limits_keeps_gpus_and_host_network_is_an_option() -> None:
    options = KubernetesOptions(volume_name="pvc", ignore_limits=True, host_network=True)
    m = job_manifest(container_job(resources=Resources(1, 500, 64, 1)), options, (None, 5))
    validate(m)
    pod = m["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    [c] = pod["containers"]
    assert c["resources"] == {"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}}
    assert c["securityContext"]["runAsGroup"] == 5 and "runAsUser" not in c["securityContext"]
    m = job_manifest(container_job(resources=Resources(1, 500, 64, 0)), options, (None, None))
    assert "resources" not in m["spec"]["template"]["spec"]["containers"][0]


def test_manifest_pvc_root_only_read_only() -> None:
    mounts = (Mount("", "/share/incoming", True), Mount("home/cube/feeds/1/out", "/share/outgoing", False))
    m = job_manifest(container_job(mounts=mounts), OPTIONS, (None, None))
    validate(m)
    vm = m["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert vm[0] == {"name": "storebase", "mountPath": "/share/incoming", "readOnly": True}  # the PVC root
    assert vm[1]["subPath"] == "home/cube/feeds/1/out"
    for root in ("", "/"):
        with pytest.raises(InvalidJobSpec, match="root of storeBase"):
            job_manifest(container_job(mounts=(Mount(root, "/share/outgoing", False),)), OPTIONS, (None, None))
    with pytest.raises(InvalidJobSpec):
        job_manifest(container_job(mounts=(Mount("a/../..", "/share/outgoing", False),)), OPTIONS, (None, None))


def test_manifest_without_mounts_has_no_storebase_volume() -> None:
    m = job_manifest(container_job(mounts=()), KubernetesOptions(), (None, None))
    validate(m)
    assert m["spec"]["template"]["spec"]["volumes"] == []


def test_the_adapter_labels_win_and_the_selector_matches_them() -> None:
    options = KubernetesOptions(volume_name="pvc", labels=(("team", "x"), (MANAGED_BY[0], "someone-else")))
    m = job_manifest(container_job(), options, (None, None))
    assert m["metadata"]["labels"][MANAGED_BY[0]] == MANAGED_BY[1]
    assert options.selector == f"team=x,{MANAGED_BY[0]}={MANAGED_BY[1]}"


@pytest.mark.parametrize(("pairs", "ok"), [
    ((("org.chrisproject.job_type", "plugin"), ("app.kubernetes.io/managed-by", "pfcon"), ("a", "")), True),
    ((("team", "fnndsc-1.2_x"),), True),
    ((("bad key", "x"),), False),
    ((("k", "v v"),), False),
    ((("k", "-v"),), False),
    ((("Example.com/k", "v"),), False),
    ((("k" * 64, "v"),), False),
    ((("k", "v" * 64),), False),
])  # fmt: skip
def test_labels_problem(pairs: tuple[tuple[str, str], ...], ok: bool) -> None:
    assert (labels_problem(pairs) is None) is ok


# -- status: a table of Jobs and pods -----------------------------------------------------------------

JOB_UID = "11111111-2222-3333-4444-555555555555"


def job(status: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "chris-jid-1", "uid": JOB_UID, "creationTimestamp": T0, **meta},
        "spec": {
            "parallelism": 1, "completions": 1,
            "template": {"spec": {"containers": [{"name": "chris-jid-1", "image": "local/x:1", "command": ["sh", "-c", "echo hi"]}]}},
        },
        "status": status or {},
    }  # fmt: skip


def condition(kind: str, reason: str = "", message: str = "", when: str = T2) -> dict[str, Any]:
    return {"type": kind, "status": "True", "reason": reason, "message": message, "lastTransitionTime": when}


def failed_job(reason: str = "BackoffLimitExceeded", message: str = "Job has reached the specified backoff limit") -> dict[str, Any]:
    return job({"conditions": [condition("Failed", reason, message)], "failed": 1, "startTime": T1})


def pod(phase: str = "Pending", name: str = "chris-jid-1-abcde", **kw: Any) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    state: dict[str, Any] | None = None
    if "waiting" in kw:
        reason, message = kw.pop("waiting")
        state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
    if kw.pop("running", False):
        state = {"running": {"startedAt": T1}}
    if "terminated" in kw:
        reason, code = kw.pop("terminated")
        state = {"terminated": {"reason": reason, "exitCode": code, "startedAt": T1, "finishedAt": T2, "containerID": "docker://x"}}
    if state is not None:
        status["containerStatuses"] = [{"name": "chris-jid-1", "state": state, "restartCount": 0}]
    if "unschedulable" in kw:
        status["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": kw.pop("unschedulable")}]
    elif kw.pop("scheduled", False):
        status["conditions"] = [{"type": "PodScheduled", "status": "True"}]
    if "reason" in kw:
        status["reason"], status["message"] = kw.pop("reason")
    assert not kw, kw
    return {
        "metadata": {
            "name": name, "uid": f"pod-{name}", "creationTimestamp": T1,
            "labels": {"controller-uid": JOB_UID, "job-name": "chris-jid-1"},
            "ownerReferences": [{"kind": "Job", "name": "chris-jid-1", "uid": JOB_UID}],
        },
        "spec": {"containers": [{"name": "chris-jid-1"}]},
        "status": status,
    }  # fmt: skip


NS, S, OK, ERR, UNDEF = (JobStatus.NOT_STARTED, JobStatus.STARTED, JobStatus.FINISHED_SUCCESSFULLY,
                         JobStatus.FINISHED_WITH_ERROR, JobStatus.UNDEFINED)  # fmt: skip
PULL_MESSAGE = 'Back-off pulling image "local/does-not-exist:404"'

STATUS_TABLE: list[tuple[str, dict[str, Any], list[dict[str, Any]], str | None, JobStatus, str]] = [
    ("just created, no pod yet (pfcon: started)", job(), [], None, NS, "created"),
    ("pod not scheduled yet", job({"active": 1, "startTime": T1}), [pod()], None, NS, "Pending: waiting for the scheduler"),
    ("unschedulable", job({"active": 1}), [pod(unschedulable="0/1 nodes are available: 1 Insufficient cpu.")], None,
     NS, "Unschedulable: 0/1 nodes are available: 1 Insufficient cpu."),
    ("scheduled, no container status yet", job({"active": 1}), [pod(scheduled=True)], None, NS, "ContainerCreating"),
    ("container creating", job({"active": 1}), [pod(waiting=("ContainerCreating", None))], None, NS, "ContainerCreating"),
    ("image pull error", job({"active": 1}), [pod(waiting=("ErrImagePull", "rpc error: pull access denied"))], None,
     NS, "ErrImagePull: rpc error: pull access denied"),
    ("image pull back-off", job({"active": 1}), [pod(waiting=("ImagePullBackOff", PULL_MESSAGE))], None,
     NS, f"ImagePullBackOff: {PULL_MESSAGE}"),
    ("never pull", job({"active": 1}), [pod(waiting=("ErrImageNeverPull", "Container image \"x\" is not present with pull policy of Never"))],
     None, NS, 'ErrImageNeverPull: Container image "x" is not present with pull policy of Never'),
    ("invalid image name", job({"active": 1}), [pod(waiting=("InvalidImageName", "couldn't parse image reference"))], None,
     NS, "InvalidImageName: couldn't parse image reference"),
    ("running", job({"active": 1, "startTime": T1}), [pod("Running", running=True)], None, S, "running"),
    ("one of two workers running", job({"active": 2}), [pod("Running", running=True), pod(name="p2", waiting=("ContainerCreating", None))],
     None, S, "running"),
    ("one of two succeeded, no Complete yet", job({"active": 1, "succeeded": 1}),
     [pod("Succeeded", terminated=("Completed", 0)), pod(name="p2", scheduled=True)], None, S, "running"),
    ("a pod failed, the Job not marked yet", job({"active": 0}), [pod("Failed", terminated=("Error", 1))], None,
     S, "finishing: Error (exit code 1)"),
    ("a vanished pod of a live Job is no success", job({"active": 1, "startTime": T1}), [], None,
     NS, "no pod: waiting for the Job controller to create one"),
    ("complete", job({"conditions": [condition("Complete")], "succeeded": 1, "completionTime": T2}),
     [pod("Succeeded", terminated=("Completed", 0))], None, OK, "finished"),
    ("complete, pods already gone", job({"conditions": [condition("Complete")], "succeeded": 1, "completionTime": T2}), [],
     None, OK, "finished"),
    ("exit code", failed_job(), [pod("Failed", terminated=("Error", 3))], None, ERR, "Error (exit code 3)"),
    ("out of memory", failed_job(), [pod("Failed", terminated=("OOMKilled", 137))], None, ERR, "OOMKilled (exit code 137)"),
    ("evicted", failed_job(), [pod("Failed", reason=("Evicted", "The node was low on resource: memory."))], None,
     ERR, "Evicted: The node was low on resource: memory."),
    ("deadline while pulling, pod deleted, problem remembered",
     failed_job("DeadlineExceeded", "Job was active longer than specified deadline"), [], f"ImagePullBackOff: {PULL_MESSAGE}",
     ERR, f"DeadlineExceeded: Job was active longer than specified deadline; ImagePullBackOff: {PULL_MESSAGE}"),
    ("deadline while pulling, pod still there",
     failed_job("DeadlineExceeded", "Job was active longer than specified deadline"), [pod(waiting=("ErrImagePull", "nope"))], None,
     ERR, "DeadlineExceeded: Job was active longer than specified deadline; ErrImagePull: nope"),
    ("deadline while running", failed_job("DeadlineExceeded", "Job was active longer than specified deadline"),
     [pod("Failed", reason=("DeadlineExceeded", "Pod was active on the node longer than the specified deadline"))], None,
     ERR, "DeadlineExceeded: Job was active longer than specified deadline; "
          "DeadlineExceeded: Pod was active on the node longer than the specified deadline"),
    ("failed, no pod left, nothing remembered", failed_job(), [], None,
     ERR, "BackoffLimitExceeded: Job has reached the specified backoff limit"),
    ("two workers failing alike: said once", failed_job(),
     [pod("Failed", terminated=("Error", 2)), pod("Failed", name="p2", terminated=("Error", 2))], None, ERR, "Error (exit code 2)"),
    ("being deleted", job({"active": 1}, deletionTimestamp=T2), [pod("Running", running=True)], None, UNDEF, "the Job is being deleted"),
]  # fmt: skip


@pytest.mark.parametrize(("j", "pods", "remembered", "status", "message"), [c[1:] for c in STATUS_TABLE],
                         ids=[c[0] for c in STATUS_TABLE])  # fmt: skip
def test_status_table(j: dict[str, Any], pods: list[dict[str, Any]], remembered: str | None, status: JobStatus, message: str) -> None:
    got_status, got_message, timestamp = job_status(j, pods, remembered)
    assert (got_status, got_message) == (status, message)
    if status is OK:
        assert timestamp == T2
    if status is ERR:
        assert timestamp == T2  # the Failed condition's time: stable


def test_job_info_fields() -> None:
    info = job_info(job({"conditions": [condition("Complete")], "completionTime": T2}), [])
    assert (info.name, info.image, info.cmd, info.timestamp) == ("chris-jid-1", "local/x:1", "sh -c 'echo hi'", T2)


def test_pod_helpers() -> None:
    assert pod_problem(pod("Running", running=True)) is None
    assert lasting_problem(pod(waiting=("ContainerCreating", None))) is None
    assert lasting_problem(pod(waiting=("ImagePullBackOff", "x"))) == "ImagePullBackOff: x"
    assert lasting_problem(pod(unschedulable="0/1 nodes")) == "Unschedulable: 0/1 nodes"
    assert pod_failure(pod("Succeeded", terminated=("Completed", 0))) is None
    assert pod_failure(pod("Running", running=True)) is None


def test_format_logs() -> None:
    assert format_logs([]) == ""
    assert format_logs([("p1", "hello\nworld\n", None)]) == "hello\nworld\n"
    assert format_logs([("p1", "partial", "OOMKilled (exit code 137)")]) == "partial\n[OOMKilled (exit code 137)]\n"
    both = format_logs([("p1", "worker\n", None), ("p2", "worker\n", "Error (exit code 1)")])
    assert both == "==> pod p1 <==\nworker\n==> pod p2 <==\nworker\n[Error (exit code 1)]\n"
    assert both.split().count("worker") == 2


# -- an in-memory API server: objects, resourceVersions, list and watch ------------------------------------


def _matches(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


class FakeStream:
    def __init__(self, api: FakeKube, kind: str, version: int, timeout: float) -> None:
        self.api, self.kind, self.version, self.deadline = api, kind, version, time.monotonic() + timeout
        self.closed = False

    def __iter__(self) -> Iterator[tuple[str, dict[str, Any]]]:
        api = self.api
        while True:
            with api.cond:
                while True:
                    if self.closed or time.monotonic() > self.deadline:
                        return
                    if api.down:
                        raise ConnectionResetError("connection reset by peer")
                    pending = [e for e in api.events if e[0] > self.version and e[1] == self.kind]
                    if pending:
                        break
                    api.cond.wait(0.05)
            for version, _, event_type, obj in pending:
                self.version = version
                yield event_type, copy.deepcopy(obj)

    def close(self) -> None:
        self.closed = True


class FakeKube:
    """Just enough of an API server: Jobs and pods with resourceVersions, list and watch
    (410 for an expired version), logs, and an outage switch. Counts like KubeApi."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.rv = 0
        self.objects: dict[str, dict[str, dict[str, Any]]] = {"jobs": {}, "pods": {}}
        self.events: list[tuple[int, str, str, dict[str, Any]]] = []
        self.logs: dict[str, str] = {}
        self.requests: Counter[str] = Counter()
        self.down = False
        self.expired_before = 0
        self.silent_deletes = False  # a DELETED event that never arrives
        self.created: list[dict[str, Any]] = []
        self.log_delay = 0.0

    # KubeApi's surface
    def counts(self) -> dict[str, int]:
        return dict(self.requests)

    def total(self) -> int:
        return sum(self.requests.values())

    def _enter(self, verb: str) -> None:
        self.requests[verb] += 1
        if self.down:
            raise BackendUnavailable("Kubernetes API server unavailable at https://fake: connection refused")

    def _emit(self, kind: str, event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
        with self.cond:
            self.rv += 1
            obj = copy.deepcopy(obj)
            obj["metadata"]["resourceVersion"] = str(self.rv)
            name = obj["metadata"]["name"]
            if event_type == "DELETED":
                self.objects[kind].pop(name, None)
            else:
                self.objects[kind][name] = obj
            self.events.append((self.rv, kind, event_type, obj))
            self.cond.notify_all()
        return obj

    def create_job(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self._enter("create job")
        name = body["metadata"]["name"]
        if name in self.objects["jobs"]:
            raise ApiError(409, "Conflict", f'jobs.batch "{name}" already exists')
        if name == "invalid":
            raise ApiError(422, "Unprocessable Entity", 'Job.batch "invalid" is invalid: spec.template...')
        self.created.append(body)
        job = copy.deepcopy(body)
        job["metadata"].update(uid=str(uuid.uuid4()), creationTimestamp=T0)
        job["status"] = {}
        return self._emit("jobs", "ADDED", job)

    def read_job(self, namespace: str, name: str) -> dict[str, Any]:
        self._enter("get job")
        if name not in self.objects["jobs"]:
            raise ApiError(404, "Not Found", f'jobs.batch "{name}" not found')
        return copy.deepcopy(self.objects["jobs"][name])

    def delete_job(self, namespace: str, name: str) -> None:
        self._enter("delete job")
        job = self.objects["jobs"].get(name)
        if job is None:
            raise ApiError(404, "Not Found", f'jobs.batch "{name}" not found')
        if self.silent_deletes:
            self.objects["jobs"].pop(name)
        else:
            self._emit("jobs", "DELETED", job)
        for p in [p for p in self.objects["pods"].values() if p["metadata"]["labels"]["controller-uid"] == job["metadata"]["uid"]]:
            self._emit("pods", "DELETED", p)

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        self._enter("list pods")
        return [copy.deepcopy(p) for p in self.objects["pods"].values() if _matches(p["metadata"]["labels"], selector)]

    def pod_log(self, namespace: str, pod: str, container: str | None, tail: int) -> bytes:
        self._enter("get pod log")
        time.sleep(self.log_delay)
        if pod not in self.objects["pods"]:
            raise ApiError(404, "Not Found", f'pods "{pod}" not found')
        lines = self.logs.get(pod, "").splitlines(keepends=True)
        return "".join(lines[-tail:]).encode()

    def version(self) -> dict[str, Any]:
        self._enter("get version")
        return {"gitVersion": "v1.20.2"}

    def list(self, kind: str, namespace: str, selector: str) -> tuple[list[dict[str, Any]], str]:
        self._enter(f"list {kind}")
        with self.cond:
            items = [copy.deepcopy(o) for o in self.objects[kind].values() if _matches(o["metadata"].get("labels") or {}, selector)]
            return items, str(self.rv)

    def watch(self, kind: str, namespace: str, selector: str, resource_version: str, timeout: int) -> FakeStream:
        self._enter(f"watch {kind}")
        if int(resource_version or 0) < self.expired_before:
            raise Gone()
        return FakeStream(self, kind, int(resource_version or 0), timeout)

    # what the cluster does
    def job_named(self, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.objects["jobs"][name])

    def set_job_status(self, name: str, **status: Any) -> None:
        job = self.job_named(name)
        job["status"] = status
        self._emit("jobs", "MODIFIED", job)

    def put_pod(self, job_name: str, pod_name: str, phase: str, logs: str = "", **kw: Any) -> None:
        j = self.job_named(job_name)
        p = pod(phase, name=pod_name, **kw)
        p["metadata"]["labels"] = {**j["spec"]["template"]["metadata"]["labels"], "controller-uid": j["metadata"]["uid"], "job-name": job_name}
        p["metadata"]["ownerReferences"] = [{"kind": "Job", "name": job_name, "uid": j["metadata"]["uid"]}]
        p["spec"]["containers"] = [{"name": job_name}]
        self.logs[pod_name] = logs
        self._emit("pods", "MODIFIED" if pod_name in self.objects["pods"] else "ADDED", p)

    def run(self, name: str, logs: str = "", workers: int = 1) -> None:
        for i in range(workers):
            self.put_pod(name, f"{name}-p{i}", "Running", logs, running=True)
        self.set_job_status(name, active=workers, startTime=T1)

    def succeed(self, name: str, logs: str = "", workers: int = 1) -> None:
        for i in range(workers):
            self.put_pod(name, f"{name}-p{i}", "Succeeded", logs, terminated=("Completed", 0))
        self.set_job_status(name, succeeded=workers, completionTime=T2, conditions=[condition("Complete")])

    def fail(self, name: str, reason: str = "Error", code: int = 1, logs: str = "") -> None:
        self.put_pod(name, f"{name}-p0", "Failed", logs, terminated=(reason, code))
        self.set_job_status(name, failed=1, conditions=[condition("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")])


@pytest.fixture
def fake() -> FakeKube:
    return FakeKube()


@pytest.fixture
def compute(fake: FakeKube) -> Iterator[KubernetesCompute]:
    caps = registry.scheduler("kubernetes").capabilities  # type: ignore[union-attr]
    c = KubernetesCompute(fake, KubernetesOptions(volume_name="pvc", capabilities=caps, log_refresh_seconds=60))
    assert c.view.wait_current(5)
    yield c
    c.close()


def small(name: str, workers: int = 1, image: str = "local/x:1") -> ContainerJob:
    return ContainerJob(name, image, ("sh", "-c", "echo hi"), (), Resources(workers, 100, 32, 0), (), {"org.chrisproject.job_type": "plugin"})


def seen(compute: KubernetesCompute, name: str) -> None:
    assert compute.view.wait_for(lambda: compute.view.job(name) is not None, 5)


def settled(compute: KubernetesCompute, name: str, predicate: Any) -> None:
    assert compute.view.wait_for(lambda: predicate(compute.view.job(name)), 5)


# -- the adapter on the fake API ------------------------------------------------------------------------


def test_an_op_job_runs_as_its_own_user(fake: FakeKube) -> None:
    c = KubernetesCompute(fake, KubernetesOptions(container_user=parse_container_user("1000:1000")), start=False)
    c.schedule(small("plugin"))
    c.schedule(dataclasses.replace(small("op"), run_as=(10001, 10001)))
    users = [b["spec"]["template"]["spec"]["containers"][0]["securityContext"] for b in fake.created]
    assert [(u["runAsUser"], u["runAsGroup"]) for u in users] == [(1000, 1000), (10001, 10001)]


def test_plugin_pods_get_the_op_jobs_group_as_a_supplemental_group(fake: FakeKube) -> None:
    # A plugin writes into key-<jid>/outgoing, the op jobs' (group-writable, setgid): its pod
    # gets their group, whatever its user (the image's root, without capabilities, here).
    c = KubernetesCompute(fake, KubernetesOptions(volume_name="pvc", supplemental_groups=(10001,)), start=False)
    c.schedule(small("plugin"))
    c.schedule(dataclasses.replace(small("op"), run_as=(10001, 10001)))
    plugin, op = (b["spec"]["template"]["spec"] for b in fake.created)
    assert plugin["securityContext"] == {"supplementalGroups": [10001]}
    assert "runAsUser" not in plugin["containers"][0]["securityContext"]
    assert "securityContext" not in op  # an op job is the owner: no group added
    assert op["containers"][0]["securityContext"]["runAsGroup"] == 10001
    # merged with CONTAINER_USER's group: never twice, and validated by the official model
    options = KubernetesOptions(volume_name="pvc", supplemental_groups=(10001, 10001, 3000),
                                container_user=parse_container_user("2000-2999:3000"))  # fmt: skip
    m = job_manifest(container_job(), options, options.container_user.pick())  # type: ignore[union-attr]
    validate(m)
    pod = m["spec"]["template"]["spec"]
    assert pod["securityContext"] == {"supplementalGroups": [10001]}
    assert pod["containers"][0]["securityContext"]["runAsGroup"] == 3000
    assert "securityContext" not in job_manifest(container_job(), KubernetesOptions(volume_name="pvc"), (None, None))[
        "spec"]["template"]["spec"]  # fmt: skip


def test_schedule_and_errors(compute: KubernetesCompute, fake: FakeKube) -> None:
    info = compute.schedule(small("a"))
    assert (info.status, info.message) == (JobStatus.NOT_STARTED, "created")
    assert fake.created[0]["spec"]["template"]["metadata"]["labels"][MANAGED_BY[0]] == MANAGED_BY[1]
    with pytest.raises(JobAlreadyExists):
        compute.schedule(small("a"))
    with pytest.raises(InvalidJobSpec, match="rejected by Kubernetes"):
        compute.schedule(small("invalid"))
    with pytest.raises(InvalidJobSpec, match="number_of_workers"):
        compute.schedule(small("b", workers=65))
    compute.check("local/anything:1", Resources(64, 100, 32, 0))  # the image is not checked here


def test_lifecycle_through_the_view(compute: KubernetesCompute, fake: FakeKube) -> None:
    compute.schedule(small("a"))
    seen(compute, "a")
    before = fake.total()
    assert compute.info("a").status is JobStatus.NOT_STARTED
    fake.put_pod("a", "a-p0", "Pending", waiting=("ImagePullBackOff", PULL_MESSAGE))
    settled(compute, "a", lambda j: True)
    assert compute.view.wait_for(lambda: "ImagePullBackOff" in compute.info("a").message, 5)
    fake.run("a", "line 1\n")
    assert compute.view.wait_for(lambda: compute.info("a").status is JobStatus.STARTED, 5)
    assert fake.total() == before  # every status so far from the view
    fake.succeed("a", "line 1\nline 2\n")
    assert compute.view.wait_for(lambda: compute.info("a").status is JobStatus.FINISHED_SUCCESSFULLY, 5)
    state = compute.state("a", 10)
    assert state.logs == "line 1\nline 2\n"
    assert state.info.timestamp == T2
    logs_read = fake.requests["get pod log"]
    for _ in range(5):
        assert compute.state("a", 10) == state
    assert fake.requests["get pod log"] == logs_read  # a finished pod's logs are read once
    compute.remove("a")
    with pytest.raises(JobNotFound):
        compute.info("a")
    with pytest.raises(JobNotFound):
        compute.remove("a")


def test_unknown_job_costs_one_direct_read(compute: KubernetesCompute, fake: FakeKube) -> None:
    before = fake.total()
    with pytest.raises(JobNotFound):
        compute.state("nope", 10)
    assert fake.total() - before == 1


def test_a_job_not_yet_in_the_view_is_read_directly(compute: KubernetesCompute, fake: FakeKube) -> None:
    compute.view.close()  # the view will not see anything new
    compute.schedule(small("a"))
    before = fake.counts()
    assert compute.info("a").status is JobStatus.NOT_STARTED
    after = fake.counts()
    assert {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)} == {"get job": 1, "list pods": 1}


def test_removed_job_is_gone_even_before_its_deleted_event(compute: KubernetesCompute, fake: FakeKube) -> None:
    compute.schedule(small("a"))
    seen(compute, "a")
    fake.silent_deletes = True
    compute.remove("a")
    with pytest.raises(JobNotFound):
        compute.info("a")


def test_failed_job_is_stable_and_names_the_reason(compute: KubernetesCompute, fake: FakeKube) -> None:
    compute.schedule(small("a"))
    seen(compute, "a")
    fake.fail("a", "OOMKilled", 137, logs="allocating\n")
    assert compute.view.wait_for(lambda: compute.info("a").status is JobStatus.FINISHED_WITH_ERROR, 5)
    first = compute.state("a", 100)
    assert first.info.message == "OOMKilled (exit code 137)"
    assert first.logs == "allocating\n[OOMKilled (exit code 137)]\n"
    for _ in range(3):
        assert compute.info("a") == first.info


def test_a_lagging_pod_watch_is_caught_up_once(compute: KubernetesCompute, fake: FakeKube) -> None:
    compute.schedule(small("a"))
    seen(compute, "a")
    # the Job watch says Failed; the pod watch has not delivered the failed pod yet
    job = fake.job_named("a")
    p = pod("Failed", name="a-p0", terminated=("Error", 3))
    p["metadata"]["labels"]["controller-uid"] = job["metadata"]["uid"]
    p["metadata"]["ownerReferences"][0]["uid"] = job["metadata"]["uid"]
    fake.objects["pods"]["a-p0"] = p  # present in the API, no event yet
    fake.set_job_status("a", failed=1, conditions=[condition("Failed", "BackoffLimitExceeded", "limit")])
    settled(compute, "a", lambda j: bool(j["status"].get("conditions")))
    before = fake.requests["list pods"]
    info = compute.info("a")
    assert (info.status, info.message) == (JobStatus.FINISHED_WITH_ERROR, "Error (exit code 3)")
    assert fake.requests["list pods"] == before + 1
    for _ in range(3):
        assert compute.info("a") == info
    assert fake.requests["list pods"] == before + 1  # final: memoized


def test_multi_worker_logs_cover_every_pod(compute: KubernetesCompute, fake: FakeKube) -> None:
    compute.schedule(small("a", workers=3))
    seen(compute, "a")
    fake.succeed("a", "worker\n", workers=3)
    assert compute.view.wait_for(lambda: compute.info("a").status is JobStatus.FINISHED_SUCCESSFULLY, 5)
    logs = compute.state("a", 99).logs
    assert logs.split().count("worker") == 3
    assert [line for line in logs.splitlines() if line.startswith("==>")] == [f"==> pod a-p{i} <==" for i in range(3)]


def test_running_logs_are_reread_after_the_refresh_interval(fake: FakeKube) -> None:
    c = KubernetesCompute(fake, KubernetesOptions(log_refresh_seconds=0.2, capabilities=ComputeCapabilities(max_workers=4)))
    try:
        c.schedule(small("a"))
        seen(c, "a")
        fake.run("a", "one\n")
        assert c.view.wait_for(lambda: c.info("a").status is JobStatus.STARTED, 5)
        assert c.state("a", 10).logs == "one\n"
        fake.logs["a-p0"] = "one\ntwo\n"
        assert c.state("a", 10).logs == "one\n"  # within the interval: the same read
        time.sleep(0.25)
        assert c.state("a", 10).logs == "one\ntwo\n"
        assert fake.requests["get pod log"] == 2
    finally:
        c.close()


def test_concurrent_polls_of_a_running_pod_share_one_log_read(compute: KubernetesCompute, fake: FakeKube) -> None:
    compute.schedule(small("a"))
    seen(compute, "a")
    fake.run("a", "working\n")
    assert compute.view.wait_for(lambda: compute.info("a").status is JobStatus.STARTED, 5)
    fake.log_delay = 0.2
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(compute.state("a", 10).logs)) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["working\n"] * 10
    assert fake.requests["get pod log"] == 1


def test_request_bound_100_jobs_polled_by_many_clients(compute: KubernetesCompute, fake: FakeKube) -> None:
    names = [f"j{i}" for i in range(100)]
    for name in names:
        compute.schedule(small(name))
        fake.run(name, "working\n")
    assert compute.view.wait_for(lambda: all(compute.view.job(n) and compute.view.job(n)["status"].get("active") for n in names), 10)
    assert compute.view.wait_for(lambda: all(compute.view.pods_of(compute.view.job(n)["metadata"]["uid"]) for n in names), 10)
    before = fake.counts()
    polls = 0
    threads = [threading.Thread(target=lambda: [compute.state(n, 100) for n in names]) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    polls = 10 * len(names)
    after = fake.counts()
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}
    # status from the view: no list, watch or get; logs once per running pod per refresh interval
    assert set(delta) <= {"get pod log"}, delta
    assert delta.get("get pod log", 0) <= len(names), delta
    assert sum(delta.values()) / polls <= 0.1


def test_outage_and_recovery_without_restart(fake: FakeKube) -> None:
    c = KubernetesCompute(fake, KubernetesOptions(log_refresh_seconds=60))
    c.view.backoff_max = 0.2
    try:
        assert c.view.wait_current(5)
        c.schedule(small("a"))
        seen(c, "a")
        fake.down = True
        assert c.view.wait_for(lambda: not c.view.current(), 5)
        for call in (lambda: c.info("a"), lambda: c.schedule(small("b")), lambda: c.remove("a"), c.ping):
            with pytest.raises(BackendUnavailable, match="Kubernetes"):
                call()
        fake.down = False
        assert c.view.wait_current(5)
        assert c.info("a").status is JobStatus.NOT_STARTED
        c.ping()
    finally:
        c.close()


def test_an_expired_watch_is_listed_again(compute: KubernetesCompute, fake: FakeKube) -> None:
    compute.schedule(small("a"))
    seen(compute, "a")
    lists = compute.view.relists["jobs"]
    fake.expired_before = fake.rv + 1000  # every resourceVersion so far is too old
    for stream in list(compute.view._streams.values()):
        stream.close()  # the watch ends (as after its timeout) and is re-opened: 410
    assert compute.view.wait_for(lambda: compute.view.relists["jobs"] > lists, 5)
    fake.expired_before = 0
    compute.schedule(small("b"))
    seen(compute, "b")


def test_view_ignores_late_events_of_a_forgotten_job(fake: FakeKube) -> None:
    view = ClusterView(fake, "default", KubernetesOptions().selector)
    view.start()
    try:
        assert view.wait_current(5)
        body = job_manifest(small("a"), KubernetesOptions(), (None, None))
        created = fake.create_job("default", body)
        assert view.wait_for(lambda: view.job("a") is not None, 5)
        view.forget("a", created["metadata"]["uid"])
        fake.set_job_status("a", active=1)  # a late MODIFIED event
        time.sleep(0.2)
        assert view.job("a") is None
    finally:
        view.close()


def test_sweep_deletes_only_jobs_finished_long_ago(fake: FakeKube) -> None:
    c = KubernetesCompute(fake, KubernetesOptions(sweep_after_seconds=3600), start=False)
    c.view.start()
    try:
        assert c.view.wait_current(5)
        for name in ("old", "recent", "running"):
            c.schedule(small(name))
            seen(c, name)
        fake.set_job_status("old", succeeded=1, completionTime="2026-05-01T10:00:00Z", conditions=[condition("Complete")])
        fake.set_job_status("recent", succeeded=1, completionTime="2026-05-01T11:30:00Z", conditions=[condition("Complete")])
        fake.run("running")
        settled(c, "recent", lambda j: bool(j["status"].get("conditions")))
        settled(c, "running", lambda j: bool(j["status"].get("active")))
        now = datetime.datetime(2026, 5, 1, 12, 0, tzinfo=datetime.timezone.utc)
        assert c.sweep(now) == ["old"]
        assert set(fake.objects["jobs"]) == {"recent", "running"}
    finally:
        c.close()


# -- the real client's error mapping (a stub HTTP API server) ----------------------------------------------


class StubHandler(http.server.BaseHTTPRequestHandler):
    answers: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}

    def _answer(self) -> None:
        path = self.path.split("?")[0]
        status, body = self.answers.get((self.command, path), (404, {"kind": "Status", "message": "not found", "code": 404}))
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def stub() -> Iterator[tuple[KubeApi, type[StubHandler]]]:
    from kubernetes import client

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StubHandler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{server.server_address[1]}"
    StubHandler.answers = {}
    yield KubeApi(client.ApiClient(configuration)), StubHandler
    server.shutdown()


JOBS_PATH = "/apis/batch/v1/namespaces/default/jobs"


@pytest.mark.parametrize(("status", "error"), [
    (409, JobAlreadyExists), (422, InvalidJobSpec), (400, InvalidJobSpec), (500, BackendUnavailable),
    (503, BackendUnavailable), (403, BackendUnavailable), (401, BackendUnavailable), (404, BackendUnavailable),
])  # fmt: skip
def test_real_client_errors_on_create(stub: Any, status: int, error: type[Exception]) -> None:
    api, handler = stub
    handler.answers[("POST", JOBS_PATH)] = (status, {"kind": "Status", "message": f"said {status}", "code": status})
    compute = KubernetesCompute(api, KubernetesOptions(), start=False)
    with pytest.raises(error) as e:
        compute.schedule(small("a"))
    if error is BackendUnavailable:
        assert "Kubernetes" in str(e.value)
    assert api.counts() == {"create job": 1}


def test_real_client_reads_and_lists(stub: Any) -> None:
    api, handler = stub
    j = job({"conditions": [condition("Complete")], "completionTime": T2, "succeeded": 1})
    handler.answers[("GET", f"{JOBS_PATH}/chris-jid-1")] = (200, j)
    handler.answers[("GET", "/api/v1/namespaces/default/pods")] = (200, {"items": [pod("Succeeded", terminated=("Completed", 0))], "metadata": {"resourceVersion": "7"}})
    handler.answers[("GET", "/api/v1/namespaces/default/pods/chris-jid-1-abcde/log")] = (200, {"x": 1})  # any bytes
    handler.answers[("GET", JOBS_PATH)] = (200, {"items": [j], "metadata": {"resourceVersion": "42"}})
    compute = KubernetesCompute(api, KubernetesOptions(), start=False)
    state = compute.state("chris-jid-1", 10)
    assert state.info.status is JobStatus.FINISHED_SUCCESSFULLY
    assert state.logs == '{"x": 1}\n'
    with pytest.raises(JobNotFound):
        compute.info("other")
    items, version = api.list("jobs", "default", "a=b")
    assert version == "42" and items[0]["metadata"]["name"] == "chris-jid-1"
    assert api.counts() == {"get job": 2, "list pods": 1, "get pod log": 1, "list jobs": 1}


def test_real_client_unreachable_server_names_kubernetes() -> None:
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = "https://127.0.0.1:1"
    api = KubeApi(client.ApiClient(configuration))
    compute = KubernetesCompute(api, KubernetesOptions(), start=False)
    for call in (lambda: compute.info("a"), lambda: compute.schedule(small("a")), lambda: compute.remove("a"), compute.ping):
        with pytest.raises(BackendUnavailable, match="Kubernetes API server unavailable at https://127.0.0.1:1: connection refused"):
            call()


# -- settings ---------------------------------------------------------------------------------------

K8S = {"APPLICATION_MODE": "dev", "CONTAINER_ENV": "kubernetes", "VOLUME_NAME": "storebase"}


def config_error(env: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        load_settings(env)
    return e.value


def test_settings_defaults_and_alias() -> None:
    s = load_settings(K8S)
    assert s.container_env == "kubernetes" and s.compute_volume_type == "kubernetes_pvc"
    assert s.kubernetes.job_namespace == "default" and s.kubernetes.kubeconfig is None
    assert s.kubernetes.node_selector_pairs == () and s.kubernetes.image_pull_secret_names == ()
    s = load_settings({**K8S, "CONTAINER_ENV": "openshift", "NODE_SELECTOR": "disk=ssd, gpu=yes",
                       "IMAGE_PULL_SECRETS": "a, b,", "JOB_NAMESPACE": "chris", "KUBECONFIG": "/k/config"})  # fmt: skip
    assert s.container_env == "kubernetes"
    assert s.kubernetes.node_selector_pairs == (("disk", "ssd"), ("gpu", "yes"))
    assert s.kubernetes.image_pull_secret_names == ("a", "b")
    assert (s.kubernetes.job_namespace, s.kubernetes.kubeconfig) == ("chris", "/k/config")


@pytest.mark.parametrize(("env", "variable"), [
    ({"VOLUME_NAME": ""}, "VOLUME_NAME"),
    ({"COMPUTE_VOLUME_TYPE": "host", "STOREBASE": "/data", "VOLUME_NAME": ""}, "COMPUTE_VOLUME_TYPE"),
    ({"COMPUTE_VOLUME_TYPE": "docker_local_volume"}, "COMPUTE_VOLUME_TYPE"),
    ({"NODE_SELECTOR": "nope"}, "NODE_SELECTOR"),
    ({"JOB_NAMESPACE": "Not_A_Label"}, "JOB_NAMESPACE"),
    ({"KUBERNETES_RESYNC_SECONDS": "1"}, "KUBERNETES_RESYNC_SECONDS"),
])  # fmt: skip
def test_settings_refused(env: dict[str, str], variable: str) -> None:
    e = config_error({**K8S, **env})
    assert e.variable == variable, e


def test_startup_names_the_variable(tmp_path: Any) -> None:
    from pfcon.bootstrap import build_container, wire_up

    env = {**K8S, "KUBECONFIG": str(tmp_path / "missing"), "STOREBASE_MOUNT": str(tmp_path)}
    with pytest.raises(ConfigError) as e:
        wire_up(build_container(load_settings(env)))
    assert e.value.variable == "KUBECONFIG"
    with pytest.raises(ConfigError) as e:
        wire_up(build_container(load_settings({**env, "JOB_LABELS": "bad key=x"})))
    assert e.value.variable == "JOB_LABELS"
    assert parse_container_user("1:2") is not None
