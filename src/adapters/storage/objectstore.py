"""In-network storage on an object store (Swift, S3): everything but the store's client.

Inputs are downloaded by prefix into ``key-<jid>/incoming`` (contract §8.3: every input
prefix must hold objects; ChRIS links are followed while listing, then expanded in the
local tree, §8.4); the plugin writes into ``key-<jid>/outgoing``; the outputs are
uploaded under ``<job_output_path>/`` when CUBE asks for the JSON listing, once: keys
already present are skipped (§8.5: never symlinks nor ``*.chrislink`` files).

A store is reached through :class:`ObjectStore`, the few operations this needs: list the
objects under a prefix, test one, read a small one, stream one into a file, stream a
file into one (multipart when large), ping. Its client does the retries (with
backoff); every error it raises becomes :class:`BackendUnavailable` naming the store
("S3 error while downloading inputs (HTTP 503)"), a 503 for the client, never a 500.
Transfers stream through files: memory stays bounded whatever the object sizes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import structlog

from ...domain.errors import BackendUnavailable, InvalidInputData, InvalidJobSpec, StorageFull
from ...domain.model import OutputFile, OutputListing, StagedData
from ...domain.ports import StagingRequest, ZipStream
from .chrislink import MAX_LINK_BYTES, expand_links
from .innetwork import InNetworkRequest, collect_inputs, job_output_path_param, require_in_network_fields, run_parallel
from .local import StoreBase, iter_output_files, iter_zip, safe_relative_path

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    name: str
    size: int


@runtime_checkable
class ObjectStore(Protocol):
    """One bucket (S3) or container (Swift), as the in-network storage uses it.

    ``errors`` are the exception types its client raises for a store that is down, slow,
    refusing or broken; ``describe`` says which, briefly and without any credential
    (e.g. ``HTTP 403 SignatureDoesNotMatch``, ``EndpointConnectionError``).
    """

    name: str  # "Swift", "S3": what every error message names
    errors: tuple[type[BaseException], ...]

    def describe(self, error: BaseException) -> str: ...

    def list(self, prefix: str, limit: int | None = None) -> Sequence[ObjectInfo]:
        """Every object whose name starts with ``prefix`` (at most ``limit``), by name."""
        ...

    def exists(self, name: str) -> bool: ...

    def read(self, name: str, limit: int) -> bytes:
        """At most ``limit`` bytes of a small object (a ChRIS link)."""
        ...

    def get(self, name: str, path: str, size: int) -> None:
        """Stream object ``name`` (of ``size`` bytes, from the listing) into file ``path``."""
        ...

    def put(self, path: str, name: str, size: int) -> None:
        """Stream file ``path`` into object ``name``; multipart when it is large."""
        ...

    def ping(self) -> None:
        """The store answers now: one try, a short timeout."""
        ...

    def ensure_container(self) -> None:
        """Create the bucket / container if it is missing (dev mode, as pfcon)."""
        ...


class _Listing:
    """The store as link-following sees it during one staging; remembers object sizes."""

    def __init__(self, storage: ObjectStorage) -> None:
        self.storage = storage
        self.sizes: dict[str, int] = {}

    def list_files(self, path: str) -> Iterator[str]:
        for info in self.storage.objects(path):
            if info.name == path or info.name.startswith(path + "/"):
                self.sizes[info.name] = info.size
                yield info.name

    def read_link(self, path: str) -> str:
        return self.storage.read_link(path)


class ObjectStorage:
    """The storage port for an object store (``STORAGE_ENV=swift`` or ``s3``)."""

    def __init__(self, storebase: StoreBase, store: ObjectStore, workers: int = 8, compression: int = 0) -> None:
        self.storebase = storebase
        self.store = store
        self.workers = workers
        self.compression = compression
        self._upload_locks: weakref.WeakValueDictionary[str, threading.Lock] = weakref.WeakValueDictionary()
        self._locks_guard = threading.Lock()

    @contextlib.contextmanager
    def calling(self, action: str) -> Iterator[None]:
        """Turn the store's errors into a 503 naming the store and what was being done."""
        try:
            yield
        except self.store.errors as e:
            if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull(f"no room left on storeBase while {action}") from None
            raise BackendUnavailable(f"{self.store.name} error while {action} ({self.store.describe(e)})") from e

    def ensure_container(self) -> None:
        with self.calling("creating the bucket or container"):
            self.store.ensure_container()

    # -- the store, guarded ------------------------------------------------------
    def objects(self, prefix: str) -> list[ObjectInfo]:
        """The objects under ``prefix``, without pseudo-directory markers (``name/``)."""
        with self.calling("listing objects"):
            return [o for o in self.store.list(prefix) if not o.name.endswith("/")]

    def _has_objects(self, path: str) -> bool:
        with self.calling("listing objects"):
            return bool(self.store.list(path + "/", limit=1)) or self.store.exists(path)

    def list_files(self, path: str) -> Iterator[str]:
        return _Listing(self).list_files(path)

    def read_link(self, path: str) -> str:
        with self.calling("reading a ChRIS link"):
            body = self.store.read(path, MAX_LINK_BYTES)
        return body[:MAX_LINK_BYTES].decode("utf-8", errors="replace").strip()

    def _download(self, name: str, target: str, size: int) -> None:
        with self.calling("downloading inputs"):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            self.store.get(name, target, size)

    def _upload(self, path: str, name: str) -> None:
        with self.calling("uploading outputs"):
            self.store.put(path, name, os.stat(path).st_size)

    # -- the storage port ----------------------------------------------------------
    def _check_inputs(self, request: StagingRequest) -> InNetworkRequest:
        fields = require_in_network_fields(request)
        for d in fields.input_dirs:
            if not self._has_objects(d):
                raise InvalidInputData(f"input_dirs: no objects found under {d!r}")
        return fields

    def validate(self, jid: str, request: StagingRequest) -> None:
        self._check_inputs(request)

    def stage(self, jid: str, request: StagingRequest) -> StagedData:
        fields = self._check_inputs(request)
        with self.storebase.claimed(jid):
            incoming = self.storebase.incoming(jid)
            listing = _Listing(self)
            items = collect_inputs(listing, fields.input_dirs, fields.output_dir)
            plan: list[tuple[str, str]] = []
            for name, rel in items:
                safe = safe_relative_path(rel)
                if safe is None:
                    raise InvalidInputData(f"input_dirs: unsafe object name {name!r}")
                plan.append((name, os.path.join(incoming, safe)))
            sizes = listing.sizes
            run_parallel(plan, lambda name, target: self._download(name, target, sizes[name]), self.workers, batch=4)
            nfiles = len(items) - expand_links(incoming)
        log.info("staged_inputs", store=self.store.name, job_id=jid, objects=len(items),
                 bytes=sum(sizes[name] for name, _ in items))  # fmt: skip
        return self.storebase.staged(jid, nfiles)

    def recover(self) -> list[str]:
        return self.storebase.recover()

    def ping(self) -> None:
        """storeBase is usable and the store answers now (one try, short timeout)."""
        self.storebase.ping()
        with self.calling("checking the bucket or container"):
            self.store.ping()

    def exists(self, jid: str) -> bool:
        return self.storebase.exists(jid)

    def delete(self, jid: str) -> None:
        self.storebase.delete(jid)  # never objects in the store: they are CUBE's

    def _upload_lock(self, jid: str) -> threading.Lock:
        with self._locks_guard:
            lock = self._upload_locks.get(jid)
            if lock is None:
                lock = self._upload_locks[jid] = threading.Lock()
            return lock

    def output_files(self, jid: str, limit: int) -> tuple[OutputFile, ...]:
        return self.storebase.output_files(jid, limit)

    def outputs(self, jid: str, job_output_path: str | None) -> OutputListing | ZipStream:
        self.storebase.require(jid)
        outgoing = self.storebase.outgoing(jid)
        os.makedirs(outgoing, exist_ok=True)
        if job_output_path is None:
            return ZipStream(f"{jid}.zip", iter_zip(outgoing, self.compression))
        prefix = job_output_path_param(job_output_path)
        if not prefix:
            raise InvalidJobSpec("must name a path under the storage root", field="job_output_path")
        files = list(iter_output_files(outgoing))  # regular files only: no symlinks, no *.chrislink
        with self._upload_lock(jid):  # two listings at once upload each object once
            existing = {o.name for o in self.objects(prefix + "/")}
            todo = [(f.path, f"{prefix}/{f.rel}") for f in files if f"{prefix}/{f.rel}" not in existing]
            run_parallel(todo, self._upload, self.workers, batch=4)
        if todo:
            log.info("uploaded_outputs", store=self.store.name, job_id=jid, count=len(todo),
                     skipped=len(files) - len(todo))  # fmt: skip
        return OutputListing(prefix, tuple(f.rel for f in files))
