"""Idle HTTP/1.1 connections kept for reuse, shared by threads (the engine's direct calls,
ADR 25; the object stores' GETs, ADR 27).

A connection is taken with ``checkout`` (an idle one the peer has not closed, else a new
one, and whether it was reused: a request that fails on a reused connection the peer
closed as it was taken can be sent again) and given back with ``checkin`` once its answer
has been read whole; at most ``max_idle`` are kept.
"""

from __future__ import annotations

import http.client
import select
import threading
from collections.abc import Callable

# How a request sent over a kept-alive connection the peer has closed fails.
CLOSED = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


def dropped(conn: http.client.HTTPConnection) -> bool:
    """Whether an idle connection was closed by the peer (or has unread bytes, which a
    finished exchange never leaves): it is not reused."""
    sock = conn.sock
    if sock is None:
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


class IdleConnections:
    def __init__(self, new: Callable[[], http.client.HTTPConnection], max_idle: int) -> None:
        self._new = new
        self.max_idle = max_idle
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def checkout(self) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if not dropped(conn):
                    return conn, True
                conn.close()
        return self._new(), False

    def checkin(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < self.max_idle:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
