"""CI smoke test of bench/locustfile.py: a few seconds of every user class, headless, against a
real ``wonderq serve --port 0`` that the test starts and stops by PID. Any failed request fails
the test, so the locustfile cannot rot as the API moves.

Locust runs as its own process: importing it here would monkey-patch this interpreter (gevent)
under every other test.
"""

from __future__ import annotations

import csv
import http.client
import importlib.util
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = ROOT / "bench" / "locustfile.py"
LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")

pytestmark = pytest.mark.timeout(120)


def _server_command() -> list[str]:
    override = os.environ.get("WONDERQ_SERVER_CMD")
    if override:
        return shlex.split(override)
    beside = Path(sys.executable).with_name("wonderq")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("wonderq")
    return [found] if found else [sys.executable, "-m", "wonderq"]


class Server:
    """``wonderq serve --port 0``; the port comes from its 'listening on' log line."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [*_server_command(), "serve", "--host", "127.0.0.1", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
        )
        self.port = 0
        found = threading.Event()

        def read() -> None:  # keeps draining so the server never blocks on a full pipe
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line)
                m = LISTENING.search(line)
                if m and not self.port:
                    self.port = int(m.group(1))
                    found.set()
            found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(30) or not self.port:
            self.stop()
            pytest.fail("wonderq serve did not log its port:\n" + "".join(self.lines[-30:]))

    def status(self, method: str, path: str, body: bytes | None = None) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            return r.status
        finally:
            conn.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def server():
    s = Server()
    try:
        yield s
    finally:
        s.stop()


def test_every_user_class_runs_without_a_failure(server: Server, tmp_path: Path) -> None:
    # find_spec, not importorskip: importing locust would gevent-patch this interpreter
    if importlib.util.find_spec("locust") is None:
        pytest.skip("locust is not installed (pip install -e '.[test]')")
    classes = ["Producer", "Consumer", "CrashingConsumer", "LongPollConsumer"]
    expected = {"POST /v1/publish", "GET /v1/consumer", "DELETE /v1/consumer"}
    # The batch routes arrive with the named-queue API; use them as soon as the server has them.
    if server.status("POST", "/v1/queues/default/batch", b'["smoke"]') == 201:
        classes += ["BatchProducer", "BatchConsumer"]
        expected |= {"POST /v1/queues/{q}/batch", "GET /v1/queues/{q}/messages"}
    prefix = tmp_path / "smoke"
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless"]
    cmd += ["-u", str(2 * len(classes)), "-r", str(2 * len(classes)), "-t", "5s"]
    cmd += ["--host", f"http://127.0.0.1:{server.port}", "--csv", str(prefix), "--only-summary"]
    cmd += ["--wq-wait", "1", *classes]
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=90, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"locust exited {proc.returncode}:\n{output[-4000:]}"
    assert time.monotonic() - started < 60

    with open(f"{prefix}_stats.csv", newline="") as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    total = rows["Aggregated"]
    assert int(total["Request Count"]) > 0, output[-4000:]
    assert int(total["Failure Count"]) == 0, output[-4000:]
    missing = {name for name in expected if int(rows.get(name, {}).get("Request Count", 0)) == 0}
    assert not missing, f"no requests for {missing}:\n{output[-4000:]}"
    failures = Path(f"{prefix}_failures.csv")
    if failures.exists():
        assert len(failures.read_text().strip().splitlines()) <= 1, failures.read_text()
