"""Real ``wonderq serve --backend redis://...`` processes on one Redis, driven over HTTP.

Two and three servers sharing one Redis, each such test on a standalone Redis and on the
3-primary cluster: what is published through one is received through another exactly once
under concurrent consumers; a lease taken through one is fenced on all; a long poll parked on
one is answered by a publish through another; the sweeper is taken over from a killed or
stopped server; ``/metrics`` shows the shared queues. Also: the answers' shapes are the memory
store's; the start is refused when Redis evicts keys; a stopped Redis is 503
``backend_unavailable``, not a hang."""

from __future__ import annotations

import json
import socket
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
from _redis import (  # noqa: F401
    RedisProcess,
    cluster_url,
    redis_cluster,
    redis_dir,
    redis_server,
    redis_url,
    require_redis_client,
)
from _server import ServerProcess, check_error, get, request, running_server

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["standalone", "cluster"])
def backend(request: pytest.FixtureRequest) -> str:
    require_redis_client()
    name = "redis_url" if request.param == "standalone" else "cluster_url"
    return str(request.getfixturevalue(name))


def servers(stack: ExitStack, url: str, n: int, *flags: str) -> list[ServerProcess]:
    return [stack.enter_context(running_server("--backend", url, *flags)) for _ in range(n)]


def test_published_through_one_received_through_another_exactly_once(backend: str) -> None:
    with ExitStack() as stack:
        a, b, c = servers(stack, backend, 3)
        assert request(a, "PUT", "/v1/queues/shared", b"{}").status == 201
        sent = []
        for i in range(10):
            srv = (a, b, c)[i % 3]
            resp = request(
                srv, "POST", "/v1/queues/shared/batch", json.dumps([f"m{i}-{k}" for k in range(20)])
            )
            assert resp.status == 201, resp.body
            sent += resp.json()["ids"]
        got: list[int] = []
        lock = threading.Lock()

        def consume(srv: ServerProcess, cid: int) -> None:
            empty = 0
            while empty < 3:
                r = get(srv, f"/v1/queues/shared/messages?cid={cid}&limit=7&visibility=60")
                ids = [m["id"] for m in r.json()["messages"]]
                if not ids:
                    empty += 1
                    continue
                empty = 0
                with lock:
                    got.extend(ids)
                ack = request(
                    srv, "POST", "/v1/queues/shared/ack", json.dumps({"cid": cid, "ids": ids})
                )
                assert ack.json()["failed"] == []

        threads = [threading.Thread(target=consume, args=((a, b, c)[k % 3], k)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(got) == sorted(sent) and len(set(got)) == 200
        info = get(b, "/v1/queues/shared").json()
        assert info["counts"] == {"ready": 0, "leased": 0, "delayed": 0}
        assert info["totals"]["published"] == 200 and info["totals"]["deleted"] == 200


def test_lease_fenced_on_all_and_long_poll_woken_across(backend: str) -> None:
    with ExitStack() as stack:
        a, b = servers(stack, backend, 2)
        r = request(a, "POST", "/v1/publish", b"hello")
        assert r.status == 201
        msg_id = r.json()["id"]
        m = get(b, "/v1/consumer?cid=1&limit=1&visibility=30").json()["messages"]
        assert m == [{"id": msg_id, "body": "hello", "receives": 1}]
        for srv in (a, b):
            assert request(srv, "DELETE", f"/v1/consumer?cid=2&id={msg_id}").json() is False
        assert request(a, "DELETE", f"/v1/consumer?cid=1&id={msg_id}").json() is True
        # A long poll on a, answered by a publish through b.
        answer: dict[str, object] = {}

        def poll() -> None:
            started = time.monotonic()
            resp = get(a, "/v1/consumer?cid=3&limit=1&wait=10")
            answer["messages"] = resp.json().get("messages", resp.json())
            answer["took"] = time.monotonic() - started

        t = threading.Thread(target=poll)
        t.start()
        time.sleep(0.5)
        assert request(b, "POST", "/v1/publish", b"wake").status == 201
        t.join(15)
        assert isinstance(answer["messages"], list), answer
        assert [m["body"] for m in answer["messages"]] == ["wake"], answer  # type: ignore[union-attr]
        assert answer["took"] < 3, answer
        assert get(a, "/healthz").status == 200


def test_start_refused_when_redis_evicts(redis_dir: Path) -> None:  # noqa: F811
    require_redis_client()
    srv = RedisProcess(redis_dir / "evicting", "--maxmemory-policy", "allkeys-lru").start()
    try:
        proc = ServerProcess("--backend", srv.url)
        with pytest.raises(Exception):  # noqa: B017 (it exits instead of listening)
            proc.start(timeout=10)
        proc.stop()
        assert "noeviction" in proc.output(), proc.output()
    finally:
        srv.stop()


def test_stopped_redis_is_503_not_a_hang(redis_dir: Path) -> None:  # noqa: F811
    require_redis_client()
    srv = RedisProcess(redis_dir / "stopping").start()
    try:
        with running_server("--backend", srv.url, "--redis-timeout", "0.5") as wq:
            assert request(wq, "POST", "/v1/publish", b"x").status == 201
            srv.stop()
            started = time.monotonic()
            check_error(request(wq, "POST", "/v1/publish", b"y"), 503, code="backend_unavailable")
            assert time.monotonic() - started < 3
    finally:
        srv.stop()


def _metric(srv: ServerProcess, name: str) -> float:
    for line in get(srv, "/metrics").body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} missing from /metrics")


def test_killed_server_sweeper_taken_over_and_its_leases_come_back(backend: str) -> None:
    with running_server("--backend", backend) as a:
        deadline = time.monotonic() + 10
        while _metric(a, "wonderq_redis_sweeper") != 1:
            assert time.monotonic() < deadline, "a never took the sweeper lease"
            time.sleep(0.1)
        with running_server("--backend", backend) as b:
            assert _metric(b, "wonderq_redis_sweeper") == 0
            resp = request(a, "POST", "/v1/queues/default/batch", json.dumps(["j1", "j2", "j3"]))
            ids = resp.json()["ids"]
            leased = get(a, "/v1/consumer?cid=1&limit=3&visibility=1").json()["messages"]
            assert [m["id"] for m in leased] == ids
            # A long poll parked on b: answered when a's consumer's leases run out.
            answer: dict[str, object] = {}

            def poll() -> None:
                r = get(b, "/v1/consumer?cid=2&limit=3&wait=15", timeout=30)
                answer["messages"] = r.json()["messages"]
                answer["at"] = time.monotonic()

            t = threading.Thread(target=poll)
            t.start()
            a.proc.kill()  # type: ignore[union-attr]  # SIGKILL: no goodbye, the lock stays
            killed = time.monotonic()
            a.proc.wait(10)  # type: ignore[union-attr]
            t.join(25)
            got = answer["messages"]
            assert [(m["id"], m["receives"]) for m in got] == [(i, 2) for i in ids], got  # type: ignore[union-attr]
            deadline = killed + 10
            while _metric(b, "wonderq_redis_sweeper") != 1:
                assert time.monotonic() < deadline, "b never took over the sweeper"
                time.sleep(0.1)
            assert _metric(b, "wonderq_redis_up") == 1


def test_metrics_show_the_shared_queues(backend: str) -> None:
    with ExitStack() as stack:
        a, b = servers(stack, backend, 2)
        for _ in range(3):
            assert request(a, "POST", "/v1/publish", b"m").status == 201
        line = 'wonderq_queue_messages{queue="default",state="ready"} 3.0'
        deadline = time.monotonic() + 10
        while line not in get(b, "/metrics").body.decode():
            assert time.monotonic() < deadline, get(b, "/metrics").body.decode()[:3000]
            time.sleep(0.2)
        body = get(b, "/metrics").body.decode()
        assert "wonderq_redis_up 1.0" in body
        assert 'wonderq_published_total{queue="default"} 3.0' in body


def test_start_refused_when_redis_is_unreachable() -> None:
    require_redis_client()
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = ServerProcess("--backend", f"redis://127.0.0.1:{port}/0", "--redis-timeout", "0.5")
    with pytest.raises(RuntimeError):
        proc.start(timeout=15)
    proc.stop()
    assert "cannot use" in proc.output() and "Traceback" not in proc.output(), proc.output()


def test_redis_wait_without_replicas_is_503(backend: str) -> None:
    """--redis-wait 1 on a Redis with no replica: nothing is acknowledged it could lose."""
    with running_server(
        "--backend", backend, "--redis-wait", "1", "--redis-wait-timeout", "0.1"
    ) as wq:
        check_error(request(wq, "POST", "/v1/publish", b"x"), 503, code="backend_unavailable")
        assert get(wq, "/v1/consumer?cid=1").status == 200


def test_a_stopped_server_hands_the_sweeper_on_at_once(backend: str) -> None:
    """SIGTERM: the holder gives its lease back, so another takes over within a pass (about
    a second), not after the lease's 5 s."""
    with running_server("--backend", backend) as a:
        deadline = time.monotonic() + 10
        while _metric(a, "wonderq_redis_sweeper") != 1:
            assert time.monotonic() < deadline, "a never took the sweeper lease"
            time.sleep(0.1)
        with running_server("--backend", backend) as b:
            assert a.stop() == 0
            stopped = time.monotonic()
            while _metric(b, "wonderq_redis_sweeper") != 1:
                assert time.monotonic() - stopped < 3, "b did not take over at once"
                time.sleep(0.05)
