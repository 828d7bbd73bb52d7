"""The status page in a real browser: what a person would otherwise check by hand.

Headless Chromium (Debian's ``chromium`` package) driven by Playwright through
``executable_path``: Playwright cannot download its own browsers here. Each test starts a
real server (tests/_server.py), acts on it through the HTTP API and looks at what the page
shows. Screenshots go to ``$WONDERQ_ARTIFACTS`` (default ``tests/artifacts/``, git-ignored).
Every test also fails if the page broke its Content-Security-Policy or logged a script
error.

Without chromium or playwright the tests skip, naming how to install them, unless
``WONDERQ_REQUIRE_ALL=1``: then they fail.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _server import ServerProcess, make_queue, publish, request, running_server

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("WONDERQ_ARTIFACTS") or ROOT / "tests" / "artifacts")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 10_000  # for anything the page should show within a few snapshots


def _missing(what: str, how: str) -> None:
    """Skip, or fail under WONDERQ_REQUIRE_ALL=1 (CI that promises every program)."""
    message = f"{what} is not available; install it with: {how}"
    if os.environ.get("WONDERQ_REQUIRE_ALL") == "1":
        pytest.fail(message)
    pytest.skip(message)


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    _missing("chromium", "apt-get install -y chromium")
    raise AssertionError  # not reached


@pytest.fixture(scope="module")
def browser_context() -> Iterator[Any]:
    """One Chromium with a fresh profile for the module; each test opens its own page."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright", "pip install playwright (the test extra)")
    executable = _chromium()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="wonderq-chromium-") as profile,
        sync_playwright() as pw,
    ):
        context = pw.chromium.launch_persistent_context(
            profile,
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 860},
            service_workers="block",
        )
        context.set_default_timeout(WAIT_MS)
        try:
            yield context
        finally:
            context.close()


class Page:
    """A browser tab on the status page that records CSP violations and script errors."""

    # Collects securitypolicyviolation events before any page script runs.
    _RECORDER = """
        window.__violations = [];
        document.addEventListener('securitypolicyviolation', (e) => {
            window.__violations.push(e.violatedDirective + ' ' + e.blockedURI);
        });
    """

    def __init__(self, context: Any, name: str) -> None:
        self.name = name
        self.page = context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        self.page.on(
            "console",
            lambda msg: (
                self.errors.append(f"console: {msg.text}")
                if msg.type == "error" and "Content Security Policy" in msg.text
                else None
            ),
        )
        self.page.add_init_script(self._RECORDER)

    def open(self, srv: ServerProcess, fragment: str = "") -> Any:
        self.page.goto(srv.url + "/" + fragment)
        return self.page

    def shot(self, label: str, full_page: bool = True) -> Path:
        path = ARTIFACTS / f"{self.name}-{label}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path

    def check_clean(self) -> None:
        violations = self.page.evaluate("window.__violations || []")
        assert not violations, f"CSP violations: {violations}"
        assert not self.errors, self.errors


@pytest.fixture
def tab(browser_context: Any, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh tab; its last state is saved as ``<test>-end.png`` (also when it failed)."""
    page = Page(browser_context, request.node.name)
    try:
        yield page
        page.check_clean()
    finally:
        try:
            page.shot("end")
        finally:
            page.page.close()


@pytest.fixture
def srv() -> Iterator[ServerProcess]:
    """A server of its own: the overview's totals are this test's alone."""
    with running_server() as server:
        yield server


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as pw_expect

    return pw_expect(locator)


def publish_batch(srv: ServerProcess, queue: str, bodies: list[str]) -> None:
    resp = request(srv, "POST", f"/v1/queues/{queue}/batch", body=json.dumps(bodies))
    assert resp.status == 201, resp.body


# Pixels of the chart's first series (ready; publish) in the upper part of a canvas: a line
# at zero lies along the bottom, so any such pixel means the line went up.
_SERIES_PIXELS_UP_TOP = """
(id) => {
    const c = document.getElementById(id);
    const hex = getComputedStyle(document.documentElement).getPropertyValue('--c1').trim();
    const want = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
    const ctx = c.getContext('2d');
    const left = Math.ceil(50 * (window.devicePixelRatio || 1));
    const h = Math.floor(c.height * 0.5);
    const d = ctx.getImageData(left, 0, c.width - left, h).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) {
        const dist = Math.abs(d[i] - want[0]) + Math.abs(d[i + 1] - want[1])
            + Math.abs(d[i + 2] - want[2]);
        if (d[i + 3] > 200 && dist < 60) n++;
    }
    return n;
}
"""


def wait_until(page: Any, check: Any, timeout_ms: int = WAIT_MS) -> None:
    """Poll ``check()`` (something the page shows) until true. Not wait_for_function: that
    evaluates a string in the page, which the page's policy (no eval) refuses."""
    for _ in range(timeout_ms // 100):
        if check():
            return
        page.wait_for_timeout(100)
    assert check(), "the page never showed it"


def chart_went_up(page: Any, canvas: str) -> bool:
    return bool(page.evaluate(_SERIES_PIXELS_UP_TOP, canvas) > 20)


def row(page: Any, queue: str) -> Any:
    return page.locator(f'tr[data-queue="{queue}"]')


# ---- the overview ---------------------------------------------------------------------------


def test_a_queue_created_through_the_api_appears(tab: Page, srv: ServerProcess) -> None:
    page = tab.open(srv)
    expect(page.locator("#f-state")).to_have_text("live")
    expect(row(page, "default")).to_be_visible()
    queue = make_queue(srv, "appears")
    expect(row(page, queue)).to_be_visible()
    expect(row(page, queue).locator("td").nth(1)).to_have_text("0")
    expect(page.locator("#f-store")).to_have_text("memory")
    expect(page.locator("#f-version")).to_have_text("0.1.0")
    expect(page.locator("#f-memory")).to_contain_text("no limit")
    tab.shot("overview")
    # Deleted through the API: its row goes.
    assert request(srv, "DELETE", f"/v1/queues/{queue}").status == 204
    expect(row(page, queue)).to_have_count(0)


def test_nothing_is_loaded_from_elsewhere(tab: Page, srv: ServerProcess) -> None:
    """The page works with the network cut: every request it makes goes to its server."""
    urls: list[str] = []
    tab.page.on("request", lambda req: urls.append(req.url))
    queue = make_queue(srv, "offline")
    page = tab.open(srv, f"#/queue/{queue}")
    expect(page.locator("#peek-note")).to_have_text("no message available")
    page.locator(".back").click()
    expect(row(page, queue)).to_be_visible()
    assert urls and all(url.startswith(srv.url + "/") for url in urls), urls
    assert {u.split("?")[0] for u in urls} >= {
        srv.url + "/",
        srv.url + "/static/app.js",
        srv.url + "/static/app.css",
        srv.url + "/v1/events",
    }


def test_publishing_moves_the_depth_and_the_chart(tab: Page, srv: ServerProcess) -> None:
    page = tab.open(srv)
    queue = make_queue(srv, "depth")
    expect(row(page, queue)).to_be_visible()
    ready = row(page, queue).locator("td").nth(1)
    expect(ready).to_have_text("0")
    # A line at zero: nothing of the series' colour in the chart's upper half.
    page.wait_for_timeout(1200)  # a few points of history at zero
    assert page.evaluate(_SERIES_PIXELS_UP_TOP, "chart-depth") == 0
    publish_batch(srv, queue, [f"m{i}" for i in range(7)])
    expect(ready).to_have_text("7")
    expect(page.locator("#legend-depth output").first).to_have_text("7")
    wait_until(page, lambda: chart_went_up(page, "chart-depth"))
    # Publishes keep coming: the publish rate shows up in the table and its chart.
    for _ in range(3):
        publish_batch(srv, queue, ["x"] * 200)
    expect(ready).to_have_text("607")
    expect(row(page, queue).locator("td").nth(4)).not_to_have_text("0/s")
    wait_until(page, lambda: chart_went_up(page, "chart-rates"))
    tab.shot("depth")


def test_big_numbers_are_formatted_and_nothing_moves(tab: Page, srv: ServerProcess) -> None:
    page = tab.open(srv)
    queue = make_queue(srv, "big")
    cells = row(page, queue).locator("td")
    expect(cells.nth(1)).to_have_text("0")
    headers = page.locator("#queues thead th")
    before = [headers.nth(i).bounding_box() for i in range(headers.count())]
    table_before = page.locator("#queues").bounding_box()
    for _ in range(13):  # 12,350 messages
        publish_batch(srv, queue, ["b"] * 950)
    expect(cells.nth(1)).to_have_text("12.3k")
    after = [headers.nth(i).bounding_box() for i in range(headers.count())]
    assert after == before, "the columns moved when the numbers grew"
    assert page.locator("#queues").bounding_box() == table_before
    assert page.locator("#f-memory").inner_text().endswith("(no limit)")
    assert "KiB" in page.locator("#f-memory").inner_text()


def test_filter_and_sort_many_queues(tab: Page, srv: ServerProcess) -> None:
    names = [f"many-{i:03d}" for i in range(150)] + [f"other-{i:03d}" for i in range(50)]
    for name in names:
        assert request(srv, "PUT", f"/v1/queues/{name}", body="{}").status == 201
    publish_batch(srv, "other-007", ["x"] * 5)
    page = tab.open(srv)
    expect(page.locator("#shown")).to_have_text("201 queues")
    page.locator("#filter").fill("other-0")
    expect(page.locator("#shown")).to_have_text("50 of 201 queues")
    expect(page.locator("#queue-rows tr:visible")).to_have_count(50)
    # Sort by Ready, biggest first: other-007 (5 messages) comes first.
    page.locator('#queues th[data-key="ready"] button').click()
    expect(page.locator('#queues th[data-key="ready"]')).to_have_attribute(
        "aria-sort", "descending"
    )
    expect(page.locator("#queue-rows tr:visible").first).to_have_attribute(
        "data-queue", "other-007"
    )
    page.locator("#filter").fill("no-such-queue")
    expect(page.locator("#no-queues")).to_be_visible()


def test_keyboard_reaches_everything(tab: Page, srv: ServerProcess) -> None:
    queue = make_queue(srv, "keys")
    page = tab.open(srv)
    expect(row(page, queue)).to_be_visible()
    # Tab order: skip link, title link, filter box, ...
    page.keyboard.press("Tab")
    expect(page.locator(".skip").first).to_be_focused()
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    expect(page.locator("#filter")).to_be_focused()
    page.keyboard.type(queue[:10])
    expect(page.locator("#queue-rows tr:visible")).to_have_count(1)
    # Tab on to the queue's link (past the create form and the sort buttons) and open it.
    for _ in range(20):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.closest('#queue-rows') !== null"):
            break
    expect(page.locator(f'#queue-rows a[href="#/queue/{queue}"]')).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#q-name")).to_have_text(queue)
    # A dialog is keyboard driven: Escape cancels it.
    page.locator("#purge").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#confirm")).to_be_visible()
    expect(page.locator("#confirm-cancel")).to_be_focused()
    page.keyboard.press("Escape")
    expect(page.locator("#confirm")).to_be_hidden()


def test_a_phone_width_needs_no_sideways_scrolling(tab: Page, srv: ServerProcess) -> None:
    make_queue(srv, "a-rather-long-queue-name-that-must-not-widen-the-page")
    page = tab.page
    page.set_viewport_size({"width": 390, "height": 844})
    tab.open(srv)
    expect(page.locator("#f-state")).to_have_text("live")
    expect(page.locator("#queue-rows tr")).to_have_count(2)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page is {width} px wide on a 390 px screen"
    assert page.locator('#queues th[data-key="delayed"]').is_hidden()  # less needed columns go
    tab.shot("phone")
    # A queue's page too.
    page.locator("#queue-rows a").first.click()
    expect(page.locator("#attr-form")).to_be_visible()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the queue page is {width} px wide on a 390 px screen"
    tab.shot("phone-queue")
    page.set_viewport_size({"width": 1280, "height": 860})


# ---- a queue's page -----------------------------------------------------------------------


def test_peek_then_purge_with_confirmation(tab: Page, srv: ServerProcess) -> None:
    queue = make_queue(srv, "purge")
    for i in range(3):
        publish(srv, queue, f"message number {i}")
    page = tab.open(srv, f"#/queue/{queue}")
    expect(page.locator("#q-name")).to_have_text(queue)
    items = page.locator("#peek-list li")
    expect(items).to_have_count(3)
    expect(items.first.locator("pre")).to_have_text("message number 0")
    expect(items.first.locator(".meta")).to_contain_text("received 0 times")
    expect(page.locator("#q-ready")).to_have_text("3")
    # Peeking leased nothing.
    assert request(srv, "GET", f"/v1/queues/{queue}").json()["counts"]["leased"] == 0
    # Cancel first: nothing happens.
    page.locator("#purge").click()
    dialog = page.locator("#confirm")
    expect(dialog).to_be_visible()
    expect(page.locator("#confirm-text")).to_contain_text("all 3 messages")
    tab.shot("confirm", full_page=False)
    page.locator("#confirm-cancel").click()
    expect(dialog).to_be_hidden()
    assert request(srv, "GET", f"/v1/queues/{queue}").json()["counts"]["ready"] == 3
    # Then confirm.
    page.locator("#purge").click()
    page.locator("#confirm-ok").click()
    expect(page.locator("#action-note")).to_have_text("Purged 3 messages.")
    expect(page.locator("#q-ready")).to_have_text("0")
    expect(items).to_have_count(0)
    expect(page.locator("#peek-note")).to_have_text("no message available")
    assert request(srv, "GET", f"/v1/queues/{queue}").json()["counts"]["ready"] == 0


def test_a_script_in_a_body_is_shown_as_text(tab: Page, srv: ServerProcess) -> None:
    queue = make_queue(srv, "xss")
    body = (
        '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
        "<b>bold?</b> & &amp; \u00e9\u6f22"
    )
    publish(srv, queue, body)
    page = tab.open(srv, f"#/queue/{queue}")
    pre = page.locator("#peek-list li pre")
    expect(pre).to_have_text(body)
    assert page.locator("#peek-list img, #peek-list script, #peek-list b").count() == 0
    assert page.evaluate("window.__pwned") is None
    tab.shot("script-body")


def test_a_long_body_is_truncated(tab: Page, srv: ServerProcess) -> None:
    queue = make_queue(srv, "long")
    publish(srv, queue, "y" * 5000)
    page = tab.open(srv, f"#/queue/{queue}")
    pre = page.locator("#peek-list li pre")
    expect(pre).to_contain_text("(3000 more characters)")
    assert len(pre.inner_text()) < 2100


def test_publish_edit_attributes_and_delete_from_the_page(tab: Page, srv: ServerProcess) -> None:
    dlq = make_queue(srv, "dlq")
    queue = make_queue(srv, "work")
    page = tab.open(srv, f"#/queue/{queue}")
    expect(page.locator("#a-visibility")).to_have_value("30")
    # Publish a test message (confirmed).
    page.locator("#publish-body").fill("hello from the page")
    page.locator("#publish-form button[type=submit]").click()
    expect(page.locator("#confirm")).to_be_visible()
    page.locator("#confirm-ok").click()
    expect(page.locator("#action-note")).to_contain_text("Published message")
    expect(page.locator("#peek-list li pre")).to_have_text("hello from the page")
    # Attributes: a dead-letter queue after 3 receives, a shorter visibility timeout.
    page.locator("#a-visibility").fill("12.5")
    page.locator("#a-max-receives").fill("3")
    page.locator("#a-dlq").fill(dlq)
    page.locator("#attr-form button[type=submit]").click()
    expect(page.locator("#attr-note")).to_have_text("Saved.")
    attributes = request(srv, "GET", f"/v1/queues/{queue}").json()["attributes"]
    assert attributes["visibility_timeout"] == 12.5
    assert attributes["max_receives"] == 3
    assert attributes["dead_letter_queue"] == dlq
    # The dead-letter link, and back from the dead-letter queue's page.
    expect(page.locator("#dl-to a")).to_have_text(dlq)
    page.locator("#dl-to a").click()
    expect(page.locator("#q-name")).to_have_text(dlq)
    expect(page.locator("#dl-from a")).to_have_text(queue)
    # A refused change shows the API's message.
    page.locator("#a-visibility").fill("-1")
    page.locator("#attr-form button[type=submit]").click()
    expect(page.locator("#attr-note")).to_contain_text("visibility_timeout")
    # Delete (confirmed) the work queue: back to the overview, its row gone.
    page.locator("#dl-from a").click()
    expect(page.locator("#q-name")).to_have_text(queue)
    page.locator("#delete").click()
    page.locator("#confirm-ok").click()
    expect(page.locator("#overview")).to_be_visible()
    expect(row(page, queue)).to_have_count(0)
    assert request(srv, "GET", f"/v1/queues/{queue}").status == 404


def test_dead_letter_sources_are_found_past_the_first_page(tab: Page, srv: ServerProcess) -> None:
    """The back-links read every page of ``GET /v1/queues`` (1000 queues a page)."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    try:
        for i in range(1000):
            conn.request("PUT", f"/v1/queues/aaa-{i:04d}", body=b"{}")
            assert conn.getresponse().read()
        conn.request("PUT", "/v1/queues/target", body=b"{}")
        resp = conn.getresponse()
        assert resp.status == 201, resp.read()
        resp.read()
        body = json.dumps({"max_receives": 2, "dead_letter_queue": "target"})
        conn.request("PUT", "/v1/queues/zzz-source", body=body.encode())
        resp = conn.getresponse()
        assert resp.status == 201, resp.read()
        resp.read()
    finally:
        conn.close()
    page = tab.open(srv, "#/queue/target")
    expect(page.locator("#dl-from a")).to_have_text("zzz-source")


def test_create_a_queue_from_the_page(tab: Page, srv: ServerProcess) -> None:
    page = tab.open(srv)
    page.locator("#create-name").fill("made-by-hand")
    page.locator("#create-form button").click()
    expect(page.locator("#q-name")).to_have_text("made-by-hand")
    assert request(srv, "GET", "/v1/queues/made-by-hand").status == 200


# ---- connection trouble ---------------------------------------------------------------------


def test_falls_back_to_polling_without_a_stream(tab: Page, srv: ServerProcess) -> None:
    page = tab.page
    # Whatever is between us and the server breaks streams (a buffering proxy, say).
    page.route(
        "**/v1/events",
        lambda route: route.abort() if "once=" not in route.request.url else route.continue_(),
    )
    queue = make_queue(srv, "poll")
    tab.open(srv)
    expect(page.locator("#f-state")).to_have_text("polling")
    expect(page.locator("#banner")).to_be_hidden()
    publish_batch(srv, queue, ["p"] * 4)
    expect(row(page, queue).locator("td").nth(1)).to_have_text("4")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_banner_says_when_the_server_is_unreachable(tab: Page) -> None:
    port = _free_port()
    first = ServerProcess(port=port).start()
    try:
        page = tab.open(first)
        expect(page.locator("#f-state")).to_have_text("live")
        expect(page.locator("#banner")).to_be_hidden()
    finally:
        first.stop()
    banner = page.locator("#banner")
    expect(banner).to_be_visible(timeout=20_000)
    expect(banner).to_contain_text("unreachable")
    expect(page.locator("#f-state")).to_have_text("unreachable")
    tab.shot("unreachable", full_page=False)
    # Failed fetches are logged by the browser as errors; they are expected here.
    tab.errors.clear()
    with _server_on(port) as second:
        queue = make_queue(second, "back")
        expect(banner).to_be_hidden(timeout=30_000)
        expect(row(page, queue)).to_be_visible(timeout=30_000)


class _server_on:
    """A server on a given port (the page reconnects to the address it was loaded from)."""

    def __init__(self, port: int) -> None:
        self.srv = ServerProcess(port=port)

    def __enter__(self) -> ServerProcess:
        return self.srv.start()

    def __exit__(self, *exc: object) -> None:
        self.srv.stop()


# ---- access control -------------------------------------------------------------------------


def test_a_401_asks_for_a_token_and_sends_it(tab: Page, srv: ServerProcess) -> None:
    """The page's side of access control, against a stand-in: every API call answers 401
    unless it carries ``Authorization: Bearer s3cret`` (the real check is the next test)."""
    page = tab.page
    seen: list[str] = []

    def guard(route: Any) -> None:
        auth = route.request.headers.get("authorization")
        seen.append(auth or "")
        if auth != "Bearer s3cret":
            route.fulfill(
                status=401,
                headers={"WWW-Authenticate": "Bearer", "Content-Type": "application/json"},
                body='{"error":{"code":"unauthorized","message":"a token is required"}}',
            )
        else:
            route.continue_()

    page.route("**/v1/**", guard)
    tab.open(srv)
    dialog = page.locator("#token-dialog")
    expect(dialog).to_be_visible()
    tab.shot("token", full_page=False)
    # Cancelled: the page says what it needs instead of asking again and again.
    page.locator("#token-cancel").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#banner")).to_contain_text("needs an access token")
    expect(page.locator("#f-state")).to_have_text("refused")
    page.wait_for_timeout(2500)  # a poll or two: still no dialog
    expect(dialog).to_be_hidden()
    # The header's button asks for it.
    page.locator("#token-button").click()
    expect(dialog).to_be_visible()
    page.locator("#token-input").fill("s3cret")
    page.keyboard.press("Enter")
    expect(dialog).to_be_hidden()
    expect(page.locator("#f-state")).to_have_text("live")
    expect(page.locator("#banner")).to_be_hidden()
    assert "Bearer s3cret" in seen
    assert page.evaluate("sessionStorage.getItem('wonderq.token')") == "s3cret"
    # The 401s are logged by the browser as failed loads; they are expected here.
    tab.errors.clear()


def _has_auth_file_flag() -> bool:
    from _server import server_command

    out = subprocess.run(
        [*server_command(), "serve", "--help"], capture_output=True, text=True, timeout=30
    ).stdout
    return "--auth-file" in out


def test_the_page_obeys_real_access_control(tab: Page, tmp_path: Path) -> None:
    """With ``--auth-file``: the page and its files load without a token, the stream asks
    for one, a token without ``admin`` sees the counters but not the messages (the 403 is
    shown), and a token with it, entered from the header, does everything."""
    if not _has_auth_file_flag():
        pytest.skip("access control (--auth-file) has not landed in this build")
    viewer, ops = "viewer-token-0123456789", "ops-token-0123456789abcdef"
    auth = tmp_path / "auth.toml"
    auth.write_text(
        f'[tokens.viewer]\ntoken = "{viewer}"\nrights = ["metrics"]\n\n'
        f'[tokens.ops]\ntoken = "{ops}"\nrights = ["publish", "consume", "admin", "metrics"]\n'
    )
    with running_server("--auth-file", str(auth)) as srv:
        as_ops = {"Authorization": f"Bearer {ops}"}
        resp = request(srv, "PUT", "/v1/queues/guarded", body="{}", headers=as_ops)
        assert resp.status == 201, resp.body
        resp = request(srv, "POST", "/v1/queues/guarded/messages", body="secret", headers=as_ops)
        assert resp.status == 201, resp.body
        page = tab.open(srv)
        expect(page.locator("#token-dialog")).to_be_visible()
        page.locator("#token-input").fill(viewer)
        page.keyboard.press("Enter")
        expect(page.locator("#f-state")).to_have_text("live")
        expect(row(page, "guarded").locator("td").nth(1)).to_have_text("1")
        # Counters yes, messages no: the viewer has no admin right.
        row(page, "guarded").locator("a").click()
        expect(page.locator("#peek-note")).to_contain_text("Not allowed with this token")
        expect(page.locator("#peek-list li")).to_have_count(0)
        tab.shot("forbidden")
        # Another token, from the header: now peek and purge work.
        page.locator("#token-button").click()
        page.locator("#token-input").fill(ops)
        page.keyboard.press("Enter")
        expect(page.locator("#peek-list li pre")).to_have_text("secret")
        page.locator("#purge").click()
        page.locator("#confirm-ok").click()
        expect(page.locator("#action-note")).to_have_text("Purged 1 message.")
        expect(page.locator("#f-state")).to_have_text("live")
        assert page.evaluate("sessionStorage.getItem('wonderq.token')") == ops
        # The refused calls are logged by the browser as failed loads; expected here.
        tab.errors.clear()
