"""The SLURM adapter without a cluster: the state table, the sbatch command line, the
batch script, and the adapter's behaviour against an in-memory SLURM (``FakeSlurm``)
that answers ``sbatch``/``squeue``/``scancel``/``scontrol`` like 22.05 does."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from typing import Any

import pytest

from pfcon.adapters.compute import slurm
from pfcon.adapters.compute.options import parse_container_user
from pfcon.adapters.compute.slurm import (
    RUNTIMES,
    RateLimiter,
    Runtime,
    SlurmCompute,
    SlurmOptions,
    batch_script,
    parse_queue,
    sbatch_args,
    slurm_status,
    template_problem,
)
from pfcon.domain.errors import (
    BackendUnavailable,
    InvalidJobSpec,
    JobAlreadyExists,
    JobNotFound,
    ResourceUnavailable,
)
from pfcon.domain.model import (
    CANCELLED_MESSAGE,
    INSTANCE_LABEL,
    JOB_TYPE_LABEL,
    ComputeCapabilities,
    ContainerJob,
    JobKind,
    JobStatus,
    Mount,
    Resources,
)

S = slurm._SEP

# -- the state table --------------------------------------------------------------------------

STATES = [
    ("PENDING", "Resources", None, JobStatus.NOT_STARTED, "PENDING: Resources"),
    ("PENDING", "None", None, JobStatus.NOT_STARTED, "PENDING"),
    ("CONFIGURING", "", None, JobStatus.NOT_STARTED, "CONFIGURING"),
    ("RUNNING", "None", None, JobStatus.STARTED, "RUNNING"),
    ("COMPLETING", "", None, JobStatus.STARTED, "COMPLETING"),
    ("COMPLETED", "None", 0, JobStatus.FINISHED_SUCCESSFULLY, "Finished"),
    ("COMPLETED", "None", None, JobStatus.FINISHED_SUCCESSFULLY, "Finished"),
    ("FAILED", "NonZeroExitCode", 3, JobStatus.FINISHED_WITH_ERROR, "Error (exit code 3)"),
    ("FAILED", "NonZeroExitCode", None, JobStatus.FINISHED_WITH_ERROR, "Error: NonZeroExitCode"),
    ("TIMEOUT", "TimeLimit", None, JobStatus.FINISHED_WITH_ERROR, "TIMEOUT: the job reached its time limit"),
    ("OUT_OF_MEMORY", "", 137, JobStatus.FINISHED_WITH_ERROR, "OUT_OF_MEMORY: the job ran out of memory"),
    ("NODE_FAIL", "NodeDown", None, JobStatus.FINISHED_WITH_ERROR, "NODE_FAIL: the node running the job failed"),
    ("CANCELLED", "None", None, JobStatus.FINISHED_WITH_ERROR, "cancelled"),
    ("CANCELLED by 0", "None", None, JobStatus.FINISHED_WITH_ERROR, "cancelled"),
    ("PREEMPTED", "", None, JobStatus.FINISHED_WITH_ERROR, "PREEMPTED: the job was preempted"),
    ("BOOT_FAIL", "", None, JobStatus.FINISHED_WITH_ERROR, "BOOT_FAIL: the node could not boot for the job"),
    ("DEADLINE", "", None, JobStatus.FINISHED_WITH_ERROR, "DEADLINE: the job could not finish before its deadline"),
    ("REQUEUED", "", None, JobStatus.NOT_STARTED, "REQUEUED"),
    ("SUSPENDED", "", None, JobStatus.STARTED, "SUSPENDED"),
    ("STOPPED", "", None, JobStatus.STARTED, "STOPPED"),
    ("SIGNALING", "", None, JobStatus.STARTED, "SIGNALING"),
    # cancelled through this server (the durable mark in ``state``), or by anyone else:
    # a late exit record of the container never turns it into a success
    (slurm.CANCELLED, slurm.CANCEL_REASON, None, JobStatus.FINISHED_WITH_ERROR, CANCELLED_MESSAGE),
    (slurm.CANCELLED, slurm.CANCEL_REASON, 0, JobStatus.FINISHED_WITH_ERROR, CANCELLED_MESSAGE),
    ("CANCELLED", "None", 143, JobStatus.FINISHED_WITH_ERROR, CANCELLED_MESSAGE),
    ("WHATEVER", "", None, JobStatus.UNDEFINED, "WHATEVER"),
]


@pytest.mark.parametrize(("state", "reason", "code", "status", "message"), STATES)
def test_state_table(state: str, reason: str, code: int | None, status: JobStatus, message: str) -> None:
    assert slurm_status(state, reason, code) == (status, message)


def test_container_exit_code_overrides_a_completed_batch_step() -> None:
    # the batch script exits with the container's code; a record of a non-zero code wins
    assert slurm_status("COMPLETED", "", 2) == (JobStatus.FINISHED_WITH_ERROR, "Error (exit code 2)")


def test_runtime_failure_says_what_the_runtime_said() -> None:
    line = "docker: Error response from daemon: No such image: local/absent:1."
    status, message = slurm_status("FAILED", "NonZeroExitCode", 125, line)
    assert status is JobStatus.FINISHED_WITH_ERROR
    assert message == f"the container could not run (exit code 125): {line}"


# -- the command line and the script -----------------------------------------------------------


def job(name: str = "jid-1", **kw: Any) -> ContainerJob:
    return ContainerJob(
        name=name, image=kw.pop("image", "local/busybox:latest"), command=kw.pop("command", ("sh", "-c", "echo 'hi there'")),
        env=kw.pop("env", ("A=1", "SECRET=s3cr3t")), resources=kw.pop("resources", Resources(1, 1500, 300, 0)),
        mounts=kw.pop("mounts", (Mount("key-jid-1/incoming", "/share/incoming", True),
                                 Mount("key-jid-1/outgoing", "/share/outgoing", False))),
        **kw,
    )  # fmt: skip


def test_sbatch_args_map_resources_and_site_options() -> None:
    opts = SlurmOptions(
        storebase="/nfs/store", local_storebase="/srv/store", partition="gpu", account="chris", qos="normal",
        time_limit_minutes=90, sbatch_options=("--constraint=avx2",),
    )  # fmt: skip
    args = sbatch_args(job(resources=Resources(1, 1500, 300, 2)), opts, "/nfs/store/.pfcon-slurm/jid-1")
    assert args[:2] == ["sbatch", "--parsable"]
    for a in ("--job-name=jid-1", "--cpus-per-task=2", "--mem=300M", "--gres=gpu:2", "--time=90", "--partition=gpu",
              "--account=chris", "--qos=normal", "--constraint=avx2", "--no-requeue", "--export=NONE",
              "--output=/nfs/store/.pfcon-slurm/jid-1/output.log", f"--comment={slurm.COMMENT}"):  # fmt: skip
        assert a in args, a
    assert args[-1] == "/nfs/store/.pfcon-slurm/jid-1/job.sh"


@pytest.mark.parametrize(("millicores", "cpus"), [(1, 1), (1000, 1), (1001, 2), (2000, 2), (2500, 3)])
def test_cpus_are_millicores_rounded_up(millicores: int, cpus: int) -> None:
    args = sbatch_args(job(resources=Resources(1, millicores, 64, 0)), SlurmOptions("/s", "/s"), "/s/d")
    assert f"--cpus-per-task={cpus}" in args


def test_ignore_limits_drops_cpu_and_memory_but_not_gpus() -> None:
    args = sbatch_args(job(resources=Resources(1, 1000, 64, 1)), SlurmOptions("/s", "/s", ignore_limits=True), "/s/d")
    assert not [a for a in args if a.startswith(("--cpus-per-task", "--mem"))]
    assert "--gres=gpu:1" in args
    assert not [a for a in args if a.startswith(("--time", "--partition", "--gres=gpu:0"))]


def test_batch_script_for_docker() -> None:
    opts = SlurmOptions("/nfs/store", "/srv/store")
    script = batch_script(job(), opts, "/nfs/store/.pfcon-slurm/jid-1", (1001, 1002))
    run = next(line for line in script.splitlines() if line.startswith("docker run"))
    assert "--rm --name jid-1  --pull never --user 1001:1002" in run  # the runtime's default network
    assert "-v /nfs/store/key-jid-1/incoming:/share/incoming:ro" in run
    assert "-v /nfs/store/key-jid-1/outgoing:/share/outgoing:rw" in run
    assert "--env-file /nfs/store/.pfcon-slurm/jid-1/env" in run
    assert run.endswith("local/busybox:latest sh -c 'echo '\"'\"'hi there'\"'\"'' &")
    assert "s3cr3t" not in script  # the environment is in the 0600 env file, never in the script
    assert "docker rm -f jid-1" in script  # what a cancellation stops
    assert "/nfs/store/.pfcon-slurm/jid-1/exit" in script


def test_networks_of_plugin_and_op_jobs() -> None:
    opts = SlurmOptions("/n", "/s", network="none", op_network="host")
    assert "--name jid-1 --network none --pull" in batch_script(job(), opts, "/d", (None, None))
    assert "--name jid-1 --network host --pull" in batch_script(job(run_as=(5, 5)), opts, "/d", (5, 5))


def test_batch_script_for_apptainer_binds_and_cannot_change_user() -> None:
    opts = SlurmOptions("/nfs/store", "/srv/store", runtime=RUNTIMES["apptainer"])
    script = batch_script(job(), opts, "/d", (None, None))
    run = next(line for line in script.splitlines() if line.startswith("apptainer exec"))
    assert "--bind /nfs/store/key-jid-1/incoming:/share/incoming:ro" in run
    assert "--env-file /d/env" in run and "--user" not in run


def test_storebase_itself_and_pull_policy() -> None:
    j = job(mounts=(Mount("", "/share/incoming", True),))
    script = batch_script(j, SlurmOptions("/nfs/store/", "/s", pull_images=True), "/d", (None, 5))
    assert "-v /nfs/store:/share/incoming:ro" in script
    assert "--pull missing" in script and "--group-add 5" in script


def test_plugin_jobs_get_the_op_jobs_group_and_op_jobs_do_not() -> None:
    opts = SlurmOptions("/n", "/s", supplemental_groups=(10001,))
    assert "--user 20000:20000 --group-add 10001 " in batch_script(job(), opts, "/d", (20000, 20000))
    assert "--group-add 5 --group-add 10001 " in batch_script(job(), opts, "/d", (None, 5))
    assert "--group-add 10001 " in batch_script(job(), opts, "/d", (None, None))
    assert "--group-add" not in batch_script(job(run_as=(10001, 10001)), opts, "/d", (10001, 10001))
    assert "--group-add" not in batch_script(job(), SlurmOptions("/n", "/s", runtime=RUNTIMES["apptainer"],
                                                                 supplemental_groups=(10001,)), "/d", (None, None))


def test_custom_runtime_template() -> None:
    rt = Runtime("site", "/opt/bin/run-container --binds {mounts} --env {env_file} {image} -- {command}")
    assert template_problem(rt.run) is None
    script = batch_script(job(), SlurmOptions("/n", "/s", runtime=rt), "/d", (None, None))
    assert "--binds /n/key-jid-1/incoming:/share/incoming:ro,/n/key-jid-1/outgoing:/share/outgoing:rw" in script


@pytest.mark.parametrize(
    ("template", "problem"),
    [("run {image}", "must contain {command}"), ("run {image} {command} {oops}", "unknown placeholder(s) {oops}"),
     ("run {image {command}", "not a valid template")],
)  # fmt: skip
def test_template_problems(template: str, problem: str) -> None:
    assert problem in (template_problem(template) or "")


def test_parse_queue_keeps_only_our_jobs() -> None:
    text = (
        f"11{S}a{S}RUNNING{S}None{S}node1{S}2026-12-01T10:00:00{S}2026-12-01T09:59:00{S}2026-12-08T10:00:00{S}{slurm.COMMENT}\n"
        f"12{S}b{S}PENDING{S}Priority{S}{S}N/A{S}2026-12-01T09:59:30{S}N/A{S}{slurm.COMMENT}\n"
        f"13{S}c{S}RUNNING{S}None{S}node2{S}2026-12-01T10:00:00{S}2026-12-01T09:59:00{S}N/A{S}someone-else\n"
        f"14{S}d{S}COMPLETED{S}None{S}node2{S}2026-12-01T10:00:00{S}2026-12-01T09:59:00{S}2026-12-01T10:05:00{S}{slurm.COMMENT}\n"
    )
    rows = parse_queue(text)
    assert sorted(rows) == ["11", "12", "14"]
    assert rows["14"].time == "2026-12-01T10:05:00"  # a finished job: when it ended
    assert rows["11"].node == "node1" and rows["11"].time == "2026-12-01T10:00:00"
    assert rows["12"].time == "2026-12-01T09:59:30" and rows["12"].reason == "Priority"


def test_rate_limiter() -> None:
    now = [100.0]
    limiter = RateLimiter(4, clock=lambda: now[0])
    assert [limiter.delay() for _ in range(3)] == [0.0, 0.25, 0.5]
    now[0] = 200.0
    assert limiter.delay() == 0.0
    assert RateLimiter(0).delay() == 0.0


# -- the adapter against an in-memory SLURM ---------------------------------------------------


class FakeSlurm:
    """Enough of SLURM 22.05's commands; jobs never run unless a test moves them."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, str]] = {}
        self.next_id = 100
        self.down = False
        self.calls: list[list[str]] = []
        self.sbatch_error = ""

    def __call__(self, argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
        argv = list(argv)
        self.calls.append(argv)
        if self.down:
            return self._done(argv, 1, "", f"{argv[0]}: error: Unable to contact slurm controller (connect failure)\n")
        cmd = argv[0]
        if cmd == "sbatch":
            if self.sbatch_error:
                return self._done(argv, 1, "", self.sbatch_error)
            self.next_id += 1
            jobid = str(self.next_id)
            name = next(a.split("=", 1)[1] for a in argv if a.startswith("--job-name="))
            self.jobs[jobid] = {"name": name, "state": "PENDING", "reason": "Priority", "node": ""}
            return self._done(argv, 0, f"{jobid}\n", "")
        if cmd == "squeue":
            lines = [
                S.join((i, j["name"], j["state"], j["reason"], j["node"], "N/A", "2026-12-01T10:00:00", "N/A", slurm.COMMENT))
                for i, j in self.jobs.items()
            ]
            return self._done(argv, 0, "".join(f"{ln}\n" for ln in lines), "")
        if cmd == "scancel":
            if argv[1].startswith("--name="):  # scancel --name=N --user=U --state=...: no match is no error
                for j in self.jobs.values():
                    if j["name"] == argv[1].split("=", 1)[1] and j["state"] in ("PENDING", "RUNNING", "SUSPENDED"):
                        j["state"] = "CANCELLED"
                return self._done(argv, 0, "", "")
            j = self.jobs.get(argv[1])
            if j is None:
                return self._done(argv, 1, "", f"scancel: error: Kill job error on job id {argv[1]}: Invalid job id specified\n")
            if j["state"] in slurm.TERMINAL or j["state"] == "COMPLETING":
                return self._done(argv, 1, "", f"scancel: error: Kill job error on job id {argv[1]}: Job/step already completing or completed\n")
            j["state"] = "CANCELLED"
            return self._done(argv, 0, "", "")
        if cmd == "scontrol":
            return self._done(argv, 0, "Slurmctld(primary) at ctl is UP\n", "")
        raise AssertionError(argv)

    @staticmethod
    def _done(argv: list[str], rc: int, out: str, err: str) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(argv, rc, out, err)

    def count(self, cmd: str) -> int:
        return sum(1 for c in self.calls if c[0] == cmd)

    def set(self, name: str, state: str, reason: str = "None", node: str = "node1") -> str:
        jobid = next(i for i, j in self.jobs.items() if j["name"] == name)
        self.jobs[jobid].update(state=state, reason=reason, node=node)
        return jobid

    def forget(self, name: str) -> None:
        self.jobs = {i: j for i, j in self.jobs.items() if j["name"] != name}


@pytest.fixture
def fake() -> FakeSlurm:
    return FakeSlurm()


@pytest.fixture
def compute(fake: FakeSlurm, tmp_path: Any) -> SlurmCompute:
    return SlurmCompute(SlurmOptions(str(tmp_path), str(tmp_path), poll_seconds=3600,
                                     capabilities=ComputeCapabilities(gpus=True)), runner=fake)  # fmt: skip


def job_dir(compute: SlurmCompute, name: str) -> str:
    return os.path.join(compute.root, name)


def write(compute: SlurmCompute, name: str, file: str, text: str) -> None:
    with open(os.path.join(job_dir(compute, name), file), "w") as f:
        f.write(text)


def test_schedule_claims_the_name_and_keeps_the_env_private(compute: SlurmCompute, fake: FakeSlurm) -> None:
    info = compute.schedule(job())
    assert (info.status, info.image, info.cmd) == (JobStatus.NOT_STARTED, "local/busybox:latest", "sh -c 'echo '\"'\"'hi there'\"'\"''")
    d = job_dir(compute, "jid-1")
    assert os.stat(os.path.join(d, "env")).st_mode & 0o777 == 0o600
    assert open(os.path.join(d, "env")).read() == "A=1\nSECRET=s3cr3t\n"
    assert open(os.path.join(d, "jobid")).read().strip() == "101"
    with pytest.raises(JobAlreadyExists):
        compute.schedule(job())
    assert fake.count("sbatch") == 1


@pytest.mark.parametrize(
    ("error", "raised"),
    [
        ("sbatch: error: Batch job submission failed: Invalid partition name specified\n", InvalidJobSpec),
        ("sbatch: error: Batch job submission failed: Requested node configuration is not available\n", ResourceUnavailable),
        ("sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)\n", BackendUnavailable),
    ],
)  # fmt: skip
def test_a_refused_submission_leaves_nothing(compute: SlurmCompute, fake: FakeSlurm, error: str, raised: type) -> None:
    fake.sbatch_error = error
    with pytest.raises(raised) as e:
        compute.schedule(job())
    assert error.split("failed: ")[1].strip() in e.value.message
    assert not os.path.exists(job_dir(compute, "jid-1"))
    fake.sbatch_error = ""
    compute.schedule(job())  # and the name is free


def test_several_workers_and_bad_env_are_refused_before_anything(compute: SlurmCompute, fake: FakeSlurm) -> None:
    with pytest.raises(InvalidJobSpec, match="number_of_workers"):
        compute.schedule(job(resources=Resources(2, 1000, 64, 0)))
    with pytest.raises(InvalidJobSpec, match="env"):
        compute.schedule(job(env=("A=line\nbreak",)))
    assert fake.calls == [] and not os.path.exists(job_dir(compute, "jid-1"))


def test_status_follows_the_queue(compute: SlurmCompute, fake: FakeSlurm) -> None:
    compute.schedule(job())
    assert compute.info("jid-1").message == "PENDING: Priority"
    fake.set("jid-1", "RUNNING")
    compute.view.invalidate()
    assert compute.info("jid-1").status is JobStatus.STARTED
    fake.set("jid-1", "COMPLETED")
    write(compute, "jid-1", "exit", "0\n")
    compute.view.invalidate()
    assert compute.info("jid-1").status is JobStatus.FINISHED_SUCCESSFULLY


def test_one_queue_query_per_poll_interval_for_all_jobs(compute: SlurmCompute, fake: FakeSlurm) -> None:
    for i in range(20):
        compute.schedule(job(f"j{i}"))
    before = fake.count("squeue")
    for _ in range(3):
        for i in range(20):
            assert compute.info(f"j{i}").status is JobStatus.NOT_STARTED
    assert fake.count("squeue") - before == 1


def test_a_job_missing_from_an_older_view_is_looked_up_again(compute: SlurmCompute, fake: FakeSlurm) -> None:
    compute.schedule(job("a"))
    compute.info("a")  # the view is read now
    compute.schedule(job("b"))  # submitted after the view was read
    assert compute.info("b").status is JobStatus.NOT_STARTED
    assert fake.count("squeue") == 2


def test_status_outlives_slurm_forgetting_the_job(compute: SlurmCompute, fake: FakeSlurm) -> None:
    compute.schedule(job("ok"))
    compute.schedule(job("bad"))
    compute.schedule(job("lost"))
    fake.set("ok", "COMPLETED")
    write(compute, "ok", "exit", "0\n")
    fake.set("bad", "NODE_FAIL", "NodeDown")
    compute.view.invalidate()
    assert compute.info("bad").message == "NODE_FAIL: the node running the job failed"  # seen once: recorded
    for name in ("ok", "bad", "lost"):
        fake.forget(name)  # MinJobAge passed, no accounting database
    compute.view.invalidate()
    assert compute.info("ok").status is JobStatus.FINISHED_SUCCESSFULLY
    bad = compute.info("bad")
    assert (bad.status, bad.message) == (JobStatus.FINISHED_WITH_ERROR, "NODE_FAIL: the node running the job failed")
    # a late exit record (the partitioned node finished it) does not turn a failure into a success
    write(compute, "bad", "exit", "0\n")
    assert compute.info("bad").status is JobStatus.FINISHED_WITH_ERROR
    lost = compute.info("lost")  # never seen ending, no record: an error, never "started" forever
    assert lost.status is JobStatus.FINISHED_WITH_ERROR and "no longer knows" in lost.message


def test_container_exit_code_and_logs(compute: SlurmCompute, fake: FakeSlurm) -> None:
    compute.schedule(job())
    fake.set("jid-1", "FAILED", "NonZeroExitCode")
    write(compute, "jid-1", "exit", "3\n")
    write(compute, "jid-1", "output.log", "".join(f"line {i}\n" for i in range(10)))
    compute.view.invalidate()
    state = compute.state("jid-1", 2)
    assert state.info.message == "Error (exit code 3)"
    assert state.logs == "line 8\nline 9\n"


def test_remove_cancels_a_live_job_and_frees_the_name(compute: SlurmCompute, fake: FakeSlurm) -> None:
    compute.schedule(job())
    jobid = fake.set("jid-1", "RUNNING")
    compute.remove("jid-1")
    assert ["scancel", jobid] in fake.calls
    assert not os.path.exists(job_dir(compute, "jid-1"))
    with pytest.raises(JobNotFound):
        compute.info("jid-1")
    compute.schedule(job())  # the cancelled job (still in the queue) is not the new one
    compute.view.invalidate()
    assert compute.info("jid-1").status is JobStatus.NOT_STARTED


def test_remove_of_a_finished_job_does_not_cancel(compute: SlurmCompute, fake: FakeSlurm) -> None:
    compute.schedule(job())
    write(compute, "jid-1", "exit", "0\n")
    compute.remove("jid-1")
    assert fake.count("scancel") == 0
    with pytest.raises(JobNotFound):
        compute.remove("jid-1")


def test_unknown_and_foreign_jobs_are_not_found(compute: SlurmCompute, fake: FakeSlurm) -> None:
    fake.jobs["7"] = {"name": "theirs", "state": "RUNNING", "reason": "None", "node": "node1"}
    for name in ("theirs", "../x", ".hidden", ""):
        with pytest.raises(JobNotFound):
            compute.info(name)
    with pytest.raises(JobNotFound):
        compute.remove("theirs")
    assert fake.count("scancel") == 0


def test_controller_down_is_backend_unavailable_naming_slurm(compute: SlurmCompute, fake: FakeSlurm) -> None:
    compute.schedule(job())
    fake.down = True
    compute.view.invalidate()
    for call in (lambda: compute.info("jid-1"), lambda: compute.schedule(job("other"))):
        with pytest.raises(BackendUnavailable, match="SLURM controller unavailable"):
            call()
    assert not os.path.exists(job_dir(compute, "other"))
    fake.down = False
    assert compute.info("jid-1").status is JobStatus.NOT_STARTED  # recovered, same adapter


def test_container_user_is_picked_unless_the_job_says(compute: SlurmCompute, tmp_path: Any, fake: FakeSlurm) -> None:
    c = SlurmCompute(SlurmOptions(str(tmp_path), str(tmp_path), container_user=parse_container_user("2000:3000")), runner=fake)
    c.schedule(job("u1"))
    c.schedule(job("u2", run_as=(1001, 1001)))
    assert "--user 2000:3000" in open(os.path.join(c.root, "u1", "job.sh")).read()
    assert "--user 1001:1001" in open(os.path.join(c.root, "u2", "job.sh")).read()


# -- the operator's view: listing and cancel --------------------------------------------------


def labelled(name: str, instance: str = "inst-a", kind: JobKind = JobKind.PLUGIN, **kw: Any) -> ContainerJob:
    return job(name, labels={JOB_TYPE_LABEL: kind.value, INSTANCE_LABEL: instance}, **kw)


def test_list_jobs_reads_the_job_dirs_of_this_instance(compute: SlurmCompute, fake: FakeSlurm, tmp_path: Any) -> None:
    compute.schedule(labelled("old", resources=Resources(1, 2000, 512, 1)))
    compute.schedule(labelled("run"))
    compute.schedule(labelled("run-copy", kind=JobKind.COPY))
    compute.schedule(labelled("theirs", instance="inst-b"))
    compute.schedule(job("unlabelled"))
    fake.set("old", "COMPLETED", node="node2")
    write(compute, "old", "node", "node2\n")
    write(compute, "old", "exit", "0\n")
    compute.view.invalidate()
    compute.info("old")  # seen ending: recorded
    fake.forget("old")  # then forgotten by SLURM (MinJobAge): the job dir still lists it
    fake.set("run", "RUNNING", node="node1")  # running: the queue says where (no node file yet)
    compute.view.invalidate()
    listed = compute.list_jobs("inst-a")
    assert [s.name for s in listed] == ["run-copy", "run", "old"]  # newest first
    by_name = {s.name: s for s in listed}
    old, run, copy = by_name["old"], by_name["run"], by_name["run-copy"]
    assert (old.status, old.node, old.kind, old.image) == (JobStatus.FINISHED_SUCCESSFULLY, "node2", JobKind.PLUGIN, "local/busybox:latest")
    assert old.resources == Resources(1, 2000, 512, 1)
    assert (run.status, run.node) == (JobStatus.STARTED, "node1")
    assert (copy.kind, copy.jid, copy.status, copy.node) == (JobKind.COPY, "run", JobStatus.NOT_STARTED, "")
    assert all(s.created for s in listed)
    assert [s.name for s in compute.list_jobs("inst-b")] == ["theirs"]
    assert compute.list_jobs("inst-c") == []
    fresh = SlurmCompute(SlurmOptions(str(tmp_path), str(tmp_path)), runner=fake)  # a restarted server
    assert [s.name for s in fresh.list_jobs("inst-a")] == ["run-copy", "run", "old"]


def test_list_jobs_with_no_job_yet_and_with_slurm_down(compute: SlurmCompute, fake: FakeSlurm) -> None:
    assert compute.list_jobs("inst-a") == []  # not even the jobs' directory
    compute.schedule(labelled("a"))
    fake.down = True
    compute.view.invalidate()
    with pytest.raises(BackendUnavailable, match="SLURM controller unavailable"):
        compute.list_jobs("inst-a")


def test_cancel_stops_the_job_and_it_stays_cancelled(compute: SlurmCompute, fake: FakeSlurm, tmp_path: Any) -> None:
    compute.schedule(labelled("a"))
    jobid = fake.set("a", "RUNNING")
    write(compute, "a", "output.log", "working\n")
    info = compute.cancel("a")
    assert ["scancel", jobid] in fake.calls
    assert (info.status, info.message) == (JobStatus.FINISHED_WITH_ERROR, CANCELLED_MESSAGE)
    assert compute.state("a", 10).logs == "working\n"  # its logs stay
    fake.set("a", "RUNNING")  # whatever SLURM says next (here: not yet caught up)...
    fake.forget("a")  # ... or once it has forgotten the job
    for adapter in (compute, SlurmCompute(SlurmOptions(str(tmp_path), str(tmp_path)), runner=fake)):
        adapter.view.invalidate()
        assert (adapter.info("a").status, adapter.info("a").message) == (JobStatus.FINISHED_WITH_ERROR, CANCELLED_MESSAGE)
        [summary] = adapter.list_jobs("inst-a")
        assert (summary.status, summary.message) == (JobStatus.FINISHED_WITH_ERROR, CANCELLED_MESSAGE)
    compute.remove("a")  # DELETE still removes it, without a second scancel
    assert fake.count("scancel") == 1 and not os.path.exists(job_dir(compute, "a"))


def test_cancel_of_a_pending_job(compute: SlurmCompute, fake: FakeSlurm) -> None:
    compute.schedule(labelled("a"))
    assert compute.cancel("a").message == CANCELLED_MESSAGE
    assert next(iter(fake.jobs.values()))["state"] == "CANCELLED"


def test_cancel_leaves_a_finished_job_as_it_is(compute: SlurmCompute, fake: FakeSlurm) -> None:
    compute.schedule(labelled("ok"))
    compute.schedule(labelled("bad"))
    fake.set("ok", "COMPLETED")
    write(compute, "ok", "exit", "0\n")
    fake.set("bad", "RUNNING")
    write(compute, "bad", "exit", "3\n")  # its container ended; SLURM has not caught up
    compute.view.invalidate()
    assert compute.cancel("ok").status is JobStatus.FINISHED_SUCCESSFULLY
    assert compute.cancel("bad").status is JobStatus.STARTED  # finishing, by itself
    assert fake.count("scancel") == 0
    assert compute.info("ok").status is JobStatus.FINISHED_SUCCESSFULLY


def test_cancel_racing_the_end_of_the_job_reports_the_end(compute: SlurmCompute, fake: FakeSlurm) -> None:
    compute.schedule(labelled("a"))
    compute.info("a")  # the view shows it pending...
    fake.set("a", "COMPLETED")  # ... but it ended meanwhile (its exit not yet recorded): scancel says so
    info = compute.cancel("a")
    assert fake.count("scancel") == 1
    assert info.status is JobStatus.FINISHED_SUCCESSFULLY
    assert not os.path.exists(os.path.join(job_dir(compute, "a"), "state.cancel.tmp"))


def test_cancel_unknown_foreign_or_with_slurm_down(compute: SlurmCompute, fake: FakeSlurm) -> None:
    fake.jobs["7"] = {"name": "theirs", "state": "RUNNING", "reason": "None", "node": "node1"}
    for name in ("theirs", "missing", "../x"):
        with pytest.raises(JobNotFound):
            compute.cancel(name)
    compute.schedule(labelled("a"))
    fake.set("a", "RUNNING")
    fake.down = True
    compute.view.invalidate()
    with pytest.raises(BackendUnavailable, match="SLURM controller unavailable"):
        compute.cancel("a")
    assert not os.path.exists(os.path.join(job_dir(compute, "a"), "state"))  # not marked: it still runs
    assert fake.count("scancel") == 0


def test_cancel_of_a_submission_cut_short_cancels_by_name(compute: SlurmCompute, fake: FakeSlurm) -> None:
    compute.schedule(labelled("a"))
    fake.set("a", "RUNNING")
    os.remove(os.path.join(job_dir(compute, "a"), "jobid"))  # the server died before recording it
    old = os.stat(os.path.join(job_dir(compute, "a"), "job.json")).st_mtime - 3600
    os.utime(os.path.join(job_dir(compute, "a"), "job.json"), (old, old))
    assert compute.cancel("a").message == CANCELLED_MESSAGE
    assert [c for c in fake.calls if c[0] == "scancel"][0][1] == "--name=a"
    assert next(iter(fake.jobs.values()))["state"] == "CANCELLED"
