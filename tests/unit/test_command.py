"""The job command line (docs/wire-contract.md §6.1) and job spec validation (docs/wire-contract.md §4.4)."""

from __future__ import annotations

import dataclasses

import pytest

from pfcon.domain.command import build_command, localize_path_args
from pfcon.domain.model import (
    INPUT_DIR,
    MAX_CPU_MILLICORES,
    MAX_GPUS,
    MAX_MEMORY_MIB,
    MAX_WORKERS,
    MIN_MEMORY_MIB,
    JobSpec,
    PluginType,
    Resources,
    job_id_problem,
)
from pfcon.domain.services import spec_problems

IN, OUT = "/share/incoming", "/share/outgoing"


def test_container_dirs() -> None:
    assert INPUT_DIR == IN


# -- localize_path_args ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "flags", "expected"),
    [
        # pfcon tests/compute/test_cmd.py
        (["--something", "user/uploads/wow.txt"], ["--something"], ["--something", IN]),
        (
            ["-foo", "3", "-bar", "4", "-bam", "5"],
            ["-foo", "-bar"],
            ["-foo", IN, "-bar", IN, "-bam", "5"],
        ),
        # a flag as the last element gets the input dir appended
        (["--verbose", "--in"], ["--in"], ["--verbose", "--in", IN]),
        (["--in"], ["--in"], ["--in", IN]),
        # nothing to localize
        ([], ["--in"], []),
        (["--prefix", "lo"], [], ["--prefix", "lo"]),
        (["--prefix", "lo"], ["--in"], ["--prefix", "lo"]),
        # a flag's value is never itself treated as a flag (pfcon scans and skips)
        (["-a", "-b", "x"], ["-a", "-b"], ["-a", IN, "x"]),
        # repeated flag
        (["--in", "a", "--in", "b"], ["--in"], ["--in", IN, "--in", IN]),
        # only exact matches, not prefixes or '--flag=value'
        (["--input=dir", "--inp", "x"], ["--in"], ["--input=dir", "--inp", "x"]),
        # values equal to a flag name in value position of another flag
        (["--x", "--in", "--in", "v"], ["--in"], ["--x", "--in", IN, "v"]),
    ],
)
def test_localize_path_args(args: list[str], flags: list[str], expected: list[str]) -> None:
    assert localize_path_args(args, flags) == expected


def test_localize_path_args_custom_dir_and_no_mutation() -> None:
    args = ("--dir", "home/bob/uploads", "--n", "1")
    assert localize_path_args(args, ("--dir",), "/x") == ["--dir", "/x", "--n", "1"]
    assert args == ("--dir", "home/bob/uploads", "--n", "1")


# -- build_command -------------------------------------------------------------------


def spec(**overrides: object) -> JobSpec:
    base = JobSpec(
        jid="chris-jid-8",
        image="fnndsc/pl-simpledsapp:2.1.0",
        entrypoint=("python3", "/usr/local/bin/simpledsapp"),
        type=PluginType.DS,
        resources=Resources(number_of_workers=1, cpu_limit=1000, memory_limit=200, gpu_limit=0),
        args=("--prefix", "le"),
        args_path_flags=(),
        auid="cube",
        env=("CHRIS_JID=chris-jid-8",),
    )
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


def test_ds_command_gets_input_and_output_dirs() -> None:
    assert build_command(spec()) == (
        "python3", "/usr/local/bin/simpledsapp", "--prefix", "le", IN, OUT,
    )


@pytest.mark.parametrize("kind", [PluginType.FS, PluginType.TS])
def test_fs_and_ts_get_only_the_output_dir(kind: PluginType) -> None:
    assert build_command(spec(type=kind)) == (
        "python3", "/usr/local/bin/simpledsapp", "--prefix", "le", OUT,
    )


def test_command_without_args() -> None:
    assert build_command(spec(args=())) == ("python3", "/usr/local/bin/simpledsapp", IN, OUT)
    assert build_command(spec(args=(), type=PluginType.FS)) == (
        "python3", "/usr/local/bin/simpledsapp", OUT,
    )


def test_command_localizes_path_flags() -> None:
    s = spec(
        type=PluginType.FS,
        args=("--dir", "home/bob/uploads/a.txt", "--n", "3", "--also"),
        args_path_flags=("--dir", "--also"),
    )
    assert build_command(s) == (
        "python3", "/usr/local/bin/simpledsapp", "--dir", IN, "--n", "3", "--also", IN, OUT,
    )


def test_ds_with_path_flags_keeps_the_positional_input_dir() -> None:
    s = spec(args=("--in", "x"), args_path_flags=("--in",))
    assert build_command(s) == ("python3", "/usr/local/bin/simpledsapp", "--in", IN, IN, OUT)


def test_args_with_spaces_are_kept_as_single_elements() -> None:
    s = spec(entrypoint=("sh", "-c"), args=("echo hello world",), type=PluginType.TS)
    assert build_command(s) == ("sh", "-c", "echo hello world", OUT)


# -- job ids (docs/wire-contract.md §4.4) ----------------------------------------------


@pytest.mark.parametrize("jid", ["chris-jid-8", "a", "0", "job1", "a-b-c", "1-2", "x" * 63])
def test_valid_job_ids(jid: str) -> None:
    assert job_id_problem(jid) is None
    assert "jid" not in spec_problems(spec(jid=jid))


@pytest.mark.parametrize(
    "jid",
    [
        "",
        "../x",
        "..",
        "a/b",
        "/a",
        "UPPER",
        "chris-JID-8",
        "-x",
        "x-",
        "a_b",
        "a.b",
        "a b",
        " a",
        "a\x00b",
        "é",
        "x" * 64,
    ],
)
def test_invalid_job_ids(jid: str) -> None:
    assert job_id_problem(jid)
    assert "jid" in spec_problems(spec(jid=jid))


@pytest.mark.parametrize("jid", ["chris-jid-8\n", "a\n"])
def test_job_id_with_trailing_newline_is_invalid(jid: str) -> None:
    assert job_id_problem(jid) is not None


# -- spec_problems -----------------------------------------------------------------------


def test_valid_spec_has_no_problems() -> None:
    assert spec_problems(spec()) == {}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("number_of_workers", 1),
        ("number_of_workers", MAX_WORKERS),
        ("cpu_limit", 1),
        ("cpu_limit", MAX_CPU_MILLICORES),
        ("memory_limit", MIN_MEMORY_MIB),
        ("memory_limit", MAX_MEMORY_MIB),
        ("gpu_limit", 0),
        ("gpu_limit", MAX_GPUS),
    ],
)
def test_resource_bounds_are_inclusive(field: str, value: int) -> None:
    resources = dataclasses.replace(spec().resources, **{field: value})
    assert spec_problems(spec(resources=resources)) == {}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("number_of_workers", 0),
        ("number_of_workers", -1),
        ("number_of_workers", MAX_WORKERS + 1),
        ("cpu_limit", 0),
        ("cpu_limit", -1000),
        ("cpu_limit", MAX_CPU_MILLICORES + 1),
        ("memory_limit", MIN_MEMORY_MIB - 1),
        ("memory_limit", 0),
        ("memory_limit", MAX_MEMORY_MIB + 1),
        ("gpu_limit", -1),
        ("gpu_limit", MAX_GPUS + 1),
    ],
)
def test_resource_out_of_bounds(field: str, value: int) -> None:
    resources = dataclasses.replace(spec().resources, **{field: value})
    problems = spec_problems(spec(resources=resources))
    assert list(problems) == [field]
    assert str(value) in problems[field]


def test_resource_constants() -> None:
    assert MIN_MEMORY_MIB == 6
    assert (MAX_GPUS, MAX_WORKERS) == (64, 10_000)


@pytest.mark.parametrize("env", [("A=1",), ("A=",), ("A=b=c",), (), ("PATH=/bin", "X=y z")])
def test_valid_env(env: tuple[str, ...]) -> None:
    assert spec_problems(spec(env=env)) == {}


@pytest.mark.parametrize("env", [("A",), ("=1",), ("",), ("A=1", "B"), ("A=1", "=")])
def test_env_items_need_a_key_and_equals(env: tuple[str, ...]) -> None:
    assert list(spec_problems(spec(env=env))) == ["env"]


@pytest.mark.parametrize("image", ["", "   "])
def test_empty_image(image: str) -> None:
    assert list(spec_problems(spec(image=image))) == ["image"]


@pytest.mark.parametrize("entrypoint", [(), ("",), ("  ", "x")])
def test_empty_entrypoint(entrypoint: tuple[str, ...]) -> None:
    assert list(spec_problems(spec(entrypoint=entrypoint))) == ["entrypoint"]


def test_all_problems_are_reported_together() -> None:
    bad = spec(
        jid="../etc",
        image="",
        entrypoint=(),
        resources=Resources(number_of_workers=0, cpu_limit=0, memory_limit=1, gpu_limit=-1),
        env=("NOEQUALS",),
    )
    assert set(spec_problems(bad)) == {
        "jid",
        "image",
        "entrypoint",
        "number_of_workers",
        "cpu_limit",
        "memory_limit",
        "gpu_limit",
        "env",
    }
