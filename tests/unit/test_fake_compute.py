"""The fake compute passes the same contract as the real adapters."""

from __future__ import annotations

from typing import Any

import pytest

from pfcon.adapters.compute.fake import FakeCompute
from pfcon.domain.model import ComputeCapabilities

from ..contracts.compute import ComputeContract


class FakeDriver:
    """Plays the behaviour a script stands for, since the fake runs nothing."""

    def __init__(self) -> None:
        self.behaviours: dict[tuple[str, ...], tuple[int, tuple[str, ...]]] = {}

    def script(self, exit_code: int = 0, lines: tuple[str, ...] = (), sleep: int = 0) -> tuple[str, ...]:
        command = ("fake-run", str(exit_code), str(sleep), *lines)
        self.behaviours[command] = (exit_code, lines)
        return command

    def hog(self, mib: int) -> tuple[str, ...]:
        command = ("fake-hog", str(mib))
        self.behaviours[command] = (-1, ("Killed",))
        return command

    def settle(self, compute: FakeCompute, name: str, timeout: float = 60) -> None:
        job = compute.jobs[name].job
        exit_code, lines = self.behaviours[job.command]
        if exit_code == -1:  # a memory hog: killed past a hard limit, else it just ran
            killed = compute.capabilities.hard_memory_limit and job.resources.memory_limit < int(job.command[1])
            exit_code, lines = (137, lines) if killed else (0, ())
        compute.run(name)
        workers = job.resources.number_of_workers  # every worker prints the lines
        compute.jobs[name].logs = ""
        compute.finish(name, exit_code, "".join(f"{line}\n" for line in lines) * workers)

    def begin(self, compute: FakeCompute, name: str, timeout: float = 60) -> None:
        compute.run(name)  # a running script has printed its lines
        _, lines = self.behaviours.get(compute.jobs[name].job.command, (0, ()))
        compute.jobs[name].logs += "".join(f"{line}\n" for line in lines)


class TestFakeCompute(ComputeContract):
    @pytest.fixture
    def compute(self) -> Any:
        return FakeCompute(images={"local/fake:1"})

    @pytest.fixture
    def driver(self) -> FakeDriver:
        return FakeDriver()

    @pytest.fixture
    def image(self) -> str:
        return "local/fake:1"


class TestFakeComputeOtherCapabilities(TestFakeCompute):
    """The contract's capability-flagged tests, the other way round."""

    @pytest.fixture
    def compute(self) -> Any:
        caps = ComputeCapabilities(max_workers=4, hard_memory_limit=False)
        return FakeCompute(images={"local/fake:1"}, capabilities=caps)


def test_every_configurable_compute_backend_has_a_contract_run() -> None:
    """A compute backend added to the configuration must also get a contract run."""
    import tests.integration.test_engine_compute as engines
    import tests.integration.test_cromwell_compute as cromwell
    import tests.integration.test_kubernetes_compute as kubernetes
    import tests.integration.test_slurm_compute as slurm
    import tests.integration.test_swarm_compute as swarm
    from pfcon.config import CONTAINER_ENVS_BUILT

    runs = {
        "docker": engines.TestEngineCompute,
        "swarm": swarm.TestSwarmCompute,
        "kubernetes": kubernetes.TestKubernetesCompute,
        "slurm": slurm.TestSlurmCompute,
        "cromwell": cromwell.TestCromwellCompute,
    }
    assert set(CONTAINER_ENVS_BUILT) == set(runs)
    assert all(issubclass(run, ComputeContract) for run in runs.values())
