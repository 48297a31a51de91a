"""Serving the app with uvicorn, with bounds a hostile client cannot push past.

uvicorn's httptools protocol buffers a request head of any size and waits for it
forever. :class:`BoundedHttpToolsProtocol` counts the bytes of each request head as
they arrive and refuses an over-long one with 431 before buffering more; it gives a
client ``header_timeout`` seconds to send a whole head (slowloris) and closes a
connection whose body stalls for ``body_timeout`` seconds while the server waits for
it. Connections beyond ``max_connections`` get uvicorn's 503.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import structlog
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = structlog.get_logger("pfcon.http")


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_header_bytes: int = 64 * 1024
    header_timeout: float = 30.0
    body_timeout: float = 60.0


def _raw_response(status: int, reason: str, message: str) -> bytes:
    body = ('{"message": "' + message.replace('"', "'") + '"}').encode("utf-8")
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    ).encode("ascii")
    return head + body


class HeadTooLarge(Exception):
    """Raised from a parser callback to abandon a request whose head is too large."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    limits = ConnectionLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._head_exact = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None

    # -- the request head ----------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        # Counted per read (at most one socket read, 256 KiB, past the limit is ever
        # parsed); a read that completes the head resets the count in on_headers_complete.
        if self._in_head:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)
            self._head_bytes += len(data)
        elif self._body_timer is not None:
            self._arm_body_timer()
        super().data_received(data)
        if self._in_head and self._head_bytes > self.limits.max_header_bytes:
            self._refuse(
                431,
                "Request Header Fields Too Large",
                f"the request line and headers exceed {self.limits.max_header_bytes} bytes",
            )

    # The exact size of a head that arrived whole in one read is only known here.
    def on_url(self, url: bytes) -> None:
        self._head_exact += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_exact += len(name) + len(value) + 4  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        exact, self._head_exact = self._head_exact, 0
        self._in_head = False
        self._head_bytes = 0
        self._cancel_head_timer()
        if exact > self.limits.max_header_bytes:
            self._refuse(
                431,
                "Request Header Fields Too Large",
                f"the request line and headers exceed {self.limits.max_header_bytes} bytes",
            )
            raise HeadTooLarge  # stops the parser: the request is never dispatched
        self._arm_body_timer()
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if not self.transport.is_closing():  # not after a 431/408 already sent
            super().send_400_response(msg)

    def on_message_complete(self) -> None:
        self._cancel_body_timer()
        self._in_head = True
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        self._cancel_body_timer()
        super().connection_lost(exc)

    # -- timers ----------------------------------------------------------------------
    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and self._head_bytes and not self.transport.is_closing():
            log.info("client_timeout", phase="headers", client=_client(self.client))
            self._refuse(408, "Request Timeout", "the request headers were not received in time")

    def _arm_body_timer(self) -> None:
        self._cancel_body_timer()
        self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_timed_out)

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if self.transport.is_closing() or self._in_head:
            return
        if self.flow is not None and self.flow.read_paused:
            self._arm_body_timer()  # the server is not reading: not the client's fault
            return
        log.info("client_timeout", phase="body", client=_client(self.client))
        if self.cycle is not None and not self.cycle.response_started:
            self.transport.write(_raw_response(408, "Request Timeout", "the request body stalled"))
        self.transport.close()

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _refuse(self, status: int, reason: str, message: str) -> None:
        self._cancel_head_timer()
        if not self.transport.is_closing():
            self.transport.write(_raw_response(status, reason, message))
            self.transport.close()


def _client(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "-"


def bounded_protocol(limits: ConnectionLimits) -> type[BoundedHttpToolsProtocol]:
    """A protocol class carrying ``limits`` (uvicorn instantiates it per connection)."""
    return type("BoundedHttpToolsProtocol", (BoundedHttpToolsProtocol,), {"limits": limits})


def serve(settings: Any, host: str | None = None, port: int | None = None) -> None:
    """Run the HTTP API until stopped (``pfcon serve``)."""
    from ...bootstrap import build_container
    from ..logs import configure_logging
    from .app import create_app

    configure_logging(settings.app.log_level, tracing=bool(settings.tracing.exporters))
    run_app(create_app(build_container(settings)), settings, host, port)


def run_app(app: Any, settings: Any, host: str | None = None, port: int | None = None) -> None:
    """Serve ``app`` with uvicorn and this module's connection bounds."""
    import uvicorn

    http = settings.http
    uvicorn.run(
        app,
        host=host or settings.app.host,
        port=port or settings.app.port,
        http=bounded_protocol(ConnectionLimits(http.max_header_bytes, http.header_timeout, http.body_timeout)),
        limit_concurrency=http.max_connections,
        access_log=False,
        log_level="warning",
        log_config=None,  # uvicorn's warnings reach the root logger: JSON lines like the rest
        timeout_keep_alive=30,
    )
