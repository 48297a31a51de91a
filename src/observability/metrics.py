"""The Prometheus metrics of one server process (prometheus-client, text exposition).

Every metric lives in this object's own registry (not the library's global one), so that
each app — and each test — has its own. Labels are bounded: route templates, never raw
paths or job ids (docs/adr/0021-metrics-and-tracing.md). Children for the label values
of the hot paths are bound once and cached, so that a request allocates no label dict.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

# Prometheus' text format 0.0.4: what every Prometheus version and agent reads (the
# names here need none of the 1.0.0 format's escaping).
CONTENT_TYPE = "text/plain; version=0.0.4"

# Seconds. Requests of this server take well under a millisecond (status, health) up to
# minutes (a large upload); staging takes from milliseconds to an hour.
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
BACKEND_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120)
STAGING_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

# Outcomes of a finished job (its terminal status; a cancelled job is finishedWithError).
OUTCOMES = ("success", "error", "cancelled", "undefined")


class Metrics:
    """Every metric the server exports, in a registry of its own."""

    def __init__(self, version: str, scheduler: str, storage: str) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series: half the scrape
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.scheduler = scheduler
        self.storage = storage
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        Gauge(
            "pfcon_info", "This server: its version, scheduler and storage mode (always 1)",
            ("version", "scheduler", "storage"), registry=registry,
        ).labels(version, scheduler, storage).set(1)  # fmt: skip
        self.requests = Counter(
            "pfcon_http_requests", "HTTP requests answered, by route template, method and status",
            ("route", "method", "status"), registry=registry,
        )  # fmt: skip
        self.request_duration = Histogram(
            "pfcon_http_request_duration_seconds", "Time to answer an HTTP request, by route template and method",
            ("route", "method"), buckets=REQUEST_BUCKETS, registry=registry,
        )  # fmt: skip
        self.jobs_submitted = Counter(
            "pfcon_jobs_submitted", "Jobs the scheduler accepted, by scheduler and kind (plugin, copy, upload, delete)",
            ("scheduler", "kind"), registry=registry,
        )  # fmt: skip
        self.jobs_finished = Counter(
            "pfcon_jobs_finished",
            "Jobs seen to finish by this process, by scheduler, kind and outcome (success, error, cancelled, undefined)",
            ("scheduler", "kind", "outcome"), registry=registry,
        )  # fmt: skip
        self.staging_duration = Histogram(
            "pfcon_staging_duration_seconds", "Time to stage a job's input, by storage mode",
            ("storage",), buckets=STAGING_BUCKETS, registry=registry,
        )  # fmt: skip
        self.staged_files = Counter(
            "pfcon_staged_files", "Input files staged for jobs, by storage mode", ("storage",), registry=registry
        )
        self.staged_bytes = Counter(
            "pfcon_staged_bytes", "Bytes of input staged for jobs, by storage mode", ("storage",), registry=registry
        )
        self.backend_duration = Histogram(
            "pfcon_backend_call_duration_seconds",
            "Time of each call to a backend, by port (compute, storage, jobarea), backend and operation",
            ("port", "backend", "operation"), buckets=BACKEND_BUCKETS, registry=registry,
        )  # fmt: skip
        self.backend_errors = Counter(
            "pfcon_backend_errors",
            "Backend calls that failed for a reason other than the request (the error's class), "
            "by port, backend and operation",
            ("port", "backend", "operation", "error"), registry=registry,
        )  # fmt: skip
        self.uploads_in_flight = Gauge(
            "pfcon_uploads_in_flight", "Request bodies with an upload being received now", registry=registry
        )
        self._request_children: dict[tuple[str, str, int], tuple[Callable[[], None], Callable[[float], None]]] = {}

    # -- bound children for the hot paths ------------------------------------------------
    def request_child(self, route: str, method: str, status: int) -> tuple[Callable[[], None], Callable[[float], None]]:
        """(count, observe) for one route, method and status: bound once, then cached."""
        key = (route, method, status)
        pair = self._request_children.get(key)
        if pair is None:
            pair = (self.requests.labels(route, method, str(status)).inc,
                    self.request_duration.labels(route, method).observe)  # fmt: skip
            self._request_children[key] = pair
        return pair

    def watch_uploads(self, count: Callable[[], float]) -> None:
        """Read the uploads in flight from ``count`` at each scrape (nothing per request)."""
        self.uploads_in_flight.set_function(count)

    # -- exposition ----------------------------------------------------------------------
    def render(self) -> tuple[bytes, str]:
        """The text exposition of every metric, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """One sample's current value (0 when absent): for tests and the CLI."""
        found: Any = self.registry.get_sample_value(name, labels or {})
        return float(found or 0.0)
