"""Real Redis servers for the tests: standalone and a Redis Cluster, started on free loopback
ports in a temporary directory and stopped by the PIDs we started (never by name).

``redis-server`` and ``redis-cli`` come from Debian's packages; without them the tests skip
with the command to install them, unless ``WONDERQ_REQUIRE_ALL=1`` (then they fail).
Fixtures (pytest, session-scoped where state can be reset with FLUSHALL):

* ``redis_server``  one standalone server (``RedisProcess``), flushed by ``redis_url``.
* ``redis_url``     ``redis://127.0.0.1:PORT/0`` of that server, empty for each test.
* ``redis_cluster`` three primaries made with ``redis-cli --cluster create`` (``Cluster``).

:func:`cluster_pool` starts clusters once for a whole run of the server-level tests on a
cluster (tests/wonderq_on_redis_cluster.py leases one per test server).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

INSTALL = "install it with: apt-get install -y redis-server redis-tools"


def require_program(name: str, how: str = INSTALL) -> str:
    """The program's path; skip (or fail under WONDERQ_REQUIRE_ALL=1) if it is missing."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed; {how}"
        if os.environ.get("WONDERQ_REQUIRE_ALL") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def require_redis_client() -> None:
    try:
        import hiredis  # noqa: F401
        import redis  # noqa: F401
    except ImportError:
        message = "the redis extra is missing; install it with: pip install -e '.[redis]'"
        if os.environ.get("WONDERQ_REQUIRE_ALL") == "1":
            pytest.fail(message)
        pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port_pair() -> int:
    """A port p with p + 10000 also free (a cluster node listens on both)."""
    for _ in range(200):
        p = free_port()
        if p + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p + 10000))
            except OSError:
                continue
        return p
    raise RuntimeError("no free port pair")


def ping(port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            answer = s.recv(64)
            return answer.startswith((b"+PONG", b"-NOAUTH"))  # up (with a password: NOAUTH)
    except OSError:
        return False


def _die_with_parent() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class RedisProcess:
    """One redis-server we started (``--port``, no persistence unless asked). With
    ``die_with_parent`` it is killed when the thread that started it ends (PR_SET_PDEATHSIG),
    for a short-lived process that must not leave it behind even if it is SIGKILLed."""

    def __init__(
        self,
        directory: Path,
        *extra: str,
        port: int | None = None,
        die_with_parent: bool = False,
    ) -> None:
        self.port = port or free_port()
        self.dir = directory / str(self.port)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.extra = list(extra)
        self.die_with_parent = die_with_parent
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> RedisProcess:
        exe = require_program("redis-server")
        cmd = [
            exe,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--logfile", str(self.dir / "redis.log"),
            "--repl-diskless-sync-delay", "0",  # a replica syncs at once, not after 5 s
            *self.extra,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if self.die_with_parent else None,
        )
        deadline = time.monotonic() + timeout
        while not ping(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.log()[-2000:]}")
            if time.monotonic() > deadline:
                self.stop()  # ours: never left running behind a failed start
                raise RuntimeError(f"redis-server did not answer: {self.log()[-2000:]}")
            time.sleep(0.02)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        try:
            return (self.dir / "redis.log").read_text()
        except OSError:
            return ""

    def client(self) -> object:
        import redis

        return redis.Redis(port=self.port, socket_timeout=10)

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def pause(self) -> None:
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGCONT)
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


class Cluster:
    """A Redis Cluster on loopback: ``primaries`` primaries and ``replicas`` replicas each."""

    def __init__(
        self,
        directory: Path,
        primaries: int = 3,
        replicas: int = 0,
        die_with_parent: bool = False,
    ) -> None:
        self.directory = directory
        self.nodes: list[RedisProcess] = []
        self.primaries = primaries
        self.replicas = replicas
        self.die_with_parent = die_with_parent

    def start(self) -> Cluster:
        cli = require_program("redis-cli")
        for _ in range(self.primaries * (1 + self.replicas)):
            node = RedisProcess(
                self.directory,
                "--cluster-enabled", "yes",
                "--cluster-node-timeout", "1000",
                "--cluster-config-file", "nodes.conf",
                "--cluster-replica-validity-factor", "0",
                "--cluster-require-full-coverage", "no",
                port=free_port_pair(),
                die_with_parent=self.die_with_parent,
            )  # fmt: skip
            self.nodes.append(node)
            node.start()
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        out = subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", str(self.replicas),
             "--cluster-yes"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if out.returncode != 0:
            self.stop()
            raise RuntimeError(f"redis-cli --cluster create failed: {out.stdout}{out.stderr}")
        self.wait_ok()
        if self.replicas:
            self.wait_replicas_synced()
        return self

    def wait_replicas_synced(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            infos = [n.client().info("replication") for n in self.nodes]  # type: ignore[attr-defined]
            linked = [
                i for i in infos if i.get("role") == "slave" and i.get("master_link_status") == "up"
            ]
            if len(linked) == self.primaries * self.replicas:
                return
            if time.monotonic() > deadline:
                raise RuntimeError("the replicas did not sync")
            time.sleep(0.1)

    def wait_ok(self, timeout: float = 20.0) -> None:
        """Until every live node says cluster_state:ok and all slots are served."""
        deadline = time.monotonic() + timeout
        while True:
            ok = True
            for node in self.nodes:
                if node.proc is None or node.proc.poll() is not None:
                    continue
                try:
                    info = node.client().cluster("info")  # type: ignore[attr-defined]
                except Exception:
                    ok = False
                    break
                if (
                    info.get("cluster_state") != "ok"
                    or int(info.get("cluster_slots_ok", 0)) != 16384
                ):
                    ok = False
                    break
            if ok:
                return
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not become ok")
            time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def node_for_slot(self, slot: int) -> RedisProcess:
        for node in self.nodes:
            if node.proc is None or node.proc.poll() is not None:
                continue
            client = node.client()
            for lo, hi, primary, *_ in client.execute_command("CLUSTER SLOTS"):  # type: ignore[attr-defined]
                if lo <= slot <= hi:
                    port = int(primary[1])
                    return next(n for n in self.nodes if n.port == port)
        raise RuntimeError(f"no node serves slot {slot}")

    def replicas_of(self, primary: RedisProcess) -> list[RedisProcess]:
        out = []
        for node in self.nodes:
            if node is primary or node.proc is None or node.proc.poll() is not None:
                continue
            info = node.client().info("replication")  # type: ignore[attr-defined]
            if info.get("role") == "slave" and int(info.get("master_port", 0)) == primary.port:
                out.append(node)
        return out

    def flush(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                with contextlib.suppress(Exception):  # a replica refuses writes
                    node.client().flushall()  # type: ignore[attr-defined]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def describe(self) -> dict[str, object]:
        """What tests/wonderq_on_redis_cluster.py needs: the URL and the primaries' ports."""
        return {"url": self.url, "primaries": [n.port for n in self.nodes]}


@contextlib.contextmanager
def cluster_pool(directory: Path, size: int) -> Iterator[Path]:
    """``size`` clusters of three primaries, started at once (about 2 s, in parallel) and
    stopped by PID when the block ends, also after a failure. Each is described by
    ``<pool>/<i>.json`` (:meth:`Cluster.describe`); tests/wonderq_on_redis_cluster.py locks
    one (``flock``) for the life of its server and flushes it first, so every test server
    sees empty queues as with the memory store, without a 2 s cluster start of its own."""
    require_program("redis-server")
    require_program("redis-cli")
    pool = directory / "pool"
    pool.mkdir(parents=True)
    clusters = [Cluster(directory / f"cluster-{i}") for i in range(size)]
    try:
        with ThreadPoolExecutor(size) as starting:  # no die_with_parent: these threads end
            list(starting.map(Cluster.start, clusters))  # raises the first failure
        for i, cluster in enumerate(clusters):
            (pool / f"{i}.json").write_text(json.dumps(cluster.describe()))
        yield pool
    finally:
        for cluster in clusters:
            cluster.stop()


@pytest.fixture(scope="session")
def redis_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="wonderq-redis-") as d:
        yield Path(d)


@pytest.fixture(scope="session")
def redis_server(redis_dir: Path) -> Iterator[RedisProcess]:
    require_redis_client()
    server = RedisProcess(redis_dir).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisProcess) -> str:
    redis_server.client().flushall()  # type: ignore[attr-defined]
    return redis_server.url


@pytest.fixture(scope="session")
def redis_cluster(redis_dir: Path) -> Iterator[Cluster]:
    require_redis_client()
    cluster = Cluster(redis_dir / "cluster").start()
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster_url(redis_cluster: Cluster) -> str:
    redis_cluster.flush()
    return redis_cluster.url
