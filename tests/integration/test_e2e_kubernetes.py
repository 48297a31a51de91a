"""Black-box: the real server with ``CONTAINER_ENV=kubernetes`` on the real cluster,
driven by python-pfconclient 3.3.0 like CUBE, in zipfile and fslink mode (storeBase is
a hostPath PVC the server also sees), with the real ChRIS plugin image; and the API
server unreachable behind a closed TCP proxy (503 naming Kubernetes, then recovery)."""

from __future__ import annotations

import io
import os
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
from .server import Server, start_server
from .test_e2e_zipfile import descriptors, make_zip, read_tree, wait_terminal, write_tree
from .test_kubernetes_compute import (  # noqa: F401 - cluster_fixture: the fixture
    HOST_NETWORK, Cluster, cluster_fixture, delete_our_jobs, proxied_kubeconfig,
)

pytestmark = pytest.mark.kubernetes

COPY_AND_TAMPER = 'cp -R "$0"/. "$1"/ && echo "home/victim" > "$1"/evil.chrislink && echo copied'


def jid() -> str:
    return f"k8e-{uuid.uuid4().hex[:12]}"


def k8s_server(cluster: Cluster, base: Any, **env: str) -> Server:
    storebase = base / "storeBase"
    storebase.mkdir()
    pvc = cluster.claim(str(storebase))
    return start_server(
        str(storebase),
        str(base / "server.log"),
        CONTAINER_ENV=env.pop("CONTAINER_ENV", "kubernetes"),
        COMPUTE_VOLUME_TYPE="kubernetes_pvc",
        STOREBASE="",  # empty is unset: storeBase is the PVC
        VOLUME_NAME=pvc,
        JOB_NAMESPACE=cluster.namespace,
        KUBECONFIG=env.pop("KUBECONFIG", cluster.kubeconfig),
        KUBERNETES_HOST_NETWORK="yes" if HOST_NETWORK else "no",  # see test_kubernetes_compute.HOST_NETWORK
        **env,
    )


@pytest.fixture(scope="module")
def server(cluster: Cluster, tmp_path_factory: Any) -> Iterator[Server]:
    server = k8s_server(cluster, tmp_path_factory.mktemp("k8s-e2e"))
    yield server
    server.stop()
    delete_our_jobs(cluster.api, cluster.namespace)


@pytest.fixture
def client(server: Server) -> Client:
    return Client(server.api, server.token())


def wait(client: Client, job: str, timeout: float = 120) -> dict[str, Any]:
    return wait_terminal(client, job, timeout)


def job_exists(cluster: Cluster, name: str) -> bool:
    try:
        cluster.api.read_job(cluster.namespace, name)
    except Exception:  # noqa: BLE001 - ApiError 404
        return False
    return True


def test_server_info_and_run_job_byte_exact(client: Client, server: Server, cluster: Cluster, tmp_path: Any) -> None:
    info = client.get_server_info()
    assert (info["container_env"], info["compute_volume_type"]) == ("kubernetes", "kubernetes_pvc")
    files = {
        "plain.txt": b"hello\n",
        "binary.bin": os.urandom(100_000),
        "big/four-mib.bin": os.urandom(4 * 1024 * 1024),
        "ünïcødé/名前 with space.txt": "données".encode(),
        **{f"many/f{i:03d}.dat": os.urandom(64) for i in range(200)},
    }
    write_tree(tmp_path / "in", files)
    (tmp_path / "out").mkdir()
    job = jid()
    status = client.run_job(job, descriptors(), str(tmp_path / "in"), str(tmp_path / "out"))
    assert status == "finishedSuccessfully"
    assert read_tree(tmp_path / "out") == read_tree(tmp_path / "in")
    # run_job deletes the job at the end: the data and the Job are gone
    assert not os.path.exists(os.path.join(server.storebase, f"key-{job}"))
    assert not job_exists(cluster, job)
    with pytest.raises(PfconRequestException) as e:
        client.get_job_status(job)
    assert e.value.code == 404


def test_failing_job_reports_the_reason_logs_and_outputs(client: Client) -> None:
    job = jid()
    script = 'echo partial > "$1"/partial.txt; echo "it broke" >&2; exit 3'
    resp = client.submit_job(job, descriptors(script=script), make_zip({"a.txt": b"a"}))
    assert resp["compute"]["status"] == "notstarted"
    status = wait(client, job)["compute"]
    assert status["status"] == "finishedWithError"
    assert status["message"] == "Error (exit code 3)"
    assert "it broke" in status["logs"]
    with zipfile.ZipFile(io.BytesIO(client.get_job_zip_data(job))) as z:
        assert z.namelist() == ["partial.txt"]
    client.delete_job(job)


def test_real_chris_plugin(client: Client, tmp_path: Any) -> None:
    import docker

    try:
        docker.from_env().images.get(PLUGIN_IMAGE)  # the kubelet's engine is the project's engine
    except Exception as e:  # noqa: BLE001
        _require(f"the plugin image {PLUGIN_IMAGE}", str(e))
    write_tree(tmp_path / "in", {"data/scan.txt": b"scan", "top.txt": b"top"})
    (tmp_path / "out").mkdir()
    d = descriptors(
        image=PLUGIN_IMAGE,
        entrypoint=["python3", "/usr/local/bin/simpledsapp.py"],  # as CUBE runs it
        args=["--prefix", "lo"],
        memory_limit=300,
    )
    status = client.run_job(jid(), d, str(tmp_path / "in"), str(tmp_path / "out"))
    assert status == "finishedSuccessfully"
    outputs = {name: open(tmp_path / "out" / name, "rb").read() for name in read_tree(tmp_path / "out")}
    assert outputs["lotop.txt"] == b"top"
    assert outputs[os.path.join("data", "loscan.txt")] == b"scan"


def test_several_workers_and_their_logs(client: Client) -> None:
    job = jid()
    client.submit_job(job, descriptors(script='echo "worker $HOSTNAME"', number_of_workers=3), make_zip({"x": b"x"}))
    status = wait(client, job)["compute"]
    assert status["status"] == "finishedSuccessfully"
    assert status["logs"].count("==> pod ") == 3 and status["logs"].count("worker ") == 3
    client.delete_job(job)
    with pytest.raises(PfconRequestException) as e:
        client.submit_job(jid(), descriptors(number_of_workers=65), make_zip({"x": b"x"}))
    assert e.value.code == 400 and "number_of_workers" in str(e.value)


def test_absent_image_is_accepted_and_the_status_names_it(client: Client, server: Server, cluster: Cluster) -> None:
    job = jid()
    resp = client.submit_job(job, descriptors(image="local/not-here:1"), make_zip({"x": b"x"}))
    assert resp["compute"]["status"] == "notstarted"  # the kubelet pulls: not known at submit
    deadline = time.monotonic() + 90
    while True:
        compute = client.get_job_status(job)["compute"]
        if compute["message"].startswith(("ErrImagePull", "ImagePullBackOff")):
            break
        assert time.monotonic() < deadline, compute
        time.sleep(0.5)
    assert compute["status"] == "notstarted"
    client.delete_job(job)
    assert not job_exists(cluster, job)
    assert not os.path.exists(os.path.join(server.storebase, f"key-{job}"))


def test_unschedulable_job_says_why(client: Client) -> None:
    job = jid()
    client.submit_job(job, descriptors(cpu_limit=1_000_000), make_zip({"x": b"x"}))
    deadline = time.monotonic() + 60
    while "Insufficient cpu" not in (compute := client.get_job_status(job)["compute"])["message"]:
        assert time.monotonic() < deadline, compute
        time.sleep(0.5)
    assert compute["status"] == "notstarted"
    client.delete_job(job)


def test_delete_running_job_and_duplicates(client: Client, server: Server, cluster: Cluster) -> None:
    job = jid()
    client.submit_job(job, descriptors(script="trap 'exit 143' TERM; sleep 120 & wait"), make_zip({"x": b"x"}))
    with pytest.raises(PfconRequestException) as e:
        client.submit_job(job, descriptors(), make_zip({"x": b"second"}))
    assert e.value.code == 409
    deadline = time.monotonic() + 90
    while client.get_job_status(job)["compute"]["status"] != "started":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    client.delete_job(job)
    assert not job_exists(cluster, job)
    assert not os.path.exists(os.path.join(server.storebase, f"key-{job}"))
    for call in (client.get_job_status, client.get_job_zip_data, client.delete_job):
        with pytest.raises(PfconRequestException) as e:
            call(job)
        assert e.value.code == 404


# -- fslink (in-network): storeBase is CUBE's storage root ------------------------------------


@pytest.fixture(scope="module")
def fslink_server(cluster: Cluster, tmp_path_factory: Any) -> Iterator[Server]:
    server = k8s_server(cluster, tmp_path_factory.mktemp("k8s-fslink"), PFCON_INNETWORK="true", STORAGE_ENV="fslink",
                        CONTAINER_ENV="openshift")  # fmt: skip
    yield server
    server.stop()
    delete_our_jobs(cluster.api, cluster.namespace)


def test_fslink_cycle_with_chris_links(fslink_server: Server) -> None:
    root = fslink_server.storebase
    n = uuid.uuid4().hex[:8]
    inp, out = f"home/cube/feeds/feed_{n}/pl-dircopy_1/data", f"home/cube/feeds/feed_{n}/pl-app_2/data"
    write_files(os.path.join(root, inp), {"test.txt": b"t", "home_bob.chrislink": b"home/bob"})
    write_files(root, {"home/bob/PIPELINES_bob.chrislink": b"PIPELINES/bob", "PIPELINES/bob/pipeline.yml": b"p"})
    os.makedirs(os.path.join(root, out))
    client = Client(fslink_server.api, fslink_server.token())
    assert client.get_server_info()["container_env"] == "kubernetes"  # openshift is an alias
    job = jid()
    submitted = client.submit_job(job, descriptors(script=COPY_AND_TAMPER, input_dirs=[inp], output_dir=out))
    assert submitted["data"]["nfiles"] == 2
    status = wait(client, job)["compute"]
    assert status["status"] == "finishedSuccessfully", status
    assert "copied" in status["logs"]
    listing = client.get_job_json_data(job, out)
    assert sorted(listing["rel_file_paths"]) == ["home_bob/PIPELINES_bob/pipeline.yml", "test.txt"]
    assert read_dir(os.path.join(root, out)) == {"test.txt": b"t", "home_bob/PIPELINES_bob/pipeline.yml": b"p"}
    client.delete_job(job)
    assert not os.path.exists(os.path.join(root, f"key-{job}"))


# -- the API server unreachable ----------------------------------------------------------------------


def test_api_server_unreachable_is_503_and_recovers(cluster: Cluster, tmp_path: Any) -> None:
    with proxied_kubeconfig(cluster, tmp_path) as (proxy, path):
        server = k8s_server(cluster, tmp_path, KUBECONFIG=path, KUBERNETES_RESYNC_SECONDS="10")
        try:
            client = Client(server.api, server.token())
            headers = {"Authorization": f"Bearer {client.auth_token}"}
            job = jid()
            client.submit_job(job, descriptors(script="sleep 15; echo done"), make_zip({"x": b"x"}))
            proxy.close()
            started = time.monotonic()
            r = requests.get(f"{server.api}jobs/{job}/", headers=headers, timeout=30)
            assert r.status_code == 503, r.text
            assert "Kubernetes API server unavailable" in r.json()["message"]
            assert time.monotonic() - started < 10
            ready = requests.get(f"{server.api}ready/", timeout=30)
            assert ready.status_code == 503 and "Kubernetes" in ready.text
            with pytest.raises(PfconRequestException) as e:
                client.submit_job(jid(), descriptors(), make_zip({"x": b"x"}))
            assert e.value.code == 503 and "Kubernetes" in str(e.value)
            assert not [n for n in os.listdir(server.storebase) if n.startswith("key-") and n != f"key-{job}"]

            proxy.open()  # back on the same port: no restart
            deadline = time.monotonic() + 60
            while requests.get(f"{server.api}ready/", timeout=30).status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.5)
            status = wait(client, job)["compute"]
            assert status["status"] == "finishedSuccessfully" and status["logs"] == "done\n"
            client.delete_job(job)
        finally:
            server.stop()
            delete_our_jobs(cluster.api, cluster.namespace)
