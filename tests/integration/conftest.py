from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

TEST_IMAGE = os.environ.get("PFCON_TEST_IMAGE", "local/pfcon-busybox:1")
PLUGIN_IMAGE = os.environ.get("PFCON_PLUGIN_IMAGE", "local/pl-simpledsapp:1.0.3")


def _require(what: str, why: str) -> None:
    """Skip locally; fail under `make test`, which starts every backend first."""
    if os.environ.get("PFCON_REQUIRE_BACKENDS") == "1":
        pytest.fail(f"{what} is required by this run but unavailable: {why}")
    pytest.skip(f"{what} unavailable: {why}")


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except Exception as e:  # noqa: BLE001
        _require("a Docker engine", str(e))
    try:
        client.images.get(TEST_IMAGE)
    except Exception as e:  # noqa: BLE001
        _require(f"the test image {TEST_IMAGE}", str(e))
    yield client
    client.close()


@pytest.fixture
def no_stray_containers(docker_client: Any) -> Iterator[None]:
    """Fail a test that leaves a job container behind, and clean it up."""
    before = {c.id for c in docker_client.containers.list(all=True)}
    yield
    stray = [c for c in docker_client.containers.list(all=True) if c.id not in before]
    for c in stray:
        c.remove(force=True)
    assert not stray, f"stray containers: {[c.name for c in stray]}"
