"""RedisStore on real Redis, standalone and a 3-primary Redis Cluster: several stores (each
what one WonderQ server holds) on the same deployment, in one process and one event loop.

What they show: messages published through one store are received through another exactly
once under concurrent consumers; a lease taken through one is fenced on all; parked receives
are woken across stores (publish, lease expiry); the sweeper is taken over when its holder
dies and the dead holder's expired leases come back; Redis unreachable is a quick 503 and
the store serves again when Redis is back; dead letters move across cluster slots.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

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

from wonderq.config import Settings
from wonderq.errors import BackendUnavailable

pytestmark = pytest.mark.timeout(120)


class Waiters:
    """A stand-in for the long-poll layer: queues with parked receives, and a count of the
    wake-ups the store gave each."""

    def __init__(self) -> None:
        self.waiting: dict[str, Any] = {}
        self.woken: dict[str, int] = {}
        self.event = asyncio.Event()

    def available(self, queue: str) -> None:
        self.woken[queue] = self.woken.get(queue, 0) + 1
        self.event.set()

    def available_any(self) -> None:
        self.event.set()


async def start_store(url: str, **overrides: Any) -> Any:
    from wonderq.redis import RedisStore

    settings = Settings(backend=url, **overrides)
    store = RedisStore(settings)
    await asyncio.get_running_loop().run_in_executor(None, store.open)
    await store.start(asyncio.get_running_loop(), Waiters())
    return store


async def w(d: Any) -> Any:
    from wonderq.redis import wait

    return await asyncio.wait_for(wait(d), 10)


def run(coro: Callable[[], Awaitable[None]], timeout: float = 90) -> None:
    async def main() -> None:
        await asyncio.wait_for(coro(), timeout)

    asyncio.run(main())


async def until(check: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.02)


def ids_of(answer: bytes) -> list[int]:
    return [m["id"] for m in json.loads(answer)["messages"]]


@pytest.fixture(params=["standalone", "cluster"])
def deployment(request: pytest.FixtureRequest) -> str:
    require_redis_client()
    if request.param == "standalone":
        return str(request.getfixturevalue("redis_url"))
    return str(request.getfixturevalue("cluster_url"))


def test_basic_operations_and_ids(deployment: str) -> None:
    async def body() -> None:
        store = await start_store(deployment)
        try:
            assert await w(store.put_queue("jobs", {"visibility_timeout_ms": 5000})) is True
            assert await w(store.put_queue("jobs", {"delay_ms": 0})) is False
            first = await w(store.publish("jobs", b"one", -1))
            batch_first = await w(store.publish_batch("jobs", [b"two", b"three"], None))
            answer = await w(store.publish_batch_json("jobs", b'["four","f\\u00fcnf"]'))
            batch_ids = json.loads(answer)["ids"]
            assert first < batch_first < batch_ids[0] and batch_ids[1] == batch_ids[0] + 1
            got = await w(store.receive("jobs", 7, 10, -1))
            messages = json.loads(got)["messages"]
            assert [m["body"] for m in messages] == ["one", "two", "three", "four", "fünf"]
            assert [m["id"] for m in messages] == sorted(m["id"] for m in messages)
            assert await w(store.peek("jobs", 5)) == b'{"messages":[]}'
            ids = [m["id"] for m in messages]
            deleted, failed = await w(store.delete_batch("jobs", 7, [*ids[:2], ids[0]]))
            assert deleted == ids[:2] and failed == [ids[0]]
            ack = await w(store.ack_json("jobs", json.dumps({"ids": ids[2:4], "cid": 7}).encode()))
            assert (
                ack
                == json.dumps({"deleted": ids[2:4], "failed": []}, separators=(",", ":")).encode()
            )
            assert await w(store.change_lease("jobs", 7, ids[4], 0)) is True
            assert ids_of(await w(store.peek("jobs", 5))) == [ids[4]]
            info = await w(store.queue_info("jobs"))
            assert info["counts"] == {"ready": 1, "leased": 0, "delayed": 0}
            assert info["totals"]["published"] == 5 and info["totals"]["deleted"] == 4
            assert await w(store.purge("jobs")) == 1
            assert await w(store.delete_queue("jobs")) == 0
            names = [i["name"] for i in (await w(store.list_queues("", "", 10)))[0]]
            assert names == ["default"]
            assert await w(store.health()) is True
        finally:
            await store.close()

    run(body)


def test_the_operations_of_one_turn_share_a_script_and_keep_their_order(
    deployment: str,
) -> None:
    """Single publishes, receives and deletes asked in one event-loop turn go to Redis as
    one script per queue and kind (coalesce.py): each is answered as if alone, in order."""

    async def body() -> None:
        from wonderq._core import MessageTooLarge, QueueNotFound

        store = await start_store(deployment)
        try:
            await w(store.put_queue("turn", {"max_message_bytes": 10}))
            bodies = [b"m%d" % i for i in range(20)]
            asked = [store.publish("turn", b, -1) for b in bodies[:10]]
            asked.append(store.publish("turn", b"x" * 11, -1))  # too large: fails alone
            asked += [store.publish("turn", b, -1) for b in bodies[10:]]
            asked.append(store.publish("missing", b"m", -1))
            assert len(store.coalescer.pending) == 2
            results = await asyncio.gather(*(w(d) for d in asked), return_exceptions=True)
            ids = results[:10] + results[11:21]
            assert isinstance(results[10], MessageTooLarge)
            assert isinstance(results[21], QueueNotFound)
            assert ids == sorted(ids) and len(set(ids)) == 20
            # Three receives in one turn: lowest ids first, in the order asked, each its own
            # lease (cid, visibility); the last finds the queue empty.
            got = await asyncio.gather(
                w(store.receive("turn", 1, 3, 60_000)),
                w(store.receive("turn", 2, 17, 60_000)),
                w(store.receive("turn", 3, 5, 60_000)),
            )
            assert ids_of(got[0]) == ids[:3] and ids_of(got[1]) == ids[3:]
            assert got[2] == b'{"messages":[]}'
            assert [m["body"] for m in json.loads(got[1])["messages"]][:2] == ["m3", "m4"]
            # Deletes of one turn, each with its own cid: only the holder's succeed, a
            # repeated one only once.
            deleted = await asyncio.gather(
                w(store.delete("turn", 1, ids[0])),
                w(store.delete("turn", 2, ids[1])),  # leased to 1: refused
                w(store.delete("turn", 2, ids[3])),
                w(store.delete("turn", 2, ids[3])),  # again in the same turn
                w(store.delete("turn", 1, ids[1])),
            )
            assert deleted == [True, False, True, False, True]
            # A publish then a receive in one turn: the receive runs after the publish.
            late = store.publish("turn", b"late", -1)
            seen = store.receive("turn", 4, 10, 60_000)
            late_id, answer = await asyncio.gather(w(late), w(seen))
            assert ids_of(answer) == [late_id]
            info = await w(store.queue_info("turn"))
            assert info["totals"]["published"] == 21 and info["totals"]["deleted"] == 3
        finally:
            await store.close()

    run(body)


def test_receives_of_one_turn_may_ask_for_more_than_lua_can_unpack(redis_url: str) -> None:  # noqa: F811
    """Twelve receives of 1,000 in one turn are one script asking for 12,000 messages: more
    than Lua's unpack takes at once (~8,000), so every per-message command goes in parts."""

    async def body() -> None:
        store = await start_store(redis_url)
        try:
            for _ in range(10):
                await w(store.publish_batch("default", [b"m"] * 950, None))
            got = await asyncio.gather(
                *(w(store.receive("default", 7, 1000, 60_000)) for _ in range(12))
            )
            counts = [len(ids_of(g)) for g in got]
            assert counts == [1000] * 9 + [500, 0, 0]
            every = [i for g in got for i in ids_of(g)]
            assert every == sorted(every) and len(set(every)) == 9500
        finally:
            await store.close()

    run(body)


def test_published_through_one_received_through_others_exactly_once(deployment: str) -> None:
    seed = random.randrange(1 << 30)
    print("WONDERQ_TEST_SEED", seed)
    rng = random.Random(seed)

    async def body() -> None:
        stores = [await start_store(deployment) for _ in range(3)]
        try:
            await w(stores[0].put_queue("work", None))
            published: list[int] = []
            for i in range(30):
                store = stores[i % 3]
                first = await w(
                    store.publish_batch("work", [b"m%d" % (i * 20 + k) for k in range(20)], None)
                )
                published += range(first, first + 20)
            received: list[int] = []

            async def consumer(cid: int, store: Any) -> None:
                idle = 0
                while idle < 3:
                    got = ids_of(await w(store.receive("work", cid, rng.randint(1, 7), 60_000)))
                    if not got:
                        idle += 1
                        await asyncio.sleep(0.01)
                        continue
                    idle = 0
                    received.extend(got)
                    _deleted, failed = await w(store.delete_batch("work", cid, got))
                    assert failed == []

            await asyncio.gather(*[consumer(c, stores[c % 3]) for c in range(9)])
            assert sorted(received) == sorted(published)
            assert len(set(received)) == len(received) == 600
        finally:
            for store in stores:
                await store.close()

    run(body)


def test_a_lease_is_fenced_on_every_store(deployment: str) -> None:
    async def body() -> None:
        a, b, c = [await start_store(deployment) for _ in range(3)]
        try:
            await w(a.put_queue("fence", None))
            msg_id = await w(a.publish("fence", b"x", -1))
            got = json.loads(await w(a.receive("fence", 1, 1, 400)))["messages"][0]
            assert got["id"] == msg_id and got["receives"] == 1
            for store in (a, b, c):  # another consumer, a wrong token: nowhere
                assert await w(store.delete("fence", 2, msg_id)) is False
                assert await w(store.change_lease("fence", 2, msg_id, 1000)) is False
                assert await w(store.delete_token("fence", msg_id, 2)) is False
            assert await w(b.change_lease("fence", 1, msg_id, 300)) is True  # heartbeat via b
            await asyncio.sleep(0.45)  # past the lease
            for store in (a, b, c):
                assert await w(store.delete("fence", 1, msg_id)) is False
                assert await w(store.delete_token("fence", msg_id, 1)) is False
            again = json.loads(await w(c.receive("fence", 3, 1, 10_000)))["messages"][0]
            assert again == {"id": msg_id, "body": "x", "receives": 2}
            assert await w(a.delete_token("fence", msg_id, 1)) is False  # stale token
            assert await w(b.delete("fence", 1, msg_id)) is False  # the old holder
            assert await w(a.delete_token("fence", msg_id, 2)) is True
        finally:
            for store in (a, b, c):
                await store.close()

    run(body)


def test_long_polls_are_woken_across_stores(deployment: str) -> None:
    async def body() -> None:
        a, b = await start_store(deployment), await start_store(deployment)
        try:
            await w(a.put_queue("poll", None))
            # a: an empty receive, then a parked waiter (what the long-poll layer does).
            assert await w(a.receive("poll", 1, 1, -1)) == b'{"messages":[]}'
            a.listener.waiting["poll"] = object()
            await until(lambda: a.subscriber.conns, 5, "a subscribed")
            await asyncio.sleep(0.1)
            before = a.subscriber.woken
            started = time.monotonic()
            await w(b.publish("poll", b"hello", -1))
            await until(lambda: a.subscriber.woken > before, 2, "a woken by b's publish")
            assert time.monotonic() - started < 0.9  # by pub/sub, not the 1 s re-check
            got = json.loads(await w(a.receive("poll", 1, 1, 200)))["messages"]
            assert [m["body"] for m in got] == ["hello"]
            # The lease taken through a runs out: a waiter on b is woken (sweeper or re-check).
            assert await w(b.receive("poll", 2, 1, -1)) == b'{"messages":[]}'
            b.listener.waiting["poll"] = object()
            b.listener.woken.clear()
            await until(lambda: b.listener.woken.get("poll", 0) > 0, 3, "b woken after expiry")
            got = json.loads(await w(b.receive("poll", 2, 1, -1)))["messages"]
            assert [(m["body"], m["receives"]) for m in got] == [("hello", 2)]
        finally:
            await a.close()
            await b.close()

    run(body)


def test_sweeper_taken_over_when_its_holder_dies(deployment: str) -> None:
    async def body() -> None:
        stores = [await start_store(deployment) for _ in range(2)]
        try:
            await until(lambda: sum(s.sweeper.holder for s in stores) == 1, 5, "one holder")
            holder = next(s for s in stores if s.sweeper.holder)
            other = next(s for s in stores if s is not holder)
            await w(holder.put_queue("crash", None))
            await w(holder.publish_batch("crash", [b"a", b"b", b"c"], None))
            leased = ids_of(await w(holder.receive("crash", 9, 3, 500)))
            assert len(leased) == 3
            other.listener.waiting["crash"] = object()
            # The holder dies: no goodbye, its lock left to run out.
            holder.kill_for_tests()
            started = time.monotonic()
            await until(lambda: other.sweeper.holder, 8, "the other store took over")
            assert time.monotonic() - started < 7
            info = await w(other.queue_info("crash"))
            assert info["counts"]["ready"] == 3 and info["totals"]["expired"] == 3
            back = ids_of(await w(other.receive("crash", 10, 3, -1)))
            assert back == leased
        finally:
            for store in stores:
                await store.close()

    run(body)


def test_dead_letters_move_across_slots(deployment: str) -> None:
    async def body() -> None:
        store = await start_store(deployment)
        try:
            # "src" and "dlq-a" hash to different cluster slots.
            await w(store.put_queue("dlq-a", None))
            await w(store.put_queue("src", {"max_receives": 2, "dead_letter_queue": "dlq-a"}))
            if store.cluster:
                assert store.queue_keys("src").slot != store.queue_keys("dlq-a").slot
            msg_id = await w(store.publish("src", b"poison", -1))
            for cid in (1, 2):
                assert ids_of(await w(store.receive("src", cid, 1, 10_000))) == [msg_id]
                assert await w(store.change_lease("src", cid, msg_id, 0)) is True
            src = await w(store.queue_info("src"))
            dlq = await w(store.queue_info("dlq-a"))
            assert src["counts"] == {"ready": 0, "leased": 0, "delayed": 0}
            assert src["totals"]["dead_lettered"] == 1
            assert dlq["counts"]["ready"] == 1
            got = json.loads(await w(store.receive("dlq-a", 5, 1, -1)))["messages"]
            assert got == [{"id": msg_id, "body": "poison", "receives": 1}]
            # In use as a dead-letter queue: cannot be deleted (409).
            from wonderq._core import QueueInUse

            with pytest.raises(QueueInUse):
                await w(store.delete_queue("dlq-a"))
        finally:
            await store.close()

    run(body)


def test_unreachable_redis_is_a_quick_503_and_recovers(redis_dir: Path) -> None:  # noqa: F811
    require_redis_client()
    server = RedisProcess(redis_dir / "flaky").start()
    port = server.port

    async def body() -> None:
        store = await start_store(server.url, redis_timeout_s=0.5, redis_connect_timeout_s=0.2)
        try:
            await w(store.publish("default", b"before", -1))
            server.stop()
            started = time.monotonic()
            with pytest.raises(BackendUnavailable):
                await w(store.publish("default", b"during", -1))
            assert time.monotonic() - started < 2
            assert await w(store.health()) is False
            # Paused (accepts, never answers): a timeout, not a hang.
            restarted = RedisProcess(redis_dir / "flaky2", port=port).start()
            try:
                await until(lambda: _ok(store), 5, "serving again")
                restarted.pause()
                started = time.monotonic()
                with pytest.raises(BackendUnavailable):
                    await w(store.publish("default", b"unanswered", -1))
                assert time.monotonic() - started < 2
                restarted.resume()
                await until(lambda: _ok(store), 5, "serving again after the pause")
                # Sent, never answered: not sent again (it may or may not have run: at most
                # once here, never twice).
                # (This Redis started empty: no queue, so a publish that ran was refused 404.)
                assert restarted.client().hlen("wq:{default}:b") == 0  # type: ignore[attr-defined]
                # The sweeper makes `default` again after a Redis that lost everything.
                await until(lambda: _exists(restarted), 10, "default made again")
                assert await w(store.publish("default", b"after", -1)) > 0
            finally:
                restarted.stop()
        finally:
            await store.close()

    run(body)


def _exists(server: RedisProcess) -> bool:
    return bool(server.client().hexists("wq:{reg}:q", "default"))  # type: ignore[attr-defined]


_OK: dict[int, bool] = {}


def _ok(store: Any) -> bool:
    """Start a health check; True once one answered True (polled by ``until``)."""
    key = id(store)
    if _OK.pop(key, False):
        return True
    d = store.health()
    d.add(lambda x: _OK.__setitem__(key, x.error is None and x.value is True))
    return False


def test_retention_drops_messages_older_than_the_queue_keeps(redis_url: str) -> None:  # noqa: F811
    from wonderq.redis import RedisStore

    async def body() -> None:
        store = RedisStore(Settings(backend=redis_url), test_clock=True)
        await store.start_bare(asyncio.get_running_loop())
        try:
            now = 1_735_689_600_000 + 10**9  # a real time: ids carry their publish time
            await w(store.set_test_clock(["kept", "default"], now))
            await w(store.put_queue("kept", {"retention_ms": 60_000}))
            info = await w(store.queue_info("kept"))
            assert info["attributes"]["retention_ms"] == 60_000
            old = await w(store.publish("kept", b"old", -1))
            await w(store.set_test_clock(["kept"], now + 30_000))
            young = await w(store.publish("kept", b"young", -1))
            await w(store.set_test_clock(["kept"], now + 59_999))
            assert ids_of(await w(store.peek("kept", 5))) == [old, young]
            await w(store.set_test_clock(["kept"], now + 60_000))
            await w(store.script("sweep", "kept", [b"100"]))
            assert ids_of(await w(store.peek("kept", 5))) == [young]
            await w(store.set_test_clock(["kept"], now + 90_000))
            assert await w(store.receive("kept", 1, 5, -1)) == b'{"messages":[]}'
            with pytest.raises(Exception) as err:
                await w(store.put_queue("kept", {"retention_ms": 59_999}))
            assert getattr(err.value, "code", "") == "invalid_attribute"
        finally:
            await store.close()

    run(body)


def test_sentinel_finds_the_primary_and_follows_a_failover(redis_dir: Path) -> None:  # noqa: F811
    require_redis_client()
    primary = RedisProcess(redis_dir / "s-primary").start()
    replica = RedisProcess(redis_dir / "s-replica", "--replicaof", "127.0.0.1", str(primary.port))
    replica.start()
    conf_dir = redis_dir / "sentinel"
    conf_dir.mkdir(exist_ok=True)
    conf = conf_dir / "sentinel.conf"
    conf.write_text(
        f"sentinel monitor mymaster 127.0.0.1 {primary.port} 1\n"
        "sentinel down-after-milliseconds mymaster 800\n"
        "sentinel failover-timeout mymaster 5000\n"
    )
    # A sentinel is redis-server <its config file> --sentinel: the file must come first.
    sentinel = RedisProcess(conf_dir)
    sentinel.proc = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", str(conf), "--sentinel",
         "--port", str(sentinel.port), "--bind", "127.0.0.1", "--dir", str(conf_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis+sentinel://127.0.0.1:{sentinel.port}/mymaster"

    async def body() -> None:
        from _redis import ping

        await until(lambda: ping(sentinel.port), 10, "sentinel up")
        store = await start_store(url, redis_timeout_s=0.5, redis_connect_timeout_s=0.2)
        try:
            first = await w(store.publish("default", b"before", -1))
            acked = primary.client().execute_command("WAIT", 1, 5000)  # type: ignore[attr-defined]
            assert acked == 1
            primary.kill()
            published = None
            deadline = time.monotonic() + 30
            while published is None:
                assert time.monotonic() < deadline, "no publish after the sentinel failover"
                try:
                    published = await w(store.publish("default", b"after", -1))
                except BackendUnavailable:
                    await asyncio.sleep(0.2)
            assert published > first
            assert store.backend.primary == ("127.0.0.1", replica.port)
            got = json.loads(await w(store.receive("default", 1, 5, -1)))["messages"]
            assert [m["body"] for m in got] == ["before", "after"]
        finally:
            await store.close()

    try:
        run(body, timeout=60)
    finally:
        sentinel.stop()
        replica.stop()
        primary.stop()


def test_a_queue_moved_to_another_primary_keeps_working(cluster_url: str, redis_cluster) -> None:  # noqa: F811
    """Resharding under load: the queue's slot migrates key by key (ASK, TRYAGAIN), then
    belongs to another node (MOVED): every acknowledged publish is there afterwards."""

    async def body() -> None:
        store = await start_store(cluster_url, redis_timeout_s=3.0)
        try:
            await w(store.put_queue("moving", None))
            slot = store.queue_keys("moving").slot
            src = redis_cluster.node_for_slot(slot)
            dst = next(n for n in redis_cluster.nodes if n is not src)
            src_c, dst_c = src.client(), dst.client()
            src_id = src_c.execute_command("CLUSTER MYID").decode()
            dst_id = dst_c.execute_command("CLUSTER MYID").decode()
            acked: list[int] = []
            stop = asyncio.Event()

            async def publisher() -> None:
                while not stop.is_set():
                    acked.append(await w(store.publish("moving", b"m", -1)))
                    await asyncio.sleep(0.002)

            task = asyncio.create_task(publisher())
            await asyncio.sleep(0.2)
            dst_c.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", src_id)
            src_c.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", dst_id)
            while True:
                keys = src_c.execute_command("CLUSTER GETKEYSINSLOT", slot, 10)
                if not keys:
                    break
                src_c.execute_command("MIGRATE", "127.0.0.1", dst.port, "", 0, 5000, "KEYS", *keys)
                await asyncio.sleep(0.05)
            for node in redis_cluster.nodes:
                node.client().execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)
            await asyncio.sleep(0.3)
            stop.set()
            await task
            assert redis_cluster.node_for_slot(slot) is dst
            info = await w(store.queue_info("moving"))
            assert info["counts"]["ready"] == len(acked) == info["totals"]["published"]
            got = ids_of(await w(store.receive("moving", 1, 1000, -1)))
            assert got == sorted(acked)
            assert store.backend.retries > 0  # it was redirected
        finally:
            await store.close()

    run(body)


def test_memory_limit_refuses_publishes_not_reads_or_deletes(redis_dir: Path) -> None:  # noqa: F811
    """--max-memory becomes Redis's maxmemory: past it a publish is 507 and stores nothing;
    receive and delete keep working (their scripts carry allow-oom)."""
    from wonderq._core import MemoryLimitExceeded

    require_redis_client()
    server = RedisProcess(redis_dir / "small").start()

    async def body() -> None:
        used = int(server.client().info("memory")["used_memory"])  # type: ignore[attr-defined]
        store = await start_store(server.url, max_memory=used + 2_000_000, redis_pool=2)
        try:
            assert int(server.client().config_get("maxmemory")["maxmemory"]) == used + 2_000_000  # type: ignore[attr-defined]
            stored = 0
            with pytest.raises(MemoryLimitExceeded):
                for _ in range(200):
                    await w(store.publish_batch("default", [b"y" * 1000] * 100, None))
                    stored += 100
            assert 0 < stored < 20_000
            info = await w(store.queue_info("default"))
            assert info["totals"]["published"] == info["counts"]["ready"] == stored
            got = ids_of(await w(store.receive("default", 1, 100, -1)))
            deleted, failed = await w(store.delete_batch("default", 1, got))
            assert len(deleted) == 100 and failed == []
            assert store.memory_limit() in (0, used + 2_000_000)  # refreshed in the background
        finally:
            await store.close()

    try:
        run(body)
    finally:
        server.stop()


def test_every_server_of_a_deployment_shares_one_handle_key(redis_url: str) -> None:  # noqa: F811
    async def body() -> None:
        a, b = await start_store(redis_url), await start_store(redis_url)
        try:
            assert len(a.handle_key) == 32 and a.handle_key == b.handle_key
        finally:
            await a.close()
            await b.close()

    run(body)


def test_a_flushed_script_cache_is_loaded_again(redis_server: RedisProcess, redis_url: str) -> None:  # noqa: F811
    """NOSCRIPT (a restarted or flushed Redis) is one of the answers retried: the script
    surely did not run, and the EVAL form is sent instead."""

    async def body() -> None:
        store = await start_store(redis_url)
        try:
            first = await w(store.publish("default", b"a", -1))
            redis_server.client().script_flush()  # type: ignore[attr-defined]
            second = await w(store.publish("default", b"b", -1))
            assert second > first
            assert ids_of(await w(store.receive("default", 1, 5, -1))) == [first, second]
        finally:
            await store.close()

    run(body)


def test_rediss_speaks_tls(redis_dir: Path) -> None:  # noqa: F811
    """rediss:// (here without certificate verification: a self-signed test certificate)."""
    import ssl

    from _redis import free_port, require_program

    require_redis_client()
    openssl = require_program("openssl", "install it with: apt-get install -y openssl")
    exe = require_program("redis-server")
    d = redis_dir / "tls"
    d.mkdir(exist_ok=True)
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(d / "k.pem"), "-out", str(d / "c.pem")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    port = free_port()
    proc = subprocess.Popen(
        [exe, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(d / "c.pem"), "--tls-key-file", str(d / "k.pem"),
         "--tls-auth-clients", "no", "--save", "", "--dir", str(d)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        deadline = time.monotonic() + 10
        while True:
            try:
                with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), 0.5)) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                assert time.monotonic() < deadline, "redis-server with TLS did not start"
                time.sleep(0.05)

        async def body() -> None:
            store = await start_store(f"rediss://127.0.0.1:{port}/0?ssl_cert_reqs=none")
            try:
                msg_id = await w(store.publish("default", b"over tls", -1))
                got = json.loads(await w(store.receive("default", 1, 1, -1)))["messages"]
                assert got == [{"id": msg_id, "body": "over tls", "receives": 1}]
            finally:
                await store.close()

        run(body)
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_shipped_slot_tags_land_in_their_slots() -> None:
    """wonderq/redis/slot_tags.txt: the tag of the id counter of each cluster slot."""
    require_redis_client()
    from wonderq.redis import key_slot, slot_tag

    for slot in range(16384):
        assert key_slot(slot_tag(slot).encode()) == slot


def test_password_and_database_from_the_url(redis_dir: Path) -> None:  # noqa: F811
    """redis://:password@host:port/db: AUTH and SELECT on every connection (the pub/sub
    ones too: a long poll is woken)."""
    require_redis_client()
    server = RedisProcess(redis_dir / "auth", "--requirepass", "s3cret").start()
    import redis

    async def body() -> None:
        a = await start_store(f"redis://:s3cret@127.0.0.1:{server.port}/2")
        b = await start_store(f"redis://:s3cret@127.0.0.1:{server.port}/2")
        try:
            assert await w(a.receive("default", 1, 1, -1)) == b'{"messages":[]}'
            a.listener.waiting["default"] = object()
            await until(lambda: a.subscriber.conns, 5, "a subscribed")
            await asyncio.sleep(0.1)
            before = a.subscriber.woken
            msg_id = await w(b.publish("default", b"x", -1))
            await until(lambda: a.subscriber.woken > before, 2, "a woken through AUTH")
            client = redis.Redis(port=server.port, password="s3cret", db=2)
            assert client.hexists("wq:{default}:b", b"%019d" % msg_id)
            assert redis.Redis(port=server.port, password="s3cret", db=0).dbsize() == 0
        finally:
            await a.close()
            await b.close()

    from wonderq.redis import RedisStore, StartError

    try:
        run(body)
        with pytest.raises(StartError):
            RedisStore(Settings(backend=f"redis://:wrong@127.0.0.1:{server.port}/0")).open()
    finally:
        server.stop()
