"""Ports: what the domain needs from the outside world.

Every port is synchronous. Adapters may block (Docker, Kubernetes, Swift, disk);
entrypoints run the use cases in worker threads so an event loop is never blocked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from .model import (
    ComputeCapabilities,
    ContainerJob,
    JobInfo,
    JobKind,
    JobState,
    JobSummary,
    Mount,
    OpParams,
    OutputFile,
    OutputListing,
    Resources,
    StagedData,
)


@runtime_checkable
class ReceivedInput(Protocol):
    """An uploaded input received, checked and stored while its request arrived, before
    the job it belongs to was known (ADR 19). Staging adopts it; whoever holds it when
    the request ends discards it (a no-op once adopted)."""

    @property
    def pending(self) -> bool:
        """Whether ``discard`` has anything left to remove (False once adopted or discarded)."""
        ...

    def discard(self) -> None: ...


@dataclass(frozen=True, slots=True)
class StagingRequest:
    """The input side of a submission as the storage step sees it."""

    upload_path: str | None = None  # a local file holding the uploaded zip
    input_dirs: tuple[str, ...] | None = None
    output_dir: str | None = None
    received: ReceivedInput | None = None  # the uploaded zip, already received (InputReceiverPort)


@dataclass(frozen=True, slots=True)
class ZipStream:
    """A zip archive produced lazily, chunk by chunk, with bounded memory."""

    filename: str
    chunks: Iterator[bytes]


@runtime_checkable
class ComputePort(Protocol):
    """A scheduler that runs each job under its job id as name.

    The core (schedule, info, state, remove, ping) is common to every scheduler; what
    varies between them is declared in ``capabilities`` and enforced by the domain.
    """

    capabilities: ComputeCapabilities

    def check(self, image: str, resources: Resources) -> None:
        """Refuse, without side effects, a job this backend cannot run (image
        absent, unsupported resources). Raises InvalidJobSpec or ImageNotAvailable."""
        ...

    def schedule(self, job: ContainerJob) -> JobInfo:
        """Create and start the job. Raises JobAlreadyExists, ImageNotAvailable,
        ResourceUnavailable, InvalidJobSpec or BackendUnavailable; on any error
        nothing of the job is left on the backend."""
        ...

    def info(self, name: str) -> JobInfo:
        """Raises JobNotFound."""
        ...

    def state(self, name: str, log_tail: int) -> JobState:
        """Info plus the tail of the job's logs. Raises JobNotFound."""
        ...

    def remove(self, name: str) -> None:
        """Stop and remove the job. Raises JobNotFound."""
        ...

    def ping(self) -> None:
        """Cheaply check that the scheduler answers. Raises BackendUnavailable."""
        ...

    def list_jobs(self, instance: str) -> list[JobSummary]:
        """Every job on the scheduler that carries ``JOB_TYPE_LABEL`` and
        ``INSTANCE_LABEL == instance`` (never other workloads), newest first.
        Raises BackendUnavailable."""
        ...

    def cancel(self, name: str) -> JobInfo:
        """Stop the job but keep it: its logs stay readable and from then on (across a
        server restart too) its status is finishedWithError with ``CANCELLED_MESSAGE``.
        A job that already finished is left as it is. Returns the job's info after the
        cancellation. Raises JobNotFound or BackendUnavailable."""
        ...


@runtime_checkable
class TwoPhaseComputePort(Protocol):
    """A scheduler on which a job can be created before its input is staged, and started
    once it is (``schedule`` is ``create`` then ``start``). The domain creates the job
    while the upload is still arriving (ADR 23)."""

    def create(self, job: ContainerJob) -> None:
        """Create the job without starting it: nothing runs. Raises as ``schedule`` does;
        on any error nothing of the job is left on the backend."""
        ...

    def start(self, job: ContainerJob) -> JobInfo:
        """Start a job ``create`` made. Raises as ``schedule`` does; on any error the
        created job is removed."""
        ...


@runtime_checkable
class KnownStatePort(Protocol):
    """A compute adapter that can answer some status queries from memory (a finished job
    seen by a view that the scheduler's event stream keeps current)."""

    def known_state(self, name: str, log_tail: int) -> JobState | None:
        """The job's state when it is known without any I/O, else None (then ``state``
        asks the scheduler). Never blocks: callable from an event loop. Agrees with
        ``state``: never a status the scheduler has not reached."""
        ...


@runtime_checkable
class StoragePort(Protocol):
    """Stages a job's input and reports its output, under ``key-<jid>/``."""

    def validate(self, jid: str, request: StagingRequest) -> None:
        """Check the request without side effects. Raises InvalidFields,
        InvalidJobSpec or InvalidInputData."""
        ...

    def stage(self, jid: str, request: StagingRequest) -> StagedData:
        """Claim ``key-<jid>/`` and stage the input. Raises JobAlreadyExists when
        the job's data exists; on any other error nothing is left behind."""
        ...

    def exists(self, jid: str) -> bool: ...

    def delete(self, jid: str) -> None:
        """Remove the job's private data; never shared input or output dirs."""
        ...

    def outputs(self, jid: str, job_output_path: str | None) -> OutputListing | ZipStream:
        """The job's outputs as a listing or a zip. Raises JobNotFound,
        OutputNotFound or InvalidJobSpec."""
        ...

    def ping(self) -> None:
        """Cheaply check that the store answers and has room. Raises
        BackendUnavailable (or StorageFull)."""
        ...

    def recover(self) -> list[str]:
        """Remove the data of jobs whose staging never finished (the server died
        mid-stage); return their ids. Called once at startup."""
        ...


@runtime_checkable
class OutputFilesPort(Protocol):
    """A storage that keeps a job's output in its private ``key-<jid>/outgoing/`` and can
    list it without side effects (zipfile, swift, s3; the shared-storage modes write
    outputs straight into CUBE's tree, which only the client names)."""

    def output_files(self, jid: str, limit: int) -> tuple[OutputFile, ...]:
        """At most ``limit`` regular files of the job's output, sorted by path. Raises
        JobNotFound when the job has no data."""
        ...


@runtime_checkable
class InputReceiverPort(Protocol):
    """A storage that takes an uploaded input as its bytes arrive (zipfile: the zip is
    validated and extracted while the request body is received)."""

    def receive(self, read: Callable[[int], bytes]) -> ReceivedInput:
        """Read the upload to its end from ``read`` (blocking; b"" at the end), checking
        it as it arrives. Raises InvalidInputData, InputTooLarge or StorageFull, or
        whatever ``read`` raises; on any error nothing is left behind."""
        ...


@runtime_checkable
class ReservedArea(Protocol):
    """A job's data area claimed before its input is there (``InputReservingPort``):
    the job id is taken, the mounts exist (empty), and the area counts as half-staged
    (swept after a crash) until the input is staged into it or it is released."""

    jid: str
    mounts: tuple[Mount, ...]


@runtime_checkable
class InputReservingPort(Protocol):
    """A storage that can claim a job's area before its received upload is staged into it,
    so that the job can be created on the scheduler meanwhile (ADR 23)."""

    def reserve(self, jid: str) -> ReservedArea:
        """Claim ``jid``'s area with its (empty) mount sources. Raises JobAlreadyExists."""
        ...

    def stage_into(self, area: ReservedArea, request: StagingRequest) -> StagedData:
        """Stage the received upload of ``request`` into ``area``; on error the area is
        left for ``release``. Raises as ``stage`` does."""
        ...

    def release(self, area: ReservedArea) -> None:
        """Remove the area and what is in it; idempotent."""
        ...


@runtime_checkable
class JobAreaPort(Protocol):
    """A job's private area ``key-<jid>/`` as pfcon 6's op jobs share it: the server writes
    each op job's parameters there and mounts it into the op job and the plugin job."""

    def exists(self, jid: str) -> bool: ...

    def prepare(self, kind: JobKind, params: OpParams) -> None:
        """Create ``key-<jid>/`` for an op job of ``kind``, owned by the user op jobs run
        as, and write its parameters file (atomically)."""
        ...

    def op_mounts(self, kind: JobKind, jid: str) -> tuple[Mount, ...]:
        """What an op job of ``kind`` sees: ``key-<jid>/`` at the output dir, and for a
        copy from a shared filesystem storeBase itself, read-only, at the input dir."""
        ...

    def plugin_mounts(self, jid: str, output_dir: str | None) -> tuple[Mount, ...]:
        """The mounts of a plugin job whose input a copy job staged. Raises
        InvalidJobSpec or InvalidInputData for an output dir that cannot be used."""
        ...

    def outputs(self, jid: str, job_output_path: str | None) -> OutputListing | ZipStream:
        """pfcon 6's output route: never uploads (that is the upload job's work)."""
        ...

    def remove(self, jid: str) -> None:
        """Remove what is left of ``key-<jid>/`` once its delete job has succeeded."""
        ...


@runtime_checkable
class AuthPort(Protocol):
    def issue_token(self, user: str, password: str) -> str:
        """Raises InvalidCredentials."""
        ...

    def verify_token(self, token: str) -> None:
        """Raises InvalidToken or ExpiredToken."""
        ...
