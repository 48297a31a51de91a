"""What pfcon's two API generations share: the worker pool, request bodies read as they
arrive, the bearer-token guard, the error table (domain errors to statuses, every error
body ``{"message": ...}``) and the request log."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import structlog
from litestar import HttpMethod, Request, Response, route
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.handlers import BaseRouteHandler
from litestar.routes import HTTPRoute
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from ...domain import errors as E
from ...domain.services import AuthService
from .forms import MAX_FORM_BYTES, FormData, parse_multipart, parse_urlencoded
from .schemas import ErrorBody
from .spool import UploadSpool, no_space

log = structlog.get_logger("pfcon.http")
T = TypeVar("T")

API_PREFIX = "/api/v1"
NOT_FOUND = (
    "The requested URL was not found on the server. If you entered the URL manually "
    "please check your spelling and try again."
)


class Runner:
    """Runs blocking use-case calls in a bounded pool of worker threads."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._limiter: anyio.CapacityLimiter | None = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.threads)
        return await anyio.to_thread.run_sync(partial(fn, *args), limiter=self._limiter)

    async def iterate(self, chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
        try:
            while (chunk := await self.run(next, chunks, None)) is not None:
                yield chunk
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                await self.run(close)


@dataclass(frozen=True, slots=True)
class Uploads:
    spool: UploadSpool
    max_bytes: int


class ClientDisconnected(Exception):
    """The client went away before its request body was complete."""


async def body_chunks(
    request: Request[Any, Any, Any], on_end: Callable[[], None] | None = None
) -> AsyncIterator[bytes]:
    """The request body as it arrives; ClientDisconnected if the client goes away.
    ``on_end()`` is called once the body has been received whole, before its last chunk."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk: bytes = message.get("body", b"")  # type: ignore[assignment]
        last = not message.get("more_body", False)
        if last and on_end is not None:
            on_end()
        if chunk:
            yield chunk
        if last:
            return


async def read_form(request: Request[Any, Any, Any], spool: UploadSpool, max_upload: int) -> FormData:
    content_type, params = request.content_type
    if content_type == "multipart/form-data":
        boundary = params.get("boundary")
        if not boundary:
            raise E.InvalidJobSpec("Invalid multipart/form-data: no boundary")
        with spool.slot() as slot:
            return await parse_multipart(body_chunks(request, slot.release), boundary, spool, max_upload)
    if content_type == "application/x-www-form-urlencoded":
        body = bytearray()
        async for chunk in body_chunks(request):
            body.extend(chunk)
            if len(body) > MAX_FORM_BYTES:
                raise E.InputTooLarge("the form is too large")
        return parse_urlencoded(bytes(body))
    return FormData()  # pfcon reads form data only: anything else has no fields


def bind_job_id(jid: str) -> None:
    structlog.contextvars.bind_contextvars(job_id=jid)


def options_handler(paths: list[str]) -> Any:
    """OPTIONS for paths served by several handlers: Litestar 2's default handler lists
    the methods of the first one registered only (litestar-org/litestar#4169). Register
    it first on its router."""

    @route(paths, http_method=HttpMethod.OPTIONS, include_in_schema=False, sync_to_thread=False)
    def options(request: Request[Any, Any, Any]) -> Response[None]:
        template = request.scope["path_template"]
        methods = next(r.methods for r in request.app.routes if isinstance(r, HTTPRoute) and r.path_format == template)
        return Response(
            content=None, status_code=204, headers={"Allow": ", ".join(sorted(methods))}, media_type="text/plain"
        )

    return options


# -- auth guard -------------------------------------------------------------


async def require_token(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    # async on purpose: an HMAC check takes microseconds, while Litestar runs a sync guard
    # in a worker thread (a thread hop of 0.15-0.2 ms on every authenticated request).
    auth: NamedDependency[AuthService] = connection.app.state.auth_service
    auth.authorize(connection.headers.get("authorization"))


# -- errors -------------------------------------------------------------------

STATUS_BY_ERROR: tuple[tuple[type[E.DomainError], int], ...] = (
    (E.JobConflict, 409),
    (E.InvalidCredentials, 400),
    (E.AuthError, 401),
    (E.InputTooLarge, 413),
    (E.InvalidFields, 400),
    (E.InvalidJobSpec, 400),
    (E.InvalidInputData, 400),
    (E.ImageNotAvailable, 400),
    (E.JobNotFound, 404),
    (E.OutputNotFound, 404),
    (E.JobAlreadyExists, 409),
    (E.ResourceUnavailable, 503),
    (E.BackendUnavailable, 503),
    (E.ServerBusy, 503),
    (E.StorageFull, 507),
)


def status_for(error: E.DomainError) -> int:
    for cls, code in STATUS_BY_ERROR:
        if isinstance(error, cls):
            return code
    return 500


def _json(status: int, message: Any, headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(
        content=ErrorBody(message=message), status_code=status, media_type="application/json", headers=headers
    )


def domain_error_handler(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    assert isinstance(exc, E.DomainError)
    status = status_for(exc)
    if status >= 500:
        log.warning("backend_error", error=exc.message, error_type=type(exc).__name__)
    if isinstance(exc, E.InvalidFields):
        return _json(status, exc.problems)
    return _json(status, exc.message)


def http_error_handler(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return _json(404, NOT_FOUND)
    if exc.status_code == 405:  # Litestar's router says which methods are (Allow)
        return _json(405, "The method is not allowed for the requested URL.", exc.headers)
    if exc.status_code >= 500:
        if "client disconnected" in str(exc.detail):  # Litestar's own body reader
            return disconnect_handler(_, exc)
        return internal_error_handler(_, exc)
    return _json(exc.status_code, exc.detail, exc.headers)


def internal_error_handler(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if isinstance(exc, OSError) and (full := no_space(exc)) is not None:
        return domain_error_handler(_, full)
    log.error("unhandled_error", error_type=type(exc).__name__, exc_info=exc)
    return _json(500, "Internal Server Error")


CLIENT_CLOSED = 499  # nginx's code for "the client closed the request"; nobody receives it


def disconnect_handler(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.info("client_disconnected", detail="the client went away before its request was complete")
    return _json(CLIENT_CLOSED, "client disconnected")


# -- request logging ---------------------------------------------------------


def request_logging(app: ASGIApp) -> ASGIApp:
    """One JSON line per request: request id, route, job id, status, duration."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        given = b""
        for name, value in scope.get("headers") or ():
            if name == b"x-request-id":
                given = value
                break
        request_id = given.decode("latin-1")[:64] or os.urandom(16).hex()  # (uuid4's bits, 8x cheaper)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id, method=scope["method"], route=scope["path"])
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        try:
            await app(scope, receive, send_wrapper)
        finally:
            log.info(
                "request",
                status=status,
                outcome=_outcome(status),
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
            )

    return middleware


def _outcome(status: int) -> str:
    if status == CLIENT_CLOSED:
        return "client_disconnected"
    return "ok" if status < 400 else ("client_error" if status < 500 else "server_error")
