"""Black-box: the real server with ``CONTAINER_ENV=kubernetes`` on the real cluster,
driven by python-pfconclient 3.3.0 like CUBE, in zipfile and fslink mode (storeBase is
a hostPath PVC the server also sees), with the real ChRIS plugin image; whole pfcon 6
cycles driven by python-pfconclient 4.0.0 in fslink and s3 mode, whose copy, upload and
delete op jobs are Kubernetes Jobs (their specs caught by a watch); and the API server
unreachable behind a closed TCP proxy (503 naming Kubernetes, then recovery)."""

from __future__ import annotations

import io
import json
import os
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from pfconclient.client import Client
from pfconclient.exceptions import PfconRequestException

from pfcon.adapters.compute.k8s_view import JOBS, PODS
from pfcon.adapters.compute.kubernetes import MANAGED_BY, KubeApi
from pfcon.bootstrap import OP_DEFAULT_USER

from ..contracts.storage import read_dir, write_files
from .conftest import PLUGIN_IMAGE, _require
from .server import Server, start_server
from .test_e2e_v6 import OP_IMAGE, check_cycle, feed, ok, v6_cycle
from .test_e2e_v6 import s3_client  # noqa: F401 - the fixture (v6_s3 asks for it by name)
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


def test_the_operator_lists_and_cancels_a_running_job(client: Client, server: Server, cluster: Cluster) -> None:
    """Issue 12 through the admin routes on Kubernetes: the listing (with the node), cancel
    that keeps the job's pod, data and logs, and DELETE that keeps pfcon's meaning."""
    headers = {"Authorization": f"Bearer {client.auth_token}"}
    job = jid()
    script = 'echo partial > "$1"/partial.txt; echo before-cancel; trap "exit 143" TERM; sleep 300 & wait'
    client.submit_job(job, descriptors(script=script), make_zip({"a.txt": b"a"}))
    deadline = time.monotonic() + 120
    while "before-cancel" not in client.get_job_status(job)["compute"]["logs"]:
        assert time.monotonic() < deadline
        time.sleep(0.3)
    r = requests.get(f"{server.api}admin/jobs/", headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    [listed] = [j for j in r.json()["jobs"] if j["jid"] == job]
    assert (listed["kind"], listed["status"], listed["scheduler"]) == ("plugin", "started", "kubernetes")
    assert listed["resources"] == {"number_of_workers": 1, "cpu_limit": 1000, "memory_limit": 200, "gpu_limit": 0}
    assert listed["node"] and listed["created"].endswith("Z")
    r = requests.post(f"{server.api}admin/jobs/{job}/cancel/", headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    assert (r.json()["compute"]["status"], r.json()["compute"]["message"]) == ("finishedWithError", "cancelled")
    deadline = time.monotonic() + 120
    while not cluster.api.read_job(cluster.namespace, job)["status"].get("failed"):  # it stops; the Job stays
        assert time.monotonic() < deadline
        time.sleep(0.5)
    status = client.get_job_status(job)["compute"]
    assert (status["status"], status["message"]) == ("finishedWithError", "cancelled")
    assert "before-cancel" in status["logs"]  # its logs stay
    with zipfile.ZipFile(io.BytesIO(client.get_job_zip_data(job))) as z:  # and its data
        assert z.namelist() == ["partial.txt"]
    client.delete_job(job)  # DELETE removes it all
    assert not job_exists(cluster, job)
    assert not os.path.exists(os.path.join(server.storebase, f"key-{job}"))
    r = requests.get(f"{server.api}admin/jobs/", headers=headers, timeout=60)
    assert job not in {j["jid"] for j in r.json()["jobs"]}


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


# -- pfcon 6 cycles with pfconclient 4.0.0: the op jobs as Kubernetes Jobs -------------------------


class JobRecorder:
    """Every Job (and pod) this server creates in the namespace while it records, as the API
    server stored it: a list, then a watch from its resourceVersion, so that the op Jobs a
    cycle creates and deletes within seconds are all seen, whatever their lifetime."""

    def __init__(self, cluster: Cluster) -> None:
        self.api = KubeApi.connect(cluster.kubeconfig)
        self.namespace = cluster.namespace
        self.jobs: dict[str, dict[str, Any]] = {}  # the Job as first stored, by name
        self.pods: dict[str, dict[str, Any]] = {}  # the last state seen of each pod, by name
        self._stop = threading.Event()
        self._streams: list[Any] = []
        self._threads: list[threading.Thread] = []

    def _record(self, kind: str, obj: dict[str, Any]) -> None:
        name = str((obj.get("metadata") or {}).get("name") or "")
        if not name or not obj.get("spec"):
            return  # a bookmark
        if kind == JOBS:
            self.jobs.setdefault(name, obj)
        else:
            self.pods[name] = obj

    def _watch(self, kind: str, version: str) -> None:
        selector = f"{MANAGED_BY[0]}={MANAGED_BY[1]}"
        while not self._stop.is_set():
            try:
                stream = self.api.watch(kind, self.namespace, selector, version, timeout=60)
                self._streams.append(stream)
                if self._stop.is_set():  # stopped while this watch was opened
                    stream.close()
                    return
                for _, obj in stream:
                    self._record(kind, obj)
                    version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
            except Exception:  # noqa: BLE001 - closed by stop(), or Gone: list again
                if self._stop.is_set():
                    return
                items, version = self.api.list(kind, self.namespace, selector)
                for obj in items:
                    self._record(kind, obj)

    def __enter__(self) -> JobRecorder:
        selector = f"{MANAGED_BY[0]}={MANAGED_BY[1]}"
        for kind in (JOBS, PODS):
            _, version = self.api.list(kind, self.namespace, selector)  # before anything is submitted
            thread = threading.Thread(target=self._watch, args=(kind, version), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for stream in self._streams:
            stream.close()
        for thread in self._threads:
            thread.join(10)

    def wait_pods_ended(self, jobs: list[str], timeout: float = 30) -> None:
        """The watch may trail the cycle by a moment: until every Job's pod is seen ended."""
        deadline = time.monotonic() + timeout
        while not all(self.pod_phases(job) & {"Succeeded", "Failed"} for job in jobs):
            assert time.monotonic() < deadline, {job: self.pod_phases(job) for job in jobs}
            time.sleep(0.1)

    def pod_phases(self, job: str) -> set[str]:
        return {
            str((pod.get("status") or {}).get("phase"))
            for pod in list(self.pods.values())
            if (pod.get("metadata") or {}).get("labels", {}).get("job-name") == job
        }

    def pod_spec(self, job: str) -> dict[str, Any]:
        spec: dict[str, Any] = self.jobs[job]["spec"]["template"]["spec"]
        return spec


def op_container(recorder: JobRecorder, job: str) -> dict[str, Any]:
    container: dict[str, Any] = recorder.pod_spec(job)["containers"][0]
    return container


def mounts_of(recorder: JobRecorder, job: str) -> dict[str, tuple[str, bool]]:
    """mountPath -> (subPath of the storeBase PVC, read-only), as the Job's pod runs it."""
    spec = recorder.pod_spec(job)
    volumes = {v["name"]: v for v in spec.get("volumes") or ()}
    out = {}
    for m in op_container(recorder, job).get("volumeMounts") or ():
        volume = volumes[m["name"]]
        assert volume.get("persistentVolumeClaim"), volume  # storeBase's PVC, nothing of the host
        out[m["mountPath"]] = (m.get("subPath", ""), bool(m.get("readOnly")))
    return out


def job_env(recorder: JobRecorder, job: str) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in op_container(recorder, job).get("env") or ()}


def check_op_job(recorder: JobRecorder, job: str, kind: str) -> None:
    """An op Job: the project's command in the project's image, as a non-root user, with
    nothing of the API server, and the pod it ran ended well."""
    stored = recorder.jobs[job]
    assert stored["metadata"]["labels"]["org.chrisproject.job_type"] == kind
    assert stored["metadata"]["labels"][MANAGED_BY[0]] == MANAGED_BY[1]
    container = op_container(recorder, job)
    assert container["image"] == OP_IMAGE
    assert container["command"] == ["pfcon", "op", kind, "/share/outgoing"]
    security = container["securityContext"]
    assert security["runAsUser"] != 0 and security["runAsGroup"] != 0, security
    assert security["allowPrivilegeEscalation"] is False and security["capabilities"] == {"drop": ["ALL"]}
    spec = recorder.pod_spec(job)
    assert spec["automountServiceAccountToken"] is False
    assert stored["spec"]["parallelism"] == stored["spec"]["completions"] == 1
    assert recorder.pod_phases(job) & {"Succeeded", "Failed"} == {"Succeeded"}, recorder.pod_phases(job)
    pods = [p for p in list(recorder.pods.values()) if p["metadata"].get("labels", {}).get("job-name") == job]
    for pod in pods:  # what the kubelet ran: the Job's user, and no service-account token mounted
        ran = pod["spec"]["containers"][0]
        assert ran["securityContext"]["runAsUser"] == security["runAsUser"], pod["metadata"]["name"]
        assert (pod["spec"].get("securityContext") or {}).get("runAsUser") in (None, security["runAsUser"])
        assert not [m for m in ran.get("volumeMounts") or () if "serviceaccount" in m["mountPath"]]


@pytest.fixture(scope="module")
def v6_fslink_server(cluster: Cluster, tmp_path_factory: Any) -> Iterator[Server]:
    server = k8s_server(cluster, tmp_path_factory.mktemp("k8s-v6-fslink"), PFCON_INNETWORK="true", STORAGE_ENV="fslink")
    yield server
    server.stop()
    delete_our_jobs(cluster.api, cluster.namespace)


def test_v6_fslink_cycle_runs_op_jobs_as_kubernetes_jobs(v6_fslink_server: Server, cluster: Cluster) -> None:
    server = v6_fslink_server
    blob = os.urandom(300_000)
    inp, out = feed(server, {"test.txt": b"t", "sub/blob.bin": blob, "home_bob.chrislink": b"home/bob"})
    write_files(server.storebase, {"home/bob/PIPELINES_bob.chrislink": b"PIPELINES/bob",
                                   "PIPELINES/bob/pipeline.yml": b"p"})  # fmt: skip
    job = jid()
    with JobRecorder(cluster) as recorder:
        r = v6_cycle(server, "fslink", job, inputs=[inp], output=out)
        recorder.wait_pods_ended([f"{job}-copy", job, f"{job}-delete"])
    check_cycle(server, "fslink", job, r)
    expected = {"test.txt": b"t", "sub/blob.bin": blob, "home_bob/PIPELINES_bob/pipeline.yml": b"p"}
    assert sorted(ok(r["files"])["rel_file_paths"]) == sorted(expected)
    assert read_dir(os.path.join(server.storebase, out)) == expected  # the plugin's evil.chrislink was removed
    assert "copied 3 files" in ok(r["copy_done"])["compute"]["logs"]

    # the op jobs ran as Kubernetes Jobs named after the job id, with their own mounts only
    assert {name for name in recorder.jobs if name.startswith(job)} == {f"{job}-copy", job, f"{job}-delete"}
    check_op_job(recorder, f"{job}-copy", "copy")
    check_op_job(recorder, f"{job}-delete", "delete")
    for name in (f"{job}-copy", f"{job}-delete"):  # a root server hands key-<jid>/ to the image's user
        security = op_container(recorder, name)["securityContext"]
        assert (security["runAsUser"], security["runAsGroup"]) == OP_DEFAULT_USER, name
    # storeBase is read-only where a copy reads the ChRIS links from: on Kubernetes the
    # PVC's root is never mounted writable, the files are copied (not hard-linked)
    assert mounts_of(recorder, f"{job}-copy") == {"/share/outgoing": (f"key-{job}", False),
                                                  "/share/incoming": ("", True)}  # fmt: skip
    assert mounts_of(recorder, f"{job}-delete") == {"/share/outgoing": (f"key-{job}", False)}
    assert mounts_of(recorder, job) == {"/share/incoming": (f"key-{job}/incoming", True),
                                        "/share/outgoing": (out, False)}  # fmt: skip
    for name in (f"{job}-copy", job, f"{job}-delete"):
        assert not [e for e in job_env(recorder, name) if e.startswith(("SWIFT_", "S3_"))], name
    # the plugin Job is the plugin's: its image and command, not the op image
    assert op_container(recorder, job)["image"] != OP_IMAGE
    assert recorder.jobs[job]["metadata"]["labels"]["org.chrisproject.job_type"] == "plugin"
    # and nothing of the cycle is left in the cluster
    assert not any(job_exists(cluster, name) for name in (f"{job}-copy", job, f"{job}-delete"))


@pytest.fixture(scope="module")
def v6_s3(cluster: Cluster, request: Any, tmp_path_factory: Any) -> Iterator[tuple[Server, Any]]:
    """A server with STORAGE_ENV=s3, and a boto3 client of its S3 server."""
    # The op pods reach the S3 server on 127.0.0.1: they run on the host's network here
    # (HOST_NETWORK, test_kubernetes_compute).
    if not HOST_NETWORK:
        pytest.skip("the op pods reach the local S3 server on 127.0.0.1 only with PFCON_K8S_HOST_NETWORK=1")
    store = request.getfixturevalue("s3_client")  # skips, or fails under PFCON_REQUIRE_BACKENDS, without one
    # The default configuration: a root server, no CONTAINER_USER. Plugin pods run as the
    # image's root with every capability dropped (docs/wire-contract.md §8.3), so they are
    # not the owner of key-<jid>/outgoing (the op jobs' user): they write there through the
    # op jobs' group, a supplemental group of their pod (the dir is 2775).
    server = k8s_server(cluster, tmp_path_factory.mktemp("k8s-v6-s3"), PFCON_INNETWORK="true", STORAGE_ENV="s3")
    yield server, store
    server.stop()
    delete_our_jobs(cluster.api, cluster.namespace)


def test_v6_s3_cycle_with_copy_and_upload_jobs(v6_s3: tuple[Server, Any], cluster: Cluster) -> None:
    server, s3_store = v6_s3
    bucket = os.environ.get("S3_BUCKET_NAME", "users")
    n = uuid.uuid4().hex[:8]
    inp, out = f"k{n}/home/cube/feeds/1/in", f"k{n}/home/cube/feeds/1/out"
    blob = os.urandom(200_000)
    objects = {f"{inp}/test.txt": b"t", f"{inp}/sub/b.bin": blob,
               f"{inp}/bob.chrislink": f"k{n}/home/bob".encode(), f"k{n}/home/bob/pipeline.yml": b"p"}  # fmt: skip
    for name, content in objects.items():
        s3_store.put_object(Bucket=bucket, Key=name, Body=content)
    job = jid()
    with JobRecorder(cluster) as recorder:
        r = v6_cycle(server, "s3", job, inputs=[inp], output=out)
        recorder.wait_pods_ended([f"{job}-copy", job, f"{job}-upload", f"{job}-delete"])
    check_cycle(server, "s3", job, r)
    expected = {"test.txt": b"t", "sub/b.bin": blob, f"k{n}_home_bob/pipeline.yml": b"p"}
    assert sorted(ok(r["files"])["rel_file_paths"]) == sorted(expected)
    listed = s3_store.list_objects_v2(Bucket=bucket, Prefix=out + "/")
    stored = {o["Key"][len(out) + 1 :] for o in listed.get("Contents", [])}
    assert stored == set(expected)  # uploaded once, no link file (the plugin's evil.chrislink)
    for name, content in expected.items():
        assert s3_store.get_object(Bucket=bucket, Key=f"{out}/{name}")["Body"].read() == content

    # four Jobs: copy and upload with the store's settings and credentials, the others without
    names = {f"{job}-copy", job, f"{job}-upload", f"{job}-delete"}
    assert {name for name in recorder.jobs if name.startswith(job)} == names
    for kind in ("copy", "upload", "delete"):
        check_op_job(recorder, f"{job}-{kind}", kind)
        assert mounts_of(recorder, f"{job}-{kind}") == {"/share/outgoing": (f"key-{job}", False)}, kind
    secret = os.environ.get("S3_SECRET_KEY", "minioadmin")
    for name in (f"{job}-copy", f"{job}-upload"):
        env = job_env(recorder, name)
        assert env["S3_SECRET_KEY"] == secret and env["S3_ENDPOINT_URL"] == os.environ["S3_ENDPOINT_URL"], name
        assert env["S3_BUCKET_NAME"] == bucket
    for name in (job, f"{job}-delete"):
        assert not [e for e in job_env(recorder, name) if e.startswith(("S3_", "SWIFT_"))], name
    assert mounts_of(recorder, job) == {"/share/incoming": (f"key-{job}/incoming", True),
                                        "/share/outgoing": (f"key-{job}/outgoing", False)}  # fmt: skip
    # the op jobs run as the owner of key-<jid>/ (the op image's user: a root server, no
    # CONTAINER_USER); the plugin as its image's user, with the op jobs' group added
    for name in (f"{job}-copy", f"{job}-upload", f"{job}-delete"):
        security = op_container(recorder, name)["securityContext"]
        assert (security["runAsUser"], security["runAsGroup"]) == OP_DEFAULT_USER, name
        assert not (recorder.pod_spec(name).get("securityContext") or {}), name  # no group added to op jobs
    plugin_security = op_container(recorder, job)["securityContext"]
    assert "runAsUser" not in plugin_security and plugin_security["capabilities"] == {"drop": ["ALL"]}
    assert recorder.pod_spec(job)["securityContext"] == {"supplementalGroups": [OP_DEFAULT_USER[1]]}
    assert "copied" in ok(r["plugin_done"])["compute"]["logs"]  # it wrote into key-<jid>/outgoing
    for name in ("copy_done", "upload_done", "plugin_done", "delete_done"):
        assert secret not in json.dumps(r[name])
    assert secret not in server.logs()
    assert not any(job_exists(cluster, f"{job}{suffix}") for suffix in ("-copy", "", "-upload", "-delete"))
