"""Where a server's resident memory goes: idle, then holding N messages of 200 B.

    python bench/rss_breakdown.py                # this tree's server, 1,000,000 messages
    python bench/rss_breakdown.py --count 100000 --runs 3
    cd OTHER && WONDERQ_SERVER_CMD="python -m wonderq" python .../bench/rss_breakdown.py

Starts a fresh ``wonderq serve`` on a loopback port (``python -m wonderq`` from this tree, as
bench/run.py does), reads its VmRSS and /proc/PID/smaps once it has started, fills the queue
``default`` by batch publishes of 1,000 (bench/httpload.py's fill, as the depth sweep does),
waits 0.5 s, reads them again, and prints the two VmRSS figures, the bytes per message above
the idle process and the mappings that grew (the slab arenas are anonymous mappings, the
C heap is ``[heap]``). It sends no /metrics scrape, so it reads what the process holds, not
what a scrape adds. Stops the server by its PID. About 5 s per run.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
import httpload  # noqa: E402
import loadlib  # noqa: E402

LISTENING = re.compile(rb"listening on https?://[\d.]+:(\d+)")


def status_kb(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon and RssFile of ``pid`` in KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0])
    return out


def smaps_kb(pid: int) -> collections.Counter[str]:
    """Resident KiB by mapping name: the file's base name, ``[heap]``, ``[anon]``..."""
    by_name: collections.Counter[str] = collections.Counter()
    name = "[anon]"
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if re.fullmatch(r"[0-9a-f]+-[0-9a-f]+", parts[0]):
                name = parts[5].rsplit("/", 1)[-1] if len(parts) > 5 else "[anon]"
            elif parts[0] == "Rss:":
                by_name[name] += int(parts[1])
    return by_name


def one_run(count: int, top: int) -> dict[str, float]:
    override = os.environ.get("WONDERQ_SERVER_CMD")
    cmd = shlex.split(override) if override else [sys.executable, "-m", "wonderq"]
    env = dict(os.environ)
    if not override:
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [*cmd, "serve", "--host", "127.0.0.1", "--port", "0"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            deadline = time.monotonic() + 30
            port = None
            while port is None:
                log.seek(0)
                m = LISTENING.search(log.read())
                if m:
                    port = int(m.group(1))
                elif proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the server did not start")
                else:
                    time.sleep(0.05)
            time.sleep(1.0)  # start-up done (the server trims the C heap then)
            idle, idle_maps = status_kb(proc.pid), smaps_kb(proc.pid)
            fill = loadlib.run(httpload.fill("127.0.0.1", port, count, 200, "default", 1000))
            if fill["messages"] != count:
                raise SystemExit(f"stored {fill['messages']} of {count}")
            time.sleep(0.5)
            full, full_maps = status_kb(proc.pid), smaps_kb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    grown = sorted(full_maps, key=lambda k: full_maps[k] - idle_maps[k], reverse=True)
    print(
        f"  idle: VmRSS {idle['VmRSS']:,} KiB (anon {idle['RssAnon']:,}, file {idle['RssFile']:,})"
    )
    print("  idle, largest: " + ", ".join(f"{k} {v:,}" for k, v in idle_maps.most_common(top)))
    print(f"  full: VmRSS {full['VmRSS']:,} KiB; grew: ", end="")
    print(", ".join(f"{k} +{full_maps[k] - idle_maps[k]:,}" for k in grown[:3]))
    return {
        "idle_mb": idle["VmRSS"] * 1024 / 1e6,
        "full_mb": full["VmRSS"] * 1024 / 1e6,
        "per_msg": (full["VmRSS"] - idle["VmRSS"]) * 1024 / count,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--count", type=int, default=1_000_000, help="messages of 200 B to hold")
    p.add_argument("--runs", type=int, default=1, help="fresh servers (medians printed)")
    p.add_argument("--top", type=int, default=8, help="largest idle mappings to list")
    args = p.parse_args()
    runs = []
    for i in range(args.runs):
        print(f"run {i + 1}:")
        runs.append(one_run(args.count, args.top))
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(
        f"{args.count:,} x 200 B: {med['full_mb']:.1f} MB resident (VmRSS), idle "
        f"{med['idle_mb']:.1f} MB, {med['per_msg']:.1f} B per message above it "
        f"(MB = 10^6 bytes; medians of {len(runs)})"
    )


if __name__ == "__main__":
    main()
