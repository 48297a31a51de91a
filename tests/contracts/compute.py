"""The compute-port contract: every compute adapter (fake or real) passes these tests.

A subclass provides three fixtures: ``compute`` (the adapter), ``driver`` (turns a
wanted behaviour into a command and lets the job reach its end) and ``image``.

The core holds for every scheduler. What varies between schedulers is declared by the
adapter in ``compute.capabilities`` (several workers per job, the image checked at
submit, names made unique by the scheduler, a hard memory limit) and each such test
checks the behaviour that matches the declaration — both ways, so a scheduler cannot
claim what it does not do, nor do what it does not claim.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Protocol

import pytest

from pfcon.domain.errors import ImageNotAvailable, InvalidJobSpec, JobAlreadyExists, JobNotFound
from pfcon.domain.model import (
    CANCELLED_MESSAGE,
    INSTANCE_LABEL,
    JOB_TYPE_LABEL,
    ContainerJob,
    JobKind,
    JobStatus,
    Resources,
)
from pfcon.domain.ports import ComputePort, KnownStatePort, TwoPhaseComputePort


class Driver(Protocol):
    def script(self, exit_code: int = 0, lines: tuple[str, ...] = (), sleep: int = 0) -> tuple[str, ...]: ...

    def hog(self, mib: int) -> tuple[str, ...]:
        """A command that tries to hold ``mib`` MiB of memory, then exits 0."""

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
            # a job carries the label the domain puts on every job (its kind)
            labels=kw.pop("labels", {JOB_TYPE_LABEL: JobKind.PLUGIN.value}),
        )

    def labelled(self, instance: str, kind: JobKind = JobKind.PLUGIN) -> dict[str, str]:
        """The labels the domain puts on every job of a server instance."""
        return {JOB_TYPE_LABEL: kind.value, INSTANCE_LABEL: instance}

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
        if not compute.capabilities.unique_names:
            pytest.skip("capability not declared: the domain's key-<jid> claim makes names unique")
        job = self.make_job(image, driver.script(0, ("first",)))
        compute.schedule(job)
        with pytest.raises(JobAlreadyExists):
            compute.schedule(self.make_job(image, driver.script(1, ("second",)), name=job.name))
        driver.settle(compute, job.name)
        state = compute.state(job.name, 100)
        assert state.info.status is JobStatus.FINISHED_SUCCESSFULLY
        assert state.logs.strip() == "first"

    # -- create, then start (TwoPhaseComputePort, ADR 23) ------------------------------------
    def _two_phase(self, compute: Any) -> None:
        if not isinstance(compute, TwoPhaseComputePort):
            pytest.skip("not a two-phase scheduler: schedule only")

    def test_a_created_job_runs_only_once_started(self, compute: Any, driver: Driver, image: str) -> None:
        self._two_phase(compute)
        job = self.make_job(image, driver.script(0, ("hello",)))
        assert compute.create(job) is None
        created = compute.state(job.name, 100)
        assert created.info.status is JobStatus.NOT_STARTED and created.logs == ""
        info = compute.start(job)
        assert info.name == job.name and info.status is JobStatus.NOT_STARTED
        driver.settle(compute, job.name)
        state = compute.state(job.name, 100)
        assert state.info.status is JobStatus.FINISHED_SUCCESSFULLY
        assert state.logs.strip() == "hello"
        compute.remove(job.name)  # (the fixtures remove what schedule made)

    def test_a_created_job_can_be_removed_unstarted(self, compute: Any, driver: Driver, image: str) -> None:
        self._two_phase(compute)
        job = self.make_job(image, driver.script(0, ("never",)))
        compute.create(job)
        compute.remove(job.name)
        with pytest.raises(JobNotFound):
            compute.info(job.name)

    def test_create_under_a_taken_name_is_refused(self, compute: Any, driver: Driver, image: str) -> None:
        self._two_phase(compute)
        job = self.make_job(image, driver.script(0, ("first",)))
        compute.schedule(job)
        with pytest.raises(JobAlreadyExists):
            compute.create(self.make_job(image, driver.script(1, ("second",)), name=job.name))
        driver.settle(compute, job.name)
        assert compute.state(job.name, 100).logs.strip() == "first"

    def test_known_state_agrees_with_state(self, compute: Any, driver: Driver, image: str) -> None:
        """An adapter that answers from memory (KnownStatePort) never says what ``state``
        would not: nothing for an unknown job, at most the final state of a finished one."""
        if not isinstance(compute, KnownStatePort):
            pytest.skip("the adapter answers every status from the scheduler")
        assert compute.known_state(unique("missing"), 100) is None
        job = self.make_job(image, driver.script(0, ("x",), sleep=60))
        compute.schedule(job)
        driver.begin(compute, job.name)
        assert compute.known_state(job.name, 100) is None  # running: its logs still grow
        done = self.make_job(image, driver.script(0, ("a", "b")))
        compute.schedule(done)
        driver.settle(compute, done.name)
        compute.state(done.name, 100)  # (a view keeps the final state a status read)
        for tail in (100, 1):
            assert compute.known_state(done.name, tail) in (None, compute.state(done.name, tail))

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

    # -- the operator's view: listing and cancel (issue 12) --------------------------

    def test_list_jobs_shows_this_instances_jobs_only(self, compute: Any, driver: Driver, image: str) -> None:
        instance, other = unique("inst"), unique("inst")
        resources = Resources(1, 500, 64, 0)
        mine = self.make_job(image, driver.script(0, ("a",)), labels=self.labelled(instance), resources=resources)
        op = self.make_job(
            image, driver.script(0, ("b",)), name=f"{unique()}-copy", labels=self.labelled(instance, JobKind.COPY)
        )
        theirs = self.make_job(image, driver.script(0, ("c",)), labels=self.labelled(other))
        unlabelled = self.make_job(image, driver.script(0, ("d",)))
        for job in (mine, op, theirs, unlabelled):
            compute.schedule(job)
        driver.settle(compute, mine.name)
        listed = {s.name: s for s in compute.list_jobs(instance)}
        assert set(listed) == {mine.name, op.name}
        summary = listed[mine.name]
        assert summary.kind is JobKind.PLUGIN and summary.jid == mine.name
        assert listed[op.name].kind is JobKind.COPY and listed[op.name].jid == op.name.removesuffix("-copy")
        assert summary.image == image
        assert summary.status is JobStatus.FINISHED_SUCCESSFULLY
        assert summary.created  # ISO 8601
        assert summary.resources in (None, resources)
        assert [s.name for s in compute.list_jobs(other)] == [theirs.name]
        assert compute.list_jobs(unique("inst")) == []

    def test_list_jobs_is_newest_first(self, compute: Any, driver: Driver, image: str) -> None:
        instance = unique("inst")
        names = []
        for _ in range(3):
            job = self.make_job(image, driver.script(0, ()), labels=self.labelled(instance))
            compute.schedule(job)
            names.append(job.name)
        listed = compute.list_jobs(instance)
        assert {s.name for s in listed} == set(names)
        created = [s.created for s in listed]
        assert created == sorted(created, reverse=True)

    def test_cancel_stops_a_running_job_and_keeps_it(self, compute: Any, driver: Driver, image: str) -> None:
        instance = unique("inst")
        job = self.make_job(image, driver.script(0, ("before-cancel",), sleep=600), labels=self.labelled(instance))
        compute.schedule(job)
        driver.begin(compute, job.name)
        wait_for(lambda: "before-cancel" in compute.state(job.name, 100).logs, 60, 0.2)
        info = compute.cancel(job.name)
        assert info.status is JobStatus.FINISHED_WITH_ERROR
        assert info.message == CANCELLED_MESSAGE
        for _ in range(3):  # stable: the stop's own exit status never shows through
            state = compute.state(job.name, 100)
            assert (state.info.status, state.info.message) == (JobStatus.FINISHED_WITH_ERROR, CANCELLED_MESSAGE)
        assert "before-cancel" in state.logs  # its logs stay
        if isinstance(compute, KnownStatePort):  # what it answers from memory says so too
            assert compute.known_state(job.name, 100) in (None, state)
        [summary] = compute.list_jobs(instance)
        assert (summary.status, summary.message) == (JobStatus.FINISHED_WITH_ERROR, CANCELLED_MESSAGE)
        compute.remove(job.name)  # DELETE still removes it
        with pytest.raises(JobNotFound):
            compute.info(job.name)

    def test_cancel_leaves_a_finished_job_as_it_is(self, compute: Any, driver: Driver, image: str) -> None:
        job = self.make_job(image, driver.script(0, ("done",)), labels=self.labelled(unique("inst")))
        compute.schedule(job)
        driver.settle(compute, job.name)
        before = compute.info(job.name)
        assert compute.cancel(job.name) == before
        assert compute.info(job.name) == before

    def test_cancel_an_unknown_job_is_not_found(self, compute: Any) -> None:
        with pytest.raises(JobNotFound):
            compute.cancel(unique("missing"))

    # -- capability-flagged -------------------------------------------------------

    def test_workers_beyond_the_capability_are_refused(self, compute: Any, image: str) -> None:
        n = compute.capabilities.max_workers + 1
        with pytest.raises(InvalidJobSpec, match="number_of_workers"):
            compute.check(image, Resources(n, 1000, 100, 0))
        with pytest.raises(InvalidJobSpec, match="number_of_workers"):
            compute.schedule(self.make_job(image, ("true",), resources=Resources(n, 500, 64, 0)))

    def test_several_workers_run_when_declared(self, compute: Any, driver: Driver, image: str) -> None:
        if compute.capabilities.max_workers < 2:
            pytest.skip("capability not declared: one worker per job")
        job = self.make_job(image, driver.script(0, ("worker",)), resources=Resources(2, 250, 64, 0))
        compute.schedule(job)
        driver.settle(compute, job.name)
        state = compute.state(job.name, 100)
        assert state.info.status is JobStatus.FINISHED_SUCCESSFULLY
        assert state.logs.split().count("worker") == 2  # every worker's output

    def test_an_absent_image(self, compute: Any, driver: Driver) -> None:
        absent = "local/does-not-exist:404"
        if compute.capabilities.checks_image_at_submit:
            with pytest.raises(ImageNotAvailable):
                compute.check(absent, Resources(1, 1000, 100, 0))
            with pytest.raises(ImageNotAvailable):
                compute.schedule(self.make_job(absent, ("true",)))
            return
        compute.check(absent, Resources(1, 1000, 100, 0))  # cannot know: the nodes pull
        job = self.make_job(absent, ("true",))
        compute.schedule(job)
        wait_for(lambda: "image" in compute.info(job.name).message.lower(), 60, 0.5)
        assert compute.info(job.name).status is not JobStatus.FINISHED_SUCCESSFULLY

    def test_memory_limit(self, compute: Any, driver: Driver, image: str) -> None:
        job = self.make_job(image, driver.hog(200), resources=Resources(1, 1000, 32, 0))
        compute.schedule(job)
        driver.settle(compute, job.name)
        status = compute.info(job.name).status
        if compute.capabilities.hard_memory_limit:
            assert status is JobStatus.FINISHED_WITH_ERROR
        else:
            assert status is JobStatus.FINISHED_SUCCESSFULLY
