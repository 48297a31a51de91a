"""Use cases: server info, submit, status with logs, outputs, delete; authentication."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .command import build_command
from .errors import (
    DomainError,
    InvalidJobSpec,
    ExpiredToken,
    InvalidFields,
    InvalidToken,
    JobNotFound,
    MalformedAuthHeader,
    MissingToken,
)
from .model import (
    JOB_TYPE_LABEL,
    BackendHealth,
    MAX_CPU_MILLICORES,
    MAX_GPUS,
    MAX_MEMORY_MIB,
    MAX_WORKERS,
    MIN_MEMORY_MIB,
    ContainerJob,
    JobSpec,
    JobState,
    OutputListing,
    ServerInfo,
    SubmittedJob,
    image_reference_problem,
    job_id_problem,
)
from .ports import AuthPort, ComputePort, StagingRequest, StoragePort, ZipStream


log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class JobOptions:
    """Operator policy applied to every job (from configuration)."""

    log_tail: int = 1000
    extra_env: tuple[str, ...] = ()
    remove_jobs: bool = True


_RESOURCE_BOUNDS = {
    "number_of_workers": (1, MAX_WORKERS),
    "cpu_limit": (1, MAX_CPU_MILLICORES),
    "memory_limit": (MIN_MEMORY_MIB, MAX_MEMORY_MIB),
    "gpu_limit": (0, MAX_GPUS),
}


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
    for name, (low, high) in _RESOURCE_BOUNDS.items():
        value = getattr(spec.resources, name)
        if not low <= value <= high:
            problems[name] = f"must be an integer between {low} and {high}, got {value}"
    if any("=" not in item or item.startswith("=") for item in spec.env):
        problems["env"] = 'must be a list of "key=value" strings'
    return problems


class JobService:
    """The job lifecycle, independent of any transport or backend."""

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

    def server_info(self) -> ServerInfo:
        return self._server_info

    def recover(self) -> list[str]:
        """Clean up after a crash: job data whose staging never finished is removed."""
        return self.storage.recover()

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

    def submit(self, spec: JobSpec, request: StagingRequest) -> SubmittedJob:
        problems = spec_problems(spec)
        if problems:
            raise InvalidFields(problems)
        self._check_capabilities(spec)
        self.compute.check(spec.image, spec.resources)
        self.storage.validate(spec.jid, request)
        # Uniqueness: stage() claims key-<jid>/ atomically, and the scheduler refuses a
        # second object of the same name (then the staged data is rolled back).
        data = self.storage.stage(spec.jid, request)
        job = ContainerJob(
            name=spec.jid,
            image=spec.image,
            command=build_command(spec),
            env=spec.env + self.options.extra_env,
            resources=spec.resources,
            mounts=data.mounts,
            labels={JOB_TYPE_LABEL: "plugin"},
        )
        try:
            info = self.compute.schedule(job)
        except BaseException:
            try:
                self.storage.delete(spec.jid)  # leave nothing behind
            except Exception:  # the scheduling error is the one to report
                log.exception("rollback of job data failed", extra={"job_id": spec.jid})
            raise
        return SubmittedJob(data=data, info=info)

    def _check_capabilities(self, spec: JobSpec) -> None:
        """Refuse, before anything is staged, what the scheduler cannot do."""
        caps = self.compute.capabilities
        why = caps.workers_problem(spec.resources.number_of_workers)
        if why:
            raise InvalidJobSpec(why)
        if spec.resources.gpu_limit > 0 and not caps.gpus:
            # Not a passing shortage (that is ResourceUnavailable, 503): this scheduler
            # can never grant a GPU, so the request itself is what cannot be run.
            raise InvalidJobSpec(
                f"this server's {self._server_info.container_env} scheduler cannot provide GPUs, got gpu_limit={spec.resources.gpu_limit}",
                field="gpu_limit",
            )

    def status(self, jid: str) -> JobState:
        self._require_valid_id(jid)
        return self.compute.state(jid, self.options.log_tail)

    def outputs(self, jid: str, job_output_path: str | None) -> OutputListing | ZipStream:
        self._require_valid_id(jid)
        return self.storage.outputs(jid, job_output_path)

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
            self.storage.delete(jid)
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
