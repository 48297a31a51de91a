"""Out-of-network storage: the input arrives as an uploaded zip, the output leaves as one."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import threading
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from ...domain.errors import InputTooLarge, InvalidInputData, InvalidJobSpec, JobConflict, StorageFull
from ...domain.model import OutputFile, OutputListing, StagedData, path_length_problem
from ...domain.ports import ReceivedInput, ReservedArea, StagingRequest, ZipStream
from .chrislink import expand_links
from .local import CHUNK, STAGING_MARKER, StoreBase, hold_marker, iter_zip, safe_relative_path

BAD_ZIP = "data_file: Bad zip file"
_COMPRESSION_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA})
# Two members whose names collide as a file and a directory, or a link in the way.
_CONFLICT_ERRNOS = frozenset({errno.ELOOP, errno.ENOTDIR, errno.EISDIR, errno.EEXIST})
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})

MiB = 1024**2
GiB = 1024**3


@dataclass(frozen=True, slots=True)
class ZipLimits:
    """What an uploaded input archive may expand to. The defaults are the production
    defaults: sane for ChRIS inputs (DICOM series, NIfTI volumes, text) and protective."""

    # Most entries (files and directories) in one archive.
    max_entries: int = 100_000
    # Most bytes the whole archive may expand to.
    max_uncompressed_bytes: int = 16 * GiB
    # Largest expansion factor (uncompressed / compressed) of a member and of the whole
    # archive, checked once the uncompressed size exceeds ratio_min_bytes; 0 disables it.
    max_ratio: int = 500
    # Members (and archives) up to this uncompressed size are exempt from the ratio check.
    ratio_min_bytes: int = MiB
    # Free space that must remain on storeBase's filesystem after extraction.
    reserve_bytes: int = GiB


def _entry_type(info: zipfile.ZipInfo) -> int:
    return stat.S_IFMT(info.external_attr >> 16) if info.create_system == 3 else 0


def _ratio_exceeded(uncompressed: int, compressed: int, limits: ZipLimits) -> bool:
    return (
        limits.max_ratio > 0 and uncompressed > limits.ratio_min_bytes and compressed * limits.max_ratio < uncompressed
    )


def _ratio_message(what: str, uncompressed: int, compressed: int, limits: ZipLimits) -> str:
    ratio = uncompressed // max(compressed, 1)
    return (
        f"data_file: {what} expands {ratio}x ({compressed} bytes to {uncompressed}; "
        f"the limit is {limits.max_ratio}x, ZIP_MAX_RATIO)"
    )


def _room(free_bytes: int, limits: ZipLimits) -> int:
    """Bytes the input may take on a filesystem with ``free_bytes`` available."""
    return max(0, free_bytes - limits.reserve_bytes)


def _too_large(limits: ZipLimits) -> InputTooLarge:
    return InputTooLarge(
        "data_file: the archive expands to more than the limit of "
        f"{limits.max_uncompressed_bytes} bytes (ZIP_MAX_UNCOMPRESSED_BYTES)"
    )


def _no_room(needs: str, free_bytes: int, limits: ZipLimits) -> StorageFull:
    return StorageFull(
        f"not enough free space on storeBase for the input: needs {needs} bytes, "
        f"{free_bytes} free, {limits.reserve_bytes} reserved (STOREBASE_RESERVE_BYTES)"
    )


def free_space(path: str) -> int | None:
    """Bytes available to this (unprivileged) process on ``path``'s filesystem, if known."""
    try:
        st = os.statvfs(path)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


def inspect_zip(path: str, limits: ZipLimits, free_bytes: int | None = None) -> list[tuple[zipfile.ZipInfo, str]]:
    """Validate an archive without extracting it: names, types, counts, sizes, expansion
    ratios and, when ``free_bytes`` is given, the room left on the destination."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError):
        raise InvalidInputData(BAD_ZIP) from None
    if len(infos) > limits.max_entries:
        raise InputTooLarge(
            f"data_file: the archive has {len(infos)} entries, more than the limit of "
            f"{limits.max_entries} (ZIP_MAX_ENTRIES)"
        )
    members: list[tuple[zipfile.ZipInfo, str]] = []
    total = 0
    compressed = 0
    for info in infos:
        rel = safe_relative_path(info.filename)
        if rel is None:
            too_long = path_length_problem(info.filename)
            if too_long:
                raise InvalidInputData(f"data_file: entry name too long: {too_long}")
            raise InvalidInputData(f"data_file: unsafe entry name {info.filename!r}")
        if info.flag_bits & 0x1:
            raise InvalidInputData(f"data_file: encrypted entries are not supported ({info.filename!r})")
        if info.compress_type not in _COMPRESSION_METHODS:
            raise InvalidInputData(
                f"data_file: unsupported compression method {info.compress_type} ({info.filename!r})"
            )
        kind = _entry_type(info)
        if kind == stat.S_IFLNK:
            raise InvalidInputData(f"data_file: symbolic link entries are not allowed ({info.filename!r})")
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise InvalidInputData(f"data_file: unsupported entry type ({info.filename!r})")
        if _ratio_exceeded(info.file_size, info.compress_size, limits):
            raise InputTooLarge(_ratio_message(f"member {info.filename!r}", info.file_size, info.compress_size, limits))
        total += info.file_size
        compressed += info.compress_size
        if total > limits.max_uncompressed_bytes:
            raise _too_large(limits)
        members.append((info, rel))
    # Many small members, each under ratio_min_bytes, may still make a bomb together.
    if _ratio_exceeded(total, compressed, limits):
        raise InputTooLarge(_ratio_message("the archive", total, compressed, limits))
    if free_bytes is not None and total > _room(free_bytes, limits):
        raise _no_room(str(total), free_bytes, limits)
    return members


def extract_zip(path: str | Callable[[int], bytes], destination: str, limits: ZipLimits) -> int:
    """Extract an archive into ``destination``; return the number of files.

    From a file (``path``): the central directory is checked first (``inspect_zip``),
    then the bytes actually written are counted, so that an archive whose headers lie
    cannot write past any limit. From a ``read(n)`` callable: the archive is checked and
    extracted as it is read, front to back (``zipstream``, ADR 19). On error a partial
    extraction is left for the caller to remove.
    """
    free_bytes = free_space(destination)
    if callable(path):
        from .zipstream import extract_stream

        return extract_stream(path, destination, limits, free_bytes)
    members = inspect_zip(path, limits, free_bytes)
    room = None if free_bytes is None else _room(free_bytes, limits)
    nfiles = 0
    written = 0
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        with zipfile.ZipFile(path) as archive:
            for info, rel in members:
                target = os.path.join(destination, rel)
                if info.is_dir():
                    os.makedirs(target, exist_ok=True)
                    continue
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with archive.open(info) as src:
                    fd = os.open(target, flags, 0o644)
                    with os.fdopen(fd, "wb") as dst:
                        member_written = 0
                        while chunk := src.read(CHUNK):
                            member_written += len(chunk)
                            written += len(chunk)
                            if member_written > info.file_size:
                                raise InputTooLarge(
                                    f"data_file: member {info.filename!r} holds more than the "
                                    f"{info.file_size} bytes its header says"
                                )
                            if written > limits.max_uncompressed_bytes:
                                raise _too_large(limits)
                            if free_bytes is not None and room is not None and written > room:
                                raise _no_room(f"at least {written}", free_bytes, limits)
                            dst.write(chunk)
                nfiles += 1
    except (
        zipfile.BadZipFile,
        zlib.error,
        EOFError,
        NotADirectoryError,
        IsADirectoryError,
        ValueError,
        NotImplementedError,
        RuntimeError,
    ):
        raise InvalidInputData(BAD_ZIP) from None
    except OSError as e:
        if e.errno in _FULL_ERRNOS:
            raise StorageFull(f"storeBase is full: extracting the input failed: {e.strerror}") from None
        if e.errno == errno.ENAMETOOLONG:
            raise InvalidInputData("data_file: an entry name is too long for storeBase") from None
        if e.errno in _CONFLICT_ERRNOS:
            raise InvalidInputData(BAD_ZIP) from None
        raise
    return nfiles


RECEIVING_PREFIX = ".upload-"  # key-.upload-<hex>/: never a job id (ids start with a letter or digit)


class ReceivedZip:
    """An upload extracted while it was received, in ``key-.upload-<hex>/incoming``
    until its job adopts it (ADR 19).

    The area carries the staging marker of ``StoreBase.claimed``, held (``flock``) for as
    long as this object lives: if the server dies, the next start removes the area
    (``StoreBase.recover``), as it does a half-staged ``key-<jid>/``.
    """

    def __init__(self, storebase: StoreBase) -> None:
        self.storebase = storebase
        self.id = RECEIVING_PREFIX + secrets.token_hex(8)
        self.nfiles = 0
        self.nbytes = -1  # bytes extracted (-1: not known)
        self.links = -1  # files named like ChRIS link files (0: no link expansion to do)
        self._lock = threading.Lock()
        self._marker = -1
        path = storebase.claim(self.id)
        try:
            self._marker = hold_marker(path)
            os.mkdir(self.incoming)
        except BaseException:
            self.discard()
            raise

    @property
    def incoming(self) -> str:
        return self.storebase.incoming(self.id)

    @property
    def pending(self) -> bool:
        return bool(self.id) or self._marker >= 0

    def handed_over(self) -> int:
        """The area was renamed into its job's directory: forget it (``discard`` is a no-op
        from now on) and hand over the fd that holds its staging marker."""
        with self._lock:
            marker, self._marker, self.id = self._marker, -1, ""
        return marker

    def discard(self) -> None:
        """Remove the area unless its job adopted it; idempotent."""
        with self._lock:
            if self.id:
                self.storebase.delete(self.id)
                self.id = ""
            if self._marker >= 0:
                os.close(self._marker)
                self._marker = -1


class ReservedZipArea:
    """``key-<jid>/`` claimed, with empty ``incoming/`` and ``outgoing/`` (the mount
    sources a job can be created with) and its staging marker held, before the received
    upload is staged into it (``InputReservingPort``, ADR 23)."""

    def __init__(self, storebase: StoreBase, jid: str) -> None:
        self.storebase = storebase
        self.jid = jid
        self._lock = threading.Lock()
        self._marker = -1
        self._released = False
        path = storebase.claim(jid)  # JobAlreadyExists
        try:
            self._marker = hold_marker(path)
            os.mkdir(storebase.incoming(jid))
            os.mkdir(storebase.outgoing(jid))
        except BaseException:
            self.release()
            raise
        self.mounts = storebase.staged(jid, 0).mounts

    def staged(self) -> None:
        """The input is in: the job's area is complete (the marker goes)."""
        with self._lock:
            os.unlink(os.path.join(self.storebase.key_dir(self.jid), STAGING_MARKER))
            if self._marker >= 0:
                os.close(self._marker)
                self._marker = -1

    def release(self) -> None:
        """Remove the area and what is in it; idempotent."""
        with self._lock:
            if not self._released:
                self.storebase.delete(self.jid)
                self._released = True
            if self._marker >= 0:
                os.close(self._marker)
                self._marker = -1


class ZipFileStorage:
    """Implements the storage port for ``STORAGE_ENV=zipfile``, receives uploads as they
    arrive (``InputReceiverPort``) and reserves a job's area before its upload is staged
    into it (``InputReservingPort``)."""

    def __init__(
        self,
        storebase: StoreBase,
        limits: ZipLimits | None = None,
        compression: int = zipfile.ZIP_STORED,
    ) -> None:
        self.storebase = storebase
        self.limits = limits or ZipLimits()
        self.compression = compression

    def receive(self, read: Callable[[int], bytes]) -> ReceivedZip:
        """Validate and extract the zip that ``read`` yields while it arrives, into a
        private area of storeBase; on any error the area is removed."""
        from .zipstream import StreamExtractor

        received = ReceivedZip(self.storebase)
        try:
            extractor = StreamExtractor(read, received.incoming, self.limits, free_space(received.incoming))
            received.nfiles = extractor.run()
            received.nbytes, received.links = extractor.total_out, extractor.links
        except BaseException:
            received.discard()
            raise
        return received

    def validate(self, jid: str, request: StagingRequest) -> None:
        if request.received is not None:
            if not isinstance(request.received, ReceivedZip):
                raise TypeError("not an upload this storage received")
            return  # checked while it was received
        if request.upload_path is None:
            raise InvalidJobSpec("field is required", field="data_file")
        inspect_zip(request.upload_path, self.limits, free_space(self.storebase.root))

    def stage(self, jid: str, request: StagingRequest) -> StagedData:
        if request.received is not None:
            return self._adopt(jid, request.received)
        if request.upload_path is None:
            raise InvalidJobSpec("field is required", field="data_file")
        with self.storebase.claimed(jid):
            incoming = self.storebase.incoming(jid)
            nfiles = extract_zip(request.upload_path, incoming, self.limits)
            nfiles -= expand_links(incoming)
        return self.storebase.staged(jid, nfiles)

    def _adopt(self, jid: str, received: ReceivedInput) -> StagedData:
        """Make a received upload the job's ``key-<jid>/``: the whole area is renamed over
        the job's freshly claimed, empty directory (atomic on a POSIX filesystem), its held
        staging marker with it, so the job is half-staged (swept after a crash) until the
        marker goes. Fewer inodes made and removed than moving ``incoming/`` into a new one."""
        if not isinstance(received, ReceivedZip) or not received.id:
            raise TypeError("not an upload this storage received")
        path = self.storebase.claim(jid)  # the uniqueness claim; empty until the rename
        try:
            os.rename(self.storebase.key_dir(received.id), path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.rmdir(path)
            raise
        marker = received.handed_over()  # the area is the job's now; its marker fd is ours
        try:
            os.mkdir(self.storebase.outgoing(jid))
            incoming = self.storebase.incoming(jid)
            # an archive without a file named like a link has nothing to expand: no walk
            expanded = expand_links(incoming) if received.links != 0 else 0
            os.unlink(os.path.join(path, STAGING_MARKER))
        except BaseException:
            self.storebase.delete(jid)
            raise
        finally:
            if marker >= 0:
                os.close(marker)
        nfiles = received.nfiles - expanded
        return self.storebase.staged(jid, nfiles, received.nbytes if not expanded else -1)

    def reserve(self, jid: str) -> ReservedZipArea:
        return ReservedZipArea(self.storebase, jid)

    def stage_into(self, area: ReservedArea, request: StagingRequest) -> StagedData:
        """Move the received upload into the reserved ``key-<jid>/incoming`` (a rename over
        the empty directory the job was created with); on error the area is left to
        ``release``."""
        received = request.received
        if not isinstance(area, ReservedZipArea) or area.storebase is not self.storebase:
            raise TypeError("not an area this storage reserved")
        if not isinstance(received, ReceivedZip) or not received.id:
            raise TypeError("not an upload this storage received")
        incoming = self.storebase.incoming(area.jid)
        try:
            os.rename(received.incoming, incoming)
        except FileNotFoundError:
            if os.path.isdir(received.incoming):  # the reserved area is gone: a DELETE came first
                raise JobConflict(f"job '{area.jid}' was deleted while its input was being received") from None
            raise
        expanded = expand_links(incoming) if received.links != 0 else 0
        area.staged()
        with contextlib.suppress(OSError):
            received.discard()  # what is left of it: the empty area and its marker
        return self.storebase.staged(area.jid, received.nfiles - expanded, received.nbytes if not expanded else -1)

    def release(self, area: ReservedArea) -> None:
        if not isinstance(area, ReservedZipArea):
            raise TypeError("not an area this storage reserved")
        area.release()

    def exists(self, jid: str) -> bool:
        return self.storebase.exists(jid)

    def recover(self) -> list[str]:
        return self.storebase.recover()

    def ping(self) -> None:
        self.storebase.ping()

    def delete(self, jid: str) -> None:
        self.storebase.delete(jid)

    def output_files(self, jid: str, limit: int) -> tuple[OutputFile, ...]:
        return self.storebase.output_files(jid, limit)

    def outputs(self, jid: str, job_output_path: str | None) -> OutputListing | ZipStream:
        self.storebase.require(jid)
        outgoing = self.storebase.outgoing(jid)
        os.makedirs(outgoing, exist_ok=True)
        return ZipStream(f"{jid}.zip", iter_zip(outgoing, self.compression))
