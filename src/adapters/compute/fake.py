"""An in-memory compute backend with controllable transitions, for tests and benchmarks."""

from __future__ import annotations

import shlex
import threading
from dataclasses import dataclass, field

from ...domain.errors import BackendUnavailable, ImageNotAvailable, InvalidJobSpec, JobAlreadyExists, JobNotFound
from ...domain.model import (
    CANCELLED_MESSAGE,
    INSTANCE_LABEL,
    JOB_TYPE_LABEL,
    ComputeCapabilities,
    ContainerJob,
    JobInfo,
    JobKind,
    JobState,
    JobStatus,
    JobSummary,
    Resources,
)


@dataclass
class FakeJob:
    job: ContainerJob
    status: JobStatus = JobStatus.NOT_STARTED
    message: str = "created"
    logs: str = ""
    timestamp: str = "0001-01-01T00:00:00Z"
    created: str = ""
    node: str = "fake-node"
    started: bool = True  # False: created, not started yet (create without start)


@dataclass
class FakeCompute:
    """Behaves like a scheduler that accepts one worker per job."""

    images: set[str] | None = None  # None: every image is available
    jobs: dict[str, FakeJob] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    fail_next_schedule: Exception | None = None
    fail_next_start: Exception | None = None  # raised by the next start (after its create)
    down: str | None = None  # set: every call raises BackendUnavailable(down)
    capabilities: ComputeCapabilities = field(default_factory=ComputeCapabilities)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._created = 0

    def check(self, image: str, resources: Resources) -> None:
        self._alive()
        why = self.capabilities.workers_problem(resources.number_of_workers)
        if why:
            raise InvalidJobSpec(why)
        if self.images is not None and image not in self.images:
            raise ImageNotAvailable(f"image: {image!r} is not present on the compute host")

    def schedule(self, job: ContainerJob) -> JobInfo:
        self.create(job)
        return self.start(job)

    def create(self, job: ContainerJob) -> None:
        """Created, not started (``TwoPhaseComputePort``); ``fail_next_schedule`` fails here."""
        self._alive()
        self.check(job.image, job.resources)
        with self._lock:
            if self.fail_next_schedule is not None:
                error, self.fail_next_schedule = self.fail_next_schedule, None
                raise error
            if job.name in self.jobs:
                raise JobAlreadyExists(job.name)
            self._created += 1
            self.jobs[job.name] = FakeJob(
                job, created=f"2026-01-01T00:00:{self._created % 60:02d}.{self._created:06d}Z", started=False
            )

    def start(self, job: ContainerJob) -> JobInfo:
        try:
            self._alive()
            with self._lock:
                if self.fail_next_start is not None:
                    error, self.fail_next_start = self.fail_next_start, None
                    raise error
                self._get(job.name).started = True
        except BaseException:
            with self._lock:
                self.jobs.pop(job.name, None)  # on error nothing of the job is left
            raise
        return self.info(job.name)

    def _get(self, name: str) -> FakeJob:
        self._alive()
        try:
            return self.jobs[name]
        except KeyError:
            raise JobNotFound(name, f"No such container: {name}") from None

    def info(self, name: str) -> JobInfo:
        fake = self._get(name)
        return JobInfo(
            name=name,
            image=fake.job.image,
            cmd=shlex.join(fake.job.command),
            status=fake.status,
            message=fake.message,
            timestamp=fake.timestamp,
        )

    def state(self, name: str, log_tail: int) -> JobState:
        info = self.info(name)
        lines = self.jobs[name].logs.splitlines(keepends=True)
        return JobState(info, "".join(lines[-log_tail:]) if log_tail else "")

    def remove(self, name: str) -> None:
        with self._lock:
            self._get(name)
            del self.jobs[name]
            self.removed.append(name)

    def ping(self) -> None:
        self._alive()

    def known_state(self, name: str, log_tail: int) -> JobState | None:
        """A finished job's state (nothing changes it any more), else None."""
        fake = self.jobs.get(name)
        if fake is None or self.down or not fake.status.is_terminal:
            return None
        return self.state(name, log_tail)

    def list_jobs(self, instance: str) -> list[JobSummary]:
        self._alive()
        with self._lock:
            fakes = [
                f
                for f in self.jobs.values()
                if JOB_TYPE_LABEL in f.job.labels and f.job.labels.get(INSTANCE_LABEL) == instance
            ]
        fakes.sort(key=lambda f: f.created, reverse=True)
        return [
            JobSummary(
                name=f.job.name,
                kind=JobKind(f.job.labels[JOB_TYPE_LABEL]),
                image=f.job.image,
                status=f.status,
                message=f.message,
                created=f.created,
                resources=f.job.resources,
                node=f.node,
            )
            for f in fakes
        ]

    def cancel(self, name: str) -> JobInfo:
        fake = self._get(name)
        if not fake.status.is_terminal:
            fake.status, fake.message = JobStatus.FINISHED_WITH_ERROR, CANCELLED_MESSAGE
        return self.info(name)

    def _alive(self) -> None:
        if self.down:
            raise BackendUnavailable(self.down)

    # Test controls -----------------------------------------------------
    def run(self, name: str) -> None:
        """The job is running now."""
        fake = self._get(name)
        fake.status, fake.message = JobStatus.STARTED, "running"

    def finish(self, name: str, exit_code: int = 0, logs: str = "") -> None:
        fake = self._get(name)
        fake.status = JobStatus.FINISHED_SUCCESSFULLY if exit_code == 0 else JobStatus.FINISHED_WITH_ERROR
        fake.message = "exited"
        fake.logs += logs
        fake.timestamp = "2026-01-01T00:00:00.000000000Z"
