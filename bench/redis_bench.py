"""RedisStore costs: throughput, CPU-seconds per operation on both sides, memory per message,
and a projection to several WonderQ servers and Redis primaries.

    python bench/redis_bench.py                  # smoke: short runs, small counts
    python bench/redis_bench.py --messages 1000000 --seconds 10

It starts its own redis-server (a free loopback port, no persistence) and WonderQ servers
(``wonderq serve --backend redis://...`` and, for comparison, the in-memory store), drives
them over HTTP/1.1 keep-alive from this process, and reads:

* WonderQ's CPU from ``/proc/<pid>/stat`` (user + system) before and after each workload;
* Redis's CPU from ``INFO cpu`` (``used_cpu_user + used_cpu_sys``) and its per-script cost
  from ``INFO commandstats`` (``usec`` of EVALSHA);
* memory per message from ``INFO memory`` (``used_memory``) after publishing N 200-byte
  messages through the store, beside the same N bodies pushed with LPUSH.

Throughput here is bounded by this one Python client and a shared machine: the CPU cost per
message is the figure to read. The projection is ``min(S / wonderq_cpu_per_msg, P /
redis_cpu_per_msg)`` messages per second for S server cores and P primaries, labelled as a
projection: a hot queue is still capped at one primary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
BODY = b"x" * 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class Redis:
    """A redis-server we started, and a blocking client to read its INFO."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        exe = shutil.which("redis-server")
        if exe is None:
            sys.exit("redis-server is missing: apt-get install -y redis-server redis-tools")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        import redis

        self.client = redis.Redis(port=self.port)
        for _ in range(200):
            try:
                self.client.ping()
                break
            except Exception:
                time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def cpu_s(self) -> float:
        info = self.client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def script_usec(self) -> tuple[int, int]:
        stats = self.client.info("commandstats")
        calls = usec = 0
        for name in ("cmdstat_evalsha", "cmdstat_eval"):
            if name in stats:
                calls += int(stats[name]["calls"])
                usec += int(stats[name]["usec"])
        return calls, usec

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class WonderQ:
    def __init__(self, *flags: str) -> None:
        exe = Path(sys.executable).with_name("wonderq")
        cmd = [
            str(exe) if exe.exists() else sys.executable,
            *([] if exe.exists() else ["-m", "wonderq"]),
        ]
        self.proc = subprocess.Popen(
            [*cmd, "serve", "--port", "0", "--max-batch", "1000", *flags],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        self.port = 0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                break
        if not self.port:
            self.proc.kill()
            sys.exit("wonderq did not start")

    def cpu_s(self) -> float:
        return proc_cpu_s(self.proc.pid)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Conn:
    """One keep-alive HTTP/1.1 connection (http.client), one request at a time."""

    def __init__(self, port: int) -> None:
        import http.client

        self.http = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(self, method: str, target: str, body: bytes = b"") -> tuple[int, bytes]:
        self.http.request(method, target, body=body)
        resp = self.http.getresponse()
        return resp.status, resp.read()

    def close(self) -> None:
        self.http.close()


def drive(port: int, seconds: float, conns: int, step: Any) -> int:
    """Run ``step(conn)`` (returns messages handled) on ``conns`` connections, one thread
    each, for ``seconds``; returns the messages handled."""
    import threading

    counts = [0] * conns
    stop = time.monotonic() + seconds

    def loop(i: int) -> None:
        conn = Conn(port)
        while time.monotonic() < stop:
            counts[i] += step(conn)
        conn.close()

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts)


def measure(name: str, wq: WonderQ, redis: Redis | None, run: Any) -> dict[str, Any]:
    wq0 = wq.cpu_s()
    r0 = redis.cpu_s() if redis else 0.0
    s0 = redis.script_usec() if redis else (0, 0)
    t0 = time.monotonic()
    messages = run()
    elapsed = time.monotonic() - t0
    wq1 = wq.cpu_s()
    r1 = redis.cpu_s() if redis else 0.0
    s1 = redis.script_usec() if redis else (0, 0)
    row = {
        "workload": name,
        "messages": messages,
        "msg_per_s": messages / elapsed if elapsed else 0,
        "wonderq_cpu_us_per_msg": (wq1 - wq0) / messages * 1e6 if messages else 0,
        "redis_cpu_us_per_msg": (r1 - r0) / messages * 1e6 if messages and redis else 0,
        "redis_script_us_per_msg": (s1[1] - s0[1]) / messages if messages and redis else 0,
        "scripts": s1[0] - s0[0],
    }
    print(
        f"  {name:<28} {messages:>8} msgs {row['msg_per_s']:>9.0f}/s   WonderQ "
        f"{row['wonderq_cpu_us_per_msg']:6.1f} µs/msg   Redis {row['redis_cpu_us_per_msg']:6.1f} "
        f"µs/msg (scripts {row['redis_script_us_per_msg']:5.1f})",
        flush=True,
    )
    return row


def workloads(port: int, seconds: float, conns: int, queue: str) -> dict[str, Any]:
    batch = json.dumps(["x" * 200] * 100).encode()

    def publish_batch(conn: Conn) -> int:
        status, _ = conn.call("POST", f"/v1/queues/{queue}/batch", batch)
        assert status == 201, status
        return 100

    def receive_ack(conn: Conn) -> int:
        cid = id(conn) % 1000
        status, data = conn.call("GET", f"/v1/queues/{queue}/messages?cid={cid}&limit=100")
        ids = [m["id"] for m in json.loads(data)["messages"]]
        if not ids:
            return 0
        body = json.dumps({"cid": cid, "ids": ids}).encode()
        status, _ = conn.call("POST", f"/v1/queues/{queue}/ack", body)
        assert status == 200
        return len(ids)

    def publish_one(conn: Conn) -> int:
        status, _ = conn.call("POST", f"/v1/queues/{queue}/messages", BODY)
        assert status == 201, status
        return 1

    return {
        "batch publish (100 x 200 B)": lambda: drive(port, seconds, conns, publish_batch),
        "batch receive 100 + ack": lambda: drive(port, seconds * 1.5, conns, receive_ack),
        "single publish (200 B)": lambda: drive(port, seconds, conns, publish_one),
    }


def store_in_process(redis: Redis, calls: int, concurrency: int) -> dict[str, float]:
    """The store alone, no HTTP: ``calls`` single publishes with ``concurrency`` in flight,
    the client's CPU per call (this process) and Redis's (the thin RESP path, coalesced)."""
    import resource

    from wonderq.config import Settings
    from wonderq.redis import RedisStore

    store = RedisStore(Settings(backend=redis.url))
    store.open()

    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    out: dict[str, float] = {}

    async def run() -> None:
        await store.start_bare(asyncio.get_running_loop())
        done = [0]
        finished = asyncio.get_running_loop().create_future()

        def again(_d: Any = None) -> None:
            if done[0] >= calls:
                if done[0] == calls and not finished.done():
                    finished.set_result(None)
                return
            done[0] += 1
            store.publish("default", BODY, -1).add(again)

        c0, r0, t0 = cpu(), redis.cpu_s(), time.monotonic()
        for _ in range(concurrency):
            again()
        await finished
        elapsed = time.monotonic() - t0
        out["calls_per_s"] = calls / elapsed
        out["client_cpu_us_per_call"] = (cpu() - c0) / calls * 1e6
        out["redis_cpu_us_per_call"] = (redis.cpu_s() - r0) / calls * 1e6
        await store.close()

    asyncio.run(run())
    return out


def memory_per_message(redis: Redis, n: int) -> dict[str, float]:
    """used_memory per message: n x 200 B through the store's publish script, then the same
    bodies with LPUSH (Redis's own figure for the data alone)."""
    from wonderq.config import Settings
    from wonderq.redis import RedisStore, wait

    client = redis.client
    client.flushall()
    store = RedisStore(Settings(backend=redis.url, max_batch=1000))
    store.open()

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

    result: dict[str, float] = {}
    asyncio.run(fill())
    client.flushall()
    before = int(client.info("memory")["used_memory"])
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        pipe.lpush("list", BODY)
        if i % 10000 == 9999:
            pipe.execute()
    pipe.execute()
    after = int(client.info("memory")["used_memory"])
    result["lpush"] = (after - before) / n
    client.flushall()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per workload (default 2)")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--messages", type=int, default=100_000, help="for the memory figure")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    print(
        f"redis_bench: {args.seconds:g} s per workload, {args.connections} connections, "
        f"{os.cpu_count()} cores, load {load:.1f} (on a busy machine the rates are noise)"
    )
    out: dict[str, Any] = {"rows": []}
    with tempfile.TemporaryDirectory(prefix="wq-redis-bench-") as tmp:
        redis = Redis(Path(tmp))
        try:
            print("RedisStore (one WonderQ server, one Redis):")
            wq = WonderQ("--backend", redis.url)
            try:
                for name, run in workloads(
                    wq.port, args.seconds, args.connections, "default"
                ).items():
                    out["rows"].append({"store": "redis", **measure(name, wq, redis, run)})
            finally:
                wq.stop()
            print("MemoryStore (the same workloads):")
            mem = WonderQ()
            try:
                for name, run in workloads(
                    mem.port, args.seconds, args.connections, "default"
                ).items():
                    out["rows"].append({"store": "memory", **measure(name, mem, None, run)})
            finally:
                mem.stop()
            print("RedisStore in process (no HTTP), single publish, 64 in flight:")
            alone = store_in_process(redis, 20_000, 64)
            out["store_in_process"] = alone
            print(
                f"  {alone['calls_per_s']:.0f} calls/s   client "
                f"{alone['client_cpu_us_per_call']:.1f} µs/call   "
                f"Redis {alone['redis_cpu_us_per_call']:.1f} µs/call"
            )
            print(f"Memory per message, {args.messages} x 200 B:")
            figures = memory_per_message(redis, args.messages)
            out["memory"] = figures
            print(
                f"  RedisStore {figures['wonderq']:.0f} B/msg   "
                f"plain LPUSH {figures['lpush']:.0f} B/msg"
            )
        finally:
            redis.stop()
    # The projection (not a measurement): cores of each side divided by its cost.
    redis_rows = {r["workload"]: r for r in out["rows"] if r["store"] == "redis"}
    print(
        "PROJECTION (from the costs above, not measured): "
        "messages/s for S WonderQ cores x P primaries"
    )
    for name in ("batch publish (100 x 200 B)", "batch receive 100 + ack"):
        r = redis_rows[name]
        wq_cost, redis_cost = r["wonderq_cpu_us_per_msg"], r["redis_cpu_us_per_msg"]
        if not wq_cost or not redis_cost:
            continue
        print(f"  {name}: WonderQ {wq_cost:.1f} µs/msg, Redis {redis_cost:.1f} µs/msg")
        print("       P=" + "".join(f"{p:>10}" for p in range(1, 7)))
        for s in (1, 2, 4, 8):
            cells = "".join(f"{min(s / wq_cost, p / redis_cost) * 1e6:>10.0f}" for p in range(1, 7))
            print(f"    S={s} {cells}")
        out.setdefault("projection", {})[name] = {
            f"{s}x{p}": min(s / wq_cost, p / redis_cost) * 1e6
            for s in (1, 2, 4, 8)
            for p in range(1, 7)
        }
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
