"""Input zips validated and extracted while they are received (ADR 19): the streaming
extractor on its own, the pipe between the event loop and its worker, and the API."""

from __future__ import annotations

import io
import os
import stat
import struct
import threading
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from pfcon.adapters.compute.fake import FakeCompute
from pfcon.adapters.storage import zipstream
from pfcon.adapters.storage.local import StoreBase
from pfcon.adapters.storage.zipfile import ZipFileStorage, ZipLimits
from pfcon.adapters.storage.zipstream import extract_stream
from pfcon.domain.errors import InputTooLarge, InvalidInputData, StorageFull
from pfcon.entrypoints.http.upload import ChunkPipe, UploadAborted

from ..conftest import Api, job_form, make_zip, spooled_uploads, tree

MiB = 1024**2
LIMITS = ZipLimits()


# -- helpers -------------------------------------------------------------------------------


class _Unseekable(io.RawIOBase):
    """What zipfile writes into when it cannot seek: data descriptors, zero sizes in the
    local headers (the shape of streamed zips)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.data += b
        return len(b)


def build(files: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED, descriptors: bool = False, zip64: bool = False) -> bytes:
    sink: Any = _Unseekable() if descriptors else io.BytesIO()
    with zipfile.ZipFile(sink, "w", method) as archive:
        for name, content in files.items():
            if zip64:
                with archive.open(name, "w", force_zip64=True) as f:
                    f.write(content)
            else:
                archive.writestr(name, content)
    return bytes(sink.data) if descriptors else sink.getvalue()


def reader(data: bytes, step: int = 64 * 1024) -> Callable[[int], bytes]:
    """``data`` handed out in pieces of at most ``step`` bytes, as a request body is."""
    stream = io.BytesIO(data)
    return lambda n: stream.read(min(n, step))


def extract(data: bytes, dest: Path, limits: ZipLimits = LIMITS, step: int = 64 * 1024, free: int | None = None) -> int:
    return extract_stream(reader(data, step), str(dest), limits, free)


def written(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


def bad(data: bytes, dest: Path, **kw: Any) -> InvalidInputData:
    with pytest.raises(InvalidInputData) as e:
        extract(data, dest, **kw)
    assert not isinstance(e.value, InputTooLarge)
    return e.value


def zeros_with_descriptor(size: int, name: str = "zeros.bin") -> bytes:
    """One deflated member of ``size`` zeros, sizes only in its data descriptor."""
    sink = _Unseekable()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED) as archive, archive.open(name, "w") as f:
        block = bytes(MiB)
        for _ in range(size // MiB):
            f.write(block)
    return bytes(sink.data)


FILES = {
    "top.txt": b"hello\n",
    "a/b/c/deep.bin": bytes(range(256)) * 300,
    "a/empty.txt": b"",
    "random.bin": os.urandom(200_000),
    "looks/like/a/descriptor": b"PK\x07\x08" * 50 + b"PK\x07",
    "dossier/été.txt": "ça va".encode(),
}


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    d = tmp_path / "incoming"
    d.mkdir()
    return d


# -- valid archives ------------------------------------------------------------------------


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
@pytest.mark.parametrize("descriptors", [False, True], ids=["sizes-first", "data-descriptors"])
@pytest.mark.parametrize("zip64", [False, True], ids=["zip32", "zip64"])
def test_every_method_with_and_without_descriptors_and_zip64(dest: Path, method: int, descriptors: bool, zip64: bool) -> None:
    data = build(FILES, method, descriptors, zip64)
    assert extract(data, dest) == len(FILES)
    for name, content in FILES.items():
        assert (dest / name).read_bytes() == content


@pytest.mark.parametrize("step", [1, 3, 29, 4096])
def test_any_chunking_of_the_body(dest: Path, step: int) -> None:
    files = {"x/y.txt": b"stored" * 100, "z": b"PK\x07\x08" + os.urandom(3000)}
    data = build(files, zipfile.ZIP_STORED, descriptors=True) if step < 29 else build(files)
    assert extract(data, dest, step=step) == 2
    for name, content in files.items():
        assert (dest / name).read_bytes() == content


def test_directory_entries_are_created_but_not_counted(dest: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("emptydir/", b"")
        archive.writestr("d/", b"")
        with pytest.warns(UserWarning):
            archive.writestr("d/", b"")  # a repeated directory is harmless
        archive.writestr("d/f.txt", b"f")
        archive.mkdir("made/with/mkdir")
    assert extract(buf.getvalue(), dest) == 1
    assert (dest / "emptydir").is_dir() and (dest / "made" / "with" / "mkdir").is_dir()
    assert (dest / "d" / "f.txt").read_bytes() == b"f"


def test_an_empty_archive(dest: Path) -> None:
    assert extract(build({}), dest) == 0
    assert tree(str(dest)) == []


def test_regular_unix_entries_and_dot_segments(dest: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        info = zipfile.ZipInfo("./bin/./run.sh")
        info.create_system = 3
        info.external_attr = (stat.S_IFREG | 0o755) << 16
        archive.writestr(info, b"#!/bin/sh\n")
    assert extract(buf.getvalue(), dest) == 1
    assert (dest / "bin" / "run.sh").read_bytes() == b"#!/bin/sh\n"


def test_many_entries_with_a_zip64_end_record(dest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 5)  # zipfile writes the zip64 end record past it
    data = build({f"f{i}": b"%d" % i for i in range(12)})
    assert zipstream.END64 in data
    assert extract(data, dest) == 12
    assert (dest / "f11").read_bytes() == b"11"


def test_bytes_after_the_archive_are_ignored(dest: Path) -> None:
    assert extract(build({"a": b"a"}) + b"trailing garbage" * 1000, dest) == 1


# -- names and entry types -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../x", "a/../../x", "/etc/passwd", "C:/x", "c:x", "..", "a/.."])
def test_unsafe_names_are_refused_before_their_data(tmp_path: Path, dest: Path, name: str) -> None:
    e = bad(build({"ok.txt": b"fine", name: b"pwned"}), dest)
    assert e.message.startswith("data_file: unsafe entry name")
    assert tree(str(dest)) == ["ok.txt"]  # what came before: the caller removes it
    assert not (tmp_path / "x").exists()


def test_over_long_names_are_refused(dest: Path) -> None:
    e = bad(build({"x" * 256: b"data"}), dest)
    assert e.message.startswith("data_file: entry name too long")


def _with_mode(name: str, mode: int, content: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("ok.txt", b"fine")
        info = zipfile.ZipInfo(name)
        info.create_system = 3
        info.external_attr = mode << 16
        archive.writestr(info, content)
    return buf.getvalue()


def test_symlink_entries_are_refused_from_the_central_directory(dest: Path) -> None:
    # a local header cannot say "symlink": the entry is written as a plain file (never a
    # link) and the archive refused when the central directory says what it was
    e = bad(_with_mode("passwd", 0o120777, b"/etc/passwd"), dest)
    assert e.message == "data_file: symbolic link entries are not allowed ('passwd')"
    assert not (dest / "passwd").is_symlink()


@pytest.mark.parametrize("kind", [stat.S_IFIFO, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFSOCK])
def test_special_entries_are_refused(dest: Path, kind: int) -> None:
    e = bad(_with_mode("dev", kind | 0o644, b""), dest)
    assert e.message == "data_file: unsupported entry type ('dev')"


@pytest.mark.parametrize(
    ("first", "second"), [("a", "a"), ("a", "./a"), ("a", "a/b"), ("a/b", "a"), ("d/", "d"), ("d", "d/")]
)
def test_duplicate_and_colliding_names(dest: Path, first: str, second: str) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr(first, b"" if first.endswith("/") else b"1")
        with pytest.warns(UserWarning) if first == second else _nothing():
            archive.writestr(second, b"" if second.endswith("/") else b"2")
    assert bad(buf.getvalue(), dest).message == "data_file: Bad zip file"


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: Any) -> None:
        return None


def test_an_existing_symlink_in_the_destination_is_not_written_through(tmp_path: Path, dest: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"original")
    os.symlink(outside, dest / "victim.txt")
    bad(build({"victim.txt": b"overwritten"}), dest)
    assert outside.read_bytes() == b"original"


def _patch(data: bytes, **fields: int) -> bytes:
    raw = bytearray(data)
    cd = raw.find(b"PK\x01\x02")
    if "method" in fields:
        struct.pack_into("<H", raw, 8, fields["method"])
        struct.pack_into("<H", raw, cd + 10, fields["method"])
    if "flags" in fields:
        struct.pack_into("<H", raw, 6, fields["flags"])
        struct.pack_into("<H", raw, cd + 8, fields["flags"])
    return bytes(raw)


def test_encrypted_and_unknown_methods_are_refused(dest: Path) -> None:
    data = build({"a.txt": b"hello"}, zipfile.ZIP_STORED)
    assert bad(_patch(data, flags=1), dest).message == "data_file: encrypted entries are not supported ('a.txt')"
    assert bad(_patch(data, method=9), dest).message == "data_file: unsupported compression method 9 ('a.txt')"


# -- limits ----------------------------------------------------------------------------------


def test_a_thousandfold_member_is_refused_from_its_header_before_any_byte(dest: Path) -> None:
    data = build({"zeros.bin": bytes(64 * MiB)})
    info = zipfile.ZipFile(io.BytesIO(data)).infolist()[0]
    assert info.file_size > 900 * info.compress_size
    with pytest.raises(InputTooLarge, match="member 'zeros.bin' expands .*ZIP_MAX_RATIO"):
        extract(data, dest)
    assert written(dest) == 0


def test_a_thousandfold_member_with_a_data_descriptor_is_stopped_while_inflating(dest: Path) -> None:
    data = zeros_with_descriptor(256 * MiB)
    assert len(data) < 300 * 1024
    with pytest.raises(InputTooLarge, match="member 'zeros.bin' expands .*ZIP_MAX_RATIO"):
        extract(data, dest)
    assert written(dest) <= LIMITS.ratio_min_bytes + zipstream.OUT_SIZE


def test_max_ratio_zero_turns_the_ratio_off(dest: Path) -> None:
    assert extract(zeros_with_descriptor(8 * MiB), dest, ZipLimits(max_ratio=0)) == 1
    assert (dest / "zeros.bin").stat().st_size == 8 * MiB


def test_many_small_members_make_a_bomb_together(dest: Path) -> None:
    data = build({f"z{i}": bytes(512 * 1024) for i in range(8)})  # each under ratio_min_bytes
    with pytest.raises(InputTooLarge, match="the archive expands"):
        extract(data, dest)
    assert written(dest) <= 2 * MiB


def test_the_total_is_checked_on_headers_and_on_bytes(dest: Path, tmp_path: Path) -> None:
    data = build({f"f{i}": os.urandom(1000) for i in range(5)})
    assert extract(data, tmp_path / "ok", ZipLimits(max_uncompressed_bytes=5000)) == 5
    with pytest.raises(InputTooLarge, match="ZIP_MAX_UNCOMPRESSED_BYTES"):
        extract(data, dest, ZipLimits(max_uncompressed_bytes=4999))
    assert written(dest) <= 4000  # the fifth header is refused before its data
    streamed = zeros_with_descriptor(8 * MiB)
    with pytest.raises(InputTooLarge, match="ZIP_MAX_UNCOMPRESSED_BYTES"):
        extract(streamed, dest / "dd", ZipLimits(max_uncompressed_bytes=3 * MiB, max_ratio=0))
    assert written(dest / "dd") <= 3 * MiB


def test_entry_count(dest: Path, tmp_path: Path) -> None:
    data = build({f"d/f{i}": b"x" for i in range(6)})
    assert extract(data, tmp_path / "ok", ZipLimits(max_entries=6)) == 6
    with pytest.raises(InputTooLarge, match="more than 5 entries.*ZIP_MAX_ENTRIES"):
        extract(data, dest, ZipLimits(max_entries=5))


def test_free_space_minus_the_reserve(dest: Path) -> None:
    data = build({"a": os.urandom(10_000)})
    assert extract(data, dest / "ok", ZipLimits(reserve_bytes=1000), free=11_000) == 1
    with pytest.raises(StorageFull, match="needs 10000 bytes, 10999 free, 1000 reserved"):
        extract(data, dest / "no", ZipLimits(reserve_bytes=1000), free=10_999)
    assert written(dest / "no") == 0
    with pytest.raises(StorageFull, match="needs at least"):  # sizes unknown up front: counted as written
        extract(build({"a": os.urandom(3 * MiB)}, zipfile.ZIP_STORED, descriptors=True), dest / "dd",
                ZipLimits(reserve_bytes=1000), free=MiB + 1000)  # fmt: skip
    assert written(dest / "dd") <= MiB


def test_a_member_holding_more_than_its_header_says_is_stopped(dest: Path) -> None:
    raw = bytearray(build({"liar.bin": bytes(5 * MiB)}))
    cd = raw.find(b"PK\x01\x02")
    struct.pack_into("<I", raw, 22, 1000)  # local header: uncompressed size
    struct.pack_into("<I", raw, cd + 24, 1000)  # central directory: the same lie
    with pytest.raises(InputTooLarge, match="'liar.bin' holds more than the 1000 bytes its header says"):
        extract(bytes(raw), dest)
    assert written(dest) <= 1000


# -- broken archives and the central directory --------------------------------------------


@pytest.mark.parametrize("data", [b"", b"not a zip at all" * 10, b"MZ" + b"\0" * 100], ids=["empty", "text", "exe"])
def test_not_a_zip(dest: Path, data: bytes) -> None:
    assert bad(data, dest).message == "data_file: Bad zip file"


def test_truncated_anywhere(tmp_path: Path) -> None:
    for descriptors in (False, True):
        data = build({"a.txt": os.urandom(2000), "b/c.txt": b"c" * 3000}, descriptors=descriptors)
        for cut in sorted({1, 4, 20, 31, 100, len(data) // 2, len(data) - 30, len(data) - 22, len(data) - 1}):
            dest = tmp_path / f"cut-{descriptors}-{cut}"
            dest.mkdir()
            bad(data[:cut], dest)


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_corrupted_data_fails_its_crc(dest: Path, method: int) -> None:
    raw = bytearray(build({"a.txt": bytes(range(256)) * 64}, method))
    raw[30 + len("a.txt") + 100] ^= 0xFF
    bad(bytes(raw), dest)


def _central(data: bytes) -> tuple[bytearray, int]:
    raw = bytearray(data)
    return raw, raw.find(b"PK\x01\x02")


@pytest.mark.parametrize(
    ("field", "offset", "fmt", "value"),
    [
        ("crc", 16, "<I", 0x12345678),
        ("compressed size", 20, "<I", 3),
        ("uncompressed size", 24, "<I", 4),
        ("method", 10, "<H", 0),
        ("local header offset", 42, "<I", 7),
    ],
)
def test_a_central_directory_that_disagrees_is_refused(dest: Path, field: str, offset: int, fmt: str, value: int) -> None:
    raw, cd = _central(build({"a.txt": b"hello world" * 50, "b.txt": b"b"}))
    struct.pack_into(fmt, raw, cd + offset, value)
    assert bad(bytes(raw), dest).message == "data_file: Bad zip file", field


def test_a_central_directory_naming_another_file_is_refused(dest: Path) -> None:
    raw, cd = _central(build({"a.txt": b"hello"}))
    raw[cd + 46] = ord("b")
    bad(bytes(raw), dest)


def test_a_member_missing_from_the_central_directory_is_refused(dest: Path) -> None:
    one = build({"a.txt": b"a"})
    two = build({"a.txt": b"a", "hidden.txt": b"hidden"})
    cd_two = two.find(b"PK\x01\x02")
    # both local entries, then the directory of the one-member archive
    forged = two[:cd_two] + one[one.find(b"PK\x01\x02") :]
    bad(forged, dest)


def test_an_end_record_that_disagrees_is_refused(dest: Path) -> None:
    raw = bytearray(build({"a.txt": b"a", "b.txt": b"b"}))
    end = raw.rfind(b"PK\x05\x06")
    struct.pack_into("<H", raw, end + 10, 3)  # total entries
    bad(bytes(raw), dest)


def test_a_wrong_data_descriptor_is_refused(dest: Path) -> None:
    raw = bytearray(build({"a.txt": b"hello world" * 100}, descriptors=True))
    dd = raw.find(b"PK\x07\x08")
    raw[dd + 4] ^= 0xFF  # its CRC
    bad(bytes(raw), dest)


def test_what_the_reader_raises_goes_through(dest: Path) -> None:
    data = build({"a.txt": os.urandom(100_000)})
    pieces = iter([data[:5000]])

    def read(n: int) -> bytes:
        try:
            return next(pieces)
        except StopIteration:
            raise UploadAborted from None

    with pytest.raises(UploadAborted):
        extract_stream(read, str(dest), LIMITS)


# -- the storage side: a private area, adopted by the job -----------------------------------


def test_receive_then_stage_moves_the_area_into_the_job(tmp_path: Path) -> None:
    storebase = StoreBase(str(tmp_path / "sb"))
    storage = ZipFileStorage(storebase)
    received = storage.receive(reader(build({"in/a.txt": b"a", "b.txt": b"b"})))
    areas = os.listdir(storebase.root)
    assert len(areas) == 1 and areas[0].startswith("key-.upload-")
    assert storebase.unfinished(areas[0][len("key-") :]) is False  # held while it lives
    from pfcon.domain.ports import StagingRequest

    assert received.pending  # the request that received it must discard it if no job adopts it
    data = storage.stage("jid-1", StagingRequest(received=received))
    assert data.nfiles == 2
    assert data.nbytes == 2  # counted while extracting: no walk of the tree afterwards
    assert sorted(os.listdir(storebase.root)) == ["key-jid-1"]
    assert tree(storebase.key_dir("jid-1")) == ["incoming", "incoming/b.txt", "incoming/in", "incoming/in/a.txt", "outgoing"]
    assert not received.pending  # adopted: nothing left for the request to discard
    received.discard()  # a no-op once adopted
    assert sorted(os.listdir(storebase.root)) == ["key-jid-1"]


def test_links_are_looked_for_only_when_the_archive_has_a_file_named_like_one(tmp_path: Path, monkeypatch: Any) -> None:
    from pfcon.adapters.storage import zipfile as zipstorage
    from pfcon.domain.ports import StagingRequest

    walked: list[str] = []

    def expand(incoming: str) -> int:
        walked.append(os.path.relpath(incoming, str(tmp_path / "sb")))
        return 0

    monkeypatch.setattr(zipstorage, "expand_links", expand)
    storage = ZipFileStorage(StoreBase(str(tmp_path / "sb")))
    plain = storage.stage("plain", StagingRequest(received=storage.receive(reader(build({"a/b.dcm": b"12345"})))))
    assert walked == [] and plain.nbytes == 5
    linked = storage.receive(reader(build({"a/b.dcm": b"12345", "a/in.chrislink": b"SERVICES/PACS"})))
    data = storage.stage("linked", StagingRequest(received=linked))
    assert walked == [os.path.join("key-linked", "incoming")]
    assert data.nfiles == 2 and data.nbytes == 18


def test_a_refused_upload_leaves_nothing(tmp_path: Path) -> None:
    storebase = StoreBase(str(tmp_path / "sb"))
    storage = ZipFileStorage(storebase)
    with pytest.raises(InvalidInputData):
        storage.receive(reader(_with_mode("link", 0o120777, b"/etc")))
    assert os.listdir(storebase.root) == []


def test_an_area_left_by_a_dead_server_is_swept_at_startup(tmp_path: Path) -> None:
    storebase = StoreBase(str(tmp_path / "sb"))
    received = ZipFileStorage(storebase).receive(reader(build({"a": b"a"})))
    os.close(received._marker)  # the process that held it is gone
    received._marker = -1
    assert storebase.recover() == [received.id]
    assert os.listdir(storebase.root) == []


# -- the pipe between the event loop and the worker ---------------------------------------


def test_the_pipe_is_bounded_and_keeps_order() -> None:
    pipe = ChunkPipe(max_bytes=1000)
    got: list[bytes] = []
    waits = 0

    def consume() -> None:
        while chunk := pipe.read(300):
            got.append(chunk)
        pipe.consumer_done()

    async def main() -> None:
        nonlocal waits
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.to_thread.run_sync, consume)
            for i in range(200):
                before = pipe._buffered
                await pipe.send(bytes([i % 256]) * 100)
                assert pipe._buffered <= 1000 + 100
                waits += before > pipe._buffered
            pipe.close()

    anyio.run(main)
    assert b"".join(got) == b"".join(bytes([i % 256]) * 100 for i in range(200))
    assert max(len(c) for c in got) <= 300


def test_an_aborted_pipe_stops_the_reader() -> None:
    pipe = ChunkPipe()
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            while pipe.read(10):
                pass
        except UploadAborted as e:
            errors.append(e)

    t = threading.Thread(target=consume)
    t.start()
    pipe.abort()
    t.join(5)
    assert not t.is_alive() and errors


# -- through the API ------------------------------------------------------------------------


def _multipart(parts: list[tuple[str, bytes, bool]], boundary: str = "b0undary") -> tuple[bytes, dict[str, str]]:
    out = bytearray()
    for name, value, is_file in parts:
        out += f"--{boundary}\r\n".encode()
        disposition = f'form-data; name="{name}"' + ('; filename="data.zip"' if is_file else "")
        out += f"Content-Disposition: {disposition}\r\n\r\n".encode()
        out += value + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def _fields(jid: str, **overrides: Any) -> list[tuple[str, bytes, bool]]:
    parts = []
    for name, value in job_form(jid, **overrides).items():
        for v in value if isinstance(value, list) else [value]:
            parts.append((name, str(v).encode(), False))
    return parts


def _post(api: Api, parts: list[tuple[str, bytes, bool]], path: str = "/jobs/") -> Any:
    body, headers = _multipart(parts)
    return api.post(path, content=body, headers={**api.headers, **headers})


def _left(api: Api) -> list[str]:
    return sorted(os.listdir(api.storebase))


@pytest.mark.parametrize("order", ["fields-first", "file-first", "file-in-between"])
def test_the_fields_may_come_before_or_after_the_file(app_factory: Callable[..., Api], tmp_path: Path, order: str) -> None:
    api = app_factory()
    zipped = ("data_file", make_zip({"a/b.txt": "hello", "c.txt": "c"}), True)
    fields = _fields("chris-jid-1")
    parts = {"fields-first": [*fields, zipped], "file-first": [zipped, *fields],
             "file-in-between": [*fields[:3], zipped, *fields[3:]]}[order]  # fmt: skip
    r = _post(api, parts)
    assert r.status_code == 201, r.text
    assert r.json()["data"]["nfiles"] == 2
    assert _left(api) == ["key-chris-jid-1"]
    assert (Path(api.storebase) / "key-chris-jid-1" / "incoming" / "a" / "b.txt").read_bytes() == b"hello"
    assert spooled_uploads(str(tmp_path / "uploads")) == []


def test_fields_refused_after_the_upload_leave_nothing(app_factory: Callable[..., Api]) -> None:
    api = app_factory()
    r = _post(api, [("data_file", make_zip({"a.txt": "a"}), True), *_fields("chris-jid-1", cpu_limit="lots")])
    assert r.status_code == 400, r.text
    assert r.json() == {"message": {"cpu_limit": "invalid literal for int() with base 10: 'lots'"}}
    assert _left(api) == []


@pytest.mark.usefixtures("body_path")
def test_an_absent_image_after_extraction_leaves_nothing(app_factory: Callable[..., Api]) -> None:
    api = app_factory(FakeCompute(images=set()))
    r = api.submit("chris-jid-1", zip_bytes=make_zip({"a.txt": "a" * 10000}))
    assert r.status_code == 400, r.text
    assert "is not present" in r.json()["message"]
    assert _left(api) == []


@pytest.mark.usefixtures("body_path")
def test_a_second_submission_of_the_same_job_is_409_and_its_upload_removed(app_factory: Callable[..., Api]) -> None:
    api = app_factory()
    assert api.submit("chris-jid-1").status_code == 201
    r = api.submit("chris-jid-1", zip_bytes=make_zip({"other.txt": "x"}))
    assert r.status_code == 409, r.text
    assert _left(api) == ["key-chris-jid-1"]
    assert not (Path(api.storebase) / "key-chris-jid-1" / "incoming" / "other.txt").exists()


@pytest.mark.usefixtures("body_path")
@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (b"PK\x03\x04 not really", 400, "data_file: Bad zip file"),
        (make_zip({"../evil": "x"}), 400, "data_file: unsafe entry name '../evil'"),
        (_with_mode("link", 0o120777, b"/etc/passwd"), 400, "data_file: symbolic link entries are not allowed ('link')"),
        (zeros_with_descriptor(16 * MiB), 413, "ZIP_MAX_RATIO"),
    ],
    ids=["truncated", "traversal", "symlink", "bomb"],
)
def test_refused_archives_leave_nothing(app_factory: Callable[..., Api], data: bytes, status: int, message: str) -> None:
    for path in ("/jobs/", "/pluginjobs/"):
        api = app_factory()
        r = _post(api, [*_fields("chris-jid-1"), ("data_file", data, True)], path)
        assert r.status_code == status, r.text
        assert set(r.json()) == {"message"} and message in r.json()["message"]
        assert _left(api) == []
        assert api.compute.jobs == {}


@pytest.mark.usefixtures("body_path")
def test_a_body_cut_short_leaves_nothing(app_factory: Callable[..., Api]) -> None:
    api = app_factory()
    body, headers = _multipart([*_fields("chris-jid-1"), ("data_file", make_zip({"a": os.urandom(200_000)}), True)])
    r = api.post("/jobs/", content=body[: len(body) // 2], headers={**api.headers, **headers})
    assert r.status_code == 400, r.text
    assert r.json()["message"].startswith("Invalid multipart/form-data")
    assert _left(api) == []


@pytest.mark.usefixtures("body_path")
def test_the_upload_limit_still_applies(app_factory: Callable[..., Api]) -> None:
    api = app_factory(ZIP_MAX_UPLOAD_BYTES="1000")
    r = api.submit("chris-jid-1", zip_bytes=make_zip({"a": os.urandom(5000)}))
    assert r.status_code == 413, r.text
    assert "the upload exceeds the limit of 1000 bytes" in r.json()["message"]
    assert _left(api) == []


def test_no_data_file_is_still_a_field_error(app_factory: Callable[..., Api]) -> None:
    api = app_factory()
    r = _post(api, _fields("chris-jid-1"))
    assert r.status_code == 400, r.text
    assert r.json() == {"message": {"data_file": "field is required"}} or "data_file" in str(r.json())
    assert _left(api) == []


def test_pfcon6_plugin_job_in_zipfile_mode_streams_too(app_factory: Callable[..., Api]) -> None:
    api = app_factory()
    r = _post(api, [("data_file", make_zip({"x.txt": "x"}), True), *_fields("chris-jid-6")], "/pluginjobs/")
    assert r.status_code == 201, r.text
    assert r.json()["data"]["nfiles"] == 1
    assert _left(api) == ["key-chris-jid-6"]
    # the same job again: the existing one answers, the new upload is dropped
    r = _post(api, [*_fields("chris-jid-6"), ("data_file", make_zip({"y.txt": "y"}), True)], "/pluginjobs/")
    assert r.status_code == 201, r.text
    assert _left(api) == ["key-chris-jid-6"]
    assert not (Path(api.storebase) / "key-chris-jid-6" / "incoming" / "y.txt").exists()


def test_zlib_bomb_helper_is_what_it_says() -> None:
    data = zeros_with_descriptor(4 * MiB)
    info = zipfile.ZipFile(io.BytesIO(data)).infolist()[0]
    assert info.flag_bits & 0x8 and info.file_size == 4 * MiB
    assert zlib.crc32(bytes(4 * MiB)) == info.CRC


def test_each_folder_is_made_once_however_many_files_it_holds(dest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []
    real = os.makedirs
    monkeypatch.setattr(zipstream.os, "makedirs", lambda p, *a, **k: made.append(p) or real(p, *a, **k))
    files = {f"d{i % 3}/sub/f{i}.txt": b"x" for i in range(300)}
    payload = build(files)
    assert extract_stream(io.BytesIO(payload).read, str(dest), ZipLimits()) == 300
    # (os.makedirs makes the parents by calling itself: each folder once, none twice)
    assert len(made) == len(set(made))
    assert set(made) == {os.path.join(str(dest), f"d{i}", *sub) for i in range(3) for sub in ((), ("sub",))}
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*.txt")) == sorted(files)


def test_a_request_discards_only_what_no_job_adopted(tmp_path: Path) -> None:
    """The POST handler hops to a worker thread to discard an upload only when something
    is left of it: never after its job adopted it."""
    from pfcon.domain.ports import StagingRequest
    from pfcon.entrypoints.http.forms import FormData

    storebase = StoreBase(str(tmp_path / "sb"))
    storage = ZipFileStorage(storebase)
    form = FormData(received=storage.receive(reader(build({"a": b"a"}))))
    assert form.upload_left
    assert form.received is not None
    storage.stage("jid-1", StagingRequest(received=form.received))
    assert not form.upload_left
    refused = FormData(received=storage.receive(reader(build({"b": b"b"}))))
    assert refused.upload_left
    refused.discard_upload()  # the job was refused: the area goes
    assert not refused.upload_left
    assert sorted(os.listdir(storebase.root)) == ["key-jid-1"]
    assert FormData(upload_path=str(tmp_path / "spooled.zip")).upload_left


def test_an_adoption_that_fails_leaves_neither_the_job_nor_the_area(tmp_path: Path, monkeypatch: Any) -> None:
    from pfcon.adapters.storage import zipfile as zipstorage
    from pfcon.domain.ports import StagingRequest

    def broken(_: str) -> int:
        raise OSError(5, "I/O error")

    monkeypatch.setattr(zipstorage, "expand_links", broken)
    storebase = StoreBase(str(tmp_path / "sb"))
    storage = ZipFileStorage(storebase)
    received = storage.receive(reader(build({"in.chrislink": b"SERVICES/PACS"})))
    with pytest.raises(OSError):
        storage.stage("jid-1", StagingRequest(received=received))
    assert os.listdir(storebase.root) == []
    assert not received.pending


def test_an_adoption_under_a_taken_id_leaves_the_area_to_its_request(tmp_path: Path) -> None:
    from pfcon.domain.errors import JobAlreadyExists
    from pfcon.domain.ports import StagingRequest

    storebase = StoreBase(str(tmp_path / "sb"))
    storage = ZipFileStorage(storebase)
    storage.stage("jid-1", StagingRequest(received=storage.receive(reader(build({"a": b"a"})))))
    second = storage.receive(reader(build({"b": b"b"})))
    with pytest.raises(JobAlreadyExists):
        storage.stage("jid-1", StagingRequest(received=second))
    assert tree(storebase.key_dir("jid-1")) == ["incoming", "incoming/a", "outgoing"]
    assert second.pending
    second.discard()
    assert sorted(os.listdir(storebase.root)) == ["key-jid-1"]


def test_a_reserved_area_deleted_before_its_input_came_is_a_conflict(tmp_path: Path) -> None:
    """A DELETE of the job while its upload arrived (ADR 23): 409, and the upload is left
    to its request, which discards it."""
    from pfcon.domain.errors import JobConflict
    from pfcon.domain.ports import StagingRequest

    storebase = StoreBase(str(tmp_path / "sb"))
    storage = ZipFileStorage(storebase)
    area = storage.reserve("jid-1")
    assert tree(storebase.key_dir("jid-1")) == [".staging", "incoming", "outgoing"]
    received = storage.receive(reader(build({"a": b"a"})))
    storebase.delete("jid-1")
    with pytest.raises(JobConflict):
        storage.stage_into(area, StagingRequest(received=received))
    storage.release(area)
    assert received.pending
    received.discard()
    assert os.listdir(storebase.root) == []
