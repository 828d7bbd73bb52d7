"""Unit tests of the engine's promises (DESIGN.md "Semantics"), with a fake clock (plain ints).

Every test body runs against the compiled engine and against the reference model in
tests/model.py, and every broker call is followed by check_invariants().
"""

from __future__ import annotations

import json
import random
import time

import model
import pytest

from wonderq import _core
from wonderq._core import (
    MAX_DELAY_MS,
    MAX_ID,
    MAX_META_BYTES,
    MAX_VISIBILITY_MS,
    MESSAGE_OVERHEAD,
    EngineError,
    IdsExhausted,
    InvalidArgument,
    MemoryLimitExceeded,
    MessageTooLarge,
    QueueInUse,
    QueueNotFound,
)

Q = "default"


class Checked:
    """Proxy that checks the broker's invariants after every method call."""

    def __init__(self, broker):
        self._broker = broker

    def __getattr__(self, name):
        value = getattr(self._broker, name)
        if not callable(value):
            return value

        def call(*args, **kwargs):
            try:
                return value(*args, **kwargs)
            finally:
                self._broker.check_invariants()

        return call


@pytest.fixture(params=["engine", "model"])
def make(request):
    cls = _core.Broker if request.param == "engine" else model.Broker

    def factory(**kwargs):
        broker = cls(**kwargs)
        broker.check_invariants()
        return Checked(broker)

    return factory


@pytest.fixture
def b(make):
    return make(visibility_ms=1000, max_batch=10)


def ids_of(response: bytes) -> list[int]:
    return [m["id"] for m in json.loads(response)["messages"]]


def msgs(response: bytes) -> list[tuple[int, str, int]]:
    return [(m["id"], m["body"], m["receives"]) for m in json.loads(response)["messages"]]


# ---- basics -----------------------------------------------------------------------------


def test_default_queue(b):
    assert b.queue_names() == ["default"]
    assert b.has_queue("default")
    info = b.queue_info("default")
    assert info == {
        "name": "default",
        "attributes": {
            "visibility_timeout_ms": 1000,
            "delay_ms": 0,
            "max_receives": None,
            "dead_letter_queue": None,
            "max_message_bytes": 1048576,
            "retention_ms": None,
            "meta": None,
        },
        "counts": {"ready": 0, "leased": 0, "delayed": 0},
        "totals": {"published": 0, "delivered": 0, "deleted": 0, "expired": 0, "dead_lettered": 0},
    }
    assert b.next_deadline() == -1
    assert b.next_id == 1
    assert b.memory_bytes == 0
    assert b.message_count == 0


def test_receive_response_is_exact_json(b):
    assert b.publish(Q, b'say "hi"\n', 0) == 1
    assert b.publish(Q, "h\u00e9\u20ac\U0001f600".encode(), 0) == 2
    assert (
        b.receive(Q, 7, 10, 0)
        == (
            '{"messages":[{"id":1,"body":"say \\"hi\\"\\n","receives":1},'
            '{"id":2,"body":"h\u00e9\u20ac\U0001f600","receives":1}]}'
        ).encode()
    )
    assert b.receive(Q, 7, 10, 0) == b'{"messages":[]}'


def test_ids_strictly_increase_and_lowest_first(b):
    assert [b.publish(Q, b"m%d" % i, 0) for i in range(5)] == [1, 2, 3, 4, 5]
    assert ids_of(b.receive(Q, 1, 2, 0)) == [1, 2]
    assert ids_of(b.receive(Q, 1, 2, 0)) == [3, 4]
    assert ids_of(b.receive(Q, 1, 2, 0)) == [5]


def test_redelivered_before_newer(b):
    b.publish_batch(Q, [b"a", b"b", b"c"], 0)
    assert ids_of(b.receive(Q, 1, 2, 0, 100)) == [1, 2]
    b.publish(Q, b"d", 50)
    assert b.expire(100, 100) == 2
    assert msgs(b.receive(Q, 2, 10, 100)) == [(1, "a", 2), (2, "b", 2), (3, "c", 1), (4, "d", 1)]


def test_receive_counts(b):
    b.publish_batch(Q, [b"a", b"b", b"c"], 0)
    b.receive(Q, 1, 2, 0)
    info = b.queue_info(Q)
    assert info["counts"] == {"ready": 1, "leased": 2, "delayed": 0}
    assert info["totals"]["delivered"] == 2
    assert b.ready_count(Q) == 1


# ---- leases -----------------------------------------------------------------------------


def test_lease_expires_exactly_at_deadline(b):
    b.publish(Q, b"x", 0)
    b.receive(Q, 1, 1, 0, 1000)
    assert b.next_deadline() == 1000
    assert b.expire(999, 10) == 0
    assert b.delete(Q, 1, 1, 1000) is False  # now == deadline: too late
    assert b.change_lease(Q, 1, 1, 5000, 1000) is False
    assert b.expire(1000, 10) == 1
    assert b.queue_info(Q)["totals"]["expired"] == 1
    assert msgs(b.receive(Q, 2, 1, 1000)) == [(1, "x", 2)]


def test_delete_just_before_deadline(b):
    b.publish(Q, b"x", 0)
    b.receive(Q, 1, 1, 0, 1000)
    assert b.delete(Q, 1, 1, 999) is True
    assert b.message_count == 0
    assert b.next_deadline() == -1
    assert b.queue_info(Q)["totals"]["deleted"] == 1
    assert b.delete(Q, 1, 1, 999) is False


def test_expired_but_unprocessed_lease_still_blocks_receive(b):
    b.publish(Q, b"x", 0)
    b.receive(Q, 1, 1, 0, 10)
    assert b.receive(Q, 2, 1, 50) == b'{"messages":[]}'
    assert b.delete(Q, 1, 1, 50) is False
    assert b.queue_info(Q)["counts"]["leased"] == 1


def test_delete_after_expiry_fails_whoever_holds_it(b):
    b.publish(Q, b"x", 0)
    b.receive(Q, 1, 1, 0, 100)
    b.expire(100, 10)
    assert ids_of(b.receive(Q, 2, 1, 100, 100)) == [1]
    assert b.delete(Q, 1, 1, 150) is False  # the old holder
    assert b.delete(Q, 2, 1, 150) is True


def test_delete_rules(b):
    b.put_queue("other")
    b.publish(Q, b"x", 0)
    b.publish(Q, b"ready", 0)
    b.receive(Q, 1, 1, 0)
    assert b.delete(Q, 2, 1, 1) is False  # not the holder
    assert b.delete("other", 1, 1, 1) is False  # wrong queue
    assert b.delete(Q, 1, 2, 1) is False  # not leased
    assert b.delete(Q, 1, 99, 1) is False  # unknown
    assert b.queue_info(Q)["counts"] == {"ready": 1, "leased": 1, "delayed": 0}
    assert b.delete(Q, 1, 1, 1) is True


def test_change_lease_by_non_holder(b):
    b.publish(Q, b"x", 0)
    b.receive(Q, 1, 1, 0, 100)
    assert b.change_lease(Q, 2, 1, 5000, 10) is False
    assert b.change_lease(Q, 2, 1, 0, 10) is False
    assert b.next_deadline() == 100


def test_extend(b):
    b.publish(Q, b"x", 0)
    b.receive(Q, 1, 1, 0, 100)
    assert b.change_lease(Q, 1, 1, 500, 90) is True
    assert b.next_deadline() == 590
    assert b.expire(589, 10) == 0
    assert b.delete(Q, 1, 1, 589) is True


def test_shorten(b):
    b.publish_batch(Q, [b"a", b"b"], 0)
    b.receive(Q, 1, 2, 0, 1000)
    assert b.change_lease(Q, 1, 2, 10, 0) is True
    assert b.next_deadline() == 10
    assert b.expire(10, 10) == 1
    assert ids_of(b.receive(Q, 1, 2, 10)) == [2]


def test_release(b):
    b.publish_batch(Q, [b"a", b"b"], 0)
    b.receive(Q, 1, 2, 0, 1000)
    assert b.change_lease(Q, 1, 1, 0, 5) is True
    assert b.queue_info(Q)["counts"] == {"ready": 1, "leased": 1, "delayed": 0}
    assert b.queue_info(Q)["totals"]["expired"] == 0
    assert b.delete(Q, 1, 1, 5) is False
    b.publish(Q, b"c", 5)
    assert msgs(b.receive(Q, 2, 5, 5)) == [(1, "a", 2), (3, "c", 1)]


def test_visibility_zero_lease(b):
    b.publish(Q, b"x", 0)
    assert ids_of(b.receive(Q, 1, 1, 0, 0)) == [1]
    assert b.delete(Q, 1, 1, 0) is False
    assert b.expire(0, 1) == 1
    assert b.ready_count(Q) == 1


def test_queue_visibility_default(make):
    b = make(visibility_ms=250)
    b.put_queue("q", {"visibility_timeout_ms": 40})
    b.publish(Q, b"x", 0)
    b.publish("q", b"y", 0)
    b.receive(Q, 1, 1, 0)
    b.receive("q", 1, 1, 0)
    assert b.next_deadline() == 40
    assert b.expire(40, 10) == 1
    assert b.next_deadline() == 250


# ---- delays -----------------------------------------------------------------------------


def test_delay_then_lease(b):
    assert b.publish(Q, b"later", 100, 500) == 1
    b.publish(Q, b"now", 100)
    assert b.queue_info(Q)["counts"] == {"ready": 1, "leased": 0, "delayed": 1}
    assert ids_of(b.receive(Q, 1, 10, 100)) == [2]
    assert b.next_deadline() == 600
    assert b.expire(599, 10) == 0
    assert b.delete(Q, 1, 1, 599) is False  # a delayed message is not leased
    assert b.expire(600, 10) == 1
    assert b.queue_info(Q)["totals"]["expired"] == 0
    assert msgs(b.receive(Q, 1, 10, 600)) == [(1, "later", 1)]


def test_queue_default_delay_and_override(b):
    b.put_queue("slow", {"delay_ms": 300})
    b.publish("slow", b"a", 0)
    b.publish("slow", b"b", 0, 0)
    b.publish_batch("slow", [b"c", b"d"], 0, [-1, 0])
    assert ids_of(b.receive("slow", 1, 10, 0)) == [2, 4]
    b.expire(300, 10)
    assert ids_of(b.receive("slow", 1, 10, 300)) == [1, 3]


def test_delayed_message_comes_before_newer_once_due(b):
    b.publish(Q, b"a", 0, 100)
    b.publish(Q, b"b", 0)
    b.expire(100, 10)
    assert ids_of(b.receive(Q, 1, 10, 100)) == [1, 2]


# ---- timer heap -------------------------------------------------------------------------


def test_equal_deadlines_expire_in_id_order(b):
    b.publish_batch(Q, [b"%d" % i for i in range(6)], 0)
    b.receive(Q, 1, 3, 0, 100)  # 1, 2, 3
    b.publish(Q, b"x", 0, 100)  # 7, delayed to the same deadline
    b.receive(Q, 2, 3, 0, 100)  # 4, 5, 6
    assert b.expire(100, 2) == 2
    assert ids_of(b.receive(Q, 3, 10, 100, 50)) == [1, 2]
    assert b.expire(100, 3) == 3
    assert ids_of(b.receive(Q, 3, 10, 100, 50)) == [3, 4, 5]
    assert b.expire(100, 10) == 2
    assert ids_of(b.receive(Q, 3, 10, 100, 50)) == [6, 7]


def test_expire_budget_is_respected(b):
    for _ in range(5):
        b.publish_batch(Q, [b"x"] * 10, 0)
        b.receive(Q, 1, 10, 0, 10)
    assert b.expire(10, 0) == 0
    assert b.expire(10, 7) == 7
    assert b.next_deadline() == 10
    assert b.expire(10, 100) == 43
    assert b.expire(10, 100) == 0
    assert b.next_deadline() == -1


def test_expire_processes_in_deadline_order(b):
    b.publish_batch(Q, [b"a", b"b", b"c"], 0)
    b.receive(Q, 1, 1, 0, 300)
    b.receive(Q, 1, 1, 0, 100)
    b.receive(Q, 1, 1, 0, 200)
    assert b.expire(1000, 1) == 1
    assert ids_of(b.receive(Q, 2, 10, 1000, 1)) == [2]
    assert b.expire(1000, 1) == 1
    assert ids_of(b.receive(Q, 2, 10, 1000, 1)) == [3]


# ---- dead letters -----------------------------------------------------------------------


def test_dead_letter_chain(b):
    b.put_queue("q3")
    b.put_queue("q2", {"max_receives": 1, "dead_letter_queue": "q3"})
    b.put_queue("q1", {"max_receives": 2, "dead_letter_queue": "q2"})
    assert b.publish("q1", b"job", 0) == 1
    b.receive("q1", 1, 1, 0, 10)
    b.expire(10, 10)  # receives 1 < 2: back in q1
    assert b.queue_info("q1")["totals"]["expired"] == 1
    assert msgs(b.receive("q1", 1, 1, 10, 10)) == [(1, "job", 2)]
    b.expire(20, 10)  # receives 2: to q2, count reset
    assert b.queue_info("q1")["totals"]["dead_lettered"] == 1
    assert b.queue_info("q1")["totals"]["expired"] == 1
    assert b.ready_count("q1") == 0
    assert msgs(b.receive("q2", 1, 1, 20, 10)) == [(1, "job", 1)]
    assert b.change_lease("q2", 1, 1, 0, 25) is True  # a release dead-letters too
    assert b.queue_info("q2")["totals"]["dead_lettered"] == 1
    assert msgs(b.receive("q3", 1, 1, 25, 10)) == [(1, "job", 1)]
    b.expire(35, 10)  # q3 has no limit: stays
    assert msgs(b.receive("q3", 1, 1, 35, 10)) == [(1, "job", 2)]
    assert b.delete("q3", 1, 1, 40) is True
    assert b.message_count == 0


def test_dead_letter_keeps_order_in_target(b):
    b.put_queue("dlq")
    b.put_queue("src", {"max_receives": 1, "dead_letter_queue": "dlq"})
    b.publish("src", b"old", 0)
    b.publish("dlq", b"newer", 0)
    b.receive("src", 1, 1, 0, 10)
    b.publish("dlq", b"newest", 0)
    b.expire(10, 10)
    assert ids_of(b.receive("dlq", 1, 10, 10)) == [1, 2, 3]


def test_dead_letter_attribute_rules(b):
    b.put_queue("d")
    with pytest.raises(InvalidArgument) as e:
        b.put_queue("q", {"max_receives": 3})
    assert e.value.code == "invalid_attribute"
    with pytest.raises(InvalidArgument):
        b.put_queue("q", {"max_receives": 3, "dead_letter_queue": "nope"})
    with pytest.raises(InvalidArgument):
        b.put_queue("q", {"max_receives": 3, "dead_letter_queue": "q"})
    assert not b.has_queue("q")
    assert b.put_queue("q", {"max_receives": 3, "dead_letter_queue": "d"}) is True
    with pytest.raises(InvalidArgument):
        b.put_queue("q", {"dead_letter_queue": None})  # max_receives would dangle
    with pytest.raises(InvalidArgument):
        b.put_queue("d", {"dead_letter_queue": "d"})
    assert b.put_queue("q", {"max_receives": None, "dead_letter_queue": None}) is False
    assert b.put_queue("q", {"dead_letter_queue": "d"}) is False  # without max_receives: fine


def test_queue_serving_as_dead_letter_queue_cannot_be_deleted(b):
    b.put_queue("d")
    b.put_queue("q", {"max_receives": 1, "dead_letter_queue": "d"})
    with pytest.raises(QueueInUse) as e:
        b.delete_queue("d")
    assert (e.value.status, e.value.code) == (409, "queue_in_use")
    b.delete_queue("q")
    assert b.delete_queue("d") == 0
    assert b.queue_names() == ["default"]


# ---- queues -----------------------------------------------------------------------------


def test_default_queue_cannot_be_deleted(b):
    with pytest.raises(QueueInUse):
        b.delete_queue("default")


def test_unknown_queue(b):
    for call in (
        lambda: b.publish("nope", b"x", 0),
        lambda: b.publish_batch("nope", [b"x"], 0),
        lambda: b.receive("nope", 1, 1, 0),
        lambda: b.delete("nope", 1, 1, 0),
        lambda: b.delete_batch("nope", 1, [1], 0),
        lambda: b.change_lease("nope", 1, 1, 0, 0),
        lambda: b.purge("nope"),
        lambda: b.delete_queue("nope"),
        lambda: b.queue_info("nope"),
        lambda: b.ready_count("nope"),
        lambda: b.restore("nope", 5, b"x", 0, 0),
        lambda: b.publish(None, b"x", 0),
    ):
        with pytest.raises(QueueNotFound) as e:
            call()
        assert (e.value.status, e.value.code) == (404, "queue_not_found")
        assert "does not exist" in str(e.value)
    assert not b.has_queue("nope")
    assert not b.has_queue(3)


def test_delete_queue_with_leased_and_delayed_messages(b):
    b.put_queue("q")
    b.publish_batch("q", [b"a", b"b", b"c", b"d"], 0)
    b.publish("q", b"e", 0, 5000)
    b.publish(Q, b"keep", 0)
    b.receive("q", 1, 2, 0, 700)
    b.receive(Q, 1, 1, 0, 900)
    assert b.next_deadline() == 700
    assert b.delete_queue("q") == 5
    assert not b.has_queue("q")
    assert b.next_deadline() == 900  # the queue's heap entries are gone
    assert b.message_count == 1
    assert b.expire(10_000, 100) == 1
    assert b.delete(Q, 1, 1, 0) is False
    assert b.memory_bytes == MESSAGE_OVERHEAD + 4
    assert b.put_queue("q") is True  # the name can be reused, empty
    assert b.queue_info("q")["counts"] == {"ready": 0, "leased": 0, "delayed": 0}
    assert b.queue_info("q")["totals"]["published"] == 0


def test_purge(b):
    b.put_queue("q")
    b.publish_batch("q", [b"a", b"b", b"c"], 0)
    b.publish("q", b"d", 0, 100)
    b.publish(Q, b"other", 0)
    b.receive("q", 1, 1, 0)
    assert b.purge("q") == 4
    assert b.queue_info("q")["counts"] == {"ready": 0, "leased": 0, "delayed": 0}
    assert b.queue_info("q")["totals"]["published"] == 4
    assert b.delete("q", 1, 1, 1) is False
    assert b.next_deadline() == -1
    assert b.message_count == 1
    assert b.purge("q") == 0
    assert b.publish("q", b"e", 1) == 6


def test_put_queue_create_update(b):
    assert b.put_queue("jobs", {"visibility_timeout_ms": 5, "max_message_bytes": 10}) is True
    assert b.put_queue("jobs", {"delay_ms": 7}) is False
    attrs = b.queue_info("jobs")["attributes"]
    assert attrs == {
        "visibility_timeout_ms": 5,
        "delay_ms": 7,
        "max_receives": None,
        "dead_letter_queue": None,
        "max_message_bytes": 10,
        "retention_ms": None,
        "meta": None,
    }
    assert b.queue_names() == ["default", "jobs"]
    b.put_queue("A-b_9")
    assert b.queue_names() == ["A-b_9", "default", "jobs"]
    assert b.put_queue("default", {"visibility_timeout_ms": 1}) is False


def test_queue_meta_is_kept_and_returned(b):
    """``meta`` is opaque text the engine keeps with a queue (the SQS face's JSON object):
    set on create or update, kept by updates that do not name it, cleared by None, gone with
    the queue, not inherited by a new queue of the same name."""
    meta = '{"tags":{"team":"é"}}'
    assert b.put_queue("m", {"meta": meta, "delay_ms": 1}) is True
    assert b.queue_info("m")["attributes"]["meta"] == meta
    b.put_queue("m", {"delay_ms": 2})
    assert b.queue_info("m")["attributes"]["meta"] == meta
    b.put_queue("m", {"meta": "x" * MAX_META_BYTES})
    assert b.queue_info("m")["attributes"]["meta"] == "x" * MAX_META_BYTES
    b.put_queue("m", {"meta": None})
    assert b.queue_info("m")["attributes"]["meta"] is None
    b.put_queue("m", {"meta": meta})
    b.put_queue("other", {"meta": "o"})
    b.delete_queue("m")
    b.put_queue("m")  # may reuse the freed slot: must not see the old meta
    assert b.queue_info("m")["attributes"]["meta"] is None
    assert b.queue_info("other")["attributes"]["meta"] == "o"
    assert b.queue_info("default")["attributes"]["meta"] is None


@pytest.mark.parametrize(
    "attrs",
    [
        {"visibility": 5},
        {"visibility_timeout_ms": -1},
        {"visibility_timeout_ms": MAX_VISIBILITY_MS + 1},
        {"visibility_timeout_ms": True},
        {"visibility_timeout_ms": 1.5},
        {"visibility_timeout_ms": "5"},
        {"delay_ms": MAX_DELAY_MS + 1},
        {"delay_ms": None},
        {"max_receives": 0},
        {"max_message_bytes": 0},
        {"max_message_bytes": 1048577},
        {"dead_letter_queue": 5},
        {"retention_ms": 59_999},
        {"retention_ms": 1_209_600_001},
        {"retention_ms": 0},
        {"retention_ms": 60_000.0},
        {"meta": 5},
        {"meta": b"{}"},
        {"meta": "x" * (MAX_META_BYTES + 1)},
        {"meta": "é" * (MAX_META_BYTES // 2 + 1)},  # counted in bytes of UTF-8
        {"meta": "\ud800"},
        {1: 2},
    ],
)
def test_bad_attributes(b, attrs):
    b.put_queue("q", {"delay_ms": 3})
    before = b.queue_info("q")
    with pytest.raises(InvalidArgument) as e:
        b.put_queue("q", attrs)
    assert e.value.code == "invalid_attribute"
    assert e.value.status == 400
    with pytest.raises(InvalidArgument):
        b.put_queue("new", attrs)
    assert b.queue_info("q") == before
    assert not b.has_queue("new")


def test_attribute_bounds_accepted(b):
    b.put_queue(
        "q",
        {
            "visibility_timeout_ms": MAX_VISIBILITY_MS,
            "delay_ms": MAX_DELAY_MS,
            "max_message_bytes": 1048576,
            "retention_ms": 1_209_600_000,
        },
    )
    b.put_queue("q", {"visibility_timeout_ms": 0, "delay_ms": 0, "max_message_bytes": 1})
    b.put_queue("q", {"retention_ms": 60_000})
    assert b.queue_info("q")["attributes"]["retention_ms"] == 60_000
    b.put_queue("q", {"retention_ms": None})
    assert b.queue_info("q")["attributes"]["retention_ms"] is None


@pytest.mark.parametrize("name", ["", "a" * 81, "a b", "a/b", "é", "a\n", None, 5, b"q"])
def test_bad_queue_names(b, name):
    with pytest.raises(InvalidArgument) as e:
        b.put_queue(name)
    assert e.value.code == "invalid_queue_name"


def test_longest_queue_name(b):
    assert b.put_queue("a" * 80) is True


def test_bad_attributes_mapping(b):
    with pytest.raises(InvalidArgument):
        b.put_queue("q", [("delay_ms", 1)])


# ---- bodies -----------------------------------------------------------------------------


def test_every_code_point_up_to_ff(b):
    text = "".join(chr(i) for i in range(256))
    b.publish(Q, text.encode(), 0)
    response = b.receive(Q, 1, 1, 0)
    assert json.loads(response)["messages"][0]["body"] == text
    escaped = json.dumps(text, ensure_ascii=False)
    assert response == b'{"messages":[{"id":1,"body":' + escaped.encode() + b',"receives":1}]}'
    assert b.memory_bytes == MESSAGE_OVERHEAD + len(escaped.encode()) - 2


def test_random_utf8_round_trips(b):
    rng = random.Random(1234)
    alphabet = [
        *range(0, 0x80),
        *range(0x80, 0x800, 7),
        *range(0x800, 0xD800, 101),
        *range(0xE000, 0x10000, 97),
        *range(0x10000, 0x110000, 4099),
        0x10FFFF,
    ]
    texts = [
        "".join(chr(rng.choice(alphabet)) for _ in range(rng.randint(1, 40))) for _ in range(300)
    ]
    for i in range(0, 300, 10):
        b.publish_batch(Q, [t.encode() for t in texts[i : i + 10]], 0)
    got = []
    while True:
        batch = json.loads(b.receive(Q, 1, 10, 0))["messages"]
        if not batch:
            break
        got += [m["body"] for m in batch]
    assert got == texts
    assert b.memory_bytes == sum(
        MESSAGE_OVERHEAD + len(json.dumps(t, ensure_ascii=False).encode()) - 2 for t in texts
    )


INVALID_UTF8 = [
    b"\x80",
    b"\xbf",
    b"a\xc0\x80",
    b"\xc1\xbf",
    b"\xc2",
    b"\xc2\x41",
    b"\xe0\x80\x80",
    b"\xe0\x9f\xbf",
    b"\xed\xa0\x80",
    b"\xed\xbf\xbf",
    b"\xe1\x80",
    b"\xef\xbf",
    b"\xf0\x80\x80\x80",
    b"\xf0\x8f\xbf\xbf",
    b"\xf4\x90\x80\x80",
    b"\xf5\x80\x80\x80",
    b"\xff",
    b"\xfe",
    b"\xf0\x90\x80",
    b"0123456789abcdef\x80",
    b"abcdefgh\xe2\x82",
]


@pytest.mark.parametrize("body", INVALID_UTF8)
def test_invalid_utf8_refused(b, body):
    with pytest.raises(InvalidArgument) as e:
        b.publish(Q, body, 0)
    assert e.value.code == "invalid_body"
    with pytest.raises(InvalidArgument):
        b.publish_batch(Q, [b"ok", body], 0)
    assert b.message_count == 0
    assert b.next_id == 1


def test_utf8_validation_matches_python_decoder():
    """Random byte strings biased towards UTF-8 edge cases, against bytes.decode."""
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    edges = [
        0x00,
        0x1F,
        0x22,
        0x5C,
        0x7F,
        0x80,
        0x8F,
        0x90,
        0x9F,
        0xA0,
        0xBF,
        0xC0,
        0xC1,
        0xC2,
        0xDF,
        0xE0,
        0xE1,
        0xEC,
        0xED,
        0xEE,
        0xEF,
        0xF0,
        0xF1,
        0xF3,
        0xF4,
        0xF5,
        0xFF,
        0x41,
    ]
    broker = _core.Broker(max_batch=1)
    for _ in range(20000):
        n = rng.randint(1, 12)
        body = bytes(
            rng.choice(edges) if rng.random() < 0.8 else rng.randrange(256) for _ in range(n)
        )
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        try:
            broker.publish(Q, body, 0)
            accepted = True
        except InvalidArgument:
            accepted = False
        assert accepted == (text is not None), f"seed={seed} body={body!r}"
        if accepted:
            got = json.loads(broker.receive(Q, 1, 1, 0))["messages"][0]
            assert got["body"] == text, f"seed={seed} body={body!r}"
            assert broker.delete(Q, 1, got["id"], 0)
    broker.check_invariants()


def test_long_ascii_with_escapes_in_words(b):
    # The 8-byte fast path must still catch a special byte at any position.
    for pos in range(17):
        for special in (b'"', b"\\", b"\x00", b"\x1f", b"\x7f", b"\xc3\xa9"):
            body = b"a" * pos + special + b"b" * (16 - pos)
            b.publish(Q, body, 0)
            got = json.loads(b.receive(Q, 1, 1, 0))["messages"][0]
            assert got["body"] == body.decode()
            assert b.delete(Q, 1, got["id"], 0)


def test_long_runs_with_a_special_byte_anywhere(b):
    # Runs of 512 bytes or more are scanned 32 bytes per step where the CPU has AVX2: a
    # special byte (or an invalid one) at any offset of a window, and near the end, is seen.
    for n in (512, 600, 4096):
        for pos in [*range(0, 70), *range(n - 70, n)]:
            for special in (b'"', b"\\", b"\x00", b"\x1f", b"\xc3\xa9", b"\xff"):
                body = (b"a" * pos + special + b"b" * n)[:n] if pos + len(special) <= n else b""
                if not body:
                    continue
                if special == b"\xff":
                    with pytest.raises(InvalidArgument):
                        b.publish(Q, body, 0)
                    continue
                b.publish(Q, body, 0)
                got = json.loads(b.receive(Q, 1, 1, 0))["messages"][0]
                assert got["body"] == body.decode(), (n, pos, special)
                assert b.delete(Q, 1, got["id"], 0)


def test_body_bounds(b):
    b.put_queue("small", {"max_message_bytes": 4})
    with pytest.raises(InvalidArgument) as e:
        b.publish("small", b"", 0)
    assert e.value.code == "invalid_body"
    with pytest.raises(MessageTooLarge) as e2:
        b.publish("small", b"12345", 0)
    assert (e2.value.status, e2.value.code) == (413, "message_too_large")
    assert b.publish("small", b"1234", 0) == 1
    assert b.publish("small", "\u20ac".encode(), 0) == 2  # 3 bytes
    with pytest.raises(MessageTooLarge):
        b.publish("small", "\u20ac\u20ac".encode(), 0)
    with pytest.raises(InvalidArgument):
        b.publish("small", "abc", 0)
    assert b.publish("small", bytearray(b"ab"), 0) == 3
    assert b.publish("small", memoryview(b"cd"), 0) == 4
    assert b.message_count == 4


# ---- argument bounds --------------------------------------------------------------------


@pytest.mark.parametrize("limit", [0, -1, 11, True, "1", None, 1.0, MAX_ID + 1])
def test_limit_bounds(b, limit):
    b.publish(Q, b"x", 0)
    with pytest.raises(InvalidArgument) as e:
        b.receive(Q, 1, limit, 0)
    assert e.value.code == "invalid_limit"
    assert b.ready_count(Q) == 1


def test_limit_max_batch(b):
    b.publish_batch(Q, [b"x"] * 10, 0)
    b.publish(Q, b"y", 0)
    assert len(ids_of(b.receive(Q, 1, 10, 0))) == 10
    assert ids_of(b.receive(Q, 1, 1, 0)) == [11]


@pytest.mark.parametrize("cid", [-1, MAX_ID + 1, True, "1", None])
def test_cid_bounds(b, cid):
    with pytest.raises(InvalidArgument) as e:
        b.receive(Q, cid, 1, 0)
    assert e.value.code == "invalid_cid"
    with pytest.raises(InvalidArgument):
        b.delete(Q, cid, 1, 0)
    with pytest.raises(InvalidArgument):
        b.change_lease(Q, cid, 1, 10, 0)
    with pytest.raises(InvalidArgument):
        b.delete_batch(Q, cid, [1], 0)


@pytest.mark.parametrize("msg_id", [0, -1, MAX_ID + 1, True, "1"])
def test_id_bounds(b, msg_id):
    with pytest.raises(InvalidArgument) as e:
        b.delete(Q, 1, msg_id, 0)
    assert e.value.code == "invalid_id"
    with pytest.raises(InvalidArgument):
        b.change_lease(Q, 1, msg_id, 10, 0)
    with pytest.raises(InvalidArgument):
        b.delete_batch(Q, 1, [1, msg_id], 0)


def test_extreme_ids_and_cids(b):
    b.publish(Q, b"x", 0)
    assert ids_of(b.receive(Q, MAX_ID, 1, 0)) == [1]
    assert b.delete(Q, 1, MAX_ID, 0) is False
    assert b.delete(Q, 0, 1, 0) is False
    assert b.delete(Q, MAX_ID, 1, 0) is True


def test_time_argument_bounds(b):
    b.publish(Q, b"x", 0)
    for call, code in [
        (lambda: b.publish(Q, b"x", 0, -2), "invalid_delay"),
        (lambda: b.publish(Q, b"x", 0, MAX_DELAY_MS + 1), "invalid_delay"),
        (lambda: b.publish(Q, b"x", -1), "invalid_now"),
        (lambda: b.receive(Q, 1, 1, 0, -2), "invalid_visibility"),
        (lambda: b.receive(Q, 1, 1, 0, MAX_VISIBILITY_MS + 1), "invalid_visibility"),
        (lambda: b.change_lease(Q, 1, 1, -1, 0), "invalid_timeout"),
        (lambda: b.change_lease(Q, 1, 1, MAX_VISIBILITY_MS + 1, 0), "invalid_timeout"),
        (lambda: b.expire(0, -1), "invalid_budget"),
        (lambda: b.expire(-5, 1), "invalid_now"),
    ]:
        with pytest.raises(InvalidArgument) as e:
            call()
        assert e.value.code == code
    assert b.message_count == 1
    assert b.publish(Q, b"x", 0, MAX_DELAY_MS) == 2
    assert ids_of(b.receive(Q, 1, 1, 0, MAX_VISIBILITY_MS)) == [1]
    assert b.next_deadline() == MAX_VISIBILITY_MS


def test_broker_arguments(make):
    for kwargs in (
        {"visibility_ms": -1},
        {"max_message_bytes": 0},
        {"max_batch": 0},
        {"max_memory": -1},
        {"max_message_bytes": (1 << 28) + 1},
    ):
        with pytest.raises(InvalidArgument):
            make(**kwargs)


# ---- batches ----------------------------------------------------------------------------


def test_publish_batch(b):
    assert b.publish_batch(Q, [b"a"], 0) == 1
    assert b.publish_batch(Q, (b"b", b"c", b"d"), 0) == 2
    assert b.next_id == 5
    assert b.publish_batch(Q, [b"e", b"f"], 0, [100, -1]) == 5
    assert ids_of(b.receive(Q, 1, 10, 0)) == [1, 2, 3, 4, 6]
    assert b.queue_info(Q)["totals"]["published"] == 6


@pytest.mark.parametrize(
    ("bodies", "delays", "exc", "code"),
    [
        ([], None, InvalidArgument, "invalid_batch"),
        ([b"x"] * 11, None, InvalidArgument, "invalid_batch"),
        (b"abc", None, InvalidArgument, "invalid_batch"),
        ([b"ok", "str"], None, InvalidArgument, "invalid_body"),
        ([b"ok", b""], None, InvalidArgument, "invalid_body"),
        ([b"ok", b"\xff"], None, InvalidArgument, "invalid_body"),
        ([b"ok", b"x" * 1048577], None, MessageTooLarge, "message_too_large"),
        ([b"ok", b"ok"], [0], InvalidArgument, "invalid_delay"),
        ([b"ok", b"ok"], [0, -2], InvalidArgument, "invalid_delay"),
        ([b"ok", b"ok"], [0, None], InvalidArgument, "invalid_delay"),
    ],
)
def test_publish_batch_all_or_nothing(b, bodies, delays, exc, code):
    with pytest.raises(exc) as e:
        b.publish_batch(Q, bodies, 0, delays)
    assert e.value.code == code
    assert b.next_id == 1
    assert b.message_count == 0
    assert b.queue_info(Q)["totals"]["published"] == 0


def test_delete_batch(b):
    b.publish_batch(Q, [b"a", b"b", b"c", b"d"], 0)
    b.receive(Q, 1, 3, 0)
    assert b.delete_batch(Q, 1, [3, 4, 1, 1, 99], 5) == ([3, 1], [4, 1, 99])
    assert b.delete_batch(Q, 1, [], 5) == ([], [])
    assert b.queue_info(Q)["totals"]["deleted"] == 2
    with pytest.raises(InvalidArgument) as e:
        b.delete_batch(Q, 1, list(range(1, 12)), 5)
    assert e.value.code == "invalid_batch"
    with pytest.raises(InvalidArgument):
        b.delete_batch(Q, 1, [2, 0], 5)
    assert b.queue_info(Q)["counts"]["leased"] == 1  # nothing deleted by a refused batch
    assert b.delete_batch(Q, 1, iter([2]), 5) == ([2], [])


# ---- memory -----------------------------------------------------------------------------


def test_memory_limit(make):
    limit = 3 * (MESSAGE_OVERHEAD + 10)
    b = make(max_memory=limit, max_batch=10)
    assert b.memory_limit == limit
    b.publish(Q, b"0123456789", 0)
    b.publish(Q, b"0123456789", 0)
    with pytest.raises(MemoryLimitExceeded) as e:
        b.publish_batch(Q, [b"0123456789", b"x"], 0)  # all or nothing
    assert (e.value.status, e.value.code) == (507, "memory_limit")
    assert b.message_count == 2
    assert b.next_id == 3
    b.publish(Q, b"0123456789", 0)  # exactly at the limit
    assert b.memory_bytes == limit
    with pytest.raises(MemoryLimitExceeded):
        b.publish(Q, b"x", 0)
    with pytest.raises(MemoryLimitExceeded):
        b.publish(Q, b"x", 0, 100)
    assert b.message_count == 3
    assert b.next_id == 4
    assert b.queue_info(Q)["totals"]["published"] == 3
    # Reads, deletes and restores keep working.
    assert ids_of(b.receive(Q, 1, 2, 0)) == [1, 2]
    assert b.delete(Q, 1, 1, 1) is True
    b.restore(Q, 100, b"0123456789" * 5, 0, 1)
    assert b.memory_bytes > limit
    assert b.purge(Q) == 3
    assert b.publish(Q, b"x", 2) == 101


def test_memory_accounts_escaped_length(b):
    b.publish(Q, b'\x00"', 0)
    assert b.memory_bytes == MESSAGE_OVERHEAD + 8
    assert b.message_count == 1


# ---- recovery hooks ---------------------------------------------------------------------


def test_restore_and_set_next_id(b):
    b.restore(Q, 10, b"ten", 3, 0)
    assert b.next_id == 11
    b.restore(Q, 5, b"five", 0, 0)  # below next_id but unused: accepted
    assert b.next_id == 11
    b.restore(Q, 7, b"seven", 1, 0, 100)
    with pytest.raises(InvalidArgument) as e:
        b.restore(Q, 10, b"again", 0, 0)
    assert e.value.code == "invalid_id"
    with pytest.raises(InvalidArgument):
        b.restore(Q, 7, b"again", 0, 0)
    assert b.queue_info(Q)["totals"]["published"] == 0
    b.set_next_id(20)
    b.set_next_id(15)  # never backwards
    assert b.next_id == 20
    assert b.publish(Q, b"new", 0) == 20
    assert msgs(b.receive(Q, 1, 10, 0)) == [(5, "five", 1), (10, "ten", 4), (20, "new", 1)]
    b.expire(100, 10)
    assert msgs(b.receive(Q, 1, 10, 100)) == [(7, "seven", 2)]
    with pytest.raises(InvalidArgument):
        b.restore(Q, 20, b"leased", 0, 100)
    for bad in (0, MAX_ID + 2, True):
        with pytest.raises(InvalidArgument):
            b.set_next_id(bad)
    with pytest.raises(InvalidArgument) as e:
        b.restore(Q, 30, b"x", -1, 0)
    assert e.value.code == "invalid_receives"
    with pytest.raises(InvalidArgument):
        b.restore(Q, 30, b"\xff", 0, 0)
    with pytest.raises(InvalidArgument):
        b.restore(Q, 30, b"x", 0, 0, -1)


def test_restore_counts_receives_for_dead_letters(b):
    b.put_queue("d")
    b.put_queue("q", {"max_receives": 3, "dead_letter_queue": "d"})
    b.restore("q", 4, b"x", 2, 0)
    b.receive("q", 1, 1, 0, 10)
    b.expire(10, 10)
    assert msgs(b.receive("d", 1, 1, 10)) == [(4, "x", 1)]


def test_ids_exhausted(b):
    b.set_next_id(MAX_ID)
    assert b.publish(Q, b"last", 0) == MAX_ID
    assert b.next_id == MAX_ID + 1
    with pytest.raises(IdsExhausted) as e:
        b.publish(Q, b"x", 0)
    assert e.value.status == 507
    with pytest.raises(IdsExhausted):
        b.publish_batch(Q, [b"x"], 0)
    assert b.message_count == 1


def test_restore_max_id(b):
    b.restore(Q, MAX_ID, b"x", 0, 0)
    assert b.next_id == MAX_ID + 1
    with pytest.raises(IdsExhausted):
        b.publish(Q, b"x", 0)


# ---- metrics ----------------------------------------------------------------------------


def test_stats(b):
    b.put_queue("a")
    b.publish_batch("a", [b"1", b"2", b"3"], 0)
    b.publish("a", b"4", 0, 50)
    b.receive("a", 1, 2, 0, 10)
    b.delete("a", 1, 1, 1)
    b.expire(10, 10)
    assert b.stats() == [
        ("a", 2, 0, 1, 4, 2, 1, 1, 0, 0),
        ("default", 0, 0, 0, 0, 0, 0, 0, 0, 0),
    ]


# ---- what the store layer needs: peek, the queue's delay, lease tokens ---------------------


def test_queue_delay_ms(b):
    assert b.queue_delay_ms(Q) == 0
    b.put_queue("slow", {"delay_ms": 5000})
    assert b.queue_delay_ms("slow") == 5000
    b.put_queue("slow", {"delay_ms": 0})
    assert b.queue_delay_ms("slow") == 0
    with pytest.raises(QueueNotFound):
        b.queue_delay_ms("nope")
    with pytest.raises(QueueNotFound):
        b.queue_delay_ms(None)


def test_peek_shows_what_a_receive_would_take(b):
    b.publish_batch(Q, [b"a", b'"b"', b"c", b"d"], 0)
    b.publish(Q, b"later", 0, 50)
    assert ids_of(b.receive(Q, 1, 3, 0, 10)) == [1, 2, 3]
    b.expire(10, 10)
    b.receive(Q, 1, 1, 10, 100)  # 1 leased again; 2 and 3 wait in the return heap
    before = b.queue_info(Q)
    peeked = b.peek(Q, 10, 20)
    assert msgs(peeked) == [(2, '"b"', 1), (3, "c", 1), (4, "d", 0)]
    assert b.queue_info(Q) == before  # nothing leased or counted
    assert msgs(b.peek(Q, 2, 20)) == [(2, '"b"', 1), (3, "c", 1)]
    assert b.peek(Q, 3, 20) == peeked  # the same again: the heap is intact
    # A receive then takes exactly those, with one more receive each.
    assert msgs(b.receive(Q, 2, 3, 20)) == [(2, '"b"', 2), (3, "c", 2), (4, "d", 1)]
    assert b.peek(Q, 1, 20) == b'{"messages":[]}'  # the delayed one is not available yet
    b.expire(50, 10)
    assert msgs(b.peek(Q, 1, 50)) == [(5, "later", 0)]


def test_peek_arguments(b):
    for limit in (0, 11, True, None, "1"):
        with pytest.raises(InvalidArgument) as e:
            b.peek(Q, limit, 0)
        assert e.value.code == "invalid_limit"
    with pytest.raises(QueueNotFound):
        b.peek("nope", 1, 0)
    with pytest.raises(InvalidArgument) as e:
        b.peek(Q, 1, -1)
    assert e.value.code == "invalid_now"


def test_peek_answer_is_exact_json(b):
    body = 'tab\t "q" \\ \u00e9 \U0001f600 \x01'.encode()
    b.publish(Q, body, 0)
    raw = b.peek(Q, 1, 0)
    assert (
        raw
        == json.dumps(
            {"messages": [{"id": 1, "body": body.decode(), "receives": 0}]},
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()
    )


def test_delete_token(b):
    b.put_queue("other")
    b.publish_batch(Q, [b"a", b"b"], 0)
    b.receive(Q, 7, 2, 0, 100)
    assert b.delete_token(Q, 1, 0, 10) is False  # not this receive
    assert b.delete_token(Q, 1, 2, 10) is False
    assert b.delete_token("other", 1, 1, 10) is False  # wrong queue
    assert b.delete_token(Q, 99, 1, 10) is False  # unknown
    assert b.delete_token(Q, 1, 1, 100) is False  # now == deadline: too late
    assert b.delete_token(Q, 1, 1, 99) is True  # any cid: the token is the proof
    assert b.delete_token(Q, 1, 1, 99) is False  # gone
    assert b.queue_info(Q)["totals"]["deleted"] == 1
    # A token from an earlier receive never acts, whoever holds the message now.
    b.expire(100, 10)
    assert msgs(b.receive(Q, 8, 1, 100, 100)) == [(2, "b", 2)]
    assert b.delete_token(Q, 2, 1, 150) is False
    assert b.change_lease_token(Q, 2, 1, 500, 150) is False
    assert b.delete_token(Q, 2, 2, 150) is True
    assert b.message_count == 0


def test_change_lease_token(b):
    b.publish_batch(Q, [b"a", b"b"], 0)
    b.receive(Q, 7, 2, 0, 100)
    assert b.change_lease_token(Q, 1, 1, 500, 90) is True
    assert b.next_deadline() == 100  # message 2's lease
    assert b.change_lease_token(Q, 2, 1, 0, 90) is True  # released: available again
    assert b.queue_info(Q)["counts"] == {"ready": 1, "leased": 1, "delayed": 0}
    assert b.queue_info(Q)["totals"]["expired"] == 0
    assert b.change_lease_token(Q, 2, 1, 500, 90) is False  # no longer leased
    assert b.expire(589, 10) == 0
    assert b.delete(Q, 7, 1, 589) is True  # the cid rule still holds for the same lease


def test_change_lease_token_release_dead_letters(b):
    b.put_queue("dlq")
    b.put_queue("src", {"max_receives": 1, "dead_letter_queue": "dlq"})
    b.publish("src", b"job", 0)
    b.receive("src", 1, 1, 0, 100)
    assert b.change_lease_token("src", 1, 1, 0, 5) is True
    assert b.queue_info("src")["totals"]["dead_lettered"] == 1
    assert msgs(b.receive("dlq", 1, 1, 5)) == [(1, "job", 1)]
    assert b.delete_token("src", 1, 1, 6) is False  # the source queue's token is dead
    assert b.delete_token("dlq", 1, 1, 6) is True


def test_token_arguments(b):
    for call, code in [
        (lambda: b.delete_token(Q, 0, 1, 0), "invalid_id"),
        (lambda: b.delete_token(Q, 1, -1, 0), "invalid_receives"),
        (lambda: b.delete_token(Q, 1, 1 << 32, 0), "invalid_receives"),
        (lambda: b.delete_token(Q, 1, True, 0), "invalid_receives"),
        (lambda: b.delete_token(Q, 1, 1, -1), "invalid_now"),
        (lambda: b.change_lease_token(Q, 1, 1, -1, 0), "invalid_timeout"),
        (lambda: b.change_lease_token(Q, 1, 1, MAX_VISIBILITY_MS + 1, 0), "invalid_timeout"),
        (lambda: b.change_lease_token(Q, MAX_ID + 1, 1, 0, 0), "invalid_id"),
    ]:
        with pytest.raises(InvalidArgument) as e:
            call()
        assert e.value.code == code
    with pytest.raises(QueueNotFound):
        b.delete_token("nope", 1, 1, 0)
    with pytest.raises(QueueNotFound):
        b.change_lease_token("nope", 1, 1, 0, 0)


# ---- times, attribute blobs, receive_list -------------------------------------------------


def test_publish_and_first_receive_times(b):
    assert b.publish(Q, b"a", 100) == 1
    b.publish(Q, b"b", 120, 0, b"attrs")
    assert b.receive_list(Q, 1, 1, 150, 10) == [(1, b"a", 1, 100, 150, None)]
    b.expire(160, 10)
    # The second receive keeps the first receive time.
    got = b.receive_list(Q, 2, 5, 170, 10)
    assert got == [(1, b"a", 2, 100, 150, None), (2, b"b", 1, 120, 170, b"attrs")]
    dump = b.dump_messages(0, 10, 170)[1]
    assert [m[5:] for m in dump] == [(100, 150, None), (120, 170, b"attrs")]


def test_first_receive_is_exact_for_a_minute_then_approximate(b):
    b.publish_batch(Q, [b"a", b"b", b"c"], 1000)
    exact = 1000 + (1 << 16) - 1
    assert b.receive_list(Q, 1, 1, exact)[0][4] == exact
    later = 1000 + 77_881  # 17 significant bits: the last one is dropped
    assert b.receive_list(Q, 1, 1, later)[0][4] == later - 1
    much_later = 1000 + 14 * 86_400_000 + 12_345
    first = b.receive_list(Q, 1, 1, much_later)[0][4]
    assert first == model.stored_first_receive(1000, much_later)
    assert 0 <= much_later - first < (much_later - 1000) >> 15


def test_receive_list_matches_receive(make):
    one, two = make(visibility_ms=1000, max_batch=10), make(visibility_ms=1000, max_batch=10)
    for b in (one, two):
        b.publish_batch(Q, ['x"\\\n\u00e9'.encode(), b"y", b"z"], 5)
    leased_one: list[int] = []
    leased_two: list[int] = []
    got = one.receive_list(Q, 3, 2, 10, 50, leased_one)
    answer = msgs(two.receive(Q, 3, 2, 10, 50, leased_two))
    assert [(i, body.decode(), r) for i, body, r, *_ in got] == answer
    assert leased_one == leased_two == [1, 2]
    assert one.queue_info(Q) == two.queue_info(Q)
    assert one.receive_list(Q, 3, 5, 10) == [(3, b"z", 1, 5, 10, None)]
    assert one.receive_list(Q, 3, 5, 10) == []
    for args, code in [
        ((Q, -1, 1, 0), "invalid_cid"),
        ((Q, 1, 0, 0), "invalid_limit"),
        ((Q, 1, 1, 0, -2), "invalid_visibility"),
        ((Q, 1, 1, -1), "invalid_now"),
    ]:
        with pytest.raises(InvalidArgument) as e:
            one.receive_list(*args)
        assert e.value.code == code
    with pytest.raises(QueueNotFound):
        one.receive_list("nope", 1, 1, 0)


def test_attribute_blobs(b):
    b.put_queue("small", {"max_message_bytes": 4})
    assert b.publish(Q, b"body", 0, -1, bytearray(b"\x00\xff")) == 1
    assert b.memory_bytes == MESSAGE_OVERHEAD + 4 + 4 + 2  # the blob and its length
    b.publish(Q, b"big" * 700, 0, -1, b"a" * 100)  # a block past the slab limit
    b.publish(Q, b"plain", 0)
    assert [m[5] for m in b.receive_list(Q, 1, 5, 0)] == [b"\x00\xff", b"a" * 100, None]
    for call, error, code in [
        (lambda: b.publish(Q, b"x", 0, -1, "text"), InvalidArgument, "invalid_attributes"),
        (lambda: b.publish(Q, b"x", 0, -1, 5), InvalidArgument, "invalid_attributes"),
        (lambda: b.publish("small", b"x", 0, -1, b"12345"), MessageTooLarge, None),
        (lambda: b.publish_batch(Q, [b"x"], 0, None, b"ab"), InvalidArgument, "invalid_attributes"),
        (lambda: b.publish_batch(Q, [b"x"], 0, None, []), InvalidArgument, "invalid_attributes"),
        (lambda: b.publish_batch(Q, [b"x"], 0, None, [1]), InvalidArgument, "invalid_attributes"),
        (lambda: b.publish_batch("small", [b"x"], 0, None, [b"12345"]), MessageTooLarge, None),
    ]:
        with pytest.raises(error) as e:
            call()
        assert code is None or e.value.code == code
    assert b.message_count == 3
    first = b.publish_batch(Q, [b"p", b"q"], 0, None, [None, memoryview(b"m")])
    assert [m[5] for m in b.receive_list(Q, 1, 5, 0)] == [None, b"m"]
    assert first == 4


def test_memory_limit_counts_attributes(make):
    b = make(max_memory=2 * (MESSAGE_OVERHEAD + 1) + 4 + 3)
    b.publish(Q, b"a", 0, -1, b"xyz")
    with pytest.raises(MemoryLimitExceeded):
        b.publish(Q, b"b", 0, -1, b"w")
    b.publish(Q, b"b", 0)
    assert b.memory_bytes == b.memory_limit


def test_dead_letters_keep_times_and_attributes(b):
    b.put_queue("dlq")
    b.put_queue("src", {"max_receives": 1, "dead_letter_queue": "dlq"})
    b.publish("src", b"job", 7, -1, b"meta")
    b.receive("src", 1, 1, 10, 5)
    b.expire(15, 10)
    assert b.receive_list("dlq", 1, 1, 20) == [(1, b"job", 1, 7, 10, b"meta")]


def test_restore_times_and_attributes(b):
    b.restore(Q, 5, b"x", 2, 100, 0, -3_000, 50, b"blob")
    b.restore(Q, 6, b"y", 0, 100)  # sent = now, never received
    b.restore(Q, 7, b"z", 1, 100, 0, 90, 80)  # a first receive before the publish: at it
    assert b.dump_messages(0, 10, 100)[1] == [
        (5, Q, b"x", 2, 0, -3_000, 50, b"blob"),
        (6, Q, b"y", 0, 0, 100, None, None),
        (7, Q, b"z", 1, 0, 90, 90, None),
    ]
    limit = (1 << 42) - 1
    b.restore(Q, 8, b"w", 0, limit, 0, -limit - 1, limit)
    assert b.dump_messages(0, 10, 100)[1][-1][5:7] == (
        -limit - 1,
        model.stored_first_receive(-limit - 1, limit),
    )
    for args, code in [
        ((Q, 9, b"x", 0, 0, 0, -limit - 2), "invalid_time"),
        ((Q, 9, b"x", 0, 0, 0, limit + 1), "invalid_time"),
        ((Q, 9, b"x", 0, 0, 0, None, limit + 1), "invalid_time"),
        ((Q, 9, b"x", 0, 0, 0, 1.5), "invalid_time"),
        ((Q, 9, b"x", 0, 0, 0, None, None, "a"), "invalid_attributes"),
        ((Q, 9, b"x", 0, limit + 1), "invalid_now"),
    ]:
        with pytest.raises(InvalidArgument) as e:
            b.restore(*args)
        assert e.value.code == code


# ---- retention --------------------------------------------------------------------------

MINUTE = 60_000


def retained(b, name=Q):
    return {row[0]: row[-1] for row in b.stats()}[name]


def test_retention_drops_old_messages_on_time(b):
    b.put_queue(Q, {"retention_ms": MINUTE})
    b.publish(Q, b"a", 0)
    b.publish(Q, b"b", 30_000)
    assert b.next_deadline() == MINUTE
    assert b.expire(MINUTE - 1, 10) == 0
    assert b.expire(MINUTE, 10) == 1
    assert retained(b) == 1
    assert b.queue_info(Q)["counts"]["ready"] == 1
    assert b.next_deadline() == 30_000 + MINUTE
    assert msgs(b.receive(Q, 1, 5, MINUTE)) == [(2, "b", 1)]
    assert b.next_deadline() == MINUTE + 1000  # the lease; nothing ready to keep an eye on


def test_retention_is_checked_by_receive_and_peek(b):
    b.put_queue(Q, {"retention_ms": MINUTE})
    b.publish_batch(Q, [b"a", b"b"], 0)
    b.publish(Q, b"c", 10)
    assert msgs(b.peek(Q, 1, MINUTE)) == [(3, "c", 0)]  # a and b dropped on the way
    assert retained(b) == 2
    assert b.receive(Q, 1, 5, MINUTE + 10) == b'{"messages":[]}'
    assert retained(b) == 3
    assert b.message_count == 0
    assert b.next_deadline() == -1


def test_retention_at_the_end_of_a_lease_or_a_delay(b):
    b.put_queue(Q, {"retention_ms": MINUTE})
    b.publish(Q, b"leased", 0)
    b.publish(Q, b"delayed", 0, 2 * MINUTE)
    b.receive(Q, 1, 1, 0, 2 * MINUTE)
    assert b.expire(2 * MINUTE, 10) == 2  # both end after their retention: dropped
    info = b.queue_info(Q)
    assert info["totals"]["expired"] == 1  # the lease did run out
    assert retained(b) == 2
    assert b.message_count == 0


def test_a_lease_past_retention_can_still_be_deleted(b):
    b.put_queue(Q, {"retention_ms": MINUTE})
    b.publish(Q, b"x", 0)
    b.receive(Q, 1, 1, MINUTE - 1, 10)
    assert b.delete(Q, 1, 1, MINUTE + 5) is True
    assert retained(b) == 0


def test_retention_applies_in_the_dead_letter_queue(b):
    b.put_queue("dlq", {"retention_ms": MINUTE})
    b.put_queue("src", {"max_receives": 1, "dead_letter_queue": "dlq"})
    b.publish("src", b"old", 0)
    b.publish("src", b"new", MINUTE)
    b.receive("src", 1, 2, MINUTE, 10)
    assert b.expire(MINUTE + 10, 10) == 2
    assert b.queue_info("src")["totals"]["dead_lettered"] == 2
    assert retained(b, "dlq") == 1  # the one published a minute before
    assert msgs(b.receive("dlq", 1, 5, MINUTE + 10)) == [(2, "new", 1)]


def test_expire_merges_retention_and_timers_in_deadline_order(b):
    b.put_queue("r", {"retention_ms": MINUTE})
    b.publish("r", b"old", 0)  # 1: retention deadline 60000
    b.publish(Q, b"x", 0)  # 2
    b.receive(Q, 1, 1, 0, MINUTE)  # lease deadline 60000 too; id 2 after id 1
    b.publish(Q, b"y", MINUTE - 1, 1)  # 3: delay ends at 60000
    assert b.next_deadline() == MINUTE
    assert b.expire(MINUTE, 1) == 1
    assert retained(b, "r") == 1 and b.queue_info(Q)["totals"]["expired"] == 0
    assert b.expire(MINUTE, 1) == 1
    assert b.queue_info(Q)["totals"]["expired"] == 1
    assert b.expire(MINUTE, 5) == 1
    assert ids_of(b.receive(Q, 1, 5, MINUTE)) == [2, 3]


def test_changing_retention(b):
    b.put_queue("r")
    b.publish("r", b"x", 0)
    assert b.next_deadline() == -1
    b.put_queue("r", {"retention_ms": 2 * MINUTE})
    assert b.next_deadline() == 2 * MINUTE
    b.put_queue("r", {"retention_ms": MINUTE})
    assert b.next_deadline() == MINUTE
    b.put_queue("r", {"retention_ms": None})
    assert b.next_deadline() == -1
    b.put_queue("r", {"retention_ms": MINUTE})
    assert b.purge("r") == 1
    assert b.next_deadline() == -1
    b.publish("r", b"y", 0)
    b.put_queue("s", {"retention_ms": MINUTE})
    b.publish("s", b"z", 5)
    assert b.delete_queue("r") == 1
    assert b.next_deadline() == MINUTE + 5
    assert b.expire(3 * MINUTE, 10) == 1
    assert retained(b, "s") == 1


# ---- errors -----------------------------------------------------------------------------


def test_error_classes():
    assert issubclass(InvalidArgument, ValueError)
    assert issubclass(QueueNotFound, KeyError)
    for cls, status, code in [
        (InvalidArgument, 400, "invalid_argument"),
        (QueueNotFound, 404, "queue_not_found"),
        (QueueInUse, 409, "queue_in_use"),
        (MessageTooLarge, 413, "message_too_large"),
        (MemoryLimitExceeded, 507, "memory_limit"),
        (IdsExhausted, 507, "ids_exhausted"),
    ]:
        assert issubclass(cls, EngineError)
        assert (cls.status, cls.code) == (status, code)
    e = InvalidArgument("limit must be an integer in 1..10", "invalid_limit")
    assert (e.status, e.code, str(e)) == (400, "invalid_limit", "limit must be an integer in 1..10")
    assert InvalidArgument.code == "invalid_argument"


def test_error_messages_name_the_parameter():
    b = _core.Broker(max_batch=5)
    for call, word in [
        (lambda: b.receive(Q, 1, 0, 0), "limit"),
        (lambda: b.receive(Q, -1, 1, 0), "cid"),
        (lambda: b.delete(Q, 1, 0, 0), "id"),
        (lambda: b.publish(Q, b"x", 0, -5), "delay_ms"),
        (lambda: b.put_queue("q", {"delay_ms": -5}), "delay_ms"),
        (lambda: b.put_queue("q", {"bogus": 1}), "bogus"),
        (lambda: b.publish(Q, b"", 0), "body"),
    ]:
        with pytest.raises(EngineError) as e:
            call()
        assert word in str(e.value)


# ---- engine-only details ----------------------------------------------------------------


def test_message_overhead_constant():
    assert MESSAGE_OVERHEAD == 32  # the 24-byte header and up to 8 bytes of block rounding


def test_a_200_byte_message_takes_a_224_byte_block():
    """The 24-byte header: (65,536 - 64) // 224 = 292 messages of 200 B fill one slab (282
    with the 32-byte header of before), whether received or not."""
    b = _core.Broker()
    for _ in range(292):
        b.publish(Q, b"x" * 200, 0)
    assert b.allocator_stats()["slabs_in_use"] == 1
    b.receive(Q, 1, 100, 1)  # receipts live outside the blocks
    assert b.allocator_stats()["slabs_in_use"] == 1
    b.publish(Q, b"x" * 200, 2)
    assert b.allocator_stats()["slabs_in_use"] == 2
    b.check_invariants()


def test_empty_answer_is_shared():
    b = _core.Broker()
    assert b.receive(Q, 1, 5, 0) is b.receive(Q, 2, 5, 0)


def test_many_queues_reuse_slots():
    b = _core.Broker()
    for round_ in range(3):
        for i in range(50):
            b.put_queue(f"q{i}")
            b.publish(f"q{i}", b"x%d" % round_, 0)
        for i in range(0, 50, 2):
            assert b.delete_queue(f"q{i}") == 1
        b.check_invariants()
    assert len(b.queue_names()) == 26


def test_large_heap_and_table_grow_and_shrink():
    b = _core.Broker(max_batch=1000)
    for _ in range(20):
        b.publish_batch(Q, [b"m"] * 1000, 0)
    for i in range(20):
        b.receive(Q, i, 1000, 0, 1000 + i)
    b.check_invariants()
    assert b.delete_batch(Q, 3, list(range(3001, 4001)), 10)[0] == list(range(3001, 4001))
    for t in range(1000, 1030):
        b.expire(t, 700)
        b.check_invariants()
    assert b.ready_count(Q) == 19000
    assert ids_of(b.receive(Q, 1, 3, 2000)) == [1, 2, 3]
    b.check_invariants()


def test_queue_count_limit():
    b = _core.Broker()
    for i in range(_core.MAX_QUEUES - 1):
        b.put_queue(f"q{i}")
    with pytest.raises(InvalidArgument) as e:
        b.put_queue("one-too-many")
    assert e.value.code == "too_many_queues"
    b.delete_queue("q7")
    assert b.put_queue("one-too-many") is True
    b.publish("one-too-many", b"x", 0)
    b.receive("one-too-many", 1, 1, 0)
    b.check_invariants()


# ---- slab allocator ---------------------------------------------------------------------


def rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_every_block_size_around_the_slab_limit():
    # Escaped lengths 1..2100 cover every size class and the switch to malloc at 2 KiB blocks.
    b = _core.Broker(max_batch=100)
    lengths = list(range(1, 2101))
    for i in range(0, len(lengths), 100):
        b.publish_batch(Q, [b"x" * n for n in lengths[i : i + 100]], 0)
    b.check_invariants()
    for i in range(0, len(lengths), 100):
        got = json.loads(b.receive(Q, 1, 100, 0))["messages"]
        assert [len(m["body"]) for m in got] == lengths[i : i + 100]
        b.check_invariants()
        assert b.delete_batch(Q, 1, [m["id"] for m in got[::2]], 1)[1] == []
    b.check_invariants()
    assert b.purge(Q) == 1050
    b.check_invariants()
    assert b.memory_bytes == 0


def test_slabs_are_given_back():
    # RSS is compared across the calls that free memory only: the Python objects of other
    # steps (check_invariants builds big sets) stay in pymalloc's arenas.
    b = _core.Broker(max_batch=1000)
    before = rss()
    for _ in range(200):
        b.publish_batch(Q, [b"y" * 200] * 1000, 0)  # 200,000 x 224-byte blocks: 45 MB
    grown = rss() - before
    assert grown > 40e6
    full = b.allocator_stats()
    assert full["slabs_in_use"] >= 200_000 * 224 // 65536
    b.check_invariants()
    # Lease half, then delete it in id order (the FIFO way).
    leased = []
    for _ in range(100):
        b.receive(Q, 1, 1000, 0, 30_000, leased)
    start = rss()
    for i in range(0, 100_000, 1000):
        assert len(b.delete_batch(Q, 1, leased[i : i + 1000], 1)[0]) == 1000
    assert start - rss() > 0.8 * grown / 2
    assert b.allocator_stats()["slabs_in_use"] <= full["slabs_in_use"] // 2 + 2
    b.check_invariants()
    start = rss()
    assert b.purge(Q) == 100_000
    assert start - rss() > 0.8 * grown / 2
    stats = b.allocator_stats()
    assert stats["slabs_in_use"] <= 1  # one empty slab kept for the size class
    b.check_invariants()
    # Freed slabs serve any size class.
    b.publish_batch(Q, [b"z" * 1000] * 1000, 0)
    assert b.allocator_stats()["arenas"] == stats["arenas"]
    b.check_invariants()


def test_slab_churn_keeps_one_slab():
    b = _core.Broker()
    for i in range(2000):
        b.publish(Q, b"m", 0)
        b.receive(Q, 1, 1, 0)
        assert b.delete(Q, 1, i + 1, 0)
    assert b.allocator_stats()["slabs_in_use"] == 1
    assert b.allocator_stats()["free_slabs"] == 0
    b.check_invariants()


def test_brokers_free_their_memory():
    before = rss()
    for _ in range(5):
        b = _core.Broker(max_batch=1000)
        for _ in range(50):
            b.publish_batch(Q, [b"w" * 300] * 1000, 0)
            b.publish(Q, b"L" * 5000, 0)
        del b
    assert rss() - before < 20e6


# ---- durability hooks -------------------------------------------------------------------


def test_receive_reports_leased_ids(b):
    b.publish_batch(Q, [b"a", b"b", b"c"], 0)
    leased = [99]
    b.receive(Q, 1, 2, 0, 100, leased)
    assert leased == [99, 1, 2]
    b.receive(Q, 1, 5, 0, 100, leased)
    assert leased == [99, 1, 2, 3]
    b.receive(Q, 1, 5, 0, 100, leased)
    assert leased == [99, 1, 2, 3]


def test_take_dead_lettered(make):
    b = make(track_dead_letters=True)
    b.put_queue("d")
    b.put_queue("q", {"max_receives": 1, "dead_letter_queue": "d"})
    b.publish_batch("q", [b"a", b"b", b"c"], 0)
    b.receive("q", 1, 3, 0, 10)
    assert b.change_lease("q", 1, 2, 0, 5) is True
    assert b.expire(10, 10) == 2
    assert b.take_dead_lettered() == [(2, "d"), (1, "d"), (3, "d")]
    assert b.take_dead_lettered() == []
    untracked = make()
    untracked.put_queue("d")
    untracked.put_queue("q", {"max_receives": 1, "dead_letter_queue": "d"})
    untracked.publish("q", b"a", 0)
    untracked.receive("q", 1, 1, 0, 10)
    untracked.expire(10, 10)
    assert untracked.queue_info("q")["totals"]["dead_lettered"] == 1
    assert untracked.take_dead_lettered() == []


def test_dump_messages(b):
    b.put_queue("other")
    text = "".join(chr(i) for i in range(256))
    b.publish(Q, text.encode(), 0)
    b.publish("other", b"plain", 0)
    b.publish(Q, b"later", 0, 500)
    b.publish_batch(Q, [b'"quoted"\\', b"y"], 0, None, [b"", None])
    b.receive(Q, 7, 1, 0, 100)
    b.restore("other", 9, b"restored", 4, 0, 0, -5, 20, b"\x00attrs")
    expected = [
        (1, Q, text.encode(), 1, 0, 0, 0, None),  # leased: no delay reported
        (2, "other", b"plain", 0, 0, 0, None, None),
        (3, Q, b"later", 0, 300, 0, None, None),
        (4, Q, b'"quoted"\\', 0, 0, 0, None, b""),
        (5, Q, b"y", 0, 0, 0, None, None),
        (9, "other", b"restored", 4, 0, -5, 20, b"\x00attrs"),
    ]
    assert b.dump_messages(0, 100, 200) == (0, expected)
    assert b.dump_messages(0, 6, 200) == (0, expected)
    cursor, got = b.dump_messages(0, 4, 200)
    assert (cursor, got) == (4, expected[:4])
    assert b.dump_messages(cursor, 4, 200) == (0, expected[4:])
    assert b.dump_messages(0, 2, 600) == (2, [expected[0], expected[1]])
    assert b.dump_messages(0, 2, 600) == (2, [expected[0], expected[1]])  # 0 starts over
    assert b.dump_messages(3, 1, 600) == (4, [expected[3]])  # any cursor: ids above it
    assert b.dump_messages(4, 9, 600) == (0, expected[4:])
    assert b.dump_messages(0, 9, 600)[1][2][:5] == (3, Q, b"later", 0, 0)  # delay over
    for bad, code in [((-1, 5), "invalid_cursor"), ((0, 0), "invalid_max_count")]:
        with pytest.raises(InvalidArgument) as e:
            b.dump_messages(*bad, 0)
        assert e.value.code == code


def test_dump_messages_while_the_broker_changes(b):
    b.put_queue("dlq")
    b.put_queue("q", {"max_receives": 1, "dead_letter_queue": "dlq"})
    b.put_queue("gone")
    for _ in range(3):
        b.publish_batch("q", [b"q"] * 5, 0)  # 1..15
    b.publish_batch("gone", [b"g"] * 5, 0)  # 16..20
    b.publish_batch(Q, [b"d"] * 5, 0)  # 21..25
    b.receive("q", 1, 10, 0, 50)  # 1..10 leased
    cursor, got = b.dump_messages(0, 4, 0)
    seen = [m[0] for m in got]
    assert seen == [1, 2, 3, 4]
    assert b.delete("q", 1, 8, 1)  # removed before its turn: not returned
    b.expire(50, 100)  # 5..10 dead-lettered (received once): reported in dlq
    assert b.delete_queue("gone") == 5  # 16..20 never returned
    new = b.publish(Q, b"new", 60)  # created meanwhile: may or may not be returned
    b.restore(Q, 8, b"again", 0, 60)  # a new message with a deleted id: not the old one
    while cursor:
        cursor, got = b.dump_messages(cursor, 4, 60)
        seen += [m[0] for m in got]
        for m in got:
            if 5 <= m[0] <= 10:
                assert m[1] == "dlq"
    assert seen == [1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 21, 22, 23, 24, 25]
    assert new not in seen
    assert 8 in [m[0] for m in b.dump_messages(0, 100, 60)[1]]


def test_dump_messages_large_and_unsorted():
    b = _core.Broker(max_batch=1000)
    for name in ("a", "b", "c"):
        b.put_queue(name)
    for i in range(30):
        b.publish_batch(
            "abc"[i % 3], [b"m%d" % i] * 1000, 0, [(i * 7 + j) % 3 for j in range(1000)]
        )
    b.expire(1, 100_000)
    for name in ("a", "b", "c"):
        b.receive(name, 1, 1000, 1, 10 if name == "b" else 1000)
    b.expire(10, 100_000)  # b's leases back into its return heap
    b.check_invariants()
    cursor, ids = 0, []
    while True:
        cursor, got = b.dump_messages(cursor, 777, 20)
        ids += [m[0] for m in got]
        if len(ids) in (777, 777 * 20):
            b.check_invariants()  # with a snapshot in progress
        if not cursor:
            break
    assert ids == list(range(1, 30_001))


def test_restore_in_any_order_is_fast():
    b = _core.Broker()
    b.put_queue("other")
    start = time.process_time()
    for i in range(40_000, 0, -1):
        b.restore("other" if i % 2 else Q, i, b"r", 0, 0)
    assert time.process_time() - start < 5  # O(n^2) would take minutes
    b.check_invariants()
    with pytest.raises(InvalidArgument):
        b.restore(Q, 20_000, b"dup", 0, 0)
    assert b.purge("other") == 20_000
    b.restore("other", 1, b"freed id", 0, 0)
    b.check_invariants()
    assert b.publish(Q, b"first publish", 0) == 40_001  # ends restoring
    b.check_invariants()
    with pytest.raises(InvalidArgument):
        b.restore(Q, 40_000, b"dup", 0, 0)
    b.restore(Q, 3, b"freed id", 0, 0)
    assert ids_of(b.receive(Q, 1, 3, 0)) == [2, 3, 4]


def test_queue_name_cache_follows_deletes():
    b = _core.Broker()
    name = "jobs"
    b.put_queue(name)
    b.publish(name, b"x", 0)  # cached by identity
    b.delete_queue(name)
    with pytest.raises(QueueNotFound):
        b.publish(name, b"x", 0)
    b.put_queue("other")
    b.put_queue(name)  # may reuse the slot
    assert b.publish(name, b"y", 0) == 2
    assert b.ready_count("other") == 0
    with pytest.raises(QueueNotFound):
        b.publish(None, b"x", 0)
    b.check_invariants()
