"""pfcon-compatible request parsing: raw form multi-dicts to domain objects.

pfcon used flask-restful's reqparse: form fields only, repeated keys for lists (a
list sent once is still a list), the first value of a repeated scalar wins, and all
missing or malformed fields are reported together in one 400.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import BinaryIO
from urllib.parse import parse_qsl

import anyio.to_thread
from multipart import MultipartError, MultipartSegment, PushMultipartParser

from ...domain.errors import InputTooLarge, InvalidFields, InvalidJobSpec
from ...domain.model import JobSpec, PluginType, Resources
from .spool import UploadSpool, no_space

MISSING = "Missing required parameter in the post body"
MAX_FIELD_BYTES = 1024 * 1024
MAX_FORM_BYTES = 16 * 1024 * 1024
MAX_PARTS = 100_000
WRITE_BATCH = 4 * 1024 * 1024

REQUIRED_STR = ("jid", "auid", "image", "type")
REQUIRED_INT = ("number_of_workers", "cpu_limit", "memory_limit", "gpu_limit")


@dataclass
class FormData:
    fields: dict[str, list[str]] = field(default_factory=dict)
    upload_path: str | None = None

    def add(self, name: str, value: str) -> None:
        self.fields.setdefault(name, []).append(value)

    def first(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[0] if values else None

    def discard_upload(self) -> None:
        if self.upload_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.upload_path)
            self.upload_path = None


def _int_problem(raw: str) -> str | None:
    try:
        int(raw)
    except ValueError:
        return f"invalid literal for int() with base 10: {raw!r}"
    return None


def job_spec_from_form(form: FormData) -> JobSpec:
    """Build a JobSpec, or raise InvalidFields with every problem at once."""
    problems: dict[str, str] = {}
    for name in (*REQUIRED_STR, *REQUIRED_INT):
        value = form.first(name)
        if value is None:
            problems[name] = MISSING
        elif name in REQUIRED_INT and (why := _int_problem(value)):
            problems[name] = why
    if not form.fields.get("entrypoint"):
        problems["entrypoint"] = MISSING
    plugin_type = form.first("type")
    if plugin_type is not None and plugin_type not in ("ds", "fs", "ts"):
        problems["type"] = f"{plugin_type} is not a valid choice"
    if problems:
        raise InvalidFields(problems)

    def lst(name: str) -> tuple[str, ...]:
        return tuple(form.fields.get(name, ()))

    input_dirs = form.fields.get("input_dirs")
    return JobSpec(
        jid=(form.first("jid") or "").lstrip("/"),
        image=form.first("image") or "",
        entrypoint=lst("entrypoint"),
        type=PluginType(plugin_type or ""),
        resources=Resources(
            number_of_workers=int(form.first("number_of_workers") or 0),
            cpu_limit=int(form.first("cpu_limit") or 0),
            memory_limit=int(form.first("memory_limit") or 0),
            gpu_limit=int(form.first("gpu_limit") or 0),
        ),
        args=lst("args"),
        args_path_flags=lst("args_path_flags"),
        auid=form.first("auid") or "",
        env=lst("env"),
        input_dirs=tuple(input_dirs) if input_dirs is not None else None,
        output_dir=form.first("output_dir"),
    )


OP_JOB_DEFAULTS = {"cpu_limit": 1000, "memory_limit": 300}  # pfcon 6's op-job limits


def op_job_fields(form: FormData, required: tuple[str, ...]) -> tuple[dict[str, str], dict[str, int]]:
    """The fields of a pfcon 6 op-job POST: ``jid`` and ``required`` (strings; ``jid``
    with leading '/' stripped) and the op job's limits, or every problem at once."""
    problems: dict[str, str] = {}
    values: dict[str, str] = {}
    for name in ("jid", *required):
        value = form.first(name)
        if value is None:
            problems[name] = MISSING
        else:
            values[name] = value
    limits: dict[str, int] = {}
    for name, default in OP_JOB_DEFAULTS.items():
        raw = form.first(name)
        if raw is None:
            limits[name] = default
        elif why := _int_problem(raw):
            problems[name] = why
        else:
            limits[name] = int(raw)
    if problems:
        raise InvalidFields(problems)
    values["jid"] = values["jid"].lstrip("/")
    return values, limits


def parse_urlencoded(body: bytes) -> FormData:
    form = FormData()
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise InvalidJobSpec("the form is not valid UTF-8") from None
    for name, value in pairs:
        form.add(name, value)
    return form


async def parse_multipart(
    stream: AsyncIterator[bytes],
    boundary: str,
    spool: UploadSpool,
    max_upload_bytes: int,
    upload_field: str = "data_file",
) -> FormData:
    """Parse multipart/form-data incrementally.

    The part named ``upload_field`` goes to a file in the upload spool (written from a
    worker thread in batches, the spool's free-space reserve checked before each);
    other parts are small text fields kept in memory. Nothing is kept whole in memory,
    whatever the upload size, and on any error nothing is left in the spool.
    """
    form = FormData()
    upload: BinaryIO | None = None
    pending = bytearray()
    uploaded = 0
    form_bytes = 0

    def write(data: bytes) -> None:
        assert upload is not None
        spool.check_room(len(data))
        try:
            upload.write(data)
        except OSError as e:
            raise no_space(e) or e from None

    async def flush() -> None:
        if pending and upload is not None:
            data = bytes(pending)
            pending.clear()
            await anyio.to_thread.run_sync(write, data)

    def finish() -> None:
        assert upload is not None
        try:
            upload.close()
        except OSError as e:
            raise no_space(e) or e from None

    try:
        with PushMultipartParser(boundary.encode("latin-1"), max_segment_count=MAX_PARTS) as parser:
            segment: MultipartSegment | None = None
            text = bytearray()
            async for chunk in _with_eof(stream):
                if parser.closed:
                    continue  # an epilogue after the closing boundary
                for event in parser.parse(chunk):
                    if isinstance(event, MultipartSegment):
                        segment = event
                        if segment.name == upload_field and upload is None:
                            fd, path = spool.new_file()
                            form.upload_path = path
                            upload = os.fdopen(fd, "wb")
                    elif event:
                        if segment is None:
                            continue
                        if segment.name == upload_field and upload is not None and form.upload_path:
                            uploaded += len(event)
                            if uploaded > max_upload_bytes:
                                raise InputTooLarge(
                                    f"data_file: the upload exceeds the limit of {max_upload_bytes} bytes"
                                )
                            pending.extend(event)
                            if len(pending) >= WRITE_BATCH:
                                await flush()
                        else:
                            text.extend(event)
                            form_bytes += len(event)
                            if len(text) > MAX_FIELD_BYTES or form_bytes > MAX_FORM_BYTES:
                                raise InputTooLarge(f"{segment.name}: form field too large")
                    else:
                        if segment is not None and segment.name != upload_field:
                            try:
                                form.add(segment.name, text.decode(segment.charset or "utf-8"))
                            except (UnicodeDecodeError, LookupError):
                                raise InvalidJobSpec(f"{segment.name}: not valid UTF-8") from None
                        text.clear()
                        segment = None
        await flush()
        if upload is not None:
            await anyio.to_thread.run_sync(finish)
    except MultipartError as e:
        _close(upload)
        form.discard_upload()
        raise InvalidJobSpec(f"Invalid multipart/form-data: {e}") from None
    except BaseException:
        _close(upload)
        form.discard_upload()
        raise
    return form


def _close(upload: BinaryIO | None) -> None:
    if upload is not None:
        with contextlib.suppress(OSError):
            upload.close()


async def _with_eof(stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    async for chunk in stream:
        if chunk:
            yield chunk
    yield b""  # tells the push parser the body is complete
