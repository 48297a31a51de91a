"""The production image (Dockerfile): built offline, runs as non-root, serves CUBE's flow."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from pfconclient.client import Client

from .conftest import TEST_IMAGE
from .server import ROOT, free_port
from .test_e2e_zipfile import descriptors, read_tree, write_tree

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def image(docker_client: Any) -> str:
    result = subprocess.run(
        ["bash", "scripts/build-image.sh"], cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def served(image: str, docker_client: Any, tmp_path_factory: Any) -> Iterator[str]:
    storebase = tmp_path_factory.mktemp("img") / "storeBase"
    storebase.mkdir()
    os.chown(storebase, 10001, 0)
    port = free_port()
    name = f"pfcon-image-{uuid.uuid4().hex[:8]}"
    container = docker_client.containers.run(
        image,
        name=name,
        detach=True,
        network_mode="host",
        environment={
            "HOST": "127.0.0.1", "PORT": str(port), "SECRET_KEY": "image-test-secret-0123456789abcdefgh",
            "PFCON_USER": "pfcon", "PFCON_PASSWORD": "image-test-pw",
            "COMPUTE_VOLUME_TYPE": "host", "STOREBASE": str(storebase),
            "CONTAINER_USER": "10001:",
        },
        group_add=[str(os.stat("/var/run/docker.sock").st_gid)],
        volumes={
            "/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"},
            str(storebase): {"bind": "/var/local/storeBase", "mode": "rw"},
        },
    )
    url = f"http://127.0.0.1:{port}/api/v1/"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(url + "health/", timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            container.reload()
            assert container.status == "running", container.logs().decode()
            assert time.monotonic() < deadline, container.logs().decode()
            time.sleep(0.2)
        yield url
    finally:
        container.remove(force=True)
        for c in docker_client.containers.list(all=True, filters={"label": "org.chrisproject.job_type=plugin"}):
            if c.name.startswith("img-"):
                c.remove(force=True)


def test_runs_as_a_non_root_user(served: str, docker_client: Any) -> None:
    container = next(c for c in docker_client.containers.list() if c.name.startswith("pfcon-image-"))
    assert container.exec_run("id -u").output.decode().strip() == "10001"
    assert container.labels.get("org.chrisproject.role") == "pfcon"


def test_serves_a_whole_job(served: str, tmp_path: Any) -> None:
    client = Client(served, Client.get_auth_token(served + "auth-token/", "pfcon", "image-test-pw"))
    write_tree(tmp_path / "in", {"a.txt": b"a", "sub/b.bin": os.urandom(2048)})
    (tmp_path / "out").mkdir()
    status = client.run_job(f"img-{uuid.uuid4().hex[:8]}", descriptors(image=TEST_IMAGE), str(tmp_path / "in"), str(tmp_path / "out"))
    assert status == "finishedSuccessfully"
    assert read_tree(tmp_path / "out") == read_tree(tmp_path / "in")
