"""Black-box: the real server with CONTAINER_ENV=swarm on a one-node Docker Swarm, driven
by python-pfconclient 3.3.0 like CUBE — zipfile and fslink (in-network) storage, the real
ChRIS plugin image, refusals, and the swarm leaving under a running server."""

from __future__ import annotations

import io
import os
import subprocess
import time
import uuid
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from pfconclient.client import Client
from pfconclient.exceptions import PfconRequestException

from ..contracts.storage import read_dir, write_files
from .conftest import PLUGIN_IMAGE, _require
from .server import ROOT, Server, start_server
from .test_e2e_zipfile import descriptors, make_zip, read_tree, wait_terminal, write_tree
from .test_swarm_compute import job_services, require_swarm

pytestmark = pytest.mark.swarm

PREFIX = "sws-"
PLUGIN = {
    "image": PLUGIN_IMAGE,
    "entrypoint": ["python3", "/usr/local/bin/simpledsapp.py"],  # as CUBE runs it
    "args": ["--prefix", "lo"],
}


def jid() -> str:
    return f"{PREFIX}{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def swarm_client(docker_client: Any) -> Any:
    return require_swarm(docker_client)


def _server(swarm_client: Any, tmp_path_factory: Any, **env: str) -> Iterator[Server]:
    base = tmp_path_factory.mktemp(f"swarm-{env.get('STORAGE_ENV', 'zipfile')}")
    storebase = base / "storeBase"
    storebase.mkdir()
    server = start_server(str(storebase), str(base / "server.log"), CONTAINER_ENV="swarm", **env)
    yield server
    server.stop()
    for name in job_services(swarm_client):
        if name.startswith(PREFIX):
            swarm_client.api.remove_service(name)


@pytest.fixture(scope="module")
def server(swarm_client: Any, tmp_path_factory: Any) -> Iterator[Server]:
    yield from _server(swarm_client, tmp_path_factory)


@pytest.fixture(scope="module")
def fslink_server(swarm_client: Any, tmp_path_factory: Any) -> Iterator[Server]:
    yield from _server(swarm_client, tmp_path_factory, PFCON_INNETWORK="true", STORAGE_ENV="fslink")


@pytest.fixture
def client(server: Server) -> Client:
    return Client(server.api, server.token())


@pytest.fixture(scope="module")
def plugin_image(swarm_client: Any) -> str:
    try:
        swarm_client.images.get(PLUGIN_IMAGE)
    except Exception as e:  # noqa: BLE001
        _require(f"the plugin image {PLUGIN_IMAGE}", str(e))
    return PLUGIN_IMAGE


def no_key_dirs(server: Server) -> bool:
    return not [n for n in os.listdir(server.storebase) if n.startswith(f"key-{PREFIX}")]


# -- zipfile ------------------------------------------------------------------------------


def test_server_info(client: Client) -> None:
    info = client.get_server_info()
    assert (info["container_env"], info["compute_volume_type"], info["storage_env"]) == ("swarm", "host", "zipfile")


def test_zipfile_job_byte_exact(client: Client, server: Server, swarm_client: Any, tmp_path: Any) -> None:
    files = {
        "plain.txt": b"hello\n",
        "binary.bin": os.urandom(100_000),
        "big/eight-mib.bin": os.urandom(8 * 1024 * 1024),
        "ünïcødé/名前 with space.txt": "données".encode(),
        **{f"many/f{i:03d}.dat": os.urandom(64) for i in range(200)},
    }
    write_tree(tmp_path / "in", files)
    (tmp_path / "out").mkdir()
    job = jid()
    status = client.run_job(job, descriptors(), str(tmp_path / "in"), str(tmp_path / "out"))
    assert status == "finishedSuccessfully"
    assert read_tree(tmp_path / "out") == read_tree(tmp_path / "in")
    assert len(read_tree(tmp_path / "out")) == 204
    # run_job deletes the job at the end: the service and the data are gone
    assert job not in job_services(swarm_client)
    assert not os.path.exists(os.path.join(server.storebase, f"key-{job}"))
    with pytest.raises(PfconRequestException) as e:
        client.get_job_status(job)
    assert e.value.code == 404


def test_zipfile_real_chris_plugin(client: Client, plugin_image: str, tmp_path: Any) -> None:
    write_tree(tmp_path / "in", {"data/scan.txt": b"scan", "top.txt": b"top"})
    (tmp_path / "out").mkdir()
    status = client.run_job(jid(), descriptors(**PLUGIN), str(tmp_path / "in"), str(tmp_path / "out"))
    assert status == "finishedSuccessfully"
    outputs = {name: open(tmp_path / "out" / name, "rb").read() for name in read_tree(tmp_path / "out")}
    assert outputs == {"lotop.txt": b"top", os.path.join("data", "loscan.txt"): b"scan"}


def test_failing_and_out_of_memory_jobs(client: Client) -> None:
    failing, hog = jid(), jid()
    client.submit_job(failing, descriptors(script='echo "it broke" >&2; exit 3'), make_zip({"a.txt": b"a"}))
    client.submit_job(
        hog, descriptors(script="head -c 200000000 /dev/zero | sort > /dev/null", memory_limit=32),
        make_zip({"a.txt": b"a"}),
    )  # fmt: skip
    status = wait_terminal(client, failing)
    assert status["compute"]["status"] == "finishedWithError"
    assert status["compute"]["message"] == "task: non-zero exit (3)"
    assert "it broke" in status["compute"]["logs"]
    status = wait_terminal(client, hog)
    assert status["compute"]["status"] == "finishedWithError"
    assert status["compute"]["message"].startswith("out of memory"), status
    assert "32 MiB" in status["compute"]["message"]
    client.delete_job(failing)
    client.delete_job(hog)


def test_an_absent_image_is_accepted_then_reported(client: Client, server: Server) -> None:
    # The manager cannot know what its nodes have (docs/adr/0012-swarm.md): the status says.
    job = jid()
    response = client.submit_job(job, descriptors(image="local/not-here:1"), make_zip({"x.txt": b"x"}))
    assert response["compute"]["status"] == "notstarted"
    status = wait_terminal(client, job)
    assert status["compute"]["status"] == "finishedWithError"
    assert "No such image: local/not-here:1" in status["compute"]["message"]
    client.delete_job(job)
    assert no_key_dirs(server)


def test_refusals_create_nothing(client: Client, server: Server, swarm_client: Any) -> None:
    for extra, code, fragment in (
        ({"gpu_limit": 1}, 400, "cannot provide GPUs"),  # refused by the domain: Swarm declares no GPUs
        ({"number_of_workers": 2}, 400, "number_of_workers=1"),
    ):
        job = jid()
        started = time.monotonic()
        with pytest.raises(PfconRequestException) as e:
            client.submit_job(job, descriptors(**extra), make_zip({"x.txt": b"x"}))
        assert e.value.code == code, e.value
        assert fragment in str(e.value)
        assert time.monotonic() - started < 5
        assert job not in job_services(swarm_client)
        assert no_key_dirs(server)
        with pytest.raises(PfconRequestException) as e:
            client.get_job_status(job)
        assert e.value.code == 404


def test_duplicate_is_409_and_first_job_untouched(client: Client) -> None:
    job = jid()
    client.submit_job(job, descriptors(), make_zip({"x.txt": b"first"}))
    with pytest.raises(PfconRequestException) as e:
        client.submit_job(job, descriptors(), make_zip({"x.txt": b"second"}))
    assert e.value.code == 409
    assert wait_terminal(client, job)["compute"]["status"] == "finishedSuccessfully"
    client.delete_job(job)


def test_delete_running_job(client: Client, server: Server, swarm_client: Any) -> None:
    job = jid()
    client.submit_job(job, descriptors(script="sleep 120"), make_zip({"x.txt": b"x"}))
    deadline = time.monotonic() + 30
    while client.get_job_status(job)["compute"]["status"] != "started":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    client.delete_job(job)
    assert job not in job_services(swarm_client)
    assert not os.path.exists(os.path.join(server.storebase, f"key-{job}"))
    with pytest.raises(PfconRequestException) as e:
        client.get_job_status(job)
    assert e.value.code == 404


# -- fslink (in-network) ------------------------------------------------------------------------


def feed_dirs(server: Server, files: dict[str, bytes]) -> tuple[str, str]:
    n = uuid.uuid4().hex[:8]
    inp, out = f"home/cube/feeds/feed_{n}/pl-dircopy_1/data", f"home/cube/feeds/feed_{n}/pl-app_2/data"
    write_files(os.path.join(server.storebase, inp), files)
    os.makedirs(os.path.join(server.storebase, out))  # CUBE creates the output dir itself
    return inp, out


def fslink_cycle(server: Server, inputs: list[str], output: str, **d: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    client = Client(server.api, server.token())
    job = jid()
    client.submit_job(job, descriptors(input_dirs=inputs, output_dir=output, **d))
    status = wait_terminal(client, job, timeout=120)
    listing = client.get_job_json_data(job, output)
    client.delete_job(job)
    assert not os.path.exists(os.path.join(server.storebase, f"key-{job}"))
    return status, listing


def test_fslink_cycle_with_chris_links(fslink_server: Server) -> None:
    root = fslink_server.storebase
    payload = os.urandom(300_000)
    inp, out = feed_dirs(fslink_server, {"test.txt": b"t", "sub/ü.bin": payload, "home_bob.chrislink": b"home/bob"})
    write_files(root, {"home/bob/PIPELINES_bob.chrislink": b"PIPELINES/bob", "PIPELINES/bob/pipeline.yml": b"p"})
    status, listing = fslink_cycle(fslink_server, [inp], out)
    assert status["compute"]["status"] == "finishedSuccessfully", status
    expected = {"test.txt": b"t", "sub/ü.bin": payload, "home_bob/PIPELINES_bob/pipeline.yml": b"p"}
    assert sorted(listing["rel_file_paths"]) == sorted(expected)
    assert read_dir(os.path.join(root, out)) == expected


def test_fslink_real_chris_plugin(fslink_server: Server, plugin_image: str) -> None:
    inp, out = feed_dirs(fslink_server, {"data/scan.txt": b"scan", "top.txt": b"top"})
    status, listing = fslink_cycle(fslink_server, [inp], out, **PLUGIN)
    assert status["compute"]["status"] == "finishedSuccessfully", status
    assert read_dir(os.path.join(fslink_server.storebase, out)) == {"lotop.txt": b"top", "data/loscan.txt": b"scan"}
    assert sorted(listing["rel_file_paths"]) == ["data/loscan.txt", "lotop.txt"]


# -- the swarm leaves under a running server (last: it removes every service) ---------------------


def swarm_script(command: str) -> None:
    subprocess.run(
        ["bash", os.path.join(ROOT, "scripts", "swarm.sh"), command], check=True, capture_output=True, timeout=120
    )


@pytest.mark.faults
def test_swarm_left_under_a_running_server_then_back(client: Client, server: Server, swarm_client: Any) -> None:
    headers = {"Authorization": f"Bearer {client.auth_token}"}
    done = jid()
    client.submit_job(done, descriptors(), make_zip({"x.txt": b"x"}))
    assert wait_terminal(client, done)["compute"]["status"] == "finishedSuccessfully"
    fresh = jid()
    try:
        subprocess.run(["docker", "swarm", "leave", "--force"], check=True, capture_output=True, timeout=60)
        r = requests.get(f"{server.api}jobs/{done}/", headers=headers, timeout=30)
        assert r.status_code == 503, r.text
        assert r.json()["message"].startswith("Docker Swarm manager unavailable: This node is not a swarm manager")
        with pytest.raises(PfconRequestException) as e:
            client.submit_job(fresh, descriptors(), make_zip({"x.txt": b"x"}))
        assert e.value.code == 503 and "Docker Swarm manager unavailable" in str(e.value)
        assert not os.path.exists(os.path.join(server.storebase, f"key-{fresh}"))  # rolled back
        ready = requests.get(f"{server.api}ready/", timeout=30)
        assert ready.status_code == 503
        assert "compute (swarm): Docker Swarm manager unavailable" in ready.json()["message"]
    finally:
        swarm_script("start")
    # the same server, not restarted, works again
    assert requests.get(f"{server.api}ready/", timeout=30).status_code == 200
    with pytest.raises(PfconRequestException) as e:
        client.get_job_status(done)  # its service went with the old swarm
    assert e.value.code == 404
    client.delete_job(done)  # its data is still removed
    client.submit_job(fresh, descriptors(), make_zip({"x.txt": b"x"}))
    assert wait_terminal(client, fresh)["compute"]["status"] == "finishedSuccessfully"
    client.delete_job(fresh)
    assert no_key_dirs(server)
    assert server.process.poll() is None


def test_the_operator_lists_and_cancels_a_running_job(client: Client, server: Server, swarm_client: Any) -> None:
    """Issue 12 through the admin routes on Swarm: the listing (with the node), cancel that
    keeps the job's data and logs, and DELETE that keeps pfcon's meaning."""
    headers = {"Authorization": f"Bearer {client.auth_token}"}
    job = jid()
    script = 'echo partial > "$1"/partial.txt; echo before-cancel; sleep 300'
    client.submit_job(job, descriptors(script=script), make_zip({"a.txt": b"a"}))
    deadline = time.monotonic() + 60
    while "before-cancel" not in client.get_job_status(job)["compute"]["logs"]:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    r = requests.get(f"{server.api}admin/jobs/", headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    [listed] = [j for j in r.json()["jobs"] if j["jid"] == job]
    assert (listed["kind"], listed["status"], listed["scheduler"]) == ("plugin", "started", "swarm")
    assert listed["resources"] == {"number_of_workers": 1, "cpu_limit": 1000, "memory_limit": 200, "gpu_limit": 0}
    assert listed["node"] == swarm_client.info()["Name"]
    r = requests.post(f"{server.api}admin/jobs/{job}/cancel/", headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    assert (r.json()["compute"]["status"], r.json()["compute"]["message"]) == ("finishedWithError", "cancelled")
    deadline = time.monotonic() + 60
    while [t for t in swarm_client.api.tasks(filters={"service": job}) if t["Status"]["State"] == "running"]:
        assert time.monotonic() < deadline  # it stops
        time.sleep(0.5)
    status = client.get_job_status(job)["compute"]
    assert (status["status"], status["message"]) == ("finishedWithError", "cancelled")
    assert "before-cancel" in status["logs"]  # its logs stay
    with zipfile.ZipFile(io.BytesIO(client.get_job_zip_data(job))) as z:  # and its data
        assert z.namelist() == ["partial.txt"]
    client.delete_job(job)  # DELETE removes it all
    assert job not in job_services(swarm_client)
    assert not os.path.exists(os.path.join(server.storebase, f"key-{job}"))
