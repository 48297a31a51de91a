"""In-network POSIX storage: ``STORAGE_ENV=filesystem`` and ``STORAGE_ENV=fslink``.

storeBase is CUBE's own storage root. ``filesystem`` lets the plugin read its input
in place; ``fslink`` copies (hard-links) the input into ``key-<jid>/incoming`` first,
following ChRIS links. In both modes the plugin writes straight into ``output_dir``.
"""

from __future__ import annotations

import abc
import os
import shutil
import stat
from collections.abc import Iterator

from ...domain.model import INPUT_DIR, OUTPUT_DIR, Mount, OutputListing, StagedData
from ...domain.ports import StagingRequest, ZipStream
from .chrislink import MAX_LINK_BYTES, expand_links
from .innetwork import (
    InNetworkRequest,
    collect_inputs,
    existing_dir,
    list_shared_outputs,
    require_in_network_fields,
    run_parallel,
)
from .local import StoreBase, resolve_inside, timestamp


def link_or_copy(src: str, dst: str) -> None:
    """Hard-link ``src`` at ``dst`` (same filesystem), else copy it."""
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    try:
        os.link(src, dst)
    except FileExistsError:
        os.unlink(dst)  # a later input dir wins, as in pfcon's merge
        link_or_copy(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def walk_files(directory: str) -> Iterator[str]:
    """Regular files under ``directory`` (no symlinks followed), as absolute paths."""
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            try:
                if stat.S_ISREG(os.lstat(path).st_mode):
                    yield path
            except FileNotFoundError:
                continue


class _SharedStorage(abc.ABC):
    def __init__(self, storebase: StoreBase, workers: int = 8) -> None:
        self.storebase = storebase
        self.workers = workers

    @property
    def root(self) -> str:
        return self.storebase.root

    def _checked(self, request: StagingRequest) -> InNetworkRequest:
        fields = require_in_network_fields(request)
        for d in fields.input_dirs:
            existing_dir(self.root, d, "input_dirs")
        existing_dir(self.root, fields.output_dir, "output_dir")
        return fields

    def validate(self, jid: str, request: StagingRequest) -> None:
        self._checked(request)

    def recover(self) -> list[str]:
        return self.storebase.recover()

    def ping(self) -> None:
        self.storebase.ping()

    def exists(self, jid: str) -> bool:
        return self.storebase.exists(jid)

    def delete(self, jid: str) -> None:
        self.storebase.delete(jid)  # never the shared input or output dirs

    def outputs(self, jid: str, job_output_path: str | None) -> OutputListing | ZipStream:
        return list_shared_outputs(self.root, job_output_path)

    def stage(self, jid: str, request: StagingRequest) -> StagedData:
        fields = self._checked(request)
        with self.storebase.claimed(jid, with_dirs=False):
            path, nfiles, input_mount = self._fill(jid, fields)
        return StagedData(
            nfiles=nfiles,
            path=path,
            mounts=(
                Mount(input_mount, INPUT_DIR, read_only=True),
                Mount(fields.output_dir, OUTPUT_DIR, read_only=False),
            ),
            timestamp=timestamp(),
        )

    @abc.abstractmethod
    def _fill(self, jid: str, fields: InNetworkRequest) -> tuple[str, int, str]:
        """Fill the job's input; return (data.path, nfiles, input mount source)."""


class FileSystemStorage(_SharedStorage):
    """``filesystem``: the input is read in place.

    One input dir is mounted directly (read-only). Several are merged into
    ``key-<jid>/incoming`` as a tree of hard links (no data is copied), so the plugin
    sees the same merged layout as with zipfile or fslink storage (ADR 0007).
    """

    def _fill(self, jid: str, fields: InNetworkRequest) -> tuple[str, int, str]:
        if len(fields.input_dirs) == 1:
            rel = fields.input_dirs[0]
            path = existing_dir(self.root, rel, "input_dirs")
            return os.path.join(self.root, rel), sum(1 for _ in walk_files(path)), rel
        incoming = self.storebase.incoming(jid)
        os.mkdir(incoming)
        items: dict[str, str] = {}
        for rel in fields.input_dirs:
            base = existing_dir(self.root, rel, "input_dirs")
            for src in walk_files(base):
                items[os.path.relpath(src, base)] = src
        run_parallel(
            [(src, rel) for rel, src in items.items()],
            lambda src, rel: link_or_copy(src, os.path.join(incoming, rel)),
            self.workers,
        )
        return incoming, len(items), f"key-{jid}/incoming"


class _FsSource:
    def __init__(self, root: str) -> None:
        self.root = root
        self.real_root = os.path.realpath(root)

    def list_files(self, path: str) -> Iterator[str]:
        real = resolve_inside(self.root, path, "input_dirs")
        if os.path.isfile(real) and not os.path.islink(os.path.join(self.root, path)):
            yield path
            return
        if not os.path.isdir(real):
            return  # a missing link target is ignored, as pfcon does
        for file_path in walk_files(real):
            yield os.path.relpath(file_path, self.real_root).replace(os.sep, "/")

    def read_link(self, path: str) -> str:
        with open(resolve_inside(self.root, path, "input_dirs"), "rb") as f:
            return f.read(MAX_LINK_BYTES).decode("utf-8", errors="replace").strip()


class FsLinkStorage(_SharedStorage):
    """``fslink``: inputs are hard-linked into ``key-<jid>/incoming``, links followed."""

    def _fill(self, jid: str, fields: InNetworkRequest) -> tuple[str, int, str]:
        incoming = self.storebase.incoming(jid)
        os.mkdir(incoming)
        items = collect_inputs(_FsSource(self.root), fields.input_dirs, fields.output_dir)
        real_root = os.path.realpath(self.root)
        run_parallel(
            items,
            lambda src, rel: link_or_copy(os.path.join(real_root, src), os.path.join(incoming, rel)),
            self.workers,
        )
        nfiles = len(items) - expand_links(incoming)
        return incoming, nfiles, f"key-{jid}/incoming"
