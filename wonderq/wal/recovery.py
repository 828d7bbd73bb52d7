"""Crash recovery: read the newest snapshot and the segments after it, repair a torn tail.

The first frame that is incomplete or fails its checksum ends recovery (docs/DURABILITY.md,
"Recovery"): its segment is truncated there, a corrupt tail first copied aside to
``<segment>.dropped-<offset>``, later segments renamed ``*.dropped``. Message bodies are not
copied while replaying: the files are mapped, and a replayed message is an offset into its
file until ``RecoveredState.load_into`` hands it to the engine.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import itertools
import logging
import mmap
import operator
import os
import struct
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..limits import DEFAULT_QUEUE, MAX_DELAY_MS
from .files import list_files, segment_name, truncate
from .format import (
    F_ATTRIBUTES,
    F_SENT,
    FRAME_HEADER_SIZE,
    HEADER_SIZE,
    LOG_MAGIC,
    PUB,
    S_CHUNK,
    S_DEAD_LETTER,
    S_DELETE,
    S_END,
    S_FIRST_RECEIVES,
    S_NEXT_ID,
    S_PUBLISH,
    S_PURGE,
    S_QUEUE_DELETE,
    S_QUEUE_PUT,
    S_RECEIVE,
    FrameScan,
    Publish,
    PubSection,
    WalCorruptError,
    check_header,
    decode_sections,
)
from .runs import (
    COLUMNS,
    SEND_FLAGS,
    FastPath,
    Run,
    SendPath,
    no_run,
    one_message_publish,
)
from .snapshot import ChunkSections, read_snapshot

log = logging.getLogger("wonderq.wal")

__all__ = ["RecoveredState", "RecoveryReport", "recover"]


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
        self.queues: dict[str, dict[str, Any]] = {DEFAULT_QUEUE: {}}
        self.epochs: dict[str, int] = collections.defaultdict(int)
        self.runs: list[Run] = []
        self.open_runs: dict[str, Run] = {}  # queue -> the run new publishes extend
        self.deleted: set[int] = set()
        self.superseded: dict[int, Run] = {}
        self.rc: collections.Counter[int] = collections.Counter()
        self.moved: dict[int, tuple[str, int]] = {}
        # First receive times (wall ms) logged since an id was stored (the earliest wins); a
        # time in the id's run (a snapshot row) comes first.
        self.first_receives: dict[int, int] = {}
        self.next_id = 1
        self.names: dict[bytes, str] = {}
        # While snapshot chunks are pending: ids placed since the snapshot, to detect overlaps.
        self.recent: set[int] | None = None

    def _run_for(self, queue: str, buf: Any) -> Run:
        run = self.open_runs.get(queue)
        if run is None or run.buf is not buf or run.epoch != self.epochs[queue]:
            run = self.open_runs[queue] = Run(queue, self.epochs[queue], buf)
            self.runs.append(run)
        return run

    def apply(self, secs: list[tuple]) -> None:
        for sec in secs:
            kind = sec[0]
            if kind == S_PUBLISH:
                self._publish(sec[1], None)
            elif kind == S_RECEIVE:
                self.rc.update(sec[1])
            elif kind == S_FIRST_RECEIVES:
                keep = self.first_receives.setdefault
                for msg_id, t in zip(sec[1], sec[2], strict=True):
                    keep(msg_id, t)
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
                if sec[1] != DEFAULT_QUEUE:
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
        if self.first_receives:
            for msg_id in self.first_receives.keys() & ids:
                del self.first_receives[msg_id]

    def _publish(self, sec: PubSection, chunk_run: Run | None) -> None:
        n = len(sec.ids)
        if not n:
            return
        run = chunk_run or self._run_for(sec.queue, sec.buf)
        base = len(run.ids)
        run.ids.extend(sec.ids)
        run.lens.extend(sec.lens)
        run.offs.extend(itertools.islice(itertools.accumulate(sec.lens, initial=sec.body_start), n))
        for attr, default in COLUMNS:
            have = getattr(run, attr)
            new = getattr(sec, attr)
            if new is not None:
                if have is None:
                    setattr(run, attr, [default] * base + new)
                else:
                    have.extend(new)
            elif have is not None:
                have.extend([default] * n)
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
            p: PubSection = sec[1]
            run = Run(p.queue, self.epochs[p.queue], p.buf)
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
            fr = self.first_receives
            if fr and not fr.keys().isdisjoint(p.ids):
                for msg_id in fr.keys() & set(p.ids):
                    del fr[msg_id]
            self._publish(p, run)

    def replay_frames(self, buf: Any, start: int, end: int, chunks: Chunks) -> FrameScan:
        """Replay the frames of buf[start:end] (one segment), applying each pending snapshot
        chunk before the first frame at or past its position; the replay stops where the
        scan does (see FrameScan). A frame that is exactly one publish of one plain message
        (no delay, no receive count), the common case at low load, is appended to the run of
        its queue with a single struct call: that loop is the replay's hot path when frames
        are small, and the general decoder's per-frame work would dominate it."""
        scan = FrameScan(buf, start, end)
        chunk_at = _chunk_at(chunks)
        # The fast path, while ``fast_q`` (a raw queue name) is not None: one-message frames of
        # that queue extend one run through the bound appends ``add_*``.
        fast_q: bytes | None = None
        fast_qlen = fast_size = 0
        fast_unpack: Callable[..., tuple[Any, ...]] = PUB.unpack_from
        add_id: Callable[[int], None] = no_run
        add_off: Callable[[int], None] = no_run
        add_len: Callable[[int], None] = no_run
        # The same for one-message frames of SQS sends (a sent time, a blob or not), of one
        # queue (a plain fast path of another queue may run beside it).
        sends: SendPath | None = None
        for p0, p1 in scan:
            if p0 >= chunk_at:
                while chunks and chunks[0][0] + FRAME_HEADER_SIZE <= p0:
                    self.apply_chunk(chunks.popleft()[1])
                chunk_at = _chunk_at(chunks)
                if not chunks:
                    self.recent = None
                fast_q = None
                sends = None
            if fast_q is not None and p1 - p0 >= fast_size:
                kind, flags, qlen, n, qraw, msg_id, blen = fast_unpack(buf, p0)
                if (
                    kind == S_PUBLISH
                    and n == 1
                    and not flags
                    and qlen == fast_qlen
                    and qraw == fast_q
                    and p0 + fast_size + blen == p1
                ):
                    add_id(msg_id)
                    add_off(p0 + fast_size)
                    add_len(blen)
                    if msg_id >= self.next_id:
                        self.next_id = msg_id + 1
                    continue
            if sends is not None and sends.take(buf, p0, p1):
                continue
            fast = self._start_fast_path(buf, p0, p1)
            if fast is None:
                started = self._start_send_path(buf, p0, p1)
                if started is not None:
                    sends = started
                    continue
                self.apply(decode_sections(buf, p0, p1, self.names))
                fast_q = None  # the sections may have changed epochs or runs
                sends = None
            else:
                fast_q, fast_qlen, fast_size, fast_unpack, add_id, add_off, add_len = fast
        return scan

    def _start_fast_path(self, buf: Any, p0: int, p1: int) -> FastPath | None:
        """If frame buf[p0:p1] is one plain message published to a queue whose open run can
        take it directly, append it and return the fast path's state for that queue (to try
        on the next frames); else None: the general decoder must handle the frame."""
        if self.recent is not None or p1 - p0 < PUB.size:
            return None
        kind, flags, qlen, n = PUB.unpack_from(buf, p0)
        if kind != S_PUBLISH or n != 1 or flags:
            return None
        unpack, size = one_message_publish(qlen)
        if p1 - p0 < size:
            return None
        _, _, _, _, qraw, msg_id, blen = unpack(buf, p0)
        if p0 + size + blen != p1:
            return None
        queue = self.names.get(qraw)
        if queue is None:
            queue = self.names[qraw] = qraw.decode()
        run = self._run_for(queue, buf)
        if not run.plain:
            return None
        run.ids.append(msg_id)
        run.offs.append(p0 + size)
        run.lens.append(blen)
        if msg_id >= self.next_id:
            self.next_id = msg_id + 1
        return qraw, qlen, size, unpack, run.ids.append, run.offs.append, run.lens.append

    def _start_send_path(self, buf: Any, p0: int, p1: int) -> SendPath | None:
        """Like _start_fast_path, for a frame that is one SQS send (format 2: flags F_SENT,
        with or without F_ATTRIBUTES) to a queue whose open run has exactly those columns (or
        is empty): take it and return the path for the next frames; else None."""
        if self.recent is not None or p1 - p0 < PUB.size:
            return None
        kind, flags, qlen, n = PUB.unpack_from(buf, p0)
        if kind != S_PUBLISH or n != 1 or flags not in SEND_FLAGS or p1 - p0 < PUB.size + qlen:
            return None
        qraw = bytes(buf[p0 + PUB.size : p0 + PUB.size + qlen])
        queue = self.names.get(qraw)
        if queue is None:
            queue = self.names[qraw] = qraw.decode()
        run = self._run_for(queue, buf)
        if run.delays is not None or run.receives is not None or run.firsts is not None:
            return None
        with_blobs = flags == F_SENT | F_ATTRIBUTES
        if not run.ids:
            run.sents = []
            run.attributes = [] if with_blobs else None
        elif run.sents is None or (run.attributes is not None) != with_blobs:
            return None
        path = SendPath(self, qraw, flags, run)
        return path if path.take(buf, p0, p1) else None


#: Live messages of one run as parallel sequences: (queue, ids, bodies, receives, delay ends,
#: sent times, first receive times, attribute blobs); a None column: all default.
_Live = tuple[
    str,
    list[int],
    Iterable[bytes],
    list[int] | None,
    list[int] | None,
    list[int] | None,
    list[int] | None,
    list[bytes | None] | None,
]
#: A snapshot's chunks still to be applied, in position order.
Chunks = collections.deque[ChunkSections]


def _chunk_at(chunks: Chunks) -> int:
    """The payload offset from which the first pending chunk applies (before that frame)."""
    return chunks[0][0] + FRAME_HEADER_SIZE if chunks else sys.maxsize


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

    def _live_runs(self) -> Iterator[_Live]:
        """Per run, its live messages as parallel sequences (see _Live; None = every message
        has the default). Runs no later record touched take a path with no Python code per
        message (bodies come from a lazy C-level map); moved messages come out in
        one-message groups."""
        rep = self._rep
        deleted, superseded = rep.deleted, rep.superseded
        rc, moved, epochs, queues = rep.rc, rep.moved, rep.epochs, rep.queues
        fr = rep.first_receives
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
                and (not fr or fr.keys().isdisjoint(run.ids))
            )
            sents, firsts, attributes = run.sents, run.firsts, run.attributes
            if clean:
                ends = map(operator.add, run.offs, run.lens)
                bodies = map(buf.__getitem__, map(slice, run.offs, ends))
                yield (
                    run.queue, run.ids, bodies, run.receives, run.delays, sents, firsts, attributes
                )  # fmt: skip
                continue
            extra = (
                sents is not None
                or firsts is not None
                or attributes is not None
                or (fr and not fr.keys().isdisjoint(run.ids))
            )
            ids: list[int] = []
            some: list[bytes] = []
            recs: list[int] = []
            dels: list[int] = []
            sent_ms: list[int] = []
            first_ms: list[int] = []
            blobs: list[bytes | None] = []
            for i, msg_id in enumerate(run.ids):
                if msg_id in deleted or superseded.get(msg_id, run) is not run:
                    continue
                o = run.offs[i]
                body = buf[o : o + run.lens[i]]
                d = run.delays[i] if run.delays else 0
                f = (firsts[i] if firsts else 0) or fr.get(msg_id, 0)
                mv = moved.get(msg_id)
                if mv is not None:
                    q, ep = mv
                    if q in queues and epochs[q] == ep:
                        yield (
                            q,
                            [msg_id],
                            [body],
                            [rc.get(msg_id, 0)],
                            [d],
                            [sents[i]] if sents else None,
                            [f] if f else None,
                            [attributes[i]] if attributes else None,
                        )
                    continue
                if not queue_ok:
                    continue
                ids.append(msg_id)
                some.append(body)
                recs.append((run.receives[i] if run.receives else 0) + rc.get(msg_id, 0))
                dels.append(d)
                if extra:
                    sent_ms.append(sents[i] if sents else 0)
                    first_ms.append(f)
                    blobs.append(attributes[i] if attributes else None)
            if ids:
                if extra:
                    yield run.queue, ids, some, recs, dels, sent_ms, first_ms, blobs
                else:
                    yield run.queue, ids, some, recs, dels, None, None, None

    def messages(self) -> list[Publish]:
        """Every live message, in increasing id order (receives = the recovered count)."""
        out = []
        zeros = itertools.repeat(0)
        nones = itertools.repeat(None)
        for q, ids, bodies, recs, dels, sents, firsts, blobs in self._live_runs():
            for i, b, r, d, s, f, a in zip(
                ids,
                bodies,
                recs or zeros,
                dels or zeros,
                sents or zeros,
                firsts or zeros,
                blobs or nones,
                strict=False,
            ):
                out.append(Publish(i, q, bytes(b), d, r, s, f, a))
        out.sort(key=lambda p: p.msg_id)
        return out

    def load_into(
        self, broker: Any, now_ms: int, wall_ms: int, sent_offset_ms: int | None = None
    ) -> int:
        """Create the queues, restore every live message (available again: leases are not
        durable; delays resume with what was left of them by the wall clock) and move the id
        counter above every id ever issued. Returns the number of messages restored.

        A message whose sent time was logged keeps it (its retention period counts from it;
        SQS's SentTimestamp is unchanged), and so does its first receive time and attribute
        blob; the engine's clock is ``now_ms``, and ``sent_offset_ms`` (wall-clock minus
        engine ms; by default ``wall_ms - now_ms``) turns the logged wall-clock times into
        it. Others are taken as sent at ``now_ms``."""
        if sent_offset_ms is None:
            sent_offset_ms = wall_ms - now_ms
        with _cyclic_gc_paused():
            return self._load_into(broker, now_ms, wall_ms, sent_offset_ms)

    def _load_into(self, broker: Any, now_ms: int, wall_ms: int, offset: int) -> int:
        t0 = time.perf_counter()
        self._load_queues(broker)
        max_delay = MAX_DELAY_MS
        restore = broker.restore
        restored = dropped = 0
        zeros = itertools.repeat(0)
        for queue, ids, bodies, recs, dels, sents, firsts, blobs in self._live_runs():
            if not broker.has_queue(queue):
                dropped += len(ids)
                continue
            if (
                sents is not None
                and firsts is None
                and blobs is None
                and not recs
                and not dels
                and 0 not in sents
                and max(sents) - offset <= now_ms
            ):
                # Messages with only a sent time (what a snapshot holds for most): the times
                # converted by a C-level map, nothing else per message but the call.
                engine_sents = map(operator.sub, sents, itertools.repeat(offset))
                for msg_id, body, sent in zip(ids, bodies, engine_sents, strict=False):
                    restore(queue, msg_id, body, 0, now_ms, 0, sent)
            elif sents is not None or firsts is not None or blobs is not None:
                _restore_all(
                    restore,
                    queue,
                    ids,
                    bodies,
                    recs or zeros,
                    dels or zeros,
                    sents or zeros,
                    firsts or zeros,
                    blobs or itertools.repeat(None),
                    now_ms,
                    wall_ms,
                    offset,
                )
            elif not dels or not any(dels):
                if not recs or not any(recs):
                    for msg_id, body in zip(ids, bodies, strict=False):
                        restore(queue, msg_id, body, 0, now_ms, 0)
                else:
                    for msg_id, body, r in zip(ids, bodies, recs, strict=False):
                        restore(queue, msg_id, body, r, now_ms, 0)
            else:
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


def _restore_all(
    restore: Callable[..., Any],
    queue: str,
    ids: Iterable[int],
    bodies: Iterable[bytes],
    recs: Iterable[int],
    dels: Iterable[int],
    sents: Iterable[int],
    firsts: Iterable[int],
    blobs: Iterable[bytes | None],
    now_ms: int,
    wall_ms: int,
    offset: int,
) -> None:
    """Restore messages with format 2 columns: wall-clock times become engine times (a time
    after now, the clock having gone back, is taken as now). A message whose sent time was not
    logged but whose first receive was counts as sent then (it was sent before; the engine
    keeps no first receive earlier than the send, and the restart would be later)."""
    max_delay = MAX_DELAY_MS
    for msg_id, body, r, d, s, f, a in zip(
        ids, bodies, recs, dels, sents, firsts, blobs, strict=False
    ):
        left = min(max(d - wall_ms, 0), max_delay) if d else 0
        first = min(f - offset, now_ms) if f else None
        if s:
            sent: int | None = min(s - offset, now_ms)
            if first is not None and first < sent:
                first = sent
        else:
            sent = first
        restore(queue, msg_id, body, r, now_ms, left, sent, first, a)


def recover(data_dir: str | os.PathLike[str]) -> RecoveredState:
    """Read the newest snapshot and the segments after it; repair a torn or corrupt tail.

    The first frame that is incomplete or fails its checksum ends recovery: its segment is
    truncated there (a corrupt tail is first copied to ``<segment>.dropped-<offset>``), later
    segments are renamed ``*.dropped`` and everything is logged. Obsolete files (segments
    older than the snapshot, unfinished snapshots) are removed. A snapshot that does not read
    back whole raises WalCorruptError: snapshots are written atomically, so that is damage.
    """
    with _cyclic_gc_paused():
        return _recover(os.fspath(data_dir))


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Replay and load allocate millions of objects and no cycles: the cyclic GC would only
    rescan them over and over."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _recover(d: str) -> RecoveredState:
    t0 = time.perf_counter()
    os.makedirs(d, exist_ok=True)
    report = RecoveryReport()
    segments, snapshots, unfinished = list_files(d)
    for name in unfinished:
        log.warning("recovery: removing unfinished file %s", name)
        os.unlink(os.path.join(d, name))
    rep = _Replayer()
    maps: list[mmap.mmap] = []
    chunks: list[ChunkSections] = []
    snap_seq = max(snapshots) if snapshots else 0
    if snap_seq:
        report.snapshot = snapshots[snap_seq]
        path = os.path.join(d, snapshots[snap_seq])
        buf = _map(path, maps)
        head, chunks, frames = read_snapshot(buf, path, snap_seq, rep.names)
        report.frames += frames
        report.bytes_read += len(buf)
        rep.apply(head)
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


def _replay_segment(
    path: str,
    seq: int,
    rep: _Replayer,
    maps: list[mmap.mmap],
    report: RecoveryReport,
    chunks: list[ChunkSections],
) -> bool:
    """Replay one segment, interleaving snapshot chunks at their positions. Returns False if
    the segment was cut short (recovery stops after it)."""
    size = os.path.getsize(path)
    if size < HEADER_SIZE:
        # Created but its header never made it to disk: an empty segment.
        log.warning("recovery: %s has a torn header; treating it as empty", os.path.basename(path))
        report.dropped_bytes += size
        truncate(path, 0)
        return True
    buf = _map(path, maps)
    magic, _, file_seq = check_header(buf, path)
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
        if scan.good_end < size:
            # Zeros after the last frame: written ahead by the log, or where a write never
            # landed. Nothing to drop; cut them so the log appends after the last frame.
            truncate(path, scan.good_end)
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
    truncate(path, scan.good_end)
    return False
