"""``wonderq`` on a redis-server of its own: the server-level tests against RedisStore.

    WONDERQ_SERVER_CMD="python tests/wonderq_on_redis.py" python -m pytest tests/test_api_seed.py

tests/_server.py starts this instead of ``wonderq``; it starts a fresh redis-server on a free
loopback port (so every test server has its own, empty queues, as with the memory store),
runs ``wonderq <args> --backend redis://...``, passes signals on, and stops Redis when the
server exits. Both children die with this process (PR_SET_PDEATHSIG), also if it is killed.
"""

from __future__ import annotations

import ctypes
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def main() -> int:
    exe = shutil.which("redis-server")
    if exe is None:
        sys.stderr.write("redis-server is missing: apt-get install -y redis-server redis-tools\n")
        return 1
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="wq-on-redis-") as tmp:
        redis = subprocess.Popen(
            [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
             "no", "--dir", tmp],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2) as c:
                        c.sendall(b"PING\r\n")
                        if c.recv(16).startswith(b"+PONG"):
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    sys.stderr.write("redis-server did not start\n")
                    return 1
                time.sleep(0.02)
            wonderq = Path(sys.executable).with_name("wonderq")
            cmd = [str(wonderq)] if wonderq.exists() else [sys.executable, "-m", "wonderq"]
            server = subprocess.Popen(
                [*cmd, *sys.argv[1:], "--backend", f"redis://127.0.0.1:{port}/0"],
                preexec_fn=_die_with_parent,
            )
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(signum, lambda n, _f: server.send_signal(n))
            return server.wait()
        finally:
            redis.terminate()
            redis.wait(10)


if __name__ == "__main__":
    sys.exit(main())
