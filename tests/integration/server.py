"""Run the real server (``pfcon serve``) as a subprocess for black-box tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    storebase: str
    process: subprocess.Popen[bytes]
    log_path: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def api(self) -> str:
        return f"{self.url}/api/v1/"

    def token(self) -> str:
        r = requests.post(
            f"{self.api}auth-token/", json={"pfcon_user": "pfcon", "pfcon_password": "pfcon1234"}, timeout=10
        )
        r.raise_for_status()
        return str(r.json()["token"])

    def logs(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_server(storebase: str, log_path: str, **env: str) -> Server:
    port = free_port()
    environ = {
        **os.environ,
        "APPLICATION_MODE": "dev",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "COMPUTE_VOLUME_TYPE": "host",
        "STOREBASE": storebase,
        "STOREBASE_MOUNT": storebase,
        **env,
    }
    log = open(log_path, "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "pfcon", "serve"], env=environ, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
    )
    server = Server(f"http://127.0.0.1:{port}", storebase, process, log_path, env)
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.logs()}")
        try:
            if requests.get(f"{server.api}health/", timeout=1).status_code == 200:
                return server
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"server did not start:\n{server.logs()}")
        time.sleep(0.1)


def remove_job_containers(docker_client: Any, prefix: str) -> None:
    for c in docker_client.containers.list(all=True, filters={"label": "org.chrisproject.job_type=plugin"}):
        if c.name.startswith(prefix):
            c.remove(force=True)
