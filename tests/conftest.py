"""Shared fixtures of the server tests: real ``wonderq serve`` processes and a raw HTTP client.

The server runs through tests/_server.py (the console script on an ephemeral loopback port,
its port read from the log, stopped by PID). :class:`RawConnection` speaks HTTP/1.1 over a
plain socket, for what real clients never send: pipelines, byte-at-a-time requests, broken
framing.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from _server import ServerProcess, running_server

# Short timeouts so the timeout tests are quick; long enough for a loaded CI machine.
FAST_TIMEOUT_FLAGS = ("--header-timeout", "0.5", "--idle-timeout", "1")


@dataclass
class RawResponse:
    """One parsed response: status, headers (lower-case names, last wins) and body."""

    status: int
    reason: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    raw_headers: list[tuple[str, str]] = field(default_factory=list)

    def json(self) -> object:
        import json

        return json.loads(self.body)


class RawConnection:
    """A socket with an HTTP/1.1 response reader (Content-Length framing, 1xx, 204)."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_slowly(self, data: bytes, pause_s: float = 0.0) -> None:
        """One byte per send() (TCP_NODELAY is on, so mostly one byte per segment)."""
        for i in range(len(data)):
            self.sock.sendall(data[i : i + 1])
            if pause_s:
                time.sleep(pause_s)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        if not chunk:
            return False
        self.buf += chunk
        return True

    def read_response(self, head_only: bool = False) -> RawResponse:
        """The next response (interim 1xx ones included); EOFError if the server closed."""
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise EOFError(f"connection closed; unparsed: {self.buf[:200]!r}")
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        version, status, reason = [*lines[0].split(" ", 2), ""][:3]
        assert version == "HTTP/1.1", lines[0]
        resp = RawResponse(int(status), reason)
        for line in lines[1:]:
            name, _, value = line.partition(":")
            resp.headers[name.strip().lower()] = value.strip()
            resp.raw_headers.append((name, value.strip()))
        if resp.status < 200 or resp.status == 204 or head_only:
            return resp
        length = int(resp.headers["content-length"])
        while len(self.buf) < length:
            if not self._fill():
                raise EOFError("connection closed inside a body")
        resp.body, self.buf = self.buf[:length], self.buf[length:]
        return resp

    def closed_by_server(self, timeout: float = 5.0) -> bool:
        """True if the server closes (EOF or reset) within ``timeout``, draining any data."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False


def http_request(
    method: str,
    target: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    version: str = "HTTP/1.1",
) -> bytes:
    """The bytes of one request with Host and (for a body) Content-Length."""
    lines = [f"{method} {target} {version}", "Host: test"]
    hdrs = dict(headers or {})
    if body and "Content-Length" not in hdrs and "Transfer-Encoding" not in hdrs:
        hdrs["Content-Length"] = str(len(body))
    lines += [f"{k}: {v}" for k, v in hdrs.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@pytest.fixture(scope="module")
def wq() -> Iterator[ServerProcess]:
    """A server shared by a test module (state leaks between its tests: use unique cids)."""
    with running_server() as srv:
        yield srv


@pytest.fixture
def fresh() -> Iterator[ServerProcess]:
    """A server of its own, for tests that need the queue ``default`` empty."""
    with running_server("--visibility-timeout", "30") as srv:
        yield srv


@pytest.fixture
def raw(wq: ServerProcess) -> Iterator[Callable[..., RawConnection]]:
    """Opens raw connections to ``wq``; all closed at the end of the test."""
    opened: list[RawConnection] = []

    def connect(port: int | None = None, timeout: float = 10.0) -> RawConnection:
        conn = RawConnection(port or wq.port, timeout)
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        conn.close()
