"""bench/instructions.py's workloads still run: each feeds its requests to a real protocol,
router and engine over a fake transport and checks the answers (a 201 for a publish, the
deleted flag of a delete, no failed acks), so a change to the server that breaks what a
workload sends fails here rather than in the next benchmark run. Valgrind is not needed:
this runs the feed itself, with few requests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))
import instructions  # noqa: E402

pytestmark = pytest.mark.timeout(120)

# Requests (messages for batch workloads) per feed: enough for every workload's own steps
# (a batch of 100, 16 pipelined, a receive + delete pair), few enough for the big bodies.
COUNT = {"big64k": 8, "big64k_recv": 8, "big1m": 3, "big1m_recv": 3}


@pytest.mark.parametrize("workload", sorted(instructions.WORKLOADS))
def test_the_workload_runs_and_is_answered(workload: str) -> None:
    n = COUNT.get(workload, 400)
    done = subprocess.run(
        [sys.executable, str(BENCH / "instructions.py"), "--feed", workload, str(n)],
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_an_unknown_workload_is_refused() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / "instructions.py"), "--feed", "no_such_workload", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "unknown workload" in done.stderr
