"""Fault injection against the real server (``pfcon serve`` in a subprocess), 127.0.0.1 only.

Hostile clients (oversized heads, slowloris, stalled bodies, disconnects, too many
uploads), SIGKILL of the server mid-upload and mid-extraction, storeBase and the upload
spool on a small tmpfs filled for real, 100 concurrent submissions, Swift stopped
mid-staging, and the Docker engine stopped under a running server. Every wait has a
deadline and every request a timeout. What each test does and the figures of a real
run are in docs/reliability.md; set PFCON_FAULTS_FIGURES=<file> to get this run's
figures as JSON.

Run: ``.venv/bin/python -m pytest -m faults tests/integration -q`` (``make test`` runs it).
The Docker engine test is last: it stops the engine for a few seconds.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import threading
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker.errors
import pytest
import requests

from .conftest import TEST_IMAGE, _require
from .faults_helpers import (
    STAGING_MARKER,
    Client,
    RawConn,
    area_bytes,
    area_files,
    big_zip,
    chunked,
    count_files,
    fill,
    free_bytes,
    jid,
    job_fields,
    key_dirs,
    log_events,
    make_zip,
    multipart_head,
    multipart_tail,
    port_of,
    rss_kib,
    script,
    sigkill,
    spool_dirs,
    spool_files,
    tmpfs,
    upload_areas,
    upload_head,
    wait_for,
)
from .server import Server, remove_job_containers, start_server

pytestmark = [pytest.mark.faults, pytest.mark.docker]

MiB = 1024 * 1024
HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 3.0
SLACK = 5.0  # generous: the machine may be busy with other tests
RSS_BOUND_KIB = 32 * 1024

FIGURES: dict[str, Any] = {}


def record(name: str, value: Any) -> None:
    FIGURES[name] = round(value, 3) if isinstance(value, float) else value


@pytest.fixture(scope="module", autouse=True)
def figures(docker_client: Any) -> Iterator[None]:
    yield
    for _ in range(5):  # a container of another test may vanish between list and inspect
        try:
            remove_job_containers(docker_client, "flt-")
            break
        except docker.errors.NotFound:
            time.sleep(0.5)
    path = os.environ.get("PFCON_FAULTS_FIGURES")
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(FIGURES, f, indent=2, sort_keys=True)


def _start(tmp: Any, name: str, storebase: str | None = None, **env: str) -> Server:
    base = tmp / name
    base.mkdir(exist_ok=True)
    if storebase is None:
        storebase = str(base / "storeBase")
        os.makedirs(storebase, exist_ok=True)
    env.setdefault("UPLOAD_DIR", str(base / "uploads"))
    return start_server(storebase, str(base / f"server-{time.monotonic_ns()}.log"), **env)


def _no_errors_logged(server: Server) -> None:
    """No traceback, no unhandled error and no 500 in the server's log."""
    assert "Traceback" not in server.logs(), server.logs()[-4000:]
    events = log_events(server)
    assert not [e for e in events if e.get("event") == "unhandled_error"], server.logs()[-4000:]
    assert not [e for e in events if e.get("event") == "request" and e.get("status") == 500], server.logs()[-4000:]


# -- hostile clients ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile(docker_client: Any, tmp_path_factory: Any) -> Iterator[Server]:
    """A server with short client timeouts and two upload slots."""
    server = _start(
        tmp_path_factory.mktemp("hostile"),
        "hostile",
        HEADER_TIMEOUT=str(HEADER_TIMEOUT),
        BODY_TIMEOUT=str(BODY_TIMEOUT),
        MAX_UPLOADS="2",
    )
    yield server
    server.stop()


def _oversized_head(port: int, size: int, terminate: bool = True) -> tuple[int | None, dict[str, Any] | None, int]:
    """Send a GET whose one header value is ``size`` bytes; (status, JSON body, bytes sent)."""
    conn = RawConn(port, timeout=10)
    try:
        conn.send(b"GET /api/v1/health/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
        piece = b"a" * (64 * 1024)
        for _ in range(size // len(piece)):
            if not conn.send(piece):
                break
        if terminate:
            conn.send(b"\r\n\r\n")
        r = conn.response(timeout=10)
        return r.status, (r.json() if r.status else None), conn.sent
    finally:
        conn.close()


def test_oversized_headers_are_431_with_bounded_memory(hostile: Server) -> None:
    port, pid = port_of(hostile), hostile.process.pid
    assert requests.get(f"{hostile.api}health/", timeout=10).status_code == 200
    before = rss_kib(pid)
    for size in (1 * MiB, 64 * MiB):
        status, body, sent = _oversized_head(port, size)
        assert status == 431, (size, status, body)
        assert body is not None and "exceed" in body["message"]
        record(f"headers.{size // MiB}MiB.bytes_sent_before_refusal", sent)
        if size == 64 * MiB:  # refused long before the client could push it all
            assert sent < size, "the server read the whole head instead of refusing it early"
    after_single = rss_kib(pid)

    # 8 connections at once, each an unfinished 32 MiB head
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: _oversized_head(port, 32 * MiB, terminate=False), range(8)))
    after_concurrent = rss_kib(pid)
    assert [r[0] for r in results] == [431] * 8, results
    record("headers.rss_before_kib", before)
    record("headers.rss_growth_1_and_64MiB_kib", after_single - before)
    record("headers.rss_growth_8x32MiB_concurrent_kib", after_concurrent - before)
    peak = rss_kib(pid, "VmHWM")
    record("headers.peak_rss_over_before_kib", peak - before)
    assert after_single - before < RSS_BOUND_KIB
    assert after_concurrent - before < RSS_BOUND_KIB
    assert peak - before < RSS_BOUND_KIB  # not even for a moment
    assert requests.get(f"{hostile.api}health/", timeout=10).status_code == 200
    _no_errors_logged(hostile)


@pytest.mark.parametrize("kib", [80, 120])
def test_head_just_over_the_limit_in_one_write_is_431(hostile: Server, kib: int) -> None:
    conn = RawConn(port_of(hostile), timeout=10)
    try:
        conn.sock.sendall(b"GET /api/v1/health/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * (kib * 1024) + b"\r\n\r\n")
        r = conn.response(timeout=10)
    finally:
        conn.close()
    assert r.status == 431, (r.status, r.body[:200])


def test_slowloris_head_gets_408(hostile: Server) -> None:
    conn = RawConn(port_of(hostile), timeout=10)
    started = time.monotonic()
    try:
        conn.send(b"GET /api/v1/health/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        deadline = started + HEADER_TIMEOUT + SLACK
        while time.monotonic() < deadline and not conn.readable(0.3):
            if not conn.send(b"z"):  # one byte every 0.3 s: the head never completes
                break
        r = conn.response(timeout=max(0.1, deadline - time.monotonic()))
    finally:
        conn.close()
    elapsed = time.monotonic() - started
    record("slowloris.seconds_to_408", elapsed)
    assert r.status == 408, r
    assert "headers" in r.json()["message"]
    assert elapsed < HEADER_TIMEOUT + SLACK
    assert any(e.get("event") == "client_timeout" and e.get("phase") == "headers" for e in log_events(hostile))


def _left_nothing(server: Server, job: str, docker_client: Any) -> None:
    """No upload area, no ``key-<jid>``, no spool file and no container for ``job``, once
    the server has cleaned up: the 408 or the closed connection comes first, and the job
    prepared meanwhile (ADR 23) is removed on the request's way out, after its upload area."""
    wait_for(lambda: not upload_areas(server.storebase), 5, "the upload area to be removed")
    wait_for(lambda: f"key-{job}" not in key_dirs(server.storebase), 5, f"key-{job} to be removed")
    wait_for(
        lambda: not docker_client.containers.list(all=True, filters={"name": f"^{job}$"}),
        5,
        f"the container {job} to be removed",
    )
    assert spool_files(server.env["UPLOAD_DIR"]) == []


def test_stalled_body_gets_408_and_leaves_nothing(hostile: Server, docker_client: Any) -> None:
    client = Client(hostile)
    job = jid()
    archive = big_zip(8 * MiB)
    head = multipart_head(job_fields(job, TEST_IMAGE))
    conn = RawConn(port_of(hostile), timeout=10)
    try:
        conn.send(upload_head(hostile, client.token, len(head) + len(archive) + len(multipart_tail())))
        # a local header and the first MiB of its member, then nothing more
        assert conn.send(head + archive[:MiB])
        started = time.monotonic()
        wait_for(lambda: area_bytes(hostile.storebase) > 0, 5, "the member being extracted into a key-.upload-* area")
        r = conn.response(timeout=BODY_TIMEOUT + SLACK)
        elapsed = time.monotonic() - started
    finally:
        conn.close()
    record("slow_body.seconds_to_408", elapsed)
    assert r.status in (408, None), r  # 408 then close, or a close
    if r.status is not None:
        assert r.status == 408 and "stalled" in r.json()["message"]
    assert elapsed < BODY_TIMEOUT + SLACK
    _left_nothing(hostile, job, docker_client)
    assert any(e.get("event") == "client_timeout" and e.get("phase") == "body" for e in log_events(hostile))
    _no_errors_logged(hostile)


def test_client_disconnect_mid_upload_is_logged_and_cleaned(hostile: Server, docker_client: Any) -> None:
    client = Client(hostile)
    job = jid()
    archive = big_zip(32 * MiB)
    head = multipart_head(job_fields(job, TEST_IMAGE))
    conn = RawConn(port_of(hostile), timeout=10)
    try:
        conn.send(upload_head(hostile, client.token, len(head) + len(archive) + len(multipart_tail())))
        conn.send(head)
        assert conn.send_chunks(chunked(archive[: 8 * MiB], MiB), pause=0.02)
        # at least a MiB of the member is on disk: the upload is really under way
        wait_for(lambda: area_bytes(hostile.storebase) >= MiB, 10, "the member to reach the upload area")
        _reserved_and_created(hostile, job, docker_client)
    finally:
        conn.close()  # gone mid-upload
    wait_for(
        lambda: [e for e in log_events(hostile) if e.get("event") == "client_disconnected"],
        10,
        "the server to log client_disconnected",
    )
    events = [e for e in log_events(hostile) if e.get("event") == "client_disconnected"]
    assert all(e["level"] == "info" for e in events), events
    _left_nothing(hostile, job, docker_client)
    _no_errors_logged(hostile)
    assert requests.get(f"{hostile.api}health/", timeout=10).status_code == 200


def test_uploads_in_flight_are_bounded(hostile: Server, docker_client: Any) -> None:
    """MAX_UPLOADS=2: a third upload while two are being received is 503; then room again."""
    client = Client(hostile)
    archive = big_zip(16 * MiB)
    held: list[RawConn] = []
    offsets: list[int] = []
    stop = threading.Event()

    def trickle() -> None:  # keeps the held uploads alive (BODY_TIMEOUT): the next KiB of the member
        while not stop.wait(0.3):
            for i, c in enumerate(held):
                if c.send(archive[offsets[i] : offsets[i] + 1024]):
                    offsets[i] += 1024

    ticker = threading.Thread(target=trickle, daemon=True)
    refused = jid()
    try:
        for _ in range(2):
            head = multipart_head(job_fields(jid(), TEST_IMAGE))
            c = RawConn(port_of(hostile), timeout=10)
            c.send(upload_head(hostile, client.token, len(head) + len(archive) + len(multipart_tail())))
            c.send(head + archive[: 64 * 1024])
            held.append(c)
            offsets.append(64 * 1024)
        wait_for(lambda: len(upload_areas(hostile.storebase)) == 2, 10, "two uploads in flight")
        wait_for(lambda: area_bytes(hostile.storebase) > 0, 10, "the held uploads' members to reach their areas")
        areas = upload_areas(hostile.storebase)
        ticker.start()
        r = client.submit(job_fields(refused, TEST_IMAGE), make_zip({"x.txt": b"x"}), timeout=30)
        assert r.status_code == 503, r.text
        assert "MAX_UPLOADS" in r.json()["message"]
        # the refused upload left nothing; the two held ones are still being received
        assert upload_areas(hostile.storebase) == areas
        assert f"key-{refused}" not in key_dirs(hostile.storebase)
        assert not any(c.broken for c in held)
    finally:
        stop.set()
        if ticker.is_alive():
            ticker.join(5)
        for c in held:
            c.close()
    wait_for(lambda: not upload_areas(hostile.storebase), 10, "the held uploads to be dropped")
    assert spool_files(hostile.env["UPLOAD_DIR"]) == []
    assert not docker_client.containers.list(all=True, filters={"name": f"^{refused}$"})
    job = jid()
    # the slots are released as the server notices the disconnects
    r = wait_for(
        lambda: (resp := client.submit(job_fields(job, TEST_IMAGE), make_zip({"x.txt": b"x"}))).status_code != 503
        and resp,
        10,
        "an upload slot",
        interval=0.2,
    )
    assert r.status_code == 201, r.text
    client.wait_terminal(job)
    assert client.delete(job).status_code == 204
    _no_errors_logged(hostile)


# -- SIGKILL and restart ------------------------------------------------------------------


def _reserved_and_created(server: Server, job: str, docker_client: Any) -> None:
    """While the upload arrives: the job's area is reserved (empty, marked half-staged)
    and its container created, never started (ADR 23)."""
    wait_for(lambda: docker_client.containers.list(all=True, filters={"name": f"^{job}$"}), 10, "the job's container")
    (container,) = docker_client.containers.list(all=True, filters={"name": f"^{job}$"})
    assert container.status == "created"
    area = os.path.join(server.storebase, f"key-{job}")
    assert sorted(os.listdir(area)) == sorted([STAGING_MARKER, "incoming", "outgoing"])
    assert os.listdir(os.path.join(area, "incoming")) == []


def _dead_areas(server: Server, job: str, docker_client: Any) -> list[str]:
    """After a SIGKILL mid-upload: the partial upload area is still there, its staging
    marker left behind (nobody holds it now). The job's preparation ran beside the upload
    (ADR 23), so the kill may have come before, during or after it: whatever it made —
    the reserved ``key-<jid>/`` (marker, empty incoming) and the container, never
    started — is left too."""
    areas = upload_areas(server.storebase)
    assert len(areas) == 1, areas
    assert os.path.exists(os.path.join(server.storebase, areas[0], STAGING_MARKER))
    area = os.path.join(server.storebase, f"key-{job}")
    if os.path.isdir(area):
        assert STAGING_MARKER in os.listdir(area)
        assert not os.path.isdir(os.path.join(area, "incoming")) or os.listdir(os.path.join(area, "incoming")) == []
        areas = [*areas, f"key-{job}"]
    for container in docker_client.containers.list(all=True, filters={"name": f"^{job}$"}):
        assert container.status == "created"
    return areas


def _restart_checks(old: Server, tmp: Any, job: str, areas: list[str], docker_client: Any) -> Server:
    """A new server on the same storeBase and spool: nothing of the dead one is left."""
    upload_dir = old.env["UPLOAD_DIR"]
    # the dead server's spool dir is still there...
    assert spool_dirs(upload_dir) == [d for d in spool_dirs(upload_dir) if d.startswith(f"proc-{old.process.pid}-")]
    assert len(spool_dirs(upload_dir)) == 1
    started = time.monotonic()
    new = _start(tmp, "restarted", storebase=old.storebase, UPLOAD_DIR=upload_dir)
    record_key = "restart.seconds_to_healthy"
    FIGURES[record_key] = max(FIGURES.get(record_key, 0), round(time.monotonic() - started, 3))
    # ...until a new server starts: it sweeps the spool and the partial upload area
    assert spool_dirs(upload_dir) == [d for d in spool_dirs(upload_dir) if d.startswith(f"proc-{new.process.pid}-")]
    assert len(spool_dirs(upload_dir)) == 1
    assert spool_files(upload_dir) == []
    assert upload_areas(new.storebase) == []
    assert f"key-{job}" not in key_dirs(new.storebase)
    # the half-staged job's container, never started, went with its area
    assert not docker_client.containers.list(all=True, filters={"name": f"^{job}$"})
    swept = [e for e in log_events(new) if e.get("event") == "stale_staging_removed"]
    assert swept, new.logs()[-2000:]
    assert {a[len("key-") :] for a in areas} <= {j for e in swept for j in e.get("job_ids", [])}, swept
    return new


def _same_job_id_again(new: Server, job: str) -> None:
    client = Client(new)
    r = client.submit(job_fields(job, TEST_IMAGE), make_zip({"x.txt": b"x"}))
    assert r.status_code == 201, r.text
    client.wait_terminal(job)
    assert client.delete(job).status_code == 204
    assert key_dirs(new.storebase) == []
    _no_errors_logged(new)


def test_sigkill_during_upload_then_restart(docker_client: Any, tmp_path: Any) -> None:
    server = _start(tmp_path, "killed-upload")
    new: Server | None = None
    job = jid()
    archive = big_zip(64 * MiB)
    try:
        client = Client(server)
        head = multipart_head(job_fields(job, TEST_IMAGE))
        conn = RawConn(port_of(server), timeout=10)
        try:
            conn.send(upload_head(server, client.token, len(head) + len(archive) + len(multipart_tail())))
            conn.send(head)
            assert conn.send_chunks(chunked(archive[: 12 * MiB], MiB), pause=0.02)
            wait_for(lambda: area_bytes(server.storebase) >= 4 * MiB, 10, "the member to reach the upload area")
            sigkill(server)
        finally:
            conn.close()
        # the dead server's partial upload is still there...
        areas = _dead_areas(server, job, docker_client)
        written = area_bytes(server.storebase)
        record("kill_upload.bytes_extracted_at_kill", written)
        assert 4 * MiB <= written < 64 * MiB
        # ...until a new server starts
        new = _restart_checks(server, tmp_path, job, areas, docker_client)
        _same_job_id_again(new, job)
    finally:
        if server.process.poll() is None:
            server.stop()
        if new is not None:
            new.stop()


def test_sigkill_during_extraction_then_restart(docker_client: Any, tmp_path: Any) -> None:
    server = _start(tmp_path, "killed-extract")
    new: Server | None = None
    job = jid()
    many = make_zip({f"d{i // 1000:02d}/f{i:05d}.txt": b"x" for i in range(40_000)}, zipfile.ZIP_STORED)
    outcome: dict[str, Any] = {}

    def submit() -> None:
        try:
            r = Client(server).submit(job_fields(job, TEST_IMAGE), many, timeout=120)
            outcome["response"] = (r.status_code, r.text[:500])
        except requests.RequestException as e:
            outcome["error"] = repr(e)

    def extracting() -> bool:
        if "response" in outcome:
            raise AssertionError(f"the submission ended before it could be killed: {outcome['response']}")
        return area_files(server.storebase) >= 50

    thread = threading.Thread(target=submit, daemon=True)
    try:
        thread.start()
        wait_for(extracting, 60, "extraction into a key-.upload-* area", interval=0.01)
        sigkill(server)
        thread.join(30)
        assert "error" in outcome, outcome  # the client saw the connection die
        areas = _dead_areas(server, job, docker_client)
        files_at_kill = area_files(server.storebase)
        record("kill_extraction.files_extracted_at_kill", files_at_kill)
        assert 50 <= files_at_kill < 40_000

        new = _restart_checks(server, tmp_path, job, areas, docker_client)
        _same_job_id_again(new, job)
    finally:
        if server.process.poll() is None:
            server.stop()
        if new is not None:
            new.stop()


# -- full disks -----------------------------------------------------------------------------


def _assert_full_and_clean(r: requests.Response, server: Server, job: str) -> None:
    assert r.status_code == 507, r.text
    assert r.json()["message"]
    assert f"key-{job}" not in key_dirs(server.storebase)
    assert upload_areas(server.storebase) == []
    wait_for(lambda: not spool_files(server.env["UPLOAD_DIR"]), 5, "the spool to be emptied")


def test_storebase_on_full_tmpfs_is_507_and_recovers(docker_client: Any, tmp_path: Any) -> None:
    storebase = str(tmp_path / "storeBase")
    with tmpfs(storebase, "64m"):
        server = _start(tmp_path, "full-storebase", storebase=storebase, STOREBASE_RESERVE_BYTES="0")
        try:
            client = Client(server)
            # 1. the archive is bigger than what is free: refused before extraction
            filler = fill(storebase, 1 * MiB)
            job = jid()
            started = time.monotonic()
            r = client.submit(job_fields(job, TEST_IMAGE), make_zip({"big.bin": os.urandom(4 * MiB)}, zipfile.ZIP_STORED))
            record("storebase_full.precheck_seconds_to_507", time.monotonic() - started)
            _assert_full_and_clean(r, server, job)

            # 2. the archive claims less than is free but takes more (a 4 KiB page per
            # 2 KiB file): the disk really fills up mid-extraction (ENOSPC)
            os.unlink(filler)
            filler = fill(storebase, 8 * MiB)
            files = {f"d{i // 500}/f{i:04d}.bin": os.urandom(2048) for i in range(3000)}
            job = jid()
            started = time.monotonic()
            r = client.submit(job_fields(job, TEST_IMAGE), make_zip(files, zipfile.ZIP_STORED))
            record("storebase_full.enospc_seconds_to_507", time.monotonic() - started)
            _assert_full_and_clean(r, server, job)
            assert "full" in r.json()["message"] or "space" in r.json()["message"]
            assert free_bytes(storebase) >= 8 * MiB - 64 * 1024  # the partial extraction is gone

            # 3. room again: the same server accepts the next job
            os.unlink(filler)
            job = jid()
            r = client.submit(job_fields(job, TEST_IMAGE), make_zip(files, zipfile.ZIP_STORED))
            assert r.status_code == 201, r.text
            assert r.json()["data"]["nfiles"] == 3000
            client.wait_terminal(job)
            assert client.delete(job).status_code == 204
            assert key_dirs(storebase) == []
            _no_errors_logged(server)
        finally:
            server.stop()


def test_storebase_fills_during_streaming_upload_is_507_and_recovers(docker_client: Any, tmp_path: Any) -> None:
    """The upload is extracted into storeBase while it arrives (ADR 19): storeBase fills
    up while the member is being received; the rest of the body is dropped, the answer is
    507 and the partial upload area is gone; with room again the same upload succeeds."""
    storebase = str(tmp_path / "storeBase")
    with tmpfs(storebase, "64m"):
        server = _start(tmp_path, "fills-mid-upload", storebase=storebase, STOREBASE_RESERVE_BYTES="0")
        try:
            client = Client(server)
            job = jid()
            archive = big_zip(24 * MiB)  # fits when it starts: its header passes the free-space check
            head = multipart_head(job_fields(job, TEST_IMAGE))
            tail = multipart_tail()
            conn = RawConn(port_of(server), timeout=10)
            try:
                conn.send(upload_head(server, client.token, len(head) + len(archive) + len(tail)))
                conn.send(head)
                assert conn.send_chunks(chunked(archive[: 4 * MiB], MiB), pause=0.02)
                wait_for(lambda: area_bytes(storebase) >= 3 * MiB, 10, "the member to reach the upload area")
                filler = fill(storebase, 256 * 1024)  # someone else fills storeBase meanwhile
                free_when_full = free_bytes(storebase)
                started = time.monotonic()
                conn.send_chunks(chunked(archive[4 * MiB :] + tail, MiB), pause=0.01)  # stops if answered early
                r = conn.response(timeout=30)
            finally:
                conn.close()
            record("storebase_fills_mid_upload.seconds_to_507", time.monotonic() - started)
            assert r.status == 507, (r.status, r.body[:500])
            assert r.json()["message"]
            assert f"key-{job}" not in key_dirs(storebase)
            wait_for(lambda: not upload_areas(storebase), 5, "the partial upload area to be removed")
            assert free_bytes(storebase) >= free_when_full + 3 * MiB  # its bytes were given back
            assert spool_files(server.env["UPLOAD_DIR"]) == []
            assert not docker_client.containers.list(all=True, filters={"name": f"^{job}$"})

            # room again: the same server accepts the same upload, under the same job id
            os.unlink(filler)
            r2 = client.submit(job_fields(job, TEST_IMAGE), archive)
            assert r2.status_code == 201, r2.text
            assert r2.json()["data"]["nfiles"] == 1
            client.wait_terminal(job)
            assert client.delete(job).status_code == 204
            assert key_dirs(storebase) == []
            _no_errors_logged(server)
        finally:
            server.stop()


def test_upload_spool_on_full_tmpfs_is_507_and_recovers(docker_client: Any, tmp_path: Any) -> None:
    """The spool still receives the ``data_file`` of in-network modes (ADR 19: spooled and
    ignored there): a spool on a full tmpfs is 507, then room again."""
    spool = str(tmp_path / "spool")
    with tmpfs(spool, "16m"):
        server = _start(
            tmp_path,
            "full-spool",
            UPLOAD_DIR=spool,
            STOREBASE_RESERVE_BYTES="0",
            PFCON_INNETWORK="true",
            STORAGE_ENV="filesystem",
        )
        try:
            client = Client(server)
            inp, out = "home/cube/feeds/feed_1/pl-dircopy_1/data", "home/cube/feeds/feed_1/pl-app_2/data"
            os.makedirs(os.path.join(server.storebase, inp))
            os.makedirs(os.path.join(server.storebase, out))
            with open(os.path.join(server.storebase, inp, "x.txt"), "wb") as f:
                f.write(b"x")
            job = jid()
            fields = job_fields(job, TEST_IMAGE, input_dirs=inp, output_dir=out)
            started = time.monotonic()
            r = client.submit(fields, make_zip({"big.bin": os.urandom(24 * MiB)}, zipfile.ZIP_STORED))
            record("spool_full.seconds_to_507", time.monotonic() - started)
            _assert_full_and_clean(r, server, job)
            assert free_bytes(spool) > 15 * MiB
            r = client.submit(fields, make_zip({"small.bin": os.urandom(4 * MiB)}, zipfile.ZIP_STORED))
            assert r.status_code == 201, r.text
            client.wait_terminal(job)
            assert client.delete(job).status_code == 204
            _no_errors_logged(server)
        finally:
            server.stop()


# -- load ------------------------------------------------------------------------------------


def test_hundred_concurrent_submissions(docker_client: Any, tmp_path: Any) -> None:
    server = _start(tmp_path, "hundred")
    try:
        client = Client(server)
        jobs = [jid() for _ in range(100)]
        payload = make_zip({"x.txt": b"x"})
        barrier = threading.Barrier(len(jobs), timeout=30)

        def submit(job: str) -> tuple[int, float, str]:
            barrier.wait()
            started = time.monotonic()
            try:
                r = client.submit(job_fields(job, TEST_IMAGE), payload, timeout=180)
            except requests.RequestException as e:
                return -1, time.monotonic() - started, repr(e)
            return r.status_code, time.monotonic() - started, r.text[:300]

        started = time.monotonic()
        with ThreadPoolExecutor(len(jobs)) as pool:
            results = list(pool.map(submit, jobs))
        wall = time.monotonic() - started
        codes = [code for code, _, _ in results]
        latencies = sorted(t for _, t, _ in results)
        record("hundred.wall_seconds", wall)
        record("hundred.latency_p50_seconds", statistics.median(latencies))
        record("hundred.latency_max_seconds", latencies[-1])
        record("hundred.status_counts", {str(c): codes.count(c) for c in sorted(set(codes))})
        assert [r for r in results if r[0] != 201] == []

        # 0 lost: every job is known to the server and runs to its end
        def all_done() -> bool:
            for j in jobs:
                r = client.status(j)
                assert r.status_code == 200, (j, r.status_code, r.text)
                if r.json()["compute"]["status"] != "finishedSuccessfully":
                    return False
            return True

        statuses = [client.status(j).status_code for j in jobs]
        assert statuses == [200] * len(jobs)
        wait_for(all_done, 120, "the 100 jobs to finish", interval=1)
        record("hundred.lost", 0)
        with ThreadPoolExecutor(20) as pool:
            deleted = list(pool.map(lambda j: client.delete(j).status_code, jobs))
        assert deleted == [204] * len(jobs)
        assert key_dirs(server.storebase) == []
        assert not [c for c in docker_client.containers.list(all=True) if c.name in set(jobs)]
        _no_errors_logged(server)
    finally:
        server.stop()


# -- Swift stopped mid-staging ---------------------------------------------------------------

SWIFT_SEED = "pfcon-faults/seed-v1/in"  # kept between runs: seeding takes seconds
SWIFT_SEED_OBJECTS = 800


def _swift_conn() -> Any:
    from swiftclient.client import Connection

    return Connection(
        authurl=os.environ["SWIFT_AUTH_URL"], user=os.environ["SWIFT_USERNAME"], key=os.environ["SWIFT_KEY"], retries=2
    )


@pytest.fixture(scope="module")
def swift_seed() -> str:
    if not os.environ.get("SWIFT_AUTH_URL"):
        _require("a Swift server", 'SWIFT_AUTH_URL is not set (eval "$(bash scripts/swift-aio.sh env)")')
    container = os.environ.get("SWIFT_CONTAINER_NAME", "users")
    conn = _swift_conn()
    try:
        conn.put_container(container)
        _, present = conn.get_container(container, prefix=SWIFT_SEED + "/", full_listing=True)
    except Exception as e:  # noqa: BLE001
        _require("a Swift server", str(e))
    have = {o["name"] for o in present}
    missing = [f"{SWIFT_SEED}/f{i:04d}.dat" for i in range(SWIFT_SEED_OBJECTS)]
    missing = [name for name in missing if name not in have]
    local = threading.local()

    def put(name: str) -> None:
        if not hasattr(local, "conn"):
            local.conn = _swift_conn()
        local.conn.put_object(container, name, contents=os.urandom(4096))

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, missing))
    return SWIFT_SEED


@pytest.mark.swift
def test_swift_stopped_mid_staging_then_restarted(docker_client: Any, swift_seed: str, tmp_path: Any) -> None:
    server = _start(
        tmp_path, "swift", PFCON_INNETWORK="true", STORAGE_ENV="swift", SWIFT_RETRIES="1", STAGING_WORKERS="1"
    )
    stopped = False
    job = jid()
    fields = job_fields(job, TEST_IMAGE, input_dirs=swift_seed, output_dir=f"pfcon-faults/out-{job}")
    outcome: dict[str, Any] = {}

    def submit() -> None:
        started = time.monotonic()
        try:
            r = Client(server).submit(fields, timeout=120)
            outcome["response"] = r
        except requests.RequestException as e:
            outcome["error"] = repr(e)
        outcome["ended"] = time.monotonic()
        outcome["seconds"] = outcome["ended"] - started

    incoming = os.path.join(server.storebase, f"key-{job}", "incoming")

    def staging() -> bool:
        if "ended" in outcome:
            raise AssertionError(f"the submission ended before Swift was stopped: {outcome}")
        return os.path.isdir(incoming) and count_files(incoming) >= 5

    try:
        client = Client(server)
        try:
            thread = threading.Thread(target=submit, daemon=True)
            thread.start()
            wait_for(staging, 60, f"staging into {incoming}", interval=0.01)
            stop_called = time.monotonic()
            record("swift.files_staged_when_stopped", count_files(incoming))
            stopped = True
            record("swift.stop_script_seconds", script("swift-aio.sh", "stop"))
            thread.join(60)
            assert "response" in outcome, outcome
            r = outcome["response"]
            record("swift.seconds_from_stop_to_503", outcome["ended"] - stop_called)
            assert r.status_code == 503, r.text
            assert "Swift" in r.json()["message"], r.text
            assert f"key-{job}" not in key_dirs(server.storebase)
            assert not docker_client.containers.list(all=True, filters={"name": f"^{job}$"})
            ready = client.ready()
            assert ready.status_code == 503
            body = ready.json()
            assert body["ready"] is False and "Swift" in body["message"]
            assert [b["ok"] for b in body["backends"] if b["kind"] == "storage"] == [False]
            assert client.health().json() == {"health": "OK"}
        finally:
            if stopped:
                record("swift.start_script_seconds", script("swift-aio.sh", "start", timeout=180))
        restarted = time.monotonic()
        wait_for(lambda: client.ready().status_code == 200, 30, "the server to be ready again", interval=0.2)
        record("swift.seconds_from_restart_to_ready", time.monotonic() - restarted)
        r = client.submit(fields, timeout=120)
        assert r.status_code == 201, r.text
        assert r.json()["data"]["nfiles"] == SWIFT_SEED_OBJECTS
        client.wait_terminal(job)
        assert client.delete(job).status_code == 204
        assert key_dirs(server.storebase) == []
        _no_errors_logged(server)
    finally:
        server.stop()


# -- the Docker engine stopped under a running server (keep last) -----------------------------

DOCKERD_PID_FILE = "/run/pfcon-ci/dockerd.pid"


def _engine_up(docker_client: Any) -> bool:
    try:
        return bool(docker_client.ping())
    except Exception:  # noqa: BLE001
        return False


def _restart_engine(docker_client: Any) -> None:
    """Start the engine again; dockerd may take long (at startup it removes the stale
    network sandbox of every container removed since it last started, ~0.1 s each: a
    machine that ran thousands of containers waits minutes), longer than the script
    waits: then wait for it here, up to 15 minutes (the server's behaviour is under test,
    not dockerd's start-up time)."""
    if _engine_up(docker_client):
        return
    started = time.monotonic()
    try:
        script("docker-engine.sh", "start", timeout=180)
    except subprocess.TimeoutExpired:
        pass  # dockerd is still removing stale sandboxes: wait for it below
    wait_for(lambda: _engine_up(docker_client), 900, "the Docker engine to come back", interval=0.5)
    record("docker.start_seconds", time.monotonic() - started)


def test_docker_engine_stopped_under_running_server(docker_client: Any, tmp_path: Any) -> None:
    if not os.path.exists(DOCKERD_PID_FILE):
        _require("a Docker engine started by scripts/docker-engine.sh", f"no {DOCKERD_PID_FILE}")
    server = _start(tmp_path, "docker-down")
    try:
        client = Client(server)
        done = jid()
        payload = make_zip({"x.txt": b"x"})
        assert client.submit(job_fields(done, TEST_IMAGE), payload).status_code == 201
        client.wait_terminal(done)
        fresh = jid()
        try:
            record("docker.stop_script_seconds", script("docker-engine.sh", "stop"))
            # A finished job's status is answered from the event view, which learns that the
            # engine is gone when its event stream ends: that can come a few milliseconds
            # after the stop script has seen dockerd exit (the view's thread must run).
            # From then on, every call is a 503.
            stopped = time.monotonic()
            wait_for(lambda: client.status(done, timeout=30).status_code == 503, 2, "the view to see the engine gone")
            record("docker.seconds_to_first_503", round(time.monotonic() - stopped, 3))
            timings = {}
            for name, call in (
                ("status", lambda: client.status(done, timeout=30)),
                ("submit", lambda: client.submit(job_fields(fresh, TEST_IMAGE), payload, timeout=30)),
                ("delete", lambda: client.delete(done, timeout=30)),
            ):
                started = time.monotonic()
                r = call()
                timings[name] = round(time.monotonic() - started, 3)
                assert r.status_code == 503, (name, r.status_code, r.text)
                assert "Docker engine" in r.json()["message"], (name, r.text)
            record("docker.seconds_to_503", timings)
            assert f"key-{fresh}" not in key_dirs(server.storebase)
            assert spool_files(server.env["UPLOAD_DIR"]) == []
            ready = client.ready()
            assert ready.status_code == 503
            body = ready.json()
            assert body["ready"] is False and body["message"].startswith("not ready")
            compute = [b for b in body["backends"] if b["kind"] == "compute"]
            assert len(compute) == 1 and compute[0]["ok"] is False and "Docker engine" in compute[0]["message"]
            assert client.health().json() == {"health": "OK"}
        finally:
            _restart_engine(docker_client)
        restarted = time.monotonic()
        wait_for(lambda: client.ready().status_code == 200, 30, "the server to be ready again", interval=0.2)
        record("docker.seconds_from_restart_to_ready", time.monotonic() - restarted)
        docker_client.images.get(TEST_IMAGE)  # the engine came back with its images
        r = client.status(done)
        assert r.status_code == 200, r.text
        assert client.delete(done).status_code == 204
        r = client.submit(job_fields(fresh, TEST_IMAGE), payload)
        assert r.status_code == 201, r.text
        assert client.wait_terminal(fresh)["status"] == "finishedSuccessfully"
        assert client.delete(fresh).status_code == 204
        assert key_dirs(server.storebase) == []
        _no_errors_logged(server)
    finally:
        server.stop()
