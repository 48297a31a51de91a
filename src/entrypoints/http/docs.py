"""The OpenAPI document's parts that Litestar cannot infer, and the offline docs page.

Handlers that read their request raw (streamed forms, lenient JSON) declare their
request bodies here; every error status a handler really answers is listed with the
``{"message": ...}`` body; the Swagger UI page loads its assets from this server
(the ``swagger-ui-bundle-v2`` package), never from a CDN.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from litestar import Router
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin, YamlRenderPlugin
from litestar.openapi.spec import (
    Components,
    OpenAPIFormat,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    Reference,
    RequestBody,
    Schema,
    SecurityRequirement,
    SecurityScheme,
)
from litestar.static_files import create_static_files_router

from ...domain.model import (
    IMAGE_REFERENCE_MAX_LENGTH,
    MAX_CPU_MILLICORES,
    MAX_GPUS,
    MAX_MEMORY_MIB,
    MAX_WORKERS,
    MIN_MEMORY_MIB,
    OP_JOB_ID_MAX_LENGTH,
    JobKind,
)
from .schemas import ErrorBody

SCHEMA_PATH = "/api/v1/schema"
STATIC_PATH = f"{SCHEMA_PATH}/static"
BEARER = "BearerToken"
SECURITY: list[SecurityRequirement] = [{BEARER: []}]

ERRORS: dict[int, str] = {
    400: "Invalid request. For form fields, `message` is an object naming each missing or "
    "malformed field; otherwise it is a string.",
    401: "Missing, malformed, invalid or expired bearer token.",
    404: "No such job (or output directory).",
    409: "A job with this id already exists, or (pfcon 6) a job this one needs has not finished as required.",
    413: "The request or its upload exceeds a configured limit.",
    415: "The request body is not JSON.",
    500: "Unexpected server error (details are in the server's log).",
    503: "A backend (container engine, storage) is unreachable or cannot provide what the "
    "job asks for, or the server is busy; retrying later may succeed.",
    507: "The server's storage has no room left for the job's data.",
}


def errors(*codes: int) -> dict[int, ResponseSpec]:
    """The documented error responses of a handler, each with the ErrorBody schema."""
    return {
        code: ResponseSpec(data_container=ErrorBody, description=ERRORS[code], generate_examples=False)
        for code in codes
    }


# -- request bodies ------------------------------------------------------------------


def _string(description: str, **kw: Any) -> Schema:
    return Schema(type=OpenAPIType.STRING, description=description, **kw)


def _strings(description: str, **kw: Any) -> Schema:
    return Schema(type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.STRING), description=description, **kw)


def _integer(description: str, low: int, high: int) -> Schema:
    return Schema(type=OpenAPIType.INTEGER, minimum=low, maximum=high, description=description)


def job_form_schema(innetwork: bool, with_file: bool) -> Schema:
    """pfcon's job descriptors as form fields (repeated keys for lists)."""
    properties: dict[str, Schema | Reference] = {
        "jid": _string(
            "The job id: lower case letters, digits and '-', starting and ending with a letter or "
            "digit, at most 63 characters (leading '/' are stripped, like pfcon does).",
            pattern=r"^/*[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$",
        ),
        "entrypoint": _strings("The command to run in the image (repeated field).", min_items=1),
        "args": _strings("The plugin's arguments (repeated field)."),
        "args_path_flags": _strings("Flags among `args` whose values are input paths (repeated field)."),
        "auid": _string("The id of the user the job runs for."),
        "number_of_workers": _integer("Workers for the job (the Docker backend runs exactly 1).", 1, MAX_WORKERS),
        "cpu_limit": _integer("CPU limit in millicores.", 1, MAX_CPU_MILLICORES),
        "memory_limit": _integer("Memory limit in MiB.", MIN_MEMORY_MIB, MAX_MEMORY_MIB),
        "gpu_limit": _integer("GPUs for the job.", 0, MAX_GPUS),
        "image": _string(
            "The plugin's container image; it must be present on the container engine unless the server pulls images.",
            min_length=1,
            max_length=IMAGE_REFERENCE_MAX_LENGTH,
        ),
        "type": Schema(type=OpenAPIType.STRING, enum=["ds", "fs", "ts"], description="The plugin type."),
        "env": Schema(
            type=OpenAPIType.ARRAY,
            items=Schema(type=OpenAPIType.STRING, pattern="^[^=]+="),
            description='Extra environment variables, each "KEY=value" (repeated field).',
        ),
    }
    required = [
        "jid",
        "entrypoint",
        "auid",
        "number_of_workers",
        "cpu_limit",
        "memory_limit",
        "gpu_limit",
        "image",
        "type",
    ]
    if innetwork:
        properties["input_dirs"] = _strings(
            "Input directories, relative to the storage root (repeated field).", min_items=1
        )
        properties["output_dir"] = _string("Output directory, relative to the storage root.")
        required += ["input_dirs", "output_dir"]
    elif with_file:
        properties["data_file"] = Schema(
            type=OpenAPIType.STRING,
            format=OpenAPIFormat.BINARY,
            content_media_type="application/zip",
            description="A zip of the job's input files.",
        )
        required.append("data_file")
    return Schema(type=OpenAPIType.OBJECT, properties=properties, required=required)


def job_form_body(innetwork: bool) -> RequestBody:
    how = (
        "The job's input directories are named by `input_dirs`."
        if innetwork
        else "The job's input files come as the zip upload `data_file` (multipart/form-data only)."
    )
    return RequestBody(
        required=True,
        description=f"pfcon's job descriptors as form fields. {how}",
        content={
            "multipart/form-data": OpenAPIMediaType(schema=job_form_schema(innetwork, with_file=True)),
            "application/x-www-form-urlencoded": OpenAPIMediaType(schema=job_form_schema(innetwork, with_file=False)),
        },
    )


def plugin_form_body(innetwork: bool) -> RequestBody:
    """pfcon 6's plugin job: pfcon 5's descriptors; in-network the input comes from the copy job."""
    body = job_form_body(innetwork)
    for media in (body.content or {}).values():
        schema = media.schema
        assert isinstance(schema, Schema) and schema.properties is not None
        schema.properties["jid"] = OP_JID
        if innetwork:
            schema.required = [r for r in (schema.required or []) if r != "input_dirs"]
    return body


OP_JID = _string(
    f"The job id: lower case letters, digits and '-', starting and ending with a letter or digit, at most "
    f"{OP_JOB_ID_MAX_LENGTH} characters (so that its op jobs' names, <jid>-upload, fit the scheduler's 63), "
    "not ending in -copy, -upload or -delete.",
    pattern=rf"^/*[a-z0-9](?:[a-z0-9-]{{0,{OP_JOB_ID_MAX_LENGTH - 2}}}[a-z0-9])?$",
)


def op_form_body(kind: JobKind) -> RequestBody:
    """The form of an op job's POST (pfcon 6): the job id, its fields, the op job's limits."""
    properties: dict[str, Schema | Reference] = {"jid": OP_JID}
    required = ["jid"]
    if kind is JobKind.COPY:
        properties["input_dirs"] = _strings("Input directories, relative to the storage root (repeated field).")
        properties["output_dir"] = _string("The plugin's output directory, relative to the storage root.")
        required.append("output_dir")
    if kind is JobKind.UPLOAD:
        properties["job_output_path"] = _string("Where the outputs go in the object store (a path under its root).")
        required.append("job_output_path")
    properties["cpu_limit"] = _integer("The op job's CPU limit in millicores (default 1000).", 1, MAX_CPU_MILLICORES)
    properties["memory_limit"] = _integer(
        "The op job's memory limit in MiB (default 300).", MIN_MEMORY_MIB, MAX_MEMORY_MIB
    )
    schema = Schema(type=OpenAPIType.OBJECT, properties=properties, required=required)
    return RequestBody(
        required=True,
        description=f"The {kind.value} job's parameters as form fields.",
        content={
            "application/x-www-form-urlencoded": OpenAPIMediaType(schema=schema),
            "multipart/form-data": OpenAPIMediaType(schema=schema),
        },
    )


CREDENTIALS_BODY = RequestBody(
    required=True,
    content={
        "application/json": OpenAPIMediaType(
            schema=Schema(
                type=OpenAPIType.OBJECT,
                properties={
                    "pfcon_user": Schema(type=OpenAPIType.STRING),
                    "pfcon_password": Schema(type=OpenAPIType.STRING),
                },
                required=["pfcon_user", "pfcon_password"],
            )
        )
    },
)

JOB_OUTPUT_PATH = Parameter(
    name="job_output_path",
    param_in="query",
    required=False,
    schema=Schema(type=OpenAPIType.STRING),
    description="In-network modes: the output directory to list, relative to the storage root "
    "(required by the filesystem modes; with swift storage the zip is sent when it is absent). "
    "Ignored in zipfile mode.",
)

ZIP_CONTENT = OpenAPIMediaType(
    schema=Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY, content_media_type="application/zip")
)
ATTACHMENT_HEADERS: dict[str, OpenAPIHeader] = {
    "content-disposition": OpenAPIHeader(
        schema=Schema(type=OpenAPIType.STRING), required=True, description="attachment; filename=<jid>.zip|.json"
    ),
    "cache-control": OpenAPIHeader(schema=Schema(type=OpenAPIType.STRING, const="no-cache"), required=True),
}


# -- operations ------------------------------------------------------------------------


def _is_litestar_error(response: Any) -> bool:
    """Litestar's own error body (status_code/detail), which this API never sends."""
    for media in (getattr(response, "content", None) or {}).values():
        schema = media.schema
        if isinstance(schema, Schema) and schema.properties and {"status_code", "detail"} <= set(schema.properties):
            return True
    return False


def operation(
    *,
    request_body: RequestBody | None = None,
    parameters: list[Parameter] | None = None,
    extra_200: dict[str, OpenAPIMediaType] | None = None,
    headers_200: dict[str, OpenAPIHeader] | None = None,
) -> type[Operation]:
    """An Operation class completing what Litestar infers from a handler.

    Litestar documents a 400 with its own error body for any handler with parameters;
    this API's errors all have the ErrorBody, so that one is dropped (a handler that
    does answer 400 lists it with ``errors(400)``).
    """

    @dataclass
    class PfconOperation(Operation):
        def __post_init__(self) -> None:
            responses = dict(self.responses or {})
            for code, response in list(responses.items()):
                if _is_litestar_error(response):
                    del responses[code]
            ok = responses.get("200")
            if isinstance(ok, OpenAPIResponse):
                if extra_200:
                    ok.content = {**(ok.content or {}), **extra_200}
                if headers_200:
                    ok.headers = {**(ok.headers or {}), **headers_200}
            self.responses = responses
            if request_body is not None:
                self.request_body = request_body
            if parameters:
                self.parameters = [*(self.parameters or []), *parameters]

    return PfconOperation


PlainOperation = operation()


# -- the documentation site --------------------------------------------------------------


def swagger_ui_dir() -> Path:
    from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

    return Path(str(swagger_ui_path))


def openapi_config(title: str, version: str) -> OpenAPIConfig:
    """The document at /api/v1/schema/openapi.json (and .yaml); Swagger UI at /api/v1/schema/."""
    swagger = SwaggerRenderPlugin(
        path=["/", "/swagger"],
        js_url=f"{STATIC_PATH}/swagger-ui-bundle.js",
        css_url=f"{STATIC_PATH}/swagger-ui.css",
        standalone_preset_js_url=f"{STATIC_PATH}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{STATIC_PATH}/favicon-32x32.png'>",
    )
    return OpenAPIConfig(
        title=title,
        version=version,
        description="A pfcon-compatible compute controller for ChRIS, serving both API generations: "
        "pfcon 5's `/api/v1/jobs/` (python-pfconclient 3.x: one request stages the input and runs the "
        "plugin) and pfcon 6's `/api/v1/pluginjobs/`, `copyjobs/`, `uploadjobs/`, `deletejobs/` "
        "(python-pfconclient 4: the client runs copy, plugin, upload and delete jobs one by one). "
        'Every error body is `{"message": ...}`. The jobs routes need `Authorization: Bearer <token>` '
        "with a token from `POST /api/v1/auth-token/`.",
        path=SCHEMA_PATH,
        use_handler_docstrings=True,
        components=Components(
            security_schemes={
                BEARER: SecurityScheme(
                    type="http",
                    scheme="bearer",
                    bearer_format="JWT",
                    description="A token from POST /api/v1/auth-token/.",
                )
            }
        ),
        render_plugins=[swagger, JsonRenderPlugin(), YamlRenderPlugin()],
    )


def static_assets_router() -> Router:
    """Swagger UI's scripts, stylesheet and icons, served by this server."""
    return create_static_files_router(
        path=STATIC_PATH, directories=[swagger_ui_dir()], include_in_schema=False, name="docs-static"
    )
