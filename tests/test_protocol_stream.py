"""HttpProtocol's streamed answers (server-sent events), 304s, If-None-Match and answers
with their own Cache-Control: in-process over the fake transport of tests/test_protocol.py.
The same behaviour through a real server and raw sockets: tests/test_status_assets.py."""

from __future__ import annotations

import asyncio

import pytest
from test_protocol import FakeTransport, Limits, Owner, get, loop  # noqa: F401 - a fixture

from wonderq.protocol import HttpProtocol
from wonderq.request import Request, Response

pytestmark = pytest.mark.timeout(30)

SSE = b"Content-Type: text/event-stream\r\n"


class StreamApp:
    """``/stream`` starts a stream from dispatch; ``/park`` parks; ``/304`` answers Not
    Modified; ``/own-cache`` sets its own Cache-Control; anything else echoes its path and
    If-None-Match."""

    def __init__(self) -> None:
        self.streams: list[Request] = []
        self.parked: list[Request] = []
        self.cancelled: list[Request] = []
        self.dispatched: list[str] = []
        self.started: list[bool] = []

    def dispatch(self, req: Request) -> Response | None:
        self.dispatched.append(req.path)
        if req.path == "/stream":
            self.started.append(req.conn.start_stream(req, 200, SSE))
            self.streams.append(req)
            return None
        if req.path == "/park":
            self.parked.append(req)
            return None
        if req.path == "/304":
            return (304, b"", b'ETag: "abc"\r\nCache-Control: no-cache\r\n')
        if req.path == "/own-cache":
            return (200, b"cached", b"Content-Type: text/plain\r\nCache-Control: no-cache\r\n")
        tag = getattr(req, "if_none_match", None)
        return (200, f"{req.path} {tag!r}".encode(), b"Content-Type: text/plain\r\n")

    def cancel(self, req: Request) -> None:
        self.cancelled.append(req)

    def count(self, route: str, status: int) -> None:
        pass


class Conn:
    """One protocol instance before a StreamApp, over a fake transport."""

    def __init__(self) -> None:
        self.app = StreamApp()
        self.proto = HttpProtocol(self.app, Owner(), Limits())
        self.transport = FakeTransport()
        self.proto.connection_made(self.transport)

    def feed(self, data: bytes) -> None:
        self.proto.data_received(data)


def stream_conn(loop: asyncio.AbstractEventLoop) -> tuple[Conn, StreamApp]:  # noqa: F811
    c = Conn()
    return c, c.app


def head_and_rest(out: bytes) -> tuple[int, dict[str, str], list[str], bytes]:
    head, _, rest = out.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    names = [line.split(":", 1)[0].lower() for line in lines[1:]]
    headers = {n: line.split(":", 1)[1].strip() for n, line in zip(names, lines[1:], strict=True)}
    return int(lines[0].split()[1]), headers, names, rest


def test_a_stream_is_chunked_and_closes_when_ended(loop: asyncio.AbstractEventLoop) -> None:  # noqa: F811
    c, app = stream_conn(loop)
    c.feed(get("/stream"))
    [req] = app.streams
    assert app.started == [True]
    status, headers, names, rest = head_and_rest(bytes(c.transport.out))
    assert status == 200
    assert headers["content-type"] == "text/event-stream"
    assert headers["cache-control"] == "no-store"
    assert headers["transfer-encoding"] == "chunked"
    assert headers["connection"] == "close"
    assert "content-length" not in names
    assert rest == b""  # the head went out at once, before any event
    assert c.proto.send_stream(req, b"data: 1\n\n")
    assert c.proto.send_stream(req, b"")  # nothing to send; must not end the body
    assert c.proto.send_stream(req, b"x" * 300)
    assert not c.transport.closed
    c.proto.end_stream(req)
    body = bytes(c.transport.out).partition(b"\r\n\r\n")[2]
    assert body == b"9\r\ndata: 1\n\n\r\n12c\r\n" + b"x" * 300 + b"\r\n0\r\n\r\n"
    assert c.transport.closed
    assert app.cancelled == []  # the application ended it itself
    assert not c.proto.send_stream(req, b"late")


def test_http10_stream_is_plain_until_the_close(loop: asyncio.AbstractEventLoop) -> None:  # noqa: F811
    c, app = stream_conn(loop)
    c.feed(b"GET /stream HTTP/1.0\r\n\r\n")
    [req] = app.streams
    c.proto.send_stream(req, b"data: a\n\n")
    c.proto.end_stream(req)
    _status, headers, names, rest = head_and_rest(bytes(c.transport.out))
    assert "transfer-encoding" not in names and headers["connection"] == "close"
    assert rest == b"data: a\n\n"
    assert c.transport.closed


def test_pipelined_answers_stay_in_order_and_the_stream_is_last(
    loop: asyncio.AbstractEventLoop,  # noqa: F811
) -> None:
    c, app = stream_conn(loop)
    c.feed(get("/a") + get("/stream") + get("/b") + get("/c"))
    out = bytes(c.transport.out)
    first, _, rest = out.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200") and b"Content-Length: 7" in first
    assert rest.startswith(b"/a None")
    assert rest[len(b"/a None") :].startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"text/event-stream" in rest
    # What came behind the stream is never run: the stream is the connection's last answer.
    assert app.dispatched == ["/a", "/stream"]
    c.feed(get("/d"))
    assert app.dispatched == ["/a", "/stream"]


def test_a_parked_request_can_become_a_stream(loop: asyncio.AbstractEventLoop) -> None:  # noqa: F811
    c, app = stream_conn(loop)
    c.feed(get("/park") + get("/behind"))
    [req] = app.parked
    assert c.transport.out == b""
    assert c.proto.start_stream(req, 200, SSE)
    assert c.proto.send_stream(req, b"e")
    assert bytes(c.transport.out).endswith(b"\r\n\r\n1\r\ne\r\n")
    assert app.dispatched == ["/park"]  # /behind was dropped with the pipeline
    # A second stream, or completing the streamed request, is refused.
    assert not c.proto.start_stream(req, 200, SSE)
    c.proto.complete(req, (200, b"no", b""))
    assert bytes(c.transport.out).endswith(b"1\r\ne\r\n")


def test_the_client_going_away_cancels_the_stream(loop: asyncio.AbstractEventLoop) -> None:  # noqa: F811
    c, app = stream_conn(loop)
    c.feed(get("/stream"))
    [req] = app.streams
    c.proto.connection_lost(None)
    assert app.cancelled == [req]
    assert not c.proto.send_stream(req, b"x")
    c.proto.end_stream(req)  # harmless once gone
    assert app.cancelled == [req]


def test_shutdown_ends_the_stream_and_tells_the_app(loop: asyncio.AbstractEventLoop) -> None:  # noqa: F811
    c, app = stream_conn(loop)
    c.feed(get("/stream"))
    [req] = app.streams
    c.proto.send_stream(req, b"abc")
    c.proto.shutdown()
    assert bytes(c.transport.out).endswith(b"3\r\nabc\r\n0\r\n\r\n")
    assert c.transport.closed
    assert app.cancelled == [req]


def test_a_client_that_does_not_read_skips_pieces(loop: asyncio.AbstractEventLoop) -> None:  # noqa: F811
    c, app = stream_conn(loop)
    c.feed(get("/stream"))
    [req] = app.streams
    size = len(c.transport.out)
    c.proto.pause_writing()
    assert not c.proto.send_stream(req, b"dropped")
    assert len(c.transport.out) == size  # dropped whole, not buffered
    c.proto.resume_writing()
    assert c.proto.send_stream(req, b"kept")
    assert bytes(c.transport.out).endswith(b"4\r\nkept\r\n")


def test_head_of_a_stream_is_the_head_alone(loop: asyncio.AbstractEventLoop) -> None:  # noqa: F811
    c, app = stream_conn(loop)
    c.feed(b"HEAD /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    assert app.started == [False]
    assert bytes(c.transport.out).endswith(b"Connection: close\r\n\r\n")
    assert c.transport.closed


def test_304_has_no_content_length_and_keeps_the_connection(
    loop: asyncio.AbstractEventLoop,  # noqa: F811
) -> None:
    c, _ = stream_conn(loop)
    c.feed(get("/304", 'If-None-Match: "abc"\r\n') + get("/next"))
    out = bytes(c.transport.out)
    head, _, rest = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 304 Not Modified\r\n")
    assert b"Content-Length" not in head
    assert b'ETag: "abc"' in head
    assert head.count(b"Cache-Control") == 1 and b"Cache-Control: no-cache" in head
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n")  # the next answer follows at once
    assert rest.endswith(b"/next None")
    assert not c.transport.closed


@pytest.mark.parametrize("name", ["If-None-Match", "if-none-match", "IF-NONE-MATCH"])
def test_if_none_match_reaches_the_app(loop: asyncio.AbstractEventLoop, name: str) -> None:  # noqa: F811
    c, _app = stream_conn(loop)
    c.feed(get("/x", f'{name}: "t1", W/"t2"\r\n') + get("/y"))
    bodies = bytes(c.transport.out).split(b"\r\n\r\n")
    assert bodies[1].startswith(b'/x b\'"t1", W/"t2"\'')
    assert bodies[2] == b"/y None"  # not carried over to the next request


def test_an_answer_may_set_its_own_cache_control(loop: asyncio.AbstractEventLoop) -> None:  # noqa: F811
    c, _ = stream_conn(loop)
    c.feed(get("/own-cache") + get("/other"))
    first, second = bytes(c.transport.out).split(b"cached")
    assert first.count(b"Cache-Control") == 1 and b"Cache-Control: no-cache\r\n" in first
    assert b"Cache-Control: no-store\r\n" in second  # the others keep no-store
