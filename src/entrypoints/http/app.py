"""The HTTP API on Litestar: both API generations, assembled.

* ``v5`` — pfcon 5's ``/api/v1/jobs/`` (python-pfconclient 3.x);
* ``v6`` — pfcon 6's ``/api/v1/{pluginjobs,copyjobs,uploadjobs,deletejobs}/`` (4.x);
* ``admin`` — the operator's ``/api/v1/admin/jobs/`` (listing, cancel; not pfcon's);
* here — what neither owns: health, readiness, tokens, and the application with its
  dependencies, the one auth guard and the one error table (``common``).
"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.to_thread
import msgspec
from litestar import Litestar, Request, Response, Router, get, post
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException
from litestar.openapi import ResponseSpec

from ..._lean import hidden
from ...bootstrap import Container, wire_up
from ...domain import errors as E
from ...domain.services import AuthService, JobService
from . import admin, docs, observe, v5, v6
from .common import (
    API_PREFIX,
    CLIENT_CLOSED,
    NOT_FOUND,
    STATUS_BY_ERROR,
    ClientDisconnected,
    Runner,
    Uploads,
    disconnect_handler,
    domain_error_handler,
    http_error_handler,
    internal_error_handler,
    require_token,
    request_logging,
    status_for,
)
from .docs import errors
from .schemas import BackendCheck, HealthBody, ReadinessBody, TokenBody
from .spool import UploadSpool

__all__ = ["API_PREFIX", "CLIENT_CLOSED", "NOT_FOUND", "STATUS_BY_ERROR", "create_app", "status_for"]

AUTH_MISSING = "Missing required parameter in the JSON body or the post body or the query string"


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
            detail="Did not attempt to load JSON data because the request Content-Type was not 'application/json'.",
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


def _dashboard(container: Container) -> Router:
    from . import dashboard  # imported only when the dashboard is served

    settings = container.settings()
    sessions = dashboard.Sessions(
        settings.secret_key, settings.pfcon_user, settings.pfcon_password, settings.dashboard.session_minutes * 60
    )
    return dashboard.router(sessions, settings.dashboard.cookie_secure)


def create_app(container: Container) -> Litestar:
    job_service, auth_service, op_service = wire_up(container)
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
    jobs_router = Router(  # one guard and one security scheme for both generations and the admin routes
        path="/",
        route_handlers=[*v5.handlers(info.pfcon_innetwork), *v6.handlers(info.pfcon_innetwork), *admin.handlers()],
        guards=[require_token],
        security=docs.SECURITY,
    )
    api = Router(path=API_PREFIX, route_handlers=[health, readiness, auth_token, jobs_router])
    routers: list[Any] = [api, docs.static_assets_router()]
    if settings.dashboard.enabled:
        routers.append(_dashboard(container))
    # Litestar's plugins for pydantic and attrs (our bodies are msgspec structs) and its
    # OpenTelemetry plugin (tracing is ours, and imported only when on: ADR 21)
    with hidden(("pydantic", "attrs", "attr", "opentelemetry")):
        app = Litestar(
            route_handlers=routers,
            dependencies={
                "jobs": Provide(lambda: job_service, sync_to_thread=False),
                "ops": Provide(lambda: op_service, sync_to_thread=False),
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
            # Not Litestar's logging config: it would take the root logger over (INFO, plain
            # text); logging is JSON lines set up once by entrypoints.logs.
            logging_config=None,
        )
    app.state.auth_service = auth_service
    app.state.jobs, app.state.ops, app.state.runner = job_service, op_service, runner
    app.state.uploads = uploads
    app.state.container = container
    token = settings.metrics.token
    observe.install(app, container.telemetry(), runner, str(token) if token else None, lambda: uploads.spool.in_flight)
    return app
