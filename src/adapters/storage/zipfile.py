"""Out-of-network storage: the input arrives as an uploaded zip, the output leaves as one."""

from __future__ import annotations

import os
import stat
import zipfile
import zlib
from dataclasses import dataclass

from ...domain.errors import InputTooLarge, InvalidInputData, InvalidJobSpec
from ...domain.model import OutputListing, StagedData
from ...domain.ports import StagingRequest, ZipStream
from .chrislink import expand_links
from .local import CHUNK, StoreBase, iter_zip, safe_relative_path

BAD_ZIP = "data_file: Bad zip file"
_COMPRESSION_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA})


@dataclass(frozen=True, slots=True)
class ZipLimits:
    max_entries: int = 1_000_000
    max_uncompressed_bytes: int = 64 * 1024**3


def _entry_type(info: zipfile.ZipInfo) -> int:
    return stat.S_IFMT(info.external_attr >> 16) if info.create_system == 3 else 0


def inspect_zip(path: str, limits: ZipLimits) -> list[tuple[zipfile.ZipInfo, str]]:
    """Validate an archive without extracting it: names, types, counts and sizes."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError):
        raise InvalidInputData(BAD_ZIP) from None
    if len(infos) > limits.max_entries:
        raise InputTooLarge(
            f"data_file: the archive has {len(infos)} entries, more than the limit of {limits.max_entries}"
        )
    members: list[tuple[zipfile.ZipInfo, str]] = []
    total = 0
    for info in infos:
        rel = safe_relative_path(info.filename)
        if rel is None:
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
        total += info.file_size
        if total > limits.max_uncompressed_bytes:
            raise InputTooLarge(
                "data_file: the archive expands to more than the limit of "
                f"{limits.max_uncompressed_bytes} bytes"
            )
        members.append((info, rel))
    return members


def extract_zip(path: str, destination: str, limits: ZipLimits) -> int:
    """Extract a validated archive into ``destination``; return the number of files."""
    members = inspect_zip(path, limits)
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
                        while chunk := src.read(CHUNK):
                            written += len(chunk)
                            if written > limits.max_uncompressed_bytes:
                                raise InputTooLarge("data_file: the archive expands beyond the limit")
                            dst.write(chunk)
                nfiles += 1
    except (zipfile.BadZipFile, zlib.error, EOFError, NotADirectoryError, IsADirectoryError, ValueError, NotImplementedError, RuntimeError):
        raise InvalidInputData(BAD_ZIP) from None
    except OSError as e:
        if e.errno in (40, 20, 21, 17):  # ELOOP, ENOTDIR, EISDIR, EEXIST: conflicting names
            raise InvalidInputData(BAD_ZIP) from None
        raise
    return nfiles


class ZipFileStorage:
    """Implements the storage port for ``STORAGE_ENV=zipfile``."""

    def __init__(
        self,
        storebase: StoreBase,
        limits: ZipLimits | None = None,
        compression: int = zipfile.ZIP_STORED,
    ) -> None:
        self.storebase = storebase
        self.limits = limits or ZipLimits()
        self.compression = compression

    def validate(self, jid: str, request: StagingRequest) -> None:
        if request.upload_path is None:
            raise InvalidJobSpec("field is required", field="data_file")
        inspect_zip(request.upload_path, self.limits)

    def stage(self, jid: str, request: StagingRequest) -> StagedData:
        if request.upload_path is None:
            raise InvalidJobSpec("field is required", field="data_file")
        with self.storebase.claimed(jid):
            incoming = self.storebase.incoming(jid)
            nfiles = extract_zip(request.upload_path, incoming, self.limits)
            nfiles -= expand_links(incoming)
        return self.storebase.staged(jid, nfiles)

    def exists(self, jid: str) -> bool:
        return self.storebase.exists(jid)

    def ping(self) -> None:
        self.storebase.ping()

    def delete(self, jid: str) -> None:
        self.storebase.delete(jid)

    def outputs(self, jid: str, job_output_path: str | None) -> OutputListing | ZipStream:
        self.storebase.require(jid)
        outgoing = self.storebase.outgoing(jid)
        os.makedirs(outgoing, exist_ok=True)
        return ZipStream(f"{jid}.zip", iter_zip(outgoing, self.compression))
