"""Black-box in-network job cycles (filesystem, fslink, swift) on real Docker via pfconclient 3.3.0."""

from __future__ import annotations

import io
import os
import uuid
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest
from pfconclient.client import Client
from pfconclient.exceptions import PfconRequestException

from ..contracts.storage import read_dir, write_files
from .conftest import _require
from .server import Server, remove_job_containers, start_server
from .test_e2e_zipfile import descriptors, wait_terminal

pytestmark = pytest.mark.docker

COPY_AND_TAMPER = (
    'cp -R "$0"/. "$1"/ && echo "home/victim" > "$1"/evil.chrislink && echo copied'
)


def jid() -> str:
    return f"in-{uuid.uuid4().hex[:12]}"


def _server(docker_client: Any, tmp_path_factory: Any, **env: str) -> Iterator[Server]:
    base = tmp_path_factory.mktemp(env.get("STORAGE_ENV", "x"))
    storebase = base / "storeBase"
    storebase.mkdir()
    server = start_server(str(storebase), str(base / "server.log"), PFCON_INNETWORK="true", **env)
    yield server
    server.stop()
    remove_job_containers(docker_client, "in-")


@pytest.fixture(scope="module")
def fs_server(docker_client: Any, tmp_path_factory: Any) -> Iterator[Server]:
    yield from _server(docker_client, tmp_path_factory, STORAGE_ENV="filesystem")


@pytest.fixture(scope="module")
def fslink_server(docker_client: Any, tmp_path_factory: Any) -> Iterator[Server]:
    yield from _server(docker_client, tmp_path_factory, STORAGE_ENV="fslink")


def feed_dirs(server: Server, files: dict[str, bytes]) -> tuple[str, str]:
    n = uuid.uuid4().hex[:8]
    inp, out = f"home/cube/feeds/feed_{n}/pl-dircopy_1/data", f"home/cube/feeds/feed_{n}/pl-app_2/data"
    write_files(os.path.join(server.storebase, inp), files)
    os.makedirs(os.path.join(server.storebase, out))  # CUBE creates the output dir itself
    return inp, out


def run_cycle(server: Server, inputs: list[str], output: str, script: str = COPY_AND_TAMPER) -> tuple[dict[str, Any], dict[str, Any], str]:
    client = Client(server.api, server.token())
    job = jid()
    d = descriptors(script=script, input_dirs=inputs, output_dir=output)
    submitted = client.submit_job(job, d)
    status = wait_terminal(client, job)
    listing = client.get_job_json_data(job, output)
    client.delete_job(job)
    with pytest.raises(PfconRequestException) as e:
        client.get_job_status(job)
    assert e.value.code == 404
    assert not os.path.exists(os.path.join(server.storebase, f"key-{job}"))
    return submitted, status, listing | {"jid": job}


def test_filesystem_cycle(fs_server: Server) -> None:
    files = {"a.txt": b"a", "sub/b.bin": os.urandom(1000)}
    inp, out = feed_dirs(fs_server, files)
    before = read_dir(os.path.join(fs_server.storebase, inp))
    submitted, status, listing = run_cycle(fs_server, [inp], out)
    assert submitted["data"]["nfiles"] == 2
    assert status["compute"]["status"] == "finishedSuccessfully"
    assert "copied" in status["compute"]["logs"]
    assert listing["job_output_path"] == out
    assert sorted(listing["rel_file_paths"]) == ["a.txt", "sub/b.bin"]
    produced = read_dir(os.path.join(fs_server.storebase, out))
    assert produced == files  # written directly into the ChRIS dir; the plugin's link file was removed
    assert read_dir(os.path.join(fs_server.storebase, inp)) == before


def test_filesystem_several_input_dirs(fs_server: Server) -> None:
    inp1, out = feed_dirs(fs_server, {"one.txt": b"1"})
    inp2, _ = feed_dirs(fs_server, {"two/t.txt": b"2"})
    submitted, _, listing = run_cycle(fs_server, [inp1, inp2], out)
    assert submitted["data"]["nfiles"] == 2
    assert sorted(listing["rel_file_paths"]) == ["one.txt", "two/t.txt"]


def test_fslink_cycle_with_chris_links(fslink_server: Server) -> None:
    root = fslink_server.storebase
    inp, out = feed_dirs(fslink_server, {"test.txt": b"t", "home_bob.chrislink": b"home/bob"})
    write_files(root, {"home/bob/PIPELINES_bob.chrislink": b"PIPELINES/bob", "PIPELINES/bob/pipeline.yml": b"p"})
    submitted, status, listing = run_cycle(fslink_server, [inp], out)
    assert submitted["data"]["nfiles"] == 2
    assert status["compute"]["status"] == "finishedSuccessfully"
    assert sorted(listing["rel_file_paths"]) == ["home_bob/PIPELINES_bob/pipeline.yml", "test.txt"]
    assert read_dir(os.path.join(root, out)) == {"test.txt": b"t", "home_bob/PIPELINES_bob/pipeline.yml": b"p"}
    assert read_dir(os.path.join(root, "home/bob")) == {"PIPELINES_bob.chrislink": b"PIPELINES/bob"}


def test_fslink_rejects_escapes_before_anything_runs(fslink_server: Server, docker_client: Any) -> None:
    client = Client(fslink_server.api, fslink_server.token())
    inp, out = feed_dirs(fslink_server, {"x.chrislink": b"../../../etc"})
    job = jid()
    with pytest.raises(PfconRequestException) as e:
        client.submit_job(job, descriptors(input_dirs=[inp], output_dir=out))
    assert e.value.code == 400
    with pytest.raises(PfconRequestException) as e:
        client.submit_job(job, descriptors(input_dirs=["home/cube/nope"], output_dir=out))
    assert e.value.code == 400
    assert not docker_client.containers.list(all=True, filters={"name": job})
    assert not os.path.exists(os.path.join(fslink_server.storebase, f"key-{job}"))


# -- Swift ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def swift_conn() -> Any:
    from swiftclient.client import Connection

    url = os.environ.get("SWIFT_AUTH_URL")
    if not url:
        _require("a Swift server", "SWIFT_AUTH_URL is not set (scripts/swift-aio.sh env)")
    conn = Connection(authurl=url, user=os.environ["SWIFT_USERNAME"], key=os.environ["SWIFT_KEY"], retries=2)
    try:
        conn.put_container(os.environ.get("SWIFT_CONTAINER_NAME", "users"))
    except Exception as e:  # noqa: BLE001
        _require("a Swift server", str(e))
    return conn


@pytest.fixture(scope="module")
def swift_server(docker_client: Any, swift_conn: Any, tmp_path_factory: Any) -> Iterator[Server]:
    yield from _server(docker_client, tmp_path_factory, STORAGE_ENV="swift")


def test_swift_cycle_with_links_and_idempotent_upload(swift_server: Server, swift_conn: Any) -> None:
    container = os.environ.get("SWIFT_CONTAINER_NAME", "users")
    n = uuid.uuid4().hex[:8]
    inp, out = f"t{n}/home/cube/feeds/1/in", f"t{n}/home/cube/feeds/1/out"
    objects = {
        f"{inp}/test.txt": b"t",
        f"{inp}/sub/ü.bin": bytes(range(256)),
        f"{inp}/bob.chrislink": f"t{n}/home/bob".encode(),
        f"t{n}/home/bob/pipeline.yml": b"p",
    }
    for name, content in objects.items():
        swift_conn.put_object(container, name, contents=content)
    client = Client(swift_server.api, swift_server.token())
    info = client.get_server_info()
    assert info["storage_env"] == "swift" and info["swift_auth_url"] == os.environ["SWIFT_AUTH_URL"]
    job = jid()
    submitted = client.submit_job(job, descriptors(script=COPY_AND_TAMPER, input_dirs=[inp], output_dir=out))
    assert submitted["data"]["nfiles"] == 3
    assert wait_terminal(client, job)["compute"]["status"] == "finishedSuccessfully"
    expected = sorted(["test.txt", "sub/ü.bin", f"t{n}_home_bob/pipeline.yml"])
    listing = client.get_job_json_data(job, out)
    assert listing == {"job_output_path": out, "rel_file_paths": listing["rel_file_paths"]}
    assert sorted(listing["rel_file_paths"]) == expected
    _, stored = swift_conn.get_container(container, prefix=out + "/", full_listing=True)
    assert sorted(o["name"][len(out) + 1 :] for o in stored) == expected
    stamps = {o["name"]: o["last_modified"] for o in stored}
    assert swift_conn.get_object(container, f"{out}/sub/ü.bin")[1] == bytes(range(256))
    # a repeated GET uploads nothing twice
    assert sorted(client.get_job_json_data(job, out)["rel_file_paths"]) == expected
    _, again = swift_conn.get_container(container, prefix=out + "/", full_listing=True)
    assert {o["name"]: o["last_modified"] for o in again} == stamps
    # without the parameter the outputs come back as a zip
    with zipfile.ZipFile(io.BytesIO(client.get_job_zip_data(job))) as z:
        assert sorted(z.namelist()) == expected
    client.delete_job(job)
    assert not os.path.exists(os.path.join(swift_server.storebase, f"key-{job}"))
    _, inputs_after = swift_conn.get_container(container, prefix=f"t{n}/home/", full_listing=True)
    assert {o["name"] for o in inputs_after} >= set(objects)


def test_swift_missing_input_prefix_is_400(swift_server: Server) -> None:
    client = Client(swift_server.api, swift_server.token())
    with pytest.raises(PfconRequestException) as e:
        client.submit_job(jid(), descriptors(input_dirs=["nothing/here"], output_dir="x/out"))
    assert e.value.code == 400
    assert not [n for n in os.listdir(swift_server.storebase) if n.startswith("key-")]
