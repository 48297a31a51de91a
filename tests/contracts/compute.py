"""The compute-port contract: every compute adapter (fake or real) passes these tests.

A subclass provides three fixtures: ``compute`` (the adapter), ``driver`` (turns a
wanted behaviour into a command and lets the job reach its end) and ``image``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Protocol

import pytest

from pfcon.domain.errors import ImageNotAvailable, InvalidJobSpec, JobAlreadyExists, JobNotFound
from pfcon.domain.model import ContainerJob, JobStatus, Resources
from pfcon.domain.ports import ComputePort


class Driver(Protocol):
    def script(self, exit_code: int = 0, lines: tuple[str, ...] = (), sleep: int = 0) -> tuple[str, ...]: ...

    def settle(self, compute: Any, name: str, timeout: float = 60) -> None:
        """Return once the job has reached a terminal status."""

    def begin(self, compute: Any, name: str, timeout: float = 60) -> None:
        """Return once the job is running."""


def unique(prefix: str = "ct") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def wait_for(predicate: Any, timeout: float, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(interval)


class ComputeContract:
    def make_job(self, image: str, command: tuple[str, ...], name: str | None = None, **kw: Any) -> ContainerJob:
        return ContainerJob(
            name=name or unique(),
            image=image,
            command=command,
            env=kw.pop("env", ()),
            resources=kw.pop("resources", Resources(1, 500, 64, 0)),
            mounts=kw.pop("mounts", ()),
        )

    def test_is_a_compute_port(self, compute: Any) -> None:
        assert isinstance(compute, ComputePort)

    def test_schedule_reports_the_job_not_started(self, compute: Any, driver: Driver, image: str) -> None:
        job = self.make_job(image, driver.script(0, ("hello",)))
        info = compute.schedule(job)
        assert info.name == job.name
        assert info.image == image
        assert info.status is JobStatus.NOT_STARTED
        assert info.cmd.split()[0] == job.command[0]

    def test_successful_job_reports_success_and_logs(self, compute: Any, driver: Driver, image: str) -> None:
        job = self.make_job(image, driver.script(0, ("hello", "world")))
        compute.schedule(job)
        driver.settle(compute, job.name)
        state = compute.state(job.name, 1000)
        assert state.info.status is JobStatus.FINISHED_SUCCESSFULLY
        assert state.logs.splitlines() == ["hello", "world"]
        assert state.info.timestamp

    def test_failed_job_reports_error_and_is_stable(self, compute: Any, driver: Driver, image: str) -> None:
        job = self.make_job(image, driver.script(3, ("bad",)))
        compute.schedule(job)
        driver.settle(compute, job.name)
        first = compute.info(job.name)
        assert first.status is JobStatus.FINISHED_WITH_ERROR
        for _ in range(3):
            assert compute.info(job.name) == first

    def test_log_tail(self, compute: Any, driver: Driver, image: str) -> None:
        job = self.make_job(image, driver.script(0, ("a", "b", "c", "d")))
        compute.schedule(job)
        driver.settle(compute, job.name)
        assert compute.state(job.name, 2).logs.splitlines() == ["c", "d"]

    def test_duplicate_name_is_refused_and_first_job_untouched(self, compute: Any, driver: Driver, image: str) -> None:
        job = self.make_job(image, driver.script(0, ("first",)))
        compute.schedule(job)
        with pytest.raises(JobAlreadyExists):
            compute.schedule(self.make_job(image, driver.script(1, ("second",)), name=job.name))
        driver.settle(compute, job.name)
        state = compute.state(job.name, 100)
        assert state.info.status is JobStatus.FINISHED_SUCCESSFULLY
        assert state.logs.strip() == "first"

    def test_unknown_job_is_not_found(self, compute: Any) -> None:
        name = unique("missing")
        with pytest.raises(JobNotFound):
            compute.info(name)
        with pytest.raises(JobNotFound):
            compute.state(name, 10)
        with pytest.raises(JobNotFound):
            compute.remove(name)

    def test_remove_a_running_job(self, compute: Any, driver: Driver, image: str) -> None:
        job = self.make_job(image, driver.script(0, ("x",), sleep=60))
        compute.schedule(job)
        driver.begin(compute, job.name)
        assert compute.info(job.name).status is JobStatus.STARTED
        compute.remove(job.name)
        with pytest.raises(JobNotFound):
            compute.info(job.name)

    def test_check_refuses_several_workers(self, compute: Any, image: str) -> None:
        with pytest.raises(InvalidJobSpec, match="number_of_workers=1"):
            compute.check(image, Resources(2, 1000, 100, 0))

    def test_check_refuses_an_absent_image(self, compute: Any) -> None:
        with pytest.raises(ImageNotAvailable):
            compute.check("local/does-not-exist:404", Resources(1, 1000, 100, 0))
        with pytest.raises(ImageNotAvailable):
            compute.schedule(self.make_job("local/does-not-exist:404", ("true",)))
