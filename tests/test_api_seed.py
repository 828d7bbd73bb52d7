"""The seed's routes on queue ``default`` through the real server: every rule of the contract
(lease, ownership, expiry, delay, order, long polling) and every validation error."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from _server import MAX_ID, Response, ServerProcess, check_error, get, request, running_server
from conftest import wait_parked, wait_until, waiting_receives

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def seed_server() -> Iterator[ServerProcess]:
    with running_server("--visibility-timeout", "30") as srv:
        yield srv


@pytest.fixture
def fresh(seed_server: ServerProcess) -> ServerProcess:
    """This module's server with the queue ``default`` emptied (a purge drops ready, leased
    and delayed messages) and no receive parked: a server per test cost half a second."""
    assert request(seed_server, "POST", "/v1/queues/default/purge").status == 200
    wait_parked(seed_server, 0)
    return seed_server


def publish(srv: ServerProcess, body: str | bytes = "m", query: str = "") -> int:
    resp = request(srv, "POST", f"/v1/publish{query}", body=body)
    assert resp.status == 201, resp.body
    doc = resp.json()
    assert set(doc) == {"id"} and isinstance(doc["id"], int)
    assert resp.headers["Content-Type"] == "application/json"
    return int(doc["id"])


def receive(srv: ServerProcess, query: str) -> list[dict[str, Any]]:
    resp = get(srv, f"/v1/consumer?{query}")
    assert resp.status == 200, resp.body
    doc = resp.json()
    assert set(doc) == {"messages"}
    return list(doc["messages"])


def delete(srv: ServerProcess, cid: int, msg_id: int) -> Any:
    resp = request(srv, "DELETE", f"/v1/consumer?cid={cid}&id={msg_id}")
    assert resp.status == 200, resp.body
    assert resp.body in (b"true", b"false")
    return resp.json()


# ---- the three routes ----------------------------------------------------------------------------
def test_publish_receive_delete(fresh: ServerProcess) -> None:
    first = publish(fresh, "hello")
    second = publish(fresh, "world")
    assert second > first >= 1
    [msg] = receive(fresh, "cid=7")
    assert msg == {"id": first, "body": "hello", "receives": 1}
    assert delete(fresh, 7, first) is True
    assert receive(fresh, "cid=7&limit=5") == [{"id": second, "body": "world", "receives": 1}]


def test_bodies_round_trip_exactly(fresh: ServerProcess) -> None:
    bodies = ['{"json": "inside"}', 'quote " backslash \\ tab \t nl \n', "ünïcödé ✓ 🚀", "\x00\x1f"]
    ids = [publish(fresh, body) for body in bodies]
    got = receive(fresh, "cid=1&limit=10")
    assert [(m["id"], m["body"]) for m in got] == list(zip(ids, bodies, strict=True))


def test_limit_and_order(fresh: ServerProcess) -> None:
    ids = [publish(fresh, f"m{i}") for i in range(10)]
    assert [m["id"] for m in receive(fresh, "cid=1&limit=3")] == ids[:3]
    assert [m["id"] for m in receive(fresh, "cid=2")] == ids[3:4]  # limit defaults to 1
    assert [m["id"] for m in receive(fresh, "cid=3&limit=1000")] == ids[4:]
    assert receive(fresh, "cid=4&limit=10") == []


def test_a_lease_belongs_to_one_consumer(fresh: ServerProcess) -> None:
    msg_id = publish(fresh)
    assert [m["id"] for m in receive(fresh, "cid=1")] == [msg_id]
    assert receive(fresh, "cid=2") == []  # leased: nobody else gets it
    assert delete(fresh, 2, msg_id) is False  # not the owner
    assert delete(fresh, 1, msg_id) is True
    assert delete(fresh, 1, msg_id) is False  # already gone
    assert delete(fresh, 1, MAX_ID) is False  # never existed


def test_delete_of_unleased_message_is_false(fresh: ServerProcess) -> None:
    msg_id = publish(fresh)
    assert delete(fresh, 1, msg_id) is False
    assert [m["id"] for m in receive(fresh, "cid=1")] == [msg_id]


def test_expired_lease_makes_message_available_again(fresh: ServerProcess) -> None:
    """End to end on the real clock (the millisecond rules: tests/test_api_inprocess.py)."""
    msg_id = publish(fresh, "again")
    assert receive(fresh, "cid=1&visibility=0.2")[0]["receives"] == 1
    assert receive(fresh, "cid=2") == []
    [msg] = wait_until(lambda: receive(fresh, "cid=2"), what="the lease to run out")
    assert msg == {"id": msg_id, "body": "again", "receives": 2}
    assert delete(fresh, 1, msg_id) is False  # the lease ran out: never deletable by cid 1
    assert delete(fresh, 2, msg_id) is True


def test_delay_hides_a_message_until_it_ends(fresh: ServerProcess) -> None:
    later = publish(fresh, "later", "?delay=0.3")
    now = publish(fresh, "now")
    assert [m["id"] for m in receive(fresh, "cid=1&limit=10")] == [now]
    got = wait_until(lambda: receive(fresh, "cid=1&limit=10"), what="the delay to end")
    assert [m["id"] for m in got] == [later]


def test_default_visibility_timeout_flag() -> None:
    with running_server("--visibility-timeout", "0.2") as srv:
        msg_id = publish(srv)
        receive(srv, "cid=1")
        assert receive(srv, "cid=2") == []
        got = wait_until(lambda: receive(srv, "cid=2"), what="the 0.2 s lease to run out")
        assert got[0]["id"] == msg_id


def test_query_values_are_percent_decoded_and_unknown_ones_ignored(fresh: ServerProcess) -> None:
    msg_id = publish(fresh, "x", "?delay=%30&utm_source=a&flag")
    [msg] = receive(fresh, "c%69d=%31&limit=%32&other=%E2%9C%93")
    assert msg["id"] == msg_id
    assert delete(fresh, 1, msg_id) is True


def test_get_with_body_and_post_with_query_only(fresh: ServerProcess) -> None:
    publish(fresh)
    resp = request(fresh, "GET", "/v1/consumer?cid=1", body=b"ignored")
    assert resp.status == 200 and len(resp.json()["messages"]) == 1


# ---- long polling --------------------------------------------------------------------------------
def test_long_poll_without_messages_waits_then_answers_empty(fresh: ServerProcess) -> None:
    start = time.monotonic()
    assert receive(fresh, "cid=1&wait=0.5") == []
    assert 0.45 < time.monotonic() - start < 3


def test_long_poll_with_messages_answers_at_once(fresh: ServerProcess) -> None:
    msg_id = publish(fresh)
    assert receive(fresh, "cid=1&wait=5")[0]["id"] == msg_id


def background_receive(srv: ServerProcess, query: str) -> tuple[threading.Thread, list[Any]]:
    """A receive in a thread, returned once the server has parked it (one more parked
    receive in /metrics)."""
    out: list[Any] = []
    parked = waiting_receives(srv)
    thread = threading.Thread(target=lambda: out.append(receive(srv, query)))
    thread.start()
    wait_parked(srv, parked + 1)
    return thread, out


def test_long_poll_is_woken_by_publish(fresh: ServerProcess) -> None:
    thread, out = background_receive(fresh, "cid=1&wait=10&limit=5")
    msg_id = publish(fresh, "wake up")
    thread.join(5)
    assert [m["id"] for m in out[0]] == [msg_id]


def test_long_poll_is_woken_by_expiry(fresh: ServerProcess) -> None:
    msg_id = publish(fresh)
    receive(fresh, "cid=1&visibility=0.5")
    thread, out = background_receive(fresh, "cid=2&wait=10")
    thread.join(5)
    assert out[0] == [{"id": msg_id, "body": "m", "receives": 2}]


def test_long_poll_is_woken_by_end_of_delay(fresh: ServerProcess) -> None:
    msg_id = publish(fresh, "d", "?delay=0.6")
    thread, out = background_receive(fresh, "cid=2&wait=10")
    thread.join(5)
    assert [m["id"] for m in out[0]] == [msg_id]


def test_waiters_are_served_first_come_first_served(fresh: ServerProcess) -> None:
    first, out1 = background_receive(fresh, "cid=1&wait=10")
    second, out2 = background_receive(fresh, "cid=2&wait=10")
    a = publish(fresh, "a")
    first.join(5)
    assert [m["id"] for m in out1[0]] == [a]
    assert waiting_receives(fresh) == 1  # the one message went to the first waiter
    b = publish(fresh, "b")
    second.join(5)
    assert [m["id"] for m in out2[0]] == [b]


def test_long_poll_visibility_applies_from_the_wake(fresh: ServerProcess) -> None:
    thread, out = background_receive(fresh, "cid=1&wait=10&visibility=0.3")
    msg_id = publish(fresh)
    thread.join(5)
    assert out[0][0]["id"] == msg_id
    assert delete(fresh, 1, msg_id) is True  # still leased to the woken waiter


def test_long_poll_validates_before_parking(fresh: ServerProcess) -> None:
    start = time.monotonic()
    check_error(get(fresh, "/v1/consumer?cid=1&wait=5&limit=0"), 400, names="limit")
    assert time.monotonic() - start < 1


# ---- validation ----------------------------------------------------------------------------------
BIG = "99999999999999999999"

BAD_RECEIVE = [
    ("", "cid"),
    ("limit=1", "cid"),
    ("cid=", "cid"),
    ("cid=-1", "cid"),
    ("cid=%2B1", "cid"),
    ("cid=+1", "cid"),
    ("cid=1.0", "cid"),
    ("cid=1e3", "cid"),
    ("cid=0x10", "cid"),
    ("cid=abc", "cid"),
    ("cid=nan", "cid"),
    (f"cid={MAX_ID + 1}", "cid"),
    (f"cid={BIG}", "cid"),
    ("cid=" + "9" * 5000, "cid"),
    ("cid=%D9%A1", "cid"),  # ARABIC-INDIC DIGIT ONE: a digit, but not ASCII
    ("cid=%C2%B9", "cid"),  # SUPERSCRIPT ONE
    ("cid=1&cid=1", "cid"),
    ("cid=1&limit=0", "limit"),
    ("cid=1&limit=-1", "limit"),
    ("cid=1&limit=1001", "limit"),
    (f"cid=1&limit={BIG}", "limit"),
    ("cid=1&limit=", "limit"),
    ("cid=1&limit=1.5", "limit"),
    ("cid=1&limit=1&limit=2", "limit"),
    ("cid=1&visibility=-1", "visibility"),
    ("cid=1&visibility=43200.001", "visibility"),
    ("cid=1&visibility=43201", "visibility"),
    (f"cid=1&visibility={BIG}", "visibility"),
    ("cid=1&visibility=1e3", "visibility"),
    ("cid=1&visibility=nan", "visibility"),
    ("cid=1&visibility=inf", "visibility"),
    ("cid=1&visibility=.5", "visibility"),
    ("cid=1&visibility=5.", "visibility"),
    ("cid=1&visibility=", "visibility"),
    ("cid=1&visibility=1&visibility=1", "visibility"),
    ("cid=1&wait=-1", "wait"),
    ("cid=1&wait=20.0001", "wait"),
    ("cid=1&wait=21", "wait"),
    ("cid=1&wait=1e1", "wait"),
    ("cid=1&wait=x", "wait"),
    ("cid=1&wait=", "wait"),
    ("cid=1&wait=%2B1", "wait"),
    ("cid=%FF", "query"),  # not UTF-8 once decoded
]


@pytest.mark.parametrize(("query", "names"), BAD_RECEIVE)
def test_bad_receive_parameters_are_400(wq: ServerProcess, query: str, names: str) -> None:
    err = check_error(get(wq, f"/v1/consumer?{query}"), 400, names=names)
    if names != "query":
        assert err["code"] == f"invalid_{names}"


BAD_DELETE = [
    ("id=1", "cid"),
    ("cid=1", "id"),
    ("cid=1&id=0", "id"),
    ("cid=1&id=-1", "id"),
    (f"cid=1&id={MAX_ID + 1}", "id"),
    (f"cid=1&id={BIG}", "id"),
    ("cid=1&id=1.0", "id"),
    ("cid=1&id=1e3", "id"),
    ("cid=1&id=", "id"),
    ("cid=1&id=1&id=1", "id"),
    ("cid=x&id=1", "cid"),
    (f"cid={BIG}&id=1", "cid"),
]


@pytest.mark.parametrize(("query", "names"), BAD_DELETE)
def test_bad_delete_parameters_are_400(wq: ServerProcess, query: str, names: str) -> None:
    check_error(request(wq, "DELETE", f"/v1/consumer?{query}"), 400, names=names)


@pytest.mark.parametrize(
    "delay", ["-1", "604800.001", "604801", BIG, "1e3", "nan", "inf", "", "x", ".5", "1&delay=1"]
)
def test_bad_delay_is_400_and_stores_nothing(fresh: ServerProcess, delay: str) -> None:
    check_error(request(fresh, "POST", f"/v1/publish?delay={delay}", body="x"), 400, names="delay")
    assert receive(fresh, "cid=1&limit=10") == []


@pytest.mark.parametrize(
    ("query", "ok"),
    [
        ("cid=0", True),
        (f"cid={MAX_ID}", True),
        ("cid=007", True),
        ("cid=1&limit=1000", True),
        ("cid=1&visibility=43200", True),
        ("cid=1&visibility=43200.000", True),
        ("cid=1&visibility=0.0001", True),
        ("cid=1&wait=0", True),
        ("cid=1&wait=0.0", True),
        ("cid=1&unknown=%%%", True),  # unknown parameters are ignored (even malformed)
    ],
)
def test_edge_values_are_accepted(wq: ServerProcess, query: str, ok: bool) -> None:
    resp = get(wq, f"/v1/consumer?{query}")
    assert resp.status == 200, resp.body


def test_edge_ids_are_accepted(wq: ServerProcess) -> None:
    assert request(wq, "DELETE", f"/v1/consumer?cid=0&id={MAX_ID}").json() is False
    assert request(wq, "DELETE", "/v1/consumer?cid=0&id=1").status == 200


def test_delay_edges(fresh: ServerProcess) -> None:
    publish(fresh, "a", "?delay=604800")
    publish(fresh, "b", "?delay=0")
    publish(fresh, "c", "?delay=0.0001")  # rounds up to 1 ms
    wait_until(lambda: get(fresh, "/v1/queues/default").json()["counts"]["ready"] == 2)
    assert [m["body"] for m in receive(fresh, "cid=1&limit=10")] == ["b", "c"]


# ---- routes --------------------------------------------------------------------------------------
# ("/" is the status page since the status branch.)
@pytest.mark.parametrize("path", ["/v1", "/v1/publish/x", "/v1/consumers", "/healthz/", "/nowhere"])
def test_unknown_route_is_404(wq: ServerProcess, path: str) -> None:
    check_error(get(wq, path), 404, code="not_found")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/v1/publish", {"POST"}),
        ("PUT", "/v1/publish", {"POST"}),
        ("POST", "/v1/consumer", {"GET", "DELETE"}),
        ("PATCH", "/v1/consumer", {"GET", "DELETE"}),
        ("DELETE", "/healthz", {"GET"}),
        ("POST", "/metrics", {"GET"}),
    ],
)
def test_wrong_method_is_405_with_allow(
    wq: ServerProcess, method: str, path: str, allowed: set[str]
) -> None:
    resp = request(wq, method, path, body=b"x" if method in ("POST", "PUT", "PATCH") else None)
    err = check_error(resp, 405, code="method_not_allowed")
    assert method in err["message"]
    assert {m.strip() for m in resp.headers["Allow"].split(",")} == allowed


def test_health(wq: ServerProcess) -> None:
    resp: Response = get(wq, "/healthz")
    assert resp.status == 200 and resp.json() == {"status": "ok"}


def test_openapi_document_is_served(wq: ServerProcess) -> None:
    resp = get(wq, "/openapi.json")
    assert resp.status == 200
    assert json.loads(resp.body)["openapi"].startswith("3.1")


@pytest.mark.not_on(
    "redis",
    reason="Redis expires leases by its sweeper and lazily, not in the server's slices",
)
def test_a_burst_of_expirations_is_processed_in_slices(fresh: ServerProcess) -> None:
    """10,000 leases running out at once: more than one expiry slice (4096), all processed."""
    from conftest import RawConnection, http_request

    total = 10_000

    def expired() -> int:
        return int(get(fresh, "/v1/queues/default").json()["totals"]["expired"])

    before = expired()  # the module's server: earlier tests expired some
    with RawConnection(fresh.port, timeout=30) as conn:
        conn.send(b"".join(http_request("POST", "/v1/publish", b"e%d" % i) for i in range(total)))
        for _ in range(total):
            assert conn.read_response().status == 201
    leased = sum(len(receive(fresh, "cid=1&limit=1000&visibility=0.3")) for _ in range(10))
    assert leased == total
    wait_until(lambda: expired() >= before + total, what="10,000 expirations")
    again = [m for _ in range(10) for m in receive(fresh, "cid=2&limit=1000")]
    assert len(again) == total and {m["receives"] for m in again} == {2}
    assert [m["id"] for m in again] == sorted(m["id"] for m in again)  # lowest ids first
    assert expired() == before + total
    metrics = get(fresh, "/metrics").body.decode()
    assert f'wonderq_expired_total{{queue="default"}} {before + total}.0' in metrics
