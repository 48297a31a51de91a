"""The object-store storage (shared by Swift and S3) on an in-memory store: the storage
contract, error translation, upload-once, link reading; and the S3 configuration."""

from __future__ import annotations

import errno
import os
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import pytest

from pfcon.adapters.storage.chrislink import MAX_LINK_BYTES
from pfcon.adapters.storage.local import StoreBase
from pfcon.adapters.storage.objectstore import ObjectInfo, ObjectStorage, ObjectStore
from pfcon.config import ConfigError, load_settings
from pfcon.domain.errors import BackendUnavailable, InvalidInputData, StorageFull
from pfcon.domain.model import OutputListing, StagedData
from pfcon.domain.ports import StagingRequest

from ..contracts.storage import StorageContract, mount_source, read_dir, write_files


class StoreDown(Exception):
    pass


class MemoryStore:
    """An ObjectStore in a dict; counts calls and can be made to fail."""

    name = "Memo"
    errors: tuple[type[BaseException], ...] = (StoreDown, OSError)

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.calls: dict[str, int] = {}
        self.fail: dict[str, BaseException] = {}
        self.put_delay = 0.0
        self.lock = threading.Lock()

    def _call(self, op: str) -> None:
        with self.lock:
            self.calls[op] = self.calls.get(op, 0) + 1
        if op in self.fail:
            raise self.fail[op]

    def describe(self, error: BaseException) -> str:
        return f"{type(error).__name__}: {error}"

    def list(self, prefix: str, limit: int | None = None) -> Sequence[ObjectInfo]:
        self._call("list")
        found = [ObjectInfo(k, len(v)) for k, v in sorted(self.objects.items()) if k.startswith(prefix)]
        return found[:limit] if limit is not None else found

    def exists(self, name: str) -> bool:
        self._call("exists")
        return name in self.objects

    def read(self, name: str, limit: int) -> bytes:
        self._call("read")
        return self.objects[name][:limit]

    def get(self, name: str, path: str, size: int) -> None:
        self._call("get")
        assert size == len(self.objects[name])  # the size comes from the listing
        with open(path, "wb") as f:
            f.write(self.objects[name])

    def put(self, path: str, name: str, size: int) -> None:
        self._call("put")
        time.sleep(self.put_delay)
        with open(path, "rb") as f:
            data = f.read()
        assert len(data) == size
        self.objects[name] = data

    def ping(self) -> None:
        self._call("ping")

    def ensure_container(self) -> None:
        self._call("ensure_container")


class MemoryHarness:
    supports_links = True

    def __init__(self, storebase: str) -> None:
        self.root = storebase
        self.store = MemoryStore()
        self.storage = ObjectStorage(StoreBase(storebase), self.store, workers=4)
        self.prefix = f"t{uuid.uuid4().hex[:8]}"
        self.out = f"{self.prefix}/out"
        self.n = 0

    def seed(self, files: dict[str, bytes]) -> StagingRequest:
        self.n += 1
        inp = f"{self.prefix}/in{self.n}"
        self.store.objects.update({f"{inp}/{k}": v for k, v in files.items()})
        return StagingRequest(input_dirs=(f"/{inp}/",), output_dir=f"{self.out}/")

    def seed_links(self) -> tuple[StagingRequest, dict[str, bytes]]:
        p = self.prefix
        request = self.seed({"test.txt": b"t", "home_bob.chrislink": f"{p}/home/bob".encode()})
        self.store.objects[f"{p}/home/bob/PIPELINES_bob.chrislink"] = f"{p}/PIPELINES/bob".encode()
        self.store.objects[f"{p}/PIPELINES/bob/pipeline.yml"] = b"pipeline: yes\n"
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

    def fetch_outputs(self, listing: OutputListing) -> dict[str, bytes]:
        base = listing.job_output_path + "/"
        stored = {k[len(base) :]: v for k, v in self.store.objects.items() if k.startswith(base)}
        assert sorted(stored) == sorted(listing.rel_file_paths)
        return stored

    def shared_state(self) -> Any:
        return {k: v for k, v in self.store.objects.items() if k.startswith(self.prefix + "/")}


class TestObjectStorageOnMemory(StorageContract):
    @pytest.fixture
    def harness(self, storebase: str) -> MemoryHarness:
        return MemoryHarness(storebase)


@pytest.fixture
def h(storebase: str) -> MemoryHarness:
    return MemoryHarness(storebase)


def test_the_memory_store_is_an_object_store(h: MemoryHarness) -> None:
    assert isinstance(h.store, ObjectStore)


@pytest.mark.parametrize(
    ("op", "call", "action"),
    [
        ("list", lambda h, r: h.storage.validate("j", r), "listing objects"),
        ("get", lambda h, r: h.storage.stage("j", r), "downloading inputs"),
        ("ping", lambda h, r: h.storage.ping(), "checking the bucket or container"),
        ("ensure_container", lambda h, r: h.storage.ensure_container(), "creating the bucket or container"),
    ],
)
def test_store_errors_are_503s_naming_the_store_and_the_action(h: MemoryHarness, op: str, call: Any, action: str) -> None:
    request = h.seed({"a.txt": b"a"})
    h.store.fail[op] = StoreDown("HTTP 503")
    with pytest.raises(BackendUnavailable) as e:
        call(h, request)
    assert e.value.message == f"Memo error while {action} (StoreDown: HTTP 503)"
    assert not h.storage.exists("j")  # a failed staging leaves nothing


def test_an_error_reading_a_link_is_a_503(h: MemoryHarness) -> None:
    request = h.seed({"a.chrislink": b"somewhere/else"})
    h.store.fail["read"] = StoreDown("reset")
    with pytest.raises(BackendUnavailable, match="^Memo error while reading a ChRIS link"):
        h.storage.stage("j", request)
    assert not h.storage.exists("j")


def test_no_room_on_storebase_is_a_507_not_a_store_error(h: MemoryHarness) -> None:
    request = h.seed({"a.txt": b"a"})
    h.store.fail["get"] = OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(StorageFull):
        h.storage.stage("j", request)


def test_upload_errors_are_503s_and_a_retry_uploads_what_is_missing(h: MemoryHarness) -> None:
    data = h.storage.stage("j", h.seed({"a.txt": b"a"}))
    h.write_output("j", data, "r.txt", b"r")
    h.store.fail["put"] = StoreDown("HTTP 500")
    with pytest.raises(BackendUnavailable, match="^Memo error while uploading outputs"):
        h.storage.outputs("j", h.out)
    del h.store.fail["put"]
    assert h.storage.outputs("j", h.out) == OutputListing(h.out, ("r.txt",))
    assert h.store.objects[f"{h.out}/r.txt"] == b"r"


def test_outputs_are_uploaded_once_even_when_asked_twice_at_once(h: MemoryHarness) -> None:
    data = h.storage.stage("j", h.seed({"a.txt": b"a"}))
    for i in range(10):
        h.write_output("j", data, f"o{i}.txt", b"o")
    h.store.put_delay = 0.01
    threads = [threading.Thread(target=h.storage.outputs, args=("j", h.out)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert h.store.calls["put"] == 10


def test_symlinks_and_link_files_are_never_uploaded(h: MemoryHarness) -> None:
    data = h.storage.stage("j", h.seed({"a.txt": b"a"}))
    outgoing = mount_source(h.root, data, "/share/outgoing")
    write_files(outgoing, {"real.txt": b"r", "sub/evil.chrislink": b"home/victim"})
    os.symlink("/etc/passwd", os.path.join(outgoing, "passwd"))
    os.symlink("real.txt", os.path.join(outgoing, "alias.txt"))
    listing = h.storage.outputs("j", h.out)
    assert listing.rel_file_paths == ("real.txt",)
    assert sorted(k for k in h.store.objects if k.startswith(h.out)) == [f"{h.out}/real.txt"]


def test_pseudo_directories_are_not_files(h: MemoryHarness) -> None:
    request = h.seed({"a.txt": b"a"})
    h.store.objects[f"{h.prefix}/in1/sub/"] = b""  # a "directory marker" object
    data = h.storage.stage("j", request)
    assert h.staged("j", data) == {"a.txt": b"a"}
    assert data.nfiles == 1


def test_only_the_start_of_a_link_object_is_read_and_an_oversized_link_is_a_400(h: MemoryHarness) -> None:
    p = h.prefix
    request = h.seed({"big.chrislink": f"{p}/target".encode() + b" " * (10 * MAX_LINK_BYTES)})
    h.store.objects[f"{p}/target/t.txt"] = b"t"
    limits: list[int] = []
    read = h.store.read
    h.store.read = lambda name, limit: limits.append(limit) or read(name, limit)  # type: ignore[method-assign]
    with pytest.raises(InvalidInputData, match="too long"):
        h.storage.stage("j", request)
    assert limits == [MAX_LINK_BYTES]
    assert not h.storage.exists("j")


def test_a_link_to_the_output_dir_is_refused(h: MemoryHarness) -> None:
    request = h.seed({"out.chrislink": h.prefix.encode()})  # an ancestor of the output dir
    with pytest.raises(InvalidInputData, match="Invalid input path"):
        h.storage.stage("j", request)


def test_several_input_prefixes_are_merged_and_each_must_exist(h: MemoryHarness) -> None:
    r1 = h.seed({"one.txt": b"1"})
    r2 = h.seed({"two/t.txt": b"2"})
    request = StagingRequest(input_dirs=r1.input_dirs + r2.input_dirs, output_dir=r1.output_dir)
    data = h.storage.stage("j", request)
    assert h.staged("j", data) == {"one.txt": b"1", "two/t.txt": b"2"}
    with pytest.raises(InvalidInputData, match="no objects found under"):
        h.storage.validate("k", StagingRequest(input_dirs=(*r1.input_dirs, "nothing/here"), output_dir="o"))


# -- the S3 and Swift stores, without a server -------------------------------------------


def test_s3_errors_are_described_without_credentials() -> None:
    from botocore.exceptions import ClientError, EndpointConnectionError

    from pfcon.adapters.storage.s3 import S3Settings, S3Store

    secret = "very-secret-value-1234"
    store = S3Store(S3Settings("http://127.0.0.1:9", access_key="AK" + secret, secret_key=secret, bucket="b"))
    assert secret not in repr(store) + repr(store.settings)
    denied = ClientError({"Error": {"Code": "SignatureDoesNotMatch", "Message": secret},
                          "ResponseMetadata": {"HTTPStatusCode": 403}}, "ListObjectsV2")  # fmt: skip
    assert store.describe(denied) == "HTTP 403 SignatureDoesNotMatch"
    missing = ClientError({"Error": {"Code": "404", "Message": "Not Found"}, "ResponseMetadata": {"HTTPStatusCode": 404}}, "HeadObject")
    assert store.describe(missing) == "HTTP 404"
    assert store.describe(EndpointConnectionError(endpoint_url="http://x")) == "EndpointConnectionError"
    assert isinstance(store, ObjectStore)


def test_swift_store_is_an_object_store() -> None:
    from swiftclient.exceptions import ClientException

    from pfcon.adapters.storage.swift import SwiftSettings, SwiftStore

    store = SwiftStore(SwiftSettings("http://127.0.0.1:9/auth/v1.0", "u:u", key="k-secret", container="c"))
    assert isinstance(store, ObjectStore)
    assert "k-secret" not in repr(store.settings)
    assert store.describe(ClientException("x", http_status=401)) == "HTTP 401"


# -- configuration and composition of STORAGE_ENV=s3 ---------------------------------------

PROD = {
    "APPLICATION_MODE": "production",
    "SECRET_KEY": "k" * 48,
    "PFCON_USER": "u",
    "PFCON_PASSWORD": "a-real-password",
    "PFCON_INNETWORK": "true",
    "STORAGE_ENV": "s3",
}
S3_ENV = {
    "S3_ENDPOINT_URL": "http://minio:9000",
    "S3_ACCESS_KEY": "access-AKIA-secret",
    "S3_SECRET_KEY": "secret-key-secret",
    "S3_BUCKET_NAME": "chris",
}


@pytest.mark.parametrize("missing", sorted(S3_ENV))
def test_production_s3_requires_its_settings(missing: str) -> None:
    env = {**PROD, **S3_ENV}
    del env[missing]
    with pytest.raises(ConfigError) as e:
        load_settings(env)
    assert e.value.variable == missing
    assert "STORAGE_ENV=s3" in str(e.value)


def test_s3_settings_and_their_secrets() -> None:
    s = load_settings({**PROD, **S3_ENV, "S3_REGION_NAME": "eu-west-1", "S3_RETRIES": "2"})
    assert (s.s3.endpoint_url, s.s3.bucket_name, s.s3.region_name, s.s3.retries) == (
        "http://minio:9000", "chris", "eu-west-1", 2,
    )  # fmt: skip
    assert s.s3.access_key == "access-AKIA-secret" and s.s3.secret_key == "secret-key-secret"
    assert "access-AKIA-secret" not in repr(s) and "secret-key-secret" not in repr(s)
    with pytest.raises(ConfigError) as e:
        load_settings({**PROD, **S3_ENV, "S3_RETRIES": "many"})
    assert e.value.variable == "S3_RETRIES"


def test_s3_dev_defaults_are_pfcons_and_the_server_info_names_the_endpoint() -> None:
    from pfcon import bootstrap

    s = load_settings({"APPLICATION_MODE": "dev", "PFCON_INNETWORK": "true", "STORAGE_ENV": "s3"})
    assert bootstrap.s3_options(s) == {
        "endpoint_url": "http://s3-service:9000", "access_key": "minioadmin", "secret_key": "minioadmin",
        "bucket_name": "users", "region_name": "us-east-1",
    }  # fmt: skip
    assert dict(bootstrap.server_info(s).extra) == {"s3_endpoint_url": "http://s3-service:9000"}


def test_dev_mode_refuses_an_s3_it_cannot_use(storebase: str) -> None:
    from pfcon import bootstrap

    s = load_settings({"APPLICATION_MODE": "dev", "PFCON_INNETWORK": "true", "STORAGE_ENV": "s3",
                       "S3_ENDPOINT_URL": "http://127.0.0.1:9", "S3_RETRIES": "0", "S3_SECRET_KEY": "dev-secret-xyz"})  # fmt: skip
    with pytest.raises(ConfigError) as e:
        bootstrap.s3_storage(s, StoreBase(storebase))
    assert e.value.variable == "S3_ENDPOINT_URL"
    assert "S3 error while creating the bucket or container (EndpointConnectionError)" in str(e.value)
    assert "dev-secret-xyz" not in str(e.value)
