"""The jobs dashboard end to end in a real headless Chromium (Debian's ``chromium``, driven
by Playwright with ``executable_path``; no browser download), against the real server on
real Docker: sign in, a job submitted through the API appears and finishes, its logs and
outputs, cancel, delete, a wrong password refused; keyboard navigation and contrast.

``PFCON_DASHBOARD_SCREENSHOT=docs/dashboard.png`` saves the jobs page as the README shows it.
"""

from __future__ import annotations

import io
import os
import re
import uuid
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from .conftest import TEST_IMAGE, _require
from pfcon.domain.model import INSTANCE_LABEL

from .server import Server, start_server

pytestmark = pytest.mark.docker

CHROMIUM = os.environ.get("PFCON_CHROMIUM", "/usr/bin/chromium")
USER, PASSWORD = "pfcon", "pfcon1234"
WAIT_MS = 180_000  # an upper bound on a busy shared machine; Playwright's waits poll until then


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        _require("Chromium", f"{CHROMIUM} is not installed (scripts/chromium.sh installs Debian's chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        _require("Playwright", str(e))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server(docker_client: Any, tmp_path_factory: Any) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("dashboard")
    storebase = base / "storeBase"
    storebase.mkdir()
    # An instance of its own: the table lists this server's jobs only, whatever else runs.
    instance = f"dash-{uuid.uuid4().hex[:8]}"
    server = start_server(str(storebase), str(base / "server.log"), PFCON_INSTANCE=instance)
    yield server
    server.stop()
    import docker.errors

    for c in docker_client.containers.list(all=True, filters={"label": f"{INSTANCE_LABEL}={instance}"}, ignore_removed=True):
        try:
            c.remove(force=True)
        except docker.errors.NotFound:
            pass


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    yield page
    context.close()


def sign_in(page: Any, server: Server) -> None:
    page.goto(f"{server.url}/dashboard/")
    assert page.url.endswith("/dashboard/login/")  # not signed in: sent to the login page
    page.get_by_label("User").fill(USER)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{server.url}/dashboard/")
    page.get_by_role("heading", name="Jobs", exact=True).wait_for()


def new_jid() -> str:
    return f"dash-{uuid.uuid4().hex[:10]}"


def submit(server: Server, jid: str, script: str) -> None:
    """A job through pfcon's API, as CUBE submits one."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("input.txt", "hello\n")
    form = {
        "jid": jid, "entrypoint": ["sh", "-c", script], "auid": "cube", "number_of_workers": "1",
        "cpu_limit": "1000", "memory_limit": "200", "gpu_limit": "0", "image": TEST_IMAGE, "type": "ds",
    }  # fmt: skip
    r = requests.post(
        f"{server.api}jobs/",
        data=form,
        files={"data_file": ("data.zip", buf.getvalue())},
        headers={"Authorization": f"Bearer {server.token()}"},
        timeout=120,
    )
    assert r.status_code == 201, r.text


def api_status(server: Server, jid: str) -> requests.Response:
    return requests.get(f"{server.api}jobs/{jid}/", headers={"Authorization": f"Bearer {server.token()}"}, timeout=30)


def row(page: Any, jid: str) -> Any:
    return page.locator(f'#jobs tbody tr[data-name="{jid}"]')


# -- the flows ---------------------------------------------------------------------------------


def test_wrong_password_is_refused(page: Any, server: Server) -> None:
    page.goto(f"{server.url}/dashboard/login/")
    page.get_by_label("User").fill(USER)
    page.get_by_label("Password").fill("not-the-password")
    with page.expect_response(lambda r: r.url.endswith("/dashboard/login/") and r.request.method == "POST") as info:
        page.get_by_role("button", name="Sign in").click()
    assert info.value.status == 401
    page.get_by_role("alert").filter(has_text="Wrong user or password.").wait_for()
    assert page.url.endswith("/dashboard/login/")
    assert page.context.cookies() == []  # no session
    page.goto(f"{server.url}/dashboard/")
    assert page.url.endswith("/dashboard/login/")


def test_a_submitted_job_appears_finishes_and_shows_its_logs_and_outputs(page: Any, server: Server) -> None:
    sign_in(page, server)
    jid = new_jid()
    # Submitted after the page loaded: only the live table can show it.
    submit(server, jid, f'echo "hello from {jid}"; echo result > "$1/result.txt"; sleep 3; echo done')
    job = row(page, jid)
    job.wait_for()
    assert job.locator("td").nth(2).inner_text() == TEST_IMAGE
    assert "1 CPU, 200 MiB" in job.inner_text() and "docker" in job.inner_text()
    job.locator(".status", has_text="Finished successfully").wait_for()
    job.get_by_role("link", name=jid).click()
    page.wait_for_url(f"{server.url}/dashboard/jobs/{jid}/")
    page.get_by_role("heading", name=f"Job {jid}").wait_for()
    assert page.locator("#job-status").inner_text() == "Finished successfully"
    assert f"hello from {jid}" in page.locator("#logs").inner_text()
    assert "done" in page.locator("#logs").inner_text()
    assert page.locator("#job-command").inner_text().startswith("sh -c ")
    assert page.locator("#outputs td", has_text="result.txt").count() == 1


def test_the_log_tail_is_live_on_the_job_page(page: Any, server: Server) -> None:
    sign_in(page, server)
    jid = new_jid()
    submit(server, jid, 'echo first; sleep 6; echo "second line"; sleep 1')
    page.goto(f"{server.url}/dashboard/jobs/{jid}/")
    try:
        page.locator("#logs", has_text="second line").wait_for()  # arrives after the page loaded
        page.locator("#job-status", has_text="Finished successfully").wait_for()
    except Exception as e:
        shown = {k: page.locator(k).inner_text() for k in ("#job-status", "#job-message", "#logs", "#updated")}
        raise AssertionError(f"{shown}; API: {api_status(server, jid).text}") from e


def test_cancel_a_running_job(page: Any, server: Server) -> None:
    sign_in(page, server)
    jid = new_jid()
    submit(server, jid, "echo started; sleep 600")
    page.goto(f"{server.url}/dashboard/jobs/{jid}/")
    page.locator("#job-status", has_text="Running").wait_for()
    page.get_by_role("link", name="Cancel job…").click()
    page.get_by_role("heading", name=f"Cancel job {jid}?").wait_for()
    page.get_by_role("button", name="Cancel the job").click()
    page.wait_for_url(re.compile(rf".*/dashboard/jobs/{jid}/\?cancelled=1$"))
    page.get_by_role("status").filter(has_text="Job cancelled.").wait_for()
    page.locator("#job-status", has_text="Cancelled").wait_for()
    compute = api_status(server, jid).json()["compute"]
    assert (compute["status"], compute["message"]) == ("finishedWithError", "cancelled")
    assert "started" in page.locator("#logs").inner_text()  # the logs stay


def test_delete_a_job(page: Any, server: Server) -> None:
    sign_in(page, server)
    jid = new_jid()
    submit(server, jid, "echo bye")
    row(page, jid).locator(".status", has_text="Finished successfully").wait_for()
    page.goto(f"{server.url}/dashboard/jobs/{jid}/")
    page.get_by_role("link", name="Delete job…").click()
    page.get_by_role("heading", name=f"Delete job {jid}?").wait_for()
    page.get_by_role("button", name="Delete the job").click()
    page.wait_for_url(f"{server.url}/dashboard/?deleted={jid}")
    page.get_by_role("status").filter(has_text=f"Job {jid} deleted.").wait_for()
    assert row(page, jid).count() == 0
    assert api_status(server, jid).status_code == 404
    assert not os.path.exists(os.path.join(server.storebase, f"key-{jid}"))


# -- accessibility ---------------------------------------------------------------------------------

FOCUS_STYLE = """() => {
  const el = document.activeElement;
  const s = getComputedStyle(el);
  return {tag: el.tagName, id: el.id, text: (el.textContent || "").trim().slice(0, 40),
          href: el.getAttribute("href"), style: s.outlineStyle, width: parseFloat(s.outlineWidth)};
}"""


def focused(page: Any) -> dict[str, Any]:
    info: dict[str, Any] = page.evaluate(FOCUS_STYLE)
    assert info["style"] != "none" and info["width"] >= 2, f"focus not visible on {info}"
    return info


def tab_to(page: Any, predicate: Any, limit: int = 60) -> dict[str, Any]:
    for _ in range(limit):
        page.keyboard.press("Tab")
        info = focused(page)
        if predicate(info):
            return info
    raise AssertionError("never reached by Tab")


def test_keyboard_only_sign_in_table_and_job_page(page: Any, server: Server) -> None:
    jid = new_jid()
    submit(server, jid, "echo keyboard")
    page.goto(f"{server.url}/dashboard/")
    assert tab_to(page, lambda f: True)["text"] == "Skip to main content"  # the first stop
    tab_to(page, lambda f: f["id"] == "user")
    page.keyboard.type(USER)
    tab_to(page, lambda f: f["id"] == "password")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{server.url}/dashboard/")
    row(page, jid).wait_for()
    # The skip link leads past the header into the main content.
    assert tab_to(page, lambda f: True)["text"] == "Skip to main content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    tab_to(page, lambda f: f["href"] == f"/dashboard/jobs/{jid}/")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{server.url}/dashboard/jobs/{jid}/")
    tab_to(page, lambda f: f["id"] == "delete-link")
    page.keyboard.press("Enter")
    page.get_by_role("heading", name=f"Delete job {jid}?").wait_for()
    tab_to(page, lambda f: f["id"] == "confirm")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{server.url}/dashboard/?deleted={jid}")


CONTRAST = """() => {
  const parse = (c) => {
    const m = c.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return null;
    const p = m[1].split(/[ ,\\/]+/).filter(Boolean).map(Number);
    return {r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1};
  };
  const over = (top, under) => ({r: top.r * top.a + under.r * (1 - top.a),
    g: top.g * top.a + under.g * (1 - top.a), b: top.b * top.a + under.b * (1 - top.a), a: 1});
  const background = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c.a > 0) { layers.push(c); if (c.a >= 1) break; }
    }
    let out = {r: 255, g: 255, b: 255, a: 1};
    for (let i = layers.length - 1; i >= 0; i--) out = over(layers[i], out);
    return out;
  };
  const lum = (c) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b);
  };
  const failures = [];
  let checked = 0;
  for (const el of document.querySelectorAll("body *")) {
    if (![...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim())) continue;
    const s = getComputedStyle(el);
    if (s.display === "none" || s.visibility === "hidden" || el.getClientRects().length === 0) continue;
    const bg = background(el);
    const fg = over(parse(s.color), bg);
    const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
    const ratio = (hi + 0.05) / (lo + 0.05);
    checked++;
    if (ratio < 4.5) failures.push(`${el.tagName}.${el.className} "${el.textContent.trim().slice(0, 30)}": ${ratio.toFixed(2)}`);
  }
  return {checked, failures};
}"""


def test_text_contrast_is_at_least_4_5_to_1_on_the_main_pages(page: Any, server: Server) -> None:
    page.goto(f"{server.url}/dashboard/login/")
    page.get_by_label("User").fill(USER)
    page.get_by_label("Password").fill("wrong")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("alert").wait_for()
    pages = {"login (with its error)": page.evaluate(CONTRAST)}
    sign_in(page, server)
    done, running = new_jid(), new_jid()
    submit(server, done, "echo ok")
    submit(server, running, "sleep 600")
    row(page, done).locator(".status", has_text="Finished successfully").wait_for()
    row(page, running).locator(".status", has_text="Running").wait_for()
    pages["jobs"] = page.evaluate(CONTRAST)
    screenshot = os.environ.get("PFCON_DASHBOARD_SCREENSHOT")  # after the other tests: a varied table
    if screenshot:
        page.screenshot(path=screenshot, full_page=True)
    page.goto(f"{server.url}/dashboard/jobs/{done}/")
    pages["job"] = page.evaluate(CONTRAST)
    page.goto(f"{server.url}/dashboard/jobs/{running}/delete/")
    pages["confirmation"] = page.evaluate(CONTRAST)
    for name, result in pages.items():
        assert result["checked"] >= 5, name
        assert result["failures"] == [], f"{name}: {result['failures']}"
    requests.delete(f"{server.api}jobs/{running}/", headers={"Authorization": f"Bearer {server.token()}"}, timeout=60)
