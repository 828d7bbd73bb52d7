# cython: language_level=3, annotation_typing=False, always_allow_keywords=False
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

Durability (``--data-dir``): ``self.wal`` is the write-ahead log, or None (the default,
in memory). Every handler that changes durable state appends the change after the engine
call, behind one ``if self.wal is not None`` so the in-memory path pays nothing more: see the
helpers in "durability" below (:meth:`Api._log_and_answer` answers a publish or delete only
once it is on disk under ``--fsync always``, by the long poll's deferral).

The three seed routes are written out by hand (validated-value caches, engine calls in C):
they are the hot path the benchmarks measure.

Compiled. setup.py compiles this file with Cython in pure-Python mode: ``api.pxd`` beside it
declares the C types (``Api``, ``Router`` and ``Route`` become final extension types,
``dispatch`` and the hot handlers cpdef methods over the protocol's typed ``Request``, the
parameter helpers C functions, the protocol's ``split_query`` a direct C call). Callgrind,
instructions per request, whole requests fed in-process to the compiled protocol, as Python
-> compiled: publish 18.4k -> 15.1k (16 pipelined: 16.4k -> 13.1k), seed receive + delete
18.9k -> 14.7k, named-queue receive + delete 33.7k -> 18.4k (most of it the segment router
that replaced a regex per template); since then publish 12.9k (16 pipelined 10.8k) and seed
receive + delete 13.4k, with the engine's hot methods called in C through the typed
``broker``, its clock (``_core.now_ms``) and publish answer (``_core.id_json``), and the last
static route remembered. The file runs unchanged as plain Python when it is not built.
Types come only from the ``.pxd`` (``annotation_typing=False``): the annotations here are for
readers and mypy. An extension type takes no attribute it does not declare: a new attribute
of ``Api`` goes into ``api.pxd`` too (``public`` if another module reads it). After an edit,
``make build``: a build older than its source fails tests/test_build.py.
"""

from __future__ import annotations

import json
import logging
import re
from collections import deque
from collections.abc import Callable, Iterator
from decimal import ROUND_CEILING, Decimal, DecimalException
from functools import partial
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, unquote_plus

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from . import _core
from ._core import batch_ids_json, id_json, now_ms
from .protocol import JSON_HEADERS, Request, Response, error_response, split_query

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

    The hot path (nothing to decode, no name twice) is the protocol's compiled
    :func:`~wonderq.protocol.split_query`. Percent-encoded queries are decoded as UTF-8
    (``+`` is a space, as in forms); undecodable bytes are a 400. Do not mutate the result of
    an empty query (it is shared).
    """
    if not query:
        return _NO_PARAMS
    params = split_query(query)
    if params is None:
        return _parse_query_general(query, decode="%" in query or "+" in query)
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


def _plain_id(value: Any) -> int:
    """``value`` as a message id if it is 1 to 18 plain ASCII digits, not all zeros (an id as
    it stands: ids are new every time, so not worth a cache), else 0. One pass over the
    characters: compiled, a tenth of the instructions of isdigit(), isascii() and int()."""
    if type(value) is not str or len(value) > 18:
        return 0
    text: str = value
    msg_id = 0
    for char in text:
        if not "0" <= char <= "9":
            return 0
        msg_id = msg_id * 10 + (ord(char) - 48)
    return msg_id


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


# ---- queue names, path ids and JSON bodies ----------------------------------------------------

_QUEUE_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}")
_NAMES: dict[str, str] = {}  # raw {queue} path segment -> the valid name it spells


def param_queue(req: Request) -> str:
    """The ``{queue}`` path segment as a queue name, else a 400 (checked before any lookup,
    so a bad name is never a 404). Percent-encoded names are decoded first (RFC 3986 section
    6.2.2.2: ``%61`` is ``a``); what they spell must match ``[A-Za-z0-9_-]{1,80}``."""
    raw: str = req.params["queue"]  # type: ignore[index]
    name = _NAMES.get(raw)
    if name is not None:
        return name
    name = raw
    if "%" in raw:
        try:
            name = unquote(raw, errors="strict")
        except UnicodeDecodeError:
            name = ""
    if _QUEUE_NAME.fullmatch(name) is None:
        raise BadParameter(
            "invalid_queue_name", "the queue name must be 1 to 80 characters of A-Z a-z 0-9 _ -"
        )
    if len(_NAMES) >= _CACHE_SIZE:
        _NAMES.clear()
    _NAMES[raw] = name
    return name


def param_path_id(req: Request) -> int:
    """The ``{id}`` path segment: a message id, 1..2^63-1, else a 400 naming ``id``."""
    value: str = req.params["id"]  # type: ignore[index]
    return _plain_id(value) or param_id({"id": value})


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# Python's json accepts NaN and Infinity, which are not JSON (RFC 8259 section 6); numbers
# with a fraction or exponent become Decimal, so that seconds convert to ms exactly.
_decode_json = json.JSONDecoder(parse_float=Decimal, parse_constant=_refuse_constant).decode


def parse_json(body: bytes, what: str) -> Any:
    """The request body as JSON (strict UTF-8, no NaN/Infinity), else a 400 ``invalid_body``
    whose message starts with ``what`` (``"the batch"``)."""
    try:
        return _decode_json(body.decode())
    except UnicodeDecodeError:
        raise BadParameter("invalid_body", f"{what} is not valid UTF-8") from None
    except (ValueError, RecursionError):
        raise BadParameter("invalid_body", f"{what} is not valid JSON") from None
    except DecimalException:  # an exponent Decimal cannot hold: 1e-99999999999999999999
        raise BadParameter("invalid_body", f"{what} holds a number out of range") from None


_MS = Decimal("0.001")


def json_seconds_ms(value: Any, name: str, max_ms: int, code: str = "invalid_attribute") -> int:
    """A JSON number of seconds (int, or Decimal from :func:`parse_json`) as whole ms rounded
    up, in ``0..max_ms``, else a 400 naming ``name``. Booleans, strings and null are refused."""
    cls = value.__class__
    ms = -1
    if cls is int:
        ms = value * 1000
    elif cls is Decimal and 0 <= value <= max_ms // 1000:  # compared first: 1e999 stays cheap
        ms = int(value.quantize(_MS, rounding=ROUND_CEILING) * 1000)  # exact: 0.0001 -> 1
    if 0 <= ms <= max_ms:
        return ms
    raise BadParameter(code, f"{name} must be a number of seconds from 0 to {max_ms // 1000}")


def ids_json(ids: list[int]) -> bytes:
    """``ids`` as the items of a JSON array (``b"7,8,9"``). The batch routes' usual answers
    are built in C (``_core.batch_ids_json``, ``Broker.ack_json``); this serves the rest."""
    return ",".join(map(str, ids)).encode()


def _seconds(ms: int) -> int | float:
    """Whole ms as JSON seconds: ``30`` for 30000, ``0.25`` for 250."""
    return ms // 1000 if ms % 1000 == 0 else ms / 1000


def queue_info_json(info: dict[str, Any]) -> dict[str, Any]:
    """The engine's queue_info() as the API shows it: times in seconds, not ``*_ms``."""
    attributes = info["attributes"]
    return {
        "name": info["name"],
        "attributes": {
            "visibility_timeout": _seconds(attributes["visibility_timeout_ms"]),
            "delay": _seconds(attributes["delay_ms"]),
            "max_receives": attributes["max_receives"],
            "dead_letter_queue": attributes["dead_letter_queue"],
            "max_message_bytes": attributes["max_message_bytes"],
        },
        "counts": info["counts"],
        "totals": info["totals"],
    }


def queue_attributes_ms(doc: Any) -> dict[str, Any]:
    """A ``PUT`` body (parsed JSON) as the engine's ``put_queue`` attributes, else a 400
    naming the attribute. The engine checks the integers' types and ranges (it refuses
    bools and floats) and the attributes as a whole; seconds and names are checked here, so
    that no message names an engine key (``*_ms``) and no engine key is accepted."""
    if not isinstance(doc, dict):
        raise BadParameter("invalid_body", "the body must be a JSON object of queue attributes")
    attributes: dict[str, Any] = {}
    for key, value in doc.items():
        if key == "visibility_timeout":
            attributes["visibility_timeout_ms"] = json_seconds_ms(value, key, MAX_VISIBILITY_MS)
        elif key == "delay":
            attributes["delay_ms"] = json_seconds_ms(value, key, MAX_DELAY_MS)
        elif key == "max_receives" or key == "max_message_bytes":
            attributes[key] = value
        elif key == "dead_letter_queue":
            if value is not None and (
                value.__class__ is not str or _QUEUE_NAME.fullmatch(value) is None
            ):
                raise BadParameter(
                    "invalid_attribute",
                    "dead_letter_queue must be null or a queue name "
                    "(1 to 80 characters of A-Z a-z 0-9 _ -)",
                )
            attributes[key] = value
        else:
            raise BadParameter("invalid_attribute", f"unknown attribute {key!r}")
    return attributes


def batch_entries(entries: list[Any]) -> tuple[list[bytes], list[int]]:
    """The bodies and delays (ms; -1 = the queue's delay) of a batch's entries, each a
    string or a ``{"body", "delay"}`` object, else a 400 naming the entry and the field.
    Sizes are the engine's to check (413), against the queue's ``max_message_bytes``."""
    bodies: list[bytes] = []
    delays: list[int] = []
    for i, entry in enumerate(entries):
        delay_ms = -1
        if entry.__class__ is dict:
            for key in entry:
                if key != "body" and key != "delay":
                    raise BadParameter(
                        "invalid_batch",
                        f"entry {i}: unknown key {key!r} (an entry has a body and a delay)",
                    )
            if "delay" in entry:
                delay_ms = json_seconds_ms(
                    entry["delay"], f"entry {i}: delay", MAX_DELAY_MS, "invalid_delay"
                )
            entry = entry.get("body")
            if entry.__class__ is not str or not entry:
                raise BadParameter("invalid_body", f"entry {i}: body must be a non-empty string")
        elif entry.__class__ is not str:
            raise BadParameter(
                "invalid_batch", f"entry {i} must be a string, or an object with a body and a delay"
            )
        elif not entry:
            raise BadParameter("invalid_body", f"entry {i}: the body must not be empty")
        try:
            bodies.append(entry.encode())
        except UnicodeEncodeError:
            raise BadParameter(
                "invalid_body", f"entry {i}: the body is not valid UTF-8 (a lone surrogate)"
            ) from None
        delays.append(delay_ms)
    return bodies, delays


# ---- routing ----------------------------------------------------------------------------------


_PARAM_SEGMENT = re.compile(r"\{\w+\}")  # a {name} segment of a route template


class Route:
    """One path template and its handlers by method.

    ``handlers`` maps a method to ``(handler, label, counts)``: the label
    (``"GET /v1/consumer"``) is the ``route`` of ``wonderq_http_requests_total``, built once
    here, and ``counts`` is a list indexed by status, bumped on the hot path (a list index
    is the cheapest counter Python has) and read by the collector at scrape time.

    A template with ``{params}`` is matched segment by segment against the path split at
    ``/``, not by a regular expression (callgrind, a named-queue receive + delete: ~8.7k
    instructions per request in the regexes, ~3.3k split and compared).
    """

    __slots__ = ("handlers", "literals", "name", "params", "segments")

    def __init__(self, name: str) -> None:
        self.name = name  # the template (the metric label of a 405)
        parts = name.split("/")
        for part in parts:
            if "{" in part and _PARAM_SEGMENT.fullmatch(part) is None:
                raise ValueError(f"{name}: a {{param}} must be a whole path segment")
        self.segments = len(parts)  # a matching path has as many
        # (index, text) of the literal segments, the last first: it tells routes apart.
        self.literals = tuple((i, p) for i, p in reversed(list(enumerate(parts))) if p[:1] != "{")
        # (index, name) of the {name} segments, each matching one non-empty segment.
        self.params = tuple((i, p[1:-1]) for i, p in enumerate(parts) if p[:1] == "{")
        self.handlers: dict[str, tuple[Handler, str, list[int]]] = {}

    def match(self, segments: list[str]) -> dict[str, str] | None:
        """The path parameters if the path, split at ``/``, matches the template; else None."""
        if len(segments) != self.segments:
            return None
        for i, text in self.literals:
            if segments[i] != text:
                return None
        found = {}
        for i, name in self.params:
            value = segments[i]
            if not value:
                return None
            found[name] = value
        return found


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
            route = Route(template)
            if route.params:
                self.dynamic.append(route)
            else:
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
        segments = path.split("/")
        for route in self.dynamic:
            params = route.match(segments)
            if params is not None:
                return route, params
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
_NO_CONTENT: Response = (204, b"", b"")
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
        wal: Any = None,
    ) -> None:
        self.broker = broker
        self.wal = wal  # wonderq.wal.Wal with --data-dir, else None
        # The log module is imported only with persistence on: the in-memory server does not
        # carry its ~4 MB of code (bench/run.py sizing: 1M x 200 B resident).
        self._storage_errors: tuple[type[Exception], ...] = ()
        if wal is not None:
            from .wal import WalError

            self._storage_errors = (WalError,)
        self._default_delays: dict[str, int] = {}  # queue -> its delay_ms, for the log
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
        # The static path dispatched last and its methods: consecutive requests (a connection's
        # publishes, a consumer's receives and deletes) usually share it, and comparing the new
        # path string is cheaper than hashing it.
        self._last_path: str | None = None
        self._last_methods: dict[str, tuple[Handler, str, list[int]]] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        self.registry.register(EngineCollector(self, connection_count))
        self._openapi: bytes | None = None
        # Receive queries that passed validation -> their arguments (see receive_args).
        self._receive_queries: dict[str, tuple[int, int, int, int]] = {}
        self.sqs: Any = None  # INTERIM glue: the SQS face (wonderq.sqs.SqsFace), set by the server

    def routes(self, add: Callable[[str, str, Handler], None]) -> None:
        """The route table."""
        add("POST", "/v1/publish", self.handle_publish)
        add("GET", "/v1/consumer", self.handle_receive)
        add("DELETE", "/v1/consumer", self.handle_delete)
        add("GET", "/healthz", self.handle_health)
        add("GET", "/metrics", self.handle_metrics)
        add("GET", "/openapi.json", self.handle_openapi)
        # Named queues. Templates are tried in the order first added: the benchmarks' routes
        # (batch publish, receive, batch ack) first.
        add("POST", "/v1/queues/{queue}/batch", self.handle_publish_batch)
        add("GET", "/v1/queues/{queue}/messages", self.handle_receive_messages)
        add("POST", "/v1/queues/{queue}/messages", self.handle_publish_message)
        add("POST", "/v1/queues/{queue}/ack", self.handle_ack)
        add("DELETE", "/v1/queues/{queue}/messages/{id}", self.handle_delete_message)
        add("POST", "/v1/queues/{queue}/messages/{id}/lease", self.handle_change_lease)
        add("GET", "/v1/queues", self.handle_list_queues)
        add("PUT", "/v1/queues/{queue}", self.handle_put_queue)
        add("GET", "/v1/queues/{queue}", self.handle_get_queue)
        add("DELETE", "/v1/queues/{queue}", self.handle_delete_queue)
        add("POST", "/v1/queues/{queue}/purge", self.handle_purge)

    # ---- the one place where outcomes become responses ---------------------------------------

    def dispatch(self, req: Request) -> Response | None:
        """Route ``req``, run its handler, map errors; None when the answer is deferred."""
        path = req.path
        if path == self._last_path:
            methods = self._last_methods
        else:
            found = self._static.get(path)
            if found is None:
                return self._dispatch_dynamic(req)
            self._last_path = path
            self._last_methods = methods = found
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
        status = response[0]
        entry[2][status] += 1
        return response

    def _dispatch_dynamic(self, req: Request) -> Response | None:
        # INTERIM glue (until routing.py routes it): `/` or `/<account>/<queue>` carrying
        # X-Amz-Target or an Action parameter is the Amazon SQS face's. Only requests outside
        # /v1/ carry headers (and no route with {params} is outside /v1/), so WonderQ's own
        # routes pay one attribute test.
        sqs = self.sqs
        if sqs is not None and req.headers is not None:
            kind = sqs.kind(req)
            if kind:
                response = sqs.dispatch(req, kind)
                if response is None:
                    req.route = "SQS"
                else:
                    self.count("SQS", response[0])
                return response
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
        status = response[0]
        entry[2][status] += 1
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
        if isinstance(exc, self._storage_errors):  # the log cannot be written: 507
            return error_response(exc.status, exc.code, str(exc))  # type: ignore[attr-defined]
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

    def handle_publish(self, req: Request) -> Response | None:
        """``POST /v1/publish[?delay=]``: the raw body is the message; 201 ``{"id": N}``."""
        delay_ms = -1
        if req.query:
            delay_ms = param_ms(parse_query(req.query), "delay", MAX_DELAY_MS, -1)
        if self.wal is not None:
            return self._publish_logged(req, DEFAULT_QUEUE, delay_ms)
        return (201, id_json(self.publish_one(DEFAULT_QUEUE, req.body, delay_ms)), JSON_HEADERS)

    def handle_receive(self, req: Request) -> Response | None:
        """``GET /v1/consumer?cid=&limit=&wait=&visibility=``: lease up to ``limit`` messages."""
        args = self._receive_queries.get(req.query)
        if args is None:
            args = self.receive_args(req.query)
        cid, limit, visibility_ms, wait_ms = args
        if wait_ms or self.wal is not None:
            return self.receive_or_park(req, DEFAULT_QUEUE, cid, limit, visibility_ms, wait_ms)
        body = self.broker.receive(DEFAULT_QUEUE, cid, limit, now_ms(), visibility_ms)
        self.note_deadline()
        return (200, body, JSON_HEADERS)

    def receive_args(self, query: str) -> tuple[int, int, int, int]:
        """``(cid, limit, visibility_ms, wait_ms)`` of a receive's query (visibility -1: the
        queue's), else the 400 naming the parameter. A consumer sends the same query again and
        again: a valid one is remembered (bounded), so the next costs one dict lookup."""
        params = parse_query(query)
        args = (
            param_cid(params),
            param_int(params, "limit", 1, self.max_batch, 1),
            param_ms(params, "visibility", MAX_VISIBILITY_MS, -1),
            param_ms(params, "wait", MAX_WAIT_MS, 0),
        )
        queries = self._receive_queries
        if len(queries) >= _CACHE_SIZE:
            queries.clear()
        queries[query] = args
        return args

    def handle_delete(self, req: Request) -> Response | None:
        """``DELETE /v1/consumer?cid=&id=``: ack; 200 ``true`` or ``false``."""
        params = split_query(req.query) or parse_query(req.query)  # parse_query() inlined
        cid = _INTS.get(params.get("cid"))  # type: ignore[arg-type]
        if cid is None:
            cid = param_cid(params)
        # A new id every time, so no cache; anything but a plain id (0, long, REPEATED,
        # absent) goes through param_id and its 400s.
        msg_id = _plain_id(params.get("id"))
        if not msg_id:
            msg_id = param_id(params)
        if self.broker.delete(DEFAULT_QUEUE, cid, msg_id, now_ms()):
            if self.wal is not None:
                return self._delete_logged(req, msg_id)
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

    # ---- named queues: messages ------------------------------------------------------------------
    # Each route reads its queue name first (param_queue: a bad name is a 400 before any
    # lookup), then its parameters; the engine raises QueueNotFound (404) for a well-formed
    # name of no queue, so no route checks existence itself and none creates a queue.

    def handle_publish_batch(self, req: Request) -> Response | None:
        """``POST /v1/queues/{queue}/batch``: a JSON array of 1..max_batch entries, each a
        string or ``{"body", "delay"}``; all or nothing; 201 ``{"ids": [...]}``."""
        queue = param_queue(req)
        broker = self.broker
        if self.wal is None:
            # The usual batch (plain strings) parsed, checked and stored in one C pass; None
            # for anything else, which the general way below parses, and names if it is bad.
            answer = broker.publish_batch_json(queue, req.body, now_ms())
            if answer is not None:
                self._after_publish(queue)
                return (201, answer, JSON_HEADERS)
        entries = parse_json(req.body, "the batch")
        if entries.__class__ is not list or not 0 < len(entries) <= self.max_batch:
            raise BadParameter(
                "invalid_batch",
                f"the batch must be a JSON array of 1 to {self.max_batch} messages",
            )
        delays = None
        try:
            # The benchmark's case (all strings) in one C-level pass; anything else, or a
            # lone surrogate, goes the slow way, which also names the bad entry.
            bodies = list(map(str.encode, entries))
        except (TypeError, UnicodeEncodeError):
            bodies, delays = batch_entries(entries)
        if self.wal is not None:
            return self._publish_batch_logged(req, queue, bodies, delays)
        first: int = broker.publish_batch(queue, bodies, now_ms(), delays)
        self._after_publish(queue)
        return (201, batch_ids_json(first, len(bodies)), JSON_HEADERS)

    def handle_receive_messages(self, req: Request) -> Response | None:
        """``GET /v1/queues/{queue}/messages?cid=&limit=&wait=&visibility=``: as the seed's
        receive (:meth:`handle_receive`), on ``queue``."""
        queue = param_queue(req)
        args = self._receive_queries.get(req.query)
        if args is None:
            args = self.receive_args(req.query)
        cid, limit, visibility_ms, wait_ms = args
        return self.receive_or_park(req, queue, cid, limit, visibility_ms, wait_ms)

    def handle_publish_message(self, req: Request) -> Response | None:
        """``POST /v1/queues/{queue}/messages[?delay=]``: the raw body is the message; 201
        ``{"id": N}``. ``delay=0`` overrides the queue's delay."""
        queue = param_queue(req)
        delay_ms = -1
        if req.query:
            delay_ms = param_ms(parse_query(req.query), "delay", MAX_DELAY_MS, -1)
        if self.wal is not None:
            return self._publish_logged(req, queue, delay_ms)
        return (201, id_json(self.publish_one(queue, req.body, delay_ms)), JSON_HEADERS)

    def handle_ack(self, req: Request) -> Response | None:
        """``POST /v1/queues/{queue}/ack`` with ``{"cid": C, "ids": [...]}``: delete each id
        by the rule of a single delete; 200 ``{"deleted": [...], "failed": [...]}``, each in
        input order (an id given twice fails the second time)."""
        queue = param_queue(req)
        if self.wal is None:
            # The usual body parsed and acted on in one C pass; None for anything else, which
            # the general way below parses, and names if it is bad.
            answer = self.broker.ack_json(queue, req.body, now_ms())
            if answer is not None:
                return (200, answer, JSON_HEADERS)
        doc = parse_json(req.body, "the ack body")
        if doc.__class__ is not dict:
            raise BadParameter(
                "invalid_body", "the ack body must be a JSON object with cid and ids"
            )
        for key in doc:
            if key != "cid" and key != "ids":
                raise BadParameter(
                    "invalid_body", f"unknown key {key!r} (an ack body has cid and ids)"
                )
        cid = doc.get("cid")
        if cid.__class__ is not int or not 0 <= cid <= MAX_ID:  # bool's class is not int
            raise BadParameter("invalid_cid", f"cid is required, an integer from 0 to {MAX_ID}")
        ids = doc.get("ids")
        if ids.__class__ is not list or not 0 < len(ids) <= self.max_batch:
            raise BadParameter(
                "invalid_ids", f"ids is required, an array of 1 to {self.max_batch} message ids"
            )
        try:
            # The engine checks every id (an int, not a bool, in 1..MAX_ID) before deleting any.
            deleted, failed = self.broker.delete_batch(queue, cid, ids, now_ms())
        except _core.InvalidArgument as exc:
            if exc.code != "invalid_id":
                raise
            raise BadParameter("invalid_ids", f"ids must be integers from 1 to {MAX_ID}") from None
        response: Response = (
            200,
            b'{"deleted":[%s],"failed":[%s]}' % (ids_json(deleted), ids_json(failed)),
            JSON_HEADERS,
        )
        if deleted and self.wal is not None:
            self.wal.append_delete_many(deleted)
            return self._log_and_answer(req, response)
        return response

    def handle_delete_message(self, req: Request) -> Response | None:
        """``DELETE /v1/queues/{queue}/messages/{id}?cid=``: ack; 200 ``true`` or ``false``
        (also for a message of another queue)."""
        queue = param_queue(req)
        msg_id = param_path_id(req)
        cid = param_cid(parse_query(req.query))
        if self.broker.delete(queue, cid, msg_id, now_ms()):
            if self.wal is not None:
                return self._delete_logged(req, msg_id)
            return _TRUE
        return _FALSE

    def handle_change_lease(self, req: Request) -> Response:
        """``POST /v1/queues/{queue}/messages/{id}/lease?cid=&timeout=``: the lease now ends
        ``timeout`` seconds from now (0: released at once); 200 ``true`` or ``false``."""
        queue = param_queue(req)
        msg_id = param_path_id(req)
        params = parse_query(req.query)
        cid = param_cid(params)
        if "timeout" not in params:
            raise BadParameter("invalid_timeout", "timeout is required (seconds, 0 releases)")
        timeout_ms = param_ms(params, "timeout", MAX_VISIBILITY_MS, 0)
        if not self.broker.change_lease(queue, cid, msg_id, timeout_ms, now_ms()):
            return _FALSE
        if self.wal is not None:
            self.log_dead_letters()  # a release may have moved it to the dead-letter queue
        if timeout_ms == 0:
            # Available again in this queue, or moved to its dead-letter queue: either
            # queue's long polls may now be answered.
            self.wake_all()
        self.note_deadline()
        return _TRUE

    # ---- named queues: administration ------------------------------------------------------------

    def handle_list_queues(self, req: Request) -> Response:
        """``GET /v1/queues``: every queue's info, sorted by name."""
        broker = self.broker
        queues = [queue_info_json(broker.queue_info(name)) for name in broker.queue_names()]
        return (200, encode_json({"queues": queues}), JSON_HEADERS)

    def handle_put_queue(self, req: Request) -> Response | None:
        """``PUT /v1/queues/{queue}``: create (201) or update (200) with the JSON attributes
        of the body (optional; a missing key keeps its value); answers the info. The engine
        checks the result as a whole and changes nothing when it refuses."""
        queue = param_queue(req)
        attributes = queue_attributes_ms(parse_json(req.body, "the body")) if req.body else None
        if self.wal is not None:
            self.wal.check_writable()  # a failed log refuses new state (507)
        created = self.broker.put_queue(queue, attributes)
        response: Response = (201 if created else 200, self.queue_info(queue), JSON_HEADERS)
        if self.wal is not None:
            return self._queue_put_logged(req, queue, response)
        return response

    def handle_get_queue(self, req: Request) -> Response:
        """``GET /v1/queues/{queue}``: attributes and counters."""
        return (200, self.queue_info(param_queue(req)), JSON_HEADERS)

    def handle_delete_queue(self, req: Request) -> Response | None:
        """``DELETE /v1/queues/{queue}``: drop the queue and its messages; 204. Refused (409)
        for ``default`` and for a queue that is another's dead-letter queue."""
        queue = param_queue(req)
        self.broker.delete_queue(queue)
        self.drop_waiters(queue)
        if self.wal is not None:
            self._default_delays.pop(queue, None)
            self.wal.append_queue_delete(queue)
            return self._log_and_answer(req, _NO_CONTENT)
        return _NO_CONTENT

    def handle_purge(self, req: Request) -> Response | None:
        """``POST /v1/queues/{queue}/purge``: drop its ready, delayed and leased messages
        (the totals stay); 200 ``{"purged": n}``."""
        queue = param_queue(req)
        purged: int = self.broker.purge(queue)
        if self.wal is not None:
            self.wal.append_purge(queue)
            return self._log_and_answer(req, (200, b'{"purged":%d}' % purged, JSON_HEADERS))
        return (200, b'{"purged":%d}' % purged, JSON_HEADERS)

    def queue_info(self, queue: str) -> bytes:
        """The info of ``queue`` as the JSON body the queue routes answer (404 if none)."""
        return encode_json(queue_info_json(self.broker.queue_info(queue)))

    # ---- building blocks for handlers ------------------------------------------------------------

    def publish_one(self, queue: str, body: bytes, delay_ms: int) -> int:
        """Publish ``body`` to ``queue``, then wake its waiters and re-arm the timer."""
        broker = self.broker
        msg_id: int = broker.publish(queue, body, now_ms(), delay_ms)
        self._after_publish(queue)
        return msg_id

    def _after_publish(self, queue: str) -> None:
        """After messages were stored in ``queue``: wake its waiters, re-arm the timer."""
        if self.waiters and queue in self.waiters:
            self.wake(queue)
        self.note_deadline()

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
        if self.wal is None:
            body: bytes = broker.receive(queue, cid, limit, now_ms(), visibility_ms)
        else:
            body = self._receive_logged(queue, cid, limit, now_ms(), visibility_ms)
        self.note_deadline()
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
                if self.wal is None:
                    body = broker.receive(
                        queue, waiter.cid, waiter.limit, now, waiter.visibility_ms
                    )
                else:
                    body = self._receive_logged(
                        queue, waiter.cid, waiter.limit, now, waiter.visibility_ms
                    )
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
        broker = self.broker
        for queue in [q for q in self.waiters if broker.ready_count(q) > 0]:
            self.wake(queue)

    def cancel(self, req: Request) -> None:
        """The connection of a deferred request closed: drop its waiter (it leases nothing)."""
        waiter = req.deferred
        if isinstance(waiter, Waiter) and waiter.active:
            wq = self.waiters.get(waiter.queue)
            if wq is not None:
                self._finish(waiter, wq)
                self._compact(waiter.queue, wq)
        elif self.sqs is not None:  # INTERIM glue: the SQS face's parked receives
            self.sqs.cancel(req)

    def close(self) -> None:
        """Shutdown: answer every waiter with an empty list; later long polls answer at once."""
        self.closing = True
        if self.sqs is not None:  # INTERIM glue: the SQS face's parked receives
            self.sqs.close()
        for queue, wq in list(self.waiters.items()):
            for waiter in list(wq.fifo):
                if waiter.active:
                    self._finish(waiter, wq)
                    self._answer(waiter.req, _NO_MESSAGES)
            self.waiters.pop(queue, None)

    def drop_waiters(self, queue: str) -> None:
        """Answer every waiter of ``queue`` with an empty list at once (it was deleted)."""
        # Out of the table first: an answer may run a pipelined request that parks again.
        wq = self.waiters.pop(queue, None)
        if wq is None:
            return
        for waiter in list(wq.fifo):
            if waiter.active:
                self._finish(waiter, wq)
                self._answer(waiter.req, _NO_MESSAGES)

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

    # ---- durability: only with --data-dir (self.wal is not None) ---------------------------------
    # Each change is appended right after the engine made it, in the engine's order; publishes
    # check the log first, so a failed log refuses them (507) before the engine stores them.

    def _log_and_answer(self, req: Request, response: Response) -> Response | None:
        """Have the log write what was appended (at the end of this event-loop turn, one write
        for every request of the turn) and answer ``response``: at once, or with ``--fsync
        always`` once the write and fsync are done: ``req`` is deferred like a long poll (the
        protocol holds pipelined requests behind it, so answers stay in order). A failed
        write answers 507 ``storage_error`` instead: nothing unwritten is acknowledged."""
        fut = self.wal.commit()
        if fut is None:
            return response
        req.deferred = fut
        fut.add_done_callback(partial(self._committed, req, response))
        return None

    def _committed(self, req: Request, response: Response, fut: Any) -> None:
        if fut.cancelled():
            response = error_response(503, "shutting_down", "the server is shutting down")
        else:
            exc = fut.exception()
            if exc is not None:
                response = self._error_response(req, exc)
        self._answer(req, response)

    def _effective_delay(self, queue: str, delay_ms: int) -> int:
        """The delay a publish got: ``delay_ms``, or the queue's (cached; PUT and DELETE of
        the queue drop the cache entry) when it is -1."""
        if delay_ms >= 0:
            return delay_ms
        queue_delay = self._default_delays.get(queue)
        if queue_delay is None:
            queue_delay = self.broker.queue_info(queue)["attributes"]["delay_ms"]
            self._default_delays[queue] = queue_delay
        return queue_delay

    def _publish_logged(self, req: Request, queue: str, delay_ms: int) -> Response | None:
        """:meth:`publish_one` with the log: refuse if it failed, append, then wake."""
        wal = self.wal
        wal.check_writable()
        body = req.body
        msg_id: int = self.broker.publish(queue, body, now_ms(), delay_ms)
        wal.append_publish(msg_id, queue, body, self._effective_delay(queue, delay_ms))
        self._after_publish(queue)
        return self._log_and_answer(req, (201, id_json(msg_id), JSON_HEADERS))

    def _publish_batch_logged(
        self, req: Request, queue: str, bodies: list[bytes], delays: list[int] | None
    ) -> Response | None:
        wal = self.wal
        wal.check_writable()
        first: int = self.broker.publish_batch(queue, bodies, now_ms(), delays)
        queue_delay = self._effective_delay(queue, -1)
        if delays is not None:
            delays = [queue_delay if d < 0 else d for d in delays]
        elif queue_delay:
            delays = [queue_delay] * len(bodies)
        wal.append_publish_batch(first, queue, bodies, delays)
        self._after_publish(queue)
        return self._log_and_answer(req, (201, batch_ids_json(first, len(bodies)), JSON_HEADERS))

    def _delete_logged(self, req: Request, msg_id: int) -> Response | None:
        """A delete that succeeded: logged; answered ``true`` once durable."""
        self.wal.append_delete(msg_id)
        return self._log_and_answer(req, _TRUE)

    def _queue_put_logged(self, req: Request, queue: str, response: Response) -> Response | None:
        self._default_delays.pop(queue, None)
        self.wal.append_queue_put(queue, self.broker.queue_info(queue)["attributes"])
        return self._log_and_answer(req, response)

    def _receive_logged(
        self, queue: str, cid: int, limit: int, now: int, visibility_ms: int
    ) -> bytes:
        """``broker.receive`` that logs the receive counts (never waited for: a lost count
        only lets a message be delivered once more before it is dead-lettered)."""
        leased: list[int] = []
        body: bytes = self.broker.receive(queue, cid, limit, now, visibility_ms, leased)
        if leased:
            self.wal.append_receive(leased)
        return body

    def log_dead_letters(self) -> None:
        """Append the dead-letter moves the engine made (by ``expire`` or ``change_lease``)
        since the last call. They go out with the next write (at most a tick later)."""
        moves = self.broker.take_dead_lettered()
        if moves:
            append = self.wal.append_dead_letter
            for msg_id, queue in moves:
                append(msg_id, queue)

    def after_expiry_logged(self) -> None:
        """The expiry timer's ``on_expired`` with the log: the moves first, then the wakes
        (which may receive a moved message)."""
        self.log_dead_letters()
        self.wake_all()


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
                ("retention_expired", "Messages dropped because their retention ran out."),
            )
        }
        for row in broker.stats():
            name, ready, leased, delayed, published, delivered, deleted, expired, dead = row[:9]
            # The engine counts messages dropped by the queue's retention in a tenth column.
            totals["retention_expired"].add_metric([name], row[9] if len(row) > 9 else 0)
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
        wal = self._api.wal
        if wal is not None:  # wonderq_wal_*: see docs/DURABILITY.md, "Metrics"
            for name, value in wal.metrics().items():
                if name.endswith("_total"):
                    yield CounterMetricFamily(name, _WAL_HELP.get(name, name), value)
                else:
                    yield GaugeMetricFamily(name, _WAL_HELP.get(name, name), value)


_WAL_HELP = {
    "wonderq_wal_bytes": "Bytes of the log on disk: snapshot and segments, with what is queued.",
    "wonderq_wal_segments": "Segment files of the log.",
    "wonderq_wal_snapshot_bytes": "Size of the current snapshot in bytes.",
    "wonderq_wal_compactions_total": "Compactions completed.",
    "wonderq_wal_compaction_failures_total": "Compactions abandoned.",
    "wonderq_wal_written_bytes_total": "Bytes written to the log.",
    "wonderq_wal_fsyncs_total": "fsyncs of the log.",
    "wonderq_wal_last_fsync_seconds": "Duration of the last fsync.",
    "wonderq_wal_fsync_failures_total": "Failed fsyncs.",
    "wonderq_wal_write_failures_total": "Failed writes.",
    "wonderq_wal_failed": "1 while the log cannot be written and publishes are refused.",
}


def encode_json(value: Any) -> bytes:
    """Compact JSON as the engine writes it (no spaces), for handlers that build bodies."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
