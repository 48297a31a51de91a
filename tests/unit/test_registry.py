"""The adapter registry is the one list of schedulers and storage modes: every other
place that names them (configuration, composition root, contract runs, README) agrees."""

from __future__ import annotations

import os
import re

import msgspec
import pytest

from pfcon import bootstrap, config, registry
from pfcon.adapters.compute.fake import FakeCompute
from pfcon.adapters.storage.fake import FakeStorage
from pfcon.domain.errors import InvalidJobSpec
from pfcon.domain.model import INSTANCE_LABEL, JOB_TYPE_LABEL, ComputeCapabilities, JobSpec, PluginType, Resources, ServerInfo
from pfcon.domain.ports import StagingRequest
from pfcon.domain.services import JobService

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ALL_VARIABLES = {f.encode_name for section in config.SECTIONS.values() for f in msgspec.structs.fields(section)}


def test_configuration_allows_exactly_the_registry() -> None:
    assert config.CONTAINER_ENVS_BUILT == tuple(e.name for e in registry.SCHEDULERS)
    assert set(config.STORAGE_ENVS_BUILT) == {e.name for e in registry.STORAGE_MODES}
    for entry in registry.SCHEDULERS:
        for name in (entry.name, *entry.aliases):
            env = {"APPLICATION_MODE": "dev", "CONTAINER_ENV": name, "COMPUTE_VOLUME_TYPE": entry.volume_types[0]}
            if entry.volume_types[0] == "host":
                env["STOREBASE"] = "/data"
            if entry.volume_types[0] == "kubernetes_pvc":
                env["VOLUME_NAME"] = "storebase"
            assert config.load_settings(env).container_env == entry.name
    assert not set(registry.PLANNED_SCHEDULERS) & {n for e in registry.SCHEDULERS for n in (e.name, *e.aliases)}


def test_every_entry_has_a_factory_in_the_composition_root() -> None:
    for entry in (*registry.SCHEDULERS, *registry.STORAGE_MODES):
        assert callable(getattr(bootstrap, entry.factory, None)), entry


def test_every_setting_an_adapter_reads_is_a_declared_variable() -> None:
    for entry in (*registry.SCHEDULERS, *registry.STORAGE_MODES):
        assert set(entry.settings) <= ALL_VARIABLES, entry.name


def test_the_readme_documents_every_scheduler_and_storage_mode() -> None:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    for entry in (*registry.SCHEDULERS, *registry.STORAGE_MODES):
        assert re.search(rf"`{entry.name}`", readme), entry.name


# -- what the domain does with capabilities -------------------------------------------------


def spec(**resources: int) -> JobSpec:
    return JobSpec(
        jid="chris-jid-1", image="local/x:1", entrypoint=("true",), type=PluginType.DS,
        resources=Resources(**{"number_of_workers": 1, "cpu_limit": 1000, "memory_limit": 100, "gpu_limit": 0, **resources}),
    )  # fmt: skip


def service(caps: ComputeCapabilities) -> tuple[JobService, FakeCompute, FakeStorage]:
    compute, storage = FakeCompute(capabilities=caps), FakeStorage(shared={"in/a.txt": b"a"})
    info = ServerInfo("test", True, "fake", "fake", None)
    return JobService(compute, storage, info), compute, storage


def test_the_domain_labels_every_job_with_its_type() -> None:
    jobs, compute, _ = service(ComputeCapabilities())
    jobs.submit(spec(), StagingRequest(input_dirs=("in",), output_dir="out"))
    assert compute.jobs["chris-jid-1"].job.labels == {JOB_TYPE_LABEL: "plugin", INSTANCE_LABEL: "pfcon"}


@pytest.mark.parametrize(("caps", "resources", "error"), [
    (ComputeCapabilities(max_workers=1), {"number_of_workers": 2}, InvalidJobSpec),
    (ComputeCapabilities(max_workers=4), {"number_of_workers": 5}, InvalidJobSpec),
    (ComputeCapabilities(gpus=False), {"gpu_limit": 1}, InvalidJobSpec),
])  # fmt: skip
def test_what_the_scheduler_cannot_do_is_refused_before_staging(
    caps: ComputeCapabilities, resources: dict[str, int], error: type[Exception]
) -> None:
    jobs, compute, storage = service(caps)
    with pytest.raises(error):
        jobs.submit(spec(**resources), StagingRequest(input_dirs=("in",), output_dir="out"))
    assert storage.incoming == {} and compute.jobs == {}


def test_what_the_scheduler_can_do_is_accepted() -> None:
    jobs, compute, _ = service(ComputeCapabilities(max_workers=4))
    jobs.submit(spec(number_of_workers=4), StagingRequest(input_dirs=("in",), output_dir="out"))
    assert compute.jobs["chris-jid-1"].job.resources.number_of_workers == 4
