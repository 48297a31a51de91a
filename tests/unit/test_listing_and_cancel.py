"""Listing and cancel in the real adapters, without a backend (issue 12): the mappings back
from a scheduler's objects, the Docker adapter's cost per listing, and its durable
record of cancellations."""

from __future__ import annotations

import os
import types
from typing import Any

import docker.errors
import pytest

from pfcon.adapters.compute.docker import (
    IMAGE_LABEL,
    CancelMarks,
    DockerCompute,
    DockerOptions,
    listed_state,
    resources_from_host_config,
)
from pfcon.adapters.compute.kubernetes import CANCELLED_LABEL as K8S_CANCELLED, job_resources, pod_nodes
from pfcon.adapters.compute.listing import iso_utc
from pfcon.adapters.compute.swarm import CANCELLED_LABEL, JOB_LABEL, service_info, service_resources
from pfcon.domain.errors import BackendUnavailable, JobNotFound
from pfcon.domain.model import (
    CANCELLED_MESSAGE,
    INSTANCE_LABEL,
    JOB_TYPE_LABEL,
    JobKind,
    JobStatus,
    Resources,
)

MiB = 1024 * 1024


@pytest.mark.parametrize(("value", "expected"), [
    ("2026-12-01T22:00:00.123456789Z", "2026-12-01T22:00:00.123456Z"),
    ("2026-12-01T22:00:00.1Z", "2026-12-01T22:00:00.100000Z"),
    ("2026-12-01T22:00:00Z", "2026-12-01T22:00:00.000000Z"),
    ("2026-12-01T23:30:00.5+01:30", "2026-12-01T22:00:00.500000Z"),
    (1796162400, "2026-12-01T22:00:00.000000Z"),
    ("0001-01-01T00:00:00Z", ""),
    ("", ""),
    (None, ""),
])  # fmt: skip
def test_timestamps_become_sortable_iso_utc(value: Any, expected: str) -> None:
    assert iso_utc(value) == expected


def test_fraction_digits_never_break_the_order() -> None:
    # RFC 3339 from Go trims trailing zeros: "…00.1Z" would sort after "…00.12Z" as text
    assert iso_utc("2026-12-01T22:00:00.12Z") > iso_utc("2026-12-01T22:00:00.1Z")


@pytest.mark.parametrize(("entry", "status"), [
    ({"State": "exited", "Status": "Exited (0) 2 minutes ago"}, JobStatus.FINISHED_SUCCESSFULLY),
    ({"State": "exited", "Status": "Exited (137) 2 minutes ago"}, JobStatus.FINISHED_WITH_ERROR),
    ({"State": "running", "Status": "Up 3 seconds"}, JobStatus.STARTED),
    ({"State": "created", "Status": "Created"}, JobStatus.NOT_STARTED),
    ({"State": "configured", "Status": "Created"}, JobStatus.NOT_STARTED),  # Podman
    ({"State": "dead", "Status": "Dead"}, JobStatus.FINISHED_WITH_ERROR),
])  # fmt: skip
def test_a_list_entry_maps_as_an_inspect_would(entry: dict[str, Any], status: JobStatus) -> None:
    from pfcon.adapters.compute.docker import docker_status

    assert docker_status(listed_state(entry)) is status


def test_resources_map_back_exactly() -> None:
    host = {"NanoCpus": 500 * 1_000_000, "Memory": 64 * MiB, "DeviceRequests": [{"Count": 2}]}
    assert resources_from_host_config(host) == Resources(1, 500, 64, 2)
    assert resources_from_host_config({"NanoCpus": 0, "Memory": 0}) is None  # IGNORE_LIMITS
    limits = {"Spec": {"TaskTemplate": {"Resources": {"Limits": {"NanoCPUs": 250_000_000, "MemoryBytes": 300 * MiB}}}}}
    assert service_resources(limits) == Resources(1, 250, 300, 0)
    assert service_resources({"Spec": {"TaskTemplate": {}}}) is None
    job = {"spec": {"parallelism": 2, "template": {"spec": {"containers": [
        {"resources": {"limits": {"cpu": "1500m", "memory": "2Gi", "nvidia.com/gpu": "1"}}}]}}}}  # fmt: skip
    assert job_resources(job) == Resources(2, 1500, 2048, 1)
    job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] = {"cpu": "2", "memory": "64Mi"}
    assert job_resources(job) == Resources(2, 2000, 64, 0)
    assert job_resources({"spec": {"template": {"spec": {"containers": [{}]}}}}) is None


def test_pod_nodes_oldest_first_without_repeats() -> None:
    pods = [
        {"metadata": {"name": "b", "creationTimestamp": "2026-01-01T00:00:02Z"}, "spec": {"nodeName": "n2"}},
        {"metadata": {"name": "a", "creationTimestamp": "2026-01-01T00:00:01Z"}, "spec": {"nodeName": "n1"}},
        {"metadata": {"name": "c", "creationTimestamp": "2026-01-01T00:00:03Z"}, "spec": {"nodeName": "n1"}},
        {"metadata": {"name": "d", "creationTimestamp": "2026-01-01T00:00:04Z"}, "spec": {}},  # not placed yet
    ]
    assert pod_nodes(pods) == "n1,n2"
    assert K8S_CANCELLED == CANCELLED_LABEL  # one label name for a cancelled job across schedulers


def test_a_cancelled_service_is_cancelled_whatever_its_tasks_show() -> None:
    service = {
        "CreatedAt": "2026-01-01T00:00:00Z",
        "Spec": {
            "Name": "j",
            "Labels": {JOB_LABEL: "j", CANCELLED_LABEL: "2026-01-01T00:01:00.000000Z"},
            "TaskTemplate": {"ContainerSpec": {"Image": "img", "Command": ["sleep", "9"]}},
        },
    }
    shut_down = {"CreatedAt": "1", "NodeID": "n", "Status": {"State": "shutdown", "ContainerStatus": {"ExitCode": 137}}}
    pending = {"CreatedAt": "2", "Status": {"State": "pending", "Err": "no suitable node"}}
    info = service_info("j", service, [shut_down, pending])
    assert (info.status, info.message) == (JobStatus.FINISHED_WITH_ERROR, CANCELLED_MESSAGE)
    assert info.timestamp == "2026-01-01T00:01:00.000000Z"
    del service["Spec"]["Labels"][CANCELLED_LABEL]
    assert service_info("j", service, [shut_down, pending]).status is JobStatus.NOT_STARTED


# -- the Docker adapter against a fake engine ----------------------------------------------------


class Engine:
    """The calls listing and cancel make, counted."""

    def __init__(self) -> None:
        self.containers_by_name: dict[str, dict[str, Any]] = {}
        self.calls: dict[str, int] = {}
        self.filters: list[Any] = []
        self.stop_error: Exception | None = None

    def add(self, name: str, state: str, labels: dict[str, str], created: int, status: str = "") -> None:
        self.created = getattr(self, "created", 0) + 1
        cid = f"id-{name}-{self.created}"
        self.containers_by_name[name] = {
            "Id": cid, "Names": [f"/{name}"], "Image": "resolved/" + labels.get(IMAGE_LABEL, "img"),
            "Created": created, "State": state, "Status": status or state, "Labels": labels,
        }  # fmt: skip

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def containers(self, filters: Any = None, **_: Any) -> list[dict[str, Any]]:
        self._count("containers")
        self.filters.append(filters)
        pairs = dict(p.split("=", 1) for p in filters["label"])
        return [
            c for c in self.containers_by_name.values()
            if all(c["Labels"].get(k) == v for k, v in pairs.items())
        ]  # fmt: skip

    def _find(self, ref: str) -> dict[str, Any]:
        for name, c in self.containers_by_name.items():
            if ref in (name, c["Id"]):
                return c
        raise docker.errors.NotFound("no such container")

    def inspect_container(self, ref: str) -> dict[str, Any]:
        self._count("inspect")
        c = self._find(ref)
        code = 0 if "(0)" in c["Status"] else 1
        return {
            "Id": c["Id"],
            "Name": next(f"/{name}" for name, x in self.containers_by_name.items() if x is c),
            "Created": iso_utc(c["Created"]).replace("000Z", "123Z"),
            "Config": {"Image": c["Image"], "Cmd": ["true"], "Labels": c["Labels"]},
            "State": {"Status": c["State"], "Running": c["State"] == "running", "ExitCode": code,
                      "StartedAt": "2026-01-01T00:00:00Z", "FinishedAt": "0001-01-01T00:00:00Z"},
            "HostConfig": {"NanoCpus": 500_000_000, "Memory": 64 * MiB},
        }  # fmt: skip

    def info(self) -> dict[str, Any]:
        self._count("info")
        return {"Name": "host-1"}

    def stop(self, ref: str, timeout: int = 10) -> None:
        self._count("stop")
        if self.stop_error is not None:
            raise self.stop_error
        c = self._find(ref)
        c["State"], c["Status"] = "exited", "Exited (137) 1 second ago"


def labels(instance: str, kind: JobKind = JobKind.PLUGIN) -> dict[str, str]:
    return {JOB_TYPE_LABEL: kind.value, INSTANCE_LABEL: instance, IMAGE_LABEL: "local/img:1"}


def adapter(engine: Engine, state_dir: str | None) -> DockerCompute:
    options = DockerOptions(storebase="/sb", state_dir=state_dir)
    return DockerCompute(types.SimpleNamespace(api=engine), options)  # type: ignore[arg-type]


def test_a_listing_is_one_list_call_and_inspects_each_container_once(tmp_path: Any) -> None:
    engine = Engine()
    for i in range(1000):
        engine.add(f"job-{i:04d}", "exited", labels("site"), 1796162400 + i, "Exited (0) 1 hour ago")
    engine.add("theirs", "exited", labels("other"), 1796162400)
    engine.add("no-type", "exited", {INSTANCE_LABEL: "site"}, 1796162400)
    compute = adapter(engine, str(tmp_path))
    listed = compute.list_jobs("site")
    assert len(listed) == 1000
    assert [s.name for s in listed[:2]] == ["job-0999", "job-0998"]  # newest first
    first = listed[0]
    assert first.image == "local/img:1"  # as asked, not as the engine resolved it
    assert first.status is JobStatus.FINISHED_SUCCESSFULLY and first.kind is JobKind.PLUGIN
    assert first.resources == Resources(1, 500, 64, 0) and first.node == "host-1"
    assert first.created.endswith(".000123Z")  # the inspect's precise time
    assert engine.calls == {"containers": 1, "inspect": 1000, "info": 1}
    assert engine.filters[0] == {"label": [f"{INSTANCE_LABEL}=site"]}  # the engine selects; key-only checked here
    compute.list_jobs("site")
    assert engine.calls == {"containers": 2, "inspect": 1000, "info": 1}  # nothing new: nothing inspected


def test_a_cancellation_is_durable_and_belongs_to_the_container(tmp_path: Any) -> None:
    engine = Engine()
    engine.add("j", "running", labels("site"), 1796162400, "Up 1 minute")
    compute = adapter(engine, str(tmp_path / "state"))
    info = compute.cancel("j")
    assert (info.status, info.message) == (JobStatus.FINISHED_WITH_ERROR, CANCELLED_MESSAGE)
    assert engine.calls["stop"] == 1
    assert os.listdir(tmp_path / "state") == ["j"]
    fresh = adapter(engine, str(tmp_path / "state"))  # a restarted server
    assert fresh.info("j").message == CANCELLED_MESSAGE
    [summary] = fresh.list_jobs("site")
    assert (summary.status, summary.message) == (JobStatus.FINISHED_WITH_ERROR, CANCELLED_MESSAGE)
    assert fresh.cancel("j").message == CANCELLED_MESSAGE and engine.calls["stop"] == 1  # nothing more
    # another container under the name is not cancelled
    del engine.containers_by_name["j"]
    engine.add("j", "exited", labels("site"), 1796162500, "Exited (0) now")
    assert fresh.info("j").status is JobStatus.FINISHED_SUCCESSFULLY


def test_cancel_leaves_finished_and_unknown_jobs_and_a_failed_stop_unmarked(tmp_path: Any) -> None:
    engine = Engine()
    engine.add("done", "exited", labels("site"), 1796162400, "Exited (0) now")
    compute = adapter(engine, str(tmp_path))
    assert compute.cancel("done").status is JobStatus.FINISHED_SUCCESSFULLY
    assert "stop" not in engine.calls and os.listdir(tmp_path) == []
    with pytest.raises(JobNotFound):
        compute.cancel("missing")
    engine.add("busy", "running", labels("site"), 1796162400, "Up")
    engine.stop_error = docker.errors.APIError("engine failure")
    with pytest.raises(BackendUnavailable):
        compute.cancel("busy")
    assert os.listdir(tmp_path) == []
    assert compute.info("busy").status is JobStatus.STARTED


def test_cancel_marks_refuse_names_that_are_not_job_names(tmp_path: Any) -> None:
    marks = CancelMarks(str(tmp_path))
    for name in ("../escape", ".hidden", "a/b"):
        marks.mark(name, "cid")  # remembered in memory only
        assert marks.get(name) == "cid"
    assert os.listdir(tmp_path) == []
    assert not os.path.exists(tmp_path.parent / "escape")
