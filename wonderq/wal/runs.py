"""Runs: the messages replay found, as parallel columns, and the replay's fast paths.

A run holds the messages of one queue that entered the replayed state in the same epoch of
that queue from one file (recovery.py's ``_Replayer`` makes and folds them). Its bodies stay in
the mapped file: a run keeps their offsets and lengths. The fast paths append a one-message
frame to a run with a struct call or two instead of the general decoder: the replay's hot path
when frames are small (a frame per message, at low load).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from typing import Any

from .format import F_ATTRIBUTES, F_SENT, NO_ATTRIBUTES, S_PUBLISH

__all__ = [
    "COLUMNS",
    "SEND_FLAGS",
    "FastPath",
    "Run",
    "SendPath",
    "no_run",
    "one_message_publish",
    "one_message_send",
]


class Run:
    """Message bodies of one queue that entered the replayed state in the same epoch of that
    queue, from one file: consecutive publish sections are merged into one run, so replay
    costs list appends per message, not objects."""

    __slots__ = (
        "attributes",
        "buf",
        "delays",
        "epoch",
        "firsts",
        "ids",
        "lens",
        "offs",
        "queue",
        "receives",
        "sents",
    )

    def __init__(self, queue: str, epoch: int, buf: Any) -> None:
        self.queue = queue
        self.epoch = epoch
        self.buf = buf  # the mapped file the bodies are in
        self.ids: list[int] = []
        self.offs: list[int] = []  # offset of each body in buf
        self.lens: list[int] = []
        # The optional columns (COLUMNS), None while every message of the run has the default:
        self.delays: list[int] | None = None  # delay end (wall ms) per message, if any
        self.receives: list[int] | None = None  # receive count per message, if any (snapshots)
        self.sents: list[int] | None = None  # sent time (wall ms), if recorded (format 2)
        self.firsts: list[int] | None = None  # first receive (wall ms), if any (format 2)
        self.attributes: list[bytes | None] | None = None  # attribute blobs (format 2)

    @property
    def plain(self) -> bool:
        """No message of the run has anything but an id and a body."""
        return (
            self.delays is None
            and self.receives is None
            and self.sents is None
            and self.firsts is None
            and self.attributes is None
        )


#: The optional per-message columns of a run and of a PubSection, with their defaults.
COLUMNS = (
    ("delays", 0),
    ("receives", 0),
    ("sents", 0),
    ("firsts", 0),
    ("attributes", None),
)


class SendPath:
    """The replay's fast path for one-message frames of SQS sends to one queue: what
    _Replayer.replay_frames does inline for plain messages, plus the sent time and the blob
    (a method call and a second struct call more per frame, not the general decoder)."""

    __slots__ = (
        "add_blob",
        "add_id",
        "add_len",
        "add_off",
        "add_sent",
        "flags",
        "head",
        "qlen",
        "qraw",
        "rep",
        "size",
        "unpack",
    )

    def __init__(self, rep: Any, qraw: bytes, flags: int, run: Run) -> None:
        self.rep = rep
        self.qraw = qraw
        self.qlen = len(qraw)
        self.flags = flags
        self.unpack, self.size = one_message_send(self.qlen)
        self.head = self.size + (4 if run.attributes is not None else 0)  # up to the body
        self.add_id = run.ids.append
        self.add_off = run.offs.append
        self.add_len = run.lens.append
        assert run.sents is not None
        self.add_sent = run.sents.append
        self.add_blob = run.attributes.append if run.attributes is not None else None

    def take(self, buf: Any, p0: int, p1: int) -> bool:
        """Append the frame buf[p0:p1] to the run if it is one send of this shape."""
        if p1 - p0 < self.head:
            return False
        kind, flags, qlen, n, qraw, msg_id, blen, sent = self.unpack(buf, p0)
        if kind != S_PUBLISH or n != 1 or flags != self.flags or qlen != self.qlen:
            return False
        if qraw != self.qraw:
            return False
        body = p0 + self.head
        end = body + blen
        blob = None
        if self.add_blob is not None:
            alen = _U32.unpack_from(buf, p0 + self.size)[0]
            if alen != NO_ATTRIBUTES:
                blob = bytes(buf[end : end + alen])
                end += alen
        if end != p1:
            return False
        self.add_id(msg_id)
        self.add_off(body)
        self.add_len(blen)
        self.add_sent(sent)
        if self.add_blob is not None:
            self.add_blob(blob)
        rep = self.rep
        if msg_id >= rep.next_id:
            rep.next_id = msg_id + 1
        return True


SEND_FLAGS = (F_SENT, F_SENT | F_ATTRIBUTES)
_U32 = struct.Struct("<I")


#: The replay's fast path for one queue: (raw name, its length, the size of a one-message
#: publish section before the body, the struct unpacking it, the run's ids/offs/lens appends).
FastPath = tuple[
    bytes,
    int,
    int,
    Callable[..., tuple[Any, ...]],
    Callable[[int], None],
    Callable[[int], None],
    Callable[[int], None],
]


def no_run(_value: int) -> None:
    """The fast path's appends until it has a run (never called: ``fast_q`` is None)."""
    raise AssertionError("the replay's fast path has no run")


@functools.cache
def one_message_send(qlen: int) -> tuple[Callable[..., tuple[Any, ...]], int]:
    """The unpacker and size of a one-message publish section with a sent time, up to the
    attribute blob's length if any: kind, flags, qlen, n, name, id, body length, sent."""
    st = struct.Struct(f"<BBBI{qlen}sQIQ")
    return st.unpack_from, st.size


@functools.cache
def one_message_publish(qlen: int) -> tuple[Callable[..., tuple[Any, ...]], int]:
    """The unpacker and size of a publish section of one message to a queue whose name is
    ``qlen`` bytes, up to its body: kind, flags, qlen, n, name, id, body length."""
    st = struct.Struct(f"<BBBI{qlen}sQI")
    return st.unpack_from, st.size
