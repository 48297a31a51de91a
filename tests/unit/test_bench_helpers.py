"""Pure helpers of the benchmark (bench/): percentiles, archives, interleaving, plots."""

from __future__ import annotations

import io
import os
import sys
import zipfile

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "bench")
sys.path.insert(0, BENCH)

import bench  # noqa: E402
import cube_bench  # noqa: E402
import plots  # noqa: E402


def test_nearest_rank_percentile():
    values = [float(v) for v in range(1, 101)]
    assert bench.pct(values, 50) == 50
    assert bench.pct(values, 90) == 90
    assert bench.pct(values, 99) == 99
    assert bench.pct([3.0], 50) == 3.0
    assert bench.summary([1.0, 2.0, 3.0])["p50"] == 2.0


def test_files_zip_holds_count_files_of_4_kib():
    data = cube_bench.files_zip(250)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        infos = z.infolist()
        assert len(infos) == 250
        assert {i.file_size for i in infos} == {4096}
        assert len({z.read(i) for i in infos[:10]}) == 10  # distinct contents
        assert infos[-1].filename == "data/series002/slice00249.dcm"


def test_big_zip_holds_one_file_of_the_size():
    with zipfile.ZipFile(io.BytesIO(cube_bench.big_zip(3 * 1024 * 1024 + 5))) as z:
        (info,) = z.infolist()
        assert info.file_size == 3 * 1024 * 1024 + 5
        assert z.testzip() is None


def test_interleaved_calls_each_once_a_round_turning_the_order_and_drops_warmups():
    calls: list[str] = []
    out = cube_bench.interleaved(
        4, {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}, warm=2
    )
    rounds = [calls[i : i + 3] for i in range(0, len(calls), 3)]
    assert rounds == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    assert [len(v) for v in out.values()] == [4, 4, 4]
    assert all(t >= 0 for v in out.values() for t in v)


def test_size_label():
    assert cube_bench.size_label(128 * 1024 * 1024) == "128 MiB"
    assert cube_bench.size_label(4096) == "4 KiB"
    assert cube_bench.size_label(10) == "10 B"


def _summary(p50: float) -> dict[str, float]:
    return {"p50": p50}


SCALE = [
    {"jobs": 1100, "fin_cube": _summary(5.0), "run_cube": _summary(6.0), "fin_engine": _summary(2.5),
     "run_engine": _summary(3.0)},
    {"jobs": 10, "fin_cube": _summary(4.0), "run_cube": _summary(5.0), "fin_engine": _summary(2.0),
     "run_engine": _summary(2.5)},
]
INPUT = [
    {"kind": "files", "files": 500, "bytes": 500 * 4096, "post_ms": _summary(150.0), "engine_ms": _summary(90.0),
     "disk_ms": _summary(20.0)},
    {"kind": "files", "files": 1, "bytes": 4096, "post_ms": _summary(100.0), "engine_ms": _summary(90.0),
     "unzip_ms": 0.5},
    {"kind": "big", "files": 1, "bytes": 16 * 1024 * 1024, "post_ms": _summary(200.0), "engine_ms": _summary(90.0),
     "unzip_ms": 40.0},
]


def test_series_are_sorted_by_x():
    s = plots.status_series(SCALE)
    assert s["jobs"] == [10.0, 1100.0]
    assert s["fin_cube"] == [4.0, 5.0]
    f = plots.input_series(INPUT, "files")
    assert f["x"] == [1.0, 500.0]
    assert f["engine_disk"] == [90.5, 110.0]  # a row of an older run gives its local unzip
    b = plots.input_series(INPUT, "big")
    assert b["x"] == [16.0]


def test_the_disk_floor_writes_every_member_of_the_archive(tmp_path):
    payload = cube_bench.files_zip(250)
    members = cube_bench._members(payload)
    cube_bench._write_files(members, str(tmp_path / "d"))
    with zipfile.ZipFile(io.BytesIO(payload)) as z:
        for info in z.infolist():
            assert (tmp_path / "d" / info.filename).read_bytes() == z.read(info)
    assert sum(len(files) for _, _, files in os.walk(tmp_path / "d")) == 250


def test_write_plots_makes_pngs_for_the_sections_present(tmp_path):
    pytest.importorskip("matplotlib")
    written = plots.write_plots({"scale": {"points": SCALE}, "input": {"rows": INPUT}}, str(tmp_path), "test")
    assert sorted(os.path.basename(p) for p in written) == sorted([plots.STATUS_PNG, plots.POST_PNG])
    for p in written:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert plots.write_plots({}, str(tmp_path)) == []
