"""SLURM section of the benchmark (``bench/bench.py --only slurm``).

The real server with ``CONTAINER_ENV=slurm`` beside the two-node cluster of
``scripts/slurm-cluster.sh``. Reported: submissions per second of 100 jobs through the
HTTP API (python-pfconclient, a new connection per request, 10 at a time) next to
``sbatch`` alone in the same run (the floor), and the ``squeue`` queries each status GET
costs while 10 clients poll all 100 jobs (one shared query per ``SLURM_POLL_SECONDS``,
whatever the number of jobs and clients). The SLURM commands the server runs are counted
by wrappers put first on its ``PATH``, so nothing inside the server is instrumented. The
section is skipped (not failed) when no cluster answers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "slurm-cluster.sh")
LIVE = "echo started; trap 'exit 143' TERM; sleep 900 & wait"


def slurm_env() -> dict[str, str]:
    env = dict(os.environ)
    if not env.get("SLURM_CONF"):
        try:
            out = subprocess.run(["bash", SCRIPT, "env"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            return env
        for line in out.splitlines():
            if line.startswith("export ") and "=" in line:
                k, v = line[len("export "):].split("=", 1)
                env[k] = v.strip().strip('"')
    return env


def cluster_problem(env: dict[str, str]) -> str | None:
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30, env=env)
    except (OSError, subprocess.SubprocessError) as e:
        return f"no SLURM commands ({e}); bash scripts/slurm-cluster.sh start"
    if ping.returncode != 0:
        return f"slurmctld does not answer ({(ping.stdout + ping.stderr).strip()}); bash scripts/slurm-cluster.sh start"
    return None


def wrappers(directory: str, log: str) -> str:
    """Counting wrappers of the SLURM commands: each call appends its name to ``log``."""
    os.makedirs(directory)
    for cmd in ("sbatch", "squeue", "scancel", "scontrol"):
        real = shutil.which(cmd)
        path = os.path.join(directory, cmd)
        with open(path, "w") as f:
            f.write(f'#!/bin/sh\necho {cmd} >> "{log}"\nexec "{real}" "$@"\n')
        os.chmod(path, 0o755)
    return directory


def calls(log: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    try:
        with open(log) as f:
            for line in f:
                counts[line.strip()] = counts.get(line.strip(), 0) + 1
    except FileNotFoundError:
        pass
    return counts


def section(bench: Any, tools: Any) -> None:
    from pfconclient.client import Client

    Proc, descriptors, free_port, ms, summary, tiny_zip = (
        tools.Proc, tools.descriptors, tools.free_port, tools.ms, tools.summary, tools.tiny_zip,
    )  # fmt: skip
    r = bench.results
    env = slurm_env()
    problem = cluster_problem(env)
    if problem:
        r.add("slurm", "SLURM section", None, "", note=f"skipped: {problem}")
        r.metrics[-1].verdict = "skipped"
        return
    jobs = bench.n(100, 20)
    clients, rounds = 10, bench.n(5, 2)
    tmp = tempfile.mkdtemp(prefix="pfcon-slurm-bench-")
    storebase = os.path.join(tmp, "storeBase")
    os.makedirs(storebase)
    log = os.path.join(tmp, "calls.log")
    port = free_port()
    server_env = {
        **env, "APPLICATION_MODE": "dev", "HOST": "127.0.0.1", "PORT": str(port), "CONTAINER_ENV": "slurm",
        "COMPUTE_VOLUME_TYPE": "host", "STOREBASE": storebase, "STOREBASE_MOUNT": storebase,
        "UPLOAD_DIR": os.path.join(tmp, "uploads"), "SLURM_POLL_SECONDS": "2",
        "PATH": f"{wrappers(os.path.join(tmp, 'bin'), log)}:{env.get('PATH', '')}",
    }  # fmt: skip
    proc = Proc([sys.executable, "-m", "pfcon", "serve"], server_env, os.path.join(tmp, "server.log"), port)
    names = [f"{bench.prefix}slurm-{i}" for i in range(jobs)]
    floor_ids: list[str] = []
    try:
        # the floor: sbatch alone, 10 at a time, in the same run
        floor_n = bench.n(50, 10)

        def sbatch(_: int) -> float:
            t = time.perf_counter()
            out = subprocess.run(["sbatch", "--parsable", "--hold", "--comment=bench", f"--chdir={tmp}",
                                  "--output=/dev/null", "--wrap", "true"],
                                 capture_output=True, text=True, timeout=120, env=env, check=True)  # fmt: skip
            floor_ids.append(out.stdout.strip().split(";")[0])
            return time.perf_counter() - t

        t0 = time.monotonic()
        with ThreadPoolExecutor(10) as pool:
            floor_lat = list(pool.map(sbatch, range(floor_n)))
        floor_rate = floor_n / (time.monotonic() - t0)
        subprocess.run(["scancel", *floor_ids], capture_output=True, timeout=120, env=env)

        # 100 jobs through the API, a new connection per request (pfconclient), 10 at a time
        client = Client(proc.api, proc.token)
        lat: list[float] = []
        lock = threading.Lock()

        def submit(jid: str) -> None:
            t = time.perf_counter()
            client.submit_job(jid, descriptors(LIVE, cpu_limit=1000, memory_limit=64), tiny_zip(), timeout=120)
            with lock:
                lat.append(ms(time.perf_counter() - t))

        t0 = time.monotonic()
        with ThreadPoolExecutor(10) as pool:
            list(pool.map(submit, names))
        rate = jobs / (time.monotonic() - t0)
        post = summary(lat)
        r.add("slurm", f"submissions per second ({jobs} jobs, pfconclient, 10 at a time)", rate, "/s",
              target=">= 0.5x sbatch alone", ok=rate >= 0.5 * floor_rate,
              note=f"sbatch alone: {floor_rate:.1f}/s (p50 {ms(sorted(floor_lat)[len(floor_lat) // 2]):.1f} ms); "
                   f"POST p50 {post['p50']:.1f} ms")  # fmt: skip

        # status: 10 clients poll all jobs; squeue runs per status GET
        latencies: list[float] = []

        def poll() -> None:
            for _ in range(rounds):
                for n in names:
                    t = time.perf_counter()
                    rr = requests.get(f"{proc.api}jobs/{n}/", headers=proc.headers, timeout=60)  # new connection
                    elapsed = time.perf_counter() - t
                    if rr.status_code != 200:
                        raise RuntimeError(f"status {n}: {rr.status_code} {rr.text[:200]}")
                    with lock:
                        latencies.append(ms(elapsed))

        before = calls(log)
        t1 = time.monotonic()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(lambda _: poll(), range(clients)))
        seconds = time.monotonic() - t1
        after = calls(log)
        squeues = after.get("squeue", 0) - before.get("squeue", 0)
        gets = len(latencies)
        st = summary(latencies)
        bench.results.details["slurm"] = {
            "jobs": jobs, "clients": clients, "status_gets": gets, "seconds": round(seconds, 2), "squeue_runs": squeues,
            "submit_per_s": round(rate, 2), "sbatch_alone_per_s": round(floor_rate, 2), "post_ms": post, "get_ms": st,
        }  # fmt: skip
        r.add("slurm", f"status GET (SLURM, {jobs} jobs, new connection each) p50", st["p50"], "ms")
        per_get = squeues / gets if gets else 0.0
        r.add("slurm", "squeue queries per status GET", per_get, "req",
              target="<= 1 per SLURM_POLL_SECONDS", ok=squeues <= seconds / 2 + 2,
              note=f"{squeues} squeue runs for {gets} GETs by {clients} clients in {seconds:.1f} s")  # fmt: skip
    finally:
        try:
            with ThreadPoolExecutor(10) as pool:
                list(pool.map(lambda n: requests.delete(f"{proc.api}jobs/{n}/", headers=proc.headers, timeout=120), names))
        except Exception as e:  # noqa: BLE001
            print(f"  slurm cleanup: {e}")
        proc.stop()
        shutil.rmtree(tmp, ignore_errors=True)
