"""The seed-era pfcon REST API (``/api/v1/``) on Litestar.

Handlers are thin: they parse pfcon's wire format, call a use case in a bounded
worker pool (every port is synchronous and may block) and render pfcon's bodies.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import msgspec
import structlog
from litestar import Litestar, Request, Response, Router, delete, get, post
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath
from litestar.exceptions import HTTPException
from litestar.handlers import BaseRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.response import Stream
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from ...bootstrap import Container, wire_up
from ...domain import errors as E
from ...domain.model import JobInfo, StagedData
from ...domain.ports import StagingRequest, ZipStream
from ...domain.services import AuthService, JobService
from .forms import MAX_FORM_BYTES, FormData, job_spec_from_form, parse_multipart, parse_urlencoded

log = structlog.get_logger("pfcon.http")
T = TypeVar("T")

API_PREFIX = "/api/v1"
NOT_FOUND = (
    "The requested URL was not found on the server. If you entered the URL manually "
    "please check your spelling and try again."
)
AUTH_MISSING = "Missing required parameter in the JSON body or the post body or the query string"


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


def compute_body(info: JobInfo, jid: str, logs: str) -> dict[str, Any]:
    return {
        "jid": jid,
        "image": info.image,
        "cmd": info.cmd,
        "status": info.status.value,
        "message": info.message,
        "timestamp": info.timestamp,
        "logs": logs,
    }


def data_body(data: StagedData, jid: str) -> dict[str, Any]:
    return {"jid": jid, "nfiles": data.nfiles, "timestamp": data.timestamp, "path": data.path}


# -- handlers -------------------------------------------------------------


@get("/health/", sync_to_thread=False)
def health() -> dict[str, str]:
    return {"health": "OK"}


@post("/auth-token/", status_code=200)
async def auth_token(request: Request[Any, Any, Any], auth: NamedDependency[AuthService]) -> dict[str, str]:
    content_type = request.headers.get("content-type", "")
    if not content_type.split(";")[0].strip().lower().endswith("json"):
        raise HTTPException(
            status_code=415,
            detail="Did not attempt to load JSON data because the request Content-Type "
            "was not 'application/json'.",
        )
    try:
        payload = msgspec.json.decode(await request.body())
    except msgspec.DecodeError:
        raise HTTPException(status_code=400, detail="Failed to decode JSON object") from None
    values = dict(payload) if isinstance(payload, dict) else {}
    values.update(request.query_params.dict())
    creds = {k: values.get(k) for k in ("pfcon_user", "pfcon_password")}
    missing = {k: AUTH_MISSING for k, v in creds.items() if v is None}
    if missing:
        raise E.InvalidFields(missing)

    def text(v: Any) -> str:
        return v[0] if isinstance(v, list) and v else str(v)

    return {"token": auth.login(text(creds["pfcon_user"]), text(creds["pfcon_password"]))}


@get("/jobs/", sync_to_thread=False)
def server_info(jobs: NamedDependency[JobService]) -> dict[str, Any]:
    info = jobs.server_info()
    body: dict[str, Any] = {
        "server_version": info.server_version,
        "pfcon_innetwork": info.pfcon_innetwork,
        "storage_env": info.storage_env,
        "container_env": info.container_env,
        "compute_volume_type": info.compute_volume_type,
    }
    body.update(info.extra)
    return body


async def _read_form(request: Request[Any, Any, Any], upload_dir: str | None, max_upload: int) -> FormData:
    content_type, params = request.content_type
    if content_type == "multipart/form-data":
        boundary = params.get("boundary")
        if not boundary:
            raise E.InvalidJobSpec("Invalid multipart/form-data: no boundary")
        return await parse_multipart(request.stream(), boundary, upload_dir, max_upload)
    if content_type == "application/x-www-form-urlencoded":
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > MAX_FORM_BYTES:
                raise E.InputTooLarge("the form is too large")
        return parse_urlencoded(bytes(body))
    return FormData()  # pfcon reads form data only: anything else has no fields


@post("/jobs/", status_code=201, request_max_body_size=None)
async def submit_job(
    request: Request[Any, Any, Any], jobs: NamedDependency[JobService], runner: NamedDependency[Runner], upload_limits: NamedDependency[tuple[str | None, int]]
) -> dict[str, Any]:
    form = await _read_form(request, *upload_limits)
    try:
        spec = job_spec_from_form(form)
        structlog.contextvars.bind_contextvars(job_id=spec.jid)
        staging = StagingRequest(
            upload_path=form.upload_path, input_dirs=spec.input_dirs, output_dir=spec.output_dir
        )
        result = await runner.run(jobs.submit, spec, staging)
    finally:
        if form.upload_path is not None:
            await runner.run(form.discard_upload)
    return {"data": data_body(result.data, spec.jid), "compute": compute_body(result.info, spec.jid, "")}


@get("/jobs/{jid:str}/")
async def job_status(jid: FromPath[str], jobs: NamedDependency[JobService], runner: NamedDependency[Runner]) -> dict[str, Any]:
    structlog.contextvars.bind_contextvars(job_id=jid)
    state = await runner.run(jobs.status, jid)
    return {"compute": compute_body(state.info, jid, state.logs)}


@delete("/jobs/{jid:str}/", status_code=204)
async def delete_job(jid: FromPath[str], jobs: NamedDependency[JobService], runner: NamedDependency[Runner]) -> None:
    structlog.contextvars.bind_contextvars(job_id=jid)
    await runner.run(jobs.delete, jid)


@get("/jobs/{jid:str}/file/")
async def job_file(request: Request[Any, Any, Any], jid: FromPath[str], jobs: NamedDependency[JobService], runner: NamedDependency[Runner]) -> Response[Any]:
    structlog.contextvars.bind_contextvars(job_id=jid)
    job_output_path = request.query_params.get("job_output_path")
    out = await runner.run(jobs.outputs, jid, job_output_path)
    if isinstance(out, ZipStream):
        return Stream(
            runner.iterate(out.chunks),
            media_type="application/zip",
            headers={
                "Content-Disposition": f"attachment; filename={out.filename}",
                "Cache-Control": "no-cache",
            },
        )
    return Response(
        content={"job_output_path": out.job_output_path, "rel_file_paths": list(out.rel_file_paths)},
        media_type="application/json",
        headers={"Content-Disposition": f"attachment; filename={jid}.json", "Cache-Control": "no-cache"},
    )


# -- auth guard -------------------------------------------------------------


def require_token(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    auth: NamedDependency[AuthService] = connection.app.state.auth_service
    auth.authorize(connection.headers.get("authorization"))


# -- errors -------------------------------------------------------------------

STATUS_BY_ERROR: tuple[tuple[type[E.DomainError], int], ...] = (
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
)


def status_for(error: E.DomainError) -> int:
    for cls, code in STATUS_BY_ERROR:
        if isinstance(error, cls):
            return code
    return 500


def _json(status: int, message: Any) -> Response[Any]:
    return Response(content={"message": message}, status_code=status, media_type="application/json")


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
    if exc.status_code == 405:
        return _json(405, "The method is not allowed for the requested URL.")
    if exc.status_code >= 500:
        return internal_error_handler(_, exc)
    return _json(exc.status_code, exc.detail)


def internal_error_handler(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.error("unhandled_error", error_type=type(exc).__name__, exc_info=exc)
    return _json(500, "Internal Server Error")


# -- request logging ---------------------------------------------------------


def request_logging(app: ASGIApp) -> ASGIApp:
    """One JSON line per request: request id, route, job id, status, duration."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or uuid.uuid4().hex
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(
            request_id=request_id, method=scope["method"], route=scope["path"]
        )
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
                outcome="ok" if status < 400 else ("client_error" if status < 500 else "server_error"),
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
            )

    return middleware


# -- application -------------------------------------------------------------


def create_app(container: Container) -> Litestar:
    job_service, auth_service = wire_up(container)
    settings = container.settings()
    runner = Runner(settings.worker_threads)
    jobs_router = Router(
        path="/",
        route_handlers=[server_info, submit_job, job_status, delete_job, job_file],
        guards=[require_token],
    )
    api = Router(path=API_PREFIX, route_handlers=[health, auth_token, jobs_router])
    app = Litestar(
        route_handlers=[api],
        dependencies={
            "jobs": Provide(lambda: job_service, sync_to_thread=False),
            "auth": Provide(lambda: auth_service, sync_to_thread=False),
            "runner": Provide(lambda: runner, sync_to_thread=False),
            "upload_limits": Provide(
                lambda: (settings.upload_dir, settings.zip_max_upload_bytes), sync_to_thread=False
            ),
        },
        exception_handlers={
            E.DomainError: domain_error_handler,
            HTTPException: http_error_handler,
            Exception: internal_error_handler,
        },
        middleware=[request_logging],
        openapi_config=OpenAPIConfig(title="pfcon", version=job_service.server_info().server_version, path="/api/v1/schema"),
        debug=False,
    )
    app.state.auth_service = auth_service
    app.state.container = container
    return app
