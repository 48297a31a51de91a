"""Backend faults, crash leftovers and the upload spool (issue 7, points 5 and 6)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from typing import Any

import pytest

from pfcon.adapters.compute.docker import DockerCompute, DockerOptions
from pfcon.adapters.compute.fake import FakeCompute
from pfcon.adapters.storage.local import STAGING_MARKER, StoreBase
from pfcon.domain.errors import BackendUnavailable, JobAlreadyExists, ServerBusy, StorageFull
from pfcon.entrypoints.http.spool import UploadSpool

from ..conftest import Api, spooled_uploads, tree

# -- backends down: 503 naming the backend, readiness ------------------------------------


def test_ready_reports_each_backend(api: Api) -> None:
    r = api.client.get("/api/v1/ready/")
    assert r.status_code == 200
    body = r.json()
    assert body["ready"] is True
    assert {(b["kind"], b["name"], b["ok"]) for b in body["backends"]} == {
        ("compute", "docker", True),
        ("storage", "zipfile", True),
    }


@pytest.mark.usefixtures("body_path")
def test_compute_down_is_503_naming_it_and_recovers(app_factory: Callable[..., Api]) -> None:
    compute = FakeCompute()
    api = app_factory(compute)
    assert api.submit("chris-jid-1").status_code == 201
    compute.down = "Docker engine unavailable: cannot connect to the engine"

    for r in (api.get("/jobs/chris-jid-1/"), api.submit("chris-jid-2"), api.delete("/jobs/chris-jid-1/")):
        assert r.status_code == 503, r.text
        assert "Docker engine" in r.json()["message"]
    assert not os.path.exists(os.path.join(api.storebase, "key-chris-jid-2"))  # nothing half-staged

    ready = api.client.get("/api/v1/ready/")
    assert ready.status_code == 503
    assert "Docker engine" in ready.json()["message"]
    assert api.client.get("/api/v1/health/").json() == {"health": "OK"}  # pfcon's health/ is unchanged

    compute.down = None  # the engine is back: the same app answers again
    assert api.get("/jobs/chris-jid-1/").status_code == 200
    assert api.client.get("/api/v1/ready/").status_code == 200


def test_unreachable_docker_engine_is_backend_unavailable_naming_it() -> None:
    import docker

    client = docker.DockerClient(base_url="unix:///nonexistent/docker.sock", version="1.41", timeout=2)
    compute = DockerCompute(client, DockerOptions(storebase="/tmp"))
    for call in (compute.ping, lambda: compute.state("chris-jid-1", 10), lambda: compute.remove("chris-jid-1")):
        with pytest.raises(BackendUnavailable, match="Docker engine"):
            call()
    podman = DockerCompute(client, DockerOptions(storebase="/tmp", engine_name="Podman service"))
    with pytest.raises(BackendUnavailable, match="Podman service"):
        podman.ping()


# -- disk full: 507, nothing left behind ----------------------------------------------------


@pytest.mark.usefixtures("body_path")
def test_no_room_for_an_upload_is_507_and_leaves_nothing(app_factory: Callable[..., Api], tmp_path: Any) -> None:
    api = app_factory(STOREBASE_RESERVE_BYTES=str(2**62))  # more than any disk has free
    r = api.submit("chris-jid-1")
    assert r.status_code == 507, r.text
    assert "STOREBASE_RESERVE_BYTES" in r.json()["message"]
    assert tree(api.storebase) == []
    assert spooled_uploads(str(tmp_path / "uploads")) == []


@pytest.mark.usefixtures("body_path")
def test_enospc_while_staging_is_507_and_rolled_back(app_factory: Callable[..., Api], monkeypatch: Any) -> None:
    import errno

    from pfcon.adapters.storage import zipstream

    def full(*_: Any, **__: Any) -> None:  # the disk fills while a member is written
        raise OSError(errno.ENOSPC, "No space left on device")

    api = app_factory()
    monkeypatch.setattr(zipstream, "_write_all", full)
    r = api.submit("chris-jid-1")
    assert r.status_code == 507, r.text
    assert "space" in r.json()["message"]
    assert tree(api.storebase) == []


# -- the upload spool --------------------------------------------------------------------


def test_spool_sweeps_dirs_of_dead_processes_but_not_live_ones(tmp_path: Any) -> None:
    root = str(tmp_path / "spool")
    dead = os.path.join(root, "proc-999999-dead")
    os.makedirs(dead)
    open(os.path.join(dead, ".lock"), "w").close()
    open(os.path.join(dead, "upload-x.zip"), "wb").write(b"partial upload")

    live = UploadSpool(root, max_uploads=4, reserve_bytes=0)
    live.start()
    other = UploadSpool(root, max_uploads=4, reserve_bytes=0)
    other.start()  # sweeps: the dead dir goes, the live one stays
    assert not os.path.exists(dead)
    assert live.dir is not None and os.path.isdir(live.dir)
    live.stop()
    assert other.sweep() == []
    other.stop()
    assert os.listdir(root) == []


def test_spool_bounds_uploads_in_flight(tmp_path: Any) -> None:
    spool = UploadSpool(str(tmp_path), max_uploads=2, reserve_bytes=0)
    with spool.slot(), spool.slot():
        with pytest.raises(ServerBusy, match="MAX_UPLOADS"):
            with spool.slot():
                pass
    with spool.slot():
        assert spool.in_flight == 1
    assert spool.in_flight == 0


def test_spool_keeps_its_reserve_free(tmp_path: Any) -> None:
    spool = UploadSpool(str(tmp_path), max_uploads=2, reserve_bytes=2**62)
    spool.start()
    with pytest.raises(StorageFull):
        spool.check_room(1)
    spool.stop()


# -- half-staged job data after a crash --------------------------------------------------------


def crashed_staging(storebase: StoreBase, jid: str) -> None:
    """What a server killed mid-extraction leaves: key-<jid>/ with an unheld marker."""
    os.makedirs(storebase.incoming(jid))
    open(os.path.join(storebase.incoming(jid), "half.dat"), "wb").write(b"x" * 10)
    open(os.path.join(storebase.key_dir(jid), STAGING_MARKER), "w").close()


def test_staging_marker_exists_only_while_staging(tmp_path: Any) -> None:
    sb = StoreBase(str(tmp_path))
    with sb.claimed("chris-jid-1"):
        assert os.path.exists(os.path.join(sb.key_dir("chris-jid-1"), STAGING_MARKER))
        assert not sb.unfinished("chris-jid-1")  # held by this staging
        with pytest.raises(JobAlreadyExists):
            sb.claim("chris-jid-1")  # a concurrent duplicate is refused, not swept
    assert sorted(os.listdir(sb.key_dir("chris-jid-1"))) == ["incoming", "outgoing"]
    assert sb.recover() == []


def test_a_staging_completing_while_a_duplicate_checks_its_marker_is_not_taken_for_a_crash(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A duplicate POST opens the marker while the first staging holds it; that staging then
    completes (unlinks its marker, lets the lock go) before the duplicate tries the lock.
    The lock is free, but the marker is no longer the job's: the job is complete, not stale."""
    sb = StoreBase(str(tmp_path))
    staging = sb.claimed("chris-jid-1")
    staging.__enter__()
    real_flock = fcntl.flock
    completed: list[bool] = []

    def flock_after_the_staging_completes(fd: int, op: int) -> None:
        if op & fcntl.LOCK_NB and not completed:
            completed.append(True)
            staging.__exit__(None, None, None)  # the first POST's staging is complete
        real_flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock_after_the_staging_completes)
    with pytest.raises(JobAlreadyExists):
        sb.claim("chris-jid-1")
    assert completed
    assert sorted(os.listdir(sb.key_dir("chris-jid-1"))) == ["incoming", "outgoing"]  # untouched
    assert sb.recover() == [] and sb.exists("chris-jid-1")


def test_a_crashed_staging_is_removed_by_one_duplicate_only(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two POSTs of a job id whose staging crashed: while the first removes the stale
    directory and claims the id anew, the second, which had opened the stale marker too,
    never removes what the first made."""
    sb = StoreBase(str(tmp_path))
    crashed_staging(sb, "chris-jid-1")
    real_flock = fcntl.flock
    inner: list[str] = []

    def flock_while_another_claims(fd: int, op: int) -> None:
        if op & fcntl.LOCK_NB and not inner:
            inner.append("claiming")
            sb.claim("chris-jid-1")  # the other POST wins the stale id meanwhile
            os.mkdir(sb.incoming("chris-jid-1"))
        real_flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock_while_another_claims)
    with pytest.raises(JobAlreadyExists):
        sb.claim("chris-jid-1")
    assert inner and os.listdir(sb.key_dir("chris-jid-1")) == ["incoming"]
    assert os.listdir(sb.incoming("chris-jid-1")) == []  # the crashed data is gone, the new claim stays


def test_recover_sweeps_crashed_staging_only(tmp_path: Any) -> None:
    sb = StoreBase(str(tmp_path))
    crashed_staging(sb, "chris-jid-1")
    with sb.claimed("chris-jid-2"):
        pass  # complete
    os.makedirs(sb.key_dir("chris-jid-3"))  # written by pfcon or an older version: left alone
    assert sb.recover() == ["chris-jid-1"]
    assert sorted(os.listdir(str(tmp_path))) == ["key-chris-jid-2", "key-chris-jid-3"]


def test_resubmitting_after_a_crash_mid_staging_works(tmp_path: Any) -> None:
    sb = StoreBase(str(tmp_path))
    crashed_staging(sb, "chris-jid-1")
    with sb.claimed("chris-jid-1"):
        assert os.listdir(sb.incoming("chris-jid-1")) == []  # the half-extracted data is gone


def test_server_start_sweeps_crashed_staging(app_factory: Callable[..., Api], storebase: str) -> None:
    crashed_staging(StoreBase(storebase), "chris-jid-1")
    api = app_factory()
    assert tree(api.storebase) == []
    assert api.submit("chris-jid-1").status_code == 201


def test_a_held_marker_is_never_swept(tmp_path: Any) -> None:
    sb = StoreBase(str(tmp_path))
    crashed_staging(sb, "chris-jid-1")
    fd = os.open(os.path.join(sb.key_dir("chris-jid-1"), STAGING_MARKER), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another server is staging it right now
        assert sb.recover() == []
    finally:
        os.close(fd)


# -- bodies capped per route -----------------------------------------------------------------


def test_an_oversized_json_body_is_413(api: Api) -> None:
    r = api.client.post(
        "/api/v1/auth-token/",
        content=b'{"pfcon_user": "' + b"u" * (2 * 1024 * 1024) + b'"}',
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 413
    assert "message" in r.json()


def test_json_body_cap_is_configurable(app_factory: Callable[..., Api]) -> None:
    api = app_factory(MAX_BODY_BYTES="8192")
    body = b'{"pfcon_user": "pfcon", "pfcon_password": "pfcon1234", "pad": "' + b"x" * 9000 + b'"}'
    r = api.client.post("/api/v1/auth-token/", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 413


def test_an_oversized_urlencoded_form_is_413(api: Api) -> None:
    r = api.post(
        "/jobs/",
        content=b"jid=chris-jid-1&pad=" + b"x" * (17 * 1024 * 1024),
        headers={**api.headers, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 413
    assert tree(api.storebase) == []


@pytest.mark.usefixtures("body_path")
def test_an_oversized_upload_is_413_and_leaves_nothing(app_factory: Callable[..., Api], tmp_path: Any) -> None:
    api = app_factory(ZIP_MAX_UPLOAD_BYTES="1000")
    r = api.submit("chris-jid-1", zip_bytes=b"PK" + b"\0" * 5000)
    assert r.status_code == 413
    assert "1000" in r.json()["message"]
    assert tree(api.storebase) == []
    assert spooled_uploads(str(tmp_path / "uploads")) == []


class _BodyRequest:
    """What read_job_form reads of a request: its content type and ASGI body messages."""

    def __init__(self, body: bytes, boundary: str, chunk: int = 1 << 20) -> None:
        self.content_type = ("multipart/form-data", {"boundary": boundary})
        self._messages = [body[i : i + chunk] for i in range(0, len(body), chunk)] or [b""]

    async def receive(self) -> dict[str, Any]:
        chunk = self._messages.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(self._messages)}


def _multipart(boundary: str, payload: bytes) -> bytes:
    return (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="jid"\r\n\r\nchris-jid-1\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="data_file"; filename="data_file"\r\n'
            "Content-Type: application/zip\r\n\r\n"
        ).encode()
        + payload
        + f"\r\n--{boundary}--\r\n".encode()
    )


def test_an_upload_slot_is_held_only_while_its_body_arrives(tmp_path: Any) -> None:
    """MAX_UPLOADS bounds bodies being received: a body received whole gives its slot
    back although its extraction still waits (here: for a gate), so that a burst of tiny
    submissions is never refused while their work is queued behind worker threads."""
    import threading

    import anyio
    import anyio.to_thread

    from pfcon.entrypoints.http.common import Uploads
    from pfcon.entrypoints.http.v5 import read_job_form

    spool = UploadSpool(str(tmp_path), max_uploads=1, reserve_bytes=0)
    spool.start()
    gate = threading.Event()
    entered: list[int] = []

    class Jobs:
        receives_input = True

        def receive_input(self, read: Callable[[int], bytes]) -> bytes:
            data = bytearray()
            while chunk := read(65536):
                data.extend(chunk)
            entered.append(len(data))
            gate.wait(10)
            return bytes(data)

    uploads = Uploads(spool=spool, max_bytes=1 << 30)
    forms: list[Any] = []

    async def one() -> None:
        forms.append(await read_job_form(_BodyRequest(_multipart("b0", b"zip"), "b0"), uploads, Jobs()))  # type: ignore[arg-type]

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(one)
            while not entered:  # the first body is in, its worker waits at the gate
                await anyio.sleep(0.01)
            assert spool.in_flight == 0
            tg.start_soon(one)  # would be 503 (MAX_UPLOADS=1) if the first still held its slot
            await anyio.sleep(0.05)  # the second takes its slot (and gives it back) meanwhile
            assert spool.in_flight == 0 and len(entered) == 1
            gate.set()

    anyio.run(main)
    assert [f.received for f in forms] == [b"zip", b"zip"]
    assert spool.in_flight == 0

    # while a body is still arriving, its slot is held: the next is refused
    async def held() -> None:
        with spool.slot() as slot:
            with pytest.raises(ServerBusy, match="MAX_UPLOADS"):
                await read_job_form(_BodyRequest(_multipart("b1", b"zip"), "b1"), uploads, Jobs())  # type: ignore[arg-type]
            slot.release()
            slot.release()  # once only
            assert spool.in_flight == 0

    anyio.run(held)
    assert spool.in_flight == 0
    spool.stop()
