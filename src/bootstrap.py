"""Composition root: the only place that knows which adapter implements which port.

Adapters are chosen by configuration and imported lazily inside their factories,
so a Docker deployment never imports ``kubernetes`` or ``swiftclient``. Tests build
the same container and override ports with fakes.
"""

from __future__ import annotations

import os
import zipfile
from typing import Any

from dependency_injector import containers, providers

from . import __version__
from .config import ConfigError, Settings
from .domain.model import ServerInfo
from .domain.services import AuthService, JobOptions, JobService


def _docker_client(settings: Settings) -> Any:
    import docker

    try:
        client = docker.from_env(max_pool_size=max(10, settings.worker_threads))
        client.ping()
    except docker.errors.DockerException as e:
        where = os.environ.get("DOCKER_HOST") or "the default socket"
        raise ConfigError("DOCKER_HOST", f"cannot reach a Docker-API engine at {where}: {e}") from None
    return client


def _docker_compute(settings: Settings, client: Any) -> Any:
    from .adapters.compute.docker import DockerCompute, DockerOptions, discover_storebase

    storebase = settings.storebase_host
    if settings.compute_volume_type == "docker_local_volume":
        try:
            storebase = discover_storebase(
                client, settings.volume_name, settings.pfcon_selector, settings.storebase_mount
            )
        except Exception as e:  # noqa: BLE001 - any failure here is a deployment problem
            variable = "VOLUME_NAME" if settings.volume_name else "PFCON_SELECTOR"
            raise ConfigError(variable, f"cannot find storeBase (COMPUTE_VOLUME_TYPE=docker_local_volume): {e}") from None
    return DockerCompute(
        client,
        DockerOptions(
            storebase=storebase,
            labels=settings.job_labels,
            ignore_limits=settings.ignore_limits,
            container_user=settings.container_user,
            shm_size_mib=settings.shm_size_mib,
            pull_images=settings.pull_images,
            network=settings.job_network,
        ),
    )


def _storebase(settings: Settings) -> Any:
    from .adapters.storage.local import StoreBase

    return StoreBase(settings.storebase_mount)


def _zipfile_storage(settings: Settings, storebase: Any) -> Any:
    from .adapters.storage.zipfile import ZipFileStorage, ZipLimits

    return ZipFileStorage(
        storebase,
        ZipLimits(
            max_entries=settings.zip_max_entries,
            max_uncompressed_bytes=settings.zip_max_uncompressed_bytes,
        ),
        compression=_zip_compression(settings),
    )


def _zip_compression(settings: Settings) -> int:
    return zipfile.ZIP_DEFLATED if settings.output_zip_compression == "deflated" else zipfile.ZIP_STORED


def _filesystem_storage(settings: Settings, storebase: Any) -> Any:
    from .adapters.storage.filesystem import FileSystemStorage

    return FileSystemStorage(storebase, workers=settings.staging_workers)


def _fslink_storage(settings: Settings, storebase: Any) -> Any:
    from .adapters.storage.filesystem import FsLinkStorage

    return FsLinkStorage(storebase, workers=settings.staging_workers)


def _swift_storage(settings: Settings, storebase: Any) -> Any:
    from .adapters.storage.swift import SwiftSettings, SwiftStorage

    storage = SwiftStorage(
        storebase,
        SwiftSettings(
            auth_url=settings.swift_auth_url,
            username=settings.swift_username,
            key=settings.swift_key,
            container=settings.swift_container_name,
            retries=settings.swift_retries,
        ),
        workers=settings.staging_workers,
        compression=_zip_compression(settings),
    )
    if settings.application_mode != "production":
        try:
            storage.ensure_container()  # pfcon's dev mode creates the container too
        except Exception as e:  # noqa: BLE001
            raise ConfigError("SWIFT_AUTH_URL", f"cannot use Swift at {settings.swift_auth_url}: {e}") from None
    return storage


def _jwt_auth(settings: Settings) -> Any:
    from .adapters.auth.jwt import JwtAuth

    return JwtAuth(settings.secret_key, settings.pfcon_user, settings.pfcon_password)


def server_info(settings: Settings) -> ServerInfo:
    extra: tuple[tuple[str, str], ...] = ()
    if settings.innetwork and settings.storage_env == "swift":
        extra = (("swift_auth_url", settings.swift_auth_url),)
    return ServerInfo(
        server_version=__version__,
        pfcon_innetwork=settings.innetwork,
        storage_env=settings.storage_env,
        container_env=settings.container_env,
        compute_volume_type=settings.compute_volume_type,
        extra=extra,
    )


def job_options(settings: Settings) -> JobOptions:
    return JobOptions(
        log_tail=settings.job_logs_tail,
        extra_env=("HOME=/tmp",) if settings.enable_home_workaround else (),
        remove_jobs=settings.remove_jobs,
    )


class Container(containers.DeclarativeContainer):
    settings = providers.Dependency(instance_of=Settings)

    storebase = providers.Singleton(_storebase, settings)
    docker_client = providers.Singleton(_docker_client, settings)

    compute = providers.Selector(
        settings.provided.container_env,
        docker=providers.Singleton(_docker_compute, settings, docker_client),
    )
    storage = providers.Selector(
        settings.provided.storage_env,
        zipfile=providers.Singleton(_zipfile_storage, settings, storebase),
        filesystem=providers.Singleton(_filesystem_storage, settings, storebase),
        fslink=providers.Singleton(_fslink_storage, settings, storebase),
        swift=providers.Singleton(_swift_storage, settings, storebase),
    )
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
