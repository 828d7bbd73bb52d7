"""The API in-process, with a clock the test moves: expiry, delays, leases and long polls
tested by advancing time instead of sleeping.

``Harness()`` builds the layers as ``wonderq.server`` does (store, long polls, router, API,
metrics) over a :class:`FakeLoop` whose ``call_later`` runs on a :class:`FakeClock`; requests
go straight to the router's ``dispatch`` (no sockets). ``h.ask("GET", "/v1/consumer?cid=1")``
answers ``(status, parsed JSON)`` and fails if the answer was deferred; ``h.send(...)``
returns a :class:`Pending` for a request that may be answered later (a long poll), and
``h.advance(seconds)`` moves the clock, running every timer that falls due in order.

With a store that needs a real event loop (the durable store's writer thread), pass
``loop=asyncio.get_running_loop()`` and await ``h.started``; then time is real.
"""

from __future__ import annotations

import heapq
import itertools
import json
from collections.abc import Callable
from typing import Any

from wonderq.api import Api
from wonderq.config import Settings
from wonderq.longpoll import LongPoll
from wonderq.metrics import Metrics
from wonderq.request import Request
from wonderq.routing import Router
from wonderq.store import MemoryStore, Store

START_MS = 1_000_000  # the fake clock's start: any value well above 0


class FakeClock:
    """Monotonic milliseconds that move only when told."""

    def __init__(self, start_ms: int = START_MS) -> None:
        self.ms = start_ms

    def __call__(self) -> int:
        return self.ms


class _Handle:
    def __init__(self, loop: FakeLoop, due_ms: int, fn: Callable[..., Any], args: tuple) -> None:
        self.due_ms = due_ms
        self.fn = fn
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """``call_later`` / ``call_soon`` on a FakeClock; timers run in ``advance()``."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self._timers: list[tuple[int, int, _Handle]] = []
        self._seq = itertools.count()

    def call_later(self, delay_s: float, fn: Callable[..., Any], *args: Any) -> _Handle:
        # Rounded up to whole ms, as a timer may fire late but never early.
        due = self.clock.ms + max(0, -int(-delay_s * 1000 // 1))
        handle = _Handle(self, due, fn, args)
        heapq.heappush(self._timers, (due, next(self._seq), handle))
        return handle

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> _Handle:
        return self.call_later(0, fn, *args)

    def run_due(self) -> None:
        """Run every timer due now (and those they schedule for now)."""
        while self._timers and self._timers[0][0] <= self.clock.ms:
            _, _, handle = heapq.heappop(self._timers)
            if not handle.cancelled:
                handle.fn(*handle.args)

    def advance(self, ms: int) -> None:
        """Move the clock ``ms`` forward, stopping at each timer on the way to run it."""
        end = self.clock.ms + ms
        while True:
            self.run_due()
            nxt = next((t[0] for t in self._timers if not t[2].cancelled), None)
            if nxt is None or nxt > end:
                break
            self.clock.ms = nxt
        self.clock.ms = end
        self.run_due()

    @property
    def pending(self) -> int:
        return sum(1 for t in self._timers if not t[2].cancelled)


class FakeConnection:
    """Takes the answers of deferred requests, as the protocol's connection would."""

    def __init__(self) -> None:
        self.closed = False
        self.answers: dict[Request, Any] = {}

    def complete(self, req: Request, response: Any) -> None:
        if not self.closed:
            self.answers[req] = response


class Pending:
    """A request sent through the harness: its answer now or later."""

    def __init__(self, req: Request, conn: FakeConnection, response: Any) -> None:
        self.req = req
        self.conn = conn
        self.immediate = response is not None
        self._response = response

    @property
    def answered(self) -> bool:
        return self._response is not None or self.req in self.conn.answers

    @property
    def response(self) -> Any:
        if self._response is None:
            self._response = self.conn.answers.get(self.req)
        assert self._response is not None, "not answered yet"
        return self._response

    @property
    def status(self) -> int:
        return int(self.response[0])

    @property
    def json(self) -> Any:
        body = self.response[1]
        return json.loads(body) if body else None


class Harness:
    """WonderQ's API over one store, in this process."""

    def __init__(
        self,
        store: Store | None = None,
        *,
        settings: Settings | None = None,
        loop: Any = None,
        clock: FakeClock | None = None,
    ) -> None:
        self.settings = settings or Settings()
        if loop is None:
            self.clock = clock or FakeClock()
            loop = FakeLoop(self.clock)
        self.loop = loop
        if store is None:
            store = MemoryStore(self.settings, clock=self.clock)
        self.store = store
        self.router = Router()
        self.longpoll = LongPoll(self.router.answer, loop.call_later)
        self.router.set_cancel(self.longpoll.cancel)
        self.api = Api(store, self.router, self.longpoll, self.settings.max_batch)
        self.api.routes(self.router.add)
        self.api.metrics = Metrics(store, self.router, self.longpoll, lambda: 0)
        # The store starts at once; a store that starts asynchronously (the durable store's
        # writer) leaves the awaitable here for the test to await.
        self.started = store.start(loop, self.longpoll)

    def send(
        self, method: str, target: str, body: bytes | str = b"", conn: FakeConnection | None = None
    ) -> Pending:
        """Dispatch one request; its answer may come later."""
        path, _, query = target.partition("?")
        conn = conn or FakeConnection()
        if isinstance(body, str):
            body = body.encode()
        req = Request(method, path, query, body, True, conn)  # type: ignore[arg-type]
        return Pending(req, conn, self.router.dispatch(req))

    def ask(self, method: str, target: str, body: bytes | str = b"") -> tuple[int, Any]:
        """``(status, JSON)`` of a request that must be answered at once."""
        pending = self.send(method, target, body)
        assert pending.immediate, f"{method} {target} was deferred"
        return pending.status, pending.json

    def advance(self, seconds: float) -> None:
        """Move the fake clock, running the timers that fall due (expiry, long-poll ends)."""
        self.loop.advance(round(seconds * 1000))
