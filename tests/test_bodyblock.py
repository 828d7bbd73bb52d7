"""A big publish body read into the block its message keeps (_core.BodyBlock): the engine
takes the block as it is when it can and copies from it when it cannot (escaping,
attributes, a buffer still lent), refuses it as it refuses bytes, and the router hands out
blocks only for the two publish routes of a store that offers them; through the protocol
(a transport that reads like uvloop's) and the real server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _harness import Harness
from _server import ServerProcess, get, request, running_server, unique_name
from conftest import RawConnection
from test_bigbody import BufferedTransport
from test_protocol import Limits, Owner, loop, post  # noqa: F401

from wonderq._core import (
    MESSAGE_OVERHEAD,
    BodyBlock,
    Broker,
    InvalidArgument,
    MemoryLimitExceeded,
    MessageTooLarge,
)
from wonderq.bodyread import BIG_BODY_BYTES, BodyReader
from wonderq.config import Settings
from wonderq.protocol import HttpProtocol
from wonderq.store import DurableStore, MemoryStore

pytestmark = pytest.mark.timeout(60)

SIZE = 100_000


def block_of(data: bytes) -> BodyBlock:
    block = BodyBlock(len(data))
    with memoryview(block) as view:
        view[:] = data
    return block


def bodies(broker: Broker, queue: str = "default", now: int = 1) -> list[bytes]:
    answer = json.loads(bytes(broker.receive(queue, 1, 100, now, 30_000)))
    return [m["body"].encode() for m in answer["messages"]]


# ---- the engine ---------------------------------------------------------------------------------


def test_a_plain_body_block_becomes_the_message() -> None:
    broker = Broker()
    data = b"plain text, nothing to escape " * (SIZE // 30)
    block = block_of(data)
    assert len(block) == len(data) and bytes(block) == data
    msg_id = broker.publish("default", block, 1)
    assert len(block) == 0 and bytes(block) == b""  # the message has it now
    with pytest.raises(BufferError):
        memoryview(block)
    assert broker.memory_bytes == MESSAGE_OVERHEAD + len(data)
    broker.check_invariants()
    answer = json.loads(bytes(broker.receive("default", 1, 1, 2, 30_000)))
    assert answer["messages"][0]["id"] == msg_id
    assert answer["messages"][0]["body"].encode() == data
    assert broker.delete("default", 1, msg_id, 3) is True
    assert broker.memory_bytes == 0
    broker.check_invariants()


def test_a_taken_block_cannot_be_published_again() -> None:
    broker = Broker()
    block = block_of(b"a" * SIZE)
    broker.publish("default", block, 1)
    with pytest.raises(InvalidArgument) as err:
        broker.publish("default", block, 1)
    assert err.value.code == "invalid_body"
    assert broker.message_count == 1


@pytest.mark.parametrize(
    "data",
    [b'"quoted" ' * (SIZE // 9), "é\n✓\t".encode() * (SIZE // 8), b"a" * (SIZE - 1) + b"\x01"],
)
def test_a_body_that_needs_escaping_is_copied_and_the_block_kept(data: bytes) -> None:
    broker = Broker()
    block = block_of(data)
    broker.publish("default", block, 1)
    assert bytes(block) == data  # copied, escaped; the block is still the request's
    assert bodies(broker) == [data]
    broker.check_invariants()


def test_a_message_with_attributes_copies_the_body() -> None:
    broker = Broker()
    block = block_of(b"b" * SIZE)
    msg_id = broker.publish("default", block, 1, attributes=b"blob")
    assert len(block) == SIZE
    [(got_id, body, _, _, _, blob)] = broker.receive_list("default", 1, 1, 2)
    assert (got_id, body, blob) == (msg_id, b"b" * SIZE, b"blob")


def test_a_block_whose_buffer_is_held_is_copied() -> None:
    broker = Broker()
    block = block_of(b"c" * SIZE)
    with memoryview(block) as view:
        broker.publish("default", block, 1)
        assert view[:3] == b"ccc"  # still the block's own bytes
    assert len(block) == SIZE
    assert bodies(broker) == [b"c" * SIZE]


def test_refused_blocks_store_nothing_and_stay_whole() -> None:
    broker = Broker(max_memory=SIZE)
    broker.put_queue("small", {"max_message_bytes": SIZE // 2})
    bad = block_of(b"d" * (SIZE - 1) + b"\xff")
    with pytest.raises(InvalidArgument) as err:
        broker.publish("default", bad, 1)
    assert err.value.code == "invalid_body"
    big = block_of(b"e" * SIZE)
    with pytest.raises(MessageTooLarge):
        broker.publish("small", big, 1)
    with pytest.raises(MemoryLimitExceeded):
        broker.publish("default", big, 1)  # SIZE + the header is over the limit
    assert len(bad) == len(big) == SIZE
    assert broker.message_count == 0 and broker.memory_bytes == 0
    broker.check_invariants()
    fits = block_of(b"f" * (SIZE // 2))
    broker.publish("small", fits, 1)
    assert bodies(broker, "small") == [b"f" * (SIZE // 2)]


def test_taken_blocks_live_as_messages_delayed_expired_dead_lettered_and_purged() -> None:
    broker = Broker()
    broker.put_queue("dlq")
    broker.put_queue("jobs", {"max_receives": 1, "dead_letter_queue": "dlq"})
    data = [bytes([97 + i]) * (SIZE + i) for i in range(4)]
    ids = [broker.publish("jobs", block_of(d), 1, delay_ms=10 * i) for i, d in enumerate(data)]
    broker.check_invariants()
    broker.expire(100, 1000)
    assert bodies(broker, "jobs", 100) == data  # one receive each, 30 s leases
    broker.expire(40_000, 1000)  # leases over: max_receives reached, so into the dead-letter queue
    assert broker.queue_info("dlq")["counts"]["ready"] == 4
    assert bodies(broker, "dlq", 40_001) == data
    broker.check_invariants()
    assert broker.purge("dlq") == 4
    assert broker.memory_bytes == 0 and broker.message_count == 0
    assert ids == sorted(ids)
    broker.check_invariants()


@pytest.mark.parametrize("size", [0, 100, 2048, (1 << 28) + 1])
def test_block_sizes_outside_the_big_messages_are_refused(size: int) -> None:
    with pytest.raises(ValueError):
        BodyBlock(size)


# ---- who hands out blocks -----------------------------------------------------------------------


def test_the_router_gives_blocks_to_the_two_publish_routes_only() -> None:
    h = Harness()
    block = h.router.body_block
    assert type(block(b"POST", b"/v1/publish", SIZE)) is BodyBlock
    assert type(block(b"POST", b"/v1/publish?delay=1", SIZE)) is BodyBlock
    assert type(block(b"POST", b"/v1/queues/jobs/messages", SIZE)) is BodyBlock
    assert len(block(b"POST", b"/v1/queues/jobs/messages", SIZE)) == SIZE
    for method, url in [
        (b"PUT", b"/v1/publish"),
        (b"GET", b"/v1/queues/jobs/messages"),
        (b"POST", b"/v1/queues/jobs/batch"),
        (b"POST", b"/v1/queues/jobs/ack"),
        (b"POST", b"/"),
        (b"POST", b"/000000000000/jobs"),
        (b"POST", b"/nowhere"),
        (b"POST", b"http://host/v1/publish"),
        (b"POST", b"*"),
    ]:
        assert block(method, url, SIZE) is None, (method, url)
    assert block(b"POST", b"/v1/publish", 1 << 29) is None  # more than a block holds


def test_durable_store_keeps_bytes(tmp_path: Path) -> None:
    assert MemoryStore().body_block(SIZE) is not None
    assert DurableStore(Settings(data_dir=str(tmp_path))).body_block(SIZE) is None


# ---- through the protocol, reading like uvloop ---------------------------------------------------


class SpyStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.blocks: list[Any] = []

    def body_block(self, size: int) -> Any:
        block = super().body_block(size)
        self.blocks.append(block)
        return block


def test_a_big_publish_is_read_into_the_block_the_message_keeps(
    loop: asyncio.AbstractEventLoop,  # noqa: F811
) -> None:
    store = SpyStore()
    h = Harness(store)
    limits = Limits(max_request_bytes=4 << 20, max_header_bytes=1000)
    proto = HttpProtocol(h.router, Owner(), limits)  # type: ignore[arg-type]
    transport = BufferedTransport()
    transport.protocol = proto
    proto.connection_made(transport)  # type: ignore[arg-type]
    plain = b"p" * (BIG_BODY_BYTES * 3 + 7)
    escaped = b'"q"' * BIG_BODY_BYTES
    data = (
        post("/v1/publish", plain)
        + post("/v1/queues/default/messages", escaped)
        + post("/v1/queues/default/batch", b'["' + b"r" * BIG_BODY_BYTES + b'"]')
    )
    transport.deliver(data[:150])
    assert isinstance(transport.protocol, BodyReader)
    for i in range(150, len(data), 10_000):  # every read ends inside a body
        transport.deliver(data[i : i + 10_000])
    assert transport.protocol is proto and transport.switches == 6
    out = bytes(transport.out)
    assert out.count(b"HTTP/1.1 201") == 3, out[:500]
    # Two blocks, one per publish; the plain one became its message, the other was copied.
    assert [len(b) for b in store.blocks] == [0, len(escaped)]
    assert bodies(store.broker, now=store.now()) == [plain, escaped, b"r" * BIG_BODY_BYTES]
    store.broker.check_invariants()


# ---- the real server -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wq() -> Iterator[ServerProcess]:
    with running_server() as srv:
        yield srv


@pytest.mark.parametrize("size", [BIG_BODY_BYTES, 300_001, 1 << 20])
def test_plain_big_bodies_published_in_pieces_come_back_whole(wq: ServerProcess, size: int) -> None:
    name = unique_name("blk")
    assert request(wq, "PUT", f"/v1/queues/{name}").status == 201
    body = (b"0123456789abcdef" * (size // 16 + 1))[:size]
    with RawConnection(wq.port) as conn:
        data = post(f"/v1/queues/{name}/messages", body)
        for i in range(0, len(data), 65_521):  # odd pieces, so reads end mid-body
            conn.send(data[i : i + 65_521])
        assert conn.read_response().status == 201
    resp = get(wq, f"/v1/queues/{name}/messages?cid=1&limit=1")
    assert resp.status == 200
    assert json.loads(resp.body)["messages"][0]["body"].encode() == body
    info = json.loads(request(wq, "GET", f"/v1/queues/{name}").body)
    assert info["counts"] == {"ready": 0, "leased": 1, "delayed": 0}
