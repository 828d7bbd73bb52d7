"""Durability: the write-ahead log, crash recovery and compaction (see docs/DURABILITY.md).

The log is a directory of files. ``wal-<seq>.log`` segments hold frames appended in order;
``snapshot-<seq>.snap`` holds the live state as of the start of segment ``<seq>``. Recovery is
the newest snapshot plus every segment from its sequence number on.

Every file is a 16-byte header followed by frames::

    frame   = u32 payload_len | u32 crc32(payload) | payload        (little-endian)
    payload = section section ...

A frame is the unit of atomicity: it is written whole by one group commit, and recovery keeps
a frame only if it is complete and its checksum matches. Sections are columnar (every id of a
publish section in one array, every body length in another), so that replaying a million
messages costs a few C-level calls per section rather than Python work per message.

Threads: the ``append_*`` methods run on the event loop and only build frames in memory.
``flush()`` hands the bytes to one writer thread, which does the ``pwritev`` and the
``fdatasync``; at most one write is in flight, and everything appended while it runs goes out
in the next one (group commit). Snapshots are written by a second thread.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import errno
import functools
import gc
import itertools
import json
import logging
import mmap
import operator
import os
import re
import struct
import sys
import time
import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

log = logging.getLogger("wonderq.wal")

__all__ = [
    "FSYNC_MODES",
    "BrokerSnapshotSource",
    "Chunk",
    "DeadLetter",
    "Delete",
    "End",
    "NextId",
    "Publish",
    "Purge",
    "QueueDelete",
    "QueuePut",
    "Receive",
    "RecoveredState",
    "RecoveryReport",
    "SnapshotSource",
    "Wal",
    "WalCorruptError",
    "WalError",
    "decode_payload",
    "encode_frame",
    "read_file",
    "recover",
]

# ---- tunables -----------------------------------------------------------------------------
FSYNC_MODES = ("always", "everysec", "never")
#: Compaction starts when the files on disk exceed max(this, COMPACT_RATIO x live bytes).
COMPACT_MIN_BYTES = 64 * 1024 * 1024
COMPACT_RATIO = 2.0
#: Messages asked of the engine per snapshot chunk (one chunk per event-loop turn).
SNAPSHOT_CHUNK_MESSAGES = 4096
#: A pending frame is sealed early once its bodies pass this many bytes (bounds frame size).
FRAME_SOFT_LIMIT = 4 * 1024 * 1024
#: Frames longer than this are treated as corrupt by recovery.
FRAME_MAX = 1 << 30
#: Ids are reserved this far ahead in the log, so ids handed out but lost with an unwritten
#: tail are never issued again after a restart (a restart skips at most this many ids).
ID_RESERVE_BLOCK = 1 << 20
#: everysec: the longest time (s) between a write and the fsync that covers it, and the period
#: of the maintenance tick (retries after an I/O error, compaction check).
TICK_S = 1.0
#: After a failed compaction, wait this long (s) before trying again.
COMPACT_RETRY_S = 60.0

# ---- file format ---------------------------------------------------------------------------
LOG_MAGIC = b"WQLOG\x00"
SNAP_MAGIC = b"WQSNAP"
FORMAT_VERSION = 1
FILE_HEADER = struct.Struct("<6sHQ")  # magic, version, sequence number
HEADER_SIZE = FILE_HEADER.size  # 16
FRAME_HEADER = struct.Struct("<II")  # payload length, crc32(payload)
FRAME_HEADER_SIZE = FRAME_HEADER.size

# Section kinds (first byte of a section).
S_PUBLISH = 1  # <BBBI kind, flags, qlen, n> queue, ids u64[n], lens u32[n],
#                [delay_end_ms u64[n] if F_DELAYS], [receives u32[n] if F_RECEIVES], bodies
S_RECEIVE = 2  # <BI kind, n> ids u64[n]: each id received once more
S_DEAD_LETTER = 3  # <BBI kind, qlen, n> queue, ids u64[n]: moved to queue, receives reset to 0
S_DELETE = 4  # <BI kind, n> ids u64[n]
S_QUEUE_PUT = 5  # <BBI kind, qlen, alen> queue, attributes as JSON (the full set after the put)
S_QUEUE_DELETE = 6  # <BB kind, qlen> queue
S_PURGE = 7  # <BB kind, qlen> queue
S_NEXT_ID = 8  # <BQ kind, id> ids below this one were issued or reserved
S_CHUNK = 9  # <BQ kind, position> snapshot only: the messages that follow are as of that offset
S_END = 10  # <BQ kind, count> snapshot only: last section, number of messages in the snapshot

F_DELAYS = 1
F_RECEIVES = 2

_PUB = struct.Struct("<BBBI")
_IDS = struct.Struct("<BI")
_DL = struct.Struct("<BBI")
_QPUT = struct.Struct("<BBI")
_NAME = struct.Struct("<BB")
_U64 = struct.Struct("<BQ")

_BIG_ENDIAN = sys.byteorder == "big"
_SEGMENT_RE = re.compile(r"^wal-(\d{20})\.log$")
_SNAPSHOT_RE = re.compile(r"^snapshot-(\d{20})\.snap$")
_crc32 = zlib.crc32


def segment_name(seq: int) -> str:
    return f"wal-{seq:020d}.log"


def snapshot_name(seq: int) -> str:
    return f"snapshot-{seq:020d}.snap"


# ---- errors ----------------------------------------------------------------------------------
class WalError(Exception):
    """The log could not be written (disk full, I/O error): answer 507 ``storage_error``.

    Whatever the failed write covered was not acknowledged. The log stays failed until a write
    succeeds again; ``Wal.check_writable()`` raises this meanwhile so publishes are refused.
    """

    status = 507
    code = "storage_error"


class WalCorruptError(Exception):
    """Recovery found damage it must not repair by truncation (a bad snapshot, a checksummed
    frame this version cannot read). The server must not start; the files are left as found."""


# ---- typed records (tests, tools, the slow decoder) -----------------------------------------
class QueuePut(NamedTuple):
    name: str
    attributes: dict[str, Any]


class QueueDelete(NamedTuple):
    name: str


class Purge(NamedTuple):
    name: str


class Publish(NamedTuple):
    msg_id: int
    queue: str
    body: bytes
    delay_end_ms: int = 0  # absolute wall-clock ms when the delay ends; 0 = not delayed
    receives: int = 0


class Receive(NamedTuple):
    ids: tuple[int, ...]


class DeadLetter(NamedTuple):
    ids: tuple[int, ...]
    queue: str


class Delete(NamedTuple):
    ids: tuple[int, ...]


class NextId(NamedTuple):
    next_id: int


class Chunk(NamedTuple):
    position: int


class End(NamedTuple):
    messages: int


Record = (
    QueuePut | QueueDelete | Purge | Publish | Receive | DeadLetter | Delete | NextId | Chunk | End
)


def _u64s(values: Iterable[int]) -> bytes:
    a = array("Q", values)
    if _BIG_ENDIAN:
        a.byteswap()
    return a.tobytes()


def _u32s(values: Iterable[int]) -> bytes:
    a = array("I", values)
    if _BIG_ENDIAN:
        a.byteswap()
    return a.tobytes()


def _read_array(code: str, buf: Any, start: int, n: int) -> array:
    a = array(code)
    a.frombytes(buf[start : start + n * a.itemsize])
    if _BIG_ENDIAN:
        a.byteswap()
    return a


def _name_bytes(name: str) -> bytes:
    b = name.encode()
    if not 0 < len(b) < 256:
        raise ValueError(f"queue name {name!r} must be 1..255 bytes")
    return b


def _encode_publish(
    queue: str,
    ids: Sequence[int],
    bodies: Sequence[bytes],
    delays: Sequence[int] | None,
    receives: Sequence[int] | None,
) -> list[bytes]:
    qb = _name_bytes(queue)
    flags = (F_DELAYS if delays else 0) | (F_RECEIVES if receives else 0)
    parts = [
        _PUB.pack(S_PUBLISH, flags, len(qb), len(ids)),
        qb,
        _u64s(ids),
        _u32s(map(len, bodies)),
    ]
    if delays:
        parts.append(_u64s(delays))
    if receives:
        parts.append(_u32s(receives))
    parts.extend(bodies)
    return parts


def _encode_ids(kind: int, ids: Sequence[int]) -> list[bytes]:
    return [_IDS.pack(kind, len(ids)), _u64s(ids)]


def _encode_dead_letter(queue: str, ids: Sequence[int]) -> list[bytes]:
    qb = _name_bytes(queue)
    return [_DL.pack(S_DEAD_LETTER, len(qb), len(ids)), qb, _u64s(ids)]


def _encode_queue_put(name: str, attributes: Mapping[str, Any]) -> list[bytes]:
    qb = _name_bytes(name)
    ab = json.dumps(dict(attributes), separators=(",", ":"), sort_keys=True).encode()
    return [_QPUT.pack(S_QUEUE_PUT, len(qb), len(ab)), qb, ab]


def _encode_name(kind: int, name: str) -> list[bytes]:
    qb = _name_bytes(name)
    return [_NAME.pack(kind, len(qb)), qb]


def _frame(payload: bytes) -> bytes:
    return FRAME_HEADER.pack(len(payload), _crc32(payload)) + payload


def encode_frame(records: Iterable[Record]) -> bytes:
    """One checksummed frame holding ``records`` in order (consecutive publishes to the same
    queue share a section). Used by tests and tools; the server path builds frames in Wal."""
    parts: list[bytes] = []
    pending: list[Publish] = []

    def flush_publishes() -> None:
        if pending:
            parts.extend(
                _encode_publish(
                    pending[0].queue,
                    [p.msg_id for p in pending],
                    [p.body for p in pending],
                    [p.delay_end_ms for p in pending]
                    if any(p.delay_end_ms for p in pending)
                    else None,
                    [p.receives for p in pending] if any(p.receives for p in pending) else None,
                )
            )
            pending.clear()

    for r in records:
        if isinstance(r, Publish):
            if pending and pending[0].queue != r.queue:
                flush_publishes()
            pending.append(r)
            continue
        flush_publishes()
        if isinstance(r, Receive):
            parts.extend(_encode_ids(S_RECEIVE, r.ids))
        elif isinstance(r, Delete):
            parts.extend(_encode_ids(S_DELETE, r.ids))
        elif isinstance(r, DeadLetter):
            parts.extend(_encode_dead_letter(r.queue, r.ids))
        elif isinstance(r, QueuePut):
            parts.extend(_encode_queue_put(r.name, r.attributes))
        elif isinstance(r, QueueDelete):
            parts.extend(_encode_name(S_QUEUE_DELETE, r.name))
        elif isinstance(r, Purge):
            parts.extend(_encode_name(S_PURGE, r.name))
        elif isinstance(r, NextId):
            parts.append(_U64.pack(S_NEXT_ID, r.next_id))
        elif isinstance(r, Chunk):
            parts.append(_U64.pack(S_CHUNK, r.position))
        elif isinstance(r, End):
            parts.append(_U64.pack(S_END, r.messages))
        else:
            raise TypeError(f"not a log record: {r!r}")
    flush_publishes()
    return _frame(b"".join(parts))


# ---- decoding ----------------------------------------------------------------------------------
class _PubSection(NamedTuple):
    """A publish section, decoded lazily: bodies stay in ``buf`` until they are needed."""

    queue: str
    ids: list[int]
    lens: list[int]
    delays: list[int] | None
    receives: list[int] | None
    body_start: int  # offset in buf of the first body
    buf: Any  # the file's bytes (mmap, bytes or memoryview)


def _decode_sections(buf: Any, start: int, end: int, names: dict[bytes, str]) -> list[tuple]:
    """Decode the sections of one checksummed payload buf[start:end] into tuples
    ``(kind, ...)``. Raises ValueError on malformed content."""
    out: list[tuple] = []
    pos = start
    while pos < end:
        kind = buf[pos]
        if kind == S_PUBLISH:
            _, flags, qlen, n = _PUB.unpack_from(buf, pos)
            pos += _PUB.size
            qraw = bytes(buf[pos : pos + qlen])
            queue = names.get(qraw) or names.setdefault(qraw, qraw.decode())
            pos += qlen
            ids = _read_array("Q", buf, pos, n).tolist()
            pos += 8 * n
            lens = _read_array("I", buf, pos, n).tolist()
            pos += 4 * n
            delays = receives = None
            if flags & F_DELAYS:
                delays = _read_array("Q", buf, pos, n).tolist()
                pos += 8 * n
            if flags & F_RECEIVES:
                receives = _read_array("I", buf, pos, n).tolist()
                pos += 4 * n
            body_start = pos
            pos += sum(lens)
            if len(ids) != n or len(lens) != n or pos > end:
                raise ValueError("publish section overruns its frame")
            out.append(
                (S_PUBLISH, _PubSection(queue, ids, lens, delays, receives, body_start, buf))
            )
        elif kind in (S_RECEIVE, S_DELETE):
            _, n = _IDS.unpack_from(buf, pos)
            pos += _IDS.size
            ids = _read_array("Q", buf, pos, n).tolist()
            pos += 8 * n
            if len(ids) != n:
                raise ValueError("id section overruns its frame")
            out.append((kind, ids))
        elif kind == S_DEAD_LETTER:
            _, qlen, n = _DL.unpack_from(buf, pos)
            pos += _DL.size
            queue = bytes(buf[pos : pos + qlen]).decode()
            pos += qlen
            ids = _read_array("Q", buf, pos, n).tolist()
            pos += 8 * n
            if len(ids) != n:
                raise ValueError("dead-letter section overruns its frame")
            out.append((kind, queue, ids))
        elif kind == S_QUEUE_PUT:
            _, qlen, alen = _QPUT.unpack_from(buf, pos)
            pos += _QPUT.size
            name = bytes(buf[pos : pos + qlen]).decode()
            pos += qlen
            attrs = json.loads(bytes(buf[pos : pos + alen]))
            pos += alen
            if not isinstance(attrs, dict):
                raise ValueError("queue attributes are not an object")
            out.append((kind, name, attrs))
        elif kind in (S_QUEUE_DELETE, S_PURGE):
            _, qlen = _NAME.unpack_from(buf, pos)
            pos += _NAME.size
            name = bytes(buf[pos : pos + qlen]).decode()
            pos += qlen
            out.append((kind, name))
        elif kind in (S_NEXT_ID, S_CHUNK, S_END):
            _, value = _U64.unpack_from(buf, pos)
            pos += _U64.size
            out.append((kind, value))
        else:
            raise ValueError(f"unknown section kind {kind}")
    if pos != end:
        raise ValueError("a section overruns its frame")
    return out


def decode_payload(payload: bytes) -> list[Record]:
    """The records of one frame payload, publishes expanded one per message."""
    records: list[Record] = []
    for sec in _decode_sections(payload, 0, len(payload), {}):
        kind = sec[0]
        if kind == S_PUBLISH:
            p: _PubSection = sec[1]
            off = p.body_start
            for i, (msg_id, ln) in enumerate(zip(p.ids, p.lens, strict=True)):
                records.append(
                    Publish(
                        msg_id,
                        p.queue,
                        bytes(payload[off : off + ln]),
                        p.delays[i] if p.delays else 0,
                        p.receives[i] if p.receives else 0,
                    )
                )
                off += ln
        elif kind == S_RECEIVE:
            records.append(Receive(tuple(sec[1])))
        elif kind == S_DELETE:
            records.append(Delete(tuple(sec[1])))
        elif kind == S_DEAD_LETTER:
            records.append(DeadLetter(tuple(sec[2]), sec[1]))
        elif kind == S_QUEUE_PUT:
            records.append(QueuePut(sec[1], sec[2]))
        elif kind == S_QUEUE_DELETE:
            records.append(QueueDelete(sec[1]))
        elif kind == S_PURGE:
            records.append(Purge(sec[1]))
        elif kind == S_NEXT_ID:
            records.append(NextId(sec[1]))
        elif kind == S_CHUNK:
            records.append(Chunk(sec[1]))
        elif kind == S_END:
            records.append(End(sec[1]))
    return records


class _Scan(NamedTuple):
    good_end: int  # offset after the last valid frame
    reason: str  # "" (clean), "torn" (incomplete frame at the end), "corrupt"
    frames: int


def _scan_frames(
    buf: Any, start: int, end: int, on_frame: Callable[[int, int, int], None]
) -> _Scan:
    """Walk the frames of buf[start:end], calling ``on_frame(frame_start, payload_start,
    payload_end)`` for each valid one; stop at the first frame that is incomplete or whose
    checksum does not match."""
    pos = start
    frames = 0
    mv = memoryview(buf)
    unpack = FRAME_HEADER.unpack_from
    try:
        while pos < end:
            if pos + FRAME_HEADER_SIZE > end:
                return _Scan(pos, _tail_reason(mv, pos, end), frames)
            length, crc = unpack(buf, pos)
            p0 = pos + FRAME_HEADER_SIZE
            p1 = p0 + length
            if length == 0 or length > FRAME_MAX:
                return _Scan(pos, _tail_reason(mv, pos, end), frames)
            if p1 > end:
                return _Scan(pos, "torn", frames)
            if _crc32(mv[p0:p1]) != crc:
                return _Scan(pos, "corrupt", frames)
            on_frame(pos, p0, p1)
            frames += 1
            pos = p1
        return _Scan(pos, "", frames)
    finally:
        mv.release()


def _tail_reason(mv: memoryview, pos: int, end: int) -> str:
    # A crash can leave a zero-filled or short tail: that is a torn write, not corruption.
    return "torn" if not any(mv[pos:end]) or end - pos < FRAME_HEADER_SIZE else "corrupt"


def read_file(path: str | os.PathLike[str]) -> tuple[int, list[Record], _Scan]:
    """Read a segment or snapshot without repairing it: ``(seq, records, scan)``."""
    with open(path, "rb") as f:
        data = f.read()
    _magic, _version, seq = _check_header(data, os.fspath(path))
    records: list[Record] = []

    def on_frame(_f: int, p0: int, p1: int) -> None:
        records.extend(decode_payload(data[p0:p1]))

    scan = _scan_frames(data, HEADER_SIZE, len(data), on_frame)
    return seq, records, scan


def _check_header(data: Any, path: str) -> tuple[bytes, int, int]:
    if len(data) < HEADER_SIZE:
        raise WalCorruptError(f"{path}: shorter than its {HEADER_SIZE}-byte header")
    magic, version, seq = FILE_HEADER.unpack_from(data, 0)
    if magic not in (LOG_MAGIC, SNAP_MAGIC):
        raise WalCorruptError(f"{path}: not a WonderQ log or snapshot (bad magic)")
    if version != FORMAT_VERSION:
        raise WalCorruptError(
            f"{path}: format version {version}, this program reads {FORMAT_VERSION}"
        )
    return magic, version, seq


# ---- recovery -----------------------------------------------------------------------------------
@dataclass
class RecoveryReport:
    """What recovery read and what it dropped; logged at startup."""

    snapshot: str | None = None
    segments: list[str] = field(default_factory=list)
    bytes_read: int = 0
    frames: int = 0
    dropped_bytes: int = 0
    dropped_at: str | None = None  # "file:offset" of the first frame dropped
    dropped_reason: str = ""
    set_aside: list[str] = field(default_factory=list)  # later segments moved out of the way
    seconds: float = 0.0


class _Run:
    """Message bodies of one queue that entered the replayed state in the same epoch of that
    queue, from one file: consecutive publish sections are merged into one run, so replay
    costs list appends per message, not objects."""

    __slots__ = ("buf", "delays", "epoch", "ids", "lens", "offs", "queue", "receives")

    def __init__(self, queue: str, epoch: int, buf: Any) -> None:
        self.queue = queue
        self.epoch = epoch
        self.buf = buf  # the mapped file the bodies are in
        self.ids: list[int] = []
        self.offs: list[int] = []  # offset of each body in buf
        self.lens: list[int] = []
        self.delays: list[int] | None = None  # delay end (wall ms) per message, if any
        self.receives: list[int] | None = None  # receive count per message, if any (snapshots)


_PUB_ONE = struct.Struct("<QI")  # the id and body length of a one-message publish section
_FRAME_PUB = struct.Struct("<IIBBBI")  # a frame header and the publish section header after it


class _Replayer:
    """Folds sections into the state they describe.

    An id's state: its body and base receive count in a run; ``rc`` counts receives since;
    ``moved`` holds its (queue, epoch) after a dead-letter move (receives reset). A purge or a
    queue deletion bumps the queue's epoch, which kills every message placed in it before.
    An id is live iff it is not in ``deleted``, its run is its newest (``superseded`` names
    the newest run of ids stored twice: a snapshot chunk replacing a replayed publish), and
    its (queue, epoch) is current.
    """

    def __init__(self) -> None:
        self.queues: dict[str, dict[str, Any]] = {"default": {}}
        self.epochs: dict[str, int] = collections.defaultdict(int)
        self.runs: list[_Run] = []
        self.open_runs: dict[str, _Run] = {}  # queue -> the run new publishes extend
        self.deleted: set[int] = set()
        self.superseded: dict[int, _Run] = {}
        self.rc: collections.Counter[int] = collections.Counter()
        self.moved: dict[int, tuple[str, int]] = {}
        self.next_id = 1
        self.names: dict[bytes, str] = {}
        # While snapshot chunks are pending: ids placed since the snapshot, to detect overlaps.
        self.recent: set[int] | None = None

    def _run_for(self, queue: str, buf: Any) -> _Run:
        run = self.open_runs.get(queue)
        if run is None or run.buf is not buf or run.epoch != self.epochs[queue]:
            run = self.open_runs[queue] = _Run(queue, self.epochs[queue], buf)
            self.runs.append(run)
        return run

    def apply(self, secs: list[tuple]) -> None:
        for sec in secs:
            kind = sec[0]
            if kind == S_PUBLISH:
                self._publish(sec[1], None)
            elif kind == S_RECEIVE:
                self.rc.update(sec[1])
            elif kind == S_DELETE:
                self._delete(sec[1])
            elif kind == S_DEAD_LETTER:
                queue = sec[1]
                epoch = self.epochs[queue]
                for msg_id in sec[2]:
                    self.moved[msg_id] = (queue, epoch)
                    self.rc.pop(msg_id, None)
            elif kind == S_QUEUE_PUT:
                self.queues[sec[1]] = sec[2]
            elif kind == S_QUEUE_DELETE:
                self.epochs[sec[1]] += 1
                if sec[1] != "default":
                    self.queues.pop(sec[1], None)
            elif kind == S_PURGE:
                self.epochs[sec[1]] += 1
            elif kind == S_NEXT_ID:
                self.next_id = max(self.next_id, sec[1])
            elif kind in (S_CHUNK, S_END):
                raise ValueError("snapshot section in a log segment")

    def _delete(self, ids: list[int]) -> None:
        self.deleted.update(ids)
        rc = self.rc
        if rc:
            for msg_id in rc.keys() & ids:
                del rc[msg_id]
        if self.moved:
            for msg_id in self.moved.keys() & ids:
                del self.moved[msg_id]

    def _publish(self, sec: _PubSection, chunk_run: _Run | None) -> None:
        n = len(sec.ids)
        if not n:
            return
        run = chunk_run or self._run_for(sec.queue, sec.buf)
        base = len(run.ids)
        run.ids.extend(sec.ids)
        run.lens.extend(sec.lens)
        run.offs.extend(itertools.islice(itertools.accumulate(sec.lens, initial=sec.body_start), n))
        for attr in ("delays", "receives"):
            have = getattr(run, attr)
            new = getattr(sec, attr)
            if new is not None:
                if have is None:
                    setattr(run, attr, [0] * base + new)
                else:
                    have.extend(new)
            elif have is not None:
                have.extend([0] * n)
        top = max(sec.ids) + 1
        if top > self.next_id:
            self.next_id = top
        if self.recent is not None:
            self.recent.update(sec.ids)

    def apply_chunk(self, secs: list[tuple]) -> None:
        """A snapshot chunk: the exact state, at its position, of the messages it holds."""
        for sec in secs:
            if sec[0] != S_PUBLISH:
                raise ValueError("a snapshot chunk holds only messages")
            p: _PubSection = sec[1]
            run = _Run(p.queue, self.epochs[p.queue], p.buf)
            self.runs.append(run)
            recent = self.recent
            if recent and not recent.isdisjoint(p.ids):
                for msg_id in recent.intersection(p.ids):
                    self.superseded[msg_id] = run
            if self.rc and not self.rc.keys().isdisjoint(p.ids):
                for msg_id in self.rc.keys() & set(p.ids):
                    del self.rc[msg_id]
            if self.moved and not self.moved.keys().isdisjoint(p.ids):
                for msg_id in self.moved.keys() & set(p.ids):
                    del self.moved[msg_id]
            self._publish(p, run)

    def replay_frames(self, buf: Any, start: int, end: int, chunks: collections.deque) -> _Scan:
        """Replay the frames of buf[start:end] (one segment), applying each pending snapshot
        chunk before the first frame at or past its position. Stops at the first incomplete
        or corrupt frame. One-message publish frames, the common case at low load, are
        decoded inline: that loop is the replay's hot path when frames are small."""
        pos = start
        frames = 0
        mv = memoryview(buf)
        unpack_frame = FRAME_HEADER.unpack_from
        unpack_head = _FRAME_PUB.unpack_from
        unpack_one = _PUB_ONE.unpack_from
        crc32 = _crc32
        next_chunk = chunks[0][0] if chunks else -1
        fast_q: bytes | None = None  # queue name (raw) of the run the fast path extends
        fast_run: _Run | None = None
        try:
            while pos < end:
                if pos + _FRAME_PUB.size <= end:
                    length, crc, kind, flags, qlen, n = unpack_head(buf, pos)
                else:
                    if pos + FRAME_HEADER_SIZE > end:
                        return _Scan(pos, _tail_reason(mv, pos, end), frames)
                    length, crc = unpack_frame(buf, pos)
                    kind = 0
                p0 = pos + FRAME_HEADER_SIZE
                p1 = p0 + length
                if length == 0 or length > FRAME_MAX:
                    return _Scan(pos, _tail_reason(mv, pos, end), frames)
                if p1 > end:
                    return _Scan(pos, "torn", frames)
                if crc32(mv[p0:p1]) != crc:
                    return _Scan(pos, "corrupt", frames)
                frames += 1
                if 0 <= next_chunk <= pos:
                    while chunks and chunks[0][0] <= pos:
                        self.apply_chunk(chunks.popleft()[1])
                    next_chunk = chunks[0][0] if chunks else -1
                    if next_chunk < 0:
                        self.recent = None
                    fast_q = None
                if kind == S_PUBLISH and n == 1 and not flags and length >= 19:
                    q0 = p0 + 7
                    b0 = q0 + qlen + 12
                    if b0 <= p1:
                        msg_id, blen = unpack_one(buf, q0 + qlen)
                        if b0 + blen == p1:
                            qraw = buf[q0 : q0 + qlen]
                            if qraw != fast_q:
                                fast_q, fast_run = self._fast_run(qraw, buf)
                            if fast_run is not None:
                                fast_run.ids.append(msg_id)
                                fast_run.offs.append(b0)
                                fast_run.lens.append(blen)
                                if msg_id >= self.next_id:
                                    self.next_id = msg_id + 1
                                pos = p1
                                continue
                self.apply(_decode_sections(buf, p0, p1, self.names))
                fast_q = None  # the sections may have changed epochs or runs
                pos = p1
            return _Scan(pos, "", frames)
        finally:
            mv.release()

    def _fast_run(self, qraw: bytes, buf: Any) -> tuple[bytes | None, _Run | None]:
        """The run a plain one-message publish to queue ``qraw`` may be appended to directly,
        or None when the general path must handle it."""
        if self.recent is not None:
            return None, None
        queue = self.names.get(qraw)
        if queue is None:
            queue = self.names[qraw] = qraw.decode()
        run = self._run_for(queue, buf)
        if run.delays is not None or run.receives is not None:
            return None, None
        return qraw, run


class RecoveredState:
    """The state recovery found: queues with attributes, live messages, the id counter.

    Message bodies stay in the mapped files until ``load_into`` or ``messages`` copies them;
    call ``close()`` (or use ``with``) afterwards to unmap them.
    """

    def __init__(self, rep: _Replayer, maps: list[mmap.mmap], report: RecoveryReport) -> None:
        self._rep = rep
        self._maps = maps
        self.report = report
        self.queues: dict[str, dict[str, Any]] = dict(rep.queues)
        self.next_id: int = rep.next_id

    def __enter__(self) -> RecoveredState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._rep = _Replayer()
        for m in self._maps:
            with contextlib.suppress(BufferError):
                m.close()
        self._maps = []

    def _live_runs(
        self,
    ) -> Iterator[tuple[str, list[int], Iterable[bytes], list[int] | None, list[int] | None]]:
        """Per run, its live messages as parallel sequences (queue, ids, bodies, receives,
        delay_ends; None = all 0). Runs no later record touched take a path with no Python
        code per message (bodies come from a lazy C-level map); moved messages come out in
        one-message groups."""
        rep = self._rep
        deleted, superseded = rep.deleted, rep.superseded
        rc, moved, epochs, queues = rep.rc, rep.moved, rep.epochs, rep.queues
        for run in rep.runs:
            n = len(run.ids)
            if not n:
                continue
            buf = run.buf
            queue_ok = run.queue in queues and epochs[run.queue] == run.epoch
            clean = (
                queue_ok
                and (not deleted or deleted.isdisjoint(run.ids))
                and (not superseded or superseded.keys().isdisjoint(run.ids))
                and (not rc or rc.keys().isdisjoint(run.ids))
                and (not moved or moved.keys().isdisjoint(run.ids))
            )
            if clean:
                ends = map(operator.add, run.offs, run.lens)
                bodies = map(buf.__getitem__, map(slice, run.offs, ends))
                yield run.queue, run.ids, bodies, run.receives, run.delays
                continue
            ids: list[int] = []
            some: list[bytes] = []
            recs: list[int] = []
            dels: list[int] = []
            for i, msg_id in enumerate(run.ids):
                if msg_id in deleted or superseded.get(msg_id, run) is not run:
                    continue
                o = run.offs[i]
                body = buf[o : o + run.lens[i]]
                d = run.delays[i] if run.delays else 0
                mv = moved.get(msg_id)
                if mv is not None:
                    q, ep = mv
                    if q in queues and epochs[q] == ep:
                        yield (q, [msg_id], [body], [rc.get(msg_id, 0)], [d])
                    continue
                if not queue_ok:
                    continue
                ids.append(msg_id)
                some.append(body)
                recs.append((run.receives[i] if run.receives else 0) + rc.get(msg_id, 0))
                dels.append(d)
            if ids:
                yield run.queue, ids, some, recs, dels

    def messages(self) -> list[Publish]:
        """Every live message, in increasing id order (receives = the recovered count)."""
        out = []
        for q, ids, bodies, recs, dels in self._live_runs():
            zeros = itertools.repeat(0)
            for i, b, r, d in zip(ids, bodies, recs or zeros, dels or zeros, strict=False):
                out.append(Publish(i, q, bytes(b), d, r))
        out.sort(key=lambda p: p.msg_id)
        return out

    def load_into(self, broker: Any, now_ms: int, wall_ms: int) -> int:
        """Create the queues, restore every live message (available again: leases are not
        durable; delays resume with what was left of them by the wall clock) and move the id
        counter above every id ever issued. Returns the number of messages restored."""
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            return self._load_into(broker, now_ms, wall_ms)
        finally:
            if gc_was_enabled:
                gc.enable()

    def _load_into(self, broker: Any, now_ms: int, wall_ms: int) -> int:
        t0 = time.perf_counter()
        self._load_queues(broker)
        max_delay = _max_delay_ms(broker)
        restore = broker.restore
        restored = dropped = 0
        for queue, ids, bodies, recs, dels in self._live_runs():
            if not broker.has_queue(queue):
                dropped += len(ids)
                continue
            if not dels or not any(dels):
                if not recs or not any(recs):
                    for msg_id, body in zip(ids, bodies, strict=False):
                        restore(queue, msg_id, body, 0, now_ms, 0)
                else:
                    for msg_id, body, r in zip(ids, bodies, recs, strict=False):
                        restore(queue, msg_id, body, r, now_ms, 0)
            else:
                zeros = itertools.repeat(0)
                for msg_id, body, r, d in zip(ids, bodies, recs or zeros, dels, strict=False):
                    left = min(max(d - wall_ms, 0), max_delay) if d else 0
                    restore(queue, msg_id, body, r, now_ms, left)
            restored += len(ids)
        if dropped:
            log.warning("recovery: dropped %d messages of queues that no longer exist", dropped)
        broker.set_next_id(max(self.next_id, broker.next_id))
        log.info(
            "recovery: restored %d queues, %d messages in %.3f s; next id %d",
            len(self.queues),
            restored,
            time.perf_counter() - t0,
            self.next_id,
        )
        return restored

    def _load_queues(self, broker: Any) -> None:
        # Create every queue first without dead-letter settings (a dead-letter queue must exist
        # before a queue can name it), then apply the full attributes.
        for name, attrs in self.queues.items():
            base = {
                k: v for k, v in attrs.items() if k not in ("dead_letter_queue", "max_receives")
            }
            _put_queue(broker, name, base)
        for name, attrs in self.queues.items():
            if "dead_letter_queue" in attrs or "max_receives" in attrs:
                _put_queue(broker, name, attrs)


def _max_delay_ms(broker: Any) -> int:
    try:
        from wonderq import _core

        return int(_core.MAX_DELAY_MS)
    except Exception:
        return 604800 * 1000


def _put_queue(broker: Any, name: str, attrs: Mapping[str, Any]) -> None:
    attrs = dict(attrs)
    while True:
        try:
            broker.put_queue(name, attrs)
            return
        except Exception as exc:
            # A setting the broker no longer accepts (say max_message_bytes above a lowered
            # --max-message-bytes): keep the queue, drop the setting, say so.
            bad = next((k for k in attrs if k in str(exc)), None)
            if bad is None:
                if not attrs:
                    raise
                log.warning(
                    "recovery: queue %r: %s; restoring it with default attributes", name, exc
                )
                attrs = {}
                continue
            log.warning("recovery: queue %r: %s; dropping attribute %r", name, exc, bad)
            del attrs[bad]


def recover(data_dir: str | os.PathLike[str]) -> RecoveredState:
    """Read the newest snapshot and the segments after it; repair a torn or corrupt tail.

    The first frame that is incomplete or fails its checksum ends recovery: its segment is
    truncated there (a corrupt tail is first copied to ``<segment>.dropped-<offset>``), later
    segments are renamed ``*.dropped`` and everything is logged. Obsolete files (segments
    older than the snapshot, unfinished snapshots) are removed. A snapshot that does not read
    back whole raises WalCorruptError: snapshots are written atomically, so that is damage.
    """
    # The replay allocates millions of objects and no cycles: the cyclic GC would only rescan
    # them over and over (a third of the time for a million messages).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _recover(os.fspath(data_dir))
    finally:
        if gc_was_enabled:
            gc.enable()


def _recover(d: str) -> RecoveredState:
    t0 = time.perf_counter()
    os.makedirs(d, exist_ok=True)
    report = RecoveryReport()
    segments: dict[int, str] = {}
    snapshots: dict[int, str] = {}
    for name in os.listdir(d):
        if name.endswith(".tmp"):
            log.warning("recovery: removing unfinished file %s", name)
            os.unlink(os.path.join(d, name))
        elif m := _SEGMENT_RE.match(name):
            segments[int(m.group(1))] = name
        elif m := _SNAPSHOT_RE.match(name):
            snapshots[int(m.group(1))] = name
    rep = _Replayer()
    maps: list[mmap.mmap] = []
    chunks: list[tuple[int, list[tuple]]] = []
    snap_seq = max(snapshots) if snapshots else 0
    if snap_seq:
        report.snapshot = snapshots[snap_seq]
        chunks = _read_snapshot(os.path.join(d, snapshots[snap_seq]), snap_seq, rep, maps, report)
    for seq in sorted(snapshots):
        if seq < snap_seq:
            os.unlink(os.path.join(d, snapshots[seq]))
    for seq in sorted(segments):
        if seq < snap_seq:
            log.info("recovery: removing %s (covered by %s)", segments[seq], report.snapshot)
            os.unlink(os.path.join(d, segments.pop(seq)))
    expected = snap_seq or (min(segments) if segments else 1)
    if not snap_seq and segments and expected != 1:
        log.warning("recovery: no snapshot and the first segment is %s", segments[expected])
    stopped = False
    for seq in sorted(segments):
        path = os.path.join(d, segments[seq])
        if stopped or seq != expected:
            if not stopped:
                report.dropped_reason = f"segment {expected} is missing"
                report.dropped_at = f"{segment_name(expected)}:0"
                log.error(
                    "recovery: %s is missing; setting aside the segments after it",
                    segment_name(expected),
                )
                stopped = True
            os.replace(path, path + ".dropped")
            report.set_aside.append(segments[seq])
            report.dropped_bytes += os.path.getsize(path + ".dropped")
            continue
        expected += 1
        report.segments.append(segments[seq])
        ok = _replay_segment(path, seq, rep, maps, report, chunks if seq == snap_seq else [])
        if seq == snap_seq:
            # Chunks positioned past the end of the segment (nothing was appended after them,
            # or its tail was lost) still belong before the next segment.
            for _pos, secs in chunks:
                rep.apply_chunk(secs)
            chunks = []
            rep.recent = None
        if not ok:
            stopped = True
    # The snapshot's segment is missing altogether: its chunks come after everything.
    for _pos, secs in chunks:
        rep.apply_chunk(secs)
    rep.recent = None
    state = RecoveredState(rep, maps, report)
    report.seconds = time.perf_counter() - t0
    if report.dropped_bytes or report.set_aside:
        log.error(
            "recovery: dropped %d bytes from %s (%s); set aside: %s",
            report.dropped_bytes,
            report.dropped_at,
            report.dropped_reason,
            ", ".join(report.set_aside) or "nothing",
        )
    log.info(
        "recovery: read %s and %d segment(s), %d frames, %d bytes in %.3f s",
        report.snapshot or "no snapshot",
        len(report.segments),
        report.frames,
        report.bytes_read,
        report.seconds,
    )
    return state


def _map(path: str, maps: list[mmap.mmap]) -> Any:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return b""
        m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    maps.append(m)
    return m


def _read_snapshot(
    path: str, seq: int, rep: _Replayer, maps: list[mmap.mmap], report: RecoveryReport
) -> list[tuple[int, list[tuple]]]:
    """Apply the snapshot's queues and id counter; return its chunks (position, sections) to
    be applied while replaying segment ``seq``."""
    buf = _map(path, maps)
    magic, _, file_seq = _check_header(buf, path)
    if magic != SNAP_MAGIC or file_seq != seq:
        raise WalCorruptError(f"{path}: header does not match its name")
    chunks: list[tuple[int, list[tuple]]] = []
    head: list[tuple] = []
    end_count: list[int] = []
    names = rep.names

    def on_frame(_f: int, p0: int, p1: int) -> None:
        if end_count:
            raise WalCorruptError(f"{path}: data after the end marker")
        secs = _decode_sections(buf, p0, p1, names)
        for sec in secs:
            if sec[0] == S_CHUNK:
                chunks.append((sec[1], []))
            elif sec[0] == S_END:
                end_count.append(sec[1])
            elif chunks:
                chunks[-1][1].append(sec)
            else:
                head.append(sec)

    try:
        scan = _scan_frames(buf, HEADER_SIZE, len(buf), on_frame)
    except ValueError as exc:
        raise WalCorruptError(f"{path}: {exc}") from exc
    if scan.reason or not end_count:
        raise WalCorruptError(
            f"{path}: snapshot damaged at offset {scan.good_end} ({scan.reason or 'no end marker'})"
        )
    count = sum(len(s[1].ids) for _, secs in chunks for s in secs if s[0] == S_PUBLISH)
    if count != end_count[0]:
        raise WalCorruptError(f"{path}: holds {count} messages, its end marker says {end_count[0]}")
    report.frames += scan.frames
    report.bytes_read += len(buf)
    rep.apply(head)
    return chunks


def _replay_segment(
    path: str,
    seq: int,
    rep: _Replayer,
    maps: list[mmap.mmap],
    report: RecoveryReport,
    chunks: list[tuple[int, list[tuple]]],
) -> bool:
    """Replay one segment, interleaving snapshot chunks at their positions. Returns False if
    the segment was cut short (recovery stops after it)."""
    size = os.path.getsize(path)
    if size < HEADER_SIZE:
        # Created but its header never made it to disk: an empty segment.
        log.warning("recovery: %s has a torn header; treating it as empty", os.path.basename(path))
        report.dropped_bytes += size
        _truncate(path, 0)
        return True
    buf = _map(path, maps)
    magic, _, file_seq = _check_header(buf, path)
    if magic != LOG_MAGIC or file_seq != seq:
        raise WalCorruptError(f"{path}: header does not match its name")
    pending = collections.deque(chunks)
    chunks.clear()
    if pending:
        rep.recent = set()
    try:
        scan = rep.replay_frames(buf, HEADER_SIZE, len(buf), pending)
    except (ValueError, UnicodeDecodeError, struct.error) as exc:
        raise WalCorruptError(
            f"{path}: a frame with a valid checksum does not decode: {exc}"
        ) from exc
    chunks.extend(pending)  # beyond the end: applied after the segment by the caller
    report.frames += scan.frames
    report.bytes_read += scan.good_end
    if not scan.reason:
        return True
    name = os.path.basename(path)
    dropped = size - scan.good_end
    report.dropped_bytes += dropped
    report.dropped_at = f"{name}:{scan.good_end}"
    report.dropped_reason = (
        "an incomplete frame (torn write)"
        if scan.reason == "torn"
        else ("a frame whose checksum does not match")
    )
    if scan.reason == "corrupt":
        keep = f"{path}.dropped-{scan.good_end}"
        with open(keep, "wb") as f:
            f.write(buf[scan.good_end :])
        log.error("recovery: copied the %d corrupt bytes to %s", dropped, os.path.basename(keep))
    log.warning(
        "recovery: %s: %s at offset %d; dropping %d bytes after %d good frames",
        name,
        report.dropped_reason,
        scan.good_end,
        dropped,
        scan.frames,
    )
    _truncate(path, scan.good_end)
    return False


def _truncate(path: str, size: int) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- the writer thread's side ----------------------------------------------------------------
class _LogFile:
    """One open segment, owned by the writer thread.

    Invariants: bytes [0, good) are on disk as we wrote them; [good, synced) never happens -
    synced <= good; ``pending`` holds data not yet written (including data whose write failed),
    to be written at ``good`` in order; ``dirty`` means bytes past ``good`` may be on disk from
    a failed write and must be truncated before anything else is written, so that a torn
    frame is never followed by a valid one. ``unsynced`` keeps the bytes in [synced, good)
    when fsync matters: after a failed fsync the kernel may have dropped them, so they are
    written again.
    """

    def __init__(self, path: str, fd: int, size: int, keep_unsynced: bool) -> None:
        self.path = path
        self.fd = fd
        self.good = size
        self.synced = size
        self.pending: collections.deque[bytes | bytearray] = collections.deque()
        self.unsynced: list[bytes | bytearray] = []
        self.keep_unsynced = keep_unsynced
        self.dirty = False

    def write(self, sync: bool) -> tuple[int, float]:
        """Write what is pending, then fsync if asked; returns (bytes written, fsync seconds
        or -1). Raises OSError, leaving state ready for a retry."""
        if self.dirty:
            os.ftruncate(self.fd, self.good)
            self.dirty = False
        written = 0
        if self.pending:
            bufs = list(self.pending)
            total = sum(map(len, bufs))
            try:
                _pwrite_all(self.fd, bufs, self.good, total)
            except OSError:
                self.dirty = True
                raise
            self.pending.clear()
            self.good += total
            written = total
            if self.keep_unsynced:
                self.unsynced.extend(bufs)
        took = -1.0
        if sync and self.synced < self.good:
            t0 = time.perf_counter()
            try:
                os.fdatasync(self.fd)
            except OSError as exc:
                exc.wal_fsync = True  # type: ignore[attr-defined]
                # Linux may have marked the failed pages clean: what was not known to be
                # synced must be written again, from our copy, after truncating to it.
                if self.keep_unsynced:
                    self.pending.extendleft(reversed(self.unsynced))
                    self.unsynced = []
                    self.good = self.synced
                    self.dirty = True
                raise
            took = time.perf_counter() - t0
            self.synced = self.good
            self.unsynced = []
        return written, took

    def close(self) -> None:
        os.close(self.fd)


def _pwrite_all(fd: int, bufs: list[bytes | bytearray], offset: int, total: int) -> None:
    done = 0
    while done < total:
        n = os.pwritev(fd, bufs, offset + done)
        if n <= 0:
            raise OSError(errno.EIO, "pwritev wrote nothing")
        done += n
        if done < total:
            # A short write: drop what went out and continue with the rest.
            rest: list[bytes | bytearray | memoryview] = []
            skip = n
            for b in bufs:
                if skip >= len(b):
                    skip -= len(b)
                    continue
                rest.append(memoryview(b)[skip:] if skip else b)
                skip = 0
            bufs = rest  # type: ignore[assignment]


def _create_file(directory: str, name: str, magic: bytes, seq: int) -> tuple[str, int]:
    """Create a file holding only its header, fsynced with its directory entry."""
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _pwrite_all(fd, [FILE_HEADER.pack(magic, FORMAT_VERSION, seq)], 0, HEADER_SIZE)
        os.fsync(fd)
        _fsync_dir(directory)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    return path, fd


class _Writer:
    """The writer thread's state: the current segment, and older ones still to be finished
    (written, fsynced, closed) before anything of the current one is written."""

    def __init__(self, current: _LogFile) -> None:
        self.current = current
        self.closing: list[_LogFile] = []
        self.bytes_written = 0
        self.fsyncs = 0
        self.last_fsync_s = 0.0

    def run(self, data: bytes | bytearray, sync: bool, rotate_to: _LogFile | None) -> None:
        if data:
            self.current.pending.append(data)
        if rotate_to is not None:
            self.closing.append(self.current)
            self.current = rotate_to
        while self.closing:
            old = self.closing[0]
            self._write(old, True)
            old.close()
            self.closing.pop(0)
        self._write(self.current, sync)

    def _write(self, f: _LogFile, sync: bool) -> None:
        written, took = f.write(sync)
        self.bytes_written += written
        if took >= 0:
            self.fsyncs += 1
            self.last_fsync_s = took

    def close(self) -> None:
        for f in [*self.closing, self.current]:
            with contextlib.suppress(OSError):
                f.close()


# ---- snapshots ----------------------------------------------------------------------------------
class SnapshotSource(Protocol):
    """What compaction reads from the live state. ``BrokerSnapshotSource`` adapts the engine."""

    def snapshot_queues(self) -> list[tuple[str, dict[str, Any]]]:
        """Every queue with its full attributes (as ``Broker.queue_info()["attributes"]``)."""
        ...

    def snapshot_next_id(self) -> int:
        """The id the next publish will get."""
        ...

    def snapshot_messages(
        self, cursor: int, max_count: int
    ) -> tuple[int, list[tuple[int, str, bytes, int, int]]]:
        """Up to ``max_count`` live messages after ``cursor`` (start with 0) as ``(id, queue,
        raw_body, receives, delay_end_wall_ms)``; returns ``(next_cursor, messages)``, and
        ``next_cursor == 0`` once the iteration is complete. Called once per event-loop turn;
        the state may change between calls (see docs/DURABILITY.md, "Compaction")."""
        ...

    def live_bytes(self) -> int:
        """An estimate of the bytes of live data (the compaction trigger compares to it)."""
        ...


class BrokerSnapshotSource:
    """SnapshotSource over the engine; needs ``Broker.dump_messages`` (see DURABILITY.md)."""

    def __init__(self, broker: Any, now_ms: Callable[[], int], wall_ms: Callable[[], int]) -> None:
        self.broker = broker
        self.now_ms = now_ms
        self.wall_ms = wall_ms

    def snapshot_queues(self) -> list[tuple[str, dict[str, Any]]]:
        b = self.broker
        return [(name, dict(b.queue_info(name)["attributes"])) for name in b.queue_names()]

    def snapshot_next_id(self) -> int:
        return int(self.broker.next_id)

    def snapshot_messages(
        self, cursor: int, max_count: int
    ) -> tuple[int, list[tuple[int, str, bytes, int, int]]]:
        now = self.now_ms()
        wall = self.wall_ms()
        cursor, msgs = self.broker.dump_messages(cursor, max_count, now)
        return cursor, [(i, q, b, r, wall + d if d > 0 else 0) for i, q, b, r, d in msgs]

    def live_bytes(self) -> int:
        return int(self.broker.memory_bytes)


def encode_chunk(position: int, messages: Sequence[tuple[int, str, bytes, int, int]]) -> bytes:
    """A snapshot frame: a chunk marker, then one publish section per queue."""
    by_queue: dict[str, list[tuple[int, str, bytes, int, int]]] = {}
    for m in messages:
        by_queue.setdefault(m[1], []).append(m)
    parts = [_U64.pack(S_CHUNK, position)]
    for queue, ms in by_queue.items():
        delays = [m[4] for m in ms]
        recs = [m[3] for m in ms]
        parts.extend(
            _encode_publish(
                queue,
                [m[0] for m in ms],
                [m[2] for m in ms],
                delays if any(delays) else None,
                recs if any(recs) else None,
            )
        )
    return _frame(b"".join(parts))


class _SnapshotFile:
    """A snapshot being written (snapshot thread). Visible under its final name only after
    ``commit``: write to ``.tmp``, fsync, rename, fsync the directory."""

    def __init__(self, directory: str, seq: int) -> None:
        self.directory = directory
        self.seq = seq
        self.final = os.path.join(directory, snapshot_name(seq))
        self.tmp = self.final + ".tmp"
        self.fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.size = 0
        try:
            self.write(FILE_HEADER.pack(SNAP_MAGIC, FORMAT_VERSION, seq))
        except BaseException:
            self.abort()
            raise

    def write(self, data: bytes) -> None:
        _pwrite_all(self.fd, [data], self.size, len(data))
        self.size += len(data)

    def commit(self, count: int) -> int:
        self.write(_frame(_U64.pack(S_END, count)))
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = -1
        os.replace(self.tmp, self.final)
        _fsync_dir(self.directory)
        return self.size

    def abort(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
        with contextlib.suppress(OSError):
            os.unlink(self.tmp)


# ---- the log, event-loop side -------------------------------------------------------------------
class _Batch:
    """Sealed frames waiting for the writer, with the futures waiting on them."""

    __slots__ = ("buf", "force_sync", "needs_sync", "rotate_to", "waiters")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.waiters: list[asyncio.Future[None]] = []
        self.needs_sync = False  # holds records whose answers wait for durability (always)
        self.force_sync = False  # fsync after writing it, whatever the mode
        self.rotate_to: _LogFile | None = None  # start this segment after writing buf

    def __bool__(self) -> bool:
        return bool(self.buf or self.waiters or self.rotate_to or self.force_sync)


class Wal:
    """The write-ahead log of one server.

    Lifecycle: ``Wal(dir, fsync=...)`` -> ``state = wal.recover()`` -> ``state.load_into(...)``
    -> ``await wal.start(source)`` -> appends/commits -> ``await wal.close()``.

    Appends must come from the event loop thread, in the order the engine applied the changes.
    Publishes of one frame are written before its receives and dead-letter moves, which come
    before its deletes; a queue create/update/delete or a purge seals the frame, so nothing is
    reordered across it. (This reordering is safe: within one turn a message is published
    before it is received, moved or deleted.)
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        fsync: str = "everysec",
        compact_min_bytes: int = COMPACT_MIN_BYTES,
        compact_ratio: float = COMPACT_RATIO,
        snapshot_chunk: int = SNAPSHOT_CHUNK_MESSAGES,
        wall_ms: Callable[[], int] | None = None,
        tick_s: float = TICK_S,
    ) -> None:
        if fsync not in FSYNC_MODES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_MODES)}, not {fsync!r}")
        self.data_dir = os.fspath(data_dir)
        self.fsync = fsync
        self.compact_min_bytes = compact_min_bytes
        self.compact_ratio = compact_ratio
        self.snapshot_chunk = snapshot_chunk
        self._wall_ms = wall_ms or (lambda: time.time_ns() // 1_000_000)
        self._tick_s = tick_s
        self._always = fsync == "always"
        # pending records of the frame being built (see _seal)
        self._pub: dict[str, list[Any]] = {}  # queue -> [ids, bodies, delay_ends | None]
        self._mid: list[list[Any]] = []  # [kind, queue | None, ids] receive / dead-letter groups
        self._dels: list[int] = []
        self._misc: list[bytes] = []  # encoded next-id sections
        self._frame_bytes = 0
        # the publish group of the last publish: lets append_publish skip the dict lookup
        self._pq: str | None = None
        self._pids: list[int] = []
        self._pbodies: list[bytes] = []
        self._pslow = False  # that group carries delays or receives
        self._names: dict[str, bytes] = {}
        self._cur = _Batch()  # sealed frames for the current segment
        self._ready: collections.deque[_Batch] = collections.deque()  # batches ending in a rotation
        self._inflight = False
        self._end_of_turn: asyncio.Handle | None = None
        self._failed: WalError | None = None
        self._closed = False
        self._started = False
        self._id_reserved = 0
        self._id_mark = 0
        # files
        self._seq = 0
        self._seg_pos = HEADER_SIZE  # offset of the next frame in the current segment
        self._old_bytes = 0  # snapshot + segments before the current one
        self._segments = 1
        self._snapshot_bytes = 0
        self._recovered = False
        # compaction
        self._source: SnapshotSource | None = None
        self._compaction: asyncio.Task[None] | None = None
        self._compact_after = 0.0
        # metrics
        self.compactions = 0
        self.compaction_failures = 0
        self.fsync_failures = 0
        self.write_failures = 0
        self.last_snapshot_s = 0.0
        self._writer: _Writer | None = None
        self._wexec: concurrent.futures.ThreadPoolExecutor | None = None
        self._sexec: concurrent.futures.ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tick: asyncio.TimerHandle | None = None
        self._last_sync = 0.0

    # ---- startup ------------------------------------------------------------------------------
    def recover(self) -> RecoveredState:
        """Read and repair the directory (blocking; call before ``start``)."""
        state = recover(self.data_dir)
        self._recovered = True
        self._id_reserved = state.next_id
        return state

    async def start(self, source: SnapshotSource | None = None) -> None:
        """Open the last segment for appending (or create one) and start the writer thread.
        ``source`` enables compaction."""
        if not self._recovered:
            self.recover().close()
        self._loop = asyncio.get_running_loop()
        self._source = source
        self._wexec = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="wonderq-wal")
        self._sexec = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="wonderq-snapshot"
        )
        current = await self._loop.run_in_executor(self._wexec, self._open_tail)
        self._writer = _Writer(current)
        self._seg_pos = current.good
        self._last_sync = time.monotonic()
        self._started = True
        self._tick = self._loop.call_later(self._tick_s, self._on_tick)

    def _open_tail(self) -> _LogFile:
        d = self.data_dir
        segs = sorted(int(m.group(1)) for n in os.listdir(d) if (m := _SEGMENT_RE.match(n)))
        snaps = sorted(int(m.group(1)) for n in os.listdir(d) if (m := _SNAPSHOT_RE.match(n)))
        keep = self.fsync != "never"
        self._snapshot_bytes = (
            os.path.getsize(os.path.join(d, snapshot_name(snaps[-1]))) if snaps else 0
        )
        self._old_bytes = self._snapshot_bytes
        for s in segs[:-1]:
            self._old_bytes += os.path.getsize(os.path.join(d, segment_name(s)))
        self._segments = max(len(segs), 1)
        if segs and os.path.getsize(os.path.join(d, segment_name(segs[-1]))) >= HEADER_SIZE:
            self._seq = segs[-1]
            path = os.path.join(d, segment_name(self._seq))
            fd = os.open(path, os.O_WRONLY)
            return _LogFile(path, fd, os.fstat(fd).st_size, keep)
        self._seq = segs[-1] if segs else (snaps[-1] if snaps else 1)
        path, fd = _create_file(d, segment_name(self._seq), LOG_MAGIC, self._seq)
        return _LogFile(path, fd, HEADER_SIZE, keep)

    # ---- appends (event loop) -------------------------------------------------------------------
    def _qname(self, queue: str) -> bytes:
        b = self._names.get(queue)
        if b is None:
            b = self._names[queue] = _name_bytes(queue)
        return b

    def append_publish(
        self, msg_id: int, queue: str, body: bytes, delay_ms: int = 0, receives: int = 0
    ) -> None:
        """A message stored by the engine. ``delay_ms`` is the delay it was stored with (the
        queue's default when the request gave none); it is logged as the wall-clock time the
        delay ends. ``receives`` is only for restoring messages that already have some."""
        # Fast path: same queue as the previous publish, no delay; two list appends.
        if queue is self._pq and not (delay_ms or receives or self._pslow):
            self._pids.append(msg_id)
            self._pbodies.append(body)
            self._frame_bytes += len(body)
            if msg_id >= self._id_mark or self._frame_bytes > FRAME_SOFT_LIMIT:
                self._publish_checks(msg_id)
            return
        g = self._pub.get(queue)
        if g is None:
            self._qname(queue)
            g = self._pub[queue] = [[], [], None, None]
        g[0].append(msg_id)
        g[1].append(body)
        if delay_ms > 0 or g[2] is not None:
            if g[2] is None:
                g[2] = [0] * (len(g[0]) - 1)
            g[2].append(self._wall_ms() + delay_ms if delay_ms > 0 else 0)
        if receives or g[3] is not None:
            if g[3] is None:
                g[3] = [0] * (len(g[0]) - 1)
            g[3].append(receives)
        self._pq = queue
        self._pids, self._pbodies = g[0], g[1]
        self._pslow = g[2] is not None or g[3] is not None
        self._frame_bytes += len(body)
        self._publish_checks(msg_id)

    def _publish_checks(self, msg_id: int) -> None:
        if msg_id >= self._id_mark:
            self._reserve_ids(msg_id)
        if self._frame_bytes > FRAME_SOFT_LIMIT:
            self._seal()

    def append_publish_batch(
        self,
        first_id: int,
        queue: str,
        bodies: Sequence[bytes],
        delays_ms: Sequence[int] | None = None,
    ) -> None:
        """``publish_batch``: ids ``first_id ..`` in order."""
        if delays_ms is None:
            for i, body in enumerate(bodies):
                self.append_publish(first_id + i, queue, body)
        else:
            for i, (body, d) in enumerate(zip(bodies, delays_ms, strict=True)):
                self.append_publish(first_id + i, queue, body, d)

    def _reserve_ids(self, msg_id: int) -> None:
        self._id_reserved = max(self._id_reserved, msg_id + ID_RESERVE_BLOCK)
        self._id_mark = msg_id + ID_RESERVE_BLOCK // 2
        self._misc.append(_U64.pack(S_NEXT_ID, self._id_reserved))

    def append_receive(self, ids: Iterable[int]) -> None:
        """Messages leased by a receive (one receive each). Never waited for."""
        ids = list(ids)
        if not ids:
            return
        mid = self._mid
        if mid and mid[-1][0] == S_RECEIVE:
            mid[-1][2].extend(ids)
        else:
            mid.append([S_RECEIVE, None, ids])

    def append_dead_letter(self, msg_id: int, queue: str) -> None:
        """A message moved to dead-letter queue ``queue`` (receive count back to 0)."""
        mid = self._mid
        if mid and mid[-1][0] == S_DEAD_LETTER and mid[-1][1] == queue:
            mid[-1][2].append(msg_id)
        else:
            self._qname(queue)
            mid.append([S_DEAD_LETTER, queue, [msg_id]])

    def append_delete(self, msg_id: int) -> None:
        """A successful ack."""
        self._dels.append(msg_id)

    def append_delete_many(self, ids: Iterable[int]) -> None:
        """The ``deleted`` list of a batch ack."""
        self._dels.extend(ids)

    def append_queue_put(self, name: str, attributes: Mapping[str, Any]) -> None:
        """A queue created or updated; ``attributes`` = its full attributes afterwards."""
        self._barrier(_encode_queue_put(name, attributes))

    def append_queue_delete(self, name: str) -> None:
        self._barrier(_encode_name(S_QUEUE_DELETE, name))

    def append_purge(self, name: str) -> None:
        self._barrier(_encode_name(S_PURGE, name))

    def _barrier(self, parts: list[bytes]) -> None:
        self._seal()
        self._add_frame(_frame(b"".join(parts)))
        self._cur.needs_sync = True

    def _seal(self) -> None:
        """Encode the pending records as one frame into the current batch."""
        if not (self._pub or self._mid or self._dels or self._misc):
            return
        parts = self._misc
        names = self._names
        for queue, (ids, bodies, delays, recs) in self._pub.items():
            qb = names[queue]
            parts.append(
                _PUB.pack(
                    S_PUBLISH,
                    (F_DELAYS if delays else 0) | (F_RECEIVES if recs else 0),
                    len(qb),
                    len(ids),
                )
            )
            parts.append(qb)
            parts.append(_u64s(ids))
            parts.append(_u32s(map(len, bodies)))
            if delays:
                parts.append(_u64s(delays))
            if recs:
                parts.append(_u32s(recs))
            parts.extend(bodies)
        for kind, queue, ids in self._mid:
            if kind == S_RECEIVE:
                parts.append(_IDS.pack(S_RECEIVE, len(ids)))
            else:
                qb = names[queue]
                parts.append(_DL.pack(S_DEAD_LETTER, len(qb), len(ids)))
                parts.append(qb)
            parts.append(_u64s(ids))
        if self._dels:
            parts.append(_IDS.pack(S_DELETE, len(self._dels)))
            parts.append(_u64s(self._dels))
        payload = b"".join(parts)
        if self._pub or self._dels:
            self._cur.needs_sync = True
        self._pub = {}
        self._pq = None
        self._pslow = False
        self._mid = []
        self._dels = []
        self._misc = []
        self._frame_bytes = 0
        buf = self._cur.buf
        buf += FRAME_HEADER.pack(len(payload), _crc32(payload))
        buf += payload
        self._seg_pos += FRAME_HEADER_SIZE + len(payload)

    def _add_frame(self, frame: bytes) -> None:
        self._cur.buf += frame
        self._seg_pos += len(frame)

    # ---- commit ---------------------------------------------------------------------------------
    def check_writable(self) -> None:
        """Raise WalError while the log is failed (the server answers publishes 507)."""
        if self._failed is not None:
            raise self._failed
        if self._closed:
            raise WalError("the log is closed")

    @property
    def failed(self) -> bool:
        return self._failed is not None

    def commit(self) -> asyncio.Future[None] | None:
        """After appending a publish, delete or queue change: with ``--fsync always`` returns
        the future that resolves once this and everything appended before it is written and
        fsynced (it fails with WalError if that fails); answer the request when it does. In
        the other modes returns None: answer at once. Either way the frame is handed to the
        writer at the end of this event-loop turn, so every request of the turn shares one
        write + fsync."""
        if self._end_of_turn is None and self._loop is not None:
            self._end_of_turn = self._loop.call_soon(self._flush_end_of_turn)
        if not self._always:
            return None
        return self._waiter()

    def _waiter(self) -> asyncio.Future[None]:
        assert self._loop is not None
        w = self._cur.waiters
        if not w:
            w.append(self._loop.create_future())
        return w[0]

    def _flush_end_of_turn(self) -> None:
        self._end_of_turn = None
        self.flush()

    def flush(self) -> asyncio.Future[None] | None:
        """Hand everything appended so far to the writer now (or as soon as the write in
        flight ends). Returns, with ``--fsync always``, the future covering it if it holds
        records that answers must wait for; otherwise None."""
        self._seal()
        fut = self._waiter() if self._always and self._cur.needs_sync else None
        self._kick()
        return fut

    async def sync(self) -> None:
        """Wait until everything appended so far is written and fsynced, whatever the mode."""
        self._seal()
        fut = self._loop.create_future()  # type: ignore[union-attr]
        self._cur.waiters.append(fut)
        self._cur.force_sync = True
        self._kick()
        await fut

    def _kick(self) -> None:
        if self._inflight or not self._started:
            return
        if self._ready:
            batch = self._ready.popleft()
        elif self._cur:
            if self._failed is not None and not self._cur.waiters and not self._force_retry:
                return  # failed: try again on the tick or when an answer waits
            # A waiter in this batch waits for every record appended before it: seal them in
            # (they are not yet, when a write completes before this turn's flush runs).
            self._seal()
            batch, self._cur = self._cur, _Batch()
        else:
            return
        now = time.monotonic()
        sync = (
            (batch.needs_sync and self._always)
            or batch.force_sync
            or batch.rotate_to is not None
            or (self.fsync == "everysec" and now - self._last_sync >= self._tick_s)
        )
        self._force_retry = False
        if sync:
            self._last_sync = now
        self._inflight = True
        assert self._loop is not None and self._writer is not None
        fut = self._loop.run_in_executor(
            self._wexec, self._writer.run, batch.buf, sync, batch.rotate_to
        )
        fut.add_done_callback(functools.partial(self._written, batch=batch))

    _force_retry = False

    def _written(self, fut: asyncio.Future[None], *, batch: _Batch) -> None:
        self._inflight = False
        exc = fut.exception()
        if exc is None:
            if self._failed is not None:
                log.warning("the log is writable again")
                self._failed = None
            for w in batch.waiters:
                if not w.done():
                    w.set_result(None)
        else:
            if isinstance(exc, OSError):
                if getattr(exc, "wal_fsync", False):
                    self.fsync_failures += 1
                else:
                    self.write_failures += 1
            err = WalError(f"the log could not be written: {exc}")
            err.__cause__ = exc
            if self._failed is None:
                log.error("the log failed; refusing publishes until it can be written: %s", exc)
            self._failed = err
            for w in batch.waiters:
                if not w.done():
                    w.set_exception(err)
            if not isinstance(exc, OSError):
                log.error("unexpected error in the log writer", exc_info=exc)
        if self._closed and not self._cur and not self._ready:
            return
        self._kick()

    def _on_tick(self) -> None:
        """Every tick_s: fsync what everysec left unsynced, retry after a failure, consider
        compaction."""
        assert self._loop is not None
        self._tick = self._loop.call_later(self._tick_s, self._on_tick)
        w = self._writer
        if w is None:
            return
        self._seal()
        if self._failed is not None:
            # Retry what failed (the writer still holds it), and fsync it to be sure.
            self._force_retry = True
            self._cur.force_sync = True
            self._kick()
        elif self.fsync == "everysec" and not self._inflight:
            if self._cur or w.current.synced < w.current.good:
                self._cur.force_sync = True
                self._kick()
        elif self._cur and not self._inflight:
            self._kick()
        self.maybe_compact()

    # ---- compaction -----------------------------------------------------------------------------
    @property
    def disk_bytes(self) -> int:
        """Bytes of the snapshot and every segment (including what is queued to be written)."""
        return self._old_bytes + self._seg_pos

    def maybe_compact(self) -> asyncio.Task[None] | None:
        """Start a compaction if the files hold much more than the live data."""
        if self._source is None or self._compaction is not None or self._failed is not None:
            return None
        if time.monotonic() < self._compact_after:
            return None
        limit = max(self.compact_min_bytes, self.compact_ratio * self._source.live_bytes())
        if self.disk_bytes <= limit:
            return None
        return self.compact()

    def compact(self) -> asyncio.Task[None]:
        """Snapshot the live state and start a new segment (a no-op if one is running)."""
        if self._compaction is None:
            assert self._loop is not None
            self._compaction = self._loop.create_task(self._compact())
        return self._compaction

    async def _compact(self) -> None:
        assert self._loop is not None and self._source is not None
        loop = self._loop
        source = self._source
        t0 = time.perf_counter()
        snap: _SnapshotFile | None = None
        seq = self._seq + 1
        try:
            path, fd = await loop.run_in_executor(
                self._wexec, _create_file, self.data_dir, segment_name(seq), LOG_MAGIC, seq
            )
            new_file = _LogFile(path, fd, HEADER_SIZE, self.fsync != "never")
            # The cut. No await from here until the queues are read: everything appended
            # before goes to the old segment, everything after to the new one.
            self._seal()
            self._cur.rotate_to = new_file
            self._ready.append(self._cur)
            self._cur = _Batch()
            self._old_bytes += self._seg_pos
            self._seg_pos = HEADER_SIZE
            self._seq = seq
            self._segments += 1
            queues = source.snapshot_queues()
            next_id = max(source.snapshot_next_id(), self._id_reserved)
            self._kick()
            snap = await loop.run_in_executor(self._sexec, _SnapshotFile, self.data_dir, seq)
            head = [_encode_queue_put(n, a) for n, a in queues]
            head.append([_U64.pack(S_NEXT_ID, next_id)])
            await loop.run_in_executor(
                self._sexec, snap.write, _frame(b"".join(p for parts in head for p in parts))
            )
            cursor = 0
            count = 0
            while True:
                self._seal()
                position = self._seg_pos
                cursor, msgs = source.snapshot_messages(cursor, self.snapshot_chunk)
                if msgs:
                    count += len(msgs)
                    await loop.run_in_executor(
                        self._sexec, snap.write, encode_chunk(position, msgs)
                    )
                else:
                    await asyncio.sleep(0)
                if cursor == 0:
                    break
            # Recovery applies chunk N at its position in the new segment: the segment must be
            # on disk at least that far before the snapshot may replace the old files.
            await self.sync()
            size = await loop.run_in_executor(self._sexec, snap.commit, count)
            snap = None
            await loop.run_in_executor(self._sexec, self._remove_before, seq)
            self._snapshot_bytes = size
            self._old_bytes = size
            self._segments = 1
            self.compactions += 1
            self.last_snapshot_s = time.perf_counter() - t0
            log.info(
                "compaction: snapshot %s holds %d messages (%d bytes) in %.3f s",
                snapshot_name(seq),
                count,
                size,
                self.last_snapshot_s,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.compaction_failures += 1
            self._compact_after = time.monotonic() + COMPACT_RETRY_S
            log.error(
                "compaction failed (the log is intact; retrying later): %s",
                exc,
                exc_info=not isinstance(exc, OSError | WalError),
            )
        finally:
            if snap is not None:
                await loop.run_in_executor(self._sexec, snap.abort)
            self._compaction = None

    def _remove_before(self, seq: int) -> None:
        for name in os.listdir(self.data_dir):
            m = _SEGMENT_RE.match(name) or _SNAPSHOT_RE.match(name)
            if m and int(m.group(1)) < seq:
                os.unlink(os.path.join(self.data_dir, name))
        _fsync_dir(self.data_dir)

    # ---- metrics and shutdown -------------------------------------------------------------------
    def metrics(self) -> dict[str, float]:
        """Counters for /metrics, by Prometheus name."""
        w = self._writer
        return {
            "wonderq_wal_bytes": self.disk_bytes,
            "wonderq_wal_segments": self._segments,
            "wonderq_wal_snapshot_bytes": self._snapshot_bytes,
            "wonderq_wal_compactions_total": self.compactions,
            "wonderq_wal_compaction_failures_total": self.compaction_failures,
            "wonderq_wal_written_bytes_total": w.bytes_written if w else 0,
            "wonderq_wal_fsyncs_total": w.fsyncs if w else 0,
            "wonderq_wal_last_fsync_seconds": w.last_fsync_s if w else 0.0,
            "wonderq_wal_fsync_failures_total": self.fsync_failures,
            "wonderq_wal_write_failures_total": self.write_failures,
            "wonderq_wal_failed": 1 if self._failed is not None else 0,
        }

    def render_metrics(self) -> str:
        """The metrics in Prometheus text format (to append to /metrics)."""
        lines = []
        for name, value in self.metrics().items():
            kind = "counter" if name.endswith("_total") else "gauge"
            lines.append(f"# TYPE {name} {kind}\n{name} {value:g}\n")
        return "".join(lines)

    async def close(self) -> None:
        """Stop compaction, write and fsync everything appended, stop the threads."""
        if self._closed or not self._started:
            return
        if self._compaction is not None:
            self._compaction.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._compaction
        try:
            await self.sync()
        except WalError as exc:
            log.error("closing the log: the last records could not be written: %s", exc)
        self._closed = True
        if self._tick is not None:
            self._tick.cancel()
        if self._end_of_turn is not None:
            self._end_of_turn.cancel()
        assert self._wexec is not None and self._sexec is not None and self._writer is not None
        self._wexec.submit(self._writer.close).result()
        self._wexec.shutdown()
        self._sexec.shutdown()
