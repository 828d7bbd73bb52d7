"""What each benchmark workload sends, and to which server; the harness (bench/harness.py) runs
it and bench/report.py turns the figures into tables.

HTTP rows are driven by bench/gen/httpgen.c (``--generator wrk`` runs the wrk scripts of
bench/wrk/ instead, to cross-check): a constant request for the publishes, receive + delete or
receive + ack for the consumers, publish + receive + delete for the depth sweep. Each run of a
workload gets: the ceilings (plain and reading, stateless, one process for the whole loop),
nginx, then a fresh WonderQ whose queue is filled first when the workload consumes. The peers
are driven by their own tools (redis-benchmark, bench/peers/*.py); the long polls and the
Locust sizing scenario by theirs. Instructions per request come from bench/instructions.py.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpload
import loadlib
from harness import (
    BENCH,
    RESULTS_DIR,
    ROOT,
    Launcher,
    Meter,
    RouteMissing,
    Server,
    ServerMissing,
    ToolMissing,
    httpgen,
    log,
    running,
    tree_env,
)

WRK_DIR = BENCH / "wrk"
MISSING_ROUTE = "n/a (route missing)"
MISSING_SERVER = "n/a (server missing)"
SIZING_LINE = re.compile(r"1,000,000 x 200 B: [\d.,]+ MB resident.*")

BODY = "x" * 200
TEXT = "text/plain; charset=utf-8"
CID = "1001"  # one consumer id for every connection: leases and deletes share it
RECV = f"/v1/consumer?cid={CID}&limit=1&visibility=60"
DELETE = f"/v1/consumer?cid={CID}&id="
Q = "/v1/queues/default"
BATCH = "[" + ",".join([f'"{BODY}"'] * 100) + "]"  # 100 messages of 200 B as a JSON array


def post(path: str, body: str, ctype: str, *more: str) -> list[str]:
    """httpgen arguments for a constant POST."""
    return ["--fixed", "POST", path, "--body", body, "--ctype", ctype, *more]


PUBLISH = post("/v1/publish", BODY, TEXT)


@dataclass
class Workload:
    key: str  # stable id in results
    label: str  # row label
    script: str  # wrk script (--generator wrk)
    httpgen: list[str]  # bench/gen/httpgen.c's arguments after the port and duration
    needs: tuple[str, ...] = ()  # WonderQ features it needs
    prefill: bool = False  # fill the queue before (consuming workloads)
    default_rate: float = 50_000.0  # messages/s guess for sizing the prefill of the first run


HTTP_WORKLOADS = [
    Workload("publish", "publish 200 B", "publish", PUBLISH, ("publish",)),
    Workload(
        "recv_delete",
        "receive + delete (limit=1)",
        "recv_delete",
        ["--recvdel", RECV, DELETE],
        ("receive", "delete"),
        True,
        30_000,
    ),
    Workload(
        "batch_publish",
        "batch publish 100 x 200 B",
        "batch_publish",
        post(f"{Q}/batch", BATCH, "application/json", "--per-request", "100"),
        ("batch",),
    ),
    Workload(
        "batch_recv_ack",
        "batch receive 100 + batch ack",
        "batch_recv_ack",
        ["--recvack", f"{Q}/messages?cid={CID}&limit=100&visibility=60", f"{Q}/ack", CID],
        ("receive", "batch", "ack"),
        True,
        700_000,
    ),
    Workload(
        "pipeline_publish",
        "publish 200 B, 16 pipelined",
        "pipeline_publish",
        [*PUBLISH, "--pipeline", "16"],
        ("publish",),
    ),
]
DEPTH_SWEEP = Workload(
    "depth",
    "publish + receive + delete",
    "publish_recv_delete",
    ["--recvdel", RECV, DELETE, "--publish", "/v1/publish", "--body", BODY, "--ctype", TEXT],
    ("publish", "receive", "delete"),
)

# (server group, workload key) -> bench/instructions.py workload that feeds the same requests
# to the same code in-process (per request; per message for the batch workloads)
INSTRUCTIONS = {
    ("wonderq", "publish"): "publish",
    ("wonderq", "recv_delete"): "recvdel",
    ("wonderq", "batch_publish"): "batch",
    ("wonderq", "batch_recv_ack"): "recvack",
    ("wonderq", "pipeline_publish"): "publish16",
    ("ceiling", "publish"): "ceiling",
    ("ceiling", "recv_delete"): "ceiling_recvdel",
    ("ceiling", "pipeline_publish"): "ceiling16",
    ("reading", "publish"): "reading",
    ("reading", "recv_delete"): "reading_recvdel",
    ("reading", "pipeline_publish"): "reading16",
}


@dataclass
class Bench:
    """One benchmark session: its options, servers, generator core and what it has learnt."""

    args: argparse.Namespace
    meter: Meter
    launcher: Launcher
    features: dict[str, bool] = field(default_factory=dict)  # WonderQ routes that answer
    rates: dict[str, float] = field(default_factory=dict)  # last messages/s per workload key

    @property
    def duration(self) -> float:
        return self.meter.duration

    def measure(self, server: Server, cmd: list[str]) -> dict:
        return self.meter.measure(server, cmd)

    def expected(self, key: str, default: float) -> float:
        return self.rates.get(key, default)

    def http_load(self, w: Workload, port: int) -> list[str]:
        """The load generator's command line for workload ``w`` against 127.0.0.1:port."""
        conns, duration = str(self.args.connections), f"{self.duration:g}"
        if self.args.generator == "wrk":
            if shutil.which("wrk") is None:
                raise ToolMissing("wrk missing")
            script = str(WRK_DIR / f"{w.script}.lua")
            cmd = ["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--timeout", "10s", "-s", script]
            return [*cmd, f"http://127.0.0.1:{port}/"]
        cmd = [str(httpgen()), "--port", str(port), "-c", conns, "--duration", duration]
        return [*cmd, "--name", w.key, *w.httpgen]


def guarded(fn: Callable[..., dict], *args: Any) -> dict:
    """``fn(*args)``, or why it has no figure: one broken workload must not lose the others."""
    try:
        return fn(*args)
    except RouteMissing as exc:
        return {"na": MISSING_ROUTE, "why": str(exc)}
    except ServerMissing as exc:
        return {"na": MISSING_SERVER, "why": str(exc)}
    except ToolMissing as exc:
        return {"na": f"n/a ({str(exc).splitlines()[0][:120]})"}
    except Exception as exc:
        log(f"  error: {exc}")
        return {"na": f"error: {str(exc).splitlines()[0][:120]}", "trace": traceback.format_exc()}


def check_features(bench: Bench, needs: tuple[str, ...]) -> None:
    missing = [f for f in needs if not bench.features.get(f)]
    if missing:
        raise RouteMissing(", ".join(missing))


def fill_wonderq(bench: Bench, server: Server, count: int) -> dict:
    batch = 1000 if bench.features.get("batch") else 1
    t0 = time.perf_counter()
    result = loadlib.run(httpload.fill("127.0.0.1", server.port, count, 200, "default", batch))
    if result["bad"] or result["messages"] != count:
        raise RuntimeError(f"fill stored {result['messages']} of {count} ({result['bad']} failed)")
    log(f"  filled {count:,} in {time.perf_counter() - t0:.1f} s ({result['script']})")
    return result


def run_http(bench: Bench, out: dict, groups: list[str]) -> None:
    """Every HTTP workload against the ceilings and WonderQ, back to back for each workload, so
    that a ratio compares figures taken within seconds of each other (the machine may be
    shared). The ceilings are stateless and run for the whole loop; WonderQ gets a fresh
    process per workload."""
    starters: dict[str, Callable[[], Server]] = {  # result group -> how to start it
        "ceiling": bench.launcher.ceiling,
        "reading": lambda: bench.launcher.ceiling(reading=True),
        "nginx": bench.launcher.nginx,
    }
    ceilings: dict[str, Server | str] = {}
    try:
        if "ceiling" in groups:
            for name, start in starters.items():
                out.setdefault(name, {})
                try:
                    ceilings[name] = start()
                except ServerMissing as exc:
                    ceilings[name] = str(exc)
        for w in HTTP_WORKLOADS:
            for name in list(ceilings):
                server = ceilings[name]
                if isinstance(server, str):
                    out[name][w.key] = {"na": MISSING_SERVER, "why": server}
                    continue
                if server.proc.poll() is not None:  # something ended it: a fresh one
                    log(f"{name} exited ({server.proc.returncode}); starting another")
                    server.stop()
                    server = ceilings[name] = starters[name]()
                log(f"{name}: {w.label}")
                out[name][w.key] = guarded(measure_http, bench, server, w)
            if "wonderq" in groups:
                log(f"wonderq: {w.label}")
                out.setdefault("wonderq", {})[w.key] = guarded(wonderq_workload, bench, w)
    finally:
        for server in ceilings.values():
            if isinstance(server, Server):
                server.stop()


def measure_http(bench: Bench, server: Server, w: Workload) -> dict:
    return bench.measure(server, bench.http_load(w, server.port))


def wonderq_workload(bench: Bench, w: Workload) -> dict:
    check_features(bench, w.needs)
    with running(bench.launcher.wonderq) as server:
        prefill = 0
        if w.prefill:
            rate = bench.expected(w.key, w.default_rate)
            prefill = int(min(8_000_000, max(20_000, rate * bench.duration * 1.5)))
            fill_wonderq(bench, server, prefill)
        result = measure_http(bench, server, w)
        result["prefill"] = prefill
        result["rss_after"] = server.rss()
        if w.prefill and result["messages"]:
            bench.rates[w.key] = result["mps"]
        return result


def run_depth(bench: Bench, out: dict) -> None:
    rows = out.setdefault("depth", {})
    for depth in bench.args.depths:
        log(f"wonderq: publish + receive + delete at depth {depth:,}")
        rows[f"depth_{depth}"] = guarded(depth_sweep, bench, depth)


def depth_sweep(bench: Bench, depth: int) -> dict:
    """The publish, receive, delete cycle on a fresh WonderQ filled to ``depth`` messages
    (and its memory, at 1,000,000)."""
    check_features(bench, DEPTH_SWEEP.needs)
    with running(bench.launcher.wonderq) as server:
        rss_empty = server.rss()
        fill = fill_wonderq(bench, server, depth) if depth else None
        memory = None
        if depth == 1_000_000:
            memory = read_wonderq_memory(bench, server, rss_empty)
        result = measure_http(bench, server, DEPTH_SWEEP)
        result["depth"] = depth
        result["memory"] = memory
        result["fill_s"] = fill["duration_s"] if fill else 0
        return result


def read_wonderq_memory(bench: Bench, server: Server, rss_empty: int | None) -> dict:
    time.sleep(0.5)
    memory: dict[str, Any] = {"vmrss": server.rss(), "vmrss_empty": rss_empty}
    if bench.features.get("metrics"):
        with contextlib.suppress(Exception):
            r = httpload.call_sync("127.0.0.1", server.port, "GET", "/metrics")
            m = httpload.parse_metrics(r.body.decode())
            memory["process_resident_memory_bytes"] = m.get("process_resident_memory_bytes")
            memory["wonderq_memory_bytes"] = httpload.metric(m, "wonderq_memory_bytes")
    return memory


def run_longpoll(bench: Bench, out: dict) -> None:
    log("wonderq: long polling, 1,000 parked waiters")

    def one() -> dict:
        check_features(bench, ("longpoll", "publish"))
        with running(bench.launcher.wonderq) as server:
            return loadlib.run(
                httpload.longpoll(
                    "127.0.0.1",
                    server.port,
                    server.pid,
                    waiters=bench.args.waiters,
                    idle_s=bench.args.idle,
                    wakes=bench.args.waiters,
                )
            )

    out["longpoll"] = guarded(one)


PEER_KEYS = tuple(f"{w}_p{d}" for w in ("lpush", "reliable", "put", "work") for d in (1, 16))


def run_peer(
    bench: Bench,
    out: dict,
    group: str,
    start: Callable[[], Server],
    tool_name: str,
    consume: str,
    rate: float,
    then: Callable[[Server, dict, Callable[[str, int], list[str]]], None],
    top_up: Callable[[int], list[str]] = lambda depth: [],
) -> None:
    """A peer's rows: fill it with 1,000,000 x 200 B (the memory row), run its consuming
    workload with 1 and 16 commands per round (topping the queue up first when the previous
    rate says it may run dry), then ``then`` for its producing rows. ``tool_name`` is its
    bench/peers/ tool, which takes ``fill`` and timed workloads."""
    rows = out.setdefault(group, {})
    tool = [sys.executable, str(BENCH / "peers" / tool_name)]
    try:
        with running(start) as server:
            port = ["--port", str(server.port)]

            def timed(workload: str, depth: int) -> list[str]:
                cmd = [*tool, *port, workload, "-c", str(bench.args.connections)]
                return [*cmd, "--pipeline", str(depth), "--duration", f"{bench.duration:g}"]

            log(f"{group}: fill 1,000,000 x 200 B")
            rows["fill"] = guarded(
                bench.measure, server, [*tool, *port, "fill", "--count", "1000000"]
            )
            time.sleep(0.5)
            rows["memory"] = {"vmrss": server.rss()}
            left = 1_000_000  # messages held; the consuming runs take them
            for depth in (1, 16):
                key = f"{consume}_p{depth}"
                log(f"{group}: {consume}, pipeline {depth}")
                need = int(bench.expected(f"{group}_{key}", rate * depth**0.5) * bench.duration)
                need = int(need * 1.5)
                if need > left:
                    fill = [*tool, *port, "fill", "--count", str(need - left), *top_up(depth)]
                    guarded(bench.measure, server, fill)
                    left = need
                rows[key] = guarded(bench.measure, server, timed(consume, depth))
                left -= rows[key].get("messages", 0)
                if rows[key].get("mps"):
                    bench.rates[f"{group}_{key}"] = rows[key]["mps"]
            then(server, rows, timed)
    except ServerMissing as exc:
        for key in ("memory", *PEER_KEYS):
            rows.setdefault(key, {"na": MISSING_SERVER, "why": str(exc)})


def run_redis(bench: Bench, out: dict) -> None:
    """Reliable queue (LMOVE + LREM, bench/peers/redis_queue.py) and LPUSH (redis-benchmark)."""

    def lpush(server: Server, rows: dict, timed: Callable[[str, int], list[str]]) -> None:
        for depth in (1, 16):
            key = f"lpush_p{depth}"
            if shutil.which("redis-benchmark") is None:
                rows[key] = {"na": "n/a (redis-benchmark missing)"}
                continue
            log(f"redis: LPUSH (redis-benchmark), pipeline {depth}")
            rate = bench.expected(f"redis_{key}", 30_000 * depth**0.9)
            n = max(10_000, int(rate * bench.duration))
            cmd = ["redis-benchmark", *("-h", "127.0.0.1", "-p", str(server.port))]
            cmd += ["-c", str(bench.args.connections), "-n", str(n), "-P", str(depth)]
            cmd += ["-d", "200", "-t", "lpush", "--csv"]
            rows[key] = guarded(redis_benchmark, bench, server, cmd, n)
            if rows[key].get("mps"):
                bench.rates[f"redis_{key}"] = rows[key]["mps"]

    def unique(depth: int) -> list[str]:  # top-ups whose values stay unique (LREM needs it)
        return ["--start", str(10_000_000 + depth * 10_000_000)]

    start = bench.launcher.redis
    run_peer(bench, out, "redis", start, "redis_queue.py", "reliable", 60_000, lpush, unique)


def redis_benchmark(bench: Bench, server: Server, cmd: list[str], n: int) -> dict:
    result = bench.measure(server, cmd)
    # redis-benchmark reports its own rate over the time it measured; it is count-bound
    result["requests"] = n
    result["messages"] = n
    result["rps"] = result["mps"] = result["rps_reported"]
    result["duration_s"] = n / result["rps_reported"] if result["rps_reported"] else None
    return result


def run_beanstalkd(bench: Bench, out: dict) -> None:
    """reserve + delete and put, both through bench/peers/beanstalk_queue.py."""

    def put(server: Server, rows: dict, timed: Callable[[str, int], list[str]]) -> None:
        for depth in (1, 16):
            log(f"beanstalkd: put, pipeline {depth}")
            rows[f"put_p{depth}"] = guarded(bench.measure, server, timed("put", depth))

    start = bench.launcher.beanstalkd
    run_peer(bench, out, "beanstalkd", start, "beanstalk_queue.py", "work", 40_000, put)


def run_sizing(bench: Bench, out: dict) -> None:
    """The Locust sizing scenario (bench/locust_sizing.py), once, on a fresh server."""
    log("wonderq: Locust sizing scenario (1,000,000 x 200 B, fill then drain)")

    def one() -> dict:
        # 1M single publishes and deletes through Locust take the best part of an hour on
        # one core: the runner waits for the batch routes (the scenario itself falls back).
        check_features(bench, ("batch", "ack", "receive", "metrics"))
        if importlib.util.find_spec("locust") is None:
            return {"na": "n/a (locust missing)"}
        with running(bench.launcher.wonderq) as server:
            prefix = RESULTS_DIR / "sizing"
            cmd = [sys.executable, "-m", "locust", "-f", str(BENCH / "locust_sizing.py")]
            cmd += ["--headless", "--host"]
            cmd += [f"http://127.0.0.1:{server.port}", "--csv", str(prefix)]
            cmd += ["--html", f"{prefix}.html", "--only-summary", "--loglevel", "WARNING"]
            full = [*bench.meter.gen_pin, *cmd]
            t0 = time.perf_counter()
            proc = subprocess.run(
                full, capture_output=True, text=True, cwd=ROOT, timeout=1800, check=False
            )
            text = proc.stdout + proc.stderr
            (RESULTS_DIR / "sizing.log").write_text(text)
            m = SIZING_LINE.search(text)
            return {
                "line": m.group(0).strip() if m else None,
                "exit": proc.returncode,
                "seconds": round(time.perf_counter() - t0, 1),
                "command": shlex.join(cmd),
                "tail": text[-1500:],
            }

    out["sizing"] = guarded(one)


def run_instructions(bench: Bench, names: list[str]) -> dict:
    """Instructions per request of bench/instructions.py's ``names`` (callgrind), once per
    session: they do not move between runs, so they sit beside the rates as the figure noise
    cannot change."""
    if shutil.which("valgrind") is None:
        return {"na": "n/a (valgrind missing)"}
    cmd = [sys.executable, str(BENCH / "instructions.py"), *names]
    log(f"instructions per request (callgrind): {' '.join(names)}")
    proc = subprocess.run(
        [*bench.meter.gen_pin, *cmd],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=tree_env(),
        timeout=3600,
        check=False,
    )
    per: dict[str, int] = {}
    for line in proc.stdout.splitlines():
        m = re.match(r"(\w+)\s+([\d,]+) instructions", line)
        if m:
            per[m.group(1)] = int(m.group(2).replace(",", ""))
    if proc.returncode != 0:
        log(f"  instructions.py exited {proc.returncode}: {proc.stderr[-500:]}")
    return {"per_request": per, "command": shlex.join(cmd), "exit": proc.returncode}
