# cython: language_level=3, annotation_typing=False, always_allow_keywords=False
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
pipeline, and the timer. A connection's timer is a place in a :class:`Deadlines` that all the
connections of a server share, one loop timer for all of them; moving a connection's deadline
later is a field store, and the timer re-arms itself lazily when it fires early.

Compiled. setup.py compiles this file with Cython in pure-Python mode: ``protocol.pxd``
beside it declares the C types (``HttpProtocol`` becomes an extension type, the helpers C
methods), so the httptools callbacks and the answer cost C calls instead of Python frames
(instructions per request: bench/instructions.py, figures in bench/RESULTS.md). The file runs
unchanged as plain Python when it is not built. Types come only from the ``.pxd``
(``annotation_typing=False``): the annotations are for readers and mypy. After an edit,
``make build``: a build older than its source fails tests/test_build.py.

The head of every answer (status line, Date, the cached prefixes) and the App/Owner
contracts live in ``wonderq.request``, beside Request and Response.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from functools import partial
from heapq import heappop, heappush
from typing import Any

import httptools

from ._core import SplitBody
from .bodyread import BIG_BODY_BYTES, BodyReader, take_over
from .headscan import Lifter
from .queuenames import QueueNames
from .request import (
    _CLOSE_TAIL,
    _CONTINUE,
    _KEEP_ALIVE_TAIL,
    _LENGTH_TAILS,
    _LENGTH_TAILS_MAX,
    _PLAIN_TAIL,
    App,
    Owner,
    Request,
    Response,
    _build_prefix,
    _head_start,
    _new_request,
    _origin_form,
    _prefix,
    _query_mark,
    error_response,
)

__all__ = ["HttpProtocol", "protocol_factory"]

log = logging.getLogger("wonderq.http")
access_log = logging.getLogger("wonderq.access")


# A last piece of an answer this big or bigger is written without being joined (_flush):
# from here on, a copy of it costs more than the transport's writev of the pieces (perf of
# 64 KiB receives: the join was 5.6% of the server's samples, bench/RESULTS.md).
_WRITE_AS_IS_BYTES = 32 * 1024


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

# Pipelined requests parked behind an unanswered one before we stop reading.
MAX_QUEUED_REQUESTS = 32
# HttpProtocol._queue while no request waits (shared: nothing is ever added to it).
_NO_QUEUE: tuple[()] = ()
# After an error response we keep reading (and discarding) this long before closing, so the
# client reads our answer instead of a reset (RFC 9112 section 9.6, "lingering close").
LINGER_S = 2.0
# Where the parser is in the current message.
_IDLE, _HEAD, _BODY = 0, 1, 2

# Reasons reading is paused; reading resumes when none is left.
_PAUSE_WRITE_BUFFER = 1
_PAUSE_PIPELINE = 2

# What the connection's single timer is guarding: the parser's progress (see
# _parse_deadline), nothing while a request is parked, or the end of a lingering close.
_T_PARSE, _T_BUSY, _T_LINGER = 0, 1, 2

# Deadlines rounds each deadline up to the next tick of this many per second: a connection's
# timer fires up to 1/64 s after its deadline, and the connections whose deadlines fall in
# one tick share one wake-up of the loop.
TICKS_PER_S = 64.0


class HttpProtocol:
    """One client connection: feeds bytes to httptools and writes responses in order.

    An asyncio protocol by duck typing (the methods of ``asyncio.Protocol``, not the class:
    compiled, it is an extension type, which cannot derive from a Python class).

    Hot path (a complete request in one read): data_received -> feed_data -> on_url,
    on_header..., on_headers_complete, on_body, on_message_complete -> app.dispatch ->
    the pieces of the answer appended to _out; then one join and one transport.write for all
    the answers of the read. Everything unusual (a partial request, a parked one, limits,
    closing) branches off to a slower path.
    """

    def __init__(
        self, app: App, owner: Owner, settings: Any, deadlines: Deadlines | None = None
    ) -> None:
        self._app = app
        self._dispatch = app.dispatch
        # Targets that name a queue, and whom to name it to as the target arrives.
        hint = getattr(app, "queue_hint", None)
        # Only targets under /v1/ are hinted (on_url): the prefixes that begin so. The app's
        # own tuple when they all do (the router's), so that a connection holds no tuple of
        # its own (bench/connections.py: memory per idle connection).
        prefixes: tuple[bytes, ...] = () if hint is None else hint[0]
        if not all(prefix.startswith(b"/v1/") for prefix in prefixes):
            prefixes = tuple(prefix for prefix in prefixes if prefix.startswith(b"/v1/"))
        self._hint_prefixes = prefixes
        self._names: QueueNames | None = None if hint is None else hint[1]
        self._owner = owner
        self._loop = asyncio.get_event_loop()
        self._loop_time = self._loop.time
        self._max_url_bytes: int = settings.max_url_bytes
        self._max_header_bytes: int = settings.max_header_bytes
        self._max_body_bytes: int = settings.max_request_bytes
        self._max_body_digits = len(str(self._max_body_bytes))
        self._max_connections: int = settings.max_connections
        self._idle_timeout_s: float = settings.idle_timeout_s
        self._header_timeout_s: float = settings.header_timeout_s
        self._log_access: bool = settings.access_log
        # With access control every request carries Authorization: lift it out of the head
        # before llhttp (wonderq.headscan; ~1,000 instructions a request less).
        self._lifter: Lifter | None = Lifter() if settings.auth_file is not None else None
        self._new_parser()
        self._transport: asyncio.Transport | None = None
        self.closed = False  # the connection is gone, or going: answer nothing more
        self.peer = "-"
        # The message being parsed. Reset by on_message_complete, so a new message starts
        # clean without an on_message_begin callback.
        self._phase = _IDLE  # _IDLE, _HEAD (request line and headers) or _BODY
        self._url: bytes | None = None
        # The headers of this message when its target is not under /v1/ (see Request), else
        # None; decided by the first piece of the target.
        self._headers: list[tuple[bytes, bytes]] | None = None
        self._head_bytes = 0  # header bytes of this message, counted in on_header
        self._head_mark = 0  # _head_bytes at the end of the previous read ended in a head
        self._head_mark_url: bytes | None = None  # _url then (kept alive: `is` stays valid)
        self._head_raw_bytes = 0  # bytes of reads that completed no header line
        self._head_deadline = 0.0
        self._special = False  # one of the headers below was seen
        self._content_length: bytes | None = None  # its digits, as sent
        self._expect: bytes | None = None
        self._echo_keep_alive = False
        self._raw_method = b""  # the method of the last request, as httptools gave it
        self._method = ""  # ... and as the application sees it
        self._body: Any = None  # None, one bytes, or a list of chunks
        self._body_bytes = 0
        # The transport's protocol while the rest of a big body is read into its bytes
        # (_start_body_reader), else None.
        self._reader: BodyReader | None = None
        # The pipeline.
        self._busy: Request | None = None  # dispatched, answer pending (a long poll)
        # Parsed, waiting for _busy to be answered: _NO_QUEUE (empty) until a request is
        # queued, as most connections never queue one and an empty deque is 760 bytes (a
        # fifth of an idle connection: bench/connections.py).
        self._queue: deque[Request] | tuple[()] = _NO_QUEUE
        self._continue_pending = False  # owe a 100 Continue once the pipeline is clear
        self._reading_done = False  # no more requests on this connection: discard input
        self._shutting_down = False  # the server is stopping: close after the last answer
        # None of: reading done, shutting down, access log. Lets the hot path write at once.
        self._plain = not self._log_access
        self._linger = False
        self._paused = 0  # _PAUSE_* bits
        self._out: list[Any] = []  # pieces of answers not yet written (see _flush)
        self._out_views = False  # _out holds BodyViews: written as they are, never joined
        self._if_none_match: bytes | None = None  # that header of the message being parsed
        self._authorization: bytes | None = None  # that header of the message being parsed
        # A streamed answer (start_stream): the request, or None; chunked or until the close.
        self._stream: Request | None = None
        self._stream_chunked = False
        # The timer. While parsing, the deadline follows from _phase and _last_active, so the
        # hot path only stores _last_active; a lingering close uses _deadline. The timer is
        # the tick of _deadlines it is armed for (0: none); it fires then and re-arms itself
        # when the deadline has moved later.
        self._deadlines = Deadlines(self._loop) if deadlines is None else deadlines
        self._tick = 0
        self._timer_kind = _T_PARSE
        self._deadline = 0.0
        self._last_active = 0.0  # loop time of the last read the slow path saw
        self._active = False  # a read completed requests since the timer last fired

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
        self._last_active = self._loop_time()
        self._arm_for_state()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._transport = None
        self._stream = None
        self._owner.connections.discard(self)
        self._deadlines.disarm(self)
        busy = self._busy
        self._busy = None
        self._queue = _NO_QUEUE
        self._body = None
        self._drop_reader()  # the transport is gone: only the body is dropped
        self._out.clear()
        self._out_views = False
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

    def data_received(self, data: bytes | memoryview) -> None:
        if self._reading_done:
            return  # lingering close, or after the last request: discard
        lifter = self._lifter
        if lifter is not None and not self._phase and type(data) is bytes:
            rest = lifter.lift(data)
            if rest is not None:
                data = rest
                self._authorization = value = lifter.value
                self._head_bytes += 13 + len(value)  # type: ignore[arg-type]  # as on_header counts
        try:
            self._feed(data)
        except httptools.HttpParserUpgrade:
            # Upgrade (RFC 9110 section 7.8) is not offered. The request itself was answered
            # as plain HTTP, but what follows on the wire is not HTTP/1.1 any more.
            self._stop_reading()
            if self._busy is None and not self._queue:
                self._close()
        except httptools.HttpParserError as exc:
            self._parse_failed(exc)
        if self._out:
            self._flush()
        if self._phase or self._busy is not None or self._reading_done:
            self._after_partial_read(len(data))
        else:
            # Cheaper than reading the clock on every read: the idle timer, when it fires,
            # grants one more idle period if this is set (so idle connections close after
            # idle_timeout_s to twice that).
            self._active = True

    def pause_writing(self) -> None:
        self._pause(_PAUSE_WRITE_BUFFER)

    def resume_writing(self) -> None:
        self._resume(_PAUSE_WRITE_BUFFER)

    # ---- httptools callbacks ----------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        # Called once per fragment when the request line arrives in pieces.
        if self._url is None:
            if self._reading_done:
                raise _StopParsing  # a request after the last one (Connection: close, error)
            self._phase = _HEAD
            self._head_deadline = 0.0
            self._url = url
            # The native routes (/v1/...) keep no headers. A target cut before its fourth
            # byte keeps them, which costs only time. Compiled, ``start`` is the bytes' char
            # pointer: four C compares.
            start = url
            if (
                len(url) >= 4
                and start[0] == 47
                and start[1] == 118
                and start[2] == 49
                and start[3] == 47
            ):
                self._headers = None
                for prefix in self._hint_prefixes:
                    # url.startswith(prefix) past the "/v1/" both begin with, as C compares
                    # when compiled (~100 fewer instructions where it does not: /v1/publish).
                    hint = prefix
                    k = 4
                    n = len(prefix)
                    while k < n and k < len(url) and start[k] == hint[k]:
                        k += 1
                    if k == n:
                        # Its queue named to the store now: what finding it reads loads
                        # while the head and body are parsed (Router.hint_queues).
                        self._names.prefetch_name(url, n)  # type: ignore[union-attr]
                        break
            else:
                self._headers = []
            if len(url) <= self._max_url_bytes:
                return
        else:
            url = self._url + url
            self._url = url
            if len(url) <= self._max_url_bytes:
                return
        raise _Reject(
            error_response(
                414,
                "uri_too_long",
                f"the request target is longer than {self._max_url_bytes} bytes",
            )
        )

    def on_header(self, name: bytes, value: bytes) -> None:
        # Names and values count towards max_header_bytes. The sum is checked when the headers
        # end (or a read ends inside them): headers are only counted, never stored, so a long
        # run of them costs no memory meanwhile. The three the protocol acts on are told by
        # their length first, then by name: the usual spelling, else any casing (RFC 9110
        # section 5.1: names are case-insensitive).
        n = len(name)
        self._head_bytes += n + len(value)
        headers = self._headers
        if headers is not None:
            headers.append((name.lower(), value))
        if n == 14:
            if name == b"Content-Length" or name.lower() == b"content-length":
                # llhttp has already refused anything but digits and conflicting duplicates.
                # Kept as digits: the number is needed only when it could pass the limit.
                self._special = True
                self._content_length = value
        elif n == 6:
            if name == b"Expect" or name.lower() == b"expect":
                self._special = True
                self._expect = value
        elif n == 10:
            if name == b"Connection" or name.lower() == b"connection":
                self._special = True
                if b"keep-alive" in value.lower():
                    self._echo_keep_alive = True
        elif n == 13:
            # Authorization first: with access control every request has it, and a failed
            # test of the other spelling would lower-case it (~370 instructions).
            if name == b"Authorization" or name.lower() == b"authorization":
                # For access control (wonderq.auth): the router checks it when it is on.
                if self._authorization is not None:
                    raise _Reject(
                        error_response(400, "bad_request", "more than one Authorization header")
                    )
                # With access control, the connection's Lifter keeps one object per value
                # (as for a lifted line): the router's cache finds its hash computed, or its
                # last decision by identity.
                lifter = self._lifter
                self._authorization = value if lifter is None else lifter.keep(value)
            elif name == b"If-None-Match" or name.lower() == b"if-none-match":
                # For the status page's assets: 304 when it names their ETag.
                self._special = True
                self._if_none_match = value

    def on_headers_complete(self) -> None:
        self._phase = _BODY
        if self._special or self._head_bytes > self._max_header_bytes:
            self._check_head()

    def _check_head(self) -> None:
        if self._head_bytes > self._max_header_bytes:
            raise _Reject(error_response(431, "headers_too_large", self._headers_message()))
        if self._special:
            length = self._content_length
            if (
                length is not None
                and len(length) >= self._max_body_digits
                and int(length) > self._max_body_bytes
            ):
                # Refuse before reading the body (DESIGN.md "Limits"); the connection closes.
                raise _Reject(self._too_large())
            if self._expect is not None:
                self._expect_received(self._expect)

    def on_body(self, data: bytes) -> None:
        if self._body is None and len(data) <= self._max_body_bytes:
            self._body = data  # the usual case: the whole body in one piece
        else:
            self._more_body(data)

    def _more_body(self, data: bytes) -> None:
        # _body_bytes is kept only while _body is a list of pieces.
        body = self._body
        if body is None:
            size = len(data)
        elif type(body) is list:
            size = self._body_bytes + len(data)
        else:
            size = len(body) + len(data)
        if size > self._max_body_bytes:
            raise _Reject(self._too_large())  # chunked, or more than the declared length
        self._body_bytes = size
        if body is None:
            self._body = data
        elif type(body) is list:
            body.append(data)
        else:
            self._body = [body, data]

    def on_message_complete(self) -> None:
        body = self._body
        if body is None:
            body = b""
        else:
            self._body = None
            if type(body) is list:
                body = b"".join(body)
        url: bytes = self._url  # type: ignore[assignment]
        self._url = None
        self._phase = _IDLE
        self._head_bytes = 0
        if url[0] != 47:  # not "/": the absolute form, or "*"
            path, _, query = _origin_form(url.decode("latin-1")).partition("?")
        else:
            mark = _query_mark(url)
            if mark < 0:
                path = url.decode("latin-1")
                query = ""
            else:  # compiled, each slice decodes in place, without a bytes copy first
                path = url[:mark].decode("latin-1")
                query = url[mark + 1 :].decode("latin-1")
        raw_method: bytes = self._get_method()
        if raw_method == self._raw_method:  # the method of the previous request, usually
            method = self._method
        else:
            method = _METHODS.get(raw_method) or raw_method.decode("latin-1")
            self._raw_method = raw_method
            self._method = method
        keep_alive = self._should_keep_alive()
        req = _new_request(method, path, query, body, keep_alive, self)
        req.headers = self._headers
        echo = False
        if self._special:
            req.echo_keep_alive = echo = self._echo_keep_alive
            self._special = self._echo_keep_alive = False
            self._content_length = None
            self._expect = None
            self._continue_pending = False
            if self._if_none_match is not None:
                req.if_none_match = self._if_none_match
                self._if_none_match = None
        if self._authorization is not None:
            req.authorization = self._authorization
            self._authorization = None
        if not keep_alive:
            # Connection: close, or HTTP/1.0 without keep-alive: this is the last request
            # (RFC 9112 section 9.6); llhttp would refuse anything after it anyway.
            self._reading_done = True
            self._plain = False
        if self._busy is not None or self._queue:
            self._enqueue(req)  # behind a parked request
            if len(self._queue) >= MAX_QUEUED_REQUESTS:
                self._pause(_PAUSE_PIPELINE)
            return
        response = self._answer_of(req)
        if response is None:
            return
        # The common answer, inline: keep-alive, a body, a cached head; three pieces that
        # _flush joins with the rest of the read's answers.
        status, body, headers = response
        if self._plain and not echo and status != 204 and status != 304 and method != "HEAD":
            out = self._out
            out.append(_prefix(status, headers))
            n = len(body)
            out.append(_LENGTH_TAILS[n] if n < _LENGTH_TAILS_MAX else b"%d\r\n\r\n" % n)
            if type(body) is bytes:
                out.append(body)
            else:
                self._append_body(body)
        else:
            self._write(req, response)

    # ---- the pipeline -----------------------------------------------------------------------

    def _run(self, req: Request) -> None:
        """Dispatch a request that waited in the pipeline, or answer a failed one."""
        response = req.response
        if response is None:
            response = self._answer_of(req)
            if response is None:
                return
        else:
            self._app.count("-", response[0])
        self._write(req, response)

    def _answer_of(self, req: Request) -> Response | None:
        """The application's answer to ``req``, or None when it parked it (the answer comes
        later through complete()). A failure of dispatch itself is a 500, never a lost
        connection."""
        try:
            response = self._dispatch(req)
        except Exception:
            log.exception("dispatch of %s %s failed", req.method, req.path)
            self._app.count("-", 500)
            return error_response(500, "internal_error", "internal server error")
        if response is None:
            self._park(req)
        return response

    def _park(self, req: Request) -> None:
        self._busy = req
        self._set_deadline(_T_BUSY, 0.0)

    def complete(self, req: Request, response: Response) -> None:
        """Answer the deferred request ``req`` and carry on with the pipeline behind it.

        Does nothing if the connection was closed meanwhile (the app was told by ``cancel``).
        The app must call this from a later callback, never from inside ``dispatch``.
        """
        if req is not self._busy or self.closed or req is self._stream:
            return
        self._busy = None
        self._write(req, response)
        queue = self._queue
        while queue and self._busy is None and not self.closed:
            self._run(queue.popleft())
        if not queue and queue is not _NO_QUEUE and self._queue is queue:
            self._queue = _NO_QUEUE  # drained: give the deque back
        if self.closed or self._busy is not None:
            self._flush()
            return
        if self._paused & _PAUSE_PIPELINE:
            self._resume(_PAUSE_PIPELINE)
        if self._continue_pending:
            self._continue_pending = False
            self._out.append(_CONTINUE)
        self._flush()
        self._last_active = self._loop_time()
        self._arm_for_state()

    def _flush(self) -> None:
        """Write the answers gathered so far in one go (one send() for a whole pipeline)."""
        out = self._out
        if out:
            if self._transport is None:  # the connection is gone: nothing to join or send
                out.clear()
                self._out_views = False
                return
            if self._out_views or len(out[-1]) >= _WRITE_AS_IS_BYTES:
                # Big bodies (a receive's BodyViews, /metrics of 100,000 queues): handed
                # to the transport as they are, with what is around them, and sent with one
                # writev, instead of first copied into one new buffer (perf: the join was a
                # 39 MB memcpy, ~20 ms of the loop, in a scrape of 100,000 queues).
                self._transport.writelines(out)
                out.clear()
                self._out_views = False
                return
            data = b"".join(out)
            out.clear()
            self._transport.write(data)

    def _append_body(self, body: Any) -> None:
        """Queue an answer's body for _flush: bytes, or a SplitBody's pieces (a receive
        whose big bodies are views of the messages' blocks, _core.BodyView)."""
        if type(body) is SplitBody:
            self._out.extend(body.pieces)
            self._out_views = True
        else:
            self._out.append(body)

    def _write(self, req: Request, response: Response) -> None:
        """Queue the answer to ``req`` for _flush(); close after it if it is the last."""
        status, body, headers = response
        if self._transport is None:
            return
        keep_alive = req.keep_alive
        closing = self._reading_done or self._shutting_down or self._owner.shutting_down
        if keep_alive and closing and not self._queue:
            keep_alive = False  # the last answer: no more requests, or a graceful close
        if not keep_alive:
            tail = _CLOSE_TAIL
        elif req.echo_keep_alive:
            tail = _KEEP_ALIVE_TAIL  # RFC 9112 section 9.3: HTTP/1.0 keep-alive is opt-in
        else:
            tail = _PLAIN_TAIL
        prefix = _prefix(status, headers)
        out = self._out
        if status == 204 or status == 304:
            # RFC 9110 section 8.6: no Content-Length on 204 (nor a body); on 304 it would
            # have to be the length of the 200's body, so none either.
            out.append(prefix[: prefix.rindex(b"Content-Length: ")] + tail[2:])
        else:
            out.append(prefix + b"%d" % len(body) + tail)
            if req.method != "HEAD":  # RFC 9110 section 9.3.2: HEAD gets the length alone
                self._append_body(body)
        if self._log_access:
            access_log.info('%s "%s %s" %d %d', self.peer, req.method, req.path, status, len(body))
        if not keep_alive:
            if req.response is not None:
                self._linger_close()
            else:
                self._close()

    # ---- streamed answers -------------------------------------------------------------------

    def start_stream(self, req: Request, status: int, headers: bytes) -> bool:
        """Answer ``req`` with a head now and a body sent piece by piece (:meth:`send_stream`)
        until :meth:`end_stream`: server-sent events.

        Call it from ``dispatch`` (which then returns None) or later for a parked request.
        The stream is the connection's last answer, so pipelined answers cannot come out of
        order: requests pipelined behind it are dropped unanswered (RFC 9112 section 9.3.2
        lets the client retry them), input is discarded, the head says ``Connection: close``
        and the connection closes when the stream ends. The body is chunked for HTTP/1.1;
        for HTTP/1.0 it runs until the close. The application hears of the client going
        away, or of the server stopping (which ends the stream), through ``app.cancel(req)``;
        from then on the stream methods do nothing. False if the stream was not started
        (the connection is gone, or ``req`` is a HEAD: answered with the head alone).
        """
        if self.closed or self._transport is None or self._stream is not None:
            return False
        if self._busy is not None and self._busy is not req:
            raise RuntimeError("start_stream: the connection is answering another request")
        self._stop_reading()
        self._queue = _NO_QUEUE
        self._resume(_PAUSE_PIPELINE)  # keep reading, to see the client's close
        chunked = self._parser.get_http_version() != "1.0"
        head = _head_start(status, headers)
        if chunked:
            head += b"Transfer-Encoding: chunked\r\n"
        self._out.append(head + b"Connection: close\r\n\r\n")
        if self._log_access:
            access_log.info('%s "%s %s" %d stream', self.peer, req.method, req.path, status)
        if req.method == "HEAD":
            self._close()
            return False
        self._busy = req
        self._stream = req
        self._stream_chunked = chunked
        self._set_deadline(_T_BUSY, 0.0)
        self._flush()
        return True

    def send_stream(self, req: Request, data: bytes) -> bool:
        """Send one piece of the body of the stream ``req``. False if it was not sent: the
        stream is over, or the client is not reading (the transport's buffer is over its
        high-water mark), in which case the piece is dropped whole, never half of it, so an
        event stream skips events instead of buffering without bound."""
        if req is not self._stream or self._transport is None:
            return False
        if self._paused & _PAUSE_WRITE_BUFFER:
            return False
        if not data:
            return True  # an empty chunk would end the body
        if self._stream_chunked:
            self._transport.write(b"%x\r\n" % len(data) + data + b"\r\n")
        else:
            self._transport.write(data)
        return True

    def end_stream(self, req: Request) -> None:
        """End the stream ``req`` (the last chunk) and close the connection."""
        if req is not self._stream:
            return
        self._stream = None
        self._busy = None
        if self._stream_chunked:
            self._out.append(b"0\r\n\r\n")
        self._close()

    # ---- the slow path of a read ----------------------------------------------------------

    def _after_partial_read(self, nbytes: int) -> None:
        """A read ended inside a request, behind a parked one, or after the last one."""
        if self._reading_done or self._busy is not None or self.closed:
            return
        if self._phase == _HEAD:
            # httptools buffers a header line until it ends and calls us only then; count the
            # bytes of reads that completed nothing, so a line that never ends is bounded.
            # Progress = a new message (a new _url object), more URL (a longer, new object),
            # or another complete header line (_head_bytes grew).
            if self._url is not self._head_mark_url or self._head_bytes != self._head_mark:
                self._head_mark_url = self._url
                self._head_mark = self._head_bytes
                self._head_raw_bytes = 0
            else:
                self._head_raw_bytes += nbytes
            if (
                self._head_bytes > self._max_header_bytes
                or self._head_raw_bytes > self._max_header_bytes
            ):
                self._fail(431, "headers_too_large", self._headers_message())
                return
        elif self._content_length is not None and self._reader is None:
            self._start_body_reader()
        self._last_active = self._loop_time()
        self._arm_for_state()

    # ---- a big body ---------------------------------------------------------------------

    def _start_body_reader(self) -> None:
        """A read ended inside a body: if it is a big one, have the rest of it read straight
        into the bytes the request will get (wonderq.bodyread), or into the block of the
        message it publishes, instead of as httptools' pieces."""
        size = int(self._content_length)  # type: ignore[arg-type]
        if size < BIG_BODY_BYTES:
            return
        new_block = None
        body_block = getattr(self._app, "body_block", None)
        if body_block is not None and self._url is not None:
            new_block = partial(body_block, self._get_method(), self._url, size)
        reader = take_over(self, self._transport, size, self._body, new_block)
        if reader is not None:
            self._body = None
            self._body_bytes = 0
            self._reader = reader

    def _body_progress(self) -> None:
        """The reader took in another piece of the body: the next is due within the idle
        timeout, as in _after_partial_read."""
        self._last_active = self._loop_time()

    def _body_read(self, body: Any) -> None:
        """The reader has the whole body: complete the message as httptools would have,
        then carry on with a new parser (the old one still waits for the body's bytes)."""
        self._reader = None
        transport = self._transport
        if transport is None:
            return
        transport.set_protocol(self)  # type: ignore[arg-type]
        if self.closed or self._reading_done:
            return
        self._body = body
        try:
            self.on_message_complete()
        except _Reject as exc:
            self._fail_with(exc.response)
        except Exception:
            log.exception("completing a request of %s failed", self.peer)
            self._fail(500, "internal_error", "internal server error")
        self._new_parser()
        if self._out:
            self._flush()
        self._active = True

    def _new_parser(self) -> None:
        """A fresh httptools parser for this connection (at the start, and after a big body
        read past the old one, which still waits for the body's bytes)."""
        parser = httptools.HttpRequestParser(self)
        self._parser = parser
        # Bound once: the hot path calls these for every request.
        self._feed = parser.feed_data
        self._get_method = parser.get_method
        self._should_keep_alive = parser.should_keep_alive

    def _drop_reader(self) -> None:
        reader = self._reader
        self._reader = None
        if reader is not None:
            reader.cancel()
            if self._transport is not None:
                self._transport.set_protocol(self)  # type: ignore[arg-type]

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
            self._enqueue(req)

    def _enqueue(self, req: Request) -> None:
        queue = self._queue
        if queue is _NO_QUEUE:
            queue = self._queue = deque()
        queue.append(req)  # type: ignore[union-attr]

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer before reading anything (over the connection cap, or shutting down)."""
        self._stop_reading()
        status, body, headers = error_response(status, code, message)
        self._app.count("-", status)
        self._transport.write(  # type: ignore[union-attr]
            _build_prefix(status, headers) + b"%d" % len(body) + _CLOSE_TAIL + body
        )
        self._linger_close()

    def _stop_reading(self) -> None:
        self._reading_done = True
        self._plain = False
        self._phase = _IDLE
        self._body = None
        if self._reader is not None:
            self._drop_reader()

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
        if self._content_length is not None and int(self._content_length) == 0:
            return
        if self._busy is None and not self._queue:
            # The length (if declared) passed the limit, so the body will be accepted.
            self._out.append(_CONTINUE)  # flushed when this read is done
        else:
            # A 100 now would land in the middle of an earlier request's answer.
            self._continue_pending = True

    # ---- closing ----------------------------------------------------------------------------

    def _close(self) -> None:
        if self.closed:
            return
        self._flush()
        self.closed = True
        self._reading_done = True
        self._plain = False
        self._transport.close()  # type: ignore[union-attr]  # flushes what is buffered

    def _linger_close(self) -> None:
        """Send our FIN, discard what the client still sends, close on its FIN or in LINGER_S."""
        if self.closed or self._linger:
            return
        self._linger = True
        self._flush()
        transport = self._transport
        if transport is None:
            return
        self._resume(self._paused)
        if transport.can_write_eof():
            transport.write_eof()
            self._set_deadline(_T_LINGER, self._loop_time() + LINGER_S)
        else:
            self._close()

    def shutdown(self) -> None:
        """Graceful stop: close now if idle, else after the answer in progress."""
        self._shutting_down = True
        self._plain = False
        if self.closed:
            return
        stream = self._stream
        if stream is not None:
            # A stream never ends by itself: end it now and tell the application.
            self.end_stream(stream)
            try:
                self._app.cancel(stream)
            except Exception:
                log.exception("cancelling the stream of %s failed", self.peer)
            return
        if self._busy is None and not self._queue and not self._phase:
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
        """Point the timer at what the parser is waiting for now (not while busy)."""
        self._set_deadline(_T_PARSE, self._parse_deadline())

    def _parse_deadline(self) -> float:
        """Loop time by which the awaited bytes must come: the next request within the idle
        timeout, a request's headers within the header timeout of its first read (trickling
        bytes does not extend it), each piece of a body within the idle timeout."""
        if self._phase == _HEAD:
            if self._head_deadline == 0.0:
                self._head_deadline = self._last_active + self._header_timeout_s
            return self._head_deadline
        return self._last_active + self._idle_timeout_s

    def _set_deadline(self, kind: int, deadline: float) -> None:
        """Guard ``kind`` until loop time ``deadline`` (_T_BUSY: no deadline)."""
        self._timer_kind = kind
        self._deadline = deadline
        if kind == _T_BUSY:
            return  # a parked request is bounded by its own wait; the timer idles
        # Unless the armed timer fires first: it then sees the later deadline and re-arms.
        self._deadlines.arm(self, deadline)

    def _on_timer(self) -> None:
        """The armed tick came (Deadlines has disarmed it)."""
        if self.closed:
            return
        kind = self._timer_kind
        if kind == _T_BUSY:
            return
        if self._active:
            # Requests came and went since the timer was armed (the hot path only sets this
            # flag): start a new period from now.
            self._active = False
            self._last_active = self._loop_time()
        # For _T_PARSE the deadline moves with every read (_last_active), so it is computed
        # now rather than stored by the hot path.
        deadline = self._deadline if kind == _T_LINGER else self._parse_deadline()
        if self._loop_time() < deadline:
            self._deadlines.arm(self, deadline)
            return
        if kind == _T_LINGER:
            self.abort()
        elif self._phase == _IDLE:
            self._close()  # an idle keep-alive connection: close quietly
        else:
            log.info("closing %s: request not received in time", self.peer)
            self._fail(408, "request_timeout", "the request was not received in time")


class Deadlines:
    """The timers of many connections on one loop timer.

    A timer per connection from ``loop.call_at`` is a TimerHandle, a UVTimer and libuv's
    timer: ~550 bytes, an eighth of an idle keep-alive connection (bench/connections.py).
    Here a connection's timer is its membership of the set of the tick its deadline rounds
    up to (TICKS_PER_S), a few dozen bytes, and the loop holds one timer: for the earliest
    tick that has connections. Disarming (a connection closing) removes it at once, so
    nothing is kept for a connection that is gone."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._buckets: dict[int, set[HttpProtocol]] = {}  # tick -> the connections armed for it
        self._ticks: list[int] = []  # heap of the ticks in _buckets
        self._handle: asyncio.TimerHandle | None = None  # the loop's timer, for _handle_tick
        self._handle_tick = 0
        self._fired = 0  # the last tick _fire took as due: a later arm goes after it

    def arm(self, proto: HttpProtocol, when: float) -> None:
        """Fire ``proto._on_timer`` at the first tick at or after loop time ``when``, unless
        it is armed for that tick or an earlier one already."""
        tick = int(when * TICKS_PER_S) + 1
        if tick <= self._fired:
            # Due already (a deadline that has passed, or one less than the loop's rounding
            # away, re-armed from its tick's callback): the next tick, not that one again.
            tick = self._fired + 1
        old = proto._tick
        if old:
            if old <= tick:
                return
            self.disarm(proto)
        bucket = self._buckets.get(tick)
        if bucket is None:
            bucket = self._buckets[tick] = set()
            heappush(self._ticks, tick)
            if self._handle is None or tick < self._handle_tick:
                self._call_at(tick)
        bucket.add(proto)
        proto._tick = tick

    def disarm(self, proto: HttpProtocol) -> None:
        """``proto`` has no timer any more."""
        tick = proto._tick
        if not tick:
            return
        proto._tick = 0
        bucket = self._buckets.get(tick)
        if bucket is not None:
            bucket.discard(proto)
            # An empty bucket stays until its tick: its entry in the heap is there anyway.

    def _call_at(self, tick: int) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._loop.call_at(tick / TICKS_PER_S, self._fire)
        self._handle_tick = tick

    def _fire(self) -> None:
        self._handle = None
        # The ticks due now, taken out before any connection's callback runs: a connection
        # that re-arms (its deadline moved later) goes into a new bucket, which this call
        # does not fire. libuv rounds timers to milliseconds, so a tick whose time is less
        # than one away is due.
        now = self._fired = int((self._loop.time() + 0.001) * TICKS_PER_S)  # loop time only grows
        ticks = self._ticks
        due = []
        while ticks and ticks[0] <= now:
            tick = heappop(ticks)
            bucket = self._buckets.pop(tick, None)
            if bucket:
                due.append((tick, bucket))
        for tick, bucket in due:
            for proto in bucket:
                # Disarmed or moved to an earlier tick by an earlier callback: not this
                # tick's any more.
                if proto._tick == tick:
                    proto._tick = 0
                    try:
                        proto._on_timer()
                    except Exception:  # one connection's bug stops no other's timer
                        log.exception("the timer of connection %s failed", proto.peer)
        # A callback's arm may have pointed the loop's timer at its own, later tick: the
        # earliest one left comes first.
        if ticks and (self._handle is None or ticks[0] < self._handle_tick):
            self._call_at(ticks[0])


def protocol_factory(app: App, owner: Owner, settings: Any) -> Callable[[], HttpProtocol]:
    """The factory ``loop.create_server`` wants: one HttpProtocol per accepted connection,
    all of them on one Deadlines."""
    deadlines = Deadlines(asyncio.get_event_loop())
    return lambda: HttpProtocol(app, owner, settings, deadlines)
