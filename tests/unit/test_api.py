"""The seed-era API through the real Litestar app, with a fake compute backend."""

from __future__ import annotations

import base64
import io
import json
import os
import threading
import time
import zipfile
from typing import Any

import jwt
import pytest

from pfcon.adapters.compute.fake import FakeCompute
from pfcon.config import DEV_SECRET_KEY
from pfcon.domain.errors import ResourceUnavailable
from pfcon.domain.model import JobStatus

from ..conftest import API, Api, make_zip, spooled_uploads, tree

# every test runs on each way a POST body is handled (whole, streamed, prepared)
pytestmark = pytest.mark.usefixtures("body_path")

MISSING = "Missing required parameter in the post body"
NOT_FOUND = (
    "The requested URL was not found on the server. If you entered the URL manually "
    "please check your spelling and try again."
)


# -- health, auth -------------------------------------------------------------


def test_health_needs_no_auth(api: Api) -> None:
    r = api.client.get(f"{API}/health/")
    assert r.status_code == 200
    assert r.json() == {"health": "OK"}


def test_auth_token_is_hs256_jwt_for_48h(api: Api) -> None:
    before = int(time.time())
    r = api.client.post(f"{API}/auth-token/", json={"pfcon_user": "pfcon", "pfcon_password": "pfcon1234"})
    assert r.status_code == 200
    token = r.json()["token"]
    header_b64, payload_b64, _ = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    assert json.loads(base64.urlsafe_b64decode(pad(header_b64))) == {"alg": "HS256", "typ": "JWT"}
    claims = json.loads(base64.urlsafe_b64decode(pad(payload_b64)))
    assert set(claims) == {"pfcon_user", "exp"}
    assert claims["pfcon_user"] == "pfcon"
    assert before + 48 * 3600 <= claims["exp"] <= int(time.time()) + 48 * 3600 + 1


@pytest.mark.parametrize(
    "body",
    [
        {"pfcon_user": "pfcon", "pfcon_password": "wrong"},
        {"pfcon_user": "other", "pfcon_password": "pfcon1234"},
        {"pfcon_user": "", "pfcon_password": ""},
    ],
)
def test_wrong_credentials_are_400(api: Api, body: dict[str, str]) -> None:
    r = api.client.post(f"{API}/auth-token/", json=body)
    assert r.status_code == 400
    assert r.json() == {"message": "Unable to log in with provided credentials."}


def test_auth_missing_fields_are_bundled(api: Api) -> None:
    r = api.client.post(f"{API}/auth-token/", json={"pfcon_user": "pfcon"})
    assert r.status_code == 400
    assert r.json() == {
        "message": {
            "pfcon_password": "Missing required parameter in the JSON body or the post body or the query string"
        }
    }


def test_auth_requires_json(api: Api) -> None:
    r = api.client.post(f"{API}/auth-token/", data={"pfcon_user": "pfcon", "pfcon_password": "pfcon1234"})
    assert r.status_code == 415
    assert "application/json" in r.json()["message"]


def _token(claims: dict[str, Any], key: str = DEV_SECRET_KEY) -> str:
    return jwt.encode(claims, key, algorithm="HS256")


def _unsigned(claims: dict[str, Any]) -> str:
    enc = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()  # noqa: E731
    return f"{enc({'alg': 'none', 'typ': 'JWT'})}.{enc(claims)}."


FUTURE = int(time.time()) + 3600


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "Missing authorization header."),
        ({"Authorization": ""}, "Missing authorization header."),
        ({"Authorization": "bearer abc"}, "Invalid authorization header."),
        ({"Authorization": "Token abc"}, "Invalid authorization header."),
        ({"Authorization": "Bearer initial_token"}, "Invalid authorization token."),
        ({"Authorization": "Bearer  x"}, "Invalid authorization token."),
        ({"Authorization": "Bearer a.b.c"}, "Invalid authorization token."),
        ({"Authorization": f"Bearer {_unsigned({'pfcon_user': 'pfcon', 'exp': FUTURE})}"}, "Invalid authorization token."),
        ({"Authorization": f"Bearer {_token({'pfcon_user': 'pfcon', 'exp': FUTURE}, 'forged')}"}, "Invalid authorization token."),
        ({"Authorization": f"Bearer {_token({'pfcon_user': 'pfcon'})}"}, "Invalid authorization token."),
        ({"Authorization": f"Bearer {_token({'pfcon_user': 'pfcon', 'exp': 1000})}"}, "Expired authorization token."),
    ],
)
@pytest.mark.parametrize("path", ["/jobs/", "/jobs/chris-jid-1/", "/jobs/chris-jid-1/file/"])
def test_job_routes_reject_bad_tokens_with_401(api: Api, headers: dict[str, str], message: str, path: str) -> None:
    r = api.get(path, headers=headers)
    assert r.status_code == 401
    assert r.json() == {"message": message}


def test_token_with_extra_parts_is_accepted_like_pfcon(api: Api) -> None:
    r = api.get("/jobs/", headers={"Authorization": api.headers["Authorization"] + " extra"})
    assert r.status_code == 200


def test_post_and_delete_require_auth_and_leave_nothing(api: Api) -> None:
    r = api.post("/jobs/", headers={}, data={"jid": "chris-jid-1"})
    assert r.status_code == 401
    assert api.delete("/jobs/chris-jid-1/", headers={}).status_code == 401
    assert tree(api.storebase) == []


# -- server info, routing -------------------------------------------------------


def test_server_info(api: Api) -> None:
    r = api.get("/jobs/")
    assert r.status_code == 200
    body = r.json()
    assert body == {
        "server_version": body["server_version"],
        "pfcon_innetwork": False,
        "storage_env": "zipfile",
        "container_env": "docker",
        "compute_volume_type": "host",
    }
    assert isinstance(body["server_version"], str) and body["server_version"]


def test_podman_is_reported_as_docker(app_factory: Any) -> None:
    assert app_factory(CONTAINER_ENV="podman").get("/jobs/").json()["container_env"] == "docker"


def test_unknown_path_and_wrong_method_answer_json(api: Api) -> None:
    r = api.get("/nope/")
    assert r.status_code == 404
    assert r.json() == {"message": NOT_FOUND}
    r = api.client.put(f"{API}/jobs/", headers=api.headers)
    assert r.status_code == 405
    assert r.json() == {"message": "The method is not allowed for the requested URL."}
    r = api.client.post(f"{API}/health/")
    assert r.status_code == 405


def test_openapi_document_is_served(api: Api) -> None:
    r = api.client.get(f"{API}/schema/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    assert "/api/v1/jobs/{jid}/file/" in paths or "/api/v1/jobs/{jid}/file" in paths


# -- submit ----------------------------------------------------------------------


def test_submit_returns_pfcon_body_and_runs_the_right_command(api: Api) -> None:
    r = api.submit(env=["CHRIS_JID=chris-jid-1", "A=b=c"], args_path_flags=["--in"], args=["--in", "x/y", "--prefix", "lo"])
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"data", "compute"}
    data, compute = body["data"], body["compute"]
    assert data["jid"] == "chris-jid-1"
    assert data["nfiles"] == 1
    assert data["path"] == os.path.join(api.storebase, "key-chris-jid-1", "incoming")
    assert isinstance(data["timestamp"], str) and data["timestamp"]
    assert compute == {
        "jid": "chris-jid-1",
        "image": "local/pfcon-busybox:1",
        "cmd": "python3 /usr/local/bin/simpledsapp --in /share/incoming --prefix lo /share/incoming /share/outgoing",
        "status": "notstarted",
        "message": "created",
        "timestamp": "0001-01-01T00:00:00Z",
        "logs": "",
    }
    job = api.compute.jobs["chris-jid-1"].job
    assert job.env == ("CHRIS_JID=chris-jid-1", "A=b=c")
    mounts = {(m.source, m.target, m.read_only) for m in job.mounts}
    assert mounts == {
        ("key-chris-jid-1/incoming", "/share/incoming", True),
        ("key-chris-jid-1/outgoing", "/share/outgoing", False),
    }
    assert open(os.path.join(api.storebase, "key-chris-jid-1/incoming/data.txt")).read() == "hello"


@pytest.mark.parametrize(("plugin_type", "suffix"), [("fs", "/share/outgoing"), ("ts", "/share/outgoing")])
def test_fs_and_ts_get_only_the_output_dir(api: Api, plugin_type: str, suffix: str) -> None:
    r = api.submit(type=plugin_type, args=None)
    assert r.status_code == 201, r.text
    assert r.json()["compute"]["cmd"] == f"python3 /usr/local/bin/simpledsapp {suffix}"


def test_args_may_be_absent_and_a_list_sent_once_is_a_list(api: Api) -> None:
    assert api.submit("chris-jid-1", args=None).status_code == 201
    r = api.submit("chris-jid-2", args="--only", entrypoint="/bin/app")
    assert r.status_code == 201, r.text
    assert api.compute.jobs["chris-jid-2"].job.command == ("/bin/app", "--only", "/share/incoming", "/share/outgoing")


def test_urlencoded_repeated_keys_and_first_scalar_wins(api: Api) -> None:
    body = (
        "jid=chris-jid-3&jid=other&entrypoint=a&entrypoint=b&args=-x&args=1&auid=cube&number_of_workers=1"
        "&cpu_limit=500&cpu_limit=9&memory_limit=100&gpu_limit=0&image=img&type=fs&unknown=ignored"
    )
    r = api.post(
        "/jobs/",
        content=body,
        headers={**api.headers, "Content-Type": "application/x-www-form-urlencoded"},
    )
    # urlencoded has no data_file: the zipfile storage names the missing field
    assert r.status_code == 400
    assert r.json() == {"message": "data_file: field is required"}
    assert tree(api.storebase) == []


def test_home_workaround_does_not_accumulate(app_factory: Any) -> None:
    api = app_factory(ENABLE_HOME_WORKAROUND="yes")
    for i in range(3):
        assert api.submit(f"chris-jid-{i}", env=None).status_code == 201
    for i in range(3):
        assert api.compute.jobs[f"chris-jid-{i}"].job.env == ("HOME=/tmp",)


def test_empty_post_lists_every_missing_field(api: Api) -> None:
    r = api.post("/jobs/", data={})
    assert r.status_code == 400
    assert r.json() == {
        "message": {
            name: MISSING
            for name in (
                "jid", "auid", "image", "type", "number_of_workers", "cpu_limit",
                "memory_limit", "gpu_limit", "entrypoint",
            )
        }
    }


def test_json_body_is_ignored_like_pfcon(api: Api) -> None:
    r = api.post("/jobs/", json={"jid": "chris-jid-1"})
    assert r.status_code == 400
    assert "jid" in r.json()["message"]


def test_bad_int_and_bad_choice_are_bundled(api: Api) -> None:
    r = api.submit(cpu_limit="1.5", type="xx")
    assert r.status_code == 400
    assert r.json() == {
        "message": {
            "cpu_limit": "invalid literal for int() with base 10: '1.5'",
            "type": "xx is not a valid choice",
        }
    }
    assert tree(api.storebase) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("cpu_limit", "-1"),
        ("cpu_limit", "0"),
        ("memory_limit", "-5"),
        ("memory_limit", "99999999999999"),
        ("gpu_limit", "-1"),
        ("gpu_limit", "100000"),
        ("number_of_workers", "0"),
    ],
)
def test_absurd_resources_are_400_and_nothing_is_staged(api: Api, field: str, value: str) -> None:
    r = api.submit(**{field: value})
    assert r.status_code == 400
    assert field in r.json()["message"]
    assert tree(api.storebase) == []
    assert api.compute.jobs == {}


@pytest.mark.parametrize("jid", ["../evil", "a/../../x", "a/b", "UPPER", "-x", "x" * 64, "with space", "é"])
def test_bad_job_ids_are_400_and_nothing_is_written(api: Api, jid: str) -> None:
    r = api.submit(jid)
    assert r.status_code == 400
    assert "jid" in r.json()["message"]
    assert tree(api.storebase) == []
    assert sorted(os.listdir(os.path.dirname(api.storebase))) == ["storeBase", "uploads"]
    assert spooled_uploads(os.path.join(os.path.dirname(api.storebase), "uploads")) == []


def test_leading_slash_of_jid_is_stripped_like_pfcon(api: Api) -> None:
    r = api.submit("/chris-jid-9")
    assert r.status_code == 201
    assert r.json()["compute"]["jid"] == "chris-jid-9"


@pytest.mark.parametrize("env", [["NOEQUALS"], ["A=1", "=novalue"]])
def test_env_items_need_equals(api: Api, env: list[str]) -> None:
    r = api.submit(env=env)
    assert r.status_code == 400
    assert r.json() == {"message": {"env": 'must be a list of "key=value" strings'}}
    assert tree(api.storebase) == []


def test_missing_data_file_names_it(api: Api) -> None:
    r = api.submit(files={"other": ("x", b"y")})
    assert r.status_code == 400
    assert r.json() == {"message": "data_file: field is required"}
    assert tree(api.storebase) == []


@pytest.mark.parametrize(
    "payload",
    [
        b"not a zip at all",
        b"",
        make_zip({"a.txt": os.urandom(5000)})[:200],
        make_zip({"a.txt": os.urandom(5000)})[:-30],
    ],
    ids=["non-zip", "empty", "truncated-head", "truncated-tail"],
)
def test_bad_uploads_are_400_and_leave_nothing(api: Api, payload: bytes, tmp_path: Any) -> None:
    r = api.submit(zip_bytes=payload)
    assert r.status_code == 400
    assert r.json() == {"message": "data_file: Bad zip file"}
    assert tree(api.storebase) == []
    assert spooled_uploads(str(tmp_path / "uploads")) == []


def test_corrupt_member_is_400_and_leaves_nothing(api: Api) -> None:
    import random

    text = random.Random(1234).randbytes(4096).hex()
    raw = bytearray(make_zip({"a.txt": text}))
    raw[60] ^= 0xFF  # inside the compressed data of the first member (fixed data: deterministic)
    r = api.submit(zip_bytes=bytes(raw))
    assert r.status_code == 400
    assert tree(api.storebase) == []
    assert api.compute.jobs == {}


def test_unsafe_zip_entry_is_400(api: Api) -> None:
    r = api.submit(zip_bytes=make_zip({"../../escape.txt": "x"}))
    assert r.status_code == 400
    assert "unsafe entry" in r.json()["message"]
    assert tree(api.storebase) == []
    assert not os.path.exists(os.path.join(os.path.dirname(api.storebase), "escape.txt"))


def test_zip_bomb_is_refused_before_extraction(app_factory: Any) -> None:
    api = app_factory(ZIP_MAX_UNCOMPRESSED_BYTES=str(1024 * 1024))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("zeros.bin", b"\0" * (20 * 1024 * 1024))
    assert len(buf.getvalue()) < 100 * 1024
    r = api.submit(zip_bytes=buf.getvalue())
    assert r.status_code == 413
    assert "limit" in r.json()["message"]
    assert tree(api.storebase) == []


def test_entry_count_limit(app_factory: Any) -> None:
    api = app_factory(ZIP_MAX_ENTRIES="10")
    r = api.submit(zip_bytes=make_zip({f"f{i}.txt": "x" for i in range(11)}))
    assert r.status_code == 413
    assert tree(api.storebase) == []


def test_chrislinks_in_the_zip_are_expanded(api: Api) -> None:
    r = api.submit(
        zip_bytes=make_zip(
            {
                "test.txt": "t",
                "home_bob.chrislink": "home/bob",
                "home/bob/PIPELINES_bob.chrislink": "PIPELINES/bob",
                "PIPELINES/bob/pipeline.yml": "p",
            }
        )
    )
    assert r.status_code == 201, r.text
    assert r.json()["data"]["nfiles"] == 2
    incoming = os.path.join(api.storebase, "key-chris-jid-1", "incoming")
    assert tree(incoming) == ["home_bob", "home_bob/PIPELINES_bob", "home_bob/PIPELINES_bob/pipeline.yml", "test.txt"]


def test_chrislink_escaping_the_input_is_400(api: Api) -> None:
    r = api.submit(zip_bytes=make_zip({"x.chrislink": "../../../etc"}))
    assert r.status_code == 400
    assert tree(api.storebase) == []


def test_number_of_workers_other_than_one_is_400(api: Api) -> None:
    r = api.submit(number_of_workers="2")
    assert r.status_code == 400
    assert r.json() == {
        "message": "Compute environment only supports number_of_workers=1, got number_of_workers=2"
    }
    assert tree(api.storebase) == []


def test_missing_image_fails_fast_and_leaves_nothing(app_factory: Any) -> None:
    api = app_factory(compute=FakeCompute(images={"present:1"}))
    r = api.submit(image="absent:1")
    assert r.status_code == 400
    assert "absent:1" in r.json()["message"]
    assert tree(api.storebase) == []


def test_gpu_unavailable_is_503_and_leaves_nothing(api: Api) -> None:
    api.compute.fail_next_schedule = ResourceUnavailable("gpu_limit: this compute host cannot provide 1 GPU(s)")
    r = api.submit(gpu_limit="1")
    assert r.status_code == 503
    assert "GPU" in r.json()["message"]
    assert tree(api.storebase) == []
    assert api.compute.jobs == {}


def test_unexpected_error_is_generic_500_and_rolls_back(api: Api) -> None:
    api.compute.fail_next_schedule = RuntimeError("secret internals")
    r = api.submit()
    assert r.status_code == 500
    assert r.json() == {"message": "Internal Server Error"}
    assert tree(api.storebase) == []


def test_duplicate_job_id_is_409_and_leaves_the_first_job_alone(api: Api) -> None:
    assert api.submit(zip_bytes=make_zip({"first.txt": "1"})).status_code == 201
    api.compute.finish("chris-jid-1", 0, logs="done\n")
    out = os.path.join(api.storebase, "key-chris-jid-1", "outgoing", "result.txt")
    open(out, "w").write("result")
    r = api.submit(zip_bytes=make_zip({"second.txt": "2"}))
    assert r.status_code == 409
    assert "already exists" in r.json()["message"]
    assert tree(os.path.join(api.storebase, "key-chris-jid-1")) == [
        "incoming", "incoming/first.txt", "outgoing", "outgoing/result.txt"
    ]
    assert api.get("/jobs/chris-jid-1/").json()["compute"]["status"] == "finishedSuccessfully"


def test_concurrent_duplicates_create_exactly_one_job(api: Api) -> None:
    results: list[int] = []

    def post() -> None:
        results.append(api.submit().status_code)

    threads = [threading.Thread(target=post) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [201] + [409] * 5
    assert list(api.compute.jobs) == ["chris-jid-1"]


# -- status -------------------------------------------------------------------


def test_status_reports_logs_and_terminal_status_is_stable(api: Api) -> None:
    api.submit()
    assert api.get("/jobs/chris-jid-1/").json()["compute"]["status"] == "notstarted"
    api.compute.run("chris-jid-1")
    assert api.get("/jobs/chris-jid-1/").json()["compute"]["status"] == "started"
    api.compute.finish("chris-jid-1", exit_code=3, logs="line1\nline2\n")
    for _ in range(3):
        r = api.get("/jobs/chris-jid-1/")
        assert r.status_code == 200
        assert set(r.json()) == {"compute"}
        compute = r.json()["compute"]
        assert compute["status"] == "finishedWithError"
        assert compute["logs"] == "line1\nline2\n"
        assert compute["jid"] == "chris-jid-1"


class ThreadWatchingCompute(FakeCompute):
    """Records every scheduler query (and the thread that made it)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.state_threads: list[str] = []

    def state(self, name: str, log_tail: int) -> Any:
        self.state_threads.append(threading.current_thread().name)
        return super().state(name, log_tail)

    def known_state(self, name: str, log_tail: int) -> Any:
        job = self.jobs.get(name)
        if job is None or not job.status.is_terminal:
            return None
        return FakeCompute.state(self, name, log_tail)


def test_a_known_finished_state_is_answered_without_asking_the_scheduler(app_factory: Any) -> None:
    api = app_factory(compute=ThreadWatchingCompute())
    api.submit()
    api.submit("chris-jid-2")
    api.compute.run("chris-jid-1")
    assert api.get("/jobs/chris-jid-1/").json()["compute"]["status"] == "started"
    assert len(api.compute.state_threads) == 1  # a running job: the scheduler is asked
    api.compute.finish("chris-jid-1", exit_code=0, logs="done\n")
    for path in ("/jobs/chris-jid-1/", "/pluginjobs/chris-jid-1/"):
        compute = api.get(path).json()["compute"]
        assert (compute["status"], compute["logs"]) == ("finishedSuccessfully", "done\n")
    assert len(api.compute.state_threads) == 1  # the finished job was known: no query
    assert api.get("/jobs/chris-jid-2/").json()["compute"]["status"] == "notstarted"
    assert len(api.compute.state_threads) == 2


def test_the_auth_guard_runs_on_the_event_loop() -> None:
    """Litestar runs a sync guard in a worker thread: a thread hop on every request."""
    import inspect

    from pfcon.entrypoints.http.common import require_token

    assert inspect.iscoroutinefunction(require_token)


def test_logs_are_the_configured_tail(app_factory: Any) -> None:
    api = app_factory(JOB_LOGS_TAIL="2")
    api.submit()
    api.compute.finish("chris-jid-1", 0, logs="a\nb\nc\n")
    assert api.get("/jobs/chris-jid-1/").json()["compute"]["logs"] == "b\nc\n"


@pytest.mark.parametrize("jid", ["chris-jid-404", "..", "UPPER"])
def test_status_of_unknown_job_is_404(api: Api, jid: str) -> None:
    r = api.get(f"/jobs/{jid}/")
    assert r.status_code == 404
    assert "message" in r.json()


# -- outputs -------------------------------------------------------------------


def _write_outputs(api: Api, jid: str = "chris-jid-1") -> str:
    out = os.path.join(api.storebase, f"key-{jid}", "outgoing")
    os.makedirs(os.path.join(out, "sub", "empty"), exist_ok=True)
    open(os.path.join(out, "a.txt"), "wb").write(b"A" * 10)
    open(os.path.join(out, "sub", "b ü.bin"), "wb").write(bytes(range(256)))
    open(os.path.join(out, "evil.chrislink"), "w").write("home/victim")
    os.symlink("/etc/passwd", os.path.join(out, "link"))
    return out


def test_output_zip_has_regular_files_only(api: Api) -> None:
    api.submit()
    _write_outputs(api)
    api.compute.finish("chris-jid-1", exit_code=1)  # works for failed jobs too
    r = api.get("/jobs/chris-jid-1/file/")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/zip"
    assert r.headers["content-disposition"] == "attachment; filename=chris-jid-1.zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        assert sorted(z.namelist()) == ["a.txt", "sub/b ü.bin"]
        assert z.read("sub/b ü.bin") == bytes(range(256))
        assert z.read("a.txt") == b"A" * 10


def test_empty_output_is_a_valid_empty_zip(api: Api) -> None:
    api.submit()
    r = api.get("/jobs/chris-jid-1/file/", params={"job_output_path": "ignored"})
    assert r.status_code == 200
    assert zipfile.ZipFile(io.BytesIO(r.content)).namelist() == []


def test_output_of_unknown_job_is_404(api: Api) -> None:
    assert api.get("/jobs/chris-jid-7/file/").status_code == 404


# -- delete ---------------------------------------------------------------------


def test_delete_removes_job_and_data_then_everything_is_404(api: Api) -> None:
    api.submit()
    api.compute.run("chris-jid-1")
    r = api.delete("/jobs/chris-jid-1/")
    assert r.status_code == 204
    assert r.content == b""
    assert api.compute.removed == ["chris-jid-1"]
    assert tree(api.storebase) == []
    assert api.get("/jobs/chris-jid-1/").status_code == 404
    assert api.get("/jobs/chris-jid-1/file/").status_code == 404
    assert api.delete("/jobs/chris-jid-1/").status_code == 404


def test_delete_of_unknown_job_is_404_without_side_effects(api: Api) -> None:
    api.submit("chris-jid-1")
    r = api.delete("/jobs/chris-jid-2/")
    assert r.status_code == 404
    assert list(api.compute.jobs) == ["chris-jid-1"]
    assert tree(api.storebase)[0] == "key-chris-jid-1"


def test_remove_jobs_no_keeps_the_container(app_factory: Any) -> None:
    api = app_factory(REMOVE_JOBS="no")
    api.submit()
    assert api.delete("/jobs/chris-jid-1/").status_code == 204
    assert list(api.compute.jobs) == ["chris-jid-1"]
    assert tree(api.storebase) == []
    # the kept container still owns the id: a new submission is refused and rolled back
    r = api.submit()
    assert r.status_code == 409
    assert tree(api.storebase) == []


# -- non-blocking ------------------------------------------------------------------


class BlockingCompute(FakeCompute):
    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Event()

    def create(self, job: Any) -> Any:  # the first half of every submission's scheduling
        self.entered.set()
        assert self.release.wait(10)
        return super().create(job)


def test_health_and_status_answer_while_a_submit_blocks(app_factory: Any) -> None:
    compute = BlockingCompute()
    api = app_factory(compute=compute)
    done: list[int] = []
    t = threading.Thread(target=lambda: done.append(api.submit().status_code))
    t.start()
    try:
        assert compute.entered.wait(5)
        started = time.perf_counter()
        assert api.client.get(f"{API}/health/").status_code == 200
        assert api.get("/jobs/chris-jid-2/").status_code == 404
        assert time.perf_counter() - started < 2
        assert done == []  # the submission is still in flight
    finally:
        compute.release.set()
        t.join()
    assert done == [201]
    assert compute.jobs["chris-jid-1"].status is JobStatus.NOT_STARTED


# -- logging ----------------------------------------------------------------------


def test_logs_are_json_with_request_and_job_ids_and_no_secrets(app_factory: Any, capsys: Any, reset_structlog: Any) -> None:
    from pfcon.entrypoints.logs import configure_logging

    configure_logging("INFO", cache=False)
    api = app_factory(SECRET_KEY="s3cr3t-key-value", PFCON_PASSWORD="hunter2-password")
    capsys.readouterr()
    token = api.headers["Authorization"].split()[1]
    api.client.post(f"{API}/auth-token/", json={"pfcon_user": "pfcon", "pfcon_password": "hunter2-password"})
    api.submit()
    api.compute.fail_next_schedule = RuntimeError("boom")
    api.submit("chris-jid-2")
    err = capsys.readouterr().err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line.get("event") == "request"]
    assert any(r.get("job_id") == "chris-jid-1" and r["status"] == 201 for r in requests)
    assert all(r.get("request_id") and r.get("route") for r in requests)
    failure = [line for line in lines if line.get("event") == "unhandled_error"]
    assert failure and failure[0]["job_id"] == "chris-jid-2"
    for secret in (token, "s3cr3t-key-value", "hunter2-password"):
        assert secret not in err


def test_every_log_line_is_json_including_the_libraries_warnings(app_factory: Any, capsys: Any, reset_structlog: Any) -> None:
    import logging

    from pfcon.entrypoints.logs import configure_logging

    configure_logging("INFO", cache=False)
    api = app_factory()  # the app must not take the root logger over (Litestar's default)
    capsys.readouterr()
    api.client.get(f"{API}/health/")
    logging.getLogger("httpx").info("HTTP Request: GET http://slurmrestd/ (chatter)")
    logging.getLogger("urllib3.connectionpool").warning("Retrying after connection broken: secret=%s", "x")
    logging.getLogger("uvicorn.error").error("Exception in ASGI application", exc_info=ValueError("boom"))
    err = capsys.readouterr().err
    lines = [json.loads(line) for line in err.splitlines()]  # each one JSON, or this raises
    assert "chatter" not in err  # a library's INFO stays quiet
    warning = next(line for line in lines if line.get("logger") == "urllib3.connectionpool")
    assert warning["level"] == "warning" and warning["event"].startswith("Retrying after") and warning["timestamp"]
    error = next(line for line in lines if line.get("logger") == "uvicorn.error")
    assert error["level"] == "error" and "ValueError: boom" in error["exception"]
    assert any(line.get("event") == "request" for line in lines)


def test_each_response_carries_its_request_id(api: Api) -> None:
    import re

    given = api.client.get(f"{API}/health/", headers={"X-Request-Id": "cube-42"})
    assert given.headers["x-request-id"] == "cube-42"
    made = {api.client.get(f"{API}/health/").headers["x-request-id"] for _ in range(3)}
    assert len(made) == 3 and all(re.fullmatch(r"[0-9a-f]{32}", r) for r in made)
    long = api.client.get(f"{API}/health/", headers={"X-Request-Id": "x" * 500})
    assert long.headers["x-request-id"] == "x" * 64
