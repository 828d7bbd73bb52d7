"""HTTP/1.1 over httptools: framing, keep-alive, pipelining, limits, timeouts, back-pressure.

This module knows HTTP and nothing about queues. Each complete request becomes a
:class:`Request` handed to ``app.dispatch(req)``, which returns a :data:`Response` at once or
``None`` to answer later through :meth:`HttpProtocol.complete` (a parked long poll).

Requests on one connection are executed one at a time, in arrival order (RFC 9112 section
9.3.2: pipelined responses go out in request order). While a request is parked, the requests
pipelined behind it wait in a deque; reading pauses when that deque is long, and whenever the
transport's write buffer is over its high-water mark, so a client that does not read cannot
make us buffer without bound.

Per-connection state is grouped below as: the connection, the message being parsed, the
pipeline, and the timer. There is one timer per connection; moving its deadline is a field
store, and the timer re-arms itself lazily when it fires early.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Protocol

import httptools

__all__ = [
    "JSON_HEADERS",
    "HttpProtocol",
    "Request",
    "Response",
    "error_response",
    "refresh_date",
]

log = logging.getLogger("wonderq.http")
access_log = logging.getLogger("wonderq.access")

#: ``(status, body, header_lines)``: header_lines are complete ``Name: value\r\n`` lines,
#: Content-Type included; the protocol adds the status line, Date, Server, Cache-Control,
#: Content-Length and Connection.
Response = tuple[int, bytes, bytes]

JSON_HEADERS = b"Content-Type: application/json\r\n"

# Precomputed status lines; we always answer as HTTP/1.1 (RFC 9112 section 2.3: a server
# sends its own highest minor version, the client's major version).
STATUS_LINES: dict[int, bytes] = {
    s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode("ascii")) for s in HTTPStatus
}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_CLOSE = b"Connection: close\r\n"
_KEEP_ALIVE = b"Connection: keep-alive\r\n"

# Date + Server + Cache-Control, the same for every response within a second; rebuilt by
# refresh_date(), which the server calls once a second from a loop timer.
_common_headers = b""


def refresh_date(now_s: float | None = None) -> None:
    """Rebuild the cached ``Date`` header (RFC 9110 section 6.6.1: one-second resolution)."""
    global _common_headers
    date = formatdate(now_s, usegmt=True).encode("ascii")
    _common_headers = b"Date: " + date + b"\r\nServer: wonderq\r\nCache-Control: no-store\r\n"


refresh_date()


def error_response(status: int, code: str, message: str, headers: bytes = b"") -> Response:
    """The JSON error shape of DESIGN.md: ``{"error": {"code": ..., "message": ...}}``."""
    body = json.dumps({"error": {"code": code, "message": message}}, separators=(",", ":")).encode(
        "utf-8"
    )
    return (status, body, JSON_HEADERS + headers)


class App(Protocol):
    """What the protocol needs from the application (wonderq.api.Api implements it)."""

    def dispatch(self, req: Request) -> Response | None:
        """Answer ``req`` now, or return None and later call ``req.conn.complete``."""

    def cancel(self, req: Request) -> None:
        """``req`` was deferred and its connection is gone: forget it, lease nothing."""

    def count(self, route: str, status: int) -> None:
        """Count a response the protocol produced on its own (parse errors, limits)."""


class Owner(Protocol):
    """What the protocol needs from the server that accepted the connection."""

    connections: set[HttpProtocol]
    shutting_down: bool


class Request:
    """One parsed request. ``conn`` answers it later when ``dispatch`` deferred it.

    ``path`` and ``query`` are the raw (not percent-decoded) parts of the target, as latin-1
    text; ``params`` and ``route`` are for the application (path parameters and the route's
    metric label), ``deferred`` holds the application's state while the request is parked.
    ``response`` is set only for an error the protocol found itself (answered in turn).
    """

    __slots__ = (
        "body",
        "conn",
        "deferred",
        "echo_keep_alive",
        "keep_alive",
        "method",
        "params",
        "path",
        "query",
        "response",
        "route",
    )

    def __init__(
        self,
        method: str,
        target: bytes,
        body: bytes,
        keep_alive: bool,
        echo_keep_alive: bool,
        conn: HttpProtocol,
    ) -> None:
        self.method = method
        path, _, query = target.partition(b"?")
        if path[:1] != b"/":
            path = _origin_path(path)
        self.path = path.decode("latin-1")
        self.query = query.decode("latin-1")
        self.body = body
        self.keep_alive = keep_alive
        self.echo_keep_alive = echo_keep_alive
        self.conn = conn
        self.params: dict[str, str] | None = None
        self.route = ""
        self.deferred: Any = None
        self.response: Response | None = None

    @classmethod
    def failed(cls, conn: HttpProtocol, response: Response) -> Request:
        """A placeholder that answers ``response`` in its turn, then closes the connection."""
        req = cls("-", b"/", b"", False, False, conn)
        req.response = response
        return req


def _origin_path(path: bytes) -> bytes:
    """The path of an absolute-form target (RFC 9112 section 3.2.2, which servers MUST
    accept): ``http://host:port/p`` -> ``/p``. Anything else (``*``) keeps a form no route
    matches, so it answers 404."""
    scheme, sep, rest = path.partition(b"://")
    if sep and scheme.lower() in (b"http", b"https"):
        slash = rest.find(b"/")
        return rest[slash:] if slash >= 0 else b"/"
    return path


class _StopParsing(Exception):
    """Raised inside a parser callback to stop parsing quietly (no more requests wanted)."""


class _Reject(Exception):
    """Raised inside a parser callback to stop parsing and answer ``response``, then close."""

    def __init__(self, response: Response) -> None:
        super().__init__(response[0])
        self.response = response


# Methods as interned str, so routes compare and hash cheaply; others are decoded as met.
_METHODS = {
    m.encode(): m for m in ("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE")
}

# Header names the protocol acts on. Exact-case hits are one dict lookup; other casings are
# lowered only when the length could match (RFC 9110 section 5.1: names are case-insensitive).
_H_CONTENT_LENGTH, _H_EXPECT, _H_CONNECTION = 1, 2, 3
_HEADER_KINDS = {
    b"content-length": _H_CONTENT_LENGTH,
    b"expect": _H_EXPECT,
    b"connection": _H_CONNECTION,
}
_HEADER_KINDS.update({k.title(): v for k, v in list(_HEADER_KINDS.items())})
_HEADER_LENGTHS = frozenset(len(k) for k in _HEADER_KINDS)

# Pipelined requests parked behind an unanswered one before we stop reading.
MAX_QUEUED_REQUESTS = 32
# After an error response we keep reading (and discarding) this long before closing, so the
# client reads our answer instead of a reset (RFC 9112 section 9.6, "lingering close").
LINGER_S = 2.0
# Every line of a header costs its bytes plus ": " and CRLF.
_HEADER_LINE_OVERHEAD = 4

# Reasons reading is paused; reading resumes when none is left.
_PAUSE_WRITE_BUFFER = 1
_PAUSE_PIPELINE = 2

# What the connection's single timer is guarding.
_T_IDLE, _T_HEAD, _T_BODY, _T_BUSY, _T_LINGER = range(5)


class HttpProtocol(asyncio.Protocol):
    """One client connection: feeds bytes to httptools and writes responses in order."""

    __slots__ = (
        "_app",
        "_body",
        "_body_bytes",
        "_busy",
        "_content_length",
        "_continue_pending",
        "_deadline",
        "_echo_keep_alive",
        "_expect",
        "_head_bytes",
        "_head_deadline",
        "_head_raw_bytes",
        "_header_timeout_s",
        "_idle_timeout_s",
        "_in_head",
        "_in_message",
        "_linger",
        "_log_access",
        "_loop",
        "_max_body_bytes",
        "_max_connections",
        "_max_header_bytes",
        "_max_url_bytes",
        "_owner",
        "_parser",
        "_paused",
        "_queue",
        "_reading_done",
        "_timer",
        "_timer_at",
        "_timer_kind",
        "_transport",
        "_url",
        "closed",
        "peer",
    )

    def __init__(self, app: App, owner: Owner, settings: Any) -> None:
        self._app = app
        self._owner = owner
        self._loop = asyncio.get_event_loop()
        self._max_url_bytes: int = settings.max_url_bytes
        self._max_header_bytes: int = settings.max_header_bytes
        self._max_body_bytes: int = settings.max_request_bytes
        self._max_connections: int = settings.max_connections
        self._idle_timeout_s: float = settings.idle_timeout_s
        self._header_timeout_s: float = settings.header_timeout_s
        self._log_access: bool = settings.access_log
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self.closed = False  # the connection is gone, or going: answer nothing more
        self.peer = "-"
        # The message being parsed.
        self._in_message = False
        self._in_head = False
        self._url: bytes | None = None
        self._head_bytes = 0  # header bytes of this message, counted in on_header
        self._head_raw_bytes = 0  # bytes fed while this message's head was incomplete
        self._content_length = -1
        self._expect: bytes | None = None
        self._echo_keep_alive = False
        self._body: Any = None  # None, one bytes, or a list of chunks
        self._body_bytes = 0
        # The pipeline.
        self._busy: Request | None = None  # dispatched, answer pending (a long poll)
        self._queue: deque[Request] = deque()  # parsed, waiting for _busy to be answered
        self._continue_pending = False  # owe a 100 Continue once the pipeline is clear
        self._reading_done = False  # no more requests on this connection: discard input
        self._linger = False
        self._paused = 0  # _PAUSE_* bits
        # The timer: _deadline is loop time; _timer fires at _timer_at <= _deadline or later.
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._timer_kind = _T_IDLE
        self._deadline = 0.0
        self._head_deadline = 0.0

    # ---- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = f"{peer[0]}:{peer[1]}"
        connections = self._owner.connections
        if self._owner.shutting_down:
            self._refuse(503, "shutting_down", "the server is shutting down")
            return
        if len(connections) >= self._max_connections:
            log.warning("refusing %s: %d connections open", self.peer, len(connections))
            self._refuse(503, "too_many_connections", "the server has too many open connections")
            return
        connections.add(self)
        self._set_deadline(_T_IDLE, self._loop.time() + self._idle_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._transport = None
        self._owner.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        busy = self._busy
        self._busy = None
        self._queue.clear()
        self._body = None
        if busy is not None:
            try:
                self._app.cancel(busy)
            except Exception:
                log.exception("cancelling a deferred request of %s failed", self.peer)

    def eof_received(self) -> bool:
        # The client will send nothing more. Anything complete has been answered already
        # (data_received ran first), except a parked request and what is queued behind it:
        # a half-closed long poll is treated as a vanished client, so it leases nothing.
        # Returning False closes the transport after the buffered responses are flushed.
        return False

    def data_received(self, data: bytes) -> None:
        if self._reading_done:
            return  # lingering close, or after the last request: discard
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Upgrade (RFC 9110 section 7.8) is not offered. The request itself was answered
            # as plain HTTP, but what follows on the wire is not HTTP/1.1 any more.
            self._stop_reading()
            if self._busy is None and not self._queue:
                self._close()
        except httptools.HttpParserError as exc:
            self._parse_failed(exc)
        if self._reading_done or self._busy is not None:
            return
        if self._in_head:
            # httptools buffers a header line until it ends and calls us only then; count the
            # bytes of chunks that completed nothing, so a line that never ends is bounded.
            # (A chunk in which a callback ran resets the count: on_url/on_header counted it.)
            raw = self._head_raw_bytes
            raw = 0 if raw < 0 else raw + len(data)
            self._head_raw_bytes = raw
            if raw + self._head_bytes > self._max_header_bytes + self._max_url_bytes:
                self._fail(431, "headers_too_large", self._headers_message())
                return
        self._arm_for_state()

    def pause_writing(self) -> None:
        self._pause(_PAUSE_WRITE_BUFFER)

    def resume_writing(self) -> None:
        self._resume(_PAUSE_WRITE_BUFFER)

    # ---- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._reading_done:
            raise _StopParsing  # a request after the last one (Connection: close, an error)
        self._in_message = True
        self._in_head = True
        self._url = None
        self._head_bytes = 0
        self._head_raw_bytes = -1
        self._head_deadline = 0.0
        self._content_length = -1
        self._expect = None
        self._echo_keep_alive = False
        self._body = None
        self._body_bytes = 0

    def on_url(self, url: bytes) -> None:
        # Called once per fragment when the request line arrives in pieces.
        if self._url is not None:
            url = self._url + url
        self._url = url
        self._head_raw_bytes = -1
        if len(url) > self._max_url_bytes:
            raise _Reject(
                error_response(
                    414,
                    "uri_too_long",
                    f"the request target is longer than {self._max_url_bytes} bytes",
                )
            )

    def on_header(self, name: bytes, value: bytes) -> None:
        size = self._head_bytes + len(name) + len(value) + _HEADER_LINE_OVERHEAD
        self._head_bytes = size
        self._head_raw_bytes = -1
        if size > self._max_header_bytes:
            raise _Reject(error_response(431, "headers_too_large", self._headers_message()))
        kind = _HEADER_KINDS.get(name)
        if kind is None:
            if len(name) not in _HEADER_LENGTHS:
                return
            kind = _HEADER_KINDS.get(name.lower())
            if kind is None:
                return
        if kind == _H_CONTENT_LENGTH:
            # llhttp has already refused anything but digits and conflicting duplicates.
            self._content_length = int(value)
        elif kind == _H_EXPECT:
            self._expect = value
        elif b"keep-alive" in value.lower():
            self._echo_keep_alive = True

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._content_length > self._max_body_bytes:
            # Refuse before reading the body (DESIGN.md "Limits"); the connection closes.
            raise _Reject(self._too_large())
        if self._expect is not None:
            self._expect_received(self._expect)

    def on_body(self, data: bytes) -> None:
        size = self._body_bytes + len(data)
        if size > self._max_body_bytes:
            raise _Reject(self._too_large())  # chunked: no length was declared
        self._body_bytes = size
        body = self._body
        if body is None:
            self._body = data
        elif type(body) is list:
            body.append(data)
        else:
            self._body = [body, data]

    def on_message_complete(self) -> None:
        self._in_message = False
        self._continue_pending = False
        body = self._body
        if body is None:
            body = b""
        elif type(body) is list:
            body = b"".join(body)
        self._body = None
        parser = self._parser
        method = parser.get_method()
        keep_alive = parser.should_keep_alive()
        req = Request(
            _METHODS.get(method) or method.decode("latin-1"),
            self._url or b"/",
            body,
            keep_alive,
            self._echo_keep_alive,
            self,
        )
        if not keep_alive:
            # Connection: close, or HTTP/1.0 without keep-alive: this is the last request
            # (RFC 9112 section 9.6); llhttp would refuse anything after it anyway.
            self._reading_done = True
        if self._busy is None and not self._queue:
            self._run(req)
        else:
            self._queue.append(req)
            if len(self._queue) >= MAX_QUEUED_REQUESTS:
                self._pause(_PAUSE_PIPELINE)

    # ---- the pipeline -----------------------------------------------------------------------

    def _run(self, req: Request) -> None:
        """Dispatch one request at the head of the pipeline and write its answer if ready."""
        response = req.response
        if response is None:
            try:
                response = self._app.dispatch(req)
            except Exception:
                log.exception("dispatch of %s %s failed", req.method, req.path)
                response = error_response(500, "internal_error", "internal server error")
                self._app.count("-", 500)
            if response is None:
                self._busy = req
                self._set_deadline(_T_BUSY, 0.0)
                return
        else:
            self._app.count("-", response[0])
        self._write(req, response)

    def complete(self, req: Request, response: Response) -> None:
        """Answer the deferred request ``req`` and carry on with the pipeline behind it.

        Does nothing if the connection was closed meanwhile (the app was told by ``cancel``).
        """
        if req is not self._busy or self.closed:
            return
        self._busy = None
        self._write(req, response)
        queue = self._queue
        while queue and self._busy is None and not self.closed:
            self._run(queue.popleft())
        if self.closed or self._busy is not None:
            return
        if self._paused & _PAUSE_PIPELINE:
            self._resume(_PAUSE_PIPELINE)
        if self._continue_pending:
            self._continue_pending = False
            self._transport.write(_CONTINUE)  # type: ignore[union-attr]
        self._arm_for_state()

    def _write(self, req: Request, response: Response) -> None:
        status, body, headers = response
        transport = self._transport
        if transport is None:
            return
        keep_alive = req.keep_alive and req.response is None
        if keep_alive and (self._reading_done or self._owner.shutting_down) and not self._queue:
            keep_alive = False  # the last answer: no more requests, or a graceful close
        if not keep_alive:
            connection = _CLOSE
        elif req.echo_keep_alive:
            connection = _KEEP_ALIVE  # RFC 9112 section 9.3: HTTP/1.0 keep-alive is opt-in
        else:
            connection = b""
        if status == 204:
            # RFC 9110 section 8.6: no Content-Length on 204 (nor a body).
            transport.write(
                b"%s%s%s%s\r\n" % (STATUS_LINES[204], _common_headers, headers, connection)
            )
        elif req.method == "HEAD":
            # RFC 9110 section 9.3.2: the length of the body a GET would get, but no body.
            transport.write(
                b"%s%s%sContent-Length: %d\r\n%s\r\n"
                % (STATUS_LINES[status], _common_headers, headers, len(body), connection)
            )
        else:
            transport.write(
                b"%s%s%sContent-Length: %d\r\n%s\r\n%s"
                % (STATUS_LINES[status], _common_headers, headers, len(body), connection, body)
            )
        if self._log_access:
            access_log.info('%s "%s %s" %d %d', self.peer, req.method, req.path, status, len(body))
        if not keep_alive:
            if req.response is not None:
                self._linger_close()
            else:
                self._close()

    # ---- errors -------------------------------------------------------------------------------

    def _parse_failed(self, exc: httptools.HttpParserError) -> None:
        cause = exc.__context__
        if isinstance(cause, _Reject):
            self._fail_with(cause.response)
        elif self._reading_done or isinstance(cause, _StopParsing):
            pass  # bytes after the last request (Connection: close); they are not answered
        elif cause is not None:
            # A bug in one of our callbacks: answer 500 and close; the server goes on.
            log.error("HTTP callback failed on %s", self.peer, exc_info=cause)
            self._fail(500, "internal_error", "internal server error")
        else:
            self._fail(400, "bad_request", f"malformed HTTP request: {exc}")

    def _fail(self, status: int, code: str, message: str) -> None:
        self._fail_with(error_response(status, code, message))

    def _fail_with(self, response: Response) -> None:
        """Stop parsing; answer ``response`` after what is ahead of it, then close."""
        self._stop_reading()
        req = Request.failed(self, response)
        if self._busy is None and not self._queue:
            self._run(req)
        else:
            self._queue.append(req)

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer before reading anything (over the connection cap, or shutting down)."""
        self._stop_reading()
        status, body, headers = error_response(status, code, message)
        self._app.count("-", status)
        self._transport.write(  # type: ignore[union-attr]
            b"%s%s%sContent-Length: %d\r\n%s\r\n%s"
            % (STATUS_LINES[status], _common_headers, headers, len(body), _CLOSE, body)
        )
        self._linger_close()

    def _stop_reading(self) -> None:
        self._reading_done = True
        self._in_message = self._in_head = False
        self._body = None

    def _too_large(self) -> Response:
        return error_response(
            413,
            "request_too_large",
            f"the request body is larger than {self._max_body_bytes} bytes",
        )

    def _headers_message(self) -> str:
        return f"the request headers are longer than {self._max_header_bytes} bytes"

    def _expect_received(self, expect: bytes) -> None:
        if expect.lower() != b"100-continue":
            # RFC 9110 section 10.1.1: an expectation we cannot meet.
            raise _Reject(
                error_response(
                    417, "expectation_failed", "the Expect header can only be 100-continue"
                )
            )
        if self._parser.get_http_version() == "1.0":
            return  # RFC 9110 section 10.1.1: ignore 100-continue from HTTP/1.0 clients
        if self._content_length == 0:
            return
        if self._busy is None and not self._queue:
            # The length (if declared) passed the limit, so the body will be accepted.
            self._transport.write(_CONTINUE)  # type: ignore[union-attr]
        else:
            # A 100 now would land in the middle of an earlier request's answer.
            self._continue_pending = True

    # ---- closing ----------------------------------------------------------------------------

    def _close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._reading_done = True
        self._transport.close()  # type: ignore[union-attr]  # flushes what is buffered

    def _linger_close(self) -> None:
        """Send our FIN, discard what the client still sends, close on its FIN or in LINGER_S."""
        if self.closed or self._linger:
            return
        self._linger = True
        transport = self._transport
        if transport is None:
            return
        self._resume(self._paused)
        if transport.can_write_eof():
            transport.write_eof()
            self._set_deadline(_T_LINGER, self._loop.time() + LINGER_S)
        else:
            self._close()

    def shutdown(self) -> None:
        """Graceful stop: close now if idle, else after the answer in progress."""
        if self.closed:
            return
        if self._busy is None and not self._queue and not self._in_message:
            self._close()
        # Otherwise _write closes after the last queued answer (Owner.shutting_down), and the
        # app answers parked requests with their empty results.

    def abort(self) -> None:
        """Close at once, dropping anything unsent (the shutdown grace period ran out)."""
        if self._transport is not None:
            self._transport.abort()

    # ---- flow control ---------------------------------------------------------------------

    def _pause(self, reason: int) -> None:
        if not self._paused and self._transport is not None:
            self._transport.pause_reading()
        self._paused |= reason

    def _resume(self, reason: int) -> None:
        if not self._paused:
            return
        self._paused &= ~reason
        if not self._paused and self._transport is not None and not self.closed:
            self._transport.resume_reading()

    # ---- the timer ------------------------------------------------------------------------

    def _arm_for_state(self) -> None:
        """Point the timer at what this connection is waiting for now (not while busy)."""
        now = self._loop.time()
        if not self._in_message:
            self._set_deadline(_T_IDLE, now + self._idle_timeout_s)
        elif self._in_head:
            # Measured from the request's first byte: trickling bytes does not extend it.
            if self._head_deadline == 0.0:
                self._head_deadline = now + self._header_timeout_s
            self._set_deadline(_T_HEAD, self._head_deadline)
        else:
            self._set_deadline(_T_BODY, now + self._idle_timeout_s)

    def _set_deadline(self, kind: int, deadline: float) -> None:
        """Guard ``kind`` until loop time ``deadline`` (_T_BUSY: no deadline)."""
        self._timer_kind = kind
        self._deadline = deadline
        if kind == _T_BUSY:
            return  # a parked request is bounded by its own wait; the timer idles
        timer = self._timer
        if timer is None:
            self._timer = self._loop.call_at(deadline, self._on_timer)
            self._timer_at = deadline
        elif deadline < self._timer_at:
            timer.cancel()
            self._timer = self._loop.call_at(deadline, self._on_timer)
            self._timer_at = deadline
        # else: the armed timer fires first, sees the later deadline and re-arms.

    def _on_timer(self) -> None:
        self._timer = None
        if self.closed:
            return
        kind = self._timer_kind
        if kind == _T_BUSY:
            return
        if self._loop.time() < self._deadline:
            self._timer = self._loop.call_at(self._deadline, self._on_timer)
            self._timer_at = self._deadline
            return
        if kind == _T_IDLE:
            self._close()
        elif kind == _T_LINGER:
            self.abort()
        else:
            log.info("closing %s: request not received in time", self.peer)
            self._fail(408, "request_timeout", "the request was not received in time")


def protocol_factory(app: App, owner: Owner, settings: Any) -> Callable[[], HttpProtocol]:
    """The factory ``loop.create_server`` wants: one HttpProtocol per accepted connection."""
    return lambda: HttpProtocol(app, owner, settings)
