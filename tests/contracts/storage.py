"""The storage-port contract: every storage adapter (fake or real) passes these tests.

A subclass provides a ``harness`` fixture that knows how to put input where the
adapter expects it (a zip upload, a shared directory, Swift objects, a dict), how the
plugin would write outputs, and how to read outputs back.
"""

from __future__ import annotations

import io
import os
import uuid
import zipfile
from typing import Any, Protocol

import pytest

from pfcon.domain.errors import (
    InvalidInputData,
    InvalidJobSpec,
    JobAlreadyExists,
    JobNotFound,
    OutputNotFound,
)
from pfcon.domain.model import INPUT_DIR, OUTPUT_DIR, OutputListing, StagedData
from pfcon.domain.ports import StagingRequest, StoragePort, ZipStream

LINKED_FILES = {
    "test.txt": b"t",
    "home_bob/PIPELINES_bob/pipeline.yml": b"pipeline: yes\n",
}


class Harness(Protocol):
    storage: Any
    supports_links: bool

    def seed(self, files: dict[str, bytes]) -> StagingRequest: ...

    def seed_links(self) -> tuple[StagingRequest, dict[str, bytes]]:
        """The worked example of docs/wire-contract.md §10.4; returns the request and what the plugin must see."""

    def seed_escaping_link(self) -> StagingRequest: ...

    def without_input(self) -> StagingRequest: ...

    def staged(self, jid: str, data: StagedData) -> dict[str, bytes]: ...

    def write_output(self, jid: str, data: StagedData, rel: str, content: bytes) -> None: ...

    def output_path(self, data: StagedData) -> str | None:
        """The job_output_path to ask for, or None when outputs come back as a zip."""

    def fetch_outputs(self, listing: OutputListing) -> dict[str, bytes]: ...

    def shared_state(self) -> Any:
        """A snapshot of what CUBE owns (shared dirs/objects), to check it is never modified."""


def jid() -> str:
    return f"st-{uuid.uuid4().hex[:10]}"


def read_outputs(harness: Harness, jid_: str, data: StagedData) -> dict[str, bytes]:
    out = harness.storage.outputs(jid_, harness.output_path(data))
    if isinstance(out, ZipStream):
        with zipfile.ZipFile(io.BytesIO(b"".join(out.chunks))) as archive:
            return {name: archive.read(name) for name in archive.namelist()}
    assert isinstance(out, OutputListing)
    return harness.fetch_outputs(out)


class StorageContract:
    def test_is_a_storage_port(self, harness: Harness) -> None:
        assert isinstance(harness.storage, StoragePort)

    def test_stage_makes_the_input_visible(self, harness: Harness) -> None:
        files = {"a.txt": b"A", "sub/dir/b.bin": bytes(range(256)), "ünï code.txt": "é".encode()}
        request = harness.seed(files)
        harness.storage.validate("x", request)
        job = jid()
        data = harness.storage.stage(job, request)
        assert data.nfiles == 3
        assert harness.staged(job, data) == files
        assert harness.storage.exists(job)
        targets = {m.target: m.read_only for m in data.mounts}
        assert targets == {INPUT_DIR: True, OUTPUT_DIR: False}

    def test_a_second_stage_of_the_same_job_is_refused(self, harness: Harness) -> None:
        job = jid()
        data = harness.storage.stage(job, harness.seed({"first.txt": b"1"}))
        with pytest.raises(JobAlreadyExists):
            harness.storage.stage(job, harness.seed({"second.txt": b"2"}))
        assert harness.staged(job, data) == {"first.txt": b"1"}

    def test_outputs_come_back_without_link_files(self, harness: Harness) -> None:
        job = jid()
        data = harness.storage.stage(job, harness.seed({"in.txt": b"i"}))
        harness.write_output(job, data, "result.txt", b"r")
        harness.write_output(job, data, "deep/er/x.bin", b"\x00\xff")
        harness.write_output(job, data, "evil.chrislink", b"home/victim")
        assert read_outputs(harness, job, data) == {"result.txt": b"r", "deep/er/x.bin": b"\x00\xff"}
        # asking twice gives the same answer (and, for Swift, uploads nothing twice)
        assert read_outputs(harness, job, data) == {"result.txt": b"r", "deep/er/x.bin": b"\x00\xff"}

    def test_delete_removes_the_job_data_but_nothing_shared(self, harness: Harness) -> None:
        job = jid()
        data = harness.storage.stage(job, harness.seed({"keep.txt": b"k"}))
        harness.write_output(job, data, "out.txt", b"o")
        before = harness.shared_state()
        harness.storage.delete(job)
        assert not harness.storage.exists(job)
        assert harness.shared_state() == before

    def test_outputs_of_unknown_things(self, harness: Harness) -> None:
        job = jid()
        data = harness.storage.stage(job, harness.seed({"x.txt": b"x"}))
        if harness.output_path(data) is None:
            with pytest.raises(JobNotFound):
                harness.storage.outputs(jid(), None)
        else:
            with pytest.raises((OutputNotFound, JobNotFound)):
                harness.storage.outputs(jid(), "home/nobody/never/made")

    def test_missing_input_is_refused_without_side_effects(self, harness: Harness) -> None:
        job = jid()
        with pytest.raises((InvalidJobSpec, InvalidInputData)):
            harness.storage.validate(job, harness.without_input())
        with pytest.raises((InvalidJobSpec, InvalidInputData)):
            harness.storage.stage(job, harness.without_input())
        assert not harness.storage.exists(job)

    def test_chris_links_are_expanded(self, harness: Harness) -> None:
        # (a mode without link support shows the link files verbatim: the harness says what)
        request, expected = harness.seed_links()
        job = jid()
        data = harness.storage.stage(job, request)
        assert harness.staged(job, data) == expected
        assert data.nfiles == len(expected)

    def test_a_link_escaping_the_storage_is_refused(self, harness: Harness) -> None:
        job = jid()
        request = harness.seed_escaping_link()
        before = harness.shared_state()
        if harness.supports_links:
            with pytest.raises(InvalidInputData):
                harness.storage.stage(job, request)
            assert not harness.storage.exists(job)
        else:  # links are not followed at all: the plugin sees the link file only
            data = harness.storage.stage(job, request)
            assert list(harness.staged(job, data)) == ["a.chrislink"]
        assert harness.shared_state() == before


# -- helpers for harnesses backed by a local storeBase ------------------------------


def read_dir(path: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            full = os.path.join(dirpath, name)
            out[os.path.relpath(full, path).replace(os.sep, "/")] = open(full, "rb").read()
    return out


def write_files(root: str, files: dict[str, bytes]) -> None:
    for rel, content in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(content)


def mount_source(storebase: str, data: StagedData, target: str) -> str:
    source = next(m.source for m in data.mounts if m.target == target)
    return os.path.join(storebase, source)
