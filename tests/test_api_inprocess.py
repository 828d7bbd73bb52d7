"""Time in the API, without sleeping: leases, expiry, delays, extension and release, dead
letters by expiry, and long polls (their ends, their wake-ups, their FIFO order), through the
real API in-process (tests/_harness.py) on a fake clock the tests move.

Each rule is checked on both sides of its boundary (the millisecond before a deadline and
the deadline itself), which a test that sleeps cannot do. The server tests keep a few
end-to-end checks of the same behaviours, waiting on observable state."""

from __future__ import annotations

import json
from typing import Any

import pytest
from _harness import FakeConnection, Harness

from wonderq.config import Settings
from wonderq.store import EXPIRE_BUDGET

pytestmark = pytest.mark.timeout(30)

# The store's one expiry timer is armed a millisecond after the next deadline
# (MemoryStore.arm: a loop timer may round early). At the deadline a lease is over for
# deletes and extensions (the engine's rule, now < deadline); the message is available
# again when that timer has run, SLACK later.
SLACK = 0.001


def make(h: Harness, name: str = "q", **attrs: Any) -> str:
    assert h.ask("PUT", f"/v1/queues/{name}", json.dumps(attrs))[0] == 201
    return name


def publish(h: Harness, queue: str, body: str = "m", query: str = "") -> int:
    status, doc = h.ask("POST", f"/v1/queues/{queue}/messages{query}", body)
    assert status == 201, doc
    return int(doc["id"])


def receive(h: Harness, queue: str, query: str) -> list[tuple[int, int]]:
    """(id, receives) of what one receive leased."""
    status, doc = h.ask("GET", f"/v1/queues/{queue}/messages?{query}")
    assert status == 200, doc
    return [(m["id"], m["receives"]) for m in doc["messages"]]


def delete(h: Harness, queue: str, msg_id: int, cid: int) -> bool:
    status, doc = h.ask("DELETE", f"/v1/queues/{queue}/messages/{msg_id}?cid={cid}")
    assert status == 200, doc
    return bool(doc)


def lease(h: Harness, queue: str, msg_id: int, cid: int, timeout: str) -> bool:
    target = f"/v1/queues/{queue}/messages/{msg_id}/lease?cid={cid}&timeout={timeout}"
    status, doc = h.ask("POST", target)
    assert status == 200, doc
    return bool(doc)


def counts(h: Harness, queue: str) -> tuple[int, int, int]:
    c = h.ask("GET", f"/v1/queues/{queue}")[1]["counts"]
    return c["ready"], c["leased"], c["delayed"]


def totals(h: Harness, queue: str) -> dict[str, int]:
    return dict(h.ask("GET", f"/v1/queues/{queue}")[1]["totals"])


# ---- leases and expiry --------------------------------------------------------------------------


def test_a_lease_holds_until_its_deadline_and_not_a_millisecond_longer() -> None:
    h = Harness()
    q = make(h)
    mid = publish(h, q, "again")
    assert receive(h, q, "cid=1&visibility=0.2") == [(mid, 1)]
    h.advance(0.199)
    assert receive(h, q, "cid=2") == []
    h.advance(0.001)  # now == deadline: the lease is over (valid while now < deadline)
    assert delete(h, q, mid, 1) is False  # never deletable by cid 1 again
    assert lease(h, q, mid, 1, "10") is False
    h.advance(SLACK)
    assert receive(h, q, "cid=2") == [(mid, 2)]
    assert delete(h, q, mid, 1) is False
    assert delete(h, q, mid, 2) is True
    assert totals(h, q)["expired"] == 1


def test_a_delete_a_millisecond_before_the_deadline_succeeds() -> None:
    h = Harness()
    q = make(h)
    mid = publish(h, q)
    receive(h, q, "cid=1&visibility=1")
    h.advance(0.999)
    assert delete(h, q, mid, 1) is True
    assert counts(h, q) == (0, 0, 0)


def test_seed_routes_expire_the_same_way() -> None:
    h = Harness()
    mid = h.ask("POST", "/v1/publish", "x")[1]["id"]
    assert h.ask("GET", "/v1/consumer?cid=1&visibility=0.3")[1]["messages"][0]["id"] == mid
    h.advance(0.3)
    assert h.ask("DELETE", f"/v1/consumer?cid=1&id={mid}")[1] is False
    h.advance(SLACK)
    [msg] = h.ask("GET", "/v1/consumer?cid=2")[1]["messages"]
    assert msg == {"id": mid, "body": "x", "receives": 2}


def test_redelivered_messages_come_before_newer_ones() -> None:
    h = Harness()
    q = make(h)
    a = publish(h, q, "a")
    receive(h, q, "cid=1&visibility=0.1")
    b = publish(h, q, "b")
    h.advance(0.1 + SLACK)
    assert receive(h, q, "cid=2&limit=10") == [(a, 2), (b, 1)]


def test_visibility_zero_is_available_at_once_and_never_deletable() -> None:
    h = Harness()
    q = make(h)
    mid = publish(h, q)
    assert receive(h, q, "cid=1&visibility=0") == [(mid, 1)]
    assert delete(h, q, mid, 1) is False
    h.advance(SLACK)  # the expiry timer runs
    assert receive(h, q, "cid=2") == [(mid, 2)]


def test_queue_visibility_timeout_and_the_server_default() -> None:
    h = Harness(settings=Settings(visibility_timeout_s=0.2))
    q = make(h, "q", visibility_timeout=0.3)
    on_queue = publish(h, q)
    on_default = h.ask("POST", "/v1/publish", "d")[1]["id"]
    receive(h, q, "cid=1")
    h.ask("GET", "/v1/consumer?cid=1")
    h.advance(0.2 + SLACK)
    assert h.ask("GET", "/v1/consumer?cid=2")[1]["messages"][0]["id"] == on_default
    assert receive(h, q, "cid=2") == []
    h.advance(0.1)
    assert receive(h, q, "cid=2") == [(on_queue, 2)]


def test_times_round_up_to_whole_milliseconds() -> None:
    h = Harness()
    q = make(h)
    mid = publish(h, q)
    receive(h, q, "cid=1&visibility=0.0001")  # 1 ms, never 0
    assert delete(h, q, mid, 1) is True
    late = publish(h, q, "c", "?delay=0.0001")
    assert receive(h, q, "cid=1") == []
    h.advance(0.001 + SLACK)
    assert receive(h, q, "cid=1") == [(late, 1)]


# ---- delays -----------------------------------------------------------------------------------


def test_delay_hides_a_message_until_it_ends() -> None:
    h = Harness()
    q = make(h)
    publish(h, q, "a", "?delay=604800")
    b = publish(h, q, "b", "?delay=0")
    c = publish(h, q, "c", "?delay=0.25")
    assert counts(h, q) == (1, 0, 2)
    h.advance(0.249)
    assert receive(h, q, "cid=1&limit=10") == [(b, 1)]
    h.advance(0.001 + SLACK)
    assert counts(h, q) == (1, 1, 1)
    assert receive(h, q, "cid=1&limit=10") == [(c, 1)]
    h.advance(604800)
    assert counts(h, q) == (3, 0, 0)  # the leases ran out, the week-long delay too


def test_queue_delay_and_batch_delays_that_override_it() -> None:
    h = Harness()
    q = make(h, "q", delay=60)
    status, doc = h.ask(
        "POST",
        f"/v1/queues/{q}/batch",
        '["x", {"body": "y", "delay": 0}, {"body": "z", "delay": 0.2}]',
    )
    assert status == 201
    x, y, z = doc["ids"]
    single = publish(h, q, "s")  # the queue's delay
    zero = publish(h, q, "s0", "?delay=0")  # overrides it
    assert counts(h, q) == (2, 0, 3)
    h.advance(0.2 + SLACK)
    assert counts(h, q) == (3, 0, 2)
    assert receive(h, q, "cid=1&limit=10") == [(y, 1), (z, 1), (zero, 1)]
    h.advance(59.8)  # the queue's delay ends, and the 30 s leases of the first receive
    assert receive(h, q, "cid=1&limit=10") == [(x, 1), (y, 2), (z, 2), (single, 1), (zero, 2)]


# ---- extend and release -----------------------------------------------------------------------


def test_extend_keeps_the_lease_and_can_shorten_it() -> None:
    h = Harness()
    q = make(h)
    a, b = publish(h, q, "a"), publish(h, q, "b")
    assert receive(h, q, "cid=1&visibility=0.3&limit=2") == [(a, 1), (b, 1)]
    assert lease(h, q, a, 1, "30") is True
    assert lease(h, q, b, 1, "0.1") is True
    h.advance(0.1 + SLACK)
    assert receive(h, q, "cid=2&limit=2") == [(b, 2)]
    h.advance(29.898)
    assert receive(h, q, "cid=2") == []  # a is still 1's
    assert delete(h, q, a, 1) is True
    t = totals(h, q)
    assert (t["expired"], t["deleted"]) == (1, 1)


def test_lease_rules() -> None:
    h = Harness()
    q = make(h)
    mid = publish(h, q)
    assert lease(h, q, mid, 1, "10") is False  # not leased
    receive(h, q, "cid=1&visibility=0.2")
    assert lease(h, q, mid, 2, "10") is False  # someone else's
    assert lease(h, q, 2**63 - 1, 1, "10") is False  # unknown id
    h.advance(0.2)
    assert lease(h, q, mid, 1, "10") is False  # expired: never extended again
    h.advance(SLACK)
    assert counts(h, q) == (1, 0, 0)


def test_release_is_not_an_expiry() -> None:
    h = Harness()
    q = make(h)
    mid = publish(h, q)
    receive(h, q, "cid=1")
    assert lease(h, q, mid, 1, "0") is True
    assert receive(h, q, "cid=2") == [(mid, 2)]
    assert lease(h, q, mid, 1, "0") is False
    assert totals(h, q)["expired"] == 0


def test_counters_follow_every_operation() -> None:
    h = Harness()
    q = make(h)
    a, b = publish(h, q, "a"), publish(h, q, "b")
    publish(h, q, "c", "?delay=60")
    assert counts(h, q) == (2, 0, 1)
    receive(h, q, "cid=1&limit=2&visibility=0.2")
    assert counts(h, q) == (0, 2, 1) and totals(h, q)["delivered"] == 2
    assert lease(h, q, a, 1, "30") is True
    h.advance(0.2 + SLACK)  # b's lease runs out
    assert counts(h, q) == (1, 1, 1) and totals(h, q)["expired"] == 1
    assert delete(h, q, a, 1) is True
    assert receive(h, q, "cid=2") == [(b, 2)]
    h.advance(60)  # c's delay ends, and cid 2's 30 s lease of b
    assert counts(h, q) == (2, 0, 0)
    assert totals(h, q) == {
        "published": 3,
        "delivered": 3,
        "deleted": 1,
        "expired": 2,
        "dead_lettered": 0,
    }


def test_a_burst_of_expirations_is_processed_in_slices() -> None:
    """More leases running out at once than one expiry slice takes: every one comes back,
    in id order, over several timer callbacks."""
    h = Harness(settings=Settings(max_batch=1000))
    total = 3 * EXPIRE_BUDGET + 17
    for start in range(0, total, 1000):
        n = min(1000, total - start)
        assert h.ask("POST", "/v1/queues/default/batch", json.dumps(["e"] * n))[0] == 201
    leased = sum(
        len(h.ask("GET", "/v1/consumer?cid=1&limit=1000&visibility=0.3")[1]["messages"])
        for _ in range(5)
    )
    assert leased == total
    h.advance(0.3 + SLACK)
    assert totals(h, "default")["expired"] == total
    again = [
        m for _ in range(5) for m in h.ask("GET", "/v1/consumer?cid=2&limit=1000")[1]["messages"]
    ]
    assert len(again) == total and {m["receives"] for m in again} == {2}
    assert [m["id"] for m in again] == sorted(m["id"] for m in again)


# ---- dead letters by expiry ---------------------------------------------------------------------


def test_dead_letter_by_expiry_at_the_deadline() -> None:
    h = Harness()
    dlq = make(h, "dlq")
    src = make(h, "src", max_receives=2, dead_letter_queue=dlq, visibility_timeout=0.3)
    mid = publish(h, src, "poison")
    assert receive(h, src, "cid=1") == [(mid, 1)]
    h.advance(0.3 + SLACK)
    assert receive(h, src, "cid=2") == [(mid, 2)]
    h.advance(0.3)
    assert counts(h, dlq) == (0, 0, 0)
    h.advance(SLACK)  # received max_receives times: it moves instead of coming back
    assert counts(h, dlq) == (1, 0, 0) and counts(h, src) == (0, 0, 0)
    t = totals(h, src)
    assert (t["dead_lettered"], t["expired"], t["delivered"]) == (1, 1, 2)
    assert h.ask("GET", f"/v1/queues/{dlq}/messages?cid=4")[1]["messages"] == [
        {"id": mid, "body": "poison", "receives": 1}
    ]


def test_long_poll_on_a_dead_letter_queue_wakes_on_the_move() -> None:
    h = Harness()
    dlq = make(h, "dlq")
    src = make(h, "src", max_receives=1, dead_letter_queue=dlq, visibility_timeout=5)
    mid = publish(h, src)
    receive(h, src, "cid=1")
    waiter = h.send("GET", f"/v1/queues/{dlq}/messages?cid=2&wait=20")
    h.advance(5)
    assert not waiter.answered
    h.advance(SLACK)
    assert waiter.answered and waiter.json["messages"] == [{"id": mid, "body": "m", "receives": 1}]


# ---- long polls ---------------------------------------------------------------------------------


def test_a_long_poll_ends_empty_exactly_when_its_wait_ends() -> None:
    h = Harness()
    q = make(h)
    waiter = h.send("GET", f"/v1/queues/{q}/messages?cid=1&wait=0.5")
    h.advance(0.499)
    assert not waiter.answered
    h.advance(0.001)
    assert waiter.status == 200 and waiter.json == {"messages": []}
    assert totals(h, q)["delivered"] == 0


def test_a_long_poll_with_messages_is_answered_at_once_and_wait_zero_never_parks() -> None:
    h = Harness()
    q = make(h)
    assert h.send("GET", f"/v1/queues/{q}/messages?cid=1&wait=0").immediate
    mid = publish(h, q)
    pending = h.send("GET", f"/v1/queues/{q}/messages?cid=1&wait=10")
    assert pending.immediate and pending.json["messages"][0]["id"] == mid


@pytest.mark.parametrize("route", ["/v1/queues/q/messages?", "/v1/consumer?"])
def test_woken_by_publish_with_up_to_limit(route: str) -> None:
    h = Harness()
    make(h)
    queue = "q" if "queues" in route else "default"
    waiter = h.send("GET", route + "cid=1&wait=10&limit=2")
    assert not waiter.answered
    ids = h.ask("POST", f"/v1/queues/{queue}/batch", '["a","b","c"]')[1]["ids"]
    assert [m["id"] for m in waiter.json["messages"]] == ids[:2]
    assert counts(h, queue) == (1, 2, 0)


def test_woken_by_expiry_end_of_delay_and_release() -> None:
    h = Harness()
    q = make(h)
    expiring = publish(h, q)
    receive(h, q, "cid=1&visibility=0.5")
    waiter = h.send("GET", f"/v1/queues/{q}/messages?cid=2&wait=10")
    h.advance(0.5)
    assert not waiter.answered
    h.advance(SLACK)
    assert [(m["id"], m["receives"]) for m in waiter.json["messages"]] == [(expiring, 2)]

    delayed = publish(h, q, "later", "?delay=0.5")
    waiter = h.send("GET", f"/v1/queues/{q}/messages?cid=3&wait=10")
    h.advance(0.5)
    assert not waiter.answered
    h.advance(SLACK)
    assert [m["id"] for m in waiter.json["messages"]] == [delayed]

    waiter = h.send("GET", f"/v1/queues/{q}/messages?cid=4&wait=10")
    assert lease(h, q, delayed, 3, "0") is True
    assert [(m["id"], m["receives"]) for m in waiter.json["messages"]] == [(delayed, 2)]


def test_a_waiter_leases_with_its_own_visibility() -> None:
    h = Harness()
    q = make(h)
    waiter = h.send("GET", f"/v1/queues/{q}/messages?cid=1&wait=10&visibility=0.3")
    mid = publish(h, q)
    assert [m["id"] for m in waiter.json["messages"]] == [mid]
    h.advance(0.3)
    assert receive(h, q, "cid=2") == []
    h.advance(SLACK)
    assert receive(h, q, "cid=2") == [(mid, 2)]


def test_publish_to_another_queue_does_not_wake() -> None:
    h = Harness()
    q, other = make(h, "q"), make(h, "other")
    waiter = h.send("GET", f"/v1/queues/{q}/messages?cid=1&wait=0.8")
    publish(h, other)
    h.advance(0.799)
    assert not waiter.answered
    h.advance(0.001)
    assert waiter.json == {"messages": []}


def test_deleting_the_queue_answers_its_waiters_empty() -> None:
    h = Harness()
    q = make(h)
    waiter = h.send("GET", f"/v1/queues/{q}/messages?cid=1&wait=15")
    assert h.ask("DELETE", f"/v1/queues/{q}")[0] == 204
    assert waiter.answered and waiter.json == {"messages": []}


def test_waiters_are_served_in_fifo_order_one_message_at_a_time() -> None:
    """N waiters parked in order; each publish wakes the oldest one still waiting, and only
    it; the rest time out empty."""
    h = Harness()
    q = make(h)
    waiters = [h.send("GET", f"/v1/queues/{q}/messages?cid={i}&wait=20&limit=5") for i in range(30)]
    got = []
    for i in range(20):
        mid = publish(h, q, f"m{i}")
        got.append(mid)
        assert [w.answered for w in waiters] == [j <= i for j in range(30)]
        assert waiters[i].json["messages"] == [{"id": mid, "body": f"m{i}", "receives": 1}]
    assert counts(h, q) == (0, 20, 0)
    h.advance(20)
    assert all(w.json == {"messages": []} for w in waiters[20:])


def test_closed_waiters_lease_nothing_and_keep_their_place_for_nobody() -> None:
    h = Harness()
    q = make(h)
    gone = [FakeConnection() for _ in range(3)]
    for i, conn in enumerate(gone):
        h.send("GET", f"/v1/queues/{q}/messages?cid={100 + i}&wait=15", conn=conn)
    live = h.send("GET", f"/v1/queues/{q}/messages?cid=2&wait=15")
    for conn in gone[:2]:
        conn.closed = True  # the connection closed without telling (the long poll skips it)
    gone[2].closed = True
    mid = publish(h, q)
    assert [(m["id"], m["receives"]) for m in live.json["messages"]] == [(mid, 1)]
    assert totals(h, q)["delivered"] == 1
    assert h.longpoll.count == 0


def test_a_cancelled_waiter_is_dropped_at_once() -> None:
    h = Harness()
    q = make(h)
    first = h.send("GET", f"/v1/queues/{q}/messages?cid=1&wait=15")
    second = h.send("GET", f"/v1/queues/{q}/messages?cid=2&wait=15")
    assert h.longpoll.count == 2
    first.conn.closed = True
    h.router.cancel(first.req)  # what the protocol does when the connection is lost
    assert h.longpoll.count == 1
    mid = publish(h, q)
    assert not first.answered
    assert [m["id"] for m in second.json["messages"]] == [mid]
    assert h.longpoll.count == 0 and h.loop.pending == 1  # the lease's expiry only


def test_shutdown_answers_every_waiter_empty_and_later_ones_at_once() -> None:
    h = Harness()
    q = make(h)
    waiters = [h.send("GET", f"/v1/queues/{q}/messages?cid={i}&wait=20") for i in range(3)]
    waiters.append(h.send("GET", "/v1/consumer?cid=9&wait=20"))
    h.longpoll.close()
    assert all(w.json == {"messages": []} for w in waiters)
    late = h.send("GET", f"/v1/queues/{q}/messages?cid=1&wait=20")
    assert late.immediate and late.json == {"messages": []}
