"""The engine against the reference model: random operation sequences must get the same answers.

A Hypothesis RuleBasedStateMachine drives ``wonderq._core.Broker`` and ``tests/model.Broker``
with the same calls and asserts that both return the same value (receive's exact bytes
included) or raise the same error class with the same ``code``; after every step both brokers'
invariants are checked and every observable (queue info, counters, next deadline, memory) is
compared.

Replaying a failure: Hypothesis prints ``@reproduce_failure(...)`` (print_blob). The number of
examples comes from WONDERQ_MODEL_EXAMPLES (default 250); WONDERQ_MODEL_DERANDOMIZE=1 makes
the run deterministic (same examples every time).
"""

from __future__ import annotations

import os

import model
import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from wonderq import _core
from wonderq._core import EngineError

# Small times and few names, so that equal deadlines, deadlines hit exactly and messages
# meeting their holders again are common; invalid arguments appear, but rarely.
NAMES = ["default", "q1", "q2", "q3"]
queue_names = st.sampled_from(["default"] * 3 + ["q1"] * 3 + ["q2"] * 2 + ["q3", "nope"])
cids = st.sampled_from([0, 1, 2] * 4 + [-1, _core.MAX_ID])
delays = st.one_of(st.sampled_from([-1, -1, 0, 0, -2]), st.integers(1, 8))
visibilities = st.one_of(st.just(-1), st.integers(0, 8))
special = st.sampled_from(
    [
        b'"',
        b"\\",
        b"\x00\x1f\x7f",
        "\u00e9\u20ac\U0001f600".encode(),
        b"\xff",
        b"\xed\xa0\x80",
        b"\xc3",
        b"0123456789abcdef" * 3,
        b"a" * 65,
    ]
)
valid_bodies = st.text(min_size=1, max_size=12).map(str.encode)
# one_of picks its branches about evenly: most bodies are valid.
bodies = st.one_of(
    *[valid_bodies] * 6,
    st.text(max_size=70).map(str.encode),
    st.binary(max_size=10),
    special,
)
attribute_values = {
    "visibility_timeout_ms": st.one_of(st.integers(0, 8), st.just(-1)),
    "delay_ms": st.one_of(st.just(0), st.integers(0, 8)),
    "max_receives": st.one_of(st.none(), st.integers(1, 3), st.just(0)),
    "dead_letter_queue": st.one_of(st.none(), st.sampled_from([*NAMES, "nope"])),
    "max_message_bytes": st.integers(0, 80),
    # The shortest retention is a minute: the clock jumps by minutes too (advance_clock).
    "retention_ms": st.sampled_from([None, 60_000, 60_003, 120_000, 59_999]),
}
# Attribute blobs: mostly none; a wrong type or too long (the queues' limit is 64) rarely.
blobs = st.one_of(
    *[st.none()] * 4, st.binary(max_size=8), st.sampled_from([b"", "text", b"x" * 65])
)
attributes = st.one_of(
    st.fixed_dictionaries({}, optional=attribute_values),
    st.just({"bogus": 1}),
)


class EngineVsModel(RuleBasedStateMachine):
    @initialize(
        max_memory=st.sampled_from([0, 0, 0, 1500]),
        max_batch=st.sampled_from([1, 3, 6, 6, 6]),
        visibility=st.integers(0, 8),
        chain=st.sampled_from(["plain", "q1>q2", "q1>q2>q3"]),
        max_receives=st.integers(1, 3),
        retention=st.sampled_from([None, None, 60_000, 60_002]),
    )
    def setup(self, max_memory, max_batch, visibility, chain, max_receives, retention):
        kwargs = {
            "visibility_ms": visibility,
            "max_message_bytes": 64,
            "max_batch": max_batch,
            "max_memory": max_memory,
            "track_dead_letters": True,
        }
        self.engine = _core.Broker(**kwargs)
        self.model = model.Broker(**kwargs)
        self.now = 0
        self.dump_cursor = 0
        # Start from a dead-letter chain most of the time: random attributes rarely build one.
        steps = {
            "plain": [("q1", {}), ("q2", {})],
            "q1>q2": [
                ("q2", {}),
                ("q1", {"max_receives": max_receives, "dead_letter_queue": "q2"}),
            ],
            "q1>q2>q3": [
                ("q3", {}),
                ("q2", {"max_receives": 1, "dead_letter_queue": "q3"}),
                ("q1", {"max_receives": max_receives, "dead_letter_queue": "q2"}),
            ],
        }[chain]
        for name, attrs in steps:
            assert self.both("put_queue", name, attrs) == ("ok", True)
        if retention is not None:  # on a source and a dead-letter queue: both paths
            for name in ("default", "q2"):
                assert self.both("put_queue", name, {"retention_ms": retention})[0] == "ok"

    def both(self, method, *args):
        """Call both brokers; they must agree on the result or on the error."""
        outcomes = []
        for broker in (self.engine, self.model):
            try:
                outcomes.append(("ok", getattr(broker, method)(*args)))
            except EngineError as exc:
                outcomes.append(("error", type(exc).__name__, exc.code))
        assert outcomes[0] == outcomes[1], (method, args, outcomes)
        return outcomes[0]

    def some_id(self, data):
        """Mostly ids of leased messages (where delete and change_lease matter), else any."""
        leased = sorted(i for i, m in self.model.messages.items() if m.state == "leased")
        choices = [st.integers(1, self.model.next_id), st.sampled_from([0, self.model.next_id])]
        if leased:
            choices.insert(0, st.sampled_from(leased))
        return data.draw(st.one_of(*choices))

    # ---- rules ----------------------------------------------------------------------------
    @rule(dt=st.one_of(st.integers(0, 3), st.integers(0, 30), st.sampled_from([30_000, 60_000])))
    def advance_clock(self, dt):
        self.now += dt

    @rule(dt=st.integers(59_990, 60_010))
    def advance_a_minute(self, dt):
        """Retention periods are a minute or more."""
        self.now += dt

    @precondition(lambda self: self.model.next_deadline() >= 0)
    @rule(extra=st.sampled_from([0, 0, 1]))
    def advance_to_next_deadline(self, extra):
        self.now = max(self.now, self.model.next_deadline()) + extra

    def some_lease(self, data):
        leased = sorted(i for i, m in self.model.messages.items() if m.state == "leased")
        return self.model.messages[data.draw(st.sampled_from(leased))]

    @precondition(lambda self: any(m.state == "leased" for m in self.model.messages.values()))
    @rule(data=st.data())
    def holder_delete(self, data):
        m = self.some_lease(data)
        self.both("delete", m.queue, m.cid, m.id, self.now)

    @precondition(lambda self: any(m.state == "leased" for m in self.model.messages.values()))
    @rule(data=st.data(), timeout=st.one_of(st.just(0), st.integers(0, 8)))
    def holder_change_lease(self, data, timeout):
        m = self.some_lease(data)
        self.both("change_lease", m.queue, m.cid, m.id, timeout, self.now)

    @rule(queue=queue_names, body=bodies, delay=delays, attrs=blobs)
    def publish(self, queue, body, delay, attrs):
        self.both("publish", queue, body, self.now, delay, attrs)

    @rule(
        data=st.data(),
        queue=queue_names,
        size=st.one_of(st.integers(1, 3), st.integers(0, 7)),
        with_delays=st.booleans(),
    )
    def publish_batch(self, data, queue, size, with_delays):
        batch = data.draw(
            st.lists(st.one_of(*[valid_bodies] * 10, bodies), min_size=size, max_size=size)
        )
        batch_delays = None
        if with_delays:
            # Mostly one delay per body; sometimes a wrong count.
            n = data.draw(st.one_of(*[st.just(size)] * 5, st.integers(0, 7)))
            batch_delays = data.draw(st.lists(delays, min_size=n, max_size=n))
        batch_attrs = None
        if data.draw(st.booleans()):
            n = data.draw(st.one_of(*[st.just(size)] * 5, st.integers(0, 7)))
            batch_attrs = data.draw(st.lists(blobs, min_size=n, max_size=n))
        self.both("publish_batch", queue, batch, self.now, batch_delays, batch_attrs)

    @rule(data=st.data(), queue=queue_names, size=st.integers(1, 3))
    def publish_batch_more(self, data, queue, size):
        self.publish_batch(data, queue, size, False)

    @rule(queue=queue_names, cid=cids, limit=st.integers(0, 4), visibility=visibilities)
    def receive_list(self, queue, cid, limit, visibility):
        leased = [[], []]
        outcomes = []
        for broker, ids in zip((self.engine, self.model), leased, strict=True):
            try:
                outcomes.append(
                    ("ok", broker.receive_list(queue, cid, limit, self.now, visibility, ids))
                )
            except EngineError as exc:
                outcomes.append(("error", type(exc).__name__, exc.code))
        assert outcomes[0] == outcomes[1], ("receive_list", outcomes)
        assert leased[0] == leased[1], ("receive_list leased", leased)

    @rule(queue=queue_names, cid=cids, limit=st.integers(0, 7), visibility=visibilities)
    def receive(self, queue, cid, limit, visibility):
        leased = [[], []]
        outcomes = []
        for broker, ids in zip((self.engine, self.model), leased, strict=True):
            try:
                outcomes.append(
                    ("ok", broker.receive(queue, cid, limit, self.now, visibility, ids))
                )
            except EngineError as exc:
                outcomes.append(("error", type(exc).__name__, exc.code))
        assert outcomes[0] == outcomes[1], ("receive", outcomes)
        assert leased[0] == leased[1], ("receive leased", leased)

    # Hypothesis picks rules about evenly: the core operations get extra rules.
    @rule(queue=queue_names, cid=cids, limit=st.integers(1, 3), visibility=visibilities)
    def receive_more(self, queue, cid, limit, visibility):
        self.receive(queue, cid, limit, visibility)

    @rule(queue=queue_names, cid=cids, limit=st.integers(1, 3), visibility=visibilities)
    def receive_even_more(self, queue, cid, limit, visibility):
        self.receive(queue, cid, limit, visibility)

    @rule(queue=queue_names, body=valid_bodies, delay=delays)
    def publish_more(self, queue, body, delay):
        self.publish(queue, body, delay, None)

    @rule(queue=queue_names, limit=st.integers(0, 7))
    def peek(self, queue, limit):
        self.both("peek", queue, limit, self.now)

    def some_token(self, data):
        """(queue, id, receives): mostly a lease's current token, else a stale or foreign one."""
        leased = sorted(i for i, m in self.model.messages.items() if m.state == "leased")
        if leased and data.draw(st.integers(0, 3)):
            m = self.model.messages[data.draw(st.sampled_from(leased))]
            receives = m.receives + data.draw(st.sampled_from([0, 0, 0, -1, 1]))
            return m.queue, m.id, receives
        return (
            data.draw(queue_names),
            self.some_id(data),
            data.draw(st.one_of(st.integers(0, 3), st.just(-1))),
        )

    @rule(data=st.data())
    def delete_token(self, data):
        queue, msg_id, receives = self.some_token(data)
        self.both("delete_token", queue, msg_id, receives, self.now)

    @rule(data=st.data(), timeout=st.one_of(st.just(0), st.integers(0, 8), st.just(-1)))
    def change_lease_token(self, data, timeout):
        queue, msg_id, receives = self.some_token(data)
        self.both("change_lease_token", queue, msg_id, receives, timeout, self.now)

    @rule(data=st.data(), queue=queue_names, cid=cids)
    def delete(self, data, queue, cid):
        self.both("delete", queue, cid, self.some_id(data), self.now)

    @rule(data=st.data(), queue=queue_names, cid=cids, n=st.integers(0, 7))
    def delete_batch(self, data, queue, cid, n):
        ids = [self.some_id(data) for _ in range(n)]
        self.both("delete_batch", queue, cid, ids, self.now)

    @rule(
        data=st.data(),
        queue=queue_names,
        cid=cids,
        timeout=st.one_of(st.just(0), st.integers(1, 8), st.integers(0, 8), st.just(-1)),
    )
    def change_lease(self, data, queue, cid, timeout):
        self.both("change_lease", queue, cid, self.some_id(data), timeout, self.now)

    @rule(budget=st.one_of(st.integers(0, 6), st.integers(1, 1000)))
    def expire(self, budget):
        self.both("expire", self.now, budget)

    @rule(budget=st.integers(1, 3))
    def expire_more(self, budget):
        self.expire(budget)

    @rule(queue=queue_names, drop=st.sampled_from([False, False, False, True]))
    def purge_or_delete_queue(self, queue, drop):
        self.both("delete_queue" if drop else "purge", queue)

    @rule(name=st.sampled_from([*NAMES, "bad name"]), attrs=attributes)
    def put_queue(self, name, attrs):
        self.both("put_queue", name, attrs)

    @rule(
        data=st.data(),
        queue=queue_names,
        body=bodies,
        receives=st.integers(0, 3),
        delay=st.one_of(st.just(0), st.integers(0, 8)),
        set_next=st.booleans(),
        sent=st.one_of(st.none(), st.integers(-70_000, 70_000), st.just(-(1 << 42) - 1)),
        first=st.one_of(st.none(), st.integers(-10, 300_000), st.just(1 << 42)),
        attrs=blobs,
    )
    def restore(self, data, queue, body, receives, delay, set_next, sent, first, attrs):
        """The recovery hooks: restore a message, or move the id counter."""
        if set_next:
            self.both("set_next_id", data.draw(st.integers(1, self.model.next_id + 10)))
        else:
            msg_id = data.draw(st.integers(1, self.model.next_id + 5))
            self.both("restore", queue, msg_id, body, receives, self.now, delay, sent, first, attrs)

    @rule(
        cursor=st.sampled_from(["continue", "continue", "continue", "zero", "other"]),
        max_count=st.integers(1, 4),
        data=st.data(),
    )
    def dump_step(self, cursor, max_count, data):
        """One dump_messages call; iterations interleave with every other operation."""
        if cursor == "zero":
            self.dump_cursor = 0
        elif cursor == "other":
            self.dump_cursor = data.draw(st.integers(-1, self.model.next_id))
        result = self.both("dump_messages", self.dump_cursor, max_count, self.now)
        if result[0] == "ok":
            self.dump_cursor = result[1][0]

    @rule()
    def take_dead_lettered(self):
        self.both("take_dead_lettered")

    # ---- invariants -----------------------------------------------------------------------
    @invariant()
    def agree(self):
        self.engine.check_invariants()
        self.model.check_invariants()
        assert self.engine.queue_names() == self.model.queue_names()
        for name in self.model.queue_names():
            assert self.engine.queue_info(name) == self.model.queue_info(name)
            assert self.engine.ready_count(name) == self.model.ready_count(name)
            assert self.engine.queue_delay_ms(name) == self.model.queue_delay_ms(name)
        stats = self.engine.stats()
        assert stats == self.model.stats()
        if any(row[-1] for row in stats):
            event("a message was dropped by retention")
        if any(m.first_receive is not None for m in self.model.messages.values()):
            event("a first receive is kept")
        assert self.engine.next_deadline() == self.model.next_deadline()
        assert self.engine.memory_bytes == self.model.memory_bytes
        assert self.engine.memory_limit == self.model.memory_limit
        assert self.engine.message_count == self.model.message_count
        assert self.engine.next_id == self.model.next_id


# A passing run takes ~30 s; a failing one also shrinks, which may take minutes.
TestEngineVsModel = pytest.mark.timeout(900)(EngineVsModel.TestCase)
TestEngineVsModel.settings = settings(
    max_examples=int(os.environ.get("WONDERQ_MODEL_EXAMPLES", "250")),
    stateful_step_count=50,
    deadline=None,
    print_blob=True,
    derandomize=os.environ.get("WONDERQ_MODEL_DERANDOMIZE") == "1",
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
