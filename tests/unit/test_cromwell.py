"""The Cromwell adapter without a server: the WDL it renders (with pfcon's bugs fixed), the
mapping of workflow metadata to job info, and of every HTTP answer to a domain error
(httpx.MockTransport). The adapter against a server that runs the tasks:
tests/integration/test_cromwell_compute.py."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from pfcon.adapters.compute.cromwell import (
    IMAGE_LABEL,
    JOB_LABEL,
    REMOVED_LABEL,
    RESOURCES_LABEL,
    CromwellCompute,
    CromwellOptions,
    call_logs,
    job_header,
    job_info,
    render_wdl,
    utc,
    workflow_status,
)
from pfcon.adapters.compute.options import parse_container_user
from pfcon.domain.errors import BackendUnavailable, InvalidJobSpec, JobAlreadyExists, JobNotFound
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
from pfcon.domain.ports import ComputePort

WID = "e442e52a-9de1-47f0-8b4f-e6e565008cf1"
OPTIONS = CromwellOptions(url="http://cromwell:8000", storebase="/nfs/storeBase", timelimit_minutes=30)
PLUGIN_MOUNTS = (
    Mount("key-chris-jid-1/incoming", "/share/incoming", True),
    Mount("key-chris-jid-1/outgoing", "/share/outgoing", False),
)


def job(**kw: Any) -> ContainerJob:
    return ContainerJob(
        name=kw.pop("name", "chris-jid-1"),
        image=kw.pop("image", "ghcr.io/fnndsc/pl-simpledsapp:2.1.0"),
        command=kw.pop("command", ("simpledsapp", "--prefix", "lo", "/share/incoming", "/share/outgoing")),
        env=kw.pop("env", ("CHRIS_JID=chris-jid-1",)),
        resources=kw.pop("resources", Resources(1, 1234, 5678, 2)),
        mounts=kw.pop("mounts", PLUGIN_MOUNTS),
        labels=kw.pop("labels", {JOB_TYPE_LABEL: "plugin"}),
        **kw,
    )


def runtime(wdl: str) -> dict[str, str]:
    block = re.search(r"runtime \{\n(.*?)\n    \}", wdl, re.S)
    assert block
    return dict(re.fullmatch(r"\s*(\w+): '(.*)'", line).groups() for line in block.group(1).splitlines())  # type: ignore[union-attr]


def command(wdl: str) -> str:
    block = re.search(r"command <<<\n(.*?)\n    >>>", wdl, re.S)
    assert block
    return block.group(1)


# -- the workflow ------------------------------------------------------------------------------


def test_the_rendered_workflow() -> None:
    wdl = render_wdl(job(), OPTIONS, (1000, 2000))
    assert wdl == (
        "version 1.0\n\n"
        '# pfcon-job: {"name": "chris-jid-1", "image": "ghcr.io/fnndsc/pl-simpledsapp:2.1.0", '
        '"cmd": "simpledsapp --prefix lo /share/incoming /share/outgoing"}\n\n'
        "task plugin_instance {\n"
        "    command <<<\n"
        "export CHRIS_JID=chris-jid-1\n"
        "simpledsapp --prefix lo /share/incoming /share/outgoing\n"
        "    >>>\n"
        "    runtime {\n"
        "        docker: 'ghcr.io/fnndsc/pl-simpledsapp:2.1.0'\n"
        "        sharedir: '/nfs/storeBase/key-chris-jid-1'\n"
        "        mounts: '/nfs/storeBase/key-chris-jid-1/incoming:/share/incoming:ro "
        "/nfs/storeBase/key-chris-jid-1/outgoing:/share/outgoing:rw'\n"
        "        user: '1000:2000'\n"
        "        cpu: '2'\n"
        "        memory: '5954M'\n"
        "        gpu_limit: '2'\n"
        "        number_of_workers: '1'\n"
        "        timelimit: '30'\n"
        "    }\n"
        "}\n\n"
        "workflow ChRISJob {\n"
        "    call plugin_instance\n"
        "}\n"
    )


def test_sharedir_is_the_jobs_directory_never_a_dict_repr() -> None:
    """pfcon passed the mounts dict as sharedir (its repr, with quotes, broke the WDL)."""
    assert runtime(render_wdl(job(), OPTIONS))["sharedir"] == "/nfs/storeBase/key-chris-jid-1"
    op = job(name="chris-jid-1-copy", labels={JOB_TYPE_LABEL: "copy"},
             mounts=(Mount("key-chris-jid-1", "/share/outgoing", False), Mount("", "/share/incoming", True)))  # fmt: skip
    attrs = runtime(render_wdl(op, OPTIONS))
    assert attrs["sharedir"] == "/nfs/storeBase/key-chris-jid-1"  # the op job's jid, not <jid>-copy
    assert attrs["mounts"] == "/nfs/storeBase/key-chris-jid-1:/share/outgoing:rw /nfs/storeBase:/share/incoming:ro"
    shared = job(
        mounts=(PLUGIN_MOUNTS[0], Mount("home/cube/feed/out", "/share/outgoing", False))
    )  # fslink: shared output
    assert runtime(render_wdl(shared, OPTIONS))["mounts"].endswith(
        " /nfs/storeBase/home/cube/feed/out:/share/outgoing:rw"
    )


@pytest.mark.parametrize(("user", "expected"), [
    ((1000, 2000), "1000:2000"), ((1000, None), "1000"), ((None, 2000), None), ((None, None), None),
])  # fmt: skip
def test_the_user_attribute(user: tuple[int | None, int | None], expected: str | None) -> None:
    assert runtime(render_wdl(job(), OPTIONS, user)).get("user") == expected


def test_limits_as_pfcon_rendered_them_or_none() -> None:
    attrs = runtime(render_wdl(job(resources=Resources(1, 1000, 300, 0)), OPTIONS))
    assert (attrs["cpu"], attrs["memory"], attrs["gpu_limit"]) == ("1", "315M", "0")
    ignored = runtime(
        render_wdl(job(), CromwellOptions(url="http://c", storebase="/s", timelimit_minutes=1, ignore_limits=True))
    )
    assert "cpu" not in ignored and "memory" not in ignored


def test_env_and_command_survive_the_shell_and_wdl_exactly(tmp_path: Any) -> None:
    """What the shell runs is the job's command with its environment, whatever the
    characters: quotes, spaces, newlines, and WDL's own ``~{`` and ``>>>``."""
    tricky = "a 'b' \"c\" $HOME ~{x} ${y} >>> \\ \n line2"
    wdl = render_wdl(job(env=("A=" + tricky, "B="), command=("printf", "[%s]\\n", tricky, "$A", "~{")), OPTIONS)
    script = command(wdl)
    assert "~{" not in script and ">>>" not in script  # no placeholder, and the command does not end early
    out = subprocess.run(
        ["sh", "-c", script + '\nprintf "<%s|%s>" "$A" "$B"'], capture_output=True, text=True, check=True
    )
    assert out.stdout == f"[{tricky}]\n[$A]\n[~{{]\n<{tricky}|>"
    assert job_header(wdl)["cmd"] == shlex.join(("printf", "[%s]\\n", tricky, "$A", "~{"))


@pytest.mark.parametrize(("kw", "field"), [
    ({"env": ("NOT-A-NAME=1",)}, "env"),
    ({"env": ("NOEQUALS",)}, "env"),
    ({"mounts": (Mount("home/my dir", "/share/incoming", True),)}, "mounts"),
    ({"mounts": (Mount("home/it's", "/share/incoming", True),)}, "mounts"),
    ({"mounts": (Mount("home/a:b", "/share/incoming", True),)}, "mounts"),
])  # fmt: skip
def test_what_the_workflow_cannot_express_is_refused(kw: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidJobSpec, match=f"^{field}: "):
        render_wdl(job(**kw), OPTIONS)


def test_a_storebase_the_workflow_cannot_express_is_refused_at_startup() -> None:
    with pytest.raises(ValueError, match="STOREBASE"):
        CromwellCompute(httpx.Client(), CromwellOptions(url="http://c", storebase="/my store", timelimit_minutes=1))


# -- metadata → job info ----------------------------------------------------------------------

FAILURE = (
    "Job ChRISJob.plugin_instance:NA:1 exited with return code 3 which has not been declared as a valid return code."
)


def call(status: str, **kw: Any) -> dict[str, Any]:
    return {"calls": {"ChRISJob.plugin_instance": [{"executionStatus": status, "attempt": 1, "shardIndex": -1, **kw}]}}


@pytest.mark.parametrize(("metadata", "status", "message"), [
    ({"status": "Submitted"}, JobStatus.NOT_STARTED, "Submitted"),
    ({"status": "On Hold"}, JobStatus.NOT_STARTED, "On Hold"),
    ({"status": "Running"}, JobStatus.NOT_STARTED, "Running: waiting for the task to be scheduled"),
    ({"status": "Running", **call("QueuedInCromwell")}, JobStatus.NOT_STARTED, "Running: task QueuedInCromwell"),
    ({"status": "Running", **call("WaitingForQueueSpace")}, JobStatus.NOT_STARTED, "Running: task WaitingForQueueSpace"),
    ({"status": "Running", **call("Starting")}, JobStatus.NOT_STARTED, "Running: task Starting"),
    ({"status": "Running", **call("Running")}, JobStatus.STARTED, "Running"),
    ({"status": "Running", **call("Done")}, JobStatus.STARTED, "Running: task Done"),  # the workflow finishing
    ({"status": "Running", **call("RetryableFailure")}, JobStatus.STARTED, "Running: task RetryableFailure"),
    ({"status": "Succeeded", **call("Done")}, JobStatus.FINISHED_SUCCESSFULLY, "Succeeded"),
    ({"status": "Failed", **call("Failed", failures=[{"message": FAILURE, "causedBy": []}]),
      "failures": [{"message": "Workflow failed", "causedBy": [{"message": FAILURE, "causedBy": []}]}]},
     JobStatus.FINISHED_WITH_ERROR, f"Failed: {FAILURE}"),
    ({"status": "Failed", "failures": [{"message": "Workflow input processing failed", "causedBy": [
        {"message": "Required workflow input 'x' not specified", "causedBy": []}]}]},
     JobStatus.FINISHED_WITH_ERROR, "Failed: Required workflow input 'x' not specified"),
    ({"status": "Failed"}, JobStatus.FINISHED_WITH_ERROR, "Failed"),
    # cancelled through this server (an abort), or aborted by anyone: Cromwell remembers it
    ({"status": "Aborting", **call("Running")}, JobStatus.FINISHED_WITH_ERROR, CANCELLED_MESSAGE),
    ({"status": "Aborted", **call("Aborted")}, JobStatus.FINISHED_WITH_ERROR, CANCELLED_MESSAGE),
    ({"status": "Aborted"}, JobStatus.FINISHED_WITH_ERROR, CANCELLED_MESSAGE),  # aborted before it was picked up
    ({"id": WID, "metadataArchiveStatus": "ArchivedAndDeleted", "message": "Cromwell has archived this workflow's metadata."},
     JobStatus.UNDEFINED, "Cromwell has archived this workflow's metadata."),
    ({"status": "Exploded"}, JobStatus.UNDEFINED, "Exploded"),
])  # fmt: skip
def test_workflow_status(metadata: dict[str, Any], status: JobStatus, message: str) -> None:
    assert workflow_status(metadata) == (status, message)
    assert "WorkflowStatus" not in message  # pfcon showed the enum's repr


def test_a_failure_message_ends_with_the_tasks_stderr() -> None:
    metadata = {"status": "Failed", **call("Failed", failures=[{"message": FAILURE, "causedBy": []}])}
    assert (
        workflow_status(metadata, "Traceback / ValueError: bad")[1]
        == f"Failed: {FAILURE} (stderr: Traceback / ValueError: bad)"
    )


def test_job_info_from_metadata() -> None:
    wdl = render_wdl(job(), OPTIONS)
    metadata = {
        "status": "Succeeded", "end": "2024-05-01T12:00:03.000Z", "start": "2024-05-01T12:00:00.000Z",
        "submittedFiles": {"workflow": wdl}, **call("Done", start="2024-05-01T12:00:01.000Z"),
    }  # fmt: skip
    info = job_info("chris-jid-1", metadata)
    assert (info.image, info.cmd) == (job().image, shlex.join(job().command))
    assert (info.status, info.message, info.timestamp) == (
        JobStatus.FINISHED_SUCCESSFULLY,
        "Succeeded",
        "2024-05-01T12:00:03.000Z",
    )
    running = job_info("chris-jid-1", {"status": "Running", **call("Running", start="2024-05-01T12:00:01.000Z",
                                        runtimeAttributes={"docker": "x/y:1"}, commandLine="echo hi")})  # fmt: skip
    assert (running.image, running.cmd, running.timestamp) == ("x/y:1", "echo hi", "2024-05-01T12:00:01.000Z")


def test_a_workflow_not_picked_up_yet_has_its_submission_time() -> None:
    """An existing job's status (pfcon 6 answers a repeated POST with it) has a timestamp
    from the moment Cromwell accepted the workflow, as other schedulers' creation time."""
    submitted = {"status": "Submitted", "submission": "2024-05-01T11:59:59.000Z", "submittedFiles": {}}
    info = job_info("chris-jid-1", submitted)
    assert (info.status, info.timestamp) == (JobStatus.NOT_STARTED, "2024-05-01T11:59:59.000Z")
    picked_up = {**submitted, "status": "Running", "start": "2024-05-01T12:00:00.000Z"}
    assert job_info("chris-jid-1", picked_up).timestamp == "2024-05-01T12:00:00.000Z"


def test_logs_are_read_when_readable_else_located(tmp_path: Any) -> None:
    (tmp_path / "stdout").write_text("a\nb\nc\n")
    (tmp_path / "stderr").write_text("warn\n")
    readable = {"stdout": str(tmp_path / "stdout"), "stderr": str(tmp_path / "stderr")}
    assert call_logs(readable, 1000) == "a\nb\nc\nwarn\n"
    assert call_logs(readable, 2) == "c\nwarn\n"
    assert call_logs(None, 10) == ""
    elsewhere = {"stdout": "/node/exec/stdout", "stderr": "/node/exec/stderr"}
    assert call_logs(elsewhere, 10) == (
        "The logs of this job are on the Cromwell backend's filesystem, which this server cannot read:\n"
        "stdout: /node/exec/stdout\nstderr: /node/exec/stderr\n"
    )
    (tmp_path / "secret").write_text("x")
    assert "x" not in call_logs({"stdout": str(tmp_path / "secret")}, 10)  # only files named stdout / stderr


# -- the adapter over a mocked server ------------------------------------------------------------

Handler = Callable[[httpx.Request], httpx.Response]


class Server:
    """A scripted Cromwell: routes (method, path suffix) → response; records requests."""

    def __init__(self, routes: dict[tuple[str, str], Any]) -> None:
        self.routes = routes
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        for (method, suffix), answer in self.routes.items():
            if request.method == method and request.url.path.endswith(suffix):
                if isinstance(answer, Exception):
                    raise answer
                if callable(answer):
                    return answer(request)  # type: ignore[no-any-return]
                code, body = answer
                if isinstance(body, str):
                    return httpx.Response(code, text=body)
                return httpx.Response(code, json=body)
        return httpx.Response(404, text="The requested resource could not be found.")

    def sent(self, method: str, suffix: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and r.url.path.endswith(suffix)]


def compute(server: Server, **options: Any) -> CromwellCompute:
    opts = CromwellOptions(url="http://user:secret@cromwell:8000", storebase="/nfs/storeBase", timelimit_minutes=30,
                           capabilities=ComputeCapabilities(hard_memory_limit=False, checks_image_at_submit=False),
                           **options)  # fmt: skip
    client = httpx.Client(base_url="http://cromwell:8000", transport=httpx.MockTransport(server))
    return CromwellCompute(client, opts)


def found(status: str = "Running", name: str = "chris-jid-1", **labels: str) -> tuple[int, Any]:
    result = {"id": WID, "name": "ChRISJob", "status": status, "submission": "2024-05-01T12:00:00.000Z",
              "labels": {JOB_LABEL: name, **labels}}  # fmt: skip
    return 200, {"results": [result], "totalResultsCount": 1}


NONE: tuple[int, Any] = (200, {"results": [], "totalResultsCount": 0})
METADATA = (200, {"id": WID, "status": "Running", **call("Running")})


def test_is_a_compute_port() -> None:
    assert isinstance(compute(Server({})), ComputePort)


def test_the_query_finds_only_this_adapters_workflows_not_removed() -> None:
    server = Server({("POST", "/query"): found(), ("GET", "/metadata"): METADATA})
    assert compute(server).info("chris-jid-1").status is JobStatus.STARTED
    (query,) = server.sent("POST", "/query")
    assert json.loads(query.content) == [
        {"label": f"{JOB_LABEL}:chris-jid-1"},
        {"excludeLabelOr": f"{REMOVED_LABEL}:true"},
        {"additionalQueryResultFields": "labels"},
    ]


@pytest.mark.parametrize("result", [
    found(**{REMOVED_LABEL: "true"}),  # removed, but Cromwell's summary had not caught up with the filter
    found(name="chris-jid-2"),  # another job's
    (200, {"results": [{"id": WID, "name": "SomeoneElsesWorkflow", "status": "Running",
                        "labels": {JOB_LABEL: "chris-jid-1"}}], "totalResultsCount": 1}),
    NONE,
])  # fmt: skip
def test_removed_foreign_and_unknown_workflows_are_not_found(result: tuple[int, Any]) -> None:
    server = Server({("POST", "/query"): result, ("GET", "/metadata"): METADATA, ("POST", "/abort"): (200, {})})
    c = compute(server)
    for call_ in (c.info, c.remove, lambda n: c.state(n, 10)):
        with pytest.raises(JobNotFound):
            call_("chris-jid-1")
    assert (
        not server.sent("GET", "/metadata")
        and not server.sent("POST", "/abort")
        and not server.sent("PATCH", "/labels")
    )


def test_metadata_404_is_not_found() -> None:
    server = Server(
        {
            ("POST", "/query"): found(),
            ("GET", "/metadata"): (404, {"status": "fail", "message": f"Unrecognized workflow ID: {WID}"}),
        }
    )
    with pytest.raises(JobNotFound):
        compute(server).info("chris-jid-1")


def test_submit_returns_at_once_and_the_job_is_found_before_cromwells_summary_has_it() -> None:
    server = Server({("POST", "/query"): NONE, ("POST", "/api/workflows/v1"): (201, {"id": WID, "status": "Submitted"}),
                     ("GET", "/metadata"): (200, {"id": WID, "status": "Submitted", "submittedFiles": {}})})  # fmt: skip
    c = compute(server, container_user=parse_container_user("1000:1001"), labels=(("team", "fnndsc"),))
    info = c.schedule(job())
    assert (info.status, info.message, info.timestamp) == (JobStatus.NOT_STARTED, "Submitted", "")
    assert len(server.requests) == 2  # the name check and the submission: no polling
    (submit,) = server.sent("POST", "/api/workflows/v1")
    body = submit.content.decode()
    assert 'name="workflowSource"' in body and "user: '1000:1001'" in body
    labels = json.loads(re.search(r'name="labels".*?\r\n\r\n(.*?)\r\n--', body, re.S).group(1))  # type: ignore[union-attr]
    assert labels == {
        "team": "fnndsc", JOB_TYPE_LABEL: "plugin", JOB_LABEL: "chris-jid-1",
        IMAGE_LABEL: "ghcr.io/fnndsc/pl-simpledsapp:2.1.0", RESOURCES_LABEL: "1,1234,5678,2",
    }  # fmt: skip
    assert c.info("chris-jid-1").status is JobStatus.NOT_STARTED  # the query does not show it yet
    with pytest.raises(JobAlreadyExists):
        c.schedule(job())


def test_a_name_in_use_is_refused_before_submitting() -> None:
    server = Server({("POST", "/query"): found("Succeeded")})
    with pytest.raises(JobAlreadyExists):
        compute(server).schedule(job())
    assert not server.sent("POST", "/api/workflows/v1")


def test_workers_are_refused_with_the_standard_message() -> None:
    c = compute(Server({}))
    for call_ in (
        lambda: c.check("x/y:1", Resources(2, 1000, 100, 0)),
        lambda: c.schedule(job(resources=Resources(2, 1000, 100, 0))),
    ):
        with pytest.raises(
            InvalidJobSpec, match="^Compute environment only supports number_of_workers=1, got number_of_workers=2$"
        ):
            call_()
    c.check("x/y:1", Resources(1, 1000, 100, 4))  # GPUs are a runtime attribute


@pytest.mark.parametrize("abort", [
    (404, {"status": "error", "message": f"Couldn't abort {WID} because no workflow with that ID is in progress"}),
    (403, {"status": "error", "message": "Workflow in terminal status"}),
    (200, {"id": WID, "status": "Aborting"}),
])  # fmt: skip
def test_remove_aborts_if_needed_and_labels_the_workflow_removed(abort: tuple[int, Any]) -> None:
    server = Server({("POST", "/query"): found("Running"), ("POST", "/abort"): abort,
                     ("PATCH", "/labels"): (200, {"id": WID, "labels": {REMOVED_LABEL: "true"}})})  # fmt: skip
    c = compute(server)
    c.remove("chris-jid-1")  # a workflow that finished meanwhile is no error
    (patch,) = server.sent("PATCH", f"/{WID}/labels")
    assert json.loads(patch.content) == {REMOVED_LABEL: "true"}
    with pytest.raises(JobNotFound):  # invisible at once, even if the summary still shows it
        c.info("chris-jid-1")


def test_removing_a_finished_workflow_does_not_abort_it() -> None:
    server = Server({("POST", "/query"): found("Succeeded"), ("PATCH", "/labels"): (200, {"id": WID, "labels": {}})})
    compute(server).remove("chris-jid-1")
    assert not server.sent("POST", "/abort")


UNREACHABLE = "^Cromwell server unavailable: cannot connect to http://cromwell:8000 "


@pytest.mark.parametrize(("answer", "error", "pattern"), [
    (httpx.ConnectError("refused"), BackendUnavailable, UNREACHABLE),
    (httpx.ReadTimeout("slow"), BackendUnavailable, "^Cromwell server unavailable: http://cromwell:8000 did not answer in 30 s"),
    ((500, {"status": "error", "message": "database down"}), BackendUnavailable,
     "^Cromwell server unavailable: HTTP 500 to .*: database down$"),
    ((503, {"status": "fail", "message": "Cromwell service is shutting down."}), BackendUnavailable, "shutting down"),
    ((401, "Unauthorized"), BackendUnavailable, r"^Cromwell server refused to .* \(HTTP 401\): Unauthorized$"),
    ((400, {"status": "fail", "message": "Unrecognized query keys: excludeLabelOr"}), BackendUnavailable,
     r"^Cromwell server refused to find the workflow of job 'chris-jid-1' \(HTTP 400\): Unrecognized query keys"),
    ((200, "<html>proxy</html>"), BackendUnavailable, "^Cromwell server sent an answer that is not JSON"),
    ((200, {"unexpected": True}), BackendUnavailable, "^Cromwell server sent a query answer without results"),
])  # fmt: skip
def test_every_failure_of_the_query_is_mapped(answer: Any, error: type[Exception], pattern: str) -> None:
    c = compute(Server({("POST", "/query"): answer, ("GET", "/engine/v1/version"): answer}))
    for call_ in (lambda: c.info("chris-jid-1"), lambda: c.state("chris-jid-1", 10), lambda: c.remove("chris-jid-1"),
                  lambda: c.schedule(job())):  # fmt: skip
        with pytest.raises(error, match=pattern):
            call_()


def test_the_url_credentials_never_show_in_messages() -> None:
    c = compute(
        Server(
            {("POST", "/query"): httpx.ConnectError("refused"), ("GET", "/engine/v1/version"): httpx.ConnectError("x")}
        )
    )
    with pytest.raises(BackendUnavailable) as e:
        c.ping()
    assert "secret" not in str(e.value) and "Cromwell server" in str(e.value)


@pytest.mark.parametrize(("answer", "error", "pattern"), [
    ((400, {"status": "fail", "message": "Error(s): Invalid label: `` can't be empty"}), InvalidJobSpec,
     "^rejected by Cromwell: Error\\(s\\): Invalid label"),
    ((500, {"status": "fail", "message": "boom"}), BackendUnavailable, "^Cromwell server unavailable: HTTP 500"),
    ((201, {"status": "Submitted"}), BackendUnavailable, "without a workflow id"),
])  # fmt: skip
def test_every_failure_of_the_submission_is_mapped(answer: Any, error: type[Exception], pattern: str) -> None:
    server = Server({("POST", "/query"): NONE, ("POST", "/api/workflows/v1"): answer})
    with pytest.raises(error, match=pattern):
        compute(server).schedule(job())


def test_a_submission_cut_short_leaves_no_workflow() -> None:
    """The request may have reached Cromwell: a workflow it created meanwhile is removed."""
    queries = iter([NONE, found("Submitted")])

    def query(request: httpx.Request) -> httpx.Response:
        code, body = next(queries)
        return httpx.Response(code, json=body)

    server = Server({("POST", "/query"): query,
                     ("POST", "/api/workflows/v1"): httpx.ReadTimeout("slow"),
                     ("POST", "/abort"): (200, {"id": WID, "status": "Aborting"}),
                     ("PATCH", "/labels"): (200, {"id": WID, "labels": {}})})  # fmt: skip
    with pytest.raises(BackendUnavailable):
        compute(server).schedule(job())
    assert server.sent("POST", f"/{WID}/abort") and server.sent("PATCH", f"/{WID}/labels")


@pytest.mark.parametrize(("route", "answer", "pattern"), [
    (("POST", "/abort"), (500, {"status": "error", "message": "Unable to update workflow store"}), "HTTP 500 to abort"),
    (("PATCH", "/labels"), (400, {"message": "Cromwell has archived this workflow's metadata"}),
     r"refused to mark job 'chris-jid-1' removed .*\(HTTP 400\)"),
])  # fmt: skip
def test_every_failure_of_the_removal_is_mapped(route: tuple[str, str], answer: Any, pattern: str) -> None:
    routes: dict[tuple[str, str], Any] = {("POST", "/query"): found("Running"), ("POST", "/abort"): (200, {}),
                                          ("PATCH", "/labels"): (200, {})}  # fmt: skip
    routes[route] = answer
    with pytest.raises(BackendUnavailable, match=pattern):
        compute(Server(routes)).remove("chris-jid-1")


def test_ping_reads_the_version() -> None:
    server = Server({("GET", "/engine/v1/version"): (200, {"cromwell": "86"})})
    compute(server).ping()
    with pytest.raises(BackendUnavailable, match="^Cromwell server unavailable: HTTP 502"):
        compute(Server({("GET", "/engine/v1/version"): (502, "Bad Gateway")})).ping()


# -- the operator's view: listing and cancel -------------------------------------------------------

WID2, WID3, WID4 = (WID[:-1] + c for c in "234")


def listed(wid: str, name: str, status: str, submission: str, instance: str = "inst-a", **labels: str) -> dict[str, Any]:
    labels = {JOB_LABEL: name, INSTANCE_LABEL: instance, JOB_TYPE_LABEL: "plugin", IMAGE_LABEL: "x/y:1",
              RESOURCES_LABEL: "1,2000,512,0", **labels}  # fmt: skip
    return {"id": wid, "name": "ChRISJob", "status": status, "submission": submission, "labels": labels}


def test_utc() -> None:
    assert utc("2024-05-01T08:00:00.000-04:00") == "2024-05-01T12:00:00+00:00"
    assert utc("2024-05-01T12:00:00.123Z") == "2024-05-01T12:00:00.123000+00:00"
    assert utc(None) == "" and utc("garbage") == "garbage"


def test_submit_labels_without_an_image_too_long_for_a_label() -> None:
    server = Server({("POST", "/query"): NONE, ("POST", "/api/workflows/v1"): (201, {"id": WID, "status": "Submitted"})})
    compute(server).schedule(job(image=f"registry.example.org/{'a' * 250}:1"))
    body = server.sent("POST", "/api/workflows/v1")[0].content.decode()
    labels = json.loads(re.search(r'name="labels".*?\r\n\r\n(.*?)\r\n--', body, re.S).group(1))  # type: ignore[union-attr]
    assert IMAGE_LABEL not in labels and labels[RESOURCES_LABEL] == "1,1234,5678,2"


def test_list_jobs_one_query_and_metadata_only_for_jobs_in_progress() -> None:
    results = [
        listed(WID, "done", "Succeeded", "2024-05-01T08:00:00.000-04:00"),  # 12:00 UTC
        listed(WID2, "running-copy", "Running", "2024-05-01T12:30:00.000Z", **{JOB_TYPE_LABEL: "copy"}),
        listed(WID3, "odd", "Succeeded", "2024-05-01T13:00:00.000Z", **{JOB_TYPE_LABEL: "mystery"}),  # not a kind
        listed(WID4, "theirs", "Succeeded", "2024-05-01T13:00:00.000Z", instance="inst-b"),  # a summary out of step
        {**listed(WID4, "foreign", "Running", "2024-05-01T13:00:00.000Z"), "name": "SomeoneElsesWorkflow"},
        {**listed(WID4, "gone", "Succeeded", "2024-05-01T13:00:00.000Z"), "labels": {REMOVED_LABEL: "true"}},
    ]
    server = Server({
        ("POST", "/query"): (200, {"results": results, "totalResultsCount": len(results)}),
        ("GET", f"{WID2}/metadata"): (200, {"id": WID2, "status": "Running", **call("Running")}),
    })  # fmt: skip
    jobs = compute(server).list_jobs("inst-a")
    (query,) = server.sent("POST", "/query")
    assert json.loads(query.content) == [
        {"label": f"{INSTANCE_LABEL}:inst-a"},
        {"excludeLabelOr": f"{REMOVED_LABEL}:true"},
        {"additionalQueryResultFields": "labels"},
    ]
    assert [(j.name, j.kind, j.status, j.created) for j in jobs] == [
        ("running-copy", JobKind.COPY, JobStatus.STARTED, "2024-05-01T12:30:00+00:00"),
        ("done", JobKind.PLUGIN, JobStatus.FINISHED_SUCCESSFULLY, "2024-05-01T12:00:00+00:00"),
    ]
    assert jobs[0].jid == "running" and jobs[1].image == "x/y:1" and jobs[1].resources == Resources(1, 2000, 512, 0)
    assert [r.url.path for r in server.sent("GET", "/metadata")] == [f"/api/workflows/v1/{WID2}/metadata"]


def test_list_jobs_shows_a_job_cromwells_summary_does_not_have_yet() -> None:
    server = Server({("POST", "/query"): NONE, ("POST", "/api/workflows/v1"): (201, {"id": WID, "status": "Submitted"}),
                     ("GET", "/metadata"): (404, {"status": "fail", "message": f"Unrecognized workflow ID: {WID}"})})  # fmt: skip
    c = compute(server)
    c.schedule(job(labels={JOB_TYPE_LABEL: "plugin", INSTANCE_LABEL: "inst-a"}))
    (summary,) = c.list_jobs("inst-a")
    assert (summary.name, summary.status, summary.image) == ("chris-jid-1", JobStatus.NOT_STARTED, job().image)
    assert summary.created and summary.resources == Resources(1, 1234, 5678, 2)
    assert c.list_jobs("inst-b") == []


def test_cancel_aborts_and_is_cancelled_before_cromwells_record_catches_up() -> None:
    metadata = {"id": WID, "status": "Running", "submission": "2024-05-01T12:00:00.000Z", **call("Running")}
    server = Server({
        ("POST", "/query"): (200, {"results": [listed(WID, "chris-jid-1", "Running", "2024-05-01T12:00:00.000Z")]}),
        ("GET", "/metadata"): (200, metadata),  # Cromwell's metadata still says Running after the abort
        ("POST", "/abort"): (200, {"id": WID, "status": "Aborting"}),
    })  # fmt: skip
    c = compute(server)
    info = c.cancel("chris-jid-1")
    assert len(server.sent("POST", f"/{WID}/abort")) == 1
    assert (info.status, info.message) == (JobStatus.FINISHED_WITH_ERROR, CANCELLED_MESSAGE)
    assert c.info("chris-jid-1").message == CANCELLED_MESSAGE
    assert c.state("chris-jid-1", 10).info.message == CANCELLED_MESSAGE
    assert [(j.status, j.message) for j in c.list_jobs("inst-a")] == [(JobStatus.FINISHED_WITH_ERROR, CANCELLED_MESSAGE)]
    c.cancel("chris-jid-1")  # again: already cancelled, no second abort
    assert len(server.sent("POST", f"/{WID}/abort")) == 1
    # a restarted server: Cromwell's own record says so by then
    server.routes[("GET", "/metadata")] = (200, {**metadata, "status": "Aborted", **call("Aborted")})
    server.routes[("POST", "/query")] = (200, {"results": [listed(WID, "chris-jid-1", "Aborted", "2024-05-01T12:00:00.000Z")]})
    fresh = compute(server)
    assert (fresh.info("chris-jid-1").status, fresh.info("chris-jid-1").message) == (JobStatus.FINISHED_WITH_ERROR, CANCELLED_MESSAGE)
    assert [j.message for j in fresh.list_jobs("inst-a")] == [CANCELLED_MESSAGE]


@pytest.mark.parametrize("abort", [
    (404, {"status": "error", "message": f"Couldn't abort {WID} because no workflow with that ID is in progress"}),
    (403, {"status": "error", "message": "Workflow in terminal status"}),
])  # fmt: skip
def test_cancel_of_a_job_that_ended_meanwhile_reports_the_end(abort: tuple[int, Any]) -> None:
    answers = iter([{"id": WID, "status": "Running", **call("Running")}, {"id": WID, "status": "Succeeded", **call("Done")}])
    server = Server({
        ("POST", "/query"): found("Running"),
        ("GET", "/metadata"): lambda request: httpx.Response(200, json=next(answers)),
        ("POST", "/abort"): abort,
    })  # fmt: skip
    c = compute(server)
    assert c.cancel("chris-jid-1").status is JobStatus.FINISHED_SUCCESSFULLY
    assert len(server.sent("POST", "/abort")) == 1


def test_cancel_leaves_a_finished_job_alone_and_unknown_is_not_found() -> None:
    server = Server({("POST", "/query"): found("Succeeded"), ("GET", "/metadata"): (200, {"id": WID, "status": "Failed"})})
    assert compute(server).cancel("chris-jid-1").message == "Failed"
    assert not server.sent("POST", "/abort")
    with pytest.raises(JobNotFound):
        compute(Server({("POST", "/query"): NONE})).cancel("chris-jid-1")


def test_cancel_refused_by_cromwell_is_backend_unavailable_and_not_remembered() -> None:
    server = Server({
        ("POST", "/query"): found("Running"),
        ("GET", "/metadata"): METADATA,
        ("POST", "/abort"): (500, {"status": "error", "message": "Unable to update workflow store to abort"}),
    })  # fmt: skip
    c = compute(server)
    with pytest.raises(BackendUnavailable, match="^Cromwell server unavailable: HTTP 500 to cancel job 'chris-jid-1'"):
        c.cancel("chris-jid-1")
    assert c.info("chris-jid-1").status is JobStatus.STARTED  # still running
