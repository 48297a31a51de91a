"""pfcon 6's use cases (OpJobService, OpWorker) on the fakes: idempotency, guards, skipped
operations, races and backend failures."""

from __future__ import annotations

import pytest

from pfcon.adapters.compute.fake import FakeCompute
from pfcon.adapters.storage.fake import FakeJobArea, FakeStorage
from pfcon.domain.errors import (
    BackendUnavailable,
    ImageNotAvailable,
    InvalidFields,
    JobAlreadyExists,
    JobConflict,
    JobNotFound,
)
from pfcon.domain.model import (
    CopyParams,
    DeleteParams,
    JobKind,
    JobSpec,
    JobStatus,
    PluginType,
    Resources,
    ServerInfo,
    StorageFlow,
    UploadParams,
)
from pfcon.domain.opjobs import OpJobOptions, OpJobService, OpWorker
from pfcon.domain.ports import JobAreaPort, StagingRequest
from pfcon.domain.services import JobService

FSLINK = StorageFlow(copy_job=True)
SWIFT = StorageFlow(copy_job=True, upload_job=True)
SPEC = JobSpec(jid="j1", image="local/x:1", entrypoint=("run",), type=PluginType.DS, resources=Resources(1, 1000, 100, 0),
               output_dir="out")  # fmt: skip
REQUEST = StagingRequest(input_dirs=("in",), output_dir="out")


def service(flow: StorageFlow = FSLINK, **options: object) -> tuple[OpJobService, FakeCompute, FakeJobArea]:
    compute, storage = FakeCompute(), FakeStorage(shared={"in/a.txt": b"a"})
    area = FakeJobArea(storage, copy_from_shared=not flow.upload_job, outputs_in_key_dir=flow.upload_job)
    jobs = JobService(compute, storage, ServerInfo("t", True, "x", "docker", "host"))
    opts = OpJobOptions(image="local/pfcon:1", run_as=(1000, 1000), store_env=("STORE_KEY=s",), **options)  # type: ignore[arg-type]
    return OpJobService(jobs, area, flow, opts, "swift" if flow.upload_job else "fslink"), compute, area


def test_the_fake_area_is_a_job_area_port() -> None:
    assert isinstance(FakeJobArea(FakeStorage()), JobAreaPort)


def test_copy_writes_params_and_schedules_an_op_job_as_the_area_owner() -> None:
    ops, compute, area = service()
    result = ops.copy("j1", ("in",), "out", 1000, 300)
    assert result.info.status is JobStatus.NOT_STARTED
    job = compute.jobs["j1-copy"].job
    assert job.command == ("pfcon", "op", "copy", "/share/outgoing") and job.image == "local/pfcon:1"
    assert job.run_as == (1000, 1000) and job.env == ()
    assert area.params["j1-copy"] == {"jid": "j1", "storage_env": "fslink", "input_dirs": ("in",), "output_dir": "out"}


def test_copy_and_upload_of_an_object_store_get_its_credentials_delete_does_not() -> None:
    ops, compute, _ = service(SWIFT)
    ops.copy("j1", ("in",), "out", 1000, 300)
    assert compute.jobs["j1-copy"].job.env == ("STORE_KEY=s",)
    compute.finish("j1-copy")
    ops.plugin(SPEC, REQUEST)
    assert compute.jobs["j1"].job.env == ()
    compute.finish("j1")
    ops.upload("j1", "home/out", 1000, 300)
    assert compute.jobs["j1-upload"].job.env == ("STORE_KEY=s",)
    compute.finish("j1-upload")
    ops.delete("j1", 1000, 300)
    assert compute.jobs["j1-delete"].job.env == ()


def test_idempotency_keeps_running_and_succeeded_jobs_and_replaces_failed_ones() -> None:
    ops, compute, _ = service()
    first = ops.copy("j1", ("in",), "out", 1000, 300)
    for status in ("run", "finish"):
        getattr(compute, status)("j1-copy")
        again = ops.copy("j1", ("in",), "out", 1000, 300)
        assert again.info.status is compute.info("j1-copy").status and compute.removed == []
    compute.jobs["j1-copy"].status = JobStatus.UNDEFINED
    assert ops.copy("j1", ("in",), "out", 1000, 300).info.status is JobStatus.NOT_STARTED
    assert compute.removed == ["j1-copy"] and first.info.name == "j1-copy"


def test_a_concurrent_duplicate_that_won_is_answered_as_it_is() -> None:
    ops, compute, _ = service()

    class Racing(FakeCompute):
        def schedule(self, job):  # type: ignore[no-untyped-def]
            compute.schedule(job)  # the other request got there first
            raise JobAlreadyExists(job.name)

    ops.compute = Racing()
    ops.compute.info = compute.info  # type: ignore[method-assign]
    ops.compute.state = compute.state  # type: ignore[method-assign]
    ops.compute.remove = compute.remove  # type: ignore[method-assign]
    result = ops.copy("j1", ("in",), "out", 1000, 300)
    assert result.info.name == "j1-copy"


def test_a_backend_that_is_down_is_never_taken_for_an_absent_job() -> None:
    ops, compute, _ = service()
    compute.down = "Docker engine unavailable: cannot connect to the engine"
    with pytest.raises(BackendUnavailable):
        ops.copy("j1", ("in",), "out", 1000, 300)
    with pytest.raises(BackendUnavailable):
        ops.plugin(SPEC, REQUEST)


def test_a_missing_op_image_is_the_servers_problem_not_the_clients() -> None:
    ops, compute, _ = service()
    compute.images = {"local/x:1"}
    compute.fail_next_schedule = ImageNotAvailable("image: 'local/pfcon:1' is not present")
    with pytest.raises(BackendUnavailable, match="PFCON_OP_IMAGE"):
        ops.copy("j1", ("in",), "out", 1000, 300)


def test_guards() -> None:
    ops, compute, area = service(SWIFT)
    with pytest.raises(JobConflict, match="No copy job found"):
        ops.plugin(SPEC, REQUEST)
    ops.copy("j1", ("in",), "out", 1000, 300)
    with pytest.raises(JobConflict, match=r"status: notStarted"):
        ops.plugin(SPEC, REQUEST)
    with pytest.raises(JobConflict, match="The copy job is still active"):
        ops.delete("j1", 1000, 300)
    with pytest.raises(JobConflict, match="No plugin job found"):
        ops.upload("j1", "out", 1000, 300)
    compute.finish("j1-copy")
    ops.plugin(SPEC, REQUEST)
    with pytest.raises(JobConflict, match="The plugin job is still active"):
        ops.delete("j1", 1000, 300)
    compute.jobs["j1"].status = JobStatus.UNDEFINED
    with pytest.raises(JobConflict, match=r"Plugin job has not completed yet \(status: undefined\)"):
        ops.upload("j1", "out", 1000, 300)
    compute.finish("j1")
    ops.upload("j1", "out", 1000, 300)
    with pytest.raises(JobConflict, match="The upload job is still active"):
        ops.delete("j1", 1000, 300)
    compute.finish("j1-upload")
    assert ops.delete("j1", 1000, 300).info.name == "j1-delete"


def test_skips_and_bad_input() -> None:
    ops, _, _ = service(StorageFlow())
    assert ops.copy("j1", (), "out", 1000, 300).info.message == "copySkipped"
    assert ops.upload("j1", "out", 1000, 300).info.message == "uploadSkipped"
    assert ops.delete("j1", 1000, 300).info.message == "deleteSkipped"
    ops, _, _ = service()
    with pytest.raises(InvalidFields) as e:
        ops.copy("j1", ("in",), "out", 0, 1)
    assert set(e.value.problems) == {"cpu_limit", "memory_limit"}
    with pytest.raises(JobNotFound):
        ops.status(JobKind.COPY, "../etc")
    ops.remove(JobKind.COPY, "../etc")  # nothing to remove: no error


def test_removing_a_succeeded_delete_job_removes_what_is_left() -> None:
    ops, compute, area = service()
    ops.copy("j1", ("in",), "out", 1000, 300)
    compute.finish("j1-copy")
    ops.delete("j1", 1000, 300)
    ops.remove(JobKind.DELETE, "j1")  # not finished: the data stays
    assert area.removed == []
    ops.delete("j1", 1000, 300)
    compute.finish("j1-delete")
    ops.remove(JobKind.DELETE, "j1")
    assert area.removed == ["j1"]


def test_the_op_worker_runs_the_same_use_cases() -> None:
    storage = FakeStorage(shared={"in/a.txt": b"a"})
    worker = OpWorker(storage)
    data = worker.copy(CopyParams("j1", "fslink", ("in",), "out"))
    assert data is not None and data.nfiles == 1 and storage.incoming["j1"] == {"a.txt": b"a"}
    assert worker.copy(CopyParams("j2", "fslink", (), "out")) is None
    storage.outgoing["j1"] = {"r.txt": b"r"}
    assert worker.upload(UploadParams("j1", "swift", "home/out")).rel_file_paths == ("r.txt",)
    worker.delete(DeleteParams("j1"))
    assert not storage.exists("j1")
