"""The one list of schedulers and storage modes this server knows.

Configuration validation (allowed values, volume types, settings), the composition root
(which factory builds which adapter) and the contract meta-tests (every entry has a
contract run) all read these tables, so a scheduler or storage mode cannot be named in
one place only. Entries are data: no adapter module (and no SDK) is imported here.
"""

from __future__ import annotations

from dataclasses import dataclass

from .domain.model import ComputeCapabilities


@dataclass(frozen=True, slots=True)
class SchedulerEntry:
    name: str  # the CONTAINER_ENV value
    factory: str  # the name of its factory function in the composition root (bootstrap)
    volume_types: tuple[str, ...]  # COMPUTE_VOLUME_TYPE values; the first is the default
    settings: tuple[str, ...]  # environment variables its adapter reads
    capabilities: ComputeCapabilities
    aliases: tuple[str, ...] = ()  # other CONTAINER_ENV values meaning this scheduler


@dataclass(frozen=True, slots=True)
class StorageEntry:
    name: str  # the STORAGE_ENV value
    factory: str
    innetwork: bool  # requires PFCON_INNETWORK=true (else requires it false)
    settings: tuple[str, ...] = ()
    # pfcon 6 (docs/wire-contract.md): a client runs a copy job (the input is copied into
    # key-<jid>/incoming) and an upload job (the outputs leave key-<jid>/outgoing for the
    # store). An object store (swift, s3) needs both; a shared filesystem with links
    # (fslink) a copy job only.
    copy_job: bool = False
    upload_job: bool = False


_JOB_SETTINGS = (
    "JOB_LABELS", "JOB_LOGS_TAIL", "IGNORE_LIMITS", "CONTAINER_USER", "ENABLE_HOME_WORKAROUND",
    "SHM_SIZE", "REMOVE_JOBS",
)  # fmt: skip

SCHEDULERS: tuple[SchedulerEntry, ...] = (
    SchedulerEntry(
        name="docker",
        aliases=("podman",),
        factory="docker_compute",
        volume_types=("docker_local_volume", "host"),
        settings=(
            "DOCKER_HOST",
            "DOCKER_TLS_VERIFY",
            "DOCKER_CERT_PATH",
            "STOREBASE",
            "VOLUME_NAME",
            "PFCON_SELECTOR",
            "PULL_IMAGES",
            "JOB_NETWORK",
            "PFCON_OP_NETWORK",
            *_JOB_SETTINGS,
        ),
        capabilities=ComputeCapabilities(
            max_workers=1, checks_image_at_submit=True, unique_names=True, gpus=True, hard_memory_limit=True
        ),
    ),
    SchedulerEntry(
        name="swarm",
        factory="swarm_compute",
        volume_types=("host",),  # STOREBASE: storeBase's path on every node
        settings=("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "STOREBASE", *_JOB_SETTINGS),
        # The manager cannot know which images its nodes have or can pull: an absent
        # image shows in the job's status (docs/adr/0012-swarm.md). No GPUs, one task.
        capabilities=ComputeCapabilities(
            max_workers=1, checks_image_at_submit=False, unique_names=True, gpus=False, hard_memory_limit=True
        ),
    ),
    SchedulerEntry(
        name="kubernetes",
        aliases=("openshift",),
        factory="kubernetes_compute",
        volume_types=("kubernetes_pvc",),  # VOLUME_NAME: the PVC holding storeBase, mounted with subPaths
        settings=(
            "VOLUME_NAME",
            "JOB_NAMESPACE",
            "NODE_SELECTOR",
            "IMAGE_PULL_SECRETS",
            "KUBECONFIG",
            "KUBERNETES_HOST_NETWORK",
            "KUBERNETES_RESYNC_SECONDS",
            "KUBERNETES_LOG_REFRESH_SECONDS",
            "KUBERNETES_SWEEP_AFTER",
            *_JOB_SETTINGS,
        ),
        # The kubelet pulls images: an absent one shows in the status message
        # (docs/adr/0013-kubernetes.md). Workers are the Job's parallel pods.
        capabilities=ComputeCapabilities(
            max_workers=64, checks_image_at_submit=False, unique_names=True, gpus=True, hard_memory_limit=True
        ),
    ),
    SchedulerEntry(
        name="slurm",
        factory="slurm_compute",
        volume_types=("host",),  # STOREBASE: storeBase on a filesystem every node shares
        settings=(
            "STOREBASE",
            "TIMELIMIT_MINUTES",
            "SLURM_PARTITION",
            "SLURM_ACCOUNT",
            "SLURM_QOS",
            "SLURM_SBATCH_OPTIONS",
            "SLURM_CONTAINER_RUNTIME",
            "SLURM_RUNTIME_COMMAND",
            "SLURM_RUNTIME_STOP_COMMAND",
            "SLURM_POLL_SECONDS",
            "SLURM_SUBMIT_RATE",
            "SLURM_COMMAND_TIMEOUT",
            "PULL_IMAGES",
            "JOB_NETWORK",
            "PFCON_OP_NETWORK",
            "JOB_LOGS_TAIL",
            "IGNORE_LIMITS",
            "CONTAINER_USER",
            "ENABLE_HOME_WORKAROUND",
            "REMOVE_JOBS",
        ),
        # The nodes' runtime knows the images; memory is enforced where the site's SLURM
        # confines jobs (task/cgroup), not by this adapter (docs/adr/0016-slurm.md).
        capabilities=ComputeCapabilities(
            max_workers=1, checks_image_at_submit=False, unique_names=True, gpus=True, hard_memory_limit=False
        ),
    ),
    SchedulerEntry(
        name="cromwell",
        factory="cromwell_compute",
        volume_types=("host",),  # STOREBASE: storeBase's path on the Cromwell backend's nodes (sharedir, mounts)
        settings=(
            "CROMWELL_URL",
            "CROMWELL_TIMEOUT",
            "TIMELIMIT_MINUTES",
            "STOREBASE",
            "JOB_LABELS",
            "JOB_LOGS_TAIL",
            "IGNORE_LIMITS",
            "CONTAINER_USER",
            "ENABLE_HOME_WORKAROUND",
            "REMOVE_JOBS",
        ),
        # The backend's nodes pull images; GPUs are a runtime attribute; memory is a request the
        # backend may not enforce (docs/adr/0017-cromwell.md).
        capabilities=ComputeCapabilities(
            max_workers=1, checks_image_at_submit=False, unique_names=True, gpus=True, hard_memory_limit=False
        ),
    ),
)

# Schedulers pfcon names that this build does not provide yet: refused with a clear message.
PLANNED_SCHEDULERS: tuple[str, ...] = ()

STORAGE_MODES: tuple[StorageEntry, ...] = (
    StorageEntry("zipfile", "zipfile_storage", innetwork=False,
                 settings=("ZIP_MAX_UNCOMPRESSED_BYTES", "ZIP_MAX_ENTRIES", "ZIP_MAX_RATIO", "ZIP_RATIO_MIN_BYTES")),
    StorageEntry("filesystem", "filesystem_storage", innetwork=True),
    StorageEntry("fslink", "fslink_storage", innetwork=True, copy_job=True),
    StorageEntry("swift", "swift_storage", innetwork=True,
                 settings=("SWIFT_AUTH_URL", "SWIFT_USERNAME", "SWIFT_KEY", "SWIFT_CONTAINER_NAME", "SWIFT_RETRIES"),
                 copy_job=True, upload_job=True),
    StorageEntry("s3", "s3_storage", innetwork=True,
                 settings=("S3_ENDPOINT_URL", "S3_ACCESS_KEY", "S3_SECRET_KEY", "S3_REGION_NAME", "S3_BUCKET_NAME",
                           "S3_RETRIES"),
                 copy_job=True, upload_job=True),
)  # fmt: skip

PLANNED_STORAGE: tuple[str, ...] = ()


def scheduler(container_env: str) -> SchedulerEntry | None:
    """The entry for a CONTAINER_ENV value (aliases included), or None."""
    for entry in SCHEDULERS:
        if container_env == entry.name or container_env in entry.aliases:
            return entry
    return None


def storage_mode(storage_env: str) -> StorageEntry | None:
    for entry in STORAGE_MODES:
        if storage_env == entry.name:
            return entry
    return None


def scheduler_names() -> tuple[str, ...]:
    return tuple(e.name for e in SCHEDULERS)


def storage_names() -> tuple[str, ...]:
    return tuple(e.name for e in STORAGE_MODES)
