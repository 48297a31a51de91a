"""The Docker adapter's direct engine calls (ADR 25) against a fake engine on a Unix socket:
the SDK's request, the SDK's answer and the SDK's errors, over kept-alive connections."""

from __future__ import annotations

import json
import os
import socket
import socketserver
import struct
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import requests.exceptions

from pfcon.adapters.compute.engine_connections import share_engine_connections
from pfcon.adapters.compute.engine_direct import DirectEngineAPI, demux_logs, direct_engine_api

Answer = tuple[int, dict[str, str], bytes]


def frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(payload)) + payload


class FakeEngine(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str) -> None:
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.connections = 0
        self.answer: Callable[[str, str, bytes], Answer] = lambda method, path, body: (200, {}, b"{}")
        self.close_after_answer = False
        self.drop_next_request = False
        super().__init__(path, Handler)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeEngine

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  # quiet
        pass

    def _serve(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.server.drop_next_request:  # an engine closing the connection without an answer
            self.server.drop_next_request = False
            self.close_connection = True
            return
        self.server.requests.append((self.command, self.path, dict(self.headers), body))
        status, headers, data = self.server.answer(self.command, self.path, body)
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        if self.server.close_after_answer:
            self.close_connection = True

    do_GET = do_POST = _serve


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[FakeEngine]:
    path = str(tmp_path / "engine.sock")
    server = FakeEngine(path)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def api(engine: FakeEngine) -> Iterator[DirectEngineAPI]:
    sdk = docker.APIClient(base_url=f"unix://{engine.server_address}", version="1.41", timeout=5)
    share_engine_connections(sdk)
    direct = direct_engine_api(sdk)
    assert isinstance(direct, DirectEngineAPI)
    yield direct
    direct.close()


def json_answer(status: int, value: Any) -> Answer:
    return status, {"Content-Type": "application/json"}, json.dumps(value).encode()


def test_create_sends_the_sdks_request_and_returns_the_engines_answer(engine: FakeEngine, api: Any) -> None:
    engine.answer = lambda method, path, body: json_answer(201, {"Id": "c0ffee", "Warnings": []})
    host_config = api.create_host_config(binds={"/in": {"bind": "/share", "mode": "rw"}}, mem_limit="200m")
    created = api.create_container(
        image="local/img:1",
        command=["sh", "-c", "true"],
        name="job-1",
        environment=["A=1"],
        labels={"k": "v"},
        user=None,
        host_config=host_config,
        detach=True,
    )
    assert created == {"Id": "c0ffee", "Warnings": []}
    [(method, path, headers, body)] = engine.requests
    assert (method, path) == ("POST", "/v1.41/containers/create?name=job-1")
    assert headers["Content-Type"] == "application/json"
    sent = json.loads(body)
    # exactly what the SDK's own create_container would send: its config, nulls left out
    expected = api.create_container_config(
        "local/img:1", ["sh", "-c", "true"], environment=["A=1"], labels={"k": "v"}, host_config=host_config, detach=True
    )
    assert sent == {k: v for k, v in expected.items() if v is not None}
    assert sent["HostConfig"]["Binds"] == ["/in:/share:rw"] and sent["Env"] == ["A=1"]


def test_start_inspect_and_logs_address_the_container_by_its_quoted_reference(engine: FakeEngine, api: Any) -> None:
    def answer(method: str, path: str, body: bytes) -> Answer:
        if path.endswith("/start"):
            return 204, {}, b""
        if "/logs" in path:
            return 200, {"Content-Type": "application/vnd.docker.raw-stream"}, frame(1, b"out\n") + frame(2, b"err\n")
        return json_answer(200, {"Id": "c0ffee", "Name": "/job-1"})

    engine.answer = answer
    assert api.start("job-1") is None
    assert api.inspect_container("job 1/x") == {"Id": "c0ffee", "Name": "/job-1"}
    assert api.logs("c0ffee", stdout=True, stderr=True, tail=1000) == b"out\nerr\n"
    assert api.logs("c0ffee", tail=-3) == b"out\nerr\n"
    paths = [(m, p) for m, p, _, _ in engine.requests]
    assert paths == [
        ("POST", "/v1.41/containers/job-1/start"),
        ("GET", "/v1.41/containers/job%201%2Fx/json"),  # a reference never adds path segments
        ("GET", "/v1.41/containers/c0ffee/logs?stderr=1&stdout=1&timestamps=0&follow=0&tail=1000"),
        ("GET", "/v1.41/containers/c0ffee/logs?stderr=1&stdout=1&timestamps=0&follow=0&tail=all"),
    ]
    assert engine.connections == 1  # all of it over one kept-alive connection


@pytest.mark.parametrize(
    ("status", "message", "error"),
    [
        (404, "No such image: local/nope:1", docker.errors.ImageNotFound),
        (404, "No such container: job-1", docker.errors.NotFound),
        (409, 'Conflict. The container name "/job-1" is already in use', docker.errors.APIError),
        (500, "Multiple IDs found with provided prefix: 0", docker.errors.APIError),
    ],
)
def test_an_engine_error_is_the_sdks_error(
    engine: FakeEngine, api: Any, status: int, message: str, error: type[Exception]
) -> None:
    engine.answer = lambda method, path, body: json_answer(status, {"message": message})
    with pytest.raises(error) as raised:
        api.inspect_container("job-1")
    assert type(raised.value) is error
    assert raised.value.status_code == status  # type: ignore[attr-defined]
    assert raised.value.explanation == message  # type: ignore[attr-defined]
    kind = "Client" if status < 500 else "Server"
    assert str(raised.value).startswith(f"{status} {kind} Error for http+docker://localhost/v1.41/containers/job-1/json")
    # the connection stays usable after an error answer
    engine.answer = lambda method, path, body: json_answer(200, {"Id": "x"})
    assert api.inspect_container("job-1") == {"Id": "x"}
    assert engine.connections == 1


def test_an_error_answer_that_is_not_json_keeps_its_text(engine: FakeEngine, api: Any) -> None:
    engine.answer = lambda method, path, body: (500, {"Content-Type": "text/plain"}, b"page broke\n")
    with pytest.raises(docker.errors.APIError) as raised:
        api.start("job-1")
    assert raised.value.explanation == "page broke"


@pytest.mark.parametrize("body", [b"<html>Moved Permanently</html>", b"[1, 2]"])
def test_an_answer_that_is_not_a_json_object_is_an_engine_error(engine: FakeEngine, api: Any, body: bytes) -> None:
    engine.answer = lambda method, path, data: (301, {"Content-Type": "text/html"}, body)
    with pytest.raises(requests.exceptions.RequestException):  # the adapter's engine errors
        api.inspect_container("job-1")


def test_an_empty_reference_is_refused_before_any_request(engine: FakeEngine, api: Any) -> None:
    for call in (api.inspect_container, api.start, api.logs):
        with pytest.raises(docker.errors.NullResource):
            call("")
    assert engine.requests == []


def test_a_connection_the_engine_closed_is_not_reused(engine: FakeEngine, api: Any) -> None:
    engine.close_after_answer = True  # e.g. an engine closing idle connections
    engine.answer = lambda method, path, body: json_answer(201, {"Id": "a"})
    for _ in range(3):
        assert api.create_container(image="i", name="n") == {"Id": "a"}
    assert engine.connections == 3 and len(engine.requests) == 3


@pytest.mark.parametrize("call", ["inspect", "start"])
def test_a_request_is_sent_again_when_a_kept_connection_drops_unanswered(
    engine: FakeEngine, api: Any, call: str
) -> None:
    engine.answer = lambda method, path, body: json_answer(200, {"Id": "a"})
    assert api.inspect_container("job-1") == {"Id": "a"}
    engine.drop_next_request = True  # the engine closes the kept connection, no answer
    if call == "inspect":
        assert api.inspect_container("job-1") == {"Id": "a"}
    else:
        api.start("job-1")
    assert engine.connections == 2 and len(engine.requests) == 2  # answered once, on a new connection


def test_a_new_connection_that_drops_unanswered_is_a_connection_error(engine: FakeEngine, api: Any) -> None:
    engine.drop_next_request = True
    with pytest.raises(requests.exceptions.ConnectionError):
        api.start("job-1")  # not sent twice: it was not a kept connection's close
    assert engine.connections == 1 and engine.requests == []


def test_an_engine_that_is_gone_is_a_connection_error(tmp_path: Path) -> None:
    sdk = docker.APIClient(base_url=f"unix://{tmp_path}/absent.sock", version="1.41", timeout=5)
    direct = direct_engine_api(sdk)
    with pytest.raises(requests.exceptions.ConnectionError):
        direct.inspect_container("job-1")
    with pytest.raises(requests.exceptions.ConnectionError):
        direct.create_container(image="i", name="n")


def test_an_engine_that_does_not_answer_in_time_is_a_timeout(tmp_path: Path) -> None:
    path = str(tmp_path / "mute.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    try:
        sdk = docker.APIClient(base_url=f"unix://{path}", version="1.41", timeout=0.2)
        with pytest.raises(requests.exceptions.Timeout):
            direct_engine_api(sdk).inspect_container("job-1")
    finally:
        listener.close()
        os.unlink(path)


def test_other_calls_are_the_sdk_clients() -> None:
    sdk = docker.APIClient(base_url="unix:///nonexistent/docker.sock", version="1.41")
    direct = direct_engine_api(sdk)
    assert isinstance(direct, DirectEngineAPI)
    assert direct.remove_container == sdk.remove_container and direct.events == sdk.events
    assert direct._version == "1.41"


def test_only_an_sdk_client_on_a_unix_socket_is_wrapped() -> None:
    tcp = docker.APIClient(base_url="tcp://127.0.0.1:2375", version="1.41")
    assert direct_engine_api(tcp) is tcp

    class Fake:  # a test's fake engine keeps being called as it is
        _custom_adapter = None

    fake = Fake()
    assert direct_engine_api(fake) is fake


def test_demux_joins_the_frames_payloads_in_order() -> None:
    body = frame(1, b"a\n") + frame(2, b"b\n") + frame(1, b"") + frame(1, b"c")
    assert demux_logs(body) == b"a\nb\nc"
    assert demux_logs(b"") == b""


@pytest.mark.parametrize(
    "raw",
    [
        b"plain tty output\n",  # a TTY container's raw stream
        frame(1, b"a\n")[:-1],  # a frame cut short
        b"\x01\x00\x00",  # shorter than a header
        b"\x03\x00\x00\x00\x00\x00\x00\x01x",  # not a stream number
        b"\x01\x00\x01\x00\x00\x00\x00\x01x",  # header's padding not zero
    ],
)
def test_a_body_that_is_not_a_frame_sequence_is_returned_as_it_is(raw: bytes) -> None:
    assert demux_logs(raw) == raw
