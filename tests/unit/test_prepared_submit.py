"""A POST's job created while its upload arrives, started once the input is staged
(docs/adr/0023-create-while-receiving.md), on the fake scheduler with zipfile storage."""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest

from pfcon.adapters.compute.fake import FakeCompute
from pfcon.domain import errors as E
from pfcon.domain.model import ContainerJob

from ..conftest import API, Api, job_form, make_zip, tree

BOUNDARY = "pfcon-test-boundary"


@pytest.fixture(autouse=True)
def prepare_any_size(monkeypatch: Any) -> None:
    """The tests' bodies are small: prepare them all the same (the threshold has its own test)."""
    from pfcon.entrypoints.http import v5

    monkeypatch.setattr(v5, "PREPARE_MIN_BYTES", 0)
    monkeypatch.setattr(v5, "WHOLE_MAX_BYTES", 0)


def body(parts: list[tuple[str, bytes]]) -> bytes:
    """multipart/form-data with the parts in this order (a part named data_file is a file)."""
    out = b""
    for name, value in parts:
        filename = '; filename="data_file"' if name == "data_file" else ""
        out += f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"{filename}\r\n\r\n'.encode() + value + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def fields(jid: str, **overrides: Any) -> list[tuple[str, bytes]]:
    out = []
    for name, value in job_form(jid, **overrides).items():
        for item in value if isinstance(value, list) else [value]:
            out.append((name, str(item).encode()))
    return out


def post(api: Api, parts: list[tuple[str, bytes]]) -> Any:
    headers = {**api.headers, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    return api.client.post(f"{API}/jobs/", content=body(parts), headers=headers)


class RecordingCompute(FakeCompute):
    """Records the order of create, start and schedule, and whether the input was staged
    (its key-<jid>/incoming holds a file) when each was called."""

    def __init__(self, storebase: str) -> None:
        super().__init__()
        self.storebase = storebase
        self.calls: list[tuple[str, bool]] = []

    def _staged(self, job: ContainerJob) -> bool:
        incoming = os.path.join(self.storebase, f"key-{job.name}", "incoming")
        return os.path.isdir(incoming) and bool(os.listdir(incoming))

    def create(self, job: ContainerJob) -> None:
        self.calls.append(("create", self._staged(job)))
        super().create(job)

    def start(self, job: ContainerJob) -> Any:
        self.calls.append(("start", self._staged(job)))
        return super().start(job)


def test_the_job_is_created_before_its_input_is_staged_and_started_after(app_factory: Any, storebase: str) -> None:
    compute = RecordingCompute(storebase)
    api = app_factory(compute=compute)
    r = post(api, [*fields("chris-jid-1"), ("data_file", make_zip({"a/b.txt": "hello"}))])
    assert r.status_code == 201, r.text
    assert compute.calls == [("create", False), ("start", True)]
    assert r.json()["data"]["nfiles"] == 1
    assert tree(os.path.join(storebase, "key-chris-jid-1")) == ["incoming", "incoming/a", "incoming/a/b.txt", "outgoing"]
    job = compute.jobs["chris-jid-1"].job
    assert [m.source for m in job.mounts] == ["key-chris-jid-1/incoming", "key-chris-jid-1/outgoing"]


def test_fields_after_the_file_take_the_ordinary_path(app_factory: Any, storebase: str) -> None:
    compute = RecordingCompute(storebase)
    api = app_factory(compute=compute)
    everything = fields("chris-jid-1")
    image = [p for p in everything if p[0] == "image"]
    rest = [p for p in everything if p[0] != "image"]
    r = post(api, [*rest, ("data_file", make_zip({"a.txt": "a"})), *image])  # the job is incomplete at the file
    assert r.status_code == 201, r.text
    # schedule is create then start, after staging: no job existed before its input
    assert compute.calls == [("create", True), ("start", True)]
    assert compute.removed == []


def test_a_field_after_the_file_that_changes_the_job_replaces_the_prepared_one(app_factory: Any, storebase: str) -> None:
    compute = RecordingCompute(storebase)
    api = app_factory(compute=compute)
    r = post(api, [*fields("chris-jid-1"), ("data_file", make_zip({"a.txt": "a"})), ("args", b"--extra")])
    assert r.status_code == 201, r.text
    assert compute.removed == ["chris-jid-1"]  # the job prepared from the first fields went
    assert compute.calls == [("create", False), ("create", True), ("start", True)]
    assert "--extra" in compute.jobs["chris-jid-1"].job.command
    assert tree(os.path.join(storebase, "key-chris-jid-1")) == ["incoming", "incoming/a.txt", "outgoing"]


def test_a_refused_upload_leaves_no_prepared_job_and_no_data(app_factory: Any, storebase: str) -> None:
    compute = RecordingCompute(storebase)
    api = app_factory(compute=compute)
    r = post(api, [*fields("chris-jid-1"), ("data_file", b"PK\x03\x04 this is not a zip archive")])
    assert r.status_code == 400, r.text
    assert compute.calls == [("create", False)]  # it was prepared ...
    assert compute.jobs == {} and compute.removed == ["chris-jid-1"]  # ... and removed
    assert tree(storebase) == []


def test_a_job_that_cannot_be_prepared_is_refused_after_its_upload_and_leaves_nothing(
    app_factory: Any, storebase: str
) -> None:
    compute = RecordingCompute(storebase)
    compute.images = {"local/other:1"}
    api = app_factory(compute=compute)
    r = post(api, [*fields("chris-jid-1"), ("data_file", make_zip({"a.txt": "a"}))])
    assert r.status_code in (400, 503), r.text
    assert "image" in r.json()["message"]
    assert compute.calls == [] and compute.jobs == {}
    assert tree(storebase) == []


def test_a_start_that_fails_removes_the_job_and_its_data(app_factory: Any, storebase: str) -> None:
    compute = RecordingCompute(storebase)
    compute.fail_next_start = E.BackendUnavailable("Docker engine: down")
    api = app_factory(compute=compute)
    r = post(api, [*fields("chris-jid-1"), ("data_file", make_zip({"a.txt": "a"}))])
    assert r.status_code == 503, r.text
    assert compute.jobs == {}
    assert tree(storebase) == []


def test_a_create_that_fails_leaves_nothing(app_factory: Any, storebase: str) -> None:
    compute = RecordingCompute(storebase)
    compute.fail_next_schedule = E.InvalidJobSpec("rejected by the container engine: bad")
    api = app_factory(compute=compute)
    r = post(api, [*fields("chris-jid-1"), ("data_file", make_zip({"a.txt": "a"}))])
    assert r.status_code == 400, r.text
    assert compute.jobs == {}
    assert tree(storebase) == []


def test_a_taken_job_id_is_409_and_the_existing_job_is_untouched(app_factory: Any, storebase: str) -> None:
    compute = RecordingCompute(storebase)
    api = app_factory(compute=compute)
    assert post(api, [*fields("chris-jid-1"), ("data_file", make_zip({"a.txt": "a"}))]).status_code == 201
    r = post(api, [*fields("chris-jid-1"), ("data_file", make_zip({"b.txt": "b"}))])
    assert r.status_code == 409, r.text
    assert compute.removed == [] and list(compute.jobs) == ["chris-jid-1"]
    assert tree(storebase) == ["key-chris-jid-1", "key-chris-jid-1/incoming", "key-chris-jid-1/incoming/a.txt",
                               "key-chris-jid-1/outgoing"]  # fmt: skip


def test_a_job_whose_name_is_taken_on_the_scheduler_is_409_and_its_area_goes(app_factory: Any, storebase: str) -> None:
    """The id is free in storeBase but a job of that name exists on the scheduler."""
    compute = RecordingCompute(storebase)
    api = app_factory(compute=compute)
    assert post(api, [*fields("chris-jid-1"), ("data_file", make_zip({"a.txt": "a"}))]).status_code == 201
    import shutil

    shutil.rmtree(os.path.join(storebase, "key-chris-jid-1"))
    r = post(api, [*fields("chris-jid-1"), ("data_file", make_zip({"b.txt": "b"}))])
    assert r.status_code == 409, r.text
    assert compute.removed == []
    assert tree(storebase) == []


def test_the_prepared_job_is_removed_when_the_client_goes_away(app_factory: Any, storebase: str) -> None:
    """A body that ends early: the job prepared from its fields does not stay."""
    compute = RecordingCompute(storebase)
    api = app_factory(compute=compute)
    raw = body([*fields("chris-jid-1"), ("data_file", make_zip({"a.txt": "a" * 1000}))])
    cut = raw[: raw.index(b"PK") + 20]  # the fields and the start of the zip, then nothing
    headers = {**api.headers, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    r = api.client.post(f"{API}/jobs/", content=cut, headers=headers)
    assert r.status_code == 400, r.text  # the body ended inside the multipart stream
    assert compute.jobs == {}
    assert tree(storebase) == []


def test_concurrent_posts_of_one_job_id_create_one_job(app_factory: Any, storebase: str) -> None:
    compute = RecordingCompute(storebase)
    api = app_factory(compute=compute)
    codes: list[int] = []
    threads = [
        threading.Thread(
            target=lambda: codes.append(post(api, [*fields("chris-jid-1"), ("data_file", make_zip({"a": "a"}))]).status_code)
        )
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [201, 409, 409, 409]
    assert list(compute.jobs) == ["chris-jid-1"]
    assert sorted(os.listdir(storebase)) == ["key-chris-jid-1"]


def test_a_restart_after_a_crash_mid_upload_removes_the_prepared_job_and_its_area(tmp_path: Any) -> None:
    """A server killed while a prepared job's upload arrived leaves the job's area (its
    marker no longer held) and the created, never-started job: the next start removes both."""
    from pfcon.adapters.storage.local import StoreBase
    from pfcon.adapters.storage.zipfile import ZipFileStorage
    from pfcon.domain.model import ServerInfo
    from pfcon.domain.services import JobService

    from ..conftest import job_form as form_of
    from pfcon.entrypoints.http.forms import FormData, job_spec_from_form

    root = str(tmp_path / "sb")
    compute, storage = FakeCompute(), ZipFileStorage(StoreBase(root))
    jobs = JobService(compute, storage, ServerInfo("t", False, "zipfile", "docker", "host"))
    form = FormData()
    for name, value in form_of("chris-jid-1").items():
        for item in value if isinstance(value, list) else [value]:
            form.add(name, str(item))
    prepared = jobs.prepare(job_spec_from_form(form))
    assert list(compute.jobs) == ["chris-jid-1"] and not compute.jobs["chris-jid-1"].started
    prepared.area._marker, marker = -1, prepared.area._marker  # type: ignore[attr-defined]
    os.close(marker)  # the process that held the area is gone
    other = JobService(compute, ZipFileStorage(StoreBase(root)), ServerInfo("t", False, "zipfile", "docker", "host"))
    assert other.recover() == ["chris-jid-1"]
    assert compute.jobs == {} and os.listdir(root) == []


def test_only_a_body_large_enough_is_prepared(app_factory: Any, storebase: str, monkeypatch: Any) -> None:
    """A tiny body arrives at once and would gain nothing: the ordinary path (schedule
    after staging); from PREPARE_MIN_BYTES on, the job is created while it arrives."""
    from pfcon.entrypoints.http import v5

    monkeypatch.setattr(v5, "PREPARE_MIN_BYTES", 64 * 1024)
    monkeypatch.setattr(v5, "WHOLE_MAX_BYTES", 64 * 1024)
    compute = RecordingCompute(storebase)
    api = app_factory(compute=compute)
    assert post(api, [*fields("chris-jid-1"), ("data_file", make_zip({"a.txt": "a"}))]).status_code == 201
    assert compute.calls == [("create", True), ("start", True)]
    big = make_zip({"b.bin": os.urandom(100 * 1024)})
    assert post(api, [*fields("chris-jid-2"), ("data_file", big)]).status_code == 201
    assert compute.calls[2:] == [("create", False), ("start", True)]


def test_a_small_body_is_received_and_submitted_in_one_worker_hop(app_factory: Any, storebase: str, monkeypatch: Any) -> None:
    """ADR 26: a body under WHOLE_MAX_BYTES is received whole, then its upload received
    and the job created and started in one worker thread call; a larger one is received
    by one worker call while it arrives and the job started by another."""
    import threading

    import anyio.to_thread

    from pfcon.domain.services import JobService
    from pfcon.entrypoints.http import v5

    monkeypatch.setattr(v5, "PREPARE_MIN_BYTES", 1 << 30)  # not prepared: one path at a time
    monkeypatch.setattr(v5, "WHOLE_MAX_BYTES", 64 * 1024)
    hops: list[str] = []
    where: list[tuple[str, str]] = []
    run_sync = anyio.to_thread.run_sync

    async def counted(fn: Any, *args: Any, **kw: Any) -> Any:
        hop = f"hop-{len(hops)}"
        hops.append(hop)

        def marked(*a: Any) -> Any:
            threading.current_thread().__dict__["hop"] = hop
            return fn(*a)

        return await run_sync(marked, *args, **kw)

    def here() -> str:
        return str(threading.current_thread().__dict__.get("hop"))

    receive = JobService.receive_input

    def recorded_receive(self: JobService, read: Any) -> Any:
        where.append(("receive", here()))
        return receive(self, read)

    class HopCompute(RecordingCompute):
        def create(self, job: ContainerJob) -> None:
            where.append(("create", here()))
            super().create(job)

        def start(self, job: ContainerJob) -> Any:
            where.append(("start", here()))
            return super().start(job)

    monkeypatch.setattr(JobService, "receive_input", recorded_receive)
    api = app_factory(compute=HopCompute(storebase))
    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)

    assert post(api, [*fields("chris-jid-1"), ("data_file", make_zip({"a.txt": "a"}))]).status_code == 201
    assert where == [("receive", "hop-0"), ("create", "hop-0"), ("start", "hop-0")]
    assert hops == ["hop-0"]

    hops.clear()
    where.clear()
    big = make_zip({"b.bin": os.urandom(100 * 1024)})
    assert post(api, [*fields("chris-jid-2"), ("data_file", big)]).status_code == 201
    assert where == [("receive", "hop-0"), ("create", "hop-1"), ("start", "hop-1")]
    assert api.get("/jobs/chris-jid-2/").status_code == 200
