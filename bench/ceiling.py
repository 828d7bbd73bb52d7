"""The Python ceiling: the fastest answer uvloop + httptools can give, with no queue behind it.

Every request, whatever its method, path or body, is answered ``200`` with a fixed small JSON
body, ``Content-Length``, a cached ``Date`` and keep-alive. WonderQ parses the same bytes with the
same parser on the same event loop and must also do real work, so its rate divided by this one
says how much the queue itself costs (see bench/README.md).

Pipelining-safe: httptools hands over complete messages in arrival order; each answer is
appended to an output buffer from ``on_message_complete`` and the buffer is written once per
``data_received``, so answers leave in request order and 16 pipelined requests cost one send.

The reading ceiling (``--reading``) also takes what any real server must: the URL, every
header and the body, through httptools' ``on_url``, ``on_header`` and ``on_body`` callbacks
(httptools calls only the callbacks a protocol defines, so the plain ceiling skips them). It
is the fair ceiling for pipelined requests, where the system calls are shared by 16 requests
and those per-request Python calls are most of what is left.

    python bench/ceiling.py --port 0     # prints "ceiling listening on http://127.0.0.1:PORT"
    python bench/ceiling.py --port 0 --reading
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from email.utils import formatdate

import httptools
import uvloop

BODY = b'{"ok":true}'
# Headers a WonderQ answer also carries, so both write about the same bytes per response.
HEAD_TEMPLATE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Server: ceiling\r\n"
    b"Content-Type: application/json\r\n"
    b"Cache-Control: no-store\r\n"
    b"Content-Length: %d\r\n"
    b"Date: %s\r\n"
)


class Clock:
    """Holds the prebuilt response; the Date header is refreshed once a second, not per request."""

    def __init__(self) -> None:
        self.keep_alive = b""
        self.close = b""
        self.refresh()

    def refresh(self) -> None:
        date = formatdate(time.time(), usegmt=True).encode()
        head = HEAD_TEMPLATE % (len(BODY), date)
        self.keep_alive = head + b"\r\n" + BODY
        self.close = head + b"Connection: close\r\n\r\n" + BODY

    def tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self.refresh()
        loop.call_later(1.0, self.tick, loop)


class CeilingProtocol(asyncio.Protocol):
    """One connection: feed bytes to httptools, answer each complete request at once."""

    __slots__ = ("clock", "closing", "out", "parser", "transport")

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.out: list[bytes] = []  # answers to the requests parsed from the current read
        self.closing = False  # a request asked for Connection: close

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:  # also covers HttpParserUpgrade
            self._flush()
            self._fail()
            return
        self._flush()

    def on_message_complete(self) -> None:
        if self.closing:
            return
        if self.parser.should_keep_alive():
            self.out.append(self.clock.keep_alive)
        else:
            self.out.append(self.clock.close)
            self.closing = True

    def _flush(self) -> None:
        transport = self.transport
        if transport is None or not self.out:
            return
        transport.write(self.out[0] if len(self.out) == 1 else b"".join(self.out))
        self.out.clear()
        if self.closing:
            transport.close()
            self.transport = None

    # Back-pressure: stop reading while the kernel buffer is full, so a client that pipelines
    # without reading cannot make us queue answers without bound.
    def pause_writing(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def _fail(self) -> None:
        if self.transport is not None:
            self.transport.write(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            self.transport.close()
            self.transport = None


class ReadingProtocol(CeilingProtocol):
    """The reading ceiling: keeps the request's URL, headers and body until it is answered.

    Each callback does the least a server can do with what it is handed: keep a reference.
    (The pieces of a URL or body that arrives in fragments are joined.)"""

    __slots__ = ("body", "headers", "url")

    def __init__(self, clock: Clock) -> None:
        self.url = b""
        self.headers: list[bytes] = []  # name, value, name, value, ...
        self.body = b""
        super().__init__(clock)  # last: the parser looks the callbacks up when it is made

    def on_url(self, url: bytes) -> None:
        self.url += url  # b"" + url is url itself: no copy unless the line came in pieces

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers += (name, value)

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.url = self.body = b""
        self.headers = []
        CeilingProtocol.on_message_complete(self)


async def serve(host: str, port: int, reading: bool = False) -> None:
    loop = asyncio.get_running_loop()
    clock = Clock()
    loop.call_later(1.0, clock.tick, loop)
    protocol = ReadingProtocol if reading else CeilingProtocol
    server = await loop.create_server(
        lambda: protocol(clock), host, port, backlog=4096, reuse_address=True
    )
    bound = server.sockets[0].getsockname()[1]
    print(f"ceiling listening on http://{host}:{bound}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    await server.wait_closed()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081, help="0 picks a free port")
    parser.add_argument(
        "--reading", action="store_true", help="also take the URL, headers and body"
    )
    args = parser.parse_args(argv)
    uvloop.run(serve(args.host, args.port, args.reading))
    return 0


if __name__ == "__main__":
    sys.exit(main())
