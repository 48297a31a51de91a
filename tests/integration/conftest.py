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


PODMAN_HOST_VAR = "PFCON_PODMAN_HOST"


@pytest.fixture(scope="session")
def podman_client() -> Iterator[Any]:
    import docker

    host = os.environ.get(PODMAN_HOST_VAR)
    if not host:
        _require("a Podman service", f"{PODMAN_HOST_VAR} is not set (see scripts/podman-engine.sh)")
    try:
        client = docker.DockerClient(base_url=host)
        client.ping()
        version = client.version()
    except Exception as e:  # noqa: BLE001
        _require("a Podman service", f"{PODMAN_HOST_VAR}={host}: {e}")
    components = [c.get("Name") for c in version.get("Components") or ()]
    if "Podman Engine" not in components:
        _require("a Podman service", f"{PODMAN_HOST_VAR}={host} is not Podman (components: {components})")
    try:
        client.api.inspect_image(TEST_IMAGE)
    except Exception as e:  # noqa: BLE001
        _require(f"the test image {TEST_IMAGE} in Podman's store", str(e))
    yield client
    client.close()


@pytest.fixture(
    scope="module", params=["docker", pytest.param("podman", marks=pytest.mark.podman)]
)
def engine(request: Any) -> Any:
    """A Docker-API client for each engine the Docker adapter supports."""
    return request.getfixturevalue(f"{request.param}_client")


def _no_stray(client: Any) -> Iterator[None]:
    before = {c.id for c in client.containers.list(all=True)}
    yield
    stray = [
        c
        for c in client.containers.list(all=True)
        if c.id not in before and "io.kubernetes.pod.name" not in (c.labels or {})  # the kubelet's, not ours
    ]
    for c in stray:
        c.remove(force=True)
    assert not stray, f"stray containers: {[c.name for c in stray]}"


@pytest.fixture
def no_stray_containers(docker_client: Any) -> Iterator[None]:
    """Fail a test that leaves a job container behind (Docker), and clean it up."""
    yield from _no_stray(docker_client)


@pytest.fixture
def no_stray_engine_containers(engine: Any) -> Iterator[None]:
    """The same, on the engine under test."""
    yield from _no_stray(engine)
