"""Configuration: pfcon's environment variables, parsed once and validated at startup.

A bad value raises :class:`ConfigError` naming the variable; entrypoints turn that
into a one-line message and a non-zero exit, never a 500 per request.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f"}

CONTAINER_ENVS_BUILT = ("docker",)
CONTAINER_ENVS_PLANNED = ("swarm", "kubernetes", "openshift", "cromwell", "slurm")
STORAGE_ENVS_OUT_OF_NETWORK = ("zipfile",)
STORAGE_ENVS_IN_NETWORK = ("swift", "filesystem", "fslink")
STORAGE_ENVS_BUILT = ("zipfile", "filesystem", "fslink", "swift")
VOLUME_TYPES = {"docker": ("docker_local_volume", "host")}

DEV_SECRET_KEY = "dev-only-secret-key-change-me-in-production"  # noqa: S105 (dev default)
GiB = 1024**3


class ConfigError(ValueError):
    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable


@dataclass(frozen=True, slots=True)
class IdSpec:
    """One side of CONTAINER_USER: a fixed id or an inclusive range."""

    low: int
    high: int

    def pick(self) -> int:
        return self.low if self.low == self.high else random.randint(self.low, self.high)  # noqa: S311 (not a secret)


@dataclass(frozen=True, slots=True)
class ContainerUser:
    uid: IdSpec | None
    gid: IdSpec | None

    def pick(self) -> tuple[int | None, int | None]:
        return (
            self.uid.pick() if self.uid else None,
            self.gid.pick() if self.gid else None,
        )


def parse_container_user(value: str | None) -> ContainerUser | None:
    """``UID:GID`` where each side is empty, an int or a range ``lo-hi``."""
    if value is None or value in ("", ":"):
        return None
    if value.count(":") != 1:
        raise ValueError(f'"{value}" does not match format UID:GID')
    uid_s, gid_s = value.split(":")

    def side(text: str) -> IdSpec | None:
        if text == "":
            return None
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", text)
        if not m:
            raise ValueError(f'"{text}" is not an id or a range lo-hi')
        low = int(m.group(1))
        high = int(m.group(2)) if m.group(2) else low
        if high < low or high > 2**31 - 1:
            raise ValueError(f'"{text}" is not a valid id range')
        return IdSpec(low, high)

    user = ContainerUser(side(uid_s), side(gid_s))
    return None if user.uid is None and user.gid is None else user


@dataclass(frozen=True, slots=True)
class Settings:
    application_mode: str = "dev"
    secret_key: str = DEV_SECRET_KEY
    pfcon_user: str = "pfcon"
    pfcon_password: str = "pfcon1234"  # noqa: S105 (pfcon's dev default)
    innetwork: bool = False
    storage_env: str = "zipfile"
    storebase_mount: str = "/var/local/storeBase"
    job_logs_tail: int = 1000
    job_labels: tuple[tuple[str, str], ...] = ()
    ignore_limits: bool = False
    container_user: ContainerUser | None = None
    enable_home_workaround: bool = False
    shm_size_mib: int | None = None
    container_env: str = "docker"
    compute_volume_type: str = "host"
    storebase: str | None = None
    volume_name: str | None = None
    pfcon_selector: str = "org.chrisproject.role=pfcon"
    remove_jobs: bool = True
    swift_auth_url: str = "http://swift_service:8080/auth/v1.0"
    swift_username: str = "chris:chris1234"
    swift_key: str = field(default="testing", repr=False)
    swift_container_name: str = "users"
    swift_retries: int = 5
    host: str = "0.0.0.0"  # noqa: S104 (pfcon listens on all interfaces)
    port: int = 5005
    # Extensions of this implementation (not in pfcon):
    pull_images: bool = False
    job_network: str | None = None
    upload_dir: str | None = None
    worker_threads: int = 32
    zip_max_upload_bytes: int = 64 * GiB
    zip_max_uncompressed_bytes: int = 64 * GiB
    zip_max_entries: int = 1_000_000
    output_zip_compression: str = "stored"
    staging_workers: int = 8
    log_level: str = "INFO"

    def __repr__(self) -> str:  # never print secrets
        return f"Settings(container_env={self.container_env!r}, storage_env={self.storage_env!r})"

    @property
    def storebase_host(self) -> str:
        """Where the scheduler finds storeBase (STOREBASE), or pfcon's own mount."""
        return self.storebase or self.storebase_mount


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(name, f"expected a boolean (yes/no/true/false/1/0/on/off), got {raw!r}")


def _int(env: Mapping[str, str], name: str, default: int | None, low: int, high: int) -> int | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(name, f"expected an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(name, f"must be between {low} and {high}, got {value}")
    return value


def _dict(env: Mapping[str, str], name: str) -> tuple[tuple[str, str], ...]:
    raw = env.get(name, "").strip()
    if not raw:
        return ()
    pairs = []
    for item in raw.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(name, f"expected a comma-separated list of key=value, got {item!r}")
        pairs.append((key.strip(), value.strip()))
    return tuple(pairs)


def _dir(env: Mapping[str, str], name: str) -> str | None:
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    if not os.path.isabs(raw):
        raise ConfigError(name, f"must be an absolute path, got {raw!r}")
    return raw


def _required(env: Mapping[str, str], name: str, production: bool, default: str) -> str:
    value = env.get(name)
    if value:
        return value
    if production:
        raise ConfigError(name, "is required when APPLICATION_MODE=production")
    return default


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    mode = (env.get("APPLICATION_MODE") or "production").strip()
    production = mode == "production"
    d = Settings()

    innetwork = _bool(env, "PFCON_INNETWORK", False)
    storage_env = (env.get("STORAGE_ENV") or ("swift" if innetwork else "zipfile")).strip()
    allowed = STORAGE_ENVS_IN_NETWORK if innetwork else STORAGE_ENVS_OUT_OF_NETWORK
    if storage_env not in allowed:
        where = "with PFCON_INNETWORK=true" if innetwork else "unless PFCON_INNETWORK=true"
        raise ConfigError(
            "STORAGE_ENV",
            f"unsupported value {storage_env!r} {where}; allowed: {', '.join(allowed)}",
        )
    if storage_env not in STORAGE_ENVS_BUILT:
        raise ConfigError("STORAGE_ENV", f"{storage_env!r} storage is not available in this build yet")

    raw_container_env = (env.get("CONTAINER_ENV") or "docker").strip()
    container_env = "docker" if raw_container_env == "podman" else raw_container_env
    if container_env not in CONTAINER_ENVS_BUILT:
        if container_env in CONTAINER_ENVS_PLANNED:
            raise ConfigError(
                "CONTAINER_ENV",
                f"{raw_container_env!r} is not available in this build yet; "
                f"supported: docker, podman",
            )
        raise ConfigError("CONTAINER_ENV", f"unsupported value {raw_container_env!r}")

    volume_types = VOLUME_TYPES[container_env]
    volume_type = (env.get("COMPUTE_VOLUME_TYPE") or volume_types[0]).strip()
    if volume_type not in volume_types:
        raise ConfigError(
            "COMPUTE_VOLUME_TYPE",
            f"{volume_type!r} is not valid for CONTAINER_ENV={raw_container_env!r}; "
            f"allowed: {', '.join(volume_types)}",
        )
    storebase = env.get("STOREBASE") or None
    volume_name = env.get("VOLUME_NAME") or None
    if volume_type == "host":
        if not storebase:
            raise ConfigError("STOREBASE", "is required when COMPUTE_VOLUME_TYPE=host")
        if not os.path.isabs(storebase):
            raise ConfigError("STOREBASE", f"must be an absolute path, got {storebase!r}")
        if volume_name:
            raise ConfigError("VOLUME_NAME", "conflicts with COMPUTE_VOLUME_TYPE=host (use STOREBASE)")
    elif storebase:
        raise ConfigError("STOREBASE", f"is only valid with COMPUTE_VOLUME_TYPE=host, not {volume_type}")

    storebase_mount = (env.get("STOREBASE_MOUNT") or d.storebase_mount).strip()
    if not os.path.isabs(storebase_mount):
        raise ConfigError("STOREBASE_MOUNT", f"must be an absolute path, got {storebase_mount!r}")

    try:
        container_user = parse_container_user(env.get("CONTAINER_USER"))
    except ValueError as e:
        raise ConfigError("CONTAINER_USER", str(e)) from None

    compression = (env.get("OUTPUT_ZIP_COMPRESSION") or d.output_zip_compression).strip().lower()
    if compression not in ("stored", "deflated"):
        raise ConfigError("OUTPUT_ZIP_COMPRESSION", "must be 'stored' or 'deflated'")

    log_level = (env.get("LOG_LEVEL") or d.log_level).strip().upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError("LOG_LEVEL", "must be one of DEBUG, INFO, WARNING, ERROR")

    swift_required = innetwork and storage_env == "swift" and production

    def swift(name: str, default: str) -> str:
        return _required(env, name, swift_required, default)

    secret_key = _required(env, "SECRET_KEY", production, DEV_SECRET_KEY)
    return Settings(
        application_mode=mode,
        secret_key=secret_key,
        pfcon_user=_required(env, "PFCON_USER", production, d.pfcon_user),
        pfcon_password=_required(env, "PFCON_PASSWORD", production, d.pfcon_password),
        innetwork=innetwork,
        storage_env=storage_env,
        storebase_mount=storebase_mount.rstrip("/") or "/",
        job_logs_tail=_int(env, "JOB_LOGS_TAIL", d.job_logs_tail, 0, 10_000_000),  # type: ignore[arg-type]
        job_labels=_dict(env, "JOB_LABELS"),
        ignore_limits=_bool(env, "IGNORE_LIMITS", False),
        container_user=container_user,
        enable_home_workaround=_bool(env, "ENABLE_HOME_WORKAROUND", False),
        shm_size_mib=_int(env, "SHM_SIZE", None, 1, 1024 * 1024),
        container_env=container_env,
        compute_volume_type=volume_type,
        storebase=(storebase.rstrip("/") or "/") if storebase else None,
        volume_name=volume_name,
        pfcon_selector=(env.get("PFCON_SELECTOR") or d.pfcon_selector).strip(),
        remove_jobs=_bool(env, "REMOVE_JOBS", True),
        swift_auth_url=swift("SWIFT_AUTH_URL", d.swift_auth_url),
        swift_username=swift("SWIFT_USERNAME", d.swift_username),
        swift_key=swift("SWIFT_KEY", d.swift_key),
        swift_container_name=swift("SWIFT_CONTAINER_NAME", d.swift_container_name),
        swift_retries=_int(env, "SWIFT_RETRIES", d.swift_retries, 0, 20),  # type: ignore[arg-type]
        host=(env.get("HOST") or d.host).strip(),
        port=_int(env, "PORT", d.port, 1, 65535),  # type: ignore[arg-type]
        pull_images=_bool(env, "PULL_IMAGES", False),
        job_network=(env.get("JOB_NETWORK") or "").strip() or None,
        upload_dir=_dir(env, "UPLOAD_DIR"),
        worker_threads=_int(env, "WORKER_THREADS", d.worker_threads, 1, 1024),  # type: ignore[arg-type]
        zip_max_upload_bytes=_int(env, "ZIP_MAX_UPLOAD_BYTES", d.zip_max_upload_bytes, 1, 2**62),  # type: ignore[arg-type]
        zip_max_uncompressed_bytes=_int(
            env, "ZIP_MAX_UNCOMPRESSED_BYTES", d.zip_max_uncompressed_bytes, 1, 2**62
        ),  # type: ignore[arg-type]
        zip_max_entries=_int(env, "ZIP_MAX_ENTRIES", d.zip_max_entries, 1, 100_000_000),  # type: ignore[arg-type]
        output_zip_compression=compression,
        staging_workers=_int(env, "STAGING_WORKERS", d.staging_workers, 1, 256),  # type: ignore[arg-type]
        log_level=log_level,
    )
