"""The status page: its static assets and the live event stream.

Everything here answers through the route table of :mod:`wonderq.api` (``GET /``,
``GET /static/{file}``, ``GET /v1/events``), whose handlers delegate to :class:`StatusPage`
in one line each. The page itself (``static/``) is plain HTML, CSS and JavaScript that
reads the JSON API like any client (its queue view uses ``GET /v1/queues/{queue}/peek``),
so it holds no logic the API lacks; docs/STATUS.md describes it.

Assets are read once, when the API is built, and answered from memory with a strong ETag
(a hash of the content), ``If-None-Match`` -> 304, ``Cache-Control: no-cache`` (kept, but
revalidated on each use: a server upgrade is seen at the next load) and, on the page, a
Content-Security-Policy that allows scripts, styles and connections from this origin only,
with no inline code and Trusted Types on, so no message body can ever run as script.

The event stream computes one snapshot per second for all its subscribers together (never
per client) and writes the same bytes to each; with nobody subscribed its timer stops. A
client that does not read skips events rather than making the server buffer them, and one
that has not read for :data:`STALLED_TICKS` seconds is disconnected.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import __version__
from ._core import now_ms
from .errors import NotFound
from .params import parse_query
from .request import JSON_HEADERS, Request, Response

__all__ = ["COLUMNS", "CSP", "EventStream", "StatusPage", "chain_cancel", "read_store"]

STATIC_DIR = Path(__file__).with_name("static")

log = logging.getLogger("wonderq.statuspage")

# The page's Content-Security-Policy: nothing but this origin's own files, no inline script
# or style, no eval, no plugins, no framing, no <base>, no form posts; Trusted Types make
# assigning a string to innerHTML (and the like) an error, so every text goes in as text.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; "
    "require-trusted-types-for 'script'; trusted-types 'none'"
)

_TEXT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
    ".png": "image/png",
}

# Every asset: revalidated by ETag on each use, never sniffed as another type.
_ASSET_HEADERS = b"Cache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\n"
# The page adds its policy and refuses to be framed or to leak its address.
_PAGE_HEADERS = (
    b"Content-Security-Policy: "
    + CSP.encode("ascii")
    + b"\r\nX-Frame-Options: DENY\r\nReferrer-Policy: no-referrer\r\n"
)

# The event stream (RFC: HTML Living Standard, "Server-sent events"): never stored or
# transformed on the way (no-store comes from the protocol's common headers).
_EVENT_HEADERS = (
    b"Content-Type: text/event-stream; charset=utf-8\r\nX-Accel-Buffering: no\r\n"
    b"X-Content-Type-Options: nosniff\r\n"
)
# Sent first: how long an EventSource waits before reconnecting, and a comment that makes
# the head and the first bytes leave at once.
_STREAM_PREAMBLE = b"retry: 2000\n: wonderq events\n\n"

# Seconds between snapshots, and how many of them a subscriber may miss in a row (its
# client not reading) before it is disconnected.
TICK_S = 1.0
STALLED_TICKS = 30

# The counters of each queue in the snapshot, in the order of Broker.stats() rows.
COLUMNS = (
    "name",
    "ready",
    "leased",
    "delayed",
    "published",
    "delivered",
    "deleted",
    "expired",
    "dead_lettered",
)


class Asset:
    """One file of ``static/`` held in memory with its two prebuilt answers."""

    __slots__ = ("etag", "not_modified", "ok")

    def __init__(self, body: bytes, content_type: str, extra_headers: bytes) -> None:
        import hashlib  # here, not at start-up: the assets load on the page's first request

        # A strong validator: the same bytes always give the same tag (RFC 9110 8.8.3).
        self.etag = b'"' + hashlib.sha256(body).hexdigest()[:32].encode("ascii") + b'"'
        cache = b"ETag: " + self.etag + b"\r\n" + _ASSET_HEADERS
        self.ok: Response = (
            200,
            body,
            b"Content-Type: " + content_type.encode("ascii") + b"\r\n" + cache + extra_headers,
        )
        # RFC 9110 15.4.5: a 304 repeats ETag and Cache-Control, and no content metadata.
        self.not_modified: Response = (304, b"", cache)

    def answer(self, req: Request) -> Response:
        """200 with the body, or 304 when the request's ``If-None-Match`` names our tag."""
        tags: bytes | None = getattr(req, "if_none_match", None)
        if tags is not None and _matches(tags, self.etag):
            return self.not_modified
        return self.ok


def _matches(if_none_match: bytes, etag: bytes) -> bool:
    """RFC 9110 13.1.2: ``*`` or a list of entity tags, compared weakly (``W/`` ignored)."""
    value = if_none_match.strip()
    if value == b"*":
        return True
    for tag in value.split(b","):
        tag = tag.strip()
        if tag.startswith(b"W/"):
            tag = tag[2:]
        if tag == etag:
            return True
    return False


def load_assets(directory: Path = STATIC_DIR) -> dict[str, Asset]:
    """Every file of ``directory`` by name (not recursive: the page is flat)."""
    assets: dict[str, Asset] = {}
    for path in sorted(directory.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        content_type = _TEXT_TYPES.get(path.suffix)
        if content_type is None:
            import mimetypes

            guessed = mimetypes.guess_type(path.name)[0]
            content_type = guessed or "application/octet-stream"
        extra = _PAGE_HEADERS if path.suffix == ".html" else b""
        assets[path.name] = Asset(path.read_bytes(), content_type, extra)
    return assets


def read_store(store: Any) -> dict[str, Any]:
    """What the page shows about the store (``wonderq.store.Store``), read in this one
    place: its kind, memory used and limit (None: no ``--max-memory``), and one row per
    queue in :data:`COLUMNS` order. ``stats()`` is never deferred (a networked store answers
    from a cache), so the snapshot is always ready at once."""
    return {
        "store": store.kind,
        "memory": {"used": store.memory_bytes(), "limit": store.memory_limit() or None},
        "queues": store.stats(),
    }


class EventStream:
    """``GET /v1/events``: one snapshot a second, fanned out to every subscriber.

    A subscriber is a request whose connection streams (``conn.start_stream``); the protocol
    tells us it is gone through the router's cancel hook (see :func:`chain_cancel`) ->
    :meth:`cancel`.
    """

    def __init__(self, store: Any, started: float) -> None:
        self._store = store
        self._started = started  # time.monotonic() when the server started
        self._subscribers: dict[Request, int] = {}  # -> snapshots missed in a row
        self._timer: asyncio.TimerHandle | None = None
        self._next_at = 0.0  # loop time of the next tick
        self.seq = 0  # snapshots computed so far (each is sent to every subscriber)
        self._payload = b""  # the latest snapshot (JSON)
        self._payload_at = -TICK_S  # time.monotonic() when it was made
        self._event = b""  # ... as one server-sent event
        self._failing = False  # the last tick's snapshot failed (logged once)

    @property
    def subscribers(self) -> int:
        """Open streams."""
        return len(self._subscribers)

    def snapshot(self) -> bytes:
        """The counters of every queue and of the server as JSON: the stream's payload."""
        self.seq += 1
        doc = read_store(self._store)
        doc.update(
            seq=self.seq,
            t=now_ms(),  # monotonic ms: rates are deltas of totals over deltas of this
            time=int(time.time() * 1000),
            uptime_s=round(time.monotonic() - self._started, 3),
            version=__version__,
            columns=COLUMNS,
        )
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    def latest(self) -> bytes:
        """The latest snapshot, made anew only if it is a tick old: however many clients
        poll or subscribe, the store is read at most about once a second."""
        now = time.monotonic()
        if now - self._payload_at >= TICK_S:
            self._payload = self.snapshot()
            self._payload_at = now
            self._event = b"id: %d\ndata: " % self.seq + self._payload + b"\n\n"
        return self._payload

    def once(self) -> Response:
        """One snapshot as plain JSON (``?once=1``): the page's fallback when it cannot
        hold a stream open, and a handy probe."""
        return (200, self.latest(), JSON_HEADERS)

    def subscribe(self, req: Request) -> None:
        """Start the stream of ``req``; it receives the latest snapshot at once, then each
        new one."""
        # First the snapshot (the one the timer made, or a fresh one when nobody was
        # subscribed): if the store fails, the answer is still a plain error, not a stream.
        self.latest()
        if not req.conn.start_stream(req, 200, _EVENT_HEADERS):
            return
        req.deferred = self
        if self._timer is None:
            self._next_at = asyncio.get_running_loop().time()
            self._schedule()
        self._subscribers[req] = 0
        req.conn.send_stream(req, _STREAM_PREAMBLE + self._event)

    def cancel(self, req: Request) -> None:
        """The stream of ``req`` ended (client gone, server stopping): forget it."""
        self._subscribers.pop(req, None)
        if not self._subscribers:
            self._stop()

    def close(self) -> None:
        """End every stream (the server is stopping)."""
        for req in list(self._subscribers):
            req.conn.end_stream(req)
        self._subscribers.clear()
        self._stop()

    def _stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        self._timer = None
        if not self._subscribers:
            return
        self._payload_at = -TICK_S  # a tick's snapshot is always new
        try:
            self.latest()
        except Exception:
            # A store that cannot answer now (a backend away): skip this tick, keep the
            # streams; their clients see no event and fall back to polling, which says why.
            if not self._failing:
                log.exception("the status page's snapshot failed (logged once until it works)")
            self._failing = True
            self._schedule()
            return
        self._failing = False
        event = self._event
        subscribers = self._subscribers
        for req in list(subscribers):
            conn = req.conn
            if conn.send_stream(req, event):
                subscribers[req] = 0
            elif conn.closed:
                subscribers.pop(req, None)
            else:
                missed = subscribers[req] = subscribers[req] + 1
                if missed >= STALLED_TICKS:
                    # Its buffer is full and it does not read: a polite end would wait
                    # behind that buffer, so cut the connection.
                    subscribers.pop(req, None)
                    conn.abort()
        if subscribers:
            self._schedule()

    def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        # Fixed steps from the first tick, so the period does not drift; skip missed ones.
        self._next_at += TICK_S
        if self._next_at <= now:
            self._next_at = now + TICK_S
        self._timer = loop.call_at(self._next_at, self._tick)


def chain_cancel(
    events: EventStream, other: Callable[[Request], None]
) -> Callable[[Request], None]:
    """The router's cancel hook: a closed event stream goes to ``events``, any other
    deferred request to ``other`` (the long polls)."""

    def cancel(req: Request) -> None:
        if req.deferred is events:
            events.cancel(req)
        else:
            other(req)

    return cancel


class StatusPage:
    """The handlers behind the status page's routes (see the module docstring)."""

    def __init__(self, store: Any, assets: dict[str, Asset] | None = None) -> None:
        # Loaded on the first request for the page (hashlib with OpenSSL's _hashlib is ~0.8 MB
        # of resident memory that a server whose page is never opened does not need).
        self._assets = assets
        self.events = EventStream(store, time.monotonic())

    @property
    def assets(self) -> dict[str, Asset]:
        """The files of ``static/`` by name, read on first use."""
        if self._assets is None:
            self._assets = load_assets()
        return self._assets

    def page(self, req: Request) -> Response:
        """``GET /``: the page, unless the query has ``Action`` (the Amazon SQS query
        protocol, which is not the page's to answer)."""
        if req.query and "Action" in parse_query(req.query):
            raise NotFound("GET / with Action is the Amazon SQS query protocol")
        return self.assets["index.html"].answer(req)

    def asset(self, req: Request) -> Response:
        """``GET /static/{file}``: one of the page's files (only those of ``static/``)."""
        name: str = req.params["file"]  # type: ignore[index]
        asset = self.assets.get(name)
        if asset is None:
            raise NotFound(f"no static file {name[:100]!r}")
        return asset.answer(req)

    def stream(self, req: Request) -> Response | None:
        """``GET /v1/events``: the server-sent events (``?once=1``: one snapshot as JSON)."""
        if req.query and "once" in parse_query(req.query):
            return self.events.once()
        self.events.subscribe(req)
        return None
