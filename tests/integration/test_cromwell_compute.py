"""The Cromwell adapter against a fake Cromwell server that runs each workflow's task with the
local Docker engine (tests/integration/fake_cromwell.py; no Cromwell can be installed here):
the compute contract, plus what matters about workflows — sharedir and mounts, env and
user, op jobs, foreign workflows, removal and reuse of a name, an unreachable server."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from pfcon.adapters.compute.cromwell import JOB_LABEL, REMOVED_LABEL, CromwellCompute, CromwellOptions, make_client
from pfcon.adapters.compute.options import parse_container_user
from pfcon.domain.errors import BackendUnavailable, JobNotFound
from pfcon.domain.model import (
    CANCELLED_MESSAGE,
    INSTANCE_LABEL,
    JOB_TYPE_LABEL,
    ComputeCapabilities,
    ContainerJob,
    JobStatus,
    Mount,
    Resources,
)

from ..contracts.compute import ComputeContract, unique, wait_for
from .conftest import TEST_IMAGE
from .fake_cromwell import CONTAINER_LABEL, FakeCromwell
from .test_engine_compute import QuickHogDriver

pytestmark = pytest.mark.docker

# What src/registry.py declares for CONTAINER_ENV=cromwell (docs/adr/0017-cromwell.md).
CAPABILITIES = ComputeCapabilities(
    max_workers=1, checks_image_at_submit=False, unique_names=True, gpus=True, hard_memory_limit=False
)


def fake_containers() -> list[str]:
    out = subprocess.run(
        ["docker", "ps", "-a", "-q", "--filter", f"label={CONTAINER_LABEL}"], capture_output=True, text=True, check=True
    )
    return out.stdout.split()


@pytest.fixture
def storebase(tmp_path: Any) -> str:
    path = tmp_path / "storeBase"
    path.mkdir()
    return str(path)


@pytest.fixture
def cromwell(docker_client: Any, tmp_path: Any) -> Iterator[FakeCromwell]:
    root = tmp_path / "cromwell"
    root.mkdir()
    before = set(fake_containers())
    fake = FakeCromwell(str(root))
    fake.start()
    yield fake
    fake.close()
    stray = set(fake_containers()) - before
    for container in stray:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)
    assert not stray, f"stray containers: {sorted(stray)}"


def make_compute(fake: FakeCromwell, storebase: str, **options: Any) -> CromwellCompute:
    opts = CromwellOptions(
        url=fake.url, storebase=storebase, timelimit_minutes=5, capabilities=CAPABILITIES, **options
    )  # fmt: skip
    return CromwellCompute(make_client(opts), opts)


CromwellDriver = QuickHogDriver


class TestCromwellCompute(ComputeContract):
    @pytest.fixture
    def compute(self, cromwell: FakeCromwell, storebase: str) -> Iterator[CromwellCompute]:
        compute = make_compute(cromwell, storebase)
        created: list[str] = []
        original = compute.schedule

        def schedule(job: ContainerJob) -> Any:
            created.append(job.name)
            return original(job)

        compute.schedule = schedule  # type: ignore[method-assign]
        yield compute
        for name in created:
            try:
                compute.remove(name)
            except Exception:  # noqa: BLE001
                pass

    @pytest.fixture
    def driver(self) -> CromwellDriver:
        return CromwellDriver()  # settle/begin poll the adapter's info()

    @pytest.fixture
    def image(self) -> str:
        return TEST_IMAGE


# -- what matters about workflows ---------------------------------------------------------------


def labelled(instance: str, kind: str = "plugin") -> dict[str, str]:
    return {JOB_TYPE_LABEL: kind, INSTANCE_LABEL: instance}  # as the domain sets them


def run(compute: CromwellCompute, command: str, wait: bool = True, **job: Any) -> str:
    name = job.pop("name", None) or unique("cw")
    compute.schedule(
        ContainerJob(
            name=name,
            image=job.get("image", TEST_IMAGE),
            command=("sh", "-c", command),
            env=job.get("env", ()),
            resources=job.get("resources", Resources(1, 500, 64, 0)),
            mounts=job.get("mounts", ()),
            labels=job.get("labels", {JOB_TYPE_LABEL: "plugin"}),  # as the domain sets it
            run_as=job.get("run_as"),
        )
    )
    if wait:
        QuickHogDriver().settle(compute, name)
    return name


def standard_layout(storebase: str, jid: str) -> tuple[Mount, ...]:
    os.makedirs(f"{storebase}/key-{jid}/incoming")
    os.makedirs(f"{storebase}/key-{jid}/outgoing")
    os.chmod(f"{storebase}/key-{jid}/outgoing", 0o777)  # the job runs as another user
    with open(f"{storebase}/key-{jid}/incoming/in.txt", "w") as f:
        f.write("data")
    return (
        Mount(f"key-{jid}/incoming", "/share/incoming", True),
        Mount(f"key-{jid}/outgoing", "/share/outgoing", False),
    )


SCRIPT = (
    'cat /share/incoming/in.txt > /share/outgoing/out.txt; echo "$CHRIS_JID|$A"; id -u; id -g; '
    "touch /share/incoming/nope 2>/dev/null && echo WRITABLE || echo READONLY"
)


@pytest.mark.parametrize("bind", ["mounts", "sharedir"])
def test_mounts_or_sharedir_env_and_user_reach_the_task(cromwell: FakeCromwell, storebase: str, bind: str) -> None:
    """A backend may bind every mount (``mounts``) or the job's directory at /share
    (``sharedir``, the standard layout): either way the plugin sees its input and output."""
    cromwell.bind = bind
    compute = make_compute(cromwell, storebase, container_user=parse_container_user("1234:5678"))
    jid = unique("cw")
    name = run(
        compute,
        SCRIPT,
        name=jid,
        mounts=standard_layout(storebase, jid),
        env=("CHRIS_JID=chris-jid-1", "A=b=c 'q' ~{x}"),
    )
    state = compute.state(name, 10)
    assert state.info.status is JobStatus.FINISHED_SUCCESSFULLY, state
    assert state.info.message == "Succeeded"
    assert state.logs.splitlines() == ["chris-jid-1|b=c 'q' ~{x}", "1234", "5678", "READONLY"]
    with open(f"{storebase}/key-{jid}/outgoing/out.txt") as f:
        assert f.read() == "data"
    (workflow,) = cromwell.workflows.values()
    runtime = workflow.call["runtimeAttributes"]  # type: ignore[index]
    assert runtime["sharedir"] == f"{storebase}/key-{jid}"
    assert runtime["user"] == "1234:5678"


def test_an_op_job_gets_every_mount_and_its_owner(cromwell: FakeCromwell, storebase: str) -> None:
    """pfcon 6's copy job: storeBase itself read-only at the input dir, key-<jid> at the output."""
    jid = unique("cw")
    os.makedirs(f"{storebase}/home/in")
    with open(f"{storebase}/home/in/a.txt", "w") as f:
        f.write("a")
    os.makedirs(f"{storebase}/key-{jid}")
    os.chmod(f"{storebase}/key-{jid}", 0o777)
    compute = make_compute(cromwell, storebase)
    name = run(
        compute, "cp /share/incoming/home/in/a.txt /share/outgoing/; id -u", name=f"{jid}-copy",
        labels={JOB_TYPE_LABEL: "copy"}, run_as=(4321, 4321),
        mounts=(Mount(f"key-{jid}", "/share/outgoing", False), Mount("", "/share/incoming", True)),
    )  # fmt: skip
    state = compute.state(name, 10)
    assert state.info.status is JobStatus.FINISHED_SUCCESSFULLY, state
    assert state.logs.strip() == "4321"
    assert os.path.exists(f"{storebase}/key-{jid}/a.txt")
    (workflow,) = cromwell.workflows.values()
    runtime = workflow.call["runtimeAttributes"]  # type: ignore[index]
    assert runtime["sharedir"] == f"{storebase}/key-{jid}"  # the job's directory, not <jid>-copy's
    assert runtime["mounts"] == f"{storebase}/key-{jid}:/share/outgoing:rw {storebase}:/share/incoming:ro"
    assert workflow.labels[JOB_LABEL] == f"{jid}-copy" and workflow.labels[JOB_TYPE_LABEL] == "copy"


def test_a_failed_task_says_why(cromwell: FakeCromwell, storebase: str) -> None:
    compute = make_compute(cromwell, storebase)
    name = run(compute, "echo 'no such file: x' >&2; exit 3")
    info = compute.info(name)
    assert info.status is JobStatus.FINISHED_WITH_ERROR
    assert info.message.startswith("Failed: Job ChRISJob.plugin_instance:NA:1 exited with return code 3"), info.message
    assert info.message.endswith("(stderr: no such file: x)")
    assert info.timestamp


def test_remove_a_finished_job_then_reuse_its_name(cromwell: FakeCromwell, storebase: str) -> None:
    compute = make_compute(cromwell, storebase)
    name = run(compute, "echo first")
    compute.remove(name)  # Cromwell answers 404 to an abort of a finished workflow: not an error
    with pytest.raises(JobNotFound):
        compute.info(name)
    with pytest.raises(JobNotFound):
        compute.remove(name)
    run(compute, "echo second", name=name)
    assert compute.state(name, 10).logs.strip() == "second"
    first, second = sorted(cromwell.workflows.values(), key=lambda w: w.submitted_at)
    assert cromwell._current_labels(first)[REMOVED_LABEL] == "true"
    assert REMOVED_LABEL not in cromwell._current_labels(second)
    # A new adapter (a restarted server), once Cromwell's summary has caught up, sees the same.
    fresh = make_compute(cromwell, storebase)
    wait_for(lambda: fresh.info(name).status is JobStatus.FINISHED_SUCCESSFULLY, 10)
    compute.remove(name)


def test_remove_a_running_job_aborts_its_workflow(cromwell: FakeCromwell, storebase: str) -> None:
    compute = make_compute(cromwell, storebase)
    name = run(compute, "sleep 60", wait=False)
    QuickHogDriver().begin(compute, name)
    compute.remove(name)
    (workflow,) = cromwell.workflows.values()
    wait_for(lambda: workflow.status == "Aborted", 20, 0.1)
    assert not fake_containers()


def test_a_workflow_this_adapter_did_not_create_is_not_a_job(cromwell: FakeCromwell, storebase: str) -> None:
    name = unique("other")
    wdl = (
        "version 1.0\ntask t {\n    command <<<\nsleep 30\n    >>>\n    runtime {\n        docker: '%s'\n    }\n}\nworkflow W {\n    call t\n}\n"
        % TEST_IMAGE
    )  # noqa: UP031
    r = httpx.post(
        f"{cromwell.url}/api/workflows/v1",
        files={"workflowSource": ("w.wdl", wdl.encode()), "labels": ("l.json", b'{"name": "%s"}' % name.encode())},
    )
    assert r.status_code == 201, r.text
    foreign = r.json()["id"]
    compute = make_compute(cromwell, storebase)
    for call in (compute.info, compute.remove, lambda n: compute.state(n, 10)):
        with pytest.raises(JobNotFound):
            call(name)
    wait_for(lambda: cromwell.workflows[foreign].status == "Running", 10)
    assert cromwell.workflows[foreign].status == "Running"  # never aborted
    assert httpx.post(f"{cromwell.url}/api/workflows/v1/{foreign}/abort").json()["status"] == "Aborting"


def test_logs_the_server_cannot_read_say_where_they_are(cromwell: FakeCromwell, storebase: str) -> None:
    """The backend's filesystem is not shared with this server: the logs say where they are."""
    compute = make_compute(cromwell, storebase)
    name = run(compute, "echo hidden >&2; exit 1")
    (workflow,) = cromwell.workflows.values()
    elsewhere = "/cromwell-node-only/cromwell-executions/ChRISJob/x/call-plugin_instance/execution"
    workflow.call["stdout"], workflow.call["stderr"] = f"{elsewhere}/stdout", f"{elsewhere}/stderr"  # type: ignore[index]
    state = compute.state(name, 10)
    assert "cannot read" in state.logs
    assert f"stdout: {elsewhere}/stdout" in state.logs and f"stderr: {elsewhere}/stderr" in state.logs
    assert "hidden" not in state.logs and "stderr:" not in state.info.message


def test_cancel_aborts_the_workflow_and_a_restarted_server_still_sees_it_cancelled(
    cromwell: FakeCromwell, storebase: str
) -> None:
    compute = make_compute(cromwell, storebase)
    name = run(compute, "echo before-cancel; sleep 60", wait=False, labels=labelled("inst-a"))
    wait_for(lambda: "before-cancel" in compute.state(name, 10).logs, 30, 0.1)
    info = compute.cancel(name)
    assert (info.status, info.message) == (JobStatus.FINISHED_WITH_ERROR, CANCELLED_MESSAGE)
    (workflow,) = cromwell.workflows.values()
    wait_for(lambda: workflow.status == "Aborted", 30, 0.1)  # it stopped
    assert not fake_containers()
    fresh = make_compute(cromwell, storebase)  # a restarted server: no memory of the abort

    def cancelled() -> bool:
        try:
            state = fresh.state(name, 10)
        except JobNotFound:
            return False  # Cromwell's summary has not caught up with the submission yet
        return (state.info.status, state.info.message) == (JobStatus.FINISHED_WITH_ERROR, CANCELLED_MESSAGE)

    wait_for(cancelled, 10, 0.1)
    assert "before-cancel" in fresh.state(name, 10).logs  # its logs stay
    wait_for(lambda: [(s.name, s.message) for s in fresh.list_jobs("inst-a")] == [(name, CANCELLED_MESSAGE)], 10, 0.1)


def test_cancel_before_cromwell_picks_the_workflow_up_means_it_never_runs(
    cromwell: FakeCromwell, storebase: str
) -> None:
    cromwell.pickup_delay = 5.0
    compute = make_compute(cromwell, storebase)
    name = run(compute, "echo ran > /dev/stderr", wait=False, labels=labelled("inst-a"))
    assert compute.cancel(name).message == CANCELLED_MESSAGE
    (workflow,) = cromwell.workflows.values()
    assert workflow.status == "Aborted" and workflow.call is None
    [summary] = compute.list_jobs("inst-a")  # before Cromwell's summary has the workflow: from memory
    assert (summary.name, summary.status, summary.message) == (name, JobStatus.FINISHED_WITH_ERROR, CANCELLED_MESSAGE)
    assert summary.image == TEST_IMAGE and summary.resources == Resources(1, 500, 64, 0)


def test_the_fake_aborts_and_summarizes_as_cromwell_does(cromwell: FakeCromwell, storebase: str) -> None:
    """What the adapter copes with, as Cromwell's sources show it (fake_cromwell.py's docstring):
    abort's answers, and a query summary that lags behind the workflow's status."""
    cromwell.pickup_delay = 30.0
    compute = make_compute(cromwell, storebase)
    pending = run(compute, "true", wait=False, labels=labelled("inst-a"))
    (wid,) = cromwell.workflows
    api = f"{cromwell.url}/api/workflows/v1"
    assert httpx.post(f"{api}/{wid}/abort").json() == {"id": wid, "status": "Aborted"}  # never picked up
    assert httpx.post(f"{api}/{wid}/abort").status_code == 404  # no longer in progress
    assert httpx.get(f"{api}/{wid}/labels").json()["labels"][JOB_LABEL] == pending

    def summarized(workflow_id: str) -> list[str]:
        return [r["status"] for r in httpx.post(f"{api}/query", json=[{"id": workflow_id}]).json()["results"]]

    wait_for(lambda: summarized(wid) == ["Aborted"], 10, 0.05)
    cromwell.pickup_delay = 0.0
    running = run(compute, "echo started; sleep 30", wait=False, labels=labelled("inst-a"))
    wait_for(lambda: "started" in compute.state(running, 10).logs, 30, 0.1)
    wid2 = next(w for w in cromwell.workflows if w != wid)
    wait_for(lambda: summarized(wid2) == ["Running"], 10, 0.05)
    cromwell.summary_paused_at = time.monotonic()  # the summary falls behind from here
    assert httpx.post(f"{api}/{wid2}/abort").json() == {"id": wid2, "status": "Aborting"}  # not by this adapter
    wait_for(lambda: cromwell.workflows[wid2].status == "Aborted", 30, 0.1)
    assert summarized(wid2) == ["Running"]
    # the adapter reads a job in progress (by the summary) from its metadata: cancelled
    assert compute.info(running).message == CANCELLED_MESSAGE
    assert {s.name: s.message for s in compute.list_jobs("inst-a")} == {
        pending: CANCELLED_MESSAGE,
        running: CANCELLED_MESSAGE,
    }
    cromwell.summary_paused_at = None
    wait_for(lambda: summarized(wid2) == ["Aborted"], 10, 0.05)


def test_cromwell_down_is_backend_unavailable_naming_it_and_recovers(cromwell: FakeCromwell, storebase: str) -> None:
    compute = make_compute(cromwell, storebase)
    name = run(compute, "sleep 3; echo done", wait=False)
    cromwell.stop()
    job = ContainerJob(unique("cw"), TEST_IMAGE, ("true",), (), Resources(1, 500, 64, 0), ())
    for call in (compute.ping, lambda: compute.info(name), lambda: compute.state(name, 10),
                 lambda: compute.remove(name), lambda: compute.schedule(job)):  # fmt: skip
        with pytest.raises(
            BackendUnavailable, match=r"^Cromwell server unavailable: cannot connect to http://127\.0\.0\.1"
        ):
            call()
    cromwell.start()  # the same port: the same adapter recovers, and the job ran meanwhile
    compute.ping()
    QuickHogDriver().settle(compute, name)
    state = compute.state(name, 10)
    assert state.info.status is JobStatus.FINISHED_SUCCESSFULLY and state.logs.strip() == "done"
    compute.remove(name)
