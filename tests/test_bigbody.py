"""Big request bodies read straight into their bytes (wonderq.bodyread): through the real
server (bodies at and around the threshold, in odd pieces, chunked, pipelined, invalid UTF-8
at the very end, a client vanishing mid-body, the durable store), in-process over a fake
transport that reads like uvloop's buffered reads, and a Hypothesis comparison of the two
paths' answers and state."""

from __future__ import annotations

import asyncio
import gc
import json
import re
import socket
from collections.abc import Iterator

import pytest
from _server import ServerProcess, get, request, running_server, unique_name
from conftest import FAST_TIMEOUT_FLAGS, RawConnection, http_request
from hypothesis import given, settings
from hypothesis import strategies as st
from test_protocol import Conn, FakeTransport, Limits, Owner, StubApp, loop, post  # noqa: F401

from wonderq.bodyread import BIG_BODY_BYTES, BodyReader
from wonderq.protocol import HttpProtocol

pytestmark = pytest.mark.timeout(120)

BIG = BIG_BODY_BYTES
SIZES = (BIG - 1, BIG, BIG + 1, 300_000, 1 << 20)


@pytest.fixture(scope="module")
def wq() -> Iterator[ServerProcess]:
    with running_server() as srv:
        yield srv


def make_queue(srv: ServerProcess) -> str:
    name = unique_name("big")
    assert request(srv, "PUT", f"/v1/queues/{name}").status in (200, 201)
    return name


def body_of(size: int, seed: int = 0) -> bytes:
    """``size`` bytes of UTF-8 with some text that JSON escapes."""
    unit = f'line {seed} "quoted" \\ tab\t é ✓\n'.encode()
    text = (unit * (size // len(unit) + 1))[:size].decode("utf-8", "ignore").encode()
    return text + b"x" * (size - len(text))


def receive_all(srv: ServerProcess, queue: str) -> list[bytes]:
    """Every ready message body of ``queue`` (leased for a minute)."""
    bodies: list[bytes] = []
    while True:
        resp = get(srv, f"/v1/queues/{queue}/messages?cid=7&limit=10&visibility=60")
        assert resp.status in (200, 204), resp.body
        messages = json.loads(resp.body)["messages"] if resp.status == 200 else []
        if not messages:
            return bodies
        bodies += [m["body"].encode() for m in messages]


def memory_bytes(srv: ServerProcess) -> int:
    found = re.search(rb"^wonderq_memory_bytes (\S+)$", get(srv, "/metrics").body, re.M)
    assert found is not None
    return int(float(found.group(1)))


def send_in_pieces(conn: RawConnection, data: bytes, sizes: list[int]) -> None:
    """``data`` in sends of the given sizes (cycled), the rest in one."""
    pos, i = 0, 0
    while pos < len(data):
        n = sizes[i % len(sizes)] if sizes else len(data)
        conn.send(data[pos : pos + n])
        pos += n
        i += 1


def publish_via_continue(
    conn: RawConnection, queue: str, body: bytes, declared: int | None = None
) -> None:
    """Head first, body only after the 100 Continue: the read ends inside the message, so a
    big body is read by the BodyReader from its first byte."""
    length = len(body) if declared is None else declared
    head = http_request(
        "POST",
        f"/v1/queues/{queue}/messages",
        b"",
        {"Content-Length": str(length), "Expect": "100-continue"},
    )
    conn.send(head)
    assert conn.read_response().status == 100
    conn.send(body)


# ---- through the real server ------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_bodies_around_the_threshold_in_odd_pieces(wq: ServerProcess, size: int) -> None:
    queue = make_queue(wq)
    body = body_of(size, size)
    assert len(body) == size
    with RawConnection(wq.port) as conn:
        data = http_request("POST", f"/v1/queues/{queue}/messages", body)
        send_in_pieces(conn, data, [1, 7919, 3, 65537, 12345])
        assert conn.read_response().status == 201
        publish_via_continue(conn, queue, body)
        assert conn.read_response().status == 201
        # The same connection goes on (a new parser after a body read whole).
        conn.send(http_request("GET", f"/v1/queues/{queue}"))
        info = conn.read_response()
        assert info.status == 200 and info.json()["counts"]["ready"] == 2  # type: ignore[index]
    assert receive_all(wq, queue) == [body, body]


def test_pipelined_behind_and_after_a_big_body(wq: ServerProcess) -> None:
    queue = make_queue(wq)
    big = body_of(200_000, 1)
    small = b"small one"
    publish = f"/v1/queues/{queue}/messages"
    data = (
        http_request("POST", publish, small)
        + http_request("POST", publish, big)
        + http_request("POST", publish, small)
        + http_request("GET", f"/v1/queues/{queue}")
    )
    with RawConnection(wq.port) as conn:
        send_in_pieces(conn, data, [100, 50_001, 7, 100_000])
        ids = [conn.read_response().json()["id"] for _ in range(3)]  # type: ignore[index]
        assert ids == sorted(ids)
        assert conn.read_response().json()["counts"]["ready"] == 3  # type: ignore[index]
    assert receive_all(wq, queue) == [small, big, small]


def test_chunked_big_body(wq: ServerProcess) -> None:
    queue = make_queue(wq)
    body = body_of(150_000, 2)
    chunks = [body[i : i + 40_000] for i in range(0, len(body), 40_000)]
    encoded = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    with RawConnection(wq.port) as conn:
        head = http_request(
            "POST", f"/v1/queues/{queue}/messages", b"", {"Transfer-Encoding": "chunked"}
        )
        send_in_pieces(conn, head + encoded, [333, 65_536])
        assert conn.read_response().status == 201
    assert receive_all(wq, queue) == [body]


@pytest.mark.parametrize("size", [BIG, 1 << 20])
def test_invalid_utf8_at_the_very_end_is_400_and_the_connection_goes_on(
    wq: ServerProcess, size: int
) -> None:
    queue = make_queue(wq)
    body = b"a" * (size - 1) + b"\xff"
    with RawConnection(wq.port) as conn:
        publish_via_continue(conn, queue, body)
        resp = conn.read_response()
        assert resp.status == 400 and resp.json()["error"]["code"] == "invalid_body"  # type: ignore[index]
        conn.send(http_request("POST", f"/v1/queues/{queue}/messages", b"ok"))
        assert conn.read_response().status == 201
    assert receive_all(wq, queue) == [b"ok"]


def test_body_over_the_message_limit_is_413(wq: ServerProcess) -> None:
    queue = make_queue(wq)
    with RawConnection(wq.port) as conn:
        publish_via_continue(conn, queue, b"x" * ((1 << 20) + 1))
        assert conn.read_response().status == 413
    assert receive_all(wq, queue) == []


def test_client_vanishing_mid_body_leaves_nothing(wq: ServerProcess) -> None:
    queue = make_queue(wq)
    before = memory_bytes(wq)
    for sent in (0, 1, BIG, 700_000):
        conn = RawConnection(wq.port)
        head = http_request(
            "POST", f"/v1/queues/{queue}/messages", b"", {"Content-Length": str(1 << 20)}
        )
        conn.send(head + b"y" * sent)
        conn.sock.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
        )
        conn.close()  # a reset, mid-body
    # The server is still answering, stored nothing, and holds what it held.
    assert request(wq, "POST", f"/v1/queues/{queue}/messages", b"after").status == 201
    assert memory_bytes(wq) > before
    assert receive_all(wq, queue) == [b"after"]
    assert request(wq, "POST", f"/v1/queues/{queue}/purge").status == 200
    assert memory_bytes(wq) == before


def test_big_body_that_stalls_gets_408_and_a_close() -> None:
    with running_server(*FAST_TIMEOUT_FLAGS) as srv, RawConnection(srv.port) as conn:
        queue = make_queue(srv)
        publish_via_continue(conn, queue, b"", 1 << 20)  # the head alone
        conn.send(b"z" * (BIG + 10))  # part of it, then nothing (idle timeout 1 s)
        resp = conn.read_response()
        assert resp.status == 408
        assert resp.json()["error"]["code"] == "request_timeout"  # type: ignore[index]
        assert conn.closed_by_server()
        assert receive_all(srv, queue) == []


def test_durable_store_logs_the_big_body(tmp_path: object) -> None:
    body = body_of(500_000, 3)
    with running_server("--data-dir", str(tmp_path)) as srv, RawConnection(srv.port) as conn:
        publish_via_continue(conn, "default", body)
        assert conn.read_response().status == 201
    with running_server("--data-dir", str(tmp_path)) as srv:
        assert receive_all(srv, "default") == [body]


# ---- in-process: a transport that reads like uvloop's buffered reads ----------------------------


class BufferedTransport(FakeTransport):
    """get_protocol/set_protocol, and deliver(): data_received, or get_buffer +
    buffer_updated while the protocol offers a buffer (as uvloop does)."""

    def __init__(self) -> None:
        super().__init__()
        self.protocol: object = None
        self.switches = 0

    def get_protocol(self) -> object:  # type: ignore[override]
        return self.protocol

    def set_protocol(self, protocol: object) -> None:  # type: ignore[override]
        self.protocol = protocol
        self.switches += 1

    def deliver(self, data: bytes) -> None:
        while data:
            proto = self.protocol
            if not hasattr(proto, "get_buffer"):
                proto.data_received(data)  # type: ignore[attr-defined]
                return
            view = memoryview(proto.get_buffer(-1))
            n = min(len(view), len(data))
            view[:n] = data[:n]
            view.release()
            proto.buffer_updated(n)
            data = data[n:]


def buffered_conn(event_loop: asyncio.AbstractEventLoop) -> tuple[Conn, BufferedTransport]:
    conn = Conn(event_loop, Limits(max_request_bytes=4 << 20, max_header_bytes=1000))
    transport = BufferedTransport()
    transport.protocol = conn.proto
    conn.transport = transport
    conn.proto.connection_made(transport)
    return conn, transport


def test_reader_takes_over_and_hands_back(loop: asyncio.AbstractEventLoop) -> None:  # noqa: F811
    conn, transport = buffered_conn(loop)
    body = b"z" * (BIG * 3 + 5)
    data = post("/a", body) + post("/b", b"tail")
    transport.deliver(data[:200])
    assert isinstance(transport.protocol, BodyReader)
    transport.deliver(data[200:])
    assert transport.protocol is conn.proto and transport.switches == 2
    answers = conn.responses()
    assert [a[2] for a in answers] == [b"POST /a? " + body, b"POST /b? tail"]


def test_reader_is_dropped_when_the_connection_is_lost(loop: asyncio.AbstractEventLoop) -> None:  # noqa: F811
    conn, transport = buffered_conn(loop)
    transport.deliver(post("/a", b"q" * (BIG * 2))[: BIG + 100])
    reader = transport.protocol
    assert isinstance(reader, BodyReader)
    reader.connection_lost(None)  # what uvloop calls: the transport's protocol
    assert conn.proto.closed
    with pytest.raises(RuntimeError):
        reader.get_buffer(-1)  # its body is gone
    assert conn.responses() == []


def test_small_body_keeps_httptools_pieces(loop: asyncio.AbstractEventLoop) -> None:  # noqa: F811
    conn, transport = buffered_conn(loop)
    data = post("/a", b"s" * (BIG - 1))
    transport.deliver(data[:100])
    transport.deliver(data[100:])
    assert transport.switches == 0
    assert conn.responses()[0][2] == b"POST /a? " + b"s" * (BIG - 1)


def live_readers() -> int:
    return sum(1 for o in gc.get_objects() if type(o) is BodyReader)


def test_uvloop_reads_the_rest_of_a_big_body_into_the_reader(
    loop: asyncio.AbstractEventLoop,  # noqa: F811
) -> None:
    """With uvloop's own transport (not a fake), the reader takes over and hands back."""
    app, owner = StubApp(), Owner()
    limits = Limits(max_request_bytes=4 << 20, max_header_bytes=1000)
    body = b"r" * (BIG * 4 + 3)
    data = post("/a", body) + post("/b", b"next")

    async def main() -> bytes:
        server = await loop.create_server(lambda: HttpProtocol(app, owner, limits), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(data[:300])
        await writer.drain()
        for _ in range(2000):  # until the server has read the head and part of the body
            if live_readers():
                break
            await asyncio.sleep(0.005)
        assert live_readers() == 1
        writer.write(data[300:])
        await writer.drain()
        answers = b""
        for _ in range(2):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
            answers += await reader.readexactly(length) + b"|"
        writer.close()
        server.close()
        await server.wait_closed()
        return answers

    assert loop.run_until_complete(main()) == b"POST /a? " + body + b"|POST /b? next|"
    gc.collect()
    assert live_readers() == 0


# ---- the two paths give the same answers and state ------------------------------------------


@pytest.fixture(scope="module")
def pair() -> Iterator[ServerProcess]:
    with running_server() as srv:
        yield srv


_texts = st.sampled_from(["x", "é", '"', "\\", "\n", "\u2028", "✓", "\x01", "𝄞"])


@settings(max_examples=25, deadline=None)
@given(
    size=st.integers(BIG - 8, BIG + 3000),
    texts=st.lists(_texts, min_size=1, max_size=4),
    bad=st.sampled_from([b"", b"\xff", b"\xc3", b"\xed\xa0\x80"]),
    cut=st.integers(1, BIG + 3000),
)
def test_big_body_path_and_normal_path_agree(
    pair: ServerProcess, size: int, texts: list[str], bad: bytes, cut: int
) -> None:
    unit = "".join(texts).encode()
    body = (unit * (size // len(unit) + 1))[: size - len(bad)]
    body = body.decode("utf-8", "ignore").encode() + bad
    normal, big = make_queue(pair), make_queue(pair)
    answers = []
    with RawConnection(pair.port) as conn:
        conn.send(http_request("POST", f"/v1/queues/{normal}/messages", body))
        answers.append(conn.read_response())
        # The big-body path: the head alone first, then the body in two pieces.
        publish_via_continue_cut(conn, big, body, cut)
        answers.append(conn.read_response())
    a, b = answers
    assert a.status == b.status
    if a.status == 201:
        assert b.json()["id"] == a.json()["id"] + 1  # type: ignore[index]
    else:
        assert a.body == b.body
    assert receive_all(pair, normal) == receive_all(pair, big)


def publish_via_continue_cut(conn: RawConnection, queue: str, body: bytes, cut: int) -> None:
    head = http_request(
        "POST",
        f"/v1/queues/{queue}/messages",
        b"",
        {"Content-Length": str(len(body)), "Expect": "100-continue"},
    )
    conn.send(head)
    assert conn.read_response().status == 100
    conn.send(body[:cut])
    conn.send(body[cut:])
