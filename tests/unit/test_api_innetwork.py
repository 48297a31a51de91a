"""In-network modes (filesystem, fslink) through the real app with a fake compute."""

from __future__ import annotations

import os
from typing import Any

import pytest

from pfcon.adapters.storage.fake import FakeStorage

from ..conftest import Api, job_form, tree
from ..contracts.storage import read_dir, write_files


def setup_dirs(api: Api, files: dict[str, bytes], inp: str = "home/u/feeds/1/in", out: str = "home/u/feeds/1/out") -> None:
    write_files(os.path.join(api.storebase, inp), files)
    os.makedirs(os.path.join(api.storebase, out), exist_ok=True)


def submit(api: Api, jid: str = "chris-jid-1", input_dirs: Any = ("home/u/feeds/1/in",), output_dir: Any = "home/u/feeds/1/out", **kw: Any) -> Any:

    data = job_form(jid, **kw)
    if input_dirs is not None:
        data["input_dirs"] = list(input_dirs)
    if output_dir is not None:
        data["output_dir"] = output_dir
    return api.post("/jobs/", data=data)


def mounts(api: Api, jid: str = "chris-jid-1") -> dict[str, tuple[str, bool]]:
    return {m.target: (m.source, m.read_only) for m in api.compute.jobs[jid].job.mounts}


@pytest.fixture(params=["filesystem", "fslink"])
def shared(request: Any, app_factory: Any) -> Api:
    api: Api = app_factory(PFCON_INNETWORK="true", STORAGE_ENV=request.param)
    api.mode = request.param  # type: ignore[attr-defined]
    return api


def test_server_info_in_network(shared: Api) -> None:
    body = shared.get("/jobs/").json()
    assert body["pfcon_innetwork"] is True
    assert body["storage_env"] == shared.mode  # type: ignore[attr-defined]
    assert "swift_auth_url" not in body


def test_swift_server_info_reports_the_auth_url(app_factory: Any) -> None:
    from pfcon.bootstrap import build_container  # noqa: F401  (the real swift adapter is replaced)

    api = app_factory(
        PFCON_INNETWORK="true", STORAGE_ENV="swift", SWIFT_AUTH_URL="http://127.0.0.1:9/auth/v1.0",
        APPLICATION_MODE="production", SECRET_KEY="k" * 32, PFCON_USER="pfcon", PFCON_PASSWORD="pfcon-prod-pw",
        SWIFT_USERNAME="chris:chris1234", SWIFT_KEY="testing", SWIFT_CONTAINER_NAME="users",
    )
    body = api.get("/jobs/").json()
    assert body["storage_env"] == "swift"
    assert body["swift_auth_url"] == "http://127.0.0.1:9/auth/v1.0"


@pytest.mark.parametrize(
    ("missing", "message"),
    [("input_dirs", "input_dirs: field is required"), ("output_dir", "output_dir: field is required")],
)
def test_missing_in_network_fields(shared: Api, missing: str, message: str) -> None:
    setup_dirs(shared, {"a.txt": b"a"})
    r = submit(shared, **{missing: None})
    assert r.status_code == 400
    assert r.json() == {"message": message}
    assert not [n for n in os.listdir(shared.storebase) if n.startswith("key-")]


def test_filesystem_reads_in_place_and_writes_output_directly(app_factory: Any) -> None:
    api = app_factory(PFCON_INNETWORK="yes", STORAGE_ENV="filesystem")
    setup_dirs(api, {"a.txt": b"a", "sub/b.txt": b"b"})
    r = submit(api, input_dirs=["/home/u/feeds/1/in/"], output_dir="/home/u/feeds/1/out/")
    assert r.status_code == 201, r.text
    assert r.json()["data"]["nfiles"] == 2
    assert r.json()["data"]["path"] == os.path.join(api.storebase, "home/u/feeds/1/in")
    assert mounts(api) == {
        "/share/incoming": ("home/u/feeds/1/in", True),
        "/share/outgoing": ("home/u/feeds/1/out", False),
    }


def test_filesystem_makes_every_input_dir_visible(app_factory: Any) -> None:
    api = app_factory(PFCON_INNETWORK="yes", STORAGE_ENV="filesystem")
    setup_dirs(api, {"a.txt": b"a", "sub/b.txt": b"b"}, inp="home/u/one")
    setup_dirs(api, {"c.txt": b"c"}, inp="home/u/two")
    r = submit(api, input_dirs=["home/u/one", "home/u/two"])
    assert r.status_code == 201, r.text
    assert r.json()["data"]["nfiles"] == 3
    source, read_only = mounts(api)["/share/incoming"]
    assert read_only and source == "key-chris-jid-1/incoming"
    assert read_dir(os.path.join(api.storebase, source)) == {"a.txt": b"a", "sub/b.txt": b"b", "c.txt": b"c"}
    # hard links: the shared files are not copied
    assert os.stat(os.path.join(api.storebase, source, "c.txt")).st_ino == os.stat(
        os.path.join(api.storebase, "home/u/two/c.txt")
    ).st_ino


def test_fslink_copies_merges_and_expands_links(app_factory: Any) -> None:
    api = app_factory(PFCON_INNETWORK="yes", STORAGE_ENV="fslink")
    setup_dirs(api, {"test.txt": b"t", "home_bob.chrislink": b"home/bob"}, inp="home/u/one")
    setup_dirs(api, {"other.txt": b"o"}, inp="home/u/two")
    write_files(api.storebase, {"home/bob/PIPELINES_bob.chrislink": b"PIPELINES/bob", "PIPELINES/bob/p.yml": b"p"})
    r = submit(api, input_dirs=["home/u/one", "home/u/two"])
    assert r.status_code == 201, r.text
    assert r.json()["data"]["nfiles"] == 3
    source, _ = mounts(api)["/share/incoming"]
    assert read_dir(os.path.join(api.storebase, source)) == {
        "test.txt": b"t", "other.txt": b"o", "home_bob/PIPELINES_bob/p.yml": b"p"
    }
    assert mounts(api)["/share/outgoing"] == ("home/u/feeds/1/out", False)
    # the shared tree is untouched, link files included
    assert read_dir(os.path.join(api.storebase, "home/bob")) == {"PIPELINES_bob.chrislink": b"PIPELINES/bob"}


@pytest.mark.parametrize("target", ["home/u/feeds/1/out", "home/u/feeds", "home"])
def test_fslink_link_to_the_output_or_an_ancestor_is_400(app_factory: Any, target: str) -> None:
    api = app_factory(PFCON_INNETWORK="yes", STORAGE_ENV="fslink")
    setup_dirs(api, {"x.chrislink": target.encode()})
    r = submit(api)
    assert r.status_code == 400
    assert "Invalid input path" in r.json()["message"]
    assert not [n for n in os.listdir(api.storebase) if n.startswith("key-")]


@pytest.mark.parametrize(
    ("input_dirs", "output_dir"),
    [
        (["home/u/../../etc"], "home/u/feeds/1/out"),
        (["home/u/feeds/1/in"], "home/../.."),
        (["home/u/nonexistent"], "home/u/feeds/1/out"),
        (["home/u/escape"], "home/u/feeds/1/out"),
        (["home/u/feeds/1/in"], "home/u/escape"),
        (["key-other/incoming"], "home/u/feeds/1/out"),
        (["home/u/feeds/1/in"], "key-other/outgoing"),
        (["/"], "home/u/feeds/1/out"),
    ],
)
def test_paths_must_stay_inside_storebase(shared: Api, input_dirs: list[str], output_dir: str, tmp_path: Any) -> None:
    setup_dirs(shared, {"a.txt": b"a"})
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    os.symlink(str(outside), os.path.join(shared.storebase, "home/u/escape"))
    os.makedirs(os.path.join(shared.storebase, "key-other/incoming"))
    os.makedirs(os.path.join(shared.storebase, "key-other/outgoing"))
    r = submit(shared, input_dirs=input_dirs, output_dir=output_dir)
    assert r.status_code == 400, r.text
    assert shared.compute.jobs == {}
    assert not os.path.exists(os.path.join(shared.storebase, "key-chris-jid-1"))


def test_output_listing(shared: Api) -> None:
    setup_dirs(shared, {"a.txt": b"a"})
    assert submit(shared).status_code == 201
    out = os.path.join(shared.storebase, "home/u/feeds/1/out")
    write_files(out, {"r.txt": b"r", "d/e.txt": b"e", "evil.chrislink": b"home/victim"})
    os.symlink("/etc/passwd", os.path.join(out, "link"))
    r = shared.get("/jobs/chris-jid-1/file/", params={"job_output_path": "/home/u/feeds/1/out/"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == {"job_output_path": "home/u/feeds/1/out", "rel_file_paths": ["r.txt", "d/e.txt"]}
    assert not os.path.exists(os.path.join(out, "evil.chrislink"))  # plugin-written links are removed


def test_output_listing_errors(shared: Api) -> None:
    setup_dirs(shared, {"a.txt": b"a"})
    submit(shared)
    r = shared.get("/jobs/chris-jid-1/file/")
    assert r.status_code == 400
    assert r.json() == {"message": "job_output_path: query parameter is required"}
    r = shared.get("/jobs/chris-jid-1/file/", params={"job_output_path": "home/u/none"})
    assert r.status_code == 404
    r = shared.get("/jobs/chris-jid-1/file/", params={"job_output_path": "home/../../etc"})
    assert r.status_code == 400


def test_delete_never_touches_shared_dirs(shared: Api) -> None:
    setup_dirs(shared, {"a.txt": b"a"})
    submit(shared)
    write_files(os.path.join(shared.storebase, "home/u/feeds/1/out"), {"r.txt": b"r"})
    before = tree(os.path.join(shared.storebase, "home"))
    assert shared.delete("/jobs/chris-jid-1/").status_code == 204
    assert tree(os.path.join(shared.storebase, "home")) == before
    assert not os.path.exists(os.path.join(shared.storebase, "key-chris-jid-1"))
    assert shared.get("/jobs/chris-jid-1/").status_code == 404


def test_storage_can_be_swapped_for_a_fake(app_factory: Any, storebase: str) -> None:
    from pfcon.adapters.compute.fake import FakeCompute
    from pfcon.bootstrap import build_container
    from pfcon.config import load_settings
    from pfcon.entrypoints.http.app import create_app

    storage = FakeStorage(shared={"in/a.txt": b"a"})
    settings = load_settings(
        {"APPLICATION_MODE": "dev", "PFCON_INNETWORK": "true", "STORAGE_ENV": "fslink",
         "COMPUTE_VOLUME_TYPE": "host", "STOREBASE": storebase, "STOREBASE_MOUNT": storebase}
    )
    from litestar.testing import TestClient

    with TestClient(create_app(build_container(settings, compute=FakeCompute(), storage=storage))) as client:
        api = Api(client, storebase, None)
        r = api.post("/jobs/", data={**job_form(), "input_dirs": "in", "output_dir": "out"})
        assert r.status_code == 201, r.text
        assert storage.incoming["chris-jid-1"] == {"a.txt": b"a"}


def test_swift_outage_is_a_clear_503_logged_with_the_job_id(app_factory: Any, capsys: Any, reset_structlog: Any) -> None:
    import json
    import socket

    from pfcon.entrypoints.logs import configure_logging

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    configure_logging("INFO", cache=False)
    api = app_factory(
        PFCON_INNETWORK="true", STORAGE_ENV="swift", SWIFT_AUTH_URL=f"http://127.0.0.1:{port}/auth/v1.0",
        SWIFT_RETRIES="0", APPLICATION_MODE="production", SECRET_KEY="k" * 32, PFCON_USER="pfcon",
        PFCON_PASSWORD="pfcon-prod-pw", SWIFT_USERNAME="chris:chris1234", SWIFT_KEY="swift-secret-key",
        SWIFT_CONTAINER_NAME="users",
    )
    capsys.readouterr()
    r = submit(api, jid="chris-jid-5", input_dirs=["a/in"], output_dir="a/out")
    assert r.status_code == 503
    assert "Swift" in r.json()["message"]
    err = capsys.readouterr().err
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(e.get("event") == "backend_error" and e.get("job_id") == "chris-jid-5" for e in events)
    assert "swift-secret-key" not in err
    assert not [n for n in os.listdir(api.storebase) if n.startswith("key-")]


@pytest.mark.parametrize("path", ["/", "", "key-other", "/key-other/outgoing", "home/../key-other"])
def test_outputs_listing_never_reaches_the_root_or_a_jobs_private_data(app_factory: Any, storebase: str, path: str) -> None:
    os.makedirs(os.path.join(storebase, "key-other", "outgoing"))
    cube_link = os.path.join(storebase, "home", "a.chrislink")
    os.makedirs(os.path.dirname(cube_link))
    open(cube_link, "w").write("home/b")
    api = app_factory(PFCON_INNETWORK="true", STORAGE_ENV="fslink")
    r = api.get("/jobs/chris-jid-1/file/", params={"job_output_path": path})
    assert r.status_code == 400, r.text
    assert "job_output_path" in r.json()["message"]
    assert os.path.exists(cube_link)  # nothing was listed, nothing removed
