"""Composition root: the only place that knows which adapter implements which port.

Adapters are chosen by configuration and imported lazily inside their factories,
so a Docker deployment never imports ``kubernetes`` or ``swiftclient``. Tests build
the same container and override ports with fakes.
"""

from __future__ import annotations

import dataclasses
import zipfile
from typing import Any

from dependency_injector import containers, providers

from . import __version__, registry
from .config import SWIFT_DEV_DEFAULTS, ConfigError, Settings
from .domain.model import ComputeCapabilities, ServerInfo
from .registry import SchedulerEntry
from .domain.services import AuthService, JobOptions, JobService


def _docker_client(settings: Settings) -> Any:
    import docker
    import requests

    d = settings.docker
    environment = {
        name: value
        for name, value in (("DOCKER_HOST", d.host), ("DOCKER_TLS_VERIFY", d.tls_verify), ("DOCKER_CERT_PATH", d.cert_path))
        if value
    }
    try:
        client = docker.from_env(environment=environment, max_pool_size=max(10, settings.app.worker_threads))
        client.ping()
    except (docker.errors.DockerException, requests.RequestException) as e:
        where = d.host or "the default socket"
        raise ConfigError("DOCKER_HOST", f"cannot reach a Docker-API engine at {where}: {e}") from None
    return client


def _engine_name(settings: Settings) -> str:
    if settings.compute.container_env == "podman" or "podman" in (settings.docker.host or ""):
        return "Podman service"
    return "Docker engine"


# -- factories, one per registry entry (src/registry.py names them) ---------------------


def docker_compute(settings: Settings, entry: SchedulerEntry) -> Any:
    from .adapters.compute.docker import DockerCompute, DockerOptions, discover_storebase

    client = _docker_client(settings)

    storebase = settings.storebase_host
    if settings.compute_volume_type == "docker_local_volume":
        c = settings.compute
        try:
            storebase = discover_storebase(client, c.volume_name, c.pfcon_selector, settings.storage.storebase_mount)
        except Exception as e:  # noqa: BLE001 - any failure here is a deployment problem
            variable = "VOLUME_NAME" if c.volume_name else "PFCON_SELECTOR"
            raise ConfigError(variable, f"cannot find storeBase (COMPUTE_VOLUME_TYPE=docker_local_volume): {e}") from None
    return DockerCompute(
        client,
        DockerOptions(
            storebase=storebase,
            labels=settings.job_labels,
            ignore_limits=settings.compute.ignore_limits,
            container_user=settings.container_user,
            shm_size_mib=settings.compute.shm_size_mib,
            pull_images=settings.compute.pull_images,
            network=settings.compute.job_network,
            engine_name=_engine_name(settings),
            capabilities=_podman_capabilities(entry) if _engine_name(settings) == "Podman service" else entry.capabilities,
        ),
    )


def swarm_compute(settings: Settings, entry: SchedulerEntry) -> Any:
    from .adapters.compute.swarm import SwarmCompute, SwarmOptions
    from .domain.errors import BackendUnavailable

    compute = SwarmCompute(
        _docker_client(settings),
        SwarmOptions(
            storebase=settings.storebase_host,
            labels=settings.job_labels,
            ignore_limits=settings.compute.ignore_limits,
            container_user=settings.container_user,
            shm_size_mib=settings.compute.shm_size_mib,
            capabilities=entry.capabilities,
        ),
    )
    try:
        compute.ping()
    except BackendUnavailable as e:
        where = settings.docker.host or "the default socket"
        raise ConfigError(
            "DOCKER_HOST",
            f"the engine at {where} is not a Docker Swarm manager ({e.message}); "
            "run `docker swarm init` there (scripts/swarm.sh start) or point DOCKER_HOST at a manager",
        ) from None
    return compute


def _podman_capabilities(entry: SchedulerEntry) -> ComputeCapabilities:
    # Podman's Docker-compatible API drops GPU requests silently (the adapter detects and
    # refuses them): GPUs are not a capability of this engine.
    return dataclasses.replace(entry.capabilities, gpus=False)


def _storebase(settings: Settings) -> Any:
    from .adapters.storage.local import StoreBase

    return StoreBase(settings.storage.storebase_mount)


def zipfile_storage(settings: Settings, storebase: Any) -> Any:
    from .adapters.storage.zipfile import ZipFileStorage, ZipLimits

    return ZipFileStorage(
        storebase,
        ZipLimits(
            max_entries=settings.zip.max_entries,
            max_uncompressed_bytes=settings.zip.max_uncompressed_bytes,
            max_ratio=settings.zip.max_ratio,
            ratio_min_bytes=settings.zip.ratio_min_bytes,
            reserve_bytes=settings.storage.reserve_bytes,
        ),
        compression=_zip_compression(settings),
    )


def _zip_compression(settings: Settings) -> int:
    return zipfile.ZIP_DEFLATED if settings.storage.output_zip_compression == "deflated" else zipfile.ZIP_STORED


def filesystem_storage(settings: Settings, storebase: Any) -> Any:
    from .adapters.storage.filesystem import FileSystemStorage

    return FileSystemStorage(storebase, workers=settings.storage.staging_workers)


def fslink_storage(settings: Settings, storebase: Any) -> Any:
    from .adapters.storage.filesystem import FsLinkStorage

    return FsLinkStorage(storebase, workers=settings.storage.staging_workers)


def swift_storage(settings: Settings, storebase: Any) -> Any:
    from .adapters.storage.swift import SwiftSettings, SwiftStorage

    swift = swift_options(settings)

    storage = SwiftStorage(
        storebase,
        SwiftSettings(
            auth_url=swift["auth_url"],
            username=swift["username"],
            key=swift["key"],
            container=swift["container_name"],
            retries=settings.swift.retries,
        ),
        workers=settings.storage.staging_workers,
        compression=_zip_compression(settings),
    )
    if not settings.production:
        try:
            storage.ensure_container()  # pfcon's dev mode creates the container too
        except Exception as e:  # noqa: BLE001
            raise ConfigError("SWIFT_AUTH_URL", f"cannot use Swift at {swift['auth_url']}: {e}") from None
    return storage


def swift_options(settings: Settings) -> dict[str, str]:
    """Swift's connection settings; pfcon's dev defaults fill what dev mode leaves unset."""
    s = settings.swift
    values = {"auth_url": s.auth_url, "username": s.username, "key": s.key, "container_name": s.container_name}
    if settings.production:
        return {k: v or "" for k, v in values.items()}
    return {k: v or SWIFT_DEV_DEFAULTS[k] for k, v in values.items()}


def _jwt_auth(settings: Settings) -> Any:
    from .adapters.auth.jwt import JwtAuth

    return JwtAuth(settings.secret_key, settings.pfcon_user, settings.pfcon_password)


def server_info(settings: Settings) -> ServerInfo:
    extra: tuple[tuple[str, str], ...] = ()
    if settings.storage.innetwork and settings.storage_env == "swift":
        extra = (("swift_auth_url", swift_options(settings)["auth_url"]),)
    return ServerInfo(
        server_version=__version__,
        pfcon_innetwork=settings.storage.innetwork,
        storage_env=settings.storage_env,
        container_env=settings.container_env,
        compute_volume_type=settings.compute_volume_type,
        extra=extra,
    )


def job_options(settings: Settings) -> JobOptions:
    return JobOptions(
        log_tail=settings.compute.job_logs_tail,
        extra_env=("HOME=/tmp",) if settings.compute.enable_home_workaround else (),
        remove_jobs=settings.compute.remove_jobs,
    )


def _factory(name: str) -> Any:
    factory = globals().get(name)
    if not callable(factory):
        raise LookupError(f"the registry names a factory {name!r} that the composition root does not have")
    return factory


def _compute(settings: Settings) -> Any:
    entry = registry.scheduler(settings.container_env)
    if entry is None:  # load_settings refuses this already
        raise ConfigError("CONTAINER_ENV", f"unsupported value {settings.compute.container_env!r}")
    return _factory(entry.factory)(settings, entry)


def _storage(settings: Settings, storebase: Any) -> Any:
    entry = registry.storage_mode(settings.storage_env)
    if entry is None:
        raise ConfigError("STORAGE_ENV", f"unsupported value {settings.storage_env!r}")
    return _factory(entry.factory)(settings, storebase)


class Container(containers.DeclarativeContainer):
    settings = providers.Dependency(instance_of=Settings)

    storebase = providers.Singleton(_storebase, settings)
    compute = providers.Singleton(_compute, settings)
    storage = providers.Singleton(_storage, settings, storebase)
    auth = providers.Singleton(_jwt_auth, settings)

    job_service = providers.Singleton(
        JobService,
        compute=compute,
        storage=storage,
        server_info=providers.Callable(server_info, settings),
        options=providers.Callable(job_options, settings),
    )
    auth_service = providers.Singleton(AuthService, auth)


def build_container(settings: Settings, **overrides: Any) -> Container:
    """Build the container; ``overrides`` replace ports by name (e.g. compute=FakeCompute())."""
    container = Container(settings=settings)
    for name, value in overrides.items():
        getattr(container, name).override(providers.Object(value))
    return container


def wire_up(container: Container) -> tuple[JobService, AuthService]:
    """Construct every adapter now, so a bad configuration fails at startup."""
    return container.job_service(), container.auth_service()
