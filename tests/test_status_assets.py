"""The status page over HTTP, without a browser: the page and its assets (content types,
ETag and 304, Cache-Control, the Content-Security-Policy, nothing from elsewhere) and the
event stream (server-sent events framing, one snapshot for every subscriber, the end of a
stream when its client goes or the server stops), through the real server and raw sockets.
The stream's fan-out is also checked in-process, with a store that counts its reads."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import re
import signal
import socket
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from _server import (
    Response,
    ServerProcess,
    check_error,
    get,
    make_queue,
    request,
    running_server,
)

from wonderq import statuspage

pytestmark = pytest.mark.timeout(60)

STATIC = Path(statuspage.__file__).with_name("static")


@pytest.fixture(scope="module")
def srv() -> Any:
    with running_server() as server:
        yield server


# ---- the page and its assets ----------------------------------------------------------------


def header_values(resp: Any, name: str) -> list[str]:
    return resp.headers.get_all(name) or []


def fetch(srv: ServerProcess, path: str, headers: dict[str, str] | None = None) -> Response:
    """GET on a fresh connection, for the page and its assets: they carry their own
    Cache-Control (revalidated by ETag) instead of the API's no-store, so _server.get's
    check does not apply; the rest of it does."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        result = Response(resp.status, resp.headers, resp.read())
    finally:
        conn.close()
    assert result.headers.get("Date")
    if result.status == 304:
        assert result.body == b"" and "Content-Length" not in result.headers
    else:
        assert int(result.headers["Content-Length"]) == len(result.body)
    return result


def test_the_page_is_html_with_a_strict_policy(srv: ServerProcess) -> None:
    resp = fetch(srv, "/")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
    csp = resp.headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'"
    for name in ("script-src", "style-src", "connect-src", "img-src"):
        assert directives[name] == "'self'", name  # no 'unsafe-inline', no eval, no CDN
    assert directives["frame-ancestors"] == "'none'"
    assert directives["base-uri"] == "'none'"
    assert directives["require-trusted-types-for"] == "'script'"
    assert "unsafe" not in csp
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    # Revalidated, not never stored: exactly one Cache-Control, ours.
    assert header_values(resp, "Cache-Control") == ["no-cache"]
    assert b"<title>WonderQ status</title>" in resp.body


class _Inline(HTMLParser):
    """Finds what a strict policy would block: inline scripts, styles, handlers, and
    anything loaded from another origin."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self.refs: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "style":
            self.problems.append("<style> element")
        if tag == "script":
            if not values.get("src"):
                self.problems.append("inline <script>")
            self._in_script = True
        for name, value in attrs:
            if name == "style" or name.startswith("on"):
                self.problems.append(f"{name}= on <{tag}>")
            if name in ("src", "href") and value:
                if value.startswith("#"):
                    continue
                if "//" in value or value.startswith("data:") or value.startswith("javascript:"):
                    self.problems.append(f"{name}={value}")
                self.refs.append(value)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.problems.append("inline script text")


def test_the_page_has_nothing_inline_and_nothing_from_elsewhere(srv: ServerProcess) -> None:
    parser = _Inline()
    parser.feed(fetch(srv, "/").body.decode())
    assert parser.problems == []
    assert set(parser.refs) == {"/static/app.js", "/static/app.css", "/static/favicon.svg"}
    for ref in parser.refs:
        assert fetch(srv, ref).status == 200, ref
    # No other origin anywhere in the shipped files (an SVG's xmlns names, never loads).
    for path in STATIC.iterdir():
        text = path.read_text("utf-8")
        text = text.replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert re.search(r"https?://", text) is None, path.name


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("app.js", "text/javascript; charset=utf-8"),
        ("app.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
    ],
)
def test_assets_have_types_etags_and_304(srv: ServerProcess, name: str, content_type: str) -> None:
    resp = fetch(srv, f"/static/{name}")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == content_type
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert header_values(resp, "Cache-Control") == ["no-cache"]
    assert resp.body == (STATIC / name).read_bytes()
    etag = resp.headers["ETag"]
    # Strong, and derived from the content: the same bytes give the same tag.
    assert etag == '"' + hashlib.sha256(resp.body).hexdigest()[:32] + '"'
    for if_none_match in (etag, f'"other", {etag}', f"W/{etag}", "*"):
        again = fetch(srv, f"/static/{name}", headers={"If-None-Match": if_none_match})
        assert again.status == 304, if_none_match
        assert again.body == b""
        assert again.headers["ETag"] == etag
        assert header_values(again, "Cache-Control") == ["no-cache"]
        assert "Content-Type" not in again.headers
    changed = fetch(srv, f"/static/{name}", headers={"If-None-Match": '"stale"'})
    assert changed.status == 200 and changed.body == resp.body


def test_the_page_answers_304_too(srv: ServerProcess) -> None:
    etag = fetch(srv, "/").headers["ETag"]
    assert fetch(srv, "/", headers={"If-None-Match": etag}).status == 304


def test_304_keeps_the_connection_usable(srv: ServerProcess) -> None:
    etag = fetch(srv, "/static/app.css").headers["ETag"]
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        sock.sendall(
            b"GET /static/app.css HTTP/1.1\r\nHost: t\r\nIf-None-Match: "
            + etag.encode()
            + b"\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
        )
        data = b""
        while not data.endswith(b'{"status":"ok"}'):
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
    first, _, rest = data.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 304 ")
    assert b"Content-Length" not in first
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n")


@pytest.mark.parametrize(
    "path", ["/static/nope.js", "/static/..%2Fapi.py", "/static/index.html.bak", "/static/.x"]
)
def test_unknown_assets_are_404(srv: ServerProcess, path: str) -> None:
    check_error(get(srv, path), 404)


def test_get_root_with_action_is_not_the_page(srv: ServerProcess) -> None:
    """``GET /?Action=...`` is the Amazon SQS query protocol, never answered with the page."""
    resp = get(srv, "/?Action=ListQueues&Version=2012-11-05")
    assert resp.status != 200 or "text/html" not in resp.headers.get("Content-Type", "")


def test_the_package_ships_the_page() -> None:
    pyproject = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    assert '"static/*"' in pyproject
    assert {"index.html", "app.js", "app.css", "favicon.svg"} <= {p.name for p in STATIC.iterdir()}


# ---- the event stream -----------------------------------------------------------------------


class EventReader:
    """A raw HTTP/1.1 connection reading a chunked text/event-stream."""

    def __init__(self, port: int, request_line: bytes = b"GET /v1/events HTTP/1.1") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(request_line + b"\r\nHost: t\r\n\r\n")
        self.raw = b""
        self.body = b""  # de-chunked so far
        self.ended = False  # the last chunk came
        self.closed = False  # the server closed
        while b"\r\n\r\n" not in self.raw:
            self._recv()
        head, _, self.raw = self.raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.header_lines = lines[1:]
        self.headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}

    def _recv(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            self.closed = True
            raise EOFError
        self.raw += chunk

    def _dechunk(self) -> None:
        while not self.ended:
            line, sep, rest = self.raw.partition(b"\r\n")
            if not sep:
                return
            size = int(line, 16)
            if len(rest) < size + 2:
                return
            assert rest[size : size + 2] == b"\r\n", "a chunk must end in CRLF"
            if size == 0:
                self.ended = True
            self.body += rest[:size]
            self.raw = rest[size + 2 :]

    def events(self, n: int) -> list[dict[str, Any]]:
        """The first ``n`` events (id and parsed data)."""
        while True:
            blocks = [b for b in self.body.split(b"\n\n")[:-1] if b"\ndata: " in b"\n" + b]
            if len(blocks) >= n:
                break
            self._recv()
            self._dechunk()
        out = []
        for block in blocks[:n]:
            fields = dict(line.split(b": ", 1) for line in block.split(b"\n") if b": " in line)
            out.append({"id": int(fields[b"id"]), "data": json.loads(fields[b"data"])})
        return out

    def read_to_end(self) -> None:
        try:
            while True:
                self._recv()
                self._dechunk()
        except EOFError:
            self._dechunk()

    def close(self) -> None:
        self.sock.close()


def test_events_are_server_sent_events(srv: ServerProcess) -> None:
    reader = EventReader(srv.port)
    try:
        assert reader.status == 200
        assert reader.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert reader.headers["cache-control"] == "no-store"
        assert reader.headers["transfer-encoding"] == "chunked"
        assert reader.headers["connection"] == "close"
        assert "content-length" not in reader.headers
        first, second = reader.events(2)
        assert reader.body.startswith(b"retry: 2000\n")
        assert second["id"] == first["id"] + 1
        doc = second["data"]
        assert doc["columns"][:4] == ["name", "ready", "leased", "delayed"]
        assert ["default", 0, 0, 0, 0, 0, 0, 0, 0][:1] == [doc["queues"][0][0]]
        assert doc["store"] == "memory"
        assert doc["memory"]["limit"] is None and doc["memory"]["used"] >= 0
        assert doc["version"] and doc["uptime_s"] > 0
        # About a second apart (server monotonic ms): one snapshot a second.
        assert 500 <= second["data"]["t"] - first["data"]["t"] <= 3000
    finally:
        reader.close()


def test_events_follow_the_queues(srv: ServerProcess) -> None:
    reader = EventReader(srv.port)
    try:
        reader.events(1)
        queue = make_queue(srv, "ev")
        resp = request(srv, "POST", f"/v1/queues/{queue}/batch", body='["a","b","c"]')
        assert resp.status == 201
        for n in range(2, 12):  # the next events, one a second
            rows = {row[0]: row for row in reader.events(n)[-1]["data"]["queues"]}
            if queue in rows and rows[queue][1] == 3:
                break
        else:
            pytest.fail("the queue never showed up with its 3 messages")
        assert rows[queue][4] == 3  # published
    finally:
        reader.close()


def test_every_subscriber_gets_the_same_snapshot(srv: ServerProcess) -> None:
    readers = [EventReader(srv.port) for _ in range(3)]
    try:
        seen = [{e["id"]: e["data"] for e in r.events(3)} for r in readers]
        common = set(seen[0]) & set(seen[1]) & set(seen[2])
        assert common, seen
        for event_id in common:
            assert seen[0][event_id] == seen[1][event_id] == seen[2][event_id]
    finally:
        for r in readers:
            r.close()


def test_once_answers_one_snapshot_as_json(srv: ServerProcess) -> None:
    resp = get(srv, "/v1/events?once=1")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/json"
    doc = resp.json()
    assert "default" in [row[0] for row in doc["queues"]]


def test_snapshot_names_the_store_and_the_memory_limit(tmp_path: Path) -> None:
    with running_server("--data-dir", str(tmp_path / "data"), "--max-memory", "1048576") as s:
        doc = get(s, "/v1/events?once=1").json()
        assert doc["store"] == "durable"
        assert doc["memory"]["limit"] == 1048576


def test_http10_stream_ends_with_the_connection(srv: ServerProcess) -> None:
    reader = EventReader(srv.port, b"GET /v1/events HTTP/1.0")
    try:
        assert "transfer-encoding" not in reader.headers
        while b"\ndata: " not in reader.raw:
            reader._recv()
        assert reader.raw.startswith(b"retry: 2000\n")
    finally:
        reader.close()


def test_nothing_behind_a_stream_is_answered(srv: ServerProcess) -> None:
    reader = EventReader(
        srv.port, b"GET /v1/events HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz HTTP/1.1"
    )
    try:
        reader.events(2)
        assert b"HTTP/1.1" not in reader.raw + reader.body
    finally:
        reader.close()


def connections(srv: ServerProcess) -> float:
    text = get(srv, "/metrics").body.decode()
    return float(re.search(r"^wonderq_connections (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]


def test_closed_streams_are_let_go(srv: ServerProcess) -> None:
    before = connections(srv)
    readers = [EventReader(srv.port) for _ in range(8)]
    for r in readers:
        r.events(1)
    assert connections(srv) >= before + 8
    for r in readers:
        r.close()
    deadline = time.monotonic() + 10
    while connections(srv) > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert connections(srv) <= before
    # And the server is well: a new stream still gets its events.
    fresh = EventReader(srv.port)
    fresh.events(1)
    fresh.close()


def test_shutdown_ends_the_stream() -> None:
    server = ServerProcess().start()
    try:
        reader = EventReader(server.port)
        reader.events(1)
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        reader.read_to_end()
        assert reader.ended, "the stream must end with its last chunk"
        assert server.wait(10) == 0
        # Not held until the shutdown grace period (5 s) runs out.
        assert time.monotonic() - started < 4
    finally:
        server.stop()


# ---- in-process: one snapshot per tick for everyone -------------------------------------------


class CountingStore:
    kind = "memory"

    def __init__(self) -> None:
        self.reads = 0

    def stats(self) -> list[tuple[Any, ...]]:
        self.reads += 1
        return [("default", self.reads, 0, 0, 0, 0, 0, 0, 0)]

    def memory_bytes(self) -> int:
        return 0

    def memory_limit(self) -> int:
        return 0


class FakeConn:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed = False
        self.aborted = False
        self.writable = True

    def start_stream(self, req: Any, status: int, headers: bytes) -> bool:
        return True

    def send_stream(self, req: Any, data: bytes) -> bool:
        if not self.writable:
            return False
        self.sent.append(data)
        return True

    def end_stream(self, req: Any) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True


class FakeReq:
    def __init__(self) -> None:
        self.conn = FakeConn()
        self.deferred: Any = None
        self.query = ""


def test_one_snapshot_per_tick_for_all_subscribers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(statuspage, "TICK_S", 0.05)
    monkeypatch.setattr(statuspage, "STALLED_TICKS", 3)
    store = CountingStore()
    events = statuspage.EventStream(store, time.monotonic())

    async def scenario() -> None:
        reqs = [FakeReq() for _ in range(50)]
        for req in reqs:
            events.subscribe(req)  # type: ignore[arg-type]
        assert store.reads == 1  # the first made one; the others got it too
        for _ in range(20):  # pollers within the same tick share it as well
            assert events.once()[1] == events.once()[1]
        assert store.reads == 1
        slow = reqs[0]
        slow.conn.writable = False
        await asyncio.sleep(0.05 * 5.5)
        ticks = store.reads - 1
        assert 3 <= ticks <= 7
        for req in reqs[1:]:
            assert len(req.conn.sent) == 1 + ticks
            assert req.conn.sent[-1] == reqs[1].conn.sent[-1]  # the same bytes for all
        assert slow.conn.aborted  # did not read for STALLED_TICKS ticks
        assert events.subscribers == 49
        for req in reqs[1:]:
            events.cancel(req)  # type: ignore[arg-type]
        reads = store.reads
        await asyncio.sleep(0.05 * 3)
        assert store.reads == reads  # nobody listens: no more snapshots

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_a_failing_store_skips_ticks_and_recovers(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(statuspage, "TICK_S", 0.05)
    store = CountingStore()
    failing = {"on": False}
    real_stats = store.stats

    def stats() -> list[tuple[Any, ...]]:
        if failing["on"]:
            raise ConnectionError("backend away")
        return real_stats()

    store.stats = stats  # type: ignore[method-assign]
    events = statuspage.EventStream(store, time.monotonic())

    async def scenario() -> None:
        req = FakeReq()
        events.subscribe(req)  # type: ignore[arg-type]
        failing["on"] = True
        await asyncio.sleep(0.05 * 4.5)
        during = len(req.conn.sent)
        assert during == 1  # nothing sent while the store fails, the stream kept
        assert events.subscribers == 1
        failing["on"] = False
        await asyncio.sleep(0.05 * 3.5)
        assert len(req.conn.sent) > during  # and back when it answers
        events.cancel(req)  # type: ignore[arg-type]

    asyncio.run(asyncio.wait_for(scenario(), 10))
    failures = [r for r in caplog.records if "snapshot failed" in r.getMessage()]
    assert len(failures) == 1  # logged once, not once a tick
