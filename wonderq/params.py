# cython: language_level=3, annotation_typing=False, always_allow_keywords=False
"""Parameters and bodies: every check of what a client sent, and the 400 that names it.

Query strings are split by the protocol's compiled ``split_query`` when they are plain (the
usual case) and decoded here otherwise. Values that passed a check before are remembered in
small bounded caches (consumers send the same ``cid``, ``limit`` and ``visibility`` strings
again and again), so the hot path is a dict lookup; the range is still checked on every use.

Compiled with Cython in pure-Python mode (``params.pxd``): the faces call these functions
as C calls. The file runs unchanged as plain Python when it is not built.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote, unquote_plus

from .errors import BadParameter
from .limits import (
    MAX_DELAY_MS,
    MAX_ID,
    MAX_VISIBILITY_MS,
    MAX_WAIT_MS,
    QUEUE_NAME,
    QUEUE_NAME_RULE,
)
from .request import Request, split_query

__all__ = [
    "REPEATED",
    "batch_entries",
    "delete_args",
    "json_seconds_ms",
    "list_args",
    "param_cid",
    "param_delay",
    "param_id",
    "param_int",
    "param_ms",
    "param_path_id",
    "param_queue",
    "parse_json",
    "parse_query",
    "plain_id",
    "queue_attributes_ms",
    "receive_args",
]

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


def plain_id(value: Any) -> int:
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


_last_queue = "default"  # the name param_queue returned last (the same str object each time)


def known_queue(name: str) -> None:
    """``name`` is a queue's name as the store keeps it (Store.queue_names: the router hands
    it on as the ``{queue}`` segment): valid by the engine's own rule, the one param_queue
    checks, so param_queue returns it as it is (~190 instructions less a request spread over
    many queues)."""
    global _last_queue
    _last_queue = name


def param_queue(req: Request) -> str:
    """The ``{queue}`` path segment as a queue name, else a 400 (checked before any lookup,
    so a bad name is never a 404). Percent-encoded names are decoded first (RFC 3986 section
    6.2.2.2: ``%61`` is ``a``); what they spell must match ``[A-Za-z0-9_-]{1,80}``.

    The name of the last call is returned as the same str object, so the engine finds the
    queue by identity (Broker.lookup) rather than by hashing a new string. No cache beyond
    that: the check is a C loop, and a cache of names churned when more queues were in use
    than it held (10,000 spread evenly in bench/scale.py: every publish missed it, and its
    inserts and clears cost more than the check)."""
    global _last_queue
    segment = req.queue  # None: a route with other parameters too
    name: str = req.params["queue"] if segment is None else segment  # type: ignore[index]
    if name == _last_queue:  # a valid name has no "%": the raw segment is the name
        return _last_queue
    if not _is_queue_name(name):  # "%" is not a name's character: look for it only now
        try:
            name = unquote(name, errors="strict") if "%" in name else ""
        except UnicodeDecodeError:
            name = ""
        if not _is_queue_name(name):
            raise BadParameter("invalid_queue_name", f"the queue name must be {QUEUE_NAME_RULE}")
    _last_queue = name
    return name


def _is_queue_name(name: str) -> bool:
    """``QUEUE_NAME.fullmatch(name)`` as a C loop when compiled (the regex took ~260 ns of a
    ~10 us publish)."""
    n = len(name)
    if n < 1 or n > 80:
        return False
    for char in name:
        if not (
            ("a" <= char <= "z")
            or ("A" <= char <= "Z")
            or ("0" <= char <= "9")
            or char == "_"
            or char == "-"
        ):
            return False
    return True


def param_path_id(req: Request) -> int:
    """The ``{id}`` path segment: a message id, 1..2^63-1, else a 400 naming ``id``."""
    value: str = req.params["id"]  # type: ignore[index]
    return plain_id(value) or param_id({"id": value})


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# decimal.Decimal once a JSON body held a number with a fraction or exponent: the module is
# imported then, not at start-up (~0.35 MB of resident memory in an idle server).
_Decimal: Any = None


def _parse_float(text: str) -> Any:
    global _Decimal
    if _Decimal is None:
        from decimal import Decimal

        _Decimal = Decimal
    return _Decimal(text)


# Python's json accepts NaN and Infinity, which are not JSON (RFC 8259 section 6); numbers
# with a fraction or exponent become Decimal, so that seconds convert to ms exactly.
_decode_json = json.JSONDecoder(parse_float=_parse_float, parse_constant=_refuse_constant).decode


def parse_json(body: bytes, what: str) -> Any:
    """The request body as JSON (strict UTF-8, no NaN/Infinity), else a 400 ``invalid_body``
    whose message starts with ``what`` (``"the batch"``)."""
    try:
        return _decode_json(body.decode())
    except UnicodeDecodeError:
        raise BadParameter("invalid_body", f"{what} is not valid UTF-8") from None
    except (ValueError, RecursionError):
        raise BadParameter("invalid_body", f"{what} is not valid JSON") from None
    except ArithmeticError:  # decimal's, for an exponent it cannot hold: 1e-99999999999999999999
        raise BadParameter("invalid_body", f"{what} holds a number out of range") from None


def json_seconds_ms(value: Any, name: str, max_ms: int, code: str = "invalid_attribute") -> int:
    """A JSON number of seconds (int, or Decimal from :func:`parse_json`) as whole ms rounded
    up, in ``0..max_ms``, else a 400 naming ``name``. Booleans, strings and null are refused."""
    cls = value.__class__
    ms = -1
    if cls is int:
        ms = value * 1000
    elif cls is _Decimal and 0 <= value <= max_ms // 1000:  # compared first: 1e999 stays cheap
        # exact: 0.0001 -> 1 ("ROUND_CEILING" is decimal.ROUND_CEILING)
        ms = int(value.quantize(_Decimal("0.001"), rounding="ROUND_CEILING") * 1000)
    if 0 <= ms <= max_ms:
        return ms
    raise BadParameter(code, f"{name} must be a number of seconds from 0 to {max_ms // 1000}")


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
                value.__class__ is not str or QUEUE_NAME.fullmatch(value) is None
            ):
                raise BadParameter(
                    "invalid_attribute",
                    f"dead_letter_queue must be null or a queue name ({QUEUE_NAME_RULE})",
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


# ---- whole requests ---------------------------------------------------------------------------

# Receive queries that passed validation -> their arguments (see receive_args).
_RECEIVES: dict[str, tuple[int, int, int, int]] = {}


def receive_args(query: str, max_batch: int) -> tuple[int, int, int, int]:
    """``(cid, limit, visibility_ms, wait_ms)`` of a receive's query (visibility -1: the
    queue's), else the 400 naming the parameter. A consumer sends the same query again and
    again: a valid one is remembered (bounded), so the next costs one dict lookup."""
    args = _RECEIVES.get(query)
    if args is not None and args[1] <= max_batch:
        return args
    params = parse_query(query)
    args = (
        param_cid(params),
        param_int(params, "limit", 1, max_batch, 1),
        param_ms(params, "visibility", MAX_VISIBILITY_MS, -1),
        param_ms(params, "wait", MAX_WAIT_MS, 0),
    )
    if len(_RECEIVES) >= _CACHE_SIZE:
        _RECEIVES.clear()
    _RECEIVES[query] = args
    return args


def delete_args(query: str) -> tuple[int, int]:
    """``(cid, id)`` of the seed's ``DELETE /v1/consumer?cid=&id=``, else the 400 naming the
    parameter. The plain case (a plain query, a cached cid, an id of plain digits) takes no
    detour through the general validators."""
    params = split_query(query) or parse_query(query)  # parse_query() inlined
    cid = _INTS.get(params.get("cid"))  # type: ignore[arg-type]
    if cid is None:
        cid = param_cid(params)
    # A new id every time, so no cache; anything but a plain id (0, long, REPEATED,
    # absent) goes through param_id and its 400s.
    msg_id = plain_id(params.get("id"))
    if not msg_id:
        msg_id = param_id(params)
    return cid, msg_id


def param_delay(query: str) -> int:
    """The optional ``delay`` of a publish, whole ms; -1 (the queue's) when absent."""
    if not query:
        return -1
    return param_ms(parse_query(query), "delay", MAX_DELAY_MS, -1)


def list_args(query: str, max_limit: int) -> tuple[str, str, int]:
    """``(prefix, after, limit)`` of ``GET /v1/queues``: ``prefix`` and ``after`` are
    names or parts of one (``after`` = the last name of the previous page), ``limit``
    1..max_limit (default max_limit)."""
    params = parse_query(query)
    prefix = _name_part(params, "prefix")
    after = _name_part(params, "after")
    limit = param_int(params, "limit", 1, max_limit, max_limit)
    return prefix, after, limit


def _name_part(params: dict[str, str], name: str) -> str:
    value = params.get(name)
    if value is None or value == "":
        return ""
    if value is REPEATED:
        raise BadParameter(f"invalid_{name}", f"{name} must be given only once")
    if QUEUE_NAME.fullmatch(value) is None:
        raise BadParameter(
            f"invalid_{name}", f"{name} must be part of a queue name ({QUEUE_NAME_RULE})"
        )
    return value
