"""What the Redis store refuses before sending (the engine's argument and attribute checks,
in the engine's order and with its codes) and what a refusal from a script becomes."""

from __future__ import annotations

import re
from json.encoder import encode_basestring
from typing import Any

from .._core import (
    MAX_DELAY_MS,
    MAX_ID,
    MAX_VISIBILITY_MS,
    EngineError,
    InvalidArgument,
    MemoryLimitExceeded,
    MessageTooLarge,
    QueueInUse,
    QueueNotFound,
)
from ..errors import BackendUnavailable
from .connection import ReplyError

MIN_RETENTION_MS = 60_000
MAX_RETENTION_MS = 1_209_600_000


def _int_arg(value: Any, lo: int, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def _engine_error(message: str) -> EngineError:
    """A script's ``WQ <code> <message>`` as the engine's exception of that code."""
    message = message.split(" script: ", 1)[0]
    _, code, text = ([*message.split(" ", 2), "", ""])[:3]
    if code == "queue_not_found":
        return QueueNotFound(text)
    if code == "queue_in_use":
        return QueueInUse(text)
    if code == "message_too_large":
        return MessageTooLarge(text)
    return InvalidArgument(text, code)


def _error_of(reply: Any) -> BaseException:
    """The exception a failed reply becomes."""
    if isinstance(reply, ReplyError):
        message = str(reply)
        if message.startswith("WQ "):
            return _engine_error(message)
        if message.startswith("OOM"):
            return MemoryLimitExceeded("Redis is at its memory limit (maxmemory)")
        return BackendUnavailable(f"Redis refused: {message}")
    if isinstance(reply, BaseException):
        return reply
    return BackendUnavailable(f"unexpected answer from Redis: {reply!r}")


class _Refusal(Exception):
    """A bad argument found before sending: the engine's code and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def wire(self) -> str:
        return f"{self.code} {self.message}"


def _check_int(value: Any, lo: int, hi: int, code: str, name: str) -> int:
    if _int_arg(value, lo, hi):
        return int(value)
    raise _Refusal(code, f"{name} must be an integer in {lo}..{hi}")


# What json's encode_basestring escapes in ASCII text: control characters, '"' and '\\'.
_NEEDS_ESCAPE = re.compile(rb'[\x00-\x1f"\\]')


class _BadBody(Exception):
    """A body the fast path cannot send; the careful path finds the exact error."""


def _append_body(args: list[bytes], delay: int, body: Any) -> None:
    if type(body) is not bytes:
        if not isinstance(body, (bytearray, memoryview)):
            raise _BadBody
        body = bytes(body)
    if not body:
        raise _BadBody
    if body.isascii() and _NEEDS_ESCAPE.search(body) is None:
        args += [b"%d" % delay, b"%d" % len(body), body]  # JSON-escaped as it is
        return
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise _BadBody from None
    args += [b"%d" % delay, b"%d" % len(body), encode_basestring(text)[1:-1].encode()]


def validated_attributes(attributes: Any, max_message_bytes: int) -> list[str]:
    """The engine's per-key checks, in the mapping's order; field/value pairs to set."""
    if attributes is None:
        return []
    if not isinstance(attributes, dict):
        try:
            attributes = dict(attributes)
        except Exception:
            raise InvalidArgument("attributes must be a mapping", "invalid_attribute") from None
    pairs: list[str] = []
    limits = {
        "visibility_timeout_ms": ("vis", 0, MAX_VISIBILITY_MS),
        "delay_ms": ("delay", 0, MAX_DELAY_MS),
        "max_receives": ("maxr", 1, MAX_ID),
        "max_message_bytes": ("mmb", 1, max_message_bytes),
        "retention_ms": ("ret", MIN_RETENTION_MS, MAX_RETENTION_MS),
    }
    for key, value in attributes.items():
        if key in limits:
            field, lo, hi = limits[key]
            if value is None and key in ("max_receives", "retention_ms"):
                pairs += [field, ""]
            elif _int_arg(value, lo, hi):
                pairs += [field, str(value)]
            else:
                raise InvalidArgument(
                    f"{key} must be an integer in {lo}..{hi}", "invalid_attribute"
                )
        elif key == "dead_letter_queue":
            if value is not None and not isinstance(value, str):
                raise InvalidArgument(
                    "dead_letter_queue must be a queue name or null", "invalid_attribute"
                )
            if isinstance(value, str) and ("|" in value or "\n" in value or not value):
                raise InvalidArgument(
                    f"dead_letter_queue {value!r} does not exist", "invalid_attribute"
                )
            pairs += ["dlq", value or ""]
        elif key == "meta":
            # A face's own extras (the SQS face's), opaque here, checked as the engine
            # checks them; stored behind a "=" so that "" and null stay apart.
            if value is not None and not isinstance(value, str):
                raise InvalidArgument("meta must be a string or null", "invalid_attribute")
            if value is not None:
                try:
                    size = len(value.encode("utf-8"))
                except UnicodeEncodeError:
                    raise InvalidArgument(
                        "meta must be valid UTF-8 text", "invalid_attribute"
                    ) from None
                if size > 65536:
                    raise InvalidArgument("meta must be at most 65536 bytes", "invalid_attribute")
            pairs += ["meta", "" if value is None else "=" + value]
        else:
            raise InvalidArgument(f"unknown attribute {key!r}", "invalid_attribute")
    return pairs
