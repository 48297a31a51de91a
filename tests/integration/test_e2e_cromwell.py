"""Black-box: the real server with ``CONTAINER_ENV=cromwell`` against the fake Cromwell
(tests/integration/fake_cromwell.py, which runs each workflow's task with the local Docker
engine; no Cromwell can be installed here): pfcon 5's zipfile flow with python-pfconclient
3.3.0, a whole pfcon 6 fslink cycle with 4.0.0 whose copy and delete op jobs are
workflows of this project's image (what the fake received is checked), the real ChRIS
plugin image, and Cromwell going away under a running server (503 naming it, then
recovery on the same port without a restart)."""

from __future__ import annotations

import io
import os
import subprocess
import time
import uuid
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from pfconclient.client import Client
from pfconclient.exceptions import PfconRequestException

from pfcon.adapters.compute.cromwell import JOB_LABEL, REMOVED_LABEL

from ..contracts.storage import read_dir, write_files
from .conftest import PLUGIN_IMAGE, TEST_IMAGE, _require
from .fake_cromwell import CONTAINER_LABEL, FakeCromwell, Workflow, parse_wdl
from .server import Server, start_server
from .test_e2e_v6 import COPY_AND_TAMPER, OP_IMAGE, check_cycle, feed, ok, v6_cycle
from .test_e2e_zipfile import descriptors, make_zip, read_tree, wait_terminal, write_tree

pytestmark = pytest.mark.docker

PREFIX = "cwe-"
PLUGIN_USER = (4321, 4321)  # CONTAINER_USER of the fslink server: its plugins' user, and (root server) its op jobs'
PLUGIN = {
    "image": PLUGIN_IMAGE,
    "entrypoint": ["python3", "/usr/local/bin/simpledsapp.py"],  # as CUBE runs it
    "args": ["--prefix", "lo"],
}


def jid() -> str:
    return f"{PREFIX}{uuid.uuid4().hex[:12]}"


def fake_containers() -> set[str]:
    out = subprocess.run(
        ["docker", "ps", "-a", "-q", "--filter", f"label={CONTAINER_LABEL}"], capture_output=True, text=True, check=True
    )
    return set(out.stdout.split())


def new_fake(root: Any) -> FakeCromwell:
    root.mkdir()
    fake = FakeCromwell(str(root))
    fake.start()
    return fake


def close_fake(fake: FakeCromwell, before: set[str]) -> None:
    fake.close()
    for container in fake_containers() - before:  # --rm: a finished task leaves nothing
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)


def cromwell_server(fake: FakeCromwell, base: Any, **env: str) -> Server:
    storebase = base / "storeBase"
    storebase.mkdir()
    return start_server(
        str(storebase), str(base / "server.log"), CONTAINER_ENV="cromwell", CROMWELL_URL=fake.url,
        TIMELIMIT_MINUTES="30", **env,
    )  # fmt: skip


@pytest.fixture(scope="module")
def cromwell(docker_client: Any, tmp_path_factory: Any) -> Iterator[FakeCromwell]:
    before = fake_containers()
    fake = new_fake(tmp_path_factory.mktemp("cromwell") / "root")
    yield fake
    close_fake(fake, before)


@pytest.fixture(scope="module")
def server(cromwell: FakeCromwell, tmp_path_factory: Any) -> Iterator[Server]:
    server = cromwell_server(cromwell, tmp_path_factory.mktemp("cromwell-zipfile"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fslink_server(cromwell: FakeCromwell, op_image: str, tmp_path_factory: Any) -> Iterator[Server]:
    server = cromwell_server(
        cromwell, tmp_path_factory.mktemp("cromwell-fslink"), PFCON_INNETWORK="true", STORAGE_ENV="fslink",
        CONTAINER_USER="%d:%d" % PLUGIN_USER,
    )  # fmt: skip
    yield server
    server.stop()


@pytest.fixture(scope="session")
def op_image(docker_client: Any) -> str:
    try:
        docker_client.images.get(OP_IMAGE)
    except Exception as e:  # noqa: BLE001
        _require(f"the op-job image {OP_IMAGE}", f"{e} (build it with scripts/build-image.sh)")
    return OP_IMAGE


@pytest.fixture
def client(server: Server) -> Client:
    return Client(server.api, server.token())


def workflows_of(fake: FakeCromwell, name: str) -> list[Workflow]:
    """The workflows the fake received for job ``name``, oldest first."""
    with fake.lock:
        found = [w for w in fake.workflows.values() if w.labels.get(JOB_LABEL) == name]
    return sorted(found, key=lambda w: w.submitted_at)


def only_workflow(fake: FakeCromwell, name: str) -> Workflow:
    found = workflows_of(fake, name)
    assert len(found) == 1, (name, [w.id for w in found])
    return found[0]


def why(fake: FakeCromwell, name: str) -> list[tuple[str, Any, Any]]:
    """What the fake knows of job ``name``'s workflows: for an assertion's message."""
    return [(w.status, w.failures, (w.call or {}).get("returnCode")) for w in workflows_of(fake, name)]


def no_key_dirs(server: Server) -> bool:
    return not [n for n in os.listdir(server.storebase) if n.startswith(f"key-{PREFIX}")]


# -- pfcon 5, zipfile, python-pfconclient 3.3.0 -------------------------------------------------


def test_server_info(client: Client) -> None:
    info = client.get_server_info()
    assert (info["container_env"], info["compute_volume_type"], info["storage_env"]) == ("cromwell", "host", "zipfile")


def test_zipfile_flow_through_cromwell(client: Client, server: Server, cromwell: FakeCromwell) -> None:
    job = jid()
    files = {"a.txt": b"a", "sub/b.bin": os.urandom(50_000), "ü dir/c.txt": "ç".encode()}
    script = COPY_AND_TAMPER.replace("echo copied", 'echo "copied for $CHRIS_JID"')
    resp = client.submit_job(job, descriptors(script=script, env=[f"CHRIS_JID={job}"]), make_zip(files))
    assert resp["data"]["nfiles"] == 3
    assert resp["compute"]["jid"] == job and resp["compute"]["status"] == "notstarted"
    status = wait_terminal(client, job)["compute"]
    assert status["status"] == "finishedSuccessfully", status
    assert status["message"] == "Succeeded"
    assert f"copied for {job}" in status["logs"]  # the env reached the task, its stdout the status
    assert status["timestamp"]
    with zipfile.ZipFile(io.BytesIO(client.get_job_zip_data(job))) as z:
        assert sorted(z.namelist()) == sorted(files)  # the plugin's link file is never sent
        assert {name: z.read(name) for name in files} == files

    # What Cromwell received: one workflow of the job's image, its directory, its mounts, the time limit
    workflow = only_workflow(cromwell, job)
    runtime = parse_wdl(workflow.source).runtime
    key = os.path.join(server.storebase, f"key-{job}")
    assert runtime["docker"] == TEST_IMAGE
    assert runtime["sharedir"] == key
    assert runtime["mounts"] == f"{key}/incoming:/share/incoming:ro {key}/outgoing:/share/outgoing:rw"
    assert runtime["timelimit"] == "30"
    assert "user" not in runtime  # no CONTAINER_USER: the backend's default user
    assert workflow.labels["org.chrisproject.job_type"] == "plugin"

    client.delete_job(job)
    assert not os.path.exists(key)
    assert cromwell._current_labels(workflow)[REMOVED_LABEL] == "true"  # Cromwell cannot delete workflows
    for call in (client.get_job_status, client.get_job_zip_data):
        with pytest.raises(PfconRequestException) as e:
            call(job)
        assert e.value.code == 404

    # the name can be used again: a new workflow, the old one stays removed
    client.submit_job(job, descriptors(script='echo again > "$1"/again.txt'), make_zip({"x.txt": b"x"}))
    assert wait_terminal(client, job)["compute"]["status"] == "finishedSuccessfully"
    with zipfile.ZipFile(io.BytesIO(client.get_job_zip_data(job))) as z:
        assert z.namelist() == ["again.txt"]
    assert len(workflows_of(cromwell, job)) == 2
    client.delete_job(job)
    assert no_key_dirs(server)


def test_failing_job_says_why(client: Client, server: Server) -> None:
    job = jid()
    script = 'echo partial > "$1"/partial.txt; echo "it broke" >&2; exit 3'
    client.submit_job(job, descriptors(script=script), make_zip({"a.txt": b"a"}))
    status = wait_terminal(client, job)["compute"]
    assert status["status"] == "finishedWithError"
    assert status["message"].startswith("Failed: Job ChRISJob.plugin_instance:NA:1 exited with return code 3"), status
    assert status["message"].endswith("(stderr: it broke)")
    assert "it broke" in status["logs"]
    with zipfile.ZipFile(io.BytesIO(client.get_job_zip_data(job))) as z:
        assert z.namelist() == ["partial.txt"]
    client.delete_job(job)
    assert no_key_dirs(server)


def test_delete_running_job_aborts_its_workflow(client: Client, server: Server, cromwell: FakeCromwell) -> None:
    job = jid()
    client.submit_job(job, descriptors(script="sleep 120"), make_zip({"x.txt": b"x"}))
    deadline = time.monotonic() + 30
    while client.get_job_status(job)["compute"]["status"] != "started":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    client.delete_job(job)
    workflow = only_workflow(cromwell, job)
    deadline = time.monotonic() + 30
    while workflow.status != "Aborted":
        assert time.monotonic() < deadline, workflow.status
        time.sleep(0.1)
    assert not fake_containers() & {workflow.container}
    assert not os.path.exists(os.path.join(server.storebase, f"key-{job}"))
    with pytest.raises(PfconRequestException) as e:
        client.get_job_status(job)
    assert e.value.code == 404


def test_the_operator_lists_and_cancels_a_running_job(client: Client, server: Server, cromwell: FakeCromwell) -> None:
    """Issue 12 through the admin routes: the listing, and cancel (an abort) that keeps the
    job's data and logs, where DELETE keeps pfcon's meaning."""
    headers = {"Authorization": f"Bearer {client.auth_token}"}
    job = jid()
    script = 'echo partial > "$1"/partial.txt; echo before-cancel; sleep 120'
    client.submit_job(job, descriptors(script=script), make_zip({"x.txt": b"x"}))
    deadline = time.monotonic() + 30
    while "before-cancel" not in client.get_job_status(job)["compute"]["logs"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    r = requests.get(f"{server.api}admin/jobs/", headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    [listed] = [j for j in r.json()["jobs"] if j["jid"] == job]
    assert (listed["name"], listed["kind"], listed["status"], listed["scheduler"]) == (job, "plugin", "started", "cromwell")
    assert listed["image"] == TEST_IMAGE and listed["created"] and listed["node"] == ""  # Cromwell does not say where
    assert listed["resources"] == {"number_of_workers": 1, "cpu_limit": 1000, "memory_limit": 200, "gpu_limit": 0}
    r = requests.post(f"{server.api}admin/jobs/{job}/cancel/", headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    assert (r.json()["compute"]["status"], r.json()["compute"]["message"]) == ("finishedWithError", "cancelled")
    workflow = only_workflow(cromwell, job)
    deadline = time.monotonic() + 30
    while workflow.status != "Aborted":  # it stops
        assert time.monotonic() < deadline, workflow.status
        time.sleep(0.1)
    status = client.get_job_status(job)["compute"]
    assert (status["status"], status["message"]) == ("finishedWithError", "cancelled")
    assert "before-cancel" in status["logs"]  # its logs stay
    with zipfile.ZipFile(io.BytesIO(client.get_job_zip_data(job))) as z:  # and its data
        assert z.namelist() == ["partial.txt"]
    client.delete_job(job)  # DELETE removes it all
    assert no_key_dirs(server)
    r = requests.get(f"{server.api}admin/jobs/", headers=headers, timeout=30)
    assert job not in {j["jid"] for j in r.json()["jobs"]}


@pytest.fixture
def slow_backend(docker_client: Any, tmp_path: Any) -> Iterator[tuple[FakeCromwell, Server]]:
    """A fake Cromwell whose ``docker run`` takes a second to create the container (a loaded
    node), and a server using it."""
    wrapper = tmp_path / "slow-docker"
    wrapper.write_text('#!/bin/sh\nif [ "$1" = run ]; then sleep 1; fi\nexec docker "$@"\n')
    wrapper.chmod(0o755)
    before = fake_containers()
    (tmp_path / "cromwell").mkdir()
    fake = FakeCromwell(str(tmp_path / "cromwell"), docker=str(wrapper))
    fake.start()
    server = cromwell_server(fake, tmp_path)
    yield fake, server
    server.stop()
    close_fake(fake, before)


def test_delete_while_the_container_is_being_created(
    slow_backend: tuple[FakeCromwell, Server], docker_client: Any
) -> None:
    """The task is ``Running`` for Cromwell before its container exists: a delete then still
    stops it (the abort keeps removing the container until ``docker run`` has ended), and
    the container created late does not bring ``key-<jid>/`` back (binds never create it)."""
    fake, server = slow_backend
    client = Client(server.api, server.token())
    job = jid()
    client.submit_job(job, descriptors(script="sleep 120"), make_zip({"x.txt": b"x"}))
    deadline = time.monotonic() + 30
    while client.get_job_status(job)["compute"]["status"] != "started":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    client.delete_job(job)
    workflow = only_workflow(fake, job)
    deadline = time.monotonic() + 30
    while workflow.status != "Aborted":
        assert time.monotonic() < deadline, workflow.status
        time.sleep(0.1)
    assert not docker_client.containers.list(all=True, filters={"label": f"{CONTAINER_LABEL}={workflow.id}"})
    assert no_key_dirs(server)


# -- the real ChRIS plugin ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def plugin_image(docker_client: Any) -> str:
    try:
        docker_client.images.get(PLUGIN_IMAGE)
    except Exception as e:  # noqa: BLE001
        _require(f"the plugin image {PLUGIN_IMAGE}", f"{e} (build it with scripts/test-images.sh)")
    return PLUGIN_IMAGE


def test_real_chris_plugin(
    client: Client, server: Server, cromwell: FakeCromwell, plugin_image: str, tmp_path: Any
) -> None:
    write_tree(tmp_path / "in", {"data/scan.txt": b"scan", "top.txt": b"top"})
    (tmp_path / "out").mkdir()
    job = jid()
    status = client.run_job(job, descriptors(**PLUGIN), str(tmp_path / "in"), str(tmp_path / "out"))
    assert status == "finishedSuccessfully", why(cromwell, job)
    outputs = {name: open(tmp_path / "out" / name, "rb").read() for name in read_tree(tmp_path / "out")}
    assert outputs == {"lotop.txt": b"top", os.path.join("data", "loscan.txt"): b"scan"}
    workflow = only_workflow(cromwell, job)
    assert parse_wdl(workflow.source).runtime["docker"] == PLUGIN_IMAGE
    assert "python3 /usr/local/bin/simpledsapp.py --prefix lo /share/incoming /share/outgoing" in workflow.source
    assert no_key_dirs(server)  # run_job deleted it


# -- pfcon 6, fslink, python-pfconclient 4.0.0: op jobs are workflows of the op image -------------


def test_fslink_cycle_with_op_jobs(fslink_server: Server, cromwell: FakeCromwell) -> None:
    server = fslink_server
    root = server.storebase
    inp, out = feed(server, {"test.txt": b"t", "sub/u.bin": b"\x00\x01", "home_bob.chrislink": b"home/bob"})
    write_files(root, {"home/bob/pipeline.yml": b"p"})
    os.chown(os.path.join(root, out), *PLUGIN_USER)  # CUBE's output dir: the plugin's user writes it
    job = jid()
    script = COPY_AND_TAMPER + '; echo "jid=$CHRIS_JID"; id -u; id -g'
    r = v6_cycle(server, "fslink", job, inputs=[inp], output=out, script=script)
    for kind in ("copy", "plugin", "delete"):
        assert ok(r[f"{kind}_done"])["compute"]["status"] == "finishedSuccessfully", (
            r[f"{kind}_done"],
            why(cromwell, job if kind == "plugin" else f"{job}-{kind}"),
        )
    check_cycle(server, "fslink", job, r)
    expected = {"test.txt": b"t", "sub/u.bin": b"\x00\x01", "home_bob/pipeline.yml": b"p"}
    assert sorted(ok(r["files"])["rel_file_paths"]) == sorted(expected)
    assert read_dir(os.path.join(root, out)) == expected  # the plugin's evil.chrislink was removed
    assert "copied 3 files" in ok(r["copy_done"])["compute"]["logs"]
    plugin_logs = ok(r["plugin_done"])["compute"]["logs"]
    assert "jid=x" in plugin_logs.splitlines()  # descriptors' env: CHRIS_JID=x
    assert plugin_logs.splitlines()[-2:] == [str(PLUGIN_USER[0]), str(PLUGIN_USER[1])]

    # What Cromwell received. Op jobs: the op image, its command, a non-root user, their mounts.
    key = os.path.join(root, f"key-{job}")
    op_user = "%d:%d" % PLUGIN_USER  # a root server hands key-<jid>/ to CONTAINER_USER's user
    expected_mounts = {
        "copy": f"{key}:/share/outgoing:rw {root}:/share/incoming:rw",  # storeBase once, to hard-link
        "delete": f"{key}:/share/outgoing:rw",
    }
    for kind, mounts in expected_mounts.items():
        workflow = only_workflow(cromwell, f"{job}-{kind}")
        parsed = parse_wdl(workflow.source)
        assert parsed.runtime["docker"] == OP_IMAGE, kind
        assert parsed.command.splitlines()[-1] == f"pfcon op {kind} /share/outgoing", kind
        assert not [line for line in parsed.command.splitlines() if line.startswith("export ")], kind
        assert parsed.runtime["user"] == op_user, kind
        assert parsed.runtime["mounts"] == mounts, kind
        assert parsed.runtime["sharedir"] == key, kind  # the job's directory, not <jid>-<kind>'s
        assert workflow.labels["org.chrisproject.job_type"] == kind
        assert workflow.status == "Succeeded", kind
        assert f"--user {op_user}" in " ".join(workflow.docker_args), kind  # the task ran as that user
    # The plugin: its own image, the descriptors' env, CONTAINER_USER, its input and the output dir.
    workflow = only_workflow(cromwell, job)
    parsed = parse_wdl(workflow.source)
    assert parsed.runtime["docker"] == TEST_IMAGE
    assert "export CHRIS_JID=x" in parsed.command.splitlines()
    assert parsed.runtime["user"] == "%d:%d" % PLUGIN_USER
    assert parsed.runtime["mounts"] == f"{key}/incoming:/share/incoming:ro {root}/{out}:/share/outgoing:rw"
    assert workflow.labels["org.chrisproject.job_type"] == "plugin"
    # DELETE then delete_job of each kind: every workflow of the cycle is marked removed
    for name in (f"{job}-copy", job, f"{job}-delete"):
        assert cromwell._current_labels(only_workflow(cromwell, name))[REMOVED_LABEL] == "true", name
    assert not workflows_of(cromwell, f"{job}-upload")  # fslink has no upload job


# -- Cromwell goes away under a running server, then comes back ------------------------------------


@pytest.fixture
def flaky(docker_client: Any, tmp_path: Any) -> Iterator[tuple[FakeCromwell, Server]]:
    """A fake Cromwell of its own (this test stops it) and a server using it."""
    before = fake_containers()
    fake = new_fake(tmp_path / "cromwell")
    server = cromwell_server(fake, tmp_path)
    yield fake, server
    server.stop()
    close_fake(fake, before)


def test_cromwell_down_is_503_naming_it_then_recovers(flaky: tuple[FakeCromwell, Server]) -> None:
    fake, server = flaky
    client = Client(server.api, server.token())
    headers = {"Authorization": f"Bearer {client.auth_token}"}
    running = jid()
    client.submit_job(running, descriptors(script='sleep 3; echo done > "$1"/done.txt'), make_zip({"x.txt": b"x"}))
    fresh = jid()
    fake.stop()
    try:
        r = requests.get(f"{server.api}jobs/{running}/", headers=headers, timeout=60)
        assert r.status_code == 503, r.text
        assert r.json()["message"].startswith(f"Cromwell server unavailable: cannot connect to {fake.url}"), r.text
        with pytest.raises(PfconRequestException) as e:
            client.submit_job(fresh, descriptors(), make_zip({"x.txt": b"x"}))
        assert e.value.code == 503 and "Cromwell server unavailable" in str(e.value), e.value
        assert not os.path.exists(os.path.join(server.storebase, f"key-{fresh}"))  # rolled back
        ready = requests.get(f"{server.api}ready/", timeout=60)
        assert ready.status_code == 503
        assert "compute (cromwell): Cromwell server unavailable" in ready.json()["message"], ready.text
    finally:
        fake.start()  # the same port
    # the same server, not restarted, works again; the job ran meanwhile
    assert requests.get(f"{server.api}ready/", timeout=30).status_code == 200
    status = wait_terminal(client, running)["compute"]
    assert status["status"] == "finishedSuccessfully", status
    with zipfile.ZipFile(io.BytesIO(client.get_job_zip_data(running))) as z:
        assert z.read("done.txt") == b"done\n"
    with pytest.raises(PfconRequestException) as e:
        client.get_job_status(fresh)
    assert e.value.code == 404
    client.submit_job(fresh, descriptors(), make_zip({"x.txt": b"x"}))
    assert wait_terminal(client, fresh)["compute"]["status"] == "finishedSuccessfully"
    assert len(workflows_of(fake, fresh)) == 1  # the refused submission left no workflow behind
    for job in (running, fresh):
        client.delete_job(job)
    assert no_key_dirs(server)
    assert server.process.poll() is None
