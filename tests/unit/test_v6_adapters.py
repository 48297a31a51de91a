"""What the Docker and Swarm adapters do with an op job (run as its user, on the op network),
and the op job's view of storeBase — no engine needed."""

from __future__ import annotations

import os
import stat
from typing import Any

import pytest

from pfcon.adapters.compute.docker import DockerCompute, DockerOptions
from pfcon.adapters.compute.options import parse_container_user
from pfcon.adapters.compute.swarm import SwarmCompute, SwarmOptions
from pfcon.adapters.storage.jobarea import OUTGOING_MODE, JobArea, OpJobStoreBase, parse_params, read_params
from pfcon.adapters.storage.local import StoreBase
from pfcon.domain.model import (
    JOB_TYPE_LABEL, ContainerJob, CopyParams, DeleteParams, JobKind, Mount, Resources, StorageFlow, UploadParams,
)  # fmt: skip


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


# -- key-<jid>/outgoing, where a plugin that is not the op jobs' user writes ----------------------

OBJECT_STORE = StorageFlow(copy_job=True, upload_job=True)
ROOT = os.geteuid() == 0
OWNER = (10001, 10002) if ROOT else (os.getuid(), os.getgid())


def mode(path: Any) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def umask_077() -> Any:
    old = os.umask(0o077)  # the modes do not depend on the server's umask
    yield
    os.umask(old)


def test_outgoing_is_group_writable_and_setgid_for_the_op_jobs_group(tmp_path: Any, umask_077: None) -> None:
    area = JobArea(StoreBase(str(tmp_path)), storage=None, flow=OBJECT_STORE, owner=OWNER)  # type: ignore[arg-type]
    area.prepare(JobKind.COPY, CopyParams("j1", "s3", ("in",), "out"))
    key, outgoing = tmp_path / "key-j1", tmp_path / "key-j1" / "outgoing"
    assert oct(mode(outgoing)) == oct(OUTGOING_MODE) == oct(0o2775)
    assert (os.stat(outgoing).st_uid, os.stat(outgoing).st_gid) == OWNER
    assert mode(key) == 0o700 and (os.stat(key).st_uid, os.stat(key).st_gid) == OWNER  # key-<jid>/ itself: no wider
    assert mode(key / "job_params.json") == 0o644
    # the plugin's mount: the same dir, made so again if something changed it
    os.chmod(outgoing, 0o755)
    assert area.plugin_mounts("j1", None)[1] == Mount("key-j1/outgoing", "/share/outgoing", False)
    assert mode(outgoing) == OUTGOING_MODE
    # a plugin submitted without a copy job: created by the plugin's mount
    area.prepare(JobKind.DELETE, DeleteParams("j2"))
    assert not (tmp_path / "key-j2" / "outgoing").exists()
    area.plugin_mounts("j2", None)
    assert mode(tmp_path / "key-j2" / "outgoing") == OUTGOING_MODE
    area.prepare(JobKind.UPLOAD, UploadParams("j1", "s3", "out"))
    assert mode(outgoing) == OUTGOING_MODE and mode(key) == 0o700
    os.umask(0o022)
    area.prepare(JobKind.COPY, CopyParams("j3", "s3", ("in",), "out"))
    assert mode(tmp_path / "key-j3") == 0o755 and mode(tmp_path / "key-j3" / "outgoing") == OUTGOING_MODE


def test_outgoing_is_never_made_through_a_link(tmp_path: Any) -> None:
    area = JobArea(StoreBase(str(tmp_path)), storage=None, flow=OBJECT_STORE, owner=OWNER)  # type: ignore[arg-type]
    area.prepare(JobKind.DELETE, DeleteParams("j1"))
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    os.symlink(tmp_path / "elsewhere", tmp_path / "key-j1" / "outgoing")
    with pytest.raises(OSError):
        area.plugin_mounts("j1", None)
    assert mode(tmp_path / "elsewhere") == 0o700


def test_shared_output_dirs_get_no_outgoing(tmp_path: Any) -> None:
    fslink = StorageFlow(copy_job=True)
    area = JobArea(StoreBase(str(tmp_path)), storage=None, flow=fslink, owner=OWNER)  # type: ignore[arg-type]
    area.prepare(JobKind.COPY, CopyParams("j1", "fslink", ("in",), "out"))
    assert os.listdir(tmp_path / "key-j1") == ["job_params.json"]


def test_the_op_job_makes_outgoing_so_too(tmp_path: Any, umask_077: None) -> None:
    key = tmp_path / "key-j1"
    key.mkdir()
    store = OpJobStoreBase(str(key))
    with store.claimed("j1", with_dirs=True):  # an object store's copy
        pass
    assert mode(key / "outgoing") == OUTGOING_MODE
    assert mode(key / "incoming") == 0o700  # as before: the umask's (only op jobs and a read-only mount read it)
    os.chmod(key / "outgoing", 0o755)
    with store.claimed("j1", with_dirs=True):  # a retried copy
        pass
    assert mode(key / "outgoing") == OUTGOING_MODE


@pytest.mark.skipif(not ROOT, reason="needs root to run as other users")
def test_a_plugin_in_the_group_writes_and_the_op_job_removes_it(tmp_path: Any) -> None:
    import pathlib
    import shutil
    import tempfile

    root = pathlib.Path(tempfile.mkdtemp(prefix="pfcon-outgoing-"))  # pytest's tmp dirs are root's only
    try:
        _plugin_and_op_job(root)
    finally:
        shutil.rmtree(root)


def _plugin_and_op_job(root: Any) -> None:
    os.chmod(root, 0o755)
    area = JobArea(StoreBase(str(root)), storage=None, flow=OBJECT_STORE, owner=(10001, 10001))  # type: ignore[arg-type]
    area.prepare(JobKind.COPY, CopyParams("j1", "s3", ("in",), "out"))
    key = root / "key-j1"
    os.chmod(key, 0o755)
    outgoing = key / "outgoing"

    def run_as(uid: int, gid: int, groups: list[int], action: Any) -> int:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                os.setgroups(groups)
                os.setgid(gid)
                os.setuid(uid)
                action()
                code = 0
            finally:
                os._exit(code)
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

    def plugin() -> None:
        os.umask(0o022)
        (outgoing / "sub").mkdir()
        (outgoing / "sub" / "b.txt").write_text("b")
        (outgoing / "a.txt").write_text("a")

    assert run_as(20500, 20500, [], plugin) != 0  # a uid of a range, without the group: refused
    assert run_as(20500, 20500, [10001], plugin) == 0  # with the op jobs' group, as the adapters run it
    assert {os.stat(outgoing / n).st_gid for n in ("a.txt", "sub", "sub/b.txt")} == {10001}  # setgid: their group
    store = OpJobStoreBase(str(key))

    def delete() -> None:
        store.delete("j1")
        assert store.not_removed == [str(outgoing / "sub" / "b.txt")]

    assert run_as(10001, 10001, [], delete) == 0  # the op job removes what it may; the server the rest
    assert not (outgoing / "a.txt").exists() and (outgoing / "sub" / "b.txt").exists()


def test_plugin_groups_of_the_composition_root() -> None:
    from pfcon.bootstrap import OP_DEFAULT_USER, op_user, plugin_groups
    from pfcon.config import load_settings

    def settings(**env: str) -> Any:
        return load_settings({"APPLICATION_MODE": "dev", **env})

    s3 = {"PFCON_INNETWORK": "true", "STORAGE_ENV": "s3"}
    gid = op_user(settings(**s3))[1]
    assert plugin_groups(settings(**s3)) == ((gid,) if gid else ())
    if ROOT:
        assert plugin_groups(settings(**s3)) == (OP_DEFAULT_USER[1],)
        assert plugin_groups(settings(**s3, CONTAINER_USER="20000-20999:")) == (20000,)
        assert plugin_groups(settings(**s3, CONTAINER_USER="20000:0")) == ()  # never the root group
    for other in ({"PFCON_INNETWORK": "true", "STORAGE_ENV": "fslink"}, {"STORAGE_ENV": "zipfile"},
                  {"PFCON_INNETWORK": "true", "STORAGE_ENV": "filesystem"}):  # fmt: skip
        assert plugin_groups(settings(**other)) == ()  # no plugin writes into the op jobs' key-<jid>/
