"""Dead letters end to end through the real server: by expiry and by release, chains, a
dead-letter queue full for publishes, and a dead-letter queue that cannot be deleted."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from _server import (
    ServerProcess,
    check_error,
    get,
    info,
    make_queue,
    publish,
    receive,
    request,
    running_server,
)
from conftest import wait_until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with running_server() as srv:
        yield srv


def put(srv: ServerProcess, name: str, **attrs: Any) -> int:
    return request(srv, "PUT", f"/v1/queues/{name}", body=json.dumps(attrs)).status


def release(srv: ServerProcess, name: str, msg_id: int, cid: int) -> Any:
    resp = request(srv, "POST", f"/v1/queues/{name}/messages/{msg_id}/lease?cid={cid}&timeout=0")
    assert resp.status == 200, resp.body
    return resp.json()


# ---- end to end -------------------------------------------------------------------------------
def test_dead_letter_by_expiry(server: ServerProcess) -> None:
    dlq = make_queue(server)
    src = make_queue(server, max_receives=2, dead_letter_queue=dlq, visibility_timeout=0.3)
    mid = publish(server, src, "poison")
    assert [(m["id"], m["receives"]) for m in receive(server, src, "cid=1")] == [(mid, 1)]
    got = wait_until(lambda: receive(server, src, "cid=2"), what="the first lease to run out")
    assert [(m["id"], m["receives"]) for m in got] == [(mid, 2)]
    # The second lease runs out: received max_receives times, it moves instead of returning.
    wait_until(lambda: info(server, dlq)["counts"]["ready"] == 1)
    src_info = info(server, src)
    assert src_info["counts"] == {"ready": 0, "leased": 0, "delayed": 0}
    assert src_info["totals"]["dead_lettered"] == 1
    assert src_info["totals"]["expired"] == 1  # the first expiry only
    assert src_info["totals"]["delivered"] == 2
    assert receive(server, src, "cid=3") == []
    # Same id, same body, receive count back to 0 (this receive makes it 1).
    got = receive(server, dlq, "cid=4")
    assert got == [{"id": mid, "body": "poison", "receives": 1}]
    resp = request(server, "DELETE", f"/v1/queues/{dlq}/messages/{mid}?cid=4")
    assert resp.json() is True


def test_dead_letter_by_release(server: ServerProcess) -> None:
    dlq = make_queue(server)
    src = make_queue(server, max_receives=1, dead_letter_queue=dlq)
    mid = publish(server, src)
    receive(server, src, "cid=1")
    assert release(server, src, mid, 1) is True
    # A release moves it at once, without waiting for a timer.
    assert info(server, dlq)["counts"]["ready"] == 1
    assert info(server, src)["totals"]["dead_lettered"] == 1
    assert [(m["id"], m["receives"]) for m in receive(server, dlq, "cid=2")] == [(mid, 1)]


def test_below_max_receives_it_comes_back(server: ServerProcess) -> None:
    dlq = make_queue(server)
    src = make_queue(server, max_receives=3, dead_letter_queue=dlq)
    mid = publish(server, src)
    for n in (1, 2):
        got = receive(server, src, "cid=1")
        assert [(m["id"], m["receives"]) for m in got] == [(mid, n)]
        assert release(server, src, mid, 1) is True
    assert info(server, dlq)["counts"]["ready"] == 0
    got = receive(server, src, "cid=1")
    assert [(m["id"], m["receives"]) for m in got] == [(mid, 3)]
    # The consumer that got it the third time can still delete it: nothing moves a leased message.
    resp = request(server, "DELETE", f"/v1/queues/{src}/messages/{mid}?cid=1")
    assert resp.json() is True
    assert info(server, dlq)["counts"]["ready"] == 0


def dead_letter_two_then_publish(server: ServerProcess) -> tuple[int, int, int, list[int]]:
    """Two messages dead-lettered in reverse order, then one published to the dead-letter
    queue itself: (a, b, newer, the ids one receive of the dead-letter queue returns)."""
    dlq = make_queue(server)
    src = make_queue(server, max_receives=1, dead_letter_queue=dlq)
    a, b = publish(server, src, "a"), publish(server, src, "b")
    receive(server, src, "cid=1&limit=2")
    assert release(server, src, b, 1) is True
    assert release(server, src, a, 1) is True
    newer = publish(server, dlq, "direct")
    return a, b, newer, [m["id"] for m in receive(server, dlq, "cid=2&limit=10")]


def test_dead_letters_keep_their_ids_lowest_first(server: ServerProcess) -> None:
    a, b, newer, got = dead_letter_two_then_publish(server)
    assert a < b and newer not in (a, b)
    assert got == sorted([a, b, newer])


@pytest.mark.not_on(
    "redis-cluster",
    reason="an id carries its queue's cluster slot: a message dead-lettered from a queue in a "
    "higher slot keeps an id larger than any the dead-letter queue's slot gives",
)
def test_a_publish_after_dead_letters_gets_a_larger_id(server: ServerProcess) -> None:
    a, b, newer, got = dead_letter_two_then_publish(server)
    assert got == [a, b, newer]


def test_chain_of_dead_letter_queues(server: ServerProcess) -> None:
    c = make_queue(server)
    b = make_queue(server, max_receives=1, dead_letter_queue=c)
    a = make_queue(server, max_receives=1, dead_letter_queue=b)
    mid = publish(server, a, "hop")
    for here, there in ((a, b), (b, c)):
        got = receive(server, here, "cid=1")
        assert [(m["id"], m["receives"]) for m in got] == [(mid, 1)]
        assert release(server, here, mid, 1) is True
        assert info(server, there)["counts"]["ready"] == 1
        assert info(server, here)["totals"]["dead_lettered"] == 1
    got = receive(server, c, "cid=1")
    assert got == [{"id": mid, "body": "hop", "receives": 1}]
    # The end of the chain has no max_receives: releasing keeps it there.
    assert release(server, c, mid, 1) is True
    assert info(server, c)["counts"]["ready"] == 1


def test_long_poll_on_dead_letter_queue_wakes_on_move(server: ServerProcess) -> None:
    import http.client

    dlq = make_queue(server)
    src = make_queue(server, max_receives=1, dead_letter_queue=dlq, visibility_timeout=0.4)
    mid = publish(server, src)
    receive(server, src, "cid=1")
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=15)
    t0 = time.monotonic()
    conn.request("GET", f"/v1/queues/{dlq}/messages?cid=2&wait=10")
    resp = conn.getresponse()
    messages = json.loads(resp.read())["messages"]
    conn.close()
    assert [m["id"] for m in messages] == [mid]
    assert time.monotonic() - t0 < 2


def test_default_queue_can_dead_letter() -> None:
    with running_server() as srv:
        dlq = make_queue(srv)
        assert put(srv, "default", max_receives=1, dead_letter_queue=dlq) == 200
        resp = request(srv, "POST", "/v1/publish", body="seed")
        mid = resp.json()["id"]
        got = json.loads(get(srv, "/v1/consumer?cid=1").body)["messages"]
        assert [m["id"] for m in got] == [mid]
        assert release(srv, "default", mid, 1) is True
        assert [m["id"] for m in receive(srv, dlq, "cid=2")] == [mid]
        check_error(request(srv, "DELETE", f"/v1/queues/{dlq}"), 409, code="queue_in_use")


# ---- deletion ---------------------------------------------------------------------------------
def test_dead_letter_queue_in_use_cannot_be_deleted(server: ServerProcess) -> None:
    dlq = make_queue(server)
    src1 = make_queue(server, max_receives=1, dead_letter_queue=dlq)
    src2 = make_queue(server, dead_letter_queue=dlq)  # set, even without max_receives
    err = check_error(request(server, "DELETE", f"/v1/queues/{dlq}"), 409, code="queue_in_use")
    assert dlq in err["message"]
    assert put(server, src1, max_receives=None, dead_letter_queue=None) == 200
    check_error(request(server, "DELETE", f"/v1/queues/{dlq}"), 409, code="queue_in_use")
    # Deleting the source queue frees it too.
    assert request(server, "DELETE", f"/v1/queues/{src2}").status == 204
    assert request(server, "DELETE", f"/v1/queues/{dlq}").status == 204
    # The dead-letter queue and its messages are gone; the source queues stay valid.
    check_error(get(server, f"/v1/queues/{dlq}"), 404, code="queue_not_found")
    assert info(server, src1)["attributes"]["dead_letter_queue"] is None


def test_dead_letter_queue_keeps_its_messages_while_in_use(server: ServerProcess) -> None:
    dlq = make_queue(server)
    src = make_queue(server, max_receives=1, dead_letter_queue=dlq)
    mid = publish(server, src)
    receive(server, src, "cid=1")
    release(server, src, mid, 1)
    check_error(request(server, "DELETE", f"/v1/queues/{dlq}"), 409, code="queue_in_use")
    assert info(server, dlq)["counts"]["ready"] == 1
    # Purging a dead-letter queue is fine: that is how one empties it.
    resp = request(server, "POST", f"/v1/queues/{dlq}/purge")
    assert resp.json() == {"purged": 1}


# ---- the memory limit -------------------------------------------------------------------------
@pytest.mark.not_on(
    "redis",
    reason="--max-memory is Redis's maxmemory there: all of Redis's memory, not message bytes",
)
def test_full_dead_letter_queue_still_accepts_moves() -> None:
    limit = 100_000
    with running_server("--max-memory", str(limit)) as srv:
        dlq = make_queue(srv)
        src = make_queue(srv, max_receives=1, dead_letter_queue=dlq, visibility_timeout=0.3)
        ids = []
        for _ in range(limit // 500 + 10):
            resp = request(srv, "POST", f"/v1/queues/{src}/messages", body="x" * 500)
            if resp.status == 507:
                break
            assert resp.status == 201
            ids.append(resp.json()["id"])
        else:
            raise AssertionError("never reached the memory limit")
        for _ in range(1000):  # fill the last bytes, so that even 1 byte is refused
            resp = request(srv, "POST", f"/v1/queues/{src}/messages", body="z")
            if resp.status == 507:
                break
            assert resp.status == 201
        else:
            raise AssertionError("never reached the memory limit with 1-byte messages")
        # Full: publishing to the dead-letter queue is refused, nothing stored.
        check_error(
            request(srv, "POST", f"/v1/queues/{dlq}/messages", body="y"), 507, code="memory_limit"
        )
        assert info(srv, dlq)["totals"]["published"] == 0
        # A move needs no new memory: by release and by expiry, it happens.
        got = receive(srv, src, "cid=1&limit=2")
        assert [m["id"] for m in got] == ids[:2]
        assert release(srv, src, ids[0], 1) is True
        wait_until(lambda: info(srv, dlq)["counts"]["ready"] == 2)
        assert info(srv, src)["totals"]["dead_lettered"] == 2
        got = receive(srv, dlq, "cid=2&limit=10")
        assert [(m["id"], m["receives"]) for m in got] == [(ids[0], 1), (ids[1], 1)]
        # And still nothing new can be published there... until space is freed.
        check_error(
            request(srv, "POST", f"/v1/queues/{dlq}/messages", body="y"), 507, code="memory_limit"
        )
        resp = request(
            srv,
            "POST",
            f"/v1/queues/{dlq}/ack",
            body=json.dumps({"cid": 2, "ids": [ids[0], ids[1]]}),
        )
        assert resp.json() == {"deleted": [ids[0], ids[1]], "failed": []}
        assert request(srv, "POST", f"/v1/queues/{dlq}/messages", body="y").status == 201
