"""pfcon 5's API (``/api/v1/jobs/``, python-pfconclient 3.x): one request stages the input
in-process and runs the plugin (docs/wire-contract.md).

Handlers are thin: they parse pfcon's wire format, call a use case in the bounded worker
pool (every port is synchronous and may block) and render pfcon's bodies.
"""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
import msgspec
from litestar import Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import FromPath
from litestar.response import Stream

from ...domain.errors import DomainError
from ...domain.model import JobInfo, JobSpec, StagedData, SubmittedJob
from ...domain.ports import StagingRequest, ZipStream
from ...domain.services import JobService, PreparedJob
from . import docs
from .common import Runner, Uploads, bind_job_id, body_chunks, options_handler, read_form
from .docs import errors
from .forms import FormData, job_spec_from_form, parse_multipart
from .schemas import JobCompute, JobData, OutputListingBody, ServerInfoBody, StatusBody, SubmitBody


def compute_body(info: JobInfo, jid: str, logs: str) -> JobCompute:
    return JobCompute(
        jid=jid,
        image=info.image,
        cmd=info.cmd,
        status=info.status.value,  # a StatusValue (checked in schemas)
        message=info.message,
        timestamp=info.timestamp,
        logs=logs,
    )


def data_body(data: StagedData, jid: str) -> JobData:
    return JobData(jid=jid, nfiles=data.nfiles, timestamp=data.timestamp, path=data.path)


# Each handler lists the error statuses it answers (errors(...)); 500 is possible anywhere.


@get(
    "/jobs/",
    sync_to_thread=False,
    tags=["jobs"],
    response_description="How this server runs jobs.",
    responses=errors(401, 500),
    operation_class=docs.PlainOperation,
)
def server_info(jobs: NamedDependency[JobService]) -> ServerInfoBody:
    """How this server runs jobs: its version, storage and container environments."""
    info = jobs.server_info()
    body = {
        "server_version": info.server_version,
        "pfcon_innetwork": info.pfcon_innetwork,
        "storage_env": info.storage_env,
        "container_env": info.container_env,
        "compute_volume_type": info.compute_volume_type,
        **dict(info.extra),
    }
    return msgspec.convert(body, ServerInfoBody)


async def read_job_form(
    request: Request[Any, Any, Any],
    uploads: Uploads,
    jobs: JobService,
    on_upload: Callable[[FormData], Awaitable[None]] | None = None,
) -> FormData:
    """A job form; where the storage receives uploads as they arrive (zipfile), the
    ``data_file`` part is validated and extracted while the body is received (ADR 19),
    in whatever order the parts come; ``on_upload`` is then awaited when that part begins."""
    content_type, params = request.content_type
    if content_type != "multipart/form-data" or not jobs.receives_input or not params.get("boundary"):
        return await read_form(request, uploads.spool, uploads.max_bytes)
    with uploads.spool.slot() as slot:
        return await parse_multipart(
            body_chunks(request, slot.release),
            params["boundary"],
            uploads.spool,
            uploads.max_bytes,
            receive=jobs.receive_input,
            on_upload=on_upload,
        )


# Bodies smaller than this take the ordinary path: the job is prepared while its upload
# arrives only when the upload takes longer to receive than the preparation's own extra
# work (measured, ADR 23: a tiny body arrives in one piece and gains nothing, while a
# 2 MiB body of 500 files hides the engine's 15-30 ms create behind its extraction).
# A body of unknown length (chunked) is prepared.
PREPARE_MIN_BYTES = 256 * 1024


def worth_preparing(request: Request[Any, Any, Any]) -> bool:
    length = request.headers.get("content-length")
    return length is None or not length.isdigit() or int(length) >= PREPARE_MIN_BYTES


# Bodies smaller than this are received whole, then their upload is received and the job
# submitted in one worker hop (ADR 26). The same bound as above: such a body arrives in one
# or a few pieces, so receiving its upload as it arrives gains nothing.
WHOLE_MAX_BYTES = PREPARE_MIN_BYTES


def small_upload_boundary(request: Request[Any, Any, Any], jobs: JobService) -> str | None:
    """The multipart boundary of a body small enough to be received whole before its
    upload is looked at (ADR 26: then received and submitted in one worker hop), or None."""
    length = request.headers.get("content-length")
    if length is None or not length.isdigit() or int(length) >= WHOLE_MAX_BYTES or not jobs.receives_input:
        return None
    content_type, params = request.content_type
    if content_type != "multipart/form-data":
        return None
    return params.get("boundary") or None


async def submit_small_job(
    request: Request[Any, Any, Any], boundary: str, jobs: JobService, runner: Runner, uploads: Uploads
) -> SubmitBody:
    """A small body (ADR 26): parsed whole, its upload kept in memory, then received
    (validated, extracted) and the job submitted in one worker thread. The errors are
    those of the streamed path, in its order: the form's, the archive's, the fields',
    then the job's."""
    with uploads.spool.slot() as slot:
        form = await parse_multipart(
            body_chunks(request, slot.release), boundary, uploads.spool, uploads.max_bytes, in_memory=True
        )
    spec: JobSpec | None = None
    invalid: DomainError | None = None
    try:
        spec = job_spec_from_form(form)
        bind_job_id(spec.jid)
    except DomainError as e:
        invalid = e  # raised after the archive's own error, as on the streamed path
    result = await runner.run(receive_and_submit, jobs, form, spec, invalid)
    assert spec is not None
    return SubmitBody(data=data_body(result.data, spec.jid), compute=compute_body(result.info, spec.jid, ""))


def receive_and_submit(
    jobs: JobService, form: FormData, spec: JobSpec | None, invalid: DomainError | None
) -> SubmittedJob:
    """In a worker thread: the kept upload received, then the job submitted; an upload
    no job adopted is discarded before returning, whatever the outcome."""
    try:
        if form.upload_bytes is not None:
            upload, form.upload_bytes = form.upload_bytes, None
            form.received = jobs.receive_input(io.BytesIO(upload).read)
        if invalid is not None:
            raise invalid
        assert spec is not None
        return jobs.submit(spec, staging_request(form, spec.input_dirs, spec.output_dir))
    finally:
        if form.upload_left:
            form.discard_upload()


class Preparation:
    """The job of a POST created on the scheduler while its upload is still arriving (ADR 23).

    When the ``data_file`` part begins, the fields before it (pfconclient sends every field
    first) are enough for the job: ``JobService.prepare`` reserves its area and creates it,
    not started, in a worker thread while the upload is received. Once the body is in,
    ``take`` hands the prepared job over if the whole form describes the same job; any
    other outcome leaves the POST to the ordinary path, and ``close`` removes whatever was
    prepared and not used.
    """

    def __init__(self, jobs: JobService, runner: Runner) -> None:
        self.jobs = jobs
        self.runner = runner
        self.task_group: anyio.abc.TaskGroup | None = None
        self.spec: JobSpec | None = None
        self.prepared: PreparedJob | None = None
        self.error: Exception | None = None

    async def begin(self, form: FormData) -> None:
        if self.task_group is None or self.spec is not None or not self.jobs.prepares:
            return
        try:
            spec = job_spec_from_form(form)
        except DomainError:
            return  # a field may still come after the file: the ordinary path will tell
        self.spec = spec
        self.task_group.start_soon(self._prepare, spec)

    async def _prepare(self, spec: JobSpec) -> None:
        try:
            self.prepared = await self.runner.run(self.jobs.prepare, spec)
        except Exception as e:  # noqa: BLE001 - raised by take() if this is the job asked for
            self.error = e

    def take(self, spec: JobSpec) -> PreparedJob | None:
        """The job prepared for ``spec`` (prepare's error raised), or None: none was."""
        if self.spec is None or self.spec != spec:
            return None
        if self.error is not None:
            raise self.error
        prepared, self.prepared = self.prepared, None
        return prepared

    async def close(self) -> None:
        """Remove a prepared job that was not taken (shielded: it runs on the way out)."""
        if self.prepared is not None:
            prepared, self.prepared = self.prepared, None
            with anyio.CancelScope(shield=True):
                await self.runner.run(self.jobs.abandon, prepared)


def staging_request(form: FormData, input_dirs: tuple[str, ...] | None, output_dir: str | None) -> StagingRequest:
    return StagingRequest(
        upload_path=form.upload_path, input_dirs=input_dirs, output_dir=output_dir, received=form.received
    )


async def submit_job(request: Request[Any, Any, Any], state: State) -> SubmitBody:
    """Stage the job's input and schedule it (pfcon's job descriptors as form fields)."""
    # The services come from the app's state, as for the status GET (no dependency task group).
    jobs: JobService = state.jobs
    runner: Runner = state.runner
    uploads: Uploads = state.uploads
    boundary = small_upload_boundary(request, jobs)
    if boundary is not None:
        return await submit_small_job(request, boundary, jobs, runner, uploads)
    preparation = Preparation(jobs, runner)
    failure: Exception | None = None
    try:
        async with anyio.create_task_group() as tg:
            preparation.task_group = tg
            try:
                begin = preparation.begin if worth_preparing(request) else None
                form = await read_job_form(request, uploads, jobs, begin)
            except Exception as e:  # noqa: BLE001 - raised once the preparation has ended
                failure = e
        # here the preparation, if any, has ended
        if failure is not None:
            raise failure
        try:
            spec = job_spec_from_form(form)
            bind_job_id(spec.jid)
            request_ = staging_request(form, spec.input_dirs, spec.output_dir)
            prepared = preparation.take(spec)
            if prepared is not None:
                result = await runner.run(jobs.submit_prepared, prepared, request_)
            else:
                await preparation.close()  # prepared for other fields: it goes first
                result = await runner.run(jobs.submit, spec, request_)
        finally:
            if form.upload_left:
                await runner.run(form.discard_upload)
    finally:
        await preparation.close()
    return SubmitBody(data=data_body(result.data, spec.jid), compute=compute_body(result.info, spec.jid, ""))


def submit_job_handler(innetwork: bool) -> Any:
    """POST jobs/, documented with the form fields of this server's storage mode."""
    return post(
        "/jobs/",
        status_code=201,
        request_max_body_size=None,
        tags=["jobs"],
        response_description="The job's input is staged and the job is scheduled.",
        responses=errors(400, 401, 409, 413, 500, 503, 507),
        operation_class=docs.operation(request_body=docs.job_form_body(innetwork)),
    )(submit_job)


@get(
    "/jobs/{jid:str}/",
    tags=["jobs"],
    response_description="The job's status.",
    responses=errors(401, 404, 500, 503),
    operation_class=docs.PlainOperation,
)
async def job_status(jid: FromPath[str], state: State) -> StatusBody:
    """The job's status and the tail of its logs."""
    # CUBE's most frequent request: the services come from the app's state, not from two
    # dependencies (Litestar resolves several in a task group: ~0.1 ms per request).
    jobs: JobService = state.jobs
    runner: Runner = state.runner
    bind_job_id(jid)
    # A finished job the compute adapter already knows is answered on the event loop.
    job = jobs.known_status(jid)
    if job is None:
        job = await runner.run(jobs.status, jid)
    return StatusBody(compute=compute_body(job.info, jid, job.logs))


@delete(
    "/jobs/{jid:str}/",
    status_code=204,
    tags=["jobs"],
    response_description="The job and its data are gone.",
    responses=errors(401, 404, 500, 503),
    operation_class=docs.PlainOperation,
)
async def delete_job(jid: FromPath[str], jobs: NamedDependency[JobService], runner: NamedDependency[Runner]) -> None:
    """Remove the job's container and its data."""
    bind_job_id(jid)
    await runner.run(jobs.delete, jid)


@get(
    "/jobs/{jid:str}/file/",
    tags=["jobs"],
    responses={
        200: ResponseSpec(
            data_container=OutputListingBody,
            description="The job's output: a zip of its files (application/zip), or in in-network modes "
            "with `job_output_path` a JSON listing of the files (application/json).",
            generate_examples=False,
        ),
        **errors(400, 401, 404, 500, 503),
    },
    operation_class=docs.operation(
        parameters=[docs.JOB_OUTPUT_PATH],
        extra_200={"application/zip": docs.ZIP_CONTENT},
        headers_200=docs.ATTACHMENT_HEADERS,
    ),
)
async def job_file(
    request: Request[Any, Any, Any],
    jid: FromPath[str],
    jobs: NamedDependency[JobService],
    runner: NamedDependency[Runner],
) -> Response[Any]:
    """The job's output files."""
    bind_job_id(jid)
    job_output_path = request.query_params.get("job_output_path")
    out = await runner.run(jobs.outputs, jid, job_output_path)
    return output_response(out, jid, runner)


def output_response(out: Any, jid: str, runner: Runner) -> Response[Any]:
    """A zip stream, or a JSON listing as a file named after the job (pfcon's file route)."""
    if isinstance(out, ZipStream):
        return Stream(
            runner.iterate(out.chunks),
            media_type="application/zip",
            headers={
                "Content-Disposition": f"attachment; filename={out.filename}",
                "Cache-Control": "no-cache",
            },
        )
    return Response(
        content=OutputListingBody(job_output_path=out.job_output_path, rel_file_paths=list(out.rel_file_paths)),
        media_type="application/json",
        headers={"Content-Disposition": f"attachment; filename={jid}.json", "Cache-Control": "no-cache"},
    )


def handlers(innetwork: bool) -> list[Any]:
    """The routes of ``/api/v1/jobs/``, documented for this server's storage mode."""
    return [
        options_handler(["/jobs/", "/jobs/{jid:str}/"]),  # first: see options_handler
        server_info,
        submit_job_handler(innetwork),
        job_status,
        delete_job,
        job_file,
    ]
