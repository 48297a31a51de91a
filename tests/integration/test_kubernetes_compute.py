"""The Kubernetes adapter on a real cluster (scripts/k8s-cluster.sh: v1.20.2, one node):
the compute contract, the Job spec as the API server stored it, status transitions with
their reasons, multi-worker logs, the API-request bound of the shared view with 100 live
jobs, and an API server outage (a TCP proxy closed and reopened) with recovery."""

from __future__ import annotations

import contextlib
import os
import shlex
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from pfcon import registry
from pfcon.adapters.compute.kubernetes import MANAGED_BY, KubeApi, KubernetesCompute, KubernetesOptions
from pfcon.adapters.compute.options import parse_container_user
from pfcon.domain.errors import BackendUnavailable, JobNotFound
from pfcon.domain.model import CANCELLED_MESSAGE, INSTANCE_LABEL, JOB_TYPE_LABEL, ContainerJob, JobStatus, Mount, Resources

from ..contracts.compute import ComputeContract, unique, wait_for
from .conftest import TEST_IMAGE, _require
from .server import ROOT

pytestmark = pytest.mark.kubernetes

# One namespace per test session (made by `k8s-cluster.sh pvc`, deleted at the end), so
# that concurrent runs never see, or clean up, each other's Jobs.
NAMESPACE = f"pfcon-test-{uuid.uuid4().hex[:6]}"
# The local cluster has no pod network (a loopback-only CNI): a pod's sandbox has no IP,
# and kubelet 1.20 then recreates the sandbox at its next sync, killing (SIGTERM) the
# running container of any pod not on the host network ("Sandbox for pod has no IP
# address. Need to start a new one"): jobs longer than a few seconds would die with 143.
# So the tests run their pods with hostNetwork; 0 on a cluster with a pod network.
HOST_NETWORK = os.environ.get("PFCON_K8S_HOST_NETWORK", "1") == "1"
CAPABILITIES = registry.scheduler("kubernetes").capabilities  # type: ignore[union-attr]
SCRIPT = os.path.join(ROOT, "scripts", "k8s-cluster.sh")


@dataclass
class Cluster:
    kubeconfig: str
    api: KubeApi
    namespace: str
    server: str  # https://127.0.0.1:6443
    claims: list[str]
    pvc: str = ""  # the compute tests' storeBase claim
    storebase: str = ""  # its hostPath: storeBase as this host (and a server on it) sees it

    def claim(self, hostpath: str) -> str:
        """A new PVC bound to a hostPath PV at ``hostpath`` (scripts/k8s-cluster.sh pvc)."""
        name = f"sb-{uuid.uuid4().hex[:8]}"
        done = subprocess.run(["bash", SCRIPT, "pvc", name, hostpath, self.namespace], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            _require("a PVC on the cluster", done.stderr[-2000:])
        self.claims.append(name)
        return name


def delete_our_jobs(api: KubeApi, namespace: str) -> None:
    """Every Job this server's label marks in the namespace (and so their pods)."""
    with contextlib.suppress(Exception):
        items, _ = api.list("jobs", namespace, f"{MANAGED_BY[0]}={MANAGED_BY[1]}")
        for job in items:
            with contextlib.suppress(Exception):
                api.delete_job(namespace, job["metadata"]["name"])


@pytest.fixture(scope="session", name="cluster")
def cluster_fixture(tmp_path_factory: Any) -> Iterator[Cluster]:
    kubeconfig = os.environ.get("KUBECONFIG")
    if not kubeconfig:
        _require("a Kubernetes cluster", 'KUBECONFIG is not set (eval "$(bash scripts/k8s-cluster.sh env)")')
    try:
        api = KubeApi.connect(kubeconfig)
        api.version()
    except Exception as e:  # noqa: BLE001
        _require("a Kubernetes cluster", f"KUBECONFIG={kubeconfig}: {e}")
    with open(kubeconfig) as f:
        server = yaml.safe_load(f)["clusters"][0]["cluster"]["server"]
    cluster = Cluster(kubeconfig, api, NAMESPACE, server, [])
    cluster.storebase = str(tmp_path_factory.mktemp("k8s-storebase"))
    cluster.pvc = cluster.claim(cluster.storebase)
    yield cluster
    delete_our_jobs(api, NAMESPACE)
    for name in cluster.claims:
        with contextlib.suppress(Exception):
            api.core.delete_namespaced_persistent_volume_claim(name, NAMESPACE, _preload_content=False)
        with contextlib.suppress(Exception):
            api.core.delete_persistent_volume(f"pfcon-{NAMESPACE}-{name}", _preload_content=False)
    with contextlib.suppress(Exception):
        api.core.delete_namespace(NAMESPACE, _preload_content=False)


def options(cluster: Cluster, **kw: Any) -> KubernetesOptions:
    kw.setdefault("host_network", HOST_NETWORK)
    return KubernetesOptions(volume_name=cluster.pvc, namespace=cluster.namespace, capabilities=CAPABILITIES, **kw)


@contextlib.contextmanager
def adapter(cluster: Cluster, api: KubeApi | None = None, **kw: Any) -> Iterator[KubernetesCompute]:
    compute = KubernetesCompute(api or KubeApi.connect(cluster.kubeconfig), options(cluster, **kw))
    created: list[str] = []
    original = compute.schedule

    def schedule(job: ContainerJob) -> Any:
        created.append(job.name)
        return original(job)

    compute.schedule = schedule  # type: ignore[method-assign]
    try:
        assert compute.view.wait_current(30), compute.view.error()
        yield compute
    finally:
        for name in created:
            with contextlib.suppress(Exception):
                compute.remove(name)
        compute.close()


class K8sDriver:
    def script(self, exit_code: int = 0, lines: tuple[str, ...] = (), sleep: int = 0) -> tuple[str, ...]:
        body = "; ".join(f"echo {shlex.quote(line)}" for line in lines)
        if sleep:
            body = f"{body}; sleep {sleep}" if body else f"sleep {sleep}"
        return ("sh", "-c", f"{body or 'true'}; exit {exit_code}")

    def hog(self, mib: int) -> tuple[str, ...]:
        # sort holds its whole input in memory; past the hard limit the kernel kills it.
        return ("sh", "-c", f"head -c {mib * 1024 * 1024} /dev/zero | sort > /dev/null")

    def settle(self, compute: KubernetesCompute, name: str, timeout: float = 90) -> None:
        wait_for(lambda: compute.info(name).status.is_terminal, timeout, 0.2)

    def begin(self, compute: KubernetesCompute, name: str, timeout: float = 90) -> None:
        wait_for(lambda: compute.info(name).status is JobStatus.STARTED, timeout, 0.2)


class TestKubernetesCompute(ComputeContract):
    @pytest.fixture
    def compute(self, cluster: Cluster) -> Iterator[KubernetesCompute]:
        with adapter(cluster) as compute:
            yield compute

    @pytest.fixture
    def driver(self) -> K8sDriver:
        return K8sDriver()

    @pytest.fixture
    def image(self) -> str:
        return TEST_IMAGE


# -- Kubernetes specifics ----------------------------------------------------------------------


def stoppable_sleep(seconds: int) -> str:
    # sh as PID 1 ignores SIGTERM (and runs a trap only after its foreground command):
    # without this a deleted pod takes its 30 s grace period to go.
    return f"trap 'exit 143' TERM; sleep {seconds} & wait"


def make_job(command: str, name: str | None = None, **kw: Any) -> ContainerJob:
    return ContainerJob(
        name=name or unique("k8"),
        image=kw.pop("image", TEST_IMAGE),
        command=("sh", "-c", command),
        env=kw.pop("env", ()),
        resources=kw.pop("resources", Resources(1, 200, 64, 0)),
        mounts=kw.pop("mounts", ()),
        labels=kw.pop("labels", {"org.chrisproject.job_type": "plugin"}),  # as the domain sets it
    )


def test_spec_as_stored_and_as_run(cluster: Cluster) -> None:
    """Limits and requests, security context, labels, node selector, /dev/shm, subPaths, env, user."""
    root = cluster.storebase
    os.makedirs(f"{root}/key-spec/incoming")
    os.makedirs(f"{root}/key-spec/outgoing")
    with open(f"{root}/key-spec/incoming/in.txt", "w") as f:
        f.write("data")
    with adapter(
        cluster,
        labels=(("team", "fnndsc"),),
        node_selector=(("kubernetes.io/hostname", "127.0.0.1"),),
        shm_size_mib=70,
        container_user=parse_container_user("0:1234"),
    ) as compute:
        job = make_job(
            "cat /share/incoming/in.txt > /share/outgoing/out.txt; "
            "touch /share/incoming/nope 2>/dev/null && echo WRITABLE || echo READONLY; "
            'echo "$(id -u):$(id -g) $A"; grep " /dev/shm " /proc/mounts; grep CapEff /proc/self/status',
            env=("A=b=c",),
            resources=Resources(1, 300, 48, 0),
            mounts=(Mount("key-spec/incoming", "/share/incoming", True), Mount("key-spec/outgoing", "/share/outgoing", False)),
        )
        compute.schedule(job)
        K8sDriver().settle(compute, job.name)
        state = compute.state(job.name, 100)
        assert state.info.status is JobStatus.FINISHED_SUCCESSFULLY, state
        lines = state.logs.splitlines()
        assert lines[0] == "READONLY"
        assert lines[1] == "0:1234 b=c"
        # /dev/shm is a memory-backed emptyDir; before 1.22 (SizeMemoryBackedVolumes) its
        # sizeLimit is enforced by the kubelet's eviction, not as the tmpfs size
        assert lines[2].split()[:3] == ["tmpfs", "/dev/shm", "tmpfs"], lines[2]
        assert lines[3].split()[1] == "0000000000000000"  # every capability dropped
        with open(f"{root}/key-spec/outgoing/out.txt") as f:
            assert f.read() == "data"
        assert not os.path.exists(f"{root}/key-spec/incoming/nope")

        stored = compute.api.read_job(cluster.namespace, job.name)
        labels = {"team": "fnndsc", "org.chrisproject.job_type": "plugin", MANAGED_BY[0]: MANAGED_BY[1]}
        assert labels.items() <= stored["metadata"]["labels"].items()
        spec = stored["spec"]
        assert (spec["parallelism"], spec["completions"], spec["backoffLimit"]) == (1, 1, 0)
        assert labels.items() <= spec["template"]["metadata"]["labels"].items()
        pod = spec["template"]["spec"]
        assert pod["restartPolicy"] == "Never"
        assert pod["nodeSelector"] == {"kubernetes.io/hostname": "127.0.0.1"}
        assert pod.get("hostNetwork", False) is HOST_NETWORK  # an option, off by default (unit tests)
        [c] = pod["containers"]
        quantities = {"cpu": "300m", "memory": "48Mi"}
        assert c["resources"] == {"limits": quantities, "requests": quantities}
        assert c["imagePullPolicy"] == "IfNotPresent"
        assert c["securityContext"] == {
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsUser": 0, "runAsGroup": 1234,
        }  # fmt: skip
        assert [(m["mountPath"], m.get("subPath"), m.get("readOnly")) for m in c["volumeMounts"]] == [
            ("/share/incoming", "key-spec/incoming", True),
            ("/share/outgoing", "key-spec/outgoing", None),  # false is omitted by the API server
            ("/dev/shm", None, None),
        ]
        assert {"name": "storebase", "persistentVolumeClaim": {"claimName": cluster.pvc}} in pod["volumes"]
        assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "70Mi"}} in pod["volumes"]
        pods = compute.api.list_pods(cluster.namespace, f"job-name={job.name}")
        assert labels.items() <= pods[0]["metadata"]["labels"].items()
        assert pods[0]["status"]["qosClass"] == "Guaranteed"  # requests == limits


def test_ignore_limits(cluster: Cluster) -> None:
    with adapter(cluster, ignore_limits=True) as compute:
        job = make_job("true")
        compute.schedule(job)
        stored = compute.api.read_job(cluster.namespace, job.name)
        assert not stored["spec"]["template"]["spec"]["containers"][0].get("resources")


def wait_message(compute: KubernetesCompute, name: str, text: str, timeout: float = 90) -> Any:
    """The job's info once its message says ``text`` (that very info: a pending pod's
    condition can be rewritten by the scheduler's next attempt)."""
    seen: list[Any] = []

    def says() -> bool:
        info = compute.info(name)
        seen.append(info)
        return text in info.message

    wait_for(says, timeout, 0.2)
    return seen[-1]


def test_unschedulable_is_not_started_with_the_reason(cluster: Cluster) -> None:
    with adapter(cluster) as compute:
        job = make_job("true", resources=Resources(1, 1_000_000, 64, 0))  # 1000 cores
        compute.schedule(job)
        info = wait_message(compute, job.name, "Insufficient cpu")
        assert info.status is JobStatus.NOT_STARTED
        assert info.message.startswith("Unschedulable: 0/1 nodes are available")
        elsewhere = make_job("true", resources=Resources(1, 100, 64, 0))
        with adapter(cluster, node_selector=(("disktype", "none-such"),)) as other:
            other.schedule(elsewhere)
            info = wait_message(other, elsewhere.name, "didn't match")  # 1.20: "… Pod's node affinity"
            assert info.status is JobStatus.NOT_STARTED and info.message.startswith("Unschedulable: ")


@pytest.mark.parametrize(("image", "reasons"), [
    ("local/does-not-exist:404", ("ErrImagePull", "ImagePullBackOff")),
    ("local/Invalid_Name::x", ("InvalidImageName",)),
])  # fmt: skip
def test_image_problems_are_not_started_with_the_reason(cluster: Cluster, image: str, reasons: tuple[str, ...]) -> None:
    with adapter(cluster) as compute:
        job = make_job("true", image=image)
        compute.schedule(job)
        wait_for(lambda: compute.info(job.name).message.split(":")[0] in reasons, 90, 0.2)
        info = compute.info(job.name)
        assert info.status is JobStatus.NOT_STARTED, info
        assert compute.state(job.name, 10).logs == ""


def test_deadline_exceeded_while_pulling_names_both(cluster: Cluster) -> None:
    with adapter(cluster, active_deadline_seconds=8) as compute:
        job = make_job("true", image="local/does-not-exist:404")
        compute.schedule(job)
        K8sDriver().settle(compute, job.name)
        info = compute.info(job.name)
        assert info.status is JobStatus.FINISHED_WITH_ERROR
        assert info.message.startswith("DeadlineExceeded: ")
        assert "ImagePull" in info.message or "ErrImagePull" in info.message, info.message


def test_out_of_memory_is_named(cluster: Cluster) -> None:
    with adapter(cluster) as compute:
        job = make_job(K8sDriver().hog(200)[2], resources=Resources(1, 1000, 32, 0))
        compute.schedule(job)
        K8sDriver().settle(compute, job.name)
        state = compute.state(job.name, 10)
        assert state.info.status is JobStatus.FINISHED_WITH_ERROR
        assert "OOMKilled" in state.info.message or "exit code 137" in state.info.message, state.info
        assert state.logs.splitlines()[-1].startswith("[")


def test_multi_worker_logs_are_labelled_by_pod(cluster: Cluster) -> None:
    with adapter(cluster) as compute:
        job = make_job("echo hello from $(cat /proc/sys/kernel/random/uuid)", resources=Resources(3, 100, 32, 0))
        compute.schedule(job)
        K8sDriver().settle(compute, job.name)
        state = compute.state(job.name, 300)
        assert state.info.status is JobStatus.FINISHED_SUCCESSFULLY
        sections = state.logs.split("==> pod ")[1:]
        pods = {p["metadata"]["name"] for p in compute.api.list_pods(cluster.namespace, f"job-name={job.name}")}
        assert {s.split(" <==")[0] for s in sections} == pods and len(pods) == 3
        hellos = [s.split("\n")[1] for s in sections]
        assert all(h.startswith("hello from ") for h in hellos) and len(set(hellos)) == 3  # each pod's own output


def test_gone_job_is_not_found_and_its_pods_go(cluster: Cluster) -> None:
    with adapter(cluster) as compute:
        job = make_job(stoppable_sleep(60))
        compute.schedule(job)
        K8sDriver().begin(compute, job.name)
        compute.remove(job.name)
        for call in (compute.info, lambda n: compute.state(n, 10), compute.remove):
            with pytest.raises(JobNotFound):
                call(job.name)
        wait_for(lambda: not compute.api.list_pods(cluster.namespace, f"job-name={job.name}"), 60, 0.5)


# -- the shared view: API requests per status GET with 100 live jobs ---------------------------------


def measure_status_requests(
    compute: KubernetesCompute, names: list[str], clients: int, rounds: int, pause: float = 0.0
) -> dict[str, Any]:
    before = compute.api.counts()
    latencies: list[float] = []
    lock = threading.Lock()

    def client() -> None:
        for i in range(rounds):
            if i:
                time.sleep(pause)
            for name in names:
                t0 = time.perf_counter()
                compute.state(name, 1000)
                with lock:
                    latencies.append(time.perf_counter() - t0)

    started = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    after = compute.api.counts()
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}
    gets = len(latencies)
    latencies.sort()
    return {
        "status_gets": gets,
        "seconds": elapsed,
        "requests": delta,
        "per_get": sum(delta.values()) / gets,
        "view_per_get": sum(v for k, v in delta.items() if k != "get pod log") / gets,
        "p50_ms": latencies[gets // 2] * 1000,
    }


def test_status_of_100_live_jobs_costs_a_bounded_number_of_requests(cluster: Cluster) -> None:
    with adapter(cluster) as compute:
        names = [unique("load") for _ in range(100)]
        for name in names:
            compute.schedule(make_job(f"echo started; {stoppable_sleep(600)}", name=name, resources=Resources(1, 10, 16, 0)))
        wait_for(lambda: all(compute.info(n).status is JobStatus.STARTED for n in names), 300, 1)
        result = measure_status_requests(compute, names, clients=10, rounds=3, pause=1.0)
        print(f"\n100 live jobs, {result['status_gets']} status calls in {result['seconds']:.1f} s: "
              f"API requests {result['requests']} = {result['per_get']:.3f} per status call "
              f"({result['view_per_get']:.3f} for the status itself), p50 {result['p50_ms']:.2f} ms")  # fmt: skip
        # status itself: from the view, no list, watch or get per call
        assert result["view_per_get"] <= 0.01, result
        # logs: one read per running pod per refresh interval (1 s), however many polls
        intervals = result["seconds"] / compute.options.log_refresh_seconds + 1
        assert result["requests"].get("get pod log", 0) <= len(names) * intervals, result
        assert result["per_get"] < 1, result
        for name in names:
            compute.remove(name)
        # leave a calm node to the next test: 100 pods take the kubelet a while to tear down
        wait_for(lambda: not compute.api.list_pods(cluster.namespace, "job-name"), 300, 2)


# -- the API server unreachable: a TCP proxy in front of it, closed and reopened -----------------------


class TcpProxy:
    """127.0.0.1:port → target; ``close()`` drops the listener and every connection."""

    def __init__(self, target: tuple[str, int], port: int = 0) -> None:
        self.target = target
        self.port = port
        self.listener: socket.socket | None = None
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()

    def open(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if self.listener is not None:
            with contextlib.suppress(OSError):
                self.listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            self.listener.close()
            self.listener = None
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


@contextlib.contextmanager
def proxied_kubeconfig(cluster: Cluster, directory: Any) -> Iterator[tuple[TcpProxy, str]]:
    host_port = cluster.server.split("://", 1)[1]
    host, _, port = host_port.rpartition(":")
    proxy = TcpProxy((host, int(port)))
    proxy.open()
    with open(cluster.kubeconfig) as f:
        config = yaml.safe_load(f)
    for entry in config["clusters"]:
        entry["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"  # the API server's certificate names 127.0.0.1
    path = os.path.join(str(directory), "proxied.kubeconfig")
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    try:
        yield proxy, path
    finally:
        proxy.close()


def test_api_server_outage_and_recovery_without_restart(cluster: Cluster, tmp_path: Any) -> None:
    with proxied_kubeconfig(cluster, tmp_path) as (proxy, path), adapter(cluster, api=KubeApi.connect(path)) as compute:
        compute.view.backoff_max = 1.0
        job = make_job("sleep 20; echo done")
        compute.schedule(job)
        K8sDriver().begin(compute, job.name)
        lists = dict(compute.view.relists)

        proxy.close()
        wait_for(lambda: not compute.view.current(), 30, 0.1)
        for call in (lambda: compute.info(job.name), lambda: compute.schedule(make_job("true")), compute.ping):
            started = time.monotonic()
            with pytest.raises(BackendUnavailable, match="Kubernetes API server unavailable"):
                call()
            assert time.monotonic() - started < 10

        proxy.open()  # the same port
        assert compute.view.wait_current(30), compute.view.error()
        assert all(compute.view.relists[k] > lists[k] for k in lists)  # the view listed again
        compute.ping()
        assert compute.info(job.name).status is JobStatus.STARTED
        K8sDriver().settle(compute, job.name, 60)
        state = compute.state(job.name, 10)
        assert state.info.status is JobStatus.FINISHED_SUCCESSFULLY and state.logs == "done\n"


# -- listing and cancel (issue 12) ----------------------------------------------------------


def test_a_cancelled_job_stops_keeps_its_pod_and_logs_and_survives_a_restart(cluster: Cluster) -> None:
    instance = unique("inst")
    labels = {JOB_TYPE_LABEL: "plugin", INSTANCE_LABEL: instance}
    with adapter(cluster) as compute:
        job = make_job(f"echo started; {stoppable_sleep(600)}", labels=labels)
        compute.schedule(job)
        wait_for(lambda: "started" in compute.state(job.name, 10).logs, 90, 0.2)
        info = compute.cancel(job.name)
        assert (info.status, info.message) == (JobStatus.FINISHED_WITH_ERROR, CANCELLED_MESSAGE)
        # the pod is stopped by the kubelet, not deleted; the Job fails and is kept
        wait_for(lambda: _pod_phases(cluster, job.name) == ["Failed"], 90, 0.5)
        with adapter(cluster) as fresh:  # the server restarted: from the view, then not
            for _ in range(2):
                state = fresh.state(job.name, 10)
                assert (state.info.status, state.info.message) == (JobStatus.FINISHED_WITH_ERROR, CANCELLED_MESSAGE)
                assert "started" in state.logs and "DeadlineExceeded" not in state.info.message
            [summary] = fresh.list_jobs(instance)
            assert (summary.status, summary.message) == (JobStatus.FINISHED_WITH_ERROR, CANCELLED_MESSAGE)
            assert summary.resources == Resources(1, 200, 64, 0)
            assert summary.node  # the node the pod ran on
            assert fresh.cancel(job.name).message == CANCELLED_MESSAGE  # again: nothing changes
            uid = cluster.api.read_job(cluster.namespace, job.name)["metadata"]["uid"]
            # DELETE by a restarted server: the Job and its stopped pod go (kubelet 1.20 never
            # completes the graceful deletion of a pod stopped at its deadline)
            fresh.remove(job.name)
            wait_for(lambda: not cluster.api.list_pods(cluster.namespace, f"controller-uid={uid}"), 60, 0.5)


def test_a_job_deleted_right_after_its_cancel_leaves_no_pod_behind(cluster: Cluster) -> None:
    """DELETE racing the kubelet's stop at the deadline: no pod may stay Terminating."""
    with adapter(cluster) as compute:
        jobs = [make_job(f"echo started; {stoppable_sleep(600)}") for _ in range(3)]
        for job in jobs:
            compute.schedule(job)
        for job in jobs:
            wait_for(lambda job=job: "started" in compute.state(job.name, 10).logs, 90, 0.2)
        uids = [cluster.api.read_job(cluster.namespace, job.name)["metadata"]["uid"] for job in jobs]
        for job in jobs:
            compute.cancel(job.name)
            compute.remove(job.name)
        for uid in uids:
            wait_for(lambda uid=uid: not cluster.api.list_pods(cluster.namespace, f"controller-uid={uid}"), 90, 0.5)


def test_cancel_of_a_job_that_never_started(cluster: Cluster) -> None:
    with adapter(cluster) as compute:
        job = make_job("true", resources=Resources(1, 1_000_000, 64, 0))  # unschedulable
        compute.schedule(job)
        wait_message(compute, job.name, "Insufficient cpu")
        assert compute.cancel(job.name).message == CANCELLED_MESSAGE
        # the Job fails on its deadline (its pod never ran: it goes), and stays cancelled
        wait_for(lambda: compute.api.read_job(cluster.namespace, job.name)["status"].get("failed") is not None
                 or _pod_phases(cluster, job.name) == [], 90, 0.5)  # fmt: skip
        with adapter(cluster) as fresh:
            assert fresh.info(job.name).message == CANCELLED_MESSAGE


def _pod_phases(cluster: Cluster, name: str) -> list[str]:
    job = cluster.api.read_job(cluster.namespace, name)
    pods = cluster.api.list_pods(cluster.namespace, f"controller-uid={job['metadata']['uid']}")
    return [str(p["status"].get("phase")) for p in pods]
