"""What the in-network storage modes share: path rules, link-following fetch, listings.

In-network, pfcon and CUBE share storage: ``input_dirs`` and ``output_dir`` are paths
relative to the storage root (storeBase for a POSIX filesystem, the container for
Swift). They are normalised as pfcon does (leading and trailing '/' stripped, so an
"absolute" path is read relative to the root) and, unlike pfcon, must never escape
the root nor reach into a job's private ``key-<jid>/`` area.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import structlog

from ...domain.errors import InvalidInputData, InvalidJobSpec, OutputNotFound
from ...domain.model import OutputListing
from ...domain.ports import StagingRequest
from .chrislink import check_link_target
from .local import LINK_SUFFIX, list_outputs, normalize_storage_path, resolve_inside

log = structlog.get_logger(__name__)


def shared_path(path: str, field: str) -> str:
    """A normalised storage path that names something under the root, not a job's area."""
    rel = normalize_storage_path(path, field)
    if not rel:
        raise InvalidInputData(f"{field}: must name a directory under the storage root, got {path!r}")
    if rel.split("/")[0].startswith("key-"):
        raise InvalidInputData(f"{field}: may not point into a job's private data: {path!r}")
    return rel


@dataclass(frozen=True, slots=True)
class InNetworkRequest:
    input_dirs: tuple[str, ...]
    output_dir: str


def require_in_network_fields(request: StagingRequest) -> InNetworkRequest:
    if not request.input_dirs:
        raise InvalidJobSpec("field is required", field="input_dirs")
    if request.output_dir is None:
        raise InvalidJobSpec("field is required", field="output_dir")
    inputs = tuple(dict.fromkeys(shared_path(d, "input_dirs") for d in request.input_dirs))
    return InNetworkRequest(inputs, shared_path(request.output_dir, "output_dir"))


def existing_dir(root: str, rel: str, field: str) -> str:
    """The real path of directory ``rel`` under ``root``; 400 if missing or escaping."""
    path = resolve_inside(root, rel, field)
    if not os.path.isdir(path):
        raise InvalidInputData(f"{field}: directory not found: {rel!r}")
    real_rel = os.path.relpath(path, os.path.realpath(root)).replace(os.sep, "/")
    if real_rel.split("/")[0].startswith("key-"):
        raise InvalidInputData(f"{field}: may not point into a job's private data: {rel!r}")
    return path


def job_output_path_param(job_output_path: str | None) -> str:
    if job_output_path is None:
        raise InvalidJobSpec("query parameter is required", field="job_output_path")
    # The same rules as output_dir: a directory under the root, never the root itself
    # nor a job's private key-<jid>/ (listing removes link files: it must not reach them).
    return shared_path(job_output_path, "job_output_path")


def list_shared_outputs(root: str, job_output_path: str | None) -> OutputListing:
    """JSON listing of a shared output dir; plugin-written link files are removed.

    Only CUBE may author ChRIS links: a ``*.chrislink`` written by a plugin into its
    output would let a later job read another user's data (pfcon issue #175).
    """
    rel = job_output_path_param(job_output_path)
    path = resolve_inside(root, rel, "job_output_path")
    if not os.path.isdir(path):
        raise OutputNotFound(f"job_output_path: directory not found: {rel!r}")
    existing_dir(root, rel, "job_output_path")  # not a key-<jid>/ reached through a symlink
    remove_link_files(path)
    return list_outputs(path, rel)


def remove_link_files(path: str) -> None:
    for dirpath, _, filenames in os.walk(path, followlinks=False):
        for name in filenames:
            if name.endswith(LINK_SUFFIX):
                target = os.path.join(dirpath, name)
                log.warning("removed_plugin_link_file", path=os.path.relpath(target, path))
                with contextlib.suppress(FileNotFoundError):
                    os.remove(target)


class LinkSource(Protocol):
    """Shared storage as the link-following fetch sees it."""

    def list_files(self, path: str) -> Iterable[str]:
        """Storage paths of the files under directory ``path`` (or ``path`` itself if a file)."""
        ...

    def read_link(self, path: str) -> str: ...


def _within(path: str, base: str) -> bool:
    return path == base or path.startswith(base + "/")


def collect_inputs(source: LinkSource, input_dirs: Sequence[str], job_output_path: str) -> list[tuple[str, str]]:
    """Every (storage path, local relative path) to fetch, following ChRIS links (docs/wire-contract.md §10.2).

    Files under an input dir land relative to it; files reached through a link keep
    their full storage path (link expansion then moves them next to the link). A link
    may not point to the output dir or one of its ancestors, nor outside the root.
    """
    planned: dict[str, str] = {}
    for input_dir in input_dirs:
        visited: list[str] = []
        stack = [input_dir]
        while stack:
            path = stack.pop()
            if any(_within(path, v) for v in visited):
                continue
            visited.append(path)
            for file_path in source.list_files(path):
                if file_path.endswith(LINK_SUFFIX):
                    target = check_link_target(source.read_link(file_path))
                    if _within(job_output_path, target):
                        raise InvalidInputData(f"Invalid input path: {target!r}")
                    stack.append(target)
                if file_path in planned:
                    continue
                if file_path == input_dir:  # an input "dir" that is a single file
                    planned[file_path] = os.path.basename(file_path)
                elif _within(file_path, input_dir):
                    planned[file_path] = file_path[len(input_dir) + 1 :]
                else:
                    planned[file_path] = file_path
    return list(planned.items())


def run_parallel(
    items: Sequence[tuple[str, str]], work: Callable[[str, str], None], workers: int, batch: int = 256
) -> None:
    """Apply ``work`` to every item with a bounded pool; the first error wins.

    Items go to the threads in batches, so cheap per-file work (a hard link) is not
    drowned in scheduling overhead while slow work (a network transfer) still overlaps.
    """
    if len(items) <= batch or workers <= 1:
        for src, rel in items:
            work(src, rel)
        return

    def run_batch(start: int) -> None:
        for src, rel in items[start : start + batch]:
            work(src, rel)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="staging") as pool:
        for _ in pool.map(run_batch, range(0, len(items), batch)):
            pass
