"""The Docker adapter against Podman's Docker-compatible API (``CONTAINER_ENV=podman``).

The same compute contract as against Docker, plus the Docker specifics that matter on
Podman. Needs ``PFCON_PODMAN_HOST`` (``eval "$(scripts/podman-engine.sh env)"`` after
``scripts/podman-engine.sh start``) and the test image in Podman's own store.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pfcon.adapters.compute.docker import DockerCompute
from pfcon.config import parse_container_user
from pfcon.domain.errors import ResourceUnavailable
from pfcon.domain.model import ContainerJob, JobStatus, Mount, Resources

from ..contracts.compute import ComputeContract, unique
from .conftest import TEST_IMAGE, _require
from .test_docker_compute import DockerDriver, make_compute

pytestmark = pytest.mark.podman

PODMAN_HOST_VAR = "PFCON_PODMAN_HOST"


@pytest.fixture(scope="session")
def podman_client() -> Iterator[Any]:
    import docker

    host = os.environ.get(PODMAN_HOST_VAR)
    if not host:
        _require("a Podman service", f"{PODMAN_HOST_VAR} is not set (see scripts/podman-engine.sh)")
    try:
        client = docker.DockerClient(base_url=host)
        client.ping()
        version = client.version()
    except Exception as e:  # noqa: BLE001
        _require("a Podman service", f"{PODMAN_HOST_VAR}={host}: {e}")
    components = [c.get("Name") for c in version.get("Components") or ()]
    if "Podman Engine" not in components:
        _require("a Podman service", f"{PODMAN_HOST_VAR}={host} is not Podman (components: {components})")
    try:
        client.api.inspect_image(TEST_IMAGE)
    except Exception as e:  # noqa: BLE001
        _require(f"the test image {TEST_IMAGE} in Podman's store", str(e))
    yield client
    client.close()


@pytest.fixture
def no_stray_podman_containers(podman_client: Any) -> Iterator[None]:
    """Fail a test that leaves a job container behind, and clean it up."""
    before = {c.id for c in podman_client.containers.list(all=True)}
    yield
    stray = [c for c in podman_client.containers.list(all=True) if c.id not in before]
    for c in stray:
        c.remove(force=True)
    assert not stray, f"stray containers: {[c.name for c in stray]}"


@pytest.fixture
def storebase(tmp_path: Any) -> str:
    path = tmp_path / "storeBase"
    path.mkdir()
    return str(path)


class TestPodmanCompute(ComputeContract):
    @pytest.fixture
    def compute(self, podman_client: Any, storebase: str, no_stray_podman_containers: None) -> Iterator[DockerCompute]:
        compute = make_compute(podman_client, storebase)
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
    def driver(self) -> DockerDriver:
        return DockerDriver()

    @pytest.fixture
    def image(self) -> str:
        return TEST_IMAGE


# -- Podman specifics -----------------------------------------------------------


@pytest.fixture
def run(podman_client: Any, storebase: str, no_stray_podman_containers: None) -> Iterator[Any]:
    names: list[str] = []

    def run(command: str, compute: DockerCompute | None = None, wait: bool = True, **job: Any) -> tuple[DockerCompute, str]:
        compute = compute or make_compute(podman_client, storebase)
        name = unique("pm")
        names.append(name)
        compute.schedule(
            ContainerJob(
                name=name,
                image=TEST_IMAGE,
                command=("sh", "-c", command),
                env=job.get("env", ()),
                resources=job.get("resources", Resources(1, 500, 64, 0)),
                mounts=job.get("mounts", ()),
            )
        )
        if wait:
            DockerDriver().settle(compute, name)
        return compute, name

    yield run
    for name in names:
        try:
            podman_client.api.remove_container(name, force=True)
        except Exception:  # noqa: BLE001
            pass


def test_mounts_input_read_only_and_output_read_write(run: Any, storebase: str) -> None:
    os.makedirs(f"{storebase}/key-x/incoming")
    os.makedirs(f"{storebase}/key-x/outgoing")
    with open(f"{storebase}/key-x/incoming/in.txt", "w") as f:
        f.write("data")
    mounts = (
        Mount("key-x/incoming", "/share/incoming", True),
        Mount("key-x/outgoing", "/share/outgoing", False),
    )
    compute, name = run(
        "cat /share/incoming/in.txt > /share/outgoing/out.txt; "
        "touch /share/incoming/nope 2>/dev/null && echo WRITABLE || echo READONLY",
        mounts=mounts,
    )
    state = compute.state(name, 10)
    assert state.info.status is JobStatus.FINISHED_SUCCESSFULLY, state.logs
    assert state.logs.strip() == "READONLY"
    with open(f"{storebase}/key-x/outgoing/out.txt") as f:
        assert f.read() == "data"
    assert not os.path.exists(f"{storebase}/key-x/incoming/nope")


def test_env_is_passed(run: Any) -> None:
    compute, name = run('echo "$CHRIS_JID|$A"', env=("CHRIS_JID=chris-jid-1", "A=b=c"))
    assert compute.state(name, 10).logs.strip() == "chris-jid-1|b=c"


def test_memory_limit_is_a_hard_limit(run: Any, podman_client: Any) -> None:
    # The job's exit status is sort's: Podman, unlike Docker, does not report
    # State.OOMKilled (even when the container's main process is OOM-killed), so a
    # job whose main process survives the kill of a child would count as a success.
    compute, name = run(
        "head -c 200000000 /dev/zero | sort > /dev/null",
        resources=Resources(1, 1000, 32, 0),
    )
    attrs = podman_client.api.inspect_container(name)
    assert attrs["HostConfig"]["Memory"] == 32 * 1024 * 1024
    assert attrs["HostConfig"]["NanoCpus"] == 1000 * 1_000_000
    assert attrs["State"]["ExitCode"] == 128 + 9  # SIGKILL
    state = compute.state(name, 10)
    assert state.info.status is JobStatus.FINISHED_WITH_ERROR, state.logs
    assert "Killed" in state.logs  # the kernel OOM-killed sort


def test_ignore_limits(run: Any, podman_client: Any, storebase: str) -> None:
    compute = make_compute(podman_client, storebase, ignore_limits=True)
    _, name = run("true", compute=compute)
    host_config = podman_client.api.inspect_container(name)["HostConfig"]
    assert host_config["Memory"] == 0
    assert host_config["NanoCpus"] == 0


def test_container_user_sets_uid_and_primary_gid(run: Any, podman_client: Any, storebase: str) -> None:
    compute = make_compute(podman_client, storebase, container_user=parse_container_user("1234:5678"))
    _, name = run("echo $(id -u):$(id -g)", compute=compute)
    assert compute.state(name, 10).logs.strip() == "1234:5678"


def test_container_user_range(run: Any, podman_client: Any, storebase: str) -> None:
    compute = make_compute(podman_client, storebase, container_user=parse_container_user("2000-2010:"))
    _, name = run("id -u", compute=compute)
    assert 2000 <= int(compute.state(name, 10).logs.strip()) <= 2010


def test_labels_shm_and_job_type(run: Any, podman_client: Any, storebase: str) -> None:
    compute = make_compute(podman_client, storebase, labels=(("team", "fnndsc"),), shm_size_mib=70)
    _, name = run("df -m /dev/shm | tail -1", compute=compute)
    attrs = podman_client.api.inspect_container(name)
    assert attrs["Config"]["Labels"]["team"] == "fnndsc"
    assert attrs["Config"]["Labels"]["org.chrisproject.job_type"] == "plugin"
    assert attrs["HostConfig"]["ShmSize"] == 70 * 1024 * 1024
    assert compute.state(name, 10).logs.split()[1] == "70"  # df -m: size of /dev/shm


def test_network_none(run: Any, podman_client: Any, storebase: str) -> None:
    compute = make_compute(podman_client, storebase, network="none")
    _, name = run("ls /sys/class/net", compute=compute)
    state = compute.state(name, 10)
    assert state.info.status is JobStatus.FINISHED_SUCCESSFULLY, state.logs
    assert state.logs.split() == ["lo"]


def test_logs_with_invalid_utf8_are_replaced(run: Any) -> None:
    compute, name = run(r"printf 'ok\377\376end\n'; echo err >&2")
    logs = compute.state(name, 10).logs
    assert "ok\ufffd\ufffdend" in logs
    assert "err" in logs


def test_gpu_request_on_a_host_without_gpus_leaves_nothing(
    podman_client: Any, storebase: str, no_stray_podman_containers: None
) -> None:
    compute = make_compute(podman_client, storebase)
    name = unique("gpu")
    job = ContainerJob(name, TEST_IMAGE, ("true",), (), Resources(1, 500, 64, 1), ())
    started = time.monotonic()
    with pytest.raises(ResourceUnavailable, match="GPU"):
        compute.schedule(job)
    assert time.monotonic() - started < 10
    assert not podman_client.containers.list(all=True, filters={"name": name})
