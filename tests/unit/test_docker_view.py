"""The Docker adapter's event-fed view (docs/adr/0018-docker-status-view.md), with scripted
events and a fake engine: phases only move forward per container id, whatever the order
or repetition of events; a recreated name gets a new record; lists resync; the adapter
answers finished jobs from memory and running ones with the logs call only."""

from __future__ import annotations

import queue
import random
import threading
import time
import types
from typing import Any

import pytest
import requests.exceptions
from hypothesis import given, settings
from hypothesis import strategies as st

from pfcon.adapters.compute.docker import DockerCompute, DockerOptions, job_info_from_inspect
from pfcon.adapters.compute.docker_view import CREATED, EXITED, RUNNING, ContainerView, Final, Record
from pfcon.domain.errors import BackendUnavailable, JobNotFound
from pfcon.domain.model import JOB_TYPE_LABEL, ContainerJob, JobInfo, JobStatus, Resources

SELECTOR = (JOB_TYPE_LABEL,)
LABELS = {JOB_TYPE_LABEL: "plugin"}


def ev(action: str, cid: str, name: str = "j1", **attrs: str) -> dict[str, Any]:
    return {
        "Type": "container", "Action": action, "status": action, "id": cid,
        "Actor": {"ID": cid, "Attributes": {"name": name, **LABELS, **attrs}},
    }  # fmt: skip


def listed(cid: str, name: str, state: str) -> dict[str, Any]:
    return {"Id": cid, "Names": [f"/{name}"], "State": state, "Labels": LABELS}


def current_view(**kw: Any) -> ContainerView:
    view = ContainerView(types.SimpleNamespace(), SELECTOR, **kw)  # type: ignore[arg-type]
    view._resync([])
    return view


def phase(view: ContainerView, name: str = "j1") -> tuple[str, int] | None:
    record = view.get(name)
    return None if record is None else (record.id, record.phase)


# -- phases per container id -----------------------------------------------------------------------


def test_lifecycle_of_one_container() -> None:
    view = current_view()
    view.apply(ev("create", "a"))
    assert phase(view) == ("a", CREATED)
    view.apply(ev("start", "a"))
    assert phase(view) == ("a", RUNNING)
    view.apply(ev("die", "a", exitCode="0"))
    assert phase(view) == ("a", EXITED)
    view.apply(ev("destroy", "a"))
    assert phase(view) is None


def test_a_died_container_is_never_running_again() -> None:
    view = current_view()
    for action in ("create", "start", "die", "start", "create", "start", "die", "kill", "oom", "start"):
        view.apply(ev(action, "a"))
    assert phase(view) == ("a", EXITED)


def test_out_of_order_and_duplicate_events() -> None:
    view = current_view()
    view.apply(ev("die", "a"))  # its start was missed (or comes late)
    view.apply(ev("start", "a"))
    view.apply(ev("create", "a"))
    view.apply(ev("die", "a"))
    assert phase(view) == ("a", EXITED)


def test_podman_event_names() -> None:
    view = current_view()
    view.apply(ev("start", "a"))
    view.apply(ev("died", "a", containerExitCode="3"))
    assert phase(view) == ("a", EXITED)
    view.apply(ev("remove", "a"))
    assert phase(view) is None


def test_a_container_recreated_under_the_same_name() -> None:
    view = current_view()
    for e in (ev("create", "a"), ev("start", "a"), ev("die", "a"), ev("destroy", "a"), ev("create", "b")):
        view.apply(e)
    assert phase(view) == ("b", CREATED)
    view.apply(ev("start", "b"))
    # late or replayed events of the destroyed container change nothing
    for action in ("create", "start", "die", "destroy"):
        view.apply(ev(action, "a"))
    assert phase(view) == ("b", RUNNING)


def test_a_recreated_name_whose_destroy_was_missed() -> None:
    view = current_view()
    view.apply(ev("start", "a"))
    view.apply(ev("die", "a"))
    assert view.keep_final("j1", "a", Final(_info(JobStatus.FINISHED_SUCCESSFULLY), 10, "old\n"))
    view.apply(ev("create", "b"))  # a new container of that name: the old one's final is gone
    record = view.get("j1")
    assert record is not None and (record.id, record.phase, record.final) == ("b", CREATED, None)
    view.apply(ev("die", "a"))  # a late die of the older container is not the new one's
    assert phase(view) == ("b", CREATED)


def test_rename_drops_the_record() -> None:
    view = current_view()
    view.apply(ev("start", "a"))
    view.apply(ev("rename", "a", name="other", oldName="/j1"))
    assert phase(view) is None


def test_the_engine_filters_on_key_value_labels_only() -> None:
    view = ContainerView(EngineEvents(), (JOB_TYPE_LABEL, "team=fnndsc"))  # type: ignore[arg-type]
    assert view._label_filter() == {"label": ["team=fnndsc"]}
    view._resync(
        [
            listed("a", "j1", "running"),
            {**listed("b", "j2", "running"), "Labels": {JOB_TYPE_LABEL: "x", "team": "fnndsc"}},
        ]
    )
    assert phase(view) is None and phase(view, "j2") == ("b", RUNNING)


def test_events_of_other_kinds_or_without_a_name_are_ignored() -> None:
    view = current_view()
    other = ev("start", "z", name="j9")
    other["Actor"]["Attributes"].pop(JOB_TYPE_LABEL)
    view.apply(other)  # not this adapter's container
    view.apply({"Type": "network", "Action": "connect", "Actor": {"ID": "n", "Attributes": {"name": "j1"}}})
    view.apply({"Type": "container", "Action": "start", "Actor": {"ID": "a", "Attributes": {}}})
    view.apply(ev("exec_start: sh -c true", "a"))
    assert len(view) == 0


ACTIONS = ("create", "start", "die", "kill", "oom", "destroy", "pause", "unpause", "restart")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(ACTIONS), st.sampled_from("abc")), max_size=40))
def test_phases_never_go_back_for_an_id(events: list[tuple[str, str]]) -> None:
    view = current_view()
    seen: dict[str, int] = {}  # id -> highest phase shown
    destroyed: set[str] = set()
    for action, cid in events:
        view.apply(ev(action, cid))
        if action == "destroy":
            destroyed.add(cid)
        shown = phase(view)
        if shown is not None:
            sid, p = shown
            assert sid not in destroyed
            assert p >= seen.get(sid, 0), (events, sid)
            seen[sid] = p


# -- lists (connect, reconnect, periodic resync) ----------------------------------------------------


def test_resync_drops_what_was_destroyed_while_disconnected_and_never_undoes_an_exit() -> None:
    view = current_view()
    view.apply(ev("start", "a", name="j1"))
    view.apply(ev("die", "a", name="j1"))
    view.apply(ev("start", "b", name="j2"))
    view.apply(ev("start", "c", name="j3"))
    view._resync([listed("a", "j1", "running"), listed("c", "j3", "exited"), listed("d", "j4", "created")])
    assert phase(view, "j1") == ("a", EXITED)  # a list taken before the die: still exited
    assert phase(view, "j2") is None  # destroyed while no stream was open
    assert phase(view, "j3") == ("c", EXITED)  # its die was dropped: the list repairs it
    assert phase(view, "j4") == ("d", CREATED)


def test_resync_ignores_destroyed_ids_and_replaces_a_recreated_name() -> None:
    view = current_view()
    view.apply(ev("start", "a"))
    view.apply(ev("destroy", "a"))
    view._resync([listed("a", "j1", "running")])  # a list a moment older than the destroy
    assert phase(view) is None
    view.apply(ev("start", "b"))
    view._resync([listed("c", "j1", "running")])
    assert phase(view) == ("c", RUNNING)


def test_resync_keeps_what_requests_learned_after_the_list_began() -> None:
    view = current_view()
    started = view._counter  # the list is asked for
    attrs = _attrs("e", "running")
    view.observe("j1", attrs, job_info_from_inspect("j1", attrs))  # meanwhile a request inspects a new container
    view._resync([], started)  # the list, taken before that container existed
    assert phase(view) == ("e", RUNNING)


# -- observations of requests (inspects) ---------------------------------------------------------


def _attrs(cid: str, status: str, exit_code: int = 0, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "Id": cid,
        "Config": {"Image": "img", "Cmd": ["true"], "Labels": LABELS if labels is None else labels},
        "State": {
            "Status": status, "Running": status == "running", "Paused": False, "OOMKilled": False, "Dead": False,
            "ExitCode": exit_code, "StartedAt": "2024-01-01T00:00:00Z",
            "FinishedAt": "2024-01-01T00:00:05Z" if status == "exited" else "0001-01-01T00:00:00Z",
        },
    }  # fmt: skip


def _info(status: JobStatus) -> JobInfo:
    return JobInfo("j1", "img", "true", status, "exited", "2024-01-01T00:00:05Z")


def test_observe_inserts_only_this_adapters_containers() -> None:
    view = current_view()
    attrs = _attrs("a", "running", labels={"other": "x"})
    assert view.observe("j1", attrs, job_info_from_inspect("j1", attrs)) is None
    attrs = _attrs("a", "running")
    record = view.observe("j1", attrs, job_info_from_inspect("j1", attrs))
    assert record is not None and record.phase == RUNNING and record.running is not None


def test_observe_of_a_stale_view_only_moves_phases_forward() -> None:
    view = current_view()
    view.apply(ev("start", "a"))
    view._current = False
    attrs = _attrs("a", "exited")
    assert view.observe("j1", attrs, job_info_from_inspect("j1", attrs)) is None
    attrs = _attrs("b", "running")
    view.observe("j2", attrs, job_info_from_inspect("j2", attrs))
    view._resync([listed("a", "j1", "running"), listed("b", "j2", "running")])  # a list older than the inspect
    assert phase(view) == ("a", EXITED)
    record = view.get("j2")
    assert record is not None and record.running is None  # nothing learned while stale


def test_a_stale_view_answers_nothing() -> None:
    view = current_view()
    view.apply(ev("start", "a"))
    view._mark_stale(RuntimeError("engine gone"))
    assert view.get("j1") is None and not view.current() and "engine gone" in view.error()


def test_records_are_bounded_and_logs_within_a_budget() -> None:
    view = current_view(max_records=3, max_log_bytes=10)
    for i in range(5):
        view.apply(ev("die", f"c{i}", name=f"j{i}"))
    assert len(view) == 3 and view.get("j0") is None and view.get("j4") is not None
    assert view.keep_final("j2", "c2", Final(_info(JobStatus.FINISHED_SUCCESSFULLY), 5, "123456"))
    assert view.keep_final("j3", "c3", Final(_info(JobStatus.FINISHED_SUCCESSFULLY), 5, "abcdef"))
    kept = {n: view.get(n) for n in ("j2", "j3")}
    assert kept["j2"] is not None and kept["j2"].final is None  # the least recently used tail went
    assert kept["j3"] is not None and kept["j3"].final is not None
    assert view._log_bytes == 6


def test_keep_final_needs_the_same_exited_container() -> None:
    view = current_view()
    view.apply(ev("start", "a"))
    final = Final(_info(JobStatus.FINISHED_SUCCESSFULLY), 5, "x\n")
    assert not view.keep_final("j1", "a", final)  # not exited in the view
    view.apply(ev("die", "a"))
    assert not view.keep_final("j1", "b", final)
    view.forget("j1")
    assert not view.keep_final("j1", "a", final)


@pytest.mark.parametrize(
    ("tail", "expected"), [(3, "a\nb\nc\n"), (2, "b\nc\n"), (1, "c\n"), (0, ""), (4, None)]
)  # fmt: skip
def test_final_logs_for_a_tail(tail: int, expected: str | None) -> None:
    assert Final(_info(JobStatus.FINISHED_SUCCESSFULLY), 3, "a\nb\nc\n").logs_for(tail) == expected


# -- the thread: connect, resync, reconnect with backoff ---------------------------------------------


class Stream:
    def __init__(self) -> None:
        self.q: queue.Queue[Any] = queue.Queue()
        self.closed = False

    def __iter__(self) -> Any:
        while True:
            item = self.q.get()
            if item is None:
                return
            if isinstance(item, Exception):
                raise item
            yield item

    def close(self) -> None:
        self.closed = True
        self.q.put(None)


class EngineEvents:
    """Events and lists of a scripted engine; ``down`` refuses connections."""

    def __init__(self) -> None:
        self.down = False
        self.containers_now: list[dict[str, Any]] = []
        self.streams: list[Stream] = []
        self.calls: list[dict[str, Any]] = []

    def events(self, **kw: Any) -> Stream:
        self.calls.append(kw)
        if self.down:
            raise requests.exceptions.ConnectionError("refused")
        stream = Stream()
        self.streams.append(stream)
        return stream

    def containers(self, all: bool = False, filters: Any = None) -> list[dict[str, Any]]:
        assert all and filters == {}  # key-only labels are checked by the view
        if self.down:
            raise requests.exceptions.ConnectionError("refused")
        return list(self.containers_now)


def until(predicate: Any, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.01)


def test_the_thread_survives_an_engine_restart() -> None:
    engine = EngineEvents()
    engine.down = True
    view = ContainerView(engine, SELECTOR, backoff_max=0.05)  # type: ignore[arg-type]
    view.start()
    try:
        until(lambda: len(engine.calls) >= 3)  # refused, backing off
        assert not view.current()
        engine.containers_now = [listed("a", "j1", "running")]
        engine.down = False
        assert view.wait_current(5)
        assert engine.calls[-1]["filters"] == {"type": "container"}
        assert engine.calls[-1]["since"] <= time.time() and engine.calls[-1]["until"] > time.time()
        engine.streams[-1].q.put(ev("die", "a"))
        until(lambda: phase(view) == ("a", EXITED))
        # the engine restarts: the stream breaks; the list after reconnecting resyncs
        engine.down = True
        engine.streams[-1].q.put(requests.exceptions.ChunkedEncodingError("connection broken"))
        until(lambda: not view.current())
        engine.containers_now = [listed("b", "j2", "running")]
        engine.down = False
        assert view.wait_current(5)
        assert phase(view) is None and phase(view, "j2") == ("b", RUNNING)
        assert view.resyncs == 2
    finally:
        view.close()
    assert engine.streams[-1].closed


def test_the_stream_is_renewed_with_a_replay_of_the_seam() -> None:
    engine = EngineEvents()
    view = ContainerView(engine, SELECTOR, resync_seconds=1)  # type: ignore[arg-type]
    view.start()
    try:
        assert view.wait_current(5)
        engine.streams[-1].q.put(None)  # the engine ends the stream at `until`
        until(lambda: view.resyncs == 2)
        first, second = engine.calls[0], engine.calls[1]
        assert second["since"] == first["until"] - 5  # events around the seam are replayed
        assert view.current()
    finally:
        view.close()


# -- the adapter on a fake engine ---------------------------------------------------------------------


class FakeEngine(EngineEvents):
    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}
        self.attrs: dict[str, dict[str, Any]] = {}
        self.log_text: dict[str, str] = {}
        self.ids = iter(f"id{i}" for i in range(1000))

    def _count(self, call: str) -> None:
        self.counts[call] = self.counts.get(call, 0) + 1

    def _name_of(self, ref: str) -> str:
        """The name of the container ``ref`` names or identifies (the engine takes both)."""
        if ref in self.attrs:
            return ref
        for name, attrs in self.attrs.items():
            if attrs["Id"] == ref:
                return name
        import docker.errors

        raise docker.errors.NotFound("no such container")

    def inspect_container(self, ref: str) -> dict[str, Any]:
        self._count("inspect")
        if self.down:
            raise requests.exceptions.ConnectionError("refused")
        name = self._name_of(ref)
        return {**self.attrs[name], "Name": f"/{name}"}

    def logs(self, ref: str, **kw: Any) -> bytes:
        self._count("logs")
        if self.down:
            raise requests.exceptions.ConnectionError("refused")
        lines = self.log_text.get(self._name_of(ref), "").splitlines(keepends=True)
        return "".join(lines[-kw["tail"] :] if kw["tail"] else []).encode()

    def create_host_config(self, **kw: Any) -> dict[str, Any]:
        return kw

    def create_container(self, **kw: Any) -> None:
        self._count("create")
        cid = next(self.ids)
        self.attrs[kw["name"]] = _attrs(cid, "created", labels=kw["labels"])
        self.emit("create", kw["name"])

    def start(self, name: str) -> None:
        self.set_state(name, "running")

    def remove_container(self, ref: str, force: bool = False) -> None:
        self._count("remove")
        name = self._name_of(ref)
        cid = self.attrs.pop(name)["Id"]
        self.emit("destroy", name, cid)

    # -- test controls
    def set_state(self, name: str, status: str, exit_code: int = 0) -> None:
        cid = self.attrs[name]["Id"]
        self.attrs[name] = _attrs(cid, status, exit_code)
        self.emit({"running": "start", "exited": "die"}[status], name)

    def emit(self, action: str, name: str, cid: str | None = None) -> None:
        cid = cid or self.attrs[name]["Id"]
        if self.streams:
            self.streams[-1].q.put(ev(action, cid, name=name))


def job(name: str = "j1") -> ContainerJob:
    return ContainerJob(name, "img", ("true",), (), Resources(1, 1000, 300, 0), (), labels=dict(LABELS))


@pytest.fixture
def fake() -> Any:
    engine = FakeEngine()
    compute = DockerCompute(types.SimpleNamespace(api=engine), DockerOptions(storebase="/sb", status_view=True))  # type: ignore[arg-type]
    assert compute.view is not None and compute.view.wait_current(5)
    yield engine, compute
    compute.close()


def _settled(compute: DockerCompute, predicate: Any) -> None:
    assert compute.view is not None
    until(lambda: (r := compute.view.get("j1")) is not None and predicate(r))  # type: ignore[union-attr]


def test_a_running_job_costs_its_logs_only(fake: Any) -> None:
    engine, compute = fake
    compute.schedule(job())
    engine.log_text["j1"] = "one\ntwo\n"
    _settled(compute, lambda r: r.phase == RUNNING)
    first = compute.state("j1", 10)  # learns the running info: one inspect
    assert engine.counts == {"create": 1, "inspect": 1, "logs": 1}
    for _ in range(5):
        state = compute.state("j1", 10)
        assert state.info == first.info and state.info.status is JobStatus.STARTED and state.logs == "one\ntwo\n"
    assert compute.info("j1").status is JobStatus.STARTED
    assert engine.counts == {"create": 1, "inspect": 1, "logs": 6}


def test_a_finished_job_costs_nothing(fake: Any) -> None:
    engine, compute = fake
    compute.schedule(job())
    engine.log_text["j1"] = "a\nb\nc\n"
    engine.set_state("j1", "exited", 3)
    _settled(compute, lambda r: r.phase == EXITED)
    state = compute.state("j1", 2)
    assert state.info.status is JobStatus.FINISHED_WITH_ERROR and state.logs == "b\nc\n"
    before = dict(engine.counts)
    for _ in range(5):
        assert compute.state("j1", 2) == state
    assert compute.state("j1", 1).logs == "c\n"  # a shorter tail: from memory
    assert compute.info("j1") == state.info
    assert engine.counts == before
    assert compute.state("j1", 3).logs == "a\nb\nc\n"  # a longer tail: read again
    assert engine.counts["logs"] == before["logs"] + 1


def test_a_job_that_exits_between_events_is_never_shown_running_again(fake: Any) -> None:
    engine, compute = fake
    compute.schedule(job())
    _settled(compute, lambda r: r.phase == RUNNING)
    assert compute.state("j1", 10).info.status is JobStatus.STARTED
    # the container exits; its die event is late: an inspect shows the exit first
    cid = engine.attrs["j1"]["Id"]
    engine.attrs["j1"] = _attrs(cid, "exited")
    compute.view._put("j1", Record(cid, RUNNING))  # type: ignore[union-attr] # the view as it was, with no running info
    assert compute.state("j1", 10).info.status is JobStatus.FINISHED_SUCCESSFULLY
    engine.emit("start", "j1")  # a replayed start changes nothing
    time.sleep(0.05)
    for _ in range(3):
        assert compute.state("j1", 10).info.status is JobStatus.FINISHED_SUCCESSFULLY


def test_remove_and_schedule_invalidate(fake: Any) -> None:
    engine, compute = fake
    compute.schedule(job())
    engine.set_state("j1", "exited")
    _settled(compute, lambda r: r.phase == EXITED)
    compute.state("j1", 10)
    _settled(compute, lambda r: r.final is not None)
    compute.remove("j1")
    with pytest.raises(JobNotFound):
        compute.state("j1", 10)
    compute.schedule(job())  # the same name again
    assert compute.state("j1", 10).info.status is JobStatus.STARTED  # not the old container's final
    engine.set_state("j1", "exited", 1)
    until(lambda: compute.state("j1", 10).info.status is JobStatus.FINISHED_WITH_ERROR)


def test_a_destroy_event_invalidates(fake: Any) -> None:
    engine, compute = fake
    compute.schedule(job())
    engine.set_state("j1", "exited")
    _settled(compute, lambda r: r.phase == EXITED)
    compute.state("j1", 10)
    _settled(compute, lambda r: r.final is not None)
    engine.remove_container("j1")  # removed by someone else: only the event tells
    until(lambda: compute.view.get("j1") is None)  # type: ignore[union-attr]
    with pytest.raises(JobNotFound):
        compute.state("j1", 10)


def test_a_stale_view_reads_the_engine_and_says_it_is_down(fake: Any) -> None:
    engine, compute = fake
    compute.schedule(job())
    engine.set_state("j1", "exited")
    _settled(compute, lambda r: r.phase == EXITED)
    compute.state("j1", 10)
    _settled(compute, lambda r: r.final is not None)
    engine.down = True
    engine.streams[-1].q.put(requests.exceptions.ConnectionError("engine stopped"))
    until(lambda: not compute.view.current())  # type: ignore[union-attr]
    with pytest.raises(BackendUnavailable):
        compute.state("j1", 10)  # a finished job too: the engine is down, say so
    engine.down = False
    assert compute.view.wait_current(5)  # type: ignore[union-attr]
    assert compute.state("j1", 10).info.status is JobStatus.FINISHED_SUCCESSFULLY


def test_without_the_view_every_status_reads_the_engine() -> None:
    engine = FakeEngine()
    compute = DockerCompute(types.SimpleNamespace(api=engine), DockerOptions(storebase="/sb"))  # type: ignore[arg-type]
    assert compute.view is None
    compute.schedule(job())
    engine.set_state("j1", "exited")
    for _ in range(3):
        compute.state("j1", 10)
    assert engine.counts["inspect"] == 3 and engine.counts["logs"] == 3 and engine.calls == []


def test_concurrent_polls_of_many_jobs_stay_monotonic(fake: Any) -> None:
    engine, compute = fake
    names = [f"m{i}" for i in range(20)]
    for name in names:
        compute.schedule(job(name))
    order = {JobStatus.NOT_STARTED: 0, JobStatus.STARTED: 1, JobStatus.FINISHED_SUCCESSFULLY: 2}
    errors: list[str] = []

    def poll(name: str) -> None:
        last = 0
        for _ in range(200):
            rank = order[compute.state(name, 5).info.status]
            if rank < last:
                errors.append(f"{name}: {rank} after {last}")
            last = rank

    threads = [threading.Thread(target=poll, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for name in random.sample(names, len(names)):
        engine.set_state(name, "exited")
        time.sleep(0.001)
    for t in threads:
        t.join()
    assert errors == []


def test_a_stream_that_ends_at_once_is_a_failure_with_backoff() -> None:
    # e.g. an engine whose events endpoint answers nothing: never a busy loop of reconnections
    engine = EngineEvents()
    original = engine.events

    def ends_at_once(**kw: Any) -> Stream:
        stream = original(**kw)
        stream.q.put(None)
        return stream

    engine.events = ends_at_once  # type: ignore[method-assign]
    view = ContainerView(engine, SELECTOR, backoff_max=0.2)  # type: ignore[arg-type]
    view.start()
    try:
        time.sleep(0.6)
        assert 2 <= len(engine.calls) <= 6
        assert "ended early" in view.error()
    finally:
        view.close()
