"""The Docker adapter on real engines — Docker and Podman (``CONTAINER_ENV=podman``):
the compute contract, plus what matters about containers on each engine."""

from __future__ import annotations

import contextlib
import os
import shlex
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pfcon.adapters.compute import engine_direct
from pfcon.adapters.compute.docker import DockerCompute, DockerOptions
from pfcon.config import parse_container_user
from pfcon.domain.errors import JobNotFound, ResourceUnavailable
from pfcon.domain.model import (
    CANCELLED_MESSAGE,
    INSTANCE_LABEL,
    JOB_TYPE_LABEL,
    ContainerJob,
    JobStatus,
    Mount,
    Resources,
)

from ..contracts.compute import ComputeContract, unique, wait_for
from .conftest import TEST_IMAGE

pytestmark = pytest.mark.docker


class EngineDriver:
    def script(self, exit_code: int = 0, lines: tuple[str, ...] = (), sleep: int = 0) -> tuple[str, ...]:
        body = "; ".join(f"echo {shlex.quote(line)}" for line in lines)
        if sleep:
            body = f"{body}; sleep {sleep}" if body else f"sleep {sleep}"
        return ("sh", "-c", f"{body or 'true'}; exit {exit_code}")

    def hog(self, mib: int) -> tuple[str, ...]:
        # sort holds its whole input in memory; past a hard limit the kernel kills it.
        return ("sh", "-c", f"head -c {mib * 1024 * 1024} /dev/zero | sort > /dev/null")

    def settle(self, compute: DockerCompute, name: str, timeout: float = 60) -> None:
        wait_for(lambda: compute.info(name).status.is_terminal, timeout)

    def begin(self, compute: DockerCompute, name: str, timeout: float = 60) -> None:
        wait_for(lambda: compute.info(name).status is JobStatus.STARTED, timeout)


class QuickHogDriver(EngineDriver):
    """For a backend that declares no hard memory limit: the same hog, done in seconds."""

    def hog(self, mib: int) -> tuple[str, ...]:
        # `tail -c` holds its last N bytes: the memory at once (busybox sort takes a minute
        # over 200 MiB without a limit).
        size = mib * 1024 * 1024
        return ("sh", "-c", f"head -c {size} /dev/zero | tail -c {size} > /dev/null")


@pytest.fixture
def storebase(tmp_path: Any) -> str:
    path = tmp_path / "storeBase"
    path.mkdir()
    return str(path)


def make_compute(client: Any, storebase: str, **options: Any) -> DockerCompute:
    # cancellations recorded as the server does: in a directory of its own under storeBase
    options.setdefault("state_dir", os.path.join(storebase, ".pfcon-docker"))
    return DockerCompute(client, DockerOptions(storebase=storebase, **options))


class TestEngineCompute(ComputeContract):
    @pytest.fixture
    def compute(self, engine: Any, storebase: str, no_stray_engine_containers: None) -> Iterator[DockerCompute]:
        compute = make_compute(engine, storebase)
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
        return EngineDriver()

    @pytest.fixture
    def image(self) -> str:
        return TEST_IMAGE


@pytest.fixture
def run(engine: Any, storebase: str, no_stray_engine_containers: None) -> Iterator[Any]:
    names: list[str] = []

    def run(command: str, compute: DockerCompute | None = None, **job: Any) -> tuple[DockerCompute, str]:
        compute = compute or make_compute(engine, storebase)
        name = unique("en")
        names.append(name)
        compute.schedule(
            ContainerJob(
                name=name,
                image=TEST_IMAGE,
                command=("sh", "-c", command),
                env=job.get("env", ()),
                resources=job.get("resources", Resources(1, 500, 64, 0)),
                mounts=job.get("mounts", ()),
                labels=job.get("labels", {"org.chrisproject.job_type": "plugin"}),  # as the domain sets it
            )
        )
        EngineDriver().settle(compute, name)
        return compute, name

    yield run
    for name in names:
        try:
            engine.api.remove_container(name, force=True)
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


def test_memory_limit_is_a_hard_limit(run: Any, engine: Any) -> None:
    # The job's exit status is sort's: Podman, unlike Docker, does not report
    # State.OOMKilled, so the assertion holds on the exit code on both engines.
    compute, name = run("head -c 200000000 /dev/zero | sort > /dev/null", resources=Resources(1, 1000, 32, 0))
    attrs = engine.api.inspect_container(name)
    assert attrs["HostConfig"]["Memory"] == 32 * 1024 * 1024
    assert attrs["HostConfig"]["NanoCpus"] == 1000 * 1_000_000
    assert attrs["State"]["ExitCode"] == 128 + 9  # SIGKILL
    state = compute.state(name, 10)
    assert state.info.status is JobStatus.FINISHED_WITH_ERROR, state.logs
    assert "Killed" in state.logs  # the kernel OOM-killed sort


def test_ignore_limits(run: Any, engine: Any, storebase: str) -> None:
    _, name = run("true", compute=make_compute(engine, storebase, ignore_limits=True))
    host_config = engine.api.inspect_container(name)["HostConfig"]
    assert host_config["Memory"] == 0
    assert host_config["NanoCpus"] == 0


def test_container_user_sets_uid_and_primary_gid(run: Any, engine: Any, storebase: str) -> None:
    compute = make_compute(engine, storebase, container_user=parse_container_user("1234:5678"))
    _, name = run("echo $(id -u):$(id -g)", compute=compute)
    assert compute.state(name, 10).logs.strip() == "1234:5678"


def test_container_user_range(run: Any, engine: Any, storebase: str) -> None:
    compute = make_compute(engine, storebase, container_user=parse_container_user("2000-2010:"))
    _, name = run("id -u", compute=compute)
    assert 2000 <= int(compute.state(name, 10).logs.strip()) <= 2010


def test_labels_shm_and_job_type(run: Any, engine: Any, storebase: str) -> None:
    compute = make_compute(engine, storebase, labels=(("team", "fnndsc"),), shm_size_mib=70)
    _, name = run("df -m /dev/shm | tail -1", compute=compute)
    attrs = engine.api.inspect_container(name)
    assert attrs["Config"]["Labels"]["team"] == "fnndsc"
    assert attrs["Config"]["Labels"]["org.chrisproject.job_type"] == "plugin"
    assert attrs["HostConfig"]["ShmSize"] == 70 * 1024 * 1024
    assert compute.state(name, 10).logs.split()[1] == "70"  # df -m: size of /dev/shm


def test_network_none(run: Any, engine: Any, storebase: str) -> None:
    compute = make_compute(engine, storebase, network="none")
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
    engine: Any, storebase: str, no_stray_engine_containers: None
) -> None:
    compute = make_compute(engine, storebase)
    name = unique("gpu")
    job = ContainerJob(name, TEST_IMAGE, ("true",), (), Resources(1, 500, 64, 1), ())
    started = time.monotonic()
    with pytest.raises(ResourceUnavailable, match="GPU"):
        compute.schedule(job)
    assert time.monotonic() - started < 10
    assert not engine.containers.list(all=True, filters={"name": name})


# -- listing and cancel (issue 12) ----------------------------------------------------------


def test_a_cancellation_survives_a_restart_and_a_new_container_of_the_name_is_not_cancelled(
    engine: Any, storebase: str, no_stray_engine_containers: None
) -> None:
    instance = unique("inst")
    labels = {JOB_TYPE_LABEL: "plugin", INSTANCE_LABEL: instance}
    name = unique("cx")

    def job(command: str) -> ContainerJob:
        return ContainerJob(name, TEST_IMAGE, ("sh", "-c", command), (), Resources(1, 500, 64, 0), (), labels)

    first = make_compute(engine, storebase)
    try:
        first.schedule(job("echo started; sleep 600"))
        wait_for(lambda: "started" in first.state(name, 10).logs, 60, 0.2)
        first.cancel(name)
        # a fresh adapter (the server restarted), with the view on as the server runs it
        fresh = make_compute(engine, storebase, status_view=True)
        try:
            assert fresh.view is not None and fresh.view.wait_current(10)
            for _ in range(2):  # from the engine, then from the view
                state = fresh.state(name, 10)
                assert (state.info.status, state.info.message) == (JobStatus.FINISHED_WITH_ERROR, CANCELLED_MESSAGE)
                assert "started" in state.logs
            [summary] = fresh.list_jobs(instance)
            assert (summary.status, summary.message) == (JobStatus.FINISHED_WITH_ERROR, CANCELLED_MESSAGE)
            assert summary.resources == Resources(1, 500, 64, 0)
            assert summary.node == engine.api.info()["Name"]
            # cancelling again, or a finished job: nothing changes
            assert fresh.cancel(name).message == CANCELLED_MESSAGE
            fresh.remove(name)
            # a new job of the same name is not cancelled
            fresh.schedule(job("exit 0"))
            EngineDriver().settle(fresh, name)
            assert fresh.info(name).status is JobStatus.FINISHED_SUCCESSFULLY
            assert make_compute(engine, storebase).info(name).status is JobStatus.FINISHED_SUCCESSFULLY
        finally:
            fresh.close()
    finally:
        try:
            first.remove(name)
        except JobNotFound:
            pass


def test_listing_with_ignore_limits_has_no_resources(run: Any, engine: Any, storebase: str) -> None:
    instance = unique("inst")
    compute, name = run(
        "true",
        compute=make_compute(engine, storebase, ignore_limits=True),
        labels={JOB_TYPE_LABEL: "plugin", INSTANCE_LABEL: instance},
    )
    [summary] = compute.list_jobs(instance)
    assert summary.name == name and summary.resources is None
    assert summary.created.endswith("Z")


def test_a_jobs_engine_calls_reuse_keep_alive_connections(
    engine: Any, storebase: str, no_stray_engine_containers: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Create, start, inspect and logs of several jobs go over one keep-alive connection
    to the engine, made directly (ADR 25), and their removals over one of the SDK's:
    docker-py's own transport opens a new one for every URL it has not seen lately, i.e.
    for nearly every call about a new container."""
    from docker.transport import unixconn

    compute = make_compute(engine, storebase)  # the event view is off: only these calls connect
    sdk: list[str] = []
    direct: list[str] = []
    sdk_connect = unixconn.UnixHTTPConnection.connect
    direct_connect = engine_direct._UnixConnection.connect

    def count_sdk(self: Any) -> None:
        sdk.append(self.unix_socket)
        sdk_connect(self)

    def count_direct(self: Any) -> None:
        direct.append(self.socket_path)
        direct_connect(self)

    monkeypatch.setattr(unixconn.UnixHTTPConnection, "connect", count_sdk)
    monkeypatch.setattr(engine_direct._UnixConnection, "connect", count_direct)
    names = [unique("conn") for _ in range(3)]
    try:
        for name in names:
            compute.schedule(
                ContainerJob(
                    name=name,
                    image=TEST_IMAGE,
                    command=("sh", "-c", "echo hello; echo oops >&2"),
                    env=(),
                    resources=Resources(1, 500, 64, 0),
                    mounts=(),
                    labels={"org.chrisproject.job_type": "plugin"},
                )
            )
            EngineDriver().settle(compute, name)
            # both streams (the engine copies them apart: their order is not kept)
            assert sorted(compute.state(name, 100).logs.splitlines()) == ["hello", "oops"]
    finally:
        for name in names:
            with contextlib.suppress(JobNotFound):  # not scheduled: the test failed before
                compute.remove(name)
    assert len(direct) == 1, f"{len(direct)} direct connections opened for {len(names)} jobs' calls"
    assert len(sdk) <= 1, f"{len(sdk)} SDK connections opened for {len(names)} jobs' removals"


@pytest.mark.parametrize("status_view", [False, True])
def test_a_job_id_never_reaches_a_container_that_is_not_a_job(
    engine: Any, storebase: str, no_stray_engine_containers: None, status_view: bool
) -> None:
    """The engine finds a container by an id prefix when no container has the name asked
    for, and other containers of the engine have names of their own: a job id such as
    "a1", "0" or another container's name must never reach that container — not its
    status or logs, not a cancel, not a DELETE — and an id prefix several containers
    share is a job that does not exist (404), not an engine failure (503)."""
    compute = make_compute(engine, storebase, status_view=status_view)
    others: list[str] = []
    try:
        # 17 containers: two of them share the first hex digit of their id
        for _ in range(17):
            created = engine.api.create_container(TEST_IMAGE, ["sleep", "60"], name=unique("other"))
            others.append(created["Id"])
        engine.api.start(others[0])
        by_digit: dict[str, int] = {}
        for cid in others:
            by_digit[cid[0]] = by_digit.get(cid[0], 0) + 1
        shared = next(digit for digit, count in by_digit.items() if count > 1)
        name_of_other = engine.api.inspect_container(others[0])["Name"].lstrip("/")
        for prefix in (others[0][:12], shared, name_of_other):
            with pytest.raises(JobNotFound):
                compute.info(prefix)
            with pytest.raises(JobNotFound):
                compute.state(prefix, 100)
            with pytest.raises(JobNotFound):
                compute.cancel(prefix)
            with pytest.raises(JobNotFound):
                compute.remove(prefix)
        assert engine.api.inspect_container(others[0])["State"]["Running"]
        assert {c["Id"] for c in engine.api.containers(all=True)} >= set(others)
    finally:
        compute.close()
        for cid in others:
            engine.api.remove_container(cid, force=True)
