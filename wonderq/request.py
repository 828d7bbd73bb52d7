# cython: language_level=3, annotation_typing=False
"""An HTTP request as the application sees it, and the split of a plain query string.

The connection (``wonderq.protocol``) makes a :class:`Request` of each complete message and
hands it to the application; the application answers with a :data:`Response`. Compiled with
Cython in pure-Python mode (``request.pxd``): the protocol fills the fields as C stores, and
the parameter checks call :func:`split_query` as a C call.
"""

from __future__ import annotations

import json
import time
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .protocol import HttpProtocol

__all__ = [
    "JSON_HEADERS",
    "Request",
    "Response",
    "error_response",
    "http_date",
    "refresh_date",
    "split_query",
]

#: ``(status, body, header_lines)``: header_lines are complete ``Name: value\r\n`` lines,
#: Content-Type included; the protocol adds the status line, Date, Server, Cache-Control,
#: Content-Length and Connection.
Response = tuple[int, bytes, bytes]


# ---- the head of an answer ------------------------------------------------------------------
# Built here, beside Response, so that the protocol and the error paths share one copy.

JSON_HEADERS = b"Content-Type: application/json\r\n"

# Precomputed status lines; we always answer as HTTP/1.1 (RFC 9112 section 2.3: a server
# sends its own highest minor version, the client's major version).
STATUS_LINES: dict[int, bytes] = {
    s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode("ascii")) for s in HTTPStatus
}
# What follows the Content-Length value: the Connection header if any, the blank line.
_CLOSE_TAIL = b"\r\nConnection: close\r\n\r\n"
_KEEP_ALIVE_TAIL = b"\r\nConnection: keep-alive\r\n\r\n"
_PLAIN_TAIL = b"\r\n\r\n"

# Date + Server + Cache-Control, the same for every response within a second; rebuilt by
# refresh_date(), which the server calls once a second from a loop timer.
_common_headers = b""
# Date + Server: for an answer whose own header lines carry ``Cache-Control: `` (the status
# page's assets, revalidated by ETag), which replaces our ``no-store``.
_date_headers = b""

# Response heads up to ``Content-Length: `` by header lines, then status; built on first use
# and dropped each second with the Date they contain.
_prefixes: dict[bytes, dict[int, bytes]] = {}

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

# ``<n>\r\n\r\n`` for the body lengths most answers have (ids, acks, one message): the hot
# path picks the end of its head here instead of formatting a number (about 90 KB).
_LENGTH_TAILS_MAX = 2048
_LENGTH_TAILS: tuple[bytes, ...] = tuple(b"%d\r\n\r\n" % n for n in range(_LENGTH_TAILS_MAX))


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(now_s: float | None = None) -> str:
    """``now_s`` (default: now) as an HTTP date, ``Sat, 05 Dec 2026 11:02:33 GMT`` (RFC 9110
    section 5.6.7, IMF-fixdate): what ``email.utils.formatdate(now_s, usegmt=True)`` writes,
    without importing the email package and datetime at start-up (~0.6 MB of resident memory
    in an idle server)."""
    t = time.gmtime(now_s)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


def refresh_date(now_s: float | None = None) -> None:
    """Rebuild the cached ``Date`` header (RFC 9110 section 6.6.1: one-second resolution)."""
    global _common_headers, _date_headers
    date = http_date(now_s).encode("ascii")
    _date_headers = b"Date: " + date + b"\r\nServer: wonderq\r\n"
    _common_headers = _date_headers + b"Cache-Control: no-store\r\n"
    _prefixes.clear()


def _head_start(status: int, headers: bytes) -> bytes:
    """Status line, Date, Server, Cache-Control (``no-store`` unless ``headers`` set their
    own), then ``headers``."""
    # find, not ``in``: ``bytes in bytes`` first tries the needle as an integer and formats
    # (then clears) a TypeError, ~1,800 instructions (callgrind) on every answer whose head
    # is not cached (the SQS face's, which carry a request id).
    common = _date_headers if headers.find(b"Cache-Control: ") >= 0 else _common_headers
    return STATUS_LINES[status] + common + headers


def _build_prefix(status: int, headers: bytes) -> bytes:
    prefix = _head_start(status, headers) + b"Content-Length: "
    if len(_prefixes) < 64:  # header lines are a few constants; never let odd ones pile up
        _prefixes.setdefault(headers, {})[status] = prefix
    return prefix


def _prefix(status: int, headers: bytes) -> bytes:
    """The cached head of an answer up to ``Content-Length: ``."""
    prefixes = _prefixes.get(headers)
    if prefixes is not None:
        prefix = prefixes.get(status)
        if prefix is not None:
            return prefix
    return _build_prefix(status, headers)


refresh_date()


def error_response(status: int, code: str, message: str, headers: bytes = b"") -> Response:
    """The JSON error shape of DESIGN.md: ``{"error": {"code": ..., "message": ...}}``."""
    body = json.dumps({"error": {"code": code, "message": message}}, separators=(",", ":")).encode(
        "utf-8"
    )
    return (status, body, JSON_HEADERS + headers)


class Request:
    """One parsed request. ``conn`` answers it later when ``dispatch`` deferred it.

    ``path`` and ``query`` are the raw (not percent-decoded) parts of the target, as latin-1
    text. ``params`` and ``route`` are for the application (path parameters, the route's
    metric label; a route whose only parameter is ``{queue}`` gets it in ``queue``
    instead), ``deferred`` holds its state while the request is parked; ``response`` is set
    only for an error the protocol found itself, answered in turn; ``echo_keep_alive`` when
    the client sent ``Connection: keep-alive``. ``authorization`` is the
    ``Authorization`` header (bytes) or None (a field, not an added attribute: access control
    reads it on every request). ``if_none_match`` is the ``If-None-Match`` header (bytes) and
    ``principal`` the SQS face's verified AWS principal, each None unless set; read them with
    ``getattr(req, name, None)``, as a request made by ``_new_request`` uncompiled lacks them.
    No other attribute can be added: compiled, the class has no ``__dict__``, which Cython
    would make for every request (a dict made and freed per request, ~1% of a pipelined
    publish). ``headers`` is the
    list of ``(lowercase name, value)`` bytes pairs in arrival order, kept only for targets
    outside ``/v1/`` (the SQS face reads ``X-Amz-Target``, ``Content-Type`` and ``Host``; the
    native routes read none, so their hot path stores none), else None.
    """

    def __init__(
        self,
        method: str,
        path: str,
        query: str,
        body: bytes,
        keep_alive: bool,
        conn: HttpProtocol,
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.body = body
        self.keep_alive = keep_alive
        self.conn = conn
        self.params: dict[str, str] | None = None
        self.queue: str | None = None
        self.route = ""
        self.deferred: Any = None
        self.response: Response | None = None
        self.echo_keep_alive = False
        self.authorization: bytes | None = None
        self.headers: list[tuple[bytes, bytes]] | None = None
        self.if_none_match: bytes | None = None
        self.principal: Any = None

    @classmethod
    def failed(cls, conn: HttpProtocol, response: Response) -> Request:
        """A placeholder that answers ``response`` in its turn, then closes the connection."""
        req = cls("-", "-", "", b"", False, conn)
        req.response = response
        return req


def _new_request(
    method: str, path: str, query: str, body: bytes, keep_alive: bool, conn: HttpProtocol
) -> Request:
    """Request(...) for the hot path: compiled, a bare allocation and twelve field stores,
    without the argument parsing of a call to the class."""
    req = Request.__new__(Request)
    req.method = method
    req.path = path
    req.query = query
    req.body = body
    req.keep_alive = keep_alive
    req.conn = conn
    req.params = None
    req.queue = None
    req.route = ""
    req.deferred = None
    req.response = None
    req.echo_keep_alive = False
    req.authorization = None
    return req


class App(Protocol):
    """What the protocol needs from the application (wonderq.api.Api implements it)."""

    def dispatch(self, req: Request) -> Response | None:
        """Answer ``req`` now, or return None and later call ``req.conn.complete``."""

    def cancel(self, req: Request) -> None:
        """``req`` was deferred and its connection is gone: forget it, lease nothing."""

    def count(self, route: str, status: int) -> None:
        """Count a response the protocol produced on its own (parse errors, limits)."""

    def body_block(self, method: bytes, url: bytes, size: int) -> Any:
        """Where to read the big body (``size`` bytes) of the request being parsed: a
        writable buffer of that size that becomes ``req.body`` (a publish's block of the
        engine, see wonderq.bodyread), or None for a bytes object."""

    # Optional: ``queue_hint``, None or ``(prefixes, names)``: the protocol calls
    # ``names.prefetch_name(target, len(prefix))`` (a wonderq.queuenames.QueueNames) as soon
    # as the target of a request that begins with one of the prefixes arrives, before its
    # head (Router.hint_queues). Only prefixes under ``/v1/`` are taken.


class Owner(Protocol):
    """What the protocol needs from the server that accepted the connection."""

    connections: set[HttpProtocol]
    shutting_down: bool


def _origin_form(path: str) -> str:
    """The path of an absolute-form target (RFC 9112 section 3.2.2, which servers MUST
    accept): ``http://host:port/p`` -> ``/p``. Anything else (``*``) keeps a form no route
    matches, so it answers 404."""
    scheme, sep, rest = path.partition("://")
    if sep and scheme.lower() in ("http", "https"):
        slash = rest.find("/")
        return rest[slash:] if slash >= 0 else "/"
    return path


def split_query(query: str) -> dict[str, str] | None:
    """``{name: value}`` of a plain query string (``cid=7&limit=1``: nothing percent-encoded,
    no ``+``, no name twice), in one pass; None for any other, which the application parses
    its own way. A part without ``=`` is a name with an empty value; empty parts are skipped.
    Compiled, it takes about half the instructions of the split in Python."""
    if "%" in query or "+" in query:
        return None
    params: dict[str, str] = {}
    end = len(query)
    start = 0
    while start < end:
        stop = query.find("&", start)
        if stop < 0:
            stop = end
        if stop > start:
            eq = query.find("=", start, stop)
            if eq < 0:
                name = query[start:stop]
                value = ""
            else:
                name = query[start:eq]
                value = query[eq + 1 : stop]
            if name in params:
                return None
            params[name] = value
        start = stop + 1
    return params


def _query_mark(url: bytes) -> int:
    """Where the ``?`` of a request target is, or -1. Compiled, a C loop over the bytes (a
    short URL costs less than the argument parsing of ``bytes.find``)."""
    for i in range(len(url)):
        if url[i] == 63:  # "?"
            return i
    return -1
