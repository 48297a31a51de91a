"""One view of this server's job containers on a Docker-API engine, fed by its event stream.

A daemon thread opens ``GET /events`` (type ``container``, this adapter's labels), lists
this adapter's containers, then applies every event to a per-name record: the container
id and its *phase* (created < running < exited). The stream is re-opened every
``resync_seconds`` with ``since`` a few seconds back (events in between are replayed; a
replayed event changes nothing) and the list is read again, which repairs whatever an
overloaded engine may have dropped (dockerd drops events a slow subscriber has not read
within 100 ms). Any failure (engine stopped or restarted) marks the view stale and
reconnects with a capped backoff; the list after reconnecting resyncs it.

The view is *current* while the stream is open and the list after it has been applied;
callers read it only then, and read the engine directly when it is stale or when a name
is not in it. Phases only move forward for a container id: once a container has been seen
exited (its ``die`` event, a list or an inspect), no later event or list shows it running
again. A destroyed id is remembered (tombstone) so late or replayed events about it are
ignored; a container recreated under the same name gets a new record.

Records also hold what a status request learned from one inspect: the info of a running
container (so the next requests need only the logs) and, once it is exited, its final
info and log tail (so a finished job's status costs no engine request). Both belong to
the container id: a new container of that name, ``forget()`` (schedule, remove), its
``destroy`` event or its absence from a list drops them. Records are an LRU bounded in
number, cached log tails in total size.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from ...domain.model import JobInfo

log = logging.getLogger(__name__)

CREATED, RUNNING, EXITED = 1, 2, 3

_EVENT_PHASES = {"create": CREATED, "start": RUNNING, "die": EXITED, "died": EXITED}  # died: Podman's libpod name
_DESTROYED = frozenset({"destroy", "remove"})  # remove: Podman's libpod name
_STATE_PHASES = {
    "created": CREATED, "configured": CREATED, "initialized": CREATED,  # Podman's names of a created container
    "running": RUNNING, "paused": RUNNING,
    "exited": EXITED, "dead": EXITED, "stopped": EXITED,  # stopped: Podman's transient "exited"
}  # fmt: skip


def phase_of_state(state: Mapping[str, Any]) -> int | None:
    """The phase an inspect's ``State`` shows (None: restarting, removing, unknown)."""
    if state.get("Running") or state.get("Paused"):
        return RUNNING
    return _STATE_PHASES.get(str(state.get("Status") or ""))


@dataclass(frozen=True, slots=True)
class Final:
    info: JobInfo
    tail: int
    logs: str

    def logs_for(self, tail: int) -> str | None:
        """The last ``tail`` lines, when this tail holds them (None: read the engine)."""
        if tail == self.tail:
            return self.logs
        if tail > self.tail:
            return None
        if tail <= 0:
            return ""
        return "".join(self.logs.splitlines(keepends=True)[-tail:])


@dataclass(frozen=True, slots=True)
class Record:
    """What the view knows about the container of one name (replaced, never mutated)."""

    id: str
    phase: int
    touched: int = 0  # the view's counter when a request last set it (resync keeps newer ones)
    running: JobInfo | None = None  # the info an inspect gave while it ran
    final: Final | None = None


class EventStream(Protocol):
    def __iter__(self) -> Any: ...

    def close(self) -> None: ...


class EventsApi(Protocol):
    """The part of ``docker.APIClient`` the view uses."""

    def events(self, since: Any = None, until: Any = None, filters: Any = None, decode: Any = None) -> EventStream: ...

    def containers(self, all: bool = False, filters: Any = None) -> list[dict[str, Any]]: ...


def labels_match(labels: Mapping[str, str] | None, selector: Iterable[str]) -> bool:
    labels = labels or {}
    for item in selector:
        key, eq, value = item.partition("=")
        if key not in labels or (eq and labels[key] != value):
            return False
    return True


class ContainerView:
    """This adapter's containers on one engine, kept current by its event stream."""

    def __init__(
        self,
        api: EventsApi,
        selector: Iterable[str],
        *,
        resync_seconds: float = 60.0,
        backoff_max: float = 5.0,
        since_slack: float = 5.0,
        max_records: int = 10_000,
        max_log_bytes: int = 64 * 1024 * 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.api = api
        self.selector = tuple(selector)
        self.resync_seconds = max(1.0, resync_seconds)
        self.backoff_max = backoff_max
        self.since_slack = since_slack
        self.max_records = max_records
        self.max_log_bytes = max_log_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._records: OrderedDict[str, Record] = OrderedDict()
        self._tombstones: OrderedDict[str, None] = OrderedDict()  # destroyed container ids
        self._phases: OrderedDict[str, int] = OrderedDict()  # container id -> the furthest phase seen
        self._log_bytes = 0
        self._counter = 0
        self._current = False
        self._error = ""
        self._stream: EventStream | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.resyncs = 0
        self.events_seen = 0

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="docker-view", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self._current = False
            stream = self._stream
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- queries (any thread) -------------------------------------------------------------
    def current(self) -> bool:
        return self._current

    def wait_current(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not self._current:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def error(self) -> str:
        return self._error

    def get(self, name: str) -> Record | None:
        """The record of ``name`` when the view is current (None: read the engine)."""
        with self._lock:
            if not self._current:
                return None
            record = self._records.get(name)
            if record is not None:
                self._records.move_to_end(name)
            return record

    def peek(self, name: str) -> Record | None:
        """``get`` that never waits: None when the view's thread holds the lock (callable
        from an event loop; the caller then asks in a worker thread)."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            if not self._current:
                return None
            record = self._records.get(name)
            if record is not None:
                self._records.move_to_end(name)
            return record
        finally:
            self._lock.release()

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    # -- what requests learned (any thread) -------------------------------------------------
    def observe(self, name: str, attrs: Mapping[str, Any], info: JobInfo) -> Record | None:
        """Merge an inspect of ``name``: its phase (always, so an exit seen by a request
        while the view was stale is never undone by a list taken before it), and, while
        the view is current, a record for a container it had not seen yet and the info of
        a running one (``info``, mapped from ``attrs``). Returns the record (None: stale,
        or not this adapter's container)."""
        cid = str(attrs.get("Id") or "")
        labels = (attrs.get("Config") or {}).get("Labels")
        phase = phase_of_state(attrs.get("State") or {})
        if not cid or not labels_match(labels, self.selector):
            return None
        with self._lock:
            if cid in self._tombstones:
                return None
            record = self._records.get(name)
            if not self._current:
                if record is not None and record.id == cid and phase is not None and phase > record.phase:
                    self._put(name, replace(record, phase=phase))
                return None
            self._counter += 1
            if record is None or record.id != cid:
                record = Record(cid, phase or CREATED)
            elif phase is not None and phase > record.phase:
                record = replace(record, phase=phase)
            if record.phase == RUNNING and phase == RUNNING and record.running is None:
                record = replace(record, running=info)
            record = replace(record, touched=self._counter)
            self._put(name, record)
            self._changed.notify_all()
            return record

    def keep_final(self, name: str, cid: str, final: Final) -> bool:
        """Remember the final info and logs of an exited container (while it is the name's)."""
        with self._lock:
            record = self._records.get(name)
            if not self._current or record is None or record.id != cid or record.phase != EXITED:
                return False
            self._put(name, replace(record, final=final))
            self._shrink_logs()
            return True

    def forget(self, name: str, *, destroyed: bool = False) -> None:
        """Drop the record of ``name`` (schedule: a new container comes; remove: the
        container is gone, and late events about it are ignored)."""
        with self._lock:
            record = self._records.get(name)
            if record is not None:
                self._drop(name)
                if destroyed:
                    self._tombstone(record.id)
            self._changed.notify_all()

    # -- the thread ------------------------------------------------------------------------
    def _run(self) -> None:
        backoff = 0.2
        since = self._clock() - self.since_slack
        while not self._stop.is_set():
            until = self._clock() + self.resync_seconds
            try:
                stream = self.api.events(
                    since=int(since), until=int(until), filters={"type": "container", **self._label_filter()},
                    decode=True,
                )  # fmt: skip
                with self._lock:
                    self._stream = stream
                if self._stop.is_set():
                    break
                try:
                    started = self._counter  # requests' observations after this are newer than the list
                    self._resync(self.api.containers(all=True, filters=self._label_filter()), started)
                    backoff = 0.2
                    for event in stream:
                        if self._stop.is_set():
                            break
                        self.apply(event)
                    if not self._stop.is_set() and self._clock() < until - 1:
                        raise ConnectionError("the event stream ended early")
                finally:
                    with self._lock:
                        self._stream = None
                    with contextlib.suppress(Exception):
                        stream.close()
                since = until - self.since_slack  # the engine's clock: the next stream replays the seam
            except Exception as e:  # noqa: BLE001 - any failure: stale, back off, reconnect and resync
                self._mark_stale(e)
                if self._stop.wait(backoff):
                    return
                backoff = min(backoff * 2, self.backoff_max)
                since = self._clock() - self.since_slack

    def _label_filter(self) -> dict[str, list[str]]:
        # The engine filters on key=value labels only: Podman 4.3 answers no event at all for
        # a key-only label filter. The rest of the selector is checked here.
        pairs = [item for item in self.selector if "=" in item]
        return {"label": pairs} if pairs else {}

    def _mark_stale(self, error: Exception) -> None:
        with self._lock:
            was = self._current
            self._current = False
            self._error = str(error)[:300]
            self._changed.notify_all()
        if was:
            log.warning("docker_view_stale", extra={"error": str(error)[:300]})

    # -- store updates -------------------------------------------------------------------
    def _resync(self, containers: list[dict[str, Any]], started: int | None = None) -> None:
        """Merge a list of this adapter's containers taken after the stream was opened
        (``started``: the counter before the list was asked for)."""
        with self._lock:
            if started is None:
                started = self._counter
            listed: dict[str, tuple[str, int]] = {}
            for c in containers:
                names = c.get("Names") or ()
                cid = str(c.get("Id") or "")
                if not names or not cid or cid in self._tombstones or not labels_match(c.get("Labels"), self.selector):
                    continue
                phase = _STATE_PHASES.get(str(c.get("State") or "").lower())
                listed[str(names[0]).lstrip("/")] = (cid, phase or CREATED)
            for name in list(self._records):
                if name not in listed and self._records[name].touched <= started:
                    self._drop(name)  # destroyed while no stream was open
            for name, (cid, phase) in listed.items():
                record = self._records.get(name)
                if record is None or (record.id != cid and record.touched <= started):
                    self._put(name, Record(cid, phase))
                elif record.id == cid and phase > record.phase:
                    self._put(name, replace(record, phase=phase))
            self._current = True
            self._error = ""
            self.resyncs += 1
            self._changed.notify_all()

    def apply(self, event: Mapping[str, Any]) -> None:
        """One event of the stream (also replayed, duplicated or late ones)."""
        if event.get("Type", "container") != "container":
            return
        action = str(event.get("Action") or event.get("status") or "")
        actor = event.get("Actor") or {}
        attributes = actor.get("Attributes") or {}
        cid = str(actor.get("ID") or event.get("id") or "")
        name = str(attributes.get("name") or "")
        if not cid or not name:
            return
        if action not in _DESTROYED and action != "rename" and not labels_match(attributes, self.selector):
            return  # not this adapter's (events carry the container's labels); dropping is always safe
        with self._lock:
            self.events_seen += 1
            if action in _DESTROYED:
                self._tombstone(cid)
                record = self._records.get(name)
                if record is not None and record.id == cid:
                    self._drop(name)
            elif action == "rename":
                for other, record in list(self._records.items()):
                    if record.id == cid:
                        self._drop(other)  # the container is no longer this name's
            elif action in _EVENT_PHASES and cid not in self._tombstones:
                phase = _EVENT_PHASES[action]
                record = self._records.get(name)
                if record is None or (record.id != cid and phase != EXITED):
                    # new (or recreated under this name); a late die of an older one is ignored
                    self._put(name, Record(cid, phase))
                elif record.id == cid and phase > record.phase:
                    self._put(name, replace(record, phase=phase))
            self._changed.notify_all()

    def _put(self, name: str, record: Record) -> None:
        # phases move forward per container id, even across records of its name
        furthest = max(record.phase, self._phases.get(record.id, 0))
        if furthest != record.phase:
            record = replace(record, phase=furthest)
        self._phases[record.id] = furthest
        self._phases.move_to_end(record.id)
        while len(self._phases) > 2 * self.max_records:
            self._phases.popitem(last=False)
        old = self._records.get(name)
        if old is not None and old.final is not None:
            self._log_bytes -= len(old.final.logs)
        self._records[name] = record
        self._records.move_to_end(name)
        if record.final is not None:
            self._log_bytes += len(record.final.logs)
        while len(self._records) > self.max_records:
            self._drop(next(iter(self._records)))

    def _drop(self, name: str) -> None:
        record = self._records.pop(name, None)
        if record is not None and record.final is not None:
            self._log_bytes -= len(record.final.logs)

    def _shrink_logs(self) -> None:
        if self._log_bytes <= self.max_log_bytes:
            return
        for name, record in list(self._records.items()):  # least recently used first
            if record.final is not None:
                self._log_bytes -= len(record.final.logs)
                self._records[name] = replace(record, final=None)
                if self._log_bytes <= self.max_log_bytes:
                    return

    def _tombstone(self, cid: str) -> None:
        self._tombstones[cid] = None
        self._tombstones.move_to_end(cid)
        while len(self._tombstones) > self.max_records:
            self._tombstones.popitem(last=False)
