"""The pfcon app on an in-memory FakeCompute, served by uvicorn: framework overhead only.

Used by ``bench/bench.py`` (section ``fake``); run on its own as

    .venv/bin/python bench/fake_server.py --port 30099 --storebase /tmp/x [--jid bench-fake-1]

It builds the app exactly as ``pfcon serve`` does (same settings loader, container,
``create_app`` and logging setup) except that the compute port is a ``FakeCompute``
holding one finished job, so ``GET /api/v1/jobs/<jid>/`` exercises routing, the auth
guard, the worker-thread hop, the use case and JSON encoding, but no container engine.
uvicorn runs with uvloop + httptools and no access log.
"""

from __future__ import annotations

import argparse
import os


from pfcon.adapters.compute.fake import FakeCompute
from pfcon.bootstrap import build_container
from pfcon.config import load_settings
from pfcon.entrypoints.http.server import run_app
from pfcon.domain.model import ContainerJob, Mount, Resources
from pfcon.entrypoints.http.app import create_app
from pfcon.entrypoints.logs import configure_logging

IMAGE = "local/pfcon-busybox:1"


def seeded_compute(jid: str) -> FakeCompute:
    """A FakeCompute with one finished job shaped like a real trivial bench job."""
    fake = FakeCompute()
    fake.schedule(
        ContainerJob(
            name=jid,
            image=IMAGE,
            command=("sh", "-c", "echo done", "/share/incoming", "/share/outgoing"),
            env=("CHRIS_JID=x",),
            resources=Resources(1, 1000, 200, 0),
            mounts=(
                Mount(f"key-{jid}/incoming", "/share/incoming", read_only=True),
                Mount(f"key-{jid}/outgoing", "/share/outgoing", read_only=False),
            ),
        )
    )
    fake.run(jid)
    fake.finish(jid, 0, logs="done\n")
    return fake


def traced_telemetry(settings: object) -> object:
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from pfcon import __version__
    from pfcon.observability import build_telemetry

    class Discard(SpanExporter):
        def export(self, spans: object) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    return build_telemetry(version=__version__, scheduler=settings.container_env,  # type: ignore[attr-defined]
                           storage=settings.storage_env, exporter=Discard(), batch=True)  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--storebase", required=True)
    parser.add_argument("--jid", default="bench-fake-1")
    parser.add_argument("--tracing", action="store_true",
                        help="trace every request, spans exported in batches to an exporter that drops them")
    args = parser.parse_args()
    env = {
        **os.environ,
        "APPLICATION_MODE": "dev",
        "HOST": "127.0.0.1",
        "PORT": str(args.port),
        "COMPUTE_VOLUME_TYPE": "host",
        "STOREBASE": args.storebase,
        "STOREBASE_MOUNT": args.storebase,
    }
    settings = load_settings(env)
    # same per-request logging as `pfcon serve` (with trace ids when tracing)
    configure_logging(settings.app.log_level, tracing=args.tracing)
    overrides: dict[str, object] = {"compute": seeded_compute(args.jid)}
    if args.tracing:  # what OTEL_TRACES_EXPORTER=otlp costs here, without a collector's network time
        overrides["telemetry"] = traced_telemetry(settings)
    app = create_app(build_container(settings, **overrides))
    run_app(app, settings)  # the same uvicorn setup as `pfcon serve`


if __name__ == "__main__":
    main()
