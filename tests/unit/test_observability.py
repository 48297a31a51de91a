"""Metrics and tracing (issue 12, ADR 21): the ports' proxy, the request middleware,
/metrics and its protection, their configuration, and the span tree of a request."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from litestar.testing import TestClient

from pfcon.adapters.compute.fake import FakeCompute
from pfcon.adapters.storage.fake import FakeStorage
from pfcon.bootstrap import build_container
from pfcon.config import ConfigError, load_settings
from pfcon.domain import errors as E
from pfcon.domain.model import (
    CANCELLED_MESSAGE,
    INSTANCE_LABEL,
    JOB_TYPE_LABEL,
    ContainerJob,
    JobStatus,
    Resources,
)
from pfcon.domain.ports import InputReceiverPort
from pfcon.entrypoints.http.app import create_app
from pfcon.observability import Telemetry, TracingOptions, build_telemetry
from pfcon.observability.ports import BYTE_COUNTER, MAX_WATCHED, instrument

from ..conftest import API, Api

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STATUS_ROUTE = "/api/v1/jobs/{jid}"


def telemetry(**kw: Any) -> Telemetry:
    return build_telemetry(version="test", scheduler="docker", storage="zipfile", **kw)


def value(t: Telemetry, name: str, **labels: str) -> float:
    return t.metrics.value(name, labels)


def container_job(name: str, kind: str = "plugin") -> ContainerJob:
    return ContainerJob(
        name=name, image="img", command=("true",), env=(), resources=Resources(), mounts=(),
        labels={JOB_TYPE_LABEL: kind, INSTANCE_LABEL: "pfcon"},
    )  # fmt: skip


@pytest.fixture
def observed_api(storebase: str, tmp_path: Any) -> Any:
    """An Api factory whose app records into a telemetry the test holds."""
    clients: list[TestClient[Any]] = []

    def factory(t: Telemetry | None = None, **env: str) -> tuple[Api, Telemetry]:
        environ = {
            "APPLICATION_MODE": "dev", "COMPUTE_VOLUME_TYPE": "host", "STOREBASE": storebase,
            "STOREBASE_MOUNT": storebase, "UPLOAD_DIR": str(tmp_path / "uploads"), **env,
        }  # fmt: skip
        t = t or telemetry()
        compute = FakeCompute()
        app = create_app(build_container(load_settings(environ), compute=compute, telemetry=t))
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        return Api(client, storebase, compute), t

    yield factory
    for client in clients:
        client.__exit__(None, None, None)


def scrape(api: Api, **headers: str) -> dict[str, float]:
    """/metrics parsed: {'name{labels}': value} (labels as the exposition sorts them)."""
    r = api.client.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, float] = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            key, _, number = line.rpartition(" ")
            samples[key] = float(number)
    return samples


# -- a job cycle through the API, counted -------------------------------------------------


def test_a_job_cycle_moves_the_counters_by_what_happened(observed_api: Any) -> None:
    api, t = observed_api()
    before = scrape(api)
    assert before['pfcon_jobs_submitted_total{kind="plugin",scheduler="docker"}'] == 0
    assert "process_resident_memory_bytes" in before and before["pfcon_uploads_in_flight"] == 0

    assert api.submit("chris-jid-1", files={"data_file": ("d", _zip({"a.txt": "hello", "b/c.txt": "12345678"}))}).status_code == 201
    BYTE_COUNTER.settle()  # the staged bytes are added up off the request's path
    assert api.get("/jobs/chris-jid-1/").json()["compute"]["status"] == "notstarted"
    api.compute.run("chris-jid-1")
    api.compute.finish("chris-jid-1", 0)
    for _ in range(3):  # a finished job polled again is counted once
        assert api.get("/jobs/chris-jid-1/").json()["compute"]["status"] == "finishedSuccessfully"
    assert api.get("/jobs/chris-jid-unknown/").status_code == 404
    assert api.delete("/jobs/chris-jid-1/").status_code == 204

    after = scrape(api)
    delta = lambda key: after.get(key, 0) - before.get(key, 0)  # noqa: E731
    assert delta('pfcon_jobs_submitted_total{kind="plugin",scheduler="docker"}') == 1
    assert delta('pfcon_jobs_finished_total{kind="plugin",outcome="success",scheduler="docker"}') == 1
    assert delta('pfcon_jobs_finished_total{kind="plugin",outcome="error",scheduler="docker"}') == 0
    assert delta(f'pfcon_http_requests_total{{method="GET",route="{STATUS_ROUTE}",status="200"}}') == 4
    assert delta(f'pfcon_http_requests_total{{method="GET",route="{STATUS_ROUTE}",status="404"}}') == 1
    assert delta('pfcon_http_requests_total{method="POST",route="/api/v1/jobs",status="201"}') == 1
    assert delta(f'pfcon_http_request_duration_seconds_count{{method="GET",route="{STATUS_ROUTE}"}}') == 5
    assert delta('pfcon_staging_duration_seconds_count{storage="zipfile"}') == 1
    assert delta('pfcon_staged_files_total{storage="zipfile"}') == 2
    assert delta('pfcon_staged_bytes_total{storage="zipfile"}') == len("hello") + len("12345678")
    # the finished job's polls are answered from what the adapter knows: no backend call
    assert delta('pfcon_backend_call_duration_seconds_count{backend="docker",operation="state",port="compute"}') == 2
    assert delta('pfcon_backend_call_duration_seconds_count{backend="docker",operation="remove",port="compute"}') == 1
    # a job that does not exist is the client's problem, not the backend's
    assert not any(k.startswith("pfcon_backend_errors_total") and v for k, v in after.items())
    assert value(t, "pfcon_jobs_submitted_total", scheduler="docker", kind="plugin") == 1


def test_unknown_paths_share_one_label_and_raw_paths_never_appear(observed_api: Any) -> None:
    api, _ = observed_api()
    for path in ("/nope/1", "/nope/2", "/api/v1/jobs/x/y/z/"):
        assert api.client.get(path).status_code == 404
    text = api.client.get("/metrics").text
    assert 'pfcon_http_requests_total{method="GET",route="unmatched",status="404"} 3.0' in text
    assert "/nope" not in text and "x/y/z" not in text


def test_backend_errors_are_counted_by_class_and_the_request_by_status(observed_api: Any) -> None:
    api, t = observed_api()
    api.compute.fail_next_schedule = E.BackendUnavailable("Docker engine: down")
    assert api.submit("chris-jid-2").status_code == 503
    api.compute.fail_next_schedule = RuntimeError("boom")
    assert api.submit("chris-jid-3").status_code == 500
    assert value(t, "pfcon_backend_errors_total", port="compute", backend="docker", operation="schedule",
                 error="BackendUnavailable") == 1  # fmt: skip
    assert value(t, "pfcon_backend_errors_total", port="compute", backend="docker", operation="schedule",
                 error="internal") == 1  # fmt: skip
    assert value(t, "pfcon_jobs_submitted_total", scheduler="docker", kind="plugin") == 0
    assert value(t, "pfcon_http_requests_total", route="/api/v1/jobs", method="POST", status="503") == 1


# -- /metrics: enabled, protected ---------------------------------------------------------


def test_metrics_token_protects_the_endpoint(observed_api: Any) -> None:
    token = "a-long-enough-metrics-token"
    api, _ = observed_api(METRICS_TOKEN=token)
    for headers in ({}, {"Authorization": "Bearer wrong-token-of-some-length"}, {"Authorization": token}):
        r = api.client.get("/metrics", headers=headers)
        assert r.status_code == 401
        assert "metrics token" in r.json()["message"] and token not in r.text
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert scrape(api, Authorization=f"Bearer {token}")["pfcon_uploads_in_flight"] == 0
    # the pfcon JWT is not what /metrics wants, and the API does not take the metrics token
    assert api.client.get("/metrics", headers=api.headers).status_code == 401
    assert api.client.get(f"{API}/jobs/", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_metrics_disabled_means_no_endpoint_and_no_proxy(app_factory: Callable[..., Api]) -> None:
    api = app_factory(METRICS_ENABLED="false")
    assert api.client.get("/metrics").status_code == 404
    jobs = api.client.app.state.container.job_service()
    assert jobs.compute is api.compute  # not wrapped: nothing is recorded


def test_metrics_is_not_in_the_openapi_document(api: Api) -> None:
    assert "/metrics" not in api.client.get(f"{API}/schema/openapi.json").json()["paths"]


def test_uploads_in_flight_is_read_at_scrape_time() -> None:
    t = telemetry()
    in_flight = [3]
    t.metrics.watch_uploads(lambda: in_flight[0])
    assert value(t, "pfcon_uploads_in_flight") == 3
    in_flight[0] = 0
    assert value(t, "pfcon_uploads_in_flight") == 0


# -- the ports' proxy -----------------------------------------------------------------------


def test_the_proxy_passes_through_what_is_not_an_operation() -> None:
    fake = FakeCompute()
    observed = instrument(fake, "compute", "docker", telemetry())
    assert observed.capabilities is fake.capabilities
    assert observed.jobs is fake.jobs
    observed.schedule(container_job("j1"))
    assert "j1" in fake.jobs


def test_the_proxy_keeps_what_the_storage_can_and_cannot_do(storebase: str) -> None:
    from pfcon.adapters.storage.local import StoreBase
    from pfcon.adapters.storage.zipfile import ZipFileStorage

    t = telemetry()
    assert isinstance(instrument(ZipFileStorage(StoreBase(storebase)), "storage", "zipfile", t), InputReceiverPort)
    assert not isinstance(instrument(FakeStorage(), "storage", "fake", t), InputReceiverPort)


def test_client_errors_are_not_backend_errors_but_are_timed() -> None:
    t = telemetry()
    observed = instrument(FakeCompute(), "compute", "docker", t)
    with pytest.raises(E.JobNotFound):
        observed.info("nope")
    assert value(t, "pfcon_backend_call_duration_seconds_count", port="compute", backend="docker", operation="info") == 1
    assert t.metrics.render()[0].count(b"pfcon_backend_errors_total{") == 0


def test_a_job_is_finished_once_and_only_if_this_process_saw_it_unfinished() -> None:
    t = telemetry()
    fake = FakeCompute()
    observed = instrument(fake, "compute", "docker", t)
    # finished before this process ever saw it (a server restart): not counted
    fake.schedule(container_job("old"))
    fake.finish("old", 1)
    assert observed.info("old").status is JobStatus.FINISHED_WITH_ERROR
    # seen running, then failed; then cancelled; an op job by its label
    fake.schedule(container_job("seen"))
    fake.run("seen")
    observed.state("seen", 10)
    fake.finish("seen", 1)
    observed.info("seen")
    observed.info("seen")
    observed.schedule(container_job("run"))
    assert observed.cancel("run").message == CANCELLED_MESSAGE
    observed.schedule(container_job("j-copy", "copy"))
    fake.finish("j-copy", 0)
    assert [j.status for j in observed.list_jobs("pfcon") if j.name == "j-copy"] == [JobStatus.FINISHED_SUCCESSFULLY]

    def finished(kind: str, outcome: str) -> float:
        return value(t, "pfcon_jobs_finished_total", scheduler="docker", kind=kind, outcome=outcome)

    assert finished("plugin", "error") == 1
    assert finished("plugin", "cancelled") == 1
    assert finished("copy", "success") == 1
    assert value(t, "pfcon_jobs_submitted_total", scheduler="docker", kind="copy") == 1
    assert value(t, "pfcon_jobs_submitted_total", scheduler="docker", kind="plugin") == 1


def test_a_removed_job_is_forgotten_and_the_memory_is_bounded() -> None:
    observed = instrument(FakeCompute(), "compute", "docker", telemetry())
    observed.schedule(container_job("gone"))
    observed.remove("gone")
    assert observed._watched == {}
    for i in range(MAX_WATCHED + 10):
        observed._seen(f"j{i}", JobStatus.STARTED, "")
    assert len(observed._watched) == MAX_WATCHED


# -- configuration ---------------------------------------------------------------------------


BASE = {"APPLICATION_MODE": "dev", "COMPUTE_VOLUME_TYPE": "host", "STOREBASE": "/tmp", "STOREBASE_MOUNT": "/tmp"}


@pytest.mark.parametrize(
    ("env", "variable", "fragment"),
    [
        ({"METRICS_TOKEN": "short"}, "METRICS_TOKEN", "at least 16 bytes"),
        ({"METRICS_TOKEN": "has a space in the middle"}, "METRICS_TOKEN", "without spaces"),
        ({"METRICS_TOKEN": "a-long-enough-metrics-token", "METRICS_ENABLED": "no"}, "METRICS_TOKEN", "METRICS_ENABLED"),
        ({"METRICS_ENABLED": "maybe"}, "METRICS_ENABLED", "expected a boolean"),
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "OTEL_TRACES_EXPORTER", "otlp, console, none"),
        ({"OTEL_TRACES_EXPORTER": "otlp,none"}, "OTEL_TRACES_EXPORTER", "cannot be combined"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT", "http(s) URL"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "ftp://x/"}, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http(s) URL"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ({"OTEL_SDK_DISABLED": "perhaps"}, "OTEL_SDK_DISABLED", "expected a boolean"),
    ],
)
def test_bad_observability_settings_name_their_variable(env: dict[str, str], variable: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_settings({**BASE, **env})
    assert e.value.variable == variable
    assert fragment in str(e.value)
    if variable == "METRICS_TOKEN":
        assert env["METRICS_TOKEN"] not in str(e.value)


@pytest.mark.parametrize(
    ("env", "exporters"),
    [
        ({}, ()),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ("otlp",)),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://collector/v1/traces"}, ("otlp",)),
        ({"OTEL_TRACES_EXPORTER": "console"}, ("console",)),
        ({"OTEL_TRACES_EXPORTER": "otlp, console"}, ("otlp", "console")),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, ()),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, ()),
    ],
)
def test_tracing_is_off_unless_the_standard_variables_ask(env: dict[str, str], exporters: tuple[str, ...]) -> None:
    settings = load_settings({**BASE, **env})
    assert settings.tracing.exporters == exporters
    assert settings.metrics.enabled and settings.metrics.token is None
    assert "***" in repr(load_settings({**BASE, "METRICS_TOKEN": "a-long-enough-metrics-token"}).metrics)


PROBE = """
import sys
from pfcon.adapters.compute.fake import FakeCompute
from pfcon.bootstrap import build_container
from pfcon.config import load_settings
from pfcon.entrypoints.http.app import create_app
from pfcon.entrypoints.logs import configure_logging
settings = load_settings()
configure_logging(tracing=bool(settings.tracing.exporters))
create_app(build_container(settings, compute=FakeCompute()))
print(sorted({m.split(".")[0] for m in sys.modules if m.startswith(("opentelemetry", "google.protobuf"))}))
"""


@pytest.mark.parametrize(("env", "loaded"), [({}, "[]"), ({"OTEL_TRACES_EXPORTER": "console"}, "['opentelemetry']")])
def test_opentelemetry_is_imported_only_when_tracing_is_on(tmp_path: Any, env: dict[str, str], loaded: str) -> None:
    environ = {**os.environ, **BASE, "STOREBASE": str(tmp_path), "STOREBASE_MOUNT": str(tmp_path),
               "UPLOAD_DIR": str(tmp_path / "up"), **env}  # fmt: skip
    for name in [n for n in environ if n.startswith("OTEL_") and n not in env]:
        del environ[name]
    run = subprocess.run([sys.executable, "-c", PROBE], env=environ, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == loaded


# -- tracing ----------------------------------------------------------------------------------


@pytest.fixture
def spans() -> Any:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    return InMemorySpanExporter()


def _zip(files: dict[str, str]) -> bytes:
    from ..conftest import make_zip

    return make_zip(files)


def test_a_request_span_parents_the_staging_and_backend_spans(observed_api: Any, spans: Any) -> None:
    t = telemetry(exporter=spans)
    api, _ = observed_api(t)
    spans.clear()
    assert api.submit("chris-jid-7").status_code == 201
    finished = spans.get_finished_spans()
    by_name = {s.name: s for s in finished}
    request = by_name["POST /api/v1/jobs"]
    assert request.parent is None
    assert request.attributes["pfcon.job_id"] == "chris-jid-7"
    assert request.attributes["pfcon.scheduler"] == "docker"
    assert request.attributes["http.response.status_code"] == 201
    assert request.attributes["http.route"] == "/api/v1/jobs"
    stage, schedule = by_name["storage.stage"], by_name["compute.schedule"]
    for child in (stage, schedule, by_name["compute.check"], by_name["storage.receive"]):
        assert child.parent is not None and child.parent.span_id == request.context.span_id
        assert child.context.trace_id == request.context.trace_id
    assert stage.attributes["pfcon.job_id"] == "chris-jid-7" and stage.attributes["pfcon.storage"] == "zipfile"
    assert schedule.attributes["pfcon.job_id"] == "chris-jid-7" and schedule.attributes["pfcon.scheduler"] == "docker"


def test_a_prepared_submission_traces_create_staging_and_start(observed_api: Any, spans: Any, monkeypatch: Any) -> None:
    """A POST whose job is created while its upload arrives (ADR 23; here for any size)."""
    from pfcon.entrypoints.http import v5

    monkeypatch.setattr(v5, "PREPARE_MIN_BYTES", 0)
    monkeypatch.setattr(v5, "WHOLE_MAX_BYTES", 0)
    t = telemetry(exporter=spans)
    api, _ = observed_api(t)
    spans.clear()
    assert api.submit("chris-jid-12").status_code == 201
    by_name = {s.name: s for s in spans.get_finished_spans()}
    request = by_name["POST /api/v1/jobs"]
    stage, create, start = by_name["storage.stage_into"], by_name["compute.create"], by_name["compute.start"]
    for child in (stage, create, start, by_name["storage.reserve"], by_name["storage.receive"]):
        assert child.parent is not None and child.parent.span_id == request.context.span_id
    assert stage.attributes["pfcon.job_id"] == "chris-jid-12" and stage.attributes["pfcon.storage"] == "zipfile"
    for span in (create, start):
        assert span.attributes["pfcon.job_id"] == "chris-jid-12" and span.attributes["pfcon.scheduler"] == "docker"
    assert create.start_time < stage.start_time < start.start_time
    assert "compute.schedule" not in by_name and "storage.stage" not in by_name
    assert value(t, "pfcon_jobs_submitted_total", scheduler="docker", kind="plugin") == 1
    assert value(t, "pfcon_staged_files_total", storage="zipfile") == 1


def test_a_traceparent_header_continues_the_callers_trace(observed_api: Any, spans: Any) -> None:
    api, _ = observed_api(telemetry(exporter=spans))
    api.submit("chris-jid-8")
    spans.clear()
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    headers = {**api.headers, "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    assert api.get("/jobs/chris-jid-8/", headers=headers).status_code == 200
    request = next(s for s in spans.get_finished_spans() if s.name == f"GET {STATUS_ROUTE}")
    assert format(request.context.trace_id, "032x") == trace_id
    assert request.parent is not None and format(request.parent.span_id, "016x") == "00f067aa0ba902b7"
    state = next(s for s in spans.get_finished_spans() if s.name == "compute.state")
    assert state.parent.span_id == request.context.span_id


def test_a_backend_failure_marks_its_span_and_a_missing_job_does_not(observed_api: Any, spans: Any) -> None:
    from opentelemetry.trace import StatusCode

    api, _ = observed_api(telemetry(exporter=spans))
    spans.clear()
    api.compute.fail_next_schedule = E.BackendUnavailable("Docker engine: down")
    assert api.submit("chris-jid-9").status_code == 503
    assert api.get("/jobs/chris-jid-none/").status_code == 404
    by_name = {s.name: s for s in spans.get_finished_spans()}
    assert by_name["compute.schedule"].status.status_code is StatusCode.ERROR
    assert by_name["compute.state"].status.status_code is not StatusCode.ERROR
    assert by_name["compute.state"].attributes["error.type"] == "JobNotFound"
    assert by_name["POST /api/v1/jobs"].status.status_code is StatusCode.ERROR


def test_json_log_lines_carry_the_trace_id(observed_api: Any, spans: Any, capsys: Any, reset_structlog: Any) -> None:
    from pfcon.entrypoints.logs import configure_logging

    configure_logging("INFO", cache=False, tracing=True)
    api, _ = observed_api(telemetry(exporter=spans))
    capsys.readouterr()
    spans.clear()
    assert api.submit("chris-jid-10").status_code == 201
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    request_log = next(line for line in lines if line.get("event") == "request" and line.get("job_id") == "chris-jid-10")
    request_span = next(s for s in spans.get_finished_spans() if s.name == "POST /api/v1/jobs")
    assert request_log["trace_id"] == format(request_span.context.trace_id, "032x")
    assert len(request_log["span_id"]) == 16


def test_tracing_options_come_from_the_settings() -> None:
    t = build_telemetry(version="1", scheduler="docker", storage="zipfile",
                        tracing=TracingOptions(exporters=("console",), service_name="pfcon-test"))  # fmt: skip
    try:
        assert t.tracer is not None
        assert t.provider.resource.attributes["service.name"] == "pfcon-test"
    finally:
        t.shutdown()
    off = build_telemetry(version="1", scheduler="docker", storage="zipfile", tracing=TracingOptions())
    assert off.tracer is None and off.active


def test_shutdown_does_not_wait_for_a_collector_that_never_answers() -> None:
    import threading

    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class Stuck(SpanExporter):
        def __init__(self) -> None:
            self.started, self.release, self.exported = threading.Event(), threading.Event(), 0

        def export(self, spans: Any) -> SpanExportResult:
            self.started.set()
            self.release.wait()
            self.exported += len(spans)
            return SpanExportResult.SUCCESS

    stuck = Stuck()
    t = telemetry(exporter=stuck, batch=True)
    with t.tracer.start_as_current_span("a request"):
        pass
    try:
        t.shutdown(timeout=0.2)  # returns although the export it started is still blocked
        assert stuck.started.is_set() and stuck.exported == 0
    finally:
        stuck.release.set()


def test_a_result_the_metrics_cannot_read_never_fails_the_call() -> None:
    class Odd(FakeCompute):
        def info(self, name: str) -> Any:
            return "not a JobInfo"

    observed = instrument(Odd(), "compute", "docker", telemetry())
    assert observed.info("anything") == "not a JobInfo"


def test_tracing_works_with_metrics_disabled(observed_api: Any, spans: Any) -> None:
    t = build_telemetry(version="test", scheduler="docker", storage="zipfile", metrics_enabled=False, exporter=spans)
    api, _ = observed_api(t, METRICS_ENABLED="false")
    spans.clear()
    assert api.submit("chris-jid-11").status_code == 201
    assert {"POST /api/v1/jobs", "storage.stage", "compute.schedule"} <= {s.name for s in spans.get_finished_spans()}
    assert api.client.get("/metrics").status_code == 404


def test_the_readme_names_every_metric_the_server_exports() -> None:
    import re

    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    section = readme.split("### Metrics and tracing", 1)[1].split("\n### ", 1)[0]
    documented = set(re.findall(r"`(pfcon_[a-z_]+)`", section))
    text = telemetry().metrics.render()[0].decode()
    types = [line.split()[2:4] for line in text.splitlines() if line.startswith("# TYPE pfcon_")]
    exported = {name + "_total" if kind == "counter" and not name.endswith("_total") else name for name, kind in types}
    assert documented == exported
