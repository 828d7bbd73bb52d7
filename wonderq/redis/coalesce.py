"""One script for the single operations of one event-loop turn (docs/SCALEOUT.md, "The hot
path").

A script call costs Redis far more than the work it does on one message (~100,000
instructions to start a script, its keys and helpers, against ~25,000 to store a message in
a batch: bench/redis_instructions.py). So the single publishes, receives and deletes that
requests of one loop turn ask of one queue are gathered here and leave, at the end of the
turn, as one script per queue and kind, which runs them one after the other in the order
they were asked, exactly as separate scripts would have, and answers each on its own. A
request of any other kind first sends what is gathered (``RedisStore._send``), so the
requests of a turn reach Redis in the order they were made.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from ..deferred import Deferred
from .answers import _pass_on
from .checks import _engine_error

if TYPE_CHECKING:
    from .store import RedisStore

Item = tuple[list[bytes], Deferred]


class Coalescer:
    """The turn's gathered operations, per (kind, queue) in the order first asked."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.pending: dict[tuple[str, str], list[Item]] = {}

    def add(self, kind: str, queue: str, args: list[bytes]) -> Deferred:
        """Gather operation ``kind`` on ``queue`` (its script arguments); its answer comes
        in the returned Deferred once the turn's script for it has run."""
        pending = self.pending
        if not pending:
            self.store.loop.call_soon(self.flush)  # type: ignore[union-attr]
        d = Deferred()
        key = (kind, queue)
        items = pending.get(key)
        if items is None:
            pending[key] = [(args, d)]
        elif len(items) + 1 >= self.store.max_batch:
            items.append((args, d))
            self.flush()
        else:
            items.append((args, d))
        return d

    def flush(self) -> None:
        """Send what is gathered: one script per (kind, queue), written at once."""
        pending = self.pending
        if not pending:
            return
        self.pending = {}
        store = self.store
        for (kind, queue), items in pending.items():
            try:
                SENDERS[kind](store, queue, items)
            except Exception as exc:  # the store closed meanwhile: nothing was sent
                for _args, d in items:
                    if not d.done:
                        d.fail(exc)
        if store.backend is not None:
            store.backend.flush_now()


def _answer(d: Deferred, value: Any) -> None:
    if type(value) is Deferred:
        value.add(partial(_pass_on, outer=d))
    else:
        d.resolve(value)


def _fail_all(items: list[Item], outer: Deferred) -> bool:
    if outer.error is None:
        return False
    for _args, d in items:
        d.fail(outer.error)
    return True


# ---- publish: ARGV n < 0 (publish.lua) ---------------------------------------------------


def _publishes(store: RedisStore, queue: str, items: list[Item]) -> None:
    if len(items) == 1:
        args, d = items[0]
        store.script(
            "publish", queue, [b"1", *args], parse=partial(_one_id, store, queue), deferred=d
        )
        return
    flat = [b"-%d" % len(items)]
    for args, _d in items:
        flat += args
    store.script("publish", queue, flat).add(partial(_ids, store, queue, items))


def _one_id(store: RedisStore, queue: str, reply: Any) -> Any:
    return store._published(queue, int(reply))


def _ids(store: RedisStore, queue: str, items: list[Item], outer: Deferred) -> None:
    """Each publish's id, or its own refusal (a body over the queue's max_message_bytes)."""
    if _fail_all(items, outer):
        return
    for (_args, d), answer in zip(items, outer.value, strict=False):
        if answer[:1].isdigit():
            _answer(d, store._published(queue, int(answer)))
        else:
            code, message = answer.decode().split(" ", 1)
            d.fail(_engine_error(f"WQ {code} {message}"))


# ---- receive: ARGV '*k' (receive.lua) ----------------------------------------------------


def _receives(store: RedisStore, queue: str, items: list[Item]) -> None:
    if len(items) == 1:
        args, d = items[0]
        store.script("receive", queue, args, parse=partial(_one_answer, store, queue), deferred=d)
        return
    flat = [b"*%d" % len(items)]
    for args, _d in items:
        flat += args
    store.script("receive", queue, flat).add(partial(_answers, store, queue, items))


def _one_answer(store: RedisStore, queue: str, reply: list[Any]) -> Any:
    return store._received(queue, reply)


def _answers(store: RedisStore, queue: str, items: list[Item], outer: Deferred) -> None:
    """Reply ``[moves, answer...]``: each receive's answer (the dead-letter moves the script
    made are delivered before the first is answered)."""
    if _fail_all(items, outer):
        return
    reply = outer.value
    moves = reply[0]
    for i, (_args, d) in enumerate(items):
        _answer(d, store._received(queue, [reply[i + 1], moves if i == 0 else 0]))


# ---- delete by cid: ARGV 'p', id, cid, ... (delete.lua) ----------------------------------


def _deletes(store: RedisStore, queue: str, items: list[Item]) -> None:
    if len(items) == 1:
        args, d = items[0]
        store.script(
            "delete", queue, [b"c", args[1], args[0]], parse=partial(_one_deleted, store, queue),
            deferred=d,
        )  # fmt: skip
        return
    flat = [b"p"]
    for args, _d in items:
        flat += args
    store.script("delete", queue, flat).add(partial(_deleted, store, queue, items))


def _one_deleted(store: RedisStore, queue: str, reply: list[int]) -> Any:
    return store._deleted(queue, reply[0] == 1)


def _deleted(store: RedisStore, queue: str, items: list[Item], outer: Deferred) -> None:
    if _fail_all(items, outer):
        return
    for (_args, d), ok in zip(items, outer.value, strict=False):
        _answer(d, store._deleted(queue, ok == 1))


SENDERS: dict[str, Callable[[RedisStore, str, list[Item]], None]] = {
    "publish": _publishes,
    "receive": _receives,
    "delete": _deletes,
}
