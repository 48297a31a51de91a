"""Smoke test of the SLURM cluster itself (scripts/slurm-cluster.sh), not of pfcon: what the
SLURM adapter relies on. Two nodes take a burst of jobs at once, a job on node2 (its own network
namespace) runs a container through the shared Docker engine and writes into a shared directory,
and a finished job is forgotten by squeue/scontrol after MinJobAge."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from .conftest import TEST_IMAGE, _require

pytestmark = pytest.mark.slurm

CMD_TIMEOUT = 30  # s; a client command fails after ~4-8 s when slurmctld is down
NODES = {"node1", "node2"}


@pytest.fixture(scope="module")
def slurm_env() -> dict[str, str]:
    conf = os.environ.get("SLURM_CONF")
    if not conf:
        _require("a SLURM cluster", 'SLURM_CONF is not set (eval "$(bash scripts/slurm-cluster.sh env)")')
    if not shutil.which("sbatch"):
        _require("a SLURM cluster", "sbatch is not installed (bash scripts/slurm-cluster.sh start)")
    env = {**os.environ, "SLURM_CONF": conf}
    r = subprocess.run(
        ["sinfo", "-h", "-N", "-o", "%N %T"], env=env, capture_output=True, text=True, timeout=CMD_TIMEOUT
    )
    if r.returncode != 0:
        _require("a SLURM cluster", f"sinfo failed ({r.returncode}): {r.stderr.strip()}")
    states = dict(line.split() for line in r.stdout.splitlines())
    assert set(states) >= NODES, f"expected nodes {NODES}, sinfo says {states}"
    return env


def run(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=CMD_TIMEOUT)
    if check and r.returncode != 0:
        raise AssertionError(f"{args} exited {r.returncode}: {r.stderr.strip()}")
    return r


def sbatch(env: dict[str, str], *args: str) -> str:
    return run(env, "sbatch", "--parsable", *args).stdout.strip().split(";")[0]


def job_field(env: dict[str, str], job_id: str, field: str) -> str | None:
    """A field of `scontrol show job -o`, or None once slurmctld has forgotten the job."""
    r = run(env, "scontrol", "show", "job", "-o", job_id, check=False)
    if r.returncode != 0:
        assert "Invalid job id specified" in r.stderr, r.stderr
        return None
    for word in r.stdout.split():
        key, _, value = word.partition("=")
        if key == field:
            return value
    raise AssertionError(f"no {field} in {r.stdout!r}")


def wait_state(env: dict[str, str], job_id: str, states: set[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        state = job_field(env, job_id, "JobState")
        if state in states:
            return state
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} is {state} after {timeout}s, expected one of {states}")


@pytest.fixture
def shared_dir(tmp_path: Path) -> Path:
    d = tmp_path / "share"
    d.mkdir()
    d.chmod(0o777)
    return d


def test_a_burst_lands_on_both_nodes(slurm_env: dict[str, str], shared_dir: Path) -> None:
    name = f"burst-{uuid.uuid4().hex[:8]}"
    ids = [
        sbatch(
            slurm_env,
            "-J",
            name,
            "-c",
            "1",
            "-o",
            str(shared_dir / "%j.out"),
            "--wrap",
            'echo "$SLURMD_NODENAME"; sleep 5',
        )
        for _ in range(4)
    ]
    try:
        # All four run at once: 2 nodes x 2 CPUs, one CPU each (DefMemPerCPU keeps memory out of the way).
        deadline = time.monotonic() + 20
        running: dict[str, str] = {}
        while time.monotonic() < deadline and len(running) < 4:
            out = run(slurm_env, "squeue", "-h", "-n", name, "-t", "RUNNING", "-o", "%i %N").stdout
            running = dict(line.split() for line in out.splitlines())
            time.sleep(0.3)
        assert len(running) == 4, f"not all 4 jobs ran at once: {running}"
        assert set(running.values()) == NODES, running
        for job_id in ids:
            wait_state(slurm_env, job_id, {"COMPLETED"}, 30)
        written = {(shared_dir / f"{i}.out").read_text().strip() for i in ids}
        assert written == NODES
    finally:
        run(slurm_env, "scancel", "-n", name, check=False)


def test_a_job_on_node2_runs_a_container_into_a_shared_directory(slurm_env: dict[str, str], shared_dir: Path) -> None:
    if (
        not shutil.which("docker")
        or subprocess.run(["docker", "image", "inspect", TEST_IMAGE], capture_output=True).returncode
    ):
        _require(f"the test image {TEST_IMAGE}", "not in the Docker engine (bash scripts/test-images.sh)")
    out = shared_dir / "out"
    out.mkdir()
    out.chmod(0o777)
    name = f"pfcon-slurm-smoke-{uuid.uuid4().hex[:8]}"
    script = (
        f"docker run --rm --name {name} --network none -v {out}:/share/outgoing:rw {TEST_IMAGE} "
        "sh -c 'echo hello > /share/outgoing/result.txt; echo ran'"
    )
    job_id = sbatch(slurm_env, "-w", "node2", "-o", str(shared_dir / "job.out"), "--wrap", script)
    try:
        assert wait_state(slurm_env, job_id, {"COMPLETED", "FAILED", "CANCELLED", "NODE_FAIL"}, 60) == "COMPLETED", (
            shared_dir / "job.out"
        ).read_text()
        assert job_field(slurm_env, job_id, "NodeList") == "node2"
        assert (out / "result.txt").read_text() == "hello\n"
        assert "ran" in (shared_dir / "job.out").read_text()
    finally:
        run(slurm_env, "scancel", job_id, check=False)
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def test_a_finished_job_is_forgotten_after_min_job_age(slurm_env: dict[str, str]) -> None:
    min_age = int(
        next(
            line.split("=")[1]
            for line in run(slurm_env, "scontrol", "show", "config").stdout.splitlines()
            if line.split("=")[0].strip() == "MinJobAge"
        ).split()[0]
    )
    assert 0 < min_age <= 30, f"MinJobAge={min_age}: too long for tests (scripts/slurm-cluster.sh sets 10)"
    job_id = sbatch(slurm_env, "-o", "/dev/null", "--wrap", "true")
    assert wait_state(slurm_env, job_id, {"COMPLETED"}, 30) == "COMPLETED"
    # Still remembered just after the end: by scontrol, and by squeue only with -t all
    # (plain `squeue -j N` prints nothing, exit 0, for a job that has finished).
    assert run(slurm_env, "squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T").stdout.strip() == "COMPLETED"
    assert run(slurm_env, "squeue", "-h", "-j", job_id, "-o", "%T").stdout.strip() == ""
    ended = time.monotonic()
    # Purged by slurmctld's background loop some time after MinJobAge (measured: ~18 s for 10 s).
    deadline = ended + min_age + 90
    while job_field(slurm_env, job_id, "JobState") is not None:
        assert time.monotonic() < deadline, f"job {job_id} still known {min_age + 90}s after it ended"
        time.sleep(1)
    assert time.monotonic() - ended >= min_age - 2
    r = run(slurm_env, "squeue", "-h", "-t", "all", "-j", job_id, check=False)
    assert r.returncode == 1, r
    assert "Invalid job id specified" in r.stderr
    r = run(slurm_env, "scontrol", "show", "job", job_id, check=False)
    assert r.returncode == 1 and "Invalid job id specified" in r.stderr, r
