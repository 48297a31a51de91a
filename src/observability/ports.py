"""Ports observed: every call to a compute, storage or job-area adapter timed, its backend
errors counted and, with tracing on, a child span of the request's.

:func:`instrument` wraps an adapter in a proxy that the composition root hands to the
use cases in its place; the adapter and the domain are unchanged. The proxy also learns
what the metrics of jobs and staging need from what the calls return:

* a job is *submitted* when ``schedule`` returns;
* a job is *finished* when a call first reports a terminal status for a job this process
  saw scheduled or not yet finished (each job once; a job already finished when the
  server started is never counted) — see docs/adr/0021-metrics-and-tracing.md;
* *staging* is ``stage``: its duration, the files it reports and the bytes under the
  staged input (counted in a background thread: ``ByteCounter``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from ..domain import errors as E
from ..domain.model import CANCELLED_MESSAGE, JOB_TYPE_LABEL, OP_KINDS, JobKind, JobStatus
from . import Telemetry

log = logging.getLogger(__name__)

# What the ports' callers cause (a missing job, a bad request): not a backend error.
CLIENT_ERRORS: tuple[type[E.DomainError], ...] = (
    E.JobNotFound,
    E.JobAlreadyExists,
    E.JobConflict,
    E.InvalidJobSpec,
    E.InvalidFields,
    E.InvalidInputData,  # InputTooLarge too
    E.OutputNotFound,
    E.ImageNotAvailable,
    E.ServerBusy,
    E.AuthError,
)

OPERATIONS = {
    "compute": ("check", "schedule", "create", "start", "info", "state", "remove", "ping", "list_jobs", "cancel"),
    "storage": (
        "validate", "stage", "exists", "delete", "outputs", "ping", "recover", "receive",
        "reserve", "stage_into", "release",
    ),
    "jobarea": ("exists", "prepare", "op_mounts", "plugin_mounts", "outputs", "remove"),
}

# Jobs whose end this process waits to see; beyond this many, the oldest are forgotten
# (a job deleted before it finished is forgotten when it is removed).
MAX_WATCHED = 20_000


def instrument(port: Any, kind: str, backend: str, telemetry: Telemetry) -> Any:
    """``port`` observed; ``kind`` is compute, storage or jobarea, ``backend`` its name."""
    return ObservedPort(port, kind, backend, telemetry)


def _outcome(status: JobStatus, message: str) -> str:
    if status is JobStatus.FINISHED_SUCCESSFULLY:
        return "success"
    if status is JobStatus.FINISHED_WITH_ERROR:
        return "cancelled" if message == CANCELLED_MESSAGE else "error"
    return "undefined"


def _kind_of(name: str) -> str:
    """The kind of a scheduler object from its name alone (a plugin unless <jid>-<op>)."""
    for kind in OP_KINDS:
        if name.endswith("-" + kind.value):
            return kind.value
    return JobKind.PLUGIN.value


def _job_id(operation: str, args: tuple[Any, ...]) -> str | None:
    """The job (or scheduler object) a call is about, for the span's attributes."""
    if not args:
        return None
    first = args[0]
    if isinstance(first, str):
        return first if operation != "check" else None
    name = getattr(first, "name", None) or getattr(first, "jid", None)  # ContainerJob, OpParams
    if isinstance(name, str):
        return name
    if len(args) > 1 and isinstance(args[1], str):  # (kind, jid)
        return args[1]
    return None


def noticed(after: Callable[[tuple[Any, ...], Any, float], None], args: tuple[Any, ...], result: Any, elapsed: float) -> None:
    """Run what a call's result teaches the metrics; a failure there never fails the call."""
    try:
        after(args, result, elapsed)
    except Exception:  # observability must not break the use case
        log.warning("metrics_update_failed", exc_info=True)


def tree_bytes(path: str) -> int:
    """Bytes of the regular files under ``path`` (symbolic links not followed)."""
    total = 0
    stack = [path]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        elif entry.is_file(follow_symlinks=False):
                            total += entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue
        except OSError:
            continue
    return total


class ByteCounter:
    """Adds up the bytes under staged inputs in one background thread, so that the walk
    (about 5 µs a file: 25 ms for 5,000 files) never delays the request that staged them.
    The job has just been scheduled when it runs: its input is still there."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[str, Callable[[float], None]]] = queue.Queue(maxsize=10_000)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def count(self, path: str, add: Callable[[float], None]) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="pfcon-staged-bytes", daemon=True)
                self._thread.start()
        try:
            self._queue.put_nowait((path, add))
        except queue.Full:  # thousands of stagings behind: rather miss some bytes than hold a request
            log.warning("staged_bytes_not_counted", extra={"path": path})

    def settle(self) -> None:
        """Wait until every staging handed over so far is counted (tests)."""
        self._queue.join()

    def _run(self) -> None:
        while True:
            path, add = self._queue.get()
            try:
                add(tree_bytes(path))
            except Exception:  # never let the counter's thread die
                log.warning("staged_bytes_not_counted", exc_info=True)
            finally:
                self._queue.task_done()


BYTE_COUNTER = ByteCounter()


class ObservedPort:
    """A proxy of one adapter: port operations observed, everything else passed through
    (``capabilities``, ``view``, ...). ``isinstance`` checks against the runtime-checkable
    ports see what the adapter has: an operation it lacks (``receive``) is absent here too."""

    def __init__(self, inner: Any, kind: str, backend: str, telemetry: Telemetry) -> None:
        self._inner = inner
        self._kind = kind
        self._backend = backend
        self._telemetry = telemetry
        self._operations = frozenset(OPERATIONS[kind])
        metrics = telemetry.metrics
        self._scheduler = telemetry.scheduler
        self._watched: dict[str, str] = {}  # job name -> kind, jobs whose end is still to be seen
        self._submitted = {k.value: metrics.jobs_submitted.labels(telemetry.scheduler, k.value).inc for k in JobKind}
        self._finished = {
            (k.value, outcome): metrics.jobs_finished.labels(telemetry.scheduler, k.value, outcome).inc
            for k in JobKind
            for outcome in ("success", "error", "cancelled", "undefined")
        }

    @property
    def inner(self) -> Any:
        return self._inner

    def __repr__(self) -> str:
        return f"ObservedPort({self._inner!r})"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_inner", "_operations"):
            raise AttributeError(name)
        attribute = getattr(self._inner, name)
        if name == "known_state" and self._kind == "compute" and callable(attribute):
            # an answer from memory, not a backend call: not timed, but a job's end is seen
            known = self._known(attribute)
            self.__dict__[name] = known
            return known
        if name not in self._operations or not callable(attribute):
            return attribute
        observed = self._observe(name, attribute)
        self.__dict__[name] = observed  # found directly from now on
        return observed

    def _known(self, call: Callable[[str, int], Any]) -> Callable[[str, int], Any]:
        seen = self._seen

        def known_state(name: str, log_tail: int) -> Any:
            result = call(name, log_tail)
            if result is not None:
                seen(name, result.info.status, result.info.message)
            return result

        return known_state

    # -- the wrapper -----------------------------------------------------------------------
    def _observe(self, operation: str, call: Callable[..., Any]) -> Callable[..., Any]:
        metrics = self._telemetry.metrics
        port, backend = self._kind, self._backend
        observe = metrics.backend_duration.labels(port, backend, operation).observe
        errors = metrics.backend_errors
        after = self._after(operation)
        tracer = self._telemetry.tracer
        clock = time.perf_counter

        def failed(error: BaseException) -> None:
            if not isinstance(error, CLIENT_ERRORS):
                name = type(error).__name__ if isinstance(error, E.DomainError) else "internal"
                errors.labels(port, backend, operation, name).inc()

        if tracer is None:

            def observed(*args: Any, **kwargs: Any) -> Any:
                started = clock()
                try:
                    result = call(*args, **kwargs)
                except BaseException as e:
                    observe(clock() - started)
                    failed(e)
                    raise
                elapsed = clock() - started
                observe(elapsed)
                if after is not None:
                    noticed(after, args, result, elapsed)
                return result

            return observed

        from .tracing import traced_call

        return traced_call(
            tracer, f"{port}.{operation}", self._span_attributes(operation), call, observe, failed, after, _job_id
        )

    def _span_attributes(self, operation: str) -> dict[str, str]:
        attributes = {"pfcon.port": self._kind, "pfcon.backend": self._backend, "pfcon.operation": operation}
        if self._kind == "compute":
            attributes["pfcon.scheduler"] = self._scheduler
        else:
            attributes["pfcon.storage"] = self._backend
        return attributes

    def _after(self, operation: str) -> Callable[[tuple[Any, ...], Any, float], None] | None:
        if self._kind == "compute":
            return {
                "schedule": self._scheduled,
                "start": self._scheduled,  # the second half of a schedule (ADR 23)
                "info": self._seen_info,
                "cancel": self._seen_info,
                "state": self._seen_state,
                "remove": self._removed,
                "list_jobs": self._seen_list,
            }.get(operation)
        if self._kind == "storage" and operation in ("stage", "stage_into"):
            return self._staged
        return None

    # -- jobs --------------------------------------------------------------------------------
    def _watch(self, name: str, kind: str) -> None:
        watched = self._watched
        if len(watched) >= MAX_WATCHED:
            with contextlib.suppress(StopIteration, RuntimeError):  # emptied or changed by another thread
                watched.pop(next(iter(watched)), None)
        watched[name] = kind

    def _seen(self, name: str, status: JobStatus, message: str, kind: str | None = None) -> None:
        if status.is_terminal:
            watched_kind = self._watched.pop(name, None)  # atomic: one thread counts it
            if watched_kind is not None:
                self._finished[(watched_kind, _outcome(status, message))]()
        elif name not in self._watched:
            self._watch(name, kind or _kind_of(name))

    def _scheduled(self, args: tuple[Any, ...], result: Any, _elapsed: float) -> None:
        job = args[0]
        kind = job.labels.get(JOB_TYPE_LABEL, JobKind.PLUGIN.value)
        if kind not in self._submitted:
            kind = JobKind.PLUGIN.value
        self._submitted[kind]()
        self._watch(job.name, kind)  # a name used again starts afresh
        self._seen(job.name, result.status, result.message)

    def _seen_info(self, args: tuple[Any, ...], result: Any, _elapsed: float) -> None:
        self._seen(args[0], result.status, result.message)

    def _seen_state(self, args: tuple[Any, ...], result: Any, _elapsed: float) -> None:
        self._seen(args[0], result.info.status, result.info.message)

    def _seen_list(self, _args: tuple[Any, ...], result: Any, _elapsed: float) -> None:
        for job in result:
            self._seen(job.name, job.status, job.message, job.kind.value)

    def _removed(self, args: tuple[Any, ...], _result: Any, _elapsed: float) -> None:
        self._watched.pop(args[0], None)

    # -- staging -----------------------------------------------------------------------------
    def _staged(self, _args: tuple[Any, ...], result: Any, elapsed: float) -> None:
        metrics = self._telemetry.metrics
        metrics.staging_duration.labels(self._backend).observe(elapsed)
        metrics.staged_files.labels(self._backend).inc(max(0, result.nfiles))
        if result.nbytes >= 0:  # counted while staging (zip extraction)
            metrics.staged_bytes.labels(self._backend).inc(result.nbytes)
        elif result.nfiles > 0 and result.path:
            BYTE_COUNTER.count(result.path, metrics.staged_bytes.labels(self._backend).inc)
