"""Black-box: the real server with ``CONTAINER_ENV=slurm`` beside the real two-node SLURM
cluster (scripts/slurm-cluster.sh), storeBase on the filesystem both nodes share, Docker as
the nodes' runtime: python-pfconclient 3.3.0 through pfcon 5 cycles (zipfile, fslink, the
real ChRIS plugin image), 4.0.0 through pfcon 6 cycles whose copy and delete op jobs are
SLURM jobs too, and slurmctld going down under a running server (503 naming SLURM, then
recovery without a restart)."""

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
from .conftest import PLUGIN_IMAGE, TEST_IMAGE, _require
from .server import Server, start_server
from .test_e2e_v6 import check_cycle, feed, v6_cycle
from .test_e2e_zipfile import descriptors, make_zip, read_tree, wait_terminal, write_tree
from .test_slurm_compute import SCRIPT, slurm_cluster_fixture, wait_nodes_idle  # noqa: F401 - the fixture

pytestmark = [pytest.mark.slurm, pytest.mark.docker]

JOBS_DIR = ".pfcon-slurm"


def jid() -> str:
    return f"sle-{uuid.uuid4().hex[:12]}"


def _server(docker_client: Any, tmp_path_factory: Any, **env: str) -> Iterator[Server]:
    base = tmp_path_factory.mktemp(f"slurm-{env.get('STORAGE_ENV', 'zipfile')}")
    storebase = base / "storeBase"
    storebase.mkdir()
    server = start_server(str(storebase), str(base / "server.log"), CONTAINER_ENV="slurm", SLURM_POLL_SECONDS="1",
                          ENABLE_HOME_WORKAROUND="yes", **env)  # fmt: skip
    yield server
    server.stop()
    jobs = os.path.join(str(storebase), JOBS_DIR)
    for name in os.listdir(jobs) if os.path.isdir(jobs) else ():
        jobid = os.path.join(jobs, name, "jobid")
        if os.path.exists(jobid) and not os.path.exists(os.path.join(jobs, name, "exit")):
            subprocess.run(["scancel", open(jobid).read().strip()], capture_output=True, timeout=60)
        for c in docker_client.containers.list(all=True, filters={"name": name}):
            c.remove(force=True)


@pytest.fixture(scope="module")
def server(slurm_cluster: list[str], docker_client: Any, tmp_path_factory: Any) -> Iterator[Server]:
    yield from _server(docker_client, tmp_path_factory)


@pytest.fixture(scope="module")
def fslink_server(slurm_cluster: list[str], docker_client: Any, tmp_path_factory: Any) -> Iterator[Server]:
    from .test_e2e_v6 import OP_IMAGE

    try:
        docker_client.images.get(OP_IMAGE)
    except Exception as e:  # noqa: BLE001
        _require(f"the op-job image {OP_IMAGE}", f"{e} (build it with scripts/build-image.sh)")
    yield from _server(docker_client, tmp_path_factory, PFCON_INNETWORK="true", STORAGE_ENV="fslink")


@pytest.fixture
def client(server: Server) -> Client:
    return Client(server.api, server.token())


def test_server_info_and_a_zipfile_cycle_byte_exact(client: Client, server: Server, tmp_path: Any) -> None:
    info = client.get_server_info()
    assert (info["container_env"], info["compute_volume_type"]) == ("slurm", "host")
    files = {"plain.txt": b"hello\n", "bin/x.bin": os.urandom(300_000), "ünï/名前 with space.txt": "d".encode(),
             **{f"many/f{i:03d}": os.urandom(32) for i in range(100)}}  # fmt: skip
    write_tree(tmp_path / "in", files)
    (tmp_path / "out").mkdir()
    job = jid()
    assert client.run_job(job, descriptors(), str(tmp_path / "in"), str(tmp_path / "out")) == "finishedSuccessfully"
    assert read_tree(tmp_path / "out") == read_tree(tmp_path / "in")
    assert not os.path.exists(os.path.join(server.storebase, f"key-{job}"))
    assert not os.path.exists(os.path.join(server.storebase, JOBS_DIR, job))  # DELETE cleaned the batch job's dir


def test_env_home_workaround_logs_and_failure(client: Client) -> None:
    job = jid()
    script = 'echo "jid=$CHRIS_JID home=$HOME"; echo partial > "$1"/partial.txt; echo broken >&2; exit 3'
    resp = client.submit_job(job, descriptors(script=script), make_zip({"a.txt": b"a"}))
    assert resp["compute"]["status"] == "notstarted"
    status = wait_terminal(client, job, 180)["compute"]
    assert (status["status"], status["message"]) == ("finishedWithError", "Error (exit code 3)")
    assert sorted(status["logs"].splitlines()) == ["broken", "jid=x home=/tmp"]  # stdout and stderr, in either order
    assert client.get_job_zip_data(job)  # the partial output is there
    client.delete_job(job)


def test_real_chris_plugin(client: Client, docker_client: Any, tmp_path: Any) -> None:
    try:
        docker_client.images.get(PLUGIN_IMAGE)
    except Exception as e:  # noqa: BLE001
        _require(f"the plugin image {PLUGIN_IMAGE}", str(e))
    write_tree(tmp_path / "in", {"data/scan.txt": b"scan", "top.txt": b"top"})
    (tmp_path / "out").mkdir()
    d = descriptors(image=PLUGIN_IMAGE, entrypoint=["python3", "/usr/local/bin/simpledsapp.py"], args=["--prefix", "lo"],
                    memory_limit=300)  # fmt: skip
    assert client.run_job(jid(), d, str(tmp_path / "in"), str(tmp_path / "out")) == "finishedSuccessfully"
    outputs = {name: open(tmp_path / "out" / name, "rb").read() for name in read_tree(tmp_path / "out")}
    assert outputs == {"lotop.txt": b"top", os.path.join("data", "loscan.txt"): b"scan"}


def test_fslink_v5_and_v6_cycles_with_op_jobs_on_slurm(fslink_server: Server) -> None:
    server = fslink_server
    inp, out = feed(server, {"test.txt": b"t", "home_bob.chrislink": b"home/bob"})
    write_files(server.storebase, {"home/bob/pipeline.yml": b"p"})
    job = jid()
    r = v6_cycle(server, "fslink", job, inputs=[inp], output=out)
    check_cycle(server, "fslink", job, r)
    assert read_dir(os.path.join(server.storebase, out)) == {"test.txt": b"t", "home_bob/pipeline.yml": b"p"}
    for kind in ("copy", "delete"):  # the op jobs were SLURM batch jobs, removed with their job
        assert not os.path.exists(os.path.join(server.storebase, JOBS_DIR, f"{job}-{kind}"))
    # pfcon 5 against the same server
    inp5, out5 = feed(server, {"a.txt": b"a"})
    client = Client(server.api, server.token())
    job5 = jid()
    client.submit_job(job5, descriptors(input_dirs=[inp5], output_dir=out5))
    assert wait_terminal(client, job5, 180)["compute"]["status"] == "finishedSuccessfully"
    assert client.get_job_json_data(job5, out5)["rel_file_paths"] == ["a.txt"]
    client.delete_job(job5)


@pytest.mark.faults
def test_the_operator_lists_and_cancels_a_running_job(
    client: Client, server: Server, slurm_cluster: list[str], docker_client: Any
) -> None:
    """Issue 12 through the admin routes: the listing (with the node), and cancel (scancel)
    that keeps the job's data and logs, where DELETE keeps pfcon's meaning."""
    headers = {"Authorization": f"Bearer {client.auth_token}"}
    done, job = jid(), jid()
    client.submit_job(done, descriptors(script="echo quick"), make_zip({"a.txt": b"a"}))
    assert wait_terminal(client, done, 180)["compute"]["status"] == "finishedSuccessfully"
    script = 'echo partial > "$1"/partial.txt; echo before-cancel; sleep 300'
    client.submit_job(job, descriptors(script=script), make_zip({"a.txt": b"a"}))
    deadline = time.monotonic() + 180
    while "before-cancel" not in client.get_job_status(job)["compute"]["logs"]:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    # the listing reads the shared squeue snapshot (one query per SLURM_POLL_SECONDS): it
    # may lag the job's own output file by a poll
    deadline = time.monotonic() + 60
    while True:
        r = requests.get(f"{server.api}admin/jobs/", headers=headers, timeout=60)
        assert r.status_code == 200, r.text
        ours = [j for j in r.json()["jobs"] if j["jid"] in (job, done)]
        assert [j["jid"] for j in ours] == [job, done]  # newest first
        running, finished = ours
        if running["status"] != "notstarted" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert (running["kind"], running["status"], running["scheduler"], running["image"]) == (
        "plugin", "started", "slurm", TEST_IMAGE,
    )  # fmt: skip
    assert running["node"] in slurm_cluster and running["created"]
    assert running["resources"] == {"number_of_workers": 1, "cpu_limit": 1000, "memory_limit": 200, "gpu_limit": 0}
    assert (finished["status"], finished["node"] in slurm_cluster) == ("finishedSuccessfully", True)
    r = requests.post(f"{server.api}admin/jobs/{job}/cancel/", headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    assert (r.json()["compute"]["status"], r.json()["compute"]["message"]) == ("finishedWithError", "cancelled")
    deadline = time.monotonic() + 60
    while docker_client.containers.list(all=True, filters={"name": job}):  # it stops
        assert time.monotonic() < deadline
        time.sleep(0.5)
    status = client.get_job_status(job)["compute"]
    assert (status["status"], status["message"]) == ("finishedWithError", "cancelled")
    assert "before-cancel" in status["logs"]  # its logs stay
    with zipfile.ZipFile(io.BytesIO(client.get_job_zip_data(job))) as z:  # and its data
        assert z.namelist() == ["partial.txt"]
    for name in (job, done):
        client.delete_job(name)  # DELETE removes it all
        assert not os.path.exists(os.path.join(server.storebase, JOBS_DIR, name))
    r = requests.get(f"{server.api}admin/jobs/", headers=headers, timeout=60)
    assert not {job, done} & {j["jid"] for j in r.json()["jobs"]}


def test_slurmctld_down_is_503_naming_slurm_and_the_server_recovers(client: Client, server: Server) -> None:
    job = jid()
    client.submit_job(job, descriptors(script="echo hi"), make_zip({"a.txt": b"a"}))
    assert wait_terminal(client, job, 180)["compute"]["status"] == "finishedSuccessfully"
    subprocess.run(["bash", SCRIPT, "ctld-stop"], check=True, capture_output=True, timeout=120)
    try:
        other = jid()
        with pytest.raises(PfconRequestException) as e:
            client.submit_job(other, descriptors(script="true"), make_zip({"a": b"a"}))
        assert e.value.code == 503
        assert "SLURM controller unavailable" in str(e.value)
        assert not os.path.exists(os.path.join(server.storebase, f"key-{other}"))
        assert not os.path.exists(os.path.join(server.storebase, JOBS_DIR, other))
        ready = requests.get(f"{server.api}ready/", timeout=120)
        assert ready.status_code == 503 and "SLURM" in ready.text
    finally:
        subprocess.run(["bash", SCRIPT, "ctld-start"], check=True, capture_output=True, timeout=120)
    wait_nodes_idle()
    assert client.get_job_status(job)["compute"]["status"] == "finishedSuccessfully"
    again = jid()
    client.submit_job(again, descriptors(script="echo back"), make_zip({"a.txt": b"a"}))
    assert wait_terminal(client, again, 180)["compute"]["status"] == "finishedSuccessfully"
    client.delete_job(again)
    client.delete_job(job)
