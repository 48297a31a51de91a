"""A bad configuration stops the process with a message naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ENV = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}


def run_pfcon(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pfcon", *args], env={**ENV, **env}, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("env", "variable", "fragment"),
    [
        ({"APPLICATION_MODE": "production"}, "SECRET_KEY", "required"),
        ({"APPLICATION_MODE": "dev", "CONTAINER_ENV": "cromwell", "COMPUTE_VOLUME_TYPE": "host", "STOREBASE": "/x"},
         "CROMWELL_URL", "required"),
        ({"APPLICATION_MODE": "dev", "CONTAINER_ENV": "slurm"}, "STOREBASE", "required"),
        ({"APPLICATION_MODE": "dev", "CONTAINER_ENV": "nomad"}, "CONTAINER_ENV", "unsupported"),
        ({"APPLICATION_MODE": "dev", "STORAGE_ENV": "s3"}, "STORAGE_ENV", "PFCON_INNETWORK"),
        ({"APPLICATION_MODE": "dev", "STORAGE_ENV": "fslink"}, "STORAGE_ENV", "PFCON_INNETWORK"),
        ({"APPLICATION_MODE": "dev", "COMPUTE_VOLUME_TYPE": "host"}, "STOREBASE", "required"),
        ({"APPLICATION_MODE": "dev", "COMPUTE_VOLUME_TYPE": "kubernetes_pvc"}, "COMPUTE_VOLUME_TYPE", "not valid"),
        ({"APPLICATION_MODE": "dev", "IGNORE_LIMITS": "maybe"}, "IGNORE_LIMITS", "boolean"),
        ({"APPLICATION_MODE": "dev", "CONTAINER_USER": "1000"}, "CONTAINER_USER", "UID:GID"),
        ({"APPLICATION_MODE": "dev", "JOB_LOGS_TAIL": "lots"}, "JOB_LOGS_TAIL", "integer"),
    ],
)
def test_serve_refuses_a_bad_configuration(env: dict[str, str], variable: str, fragment: str) -> None:
    result = run_pfcon("serve", **env)
    assert result.returncode == 2, result.stderr
    assert variable in result.stderr
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_job_commands_report_configuration_errors_too() -> None:
    result = run_pfcon("status", "chris-jid-1", "--in-process", APPLICATION_MODE="dev", CONTAINER_ENV="nomad")
    assert result.returncode == 2
    assert "CONTAINER_ENV" in result.stderr


def test_secrets_never_appear_in_settings_repr() -> None:
    from pfcon.config import load_settings

    settings = load_settings(
        {"APPLICATION_MODE": "production", "SECRET_KEY": "topsecretkey-0123456789abcdefghijkl", "PFCON_USER": "u",
         "PFCON_PASSWORD": "pw-secret", "COMPUTE_VOLUME_TYPE": "host", "STOREBASE": "/x"}
    )
    assert "topsecretkey" not in repr(settings) and "pw-secret" not in repr(settings)


def test_unreachable_engine_stops_startup_naming_docker_host(tmp_path: object) -> None:
    result = run_pfcon(
        "serve", APPLICATION_MODE="dev", COMPUTE_VOLUME_TYPE="host", STOREBASE="/tmp",
        DOCKER_HOST="unix:///nonexistent/docker.sock",
    )
    assert result.returncode == 2
    assert "DOCKER_HOST" in result.stderr and "Traceback" not in result.stderr


def test_a_docker_deployment_imports_no_other_backend_sdk() -> None:
    code = (
        "import sys, pfcon.bootstrap, pfcon.entrypoints.http.app, pfcon.entrypoints.cli, "
        "pfcon.adapters.compute.docker, pfcon.adapters.storage.zipfile, pfcon.adapters.storage.filesystem; "
        "bad = [m for m in ('kubernetes', 'swiftclient') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
