"""The CLI entrypoint reuses the use cases on real Docker; storeBase discovery (§5.6)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
import zipfile
from typing import Any

import pytest

from pfcon.adapters.compute.docker import discover_storebase

from .conftest import TEST_IMAGE

pytestmark = pytest.mark.docker


def cli(storebase: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "APPLICATION_MODE": "dev",
        "COMPUTE_VOLUME_TYPE": "host",
        "STOREBASE": storebase,
        "STOREBASE_MOUNT": storebase,
    }
    return subprocess.run([sys.executable, "-m", "pfcon", *args], env=env, capture_output=True, text=True, timeout=120)


def test_cli_submit_status_logs_outputs_delete(docker_client: Any, tmp_path: Any) -> None:
    storebase = str(tmp_path / "sb")
    os.makedirs(storebase)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.txt").write_text("from the cli")
    jid = f"cli-{uuid.uuid4().hex[:8]}"
    try:
        r = cli(storebase, "submit", jid, "--image", TEST_IMAGE, "--input", str(tmp_path / "in"),
                "--", "sh", "-c", 'cp "$0"/x.txt "$1"/y.txt; echo cli-done')
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["data"]["nfiles"] == 1
        for _ in range(200):
            r = cli(storebase, "status", jid)
            assert r.returncode == 0, r.stderr
            if json.loads(r.stdout)["status"] == "finishedSuccessfully":
                break
        assert json.loads(r.stdout)["status"] == "finishedSuccessfully"
        assert cli(storebase, "logs", jid).stdout.strip() == "cli-done"
        target = str(tmp_path / "out.zip")
        assert cli(storebase, "outputs", jid, "-o", target).returncode == 0
        assert zipfile.ZipFile(target).read("y.txt") == b"from the cli"
        assert cli(storebase, "delete", jid).returncode == 0
        r = cli(storebase, "status", jid)
        assert r.returncode == 1 and jid in r.stderr
    finally:
        for c in docker_client.containers.list(all=True, filters={"name": jid}):
            c.remove(force=True)


def test_storebase_from_a_named_volume(docker_client: Any) -> None:
    name = f"pfcon-test-{uuid.uuid4().hex[:8]}"
    volume = docker_client.volumes.create(name)
    try:
        path = discover_storebase(docker_client, name, "unused=1", "/var/local/storeBase")
        assert path == volume.attrs["Mountpoint"]
    finally:
        volume.remove(force=True)


def test_storebase_from_the_labelled_server_container(docker_client: Any, tmp_path: Any) -> None:
    label = f"org.chrisproject.role=pfcon-test-{uuid.uuid4().hex[:6]}"
    with pytest.raises(ValueError, match="No container found"):
        discover_storebase(docker_client, None, label, "/var/local/storeBase")
    container = docker_client.containers.run(
        TEST_IMAGE, ["sleep", "60"], detach=True, labels=dict([label.split("=")]),
        volumes={str(tmp_path): {"bind": "/var/local/storeBase", "mode": "rw"}},
    )
    try:
        assert discover_storebase(docker_client, None, label, "/var/local/storeBase") == str(tmp_path)
        with pytest.raises(ValueError, match="does not have a mount"):
            discover_storebase(docker_client, None, label, "/elsewhere")
    finally:
        container.remove(force=True)
