"""The CUBE-pattern sections of the benchmark (``bench/bench.py --only cube,scale,input``).

CUBE talks to pfcon through python-pfconclient 3.3.0, whose ``Client`` opens a new
connection for every request (``requests.get``/``requests.post``, no session). Over one
keep-alive connection the per-request cost of a TCP connect, a new ``requests`` session
and the server's connection set-up is hidden; these sections measure both, each next to
the floor it cannot go below, measured in the same run:

  cube   status GET (finished and running job) and tiny POST the way CUBE calls them and
         over keep-alive, next to the engine's inspect+logs (status), create+start (POST)
         and a bare HTTP request to ``/api/v1/health/`` with a new connection (the
         per-request floor); ``health/`` over one connection; the idle server's RSS
  scale  status GET (CUBE pattern) of a finished and of a running job with 10, 100 and
         1,100 jobs (1,000 finished, 100 running) present on the engine, next to the
         engine's inspect+logs at the same sizes: the curve "status GET against jobs"
  input  POST time against input size (N files of 4 KiB; one big file) next to the
         engine's create+start and the disk's own writing of the same files

Everything talks to 127.0.0.1; every container is named ``<bench prefix>...`` and removed
by that prefix, in bounded time.
"""

from __future__ import annotations

import http.client
import io
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import requests
from pfconclient.client import Client

PLUGIN_LABELS = {"org.chrisproject.job_type": "plugin"}  # what the Docker adapter sets on a plugin job
KiB = 1024
MiB = 1024 * KiB
SETUP_WORKERS = 8  # concurrent engine calls when creating/removing many containers
RUNNING_SCRIPT = "echo started; sleep 600"
SETTLE_S = 2.0


# -- small helpers (pure or nearly) ------------------------------------------------------------


def read_rss_mib(pid: int) -> float:
    """VmRSS of a process, MiB."""
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def fresh_get(port: int, path: str, headers: dict[str, str] | None = None) -> int:
    """One GET over a new connection with the leanest client (http.client), then close."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


class KeepAlive:
    """GETs over one persistent http.client connection."""

    def __init__(self, port: int, headers: dict[str, str] | None = None) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.headers = headers or {}

    def get(self, path: str) -> int:
        self.conn.request("GET", path, headers=self.headers)
        resp = self.conn.getresponse()
        resp.read()
        return resp.status

    def close(self) -> None:
        self.conn.close()


def files_zip(count: int, size: int = 4 * KiB, seed: int = 0) -> bytes:
    """A zip like CUBE sends (ZIP_DEFLATED) of ``count`` files of ``size`` random bytes in folders of 100."""
    buf = io.BytesIO()
    block = os.urandom(max(size, 1))
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for i in range(count):
            data = f"{seed:04d}{i:08d}".encode() + block[12:size]
            z.writestr(f"data/series{i // 100:03d}/slice{i:05d}.dcm", data[:size])
    return buf.getvalue()


def big_zip(size: int) -> bytes:
    """A zip (ZIP_DEFLATED, incompressible content) of one file of ``size`` bytes."""
    buf = io.BytesIO()
    block = bytearray(os.urandom(MiB))
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1, allowZip64=True) as z:
        info = zipfile.ZipInfo("data/volume.nii", date_time=(2026, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        with z.open(info, "w", force_zip64=size > 2**31 - 1) as dst:
            left, j = size, 0
            while left > 0:
                block[:8] = f"{j:08d}".encode()
                dst.write(block[: min(left, MiB)])
                left -= MiB
                j += 1
    return buf.getvalue()


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000.0


def interleaved(rounds: int, calls: dict[str, Callable[[], Any]], warm: int = 5) -> dict[str, list[float]]:
    """Call each of ``calls`` once per round, in turn (neighbour noise hits every series
    alike); return the latencies (ms) per name. ``warm`` rounds first, not recorded.

    The order turns by one call each round, so that no series always comes right after
    the same other one (e.g. a POST always right after the engine's own container, which
    exits at once, was started)."""
    out: dict[str, list[float]] = {name: [] for name in calls}
    items = list(calls.items())
    for i in range(warm + rounds):
        k = i % len(items)
        for name, fn in items[k:] + items[:k]:
            t = timed(fn)
            if i >= warm:
                out[name].append(t)
    return out


def size_label(nbytes: int) -> str:
    if nbytes >= MiB:
        return f"{nbytes / MiB:g} MiB"
    if nbytes >= KiB:
        return f"{nbytes / KiB:g} KiB"
    return f"{nbytes} B"


# -- shared pieces -----------------------------------------------------------------------------


def _ok(code: int, what: str) -> None:
    if code != 200:
        raise RuntimeError(f"{what}: HTTP {code}")


def engine_state(bench: Any, name: str) -> None:
    """What DockerCompute.state asks of the engine per status request: inspect + logs."""
    bench.docker.api.inspect_container(name)
    bench.docker.api.logs(name, stdout=True, stderr=True, tail=1000)


def submit_measured_jobs(bench: Any, tools: Any, section: str) -> tuple[str, str]:
    """One finished and one running job submitted through the server (pfconclient)."""
    srv = bench.server()
    client = Client(srv.api, srv.token)
    fin, run = bench.jid(f"{section}-fin"), bench.jid(f"{section}-run")
    client.submit_job(fin, tools.descriptors("echo hello from bench"), tools.tiny_zip(), timeout=tools.REQUEST_TIMEOUT)
    client.submit_job(run, tools.descriptors(RUNNING_SCRIPT), tools.tiny_zip(), timeout=tools.REQUEST_TIMEOUT)
    bench.wait_terminal([fin])
    deadline = time.monotonic() + 60
    s = bench.session()
    while bench.status(s, run) != "started":
        if time.monotonic() > deadline:
            raise RuntimeError(f"{run} did not start")
        time.sleep(0.05)
    return fin, run


def create_many(bench: Any, names: list[str], script: str, deadline_s: float) -> float:
    """Create+start containers shaped like the adapter's plugin jobs (same labels, mounts,
    limits), SETUP_WORKERS at a time; return the seconds it took."""
    mdir = bench.engine_dir()
    t0 = time.monotonic()
    with ThreadPoolExecutor(SETUP_WORKERS) as pool:
        futures = [pool.submit(bench.engine_create_start, name,
                               ["sh", "-c", script, "/share/incoming", "/share/outgoing"], mdir, PLUGIN_LABELS)
                   for name in names]
        done, pending = wait(futures, timeout=deadline_s)
        for f in pending:
            f.cancel()
        for f in done:
            f.result()
        if pending:
            raise RuntimeError(f"creating {len(names)} containers took over {deadline_s:.0f} s")
    return time.monotonic() - t0


def wait_exited(bench: Any, prefix: str, deadline_s: float) -> None:
    """Until no container whose name starts with ``prefix`` is running."""
    deadline = time.monotonic() + deadline_s
    while True:
        running = [c for c in bench.docker.api.containers(filters={"name": prefix, "status": "running"})
                   if (c.get("Names") or ["/"])[0].lstrip("/").startswith(prefix)]
        if not running:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(running)} containers {prefix}* still running after {deadline_s:.0f} s")
        time.sleep(0.2)


# -- section cube ------------------------------------------------------------------------------


def section_cube(bench: Any, tools: Any) -> None:
    r = bench.results
    srv = bench.server()
    rss_start = srv.rss_at_start_mib
    rounds = bench.n(300, 40)
    fin, run = submit_measured_jobs(bench, tools, "cube")
    client = Client(srv.api, srv.token)
    session = bench.session()
    keep = KeepAlive(srv.port, srv.headers)
    keep_health = KeepAlive(srv.port)
    health = "/api/v1/health/"
    fin_path, run_path = f"/api/v1/jobs/{fin}/", f"/api/v1/jobs/{run}/"
    jids = [fin, run]
    try:
        since = srv.log_offset()
        lat = interleaved(rounds, {
            "floor_health_new_conn": lambda: _ok(fresh_get(srv.port, health), "health"),
            "health_requests_new_conn": lambda: requests.get(srv.url + health, timeout=10).raise_for_status(),
            "health_keepalive": lambda: _ok(keep_health.get(health), "health"),
            "fin_cube": lambda: client.get_job_status(fin, timeout=tools.REQUEST_TIMEOUT),
            "fin_session": lambda: session.get(srv.url + fin_path, timeout=10).raise_for_status(),
            "fin_keepalive": lambda: _ok(keep.get(fin_path), "status"),
            "fin_engine": lambda: engine_state(bench, fin),
            "run_cube": lambda: client.get_job_status(run, timeout=tools.REQUEST_TIMEOUT),
            "run_session": lambda: session.get(srv.url + run_path, timeout=10).raise_for_status(),
            "run_keepalive": lambda: _ok(keep.get(run_path), "status"),
            "run_engine": lambda: engine_state(bench, run),
        })
        server_fin = srv.request_durations(since, "GET", fin_path)
        server_run = srv.request_durations(since, "GET", run_path)
        post = _cube_posts(bench, tools, jids)
    finally:
        keep.close()
        keep_health.close()
        bench.delete_jobs(jids)
    time.sleep(1.0)
    rss_idle = read_rss_mib(srv.pid)

    s = {name: tools.summary(v) for name, v in lat.items()}
    p = {name: tools.summary(v) for name, v in post.items()}
    bench.results.details["cube"] = {
        "rounds": rounds, "get_ms": s, "post_ms": p,
        "server_side_fin_ms": tools.summary(server_fin) if server_fin else None,
        "server_side_run_ms": tools.summary(server_run) if server_run else None,
        "rss_at_start_mib": rss_start, "rss_idle_mib": rss_idle,
    }
    p50 = {name: v["p50"] for name, v in s.items()}
    floor = p50["floor_health_new_conn"]
    r.add("cube", "per-request floor: health/ new connection (http.client) p50", floor, "ms")
    r.add("cube", "  health/ new connection via requests (pfconclient's library) p50",
          p50["health_requests_new_conn"], "ms")
    r.add("cube", "health/ over one connection p50", p50["health_keepalive"], "ms", target="<= 0.5 ms",
          ok=p50["health_keepalive"] <= 0.5)
    r.add("cube", "finished-job status GET, CUBE pattern (pfconclient) p50", p50["fin_cube"], "ms",
          target="<= 1.5 ms", ok=p50["fin_cube"] <= 1.5, note=f"p90 {s['fin_cube']['p90']:.2f} ms")
    client_floor = p50["health_requests_new_conn"]
    r.add("cube", "  finished-job status GET, CUBE pattern, over the client library's floor (health/ via requests)",
          p50["fin_cube"] - client_floor, "ms",
          note=f"the client's own per-request cost is {client_floor:.2f} ms: no server can answer under it")
    r.add("cube", "  finished-job status GET, keep-alive requests.Session p50", p50["fin_session"], "ms")
    r.add("cube", "  finished-job status GET, keep-alive http.client p50", p50["fin_keepalive"], "ms")
    r.add("cube", "  engine inspect+logs, finished job p50 (floor)", p50["fin_engine"], "ms")
    if server_fin:
        r.add("cube", "  finished-job status GET server-side (middleware) p50", tools.pct(server_fin, 50), "ms")
    budget = p50["run_engine"] + 1
    r.add("cube", "running-job status GET, CUBE pattern (pfconclient) p50", p50["run_cube"], "ms",
          target=f"<= engine inspect+logs + 1 ms ({budget:.2f} ms)", ok=p50["run_cube"] <= budget,
          note=f"p90 {s['run_cube']['p90']:.2f} ms")
    r.add("cube", "  running-job status GET, CUBE pattern, over the client library's floor (health/ via requests)",
          p50["run_cube"] - client_floor, "ms", target=f"<= engine inspect+logs + 1 ms ({budget:.2f} ms)",
          ok=p50["run_cube"] - client_floor <= budget)
    r.add("cube", "  running-job status GET, keep-alive http.client p50 (no client-library cost)",
          p50["run_keepalive"], "ms", target=f"<= engine inspect+logs + 1 ms ({budget:.2f} ms)",
          ok=p50["run_keepalive"] <= budget)
    r.add("cube", "  running-job status GET, keep-alive requests.Session p50", p50["run_session"], "ms")
    r.add("cube", "  engine inspect+logs, running job p50 (floor)", p50["run_engine"], "ms")
    if server_run:
        r.add("cube", "  running-job status GET server-side (middleware) p50", tools.pct(server_run, 50), "ms")
    eng = p["engine"]["p50"]
    r.add("cube", "engine create+start p50 (floor)", eng, "ms")
    r.add("cube", "tiny-job POST, CUBE pattern (pfconclient) p50", p["post_cube"]["p50"], "ms",
          target=f"<= engine create+start + 5 ms ({eng + 5:.1f} ms)", ok=p["post_cube"]["p50"] <= eng + 5,
          note=f"{p['post_cube']['p50'] - eng:+.1f} ms over the engine")
    over = p["post_cube"]["p50"] - eng - client_floor
    r.add("cube", "  tiny-job POST over the engine, minus the client library's floor (health/ via requests)",
          over, "ms", target="<= 5 ms", ok=over <= 5,
          note="what this server adds; pfconclient's own new connection + request cost is not the server's")
    paired = sorted(a - b for a, b in zip(post["post_cube"], post["engine"], strict=True))
    r.add("cube", "  tiny-job POST minus the engine's create+start of the same round, median", paired[len(paired) // 2],
          "ms", note="paired by round: drift of the engine between rounds cancels out")
    r.add("cube", "  tiny-job POST, keep-alive requests.Session p50", p["post_session"]["p50"], "ms",
          note=f"{p['post_session']['p50'] - eng:+.1f} ms over the engine")
    r.add("cube", "idle server RSS right after start", rss_start, "MiB")
    r.add("cube", "idle server RSS after this section's requests", rss_idle, "MiB", target="<= 64 MiB",
          ok=rss_idle <= 64)


def _cube_posts(bench: Any, tools: Any, jids: list[str]) -> dict[str, list[float]]:
    """Tiny-job POSTs, pfconclient (new connection) and keep-alive, interleaved with the
    engine's own create+start of the same container shape."""
    srv = bench.server()
    client = Client(srv.api, srv.token)
    session = bench.session()
    payload = tools.tiny_zip()
    mdir = bench.engine_dir()
    names: list[str] = []

    def engine() -> None:
        names.append(f"{bench.prefix}cube-engine-{len(names)}")
        bench.engine_create_start(names[-1], ["sh", "-c", "true", "/share/incoming", "/share/outgoing"], mdir)

    def post_cube() -> None:
        jids.append(bench.jid("cube-post"))
        resp = client.submit_job(jids[-1], tools.descriptors(), payload, timeout=tools.REQUEST_TIMEOUT)
        assert resp["compute"]["status"] == "notstarted", resp

    def post_session() -> None:
        jids.append(bench.jid("cube-post"))
        data = {**tools.descriptors(), "jid": jids[-1]}
        resp = session.post(srv.api + "jobs/", files={"data_file": payload}, data=data, timeout=tools.REQUEST_TIMEOUT)
        if resp.status_code != 201:
            raise RuntimeError(f"POST {resp.status_code}: {resp.text[:300]}")

    try:
        # 80 rounds: the engine's create+start alone spreads over tens of ms on this machine
        out = interleaved(bench.n(80, 5), {"engine": engine, "post_cube": post_cube, "post_session": post_session},
                          warm=1)
        bench.wait_terminal(jids[2:])
    finally:
        bench.remove_containers(names)
    return out


# -- section scale -----------------------------------------------------------------------------


def section_scale(bench: Any, tools: Any) -> None:
    """Status GET (CUBE pattern) of a finished and a running job against the number of jobs
    present on the engine, with the engine's inspect+logs at the same sizes."""
    r = bench.results
    srv = bench.server()
    steps: list[tuple[int, int]] = bench.n([(9, 1), (90, 10), (1000, 100)], [(9, 1), (45, 5), (90, 10)])
    rounds = bench.n(200, 40)
    fin, run = submit_measured_jobs(bench, tools, "scale")
    client = Client(srv.api, srv.token)
    fprefix, rprefix = f"{bench.prefix}scale-f", f"{bench.prefix}scale-r"
    made_f, made_r = 1, 1  # the two measured jobs count
    points: list[dict[str, Any]] = []
    try:
        for finished, running in steps:
            new_f = [f"{fprefix}{i}" for i in range(made_f, finished)]
            new_r = [f"{rprefix}{i}" for i in range(made_r, running)]
            budget = 60 + 0.5 * (len(new_f) + len(new_r))
            took = create_many(bench, new_f, "true", budget) if new_f else 0.0
            took += create_many(bench, new_r, "sleep 600", budget) if new_r else 0.0
            made_f, made_r = max(made_f, finished), max(made_r, running)
            wait_exited(bench, fprefix, budget)
            time.sleep(SETTLE_S)  # let the engine finish the exits' bookkeeping before measuring
            on_engine = len(bench.docker.api.containers(all=True, quiet=True))
            if new_f or new_r:
                print(f"  created {len(new_f)} finished + {len(new_r)} running containers in {took:.1f} s "
                      f"({(len(new_f) + len(new_r)) / max(took, 1e-9):.0f}/s); {on_engine} on the engine in all",
                      flush=True)
            lat = interleaved(rounds, {
                # the client's own per-request floor at this size (what the machine costs now)
                "health_cube": lambda: _ok(requests.get(srv.api + "health/", timeout=tools.REQUEST_TIMEOUT).status_code,
                                           "health/"),
                "fin_cube": lambda: client.get_job_status(fin, timeout=tools.REQUEST_TIMEOUT),
                "run_cube": lambda: client.get_job_status(run, timeout=tools.REQUEST_TIMEOUT),
                "fin_engine": lambda: engine_state(bench, fin),
                "run_engine": lambda: engine_state(bench, run),
            })
            listing = [timed(lambda: bench.docker.api.containers(all=True)) for _ in range(5)]
            point = {"jobs": finished + running, "finished": finished, "running": running,
                     "containers_on_engine": on_engine, "setup_s": took,
                     **{name: tools.summary(v) for name, v in lat.items()},
                     "engine_list_all_ms": tools.summary(listing)}
            points.append(point)
            label = f"{finished + running} jobs ({finished} finished, {running} running)"
            r.add("scale", f"{label}: status GET finished, CUBE p50", point["fin_cube"]["p50"], "ms")
            r.add("scale", f"{label}: status GET running, CUBE p50", point["run_cube"]["p50"], "ms")
            r.add("scale", f"{label}: health/ via requests (the client's per-request floor) p50",
                  point["health_cube"]["p50"], "ms")
            r.add("scale", f"{label}: engine inspect+logs finished p50", point["fin_engine"]["p50"], "ms")
            r.add("scale", f"{label}: engine inspect+logs running p50", point["run_engine"]["p50"], "ms")
            r.add("scale", f"{label}: engine list of all containers p50", tools.pct(listing, 50), "ms",
                  note=f"{on_engine} containers on the engine")
    finally:
        bench.delete_jobs([fin, run])
        t0 = time.monotonic()
        removed = bench.remove_containers(prefix=f"{bench.prefix}scale-", deadline_s=300)
        print(f"  removed {removed} scale containers in {time.monotonic() - t0:.1f} s", flush=True)
    bench.results.details["scale"] = {"rounds": rounds, "points": points}
    if len(points) >= 2:
        a, b = points[0], points[-1]
        for kind in ("fin", "run"):
            what = "finished" if kind == "fin" else "running"
            r.add("scale", f"status GET {what}: p50 growth {a['jobs']} -> {b['jobs']} jobs",
                  b[f"{kind}_cube"]["p50"] - a[f"{kind}_cube"]["p50"], "ms",
                  note=f"engine floor growth {b[f'{kind}_engine']['p50'] - a[f'{kind}_engine']['p50']:+.2f} ms, "
                       f"client floor (health/) growth {b['health_cube']['p50'] - a['health_cube']['p50']:+.2f} ms")


# -- section input -----------------------------------------------------------------------------


def section_input(bench: Any, tools: Any) -> None:
    """POST time (pfconclient) against input size, next to the engine's create+start and
    the disk's own time to write the same files into the same filesystem (each round:
    engine, disk, POST, in turn)."""
    r = bench.results
    srv = bench.server()
    client = Client(srv.api, srv.token)
    mdir = bench.engine_dir()
    counts: list[int] = bench.n([1, 50, 500, 5000], [1, 50, 500])
    bigs: list[int] = bench.n([1 * MiB, 16 * MiB, 128 * MiB], [1 * MiB, 16 * MiB])
    cases = [("files", c, c * 4 * KiB) for c in counts] + [("big", 1, b) for b in bigs]
    rows: list[dict[str, Any]] = []
    for kind, nfiles, nbytes in cases:
        payload = files_zip(nfiles) if kind == "files" else big_zip(nbytes)
        members = _members(payload)
        reps = bench.n(15, 3) if nbytes <= 2 * MiB else bench.n(5, 2) if nbytes <= 32 * MiB else bench.n(3, 2)
        jids: list[str] = []
        names: list[str] = []
        post: list[float] = []
        engine: list[float] = []
        disk: list[float] = []
        disk_root = tempfile.mkdtemp(dir=bench.tmp, prefix="disk-")
        try:
            for i in range(reps + 1):  # the first round is a warm-up
                name = f"{bench.prefix}input-engine-{len(names)}-{nfiles}-{nbytes}"
                names.append(name)
                t_eng = timed(lambda name=name: bench.engine_create_start(
                    name, ["sh", "-c", "true", "/share/incoming", "/share/outgoing"], mdir))
                t_disk = timed(lambda i=i: _write_files(members, os.path.join(disk_root, str(i))))
                jid = bench.jid("input")
                jids.append(jid)
                t_post = timed(lambda jid=jid: client.submit_job(jid, tools.descriptors(), payload,
                                                                 timeout=tools.REQUEST_TIMEOUT))
                if i:
                    engine.append(t_eng)
                    disk.append(t_disk)
                    post.append(t_post)
            bench.wait_terminal(jids)
        finally:
            bench.delete_jobs(jids)
            bench.remove_containers(names)
            shutil.rmtree(disk_root, ignore_errors=True)
        p, e, d = tools.summary(post), tools.summary(engine), tools.summary(disk)
        row = {"kind": kind, "files": nfiles, "bytes": nbytes, "zip_bytes": len(payload), "reps": reps,
               "post_ms": p, "engine_ms": e, "disk_ms": d}
        rows.append(row)
        what = f"{nfiles} x 4 KiB" if kind == "files" else f"1 file of {size_label(nbytes)}"
        over = p["p50"] - e["p50"]
        own = over - d["p50"]
        note = (f"engine {e['p50']:.1f} ms, {over:+.1f} ms over it; writing the files alone {d['p50']:.1f} ms; "
                f"{own:+.1f} ms over both")
        if kind == "files" and nfiles == 500:
            r.add("input", f"POST {what} p50", p["p50"], "ms",
                  target=f"<= engine create+start + 60 ms ({e['p50'] + 60:.0f} ms)", ok=over <= 60, note=note)
            r.add("input", f"  POST {what} over the engine and the disk's own writing of the files", own, "ms",
                  note="what the server adds: receiving, checking, inflating, staging")
        else:
            r.add("input", f"POST {what} p50", p["p50"], "ms", note=note)
    bench.results.details["input"] = {"rows": rows}


def _members(payload: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(payload)) as z:
        return [(info.filename, z.read(info)) for info in z.infolist() if not info.is_dir()]


def _write_files(members: list[tuple[str, bytes]], root: str) -> None:
    """The disk floor of an input: its files written with plain system calls (each folder
    made once), the least any server must do to stage them."""
    made: set[str] = set()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    for name, data in members:
        path = os.path.join(root, name)
        folder = os.path.dirname(path)
        if folder not in made:
            os.makedirs(folder, exist_ok=True)
            made.add(folder)
        fd = os.open(path, flags, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
