"""The Docker adapter's per-job calls, spoken directly over the engine's Unix socket.

Every submission creates and starts a container, and every status request of a running
job reads its logs: the calls the server makes most. Through the docker SDK each one
costs about 1.5 ms of CPU in ``requests`` and the SDK around the engine's own work (the
session's hooks, proxy and netrc lookups in the environment, urllib3's pool) and
``logs()`` inspects the container once more to learn whether it has a TTY. On two cores
shared with the engine that CPU is on the submission's path. ``DirectEngineAPI`` makes
exactly these four calls — ``create_container``, ``start``, ``inspect_container`` and
``logs`` — as plain HTTP/1.1 requests over kept-alive connections to the same socket,
with the SDK's own request body and URL, and raises the SDK's own errors
(``docker.errors.NotFound``, ``ImageNotFound``, ``APIError`` with the engine's status
and explanation; ``requests`` connection errors), so the adapter's handling of each
outcome is unchanged. Every other attribute is the SDK client's (ADR 25).
"""

from __future__ import annotations

import http.client
import json
import socket
import struct
from typing import Any
from urllib.parse import quote, urlencode

import docker
import docker.errors
import requests
import requests.exceptions
from docker.transport import UnixHTTPAdapter
from requests.structures import CaseInsensitiveDict

from ..keepalive import CLOSED, IdleConnections
from .engine_connections import POOL_KEY

# Idle connections kept per engine socket (the server's worker threads share them).
MAX_IDLE = 32
_FRAME = struct.Struct(">BxxxL")  # a multiplexed log frame's header: stream, 3 zero bytes, size


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def demux_logs(raw: bytes) -> bytes:
    """The payload of the engine's multiplexed log stream (8-byte frame headers: stream
    0/1/2, three zero bytes, big-endian size) joined, stdout and stderr in their order,
    as the SDK's ``logs()`` returns it. A body that is not a well-formed frame sequence
    (a TTY container's raw stream) is returned as it is."""
    parts: list[bytes] = []
    view = memoryview(raw)
    offset, end = 0, len(raw)
    while offset < end:
        if end - offset < _FRAME.size:
            return raw
        stream, size = _FRAME.unpack_from(view, offset)
        if stream > 2 or raw[offset + 1 : offset + 4] != b"\0\0\0" or offset + _FRAME.size + size > end:
            return raw
        offset += _FRAME.size
        parts.append(bytes(view[offset : offset + size]))
        offset += size
    return b"".join(parts)


class DirectEngineAPI:
    """The SDK's ``APIClient`` with its four per-job calls made directly (module doc)."""

    def __init__(self, api: Any, socket_path: str) -> None:
        self._api = api
        self._socket_path = socket_path
        self._timeout: float | None = getattr(api, "timeout", None)
        self._pool = IdleConnections(lambda: _UnixConnection(socket_path, self._timeout), MAX_IDLE)

    def __getattr__(self, name: str) -> Any:  # everything else: the SDK client's
        return getattr(self._api, name)

    # -- the four calls -----------------------------------------------------
    def create_container(
        self, image: str, command: Any = None, *, name: str | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        config = self._api.create_container_config(image, command, **kwargs)
        body = {k: v for k, v in config.items() if v is not None}  # as the SDK's _post_json
        path = "/containers/create" + (f"?{urlencode({'name': name})}" if name is not None else "")
        return self._json(self._call("POST", path, json.dumps(body).encode()))

    def start(self, container: str) -> None:
        self._call("POST", f"/containers/{self._quote(container)}/start", b"")

    def inspect_container(self, container: str) -> dict[str, Any]:
        return self._json(self._call("GET", f"/containers/{self._quote(container)}/json"))

    def logs(self, container: str, stdout: bool = True, stderr: bool = True, tail: int | str = "all") -> bytes:
        if tail != "all" and (not isinstance(tail, int) or tail < 0):
            tail = "all"
        query = urlencode({"stderr": int(stderr), "stdout": int(stdout), "timestamps": 0, "follow": 0, "tail": tail})
        return demux_logs(self._call("GET", f"/containers/{self._quote(container)}/logs?{query}"))

    # -- transport ----------------------------------------------------------
    @staticmethod
    def _quote(ref: str) -> str:
        """A container reference as one path segment (the SDK's checks: a non-empty string)."""
        if not ref:
            raise docker.errors.NullResource("Resource ID was not provided")
        if not isinstance(ref, str):
            raise ValueError(f"Expected a string but found {ref} ({type(ref)}) instead")
        return quote(ref, safe="")

    @staticmethod
    def _json(body: bytes) -> dict[str, Any]:
        """The JSON object of an answer; anything else is the engine's fault, as through the
        SDK (``requests``' JSON error: the adapter's engine errors)."""
        try:
            value = json.loads(body)
        except ValueError as e:
            raise requests.exceptions.InvalidJSONError(f"the engine's answer is not JSON: {e}") from None
        if not isinstance(value, dict):
            raise requests.exceptions.InvalidJSONError("the engine's answer is not a JSON object")
        return value

    def close_direct(self) -> None:
        """Close the kept-alive connections of the direct calls (the SDK client's are its own)."""
        self._pool.close()

    def close(self) -> None:
        self.close_direct()
        self._api.close()

    def _call(self, method: str, path: str, body: bytes | None = None) -> bytes:
        """One request; the body of a 1xx-3xx answer, else the SDK's error for it."""
        url = f"/v{self._api._version}{path}"
        headers = {"Content-Type": "application/json"} if body else {}
        for attempt in (1, 2):
            conn, reused = self._pool.checkout()
            try:
                conn.request(method, url, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                if reused and attempt == 1 and isinstance(e, CLOSED):
                    # A kept-alive connection the engine closed as it was taken (an idle
                    # connection's close crossing the request): no answer began, so the
                    # engine did not take the request; it is sent once more, on a new one.
                    continue
                if isinstance(e, TimeoutError):
                    raise requests.exceptions.ReadTimeout(f"engine: {e}") from None
                raise requests.exceptions.ConnectionError(f"engine connection: {e}") from None
            if response.will_close:
                conn.close()
            else:
                self._pool.checkin(conn)
            if response.status >= 400:
                self._raise(response, url, data)
            return data
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _raise(response: http.client.HTTPResponse, url: str, data: bytes) -> None:
        """The SDK's own error for an engine's error answer (docker.errors)."""
        answer = requests.Response()
        answer.status_code = response.status
        answer.reason = response.reason
        answer.url = f"{POOL_KEY}{url}"
        answer.headers = CaseInsensitiveDict(response.getheaders())
        answer._content = data
        answer.encoding = "utf-8"
        docker.errors.create_api_error_from_http_exception(
            requests.exceptions.HTTPError(f"{response.status} {response.reason}", response=answer)
        )


def direct_engine_api(api: Any) -> Any:
    """``api`` with its per-job calls made directly when it reaches the engine over a Unix
    socket; ``api`` itself otherwise (TCP, TLS, SSH, or a test's fake)."""
    adapter: Any = getattr(api, "_custom_adapter", None)
    if not isinstance(adapter, UnixHTTPAdapter) or not isinstance(api, docker.APIClient):
        return api
    return DirectEngineAPI(api, adapter.socket_path)
