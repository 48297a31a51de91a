from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from pfcon.adapters.compute.fake import FakeCompute
from pfcon.bootstrap import build_container
from pfcon.config import load_settings
from pfcon.entrypoints.http.app import create_app

API = "/api/v1"
USER, PASSWORD = "pfcon", "pfcon1234"


def make_zip(files: dict[str, bytes | str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buf.getvalue()


def job_form(jid: str = "chris-jid-1", **overrides: Any) -> dict[str, Any]:
    form: dict[str, Any] = {
        "jid": jid,
        "entrypoint": ["python3", "/usr/local/bin/simpledsapp"],
        "args": ["--prefix", "lo"],
        "auid": "cube",
        "number_of_workers": "1",
        "cpu_limit": "1000",
        "memory_limit": "200",
        "gpu_limit": "0",
        "image": "local/pfcon-busybox:1",
        "type": "ds",
    }
    form.update(overrides)
    return {k: v for k, v in form.items() if v is not None}


def tree(root: str) -> list[str]:
    """Every path under root (files and dirs), relative, sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            out.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(out)


def spooled_uploads(upload_dir: str) -> list[str]:
    """Upload files left in a spool (each server process's private dir and lock aside)."""
    return [p for p in tree(upload_dir) if not p.startswith("proc-") or "/upload-" in p]


class Api:
    """A TestClient around the real app, with pfcon's auth already done."""

    def __init__(self, client: TestClient[Any], storebase: str, compute: Any, password: str = PASSWORD) -> None:
        self.client = client
        self.storebase = storebase
        self.compute = compute
        r = client.post(f"{API}/auth-token/", json={"pfcon_user": USER, "pfcon_password": password})
        assert r.status_code == 200, r.text
        self.headers = {"Authorization": f"Bearer {r.json()['token']}"}

    def get(self, path: str, **kw: Any) -> Any:
        return self.client.get(API + path, headers=kw.pop("headers", self.headers), **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.client.delete(API + path, headers=kw.pop("headers", self.headers), **kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self.client.post(API + path, headers=kw.pop("headers", self.headers), **kw)

    def submit(self, jid: str = "chris-jid-1", files: dict[str, Any] | None = None, zip_bytes: bytes | None = None, **form: Any) -> Any:
        data = job_form(jid, **form)
        if zip_bytes is None and files is None:
            zip_bytes = make_zip({"data.txt": "hello"})
        upload = files if files is not None else {"data_file": ("data_file", zip_bytes)}
        return self.post("/jobs/", data=data, files=upload or None)


@pytest.fixture
def storebase(tmp_path: Any) -> str:
    path = tmp_path / "storeBase"
    path.mkdir()
    return str(path)


@pytest.fixture
def app_factory(storebase: str, tmp_path: Any) -> Iterator[Callable[..., Api]]:
    clients: list[TestClient[Any]] = []
    upload_dir = tmp_path / "uploads"
    upload_dir.mkdir()

    def factory(compute: Any = None, **env: str) -> Api:
        environ = {
            "APPLICATION_MODE": "dev",
            "COMPUTE_VOLUME_TYPE": "host",
            "STOREBASE": storebase,
            "STOREBASE_MOUNT": storebase,
            "UPLOAD_DIR": str(upload_dir),
            **env,
        }
        compute = compute if compute is not None else FakeCompute()
        app = create_app(build_container(load_settings(environ), compute=compute))
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        return Api(client, storebase, compute, environ.get("PFCON_PASSWORD", PASSWORD))

    yield factory
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def api(app_factory: Callable[..., Api]) -> Api:
    return app_factory()


@pytest.fixture(params=["whole", "streamed", "prepared"])
def body_path(request: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each way a v5 POST body is handled (ADR 26, 19, 23): a small body received whole,
    then its upload received and the job submitted in one worker hop (the default for
    bodies under 256 KiB); the upload received as it arrives; and the job also prepared
    on the scheduler meanwhile (bodies from 256 KiB on)."""
    from pfcon.entrypoints.http import v5

    if request.param != "whole":
        monkeypatch.setattr(v5, "WHOLE_MAX_BYTES", 0)
    if request.param == "prepared":
        monkeypatch.setattr(v5, "PREPARE_MIN_BYTES", 0)
    return str(request.param)


@pytest.fixture
def reset_structlog() -> Any:
    import logging

    import structlog

    root = logging.getLogger()
    handlers = list(root.handlers)
    yield
    structlog.reset_defaults()
    for handler in root.handlers[:]:
        if handler not in handlers:  # configure_logging's handler wrote to the test's stderr
            root.removeHandler(handler)
