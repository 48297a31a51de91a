"""One shared, watch-fed view of this server's Jobs and pods in one namespace.

Status requests are answered from memory: two background threads (one per kind) each
LIST the namespace's objects carrying this server's labels once, then WATCH from the
list's ``resourceVersion`` — a watch is renewed from its last ``resourceVersion`` every
``resync_seconds``, re-LISTed only after ``410 Gone`` or an error (with a capped
backoff). So the API server sees a bounded number of requests however many clients
poll however many jobs: 2 long-lived watches, renewed every ``resync_seconds``.

The view says whether it is *current* (both kinds listed and watching, no error since);
a caller falls back to a direct read when it is not, or when a name is not in it (a Job
created a moment ago whose ADDED event has not arrived yet).

Objects are kept as plain JSON dicts (the API's camelCase form), slimmed to what status
mapping needs; they are replaced on every event, never mutated, so readers may use them
without holding the lock.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

log = logging.getLogger(__name__)

JOBS, PODS = "jobs", "pods"
TOMBSTONE_SECONDS = 120.0


class Gone(Exception):
    """The watch's resourceVersion is too old (HTTP 410): list again."""


class WatchStream(Protocol):
    def __iter__(self) -> Iterator[tuple[str, dict[str, Any]]]: ...

    def close(self) -> None: ...


class ViewApi(Protocol):
    def list(self, kind: str, namespace: str, selector: str) -> tuple[list[dict[str, Any]], str]:
        """Every object of ``kind`` matching ``selector``, and the list's resourceVersion."""
        ...

    def watch(self, kind: str, namespace: str, selector: str, resource_version: str, timeout: int) -> WatchStream:
        """Events ``(type, object)`` after ``resource_version``; ends after ``timeout`` s.
        Raises Gone when the version has expired."""
        ...


# -- slimming: only what status mapping and logs read --------------------------------------


def _metadata(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    keep = ("name", "uid", "labels", "creationTimestamp", "deletionTimestamp", "resourceVersion", "ownerReferences")
    return {k: meta[k] for k in keep if k in meta}


def slim_job(job: dict[str, Any]) -> dict[str, Any]:
    spec = job.get("spec") or {}
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    first = containers[0] if containers else {}
    return {
        "metadata": _metadata(job),
        "spec": {
            **{k: spec[k] for k in ("parallelism", "completions", "activeDeadlineSeconds") if k in spec},
            "template": {"spec": {"containers": [{k: first[k] for k in ("name", "image", "command") if k in first}]}},
        },
        "status": job.get("status") or {},
    }


def slim_pod(pod: dict[str, Any]) -> dict[str, Any]:
    containers = (pod.get("spec") or {}).get("containers") or []
    return {
        "metadata": _metadata(pod),
        "spec": {"containers": [{"name": c.get("name")} for c in containers]},
        "status": pod.get("status") or {},
    }


def owner_uid(pod: dict[str, Any]) -> str | None:
    """The uid of the Job a pod belongs to."""
    meta = pod.get("metadata") or {}
    for ref in meta.get("ownerReferences") or ():
        if ref.get("kind") == "Job" and ref.get("uid"):
            return str(ref["uid"])
    labels = meta.get("labels") or {}
    uid = labels.get("batch.kubernetes.io/controller-uid") or labels.get("controller-uid")
    return str(uid) if uid else None


def _name(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def _uid(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")


class ClusterView:
    """This server's Jobs and their pods, kept current by two list+watch threads."""

    def __init__(
        self,
        api: ViewApi,
        namespace: str,
        selector: str,
        *,
        resync_seconds: float = 300.0,
        backoff_max: float = 5.0,
        pod_problem: Callable[[dict[str, Any]], str | None] = lambda pod: None,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.selector = selector
        self.resync_seconds = max(1, int(resync_seconds))
        self.backoff_max = backoff_max
        self._pod_problem = pod_problem
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._jobs: dict[str, dict[str, Any]] = {}  # name -> slim Job
        self._pods: dict[str, dict[str, Any]] = {}  # name -> slim pod
        self._pods_of: dict[str, set[str]] = {}  # Job uid -> pod names
        self._problems: dict[str, str] = {}  # Job uid -> the last problem a pod of it showed
        self._tombstones: dict[str, float] = {}  # Job uids this server deleted -> when
        self._synced = {JOBS: False, PODS: False}
        self._errors = {JOBS: "", PODS: ""}
        self._streams: dict[str, WatchStream] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.relists = {JOBS: 0, PODS: 0}

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        for kind in (JOBS, PODS):
            thread = threading.Thread(target=self._run, args=(kind,), name=f"k8s-view-{kind}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self._synced = {JOBS: False, PODS: False}
            streams = list(self._streams.values())
        for stream in streams:
            with contextlib.suppress(Exception):
                stream.close()
        for thread in self._threads:
            thread.join(timeout=5)

    # -- queries -----------------------------------------------------------------------
    def current(self) -> bool:
        with self._lock:
            return all(self._synced.values())

    def wait_current(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not all(self._synced.values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate`` (called without the lock) holds after some event."""
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            with self._changed:
                self._changed.wait(min(left, 0.2))
        return True

    def error(self) -> str:
        with self._lock:
            return "; ".join(e for e in self._errors.values() if e)

    def job(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._jobs.get(name)

    def jobs(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._jobs.values())

    def pods_of(self, job_uid: str) -> list[dict[str, Any]]:
        with self._lock:
            return [self._pods[n] for n in self._pods_of.get(job_uid, ()) if n in self._pods]

    def problem(self, job_uid: str) -> str | None:
        with self._lock:
            return self._problems.get(job_uid)

    def forget(self, name: str, uid: str | None = None) -> None:
        """Drop a Job this server just deleted; late events about it are ignored."""
        with self._lock:
            self._expire_tombstones()
            job = self._jobs.get(name)
            uid = uid or (_uid(job) if job else None)
            if job is not None and (uid is None or _uid(job) == uid):
                del self._jobs[name]
            if uid:
                self._tombstones[uid] = time.monotonic()
                self._problems.pop(uid, None)
            self._changed.notify_all()

    # -- the two reflectors ------------------------------------------------------------
    def _run(self, kind: str) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            try:
                items, version = self.api.list(kind, self.namespace, self.selector)
                self._replace(kind, items)
                self.relists[kind] += 1
                backoff = 0.2
                while not self._stop.is_set():
                    version = self._watch(kind, version)
            except Gone:
                log.info("k8s_view_relist", extra={"kind": kind, "why": "resourceVersion expired"})
                continue
            except Exception as e:  # noqa: BLE001 - any failure: mark stale, back off, list again
                self._mark_stale(kind, e)
                if self._stop.wait(backoff):
                    return
                backoff = min(backoff * 2, self.backoff_max)

    def _watch(self, kind: str, version: str) -> str:
        stream = self.api.watch(kind, self.namespace, self.selector, version, self.resync_seconds)
        with self._lock:
            self._streams[kind] = stream
        if self._stop.is_set():
            stream.close()
            return version
        try:
            for event_type, obj in stream:
                if self._stop.is_set():
                    break
                if event_type == "ERROR":
                    code = obj.get("code")
                    if code == 410:
                        raise Gone()
                    raise RuntimeError(f"watch error {code}: {obj.get('message')}")
                new_version = (obj.get("metadata") or {}).get("resourceVersion")
                if event_type != "BOOKMARK":
                    self._apply(kind, event_type, obj)
                if new_version:
                    version = str(new_version)
        finally:
            with self._lock:
                self._streams.pop(kind, None)
            with contextlib.suppress(Exception):
                stream.close()
        return version

    def _mark_stale(self, kind: str, error: Exception) -> None:
        with self._lock:
            was = self._synced[kind]
            self._synced[kind] = False
            self._errors[kind] = f"{kind}: {error}"[:300]
            self._changed.notify_all()
        if was:
            log.warning("k8s_view_stale", extra={"kind": kind, "error": str(error)[:300]})

    # -- store updates (under the lock) ----------------------------------------------
    def _replace(self, kind: str, items: list[dict[str, Any]]) -> None:
        with self._lock:
            self._expire_tombstones()
            if kind == JOBS:
                self._jobs = {}
                for job in items:
                    if _uid(job) not in self._tombstones:
                        self._jobs[_name(job)] = slim_job(job)
                live = {_uid(j) for j in self._jobs.values()}
                self._problems = {uid: p for uid, p in self._problems.items() if uid in live}
            else:
                self._pods, self._pods_of = {}, {}
                for pod in items:
                    self._put_pod(slim_pod(pod))
            self._synced[kind] = True
            self._errors[kind] = ""
            self._changed.notify_all()

    def _apply(self, kind: str, event_type: str, obj: dict[str, Any]) -> None:
        with self._lock:
            name = _name(obj)
            if kind == JOBS:
                uid = _uid(obj)
                if event_type == "DELETED":
                    current = self._jobs.get(name)
                    if current is not None and _uid(current) == uid:
                        del self._jobs[name]
                    self._problems.pop(uid, None)
                    self._tombstones.pop(uid, None)
                elif uid not in self._tombstones:
                    self._jobs[name] = slim_job(obj)
            elif event_type == "DELETED":
                self._drop_pod(name)
            else:
                self._drop_pod(name)
                self._put_pod(slim_pod(obj))
            self._changed.notify_all()

    def _put_pod(self, pod: dict[str, Any]) -> None:
        name = _name(pod)
        self._pods[name] = pod
        owner = owner_uid(pod)
        if owner:
            self._pods_of.setdefault(owner, set()).add(name)
            problem = self._pod_problem(pod)
            if problem:
                self._problems[owner] = problem

    def _drop_pod(self, name: str) -> None:
        pod = self._pods.pop(name, None)
        if pod is None:
            return
        owner = owner_uid(pod)
        if owner and owner in self._pods_of:
            self._pods_of[owner].discard(name)
            if not self._pods_of[owner]:
                del self._pods_of[owner]

    def _expire_tombstones(self) -> None:
        now = time.monotonic()
        for uid, when in list(self._tombstones.items()):
            if now - when > TOMBSTONE_SECONDS:
                del self._tombstones[uid]
