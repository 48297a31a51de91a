"""The API's JSON bodies as msgspec Structs: what handlers return and what the OpenAPI
document shows.

Field order is the wire order of pfcon's bodies; a field whose default is ``UNSET`` is
left out of the body when it has no value.
"""

from __future__ import annotations

from typing import Literal, get_args

import msgspec
from msgspec import UNSET, UnsetType

from ...domain.model import JobStatus

# The wire strings of JobStatus, spelled out for the schema (checked by the tests).
StatusValue = Literal["notstarted", "started", "finishedSuccessfully", "finishedWithError", "undefined"]
assert set(get_args(StatusValue)) == {s.value for s in JobStatus}


class ErrorBody(msgspec.Struct):
    """Every error: a message, or for invalid form fields an object naming each field's problem."""

    message: str | dict[str, str]


class HealthBody(msgspec.Struct):
    health: Literal["OK"]


class BackendCheck(msgspec.Struct):
    """Whether one backend answered the readiness probe."""

    kind: Literal["compute", "storage"]
    name: str
    ok: bool
    message: str


class ReadinessBody(msgspec.Struct, kw_only=True):
    """All backends answer (200) or not (503, with a message naming those that don't)."""

    message: str | UnsetType = UNSET
    ready: bool
    backends: list[BackendCheck]


class TokenBody(msgspec.Struct):
    """A bearer token (an HS256 JWT, valid for 48 hours) for the jobs routes."""

    token: str


class ServerInfoBody(msgspec.Struct):
    server_version: str
    pfcon_innetwork: bool
    storage_env: str
    container_env: str
    compute_volume_type: str | None
    swift_auth_url: str | UnsetType = UNSET  # swift storage only


class JobData(msgspec.Struct):
    """What the storage step did with the job's input."""

    jid: str
    nfiles: int
    timestamp: str
    path: str


class JobCompute(msgspec.Struct):
    """What the scheduler reports about the job."""

    jid: str
    image: str
    cmd: str
    status: StatusValue
    message: str
    timestamp: str
    logs: str


class SubmitBody(msgspec.Struct):
    data: JobData
    compute: JobCompute


class StatusBody(msgspec.Struct):
    compute: JobCompute


class OutputListingBody(msgspec.Struct):
    """The files under a shared output directory, relative to it (in-network modes)."""

    job_output_path: str
    rel_file_paths: list[str]


# -- pfcon 6 (/pluginjobs/, /copyjobs/, /uploadjobs/, /deletejobs/) ---------------------------

# pfcon 6 spells the not-started status "notStarted"; the others are pfcon 5's.
StatusValueV6 = Literal["notStarted", "started", "finishedSuccessfully", "finishedWithError", "undefined"]
assert set(get_args(StatusValueV6)) == {s.v6_value for s in JobStatus}


class ServerInfoV6Body(msgspec.Struct):
    """How this server runs jobs, and which op jobs a client must run in its storage mode."""

    server_version: str
    pfcon_innetwork: bool
    storage_env: str
    requires_copy_job: bool
    requires_upload_job: bool
    container_env: str
    compute_volume_type: str | None
    swift_auth_url: str | UnsetType = UNSET  # swift storage only
    s3_endpoint_url: str | UnsetType = UNSET  # s3 storage only


class OpJobCompute(msgspec.Struct):
    """What the scheduler reports about a job of pfcon 6 (``jid`` is the job id, not the
    op job's name); a skipped operation is ``finishedSuccessfully`` with ``<kind>Skipped``."""

    jid: str
    image: str
    cmd: str
    status: StatusValueV6
    message: str
    timestamp: str
    logs: str


class OpJobBody(msgspec.Struct):
    compute: OpJobCompute


class PluginJobData(msgspec.Struct, kw_only=True):
    """What staging did with the input, when this request staged it (zipfile, filesystem);
    ``{}`` when a copy job staged it, or when the job already existed."""

    jid: str | UnsetType = UNSET
    nfiles: int | UnsetType = UNSET
    timestamp: str | UnsetType = UNSET
    path: str | UnsetType = UNSET


class PluginJobBody(msgspec.Struct):
    data: PluginJobData
    compute: OpJobCompute
