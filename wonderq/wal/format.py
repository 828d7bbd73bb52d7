"""The log's bytes: file headers, frames, sections, records (docs/DURABILITY.md, "Format").

Every file is a 16-byte header followed by frames::

    header  = magic[6] | u16 version | u64 sequence number             (little-endian)
    frame   = u32 payload_len | u32 crc32(payload) | payload
    payload = section section ...

A frame is the unit of atomicity: it is written whole by one group commit, and recovery keeps
a frame only if it is complete and its checksum matches. Sections are columnar (every id of a
publish section in one array, every body length in another), so that replaying a million
messages costs a few C-level calls per section rather than Python work per message.

Everything that knows this layout is here: the section encoders the writer, the snapshot and
the tools share, the decoder, and :class:`FrameScan`, the one loop that walks frames.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import zlib
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

LOG_MAGIC = b"WQLOG\x00"
SNAP_MAGIC = b"WQSNAP"
#: Written into every new file's header. Format 2 added the publish flags F_SENT,
#: F_FIRST_RECEIVE and F_ATTRIBUTES; a section without them is laid out as in format 1, so
#: a format-1 file reads with the same decoder. A file of any other version is refused,
#: never guessed at.
FORMAT_VERSION = 2
#: The versions this program reads.
READABLE_VERSIONS = (1, 2)
FILE_HEADER = struct.Struct("<6sHQ")  # magic, version, sequence number
HEADER_SIZE = FILE_HEADER.size  # 16
FRAME_HEADER = struct.Struct("<II")  # payload length, crc32(payload)
FRAME_HEADER_SIZE = FRAME_HEADER.size
#: Frames longer than this are treated as corrupt by recovery.
FRAME_MAX = 1 << 30

# Section kinds (first byte of a section).
S_PUBLISH = 1  # <BBBI kind, flags, qlen, n> queue, ids u64[n], lens u32[n],
#                [delay_end_ms u64[n] if F_DELAYS], [receives u32[n] if F_RECEIVES],
#                [sent_ms u64[n] if F_SENT], [first_receive_ms u64[n] if F_FIRST_RECEIVE],
#                [attribute lens u32[n] if F_ATTRIBUTES], bodies, [attribute blobs]
S_RECEIVE = 2  # <BI kind, n> ids u64[n]: each id received once more
S_DEAD_LETTER = 3  # <BBI kind, qlen, n> queue, ids u64[n]: moved to queue, receives reset to 0
S_DELETE = 4  # <BI kind, n> ids u64[n]
S_QUEUE_PUT = 5  # <BBI kind, qlen, alen> queue, attributes as JSON (the full set after the put)
S_QUEUE_DELETE = 6  # <BB kind, qlen> queue
S_PURGE = 7  # <BB kind, qlen> queue
S_NEXT_ID = 8  # <BQ kind, id> ids below this one were issued or reserved
S_CHUNK = 9  # <BQ kind, position> snapshot only: the messages that follow are as of that offset
S_END = 10  # <BQ kind, count> snapshot only: last section, number of messages in the snapshot
S_FIRST_RECEIVES = 11  # format 2: <BI kind, n> ids u64[n], first receive wall ms u64[n]

# Publish section flags: which optional per-message columns follow the lengths.
F_DELAYS = 1  # the wall-clock ms a delay ends (0: none)
F_RECEIVES = 2  # receive counts (snapshots)
F_SENT = 4  # format 2: the wall-clock ms the message was sent (0: unknown)
F_FIRST_RECEIVE = 8  # format 2: the wall-clock ms of its first receive (0: none; snapshots)
F_ATTRIBUTES = 16  # format 2: an attribute blob per message, after the bodies
F_KNOWN = F_DELAYS | F_RECEIVES | F_SENT | F_FIRST_RECEIVE | F_ATTRIBUTES
#: The length of the blob of a message that has none (F_ATTRIBUTES).
NO_ATTRIBUTES = 0xFFFFFFFF

PUB = struct.Struct("<BBBI")
_IDS = struct.Struct("<BI")
_DL = struct.Struct("<BBI")
_QPUT = struct.Struct("<BBI")
_NAME = struct.Struct("<BB")
_U64 = struct.Struct("<BQ")

_BIG_ENDIAN = sys.byteorder == "big"
crc32 = zlib.crc32


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
    sent_ms: int = 0  # wall-clock ms it was sent; 0 = not recorded (taken as the restart)
    first_receive_ms: int = 0  # wall-clock ms of its first receive; 0 = none recorded
    attributes: bytes | None = None  # the store's attribute blob (SQS message attributes)


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


class FirstReceives(NamedTuple):
    """Format 2: the first receive (wall-clock ms) of each of ``ids``."""

    ids: tuple[int, ...]
    times: tuple[int, ...]


Record = (
    QueuePut
    | QueueDelete
    | Purge
    | Publish
    | Receive
    | DeadLetter
    | Delete
    | NextId
    | Chunk
    | End
    | FirstReceives
)


# ---- encoding ---------------------------------------------------------------------------------
def u64s(values: Iterable[int]) -> bytes:
    a = array("Q", values)
    if _BIG_ENDIAN:
        a.byteswap()
    return a.tobytes()


def u32s(values: Iterable[int]) -> bytes:
    a = array("I", values)
    if _BIG_ENDIAN:
        a.byteswap()
    return a.tobytes()


def read_array(code: str, buf: Any, start: int, n: int) -> array:
    a = array(code)
    a.frombytes(buf[start : start + n * a.itemsize])
    if _BIG_ENDIAN:
        a.byteswap()
    return a


def name_bytes(name: str) -> bytes:
    """A queue name as sections hold it: its length must fit the section's one-byte field."""
    b = name.encode()
    if not 0 < len(b) < 256:
        raise ValueError(f"queue name {name!r} must be 1..255 bytes")
    return b


def publish_section(
    qname: bytes,
    ids: Sequence[int],
    bodies: Sequence[bytes],
    delays: Sequence[int] | None,
    receives: Sequence[int] | None,
    sents: Sequence[int] | None = None,
    attributes: Sequence[bytes | None] | None = None,
    firsts: Sequence[int] | None = None,
) -> list[bytes]:
    """The parts of one publish section (to be joined); ``qname`` from :func:`name_bytes`.
    A column that is None (or empty) is left out, and costs nothing."""
    flags = (F_DELAYS if delays else 0) | (F_RECEIVES if receives else 0)
    if sents or attributes or firsts:
        flags |= (
            (F_SENT if sents else 0)
            | (F_FIRST_RECEIVE if firsts else 0)
            | (F_ATTRIBUTES if attributes else 0)
        )
    parts = [PUB.pack(S_PUBLISH, flags, len(qname), len(ids)), qname, u64s(ids)]
    parts.append(u32s(map(len, bodies)))
    if delays:
        parts.append(u64s(delays))
    if receives:
        parts.append(u32s(receives))
    if flags > F_RECEIVES | F_DELAYS:
        if sents:
            parts.append(u64s(sents))
        if firsts:
            parts.append(u64s(firsts))
        if attributes:
            parts.append(u32s([NO_ATTRIBUTES if a is None else len(a) for a in attributes]))
            parts.extend(bodies)
            parts.extend([a for a in attributes if a])
            return parts
    parts.extend(bodies)
    return parts


def first_receives_section(ids: Sequence[int], times: Sequence[int]) -> list[bytes]:
    """Format 2: the first receive time of each of ``ids`` (wall-clock ms)."""
    return [_IDS.pack(S_FIRST_RECEIVES, len(ids)), u64s(ids), u64s(times)]


def ids_section(kind: int, ids: Sequence[int]) -> list[bytes]:
    """A receive or delete section."""
    return [_IDS.pack(kind, len(ids)), u64s(ids)]


def dead_letter_section(qname: bytes, ids: Sequence[int]) -> list[bytes]:
    return [_DL.pack(S_DEAD_LETTER, len(qname), len(ids)), qname, u64s(ids)]


def queue_put_section(name: str, attributes: Mapping[str, Any]) -> list[bytes]:
    qb = name_bytes(name)
    ab = json.dumps(dict(attributes), separators=(",", ":"), sort_keys=True).encode()
    return [_QPUT.pack(S_QUEUE_PUT, len(qb), len(ab)), qb, ab]


def name_section(kind: int, name: str) -> list[bytes]:
    """A queue deletion or purge section."""
    qb = name_bytes(name)
    return [_NAME.pack(kind, len(qb)), qb]


def u64_section(kind: int, value: int) -> bytes:
    """A next-id, chunk or end section."""
    return _U64.pack(kind, value)


def frame_header(payload: bytes) -> bytes:
    return FRAME_HEADER.pack(len(payload), crc32(payload))


def frame(payload: bytes) -> bytes:
    return frame_header(payload) + payload


def file_header(magic: bytes, seq: int) -> bytes:
    return FILE_HEADER.pack(magic, FORMAT_VERSION, seq)


def encode_frame(records: Iterable[Record]) -> bytes:
    """One checksummed frame holding ``records`` in order (consecutive publishes to the same
    queue share a section). Used by tests and tools; the server path builds frames in Wal."""
    parts: list[bytes] = []
    pending: list[Publish] = []

    def flush_publishes() -> None:
        if pending:
            delays = [p.delay_end_ms for p in pending]
            receives = [p.receives for p in pending]
            sents = [p.sent_ms for p in pending]
            firsts = [p.first_receive_ms for p in pending]
            attributes = [p.attributes for p in pending]
            parts.extend(
                publish_section(
                    name_bytes(pending[0].queue),
                    [p.msg_id for p in pending],
                    [p.body for p in pending],
                    delays if any(delays) else None,
                    receives if any(receives) else None,
                    sents if any(sents) else None,
                    attributes if any(a is not None for a in attributes) else None,
                    firsts if any(firsts) else None,
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
            parts.extend(ids_section(S_RECEIVE, r.ids))
        elif isinstance(r, Delete):
            parts.extend(ids_section(S_DELETE, r.ids))
        elif isinstance(r, DeadLetter):
            parts.extend(dead_letter_section(name_bytes(r.queue), r.ids))
        elif isinstance(r, QueuePut):
            parts.extend(queue_put_section(r.name, r.attributes))
        elif isinstance(r, QueueDelete):
            parts.extend(name_section(S_QUEUE_DELETE, r.name))
        elif isinstance(r, Purge):
            parts.extend(name_section(S_PURGE, r.name))
        elif isinstance(r, NextId):
            parts.append(u64_section(S_NEXT_ID, r.next_id))
        elif isinstance(r, Chunk):
            parts.append(u64_section(S_CHUNK, r.position))
        elif isinstance(r, End):
            parts.append(u64_section(S_END, r.messages))
        elif isinstance(r, FirstReceives):
            parts.extend(first_receives_section(r.ids, r.times))
        else:
            raise TypeError(f"not a log record: {r!r}")
    flush_publishes()
    return frame(b"".join(parts))


# ---- decoding ----------------------------------------------------------------------------------
class PubSection(NamedTuple):
    """A publish section, decoded lazily: bodies stay in ``buf`` until they are needed."""

    queue: str
    ids: list[int]
    lens: list[int]
    delays: list[int] | None
    receives: list[int] | None
    body_start: int  # offset in buf of the first body
    buf: Any  # the file's bytes (mmap, bytes or memoryview)
    sents: list[int] | None = None
    firsts: list[int] | None = None
    attributes: list[bytes | None] | None = None


def decode_sections(buf: Any, start: int, end: int, names: dict[bytes, str]) -> list[tuple]:
    """Decode the sections of one checksummed payload buf[start:end] into tuples
    ``(kind, ...)``; ``names`` interns queue names across calls. Raises ValueError on
    malformed content."""
    out: list[tuple] = []
    pos = start
    while pos < end:
        kind = buf[pos]
        if kind == S_PUBLISH:
            _, flags, qlen, n = PUB.unpack_from(buf, pos)
            pos += PUB.size
            qraw = bytes(buf[pos : pos + qlen])
            queue = names.get(qraw) or names.setdefault(qraw, qraw.decode())
            pos += qlen
            ids = read_array("Q", buf, pos, n).tolist()
            pos += 8 * n
            lens = read_array("I", buf, pos, n).tolist()
            pos += 4 * n
            delays = receives = None
            if flags & F_DELAYS:
                delays = read_array("Q", buf, pos, n).tolist()
                pos += 8 * n
            if flags & F_RECEIVES:
                receives = read_array("I", buf, pos, n).tolist()
                pos += 4 * n
            if flags <= F_DELAYS | F_RECEIVES:
                body_start = pos
                pos += sum(lens)
                if len(ids) != n or len(lens) != n or pos > end:
                    raise ValueError("publish section overruns its frame")
                sec = PubSection(queue, ids, lens, delays, receives, body_start, buf)
            else:
                sec, pos = _publish_v2(buf, pos, end, flags, queue, ids, lens, delays, receives)
            out.append((S_PUBLISH, sec))
        elif kind == S_FIRST_RECEIVES:
            _, n = _IDS.unpack_from(buf, pos)
            pos += _IDS.size
            ids = read_array("Q", buf, pos, n).tolist()
            pos += 8 * n
            times = read_array("Q", buf, pos, n).tolist()
            pos += 8 * n
            if len(ids) != n or len(times) != n:
                raise ValueError("first receive section overruns its frame")
            out.append((kind, ids, times))
        elif kind in (S_RECEIVE, S_DELETE):
            _, n = _IDS.unpack_from(buf, pos)
            pos += _IDS.size
            ids = read_array("Q", buf, pos, n).tolist()
            pos += 8 * n
            if len(ids) != n:
                raise ValueError("id section overruns its frame")
            out.append((kind, ids))
        elif kind == S_DEAD_LETTER:
            _, qlen, n = _DL.unpack_from(buf, pos)
            pos += _DL.size
            queue = bytes(buf[pos : pos + qlen]).decode()
            pos += qlen
            ids = read_array("Q", buf, pos, n).tolist()
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


def _publish_v2(
    buf: Any,
    pos: int,
    end: int,
    flags: int,
    queue: str,
    ids: list[int],
    lens: list[int],
    delays: list[int] | None,
    receives: list[int] | None,
) -> tuple[PubSection, int]:
    """The rest of a publish section with format 2 columns, from ``pos`` (after the receive
    counts); returns it and the offset after it."""
    if flags & ~F_KNOWN:
        raise ValueError(f"unknown publish flags {flags:#x}")
    n = len(ids)
    columns: list[list[int] | None] = []
    for flag, code in ((F_SENT, "Q"), (F_FIRST_RECEIVE, "Q"), (F_ATTRIBUTES, "I")):
        column = None
        if flags & flag:
            column = read_array(code, buf, pos, n).tolist()
            pos += len(column) * (8 if code == "Q" else 4)
            if len(column) != n:
                raise ValueError("publish section overruns its frame")
        columns.append(column)
    sents, firsts, alens = columns
    body_start = pos
    pos += sum(lens)
    if len(lens) != n or (delays is not None and len(delays) != n):
        raise ValueError("publish section overruns its frame")
    if receives is not None and len(receives) != n:
        raise ValueError("publish section overruns its frame")
    attributes: list[bytes | None] | None = None
    if alens is not None:
        attributes = []
        for a in alens:
            if a == NO_ATTRIBUTES:
                attributes.append(None)
            else:
                if pos + a > end:
                    raise ValueError("publish section overruns its frame")
                attributes.append(bytes(buf[pos : pos + a]))
                pos += a
    if pos > end:
        raise ValueError("publish section overruns its frame")
    sec = PubSection(queue, ids, lens, delays, receives, body_start, buf, sents, firsts, attributes)
    return sec, pos


def decode_payload(payload: bytes) -> list[Record]:
    """The records of one frame payload, publishes expanded one per message."""
    records: list[Record] = []
    for sec in decode_sections(payload, 0, len(payload), {}):
        kind = sec[0]
        if kind == S_PUBLISH:
            p: PubSection = sec[1]
            off = p.body_start
            for i, (msg_id, ln) in enumerate(zip(p.ids, p.lens, strict=True)):
                records.append(
                    Publish(
                        msg_id,
                        p.queue,
                        bytes(payload[off : off + ln]),
                        p.delays[i] if p.delays else 0,
                        p.receives[i] if p.receives else 0,
                        p.sents[i] if p.sents else 0,
                        p.firsts[i] if p.firsts else 0,
                        p.attributes[i] if p.attributes else None,
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
        elif kind == S_FIRST_RECEIVES:
            records.append(FirstReceives(tuple(sec[1]), tuple(sec[2])))
    return records


# ---- walking frames -----------------------------------------------------------------------------
class FrameScan:
    """The frames of ``buf[start:end]``: the one loop that finds and checks them, for every
    reader (recovery's replay, the snapshot reader, :func:`read_file`).

    Iterating yields ``(payload_start, payload_end)`` of each valid frame in order (its frame
    header starts ``FRAME_HEADER_SIZE`` bytes before) and stops at the first frame that is
    incomplete or whose checksum does not match. Afterwards ``good_end`` is the offset after
    the last valid frame, ``frames`` their number and ``reason`` why the walk stopped: ""
    (the end of the range, or only zeros from there to it), "torn" (an incomplete frame: a
    write cut short by a crash) or "corrupt". A generator rather than a callback: a resumed
    generator costs less than a call per frame, and the replay of one-message frames is bound
    by per-frame costs.
    """

    __slots__ = ("buf", "end", "frames", "good_end", "reason", "start")

    def __init__(self, buf: Any, start: int, end: int) -> None:
        self.buf = buf
        self.start = start
        self.end = end
        self.good_end = start
        self.frames = 0
        self.reason = ""

    def __repr__(self) -> str:
        return f"FrameScan(good_end={self.good_end}, reason={self.reason!r}, frames={self.frames})"

    def __iter__(self) -> Iterator[tuple[int, int]]:
        buf = self.buf
        end = self.end
        pos = self.start
        frames = 0
        reason = ""
        mv = memoryview(buf)
        unpack = FRAME_HEADER.unpack_from
        check = crc32
        try:
            while pos < end:
                if pos + FRAME_HEADER_SIZE > end:
                    reason = _tail_reason(mv, pos, end)
                    break
                length, crc = unpack(buf, pos)
                p0 = pos + FRAME_HEADER_SIZE
                p1 = p0 + length
                if length == 0 or length > FRAME_MAX:
                    reason = _tail_reason(mv, pos, end)
                    break
                if p1 > end:
                    reason = "torn"
                    break
                if check(mv[p0:p1]) != crc:
                    reason = "corrupt"
                    break
                frames += 1
                yield p0, p1
                pos = p1
        finally:
            mv.release()
            self.good_end = pos
            self.frames = frames
            self.reason = reason


def _tail_reason(mv: memoryview, pos: int, end: int) -> str:
    # A zero-filled tail is the end: the log writes zeros ahead of its frames (files.py), and a
    # crash can leave a tail of zeros where a write never landed. A short tail is a torn write.
    if mv[pos:end].tobytes().count(0) == end - pos:
        return ""
    return "torn" if end - pos < FRAME_HEADER_SIZE else "corrupt"


def check_header(data: Any, path: str) -> tuple[bytes, int, int]:
    """``(magic, version, seq)`` of a file; WalCorruptError unless it is ours and readable."""
    if len(data) < HEADER_SIZE:
        raise WalCorruptError(f"{path}: shorter than its {HEADER_SIZE}-byte header")
    magic, version, seq = FILE_HEADER.unpack_from(data, 0)
    if magic not in (LOG_MAGIC, SNAP_MAGIC):
        raise WalCorruptError(f"{path}: not a WonderQ log or snapshot (bad magic)")
    if version not in READABLE_VERSIONS:
        readable = ", ".join(map(str, READABLE_VERSIONS))
        raise WalCorruptError(
            f"{path}: format version {version}, this program reads versions {readable} "
            f"(a newer WonderQ wrote it?)"
        )
    return magic, version, seq


def read_file(path: str | os.PathLike[str]) -> tuple[int, list[Record], FrameScan]:
    """Read a segment or snapshot without repairing it: ``(seq, records, scan)``."""
    with open(path, "rb") as f:
        data = f.read()
    _magic, _version, seq = check_header(data, os.fspath(path))
    records: list[Record] = []
    scan = FrameScan(data, HEADER_SIZE, len(data))
    for p0, p1 in scan:
        records.extend(decode_payload(data[p0:p1]))
    return seq, records, scan
