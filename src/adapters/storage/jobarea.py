"""``key-<jid>/`` between pfcon 6's op jobs, on both sides of the op-job boundary.

:class:`JobArea` is the server's side: it writes an op job's parameters file into
``key-<jid>/`` (owned by the user op jobs run as), says what each job mounts, and answers
pfcon 6's output route. :class:`OpJobStoreBase` is the op job's side: storeBase as the op
container sees it, so that the storage adapters the server uses for pfcon 5's in-process
staging (zipfile, filesystem, fslink, swift, ...) run unchanged inside the op job:

* ``key-<jid>/`` is mounted at ``/share/outgoing`` (read-write);
* for a copy from a shared filesystem (fslink), storeBase itself at ``/share/incoming``:
  links are followed and paths resolved inside it, as in the server. Hard links cannot
  cross mounts, so where the scheduler may mount it writable the copy stages through this
  one mount (``/share/incoming/key-<jid>/incoming``) and hard-links like pfcon 5's staging,
  instead of copying every file; the op job has the server's own uid, so never more rights
  on storeBase than the server has.

Where the plugin writes into ``key-<jid>/outgoing`` (object stores), it may not be the op
jobs' user (a root plugin without capabilities on Kubernetes, a uid picked from a
CONTAINER_USER range): ``outgoing`` is made group-writable and setgid (``OUTGOING_MODE``),
owned by the op jobs' group, which the compute adapters give plugin jobs as a supplemental
group; what the plugin creates there stays in that group. ``key-<jid>/`` itself and
``incoming/`` stay 0755.

Parameters files are JSON objects (``job_params.json``, ``upload_params.json``,
``delete_params.json``; docs/wire-contract.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any

import structlog

from ...domain.errors import InvalidInputData, InvalidJobSpec
from ...domain.model import (
    INPUT_DIR,
    OUTPUT_DIR,
    PARAMS_FILES,
    CopyParams,
    DeleteParams,
    JobKind,
    Mount,
    OpParams,
    OutputListing,
    StorageFlow,
    UploadParams,
)
from ...domain.ports import StoragePort, ZipStream
from .innetwork import existing_dir, job_output_path_param, shared_path
from .local import StoreBase, list_outputs

log = structlog.get_logger(__name__)

# ``key-<jid>/outgoing`` where a plugin writes (object stores): the op jobs' user and
# group may write, the plugin through that group (a supplemental group of plugin jobs);
# setgid, so that what the plugin creates belongs to that group too.
OUTGOING_MODE = 0o2775


def make_outgoing(path: str, owner: tuple[int, int] | None = None, group: int | None = None) -> None:
    """Create ``path`` if needed and give it ``OUTGOING_MODE`` whatever the umask, and
    ``owner`` (uid, gid) or else ``group``. Never through a symbolic link."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        uid, gid = owner if owner is not None else (st.st_uid, st.st_gid if group is None else group)
        changed = (st.st_uid, st.st_gid) != (uid, gid)
        if changed:
            os.fchown(fd, uid, gid)
        if changed or stat.S_IMODE(st.st_mode) != OUTGOING_MODE:
            os.fchmod(fd, OUTGOING_MODE)  # after fchown, which may clear setgid
    finally:
        os.close(fd)


def params_document(params: OpParams) -> dict[str, Any]:
    if isinstance(params, CopyParams):
        return {"jid": params.jid, "storage_env": params.storage_env, "input_dirs": list(params.input_dirs),
                "output_dir": params.output_dir}  # fmt: skip
    if isinstance(params, UploadParams):
        return {"jid": params.jid, "job_output_path": params.job_output_path, "storage_env": params.storage_env}
    return {"jid": params.jid}


def _text(doc: Mapping[str, Any], name: str, default: str | None = None) -> str:
    value = doc.get(name, default)
    if not isinstance(value, str):
        raise InvalidInputData(f"parameters: {name!r} must be a string")
    return value


def parse_params(kind: JobKind, doc: Any) -> OpParams:
    """The parameters of an op job of ``kind`` from its JSON document."""
    if not isinstance(doc, dict):
        raise InvalidInputData("parameters: not a JSON object")
    jid = _text(doc, "jid")
    if kind is JobKind.COPY:
        dirs = doc.get("input_dirs") or []
        if not isinstance(dirs, list) or not all(isinstance(d, str) for d in dirs):
            raise InvalidInputData("parameters: 'input_dirs' must be a list of strings")
        return CopyParams(jid, _text(doc, "storage_env"), tuple(dirs), _text(doc, "output_dir"))
    if kind is JobKind.UPLOAD:
        return UploadParams(jid, _text(doc, "storage_env", "swift"), _text(doc, "job_output_path"))
    return DeleteParams(jid)


def read_params(key_dir: str, kind: JobKind) -> OpParams:
    path = os.path.join(key_dir, PARAMS_FILES[kind])
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read(1024 * 1024))
    except FileNotFoundError:
        raise InvalidInputData(f"no {PARAMS_FILES[kind]} in {key_dir}") from None
    except ValueError:
        raise InvalidInputData(f"{PARAMS_FILES[kind]} is not valid JSON") from None
    return parse_params(kind, doc)


class JobArea:
    """The server's side of ``key-<jid>/`` for pfcon 6 (implements JobAreaPort)."""

    def __init__(
        self,
        storebase: StoreBase,
        storage: StoragePort,
        flow: StorageFlow,
        owner: tuple[int, int] | None = None,
        link_copies: bool = True,
    ) -> None:
        self.storebase = storebase
        self.storage = storage
        self.flow = flow
        # A copy from a shared filesystem mounts storeBase writable, to hard-link (see above).
        self.link_copies = link_copies
        # When the server runs as root, op jobs do not: the dirs they write are handed to them.
        self.owner = owner if owner is not None and os.geteuid() == 0 else None
        # The group of the outgoing dir a plugin writes in (a supplemental group of plugin
        # jobs): the op jobs' group, where this server may give it.
        self.group = owner[1] if owner is not None and (self.owner or owner[1] in _own_groups()) else None

    def exists(self, jid: str) -> bool:
        return self.storebase.exists(jid)

    def _own(self, path: str) -> None:
        if self.owner is not None:
            os.chown(path, *self.owner, follow_symlinks=False)

    def _make_outgoing(self, jid: str) -> None:
        """``key-<jid>/outgoing``, where the plugin writes: the op jobs' (``OUTGOING_MODE``)."""
        make_outgoing(self.storebase.outgoing(jid), self.owner, self.group)

    def prepare(self, kind: JobKind, params: OpParams) -> None:
        key = self.storebase.key_dir(params.jid)
        os.makedirs(self.storebase.root, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(key, 0o755)
        self._own(key)
        if kind is JobKind.COPY and self.flow.outputs_in_key_dir:
            self._make_outgoing(params.jid)
        fd, tmp = tempfile.mkstemp(prefix=".params-", dir=key)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(params_document(params), f)
            os.chmod(tmp, 0o644)
            self._own(tmp)
            os.replace(tmp, os.path.join(key, PARAMS_FILES[kind]))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def op_mounts(self, kind: JobKind, jid: str) -> tuple[Mount, ...]:
        key = Mount(f"key-{jid}", OUTPUT_DIR, read_only=False)
        if kind is JobKind.COPY and not self.flow.outputs_in_key_dir:  # fslink: links into storeBase
            return (key, Mount("", INPUT_DIR, read_only=not self.link_copies))
        return (key,)

    def plugin_mounts(self, jid: str, output_dir: str | None) -> tuple[Mount, ...]:
        self.storebase.require(jid)
        incoming = Mount(f"key-{jid}/incoming", INPUT_DIR, read_only=True)
        if self.flow.outputs_in_key_dir:
            self._make_outgoing(jid)
            return (incoming, Mount(f"key-{jid}/outgoing", OUTPUT_DIR, read_only=False))
        if output_dir is None:
            raise InvalidJobSpec("field is required", field="output_dir")
        rel = shared_path(output_dir, "output_dir")
        existing_dir(self.storebase.root, rel, "output_dir")
        return (incoming, Mount(rel, OUTPUT_DIR, read_only=False))

    def outputs(self, jid: str, job_output_path: str | None) -> OutputListing | ZipStream:
        if self.flow.outputs_in_key_dir and job_output_path is not None:
            # The outputs the plugin left in key-<jid>/outgoing, named as the upload job
            # publishes them: listing only, never an upload (pfcon 6).
            self.storebase.require(jid)
            prefix = job_output_path_param(job_output_path)
            if not prefix:
                raise InvalidJobSpec("must name a path under the storage root", field="job_output_path")
            outgoing = self.storebase.outgoing(jid)
            os.makedirs(outgoing, exist_ok=True)
            return list_outputs(outgoing, prefix)
        return self.storage.outputs(jid, job_output_path)

    def remove(self, jid: str) -> None:
        self.storebase.delete(jid)


def _own_groups() -> set[int]:
    return {os.getegid(), *os.getgroups()}


def _remove(path: str) -> list[str]:
    """Remove ``path`` bottom-up; return what could not be removed (no permission)."""
    failed: list[str] = []
    if os.path.isdir(path) and not os.path.islink(path):
        for entry in os.scandir(path):
            failed += _remove(entry.path)
        try:
            os.rmdir(path)
        except FileNotFoundError:
            pass
        except OSError:
            if not failed:
                failed.append(path)
        return failed
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except PermissionError:
        failed.append(path)
    return failed


class OpJobStoreBase(StoreBase):
    """storeBase as an op job sees it: its own ``key-<jid>/`` at ``key_dir`` and, for a
    copy from a shared filesystem, storeBase read-only at ``shared_root``.

    Staging here never claims ``key-<jid>/`` (the server made it): it replaces what an
    earlier, failed attempt left in ``incoming/`` and keeps ``outgoing/``. No staging marker
    is written: a server restarting meanwhile has nothing to sweep, the op job's status
    is the truth.
    """

    def __init__(self, key_dir: str, shared_root: str | None = None) -> None:
        super().__init__(shared_root or key_dir)
        self._key = key_dir
        self._shared_root = shared_root
        self._staging_key: str | None = None
        self.not_removed: list[str] = []

    def key_dir(self, jid: str) -> str:
        if self._staging_key is None:
            self._staging_key = self._key
            same = os.path.join(self._shared_root, f"key-{jid}") if self._shared_root else None
            with contextlib.suppress(OSError):
                if same and os.path.samefile(same, self._key) and os.access(same, os.W_OK):
                    self._staging_key = same  # key-<jid>/ seen through storeBase's own mount
        return self._staging_key

    def exists(self, jid: str) -> bool:
        return os.path.isdir(self._key)

    def unfinished(self, jid: str) -> bool:
        return False

    def remove_if_unfinished(self, jid: str) -> bool:
        return False

    def recover(self) -> list[str]:
        return []

    def claim(self, jid: str) -> str:
        return self._key

    @contextlib.contextmanager
    def claimed(self, jid: str, with_dirs: bool = True) -> Iterator[str]:
        incoming = self.incoming(jid)
        if os.path.lexists(incoming):
            shutil.rmtree(incoming)
        try:
            if with_dirs:  # an object store's copy: the plugin writes into outgoing/
                os.mkdir(incoming)
                make_outgoing(self.outgoing(jid))
            yield self._key
        except BaseException:
            shutil.rmtree(incoming, ignore_errors=True)
            raise

    def delete(self, jid: str) -> None:
        """Empty ``key-<jid>/`` (a mount point: the dir itself stays, the server removes
        it). What this user may not remove (files a plugin running as another user
        left) is recorded in ``not_removed``; the server removes it after the job."""
        self.not_removed = []
        for entry in os.scandir(self._key):
            self.not_removed += _remove(entry.path)
