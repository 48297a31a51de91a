"""OpenTelemetry tracing, imported only when it is on (``OTEL_TRACES_EXPORTER`` or an OTLP
endpoint says so): the SDK, its exporters and the W3C propagators cost memory that a
server without a collector should not pay (docs/adr/0021-metrics-and-tracing.md).

The SDK reads its other standard variables itself (``OTEL_EXPORTER_OTLP_*`` endpoint,
headers, timeout; ``OTEL_TRACES_SAMPLER``; ``OTEL_RESOURCE_ATTRIBUTES``;
``OTEL_BSP_*``). Spans leave through a batch processor: its own thread, never the
request's.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from .ports import CLIENT_ERRORS, noticed

if TYPE_CHECKING:
    from . import TracingOptions

DEFAULT_SERVICE_NAME = "pfcon"


def start_tracing(
    options: TracingOptions, version: str, exporter: Any = None, batch: bool = False
) -> tuple[Any, Any]:
    """A tracer provider with the exporters of ``options`` (and ``exporter``: tests and
    bench; exported as each span ends unless ``batch``), and its tracer."""
    attributes: dict[str, str] = {"service.version": version}
    if options.service_name:
        attributes["service.name"] = options.service_name
    elif not os.environ.get("OTEL_SERVICE_NAME") and "service.name=" not in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    ):
        attributes["service.name"] = DEFAULT_SERVICE_NAME
    # Shut down by Telemetry.shutdown (bounded), not by the SDK's atexit hook (unbounded).
    provider = TracerProvider(resource=Resource.create(attributes), shutdown_on_exit=False)
    for name in options.exporters:
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        elif name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))
    return provider, provider.get_tracer("pfcon", version)


def traced_call(
    tracer: Any,
    span_name: str,
    attributes: dict[str, str],
    call: Callable[..., Any],
    observe: Callable[[float], None],
    failed: Callable[[BaseException], None],
    after: Callable[[tuple[Any, ...], Any, float], None] | None,
    job_id: Callable[[str, tuple[Any, ...]], str | None],
) -> Callable[..., Any]:
    """``call`` timed and observed as ports.ObservedPort does, in a child span of the
    current one (the request's: the context follows the call into its worker thread)."""
    clock = time.perf_counter
    operation = attributes["pfcon.operation"]

    def observed(*args: Any, **kwargs: Any) -> Any:
        with tracer.start_as_current_span(
            span_name, attributes=attributes, record_exception=False, set_status_on_exception=False
        ) as span:
            jid = job_id(operation, args)
            if jid is not None:
                span.set_attribute("pfcon.job_id", jid)
            started = clock()
            try:
                result = call(*args, **kwargs)
            except BaseException as e:
                observe(clock() - started)
                failed(e)
                span.set_attribute("error.type", type(e).__name__)
                if not isinstance(e, CLIENT_ERRORS):
                    span.record_exception(e)
                    span.set_status(Status(StatusCode.ERROR, getattr(e, "message", None) or type(e).__name__))
                raise
            elapsed = clock() - started
            observe(elapsed)
            if after is not None:
                noticed(after, args, result, elapsed)
            return result

    return observed


def request_span(tracer: Any, method: str, path: str, headers: list[tuple[bytes, bytes]]) -> Any:
    """The server span of one request, its parent taken from ``traceparent`` (the
    propagators of OTEL_PROPAGATORS, W3C trace context by default)."""
    from opentelemetry.propagate import extract

    carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers}
    return tracer.start_as_current_span(
        f"{method} {path}",
        context=extract(carrier),
        kind=SpanKind.SERVER,
        attributes={"http.request.method": method, "url.path": path},
        record_exception=False,
        set_status_on_exception=False,
    )


def end_request_span(span: Any, method: str, route: str, status: int, attributes: dict[str, str]) -> None:
    span.update_name(f"{method} {route}")
    span.set_attribute("http.route", route)
    span.set_attribute("http.response.status_code", status)
    for key, value in attributes.items():
        span.set_attribute(key, value)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))


def add_trace_ids(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: the current trace and span ids in each log line."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event["trace_id"] = format(context.trace_id, "032x")
        event["span_id"] = format(context.span_id, "016x")
    return event
