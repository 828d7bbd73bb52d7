"""wonderq.client: offline (formatting, keep-alive, reconnect, errors, against a scripted
socket server) and against the real server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest
from _server import ServerProcess, running_server, unique_name
from conftest import wait_parked, wait_until

from wonderq.client import Client, Message, WonderQError, format_seconds

pytestmark = pytest.mark.timeout(60)


# ---- offline ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0"),
        (30, "30"),
        (0.25, "0.25"),
        (1.0, "1"),
        (1e-7, "0.0000001"),
        (2.5e6, "2500000"),
        (43200.0001, "43200.0001"),
        (Decimal("0.500"), "0.5"),
        ("0.75", "0.75"),
    ],
)
def test_format_seconds_writes_plain_decimals(value: object, text: str) -> None:
    assert format_seconds(value) == text  # type: ignore[arg-type]


def test_format_seconds_refuses_bool() -> None:
    with pytest.raises(TypeError):
        format_seconds(True)


def test_message_is_a_small_value() -> None:
    m = Message(17, "hi", 1)
    assert (m.id, m.body, m.receives) == (17, "hi", 1)
    assert m == Message(17, "hi", 1)


def test_bad_base_url() -> None:
    with pytest.raises(ValueError):
        Client("ftp://x")


class ScriptedServer:
    """A loopback socket server answering each request with ``answer(n)`` (n = request number,
    from 1); closes the connection after every answer when ``close_after_each`` (while
    announcing keep-alive), like a server whose idle timeout fired."""

    def __init__(self, answer: Callable[[int], bytes], close_after_each: bool = False) -> None:
        self.answer = answer
        self.close_after_each = close_after_each
        self.requests: list[bytes] = []
        self.connections = 0
        self.closed = 0  # connections this server has closed
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                buf = b""
                while True:
                    while b"\r\n\r\n" not in buf:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        buf += chunk
                    if b"\r\n\r\n" not in buf:
                        break
                    head, _, rest = buf.partition(b"\r\n\r\n")
                    length = 0
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value)
                    while len(rest) < length:
                        rest += conn.recv(65536)
                    self.requests.append(head + b"\r\n\r\n" + rest[:length])
                    buf = rest[length:]
                    conn.sendall(self.answer(len(self.requests)))
                    if self.close_after_each:
                        break
            self.closed += 1

    def close(self) -> None:
        self.sock.close()


def http_answer(status: int, body: bytes, reason: str = "X") -> bytes:
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\n\r\n"
    ).encode() + body


@pytest.fixture
def scripted() -> Iterator[Callable[..., ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def make(answer: Callable[[int], bytes], close_after_each: bool = False) -> ScriptedServer:
        srv = ScriptedServer(answer, close_after_each)
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.close()


def test_keep_alive_uses_one_connection(scripted: Callable[..., ScriptedServer]) -> None:
    srv = scripted(lambda n: http_answer(200, b'{"status": "ok"}'))
    with Client(f"http://127.0.0.1:{srv.port}") as c:
        for _ in range(5):
            assert c.health() == {"status": "ok"}
    assert srv.connections == 1 and len(srv.requests) == 5


def test_idempotent_call_reconnects_once_after_idle_close(
    scripted: Callable[..., ScriptedServer],
) -> None:
    srv = scripted(lambda n: http_answer(200, b'{"status": "ok"}'), close_after_each=True)
    with Client(f"http://127.0.0.1:{srv.port}") as c:
        assert c.health() == {"status": "ok"}
        wait_until(lambda: srv.closed == 1, what="the server to close the kept-alive connection")
        assert c.health() == {"status": "ok"}
        wait_until(lambda: srv.closed == 2, what="the second close")
        assert c.get_queue("jobs") == {"status": "ok"}
    assert srv.connections == 3 and len(srv.requests) == 3


def test_publish_is_not_retried_after_idle_close(
    scripted: Callable[..., ScriptedServer],
) -> None:
    srv = scripted(lambda n: http_answer(201, b'{"id": %d}' % n), close_after_each=True)
    with Client(f"http://127.0.0.1:{srv.port}") as c:
        assert c.publish("a") == 1
        wait_until(lambda: srv.closed == 1, what="the server to close the kept-alive connection")
        with pytest.raises(WonderQError) as info:
            c.publish("b")
        assert info.value.status == 0 and info.value.code == "connection_error"
        # The client recovers: the next call opens a new connection.
        assert c.publish("c") == 2
    assert len(srv.requests) == 2


def test_server_error_becomes_wonderq_error(scripted: Callable[..., ScriptedServer]) -> None:
    body = b'{"error": {"code": "queue_not_found", "message": "queue \'x\' does not exist"}}'
    srv = scripted(lambda n: http_answer(404, body))
    with Client(f"http://127.0.0.1:{srv.port}") as c, pytest.raises(WonderQError) as info:
        c.get_queue("x")
    err = info.value
    assert (err.status, err.code) == (404, "queue_not_found")
    assert "does not exist" in err.message and "queue_not_found" in str(err)


def test_non_json_error_still_becomes_wonderq_error(
    scripted: Callable[..., ScriptedServer],
) -> None:
    srv = scripted(lambda n: http_answer(502, b"bad gateway"))
    with Client(f"http://127.0.0.1:{srv.port}") as c, pytest.raises(WonderQError) as info:
        c.health()
    assert (info.value.status, info.value.code) == (502, "http_502")


def test_timeout_becomes_wonderq_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        port = silent.getsockname()[1]
        with Client(f"http://127.0.0.1:{port}", timeout=0.3) as c:
            t0 = time.monotonic()
            with pytest.raises(WonderQError) as info:
                c.health()
            assert info.value.status == 0 and info.value.code == "timeout"
            assert time.monotonic() - t0 < 5


def test_refused_connection_becomes_wonderq_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    with Client(f"http://127.0.0.1:{port}", timeout=2) as c, pytest.raises(WonderQError) as info:
        c.health()
    assert info.value.code == "connection_error"


def test_requests_are_what_the_contract_says(scripted: Callable[..., ScriptedServer]) -> None:
    answers = {
        1: http_answer(201, b'{"id": 1}'),
        2: http_answer(201, b'{"id": 2}'),
        3: http_answer(200, b'{"messages": [{"id": 1, "body": "h\\u00e9", "receives": 1}]}'),
        4: http_answer(200, b"true"),
        5: http_answer(200, b"false"),
        6: http_answer(201, b'{"ids": [3, 4]}'),
        7: http_answer(200, b'{"deleted": [3], "failed": [4]}'),
        8: http_answer(200, b"true"),
        9: http_answer(200, b"true"),
        10: http_answer(200, b'{"purged": 2}'),
        11: http_answer(200, b'{"queues": []}'),
        12: b"HTTP/1.1 204 No Content\r\nCache-Control: no-store\r\n\r\n",
    }
    srv = scripted(lambda n: answers[n])
    with Client(f"http://127.0.0.1:{srv.port}") as c:
        assert c.publish("hé") == 1
        assert c.publish(b"x", queue="jobs", delay=0.5) == 2
        assert c.receive(7, limit=10, wait=1.5, visibility=30) == [Message(1, "hé", 1)]
        assert c.delete(7, 1) is True
        assert c.delete(7, 1, queue="jobs") is False
        assert c.publish_batch(["a", {"body": "b", "delay": 2}], queue="jobs") == [3, 4]
        assert c.ack_batch(7, [3, 4], queue="jobs") == ([3], [4])
        assert c.extend(7, 5, 60, queue="jobs") is True
        assert c.release(7, 5) is True
        assert c.purge("jobs") == 2
        assert c.list_queues() == []
        c.delete_queue("jobs")  # returns nothing; the 204 is what the server saw
    lines = [r.split(b"\r\n", 1)[0].decode() for r in srv.requests]
    assert lines == [
        "POST /v1/publish HTTP/1.1",
        "POST /v1/queues/jobs/messages?delay=0.5 HTTP/1.1",
        "GET /v1/consumer?cid=7&limit=10&wait=1.5&visibility=30 HTTP/1.1",
        "DELETE /v1/consumer?cid=7&id=1 HTTP/1.1",
        "DELETE /v1/queues/jobs/messages/1?cid=7 HTTP/1.1",
        "POST /v1/queues/jobs/batch HTTP/1.1",
        "POST /v1/queues/jobs/ack HTTP/1.1",
        "POST /v1/queues/jobs/messages/5/lease?cid=7&timeout=60 HTTP/1.1",
        "POST /v1/queues/default/messages/5/lease?cid=7&timeout=0 HTTP/1.1",
        "POST /v1/queues/jobs/purge HTTP/1.1",
        "GET /v1/queues HTTP/1.1",
        "DELETE /v1/queues/jobs HTTP/1.1",
    ]
    assert srv.requests[0].endswith(b"\r\n\r\nh\xc3\xa9")
    assert srv.requests[5].endswith(b'["a",{"body":"b","delay":2}]')
    assert srv.requests[6].endswith(b'{"cid":7,"ids":[3,4]}')
    assert srv.connections == 1


# ---- against the real server ------------------------------------------------------------------
@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with running_server("--visibility-timeout", "30") as srv:
        yield srv


@pytest.fixture
def client(server: ServerProcess) -> Iterator[Client]:
    with Client(server.url, timeout=10) as c:
        c.purge("default")
        yield c


def test_health_and_metrics(client: Client) -> None:
    assert client.health() == {"status": "ok"}
    client.publish("m")
    text = client.metrics()
    for name in (
        "wonderq_queue_messages",
        "wonderq_published_total",
        "wonderq_delivered_total",
        "wonderq_deleted_total",
        "wonderq_expired_total",
        "wonderq_dead_lettered_total",
        "wonderq_memory_bytes",
        "wonderq_memory_limit_bytes",
        "wonderq_http_requests_total",
        "wonderq_connections",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
    ):
        assert name in text, name
    assert 'wonderq_published_total{queue="default"}' in text


def test_seed_routes_publish_receive_delete(client: Client) -> None:
    first = client.publish("one")
    second = client.publish("two")
    assert second > first >= 1
    got = client.receive(1, limit=10)
    assert got == [Message(first, "one", 1), Message(second, "two", 1)]
    assert client.receive(2, limit=10) == []  # leased to 1
    assert client.delete(2, first) is False  # not its lease
    assert client.delete(1, first) is True
    assert client.delete(1, first) is False  # already gone
    assert client.delete(1, second) is True
    info = client.get_queue("default")
    assert info["counts"] == {"ready": 0, "leased": 0, "delayed": 0}


def test_bodies_round_trip_exactly(client: Client) -> None:
    bodies = ['quote " backslash \\ slash /', "line\nbreak\ttab\r\x01\x1f", "héllo ✓ 😀", "{}"]
    ids = [client.publish(b) for b in bodies]
    got = client.receive(3, limit=10)
    assert [(m.id, m.body) for m in got] == list(zip(ids, bodies, strict=True))
    assert client.ack_batch(3, ids) == (ids, [])


def test_invalid_utf8_is_refused(client: Client) -> None:
    with pytest.raises(WonderQError) as info:
        client.publish(b"\xff\xfe")
    assert info.value.status == 400
    with pytest.raises(WonderQError) as info:
        client.publish("")
    assert info.value.status == 400


def test_delay_and_visibility(client: Client) -> None:
    mid = client.publish("later", delay=0.4)
    assert client.receive(1) == []
    got = wait_until(lambda: client.receive(1, visibility=0.3), what="the delay to end")
    assert got == [Message(mid, "later", 1)]
    assert client.receive(2) == []
    got = wait_until(lambda: client.receive(2), what="the 0.3 s lease to run out")
    assert got == [Message(mid, "later", 2)]
    assert client.delete(1, mid) is False  # 1's lease ran out
    assert client.delete(2, mid) is True


def test_named_queue_life_cycle(client: Client) -> None:
    name = unique_name()
    info = client.create_queue(name, visibility_timeout=5)
    assert info["name"] == name and info["attributes"]["visibility_timeout"] == 5
    info = client.put_queue(name, delay=0)
    assert info["attributes"]["visibility_timeout"] == 5  # kept
    assert name in [q["name"] for q in client.list_queues()]
    ids = client.publish_batch(["a", {"body": "b"}, {"body": "c", "delay": 60}], queue=name)
    assert ids == [ids[0], ids[0] + 1, ids[0] + 2]
    got = client.receive(9, limit=10, queue=name)
    assert [m.body for m in got] == ["a", "b"]
    assert client.extend(9, ids[0], 60, queue=name) is True
    assert client.release(9, ids[1], queue=name) is True
    assert client.receive(10, queue=name) == [Message(ids[1], "b", 2)]
    assert client.ack_batch(9, [ids[0], ids[1]], queue=name) == ([ids[0]], [ids[1]])
    assert client.delete(10, ids[1], queue=name) is True
    counts = client.get_queue(name)["counts"]
    assert counts == {"ready": 0, "leased": 0, "delayed": 1}
    assert client.purge(name) == 1
    client.delete_queue(name)
    with pytest.raises(WonderQError) as info_err:
        client.get_queue(name)
    assert (info_err.value.status, info_err.value.code) == (404, "queue_not_found")


def test_errors_carry_the_server_code(client: Client) -> None:
    with pytest.raises(WonderQError) as info:
        client.receive(-1)
    assert info.value.status == 400 and "cid" in info.value.message
    with pytest.raises(WonderQError) as info:
        client.delete_queue("default")
    assert (info.value.status, info.value.code) == (409, "queue_in_use")
    with pytest.raises(WonderQError) as info:
        client.publish("x", queue=unique_name())
    assert (info.value.status, info.value.code) == (404, "queue_not_found")
    with pytest.raises(WonderQError) as info:
        client.put_queue(unique_name(), colour="blue")
    assert info.value.status == 400 and "colour" in info.value.message


def test_long_poll_through_the_client(server: ServerProcess, client: Client) -> None:
    name = unique_name()
    client.put_queue(name)
    result: list[list[Message]] = []

    def consume() -> None:
        with Client(server.url, timeout=5) as c:  # wait is added to the timeout
            result.append(c.receive(4, queue=name, wait=8))

    t = threading.Thread(target=consume)
    t.start()
    wait_parked(server, 1)
    mid = client.publish("wake", queue=name)
    t.join(6)
    assert result == [[Message(mid, "wake", 1)]]
    t0 = time.monotonic()
    assert client.receive(4, queue=name, wait=0.3) == []
    assert time.monotonic() - t0 >= 0.25


def test_one_connection_for_many_calls(client: Client) -> None:
    client.health()
    sock = client._conn.sock if client._conn else None
    for i in range(50):
        client.publish(f"m{i}")
    assert client.get_queue("default")["counts"]["ready"] == 50
    assert client._conn is not None and client._conn.sock is sock


def test_client_reconnects_after_a_server_restart() -> None:
    first = ServerProcess().start()
    try:
        client = Client(first.url, timeout=5)
        assert client.health() == {"status": "ok"}
        port = first.port
    finally:
        assert first.stop() == 0
    # A new server on the same port: the kept-alive connection is dead; an idempotent call
    # notices, reconnects once and succeeds.
    second = ServerProcess(port=port).start()
    try:
        assert second.port == port
        assert client.health() == {"status": "ok"}
        client.close()
    finally:
        second.stop()
