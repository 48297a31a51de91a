"""pfcon 5's job lifecycle (``/api/v1/jobs/``) on the use cases of :mod:`.operations`,
server info and readiness, and authentication."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from .errors import (
    DomainError,
    ExpiredToken,
    InvalidToken,
    JobNotFound,
    MalformedAuthHeader,
    MissingToken,
)
from .model import (
    BackendHealth,
    ContainerJob,
    JobKind,
    JobSpec,
    JobInfo,
    JobState,
    JobSummary,
    OutputFile,
    OutputListing,
    ServerInfo,
    SubmittedJob,
    job_id_problem,
)
from .operations import CopyInput, DeleteData, JobOptions, RunPlugin, spec_problems
from .ports import (
    AuthPort,
    ComputePort,
    InputReceiverPort,
    InputReservingPort,
    KnownStatePort,
    OutputFilesPort,
    ReceivedInput,
    ReservedArea,
    StagingRequest,
    StoragePort,
    TwoPhaseComputePort,
    ZipStream,
)

__all__ = ["AuthService", "JobOptions", "JobService", "PreparedJob", "spec_problems"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PreparedJob:
    """A job created on the scheduler (not started) over its reserved, still empty data
    area, while its input is being received (``JobService.prepare``, ADR 23)."""

    spec: JobSpec
    job: ContainerJob
    area: ReservedArea


class JobService:
    """pfcon 5's job lifecycle: submit (stage in-process, then run), status, outputs,
    delete. Independent of any transport or backend."""

    def __init__(
        self,
        compute: ComputePort,
        storage: StoragePort,
        server_info: ServerInfo,
        options: JobOptions | None = None,
    ) -> None:
        self.compute = compute
        self.storage = storage
        self._server_info = server_info
        self.options = options or JobOptions()
        self.copy_input = CopyInput(storage)
        self.run_plugin = RunPlugin(compute, self.options, server_info.container_env)
        self.delete_data = DeleteData(storage)
        self._known_state = compute.known_state if isinstance(compute, KnownStatePort) else None

    def server_info(self) -> ServerInfo:
        return self._server_info

    def recover(self) -> list[str]:
        """Clean up after a crash: job data whose staging never finished is removed, and
        so is the job of that id on the scheduler, which cannot have been started (a job
        created while its upload arrived, ADR 23; staging ends before any start)."""
        swept = self.storage.recover()
        if swept and self.prepares:
            for jid in swept:
                try:
                    self.compute.remove(JobKind.PLUGIN.job_name(jid))
                except JobNotFound:
                    pass
                except DomainError as e:  # the scheduler is down: the data is gone all the same
                    log.warning("job of a half-staged id not removed", extra={"job_id": jid, "reason": e.message})
        return swept

    def readiness(self) -> tuple[BackendHealth, ...]:
        """Whether each backend answers now (pfcon's ``health/`` says nothing of this)."""
        info = self._server_info
        checks = (("compute", info.container_env, self.compute), ("storage", info.storage_env, self.storage))
        return tuple(self._probe(kind, name, port) for kind, name, port in checks)

    @staticmethod
    def _probe(kind: str, name: str, port: ComputePort | StoragePort) -> BackendHealth:
        try:
            port.ping()
        except DomainError as e:
            return BackendHealth(kind, name, ok=False, message=e.message)
        return BackendHealth(kind, name, ok=True)

    @property
    def receives_input(self) -> bool:
        """Whether the storage takes an upload as it arrives (``receive_input``)."""
        return isinstance(self.storage, InputReceiverPort)

    def receive_input(self, read: Callable[[int], bytes]) -> ReceivedInput:
        """Receive an uploaded input while it arrives, before its job is known; staging
        (``submit``) adopts it through ``StagingRequest.received``."""
        if not isinstance(self.storage, InputReceiverPort):
            raise TypeError("this storage does not receive uploads")
        return self.storage.receive(read)

    def submit(self, spec: JobSpec, request: StagingRequest) -> SubmittedJob:
        """Stage the input in-process, then run the plugin on it (pfcon 5's POST)."""
        self.run_plugin.check(spec)
        self.copy_input.check(spec.jid, request)
        # Uniqueness: staging claims key-<jid>/ atomically, and the scheduler refuses a
        # second object of the same name (then the staged data is rolled back).
        data = self.copy_input(spec.jid, request)
        try:
            info = self.run_plugin(spec, data.mounts)
        except BaseException:
            try:
                self.delete_data(spec.jid)  # leave nothing behind
            except Exception:  # the scheduling error is the one to report
                log.exception("rollback of job data failed", extra={"job_id": spec.jid})
            raise
        return SubmittedJob(data=data, info=info)

    @property
    def prepares(self) -> bool:
        """Whether a job can be created while its input is still arriving (``prepare``):
        a two-phase scheduler and a storage that reserves areas for received uploads."""
        return isinstance(self.compute, TwoPhaseComputePort) and isinstance(self.storage, InputReservingPort)

    def prepare(self, spec: JobSpec) -> PreparedJob:
        """The first half of ``submit`` for an input still being received: the job is
        checked, its area reserved (the job id claimed, the mount sources made) and the
        job created on the scheduler, not started. Then ``submit_prepared`` with the
        received input, or ``abandon``. Raises what ``submit`` raises; on error nothing
        is left behind."""
        compute, storage = self.compute, self.storage
        if not isinstance(compute, TwoPhaseComputePort) or not isinstance(storage, InputReservingPort):
            raise TypeError("this scheduler or storage cannot prepare jobs")
        self.run_plugin.check(spec)
        area = storage.reserve(spec.jid)  # JobAlreadyExists: the id is taken
        job = self.run_plugin.container(spec, area.mounts)
        try:
            compute.create(job)
        except BaseException:
            storage.release(area)
            raise
        return PreparedJob(spec, job, area)

    def submit_prepared(self, prepared: PreparedJob, request: StagingRequest) -> SubmittedJob:
        """The second half: stage the received input into the prepared job's area, then
        start it. On error the job and its data are removed (``abandon``)."""
        compute, storage = self.compute, self.storage
        assert isinstance(compute, TwoPhaseComputePort) and isinstance(storage, InputReservingPort)
        try:
            self.copy_input.check(prepared.spec.jid, request)
            data = storage.stage_into(prepared.area, request)
            info = compute.start(prepared.job)
        except BaseException:
            try:
                self.abandon(prepared)
            except Exception:  # the staging or start error is the one to report
                log.exception("rollback of a prepared job failed", extra={"job_id": prepared.spec.jid})
            raise
        return SubmittedJob(data=data, info=info)

    def abandon(self, prepared: PreparedJob) -> None:
        """Remove a prepared job that will not run, and its area."""
        storage = self.storage
        assert isinstance(storage, InputReservingPort)
        try:
            self.compute.remove(prepared.job.name)
        except JobNotFound:
            pass
        finally:
            storage.release(prepared.area)

    def status(self, jid: str) -> JobState:
        self._require_valid_id(jid)
        return self.compute.state(JobKind.PLUGIN.job_name(jid), self.options.log_tail)

    def known_status(self, name: str) -> JobState | None:
        """The state of the scheduler object ``name`` when the compute adapter knows it
        without I/O (KnownStatePort), else None: then ``status`` asks the scheduler.
        Never blocks, so an entrypoint can call it on its event loop."""
        known = self._known_state
        return known(name, self.options.log_tail) if known is not None else None

    def list_jobs(self) -> list[JobSummary]:
        """Every job this server instance created, newest first (the operator's view)."""
        return self.compute.list_jobs(self.options.instance)

    def cancel(self, jid: str) -> JobInfo:
        """Stop a job's plugin but keep it, its data and its logs: its status becomes
        finishedWithError, "cancelled" (DELETE keeps pfcon's meaning: remove all)."""
        self._require_valid_id(jid)
        return self.compute.cancel(JobKind.PLUGIN.job_name(jid))

    def outputs(self, jid: str, job_output_path: str | None) -> OutputListing | ZipStream:
        """pfcon 5's output route; with object stores and a path, this is the upload."""
        self._require_valid_id(jid)
        return self.storage.outputs(jid, job_output_path)

    def output_files(self, jid: str, limit: int) -> tuple[OutputFile, ...] | None:
        """The operator's view of a job's output: at most ``limit`` files, or None when
        this storage does not keep outputs where the server can list them."""
        self._require_valid_id(jid)
        if not isinstance(self.storage, OutputFilesPort):
            return None
        return self.storage.output_files(jid, limit)

    def delete(self, jid: str) -> None:
        self._require_valid_id(jid)
        found = False
        try:
            if self.options.remove_jobs:
                self.compute.remove(jid)
            else:
                self.compute.info(jid)
            found = True
        except JobNotFound:
            pass
        if self.storage.exists(jid):
            self.delete_data(jid)
            found = True
        if not found:
            raise JobNotFound(jid)

    @staticmethod
    def _require_valid_id(jid: str) -> None:
        # No job can exist under an id the submit step would have refused.
        if job_id_problem(jid):
            raise JobNotFound(jid)


class AuthService:
    """pfcon's login and bearer-token rules on top of a token port."""

    def __init__(self, tokens: AuthPort) -> None:
        self.tokens = tokens

    def login(self, user: str, password: str) -> str:
        return self.tokens.issue_token(user, password)

    def authorize(self, header: str | None) -> None:
        if not header:
            raise MissingToken("Missing authorization header.")
        if not header.startswith("Bearer "):
            raise MalformedAuthHeader("Invalid authorization header.")
        token = header.split(" ")[1]
        if not token:
            raise InvalidToken("Invalid authorization token.")
        try:
            self.tokens.verify_token(token)
        except ExpiredToken:
            raise ExpiredToken("Expired authorization token.") from None
        except InvalidToken:
            raise InvalidToken("Invalid authorization token.") from None
