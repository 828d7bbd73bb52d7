"""Routes and validation: the only module that knows both HTTP and the engine.

The interface, for whoever adds routes (the named-queue routes of DESIGN.md come next):

* A handler is a method ``handle_<verb>(self, req: Request) -> Response | None``.
  ``req.method``, ``req.path`` and ``req.query`` are str (the query raw, not decoded),
  ``req.body`` bytes, ``req.params`` the ``{name}`` segments of the route template (raw
  str). It returns ``(status, body_bytes, header_lines)``: usually
  ``(200, body, JSON_HEADERS)``; ``(204, b"", b"")`` for no content (the protocol then sends
  no Content-Length); extra headers are complete ``Name: value\r\n`` lines.
* Register it in :meth:`Api.routes` with ``add(method, template, handler)``. Templates may
  hold ``{name}`` segments (``/v1/queues/{queue}/messages/{id}``), each matching one path
  segment; exact paths are one dict lookup, templates are tried in order. A known path with
  another method is a 405 with ``Allow``, an unknown path a 404, both built here.
  ``"<METHOD> <template>"`` is the ``route`` label of ``wonderq_http_requests_total``.
* Parameters: ``params = parse_query(req.query)``, then :func:`param_cid`,
  :func:`param_int`, :func:`param_id` and :func:`param_ms` (times in seconds to whole ms,
  rounded up), which raise the 400s with messages naming the parameter. A body is whatever
  the route says (raw message, JSON); parse JSON with ``json.loads`` and raise
  :class:`BadParameter` for a bad one.
* Errors: raise :class:`ApiError` (or :class:`BadParameter`, :class:`NotFound`); engine
  exceptions (``EngineError`` with ``.status``, ``.code``, ``str()``) may simply propagate.
  Both become the JSON error shape in one place, :meth:`Api._error_response`. Anything else
  is a 500 with a logged traceback; the connection carries on.
* Engine calls take ``now_ms()``. Use the building blocks: :meth:`Api.publish_one` (publish,
  wake the queue's long polls, re-arm the expiry timer) and :meth:`Api.receive_or_park`
  (receive, or park a long poll). After any other call that can create an earlier deadline
  (change lease) call :meth:`Api.note_deadline`; after one that can make messages available
  (release with timeout 0, which may also dead-letter) call :meth:`Api.wake_all`.

The three seed routes are written out by hand (validated-value caches, inlined engine
calls): they are the hot path the benchmarks measure.
"""

from __future__ import annotations

import json
import logging
import re
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from time import monotonic_ns
from typing import Any, Protocol
from urllib.parse import unquote_plus

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from . import _core
from .protocol import JSON_HEADERS, Request, Response, error_response

__all__ = [
    "Api",
    "ApiError",
    "BadParameter",
    "MethodNotAllowed",
    "NotFound",
    "Router",
    "now_ms",
    "param_cid",
    "param_id",
    "param_int",
    "param_ms",
    "parse_query",
]

log = logging.getLogger("wonderq.api")

DEFAULT_QUEUE = "default"
MAX_ID = 2**63 - 1
MAX_VISIBILITY_MS = 43_200_000
MAX_DELAY_MS = 604_800_000
MAX_WAIT_MS = 20_000
# Expired waiters left in a FIFO before it is compacted (they are skipped when woken anyway).
_STALE_WAITERS = 64

Handler = Callable[[Request], "Response | None"]


def now_ms() -> int:
    """The server's clock: monotonic milliseconds, the ``now`` of every engine call."""
    return monotonic_ns() // 1_000_000


# ---- errors ---------------------------------------------------------------------------------


class ApiError(Exception):
    """A request the API refuses: answered as ``{"error": {"code", "message"}}``."""

    def __init__(self, status: int, code: str, message: str, headers: bytes = b"") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers

    def response(self) -> Response:
        """The JSON error response for this error."""
        return error_response(self.status, self.code, self.message, self.headers)


class BadParameter(ApiError):
    """400 for a bad query parameter or body; the message names the parameter."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(400, code, message)


class NotFound(ApiError):
    """404: no such route."""

    def __init__(self, message: str) -> None:
        super().__init__(404, "not_found", message)


class MethodNotAllowed(ApiError):
    """405 with the ``Allow`` header (RFC 9110 section 15.5.6)."""

    def __init__(self, method: str, route: Route) -> None:
        methods = sorted(route.handlers)
        super().__init__(
            405,
            "method_not_allowed",
            f"{method} is not allowed on {route.name}; use {' or '.join(methods)}",
            b"Allow: " + ", ".join(methods).encode() + b"\r\n",
        )


# ---- query parameters -------------------------------------------------------------------------


class _Repeated:
    """Marks a parameter given more than once (a 400 if a handler reads it)."""

    def __repr__(self) -> str:
        return "REPEATED"


REPEATED: Any = _Repeated()
_NO_PARAMS: dict[str, str] = {}


def parse_query(query: str) -> dict[str, str]:
    """Split a raw query string into ``{name: value}``; a repeated name maps to REPEATED.

    The hot path (no ``%`` or ``+``) is a plain split, which measured cheaper than any
    "clever" C-level trick for the two or three parameters a request has. Percent-encoded
    queries are decoded as UTF-8 (``+`` is a space, as in forms); undecodable bytes are a
    400. Do not mutate the result of an empty query (it is shared).
    """
    if not query:
        return _NO_PARAMS
    if "%" in query or "+" in query:
        return _parse_query_general(query, decode=True)
    params: dict[str, str] = {}
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if name in params:
            params[name] = REPEATED
        elif part:
            params[name] = value
    return params


def _parse_query_general(query: str, decode: bool) -> dict[str, str]:
    params: dict[str, str] = {}
    try:
        for part in query.split("&"):
            if part:
                name, _, value = part.partition("=")
                if decode:
                    # The query is latin-1 text of the raw bytes: back to bytes, then UTF-8.
                    name = unquote_plus(name.encode("latin-1").decode("utf-8"), errors="strict")
                    value = unquote_plus(value.encode("latin-1").decode("utf-8"), errors="strict")
                params[name] = REPEATED if name in params else value
    except UnicodeDecodeError:
        raise BadParameter("invalid_query", "the query string is not valid UTF-8") from None
    return params


# Values that passed validation before: consumers send the same cid, limit and visibility
# strings again and again, so one dict lookup replaces the checks. Bounded (cleared when
# full); the range of each parameter is still checked on every use.
_INTS: dict[str, int] = {}  # plain ASCII digits -> int, at most MAX_ID
_MILLIS: dict[str, int] = {}  # plain decimal seconds -> whole ms rounded up, at most 2**40
_CACHE_SIZE = 4096


def param_int(
    params: dict[str, str],
    name: str,
    lo: int,
    hi: int,
    default: int | None,
    cache: bool = True,
) -> int:
    """An integer parameter in ``lo..hi`` written in plain digits; ``default`` None = required.

    ``cache`` False for values that rarely repeat (message ids)."""
    value = params.get(name)
    if value is None:
        if default is None:
            raise BadParameter(f"invalid_{name}", f"{name} is required")
        return default
    number = _INTS.get(value)
    if number is None:
        if value is REPEATED:
            raise BadParameter(f"invalid_{name}", f"{name} must be given only once")
        number = _parse_digits(value, cache)
    if lo <= number <= hi:
        return number
    raise BadParameter(f"invalid_{name}", f"{name} must be an integer from {lo} to {hi}")


def _parse_digits(value: str, cache: bool) -> int:
    """Plain ASCII digits to an int at most MAX_ID; -1 for anything else."""
    # isascii() first: str.isdigit() also accepts digits of other scripts and superscripts.
    if not (value.isascii() and value.isdigit()):
        return -1
    digits = value.lstrip("0") or "0"
    if len(digits) > 19:  # also keeps int() away from thousands of digits
        return -1
    number = int(digits)
    if number > MAX_ID:
        return -1
    if cache:
        if len(_INTS) >= _CACHE_SIZE:
            _INTS.clear()
        _INTS[value] = number
    return number


def param_id(params: dict[str, str], name: str = "id") -> int:
    """A required message id, 1..2^63-1."""
    return param_int(params, name, 1, MAX_ID, None, cache=False)


def param_cid(params: dict[str, str]) -> int:
    """The required consumer id ``cid``, 0..2^63-1."""
    return param_int(params, "cid", 0, MAX_ID, None)


def param_ms(params: dict[str, str], name: str, max_ms: int, default: int) -> int:
    """A time in seconds written as a plain decimal (``30``, ``0.25``), as whole milliseconds
    rounded up, in ``0..max_ms``; ``default`` when absent. No sign, exponent, nan or inf."""
    value = params.get(name)
    if value is None:
        return default
    ms = _MILLIS.get(value)
    if ms is None:
        if value is REPEATED:
            raise BadParameter(f"invalid_{name}", f"{name} must be given only once")
        ms = _parse_seconds(value)
    if 0 <= ms <= max_ms:
        return ms
    raise BadParameter(
        f"invalid_{name}",
        f"{name} must be a number of seconds from 0 to {max_ms / 1000:g}, written like 30 or 0.25",
    )


def _parse_seconds(value: str) -> int:
    """``30`` or ``0.25`` to whole milliseconds rounded up (cached); -1 if not that form."""
    whole, dot, fraction = value.partition(".")
    if not (
        value.isascii()
        and whole.isdigit()
        and (not dot or fraction.isdigit())
        and len(whole.lstrip("0")) <= 9  # 10**9 s is far past every limit
    ):
        return -1
    ms = int(whole) * 1000
    if fraction:
        ms += int(fraction[:3].ljust(3, "0"))
        if fraction[3:].strip("0"):
            ms += 1  # round up: 0.0001 s is 1 ms, never 0
    if len(_MILLIS) >= _CACHE_SIZE:
        _MILLIS.clear()
    _MILLIS[value] = ms
    return ms


# ---- routing ----------------------------------------------------------------------------------


class Route:
    """One path template and its handlers by method.

    ``handlers`` maps a method to ``(handler, label, counts)``: the label
    (``"GET /v1/consumer"``) is the ``route`` of ``wonderq_http_requests_total``, built once
    here, and ``counts`` is a list indexed by status, bumped on the hot path (a list index
    is the cheapest counter Python has) and read by the collector at scrape time.
    """

    __slots__ = ("handlers", "name", "pattern")

    def __init__(self, name: str, pattern: re.Pattern[str] | None) -> None:
        self.name = name  # the template (the metric label of a 405)
        self.pattern = pattern  # None for a path without {params}
        self.handlers: dict[str, tuple[Handler, str, list[int]]] = {}


class Router:
    """Exact paths are one dict lookup; templates with ``{name}`` are tried in order."""

    def __init__(self) -> None:
        self.static: dict[str, Route] = {}
        self.dynamic: list[Route] = []
        self._by_name: dict[str, Route] = {}

    def add(self, method: str, template: str, handler: Handler) -> None:
        """Route ``method template`` to ``handler``."""
        route = self._by_name.get(template)
        if route is None:
            if "{" in template:
                regex = re.sub(r"\\{(\w+)\\}", r"(?P<\1>[^/]+)", re.escape(template))
                route = Route(template, re.compile(regex + r"\Z"))
                self.dynamic.append(route)
            else:
                route = Route(template, None)
                self.static[template] = route
            self._by_name[template] = route
        if method in route.handlers:
            raise ValueError(f"{method} {template} is routed twice")
        route.handlers[method] = (handler, f"{method} {template}", [0] * 600)

    def match(self, path: str) -> tuple[Route | None, dict[str, str] | None]:
        """The route of ``path`` and its path parameters, or ``(None, None)``."""
        route = self.static.get(path)
        if route is not None:
            return route, None
        for route in self.dynamic:
            m = route.pattern.match(path)  # type: ignore[union-attr]
            if m is not None:
                return route, m.groupdict()
        return None, None


# ---- long polling -----------------------------------------------------------------------------


class Waiter:
    """A parked receive: answered by wake(), by the end of its wait, or at shutdown."""

    __slots__ = ("active", "cid", "limit", "queue", "req", "timer", "visibility_ms")

    def __init__(self, req: Request, queue: str, cid: int, limit: int, visibility_ms: int) -> None:
        self.req = req
        self.queue = queue
        self.cid = cid
        self.limit = limit
        self.visibility_ms = visibility_ms
        self.timer: Any = None
        self.active = True  # False once answered or cancelled; it then leases nothing


class WaitQueue:
    """The FIFO of waiters of one queue. Finished waiters are dropped lazily."""

    __slots__ = ("fifo", "live")

    def __init__(self) -> None:
        self.fifo: deque[Waiter] = deque()
        self.live = 0  # active waiters in fifo


class Expiry(Protocol):
    """The server's expiry timer, as the API sees it."""

    armed_ms: int  # deadline the timer is armed for; a huge number when not armed

    def arm(self, deadline_ms: int) -> None:
        """Fire at ``deadline_ms`` (earlier than what is armed)."""


_EMPTY_MESSAGES = b'{"messages":[]}'
_TRUE: Response = (200, b"true", JSON_HEADERS)
_FALSE: Response = (200, b"false", JSON_HEADERS)
_HEALTHY: Response = (200, b'{"status":"ok"}', JSON_HEADERS)
_NO_MESSAGES: Response = (200, _EMPTY_MESSAGES, JSON_HEADERS)
_METRICS_HEADERS = b"Content-Type: " + CONTENT_TYPE_PLAIN_0_0_4.encode() + b"\r\n"
_INTERNAL_ERROR = error_response(500, "internal_error", "internal server error")


class Api:
    """The route table and handlers over one engine ``Broker``.

    ``expiry`` is the server's timer (see :class:`Expiry`); ``call_later`` schedules the end
    of a long poll (``loop.call_later``); ``connection_count`` feeds ``wonderq_connections``.
    """

    def __init__(
        self,
        broker: Any,
        *,
        max_batch: int,
        expiry: Expiry,
        call_later: Callable[..., Any],
        connection_count: Callable[[], int] = lambda: 0,
    ) -> None:
        self.broker = broker
        self.max_batch = max_batch
        self.expiry = expiry
        self._call_later = call_later
        self.closing = False  # shutting down: long polls answer at once
        self.waiters: dict[str, WaitQueue] = {}  # only queues with live waiters
        # (route label, status) -> responses not counted by a route's own dict (404, 405,
        # deferred answers, the protocol's errors); see request_counts().
        self._other_counts: dict[tuple[str, int], int] = {}
        self.router = Router()
        self.routes(self.router.add)
        # path -> {method: (handler, label, counts)}: the hot path's one-lookup route table.
        self._static = {path: route.handlers for path, route in self.router.static.items()}
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        self.registry.register(EngineCollector(self, connection_count))
        self._openapi: bytes | None = None

    def routes(self, add: Callable[[str, str, Handler], None]) -> None:
        """The route table."""
        add("POST", "/v1/publish", self.handle_publish)
        add("GET", "/v1/consumer", self.handle_receive)
        add("DELETE", "/v1/consumer", self.handle_delete)
        add("GET", "/healthz", self.handle_health)
        add("GET", "/metrics", self.handle_metrics)
        add("GET", "/openapi.json", self.handle_openapi)

    # ---- the one place where outcomes become responses ---------------------------------------

    def dispatch(self, req: Request) -> Response | None:
        """Route ``req``, run its handler, map errors; None when the answer is deferred."""
        methods = self._static.get(req.path)
        if methods is None:
            return self._dispatch_dynamic(req)
        entry = methods.get(req.method)
        if entry is None:
            return self._not_allowed(req, self.router.static[req.path])
        try:
            response = entry[0](req)
        except Exception as exc:
            response = self._error_response(req, exc)
        if response is None:
            req.route = entry[1]
            return None
        entry[2][response[0]] += 1
        return response

    def _dispatch_dynamic(self, req: Request) -> Response | None:
        route, req.params = self.router.match(req.path)
        if route is None:
            self.count("-", 404)
            path = req.path if len(req.path) <= 200 else req.path[:200] + "..."
            return error_response(404, "not_found", f"no route for {req.method} {path}")
        entry = route.handlers.get(req.method)
        if entry is None:
            return self._not_allowed(req, route)
        try:
            response = entry[0](req)
        except Exception as exc:
            response = self._error_response(req, exc)
        if response is None:
            req.route = entry[1]
            return None
        entry[2][response[0]] += 1
        return response

    def _not_allowed(self, req: Request, route: Route) -> Response:
        self.count(route.name, 405)
        return MethodNotAllowed(req.method, route).response()

    def _error_response(self, req: Request, exc: Exception) -> Response:
        """The one place where a failure becomes an answer."""
        if isinstance(exc, ApiError):
            return exc.response()
        if isinstance(exc, _core.EngineError):
            return error_response(exc.status, exc.code, str(exc))
        log.error("%s %s failed", req.method, req.path, exc_info=exc)
        return _INTERNAL_ERROR

    def count(self, route: str, status: int) -> None:
        """Count one response under the route label ``route`` (``-``: no route)."""
        key = (route, status)
        self._other_counts[key] = self._other_counts.get(key, 0) + 1

    def request_counts(self) -> dict[tuple[str, int], int]:
        """Responses so far by (route label, status), for the metrics."""
        counts = dict(self._other_counts)
        for route in [*self.router.static.values(), *self.router.dynamic]:
            for _, label, by_status in route.handlers.values():
                for status, n in enumerate(by_status):
                    if n:
                        counts[(label, status)] = counts.get((label, status), 0) + n
        return counts

    def _answer(self, req: Request, response: Response) -> None:
        """Answer a deferred request (counted under the route it was dispatched to)."""
        self.count(req.route, response[0])
        req.conn.complete(req, response)

    # ---- the seed's routes on queue `default` ----------------------------------------------------

    def handle_publish(self, req: Request) -> Response:
        """``POST /v1/publish[?delay=]``: the raw body is the message; 201 ``{"id": N}``."""
        delay_ms = -1
        if req.query:
            delay_ms = param_ms(parse_query(req.query), "delay", MAX_DELAY_MS, -1)
        # publish_one() inlined: this is the hottest route.
        broker = self.broker
        msg_id = broker.publish(DEFAULT_QUEUE, req.body, monotonic_ns() // 1_000_000, delay_ms)
        if self.waiters and DEFAULT_QUEUE in self.waiters:
            self.wake(DEFAULT_QUEUE)
        deadline_ms = broker.next_deadline()
        if 0 <= deadline_ms < self.expiry.armed_ms:
            self.expiry.arm(deadline_ms)
        return (201, b'{"id":%d}' % msg_id, JSON_HEADERS)

    def handle_receive(self, req: Request) -> Response | None:
        """``GET /v1/consumer?cid=&limit=&wait=&visibility=``: lease up to ``limit`` messages."""
        # The validated-value caches inline; any miss goes through the param_* helpers,
        # which validate, raise the 400s and fill the caches.
        params = parse_query(req.query)
        get = params.get
        cid = _INTS.get(get("cid"))  # type: ignore[arg-type]
        if cid is None:
            cid = param_cid(params)
        value = get("limit")
        limit = 1 if value is None else _INTS.get(value, 0)
        if not 0 < limit <= self.max_batch:
            limit = param_int(params, "limit", 1, self.max_batch, 1)
        value = get("visibility")
        visibility_ms = -1 if value is None else _MILLIS.get(value, -2)
        if not -1 <= visibility_ms <= MAX_VISIBILITY_MS:
            visibility_ms = param_ms(params, "visibility", MAX_VISIBILITY_MS, -1)
        value = get("wait")
        if value is not None:
            wait_ms = _MILLIS.get(value, -1)
            if not 0 <= wait_ms <= MAX_WAIT_MS:
                wait_ms = param_ms(params, "wait", MAX_WAIT_MS, 0)
            if wait_ms:
                return self.receive_or_park(req, DEFAULT_QUEUE, cid, limit, visibility_ms, wait_ms)
        broker = self.broker
        body = broker.receive(DEFAULT_QUEUE, cid, limit, monotonic_ns() // 1_000_000, visibility_ms)
        deadline_ms = broker.next_deadline()
        if 0 <= deadline_ms < self.expiry.armed_ms:
            self.expiry.arm(deadline_ms)
        return (200, body, JSON_HEADERS)

    def handle_delete(self, req: Request) -> Response:
        """``DELETE /v1/consumer?cid=&id=``: ack; 200 ``true`` or ``false``."""
        params = parse_query(req.query)
        get = params.get
        cid = _INTS.get(get("cid"))  # type: ignore[arg-type]
        if cid is None:
            cid = param_cid(params)
        msg_id = _INTS.get(get("id"), 0)  # type: ignore[arg-type]
        if not msg_id:
            msg_id = param_id(params)
        if self.broker.delete(DEFAULT_QUEUE, cid, msg_id, monotonic_ns() // 1_000_000):
            return _TRUE
        return _FALSE

    def handle_health(self, req: Request) -> Response:
        """``GET /healthz``: liveness."""
        return _HEALTHY

    def handle_metrics(self, req: Request) -> Response:
        """``GET /metrics``: Prometheus text format, read from the engine now."""
        return (200, generate_latest(self.registry), _METRICS_HEADERS)

    def handle_openapi(self, req: Request) -> Response:
        """``GET /openapi.json``: the API's OpenAPI document, shipped with the package."""
        if self._openapi is None:
            self._openapi = (Path(__file__).parent / "openapi.json").read_bytes()
        return (200, self._openapi, JSON_HEADERS)

    # ---- building blocks for handlers ------------------------------------------------------------

    def publish_one(self, queue: str, body: bytes, delay_ms: int) -> int:
        """Publish ``body`` to ``queue``, then wake its waiters and re-arm the timer."""
        broker = self.broker
        msg_id: int = broker.publish(queue, body, now_ms(), delay_ms)
        if self.waiters and queue in self.waiters:
            self.wake(queue)
        self.note_deadline()
        return msg_id

    def receive_or_park(
        self, req: Request, queue: str, cid: int, limit: int, visibility_ms: int, wait_ms: int
    ) -> Response | None:
        """Lease now, or (``wait_ms`` > 0 and nothing available) park ``req`` in the FIFO of
        ``queue``'s waiters; ``visibility_ms`` -1 = the queue's visibility timeout."""
        broker = self.broker
        if wait_ms > 0 and not self.closing and broker.ready_count(queue) == 0:
            # The arguments were validated by the caller: the engine sees them only on wake.
            waiter = Waiter(req, queue, cid, limit, visibility_ms)
            waiter.timer = self._call_later(wait_ms / 1000, self._wait_ended, waiter)
            wq = self.waiters.get(queue)
            if wq is None:
                wq = self.waiters[queue] = WaitQueue()
            wq.fifo.append(waiter)
            wq.live += 1
            req.deferred = waiter
            return None
        body: bytes = broker.receive(queue, cid, limit, monotonic_ns() // 1_000_000, visibility_ms)
        deadline_ms = broker.next_deadline()
        if 0 <= deadline_ms < self.expiry.armed_ms:
            self.expiry.arm(deadline_ms)
        return (200, body, JSON_HEADERS)

    def note_deadline(self) -> None:
        """Re-arm the expiry timer if the engine's next deadline is now earlier."""
        deadline_ms: int = self.broker.next_deadline()
        if 0 <= deadline_ms < self.expiry.armed_ms:
            self.expiry.arm(deadline_ms)

    def wake(self, queue: str) -> None:
        """Answer the waiters of ``queue``, oldest first, while it has available messages."""
        wq = self.waiters.get(queue)
        if wq is None:
            return
        broker = self.broker
        fifo = wq.fifo
        answers: list[tuple[Waiter, bytes]] = []
        now = now_ms()
        try:
            while fifo and broker.ready_count(queue) > 0:
                waiter = fifo.popleft()
                if not waiter.active:
                    continue
                self._finish(waiter, wq)
                if waiter.req.conn.closed:
                    continue  # its client is gone: lease nothing to it
                body = broker.receive(queue, waiter.cid, waiter.limit, now, waiter.visibility_ms)
                answers.append((waiter, body))
        finally:
            if wq.live == 0 and self.waiters.get(queue) is wq:
                del self.waiters[queue]
            if answers:
                self.note_deadline()
            # Answer after the FIFO is consistent: answering may run pipelined requests.
            for waiter, body in answers:
                self._answer(waiter.req, (200, body, JSON_HEADERS))

    def wake_all(self) -> None:
        """wake() every queue that has waiters (after expiry, or a dead-letter move)."""
        if not self.waiters:
            return
        ready_count = self.broker.ready_count
        for queue in [q for q in self.waiters if ready_count(q) > 0]:
            self.wake(queue)

    def cancel(self, req: Request) -> None:
        """The connection of a deferred request closed: drop its waiter (it leases nothing)."""
        waiter = req.deferred
        if isinstance(waiter, Waiter) and waiter.active:
            wq = self.waiters.get(waiter.queue)
            if wq is not None:
                self._finish(waiter, wq)
                self._compact(waiter.queue, wq)

    def close(self) -> None:
        """Shutdown: answer every waiter with an empty list; later long polls answer at once."""
        self.closing = True
        for queue, wq in list(self.waiters.items()):
            for waiter in list(wq.fifo):
                if waiter.active:
                    self._finish(waiter, wq)
                    self._answer(waiter.req, _NO_MESSAGES)
            self.waiters.pop(queue, None)

    def _finish(self, waiter: Waiter, wq: WaitQueue) -> None:
        waiter.active = False
        wq.live -= 1
        if waiter.timer is not None:
            waiter.timer.cancel()
            waiter.timer = None

    def _wait_ended(self, waiter: Waiter) -> None:
        if not waiter.active:
            return
        wq = self.waiters.get(waiter.queue)
        if wq is not None:
            self._finish(waiter, wq)
            self._compact(waiter.queue, wq)
        else:
            waiter.active = False
        self._answer(waiter.req, _NO_MESSAGES)

    def _compact(self, queue: str, wq: WaitQueue) -> None:
        fifo = wq.fifo
        while fifo and not fifo[0].active:
            fifo.popleft()
        if wq.live == 0:
            if self.waiters.get(queue) is wq:
                del self.waiters[queue]
        elif len(fifo) - wq.live > max(_STALE_WAITERS, wq.live):
            wq.fifo = deque(w for w in fifo if w.active)


# ---- metrics ---------------------------------------------------------------------------------


class EngineCollector:
    """Reads the engine's counters and the request counts when /metrics is scraped."""

    def __init__(self, api: Api, connection_count: Callable[[], int]) -> None:
        self._api = api
        self._connection_count = connection_count

    def describe(self) -> list[Metric]:
        return []  # names are only known at scrape time; no duplicate checks needed

    def collect(self) -> Iterator[Metric]:
        broker = self._api.broker
        messages = GaugeMetricFamily(
            "wonderq_queue_messages", "Messages in a queue by state.", labels=["queue", "state"]
        )
        totals = {
            name: CounterMetricFamily(f"wonderq_{name}", help_text, labels=["queue"])
            for name, help_text in (
                ("published", "Messages published to the queue."),
                ("delivered", "Messages handed out by receives (redeliveries count)."),
                ("deleted", "Messages deleted (acknowledged)."),
                ("expired", "Leases that ran out."),
                ("dead_lettered", "Messages moved to the dead-letter queue."),
            )
        }
        for row in broker.stats():
            name, ready, leased, delayed, published, delivered, deleted, expired, dead = row
            messages.add_metric([name, "ready"], ready)
            messages.add_metric([name, "leased"], leased)
            messages.add_metric([name, "delayed"], delayed)
            totals["published"].add_metric([name], published)
            totals["delivered"].add_metric([name], delivered)
            totals["deleted"].add_metric([name], deleted)
            totals["expired"].add_metric([name], expired)
            totals["dead_lettered"].add_metric([name], dead)
        yield messages
        yield from totals.values()
        yield GaugeMetricFamily(
            "wonderq_memory_bytes", "Bytes of messages the engine holds.", broker.memory_bytes
        )
        yield GaugeMetricFamily(
            "wonderq_memory_limit_bytes",
            "The engine's memory limit in bytes (0 = none).",
            broker.memory_limit,
        )
        requests = CounterMetricFamily(
            "wonderq_http_requests",
            "HTTP responses by route and status.",
            labels=["route", "status"],
        )
        for (route, status), n in sorted(self._api.request_counts().items()):
            requests.add_metric([route, str(status)], n)
        yield requests
        yield GaugeMetricFamily(
            "wonderq_connections", "Open client connections.", self._connection_count()
        )
        waiting = sum(wq.live for wq in self._api.waiters.values())
        yield GaugeMetricFamily("wonderq_waiting_receives", "Parked long polls.", waiting)


def encode_json(value: Any) -> bytes:
    """Compact JSON as the engine writes it (no spaces), for handlers that build bodies."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
