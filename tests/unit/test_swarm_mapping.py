"""Docker Swarm: task state → job status and message, and the service spec built from a
job (docs/wire-contract.md §8.2, without pfcon's gaps). No engine needed."""

from __future__ import annotations

import types
from typing import Any

import docker.errors
import pytest
import requests.exceptions

from pfcon import config, registry
from pfcon.adapters.compute.swarm import (
    JOB_LABEL,
    NO_TASK_MESSAGE,
    SwarmCompute,
    SwarmOptions,
    job_info,
    latest_task,
    service_spec,
    task_status,
)
from pfcon.domain.errors import (
    BackendUnavailable,
    InvalidJobSpec,
    JobAlreadyExists,
    JobNotFound,
    ResourceUnavailable,
)
from pfcon.domain.model import JOB_TYPE_LABEL, ContainerJob, JobStatus, Mount, Resources

MiB = 1024 * 1024


def task(
    state: str, *, err: str = "", message: str = "", exit_code: int | None = None, **fields: Any
) -> dict[str, Any]:
    """A realistic task of ``GET /tasks`` (Docker 20.10)."""
    status: dict[str, Any] = {
        "Timestamp": "2026-12-01T16:13:48.643025772Z",
        "State": state,
        "Message": message or state,
    }
    if err:
        status["Err"] = err
    if exit_code is not None:
        status["ContainerStatus"] = {"ContainerID": "c0ffee", "PID": 0, "ExitCode": exit_code}
    return {"ID": "t1", "CreatedAt": "2026-12-01T16:13:40.1Z", "Version": {"Index": 10}, "Status": status, **fields}


@pytest.mark.parametrize(
    "state", ["new", "pending", "allocated", "assigned", "accepted", "preparing", "ready", "starting"]
)
def test_waiting_states_are_not_started(state: str) -> None:
    assert task_status(task(state))[0] is JobStatus.NOT_STARTED


@pytest.mark.parametrize(
    ("t", "status", "message"),
    [
        (task("running", message="started"), JobStatus.STARTED, "started"),
        (task("complete", message="finished", exit_code=0), JobStatus.FINISHED_SUCCESSFULLY, "finished"),
        (task("failed", message="started", err="task: non-zero exit (3)", exit_code=3),
         JobStatus.FINISHED_WITH_ERROR, "task: non-zero exit (3)"),
        (task("rejected", message="preparing", err="No such image: local/does-not-exist:404"),
         JobStatus.FINISHED_WITH_ERROR, "rejected by Docker Swarm: No such image: local/does-not-exist:404"),
        (task("shutdown", message="shutdown", exit_code=143),
         JobStatus.FINISHED_WITH_ERROR, "shut down by Docker Swarm before it finished: shutdown"),
        (task("pending", message="pending task scheduling", err="no suitable node (insufficient resources on 1 node)"),
         JobStatus.NOT_STARTED, "no suitable node (insufficient resources on 1 node)"),
        (task("orphaned", message="orphaned"), JobStatus.UNDEFINED, "orphaned"),
        (task("remove", message="removing"), JobStatus.UNDEFINED, "removing"),
        (task("some-future-state"), JobStatus.UNDEFINED, "some-future-state"),
        ({}, JobStatus.UNDEFINED, ""),
    ],
)  # fmt: skip
def test_task_state_table(t: dict[str, Any], status: JobStatus, message: str) -> None:
    assert task_status(t) == (status, message)


@pytest.mark.parametrize(
    "t",
    [
        task("failed", message="started", err="task: non-zero exit (137)", exit_code=137),  # what 20.10 reports
        task("shutdown", message="shutdown", exit_code=137),  # pfcon's only case
        task("failed", err="OOMKilled: container ran out of memory"),
    ],
)
def test_an_out_of_memory_kill_says_so(t: dict[str, Any]) -> None:
    status, message = task_status(t, memory_limit=32 * MiB)
    assert status is JobStatus.FINISHED_WITH_ERROR
    assert message.startswith("out of memory")
    assert "32 MiB" in message


def test_oom_message_without_a_limit_and_no_false_positive() -> None:
    assert task_status(task("failed", exit_code=137))[1] == "out of memory: killed by the kernel (exit code 137)"
    status, message = task_status(task("failed", err="no room left on device", exit_code=1))
    assert (status, message) == (JobStatus.FINISHED_WITH_ERROR, "no room left on device")


def service(**container: Any) -> dict[str, Any]:
    spec = {"Image": "local/x:1", "Command": ["sh", "-c", "echo 'a b'"], **container}
    return {
        "ID": "svc1",
        "CreatedAt": "2026-12-01T16:13:40Z",
        "Spec": {
            "Name": "chris-jid-1",
            "TaskTemplate": {"ContainerSpec": spec, "Resources": {"Limits": {"MemoryBytes": 64 * MiB}}},
        },
    }


def test_job_info_from_service_and_task() -> None:
    info = job_info("chris-jid-1", service(), [task("complete", message="finished", exit_code=0)])
    assert info.name == "chris-jid-1"
    assert info.image == "local/x:1"
    assert info.cmd == "sh -c 'echo '\"'\"'a b'\"'\"''"  # shlex.join
    assert info.status is JobStatus.FINISHED_SUCCESSFULLY
    assert info.timestamp == "2026-12-01T16:13:48.643025772Z"


def test_no_task_yet_is_not_started() -> None:
    info = job_info("chris-jid-1", service(), [])
    assert (info.status, info.message, info.image) == (JobStatus.NOT_STARTED, NO_TASK_MESSAGE, "local/x:1")


def test_oom_message_uses_the_service_memory_limit() -> None:
    info = job_info("chris-jid-1", service(), [task("failed", exit_code=137)])
    assert info.message == "out of memory: killed by the kernel at the job's memory limit of 64 MiB (exit code 137)"


def test_latest_task_wins() -> None:
    old = task("failed", exit_code=1, CreatedAt="2026-12-01T16:00:00Z")
    new = task("running", CreatedAt="2026-12-01T16:05:00Z")
    assert latest_task([new, old]) is new
    assert latest_task([]) is None


# -- the service spec -----------------------------------------------------------------------


def job(**kw: Any) -> ContainerJob:
    return ContainerJob(
        name="chris-jid-1",
        image="local/pl-simpledsapp:1.0.3",
        command=("python3", "/usr/local/bin/simpledsapp.py", "/share/incoming", "/share/outgoing"),
        env=("CHRIS_JID=chris-jid-1", "HOME=/tmp"),
        resources=kw.pop("resources", Resources(1, 1500, 300, 0)),
        mounts=(Mount("key-chris-jid-1/incoming", "/share/incoming", True), Mount("key-chris-jid-1/outgoing", "/share/outgoing", False)),
        labels={JOB_TYPE_LABEL: "plugin"},
        **kw,
    )  # fmt: skip


def test_spec_limits_restart_mounts_env_and_labels() -> None:
    options = SwarmOptions(storebase="/data/storeBase/", labels=(("team", "fnndsc"), (JOB_TYPE_LABEL, "overridden")))
    spec = service_spec(job(), options)
    t = spec.task_template
    c = t["ContainerSpec"]
    assert spec.name == "chris-jid-1"
    assert c["Image"] == "local/pl-simpledsapp:1.0.3"
    assert c["Command"] == ["python3", "/usr/local/bin/simpledsapp.py", "/share/incoming", "/share/outgoing"]
    assert c["Env"] == ["CHRIS_JID=chris-jid-1", "HOME=/tmp"]
    assert "User" not in c and "Groups" not in c
    assert t["RestartPolicy"]["Condition"] == "none" and t["RestartPolicy"]["MaxAttempts"] == 0
    assert t["Resources"] == {
        "Limits": {"NanoCPUs": 1500 * 1_000_000, "MemoryBytes": 300 * MiB},
        "Reservations": {"MemoryBytes": 300 * MiB},
    }
    assert "Networks" not in t and "EndpointSpec" not in t  # no overlay network, no published port
    assert c["Mounts"] == [
        {
            "Target": "/share/incoming",
            "Source": "/data/storeBase/key-chris-jid-1/incoming",
            "Type": "bind",
            "ReadOnly": True,
        },
        {
            "Target": "/share/outgoing",
            "Source": "/data/storeBase/key-chris-jid-1/outgoing",
            "Type": "bind",
            "ReadOnly": False,
        },
    ]
    expected = {"team": "fnndsc", JOB_TYPE_LABEL: "plugin", JOB_LABEL: "chris-jid-1"}  # the domain's label wins
    assert spec.labels == expected
    assert c["Labels"] == expected  # on the service and on its containers
    assert c["StopGracePeriod"] == 1_000_000_000


def test_spec_ignore_limits_user_and_shm() -> None:
    options = SwarmOptions(storebase="/sb", ignore_limits=True, shm_size_mib=70)
    t = service_spec(job(), options, user=(1234, 5678)).task_template
    c = t["ContainerSpec"]
    assert "Resources" not in t
    assert c["User"] == "1234:5678"
    assert c["Mounts"][-1] == {"Target": "/dev/shm", "Source": None, "Type": "tmpfs", "ReadOnly": False,
                               "TmpfsOptions": {"SizeBytes": 70 * MiB}}  # fmt: skip


@pytest.mark.parametrize(
    ("user", "expected_user", "groups"),
    [((1000, None), "1000", None), ((None, 2000), None, ["2000"]), ((None, None), None, None)],
)
def test_spec_user_sides(
    user: tuple[int | None, int | None], expected_user: str | None, groups: list[str] | None
) -> None:
    c = service_spec(job(), SwarmOptions(storebase="/sb"), user=user).task_template["ContainerSpec"]
    assert c.get("User") == expected_user
    assert c.get("Groups") == groups


@pytest.mark.parametrize(
    ("user", "expected_user", "groups"),
    [((1000, None), "1000", ["10001"]), ((None, 2000), None, ["2000", "10001"]), ((None, None), None, ["10001"]),
     ((1000, 10001), "1000:10001", None), ((None, 10001), None, ["10001"])],
)  # fmt: skip
def test_a_plugin_gets_the_op_jobs_group(
    user: tuple[int | None, int | None], expected_user: str | None, groups: list[str] | None
) -> None:
    options = SwarmOptions(storebase="/sb", supplemental_groups=(10001,))
    c = service_spec(job(), options, user=user).task_template["ContainerSpec"]
    assert (c.get("User"), c.get("Groups")) == (expected_user, groups)
    op = service_spec(job(run_as=(10001, 10001)), options, user=(10001, 10001)).task_template["ContainerSpec"]
    assert (op["User"], op.get("Groups")) == ("10001:10001", None)  # an op job: its own user only


def test_storebase_itself_as_a_mount_source() -> None:
    j = ContainerJob("j", "i", ("true",), (), Resources(), (Mount("", "/share", False),))
    assert service_spec(j, SwarmOptions(storebase="/sb")).task_template["ContainerSpec"]["Mounts"][0]["Source"] == "/sb"


# -- configuration ------------------------------------------------------------------------------


def test_swarm_configuration_is_host_volumes_only() -> None:
    s = config.load_settings({"APPLICATION_MODE": "dev", "CONTAINER_ENV": "swarm", "STOREBASE": "/data"})
    assert (s.container_env, s.compute_volume_type, s.storebase_host) == ("swarm", "host", "/data")
    with pytest.raises(config.ConfigError) as e:
        config.load_settings(
            {"APPLICATION_MODE": "dev", "CONTAINER_ENV": "swarm", "COMPUTE_VOLUME_TYPE": "docker_local_volume"}
        )
    assert e.value.variable == "COMPUTE_VOLUME_TYPE"
    with pytest.raises(config.ConfigError) as e:
        config.load_settings({"APPLICATION_MODE": "dev", "CONTAINER_ENV": "swarm"})
    assert e.value.variable == "STOREBASE"


def test_declared_capabilities() -> None:
    entry = registry.scheduler("swarm")
    assert entry is not None
    caps = entry.capabilities
    assert (caps.max_workers, caps.checks_image_at_submit, caps.unique_names, caps.gpus, caps.hard_memory_limit) == (
        1, False, True, False, True,
    )  # fmt: skip


# -- engine errors → domain errors (a stub engine) ---------------------------------------------


class _Response:
    def __init__(self, status_code: int) -> None:
        self.status_code = status_code
        self.reason = "stub"


def api_error(status: int, explanation: str) -> docker.errors.APIError:
    cls = docker.errors.NotFound if status == 404 else docker.errors.APIError
    return cls(f"{status} Client Error", response=_Response(status), explanation=explanation)  # type: ignore[arg-type]


NOT_A_MANAGER = (
    'This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to connect this node to '
    "swarm and try again."
)


class StubApi:
    """Answers every call with ``error``, or with ``services`` for inspect_service."""

    def __init__(self, error: Exception | None = None, services: dict[str, dict[str, Any]] | None = None) -> None:
        self.error, self.services, self.created = error, services or {}, []

    def _fail(self) -> None:
        if self.error is not None:
            raise self.error

    def inspect_swarm(self) -> dict[str, Any]:
        self._fail()
        return {}

    def create_service(self, template: Any, **kw: Any) -> dict[str, str]:
        self._fail()
        self.created.append(kw["name"])
        return {"ID": "new"}

    def inspect_service(self, name: str) -> dict[str, Any]:
        self._fail()
        for service in self.services.values():
            if service["Spec"]["Name"] == name or service["ID"].startswith(name):
                return service
        raise api_error(404, f"service {name} not found")

    def tasks(self, filters: Any) -> list[Any]:
        return []

    def remove_service(self, service_id: str) -> None:
        self._fail()


def stub_compute(api: StubApi) -> SwarmCompute:
    client = types.SimpleNamespace(api=api)
    caps = registry.scheduler("swarm").capabilities  # type: ignore[union-attr]
    return SwarmCompute(client, SwarmOptions(storebase="/sb", capabilities=caps))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "expected", "text"),
    [
        (api_error(503, NOT_A_MANAGER), BackendUnavailable, f"Docker Swarm manager unavailable: {NOT_A_MANAGER}"),
        (api_error(500, "rpc error: code = Unknown desc = boom"), BackendUnavailable,
         "Docker Swarm manager unavailable: rpc error: code = Unknown desc = boom"),
        (requests.exceptions.ConnectionError("refused"), BackendUnavailable,
         "Docker Swarm manager unavailable: cannot connect to the manager"),
        (requests.exceptions.ReadTimeout("slow"), BackendUnavailable,
         "Docker Swarm manager unavailable: the manager did not answer in time"),
    ],
)  # fmt: skip
def test_engine_errors_name_the_swarm_manager(error: Exception, expected: type[Exception], text: str) -> None:
    compute = stub_compute(StubApi(error))
    for call in (compute.ping, lambda: compute.info("j"), lambda: compute.remove("j"), lambda: compute.schedule(job())):
        with pytest.raises(expected) as e:
            call()
        assert str(e.value) == text


def test_create_errors() -> None:
    conflict = api_error(409, "rpc error: code = AlreadyExists desc = name conflicts with an existing object")
    with pytest.raises(JobAlreadyExists):
        stub_compute(StubApi(conflict)).schedule(job())
    with pytest.raises(InvalidJobSpec, match="^rejected by Docker Swarm: invalid mount"):
        stub_compute(StubApi(api_error(400, "invalid mount config"))).schedule(job())


def test_refusals_create_nothing() -> None:
    api = StubApi()
    compute = stub_compute(api)
    with pytest.raises(ResourceUnavailable, match="gpu_limit"):
        compute.schedule(job(resources=Resources(1, 500, 64, 1)))
    with pytest.raises(InvalidJobSpec, match="number_of_workers=1"):
        compute.schedule(job(resources=Resources(2, 500, 64, 0)))
    with pytest.raises(InvalidJobSpec, match="number_of_workers"):
        compute.check("local/x:1", Resources(2, 500, 64, 0))
    compute.check("local/absent:1", Resources(1, 500, 64, 0))  # images are not checked (ADR 0012)
    assert api.created == []
    assert compute.schedule(job()).status is JobStatus.NOT_STARTED
    assert api.created == ["chris-jid-1"]


def test_only_services_of_that_name_created_by_the_adapter_are_jobs() -> None:
    def svc(service_id: str, name: str, labels: dict[str, str]) -> dict[str, Any]:
        return {"ID": service_id, "Spec": {"Name": name, "Labels": labels, "TaskTemplate": {}}}

    api = StubApi(services={
        "pfcon": svc("aaaa1111", "pfcon", {}),
        "job": svc("bbbb2222", "chris-jid-1", {JOB_LABEL: "chris-jid-1"}),
    })  # fmt: skip
    compute = stub_compute(api)
    assert compute.info("chris-jid-1").status is JobStatus.NOT_STARTED
    for name in ("pfcon", "aaaa", "bbbb", "nope"):  # not ours, ID prefixes, unknown
        with pytest.raises(JobNotFound):
            compute.info(name)
        with pytest.raises(JobNotFound):
            compute.remove(name)
