"""What the scale benchmarks share (bench/scale.py, connections.py, bigmsg.py, soak.py):
starting servers through bench/harness.py (pinned, stopped by PID), pipelined admin
requests over one socket, a scrape of ``/metrics``, httpgen runs and medians of
interleaved repetitions. Loopback only; every count and duration is bounded."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness
import httpload


def raise_fd_limit() -> int:
    """Soft open-file limit up to the hard one (a load script holds thousands of sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Bench:
    """Launcher + meter with the harness's pinning; logs in a temporary directory."""

    def __init__(self, duration: float) -> None:
        self.server_pin, self.gen_pin, self.pinning = harness.cpu_plan()
        self.logdir = Path(tempfile.mkdtemp(prefix="wonderq-scale-logs-"))
        self.launcher = harness.Launcher(self.server_pin, self.logdir)
        self.meter = harness.Meter(self.gen_pin, duration)
        self.httpgen = str(harness.httpgen())

    @contextlib.contextmanager
    def wonderq(self, *flags: str) -> Iterator[harness.Server]:
        with harness.running(lambda: self.launcher.wonderq(*flags)) as server:
            yield server

    def gen(
        self,
        server: harness.Server,
        *args: str,
        conns: int = 64,
        name: str = "x",
        duration: float | None = None,
    ) -> dict:
        """One httpgen run against ``server``, of the meter's duration unless given."""
        seconds = self.meter.duration if duration is None else duration
        cmd = [self.httpgen, "--port", str(server.port), "-c", str(conns)]
        cmd += ["--duration", str(seconds), "--name", name, *args]
        meter = self.meter if duration is None else harness.Meter(self.meter.gen_pin, seconds)
        return meter.measure(server, cmd)


def pipeline(port: int, requests: list[bytes], window: int = 256) -> list[httpload.HttpReply]:
    """Send ``requests`` on one connection, ``window`` in flight at a time; the answers."""
    replies: list[httpload.HttpReply] = []
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        buf = bytearray()
        pos = 0
        for start in range(0, len(requests), window):
            batch = requests[start : start + window]
            sock.sendall(b"".join(batch))
            want = len(replies) + len(batch)
            while len(replies) < want:
                parsed = httpload.parse_http(buf, pos)
                if parsed is None:
                    chunk = sock.recv(1 << 20)
                    if not chunk:
                        raise RuntimeError("the server closed the connection")
                    buf += chunk
                    continue
                reply, pos = parsed
                replies.append(reply)
            del buf[:pos]
            pos = 0
    return replies


def call(port: int, method: str, path: str, body: bytes | None = None) -> httpload.HttpReply:
    return pipeline(port, [httpload.request(method, path, body)])[0]


def timed_get(port: int, path: str) -> tuple[float, httpload.HttpReply]:
    """Seconds from connect to the whole answer, and the answer."""
    t0 = time.perf_counter()
    reply = call(port, "GET", path)
    return time.perf_counter() - t0, reply


def metrics(port: int) -> dict[str, float]:
    return httpload.parse_metrics(call(port, "GET", "/metrics").body.decode())


def create_queues(port: int, names: list[str], attrs: bytes = b"{}") -> None:
    replies = pipeline(port, [httpload.request("PUT", f"/v1/queues/{n}", attrs) for n in names])
    bad = [r.status for r in replies if r.status not in (200, 201)]
    if bad:
        raise RuntimeError(f"{len(bad)} queue creations failed: {bad[:5]}")


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def interleave(rounds: int, cases: dict[str, Callable[[], dict]]) -> dict[str, list[dict]]:
    """Run every case once per round, in turn, so slow phases of a busy machine hit them
    alike; the results of each case in order."""
    out: dict[str, list[dict]] = {name: [] for name in cases}
    for r in range(rounds):
        for name, run in cases.items():
            result = run()
            harness.log(
                f"  round {r + 1} {name}: {result.get('mps', 0):,.0f} msg/s, "
                f"{result.get('rps', 0):,.0f} req/s, p99 {result['latency_ms']['p99']} ms, "
                f"bad {result.get('bad')}, errors {result.get('errors')}"
            )
            out[name].append(result)
    return out


def summary(results: list[dict], key: str = "mps") -> dict[str, Any]:
    """Medians of a case's runs."""
    return {
        key: median([r[key] for r in results]),
        "p50_ms": median([r["latency_ms"]["p50"] for r in results]),
        "p99_ms": median([r["latency_ms"]["p99"] for r in results]),
        "max_ms": max(r["latency_ms"]["max"] for r in results),
        "server_cpu": median([r["server_cpu"] or 0 for r in results]),
        # per second of the server's own CPU: what a message costs, whatever share of its
        # core a busy machine left the server (rates alone then measure the neighbours)
        f"{key}_per_server_cpu_s": median(
            [r[key] / r["server_cpu"] for r in results if r.get("server_cpu")]
        ),
        "gen_cpu": median([r["loadgen_cpu"] or 0 for r in results]),
        "other_cpu": median([r["other_cpu"] for r in results]),
        "bad": sum(r.get("bad", 0) for r in results),
        "runs": len(results),
        "commands": sorted({r["command"] for r in results}),
    }


def machine() -> str:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores, load average {load} at start"


def emit(name: str, doc: dict[str, Any]) -> None:
    """The figures as one JSON line (for RESULTS.md by hand) and a file in bench/results/."""
    harness.RESULTS_DIR.mkdir(exist_ok=True)
    path = harness.RESULTS_DIR / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(doc, indent=2))
    print(f"SCALEJSON {json.dumps(doc)}")
    harness.log(f"written {path}")


def rss(pid: int) -> int:
    value = harness.proc_rss_bytes(pid)
    if value is None:
        raise RuntimeError(f"no VmRSS for pid {pid}")
    return value
