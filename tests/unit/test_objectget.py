"""Whole-object GETs over kept-alive connections (adapters/storage/objectget.py), against a
scripted HTTP server on 127.0.0.1: reuse of connections, retries of what is transient and
of bodies that break off, a 401 renewed once, the store's error code, no retry of a file
that cannot be written, headers asked for each try."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from pfcon.adapters.storage.objectget import ObjectGets, ObjectHTTPError

# One scripted answer: (status, body, how): how is "ok", "short" (Content-Length larger than
# the body sent, then the connection closes) or "close" (the connection closes after it).
Answer = tuple[int, bytes, str]


class Store:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.script: list[Answer] = []  # answers given before the objects, in order
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.peers: set[int] = set()  # client ports seen: one per connection
        self.lock = threading.Lock()
        store = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                with store.lock:
                    store.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                    store.peers.add(self.client_address[1])
                    answer = store.script.pop(0) if store.script else None
                if answer is None:
                    body = store.objects.get(self.path)
                    answer = (
                        (200, body, "ok") if body is not None else (404, b"<Error><Code>NoSuchKey</Code></Error>", "ok")
                    )
                status, body, how = answer
                self.send_response(status)
                self.send_header("Content-Length", str(len(body) + (10 if how == "short" else 0)))
                self.end_headers()
                self.wfile.write(body)
                if how in ("short", "close"):
                    self.wfile.flush()
                    self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def store() -> Iterator[Store]:
    s = Store()
    yield s
    s.close()


def gets(store: Store, retries: int = 3) -> tuple[ObjectGets, list[float]]:
    pauses: list[float] = []
    return ObjectGets(store.url, connect_timeout=5, read_timeout=5, retries=retries, backoff=0.1, max_backoff=1,
                      sleep=pauses.append), pauses  # fmt: skip


def token(value: str = "t1") -> Callable[[str], dict[str, str]]:
    return lambda path: {"X-Auth-Token": value}


def test_objects_are_written_over_one_kept_alive_connection(store: Store, tmp_path: Any) -> None:
    for i in range(5):
        store.objects[f"/c/o{i}"] = os.urandom(3000 + i)
    g, pauses = gets(store)
    for i in range(5):
        assert g.get(f"/c/o{i}", token(), str(tmp_path / f"o{i}")) == 3000 + i
        assert (tmp_path / f"o{i}").read_bytes() == store.objects[f"/c/o{i}"]
    assert len(store.peers) == 1
    assert pauses == []
    assert all(h["x-auth-token"] == "t1" for _, h in store.requests)


def test_a_large_object_streams_whole(store: Store, tmp_path: Any) -> None:
    store.objects["/c/big"] = os.urandom(5 * 1024 * 1024 + 7)
    g, _ = gets(store)
    assert g.get("/c/big", token(), str(tmp_path / "big")) == len(store.objects["/c/big"])
    assert (tmp_path / "big").read_bytes() == store.objects["/c/big"]


def test_a_5xx_is_retried_with_backoff_and_headers_made_again(store: Store, tmp_path: Any) -> None:
    store.objects["/c/a"] = b"abc"
    store.script = [(503, b"<Error><Code>SlowDown</Code></Error>", "ok"), (500, b"", "ok")]
    made: list[str] = []

    def headers(path: str) -> dict[str, str]:
        made.append(path)
        return {"X-Try": str(len(made))}

    g, pauses = gets(store)
    g.get("/c/a", headers, str(tmp_path / "a"))
    assert (tmp_path / "a").read_bytes() == b"abc"
    assert made == ["/c/a"] * 3
    assert [h["x-try"] for _, h in store.requests] == ["1", "2", "3"]
    assert len(pauses) == 2 and 0 < pauses[0] <= 0.1 and pauses[0] < pauses[1] <= 0.2


def test_retries_give_up_with_the_status(store: Store, tmp_path: Any) -> None:
    store.script = [(503, b"<Error><Code>SlowDown</Code></Error>", "ok")] * 3
    g, pauses = gets(store, retries=2)
    with pytest.raises(ObjectHTTPError) as e:
        g.get("/c/a", token(), str(tmp_path / "a"))
    assert (e.value.http_status, e.value.code, str(e.value)) == (503, "SlowDown", "HTTP 503 SlowDown")
    assert len(store.requests) == 3 and len(pauses) == 2


def test_a_missing_object_is_not_retried_and_names_the_code(store: Store, tmp_path: Any) -> None:
    g, pauses = gets(store)
    with pytest.raises(ObjectHTTPError) as e:
        g.get("/c/none", token(), str(tmp_path / "x"))
    assert (e.value.http_status, e.value.code) == (404, "NoSuchKey")
    assert len(store.requests) == 1 and pauses == []
    assert "t1" not in str(e.value)


def test_a_body_that_breaks_off_is_fetched_again_from_the_start(store: Store, tmp_path: Any) -> None:
    store.objects["/c/a"] = b"0123456789" * 100
    store.script = [(200, b"01234", "short")]
    g, pauses = gets(store)
    assert g.get("/c/a", token(), str(tmp_path / "a")) == 1000
    assert (tmp_path / "a").read_bytes() == store.objects["/c/a"]
    assert len(store.requests) == 2 and len(pauses) == 1


def test_an_expired_token_is_renewed_once(store: Store, tmp_path: Any) -> None:
    store.objects["/c/a"] = b"a"
    store.script = [(401, b"", "ok")]
    current = {"token": "old"}
    renewals: list[int] = []

    def renew() -> None:
        renewals.append(1)
        current["token"] = "new"

    g, pauses = gets(store)
    g.get("/c/a", lambda path: {"X-Auth-Token": current["token"]}, str(tmp_path / "a"), renew=renew)
    assert [h["x-auth-token"] for _, h in store.requests] == ["old", "new"]
    assert renewals == [1] and pauses == []
    store.script = [(401, b"", "ok"), (401, b"", "ok")]
    with pytest.raises(ObjectHTTPError) as e:
        g.get("/c/a", lambda path: {"X-Auth-Token": "bad"}, str(tmp_path / "b"), renew=renew)
    assert e.value.http_status == 401 and len(renewals) == 2


def test_a_connection_the_store_closed_while_idle_is_replaced_without_a_try(store: Store, tmp_path: Any) -> None:
    store.objects["/c/a"] = b"a"
    store.script = [(200, b"a", "close")]  # answers, then closes the kept-alive connection
    g, pauses = gets(store, retries=0)
    g.get("/c/a", token(), str(tmp_path / "a"))
    g.get("/c/a", token(), str(tmp_path / "b"))  # no retries allowed: the new connection is not one
    assert (tmp_path / "b").read_bytes() == b"a"
    assert len(store.peers) == 2 and pauses == []


def test_a_file_that_cannot_be_written_is_never_retried(store: Store, tmp_path: Any) -> None:
    store.objects["/c/a"] = b"a"
    g, pauses = gets(store)
    with pytest.raises(FileNotFoundError):
        g.get("/c/a", token(), str(tmp_path / "missing-dir" / "a"))
    assert len(store.requests) == 1 and pauses == []


def test_a_store_that_is_down_raises_after_the_retries(tmp_path: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    pauses: list[float] = []
    g = ObjectGets(f"http://127.0.0.1:{port}", connect_timeout=2, read_timeout=2, retries=2, sleep=pauses.append)
    with pytest.raises(ConnectionRefusedError):
        g.get("/c/a", token(), str(tmp_path / "a"))
    assert len(pauses) == 2
    assert not (tmp_path / "a").exists()


def test_only_http_urls() -> None:
    with pytest.raises(ValueError):
        ObjectGets("ftp://host/x", connect_timeout=1, read_timeout=1, retries=0)


def test_threads_share_the_connections(store: Store, tmp_path: Any) -> None:
    for i in range(200):
        store.objects[f"/c/{i}"] = str(i).encode()
    g, _ = gets(store)

    def work(start: int) -> None:
        for i in range(start, 200, 4):
            g.get(f"/c/{i}", token(), str(tmp_path / str(i)))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all((tmp_path / str(i)).read_bytes() == str(i).encode() for i in range(200))
    assert len(store.peers) <= 4
    g.close()
