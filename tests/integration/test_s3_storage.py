"""S3 storage (STORAGE_ENV=s3) against a real S3 server (SeaweedFS, scripts/s3-server.sh):
the storage contract, 1 GiB transfers with bounded memory, a 20,000-object prefix,
retries and failures of the transport, and job cycles through the HTTP API."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from pfcon.adapters.storage.local import StoreBase
from pfcon.adapters.storage.s3 import S3Settings, S3Storage
from pfcon.domain.errors import BackendUnavailable, InvalidInputData
from pfcon.domain.model import OutputListing, StagedData
from pfcon.domain.ports import StagingRequest

from ..contracts.storage import StorageContract, mount_source, read_dir, write_files
from .conftest import _require
from .test_swift_storage import FlakyProxy

pytestmark = pytest.mark.s3

MiB, GiB = 1024**2, 1024**3
RSS_BOUND = 64 * MiB
SECRET_MARK = "sekrit-do-not-print-7f3a"


def s3_settings(**overrides: Any) -> S3Settings:
    url = os.environ.get("S3_ENDPOINT_URL")
    if not url:
        _require("an S3 server", "S3_ENDPOINT_URL is not set (eval \"$(bash scripts/s3-server.sh env)\")")
    values: dict[str, Any] = dict(
        endpoint_url=url,
        access_key=os.environ.get("S3_ACCESS_KEY", "minioadmin"),
        secret_key=os.environ.get("S3_SECRET_KEY", "minioadmin"),
        bucket=os.environ.get("S3_BUCKET_NAME", "users"),
        region=os.environ.get("S3_REGION_NAME", "us-east-1"),
    )
    values.update(overrides)
    return S3Settings(**values)


def raw_client(pool: int = 32) -> Any:
    """A plain boto3 client on the same server, to seed and inspect the bucket."""
    import boto3
    from botocore.config import Config

    s = s3_settings()
    return boto3.session.Session().client(
        "s3", endpoint_url=s.endpoint_url, aws_access_key_id=s.access_key, aws_secret_access_key=s.secret_key,
        region_name=s.region,
        config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                      response_checksum_validation="when_required", max_pool_connections=pool),
    )  # fmt: skip


@pytest.fixture(scope="module")
def s3_ok() -> None:
    storage = S3Storage(StoreBase("/nonexistent"), s3_settings(retries=1))
    try:
        storage.ensure_container()
    except BackendUnavailable as e:
        _require("an S3 server", str(e))


class S3Harness:
    supports_links = True

    def __init__(self, storebase: str) -> None:
        self.root = storebase
        self.storage = S3Storage(StoreBase(storebase), s3_settings(), workers=4)
        self.client = raw_client()
        self.bucket = self.storage.settings.bucket
        self.prefix = f"t{uuid.uuid4().hex[:10]}"
        self.out = f"{self.prefix}/out"
        self.n = 0

    def put(self, objects: dict[str, bytes]) -> None:
        for name, content in objects.items():
            self.client.put_object(Bucket=self.bucket, Key=name, Body=content)

    def seed(self, files: dict[str, bytes]) -> StagingRequest:
        self.n += 1
        inp = f"{self.prefix}/in{self.n}"
        self.put({f"{inp}/{k}": v for k, v in files.items()})
        return StagingRequest(input_dirs=(f"/{inp}/",), output_dir=f"{self.out}/")

    def seed_links(self) -> tuple[StagingRequest, dict[str, bytes]]:
        p = self.prefix
        request = self.seed({"test.txt": b"t", "home_bob.chrislink": f"{p}/home/bob".encode()})
        self.put(
            {
                f"{p}/home/bob/PIPELINES_bob.chrislink": f"{p}/PIPELINES/bob".encode(),
                f"{p}/PIPELINES/bob/pipeline.yml": b"pipeline: yes\n",
            }
        )
        return request, {"test.txt": b"t", f"{p}_home_bob/{p}_PIPELINES_bob/pipeline.yml": b"pipeline: yes\n"}

    def seed_escaping_link(self) -> StagingRequest:
        return self.seed({"a.chrislink": b"../secret"})

    def without_input(self) -> StagingRequest:
        return StagingRequest(input_dirs=(f"{self.prefix}/nothing",), output_dir=self.out)

    def staged(self, jid: str, data: StagedData) -> dict[str, bytes]:
        return read_dir(mount_source(self.root, data, "/share/incoming"))

    def write_output(self, jid: str, data: StagedData, rel: str, content: bytes) -> None:
        write_files(mount_source(self.root, data, "/share/outgoing"), {rel: content})

    def output_path(self, data: StagedData) -> str | None:
        return self.out

    def keys(self, prefix: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            found.extend(page.get("Contents", ()))
        return found

    def fetch_outputs(self, listing: OutputListing) -> dict[str, bytes]:
        assert listing.job_output_path == self.out
        stored = self.keys(self.out + "/")
        assert sorted(o["Key"][len(self.out) + 1 :] for o in stored) == sorted(listing.rel_file_paths)
        return {
            rel: self.client.get_object(Bucket=self.bucket, Key=f"{self.out}/{rel}")["Body"].read()
            for rel in listing.rel_file_paths
        }

    def shared_state(self) -> Any:
        return sorted((o["Key"], o["ETag"], o["LastModified"]) for o in self.keys(self.prefix + "/"))


class TestS3Storage(StorageContract):
    @pytest.fixture
    def harness(self, s3_ok: None, tmp_path: Any) -> S3Harness:
        root = tmp_path / "storeBase"
        root.mkdir()
        return S3Harness(str(root))


def test_input_prefix_of_another_name_is_not_an_input(s3_ok: None, tmp_path: Any) -> None:
    """``a/in`` is not ``a/in2``: a prefix only matches whole path components."""
    h = S3Harness(str(tmp_path))
    h.put({f"{h.prefix}/in2/x.txt": b"x"})
    with pytest.raises(InvalidInputData, match="no objects found"):
        h.storage.validate("x", StagingRequest(input_dirs=(f"{h.prefix}/in",), output_dir=h.out))
    h.put({f"{h.prefix}/single.txt": b"s"})  # an input "dir" that is one object
    data = h.storage.stage("single-1", StagingRequest(input_dirs=(f"{h.prefix}/single.txt",), output_dir=h.out))
    assert h.staged("single-1", data) == {"single.txt": b"s"}


def test_credentials_never_show(s3_ok: None, tmp_path: Any) -> None:
    settings = s3_settings(access_key=f"ak-{SECRET_MARK}", secret_key=SECRET_MARK, retries=0)
    storage = S3Storage(StoreBase(str(tmp_path)), settings)
    assert SECRET_MARK not in repr(settings) + repr(storage.store) + repr(storage)
    with pytest.raises(BackendUnavailable, match=r"^S3 error while listing objects \(HTTP 403") as e:
        storage.validate("x", StagingRequest(input_dirs=("a",), output_dir="b"))
    assert SECRET_MARK not in str(e.value)
    with pytest.raises(BackendUnavailable, match="403") as e:
        storage.ping()
    assert SECRET_MARK not in str(e.value)


# -- retries and failures ----------------------------------------------------------


@pytest.fixture
def flaky(s3_ok: None) -> Iterator[FlakyProxy]:
    from urllib.parse import urlparse

    url = urlparse(s3_settings().endpoint_url)
    proxy = FlakyProxy((url.hostname or "127.0.0.1", url.port or 80), drops=3)
    yield proxy
    proxy.close()


def test_transient_errors_are_retried(flaky: FlakyProxy, tmp_path: Any) -> None:
    direct = S3Harness(str(tmp_path / "direct"))
    request = direct.seed({"a.txt": b"a", "b/c.txt": b"c"})
    storage = S3Storage(StoreBase(str(tmp_path)), s3_settings(endpoint_url=f"http://127.0.0.1:{flaky.port}"), workers=1)
    data = storage.stage("retry-1", request)
    assert flaky.dropped == 3
    assert data.nfiles == 2
    assert read_dir(os.path.join(str(tmp_path), "key-retry-1", "incoming")) == {"a.txt": b"a", "b/c.txt": b"c"}


def _dead_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    return f"http://127.0.0.1:{port}"


def test_a_store_that_stays_down_is_a_clear_503_and_leaves_nothing(tmp_path: Any) -> None:
    settings = s3_settings(endpoint_url=_dead_endpoint(), retries=2)
    storage = S3Storage(StoreBase(str(tmp_path)), settings)
    request = StagingRequest(input_dirs=("a/in",), output_dir="a/out")
    t0 = time.monotonic()
    with pytest.raises(BackendUnavailable, match=r"^S3 error while listing objects \(EndpointConnectionError\)$"):
        storage.stage("fail-1", request)
    assert time.monotonic() - t0 < 30  # two retries with backoff, then the answer
    assert os.listdir(tmp_path) == []
    t0 = time.monotonic()
    with pytest.raises(BackendUnavailable, match="^S3 error while checking the bucket or container"):
        storage.ping()
    assert time.monotonic() - t0 < 5  # one try, a short timeout: /ready/ answers fast


class CuttableProxy(FlakyProxy):
    """A proxy whose ``cut`` also breaks the connections it holds (kept alive by the client)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.open: list[socket.socket] = []
        super().__init__(upstream, drops=0)

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:  # type: ignore[override]
        self.open += [src, dst]
        FlakyProxy._pipe(src, dst)

    def cut(self) -> None:
        self.stopped = True
        try:
            self.server.shutdown(socket.SHUT_RDWR)  # wakes the accept() (a close alone would not)
        except OSError:
            pass
        self.close()
        for s in self.open:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def test_the_store_going_down_mid_job_is_a_503_not_a_500(s3_ok: None, tmp_path: Any) -> None:
    proxy = CuttableProxy(_host_port(s3_settings().endpoint_url))
    h = S3Harness(str(tmp_path))
    request = h.seed({"x.txt": b"x"})
    storage = S3Storage(StoreBase(str(tmp_path)), s3_settings(endpoint_url=f"http://127.0.0.1:{proxy.port}", retries=1))
    data = storage.stage("down-1", request)
    write_files(mount_source(str(tmp_path), data, "/share/outgoing"), {"out.txt": b"o"})
    proxy.cut()
    with pytest.raises(BackendUnavailable, match="^S3 error while listing objects"):
        storage.outputs("down-1", h.out)
    assert storage.exists("down-1")  # the job's data stays for a retry once S3 is back


def _host_port(url: str) -> tuple[str, int]:
    from urllib.parse import urlparse

    u = urlparse(url)
    return (u.hostname or "127.0.0.1", u.port or 80)


# -- large objects, bounded memory -------------------------------------------------


def _rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def peak_rss_growth(work: Callable[[], Any]) -> tuple[Any, int, float]:
    """Run ``work``; return its result, the peak RSS growth (sampled every 10 ms) and seconds."""
    before = _rss()
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss())
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.monotonic()
    try:
        result = work()
    finally:
        elapsed = time.monotonic() - t0
        done.set()
        sampler.join()
    return result, max(peak, _rss()) - before, elapsed


MARKS = [(i * 100 * MiB + 12_345, f"mark-{i:02d}".encode()) for i in range(10)]


def sparse_file(path: str, size: int) -> None:
    """A file of ``size`` bytes, mostly holes, with a few marks to check offsets by."""
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, mark in MARKS:
            f.seek(offset)
            f.write(mark)


def check_marks(path: str, size: int) -> None:
    assert os.path.getsize(path) == size
    with open(path, "rb") as f:
        for offset, mark in MARKS:
            f.seek(offset)
            assert f.read(len(mark)) == mark
        f.seek(size - 4096)
        assert f.read() == bytes(4096)


def _upload_in_a_subprocess(path: str, key: str) -> None:
    """Seed with another process, so that nothing it allocates lowers our RSS baseline."""
    s = s3_settings()
    code = (
        "import sys, boto3; from botocore.config import Config\n"
        "c = boto3.client('s3', endpoint_url=sys.argv[1], aws_access_key_id=sys.argv[2], "
        "aws_secret_access_key=sys.argv[3], region_name=sys.argv[4], config=Config(s3={'addressing_style': 'path'}, "
        "request_checksum_calculation='when_required', response_checksum_validation='when_required'))\n"
        "c.upload_file(sys.argv[6], sys.argv[5], sys.argv[7])\n"
    )
    subprocess.run(
        [sys.executable, "-c", code, s.endpoint_url, s.access_key, s.secret_key, s.region, s.bucket, path, key],
        check=True, timeout=600,
    )  # fmt: skip


def test_a_1_gib_object_is_staged_with_bounded_memory(s3_ok: None, tmp_path: Any) -> None:
    h = S3Harness(str(tmp_path / "storeBase"))
    os.makedirs(h.root)
    source = str(tmp_path / "big.bin")
    sparse_file(source, GiB)
    key = f"{h.prefix}/in/big.bin"
    _upload_in_a_subprocess(source, key)
    os.remove(source)
    try:
        request = StagingRequest(input_dirs=(f"{h.prefix}/in",), output_dir=h.out)
        data, growth, seconds = peak_rss_growth(lambda: h.storage.stage("big-down", request))
        assert data.nfiles == 1
        check_marks(os.path.join(h.root, "key-big-down", "incoming", "big.bin"), GiB)
        print(f"\nS3 1 GiB download (staged): {GiB / MiB / seconds:.0f} MiB/s, {seconds:.1f} s, "
              f"peak RSS growth {growth / MiB:.1f} MiB")  # fmt: skip
        assert growth < RSS_BOUND
    finally:
        h.client.delete_object(Bucket=h.bucket, Key=key)


def test_a_1_gib_output_is_uploaded_multipart_with_bounded_memory(s3_ok: None, tmp_path: Any) -> None:
    h = S3Harness(str(tmp_path / "storeBase"))
    os.makedirs(h.root)
    data = h.storage.stage("big-up", h.seed({"in.txt": b"i"}))
    outgoing = mount_source(h.root, data, "/share/outgoing")
    sparse_file(os.path.join(outgoing, "big.bin"), GiB)
    write_files(outgoing, {"small.txt": b"s"})
    key = f"{h.out}/big.bin"
    try:
        listing, growth, seconds = peak_rss_growth(lambda: h.storage.outputs("big-up", h.out))
        assert sorted(listing.rel_file_paths) == ["big.bin", "small.txt"]
        head = h.client.head_object(Bucket=h.bucket, Key=key)
        assert head["ContentLength"] == GiB
        assert head["ETag"].strip('"').endswith("-64")  # 64 parts of 16 MiB
        for offset, mark in MARKS[::3]:
            got = h.client.get_object(Bucket=h.bucket, Key=key, Range=f"bytes={offset}-{offset + len(mark) - 1}")
            assert got["Body"].read() == mark
        print(f"\nS3 1 GiB upload (multipart): {GiB / MiB / seconds:.0f} MiB/s, {seconds:.1f} s, "
              f"peak RSS growth {growth / MiB:.1f} MiB")  # fmt: skip
        assert growth < RSS_BOUND
        # a second listing uploads nothing again
        stamp = head["LastModified"]
        h.storage.outputs("big-up", h.out)
        assert h.client.head_object(Bucket=h.bucket, Key=key)["LastModified"] == stamp
    finally:
        h.client.delete_object(Bucket=h.bucket, Key=key)


# -- many objects --------------------------------------------------------------------

MANY = 20_000
MANY_PREFIX = "pfcon-tests/many-20000-v1"  # seeded once, read-only afterwards


def _many_keys() -> list[str]:
    return [f"{MANY_PREFIX}/d{i // 1000:02d}/f{i:05d}.txt" for i in range(MANY)]


@pytest.fixture(scope="module")
def many_objects(s3_ok: None) -> list[str]:
    client = raw_client(pool=64)
    bucket = s3_settings().bucket
    keys = _many_keys()
    present = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=MANY_PREFIX + "/"):
        present.update(o["Key"] for o in page.get("Contents", ()))
    missing = [k for k in keys if k not in present]
    if missing:
        with ThreadPoolExecutor(32) as pool:
            list(pool.map(lambda k: client.put_object(Bucket=bucket, Key=k, Body=k.encode() * 4), missing))
    return keys


def test_a_20000_object_prefix_is_staged_whole_with_bounded_memory(many_objects: list[str], tmp_path: Any) -> None:
    # How fast, against the store's own parallel GET rate, is measured by `make bench`
    # (section objectstores), not asserted here.
    workers = 8
    root = tmp_path / "storeBase"
    root.mkdir()
    storage = S3Storage(StoreBase(str(root)), s3_settings(concurrency=workers), workers=workers)
    request = StagingRequest(input_dirs=(MANY_PREFIX,), output_dir="pfcon-tests/out")
    data, growth, seconds = peak_rss_growth(lambda: storage.stage("many-1", request))
    assert data.nfiles == MANY
    incoming = root / "key-many-1" / "incoming"
    assert sum(len(files) for _, _, files in os.walk(incoming)) == MANY
    for key in (many_objects[0], many_objects[-1]):
        assert (incoming / key[len(MANY_PREFIX) + 1 :]).read_bytes() == key.encode() * 4
    print(f"\nS3 {MANY} objects staged in {seconds:.1f} s ({MANY / seconds:.0f} objects/s, "
          f"peak RSS growth {growth / MiB:.1f} MiB)")  # fmt: skip
    assert growth < RSS_BOUND


def test_objects_of_any_name_are_staged(s3_ok: None, tmp_path: Any) -> None:
    from .test_swift_storage import ODD_NAMES

    harness = S3Harness(str(tmp_path))
    files = {name: name.encode() * 3 for name in ODD_NAMES}
    data = harness.storage.stage("odd-1", harness.seed(files))
    assert data.nfiles == len(files)
    assert read_dir(os.path.join(str(tmp_path), "key-odd-1", "incoming")) == files


def test_an_object_gone_between_listing_and_get_is_a_503_naming_the_code(s3_ok: None, tmp_path: Any) -> None:
    harness = S3Harness(str(tmp_path))
    with pytest.raises(BackendUnavailable, match=r"S3 error while downloading inputs \(HTTP 404 NoSuchKey\)"):
        harness.storage._download(f"{harness.prefix}/gone.txt", str(tmp_path / "gone.txt"), 1)


def test_a_wrong_secret_is_refused_by_the_store_and_never_shown(s3_ok: None, tmp_path: Any) -> None:
    direct = S3Harness(str(tmp_path / "direct"))
    direct.seed({"a.txt": b"a"})
    storage = S3Storage(StoreBase(str(tmp_path)), s3_settings(secret_key=SECRET_MARK, retries=0))
    with pytest.raises(BackendUnavailable, match=r"S3 error while downloading inputs \(HTTP 403") as e:
        storage._download(f"{direct.prefix}/in1/a.txt", str(tmp_path / "a.txt"), 1)
    assert SECRET_MARK not in str(e.value) and SECRET_MARK not in repr(e.value.__cause__)
    assert not (tmp_path / "a.txt").exists()


# -- through the HTTP API (python-pfconclient 3.3.0) --------------------------------


@pytest.fixture(scope="module")
def s3_server(s3_ok: None, docker_client: Any, tmp_path_factory: Any) -> Iterator[Any]:
    from .test_e2e_innetwork import _server

    yield from _server(docker_client, tmp_path_factory, STORAGE_ENV="s3")


@pytest.mark.docker
def test_s3_cycle_with_links_and_idempotent_upload(s3_server: Any) -> None:
    from pfconclient.client import Client

    from .test_e2e_innetwork import COPY_AND_TAMPER, jid
    from .test_e2e_zipfile import descriptors, wait_terminal

    client_s3 = raw_client()
    bucket = s3_settings().bucket
    n = uuid.uuid4().hex[:8]
    inp, out = f"t{n}/home/cube/feeds/1/in", f"t{n}/home/cube/feeds/1/out"
    objects = {
        f"{inp}/test.txt": b"t",
        f"{inp}/sub/ü.bin": bytes(range(256)),
        f"{inp}/bob.chrislink": f"t{n}/home/bob".encode(),
        f"t{n}/home/bob/pipeline.yml": b"p",
    }
    for name, content in objects.items():
        client_s3.put_object(Bucket=bucket, Key=name, Body=content)

    def stored(prefix: str) -> dict[str, Any]:
        page = client_s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
        return {o["Key"]: o["LastModified"] for o in page.get("Contents", ())}

    client = Client(s3_server.api, s3_server.token())
    assert client.get_server_info()["storage_env"] == "s3"
    job = jid()
    submitted = client.submit_job(job, descriptors(script=COPY_AND_TAMPER, input_dirs=[inp], output_dir=out))
    assert submitted["data"]["nfiles"] == 3
    assert wait_terminal(client, job)["compute"]["status"] == "finishedSuccessfully"
    expected = sorted(["test.txt", "sub/ü.bin", f"t{n}_home_bob/pipeline.yml"])
    listing = client.get_job_json_data(job, out)
    assert listing == {"job_output_path": out, "rel_file_paths": listing["rel_file_paths"]}
    assert sorted(listing["rel_file_paths"]) == expected
    stamps = stored(out + "/")
    assert sorted(k[len(out) + 1 :] for k in stamps) == expected  # the plugin's link file was not uploaded
    assert client_s3.get_object(Bucket=bucket, Key=f"{out}/sub/ü.bin")["Body"].read() == bytes(range(256))
    # a repeated GET uploads nothing twice
    assert sorted(client.get_job_json_data(job, out)["rel_file_paths"]) == expected
    assert stored(out + "/") == stamps
    # without the parameter the outputs come back as a zip
    with zipfile.ZipFile(io.BytesIO(client.get_job_zip_data(job))) as z:
        assert sorted(z.namelist()) == expected
    client.delete_job(job)
    assert not os.path.exists(os.path.join(s3_server.storebase, f"key-{job}"))
    assert set(stored(f"t{n}/home/")) >= set(objects)  # CUBE's objects are never deleted


@pytest.mark.docker
def test_s3_missing_input_prefix_is_400(s3_server: Any) -> None:
    from pfconclient.client import Client
    from pfconclient.exceptions import PfconRequestException

    from .test_e2e_innetwork import jid
    from .test_e2e_zipfile import descriptors

    client = Client(s3_server.api, s3_server.token())
    with pytest.raises(PfconRequestException) as e:
        client.submit_job(jid(), descriptors(input_dirs=["nothing/here"], output_dir="x/out"))
    assert e.value.code == 400
    assert not [n for n in os.listdir(s3_server.storebase) if n.startswith("key-")]


# -- the same base on Swift: files above Swift's object size limit ---------------------


@pytest.mark.swift
def test_swift_uploads_large_outputs_as_static_large_objects(tmp_path: Any) -> None:
    from .test_swift_storage import SwiftHarness, swift_settings

    if not os.environ.get("SWIFT_AUTH_URL"):
        _require("a Swift server", "SWIFT_AUTH_URL is not set (eval \"$(bash scripts/swift-aio.sh env)\")")
    h = SwiftHarness(str(tmp_path))
    h.storage = type(h.storage)(
        StoreBase(str(tmp_path)), swift_settings(large_object_threshold=3 * MiB, segment_size=MiB), workers=2
    )
    data = h.storage.stage("slo-1", h.seed({"in.txt": b"i"}))
    content = os.urandom(3 * MiB + 5)  # four segments, the last of 5 bytes
    h.write_output("slo-1", data, "big.bin", content)
    h.write_output("slo-1", data, "small.bin", b"s" * MiB)
    listing = h.storage.outputs("slo-1", h.out)
    assert h.fetch_outputs(listing) == {"big.bin": content, "small.bin": b"s" * MiB}
    headers = h.conn.head_object(h.container, f"{h.out}/big.bin")
    assert headers.get("x-static-large-object") == "True"
    _, segments = h.conn.get_container(f"{h.container}_segments", prefix=f"{h.out}/big.bin/", full_listing=True)
    assert [s["bytes"] for s in segments] == [MiB, MiB, MiB, 5]
    assert "x-static-large-object" not in h.conn.head_object(h.container, f"{h.out}/small.bin")
