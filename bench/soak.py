"""Endurance: every route, for a long time, on 50 queues; memory and latency must stay flat.

    python bench/soak.py                     # 30 minutes (not part of any test run)
    python bench/soak.py --minutes 2         # a smoke run

A fresh server (pinned like bench/run.py's) and ``--workers`` keep-alive connections, each
looping over a weighted mix: publishes (single, batch, delayed, the seed route; bodies of
10 B to 4 KB, and 40 KB in one publish of 50), receives
with short leases followed by deletes, batch acks, lease changes (extend, release) or
nothing at all (the lease expires and the message comes back), long polls (``wait=1``),
peeks, queue info, listings, attribute updates, a temporary queue created, used and
deleted, purges, ``/healthz`` and ``/metrics``. One queue in five sends a message to the
dead-letter queue after 2 receives; a drainer empties the dead-letter queue. Consumers take
more than producers give, so the depth stays bounded.

Every ``--sample`` seconds: the server's VmRSS, ``wonderq_memory_bytes``, the total depth,
and the p50/p99 latency and error count of the requests of that window. The verdict, after a
warm-up of 20% of the run (at least 30 s):

* memory flat: the median VmRSS of the last fifth of the samples is within 5% of the median
  of the first fifth after the warm-up;
* latency flat: the p99 of the last third of the run (after the warm-up) is at most 1.5 x
  that of the first third, plus 5 ms;
* no error: no 5xx, no connection error, no answer the route does not give.

It prints one line per sample, then ``SOAK VERDICT: PASS`` or ``FAIL`` with the reasons,
and exits 1 on FAIL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from typing import Any

import scalelib
from scalelib import Bench, harness

DLQ = "soak-dlq"


class Conn:
    """One keep-alive HTTP/1.1 connection (asyncio streams): one request at a time."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        if body is not None:
            head += f"Content-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + (body or b""))
        line = await self.reader.readuntil(b"\r\n\r\n")
        status = int(line[9:12])
        length = 0
        close = False
        for h in line.split(b"\r\n")[1:]:
            name, _, value = h.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and b"close" in value.lower():
                close = True
        data = await self.reader.readexactly(length) if length else b""
        if close:
            self.close()
        return status, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class Stats:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.requests = 0

    def take(self) -> tuple[list[float], list[str], int]:
        out = (self.latencies, self.errors, self.requests)
        self.latencies, self.errors, self.requests = [], [], 0
        return out


class Soak:
    def __init__(self, port: int, queues: int, rng: random.Random) -> None:
        self.port = port
        self.queues = [f"soak{k}" for k in range(queues)]
        self.rng = rng
        self.stats = Stats()
        self.stop_at = 0.0
        self.cid = 0

    async def call(
        self,
        conn: Conn,
        method: str,
        path: str,
        body: bytes | None = None,
        ok: tuple[int, ...] = (200, 201, 204),
    ) -> tuple[int, Any]:
        t0 = time.perf_counter()
        try:
            status, data = await conn.call(method, path, body)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            conn.close()
            self.stats.errors.append(f"{method} {path}: {type(exc).__name__}")
            return 0, None
        self.stats.latencies.append(time.perf_counter() - t0)
        self.stats.requests += 1
        if status not in ok:
            self.stats.errors.append(f"{method} {path}: {status} {data[:120]!r}")
        try:
            doc = json.loads(data) if data and data[:1] in b"{[tf" else data
        except ValueError:
            doc = data
        return status, doc

    async def setup(self) -> None:
        conn = Conn(self.port)
        await self.call(conn, "PUT", f"/v1/queues/{DLQ}", b"{}")
        for k, q in enumerate(self.queues):
            attrs: dict[str, Any] = {"visibility_timeout": 2}
            if k % 5 == 0:
                attrs |= {"max_receives": 2, "dead_letter_queue": DLQ}
            await self.call(conn, "PUT", f"/v1/queues/{q}", json.dumps(attrs).encode())
        conn.close()

    def body(self) -> bytes:
        if self.rng.random() < 0.02:
            # A big body: read into the block its message keeps, answered from that block
            # (_core.BodyView), and freed under every route below while answers may hold it.
            return b"m" * 40_000
        return b"m" * self.rng.choice((10, 200, 1000, 4000))

    async def worker(self, n: int) -> None:
        conn = Conn(self.port)
        rng = self.rng
        actions = [
            (self.publish, 6),
            (self.batch, 2),
            (self.consume, 10),
            (self.consume_batch, 4),
            (self.longpoll, 2),
            (self.seed, 2),
            (self.look, 2),
            (self.admin, 1),
        ]
        funcs = [a for a, _ in actions]
        weights = [w for _, w in actions]
        while time.monotonic() < self.stop_at:
            await rng.choices(funcs, weights)[0](conn)
        conn.close()

    async def publish(self, conn: Conn) -> None:
        q = self.rng.choice(self.queues)
        delay = "?delay=0.5" if self.rng.random() < 0.1 else ""
        await self.call(conn, "POST", f"/v1/queues/{q}/messages{delay}", self.body())

    async def batch(self, conn: Conn) -> None:
        q = self.rng.choice(self.queues)
        body = json.dumps(["b" * self.rng.choice((10, 300)) for _ in range(10)]).encode()
        await self.call(conn, "POST", f"/v1/queues/{q}/batch", body)

    def next_cid(self) -> int:
        self.cid += 1
        return self.cid

    async def consume(self, conn: Conn) -> None:
        q = self.rng.choice(self.queues)
        cid = self.next_cid()
        _, doc = await self.call(
            conn, "GET", f"/v1/queues/{q}/messages?cid={cid}&limit=5&visibility=1"
        )
        for m in (doc or {}).get("messages", []) if isinstance(doc, dict) else []:
            r = self.rng.random()
            if r < 0.85:
                await self.call(conn, "DELETE", f"/v1/queues/{q}/messages/{m['id']}?cid={cid}")
            elif r < 0.92:
                await self.call(
                    conn, "POST", f"/v1/queues/{q}/messages/{m['id']}/lease?cid={cid}&timeout=0"
                )
            elif r < 0.96:
                await self.call(
                    conn, "POST", f"/v1/queues/{q}/messages/{m['id']}/lease?cid={cid}&timeout=3"
                )
                await self.call(conn, "DELETE", f"/v1/queues/{q}/messages/{m['id']}?cid={cid}")
            # else: left to expire (and come back, or go to the dead-letter queue)

    async def consume_batch(self, conn: Conn) -> None:
        q = self.rng.choice([*self.queues, DLQ])
        cid = self.next_cid()
        _, doc = await self.call(
            conn, "GET", f"/v1/queues/{q}/messages?cid={cid}&limit=20&visibility=5"
        )
        ids = [m["id"] for m in doc.get("messages", [])] if isinstance(doc, dict) else []
        if ids:
            await self.call(
                conn, "POST", f"/v1/queues/{q}/ack", json.dumps({"cid": cid, "ids": ids}).encode()
            )

    async def longpoll(self, conn: Conn) -> None:
        q = self.rng.choice(self.queues)
        cid = self.next_cid()
        _, doc = await self.call(conn, "GET", f"/v1/queues/{q}/messages?cid={cid}&limit=2&wait=1")
        for m in doc.get("messages", []) if isinstance(doc, dict) else []:
            await self.call(conn, "DELETE", f"/v1/queues/{q}/messages/{m['id']}?cid={cid}")

    async def seed(self, conn: Conn) -> None:
        await self.call(conn, "POST", "/v1/publish", self.body())
        cid = self.next_cid()
        _, doc = await self.call(conn, "GET", f"/v1/consumer?cid={cid}&limit=2&visibility=2")
        for m in doc.get("messages", []) if isinstance(doc, dict) else []:
            await self.call(conn, "DELETE", f"/v1/consumer?cid={cid}&id={m['id']}")

    async def look(self, conn: Conn) -> None:
        q = self.rng.choice(self.queues)
        r = self.rng.random()
        if r < 0.3:
            await self.call(conn, "GET", f"/v1/queues/{q}/peek?limit=3")
        elif r < 0.6:
            await self.call(conn, "GET", f"/v1/queues/{q}")
        elif r < 0.8:
            await self.call(conn, "GET", "/v1/queues?limit=20&prefix=soak")
        elif r < 0.95:
            await self.call(conn, "GET", "/healthz")
        else:
            await self.call(conn, "GET", "/metrics")

    async def admin(self, conn: Conn) -> None:
        r = self.rng.random()
        if r < 0.4:
            q = self.rng.choice(self.queues[1:])  # not one with a dead-letter queue changed
            vis = self.rng.choice((1, 2, 3))
            attrs = {"visibility_timeout": vis}
            if self.queues.index(q) % 5 == 0:
                attrs |= {"max_receives": 2, "dead_letter_queue": DLQ}
            await self.call(conn, "PUT", f"/v1/queues/{q}", json.dumps(attrs).encode())
        elif r < 0.9:
            tmp = f"soak-tmp-{self.rng.randrange(1 << 30)}"
            await self.call(conn, "PUT", f"/v1/queues/{tmp}", b"{}")
            await self.call(conn, "POST", f"/v1/queues/{tmp}/messages", self.body())
            await self.call(conn, "GET", f"/v1/queues/{tmp}/messages?cid=1&limit=1")
            await self.call(conn, "DELETE", f"/v1/queues/{tmp}")
        else:
            q = self.rng.choice(self.queues)
            await self.call(conn, "POST", f"/v1/queues/{q}/purge")


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))] * 1000


async def run(port: int, pid: int, args: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    soak = Soak(port, args.queues, rng)
    await soak.setup()
    start = time.monotonic()
    soak.stop_at = start + args.minutes * 60
    workers = [asyncio.ensure_future(soak.worker(n)) for n in range(args.workers)]
    samples: list[dict[str, Any]] = []
    conn = Conn(port)
    while time.monotonic() < soak.stop_at:
        await asyncio.sleep(min(args.sample, max(0.0, soak.stop_at - time.monotonic())))
        lat, errors, requests = soak.stats.take()
        status, text = await conn.call("GET", "/metrics")
        m = scalelib.httpload.parse_metrics(text.decode()) if status == 200 else {}
        depth = sum(v for k, v in m.items() if k.startswith("wonderq_queue_messages"))
        sample = {
            "t_s": round(time.monotonic() - start, 1),
            "rss": scalelib.rss(pid),
            "memory_bytes": int(m.get("wonderq_memory_bytes", 0)),
            "depth": int(depth),
            "requests": requests,
            "p50_ms": round(pct(lat, 50), 2),
            "p99_ms": round(pct(lat, 99), 2),
            "errors": len(errors),
            "latencies": lat,
        }
        samples.append(sample)
        harness.log(
            f"t={sample['t_s']:>6}s rss {sample['rss'] / 1e6:7.1f} MB  accounted "
            f"{sample['memory_bytes'] / 1e6:6.2f} MB  depth {sample['depth']:>6}  "
            f"{requests / args.sample:7.0f} req/s  p99 {sample['p99_ms']:6.2f} ms  "
            f"errors {len(errors)}"
        )
        for e in errors[:3]:
            harness.log(f"   error: {e}")
    await asyncio.gather(*workers)
    conn.close()
    return verdict(samples, args)


def verdict(samples: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    total_s = args.minutes * 60
    warm = max(30.0, 0.2 * total_s)
    after = [s for s in samples if s["t_s"] > warm]
    reasons = []
    out: dict[str, Any] = {"samples": len(samples), "warm_up_s": warm}
    if len(after) < 5:
        reasons.append(f"too few samples after the warm-up ({len(after)}): run longer")
    else:
        fifth = max(1, len(after) // 5)
        first = statistics.median(s["rss"] for s in after[:fifth])
        last = statistics.median(s["rss"] for s in after[-fifth:])
        drift = (last - first) / first
        out["rss_first_mb"] = round(first / 1e6, 1)
        out["rss_last_mb"] = round(last / 1e6, 1)
        out["rss_drift"] = round(drift, 4)
        if drift > 0.05:
            reasons.append(f"resident memory grew {drift:.1%} after the warm-up (> 5%)")
        third = max(1, len(after) // 3)
        p99_first = pct([x for s in after[:third] for x in s["latencies"]], 99)
        p99_last = pct([x for s in after[-third:] for x in s["latencies"]], 99)
        out["p99_first_ms"] = round(p99_first, 2)
        out["p99_last_ms"] = round(p99_last, 2)
        if p99_last > 1.5 * p99_first + 5:
            reasons.append(f"p99 latency grew from {p99_first:.1f} ms to {p99_last:.1f} ms")
        out["depth_first"] = after[0]["depth"]
        out["depth_last"] = after[-1]["depth"]
    errors = sum(s["errors"] for s in samples)
    out["errors"] = errors
    out["requests"] = sum(s["requests"] for s in samples)
    if errors:
        reasons.append(f"{errors} errors")
    out["verdict"] = "PASS" if not reasons else "FAIL"
    out["reasons"] = reasons
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--queues", type=int, default=50)
    ap.add_argument("--workers", type=int, default=32)
    ap.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    harness.log(
        f"soak: {args.minutes} min, {args.queues} queues, {args.workers} connections, seed {seed}"
    )
    bench = Bench(1.0)
    with bench.wonderq() as server:
        import uvloop

        result = uvloop.run(run(server.port, server.pid, args, random.Random(seed)))
        if server.proc.poll() is not None:
            result["verdict"] = "FAIL"
            result["reasons"].append(f"the server exited ({server.proc.returncode})")
    result["seed"] = seed
    result["command"] = f"python bench/soak.py --minutes {args.minutes} --seed {seed}"
    scalelib.emit("soak", result)
    print(f"SOAK VERDICT: {result['verdict']}" + "".join(f"\n  - {r}" for r in result["reasons"]))
    return 0 if result["verdict"] == "PASS" else 1


if __name__ == "__main__":
    raise SystemExit(main())
