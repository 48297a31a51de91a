"""The jobs dashboard (/dashboard/, ADR 22) through the real app with the fake compute:
login, sessions, CSRF, pages, live JSON, cancel and delete, escaping."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from typing import Any

import pytest

from pfcon.config import ConfigError, load_settings
from pfcon.domain.model import JobStatus
from pfcon.entrypoints.http.dashboard.session import COOKIE_NAME, Sessions

from ..conftest import API, PASSWORD, USER, Api

D = "/dashboard"
PAGES = [f"{D}/", f"{D}/jobs/chris-jid-1/", f"{D}/jobs/chris-jid-1/cancel/", f"{D}/jobs/chris-jid-1/delete/"]
JSON_VIEWS = [f"{D}/api/jobs/", f"{D}/api/jobs/chris-jid-1/"]
ACTIONS = [f"{D}/jobs/chris-jid-1/cancel/", f"{D}/jobs/chris-jid-1/delete/"]


def login(api: Api, password: str = PASSWORD) -> Any:
    return api.client.post(f"{D}/login/", data={"user": USER, "password": password}, follow_redirects=False)


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


@pytest.fixture
def dash(api: Api) -> Api:
    """The app with one submitted, running job, and a dashboard session."""
    assert api.submit().status_code == 201
    api.compute.run("chris-jid-1")
    assert login(api).status_code == 303
    return api


# -- login and sessions ---------------------------------------------------------------------


def test_login_sets_a_strict_httponly_session_cookie_for_the_dashboard_only(api: Api) -> None:
    r = login(api)
    assert r.status_code == 303
    assert r.headers["location"] == f"{D}/"
    cookie = r.headers["set-cookie"]
    attributes = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
    assert cookie.startswith(f"{COOKIE_NAME}=v1.")
    assert {"httponly", "path", "samesite", "max-age"} <= attributes
    assert "Path=/dashboard" in cookie and "SameSite=strict" in cookie and "Max-Age=28800" in cookie
    assert "secure" not in attributes  # plain http, DASHBOARD_COOKIE_SECURE=auto
    assert api.client.get(f"{D}/").status_code == 200


@pytest.mark.parametrize(("setting", "base_url", "secure"), [
    ("auto", "https://testserver.local", True),
    ("always", "http://testserver.local", True),
    ("never", "https://testserver.local", False),
])  # fmt: skip
def test_secure_cookie_attribute(app_factory: Callable[..., Api], setting: str, base_url: str, secure: bool) -> None:
    api = app_factory(DASHBOARD_COOKIE_SECURE=setting)
    api.client.base_url = base_url  # type: ignore[assignment]
    cookie = login(api).headers["set-cookie"]
    assert ("; Secure" in cookie or "; secure" in cookie) is secure


@pytest.mark.parametrize("form", [
    {"user": USER, "password": "wrong"},
    {"user": "someone", "password": PASSWORD},
    {"user": "", "password": ""},
    {},
])  # fmt: skip
def test_wrong_credentials_give_the_login_page_again_with_401(api: Api, form: dict[str, str]) -> None:
    r = api.client.post(f"{D}/login/", data=form, follow_redirects=False)
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("text/html")
    assert "Wrong user or password." in r.text
    assert 'role="alert"' in r.text and '<form method="post" action="/dashboard/login/"' in r.text
    assert "set-cookie" not in r.headers
    assert api.client.get(f"{D}/", follow_redirects=False).status_code == 303


def test_the_password_is_never_logged_nor_echoed(app_factory: Any, capsys: Any, reset_structlog: Any) -> None:
    from pfcon.entrypoints.logs import configure_logging

    configure_logging("INFO", cache=False)
    api = app_factory(PFCON_PASSWORD="hunter2-password")
    capsys.readouterr()
    r = api.client.post(f"{D}/login/", data={"user": USER, "password": "typo-hunter3"})
    assert "typo-hunter3" not in r.text
    assert login(api, "hunter2-password").status_code == 303
    err = capsys.readouterr().err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert [line["outcome"] for line in lines if line.get("event") == "dashboard_login"] == ["refused", "ok"]
    for secret in ("hunter2-password", "typo-hunter3"):
        assert secret not in err


@pytest.mark.parametrize("path", PAGES)
def test_every_page_needs_a_session(api: Api, path: str) -> None:
    r = api.client.get(path, follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == f"{D}/login/"


@pytest.mark.parametrize("path", JSON_VIEWS)
def test_every_json_view_needs_a_session(api: Api, path: str) -> None:
    r = api.client.get(path)
    assert r.status_code == 401
    assert "Not signed in" in r.json()["message"]


@pytest.mark.parametrize("path", ACTIONS)
def test_every_action_needs_a_session(api: Api, path: str) -> None:
    assert api.submit().status_code == 201
    r = api.client.post(path, data={"csrf": "x"})
    assert r.status_code == 401
    assert "chris-jid-1" in api.compute.jobs  # nothing happened
    assert api.compute.jobs["chris-jid-1"].status is JobStatus.NOT_STARTED


def test_an_api_token_is_not_a_session_nor_the_reverse(api: Api) -> None:
    token = api.headers["Authorization"].split()[1]
    api.client.cookies.set(COOKIE_NAME, token, path="/dashboard")
    assert api.client.get(f"{D}/api/jobs/").status_code == 401
    api.client.cookies.clear()
    session = login(api).cookies[COOKIE_NAME]
    assert api.get("/jobs/chris-jid-1/", headers={"Authorization": f"Bearer {session}"}).status_code == 401


def test_forged_or_tampered_cookies_are_refused(api: Api) -> None:
    value = login(api).cookies[COOKIE_NAME]
    version, payload, signature = value.split(".")
    claims = json.loads(_unb64(payload))
    forged_payload = _b64(json.dumps({**claims, "u": "admin"}).encode())
    for bad in (
        f"{version}.{forged_payload}.{signature}",
        f"{version}.{payload}.{signature[:-2]}AA",
        f"v0.{payload}.{signature}",
        "garbage",
        value + ".x",
    ):
        api.client.cookies.clear()
        api.client.cookies.set(COOKIE_NAME, bad, path="/dashboard")
        assert api.client.get(f"{D}/api/jobs/").status_code == 401, bad


def _b64(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_sessions_expire_and_depend_on_key_and_password() -> None:
    now = [1_000_000.0]
    sessions = Sessions("k" * 32, "pfcon", "pw", lifetime_seconds=60, clock=lambda: now[0])
    session, value = sessions.issue("pfcon")
    assert sessions.verify(value) == session
    assert Sessions("k" * 32, "pfcon", "pw", 60, clock=lambda: now[0]).verify(value) == session  # stateless
    assert Sessions("other-key" * 4, "pfcon", "pw", 60, clock=lambda: now[0]).verify(value) is None
    assert Sessions("k" * 32, "pfcon", "new-password", 60, clock=lambda: now[0]).verify(value) is None
    now[0] += 59
    assert sessions.verify(value) == session
    now[0] += 1
    assert sessions.verify(value) is None
    assert sessions.verify(None) is None and sessions.verify("") is None and sessions.verify("é.é.é") is None


def test_csrf_token_check() -> None:
    sessions = Sessions("k" * 32, "pfcon", "pw", lifetime_seconds=60)
    session, _ = sessions.issue("pfcon")
    other, _ = sessions.issue("pfcon")
    assert Sessions.csrf_ok(session, session.csrf)
    assert session.csrf != other.csrf
    for bad in (None, "", other.csrf, session.csrf[:-1], "é"):
        assert not Sessions.csrf_ok(session, bad)


def test_logout_needs_the_csrf_token_and_ends_the_session(dash: Api) -> None:
    token = csrf_of(dash.client.get(f"{D}/").text)
    r = dash.client.post(f"{D}/logout/", data={"csrf": "forged"})
    assert r.status_code == 403
    assert dash.client.get(f"{D}/api/jobs/").status_code == 200
    r = dash.client.post(f"{D}/logout/", data={"csrf": token}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"{D}/login/"
    assert "Max-Age=0" in r.headers["set-cookie"]
    assert dash.client.get(f"{D}/api/jobs/").status_code == 401


# -- pages and live views ------------------------------------------------------------------------


def test_jobs_table_lists_the_servers_jobs_with_their_facts(dash: Api) -> None:
    r = dash.client.get(f"{D}/")
    assert r.status_code == 200
    html = r.text
    assert '<table id="jobs">' in html and '<th scope="col">Status</th>' in html
    row = re.search(r'<tr data-name="chris-jid-1">.*?</tr>', html)
    assert row, html
    cells = row.group(0)
    for fact in ('href="/dashboard/jobs/chris-jid-1/"', "Running", "local/pfcon-busybox:1", "1 CPU, 200 MiB",
                 "docker", "fake-node", "plugin"):  # fmt: skip
        assert fact in cells, fact
    assert "Compute (docker): OK" in html and "Storage (zipfile): OK" in html
    assert 'class="skip" href="#main"' in html and '<main id="main"' in html
    assert 'data-poll="/dashboard/api/jobs/"' in html


def test_jobs_json_is_what_the_live_table_shows(dash: Api) -> None:
    body = dash.client.get(f"{D}/api/jobs/").json()
    assert body["problem"] == ""
    assert [h["text"] for h in body["health"]] == ["Compute (docker): OK", "Storage (zipfile): OK"]
    (job,) = body["jobs"]
    assert job["name"] == "chris-jid-1" and job["status"] == "started" and job["status_label"] == "Running"
    assert job["scheduler"] == "docker" and job["resources"] == "1 CPU, 200 MiB" and job["kind"] == "plugin"
    assert job["href"] == "/dashboard/jobs/chris-jid-1/"
    dash.compute.finish("chris-jid-1", logs="done\n")
    (job,) = dash.client.get(f"{D}/api/jobs/").json()["jobs"]
    assert job["status"] == "finishedSuccessfully" and job["status_label"] == "Finished successfully"


def test_job_page_shows_command_logs_and_outputs(dash: Api) -> None:
    dash.compute.finish("chris-jid-1", logs="line one\nline two\n")
    outgoing = os.path.join(dash.storebase, "key-chris-jid-1", "outgoing")
    os.makedirs(os.path.join(outgoing, "sub"), exist_ok=True)
    with open(os.path.join(outgoing, "sub", "result.txt"), "wb") as f:
        f.write(b"12345")
    r = dash.client.get(f"{D}/jobs/chris-jid-1/")
    assert r.status_code == 200
    html = r.text
    assert '<code id="job-command">python3 /usr/local/bin/simpledsapp --prefix lo' in html
    assert "line one\nline two" in html
    assert '<td>sub/result.txt</td><td class="num">5</td>' in html
    assert "Finished successfully" in html
    assert 'id="cancel-link"' not in html  # a finished job cannot be cancelled
    assert 'id="delete-link"' in html
    detail = dash.client.get(f"{D}/api/jobs/chris-jid-1/").json()
    assert detail == {
        "status": "finishedSuccessfully", "status_label": "Finished successfully", "status_class": "ok",
        "message": "exited", "terminal": True, "logs": "line one\nline two\n",
    }  # fmt: skip


def test_unknown_job_is_404(dash: Api) -> None:
    r = dash.client.get(f"{D}/jobs/no-such-job/")
    assert r.status_code == 404 and "Not found" in r.text
    assert dash.client.get(f"{D}/api/jobs/no-such-job/").status_code == 404
    assert dash.client.get(f"{D}/jobs/no-such-job/cancel/").status_code == 404
    assert dash.client.get(f"{D}/jobs/chris-jid-1/explode/").status_code == 404


def test_untrusted_text_is_escaped_everywhere(dash: Api) -> None:
    evil = '<img src=x onerror="alert(1)">&'
    fake = dash.compute.jobs["chris-jid-1"]
    fake.message = evil
    fake.logs = evil + "\n"
    fake.node = evil
    outgoing = os.path.join(dash.storebase, "key-chris-jid-1", "outgoing")
    os.makedirs(outgoing, exist_ok=True)
    with open(os.path.join(outgoing, '<b onmouseover="x">.txt'), "wb") as f:
        f.write(b"x")
    for path in (f"{D}/", f"{D}/jobs/chris-jid-1/"):
        html = dash.client.get(path).text
        assert "<img" not in html and "<b " not in html, path
        assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;" in html, path
    r = dash.client.get(f"{D}/?deleted=<script>")
    assert "<script>" not in r.text.replace('<script src="/dashboard/static/dashboard.js" defer></script>', "")
    r = dash.client.post(f"{D}/login/", data={"user": '"><script>x</script>', "password": "no"})
    assert "<script>x" not in r.text and "&quot;&gt;&lt;script&gt;x" in r.text


def test_pages_forbid_inline_script_and_framing(dash: Api) -> None:
    for path in (f"{D}/", f"{D}/login/", f"{D}/api/jobs/"):
        r = dash.client.get(path)
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["cache-control"] == "no-store"
    assert "<script>" not in dash.client.get(f"{D}/").text  # scripts are files of the package


def test_assets_are_served_from_the_package(api: Api) -> None:
    js = api.client.get(f"{D}/static/dashboard.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "textContent" in js.text and "innerHTML" not in js.text
    css = api.client.get(f"{D}/static/dashboard.css")
    assert css.status_code == 200 and ":focus-visible" in css.text
    assert api.client.get(f"{D}/static/../app.py").status_code == 404
    assert api.client.get(f"{D}/static/other.js").status_code == 404
    for path in (f"{D}/login/", f"{D}/static/dashboard.css", f"{D}/static/dashboard.js"):
        assert "http://" not in api.client.get(path).text.replace("http://www.w3.org", "")
        assert "https://" not in api.client.get(path).text


def test_backends_down_are_shown_not_hidden(dash: Api) -> None:
    dash.compute.down = "Docker engine unavailable: cannot connect to the engine"
    r = dash.client.get(f"{D}/")
    assert r.status_code == 200
    assert "Compute (docker): DOWN: Docker engine unavailable: cannot connect to the engine" in r.text
    assert 'id="jobs-problem" role="alert">Docker engine unavailable' in r.text
    body = dash.client.get(f"{D}/api/jobs/").json()
    assert body["jobs"] == [] and body["problem"].startswith("Docker engine unavailable")
    assert [h["ok"] for h in body["health"]] == [False, True]
    r = dash.client.get(f"{D}/jobs/chris-jid-1/")
    assert r.status_code == 503 and "Docker engine unavailable" in r.text


# -- cancel and delete ------------------------------------------------------------------------


def test_cancel_asks_for_confirmation_then_cancels(dash: Api) -> None:
    page = dash.client.get(f"{D}/jobs/chris-jid-1/")
    assert 'href="/dashboard/jobs/chris-jid-1/cancel/"' in page.text
    confirm = dash.client.get(f"{D}/jobs/chris-jid-1/cancel/")
    assert confirm.status_code == 200 and "Cancel job chris-jid-1?" in confirm.text
    assert dash.compute.jobs["chris-jid-1"].status is JobStatus.STARTED  # asking changes nothing
    r = dash.client.post(f"{D}/jobs/chris-jid-1/cancel/", data={"csrf": csrf_of(confirm.text)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"{D}/jobs/chris-jid-1/?cancelled=1"
    fake = dash.compute.jobs["chris-jid-1"]
    assert (fake.status, fake.message) == (JobStatus.FINISHED_WITH_ERROR, "cancelled")
    page = dash.client.get(r.headers["location"])
    assert "Job cancelled." in page.text and ">Cancelled</span>" in page.text
    assert os.path.isdir(os.path.join(dash.storebase, "key-chris-jid-1"))  # data stays
    status = dash.get("/jobs/chris-jid-1/").json()["compute"]
    assert (status["status"], status["message"]) == ("finishedWithError", "cancelled")


def test_delete_asks_for_confirmation_then_removes_job_and_data(dash: Api) -> None:
    confirm = dash.client.get(f"{D}/jobs/chris-jid-1/delete/")
    assert "Delete job chris-jid-1?" in confirm.text and "cannot be undone" in confirm.text
    r = dash.client.post(f"{D}/jobs/chris-jid-1/delete/", data={"csrf": csrf_of(confirm.text)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"{D}/?deleted=chris-jid-1"
    assert "chris-jid-1" not in dash.compute.jobs
    assert not os.path.exists(os.path.join(dash.storebase, "key-chris-jid-1"))
    page = dash.client.get(r.headers["location"])
    assert "Job chris-jid-1 deleted." in page.text and 'data-name="chris-jid-1"' not in page.text


@pytest.mark.parametrize("path", ACTIONS)
@pytest.mark.parametrize("csrf", [None, "", "forged"])
def test_actions_without_the_sessions_csrf_token_are_refused(dash: Api, path: str, csrf: str | None) -> None:
    r = dash.client.post(path, data={} if csrf is None else {"csrf": csrf})
    assert r.status_code == 403
    assert "reload the page" in r.text
    assert dash.compute.jobs["chris-jid-1"].status is JobStatus.STARTED
    assert os.path.isdir(os.path.join(dash.storebase, "key-chris-jid-1"))


def test_a_token_from_another_session_is_refused(dash: Api) -> None:
    token = csrf_of(dash.client.get(f"{D}/jobs/chris-jid-1/cancel/").text)
    assert login(dash).status_code == 303  # a second login: another session, another token
    assert csrf_of(dash.client.get(f"{D}/").text) != token
    assert dash.client.post(f"{D}/jobs/chris-jid-1/cancel/", data={"csrf": token}).status_code == 403
    assert dash.compute.jobs["chris-jid-1"].status is JobStatus.STARTED


def test_csrf_token_in_a_json_body_is_not_accepted(dash: Api) -> None:
    token = csrf_of(dash.client.get(f"{D}/").text)
    r = dash.client.post(f"{D}/jobs/chris-jid-1/delete/", json={"csrf": token})
    assert r.status_code == 403
    assert "chris-jid-1" in dash.compute.jobs


# -- configuration ------------------------------------------------------------------------------


def test_dashboard_can_be_disabled(app_factory: Callable[..., Api]) -> None:
    api = app_factory(DASHBOARD_ENABLED="no")
    assert api.client.get(f"{D}/login/").status_code == 404
    assert api.client.post(f"{D}/login/", data={"user": USER, "password": PASSWORD}).status_code == 404
    assert api.client.get(f"{API}/health/").status_code == 200


def test_dashboard_settings() -> None:
    s = load_settings({"APPLICATION_MODE": "dev"}).dashboard
    assert (s.enabled, s.session_minutes, s.cookie_secure) == (True, 480, "auto")
    s = load_settings({"APPLICATION_MODE": "dev", "DASHBOARD_ENABLED": "false", "DASHBOARD_SESSION_MINUTES": "30",
                       "DASHBOARD_COOKIE_SECURE": "always"}).dashboard  # fmt: skip
    assert (s.enabled, s.session_minutes, s.cookie_secure) == (False, 30, "always")
    for variable, raw in (("DASHBOARD_ENABLED", "maybe"), ("DASHBOARD_SESSION_MINUTES", "1"),
                          ("DASHBOARD_COOKIE_SECURE", "sometimes")):  # fmt: skip
        with pytest.raises(ConfigError) as info:
            load_settings({"APPLICATION_MODE": "dev", variable: raw})
        assert info.value.variable == variable


def test_session_lifetime_follows_the_setting(app_factory: Callable[..., Api]) -> None:
    api = app_factory(DASHBOARD_SESSION_MINUTES="30")
    assert "Max-Age=1800" in login(api).headers["set-cookie"]


def test_the_sign_in_page_tells_nothing_about_the_server(api: Api) -> None:
    html = api.client.get(f"{D}/login/").text
    assert "0.1.0" not in html and "scheduler" not in html and "zipfile" not in html
    login(api)
    html = api.client.get(f"{D}/").text
    assert "scheduler docker" in html and "storage zipfile" in html


def test_status_notes_only_say_what_the_label_does_not(dash: Api) -> None:
    (job,) = dash.client.get(f"{D}/api/jobs/").json()["jobs"]
    assert (job["status_label"], job["message"], job["note"]) == ("Running", "running", "")
    dash.compute.cancel("chris-jid-1")
    (job,) = dash.client.get(f"{D}/api/jobs/").json()["jobs"]
    assert (job["status_label"], job["message"], job["note"]) == ("Cancelled", "cancelled", "")
    dash.compute.jobs["chris-jid-1"].message = "OOMKilled"
    (job,) = dash.client.get(f"{D}/api/jobs/").json()["jobs"]
    assert (job["status_label"], job["note"]) == ("Finished with error", "OOMKilled")
