"""Helpers of the fault-injection suite (tests/integration/test_faults.py).

Everything here talks to 127.0.0.1 only and is bounded in time: every wait has a
deadline, every socket a timeout, every subprocess a timeout.
"""

from __future__ import annotations

import contextlib
import glob
import io
import json
import os
import select
import signal
import socket
import subprocess
import time
import uuid
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import requests

from .server import ROOT, Server

T = TypeVar("T")

USER, PASSWORD = "pfcon", "pfcon1234"
BOUNDARY = "pfconfaultsboundary"
QUICK = ["sh", "-c", "echo ok"]


# -- waiting -----------------------------------------------------------------------


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


# -- scripts (backends) --------------------------------------------------------------


def script(name: str, command: str, timeout: float = 120) -> float:
    """Run ``scripts/<name> <command>``; return how long it took. Fails on non-zero exit."""
    started = time.monotonic()
    proc = subprocess.run(
        ["bash", os.path.join(ROOT, "scripts", name), command],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(f"scripts/{name} {command} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return time.monotonic() - started


# -- processes -----------------------------------------------------------------------


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """Resident memory of ``pid`` in KiB (``VmHWM``: its peak so far)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for pid {pid}")


def sigkill(server: Server) -> None:
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait(10)


def log_events(server: Server) -> list[dict[str, Any]]:
    """The server's JSON log lines (other lines, e.g. uvicorn's own, are skipped)."""
    events = []
    for line in server.logs().splitlines():
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
    return events


# -- storeBase and the upload spool ----------------------------------------------------


def key_dirs(storebase: str) -> list[str]:
    return sorted(n for n in os.listdir(storebase) if n.startswith("key-"))


def spool_files(upload_dir: str) -> list[str]:
    """Upload files in any server's spool directory under ``upload_dir``."""
    return sorted(glob.glob(os.path.join(upload_dir, "proc-*", "upload-*")))


def spool_dirs(upload_dir: str) -> list[str]:
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(upload_dir, "proc-*")))


UPLOAD_AREA_PREFIX = "key-.upload-"  # storeBase/key-.upload-<hex>/: an upload being received (ADR 19)
STAGING_MARKER = ".staging"


def upload_areas(storebase: str) -> list[str]:
    """The private areas of uploads being received (or left by a dead server) in storeBase."""
    try:
        return sorted(n for n in os.listdir(storebase) if n.startswith(UPLOAD_AREA_PREFIX))
    except FileNotFoundError:
        return []


def area_stats(storebase: str) -> tuple[int, int]:
    """(files, bytes) written so far under every upload area of storeBase (the marker
    excluded); areas may vanish while they are walked."""
    files = size = 0
    for area in upload_areas(storebase):
        for dirpath, _, names in os.walk(os.path.join(storebase, area, "incoming")):
            for name in names:
                with contextlib.suppress(OSError):
                    size += os.lstat(os.path.join(dirpath, name)).st_size
                    files += 1
    return files, size


def area_bytes(storebase: str) -> int:
    return area_stats(storebase)[1]


def area_files(storebase: str) -> int:
    return area_stats(storebase)[0]


def count_files(root: str) -> int:
    n = 0
    for _, _, files in os.walk(root):
        n += len(files)
    return n


@contextlib.contextmanager
def tmpfs(path: str, size: str, nr_inodes: int | None = None) -> Iterator[str]:
    """A tmpfs of ``size`` mounted on ``path`` for the duration of the block (root only)."""
    os.makedirs(path, exist_ok=True)
    options = f"size={size},mode=0755" + (f",nr_inodes={nr_inodes}" if nr_inodes else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", path], check=True, timeout=30)
    try:
        yield path
    finally:
        for _ in range(50):
            if subprocess.run(["umount", path], check=False, timeout=30, capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        else:
            subprocess.run(["umount", "-l", path], check=False, timeout=30)


def free_bytes(path: str) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(path: str, leave: int) -> str:
    """Write a file under ``path`` until only about ``leave`` bytes stay free."""
    filler = os.path.join(path, "filler.bin")
    block = b"\0" * (1024 * 1024)
    with open(filler, "wb") as f:
        while (room := free_bytes(path) - leave) > 0:
            f.write(block[: min(len(block), room)])
            f.flush()
    return filler


# -- jobs ----------------------------------------------------------------------------


def jid(prefix: str = "flt") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def make_zip(files: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for name, content in files.items():
            z.writestr(name, content)
    return buf.getvalue()


def big_zip(size: int, name: str = "big.bin") -> bytes:
    """A real archive with one stored member of ``size`` random bytes: its local header
    carries the sizes, so a server that extracts while receiving writes the member's
    bytes as they arrive (a stalled or killed upload is really in progress)."""
    return make_zip({name: os.urandom(size)}, zipfile.ZIP_STORED)


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def job_fields(job: str, image: str, entrypoint: list[str] | None = None, **extra: Any) -> list[tuple[str, str]]:
    """pfcon's form fields for POST jobs/ (lists as repeated keys)."""
    values: dict[str, Any] = {
        "jid": job,
        "entrypoint": entrypoint or QUICK,
        "args": [],
        "auid": "cube",
        "number_of_workers": 1,
        "cpu_limit": 1000,
        "memory_limit": 200,
        "gpu_limit": 0,
        "image": image,
        "type": "ds",
        **extra,
    }
    fields: list[tuple[str, str]] = []
    for name, value in values.items():
        for v in value if isinstance(value, list) else [value]:
            fields.append((name, str(v)))
    return fields


def multipart_head(fields: list[tuple[str, str]], boundary: str = BOUNDARY, with_file: bool = True) -> bytes:
    """The form fields of a multipart body, then the opening of the data_file part."""
    out = bytearray()
    for name, value in fields:
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    if with_file:
        out += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="data_file"; filename="data_file"\r\n'
            "Content-Type: application/zip\r\n\r\n"
        ).encode()
    return bytes(out)


def multipart_tail(boundary: str = BOUNDARY) -> bytes:
    return f"\r\n--{boundary}--\r\n".encode()


@dataclass
class Client:
    """A small requests-based client of one server (one connection per call)."""

    server: Server
    token: str = ""
    timeout: float = 60

    def __post_init__(self) -> None:
        if not self.token:
            self.token = self.server.token()

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def submit(self, fields: list[tuple[str, str]], data: bytes | None = None, timeout: float | None = None) -> requests.Response:
        files = {"data_file": ("data_file", data, "application/zip")} if data is not None else None
        with requests.Session() as s:
            return s.post(
                f"{self.server.api}jobs/", data=fields, files=files, headers=self.headers, timeout=timeout or self.timeout
            )

    def status(self, job: str, timeout: float | None = None) -> requests.Response:
        with requests.Session() as s:
            return s.get(f"{self.server.api}jobs/{job}/", headers=self.headers, timeout=timeout or self.timeout)

    def delete(self, job: str, timeout: float | None = None) -> requests.Response:
        with requests.Session() as s:
            return s.delete(f"{self.server.api}jobs/{job}/", headers=self.headers, timeout=timeout or self.timeout)

    def ready(self, timeout: float = 15) -> requests.Response:
        return requests.get(f"{self.server.api}ready/", timeout=timeout)

    def health(self, timeout: float = 10) -> requests.Response:
        return requests.get(f"{self.server.api}health/", timeout=timeout)

    def wait_terminal(self, job: str, timeout: float = 60) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            r = self.status(job)
            assert r.status_code == 200, (r.status_code, r.text)
            compute = r.json()["compute"]
            return compute if compute["status"] in ("finishedSuccessfully", "finishedWithError", "undefined") else None

        return wait_for(done, timeout, f"job {job} to finish", interval=0.2)


# -- raw HTTP over a socket ------------------------------------------------------------


@dataclass
class RawResponse:
    status: int | None  # None: the connection closed (or was reset) without a response
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    closed: bool = False  # the server closed the connection after it

    def json(self) -> Any:
        return json.loads(self.body)


class RawConn:
    """One TCP connection to the server, driven byte by byte (for hostile clients)."""

    def __init__(self, port: int, timeout: float = 10) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sent = 0
        self.broken = False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def readable(self, wait: float = 0) -> bool:
        return bool(select.select([self.sock], [], [], wait)[0])

    def send(self, data: bytes) -> bool:
        """Send ``data``; False (and stop for good) if the server closed or answered."""
        if self.broken or self.readable():
            self.broken = True
            return False
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError, TimeoutError, OSError):
            self.broken = True
            return False
        self.sent += len(data)
        return True

    def send_chunks(self, chunks: Iterable[bytes], pause: float = 0) -> bool:
        for chunk in chunks:
            if not self.send(chunk):
                return False
            if pause:
                time.sleep(pause)
        return True

    def response(self, timeout: float = 10) -> RawResponse:
        """Read one response (head and Content-Length body), or note the close."""
        deadline = time.monotonic() + timeout
        buf = bytearray()
        head_end = -1
        length = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no response within {timeout} s (got {bytes(buf[:200])!r})")
            if not self.readable(min(remaining, 0.5)):
                continue
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, OSError):
                chunk = b""
            if not chunk:
                if head_end < 0:
                    return RawResponse(None, closed=True)
                return _parse(bytes(buf), head_end, closed=True)
            buf += chunk
            if head_end < 0:
                head_end = buf.find(b"\r\n\r\n")
                if head_end >= 0:
                    for line in bytes(buf[:head_end]).split(b"\r\n")[1:]:
                        k, _, v = line.partition(b":")
                        if k.strip().lower() == b"content-length":
                            length = int(v.strip())
            if head_end >= 0 and length is not None and len(buf) >= head_end + 4 + length:
                return _parse(bytes(buf), head_end, closed=False)

    def closed_within(self, timeout: float) -> bool:
        """Whether the server closes the connection within ``timeout`` s (data is drained)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.readable(0.2):
                try:
                    if not self.sock.recv(65536):
                        return True
                except OSError:
                    return True
        return False


def _parse(data: bytes, head_end: int, closed: bool) -> RawResponse:
    lines = data[:head_end].split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        headers[k.strip().lower().decode("latin-1")] = v.strip().decode("latin-1")
    return RawResponse(status, headers, data[head_end + 4 :], closed)


def request_head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def upload_head(server: Server, token: str, content_length: int, boundary: str = BOUNDARY) -> bytes:
    return request_head(
        "POST",
        "/api/v1/jobs/",
        {
            "Authorization": f"Bearer {token}",
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(content_length),
        },
    )


def port_of(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])
