"""The operators' jobs dashboard at ``/dashboard/`` (issue 12, ADR 22).

Server-rendered pages and a small script of the package's own that polls two JSON views;
nothing is loaded from anywhere else. Login with the server's user and password makes a
signed session cookie (:mod:`.session`); every state-changing form carries the session's
CSRF token. Every use case runs in the worker pool (``Runner``), as the API's do.
"""

from __future__ import annotations

import functools
import importlib.resources
from typing import Any
from urllib.parse import parse_qsl

import structlog
from litestar import Request, Response, Router, get, post
from litestar.datastructures import Cookie
from litestar.di import NamedDependency
from litestar.params import FromPath

from ....domain import errors as E
from ....domain.model import job_id_problem
from ....domain.services import AuthService, JobService
from ..common import Runner, status_for
from . import views
from .session import COOKIE_NAME, COOKIE_PATH, Session, Sessions

__all__ = ["OUTPUTS_LIMIT", "Sessions", "router"]

log = structlog.get_logger("pfcon.dashboard")

OUTPUTS_LIMIT = 500  # files listed on a job page
STATIC = {"dashboard.css": "text/css; charset=utf-8", "dashboard.js": "text/javascript; charset=utf-8"}
HEADERS = {
    # Everything comes from this server; no inline script or style, no framing.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
WRONG_LOGIN = "Wrong user or password."
NOT_LOGGED_IN = "Not signed in, or the session expired: sign in at /dashboard/login/."
BAD_CSRF = "The form is stale or did not come from this dashboard: reload the page and try again."


@functools.cache
def _asset(name: str) -> bytes:
    return importlib.resources.files(__package__).joinpath("static", name).read_bytes()


def _html(text: str, status: int = 200, cookies: list[Cookie] | None = None) -> Response[str]:
    return Response(
        content=text, status_code=status, media_type="text/html; charset=utf-8", headers=HEADERS, cookies=cookies
    )


def _json(content: Any, status: int = 200) -> Response[Any]:
    return Response(content=content, status_code=status, media_type="application/json", headers=HEADERS)


def _redirect(location: str, cookies: list[Cookie] | None = None) -> Response[None]:
    return Response(
        content=None,
        status_code=303,
        headers={**HEADERS, "Location": location},
        cookies=cookies,
        media_type="text/plain",
    )


async def _form(request: Request[Any, Any, Any]) -> dict[str, str]:
    """A urlencoded form's fields (first value of each); anything else has none."""
    if request.content_type[0] != "application/x-www-form-urlencoded":
        return {}
    body = await request.body()  # bounded by MAX_BODY_BYTES
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        return {}
    form: dict[str, str] = {}
    for name, value in pairs:
        form.setdefault(name, value)
    return form


def router(sessions: Sessions, cookie_secure: str) -> Router:
    """The dashboard's routes; ``cookie_secure`` is DASHBOARD_COOKIE_SECURE."""

    def session_of(request: Request[Any, Any, Any]) -> Session | None:
        return sessions.verify(request.cookies.get(COOKIE_NAME))

    def cookie(request: Request[Any, Any, Any], value: str, max_age: int) -> Cookie:
        secure = cookie_secure == "always" or (cookie_secure == "auto" and request.url.scheme == "https")
        return Cookie(
            key=COOKIE_NAME,
            value=value,
            path=COOKIE_PATH,
            max_age=max_age,
            httponly=True,
            secure=secure,
            samesite="strict",
        )

    def info(jobs: JobService) -> Any:
        return jobs.server_info()

    def failure(jobs: JobService, session: Session | None, error: E.DomainError) -> Response[str]:
        status = status_for(error)
        if status >= 500:
            log.warning("dashboard_backend_error", error=error.message, error_type=type(error).__name__)
        title = {404: "Not found", 409: "Conflict"}.get(status, "Unavailable" if status >= 500 else "Refused")
        return _html(views.error_page(info(jobs), session, title, error.message), status)

    # -- login and logout ------------------------------------------------------------

    @get("/login/", sync_to_thread=False, include_in_schema=False)
    def login_form(request: Request[Any, Any, Any], jobs: NamedDependency[JobService]) -> Response[Any]:
        if session_of(request) is not None:
            return _redirect(f"{views.BASE}/")
        return _html(views.login_page(info(jobs)))

    @post("/login/", include_in_schema=False)
    async def login(
        request: Request[Any, Any, Any], jobs: NamedDependency[JobService], auth: NamedDependency[AuthService]
    ) -> Response[Any]:
        form = await _form(request)
        user = form.get("user", "")
        try:
            auth.login(user, form.get("password", ""))  # constant-time comparison; no I/O
        except E.InvalidCredentials:
            log.info("dashboard_login", outcome="refused")  # never the user or password typed
            return _html(views.login_page(info(jobs), WRONG_LOGIN, user), 401)
        _, value = sessions.issue(user)
        log.info("dashboard_login", outcome="ok", user=user)
        return _redirect(f"{views.BASE}/", cookies=[cookie(request, value, sessions.lifetime)])

    @post("/logout/", include_in_schema=False)
    async def logout(request: Request[Any, Any, Any], jobs: NamedDependency[JobService]) -> Response[Any]:
        session = session_of(request)
        if session is not None and not Sessions.csrf_ok(session, (await _form(request)).get("csrf")):
            log.warning("dashboard_csrf_refused", action="logout")
            return _html(views.error_page(info(jobs), session, "Refused", BAD_CSRF), 403)
        return _redirect(f"{views.BASE}/login/", cookies=[cookie(request, "", 0)])

    # -- pages -------------------------------------------------------------------------

    @get("/", include_in_schema=False)
    async def jobs_page(
        request: Request[Any, Any, Any], jobs: NamedDependency[JobService], runner: NamedDependency[Runner]
    ) -> Response[Any]:
        session = session_of(request)
        if session is None:
            return _redirect(f"{views.BASE}/login/")
        rows, problem = await _rows(jobs, runner)
        checks = views.health_rows(await runner.run(jobs.readiness))
        deleted = request.query_params.get("deleted", "")
        notice = f"Job {deleted} deleted." if deleted and job_id_problem(deleted) is None else ""
        return _html(views.jobs_page(info(jobs), session, rows, checks, notice, problem))

    @get("/jobs/{jid:str}/", include_in_schema=False)
    async def job_page(
        request: Request[Any, Any, Any],
        jid: FromPath[str],
        jobs: NamedDependency[JobService],
        runner: NamedDependency[Runner],
    ) -> Response[Any]:
        session = session_of(request)
        if session is None:
            return _redirect(f"{views.BASE}/login/")
        try:
            state = await runner.run(jobs.status, jid)
        except E.DomainError as e:
            return failure(jobs, session, e)
        try:
            outputs = await runner.run(jobs.output_files, jid, OUTPUTS_LIMIT)
        except E.JobNotFound:
            outputs = ()  # the job runs, its data is gone (deleted, or never staged here)
        except E.DomainError as e:
            return failure(jobs, session, e)
        notice = "Job cancelled." if request.query_params.get("cancelled") else ""
        return _html(views.job_page(info(jobs), session, jid, state, outputs, OUTPUTS_LIMIT, notice))

    @get("/jobs/{jid:str}/{action:str}/", include_in_schema=False)
    async def confirm(
        request: Request[Any, Any, Any],
        jid: FromPath[str],
        action: FromPath[str],
        jobs: NamedDependency[JobService],
        runner: NamedDependency[Runner],
    ) -> Response[Any]:
        session = session_of(request)
        if session is None:
            return _redirect(f"{views.BASE}/login/")
        if action not in views.CONFIRM:
            return failure(jobs, session, E.JobNotFound(jid, f"no such page: {action}"))
        try:
            await runner.run(jobs.status, jid)  # confirm only what exists
        except E.DomainError as e:
            return failure(jobs, session, e)
        return _html(views.confirm_page(info(jobs), session, jid, action))

    @post("/jobs/{jid:str}/{action:str}/", include_in_schema=False)
    async def act(
        request: Request[Any, Any, Any],
        jid: FromPath[str],
        action: FromPath[str],
        jobs: NamedDependency[JobService],
        runner: NamedDependency[Runner],
    ) -> Response[Any]:
        session = session_of(request)
        if session is None:
            return _html(views.error_page(info(jobs), None, "Not signed in", NOT_LOGGED_IN), 401)
        if not Sessions.csrf_ok(session, (await _form(request)).get("csrf")):
            log.warning("dashboard_csrf_refused", action=action, job_id=jid)
            return _html(views.error_page(info(jobs), session, "Refused", BAD_CSRF), 403)
        if action not in views.CONFIRM:
            return failure(jobs, session, E.JobNotFound(jid, f"no such action: {action}"))
        try:
            if action == "cancel":
                await runner.run(jobs.cancel, jid)
            else:
                await runner.run(jobs.delete, jid)
        except E.DomainError as e:
            return failure(jobs, session, e)
        except NotImplementedError as e:
            return _html(views.error_page(info(jobs), session, "Not available", str(e)), 501)
        log.info("dashboard_" + action, job_id=jid, user=session.user)
        if action == "cancel":
            return _redirect(views.job_href(jid) + "?cancelled=1")
        return _redirect(f"{views.BASE}/?deleted={jid}")

    # -- the JSON the page script polls -----------------------------------------------------

    async def _rows(jobs: JobService, runner: Runner) -> tuple[list[dict[str, Any]], str]:
        scheduler = info(jobs).container_env
        try:
            listed = await runner.run(jobs.list_jobs)
        except E.DomainError as e:
            return [], e.message
        except NotImplementedError:
            return [], f"Listing jobs is not available on the {scheduler} scheduler in this build."
        return [views.job_row(j, scheduler) for j in listed], ""

    @get("/api/jobs/", include_in_schema=False)
    async def jobs_json(
        request: Request[Any, Any, Any], jobs: NamedDependency[JobService], runner: NamedDependency[Runner]
    ) -> Response[Any]:
        if session_of(request) is None:
            return _json({"message": NOT_LOGGED_IN}, 401)
        rows, problem = await _rows(jobs, runner)
        checks = views.health_rows(await runner.run(jobs.readiness))
        return _json({"jobs": rows, "health": checks, "problem": problem})

    @get("/api/jobs/{jid:str}/", include_in_schema=False)
    async def job_json(
        request: Request[Any, Any, Any],
        jid: FromPath[str],
        jobs: NamedDependency[JobService],
        runner: NamedDependency[Runner],
    ) -> Response[Any]:
        if session_of(request) is None:
            return _json({"message": NOT_LOGGED_IN}, 401)
        try:
            state = await runner.run(jobs.status, jid)
        except E.DomainError as e:
            return _json({"message": e.message}, status_for(e))
        return _json(views.job_detail(state))

    @get("/static/{name:str}", sync_to_thread=False, include_in_schema=False)
    def static(name: FromPath[str]) -> Response[Any]:
        if name not in STATIC:
            return Response(content=b"not found", status_code=404, media_type="text/plain", headers=HEADERS)
        headers = {**HEADERS, "Cache-Control": "no-cache"}
        return Response(content=_asset(name), media_type=STATIC[name], headers=headers)

    return Router(
        path=views.BASE,
        route_handlers=[login_form, login, logout, jobs_page, job_page, confirm, act, jobs_json, job_json, static],
        include_in_schema=False,
    )
