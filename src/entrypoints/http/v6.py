"""pfcon 6's API (python-pfconclient 4.0, CUBE since its async rewrite): the client runs a
job's copy, plugin, upload and delete jobs one by one (docs/wire-contract.md).

``GET /{pluginjobs,copyjobs,uploadjobs,deletejobs}/`` is server info (with
``requires_copy_job`` and ``requires_upload_job``); ``POST`` creates a job of that kind
(idempotent per job id; 409 when a job it needs has not finished; ``<kind>Skipped`` when
this storage mode does not need it); ``GET``/``DELETE`` of ``<kind>jobs/<jid>/`` observe and
remove it; ``GET pluginjobs/<jid>/file/`` returns the outputs (never uploading them).
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, delete, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import FromPath
from litestar.response import Response

from ...domain.model import JobInfo, JobKind, StagedData
from ...domain.opjobs import OpJobService, OpResult
from . import docs
from .common import Runner, Uploads, bind_job_id, options_handler, read_form
from .docs import errors
from .forms import job_spec_from_form, op_job_fields
from .schemas import OpJobBody, OpJobCompute, OutputListingBody, PluginJobBody, PluginJobData, ServerInfoV6Body
from .v5 import output_response, read_job_form, staging_request

ROUTES = {
    JobKind.PLUGIN: "pluginjobs",
    JobKind.COPY: "copyjobs",
    JobKind.UPLOAD: "uploadjobs",
    JobKind.DELETE: "deletejobs",
}


def compute_body(info: JobInfo, jid: str, logs: str) -> OpJobCompute:
    return OpJobCompute(
        jid=jid,
        image=info.image,
        cmd=info.cmd,
        status=info.status.v6_value,  # type: ignore[arg-type]  # a StatusValueV6 (checked in schemas)
        message=info.message,
        timestamp=info.timestamp,
        logs=logs,
    )


def data_body(data: StagedData | None, jid: str) -> PluginJobData:
    if data is None:
        return PluginJobData()
    return PluginJobData(jid=jid, nfiles=data.nfiles, timestamp=data.timestamp, path=data.path)


def op_body(result: OpResult, jid: str) -> OpJobBody:
    return OpJobBody(compute=compute_body(result.info, jid, result.logs))


# -- server info (every list route) ------------------------------------------------------


def server_info_handler(kind: JobKind) -> Any:
    @get(
        f"/{ROUTES[kind]}/",
        sync_to_thread=False,
        tags=[ROUTES[kind]],
        response_description="How this server runs jobs, and which op jobs its storage mode needs.",
        responses=errors(401, 500),
        operation_class=docs.PlainOperation,
        name=f"{kind.value}-server-info",
    )
    def server_info(ops: NamedDependency[OpJobService]) -> ServerInfoV6Body:
        """How this server runs jobs: version, storage and container environments, and
        whether a client must run copy and upload jobs (pfcon 6's server info)."""
        info = ops.jobs.server_info()
        body = {
            "server_version": info.server_version,
            "pfcon_innetwork": info.pfcon_innetwork,
            "storage_env": info.storage_env,
            "requires_copy_job": ops.flow.copy_job,
            "requires_upload_job": ops.flow.upload_job,
            "container_env": info.container_env,
            "compute_volume_type": info.compute_volume_type,
            **dict(info.extra),
        }
        return msgspec.convert(body, ServerInfoV6Body)

    return server_info


# -- creating jobs ------------------------------------------------------------------------


async def create_plugin_job(
    request: Request[Any, Any, Any],
    ops: NamedDependency[OpJobService],
    runner: NamedDependency[Runner],
    uploads: NamedDependency[Uploads],
) -> PluginJobBody:
    """Schedule the plugin job: on the input its copy job staged (fslink, swift), or on the
    input staged in this request (the zip of zipfile mode, the dirs of filesystem mode)."""
    form = await read_job_form(request, uploads, ops.jobs)
    try:
        spec = job_spec_from_form(form)
        bind_job_id(spec.jid)
        result = await runner.run(ops.plugin, spec, staging_request(form, spec.input_dirs, spec.output_dir))
    finally:
        if form.upload_left:
            await runner.run(form.discard_upload)
    return PluginJobBody(
        data=data_body(result.data, spec.jid), compute=compute_body(result.info, spec.jid, result.logs)
    )


def plugin_post_handler(innetwork: bool) -> Any:
    return post(
        "/pluginjobs/",
        status_code=201,
        request_max_body_size=None,
        tags=["pluginjobs"],
        response_description="The plugin job (scheduled now, or the existing one of this id).",
        responses=errors(400, 401, 409, 413, 500, 503, 507),
        operation_class=docs.operation(request_body=docs.plugin_form_body(innetwork)),
    )(create_plugin_job)


async def create_copy_job(
    request: Request[Any, Any, Any],
    ops: NamedDependency[OpJobService],
    runner: NamedDependency[Runner],
    uploads: NamedDependency[Uploads],
) -> OpJobBody:
    """Schedule the copy job (``<jid>-copy``) that stages the input dirs into the job's own
    area; ``copySkipped`` when this storage mode needs none."""
    form = await read_form(request, uploads.spool, uploads.max_bytes)
    form.discard_upload()
    values, limits = op_job_fields(form, ("output_dir",))
    bind_job_id(values["jid"])
    input_dirs = tuple(form.fields.get("input_dirs", ()))
    result = await runner.run(
        ops.copy, values["jid"], input_dirs, values["output_dir"], limits["cpu_limit"], limits["memory_limit"]
    )
    return op_body(result, values["jid"])


async def create_upload_job(
    request: Request[Any, Any, Any],
    ops: NamedDependency[OpJobService],
    runner: NamedDependency[Runner],
    uploads: NamedDependency[Uploads],
) -> OpJobBody:
    """Schedule the upload job (``<jid>-upload``) that publishes the plugin's outputs under
    ``job_output_path`` in the object store; ``uploadSkipped`` when this storage mode needs none."""
    form = await read_form(request, uploads.spool, uploads.max_bytes)
    form.discard_upload()
    values, limits = op_job_fields(form, ("job_output_path",))
    bind_job_id(values["jid"])
    result = await runner.run(
        ops.upload, values["jid"], values["job_output_path"], limits["cpu_limit"], limits["memory_limit"]
    )
    return op_body(result, values["jid"])


async def create_delete_job(
    request: Request[Any, Any, Any],
    ops: NamedDependency[OpJobService],
    runner: NamedDependency[Runner],
    uploads: NamedDependency[Uploads],
) -> OpJobBody:
    """Schedule the delete job (``<jid>-delete``) that empties the job's own area;
    ``deleteSkipped`` when there is none."""
    form = await read_form(request, uploads.spool, uploads.max_bytes)
    form.discard_upload()
    values, limits = op_job_fields(form, ())
    bind_job_id(values["jid"])
    result = await runner.run(ops.delete, values["jid"], limits["cpu_limit"], limits["memory_limit"])
    return op_body(result, values["jid"])


_OP_POSTS = {
    JobKind.COPY: (create_copy_job, "The copy job (scheduled now, or the existing one), or copySkipped.", (400, 401, 409, 413, 500, 503, 507)),
    JobKind.UPLOAD: (create_upload_job, "The upload job (scheduled now, or the existing one), or uploadSkipped.", (400, 401, 404, 409, 413, 500, 503, 507)),
    JobKind.DELETE: (create_delete_job, "The delete job (scheduled now, or the existing one), or deleteSkipped.", (400, 401, 409, 413, 500, 503, 507)),
}  # fmt: skip


def op_post_handler(kind: JobKind) -> Any:
    fn, description, codes = _OP_POSTS[kind]
    return post(
        f"/{ROUTES[kind]}/",
        status_code=201,
        tags=[ROUTES[kind]],
        response_description=description,
        responses=errors(*codes),
        operation_class=docs.operation(request_body=docs.op_form_body(kind)),
    )(fn)


# -- observing and removing jobs ----------------------------------------------------------


def status_handler(kind: JobKind) -> Any:
    @get(
        f"/{ROUTES[kind]}/{{jid:str}}/",
        tags=[ROUTES[kind]],
        response_description=f"The {kind.value} job's status and the tail of its logs.",
        responses=errors(401, 404, 500, 503),
        operation_class=docs.PlainOperation,
        name=f"{kind.value}-status",
    )
    async def job_status(jid: FromPath[str], state: State) -> OpJobBody:
        """The job's status and the tail of its logs."""
        ops: OpJobService = state.ops  # (not two dependencies: see v5's job_status)
        runner: Runner = state.runner
        bind_job_id(jid)
        job = ops.jobs.known_status(kind.job_name(jid))
        if job is None:
            job = await runner.run(ops.status, kind, jid)
        return OpJobBody(compute=compute_body(job.info, jid, job.logs))

    return job_status


def remove_handler(kind: JobKind) -> Any:
    doc = "Remove the job's container (pfcon 6: never its data; an unknown job is no error)."
    if kind is JobKind.DELETE:
        doc += " Once the delete job has succeeded, what it left of the job's area goes too."

    @delete(
        f"/{ROUTES[kind]}/{{jid:str}}/",
        status_code=204,
        tags=[ROUTES[kind]],
        response_description="The job's container is gone (or never was).",
        responses=errors(401, 500, 503),
        operation_class=docs.PlainOperation,
        name=f"{kind.value}-remove",
        description=doc,
    )
    async def remove_job(
        jid: FromPath[str], ops: NamedDependency[OpJobService], runner: NamedDependency[Runner]
    ) -> None:
        bind_job_id(jid)
        await runner.run(ops.remove, kind, jid)

    return remove_job


@get(
    "/pluginjobs/{jid:str}/file/",
    tags=["pluginjobs"],
    responses={
        200: ResponseSpec(
            data_container=OutputListingBody,
            description="The plugin's outputs: a zip of its files (application/zip), or in in-network modes "
            "with `job_output_path` a JSON listing of them (application/json). Nothing is uploaded here: "
            "that is the upload job's work.",
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
async def plugin_job_file(
    request: Request[Any, Any, Any],
    jid: FromPath[str],
    ops: NamedDependency[OpJobService],
    runner: NamedDependency[Runner],
) -> Response[Any]:
    """The plugin job's output files."""
    bind_job_id(jid)
    out = await runner.run(ops.outputs, jid, request.query_params.get("job_output_path"))
    return output_response(out, jid, runner)


def handlers(innetwork: bool) -> list[Any]:
    """Every route of pfcon 6."""
    routes: list[Any] = [
        options_handler([p for r in ROUTES.values() for p in (f"/{r}/", f"/{r}/{{jid:str}}/")]),  # first
        plugin_post_handler(innetwork),
        plugin_job_file,
    ]
    for kind in ROUTES:
        routes += [server_info_handler(kind), status_handler(kind), remove_handler(kind)]
        if kind is not JobKind.PLUGIN:
            routes.append(op_post_handler(kind))
    return routes
