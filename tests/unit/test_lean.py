"""The server leaves out the optional integrations it never uses (src/_lean.py), and
those modules stay importable for whoever does need them."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PROBE = """
import sys
from pfcon.bootstrap import build_container
from pfcon.config import load_settings
from pfcon.adapters.compute.fake import FakeCompute
from pfcon.entrypoints.http.app import create_app
create_app(build_container(load_settings(), compute=FakeCompute()))
extras = ("rich", "pydantic", "attrs", "werkzeug", "greenlet", "opentelemetry")
loaded = sorted(m for m in extras if m in sys.modules)  # Litestar needs yaml
import pydantic, yaml, rich  # still there for the Kubernetes client and others
import dependency_injector.providers as p, structlog
print(loaded, pydantic.VERSION.startswith("2"), hasattr(yaml, "safe_load"))
"""


def test_the_server_loads_none_of_the_unused_extras(tmp_path: object) -> None:
    env = {**os.environ, "APPLICATION_MODE": "dev", "COMPUTE_VOLUME_TYPE": "host", "STOREBASE": str(tmp_path),
           "STOREBASE_MOUNT": str(tmp_path)}  # fmt: skip
    env.pop("PYTHONPATH", None)
    run = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split("\n")[0] == "[] True True"
