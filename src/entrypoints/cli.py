"""Command-line entrypoint: ``pfcon serve`` and job commands on the configured backend.

The job commands call the same use cases as the HTTP API, in-process, with the
adapters selected by the same environment variables.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from ..config import ConfigError, Settings, load_settings
from ..domain.errors import DomainError
from ..domain.model import JobSpec, PluginType, Resources
from ..domain.ports import StagingRequest, ZipStream


def _settings() -> Settings:
    return load_settings()


def _service(settings: Settings) -> Any:
    from ..bootstrap import build_container, wire_up

    return wire_up(build_container(settings))[0]


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .http.app import create_app
    from ..bootstrap import build_container
    from .logs import configure_logging

    settings = _settings()
    configure_logging(settings.log_level)
    app = create_app(build_container(settings))
    uvicorn.run(
        app,
        host=args.host or settings.host,
        port=args.port or settings.port,
        access_log=False,
        log_level="warning",
        timeout_keep_alive=30,
    )
    return 0


def _zip_dir(directory: str) -> str:
    fd, path = tempfile.mkstemp(suffix=".zip")
    os.close(fd)
    base = path[: -len(".zip")]
    shutil.make_archive(base, "zip", root_dir=directory)
    return path


def cmd_submit(args: argparse.Namespace) -> int:
    if not args.command:
        raise SystemExit("pfcon submit: give the plugin command after '--'")
    settings = _settings()
    spec = JobSpec(
        jid=args.jid,
        image=args.image,
        entrypoint=(args.command[0],),
        args=tuple(args.command[1:]),
        args_path_flags=tuple(args.args_path_flag or ()),
        type=PluginType(args.type),
        resources=Resources(1, args.cpu_limit, args.memory_limit, args.gpu_limit),
        env=tuple(args.env or ()),
        input_dirs=tuple(args.input_dir) if args.input_dir else None,
        output_dir=args.output_dir,
    )
    upload = _zip_dir(args.input) if args.input else None
    try:
        result = _service(settings).submit(
            spec, StagingRequest(upload_path=upload, input_dirs=spec.input_dirs, output_dir=spec.output_dir)
        )
    finally:
        if upload:
            os.unlink(upload)
    _print({"data": {"nfiles": result.data.nfiles, "path": result.data.path},
            "compute": {"status": result.info.status.value, "cmd": result.info.cmd}})
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    state = _service(_settings()).status(args.jid)
    info = state.info
    _print({"jid": args.jid, "image": info.image, "cmd": info.cmd, "status": info.status.value,
            "message": info.message, "timestamp": info.timestamp})
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    sys.stdout.write(_service(_settings()).status(args.jid).logs)
    return 0


def cmd_outputs(args: argparse.Namespace) -> int:
    out = _service(_settings()).outputs(args.jid, args.job_output_path)
    if isinstance(out, ZipStream):
        target = args.output or f"{args.jid}.zip"
        with open(target, "wb") as f:
            for chunk in out.chunks:
                f.write(chunk)
        print(target)
    else:
        _print({"job_output_path": out.job_output_path, "rel_file_paths": list(out.rel_file_paths)})
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    _service(_settings()).delete(args.jid)
    return 0


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pfcon", description=__doc__)
    sub = parser.add_subparsers(dest="command_name", required=True)

    serve = sub.add_parser("serve", help="run the HTTP API server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(func=cmd_serve)

    submit = sub.add_parser("submit", help="submit a job: pfcon submit JID --image I -- cmd args...")
    submit.add_argument("jid")
    submit.add_argument("--image", required=True)
    submit.add_argument("--type", choices=["ds", "fs", "ts"], default="ds")
    submit.add_argument("--cpu-limit", type=int, default=1000)
    submit.add_argument("--memory-limit", type=int, default=300)
    submit.add_argument("--gpu-limit", type=int, default=0)
    submit.add_argument("--env", action="append", metavar="KEY=VALUE")
    submit.add_argument("--args-path-flag", action="append")
    submit.add_argument("--input", metavar="DIR", help="local input dir (zipfile storage)")
    submit.add_argument("--input-dir", action="append", help="storage path (in-network storage)")
    submit.add_argument("--output-dir", help="storage path (in-network storage)")
    submit.set_defaults(func=cmd_submit)

    for name, func, help_text in (
        ("status", cmd_status, "show a job's status"),
        ("logs", cmd_logs, "print a job's logs"),
        ("delete", cmd_delete, "stop and remove a job and its data"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("jid")
        p.set_defaults(func=func)

    outputs = sub.add_parser("outputs", help="download (zip) or list a job's outputs")
    outputs.add_argument("jid")
    outputs.add_argument("--job-output-path")
    outputs.add_argument("-o", "--output", help="zip file to write")
    outputs.set_defaults(func=cmd_outputs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if "--" in argv:  # everything after '--' is the plugin command
        split = argv.index("--")
        argv, command = argv[:split], argv[split + 1 :]
    args = build_parser().parse_args(argv)
    args.command = command
    try:
        return int(args.func(args))
    except ConfigError as e:
        print(f"pfcon: configuration error: {e}", file=sys.stderr)
        return 2
    except DomainError as e:
        print(f"pfcon: {e.message}", file=sys.stderr)
        return 1
