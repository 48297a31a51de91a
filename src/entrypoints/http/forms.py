"""pfcon-compatible request parsing: raw form multi-dicts to domain objects.

pfcon used flask-restful's reqparse: form fields only, repeated keys for lists (a
list sent once is still a list), the first value of a repeated scalar wins, and all
missing or malformed fields are reported together in one 400.
"""

from __future__ import annotations

import contextlib
import os
from functools import partial
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO
from urllib.parse import parse_qsl

import anyio
import anyio.abc
import anyio.to_thread
from multipart import MultipartError, MultipartSegment, PushMultipartParser

from ...domain.errors import InputTooLarge, InvalidFields, InvalidJobSpec
from ...domain.model import JobSpec, PluginType, Resources
from ...domain.ports import ReceivedInput
from .spool import UploadSpool, no_space
from .upload import StreamedUpload

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
    received: ReceivedInput | None = None  # the upload, received as it arrived (ADR 19)
    upload_bytes: bytes | None = None  # the upload of a small body, kept in memory (ADR 26)

    def add(self, name: str, value: str) -> None:
        self.fields.setdefault(name, []).append(value)

    def first(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[0] if values else None

    @property
    def upload_left(self) -> bool:
        """Whether ``discard_upload`` has anything to remove (an adopted upload has not:
        the request then needs no worker thread for it)."""
        return self.upload_path is not None or (self.received is not None and self.received.pending)

    def discard_upload(self) -> None:
        """Remove the spooled file or the received input (blocking: a worker thread's job)."""
        if self.upload_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.upload_path)
            self.upload_path = None
        if self.received is not None:
            received, self.received = self.received, None
            received.discard()


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


class _SpoolSink:
    """The ``data_file`` part written to a file in the upload spool, in batches from
    worker threads (the spool's free-space reserve checked before each)."""

    def __init__(self, spool: UploadSpool, form: FormData) -> None:
        self.spool = spool
        self.form = form
        self.upload: BinaryIO | None = None
        self.pending = bytearray()

    async def start(self) -> None:
        fd, path = self.spool.new_file()
        self.form.upload_path = path
        self.upload = os.fdopen(fd, "wb")

    async def send(self, data: bytes) -> None:
        self.pending.extend(data)
        if len(self.pending) >= WRITE_BATCH:
            await self._flush()

    def end(self) -> None:
        pass

    async def _flush(self) -> None:
        if self.pending and self.upload is not None:
            data = bytes(self.pending)
            self.pending.clear()
            await anyio.to_thread.run_sync(self._write, data)

    def _write(self, data: bytes) -> None:
        assert self.upload is not None
        self.spool.check_room(len(data))
        try:
            self.upload.write(data)
        except OSError as e:
            raise no_space(e) or e from None

    async def finish(self) -> None:
        await self._flush()
        if self.upload is not None:
            await anyio.to_thread.run_sync(self._close_checked)

    def _close_checked(self) -> None:
        assert self.upload is not None
        try:
            self.upload.close()
        except OSError as e:
            raise no_space(e) or e from None

    def abort(self) -> None:
        _close(self.upload)

    async def collect(self) -> None:
        pass

    def leftover(self) -> None:
        pass  # form.upload_path is set from the start


class _StreamSink:
    """The ``data_file`` part handed to ``receive`` in a worker thread as it arrives
    (ADR 19); what it returns becomes ``form.received``."""

    def __init__(self, receive: Receiver, limiter: anyio.CapacityLimiter | None, form: FormData) -> None:
        self.receive = receive
        self.limiter = limiter
        self.form = form
        self.upload: StreamedUpload | None = None
        self.task_group: anyio.abc.TaskGroup | None = None

    async def start(self) -> None:
        assert self.task_group is not None
        self.upload = StreamedUpload(self.receive, self.limiter)
        self.task_group.start_soon(self.upload.run)

    async def send(self, data: bytes) -> None:
        assert self.upload is not None
        await self.upload.send(data)

    def end(self) -> None:
        if self.upload is not None:
            self.upload.close()

    async def finish(self) -> None:
        self.end()  # the body ended: nothing more in any case

    def abort(self) -> None:
        if self.upload is not None:
            self.upload.abort()

    async def collect(self) -> None:
        """After the worker has ended: its result, or its error."""
        if self.upload is not None:
            self.form.received = self.upload.outcome()

    def leftover(self) -> None:
        """On an error after the worker succeeded: its result, so that it is discarded."""
        if self.upload is not None and self.upload.result is not None and self.form.received is None:
            self.form.received = self.upload.result


class _MemorySink:
    """The ``data_file`` part of a small body kept in memory (``form.upload_bytes``): the
    body's length bounds it (ADR 26)."""

    def __init__(self, form: FormData) -> None:
        self.form = form
        self.pending: bytearray | None = None

    async def start(self) -> None:
        self.pending = bytearray()

    async def send(self, data: bytes) -> None:
        assert self.pending is not None
        self.pending.extend(data)

    def end(self) -> None:
        pass

    async def finish(self) -> None:
        if self.pending is not None:
            self.form.upload_bytes = bytes(self.pending)

    def abort(self) -> None:
        self.pending = None

    async def collect(self) -> None:
        pass

    def leftover(self) -> None:
        pass


Receiver = Callable[[Callable[[int], bytes]], Any]


async def parse_multipart(
    stream: AsyncIterator[bytes],
    boundary: str,
    spool: UploadSpool,
    max_upload_bytes: int,
    upload_field: str = "data_file",
    receive: Receiver | None = None,
    on_upload: Callable[[FormData], Awaitable[None]] | None = None,
    in_memory: bool = False,
) -> FormData:
    """Parse multipart/form-data incrementally.

    The first part named ``upload_field`` goes, with ``receive``, to ``receive(read)``
    in a worker thread while it arrives (its result in ``form.received``), otherwise to a
    file in the upload spool (``form.upload_path``); other parts are small text fields
    kept in memory. Nothing is kept whole in memory, whatever the upload size, and on any
    error nothing is left behind (the spool file, or what ``receive`` wrote).
    ``on_upload(form)`` is awaited when the upload part begins, with the fields that came
    before it (it must not raise). With ``in_memory`` (a small body: its length bounds
    it), the upload part is kept in ``form.upload_bytes`` instead.
    """
    form = FormData()
    sink: _SpoolSink | _StreamSink | _MemorySink
    if in_memory:
        sink = _MemorySink(form)
    elif receive is None:
        sink = _SpoolSink(spool, form)
    else:
        sink = _StreamSink(receive, spool.limiter, form)
    parse = partial(_parse_parts, stream, boundary, form, sink, max_upload_bytes, upload_field, on_upload)
    if isinstance(sink, _StreamSink):
        async with anyio.create_task_group() as tg:
            sink.task_group = tg
            error = await _parse_into(sink, parse)
        # Here the worker has ended.
    else:
        error = await _parse_into(sink, parse)
    try:
        if error is not None:
            raise error
        await sink.collect()
    except MultipartError as e:
        sink.leftover()
        await _discard(form)
        raise InvalidJobSpec(f"Invalid multipart/form-data: {e}") from None
    except BaseException:
        sink.leftover()
        await _discard(form)
        raise
    return form


async def _parse_into(
    sink: _SpoolSink | _StreamSink | _MemorySink, parse: Callable[[], Awaitable[None]]
) -> Exception | None:
    """``parse()`` into ``sink``; its error returned (to be raised once a worker has ended)."""
    try:
        await parse()
        await sink.finish()
    except Exception as e:  # noqa: BLE001 - kept, raised once the worker has ended
        sink.abort()
        return e
    except BaseException:
        sink.abort()
        raise
    return None


async def _discard(form: FormData) -> None:
    if form.upload_path is not None or form.received is not None:
        await anyio.to_thread.run_sync(form.discard_upload)


async def _parse_parts(
    stream: AsyncIterator[bytes],
    boundary: str,
    form: FormData,
    sink: _SpoolSink | _StreamSink | _MemorySink,
    max_upload_bytes: int,
    upload_field: str,
    on_upload: Callable[[FormData], Awaitable[None]] | None = None,
) -> None:
    uploaded = 0
    form_bytes = 0
    started = False
    with PushMultipartParser(boundary.encode("latin-1"), max_segment_count=MAX_PARTS) as parser:
        segment: MultipartSegment | None = None
        is_upload = False  # the current segment is the (first) upload part
        text = bytearray()
        async for chunk in _with_eof(stream):
            if parser.closed:
                continue  # an epilogue after the closing boundary
            for event in parser.parse(chunk):
                if isinstance(event, MultipartSegment):
                    segment = event
                    is_upload = segment.name == upload_field and not started
                    if is_upload:
                        started = True
                        await sink.start()
                        if on_upload is not None:
                            await on_upload(form)
                elif event:
                    if segment is None:
                        continue
                    if segment.name == upload_field:
                        uploaded += len(event)
                        if uploaded > max_upload_bytes:
                            raise InputTooLarge(f"data_file: the upload exceeds the limit of {max_upload_bytes} bytes")
                        if is_upload:
                            await sink.send(event)
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
                    elif is_upload:
                        sink.end()
                    text.clear()
                    segment = None
                    is_upload = False


def _close(upload: BinaryIO | None) -> None:
    if upload is not None:
        with contextlib.suppress(OSError):
            upload.close()


async def _with_eof(stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    async for chunk in stream:
        if chunk:
            yield chunk
    yield b""  # tells the push parser the body is complete
