"""HTTP/1.1 behaviour of the real server (DESIGN.md "HTTP/1.1 behaviour"), over raw sockets:
keep-alive, pipelining, fragmented input, chunked bodies, 100-continue, limits, malformed
input, timeouts, vanished clients, the connection cap, concurrency and graceful shutdown."""

from __future__ import annotations

import json
import random
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from _server import ServerProcess, get, request, running_server
from conftest import (
    FAST_TIMEOUT_FLAGS,
    RawConnection,
    http_request,
    wait_parked,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)

Raw = Callable[..., RawConnection]


def publish_bytes(body: bytes, query: str = "") -> bytes:
    return http_request("POST", f"/v1/publish{query}", body)


def check_error_body(body: bytes, code: str) -> None:
    doc = json.loads(body)
    assert set(doc) == {"error"} and doc["error"]["code"] == code, doc
    assert doc["error"]["message"]


# ---- headers and keep-alive ----------------------------------------------------------------------
def test_every_answer_carries_the_common_headers(raw: Raw) -> None:
    conn = raw()
    for target in ("/healthz", "/nope", "/v1/consumer?cid=x", "/metrics"):
        conn.send(http_request("GET", target))
        resp = conn.read_response()
        assert resp.headers["cache-control"] == "no-store"
        assert resp.headers["server"] == "wonderq"
        assert re.fullmatch(r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", resp.headers["date"])
        assert int(resp.headers["content-length"]) == len(resp.body)
        expected = "text/plain" if target == "/metrics" else "application/json"
        assert resp.headers["content-type"].startswith(expected)


def test_keep_alive_is_the_default(raw: Raw) -> None:
    conn = raw()
    for _ in range(3):
        conn.send(http_request("GET", "/healthz"))
        resp = conn.read_response()
        assert resp.status == 200 and resp.json() == {"status": "ok"}
        assert "connection" not in resp.headers


def test_connection_close_is_honoured(raw: Raw) -> None:
    conn = raw()
    conn.send(http_request("GET", "/healthz", headers={"Connection": "close"}))
    resp = conn.read_response()
    assert resp.status == 200 and resp.headers["connection"] == "close"
    assert conn.closed_by_server()


def test_http10_closes_without_keep_alive(raw: Raw) -> None:
    conn = raw()
    conn.send(b"GET /healthz HTTP/1.0\r\n\r\n")
    resp = conn.read_response()
    assert resp.status == 200 and resp.headers["connection"] == "close"
    assert conn.closed_by_server()


def test_http10_keep_alive_when_asked(raw: Raw) -> None:
    conn = raw()
    for _ in range(2):
        conn.send(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        resp = conn.read_response()
        assert resp.status == 200 and resp.headers["connection"] == "keep-alive"
    assert not conn.closed_by_server(timeout=0.3)


# ---- pipelining and fragmentation ----------------------------------------------------------------
def test_100_pipelined_requests_in_one_write_answer_in_order(raw: Raw) -> None:
    conn = raw()
    kinds = ["publish", "health", "missing", "receive"] * 25
    data = b""
    for i, kind in enumerate(kinds):
        if kind == "publish":
            data += publish_bytes(f"pipelined {i}".encode())
        elif kind == "health":
            data += http_request("GET", "/healthz")
        elif kind == "missing":
            data += http_request("GET", f"/missing/{i}")
        else:
            data += http_request("GET", f"/v1/consumer?cid={10_000 + i}&limit=1")
    conn.send(data)
    ids = []
    for i, kind in enumerate(kinds):
        resp = conn.read_response()
        if kind == "publish":
            assert resp.status == 201
            ids.append(resp.json()["id"])  # type: ignore[index]
        elif kind == "health":
            assert resp.status == 200 and resp.json() == {"status": "ok"}
        elif kind == "missing":
            assert resp.status == 404 and f"/missing/{i}" in resp.body.decode()
        else:
            assert resp.status == 200 and "messages" in resp.json()  # type: ignore[operator]
    assert ids == sorted(ids) and len(set(ids)) == 25  # executed in order


def test_request_fed_one_byte_at_a_time(raw: Raw) -> None:
    conn = raw()
    conn.send_slowly(publish_bytes("byte by byte ✓".encode()))
    resp = conn.read_response()
    assert resp.status == 201
    msg_id = resp.json()["id"]  # type: ignore[index]
    conn.send_slowly(http_request("GET", "/v1/consumer?cid=424242&limit=1000"))
    resp = conn.read_response()
    bodies = {m["id"]: m["body"] for m in resp.json()["messages"]}  # type: ignore[index]
    assert bodies[msg_id] == "byte by byte ✓"


def test_chunked_request_body(raw: Raw) -> None:
    conn = raw()
    chunks = [b"chunk-one ", "ünïcödé ".encode(), b"x" * 3000]
    data = b"POST /v1/publish HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    for chunk in chunks:
        data += b"%x\r\n%s\r\n" % (len(chunk), chunk)
    data += b"0\r\n\r\n"
    conn.send(data)
    resp = conn.read_response()
    assert resp.status == 201
    msg_id = resp.json()["id"]  # type: ignore[index]
    conn.send(http_request("GET", "/v1/consumer?cid=737373&limit=1000"))
    got = {m["id"]: m["body"] for m in conn.read_response().json()["messages"]}  # type: ignore[index]
    assert got[msg_id] == b"".join(chunks).decode()


def test_expect_100_continue_accepted(raw: Raw) -> None:
    conn = raw()
    body = b"sent after 100"
    conn.send(
        b"POST /v1/publish HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    interim = conn.read_response()
    assert interim.status == 100
    conn.send(body)
    assert conn.read_response().status == 201


def test_expect_100_continue_over_limit_is_413_at_once() -> None:
    with running_server("--max-request-bytes", "1000") as srv:
        conn = RawConnection(srv.port)
        conn.send(
            b"POST /v1/publish HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
            b"Content-Length: 1001\r\n\r\n"
        )
        resp = conn.read_response()  # no 100 first, and no body was sent
        assert resp.status == 413 and resp.headers["connection"] == "close"
        check_error_body(resp.body, "request_too_large")
        assert conn.closed_by_server()
        conn.close()


# ---- limits --------------------------------------------------------------------------------------
def test_declared_body_over_limit_is_413_without_reading_it() -> None:
    with running_server("--max-request-bytes", "1000") as srv:
        conn = RawConnection(srv.port)
        conn.send(b"POST /v1/publish HTTP/1.1\r\nHost: t\r\nContent-Length: 50000000\r\n\r\n")
        conn.send(b"x" * 1000)  # the start of a body the server will never read
        resp = conn.read_response()
        assert resp.status == 413
        assert conn.closed_by_server()
        conn.close()
        # Exactly at the limit is fine (a body 1000 bytes long).
        assert request(srv, "POST", "/v1/publish", body=b"y" * 1000).status == 201


def test_chunked_body_over_limit_is_413() -> None:
    with running_server("--max-request-bytes", "1000") as srv:
        conn = RawConnection(srv.port)
        conn.send(b"POST /v1/publish HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        conn.send(b"258\r\n" + b"x" * 600 + b"\r\n" + b"258\r\n" + b"x" * 600 + b"\r\n")
        resp = conn.read_response()
        assert resp.status == 413
        check_error_body(resp.body, "request_too_large")
        assert conn.closed_by_server()
        conn.close()


def test_message_over_max_message_bytes_is_413() -> None:
    with running_server("--max-message-bytes", "10") as srv:
        resp = request(srv, "POST", "/v1/publish", body=b"x" * 11)
        assert resp.status == 413
        check_error_body(resp.body, "message_too_large")
        assert request(srv, "POST", "/v1/publish", body=b"x" * 10).status == 201


def test_url_over_8_kib_is_414(raw: Raw) -> None:
    conn = raw()
    conn.send(http_request("GET", "/healthz?pad=" + "a" * 8200))
    resp = conn.read_response()
    assert resp.status == 414
    check_error_body(resp.body, "uri_too_long")
    assert conn.closed_by_server()
    conn = raw()  # just under the limit is fine
    conn.send(http_request("GET", "/healthz?pad=" + "a" * 8000))
    assert conn.read_response().status == 200


def test_headers_over_16_kib_are_431(raw: Raw) -> None:
    conn = raw()
    headers = {f"X-Pad-{i}": "v" * 1000 for i in range(17)}
    conn.send(http_request("GET", "/healthz", headers=headers))
    resp = conn.read_response()
    assert resp.status == 431
    check_error_body(resp.body, "headers_too_large")
    assert conn.closed_by_server()
    conn = raw()
    conn.send(
        http_request("GET", "/healthz", headers={f"X-Pad-{i}": "v" * 1000 for i in range(14)})
    )
    assert conn.read_response().status == 200


def test_a_header_line_that_never_ends_is_431(raw: Raw) -> None:
    conn = raw()
    conn.send(b"GET /healthz HTTP/1.1\r\nX-Endless: ")
    try:
        for _ in range(64):
            conn.send(b"v" * 1024)
    except (BrokenPipeError, ConnectionResetError):
        pass
    resp = conn.read_response()
    assert resp.status == 431


# ---- malformed input -----------------------------------------------------------------------------
MALFORMED = [
    b"GARBAGE\r\n\r\n",
    b"\x00\x01\x02\x03\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost test\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    b"POST /v1/publish HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
    b"GET /he llo HTTP/1.1\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\n Folded: header\r\n\r\n",
]


@pytest.mark.parametrize("data", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_request_is_400_and_closes(raw: Raw, data: bytes, wq: ServerProcess) -> None:
    conn = raw()
    conn.send(data)
    resp = conn.read_response()
    assert resp.status == 400 and resp.headers["connection"] == "close"
    check_error_body(resp.body, "bad_request")
    assert conn.closed_by_server()
    assert get(wq, "/healthz").status == 200  # the server goes on


def test_request_after_a_good_one_can_be_malformed(raw: Raw) -> None:
    conn = raw()
    conn.send(http_request("GET", "/healthz") + b"BROKEN\r\n\r\n")
    assert conn.read_response().status == 200
    assert conn.read_response().status == 400
    assert conn.closed_by_server()


@pytest.mark.parametrize("body", [b"\xff\xfe", b"abc\xc3", b"\xed\xa0\x80", b""])
def test_body_must_be_valid_nonempty_utf8(raw: Raw, body: bytes) -> None:
    conn = raw()
    conn.send(http_request("POST", "/v1/publish", body, headers={"Content-Length": str(len(body))}))
    resp = conn.read_response()
    assert resp.status == 400
    check_error_body(resp.body, "invalid_body")
    assert "body" in resp.json()["error"]["message"]  # type: ignore[index]
    conn.send(http_request("GET", "/healthz"))  # a 400 for a bad body keeps the connection
    assert conn.read_response().status == 200


def test_random_garbage_never_stops_the_server(wq: ServerProcess, rng: random.Random) -> None:
    """Random pieces of requests (the seed is printed; WONDERQ_TEST_SEED replays it)."""
    pieces = [b"GET ", b"POST ", b"/v1/publish", b"/v1/consumer?cid=1", b" HTTP/1.1", b"\r\n"]
    pieces += [b"Content-Length: 5", b"Transfer-Encoding: chunked", b"Expect: 100-continue"]
    pieces += [b":", b" ", b"\x00", b"\xff", b"0\r\n\r\n", b"hello"]
    for _ in range(100):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randrange(1, 30)))
        with socket.create_connection(("127.0.0.1", wq.port), timeout=5) as sock:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            try:
                while sock.recv(65536):
                    pass
            except ConnectionResetError:
                pass
    assert get(wq, "/healthz").status == 200


# ---- timeouts ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fast() -> Iterator[ServerProcess]:
    with running_server(*FAST_TIMEOUT_FLAGS) as srv:
        yield srv


def test_slow_headers_get_408(fast: ServerProcess) -> None:
    with RawConnection(fast.port) as conn:
        start = time.monotonic()
        conn.send(b"GET /healthz HTTP/1.1\r\n")
        for _ in range(3):  # a slowloris: trickling does not extend the deadline
            time.sleep(0.1)
            conn.send(b"X: y\r\n")
        resp = conn.read_response()
        assert resp.status == 408
        check_error_body(resp.body, "request_timeout")
        assert conn.closed_by_server()
        assert 0.4 < time.monotonic() - start < 3


def test_idle_keep_alive_connection_is_closed(fast: ServerProcess) -> None:
    with RawConnection(fast.port) as conn:
        conn.send(http_request("GET", "/healthz"))
        assert conn.read_response().status == 200
        start = time.monotonic()
        assert conn.closed_by_server(timeout=5)
        assert 0.5 < time.monotonic() - start < 3


def test_connection_that_sends_nothing_is_closed(fast: ServerProcess) -> None:
    with RawConnection(fast.port) as conn:
        assert conn.closed_by_server(timeout=5)


# ---- clients that vanish -------------------------------------------------------------------------
def test_client_vanishing_mid_request_leaks_nothing(raw: Raw, wq: ServerProcess) -> None:
    for i in range(50):
        conn = raw()
        if i % 3 == 0:
            conn.send(b"POST /v1/publish HTTP/1.1\r\nContent-Length: 100\r\n\r\nhalf")
        elif i % 3 == 1:
            conn.send(b"GET /v1/consu")
        else:
            conn.send(b"POST /v1/publish HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab")
        conn.sock.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
        )
        conn.close()  # with SO_LINGER 0: a reset, the rudest way to go
    assert get(wq, "/healthz").status == 200
    metrics = get(wq, "/metrics").body.decode()
    open_conns = float(re.search(r"^wonderq_connections (\S+)$", metrics, re.M).group(1))  # type: ignore[union-attr]
    assert open_conns <= 2


def test_waiter_that_vanished_leases_nothing(fresh: ServerProcess) -> None:
    conn = RawConnection(fresh.port)
    conn.send(http_request("GET", "/v1/consumer?cid=1&wait=10"))
    wait_parked(fresh, 1)
    conn.close()
    wait_parked(fresh, 0)  # the server saw the close and dropped the waiter
    assert request(fresh, "POST", "/v1/publish", body=b"for the living").status == 201
    resp = get(fresh, "/v1/consumer?cid=2")
    [msg] = resp.json()["messages"]
    assert msg["body"] == "for the living" and msg["receives"] == 1


# ---- the connection cap --------------------------------------------------------------------------
def test_connections_over_the_cap_get_503() -> None:
    with running_server("--max-connections", "3") as srv:
        held = [RawConnection(srv.port) for _ in range(3)]
        for conn in held:
            conn.send(http_request("GET", "/healthz"))
            assert conn.read_response().status == 200
        extra = RawConnection(srv.port)
        resp = extra.read_response()
        assert resp.status == 503 and resp.headers["connection"] == "close"
        assert extra.closed_by_server()
        extra.close()
        held.pop().close()
        # Room again once the server has seen the close (until then: 503).
        wait_until(lambda: get(srv, "/healthz").status == 200, what="a free connection slot")
        for conn in held:
            conn.close()


# ---- back-pressure -------------------------------------------------------------------------------
def test_client_that_pipelines_without_reading(raw: Raw) -> None:
    """Writes 20,000 requests before reading anything: the server stops reading while its
    answers are not read, and nothing is lost once the client reads."""
    conn = raw(timeout=30)
    n = 20_000
    data = http_request("GET", "/healthz") * n
    sender = threading.Thread(target=conn.send, args=(data,))
    sender.start()
    # Not a wait for state: the sender's head start is the test (it blocks once the
    # server stops reading and both socket buffers are full).
    time.sleep(0.5)
    for _ in range(n):
        assert conn.read_response().status == 200
    sender.join(10)
    assert not sender.is_alive()


# ---- exactly once under concurrency --------------------------------------------------------------
def test_8_consumers_on_40000_messages_each_delivered_once(fresh: ServerProcess) -> None:
    total, consumers, batch = 40_000, 8, 1000
    with RawConnection(fresh.port, timeout=30) as conn:
        for start in range(0, total, batch):
            conn.send(b"".join(publish_bytes(b"m%d" % i) for i in range(start, start + batch)))
            for _ in range(batch):
                assert conn.read_response().status == 201
    seen: list[list[int]] = [[] for _ in range(consumers)]
    errors: list[BaseException] = []

    def consume(cid: int) -> None:
        try:
            with RawConnection(fresh.port, timeout=30) as c:
                while True:
                    c.send(http_request("GET", f"/v1/consumer?cid={cid}&limit=10"))
                    messages = c.read_response().json()["messages"]  # type: ignore[index]
                    if not messages:
                        return
                    for m in messages:
                        c.send(http_request("DELETE", f"/v1/consumer?cid={cid}&id={m['id']}"))
                    for m in messages:
                        assert c.read_response().body == b"true"
                        seen[cid].append(m["id"])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=consume, args=(cid,)) for cid in range(consumers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    ids = [i for per in seen for i in per]
    assert len(ids) == total and len(set(ids)) == total
    assert all(per for per in seen), "every consumer got some"
    assert get(fresh, "/v1/consumer?cid=99").json() == {"messages": []}


# ---- graceful shutdown ---------------------------------------------------------------------------
def test_sigterm_answers_parked_long_poll_with_empty_list() -> None:
    srv = ServerProcess().start()
    try:
        conn = RawConnection(srv.port)
        conn.send(http_request("GET", "/v1/consumer?cid=1&wait=20"))
        idle = RawConnection(srv.port)
        wait_parked(srv, 1)
        start = time.monotonic()
        srv.signal(signal.SIGTERM)
        resp = conn.read_response()
        assert resp.status == 200 and resp.json() == {"messages": []}
        assert resp.headers["connection"] == "close"
        assert conn.closed_by_server() and idle.closed_by_server()
        assert srv.wait(10) == 0
        assert time.monotonic() - start < 5
        conn.close()
        idle.close()
    finally:
        srv.stop()


def test_sigterm_during_load_exits_cleanly() -> None:
    srv = ServerProcess().start()
    stop = threading.Event()
    answered = [0]
    bad: list[str] = []

    def load() -> None:
        while not stop.is_set():
            try:
                with RawConnection(srv.port, timeout=5) as c:
                    while not stop.is_set():
                        c.send(publish_bytes(b"load") + http_request("GET", "/v1/consumer?cid=5"))
                        for _ in range(2):
                            resp = c.read_response()
                            # A connection the kernel accepted while the server was already
                            # stopping is refused with 503 shutting_down (connection_made):
                            # an answer, not a lost request.
                            if resp.status == 503 and b'"shutting_down"' in resp.body:
                                break
                            if resp.status not in (200, 201):
                                bad.append(f"{resp.status} {resp.body!r}")
                            answered[0] += 1
            except (OSError, EOFError):
                if srv.proc is not None and srv.proc.poll() is not None:
                    return

    threads = [threading.Thread(target=load) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        wait_until(lambda: answered[0] >= 200, what="the load to be under way")
        srv.signal(signal.SIGTERM)
        assert srv.wait(10) == 0
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        srv.stop()
    assert not bad, bad[:5]
    assert "Traceback" not in srv.output()
    assert "wonderq stopped" in srv.output()


def test_the_sqs_face_is_built_at_its_first_possible_request() -> None:
    """server.LazySqsFace: a request with no query, body or X-Amz-Target (the status page,
    a stray 404) is not SQS and builds nothing; the first that may be SQS builds the face
    once and is classified by it."""
    from wonderq.request import Request
    from wonderq.server import LazySqsFace

    built: list[object] = []

    class Face:
        def kind(self, req: Request) -> int:
            return 7 if req.body else 0

    def make() -> Face:
        built.append(Face())
        return built[-1]  # type: ignore[return-value]

    lazy = LazySqsFace(make)
    plain = Request("GET", "/", "", b"", True, None)  # type: ignore[arg-type]
    plain.headers = [(b"host", b"x")]
    assert lazy.kind(plain) == 0 and built == []
    target = Request("POST", "/", "", b"", True, None)  # type: ignore[arg-type]
    target.headers = [(b"x-amz-target", b"AmazonSQS.ListQueues")]
    assert lazy.kind(target) == 0 and len(built) == 1
    form = Request("POST", "/000000000000/q", "", b"Action=SendMessage", True, None)  # type: ignore[arg-type]
    assert lazy.kind(form) == 7 and len(built) == 1
    assert lazy.kind(plain) == 0 and len(built) == 1
