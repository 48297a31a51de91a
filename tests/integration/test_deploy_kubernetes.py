"""The Kubernetes manifests (deploy/kubernetes, kustomize) on the real cluster.

Fast: the base and the local-ci overlay render with kubectl's own kustomize (v2.0.3 in
kubectl 1.20) into the objects the deployment promises — least RBAC, non-root and
read-only server, probes, resources, ConfigMap and Secret, storeBase PVC — and the API
server accepts the base (server-side dry run). End to end: the production image built
from the Dockerfile (``make image``) is deployed with ``kubectl apply -k`` from a copy
of overlays/local-ci (a namespace, port, hostPath and throwaway secret of this run),
becomes Available once its readiness probe (``/api/v1/ready/``) passes, and runs a whole
job cycle through python-pfconclient 3.3.0 as CUBE would; its ServiceAccount may run
jobs in its namespace and do nothing else. Everything is deleted at the end.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import secrets
import shutil
import subprocess
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from pfconclient.client import Client
from pfconclient.exceptions import PfconRequestException

from pfcon import __version__

from .conftest import TEST_IMAGE, _require
from .server import ROOT, free_port
from .test_e2e_zipfile import descriptors, make_zip, wait_terminal

pytestmark = pytest.mark.kubernetes

DEPLOY = Path(ROOT) / "deploy" / "kubernetes"
BASE = DEPLOY / "base"
OVERLAY = Path("overlays") / "local-ci"
K8S_BIN = Path(os.environ.get("K8S_CACHE_DIR", "/var/cache/pfcon-ci/k8s-1.20.2")) / "bin"
# What the local-ci overlay says, and a test run replaces in its copy of it.
OVERLAY_NAMESPACE = "pfcon-ci-deploy"
OVERLAY_HOSTPATH = "/var/lib/pfcon-ci-deploy/storeBase"
OVERLAY_PORT = "30915"
OVERLAY_IMAGE = 'newName: local/pfcon\n    newTag: "0.1.0"'  # and PFCON_OP_IMAGE, the same image
OVERLAY_OP_IMAGE = "PFCON_OP_IMAGE=local/pfcon:0.1.0"
SERVER_UID = 10001
MAKE_IMAGE = f"local/pfcon:{__version__}"  # what `make image` builds, and the manifests name
ROLE_RULES = [
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "list", "watch", "delete", "patch"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
]
TIMEOUT_AVAILABLE = 300  # seconds for the server's pod to be scheduled, started and ready (a busy node flaps NotReady)
TIMEOUT_JOB = 240


# -- kubectl -----------------------------------------------------------------------------------


def kubectl_path() -> str | None:
    local = K8S_BIN / "kubectl"
    return str(local) if local.is_file() else shutil.which("kubectl")


def kubectl(*args: str, timeout: float = 60, check: bool = True, stdin: str | None = None) -> str:
    binary = kubectl_path()
    assert binary, "kubectl not found"
    done = subprocess.run([binary, *args], capture_output=True, text=True, timeout=timeout, input=stdin, check=False)
    if check:
        assert done.returncode == 0, f"kubectl {' '.join(args)}: exit {done.returncode}\n{done.stdout}{done.stderr}"
    return done.stdout


def render(directory: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize``: no cluster needed."""
    return [doc for doc in yaml.safe_load_all(kubectl("kustomize", str(directory))) if doc]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"{len(found)} objects of kind {kind}"
    return found[0]


@pytest.fixture(scope="module")
def has_kubectl() -> None:
    if not kubectl_path():
        _require("kubectl", f"neither {K8S_BIN}/kubectl nor kubectl on PATH (bash scripts/k8s-cluster.sh build)")


@pytest.fixture(scope="module")
def cluster(has_kubectl: None) -> None:
    if not os.environ.get("KUBECONFIG"):
        _require("a Kubernetes cluster", 'KUBECONFIG is not set (eval "$(bash scripts/k8s-cluster.sh env)")')
    try:
        kubectl("get", "--raw", "/readyz", timeout=15)
    except (AssertionError, subprocess.TimeoutExpired) as e:
        _require("a Kubernetes cluster", f"KUBECONFIG={os.environ['KUBECONFIG']}: {e}")


# -- the overlay of a run ------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    namespace: str
    port: int
    storebase: Path
    image: str
    password: str

    @property
    def pv(self) -> str:
        return f"{self.namespace}-storebase"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1/"


def _replace(text: str, old: str, new: str, where: Path, count: int | None = None) -> str:
    found = text.count(old)
    assert found and (count is None or found == count), f"{where}: expected {old!r} (the overlay changed?)"
    return text.replace(old, new)


def prepare(run: Run, workdir: Path) -> Path:
    """A copy of deploy/kubernetes whose local-ci overlay is this run's; returns the overlay."""
    tree = workdir / "kubernetes"
    shutil.copytree(DEPLOY, tree, ignore=shutil.ignore_patterns("secret.env"))
    overlay = tree / OVERLAY
    name, _, tag = run.image.rpartition(":")
    for path in sorted(overlay.glob("*.yaml")):
        text = path.read_text()
        if OVERLAY_HOSTPATH in text:
            text = _replace(text, OVERLAY_HOSTPATH, str(run.storebase), path)
        if OVERLAY_NAMESPACE in text:
            text = _replace(text, OVERLAY_NAMESPACE, run.namespace, path)
        if OVERLAY_PORT in text:
            text = _replace(text, OVERLAY_PORT, str(run.port), path)
        if path.name == "kustomization.yaml":
            text = _replace(text, OVERLAY_IMAGE, f'newName: {name}\n    newTag: "{tag}"', path, count=1)
            text = _replace(text, OVERLAY_OP_IMAGE, f"PFCON_OP_IMAGE={run.image}", path, count=1)
        path.write_text(text)
    (overlay / "secret.env").write_text(
        f"SECRET_KEY={secrets.token_urlsafe(48)}\nPFCON_USER=pfcon\nPFCON_PASSWORD={run.password}\n"
    )
    return overlay


def new_run(tmp: Path, image: str = MAKE_IMAGE) -> Run:
    storebase = tmp / "storeBase"
    storebase.mkdir()
    os.chown(storebase, SERVER_UID, 0)  # the kubelet applies no fsGroup to a hostPath volume
    return Run(
        namespace=f"{OVERLAY_NAMESPACE}-{uuid.uuid4().hex[:6]}",
        port=free_port(),
        storebase=storebase,
        image=image,
        password=secrets.token_urlsafe(16),
    )


# -- fast: what the manifests say ----------------------------------------------------------------


def test_base_renders_the_promised_objects(has_kubectl: None) -> None:
    objects = render(BASE)
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == sorted(
        ["ServiceAccount", "Role", "RoleBinding", "ConfigMap", "PersistentVolumeClaim", "Deployment", "Service"]
    )
    # namespace-agnostic, and no credential shipped
    assert all("namespace" not in o["metadata"] for o in objects)
    assert not [o for o in objects if o["kind"] in ("Secret", "ClusterRole", "ClusterRoleBinding")]

    assert one(objects, "ServiceAccount")["metadata"]["name"] == "pfcon"
    role = one(objects, "Role")
    assert role["rules"] == ROLE_RULES
    binding = one(objects, "RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "pfcon"}]

    pvc = one(objects, "PersistentVolumeClaim")
    assert pvc["metadata"]["name"] == "pfcon-storebase"
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pvc["spec"]["resources"]["requests"]["storage"]

    config = one(objects, "ConfigMap")
    assert config["data"] == {
        "APPLICATION_MODE": "production",
        "CONTAINER_ENV": "kubernetes",
        "COMPUTE_VOLUME_TYPE": "kubernetes_pvc",
        "VOLUME_NAME": "pfcon-storebase",
        "STOREBASE_MOUNT": "/var/local/storeBase",
        "PFCON_INNETWORK": "false",
        "STORAGE_ENV": "zipfile",
        "CONTAINER_USER": f"{SERVER_UID}:",
        "UPLOAD_DIR": "/tmp/pfcon-uploads",
        "PFCON_OP_IMAGE": MAKE_IMAGE,  # pfcon 6's op jobs: the Deployment's image
        "LOG_LEVEL": "INFO",
    }
    assert not {"SECRET_KEY", "PFCON_USER", "PFCON_PASSWORD"} & set(config["data"])

    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]  # Prometheus finds /metrics
    assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/path": "/metrics", "prometheus.io/port": "5005"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "pfcon"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == SERVER_UID
    assert pod["securityContext"]["fsGroup"] == SERVER_UID
    assert not pod.get("hostNetwork")
    (container,) = pod["containers"]
    assert container["image"] == MAKE_IMAGE  # set by kustomize `images:`
    assert config["data"]["PFCON_OP_IMAGE"] == container["image"]
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": SERVER_UID,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert set(container["resources"]) == {"requests", "limits"}
    for side in ("requests", "limits"):
        assert set(container["resources"][side]) == {"cpu", "memory"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/api/v1/health/", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/api/v1/ready/", "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": "/api/v1/health/", "port": "http"}
    assert container["ports"] == [{"name": "http", "containerPort": 5005, "protocol": "TCP"}]
    assert container["envFrom"] == [
        {"configMapRef": {"name": config["metadata"]["name"]}},  # the generated (hashed) name
        {"secretRef": {"name": "pfcon-secret"}},
    ]
    env = {e["name"]: e for e in container["env"]}
    assert env["JOB_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/var/local/storeBase"]]["persistentVolumeClaim"] == {"claimName": "pfcon-storebase"}
    assert volumes[mounts["/tmp"]]["emptyDir"] == {}  # the upload spool on a read-only root

    service = one(objects, "Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "http", "port": 5005, "targetPort": "http", "protocol": "TCP"}]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert "app.kubernetes.io/managed-by" not in labels  # the adapter's own selector of jobs and pods


def test_base_is_accepted_by_the_api_server(cluster: None) -> None:
    out = kubectl("apply", "-k", str(BASE), "--dry-run=server", "-n", "default", "-o", "name")
    assert "deployment.apps/pfcon" in out.split()


def test_local_ci_overlay_renders(has_kubectl: None, tmp_path: Path) -> None:
    run = new_run(tmp_path, image="local/pfcon:9.9.9")
    objects = render(prepare(run, tmp_path))
    namespaced = [o for o in objects if o["kind"] not in ("Namespace", "PersistentVolume")]
    assert {o["metadata"].get("namespace") for o in namespaced} == {run.namespace}
    assert one(objects, "Namespace")["metadata"]["name"] == run.namespace
    assert one(objects, "RoleBinding")["subjects"] == [
        {"kind": "ServiceAccount", "name": "pfcon", "namespace": run.namespace}
    ]
    pv = one(objects, "PersistentVolume")
    assert pv["metadata"]["name"] == run.pv
    assert pv["spec"]["hostPath"]["path"] == str(run.storebase)
    assert pv["spec"]["claimRef"] == {"namespace": run.namespace, "name": "pfcon-storebase"}
    assert one(objects, "PersistentVolumeClaim")["spec"]["volumeName"] == run.pv
    secret = one(objects, "Secret")
    assert secret["metadata"]["name"].startswith("pfcon-secret-")  # generated, hashed
    assert set(secret["data"]) == {"SECRET_KEY", "PFCON_USER", "PFCON_PASSWORD"}
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    (container,) = pod["containers"]
    assert container["image"] == "local/pfcon:9.9.9"
    config = one(objects, "ConfigMap")["data"]
    assert config["PFCON_OP_IMAGE"] == "local/pfcon:9.9.9"
    # here a pod without the host network has its running container killed by the kubelet
    assert config["KUBERNETES_HOST_NETWORK"] == "yes"
    assert container["imagePullPolicy"] == "Never"
    assert container["ports"] == [{"name": "http", "containerPort": run.port, "protocol": "TCP"}]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["HOST"] == "127.0.0.1" and env["PORT"] == str(run.port)
    assert (env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"]) == ("127.0.0.1", "6443")
    assert {"configMapRef": {"name": one(objects, "ConfigMap")["metadata"]["name"]}} in container["envFrom"]
    assert {"secretRef": {"name": secret["metadata"]["name"]}} in container["envFrom"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


# -- end to end ------------------------------------------------------------------------------------


def _newest_source_mtime() -> float:
    paths = [Path(ROOT) / "Dockerfile", Path(ROOT) / "pyproject.toml", *(Path(ROOT) / "src").rglob("*.py")]
    return max(p.stat().st_mtime for p in paths)


@pytest.fixture(scope="module")
def production_image(docker_client: Any) -> str:
    """The image `make image` builds (local/pfcon:<version>), built again when absent or
    older than the sources (an image of an earlier tree would test other code)."""
    tag = MAKE_IMAGE
    try:
        created = docker_client.images.get(tag).attrs["Created"]
        built = datetime.datetime.fromisoformat(created[:26].rstrip("Z") + "+00:00").timestamp()
    except Exception:  # noqa: BLE001 - absent
        built = 0.0
    if built < _newest_source_mtime():
        done = subprocess.run(
            ["bash", "scripts/build-image.sh"], cwd=ROOT, capture_output=True, text=True, timeout=900, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr
        tag = done.stdout.strip().splitlines()[-1]
    return tag


def diagnose(namespace: str) -> str:
    parts = []
    for args in (
        ("get", "all,pvc,events", "-o", "wide"),
        ("describe", "deployment,pods"),
        ("logs", "deployment/pfcon", "--tail=50"),
    ):
        done = subprocess.run(
            [kubectl_path() or "kubectl", "-n", namespace, *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        parts.append(f"$ kubectl {' '.join(args)}\n{done.stdout}{done.stderr}")
    return "\n".join(parts)


@pytest.fixture(scope="module")
def deployed(cluster: None, production_image: str, tmp_path_factory: Any) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("k8s-deploy")
    run = new_run(tmp, production_image)
    overlay = prepare(run, tmp)
    try:
        kubectl("apply", "-k", str(overlay), timeout=60)
        done = subprocess.run(
            [kubectl_path() or "kubectl", "-n", run.namespace, "rollout", "status", "deployment/pfcon",
             f"--timeout={TIMEOUT_AVAILABLE}s"],
            capture_output=True, text=True, timeout=TIMEOUT_AVAILABLE + 30, check=False,
        )  # fmt: skip
        assert done.returncode == 0, (
            f"the server did not become ready: {done.stdout}{done.stderr}\n{diagnose(run.namespace)}"
        )
        kubectl(
            "-n", run.namespace, "wait", "--for=condition=Available", "deployment/pfcon", "--timeout=30s", timeout=45
        )
        yield run
    finally:
        # Jobs, pods, the claim: all go with the namespace; then the (cluster-scoped) PV.
        # A slow kubelet may take longer than the wait: what matters is that deletion is
        # under way, which Kubernetes then finishes on its own.
        lingering = [what for what in (("namespace", run.namespace, 180), ("pv", run.pv, 60)) if not delete(*what)]
        assert not lingering, f"not deleted: {lingering}"


def delete(kind: str, name: str, wait: int = 180) -> bool:
    """Delete and wait (bounded); True when the object is gone or being deleted."""
    try:
        kubectl("delete", kind, name, "--ignore-not-found", f"--timeout={wait}s", timeout=wait + 30, check=False)
    except subprocess.TimeoutExpired:
        pass
    try:
        left = kubectl(
            "get", kind, name, "--ignore-not-found", "-o", "jsonpath={.metadata.deletionTimestamp}.", timeout=30
        )
    except (AssertionError, subprocess.TimeoutExpired):  # the API server did not answer
        return False
    return left.strip() != "."  # "": gone; "<timestamp>.": being deleted


def test_server_is_ready_and_runs_in_cluster(deployed: Run) -> None:
    assert requests.get(deployed.url + "health/", timeout=5).json() == {"health": "OK"}
    ready = requests.get(deployed.url + "ready/", timeout=15)
    assert ready.status_code == 200, ready.text
    assert ready.json()["ready"] is True
    pod = json.loads(
        kubectl("-n", deployed.namespace, "get", "pods", "-l", "app.kubernetes.io/component=server", "-o", "json")
    )
    (item,) = pod["items"]
    status = item["status"]["containerStatuses"][0]
    assert status["ready"] is True and status["restartCount"] == 0
    # non-root, read-only root filesystem, the spool writable
    out = kubectl(
        "-n", deployed.namespace, "exec", item["metadata"]["name"], "--", "sh", "-c",
        "id -u; touch /probe 2>/dev/null && echo root-writable || echo root-read-only; touch /tmp/probe && echo tmp-writable",
        timeout=30,
    )  # fmt: skip
    assert out.split() == [str(SERVER_UID), "root-read-only", "tmp-writable"]


def test_a_whole_job_cycle_through_the_deployed_server(deployed: Run) -> None:
    url = deployed.url
    client = Client(url, Client.get_auth_token(url + "auth-token/", "pfcon", deployed.password))
    info = client.get_server_info()
    assert (info["container_env"], info["compute_volume_type"], info["storage_env"]) == (
        "kubernetes", "kubernetes_pvc", "zipfile"
    )  # fmt: skip
    files = {
        "plain.txt": b"hello\n",
        "sub/binary.bin": os.urandom(256 * 1024),
        "ünïcødé/名前 with space.txt": "données".encode(),
    }
    job = f"dep-{uuid.uuid4().hex[:12]}"
    response = client.submit_job(job, descriptors(image=TEST_IMAGE), make_zip(files))
    assert response["data"]["nfiles"] == len(files)
    assert (deployed.storebase / f"key-{job}" / "incoming").is_dir()  # staged on the PVC by the pod
    status = wait_terminal(client, job, timeout=TIMEOUT_JOB)
    assert status["compute"]["status"] == "finishedSuccessfully", status
    # a Job of the server, in its namespace
    k8s_job = json.loads(kubectl("-n", deployed.namespace, "get", "job", job, "-o", "json"))
    assert k8s_job["status"].get("succeeded") == 1
    assert k8s_job["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "pfcon"
    assert k8s_job["spec"]["template"]["spec"].get("hostNetwork") is True  # the overlay's KUBERNETES_HOST_NETWORK
    with zipfile.ZipFile(io.BytesIO(client.get_job_zip_data(job))) as z:
        assert {name: z.read(name) for name in z.namelist()} == files
    client.delete_job(job)
    assert not (deployed.storebase / f"key-{job}").exists()
    with pytest.raises(PfconRequestException) as e:
        client.get_job_status(job)
    assert e.value.code == 404
    deadline = time.monotonic() + 60
    while kubectl("-n", deployed.namespace, "get", "job", job, "--ignore-not-found", "-o", "name").strip():
        assert time.monotonic() < deadline, f"Job {job} still exists 60 s after DELETE"
        time.sleep(0.5)


@pytest.mark.parametrize(
    ("verb", "resource", "in_own_namespace", "allowed"),
    [
        ("create", "jobs.batch", True, True),
        ("watch", "jobs.batch", True, True),
        ("delete", "jobs.batch", True, True),
        ("patch", "jobs.batch", True, True),  # cancel: a label, or the Job's deadline
        ("patch", "pods", True, True),  # cancel: a pod's deadline (the pod and its logs stay)
        ("patch", "pods", False, False),
        ("list", "pods", True, True),
        ("watch", "pods", True, True),
        ("get", "pods/log", True, True),
        ("list", "secrets", True, False),
        ("get", "configmaps", True, False),
        ("create", "pods", True, False),
        ("get", "pods", True, False),  # the adapter lists and watches, never GETs one
        ("delete", "pods", True, True),  # a cancelled Job's stopped pods, when the Job is deleted
        ("delete", "pods", False, False),
        ("create", "pods/exec", True, False),
        ("get", "pods/log", False, False),
        ("update", "jobs.batch", True, False),
        ("create", "rolebindings.rbac.authorization.k8s.io", True, False),
        ("create", "jobs.batch", False, False),
        ("list", "pods", False, False),
        ("list", "namespaces", False, False),
    ],
)
def test_the_service_account_has_the_least_rbac(
    deployed: Run, verb: str, resource: str, in_own_namespace: bool, allowed: bool
) -> None:
    namespace = deployed.namespace if in_own_namespace else "default"
    account = f"system:serviceaccount:{deployed.namespace}:pfcon"
    resource, _, subresource = resource.partition("/")  # `can-i get pods/log` would ask for the pod named "log"
    extra = [f"--subresource={subresource}"] if subresource else []
    answer = kubectl(
        "auth", "can-i", verb, resource, *extra, "-n", namespace, f"--as={account}", check=False, timeout=30
    )  # fmt: skip
    assert answer.strip() == ("yes" if allowed else "no"), f"can {account} {verb} {resource} in {namespace}?"
