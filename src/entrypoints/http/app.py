"""The seed-era pfcon REST API (``/api/v1/``) on Litestar.

Handlers are thin: they parse pfcon's wire format, call a use case in a bounded
worker pool (every port is synchronous and may block) and render pfcon's bodies.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import msgspec
import structlog
from litestar import HttpMethod, Litestar, Request, Response, Router, delete, get, post, route
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency, Provide
from litestar.openapi import ResponseSpec
from litestar.params import FromPath
from litestar.exceptions import HTTPException
from litestar.handlers import BaseRouteHandler
from litestar.response import Stream
from litestar.routes import HTTPRoute
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from ...bootstrap import Container, wire_up
from ...domain import errors as E
from ...domain.model import JobInfo, StagedData
from ...domain.ports import StagingRequest, ZipStream
from ...domain.services import AuthService, JobService
from . import docs
from .docs import errors
from .forms import MAX_FORM_BYTES, FormData, job_spec_from_form, parse_multipart, parse_urlencoded
from .schemas import (
    BackendCheck,
    ErrorBody,
    HealthBody,
    JobCompute,
    JobData,
    OutputListingBody,
    ReadinessBody,
    ServerInfoBody,
    StatusBody,
    SubmitBody,
    TokenBody,
)
from .spool import UploadSpool, no_space

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


def compute_body(info: JobInfo, jid: str, logs: str) -> JobCompute:
    return JobCompute(
        jid=jid,
        image=info.image,
        cmd=info.cmd,
        status=info.status.value,  # a StatusValue (checked in schemas)
        message=info.message,
        timestamp=info.timestamp,
        logs=logs,
    )


def data_body(data: StagedData, jid: str) -> JobData:
    return JobData(jid=jid, nfiles=data.nfiles, timestamp=data.timestamp, path=data.path)


# -- handlers -------------------------------------------------------------
# Each handler lists the error statuses it answers (errors(...)); 500 is possible anywhere.


@get(
    "/health/",
    sync_to_thread=False,
    tags=["health"],
    response_description="The server is up.",
    responses=errors(500),
    operation_class=docs.PlainOperation,
)
def health() -> HealthBody:
    """Whether the server is up (pfcon's health check); it does not probe the backends."""
    return HealthBody(health="OK")


@get(
    "/ready/",
    tags=["health"],
    response_description="Every backend answers.",
    responses={
        503: ResponseSpec(
            data_container=ReadinessBody,
            description="Not ready: `message` names the backends that do not answer.",
            generate_examples=False,
        ),
        **errors(500),
    },
    operation_class=docs.PlainOperation,
)
async def readiness(jobs: NamedDependency[JobService], runner: NamedDependency[Runner]) -> Response[ReadinessBody]:
    """Whether every backend answers now: 200 when all do, else 503 naming those that don't."""
    checks = await runner.run(jobs.readiness)
    ready = all(c.ok for c in checks)
    body = ReadinessBody(
        ready=ready,
        backends=[BackendCheck(kind=c.kind, name=c.name, ok=c.ok, message=c.message) for c in checks],  # type: ignore[arg-type]
    )
    if not ready:
        body.message = "not ready: " + "; ".join(f"{c.kind} ({c.name}): {c.message}" for c in checks if not c.ok)
    return Response(content=body, status_code=200 if ready else 503, media_type="application/json")


@post(
    "/auth-token/",
    status_code=200,
    tags=["auth"],
    response_description="A token, valid for 48 hours.",
    responses=errors(400, 413, 415, 500),
    operation_class=docs.operation(request_body=docs.CREDENTIALS_BODY),
)
async def auth_token(request: Request[Any, Any, Any], auth: NamedDependency[AuthService]) -> TokenBody:
    """A bearer token for the jobs routes, for pfcon's user and password."""
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
        return str(v[0] if isinstance(v, list) and v else v)

    return TokenBody(token=auth.login(text(creds["pfcon_user"]), text(creds["pfcon_password"])))


@get(
    "/jobs/",
    sync_to_thread=False,
    tags=["jobs"],
    response_description="How this server runs jobs.",
    responses=errors(401, 500),
    operation_class=docs.PlainOperation,
)
def server_info(jobs: NamedDependency[JobService]) -> ServerInfoBody:
    """How this server runs jobs: its version, storage and container environments."""
    info = jobs.server_info()
    body = {
        "server_version": info.server_version,
        "pfcon_innetwork": info.pfcon_innetwork,
        "storage_env": info.storage_env,
        "container_env": info.container_env,
        "compute_volume_type": info.compute_volume_type,
        **dict(info.extra),
    }
    return msgspec.convert(body, ServerInfoBody)


class ClientDisconnected(Exception):
    """The client went away before its request body was complete."""


async def body_chunks(request: Request[Any, Any, Any]) -> AsyncIterator[bytes]:
    """The request body as it arrives; ClientDisconnected if the client goes away."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk: bytes = message.get("body", b"")  # type: ignore[assignment]
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


async def _read_form(request: Request[Any, Any, Any], spool: UploadSpool, max_upload: int) -> FormData:
    content_type, params = request.content_type
    if content_type == "multipart/form-data":
        boundary = params.get("boundary")
        if not boundary:
            raise E.InvalidJobSpec("Invalid multipart/form-data: no boundary")
        with spool.slot():
            return await parse_multipart(body_chunks(request), boundary, spool, max_upload)
    if content_type == "application/x-www-form-urlencoded":
        body = bytearray()
        async for chunk in body_chunks(request):
            body.extend(chunk)
            if len(body) > MAX_FORM_BYTES:
                raise E.InputTooLarge("the form is too large")
        return parse_urlencoded(bytes(body))
    return FormData()  # pfcon reads form data only: anything else has no fields


async def submit_job(
    request: Request[Any, Any, Any],
    jobs: NamedDependency[JobService],
    runner: NamedDependency[Runner],
    uploads: NamedDependency[Uploads],
) -> SubmitBody:
    """Stage the job's input and schedule it (pfcon's job descriptors as form fields)."""
    form = await _read_form(request, uploads.spool, uploads.max_bytes)
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
    return SubmitBody(data=data_body(result.data, spec.jid), compute=compute_body(result.info, spec.jid, ""))


def submit_job_handler(innetwork: bool) -> Any:
    """POST jobs/, documented with the form fields of this server's storage mode."""
    return post(
        "/jobs/",
        status_code=201,
        request_max_body_size=None,
        tags=["jobs"],
        response_description="The job's input is staged and the job is scheduled.",
        responses=errors(400, 401, 409, 413, 500, 503, 507),
        operation_class=docs.operation(request_body=docs.job_form_body(innetwork)),
    )(submit_job)


@get(
    "/jobs/{jid:str}/",
    tags=["jobs"],
    response_description="The job's status.",
    responses=errors(401, 404, 500, 503),
    operation_class=docs.PlainOperation,
)
async def job_status(jid: FromPath[str], jobs: NamedDependency[JobService], runner: NamedDependency[Runner]) -> StatusBody:
    """The job's status and the tail of its logs."""
    structlog.contextvars.bind_contextvars(job_id=jid)
    state = await runner.run(jobs.status, jid)
    return StatusBody(compute=compute_body(state.info, jid, state.logs))


@delete(
    "/jobs/{jid:str}/",
    status_code=204,
    tags=["jobs"],
    response_description="The job and its data are gone.",
    responses=errors(401, 404, 500, 503),
    operation_class=docs.PlainOperation,
)
async def delete_job(jid: FromPath[str], jobs: NamedDependency[JobService], runner: NamedDependency[Runner]) -> None:
    """Remove the job's container and its data."""
    structlog.contextvars.bind_contextvars(job_id=jid)
    await runner.run(jobs.delete, jid)


@get(
    "/jobs/{jid:str}/file/",
    tags=["jobs"],
    responses={
        200: ResponseSpec(
            data_container=OutputListingBody,
            description="The job's output: a zip of its files (application/zip), or in in-network modes "
            "with `job_output_path` a JSON listing of the files (application/json).",
            generate_examples=False,
        ),
        **errors(400, 401, 404, 500, 503),
    },
    operation_class=docs.operation(
        parameters=[docs.JOB_OUTPUT_PATH],
        extra_200={"application/zip": docs.ZIP_CONTENT},
        headers_200=docs.ATTACHMENT_HEADERS,
    ),
)
async def job_file(
    request: Request[Any, Any, Any], jid: FromPath[str], jobs: NamedDependency[JobService], runner: NamedDependency[Runner]
) -> Response[Any]:
    """The job's output files."""
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
        content=OutputListingBody(job_output_path=out.job_output_path, rel_file_paths=list(out.rel_file_paths)),
        media_type="application/json",
        headers={"Content-Disposition": f"attachment; filename={jid}.json", "Cache-Control": "no-cache"},
    )


@route(["/jobs/", "/jobs/{jid:str}/"], http_method=HttpMethod.OPTIONS, include_in_schema=False, sync_to_thread=False)
def jobs_options(request: Request[Any, Any, Any]) -> Response[None]:
    """OPTIONS for the paths served by several handlers: Litestar 2's default handler lists
    the methods of the first one registered only (litestar-org/litestar#4169)."""
    template = request.scope["path_template"]
    methods = next(r.methods for r in request.app.routes if isinstance(r, HTTPRoute) and r.path_format == template)
    return Response(content=None, status_code=204, headers={"Allow": ", ".join(sorted(methods))}, media_type="text/plain")


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
    (E.ServerBusy, 503),
    (E.StorageFull, 507),
)


def status_for(error: E.DomainError) -> int:
    for cls, code in STATUS_BY_ERROR:
        if isinstance(error, cls):
            return code
    return 500


def _json(status: int, message: Any, headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(content=ErrorBody(message=message), status_code=status, media_type="application/json", headers=headers)


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
                outcome=_outcome(status),
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
            )

    return middleware


def _outcome(status: int) -> str:
    if status == CLIENT_CLOSED:
        return "client_disconnected"
    return "ok" if status < 400 else ("client_error" if status < 500 else "server_error")


# -- application -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Uploads:
    spool: UploadSpool
    max_bytes: int


def create_app(container: Container) -> Litestar:
    job_service, auth_service = wire_up(container)
    settings = container.settings()
    runner = Runner(settings.app.worker_threads)
    uploads = Uploads(
        UploadSpool(settings.http.upload_dir, settings.http.max_uploads, settings.storage.reserve_bytes),
        settings.http.zip_max_upload_bytes,
    )

    async def startup() -> None:
        await anyio.to_thread.run_sync(uploads.spool.start)
        await anyio.to_thread.run_sync(job_service.recover)

    async def shutdown() -> None:
        await anyio.to_thread.run_sync(uploads.spool.stop)

    info = job_service.server_info()
    jobs_router = Router(
        path="/",
        route_handlers=[
            jobs_options,  # first: else Litestar's default OPTIONS handler of the path's first handler wins
            server_info,
            submit_job_handler(info.pfcon_innetwork),
            job_status,
            delete_job,
            job_file,
        ],
        guards=[require_token],
        security=docs.SECURITY,
    )
    api = Router(path=API_PREFIX, route_handlers=[health, readiness, auth_token, jobs_router])
    app = Litestar(
        route_handlers=[api, docs.static_assets_router()],
        dependencies={
            "jobs": Provide(lambda: job_service, sync_to_thread=False),
            "auth": Provide(lambda: auth_service, sync_to_thread=False),
            "runner": Provide(lambda: runner, sync_to_thread=False),
            "uploads": Provide(lambda: uploads, sync_to_thread=False),
        },
        exception_handlers={
            ClientDisconnected: disconnect_handler,
            E.DomainError: domain_error_handler,
            HTTPException: http_error_handler,
            Exception: internal_error_handler,
        },
        middleware=[request_logging],
        on_startup=[startup],
        on_shutdown=[shutdown],
        request_max_body_size=settings.http.max_body_bytes,
        openapi_config=docs.openapi_config("pfcon", info.server_version),
        debug=False,
    )
    app.state.auth_service = auth_service
    app.state.container = container
    return app
