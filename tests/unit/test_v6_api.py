"""pfcon 6's routes through the real app (fake compute, real storeBase): bodies, skipped
operations, idempotency, guards with pfcon's messages, 400/404/409 bodies, and what op
jobs get (command, mounts, user, parameters, credentials)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from pfcon.adapters.compute.fake import FakeCompute
from pfcon.adapters.storage.fake import FakeStorage
from pfcon.bootstrap import OP_DEFAULT_USER, build_container
from pfcon.config import load_settings
from pfcon.domain.model import INSTANCE_LABEL, JOB_TYPE_LABEL
from pfcon.entrypoints import cli
from pfcon.entrypoints.http.app import create_app

from ..conftest import API, Api, job_form, make_zip, tree
from ..contracts.storage import read_dir, write_files

IN, OUT = "home/u/feeds/1/in", "home/u/feeds/1/out"
SWIFT_KEY = "sw1ft-s3cret-key"
NO_COPY = "No copy job found. A copy job must complete successfully before scheduling a plugin job."


def fslink(app_factory: Callable[..., Api]) -> Api:
    api = app_factory(PFCON_INNETWORK="true", STORAGE_ENV="fslink")
    write_files(os.path.join(api.storebase, IN), {"a.txt": b"a", "lib.chrislink": b"home/u/lib"})
    write_files(os.path.join(api.storebase, "home/u/lib"), {"x.txt": b"x"})
    os.makedirs(os.path.join(api.storebase, OUT))
    return api


@pytest.fixture
def swift(storebase: str, tmp_path: Any) -> Iterator[Api]:
    """Swift mode (production settings, so nothing connects) with the store replaced by a fake."""
    environ = {
        "APPLICATION_MODE": "production", "SECRET_KEY": "k" * 40, "PFCON_USER": "pfcon", "PFCON_PASSWORD": "pfcon1234-prod",
        "PFCON_INNETWORK": "true", "STORAGE_ENV": "swift", "SWIFT_AUTH_URL": "http://127.0.0.1:9/auth/v1.0",
        "SWIFT_USERNAME": "chris:chris1234", "SWIFT_KEY": SWIFT_KEY, "SWIFT_CONTAINER_NAME": "users",
        "COMPUTE_VOLUME_TYPE": "host", "STOREBASE": storebase, "STOREBASE_MOUNT": storebase,
        "UPLOAD_DIR": str(tmp_path / "uploads"),
    }  # fmt: skip
    compute = FakeCompute()
    storage = FakeStorage(shared={f"{IN}/a.txt": b"a"})
    app = create_app(build_container(load_settings(environ), compute=compute, storage=storage))
    with TestClient(app) as client:
        yield Api(client, storebase, compute, "pfcon1234-prod")


def post(api: Api, kind: str, **form: Any) -> Any:
    return api.post(f"/{kind}jobs/", data=form)


def copy(api: Api, jid: str = "chris-jid-1", **form: Any) -> Any:
    return post(api, "copy", jid=jid, input_dirs=[IN], output_dir=OUT, **form)


def plugin(api: Api, jid: str = "chris-jid-1", **form: Any) -> Any:
    return api.post("/pluginjobs/", data=job_form(jid, input_dirs=[IN], output_dir=OUT, **form))


def params(api: Api, jid: str, name: str) -> Any:
    with open(os.path.join(api.storebase, f"key-{jid}", name)) as f:
        return json.load(f)


def skipped(kind: str, jid: str = "chris-jid-1") -> dict[str, Any]:
    return {"compute": {"jid": jid, "image": "", "cmd": "", "status": "finishedSuccessfully",
                        "message": f"{kind}Skipped", "timestamp": "", "logs": ""}}  # fmt: skip


# -- server info ---------------------------------------------------------------------------


@pytest.mark.parametrize(("env", "copy_job", "upload_job"), [
    ({}, False, False),
    ({"PFCON_INNETWORK": "true", "STORAGE_ENV": "filesystem"}, False, False),
    ({"PFCON_INNETWORK": "true", "STORAGE_ENV": "fslink"}, True, False),
])  # fmt: skip
def test_server_info_on_every_list_route(app_factory: Any, env: dict[str, str], copy_job: bool, upload_job: bool) -> None:
    api = app_factory(**env)
    for kind in ("plugin", "copy", "upload", "delete"):
        body = api.get(f"/{kind}jobs/").json()
        assert list(body) == ["server_version", "pfcon_innetwork", "storage_env", "requires_copy_job",
                              "requires_upload_job", "container_env", "compute_volume_type"]  # fmt: skip
        assert (body["requires_copy_job"], body["requires_upload_job"]) == (copy_job, upload_job)
    assert "requires_copy_job" not in api.get("/jobs/").json()  # pfcon 5's stays as it was


def test_swift_server_info(swift: Api) -> None:
    body = swift.get("/pluginjobs/").json()
    assert body["requires_copy_job"] is body["requires_upload_job"] is True
    assert body["swift_auth_url"] == "http://127.0.0.1:9/auth/v1.0"


def test_v6_routes_need_a_token(app_factory: Any) -> None:
    api = app_factory()
    for method, path in [("GET", "/copyjobs/"), ("POST", "/pluginjobs/"), ("GET", "/uploadjobs/x/"),
                         ("DELETE", "/deletejobs/x/"), ("GET", "/pluginjobs/x/file/")]:  # fmt: skip
        r = api.client.request(method, API + path)
        assert r.status_code == 401 and r.json() == {"message": "Missing authorization header."}


# -- skipped operations ------------------------------------------------------------------


def test_zipfile_skips_copy_and_upload_and_delete_without_data(app_factory: Any) -> None:
    api = app_factory()
    assert copy(api).status_code == 201 and copy(api).json() == skipped("copy")
    r = post(api, "upload", jid="chris-jid-1", job_output_path="x")
    assert r.status_code == 201 and r.json() == skipped("upload")
    assert post(api, "delete", jid="chris-jid-1").json() == skipped("delete")
    assert api.compute.jobs == {} and tree(api.storebase) == []
    r = post(api, "copy", jid="Not/A-Job", output_dir="x")  # skipped or not, no such job could exist
    assert r.status_code == 400 and "jid" in r.json()["message"]


def test_copy_needs_output_dir_and_valid_limits(app_factory: Any) -> None:
    api = fslink(app_factory)
    r = post(api, "copy", jid="chris-jid-1", input_dirs=[IN])
    assert r.status_code == 400
    assert r.json() == {"message": {"output_dir": "Missing required parameter in the post body"}}
    r = post(api, "copy", output_dir=OUT, cpu_limit="1.5")
    assert r.json() == {"message": {"jid": "Missing required parameter in the post body",
                                    "cpu_limit": "invalid literal for int() with base 10: '1.5'"}}  # fmt: skip
    r = copy(api, memory_limit="1")
    assert r.status_code == 400 and "memory_limit" in r.json()["message"]
    assert api.compute.jobs == {}


@pytest.mark.parametrize("jid", ["a" * 57, "chris-jid-1-upload", "Bad"])
def test_ids_whose_op_job_names_would_not_fit_are_refused_not_truncated(app_factory: Any, jid: str) -> None:
    api = fslink(app_factory)
    for r in (copy(api, jid), plugin(api, jid), post(api, "delete", jid=jid)):
        assert r.status_code == 400, r.text
        assert "jid" in r.json()["message"]
    assert "56 characters" in copy(api, "a" * 57).json()["message"]["jid"]
    assert api.compute.jobs == {}
    assert copy(api, "a" * 56).status_code == 201
    assert "a" * 56 + "-copy" in api.compute.jobs


# -- copy ----------------------------------------------------------------------------------


def test_copy_schedules_the_op_job_and_is_idempotent(app_factory: Any) -> None:
    api = fslink(app_factory)
    r = copy(api, cpu_limit="500")
    assert r.status_code == 201, r.text
    compute = r.json()["compute"]
    image = load_settings({"APPLICATION_MODE": "dev"}).opjobs.image
    assert compute == {"jid": "chris-jid-1", "image": image, "cmd": "pfcon op copy /share/outgoing",
                       "status": "notStarted", "message": "created", "timestamp": compute["timestamp"], "logs": ""}  # fmt: skip
    job = api.compute.jobs["chris-jid-1-copy"].job
    assert job.labels == {JOB_TYPE_LABEL: "copy", INSTANCE_LABEL: "pfcon"}
    assert {(m.source, m.target, m.read_only) for m in job.mounts} == {
        ("key-chris-jid-1", "/share/outgoing", False), ("", "/share/incoming", False)}  # writable: to hard-link
    assert job.run_as is not None and job.run_as[0] != 0
    assert job.env == ()  # nothing to reach: no credentials
    assert (job.resources.cpu_limit, job.resources.memory_limit) == (500, 300)
    assert params(api, "chris-jid-1", "job_params.json") == {
        "jid": "chris-jid-1", "storage_env": "fslink", "input_dirs": [IN], "output_dir": OUT}
    api.compute.run("chris-jid-1-copy")
    api.compute.jobs["chris-jid-1-copy"].logs = "copying\n"
    again = copy(api)
    assert again.status_code == 201 and again.json()["compute"]["status"] == "started"
    assert again.json()["compute"]["logs"] == "copying\n"
    assert api.compute.removed == []
    api.compute.finish("chris-jid-1-copy", exit_code=1)
    assert copy(api).json()["compute"]["status"] == "notStarted"  # a failed copy is replaced
    assert api.compute.removed == ["chris-jid-1-copy"]


def test_copy_refuses_paths_outside_storebase_before_scheduling(app_factory: Any) -> None:
    api = fslink(app_factory)
    for dirs, out in [(["../etc"], OUT), (["key-x/incoming"], OUT), (["home/u/nope"], OUT), ([IN], "/../x")]:
        r = post(api, "copy", jid="chris-jid-1", input_dirs=dirs, output_dir=out)
        assert r.status_code == 400, (dirs, out, r.text)
    assert api.compute.jobs == {} and not os.path.exists(os.path.join(api.storebase, "key-chris-jid-1"))


def test_the_op_worker_copies_like_the_server_stages(app_factory: Any) -> None:
    """`pfcon op copy` on the key dir the server prepared: pfcon 5's staging code, links expanded."""
    api = fslink(app_factory)
    assert copy(api).status_code == 201
    key = os.path.join(api.storebase, "key-chris-jid-1")
    assert cli.main(["op", "copy", key, "--shared-root", api.storebase]) == 0
    assert read_dir(os.path.join(key, "incoming")) == {"a.txt": b"a", "home_u_lib/x.txt": b"x"}
    assert not os.path.exists(os.path.join(key, ".staging"))
    # a second run (a replaced, failed copy job) starts from scratch
    with open(os.path.join(key, "incoming", "stale.txt"), "w") as f:
        f.write("from a failed attempt")
    assert cli.main(["op", "copy", key, "--shared-root", api.storebase]) == 0
    assert sorted(read_dir(os.path.join(key, "incoming"))) == ["a.txt", "home_u_lib/x.txt"]


# -- plugin --------------------------------------------------------------------------------


def test_plugin_copy_guard(app_factory: Any) -> None:
    api = fslink(app_factory)
    r = plugin(api)
    assert r.status_code == 409 and r.json() == {"message": NO_COPY}
    copy(api)
    assert plugin(api).json() == {"message": "Copy job has not completed successfully (status: notStarted). Run the copy job first."}
    api.compute.run("chris-jid-1-copy")
    assert "(status: started)" in plugin(api).json()["message"]
    api.compute.finish("chris-jid-1-copy", exit_code=2)
    assert "(status: finishedWithError)" in plugin(api).json()["message"]
    assert "chris-jid-1" not in api.compute.jobs


def test_plugin_after_copy_runs_on_the_copied_input_and_is_idempotent(app_factory: Any) -> None:
    api = fslink(app_factory)
    copy(api)
    cli.main(["op", "copy", os.path.join(api.storebase, "key-chris-jid-1"), "--shared-root", api.storebase])
    api.compute.finish("chris-jid-1-copy")
    r = plugin(api)
    assert r.status_code == 201, r.text
    assert r.json()["data"] == {}
    assert r.json()["compute"]["status"] == "notStarted" and r.json()["compute"]["jid"] == "chris-jid-1"
    job = api.compute.jobs["chris-jid-1"].job
    assert {(m.source, m.target, m.read_only) for m in job.mounts} == {
        ("key-chris-jid-1/incoming", "/share/incoming", True), (OUT, "/share/outgoing", False)}
    assert job.run_as is None and job.labels == {JOB_TYPE_LABEL: "plugin", INSTANCE_LABEL: "pfcon"}
    api.compute.finish("chris-jid-1", logs="done\n")
    again = plugin(api)
    assert again.status_code == 201 and again.json()["compute"]["logs"] == "done\n"
    assert again.json()["data"] == {}
    # the output dir follows pfcon 5's rules
    copy(api, "chris-jid-2")
    api.compute.finish("chris-jid-2-copy")
    for bad in ("../x", "key-chris-jid-1/outgoing", "home/u/nope", None):
        r = api.post("/pluginjobs/", data=job_form("chris-jid-2", output_dir=bad))
        assert r.status_code == 400, r.text
        assert "output_dir" in r.json()["message"]
    assert "chris-jid-2" not in api.compute.jobs


def test_plugin_in_zipfile_mode_stages_in_the_request_and_replaces_a_failed_run(app_factory: Any) -> None:
    api = app_factory()
    files = {"data_file": ("data_file", make_zip({"a.txt": "a"}))}
    r = api.post("/pluginjobs/", data=job_form("chris-jid-1"), files=files)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["data"]["nfiles"] == 1 and body["data"]["jid"] == "chris-jid-1"
    assert body["compute"]["status"] == "notStarted"
    again = api.post("/pluginjobs/", data=job_form("chris-jid-1"), files=files)
    assert again.status_code == 201 and again.json()["data"] == {}  # the existing job, nothing staged
    api.compute.finish("chris-jid-1", exit_code=1)
    files = {"data_file": ("data_file", make_zip({"b.txt": "b", "c.txt": "c"}))}
    r = api.post("/pluginjobs/", data=job_form("chris-jid-1"), files=files)
    assert r.status_code == 201 and r.json()["data"]["nfiles"] == 2
    assert sorted(os.listdir(os.path.join(api.storebase, "key-chris-jid-1/incoming"))) == ["b.txt", "c.txt"]
    # no data_file: a 400, as in pfcon 5
    r = api.post("/pluginjobs/", data=job_form("chris-jid-2"))
    assert r.status_code == 400


def test_plugin_file_route(app_factory: Any) -> None:
    api = fslink(app_factory)
    write_files(os.path.join(api.storebase, OUT), {"r.txt": b"r", "evil.chrislink": b"home/victim"})
    r = api.get("/pluginjobs/chris-jid-1/file/", params={"job_output_path": OUT})
    assert r.status_code == 200 and r.json() == {"job_output_path": OUT, "rel_file_paths": ["r.txt"]}
    assert not os.path.exists(os.path.join(api.storebase, OUT, "evil.chrislink"))  # a plugin's link is never kept
    assert api.get("/pluginjobs/chris-jid-1/file/").status_code == 400
    r = api.get("/pluginjobs/chris-jid-1/file/", params={"job_output_path": "home/u/none"})
    assert r.status_code == 404
    zipped = app_factory()
    r = zipped.get("/pluginjobs/chris-jid-9/file/")
    assert r.status_code == 404 and "chris-jid-9" in r.json()["message"]


# -- upload (swift) -------------------------------------------------------------------------


def test_upload_guard_params_credentials_and_listing(swift: Api) -> None:
    assert copy(swift).status_code == 201
    copy_job = swift.compute.jobs["chris-jid-1-copy"].job
    assert {m.target for m in copy_job.mounts} == {"/share/outgoing"}  # no storeBase: the input comes from Swift
    assert f"SWIFT_KEY={SWIFT_KEY}" in copy_job.env
    assert os.path.isdir(os.path.join(swift.storebase, "key-chris-jid-1/outgoing"))
    r = post(swift, "upload", jid="chris-jid-1", job_output_path="home/u/out")
    assert r.status_code == 409
    assert r.json() == {"message": "No plugin job found. A plugin job must complete before scheduling an upload job."}
    swift.compute.finish("chris-jid-1-copy")
    assert plugin(swift).status_code == 201
    plugin_job = swift.compute.jobs["chris-jid-1"].job
    assert not any("SWIFT" in e for e in plugin_job.env)  # credentials never reach a plugin
    assert {(m.source, m.target) for m in plugin_job.mounts} == {
        ("key-chris-jid-1/incoming", "/share/incoming"), ("key-chris-jid-1/outgoing", "/share/outgoing")}
    swift.compute.run("chris-jid-1")
    assert post(swift, "upload", jid="chris-jid-1", job_output_path="home/u/out").json() == {
        "message": "Plugin job has not completed yet (status: started). The plugin job must finish before uploading."}
    swift.compute.finish("chris-jid-1", exit_code=1)  # outputs of a failed job are uploaded too
    r = post(swift, "upload", jid="chris-jid-1", job_output_path="/home/u/out")
    assert r.status_code == 201 and r.json()["compute"]["cmd"] == "pfcon op upload /share/outgoing"
    upload_job = swift.compute.jobs["chris-jid-1-upload"].job
    assert f"SWIFT_KEY={SWIFT_KEY}" in upload_job.env
    assert {m.target for m in upload_job.mounts} == {"/share/outgoing"}
    assert params(swift, "chris-jid-1", "upload_params.json") == {
        "jid": "chris-jid-1", "job_output_path": "home/u/out", "storage_env": "swift"}
    # the compute object never carries the environment, and no body carries the key
    for path in ("/copyjobs/chris-jid-1/", "/uploadjobs/chris-jid-1/", "/pluginjobs/chris-jid-1/"):
        assert SWIFT_KEY not in swift.get(path).text
    # the file route lists key-<jid>/outgoing under the path, uploading nothing
    write_files(os.path.join(swift.storebase, "key-chris-jid-1/outgoing"), {"o.txt": b"o", "x.chrislink": b"y"})
    r = swift.get("/pluginjobs/chris-jid-1/file/", params={"job_output_path": "home/u/out"})
    assert r.json() == {"job_output_path": "home/u/out", "rel_file_paths": ["o.txt"]}
    assert swift.get("/pluginjobs/chris-jid-7/file/", params={"job_output_path": "x/y"}).status_code == 404


def test_delete_jobs_get_no_credentials(swift: Api) -> None:
    copy(swift)
    swift.compute.finish("chris-jid-1-copy")
    r = post(swift, "delete", jid="chris-jid-1")
    assert r.status_code == 201
    assert swift.compute.jobs["chris-jid-1-delete"].job.env == ()


# -- delete ----------------------------------------------------------------------------------


def test_delete_guard_skip_idempotency_and_cleanup(app_factory: Any) -> None:
    api = fslink(app_factory)
    assert post(api, "delete", jid="chris-jid-1").json() == skipped("delete")  # no key dir
    copy(api)
    r = post(api, "delete", jid="chris-jid-1")
    assert r.status_code == 409 and r.json() == {"message": (
        "The copy job is still active (status: notStarted). All jobs must finish before scheduling a delete job.")}
    api.compute.finish("chris-jid-1-copy")
    r = post(api, "delete", jid="chris-jid-1", memory_limit="100")
    assert r.status_code == 201 and r.json()["compute"]["cmd"] == "pfcon op delete /share/outgoing"
    job = api.compute.jobs["chris-jid-1-delete"].job
    assert [(m.source, m.target) for m in job.mounts] == [("key-chris-jid-1", "/share/outgoing")]
    assert params(api, "chris-jid-1", "delete_params.json") == {"jid": "chris-jid-1"}
    assert post(api, "delete", jid="chris-jid-1").json()["compute"]["status"] == "notStarted"  # the same job
    assert list(api.compute.jobs) == ["chris-jid-1-copy", "chris-jid-1-delete"]
    # the op worker empties the key dir; removing the finished delete job removes the dir
    key = os.path.join(api.storebase, "key-chris-jid-1")
    assert cli.main(["op", "delete", key]) == 0
    assert os.listdir(key) == []
    api.compute.finish("chris-jid-1-delete")
    assert api.delete("/deletejobs/chris-jid-1/").status_code == 204
    assert not os.path.exists(key)
    assert os.path.isdir(os.path.join(api.storebase, OUT)) and os.path.isdir(os.path.join(api.storebase, IN))


def test_single_job_routes(app_factory: Any) -> None:
    api = fslink(app_factory)
    r = api.get("/copyjobs/chris-jid-1/")
    assert r.status_code == 404 and r.json() == {"message": "No such container: chris-jid-1-copy"}
    assert api.get("/pluginjobs/..%2Fx/").status_code == 404
    copy(api)
    api.compute.finish("chris-jid-1-copy", logs="copied 2 files\n")
    r = api.get("/copyjobs/chris-jid-1/")
    assert r.status_code == 200
    assert r.json()["compute"]["jid"] == "chris-jid-1" and r.json()["compute"]["logs"] == "copied 2 files\n"
    for kind in ("plugin", "copy", "upload", "delete"):
        r = api.delete(f"/{kind}jobs/chris-jid-1/")
        assert r.status_code == 204 and r.content == b""
    assert api.compute.jobs == {}
    assert os.path.isdir(os.path.join(api.storebase, "key-chris-jid-1"))  # DELETE of an op job keeps data
    assert api.delete("/copyjobs/never-was/").status_code == 204


def test_op_jobs_run_as_a_non_root_user(app_factory: Any) -> None:
    api = fslink(app_factory)
    copy(api)
    expected = OP_DEFAULT_USER if os.getuid() == 0 else (os.getuid(), os.getgid())
    assert api.compute.jobs["chris-jid-1-copy"].job.run_as == expected
    if os.getuid() == 0:
        assert os.stat(os.path.join(api.storebase, "key-chris-jid-1")).st_uid == expected[0]
        api2 = app_factory(PFCON_INNETWORK="true", STORAGE_ENV="fslink", CONTAINER_USER="2000:3000")
        write_files(os.path.join(api2.storebase, "home/v/in"), {"a": b"a"})
        os.makedirs(os.path.join(api2.storebase, "home/v/out"))
        post(api2, "copy", jid="chris-jid-5", input_dirs=["home/v/in"], output_dir="home/v/out")
        assert api2.compute.jobs["chris-jid-5-copy"].job.run_as == (2000, 3000)
