"""pfcon 6 section of the benchmark (``bench/bench.py --only v6``).

* copy: one fslink input of 20,000 small files (4 KiB, 100 dirs), staged by pfcon 5's
  ``POST /api/v1/jobs/`` (in-process, inside the request, then the plugin scheduled) and by
  pfcon 6's copy job (``POST /api/v1/copyjobs/``, then polled until finishedSuccessfully: the
  op container of PFCON_OP_IMAGE starts, imports the project, stages with the same adapter).
  Measured with the tree owned by the op jobs' user (so both hard-link, as when the server
  and the op jobs share the data's owner) and with the tree owned by root (the op job, not
  root, may not hard-link another user's files: it copies them). Target: the copy job
  within 2x of pfcon 5's staging.
* post: POST latency of a plugin job, pfcon 6's ``/pluginjobs/`` against pfcon 5's
  ``/jobs/`` (zipfile, a tiny zip), interleaved on one server. pfcon 6 first looks the job
  up (idempotency): one more engine call. Target: p50 within 10 ms of pfcon 5's.

Both servers are real (``pfcon serve``) on the local Docker engine, op jobs on the host
network (``PFCON_OP_NETWORK=host``); every container is named after the run and removed.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from typing import Any

import requests

OP_IMAGE_USER = (10001, 10001)  # bootstrap.OP_DEFAULT_USER: op jobs of a server running as root


def _server(bench: Any, mod: Any, name: str, **env: str) -> Any:
    storebase = os.path.join(bench.tmp, f"v6-{name}")
    os.makedirs(storebase)
    port = mod.free_port()
    environ = {
        **os.environ, "APPLICATION_MODE": "dev", "HOST": "127.0.0.1", "PORT": str(port),
        "COMPUTE_VOLUME_TYPE": "host", "STOREBASE": storebase, "STOREBASE_MOUNT": storebase,
        "PFCON_OP_NETWORK": "host", **env,
    }  # fmt: skip
    proc = mod.Proc([sys.executable, "-m", "pfcon", "serve"], environ, os.path.join(bench.tmp, f"v6-{name}.log"), port)
    proc.storebase = storebase
    return proc


def _tree(root: str, inp: str, count: int) -> None:
    payload = os.urandom(4096)
    for i in range(count):
        d = os.path.join(root, inp, f"series{i // 200:03d}")
        if i % 200 == 0:
            os.makedirs(d)
        with open(os.path.join(d, f"slice{i:05d}.dcm"), "wb") as f:
            f.write(payload)


def _chown_tree(path: str, uid: int, gid: int) -> None:
    for dirpath, _, filenames in os.walk(path):
        os.chown(dirpath, uid, gid)
        for name in filenames:
            os.chown(os.path.join(dirpath, name), uid, gid)


def _wait(s: requests.Session, url: str, timeout: float = 900) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = s.get(url, timeout=60).json()
        if body["compute"]["status"] in ("finishedSuccessfully", "finishedWithError", "undefined"):
            return body
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url}: {body}")
        time.sleep(0.05)


def section(bench: Any, mod: Any) -> None:
    r = bench.results
    count = bench.n(20_000, 2_000)
    srv = _server(bench, mod, "fslink", PFCON_INNETWORK="true", STORAGE_ENV="fslink")
    try:
        s = requests.Session()
        s.headers.update(srv.headers)
        out = "home/cube/feeds/feed_1/pl-app_2/data"
        os.makedirs(os.path.join(srv.storebase, out))
        results: dict[str, float] = {}
        for owner in ("op user", "root"):
            inp = f"home/cube/feeds/feed_{owner[0]}/pl-dircopy_1/data"
            _tree(srv.storebase, inp, count)
            if owner == "op user" and os.geteuid() == 0:
                _chown_tree(os.path.join(srv.storebase, "home/cube/feeds", f"feed_{owner[0]}"), *OP_IMAGE_USER)
            # pfcon 5: stage in-process inside the POST (plus scheduling the plugin)
            jid = bench.jid("v5copy")
            form = mod.form_fields(jid) + [("input_dirs", inp), ("output_dir", out)]
            t0 = time.perf_counter()
            resp = s.post(f"{srv.api}jobs/", data=form, timeout=900)
            v5 = time.perf_counter() - t0
            assert resp.status_code == 201 and resp.json()["data"]["nfiles"] == count, resp.text
            s.delete(f"{srv.api}jobs/{jid}/", timeout=300)
            # pfcon 6: the copy job, from POST to finishedSuccessfully
            jid = bench.jid("v6copy")
            t0 = time.perf_counter()
            resp = s.post(f"{srv.api}copyjobs/", data={"jid": jid, "input_dirs": [inp], "output_dir": out}, timeout=300)
            assert resp.status_code == 201, resp.text
            done = _wait(s, f"{srv.api}copyjobs/{jid}/")
            v6 = time.perf_counter() - t0
            assert done["compute"]["status"] == "finishedSuccessfully", done
            assert f"copied {count} files" in done["compute"]["logs"], done["compute"]["logs"]
            logged = done["compute"]["logs"].strip().rsplit(" in ", 1)[-1]
            s.post(f"{srv.api}deletejobs/", data={"jid": jid}, timeout=60)
            _wait(s, f"{srv.api}deletejobs/{jid}/")
            for kind in ("copy", "delete"):
                s.delete(f"{srv.api}{kind}jobs/{jid}/", timeout=60)
            results[owner] = v6 / v5
            r.add("v6", f"fslink {count} files ({owner}'s): pfcon 5 POST (in-process staging)", v5, "s",
                  note=f"{count / v5:.0f} files/s")
            r.add("v6", f"fslink {count} files ({owner}'s): pfcon 6 copy job, POST to finished", v6, "s",
                  note=f"{count / v6:.0f} files/s; the op job's own staging: {logged}")
            mine = owner == "op user"
            r.add("v6", f"copy job / pfcon 5 staging ({owner}'s files)", v6 / v5, "x",
                  target="<= 2x" if mine else "", ok=v6 / v5 <= 2 if mine else None)
            shutil.rmtree(os.path.join(srv.storebase, "home/cube/feeds", f"feed_{owner[0]}"), ignore_errors=True)
        bench.results.details["v6_copy_ratio"] = results
    finally:
        srv.stop()
    _post_latency(bench, mod)


def _post_latency(bench: Any, mod: Any) -> None:
    r = bench.results
    n = bench.n(30, 5)
    srv = _server(bench, mod, "zipfile")
    try:
        s = requests.Session()
        s.headers.update(srv.headers)
        payload = mod.tiny_zip()

        def post(route: str, jid: str) -> float:
            files = {"data_file": ("data.zip", payload, "application/zip")}
            t0 = time.perf_counter()
            resp = s.post(f"{srv.api}{route}", data=mod.form_fields(jid), files=files, timeout=300)
            elapsed = mod.ms(time.perf_counter() - t0)
            assert resp.status_code == 201, resp.text
            return elapsed

        post("jobs/", bench.jid("v5warm"))
        post("pluginjobs/", bench.jid("v6warm"))
        v5, v6, jids = [], [], []
        for _ in range(n):  # interleaved: neighbour load hits both series alike
            jid = bench.jid("v5post")
            v5.append(post("jobs/", jid))
            jids.append(jid)
            jid = bench.jid("v6post")
            v6.append(post("pluginjobs/", jid))
            jids.append(jid)
        for jid in jids:
            s.delete(f"{srv.api}jobs/{jid}/", timeout=60)
        a, b = mod.summary(v5), mod.summary(v6)
        bench.results.details["v6_post"] = {"v5_ms": a, "v6_ms": b}
        r.add("v6", "POST /jobs/ (pfcon 5) p50", a["p50"], "ms", note=f"p90 {a['p90']:.1f} ms")
        r.add("v6", "POST /pluginjobs/ (pfcon 6) p50", b["p50"], "ms", note=f"p90 {b['p90']:.1f} ms")
        r.add("v6", "pfcon 6 - pfcon 5 POST p50", b["p50"] - a["p50"], "ms", target="<= 10 ms",
              ok=b["p50"] - a["p50"] <= 10)
    finally:
        srv.stop()
        bench.remove_containers()
