"""``wonderq`` on a Redis Cluster of three primaries: the server-level tests against RedisStore
on a cluster.

    WONDERQ_TEST_STORE=redis-cluster \\
    WONDERQ_SERVER_CMD="python tests/wonderq_on_redis_cluster.py" \\
        python -m pytest tests/test_api_seed.py

tests/_server.py starts this instead of ``wonderq``; it runs ``wonderq <args> --backend
redis+cluster://...``, passes signals on, and when the server exits lets the cluster go.

Where the cluster comes from: starting one takes about 2 s (``redis-cli --cluster create``,
then the nodes agree), more than the test it would serve. So with
``WONDERQ_TEST_STORE=redis-cluster`` tests/conftest.py starts two once per run
(``cluster_pool`` in tests/_redis.py) and names their directory in ``WONDERQ_TEST_CLUSTERS``;
this wrapper locks a free one (``flock``, held until this process ends, also if it is
killed), empties every primary (``FLUSHALL``, ``maxmemory`` back to 0) so the server sees
no queue of an earlier one, as with the memory store. If none is free (a third server
running at once) or there is no pool, it starts a cluster of its own and stops it at exit.
Every child dies with this process (PR_SET_PDEATHSIG), also if it is killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

POOL_ENV = "WONDERQ_TEST_CLUSTERS"
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def command(port: int, *args: str) -> bytes:
    """One command to the Redis node on ``port``; its one-line answer (``+OK``)."""
    payload = f"*{len(args)}\r\n".encode() + b"".join(
        f"${len(a.encode())}\r\n{a}\r\n".encode() for a in args
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(payload)
        answer = b""
        while not answer.endswith(b"\r\n"):
            chunk = conn.recv(4096)
            if not chunk:
                break
            answer += chunk
    if not answer.startswith(b"+"):
        raise RuntimeError(f"Redis on port {port} answered {args[0]} with {answer!r}")
    return answer


def lease_pooled(pool: Path) -> tuple[int, str, list[int]] | None:
    """A free cluster of the pool, locked for the life of this process: (lock fd, URL,
    primaries' ports); None if every one is in use."""
    for path in sorted(pool.glob("*.json")):
        fd = os.open(path, os.O_RDONLY)  # not inherited by the server (PEP 446)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        described = json.loads(path.read_text())
        return fd, str(described["url"]), [int(p) for p in described["primaries"]]
    return None


@contextlib.contextmanager
def cluster() -> Iterator[str]:
    """The URL of an empty cluster for one server: a pooled one, else one of our own."""
    pool = os.environ.get(POOL_ENV)
    leased = lease_pooled(Path(pool)) if pool else None
    if leased is not None:
        fd, url, primaries = leased
        try:
            for port in primaries:
                command(port, "FLUSHALL")
                command(port, "CONFIG", "SET", "maxmemory", "0")
            yield url
        finally:
            os.close(fd)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _redis import Cluster

    with tempfile.TemporaryDirectory(prefix="wq-on-cluster-") as tmp:
        own = Cluster(Path(tmp), die_with_parent=True)
        try:
            own.start()
            yield own.url
        finally:
            own.stop()


def main() -> int:
    for program in ("redis-server", "redis-cli"):
        if shutil.which(program) is None:
            sys.stderr.write(f"{program} is missing: apt-get install -y redis-server redis-tools\n")
            return 1
    wonderq = Path(sys.executable).with_name("wonderq")
    cmd = [str(wonderq)] if wonderq.exists() else [sys.executable, "-m", "wonderq"]
    env = {k: v for k, v in os.environ.items() if k != POOL_ENV}
    with cluster() as url:
        server = subprocess.Popen(
            [*cmd, *sys.argv[1:], "--backend", url], env=env, preexec_fn=_die_with_parent
        )
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, lambda n, _f: server.send_signal(n))
        return server.wait()


if __name__ == "__main__":
    sys.exit(main())
