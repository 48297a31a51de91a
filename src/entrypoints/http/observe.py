"""Metrics and traces at the HTTP edge: a raw ASGI middleware around the whole Litestar
app (unknown routes included), and ``GET /metrics`` (docs/adr/0021-metrics-and-tracing.md).

Request labels are the route *template* Litestar matched (``/api/v1/jobs/{jid:str}/``),
never the raw path: the label set stays bounded whatever clients send. A request that
matched no route is counted under ``UNMATCHED``.
"""

from __future__ import annotations

import hmac
import time
from typing import Any

import anyio.to_thread
import structlog
from litestar import Litestar, Request, Response, get
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from ...observability import Telemetry
from .common import Runner

UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
METRICS_PATH = "/metrics"


def install(app: Litestar, telemetry: Telemetry, runner: Runner, token: str | None, uploads_in_flight: Any) -> None:
    """Observe every request of ``app``; serve ``/metrics`` when metrics are enabled
    (with a bearer ``token`` when one is configured)."""
    if not telemetry.active:
        return
    telemetry.metrics.watch_uploads(uploads_in_flight)
    app.asgi_handler = observe(app.asgi_handler, telemetry)

    async def flush_spans() -> None:
        await anyio.to_thread.run_sync(telemetry.shutdown)

    app.on_shutdown.append(flush_spans)
    if telemetry.metrics_enabled:
        app.register(metrics_handler(telemetry, runner, token))


def observe(app: ASGIApp, telemetry: Telemetry) -> ASGIApp:
    """The request counter and latency histogram; with tracing on, one span per request."""
    child = telemetry.metrics.request_child
    clock = time.perf_counter
    tracer = telemetry.tracer

    if tracer is not None:
        return _traced(app, telemetry)

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = clock()
        try:
            await app(scope, receive, send_status)
        finally:
            method = scope["method"]
            count, observe_duration = child(
                scope.get("path_template") or UNMATCHED, method if method in METHODS else "OTHER", status
            )
            count()
            observe_duration(clock() - started)

    return middleware


def _traced(app: ASGIApp, telemetry: Telemetry) -> ASGIApp:
    from ...observability.tracing import end_request_span, request_span

    child = telemetry.metrics.request_child
    clock = time.perf_counter
    tracer = telemetry.tracer
    scheduler = {"pfcon.scheduler": telemetry.scheduler}

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        method = scope["method"] if scope["method"] in METHODS else "OTHER"
        started = clock()
        with request_span(tracer, method, scope["path"], list(scope.get("headers") or [])) as span:
            try:
                await app(scope, receive, send_status)
            finally:
                route = scope.get("path_template") or UNMATCHED
                attributes = dict(scheduler)
                job_id = structlog.contextvars.get_contextvars().get("job_id")
                if job_id:
                    attributes["pfcon.job_id"] = str(job_id)
                end_request_span(span, method, route, status, attributes)
                count, observe_duration = child(route, method, status)
                count()
                observe_duration(clock() - started)

    return middleware


def metrics_handler(telemetry: Telemetry, runner: Runner, token: str | None) -> Any:
    """``GET /metrics``: Prometheus' text exposition, rendered in a worker thread (it reads
    /proc). With METRICS_TOKEN, only for ``Authorization: Bearer <token>``."""
    expected = f"Bearer {token}".encode() if token else None

    @get(METRICS_PATH, include_in_schema=False)
    async def metrics(request: Request[Any, Any, Any]) -> Response[Any]:
        if expected is not None:
            given = request.headers.get("authorization", "").encode("latin-1", "replace")
            if not hmac.compare_digest(given, expected):
                return Response(
                    content={"message": "a valid metrics token is required (Authorization: Bearer <METRICS_TOKEN>)"},
                    status_code=401,
                    media_type="application/json",
                    headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
                )
        body, content_type = await runner.run(telemetry.metrics.render)
        return Response(content=body, media_type=content_type, headers={"Cache-Control": "no-cache"})

    return metrics
