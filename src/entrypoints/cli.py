"""Command-line entrypoint: ``pfcon serve``, and job commands for a running server.

The job commands (submit, status, logs, outputs, delete; and for operators list and
cancel) are clients of a server's HTTP API (pfcon's v5 wire API, and the server's
``admin/`` routes): ``--url`` (env PFCON_URL, default the address of
``make run``), with the credentials of ``--user``/``--password`` (env PFCON_USER and
PFCON_PASSWORD; pfcon's dev credentials when neither is given). With ``--in-process``
they call the same use cases in this process instead, with the adapters selected by
the same environment variables as the server.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from ..config import ConfigError, Settings, load_settings
from ..domain.errors import DomainError
from ..domain.model import JobInfo, JobSpec, JobStatus, JobSummary, PluginType, Resources
from ..domain.ports import StagingRequest, ZipStream

if TYPE_CHECKING:
    import httpx


class _LazyHttpx:
    """httpx, imported on first use: op jobs (``pfcon op``) start faster without it."""

    def __getattr__(self, name: str) -> Any:
        import httpx as module

        return getattr(module, name)


if not TYPE_CHECKING:
    httpx = _LazyHttpx()

DEFAULT_URL = "http://127.0.0.1:30005/api/v1/"
DEV_USER, DEV_PASSWORD = "pfcon", "pfcon1234"  # pfcon's APPLICATION_MODE=dev credentials
HTTP_TIMEOUTS = {"connect": 10.0, "read": 600.0, "write": 600.0, "pool": 10.0}
DOWNLOAD_CHUNK = 1024 * 1024
POLL_SECONDS = 0.5
TERMINAL_STATUSES = frozenset(s.value for s in JobStatus if s.is_terminal)


class CliError(Exception):
    """A failure reported as ``pfcon: <message>``, exit status 1."""


class UsageError(CliError):
    """Options that do not go together; exit status 2."""


def _settings() -> Settings:
    return load_settings()


def _service(settings: Settings) -> Any:
    from ..bootstrap import build_container, wire_up

    return wire_up(build_container(settings))[0]


def cmd_serve(args: argparse.Namespace) -> int:
    from .http.server import serve

    serve(_settings(), host=args.host, port=args.port)
    return 0


# -- op jobs: what pfcon 6's copy, upload and delete containers run ---------------


def cmd_op(args: argparse.Namespace) -> int:
    """``pfcon op copy|upload|delete KEY_DIR``: the op job of pfcon 6, run in this project's
    image by the scheduler (docs/wire-contract.md). It reads its parameters file from
    KEY_DIR (``key-<jid>/``, mounted at /share/outgoing), the store's settings from its
    environment, and runs the use case on the storage adapter the server uses. Its output
    (the job's logs, returned to clients) never holds a credential."""
    from ..adapters.storage.jobarea import read_params
    from ..bootstrap import op_worker_storage
    from ..domain.model import CopyParams, DeleteParams, JobKind, UploadParams
    from ..domain.opjobs import OpWorker

    kind = JobKind(args.kind)
    key_dir = os.path.abspath(args.key_dir)
    params = read_params(key_dir, kind)
    storage_env = getattr(params, "storage_env", None) or os.environ.get("STORAGE_ENV") or "zipfile"
    shared_root = args.shared_root if kind is JobKind.COPY and storage_env in ("fslink", "filesystem") else None
    storage = op_worker_storage(storage_env, key_dir, shared_root, dict(os.environ))
    worker = OpWorker(storage)
    started = time.monotonic()
    if isinstance(params, CopyParams):
        data = worker.copy(params)
        print(
            f"copied {data.nfiles if data else 0} files of job {params.jid} ({storage_env}) into {key_dir}/incoming "
            f"in {time.monotonic() - started:.1f} s",
            flush=True,
        )
    elif isinstance(params, UploadParams):
        listing = worker.upload(params)
        print(
            f"uploaded the {len(listing.rel_file_paths)} output files of job {params.jid} under "
            f"{listing.job_output_path}/ ({storage_env}) in {time.monotonic() - started:.1f} s",
            flush=True,
        )
    elif isinstance(params, DeleteParams):
        worker.delete(params)
        left = getattr(getattr(storage, "storebase", None), "not_removed", [])
        print(f"deleted the data of job {params.jid} in {time.monotonic() - started:.1f} s", flush=True)
        if left:
            shown = ", ".join(os.path.relpath(p, key_dir) for p in left[:5])
            print(
                f"{len(left)} entries belong to another user and are left for the server to remove: {shown}", flush=True
            )
    return 0


# -- backends: a running server over HTTP, or the use cases in-process ----------


class Backend(Protocol):
    def submit(self, spec: JobSpec, upload_path: str | None) -> dict[str, Any]: ...

    def status(self, jid: str) -> dict[str, Any]:
        """pfcon's ``compute`` object, logs included."""
        ...

    def outputs(
        self, jid: str, job_output_path: str | None
    ) -> contextlib.AbstractContextManager[dict[str, Any] | Iterator[bytes]]:
        """The JSON listing, or the chunks of the output zip."""
        ...

    def delete(self, jid: str) -> None: ...

    def list_jobs(self) -> list[dict[str, Any]]:
        """The jobs of ``GET admin/jobs/``, newest first."""
        ...

    def cancel(self, jid: str) -> dict[str, Any]:
        """pfcon's ``compute`` object of the cancelled job, logs included."""
        ...

    def close(self) -> None: ...


def _compute_body(info: JobInfo, jid: str, logs: str) -> dict[str, Any]:
    return {
        "jid": jid,
        "image": info.image,
        "cmd": info.cmd,
        "status": info.status.value,
        "message": info.message,
        "timestamp": info.timestamp,
        "logs": logs,
    }


def _summary_body(summary: JobSummary, scheduler: str) -> dict[str, Any]:
    """One job as ``GET admin/jobs/`` shows it."""
    res = summary.resources
    return {
        "jid": summary.jid,
        "name": summary.name,
        "kind": summary.kind.value,
        "image": summary.image,
        "status": summary.status.value,
        "message": summary.message,
        "created": summary.created,
        "resources": None
        if res is None
        else {
            "number_of_workers": res.number_of_workers,
            "cpu_limit": res.cpu_limit,
            "memory_limit": res.memory_limit,
            "gpu_limit": res.gpu_limit,
        },
        "node": summary.node,
        "scheduler": scheduler,
    }


class InProcessBackend:
    """The use cases with the adapters configured from the environment, as the server has them."""

    def __init__(self) -> None:
        self._service = _service(_settings())

    def submit(self, spec: JobSpec, upload_path: str | None) -> dict[str, Any]:
        staging = StagingRequest(upload_path=upload_path, input_dirs=spec.input_dirs, output_dir=spec.output_dir)
        result = self._service.submit(spec, staging)
        data = result.data
        return {
            "data": {"jid": spec.jid, "nfiles": data.nfiles, "timestamp": data.timestamp, "path": data.path},
            "compute": _compute_body(result.info, spec.jid, ""),
        }

    def status(self, jid: str) -> dict[str, Any]:
        state = self._service.status(jid)
        return _compute_body(state.info, jid, state.logs)

    @contextlib.contextmanager
    def outputs(self, jid: str, job_output_path: str | None) -> Iterator[dict[str, Any] | Iterator[bytes]]:
        out = self._service.outputs(jid, job_output_path)
        if isinstance(out, ZipStream):
            try:
                yield out.chunks
            finally:
                close = getattr(out.chunks, "close", None)
                if close is not None:
                    close()
        else:
            yield {"job_output_path": out.job_output_path, "rel_file_paths": list(out.rel_file_paths)}

    def delete(self, jid: str) -> None:
        self._service.delete(jid)

    def list_jobs(self) -> list[dict[str, Any]]:
        scheduler = self._service.server_info().container_env
        return [_summary_body(s, scheduler) for s in self._service.list_jobs()]

    def cancel(self, jid: str) -> dict[str, Any]:
        info = self._service.cancel(jid)
        return _compute_body(info, jid, self._service.status(jid).logs)

    def close(self) -> None:
        pass


def _describe(message: Any) -> str:
    """A ``{"message": ...}`` value as one readable line (a dict names each field)."""
    if isinstance(message, dict):
        return "; ".join(f"{k}: {_describe(v)}" for k, v in message.items()) or "{}"
    if isinstance(message, list):
        return "; ".join(_describe(v) for v in message)
    return str(message)


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        text = " ".join(response.text.split())
        return f"HTTP {response.status_code} {response.reason_phrase}" + (f": {text[:300]}" if text else "")
    if isinstance(body, dict) and "message" in body:
        return _describe(body["message"])
    return f"HTTP {response.status_code} {response.reason_phrase}: {json.dumps(body)[:300]}"


class HttpBackend:
    """A client of a running server (pfcon's v5 API), authenticated with a bearer token."""

    def __init__(self, url: str, user: str, password: str, client: httpx.Client | None = None) -> None:
        self.base = url.rstrip("/") + "/"
        self._credentials = {"pfcon_user": user, "pfcon_password": password}
        self._owned = client is None
        self._client = client if client is not None else httpx.Client(timeout=httpx.Timeout(**HTTP_TIMEOUTS))
        self._token: str | None = None

    def close(self) -> None:
        if self._owned:
            self._client.close()

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Transport failures as one line (a refused connection with a hint)."""
        try:
            yield
        except httpx.ConnectError as e:
            raise CliError(
                f"cannot connect to {self.base} ({e}): is the server running? start it with `make run`"
            ) from None
        except httpx.HTTPError as e:
            raise CliError(f"{self.base}: {type(e).__name__}: {e}") from None

    def _headers(self) -> dict[str, str]:
        if self._token is None:
            with self._errors():
                r = self._client.post(self.base + "auth-token/", json=self._credentials)
            _check(r)
            try:
                body = r.json()
            except ValueError:
                body = None
            token = body.get("token") if isinstance(body, dict) else None
            if not isinstance(token, str):
                raise CliError(f"{self.base}auth-token/ answered without a token")
            self._token = token
        return {"Authorization": f"Bearer {self._token}"}

    def _job_url(self, jid: str, suffix: str = "") -> str:
        return f"{self.base}jobs/{quote(jid, safe='')}/{suffix}"

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        headers = self._headers()
        with self._errors():
            r = self._client.request(method, url, headers=headers, **kwargs)
        _check(r)
        return r

    def submit(self, spec: JobSpec, upload_path: str | None) -> dict[str, Any]:
        parts: list[tuple[str, Any]] = [(name, (None, value)) for name, value in _form_fields(spec)]
        with contextlib.ExitStack() as stack:
            if upload_path is not None:  # streamed from the file in chunks
                parts.append(
                    ("data_file", ("data.zip", stack.enter_context(open(upload_path, "rb")), "application/zip"))
                )
            body: dict[str, Any] = self._request("POST", self.base + "jobs/", files=parts).json()
        return body

    def status(self, jid: str) -> dict[str, Any]:
        compute: dict[str, Any] = self._request("GET", self._job_url(jid)).json()["compute"]
        return compute

    @contextlib.contextmanager
    def outputs(self, jid: str, job_output_path: str | None) -> Iterator[dict[str, Any] | Iterator[bytes]]:
        params = {"job_output_path": job_output_path} if job_output_path is not None else None
        headers = self._headers()
        with (
            self._errors(),
            self._client.stream("GET", self._job_url(jid, "file/"), params=params, headers=headers) as r,
        ):
            _check(r)
            if r.headers.get("content-type", "").split(";")[0].strip().endswith("json"):
                r.read()
                yield r.json()
            else:
                yield r.iter_bytes(DOWNLOAD_CHUNK)

    def delete(self, jid: str) -> None:
        self._request("DELETE", self._job_url(jid))

    def list_jobs(self) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = self._request("GET", self.base + "admin/jobs/").json()["jobs"]
        return jobs

    def cancel(self, jid: str) -> dict[str, Any]:
        url = f"{self.base}admin/jobs/{quote(jid, safe='')}/cancel/"
        compute: dict[str, Any] = self._request("POST", url).json()["compute"]
        return compute


def _check(response: httpx.Response) -> None:
    if not response.is_success:
        response.read()
        raise CliError(_error_message(response))


def _form_fields(spec: JobSpec) -> list[tuple[str, str]]:
    """The fields of pfcon's ``POST jobs/`` form (lists as repeated fields)."""
    r = spec.resources
    fields = [("jid", spec.jid)]
    fields += [("entrypoint", v) for v in spec.entrypoint]
    fields += [("args", v) for v in spec.args]
    fields += [("args_path_flags", v) for v in spec.args_path_flags]
    fields += [
        ("auid", spec.auid),
        ("number_of_workers", str(r.number_of_workers)),
        ("cpu_limit", str(r.cpu_limit)),
        ("memory_limit", str(r.memory_limit)),
        ("gpu_limit", str(r.gpu_limit)),
        ("image", spec.image),
        ("type", spec.type.value),
    ]
    fields += [("env", v) for v in spec.env]
    fields += [("input_dirs", v) for v in spec.input_dirs or ()]
    if spec.output_dir is not None:
        fields.append(("output_dir", spec.output_dir))
    return fields


def _credentials(args: argparse.Namespace) -> tuple[str, str]:
    user = args.user if args.user is not None else os.environ.get("PFCON_USER") or None
    password = args.password if args.password is not None else os.environ.get("PFCON_PASSWORD") or None
    if user is None and password is None:
        return DEV_USER, DEV_PASSWORD
    if user is None or password is None:
        raise UsageError(
            "give both a user and a password (--user and --password, or PFCON_USER and PFCON_PASSWORD), "
            f"or neither for the dev credentials {DEV_USER}/{DEV_PASSWORD}"
        )
    return user, password


def _server_url(args: argparse.Namespace) -> str:
    url: str = args.url or os.environ.get("PFCON_URL") or DEFAULT_URL
    return url


@contextlib.contextmanager
def _backend(args: argparse.Namespace) -> Iterator[Backend]:
    backend: Backend
    if args.in_process:
        backend = InProcessBackend()
    else:
        user, password = _credentials(args)
        backend = HttpBackend(_server_url(args), user, password, getattr(args, "http_client", None))
    try:
        yield backend
    finally:
        backend.close()


# -- job commands ----------------------------------------------------------------


def _zip_dir(directory: str) -> str:
    fd, path = tempfile.mkstemp(suffix=".zip")
    os.close(fd)
    base = path[: -len(".zip")]
    shutil.make_archive(base, "zip", root_dir=directory)
    return path


def _job_spec(args: argparse.Namespace) -> JobSpec:
    return JobSpec(
        jid=args.jid,
        image=args.image,
        entrypoint=(args.command[0],),
        args=tuple(args.command[1:]),
        args_path_flags=tuple(args.args_path_flag or ()),
        type=PluginType(args.type),
        resources=Resources(args.number_of_workers, args.cpu_limit, args.memory_limit, args.gpu_limit),
        auid=args.auid,
        env=tuple(args.env or ()),
        input_dirs=tuple(args.input_dir) if args.input_dir else None,
        output_dir=args.output_dir,
    )


def cmd_submit(args: argparse.Namespace) -> int:
    if not args.command:
        raise UsageError("submit: give the plugin command after '--'")
    if args.input and not os.path.isdir(args.input):
        raise CliError(f"--input {args.input}: no such directory")
    spec = _job_spec(args)
    with _backend(args) as backend:
        upload = _zip_dir(args.input) if args.input else None
        try:
            _print(backend.submit(spec, upload))
        finally:
            if upload:
                os.unlink(upload)
    return 0


def _status_view(compute: dict[str, Any], jid: str) -> dict[str, Any]:
    return {"jid": jid, **{k: v for k, v in compute.items() if k not in ("jid", "logs")}}


def cmd_status(args: argparse.Namespace) -> int:
    with _backend(args) as backend:
        compute = backend.status(args.jid)
        if args.wait:
            deadline = time.monotonic() + args.wait_timeout
            while compute.get("status") not in TERMINAL_STATUSES:
                if time.monotonic() >= deadline:
                    _print(_status_view(compute, args.jid))
                    raise CliError(f"job {args.jid} is still {compute.get('status')} after {args.wait_timeout:g} s")
                time.sleep(POLL_SECONDS)
                compute = backend.status(args.jid)
    _print(_status_view(compute, args.jid))
    if args.wait and compute.get("status") != JobStatus.FINISHED_SUCCESSFULLY.value:
        raise CliError(f"job {args.jid} {compute.get('status')}: {compute.get('message')}")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    with _backend(args) as backend:
        sys.stdout.write(str(backend.status(args.jid).get("logs") or ""))
    return 0


def _write_chunks(chunks: Iterable[bytes], target: str) -> None:
    """Write to a temporary file beside ``target``, then rename: no partial zip is left behind."""
    directory = os.path.dirname(os.path.abspath(target))
    fd, partial = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".part", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
        os.replace(partial, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        raise


def cmd_outputs(args: argparse.Namespace) -> int:
    with _backend(args) as backend, backend.outputs(args.jid, args.job_output_path) as out:
        if isinstance(out, dict):
            _print(out)
            return 0
        target = args.output or f"{args.jid}.zip"
        try:
            _write_chunks(out, target)
        except OSError as e:
            raise CliError(f"cannot write {target}: {e.strerror or e}") from None
    print(target)
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    with _backend(args) as backend:
        backend.delete(args.jid)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    with _backend(args) as backend:
        compute = backend.cancel(args.jid)
    _print(_status_view(compute, args.jid))
    return 0


def age(created: str, now: datetime.datetime | None = None) -> str:
    """How long ago an ISO 8601 time was, in its largest unit ("" when unknown)."""
    try:
        when = datetime.datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return ""
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    seconds = max(0, int(((now or datetime.datetime.now(datetime.UTC)) - when).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


LIST_COLUMNS = ("JID", "KIND", "STATUS", "AGE", "IMAGE", "CPU", "MEMORY", "NODE", "MESSAGE")


def jobs_table(jobs: list[dict[str, Any]], now: datetime.datetime | None = None) -> str:
    """The jobs as a text table, one line each (an unknown value is "-")."""
    rows = [LIST_COLUMNS]
    for job in jobs:
        res = job.get("resources") or {}
        message = " ".join(str(job.get("message") or "").split())
        rows.append((
            str(job.get("jid") or ""),
            str(job.get("kind") or ""),
            str(job.get("status") or ""),
            age(str(job.get("created") or ""), now) or "-",
            str(job.get("image") or "") or "-",
            f"{res['cpu_limit']}m" if res else "-",
            f"{res['memory_limit']}Mi" if res else "-",
            str(job.get("node") or "") or "-",
            message[:60] + ("..." if len(message) > 60 else "") or "-",
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(LIST_COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def cmd_list(args: argparse.Namespace) -> int:
    with _backend(args) as backend:
        jobs = backend.list_jobs()
    if args.json:
        _print({"jobs": jobs})
    else:
        print(jobs_table(jobs))
    return 0


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2))


def _client_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    server = common.add_argument_group("server")
    server.add_argument("--url", help=f"the server's API URL (env PFCON_URL; default {DEFAULT_URL})")
    server.add_argument("--user", help=f"API user (env PFCON_USER; default {DEV_USER} when no credentials are given)")
    server.add_argument("--password", help="API password (env PFCON_PASSWORD)")
    server.add_argument(
        "--in-process",
        action="store_true",
        help="no server: run the use cases in this process, with the backends configured by the "
        "server's environment variables",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pfcon", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command_name", required=True)

    serve = sub.add_parser("serve", help="run the HTTP API server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(func=cmd_serve)

    op = sub.add_parser(
        "op",
        help="run an op job of pfcon 6 (what the copy, upload and delete containers run)",
        description=cmd_op.__doc__,
    )
    op.add_argument("kind", choices=["copy", "upload", "delete"])
    op.add_argument("key_dir", metavar="KEY_DIR", help="the job's key-<jid>/ (/share/outgoing in the op container)")
    op.add_argument(
        "--shared-root",
        default="/share/incoming",
        help="storeBase, read-only (a copy from a shared filesystem; default /share/incoming)",
    )
    op.set_defaults(func=cmd_op)

    common = [_client_options()]
    submit = sub.add_parser("submit", parents=common, help="submit a job: pfcon submit JID --image I -- cmd args...")
    submit.add_argument("jid")
    submit.add_argument("--image", required=True)
    submit.add_argument("--type", choices=["ds", "fs", "ts"], default="ds")
    submit.add_argument("--number-of-workers", type=int, default=1)
    submit.add_argument("--cpu-limit", type=int, default=1000)
    submit.add_argument("--memory-limit", type=int, default=300)
    submit.add_argument("--gpu-limit", type=int, default=0)
    submit.add_argument("--auid", default="pfcon-cli", help="the ChRIS user the job runs for")
    submit.add_argument("--env", action="append", metavar="KEY=VALUE")
    submit.add_argument("--args-path-flag", action="append")
    submit.add_argument("--input", metavar="DIR", help="local input dir, zipped and uploaded (zipfile storage)")
    submit.add_argument("--input-dir", action="append", help="storage path (in-network storage)")
    submit.add_argument("--output-dir", help="storage path (in-network storage)")
    submit.set_defaults(func=cmd_submit)

    status = sub.add_parser("status", parents=common, help="show a job's status")
    status.add_argument("jid")
    status.add_argument(
        "--wait",
        action="store_true",
        help="poll until the job has ended; exit status 1 unless it finished successfully",
    )
    status.add_argument(
        "--wait-timeout",
        type=float,
        default=600,
        metavar="SECONDS",
        help="with --wait: give up after SECONDS (default 600)",
    )
    status.set_defaults(func=cmd_status)

    for name, func, help_text in (
        ("logs", cmd_logs, "print a job's logs"),
        ("delete", cmd_delete, "stop and remove a job and its data"),
    ):
        p = sub.add_parser(name, parents=common, help=help_text)
        p.add_argument("jid")
        p.set_defaults(func=func)

    listing = sub.add_parser("list", parents=common, help="list this server's jobs (newest first)")
    listing.add_argument("--json", action="store_true", help="print the server's JSON instead of a table")
    listing.set_defaults(func=cmd_list)

    cancel = sub.add_parser(
        "cancel", parents=common, help="stop a job but keep it, its data and its logs (status: cancelled)"
    )
    cancel.add_argument("jid")
    cancel.set_defaults(func=cmd_cancel)

    outputs = sub.add_parser("outputs", parents=common, help="download (zip) or list a job's outputs")
    outputs.add_argument("jid")
    outputs.add_argument("--job-output-path", help="in-network storage: list (and upload) the outputs under this path")
    outputs.add_argument("-o", "--output", help="zip file to write (default JID.zip)")
    outputs.set_defaults(func=cmd_outputs)
    return parser


def main(argv: Sequence[str] | None = None, *, http_client: httpx.Client | None = None) -> int:
    """Run the CLI; ``http_client`` (tests) replaces the HTTP client of the job commands."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if "--" in argv:  # everything after '--' is the plugin command
        split = argv.index("--")
        argv, command = argv[:split], argv[split + 1 :]
    args = build_parser().parse_args(argv)
    args.command = command
    args.http_client = http_client
    try:
        return int(args.func(args))
    except ConfigError as e:
        print(f"pfcon: configuration error: {e}", file=sys.stderr)
        return 2
    except DomainError as e:
        print(f"pfcon: {e.message}", file=sys.stderr)
        return 1
    except UsageError as e:
        print(f"pfcon: {e}", file=sys.stderr)
        return 2
    except CliError as e:
        print(f"pfcon: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
