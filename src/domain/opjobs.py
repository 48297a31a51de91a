"""pfcon 6's client-managed jobs: copy, plugin, upload and delete, one by one.

The client (CUBE) orchestrates copy → plugin → (upload) → delete, then removes each
scheduler object. Copy, upload and delete are *op jobs*: containers of this server's own
image (``OpJobOptions.image``) named ``<jid>-copy``, ``<jid>-upload`` and ``<jid>-delete``,
whose command runs :class:`OpWorker` — the same use cases (:mod:`.operations`) and storage
adapters pfcon 5's in-process staging uses. Nothing lives in this process: the scheduler
objects and ``key-<jid>/`` are the whole state, so a restart loses nothing.

Every POST is idempotent per job id: an existing job that runs or succeeded is answered as
it is (logs included), a failed or undefined one is replaced. The guards refuse an
operation whose prerequisite has not finished (409, pfcon's messages). Details and the
differences from pfcon 6 are in docs/wire-contract.md.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from .errors import (
    BackendUnavailable,
    ImageNotAvailable,
    InvalidFields,
    InvalidJobSpec,
    JobAlreadyExists,
    JobConflict,
    JobNotFound,
)
from .model import (
    DEFAULT_INSTANCE,
    INSTANCE_LABEL,
    INPUT_DIR,
    JOB_TYPE_LABEL,
    OUTPUT_DIR,
    ContainerJob,
    CopyParams,
    DeleteParams,
    JobInfo,
    JobKind,
    JobSpec,
    JobState,
    JobStatus,
    OpParams,
    OutputListing,
    Resources,
    StagedData,
    StorageFlow,
    UploadParams,
    op_job_id_problem,
)
from .operations import CopyInput, DeleteData, UploadOutput, bound_problem
from .ports import JobAreaPort, StagingRequest, StoragePort, ZipStream
from .services import JobService

log = logging.getLogger(__name__)

_RESTARTABLE = frozenset({JobStatus.FINISHED_WITH_ERROR, JobStatus.UNDEFINED})
_ACTIVE = frozenset({JobStatus.NOT_STARTED, JobStatus.STARTED})


@dataclass(frozen=True, slots=True)
class OpJobOptions:
    """How op jobs run (from configuration)."""

    image: str  # PFCON_OP_IMAGE: this project's image
    command: tuple[str, ...] = ("pfcon", "op")  # + <kind> /share/outgoing
    run_as: tuple[int, int] | None = None  # the owner of key-<jid>/; never root
    store_env: tuple[str, ...] = ()  # object-store credentials: copy and upload jobs only
    instance: str = DEFAULT_INSTANCE  # INSTANCE_LABEL of every op job


@dataclass(frozen=True, slots=True)
class OpResult:
    """What a pfcon 6 POST answers: the job's compute object (with its logs when the job
    already existed) and, for a plugin staged in-process, its data."""

    info: JobInfo
    logs: str = ""
    data: StagedData | None = None


def skipped(kind: JobKind, jid: str) -> JobInfo:
    """The synthetic job of an operation this storage mode does not need."""
    return JobInfo(
        name=jid, image="", cmd="", status=JobStatus.FINISHED_SUCCESSFULLY, message=f"{kind.value}Skipped", timestamp=""
    )


def op_resources(cpu_limit: int, memory_limit: int) -> Resources:
    problems = {
        name: why
        for name, value in (("cpu_limit", cpu_limit), ("memory_limit", memory_limit))
        if (why := bound_problem(name, value))
    }
    if problems:
        raise InvalidFields(problems)
    return Resources(number_of_workers=1, cpu_limit=cpu_limit, memory_limit=memory_limit, gpu_limit=0)


class OpJobService:
    """pfcon 6's routes as use cases: schedule and observe the four kinds of jobs."""

    def __init__(
        self, jobs: JobService, area: JobAreaPort, flow: StorageFlow, options: OpJobOptions, storage_env: str
    ) -> None:
        self.jobs = jobs
        self.compute = jobs.compute
        self.area = area
        self.flow = flow
        self.options = options
        self.storage_env = storage_env

    # -- observing ----------------------------------------------------------------------
    def status(self, kind: JobKind, jid: str) -> JobState:
        if op_job_id_problem(jid):
            raise JobNotFound(jid)
        return self.compute.state(kind.job_name(jid), self.jobs.options.log_tail)

    def remove(self, kind: JobKind, jid: str) -> None:
        """Remove the scheduler object (pfcon 6: never data, and an unknown job is fine);
        removing a delete job that succeeded also removes what it left of ``key-<jid>/``."""
        if op_job_id_problem(jid):
            return
        name = kind.job_name(jid)
        try:
            finished = kind is JobKind.DELETE and self.compute.info(name).status is JobStatus.FINISHED_SUCCESSFULLY
            if self.jobs.options.remove_jobs:
                self.compute.remove(name)
        except JobNotFound:
            return
        if finished and self.area.exists(jid):
            self.area.remove(jid)

    def outputs(self, jid: str, job_output_path: str | None) -> OutputListing | ZipStream:
        if op_job_id_problem(jid):
            raise JobNotFound(jid)
        return self.area.outputs(jid, job_output_path)

    # -- the four POSTs -----------------------------------------------------------------
    def copy(
        self, jid: str, input_dirs: tuple[str, ...], output_dir: str, cpu_limit: int, memory_limit: int
    ) -> OpResult:
        self._check_id(jid)  # refused even where the copy is skipped: no such job could exist
        resources = op_resources(cpu_limit, memory_limit)
        if not self.flow.copy_job:
            return OpResult(skipped(JobKind.COPY, jid))
        existing = self._existing(JobKind.COPY, jid)
        if existing is not None:
            return existing
        if input_dirs:  # refused now rather than by a failing copy job
            CopyInput(self.jobs.storage).check(jid, StagingRequest(input_dirs=input_dirs, output_dir=output_dir))
        params = CopyParams(jid, self.storage_env, input_dirs, output_dir)
        return self._schedule_op(JobKind.COPY, params, resources)

    def plugin(self, spec: JobSpec, request: StagingRequest) -> OpResult:
        self._check_id(spec.jid)
        self.jobs.run_plugin.check(spec)
        state = self._state(JobKind.PLUGIN, spec.jid)
        if state is not None and state.info.status not in _RESTARTABLE:
            return OpResult(state.info, state.logs)
        if state is not None:
            self._replace(JobKind.PLUGIN, spec.jid, state)
        if not self.flow.copy_job:  # zipfile, filesystem: pfcon 5's chain, stage then run
            if state is not None and self.jobs.storage.exists(spec.jid):
                self.jobs.delete_data(spec.jid)  # the failed run's data, replaced by this one's
            return self._stage_and_run(spec, request)
        if request.output_dir is None:
            raise InvalidJobSpec("field is required", field="output_dir")
        copy = self._find(JobKind.COPY, spec.jid)
        if copy is None:
            raise JobConflict(
                "No copy job found. A copy job must complete successfully before scheduling a plugin job."
            )
        if copy.status is not JobStatus.FINISHED_SUCCESSFULLY:
            raise JobConflict(
                f"Copy job has not completed successfully (status: {copy.status.v6_value}). Run the copy job first."
            )
        mounts = self.area.plugin_mounts(spec.jid, request.output_dir)
        return self._run_or_existing(JobKind.PLUGIN, spec.jid, lambda: self.jobs.run_plugin(spec, mounts))

    def upload(self, jid: str, job_output_path: str, cpu_limit: int, memory_limit: int) -> OpResult:
        self._check_id(jid)
        resources = op_resources(cpu_limit, memory_limit)
        if not self.flow.upload_job:
            return OpResult(skipped(JobKind.UPLOAD, jid))
        plugin = self._find(JobKind.PLUGIN, jid)
        if plugin is None:
            raise JobConflict("No plugin job found. A plugin job must complete before scheduling an upload job.")
        if not plugin.status.is_terminal or plugin.status is JobStatus.UNDEFINED:
            raise JobConflict(
                f"Plugin job has not completed yet (status: {plugin.status.v6_value}). "
                "The plugin job must finish before uploading."
            )
        existing = self._existing(JobKind.UPLOAD, jid)
        if existing is not None:
            return existing
        if not self.area.exists(jid):
            raise JobNotFound(jid, f"no data for job '{jid}'")
        path = job_output_path.lstrip("/")
        if not path.strip("/"):
            raise InvalidJobSpec("must name a path under the storage root", field="job_output_path")
        return self._schedule_op(JobKind.UPLOAD, UploadParams(jid, self.storage_env, path), resources)

    def delete(self, jid: str, cpu_limit: int, memory_limit: int) -> OpResult:
        self._check_id(jid)
        resources = op_resources(cpu_limit, memory_limit)
        if not self.area.exists(jid):
            return OpResult(skipped(JobKind.DELETE, jid))
        for kind in (JobKind.COPY, JobKind.PLUGIN, JobKind.UPLOAD):
            sibling = self._find(kind, jid)
            if sibling is not None and sibling.status in _ACTIVE:
                raise JobConflict(
                    f"The {kind.value} job is still active (status: {sibling.status.v6_value}). "
                    "All jobs must finish before scheduling a delete job."
                )
        existing = self._existing(JobKind.DELETE, jid)
        if existing is not None:
            return existing
        return self._schedule_op(JobKind.DELETE, DeleteParams(jid), resources)

    # -- helpers ------------------------------------------------------------------------
    @staticmethod
    def _check_id(jid: str) -> None:
        why = op_job_id_problem(jid)
        if why:
            raise InvalidFields({"jid": why})

    def _find(self, kind: JobKind, jid: str) -> JobInfo | None:
        try:
            return self.compute.info(kind.job_name(jid))
        except JobNotFound:  # a backend that is down is a 503, never "absent"
            return None

    def _state(self, kind: JobKind, jid: str) -> JobState | None:
        try:
            return self.compute.state(kind.job_name(jid), self.jobs.options.log_tail)
        except JobNotFound:
            return None

    def _replace(self, kind: JobKind, jid: str, state: JobState) -> None:
        log.info("replacing a %s job that ended %s", kind.value, state.info.status.value, extra={"job_id": jid})
        with contextlib.suppress(JobNotFound):
            self.compute.remove(kind.job_name(jid))

    def _existing(self, kind: JobKind, jid: str) -> OpResult | None:
        """The job to answer instead of scheduling one (it runs or succeeded), or None
        when there is none; a failed or undefined job is removed to be replaced."""
        state = self._state(kind, jid)
        if state is None:
            return None
        if state.info.status not in _RESTARTABLE:
            return OpResult(state.info, state.logs)
        self._replace(kind, jid, state)
        return None

    def _run_or_existing(self, kind: JobKind, jid: str, schedule: Callable[[], JobInfo]) -> OpResult:
        """Schedule; a concurrent duplicate that got there first is answered as it is."""
        try:
            return OpResult(schedule())
        except JobAlreadyExists:
            state = self._state(kind, jid)
            if state is None:
                raise
            return OpResult(state.info, state.logs)

    def _stage_and_run(self, spec: JobSpec, request: StagingRequest) -> OpResult:
        try:
            submitted = self.jobs.submit(spec, request)
        except JobAlreadyExists:  # a concurrent duplicate stages or has scheduled it
            state = self._state(JobKind.PLUGIN, spec.jid)
            if state is None:
                raise
            return OpResult(state.info, state.logs)
        return OpResult(submitted.info, data=submitted.data)

    def _schedule_op(self, kind: JobKind, params: OpParams, resources: Resources) -> OpResult:
        jid = params.jid
        self.area.prepare(kind, params)
        needs_store = kind is not JobKind.DELETE and self.flow.upload_job
        job = ContainerJob(
            name=kind.job_name(jid),
            image=self.options.image,
            command=(*self.options.command, kind.value, OUTPUT_DIR),
            env=self.options.store_env if needs_store else (),
            resources=resources,
            mounts=self.area.op_mounts(kind, jid),
            labels={JOB_TYPE_LABEL: kind.value, INSTANCE_LABEL: self.options.instance},
            run_as=self.options.run_as,
        )

        def schedule() -> JobInfo:
            try:
                return self.compute.schedule(job)
            except ImageNotAvailable as e:  # the server's own image: not the client's fault
                raise BackendUnavailable(
                    f"the op-job image {self.options.image!r} (PFCON_OP_IMAGE) cannot be run: {e.message}"
                ) from None

        return self._run_or_existing(kind, jid, schedule)


class OpWorker:
    """What an op job does inside its container: the use cases of :mod:`.operations` on
    the storage adapter the server itself uses, with ``key-<jid>/`` mounted at
    ``/share/outgoing`` (and, for a copy from a shared filesystem, storeBase read-only at
    ``/share/incoming``)."""

    KEY_DIR = OUTPUT_DIR
    SHARED_ROOT = INPUT_DIR

    def __init__(self, storage: StoragePort) -> None:
        self.storage = storage

    def copy(self, params: CopyParams) -> StagedData | None:
        if not params.input_dirs:  # nothing to copy: an empty input dir
            return None
        return CopyInput(self.storage)(
            params.jid, StagingRequest(input_dirs=params.input_dirs, output_dir=params.output_dir)
        )

    def upload(self, params: UploadParams) -> OutputListing:
        return UploadOutput(self.storage)(params.jid, params.job_output_path)

    def delete(self, params: DeleteParams) -> None:
        DeleteData(self.storage)(params.jid)
