"""Jobs and their lifecycle: value objects only, standard library only."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

INPUT_DIR = "/share/incoming"
OUTPUT_DIR = "/share/outgoing"

# Every scheduler object this server creates carries this label (pfcon's), set by the
# domain so that no adapter can forget it or spell it differently.
JOB_TYPE_LABEL = "org.chrisproject.job_type"
# ... and this one, whose value names the server instance (PFCON_INSTANCE) that created
# it: an operator's listing shows this server's jobs, never other workloads or another
# server's jobs on the same scheduler.
INSTANCE_LABEL = "org.chrisproject.pfcon.instance"
DEFAULT_INSTANCE = "pfcon"
# The message of a job an operator cancelled (its status is finishedWithError).
CANCELLED_MESSAGE = "cancelled"

# A job id becomes a Docker container name, a Swarm service name, a Kubernetes
# Job name (RFC 1123 label, lower case, <= 63 characters), a SLURM job name and a
# directory name ``key-<jid>``.  Only the intersection of those is accepted.
JOB_ID_MAX_LENGTH = 63
_JOB_ID_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")

# Sanity bounds on resources; the engine would reject or misbehave beyond them.
MAX_CPU_MILLICORES = 1_024_000  # 1024 cores
MAX_MEMORY_MIB = 16 * 1024 * 1024  # 16 TiB
MAX_GPUS = 64
MAX_WORKERS = 10_000
MIN_MEMORY_MIB = 6  # Docker refuses a hard memory limit under 6 MiB


class PluginType(enum.StrEnum):
    DS = "ds"
    FS = "fs"
    TS = "ts"


class JobStatus(enum.StrEnum):
    """Scheduler-independent job status, with pfcon 5.3's wire strings."""

    NOT_STARTED = "notstarted"
    STARTED = "started"
    FINISHED_SUCCESSFULLY = "finishedSuccessfully"
    FINISHED_WITH_ERROR = "finishedWithError"
    UNDEFINED = "undefined"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL

    @property
    def v6_value(self) -> str:
        """The wire string of pfcon 6 (``notStarted``; the others are pfcon 5's)."""
        return "notStarted" if self is JobStatus.NOT_STARTED else self.value


_TERMINAL = frozenset({JobStatus.FINISHED_SUCCESSFULLY, JobStatus.FINISHED_WITH_ERROR, JobStatus.UNDEFINED})


def job_id_problem(jid: str) -> str | None:
    """Why ``jid`` is not acceptable as a job id, or None when it is."""
    if not jid:
        return "must not be empty"
    if len(jid) > JOB_ID_MAX_LENGTH:
        return f"must be at most {JOB_ID_MAX_LENGTH} characters"
    if not _JOB_ID_RE.fullmatch(jid):
        return "must consist of lower case letters, digits and '-', and start and end with a letter or digit"
    return None


class JobKind(enum.StrEnum):
    """What a scheduler object of this server does. pfcon 5 runs plugin jobs only; pfcon 6
    also runs the data operations as op jobs named ``<jid>-copy``, ``-upload``, ``-delete``."""

    PLUGIN = "plugin"
    COPY = "copy"
    UPLOAD = "upload"
    DELETE = "delete"

    def job_name(self, jid: str) -> str:
        return jid if self is JobKind.PLUGIN else f"{jid}-{self.value}"


OP_KINDS = (JobKind.COPY, JobKind.UPLOAD, JobKind.DELETE)
# The longest op-job name, <jid>-upload, must fit the scheduler's limit: a longer id is
# refused up front by pfcon 6's routes, never truncated.
OP_JOB_ID_MAX_LENGTH = JOB_ID_MAX_LENGTH - max(len(k.job_name("")) for k in OP_KINDS)


def op_job_id_problem(jid: str) -> str | None:
    """Why ``jid`` cannot name a pfcon 6 job (its op jobs included), or None."""
    why = job_id_problem(jid)
    if why:
        return why
    if len(jid) > OP_JOB_ID_MAX_LENGTH:
        return (
            f"must be at most {OP_JOB_ID_MAX_LENGTH} characters, so that the names of its op jobs "
            f"(<jid>-upload) stay within the scheduler's limit of {JOB_ID_MAX_LENGTH}"
        )
    for kind in OP_KINDS:
        if jid.endswith(kind.job_name("")):
            return f"may not end in {kind.job_name('')!r}: that is the name of an op job"
    return None


@dataclass(frozen=True, slots=True)
class StorageFlow:
    """How a storage mode moves a job's data under pfcon 6 (docs/wire-contract.md)."""

    copy_job: bool = False  # the input is copied into key-<jid>/incoming by a copy job
    upload_job: bool = False  # the outputs are uploaded by an upload job (object stores)

    @property
    def outputs_in_key_dir(self) -> bool:
        """The plugin writes into key-<jid>/outgoing (else into the shared output dir)."""
        return self.upload_job


@dataclass(frozen=True, slots=True)
class CopyParams:
    """What a copy job reads from ``key-<jid>/job_params.json``."""

    jid: str
    storage_env: str
    input_dirs: tuple[str, ...]
    output_dir: str


@dataclass(frozen=True, slots=True)
class UploadParams:
    """What an upload job reads from ``key-<jid>/upload_params.json``."""

    jid: str
    storage_env: str
    job_output_path: str


@dataclass(frozen=True, slots=True)
class DeleteParams:
    """What a delete job reads from ``key-<jid>/delete_params.json``."""

    jid: str


OpParams = CopyParams | UploadParams | DeleteParams
PARAMS_FILES = {
    JobKind.COPY: "job_params.json",
    JobKind.UPLOAD: "upload_params.json",
    JobKind.DELETE: "delete_params.json",
}


@dataclass(frozen=True, slots=True)
class Resources:
    number_of_workers: int = 1
    cpu_limit: int = 1000  # millicores
    memory_limit: int = 300  # MiB
    gpu_limit: int = 0


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What a client asks to run (pfcon's plugin job descriptors)."""

    jid: str
    image: str
    entrypoint: tuple[str, ...]
    type: PluginType
    resources: Resources
    args: tuple[str, ...] = ()
    args_path_flags: tuple[str, ...] = ()
    auid: str = ""
    env: tuple[str, ...] = ()
    input_dirs: tuple[str, ...] | None = None
    output_dir: str | None = None


@dataclass(frozen=True, slots=True)
class Mount:
    """A storage location, relative to storeBase, made visible in the job."""

    source: str  # path relative to storeBase ('' is storeBase itself)
    target: str  # absolute path inside the job container
    read_only: bool


@dataclass(frozen=True, slots=True)
class StagedData:
    """Where a job's input and output live once the storage step is done."""

    nfiles: int
    path: str  # the input location as the server sees it (pfcon's data.path)
    mounts: tuple[Mount, ...]
    timestamp: str = ""
    nbytes: int = -1  # bytes staged, where the storage step counted them (-1: not counted)


@dataclass(frozen=True, slots=True)
class ComputeCapabilities:
    """What a scheduler can do beyond the core every adapter provides (create one job
    from an image and a command, report its status and logs, remove it)."""

    max_workers: int = 1  # pods/tasks of one job (number_of_workers)
    checks_image_at_submit: bool = True  # an absent image is refused synchronously
    unique_names: bool = True  # the scheduler itself refuses a second job of a name
    gpus: bool = True  # can grant gpu_limit > 0 (if the hosts have GPUs)
    hard_memory_limit: bool = True  # a job past memory_limit is killed

    def workers_problem(self, workers: int) -> str | None:
        if workers > self.max_workers:
            if self.max_workers == 1:
                return f"Compute environment only supports number_of_workers=1, got number_of_workers={workers}"
            return f"Compute environment supports at most {self.max_workers} workers, got number_of_workers={workers}"
        return None


@dataclass(frozen=True, slots=True)
class ContainerJob:
    """A fully resolved job for a compute backend: no storage or HTTP concepts."""

    name: str
    image: str
    command: tuple[str, ...]
    env: tuple[str, ...] = field(repr=False)  # may hold credentials (op jobs): never in a repr
    resources: Resources
    mounts: tuple[Mount, ...]
    labels: dict[str, str] = field(default_factory=dict)
    # (uid, gid) to run as instead of the scheduler's job-user policy (CONTAINER_USER): op
    # jobs run as the user that owns ``key-<jid>/``, never as root.
    run_as: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class JobInfo:
    """What the scheduler reports about a job (pfcon's ``compute`` object)."""

    name: str
    image: str
    cmd: str
    status: JobStatus
    message: str
    timestamp: str


@dataclass(frozen=True, slots=True)
class JobSummary:
    """One job of this server as an operator's listing shows it (not pfcon's wire API)."""

    name: str  # the scheduler object's name: the job id, or <jid>-copy|-upload|-delete
    kind: JobKind
    image: str
    status: JobStatus
    message: str
    created: str  # when the scheduler created it, ISO 8601 UTC; "" when unknown
    resources: Resources | None = None  # None when the scheduler does not say
    node: str = ""  # where the scheduler placed it; "" when unknown or not yet placed

    @property
    def jid(self) -> str:
        suffix = f"-{self.kind.value}"
        return (
            self.name[: -len(suffix)] if self.kind is not JobKind.PLUGIN and self.name.endswith(suffix) else self.name
        )


@dataclass(frozen=True, slots=True)
class JobState:
    info: JobInfo
    logs: str


@dataclass(frozen=True, slots=True)
class SubmittedJob:
    data: StagedData
    info: JobInfo


@dataclass(frozen=True, slots=True)
class OutputListing:
    job_output_path: str
    rel_file_paths: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class OutputFile:
    """One file of a job's output, as an operator's view lists it."""

    path: str  # relative to the output directory, '/'-separated
    size: int  # bytes


@dataclass(frozen=True, slots=True)
class ServerInfo:
    server_version: str
    pfcon_innetwork: bool
    storage_env: str
    container_env: str
    compute_volume_type: str | None
    extra: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class BackendHealth:
    """Whether one backend (compute, storage) answers, for the readiness check."""

    kind: str  # "compute" or "storage"
    name: str  # e.g. "docker", "swift"
    ok: bool
    message: str = ""


# -- image references ---------------------------------------------------------------------
# The Docker/OCI reference grammar (github.com/distribution/reference, regexp.go):
#   reference  := name [ ":" tag ] [ "@" digest ]
#   name       := [ domain "/" ] path-component ( "/" path-component )*
#   domain     := host [ ":" port ];  host := domain-name | IPv4 | "[" IPv6 "]"
#   path-component := [a-z0-9]+ ( separator [a-z0-9]+ )*;  separator := [_.] | "__" | "-"+
#   tag        := [\w][\w.-]{0,127}
#   digest     := algorithm ":" hex;  algorithm := [A-Za-z][A-Za-z0-9]* ( [+._-] [A-Za-z][A-Za-z0-9]* )*
IMAGE_NAME_MAX_LENGTH = 255  # Docker's NameTotalLengthMax, for the name part
IMAGE_REFERENCE_MAX_LENGTH = 512  # a hard cap on the whole reference (name, tag and digest)

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[_.]|__|-+)[a-z0-9]+)*"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST_ALGORITHM = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*"
_DIGEST = rf"{_DIGEST_ALGORITHM}:[0-9a-fA-F]{{32,}}"
_REFERENCE_RE = re.compile(rf"(?P<name>{_NAME})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?", re.ASCII)
# The registered algorithms (OCI image-spec, descriptor.md) have a fixed, lower-case encoding.
_DIGEST_HEX_LENGTHS = {"sha256": 64, "sha512": 128}


def image_reference_problem(image: str) -> str | None:
    """Why ``image`` is not a valid Docker/OCI image reference, or None when it is."""
    if not image:
        return "must not be empty"
    if len(image) > IMAGE_REFERENCE_MAX_LENGTH:
        return f"must be at most {IMAGE_REFERENCE_MAX_LENGTH} characters, got {len(image)}"
    match = _REFERENCE_RE.fullmatch(image)
    if match is None:
        if _REFERENCE_RE.fullmatch(image.lower()) is not None:
            return "repository names must be lower case"
        return (
            "must be [registry[:port]/]name[:tag][@digest], with lower-case name components "
            "made of letters, digits and the separators '.', '_', '__' or '-'"
        )
    if len(match["name"]) > IMAGE_NAME_MAX_LENGTH:
        return f"the repository name must be at most {IMAGE_NAME_MAX_LENGTH} characters"
    digest = match["digest"]
    if digest:
        algorithm, _, encoded = digest.partition(":")
        expected = _DIGEST_HEX_LENGTHS.get(algorithm)
        if expected is not None and (len(encoded) != expected or encoded != encoded.lower()):
            return f"a {algorithm} digest must be {expected} lower-case hexadecimal digits"
    return None


# -- path lengths ---------------------------------------------------------------------------
# Linux's NAME_MAX and PATH_MAX, in bytes of the UTF-8 encoding: beyond them the
# filesystem answers ENAMETOOLONG, so such a name is refused as invalid input instead.
PATH_COMPONENT_MAX_BYTES = 255
PATH_MAX_BYTES = 4096


def path_length_problem(path: str) -> str | None:
    """Why the '/'-separated ``path`` is too long for a filesystem, or None when it is not."""
    if len(path) <= PATH_COMPONENT_MAX_BYTES // 4:  # at most 4 bytes a character: short enough
        return None
    size = len(path.encode("utf-8", "surrogatepass"))
    if size > PATH_MAX_BYTES:
        return f"path is longer than {PATH_MAX_BYTES} bytes ({size} bytes)"
    for part in path.split("/"):
        if len(part.encode("utf-8", "surrogatepass")) > PATH_COMPONENT_MAX_BYTES:
            shown = part[:40] + "..."
            return f"path component {shown!r} is longer than {PATH_COMPONENT_MAX_BYTES} bytes"
    return None
