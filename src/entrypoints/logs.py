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
    # Libraries that log through the standard library (httpx, urllib3, kubernetes,
    # swiftclient, botocore, uvicorn's errors): warnings and above only, rendered as the
    # same JSON lines with their logger's name, on stderr. One handler of ours on the root
    # logger, replaced when this is called again.
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _scrub,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    root.addHandler(handler)
    root.setLevel(max(numeric, logging.WARNING))


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record is emitted (not when made)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass
