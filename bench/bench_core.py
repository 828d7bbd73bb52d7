"""Engine benchmarks: memory per message, speed against the reference model, expiry bursts and
cost at depth. Run ``python bench/bench_core.py`` (about a minute); it prints the "## Engine"
section of bench/RESULTS.md and writes it there (``--no-write`` to only print).

Figures are medians of 3 runs unless said otherwise. Speeds are measured in CPU time
(time.process_time): the machine's cores are shared, and wall time mostly measures the
neighbours. The memory figure comes from a fresh subprocess that only imports the engine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from wonderq import _core  # noqa: E402

Q = "default"
BODY_BYTES = 200
RUNS = 3


def body(i: int) -> bytes:
    """A distinct 200-byte ASCII body."""
    return b"%010d" % i + b"x" * (BODY_BYTES - 10)


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def median_rate(fn, runs: int = RUNS) -> float:
    """fn() returns (operations, CPU seconds); the median of ops/s over runs."""
    rates = []
    for _ in range(runs):
        ops, seconds = fn()
        rates.append(ops / seconds)
    return statistics.median(rates)


# ---- memory (in a fresh process) ------------------------------------------------------------

# Runs in `python -c`: nothing imported but the engine, so the RSS is the engine's plus the
# interpreter's bare minimum.
MEMORY_CHILD = """
import sys
from wonderq import _core

def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024

n, size = int(sys.argv[1]), int(sys.argv[2])
before = rss()
broker = _core.Broker(max_batch=1000)
for start in range(0, n, 1000):
    broker.publish_batch(
        "default",
        [b"%010d" % i + b"x" * (size - 10) for i in range(start, min(n, start + 1000))],
        0,
    )
assert broker.message_count == n
print(before, rss(), broker.memory_bytes)
"""


def bench_memory(n: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, str(n), str(BODY_BYTES)],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    before, after, accounted = map(int, out.split())
    r = {"before": before, "after": after, "memory_bytes": accounted}
    r["per_message"] = (r["after"] - r["before"]) / n
    r["overhead"] = r["per_message"] - BODY_BYTES
    return r


# ---- speed against the model ------------------------------------------------------------------


def prefilled(cls, n: int, **kwargs):
    b = cls(max_batch=1000, **kwargs)
    for start in range(0, n, 1000):
        b.publish_batch(Q, [body(i) for i in range(start, min(n, start + 1000))], 0)
    return b


def run_publish(cls, n: int):
    bodies = [body(i) for i in range(n)]
    b = cls(max_batch=1000)
    publish = b.publish
    t = time.process_time()
    for x in bodies:
        publish(Q, x, 0)
    return n, time.process_time() - t


def run_publish_batch(cls, n: int, size: int = 500):
    batches = [[body(i) for i in range(s, s + size)] for s in range(0, n, size)]
    b = cls(max_batch=1000)
    publish_batch = b.publish_batch
    t = time.process_time()
    for batch in batches:
        publish_batch(Q, batch, 0)
    return n, time.process_time() - t


def run_receive_delete(cls, n: int):
    """receive(limit=1) then delete of that id, n times (ids are known: 1..n in order)."""
    b = prefilled(cls, n)
    receive, delete = b.receive, b.delete
    t = time.process_time()
    for i in range(1, n + 1):
        receive(Q, 1, 1, 0, 30000)
        delete(Q, 1, i, 1)
    elapsed = time.process_time() - t
    assert b.message_count == 0
    return n, elapsed


def run_receive_delete_batch(cls, n: int, size: int = 100):
    b = prefilled(cls, n)
    receive, delete_batch = b.receive, b.delete_batch
    id_batches = [list(range(s, s + size)) for s in range(1, n + 1, size)]
    t = time.process_time()
    for ids in id_batches:
        receive(Q, 1, size, 0, 30000)
        delete_batch(Q, 1, ids, 1)
    elapsed = time.process_time() - t
    assert b.message_count == 0
    return n, elapsed


def run_expire(cls, n: int, budget: int = 1024):
    """n leases, 10 per deadline over up to 5000 deadlines, all due: expire them in slices of
    `budget`."""
    b = prefilled(cls, n)
    for i in range(0, n, 10):
        b.receive(Q, 1, 10, 0, 1 + (i // 10) % 5000)
    t = time.process_time()
    done = 0
    while done < n:
        done += b.expire(10_000, budget)
    return n, time.process_time() - t


def bench_speed(n_small: int, n_large: int) -> list[tuple[str, float, float, float]]:
    """(operation, engine at n_small, model at n_small, engine at n_large) in ops/s."""
    import model  # tests/model.py

    rows = []
    for name, fn in [
        ("publish (one call per message)", run_publish),
        ("publish_batch (500 per call)", run_publish_batch),
        ("receive(limit=1) + delete", run_receive_delete),
        ("receive(limit=100) + delete_batch", run_receive_delete_batch),
        ("expire (budget 1024, up to 5000 deadlines)", run_expire),
    ]:
        engine = median_rate(lambda fn=fn: fn(_core.Broker, n_small), runs=7)
        ref = median_rate(lambda fn=fn: fn(model.Broker, n_small))
        large = median_rate(lambda fn=fn: fn(_core.Broker, n_large))
        rows.append((name, engine, ref, large))
    return rows


# ---- expiry burst -----------------------------------------------------------------------------


def bench_burst(n: int, budget: int) -> dict:
    b = prefilled(_core.Broker, n)
    for _ in range(0, n, 1000):
        b.receive(Q, 1, 1000, 0, 1000)  # one deadline for all
    assert b.next_deadline() == 1000
    wall, cpu = [], []
    start = time.thread_time_ns()
    while b.next_deadline() != -1:
        t, c = time.perf_counter_ns(), time.thread_time_ns()
        b.expire(1000, budget)
        cpu.append(time.thread_time_ns() - c)
        wall.append(time.perf_counter_ns() - t)
    total = time.thread_time_ns() - start
    assert b.ready_count(Q) == n
    b.check_invariants()
    return {
        "budget": budget,
        "calls": len(cpu),
        "max_cpu_ms": max(cpu) / 1e6,
        "max_wall_ms": max(wall) / 1e6,
        "median_cpu_ms": statistics.median(cpu) / 1e6,
        "total_cpu_ms": total / 1e6,
    }


# ---- depth ------------------------------------------------------------------------------------


def run_cycle(depth: int, n: int):
    """publish + receive + delete, n times, with `depth` older messages ready in the queue."""
    b = prefilled(_core.Broker, depth)
    publish, receive, delete = b.publish, b.receive, b.delete
    x = body(0)
    head = 1  # lowest ready id: what receive returns
    t = time.process_time()
    for _ in range(n):
        publish(Q, x, 0)
        receive(Q, 1, 1, 0, 30000)
        delete(Q, 1, head, 1)
        head += 1
    elapsed = time.process_time() - t
    assert b.message_count == depth
    return n, elapsed


def bench_depth(depth: int, n: int, runs: int = 5) -> tuple[float, float]:
    """Median cycles/s at depth 0 and at `depth`, the runs interleaved so that the neighbours'
    load hits both alike."""
    shallow, deep = [], []
    for _ in range(runs):
        shallow.append(n / run_cycle(0, n)[1])
        deep.append(n / run_cycle(depth, n)[1])
    return statistics.median(shallow), statistics.median(deep)


# ---- report -----------------------------------------------------------------------------------


def report(args) -> str:
    load_before = os.getloadavg()[0]
    mem = bench_memory(args.messages)
    speed = bench_speed(args.model_n, args.speed_n)
    bursts = [bench_burst(args.messages, budget) for budget in (args.budget, args.budget * 2)]
    shallow, deep = bench_depth(args.messages, args.cycle_n)
    mb = mem["after"] / 1e6
    mib = mem["after"] / 2**20
    lines = [
        "## Engine",
        "",
        f"`python bench/bench_core.py` ({time.strftime('%Y-%m-%d')}, Python "
        f"{platform.python_version()}, {platform.machine()}, {os.cpu_count()} shared cores, "
        f"load average {load_before:.1f} at the start and {os.getloadavg()[0]:.1f} at the end; "
        "medians of 3 runs unless noted).",
        "",
        f"**Memory** - {args.messages:,} messages of {BODY_BYTES} bytes published with "
        "publish_batch (1000 per call) in a fresh process:",
        "",
        "| figure | value | goal |",
        "|---|---|---|",
        f"| RSS of the whole process | {mb:.1f} MB ({mib:.1f} MiB) | <= 260 MB |",
        f"| RSS before publishing (interpreter + engine) | {mem['before'] / 1e6:.1f} MB | |",
        f"| RSS per message | {mem['per_message']:.1f} bytes | |",
        f"| overhead per message (RSS per message - {BODY_BYTES}) | {mem['overhead']:.1f} bytes "
        "| |",
        f"| accounted memory_bytes | {mem['memory_bytes'] / 1e6:.1f} MB | |",
        "",
        "**Speed against the reference model** (tests/model.py), ops/s of CPU time: engine "
        f"and model on the same {args.model_n:,} operations (engine: median of 7 runs), and "
        f"the engine alone on {args.speed_n:,} (a deeper queue, a bigger heap):",
        "",
        f"| operation | engine | model | ratio | engine, n={args.speed_n:,} | goal |",
        "|---|---|---|---|---|---|",
    ]
    for name, engine, ref, large in speed:
        goal = ">= 20x" + (", >= 2,000,000/s" if "publish_batch" in name else "")
        lines.append(
            f"| {name} | {engine:,.0f} | {ref:,.0f} | {engine / ref:,.0f}x | {large:,.0f} "
            f"| {goal} |"
        )
    lines += [
        "",
        f"**Expiry burst** - {args.messages:,} leases with one deadline, expire(now, budget) "
        "until the heap is empty (one run per budget; per-call CPU time, and wall time which "
        "includes preemption by the neighbours):",
        "",
        "| budget | longest call, CPU | longest call, wall | median call, CPU | total CPU | goal |",
        "|---|---|---|---|---|---|",
    ]
    for burst in bursts:
        lines.append(
            f"| {burst['budget']} | {burst['max_cpu_ms']:.2f} ms | {burst['max_wall_ms']:.2f} ms "
            f"| {burst['median_cpu_ms']:.2f} ms | {burst['total_cpu_ms']:.0f} ms "
            f"({burst['calls']} calls) | longest < 5 ms |"
        )
    lines += [
        "",
        f"**Depth** - publish + receive + delete cycles ({args.cycle_n:,} per run, CPU time, "
        "medians of 5 interleaved runs):",
        "",
        "| queue depth | cycles/s |",
        "|---|---|",
        f"| 0 | {shallow:,.0f} |",
        f"| {args.messages:,} | {deep:,.0f} ({deep / shallow:.2f}x; goal >= 0.8x) |",
        "",
    ]
    return "\n".join(lines)


def write_section(text: str, path: Path) -> None:
    """Replace the "## Engine" section of RESULTS.md (up to the next "## "), or append it."""
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    lines = old.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "## Engine"), None)
    if start is None:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        new = "\n".join([*lines[:start], *text.rstrip("\n").splitlines(), "", *lines[end:]])
    path.write_text(new.rstrip("\n") + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--messages", type=int, default=1_000_000, help="memory/burst/depth size")
    p.add_argument("--speed-n", type=int, default=200_000, help="engine-only ops per speed run")
    p.add_argument("--model-n", type=int, default=50_000, help="engine+model ops per speed run")
    p.add_argument("--cycle-n", type=int, default=300_000, help="cycles per depth run")
    p.add_argument(
        "--budget", type=int, default=1024, help="expire budget per call (also run at 2x)"
    )
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args()
    text = report(args)
    print(text)
    if not args.no_write:
        write_section(text, ROOT / "bench" / "RESULTS.md")


if __name__ == "__main__":
    main()
