"""Two builds of WonderQ, A and B, on the same workloads in alternating rounds: the
comparison bench/run.py cannot make (its runs are minutes apart, and this machine's speed
moves by 15-25% between them, as its ceiling rows show). Each round starts a fresh server of
each build, pinned like bench/run.py's, and runs every workload on both within seconds; the
figure is the median over the rounds of B's rate / A's rate.

    python bench/ab.py --a /path/to/old/venv/bin/wonderq --rounds 5 --duration 4
    python bench/ab.py --a "python -m wonderq" --b ... --workloads publish recv_delete
    python bench/ab.py --a "env PYTHONPATH=/tmp/old python -m wonderq" --workloads publish \
        --body-bytes 1048576 --connections 16     # big publishes (rates in MB/s)
    python bench/ab.py --a ... --workloads recv_delete --body-bytes 65536 --connections 16

``--body-bytes`` also sizes the messages a consuming workload receives: the queue is filled
with ``PREFILL_BYTES`` of them and the run ends when it runs dry (httpgen ``--until-empty``).

``--a`` / ``--b``: the command that runs a build's ``wonderq`` (default for B: this tree).
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness
import httpload
import loadlib
import workloads

# Messages to fill before a consuming workload, per second of its run (above its rate).
PREFILL_PER_S = {"recv_delete": 100_000, "batch_recv_ack": 2_000_000}
# Bytes of big messages (--body-bytes) to fill before a consuming workload, which then runs
# until the queue is empty; publishes in batches of at most 8 MiB.
PREFILL_BYTES = 2 << 30


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", required=True, help="build A's wonderq command (the baseline)")
    parser.add_argument("--b", help="build B's wonderq command (default: this tree)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--connections", type=int, default=64)
    keys = [w.key for w in workloads.HTTP_WORKLOADS]
    parser.add_argument("--workloads", nargs="+", choices=keys, default=keys)
    parser.add_argument(
        "--body-bytes", type=int, help="bodies of this size instead (publishing workloads)"
    )
    args = parser.parse_args()
    big = ["--body-bytes", str(args.body_bytes)] if args.body_bytes else []
    server_pin, gen_pin, plan = harness.cpu_plan()
    meter = harness.Meter(gen_pin, args.duration)
    gen = str(harness.httpgen())
    chosen = [w for w in workloads.HTTP_WORKLOADS if w.key in args.workloads]
    rates: dict[str, dict[str, list[float]]] = {w.key: {"A": [], "B": []} for w in chosen}
    gen_cpu: dict[str, float] = {w.key: 0.0 for w in chosen}
    builds = {"A": args.a, "B": args.b}
    b_name = args.b or "this tree"
    print(f"{plan}; {args.rounds} rounds of {args.duration:g} s; A = {args.a}; B = {b_name}")
    with tempfile.TemporaryDirectory() as logdir:
        for r in range(args.rounds):
            for w in chosen:
                for name in ("A", "B") if r % 2 == 0 else ("B", "A"):
                    if builds[name]:
                        os.environ["WONDERQ_SERVER_CMD"] = builds[name]  # type: ignore[assignment]
                    else:
                        os.environ.pop("WONDERQ_SERVER_CMD", None)
                    server = harness.Launcher(server_pin, Path(logdir)).wonderq()
                    try:
                        cmd = [gen, "--port", str(server.port), "-c", str(args.connections)]
                        cmd += ["--duration", f"{args.duration:g}", "--name", w.key, *w.httpgen]
                        if w.prefill and big:
                            size = args.body_bytes
                            count, batch = PREFILL_BYTES // size, max(1, (8 << 20) // (size + 3))
                            cmd.append("--until-empty")
                        elif w.prefill:
                            size, batch = 200, 1000
                            count = int(PREFILL_PER_S[w.key] * args.duration)
                        if w.prefill:
                            fill = httpload.fill(
                                "127.0.0.1", server.port, count, size, "default", batch
                            )
                            loadlib.run(fill)
                        res = meter.measure(server, cmd + big)
                    finally:
                        server.stop()
                    rate = res["mps"] or res["rps"]
                    rates[w.key][name].append(rate * args.body_bytes / 1e6 if big else rate)
                    gen_cpu[w.key] = max(gen_cpu[w.key], res["loadgen_cpu"] or 0.0)
                last_a, last_b = rates[w.key]["A"][-1], rates[w.key]["B"][-1]
                print(f"round {r + 1}: {w.key}: A {last_a:,.0f}  B {last_b:,.0f}", flush=True)
    a_head, b_head = ("A MB/s", "B MB/s") if big else ("A msg/s", "B msg/s")
    print(f"{'workload':<20} {a_head:>10} {b_head:>10} {'B / A':>7} {'gen CPU':>8}  per round")
    for w in chosen:
        a, b = rates[w.key]["A"], rates[w.key]["B"]
        ratio = statistics.median(y / x for x, y in zip(a, b, strict=True) if x)
        each = ", ".join(f"{y / x:.2f}" for x, y in zip(a, b, strict=True) if x)
        med_a, med_b, cpu = statistics.median(a), statistics.median(b), gen_cpu[w.key] * 100
        print(f"{w.key:<20} {med_a:>10,.0f} {med_b:>10,.0f} {ratio:>6.3f}x {cpu:>6.0f}%  {each}")
    print("command:", shlex.join(sys.argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
