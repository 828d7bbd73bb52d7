# cython: language_level=3, annotation_typing=False
"""The store: the one object the faces (``api``, ``sqs``) call for queue state.

Every store keeps the semantics of DESIGN.md ("Semantics"); a store that cannot in some
respect says so in its docs. Three implementations:

* :class:`MemoryStore` — the Cython engine in this process, nothing else (the default).
* :class:`DurableStore` — the engine plus the write-ahead log (``--data-dir``): the one place
  that knows the durability recipe (check writable, engine call, append, commit, answer once
  durable), dead-letter logging and the mapping of log failures to 507.
* ``wonderq.redis.RedisStore`` — the queues in Redis/Valkey (``--backend redis://...``).

**Answers that come later.** A store method returns its answer, or a
:class:`~wonderq.deferred.Deferred` when the answer is not ready yet (wonderq/deferred.py).

**Time.** The faces never pass a time: the store reads the clock (``_core.now_ms``, monotonic
milliseconds) unless a test gave it a ``clock`` to advance by hand.

**Expiry and long polls.** A store owns what makes leases run out (the engine's timer heap
and one loop timer for :class:`MemoryStore`; a sweeper for Redis) and tells its
:class:`Listener` (the long-poll layer) when messages may have become available: after a
publish to a queue that has parked receives, after an expiry slice, after a release.

Errors: bad arguments and refusals are the engine's ``EngineError`` family (status + code);
what the store itself cannot do is :class:`~wonderq.errors.StoreError` (507, 503). Both
become the JSON error shape in :func:`wonderq.errors.answer_error`.

Compiled with Cython in pure-Python mode (``store.pxd`` beside it types the hot path: the
faces call the store's methods as C calls, and ``MemoryStore`` calls the engine in C).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from ._core import BodyBlock, Broker, now_ms
from .deferred import Fanout, Listener, _NoListener
from .errors import StorageError
from .queuenames import QueueNames

if TYPE_CHECKING:
    from .config import Settings
    from .wal import Wal

__all__ = [
    "EXPIRE_BUDGET",
    "SQS_CID",
    "DurableStore",
    "MemoryStore",
    "Store",
    "open_store",
]

log = logging.getLogger("wonderq.store")

# Heap entries handled per expiry slice; a burst of a million expirations is processed
# 1024 at a time with the event loop's I/O in between, so no request waits long behind it.
# bench/bench_core.py (1M-lease burst): budget 2048 took up to 4.9 ms a call under load,
# 4096 up to 12.7 ms; 1024 keeps a slice near 1-2 ms for the same total time.
EXPIRE_BUDGET = 1024
_NOT_ARMED = 2**62  # later than any deadline (the engine keeps now <= 2**62)


class Store:
    """The interface. Every method may return a :class:`Deferred` instead of its answer.

    Queues (names are already validated by the caller; a well-formed name of no queue is
    the engine's ``QueueNotFound``, 404):

    * ``put_queue(name, attributes)`` -> bool (created); attributes as the engine's
      ``put_queue`` takes them (``visibility_timeout_ms``, ``delay_ms``, ``max_receives``,
      ``dead_letter_queue``, ``max_message_bytes``, ``retention_ms``), None = defaults.
    * ``delete_queue(name)`` -> int (messages dropped); ``purge(name)`` -> int.
    * ``queue_info(name)`` -> dict in the engine's ``queue_info`` shape (times in ms).
    * ``list_queues(prefix, after, limit)`` -> ``(infos, next_name or None)``, by name.

    Messages (ids 1..2^63-1, cids 0..2^63-1, times in ms; -1 = the queue's default):

    * ``publish(queue, body, delay_ms)`` -> id; ``publish_batch(queue, bodies, delays)`` ->
      first id (consecutive ids; ``delays`` None or one per body).
    * ``publish_batch_json(queue, data)`` -> ``b'{"ids":[...]}'``, or None when ``data`` is
      not the plain form (the caller then parses it and calls ``publish_batch``).
    * ``body_block(size)`` -> a writable buffer of ``size`` bytes that ``publish`` takes as
      a body with no copy (the engine's ``BodyBlock``), or None: the protocol then reads a
      big body into a bytes object.
    * ``queue_names``: None, or a :class:`wonderq.queuenames.QueueNames` over the store's
      table of queue names: ``prefetch_name(data, start)``, a hint that the queue named
      ``data[start:end]`` (bytes; ``end`` is the next ``/`` or ``?``, or the end) is about
      to be used, given as a request's target arrives (the store may start loading what
      finding it reads); ``known_name(path, start, end)``, the store's own str for the
      queue named ``path[start:end]`` (the same object each time) or None, which the router
      hands on as the ``{queue}`` segment, no new str made, and the store finds by
      identity. The protocol and the router call both as C calls.
    * ``receive(queue, cid, limit, visibility_ms)`` -> the JSON answer
      ``{"messages":[{"id","body","receives"},...]}`` (exactly ``EMPTY_MESSAGES`` if none).
    * ``peek(queue, limit)`` -> the same JSON, leasing and counting nothing.
    * ``delete(queue, cid, id)`` -> bool; ``delete_batch(queue, cid, ids)`` ->
      ``(deleted, failed)``; ``ack_json(queue, data)`` -> the ack answer, or None when
      ``data`` is not the plain form.
    * ``change_lease(queue, cid, id, timeout_ms)`` -> bool (0 releases).

    Operations: ``health()`` -> bool (the backend answers), ``stats()`` -> one row per queue
    ``(name, ready, leased, delayed, published, delivered, deleted, expired, dead_lettered)``
    (never deferred: a networked store answers from a cache it refreshes),
    ``stats_page(after, limit)`` -> ``(rows, next_name or None)``: the same rows a page at a
    time, by name (the metrics render a page per event-loop turn; the default slices
    ``stats()``),
    ``memory_bytes()``, ``memory_limit()``, ``metrics()`` -> extra ``(name, kind, help,
    value)`` rows (``kind`` is ``"counter"`` or ``"gauge"``), ``kind`` ("memory", "durable",
    "redis"). Lifecycle: ``open()`` (blocking, before the loop serves: recovery),
    ``start(loop, listener)`` -> awaitable or None, ``close()`` -> awaitable or None.
    """

    kind = "abstract"

    def __init__(self) -> None:
        self.listener: Listener = _NoListener()
        self._waiting: dict[str, Any] = self.listener.waiting
        self.queue_names: QueueNames | None = None  # no table of names to offer
        # The SQS face's section (see "the SQS face" below).
        self._token_key = os.urandom(32)
        self.wall_offset_ms = time.time_ns() // 1_000_000 - now_ms()

    # ---- lifecycle ------------------------------------------------------------------------
    def open(self) -> None:
        """Blocking preparation before the loop serves (recovery); may raise."""

    def start(self, loop: asyncio.AbstractEventLoop, listener: Listener) -> Any:
        """Begin serving in ``loop``: timers, connections. Returns an awaitable or None."""
        self.listener = listener
        self._waiting = listener.waiting
        return None

    def close(self) -> Any:
        """Stop: flush what must be flushed. Returns an awaitable or None."""
        return None

    # ---- queues ---------------------------------------------------------------------------
    def put_queue(self, name: str, attributes: dict[str, Any] | None) -> Any:
        raise NotImplementedError

    def delete_queue(self, name: str) -> Any:
        raise NotImplementedError

    def purge(self, name: str) -> Any:
        raise NotImplementedError

    def queue_info(self, name: str) -> Any:
        raise NotImplementedError

    def list_queues(self, prefix: str, after: str, limit: int) -> Any:
        raise NotImplementedError

    # ---- messages -------------------------------------------------------------------------
    def publish(self, queue: str, body: bytes, delay_ms: int) -> Any:
        raise NotImplementedError

    def publish_batch(self, queue: str, bodies: list[bytes], delays: list[int] | None) -> Any:
        raise NotImplementedError

    def publish_batch_json(self, queue: str, data: bytes) -> Any:
        return None  # no fast path: the caller takes the general one

    def body_block(self, size: int) -> Any:
        return None  # big bodies come as bytes

    def receive(self, queue: str, cid: int, limit: int, visibility_ms: int) -> Any:
        raise NotImplementedError

    def peek(self, queue: str, limit: int) -> Any:
        raise NotImplementedError

    def delete(self, queue: str, cid: int, msg_id: int) -> Any:
        raise NotImplementedError

    def delete_batch(self, queue: str, cid: int, ids: list[Any]) -> Any:
        raise NotImplementedError

    def ack_json(self, queue: str, data: bytes) -> Any:
        return None

    def change_lease(self, queue: str, cid: int, msg_id: int, timeout_ms: int) -> Any:
        raise NotImplementedError

    # ---- operations -----------------------------------------------------------------------
    def health(self) -> Any:
        return True

    def stats(self) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def stats_page(self, after: str, limit: int) -> tuple[list[tuple[Any, ...]], str | None]:
        """Up to ``limit`` rows of ``stats()`` for the queues named after ``after`` (all
        when empty), and the name to continue after, or None when these were the last.
        This default bisects ``stats()``, so it needs its rows in name order (the engine's
        and RedisStore's cache are); override it when a page can be read alone."""
        rows = self.stats()
        i = bisect_right(rows, after, key=itemgetter(0)) if after else 0
        page = rows[i : i + limit]
        return page, (page[-1][0] if page and i + limit < len(rows) else None)

    def memory_bytes(self) -> int:
        return 0

    def memory_limit(self) -> int:
        return 0

    def metrics(self) -> list[tuple[str, str, str, float]]:
        return []

    # ==== the SQS face ======================================================================
    # What wonderq.sqs calls beyond the methods above. Messages carry an opaque attribute
    # blob (the SQS message attributes, wonderq.sqs.attributes); leases are acted on by
    # lease token (id, receives), never by cid; the times a row carries are wall-clock epoch
    # ms (SQS's SentTimestamp), converted from the engine's monotonic ms with an offset
    # taken when the store was made. Queue-level extras live in the queue attribute
    # ``meta`` (a JSON object as str, at most 64 KiB), set with ``put_queue`` and read back
    # in ``queue_info()["attributes"]`` like any attribute.

    def token_key(self) -> bytes:
        """The store's secret for receipt handles (32 random bytes per store): a handle
        another store (or this one before a restart) issued does not verify."""
        return self._token_key

    def send(self, queue: str, body: bytes, delay_ms: int, attributes: bytes | None) -> Any:
        """Store one message with its attribute blob (None = none) -> id. ``delay_ms`` -1 =
        the queue's delay."""
        raise NotImplementedError

    def receive_messages(self, queue: str, limit: int, visibility_ms: int) -> Any:
        """Lease up to ``limit`` messages as :meth:`receive` does, to the SQS face's
        consumer id (``SQS_CID``) -> a list of ``(id, body bytes, receives, sent epoch ms,
        first-receive epoch ms, attribute blob or None)``; empty when none is available."""
        raise NotImplementedError

    def delete_by_token(self, queue: str, msg_id: int, receives: int) -> Any:
        """Delete the message if ``(msg_id, receives)`` names its current, unexpired lease
        -> bool (the engine's ``delete_token``)."""
        raise NotImplementedError

    def change_lease_by_token(self, queue: str, msg_id: int, receives: int, timeout_ms: int) -> Any:
        """Extend (or with 0 release) the lease ``(msg_id, receives)`` names -> bool, by the
        rule of :meth:`delete_by_token`."""
        raise NotImplementedError


#: The consumer id the engine records for leases taken through the SQS face (they are
#: deleted and changed by token, so no SQS client ever presents it).
SQS_CID = 2**63 - 1


class MemoryStore(Store):
    """The engine in this process: every call a C call, every answer ready at once.

    ``clock`` replaces ``_core.now_ms`` (tests advance time by hand); ``broker`` may be given
    (tests, tools), else one is made from ``settings``.
    """

    kind = "memory"

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        broker: Broker | None = None,
        clock: Callable[[], int] | None = None,
    ) -> None:
        super().__init__()
        if broker is None:
            broker = _make_broker(settings, track_dead_letters=False)
        self.broker = broker
        # The engine's name table, as the protocol and the router call it: a queue's slot
        # starts loading as the request's target arrives, and the router's {queue} segment
        # is the engine's own str for the name, which its lookup finds by identity.
        self.queue_names = broker
        self.clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.Handle | None = None
        self.armed_ms = _NOT_ARMED  # the deadline the expiry timer is armed for
        # Queue names in order, for paging (GET /v1/queues, /metrics) without sorting 100,000
        # names per page: built at start() (after recovery, before serving) or on first use,
        # then kept in step with put_queue/delete_queue through the two lists of changes
        # below, applied when a page is next read (see sorted_names).
        self._names: list[str] | None = None
        self._added: set[str] = set()  # created since the last page, not in _names
        self._removed: set[str] = set()  # deleted since, still in _names

    def now(self) -> int:
        """The store's clock: monotonic ms."""
        if self.clock is None:
            return now_ms()
        return self.clock()

    # ---- lifecycle ------------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop, listener: Listener) -> Any:
        self.listener = listener
        self._waiting = listener.waiting
        self._loop = loop
        self.note_deadline()
        self.sorted_names()  # the one sort of every name, before anyone waits for a page
        return None

    def close(self) -> Any:
        self.stop_timer()
        return None

    # ---- queues ---------------------------------------------------------------------------
    def put_queue(self, name: str, attributes: dict[str, Any] | None) -> Any:
        created = self.broker.put_queue(name, attributes)
        if created:
            self.named(name, True)
        return created

    def delete_queue(self, name: str) -> Any:
        dropped = self.broker.delete_queue(name)
        self.named(name, False)
        return dropped

    def sorted_names(self) -> list[str]:
        """Every queue's name, in order (the store's own list: do not change it).

        Changes since the last call are applied now: a few by bisection (a memmove each),
        many at once by one filter and one merge of two sorted runs (timsort finds them),
        O(n) rather than a sort of every name, nor a memmove per name created."""
        names = self._names
        if names is None:
            names = self._names = self.broker.queue_names()
            self._added.clear()
            self._removed.clear()
            return names
        added, removed = self._added, self._removed
        if not added and not removed:
            return names
        if len(added) + len(removed) <= 64:
            for name in removed:
                del names[bisect_left(names, name)]
            for name in sorted(added):
                insort(names, name)
        else:
            if removed:
                names = [name for name in names if name not in removed]
            names += sorted(added)
            names.sort()
            self._names = names
        added.clear()
        removed.clear()
        return names

    def named(self, name: str, exists: bool) -> None:
        """Queue ``name`` was created (``exists``) or deleted: noted for sorted_names."""
        if self._names is None:
            return
        if exists:
            if name in self._removed:
                self._removed.discard(name)  # deleted and created again: still in _names
            else:
                self._added.add(name)
        elif name in self._added:
            self._added.discard(name)  # created and deleted again since the last page
        else:
            self._removed.add(name)

    def purge(self, name: str) -> Any:
        return self.broker.purge(name)

    def queue_info(self, name: str) -> Any:
        return self.broker.queue_info(name)

    def list_queues(self, prefix: str, after: str, limit: int) -> Any:
        broker = self.broker
        names = self.sorted_names()
        i = bisect_left(names, prefix)
        if after:
            i = max(i, bisect_right(names, after))
        infos: list[dict[str, Any]] = []
        n = len(names)
        while i < n and len(infos) < limit and names[i].startswith(prefix):
            infos.append(broker.queue_info(names[i]))
            i += 1
        more = i < n and names[i].startswith(prefix)
        return infos, (names[i - 1] if more else None)

    # ---- messages -------------------------------------------------------------------------
    def publish(self, queue: str, body: bytes, delay_ms: int) -> Any:
        msg_id = self.broker.publish(queue, body, self.now(), delay_ms)
        self.after_publish(queue)
        return msg_id

    def body_block(self, size: int) -> Any:
        """A block the engine takes as the message when it publishes the body read into it
        (_core.BodyBlock); None for a size it does not hold that way."""
        try:
            return BodyBlock(size)
        except (ValueError, MemoryError):
            return None

    def publish_batch(self, queue: str, bodies: list[bytes], delays: list[int] | None) -> Any:
        first = self.broker.publish_batch(queue, bodies, self.now(), delays)
        self.after_publish(queue)
        return first

    def publish_batch_json(self, queue: str, data: bytes) -> Any:
        answer = self.broker.publish_batch_json(queue, data, self.now())
        if answer is not None:
            self.after_publish(queue)
        return answer

    def receive(self, queue: str, cid: int, limit: int, visibility_ms: int) -> Any:
        body = self.broker.receive(queue, cid, limit, self.now(), visibility_ms)
        self.note_deadline()
        return body

    def peek(self, queue: str, limit: int) -> Any:
        return self.broker.peek(queue, limit, self.now())

    def delete(self, queue: str, cid: int, msg_id: int) -> Any:
        return self.broker.delete(queue, cid, msg_id, self.now())

    def delete_batch(self, queue: str, cid: int, ids: list[Any]) -> Any:
        return self.broker.delete_batch(queue, cid, ids, self.now())

    def ack_json(self, queue: str, data: bytes) -> Any:
        return self.broker.ack_json(queue, data, self.now())

    def change_lease(self, queue: str, cid: int, msg_id: int, timeout_ms: int) -> Any:
        changed = self.broker.change_lease(queue, cid, msg_id, timeout_ms, self.now())
        if changed:
            self.after_change_lease(timeout_ms)
        return changed

    # ---- operations -----------------------------------------------------------------------
    def stats(self) -> list[tuple[Any, ...]]:
        return self.broker.stats()

    def stats_page(self, after: str, limit: int) -> tuple[list[tuple[Any, ...]], str | None]:
        names = self.sorted_names()
        i = bisect_right(names, after) if after else 0
        page = names[i : i + limit]
        more = i + limit < len(names)
        return self.broker.stats(page), (page[-1] if more and page else None)

    def memory_bytes(self) -> int:
        return self.broker.memory_bytes

    def memory_limit(self) -> int:
        return self.broker.memory_limit

    # ==== the SQS face (see Store) ===========================================================
    def send(self, queue: str, body: bytes, delay_ms: int, attributes: bytes | None) -> Any:
        msg_id = self.broker.publish(queue, body, self.now(), delay_ms, attributes)
        self.after_publish(queue)
        return msg_id

    def receive_messages(self, queue: str, limit: int, visibility_ms: int) -> Any:
        rows = self.receive_rows(queue, limit, visibility_ms)
        if not rows:
            return rows
        return _epoch_rows(rows, self.wall_offset_ms)

    def receive_rows(self, queue: str, limit: int, visibility_ms: int) -> list[Any]:
        """receive_messages with the engine's times (monotonic ms): for the SQS face's fast
        path, which shows none of them, on a MemoryStore only (DurableStore logs the lease in
        its receive_messages)."""
        now = self.now()
        self.expire_due(now)
        rows = self.broker.receive_list(queue, SQS_CID, limit, now, visibility_ms)
        if rows:
            self.note_deadline()
        return rows

    def delete_by_token(self, queue: str, msg_id: int, receives: int) -> Any:
        return self.broker.delete_token(queue, msg_id, receives, self.now())

    def expire_due(self, now: int) -> None:
        """Expire what is due before an SQS receive, so a lease that ran out (a
        VisibilityTimeout of 0 included) is visible at once, as SQS has it, rather than when
        the timer fires a millisecond later. One heap peek when nothing is due."""
        deadline = self.broker.next_deadline()
        if 0 <= deadline <= now:
            self.expire(EXPIRE_BUDGET)

    def change_lease_by_token(self, queue: str, msg_id: int, receives: int, timeout_ms: int) -> Any:
        broker = self.broker
        changed = broker.change_lease_token(queue, msg_id, receives, timeout_ms, self.now())
        if changed:
            self.after_change_lease(timeout_ms)
        return changed

    # ---- after a change: long polls and the expiry timer ------------------------------------
    def after_publish(self, queue: str) -> None:
        """Messages were stored in ``queue``: wake its long polls; a delayed one may be the
        earliest deadline now."""
        if self._waiting and queue in self._waiting:
            self.listener.available(queue)
        self.note_deadline()

    def after_change_lease(self, timeout_ms: int) -> None:
        if timeout_ms == 0:
            # Available again in its queue, or moved to the dead-letter queue: either
            # queue's long polls may now be answered.
            self.listener.available_any()
        self.note_deadline()

    def note_deadline(self) -> None:
        """Re-arm the expiry timer if the engine's next deadline is now earlier."""
        deadline_ms = self.broker.next_deadline()
        if 0 <= deadline_ms < self.armed_ms:
            self.arm(deadline_ms)

    def arm(self, deadline_ms: int) -> None:
        """The single timer of the whole store, armed at the engine's next deadline (never
        one timer per message)."""
        if self._loop is None:
            return  # not serving yet (tests drive expire() themselves)
        if self._timer is not None:
            self._timer.cancel()
        # +1 ms: the loop's timers round to whole ms against a cached clock, and firing a
        # hair early would find nothing due and have to re-arm.
        delay_s = max(0, deadline_ms - self.now() + 1) / 1000
        self._timer = self._loop.call_later(delay_s, self._fire)
        self.armed_ms = deadline_ms

    def _fire(self) -> None:
        self._timer = None
        self.armed_ms = _NOT_ARMED
        processed = 0
        try:
            processed = self.expire(EXPIRE_BUDGET)
        except Exception:
            log.exception("expiring leases failed")
        if processed >= EXPIRE_BUDGET:
            # More may be due: continue after the loop has served I/O once.
            self._timer = self._loop.call_soon(self._fire)  # type: ignore[union-attr]
            self.armed_ms = self.now()
            return
        self.note_deadline()

    def expire(self, budget: int) -> int:
        """Expire at most ``budget`` due leases and delays; tell the listener. Returns how
        many were processed."""
        processed = self.broker.expire(self.now(), budget)
        if processed:
            self.after_expiry()
        return processed

    def after_expiry(self) -> None:
        self.listener.available_any()

    def stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.armed_ms = _NOT_ARMED
        self._loop = None


def _epoch_rows(rows: list[Any], offset_ms: int) -> list[tuple[Any, ...]]:
    """The engine's receive_list rows with wall-clock times (and the blob always there)."""
    out = []
    for row in rows:
        blob = row[5] if len(row) > 5 else None
        out.append((row[0], row[1], row[2], row[3] + offset_ms, row[4] + offset_ms, blob))
    return out


def _make_broker(settings: Settings | None, track_dead_letters: bool) -> Broker:
    if settings is None:
        return Broker(track_dead_letters=track_dead_letters)
    return Broker(
        visibility_ms=settings.visibility_timeout_ms,
        max_message_bytes=settings.max_message_bytes,
        max_batch=settings.max_batch,
        max_memory=settings.max_memory,
        track_dead_letters=track_dead_letters,
    )


class Log:
    """The write-ahead log as :class:`DurableStore` calls it on every change: the base of
    ``wonderq.wal.Wal``, declared here so that those calls are C calls (store.pxd) while the
    in-memory server never imports the log's package."""

    def check_writable(self) -> None:
        raise NotImplementedError

    def append_publish(
        self, msg_id: int, queue: str, body: bytes, delay_ms: int = 0, receives: int = 0
    ) -> None:
        raise NotImplementedError

    def append_send(
        self,
        msg_id: int,
        queue: str,
        body: bytes,
        delay_ms: int,
        sent_ms: int,
        attributes: bytes | None = None,
    ) -> None:
        raise NotImplementedError

    def append_receive(self, ids: Any) -> None:
        raise NotImplementedError

    def append_delete(self, msg_id: int) -> None:
        raise NotImplementedError

    def append_delete_many(self, ids: Any) -> None:
        raise NotImplementedError

    def commit(self) -> Any:
        raise NotImplementedError


class DurableStore(MemoryStore):
    """The engine plus the write-ahead log (docs/DURABILITY.md).

    The recipe, for every change: refuse while the log is failed (507), make the change in
    the engine, append it to the log in the engine's order, and answer once it is durable:
    at once under ``--fsync everysec|never``, after the group commit (one write + fsync for
    every request of the event-loop turn) under ``always``, through a :class:`Deferred`.
    Receive counts and dead-letter moves are appended but never waited for (a lost count
    only lets a message be delivered once more before it is dead-lettered).
    """

    kind = "durable"

    def body_block(self, size: int) -> Any:
        return None  # the log keeps the bodies it has still to write: bytes, not blocks

    def __init__(
        self,
        settings: Settings,
        *,
        broker: Broker | None = None,
        clock: Callable[[], int] | None = None,
        wall_ms: Callable[[], int] | None = None,
    ) -> None:
        if broker is None:
            # The engine records dead-letter moves only for the log (else nobody takes them).
            broker = _make_broker(settings, track_dead_letters=True)
        super().__init__(settings, broker=broker, clock=clock)
        self.settings = settings
        self.wall_ms = wall_ms or _wall_ms
        self.wal: Wal | None = None
        self._fanout: Fanout | None = None  # the answers waiting for the last commit seen
        self.recovered = 0  # messages restored by open()
        # Queues with a retention period: a publish to one is logged with its sent time, so
        # that the period counts from it after a restart (an SQS send always is).
        self._retained: set[str] = set()

    # ---- lifecycle ------------------------------------------------------------------------
    def open(self) -> None:
        """Lock the data directory and replay its log into the engine. Raises OSError, or
        ``WalCorruptError`` / ``EngineError`` for a log this program must not start on."""
        if self.wal is not None:
            return
        from .wal import Wal

        settings = self.settings
        assert settings.data_dir is not None
        wal = Wal(
            settings.data_dir, fsync=settings.fsync, compact_min_bytes=settings.compact_min_bytes
        )
        t0 = time.perf_counter()
        with wal.recover() as state:
            self.read_s = time.perf_counter() - t0
            self.recovered = state.load_into(
                self.broker, self.now(), self.wall_ms(), self.wall_offset_ms
            )
            self.recovered_queues = len(state.queues)
            self._retained = {q for q, a in state.queues.items() if a.get("retention_ms")}
        self.wal = wal

    async def _start(self, loop: asyncio.AbstractEventLoop, listener: Listener) -> None:
        from .wal import BrokerSnapshotSource

        MemoryStore.start(self, loop, listener)
        assert self.wal is not None
        # The Python-level bound method: compiled, ``self.now`` here would wrap the C method
        # with the wrong signature (the C compiler warns of the pointer type).
        now = getattr(self, "now")  # noqa: B009
        source = BrokerSnapshotSource(self.broker, now, self.wall_ms, self.wall_offset_ms)
        await self.wal.start(source)

    def start(self, loop: asyncio.AbstractEventLoop, listener: Listener) -> Any:
        return self._start(loop, listener)

    async def _close(self) -> None:
        self.stop_timer()
        if self.wal is not None:
            # After the last answers: whatever they appended is written and fsynced.
            await self.wal.close()

    def close(self) -> Any:
        return self._close()

    # ---- the recipe -----------------------------------------------------------------------
    def _writable(self) -> Wal:
        wal = self.wal
        assert wal is not None
        try:
            wal.check_writable()
        except Exception as exc:
            raise StorageError(str(exc)) from None
        return wal

    def _durable(self, value: Any) -> Any:
        """``value`` once what was appended is durable: at once, or a Deferred. The answers
        waiting for the same commit share one Fanout (one callback on its future)."""
        fut = self.wal.commit()  # type: ignore[union-attr]
        if fut is None:
            return value
        fan = self._fanout
        if fan is None or fan.fut is not fut:
            fan = self._fanout = Fanout(fut)
        return fan.deferred(value)

    def _delay(self, queue: str, delay_ms: int) -> int:
        """The delay a publish got: its own, or the queue's when it asked for the default."""
        if delay_ms >= 0:
            return delay_ms
        return self.broker.queue_delay_ms(queue)

    # ---- queues ---------------------------------------------------------------------------
    def put_queue(self, name: str, attributes: dict[str, Any] | None) -> Any:
        wal = self._writable()  # a failed log refuses new state (507)
        created = self.broker.put_queue(name, attributes)
        if created:
            self.named(name, True)
        full = self.broker.queue_info(name)["attributes"]
        if full.get("retention_ms"):
            self._retained.add(name)
        else:
            self._retained.discard(name)
        wal.append_queue_put(name, full)
        return self._durable(created)

    def delete_queue(self, name: str) -> Any:
        dropped = self.broker.delete_queue(name)
        self.named(name, False)
        self._retained.discard(name)
        self.wal.append_queue_delete(name)  # type: ignore[union-attr]
        return self._durable(dropped)

    def purge(self, name: str) -> Any:
        purged = self.broker.purge(name)
        self.wal.append_purge(name)  # type: ignore[union-attr]
        return self._durable(purged)

    # ---- messages -------------------------------------------------------------------------
    def publish(self, queue: str, body: bytes, delay_ms: int) -> Any:
        wal = self._writable()
        now = self.now()
        msg_id = self.broker.publish(queue, body, now, delay_ms)
        if self._retained and queue in self._retained:
            wal.append_send(msg_id, queue, body, self._delay(queue, delay_ms), self._sent(now))
        else:
            wal.append_publish(msg_id, queue, body, self._delay(queue, delay_ms))
        self.after_publish(queue)
        return self._durable(msg_id)

    def _sent(self, now: int) -> int:
        """The wall-clock ms logged as the sent time of a message the engine stored at
        ``now``: what SQS's SentTimestamp answers (the store's fixed offset)."""
        return now + self.wall_offset_ms

    def _sent_for(self, queue: str, now: int) -> int:
        """The sent time to log with a publish to ``queue`` at ``now``: 0 (none) unless the
        queue has a retention period."""
        if self._retained and queue in self._retained:
            return self._sent(now)
        return 0

    def publish_batch(self, queue: str, bodies: list[bytes], delays: list[int] | None) -> Any:
        wal = self._writable()
        now = self.now()
        first = self.broker.publish_batch(queue, bodies, now, delays)
        queue_delay = self.broker.queue_delay_ms(queue)
        if delays is not None:
            delays = [queue_delay if d < 0 else d for d in delays]
        elif queue_delay:
            delays = [queue_delay] * len(bodies)
        wal.append_publish_batch(first, queue, bodies, delays, self._sent_for(queue, now))
        self.after_publish(queue)
        return self._durable(first)

    def publish_batch_json(self, queue: str, data: bytes) -> Any:
        wal = self._writable()
        bodies: list[bytes] = []
        now = self.now()
        answer = self.broker.publish_batch_json(queue, data, now, bodies)
        if answer is None:
            return None
        queue_delay = self.broker.queue_delay_ms(queue)
        first = self.broker.next_id - len(bodies)
        wal.append_publish_batch(
            first,
            queue,
            bodies,
            [queue_delay] * len(bodies) if queue_delay else None,
            self._sent_for(queue, now),
        )
        self.after_publish(queue)
        return self._durable(answer)

    def receive(self, queue: str, cid: int, limit: int, visibility_ms: int) -> Any:
        leased: list[int] = []
        body = self.broker.receive(queue, cid, limit, self.now(), visibility_ms, leased)
        if leased:
            self.wal.append_receive(leased)  # type: ignore[union-attr]
        self.note_deadline()
        return body

    def delete(self, queue: str, cid: int, msg_id: int) -> Any:
        if not self.broker.delete(queue, cid, msg_id, self.now()):
            return False
        self.wal.append_delete(msg_id)  # type: ignore[union-attr]
        return self._durable(True)

    def delete_batch(self, queue: str, cid: int, ids: list[Any]) -> Any:
        deleted, failed = self.broker.delete_batch(queue, cid, ids, self.now())
        if not deleted:
            return deleted, failed
        self.wal.append_delete_many(deleted)  # type: ignore[union-attr]
        return self._durable((deleted, failed))

    def ack_json(self, queue: str, data: bytes) -> Any:
        deleted: list[int] = []
        answer = self.broker.ack_json(queue, data, self.now(), deleted)
        if answer is None or not deleted:
            return answer
        self.wal.append_delete_many(deleted)  # type: ignore[union-attr]
        return self._durable(answer)

    def change_lease(self, queue: str, cid: int, msg_id: int, timeout_ms: int) -> Any:
        changed = self.broker.change_lease(queue, cid, msg_id, timeout_ms, self.now())
        if changed:
            self.log_dead_letters()  # a release may have moved it to the dead-letter queue
            self.after_change_lease(timeout_ms)
        return changed

    def after_expiry(self) -> None:
        # The moves first, then the wakes (which may receive a moved message).
        self.log_dead_letters()
        self.listener.available_any()

    def log_dead_letters(self) -> None:
        """Append the dead-letter moves the engine made (by expiry or a release) since the
        last call. They go out with the next write (at most a tick later)."""
        moves = self.broker.take_dead_lettered()
        if moves:
            append = self.wal.append_dead_letter  # type: ignore[union-attr]
            for msg_id, queue in moves:
                append(msg_id, queue)

    # ==== the SQS face (see Store): the recipe of the methods above =========================
    def send(self, queue: str, body: bytes, delay_ms: int, attributes: bytes | None) -> Any:
        wal = self._writable()
        now = self.now()
        msg_id = self.broker.publish(queue, body, now, delay_ms, attributes)
        # Logged with its sent time and attribute blob: a recovered message keeps both.
        wal.append_send(
            msg_id, queue, body, self._delay(queue, delay_ms), self._sent(now), attributes
        )
        self.after_publish(queue)
        return self._durable(msg_id)

    def receive_messages(self, queue: str, limit: int, visibility_ms: int) -> Any:
        leased: list[int] = []
        now = self.now()
        self.expire_due(now)
        rows = self.broker.receive_list(queue, SQS_CID, limit, now, visibility_ms, leased)
        if leased:
            self.wal.append_receive(leased)  # type: ignore[union-attr]
        if not rows:
            return rows
        self.note_deadline()
        out = _epoch_rows(rows, self.wall_offset_ms)
        # The first receives (count 1) with their time, for ApproximateFirstReceiveTimestamp
        # after a restart (the earliest logged one wins: a dead-letter move starts at 1 too).
        first = [row for row in out if row[2] == 1]
        if first:
            self.wal.append_first_receives(  # type: ignore[union-attr]
                [row[0] for row in first], [row[4] for row in first]
            )
        return out

    def delete_by_token(self, queue: str, msg_id: int, receives: int) -> Any:
        if not self.broker.delete_token(queue, msg_id, receives, self.now()):
            return False
        self.wal.append_delete(msg_id)  # type: ignore[union-attr]
        return self._durable(True)

    def change_lease_by_token(self, queue: str, msg_id: int, receives: int, timeout_ms: int) -> Any:
        broker = self.broker
        changed = broker.change_lease_token(queue, msg_id, receives, timeout_ms, self.now())
        if changed:
            self.log_dead_letters()  # a release may have moved it to the dead-letter queue
            self.after_change_lease(timeout_ms)
        return changed

    # ---- operations -----------------------------------------------------------------------
    def metrics(self) -> list[tuple[str, str, str, float]]:
        if self.wal is None:
            return []
        rows = []
        for name, value in self.wal.metrics().items():
            kind = "counter" if name.endswith("_total") else "gauge"
            rows.append((name, kind, _WAL_HELP.get(name, name), value))
        return rows


_WAL_HELP = {
    "wonderq_wal_bytes": "Bytes of the log on disk: snapshot and segments, with what is queued.",
    "wonderq_wal_segments": "Segment files of the log.",
    "wonderq_wal_snapshot_bytes": "Size of the current snapshot in bytes.",
    "wonderq_wal_compactions_total": "Compactions completed.",
    "wonderq_wal_compaction_failures_total": "Compactions abandoned.",
    "wonderq_wal_written_bytes_total": "Bytes written to the log.",
    "wonderq_wal_fsyncs_total": "fsyncs of the log.",
    "wonderq_wal_last_fsync_seconds": "Duration of the last fsync.",
    "wonderq_wal_fsync_seconds_total": "Time spent in fsyncs of the log.",
    "wonderq_wal_fsync_failures_total": "Failed fsyncs.",
    "wonderq_wal_write_failures_total": "Failed writes.",
    "wonderq_wal_failed": "1 while the log cannot be written and publishes are refused.",
}


def _wall_ms() -> int:
    """Wall-clock ms: the log stores the end of a delay as wall-clock time."""
    return time.time_ns() // 1_000_000


def open_store(settings: Settings) -> Store:
    """The store the settings ask for (not opened yet)."""
    backend = getattr(settings, "backend", None)
    if backend:
        from .redis import RedisStore

        return RedisStore(settings)
    if settings.data_dir is not None:
        return DurableStore(settings)
    return MemoryStore(settings)
