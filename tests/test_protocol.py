"""HttpProtocol in-process, with a fake transport and a stub application: framing, ordering,
deferral, limits, flow control and failure handling, without sockets or an engine."""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvloop

from wonderq import protocol, request
from wonderq.protocol import HttpProtocol
from wonderq.queuenames import QueueNames
from wonderq.request import JSON_HEADERS, Request, Response, split_query

pytestmark = pytest.mark.timeout(30)


@dataclass
class Limits:
    max_url_bytes: int = 100
    max_header_bytes: int = 200
    max_request_bytes: int = 1000
    max_connections: int = 10
    idle_timeout_s: float = 0.3
    header_timeout_s: float = 0.2
    access_log: bool = False
    auth_file: str | None = None


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closed = False
        self.eof = False
        self.aborted = False
        self.reading = True

    def write(self, data: Any) -> None:
        assert not self.closed and not self.eof, "write after close"
        self.out += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def abort(self) -> None:
        self.aborted = self.closed = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def pause_reading(self) -> None:
        assert self.reading
        self.reading = False

    def resume_reading(self) -> None:
        assert not self.reading
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 5555) if name == "peername" else default


class StubApp:
    """Answers ``200 <method> <path>?<query> <body>``; ``/park`` defers; ``/boom`` raises."""

    def __init__(self) -> None:
        self.parked: list[Request] = []
        self.cancelled: list[Request] = []
        self.counts: dict[tuple[str, int], int] = {}

    def dispatch(self, req: Request) -> Response | None:
        if req.path == "/park":
            self.parked.append(req)
            return None
        if req.path == "/boom":
            raise RuntimeError("handler bug")
        text = f"{req.method} {req.path}?{req.query} ".encode() + req.body
        return (200, text, b"Content-Type: text/plain\r\n")

    def cancel(self, req: Request) -> None:
        self.cancelled.append(req)

    def count(self, route: str, status: int) -> None:
        self.counts[(route, status)] = self.counts.get((route, status), 0) + 1


class Owner:
    def __init__(self) -> None:
        self.connections: set[HttpProtocol] = set()
        self.shutting_down = False


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    yield loop
    loop.close()
    asyncio.set_event_loop(None)


class Conn:
    """One protocol instance wired to a fake transport."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limits: Limits | None = None) -> None:
        self.loop = loop
        self.app = StubApp()
        self.owner = Owner()
        self.proto = HttpProtocol(self.app, self.owner, limits or Limits())
        self.transport = FakeTransport()
        self.proto.connection_made(self.transport)
        self.read_pos = 0

    def feed(self, data: bytes) -> None:
        self.proto.data_received(data)

    def responses(self) -> list[tuple[int, dict[str, str], bytes]]:
        """Parse what was written since the last call."""
        data = bytes(self.transport.out[self.read_pos :])
        out = []
        while data:
            head, _, data = data.partition(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            status = int(lines[0].split()[1])
            headers = {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            n = int(headers.get("content-length", 0))
            body, data = data[:n], data[n:]
            out.append((status, headers, body))
        self.read_pos = len(self.transport.out)
        return out

    def run(self, seconds: float) -> None:
        self.loop.run_until_complete(asyncio.sleep(seconds))


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()


def post(path: str, body: bytes, extra: str = "") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


# ---- framing --------------------------------------------------------------------------------
def test_response_headers(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop)
    c.feed(get("/a?x=1"))
    [(status, headers, body)] = c.responses()
    assert status == 200 and body == b"GET /a?x=1 "
    assert headers["server"] == "wonderq"
    assert headers["cache-control"] == "no-store"
    assert headers["date"].endswith("GMT")
    assert headers["content-length"] == str(len(body))
    assert "connection" not in headers  # HTTP/1.1 keep-alive is the default
    assert not c.transport.closed


def test_date_is_cached_and_refreshed() -> None:
    request.refresh_date(0)
    assert b"Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n" in request._common_headers
    request.refresh_date()
    assert b"1970" not in request._common_headers


def test_http_date_writes_what_email_utils_formatdate_writes() -> None:
    """request.http_date stands in for email.utils.formatdate(t, usegmt=True) (which the server
    no longer imports): the same text for every day of the week and month, leap days, the
    epoch, second boundaries, fractions of a second, and far years."""
    from email.utils import formatdate

    moments = [0, 0.999, 59.5, 951782400, 951868799, 1709164800, 2000000000, 32503680000]
    moments += [1_764_900_000 + day * 86_400 + day * 3_607 for day in range(400)]
    for t in moments:
        assert request.http_date(t) == formatdate(t, usegmt=True), t
    assert request.http_date()[-4:] == " GMT"


def test_pipelined_requests_in_one_feed_answer_in_order(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop)
    c.feed(b"".join(get(f"/r{i}") for i in range(50)))
    bodies = [body for _, _, body in c.responses()]
    assert bodies == [f"GET /r{i}? ".encode() for i in range(50)]


def test_byte_at_a_time(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop)
    data = post("/p?q=1", b"hello") + get("/g")
    for i in range(len(data)):
        c.feed(data[i : i + 1])
    assert [b for _, _, b in c.responses()] == [b"POST /p?q=1 hello", b"GET /g? "]


def test_chunked_body(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop)
    c.feed(
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n5\r\ndefgh\r\n0\r\n\r\n"
    )
    assert c.responses()[0][2] == b"POST /c? abcdefgh"


def test_absolute_form_target(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop)
    c.feed(get("http://example.com:8080/a/b?z=2"))
    assert c.responses()[0][2] == b"GET /a/b?z=2 "


def test_head_gets_length_but_no_body(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop)
    c.feed(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n" + get("/after"))
    out = bytes(c.transport.out)
    assert out.count(b"HTTP/1.1 200") == 2
    assert b"Content-Length: 9\r\n\r\nHTTP/1.1" in out  # len(b"HEAD /h? "), body not sent
    assert out.endswith(b"GET /after? ")


# ---- keep-alive and closing -----------------------------------------------------------------
def test_connection_close(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop)
    c.feed(get("/a", "Connection: close\r\n") + get("/ignored"))
    [(status, headers, _)] = c.responses()
    assert status == 200 and headers["connection"] == "close"
    assert c.transport.closed


def test_http10_closes_unless_keep_alive(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop)
    c.feed(b"GET /a HTTP/1.0\r\n\r\n")
    [(_, headers, _)] = c.responses()
    assert headers["connection"] == "close" and c.transport.closed

    c = Conn(loop)
    c.feed(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    c.feed(b"GET /b HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
    out = c.responses()
    assert [h["connection"] for _, h, _ in out] == ["keep-alive", "keep-alive"]
    assert not c.transport.closed


def test_malformed_request_is_400_and_closes(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop)
    c.feed(get("/ok") + b"NOT HTTP AT ALL\r\n\r\n")
    (s1, _, _), (s2, headers, body) = c.responses()
    assert (s1, s2) == (200, 400)
    assert headers["connection"] == "close"
    assert json.loads(body)["error"]["code"] == "bad_request"
    assert c.transport.eof  # lingering close: our FIN first, then drain the client
    c.feed(b"more garbage")  # discarded, no second answer
    assert c.responses() == []
    c.proto.eof_received()


# ---- deferred answers -------------------------------------------------------------------------
def test_parked_request_holds_the_pipeline(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop)
    c.feed(get("/one") + get("/park") + get("/three") + get("/four"))
    assert [b for _, _, b in c.responses()] == [b"GET /one? "]
    [parked] = c.app.parked
    c.proto.complete(parked, (200, b"parked answer", JSON_HEADERS))
    assert [b for _, _, b in c.responses()] == [
        b"parked answer",
        b"GET /three? ",
        b"GET /four? ",
    ]


def test_complete_after_close_is_ignored(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop)
    c.feed(get("/park"))
    [parked] = c.app.parked
    c.proto.connection_lost(None)
    assert c.app.cancelled == [parked]
    c.proto.complete(parked, (200, b"late", JSON_HEADERS))
    assert c.responses() == []


def test_many_queued_requests_pause_reading(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop)
    c.feed(get("/park") + b"".join(get(f"/q{i}") for i in range(protocol.MAX_QUEUED_REQUESTS)))
    assert not c.transport.reading
    c.proto.complete(c.app.parked[0], (200, b"done", JSON_HEADERS))
    assert c.transport.reading
    assert len(c.responses()) == protocol.MAX_QUEUED_REQUESTS + 1


def test_write_buffer_pressure_pauses_reading(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop)
    c.proto.pause_writing()
    assert not c.transport.reading
    c.proto.resume_writing()
    assert c.transport.reading


def test_handler_exception_is_500_and_connection_goes_on(
    loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    c = Conn(loop)
    with caplog.at_level(logging.ERROR):
        c.feed(get("/boom") + get("/fine"))
    (s1, _, b1), (s2, _, b2) = c.responses()
    assert s1 == 500 and json.loads(b1)["error"]["code"] == "internal_error"
    assert (s2, b2) == (200, b"GET /fine? ")
    assert "handler bug" in caplog.text and "Traceback" in caplog.text


# ---- limits -----------------------------------------------------------------------------------
def test_url_too_long_is_414(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop)
    c.feed(get("/" + "a" * 100))
    [(status, headers, body)] = c.responses()
    assert status == 414 and json.loads(body)["error"]["code"] == "uri_too_long"
    assert headers["connection"] == "close"


def test_url_fragments_are_counted(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop)
    c.feed(b"GET /" + b"a" * 60)
    c.feed(b"b" * 60)
    assert c.responses()[0][0] == 414


def test_headers_too_large_is_431(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop)
    c.feed(get("/", "".join(f"X-H{i}: {'v' * 20}\r\n" for i in range(10))))
    assert c.responses()[0][0] == 431


def test_endless_header_line_is_431(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop)
    c.feed(b"GET / HTTP/1.1\r\nX-Long: ")
    for _ in range(10):
        c.feed(b"v" * 50)  # never a CRLF: httptools would buffer it forever
    assert c.responses()[0][0] == 431


def test_declared_body_too_large_is_413_at_once(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop)
    c.feed(b"POST /p HTTP/1.1\r\nContent-Length: 1001\r\n\r\n")
    [(status, headers, body)] = c.responses()
    assert status == 413 and headers["connection"] == "close"
    assert json.loads(body)["error"]["code"] == "request_too_large"


def test_chunked_body_too_large_is_413(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop)
    c.feed(b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(3):
        c.feed(b"190\r\n" + b"x" * 400 + b"\r\n")
    assert c.responses()[0][0] == 413


# ---- 100-continue ---------------------------------------------------------------------------
def test_expect_continue(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop)
    c.feed(b"POST /p HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
    assert bytes(c.transport.out) == b"HTTP/1.1 100 Continue\r\n\r\n"
    c.read_pos = len(c.transport.out)
    c.feed(b"abc")
    assert c.responses()[0][2] == b"POST /p? abc"


def test_expect_continue_over_limit_is_413_without_100(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop)
    c.feed(b"POST /p HTTP/1.1\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
    assert b"100 Continue" not in c.transport.out
    assert c.responses()[0][0] == 413


def test_expect_continue_waits_for_parked_request(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop)
    c.feed(get("/park") + b"POST /p HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
    assert c.transport.out == b""  # a 100 now would come before the parked answer
    c.proto.complete(c.app.parked[0], (200, b"first", JSON_HEADERS))
    assert bytes(c.transport.out).endswith(b"first" + b"HTTP/1.1 100 Continue\r\n\r\n")


def test_unknown_expectation_is_417(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop)
    c.feed(b"POST /p HTTP/1.1\r\nContent-Length: 2\r\nExpect: something\r\n\r\nab")
    assert c.responses()[0][0] == 417


# ---- timers -----------------------------------------------------------------------------------
def test_header_timeout_is_408(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop)
    c.feed(b"GET / HTTP/1.1\r\n")
    c.run(0.1)
    c.feed(b"X-Slow: 1\r\n")  # trickling does not extend the header deadline
    c.run(0.25)
    [(status, headers, _)] = c.responses()
    assert status == 408 and headers["connection"] == "close"


def test_idle_timeout_closes_quietly(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop)
    c.feed(get("/a"))
    c.run(0.2)
    c.feed(get("/b"))  # activity pushes the idle deadline
    c.run(0.2)
    assert not c.transport.closed
    c.run(0.25)
    assert c.transport.closed
    assert len(c.responses()) == 2


def test_parked_connection_does_not_time_out(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop)
    c.feed(get("/park"))
    c.run(0.5)
    assert not c.transport.closed
    c.proto.complete(c.app.parked[0], (200, b"x", JSON_HEADERS))
    c.run(0.4)
    assert c.transport.closed  # idle again after the answer


class CountingLoop:
    """The two calls Deadlines makes of its loop, the timers counted."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.timers = 0

    def time(self) -> float:
        return self.loop.time()

    def call_at(self, when: float, callback: Any) -> asyncio.TimerHandle:
        self.timers += 1
        return self.loop.call_at(when, callback)


def test_connections_share_one_loop_timer(loop: asyncio.AbstractEventLoop) -> None:
    """Fifty idle connections on one Deadlines (as protocol_factory makes them) each close
    after the idle timeout, and the loop held a timer per tick, not one per connection."""
    counting = CountingLoop(loop)
    deadlines = protocol.Deadlines(counting)  # type: ignore[arg-type]
    owner = Owner()
    transports = []
    for _ in range(50):
        proto = HttpProtocol(StubApp(), owner, Limits(max_connections=100), deadlines)
        transports.append(FakeTransport())
        proto.connection_made(transports[-1])
    loop.run_until_complete(asyncio.sleep(0.2))
    assert not any(t.closed for t in transports)
    loop.run_until_complete(asyncio.sleep(0.3))
    assert all(t.closed for t in transports)
    assert 1 <= counting.timers <= 3


def test_a_lost_connection_is_not_kept_by_its_timer(loop: asyncio.AbstractEventLoop) -> None:
    """connection_lost takes the connection out of Deadlines at once: nothing holds it until
    its deadline (a storm of short connections would otherwise keep them all for the idle
    timeout), and the connections still open keep their timers."""
    deadlines = protocol.Deadlines(loop)

    def alive() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if type(o) is HttpProtocol)

    before = alive()
    owner = Owner()
    stays = HttpProtocol(StubApp(), owner, Limits(), deadlines)
    stays_transport = FakeTransport()
    stays.connection_made(stays_transport)
    goes = HttpProtocol(StubApp(), owner, Limits(), deadlines)
    goes.connection_made(FakeTransport())
    assert alive() == before + 2
    goes.connection_lost(None)
    del goes
    assert alive() == before + 1
    loop.run_until_complete(asyncio.sleep(0.45))
    assert stays_transport.closed


def test_an_earlier_deadline_moves_the_timer(loop: asyncio.AbstractEventLoop) -> None:
    """A connection armed for the idle timeout that starts a request is re-armed for the
    earlier header timeout, and fires once: a 408, then nothing more at the old tick."""
    c = Conn(loop, Limits(idle_timeout_s=0.6, header_timeout_s=0.1))
    c.feed(b"GET / HTTP/1.1\r\n")
    c.run(0.25)
    [(status, _, _)] = c.responses()
    assert status == 408
    c.run(0.5)
    assert c.responses() == []


def test_a_failing_timer_stops_no_other(
    loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    """A connection whose timeout handling raises is logged; the connections that share its
    Deadlines, in its tick and in later ones, still time out."""
    module = _source_protocol()  # plain Python: a subclass can break _on_timer

    class Broken(module.HttpProtocol):  # type: ignore[misc, name-defined]
        def _on_timer(self) -> None:
            raise RuntimeError("timer bug")

    deadlines = module.Deadlines(loop)
    owner = Owner()
    broken = Broken(StubApp(), owner, Limits(), deadlines)
    broken.connection_made(FakeTransport())
    same_tick = module.HttpProtocol(StubApp(), owner, Limits(), deadlines)
    same_tick_transport = FakeTransport()
    same_tick.connection_made(same_tick_transport)
    later = module.HttpProtocol(StubApp(), owner, Limits(idle_timeout_s=0.5), deadlines)
    later_transport = FakeTransport()
    later.connection_made(later_transport)
    with caplog.at_level(logging.ERROR, logger="wonderq.http"):
        loop.run_until_complete(asyncio.sleep(0.7))
    assert same_tick_transport.closed
    assert later_transport.closed
    assert "the timer of connection 127.0.0.1:5555 failed" in caplog.text


class ManualLoop:
    """A clock that moves only when told and the loop timers Deadlines sets, run in order.
    ``early``: a timer runs that much before its time (libuv rounds to milliseconds);
    ``step``: each timer runs at least that long after the previous one (a real loop's time
    moves between turns)."""

    def __init__(self, early: float = 0.0, step: float = 0.0) -> None:
        self.now = 0.0
        self.early, self.step = early, step
        self.timers: list[asyncio.TimerHandle] = []
        self.fires = 0

    def time(self) -> float:
        return self.now

    def get_debug(self) -> bool:  # asyncio.TimerHandle asks
        return False

    def _timer_handle_cancelled(self, handle: asyncio.TimerHandle) -> None:  # ... and tells
        pass

    def call_at(self, when: float, callback: Any) -> asyncio.TimerHandle:
        handle = asyncio.TimerHandle(when, callback, (), self)  # type: ignore[arg-type]
        self.timers.append(handle)
        return handle

    def run_until(self, t: float) -> None:
        while True:
            self.timers = [h for h in self.timers if not h.cancelled()]
            due = [h for h in self.timers if h.when() - self.early <= t]
            if not due:
                break
            handle = min(due, key=lambda h: h.when())
            self.timers.remove(handle)
            self.now = max(self.now + self.step, handle.when() - self.early)
            self.fires += 1
            handle._run()
        self.now = max(self.now, t)


class Armed:
    """What Deadlines uses of a connection, timing out at ``deadline`` like _on_timer:
    re-armed when fired early, the times it fired and when it timed out recorded."""

    def __init__(self, deadlines: Any, loop: ManualLoop, deadline: float) -> None:
        self._tick = 0
        self.peer = "-"
        self.deadlines, self.loop, self.deadline = deadlines, loop, deadline
        self.fired = 0
        self.timed_out_at: float | None = None

    def _on_timer(self) -> None:
        self.fired += 1
        if self.loop.time() < self.deadline:
            self.deadlines.arm(self, self.deadline)
        else:
            self.timed_out_at = self.loop.time()


def test_a_tick_due_later_is_not_fired_early() -> None:
    """A fire at one tick's time fires that tick only: the next tick's connection, whose
    deadline has not come, is not fired (and re-armed, and fired again, in a loop)."""
    module = _source_protocol()  # plain Python: Deadlines takes any object with _tick
    clock = ManualLoop()
    deadlines = module.Deadlines(clock)
    first = Armed(deadlines, clock, 1.0)
    second = Armed(deadlines, clock, 65 / 64 + 0.005)  # the next tick
    deadlines.arm(first, first.deadline)
    deadlines.arm(second, second.deadline)
    clock.run_until(65 / 64)
    assert first.timed_out_at is not None
    assert second.fired == 0
    clock.run_until(1.1)
    assert second.fired == 1 and second.timed_out_at is not None


def test_a_connection_rearmed_for_later_does_not_delay_the_others() -> None:
    """A connection fired early re-arms for its later deadline during the fire; the loop's
    timer still comes back for the earlier ticks of the other connections."""
    module = _source_protocol()
    clock = ManualLoop()
    deadlines = module.Deadlines(clock)
    moved = Armed(deadlines, clock, 1.0)
    other = Armed(deadlines, clock, 2.0)
    deadlines.arm(moved, 1.0)
    deadlines.arm(other, 2.0)
    moved.deadline = 10.0  # requests came: its deadline moved later, the timer is lazy
    clock.run_until(2.1)
    assert other.timed_out_at is not None and other.timed_out_at <= 2.0 + 1 / 64 + 0.001
    assert moved.timed_out_at is None
    clock.run_until(10.1)
    assert moved.timed_out_at is not None


def test_timeouts_on_one_deadlines_keep_their_times(loop: asyncio.AbstractEventLoop) -> None:
    """The same with real connections: one that was active re-arms at its idle deadline for
    a later one, and another's shorter idle timeout still closes it on time."""
    deadlines = protocol.Deadlines(loop)
    owner = Owner()
    active = HttpProtocol(StubApp(), owner, Limits(idle_timeout_s=0.2), deadlines)
    active_transport = FakeTransport()
    active.connection_made(active_transport)
    idle = HttpProtocol(StubApp(), owner, Limits(idle_timeout_s=0.3), deadlines)
    idle_transport = FakeTransport()
    idle.connection_made(idle_transport)
    loop.run_until_complete(asyncio.sleep(0.05))
    active.data_received(get("/x"))  # answered: its idle deadline moves to ~0.25 s and on
    loop.run_until_complete(asyncio.sleep(0.3))  # ~0.35 s: past idle's 0.3 s, before ~0.4 s
    assert idle_transport.closed
    assert not active_transport.closed


# ---- connection cap and shutdown ------------------------------------------------------------
def test_connection_cap_answers_503(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop, Limits(max_connections=1))
    assert len(c.owner.connections) == 1
    second = HttpProtocol(c.app, c.owner, Limits(max_connections=1))
    transport = FakeTransport()
    second.connection_made(transport)
    assert transport.out.startswith(b"HTTP/1.1 503 ")
    assert b"Connection: close" in transport.out and transport.eof
    assert len(c.owner.connections) == 1


def test_shutdown_closes_idle_and_finishes_busy(loop: asyncio.AbstractEventLoop) -> None:
    idle = Conn(loop)
    busy = Conn(loop)
    busy.feed(get("/park"))
    for conn in (idle, busy):
        conn.owner.shutting_down = True
        conn.proto.shutdown()
    assert idle.transport.closed and not busy.transport.closed
    busy.proto.complete(busy.app.parked[0], (200, b"[]", JSON_HEADERS))
    [(_, headers, body)] = busy.responses()
    assert body == b"[]" and headers["connection"] == "close" and busy.transport.closed


# ---- headers the protocol reads, in any casing ---------------------------------------------
@pytest.mark.parametrize(
    "name", ["Content-Length", "content-length", "CONTENT-LENGTH", "cOnTeNt-LeNgTh"]
)
def test_content_length_in_any_casing(loop: asyncio.AbstractEventLoop, name: str) -> None:
    c = Conn(loop)  # max_request_bytes 1000
    c.feed(f"POST /p HTTP/1.1\r\n{name}: 5000\r\n\r\n".encode())
    [(status, _, _)] = c.responses()
    assert status == 413 and c.transport.eof  # refused before any body byte


def test_content_length_with_leading_zeros(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop)
    c.feed(b"POST /p HTTP/1.1\r\nContent-Length: 00000000000000000000003\r\n\r\nabc")
    assert c.responses()[0][2] == b"POST /p? abc"
    c.feed(b"POST /p HTTP/1.1\r\nContent-Length: 00000000000000000001001\r\n\r\n")
    assert c.responses()[0][0] == 413


@pytest.mark.parametrize("name", ["Expect", "expect", "EXPECT"])
def test_expect_in_any_casing(loop: asyncio.AbstractEventLoop, name: str) -> None:
    c = Conn(loop)
    c.feed(f"POST /p HTTP/1.1\r\nContent-Length: 2\r\n{name}: 100-continue\r\n\r\n".encode())
    assert bytes(c.transport.out) == b"HTTP/1.1 100 Continue\r\n\r\n"
    c.feed(b"ab")
    assert bytes(c.transport.out).endswith(b"POST /p? ab")


def test_expect_with_zero_length_gets_no_100(loop: asyncio.AbstractEventLoop) -> None:
    c = Conn(loop)
    c.feed(b"POST /p HTTP/1.1\r\nContent-Length: 00\r\nExpect: 100-continue\r\n\r\n")
    assert bytes(c.transport.out).startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize(
    "header", ["Connection: keep-alive", "connection: Keep-Alive", "CONNECTION: KEEP-ALIVE"]
)
def test_http10_keep_alive_in_any_casing(loop: asyncio.AbstractEventLoop, header: str) -> None:
    c = Conn(loop)
    c.feed(f"GET /a HTTP/1.0\r\n{header}\r\n\r\n".encode())
    [(status, headers, _)] = c.responses()
    assert status == 200 and headers["connection"] == "keep-alive"
    assert not c.transport.closed


def test_a_header_of_the_same_length_is_not_mistaken(loop: asyncio.AbstractEventLoop) -> None:
    # "User-Agent" has the length of "Connection", "Accept" that of "Expect",
    # "Content-Lengtx" that of "Content-Length": none of them changes anything.
    c = Conn(loop)
    c.feed(
        b"GET /a HTTP/1.0\r\nUser-Agent: keep-alive\r\nAccept: 100-continue\r\n"
        b"Content-Lengtx: 99999\r\n\r\n"
    )
    [(status, headers, _)] = c.responses()
    assert status == 200 and headers["connection"] == "close"
    assert c.transport.closed  # HTTP/1.0 without keep-alive


# ---- request headers -------------------------------------------------------------------------
class HeaderApp(StubApp):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, list[tuple[bytes, bytes]] | None]] = []

    def dispatch(self, req: Request) -> Response | None:
        self.seen.append((req.path, req.headers))
        return super().dispatch(req)


@pytest.mark.parametrize("compiled", [True, False])
def test_headers_kept_outside_v1(loop: asyncio.AbstractEventLoop, compiled: bool) -> None:
    """Targets outside /v1/ carry their headers (lowercase names, in order, repeats kept);
    the native routes carry None. A target cut before its fourth byte keeps them (only a
    cost); a cut one outside /v1/ always does."""
    module = protocol if compiled else _source_protocol()
    app = HeaderApp()
    proto = module.HttpProtocol(app, Owner(), Limits())
    proto.connection_made(FakeTransport())
    sqs = (
        b"POST /000000000000/jobs HTTP/1.1\r\nHost: h:1\r\nX-Amz-Target: AmazonSQS.SendMessage"
        b"\r\nx-a: 1\r\nX-A: 2\r\nContent-Length: 2\r\n\r\n{}"
    )
    proto.data_received(sqs + get("/v1/publish") + get("/") + get("/v1"))
    proto.data_received(get("/v1/consumer")[:10])
    proto.data_received(get("/v1/consumer")[10:])
    for byte in range(len(get("/q"))):
        proto.data_received(get("/q")[byte : byte + 1])
    assert app.seen == [
        (
            "/000000000000/jobs",
            [
                (b"host", b"h:1"),
                (b"x-amz-target", b"AmazonSQS.SendMessage"),
                (b"x-a", b"1"),
                (b"x-a", b"2"),
                (b"content-length", b"2"),
            ],
        ),
        ("/v1/publish", None),
        ("/", [(b"host", b"x")]),
        ("/v1", [(b"host", b"x")]),
        ("/v1/consumer", None),
        ("/q", [(b"host", b"x")]),
    ]


# ---- the compiled build ----------------------------------------------------------------------
def _source_protocol() -> Any:
    """wonderq/protocol.py run as plain Python, whether or not it is compiled."""
    path = Path(protocol.__file__).with_name("protocol.py")
    spec = importlib.util.spec_from_file_location("wonderq._protocol_source", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_source_and_build_answer_byte_for_byte(loop: asyncio.AbstractEventLoop) -> None:
    """The .py is the readable source of the compiled module: both must behave the same."""
    stream = [
        get("/a?x=1") + post("/p", b"hello") + get("/park") + get("/after"),
        b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"GET /h HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        b"POST /e HTTP/1.1\r\ncontent-length: 2\r\nexpect: 100-continue\r\n\r\n",
        b"ok",
        b"HEAD /x HTTP/1.1\r\n\r\n" + get("/boom") + get("/last", "Connection: close\r\n"),
    ]
    outputs = []
    for module in (protocol, _source_protocol()):
        request.refresh_date(0)
        app, owner, transport = StubApp(), Owner(), FakeTransport()
        proto = module.HttpProtocol(app, owner, Limits())
        proto.connection_made(transport)
        for i, data in enumerate(stream):
            proto.data_received(data)
            if i == 0:
                proto.complete(app.parked[0], (200, b"parked", JSON_HEADERS))
        outputs.append((bytes(transport.out), transport.closed, dict(app.counts)))
        request.refresh_date()
    assert outputs[0] == outputs[1]
    assert outputs[0][0].count(b"HTTP/1.1 ") == 11 and outputs[0][1]


# ---- query strings ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", {}),
        ("cid=7", {"cid": "7"}),
        ("cid=7&limit=1&visibility=0.5", {"cid": "7", "limit": "1", "visibility": "0.5"}),
        ("a=1&&b=2&", {"a": "1", "b": "2"}),  # empty parts are skipped
        ("&a", {"a": ""}),  # no "=": an empty value
        ("a=1=2&=x", {"a": "1=2", "": "x"}),  # split at the first "="
        ("a=1&a=2", None),  # a name twice: the application's own parse says so
        ("a=%31", None),  # something to decode
        ("a=1+2", None),
    ],
)
def test_split_query(query: str, expected: dict[str, str] | None) -> None:
    assert split_query(query) == expected


class Hints(QueueNames):
    """Records the targets the protocol names queues of."""

    def __init__(self) -> None:
        self.hinted: list[tuple[bytes, int]] = []

    def prefetch_name(self, data: bytes, start: int) -> None:
        self.hinted.append((data, start))


class HintApp(StubApp):
    """A StubApp whose store takes hints (App.queue_hint)."""

    def __init__(self) -> None:
        super().__init__()
        self.names = Hints()
        self.hinted = self.names.hinted
        self.queue_hint = ((b"/v1/queues/", b"/v2/y/", b"/v1/x/"), self.names)


def test_the_target_of_a_v1_request_is_hinted_as_it_arrives(
    loop: asyncio.AbstractEventLoop,
) -> None:
    app = HintApp()
    proto = HttpProtocol(app, Owner(), Limits())
    transport = FakeTransport()
    proto.connection_made(transport)
    # Before its head: the hint comes while the request is still incomplete.
    proto.data_received(b"POST /v1/queues/a/messages HTTP/1.1\r\nContent-Length: 2\r\n")
    assert app.hinted == [(b"/v1/queues/a/messages", 11)]
    assert b"HTTP/1.1" not in bytes(transport.out)
    proto.data_received(b"\r\nhi")
    assert bytes(transport.out).startswith(b"HTTP/1.1 200")
    # Pipelined: each request's own target, by the prefix it begins with; others none.
    proto.data_received(
        b"GET /v1/x/b?cid=1 HTTP/1.1\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n"
        b"GET /v1/publish HTTP/1.1\r\n\r\nGET /v1/queues/c HTTP/1.1\r\n\r\n"
        b"GET /v2/y/z HTTP/1.1\r\n\r\n"  # outside /v1/: not hinted
    )
    assert app.hinted[1:] == [(b"/v1/x/b?cid=1", 6), (b"/v1/queues/c", 11)]
    # A request line cut in two: hinted once, with what had arrived (a hint may be wrong,
    # never harmful), and answered whole.
    proto.data_received(b"GET /v1/queues/dd")
    proto.data_received(b"d/messages HTTP/1.1\r\n\r\n")
    assert app.hinted[3:] == [(b"/v1/queues/dd", 11)]
    assert bytes(transport.out).count(b"HTTP/1.1 200") == 7
    assert b"GET /v1/queues/ddd/messages? " in bytes(transport.out)


def test_connections_share_the_apps_hint_prefixes(loop: asyncio.AbstractEventLoop) -> None:
    """A connection keeps the app's own tuple of prefixes when all are under /v1/ (none
    of its own: memory per idle connection), and a filtered one otherwise; either way it
    hints only /v1/ targets (the test above)."""
    app = HintApp()
    app.queue_hint = ((b"/v1/queues/", b"/v1/x/"), app.names)
    first = HttpProtocol(app, Owner(), Limits())
    second = HttpProtocol(app, Owner(), Limits())
    assert first._hint_prefixes is app.queue_hint[0]
    assert second._hint_prefixes is app.queue_hint[0]
    mixed = HintApp()
    proto = HttpProtocol(mixed, Owner(), Limits())
    assert proto._hint_prefixes == (b"/v1/queues/", b"/v1/x/")
