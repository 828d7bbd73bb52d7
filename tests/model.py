"""Pure-Python reference broker: the engine's API and behaviour, written to be obviously right.

The engine (``wonderq._core.Broker``) must agree with this model on every answer, every raised
error (type and ``code``) and every counter. Plain dicts and sorted lists; speed does not matter
beyond keeping the benchmarks' model runs short.

Validation order (the first failing check is the one raised), shared with the engine:
  publish        queue, now, delay, body (type, empty, size, UTF-8), attributes, ids, memory
  publish_batch  queue, now, bodies (kind, count, each body's type), delays (kind, length),
                 attributes (kind, length, each one's type), then per item: delay, body
                 content, attributes' size; ids, memory
  receive        queue, cid, limit, now, visibility (receive_list too)
  delete         queue, cid, id, now
  delete_batch   queue, cid, ids (kind, count, each id), now
  change_lease   queue, cid, id, timeout, now
  delete_token   queue, id, receives, now
  change_lease_token  queue, id, receives, timeout, now
  peek           queue, limit, now
  expire         now, budget
  restore        queue, id, body (type, empty, UTF-8), receives, now, delay, sent_ms,
                 first_receive_ms, attributes, id in use
  dump_messages  cursor, max_count, now
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from wonderq import _core
from wonderq._core import (
    MAX_DELAY_MS,
    MAX_ID,
    MAX_QUEUES,
    MAX_VISIBILITY_MS,
    MESSAGE_OVERHEAD,
    IdsExhausted,
    InvalidArgument,
    MemoryLimitExceeded,
    MessageTooLarge,
    QueueInUse,
    QueueNotFound,
)

MAX_NOW = (1 << 42) - 1
MIN_RETENTION_MS = 60_000
MAX_RETENTION_MS = 1_209_600_000
assert (MAX_NOW, MIN_RETENTION_MS, MAX_RETENTION_MS) == (
    _core.MAX_NOW,
    _core.MIN_RETENTION_MS,
    _core.MAX_RETENTION_MS,
), "the model's bounds are the contract's, written out"
MAX_MESSAGE_BYTES = 1 << 28
UINT32_MAX = (1 << 32) - 1
QUEUE_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}")
EMPTY_RESPONSE = b'{"messages":[]}'


def _int(value: Any, lo: int, hi: int, code: str, name: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi:
        return value
    raise InvalidArgument(f"{name} must be an integer in {lo}..{hi}", code)


def _check_now(now: int) -> None:
    if not 0 <= now <= MAX_NOW:
        raise InvalidArgument("bad now", "invalid_now")


def _body_bytes(body: Any) -> bytes:
    if type(body) is bytes:
        return body
    if isinstance(body, (bytearray, memoryview)):
        return bytes(body)
    raise InvalidArgument("body must be bytes", "invalid_body")


def _text(data: bytes, max_bytes: int) -> str:
    """The decoded body, validated like the engine validates it."""
    if not data:
        raise InvalidArgument("body must not be empty", "invalid_body")
    if len(data) > max_bytes:
        raise MessageTooLarge("body too large")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgument("body must be valid UTF-8", "invalid_body") from None
    if _escaped_len(text) > UINT32_MAX:
        raise MessageTooLarge("body too large once escaped")
    return text


def _escaped_len(text: str) -> int:
    return len(json.dumps(text, ensure_ascii=False).encode()) - 2


def _attributes(value: Any, max_bytes: int) -> bytes | None:
    if value is None:
        return None
    if type(value) is not bytes:
        if not isinstance(value, (bytearray, memoryview)):
            raise InvalidArgument("attributes must be bytes or None", "invalid_attributes")
        value = bytes(value)
    if len(value) > max_bytes:
        raise MessageTooLarge("attributes too large")
    return value


def stored_first_receive(sent: int, first: int) -> int:
    """The first receive time as the engine keeps it: its distance from the publish exact
    below 2**16 ms, else truncated to 16 significant bits (never before the publish)."""
    delta = max(first - sent, 0)
    if delta >= 1 << 16:
        e = delta.bit_length() - 16
        delta = (delta >> e) << e
    return sent + delta


@dataclass
class Message:
    id: int
    queue: str
    text: str  # the decoded body
    receives: int = 0
    state: str = "ready"  # "ready", "leased" or "delayed"
    deadline: int = 0  # lease or delay end while leased or delayed
    cid: int = -1  # lease owner while leased
    sent: int = 0  # publish time
    first_receive: int | None = None  # as stored (stored_first_receive)
    attributes: bytes | None = None

    @property
    def size(self) -> int:
        extra = 0 if self.attributes is None else 4 + len(self.attributes)
        return MESSAGE_OVERHEAD + _escaped_len(self.text) + extra


@dataclass
class Queue:
    name: str
    attrs: dict[str, Any]
    ready: list[int] = field(default_factory=list)  # sorted ids of available messages
    totals: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("published", "delivered", "deleted", "expired", "dead_lettered"), 0
        )
    )
    expired_retention: int = 0  # in stats(), not in queue_info()


class Broker:
    def __init__(
        self,
        *,
        visibility_ms: int = 30000,
        max_message_bytes: int = 1048576,
        max_batch: int = 1000,
        max_memory: int = 0,
        track_dead_letters: bool = False,
    ) -> None:
        self.visibility_ms = _int(
            visibility_ms, 0, MAX_VISIBILITY_MS, "invalid_visibility", "visibility_ms"
        )
        self.max_message_bytes = _int(
            max_message_bytes, 1, MAX_MESSAGE_BYTES, "invalid_max_message_bytes", "mmb"
        )
        self.max_batch = _int(max_batch, 1, 1 << 20, "invalid_max_batch", "max_batch")
        self.max_memory = _int(max_memory, 0, MAX_ID, "invalid_max_memory", "max_memory")
        self.queues: dict[str, Queue] = {}
        self.messages: dict[int, Message] = {}
        self.timers: list[tuple[int, int]] = []  # sorted (deadline, id) of leased and delayed
        self._next_id = 1
        self._memory = 0
        self.track_dead_letters = bool(track_dead_letters)
        self.dead_letters: list[tuple[int, str]] = []
        # dump_messages: the messages present when the iteration started, sorted by id.
        self._dump: list[tuple[int, Message]] | None = None
        self.put_queue("default")

    # ---- helpers --------------------------------------------------------------------------
    def _queue(self, name: Any) -> Queue:
        q = self.queues.get(name) if isinstance(name, str) else None
        if q is None:
            raise QueueNotFound(f"queue {name!r} does not exist")
        return q

    def _make_ready(self, msg: Message, queue: str) -> None:
        msg.queue = queue
        msg.state = "ready"
        msg.cid = -1
        bisect.insort(self.queues[queue].ready, msg.id)

    def _passed(self, msg: Message, queue: str, now: int) -> bool:
        retention = self.queues[queue].attrs["retention_ms"]
        return retention is not None and now >= msg.sent + retention

    def _make_available(self, msg: Message, queue: str, now: int) -> None:
        """Ready in ``queue``, or dropped there if its retention has passed."""
        if self._passed(msg, queue, now):
            self._remove(msg)
            self.queues[queue].expired_retention += 1
        else:
            self._make_ready(msg, queue)

    def _drop_head(self, q: Queue) -> None:
        self._remove(self.messages[q.ready.pop(0)])
        q.expired_retention += 1

    def _retention_heads(self) -> list[tuple[int, int, str]]:
        """(deadline, id, queue) of every queue's lowest-id ready message under retention."""
        out = []
        for q in self.queues.values():
            if q.attrs["retention_ms"] is not None and q.ready:
                head = self.messages[q.ready[0]]
                out.append((head.sent + q.attrs["retention_ms"], head.id, q.name))
        return sorted(out)

    def _take(self, q: Queue, limit: int, now: int) -> list[int]:
        """The ids a receive takes (popped from q.ready), dropping expired ones it meets."""
        taken: list[int] = []
        while q.ready and len(taken) < limit:
            msg_id = q.ready[0]
            if self._passed(self.messages[msg_id], q.name, now):
                self._drop_head(q)
            else:
                taken.append(q.ready.pop(0))
        return taken

    def _untime(self, msg: Message) -> None:
        self.timers.remove((msg.deadline, msg.id))

    def _end_lease(self, msg: Message, expired: bool, now: int) -> None:
        q = self.queues[msg.queue]
        max_receives = q.attrs["max_receives"]
        dlq = q.attrs["dead_letter_queue"]
        if max_receives is not None and msg.receives >= max_receives and dlq is not None:
            if self.track_dead_letters:
                self.dead_letters.append((msg.id, dlq))
            q.totals["dead_lettered"] += 1
            msg.receives = 0
            self._make_available(msg, dlq, now)
        else:
            if expired:
                q.totals["expired"] += 1
            self._make_available(msg, q.name, now)

    def _store(self, msg: Message, now: int, delay: int) -> None:
        self.messages[msg.id] = msg
        self._memory += msg.size
        if delay > 0:
            msg.state = "delayed"
            msg.deadline = now + delay
            bisect.insort(self.timers, (msg.deadline, msg.id))
        else:
            self._make_ready(msg, msg.queue)

    def _holds(self, q: Queue, cid: int, msg_id: int, now: int) -> Message | None:
        msg = self.messages.get(msg_id)
        if (
            msg is not None
            and msg.queue == q.name
            and msg.state == "leased"
            and msg.cid == cid
            and now < msg.deadline
        ):
            return msg
        return None

    def _holds_token(self, q: Queue, msg_id: int, receives: int, now: int) -> Message | None:
        msg = self.messages.get(msg_id)
        if (
            msg is not None
            and msg.queue == q.name
            and msg.state == "leased"
            and msg.receives == receives
            and now < msg.deadline
        ):
            return msg
        return None

    def _remove(self, msg: Message) -> None:
        del self.messages[msg.id]
        self._memory -= msg.size

    def _count(self, name: str, state: str) -> int:
        return sum(1 for m in self.messages.values() if m.queue == name and m.state == state)

    # ---- queues ---------------------------------------------------------------------------
    def put_queue(self, name: Any, attributes: Mapping[str, Any] | None = None) -> bool:
        if not isinstance(name, str) or QUEUE_NAME.fullmatch(name) is None:
            raise InvalidArgument("bad queue name", "invalid_queue_name")
        if attributes is None:
            attributes = {}
        if not isinstance(attributes, Mapping):
            raise InvalidArgument("attributes must be a mapping", "invalid_attribute")
        existing = self.queues.get(name)
        if existing is None:
            new = {
                "visibility_timeout_ms": self.visibility_ms,
                "delay_ms": 0,
                "max_receives": None,
                "dead_letter_queue": None,
                "max_message_bytes": self.max_message_bytes,
                "retention_ms": None,
                "meta": None,
            }
        else:
            new = dict(existing.attrs)
        limits = {
            "visibility_timeout_ms": (0, MAX_VISIBILITY_MS),
            "delay_ms": (0, MAX_DELAY_MS),
            "max_receives": (1, MAX_ID),
            "max_message_bytes": (1, self.max_message_bytes),
            "retention_ms": (MIN_RETENTION_MS, MAX_RETENTION_MS),
        }
        for key, value in attributes.items():
            if key in limits:
                if key in ("max_receives", "retention_ms") and value is None:
                    new[key] = None
                else:
                    new[key] = _int(value, *limits[key], "invalid_attribute", key)
            elif key == "dead_letter_queue":
                if value is not None and not isinstance(value, str):
                    raise InvalidArgument("bad dead_letter_queue", "invalid_attribute")
                new[key] = value
            elif key == "meta":
                if value is not None:
                    try:
                        n = len(value.encode("utf-8")) if isinstance(value, str) else -1
                    except UnicodeEncodeError:  # a lone surrogate
                        n = -1
                    if not 0 <= n <= 65536:
                        raise InvalidArgument("bad meta", "invalid_attribute")
                new[key] = value
            else:
                raise InvalidArgument(f"unknown attribute {key!r}", "invalid_attribute")
        dlq = new["dead_letter_queue"]
        if dlq is not None and (dlq == name or dlq not in self.queues):
            raise InvalidArgument("bad dead_letter_queue", "invalid_attribute")
        if new["max_receives"] is not None and dlq is None:
            raise InvalidArgument("max_receives needs a dead_letter_queue", "invalid_attribute")
        if existing is None:
            if len(self.queues) >= MAX_QUEUES:
                raise InvalidArgument("too many queues", "too_many_queues")
            self.queues[name] = Queue(name, new)
            return True
        existing.attrs = new
        return False

    def delete_queue(self, name: Any) -> int:
        self._queue(name)
        if name == "default":
            raise QueueInUse("default")
        if any(q.attrs["dead_letter_queue"] == name for q in self.queues.values()):
            raise QueueInUse("dead-letter queue in use")
        n = self.purge(name)
        del self.queues[name]
        return n

    def purge(self, name: Any) -> int:
        q = self._queue(name)
        doomed = [m for m in self.messages.values() if m.queue == q.name]
        for msg in doomed:
            if msg.state != "ready":
                self._untime(msg)
            self._remove(msg)
        q.ready.clear()
        return len(doomed)

    def has_queue(self, name: Any) -> bool:
        return isinstance(name, str) and name in self.queues

    def queue_names(self) -> list[str]:
        return sorted(self.queues)

    def queue_info(self, name: Any) -> dict[str, Any]:
        q = self._queue(name)
        return {
            "name": name,
            "attributes": dict(q.attrs),
            "counts": {
                "ready": len(q.ready),
                "leased": self._count(name, "leased"),
                "delayed": self._count(name, "delayed"),
            },
            "totals": dict(q.totals),
        }

    def ready_count(self, name: Any) -> int:
        return len(self._queue(name).ready)

    def queue_delay_ms(self, name: Any) -> int:
        return int(self._queue(name).attrs["delay_ms"])

    # ---- messages -------------------------------------------------------------------------
    def publish(
        self, queue: Any, body: Any, now: int, delay_ms: Any = -1, attributes: Any = None
    ) -> int:
        q = self._queue(queue)
        _check_now(now)
        delay = _int(delay_ms, -1, MAX_DELAY_MS, "invalid_delay", "delay_ms")
        if delay < 0:
            delay = q.attrs["delay_ms"]
        text = _text(_body_bytes(body), q.attrs["max_message_bytes"])
        attrs = _attributes(attributes, q.attrs["max_message_bytes"])
        if self._next_id > MAX_ID:
            raise IdsExhausted("ids exhausted")
        msg = Message(self._next_id, q.name, text, sent=now, attributes=attrs)
        if self.max_memory and self._memory + msg.size > self.max_memory:
            raise MemoryLimitExceeded("memory limit")
        self._next_id += 1
        q.totals["published"] += 1
        self._store(msg, now, delay)
        return msg.id

    def publish_batch(
        self, queue: Any, bodies: Any, now: int, delays: Any = None, attributes: Any = None
    ) -> int:
        q = self._queue(queue)
        _check_now(now)
        if isinstance(bodies, (bytes, bytearray, memoryview, str)):
            raise InvalidArgument("bodies must be a sequence", "invalid_batch")
        bodies = list(bodies)
        if not 1 <= len(bodies) <= self.max_batch:
            raise InvalidArgument("bad batch size", "invalid_batch")
        datas = [_body_bytes(b) for b in bodies]
        if delays is not None:
            if isinstance(delays, (bytes, bytearray, memoryview, str)):
                raise InvalidArgument("bad delays", "invalid_delay")
            delays = list(delays)
            if len(delays) != len(bodies):
                raise InvalidArgument("bad delays", "invalid_delay")
        else:
            delays = [-1] * len(bodies)
        if attributes is not None:
            if isinstance(attributes, (bytes, bytearray, memoryview, str)):
                raise InvalidArgument("bad attributes", "invalid_attributes")
            attributes = list(attributes)
            if len(attributes) != len(bodies):
                raise InvalidArgument("bad attributes", "invalid_attributes")
            attributes = [_attributes(a, MAX_MESSAGE_BYTES) for a in attributes]
        else:
            attributes = [None] * len(bodies)
        items = []
        for data, delay_ms, attrs in zip(datas, delays, attributes, strict=True):
            delay = _int(delay_ms, -1, MAX_DELAY_MS, "invalid_delay", "delay_ms")
            text = _text(data, q.attrs["max_message_bytes"])
            items.append((text, delay, _attributes(attrs, q.attrs["max_message_bytes"])))
        if self._next_id + len(items) - 1 > MAX_ID:
            raise IdsExhausted("ids exhausted")
        total = sum(Message(0, "", text, attributes=a).size for text, _, a in items)
        if self.max_memory and self._memory + total > self.max_memory:
            raise MemoryLimitExceeded("memory limit")
        first = self._next_id
        for text, delay, attrs in items:
            msg = Message(self._next_id, q.name, text, sent=now, attributes=attrs)
            self._next_id += 1
            q.totals["published"] += 1
            self._store(msg, now, q.attrs["delay_ms"] if delay < 0 else delay)
        return first

    def receive(
        self,
        queue: Any,
        cid: Any,
        limit: Any,
        now: int,
        visibility_ms: Any = -1,
        leased: list[int] | None = None,
    ) -> bytes:
        q = self._queue(queue)
        cid = _int(cid, 0, MAX_ID, "invalid_cid", "cid")
        limit = _int(limit, 1, self.max_batch, "invalid_limit", "limit")
        _check_now(now)
        vis = _int(visibility_ms, -1, MAX_VISIBILITY_MS, "invalid_visibility", "visibility_ms")
        if vis < 0:
            vis = q.attrs["visibility_timeout_ms"]
        msgs = self._lease(q, cid, self._take(q, limit, now), now, vis, leased)
        if not msgs:
            return EMPTY_RESPONSE
        out = [{"id": m.id, "body": m.text, "receives": m.receives} for m in msgs]
        return json.dumps({"messages": out}, ensure_ascii=False, separators=(",", ":")).encode()

    def receive_list(
        self,
        queue: Any,
        cid: Any,
        limit: Any,
        now: int,
        visibility_ms: Any = -1,
        leased: list[int] | None = None,
    ) -> list[tuple[int, bytes, int, int, int, bytes | None]]:
        q = self._queue(queue)
        cid = _int(cid, 0, MAX_ID, "invalid_cid", "cid")
        limit = _int(limit, 1, self.max_batch, "invalid_limit", "limit")
        _check_now(now)
        vis = _int(visibility_ms, -1, MAX_VISIBILITY_MS, "invalid_visibility", "visibility_ms")
        if vis < 0:
            vis = q.attrs["visibility_timeout_ms"]
        msgs = self._lease(q, cid, self._take(q, limit, now), now, vis, leased)
        return [
            (m.id, m.text.encode(), m.receives, m.sent, m.first_receive, m.attributes) for m in msgs
        ]

    def _lease(
        self, q: Queue, cid: int, taken: list[int], now: int, vis: int, leased: list[int] | None
    ) -> list[Message]:
        msgs = []
        for msg_id in taken:
            msg = self.messages[msg_id]
            msg.receives = min(msg.receives + 1, UINT32_MAX)
            if msg.first_receive is None:
                msg.first_receive = stored_first_receive(msg.sent, now)
            msg.state = "leased"
            msg.cid = cid
            msg.deadline = now + vis
            bisect.insort(self.timers, (msg.deadline, msg.id))
            msgs.append(msg)
        q.totals["delivered"] += len(taken)
        if leased is not None:
            leased.extend(taken)
        return msgs

    def peek(self, queue: Any, limit: Any, now: int) -> bytes:
        q = self._queue(queue)
        limit = _int(limit, 1, self.max_batch, "invalid_limit", "limit")
        _check_now(now)
        taken = self._take(q, limit, now)
        q.ready[:0] = taken  # put back
        if not taken:
            return EMPTY_RESPONSE
        out = []
        for msg_id in taken:
            msg = self.messages[msg_id]
            out.append({"id": msg.id, "body": msg.text, "receives": msg.receives})
        return json.dumps({"messages": out}, ensure_ascii=False, separators=(",", ":")).encode()

    def delete(self, queue: Any, cid: Any, msg_id: Any, now: int) -> bool:
        q = self._queue(queue)
        cid = _int(cid, 0, MAX_ID, "invalid_cid", "cid")
        msg_id = _int(msg_id, 1, MAX_ID, "invalid_id", "id")
        _check_now(now)
        msg = self._holds(q, cid, msg_id, now)
        if msg is None:
            return False
        self._untime(msg)
        self._remove(msg)
        q.totals["deleted"] += 1
        return True

    def delete_batch(
        self, queue: Any, cid: Any, msg_ids: Any, now: int
    ) -> tuple[list[int], list[int]]:
        self._queue(queue)
        cid = _int(cid, 0, MAX_ID, "invalid_cid", "cid")
        if isinstance(msg_ids, (bytes, bytearray, memoryview, str)):
            raise InvalidArgument("ids must be a sequence", "invalid_batch")
        msg_ids = list(msg_ids)
        if len(msg_ids) > self.max_batch:
            raise InvalidArgument("too many ids", "invalid_batch")
        ids = [_int(i, 1, MAX_ID, "invalid_id", "id") for i in msg_ids]
        _check_now(now)
        deleted: list[int] = []
        failed: list[int] = []
        for msg_id in ids:
            (deleted if self.delete(queue, cid, msg_id, now) else failed).append(msg_id)
        return deleted, failed

    def change_lease(self, queue: Any, cid: Any, msg_id: Any, timeout_ms: Any, now: int) -> bool:
        q = self._queue(queue)
        cid = _int(cid, 0, MAX_ID, "invalid_cid", "cid")
        msg_id = _int(msg_id, 1, MAX_ID, "invalid_id", "id")
        timeout = _int(timeout_ms, 0, MAX_VISIBILITY_MS, "invalid_timeout", "timeout_ms")
        _check_now(now)
        msg = self._holds(q, cid, msg_id, now)
        if msg is None:
            return False
        self._change(msg, timeout, now)
        return True

    def delete_token(self, queue: Any, msg_id: Any, receives: Any, now: int) -> bool:
        q = self._queue(queue)
        msg_id = _int(msg_id, 1, MAX_ID, "invalid_id", "id")
        receives = _int(receives, 0, UINT32_MAX, "invalid_receives", "receives")
        _check_now(now)
        msg = self._holds_token(q, msg_id, receives, now)
        if msg is None:
            return False
        self._untime(msg)
        self._remove(msg)
        q.totals["deleted"] += 1
        return True

    def change_lease_token(
        self, queue: Any, msg_id: Any, receives: Any, timeout_ms: Any, now: int
    ) -> bool:
        q = self._queue(queue)
        msg_id = _int(msg_id, 1, MAX_ID, "invalid_id", "id")
        receives = _int(receives, 0, UINT32_MAX, "invalid_receives", "receives")
        timeout = _int(timeout_ms, 0, MAX_VISIBILITY_MS, "invalid_timeout", "timeout_ms")
        _check_now(now)
        msg = self._holds_token(q, msg_id, receives, now)
        if msg is None:
            return False
        self._change(msg, timeout, now)
        return True

    def _change(self, msg: Message, timeout: int, now: int) -> None:
        self._untime(msg)
        if timeout > 0:
            msg.deadline = now + timeout
            bisect.insort(self.timers, (msg.deadline, msg.id))
        else:
            self._end_lease(msg, expired=False, now=now)

    # ---- timers ---------------------------------------------------------------------------
    def next_deadline(self) -> int:
        deadlines = [d for d, _, _ in self._retention_heads()[:1]]
        if self.timers:
            deadlines.append(self.timers[0][0])
        return min(deadlines) if deadlines else -1

    def expire(self, now: int, budget: Any) -> int:
        _check_now(now)
        budget = _int(budget, 0, MAX_ID, "invalid_budget", "budget")
        done = 0
        while done < budget:
            due: list[tuple[int, int, str | None]] = [
                h for h in self._retention_heads()[:1] if h[0] <= now
            ]
            if self.timers and self.timers[0][0] <= now:
                due.append((*self.timers[0], None))
            if not due:
                break
            _, msg_id, retention_queue = min(due)
            if retention_queue is not None:
                self._drop_head(self.queues[retention_queue])
            else:
                self.timers.pop(0)
                msg = self.messages[msg_id]
                if msg.state == "leased":
                    self._end_lease(msg, expired=True, now=now)
                else:
                    self._make_available(msg, msg.queue, now)
            done += 1
        return done

    # ---- accounting -----------------------------------------------------------------------
    @property
    def memory_bytes(self) -> int:
        return self._memory

    @property
    def memory_limit(self) -> int:
        return self.max_memory

    @property
    def message_count(self) -> int:
        return len(self.messages)

    def stats(self) -> list[tuple[str, int, int, int, int, int, int, int, int, int]]:
        rows = []
        for name in sorted(self.queues):
            info = self.queue_info(name)
            c, t = info["counts"], info["totals"]
            rows.append(
                (
                    name,
                    c["ready"],
                    c["leased"],
                    c["delayed"],
                    t["published"],
                    t["delivered"],
                    t["deleted"],
                    t["expired"],
                    t["dead_lettered"],
                    self.queues[name].expired_retention,
                )
            )
        return rows

    # ---- recovery -------------------------------------------------------------------------
    @property
    def next_id(self) -> int:
        return self._next_id

    def set_next_id(self, next_id: Any) -> None:
        next_id = _int(next_id, 1, MAX_ID + 1, "invalid_id", "next_id")
        self._next_id = max(self._next_id, next_id)

    def restore(
        self,
        queue: Any,
        msg_id: Any,
        body: Any,
        receives: Any,
        now: int,
        delay_ms: Any = 0,
        sent_ms: Any = None,
        first_receive_ms: Any = None,
        attributes: Any = None,
    ) -> None:
        q = self._queue(queue)
        msg_id = _int(msg_id, 1, MAX_ID, "invalid_id", "id")
        text = _text(_body_bytes(body), MAX_MESSAGE_BYTES)
        receives = _int(receives, 0, UINT32_MAX, "invalid_receives", "receives")
        _check_now(now)
        delay = _int(delay_ms, 0, MAX_DELAY_MS, "invalid_delay", "delay_ms")
        sent = now if sent_ms is None else _int(sent_ms, -MAX_NOW - 1, MAX_NOW, "invalid_time", "")
        first = None
        if first_receive_ms is not None:
            first = _int(first_receive_ms, -MAX_NOW - 1, MAX_NOW, "invalid_time", "")
            first = stored_first_receive(sent, first)
        attrs = _attributes(attributes, MAX_MESSAGE_BYTES)
        if msg_id in self.messages:
            raise InvalidArgument("id in use", "invalid_id")
        self._next_id = max(self._next_id, msg_id + 1)
        msg = Message(msg_id, q.name, text, receives, sent=sent, first_receive=first)
        msg.attributes = attrs
        self._store(msg, now, delay)

    def dump_messages(
        self, cursor: Any, max_count: Any, now: int
    ) -> tuple[int, list[tuple[Any, ...]]]:
        cursor = _int(cursor, 0, MAX_ID, "invalid_cursor", "cursor")
        max_count = _int(max_count, 1, MAX_ID, "invalid_max_count", "max_count")
        _check_now(now)
        if cursor == 0 or self._dump is None:
            self._dump = sorted(self.messages.items())
        pos = bisect.bisect_right([i for i, _ in self._dump], cursor)
        out = []
        while pos < len(self._dump) and len(out) < max_count:
            msg_id, msg = self._dump[pos]
            pos += 1
            if self.messages.get(msg_id) is not msg:
                continue  # removed since the iteration started
            delay = max(msg.deadline - now, 0) if msg.state == "delayed" else 0
            out.append(
                (
                    msg.id,
                    msg.queue,
                    msg.text.encode(),
                    msg.receives,
                    delay,
                    msg.sent,
                    msg.first_receive,
                    msg.attributes,
                )
            )
        if pos >= len(self._dump):
            self._dump = None
            return 0, out
        return self._dump[pos - 1][0], out

    def take_dead_lettered(self) -> list[tuple[int, str]]:
        out, self.dead_letters = self.dead_letters, []
        return out

    def check_invariants(self) -> None:
        assert self._memory == sum(m.size for m in self.messages.values())
        assert self.timers == sorted(
            (m.deadline, m.id) for m in self.messages.values() if m.state != "ready"
        )
        for q in self.queues.values():
            assert q.ready == sorted(
                m.id for m in self.messages.values() if m.queue == q.name and m.state == "ready"
            )
        assert all(m.queue in self.queues for m in self.messages.values())
        assert all(i < self._next_id for i in self.messages)
