"""Shared fixtures of the server tests: real ``wonderq serve`` processes and a raw HTTP client.

The server runs through tests/_server.py (the console script on an ephemeral loopback port,
its port read from the log, stopped by PID). :class:`RawConnection` speaks HTTP/1.1 over a
plain socket, for what real clients never send: pipelines, byte-at-a-time requests, broken
framing.

Shared helpers: :func:`wait_until` (wait on observable state with a deadline, never a fixed
sleep), :func:`waiting_receives` (the server's parked long polls, from ``/metrics``),
:func:`require_program` (a system program a test drives: skip with the install hint, or fail
under ``WONDERQ_REQUIRE_ALL=1``), and the session's random seed: ``WONDERQ_TEST_SEED``
replays a run (the ``rng`` fixture and every Hypothesis test draw from it; the seed is printed
in the header and again after a failure). ``WONDERQ_HYPOTHESIS_PROFILE=ci`` makes the
Hypothesis tests derandomized (the same examples on every run).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from _server import ServerProcess, get, running_server
from hypothesis import HealthCheck, settings

T = TypeVar("T")

# ---- the session's seed -----------------------------------------------------------------------
# One seed per run, printed; WONDERQ_TEST_SEED replays it. Hypothesis draws from it too (its
# global seed), so a failing example found at random comes back with the same variable.
_seed_env = os.environ.get("WONDERQ_TEST_SEED")
SEED = int(_seed_env) if _seed_env else random.randrange(2**32)
# pytest-xdist's workers start after this module is imported in the controller and inherit its
# environment: they all take the controller's seed, so one printed seed replays the whole run.
os.environ["WONDERQ_TEST_SEED"] = str(SEED)

# print_blob: a failure also prints the @reproduce_failure blob. "ci": the same examples on
# every run (derandomize), for a CI that must not fail at random on a commit that passed.
settings.register_profile("default", print_blob=True)
settings.register_profile(
    "ci", print_blob=True, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("WONDERQ_HYPOTHESIS_PROFILE", "default"))


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("hypothesis_seed", None) is None:
        from hypothesis import core

        core.global_force_seed = SEED  # type: ignore[assignment]


#: The store the server-level tests run against: ``memory`` (the default), ``durable``,
#: ``redis`` or ``redis-cluster``, set together with WONDERQ_SERVER_CMD
#: (tests/wonderq_on_disk.py, tests/wonderq_on_redis.py, tests/wonderq_on_redis_cluster.py;
#: .ci/run runs the API tests on each).
TEST_STORE = os.environ.get("WONDERQ_TEST_STORE", "memory")

#: The stores a ``not_on`` name covers: what holds apart from Redis holds apart from a Redis
#: Cluster too (the same RedisStore); ``not_on("redis-cluster")`` is the cluster alone.
_COVERED = {"redis": ("redis", "redis-cluster")}


def pytest_runtest_setup(item: pytest.Item) -> None:
    """``@pytest.mark.not_on("redis", reason=...)``: a test of behaviour that store does not
    share (each says why; docs/SCALEOUT.md lists the differences)."""
    for mark in item.iter_markers("not_on"):
        if any(TEST_STORE in _COVERED.get(store, (store,)) for store in mark.args):
            pytest.skip(f"not on the {TEST_STORE} store: {mark.kwargs.get('reason', '')}")


@pytest.fixture(scope="session", autouse=True)
def _redis_clusters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """With WONDERQ_TEST_STORE=redis-cluster: two Redis Clusters started once for the run,
    for tests/wonderq_on_redis_cluster.py to lease one per test server (two run at once at
    most: a module's server and a test's own); stopped by PID at the end."""
    if TEST_STORE != "redis-cluster":
        yield
        return
    from _redis import cluster_pool

    with cluster_pool(tmp_path_factory.mktemp("clusters"), 2) as pool:
        os.environ["WONDERQ_TEST_CLUSTERS"] = str(pool)
        try:
            yield
        finally:
            del os.environ["WONDERQ_TEST_CLUSTERS"]


def pytest_report_header(config: pytest.Config) -> str:
    return f"WONDERQ_TEST_SEED={SEED} (set it to replay this run's random choices)"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if exitstatus == pytest.ExitCode.TESTS_FAILED:
        terminalreporter.write_line(f"random choices of this run: WONDERQ_TEST_SEED={SEED}")


@pytest.fixture
def rng() -> random.Random:
    """A Random seeded from the session's seed (printed, so a failure shows it)."""
    print(f"WONDERQ_TEST_SEED={SEED}")
    return random.Random(SEED)


# ---- waiting on observable state --------------------------------------------------------------


def wait_until(
    predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.005, what: str = ""
) -> T:
    """The first truthy value of ``predicate()``, polled until ``timeout`` seconds have passed
    (then an AssertionError naming ``what``). For state a test can observe (a metric, a
    file, a response), instead of a sleep that is too short on a loaded machine and too long
    everywhere else."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


_WAITING = re.compile(rb"^wonderq_waiting_receives (\S+)$", re.M)


def waiting_receives(srv: ServerProcess) -> int:
    """The server's parked long polls (``wonderq_waiting_receives`` of ``/metrics``)."""
    found = _WAITING.search(get(srv, "/metrics").body)
    assert found is not None, "/metrics has no wonderq_waiting_receives"
    return int(float(found.group(1)))


def wait_parked(srv: ServerProcess, n: int, timeout: float = 10.0) -> None:
    """Wait until exactly ``n`` receives are parked on ``srv``."""
    wait_until(lambda: waiting_receives(srv) == n, timeout, 0.01, f"{n} parked receives")


# ---- system programs --------------------------------------------------------------------------


def require_program(name: str, install_hint: str) -> str:
    """The path of the program ``name``; if it is missing, skip the test with
    ``install_hint`` (``"apt-get install -y redis-server"``), or fail it when
    ``WONDERQ_REQUIRE_ALL=1`` (CI, where every test must run)."""
    path = shutil.which(name)
    if path is not None:
        return path
    message = f"{name} is not installed; install it with: {install_hint}"
    if os.environ.get("WONDERQ_REQUIRE_ALL") == "1":
        pytest.fail(f"{message} (WONDERQ_REQUIRE_ALL=1)", pytrace=False)
    pytest.skip(message)


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
