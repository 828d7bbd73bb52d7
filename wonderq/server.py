"""Lifecycle: the event loop, the engine, the listening socket, the timers, the signals.

The server owns the clock (monotonic milliseconds, :func:`wonderq.api.now_ms`) and exactly one
expiry timer, armed at the engine's next deadline (never one timer per message). When it
fires, leases and delays are expired in bounded slices with I/O in between, and the waiters
of queues that gained messages are answered.

Shutdown on SIGTERM/SIGINT: stop accepting, answer parked long polls with empty lists, finish
the requests in flight (closing each connection after its last answer), close idle keep-alive
connections at once, flush and close the log (with ``--data-dir``), and exit 0; connections
still open after ``shutdown_timeout_s`` are cut.

Durability (``--data-dir``, docs/DURABILITY.md): :meth:`Server.open` locks the directory and
replays the log into the engine before the server listens; the log's writer starts with the
event loop, the API appends every durable change to it, and shutdown closes it last.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import gc
import logging
import os
import signal
import socket
import time
from typing import TYPE_CHECKING, Any

import uvloop

from . import _core
from .api import Api, now_ms
from .config import Settings
from .protocol import HttpProtocol, protocol_factory, refresh_date

if TYPE_CHECKING:  # imported for real only with --data-dir (see Server._recover)
    from .wal import Wal

__all__ = ["ExpiryTimer", "Server", "ServerError", "bind"]

log = logging.getLogger("wonderq")

# Heap entries handled per expiry slice; a burst of a million expirations is processed
# 1024 at a time with the event loop's I/O in between, so no request waits long behind it.
# bench/bench_core.py (1M-lease burst): budget 2048 took up to 4.9 ms a call under load,
# 4096 up to 12.7 ms; 1024 keeps a slice near 1-2 ms for the same total time.
EXPIRE_BUDGET = 1024
_NOT_ARMED = 2**63
_BACKLOG = 1024
# In the data directory: held (flock) while a server uses it, so two never write one log.
_LOCK_FILE = "wonderq.lock"


class ServerError(Exception):
    """A start-up failure worth one line (address in use, cannot resolve the host)."""


class ExpiryTimer:
    """The single timer of the whole server, armed at the engine's next deadline."""

    def __init__(self, loop: asyncio.AbstractEventLoop, broker: Any) -> None:
        self._loop = loop
        self._broker = broker
        self._handle: asyncio.Handle | None = None
        self.armed_ms = _NOT_ARMED  # the deadline armed for; _NOT_ARMED when idle
        self.on_expired: Any = lambda: None  # called after a slice expired something

    def arm(self, deadline_ms: int) -> None:
        """Fire at ``deadline_ms`` (monotonic ms), replacing a later arming."""
        if self._handle is not None:
            self._handle.cancel()
        # +1 ms: the loop's timers round to whole ms against a cached clock, and firing a
        # hair early would find nothing due and have to re-arm.
        delay_s = max(0, deadline_ms - now_ms() + 1) / 1000
        self._handle = self._loop.call_later(delay_s, self._fire)
        self.armed_ms = deadline_ms

    def _fire(self) -> None:
        self._handle = None
        self.armed_ms = _NOT_ARMED
        now = now_ms()
        try:
            processed = self._broker.expire(now, EXPIRE_BUDGET)
            if processed:
                self.on_expired()
        except Exception:
            log.exception("expiring leases failed")
            processed = 0
        if processed >= EXPIRE_BUDGET:
            # More may be due: continue after the loop has served I/O once.
            self._handle = self._loop.call_soon(self._fire)
            self.armed_ms = now
            return
        deadline_ms = self._broker.next_deadline()
        if deadline_ms >= 0:
            self.arm(deadline_ms)

    def stop(self) -> None:
        """Cancel the timer (shutdown)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self.armed_ms = _NOT_ARMED


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0 = any free port).

    Raises ServerError with a one-line reason when the address cannot be used.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServerError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        # Lets a restarted server bind while old connections sit in TIME_WAIT; unlike
        # SO_REUSEPORT it does not let two live servers share the port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(_BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        if exc.errno == errno.EADDRINUSE:
            reason = "the address is already in use (is another server running?)"
        raise ServerError(f"cannot listen on {host}:{port}: {reason}") from None
    return sock


def wall_ms() -> int:
    """Wall-clock milliseconds: the log stores the end of a delay as wall-clock time."""
    return time.time_ns() // 1_000_000


def _lock_data_dir(data_dir: str) -> int:
    """Create ``data_dir`` if needed, check that files can be created in it, and lock it for
    this process (the fd holds the lock until the process exits). Raises OSError, or
    ServerError if another server holds the lock."""
    os.makedirs(data_dir, exist_ok=True)
    # A probe rather than os.access(): root passes every permission check, but not a
    # read-only file system or an immutable directory. (*.tmp is what recovery cleans up.)
    probe = os.path.join(data_dir, f"probe-{os.getpid()}.tmp")
    os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
    os.unlink(probe)
    fd = os.open(os.path.join(data_dir, _LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ServerError(f"the data directory {data_dir} is in use by another server") from None
    os.ftruncate(fd, 0)
    os.write(fd, b"%d\n" % os.getpid())
    return fd


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


class _SqsListener:
    """INTERIM glue: what the SQS face's store reports reaches both faces' long polls."""

    def __init__(self, face: Any, api: Api) -> None:
        self._face = face
        self._api = api
        self.waiting = face.waiters.waiting  # the store skips the call for other queues

    def available(self, queue: str) -> None:
        self._face.waiters.available(queue)

    def available_any(self) -> None:
        self._face.waiters.available_any()
        self._api.wake_all()


def _sqs_face(
    settings: Settings, broker: Any, wal: Any, api: Api, loop: asyncio.AbstractEventLoop
) -> Any:
    """INTERIM glue, until routing.py and longpoll.py land: the Amazon SQS face over a store
    that shares the Api's engine (and log), so both faces see the same queues and messages.
    The store runs its own expiry timer on the shared engine (two timers are harmless: the
    first to fire expires); sends through SQS wake WonderQ's long polls by ``api.wake``."""
    from .sqs import SqsFace
    from .store import DurableStore, MemoryStore

    if wal is None:
        store: MemoryStore = MemoryStore(settings, broker=broker)
    else:
        store = DurableStore(settings, broker=broker)
        store.wal = wal
    face = SqsFace(
        store,
        call_later=loop.call_later,
        account=settings.sqs_account,
        region=settings.sqs_region,
        base_url=settings.sqs_base_url,
    )
    MemoryStore.start(store, loop, _SqsListener(face, api))

    def on_publish(queue: str) -> None:
        if queue in api.waiters:
            api.wake(queue)

    face.on_publish = on_publish
    return face


class Server:
    """One WonderQ server process: run it with :meth:`run`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.connections: set[HttpProtocol] = set()
        self.shutting_down = False
        self.api: Api | None = None
        self.broker: Any = None  # the engine, made by open()
        self.wal: Wal | None = None  # the write-ahead log; None without --data-dir
        self._lock_fd: int | None = None
        self._stop: asyncio.Event | None = None
        self._date_timer: asyncio.TimerHandle | None = None

    def open(self) -> None:
        """Make the engine and, with ``--data-dir``, lock the directory and replay the log
        into the engine (blocking: call before listening). Raises ServerError with a one-line
        reason when the directory cannot be used or its log cannot be read."""
        if self.broker is not None:
            return
        settings = self.settings
        self.broker = _core.Broker(
            visibility_ms=settings.visibility_timeout_ms,
            max_message_bytes=settings.max_message_bytes,
            max_batch=settings.max_batch,
            max_memory=settings.max_memory,
            # The engine records dead-letter moves only for the log (else nobody takes them).
            track_dead_letters=settings.data_dir is not None,
        )
        if settings.data_dir is not None:
            self.wal = self._recover(settings.data_dir)

    def _recover(self, data_dir: str) -> Wal:
        from .wal import Wal, WalCorruptError

        settings = self.settings
        t0 = time.perf_counter()
        try:
            self._lock_fd = _lock_data_dir(data_dir)
            wal = Wal(data_dir, fsync=settings.fsync, compact_min_bytes=settings.compact_min_bytes)
            with wal.recover() as state:
                read_s = time.perf_counter() - t0
                restored = state.load_into(self.broker, now_ms(), wall_ms())
                queues = len(state.queues)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ServerError(f"cannot use the data directory {data_dir}: {reason}") from None
        except (WalCorruptError, _core.EngineError) as exc:
            raise ServerError(f"cannot recover the log in {data_dir}: {exc}") from None
        log.info(
            "recovered %d messages in %d queues from %s in %.3f s (read %.3f s); fsync %s",
            restored,
            queues,
            data_dir,
            time.perf_counter() - t0,
            read_s,
            settings.fsync,
        )
        return wal

    def run(self, sock: socket.socket) -> int:
        """Serve on the listening ``sock`` until SIGTERM/SIGINT; returns the exit status."""
        return uvloop.run(self.serve(sock))

    async def serve(self, sock: socket.socket) -> int:
        """The server's whole life inside the event loop."""
        settings = self.settings
        loop = asyncio.get_running_loop()
        self.open()
        broker = self.broker
        wal = self.wal
        if wal is not None:
            from .wal import BrokerSnapshotSource

            try:
                await wal.start(BrokerSnapshotSource(broker, now_ms, wall_ms))
            except OSError as exc:
                log.error("cannot open the log in %s: %s", settings.data_dir, exc)
                return 1
        expiry = ExpiryTimer(loop, broker)
        api = Api(
            broker,
            max_batch=settings.max_batch,
            expiry=expiry,
            call_later=loop.call_later,
            connection_count=self.connections.__len__,
            wal=wal,
        )
        # With the log, expiry slices also log the dead-letter moves they made.
        expiry.on_expired = api.wake_all if wal is None else api.after_expiry_logged
        api.sqs = _sqs_face(settings, broker, wal, api, loop)
        self.api = api
        # HttpProtocol is an asyncio protocol by duck typing: compiled, it cannot derive from
        # asyncio.Protocol, so mypy cannot see it as one.
        server = await loop.create_server(
            protocol_factory(api, self, settings),  # type: ignore[arg-type]
            sock=sock,
            backlog=_BACKLOG,
        )
        self._tick_date(loop)
        self._stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)
        # Everything built so far (~24k objects: modules, metrics, the app) lives as long as
        # the server: keep it out of the cyclic collector's full passes, each of which would
        # otherwise scan it all and hold every answer up for milliseconds.
        gc.collect()
        gc.freeze()
        log.info("wonderq listening on %s (pid %d)", _url(sock), os.getpid())
        try:
            await self._stop.wait()
            await self._shutdown(server, api, expiry)
        finally:
            if self._date_timer is not None:
                self._date_timer.cancel()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
        log.info("wonderq stopped")
        return 0

    def _on_signal(self, signum: int) -> None:
        if self.shutting_down:
            log.warning("second %s: closing every connection now", signal.Signals(signum).name)
            for conn in list(self.connections):
                conn.abort()
            return
        log.info("%s: shutting down", signal.Signals(signum).name)
        assert self._stop is not None
        self._stop.set()

    def _tick_date(self, loop: asyncio.AbstractEventLoop) -> None:
        """Refresh the cached Date header, then again at the next wall-clock second."""
        now_s = time.time()
        refresh_date(now_s)
        self._date_timer = loop.call_later(1.0 - now_s % 1.0, self._tick_date, loop)

    async def _shutdown(
        self, server: asyncio.AbstractServer, api: Api, expiry: ExpiryTimer
    ) -> None:
        self.shutting_down = True
        server.close()  # stop accepting
        api.close()  # answer the long polls with empty lists
        for conn in list(self.connections):
            conn.shutdown()  # close idle ones now, the others after their last answer
        deadline = time.monotonic() + self.settings.shutdown_timeout_s
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self.connections:
            log.warning("closing %d connections still busy", len(self.connections))
            for conn in list(self.connections):
                conn.abort()
            await asyncio.sleep(0)
        expiry.stop()
        if self.wal is not None:
            # After the last answers: whatever they appended is written and fsynced.
            await self.wal.close()
            log.info("the log is flushed and closed")
