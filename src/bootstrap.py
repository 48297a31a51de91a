"""Composition root: the only place that knows which adapter implements which port.

Adapters are chosen by configuration and imported lazily inside their factories,
so a Docker deployment never imports ``kubernetes`` or ``swiftclient``. Tests build
the same container and override ports with fakes.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from typing import Any

from dependency_injector import containers, providers

from . import __version__, registry
from .config import S3_DEV_DEFAULTS, SWIFT_DEV_DEFAULTS, ConfigError, Settings, load_settings
from .domain.model import ComputeCapabilities, ServerInfo, StorageFlow
from .domain.opjobs import OpJobOptions, OpJobService
from .registry import SchedulerEntry
from .domain.services import AuthService, JobOptions, JobService


def _docker_client(settings: Settings) -> Any:
    import docker
    import requests

    d = settings.docker
    environment = {
        name: value
        for name, value in (
            ("DOCKER_HOST", d.host),
            ("DOCKER_TLS_VERIFY", d.tls_verify),
            ("DOCKER_CERT_PATH", d.cert_path),
        )
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
    from .adapters.compute.docker import STATE_DIR, DockerCompute, DockerOptions, discover_storebase

    client = _docker_client(settings)

    storebase = settings.storebase_host
    if settings.compute_volume_type == "docker_local_volume":
        c = settings.compute
        try:
            storebase = discover_storebase(client, c.volume_name, c.pfcon_selector, settings.storage.storebase_mount)
        except Exception as e:  # noqa: BLE001 - any failure here is a deployment problem
            variable = "VOLUME_NAME" if c.volume_name else "PFCON_SELECTOR"
            raise ConfigError(
                variable, f"cannot find storeBase (COMPUTE_VOLUME_TYPE=docker_local_volume): {e}"
            ) from None
    podman = _engine_name(settings) == "Podman service"
    compute = DockerCompute(
        client,
        DockerOptions(
            storebase=storebase,
            labels=settings.job_labels,
            ignore_limits=settings.compute.ignore_limits,
            container_user=settings.container_user,
            supplemental_groups=plugin_groups(settings),
            shm_size_mib=settings.compute.shm_size_mib,
            pull_images=settings.compute.pull_images,
            network=settings.compute.job_network,
            op_network=settings.opjobs.network,
            engine_name=_engine_name(settings),
            capabilities=_podman_capabilities(entry) if podman else entry.capabilities,
            # status from the engine's event stream (docs/adr/0018-docker-status-view.md)
            status_view=True,
            # cancellations, recorded beside the key-<jid>/ dirs (docs/adr/0020-cancel-is-not-delete.md)
            state_dir=os.path.join(settings.storage.storebase_mount, STATE_DIR),
        ),
    )
    if compute.view is not None:
        compute.view.wait_current(5)  # start with a current view (until then, status reads inspect)
    return compute


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
            supplemental_groups=plugin_groups(settings),
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


def slurm_compute(settings: Settings, entry: SchedulerEntry) -> Any:
    import shutil

    from .adapters.compute.slurm import RUNTIMES, Runtime, SlurmCompute, SlurmOptions

    missing = [cmd for cmd in ("sbatch", "squeue", "scancel", "scontrol") if shutil.which(cmd) is None]
    if missing:
        raise ConfigError(
            "CONTAINER_ENV",
            f"slurm needs the SLURM commands on this host's PATH (missing: {', '.join(missing)}); "
            "run the server on a submit host (slurm-client, munge and the cluster's slurm.conf)",
        )
    sl = settings.slurm
    if sl.runtime_command:
        runtime = Runtime("custom", sl.runtime_command, stop=sl.runtime_stop_command or "")
    else:
        runtime = RUNTIMES[sl.container_runtime]
    return SlurmCompute(
        SlurmOptions(
            storebase=settings.storebase_host,
            local_storebase=settings.storage.storebase_mount,
            runtime=runtime,
            partition=sl.partition,
            account=sl.account,
            qos=sl.qos,
            time_limit_minutes=settings.compute.time_limit_minutes,
            sbatch_options=sl.sbatch_option_list,
            container_user=settings.container_user,
            supplemental_groups=plugin_groups(settings),
            ignore_limits=settings.compute.ignore_limits,
            pull_images=settings.compute.pull_images,
            network=settings.compute.job_network,
            op_network=settings.opjobs.network,
            poll_seconds=sl.poll_seconds,
            submit_rate=sl.submit_rate,
            command_timeout=sl.command_timeout,
            capabilities=entry.capabilities,
        )
    )


def cromwell_compute(settings: Settings, entry: SchedulerEntry) -> Any:
    from urllib.parse import urlsplit

    from .adapters.compute.cromwell import CromwellCompute, CromwellOptions, make_client
    from .domain.errors import BackendUnavailable

    url, minutes = settings.cromwell.url, settings.compute.time_limit_minutes
    if not url:
        raise ConfigError("CROMWELL_URL", "is required when CONTAINER_ENV=cromwell")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("CROMWELL_URL", "must be an http(s) URL such as http://cromwell:8000")
    if minutes is None:
        raise ConfigError("TIMELIMIT_MINUTES", "is required when CONTAINER_ENV=cromwell")
    options = CromwellOptions(
        url=url,
        storebase=settings.storebase_host,
        timelimit_minutes=minutes,
        labels=settings.job_labels,
        ignore_limits=settings.compute.ignore_limits,
        container_user=settings.container_user,
        timeout_seconds=settings.cromwell.timeout,
        capabilities=entry.capabilities,
    )
    try:
        compute = CromwellCompute(make_client(options), options)
    except ValueError as e:  # a STOREBASE a runtime attribute cannot carry
        raise ConfigError("STOREBASE", str(e)) from None
    try:
        compute.ping()  # GET /engine/v1/version
    except BackendUnavailable as e:
        raise ConfigError("CROMWELL_URL", f"cannot use the Cromwell server: {e.message}") from None
    return compute


def kubernetes_compute(settings: Settings, entry: SchedulerEntry) -> Any:
    from .adapters.compute.kubernetes import (
        KubeApi, KubernetesCompute, KubernetesOptions, check_storebase_claim, labels_problem,
    )  # fmt: skip
    from .domain.errors import BackendUnavailable

    k, c = settings.kubernetes, settings.compute
    for variable, pairs in (("JOB_LABELS", settings.job_labels), ("NODE_SELECTOR", k.node_selector_pairs)):
        why = labels_problem(pairs)
        if why:
            raise ConfigError(variable, why)
    where = k.kubeconfig or "the in-cluster service account"
    try:
        api = KubeApi.connect(k.kubeconfig)
    except Exception as e:  # noqa: BLE001 - a missing or broken kubeconfig / service account
        raise ConfigError("KUBECONFIG", f"cannot load the Kubernetes configuration from {where}: {e}") from None
    try:
        api.list("jobs", k.job_namespace, "app.kubernetes.io/managed-by=pfcon", limit=1)  # reachable, and allowed
        problem = check_storebase_claim(api, k.job_namespace, c.volume_name or "")
    except BackendUnavailable as e:
        raise ConfigError("KUBECONFIG", f"cannot use the Kubernetes API server ({where}): {e.message}") from None
    except Exception as e:  # noqa: BLE001 - ApiError: 401/403 (credentials, RBAC)
        raise ConfigError("JOB_NAMESPACE", f"cannot list Jobs in namespace {k.job_namespace!r}: {e}") from None
    if problem:
        raise ConfigError("VOLUME_NAME", problem)
    options = KubernetesOptions(
        volume_name=c.volume_name,
        namespace=k.job_namespace,
        labels=settings.job_labels,
        node_selector=k.node_selector_pairs,
        image_pull_secrets=k.image_pull_secret_names,
        ignore_limits=c.ignore_limits,
        container_user=settings.container_user,
        supplemental_groups=plugin_groups(settings),
        shm_size_mib=c.shm_size_mib,
        host_network=k.host_network,
        resync_seconds=k.resync_seconds,
        log_refresh_seconds=k.log_refresh_seconds,
        sweep_after_seconds=float(k.sweep_after),
        capabilities=entry.capabilities,
    )
    compute = KubernetesCompute(api, options)
    compute.view.wait_current(10)  # start with a warm view (until then, status reads go direct)
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


def s3_storage(settings: Settings, storebase: Any) -> Any:
    from .adapters.storage.s3 import S3Settings, S3Storage

    s3 = s3_options(settings)
    try:
        storage = S3Storage(
            storebase,
            S3Settings(
                endpoint_url=s3["endpoint_url"],
                access_key=s3["access_key"],
                secret_key=s3["secret_key"],
                bucket=s3["bucket_name"],
                region=s3["region_name"],
                retries=settings.s3.retries,
                concurrency=settings.storage.staging_workers,
            ),
            workers=settings.storage.staging_workers,
            compression=_zip_compression(settings),
        )
    except Exception as e:  # noqa: BLE001 - botocore refuses the endpoint or region
        raise ConfigError("S3_ENDPOINT_URL", f"cannot use S3 at {s3['endpoint_url']}: {e}") from None
    if not settings.production:
        try:
            storage.ensure_container()  # pfcon's dev mode creates the bucket too
        except Exception as e:  # noqa: BLE001
            raise ConfigError("S3_ENDPOINT_URL", f"cannot use S3 at {s3['endpoint_url']}: {e}") from None
    return storage


def s3_options(settings: Settings) -> dict[str, str]:
    """S3's connection settings; pfcon's dev defaults fill what dev mode leaves unset."""
    s = settings.s3
    values = {
        "endpoint_url": s.endpoint_url, "access_key": s.access_key, "secret_key": s.secret_key,
        "bucket_name": s.bucket_name,
    }  # fmt: skip
    if settings.production:
        resolved = {k: v or "" for k, v in values.items()}
    else:
        resolved = {k: v or S3_DEV_DEFAULTS[k] for k, v in values.items()}
    return {**resolved, "region_name": s.region_name}


def _jwt_auth(settings: Settings) -> Any:
    from .adapters.auth.jwt import JwtAuth

    return JwtAuth(settings.secret_key, settings.pfcon_user, settings.pfcon_password)


def server_info(settings: Settings) -> ServerInfo:
    extra: tuple[tuple[str, str], ...] = ()
    if settings.storage.innetwork and settings.storage_env == "swift":
        extra = (("swift_auth_url", swift_options(settings)["auth_url"]),)
    elif settings.storage.innetwork and settings.storage_env == "s3":
        extra = (("s3_endpoint_url", s3_options(settings)["endpoint_url"]),)
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
        instance=settings.compute.instance,
    )


# -- pfcon 6's op jobs ------------------------------------------------------------------

OP_DEFAULT_USER = (10001, 10001)  # the user of the image scripts/build-image.sh builds (Dockerfile)


def storage_flow(settings: Settings) -> StorageFlow:
    """Which op jobs a client runs in this storage mode (pfcon 6's requires_*_job)."""
    entry = registry.storage_mode(settings.storage_env)
    if entry is None or not settings.storage.innetwork:
        return StorageFlow()
    return StorageFlow(copy_job=entry.copy_job, upload_job=entry.upload_job)


def op_user(settings: Settings) -> tuple[int, int]:
    """The user op jobs run as: this server's own, so that what they write is the server's
    (pfcon does the same). Never root: a server running as root hands ``key-<jid>/`` to
    CONTAINER_USER's user (the low end of a range) or else to the op image's own user."""
    uid, gid = os.getuid(), os.getgid()
    if uid != 0:
        return uid, gid
    user = settings.container_user
    if user is not None and user.uid is not None and user.uid.low != 0:
        return user.uid.low, user.gid.low if user.gid is not None else user.uid.low
    return OP_DEFAULT_USER


def plugin_groups(settings: Settings) -> tuple[int, ...]:
    """The supplemental groups of plugin jobs: where a plugin writes into the op jobs'
    ``key-<jid>/outgoing`` (pfcon 6 with an object store), their group, which owns that
    dir (mode 2775) — the plugin may not be its owner (a uid from a CONTAINER_USER range,
    a root without capabilities on Kubernetes). Never the root group; none otherwise."""
    if not storage_flow(settings).outputs_in_key_dir:
        return ()
    gid = op_user(settings)[1]
    return (gid,) if gid != 0 else ()


def store_env(settings: Settings) -> tuple[str, ...]:
    """What copy and upload jobs of an object store need in their environment: the store's
    settings as this server resolved them (credentials included, so never logged)."""
    if settings.storage_env == "swift":
        swift = swift_options(settings)
        return (
            f"SWIFT_AUTH_URL={swift['auth_url']}",
            f"SWIFT_USERNAME={swift['username']}",
            f"SWIFT_KEY={swift['key']}",
            f"SWIFT_CONTAINER_NAME={swift['container_name']}",
            f"SWIFT_RETRIES={settings.swift.retries}",
            f"STAGING_WORKERS={settings.storage.staging_workers}",
        )
    if settings.storage_env == "s3":
        s3 = s3_options(settings)
        return (
            f"S3_ENDPOINT_URL={s3['endpoint_url']}",
            f"S3_ACCESS_KEY={s3['access_key']}",
            f"S3_SECRET_KEY={s3['secret_key']}",
            f"S3_REGION_NAME={s3['region_name']}",
            f"S3_BUCKET_NAME={s3['bucket_name']}",
            f"S3_RETRIES={settings.s3.retries}",
            f"STAGING_WORKERS={settings.storage.staging_workers}",
        )
    return (f"STAGING_WORKERS={settings.storage.staging_workers}",)


def op_job_options(settings: Settings) -> OpJobOptions:
    return OpJobOptions(
        image=settings.opjobs.image,
        run_as=op_user(settings),
        store_env=store_env(settings),
        instance=settings.compute.instance,
    )


def _job_area(settings: Settings, storebase: Any, storage: Any) -> Any:
    from .adapters.storage.jobarea import JobArea

    # The Kubernetes adapter never mounts the PVC's root writable: there an fslink copy copies.
    link_copies = settings.container_env != "kubernetes"
    return JobArea(storebase, storage, storage_flow(settings), owner=op_user(settings), link_copies=link_copies)


def op_worker_storage(storage_env: str, key_dir: str, shared_root: str | None, environ: dict[str, str]) -> Any:
    """Inside an op job: the storage adapter the server uses for ``storage_env``, on
    storeBase as the op container sees it (``key-<jid>/`` at ``key_dir``, storeBase at
    ``shared_root``). The store's settings come from the op job's environment (the server
    put them there, resolved); nothing else of the server's configuration is needed."""
    from .adapters.storage.jobarea import OpJobStoreBase

    entry = registry.storage_mode(storage_env)
    if entry is None:
        raise ConfigError("STORAGE_ENV", f"unsupported value {storage_env!r}")
    for variable in entry.settings:
        if variable.startswith(("SWIFT_", "S3_")) and not variable.endswith("_RETRIES") and not environ.get(variable):
            raise ConfigError(variable, "is required in an op job's environment (the server sets it)")
    keep = {v: environ[v] for v in (*entry.settings, "STAGING_WORKERS") if environ.get(v)}
    settings = load_settings({
        **keep, "APPLICATION_MODE": "dev", "STORAGE_ENV": storage_env, "STOREBASE_MOUNT": shared_root or key_dir,
        "PFCON_INNETWORK": "true" if entry.innetwork else "false", "STOREBASE_RESERVE_BYTES": "0",
    })  # fmt: skip
    return _factory(entry.factory)(settings, OpJobStoreBase(key_dir, shared_root))


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
    job_area = providers.Singleton(_job_area, settings, storebase, storage)
    op_service = providers.Singleton(
        OpJobService,
        jobs=job_service,
        area=job_area,
        flow=providers.Callable(storage_flow, settings),
        options=providers.Callable(op_job_options, settings),
        storage_env=providers.Callable(lambda s: s.storage_env, settings),
    )


def build_container(settings: Settings, **overrides: Any) -> Container:
    """Build the container; ``overrides`` replace ports by name (e.g. compute=FakeCompute())."""
    container = Container(settings=settings)
    for name, value in overrides.items():
        getattr(container, name).override(providers.Object(value))
    return container


def wire_up(container: Container) -> tuple[JobService, AuthService, OpJobService]:
    """Construct every adapter now, so a bad configuration fails at startup."""
    return container.job_service(), container.auth_service(), container.op_service()
