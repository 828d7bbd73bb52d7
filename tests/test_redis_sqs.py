"""RedisStore's SQS section on real Redis (scripts send.lua, take.lua and the extras in
prelude.lua): the rows a receive gives, and that a message's extras (``wq:{q}:x``) exist
only where there are any and leave or move with the message."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from _redis import (  # noqa: F401
    RedisProcess,
    redis_dir,
    redis_server,
    redis_url,
    require_redis_client,
)
from test_redis_store import ids_of, run, start_store, w

from wonderq.config import Settings
from wonderq.store import SQS_CID

pytestmark = pytest.mark.timeout(120)

NOW = 1_735_689_600_000 + 10**9  # a real time: ids carry their publish time


async def clocked(url: str, queues: list[str]) -> Any:
    from wonderq.redis import RedisStore

    store = RedisStore(Settings(backend=url), test_clock=True)
    await store.start_bare(asyncio.get_running_loop())
    await w(store.set_test_clock(queues, NOW))
    return store


def extras(url: str, queue: str) -> dict[bytes, bytes]:
    import redis

    return redis.Redis.from_url(url).hgetall(f"wq:{{{queue}}}:x")  # type: ignore[return-value]


def test_rows_carry_sent_time_first_receive_and_blob(redis_url: str) -> None:  # noqa: F811
    require_redis_client()

    async def body() -> None:
        store = await clocked(redis_url, ["sq", "default"])
        try:
            await w(store.put_queue("sq", None))
            text = 'a "quoted"\nline \\ é ✓ 𝄞'.encode()
            sqs_id = await w(store.send("sq", text, -1, b"\x00blob\n|bytes"))
            plain_id = await w(store.publish("sq", b"native", -1))
            assert set(extras(redis_url, "sq")) == {b"%019d" % sqs_id}  # the plain one: none
            await w(store.set_test_clock(["sq"], NOW + 500))
            rows = await w(store.receive_messages("sq", 10, 1000))
            assert rows == [
                (sqs_id, text, 1, NOW, NOW + 500, b"\x00blob\n|bytes"),
                (plain_id, b"native", 1, NOW, NOW + 500, None),  # publish time, first SQS receive
            ]
            # The lease is SQS_CID's, acted on by token; the first receive is kept.
            assert await w(store.change_lease_by_token("sq", sqs_id, 1, 0)) is True
            await w(store.set_test_clock(["sq"], NOW + 900))
            [row] = await w(store.receive_messages("sq", 1, 1000))
            assert row == (sqs_id, text, 2, NOW, NOW + 500, b"\x00blob\n|bytes")
            assert await w(store.delete_by_token("sq", sqs_id, 1)) is False  # an old token
            assert await w(store.delete("sq", SQS_CID, sqs_id)) is True
            # Empty: an empty list (and the queue's waiting flag for long polls).
            assert await w(store.receive_messages("sq", 1, 1000)) == []
            assert set(extras(redis_url, "sq")) == {b"%019df" % plain_id}
            assert await w(store.delete_by_token("sq", plain_id, 1)) is True
            assert extras(redis_url, "sq") == {}
        finally:
            await store.close()

    run(body)


def test_native_receives_add_no_extras(redis_url: str) -> None:  # noqa: F811
    require_redis_client()

    async def body() -> None:
        store = await start_store(redis_url)
        try:
            await w(store.put_queue("plain", None))
            await w(store.publish_batch("plain", [b"x"] * 5, None))
            got = ids_of(await w(store.receive("plain", 7, 5, -1)))
            assert len(got) == 5
            assert extras(redis_url, "plain") == {}
            deleted, _ = await w(store.delete_batch("plain", 7, got))
            assert len(deleted) == 5
        finally:
            await store.close()

    run(body)


def test_retention_purge_and_queue_deletion_drop_the_extras(redis_url: str) -> None:  # noqa: F811
    require_redis_client()

    async def body() -> None:
        store = await clocked(redis_url, ["ret", "gone", "default"])
        try:
            await w(store.put_queue("ret", {"retention_ms": 60_000}))
            old = await w(store.send("ret", b"old", -1, b"attrs"))
            await w(store.set_test_clock(["ret"], NOW + 1))
            young = await w(store.send("ret", b"young", -1, b"attrs2"))
            await w(store.set_test_clock(["ret"], NOW + 60_000))
            await w(store.script("sweep", "ret", [b"100"]))  # retention at the head of ready
            assert set(extras(redis_url, "ret")) == {b"%019d" % young}
            [row] = await w(store.receive_messages("ret", 5, 1000))
            assert row[0] == young and old != young
            assert await w(store.purge("ret")) == 1
            assert extras(redis_url, "ret") == {}

            await w(store.put_queue("gone", None))
            await w(store.send("gone", b"m", -1, b"attrs"))
            await w(store.receive_messages("gone", 1, 1000))
            assert len(extras(redis_url, "gone")) == 2
            await w(store.delete_queue("gone"))
            assert extras(redis_url, "gone") == {}
        finally:
            await store.close()

    run(body)


def test_dead_letter_moves_carry_the_extras(redis_url: str) -> None:  # noqa: F811
    require_redis_client()

    async def body() -> None:
        store = await clocked(redis_url, ["src", "dlq", "default"])
        try:
            await w(store.put_queue("dlq", None))
            await w(store.put_queue("src", {"max_receives": 1, "dead_letter_queue": "dlq"}))
            msg_id = await w(store.send("src", b"poison", -1, b"the blob"))
            await w(store.set_test_clock(["src", "dlq"], NOW + 70))
            [row] = await w(store.receive_messages("src", 1, 1000))
            assert await w(store.change_lease_by_token("src", msg_id, row[2], 0)) is True
            assert extras(redis_url, "src") == {}  # moved, not copied
            assert len(extras(redis_url, "dlq")) == 2
            await w(store.set_test_clock(["dlq"], NOW + 90))
            [moved] = await w(store.receive_messages("dlq", 1, 1000))
            assert moved == (msg_id, b"poison", 1, NOW, NOW + 70, b"the blob")
            assert await w(store.delete_by_token("dlq", msg_id, 1)) is True
            assert extras(redis_url, "dlq") == {}

            # A move whose dead-letter queue is gone returns with its extras (unout.lua).
            entry = b"nowhere\n5\n%d|back\n%d\nblob\nwith newline" % (NOW, NOW + 3)
            back = b"%019d" % (msg_id + 1)
            import redis

            redis.Redis.from_url(redis_url).hset("wq:{src}:o", back, entry)
            assert await w(store.script("unout", "src", [back, b"5", b"gone"])) == 1
            [row] = await w(store.receive_messages("src", 1, 1000))
            assert row == (msg_id + 1, b"back", 1, NOW, NOW + 3, b"blob\nwith newline")
        finally:
            await store.close()

    run(body)


def test_send_checks_and_memory_limit_counts_attributes(redis_dir: Path) -> None:  # noqa: F811
    """A send past maxmemory is refused (507, nothing stored), the attribute bytes counted:
    with 1-byte bodies only the blobs can fill the 2 MB."""
    from wonderq._core import InvalidArgument, MemoryLimitExceeded, MessageTooLarge

    require_redis_client()
    server = RedisProcess(redis_dir / "small").start()

    async def body() -> None:
        used = int(server.client().info("memory")["used_memory"])  # type: ignore[attr-defined]
        store = await start_store(server.url, max_memory=used + 2_000_000)
        try:
            await w(store.put_queue("small", {"max_message_bytes": 100}))
            with pytest.raises(MessageTooLarge):
                await w(store.send("small", b"x", -1, b"a" * 101))
            with pytest.raises(InvalidArgument):
                await w(store.send("small", b"x", -2, None))
            with pytest.raises(InvalidArgument):
                await w(store.send("small", b"", -1, None))
            sent = 0
            with pytest.raises(MemoryLimitExceeded):
                for _ in range(200):
                    await w(store.send("default", b"x", -1, b"a" * 50_000))
                    sent += 1
            assert 0 < sent < 60
            info = await w(store.queue_info("default"))
            assert info["counts"]["ready"] == sent
            rows = await w(store.receive_messages("default", 10, 1000))  # reads still work
            assert len(rows) == 10 and all(r[5] == b"a" * 50_000 for r in rows)
        finally:
            await store.close()

    try:
        run(body)
    finally:
        server.stop()
