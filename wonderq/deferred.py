# cython: language_level=3, annotation_typing=False
"""A store's answer that comes later (:class:`Deferred`), and what a store tells the long-poll
layer (:class:`Listener`).

A store method returns its answer, or a Deferred when the answer is not ready yet (the durable
store under ``--fsync always``; a networked store always). Callers test
``type(result) is Deferred``: for an answer that is ready that is one pointer comparison, no
coroutine, no future, no allocation. A Deferred calls its callbacks from a later event-loop
callback, never from inside the method that returned it.

Compiled with Cython in pure-Python mode (``deferred.pxd`` beside it): the faces add their
callbacks and read the answer as C calls.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from .errors import ShuttingDown, StorageError

__all__ = ["Deferred", "Fanout", "Listener"]

log = logging.getLogger("wonderq.store")


class Listener(Protocol):
    """What a store tells the long-poll layer (wonderq.longpoll.LongPoll implements it)."""

    #: Queues that have parked receives. The store reads it (never changes it) to skip the
    #: call on the hot path: a publish to a queue nobody waits on costs one dict check.
    waiting: dict[str, Any]

    def available(self, queue: str) -> None:
        """Messages may be available in ``queue`` now."""

    def available_any(self) -> None:
        """Messages may be available in any queue (after an expiry slice or a release)."""


class _NoListener:
    waiting: dict[str, Any] = {}

    def available(self, queue: str) -> None:
        pass

    def available_any(self) -> None:
        pass


class Deferred:
    """A store answer that comes later: ``value`` once ``done`` (or ``error``).

    ``add(callback)`` runs ``callback(self)`` once it is done; callbacks run from the
    event-loop callback that resolved it, in the order added. Cheaper than an asyncio
    future (no loop, no scheduling of its own), which matters under ``--fsync always``.
    """

    def __init__(self) -> None:
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None
        self._callbacks: list[Callable[[Deferred], None]] | None = None

    def add(self, callback: Callable[[Deferred], None]) -> None:
        """Call ``callback(self)`` when done (at once if it already is)."""
        if self.done:
            callback(self)
        elif self._callbacks is None:
            self._callbacks = [callback]
        else:
            self._callbacks.append(callback)

    def resolve(self, value: Any) -> None:
        """The answer is ``value``."""
        if not self.done:
            self.done = True
            self.value = value
            self._run()

    def fail(self, error: BaseException) -> None:
        """The operation failed with ``error`` (raised to whoever reads the answer)."""
        if not self.done:
            self.done = True
            self.error = error
            self._run()

    def result(self) -> Any:
        """The value, or raise the error (only once done)."""
        if self.error is not None:
            raise self.error
        return self.value

    def _run(self) -> None:
        callbacks = self._callbacks
        self._callbacks = None
        if callbacks:
            for callback in callbacks:
                try:
                    callback(self)
                except Exception:
                    log.exception("a store answer's callback failed")


def _error_of(fut: asyncio.Future[Any]) -> BaseException | None:
    """What the answers waiting for a done ``fut`` fail with (None: it succeeded)."""
    if fut.cancelled():
        return ShuttingDown("the server is shutting down")
    exc = fut.exception()
    if exc is None or isinstance(exc, StorageError):
        return exc
    return StorageError(str(exc))


class Fanout:
    """Many answers waiting for one future: the log's group commit, where every publish and
    delete of a batch waits for the batch's one fsync. ``deferred(value)`` is a Deferred of
    its own answer; the future's one done-callback resolves them all, in the order they were
    made (or fails them with its error). A done-callback per answer would cost a context copy
    and an event-loop Handle each (bench/RESULTS.md "Durability")."""

    def __init__(self, fut: asyncio.Future[Any]) -> None:
        self.fut = fut
        self._waiting: list[Deferred] = []
        self._values: list[Any] = []
        fut.add_done_callback(self._done)

    def deferred(self, value: Any) -> Deferred:
        d = Deferred()
        self._waiting.append(d)
        self._values.append(value)
        return d

    def _done(self, fut: asyncio.Future[Any]) -> None:
        error = _error_of(fut)
        waiting, values = self._waiting, self._values
        self._waiting, self._values = [], []
        if error is None:
            for d, value in zip(waiting, values, strict=True):
                d.resolve(value)
        else:
            for d in waiting:
                d.fail(error)
