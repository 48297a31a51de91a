"""What the Docker and Swarm adapters do with an op job (run as its user, on the op network),
and the op job's view of storeBase — no engine needed."""

from __future__ import annotations

import os
from typing import Any

from pfcon.adapters.compute.docker import DockerCompute, DockerOptions
from pfcon.adapters.compute.options import parse_container_user
from pfcon.adapters.compute.swarm import SwarmCompute, SwarmOptions
from pfcon.adapters.storage.jobarea import OpJobStoreBase, parse_params, read_params
from pfcon.domain.model import JOB_TYPE_LABEL, ContainerJob, CopyParams, JobKind, Mount, Resources


def job(kind: str, run_as: tuple[int, int] | None = None) -> ContainerJob:
    return ContainerJob(
        name=f"j1-{kind}", image="local/pfcon:1", command=("pfcon", "op", kind, "/share/outgoing"), env=(),
        resources=Resources(1, 1000, 300, 0), mounts=(Mount("key-j1", "/share/outgoing", False),),
        labels={JOB_TYPE_LABEL: kind}, run_as=run_as,
    )  # fmt: skip


class FakeApi:
    def __init__(self) -> None:
        self.created: dict[str, Any] = {}

    def create_host_config(self, **kw: Any) -> dict[str, Any]:
        return kw

    def create_container(self, **kw: Any) -> None:
        self.created = kw

    def start(self, name: str) -> None:
        pass

    def create_service(self, template: Any, **kw: Any) -> None:
        self.created = {"template": template, **kw}


class FakeClient:
    def __init__(self) -> None:
        self.api = FakeApi()


def test_docker_runs_an_op_job_as_its_user_on_the_op_network() -> None:
    client = FakeClient()
    docker = DockerCompute(client, DockerOptions(  # type: ignore[arg-type]
        storebase="/sb", network="none", op_network="host", container_user=parse_container_user("2000:2000")))
    docker.schedule(job("copy", run_as=(1000, 1001)))
    created = client.api.created
    assert created["user"] == "1000:1001" and created["host_config"]["network_mode"] == "host"
    assert "group_add" not in created["host_config"]
    docker.schedule(job("plugin"))
    created = client.api.created
    assert created["user"] == "2000:2000" and created["host_config"]["network_mode"] == "none"


def test_swarm_runs_an_op_job_as_its_user() -> None:
    client = FakeClient()
    swarm = SwarmCompute(client, SwarmOptions(storebase="/sb", container_user=parse_container_user("2000:2000")))  # type: ignore[arg-type]
    swarm.schedule(job("upload", run_as=(1000, 1001)))
    assert client.api.created["template"]["ContainerSpec"]["User"] == "1000:1001"


def test_the_op_view_of_storebase(tmp_path: Any) -> None:
    root = tmp_path / "sb"
    key = root / "key-j1"
    key.mkdir(parents=True)
    view = OpJobStoreBase(str(key))
    assert view.key_dir("j1") == str(key) and view.incoming("j1") == str(key / "incoming")
    # with storeBase mounted too (writable), staging goes through it: one mount, hard links
    linked = OpJobStoreBase(str(key), shared_root=str(root))
    assert linked.key_dir("j1") == os.path.join(str(root), "key-j1")
    with linked.claimed("j1", with_dirs=True):
        pass
    assert sorted(os.listdir(key)) == ["incoming", "outgoing"] and not os.path.exists(key / ".staging")
    (key / "incoming" / "left.txt").write_text("from a failed attempt")
    with linked.claimed("j1", with_dirs=True):
        assert os.listdir(key / "incoming") == []
    (key / "job_params.json").write_text('{"jid": "j1", "storage_env": "fslink", "input_dirs": ["a"], "output_dir": "b"}')
    assert read_params(str(key), JobKind.COPY) == CopyParams("j1", "fslink", ("a",), "b")
    linked.delete("j1")
    assert os.listdir(key) == [] and linked.not_removed == []


def test_params_are_checked() -> None:
    import pytest

    from pfcon.domain.errors import InvalidInputData

    for doc in ([], {"jid": 1}, {"jid": "j", "storage_env": "x", "input_dirs": "a", "output_dir": "b"}):
        with pytest.raises(InvalidInputData):
            parse_params(JobKind.COPY, doc)


def test_a_container_job_never_shows_its_environment() -> None:
    secret = ContainerJob(name="j1-copy", image="i", command=("c",), env=("SWIFT_KEY=s3cr3t",),
                          resources=Resources(1, 1000, 300, 0), mounts=())
    assert "s3cr3t" not in repr(secret) and "s3cr3t" not in str(secret)
