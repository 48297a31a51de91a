"""Input limits that protect by default (issue 7.4): zip bombs, free space, lying
headers, over-long names and paths, image references."""

from __future__ import annotations

import errno
import io
import os
import random
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pfcon.adapters.storage import zipfile as zipmod
from pfcon.adapters.storage.local import normalize_storage_path, safe_relative_path
from pfcon.adapters.storage.zipfile import ZipLimits, extract_zip, free_space, inspect_zip
from pfcon.domain.errors import InputTooLarge, InvalidInputData, StorageFull
from pfcon.domain.model import (
    IMAGE_NAME_MAX_LENGTH,
    JobSpec,
    PluginType,
    Resources,
    image_reference_problem,
    path_length_problem,
)
from pfcon.domain.services import spec_problems

from ..conftest import Api, make_zip, tree

MiB = 1024**2
GiB = 1024**3
DIGEST = "sha256:" + "0123456789abcdef" * 4


# -- helpers -----------------------------------------------------------------------------


def write_zeros_zip(path: Path, name: str, size: int, chunk: int = MiB) -> Path:
    """A zip holding one deflated member of ``size`` zero bytes, built without deflating
    ``size`` bytes: after a full flush the deflate state is reset, so every ``chunk`` of
    zeros compresses to the same segment, which is computed once and repeated."""
    assert size % chunk == 0 and size < 2**32
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = bytes(chunk)
    segment = comp.compress(zeros) + comp.flush(zlib.Z_FULL_FLUSH)
    assert comp.compress(zeros) + comp.flush(zlib.Z_FULL_FLUSH) == segment
    tail = comp.flush()
    n = size // chunk
    crc = 0
    for _ in range(n):
        crc = zlib.crc32(zeros, crc)
    data = segment * n + tail
    fname = name.encode()
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(data), size, len(fname), 0)
    central = struct.pack(
        "<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, crc, len(data), size, len(fname), 0, 0, 0, 0, 0, 0
    )
    cd_offset = len(local) + len(fname) + len(data)
    cd = central + fname
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(cd), cd_offset, 0)
    path.write_bytes(local + fname + data + cd + end)
    return path


def write_zip(path: Path, files: dict[str, bytes | str], compression: int = zipfile.ZIP_DEFLATED) -> str:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return str(path)


def text_like(size: int, seed: int = 7) -> bytes:
    """Compressible but not degenerate data (deflate ratio ~3-5x), like CSV or DICOM headers."""
    rng = random.Random(seed)
    words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(2000)]
    out = bytearray()
    while len(out) < size:
        out += b" ".join(rng.choice(words) for _ in range(12)) + b",%d\n" % rng.randint(0, 10**6)
    return bytes(out[:size])


def written_bytes(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The issue's example: a 1.5 MB zip that expands to 1.5 GiB."""
    path = write_zeros_zip(tmp_path_factory.mktemp("bomb") / "bomb.zip", "zeros.bin", 1536 * MiB)
    assert path.stat().st_size < 2 * MiB
    return path


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    d = tmp_path / "incoming"
    d.mkdir()
    return d


# -- defaults ----------------------------------------------------------------------------


def test_production_defaults() -> None:
    limits = ZipLimits()
    assert limits.max_entries == 100_000
    assert limits.max_uncompressed_bytes == 16 * GiB
    assert limits.max_ratio == 500
    assert limits.ratio_min_bytes == MiB
    assert limits.reserve_bytes == GiB


def test_the_bomb_helper_builds_a_valid_archive(tmp_path: Path) -> None:
    path = write_zeros_zip(tmp_path / "z.zip", "z.bin", 3 * MiB)
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        assert archive.read("z.bin") == bytes(3 * MiB)


# -- expansion ratio ---------------------------------------------------------------------


def test_a_thousandfold_bomb_is_refused_by_default_before_extraction(bomb: Path, dest: Path) -> None:
    info = zipfile.ZipFile(bomb).infolist()[0]
    assert info.file_size == 1536 * MiB
    assert info.file_size > 1000 * info.compress_size
    with pytest.raises(InputTooLarge) as e:
        inspect_zip(str(bomb), ZipLimits())
    message = e.value.message
    assert "'zeros.bin'" in message and "500x" in message and "ZIP_MAX_RATIO" in message
    with pytest.raises(InputTooLarge):
        extract_zip(str(bomb), str(dest), ZipLimits())
    assert tree(str(dest)) == []


def test_a_100_mib_bomb_is_refused_too(tmp_path: Path) -> None:
    path = write_zeros_zip(tmp_path / "b.zip", "b.bin", 100 * MiB)
    with pytest.raises(InputTooLarge, match="expands 1\\d\\d\\dx"):
        inspect_zip(str(path), ZipLimits())


def test_max_ratio_zero_disables_the_check(bomb: Path) -> None:
    members = inspect_zip(str(bomb), ZipLimits(max_ratio=0))
    assert [rel for _, rel in members] == ["zeros.bin"]


def test_text_like_member_of_2_mib_passes(tmp_path: Path, dest: Path) -> None:
    payload = text_like(2 * MiB)
    zpath = write_zip(tmp_path / "text.zip", {"table.csv": payload})
    info = zipfile.ZipFile(zpath).infolist()[0]
    assert 1 < info.file_size / info.compress_size < 100
    assert extract_zip(zpath, str(dest), ZipLimits()) == 1
    assert (dest / "table.csv").read_bytes() == payload


def test_small_highly_compressible_members_stay_fine(tmp_path: Path, dest: Path) -> None:
    # under ratio_min_bytes, a member may compress as well as it likes (empty-ish files, masks)
    zpath = write_zip(tmp_path / "small.zip", {"zeros.bin": bytes(900 * 1024), "spaces.txt": b" " * 1000})
    assert extract_zip(zpath, str(dest), ZipLimits()) == 2


def test_ratio_threshold_is_exclusive(tmp_path: Path) -> None:
    zpath = write_zeros_zip(tmp_path / "z.zip", "z.bin", 2 * MiB)
    info = zipfile.ZipFile(zpath).infolist()[0]
    exact = info.file_size // info.compress_size  # compress_size * exact <= file_size
    inspect_zip(str(zpath), ZipLimits(max_ratio=exact + 1))
    with pytest.raises(InputTooLarge):
        inspect_zip(str(zpath), ZipLimits(max_ratio=exact - 1))
    inspect_zip(str(zpath), ZipLimits(ratio_min_bytes=2 * MiB))  # not above the threshold


def test_many_small_members_make_a_bomb_together(tmp_path: Path) -> None:
    # each member is exempt (1 MiB, not more than ratio_min_bytes); the archive is not
    zpath = write_zip(tmp_path / "many.zip", {f"z{i}.bin": bytes(MiB) for i in range(8)})
    with pytest.raises(InputTooLarge, match="the archive expands"):
        inspect_zip(zpath, ZipLimits())
    inspect_zip(zpath, ZipLimits(max_ratio=0))


def test_stored_members_never_trip_the_ratio(tmp_path: Path) -> None:
    zpath = write_zip(tmp_path / "s.zip", {"zeros.bin": bytes(3 * MiB)}, zipfile.ZIP_STORED)
    inspect_zip(zpath, ZipLimits())


# -- size and entry limits ---------------------------------------------------------------


def test_total_size_limit(tmp_path: Path) -> None:
    zpath = write_zip(tmp_path / "t.zip", {"a": text_like(3000), "b": text_like(3000, 8)})
    inspect_zip(zpath, ZipLimits(max_uncompressed_bytes=6000))
    with pytest.raises(InputTooLarge, match="ZIP_MAX_UNCOMPRESSED_BYTES"):
        inspect_zip(zpath, ZipLimits(max_uncompressed_bytes=5999))


def test_entry_count_limit(tmp_path: Path, dest: Path) -> None:
    zpath = write_zip(tmp_path / "n.zip", {f"d/f{i}.txt": b"x" for i in range(6)})
    assert extract_zip(zpath, str(tmp_path / "ok"), ZipLimits(max_entries=6)) == 6
    with pytest.raises(InputTooLarge, match="6 entries.*ZIP_MAX_ENTRIES"):
        extract_zip(zpath, str(dest), ZipLimits(max_entries=5))
    assert tree(str(dest)) == []


# -- free space on storeBase ---------------------------------------------------------------


def test_free_space_minus_reserve_is_checked_before_extraction(tmp_path: Path) -> None:
    zpath = write_zip(tmp_path / "f.zip", {"a.txt": text_like(10_000)})
    limits = ZipLimits(reserve_bytes=1000)
    inspect_zip(zpath, limits, free_bytes=11_000)  # exactly enough
    with pytest.raises(StorageFull) as e:
        inspect_zip(zpath, limits, free_bytes=10_999)
    assert e.value.message == (
        "not enough free space on storeBase for the input: needs 10000 bytes, "
        "10999 free, 1000 reserved (STOREBASE_RESERVE_BYTES)"
    )
    with pytest.raises(StorageFull):
        inspect_zip(zpath, limits, free_bytes=500)  # less than the reserve itself
    inspect_zip(zpath, limits)  # free space unknown: not checked


def test_empty_archive_needs_no_room(tmp_path: Path) -> None:
    zpath = write_zip(tmp_path / "e.zip", {})
    assert inspect_zip(zpath, ZipLimits(), free_bytes=0) == []


def test_extract_measures_the_destination(tmp_path: Path, dest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    measured: list[str] = []

    def fake_free_space(path: str) -> int:
        measured.append(path)
        return GiB + 100  # 100 bytes above the default reserve

    monkeypatch.setattr(zipmod, "free_space", fake_free_space)
    zpath = write_zip(tmp_path / "f.zip", {"a.txt": b"x" * 100, "b.txt": b"y"})
    with pytest.raises(StorageFull):
        extract_zip(zpath, str(dest), ZipLimits())
    assert measured == [str(dest)]
    assert tree(str(dest)) == []


def test_free_space_of_a_real_directory(tmp_path: Path) -> None:
    free = free_space(str(tmp_path))
    assert free is not None and free > 0
    assert free_space(str(tmp_path / "missing")) is None


# -- sizes are checked as data is written ---------------------------------------------------


def _lying_zip(real_size: int, claimed: int) -> bytes:
    """One deflated member of ``real_size`` zeros whose headers claim ``claimed`` bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("liar.bin", bytes(real_size))
    raw = bytearray(buf.getvalue())
    cd = raw.find(b"PK\x01\x02")
    struct.pack_into("<I", raw, 22, claimed)  # local header: uncompressed size
    struct.pack_into("<I", raw, cd + 24, claimed)  # central directory: uncompressed size
    return bytes(raw)


def test_headers_that_lie_about_the_size_write_nothing_beyond_it(tmp_path: Path, dest: Path) -> None:
    # 100 MiB of data behind headers that claim 1000 bytes: the ratio check cannot see it
    zpath = tmp_path / "liar.zip"
    zpath.write_bytes(_lying_zip(100 * MiB, 1000))
    assert zipfile.ZipFile(zpath).infolist()[0].file_size == 1000
    inspect_zip(str(zpath), ZipLimits())
    with pytest.raises(InvalidInputData):
        extract_zip(str(zpath), str(dest), ZipLimits())
    assert written_bytes(dest) <= 1000


def _without_header_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend the header checks let everything through, to test the write-time ones."""
    original = zipmod.inspect_zip

    def lenient(path: str, limits: ZipLimits, free_bytes: int | None = None) -> Any:
        return original(path, ZipLimits(max_ratio=0, max_uncompressed_bytes=2**62, reserve_bytes=0))

    monkeypatch.setattr(zipmod, "inspect_zip", lenient)


def test_total_is_counted_while_writing(tmp_path: Path, dest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _without_header_checks(monkeypatch)
    zpath = write_zip(tmp_path / "w.zip", {f"f{i}": os.urandom(3 * MiB) for i in range(3)})
    with pytest.raises(InputTooLarge, match="ZIP_MAX_UNCOMPRESSED_BYTES"):
        extract_zip(zpath, str(dest), ZipLimits(max_uncompressed_bytes=5 * MiB))
    assert written_bytes(dest) <= 5 * MiB


def test_free_space_is_counted_while_writing(tmp_path: Path, dest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _without_header_checks(monkeypatch)
    monkeypatch.setattr(zipmod, "free_space", lambda path: 4 * MiB + 1000)
    zpath = write_zip(tmp_path / "w.zip", {f"f{i}": os.urandom(3 * MiB) for i in range(3)})
    with pytest.raises(StorageFull, match="needs at least"):
        extract_zip(zpath, str(dest), ZipLimits(reserve_bytes=1000))
    assert written_bytes(dest) <= 4 * MiB


def test_a_member_yielding_more_than_its_header_says_is_stopped(
    tmp_path: Path, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    zpath = write_zip(tmp_path / "m.zip", {"m.bin": b"0123456789"})
    real_open = zipfile.ZipFile.open

    def overflowing_open(self: zipfile.ZipFile, name: Any, mode: str = "r", **kw: Any) -> Any:
        if mode == "r":
            return io.BytesIO(b"x" * (3 * MiB))  # a reader that ignores the header's size
        return real_open(self, name, mode, **kw)

    monkeypatch.setattr(zipfile.ZipFile, "open", overflowing_open)
    with pytest.raises(InputTooLarge, match="'m.bin' holds more than the 10 bytes"):
        extract_zip(zpath, str(dest), ZipLimits())
    assert written_bytes(dest) <= 10


class _FullDisk(io.RawIOBase):
    def __init__(self, fd: int, code: int) -> None:
        self.fd = fd
        self.code = code

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        raise OSError(self.code, os.strerror(self.code))

    def close(self) -> None:
        if not self.closed:
            os.close(self.fd)
        super().close()


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_while_writing_is_storage_full(
    tmp_path: Path, dest: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    zpath = write_zip(tmp_path / "d.zip", {"a.txt": b"a" * 1000})
    monkeypatch.setattr(zipmod.os, "fdopen", lambda fd, mode: _FullDisk(fd, code))
    with pytest.raises(StorageFull, match="storeBase is full"):
        extract_zip(zpath, str(dest), ZipLimits())


# -- over-long names and paths -------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "ok"),
    [
        ("a" * 255, True),
        ("a" * 256, False),
        ("é" * 127, True),  # 254 bytes
        ("é" * 128, False),  # 256 bytes in UTF-8, 128 characters
        ("d/" + "x" * 255 + "/f", True),
        ("d/" + "x" * 256 + "/f", False),
        ("a/" * 2048, True),  # 4096 bytes
        ("a/" * 2048 + "b", False),
        ("😀" * 63, True),  # 252 bytes
        ("😀" * 64, False),
    ],
)
def test_path_length_problem(path: str, ok: bool) -> None:
    assert (path_length_problem(path) is None) is ok
    assert (safe_relative_path(path) is not None) is ok


@pytest.mark.parametrize("field", ["input_dirs", "output_dir", "job_output_path"])
@pytest.mark.parametrize("path", ["home/" + "x" * 256, "home/" + "é" * 200 + "/out", "a/" * 3000, "x" * (1024 * 1024)])
def test_over_long_storage_paths_are_invalid_input_naming_the_field(field: str, path: str) -> None:
    with pytest.raises(InvalidInputData) as e:
        normalize_storage_path(path, field)
    assert e.value.message.startswith(f"{field}: ")
    assert "longer than" in e.value.message
    assert len(e.value.message) < 300


def test_long_but_legal_storage_paths_are_fine() -> None:
    path = "home/" + "x" * 255 + "/feeds/" + "é" * 127
    assert normalize_storage_path("/" + path + "/", "output_dir") == path


@pytest.mark.parametrize("name", ["x" * 256, "dir/" + "é" * 128 + ".dcm", "a/" * 2100 + "f"])
def test_over_long_member_names_are_refused(tmp_path: Path, dest: Path, name: str) -> None:
    zpath = write_zip(tmp_path / "long.zip", {"ok.txt": b"ok", name: b"data"})
    with pytest.raises(InvalidInputData) as e:
        extract_zip(zpath, str(dest), ZipLimits())
    assert not isinstance(e.value, InputTooLarge)
    assert e.value.message.startswith("data_file: entry name too long")
    assert tree(str(dest)) == []


def test_a_255_byte_member_name_is_extracted(tmp_path: Path, dest: Path) -> None:
    name = "d/" + "é" * 127 + "x"
    zpath = write_zip(tmp_path / "long.zip", {name: b"data"})
    assert extract_zip(zpath, str(dest), ZipLimits()) == 1
    assert (dest / name).read_bytes() == b"data"


def test_a_path_too_long_for_the_destination_is_invalid_input(tmp_path: Path) -> None:
    # each name is legal, but storeBase's own path pushes the whole over PATH_MAX
    deep = tmp_path / ("d" * 250) / ("e" * 250) / ("f" * 250)
    deep.mkdir(parents=True)
    name = "/".join(["n" * 250] * 15)  # 3764 bytes
    zpath = write_zip(tmp_path / "deep.zip", {name: b"data"})
    with pytest.raises(InvalidInputData, match="too long"):
        extract_zip(zpath, str(deep), ZipLimits())


# -- image references --------------------------------------------------------------------


VALID_IMAGES = [
    "busybox",
    "local/pfcon-busybox:1",
    "local/pl-simpledsapp:1.0.3",
    "fnndsc/pl-simpledsapp:2.1.0",
    "ghcr.io/fnndsc/pl-dircopy:2.1.1",
    "docker.io/library/busybox:latest",
    "localhost:5000/a/b:c",
    "localhost/a",
    "registry.example.org:443/team/sub/image_name__x.y-z:v1_2.3-rc4",
    "127.0.0.1:5000/fnndsc/pl-x",
    "[::1]:5000/fnndsc/pl-x:1",
    "fnndsc/pl-x@" + DIGEST,
    "fnndsc/pl-x:1.0@" + DIGEST,
    "a--b/c",
    "present:1",
    "x:" + "T" * 128,
    "a" * IMAGE_NAME_MAX_LENGTH,
    "localhost:5000",  # repository 'localhost', tag '5000'
]

INVALID_IMAGES = [
    "",
    "INVALID IMAGE NAME!!",
    "Local/Busybox",
    "Busybox",
    "a" * (1024 * 1024),
    "a" * (IMAGE_NAME_MAX_LENGTH + 1),
    "/".join(["a" * 100] * 3) + ":1",  # name of 302 characters
    " busybox",
    "busybox ",
    "busybox\n",
    "busy box",
    "busybox:",
    "busybox:-x",
    "busybox:.x",
    "busybox:" + "t" * 129,
    "busybox:a:b",
    "-busybox",
    "busybox-",
    "a//b",
    "/busybox",
    "busybox/",
    "a___b",
    "a..b",
    "a_.b",
    "http://docker.io/busybox",
    "host:port/a",
    "fnndsc/pl-x@sha256:abc",
    "fnndsc/pl-x@sha256:" + "0123456789ABCDEF" * 4,
    "fnndsc/pl-x@sha256:" + "0" * 65,
    "fnndsc/pl-x@" + DIGEST + "@" + DIGEST,
    "fnndsc/pl-x@",
    "pl-x\x00",
    "ümlaut/x",
]


@pytest.mark.parametrize("image", VALID_IMAGES)
def test_valid_image_references(image: str) -> None:
    assert image_reference_problem(image) is None


@pytest.mark.parametrize("image", INVALID_IMAGES, ids=lambda s: repr(s[:40]))
def test_invalid_image_references(image: str) -> None:
    why = image_reference_problem(image)
    assert why
    assert len(why) < 300


def test_image_problem_messages() -> None:
    assert image_reference_problem("Local/Busybox") == "repository names must be lower case"
    assert "at most 512 characters" in (image_reference_problem("a" * MiB) or "")
    assert "at most 255 characters" in (image_reference_problem("a" * 256) or "")
    assert "64 lower-case hexadecimal" in (image_reference_problem("a@sha256:" + "0" * 63) or "")


def _spec(image: str) -> JobSpec:
    return JobSpec(
        jid="chris-jid-1",
        image=image,
        entrypoint=("python3", "/usr/local/bin/simpledsapp"),
        type=PluginType.DS,
        resources=Resources(),
    )


@pytest.mark.parametrize("image", ["INVALID IMAGE NAME!!", "a" * MiB, "Local/Busybox"])
def test_spec_problems_names_the_image_field(image: str) -> None:
    problems = spec_problems(_spec(image))
    assert list(problems) == ["image"]
    assert problems["image"].startswith("invalid image reference ")
    assert len(problems["image"]) < 400


def test_spec_problems_keeps_the_empty_message() -> None:
    assert spec_problems(_spec("")) == {"image": "cannot be empty"}


@pytest.mark.parametrize("image", VALID_IMAGES)
def test_spec_problems_accepts_valid_images(image: str) -> None:
    assert spec_problems(_spec(image)) == {}


# -- through the API ---------------------------------------------------------------------


@pytest.mark.usefixtures("body_path")
def test_api_refuses_a_bomb_with_413_and_leaves_nothing(app_factory: Callable[..., Api], bomb: Path) -> None:
    api = app_factory()
    r = api.submit(zip_bytes=bomb.read_bytes())
    assert r.status_code == 413, r.text
    body = r.json()
    assert set(body) == {"message"}
    assert "zeros.bin" in body["message"] and "ZIP_MAX_RATIO" in body["message"]
    assert tree(api.storebase) == []
    assert api.compute.jobs == {}


@pytest.mark.parametrize("image", ["INVALID IMAGE NAME!!", "Local/Busybox", "x" * MiB])
def test_api_refuses_an_invalid_image_with_400(app_factory: Callable[..., Api], image: str) -> None:
    api = app_factory()
    r = api.submit(image=image)
    assert r.status_code == 400, r.text[:300]
    body = r.json()
    assert set(body) == {"message"}
    assert body["message"]["image"].startswith("invalid image reference ")
    assert tree(api.storebase) == []


@pytest.mark.usefixtures("body_path")
def test_api_refuses_an_over_long_member_name_with_400(app_factory: Callable[..., Api]) -> None:
    api = app_factory()
    r = api.submit(zip_bytes=make_zip({"ok.txt": "ok", "x" * 300: "data"}))
    assert r.status_code == 400, r.text
    assert r.json()["message"].startswith("data_file: entry name too long")
    assert tree(api.storebase) == []
