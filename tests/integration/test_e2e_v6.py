"""Black-box: one real server per storage mode on real Docker, driven through whole job
cycles by python-pfconclient 4.0.0 (pfcon 6: copy, plugin, upload and delete jobs, the op
jobs running in this project's image) and by 3.3.0 (pfcon 5) against the same process.

pfconclient 4.0.0 runs in its own venv (.venv-pfconclient4, scripts/install.sh) through
``pfconclient4_driver.py``. ``MODES`` lists what a cycle expects of each mode; the s3
cycle runs once the S3 adapter is in the registry (skipped before, with the reason).
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import time
import uuid
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest
from pfconclient.client import Client

from ..contracts.storage import read_dir, write_files
from pfcon.bootstrap import OP_DEFAULT_USER

from .conftest import _require
from .server import ROOT, Server, start_server
from .test_e2e_zipfile import descriptors, wait_terminal

pytestmark = pytest.mark.docker

V4_PYTHON = os.path.join(ROOT, ".venv-pfconclient4", "bin", "python")
DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pfconclient4_driver.py")
OP_IMAGE = os.environ.get("PFCON_OP_IMAGE") or f"local/pfcon:{__import__('pfcon').__version__}"
SWIFT_CONTAINER = os.environ.get("SWIFT_CONTAINER_NAME", "users")
COPY_AND_TAMPER = 'cp -R "$0"/. "$1"/ && echo "home/victim" > "$1"/evil.chrislink && echo copied'

# What a pfcon 6 cycle does in each mode (pfcon's table; docs/wire-contract.md).
MODES = {
    "zipfile": {"copy": False, "upload": False, "innetwork": False},
    "filesystem": {"copy": False, "upload": False, "innetwork": True},
    "fslink": {"copy": True, "upload": False, "innetwork": True},
    "swift": {"copy": True, "upload": True, "innetwork": True},
    "s3": {"copy": True, "upload": True, "innetwork": True},
}


def jid() -> str:
    return f"v6-{uuid.uuid4().hex[:12]}"


def drive(server: Server, steps: list[dict[str, Any]], timeout: float = 600) -> list[dict[str, Any]]:
    """Run ``steps`` with python-pfconclient 4.0.0; one result per step."""
    if not os.path.exists(V4_PYTHON):
        _require("python-pfconclient 4.0.0", f"{V4_PYTHON} is missing (run scripts/install.sh)")
    request = {"url": server.api, "user": "pfcon", "password": "pfcon1234", "steps": steps}
    run = subprocess.run([V4_PYTHON, DRIVER], input=json.dumps(request), capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, run.stderr
    results: list[dict[str, Any]] = json.loads(run.stdout)["results"]
    return results


def ok(result: dict[str, Any]) -> Any:
    assert "ok" in result, result
    return result["ok"]


def remove_containers(docker_client: Any, prefix: str) -> None:
    for c in docker_client.containers.list(all=True):
        if c.name.startswith(prefix):
            c.remove(force=True)


@pytest.fixture(scope="session")
def op_image(docker_client: Any) -> str:
    try:
        docker_client.images.get(OP_IMAGE)
    except Exception as e:  # noqa: BLE001
        _require(f"the op-job image {OP_IMAGE}", f"{e} (build it with scripts/build-image.sh)")
    return OP_IMAGE


def _server(docker_client: Any, tmp_path_factory: Any, mode: str, **env: str) -> Iterator[Server]:
    base = tmp_path_factory.mktemp(f"v6-{mode}")
    storebase = base / "storeBase"
    storebase.mkdir()
    if mode != "zipfile":
        env.update(PFCON_INNETWORK="true", STORAGE_ENV=mode)
    server = start_server(str(storebase), str(base / "server.log"), PFCON_OP_NETWORK="host", **env)
    yield server
    server.stop()
    remove_containers(docker_client, "v6-")


@pytest.fixture(scope="module")
def zipfile_server(docker_client: Any, op_image: str, tmp_path_factory: Any) -> Iterator[Server]:
    yield from _server(docker_client, tmp_path_factory, "zipfile")


@pytest.fixture(scope="module")
def filesystem_server(docker_client: Any, op_image: str, tmp_path_factory: Any) -> Iterator[Server]:
    yield from _server(docker_client, tmp_path_factory, "filesystem")


@pytest.fixture(scope="module")
def fslink_server(docker_client: Any, op_image: str, tmp_path_factory: Any) -> Iterator[Server]:
    yield from _server(docker_client, tmp_path_factory, "fslink")


@pytest.fixture(scope="module")
def swift_conn() -> Any:
    from swiftclient.client import Connection

    url = os.environ.get("SWIFT_AUTH_URL")
    if not url:
        _require("a Swift server", "SWIFT_AUTH_URL is not set (scripts/swift-aio.sh env)")
    conn = Connection(authurl=url, user=os.environ["SWIFT_USERNAME"], key=os.environ["SWIFT_KEY"], retries=2)
    try:
        conn.put_container(SWIFT_CONTAINER)
    except Exception as e:  # noqa: BLE001
        _require("a Swift server", str(e))
    return conn


@pytest.fixture(scope="module")
def swift_server(docker_client: Any, op_image: str, swift_conn: Any, tmp_path_factory: Any) -> Iterator[Server]:
    yield from _server(docker_client, tmp_path_factory, "swift")


@pytest.fixture(scope="module")
def s3_client() -> Any:
    from pfcon import registry

    if registry.storage_mode("s3") is None:
        pytest.skip("s3 storage is not built yet (no 's3' entry in src/registry.py)")
    url = os.environ.get("S3_ENDPOINT_URL")
    if not url:
        _require("an S3 server", 'S3_ENDPOINT_URL is not set (eval "$(bash scripts/s3-server.sh env)")')
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3", endpoint_url=url, aws_access_key_id=os.environ.get("S3_ACCESS_KEY", "minioadmin"),
        aws_secret_access_key=os.environ.get("S3_SECRET_KEY", "minioadmin"),
        region_name=os.environ.get("S3_REGION_NAME", "us-east-1"),
        config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                      response_checksum_validation="when_required"),
    )  # fmt: skip
    try:
        client.head_bucket(Bucket=os.environ.get("S3_BUCKET_NAME", "users"))
    except Exception as e:  # noqa: BLE001
        _require("an S3 server", str(e))
    return client


@pytest.fixture(scope="module")
def s3_server(docker_client: Any, op_image: str, s3_client: Any, tmp_path_factory: Any) -> Iterator[Server]:
    yield from _server(docker_client, tmp_path_factory, "s3")


def make_zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, content in files.items():
            z.writestr(name, content)
    return buf.getvalue()


def v6_cycle(
    server: Server, mode: str, job: str, *, inputs: list[str] | None = None, output: str | None = None,
    zip_bytes: bytes | None = None, script: str = COPY_AND_TAMPER,
) -> dict[str, Any]:
    """CUBE's pfcon 6 flow (client-contract §3.3) with pfconclient 4.0.0; every response, by step."""
    flow = MODES[mode]
    names: list[str] = []
    steps: list[dict[str, Any]] = []

    def step(name: str, **s: Any) -> None:
        names.append(name)
        steps.append(s)

    step("info", call="get_server_info")
    if flow["copy"]:
        copy = {"input_dirs": inputs, "output_dir": output, "cpu_limit": 1000, "memory_limit": 300}
        step("copy", call="submit_job", args=["COPY", job, copy])
        step("copy_again", call="submit_job", args=["COPY", job, dict(copy)])  # CUBE retries by re-POSTing
        step("copy_done", wait="COPY", jid=job)
    d = descriptors(script=script)
    if flow["innetwork"]:
        d.update(input_dirs=inputs, output_dir=output)
    kwargs = {"data_file_b64": base64.b64encode(zip_bytes).decode()} if zip_bytes is not None else {}
    step("plugin", call="submit_job", args=["PLUGIN", job, d], kwargs=kwargs)
    step("plugin_done", wait="PLUGIN", jid=job)
    if flow["upload"]:
        upload = {"job_output_path": output, "cpu_limit": 1000, "memory_limit": 300}
        step("upload", call="submit_job", args=["UPLOAD", job, upload])
        step("upload_done", wait="UPLOAD", jid=job)
        step("upload_again", call="submit_job", args=["UPLOAD", job, dict(upload)])
    if flow["innetwork"]:
        step("files", call="get_plugin_job_json_data", args=[job, output])
    else:
        step("files", call="get_plugin_job_zip_data", args=[job])
    step("delete", call="submit_job", args=["DELETE", job, {}])
    step("delete_done", wait="DELETE", jid=job)
    for kind in ("COPY", "PLUGIN", "UPLOAD", "DELETE"):
        if kind == "COPY" and not flow["copy"] or kind == "UPLOAD" and not flow["upload"]:
            continue
        step(f"remove_{kind.lower()}", call="delete_job", args=[kind, job])
    step("gone", call="get_job_status", args=["PLUGIN", job])
    step("delete_again", call="submit_job", args=["DELETE", job, {}])
    return dict(zip(names, drive(server, steps), strict=True))


def check_cycle(server: Server, mode: str, job: str, r: dict[str, Any]) -> None:
    flow = MODES[mode]
    info = ok(r["info"])
    assert (info["requires_copy_job"], info["requires_upload_job"]) == (flow["copy"], flow["upload"])
    assert info["storage_env"] == mode
    if flow["copy"]:
        copy = ok(r["copy"])["compute"]
        assert copy["jid"] == job and copy["cmd"] == "pfcon op copy /share/outgoing" and copy["image"] == OP_IMAGE
        assert ok(r["copy_again"])["compute"]["timestamp"] and ok(r["copy_done"])["compute"]["status"] == "finishedSuccessfully", r["copy_done"]
    plugin = ok(r["plugin"])
    assert plugin["compute"]["status"] == "notStarted" and plugin["compute"]["logs"] == ""
    assert (plugin["data"] == {}) is flow["copy"]
    done = ok(r["plugin_done"])["compute"]
    assert done["status"] == "finishedSuccessfully", done
    assert "copied" in done["logs"]
    if flow["upload"]:
        assert ok(r["upload_done"])["compute"]["status"] == "finishedSuccessfully", r["upload_done"]
        assert ok(r["upload_again"])["compute"]["status"] == "finishedSuccessfully"  # the same job, not another
    delete = ok(r["delete_done"])["compute"]
    assert delete["status"] == "finishedSuccessfully" or delete["message"] == "deleteSkipped", delete
    for name, result in r.items():
        if name.startswith("remove_"):
            assert result == {"ok": None}, (name, result)
    assert r["gone"]["code"] == 404
    assert ok(r["delete_again"])["compute"]["message"] == "deleteSkipped"
    assert not os.path.exists(os.path.join(server.storebase, f"key-{job}"))


def v5_cycle(server: Server, job: str, **d: Any) -> dict[str, Any]:
    """pfcon 5's flow with python-pfconclient 3.3.0 against the same server."""
    client = Client(server.api, server.token())
    zip_bytes = d.pop("zip_bytes", None)
    submitted = client.submit_job(job, descriptors(**d), zip_bytes) if zip_bytes else client.submit_job(job, descriptors(**d))
    status = wait_terminal(client, job)
    out = d.get("output_dir")
    files = client.get_job_json_data(job, out) if out else client.get_job_zip_data(job)
    client.delete_job(job)
    return {"submitted": submitted, "status": status, "files": files}


# -- the cycles -----------------------------------------------------------------------------


def test_zipfile_cycles(zipfile_server: Server) -> None:
    job = jid()
    files = {"a.txt": b"a", "sub/b.bin": os.urandom(1000)}
    r = v6_cycle(zipfile_server, "zipfile", job, zip_bytes=make_zip(files))
    check_cycle(zipfile_server, "zipfile", job, r)
    assert ok(r["plugin"])["data"]["nfiles"] == 2
    with zipfile.ZipFile(io.BytesIO(base64.b64decode(ok(r["files"])["b64"]))) as z:
        assert sorted(z.namelist()) == ["a.txt", "sub/b.bin"]  # the plugin's link file is never sent
        assert z.read("sub/b.bin") == files["sub/b.bin"]
    v5 = v5_cycle(zipfile_server, jid(), zip_bytes=make_zip(files), script=COPY_AND_TAMPER)
    assert v5["status"]["compute"]["status"] == "finishedSuccessfully"
    with zipfile.ZipFile(io.BytesIO(v5["files"])) as z:
        assert sorted(z.namelist()) == ["a.txt", "sub/b.bin"]


def feed(server: Server, files: dict[str, bytes]) -> tuple[str, str]:
    n = uuid.uuid4().hex[:8]
    inp, out = f"home/cube/feeds/feed_{n}/pl-dircopy_1/data", f"home/cube/feeds/feed_{n}/pl-app_2/data"
    write_files(os.path.join(server.storebase, inp), files)
    os.makedirs(os.path.join(server.storebase, out))
    return inp, out


def test_filesystem_cycles(filesystem_server: Server) -> None:
    inp, out = feed(filesystem_server, {"a.txt": b"a", "sub/b.txt": b"b"})
    job = jid()
    r = v6_cycle(filesystem_server, "filesystem", job, inputs=[inp], output=out)
    check_cycle(filesystem_server, "filesystem", job, r)
    assert ok(r["plugin"])["data"]["nfiles"] == 2
    assert ok(r["files"]) == {"job_output_path": out, "rel_file_paths": ["a.txt", "sub/b.txt"]}
    assert read_dir(os.path.join(filesystem_server.storebase, out)) == {"a.txt": b"a", "sub/b.txt": b"b"}
    inp, out = feed(filesystem_server, {"c.txt": b"c"})
    v5 = v5_cycle(filesystem_server, jid(), input_dirs=[inp], output_dir=out, script=COPY_AND_TAMPER)
    assert v5["files"]["rel_file_paths"] == ["c.txt"]


def test_fslink_cycles_with_chris_links(fslink_server: Server, docker_client: Any) -> None:
    root = fslink_server.storebase
    inp, out = feed(fslink_server, {"test.txt": b"t", "home_bob.chrislink": b"home/bob"})
    write_files(root, {"home/bob/PIPELINES_bob.chrislink": b"PIPELINES/bob", "PIPELINES/bob/pipeline.yml": b"p"})
    job = jid()
    r = v6_cycle(fslink_server, "fslink", job, inputs=[inp], output=out)
    check_cycle(fslink_server, "fslink", job, r)
    expected = {"test.txt": b"t", "home_bob/PIPELINES_bob/pipeline.yml": b"p"}
    assert sorted(ok(r["files"])["rel_file_paths"]) == sorted(expected)
    assert read_dir(os.path.join(root, out)) == expected  # the plugin's evil.chrislink was removed
    assert "copied 2 files" in ok(r["copy_done"])["compute"]["logs"]
    inp2, out2 = feed(fslink_server, {"x.txt": b"x"})
    v5 = v5_cycle(fslink_server, jid(), input_dirs=[inp2], output_dir=out2, script=COPY_AND_TAMPER)
    assert v5["files"]["rel_file_paths"] == ["x.txt"]


def test_swift_cycles_with_links_and_upload(swift_server: Server, swift_conn: Any) -> None:
    n = uuid.uuid4().hex[:8]
    inp, out = f"t{n}/home/cube/feeds/1/in", f"t{n}/home/cube/feeds/1/out"
    objects = {f"{inp}/test.txt": b"t", f"{inp}/sub/ü.bin": bytes(range(256)),
               f"{inp}/bob.chrislink": f"t{n}/home/bob".encode(), f"t{n}/home/bob/pipeline.yml": b"p"}  # fmt: skip
    for name, content in objects.items():
        swift_conn.put_object(SWIFT_CONTAINER, name, contents=content)
    job = jid()
    r = v6_cycle(swift_server, "swift", job, inputs=[inp], output=out)
    check_cycle(swift_server, "swift", job, r)
    expected = sorted(["test.txt", "sub/ü.bin", f"t{n}_home_bob/pipeline.yml"])
    assert ok(r["info"])["swift_auth_url"] == os.environ["SWIFT_AUTH_URL"]
    assert sorted(ok(r["files"])["rel_file_paths"]) == expected
    _, stored = swift_conn.get_container(SWIFT_CONTAINER, prefix=out + "/", full_listing=True)
    assert sorted(o["name"][len(out) + 1 :] for o in stored) == expected  # uploaded once, no link file
    assert swift_conn.get_object(SWIFT_CONTAINER, f"{out}/sub/ü.bin")[1] == bytes(range(256))
    for name in ("copy_done", "upload_done", "plugin_done"):
        assert os.environ["SWIFT_KEY"] not in json.dumps(r[name])
    assert os.environ["SWIFT_KEY"] not in swift_server.logs()
    n2 = uuid.uuid4().hex[:8]
    swift_conn.put_object(SWIFT_CONTAINER, f"u{n2}/in/a.txt", contents=b"a")
    v5 = v5_cycle(swift_server, jid(), input_dirs=[f"u{n2}/in"], output_dir=f"u{n2}/out", script=COPY_AND_TAMPER)
    assert v5["files"]["rel_file_paths"] == ["a.txt"]


def test_s3_cycles_with_links_and_upload(s3_server: Server, s3_client: Any) -> None:
    bucket = os.environ.get("S3_BUCKET_NAME", "users")
    n = uuid.uuid4().hex[:8]
    inp, out = f"t{n}/home/cube/feeds/1/in", f"t{n}/home/cube/feeds/1/out"
    objects = {f"{inp}/test.txt": b"t", f"{inp}/sub/b.bin": bytes(range(256)),
               f"{inp}/bob.chrislink": f"t{n}/home/bob".encode(), f"t{n}/home/bob/pipeline.yml": b"p"}  # fmt: skip
    for name, content in objects.items():
        s3_client.put_object(Bucket=bucket, Key=name, Body=content)
    job = jid()
    r = v6_cycle(s3_server, "s3", job, inputs=[inp], output=out)
    check_cycle(s3_server, "s3", job, r)
    expected = sorted(["test.txt", "sub/b.bin", f"t{n}_home_bob/pipeline.yml"])
    assert ok(r["info"])["s3_endpoint_url"] == os.environ["S3_ENDPOINT_URL"]
    assert sorted(ok(r["files"])["rel_file_paths"]) == expected
    listed = s3_client.list_objects_v2(Bucket=bucket, Prefix=out + "/")
    assert sorted(o["Key"][len(out) + 1 :] for o in listed.get("Contents", [])) == expected  # no link file
    secret = os.environ.get("S3_SECRET_KEY", "minioadmin")
    for name in ("copy_done", "upload_done", "plugin_done"):
        assert secret not in json.dumps(r[name])
    assert secret not in s3_server.logs()
    n2 = uuid.uuid4().hex[:8]
    s3_client.put_object(Bucket=bucket, Key=f"u{n2}/in/a.txt", Body=b"a")
    v5 = v5_cycle(s3_server, jid(), input_dirs=[f"u{n2}/in"], output_dir=f"u{n2}/out", script=COPY_AND_TAMPER)
    assert v5["files"]["rel_file_paths"] == ["a.txt"]


# CONTAINER_USER a uid range: the op jobs run as its low end (a root server hands key-<jid>/ to
# it), the plugin as a uid of the range, which is not the owner of key-<jid>/outgoing.
RANGE_OWNER = 20000


@pytest.fixture(scope="module")
def s3_range_server(docker_client: Any, op_image: str, s3_client: Any, tmp_path_factory: Any) -> Iterator[Server]:
    yield from _server(docker_client, tmp_path_factory, "s3", CONTAINER_USER=f"{RANGE_OWNER}-{RANGE_OWNER + 999}:")


def test_s3_cycle_with_a_container_user_range(s3_range_server: Server, s3_client: Any) -> None:
    """The plugin writes into key-<jid>/outgoing (2775, the op jobs' user and group) through
    the op jobs' group, added to its container; the upload job uploads what it wrote, and
    the delete job plus the server remove it."""
    server = s3_range_server
    bucket = os.environ.get("S3_BUCKET_NAME", "users")
    n = uuid.uuid4().hex[:8]
    inp, out = f"r{n}/home/cube/feeds/1/in", f"r{n}/home/cube/feeds/1/out"
    for name, content in {f"{inp}/test.txt": b"t", f"{inp}/sub/b.bin": bytes(range(256))}.items():
        s3_client.put_object(Bucket=bucket, Key=name, Body=content)
    job = jid()
    script = COPY_AND_TAMPER + ' && echo "plugin uid=$(id -u) groups=$(id -G)"'
    r = v6_cycle(server, "s3", job, inputs=[inp], output=out, script=script)
    check_cycle(server, "s3", job, r)  # key-<jid>/ is gone, whoever wrote in it
    logs = ok(r["plugin_done"])["compute"]["logs"]
    line = next(x for x in logs.splitlines() if x.startswith("plugin uid="))
    uid, groups = line.removeprefix("plugin uid=").split(" groups=")
    assert RANGE_OWNER <= int(uid) <= RANGE_OWNER + 999, line
    assert str(RANGE_OWNER) in groups.split(), line  # the op jobs' group
    expected = sorted(["test.txt", "sub/b.bin"])
    assert sorted(ok(r["files"])["rel_file_paths"]) == expected
    listed = s3_client.list_objects_v2(Bucket=bucket, Prefix=out + "/")
    assert sorted(o["Key"][len(out) + 1 :] for o in listed.get("Contents", [])) == expected
    assert s3_client.get_object(Bucket=bucket, Key=f"{out}/sub/b.bin")["Body"].read() == bytes(range(256))


# -- op jobs on Docker Swarm: the same ContainerJob, as a service ----------------------------


@pytest.fixture(scope="module")
def swarm_fslink_server(docker_client: Any, op_image: str, tmp_path_factory: Any) -> Iterator[Server]:
    from .test_swarm_compute import job_services, require_swarm

    swarm = require_swarm(docker_client)
    base = tmp_path_factory.mktemp("v6-swarm")
    storebase = base / "storeBase"
    storebase.mkdir()
    server = start_server(str(storebase), str(base / "server.log"), CONTAINER_ENV="swarm",
                          PFCON_INNETWORK="true", STORAGE_ENV="fslink")  # fmt: skip
    yield server
    server.stop()
    for name in job_services(swarm):
        if name.startswith("v6-"):
            swarm.api.remove_service(name)


@pytest.mark.swarm
def test_fslink_cycles_on_swarm(swarm_fslink_server: Server, docker_client: Any) -> None:
    server = swarm_fslink_server
    inp, out = feed(server, {"test.txt": b"t", "home_bob.chrislink": b"home/bob"})
    write_files(server.storebase, {"home/bob/pipeline.yml": b"p"})
    job = jid()
    r = v6_cycle(server, "fslink", job, inputs=[inp], output=out)
    check_cycle(server, "fslink", job, r)
    assert read_dir(os.path.join(server.storebase, out)) == {"test.txt": b"t", "home_bob/pipeline.yml": b"p"}


# -- what op jobs are, on the engine --------------------------------------------------------


def test_op_containers_run_as_non_root_with_only_their_mounts_and_credentials(
    swift_server: Server, swift_conn: Any, docker_client: Any
) -> None:
    n = uuid.uuid4().hex[:8]
    swift_conn.put_object(SWIFT_CONTAINER, f"o{n}/in/a.txt", contents=b"a")
    job = jid()
    copy = {"input_dirs": [f"o{n}/in"], "output_dir": f"o{n}/out"}
    d = descriptors(input_dirs=[f"o{n}/in"], output_dir=f"o{n}/out")
    drive(swift_server, [{"call": "submit_job", "args": ["COPY", job, copy]}, {"wait": "COPY", "jid": job},
                         {"call": "submit_job", "args": ["PLUGIN", job, d]}, {"wait": "PLUGIN", "jid": job},
                         {"call": "submit_job", "args": ["UPLOAD", job, {"job_output_path": f"o{n}/out"}]},
                         {"wait": "UPLOAD", "jid": job}, {"call": "submit_job", "args": ["DELETE", job, {}]},
                         {"wait": "DELETE", "jid": job}])  # fmt: skip
    key = f"SWIFT_KEY={os.environ['SWIFT_KEY']}"
    for suffix, has_key in (("-copy", True), ("-upload", True), ("", False), ("-delete", False)):
        c = docker_client.containers.get(job + suffix).attrs
        env = c["Config"]["Env"] or []
        assert (key in env) is has_key, suffix
        if suffix:
            assert c["Config"]["User"] and not c["Config"]["User"].startswith("0"), suffix
            assert {m["Destination"] for m in c["Mounts"]} == {"/share/outgoing"}, suffix
            assert c["Config"]["Labels"]["org.chrisproject.job_type"] == suffix[1:]
    drive(swift_server, [{"call": "delete_job", "args": [k, job]} for k in ("COPY", "PLUGIN", "UPLOAD", "DELETE")])
    assert not os.path.exists(os.path.join(swift_server.storebase, f"key-{job}"))


def test_fslink_copy_mounts_storebase_once_to_hard_link(fslink_server: Server, docker_client: Any) -> None:
    inp, out = feed(fslink_server, {"a.txt": b"a"})
    if os.getuid() == 0:  # files the op job's user may link (fs.protected_hardlinks)
        for dirpath, _, names in os.walk(os.path.join(fslink_server.storebase, inp)):
            for name in names:
                os.chown(os.path.join(dirpath, name), *OP_DEFAULT_USER)
    job = jid()
    r = drive(fslink_server, [{"call": "submit_job", "args": ["COPY", job, {"input_dirs": [inp], "output_dir": out}]},
                              {"wait": "COPY", "jid": job}])  # fmt: skip
    assert ok(r[1])["compute"]["status"] == "finishedSuccessfully", r
    source = os.stat(os.path.join(fslink_server.storebase, inp, "a.txt"))
    staged = os.stat(os.path.join(fslink_server.storebase, f"key-{job}", "incoming", "a.txt"))
    assert (staged.st_ino, staged.st_dev) == (source.st_ino, source.st_dev)  # a hard link, not a copy
    mounts = {m["Destination"]: (m["Source"], m["RW"]) for m in docker_client.containers.get(f"{job}-copy").attrs["Mounts"]}
    assert mounts == {"/share/outgoing": (os.path.join(fslink_server.storebase, f"key-{job}"), True),
                      "/share/incoming": (fslink_server.storebase, True)}  # fmt: skip
    # staged through storeBase's mount, the files are hard links (the op job owns them here)
    assert docker_client.containers.get(f"{job}-copy").attrs["Config"]["Env"] in (None, []) or not any(
        e.startswith(("SWIFT_", "S3_")) for e in docker_client.containers.get(f"{job}-copy").attrs["Config"]["Env"])
    drive(fslink_server, [{"call": "submit_job", "args": ["DELETE", job, {}]}, {"wait": "DELETE", "jid": job},
                          {"call": "delete_job", "args": ["COPY", job]}, {"call": "delete_job", "args": ["DELETE", job]}])  # fmt: skip
    assert not os.path.exists(os.path.join(fslink_server.storebase, f"key-{job}"))


def test_guards_and_errors_through_the_client(fslink_server: Server) -> None:
    inp, out = feed(fslink_server, {"a.txt": b"a"})
    job = jid()
    r = drive(fslink_server, [
        {"call": "submit_job", "args": ["PLUGIN", job, descriptors(input_dirs=[inp], output_dir=out)]},
        {"call": "submit_job", "args": ["COPY", "x" * 60, {"input_dirs": [inp], "output_dir": out}]},
        {"call": "submit_job", "args": ["COPY", job, {"input_dirs": ["../../etc"], "output_dir": out}]},
        {"call": "get_job_status", "args": ["COPY", job]},
        {"call": "delete_job", "args": ["UPLOAD", job]},
    ])
    assert r[0]["code"] == 409 and "No copy job found" in r[0]["error"]
    assert r[1]["code"] == 400 and "56 characters" in r[1]["error"]
    assert r[2]["code"] == 400
    assert r[3]["code"] == 404
    assert r[4] == {"ok": None}


# -- a restart in the middle of a copy loses nothing ----------------------------------------


def test_server_restart_during_a_copy(docker_client: Any, op_image: str, tmp_path: Any) -> None:
    storebase = tmp_path / "storeBase"
    storebase.mkdir()
    env = {"PFCON_INNETWORK": "true", "STORAGE_ENV": "fslink", "PFCON_OP_NETWORK": "host"}
    server = start_server(str(storebase), str(tmp_path / "server1.log"), **env)
    job = jid()
    try:
        inp, out = feed(server, {f"d{i // 500}/f{i:05d}.dat": b"x" * 64 for i in range(5000)})
        r = drive(server, [{"call": "submit_job", "args": ["COPY", job, {"input_dirs": [inp], "output_dir": out}]}])
        assert ok(r[0])["compute"]["status"] == "notStarted"
        server.process.kill()  # SIGKILL while the copy job runs
        server.process.wait(10)
        running = docker_client.containers.get(f"{job}-copy").attrs["State"]
        assert running["Status"] in ("created", "running"), running  # killed in the middle of the copy
        server = start_server(str(storebase), str(tmp_path / "server2.log"), **env)  # nothing carried over
        r = drive(server, [
            {"wait": "COPY", "jid": job},
            {"call": "submit_job", "args": ["PLUGIN", job, descriptors(input_dirs=[inp], output_dir=out)]},
            {"wait": "PLUGIN", "jid": job},
            {"call": "get_plugin_job_json_data", "args": [job, out]},
        ])
        assert ok(r[0])["compute"]["status"] == "finishedSuccessfully", r[0]
        assert "copied 5000 files" in ok(r[0])["compute"]["logs"]
        assert ok(r[2])["compute"]["status"] == "finishedSuccessfully", r[2]
        assert len(ok(r[3])["rel_file_paths"]) == 5000
    finally:
        server.stop()
        remove_containers(docker_client, job)


def test_op_job_logs_and_timing(fslink_server: Server) -> None:
    """An op job is a short-lived container: a small copy finishes within seconds."""
    inp, out = feed(fslink_server, {"a.txt": b"a"})
    job = jid()
    started = time.monotonic()
    r = drive(fslink_server, [{"call": "submit_job", "args": ["COPY", job, {"input_dirs": [inp], "output_dir": out}]},
                              {"wait": "COPY", "jid": job, "interval": 0.1}])  # fmt: skip
    assert ok(r[1])["compute"]["status"] == "finishedSuccessfully"
    assert time.monotonic() - started < 30
