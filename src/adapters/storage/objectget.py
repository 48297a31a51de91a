"""Whole-object GETs into files over kept-alive HTTP connections to one object store.

Staging reads thousands of small objects; through boto3 each GET costs about 2 ms of
client CPU (request serialisation, event hooks, the response parser) and through
swiftclient about 1.3 ms (``requests``' session machinery), on a machine where the
store shares the cores with the server. :class:`ObjectGets` does only what a GET of one
object needs: a request line and the headers the store's adapter gives it (a SigV4
signature made by botocore's own signer, a Swift token), over HTTP/1.1 connections kept
alive and shared by the staging threads, the body streamed into the file in 1 MiB
chunks. Everything else (listing, uploads, large objects) stays with the store's own
client (ADR 27).

Retries follow the stores' clients: a dropped connection, a timeout, a 5xx or a 429 is
retried ``retries`` times with exponential backoff and jitter; a body that breaks off
is fetched again from the start, the file truncated; a kept-alive connection found
closed when reused is replaced without counting a try; an expired token (401) is
renewed once when the adapter can. Any other answer raises :class:`ObjectHTTPError`
with the status and the store's error code, never the request's headers. A file that
cannot be written (``ENOSPC``) is never retried.
"""

from __future__ import annotations

import http.client
import random
import re
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

from ..keepalive import CLOSED, IdleConnections

CHUNK = 1 << 20
MAX_IDLE = 64  # idle connections kept (staging threads of every job share them)
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_ERROR_BODY = 64 * 1024  # read at most this of an error answer, for its code
_CODE = re.compile(rb"<Code>([^<]{1,128})</Code>")

Headers = Callable[[str], Mapping[str, str]]


class ObjectHTTPError(Exception):
    """The store answered a GET with an error status (``code``: S3's error code, if any)."""

    def __init__(self, http_status: int, code: str = "") -> None:
        super().__init__(f"HTTP {http_status}{' ' + code if code else ''}")
        self.http_status = http_status
        self.code = code


class _Connection(http.client.HTTPConnection):
    """Connects within ``connect_timeout``, then waits ``read_timeout`` for each read."""

    def __init__(self, host: str, port: int | None, connect_timeout: float, read_timeout: float) -> None:
        super().__init__(host, port, timeout=connect_timeout)
        self.read_timeout = read_timeout

    def connect(self) -> None:
        super().connect()
        assert self.sock is not None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(self.read_timeout)


class _TLSConnection(http.client.HTTPSConnection):
    def __init__(
        self, host: str, port: int | None, connect_timeout: float, read_timeout: float, context: ssl.SSLContext
    ) -> None:
        super().__init__(host, port, timeout=connect_timeout, context=context)
        self.read_timeout = read_timeout

    def connect(self) -> None:
        super().connect()
        assert self.sock is not None
        self.sock.settimeout(self.read_timeout)


def tls_context() -> ssl.SSLContext:
    """The system's trust store (``SSL_CERT_FILE``/``SSL_CERT_DIR`` honoured) plus certifi's
    bundle when installed, which is where boto3 and requests look by default."""
    context = ssl.create_default_context()
    try:
        import certifi

        context.load_verify_locations(certifi.where())
    except (ImportError, OSError):
        pass
    return context


class _BodyBroken(Exception):
    """The answer's body broke off (the network, not the file): fetched again."""


class ObjectGets:
    """GETs of whole objects from one origin (``base_url``: scheme, host, port)."""

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout: float,
        read_timeout: float,
        retries: int,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._sleep = sleep
        self._context = tls_context() if self.https else None
        self._pool = IdleConnections(self._new, MAX_IDLE)

    # -- connections ----------------------------------------------------------
    def _new(self) -> http.client.HTTPConnection:
        if self._context is not None:
            return _TLSConnection(self.host, self.port, self.connect_timeout, self.read_timeout, self._context)
        return _Connection(self.host, self.port, self.connect_timeout, self.read_timeout)

    def close(self) -> None:
        self._pool.close()

    # -- one object -----------------------------------------------------------
    def _pause(self, attempt: int) -> None:
        self._sleep(min(self.max_backoff, self.backoff * 2**attempt) * random.uniform(0.5, 1.0))  # noqa: S311 (jitter)

    def get(self, path: str, headers: Headers, target: str, renew: Callable[[], None] | None = None) -> int:
        """Write the object at ``path`` (already quoted) into file ``target``; its size.

        ``headers(path)`` gives each try's headers (a fresh signature, the current token);
        ``renew()`` is called once on a 401, then the GET is tried again.
        """
        attempt = 0
        renewed = renew is None
        while True:
            conn, reused = self._pool.checkout()
            try:
                conn.request("GET", path, headers=dict(headers(path)))
                response = conn.getresponse()
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                if reused and isinstance(e, CLOSED):
                    continue  # a kept-alive connection closed as it was taken: not a try
                if attempt >= self.retries:
                    raise
                self._pause(attempt)
                attempt += 1
                continue
            status = response.status
            if status == 200:
                try:
                    size = self._write(response, target)
                except _BodyBroken as e:
                    conn.close()
                    if attempt >= self.retries:
                        raise e.__cause__ or e from None
                    self._pause(attempt)
                    attempt += 1
                    continue
                except BaseException:
                    conn.close()
                    raise
                self._done(conn, response)
                return size
            body = self._error_body(conn, response)
            if status == 401 and not renewed and renew is not None:
                renewed = True
                renew()
                continue
            if status in _RETRY_STATUS and attempt < self.retries:
                self._pause(attempt)
                attempt += 1
                continue
            match = _CODE.search(body)
            raise ObjectHTTPError(status, match.group(1).decode("ascii", "replace") if match else "")

    def _write(self, response: http.client.HTTPResponse, target: str) -> int:
        size, expected = 0, response.length  # Content-Length (None: chunked, until the end)
        with open(target, "wb") as f:
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (OSError, http.client.HTTPException) as e:
                    raise _BodyBroken() from e
                if not chunk:
                    if expected is not None and size != expected:
                        # read(n) returns what came before the connection closed, silently
                        raise _BodyBroken() from http.client.IncompleteRead(b"", expected - size)
                    return size
                f.write(chunk)  # a disk error is the caller's, never retried
                size += len(chunk)

    def _done(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse) -> None:
        if response.will_close:
            conn.close()
        else:
            self._pool.checkin(conn)

    def _error_body(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse) -> bytes:
        try:
            body = response.read(_ERROR_BODY)
            complete = response.isclosed()
        except (OSError, http.client.HTTPException):
            conn.close()
            return b""
        if complete:
            self._done(conn, response)
        else:
            conn.close()  # a large error body is not drained: the connection goes
        return body
