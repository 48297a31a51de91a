"""The CLI on real Docker: the README's example against a running server, the
in-process use cases; storeBase discovery (docs/wire-contract.md §9.5)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import uuid
import zipfile
from typing import Any

import pytest

from pfcon.adapters.compute.docker import discover_storebase

from .conftest import TEST_IMAGE
from .server import ROOT, start_server

pytestmark = pytest.mark.docker

VENV_PFCON = os.path.join(os.path.dirname(sys.executable), "pfcon")  # the console script beside this Python


def readme_cli_example() -> str:
    """The README's shell block that runs `pfcon submit`."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        blocks = re.findall(r"^```sh\n(.*?)^```", f.read(), re.S | re.M)
    (block,) = [b for b in blocks if "pfcon submit" in b]
    return block


def test_the_readme_cli_example_works_as_written(docker_client: Any, tmp_path: Any) -> None:
    """The example, run line by line in a fresh dir against a server like `make run`'s."""
    block = readme_cli_example()
    assert ".venv/bin/pfcon submit" in block
    match = re.search(r"pfcon submit (\S+)", block)
    assert match is not None
    jid = f"readme-{uuid.uuid4().hex[:8]}"  # the engine is shared: not the README's fixed id
    script = block.replace(".venv/bin/pfcon", shlex.quote(VENV_PFCON)).replace(match.group(1), jid)
    storebase = tmp_path / "storeBase"
    storebase.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    server = start_server(str(storebase), str(tmp_path / "server.log"))
    try:
        r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=work, capture_output=True, text=True,
                           timeout=300, env={**os.environ, "PFCON_URL": server.api})
        assert r.returncode == 0, f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}\nserver:\n{server.logs()}"
        assert '"status": "finishedSuccessfully"' in r.stdout
        inputs = {}
        for dirpath, _, filenames in os.walk(work / "in"):
            for name in filenames:
                path = os.path.join(dirpath, name)
                with open(path, "rb") as f:
                    inputs[os.path.relpath(path, work / "in")] = f.read()
        assert inputs, "the example creates its input"
        with zipfile.ZipFile(work / "out.zip") as z:
            outputs = {n: z.read(n) for n in z.namelist() if not n.endswith("/")}
        assert outputs == inputs
        assert all(name in r.stdout for name in inputs)  # the listing of out.zip
        assert not (storebase / f"key-{jid}").exists()  # deleted
    finally:
        server.stop()
        for c in docker_client.containers.list(all=True, filters={"name": jid}):
            c.remove(force=True)


def cli(storebase: str, *args: str) -> subprocess.CompletedProcess[str]:
    """A job command with --in-process: the use cases configured from the environment."""
    env = {
        **os.environ,
        "APPLICATION_MODE": "dev",
        "COMPUTE_VOLUME_TYPE": "host",
        "STOREBASE": storebase,
        "STOREBASE_MOUNT": storebase,
    }
    argv = [args[0], "--in-process", *args[1:]]
    return subprocess.run([sys.executable, "-m", "pfcon", *argv], env=env, capture_output=True, text=True, timeout=120)


def test_cli_in_process_submit_status_logs_outputs_delete(docker_client: Any, tmp_path: Any) -> None:
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
