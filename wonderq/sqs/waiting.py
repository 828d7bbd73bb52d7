"""Parked SQS long polls (``WaitTimeSeconds``), until wonderq/longpoll.py takes them over.

INTERIM: this one class stands in for ``LongPoll.park(req, queue, attempt, empty_response,
wait_ms)`` (``attempt() -> Response | None | Deferred``: None when nothing is available).
It is the store's :class:`~wonderq.store.Listener` for the face's store, so sends and
releases through the store wake the queue's waiters at once; publishes through WonderQ's own
routes and lease expiries it does not hear of are found by a re-check every
``RECHECK_S`` while anything is parked.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

from ..protocol import Request, Response
from ..store import Deferred

__all__ = ["RECHECK_S", "SqsWaiters"]

log = logging.getLogger("wonderq.sqs")

RECHECK_S = 0.05


class _Waiter:
    __slots__ = ("active", "attempt", "empty", "queue", "req", "timer")

    def __init__(self, req: Request, queue: str, attempt: Callable[[], Any], empty: Response):
        self.req = req
        self.queue = queue
        self.attempt = attempt
        self.empty = empty
        self.timer: Any = None
        self.active = True


class SqsWaiters:
    """FIFOs of parked receives by queue; the Listener of the face's store."""

    def __init__(self, call_later: Callable[..., Any]) -> None:
        self._call_later = call_later
        self.waiting: dict[str, deque[_Waiter]] = {}
        self._recheck: Any = None
        self.closing = False
        self._busy = False  # available() is running
        self._again = False  # ... and was called meanwhile

    def park(
        self, req: Request, queue: str, attempt: Callable[[], Any], empty: Response, wait_ms: int
    ) -> None:
        """Answer ``req`` with ``attempt()``'s first Response, or ``empty`` after
        ``wait_ms``. The caller has seen ``attempt`` find nothing just now, and answers
        ``empty`` itself while ``closing`` (a request is never answered from inside its
        dispatch)."""
        waiter = _Waiter(req, queue, attempt, empty)
        waiter.timer = self._call_later(wait_ms / 1000, self._expired, waiter)
        req.deferred = waiter
        self.waiting.setdefault(queue, deque()).append(waiter)
        if self._recheck is None:
            self._recheck = self._call_later(RECHECK_S, self._tick)

    def _done(self, waiter: _Waiter) -> None:
        waiter.active = False
        if waiter.timer is not None:
            waiter.timer.cancel()
            waiter.timer = None
        fifo = self.waiting.get(waiter.queue)
        if fifo is not None:
            while fifo and not fifo[0].active:
                fifo.popleft()
            if not fifo:
                del self.waiting[waiter.queue]

    def _answer(self, waiter: _Waiter, response: Response) -> None:
        try:
            waiter.req.conn.complete(waiter.req, response)
        except Exception:
            log.exception("answering a parked SQS receive failed")

    def _expired(self, waiter: _Waiter) -> None:
        if waiter.active:
            self._done(waiter)
            self._answer(waiter, waiter.empty)

    def _tick(self) -> None:
        self._recheck = None
        self.available_any()
        if self.waiting:
            self._recheck = self._call_later(RECHECK_S, self._tick)

    def available(self, queue: str) -> None:
        """Try the waiters of ``queue``, oldest first, until one finds nothing.

        Not re-entered: an attempt's receive may expire leases and so call back here; that
        call is folded into one more pass over every queue once this one is done."""
        if self._busy:
            self._again = True
            return
        self._busy = True
        try:
            self._try(queue)
            while self._again:
                self._again = False
                for name in list(self.waiting):
                    self._try(name)
        finally:
            self._busy = self._again = False

    def _try(self, queue: str) -> None:
        fifo = self.waiting.get(queue)
        if not fifo:
            return
        for waiter in list(fifo):
            if not waiter.active:
                continue
            if waiter.req.conn.closed:
                self._done(waiter)
                continue
            try:
                result = waiter.attempt()  # answers its own errors (a deleted queue, ...)
            except Exception:
                log.exception("a parked SQS receive failed")
                result = waiter.empty
            if result is None:
                return
            self._done(waiter)
            if type(result) is Deferred:
                result.add(partial(self._answer_later, waiter))
            else:
                self._answer(waiter, result)

    def _answer_later(self, waiter: _Waiter, done: Deferred) -> None:
        try:
            response = done.result()
        except Exception:
            log.exception("a parked SQS receive failed")
            response = None
        self._answer(waiter, response or waiter.empty)

    def available_any(self) -> None:
        """Try the waiters of every queue."""
        if self._busy:
            self._again = True
            return
        for queue in list(self.waiting):
            self.available(queue)

    def cancel(self, req: Request) -> None:
        """The client of a parked request is gone: forget it (it leases nothing)."""
        waiter = req.deferred
        if isinstance(waiter, _Waiter) and waiter.active:
            self._done(waiter)

    def close(self) -> None:
        """Shutdown: answer every parked receive with its empty answer."""
        self.closing = True
        for fifo in list(self.waiting.values()):
            for waiter in list(fifo):
                if waiter.active:
                    self._done(waiter)
                    self._answer(waiter, waiter.empty)
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None
