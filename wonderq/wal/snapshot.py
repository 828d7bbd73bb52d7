"""Snapshots: what compaction writes and recovery starts from (docs/DURABILITY.md, "Compaction").

``snapshot-<seq>.snap`` holds the live state as of the start of segment ``<seq>``: one frame
of queues and the id counter, then chunk frames of messages, then an end marker with the
message count. The state is read from the engine a chunk per event-loop turn while the server
goes on, so each chunk is stamped with the offset in segment ``<seq>`` that the engine's state
was at when it was read; recovery applies the chunk there, between that segment's frames.
A snapshot is written to ``.tmp`` and renamed once whole, so a damaged one is never repaired:
it is refused.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from .files import fsync_dir, pwrite_all, snapshot_name
from .format import (
    HEADER_SIZE,
    S_CHUNK,
    S_END,
    S_NEXT_ID,
    S_PUBLISH,
    SNAP_MAGIC,
    FrameScan,
    WalCorruptError,
    check_header,
    decode_sections,
    file_header,
    frame,
    name_bytes,
    publish_section,
    queue_put_section,
    u64_section,
)

#: A snapshot message: ``(id, queue, raw_body, receives, delay_end_wall_ms)``, optionally
#: followed by ``sent_wall_ms, first_receive_wall_ms, attributes`` (0, 0, None: not known /
#: none).
SnapshotMessage = tuple[Any, ...]
#: A chunk read back: its position in the segment, and its (publish) sections.
ChunkSections = tuple[int, list[tuple]]

_T = TypeVar("_T")


class SnapshotSource(Protocol):
    """What compaction reads from the live state. ``BrokerSnapshotSource`` adapts the engine."""

    def snapshot_queues(self) -> list[tuple[str, dict[str, Any]]]:
        """Every queue with its full attributes (as ``Broker.queue_info()["attributes"]``)."""
        ...

    def snapshot_next_id(self) -> int:
        """The id the next publish will get."""
        ...

    def snapshot_messages(self, cursor: int, max_count: int) -> tuple[int, list[SnapshotMessage]]:
        """Up to ``max_count`` live messages after ``cursor`` (start with 0) as ``(id, queue,
        raw_body, receives, delay_end_wall_ms[, sent_wall_ms, first_receive_wall_ms,
        attributes])``; returns ``(next_cursor, messages)``, and
        ``next_cursor == 0`` once the iteration is complete. Called once per event-loop turn;
        the state may change between calls (see docs/DURABILITY.md, "Compaction")."""
        ...

    def live_bytes(self) -> int:
        """An estimate of the bytes of live data (the compaction trigger compares to it)."""
        ...


class BrokerSnapshotSource:
    """SnapshotSource over the engine; needs ``Broker.dump_messages`` (see DURABILITY.md).

    The engine's times (sent, first receive) are on its own clock, ``now_ms``;
    ``sent_offset_ms`` (wall-clock minus engine ms: the store's fixed offset, so that a
    recovered SentTimestamp is the one answered before) makes them wall-clock times; by
    default ``wall_ms() - now_ms()`` at each chunk."""

    def __init__(
        self,
        broker: Any,
        now_ms: Callable[[], int],
        wall_ms: Callable[[], int],
        sent_offset_ms: int | None = None,
    ) -> None:
        self.broker = broker
        self.now_ms = now_ms
        self.wall_ms = wall_ms
        self.sent_offset_ms = sent_offset_ms

    def snapshot_queues(self) -> list[tuple[str, dict[str, Any]]]:
        b = self.broker
        return [(name, dict(b.queue_info(name)["attributes"])) for name in b.queue_names()]

    def snapshot_next_id(self) -> int:
        return int(self.broker.next_id)

    def snapshot_messages(self, cursor: int, max_count: int) -> tuple[int, list[SnapshotMessage]]:
        now = self.now_ms()
        wall = self.wall_ms()
        off = wall - now if self.sent_offset_ms is None else self.sent_offset_ms
        cursor, msgs = self.broker.dump_messages(cursor, max_count, now)
        # (id, queue, body, receives, delay left[, sent, first receive or None, blob or None])
        out: list[SnapshotMessage] = []
        for m in msgs:
            row: SnapshotMessage = (m[0], m[1], m[2], m[3], wall + m[4] if m[4] > 0 else 0)
            if len(m) > 5:
                row += (m[5] + off, 0 if m[6] is None else m[6] + off, m[7])
            out.append(row)
        return cursor, out

    def live_bytes(self) -> int:
        return int(self.broker.memory_bytes)


def encode_chunk(position: int, messages: Sequence[SnapshotMessage]) -> bytes:
    """A snapshot frame: a chunk marker, then one publish section per queue."""
    by_queue: dict[str, list[SnapshotMessage]] = {}
    for m in messages:
        by_queue.setdefault(m[1], []).append(m)
    parts = [u64_section(S_CHUNK, position)]
    for queue, ms in by_queue.items():
        delays = [m[4] for m in ms]
        recs = [m[3] for m in ms]
        sents = firsts = attributes = None
        if any(len(m) > 5 for m in ms):
            extra = [m[5:8] if len(m) > 5 else (0, 0, None) for m in ms]
            sents = [e[0] for e in extra]
            firsts = [e[1] for e in extra]
            attributes = [e[2] for e in extra]
        parts.extend(
            publish_section(
                name_bytes(queue),
                [m[0] for m in ms],
                [m[2] for m in ms],
                delays if any(delays) else None,
                recs if any(recs) else None,
                sents if sents and any(sents) else None,
                attributes if attributes and any(a is not None for a in attributes) else None,
                firsts if firsts and any(firsts) else None,
            )
        )
    return frame(b"".join(parts))


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
            self.write(file_header(SNAP_MAGIC, seq))
        except BaseException:
            self.abort()
            raise

    def write(self, data: bytes) -> None:
        pwrite_all(self.fd, [data], self.size, len(data))
        self.size += len(data)

    def commit(self, count: int) -> int:
        self.write(frame(u64_section(S_END, count)))
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = -1
        os.replace(self.tmp, self.final)
        fsync_dir(self.directory)
        return self.size

    def abort(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
        with contextlib.suppress(OSError):
            os.unlink(self.tmp)


async def write_snapshot(
    executor: concurrent.futures.Executor,
    directory: str,
    seq: int,
    queues: list[tuple[str, dict[str, Any]]],
    next_id: int,
    source: SnapshotSource,
    chunk_messages: int,
    position: Callable[[], int],
    durable: Callable[[], Awaitable[None]],
) -> tuple[int, int]:
    """Write snapshot ``seq`` and make it visible; returns ``(messages, bytes)``.

    ``queues`` and ``next_id`` were read at the cut (the start of segment ``seq``); messages
    are read from ``source`` a chunk per event-loop turn, each stamped with ``position()``,
    the offset in segment ``seq`` up to which the log holds what the engine did so far.
    ``durable()`` is awaited before the rename: recovery applies each chunk at its position,
    so the segment must be on disk at least that far before the snapshot may replace the
    files before it. File I/O runs on ``executor``; on any failure the ``.tmp`` is removed.
    """
    loop = asyncio.get_running_loop()

    def run(fn: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
        return loop.run_in_executor(executor, fn, *args)

    snap = await run(_SnapshotFile, directory, seq)
    try:
        head = [p for name, attrs in queues for p in queue_put_section(name, attrs)]
        head.append(u64_section(S_NEXT_ID, next_id))
        await run(snap.write, frame(b"".join(head)))
        cursor = 0
        count = 0
        while True:
            at = position()
            cursor, msgs = source.snapshot_messages(cursor, chunk_messages)
            if msgs:
                count += len(msgs)
                await run(snap.write, encode_chunk(at, msgs))
            else:
                await asyncio.sleep(0)
            if cursor == 0:
                break
        await durable()
        size = await run(snap.commit, count)
    except BaseException:
        await run(snap.abort)
        raise
    return count, size


def read_snapshot(
    buf: Any, path: str, seq: int, names: dict[bytes, str]
) -> tuple[list[tuple], list[ChunkSections], int]:
    """Read a whole snapshot: ``(head sections, chunks, frames)``. The head holds the queues
    and the id counter; each chunk, its position and message sections, is to be applied while
    replaying segment ``seq``. Anything short of a complete snapshot whose message count
    matches its end marker raises WalCorruptError: snapshots are written atomically."""
    magic, _, file_seq = check_header(buf, path)
    if magic != SNAP_MAGIC or file_seq != seq:
        raise WalCorruptError(f"{path}: header does not match its name")
    chunks: list[ChunkSections] = []
    head: list[tuple] = []
    end_count = -1
    scan = FrameScan(buf, HEADER_SIZE, len(buf))
    try:
        for p0, p1 in scan:
            if end_count >= 0:
                raise WalCorruptError(f"{path}: data after the end marker")
            for sec in decode_sections(buf, p0, p1, names):
                if sec[0] == S_CHUNK:
                    chunks.append((sec[1], []))
                elif sec[0] == S_END:
                    end_count = sec[1]
                elif chunks:
                    chunks[-1][1].append(sec)
                else:
                    head.append(sec)
    except ValueError as exc:
        raise WalCorruptError(f"{path}: {exc}") from exc
    if scan.reason or end_count < 0:
        raise WalCorruptError(
            f"{path}: snapshot damaged at offset {scan.good_end} ({scan.reason or 'no end marker'})"
        )
    count = sum(len(s[1].ids) for _, secs in chunks for s in secs if s[0] == S_PUBLISH)
    if count != end_count:
        raise WalCorruptError(f"{path}: holds {count} messages, its end marker says {end_count}")
    return head, chunks, scan.frames
