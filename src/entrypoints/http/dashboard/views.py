"""The dashboard's pages: plain HTML from string templates, every value escaped (ADR 22).

Job names, images, commands, messages and logs come from clients and plugins: each is
untrusted and goes through :func:`esc` (or, in the browser, ``textContent``). The JSON
views give the live script the same text the pages show, formatted once, here.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any
from urllib.parse import quote

from ....domain.model import (
    CANCELLED_MESSAGE,
    BackendHealth,
    JobKind,
    JobState,
    JobStatus,
    JobSummary,
    OutputFile,
    Resources,
    ServerInfo,
)
from .session import Session

BASE = "/dashboard"
STATUS_LABELS = {
    JobStatus.NOT_STARTED: "Not started",
    JobStatus.STARTED: "Running",
    JobStatus.FINISHED_SUCCESSFULLY: "Finished successfully",
    JobStatus.FINISHED_WITH_ERROR: "Finished with error",
    JobStatus.UNDEFINED: "Undefined",
}
STATUS_CLASSES = {
    JobStatus.NOT_STARTED: "waiting",
    JobStatus.STARTED: "running",
    JobStatus.FINISHED_SUCCESSFULLY: "ok",
    JobStatus.FINISHED_WITH_ERROR: "error",
    JobStatus.UNDEFINED: "unknown",
}


def esc(value: object) -> str:
    return escape(str(value), quote=True)


def job_href(jid: str, action: str = "") -> str:
    return f"{BASE}/jobs/{quote(jid, safe='')}/" + (f"{action}/" if action else "")


# -- formatting shared by the pages and the JSON views --------------------------------


def status_label(status: JobStatus, message: str = "") -> str:
    if status is JobStatus.FINISHED_WITH_ERROR and message == CANCELLED_MESSAGE:
        return "Cancelled"
    return STATUS_LABELS.get(status, str(status))


def status_class(status: JobStatus, message: str = "") -> str:
    if status is JobStatus.FINISHED_WITH_ERROR and message == CANCELLED_MESSAGE:
        return "cancelled"
    return STATUS_CLASSES.get(status, "unknown")


def _parse_time(text: str) -> datetime.datetime | None:
    # Schedulers differ in precision (Docker: nanoseconds) and zone notation; the
    # seconds are enough for an age.
    try:
        parsed = datetime.datetime.fromisoformat(text[:19])
    except ValueError:
        return None
    return parsed.replace(tzinfo=datetime.UTC) if parsed.tzinfo is None else parsed


def age(created: str, now: datetime.datetime | None = None) -> str:
    """A job's age in words ('42 s', '5 min', '3 h', '2 d'); '—' when unknown."""
    start = _parse_time(created) if created else None
    if start is None:
        return "—"
    now = now or datetime.datetime.now(datetime.UTC)
    seconds = max(0, int((now - start).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def resources_text(r: Resources | None) -> str:
    if r is None:
        return "—"
    cpus = f"{r.cpu_limit / 1000:g}"
    parts = [f"{cpus} CPU", f"{r.memory_limit} MiB"]
    if r.gpu_limit:
        parts.append(f"{r.gpu_limit} GPU")
    if r.number_of_workers > 1:
        parts.append(f"{r.number_of_workers} workers")
    return ", ".join(parts)


def health_text(h: BackendHealth) -> str:
    state = "OK" if h.ok else f"DOWN: {h.message}"
    return f"{h.kind.capitalize()} ({h.name}): {state}"


def status_note(status: JobStatus, message: str) -> str:
    """The scheduler's message where it says more than the status label."""
    return "" if message.lower() in status_label(status, message).lower() else message


def job_row(job: JobSummary, scheduler: str) -> dict[str, Any]:
    return {
        "name": job.name,
        "jid": job.jid,
        "kind": str(job.kind),
        "status": str(job.status),
        "status_label": status_label(job.status, job.message),
        "status_class": status_class(job.status, job.message),
        "message": job.message,
        "note": status_note(job.status, job.message),
        "image": job.image,
        "created": job.created,
        "age": age(job.created),
        "resources": resources_text(job.resources),
        "scheduler": scheduler,
        "node": job.node or "—",
        "href": job_href(job.jid) if job.kind is JobKind.PLUGIN else None,
    }


def health_rows(checks: Iterable[BackendHealth]) -> list[dict[str, Any]]:
    return [{"kind": h.kind, "name": h.name, "ok": h.ok, "text": health_text(h)} for h in checks]


def job_detail(state: JobState) -> dict[str, Any]:
    info = state.info
    return {
        "status": str(info.status),
        "status_label": status_label(info.status, info.message),
        "status_class": status_class(info.status, info.message),
        "message": info.message,
        "terminal": info.status.is_terminal,
        "logs": state.logs,
    }


# -- pages --------------------------------------------------------------------------------


def page(title: str, body: str, info: ServerInfo, session: Session | None = None, poll: str = "") -> str:
    logout = ""
    if session is not None:
        logout = (
            f'<form method="post" action="{BASE}/logout/" class="logout">'
            f'<input type="hidden" name="csrf" value="{esc(session.csrf)}">'
            f'<span>Signed in as {esc(session.user)}</span> <button type="submit">Log out</button></form>'
        )
    poll_attr = f' data-poll="{esc(poll)}"' if poll else ""
    meta = ""  # what runs here is for signed-in eyes only
    if session is not None:
        meta = (
            f'<span class="meta">{esc(info.server_version)} · scheduler {esc(info.container_env)} · '
            f"storage {esc(info.storage_env)}</span>"
        )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)} · pfcon</title>"
        f'<link rel="stylesheet" href="{BASE}/static/dashboard.css">'
        f'<script src="{BASE}/static/dashboard.js" defer></script></head><body>'
        '<a class="skip" href="#main">Skip to main content</a>'
        f'<header><p class="brand"><a href="{BASE}/">pfcon</a> '
        f"{meta}</p>{logout}</header>"
        f'<main id="main" tabindex="-1"{poll_attr}>{body}</main></body></html>\n'
    )


def login_page(info: ServerInfo, message: str = "", user: str = "") -> str:
    error = ""
    described = ""
    if message:
        error = f'<p class="notice error" id="login-error" role="alert">{esc(message)}</p>'
        described = ' aria-describedby="login-error" aria-invalid="true"'
    body = (
        "<h1>Sign in</h1>"
        "<p>Use the server's user and password (<code>PFCON_USER</code>, <code>PFCON_PASSWORD</code>).</p>"
        f"{error}"
        f'<form method="post" action="{BASE}/login/" class="login">'
        f'<p><label for="user">User</label><input id="user" name="user" autocomplete="username" required '
        f'value="{esc(user)}"{described}></p>'
        '<p><label for="password">Password</label><input id="password" name="password" type="password" '
        f'autocomplete="current-password" required{described}></p>'
        '<p><button type="submit">Sign in</button></p></form>'
    )
    return page("Sign in", body, info)


def _health_list(checks: Sequence[dict[str, Any]]) -> str:
    items = "".join(
        f'<li class="{"ok" if h["ok"] else "down"}" data-key="{esc(h["kind"])}">'
        f'<span aria-hidden="true">{"✔" if h["ok"] else "✘"}</span> {esc(h["text"])}</li>'
        for h in checks
    )
    return f'<ul id="health" class="health">{items}</ul>'


def _job_tr(row: dict[str, Any]) -> str:
    name = esc(row["name"])
    job = f'<a href="{esc(row["href"])}">{name}</a>' if row["href"] else name
    note = f' <span class="msg">{esc(row["note"])}</span>'
    return (
        f'<tr data-name="{name}"><th scope="row">{job}</th><td>{esc(row["kind"])}</td>'
        f'<td><span class="status {esc(row["status_class"])}">{esc(row["status_label"])}</span>{note}</td>'
        f'<td class="image">{esc(row["image"])}</td>'
        f'<td><time datetime="{esc(row["created"])}">{esc(row["age"])}</time></td>'
        f"<td>{esc(row['resources'])}</td><td>{esc(row['scheduler'])}</td><td>{esc(row['node'])}</td></tr>"
    )


def jobs_page(
    info: ServerInfo,
    session: Session,
    rows: Sequence[dict[str, Any]],
    checks: Sequence[dict[str, Any]],
    notice: str = "",
    problem: str = "",
) -> str:
    notice_html = f'<p class="notice" role="status">{esc(notice)}</p>' if notice else ""
    problem_html = (
        f'<p class="notice error" id="jobs-problem" role="alert">{esc(problem)}</p>'
        if problem
        else ('<p class="notice error" id="jobs-problem" role="alert" hidden></p>')
    )
    body = (
        "<h1>Jobs</h1>"
        f"{notice_html}"
        '<section aria-labelledby="health-h"><h2 id="health-h">Backends</h2>'
        f"{_health_list(checks)}</section>"
        '<section aria-labelledby="jobs-h"><h2 id="jobs-h">Jobs of this server</h2>'
        f"{problem_html}"
        '<p class="updated">Updates every few seconds. <span id="updated"></span></p>'
        '<div class="table-wrap"><table id="jobs"><caption>'
        f'<span id="job-count">{len(rows)}</span> jobs, newest first</caption>'
        "<thead><tr>"
        '<th scope="col">Job</th><th scope="col">Kind</th><th scope="col">Status</th><th scope="col">Image</th>'
        '<th scope="col">Age</th><th scope="col">Resources</th><th scope="col">Scheduler</th>'
        '<th scope="col">Node</th></tr></thead>'
        f"<tbody>{''.join(_job_tr(r) for r in rows)}</tbody></table></div></section>"
    )
    return page("Jobs", body, info, session, poll=f"{BASE}/api/jobs/")


def job_page(
    info: ServerInfo,
    session: Session,
    jid: str,
    state: JobState,
    outputs: Sequence[OutputFile] | None,
    outputs_limit: int,
    notice: str = "",
) -> str:
    detail = job_detail(state)
    notice_html = f'<p class="notice" role="status">{esc(notice)}</p>' if notice else ""
    cancel = (
        f'<a class="button" id="cancel-link" href="{esc(job_href(jid, "cancel"))}">Cancel job…</a>'
        if not detail["terminal"]
        else ""
    )
    if outputs is None:
        listing = (
            "<p>This storage mode writes outputs straight into CUBE's storage; "
            "they are listed by the client that names them.</p>"
        )
    elif not outputs:
        listing = '<p id="outputs-empty">No output files yet.</p>'
    else:
        more = f"<p>Only the first {outputs_limit} files are shown.</p>" if len(outputs) >= outputs_limit else ""
        listing = (
            '<table id="outputs"><caption>Output files</caption><thead><tr><th scope="col">File</th>'
            '<th scope="col" class="num">Size (bytes)</th></tr></thead><tbody>'
            + "".join(f'<tr><td>{esc(f.path)}</td><td class="num">{f.size}</td></tr>' for f in outputs)
            + f"</tbody></table>{more}"
        )
    body = (
        f'<p><a href="{BASE}/">← All jobs</a></p>'
        f'<h1>Job <span class="jid">{esc(jid)}</span></h1>'
        f"{notice_html}"
        '<dl class="facts">'
        f'<dt>Status</dt><dd><span id="job-status" class="status {esc(detail["status_class"])}">'
        f'{esc(detail["status_label"])}</span> <span id="job-message" class="msg">{esc(detail["message"])}</span></dd>'
        f"<dt>Image</dt><dd>{esc(state.info.image)}</dd>"
        f'<dt>Command</dt><dd><code id="job-command">{esc(state.info.cmd)}</code></dd>'
        f"<dt>Scheduler</dt><dd>{esc(info.container_env)}</dd>"
        "</dl>"
        f'<p class="actions">{cancel}'
        f'<a class="button danger" id="delete-link" href="{esc(job_href(jid, "delete"))}">Delete job…</a></p>'
        '<section aria-labelledby="logs-h"><h2 id="logs-h">Log tail</h2>'
        '<p class="updated">Updates every few seconds while the job runs. <span id="updated"></span></p>'
        f'<pre id="logs" tabindex="0" aria-labelledby="logs-h">{esc(detail["logs"])}</pre></section>'
        f'<section aria-labelledby="outputs-h"><h2 id="outputs-h">Outputs</h2>{listing}</section>'
    )
    return page(f"Job {jid}", body, info, session, poll=f"{BASE}/api/jobs/{quote(jid, safe='')}/")


CONFIRM = {
    "cancel": (
        "Cancel job {jid}?",
        "The job stops. Its data and logs stay, and its status becomes “finished with error: cancelled”.",
        "Cancel the job",
        "Keep it running",
    ),
    "delete": (
        "Delete job {jid}?",
        "The job is stopped if it runs, and its container, input and output data are removed. This cannot be undone.",
        "Delete the job",
        "Keep it",
    ),
}


def confirm_page(info: ServerInfo, session: Session, jid: str, action: str) -> str:
    title, explanation, yes, no = CONFIRM[action]
    body = (
        f"<h1>{esc(title.format(jid=jid))}</h1><p>{esc(explanation)}</p>"
        f'<form method="post" action="{esc(job_href(jid, action))}" class="confirm">'
        f'<input type="hidden" name="csrf" value="{esc(session.csrf)}">'
        f'<button type="submit" class="danger" id="confirm">{esc(yes)}</button> '
        f'<a class="button secondary" href="{esc(job_href(jid))}">{esc(no)}</a></form>'
    )
    return page(title.format(jid=jid), body, info, session)


def error_page(info: ServerInfo, session: Session | None, title: str, message: str) -> str:
    body = (
        f'<h1>{esc(title)}</h1><p class="notice error" role="alert">{esc(message)}</p>'
        f'<p><a href="{BASE}/">Back to the jobs</a></p>'
    )
    return page(title, body, info, session)
