"""The whole benchmark in one command: WonderQ next to its ceilings and its peers.

    python bench/run.py              # 3 runs of 10 s per workload, rewrites bench/RESULTS.md
    python bench/run.py --quick      # 1 run of 3 s per workload: checks everything end to end

It installs what is missing (Debian: wrk, redis-server, beanstalkd, nginx; PyPI: the ``bench``
extra of pyproject.toml), then, for every run, starts each server on a free loopback port
(pinned to core 0 with taskset), drives it with the same workloads from core 1, stops it, and
at the end writes the medians into the generated region of bench/RESULTS.md. Raw numbers of
every run go to bench/results/run-<time>.json, server logs beside them.

Servers: WonderQ (``python -m wonderq serve``, from this tree), the Python ceiling and the
Python reading ceiling (bench/ceiling.py, plain and ``--reading``), nginx with one worker
(``return 200``), Redis, beanstalkd. HTTP load comes from bench/gen/httpgen.c, compiled on the
fly. See bench/README.md for what each workload does and what each number means.

The pieces: bench/harness.py (installs, cores, processes, ports, CPU accounting),
bench/workloads.py (what each workload sends, to which server), bench/report.py (tables,
ratios, goals, the region of RESULTS.md). This file only reads the command line and runs them.

Routes WonderQ does not have yet show as "n/a (route missing)"; a server that cannot start
shows "n/a (server missing)". Nothing here kills a process it did not start.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/ is not a package
import httpload
import loadlib
from harness import (
    RESULTS_DIR,
    ROOT,
    Launcher,
    Meter,
    ServerMissing,
    cpu_plan,
    ensure_tools,
    log,
    machine_info,
    running,
)
from report import render, write_results_md
from workloads import (
    INSTRUCTIONS,
    Bench,
    run_beanstalkd,
    run_depth,
    run_http,
    run_instructions,
    run_longpoll,
    run_redis,
    run_sizing,
)

RESULTS_MD = ROOT / "bench" / "RESULTS.md"


GROUPS: tuple[str, ...] = ("ceiling", "wonderq", "depth", "longpoll", "redis", "beanstalkd")
GROUPS += ("sizing", "instructions")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Run the WonderQ benchmark suite (bench/README.md).")
    p.add_argument("--quick", action="store_true", help="1 run, 3 s per workload")
    p.add_argument("--runs", type=int, help="runs to take medians over (default 3; quick 1)")
    p.add_argument("--duration", type=float, help="seconds per workload (default 10; quick 3)")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--depths", type=int, nargs="+", default=[0, 100_000, 1_000_000])
    p.add_argument("--waiters", type=int, default=1000, help="parked long polls")
    p.add_argument("--idle", type=float, default=10.0, help="idle seconds with waiters parked")
    p.add_argument("--only", nargs="+", choices=GROUPS, help="run only these groups")
    p.add_argument("--skip", nargs="+", choices=GROUPS, default=[], help="skip these groups")
    p.add_argument("--no-install", action="store_true", help="do not apt-get/pip install")
    p.add_argument("--no-write", action="store_true", help="print the tables, write no .md")
    p.add_argument(
        "--results-md",
        type=Path,
        default=RESULTS_MD,
        help="the file whose generated region is rewritten (default bench/RESULTS.md; a smoke "
        "run points it at a copy)",
    )
    p.add_argument(
        "--generator",
        choices=("httpgen", "wrk"),
        default="httpgen",
        help="HTTP load generator (wrk: the bench/wrk scripts, to cross-check httpgen)",
    )
    args = p.parse_args(argv)
    args.runs = args.runs or (1 if args.quick else 3)
    args.duration = args.duration or (3.0 if args.quick else 10.0)
    groups = [g for g in (args.only or GROUPS) if g not in args.skip]
    command = ("python bench/run.py " + shlex.join(sys.argv[1:] if argv is None else argv)).strip()

    ensure_tools(not args.no_install)
    server_pin, gen_pin, pinning = cpu_plan()
    machine = machine_info(pinning)  # before this process pins itself (it reads nproc)
    if gen_pin:  # this process fills queues and drives long polls: keep it off the server's core
        os.sched_setaffinity(0, {int(gen_pin[-1])})
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    logdir = RESULTS_DIR / f"logs-{stamp}"
    logdir.mkdir()
    json_path = RESULTS_DIR / f"run-{stamp}.json"
    bench = Bench(args, Meter(gen_pin, args.duration), Launcher(server_pin, logdir))

    log(f"{pinning}; {args.runs} run(s) of {args.duration:g} s; groups: {' '.join(groups)}")
    meta = {
        "command": command,
        "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "duration": args.duration,
        "connections": args.connections,
        "pinning": pinning,
        "depths": args.depths,
        "generator": args.generator,
        "machine": machine,
        "json": str(json_path.relative_to(ROOT)),
    }
    if {"wonderq", "depth", "longpoll", "sizing"} & set(groups):
        try:
            with running(bench.launcher.wonderq) as server:
                bench.features = loadlib.run(httpload.probe("127.0.0.1", server.port))
            log(f"WonderQ routes: {bench.features}")
        except ServerMissing as exc:
            log(f"WonderQ is not runnable: {exc}")
    meta["features"] = bench.features
    if "instructions" in groups:
        meta["instructions"] = run_instructions(bench, sorted(set(INSTRUCTIONS.values())))

    runs: list[dict] = []
    try:
        for i in range(args.runs):
            log(f"===== run {i + 1} of {args.runs}")
            out: dict[str, Any] = {}
            runs.append(out)
            if "ceiling" in groups or "wonderq" in groups:
                run_http(bench, out, groups)
            if "depth" in groups:
                run_depth(bench, out)
            if "longpoll" in groups:
                run_longpoll(bench, out)
            if "redis" in groups:
                run_redis(bench, out)
            if "beanstalkd" in groups:
                run_beanstalkd(bench, out)
            json_path.write_text(json.dumps({"meta": meta, "runs": runs}, indent=1))
        if "sizing" in groups and runs:
            run_sizing(bench, runs[0])
    except KeyboardInterrupt:
        log("interrupted: writing what was measured")
    json_path.write_text(json.dumps({"meta": meta, "runs": runs}, indent=1))
    region = render(runs, meta)
    if not args.no_write:
        write_results_md(region, args.results_md)
        log(f"wrote {args.results_md} and {json_path.relative_to(ROOT)}")
    else:
        print(region)
    return 0


if __name__ == "__main__":
    sys.exit(main())
