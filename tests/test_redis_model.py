"""RedisStore against the reference model (tests/model.py): random operation sequences on a
real redis-server must get the same answers, errors and counters.

The scripts run on a test clock (``RedisStore(test_clock=True)``: each script reads the time
from a key instead of ``TIME``), so deadlines are hit exactly and the ids are 1, 2, 3 as in
the model. Redis makes an expired lease available as soon as anything touches its queue
(lazy expiry) or the sweeper runs; the machine runs a sweep over every queue before each
step and lets the model ``expire`` everything due, so both sides see the same state.

Replaying: Hypothesis prints ``@reproduce_failure``; WONDERQ_REDIS_MODEL_EXAMPLES (default
40) sets the number of examples.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import model
import pytest
from _redis import redis_dir, redis_server, require_redis_client  # noqa: F401
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from wonderq._core import MAX_ID, EngineError
from wonderq.config import Settings

NAMES = ["default", "q1", "q2", "q3"]
queue_names = st.sampled_from(["default"] * 3 + ["q1"] * 3 + ["q2"] * 2 + ["q3", "nope"])
cids = st.sampled_from([0, 1, 2] * 4 + [-1, MAX_ID])
delays = st.one_of(st.sampled_from([-1, -1, 0, 0, -2]), st.integers(1, 8))
visibilities = st.one_of(st.just(-1), st.integers(0, 8))
special = st.sampled_from(
    [b'"', b"\\", b"\x00\x1f\x7f", "\u00e9\u20ac\U0001f600".encode(), b"\xff", b"\xed\xa0\x80",
     b"a" * 65]
)  # fmt: skip
valid_bodies = st.text(min_size=1, max_size=12).map(str.encode)
bodies = st.one_of(
    *[valid_bodies] * 6, st.text(max_size=70).map(str.encode), st.binary(max_size=10), special
)
attribute_values = {
    "visibility_timeout_ms": st.one_of(st.integers(0, 8), st.just(-1)),
    "delay_ms": st.one_of(st.just(0), st.integers(0, 8)),
    "max_receives": st.one_of(st.none(), st.integers(1, 3), st.just(0)),
    "dead_letter_queue": st.one_of(st.none(), st.sampled_from([*NAMES, "nope"])),
    "max_message_bytes": st.integers(0, 80),
    "retention_ms": st.one_of(st.none(), st.sampled_from([60_000, 60_005, 59_999])),
}
attributes = st.one_of(st.fixed_dictionaries({}, optional=attribute_values), st.just({"bogus": 1}))

_STATE: dict[str, Any] = {}


class Harness:
    """One store on one loop for the whole run; each example starts from FLUSHALL."""

    def __init__(self, url: str, max_batch: int, visibility_ms: int) -> None:
        from wonderq.redis import RedisStore

        self.loop = asyncio.new_event_loop()
        cfg = Settings(
            backend=url,
            max_batch=max_batch,
            max_message_bytes=64,
            visibility_timeout_s=visibility_ms / 1000,
        )
        self.store = RedisStore(cfg, test_clock=True)
        self.loop.run_until_complete(self.store.start_bare(self.loop))

    def run(self, d: Any) -> Any:
        from wonderq.redis import wait

        async def answer() -> Any:
            if asyncio.iscoroutine(d):
                return await d
            return await wait(d)

        return self.loop.run_until_complete(asyncio.wait_for(answer(), 10))

    def close(self) -> None:
        self.loop.run_until_complete(self.store.close())
        self.loop.close()


class RedisVsModel(RuleBasedStateMachine):
    url = ""

    @initialize(
        max_batch=st.sampled_from([1, 3, 6, 6, 6]),
        visibility=st.integers(0, 8),
        chain=st.sampled_from(["plain", "q1>q2", "q1>q2>q3"]),
        max_receives=st.integers(1, 3),
    )
    def setup(self, max_batch, visibility, chain, max_receives):
        key = (max_batch, visibility)
        if _STATE.get("key") != key:
            if "harness" in _STATE:
                _STATE["harness"].close()
            _STATE["harness"] = Harness(self.url, max_batch, visibility)
            _STATE["key"] = key
        self.h: Harness = _STATE["harness"]
        self.store = self.h.store
        import redis

        redis.Redis.from_url(self.url).flushall()
        self.now = 0
        self.set_clock()
        self.h.run(self.store.put_queue("default", None))
        self.model = model.Broker(
            visibility_ms=visibility, max_message_bytes=64, max_batch=max_batch
        )
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
            assert self.both("put_queue", (name, attrs), (name, attrs)) == ("ok", True)

    def set_clock(self) -> None:
        self.h.run(self.store.set_test_clock([*NAMES, "nope"], self.now))

    def settle(self) -> None:
        """The model expires everything due; Redis sweeps every queue (an instant sweeper)."""
        self.model.expire(self.now, 10**9)
        for name in self.model.queue_names():
            self.h.run(self.store.script("sweep", name, [b"100000"]))
            self.h.run(self.store.drain_outbox(name))

    def both(self, method: str, store_args: tuple, model_args: tuple) -> tuple:
        self.settle()
        outcomes = []
        try:
            outcomes.append(("ok", self.h.run(getattr(self.store, method)(*store_args))))
        except EngineError as exc:
            outcomes.append(("error", type(exc).__name__, exc.code))
        try:
            outcomes.append(("ok", getattr(self.model, method)(*model_args)))
        except EngineError as exc:
            outcomes.append(("error", type(exc).__name__, exc.code))
        assert outcomes[0] == outcomes[1], (method, store_args, outcomes)
        return outcomes[0]

    def some_id(self, data):
        leased = sorted(i for i, m in self.model.messages.items() if m.state == "leased")
        choices = [st.integers(1, self.model.next_id), st.sampled_from([0, self.model.next_id])]
        if leased:
            choices.insert(0, st.sampled_from(leased))
        return data.draw(st.one_of(*choices))

    def some_lease(self, data):
        leased = sorted(i for i, m in self.model.messages.items() if m.state == "leased")
        return self.model.messages[data.draw(st.sampled_from(leased))]

    # ---- rules ----------------------------------------------------------------------------
    @rule(dt=st.one_of(st.integers(0, 3), st.integers(0, 30), st.sampled_from([59_990, 60_000])))
    def advance_clock(self, dt):
        self.now += dt
        self.set_clock()

    @precondition(lambda self: self.model.timers)
    @rule(extra=st.sampled_from([0, 0, 1]))
    def advance_to_next_deadline(self, extra):
        self.now = max(self.now, self.model.next_deadline()) + extra
        self.set_clock()

    @precondition(lambda self: any(m.state == "leased" for m in self.model.messages.values()))
    @rule(data=st.data())
    def holder_delete(self, data):
        m = self.some_lease(data)
        self.both("delete", (m.queue, m.cid, m.id), (m.queue, m.cid, m.id, self.now))

    @precondition(lambda self: any(m.state == "leased" for m in self.model.messages.values()))
    @rule(data=st.data(), timeout=st.one_of(st.just(0), st.integers(0, 8)))
    def holder_change_lease(self, data, timeout):
        m = self.some_lease(data)
        self.both(
            "change_lease",
            (m.queue, m.cid, m.id, timeout),
            (m.queue, m.cid, m.id, timeout, self.now),
        )

    @precondition(lambda self: any(m.state == "leased" for m in self.model.messages.values()))
    @rule(
        data=st.data(), stale=st.sampled_from([0, 0, 1, 2]), timeout=st.sampled_from([None, 0, 3])
    )
    def token_act(self, data, stale, timeout):
        """By lease token: the current one acts, an earlier receive's never does."""
        m = self.some_lease(data)
        receives = max(0, m.receives - stale)
        if timeout is None:
            self.both(
                "delete_token", (m.queue, m.id, receives), (m.queue, m.id, receives, self.now)
            )
        else:
            self.both("change_lease_token", (m.queue, m.id, receives, timeout),
                      (m.queue, m.id, receives, timeout, self.now))  # fmt: skip

    @rule(data=st.data(), queue=queue_names, receives=st.sampled_from([-1, 0, 1, 2, 2**32]),
          timeout=st.sampled_from([None, 0, 2, -1]))  # fmt: skip
    def token_any(self, data, queue, receives, timeout):
        msg_id = self.some_id(data)
        if timeout is None:
            self.both(
                "delete_token", (queue, msg_id, receives), (queue, msg_id, receives, self.now)
            )
        else:
            self.both("change_lease_token", (queue, msg_id, receives, timeout),
                      (queue, msg_id, receives, timeout, self.now))  # fmt: skip

    @rule(queue=queue_names, limit=st.integers(0, 7))
    def peek(self, queue, limit):
        self.both("peek", (queue, limit), (queue, limit, self.now))

    @precondition(lambda self: any(m.state == "leased" for m in self.model.messages.values()))
    @rule(data=st.data(), offset=st.sampled_from([-1, 0, 0, 1]), by_token=st.booleans(),
          release=st.booleans())  # fmt: skip
    def act_at_the_deadline(self, data, offset, by_token, release):
        """The fence at its edge, before anything swept: a lease works until now == deadline
        (exclusive), by cid and by token, for delete and for change lease."""
        m = self.some_lease(data)
        self.now = max(self.now, m.deadline + offset)
        self.set_clock()
        expected = self.now < m.deadline
        if release:
            d = (self.store.change_lease_token(m.queue, m.id, m.receives, 0) if by_token
                 else self.store.change_lease(m.queue, m.cid, m.id, 0))  # fmt: skip
        else:
            d = (self.store.delete_token(m.queue, m.id, m.receives) if by_token
                 else self.store.delete(m.queue, m.cid, m.id))  # fmt: skip
        got = self.h.run(d)
        assert got == expected, (m, self.now, got)
        if got:
            if release:
                self.model.change_lease(m.queue, m.cid, m.id, 0, self.now)
            else:
                self.model.delete(m.queue, m.cid, m.id, self.now)

    @rule(queue=queue_names, body=bodies, delay=delays)
    def publish(self, queue, body, delay):
        self.both("publish", (queue, body, delay), (queue, body, self.now, delay))

    @rule(data=st.data(), queue=queue_names, size=st.one_of(st.integers(1, 3), st.integers(0, 7)),
          with_delays=st.booleans())  # fmt: skip
    def publish_batch(self, data, queue, size, with_delays):
        batch = data.draw(
            st.lists(st.one_of(*[valid_bodies] * 10, bodies), min_size=size, max_size=size)
        )
        batch_delays = None
        if with_delays:
            n = data.draw(st.one_of(*[st.just(size)] * 5, st.integers(0, 7)))
            batch_delays = data.draw(st.lists(delays, min_size=n, max_size=n))
        self.both(
            "publish_batch", (queue, batch, batch_delays), (queue, batch, self.now, batch_delays)
        )

    @rule(
        queue=queue_names, texts=st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=4)
    )
    def publish_batch_json(self, queue, texts):
        data = json.dumps(texts).encode()
        self.settle()
        try:
            got = self.h.run(self.store.publish_batch_json(queue, data))
        except EngineError as exc:
            got = ("error", exc.code)
        try:
            first = self.model.publish_batch(queue, [t.encode() for t in texts], self.now)
            expected = json.dumps(
                {"ids": list(range(first, first + len(texts)))}, separators=(",", ":")
            ).encode()
        except EngineError as exc:
            expected = ("error", exc.code)
        if got is None:  # not the plain form (a lone surrogate): the model refused it too
            assert isinstance(expected, tuple), expected
            return
        assert got == expected

    @rule(queue=queue_names, cid=cids, limit=st.integers(0, 7), visibility=visibilities)
    def receive(self, queue, cid, limit, visibility):
        self.both(
            "receive", (queue, cid, limit, visibility), (queue, cid, limit, self.now, visibility)
        )

    @rule(queue=queue_names, cid=cids, limit=st.integers(1, 3), visibility=visibilities)
    def receive_more(self, queue, cid, limit, visibility):
        self.receive(queue, cid, limit, visibility)

    @rule(queue=queue_names, body=valid_bodies, delay=delays)
    def publish_more(self, queue, body, delay):
        self.publish(queue, body, delay)

    @rule(data=st.data(), queue=queue_names, cid=cids)
    def delete(self, data, queue, cid):
        msg_id = self.some_id(data)
        self.both("delete", (queue, cid, msg_id), (queue, cid, msg_id, self.now))

    @rule(data=st.data(), queue=queue_names, cid=cids, n=st.integers(0, 7))
    def delete_batch(self, data, queue, cid, n):
        ids = [self.some_id(data) for _ in range(n)]
        self.both("delete_batch", (queue, cid, ids), (queue, cid, ids, self.now))

    timeouts = st.one_of(st.just(0), st.integers(1, 8), st.integers(0, 8), st.just(-1))

    @rule(data=st.data(), queue=queue_names, cid=cids, timeout=timeouts)
    def change_lease(self, data, queue, cid, timeout):
        msg_id = self.some_id(data)
        self.both(
            "change_lease", (queue, cid, msg_id, timeout), (queue, cid, msg_id, timeout, self.now)
        )

    @rule(queue=queue_names, drop=st.sampled_from([False, False, False, True]))
    def purge_or_delete_queue(self, queue, drop):
        method = "delete_queue" if drop else "purge"
        self.both(method, (queue,), (queue,))

    @rule(name=st.sampled_from(NAMES), attrs=attributes)
    def put_queue(self, name, attrs):
        self.both("put_queue", (name, attrs), (name, attrs))

    # ---- invariants -----------------------------------------------------------------------
    @invariant()
    def agree(self):
        self.settle()
        infos, _next = self.h.run(self.store.list_queues("", "", 100))
        assert [i["name"] for i in infos] == self.model.queue_names()
        for info in infos:
            assert info == self.model.queue_info(info["name"])
        dropped = {row[0]: row[9] for row in self.model.stats()}
        for name, count in dropped.items():
            assert self.store._expired_retention.get(name, 0) == count, (name, count)


@pytest.fixture(scope="module")
def redis_model_url(redis_server):  # noqa: F811
    require_redis_client()
    yield redis_server.url
    if "harness" in _STATE:
        _STATE.pop("harness").close()
        _STATE.clear()


@pytest.mark.timeout(900)
def test_redis_store_matches_the_model(redis_model_url):
    RedisVsModel.url = redis_model_url
    case = RedisVsModel.TestCase
    case.settings = settings(
        max_examples=int(os.environ.get("WONDERQ_REDIS_MODEL_EXAMPLES", "40")),
        stateful_step_count=40,
        deadline=None,
        print_blob=True,
        derandomize=os.environ.get("WONDERQ_MODEL_DERANDOMIZE") == "1",
        suppress_health_check=list(HealthCheck),
    )
    case().runTest()
