"""Black-box: /metrics scraped around real job cycles on real Docker, and tracing turned on
by the standard OTEL_* variables in a real server process (issue 12, ADR 21)."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from pfconclient.client import Client

from .server import Server, remove_job_containers, start_server
from .test_e2e_zipfile import descriptors, make_zip, wait_terminal

pytestmark = pytest.mark.docker

METRICS_TOKEN = "integration-metrics-token-0123456789"
STATUS_ROUTE = "/api/v1/jobs/{jid}"


@pytest.fixture(scope="module")
def server(docker_client: Any, tmp_path_factory: Any) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("metrics")
    storebase = base / "storeBase"
    storebase.mkdir()
    server = start_server(str(storebase), str(base / "server.log"), METRICS_TOKEN=METRICS_TOKEN)
    yield server
    server.stop()
    remove_job_containers(docker_client, "obs-")


def jid() -> str:
    return f"obs-{uuid.uuid4().hex[:12]}"


def scrape(server: Server) -> dict[str, float]:
    r = requests.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10)
    assert r.status_code == 200, r.text
    samples: dict[str, float] = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            key, _, number = line.rpartition(" ")
            samples[key] = float(number)
    return samples


def test_metrics_need_the_token(server: Server) -> None:
    assert requests.get(f"{server.url}/metrics", timeout=10).status_code == 401
    token = server.token()  # the API's JWT is not the metrics token
    r = requests.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 401


def test_a_job_cycle_on_docker_moves_the_counters_by_what_happened(server: Server) -> None:
    client = Client(server.api, server.token())
    files = {"a.txt": b"hello\n", "dir/b.bin": os.urandom(4096), "dir/c.bin": b""}
    ok, failing = jid(), jid()
    before = scrape(server)

    client.submit_job(ok, descriptors(script='cp -R "$0"/. "$1"/'), make_zip(files))
    client.submit_job(failing, descriptors(script="exit 3"), make_zip({"x.txt": b"x"}))
    during = scrape(server)  # scraped while the jobs run: submitted, not necessarily finished
    polls = {job: 0 for job in (ok, failing)}
    for job in (ok, failing):
        status = wait_terminal(client, job)["compute"]["status"]
        assert status == ("finishedSuccessfully" if job == ok else "finishedWithError")
    for job in (ok, failing):  # polled again once finished: counted once
        assert client.get_job_status(job)["compute"]["status"].startswith("finished")
        polls[job] += 1
    with pytest.raises(Exception):  # noqa: B017 - pfconclient's 404
        client.get_job_status(jid())
    staged = sum(map(len, files.values())) + 1
    bytes_key = 'pfcon_staged_bytes_total{storage="zipfile"}'
    deadline = time.monotonic() + 20  # added up in a background thread, right after staging
    while scrape(server).get(bytes_key, 0.0) - before.get(bytes_key, 0.0) != staged:
        assert time.monotonic() < deadline, "the staged bytes were never counted"
        time.sleep(0.05)
    for job in (ok, failing):
        client.delete_job(job)
    after = scrape(server)

    def moved(key: str, since: dict[str, float] = before) -> float:
        return after.get(key, 0.0) - since.get(key, 0.0)

    docker = 'scheduler="docker"'
    assert during['pfcon_jobs_submitted_total{kind="plugin",%s}' % docker] - before.get(
        'pfcon_jobs_submitted_total{kind="plugin",%s}' % docker, 0) == 2  # fmt: skip
    assert moved('pfcon_jobs_submitted_total{kind="plugin",%s}' % docker) == 2
    assert moved('pfcon_jobs_finished_total{kind="plugin",outcome="success",%s}' % docker) == 1
    assert moved('pfcon_jobs_finished_total{kind="plugin",outcome="error",%s}' % docker) == 1
    assert moved('pfcon_jobs_finished_total{kind="plugin",outcome="cancelled",%s}' % docker) == 0
    assert moved('pfcon_http_requests_total{method="POST",route="/api/v1/jobs",status="201"}') == 2
    assert moved(f'pfcon_http_requests_total{{method="GET",route="{STATUS_ROUTE}",status="404"}}') == 1
    assert moved(f'pfcon_http_requests_total{{method="DELETE",route="{STATUS_ROUTE}",status="204"}}') == 2
    assert moved(f'pfcon_http_requests_total{{method="GET",route="{STATUS_ROUTE}",status="200"}}') >= 4
    assert moved('pfcon_http_requests_total{method="GET",route="/metrics",status="200"}') >= 2
    assert moved('pfcon_staging_duration_seconds_count{storage="zipfile"}') == 2
    assert moved('pfcon_staged_files_total{storage="zipfile"}') == len(files) + 1
    assert moved(bytes_key) == staged
    assert moved('pfcon_backend_call_duration_seconds_count{backend="docker",operation="schedule",port="compute"}') == 2
    assert moved('pfcon_backend_call_duration_seconds_count{backend="docker",operation="remove",port="compute"}') == 2
    assert not [k for k, v in after.items() if k.startswith("pfcon_backend_errors_total") and v]
    assert after["pfcon_uploads_in_flight"] == 0
    assert after["process_resident_memory_bytes"] > 10 * 1024 * 1024
    assert after['pfcon_info{scheduler="docker",storage="zipfile",version="0.1.0"}'] == 1


def test_tracing_from_the_standard_variables_puts_trace_ids_in_the_logs(docker_client: Any, tmp_path: Any) -> None:
    storebase = tmp_path / "storeBase"
    storebase.mkdir()
    log = tmp_path / "server.log"
    server = start_server(
        str(storebase), str(log), OTEL_TRACES_EXPORTER="console", OTEL_SERVICE_NAME="pfcon-it", OTEL_BSP_SCHEDULE_DELAY="100"
    )
    try:
        client = Client(server.api, server.token())
        job = jid()
        client.submit_job(job, descriptors(script="true"), make_zip({"a.txt": b"a"}))
        wait_terminal(client, job)
        client.delete_job(job)
    finally:
        server.stop()  # flushes the spans
        remove_job_containers(docker_client, "obs-")
    text = log.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{") and '"event"' in line]
    requests_logged = [line for line in lines if line.get("event") == "request" and line.get("job_id") == job]
    assert requests_logged and all(len(line.get("trace_id", "")) == 32 for line in requests_logged)
    submit = next(line for line in requests_logged if line["method"] == "POST")
    # the console exporter printed the spans of that request: same trace, staging and scheduling inside
    assert f'"trace_id": "0x{submit["trace_id"]}"' in text
    assert '"name": "storage.stage"' in text and '"name": "compute.schedule"' in text
    assert '"service.name": "pfcon-it"' in text
    assert '"pfcon.job_id": "%s"' % job in text


def test_an_upload_being_received_is_in_flight(server: Server) -> None:
    import http.client

    fields = {"jid": jid(), **{k: v for k, v in descriptors(script="true").items()}}
    boundary = "obs-boundary-0123456789"
    parts = []
    for key, value in fields.items():
        for item in value if isinstance(value, list) else [value]:
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{item}\r\n'.encode())
    archive = make_zip({"a.txt": os.urandom(256 * 1024)})
    head = b"".join(parts) + (
        f'--{boundary}\r\nContent-Disposition: form-data; name="data_file"; filename="d.zip"\r\n'
        "Content-Type: application/zip\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    half = len(archive) // 2
    conn = http.client.HTTPConnection(server.url.split("//")[1], timeout=30)
    conn.putrequest("POST", "/api/v1/jobs/")
    conn.putheader("Authorization", f"Bearer {server.token()}")
    conn.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
    conn.putheader("Content-Length", str(len(head) + len(archive) + len(tail)))
    conn.endheaders()
    conn.send(head + archive[:half])  # the rest is held back: the upload stays in flight
    deadline = time.monotonic() + 20
    while scrape(server)["pfcon_uploads_in_flight"] != 1:
        assert time.monotonic() < deadline, "the upload never showed as in flight"
        time.sleep(0.05)
    conn.send(archive[half:] + tail)
    response = conn.getresponse()
    assert response.status == 201, response.read()
    conn.close()
    assert scrape(server)["pfcon_uploads_in_flight"] == 0
    Client(server.api, server.token()).delete_job(fields["jid"])
