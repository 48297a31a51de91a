"""Zip input extraction (hardened, docs/wire-contract.md §4.5) and zip output streaming (docs/wire-contract.md §4.9, §9.4)."""

from __future__ import annotations

import io
import os
import stat
import struct
import zipfile
from pathlib import Path

import pytest

from pfcon.adapters.storage.local import CHUNK, iter_output_files, iter_zip, list_outputs
from pfcon.adapters.storage.zipfile import ZipLimits, extract_zip, inspect_zip
from pfcon.domain.errors import InputTooLarge, InvalidInputData
from pfcon.domain.model import OutputListing

LIMITS = ZipLimits()


def write_zip(path: Path, files: dict[str, bytes | str], compression: int = zipfile.ZIP_DEFLATED) -> str:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return str(path)


def tree(root: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            out.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(out)


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    d = tmp_path / "incoming"
    d.mkdir()
    return d


# -- valid archives -----------------------------------------------------------------


def test_nested_files_are_extracted_byte_exact(tmp_path: Path, dest: Path) -> None:
    files = {
        "top.txt": b"hello\n",
        "a/b/c/deep.bin": bytes(range(256)) * 300,
        "a/sibling.txt": b"",
        "data/blank lines.txt": b"\r\n\r\n",
    }
    zpath = write_zip(tmp_path / "in.zip", files)
    assert extract_zip(zpath, str(dest), LIMITS) == 4
    assert tree(dest) == sorted(
        ["a", "a/b", "a/b/c", "a/b/c/deep.bin", "a/sibling.txt", "data", "data/blank lines.txt", "top.txt"]
    )
    for name, content in files.items():
        assert (dest / name).read_bytes() == content


def test_stored_archives_work_too(tmp_path: Path, dest: Path) -> None:
    zpath = write_zip(tmp_path / "in.zip", {"x/y.txt": b"stored"}, zipfile.ZIP_STORED)
    assert extract_zip(zpath, str(dest), LIMITS) == 1
    assert (dest / "x" / "y.txt").read_bytes() == b"stored"


def test_unicode_names(tmp_path: Path, dest: Path) -> None:
    files = {"dossier/été.txt": "ça va", "数据/文件.dcm": b"\x00\x01", "emoji_😀.txt": "x"}
    zpath = write_zip(tmp_path / "in.zip", files)
    assert extract_zip(zpath, str(dest), LIMITS) == 3
    assert (dest / "dossier" / "été.txt").read_text("utf-8") == "ça va"
    assert (dest / "数据" / "文件.dcm").read_bytes() == b"\x00\x01"
    assert (dest / "emoji_😀.txt").read_bytes() == b"x"


def test_empty_zip_has_no_files(tmp_path: Path, dest: Path) -> None:
    zpath = write_zip(tmp_path / "empty.zip", {})
    assert inspect_zip(zpath, LIMITS) == []
    assert extract_zip(zpath, str(dest), LIMITS) == 0
    assert tree(dest) == []


def test_directory_entries_are_created_but_not_counted(tmp_path: Path, dest: Path) -> None:
    zpath = tmp_path / "dirs.zip"
    with zipfile.ZipFile(zpath, "w") as archive:
        archive.writestr("emptydir/", b"")
        archive.writestr("d/", b"")
        archive.writestr("d/f.txt", b"f")
        archive.mkdir("made/with/mkdir")
    assert extract_zip(str(zpath), str(dest), LIMITS) == 1
    assert (dest / "emptydir").is_dir()
    assert (dest / "made" / "with" / "mkdir").is_dir()
    assert (dest / "d" / "f.txt").read_bytes() == b"f"


def test_dot_segments_are_harmless(tmp_path: Path, dest: Path) -> None:
    zpath = write_zip(tmp_path / "in.zip", {"./a/./b.txt": b"b"})
    members = inspect_zip(zpath, LIMITS)
    assert [rel for _, rel in members] == ["a/b.txt"]
    assert extract_zip(zpath, str(dest), LIMITS) == 1
    assert (dest / "a" / "b.txt").read_bytes() == b"b"


def test_inspect_returns_members_in_order_with_relative_paths(tmp_path: Path) -> None:
    zpath = write_zip(tmp_path / "in.zip", {"b.txt": "1", "a/c.txt": "22"})
    members = inspect_zip(zpath, LIMITS)
    assert [(info.filename, rel, info.file_size) for info, rel in members] == [
        ("b.txt", "b.txt", 1),
        ("a/c.txt", "a/c.txt", 2),
    ]


def test_regular_unix_file_entries_are_fine(tmp_path: Path, dest: Path) -> None:
    zpath = tmp_path / "unix.zip"
    with zipfile.ZipFile(zpath, "w") as archive:
        info = zipfile.ZipInfo("script.sh")
        info.create_system = 3
        info.external_attr = (stat.S_IFREG | 0o755) << 16
        archive.writestr(info, b"#!/bin/sh\n")
    assert extract_zip(str(zpath), str(dest), LIMITS) == 1
    assert (dest / "script.sh").read_bytes() == b"#!/bin/sh\n"


# -- unsafe names and entry types -------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["../x", "a/../../x", "a/b/../../../x", "/etc/passwd", "C:/x", "c:x", "..", "../", "a/.."],
)
def test_unsafe_names_are_refused_and_nothing_is_written(tmp_path: Path, dest: Path, name: str) -> None:
    zpath = write_zip(tmp_path / "evil.zip", {"ok.txt": b"fine", name: b"pwned"})
    with pytest.raises(InvalidInputData):
        inspect_zip(zpath, LIMITS)
    with pytest.raises(InvalidInputData):
        extract_zip(zpath, str(dest), LIMITS)
    assert tree(dest) == []
    assert not (tmp_path / "x").exists()
    assert sorted(os.listdir(tmp_path)) == ["evil.zip", "incoming"]


def test_symlink_entries_are_refused(tmp_path: Path, dest: Path) -> None:
    zpath = tmp_path / "link.zip"
    with zipfile.ZipFile(zpath, "w") as archive:
        archive.writestr("ok.txt", b"fine")
        info = zipfile.ZipInfo("passwd")
        info.create_system = 3
        info.external_attr = 0o120777 << 16
        archive.writestr(info, "/etc/passwd")
    with pytest.raises(InvalidInputData) as e:
        extract_zip(str(zpath), str(dest), LIMITS)
    assert not isinstance(e.value, InputTooLarge)
    assert tree(dest) == []


@pytest.mark.parametrize("kind", [stat.S_IFIFO, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFSOCK])
def test_special_file_entries_are_refused(tmp_path: Path, dest: Path, kind: int) -> None:
    zpath = tmp_path / "special.zip"
    with zipfile.ZipFile(zpath, "w") as archive:
        info = zipfile.ZipInfo("dev")
        info.create_system = 3
        info.external_attr = (kind | 0o644) << 16
        archive.writestr(info, b"")
    with pytest.raises(InvalidInputData):
        extract_zip(str(zpath), str(dest), LIMITS)
    assert tree(dest) == []


def test_existing_symlink_in_destination_is_not_written_through(tmp_path: Path, dest: Path) -> None:
    # destination already holds a symlink named like a member: never write through it
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"original")
    os.symlink(outside, dest / "victim.txt")
    zpath = write_zip(tmp_path / "in.zip", {"victim.txt": b"overwritten"})
    with pytest.raises(InvalidInputData):
        extract_zip(zpath, str(dest), LIMITS)
    assert outside.read_bytes() == b"original"


# -- limits --------------------------------------------------------------------------


def test_zip_bomb_is_refused_before_writing(tmp_path: Path, dest: Path) -> None:
    zpath = tmp_path / "bomb.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros.bin", b"\0" * (50 * 1024 * 1024))
    assert zpath.stat().st_size < 200 * 1024
    limits = ZipLimits(max_uncompressed_bytes=10 * 1024 * 1024, max_ratio=0)  # the size limit alone
    with pytest.raises(InputTooLarge, match="ZIP_MAX_UNCOMPRESSED_BYTES"):
        inspect_zip(str(zpath), limits)
    with pytest.raises(InputTooLarge):
        extract_zip(str(zpath), str(dest), limits)
    assert tree(dest) == []
    with pytest.raises(InputTooLarge, match="ZIP_MAX_RATIO"):  # and the default ratio check alone
        extract_zip(str(zpath), str(dest), LIMITS)
    assert tree(dest) == []


def test_total_size_is_summed_over_entries(tmp_path: Path, dest: Path) -> None:
    zpath = write_zip(tmp_path / "in.zip", {f"f{i}": b"x" * 100 for i in range(5)})
    assert extract_zip(zpath, str(tmp_path / "ok"), ZipLimits(max_uncompressed_bytes=500)) == 5
    with pytest.raises(InputTooLarge):
        extract_zip(zpath, str(dest), ZipLimits(max_uncompressed_bytes=499))
    assert tree(dest) == []


def test_entry_count_limit(tmp_path: Path, dest: Path) -> None:
    zpath = write_zip(tmp_path / "many.zip", {f"f{i}.txt": b"x" for i in range(5)})
    assert extract_zip(zpath, str(tmp_path / "ok"), ZipLimits(max_entries=5)) == 5
    with pytest.raises(InputTooLarge):
        inspect_zip(zpath, ZipLimits(max_entries=4))
    with pytest.raises(InputTooLarge):
        extract_zip(zpath, str(dest), ZipLimits(max_entries=4))
    assert tree(dest) == []


def test_input_too_large_is_a_kind_of_invalid_input() -> None:
    assert issubclass(InputTooLarge, InvalidInputData)


def test_lying_size_headers_do_not_write_past_the_limit(tmp_path: Path, dest: Path) -> None:
    # The headers claim 1000 bytes, the data inflates to 5 MiB.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("liar.bin", b"\0" * (5 * 1024 * 1024))
    raw = bytearray(buf.getvalue())
    cd = raw.find(b"PK\x01\x02")
    struct.pack_into("<I", raw, 22, 1000)  # local header: uncompressed size
    struct.pack_into("<I", raw, cd + 24, 1000)  # central directory: uncompressed size
    zpath = tmp_path / "liar.zip"
    zpath.write_bytes(bytes(raw))
    with pytest.raises(InvalidInputData):
        extract_zip(str(zpath), str(dest), ZipLimits(max_uncompressed_bytes=4096))
    written = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    assert written <= 4096


# -- broken archives -----------------------------------------------------------------


def _bad(tmp_path: Path, dest: Path, data: bytes) -> InvalidInputData:
    zpath = tmp_path / "bad.zip"
    zpath.write_bytes(data)
    with pytest.raises(InvalidInputData) as info:
        extract_zip(str(zpath), str(dest), LIMITS)
    assert not isinstance(info.value, InputTooLarge)
    return info.value


def test_non_zip_bytes(tmp_path: Path, dest: Path) -> None:
    e = _bad(tmp_path, dest, b"this is definitely not a zip file\n" * 100)
    assert "Bad zip file" in str(e)
    assert tree(dest) == []


def test_empty_file(tmp_path: Path, dest: Path) -> None:
    _bad(tmp_path, dest, b"")
    assert tree(dest) == []


def test_truncated_zip(tmp_path: Path, dest: Path) -> None:
    good = (tmp_path / "good.zip")
    write_zip(good, {"a.txt": os.urandom(2000), "b.txt": os.urandom(2000)})
    raw = good.read_bytes()
    _bad(tmp_path, dest, raw[: len(raw) // 2])
    assert tree(dest) == []


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
@pytest.mark.parametrize("where", [0, 7, 100, 500, 1023])
def test_corrupted_member_data(tmp_path: Path, dest: Path, compression: int, where: int) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as archive:
        archive.writestr("a.txt", bytes(range(256)) * 64)
    raw = bytearray(buf.getvalue())
    info = zipfile.ZipFile(io.BytesIO(bytes(raw))).infolist()[0]
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    pos = start + where % info.compress_size
    raw[pos] ^= 0xFF
    _bad(tmp_path, dest, bytes(raw))


def test_deterministic_deflate_corruption_raising_zlib_error(tmp_path: Path, dest: Path) -> None:
    # b'\x07' as the first deflate byte is BTYPE=11 (reserved): zlib raises zlib.error
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.txt", b"hello world " * 100)
    raw = bytearray(buf.getvalue())
    raw[30 + len("a.txt")] = 0x07
    _bad(tmp_path, dest, bytes(raw))


@pytest.mark.parametrize(("first", "second"), [("a", "a/b"), ("a/b", "a"), ("d", "d/"), ("d/", "d")])
def test_conflicting_names(tmp_path: Path, dest: Path, first: str, second: str) -> None:
    zpath = tmp_path / "conflict.zip"
    with zipfile.ZipFile(zpath, "w") as archive:
        archive.writestr(first, b"" if first.endswith("/") else b"1")
        archive.writestr(second, b"" if second.endswith("/") else b"2")
    with pytest.raises(InvalidInputData):
        extract_zip(str(zpath), str(dest), LIMITS)


def _patch_member(raw: bytearray, *, method: int | None = None, flags: int | None = None) -> bytes:
    cd = raw.find(b"PK\x01\x02")
    if method is not None:
        struct.pack_into("<H", raw, 8, method)
        struct.pack_into("<H", raw, cd + 10, method)
    if flags is not None:
        struct.pack_into("<H", raw, 6, flags)
        struct.pack_into("<H", raw, cd + 8, flags)
    return bytes(raw)


def _stored_zip() -> bytearray:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("a.txt", b"hello")
    return bytearray(buf.getvalue())


def test_unsupported_compression_method_is_invalid_input(tmp_path: Path, dest: Path) -> None:
    data = _patch_member(_stored_zip(), method=9)
    zpath = tmp_path / "deflate64.zip"
    zpath.write_bytes(data)
    with pytest.raises(InvalidInputData):
        inspect_zip(str(zpath), LIMITS)
    _bad(tmp_path, dest, data)


def test_encrypted_member_is_invalid_input(tmp_path: Path, dest: Path) -> None:
    data = _patch_member(_stored_zip(), flags=0x1)
    zpath = tmp_path / "encrypted.zip"
    zpath.write_bytes(data)
    with pytest.raises(InvalidInputData):
        inspect_zip(str(zpath), LIMITS)
    _bad(tmp_path, dest, data)


# -- output side: iter_zip, iter_output_files, list_outputs -----------------------------


@pytest.fixture
def outgoing(tmp_path: Path) -> Path:
    root = tmp_path / "outgoing"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "emptydir").mkdir()
    (root / "a.txt").write_bytes(b"A" * 10)
    (root / "sub" / "b.bin").write_bytes(bytes(range(256)) * 4)
    (root / "sub" / "deeper" / "c.txt").write_bytes(b"")
    (root / "sub" / "été.txt").write_bytes("ü".encode())
    (root / "link.chrislink").write_text("home/bob")
    (root / "sub" / "x.chrislink").write_text("home/alice")
    outside = tmp_path / "secret.txt"
    outside.write_bytes(b"do not leak")
    os.symlink(outside, root / "sym.txt")
    os.symlink(tmp_path, root / "symdir")
    os.symlink(root / "a.txt", root / "sub" / "inner-link")
    return root


# os.walk order: each directory's files (sorted) before its subdirectories (sorted)
EXPECTED = ["a.txt", "sub/b.bin", "sub/été.txt", "sub/deeper/c.txt"]


def _read(chunks: list[bytes]) -> zipfile.ZipFile:
    archive = zipfile.ZipFile(io.BytesIO(b"".join(chunks)))
    assert archive.testzip() is None
    return archive


def test_iter_zip_contents(outgoing: Path) -> None:
    chunks = list(iter_zip(str(outgoing)))
    assert all(isinstance(c, bytes) and c for c in chunks)
    archive = _read(chunks)
    names = archive.namelist()
    assert sorted(names) == sorted(EXPECTED)
    assert not any(n.endswith("/") for n in names)
    assert not any("\\" in n or n.startswith("/") for n in names)
    for name in EXPECTED:
        assert archive.read(name) == (outgoing / name).read_bytes()
        assert archive.getinfo(name).compress_type == zipfile.ZIP_STORED
    assert b"do not leak" not in b"".join(chunks)


def test_iter_zip_deflated(outgoing: Path) -> None:
    archive = _read(list(iter_zip(str(outgoing), zipfile.ZIP_DEFLATED)))
    assert sorted(archive.namelist()) == sorted(EXPECTED)
    for name in EXPECTED:
        assert archive.getinfo(name).compress_type == zipfile.ZIP_DEFLATED
        assert archive.read(name) == (outgoing / name).read_bytes()


def test_iter_zip_of_empty_dir_is_a_valid_empty_zip(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    (empty / "only" / "dirs").mkdir(parents=True)
    (empty / "only" / "x.chrislink").write_text("a/b")
    archive = _read(list(iter_zip(str(empty))))
    assert archive.namelist() == []


def test_iter_zip_streams_large_files_in_bounded_chunks(tmp_path: Path) -> None:
    root = tmp_path / "big"
    root.mkdir()
    payload = os.urandom(5 * CHUNK + 123)
    (root / "big.bin").write_bytes(payload)
    (root / "small.txt").write_bytes(b"small")
    chunks = list(iter_zip(str(root)))
    assert len(chunks) >= 5
    assert max(len(c) for c in chunks) < 3 * CHUNK
    archive = _read(chunks)
    assert archive.read("big.bin") == payload
    assert archive.read("small.txt") == b"small"


def test_iter_output_files(outgoing: Path) -> None:
    files = list(iter_output_files(str(outgoing)))
    assert [f.rel for f in files] == EXPECTED
    for f in files:
        assert f.path == os.path.join(str(outgoing), *f.rel.split("/"))
        assert f.size == (outgoing / f.rel).stat().st_size
    assert [f.size for f in files] == [10, 1024, 2, 0]
    assert [f.rel for f in iter_output_files(str(outgoing))] == EXPECTED  # deterministic


def test_list_outputs(outgoing: Path) -> None:
    listing = list_outputs(str(outgoing), "home/foo/feed/output")
    assert listing == OutputListing("home/foo/feed/output", tuple(EXPECTED))


def test_list_outputs_of_empty_dir(tmp_path: Path) -> None:
    assert list_outputs(str(tmp_path), "x") == OutputListing("x", ())
