"""storeBase on a local (or mounted) POSIX filesystem: the pieces every mode shares."""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import itertools
import threading
import os
import shutil
import stat
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass

import structlog

from ...domain.errors import (
    BackendUnavailable,
    InvalidInputData,
    JobAlreadyExists,
    JobNotFound,
)
from ...domain.model import INPUT_DIR, OUTPUT_DIR, Mount, OutputListing, StagedData, path_length_problem
from ...domain.model import OutputFile as DomainOutputFile

log = structlog.get_logger(__name__)

LINK_SUFFIX = ".chrislink"
STAGING_MARKER = ".staging"  # in key-<jid>/ while its input is being staged
CHUNK = 1024 * 1024


def timestamp() -> str:
    """pfcon's ``data.timestamp``: local time, space separator, no zone."""
    return str(datetime.datetime.now())


def normalize_storage_path(path: str, field: str) -> str:
    """A path relative to storeBase, stripped of leading/trailing '/', never escaping it."""
    if "\x00" in path:
        raise InvalidInputData(f"{field}: invalid path {path!r}")
    too_long = path_length_problem(path)
    if too_long:
        raise InvalidInputData(f"{field}: {too_long}")
    stripped = path.strip("/")
    parts = [p for p in stripped.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise InvalidInputData(f"{field}: path must stay inside storeBase: {path!r}")
    return "/".join(parts)


def safe_relative_path(name: str) -> str | None:
    """``name`` as a relative path that cannot escape its base dir, or None.

    None too when a filesystem would refuse it as too long (see ``path_length_problem``).
    """
    if "\x00" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return None
    if path_length_problem(name):
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        return None
    return "/".join(parts)


def resolve_inside(root: str, rel: str, field: str) -> str:
    """Absolute path of ``rel`` under ``root`` after following symlinks; must stay inside."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(real_root, rel))
    if real != real_root and not real.startswith(real_root + os.sep):
        raise InvalidInputData(f"{field}: path must stay inside storeBase: {rel!r}")
    return real


@dataclass(frozen=True, slots=True)
class OutputFile:
    rel: str
    path: str
    size: int


def iter_output_files(root: str) -> Iterator[OutputFile]:
    """Regular files under ``root``, sorted, no symlinks, no ChRIS link files."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            if name.endswith(LINK_SUFFIX):
                continue
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            yield OutputFile(os.path.relpath(path, root).replace(os.sep, "/"), path, st.st_size)


def list_outputs(root: str, job_output_path: str) -> OutputListing:
    return OutputListing(job_output_path, tuple(f.rel for f in iter_output_files(root)))


class _Sink:
    """A write-only, unseekable byte sink that zipfile writes into."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self.size = 0

    def write(self, data: bytes) -> int:
        self._chunks.append(bytes(data))
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        self.size = 0
        return data


def iter_zip(root: str, compression: int = zipfile.ZIP_STORED) -> Iterator[bytes]:
    """Stream a zip of every output file under ``root`` in chunks of about 1 MiB.

    Memory stays bounded whatever the size: each file is read and compressed
    chunk by chunk and the archive uses data descriptors (no seeking back).
    """
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=compression, allowZip64=True) as archive:  # type: ignore[call-overload]
        for entry in iter_output_files(root):
            info = zipfile.ZipInfo.from_file(entry.path, arcname=entry.rel)
            info.compress_type = compression
            try:
                src = open(entry.path, "rb")  # noqa: SIM115
            except FileNotFoundError:
                continue
            with src, archive.open(info, "w", force_zip64=info.file_size > 2**31) as dst:
                while chunk := src.read(CHUNK):
                    dst.write(chunk)
                    if sink.size >= CHUNK:
                        yield sink.take()
            if sink.size >= CHUNK:
                yield sink.take()
    tail = sink.take()
    if tail:
        yield tail


def _force_remove(func, path, _exc_info) -> None:  # type: ignore[no-untyped-def]
    # A job may leave read-only directories behind: make the directory (ours) writable
    # and retry. Files are never chmod-ed: they may be hard links to shared data.
    try:
        os.chmod(os.path.dirname(path), 0o700)
        if os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, 0o700)
        func(path)
    except FileNotFoundError:
        pass


def hold_marker(path: str) -> int:
    """Create ``path/.staging`` locked (``flock``) by this process; return its fd, which
    holds the lock for as long as it is open. Locked before it appears under its name: a
    marker that another process can open is always either held or stale, never in between."""
    pending = os.path.join(path, f"{STAGING_MARKER}.{os.getpid()}.{threading.get_ident()}")
    marker = os.open(pending, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(marker, fcntl.LOCK_EX)
        os.rename(pending, os.path.join(path, STAGING_MARKER))
    except BaseException:
        os.close(marker)
        with contextlib.suppress(OSError):
            os.unlink(pending)
        raise
    return marker


class StoreBase:
    """The directory pfcon sees as storeBase (STOREBASE_MOUNT) and its ``key-<jid>`` dirs."""

    def __init__(self, root: str) -> None:
        self.root = root

    def key_dir(self, jid: str) -> str:
        return os.path.join(self.root, f"key-{jid}")

    def incoming(self, jid: str) -> str:
        return os.path.join(self.key_dir(jid), "incoming")

    def outgoing(self, jid: str) -> str:
        return os.path.join(self.key_dir(jid), "outgoing")

    def claim(self, jid: str) -> str:
        """Create ``key-<jid>/`` atomically; the claim that makes job ids unique.

        A ``key-<jid>/`` left half-staged by a crashed server is removed and claimed anew.
        """
        os.makedirs(self.root, exist_ok=True)
        path = self.key_dir(jid)
        for _ in range(2):
            try:
                os.mkdir(path, 0o755)
                return path
            except FileExistsError:
                if not self.remove_if_unfinished(jid):
                    break
                log.warning("stale_staging_removed", job_id=jid)
        raise JobAlreadyExists(jid)

    @contextlib.contextmanager
    def claimed(self, jid: str, with_dirs: bool = True) -> Iterator[str]:
        """Claim ``key-<jid>/`` (optionally with ``incoming/`` and ``outgoing/``) for
        staging; on any error inside the block everything is removed again.

        While the block runs, ``key-<jid>/.staging`` exists and this process holds an
        exclusive ``flock`` on it; it is removed last, when staging is complete. A
        ``.staging`` that nobody holds is the mark of a crash mid-staging.
        """
        path = self.claim(jid)
        marker = -1
        try:
            marker = hold_marker(path)
            if with_dirs:
                os.mkdir(self.incoming(jid))
                os.mkdir(self.outgoing(jid))
            yield path
            os.unlink(os.path.join(path, STAGING_MARKER))
        except BaseException:
            self.delete(jid)
            raise
        finally:
            if marker >= 0:
                os.close(marker)

    def _stale_marker(self, jid: str) -> int:
        """The fd, locked by this process, of ``key-<jid>/.staging`` if that marker is
        stale (nobody held it: a crash mid-staging), else -1.

        Every staging unlinks its marker before it lets the lock go, and a marker is taken
        for stale only if, once locked, it is still the file linked at that path: a marker
        opened while held, then unlinked and released when its staging completed, is not
        (a concurrent POST of the same id once took a job just staged for a crashed one
        and removed its directory).
        """
        marker = os.path.join(self.key_dir(jid), STAGING_MARKER)
        try:
            fd = os.open(marker, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            return -1
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held, linked = os.fstat(fd), os.stat(marker, follow_symlinks=False)
            if held.st_nlink > 0 and (held.st_dev, held.st_ino) == (linked.st_dev, linked.st_ino):
                return fd
        except OSError:  # BlockingIOError: being staged right now; FileNotFoundError: done
            pass
        os.close(fd)
        return -1

    def unfinished(self, jid: str) -> bool:
        """Whether ``key-<jid>/`` was left half-staged: its marker exists and nobody holds it."""
        fd = self._stale_marker(jid)
        if fd < 0:
            return False
        os.close(fd)
        return True

    def remove_if_unfinished(self, jid: str) -> bool:
        """Remove ``key-<jid>/`` if it was left half-staged; whether it was.

        The stale marker stays locked by this process and is unlinked first, so no one
        else takes the directory for stale while it is removed or claimed anew."""
        fd = self._stale_marker(jid)
        if fd < 0:
            return False
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.key_dir(jid), STAGING_MARKER))
            self.delete(jid)
        finally:
            os.close(fd)
        return True

    def recover(self) -> list[str]:
        """Remove every ``key-<jid>/`` whose staging never finished (a crash); return the ids."""
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        swept = []
        for name in names:
            if name.startswith("key-") and self.remove_if_unfinished(jid := name[len("key-") :]):
                swept.append(jid)
        if swept:
            log.warning("stale_staging_removed", count=len(swept), job_ids=swept[:20])
        return swept

    def exists(self, jid: str) -> bool:
        return os.path.isdir(self.key_dir(jid))

    def ping(self) -> None:
        """storeBase is a directory this server can write to."""
        if not os.path.isdir(self.root):
            raise BackendUnavailable(f"storeBase {self.root} is not a directory")
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise BackendUnavailable(f"storeBase {self.root} is not writable by this server")

    def delete(self, jid: str) -> None:
        path = self.key_dir(jid)
        if os.path.lexists(path):
            try:
                shutil.rmtree(path, onerror=_force_remove)
            except PermissionError as e:
                raise BackendUnavailable(
                    f"cannot remove the data of job '{jid}': {e.strerror} ({e.filename}); job containers "
                    "must run as a user whose files this server may delete (see CONTAINER_USER)"
                ) from None

    def require(self, jid: str) -> str:
        path = self.key_dir(jid)
        if not os.path.isdir(path):
            raise JobNotFound(jid, f"no data for job '{jid}'")
        return path

    def output_files(self, jid: str, limit: int) -> tuple[DomainOutputFile, ...]:
        """At most ``limit`` regular files of ``key-<jid>/outgoing/`` (no symlinks, no
        ChRIS link files), sorted; read-only."""
        self.require(jid)
        files = itertools.islice(iter_output_files(self.outgoing(jid)), limit)
        return tuple(DomainOutputFile(f.rel, f.size) for f in files)

    def staged(self, jid: str, nfiles: int, nbytes: int = -1) -> StagedData:
        """A job staged in its private ``key-<jid>/incoming`` and ``outgoing`` dirs."""
        return StagedData(
            nfiles=nfiles,
            nbytes=nbytes,
            path=self.incoming(jid),
            mounts=(
                Mount(f"key-{jid}/incoming", INPUT_DIR, read_only=True),
                Mount(f"key-{jid}/outgoing", OUTPUT_DIR, read_only=False),
            ),
            timestamp=timestamp(),
        )
