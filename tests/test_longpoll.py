"""Long polling through the real server: parked receives woken by publish, expiry, the end of
a delay and release; timeouts; disconnected waiters; FIFO order; shutdown.

No test sleeps to let the server park a request: each waits until ``/metrics`` shows it
parked (``wonderq_waiting_receives``). The millisecond rules are tested on a fake clock in
tests/test_api_inprocess.py."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from _server import (
    ServerProcess,
    info,
    make_queue,
    publish,
    receive,
    request,
    running_server,
)
from conftest import wait_parked, wait_until, waiting_receives

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with running_server() as srv:
        yield srv


class Parked:
    """A receive sent now and read later (the request is on the wire when this returns)."""

    def __init__(self, srv: ServerProcess, path: str, timeout: float = 30.0) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=timeout)
        self.sent_at = time.monotonic()
        self.conn.request("GET", path)

    def result(self) -> tuple[int, list[dict[str, Any]], float]:
        """(status, messages, seconds from send to answer)."""
        resp = self.conn.getresponse()
        data = resp.read()
        elapsed = time.monotonic() - self.sent_at
        self.conn.close()
        assert resp.headers.get("Cache-Control") == "no-store"
        messages = json.loads(data)["messages"] if resp.status == 200 else []
        return resp.status, messages, elapsed

    def close(self) -> None:
        self.conn.close()


def settle(srv: ServerProcess, parked: int) -> None:
    """Wait until ``parked`` receives are parked on ``srv`` (this module's tests run one at a
    time on it, each ending with none parked)."""
    wait_parked(srv, parked)


# ---- answers without parking ------------------------------------------------------------------
def test_available_message_is_answered_at_once(server: ServerProcess) -> None:
    name = make_queue(server)
    mid = publish(server, name)
    t0 = time.monotonic()
    got = receive(server, name, "cid=1&wait=10")
    assert [m["id"] for m in got] == [mid] and time.monotonic() - t0 < 1


def test_wait_zero_never_parks(server: ServerProcess) -> None:
    name = make_queue(server)
    t0 = time.monotonic()
    assert receive(server, name, "cid=1&wait=0") == []
    assert time.monotonic() - t0 < 1


def test_wait_ends_with_an_empty_list(server: ServerProcess) -> None:
    name = make_queue(server)
    t0 = time.monotonic()
    assert receive(server, name, "cid=1&wait=0.5") == []
    elapsed = time.monotonic() - t0
    assert 0.45 <= elapsed < 2.5, elapsed
    assert info(server, name)["totals"]["delivered"] == 0


# ---- wake-ups ---------------------------------------------------------------------------------
def test_wake_on_publish(server: ServerProcess) -> None:
    name = make_queue(server)
    waiter = Parked(server, f"/v1/queues/{name}/messages?cid=1&wait=10")
    settle(server, 1)
    published_at = time.monotonic()
    mid = publish(server, name, "hello")
    status, messages, _ = waiter.result()
    assert status == 200
    assert messages == [{"id": mid, "body": "hello", "receives": 1}]
    assert time.monotonic() - published_at < 1
    # The waiter leased it with the queue's visibility timeout.
    assert info(server, name)["counts"] == {"ready": 0, "leased": 1, "delayed": 0}


def test_wake_on_publish_seed_routes(server: ServerProcess) -> None:
    assert request(server, "POST", "/v1/queues/default/purge").status == 200
    waiter = Parked(server, "/v1/consumer?cid=77&wait=10&limit=5")
    settle(server, 1)
    resp = request(server, "POST", "/v1/publish", body="seed")
    assert resp.status == 201
    status, messages, elapsed = waiter.result()
    assert status == 200 and [m["id"] for m in messages] == [resp.json()["id"]]
    assert elapsed < 5
    assert request(server, "POST", "/v1/queues/default/purge").status == 200


def test_woken_waiter_gets_up_to_limit(server: ServerProcess) -> None:
    name = make_queue(server)
    waiter = Parked(server, f"/v1/queues/{name}/messages?cid=1&wait=10&limit=2")
    settle(server, 1)
    resp = request(server, "POST", f"/v1/queues/{name}/batch", body='["a","b","c"]')
    ids = resp.json()["ids"]
    status, messages, _ = waiter.result()
    # Answered with at least one message, never more than the limit, lowest ids first.
    assert status == 200 and 1 <= len(messages) <= 2
    assert [m["id"] for m in messages] == ids[: len(messages)]


def test_wake_on_expiry(server: ServerProcess) -> None:
    name = make_queue(server)
    mid = publish(server, name)
    assert receive(server, name, "cid=1&visibility=0.5")[0]["id"] == mid
    waiter = Parked(server, f"/v1/queues/{name}/messages?cid=2&wait=10")
    status, messages, elapsed = waiter.result()
    assert status == 200
    assert [(m["id"], m["receives"]) for m in messages] == [(mid, 2)]
    assert 0.3 <= elapsed < 2, elapsed


def test_wake_on_end_of_delay(server: ServerProcess) -> None:
    name = make_queue(server)
    mid = publish(server, name, "later", "?delay=0.5")
    waiter = Parked(server, f"/v1/queues/{name}/messages?cid=2&wait=10")
    status, messages, elapsed = waiter.result()
    assert status == 200 and [m["id"] for m in messages] == [mid]
    assert 0.3 <= elapsed < 2, elapsed


def test_wake_on_release(server: ServerProcess) -> None:
    name = make_queue(server)
    mid = publish(server, name)
    receive(server, name, "cid=1&visibility=60")
    waiter = Parked(server, f"/v1/queues/{name}/messages?cid=2&wait=10")
    settle(server, 1)
    released_at = time.monotonic()
    resp = request(server, "POST", f"/v1/queues/{name}/messages/{mid}/lease?cid=1&timeout=0")
    assert resp.json() is True
    status, messages, _ = waiter.result()
    assert status == 200 and [(m["id"], m["receives"]) for m in messages] == [(mid, 2)]
    assert time.monotonic() - released_at < 1


def test_waiter_lease_uses_its_visibility(server: ServerProcess) -> None:
    name = make_queue(server)
    waiter = Parked(server, f"/v1/queues/{name}/messages?cid=1&wait=10&visibility=0.3")
    settle(server, 1)
    mid = publish(server, name)
    assert [m["id"] for m in waiter.result()[1]] == [mid]
    assert receive(server, name, "cid=2") == []
    got = wait_until(lambda: receive(server, name, "cid=2"), what="the waiter's 0.3 s lease")
    assert [m["id"] for m in got] == [mid]


def test_publish_to_another_queue_does_not_wake(server: ServerProcess) -> None:
    name, other = make_queue(server), make_queue(server)
    waiter = Parked(server, f"/v1/queues/{name}/messages?cid=1&wait=0.4")
    settle(server, 1)
    publish(server, other)
    status, messages, elapsed = waiter.result()
    assert status == 200 and messages == [] and elapsed >= 0.35


def test_deleting_the_queue_answers_its_waiters_empty(server: ServerProcess) -> None:
    name = make_queue(server)
    waiter = Parked(server, f"/v1/queues/{name}/messages?cid=1&wait=15")
    settle(server, 1)
    assert request(server, "DELETE", f"/v1/queues/{name}").status == 204
    status, messages, elapsed = waiter.result()
    assert status == 200 and messages == [] and elapsed < 5


# ---- disconnected waiters ---------------------------------------------------------------------
def raw_parked(srv: ServerProcess, path: str) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return s


def test_disconnected_waiter_leases_nothing(server: ServerProcess) -> None:
    name = make_queue(server)
    gone = [
        raw_parked(server, f"/v1/queues/{name}/messages?cid={100 + i}&wait=15") for i in range(5)
    ]
    settle(server, 5)
    for s in gone:
        s.close()
    settle(server, 0)
    mid = publish(server, name, "for the living")
    got = receive(server, name, "cid=2&wait=3")
    assert [(m["id"], m["receives"]) for m in got] == [(mid, 1)]
    assert info(server, name)["totals"]["delivered"] == 1


def test_disconnected_waiter_before_a_live_one(server: ServerProcess) -> None:
    name = make_queue(server)
    gone = raw_parked(server, f"/v1/queues/{name}/messages?cid=1&wait=15")
    settle(server, 1)
    live = Parked(server, f"/v1/queues/{name}/messages?cid=2&wait=15")
    settle(server, 2)
    gone.close()
    settle(server, 1)
    mid = publish(server, name)
    status, messages, _ = live.result()
    assert status == 200 and [(m["id"], m["receives"]) for m in messages] == [(mid, 1)]


def test_half_closed_waiter_is_dropped(server: ServerProcess) -> None:
    """A client that shuts its sending side down (EOF) while parked is gone too."""
    name = make_queue(server)
    s = raw_parked(server, f"/v1/queues/{name}/messages?cid=1&wait=15")
    settle(server, 1)
    s.shutdown(socket.SHUT_WR)
    settle(server, 0)
    s.close()
    mid = publish(server, name)
    got = receive(server, name, "cid=2&wait=3")
    assert [(m["id"], m["receives"]) for m in got] == [(mid, 1)]


# ---- FIFO -------------------------------------------------------------------------------------
def test_fifty_waiters_are_served_in_fifo_order(server: ServerProcess) -> None:
    """Each waiter is sent once the one before it is parked, so parking order is known; one
    publish at a time then wakes exactly the oldest waiter left."""
    name = make_queue(server)
    waiters = []
    for i in range(50):
        waiters.append(Parked(server, f"/v1/queues/{name}/messages?cid={i}&wait=20&limit=5"))
        settle(server, i + 1)
    for i, waiter in enumerate(waiters):
        mid = publish(server, name, f"m{i}")
        status, messages, _ = waiter.result()
        assert status == 200 and messages == [{"id": mid, "body": f"m{i}", "receives": 1}], i
        assert waiting_receives(server) == 49 - i  # the others still wait
    assert info(server, name)["counts"] == {"ready": 0, "leased": 50, "delayed": 0}


def test_one_message_wakes_one_waiter(server: ServerProcess) -> None:
    name = make_queue(server)
    first = Parked(server, f"/v1/queues/{name}/messages?cid=1&wait=15")
    settle(server, 1)
    second = Parked(server, f"/v1/queues/{name}/messages?cid=2&wait=0.6")
    settle(server, 2)
    mid = publish(server, name)
    assert [m["id"] for m in first.result()[1]] == [mid]
    assert waiting_receives(server) == 1
    status, messages, elapsed = second.result()
    assert status == 200 and messages == [] and elapsed >= 0.55


# ---- shutdown ---------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_shutdown_answers_waiters_empty_and_exits_0() -> None:
    srv = ServerProcess().start()
    try:
        name = make_queue(srv)
        waiters = [Parked(srv, f"/v1/queues/{name}/messages?cid={i}&wait=20") for i in range(5)]
        waiters.append(Parked(srv, "/v1/consumer?cid=99&wait=20"))
        settle(srv, 6)
        t0 = time.monotonic()
        srv.signal(signal.SIGTERM)
        for w in waiters:
            status, messages, _ = w.result()
            assert status == 200 and messages == []
        assert time.monotonic() - t0 < 5
        assert srv.wait(10) == 0, srv.output()
    finally:
        srv.stop()


@pytest.mark.timeout(60)
def test_sigint_also_answers_waiters_and_exits_0() -> None:
    srv = ServerProcess().start()
    try:
        waiter = Parked(srv, "/v1/consumer?cid=1&wait=20")
        settle(srv, 1)
        srv.signal(signal.SIGINT)
        status, messages, elapsed = waiter.result()
        assert status == 200 and messages == [] and elapsed < 5
        assert srv.wait(10) == 0, srv.output()
    finally:
        srv.stop()
