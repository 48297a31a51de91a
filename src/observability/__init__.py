"""Operators' view of the server: Prometheus metrics and OpenTelemetry traces.

Instrumentation sits at the ports (``instrument``: a proxy around each compute, storage
and job-area adapter, applied by the composition root) and at the HTTP edge (a raw ASGI
middleware, ``entrypoints/http/observe.py``); the domain and the adapters know nothing of
it. Tracing is off by default and then OpenTelemetry is never imported
(docs/adr/0021-metrics-and-tracing.md).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from .metrics import Metrics


@dataclass(frozen=True, slots=True)
class TracingOptions:
    """What the standard ``OTEL_*`` variables ask for, as the configuration resolved them."""

    exporters: tuple[str, ...] = ()  # "otlp" (OTLP over HTTP), "console"; empty: tracing off
    service_name: str | None = None  # None: OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES, else "pfcon"


SHUTDOWN_SECONDS = 5.0


class Telemetry:
    """The metrics of this process and, when tracing is on, its OpenTelemetry tracer."""

    def __init__(
        self,
        metrics: Metrics,
        scheduler: str,
        storage: str,
        *,
        tracer: Any = None,
        provider: Any = None,
        metrics_enabled: bool = True,
    ) -> None:
        self.metrics = metrics
        self.scheduler = scheduler
        self.storage = storage
        self.tracer = tracer  # an opentelemetry Tracer, or None: tracing off
        self.provider = provider
        self.metrics_enabled = metrics_enabled

    @property
    def active(self) -> bool:
        """Whether anything is recorded at all (else the ports are not even wrapped)."""
        return self.metrics_enabled or self.tracer is not None

    def shutdown(self, timeout: float = SHUTDOWN_SECONDS) -> None:
        """Flush the spans not exported yet (at server shutdown), for at most ``timeout``
        seconds: a collector that does not answer must not hold the server's exit."""
        if self.provider is None:
            return
        flush = threading.Thread(target=self.provider.shutdown, name="otel-shutdown", daemon=True)
        flush.start()
        flush.join(timeout)


def build_telemetry(
    *,
    version: str,
    scheduler: str,
    storage: str,
    metrics_enabled: bool = True,
    tracing: TracingOptions | None = None,
    exporter: Any = None,
    batch: bool = False,
) -> Telemetry:
    """The telemetry of a server. ``exporter`` (tests, bench) is an extra span exporter,
    e.g. OpenTelemetry's InMemorySpanExporter; it turns tracing on by itself. It exports
    as each span ends, or with ``batch`` from a background thread as the real ones do."""
    metrics = Metrics(version=version, scheduler=scheduler, storage=storage)
    tracer = provider = None
    if (tracing is not None and tracing.exporters) or exporter is not None:
        from .tracing import start_tracing

        provider, tracer = start_tracing(tracing or TracingOptions(), version, exporter=exporter, batch=batch)
    return Telemetry(
        metrics, scheduler, storage, tracer=tracer, provider=provider, metrics_enabled=metrics_enabled
    )


__all__ = ["Metrics", "Telemetry", "TracingOptions", "build_telemetry"]
