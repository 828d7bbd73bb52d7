"""Store answers (:class:`~wonderq.deferred.Deferred`) as the Redis store's callbacks and
coroutines pass them on and wait for them."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..deferred import Deferred

log = logging.getLogger("wonderq.redis")


def _drained(d: Deferred, value: Any, task: asyncio.Task[Any]) -> None:
    """The answer of a request whose dead-letter moves were delivered, or left to the
    sweeper (a failed delivery is retried there; the request itself succeeded)."""
    if not task.cancelled() and task.exception() is not None:
        log.debug("delivering dead letters failed (the sweeper retries): %s", task.exception())
    d.resolve(value)


def _pass_on(inner: Deferred, outer: Deferred) -> None:
    if inner.error is not None:
        outer.fail(inner.error)
    else:
        outer.resolve(inner.value)


def _wait(d: Any) -> asyncio.Future[Any]:
    """An awaitable of a store answer (a Deferred or a plain value)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()
    if type(d) is not Deferred:
        fut.set_result(d)
        return fut

    def done(x: Deferred) -> None:
        if fut.done():
            return
        if x.error is not None:
            fut.set_exception(x.error)
        else:
            fut.set_result(x.value)

    d.add(done)
    return fut


wait = _wait
