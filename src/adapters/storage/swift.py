"""In-network OpenStack Swift storage (``STORAGE_ENV=swift``), with python-swiftclient.

The staging, link following, upload and error rules are the object-store ones
(:mod:`.objectstore`); this module is the Swift client behind them: auth v1, one
container, retries with exponential backoff by swiftclient's ``Connection``, objects
streamed in 1 MiB chunks, and Static Large Objects for files too large for one PUT.
Objects are read with the token swiftclient obtained, by plain GETs over kept-alive
connections (:mod:`.objectget`), renewed once on a 401.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

import urllib3.exceptions
from swiftclient.client import Connection
from swiftclient.exceptions import ClientException

from .local import StoreBase
from .objectget import ObjectGets, ObjectHTTPError
from .objectstore import ObjectInfo, ObjectStorage

GiB = 1024**3


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
    # Swift refuses objects above its max_file_size (5 GiB by default): larger files are
    # uploaded as segments into "<container>_segments" plus a Static Large Object manifest.
    large_object_threshold: int = 4 * GiB
    segment_size: int = GiB


class SwiftStore:
    """One Swift container (implements :class:`~.objectstore.ObjectStore`)."""

    name = "Swift"
    errors: tuple[type[BaseException], ...] = (
        ClientException, ObjectHTTPError, OSError, urllib3.exceptions.HTTPError, http.client.HTTPException,
    )  # fmt: skip

    def __init__(self, settings: SwiftSettings) -> None:
        self.settings = settings
        self._local = threading.local()
        self._auth_lock = threading.Lock()
        self._auth: tuple[str, str] | None = None  # storage URL path + container, token
        self._gets: ObjectGets | None = None
        self._origin = ""

    @staticmethod
    def describe(error: BaseException) -> str:
        status = getattr(error, "http_status", None)
        return f"HTTP {status}" if status else type(error).__name__

    # A swiftclient Connection is not thread-safe: one per thread.
    def connection(self) -> Connection:
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
        self.connection().put_container(self.settings.container)

    def list(self, prefix: str, limit: int | None = None) -> Sequence[ObjectInfo]:
        c = self.settings.container
        if limit is None:
            _, objects = self.connection().get_container(c, prefix=prefix, full_listing=True)
        else:
            _, objects = self.connection().get_container(c, prefix=prefix, limit=limit)
        return [ObjectInfo(o["name"], int(o.get("bytes", 0))) for o in objects]

    def exists(self, name: str) -> bool:
        try:
            self.connection().head_object(self.settings.container, name)
        except ClientException as e:
            if e.http_status == 404:
                return False
            raise
        return True

    def read(self, name: str, limit: int) -> bytes:
        _, body = self.connection().get_object(self.settings.container, name, resp_chunk_size=limit)
        data = b""
        try:
            for chunk in body:
                data += chunk
                if len(data) >= limit:
                    break
        finally:
            body.close()  # never more of a (hostile) large object than the limit
        return data[:limit]

    def get(self, name: str, path: str, size: int) -> None:
        gets, base = self._reader()
        gets.get(base + quote(name, safe="/"), self._token_headers, path, renew=self._renew)

    def _reader(self, renew: bool = False) -> tuple[ObjectGets, str]:
        """The GETs' connections and the container's URL path (auth once, shared; the token
        is kept in ``_auth`` for ``_token_headers``)."""
        with self._auth_lock:
            if self._gets is None or self._auth is None or renew:
                conn = self.connection()
                if renew:
                    conn.url = conn.token = None  # swiftclient authenticates again
                conn.head_container(self.settings.container)  # auth, with swiftclient's retries
                url, token = conn.url, conn.token
                parts = urlsplit(url)
                origin = f"{parts.scheme}://{parts.netloc}"
                if self._gets is None or self._origin != origin:
                    if self._gets is not None:
                        self._gets.close()
                    s = self.settings
                    self._gets = ObjectGets(origin, connect_timeout=s.timeout, read_timeout=s.timeout,
                                            retries=s.retries, backoff=s.starting_backoff,
                                            max_backoff=s.max_backoff)  # fmt: skip
                    self._origin = origin
                self._auth = (f"{parts.path.rstrip('/')}/{quote(self.settings.container, safe='')}/", token)
            return self._gets, self._auth[0]

    def _token_headers(self, path: str) -> dict[str, str]:
        assert self._auth is not None
        return {"X-Auth-Token": self._auth[1]}

    def _renew(self) -> None:
        self._reader(renew=True)

    def put(self, path: str, name: str, size: int) -> None:
        if size > self.settings.large_object_threshold:
            self._put_large(path, name, size)
            return
        with open(path, "rb") as f:
            self.connection().put_object(self.settings.container, name, contents=f, content_length=size)

    def _put_large(self, path: str, name: str, size: int) -> None:
        conn, s = self.connection(), self.settings
        segments = f"{s.container}_segments"
        conn.put_container(segments)
        base = f"{name}/slo/{time.time():.6f}/{size}/{s.segment_size}"
        manifest = []
        with open(path, "rb") as f:
            for i, offset in enumerate(range(0, size, s.segment_size)):
                length = min(s.segment_size, size - offset)
                f.seek(offset)  # swiftclient rewinds here on a retry
                etag = conn.put_object(segments, f"{base}/{i:08d}", contents=f, content_length=length)
                manifest.append({"path": f"/{segments}/{base}/{i:08d}", "etag": etag, "size_bytes": length})
        conn.put_object(s.container, name, contents=json.dumps(manifest), query_string="multipart-manifest=put")

    def ping(self) -> None:
        s = self.settings
        conn = Connection(authurl=s.auth_url, user=s.username, key=s.key, retries=0, timeout=min(5.0, s.timeout))
        try:
            conn.head_container(s.container)
        finally:
            conn.close()


class SwiftStorage(ObjectStorage):
    """In-network storage on Swift (``STORAGE_ENV=swift``)."""

    store: SwiftStore

    def __init__(self, storebase: StoreBase, settings: SwiftSettings, workers: int = 8, compression: int = 0) -> None:
        super().__init__(storebase, SwiftStore(settings), workers=workers, compression=compression)
        self.settings = settings

    def _conn(self) -> Connection:
        """This thread's swiftclient connection (tests seed and inspect Swift with it)."""
        return self.store.connection()
