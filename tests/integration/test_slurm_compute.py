"""The SLURM adapter on a real two-node SLURM 22.05 cluster (scripts/slurm-cluster.sh:
node2's slurmd in its own network namespace, Docker as the nodes' runtime): the compute
contract, a burst spread over both nodes, the environment and user reaching the
container, cancellation, a status that outlives SLURM's memory of the job (MinJobAge),
a node failing mid-job and the controller going down."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from pfcon.adapters.compute.options import parse_container_user
from pfcon.adapters.compute.slurm import SlurmCompute, SlurmOptions
from pfcon.domain.errors import BackendUnavailable
from pfcon.domain.model import CANCELLED_MESSAGE, ComputeCapabilities, ContainerJob, JobStatus, Mount, Resources
from pfcon.registry import scheduler

from ..contracts.compute import ComputeContract, unique, wait_for
from .conftest import TEST_IMAGE, _require
from .test_engine_compute import QuickHogDriver

pytestmark = [pytest.mark.slurm, pytest.mark.docker]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "slurm-cluster.sh")
CAPABILITIES: ComputeCapabilities = scheduler("slurm").capabilities  # type: ignore[union-attr]


def cluster_command(*args: str) -> None:
    subprocess.run(["bash", SCRIPT, *args], check=True, capture_output=True, timeout=180)


def nodes() -> list[str]:
    out = subprocess.run(["sinfo", "--noheader", "--Node", "--format=%N"], capture_output=True, text=True, timeout=30)
    return sorted(set(out.stdout.split()))


def wait_nodes_idle(timeout: float = 90) -> None:
    def idle() -> bool:
        out = subprocess.run(["sinfo", "--noheader", "--Node", "--format=%N %t"], capture_output=True, text=True, timeout=30)
        states = dict(line.split() for line in out.stdout.splitlines() if line.strip())
        return len(states) >= 2 and all(s in ("idle", "mix", "alloc") for s in states.values())

    wait_for(idle, timeout, 1)


@pytest.fixture(scope="session", name="slurm_cluster")
def slurm_cluster_fixture(docker_client: Any) -> list[str]:
    if not os.environ.get("SLURM_CONF"):
        _require("a SLURM cluster", 'SLURM_CONF is not set (eval "$(bash scripts/slurm-cluster.sh env)")')
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        _require("a SLURM cluster", str(e))
    if ping.returncode != 0 or "UP" not in ping.stdout:
        _require("a SLURM cluster", (ping.stdout + ping.stderr).strip())
    found = nodes()
    if len(found) < 2:
        _require("a two-node SLURM cluster", f"sinfo shows {found}")
    return found


@pytest.fixture
def storebase(tmp_path: Any) -> str:
    path = tmp_path / "storeBase"
    path.mkdir()
    return str(path)


def make_compute(storebase: str, **options: Any) -> SlurmCompute:
    options.setdefault("poll_seconds", 0.5)
    options.setdefault("capabilities", CAPABILITIES)
    return SlurmCompute(SlurmOptions(storebase=storebase, local_storebase=storebase, **options))


def remove_all(compute: SlurmCompute, names: list[str], docker_client: Any) -> None:
    for name in names:
        try:
            compute.remove(name)
        except Exception:  # noqa: BLE001
            pass
        try:
            docker_client.containers.get(name).remove(force=True)
        except Exception:  # noqa: BLE001
            pass


class TestSlurmCompute(ComputeContract):
    @pytest.fixture
    def compute(self, slurm_cluster: list[str], storebase: str, docker_client: Any) -> Iterator[SlurmCompute]:
        compute = make_compute(storebase)
        created: list[str] = []
        original = compute.schedule

        def schedule(job: ContainerJob) -> Any:
            created.append(job.name)
            return original(job)

        compute.schedule = schedule  # type: ignore[method-assign]
        yield compute
        remove_all(compute, created, docker_client)

    @pytest.fixture
    def driver(self) -> QuickHogDriver:
        return QuickHogDriver()  # no hard memory limit declared: the hog must end by itself

    @pytest.fixture
    def image(self) -> str:
        return TEST_IMAGE


# -- what matters on a cluster -------------------------------------------------------------------


@pytest.fixture
def jobs(slurm_cluster: list[str], storebase: str, docker_client: Any) -> Iterator[Any]:
    made: list[tuple[SlurmCompute, str]] = []

    def submit(command: str, compute: SlurmCompute | None = None, **job: Any) -> tuple[SlurmCompute, str]:
        compute = compute or make_compute(storebase)
        name = job.pop("name", None) or unique("sl")
        made.append((compute, name))
        compute.schedule(ContainerJob(
            name=name, image=job.get("image", TEST_IMAGE), command=("sh", "-c", command), env=job.get("env", ()),
            resources=job.get("resources", Resources(1, 1000, 64, 0)), mounts=job.get("mounts", ()),
        ))  # fmt: skip
        return compute, name

    yield submit
    for compute, name in made:
        remove_all(compute, [name], docker_client)


def node_of(compute: SlurmCompute, name: str) -> str:
    with open(os.path.join(compute.root, name, "node")) as f:
        return f.read().strip()


def test_a_burst_runs_on_both_nodes(jobs: Any, storebase: str, slurm_cluster: list[str]) -> None:
    compute = make_compute(storebase)
    names = [jobs("sleep 3; echo done", compute)[1] for _ in range(6)]  # 6 one-CPU jobs, 2 nodes of 2 CPUs
    for name in names:
        wait_for(lambda n=name: compute.info(n).status.is_terminal, 120, 0.5)
    for name in names:
        state = compute.state(name, 10)
        assert state.info.status is JobStatus.FINISHED_SUCCESSFULLY, state
        assert state.logs.strip() == "done"
    assert {node_of(compute, n) for n in names} == set(slurm_cluster)


def test_env_user_and_mounts_reach_the_container(jobs: Any, storebase: str) -> None:
    os.makedirs(os.path.join(storebase, "key-x", "incoming"))
    os.makedirs(os.path.join(storebase, "key-x", "outgoing"))
    os.chmod(os.path.join(storebase, "key-x", "outgoing"), 0o777)
    with open(os.path.join(storebase, "key-x", "incoming", "in.txt"), "w") as f:
        f.write("input")
    compute = make_compute(storebase, container_user=parse_container_user("1234:2345"))
    mounts = (Mount("key-x/incoming", "/share/incoming", True), Mount("key-x/outgoing", "/share/outgoing", False))
    script = ('echo "A=$A HOME=$HOME id=$(id -u):$(id -g)"; cp /share/incoming/in.txt /share/outgoing/out.txt; '
              'touch /share/incoming/nope 2>/dev/null && echo writable || echo read-only')  # fmt: skip
    _, name = jobs(script, compute, env=("A=a value", "HOME=/tmp"), mounts=mounts)
    wait_for(lambda: compute.info(name).status.is_terminal, 120, 0.5)
    state = compute.state(name, 10)
    assert state.info.status is JobStatus.FINISHED_SUCCESSFULLY, state
    assert state.logs.splitlines() == ["A=a value HOME=/tmp id=1234:2345", "read-only"]
    with open(os.path.join(storebase, "key-x", "outgoing", "out.txt")) as f:
        assert f.read() == "input"
    assert not os.path.exists(os.path.join(compute.root, name, "env"))  # the credentials' file is gone once run


def test_a_container_that_cannot_run_says_why(jobs: Any, storebase: str) -> None:
    compute = make_compute(storebase)
    _, name = jobs("true", compute, image="local/does-not-exist:404")
    wait_for(lambda: compute.info(name).status.is_terminal, 120, 0.5)
    info = compute.info(name)
    assert info.status is JobStatus.FINISHED_WITH_ERROR
    assert "exit code 125" in info.message and "image" in info.message.lower()


def test_remove_cancels_the_running_container(jobs: Any, storebase: str, docker_client: Any) -> None:
    compute = make_compute(storebase)
    _, name = jobs("echo started; sleep 300", compute)
    wait_for(lambda: "started" in compute.state(name, 5).logs, 120, 0.5)
    assert compute.info(name).status is JobStatus.STARTED
    assert docker_client.containers.get(name).status == "running"
    compute.remove(name)

    def container_gone() -> bool:
        try:
            docker_client.containers.get(name)
        except Exception:  # noqa: BLE001 - NotFound
            return True
        return False

    wait_for(container_gone, 60, 0.5)  # the batch script's trap stopped it
    assert not os.path.exists(os.path.join(compute.root, name))


def forgotten(jobid: str) -> bool:
    out = subprocess.run(["squeue", "--noheader", "--states=all", "--jobs", jobid, "--format=%i"],
                         capture_output=True, text=True, timeout=30)  # fmt: skip
    return jobid not in out.stdout.split()


def test_status_outlives_slurm_forgetting_the_job(jobs: Any, storebase: str) -> None:
    """MinJobAge is lowered by scripts/slurm-cluster.sh, and there is no accounting database."""
    compute = make_compute(storebase)
    _, ok = jobs("echo fine", compute)
    _, bad = jobs("echo broken >&2; exit 3", compute)
    for name in (ok, bad):
        wait_for(lambda n=name: compute.info(n).status.is_terminal, 120, 0.5)
    ids = [open(os.path.join(compute.root, n, "jobid")).read().strip() for n in (ok, bad)]
    wait_for(lambda: all(forgotten(i) for i in ids), 180, 2)
    for adapter in (compute, make_compute(storebase)):  # also a fresh adapter: a restarted server
        assert adapter.info(ok).status is JobStatus.FINISHED_SUCCESSFULLY
        failed = adapter.state(bad, 5)
        assert (failed.info.status, failed.info.message) == (JobStatus.FINISHED_WITH_ERROR, "Error (exit code 3)")
        assert failed.logs.strip() == "broken"


def test_cancel_stops_the_container_and_survives_a_restart_and_slurm_forgetting(
    jobs: Any, storebase: str, docker_client: Any
) -> None:
    compute = make_compute(storebase)
    _, name = jobs("echo started; sleep 300", compute)
    wait_for(lambda: "started" in compute.state(name, 5).logs, 120, 0.5)
    jobid = open(os.path.join(compute.root, name, "jobid")).read().strip()
    info = compute.cancel(name)
    assert (info.status, info.message) == (JobStatus.FINISHED_WITH_ERROR, CANCELLED_MESSAGE)

    def container_gone() -> bool:
        try:
            docker_client.containers.get(name)
        except Exception:  # noqa: BLE001 - NotFound
            return True
        return False

    wait_for(container_gone, 60, 0.5)  # it stopped: the batch script's trap removed the container
    wait_for(lambda: forgotten(jobid), 180, 2)  # MinJobAge: SLURM no longer knows the job
    fresh = make_compute(storebase)  # a restarted server
    state = fresh.state(name, 10)
    assert (state.info.status, state.info.message) == (JobStatus.FINISHED_WITH_ERROR, CANCELLED_MESSAGE)
    assert state.logs.splitlines()[0] == "started"  # its logs stay (then slurmstepd's "CANCELLED AT" line)
    assert os.path.isdir(os.path.join(compute.root, name))  # its data too, until DELETE


def test_queries_are_shared_between_status_requests(jobs: Any, storebase: str) -> None:
    compute = make_compute(storebase, poll_seconds=30)
    names = [jobs("sleep 1", compute)[1] for _ in range(10)]
    before = compute.view.queries
    for _ in range(5):
        for name in names:
            compute.info(name)
    assert compute.view.queries - before <= 1


# -- faults ----------------------------------------------------------------------------------------


@pytest.mark.faults
def test_a_node_failing_mid_job_ends_it_with_the_reason(jobs: Any, storebase: str, slurm_cluster: list[str]) -> None:
    node = slurm_cluster[-1]
    compute = make_compute(storebase, sbatch_options=(f"--nodelist={node}",))
    _, name = jobs("echo started; sleep 600", compute)
    wait_for(lambda: compute.info(name).status is JobStatus.STARTED, 120, 0.5)
    cluster_command("node-down", node)
    try:
        wait_for(lambda: compute.info(name).status.is_terminal, 240, 2)
        info = compute.info(name)
        assert info.status is JobStatus.FINISHED_WITH_ERROR
        assert "NODE_FAIL" in info.message
    finally:
        cluster_command("node-up", node)
        wait_nodes_idle()


@pytest.mark.faults
def test_controller_down_is_503_material_and_recovers(jobs: Any, storebase: str) -> None:
    compute = make_compute(storebase)
    _, name = jobs("echo hi", compute)
    wait_for(lambda: compute.info(name).status.is_terminal, 120, 0.5)
    cluster_command("ctld-stop")
    try:
        compute.view.invalidate()
        with pytest.raises(BackendUnavailable, match="SLURM controller"):
            compute.ping()
        with pytest.raises(BackendUnavailable, match="SLURM controller"):
            compute.schedule(ContainerJob(name=unique("sl"), image=TEST_IMAGE, command=("true",), env=(),
                                          resources=Resources(1, 1000, 64, 0), mounts=()))  # fmt: skip
        assert [d for d in os.listdir(compute.root) if d != name] == []  # nothing half-submitted
    finally:
        cluster_command("ctld-start")
    wait_for(lambda: subprocess.run(["scontrol", "ping"], capture_output=True, timeout=30).returncode == 0, 60, 1)
    compute.ping()
    assert compute.info(name).status is JobStatus.FINISHED_SUCCESSFULLY
    wait_nodes_idle()
