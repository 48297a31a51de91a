"""The CLI's job commands as a client of the HTTP API: against the real app (fake
compute), and with httpx.MockTransport for what a server may answer."""

from __future__ import annotations

import io
import json
import os
import socket
import threading
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import structlog
from multipart import MultipartParser

from pfcon.entrypoints import cli

from ..conftest import Api

URL = "http://testserver.local/api/v1/"
IMAGE = "local/pfcon-busybox:1"


@pytest.fixture(autouse=True)
def _no_client_env(monkeypatch: Any) -> None:
    for name in ("PFCON_URL", "PFCON_USER", "PFCON_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _quiet_server() -> Iterator[None]:
    """The in-process app's request log would otherwise share stdout with the CLI."""
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())
    yield
    structlog.reset_defaults()


def run(capsys: Any, *argv: str, client: httpx.Client | None = None) -> tuple[int, str, str]:
    code = cli.main(list(argv), http_client=client)
    out, err = capsys.readouterr()
    return code, out, err


# -- against the real app ------------------------------------------------------


def test_job_cycle_over_http(api: Api, tmp_path: Any, capsys: Any) -> None:
    indir = tmp_path / "in"
    (indir / "sub").mkdir(parents=True)
    (indir / "a.txt").write_text("alpha")
    (indir / "sub" / "b.txt").write_text("beta")
    script = 'cp -R "$0"/. "$1"'

    code, out, err = run(capsys, "submit", "cli-1", "--url", URL, "--image", IMAGE, "--input", str(indir),
                         "--env", "A=1", "--args-path-flag=--in", "--", "sh", "-c", script, "--in", "x",
                         client=api.client)
    assert code == 0, err
    body = json.loads(out)
    assert body["data"]["nfiles"] == 2
    assert body["compute"]["status"] == "notstarted"
    job = api.compute.jobs["cli-1"].job
    assert job.image == IMAGE
    assert job.command == ("sh", "-c", script, "--in", "/share/incoming", "/share/incoming", "/share/outgoing")
    assert "A=1" in job.env
    incoming = os.path.join(api.storebase, "key-cli-1", "incoming")
    with open(os.path.join(incoming, "sub", "b.txt")) as f:
        assert f.read() == "beta"

    code, out, err = run(capsys, "status", "cli-1", "--url", URL, client=api.client)
    assert code == 0, err
    assert json.loads(out)["status"] == "notstarted"

    api.compute.finish("cli-1", logs="copied\n")
    code, out, err = run(capsys, "status", "cli-1", "--url", URL, "--wait", client=api.client)
    assert code == 0, err
    status = json.loads(out)
    assert status["jid"] == "cli-1"
    assert status["status"] == "finishedSuccessfully"
    assert "logs" not in status
    assert run(capsys, "logs", "cli-1", "--url", URL, client=api.client) == (0, "copied\n", "")

    outgoing = os.path.join(api.storebase, "key-cli-1", "outgoing")
    os.makedirs(outgoing, exist_ok=True)
    with open(os.path.join(outgoing, "result.txt"), "w") as f:
        f.write("the output")
    target = str(tmp_path / "out.zip")
    code, out, err = run(capsys, "outputs", "cli-1", "--url", URL, "-o", target, client=api.client)
    assert (code, out.strip()) == (0, target), err
    assert zipfile.ZipFile(target).read("result.txt") == b"the output"
    assert [p for p in os.listdir(tmp_path) if p.endswith(".part")] == []

    assert run(capsys, "delete", "cli-1", "--url", URL, client=api.client)[0] == 0
    assert "cli-1" in api.compute.removed
    code, out, err = run(capsys, "status", "cli-1", "--url", URL, client=api.client)
    assert code == 1 and out == ""
    assert err.startswith("pfcon: ") and "cli-1" in err and err.count("\n") == 1


def test_status_wait_polls_until_the_job_ends(api: Api, tmp_path: Any, capsys: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(cli, "POLL_SECONDS", 0.01)
    (tmp_path / "in").mkdir()
    assert run(capsys, "submit", "cli-2", "--url", URL, "--image", IMAGE, "--input", str(tmp_path / "in"),
               "--", "true", client=api.client)[0] == 0
    api.compute.run("cli-2")
    timer = threading.Timer(0.3, api.compute.finish, args=("cli-2",), kwargs={"exit_code": 3})
    timer.start()
    try:
        code, out, err = run(capsys, "status", "cli-2", "--url", URL, "--wait", client=api.client)
    finally:
        timer.cancel()
    assert json.loads(out)["status"] == "finishedWithError"
    assert code == 1
    assert err.startswith("pfcon: job cli-2 finishedWithError")


def test_status_wait_gives_up_after_its_timeout(api: Api, tmp_path: Any, capsys: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(cli, "POLL_SECONDS", 0.01)
    (tmp_path / "in").mkdir()
    assert run(capsys, "submit", "cli-3", "--url", URL, "--image", IMAGE, "--input", str(tmp_path / "in"),
               "--", "true", client=api.client)[0] == 0
    code, out, err = run(capsys, "status", "cli-3", "--url", URL, "--wait", "--wait-timeout", "0.1", client=api.client)
    assert code == 1
    assert json.loads(out)["status"] == "notstarted"
    assert err == "pfcon: job cli-3 is still notstarted after 0.1 s\n"


def test_field_problems_from_the_server_are_printed_readably(api: Api, capsys: Any, tmp_path: Any) -> None:
    (tmp_path / "in").mkdir()
    code, out, err = run(capsys, "submit", "Not_A_Valid_Id", "--url", URL, "--image", IMAGE,
                         "--input", str(tmp_path / "in"), "--", "true", client=api.client)
    assert code == 1 and out == ""
    assert err.startswith("pfcon: jid: ") and err.count("\n") == 1
    assert "{" not in err


def test_wrong_credentials_are_reported(api: Api, capsys: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("PFCON_USER", "pfcon")
    monkeypatch.setenv("PFCON_PASSWORD", "wrong-password")
    code, out, err = run(capsys, "status", "cli-4", "--url", URL, client=api.client)
    assert code == 1 and out == ""
    assert err.startswith("pfcon: ") and err.count("\n") == 1


# -- with a mock server ----------------------------------------------------------


class Recorder:
    """A MockTransport server: records requests, logs in anyone, answers ``routes``."""

    def __init__(self, routes: dict[tuple[str, str], Callable[[httpx.Request], httpx.Response]] | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.routes = routes or {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        path = request.url.path
        if path.endswith("/auth-token/"):
            return httpx.Response(200, json={"token": "tok"})
        for (method, suffix), answer in self.routes.items():
            if request.method == method and path.endswith(suffix):
                return answer(request)
        return httpx.Response(404, json={"message": "not here"})

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self))


def form_parts(request: httpx.Request) -> list[Any]:
    content_type = request.headers["content-type"]
    assert content_type.startswith("multipart/form-data; boundary=")
    boundary = content_type.split("boundary=", 1)[1]
    return list(MultipartParser(io.BytesIO(request.content), boundary))


def test_submit_sends_pfcons_multipart_form_with_the_zipped_input(tmp_path: Any, capsys: Any) -> None:
    server = Recorder({("POST", "/jobs/"): lambda r: httpx.Response(200, json={"data": {}, "compute": {}})})
    indir = tmp_path / "in"
    (indir / "d").mkdir(parents=True)
    (indir / "d" / "f.txt").write_text("content")
    code, _, err = run(capsys, "submit", "j-1", "--image", "img:1", "--type", "fs", "--cpu-limit", "500",
                       "--memory-limit", "128", "--gpu-limit", "1", "--env", "A=1", "--env", "B=2",
                       "--args-path-flag=--p", "--input", str(indir), "--", "run.py", "--p", "x", "y",
                       client=server.client())
    assert code == 0, err
    login, submit = server.requests
    assert str(login.url) == "http://127.0.0.1:30005/api/v1/auth-token/"
    assert json.loads(login.content) == {"pfcon_user": "pfcon", "pfcon_password": "pfcon1234"}
    assert str(submit.url) == "http://127.0.0.1:30005/api/v1/jobs/"
    assert submit.headers["authorization"] == "Bearer tok"
    parts = form_parts(submit)
    fields: dict[str, list[str]] = {}
    for part in parts:
        if part.name != "data_file":
            assert part.filename is None
            fields.setdefault(part.name, []).append(part.value)
    assert fields == {
        "jid": ["j-1"], "entrypoint": ["run.py"], "args": ["--p", "x", "y"], "args_path_flags": ["--p"],
        "auid": ["pfcon-cli"], "number_of_workers": ["1"], "cpu_limit": ["500"], "memory_limit": ["128"],
        "gpu_limit": ["1"], "image": ["img:1"], "type": ["fs"], "env": ["A=1", "B=2"],
    }
    (upload,) = [p for p in parts if p.name == "data_file"]
    assert zipfile.ZipFile(io.BytesIO(upload.raw)).read("d/f.txt") == b"content"


def test_submit_in_network_sends_dirs_and_no_upload(capsys: Any) -> None:
    server = Recorder({("POST", "/jobs/"): lambda r: httpx.Response(200, json={"data": {}, "compute": {}})})
    code, _, err = run(capsys, "submit", "j-2", "--image", "img:1", "--input-dir", "home/a", "--input-dir", "home/b",
                       "--output-dir", "home/out", "--", "cmd", client=server.client())
    assert code == 0, err
    parts = form_parts(server.requests[-1])
    names = [p.name for p in parts]
    assert "data_file" not in names
    assert [p.value for p in parts if p.name == "input_dirs"] == ["home/a", "home/b"]
    assert [p.value for p in parts if p.name == "output_dir"] == ["home/out"]
    assert "args" not in names  # a command without arguments sends none, as CUBE does


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (httpx.Response(400, json={"message": {"jid": "Missing required parameter in the post body",
                                               "image": "bad"}}),
         "pfcon: jid: Missing required parameter in the post body; image: bad\n"),
        (httpx.Response(409, json={"message": "job 'j' already exists"}), "pfcon: job 'j' already exists\n"),
        (httpx.Response(502, text="<html>\n<b>Bad Gateway</b>\n</html>", headers={"content-type": "text/html"}),
         "pfcon: HTTP 502 Bad Gateway: <html> <b>Bad Gateway</b> </html>\n"),
        (httpx.Response(500, json={"detail": "boom"}), 'pfcon: HTTP 500 Internal Server Error: {"detail": "boom"}\n'),
    ],
)
def test_error_answers_are_one_line_and_exit_1(answer: httpx.Response, expected: str, capsys: Any) -> None:
    server = Recorder({("GET", "/jobs/j/"): lambda r: answer})
    assert run(capsys, "status", "j", client=server.client()) == (1, "", expected)


def test_a_refused_connection_says_how_to_start_the_server(capsys: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api/v1/"
    code, out, err = run(capsys, "status", "j", "--url", url)
    assert (code, out) == (1, "")
    assert err.startswith(f"pfcon: cannot connect to {url}")
    assert err.endswith("is the server running? start it with `make run`\n")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "env", "url", "credentials"),
    [
        ([], {}, "http://127.0.0.1:30005/api/v1/", ("pfcon", "pfcon1234")),
        ([], {"PFCON_URL": "http://h:1/api/v1", "PFCON_USER": "u", "PFCON_PASSWORD": "p"}, "http://h:1/api/v1/", ("u", "p")),
        (["--url", "http://x:2/api/v1/", "--user", "a", "--password", "b"],
         {"PFCON_URL": "http://h:1/api/v1/", "PFCON_USER": "u", "PFCON_PASSWORD": "p"}, "http://x:2/api/v1/", ("a", "b")),
        (["--user", "a"], {"PFCON_PASSWORD": "p"}, "http://127.0.0.1:30005/api/v1/", ("a", "p")),
    ],
)
def test_server_url_and_credentials(argv: list[str], env: dict[str, str], url: str, credentials: tuple[str, str],
                                    capsys: Any, monkeypatch: Any) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    server = Recorder({("DELETE", "/jobs/j/"): lambda r: httpx.Response(204)})
    assert run(capsys, "delete", "j", *argv, client=server.client()) == (0, "", "")
    login, delete = server.requests
    assert str(login.url) == url + "auth-token/"
    assert json.loads(login.content) == {"pfcon_user": credentials[0], "pfcon_password": credentials[1]}
    assert (delete.method, str(delete.url)) == ("DELETE", url + "jobs/j/")


@pytest.mark.parametrize("argv", [["--user", "a"], ["--password", "b"]])
def test_half_the_credentials_is_a_usage_error(argv: list[str], capsys: Any) -> None:
    server = Recorder()
    code, _, err = run(capsys, "delete", "j", *argv, client=server.client())
    assert code == 2 and "give both a user and a password" in err
    assert server.requests == []


def test_submit_checks_its_arguments_before_any_request(tmp_path: Any, capsys: Any) -> None:
    server = Recorder()
    code, _, err = run(capsys, "submit", "j", "--image", "i", "--input", str(tmp_path / "missing"), "--", "true",
                       client=server.client())
    assert (code, err) == (1, f"pfcon: --input {tmp_path / 'missing'}: no such directory\n")
    code, _, err = run(capsys, "submit", "j", "--image", "i", client=server.client())
    assert code == 2 and "after '--'" in err
    assert server.requests == []


def test_outputs_streams_the_zip_to_the_file(tmp_path: Any, capsys: Any) -> None:
    payload = os.urandom(3 * cli.DOWNLOAD_CHUNK + 5)

    def answer(request: httpx.Request) -> httpx.Response:
        chunks = (payload[i : i + 65536] for i in range(0, len(payload), 65536))
        return httpx.Response(200, content=chunks, headers={"content-type": "application/zip"})

    server = Recorder({("GET", "/jobs/j/file/"): answer})
    target = tmp_path / "o.zip"
    assert run(capsys, "outputs", "j", "-o", str(target), client=server.client()) == (0, f"{target}\n", "")
    assert target.read_bytes() == payload


def test_outputs_listing_and_errors_leave_no_file(tmp_path: Any, capsys: Any, monkeypatch: Any) -> None:
    listing = {"job_output_path": "home/out", "rel_file_paths": ["a.txt"]}
    server = Recorder({
        ("GET", "/jobs/j/file/"): lambda r: httpx.Response(200, json=listing)
        if r.url.params.get("job_output_path") == "home/out" else httpx.Response(404, json={"message": "no output"}),
    })
    code, out, err = run(capsys, "outputs", "j", "--job-output-path", "home/out", client=server.client())
    assert (code, json.loads(out), err) == (0, listing, "")
    monkeypatch.chdir(tmp_path)
    assert run(capsys, "outputs", "j", client=server.client()) == (1, "", "pfcon: no output\n")
    assert os.listdir(tmp_path) == []


def test_in_process_is_an_option_of_every_job_command() -> None:
    parser = cli.build_parser()
    for argv in (["submit", "j", "--image", "i"], ["status", "j"], ["logs", "j"], ["outputs", "j"], ["delete", "j"],
                 ["list"], ["cancel", "j"]):
        assert parser.parse_args([*argv, "--in-process"]).in_process is True
        assert parser.parse_args(argv).in_process is False


# -- the operator's commands: list and cancel (issue 12) -------------------------------------


def _submit(api: Api, capsys: Any, tmp_path: Any, jid: str) -> None:
    (tmp_path / "in").mkdir(exist_ok=True)
    code, _, err = run(capsys, "submit", jid, "--url", URL, "--image", IMAGE, "--input", str(tmp_path / "in"),
                       "--cpu-limit", "500", "--memory-limit", "200", "--", "true", client=api.client)
    assert code == 0, err


def test_list_and_cancel_over_http(api: Api, tmp_path: Any, capsys: Any) -> None:
    code, out, err = run(capsys, "list", "--url", URL, client=api.client)
    assert (code, out.split(), err) == (0, list(cli.LIST_COLUMNS), "")  # the header only
    _submit(api, capsys, tmp_path, "cli-1")
    _submit(api, capsys, tmp_path, "cli-2")
    api.compute.run("cli-2")
    api.compute.jobs["cli-2"].logs = "working\n"

    code, out, err = run(capsys, "list", "--url", URL, "--json", client=api.client)
    assert code == 0, err
    jobs = json.loads(out)["jobs"]
    assert [(j["jid"], j["status"]) for j in jobs] == [("cli-2", "started"), ("cli-1", "notstarted")]
    assert jobs[0]["resources"] == {"number_of_workers": 1, "cpu_limit": 500, "memory_limit": 200, "gpu_limit": 0}

    code, out, err = run(capsys, "list", "--url", URL, client=api.client)
    assert code == 0, err
    header, first, second = out.splitlines()
    assert header.split() == list(cli.LIST_COLUMNS)
    assert first.split()[:3] == ["cli-2", "plugin", "started"]
    assert "500m" in first.split() and "200Mi" in first.split() and "fake-node" in first.split()
    assert second.split()[0] == "cli-1"

    code, out, err = run(capsys, "cancel", "cli-2", "--url", URL, client=api.client)
    assert code == 0, err
    cancelled = json.loads(out)
    assert (cancelled["jid"], cancelled["status"], cancelled["message"]) == ("cli-2", "finishedWithError", "cancelled")
    assert "logs" not in cancelled
    assert run(capsys, "logs", "cli-2", "--url", URL, client=api.client) == (0, "working\n", "")  # kept
    code, out, _ = run(capsys, "list", "--url", URL, "--json", client=api.client)
    assert json.loads(out)["jobs"][0]["message"] == "cancelled"

    code, out, err = run(capsys, "cancel", "cli-9", "--url", URL, client=api.client)
    assert code == 1 and out == "" and err.startswith("pfcon: ") and "cli-9" in err


def test_list_and_cancel_in_process(app_factory: Callable[..., Api], tmp_path: Any, capsys: Any,
                                    monkeypatch: Any) -> None:
    api = app_factory()
    service = api.client.app.state.container.job_service()
    monkeypatch.setattr(cli, "_service", lambda settings: service)
    monkeypatch.setattr(cli, "_settings", lambda: None)
    _submit(api, capsys, tmp_path, "cli-1")
    api.compute.run("cli-1")
    code, out, err = run(capsys, "list", "--in-process", "--json")
    assert code == 0, err
    [job] = json.loads(out)["jobs"]
    assert (job["jid"], job["status"], job["scheduler"]) == ("cli-1", "started", "docker")
    code, out, err = run(capsys, "cancel", "cli-1", "--in-process")
    assert code == 0, err
    assert json.loads(out)["message"] == "cancelled"
    assert run(capsys, "cancel", "cli-9", "--in-process")[0] == 1


def test_jobs_table_shows_age_and_dashes_for_the_unknown() -> None:
    import datetime

    now = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)
    jobs = [
        {"jid": "a", "kind": "copy", "status": "started", "created": "2026-01-01T11:58:30.000000Z",
         "image": "img", "resources": None, "node": "", "message": "x " * 100},
        {"jid": "b", "kind": "plugin", "status": "notstarted", "created": "", "image": "img2",
         "resources": {"cpu_limit": 250, "memory_limit": 64}, "node": "n1", "message": "created"},
    ]  # fmt: skip
    _, a, b = cli.jobs_table(jobs, now).splitlines()
    assert a.split()[:8] == ["a", "copy", "started", "1m", "img", "-", "-", "-"]
    assert a.endswith("...")
    assert b.split() == ["b", "plugin", "notstarted", "-", "img2", "250m", "64Mi", "n1", "created"]
    assert cli.age("2026-01-01T10:00:00Z", now) == "2h" and cli.age("2025-12-30T12:00:00Z", now) == "2d"
    assert cli.age("garbage", now) == ""
