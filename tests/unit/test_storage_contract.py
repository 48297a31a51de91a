"""The storage contract against the local adapters (zipfile, filesystem, fslink) and the fake."""

from __future__ import annotations

import io
import os
import uuid
import zipfile
from typing import Any

import pytest

from pfcon.adapters.storage.fake import FakeStorage
from pfcon.adapters.storage.filesystem import FileSystemStorage, FsLinkStorage
from pfcon.adapters.storage.local import StoreBase
from pfcon.adapters.storage.zipfile import ZipFileStorage
from pfcon.domain.model import INPUT_DIR, OUTPUT_DIR, OutputListing, StagedData
from pfcon.domain.ports import StagingRequest

from ..contracts.storage import LINKED_FILES, StorageContract, mount_source, read_dir, write_files


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buf.getvalue()


class LocalHarness:
    """Shared pieces of harnesses whose storeBase is a local directory."""

    def __init__(self, storebase: str, tmp: str) -> None:
        self.root = storebase
        self.tmp = tmp

    def staged(self, jid: str, data: StagedData) -> dict[str, bytes]:
        return read_dir(mount_source(self.root, data, INPUT_DIR))

    def write_output(self, jid: str, data: StagedData, rel: str, content: bytes) -> None:
        write_files(mount_source(self.root, data, OUTPUT_DIR), {rel: content})

    def shared_state(self) -> Any:
        return {k: v for k, v in read_dir(self.root).items() if not k.startswith("key-")}


class ZipHarness(LocalHarness):
    supports_links = True

    def __init__(self, storebase: str, tmp: str) -> None:
        super().__init__(storebase, tmp)
        self.storage = ZipFileStorage(StoreBase(storebase))

    def _upload(self, files: dict[str, bytes]) -> StagingRequest:
        path = os.path.join(self.tmp, f"{uuid.uuid4().hex}.zip")
        open(path, "wb").write(_zip(files))
        return StagingRequest(upload_path=path)

    def seed(self, files: dict[str, bytes]) -> StagingRequest:
        return self._upload(files)

    def seed_links(self) -> tuple[StagingRequest, dict[str, bytes]]:
        # CUBE puts linked data under its full storage path next to the link files
        return self._upload(
            {
                "test.txt": b"t",
                "home_bob.chrislink": b"home/bob",
                "home/bob/PIPELINES_bob.chrislink": b"PIPELINES/bob",
                "PIPELINES/bob/pipeline.yml": b"pipeline: yes\n",
            }
        ), LINKED_FILES

    def seed_escaping_link(self) -> StagingRequest:
        return self._upload({"a.chrislink": b"../../outside"})

    def without_input(self) -> StagingRequest:
        return StagingRequest()

    def output_path(self, data: StagedData) -> str | None:
        return None

    def fetch_outputs(self, listing: OutputListing) -> dict[str, bytes]:
        raise AssertionError("zipfile storage answers with a zip")


class SharedHarness(LocalHarness):
    """filesystem / fslink: storeBase is CUBE's storage root."""

    def __init__(self, storage: Any, storebase: str, tmp: str) -> None:
        super().__init__(storebase, tmp)
        self.storage = storage
        os.makedirs(os.path.join(storebase, "outside-sentinel-parent"), exist_ok=True)

    def _new_dirs(self) -> tuple[str, str]:
        n = uuid.uuid4().hex[:8]
        inp, out = f"home/u/feeds/f{n}/in", f"home/u/feeds/f{n}/out"
        os.makedirs(os.path.join(self.root, inp))
        os.makedirs(os.path.join(self.root, out))
        return inp, out

    def seed(self, files: dict[str, bytes]) -> StagingRequest:
        inp, out = self._new_dirs()
        write_files(os.path.join(self.root, inp), files)
        return StagingRequest(input_dirs=(f"/{inp}/",), output_dir=f"{out}/")

    def seed_links(self) -> tuple[StagingRequest, dict[str, bytes]]:
        inp, out = self._new_dirs()
        write_files(os.path.join(self.root, inp), {"test.txt": b"t", "home_bob.chrislink": b"home/bob"})
        write_files(self.root, {"home/bob/PIPELINES_bob.chrislink": b"PIPELINES/bob"})
        write_files(self.root, {"PIPELINES/bob/pipeline.yml": b"pipeline: yes\n"})
        if not self.supports_links:  # filesystem mode reads the input dir as it is
            return StagingRequest(input_dirs=(inp,), output_dir=out), {
                "test.txt": b"t", "home_bob.chrislink": b"home/bob"
            }
        return StagingRequest(input_dirs=(inp,), output_dir=out), LINKED_FILES

    def seed_escaping_link(self) -> StagingRequest:
        inp, out = self._new_dirs()
        write_files(os.path.dirname(self.root), {"secret/data.txt": b"secret"})
        write_files(os.path.join(self.root, inp), {"a.chrislink": b"../secret"})
        return StagingRequest(input_dirs=(inp,), output_dir=out)

    def without_input(self) -> StagingRequest:
        _, out = self._new_dirs()
        return StagingRequest(input_dirs=("home/u/does/not/exist",), output_dir=out)

    def output_path(self, data: StagedData) -> str | None:
        source = next(m.source for m in data.mounts if m.target == OUTPUT_DIR)
        return f"/{source}/"

    def fetch_outputs(self, listing: OutputListing) -> dict[str, bytes]:
        base = os.path.join(self.root, listing.job_output_path)
        return {rel: open(os.path.join(base, rel), "rb").read() for rel in listing.rel_file_paths}


class FakeHarness:
    supports_links = True

    def __init__(self) -> None:
        self.storage = FakeStorage()

    def seed(self, files: dict[str, bytes]) -> StagingRequest:
        base = f"in-{uuid.uuid4().hex[:8]}"
        self.storage.shared.update({f"{base}/{k}": v for k, v in files.items()})
        return StagingRequest(input_dirs=(base,), output_dir="out")

    def seed_links(self) -> tuple[StagingRequest, dict[str, bytes]]:
        request = self.seed({"test.txt": b"t", "home_bob.chrislink": b"home/bob"})
        self.storage.shared["home/bob/PIPELINES_bob/pipeline.yml"] = b"pipeline: yes\n"
        return request, LINKED_FILES

    def seed_escaping_link(self) -> StagingRequest:
        return self.seed({"a.chrislink": b"../secret"})

    def without_input(self) -> StagingRequest:
        return StagingRequest(input_dirs=("nothing/here",), output_dir="out")

    def staged(self, jid: str, data: StagedData) -> dict[str, bytes]:
        return self.storage.incoming[jid]

    def write_output(self, jid: str, data: StagedData, rel: str, content: bytes) -> None:
        self.storage.outgoing[jid][rel] = content

    def output_path(self, data: StagedData) -> str | None:
        return None

    def fetch_outputs(self, listing: OutputListing) -> dict[str, bytes]:
        raise AssertionError("asked for a zip")

    def shared_state(self) -> Any:
        return dict(self.storage.shared)


class TestZipFileStorage(StorageContract):
    @pytest.fixture
    def harness(self, storebase: str, tmp_path: Any) -> ZipHarness:
        return ZipHarness(storebase, str(tmp_path))


class TestFileSystemStorage(StorageContract):
    @pytest.fixture
    def harness(self, storebase: str, tmp_path: Any) -> SharedHarness:
        harness = SharedHarness(FileSystemStorage(StoreBase(storebase)), storebase, str(tmp_path))
        harness.supports_links = False  # type: ignore[attr-defined]
        return harness


class TestFsLinkStorage(StorageContract):
    @pytest.fixture
    def harness(self, storebase: str, tmp_path: Any) -> SharedHarness:
        harness = SharedHarness(FsLinkStorage(StoreBase(storebase), workers=4), storebase, str(tmp_path))
        harness.supports_links = True  # type: ignore[attr-defined]
        return harness


class TestFakeStorage(StorageContract):
    @pytest.fixture
    def harness(self) -> FakeHarness:
        return FakeHarness()


def test_every_configurable_storage_mode_has_a_contract_run() -> None:
    """A storage mode added to the configuration must also get a contract run."""
    import tests.integration.test_s3_storage as s3_suite
    import tests.integration.test_swift_storage as swift_suite
    from pfcon.config import STORAGE_ENVS_BUILT

    runs = {
        "zipfile": TestZipFileStorage,
        "filesystem": TestFileSystemStorage,
        "fslink": TestFsLinkStorage,
        "swift": swift_suite.TestSwiftStorage,
        "s3": s3_suite.TestS3Storage,
    }
    assert set(STORAGE_ENVS_BUILT) == set(runs)
    assert all(issubclass(cls, StorageContract) for cls in runs.values())
