"""Structured JSON logging with structlog; secrets are scrubbed before rendering."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

SENSITIVE = frozenset({"authorization", "token", "password", "pfcon_password", "secret_key", "swift_key", "key"})


def _scrub(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if key.lower() in SENSITIVE:
            event[key] = "***"
    return event


def configure_logging(level: str = "INFO", cache: bool = True, tracing: bool = False) -> None:
    """JSON lines on stderr; with ``tracing``, each line logged inside a span carries its
    ``trace_id`` and ``span_id`` (OpenTelemetry is only imported then)."""
    numeric = getattr(logging, level.upper(), logging.INFO)
    processors: list[Any] = [structlog.contextvars.merge_contextvars]
    if tracing:
        from ..observability.tracing import add_trace_ids

        processors.append(add_trace_ids)
    processors += [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _scrub,
        structlog.processors.format_exc_info,
        structlog.processors.JSONRenderer(),
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=cache,
    )
    # Libraries that log through the standard library: keep them quiet and on stderr.
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr)
