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
from functools import partial
from typing import Any, Protocol

from .errors import ShuttingDown, StorageError

__all__ = ["Deferred", "Listener", "after_future"]

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


def after_future(fut: asyncio.Future[Any], value: Any) -> Deferred:
    """A Deferred answering ``value`` once ``fut`` is done (its error if it failed; a
    cancelled future means the server stopped first)."""
    d = Deferred()
    fut.add_done_callback(partial(_future_done, d, value))
    return d


def _future_done(d: Deferred, value: Any, fut: asyncio.Future[Any]) -> None:
    if fut.cancelled():
        d.fail(ShuttingDown("the server is shutting down"))
        return
    exc = fut.exception()
    if exc is None:
        d.resolve(value)
    elif isinstance(exc, StorageError):
        d.fail(exc)
    else:
        d.fail(StorageError(str(exc)))
