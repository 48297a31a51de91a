"""The Swarm adapter on a real one-node Docker Swarm (scripts/swarm.sh): the compute
contract, plus what matters about services — limits, user, labels, /dev/shm, mounts,
out-of-memory kills, removal, refusals before anything is created, an unreachable manager."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from pfcon.adapters.compute.swarm import JOB_LABEL, SwarmCompute, SwarmOptions
from pfcon.adapters.storage.filesystem import FsLinkStorage
from pfcon.adapters.storage.local import StoreBase
from pfcon.config import parse_container_user
from pfcon.domain.errors import BackendUnavailable, InvalidJobSpec, ResourceUnavailable
from pfcon.domain.model import (
    CANCELLED_MESSAGE,
    INSTANCE_LABEL,
    JOB_TYPE_LABEL,
    ComputeCapabilities,
    ContainerJob,
    JobSpec,
    JobStatus,
    Mount,
    PluginType,
    Resources,
    ServerInfo,
)
from pfcon.domain.ports import StagingRequest
from pfcon.domain.services import JobService
from pfcon.registry import scheduler

from ..contracts.compute import ComputeContract, unique, wait_for
from .conftest import TEST_IMAGE, _require
from .test_engine_compute import EngineDriver

pytestmark = pytest.mark.swarm

MiB = 1024 * 1024
CAPABILITIES: ComputeCapabilities = scheduler("swarm").capabilities  # type: ignore[union-attr]


def require_swarm(docker_client: Any) -> Any:
    """The test engine, which must be a swarm manager (scripts/swarm.sh start)."""
    deadline = time.monotonic() + 30  # an engine just restarted rejoins its swarm in a moment
    while True:
        try:
            docker_client.api.inspect_swarm()
            return docker_client
        except Exception as e:  # noqa: BLE001
            state = (docker_client.info().get("Swarm") or {}).get("LocalNodeState")
            if state == "inactive" or time.monotonic() > deadline:
                _require("a Docker Swarm manager", f"{e} (swarm state {state!r}; run scripts/swarm.sh start)")
        time.sleep(0.5)


@pytest.fixture(scope="session")
def swarm_client(docker_client: Any) -> Any:
    return require_swarm(docker_client)


def job_services(client: Any) -> dict[str, Any]:
    return {s["Spec"]["Name"]: s for s in client.api.services(filters={"label": JOB_LABEL})}


@pytest.fixture
def no_stray_services(swarm_client: Any) -> Iterator[None]:
    """Fail a test that leaves a job service behind, and clean it up."""
    before = set(job_services(swarm_client))
    yield
    stray = set(job_services(swarm_client)) - before
    for name in stray:
        swarm_client.api.remove_service(name)
    assert not stray, f"stray services: {sorted(stray)}"


@pytest.fixture
def storebase(tmp_path: Any) -> str:
    path = tmp_path / "storeBase"
    path.mkdir()
    return str(path)


def make_compute(client: Any, storebase: str, **options: Any) -> SwarmCompute:
    return SwarmCompute(client, SwarmOptions(storebase=storebase, capabilities=CAPABILITIES, **options))


class TestSwarmCompute(ComputeContract):
    @pytest.fixture
    def compute(self, swarm_client: Any, storebase: str, no_stray_services: None) -> Iterator[SwarmCompute]:
        compute = make_compute(swarm_client, storebase)
        created: list[str] = []
        original = compute.schedule

        def schedule(job: ContainerJob) -> Any:
            created.append(job.name)
            return original(job)

        compute.schedule = schedule  # type: ignore[method-assign]
        yield compute
        for name in created:
            try:
                compute.remove(name)
            except Exception:  # noqa: BLE001
                pass

    @pytest.fixture
    def driver(self) -> EngineDriver:
        return EngineDriver()  # settle/begin poll the adapter's info(); hog() sorts /dev/zero

    @pytest.fixture
    def image(self) -> str:
        return TEST_IMAGE


# -- what matters about services --------------------------------------------------------------


@pytest.fixture
def run(swarm_client: Any, storebase: str, no_stray_services: None) -> Iterator[Any]:
    names: list[str] = []

    def run(
        command: str, compute: SwarmCompute | None = None, wait: bool = True, **job: Any
    ) -> tuple[SwarmCompute, str]:
        compute = compute or make_compute(swarm_client, storebase)
        name = unique("sw")
        names.append(name)
        compute.schedule(
            ContainerJob(
                name=name,
                image=job.get("image", TEST_IMAGE),
                command=("sh", "-c", command),
                env=job.get("env", ()),
                resources=job.get("resources", Resources(1, 500, 64, 0)),
                mounts=job.get("mounts", ()),
                labels=job.get("labels", {JOB_TYPE_LABEL: "plugin"}),  # as the domain sets it
            )
        )
        if wait:
            EngineDriver().settle(compute, name)
        return compute, name

    yield run
    for name in names:
        try:
            swarm_client.api.remove_service(name)
        except Exception:  # noqa: BLE001
            pass


def task_container(client: Any, name: str) -> dict[str, Any]:
    (task,) = client.api.tasks(filters={"service": name})
    return client.api.inspect_container(task["Status"]["ContainerStatus"]["ContainerID"])  # type: ignore[no-any-return]


def test_limits_user_labels_and_shm_are_applied(run: Any, swarm_client: Any, storebase: str) -> None:
    compute = make_compute(
        swarm_client, storebase, labels=(("team", "fnndsc"),), shm_size_mib=70,
        container_user=parse_container_user("1234:5678"),
    )  # fmt: skip
    _, name = run("id -u; id -g; df -m /dev/shm | tail -1", compute=compute, resources=Resources(1, 500, 64, 0))
    state = compute.state(name, 10)
    assert state.info.status is JobStatus.FINISHED_SUCCESSFULLY, state
    uid, gid, shm = state.logs.splitlines()
    assert (uid, gid, shm.split()[1]) == ("1234", "5678", "70")  # df -m: size of /dev/shm
    service = swarm_client.api.inspect_service(name)
    spec = service["Spec"]
    assert spec["Labels"]["team"] == "fnndsc" and spec["Labels"][JOB_TYPE_LABEL] == "plugin"
    assert spec["TaskTemplate"]["RestartPolicy"]["Condition"] == "none"
    attrs = task_container(swarm_client, name)
    host = attrs["HostConfig"]
    assert host["Memory"] == 64 * MiB
    assert host["NanoCpus"] == 500 * 1_000_000
    assert attrs["Config"]["User"] == "1234:5678"
    assert attrs["Config"]["Labels"]["team"] == "fnndsc"
    assert attrs["Config"]["Labels"][JOB_TYPE_LABEL] == "plugin"
    assert {"Type": "tmpfs", "Target": "/dev/shm", "TmpfsOptions": {"SizeBytes": 70 * MiB}} in host["Mounts"]


def test_ignore_limits(run: Any, swarm_client: Any, storebase: str) -> None:
    _, name = run("true", compute=make_compute(swarm_client, storebase, ignore_limits=True))
    host = task_container(swarm_client, name)["HostConfig"]
    assert (host["Memory"], host["NanoCpus"]) == (0, 0)


def test_mounts_input_read_only_output_read_write_and_env(run: Any, storebase: str) -> None:
    os.makedirs(f"{storebase}/key-x/incoming")
    os.makedirs(f"{storebase}/key-x/outgoing")
    with open(f"{storebase}/key-x/incoming/in.txt", "w") as f:
        f.write("data")
    mounts = (Mount("key-x/incoming", "/share/incoming", True), Mount("key-x/outgoing", "/share/outgoing", False))
    compute, name = run(
        'cat /share/incoming/in.txt > /share/outgoing/out.txt; echo "$CHRIS_JID|$A"; '
        "touch /share/incoming/nope 2>/dev/null && echo WRITABLE || echo READONLY",
        mounts=mounts, env=("CHRIS_JID=chris-jid-1", "A=b=c"),
    )  # fmt: skip
    state = compute.state(name, 10)
    assert state.info.status is JobStatus.FINISHED_SUCCESSFULLY, state.logs
    assert state.logs.splitlines() == ["chris-jid-1|b=c", "READONLY"]
    with open(f"{storebase}/key-x/outgoing/out.txt") as f:
        assert f.read() == "data"
    assert not os.path.exists(f"{storebase}/key-x/incoming/nope")


def test_out_of_memory_is_reported_with_its_reason(run: Any, swarm_client: Any) -> None:
    compute, name = run("head -c 200000000 /dev/zero | sort > /dev/null", resources=Resources(1, 1000, 32, 0))
    info = compute.info(name)
    assert info.status is JobStatus.FINISHED_WITH_ERROR
    assert info.message.startswith("out of memory"), info.message
    assert "32 MiB" in info.message
    assert task_container(swarm_client, name)["State"]["OOMKilled"] is True  # it really was the OOM killer


def test_absent_image_surfaces_in_the_status(run: Any) -> None:
    compute, name = run("true", image="local/does-not-exist:404")
    info = compute.info(name)
    assert info.status is JobStatus.FINISHED_WITH_ERROR
    assert "No such image: local/does-not-exist:404" in info.message


def test_removal_leaves_no_service_nor_container(run: Any, swarm_client: Any) -> None:
    compute, name = run("sleep 60", wait=False)
    EngineDriver().begin(compute, name)
    started = time.monotonic()
    compute.remove(name)
    assert name not in job_services(swarm_client)
    wait_for(
        lambda: not swarm_client.containers.list(all=True, filters={"label": f"com.docker.swarm.service.name={name}"}),
        30,
        0.2,
    )
    assert time.monotonic() - started < 15  # stopped at once (1 s grace), not after Docker's 10 s


def test_a_service_that_is_not_a_job_is_not_found(swarm_client: Any, storebase: str, no_stray_services: None) -> None:
    from pfcon.domain.errors import JobNotFound

    name = unique("other")
    service_id = swarm_client.api.create_service(
        docker.types.TaskTemplate(docker.types.ContainerSpec(TEST_IMAGE, ["sleep", "30"])), name=name
    )["ID"]
    try:
        compute = make_compute(swarm_client, storebase)
        for call in (compute.info, compute.remove, lambda n: compute.state(n, 10)):
            with pytest.raises(JobNotFound):
                call(name)
        with pytest.raises(JobNotFound):
            compute.info(service_id[:6])  # the engine would match an ID prefix
        assert name in {s["Spec"]["Name"] for s in swarm_client.api.services()}
    finally:
        swarm_client.api.remove_service(service_id)


def test_gpu_and_workers_refused_by_the_domain_before_anything_is_created(
    swarm_client: Any, storebase: str, no_stray_services: None
) -> None:
    compute = make_compute(swarm_client, storebase)
    storage = FsLinkStorage(StoreBase(storebase))
    os.makedirs(f"{storebase}/home/cube/in")
    os.makedirs(f"{storebase}/home/cube/out")
    with open(f"{storebase}/home/cube/in/a.txt", "w") as f:
        f.write("a")
    jobs = JobService(compute, storage, ServerInfo("test", True, "fslink", "swarm", "host"))
    request = StagingRequest(input_dirs=("home/cube/in",), output_dir="home/cube/out")

    def spec(jid: str, **resources: int) -> JobSpec:
        r = {"number_of_workers": 1, "cpu_limit": 500, "memory_limit": 64, "gpu_limit": 0, **resources}
        return JobSpec(jid=jid, image=TEST_IMAGE, entrypoint=("sh", "-c", 'cp -R "$0"/. "$1"'), type=PluginType.DS,
                       resources=Resources(**r))  # fmt: skip

    for resources, error, fragment in (
        ({"gpu_limit": 1}, InvalidJobSpec, "GPU"),
        ({"number_of_workers": 2}, InvalidJobSpec, "number_of_workers=1"),
    ):
        jid = unique("ref")
        with pytest.raises(error, match=fragment):
            jobs.submit(spec(jid, **resources), request)
        assert jid not in job_services(swarm_client)
        assert not os.path.exists(f"{storebase}/key-{jid}")
    # and the adapter refuses them too, when called directly
    with pytest.raises(ResourceUnavailable):
        compute.schedule(ContainerJob(unique("gpu"), TEST_IMAGE, ("true",), (), Resources(1, 500, 64, 1), ()))

    # a job it can run goes through the whole domain cycle
    jid = unique("ok")
    jobs.submit(spec(jid), request)
    wait_for(lambda: jobs.status(jid).info.status.is_terminal, 60)
    assert jobs.status(jid).info.status is JobStatus.FINISHED_SUCCESSFULLY
    with open(f"{storebase}/home/cube/out/a.txt") as f:
        assert f.read() == "a"
    jobs.delete(jid)
    assert jid not in job_services(swarm_client)


def test_unreachable_manager_is_backend_unavailable_naming_swarm(tmp_path: Any, storebase: str) -> None:
    client = docker.DockerClient(base_url=f"unix://{tmp_path}/closed.sock", version="1.41", timeout=5)
    compute = make_compute(client, storebase)
    job = ContainerJob("sw-dead", TEST_IMAGE, ("true",), (), Resources(1, 500, 64, 0), ())
    for call in (compute.ping, lambda: compute.info("sw-dead"), lambda: compute.state("sw-dead", 10),
                 lambda: compute.remove("sw-dead"), lambda: compute.schedule(job)):  # fmt: skip
        with pytest.raises(BackendUnavailable, match="^Docker Swarm manager unavailable: cannot connect"):
            call()


# -- listing and cancel (issue 12) ----------------------------------------------------------


def test_a_cancellation_survives_a_restart(run: Any, swarm_client: Any, storebase: str) -> None:
    instance = unique("inst")
    labels = {JOB_TYPE_LABEL: "plugin", INSTANCE_LABEL: instance}
    compute, name = run("echo started; sleep 600", wait=False, labels=labels)
    wait_for(lambda: "started" in compute.state(name, 10).logs, 60, 0.2)
    compute.cancel(name)
    fresh = make_compute(swarm_client, storebase)  # the server restarted
    state = fresh.state(name, 10)
    assert (state.info.status, state.info.message) == (JobStatus.FINISHED_WITH_ERROR, CANCELLED_MESSAGE)
    assert "started" in state.logs
    # its task was shut down (the container is stopped, not removed)
    wait_for(lambda: task_state(swarm_client, name) == "shutdown", 60, 0.5)
    [summary] = fresh.list_jobs(instance)
    assert (summary.status, summary.message) == (JobStatus.FINISHED_WITH_ERROR, CANCELLED_MESSAGE)
    assert summary.resources == Resources(1, 500, 64, 0)
    assert summary.node == swarm_client.info()["Name"]
    assert fresh.cancel(name).message == CANCELLED_MESSAGE  # again: nothing changes


def task_state(client: Any, name: str) -> str:
    """The state of the task that ran (the cancelled service's update adds a pending one)."""
    ran = [t for t in client.api.tasks(filters={"service": name}) if t.get("NodeID")]
    return str(ran[0]["Status"]["State"]) if len(ran) == 1 else ""
