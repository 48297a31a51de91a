"""The Docker adapter's event-fed status view on a real engine (docs/adr/0018-docker-status-view.md):
the compute contract with the view on, what a status costs (a finished job nothing, a running
one its logs), invalidation, and statuses that never go back across the exit of many short jobs
polled as fast as possible."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from pfcon.adapters.compute.docker import DockerCompute, DockerOptions
from pfcon.domain.errors import JobNotFound
from pfcon.domain.model import JOB_TYPE_LABEL, ContainerJob, JobStatus, Resources

from ..contracts.compute import ComputeContract, unique, wait_for
from .conftest import TEST_IMAGE
from .test_engine_compute import EngineDriver

pytestmark = pytest.mark.docker


class Counting:
    """The SDK's low-level client, counting the calls status requests make."""

    def __init__(self, api: Any) -> None:
        self._api = api
        self.counts: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._api, name)
        if not callable(attr) or name in ("events", "containers"):  # the view's own calls
            return attr

        def call(*args: Any, **kw: Any) -> Any:
            self.counts[name] = self.counts[name] + 1
            return attr(*args, **kw)

        return call


@pytest.fixture
def storebase(tmp_path: Any) -> str:
    path = tmp_path / "storeBase"
    path.mkdir()
    return str(path)


@pytest.fixture
def viewed(engine: Any, storebase: str) -> Iterator[DockerCompute]:
    """An adapter with its view on (as the server builds it); removes what it scheduled and
    checks that nothing of it is left (only its own names: the engine may be shared)."""
    compute = DockerCompute(
        engine, DockerOptions(storebase=storebase, status_view=True, state_dir=f"{storebase}/.pfcon-docker")
    )
    counting = Counting(compute.api)
    compute.api = counting  # type: ignore[assignment]
    assert compute.view is not None and compute.view.wait_current(10), compute.view and compute.view.error()
    created: list[str] = []
    original = compute.schedule

    def schedule(job: ContainerJob) -> Any:
        created.append(job.name)
        # as the domain does: every job carries its type, which the view's filter selects
        return original(ContainerJob(**{**_fields(job), "labels": {JOB_TYPE_LABEL: "plugin", **job.labels}}))

    compute.schedule = schedule  # type: ignore[method-assign]
    yield compute
    for name in created:
        try:
            compute.remove(name)
        except Exception:  # noqa: BLE001
            pass
    compute.close()
    left = {c.name for c in engine.containers.list(all=True)} & set(created)
    assert not left, f"stray containers: {left}"


def _fields(job: ContainerJob) -> dict[str, Any]:
    return {f: getattr(job, f) for f in job.__dataclass_fields__}


def _final(compute: DockerCompute, name: str) -> bool:
    record = compute.view.get(name) if compute.view is not None else None
    return record is not None and record.final is not None


def _counts(compute: DockerCompute) -> Counter[str]:
    return compute.api.counts  # type: ignore[attr-defined,no-any-return]


class TestComputeWithTheView(ComputeContract):
    @pytest.fixture
    def compute(self, viewed: DockerCompute) -> DockerCompute:
        return viewed

    @pytest.fixture
    def driver(self) -> EngineDriver:
        return EngineDriver()

    @pytest.fixture
    def image(self) -> str:
        return TEST_IMAGE


def _job(command: str, name: str | None = None) -> ContainerJob:
    return ContainerJob(
        name=name or unique("vw"), image=TEST_IMAGE, command=("sh", "-c", command), env=(),
        resources=Resources(1, 500, 64, 0), mounts=(),
    )  # fmt: skip


def test_a_finished_job_costs_no_engine_request(viewed: DockerCompute) -> None:
    job = _job("echo a; echo b; echo c; exit 3")
    viewed.schedule(job)
    # until its final is kept (Podman first shows a transient "stopped", not kept)
    wait_for(lambda: viewed.state(job.name, 2).info.status.is_terminal and _final(viewed, job.name), 60)
    first = viewed.state(job.name, 2)
    assert first.info.status is JobStatus.FINISHED_WITH_ERROR and first.logs == "b\nc\n"
    before = Counter(_counts(viewed))
    for _ in range(50):
        assert viewed.state(job.name, 2) == first
        assert viewed.info(job.name) == first.info
    assert viewed.state(job.name, 1).logs == "c\n"
    assert _counts(viewed) == before
    assert viewed.state(job.name, 10).logs == "a\nb\nc\n"  # a longer tail is read again
    assert _counts(viewed)["logs"] == before["logs"] + 1


def test_a_running_job_costs_its_logs_only(viewed: DockerCompute) -> None:
    job = _job("echo started; sleep 30")
    viewed.schedule(job)
    EngineDriver().begin(viewed, job.name)
    wait_for(lambda: "started" in viewed.state(job.name, 10).logs, 30)
    before = Counter(_counts(viewed))
    for _ in range(20):
        state = viewed.state(job.name, 10)
        assert state.info.status is JobStatus.STARTED and state.logs == "started\n"
    spent = _counts(viewed) - before
    assert spent == Counter(logs=20), spent


def test_removal_by_someone_else_and_a_recreated_name(viewed: DockerCompute, engine: Any) -> None:
    job = _job("echo first")
    viewed.schedule(job)
    EngineDriver().settle(viewed, job.name)
    assert viewed.state(job.name, 10).logs == "first\n"
    assert viewed.state(job.name, 10).info.status is JobStatus.FINISHED_SUCCESSFULLY  # from memory now
    engine.api.remove_container(job.name, force=True)  # not through the adapter: the destroy event tells
    wait_for(lambda: viewed.view is not None and viewed.view.get(job.name) is None, 10)
    with pytest.raises(JobNotFound):
        viewed.state(job.name, 10)
    viewed.schedule(_job("echo second; exit 4", name=job.name))
    EngineDriver().settle(viewed, job.name)
    state = viewed.state(job.name, 10)
    assert (state.info.status, state.logs) == (JobStatus.FINISHED_WITH_ERROR, "second\n")
    viewed.remove(job.name)
    with pytest.raises(JobNotFound):
        viewed.state(job.name, 10)  # at once, whatever the event stream's lag


RANK = {
    JobStatus.NOT_STARTED: 0,
    JobStatus.STARTED: 1,
    JobStatus.FINISHED_SUCCESSFULLY: 2,
    JobStatus.FINISHED_WITH_ERROR: 2,
}


def test_statuses_never_go_back_across_the_exit_of_many_short_jobs(viewed: DockerCompute) -> None:
    """Poll each of many short jobs as fast as possible, each in its own thread, from its
    submission to well after its exit: the sequence of statuses only goes forward
    (notstarted → started → finished), the final status never changes, and the engine
    reached every status shown (a success shows exit 0, a failure its own code)."""
    count = 24
    jobs = [_job(f"sleep 0.{i % 5}; exit {i % 3}") for i in range(count)]
    sequences: dict[str, list[JobStatus]] = {job.name: [] for job in jobs}
    errors: list[str] = []
    go = threading.Event()

    def poll(job: ContainerJob) -> None:
        go.wait()
        seq = sequences[job.name]
        finished_at = None
        while True:
            try:
                seq.append(viewed.state(job.name, 5).info.status)
            except Exception as e:  # noqa: BLE001
                errors.append(f"{job.name}: {e!r}")
                return
            if seq[-1].is_terminal and finished_at is None:
                finished_at = time.monotonic()
            if finished_at is not None and time.monotonic() - finished_at > 0.5:
                return

    threads = [threading.Thread(target=poll, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for job in jobs:
        viewed.schedule(job)
    go.set()
    for t in threads:
        t.join(120)
    assert errors == []
    for i, job in enumerate(jobs):
        seq = sequences[job.name]
        ranks = [RANK[s] for s in seq]
        assert ranks == sorted(ranks), (job.name, seq)
        expected = JobStatus.FINISHED_SUCCESSFULLY if i % 3 == 0 else JobStatus.FINISHED_WITH_ERROR
        assert seq[-1] is expected and set(seq[ranks.index(2) :]) == {expected}, (job.name, seq)
    polls = sum(len(s) for s in sequences.values())
    assert polls > 10 * count
