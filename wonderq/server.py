"""Lifecycle: the event loop, the engine, the listening socket, the timers, the signals.

The server builds the layers (DESIGN.md "Layers"): the store the settings ask for
(:func:`wonderq.store.open_store`), the long polls (its listener), the router and the faces
registered on it, the metrics; then it listens. The store owns what makes leases run out (for
the in-memory and durable stores: the engine's timer heap and one loop timer).

Shutdown on SIGTERM/SIGINT: stop accepting, answer parked long polls with empty lists, finish
the requests in flight (closing each connection after its last answer), close idle keep-alive
connections at once, flush and close the log (with ``--data-dir``), and exit 0; connections
still open after ``shutdown_timeout_s`` are cut.

Durability (``--data-dir``, docs/DURABILITY.md): :meth:`Server.open` locks the directory and
has the store replay the log before the server listens; shutdown closes the store last.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import gc
import logging
import os
import resource
import signal
import socket
import ssl
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import uvloop

from . import _core
from .api import Api
from .auth import (
    AuthConfigError,
    Authorizer,
    is_loopback_host,
    protected_factory,
    protected_mode,
)
from .config import Settings
from .errors import StoreError
from .longpoll import LongPoll
from .metrics import Metrics
from .protocol import HttpProtocol, protocol_factory
from .request import Request, Response, refresh_date
from .routing import Router
from .statuspage import chain_cancel
from .store import Store, open_store

__all__ = ["Server", "ServerError", "bind"]

log = logging.getLogger("wonderq")

_BACKLOG = 1024
# In the data directory: held (flock) while a server uses it, so two never write one log.
_LOCK_FILE = "wonderq.lock"


class ServerError(Exception):
    """A start-up failure worth one line (address in use, cannot resolve the host)."""


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0 = any free port).

    Raises ServerError with a one-line reason when the address cannot be used.
    """
    # An ASCII host goes as bytes: a str is IDNA-encoded first, which imports the idna codec,
    # stringprep and unicodedata (~0.2 MB of resident memory) for nothing.
    name: str | bytes = host.encode("ascii") if host.isascii() else host
    try:
        infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
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


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft limit of open files to the hard one, as far as the system allows: every
    connection is a file descriptor, and a soft limit of 1024 (a common default) would refuse
    connections long before ``--max-connections``. Returns the (soft, hard) limits now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return soft, hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:  # e.g. macOS refuses RLIM_INFINITY
        log.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, exc)
        return soft, hard
    log.info("raised the open-file limit from %d to %d", soft, hard)
    return hard, hard


def _url(sock: socket.socket, tls: bool = False) -> str:
    host, port = sock.getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if tls else 'http'}://{host}:{port}"


class Server:
    """One WonderQ server process: run it with :meth:`run`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.connections: set[HttpProtocol] = set()
        self.shutting_down = False
        self.store: Store | None = None  # made by open()
        self.api: Api | None = None
        self.router: Router | None = None
        self.longpoll: LongPoll | None = None
        self.ssl_context: ssl.SSLContext | None = None  # with --tls-cert/--tls-key
        self.authorizer: Authorizer | None = None  # with --auth-file; the faces ask it
        self._lock_fd: int | None = None
        self._stop: asyncio.Event | None = None
        self._date_timer: asyncio.TimerHandle | None = None

    def open(self) -> None:
        """Make the store and, with ``--data-dir``, lock the directory and replay the log
        (blocking: call before listening). Raises ServerError with a one-line reason when
        the directory cannot be used or its log cannot be read."""
        if self.store is not None:
            return
        settings = self.settings
        if settings.auth_file is not None:
            try:
                self.authorizer = Authorizer.from_file(settings.auth_file)
            except AuthConfigError as exc:
                raise ServerError(f"--auth-file {exc}") from None
        if settings.tls_cert is not None and settings.tls_key is not None:
            from .tls import TlsError, server_context  # with --tls-cert only (start-up memory)

            try:
                self.ssl_context = server_context(settings.tls_cert, settings.tls_key)
            except TlsError as exc:
                raise ServerError(str(exc)) from None
        store = open_store(settings)
        data_dir = settings.data_dir
        if data_dir is None:
            try:
                store.open()  # RedisStore: reachable, Redis 7+, eviction off
            except StoreError as exc:
                raise ServerError(f"cannot use the backend: {exc}") from None
            self.store = store
            return
        from .wal import WalCorruptError

        t0 = time.perf_counter()
        try:
            self._lock_fd = _lock_data_dir(data_dir)
            store.open()
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ServerError(f"cannot use the data directory {data_dir}: {reason}") from None
        except (WalCorruptError, _core.EngineError) as exc:
            raise ServerError(f"cannot recover the log in {data_dir}: {exc}") from None
        log.info(
            "recovered %d messages in %d queues from %s in %.3f s (read %.3f s); fsync %s",
            getattr(store, "recovered", 0),
            getattr(store, "recovered_queues", 0),
            data_dir,
            time.perf_counter() - t0,
            getattr(store, "read_s", 0.0),
            settings.fsync,
        )
        self.store = store

    def run(self, sock: socket.socket) -> int:
        """Serve on the listening ``sock`` until SIGTERM/SIGINT; returns the exit status."""
        soft, _ = raise_fd_limit()
        _core.keep_big_blocks_in_heap()  # big messages' blocks in the heap's huge pages
        if "glibc.malloc.hugetlb=1" in os.environ.get("GLIBC_TUNABLES", ""):
            log.info("the heap uses transparent huge pages (GLIBC_TUNABLES=glibc.malloc.hugetlb=1)")
        if soft != resource.RLIM_INFINITY and soft < self.settings.max_connections + 64:
            log.warning(
                "the open-file limit (%d) is below --max-connections (%d): connections past "
                "it will fail to be accepted; raise it with `ulimit -n`",
                soft,
                self.settings.max_connections,
            )
        return uvloop.run(self.serve(sock))

    async def serve(self, sock: socket.socket) -> int:
        """The server's whole life inside the event loop."""
        settings = self.settings
        loop = asyncio.get_running_loop()
        self.open()
        store = self.store
        assert store is not None
        router = Router()
        longpoll = LongPoll(router.answer, loop.call_later)
        router.set_cancel(longpoll.cancel)
        try:
            started = store.start(loop, longpoll)
            if started is not None:
                await started
        except OSError as exc:
            log.error("cannot start the store: %s", exc)
            return 1
        router.authorizer = self.authorizer  # None: access control off
        api = Api(store, router, longpoll, settings.max_batch)
        api.routes(router.add)
        # The Amazon SQS face (docs/SQS.md) over the same store, parking in the same long polls.
        sqs = LazySqsFace(
            partial(
                _sqs_face,
                store,
                longpoll=longpoll,
                account=settings.sqs_account,
                region=settings.sqs_region,
                base_url=settings.sqs_base_url,
                authorizer=self.authorizer,
                tls=self.ssl_context is not None,
            )
        )
        router.add("POST", "/", sqs.handle)
        router.set_fallback(sqs.handle, "/{account}/{queue}", ("GET", "POST"), sqs.kind)
        api.sqs = sqs
        # Closed event streams of the status page go to it, other deferred requests on.
        router.set_cancel(chain_cancel(api.statuspage.events, longpoll.cancel))
        api.metrics = Metrics(store, router, longpoll, self.connections.__len__)
        self.api, self.router, self.longpoll = api, router, longpoll
        http_factory: Callable[[], Any] = protocol_factory(router, self, settings)
        if self.ssl_context is not None:
            # uvloop's TLS layer decrypts into TlsReads' buffer (wonderq/tls.py says why).
            from .tls import tls_reads

            http_factory = tls_reads(http_factory)
        # Protected mode (docs/SECURITY.md): the factory itself unless a client can be refused.
        factory = protected_factory(
            http_factory,
            settings.host,
            settings.allow_anonymous or settings.auth_file is not None,
            settings.header_timeout_s,
        )
        # HttpProtocol is an asyncio protocol by duck typing: compiled, it cannot derive from
        # asyncio.Protocol, so mypy cannot see it as one.
        server = await loop.create_server(
            factory,
            sock=sock,
            backlog=_BACKLOG,
            ssl=self.ssl_context,
            # A client that stalls in the handshake is held no longer than one in its headers.
            ssl_handshake_timeout=settings.header_timeout_s if self.ssl_context else None,
        )
        self._tick_date(loop)
        self._stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)
        loop.add_signal_handler(signal.SIGHUP, self._on_hangup)
        self._log_access_control()
        # Everything built so far (~24k objects: modules, metrics, the app) lives as long as
        # the server: keep it out of the cyclic collector's full passes, each of which would
        # otherwise scan it all and hold every answer up for milliseconds.
        gc.collect()
        gc.freeze()
        _core.release_free_memory()  # what start-up freed goes back to the system
        log.info(
            "wonderq listening on %s (pid %d)",
            _url(sock, self.ssl_context is not None),
            os.getpid(),
        )
        try:
            await self._stop.wait()
            await self._shutdown(server, store, longpoll)
        finally:
            if self._date_timer is not None:
                self._date_timer.cancel()
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
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

    def _on_hangup(self) -> None:
        """SIGHUP: re-read --auth-file; a bad new file keeps the current one (and says why)."""
        if self.authorizer is None:
            log.info("SIGHUP: no --auth-file to re-read")
            return
        self.authorizer.reload()

    def _log_access_control(self) -> None:
        settings = self.settings
        if self.authorizer is not None:
            log.info(
                "access control: %s from %s",
                self.authorizer.config.summary(),
                settings.auth_file,
            )
        elif protected_mode(settings.host, settings.auth_file, settings.allow_anonymous):
            log.warning(
                "protected mode: listening on %s without --auth-file, so only clients on this "
                "machine are served; give --auth-file (or --allow-anonymous) to serve others",
                settings.host,
            )
        elif settings.allow_anonymous and not is_loopback_host(settings.host):
            log.warning("--allow-anonymous: anyone who can reach %s may do anything", settings.host)

    def _tick_date(self, loop: asyncio.AbstractEventLoop) -> None:
        """Refresh the cached Date header, then again at the next wall-clock second."""
        now_s = time.time()
        refresh_date(now_s)
        self._date_timer = loop.call_later(1.0 - now_s % 1.0, self._tick_date, loop)

    async def _shutdown(
        self, server: asyncio.AbstractServer, store: Store, longpoll: LongPoll
    ) -> None:
        self.shutting_down = True
        server.close()  # stop accepting
        longpoll.close()  # answer the long polls with empty lists
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
        # After the last answers: whatever they stored is flushed.
        closed = store.close()
        if closed is not None:
            await closed
        if self.settings.data_dir is not None:
            log.info("the log is flushed and closed")


def _sqs_face(store: Store, **settings: Any) -> Any:
    from .sqs import SqsFace

    return SqsFace(store, **settings)


class LazySqsFace:
    """The SQS face, imported and built at the first request that may be an SQS one.

    Its modules (XML, attributes, MD5s, ~2 MB resident) are not loaded by a server that never
    sees SQS traffic (bench/locust_sizing.py measures the idle process). Every SQS request has
    a query string (``Action=``), a body (JSON or a form) or an ``X-Amz-Target`` header, so a
    request with none of them, such as the status page's ``GET /`` or a stray 404, is answered
    without the face; anything else goes to :meth:`wonderq.sqs.SqsFace.kind` and on.
    """

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self._face: Any = None

    def face(self) -> Any:
        if self._face is None:
            self._face = self._make()
        return self._face

    def kind(self, req: Request) -> int:
        if self._face is None and not (
            req.query or req.body or any(name == b"x-amz-target" for name, _ in req.headers or ())
        ):
            return 0  # NOT_SQS, without importing the face
        return int(self.face().kind(req))

    def handle(self, req: Request) -> Response | None:
        face = self._face
        if face is None:
            face = self.face()
        return face.fast.handle(req)  # SqsFace.handle without one more Python call

    def dispatch(self, req: Request, kind: int = 0) -> Response | None:
        return self.face().dispatch(req, kind)
