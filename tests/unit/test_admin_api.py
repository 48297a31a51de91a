"""The operator's routes (issue 12): listing this server's jobs and cancelling one, with
the fake scheduler. Not pfcon's API, behind the same bearer token."""

from __future__ import annotations

from collections.abc import Callable

from pfcon.adapters.compute.fake import FakeCompute
from pfcon.domain.model import (
    CANCELLED_MESSAGE,
    INSTANCE_LABEL,
    JOB_TYPE_LABEL,
    ContainerJob,
    JobStatus,
    Resources,
)

from ..conftest import Api


def test_listing_shows_this_servers_jobs_newest_first(app_factory: Callable[..., Api]) -> None:
    compute = FakeCompute()
    api = app_factory(compute, PFCON_INSTANCE="site-a")
    assert api.get("/admin/jobs/").json() == {"jobs": []}
    for jid in ("chris-jid-1", "chris-jid-2"):
        assert api.submit(jid, cpu_limit="500", memory_limit="200").status_code == 201
    # another server's job and a workload that is not a job, on the same scheduler
    for name, labels in (("theirs", {JOB_TYPE_LABEL: "plugin", INSTANCE_LABEL: "site-b"}), ("other", {})):
        compute.schedule(ContainerJob(name, "img", ("true",), (), Resources(), (), labels))
    compute.run("chris-jid-2")
    r = api.get("/admin/jobs/")
    assert r.status_code == 200
    jobs = r.json()["jobs"]
    assert [j["jid"] for j in jobs] == ["chris-jid-2", "chris-jid-1"]
    newest = jobs[0]
    assert newest == {
        "jid": "chris-jid-2",
        "name": "chris-jid-2",
        "kind": "plugin",
        "image": newest["image"],
        "status": "started",
        "message": newest["message"],
        "created": newest["created"],
        "resources": {"number_of_workers": 1, "cpu_limit": 500, "memory_limit": 200, "gpu_limit": 0},
        "node": "fake-node",
        "scheduler": "docker",
    }
    assert newest["image"] and newest["created"] > jobs[1]["created"]
    assert jobs[1]["status"] == "notstarted"


def test_listing_needs_the_token_and_names_a_backend_down(app_factory: Callable[..., Api]) -> None:
    compute = FakeCompute()
    api = app_factory(compute)
    assert api.get("/admin/jobs/", headers={}).status_code == 401
    r = api.post("/admin/jobs/chris-jid-1/cancel/", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and "message" in r.json()
    compute.down = "Docker engine unavailable: cannot connect to the engine"
    r = api.get("/admin/jobs/")
    assert r.status_code == 503
    assert r.json() == {"message": "Docker engine unavailable: cannot connect to the engine"}


def test_cancel_stops_and_keeps_the_job(app_factory: Callable[..., Api]) -> None:
    compute = FakeCompute()
    api = app_factory(compute)
    assert api.submit("chris-jid-1").status_code == 201
    compute.run("chris-jid-1")
    r = api.post("/admin/jobs/chris-jid-1/cancel/")
    assert r.status_code == 200, r.text
    body = r.json()["compute"]
    assert (body["jid"], body["status"], body["message"]) == ("chris-jid-1", "finishedWithError", CANCELLED_MESSAGE)
    assert set(body) == {"jid", "image", "cmd", "status", "message", "timestamp", "logs"}
    # pfcon's status route agrees, the job is still there, its data too
    status = api.get("/jobs/chris-jid-1/").json()["compute"]
    assert (status["status"], status["message"]) == ("finishedWithError", CANCELLED_MESSAGE)
    assert compute.jobs["chris-jid-1"].status is JobStatus.FINISHED_WITH_ERROR
    assert api.get("/jobs/chris-jid-1/file/").status_code == 200
    [listed] = api.get("/admin/jobs/").json()["jobs"]
    assert (listed["status"], listed["message"]) == ("finishedWithError", CANCELLED_MESSAGE)
    # DELETE keeps pfcon's meaning
    assert api.delete("/jobs/chris-jid-1/").status_code == 204
    assert api.get("/admin/jobs/").json() == {"jobs": []}


def test_cancel_leaves_a_finished_job_as_it_is(app_factory: Callable[..., Api]) -> None:
    compute = FakeCompute()
    api = app_factory(compute)
    assert api.submit("chris-jid-1").status_code == 201
    compute.finish("chris-jid-1", 0, "done\n")
    r = api.post("/admin/jobs/chris-jid-1/cancel/")
    assert r.status_code == 200
    assert r.json()["compute"]["status"] == "finishedSuccessfully"
    assert r.json()["compute"]["logs"] == "done\n"


def test_cancel_of_an_unknown_job_is_404(api: Api) -> None:
    for jid in ("chris-jid-404", "Not_A_Valid_Id"):
        r = api.post(f"/admin/jobs/{jid}/cancel/")
        assert r.status_code == 404
        assert set(r.json()) == {"message"}
