"""Big bodies answered from their messages' blocks (_core.BodyView, _core.SplitBody): a
receive or peek whose answer holds a body of VIEW_MIN_BYTES or more escaped bytes is a
SplitBody whose bytes are exactly the one-piece answer's; a view keeps its block alive after
the message is deleted, purged, dropped with its queue or with the whole engine; and through
the real server, answers reach a client that reads late, pipelined, whole."""

from __future__ import annotations

import ctypes
import gc
import json
import socket
import time
from collections.abc import Iterator

import pytest
from _server import ServerProcess, get, request, running_server, unique_name
from conftest import RawConnection

from wonderq._core import BodyView, Broker, SplitBody

pytestmark = pytest.mark.timeout(60)

VIEW_MIN = 32768  # engine/consts.pxi VIEW_MIN_BYTES: escaped bodies from here on are views


def joined(answer: bytes | SplitBody) -> bytes:
    data = bytes(answer)
    assert len(data) == len(answer)
    return data


def kinds(answer: SplitBody) -> list[str]:
    return [type(piece).__name__ for piece in answer.pieces]


def test_small_answers_stay_bytes_and_big_bodies_become_views() -> None:
    broker = Broker()
    below = "b" * (VIEW_MIN - 1)
    at = "a" * VIEW_MIN
    escaped = '"q"\n' * (VIEW_MIN // 8)  # 4 KiB of text, 8 KiB escaped: stays bytes
    escaped_big = "é\t" * (VIEW_MIN // 4)  # 24 KiB of text escaped to 32 KiB: a view
    ids = [broker.publish("default", s.encode(), 1) for s in (below, escaped)]
    assert type(broker.receive("default", 1, 2, 2)) is bytes
    ids += [broker.publish("default", s.encode(), 3) for s in (at, "tiny", escaped_big)]
    answer = broker.receive("default", 1, 10, 4)
    assert type(answer) is SplitBody
    assert kinds(answer) == ["bytes", "BodyView", "bytes", "BodyView", "bytes"]
    escaped_len = len(json.dumps(escaped_big, ensure_ascii=False).encode()) - 2  # no quotes
    assert escaped_len == VIEW_MIN  # 24 KiB of text: a view only because of its escaping
    assert [len(p) for p in answer.pieces[1::2]] == [VIEW_MIN, escaped_len]
    got = json.loads(joined(answer))["messages"]
    assert [m["id"] for m in got] == ids[2:]
    assert [m["body"] for m in got] == [at, "tiny", escaped_big]
    assert [m["receives"] for m in got] == [1, 1, 1]
    assert repr(answer) == f"<SplitBody {len(answer)} bytes in 5 pieces>"


def test_a_split_answer_is_the_one_piece_answer_byte_for_byte() -> None:
    """The same messages in two engines, one answering with views, the other (bodies one byte
    short of the bound, then padded back) in one piece: the same JSON apart from the bodies."""
    broker = Broker()
    texts = ["x" * 40_000, 'small "one"', "y" * 100_000, "z" * 70_000]
    for text in texts:
        broker.publish("default", text.encode(), 1)
    answer = broker.receive("default", 9, 4, 2)
    peeked_none = broker.peek("default", 4, 3)
    assert peeked_none == b'{"messages":[]}'
    expected = json.dumps(
        {"messages": [{"id": i + 1, "body": t, "receives": 1} for i, t in enumerate(texts)]},
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()
    assert joined(answer) == expected


def test_peek_answers_with_views_and_counts_unchanged() -> None:
    broker = Broker()
    body = "p" * 50_000
    msg_id = broker.publish("default", body.encode(), 1)
    peeked = broker.peek("default", 1, 2)
    assert type(peeked) is SplitBody and kinds(peeked) == ["bytes", "BodyView", "bytes"]
    assert json.loads(joined(peeked)) == {"messages": [{"id": msg_id, "body": body, "receives": 0}]}


def views_of(answer: SplitBody) -> list[memoryview]:
    return [memoryview(p) for p in answer.pieces if type(p) is BodyView]


@pytest.mark.parametrize(
    "how", ["delete", "purge", "delete_queue", "expire_then_redeliver", "engine"]
)
def test_a_view_outlives_its_message(how: str) -> None:
    broker = Broker()
    broker.put_queue("jobs")
    bodies = [bytes([65 + i]) * (VIEW_MIN + 1000 * i) for i in range(3)]
    ids = [broker.publish("jobs", b, 1) for b in bodies]
    answer = broker.receive("jobs", 1, 3, 2, 10_000)
    views = views_of(answer)
    assert [v.readonly for v in views] == [True] * 3
    if how == "delete":
        assert all(broker.delete("jobs", 1, i, 3) for i in ids)
    elif how == "purge":
        assert broker.purge("jobs") == 3
    elif how == "delete_queue":
        assert broker.delete_queue("jobs") == 3
    elif how == "expire_then_redeliver":
        broker.expire(20_000, 1000)  # leases over: available again, then received anew
        again = broker.receive("jobs", 2, 3, 20_001)
        assert json.loads(joined(again))["messages"][0]["receives"] == 2
        del again
        assert broker.purge("jobs") == 3
    else:
        del broker
        gc.collect()
    # Other blocks of the same sizes are allocated meanwhile: a freed block would be reused.
    other = Broker()
    for i in range(3):
        other.publish("default", b"#" * (VIEW_MIN + 1000 * i), 5)
    assert [bytes(v) for v in views] == bodies
    assert json.loads(joined(answer))["messages"][2]["body"].encode() == bodies[2]
    for view in views:
        view.release()
    del views, answer  # the last references: the orphaned blocks are freed here (valgrind)
    gc.collect()


def test_two_answers_share_a_block_and_each_keeps_it() -> None:
    broker = Broker()
    body = b"s" * 60_000
    msg_id = broker.publish("default", body, 1)
    first = broker.peek("default", 1, 2)
    second = broker.receive("default", 1, 1, 3)
    assert broker.delete("default", 1, msg_id, 4)
    del first
    gc.collect()
    assert json.loads(joined(second))["messages"][0]["body"].encode() == body


def test_views_come_from_the_engine_only() -> None:
    view = BodyView()
    assert len(view) == 0 and bytes(view) == b""
    with pytest.raises(BufferError):
        memoryview(view)
    broker = Broker()
    broker.publish("default", b"w" * VIEW_MIN, 1)
    piece = broker.receive("default", 1, 1, 2).pieces[1]
    assert memoryview(piece).readonly
    with pytest.raises(TypeError):  # no writable buffer is handed out
        ctypes.c_char.from_buffer(piece)


def test_invariants_and_memory_after_views() -> None:
    broker = Broker()
    for _ in range(5):
        broker.publish("default", b"m" * 50_000, 1)
    before = broker.memory_bytes
    answer = broker.receive("default", 1, 5, 2)
    broker.check_invariants()
    assert broker.memory_bytes == before  # a view takes nothing the engine accounts
    broker.purge("default")
    assert broker.memory_bytes == 0 and broker.message_count == 0
    broker.check_invariants()
    assert len(bytes(answer)) == len(answer)


# ---- the real server -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wq() -> Iterator[ServerProcess]:
    with running_server() as srv:
        yield srv


def publish_raw(srv: ServerProcess, queue: str, body: bytes) -> int:
    resp = request(srv, "POST", f"/v1/queues/{queue}/messages", body=body)
    assert resp.status == 201, resp.body
    return int(json.loads(resp.body)["id"])


def test_a_client_that_reads_late_gets_whole_bodies_after_they_were_purged(
    wq: ServerProcess,
) -> None:
    """8 MiB of answer does not fit the socket buffers: the transport holds the rest as views
    of the blocks while the queue is purged on another connection, then the client reads."""
    queue = unique_name("view")
    assert request(wq, "PUT", f"/v1/queues/{queue}").status == 201
    bodies = [bytes([97 + i]) * (1 << 20) for i in range(8)]
    ids = [publish_raw(wq, queue, body) for body in bodies]
    with socket.create_connection(("127.0.0.1", wq.port), timeout=30) as sock:
        sock.sendall(b"GET /v1/queues/%s/messages?cid=1&limit=8 HTTP/1.1\r\nHost: x\r\n\r\n"
                     % queue.encode())  # fmt: skip
        # Received (the 8 leased) means answered: the server wrote what fit and keeps the rest.
        deadline = time.monotonic() + 10
        while json.loads(get(wq, f"/v1/queues/{queue}").body)["counts"]["leased"] < 8:
            assert time.monotonic() < deadline, "the receive was not answered"
            time.sleep(0.01)
        purged = request(wq, "POST", f"/v1/queues/{queue}/purge")
        assert json.loads(purged.body) == {"purged": 8}
        # More big messages meanwhile, into the memory the purge freed if it were freed.
        for body in bodies:
            publish_raw(wq, queue, body.upper())
        answer = read_all(sock, 8 * (1 << 20))
    head, _, data = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    got = json.loads(data)["messages"]
    assert [m["id"] for m in got] == ids
    assert [m["body"].encode() for m in got] == bodies
    assert get(wq, "/healthz").status == 200


def read_all(sock: socket.socket, at_least: int) -> bytes:
    """One answer (head and Content-Length body) read into a growing buffer."""
    buf = bytearray()
    length = -1
    while length < 0 or len(buf) < length:
        chunk = sock.recv(1 << 20)
        assert chunk, bytes(buf[:200])
        buf += chunk
        end = buf.find(b"\r\n\r\n")
        if length < 0 and end >= 0:
            head = bytes(buf[:end]).lower()
            length = end + 4 + int(head.split(b"content-length:")[1].split(b"\r\n")[0])
            assert length > at_least
    assert len(buf) == length
    return bytes(buf)


def test_pipelined_receives_of_big_and_small_bodies_answer_in_order(wq: ServerProcess) -> None:
    queue = unique_name("view")
    assert request(wq, "PUT", f"/v1/queues/{queue}").status == 201
    bodies = [b"1" * 40_000, b"small", b"3" * 200_000, b"4" * 32_768, b"5" * 32_767]
    ids = [publish_raw(wq, queue, body) for body in bodies]
    recv = f"GET /v1/queues/{queue}/messages?cid=2&limit=1 HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    info = f"GET /v1/queues/{queue} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    with RawConnection(wq.port) as conn:
        conn.send(recv + recv + info + recv + recv + recv)
        answers = []
        for i in range(6):
            resp = conn.read_response()
            assert resp.status == 200
            if i == 2:
                assert json.loads(resp.body)["counts"]["leased"] == 2
            else:
                answers.append(json.loads(resp.body)["messages"][0])
    assert [a["id"] for a in answers] == ids
    assert [a["body"].encode() for a in answers] == bodies


def test_peek_and_http_10_answers_with_views(wq: ServerProcess) -> None:
    queue = unique_name("view")
    assert request(wq, "PUT", f"/v1/queues/{queue}").status == 201
    body = b"peek" * 20_000
    msg_id = publish_raw(wq, queue, body)
    peeked = get(wq, f"/v1/queues/{queue}/peek?limit=5")
    assert peeked.status == 200
    assert json.loads(peeked.body)["messages"] == [
        {"id": msg_id, "body": body.decode(), "receives": 0}
    ]
    with RawConnection(wq.port) as conn:
        conn.send(f"GET /v1/queues/{queue}/messages?cid=3 HTTP/1.0\r\n\r\n".encode())
        resp = conn.read_response()
        assert resp.status == 200 and json.loads(resp.body)["messages"][0]["id"] == msg_id
        conn.sock.settimeout(5)
        assert conn.sock.recv(1) == b""  # HTTP/1.0 without keep-alive: closed after it
