"""RedisStore costs: every HTTP workload of bench/run.py on MemoryStore, on Redis standalone
and on a Redis Cluster of three primaries, in the same run, with the CPU-seconds per message
of each side, the cost of each script alone, memory per message and a projection to several
WonderQ servers and Redis primaries.

    python bench/redis_bench.py                        # 3 s per workload (a smoke run)
    python bench/redis_bench.py --duration 10 --messages 1000000
    python bench/redis_bench.py --stores redis --only publish batch_publish

Each workload (bench/workloads.py's HTTP_WORKLOADS: publish, receive + delete, batch publish,
batch receive + ack, 16 pipelined publishes) is driven by bench/gen/httpgen.c with 64
connections (``--connections``), as in bench/run.py, so the requests of one event-loop turn
are coalesced into one pipelined write per Redis node. Every workload gets a fresh WonderQ
(``wonderq serve``, or ``--backend redis://...`` / ``redis+cluster://...``) on emptied Redis
nodes; the consuming ones are filled first. WonderQ is pinned to one core, Redis and the load
generator to the other (taskset / sched_setaffinity, as bench/harness.py plans it).

Per workload it reads, before and after the load only:

* WonderQ's CPU: ``/proc/<pid>/stat`` (user + system);
* Redis's CPU: ``INFO cpu`` (``used_cpu_user + used_cpu_sys``, summed over the primaries) and
  ``INFO commandstats`` (calls and ``usec`` of EVALSHA/EVAL: the scripts' own time).

Then, without HTTP: each script alone through the store (``scripts``), 64 calls in flight,
client CPU and Redis ``usec`` per call; memory per message (``used_memory`` after N x 200 B
through the store, beside the same bodies with LPUSH).

Rates on a shared 2-core machine are noise; CPU per message is the figure to read. The
projection is ``min(S / wonderq_cost, P / redis_cost)`` messages per second for S WonderQ
cores and P primaries, from the cluster's measured costs, and is labelled a projection: a
single hot queue is still one primary. Nothing here kills a process it did not start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import resource
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))  # bench/ is not a package
sys.path.insert(0, str(BENCH.parent / "tests"))  # tests/_redis.py starts Redis and clusters
import harness  # noqa: E402
import httpload  # noqa: E402
import loadlib  # noqa: E402
from workloads import HTTP_WORKLOADS, Workload  # noqa: E402

BODY = b"x" * 200
STORES = ("memory", "redis", "cluster")
# A first guess at messages/s when filling for a consuming workload (then the measured rate).
FILL_GUESS = {"recv_delete": 20_000, "batch_recv_ack": 120_000}
FILL_CAP = 1_500_000


class RedisSide:
    """The Redis nodes of one store under test: standalone (one) or a cluster (three
    primaries), started by tests/_redis.py, pinned to ``core``, read by INFO."""

    def __init__(self, kind: str, directory: Path, core: int | None) -> None:
        from _redis import Cluster, RedisProcess

        self.kind = kind
        if kind == "cluster":
            self.cluster: Any = Cluster(directory, primaries=3).start()
            self.nodes = list(self.cluster.nodes)
            self.url = self.cluster.url
        else:
            self.cluster = None
            self.nodes = [RedisProcess(directory).start()]
            self.url = self.nodes[0].url
        if core is not None:
            for node in self.nodes:
                os.sched_setaffinity(node.pid, {core})
        import redis

        self.clients = [redis.Redis(port=n.port, socket_timeout=30) for n in self.nodes]

    def sample(self) -> dict[str, float]:
        """CPU seconds and script calls/usec, summed over the nodes."""
        cpu = calls = usec = 0.0
        for client in self.clients:
            info = client.info("cpu")
            cpu += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
            stats = client.info("commandstats")
            for name in ("cmdstat_evalsha", "cmdstat_eval"):
                if name in stats:
                    calls += int(stats[name]["calls"])
                    usec += int(stats[name]["usec"])
        return {"cpu": cpu, "calls": calls, "usec": usec}

    def per_node_cpu(self) -> list[float]:
        out = []
        for client in self.clients:
            info = client.info("cpu")
            out.append(float(info["used_cpu_user"]) + float(info["used_cpu_sys"]))
        return out

    def flush(self) -> None:
        for client in self.clients:
            client.flushall()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def backend_flags(store: str, side: RedisSide | None) -> list[str]:
    return [] if side is None else ["--backend", side.url]


def run_workload(
    args: argparse.Namespace,
    launcher: harness.Launcher,
    meter: harness.Meter,
    store: str,
    side: RedisSide | None,
    w: Workload,
    rates: dict[str, float],
) -> dict[str, Any]:
    if side is not None:
        side.flush()
    with harness.running(lambda: launcher.wonderq(*backend_flags(store, side))) as server:
        prefill = 0
        if w.prefill:
            guess = rates.get(f"{store}:{w.key}", FILL_GUESS.get(w.key, w.default_rate))
            if store == "memory":
                guess = rates.get(f"{store}:{w.key}", w.default_rate)
            prefill = int(min(FILL_CAP, max(20_000, guess * meter.duration * 1.4)))
            t0 = time.perf_counter()
            got = loadlib.run(httpload.fill("127.0.0.1", server.port, prefill, 200))
            if got["messages"] != prefill:
                raise RuntimeError(f"fill stored {got['messages']} of {prefill}")
            harness.log(f"    filled {prefill:,} in {time.perf_counter() - t0:.1f} s")
        r0 = side.sample() if side else None
        wq0 = server.cpu_s()
        cmd = [str(harness.httpgen()), "--port", str(server.port), "-c", str(args.connections)]
        cmd += ["--duration", f"{meter.duration:g}", "--name", w.key, *w.httpgen]
        result = meter.measure(server, cmd)
        wq1 = server.cpu_s()
        r1 = side.sample() if side else None
        left = None
        if w.prefill:
            with contextlib.suppress(Exception):
                info = httpload.call_sync("127.0.0.1", server.port, "GET", "/v1/queues/default")
                left = json.loads(info.body)["counts"]["ready"]
    msgs = result["messages"] or 0
    row: dict[str, Any] = {
        "store": store,
        "workload": w.key,
        "label": w.label,
        "messages": msgs,
        "msg_per_s": result["mps"],
        "latency_ms": result.get("latency_ms"),
        "prefill": prefill,
        "left": left,
        "wonderq_us": (wq1 - wq0) / msgs * 1e6 if msgs else None,
        "loadgen_cpu": result.get("loadgen_cpu"),
        "other_cpu": result.get("other_cpu"),
        "command": result["command"],
    }
    if r0 is not None and r1 is not None and msgs:
        row["redis_us"] = (r1["cpu"] - r0["cpu"]) / msgs * 1e6
        row["script_us"] = (r1["usec"] - r0["usec"]) / msgs
        row["scripts_per_msg"] = (r1["calls"] - r0["calls"]) / msgs
        calls = r1["calls"] - r0["calls"]
        row["script_us_per_call"] = (r1["usec"] - r0["usec"]) / calls if calls else None
    if msgs and w.prefill:
        rates[f"{store}:{w.key}"] = result["mps"]
    return row


def show(row: dict[str, Any]) -> None:
    def f(key: str, fmt: str = "6.1f") -> str:
        v = row.get(key)
        return format(v, fmt) if isinstance(v, (int, float)) else "     -"

    dry = " (ran dry)" if row.get("left") == 0 else ""
    print(
        f"  {row['store']:<8} {row['label']:<30} {row['msg_per_s']:>9.0f} msg/s   WonderQ "
        f"{f('wonderq_us')} µs/msg   Redis {f('redis_us')} µs/msg (scripts {f('script_us', '5.1f')}"
        f" µs/msg, {f('scripts_per_msg', '4.2f')}/msg, {f('script_us_per_call', '5.1f')} µs/call)"
        f"{dry}",
        flush=True,
    )


def median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each figure over repeated runs (the first run's other fields)."""
    out = dict(rows[0])
    for key in ("msg_per_s", "wonderq_us", "redis_us", "script_us", "scripts_per_msg",
                "script_us_per_call"):  # fmt: skip
        values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
        if values:
            out[key] = statistics.median(values)
    out["runs"] = len(rows)
    return out


# ---- the store alone, without HTTP --------------------------------------------------------


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def scripts_alone(side: RedisSide, calls: int, concurrency: int) -> dict[str, dict[str, float]]:
    """Each operation through RedisStore in this process, ``concurrency`` in flight: client
    CPU per call (this process) and Redis's script usec per call (commandstats)."""
    from wonderq.config import Settings
    from wonderq.redis import RedisStore, wait

    side.flush()
    store = RedisStore(Settings(backend=side.url, max_batch=1000))
    store.open()
    out: dict[str, dict[str, float]] = {}

    async def run() -> None:
        await store.start_bare(asyncio.get_running_loop())
        bodies = [BODY] * 100
        leased: list[int] = []

        async def many(name: str, n: int, make: Any, per: int = 1) -> None:
            done = [0]
            loop = asyncio.get_running_loop()
            finished = loop.create_future()

            def again(x: Any = None) -> None:
                if done[0] >= n:
                    if not finished.done() and done[0] == n:
                        done[0] += 1
                        finished.set_result(None)
                    return
                i = done[0]
                done[0] += 1
                d = make(i)
                if hasattr(d, "add"):
                    d.add(lambda x: again() if x.error is None else finished.set_exception(x.error))
                else:
                    loop.call_soon(again)

            s0, c0, t0 = side.sample(), _cpu(), time.perf_counter()
            for _ in range(concurrency):
                again()
            await finished
            elapsed = time.perf_counter() - t0
            c1, s1 = _cpu(), side.sample()
            k = s1["calls"] - s0["calls"]
            out[name] = {
                "calls_per_s": n / elapsed,
                "client_us_per_call": (c1 - c0) / n * 1e6,
                "redis_cpu_us_per_call": (s1["cpu"] - s0["cpu"]) / n * 1e6,
                "script_us_per_call": (s1["usec"] - s0["usec"]) / k if k else 0.0,
                "messages_per_call": per,
            }
            o = out[name]
            print(
                f"  {name:<26} {o['calls_per_s']:>8.0f} calls/s   client "
                f"{o['client_us_per_call']:6.1f} µs/call   Redis {o['redis_cpu_us_per_call']:6.1f}"
                f" µs/call (script {o['script_us_per_call']:6.1f})",
                flush=True,
            )

        await many("publish", calls, lambda i: store.publish("default", BODY, -1))
        await many(
            "publish_batch 100",
            calls // 20,
            lambda i: store.publish_batch("default", bodies, None),
            100,
        )

        def recv1(i: int) -> Any:
            d = store.receive("default", 1, 1, 60_000)
            d.add(lambda x: leased.extend(_ids(x.value)) if x.error is None else None)
            return d

        await many("receive limit=1", calls, recv1)
        ids = list(leased)
        await many("delete", len(ids), lambda i: store.delete("default", 1, ids[i]))
        leased.clear()

        def recv100(i: int) -> Any:
            d = store.receive("default", 2, 100, 60_000)
            d.add(lambda x: leased.extend(_ids(x.value)) if x.error is None else None)
            return d

        await many("receive limit=100", calls // 20, recv100, 100)
        groups = [leased[i : i + 100] for i in range(0, len(leased), 100)]
        await many(
            "ack 100", len(groups), lambda i: store.delete_batch("default", 2, groups[i]), 100
        )
        await wait(store.purge("default"))
        await store.close()

    asyncio.run(run())
    side.flush()
    return out


def _ids(answer: Any) -> list[int]:
    return [m["id"] for m in json.loads(answer)["messages"]] if answer else []


def memory_per_message(side: RedisSide, n: int) -> dict[str, float]:
    """used_memory per message: n x 200 B through the store's publish script, then the same
    bodies with LPUSH (Redis's own figure for the data alone). Standalone only."""
    from wonderq.config import Settings
    from wonderq.redis import RedisStore, wait

    client = side.clients[0]
    side.flush()
    store = RedisStore(Settings(backend=side.url, max_batch=1000))
    store.open()
    result: dict[str, float] = {}

    async def fill() -> None:
        await store.start_bare(asyncio.get_running_loop())
        await wait(store.put_queue("mem", None))
        before = int(client.info("memory")["used_memory"])
        bodies = [BODY] * 1000
        pending = []
        for _ in range(n // 1000):
            pending.append(wait(store.publish_batch("mem", bodies, None)))
            if len(pending) >= 16:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        after = int(client.info("memory")["used_memory"])
        result["wonderq"] = (after - before) / n
        await store.close()

    asyncio.run(fill())
    side.flush()
    before = int(client.info("memory")["used_memory"])
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        pipe.lpush("list", BODY)
        if i % 10000 == 9999:
            pipe.execute()
    pipe.execute()
    result["lpush"] = (int(client.info("memory")["used_memory"]) - before) / n
    side.flush()
    return result


# ---- the projection -----------------------------------------------------------------------


def projection(rows: list[dict[str, Any]], out: dict[str, Any]) -> None:
    """min(S / WonderQ cost, P / Redis cost), from the cluster's costs (else standalone's)."""
    servers, primaries = (1, 2, 4, 8), range(1, 7)
    print(
        "\nPROJECTION (computed from the measured CPU costs above, not measured): messages/s "
        "for S WonderQ cores x P primaries (a single hot queue stays on one primary)"
    )
    by = {(r["store"], r["workload"]): r for r in rows}
    for w in HTTP_WORKLOADS:
        r = by.get(("cluster", w.key)) or by.get(("redis", w.key))
        if not r or not r.get("wonderq_us") or not r.get("redis_us"):
            continue
        wq, rd = r["wonderq_us"], r["redis_us"]
        print(f"  {w.label} ({r['store']}: WonderQ {wq:.1f} µs/msg, Redis {rd:.1f} µs/msg)")
        print("        " + "".join(f"{'P=' + str(p):>9}" for p in primaries))
        table = {}
        for s in servers:
            cells = [min(s / wq, p / rd) * 1e6 for p in primaries]
            table.update({f"{s}x{p}": c for p, c in zip(primaries, cells, strict=True)})
            print(f"    S={s} " + "".join(f"{_k(c):>9}" for c in cells))
        # linearity in primaries with enough WonderQ cores (S = 8), the WonderQ cores that
        # keep 6 primaries busy, and what a primary of the cluster does against standalone
        lin = table["8x6"] / (6 * table["8x1"])
        need = math.ceil(6 * wq / rd)
        alone = by.get(("redis", w.key))
        per = alone["redis_us"] / rd if alone and alone.get("redis_us") else None
        print(
            f"    growth 1 -> 6 primaries at S=8: {lin:.2f} of linear; linear with S >= {need}"
            + (
                f"; a cluster primary does {per:.2f}x a standalone one's work per CPU"
                if per
                else ""
            )
        )
        out.setdefault("projection", {})[w.key] = {
            "store": r["store"],
            "wonderq_us": wq,
            "redis_us": rd,
            "msg_per_s": table,
            "linear_1_to_6_at_S8": lin,
            "servers_for_6_primaries": need,
            "cluster_vs_standalone_per_cpu": per,
        }


def _k(v: float) -> str:
    return f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v / 1e3:.0f}k"


def goals(rows: list[dict[str, Any]], out: dict[str, Any]) -> None:
    by = {(r["store"], r["workload"]): r for r in rows}
    print("\nIssue 12 goals (from CPU per message; 1 server core, 1 Redis core):")
    found: dict[str, Any] = {}
    for key in ("batch_publish", "batch_recv_ack"):
        r = by.get(("redis", key))
        if r and r.get("wonderq_us") and r.get("redis_us"):
            cap = min(1 / r["wonderq_us"], 1 / r["redis_us"]) * 1e6
            found[key] = cap
            print(
                f"  {key}: {cap:,.0f} msg/s capacity (goal 100,000; measured {r['msg_per_s']:,.0f})"
            )
    m, rr = by.get(("memory", "publish")), by.get(("redis", "publish"))
    if m and rr and m.get("wonderq_us") and rr.get("wonderq_us"):
        ratio = m["wonderq_us"] / rr["wonderq_us"]
        found["publish_ratio"] = ratio
        print(
            f"  single publish per WonderQ core: {ratio:.2f}x MemoryStore's (goal 0.5; "
            f"{rr['wonderq_us']:.1f} vs {m['wonderq_us']:.1f} µs/msg)"
        )
    out["goals"] = found


# ---- main ---------------------------------------------------------------------------------


@contextlib.contextmanager
def redis_side(kind: str, directory: Path, core: int | None) -> Iterator[RedisSide | None]:
    if kind == "memory":
        yield None
        return
    side = RedisSide(kind, directory / kind, core)
    try:
        yield side
    finally:
        side.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", "--seconds", type=float, default=3.0, help="s per workload")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--stores", nargs="+", choices=STORES, default=list(STORES))
    p.add_argument("--only", nargs="+", choices=[w.key for w in HTTP_WORKLOADS])
    p.add_argument("--messages", type=int, default=100_000, help="for the memory figure")
    p.add_argument("--calls", type=int, default=20_000, help="per script alone (0: skip)")
    p.add_argument("--repeat", type=int, default=1, help="runs per workload and store (medians)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()

    # SIGTERM stops the run the way Ctrl-C does: every server it started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    harness.ensure_wonderq_built(True)
    server_pin, gen_pin, pinning = harness.cpu_plan()
    redis_core = int(gen_pin[-1]) if gen_pin else None
    if gen_pin:
        os.sched_setaffinity(0, {int(gen_pin[-1])})
    load = os.getloadavg()
    print(
        f"redis_bench: {args.duration:g} s per workload, {args.connections} connections, "
        f"{os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
        f"{pinning}; Redis on the load generator's core"
    )
    harness.RESULTS_DIR.mkdir(exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out: dict[str, Any] = {
        "command": "python bench/redis_bench.py " + " ".join(sys.argv[1:]),
        "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "load_average": load,
        "pinning": pinning,
        "rows": [],  # medians per store and workload
        "runs": [],  # every run
    }
    workloads = [w for w in HTTP_WORKLOADS if not args.only or w.key in args.only]
    rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="wq-redis-bench-") as tmp:
        launcher = harness.Launcher(server_pin, Path(tmp))
        meter = harness.Meter(gen_pin, args.duration)
        with contextlib.ExitStack() as stack:
            sides = {
                store: stack.enter_context(redis_side(store, Path(tmp), redis_core))
                for store in args.stores
            }
            # Workload by workload, the stores one after the other, --repeat times: the
            # figures compared are taken within seconds of each other (the machine is shared).
            runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
            for rep in range(args.repeat):
                for w in workloads:
                    for store, side in sides.items():
                        try:
                            row = run_workload(args, launcher, meter, store, side, w, rates)
                        except Exception as exc:
                            print(f"  {store} {w.label}: error: {exc}", flush=True)
                            continue
                        row["repeat"] = rep
                        out["runs"].append(row)
                        runs.setdefault((store, w.key), []).append(row)
                        if args.repeat > 1:
                            show(row)
            if args.repeat > 1:
                print(f"medians of {args.repeat} runs:")
            for (_store, _key), rows in runs.items():
                row = median_row(rows)
                out["rows"].append(row)
                show(row)
            for store, side in sides.items():
                if side is not None and args.calls:
                    print(f"  {store}: each operation through the store alone, 64 in flight:")
                    out.setdefault("alone", {})[store] = scripts_alone(side, args.calls, 64)
                if side is not None and side.kind == "redis" and args.messages:
                    figures = memory_per_message(side, args.messages)
                    out["memory"] = figures
                    print(
                        f"  memory per message ({args.messages:,} x 200 B): RedisStore "
                        f"{figures['wonderq']:.0f} B, plain LPUSH {figures['lpush']:.0f} B"
                    )
    projection(out["rows"], out)
    goals(out["rows"], out)
    load = os.getloadavg()
    out["load_average_end"] = load
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    path = args.json or harness.RESULTS_DIR / f"redis-{stamp}.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"figures: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
