# cython: language_level=3, annotation_typing=False, binding=True
"""The write-ahead log of one server: appends, group commit, fsync modes, compaction.

Threads: the ``append_*`` methods run on the event loop and only build frames in memory.
``flush()`` hands the bytes to one writer thread, which does the ``pwritev`` and the
``fdatasync``; at most one write is in flight, and everything appended while it runs goes out
in the next one (group commit). A write that no fsync follows (``everysec`` between its
fsyncs, ``never``) is done by ``flush()`` itself on the event loop: a ``pwritev`` into the page
cache costs less than the hand-over. Snapshots are written by a second thread. The append
path's types are in log.pxd.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import functools
import itertools
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..limits import FSYNC_MODES
from ..store import Log
from .files import LogFile, Writer, create_file, fsync_dir, list_files, segment_name, snapshot_name
from .format import (
    FILE_HEADER,
    FORMAT_VERSION,
    HEADER_SIZE,
    LOG_MAGIC,
    S_DEAD_LETTER,
    S_DELETE,
    S_FIRST_RECEIVES,
    S_NEXT_ID,
    S_PURGE,
    S_QUEUE_DELETE,
    S_RECEIVE,
    dead_letter_section,
    first_receives_section,
    frame,
    frame_header,
    ids_section,
    name_bytes,
    name_section,
    publish_section,
    queue_put_section,
    u64_section,
)
from .recovery import RecoveredState, recover
from .snapshot import SnapshotSource, write_snapshot

log = logging.getLogger("wonderq.wal")

__all__ = ["Wal", "WalError"]

#: Compaction starts when the files on disk exceed max(this, COMPACT_RATIO x live bytes).
COMPACT_MIN_BYTES = 64 * 1024 * 1024
COMPACT_RATIO = 2.0
#: Messages asked of the engine per snapshot chunk (one chunk per event-loop turn).
SNAPSHOT_CHUNK_MESSAGES = 4096
#: A pending frame is sealed early once its bodies pass this many bytes (bounds frame size).
FRAME_SOFT_LIMIT = 4 * 1024 * 1024
#: Ids are reserved this far ahead in the log, so ids handed out but lost with an unwritten
#: tail are never issued again after a restart (a restart skips at most this many ids).
ID_RESERVE_BLOCK = 1 << 20
#: everysec: the longest time (s) between a write and the fsync that covers it, and the period
#: of the maintenance tick (retries after an I/O error, compaction check).
TICK_S = 1.0
#: After a failed compaction, wait this long (s) before trying again.
COMPACT_RETRY_S = 60.0


class WalError(Exception):
    """The log could not be written (disk full, I/O error): answer 507 ``storage_error``.

    Whatever the failed write covered was not acknowledged. The log stays failed until a write
    succeeds again; ``Wal.check_writable()`` raises this meanwhile so publishes are refused.
    """

    status = 507
    code = "storage_error"


def _file_version(path: str) -> int:
    with open(path, "rb") as f:
        return int(FILE_HEADER.unpack(f.read(HEADER_SIZE))[1])


def remove_before(data_dir: str, seq: int) -> None:
    """Remove the segments and snapshots a compaction to ``seq`` left behind."""
    segments, snapshots, _ = list_files(data_dir)
    for s, name in [*segments.items(), *snapshots.items()]:
        if s < seq:
            os.unlink(os.path.join(data_dir, name))
    fsync_dir(data_dir)


class _Batch:
    """Sealed frames waiting for the writer, with the futures waiting on them."""

    __slots__ = ("buf", "force_sync", "needs_sync", "rotate_to", "waiters")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.waiters: list[asyncio.Future[None]] = []
        self.needs_sync = False  # holds records whose answers wait for durability (always)
        self.force_sync = False  # fsync after writing it, whatever the mode
        self.rotate_to: LogFile | None = None  # start this segment after writing buf

    def __bool__(self) -> bool:
        return bool(self.buf or self.waiters or self.rotate_to or self.force_sync)


class Wal(Log):
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
        self._pub: dict[str, list[Any]] = {}  # queue -> [ids, bodies, optional columns] (_group)
        # [kind, queue | None | times, ids]: receive, dead-letter and first receive groups
        self._mid: list[list[Any]] = []
        self._dels: list[int] = []
        self._misc: list[bytes] = []  # encoded next-id sections
        self._frame_bytes = 0
        self._frame_limit = FRAME_SOFT_LIMIT
        # the publish group of the last publish: lets append_publish skip the dict lookup
        self._pq: str | None = None
        self._pids: list[int] = []
        self._pbodies: list[bytes] = []
        self._pslow = False  # that group carries delays, receives or sent times
        self._names: dict[str, bytes] = {}
        self._cur = _Batch()  # sealed frames for the current segment
        self._ready: collections.deque[_Batch] = collections.deque()  # batches ending in a rotation
        self._inflight = False
        self._force_retry = False  # retry a failed write now, not at the next tick
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
        self._writer: Writer | None = None
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
        self._writer = Writer(current)
        self._seg_pos = current.good
        self._last_sync = time.monotonic()
        self._started = True
        self._tick = self._loop.call_later(self._tick_s, self._on_tick)

    def _open_tail(self) -> LogFile:
        d = self.data_dir
        segments, snapshots, _ = list_files(d)
        segs = sorted(segments)
        snaps = sorted(snapshots)
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
            if _file_version(path) == FORMAT_VERSION:
                fd = os.open(path, os.O_WRONLY)
                return LogFile(path, fd, os.fstat(fd).st_size, keep)
            # Written by an earlier version: keep it as it is (it reads as what its header
            # says) and go on in a new segment of this version.
            self._old_bytes += os.path.getsize(path)
            self._segments += 1
            self._seq += 1
            path, fd = create_file(d, segment_name(self._seq), LOG_MAGIC, self._seq)
            return LogFile(path, fd, HEADER_SIZE, keep)
        self._seq = segs[-1] if segs else (snaps[-1] if snaps else 1)
        path, fd = create_file(d, segment_name(self._seq), LOG_MAGIC, self._seq)
        return LogFile(path, fd, HEADER_SIZE, keep)

    # ---- appends (event loop) -------------------------------------------------------------------
    def _qname(self, queue: str) -> bytes:
        b = self._names.get(queue)
        if b is None:
            b = self._names[queue] = name_bytes(queue)
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
            if msg_id >= self._id_mark or self._frame_bytes > self._frame_limit:
                self._publish_checks(msg_id)
            return
        g = self._group(queue, msg_id, body, delay_ms)
        if receives or g[3] is not None:
            if g[3] is None:
                g[3] = [0] * (len(g[0]) - 1)
            g[3].append(receives)
        if g[4] is not None:
            g[4].append(0)
        if g[5] is not None:
            g[5].append(None)
        self._pslow = g[2] is not None or g[3] is not None or g[4] is not None
        self._frame_bytes += len(body)
        self._publish_checks(msg_id)

    def append_send(
        self,
        msg_id: int,
        queue: str,
        body: bytes,
        delay_ms: int,
        sent_ms: int,
        attributes: bytes | None = None,
    ) -> None:
        """A message logged with the wall-clock ms it was sent (``sent_ms``; recovery keeps
        it, so its retention period and SQS's SentTimestamp go on from it) and its attribute
        blob (format 2): an SQS send, or a publish to a queue with a retention period.
        ``delay_ms`` as for :meth:`append_publish`."""
        g = self._group(queue, msg_id, body, delay_ms)
        n = len(g[0]) - 1
        if g[3] is not None:
            g[3].append(0)
        if g[4] is None:
            g[4] = [0] * n
        g[4].append(sent_ms)
        if attributes is not None or g[5] is not None:
            if g[5] is None:
                g[5] = [None] * n
            g[5].append(attributes)
        self._pslow = True
        self._frame_bytes += len(body) + (len(attributes) if attributes else 0)
        self._publish_checks(msg_id)

    def _group(self, queue: str, msg_id: int, body: bytes, delay_ms: int) -> list[Any]:
        """Add a message to the publish group of ``queue`` (made the last one), with its
        delay; the caller appends to the other columns."""
        g = self._pub.get(queue)
        if g is None:
            self._qname(queue)
            # ids, bodies, then the optional columns (None until a message needs one):
            # delay ends, receive counts, sent times, attribute blobs
            g = self._pub[queue] = [[], [], None, None, None, None]
        g[0].append(msg_id)
        g[1].append(body)
        if delay_ms > 0 or g[2] is not None:
            if g[2] is None:
                g[2] = [0] * (len(g[0]) - 1)
            g[2].append(self._wall_ms() + delay_ms if delay_ms > 0 else 0)
        self._pq = queue
        self._pids, self._pbodies = g[0], g[1]
        return g

    def _publish_checks(self, msg_id: int) -> None:
        if msg_id >= self._id_mark:
            self._reserve_ids(msg_id)
        if self._frame_bytes > self._frame_limit:
            self._seal()

    def append_publish_batch(
        self,
        first_id: int,
        queue: str,
        bodies: Sequence[bytes],
        delays_ms: Sequence[int] | None = None,
        sent_ms: int = 0,
    ) -> None:
        """``publish_batch``: ids ``first_id ..`` in order; with ``sent_ms`` (wall-clock), the
        messages are logged with it (see :meth:`append_send`)."""
        if sent_ms:
            zeros = itertools.repeat(0)
            for i, (body, d) in enumerate(zip(bodies, delays_ms or zeros, strict=False)):
                self.append_send(first_id + i, queue, body, d, sent_ms)
        elif delays_ms is None:
            for i, body in enumerate(bodies):
                self.append_publish(first_id + i, queue, body)
        else:
            for i, (body, d) in enumerate(zip(bodies, delays_ms, strict=True)):
                self.append_publish(first_id + i, queue, body, d)

    def _reserve_ids(self, msg_id: int) -> None:
        self._id_reserved = max(self._id_reserved, msg_id + ID_RESERVE_BLOCK)
        self._id_mark = msg_id + ID_RESERVE_BLOCK // 2
        self._misc.append(u64_section(S_NEXT_ID, self._id_reserved))

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

    def append_first_receives(self, ids: Sequence[int], times: Sequence[int]) -> None:
        """The first receive (wall-clock ms) of messages received for the first time (format
        2; SQS's ApproximateFirstReceiveTimestamp). Never waited for."""
        self._mid.append([S_FIRST_RECEIVES, list(times), list(ids)])

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
        self._barrier(queue_put_section(name, attributes))

    def append_queue_delete(self, name: str) -> None:
        self._barrier(name_section(S_QUEUE_DELETE, name))
        # The barrier sealed every record that names it: forget its encoded name, or a
        # server that creates and deletes queues with new names would keep them all.
        self._names.pop(name, None)

    def append_purge(self, name: str) -> None:
        self._barrier(name_section(S_PURGE, name))

    def _barrier(self, parts: list[bytes]) -> None:
        self._seal()
        self._add_frame(frame(b"".join(parts)))
        self._cur.needs_sync = True

    def _seal(self) -> None:
        """Encode the pending records as one frame into the current batch."""
        if not (self._pub or self._mid or self._dels or self._misc):
            return
        parts = self._misc
        names = self._names
        for queue, (ids, bodies, delays, recs, sents, attributes) in self._pub.items():
            parts += publish_section(names[queue], ids, bodies, delays, recs, sents, attributes)
        for kind, queue, ids in self._mid:
            if kind == S_RECEIVE:
                parts += ids_section(S_RECEIVE, ids)
            elif kind == S_FIRST_RECEIVES:
                parts += first_receives_section(ids, queue)  # queue: the times
            else:
                parts += dead_letter_section(names[queue], ids)
        if self._dels:
            parts += ids_section(S_DELETE, self._dels)
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
        head = frame_header(payload)
        buf += head
        buf += payload
        self._seg_pos += len(head) + len(payload)

    def _add_frame(self, data: bytes) -> None:
        self._cur.buf += data
        self._seg_pos += len(data)

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
        assert self._loop is not None and self._writer is not None
        if not sync:
            # No fsync to wait for (everysec and never, between fsyncs): the write goes to
            # the page cache, a few microseconds, cheaper here than a hand-over to the writer
            # thread and back (Redis writes its AOF on the event loop too). Nothing is in
            # flight, so the writer's files are this thread's for the moment.
            try:
                self._writer.run(batch.buf, False, None)
            except Exception as exc:
                self._done(batch, exc)
            else:
                self._done(batch, None)
            return
        self._last_sync = now
        self._inflight = True
        fut = self._loop.run_in_executor(
            self._wexec, self._writer.run, batch.buf, sync, batch.rotate_to
        )
        fut.add_done_callback(functools.partial(self._written, batch=batch))

    def _written(self, fut: asyncio.Future[None], *, batch: _Batch) -> None:
        self._inflight = False
        self._done(batch, fut.exception())

    def _done(self, batch: _Batch, exc: BaseException | None) -> None:
        """A batch was written (``exc`` None) or its write failed: answer its waiters, and
        hand the writer what came meanwhile."""
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
        seq = self._seq + 1
        try:
            path, fd = await loop.run_in_executor(
                self._wexec, create_file, self.data_dir, segment_name(seq), LOG_MAGIC, seq
            )
            new_file = LogFile(path, fd, HEADER_SIZE, self.fsync != "never")
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
            assert self._sexec is not None
            count, size = await write_snapshot(
                self._sexec,
                self.data_dir,
                seq,
                queues,
                next_id,
                source,
                self.snapshot_chunk,
                self._position,
                self.sync,
            )
            await loop.run_in_executor(self._sexec, remove_before, self.data_dir, seq)
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
            self._compaction = None

    def _position(self) -> int:
        """The offset in the current segment up to which frames hold every change made so
        far (what a snapshot chunk read now is as of)."""
        self._seal()
        return self._seg_pos

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
            "wonderq_wal_fsync_seconds_total": w.fsync_s_total if w else 0.0,
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
