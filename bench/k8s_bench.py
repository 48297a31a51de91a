"""Kubernetes section of the benchmark (``bench/bench.py --only k8s``).

With 100 live jobs (pods running ``sleep``) on the local cluster of
``scripts/k8s-cluster.sh``, 10 clients poll every job's status over HTTP; reported: status
GET p50/p90 and the Kubernetes API-server requests each status GET costs, split into the
status itself (answered from the shared watch-fed view: list/watch/get) and the on-demand
pod log reads (at most one per running pod per ``KUBERNETES_LOG_REFRESH_SECONDS``).

The server is the real app (``create_app(build_container(settings))``, uvicorn) with
``CONTAINER_ENV=kubernetes``, in its own process: ``k8s_bench.py serve`` also answers
``GET /`` on a second port with the adapter's request counters (``KubeApi.counts()``).
The section is skipped (not failed) when no cluster answers: start one with
``bash scripts/k8s-cluster.sh start``.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "k8s-cluster.sh")
NAMESPACE = "pfcon-bench"
IMAGE = os.environ.get("PFCON_TEST_IMAGE", "local/pfcon-busybox:1")
LIVE = "echo started; trap 'exit 143' TERM; sleep 900 & wait"


def find_kubeconfig() -> str | None:
    """$KUBECONFIG, else the local cluster's admin kubeconfig (scripts/k8s-cluster.sh env)."""
    if os.environ.get("KUBECONFIG"):
        return os.environ["KUBECONFIG"]
    try:
        out = subprocess.run(["bash", SCRIPT, "env"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        if line.startswith("export KUBECONFIG="):
            path = line.split("=", 1)[1].strip().strip('"')
            return path if os.path.exists(path) else None
    return None


def cluster_problem(kubeconfig: str | None) -> str | None:
    if not kubeconfig:
        return "no KUBECONFIG and no local cluster (bash scripts/k8s-cluster.sh start)"
    from pfcon.adapters.compute.kubernetes import KubeApi

    try:
        KubeApi.connect(kubeconfig).version()
    except Exception as e:  # noqa: BLE001
        return f"the cluster of {kubeconfig} does not answer: {e}"
    return None


# -- the server process ---------------------------------------------------------------------------


def serve(port: int, counts_port: int) -> None:
    from pfcon.bootstrap import build_container
    from pfcon.config import load_settings
    from pfcon.entrypoints.http.app import create_app
    from pfcon.entrypoints.http.server import run_app
    from pfcon.entrypoints.logs import configure_logging

    settings = load_settings()
    configure_logging(settings.app.log_level)
    container = build_container(settings)
    app = create_app(container)
    compute = container.compute()

    class Counts(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(compute.api.counts()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    counts = http.server.ThreadingHTTPServer(("127.0.0.1", counts_port), Counts)
    threading.Thread(target=counts.serve_forever, daemon=True).start()
    run_app(app, settings, "127.0.0.1", port)


# -- the section ------------------------------------------------------------------------------------


def _claim(storebase: str) -> str:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    done = subprocess.run(["bash", SCRIPT, "pvc", name, storebase, NAMESPACE], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"k8s-cluster.sh pvc failed: {done.stderr[-1000:]}")
    return name


def _unclaim(kubeconfig: str, name: str) -> None:
    from pfcon.adapters.compute.kubernetes import KubeApi

    api = KubeApi.connect(kubeconfig)
    for call, args in ((api.core.delete_namespaced_persistent_volume_claim, (name, NAMESPACE)),
                       (api.core.delete_persistent_volume, (f"pfcon-{NAMESPACE}-{name}",))):  # fmt: skip
        try:
            call(*args, _preload_content=False)
        except Exception:  # noqa: BLE001
            pass


def section(bench: Any, tools: Any) -> None:
    """Run the section inside ``bench.py``'s Bench (its results and --quick) with the
    helpers of ``tools`` (the bench.py module: Proc, descriptors, summary ...)."""
    from pfconclient.client import Client

    Proc, descriptors, free_port, ms, summary, tiny_zip = (
        tools.Proc, tools.descriptors, tools.free_port, tools.ms, tools.summary, tools.tiny_zip,
    )  # fmt: skip

    r = bench.results
    kubeconfig = find_kubeconfig()
    problem = cluster_problem(kubeconfig)
    if problem:
        r.add("k8s", "Kubernetes section", None, "", note=f"skipped: {problem}")
        r.metrics[-1].verdict = "skipped"
        return
    assert kubeconfig is not None
    jobs = bench.n(100, 20)
    clients, rounds = 10, bench.n(5, 2)
    tmp = tempfile.mkdtemp(prefix="pfcon-k8s-bench-")
    storebase = os.path.join(tmp, "storeBase")
    os.makedirs(storebase)
    claim = _claim(storebase)
    port, counts_port = free_port(), free_port()
    env = {
        **os.environ,
        "APPLICATION_MODE": "dev",
        "CONTAINER_ENV": "kubernetes",
        "VOLUME_NAME": claim,
        "JOB_NAMESPACE": NAMESPACE,
        "KUBECONFIG": kubeconfig,
        "STOREBASE_MOUNT": storebase,
        "UPLOAD_DIR": os.path.join(tmp, "uploads"),
        "JOB_LABELS": f"pfcon-bench={bench.run_id}",
        # the local cluster has no pod network: without the host's, kubelet 1.20 kills a
        # running pod whose sandbox has no IP (tests/integration/test_kubernetes_compute.py)
        "KUBERNETES_HOST_NETWORK": os.environ.get("KUBERNETES_HOST_NETWORK", "yes"),
    }
    for name in ("COMPUTE_VOLUME_TYPE", "STOREBASE"):
        env.pop(name, None)
    argv = [sys.executable, os.path.abspath(__file__), "serve", "--port", str(port), "--counts-port", str(counts_port)]
    proc = Proc(argv, env, os.path.join(tmp, "server.log"), port)
    names = [f"{bench.prefix}k8s-{i}" for i in range(jobs)]
    try:
        s = requests.Session()
        s.headers.update(proc.headers)
        api = proc.api
        client = Client(api, proc.token)
        with ThreadPoolExecutor(10) as pool:
            list(pool.map(lambda jid: client.submit_job(jid, descriptors(LIVE, cpu_limit=10, memory_limit=16), tiny_zip(),
                                                        timeout=120), names))  # fmt: skip
        t0 = time.monotonic()
        while True:
            states = [s.get(f"{api}jobs/{n}/", timeout=60).json()["compute"]["status"] for n in names]
            if all(st == "started" for st in states):
                break
            if time.monotonic() - t0 > 600:
                raise RuntimeError(f"jobs not all started after 600 s: {sorted(set(states))}")
            time.sleep(2)
        started_s = time.monotonic() - t0

        def counts() -> dict[str, int]:
            return dict(requests.get(f"http://127.0.0.1:{counts_port}/", timeout=10).json())

        latencies: list[float] = []
        lock = threading.Lock()

        def poll() -> None:
            session = requests.Session()
            session.headers.update(proc.headers)
            for _ in range(rounds):
                for n in names:
                    t = time.perf_counter()
                    rr = session.get(f"{api}jobs/{n}/", timeout=60)
                    elapsed = time.perf_counter() - t
                    if rr.status_code != 200 or rr.json()["compute"]["status"] != "started":
                        raise RuntimeError(f"status {n}: {rr.status_code} {rr.text[:200]}")
                    with lock:
                        latencies.append(ms(elapsed))

        before = counts()
        t1 = time.monotonic()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(lambda _: poll(), range(clients)))
        seconds = time.monotonic() - t1
        after = counts()
        delta = {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}
        gets = len(latencies)
        view = sum(v for k, v in delta.items() if k != "get pod log")
        logs = delta.get("get pod log", 0)
        st = summary(latencies)
        bench.results.details["k8s"] = {
            "live_jobs": jobs, "clients": clients, "status_gets": gets, "seconds": round(seconds, 2),
            "jobs_started_in_s": round(started_s, 1), "api_requests": delta, "get_ms": st,
        }  # fmt: skip
        r.add("k8s", f"status GET (Kubernetes, {jobs} live jobs) p50", st["p50"], "ms")
        r.add("k8s", f"status GET (Kubernetes, {jobs} live jobs) p90", st["p90"], "ms")
        r.add("k8s", "API-server requests per status GET", (view + logs) / gets, "req", target="< 1", ok=(view + logs) / gets < 1,
              note=f"{gets} GETs by {clients} clients in {seconds:.1f} s: {delta}")
        r.add("k8s", "  of which status (list/watch/get)", view / gets, "req", target="~0 (shared view)", ok=view / gets <= 0.01)
        r.add("k8s", "  of which pod logs (<= 1 per running pod per s)", logs / gets, "req",
              target=f"<= {jobs}/s", ok=logs <= jobs * (seconds + 1))

        # a finished job, as the Docker section measures: its final status and logs are kept
        done = f"{bench.prefix}k8s-done"
        names.append(done)
        client.submit_job(done, descriptors("echo hello from bench", cpu_limit=100, memory_limit=32), tiny_zip(),
                          timeout=120)  # fmt: skip
        t0 = time.monotonic()
        while s.get(f"{api}jobs/{done}/", timeout=60).json()["compute"]["status"] != "finishedSuccessfully":
            if time.monotonic() - t0 > 120:
                raise RuntimeError("the finished-job probe did not finish")
            time.sleep(0.5)
        before = counts()
        finished: list[float] = []
        for _ in range(bench.n(500, 50)):
            t = time.perf_counter()
            s.get(f"{api}jobs/{done}/", timeout=60).raise_for_status()
            finished.append(ms(time.perf_counter() - t))
        after = counts()
        fin = summary(finished)
        bench.results.details["k8s"]["finished_get_ms"] = fin
        r.add("k8s", "status GET (Kubernetes, a finished job) p50", fin["p50"], "ms", target="<= 5 ms", ok=fin["p50"] <= 5,
              note=f"API requests: {sum(after.values()) - sum(before.values())} for {len(finished)} GETs")
    finally:
        try:
            with ThreadPoolExecutor(10) as pool:
                list(pool.map(lambda n: requests.delete(f"{proc.api}jobs/{n}/", headers=proc.headers, timeout=60), names))
        except Exception as e:  # noqa: BLE001
            print(f"  k8s cleanup: {e}")
        proc.stop()
        _unclaim(kubeconfig, claim)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="the app on Kubernetes, with a request-counter endpoint")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--counts-port", type=int, required=True)
    args = parser.parse_args()
    serve(args.port, args.counts_port)


if __name__ == "__main__":
    main()
