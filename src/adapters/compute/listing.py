"""What every compute adapter's listing and cancel share (issue 12): timestamps as sortable
ISO 8601 UTC, the kind of a job from its labels, and a cancelled job's info
(docs/adr/0020-cancel-is-not-delete.md)."""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ...domain.model import CANCELLED_MESSAGE, JOB_TYPE_LABEL, JobInfo, JobKind, JobStatus

_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)?")


def iso_utc(value: Any) -> str:
    """An engine's timestamp (RFC 3339 with any number of fraction digits and any offset,
    or Unix seconds) as ISO 8601 UTC with microseconds, so that timestamps sort as
    strings ("" when there is none)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        when = datetime.datetime.fromtimestamp(value, datetime.UTC)
    else:
        match = _RFC3339.match(str(value or ""))
        if match is None or str(value).startswith("0001-01-01"):
            return ""
        seconds, fraction, offset = match.groups()
        micros = int((fraction or "0")[:6].ljust(6, "0"))
        zone = datetime.UTC
        if offset and offset != "Z":
            sign = -1 if offset[0] == "-" else 1
            hours, minutes = int(offset[1:3]), int(offset[-2:])
            zone = datetime.timezone(sign * datetime.timedelta(hours=hours, minutes=minutes))
        when = datetime.datetime.fromisoformat(seconds).replace(microsecond=micros, tzinfo=zone)
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def cancelled(info: JobInfo) -> JobInfo:
    """``info`` as a cancelled job's (docs/adr/0020-cancel-is-not-delete.md)."""
    return replace(info, status=JobStatus.FINISHED_WITH_ERROR, message=CANCELLED_MESSAGE)


def job_kind(labels: Mapping[str, str] | None) -> JobKind | None:
    try:
        return JobKind((labels or {}).get(JOB_TYPE_LABEL, ""))
    except ValueError:
        return None
