"""The operator's routes (``/api/v1/admin/``, issue 12): not pfcon's API, served beside it
with the same bearer token.

* ``GET admin/jobs/`` — every job this server instance created (plugin and op jobs, by the
  scheduler's labels, never other workloads), newest first;
* ``POST admin/jobs/{jid}/cancel/`` — stop a job's plugin but keep it, its data and its
  logs: its status becomes ``finishedWithError`` with the message ``cancelled``
  (``DELETE jobs/{jid}/`` keeps pfcon's meaning: remove everything).
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import get, post
from litestar.di import NamedDependency
from litestar.params import FromPath

from ...domain.model import JobKind, JobSummary
from ...domain.services import JobService
from . import docs
from .common import Runner, bind_job_id, options_handler
from .docs import errors
from .schemas import StatusBody, StatusValue
from .v5 import compute_body

ADMIN_JOBS = "/admin/jobs/"
CANCEL = "/admin/jobs/{jid:str}/cancel/"


class ResourcesBody(msgspec.Struct):
    """What the job was given, as the scheduler shows it (CPU in millicores, memory in MiB)."""

    number_of_workers: int
    cpu_limit: int
    memory_limit: int
    gpu_limit: int


class JobSummaryBody(msgspec.Struct):
    """One job as the scheduler shows it."""

    jid: str  # the job id (an op job's too: ``name`` is then <jid>-<kind>)
    name: str  # the scheduler object's name
    kind: str  # plugin, or a pfcon 6 data operation: copy, upload, delete
    image: str
    status: StatusValue
    message: str
    created: str  # ISO 8601 UTC; "" when the scheduler does not say
    resources: ResourcesBody | None  # null when the scheduler does not say (e.g. IGNORE_LIMITS)
    node: str  # where it was placed; "" when unknown or not yet placed
    scheduler: str  # CONTAINER_ENV


class JobListBody(msgspec.Struct):
    """Every job of this server instance, newest first."""

    jobs: list[JobSummaryBody]


def summary_body(summary: JobSummary, scheduler: str) -> JobSummaryBody:
    res = summary.resources
    return JobSummaryBody(
        jid=summary.jid,
        name=summary.name,
        kind=JobKind(summary.kind).value,
        image=summary.image,
        status=summary.status.value,  # a StatusValue (checked in schemas)
        message=summary.message,
        created=summary.created,
        resources=None
        if res is None
        else ResourcesBody(res.number_of_workers, res.cpu_limit, res.memory_limit, res.gpu_limit),
        node=summary.node,
        scheduler=scheduler,
    )


@get(
    ADMIN_JOBS,
    tags=["admin"],
    response_description="Every job this server instance created, newest first.",
    responses=errors(401, 500, 503),
    operation_class=docs.PlainOperation,
)
async def list_jobs(jobs: NamedDependency[JobService], runner: NamedDependency[Runner]) -> JobListBody:
    """The jobs this server created on its scheduler (by its labels: never other
    workloads): status, image, resources, creation time and node."""
    summaries = await runner.run(jobs.list_jobs)
    scheduler = jobs.server_info().container_env
    return JobListBody(jobs=[summary_body(s, scheduler) for s in summaries])


@post(
    CANCEL,
    status_code=200,
    tags=["admin"],
    response_description="The job is stopped and kept: its status is finishedWithError, `cancelled` "
    "(a job that had finished is left as it was).",
    responses=errors(401, 404, 500, 503),
    operation_class=docs.PlainOperation,
)
async def cancel_job(
    jid: FromPath[str], jobs: NamedDependency[JobService], runner: NamedDependency[Runner]
) -> StatusBody:
    """Stop the job but keep it, its data and its logs (unlike DELETE, which removes them)."""
    bind_job_id(jid)

    def cancel() -> StatusBody:
        info = jobs.cancel(jid)
        logs = jobs.status(jid).logs
        return StatusBody(compute=compute_body(info, jid, logs))

    return await runner.run(cancel)



def handlers() -> list[Any]:
    """The admin routes (behind the jobs routes' bearer token)."""
    return [options_handler([ADMIN_JOBS, CANCEL]), list_jobs, cancel_job]
