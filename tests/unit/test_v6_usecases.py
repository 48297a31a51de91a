"""The four use cases (copy, run a plugin, upload, delete) on the fakes, and pfcon 5's submit
as their chain."""

from __future__ import annotations

import pytest

from pfcon.adapters.compute.fake import FakeCompute
from pfcon.adapters.storage.fake import FakeStorage
from pfcon.domain.errors import InvalidFields, InvalidInputData, JobAlreadyExists
from pfcon.domain.model import (
    INPUT_DIR,
    INSTANCE_LABEL,
    JOB_TYPE_LABEL,
    OP_JOB_ID_MAX_LENGTH,
    OUTPUT_DIR,
    JobKind,
    JobSpec,
    JobStatus,
    Mount,
    PluginType,
    Resources,
    ServerInfo,
    op_job_id_problem,
)
from pfcon.domain.operations import CopyInput, DeleteData, JobOptions, RunPlugin, UploadOutput
from pfcon.domain.ports import StagingRequest
from pfcon.domain.services import JobService

REQUEST = StagingRequest(input_dirs=("in",), output_dir="out")


def spec(jid: str = "chris-jid-1", **kw: object) -> JobSpec:
    values: dict[str, object] = {
        "jid": jid, "image": "local/x:1", "entrypoint": ("run",), "type": PluginType.DS,
        "resources": Resources(1, 1000, 100, 0), "args": ("--n", "1"), "env": ("A=b",),
    }  # fmt: skip
    values.update(kw)
    return JobSpec(**values)  # type: ignore[arg-type]


def test_copy_input_stages_and_refuses_a_second_copy() -> None:
    storage = FakeStorage(shared={"in/a.txt": b"a", "in/l.chrislink": b"lib", "lib/x": b"x"})
    copy = CopyInput(storage)
    copy.check("j1", REQUEST)
    data = copy("j1", REQUEST)
    assert storage.incoming["j1"] == {"a.txt": b"a", "lib/x": b"x"}
    assert data.mounts[0] == Mount("key-j1/incoming", INPUT_DIR, True)
    with pytest.raises(JobAlreadyExists):
        copy("j1", REQUEST)
    with pytest.raises(InvalidInputData):
        copy.check("j2", StagingRequest(input_dirs=("nope",), output_dir="out"))


def test_run_plugin_builds_the_container_on_given_mounts() -> None:
    compute = FakeCompute()
    run = RunPlugin(compute, JobOptions(extra_env=("HOME=/tmp",)), "docker")
    mounts = (Mount("key-chris-jid-1/incoming", INPUT_DIR, True), Mount("home/out", OUTPUT_DIR, False))
    run.check(spec())
    info = run(spec(), mounts)
    assert info.status is JobStatus.NOT_STARTED
    job = compute.jobs["chris-jid-1"].job
    assert job.command == ("run", "--n", "1", INPUT_DIR, OUTPUT_DIR)
    assert job.env == ("A=b", "HOME=/tmp")
    assert job.mounts == mounts and job.labels == {JOB_TYPE_LABEL: "plugin", INSTANCE_LABEL: "pfcon"} and job.run_as is None
    with pytest.raises(InvalidFields) as e:
        run.check(spec(jid="Bad/Id", image=""))
    assert set(e.value.problems) == {"jid", "image"}


def test_upload_output_lists_what_it_publishes_and_delete_removes_the_data() -> None:
    storage = FakeStorage(shared={"in/a.txt": b"a"})
    CopyInput(storage)("j1", REQUEST)
    storage.outgoing["j1"] = {"r.txt": b"r", "evil.chrislink": b"home/x"}
    listing = UploadOutput(storage)("j1", "/home/out")
    assert listing.job_output_path == "home/out" and listing.rel_file_paths == ("r.txt",)
    DeleteData(storage)("j1")
    assert not storage.exists("j1")


def test_v5_submit_is_copy_then_run_and_rolls_back_the_copy() -> None:
    compute, storage = FakeCompute(), FakeStorage(shared={"in/a.txt": b"a"})
    jobs = JobService(compute, storage, ServerInfo("t", True, "fslink", "docker", "host"))
    submitted = jobs.submit(spec(), REQUEST)
    assert submitted.data.nfiles == 1 and "chris-jid-1" in compute.jobs
    compute.fail_next_schedule = RuntimeError("engine exploded")
    with pytest.raises(RuntimeError):
        jobs.submit(spec("chris-jid-2"), REQUEST)
    assert not storage.exists("chris-jid-2")


def test_op_job_names_and_id_limits() -> None:
    assert [k.job_name("j") for k in JobKind] == ["j", "j-copy", "j-upload", "j-delete"]
    assert len(JobKind.UPLOAD.job_name("a" * OP_JOB_ID_MAX_LENGTH)) == 63
    assert op_job_id_problem("a" * OP_JOB_ID_MAX_LENGTH) is None
    assert "at most 56" in str(op_job_id_problem("a" * (OP_JOB_ID_MAX_LENGTH + 1)))
    assert "op job" in str(op_job_id_problem("chris-jid-1-copy"))
    assert JobStatus.NOT_STARTED.v6_value == "notStarted" and JobStatus.STARTED.v6_value == "started"
