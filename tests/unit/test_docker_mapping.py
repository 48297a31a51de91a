"""Docker inspect output → job status and info (docs/wire-contract.md §8.1). No Docker needed."""

from __future__ import annotations

import types
from typing import Any

import pytest

from pfcon.adapters.compute.docker import ZERO_TIME, decode_logs, docker_status, job_info_from_inspect
from pfcon.domain.model import JobInfo, JobStatus


def state(status: str, **fields: Any) -> dict[str, Any]:
    """A realistic ``State`` object of ``docker inspect``."""
    base: dict[str, Any] = {
        "Status": status,
        "Running": False,
        "Paused": False,
        "Restarting": False,
        "OOMKilled": False,
        "Dead": False,
        "Pid": 0,
        "ExitCode": 0,
        "Error": "",
        "StartedAt": ZERO_TIME,
        "FinishedAt": ZERO_TIME,
    }
    base.update(fields)
    return base


@pytest.mark.parametrize(
    ("st", "expected"),
    [
        (state("running", Running=True, Pid=42), JobStatus.STARTED),
        (state("paused", Running=True, Paused=True), JobStatus.STARTED),
        (state("paused", Paused=True), JobStatus.STARTED),
        (state("created"), JobStatus.NOT_STARTED),
        (state("exited", OOMKilled=True, ExitCode=137), JobStatus.FINISHED_WITH_ERROR),
        (state("exited", OOMKilled=True, ExitCode=0), JobStatus.FINISHED_WITH_ERROR),
        (state("dead", Dead=True), JobStatus.FINISHED_WITH_ERROR),
        (state("exited", ExitCode=0), JobStatus.FINISHED_SUCCESSFULLY),
        (state("exited", ExitCode=1), JobStatus.FINISHED_WITH_ERROR),
        (state("exited", ExitCode=127), JobStatus.FINISHED_WITH_ERROR),
        (state("exited", ExitCode=-1), JobStatus.FINISHED_WITH_ERROR),
        (state("restarting", Restarting=True), JobStatus.UNDEFINED),
        (state("removing"), JobStatus.UNDEFINED),
        (state("weird-new-state"), JobStatus.UNDEFINED),
        ({}, JobStatus.UNDEFINED),
        ({"Status": "exited"}, JobStatus.FINISHED_WITH_ERROR),  # no ExitCode: not a success
        ({"Status": "created"}, JobStatus.NOT_STARTED),
        ({"Running": True}, JobStatus.STARTED),
    ],
)
def test_docker_status_table(st: dict[str, Any], expected: JobStatus) -> None:
    assert docker_status(st) is expected


def test_status_wire_strings() -> None:
    assert [s.value for s in JobStatus] == [
        "notstarted",
        "started",
        "finishedSuccessfully",
        "finishedWithError",
        "undefined",
    ]


def inspect(st: dict[str, Any], cmd: list[str] | None = None, image: str = "fnndsc/pl-simpledsapp:2.1.0") -> dict[str, Any]:
    return {
        "Id": "0123456789abcdef",
        "Name": "/chris-jid-8",
        "Config": {
            "Image": image,
            "Cmd": cmd,
            "Env": ["CHRIS_JID=chris-jid-8"],
            "Labels": {"org.chrisproject.miniChRIS": "plugininstance"},
        },
        "State": st,
    }


CMD = ["python3", "/usr/local/bin/simpledsapp", "--prefix", "le", "/share/incoming", "/share/outgoing"]


def test_job_info_of_a_finished_container() -> None:
    attrs = inspect(
        state(
            "exited",
            ExitCode=0,
            StartedAt="2024-03-01T10:00:00.123456789Z",
            FinishedAt="2024-03-01T10:00:05.987654321Z",
        ),
        cmd=CMD,
    )
    assert job_info_from_inspect("chris-jid-8", attrs) == JobInfo(
        name="chris-jid-8",
        image="fnndsc/pl-simpledsapp:2.1.0",
        cmd="python3 /usr/local/bin/simpledsapp --prefix le /share/incoming /share/outgoing",
        status=JobStatus.FINISHED_SUCCESSFULLY,
        message="exited",
        timestamp="2024-03-01T10:00:05.987654321Z",
    )


def test_podmans_transient_stopped_state_gives_the_same_info_as_exited() -> None:
    """Podman 4.3 shows "stopped" for a moment, then "exited", with the same exit code and
    time: a finished job's info must not change between the two (seen flaky in CI)."""
    fields = {"ExitCode": 3, "StartedAt": "2024-03-01T10:00:00Z", "FinishedAt": "2024-03-01T10:00:05Z"}
    stopped = job_info_from_inspect("chris-jid-8", inspect(state("stopped", **fields), cmd=CMD))
    exited = job_info_from_inspect("chris-jid-8", inspect(state("exited", **fields), cmd=CMD))
    assert stopped == exited
    assert (exited.status, exited.message) == (JobStatus.FINISHED_WITH_ERROR, "exited")


def test_job_info_of_a_running_container_uses_started_at() -> None:
    attrs = inspect(
        state("running", Running=True, StartedAt="2024-03-01T10:00:00.5Z", FinishedAt=ZERO_TIME),
        cmd=CMD,
    )
    info = job_info_from_inspect("chris-jid-8", attrs)
    assert info.timestamp == "2024-03-01T10:00:00.5Z"
    assert info.status is JobStatus.STARTED
    assert info.message == "running"


def test_job_info_of_a_restarted_container_uses_finished_at() -> None:
    # FinishedAt may be earlier than StartedAt; pfcon still prefers FinishedAt when set
    attrs = inspect(
        state("exited", ExitCode=3, StartedAt="2024-03-02T00:00:00Z", FinishedAt="2024-03-01T00:00:00Z"),
        cmd=CMD,
    )
    info = job_info_from_inspect("j", attrs)
    assert info.timestamp == "2024-03-01T00:00:00Z"
    assert info.status is JobStatus.FINISHED_WITH_ERROR


def test_job_info_of_a_created_container() -> None:
    info = job_info_from_inspect("chris-jid-8", inspect(state("created"), cmd=CMD))
    assert info.status is JobStatus.NOT_STARTED
    assert info.message == "created"
    assert info.timestamp == ZERO_TIME == "0001-01-01T00:00:00Z"


def test_cmd_is_shell_quoted() -> None:
    cmd = ["sh", "-c", "echo 'hi there' && ls $HOME", "", "a\"b", "/share/outgoing"]
    info = job_info_from_inspect("j", inspect(state("exited"), cmd=cmd))
    assert info.cmd == "sh -c 'echo '\"'\"'hi there'\"'\"' && ls $HOME' '' 'a\"b' /share/outgoing"


@pytest.mark.parametrize("cmd", [None, []])
def test_missing_cmd_is_empty(cmd: list[str] | None) -> None:
    assert job_info_from_inspect("j", inspect(state("exited"), cmd=cmd)).cmd == ""


def test_sparse_inspect_output() -> None:
    info = job_info_from_inspect("j", {})
    assert info == JobInfo(
        name="j", image="", cmd="", status=JobStatus.UNDEFINED, message="", timestamp=ZERO_TIME
    )


def test_decode_logs_valid_utf8() -> None:
    assert decode_logs("héllo\nwörld\n".encode()) == "héllo\nwörld\n"


def test_decode_logs_invalid_utf8_uses_replacement_characters() -> None:
    assert decode_logs(b"ok \xff\xfe end\n") == "ok \ufffd\ufffd end\n"
    # a multi-byte sequence cut by the log tail
    assert decode_logs("é".encode()[:1] + b"x") == "\ufffdx"


def test_decode_logs_passes_text_through_and_handles_empty() -> None:
    assert decode_logs("already text") == "already text"
    assert decode_logs(b"") == ""


# -- the job's user and groups -------------------------------------------------------------------


class _Api:
    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []

    def create_host_config(self, **kw: Any) -> dict[str, Any]:
        return kw

    def create_container(self, **kw: Any) -> None:
        self.created.append(kw)

    def start(self, name: str) -> None:
        pass


def _plugin(run_as: tuple[int, int] | None = None) -> Any:
    from pfcon.domain.model import ContainerJob, Mount, Resources

    return ContainerJob(
        "j1", "local/x:1", ("true",), (), Resources(1, 1000, 300, 0),
        (Mount("key-j1/outgoing", "/share/outgoing", False),), run_as=run_as,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("container_user", "user", "group_add"),
    [(None, None, [10001]), ("20000-20000:", "20000", [10001]), (":3000", None, [3000, 10001]),
     ("20000:3000", "20000:3000", [10001]), ("20000:10001", "20000:10001", None)],
)  # fmt: skip
def test_a_plugin_gets_the_op_jobs_group(container_user: str | None, user: str | None, group_add: list[int] | None) -> None:
    # the op jobs' group owns the key-<jid>/outgoing a plugin writes in (mode 2775)
    from pfcon.adapters.compute.docker import DockerCompute, DockerOptions
    from pfcon.adapters.compute.options import parse_container_user

    api = _Api()
    options = DockerOptions(storebase="/sb", container_user=parse_container_user(container_user),
                            supplemental_groups=(10001,))  # fmt: skip
    docker = DockerCompute(types.SimpleNamespace(api=api), options)  # type: ignore[arg-type]
    docker.schedule(_plugin())
    docker.schedule(_plugin(run_as=(10001, 10001)))
    plugin, op = api.created
    assert (plugin["user"], plugin["host_config"].get("group_add")) == (user, group_add)
    assert (op["user"], op["host_config"].get("group_add")) == ("10001:10001", None)  # an op job: its own user only


def test_remove_retries_an_engine_that_fails_to_stop_an_exiting_container() -> None:
    """Podman 4.3: a forced removal racing the process's exit answers 500 once."""
    import docker.errors
    import requests

    from pfcon.adapters.compute.docker import DockerCompute, DockerOptions
    from pfcon.domain.errors import BackendUnavailable

    class Api:
        def __init__(self, failures: int) -> None:
            self.failures, self.calls = failures, 0

        def inspect_container(self, name: str) -> dict[str, Any]:
            return {"Id": f"id-of-{name}", "Name": f"/{name}", "Config": {"Labels": {"org.chrisproject.job_type": "plugin"}}}

        def remove_container(self, name: str, force: bool) -> None:
            assert name == "id-of-j"  # by the id of the container of that very name
            self.calls += 1
            if self.calls <= self.failures:
                response = requests.models.Response()
                response.status_code, response.url, response.reason = 500, "http://engine/containers/j", "Internal Server Error"
                raise docker.errors.APIError("could not be stopped", response=response)

    class Client:
        def __init__(self, api: Api) -> None:
            self.api = api

    ok = Api(failures=2)
    DockerCompute(Client(ok), DockerOptions(storebase="/s", status_view=False)).remove("j")  # type: ignore[arg-type]
    assert ok.calls == 3
    down = Api(failures=10)
    try:
        DockerCompute(Client(down), DockerOptions(storebase="/s", status_view=False)).remove("j")  # type: ignore[arg-type]
    except BackendUnavailable:
        pass
    else:
        raise AssertionError("a lasting 5xx is the engine being unavailable")
    assert down.calls == 4


class ImageApi:
    """The engine calls a submission makes, with an image that can disappear."""

    def __init__(self) -> None:
        self.images = {"local/present:1"}
        self.inspected: list[str] = []
        self.created: list[str] = []

    def inspect_image(self, image: str) -> dict[str, Any]:
        import docker.errors

        self.inspected.append(image)
        if image not in self.images:
            raise docker.errors.ImageNotFound(f"No such image: {image}")
        return {"Id": image}

    def create_host_config(self, **kw: Any) -> dict[str, Any]:
        return kw

    def create_container(self, image: str, name: str, **kw: Any) -> None:
        import docker.errors

        if image not in self.images:
            raise docker.errors.ImageNotFound(f"No such image: {image}")
        self.created.append(name)

    def start(self, name: str) -> None:
        pass


def test_an_image_found_present_is_not_looked_up_again_and_its_removal_is_still_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pfcon.adapters.compute.docker as module
    from pfcon.domain.errors import ImageNotAvailable
    from pfcon.domain.model import ContainerJob, Resources

    api = ImageApi()
    compute = module.DockerCompute(
        types.SimpleNamespace(api=api), module.DockerOptions(storebase="/tmp", status_view=False)  # type: ignore[arg-type]
    )
    resources = Resources(1, 1000, 100, 0)
    for _ in range(3):
        compute.check("local/present:1", resources)
    assert api.inspected == ["local/present:1"]  # one engine round trip, not one per POST
    with pytest.raises(ImageNotAvailable):
        compute.check("local/absent:1", resources)
    with pytest.raises(ImageNotAvailable):  # an absent image is never remembered
        compute.check("local/absent:1", resources)
    api.images.clear()  # removed from the engine after it was seen
    compute.check("local/present:1", resources)  # (within the window: not looked up)
    job = ContainerJob("job-1", "local/present:1", ("true",), (), resources, ())
    with pytest.raises(ImageNotAvailable):
        compute.schedule(job)  # create itself refuses it: the submission is rolled back
    assert api.created == []
    with pytest.raises(ImageNotAvailable):
        compute.check("local/present:1", resources)  # and it is looked up again
    api.images.add("local/present:1")
    clock = [1000.0]
    monkeypatch.setattr(module.time, "monotonic", lambda: clock[0])
    compute.check("local/present:1", resources)
    seen = len(api.inspected)
    clock[0] += module.IMAGE_SEEN_SECONDS + 1
    compute.check("local/present:1", resources)
    assert len(api.inspected) == seen + 1  # looked up again once the window has passed


def test_a_container_the_engine_finds_by_an_id_prefix_or_a_non_job_of_the_name_is_not_the_job() -> None:
    """With no container of the name asked for, the engine answers with a container whose
    id starts with it (or 500 when several do); a container of that name may also be
    something else than a job (a database): the job does not exist, and nothing of that
    other container is read, stopped or removed."""
    import docker.errors
    import requests

    from pfcon.adapters.compute.docker import DockerCompute, DockerOptions
    from pfcon.domain.errors import JobNotFound

    class Api:
        def __init__(self, ambiguous: bool) -> None:
            self.ambiguous = ambiguous
            self.changed: list[str] = []

        def inspect_container(self, ref: str) -> dict[str, Any]:
            if self.ambiguous:
                response = requests.models.Response()
                response.status_code, response.url, response.reason = 500, "http://engine/containers/a/json", "Error"
                raise docker.errors.APIError(
                    "500 Server Error", response=response, explanation=f"Multiple IDs found with provided prefix: {ref}"
                )
            if ref == "db":  # a container of that very name that is not a job (no job-type label)
                return {"Id": "d" * 64, "Name": "/db", "Config": {"Labels": {}}, "State": {"Running": True}}
            return {"Id": "a1b2c3" + "0" * 58, "Name": "/someone-elses", "State": {"Status": "running", "Running": True}}

        def logs(self, ref: str, **kw: Any) -> bytes:
            return b"secret\n"

        def stop(self, ref: str, **kw: Any) -> None:
            self.changed.append(f"stop {ref}")

        def remove_container(self, ref: str, force: bool = False) -> None:
            self.changed.append(f"remove {ref}")

    class Client:
        def __init__(self, api: Api) -> None:
            self.api = api

    for ambiguous in (False, True):
        api = Api(ambiguous)
        compute = DockerCompute(Client(api), DockerOptions(storebase="/s", status_view=False))  # type: ignore[arg-type]
        for call in (
            lambda: compute.info("a1"),
            lambda: compute.state("a1", 10),
            lambda: compute.cancel("a1"),
            lambda: compute.remove("a1"),
            lambda: compute.state("db", 10),
            lambda: compute.cancel("db"),
            lambda: compute.remove("db"),
        ):
            try:
                call()
            except JobNotFound:
                pass
            else:
                raise AssertionError("a container of another name is not the job")
        assert api.changed == []
