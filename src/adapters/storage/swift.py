"""In-network OpenStack Swift storage (``STORAGE_ENV=swift``), with python-swiftclient.

Inputs are downloaded by prefix into ``key-<jid>/incoming`` (ChRIS links followed and
expanded); the plugin writes into ``key-<jid>/outgoing``; the outputs are uploaded
under ``<job_output_path>/`` when CUBE asks for the JSON listing.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import structlog
from swiftclient.client import Connection
from swiftclient.exceptions import ClientException

from ...domain.errors import BackendUnavailable, InvalidInputData, InvalidJobSpec
from ...domain.model import OutputListing, StagedData
from ...domain.ports import StagingRequest, ZipStream
from .chrislink import MAX_LINK_BYTES, expand_links
from .innetwork import (
    InNetworkRequest,
    collect_inputs,
    job_output_path_param,
    require_in_network_fields,
    run_parallel,
)
from .local import CHUNK, StoreBase, iter_output_files, iter_zip, safe_relative_path

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class SwiftSettings:
    auth_url: str
    username: str
    key: str = field(repr=False)
    container: str
    retries: int = 5
    starting_backoff: float = 0.5
    max_backoff: float = 8.0
    timeout: float = 60.0


def _unavailable(action: str, error: Exception) -> BackendUnavailable:
    status = getattr(error, "http_status", None)
    detail = f"HTTP {status}" if status else type(error).__name__
    return BackendUnavailable(f"Swift error while {action} ({detail})")


class SwiftStorage:
    def __init__(
        self, storebase: StoreBase, settings: SwiftSettings, workers: int = 8, compression: int = 0
    ) -> None:
        self.storebase = storebase
        self.compression = compression
        self.settings = settings
        self.workers = workers
        self._local = threading.local()

    # A swiftclient Connection is not thread-safe: one per worker thread.
    def _conn(self) -> Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            s = self.settings
            conn = Connection(
                authurl=s.auth_url,
                user=s.username,
                key=s.key,
                retries=s.retries,
                starting_backoff=s.starting_backoff,
                max_backoff=s.max_backoff,
                timeout=s.timeout,
            )
            self._local.conn = conn
        return conn

    def ensure_container(self) -> None:
        try:
            self._conn().put_container(self.settings.container)
        except (ClientException, OSError) as e:
            raise _unavailable(f"creating container {self.settings.container!r}", e) from e

    # -- listing and transfer --------------------------------------------------
    def _names(self, prefix: str) -> list[str]:
        try:
            _, objects = self._conn().get_container(
                self.settings.container, prefix=prefix, full_listing=True
            )
        except (ClientException, OSError) as e:
            raise _unavailable("listing objects", e) from e
        return [o["name"] for o in objects if not o["name"].endswith("/")]

    def _has_objects(self, path: str) -> bool:
        try:
            for prefix in (path + "/", path):
                _, objects = self._conn().get_container(self.settings.container, prefix=prefix, limit=1)
                if objects and (prefix.endswith("/") or objects[0]["name"] == path):
                    return True
        except (ClientException, OSError) as e:
            raise _unavailable("listing objects", e) from e
        return False

    def _check_inputs(self, request: StagingRequest) -> InNetworkRequest:
        fields = require_in_network_fields(request)
        for d in fields.input_dirs:
            if not self._has_objects(d):
                raise InvalidInputData(f"input_dirs: no objects found under {d!r}")
        return fields

    def list_files(self, path: str) -> Iterator[str]:
        for name in self._names(path):
            if name == path or name.startswith(path + "/"):
                yield name

    def read_link(self, path: str) -> str:
        try:
            _, body = self._conn().get_object(self.settings.container, path)
        except (ClientException, OSError) as e:
            raise _unavailable("reading a ChRIS link", e) from e
        return bytes(body[:MAX_LINK_BYTES]).decode("utf-8", errors="replace").strip()

    def _download(self, name: str, target: str) -> None:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        try:
            _, chunks = self._conn().get_object(self.settings.container, name, resp_chunk_size=CHUNK)
            with open(target, "wb") as f:
                for chunk in chunks:
                    f.write(chunk)
        except (ClientException, OSError) as e:
            raise _unavailable("downloading inputs", e) from e

    def _upload(self, path: str, name: str) -> None:
        try:
            with open(path, "rb") as f:
                self._conn().put_object(
                    self.settings.container, name, contents=f, content_length=os.fstat(f.fileno()).st_size
                )
        except (ClientException, OSError) as e:
            raise _unavailable("uploading outputs", e) from e

    # -- the storage port -------------------------------------------------------
    def validate(self, jid: str, request: StagingRequest) -> None:
        self._check_inputs(request)

    def stage(self, jid: str, request: StagingRequest) -> StagedData:
        fields = self._check_inputs(request)
        with self.storebase.claimed(jid):
            incoming = self.storebase.incoming(jid)
            items = collect_inputs(self, fields.input_dirs, fields.output_dir)
            plan = []
            for name, rel in items:
                safe = safe_relative_path(rel)
                if safe is None:
                    raise InvalidInputData(f"input_dirs: unsafe object name {name!r}")
                plan.append((name, os.path.join(incoming, safe)))
            run_parallel(plan, self._download, self.workers, batch=4)
            nfiles = len(items) - expand_links(incoming)
        return self.storebase.staged(jid, nfiles)

    def recover(self) -> list[str]:
        return self.storebase.recover()

    def ping(self) -> None:
        """storeBase is usable and Swift answers now (one try, short timeout)."""
        self.storebase.ping()
        s = self.settings
        conn = Connection(authurl=s.auth_url, user=s.username, key=s.key, retries=0, timeout=min(5.0, s.timeout))
        try:
            conn.head_container(s.container)
        except (ClientException, OSError) as e:
            raise _unavailable(f"checking container {s.container!r}", e) from e
        finally:
            conn.close()

    def exists(self, jid: str) -> bool:
        return self.storebase.exists(jid)

    def delete(self, jid: str) -> None:
        self.storebase.delete(jid)  # never objects in Swift

    def outputs(self, jid: str, job_output_path: str | None) -> OutputListing | ZipStream:
        self.storebase.require(jid)
        outgoing = self.storebase.outgoing(jid)
        os.makedirs(outgoing, exist_ok=True)
        if job_output_path is None:
            return ZipStream(f"{jid}.zip", iter_zip(outgoing, self.compression))
        prefix = job_output_path_param(job_output_path)
        if not prefix:
            raise InvalidJobSpec("must name a path under the storage root", field="job_output_path")
        files = list(iter_output_files(outgoing))
        existing = set(self._names(prefix + "/"))
        todo = [(f.path, f"{prefix}/{f.rel}") for f in files if f"{prefix}/{f.rel}" not in existing]
        run_parallel(todo, self._upload, self.workers, batch=4)
        if todo:
            log.info("uploaded_outputs", count=len(todo), skipped=len(files) - len(todo))
        return OutputListing(prefix, tuple(f.rel for f in files))
