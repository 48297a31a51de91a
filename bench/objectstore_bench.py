"""Object-store section of the benchmark (``bench/bench.py --only objectstores``).

For Swift and S3 (each skipped when its server is not configured: ``make bench`` starts a
local Swift; ``bash scripts/s3-server.sh start`` and its ``env`` give S3), with 20,000
objects of 4 KiB under one prefix:

* the floor: the store's own parallel GET rate, measured in the same run with the store's
  own client (swiftclient / boto3), one connection per thread, ``W`` threads, each object's
  body read in full and discarded;
* this server's staging of the same prefix into ``key-<jid>/incoming`` through its storage
  adapter with ``W`` workers (listing, ChRIS-link checks, GETs, files written), and the
  bench process's RSS growth;
* in turns floor, staging, staging, floor for each ``W``; each rate is over its two turns.

Target: staging ≥ 80 % of the floor at the same parallelism, with bounded memory.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKERS = (8, 16)


def _chunks(items: list[str], n: int) -> list[list[str]]:
    return [items[i::n] for i in range(n)]


def _swift(bench: Any) -> tuple[Any, Any, Any] | None:
    url = os.environ.get("SWIFT_AUTH_URL")
    if not url:
        return None
    from swiftclient.client import Connection

    from pfcon.adapters.storage.swift import SwiftSettings, SwiftStorage

    settings = SwiftSettings(url, os.environ.get("SWIFT_USERNAME", "chris:chris1234"), os.environ.get("SWIFT_KEY", "testing"),
                             os.environ.get("SWIFT_CONTAINER_NAME", "users"))  # fmt: skip

    def connect() -> Any:
        return Connection(authurl=settings.auth_url, user=settings.username, key=settings.key, retries=5)

    conn = connect()
    conn.put_container(settings.container)

    class Client:
        def __init__(self) -> None:
            self.conn = connect()

        def put(self, name: str, body: bytes) -> None:
            self.conn.put_object(settings.container, name, body)

        def get(self, name: str) -> int:
            _, body = self.conn.get_object(settings.container, name)
            return len(body)

        def delete(self, name: str) -> None:
            self.conn.delete_object(settings.container, name)

    return Client, (lambda sb, w: SwiftStorage(sb, settings, workers=w)), "swift"


def _s3(bench: Any) -> tuple[Any, Any, Any] | None:
    url = os.environ.get("S3_ENDPOINT_URL")
    if not url:
        return None
    import boto3
    from botocore.config import Config

    from pfcon.adapters.storage.s3 import S3Settings, S3Storage

    bucket = os.environ.get("S3_BUCKET_NAME", "users")
    key, secret = os.environ.get("S3_ACCESS_KEY", "minioadmin"), os.environ.get("S3_SECRET_KEY", "minioadmin")
    region = os.environ.get("S3_REGION_NAME", "us-east-1")

    def client() -> Any:
        config = Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                        response_checksum_validation="when_required", max_pool_connections=4)  # fmt: skip
        return boto3.session.Session().client("s3", endpoint_url=url, aws_access_key_id=key,
                                              aws_secret_access_key=secret, region_name=region, config=config)  # fmt: skip

    class Client:
        def __init__(self) -> None:
            self.c = client()

        def put(self, name: str, body: bytes) -> None:
            self.c.put_object(Bucket=bucket, Key=name, Body=body)

        def get(self, name: str) -> int:
            return len(self.c.get_object(Bucket=bucket, Key=name)["Body"].read())

        def delete(self, name: str) -> None:
            self.c.delete_object(Bucket=bucket, Key=name)

    def storage(sb: Any, w: int) -> Any:
        return S3Storage(sb, S3Settings(url, key, secret, bucket, region, concurrency=w), workers=w)

    return Client, storage, "s3"


def _parallel(client_cls: Any, names: list[str], threads: int, op: str, body: bytes = b"") -> float:
    """Run ``op`` on every name with ``threads`` threads, one client each; seconds taken."""

    def work(part: list[str]) -> None:
        c = client_cls()
        for n in part:
            if op == "put":
                c.put(n, body)
            elif op == "get":
                c.get(n)
            else:
                try:
                    c.delete(n)
                except Exception:  # noqa: BLE001 - cleanup
                    pass

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, _chunks(names, threads)))
    return time.perf_counter() - t0


def section(bench: Any, tools: Any) -> None:
    sys.path.insert(0, ROOT)
    from pfcon.adapters.storage.local import StoreBase
    from pfcon.domain.ports import StagingRequest

    r = bench.results
    count = bench.n(20_000, 2_000)
    payload = os.urandom(4096)
    for make in (_swift, _s3):
        found = make(bench)
        name = make.__name__.strip("_")
        if found is None:
            r.add("objectstores", f"{name} staging vs the store's parallel GET", None, "",
                  note="skipped: not configured (SWIFT_AUTH_URL / S3_ENDPOINT_URL)")  # fmt: skip
            r.metrics[-1].verdict = "skipped"
            continue
        client_cls, storage_of, label = found
        prefix = f"{bench.prefix}{label}/home/cube/feeds/feed_1/pl-dircopy_1/data"
        names = [f"{prefix}/series{i // 200:03d}/slice{i:05d}.dcm" for i in range(count)]
        tmp = tempfile.mkdtemp(prefix=f"pfcon-{label}-bench-")
        try:
            seconds = _parallel(client_cls, names, 16, "put", payload)
            r.add("objectstores", f"{label}: upload {count} x 4 KiB objects, 16 threads (setup)", seconds, "s")
            for w in WORKERS:
                # floor, staging, staging, floor (ABBA): a drift of the store's speed during
                # the step (±20 % between minutes on this VM) lands on both alike
                floors: list[float] = []
                stages: list[float] = []
                growth = 0.0
                for turn in ("floor", "stage", "stage", "floor"):
                    if turn == "floor":
                        floors.append(_parallel(client_cls, names, w, "get"))
                        continue
                    storage = storage_of(StoreBase(tmp), w)
                    jid = bench.jid(f"{label}-stage")
                    with tools.RssSampler(os.getpid()) as rss:
                        t0 = time.perf_counter()
                        data = storage.stage(jid, StagingRequest(input_dirs=(prefix,), output_dir=f"{bench.prefix}{label}/out"))
                        stages.append(time.perf_counter() - t0)
                    assert data.nfiles == count, data.nfiles
                    growth = max(growth, rss.report()["growth_mib"])
                    storage.delete(jid)
                floor, rate = 2 * count / sum(floors), 2 * count / sum(stages)
                each = " / ".join(f"{count / t:.0f}" for t in floors)
                r.add("objectstores", f"{label}: the store's own parallel GET, {w} threads (floor; turns {each})", floor, "objects/s")
                r.add("objectstores", f"{label}: staging {count} objects, {w} workers", rate, "objects/s",
                      target=f">= 80% of the floor ({0.8 * floor:.0f})", ok=rate >= 0.8 * floor,
                      note=f"{100 * rate / floor:.0f}% of the floor; turns {' / '.join(f'{count / t:.0f}' for t in stages)}; "
                           f"RSS +{growth:.1f} MiB")  # fmt: skip
        finally:
            _parallel(client_cls, names, 16, "delete")
            shutil.rmtree(tmp, ignore_errors=True)
