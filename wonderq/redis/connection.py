"""The thin RESP path to Redis: pipelined connections, per-turn coalescing, routing.

Why not redis-py on the hot path: an awaited redis-py call costs ~49 µs of client CPU, a raw
RESP write parsed by ``hiredis.Reader`` ~6 µs (research/scaleout.md §1). Here a request is
bytes appended to a per-connection buffer plus a callback in a FIFO; every request of one
event-loop turn leaves in one ``write`` (the flush is a ``call_soon``), and replies come back
in order, so the FIFO pairs each reply with its callback.

Failure rules (DESIGN.md "Stores"): a request is retried only where it surely did not run —
a refused or failed connect (nothing was written), ``MOVED``/``ASK`` (another node owns the
slot), ``TRYAGAIN``, ``CLUSTERDOWN``, ``NOSCRIPT``, ``LOADING`` and ``READONLY`` (refused
before running). A request that was written and then lost its connection or its answer
(timeout) fails with :class:`~wonderq.errors.BackendUnavailable`: it may have run, and a
blind retry could publish twice.

Topology: ``redis://`` / ``rediss://`` is one node; ``redis+sentinel://h:p[,h:p]/master``
asks the sentinels for the primary (again after a failover); ``redis+cluster://h:p`` reads
``CLUSTER SLOTS`` and keeps one connection pool per primary, refreshed on ``MOVED``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis

from ..errors import BackendUnavailable

__all__ = [
    "Address",
    "Backend",
    "ConnectFailed",
    "Node",
    "RedisTarget",
    "ReplyError",
    "encode",
    "parse_url",
]

log = logging.getLogger("wonderq.redis")

ReplyError = hiredis.ReplyError
Reply = Any  # bytes | int | list | None | ReplyError | Exception
Callback = Callable[[Reply], None]

# How long a request that may be retried (refused connect, TRYAGAIN, CLUSTERDOWN) keeps
# trying, and the pause between tries: a failover takes a few seconds; past the command
# timeout the caller gets 503 anyway.
_RETRY_PAUSE_S = 0.05


class ConnectFailed(Exception):
    """The connection could not be made: nothing was sent, a retry is safe."""


class Lost(BackendUnavailable):
    """A request was written but its answer never came (connection lost or timeout)."""


Address = tuple[str, int]


def encode(args: Sequence[bytes | str | int]) -> bytes:
    """One command in RESP (an array of bulk strings)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, int):
            arg = b"%d" % arg
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


def bulk(arg: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(arg), arg)


@dataclass
class RedisTarget:
    """What ``--backend`` names."""

    mode: str  # "single", "sentinel" or "cluster"
    addresses: list[Address]
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    master: str = ""  # sentinel: the monitored primary's name
    options: dict[str, str] = field(default_factory=dict)


def parse_url(url: str) -> RedisTarget:
    """``redis://[user:pass@]host:port/db``, ``rediss://`` (TLS),
    ``redis+sentinel://host:port[,host:port]/master``, ``redis+cluster://host:port[,...]``.
    Raises ValueError with a sentence saying what is wrong."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    modes = {
        "redis": ("single", False),
        "rediss": ("single", True),
        "redis+sentinel": ("sentinel", False),
        "rediss+sentinel": ("sentinel", True),
        "redis+cluster": ("cluster", False),
        "rediss+cluster": ("cluster", True),
    }
    if scheme not in modes:
        raise ValueError(
            "must be a URL redis://host:port/db, rediss://..., "
            "redis+sentinel://host:port/master or redis+cluster://host:port"
        )
    mode, tls = modes[scheme]
    netloc = parts.netloc
    username = password = None
    if "@" in netloc:
        creds, netloc = netloc.rsplit("@", 1)
        if ":" in creds:
            user, pw = creds.split(":", 1)
            username, password = (unquote(user) or None), unquote(pw)
        else:
            password = unquote(creds)
    addresses: list[Address] = []
    default_port = 26379 if mode == "sentinel" else 6379
    for item in netloc.split(","):
        if not item:
            continue
        if item.startswith("["):  # [::1]:6379
            host, _, rest = item[1:].partition("]")
            port_text = rest.lstrip(":")
        else:
            host, _, port_text = item.partition(":")
        try:
            port = int(port_text) if port_text else default_port
        except ValueError:
            raise ValueError(f"bad port in {item!r}") from None
        if not host or not 0 < port < 65536:
            raise ValueError(f"bad address {item!r}")
        addresses.append((host, port))
    if not addresses:
        raise ValueError("names no host")
    path = parts.path.strip("/")
    db = 0
    master = ""
    if mode == "sentinel":
        if not path:
            raise ValueError("redis+sentinel:// needs the primary's name: /mymaster")
        master = path
    elif path:
        if mode == "cluster":
            raise ValueError("a cluster has only database 0")
        if not path.isdigit():
            raise ValueError(f"database {path!r} is not a number")
        db = int(path)
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    return RedisTarget(mode, addresses, db, username, password, tls, master, options)


# ---- one connection ----------------------------------------------------------------------


class Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: a write buffer flushed once per loop turn and a FIFO of
    callbacks answered in order. Not reused after it breaks: the node makes a new one."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.loop = node.loop
        self.reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None
        self.pending: collections.deque[Callback] = collections.deque()
        self.sent_at: collections.deque[float] = collections.deque()
        self.wbuf: list[bytes] = []
        self.waiting: list[Callback] = []  # callbacks of wbuf entries, not yet written
        self.flush_scheduled = False
        self.broken: BaseException | None = None
        self.ready = False
        self.connect_task: asyncio.Task[None] | None = None

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        pending = self.pending
        sent_at = self.sent_at
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                self._break(Lost(f"Redis protocol error: {exc}"))
                return
            if reply is False:
                return
            if not pending:
                self._break(Lost("Redis sent an answer nobody asked for"))
                return
            callback = pending.popleft()
            sent_at.popleft()
            try:
                callback(reply)
            except Exception:
                log.exception("a Redis reply's callback failed")

    def connection_lost(self, exc: Exception | None) -> None:
        self._break(Lost(f"lost the connection to Redis at {self.node.name}"))

    # -- sending
    def send(self, payload: bytes, callback: Callback) -> None:
        if self.broken is not None:
            self.loop.call_soon(callback, ConnectFailed(str(self.broken)))
            return
        self.wbuf.append(payload)
        self.waiting.append(callback)
        if not self.flush_scheduled and self.ready:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write every request of this turn at once."""
        self.flush_scheduled = False
        if not self.wbuf or self.transport is None or self.broken is not None:
            return
        data = b"".join(self.wbuf)
        callbacks = self.waiting
        self.wbuf = []
        self.waiting = []
        self.pending.extend(callbacks)
        now = self.loop.time()
        self.sent_at.extend([now] * len(callbacks))
        self.transport.write(data)

    def overdue(self, now: float, timeout_s: float) -> bool:
        return bool(self.sent_at) and now - self.sent_at[0] > timeout_s

    def _break(self, exc: BaseException) -> None:
        """Fail everything: what was written may have run (Lost), what was not is safe to
        retry (ConnectFailed)."""
        if self.broken is None:
            self.broken = exc
        self.node.forget(self)
        pending, self.pending = self.pending, collections.deque()
        self.sent_at.clear()
        waiting, self.waiting = self.waiting, []
        self.wbuf = []
        if self.transport is not None:
            self.transport.abort()
        for callback in pending:
            _safe(callback, exc if isinstance(exc, Lost) else Lost(str(exc)))
        for callback in waiting:
            _safe(callback, ConnectFailed(str(exc)))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self._break(Lost("connection closed"))


def _safe(callback: Callback, reply: Reply) -> None:
    try:
        callback(reply)
    except Exception:
        log.exception("a Redis reply's callback failed")


class Node:
    """A Redis server at one address: a small pool of connections (``pool`` of them, used
    round robin per turn), each made on first use and again after it breaks."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        address: Address,
        target: RedisTarget,
        pool: int,
        connect_timeout_s: float,
        hello: list[bytes],
    ) -> None:
        self.loop = loop
        self.address = address
        self.name = f"{address[0]}:{address[1]}"
        self.target = target
        self.connect_timeout_s = connect_timeout_s
        self.hello = hello  # commands sent first on every connection (AUTH, SELECT, ...)
        self.conns: list[Connection | None] = [None] * max(1, pool)
        self.turn = 0
        self.current: Connection | None = None  # the connection of this loop turn
        self.closed = False

    def connection(self) -> Connection:
        i = self.turn % len(self.conns)
        conn = self.conns[i]
        if conn is None or conn.broken is not None:
            conn = Connection(self)
            self.conns[i] = conn
            conn.connect_task = self.loop.create_task(self._connect(conn))
        return conn

    def send(self, payload: bytes, callback: Callback) -> None:
        if self.closed:
            self.loop.call_soon(callback, ConnectFailed("the store is closed"))
            return
        conn = self.current
        if conn is None or conn.broken is not None or not conn.flush_scheduled:
            # A new turn (nothing waits to be flushed): the next connection of the pool.
            self.turn += 1
            conn = self.current = self.connection()
        conn.send(payload, callback)

    async def _connect(self, conn: Connection) -> None:
        host, port = self.address
        ssl_ctx = ssl_context(self.target)
        try:
            await asyncio.wait_for(
                self.loop.create_connection(lambda: conn, host, port, ssl=ssl_ctx),
                self.connect_timeout_s,
            )
            sock = conn.transport.get_extra_info("socket") if conn.transport else None
            if sock is not None:
                import socket

                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, asyncio.TimeoutError) as exc:
            conn._break(ConnectFailed(f"cannot connect to Redis at {self.name}: {exc}"))
            return
        if self.hello:
            # AUTH/SELECT first, in the same write as whatever was queued meanwhile.
            conn.wbuf[:0] = self.hello
            conn.waiting[:0] = [_check_hello] * len(self.hello)
        conn.ready = True
        conn.flush()

    def forget(self, conn: Connection) -> None:
        for i, c in enumerate(self.conns):
            if c is conn:
                self.conns[i] = None

    def check_timeouts(self, now: float, timeout_s: float) -> None:
        for conn in self.conns:
            if conn is not None and conn.overdue(now, timeout_s):
                conn._break(Lost(f"Redis at {self.name} did not answer within {timeout_s:g} s"))

    def close(self) -> None:
        self.closed = True
        for conn in self.conns:
            if conn is not None:
                if conn.connect_task is not None:
                    conn.connect_task.cancel()
                conn.close()


def ssl_context(target: RedisTarget) -> ssl.SSLContext | None:
    """The TLS context of a ``rediss://`` target (``?ssl_cert_reqs=none``: no verification)."""
    if not target.tls:
        return None
    ctx = ssl.create_default_context()
    if target.options.get("ssl_cert_reqs") == "none":
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _check_hello(reply: Reply) -> None:
    if isinstance(reply, (ReplyError, Exception)):
        log.error("Redis refused the connection set-up: %s", reply)


# ---- the backend: routing, retries, topology ---------------------------------------------


class Backend:
    """All the nodes of one deployment and the rule of which one serves a slot."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        target: RedisTarget,
        *,
        pool: int = 1,
        timeout_s: float = 2.0,
        connect_timeout_s: float = 1.0,
    ) -> None:
        self.loop = loop
        self.target = target
        self.pool = pool
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.nodes: dict[Address, Node] = {}
        self.sentinels: dict[Address, Node] = {}  # sentinel mode: the sentinels themselves
        self.slots: list[Address] = []  # cluster: the primary of each of the 16384 slots
        self.primary: Address | None = None  # single and sentinel
        self.refreshing: asyncio.Future[None] | None = None
        self.last_refresh = 0.0
        self.errors = 0  # answers that became BackendUnavailable
        self.retries = 0
        self.reachable = True
        self._ticker: asyncio.TimerHandle | None = None
        hello: list[bytes] = []
        if target.password is not None:
            if target.username:
                hello.append(encode([b"AUTH", target.username, target.password]))
            else:
                hello.append(encode([b"AUTH", target.password]))
        if target.db and target.mode != "cluster":
            hello.append(encode([b"SELECT", target.db]))
        self.hello = hello
        if target.mode == "single":
            self.primary = target.addresses[0]

    @property
    def cluster(self) -> bool:
        return self.target.mode == "cluster"

    def node(self, address: Address) -> Node:
        node = self.nodes.get(address)
        if node is None:
            node = Node(
                self.loop, address, self.target, self.pool, self.connect_timeout_s, self.hello
            )
            self.nodes[address] = node
        return node

    def start(self) -> None:
        self._tick()

    def flush_now(self) -> None:
        """Write what this turn queued on every node now rather than in the next loop turn
        (the store's coalesced publishes are sent from a callback late in the turn)."""
        for node in self.nodes.values():
            conn = node.current
            if conn is not None and conn.flush_scheduled:
                conn.flush()

    def _tick(self) -> None:
        now = self.loop.time()
        for node in list(self.nodes.values()):
            node.check_timeouts(now, self.timeout_s)
        self._ticker = self.loop.call_later(0.1, self._tick)

    def close(self) -> list[asyncio.Task[None]]:
        """Close every connection; returns the connect tasks it cancelled (await them so
        the loop does not close under them)."""
        if self._ticker is not None:
            self._ticker.cancel()
        tasks = []
        for node in [*self.nodes.values(), *self.sentinels.values()]:
            tasks += [c.connect_task for c in node.conns if c is not None and c.connect_task]
            node.close()
        return [t for t in tasks if not t.done()]

    # -- topology
    async def refresh(self) -> None:
        """Learn who serves what (CLUSTER SLOTS, or the sentinels' primary); one at a time."""
        if self.refreshing is not None:
            await asyncio.shield(self.refreshing)
            return
        self.refreshing = self.loop.create_future()
        try:
            if self.target.mode == "cluster":
                await self._refresh_cluster()
            elif self.target.mode == "sentinel":
                await self._refresh_sentinel()
            self.last_refresh = self.loop.time()
        finally:
            fut, self.refreshing = self.refreshing, None
            fut.set_result(None)

    def refresh_soon(self) -> None:
        # At most a few refreshes per second, however many MOVED answers arrive.
        if self.refreshing is None and self.loop.time() - self.last_refresh > 0.05:
            self.loop.create_task(self._refresh_quietly())

    async def _refresh_quietly(self) -> None:
        try:
            await self.refresh()
        except Exception as exc:
            log.warning("refreshing the Redis topology failed: %s", exc)

    async def _refresh_cluster(self) -> None:
        candidates = list(dict.fromkeys([*self.slot_owners(), *self.target.addresses]))
        last: BaseException | None = None
        for address in candidates:
            try:
                reply = await self.call_node(address, encode([b"CLUSTER", b"SLOTS"]))
            except Exception as exc:
                last = exc
                continue
            if isinstance(reply, ReplyError):
                last = reply
                continue
            slots: list[Address] = [address] * 16384
            for entry in reply:
                lo, hi, primary = entry[0], entry[1], entry[2]
                host = primary[0].decode() or address[0]
                owner = (host, int(primary[1]))
                for s in range(lo, hi + 1):
                    slots[s] = owner
            self.slots = slots
            return
        raise BackendUnavailable(f"no Redis cluster node answered CLUSTER SLOTS: {last}")

    def slot_owners(self) -> list[Address]:
        return list(dict.fromkeys(self.slots)) if self.slots else []

    async def _refresh_sentinel(self) -> None:
        last: BaseException | None = None
        for address in self.target.addresses:
            try:
                reply = await self.call_node(
                    address,
                    encode([b"SENTINEL", b"get-master-addr-by-name", self.target.master]),
                    hello=False,
                )
            except Exception as exc:
                last = exc
                continue
            if isinstance(reply, list) and len(reply) == 2:
                self.primary = (reply[0].decode(), int(reply[1]))
                return
            last = ReplyError(f"sentinel {address} does not know {self.target.master!r}")
        raise BackendUnavailable(f"no sentinel named the primary: {last}")

    def primaries(self) -> list[Address]:
        if self.target.mode == "cluster":
            return self.slot_owners()
        return [self.primary] if self.primary is not None else []

    def address_for(self, slot: int) -> Address | None:
        if self.target.mode == "cluster":
            return self.slots[slot] if self.slots else None
        return self.primary

    # -- requests
    def call_node(
        self, address: Address, payload: bytes, hello: bool = True
    ) -> asyncio.Future[Reply]:
        """One command to one node, as a future (topology and admin; not the hot path)."""
        fut: asyncio.Future[Reply] = self.loop.create_future()
        if hello:
            node = self.node(address)
        else:
            found = self.sentinels.get(address)
            if found is None:
                plain = RedisTarget("single", [address], tls=self.target.tls)
                found = Node(self.loop, address, plain, 1, self.connect_timeout_s, [])
                self.sentinels[address] = found
            node = found

        def done(reply: Reply) -> None:
            if fut.done():
                return
            if isinstance(reply, Exception) and not isinstance(reply, ReplyError):
                fut.set_exception(reply)
            else:
                fut.set_result(reply)

        node.send(payload, done)
        return fut

    def execute(
        self,
        slot: int,
        payload: bytes,
        callback: Callback,
        *,
        alt: bytes | Callable[[], bytes] = b"",
    ) -> None:
        """Send ``payload`` to the primary of ``slot``; ``callback`` gets the reply (maybe a
        ReplyError the caller handles) or a BackendUnavailable. ``alt`` is sent instead after
        a NOSCRIPT (the EVAL form of an EVALSHA)."""
        Request(self, slot, payload, callback, alt).send()


class Request:
    """One routed request and its retry state."""

    __slots__ = ("alt", "asking", "backend", "callback", "deadline", "payload", "slot")

    def __init__(
        self,
        backend: Backend,
        slot: int,
        payload: bytes,
        callback: Callback,
        alt: bytes | Callable[[], bytes],
    ) -> None:
        self.backend = backend
        self.slot = slot
        self.payload = payload
        self.callback = callback
        self.alt = alt
        self.deadline = 0.0
        self.asking: Address | None = None

    def send(self) -> None:
        backend = self.backend
        address = self.asking or backend.address_for(self.slot)
        if address is None:
            self.retry_after_refresh("no Redis node is known for this queue yet")
            return
        node = backend.node(address)
        if self.asking is not None:
            node.send(b"*1\r\n$6\r\nASKING\r\n", _ignore)
            self.asking = None
        node.send(self.payload, self.answer)

    def answer(self, reply: Reply) -> None:
        backend = self.backend
        if type(reply) is ReplyError:
            message = str(reply)
            head = message.split(" ", 1)[0]
            if head == "NOSCRIPT" and self.alt:
                alt = self.alt
                self.payload, self.alt = (alt() if callable(alt) else alt), b""
                self.send()
                return
            if head == "MOVED":
                backend.refresh_soon()
                self._redirect(message, asking=False)
                return
            if head == "ASK":
                self._redirect(message, asking=True)
                return
            if head in ("TRYAGAIN", "CLUSTERDOWN", "LOADING", "READONLY", "MASTERDOWN"):
                if head in ("READONLY", "CLUSTERDOWN", "MASTERDOWN"):
                    backend.refresh_soon()
                self.retry_later(message)
                return
            backend.reachable = True
            self.callback(reply)
            return
        if isinstance(reply, ConnectFailed):
            backend.reachable = False
            if backend.target.mode != "single":
                backend.refresh_soon()
            self.retry_later(str(reply))
            return
        if isinstance(reply, Exception):
            backend.reachable = not isinstance(reply, Lost)
            backend.errors += 1
            self.callback(reply if isinstance(reply, BackendUnavailable) else Lost(str(reply)))
            return
        backend.reachable = True
        self.callback(reply)

    def _redirect(self, message: str, asking: bool) -> None:
        try:
            _, _slot, where = message.split(" ")
            host, _, port = where.rpartition(":")
            address = (host, int(port))
        except ValueError:
            self.callback(Lost(f"Redis answered {message!r}"))
            return
        self.backend.retries += 1
        if asking:
            self.asking = address
        elif self.backend.slots:
            self.backend.slots[self.slot] = address
        self.send()

    def retry_later(self, why: str) -> None:
        backend = self.backend
        now = backend.loop.time()
        if not self.deadline:
            self.deadline = now + backend.timeout_s
        if now >= self.deadline:
            backend.errors += 1
            self.callback(BackendUnavailable(f"Redis is unavailable: {why}"))
            return
        backend.retries += 1
        backend.loop.call_later(_RETRY_PAUSE_S, self.send)

    def retry_after_refresh(self, why: str) -> None:
        backend = self.backend
        backend.refresh_soon()
        self.retry_later(why)


def _ignore(reply: Reply) -> None:
    pass


def monotonic() -> float:
    return time.monotonic()
