"""The four things done to a job, each its own use case, under both API generations.

* :class:`CopyInput` stages a job's input into ``key-<jid>/incoming`` (pfcon's storage step).
* :class:`RunPlugin` runs the plugin container on staged data.
* :class:`UploadOutput` publishes a job's outputs under a storage path (object stores) and
  lists them.
* :class:`DeleteData` removes a job's private data.

pfcon 5 (``/api/v1/jobs/``, :class:`~.services.JobService`) chains them inside its
requests: submit stages in-process and then runs the plugin, the file route uploads, DELETE
removes. pfcon 6 (:mod:`.opjobs`) exposes them one by one: the server runs the plugin, and
copy, upload and delete run as op jobs, containers of this server's own image whose command
calls the same use cases through :class:`~.opjobs.OpWorker` (docs/wire-contract.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .command import build_command
from .errors import InvalidFields, InvalidJobSpec
from .model import (
    DEFAULT_INSTANCE,
    INSTANCE_LABEL,
    JOB_TYPE_LABEL,
    MAX_CPU_MILLICORES,
    MAX_GPUS,
    MAX_MEMORY_MIB,
    MAX_WORKERS,
    MIN_MEMORY_MIB,
    ContainerJob,
    JobInfo,
    JobKind,
    JobSpec,
    Mount,
    OutputListing,
    StagedData,
    image_reference_problem,
    job_id_problem,
)
from .ports import ComputePort, StagingRequest, StoragePort, ZipStream

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class JobOptions:
    """Operator policy applied to every job (from configuration)."""

    log_tail: int = 1000
    extra_env: tuple[str, ...] = ()
    remove_jobs: bool = True
    instance: str = DEFAULT_INSTANCE  # INSTANCE_LABEL of every job this server creates


RESOURCE_BOUNDS = {
    "number_of_workers": (1, MAX_WORKERS),
    "cpu_limit": (1, MAX_CPU_MILLICORES),
    "memory_limit": (MIN_MEMORY_MIB, MAX_MEMORY_MIB),
    "gpu_limit": (0, MAX_GPUS),
}


def bound_problem(name: str, value: int) -> str | None:
    low, high = RESOURCE_BOUNDS[name]
    if not low <= value <= high:
        return f"must be an integer between {low} and {high}, got {value}"
    return None


def spec_problems(spec: JobSpec) -> dict[str, str]:
    """Every reason why ``spec`` cannot be run, by field (empty when it can)."""
    problems: dict[str, str] = {}
    why = job_id_problem(spec.jid)
    if why:
        problems["jid"] = why
    if not spec.image.strip():
        problems["image"] = "cannot be empty"
    else:
        why = image_reference_problem(spec.image)
        if why:
            shown = spec.image if len(spec.image) <= 80 else spec.image[:80] + "..."
            problems["image"] = f"invalid image reference {shown!r}: {why}"
    if not spec.entrypoint or not spec.entrypoint[0].strip():
        problems["entrypoint"] = "cannot be empty"
    for name in RESOURCE_BOUNDS:
        why = bound_problem(name, getattr(spec.resources, name))
        if why:
            problems[name] = why
    if any("=" not in item or item.startswith("=") for item in spec.env):
        problems["env"] = 'must be a list of "key=value" strings'
    return problems


class CopyInput:
    """Stage a job's input into its private ``key-<jid>/incoming`` (zip extraction,
    shared-filesystem links, object-store download; ChRIS links expanded)."""

    def __init__(self, storage: StoragePort) -> None:
        self.storage = storage

    def check(self, jid: str, request: StagingRequest) -> None:
        """Refuse, without side effects, an input that cannot be staged."""
        self.storage.validate(jid, request)

    def __call__(self, jid: str, request: StagingRequest) -> StagedData:
        return self.storage.stage(jid, request)


class RunPlugin:
    """Run a plugin container on staged data: the command of pfcon's job descriptors, the
    operator's job policy, the mounts the storage step produced."""

    def __init__(self, compute: ComputePort, options: JobOptions, container_env: str) -> None:
        self.compute = compute
        self.options = options
        self.container_env = container_env

    def check(self, spec: JobSpec) -> None:
        """Refuse, before any data is touched, a job that cannot be run as given."""
        problems = spec_problems(spec)
        if problems:
            raise InvalidFields(problems)
        caps = self.compute.capabilities
        why = caps.workers_problem(spec.resources.number_of_workers)
        if why:
            raise InvalidJobSpec(why)
        if spec.resources.gpu_limit > 0 and not caps.gpus:
            # Not a passing shortage (that is ResourceUnavailable, 503): this scheduler
            # can never grant a GPU, so the request itself is what cannot be run.
            raise InvalidJobSpec(
                f"this server's {self.container_env} scheduler cannot provide GPUs, got gpu_limit={spec.resources.gpu_limit}",
                field="gpu_limit",
            )
        self.compute.check(spec.image, spec.resources)

    def container(self, spec: JobSpec, mounts: tuple[Mount, ...]) -> ContainerJob:
        return ContainerJob(
            name=JobKind.PLUGIN.job_name(spec.jid),
            image=spec.image,
            command=build_command(spec),
            env=spec.env + self.options.extra_env,
            resources=spec.resources,
            mounts=mounts,
            labels={JOB_TYPE_LABEL: JobKind.PLUGIN.value, INSTANCE_LABEL: self.options.instance},
        )

    def __call__(self, spec: JobSpec, mounts: tuple[Mount, ...]) -> JobInfo:
        """Schedule the plugin (``check`` first). Raises JobAlreadyExists when a job of
        that name exists; on any error nothing of the job is left on the scheduler."""
        return self.compute.schedule(self.container(spec, mounts))


class UploadOutput:
    """Publish a job's outputs under ``job_output_path`` in the object store (files already
    there are skipped, so a repeated upload is cheap) and list them."""

    def __init__(self, storage: StoragePort) -> None:
        self.storage = storage

    def __call__(self, jid: str, job_output_path: str) -> OutputListing:
        out = self.storage.outputs(jid, job_output_path)
        if isinstance(out, ZipStream):  # no storage port answers a path with a zip
            raise InvalidJobSpec("this storage cannot publish outputs under a path", field="job_output_path")
        return out


class DeleteData:
    """Remove a job's private data ``key-<jid>/``; never shared input or output dirs."""

    def __init__(self, storage: StoragePort) -> None:
        self.storage = storage

    def __call__(self, jid: str) -> None:
        self.storage.delete(jid)
