"""Black-box: the real server with CONTAINER_ENV=podman, driven by python-pfconclient 3.3.0."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pfconclient.client import Client

from .conftest import PODMAN_HOST_VAR
from .server import Server, start_server
from .test_e2e_zipfile import descriptors, read_tree, write_tree

pytestmark = pytest.mark.podman


@pytest.fixture(scope="module")
def podman_server(podman_client: Any, tmp_path_factory: Any) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("podman")
    storebase = base / "storeBase"
    storebase.mkdir()
    server = start_server(
        str(storebase), str(base / "server.log"), CONTAINER_ENV="podman", DOCKER_HOST=os.environ[PODMAN_HOST_VAR]
    )
    yield server
    server.stop()
    for c in podman_client.containers.list(all=True, filters={"label": "org.chrisproject.job_type=plugin"}):
        if c.name.startswith("pod-"):
            c.remove(force=True)


def test_run_job_on_podman(podman_server: Server, podman_client: Any, tmp_path: Any) -> None:
    client = Client(podman_server.api, podman_server.token())
    assert client.get_server_info()["container_env"] == "docker"  # podman is an alias, as in pfcon
    files = {"a.txt": b"a", "deep/ü.bin": os.urandom(4096)}
    write_tree(tmp_path / "in", files)
    (tmp_path / "out").mkdir()
    job = f"pod-{uuid.uuid4().hex[:10]}"
    status = client.run_job(job, descriptors(), str(tmp_path / "in"), str(tmp_path / "out"))
    assert status == "finishedSuccessfully"
    assert read_tree(tmp_path / "out") == read_tree(tmp_path / "in")
    assert not podman_client.containers.list(all=True, filters={"name": job})
