"""SLURM compute adapter (``CONTAINER_ENV=slurm``): one batch job per job, through the
SLURM commands (``sbatch``, ``squeue``, ``scancel``, ``scontrol``) of a submit host.

Each job gets a directory on the storeBase filesystem, which every node shares
(``COMPUTE_VOLUME_TYPE=host``)::

    <storeBase>/.pfcon-slurm/<name>/
        job.json    what was asked (image, command, resources, labels) and when
        job.sh      the batch script: runs the image through the node's container runtime
        env         the job's environment (mode 0600; removed once the container ran)
        jobid       SLURM's job id
        node        the node that ran it (written by the job)
        exit        the container's exit code (written by the job when it ends)
        state       the terminal SLURM state, written by the server when it first sees it,
                    or CANCELLED when an operator cancelled the job through this server
        output.log  the job's stdout and stderr (its logs)

The directory's existence is the job's ownership mark (a SLURM job of the same name
that this server did not create is never reported or cancelled) and the atomic claim
of its name. Status comes from one ``squeue`` query shared by every request within
``poll_seconds`` (:class:`QueueView`); a job SLURM has forgotten (``MinJobAge``, no
accounting database) is answered from ``state``/``exit``. Why the commands and not
``slurmrestd``: docs/adr/0016-slurm.md.

Listing (the operator's view) reads the job directories, not the queue: labels are not a
SLURM concept, and the directories are the only record of a job SLURM has forgotten.
Cancelling is ``scancel`` (the batch script's trap stops the container) followed by a
``state`` of CANCELLED, so that the job stays cancelled whatever SLURM remembers.
"""

from __future__ import annotations

import json
import math
import os
import pwd
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .options import ContainerUser
from ...domain.errors import (
    BackendUnavailable,
    InvalidJobSpec,
    JobAlreadyExists,
    JobNotFound,
    ResourceUnavailable,
)
from ...domain.model import (
    CANCELLED_MESSAGE,
    INSTANCE_LABEL,
    JOB_TYPE_LABEL,
    ComputeCapabilities,
    ContainerJob,
    JobInfo,
    JobKind,
    JobState,
    JobStatus,
    JobSummary,
    Resources,
)

BACKEND = "SLURM controller"
JOBS_DIR = ".pfcon-slurm"  # under storeBase, beside the key-<jid>/ dirs
COMMENT = "pfcon"  # sbatch --comment: the queue query keeps only this server's kind of job
_SEP = "\x1f"  # field separator of the squeue format (never in a job name or state)
CLOCK_SKEW = 2.0  # seconds between this server's clock and the shared filesystem's
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# -- SLURM job states → job status (a pure table) --------------------------------------------

_WAITING = frozenset({"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD"})
_RUNNING = frozenset({"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESIZING"})
# Terminal states and what they mean to whoever reads the job's status.
_FAILED = {
    "TIMEOUT": "TIMEOUT: the job reached its time limit",
    "OUT_OF_MEMORY": "OUT_OF_MEMORY: the job ran out of memory",
    "NODE_FAIL": "NODE_FAIL: the node running the job failed",
    "CANCELLED": CANCELLED_MESSAGE,
    "PREEMPTED": "PREEMPTED: the job was preempted",
    "BOOT_FAIL": "BOOT_FAIL: the node could not boot for the job",
    "DEADLINE": "DEADLINE: the job could not finish before its deadline",
    "REVOKED": "REVOKED: the job was revoked by a federated cluster",
    "SPECIAL_EXIT": "SPECIAL_EXIT: the job ended in a special state",
}
TERMINAL = frozenset({"COMPLETED", "FAILED", *_FAILED})
# What ``state`` says of a job an operator cancelled through this server.
CANCELLED, CANCEL_REASON = "CANCELLED", "pfcon"
# Exit codes of a container runtime that could not run the container at all
# (docker/podman: 125 the runtime failed, e.g. no such image; 126/127 the command).
_RUNTIME_FAILURE = frozenset({125, 126, 127})


def slurm_status(
    state: str, reason: str = "", exit_code: int | None = None, last_line: str = ""
) -> tuple[JobStatus, str]:
    """Map a SLURM job state (``squeue %T``) to a job status and a message.

    ``reason`` is SLURM's reason (``squeue %r``: Resources, Priority…), ``exit_code`` the
    container's own exit code when the job recorded it, ``last_line`` the last line of its
    output (what a runtime that could not start the container said).
    """
    state = state.upper().split(" ", 1)[0]  # scontrol shows "CANCELLED by 0"
    why = "" if reason in ("", "None", "(null)") else reason
    if state in _WAITING:
        return JobStatus.NOT_STARTED, f"{state}: {why}" if why else state
    if state in _RUNNING:
        return JobStatus.STARTED, state
    if state == "COMPLETED" and not exit_code:
        return JobStatus.FINISHED_SUCCESSFULLY, "Finished"
    if state in ("COMPLETED", "FAILED"):
        return JobStatus.FINISHED_WITH_ERROR, exit_message(exit_code, last_line, why)
    if state in _FAILED:
        return JobStatus.FINISHED_WITH_ERROR, _FAILED[state]
    return JobStatus.UNDEFINED, state or "unknown SLURM state"


def exit_message(exit_code: int | None, last_line: str = "", reason: str = "") -> str:
    if exit_code is None:
        return f"Error: {reason}" if reason else "Error"
    if exit_code in _RUNTIME_FAILURE and last_line:
        return f"the container could not run (exit code {exit_code}): {last_line[:300]}"
    return f"Error (exit code {exit_code})"


# -- how the nodes run a container -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Runtime:
    """A container runtime command on the nodes.

    ``run`` is a format string with the placeholders ``{name}``, ``{image}``,
    ``{command}``, ``{mount_args}`` (each mount as ``{mount_flag} src:dst:ro|rw``),
    ``{mounts}`` (the same, comma-separated, without flags), ``{env_file}``,
    ``{user_args}``, ``{network_args}`` (``--network <JOB_NETWORK or PFCON_OP_NETWORK>``
    when set) and ``{pull}``; every value is shell-quoted. ``stop`` stops the
    container when SLURM cancels the job (empty: the runtime dies with the job's
    processes).
    """

    name: str
    run: str
    stop: str = ""
    mount_flag: str = "-v"
    user_flag: str = "--user"  # empty: the runtime cannot run as another user


RUNTIMES: Mapping[str, Runtime] = {
    "docker": Runtime(
        "docker",
        "docker run --rm --name {name} {network_args} --pull {pull} {user_args} {mount_args} "
        "--env-file {env_file} {image} {command}",
        stop="docker rm -f {name}",
    ),
    "podman": Runtime(
        "podman",
        "podman run --rm --name {name} {network_args} --pull {pull} {user_args} {mount_args} "
        "--env-file {env_file} {image} {command}",
        stop="podman rm -f {name}",
    ),
    # Apptainer/Singularity run the container as the user who submitted the job: a
    # CONTAINER_USER cannot be applied (refused at startup). The image is a registry
    # reference or a path to a SIF file the nodes can read.
    "apptainer": Runtime(
        "apptainer",
        "apptainer exec --containall --no-home --cleanenv {mount_args} --env-file {env_file} {image} {command}",
        mount_flag="--bind",
        user_flag="",
    ),
    "singularity": Runtime(
        "singularity",
        "singularity exec --containall --no-home --cleanenv {mount_args} --env-file {env_file} {image} {command}",
        mount_flag="--bind",
        user_flag="",
    ),
}


def template_problem(template: str) -> str | None:
    """Why a custom runtime command cannot be used, or None."""
    import string

    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as e:
        return f"not a valid template: {e}"
    allowed = {"name", "image", "command", "mount_args", "mounts", "env_file", "user_args", "network_args", "pull"}
    unknown = fields - allowed
    if unknown:
        return f"unknown placeholder(s) {', '.join(sorted('{' + f + '}' for f in unknown))}; allowed: " + ", ".join(
            "{" + f + "}" for f in sorted(allowed)
        )
    missing = {"image", "command"} - fields
    if missing:
        return f"must contain {', '.join('{' + f + '}' for f in sorted(missing))}"
    return None


# -- options ---------------------------------------------------------------------------------


class RateLimiter:
    """At most ``rate`` submissions per second (a token bucket of one second's burst);
    callers wait in their worker thread. ``rate`` 0: unlimited."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.clock = clock
        self._lock = threading.Lock()
        self._next = 0.0

    def delay(self) -> float:
        """Reserve the next slot; how long the caller must wait for it."""
        if self.rate <= 0:
            return 0.0
        with self._lock:
            now = self.clock()
            slot = max(now, self._next)
            self._next = slot + 1.0 / self.rate
            return slot - now

    def acquire(self) -> None:
        wait = self.delay()
        if wait > 0:
            time.sleep(wait)


@dataclass(frozen=True, slots=True)
class SlurmOptions:
    storebase: str  # storeBase's path on every node (STOREBASE)
    local_storebase: str  # where this server sees the same filesystem
    runtime: Runtime = RUNTIMES["docker"]
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_limit_minutes: int | None = None
    sbatch_options: tuple[str, ...] = ()
    container_user: ContainerUser | None = None
    # Plugin jobs' extra groups: the op jobs' group, which owns key-<jid>/outgoing (2775)
    # in pfcon 6's object-store flow (Docker and Podman runtimes only).
    supplemental_groups: tuple[int, ...] = ()
    ignore_limits: bool = False
    pull_images: bool = False
    network: str | None = None  # plugin jobs' network (JOB_NETWORK); None: the runtime's default
    op_network: str | None = None  # op jobs' (PFCON_OP_NETWORK): they reach Swift or S3
    poll_seconds: float = 2.0
    submit_rate: float = 0.0  # submissions per second; 0: unlimited
    command_timeout: float = 30.0
    capabilities: ComputeCapabilities = field(default_factory=ComputeCapabilities)


# -- the batch job -----------------------------------------------------------------------------


def sbatch_args(job: ContainerJob, options: SlurmOptions, job_dir: str) -> list[str]:
    """The ``sbatch`` command line of ``job`` (``job_dir``: its directory as the nodes see it)."""
    r = job.resources
    args = [
        "sbatch", "--parsable", f"--job-name={job.name}", f"--comment={COMMENT}", "--no-requeue",
        "--export=NONE", f"--chdir={job_dir}", f"--output={job_dir}/output.log", "--ntasks=1",
    ]  # fmt: skip
    if not options.ignore_limits:
        args.append(f"--cpus-per-task={max(1, math.ceil(r.cpu_limit / 1000))}")
        args.append(f"--mem={r.memory_limit}M")
    if r.gpu_limit > 0:  # granted even with IGNORE_LIMITS, like pfcon's Docker manager
        args.append(f"--gres=gpu:{r.gpu_limit}")
    if options.time_limit_minutes:
        args.append(f"--time={options.time_limit_minutes}")
    for flag, value in (("--partition", options.partition), ("--account", options.account), ("--qos", options.qos)):
        if value:
            args.append(f"{flag}={value}")
    args.extend(options.sbatch_options)
    args.append(f"{job_dir}/job.sh")
    return args


def batch_script(job: ContainerJob, options: SlurmOptions, job_dir: str, user: tuple[int | None, int | None]) -> str:
    """The batch script: record the node, run the container through the runtime, record
    its exit code; on cancellation (SIGTERM from ``scancel``) stop the container."""
    rt = options.runtime
    q = shlex.quote
    base = options.storebase.rstrip("/")
    binds = [f"{base}/{m.source}" if m.source else base for m in job.mounts]
    mounts = [f"{src}:{m.target}:{'ro' if m.read_only else 'rw'}" for src, m in zip(binds, job.mounts, strict=True)]
    uid, gid = user
    args: list[str] = []
    if rt.user_flag:
        groups = [] if job.run_as is not None else [g for g in options.supplemental_groups if g != gid]
        if uid is not None:
            args.append(f"{rt.user_flag} {q(f'{uid}:{gid}' if gid is not None else str(uid))}")
        elif gid is not None:
            groups.insert(0, gid)  # docker/podman: the image's user, with the group
        args.extend(f"--group-add {q(str(g))}" for g in dict.fromkeys(groups))
    user_args = " ".join(args)
    network = options.op_network if job.run_as is not None else options.network
    values = {
        "network_args": f"--network {q(network)}" if network else "",
        "name": q(job.name),
        "image": q(job.image),
        "command": shlex.join(job.command),
        "mount_args": " ".join(f"{rt.mount_flag} {q(m)}" for m in mounts),
        "mounts": q(",".join(mounts)),
        "env_file": q(f"{job_dir}/env"),
        "user_args": user_args,
        "pull": "missing" if options.pull_images else "never",
    }
    run = rt.run.format(**values)
    stop = rt.stop.format(**values) if rt.stop else ":"
    d = q(job_dir)
    return f"""#!/bin/bash
# pfcon job {job.name}: written by the server, run by SLURM (docs/adr/0016-slurm.md)
export PATH={_PATH}
cd {d} || exit 1
printf '%s\\n' "${{SLURMD_NODENAME:-$(hostname)}}" > {d}/node
printf '%s\\n' "$SLURM_JOB_ID" > {d}/jobid.tmp && mv -f {d}/jobid.tmp {d}/jobid
stop() {{ {stop} >/dev/null 2>&1; rm -f {d}/env; exit 143; }}
trap stop TERM INT
{run} &
wait $!
rc=$?
rm -f {d}/env
printf '%s\\n' "$rc" > {d}/exit.tmp && mv -f {d}/exit.tmp {d}/exit
exit $rc
"""


def env_file(env: Sequence[str]) -> str:
    """The job's environment in the ``--env-file`` format (one ``NAME=value`` per line)."""
    lines = []
    for item in env:
        name, sep, _ = item.partition("=")
        if not sep or not name or any(c in item for c in "\n\r\0"):
            raise InvalidJobSpec("env: each variable must be NAME=value on one line")
        lines.append(item)
    return "".join(f"{line}\n" for line in lines)


# -- the queue, seen through one shared query ------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueRow:
    jobid: str
    name: str
    state: str
    reason: str
    node: str
    time: str  # end time once it ended, else start time once it started, else submit time


SQUEUE_FORMAT = _SEP.join(("%i", "%j", "%T", "%r", "%N", "%S", "%V", "%e", "%k"))

Runner = Callable[[Sequence[str], float], "subprocess.CompletedProcess[str]"]


def run_command(argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)


_DOWN_MARKS = (
    "unable to contact slurm controller", "connection refused", "socket timed out", "communication connection failure",
    "zero bytes were transmitted", "slurmctld", "connect failure", "unable to establish", "protocol authentication error",
    "munge",
)  # fmt: skip


def _first_error(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in lines:
        if "error" in ln.lower():
            return ln[:300]
    return (lines[-1] if lines else "no output")[:300]


def parse_queue(text: str) -> dict[str, QueueRow]:
    """``squeue`` output (SQUEUE_FORMAT) → this server's jobs by SLURM job id."""
    rows: dict[str, QueueRow] = {}
    for line in text.splitlines():
        parts = line.split(_SEP)
        if len(parts) != 9 or parts[8] != COMMENT:
            continue
        jobid, name, state, reason, node, start, submit, end, _ = parts

        def known(t: str) -> bool:
            return t not in ("", "N/A", "Unknown", "None")

        terminal = state.split(" ", 1)[0] in TERMINAL
        when = end if terminal and known(end) else start if known(start) else submit
        rows[jobid] = QueueRow(jobid, name, state, reason, node if node != "(null)" else "", when)
    return rows


class QueueView:
    """Every job of this server in SLURM's queue, from one ``squeue`` query at most every
    ``poll_seconds``, shared by all requests (one query in flight at a time)."""

    def __init__(
        self, runner: Runner, poll_seconds: float, timeout: float, clock: Callable[[], float] = time.monotonic
    ):
        self.runner = runner
        self.poll_seconds = poll_seconds
        self.timeout = timeout
        self.clock = clock
        self.queries = 0  # squeue runs so far (make bench reports queries per status request)
        self._lock = threading.Lock()
        self._rows: dict[str, QueueRow] = {}
        self._at = -math.inf
        self._read_at = 0.0  # wall-clock time the rows were asked for
        self._on_refresh: list[Callable[[Mapping[str, QueueRow]], None]] = []

    def on_refresh(self, callback: Callable[[Mapping[str, QueueRow]], None]) -> None:
        self._on_refresh.append(callback)

    def invalidate(self) -> None:
        with self._lock:
            self._at = -math.inf

    def rows(self, read_after: float | None = None) -> Mapping[str, QueueRow]:
        """The rows, refreshed if older than ``poll_seconds`` or read before the wall-clock
        time ``read_after`` (a job submitted since may be missing from them)."""
        with self._lock:
            stale = self.clock() - self._at >= self.poll_seconds
            if stale or (read_after is not None and self._read_at < read_after):
                self._read_at = time.time()
                self._rows = self._query()
                self._at = self.clock()
                for callback in self._on_refresh:
                    callback(self._rows)
            return self._rows

    def _query(self) -> dict[str, QueueRow]:
        self.queries += 1
        argv = ["squeue", "--noheader", "--me", "--states=all", f"--format={SQUEUE_FORMAT}"]
        try:
            done = self.runner(argv, self.timeout)
        except (OSError, subprocess.SubprocessError) as e:
            raise BackendUnavailable(f"{BACKEND} unavailable: squeue: {e}") from None
        if done.returncode != 0:
            raise BackendUnavailable(f"{BACKEND} unavailable: {_first_error(done.stderr or done.stdout)}")
        return parse_queue(done.stdout)


# -- the adapter -------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def _mtime(path: str) -> str:
    try:
        return datetime.fromtimestamp(os.stat(path).st_mtime, UTC).isoformat()
    except OSError:
        return ""


def _resources(value: Any) -> Resources | None:
    """The resources ``job.json`` records (None for a job from before they were)."""
    if isinstance(value, list) and len(value) == 4 and all(isinstance(v, int) for v in value):
        return Resources(*value)
    return None


def _user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def tail(path: str, lines: int, block: int = 64 * 1024) -> str:
    """The last ``lines`` lines of a file, reading it backwards (a log may be large)."""
    if lines <= 0:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = pos = f.tell()
            data = b""
            while pos > 0 and data.count(b"\n") <= lines:
                step = min(block, pos)
                pos -= step
                f.seek(pos)
                data = f.read(step) + data
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", errors="replace")
    kept = text.splitlines(keepends=True)[-lines:]
    return "".join(kept) if size else ""


class SlurmCompute:
    """Runs each job as a SLURM batch job named after the job id."""

    def __init__(self, options: SlurmOptions, runner: Runner = run_command) -> None:
        self.options = options
        self.capabilities = options.capabilities
        self.runner = runner
        self.root = os.path.join(options.local_storebase, JOBS_DIR)
        self.node_root = f"{options.storebase.rstrip('/')}/{JOBS_DIR}"
        self.view = QueueView(runner, options.poll_seconds, options.command_timeout)
        self.view.on_refresh(self._record_terminal)
        self.limiter = RateLimiter(options.submit_rate)

    # -- commands ----------------------------------------------------------
    def _run(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        try:
            return self.runner(argv, self.options.command_timeout)
        except subprocess.TimeoutExpired:
            raise BackendUnavailable(f"{BACKEND} unavailable: {argv[0]} did not answer in time") from None
        except OSError as e:
            raise BackendUnavailable(f"{BACKEND} unavailable: cannot run {argv[0]}: {e.strerror or e}") from None

    def ping(self) -> None:
        done = self._run(["scontrol", "ping"])
        if done.returncode != 0 or "DOWN" in done.stdout:
            raise BackendUnavailable(f"{BACKEND} unavailable: {_first_error(done.stdout + done.stderr)}")

    # -- schedule ----------------------------------------------------------
    def _refuse(self, resources: Resources) -> None:
        why = self.capabilities.workers_problem(resources.number_of_workers)
        if why:
            raise InvalidJobSpec(why)

    def check(self, image: str, resources: Resources) -> None:
        # The image is not checked: only the nodes' runtime knows (docs/adr/0016-slurm.md).
        self._refuse(resources)

    def _dir(self, name: str) -> str:
        if not name or "/" in name or name.startswith("."):
            raise JobNotFound(name)
        return os.path.join(self.root, name)

    def schedule(self, job: ContainerJob) -> JobInfo:
        self._refuse(job.resources)
        local = self._dir(job.name)
        node_dir = f"{self.node_root}/{job.name}"
        user: tuple[int | None, int | None] = (None, None)
        if job.run_as is not None:
            user = job.run_as  # an op job: the owner of key-<jid>/
        elif self.options.container_user:
            user = self.options.container_user.pick()
        script = batch_script(job, self.options, node_dir, user)
        env = env_file(job.env)
        os.makedirs(self.root, mode=0o711, exist_ok=True)
        try:
            os.mkdir(local, 0o700)  # the claim: one job of a name
        except FileExistsError:
            raise JobAlreadyExists(job.name) from None
        try:
            submitted = _now()
            with open(os.path.join(local, "job.json"), "w", encoding="utf-8") as f:
                r = job.resources
                json.dump({
                    "image": job.image, "cmd": shlex.join(job.command), "submitted": submitted,
                    "resources": [r.number_of_workers, r.cpu_limit, r.memory_limit, r.gpu_limit],
                    "labels": dict(job.labels),
                }, f)  # fmt: skip
            fd = os.open(os.path.join(local, "env"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(env)
            with open(os.path.join(local, "job.sh"), "w", encoding="utf-8") as f:
                f.write(script)
            os.chmod(os.path.join(local, "job.sh"), 0o700)
            self.limiter.acquire()
            done = self._run(sbatch_args(job, self.options, node_dir))
            if done.returncode != 0:
                raise self._submit_error(done.stderr or done.stdout)
            jobid = done.stdout.strip().split(";", 1)[0]
            if not jobid.isdigit():
                raise BackendUnavailable(f"{BACKEND}: sbatch answered {done.stdout.strip()[:100]!r}, not a job id")
            with open(os.path.join(local, "jobid.tmp"), "w", encoding="utf-8") as f:
                f.write(jobid + "\n")
            os.replace(os.path.join(local, "jobid.tmp"), os.path.join(local, "jobid"))
        except BaseException:
            shutil.rmtree(local, ignore_errors=True)  # nothing of the job is left behind
            raise
        return JobInfo(job.name, job.image, shlex.join(job.command), JobStatus.NOT_STARTED, "submitted", submitted)

    @staticmethod
    def _submit_error(text: str) -> Exception:
        line = _first_error(text)
        low = text.lower()
        if any(mark in low for mark in _DOWN_MARKS):
            return BackendUnavailable(f"{BACKEND} unavailable: {line}")
        if any(s in low for s in ("requested node configuration is not available", "memory required by task",
                                  "invalid generic resource", "gres", "more processors requested")):  # fmt: skip
            return ResourceUnavailable(f"rejected by SLURM: {line}")
        if "temporarily unable" in low or "slurmctld" in low:
            return BackendUnavailable(f"{BACKEND} unavailable: {line}")
        return InvalidJobSpec(f"rejected by SLURM: {line}")

    # -- observe -----------------------------------------------------------
    def _record_terminal(self, rows: Mapping[str, QueueRow]) -> None:
        """Write the terminal state of every finished job of ours the queue still shows,
        once, so that it outlives SLURM's memory of the job (MinJobAge)."""
        for row in rows.values():
            if row.state.split(" ", 1)[0] not in TERMINAL:
                continue
            d = os.path.join(self.root, row.name)
            if _read(os.path.join(d, "jobid")) != row.jobid or os.path.exists(os.path.join(d, "state")):
                continue
            try:
                with open(os.path.join(d, "state.tmp"), "w", encoding="utf-8") as f:
                    f.write(f"{row.state}{_SEP}{row.reason}\n")
                os.replace(os.path.join(d, "state.tmp"), os.path.join(d, "state"))
            except OSError:
                pass  # removed meanwhile

    def _row(self, name: str, d: str, jobid: str | None) -> QueueRow | None:
        rows = self.view.rows()
        found = rows.get(jobid) if jobid else next((r for r in rows.values() if r.name == name), None)
        if found is None:
            # The shared rows may predate the submission: then (only then) look again.
            try:
                submitted = os.stat(os.path.join(d, "jobid" if jobid else "job.json")).st_mtime
            except FileNotFoundError:
                return None
            rows = self.view.rows(read_after=submitted + CLOCK_SKEW)
            found = rows.get(jobid) if jobid else next((r for r in rows.values() if r.name == name), None)
        return found

    def _meta(self, name: str) -> tuple[str, dict[str, Any]]:
        """The job's directory and what ``job.json`` says; JobNotFound without one."""
        d = self._dir(name)
        text = _read(os.path.join(d, "job.json"))
        if text is None:
            raise JobNotFound(name)
        try:
            meta = json.loads(text)
        except ValueError:
            meta = None  # cut short by a crash: the job is still ours
        return d, meta if isinstance(meta, dict) else {}

    def info(self, name: str) -> JobInfo:
        return self._info(name, *self._meta(name))[0]

    def _info(self, name: str, d: str, meta: Mapping[str, Any]) -> tuple[JobInfo, QueueRow | None]:
        """The job's info, and its row of the queue when that was read."""
        image, cmd = str(meta.get("image", "")), str(meta.get("cmd", ""))
        jobid = _read(os.path.join(d, "jobid"))
        exit_text = _read(os.path.join(d, "exit"))
        exit_code = int(exit_text) if exit_text and exit_text.lstrip("-").isdigit() else None
        recorded = _read(os.path.join(d, "state"))
        if recorded:  # SLURM said so while it knew the job, or this server cancelled it
            state, _, reason = recorded.partition(_SEP)
            status, message = slurm_status(state, reason, exit_code, self._last_line(d, exit_code))
            return JobInfo(name, image, cmd, status, message, _mtime(os.path.join(d, "state"))), None
        row = self._row(name, d, jobid)
        if row is not None:
            status, message = slurm_status(row.state, row.reason, exit_code, self._last_line(d, exit_code))
            return JobInfo(name, image, cmd, status, message, row.time), row
        if exit_code is not None:  # forgotten by SLURM; the job recorded how it ended
            status, message = slurm_status("COMPLETED" if exit_code == 0 else "FAILED", "", exit_code,
                                           self._last_line(d, exit_code))  # fmt: skip
            return JobInfo(name, image, cmd, status, message, _mtime(os.path.join(d, "exit"))), None
        if jobid is None:
            return JobInfo(name, image, cmd, JobStatus.NOT_STARTED, "submitting", str(meta.get("submitted", ""))), None
        return JobInfo(
            name, image, cmd, JobStatus.FINISHED_WITH_ERROR,
            "SLURM no longer knows the job and it recorded no exit code: it ended before its container did "
            "(node failure, cancellation or time limit)", _mtime(os.path.join(d, "jobid")),
        ), None  # fmt: skip

    # -- the operator's view ---------------------------------------------------
    def list_jobs(self, instance: str) -> list[JobSummary]:
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        summaries = []
        for name in names:
            try:
                d, meta = self._meta(name)
                labels = meta.get("labels")
                if not isinstance(labels, dict) or labels.get(INSTANCE_LABEL) != instance:
                    continue  # another server's job, or one from before labels were recorded
                kind = JobKind(str(labels.get(JOB_TYPE_LABEL)))
                info, row = self._info(name, d, meta)
            except (JobNotFound, ValueError):
                continue  # removed meanwhile, not a job directory, or an unknown kind
            node = _read(os.path.join(d, "node")) or (row.node if row is not None else "")
            summaries.append(JobSummary(
                name=name, kind=kind, image=info.image, status=info.status, message=info.message,
                created=str(meta.get("submitted") or ""), resources=_resources(meta.get("resources")), node=node,
            ))  # fmt: skip
        summaries.sort(key=lambda s: s.created, reverse=True)
        return summaries

    def cancel(self, name: str) -> JobInfo:
        d, meta = self._meta(name)
        jobid = self._submitted_jobid(name, d)
        info, _ = self._info(name, d, meta)
        if info.status.is_terminal or os.path.exists(os.path.join(d, "exit")):
            return info  # it ended (or its container did) before the cancellation: left as it is
        if jobid is None:  # a submission cut short by a crash: cancel whatever it created
            argv = ["scancel", f"--name={name}", f"--user={_user()}", "--state=PENDING,RUNNING,SUSPENDED"]
        else:
            argv = ["scancel", jobid]
        done = self._run(argv)
        if done.returncode != 0:
            error = (done.stderr or done.stdout).lower()
            if "already completing or completed" in error or "invalid job id" in error:
                self.view.invalidate()  # it ended meanwhile: report how
                return self._info(name, d, meta)[0]
            raise BackendUnavailable(f"{BACKEND} unavailable: {_first_error(done.stderr or done.stdout)}")
        try:  # the durable mark: cancelled, whatever SLURM remembers of the job later
            tmp = os.path.join(d, "state.cancel.tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(f"{CANCELLED}{_SEP}{CANCEL_REASON}\n")
            os.replace(tmp, os.path.join(d, "state"))
        except FileNotFoundError:
            raise JobNotFound(name) from None  # removed meanwhile
        self.view.invalidate()
        return self._info(name, d, meta)[0]

    def _submitted_jobid(self, name: str, d: str) -> str | None:
        """The job's SLURM id, waiting for a submission in flight to record it; None when
        the submission was cut short (the server died between ``sbatch`` and the record)."""
        deadline = time.monotonic() + self.options.command_timeout + CLOCK_SKEW
        while (jobid := _read(os.path.join(d, "jobid"))) is None:
            try:
                age = time.time() - os.stat(os.path.join(d, "job.json")).st_mtime
            except FileNotFoundError:
                raise JobNotFound(name) from None  # the submission failed and left nothing
            if age > self.options.command_timeout + CLOCK_SKEW or time.monotonic() > deadline:
                return None
            time.sleep(0.1)
        return jobid

    @staticmethod
    def _last_line(d: str, exit_code: int | None) -> str:
        if exit_code not in _RUNTIME_FAILURE:
            return ""
        lines = [ln.strip() for ln in tail(os.path.join(d, "output.log"), 10).splitlines() if ln.strip()]
        errors = [ln for ln in lines if "error" in ln.lower()]  # not the runtime's "Run '… --help'" hint
        return (errors or lines or [""])[-1]

    def state(self, name: str, log_tail: int) -> JobState:
        info = self.info(name)
        return JobState(info, tail(os.path.join(self._dir(name), "output.log"), log_tail))

    def remove(self, name: str) -> None:
        d = self._dir(name)
        if not os.path.isdir(d):
            raise JobNotFound(name)
        jobid = _read(os.path.join(d, "jobid"))
        finished = os.path.exists(os.path.join(d, "exit")) or os.path.exists(os.path.join(d, "state"))
        if jobid and not finished:
            done = self._run(["scancel", jobid])
            if done.returncode != 0 and "already completing or completed" not in done.stderr.lower() and \
                    "invalid job id" not in done.stderr.lower():  # fmt: skip
                raise BackendUnavailable(f"{BACKEND} unavailable: {_first_error(done.stderr or done.stdout)}")
        shutil.rmtree(d, ignore_errors=True)
