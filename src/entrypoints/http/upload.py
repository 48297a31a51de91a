"""An upload handed to a worker thread while it is received (ADR 19).

The event loop receives the body and parses the multipart stream; the bytes of the
``data_file`` part go through a :class:`ChunkPipe` (bounded: the loop waits, without
blocking, when the worker falls behind) to one worker thread, which runs the storage's
``receive(read)`` (zipfile: validate and extract as the bytes arrive). Either side can
stop the other. An error in the worker (a bad or refused archive) stops the writing at
once; the rest of the body is still read and dropped (nothing is written), so that a
client still sending gets the 4xx rather than a reset connection. An error on the
loop's side (client gone, body malformed or too large) aborts the worker, which removes
what it wrote.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread

PIPE_BYTES = 8 * 1024 * 1024  # most bytes waiting for the worker


class UploadAborted(Exception):
    """Raised in the worker when the request ended before the upload did."""


class ConsumerGone(Exception):
    """Raised on the loop's side when the worker stopped reading."""


class ChunkPipe:
    """Chunks of bytes from the event loop to one worker thread, at most ``max_bytes``
    waiting. ``send`` never blocks the loop; ``read`` blocks the worker."""

    def __init__(self, max_bytes: int = PIPE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._cond = threading.Condition(threading.Lock())
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._eof = False
        self._aborted = False
        self._consumer_done = False
        self._space: anyio.Event | None = None

    # -- the event loop's side ------------------------------------------------------------
    async def send(self, chunk: bytes) -> None:
        """Queue ``chunk``; wait while the worker is behind. ConsumerGone once it stopped."""
        with self._cond:
            if self._consumer_done:
                raise ConsumerGone
            self._chunks.append(chunk)
            self._buffered += len(chunk)
            self._cond.notify()
            if self._buffered <= self.max_bytes:
                return
            space = self._space = anyio.Event()
        await space.wait()
        if self._consumer_done:
            raise ConsumerGone

    def close(self) -> None:
        """No more data: ``read`` returns b"" once the queue is drained."""
        with self._cond:
            self._eof = True
            self._cond.notify()

    def abort(self) -> None:
        """The upload will never be complete: ``read`` raises UploadAborted."""
        with self._cond:
            self._aborted = True
            self._chunks.clear()
            self._buffered = 0
            self._cond.notify()

    # -- the worker's side ------------------------------------------------------------------
    def read(self, n: int) -> bytes:
        with self._cond:
            while not self._chunks and not self._aborted and not self._eof:
                self._cond.wait()
            if self._aborted:
                raise UploadAborted
            if not self._chunks:
                return b""
            chunk = self._chunks[0]
            if len(chunk) > n:
                self._chunks[0] = chunk[n:]
                chunk = chunk[:n]
            else:
                self._chunks.popleft()
            self._buffered -= len(chunk)
            wake = None
            if self._space is not None and self._buffered <= self.max_bytes // 2:
                wake, self._space = self._space, None
        if wake is not None:
            anyio.from_thread.run_sync(wake.set)
        return chunk

    def consumer_done(self) -> None:
        """The worker stopped reading (done or failed): the loop must not wait for it."""
        with self._cond:
            self._consumer_done = True
            self._chunks.clear()
            self._buffered = 0
            wake, self._space = self._space, None
        if wake is not None:
            anyio.from_thread.run_sync(wake.set)


class StreamedUpload:
    """One upload: a pipe and the worker thread that runs ``receive(pipe.read)``."""

    def __init__(self, receive: Callable[[Callable[[int], bytes]], Any], limiter: anyio.CapacityLimiter | None) -> None:
        self.receive = receive
        self.limiter = limiter
        self.pipe = ChunkPipe()
        self.result: Any = None
        self.error: BaseException | None = None
        self.closed = False

    async def run(self) -> None:
        """The worker, as a task; never raises (the outcome is kept)."""
        try:
            await anyio.to_thread.run_sync(self._work, limiter=self.limiter)
        except Exception as e:  # noqa: BLE001 - the outcome, raised by outcome()
            if self.error is None:
                self.error = e

    def _work(self) -> None:
        try:
            self.result = self.receive(self.pipe.read)
        except BaseException as e:  # noqa: BLE001 - the outcome, raised by outcome()
            self.error = e
        finally:
            self.pipe.consumer_done()

    async def send(self, data: bytes) -> None:
        """Hand ``data`` on; dropped once the worker has stopped (its outcome says why)."""
        if self.closed:
            return
        try:
            await self.pipe.send(data)
        except ConsumerGone:
            self.closed = True

    def close(self) -> None:
        self.closed = True
        self.pipe.close()

    def abort(self) -> None:
        self.closed = True
        self.pipe.abort()

    def outcome(self) -> Any:
        """The worker's result, once the task has ended; its error raised."""
        if self.error is not None:
            raise self.error
        return self.result
