"""The fake compute passes the same contract as the real adapters."""

from __future__ import annotations

from typing import Any

import pytest

from pfcon.adapters.compute.fake import FakeCompute

from ..contracts.compute import ComputeContract


class FakeDriver:
    """Plays the behaviour a script stands for, since the fake runs nothing."""

    def __init__(self) -> None:
        self.behaviours: dict[tuple[str, ...], tuple[int, tuple[str, ...]]] = {}

    def script(self, exit_code: int = 0, lines: tuple[str, ...] = (), sleep: int = 0) -> tuple[str, ...]:
        command = ("fake-run", str(exit_code), str(sleep), *lines)
        self.behaviours[command] = (exit_code, lines)
        return command

    def settle(self, compute: FakeCompute, name: str, timeout: float = 60) -> None:
        exit_code, lines = self.behaviours[compute.jobs[name].job.command]
        compute.start(name)
        compute.finish(name, exit_code, "".join(f"{line}\n" for line in lines))

    def begin(self, compute: FakeCompute, name: str, timeout: float = 60) -> None:
        compute.start(name)


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


def test_every_configurable_compute_backend_has_a_contract_run() -> None:
    """A compute backend added to the configuration must also get a contract run."""
    import tests.integration.test_engine_compute as engines
    from pfcon.config import CONTAINER_ENVS_BUILT

    runs = {"docker": engines.TestEngineCompute}
    assert set(CONTAINER_ENVS_BUILT) == set(runs)
    assert issubclass(runs["docker"], ComputeContract)
