"""ChRIS link files (``*.chrislink``): expansion of a job's local input tree.

A link file holds a storage path (relative to the storage root). The linked data is
first fetched under its full path inside the job's input dir; expansion then copies
it next to the link file, in a folder named after the path with '/' replaced by '_',
removes the link file and finally removes the full-path copies (docs/wire-contract.md §10.3).

Unlike pfcon, every target must be a relative path without '..' that resolves inside
the input dir: a link can never read or write outside the job's own data.
"""

from __future__ import annotations

import os
import shutil

from ...domain.errors import InvalidInputData
from .local import LINK_SUFFIX

MAX_LINK_BYTES = 4096


def read_link(path: str) -> str:
    """The normalised storage path a link file points to."""
    with open(path, "rb") as f:
        raw = f.read(MAX_LINK_BYTES + 1)
    if len(raw) > MAX_LINK_BYTES:
        raise InvalidInputData(f"invalid ChRIS link file {os.path.basename(path)!r}: too long")
    try:
        target = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise InvalidInputData(f"invalid ChRIS link file {os.path.basename(path)!r}") from None
    return check_link_target(target)


def check_link_target(target: str) -> str:
    parts = target.rstrip("/").split("/")
    if not target or target.startswith("/") or "\x00" in target or any(p in ("", ".", "..") for p in parts):
        raise InvalidInputData(f"Invalid input path: {target!r}")
    return "/".join(parts)


def _copy_tree(src: str, dst: str) -> None:
    """Hard-link files where possible (same filesystem), copy otherwise; skip symlinks."""
    os.makedirs(dst, exist_ok=True)
    for entry in os.scandir(src):
        target = os.path.join(dst, entry.name)
        if entry.is_symlink():
            continue
        if entry.is_dir(follow_symlinks=False):
            _copy_tree(entry.path, target)
        elif entry.is_file(follow_symlinks=False):
            try:
                os.link(entry.path, target)
            except OSError:
                shutil.copy2(entry.path, target)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root + os.sep)


class _Expander:
    def __init__(self, incoming: str) -> None:
        self.incoming = os.path.realpath(incoming)
        self.expanded_sources: list[str] = []
        self.active: list[str] = []  # sources being expanded right now (recursion path)
        self.linked: set[str] = set()
        self.nlinks = 0

    def under_expanded_source(self, path: str) -> bool:
        return any(_inside(path, src) for src in self.expanded_sources)

    def expand_link(self, link_path: str) -> None:
        rel = read_link(link_path)
        source = os.path.realpath(os.path.join(self.incoming, rel))
        if not _inside(source, self.incoming):
            raise InvalidInputData(f"Invalid input path: {rel!r}")
        if os.path.isfile(source):
            rel = os.path.dirname(rel)
            source = os.path.dirname(source)
            if not rel:
                raise InvalidInputData(f"Invalid input path: {rel!r}")
        if any(_inside(active, source) for active in self.active) or _inside(link_path, source):
            raise InvalidInputData(f"cyclic ChRIS link: {rel!r}")
        destination = os.path.join(os.path.dirname(link_path), rel.replace("/", "_"))
        if not os.path.lexists(destination) and os.path.isdir(source):
            _copy_tree(source, destination)
            self.expanded_sources.append(source)
            self.active.append(source)
            try:
                self.walk(destination)
            finally:
                self.active.pop()
        self.linked.add(rel)
        os.remove(link_path)
        self.nlinks += 1

    def walk(self, directory: str) -> None:
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            if (
                entry.name.endswith(LINK_SUFFIX)
                and entry.is_file(follow_symlinks=False)
                and os.path.exists(entry.path)  # not removed by an earlier expansion
            ):
                self.expand_link(entry.path)
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            if entry.is_dir(follow_symlinks=False) and not self.under_expanded_source(os.path.realpath(entry.path)):
                self.walk(entry.path)

    def remove_fetched_targets(self) -> None:
        for rel in self.linked:
            top = rel.split("/")[0]
            if top in self.linked:
                continue
            path = os.path.join(self.incoming, top)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.lexists(path):
                os.remove(path)


def expand_links(incoming: str) -> int:
    """Expand every link file under ``incoming``; return how many were expanded."""
    expander = _Expander(incoming)
    expander.walk(expander.incoming)
    expander.remove_fetched_targets()
    return expander.nlinks
