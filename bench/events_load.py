"""What the status page's event stream costs the server: N open ``GET /v1/events`` streams
for S seconds, the server's CPU time read from ``/proc/<pid>/stat`` before and after.

The server computes one snapshot a second for all subscribers together and writes the same
bytes to each, so the cost should grow with the number of queues far more than with the
number of streams. The figure is CPU seconds per wall second (1.0 = one core busy), for the
same server idle and then with the streams open; the difference is what the streams cost.

    python bench/events_load.py                          # starts its own server, 50 streams
    python bench/events_load.py --streams 50 --seconds 30 --queues 200
    python bench/events_load.py --url http://127.0.0.1:8080 --pid 12345   # a running server
    python bench/events_load.py --publish 5 --seconds 5   # publish rate without/with pages

``--publish ROUNDS``: whether open status pages slow publishes. Each round measures the
publish workload of bench/run.py (httpgen, 64 connections, 200 B) for ``--seconds`` without
pages, then again while ``--streams`` pages are open (each loads ``/`` and its script, then
holds ``GET /v1/events``); server and generator pinned to a core each, as bench/run.py does.
The figure is the median over the rounds of (rate with pages / rate without), the two taken
seconds apart, so the machine's other work moves both alike.

Only 127.0.0.1 is ever targeted. On a shared machine the CPU figure of the server process
is still its own (other processes do not add to it), but a busy machine makes each of its
instructions slower, so treat one run as an upper bound.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
LISTENING = re.compile(r"wonderq listening on http://127\.0\.0\.1:(\d+)")


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (its threads included), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # After "pid (comm)": state is field 3, utime 14, stime 15 (1-based) -> 11 and 12 here.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server() -> tuple[subprocess.Popen[str], int]:
    """``wonderq serve`` on a free loopback port (the console script beside this Python)."""
    exe = Path(sys.executable).with_name("wonderq")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "wonderq"]
    proc = subprocess.Popen(
        [*cmd, "serve", "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=HERE.parent,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 20
    for line in proc.stdout:
        m = LISTENING.search(line)
        if m:
            return proc, int(m.group(1))
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise SystemExit("the server did not start")


def make_queues(port: int, n: int) -> None:
    """``n`` queues with a few messages each, so each snapshot has rows to carry."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for i in range(n):
        conn.request("PUT", f"/v1/queues/bench-{i:04d}", body=b"{}")
        conn.getresponse().read()
        conn.request("POST", f"/v1/queues/bench-{i:04d}/batch", body=json.dumps(["m"] * 5))
        conn.getresponse().read()
    conn.close()


async def hold_stream(port: int, stop_at: float, counts: list[int], index: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /v1/events HTTP/1.1\r\nHost: bench\r\n\r\n")
    try:
        while True:
            left = stop_at - time.monotonic()
            if left <= 0:
                break
            try:
                data = await asyncio.wait_for(reader.read(65536), left)
            except asyncio.TimeoutError:
                break
            if not data:
                break
            counts[index] += data.count(b"\ndata: ") + data.startswith(b"data: ")
    finally:
        writer.close()


async def run_streams(port: int, streams: int, seconds: float) -> list[int]:
    counts = [0] * streams
    stop_at = time.monotonic() + seconds
    await asyncio.gather(*(hold_stream(port, stop_at, counts, i) for i in range(streams)))
    return counts


def measure(pid: int, seconds: float, work: object = None) -> float:
    """CPU seconds per wall second of ``pid`` over ``seconds`` (``work`` runs meanwhile)."""
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    if work is None:
        time.sleep(seconds)
    else:
        work()  # type: ignore[operator]
    cpu1, t1 = cpu_seconds(pid), time.monotonic()
    return (cpu1 - cpu0) / (t1 - t0)


async def open_page(port: int, stop_at: float, counts: list[int], index: int) -> None:
    """What one open status page asks of the server: the page, its script, the stream."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for path in ("/", "/static/app.js"):
        writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"(?i)content-length: *(\d+)", head)
        await reader.readexactly(int(length.group(1)) if length else 0)
    writer.close()
    await hold_stream(port, stop_at, counts, index)


async def run_pages(port: int, pages: int, seconds: float) -> list[int]:
    counts = [0] * pages
    stop_at = time.monotonic() + seconds
    await asyncio.gather(*(open_page(port, stop_at, counts, i) for i in range(pages)))
    return counts


def publish_effect(rounds: int, pages: int, seconds: float) -> int:
    """``--publish``: the publish rate without and with ``pages`` open status pages."""
    import statistics
    import tempfile
    import threading

    from harness import Launcher, Meter, cpu_plan, httpgen
    from workloads import PUBLISH

    server_pin, gen_pin, plan = cpu_plan()
    if gen_pin:  # the pages' reader (this process) shares the generator's core
        os.sched_setaffinity(0, {int(gen_pin[-1])})
    with tempfile.TemporaryDirectory() as logdir:
        server = Launcher(server_pin, Path(logdir)).wonderq()
        meter = Meter(gen_pin, seconds)
        cmd = [str(httpgen()), "--port", str(server.port), "-c", "64"]
        cmd += ["--duration", f"{seconds:g}", "--name", "publish", *PUBLISH]
        rows: list[tuple[dict, dict, list[int]]] = []
        try:
            for _ in range(rounds):
                plain = meter.measure(server, cmd)
                counts: list[int] = []

                def hold(counts: list[int] = counts) -> None:
                    counts.extend(asyncio.run(run_pages(server.port, pages, seconds + 2.0)))

                holder = threading.Thread(target=hold)
                holder.start()
                time.sleep(1.0)  # the pages are open and have had their first event
                paged = meter.measure(server, cmd)
                holder.join()
                rows.append((plain, paged, counts))
        finally:
            server.stop()
    print(f"{plan}; {rounds} rounds of {seconds:g} s; {pages} pages open in the second run")
    print("round  without pages  with pages   ratio  srv CPU  gen CPU  other CPU  events/page")
    ratios = []
    for i, (plain, paged, counts) in enumerate(rows, 1):
        ratio = paged["rps"] / plain["rps"] if plain["rps"] else 0.0
        ratios.append(ratio)
        print(
            f"{i:5d}  {plain['rps']:11,.0f}/s  {paged['rps']:8,.0f}/s  {ratio:6.3f}x"
            f"  {paged['server_cpu'] * 100:6.0f}%  {paged['loadgen_cpu'] * 100:6.0f}%"
            f"  {paged['other_cpu'] * 100:8.0f}%  {min(counts)}-{max(counts)}"
        )
    print(f"median ratio with pages / without: {statistics.median(ratios):.3f}x")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--queues", type=int, default=100, help="queues to create first")
    parser.add_argument("--url", help="a running server on 127.0.0.1 (needs --pid)")
    parser.add_argument("--pid", type=int, help="that server's process id")
    parser.add_argument(
        "--publish",
        type=int,
        metavar="ROUNDS",
        help="measure the publish rate without and with --streams open pages instead",
    )
    args = parser.parse_args()
    if args.publish:
        return publish_effect(args.publish, args.streams, args.seconds)

    proc = None
    if args.url:
        parts = urlsplit(args.url)
        if parts.hostname not in ("127.0.0.1", "localhost") or args.pid is None:
            parser.error("--url must be a loopback address, and --pid is needed with it")
        port, pid = int(parts.port or 80), args.pid
    else:
        proc, port = start_server()
        pid = proc.pid
    try:
        make_queues(port, args.queues)
        time.sleep(1.0)  # let the creation settle
        idle = measure(pid, args.seconds)
        counts: list[int] = []

        def work() -> None:
            counts.extend(asyncio.run(run_streams(port, args.streams, args.seconds)))

        busy = measure(pid, args.seconds, work)
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
    load = os.getloadavg()
    print(f"server pid {pid}, {args.queues + 1} queues, {args.streams} streams, {args.seconds:g} s")
    print(f"events per stream: min {min(counts)}, max {max(counts)} (one a second expected)")
    print(f"server CPU idle:         {idle * 100:6.2f} % of a core")
    print(f"server CPU with streams: {busy * 100:6.2f} % of a core")
    print(f"the streams cost:        {(busy - idle) * 100:6.2f} % of a core")
    print(f"load average during the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
