"""The storage contract against real Swift, plus retries and failures of the transport."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from pfcon.adapters.storage.local import StoreBase
from pfcon.adapters.storage.swift import SwiftSettings, SwiftStorage
from pfcon.domain.errors import BackendUnavailable
from pfcon.domain.model import OutputListing, StagedData
from pfcon.domain.ports import StagingRequest

from ..contracts.storage import StorageContract, mount_source, read_dir, write_files
from .conftest import _require

pytestmark = pytest.mark.swift


def swift_settings(**overrides: Any) -> SwiftSettings:
    url = os.environ.get("SWIFT_AUTH_URL")
    if not url:
        _require("a Swift server", "SWIFT_AUTH_URL is not set (eval \"$(bash scripts/swift-aio.sh env)\")")
    values = dict(
        auth_url=url,
        username=os.environ.get("SWIFT_USERNAME", "chris:chris1234"),
        key=os.environ.get("SWIFT_KEY", "testing"),
        container=os.environ.get("SWIFT_CONTAINER_NAME", "users"),
    )
    values.update(overrides)
    return SwiftSettings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def swift_ok() -> None:
    storage = SwiftStorage(StoreBase("/nonexistent"), swift_settings(retries=1))
    try:
        storage.ensure_container()
    except BackendUnavailable as e:
        _require("a Swift server", str(e))


class SwiftHarness:
    supports_links = True

    def __init__(self, storebase: str) -> None:
        self.root = storebase
        self.storage = SwiftStorage(StoreBase(storebase), swift_settings(), workers=4)
        self.conn = self.storage._conn()
        self.container = self.storage.settings.container
        self.prefix = f"t{uuid.uuid4().hex[:10]}"
        self.out = f"{self.prefix}/out"
        self.n = 0

    def put(self, objects: dict[str, bytes]) -> None:
        for name, content in objects.items():
            self.conn.put_object(self.container, name, contents=content)

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

    def fetch_outputs(self, listing: OutputListing) -> dict[str, bytes]:
        assert listing.job_output_path == self.out
        _, stored = self.conn.get_container(self.container, prefix=self.out + "/", full_listing=True)
        assert sorted(o["name"][len(self.out) + 1 :] for o in stored) == sorted(listing.rel_file_paths)
        return {rel: self.conn.get_object(self.container, f"{self.out}/{rel}")[1] for rel in listing.rel_file_paths}

    def shared_state(self) -> Any:
        _, stored = self.conn.get_container(self.container, prefix=self.prefix + "/", full_listing=True)
        return sorted((o["name"], o["hash"], o["last_modified"]) for o in stored)


class TestSwiftStorage(StorageContract):
    @pytest.fixture
    def harness(self, swift_ok: None, tmp_path: Any) -> SwiftHarness:
        root = tmp_path / "storeBase"
        root.mkdir()
        return SwiftHarness(str(root))


class FlakyProxy:
    """A TCP proxy on 127.0.0.1 that drops the first ``drops`` connections."""

    def __init__(self, upstream: tuple[str, int], drops: int) -> None:
        self.upstream = upstream
        self.drops = drops
        self.dropped = 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.stopped = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stopped:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if self.dropped < self.drops:
                self.dropped += 1
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                client.close()  # RST: a transient network failure
                continue
            upstream = socket.create_connection(self.upstream)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.stopped = True
        self.server.close()


@pytest.fixture
def flaky(swift_ok: None) -> Iterator[FlakyProxy]:
    from urllib.parse import urlparse

    url = urlparse(swift_settings().auth_url)
    proxy = FlakyProxy((url.hostname or "127.0.0.1", url.port or 80), drops=3)
    yield proxy
    proxy.close()


def test_transient_errors_are_retried(flaky: FlakyProxy, tmp_path: Any) -> None:
    settings = swift_settings(auth_url=f"http://127.0.0.1:{flaky.port}/auth/v1.0", starting_backoff=0.05, max_backoff=0.2)
    direct = SwiftHarness(str(tmp_path))
    request = direct.seed({"a.txt": b"a", "b/c.txt": b"c"})
    storage = SwiftStorage(StoreBase(str(tmp_path)), settings, workers=1)
    data = storage.stage("retry-1", request)
    assert flaky.dropped == 3
    assert data.nfiles == 2
    assert read_dir(os.path.join(str(tmp_path), "key-retry-1", "incoming")) == {"a.txt": b"a", "b/c.txt": b"c"}


def test_a_permanent_failure_is_a_clear_error_and_leaves_nothing(tmp_path: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    settings = swift_settings(auth_url=f"http://127.0.0.1:{port}/auth/v1.0", retries=2, starting_backoff=0.05)
    storage = SwiftStorage(StoreBase(str(tmp_path)), settings)
    request = StagingRequest(input_dirs=("a/in",), output_dir="a/out")
    with pytest.raises(BackendUnavailable, match="Swift"):
        storage.stage("fail-1", request)
    assert os.listdir(tmp_path) == []


def test_wrong_credentials_are_a_clear_error(tmp_path: Any) -> None:
    storage = SwiftStorage(StoreBase(str(tmp_path)), swift_settings(key="wrong", retries=1))
    with pytest.raises(BackendUnavailable, match="401"):
        storage.validate("x", StagingRequest(input_dirs=("a",), output_dir="b"))


ODD_NAMES = ("with space.txt", "unicodé/ñame.txt", "plus+and%25percent.txt", "hash#query?.txt", "tilde~'quote'(1)&a=b.txt")


def test_objects_of_any_name_are_staged(swift_ok: None, tmp_path: Any) -> None:
    harness = SwiftHarness(str(tmp_path))
    files = {name: name.encode() * 3 for name in ODD_NAMES}
    data = harness.storage.stage("odd-1", harness.seed(files))
    assert data.nfiles == len(files)
    assert read_dir(os.path.join(str(tmp_path), "key-odd-1", "incoming")) == files


def test_an_expired_token_is_renewed_while_staging(swift_ok: None, tmp_path: Any) -> None:
    harness = SwiftHarness(str(tmp_path))
    request = harness.seed({"a.txt": b"a"})
    harness.storage.stage("tok-1", request)
    store = harness.storage.store
    assert store._auth is not None
    path, token = store._auth
    store._auth = (path, "AUTH_tk" + "0" * 32)  # what an expired or revoked token looks like
    request = harness.seed({"b.txt": b"b", "c/d.txt": b"d"})
    assert harness.storage.stage("tok-2", request).nfiles == 2
    assert read_dir(os.path.join(str(tmp_path), "key-tok-2", "incoming")) == {"b.txt": b"b", "c/d.txt": b"d"}
    assert store._auth[1] != "AUTH_tk" + "0" * 32


def test_an_object_gone_between_listing_and_get_is_a_503_naming_swift(swift_ok: None, tmp_path: Any) -> None:
    harness = SwiftHarness(str(tmp_path))
    harness.seed({})
    with pytest.raises(BackendUnavailable, match=r"Swift error while downloading inputs \(HTTP 404\)"):
        harness.storage._download(f"{harness.prefix}/gone.txt", str(tmp_path / "gone.txt"), 1)
