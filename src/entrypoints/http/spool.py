"""Where uploads are written while they are received: bounded, and swept after a crash.

Each server process spools into its own directory ``<root>/proc-<pid>-<random>/``
and holds an exclusive ``flock`` on its ``.lock`` file for as long as it lives. At
startup a process removes every sibling directory whose lock it can take: its owner
is dead (killed mid-upload), so nothing in it will ever be used. At run time the
number of uploads in flight is capped (``MAX_UPLOADS`` → 503) and the free space of
the spool's filesystem must stay above a reserve (→ 507), checked as data is written.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator

import anyio
import structlog

from ...domain.errors import ServerBusy, StorageFull

log = structlog.get_logger(__name__)

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def default_root() -> str:
    return os.path.join(tempfile.gettempdir(), f"pfcon-uploads-{os.getuid()}")


class UploadSpool:
    def __init__(self, root: str | None, max_uploads: int, reserve_bytes: int) -> None:
        self.root = root or default_root()
        self.max_uploads = max_uploads
        self.reserve_bytes = reserve_bytes
        self.in_flight = 0
        self.dir: str | None = None
        self._lock_fd: int | None = None
        self._limiter: anyio.CapacityLimiter | None = None

    @property
    def limiter(self) -> anyio.CapacityLimiter:
        """Worker threads for uploads received as they arrive: one per upload slot."""
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(max(1, self.max_uploads))
        return self._limiter

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        """Sweep what dead processes left behind, then claim a private directory."""
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        self.sweep()
        path = os.path.join(self.root, f"proc-{os.getpid()}-{secrets.token_hex(4)}")
        os.mkdir(path, 0o700)
        fd = os.open(os.path.join(path, ".lock"), os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.dir, self._lock_fd = path, fd

    def stop(self) -> None:
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def sweep(self) -> list[str]:
        """Remove the spool directories of processes that are gone; return their names."""
        removed: list[str] = []
        try:
            entries = os.listdir(self.root)
        except FileNotFoundError:
            return removed
        for name in entries:
            path = os.path.join(self.root, name)
            if not name.startswith("proc-") or path == self.dir:
                continue
            if self._owner_alive(path):
                continue
            shutil.rmtree(path, ignore_errors=True)
            removed.append(name)
        if removed:
            log.info("upload_spool_swept", removed=len(removed), root=self.root)
        return removed

    @staticmethod
    def _owner_alive(path: str) -> bool:
        try:
            fd = os.open(os.path.join(path, ".lock"), os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        except OSError:
            return True  # not ours to judge
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    # -- uploads ----------------------------------------------------------------------
    @contextlib.contextmanager
    def slot(self) -> Iterator[UploadSlot]:
        """One upload being received; ServerBusy (503) past ``max_uploads``. Event-loop only.

        The slot bounds bodies still arriving (slow clients, the spool's disk), not the
        work done once a body is in: the caller releases it as soon as the body has been
        received whole (its extraction then waits for a worker thread like any other
        work), and it is released on the way out in any case."""
        if self.in_flight >= self.max_uploads:
            raise ServerBusy(f"too many uploads in flight ({self.max_uploads}, MAX_UPLOADS); retry later")
        self.in_flight += 1
        held = UploadSlot(self)
        try:
            yield held
        finally:
            held.release()

    def new_file(self) -> tuple[int, str]:
        if self.dir is None:
            self.start()
        try:
            return tempfile.mkstemp(prefix="upload-", suffix=".zip", dir=self.dir)
        except OSError as e:
            raise no_space(e) or e from None

    def check_room(self, incoming: int) -> None:
        """StorageFull unless ``incoming`` more bytes leave the reserve free."""
        st = os.statvfs(self.dir or self.root)
        free = st.f_bavail * st.f_frsize
        if free - incoming < self.reserve_bytes:
            raise StorageFull(
                "no room left to receive the upload: "
                f"{free} bytes free, {self.reserve_bytes} reserved (STOREBASE_RESERVE_BYTES)"
            )


class UploadSlot:
    """A slot taken by ``UploadSpool.slot``; ``release`` gives it back once (idempotent)."""

    __slots__ = ("_spool",)

    def __init__(self, spool: UploadSpool) -> None:
        self._spool: UploadSpool | None = spool

    def release(self) -> None:
        if self._spool is not None:
            self._spool.in_flight -= 1
            self._spool = None


def no_space(error: OSError) -> StorageFull | None:
    """The StorageFull that an out-of-space OSError means, or None."""
    if error.errno in NO_SPACE:
        return StorageFull(f"no space left on the server's disk ({error.strerror})")
    return None
