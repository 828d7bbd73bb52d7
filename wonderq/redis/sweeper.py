"""What keeps a Redis deployment moving with no front-end special: the sweeper and the
long-poll wake-ups.

**Sweeper.** One front-end at a time holds a lease on ``wq:{sweep}:lock`` (``SET NX PX``,
renewed every pass); the holder runs the sweep script over every queue at least once a
second (sooner when a deadline is due sooner), delivers dead-letter outboxes and finishes
interrupted queue deletions. When the holder dies its lease runs out and another front-end
takes over within ``LOCK_TTL_MS``. Correctness never depends on it: every receive promotes
due leases itself, and two sweepers only waste work (each step re-checks Redis's clock).

**Wake-ups.** A front-end subscribes (sharded pub/sub, ``SSUBSCRIBE wq:{q}:ch``) to each
queue it has had an empty receive on; scripts ``SPUBLISH`` there when messages become
available while someone may be waiting (the ``w`` flag an empty receive sets). A message
wakes that queue's parked receives here. Pub/sub can drop messages (a reconnect, a
failover), so every second the parked queues are re-checked anyway: a lost wake-up costs
at most a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import hiredis

from .connection import Address, encode, ssl_context

if TYPE_CHECKING:
    from . import RedisStore

__all__ = ["LOCK_TTL_MS", "Subscriber", "Sweeper"]

log = logging.getLogger("wonderq.redis")

LOCK_TTL_MS = 5000  # a dead holder's sweeper is taken over within this
PASS_S = 1.0  # at most this between two passes (and between two long-poll re-checks)
MIN_PASS_S = 0.02  # at least this: a burst of deadlines is handled in slices
SWEEP_BUDGET = 200  # due entries per queue per script call (~1 ms of Redis time)


class Sweeper:
    """The periodic pass: take or keep the lock; if held, sweep every queue."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.holder = False
        self.passes = 0
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        assert self.store.loop is not None
        self.task = self.store.loop.create_task(self.run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
            self.task = None
        if self.holder:
            # Hand the lease on at once rather than after its TTL.
            self.holder = False
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    self.store.backend.call_node(  # type: ignore[union-attr]
                        self._lock_address(),
                        encode(["EVAL", _RELEASE, 1, "wq:{sweep}:lock", self.store.me]),
                    ),
                    1.0,
                )

    def _lock_address(self) -> Address:
        from . import key_slot

        backend = self.store.backend
        assert backend is not None
        slot = key_slot(b"sweep") if backend.cluster else 0
        address = backend.address_for(slot)
        assert address is not None
        return address

    async def run(self) -> None:
        while True:
            pause = PASS_S
            try:
                pause = await self.pass_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("sweeper pass failed: %s", exc)
            await asyncio.sleep(pause)

    async def pass_once(self) -> float:
        """One pass; returns how long to sleep before the next."""
        from . import REG_KEYS, wait

        store = self.store
        self.passes += 1
        if store.subscriber is not None:
            store.subscriber.tick()
        held = await wait(store.registry("lock", [store.me, LOCK_TTL_MS]))
        if held != 1:
            if self.holder:
                log.info("the sweeper lease went to another server")
            self.holder = False
            return PASS_S
        if not self.holder:
            log.info("this server now holds the sweeper lease")
        self.holder = True
        names = [
            n.decode() for n in await wait(store.command_on(REG_KEYS[0], ["HKEYS", REG_KEYS[0]]))
        ]
        pending = [
            (name, wait(store.script("sweep", name, [b"%d" % SWEEP_BUDGET]))) for name in names
        ]
        pause = PASS_S
        for name, fut in pending:
            try:
                processed, _moves, outbox, next_ms = await fut
            except Exception as exc:
                log.debug("sweeping %s failed: %s", name, exc)
                continue
            if processed < 0:
                continue
            if outbox > 0:
                await store.drain_outbox(name)
            if processed >= SWEEP_BUDGET:
                pause = MIN_PASS_S
            elif next_ms >= 0:
                pause = min(pause, max(MIN_PASS_S, next_ms / 1000))
        if self.passes % 5 == 0:
            await store.finish_deletes()
            if "default" not in names:
                # A Redis that lost everything (restarted without persistence, flushed):
                # the seed routes' queue comes back, empty.
                await wait(store.put_queue("default", None))
        return pause


_RELEASE = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
)


class _PubSubConnection(asyncio.Protocol):
    """A connection in subscribe mode: every reply is a push."""

    def __init__(self, owner: Subscriber, address: Address) -> None:
        self.owner = owner
        self.address = address
        self.reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None
        self.channels: set[bytes] = set()  # confirmed subscriptions
        self.asked: set[bytes] = set()  # subscriptions sent
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            reply = self.reader.gets()
            if reply is False:
                return
            if isinstance(reply, list) and len(reply) >= 3:
                kind = reply[0]
                if kind == b"smessage":
                    self.owner.message(reply[1])
                elif kind == b"ssubscribe":
                    self.channels.add(reply[1])
                elif kind == b"sunsubscribe":
                    # The slot moved (or was unsubscribed): subscribe again where it is now.
                    self.channels.discard(reply[1])
                    self.asked.discard(reply[1])
            elif isinstance(reply, hiredis.ReplyError):
                if str(reply).startswith("MOVED"):
                    self.owner.store.backend.refresh_soon()  # type: ignore[union-attr]
                self.asked.clear()  # which one failed is unknown: ask again next tick

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.owner.lost(self)

    def subscribe(self, channel: bytes) -> None:
        if channel in self.asked or self.transport is None or self.closed:
            return
        self.asked.add(channel)
        self.transport.write(encode([b"SSUBSCRIBE", channel]))


class Subscriber:
    """The sharded pub/sub side of long polling, one subscribe-mode connection per primary."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.wanted: set[str] = set()
        self.conns: dict[Address, _PubSubConnection] = {}
        self.connecting: set[Address] = set()
        self.woken = 0

    def want(self, queue: str) -> None:
        """Be woken for ``queue`` from now on (after an empty receive on it)."""
        if queue not in self.wanted:
            self.wanted.add(queue)
        self._subscribe(queue)

    def _subscribe(self, queue: str) -> None:
        backend = self.store.backend
        if backend is None:
            return
        keys = self.store.queue_keys(queue)
        address = backend.address_for(keys.slot)
        if address is None:
            return
        conn = self.conns.get(address)
        if conn is None or conn.closed:
            self._connect(address)
            return
        conn.subscribe(f"wq:{keys.tag}:ch".encode())

    def _connect(self, address: Address) -> None:
        if address in self.connecting:
            return
        self.connecting.add(address)
        loop = self.store.loop
        assert loop is not None
        loop.create_task(self._open(address))

    async def _open(self, address: Address) -> None:
        backend = self.store.backend
        assert backend is not None
        loop = self.store.loop
        assert loop is not None
        try:
            conn = _PubSubConnection(self, address)
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: conn, address[0], address[1], ssl=ssl_context(backend.target)
                ),
                backend.connect_timeout_s,
            )
            for hello in backend.hello:
                if not hello.startswith(b"*2\r\n$6\r\nSELECT"):
                    conn.transport.write(hello)  # type: ignore[union-attr]
            self.conns[address] = conn
            for queue in list(self.wanted):
                self._subscribe(queue)
        except (OSError, asyncio.TimeoutError) as exc:
            log.debug("cannot open the pub/sub connection to %s: %s", address, exc)
        finally:
            self.connecting.discard(address)

    def lost(self, conn: _PubSubConnection) -> None:
        if self.conns.get(conn.address) is conn:
            del self.conns[conn.address]

    def message(self, channel: bytes) -> None:
        start, end = channel.find(b"{"), channel.rfind(b"}")
        queue = channel[start + 1 : end].decode()
        listener = self.store.listener
        if queue in listener.waiting:
            self.woken += 1
            listener.available(queue)

    def tick(self) -> None:
        """Every pass: (re)subscribe what is wanted, and re-check every parked queue."""
        listener = self.store.listener
        for queue in list(listener.waiting):
            self.wanted.add(queue)
        for queue in list(self.wanted):
            self._subscribe(queue)
        for queue in list(listener.waiting):
            listener.available(queue)

    def close(self) -> None:
        for conn in self.conns.values():
            conn.closed = True
            if conn.transport is not None:
                conn.transport.close()
        self.conns.clear()


def _unused(*_: Any) -> None:
    pass
