"""The docker SDK client keeps one connection pool for its engine socket (not one per URL)."""

from __future__ import annotations

import docker

from pfcon.adapters.compute.engine_connections import (
    POOL_KEY,
    STREAM_HEADROOM,
    SocketPoolAdapter,
    share_engine_connections,
)

URLS = (
    "http+docker://localhost/v1.41/containers/job-a/json",
    "http+docker://localhost/v1.41/containers/job-b/start",
    "http+docker://localhost/v1.41/containers/job-b/logs?stdout=1&stderr=1&tail=1000",
)


def unix_api(**kwargs: object) -> docker.APIClient:
    # the version is given, so the client makes no request to the (absent) socket
    return docker.APIClient(base_url="unix:///nonexistent/docker.sock", version="1.41", **kwargs)


def test_every_url_of_the_socket_shares_one_pool() -> None:
    api = unix_api()
    assert share_engine_connections(api) is True
    adapter = api.get_adapter(URLS[0])
    assert isinstance(adapter, SocketPoolAdapter)
    pools = {id(adapter.get_connection(url)) for url in URLS}
    assert len(pools) == 1
    assert adapter.socket_path == "/nonexistent/docker.sock"


def test_the_event_stream_does_not_ride_a_kept_alive_connection() -> None:
    api = unix_api()
    share_engine_connections(api)
    adapter = api.get_adapter(URLS[0])
    shared = adapter.get_connection(URLS[0])
    events = "http+docker://localhost/v1.41/events?since=1&until=61&filters=%7B%7D"
    assert adapter.get_connection(events) is not shared


def test_the_pool_has_room_for_the_worker_threads_and_the_streams() -> None:
    api = unix_api(max_pool_size=32)
    share_engine_connections(api)
    pool = api.get_adapter(URLS[0]).get_connection(POOL_KEY)
    assert pool.pool.maxsize == 32 + STREAM_HEADROOM
    assert not pool.block  # past its size it opens another connection, it never waits


def test_sharing_is_idempotent() -> None:
    api = unix_api()
    share_engine_connections(api)
    adapter = api.get_adapter(URLS[0])
    assert share_engine_connections(api) is False
    assert api.get_adapter(URLS[0]) is adapter


def test_an_engine_over_tcp_keeps_its_transport() -> None:
    api = docker.APIClient(base_url="tcp://127.0.0.1:2375", version="1.41")
    before = api.get_adapter("http://127.0.0.1:2375/v1.41/version")
    assert share_engine_connections(api) is False
    assert api.get_adapter("http://127.0.0.1:2375/v1.41/version") is before


def test_a_client_without_a_docker_transport_is_left_alone() -> None:
    class NotDocker:
        pass

    assert share_engine_connections(NotDocker()) is False
