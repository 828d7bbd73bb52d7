"""The engine's table of queue names (engine/names.pxi), which Broker.lookup reads on every
request, against a dict: after any sequence of creates and deletes (names that share long
prefixes, names longer than the bytes a slot keeps, deleted names asked for again, str
subclasses), every name resolves to its own queue, every other name is not found, and
check_invariants finds each name in its probe run."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wonderq._core import Broker, QueueNotFound

pytestmark = pytest.mark.timeout(120)

INLINE = 48  # engine: NAME_INLINE, the bytes of a name its slot keeps

# Names that collide in interesting ways: short ones, and long ones that share their first
# 48 or more bytes so that only the rest (read from the registry) tells them apart.
SHORT = st.text(alphabet="ab", min_size=1, max_size=4)
LONG = st.builds(
    lambda head, tail: "x" * head + tail,
    st.integers(min_value=INLINE - 2, max_value=78),
    st.text(alphabet="ab", min_size=1, max_size=2),
)
NAMES = st.one_of(SHORT, LONG)


class Sub(str):
    pass


def probe(broker: Broker, name: str) -> int | None:
    """The queue's publish count as lookup() resolves it, or None when it is not found."""
    try:
        return int(broker.queue_info(name)["totals"]["published"])
    except QueueNotFound:
        return None


OPS = st.lists(st.tuples(st.sampled_from(["put", "put", "delete", "publish"]), NAMES), max_size=60)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS)
def test_the_name_table_agrees_with_a_dict(ops: list[tuple[str, str]]) -> None:
    broker = Broker()
    published: dict[str, int] = {}  # name -> publishes, for the queues that exist
    for op, name in ops:
        if op == "put":
            created = broker.put_queue(Sub(name) if len(name) % 2 else name)
            assert created == (name not in published)
            published.setdefault(name, 0)
        elif op == "delete":
            if name in published:
                broker.delete_queue(name)
                del published[name]
            else:
                with pytest.raises(QueueNotFound):
                    broker.delete_queue(name)
        elif name in published:
            broker.publish(name, b"m", 1)
            published[name] += 1
        else:
            with pytest.raises(QueueNotFound):
                broker.publish(name, b"m", 1)
        broker.check_invariants()
    for _op, name in ops:  # every name seen: its own queue, or not found
        assert probe(broker, name) == published.get(name)
        # From a path, as the router asks: the broker's own str for an existing queue.
        path = f"/v1/queues/{name}/messages"
        known = broker.known_name(path, 11, 11 + len(name))
        if name in published:
            assert known == name and type(known) is str
            assert broker.known_name("/" + name, 1, 1 + len(name)) is known  # the same object
            assert probe(broker, known) == published[name]
        else:
            assert known is None
        assert probe(broker, "".join(reversed(name)) + "z") == published.get(
            "".join(reversed(name)) + "z"
        )


def test_many_queues_grow_and_shrink_the_table() -> None:
    broker = Broker()
    names = [f"q{k}" for k in range(5000)]
    for name in names:
        broker.put_queue(name)
    broker.check_invariants()
    for k, name in enumerate(names):
        if k % 3:
            broker.delete_queue(name)
    broker.check_invariants()
    for k, name in enumerate(names):
        if k % 3 == 0:
            broker.publish(name, b"m", 1)
        assert probe(broker, name) == (1 if k % 3 == 0 else None)
    for k, name in enumerate(names):
        if k % 3:
            broker.put_queue(name)  # the freed slots taken again
    broker.check_invariants()
    assert all(probe(broker, name) is not None for name in names)


def test_names_that_cannot_be_queue_names_are_not_found() -> None:
    broker = Broker()
    broker.put_queue("plain")
    for name in ("pla\u00efn", "plain\u20ac", "", "x" * 200, Sub("missing")):
        with pytest.raises(QueueNotFound):
            broker.ready_count(name)
    assert broker.ready_count(Sub("plain")) == 0  # a str subclass finds the queue by value
    assert broker.ready_count("plain") == 0


# Broker.prefetch_name finds a name's slot from bytes (a request's target as it arrives), by
# the hash its str's lookup uses later only if a str of ASCII hashes as its bytes do: what
# CPython does (unicode_hash over a compact ASCII str's data). Were that to change, every hint
# would load a line no lookup reads; this says so.
@settings(max_examples=200, deadline=None)
@given(
    st.text(
        alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-",
        min_size=1,
        max_size=80,
    )
)
def test_a_names_bytes_hash_as_its_str_so_the_hint_loads_the_lookups_slot(name: str) -> None:
    assert hash(name.encode("ascii")) == hash(name)


@pytest.mark.parametrize(
    "data, start",
    [
        (b"/v1/queues/q1/messages", 11),
        (b"/v1/queues/q1?x=1", 11),
        (b"/v1/queues/", 11),  # nothing after the prefix
        (b"/v1/queues/q1", 99),  # past the end
        (b"/v1/queues/q1", -5),
        (b"", 0),
        (b"/v1/queues/\xff\xfe%41/x", 11),  # not a name at all
        (b"/v1/queues/" + b"x" * 5000, 11),
    ],
)
def test_a_hint_changes_nothing_whatever_its_bytes(data: bytes, start: int) -> None:
    broker = Broker()
    broker.put_queue("q1")
    broker.publish("q1", b"m", 1)
    broker.prefetch_name(data, start)
    broker.check_invariants()
    assert probe(broker, "q1") == 1
    assert probe(broker, "q2") is None
    empty = Broker()
    empty.prefetch_name(data, start)  # no table yet
    empty.check_invariants()


def test_known_name_takes_any_str_and_bounds() -> None:
    broker = Broker()
    broker.put_queue("jobs")
    broker.put_queue("x" * 80)
    path = "/v1/queues/jobs/messages"
    assert broker.known_name(path, 11, 15) == "jobs"
    for start, end in [(11, 14), (11, 16), (12, 15), (15, 11), (11, 11), (-1, 15), (11, 99)]:
        assert broker.known_name(path, start, end) is None, (start, end)
    assert broker.known_name("/v1/queues/jobs\u20ac", 11, 15) is None  # not one byte a char
    assert broker.known_name("jobs\u00e9", 0, 4) == "jobs"  # latin-1: one byte a character
    assert broker.known_name("x" * 80, 0, 80) == "x" * 80
    assert broker.known_name("x" * 79 + "y", 0, 80) is None  # differs past the slot's bytes
    broker.delete_queue("jobs")
    assert broker.known_name(path, 11, 15) is None
    with pytest.raises(QueueNotFound):
        broker.ready_count("jobs")  # the primed identity is forgotten with the queue


def test_known_name_after_a_hint_of_the_same_or_another_name() -> None:
    """known_name reuses the hint's hash only for the very bytes the hint named."""
    broker = Broker()
    for name in ("aaaa", "bbbb", "x" * 60, "x" * 59 + "y"):
        broker.put_queue(name)
    for hinted, asked, expected in [
        ("aaaa", "aaaa", "aaaa"),
        ("aaaa", "bbbb", "bbbb"),  # same length, other bytes: hashed anew
        ("bbbb", "cccc", None),
        ("cccc", "bbbb", "bbbb"),
        ("x" * 60, "x" * 59 + "y", "x" * 59 + "y"),
        ("x" * 59 + "y", "x" * 59 + "y", "x" * 59 + "y"),
        ("x" * 59 + "z", "x" * 59 + "z", None),
    ]:
        target = f"/v1/queues/{hinted}/messages".encode()
        broker.prefetch_name(target, 11)
        path = f"/v1/queues/{asked}/messages"
        assert broker.known_name(path, 11, 11 + len(asked)) == expected, (hinted, asked)
