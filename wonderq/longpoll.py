"""Long polls: receives parked until messages arrive or their wait ends.

A receive with ``wait > 0`` that finds nothing is parked in the FIFO of waiters of its queue
(:meth:`LongPoll.park`). The store tells the :class:`LongPoll` (its listener) when messages
may have become available (publish, expiry, release, or a wake-up from another server); the
oldest waiter then tries again, and the next ones while it gets something. A waiter is
answered with an empty list when its wait ends, when its queue is deleted, or at shutdown. A
waiter whose connection closed leases nothing.

A waiter does not know the store or the face: it holds an ``attempt()`` that asks the store
(answer now, or a :class:`~wonderq.deferred.Deferred`) and a ``render(value)`` that makes the
response, or None when nothing was available, so both faces (WonderQ's JSON, SQS) park here.
With a store that answers later, one attempt per queue is in flight at a time; a waiter whose
wait ends during its attempt is answered with what the attempt brings.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

from .deferred import Deferred
from .errors import answer_error
from .request import Request, Response

__all__ = ["LongPoll", "Waiter"]

log = logging.getLogger("wonderq.longpoll")

# Finished waiters left in a FIFO before it is compacted (they are skipped when woken anyway).
_STALE_WAITERS = 64


class Waiter:
    """A parked receive: answered by a wake-up, by the end of its wait, or at shutdown."""

    __slots__ = ("active", "attempt", "empty", "in_flight", "queue", "render", "req", "timer")

    def __init__(
        self,
        req: Request,
        queue: str,
        attempt: Callable[[], Any],
        render: Callable[[Any], Response | None],
        empty: Response,
    ) -> None:
        self.req = req
        self.queue = queue
        self.attempt = attempt
        self.render = render
        self.empty = empty  # the answer when the wait ends with nothing
        self.timer: Any = None
        self.active = True  # False once answered or cancelled; it then leases nothing
        self.in_flight = False  # an attempt of this waiter awaits the store's answer


class WaitQueue:
    """The FIFO of waiters of one queue. Finished waiters are dropped lazily."""

    __slots__ = ("busy", "fifo", "live")

    def __init__(self) -> None:
        self.fifo: deque[Waiter] = deque()
        self.live = 0  # active waiters in fifo (or in flight)
        self.busy = False  # an attempt is in flight


class LongPoll:
    """Every parked receive of the server; the store's listener.

    ``answer(req, response)`` answers a deferred request (the router's); ``call_later`` is
    the loop's.
    """

    def __init__(
        self, answer: Callable[[Request, Response], None], call_later: Callable[..., Any]
    ) -> None:
        self._answer = answer
        self._call_later = call_later
        # Only queues with live waiters. The store reads this dict (the same object for the
        # server's whole life) to skip the call when nobody waits.
        self.waiting: dict[str, WaitQueue] = {}
        self.closing = False  # shutting down: long polls answer at once
        self._running = False  # inside available()
        self._again: set[str] = set()  # queues told meanwhile (see available)

    @property
    def count(self) -> int:
        """Parked receives (``wonderq_waiting_receives``)."""
        return sum(wq.live for wq in self.waiting.values())

    def park(
        self,
        req: Request,
        queue: str,
        wait_ms: int,
        attempt: Callable[[], Any],
        render: Callable[[Any], Response | None],
        empty: Response,
    ) -> Response | None:
        """Park ``req`` for up to ``wait_ms``; None (the answer comes later), or ``empty`` at
        once when the server is shutting down."""
        if self.closing:
            return empty
        waiter = Waiter(req, queue, attempt, render, empty)
        waiter.timer = self._call_later(wait_ms / 1000, self._wait_ended, waiter)
        wq = self.waiting.get(queue)
        if wq is None:
            wq = self.waiting[queue] = WaitQueue()
        wq.fifo.append(waiter)
        wq.live += 1
        req.deferred = waiter
        return None

    # ---- the store's listener -------------------------------------------------------------

    def available(self, queue: str) -> None:
        """Answer the waiters of ``queue``, oldest first, while they get messages.

        Never re-entered: an attempt may tell the listener again (a receive that expires
        due leases first, as the SQS face's does); that call becomes one more pass once the
        current one ends, so no waiter is tried twice at once."""
        if self._running:
            self._again.add(queue)
            return
        self._running = True
        try:
            self._available(queue)
            while self._again:
                self._available(self._again.pop())
        finally:
            self._running = False

    def _available(self, queue: str) -> None:
        wq = self.waiting.get(queue)
        if wq is None or wq.busy:
            return
        fifo = wq.fifo
        answers: list[tuple[Waiter, Response]] = []
        try:
            while fifo:
                waiter = fifo.popleft()
                if not waiter.active:
                    continue
                if waiter.req.conn.closed:
                    self._finish(waiter, wq)  # its client is gone: lease nothing to it
                    continue
                try:
                    result = waiter.attempt()
                    if type(result) is Deferred:
                        if not result.done:
                            wq.busy = True
                            waiter.in_flight = True
                            result.add(partial(self._attempted, wq, waiter))
                            return
                        result = result.result()
                    response = waiter.render(result)
                except Exception as exc:
                    response = answer_error(exc, f"long poll on {queue}")
                if response is None:
                    fifo.appendleft(waiter)  # nothing available: it stays first
                    return
                self._finish(waiter, wq)
                answers.append((waiter, response))
        finally:
            if wq.live == 0 and self.waiting.get(queue) is wq:
                del self.waiting[queue]
            # Answer after the FIFO is consistent: answering may run pipelined requests.
            for waiter, response in answers:
                self._answer(waiter.req, response)

    def available_any(self) -> None:
        """available() for every queue that has waiters (after expiry, or a release)."""
        for queue in list(self.waiting):
            self.available(queue)

    def _attempted(self, wq: WaitQueue, waiter: Waiter, result: Deferred) -> None:
        wq.busy = False
        waiter.in_flight = False
        try:
            response = waiter.render(result.result())
        except Exception as exc:
            response = answer_error(exc, f"long poll on {waiter.queue}")
        if response is None:
            if waiter.active:
                wq.fifo.appendleft(waiter)  # nothing came: wait on
                return
            response = waiter.empty  # its wait ended meanwhile
        elif waiter.active:
            self._finish(waiter, wq)
        self._compact(waiter.queue, wq)
        self._answer(waiter.req, response)
        self.available(waiter.queue)  # the next waiters may get something too

    # ---- endings ----------------------------------------------------------------------------

    def cancel(self, req: Request) -> None:
        """The connection of a parked request closed: drop its waiter (it leases nothing)."""
        waiter = req.deferred
        if isinstance(waiter, Waiter) and waiter.active:
            wq = self.waiting.get(waiter.queue)
            if wq is not None:
                self._finish(waiter, wq)
                self._compact(waiter.queue, wq)

    def drop(self, queue: str) -> None:
        """Answer every waiter of ``queue`` with its empty answer at once (it was deleted)."""
        # Out of the table first: an answer may run a pipelined request that parks again.
        wq = self.waiting.pop(queue, None)
        if wq is None:
            return
        for waiter in list(wq.fifo):
            if waiter.active:
                self._finish(waiter, wq)
                self._answer(waiter.req, waiter.empty)

    def close(self) -> None:
        """Shutdown: answer every waiter with its empty answer; later long polls answer at
        once."""
        self.closing = True
        for queue in list(self.waiting):
            self.drop(queue)

    def _finish(self, waiter: Waiter, wq: WaitQueue) -> None:
        waiter.active = False
        wq.live -= 1
        if waiter.timer is not None:
            waiter.timer.cancel()
            waiter.timer = None

    def _wait_ended(self, waiter: Waiter) -> None:
        if not waiter.active:
            return
        wq = self.waiting.get(waiter.queue)
        if wq is None:
            waiter.active = False
        else:
            self._finish(waiter, wq)
            if waiter.in_flight:
                return  # answered with what its attempt brings (see _attempted)
            self._compact(waiter.queue, wq)
        self._answer(waiter.req, waiter.empty)

    def _compact(self, queue: str, wq: WaitQueue) -> None:
        fifo = wq.fifo
        while fifo and not fifo[0].active:
            fifo.popleft()
        if wq.live == 0 and not wq.busy:
            if self.waiting.get(queue) is wq:
                del self.waiting[queue]
        elif len(fifo) - wq.live > max(_STALE_WAITERS, wq.live):
            wq.fifo = deque(w for w in fifo if w.active)
