"""Extracting an input zip while it is received (ADR 19).

:func:`extract_stream` reads an archive front to back from a blocking ``read(n)``
callable (the request body, handed over chunk by chunk) and writes every member as its
bytes arrive. Every limit of :class:`~.zipfile.ZipLimits` is enforced from the local
headers as they arrive and on the bytes actually produced; at the end the central
directory is read and must agree with what was extracted (names, methods, sizes, CRCs,
offsets), and it alone says which entries are symbolic links or devices (refused).

On any error the partial extraction is left for the caller to remove (the caller
extracts into a private area that it deletes whole).
"""

from __future__ import annotations

import bz2
import errno
import lzma
import os
import stat
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ...domain.errors import InputTooLarge, InvalidInputData, StorageFull
from ...domain.model import path_length_problem
from .local import LINK_SUFFIX, safe_relative_path
from .zipfile import BAD_ZIP, ZipLimits, _no_room, _ratio_exceeded, _ratio_message, _room, _too_large

LOCAL = b"PK\x03\x04"
CENTRAL = b"PK\x01\x02"
END = b"PK\x05\x06"
END64 = b"PK\x06\x06"
LOCATOR64 = b"PK\x06\x07"
DESCRIPTOR = b"PK\x07\x08"

STORED, DEFLATED, BZIP2, LZMA = 0, 8, 12, 14
METHODS = frozenset({STORED, DEFLATED, BZIP2, LZMA})
READ_SIZE = 1024 * 1024  # most bytes asked of ``read`` at once
OUT_SIZE = 1024 * 1024  # most bytes inflated at once (bounds memory for bombs)
MAX_END64_BYTES = 64 * 1024
U32 = 0xFFFFFFFF

_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_CONFLICT_ERRNOS = frozenset({errno.ELOOP, errno.ENOTDIR, errno.EISDIR, errno.EEXIST})
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)

Reader = Callable[[int], bytes]


class _Corrupt(Exception):
    """The archive is not a well-formed zip (truncated, inconsistent, bad data)."""


def _bad() -> InvalidInputData:
    return InvalidInputData(BAD_ZIP)


class _Source:
    """The archive's bytes in order, with the offset of what has been consumed."""

    __slots__ = ("_buf", "_pos", "_read", "offset")

    def __init__(self, read: Reader) -> None:
        self._read = read
        self._buf = b""
        self._pos = 0
        self.offset = 0

    def _more(self) -> bool:
        chunk = self._read(READ_SIZE)
        if not chunk:
            return False
        chunk = bytes(chunk)
        self._buf = self._buf[self._pos :] + chunk if self._pos < len(self._buf) else chunk
        self._pos = 0
        return True

    def peek(self, n: int) -> bytes:
        """Up to ``n`` bytes without consuming them (fewer only at the end)."""
        while len(self._buf) - self._pos < n and self._more():
            pass
        return self._buf[self._pos : self._pos + n]

    def take(self, n: int) -> bytes:
        """Exactly ``n`` bytes; _Corrupt at the end of the input."""
        while len(self._buf) - self._pos < n:
            if not self._more():
                raise _Corrupt("truncated")
        start = self._pos
        self._pos += n
        self.offset += n
        return self._buf[start : self._pos]

    def chunk(self, limit: int) -> bytes:
        """The next 1..``limit`` bytes, b"" at the end of the input."""
        if self._pos >= len(self._buf) and not self._more():
            return b""
        start, end = self._pos, min(len(self._buf), self._pos + limit)
        data = self._buf if start == 0 and end == len(self._buf) else self._buf[start:end]
        self._pos = end
        self.offset += end - start
        return data

    def unread(self, data: bytes) -> None:
        if data:
            self._buf = data + self._buf[self._pos :]
            self._pos = 0
            self.offset -= len(data)


class _Inflater:
    """Decompression of one member with bounded output per step."""

    def __init__(self, method: int) -> None:
        self._zlib = zlib.decompressobj(-15) if method == DEFLATED else None
        self._other: bz2.BZ2Decompressor | lzma.LZMADecompressor | None = (
            bz2.BZ2Decompressor() if method == BZIP2 else None
        )
        self._lzma_header: bytes | None = b"" if method == LZMA else None

    @property
    def eof(self) -> bool:
        if self._zlib is not None:
            return self._zlib.eof
        return self._other is not None and self._other.eof

    @property
    def unused_data(self) -> bytes:
        if self._zlib is not None:
            return self._zlib.unused_data
        return self._other.unused_data if self._other is not None else b""

    @property
    def pending(self) -> int:
        """Input bytes fed but not consumed yet (for the expansion ratio)."""
        return len(self._zlib.unconsumed_tail) if self._zlib is not None else 0

    def feed(self, data: bytes) -> Iterator[bytes]:
        try:
            if self._zlib is not None:
                d = self._zlib
                out = d.decompress(data, OUT_SIZE)
                yield out
                while not d.eof and (d.unconsumed_tail or len(out) == OUT_SIZE):
                    out = d.decompress(d.unconsumed_tail, OUT_SIZE)
                    if not out and not d.unconsumed_tail:
                        break
                    yield out
                return
            if self._lzma_header is not None:
                data = self._start_lzma(data)
                if not data:
                    return
            other = self._other
            assert other is not None
            yield other.decompress(data, OUT_SIZE)
            while not other.eof and not other.needs_input:
                yield other.decompress(b"", OUT_SIZE)
        except (zlib.error, lzma.LZMAError, OSError, EOFError, ValueError) as e:
            raise _Corrupt(str(e)) from None

    def _start_lzma(self, data: bytes) -> bytes:
        # zip's LZMA: version (2 bytes), properties size (2), properties, then raw LZMA1.
        assert self._lzma_header is not None
        head = self._lzma_header + data
        if len(head) < 4 or len(head) < 4 + struct.unpack("<H", head[2:4])[0]:
            self._lzma_header = head
            return b""
        (size,) = struct.unpack("<H", head[2:4])
        decode = lzma._decode_filter_properties  # type: ignore[attr-defined]
        self._other = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[decode(lzma.FILTER_LZMA1, head[4 : 4 + size])])
        self._lzma_header = None
        return head[4 + size :]


@dataclass(slots=True)
class _Entry:
    """A member as its local header and its data said."""

    name: bytes
    method: int
    crc: int
    compressed: int
    size: int


@dataclass(slots=True)
class _Header:
    name: bytes
    text: str
    flags: int
    method: int
    crc: int
    compressed: int
    size: int
    zip64: bool


class StreamExtractor:
    """One archive read front to back into ``destination`` (see the module docstring)."""

    def __init__(self, read: Reader, destination: str, limits: ZipLimits, free_bytes: int | None) -> None:
        self.src = _Source(read)
        self.destination = destination
        self._made_dirs: set[str] = set()  # directories this extraction made or found
        self.limits = limits
        self.free_bytes = free_bytes
        self.room = None if free_bytes is None else _room(free_bytes, limits)
        self.entries: dict[int, _Entry] = {}  # by local header offset
        self.nfiles = 0
        self.links = 0  # files named like ChRIS link files (none: nothing to expand)
        self.total_in = 0  # compressed bytes of the members done
        self.total_out = 0  # bytes written (members done and the current one)

    def run(self) -> int:
        try:
            while self.src.peek(4) == LOCAL:
                self._member()
            self._central_directory()
        except _Corrupt:
            raise _bad() from None
        except OSError as e:
            if e.errno in _FULL_ERRNOS:
                raise StorageFull(f"storeBase is full: extracting the input failed: {e.strerror}") from None
            if e.errno == errno.ENAMETOOLONG:
                raise InvalidInputData("data_file: an entry name is too long for storeBase") from None
            if e.errno in _CONFLICT_ERRNOS:
                raise _bad() from None
            raise
        return self.nfiles

    # -- local headers and data ------------------------------------------------------------
    def _header(self) -> _Header:
        fields = struct.unpack("<4sHHHHHIIIHH", self.src.take(30))
        _, _, flags, method, _, _, crc, compressed, size, name_len, extra_len = fields
        raw = self.src.take(name_len)
        extra = self.src.take(extra_len)
        zip64 = False
        for tag, body in _extra_fields(extra):
            if tag == 1:  # zip64: the 8-byte sizes the 4-byte fields could not hold
                zip64 = True
                values = [v for (v,) in struct.iter_unpack("<Q", body[: len(body) // 8 * 8])]
                if size == U32 and values:
                    size = values.pop(0)
                if compressed == U32 and values:
                    compressed = values.pop(0)
        try:
            text = raw.decode("utf-8" if flags & 0x800 else "cp437")
        except UnicodeDecodeError:
            raise _Corrupt("entry name is not UTF-8") from None
        return _Header(raw, text, flags, method, crc, compressed, size, zip64)

    def _member(self) -> None:
        offset = self.src.offset
        h = self._header()
        limits = self.limits
        if len(self.entries) >= limits.max_entries:
            raise InputTooLarge(
                f"data_file: the archive has more than {limits.max_entries} entries, the limit (ZIP_MAX_ENTRIES)"
            )
        rel = safe_relative_path(h.text)
        if rel is None:
            too_long = path_length_problem(h.text)
            if too_long:
                raise InvalidInputData(f"data_file: entry name too long: {too_long}")
            raise InvalidInputData(f"data_file: unsafe entry name {h.text!r}")
        if h.flags & 0x1:
            raise InvalidInputData(f"data_file: encrypted entries are not supported ({h.text!r})")
        if h.method not in METHODS:
            raise InvalidInputData(f"data_file: unsupported compression method {h.method} ({h.text!r})")
        descriptor = bool(h.flags & 0x8)
        if not descriptor:  # the sizes are known: check them before writing anything
            if _ratio_exceeded(h.size, h.compressed, limits):
                raise InputTooLarge(_ratio_message(f"member {h.text!r}", h.size, h.compressed, limits))
            self._check_totals(self.total_out + h.size, self.total_in + h.compressed, f"{self.total_out + h.size}")
            if h.method == STORED and h.size != h.compressed:
                raise _Corrupt("stored sizes differ")
        target = os.path.join(self.destination, rel)
        fd = -1
        if h.text.endswith("/"):
            self._make_dirs(target)
        else:
            self._make_dirs(os.path.dirname(target))
            fd = os.open(target, _OPEN_FLAGS, 0o644)  # O_EXCL: a duplicate or colliding name fails
        try:
            entry = self._data(h, fd)
        finally:
            if fd >= 0:
                os.close(fd)
        if fd >= 0:
            self.nfiles += 1
            if rel.endswith(LINK_SUFFIX):
                self.links += 1
        elif entry.size:
            raise _Corrupt("a directory entry with data")
        self.entries[offset] = entry
        self.total_in += entry.compressed

    def _make_dirs(self, path: str) -> None:
        """``os.makedirs(path, exist_ok=True)``, once per directory: an archive of many files
        in few folders asks the filesystem for each folder once, not once per file. (Only
        directories this extraction made or found are remembered: a file of that name later
        still fails its O_EXCL open.)"""
        if path not in self._made_dirs:
            os.makedirs(path, exist_ok=True)
            self._made_dirs.add(path)

    def _data(self, h: _Header, fd: int) -> _Entry:
        descriptor = bool(h.flags & 0x8)
        if h.method == STORED and descriptor:
            return self._stored_until_descriptor(h, fd)
        crc = 0
        written = 0
        consumed = 0
        left = None if descriptor else h.compressed
        inflater = None if h.method == STORED else _Inflater(h.method)
        while left is None or left > 0:
            if inflater is not None and inflater.eof:
                break
            data = self.src.chunk(READ_SIZE if left is None else min(READ_SIZE, left))
            if not data:
                raise _Corrupt("truncated member")
            if left is not None:
                left -= len(data)
            consumed += len(data)
            outputs = (data,) if inflater is None else inflater.feed(data)
            for out in outputs:
                if not out:
                    continue
                written += len(out)
                self.total_out += len(out)
                self._check_progress(h, written, consumed - (inflater.pending if inflater else 0), descriptor)
                crc = zlib.crc32(out, crc)
                _write_all(fd, out)
        if inflater is not None:
            if not inflater.eof and h.method != LZMA:
                raise _Corrupt("compressed data ends early")
            unused = inflater.unused_data
            if unused:
                if not descriptor:
                    raise _Corrupt("compressed data ends before its size")
                self.src.unread(unused)
                consumed -= len(unused)
        if descriptor:
            self._descriptor(h, crc, consumed, written)
        elif crc != h.crc or written != h.size or consumed != h.compressed:
            raise _Corrupt("CRC or size mismatch")
        return _Entry(h.name, h.method, crc, consumed, written)

    def _stored_until_descriptor(self, h: _Header, fd: int) -> _Entry:
        """A stored member whose size comes after it: its data ends at the first data
        descriptor (with its signature) that matches the CRC and size of what precedes it."""
        size_fmt = "<IQQ" if h.zip64 else "<III"
        need = 4 + struct.calcsize(size_fmt)
        crc = 0
        written = 0
        hold = b""
        while True:
            data = self.src.chunk(READ_SIZE)
            if not data:
                raise _Corrupt("truncated member")
            data = hold + data if hold else data
            start = 0
            while True:
                at = data.find(DESCRIPTOR, start)
                if at < 0:
                    keep = min(3, len(data) - start)  # a signature cut in two
                    crc, written = self._emit_stored(h, fd, data[start : len(data) - keep], crc, written)
                    hold = data[len(data) - keep :]
                    break
                crc, written = self._emit_stored(h, fd, data[start:at], crc, written)
                if len(data) - at < need:
                    hold = data[at:]
                    break
                got_crc, got_compressed, got_size = struct.unpack(size_fmt, data[at + 4 : at + need])
                if got_crc == crc and got_compressed == written and got_size == written:
                    self.src.unread(data[at + need :])
                    return _Entry(h.name, h.method, crc, written, written)
                crc, written = self._emit_stored(h, fd, data[at : at + 4], crc, written)
                start = at + 4

    def _emit_stored(self, h: _Header, fd: int, out: bytes, crc: int, written: int) -> tuple[int, int]:
        if out:
            written += len(out)
            self.total_out += len(out)
            self._check_progress(h, written, written, True)
            crc = zlib.crc32(out, crc)
            _write_all(fd, out)
        return crc, written

    def _descriptor(self, h: _Header, crc: int, compressed: int, size: int) -> None:
        if self.src.peek(4) == DESCRIPTOR:
            self.src.take(4)
        size_fmt = "<IQQ" if h.zip64 else "<III"
        got = struct.unpack(size_fmt, self.src.take(struct.calcsize(size_fmt)))
        if got != (crc, compressed, size):
            raise _Corrupt("data descriptor mismatch")

    def _check_progress(self, h: _Header, written: int, consumed: int, descriptor: bool) -> None:
        """Limits on the bytes produced so far by the current member."""
        limits = self.limits
        if not descriptor and written > h.size:
            raise InputTooLarge(f"data_file: member {h.text!r} holds more than the {h.size} bytes its header says")
        if descriptor and _ratio_exceeded(written, consumed, limits):
            raise InputTooLarge(_ratio_message(f"member {h.text!r}", written, consumed, limits))
        # The current member's compressed size: declared, or what was read of it so far.
        self._check_totals(
            self.total_out, self.total_in + (consumed if descriptor else h.compressed), f"at least {self.total_out}"
        )

    def _check_totals(self, out: int, compressed: int, needs: str) -> None:
        limits = self.limits
        if out > limits.max_uncompressed_bytes:
            raise _too_large(limits)
        if self.room is not None and self.free_bytes is not None and out > self.room:
            raise _no_room(needs, self.free_bytes, limits)
        if _ratio_exceeded(out, compressed, limits):
            raise InputTooLarge(_ratio_message("the archive", out, compressed, limits))

    # -- the central directory -----------------------------------------------------------
    def _central_directory(self) -> None:
        start = self.src.offset
        seen: set[int] = set()
        while self.src.peek(4) == CENTRAL:
            fields = struct.unpack("<4sHHHHHHIIIHHHHHII", self.src.take(46))
            (_, made_by, _, flags, method, _, _, crc, compressed, size, name_len, extra_len, comment_len,
             disk, _, external, offset) = fields  # fmt: skip
            name = self.src.take(name_len)
            extra = self.src.take(extra_len)
            self.src.take(comment_len)
            for tag, body in _extra_fields(extra):
                if tag == 1:
                    values = [v for (v,) in struct.iter_unpack("<Q", body[: len(body) // 8 * 8])]
                    if size == U32 and values:
                        size = values.pop(0)
                    if compressed == U32 and values:
                        compressed = values.pop(0)
                    if offset == U32 and values:
                        offset = values.pop(0)
            entry = self.entries.get(offset)
            if entry is None or offset in seen or disk not in (0, 0xFFFF):
                raise _Corrupt("central directory names a member that was not received")
            seen.add(offset)
            if (entry.name, entry.method, entry.crc, entry.compressed, entry.size) != (
                name,
                method,
                crc,
                compressed,
                size,
            ):
                raise _Corrupt("central directory disagrees with the local header")
            kind = stat.S_IFMT(external >> 16) if made_by >> 8 == 3 else 0
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                text = name.decode("utf-8" if flags & 0x800 else "cp437", errors="replace")
                if kind == stat.S_IFLNK:
                    raise InvalidInputData(f"data_file: symbolic link entries are not allowed ({text!r})")
                raise InvalidInputData(f"data_file: unsupported entry type ({text!r})")
        size_of_cd = self.src.offset - start
        if len(seen) != len(self.entries):
            raise _Corrupt("members missing from the central directory")
        count: int | None = None
        cd_size = cd_offset = None
        if self.src.peek(4) == END64:
            self.src.take(4)
            (record_size,) = struct.unpack("<Q", self.src.take(8))
            if not 44 <= record_size <= MAX_END64_BYTES:
                raise _Corrupt("zip64 end record")
            _, _, _, _, _, count, cd_size, cd_offset = struct.unpack("<HHIIQQQQ", self.src.take(record_size)[:44])
            if self.src.peek(4) == LOCATOR64:
                self.src.take(20)
        if self.src.take(4) != END:
            raise _Corrupt("no end of central directory")
        disk, _, _, count16, size32, offset32, comment_len = struct.unpack("<HHHHIIH", self.src.take(18))
        self.src.take(comment_len)
        if count is None:  # no zip64 record: the 16- and 32-bit fields are the values
            count, cd_size, cd_offset = count16, size32, offset32
            if count != len(seen) % 0x10000 or disk not in (0, 0xFFFF):
                raise _Corrupt("entry count")
        elif count != len(seen):
            raise _Corrupt("entry count")
        if cd_size != size_of_cd or cd_offset != start:
            raise _Corrupt("central directory size or offset")
        while self.src.chunk(READ_SIZE):  # anything after the archive is ignored
            pass


def _extra_fields(extra: bytes) -> Iterator[tuple[int, bytes]]:
    i = 0
    while i + 4 <= len(extra):
        tag, size = struct.unpack("<HH", extra[i : i + 4])
        yield tag, extra[i + 4 : i + 4 + size]
        i += 4 + size


def _write_all(fd: int, data: bytes) -> None:
    if fd < 0:
        return
    done = os.write(fd, data)  # all of it, nearly always
    if done < len(data):
        view = memoryview(data)[done:]
        while view:
            view = view[os.write(fd, view) :]


def extract_stream(read: Reader, destination: str, limits: ZipLimits, free_bytes: int | None = None) -> int:
    """Extract the archive that ``read`` yields into ``destination`` (which must be
    empty) while it arrives; return the number of files. Raises InvalidInputData,
    InputTooLarge or StorageFull as :func:`~.zipfile.extract_zip` does; whatever
    ``read`` raises goes through."""
    return StreamExtractor(read, destination, limits, free_bytes).run()
