"""CI smoke test of bench/locustfile.py: a few seconds of every user class, headless, against a
real ``wonderq serve --port 0`` that the test starts and stops by PID. Any failed request fails
the test, so the locustfile cannot rot as the API moves.

Locust runs as its own process: importing it here would monkey-patch this interpreter (gevent)
under every other test.
"""

from __future__ import annotations

import csv
import importlib.util
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _server import ServerProcess, request, running_server

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = ROOT / "bench" / "locustfile.py"

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    with running_server() as srv:
        yield srv


@pytest.mark.slow
def test_every_user_class_runs_without_a_failure(server: ServerProcess, tmp_path: Path) -> None:
    # find_spec, not importorskip: importing locust would gevent-patch this interpreter
    if importlib.util.find_spec("locust") is None:
        pytest.skip("locust is not installed (pip install -e '.[test]')")
    classes = ["Producer", "Consumer", "CrashingConsumer", "LongPollConsumer"]
    expected = {"POST /v1/publish", "GET /v1/consumer", "DELETE /v1/consumer"}
    # The batch routes arrive with the named-queue API; use them as soon as the server has them.
    if request(server, "POST", "/v1/queues/default/batch", b'["smoke"]').status == 201:
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
