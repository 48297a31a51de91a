"""An in-memory storage backend for tests: shared storage and job data are dicts."""

from __future__ import annotations

import dataclasses
import io
import threading
import zipfile
from dataclasses import dataclass, field
from typing import Any

from ...domain.errors import InvalidInputData, InvalidJobSpec, JobAlreadyExists, JobNotFound, OutputNotFound
from ...domain.model import INPUT_DIR, OUTPUT_DIR, JobKind, Mount, OpParams, OutputFile, OutputListing, StagedData
from ...domain.ports import StagingRequest, ZipStream

LINK = ".chrislink"


@dataclass
class FakeStorage:
    """Shared storage is ``shared`` (path → bytes); a job's input and output are dicts."""

    shared: dict[str, bytes] = field(default_factory=dict)
    incoming: dict[str, dict[str, bytes]] = field(default_factory=dict)
    outgoing: dict[str, dict[str, bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def _files_under(self, prefix: str) -> dict[str, bytes]:
        return {p: b for p, b in self.shared.items() if p == prefix or p.startswith(prefix + "/")}

    def validate(self, jid: str, request: StagingRequest) -> None:
        if not request.input_dirs:
            raise InvalidJobSpec("field is required", field="input_dirs")
        for d in request.input_dirs:
            if ".." in d.split("/") or not self._files_under(d.strip("/")):
                raise InvalidInputData(f"input_dirs: directory not found: {d!r}")

    def stage(self, jid: str, request: StagingRequest) -> StagedData:
        self.validate(jid, request)
        staged: dict[str, bytes] = {}
        for d in request.input_dirs or ():
            base = d.strip("/")
            for path, content in self._files_under(base).items():
                rel = path[len(base) + 1 :]
                if rel.endswith(LINK):
                    target = content.decode().strip()
                    if target.startswith("/") or ".." in target.split("/"):
                        raise InvalidInputData(f"Invalid input path: {target!r}")
                    folder = "/".join([*rel.split("/")[:-1], target.replace("/", "_")]).lstrip("/")
                    for linked, data in self._files_under(target).items():
                        staged[f"{folder}/{linked[len(target) + 1 :]}"] = data
                else:
                    staged[rel] = content
        with self._lock:
            if jid in self.incoming:
                raise JobAlreadyExists(jid)
            self.incoming[jid] = staged
            self.outgoing[jid] = {}
        return StagedData(
            nfiles=len(staged),
            path=f"fake://key-{jid}/incoming",
            mounts=(
                Mount(f"key-{jid}/incoming", INPUT_DIR, read_only=True),
                Mount(f"key-{jid}/outgoing", OUTPUT_DIR, read_only=False),
            ),
        )

    def exists(self, jid: str) -> bool:
        return jid in self.incoming

    def ping(self) -> None:
        pass

    def recover(self) -> list[str]:
        return []  # staging is atomic in memory

    def delete(self, jid: str) -> None:
        with self._lock:
            self.incoming.pop(jid, None)
            self.outgoing.pop(jid, None)

    def output_files(self, jid: str, limit: int) -> tuple[OutputFile, ...]:
        if jid not in self.outgoing:
            raise JobNotFound(jid)
        files = sorted((rel, len(data)) for rel, data in self.outgoing[jid].items() if not rel.endswith(LINK))
        return tuple(OutputFile(rel, size) for rel, size in files[:limit])

    def outputs(self, jid: str, job_output_path: str | None) -> OutputListing | ZipStream:
        if jid not in self.outgoing:
            raise JobNotFound(jid)
        files = {rel: data for rel, data in sorted(self.outgoing[jid].items()) if not rel.endswith(LINK)}
        if job_output_path is not None:
            if not job_output_path.strip("/"):
                raise OutputNotFound("job_output_path: directory not found")
            return OutputListing(job_output_path.strip("/"), tuple(files))
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as archive:
            for rel, data in files.items():
                archive.writestr(rel, data)
        return ZipStream(f"{jid}.zip", iter([buf.getvalue()]))


@dataclass
class FakeJobArea:
    """pfcon 6's ``key-<jid>/`` in memory: the parameters each op job got (JobAreaPort)."""

    storage: FakeStorage
    copy_from_shared: bool = True  # fslink-like: a copy job also mounts the storage root
    outputs_in_key_dir: bool = False  # swift-like: the plugin writes into key-<jid>/outgoing
    params: dict[str, dict[str, Any]] = field(default_factory=dict)  # "<jid>-<kind>" -> params
    removed: list[str] = field(default_factory=list)

    def exists(self, jid: str) -> bool:
        return jid in self.storage.incoming or any(k.startswith(f"{jid}-") for k in self.params)

    def prepare(self, kind: JobKind, params: OpParams) -> None:
        self.params[kind.job_name(params.jid)] = dataclasses.asdict(params)

    def op_mounts(self, kind: JobKind, jid: str) -> tuple[Mount, ...]:
        key = Mount(f"key-{jid}", OUTPUT_DIR, read_only=False)
        if kind is JobKind.COPY and self.copy_from_shared:
            return (key, Mount("", INPUT_DIR, read_only=True))
        return (key,)

    def plugin_mounts(self, jid: str, output_dir: str | None) -> tuple[Mount, ...]:
        incoming = Mount(f"key-{jid}/incoming", INPUT_DIR, read_only=True)
        if self.outputs_in_key_dir:
            return (incoming, Mount(f"key-{jid}/outgoing", OUTPUT_DIR, read_only=False))
        if not output_dir or ".." in output_dir.split("/"):
            raise InvalidInputData(f"output_dir: invalid path {output_dir!r}")
        return (incoming, Mount(output_dir.strip("/"), OUTPUT_DIR, read_only=False))

    def outputs(self, jid: str, job_output_path: str | None) -> OutputListing | ZipStream:
        return self.storage.outputs(jid, job_output_path)

    def remove(self, jid: str) -> None:
        self.removed.append(jid)
        self.storage.delete(jid)
        for name in [k for k in self.params if k.startswith(f"{jid}-")]:
            del self.params[name]
