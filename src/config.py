"""Configuration: pfcon's environment variables, read once at startup, typed and validated.

Settings are declared once, as msgspec structs with one section per concern or adapter;
each field's wire name is its environment variable, so a type error names the variable.
A bad value, an unknown mode or an insecure production setting raises
:class:`ConfigError`; entrypoints turn it into a one-line message and a non-zero exit.

Secrets (``SECRET_KEY``, ``PFCON_PASSWORD``, ``SWIFT_KEY``, ``S3_ACCESS_KEY``, ``S3_SECRET_KEY``, ``METRICS_TOKEN``) are :class:`Secret`
strings whose ``repr`` is ``'***'``, so no settings object prints them.
"""

from __future__ import annotations

import os
import typing
from urllib.parse import urlsplit
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec

from . import __version__, registry
from .adapters.compute.options import ContainerUser, parse_container_user

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f"}

# Derived from the adapter registry, the one list of schedulers and storage modes.
CONTAINER_ENVS_BUILT = registry.scheduler_names()
STORAGE_ENVS_BUILT = registry.storage_names()
STORAGE_ENVS_OUT_OF_NETWORK = tuple(e.name for e in registry.STORAGE_MODES if not e.innetwork)
STORAGE_ENVS_IN_NETWORK = tuple(e.name for e in registry.STORAGE_MODES if e.innetwork)
VOLUME_TYPES = {e.name: e.volume_types for e in registry.SCHEDULERS}

DEV_SECRET_KEY = "dev-only-secret-key-change-me-in-production"  # noqa: S105 (dev default)
DEV_USER, DEV_PASSWORD = "pfcon", "pfcon1234"  # pfcon's dev credentials
MIN_SECRET_KEY_BYTES = 32  # HS256 keys shorter than the hash output are brute-forceable
KiB, MiB, GiB = 1024, 1024**2, 1024**3


class ConfigError(Exception):
    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable


class Secret(str):
    """A string that never shows itself in a ``repr`` (logs, tracebacks, settings)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'***'"


def _env(name: str, default: Any = msgspec.UNSET, **kwargs: Any) -> Any:
    return msgspec.field(default=default, name=name, **kwargs)


Int = int
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
Positive = Annotated[int, msgspec.Meta(ge=1)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
Threads = Annotated[int, msgspec.Meta(ge=1, le=1024)]
Seconds = Annotated[float, msgspec.Meta(gt=0, le=86400)]


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One section of the settings; each field's name is its environment variable."""


class AppSettings(_Section, frozen=True, kw_only=True):
    application_mode: Literal["production", "dev"] = _env("APPLICATION_MODE", "production")
    host: str = _env("HOST", "0.0.0.0")  # noqa: S104 (pfcon listens on all interfaces)
    port: Port = _env("PORT", 5005)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = _env("LOG_LEVEL", "INFO")
    worker_threads: Threads = _env("WORKER_THREADS", 32)


class AuthSettings(_Section, frozen=True, kw_only=True):
    secret_key: Secret | None = _env("SECRET_KEY", None)
    pfcon_user: str | None = _env("PFCON_USER", None)
    pfcon_password: Secret | None = _env("PFCON_PASSWORD", None)


class HttpSettings(_Section, frozen=True, kw_only=True):
    """Bounds on what one client may make the server hold (issue: hostile clients)."""

    max_header_bytes: Annotated[int, msgspec.Meta(ge=4 * KiB, le=16 * MiB)] = _env("MAX_HEADER_BYTES", 64 * KiB)
    header_timeout: Seconds = _env("HEADER_TIMEOUT", 30.0)
    body_timeout: Seconds = _env("BODY_TIMEOUT", 60.0)
    max_body_bytes: Annotated[int, msgspec.Meta(ge=4 * KiB, le=GiB)] = _env("MAX_BODY_BYTES", MiB)
    max_connections: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = _env("MAX_CONNECTIONS", 1000)
    upload_dir: str | None = _env("UPLOAD_DIR", None)
    max_uploads: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = _env("MAX_UPLOADS", 64)
    zip_max_upload_bytes: Positive = _env("ZIP_MAX_UPLOAD_BYTES", 16 * GiB)


class StorageSettings(_Section, frozen=True, kw_only=True):
    innetwork: bool = _env("PFCON_INNETWORK", False)
    storage_env: str | None = _env("STORAGE_ENV", None)
    storebase_mount: str = _env("STOREBASE_MOUNT", "/var/local/storeBase")
    staging_workers: Annotated[int, msgspec.Meta(ge=1, le=256)] = _env("STAGING_WORKERS", 8)
    output_zip_compression: Literal["stored", "deflated"] = _env("OUTPUT_ZIP_COMPRESSION", "stored")
    reserve_bytes: NonNegative = _env("STOREBASE_RESERVE_BYTES", GiB)


class ZipSettings(_Section, frozen=True, kw_only=True):
    max_uncompressed_bytes: Positive = _env("ZIP_MAX_UNCOMPRESSED_BYTES", 16 * GiB)
    max_entries: Annotated[int, msgspec.Meta(ge=1, le=100_000_000)] = _env("ZIP_MAX_ENTRIES", 100_000)
    max_ratio: NonNegative = _env("ZIP_MAX_RATIO", 500)
    ratio_min_bytes: NonNegative = _env("ZIP_RATIO_MIN_BYTES", MiB)


class SwiftSection(_Section, frozen=True, kw_only=True):
    auth_url: str | None = _env("SWIFT_AUTH_URL", None)
    username: str | None = _env("SWIFT_USERNAME", None)
    key: Secret | None = _env("SWIFT_KEY", None)
    container_name: str | None = _env("SWIFT_CONTAINER_NAME", None)
    retries: Annotated[int, msgspec.Meta(ge=0, le=20)] = _env("SWIFT_RETRIES", 5)


class S3Section(_Section, frozen=True, kw_only=True):
    """S3 (``STORAGE_ENV=s3``): pfcon's S3_* variables; dev mode fills what is unset."""

    endpoint_url: str | None = _env("S3_ENDPOINT_URL", None)
    access_key: Secret | None = _env("S3_ACCESS_KEY", None)
    secret_key: Secret | None = _env("S3_SECRET_KEY", None)
    region_name: str = _env("S3_REGION_NAME", "us-east-1")
    bucket_name: str | None = _env("S3_BUCKET_NAME", None)
    retries: Annotated[int, msgspec.Meta(ge=0, le=20)] = _env("S3_RETRIES", 5)


class ComputeSettings(_Section, frozen=True, kw_only=True):
    container_env: str = _env("CONTAINER_ENV", "docker")
    compute_volume_type: str | None = _env("COMPUTE_VOLUME_TYPE", None)
    storebase: str | None = _env("STOREBASE", None)
    volume_name: str | None = _env("VOLUME_NAME", None)
    pfcon_selector: str = _env("PFCON_SELECTOR", "org.chrisproject.role=pfcon")
    job_logs_tail: Annotated[int, msgspec.Meta(ge=0, le=10_000_000)] = _env("JOB_LOGS_TAIL", 1000)
    job_labels: str = _env("JOB_LABELS", "")
    ignore_limits: bool = _env("IGNORE_LIMITS", False)
    container_user: str | None = _env("CONTAINER_USER", None)
    enable_home_workaround: bool = _env("ENABLE_HOME_WORKAROUND", False)
    shm_size_mib: Annotated[int, msgspec.Meta(ge=1, le=1024 * 1024)] | None = _env("SHM_SIZE", None)
    remove_jobs: bool = _env("REMOVE_JOBS", True)
    pull_images: bool = _env("PULL_IMAGES", False)
    job_network: str | None = _env("JOB_NETWORK", None)
    # The value of the org.chrisproject.pfcon.instance label on every job this server
    # creates; an operator's listing selects by it. Servers sharing a scheduler need
    # distinct values.
    instance: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)] = _env(
        "PFCON_INSTANCE", "pfcon"
    )
    # SLURM (optional) and Cromwell (required): a job's wall-clock limit, in minutes.
    time_limit_minutes: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] | None = _env("TIMELIMIT_MINUTES", None)


class DockerSection(_Section, frozen=True, kw_only=True):
    """How to reach a Docker-API engine (read here, handed to the Docker SDK)."""

    host: str | None = _env("DOCKER_HOST", None)
    tls_verify: str | None = _env("DOCKER_TLS_VERIFY", None)
    cert_path: str | None = _env("DOCKER_CERT_PATH", None)


class OpJobSettings(_Section, frozen=True, kw_only=True):
    """pfcon 6's op jobs (copy, upload, delete): containers of this project's own image."""

    # The image scripts/build-image.sh builds (`make image`); it holds every storage client.
    image: str = _env("PFCON_OP_IMAGE", f"local/pfcon:{__version__}")
    # Docker/Podman: the network op jobs join (they reach Swift or S3); unset: the engine's
    # default. `host` where the engine has no bridge (`make run`, `make test`).
    network: str | None = _env("PFCON_OP_NETWORK", None)


class DashboardSettings(_Section, frozen=True, kw_only=True):
    """The operators' jobs dashboard at ``/dashboard/`` (ADR 22)."""

    enabled: bool = _env("DASHBOARD_ENABLED", True)
    # How long a login lasts (minutes; default: a working day).
    session_minutes: Annotated[int, msgspec.Meta(ge=5, le=7 * 24 * 60)] = _env("DASHBOARD_SESSION_MINUTES", 480)
    # The session cookie's Secure attribute: `auto` sets it when the request came over https.
    cookie_secure: Literal["auto", "always", "never"] = _env("DASHBOARD_COOKIE_SECURE", "auto")


_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class KubernetesSection(_Section, frozen=True, kw_only=True):
    """Kubernetes (``CONTAINER_ENV=kubernetes`` or ``openshift``); storeBase is the PVC ``VOLUME_NAME``."""

    job_namespace: Annotated[str, msgspec.Meta(pattern=_DNS_LABEL, max_length=63)] = _env("JOB_NAMESPACE", "default")
    node_selector: str = _env("NODE_SELECTOR", "")  # k=v,k2=v2
    image_pull_secrets: str = _env("IMAGE_PULL_SECRETS", "")  # CSV of Secret names
    kubeconfig: str | None = _env("KUBECONFIG", None)  # unset: the pod's service account (in-cluster)
    host_network: bool = _env("KUBERNETES_HOST_NETWORK", False)
    resync_seconds: Annotated[float, msgspec.Meta(ge=10, le=3600)] = _env("KUBERNETES_RESYNC_SECONDS", 300.0)
    log_refresh_seconds: Annotated[float, msgspec.Meta(ge=0, le=60)] = _env("KUBERNETES_LOG_REFRESH_SECONDS", 1.0)
    sweep_after: NonNegative = _env("KUBERNETES_SWEEP_AFTER", 0)  # seconds; 0: finished Jobs are kept

    @property
    def node_selector_pairs(self) -> tuple[tuple[str, str], ...]:
        return _labels(self.node_selector)

    @property
    def image_pull_secret_names(self) -> tuple[str, ...]:
        return tuple(name.strip() for name in self.image_pull_secrets.split(",") if name.strip())


class SlurmSection(_Section, frozen=True, kw_only=True):
    """SLURM (``CONTAINER_ENV=slurm``): this host submits with the SLURM commands; storeBase is
    ``STOREBASE`` on a filesystem every node shares (``STOREBASE_MOUNT`` here)."""

    partition: str | None = _env("SLURM_PARTITION", None)
    account: str | None = _env("SLURM_ACCOUNT", None)
    qos: str | None = _env("SLURM_QOS", None)
    sbatch_options: str = _env("SLURM_SBATCH_OPTIONS", "")  # more sbatch options, shell-quoted
    container_runtime: Literal["docker", "podman", "apptainer", "singularity"] = _env(
        "SLURM_CONTAINER_RUNTIME", "docker"
    )
    runtime_command: str | None = _env("SLURM_RUNTIME_COMMAND", None)  # a custom run template
    runtime_stop_command: str | None = _env("SLURM_RUNTIME_STOP_COMMAND", None)
    poll_seconds: Annotated[float, msgspec.Meta(ge=0.1, le=600)] = _env("SLURM_POLL_SECONDS", 2.0)
    submit_rate: Annotated[float, msgspec.Meta(ge=0, le=10_000)] = _env("SLURM_SUBMIT_RATE", 0.0)
    command_timeout: Annotated[float, msgspec.Meta(ge=1, le=600)] = _env("SLURM_COMMAND_TIMEOUT", 30.0)

    @property
    def sbatch_option_list(self) -> tuple[str, ...]:
        return _sbatch_options(self.sbatch_options)


class CromwellSection(_Section, frozen=True, kw_only=True):
    """Cromwell (``CONTAINER_ENV=cromwell``): the server whose backend runs the jobs; storeBase is
    ``STOREBASE`` on the backend's nodes; ``TIMELIMIT_MINUTES`` is required."""

    url: str | None = _env("CROMWELL_URL", None)  # e.g. http://cromwell:8000
    timeout: Annotated[float, msgspec.Meta(gt=0, le=600)] = _env("CROMWELL_TIMEOUT", 30.0)  # seconds per request


class MetricsSection(_Section, frozen=True, kw_only=True):
    """Prometheus metrics at ``/metrics`` (docs/adr/0021-metrics-and-tracing.md)."""

    enabled: bool = _env("METRICS_ENABLED", True)
    # When set, /metrics answers only `Authorization: Bearer <METRICS_TOKEN>` (Prometheus'
    # `authorization` scrape setting); unset: open, like most exporters.
    token: Secret | None = _env("METRICS_TOKEN", None)


MIN_METRICS_TOKEN_BYTES = 16
TRACES_EXPORTERS = ("otlp", "console", "none")


class TracingSection(_Section, frozen=True, kw_only=True):
    """OpenTelemetry tracing, off unless the standard variables ask for it: OTEL_TRACES_EXPORTER
    (otlp, console, none), or an OTLP endpoint. The SDK reads the other OTEL_* variables."""

    sdk_disabled: bool = _env("OTEL_SDK_DISABLED", False)
    traces_exporter: str | None = _env("OTEL_TRACES_EXPORTER", None)
    endpoint: str | None = _env("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    traces_endpoint: str | None = _env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None)
    protocol: str | None = _env("OTEL_EXPORTER_OTLP_PROTOCOL", None)
    traces_protocol: str | None = _env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", None)
    service_name: str | None = _env("OTEL_SERVICE_NAME", None)

    @property
    def exporters(self) -> tuple[str, ...]:
        """The span exporters to run; empty: tracing is off."""
        if self.sdk_disabled:
            return ()
        if self.traces_exporter is not None:
            names = tuple(n.strip().lower() for n in self.traces_exporter.split(",") if n.strip())
            return tuple(n for n in names if n != "none")
        return ("otlp",) if (self.endpoint or self.traces_endpoint) else ()


# Options the SLURM adapter sets itself: a site's SLURM_SBATCH_OPTIONS may not change them.
_OWN_SBATCH_OPTIONS = (
    "-J", "--job-name", "-o", "--output", "-e", "--error", "--comment", "--export", "--parsable", "-D", "--chdir",
    "--wrap", "--requeue", "--no-requeue", "-n", "--ntasks", "-N", "--nodes", "--array", "-a",
)  # fmt: skip


def _sbatch_options(text: str) -> tuple[str, ...]:
    import shlex

    try:
        options = tuple(shlex.split(text))
    except ValueError as e:
        raise ValueError(f"cannot be split like a shell command line: {e}") from None
    for option in options:
        if not option.startswith("-"):
            raise ValueError(f"{option!r} is not an option (each must start with '-', e.g. --constraint=avx2)")
        flag = option.split("=", 1)[0]
        if flag in _OWN_SBATCH_OPTIONS or (
            len(flag) > 2 and not flag.startswith("--") and flag[:2] in _OWN_SBATCH_OPTIONS
        ):
            raise ValueError(f"{flag} is set by the server for every job and cannot be overridden")
    return options


SECTIONS: dict[str, type[_Section]] = {
    "app": AppSettings,
    "auth": AuthSettings,
    "http": HttpSettings,
    "storage": StorageSettings,
    "zip": ZipSettings,
    "swift": SwiftSection,
    "s3": S3Section,
    "compute": ComputeSettings,
    "docker": DockerSection,
    "opjobs": OpJobSettings,
    "kubernetes": KubernetesSection,
    "slurm": SlurmSection,
    "cromwell": CromwellSection,
    "metrics": MetricsSection,
    "tracing": TracingSection,
    "dashboard": DashboardSettings,
}


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Every setting, by section; resolved (dev defaults applied, cross-checks passed)."""

    app: AppSettings = msgspec.field(default_factory=AppSettings)
    auth: AuthSettings = msgspec.field(default_factory=AuthSettings)
    http: HttpSettings = msgspec.field(default_factory=HttpSettings)
    storage: StorageSettings = msgspec.field(default_factory=StorageSettings)
    zip: ZipSettings = msgspec.field(default_factory=ZipSettings)
    swift: SwiftSection = msgspec.field(default_factory=SwiftSection)
    s3: S3Section = msgspec.field(default_factory=S3Section)
    compute: ComputeSettings = msgspec.field(default_factory=ComputeSettings)
    docker: DockerSection = msgspec.field(default_factory=DockerSection)
    opjobs: OpJobSettings = msgspec.field(default_factory=OpJobSettings)
    kubernetes: KubernetesSection = msgspec.field(default_factory=KubernetesSection)
    slurm: SlurmSection = msgspec.field(default_factory=SlurmSection)
    cromwell: CromwellSection = msgspec.field(default_factory=CromwellSection)
    metrics: MetricsSection = msgspec.field(default_factory=MetricsSection)
    tracing: TracingSection = msgspec.field(default_factory=TracingSection)
    dashboard: DashboardSettings = msgspec.field(default_factory=DashboardSettings)

    # -- resolved views used by the composition root ----------------------------
    @property
    def production(self) -> bool:
        return self.app.application_mode == "production"

    @property
    def application_mode(self) -> str:
        return self.app.application_mode

    @property
    def storage_env(self) -> str:
        return self.storage.storage_env or "zipfile"

    @property
    def container_env(self) -> str:
        """The scheduler's registry name (an alias such as ``podman`` resolved)."""
        entry = registry.scheduler(self.compute.container_env)
        return entry.name if entry else self.compute.container_env

    @property
    def compute_volume_type(self) -> str:
        return self.compute.compute_volume_type or VOLUME_TYPES[self.container_env][0]

    @property
    def storebase_host(self) -> str:
        """Where the scheduler finds storeBase (STOREBASE), or pfcon's own mount."""
        return self.compute.storebase or self.storage.storebase_mount

    @property
    def secret_key(self) -> Secret:
        return self.auth.secret_key or Secret(DEV_SECRET_KEY)

    @property
    def pfcon_user(self) -> str:
        return self.auth.pfcon_user or DEV_USER

    @property
    def pfcon_password(self) -> Secret:
        return self.auth.pfcon_password or Secret(DEV_PASSWORD)

    @property
    def job_labels(self) -> tuple[tuple[str, str], ...]:
        return _labels(self.compute.job_labels)

    @property
    def container_user(self) -> ContainerUser | None:
        return parse_container_user(self.compute.container_user)


def _labels(raw: str) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    if not raw.strip():
        return ()
    for item in raw.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected a comma-separated list of key=value, got {item!r}")
        pairs.append((key.strip(), value.strip()))
    return tuple(pairs)


# -- loading -------------------------------------------------------------------


def _raw_value(name: str, annotation: Any, raw: str) -> Any:
    """The environment's text, prepared for msgspec's lax conversion."""
    value = raw.strip()
    if annotation in (bool, "bool"):
        lowered = value.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigError(name, f"expected a boolean (yes/no/true/false/1/0/on/off), got {raw!r}")
    if name == "LOG_LEVEL":
        return value.upper()
    if "Secret" in str(annotation):
        return raw  # a secret is taken as given, spaces included
    return value


def _section_input(section: type[_Section], env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for f in msgspec.structs.fields(section):
        raw = env.get(f.encode_name)
        if raw is None or raw.strip() == "":
            continue  # pfcon treats an empty variable as unset
        values[f.encode_name] = _raw_value(f.encode_name, f.type, raw)
    return values


def _dec_hook(type_: type, obj: Any) -> Any:
    if type_ is Secret and isinstance(obj, str):
        return Secret(obj)
    raise NotImplementedError  # msgspec's protocol: "this hook does not convert that type"


def _variable_of(error: msgspec.ValidationError) -> tuple[str, str]:
    text = str(error)
    message, _, path = text.partition(" - at `$.")
    variable = path.rstrip("`").split(".")[-1] if path else "configuration"
    return variable, message


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read, type and validate every setting from ``environ`` (default: the process's)."""
    env = os.environ if environ is None else environ
    data = {name: _section_input(section, env) for name, section in SECTIONS.items()}
    try:
        settings = msgspec.convert(data, Settings, strict=False, dec_hook=_dec_hook)
    except msgspec.ValidationError as e:
        variable, message = _variable_of(e)
        raw = env.get(variable)
        choices = _choices(variable)
        if choices:
            message = f"must be one of {', '.join(choices)}"
        elif message.startswith("Expected `int`, got"):
            message = "expected an integer"
        elif message.startswith("Expected `float`, got"):
            message = "expected a number"
        shown = "" if raw is None or _is_secret(variable) else f", got {raw!r}"
        raise ConfigError(variable, f"{message}{shown}") from None
    return _validate(settings)


def _choices(variable: str) -> tuple[str, ...]:
    for section in SECTIONS.values():
        for f in msgspec.structs.fields(section):
            if f.encode_name == variable and typing.get_origin(f.type) is Literal:
                return typing.get_args(f.type)
    return ()


def _is_secret(variable: str) -> bool:
    return variable in ("SECRET_KEY", "PFCON_PASSWORD", "SWIFT_KEY", "S3_ACCESS_KEY", "S3_SECRET_KEY", "METRICS_TOKEN")


def _validate(s: Settings) -> Settings:
    """Cross-checks; returns the settings with paths and the storage mode resolved."""
    s = msgspec.structs.replace(
        s,
        storage=msgspec.structs.replace(
            s.storage,
            storage_env=_validate_storage(s),
            storebase_mount=_absolute("STOREBASE_MOUNT", s.storage.storebase_mount),
        ),
        compute=msgspec.structs.replace(s.compute, storebase=_absolute("STOREBASE", s.compute.storebase)),
    )
    _absolute("UPLOAD_DIR", s.http.upload_dir)
    _validate_compute(s)
    _validate_observability(s)
    _validate_production(s)
    return s


def _validate_storage(s: Settings) -> str:
    innetwork = s.storage.innetwork
    storage_env = s.storage.storage_env or ("swift" if innetwork else "zipfile")
    allowed = STORAGE_ENVS_IN_NETWORK if innetwork else STORAGE_ENVS_OUT_OF_NETWORK
    if storage_env not in allowed:
        if innetwork and storage_env in registry.PLANNED_STORAGE:
            raise ConfigError("STORAGE_ENV", f"{storage_env!r} storage is not available in this build yet")
        where = "with PFCON_INNETWORK=true" if innetwork else "unless PFCON_INNETWORK=true"
        raise ConfigError("STORAGE_ENV", f"unsupported value {storage_env!r} {where}; allowed: {', '.join(allowed)}")
    return storage_env


def _validate_compute(s: Settings) -> None:
    raw = s.compute.container_env
    if registry.scheduler(raw) is None:
        supported = ", ".join(n for e in registry.SCHEDULERS for n in (e.name, *e.aliases))
        if raw in registry.PLANNED_SCHEDULERS:
            raise ConfigError("CONTAINER_ENV", f"{raw!r} is not available in this build yet; supported: {supported}")
        raise ConfigError("CONTAINER_ENV", f"unsupported value {raw!r}; supported: {supported}")
    volume_types = VOLUME_TYPES[s.container_env]
    volume_type = s.compute_volume_type
    if volume_type not in volume_types:
        raise ConfigError(
            "COMPUTE_VOLUME_TYPE",
            f"{volume_type!r} is not valid for CONTAINER_ENV={raw!r}; allowed: {', '.join(volume_types)}",
        )
    storebase, volume_name = s.compute.storebase, s.compute.volume_name
    if volume_type == "host":
        if not storebase:
            raise ConfigError("STOREBASE", "is required when COMPUTE_VOLUME_TYPE=host")
        if volume_name:
            raise ConfigError("VOLUME_NAME", "conflicts with COMPUTE_VOLUME_TYPE=host (use STOREBASE)")
    elif storebase:
        raise ConfigError("STOREBASE", f"is only valid with COMPUTE_VOLUME_TYPE=host, not {volume_type}")
    if volume_type == "kubernetes_pvc" and not volume_name:
        raise ConfigError(
            "VOLUME_NAME", "is required when COMPUTE_VOLUME_TYPE=kubernetes_pvc (the PVC holding storeBase)"
        )
    if s.container_env == "kubernetes":
        try:
            _labels(s.kubernetes.node_selector)
        except ValueError as e:
            raise ConfigError("NODE_SELECTOR", str(e)) from None
    try:
        user = parse_container_user(s.compute.container_user)
    except ValueError as e:
        raise ConfigError("CONTAINER_USER", str(e)) from None
    if s.container_env == "slurm":
        _validate_slurm(s, user)
    try:
        _labels(s.compute.job_labels)
    except ValueError as e:
        raise ConfigError("JOB_LABELS", str(e)) from None


def _validate_slurm(s: Settings, user: ContainerUser | None) -> None:
    from .adapters.compute.slurm import RUNTIMES, template_problem

    sl = s.slurm
    try:
        _sbatch_options(sl.sbatch_options)
    except ValueError as e:
        raise ConfigError("SLURM_SBATCH_OPTIONS", str(e)) from None
    if sl.runtime_command is not None:
        problem = template_problem(sl.runtime_command)
        if problem:
            raise ConfigError("SLURM_RUNTIME_COMMAND", problem)
    elif sl.runtime_stop_command is not None:
        raise ConfigError("SLURM_RUNTIME_STOP_COMMAND", "is only used with SLURM_RUNTIME_COMMAND")
    elif user is not None and not RUNTIMES[sl.container_runtime].user_flag:
        raise ConfigError(
            "CONTAINER_USER",
            f"cannot be applied with SLURM_CONTAINER_RUNTIME={sl.container_runtime}: "
            "its containers run as the user who submits the job",
        )


def _validate_observability(s: Settings) -> None:
    m, t = s.metrics, s.tracing
    if m.token is not None:
        if not m.enabled:
            raise ConfigError("METRICS_TOKEN", "is set but METRICS_ENABLED=false: there is no /metrics to protect")
        token = str(m.token)
        if len(token.encode("utf-8")) < MIN_METRICS_TOKEN_BYTES or any(c.isspace() for c in token):
            raise ConfigError(
                "METRICS_TOKEN",
                f"must be at least {MIN_METRICS_TOKEN_BYTES} bytes without spaces "
                "(e.g. `python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`)",
            )
    if t.traces_exporter is not None:
        names = [n.strip().lower() for n in t.traces_exporter.split(",") if n.strip()]
        unknown = [n for n in names if n not in TRACES_EXPORTERS]
        if unknown or not names:
            raise ConfigError(
                "OTEL_TRACES_EXPORTER",
                f"must be a comma-separated list of {', '.join(TRACES_EXPORTERS)}, got {t.traces_exporter!r}",
            )
        if "none" in names and len(names) > 1:
            raise ConfigError("OTEL_TRACES_EXPORTER", f"'none' cannot be combined with other exporters, got {t.traces_exporter!r}")
    for variable, url in (
        ("OTEL_EXPORTER_OTLP_ENDPOINT", t.endpoint),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", t.traces_endpoint),
    ):
        if url is not None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(variable, f"must be an http(s) URL such as http://collector:4318, got {url!r}")
    for variable, protocol in (
        ("OTEL_EXPORTER_OTLP_PROTOCOL", t.protocol),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", t.traces_protocol),
    ):
        if protocol is not None and protocol != "http/protobuf":
            raise ConfigError(
                variable, f"only http/protobuf is supported (this server ships the OTLP/HTTP exporter), got {protocol!r}"
            )


def _absolute(variable: str, path: str | None) -> Any:
    if path is None:
        return None
    if not os.path.isabs(path):
        raise ConfigError(variable, f"must be an absolute path, got {path!r}")
    return path.rstrip("/") or "/"


def _validate_production(s: Settings) -> None:
    """Production fails closed: no dev credential, no guessable key, nothing implied."""
    if not s.production:
        return
    auth = s.auth
    for variable, value in (
        ("SECRET_KEY", auth.secret_key),
        ("PFCON_USER", auth.pfcon_user),
        ("PFCON_PASSWORD", auth.pfcon_password),
    ):
        if not value:
            raise ConfigError(variable, "is required when APPLICATION_MODE=production")
    if auth.secret_key == DEV_SECRET_KEY:
        raise ConfigError("SECRET_KEY", "is the published development key; set a secret one in production")
    if len(str(auth.secret_key).encode("utf-8")) < MIN_SECRET_KEY_BYTES:
        raise ConfigError(
            "SECRET_KEY",
            f"is too short to sign HS256 tokens safely: use at least {MIN_SECRET_KEY_BYTES} random bytes "
            "(e.g. `python3 -c 'import secrets; print(secrets.token_urlsafe(48))'`)",
        )
    if auth.pfcon_password == DEV_PASSWORD:
        raise ConfigError("PFCON_PASSWORD", "is pfcon's published development password; set another in production")
    if s.storage_env == "swift":
        for variable, value in (
            ("SWIFT_AUTH_URL", s.swift.auth_url),
            ("SWIFT_USERNAME", s.swift.username),
            ("SWIFT_KEY", s.swift.key),
            ("SWIFT_CONTAINER_NAME", s.swift.container_name),
        ):
            if not value:
                raise ConfigError(variable, "is required when STORAGE_ENV=swift and APPLICATION_MODE=production")
    if s.storage_env == "s3":
        for variable, value in (
            ("S3_ENDPOINT_URL", s.s3.endpoint_url),
            ("S3_ACCESS_KEY", s.s3.access_key),
            ("S3_SECRET_KEY", s.s3.secret_key),
            ("S3_BUCKET_NAME", s.s3.bucket_name),
        ):
            if not value:
                raise ConfigError(variable, "is required when STORAGE_ENV=s3 and APPLICATION_MODE=production")


# pfcon's development defaults for Swift (only used when APPLICATION_MODE=dev).
SWIFT_DEV_DEFAULTS = {
    "auth_url": "http://swift_service:8080/auth/v1.0",
    "username": "chris:chris1234",
    "key": "testing",
    "container_name": "users",
}

# pfcon's development defaults for S3 (only used when APPLICATION_MODE=dev).
S3_DEV_DEFAULTS = {
    "endpoint_url": "http://s3-service:9000",
    "access_key": "minioadmin",
    "secret_key": "minioadmin",
    "bucket_name": "users",
}
