"""Raw HTTP/1.1 helpers for the benchmark: probe WonderQ's routes, fill a queue, read its
counters, and measure long polling. Used by bench/run.py; runnable alone:

    python bench/httpload.py --port 8080 probe
    python bench/httpload.py --port 8080 fill --count 1000000 --size 200
    python bench/httpload.py --port 8080 longpoll --waiters 1000 --idle 10 --pid SERVER_PID

``fill`` uses ``POST /v1/queues/{q}/batch`` (1,000 messages a request) when the server has it,
else pipelined ``POST /v1/publish`` (64 requests a round on 4 connections).

``longpoll`` parks ``--waiters`` receivers (``GET /v1/consumer?cid=I&limit=1&wait=20``) on an empty
queue, reads the server's CPU seconds from /proc/PID/stat across ``--idle`` idle seconds, then
publishes ``--wakes`` messages one at a time and times, for each, the gap between writing the
publish and the parked receiver reading its answer (each woken waiter parks again at the back
of the FIFO, so 1,000 wakes answer each of 1,000 waiters once). With the batch route it also
publishes 1,000 messages in one request and reports when the last waiter got its answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loadlib

CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------------------------
# HTTP framing


class HttpReply:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: bytes, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


def parse_http(buf: bytearray, pos: int) -> tuple[HttpReply, int] | None:
    """One HTTP/1.1 response framed by Content-Length (WonderQ always sends it)."""
    end = buf.find(b"\r\n\r\n", pos)
    if end < 0:
        return None
    head = bytes(buf[pos : end + 2])
    status = int(head[9:12])
    m = _CONTENT_LENGTH.search(head)
    length = int(m.group(1)) if m else 0
    stop = end + 4 + length
    if len(buf) < stop:
        return None
    if 100 <= status < 200:  # interim answer: skip it, the real one follows
        return parse_http(buf, end + 4)
    return HttpReply(status, head, bytes(buf[end + 4 : stop])), stop


def request(method: str, path: str, body: bytes | None = None, ctype: str = "") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
        if ctype:
            lines.append(f"Content-Type: {ctype}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


async def call(
    host: str, port: int, method: str, path: str, body: bytes | None = None, ctype: str = ""
) -> HttpReply:
    """One request on a fresh connection (for probes and admin; not for load)."""
    proto = await loadlib.connect(host, port, parse_http)
    try:
        (reply,) = await asyncio.wait_for(
            proto.round_trip(request(method, path, body, ctype), 1), 30
        )
        return reply
    finally:
        proto.close()


def call_sync(host: str, port: int, method: str, path: str, body: bytes | None = None) -> HttpReply:
    return loadlib.run(call(host, port, method, path, body))


# --------------------------------------------------------------------------------------------
# Probing and counters

FEATURES = ("publish", "receive", "delete", "batch", "ack", "queue_info", "metrics", "longpoll")


async def probe(host: str, port: int) -> dict[str, bool]:
    """Which of the routes the benchmark uses answer as the contract says (2xx).

    Leaves a few messages in queue ``default``: probe a server you will not measure.
    """
    found: dict[str, bool] = {}

    async def ok(name: str, method: str, path: str, body: bytes | None = None) -> HttpReply | None:
        try:
            reply = await call(host, port, method, path, body, "application/json")
        except (OSError, asyncio.TimeoutError, ValueError):
            found[name] = False
            return None
        found[name] = 200 <= reply.status < 300
        return reply if found[name] else None

    await ok("publish", "POST", "/v1/publish", b"probe")
    r = await ok("receive", "GET", "/v1/consumer?cid=1&limit=1")
    msg_id = 1
    if r is not None:
        try:
            msg_id = r.json()["messages"][0]["id"]
        except (ValueError, KeyError, IndexError, TypeError):
            found["receive"] = False
    await ok("delete", "DELETE", f"/v1/consumer?cid=1&id={msg_id}")
    r = await ok("batch", "POST", "/v1/queues/default/batch", b'["probe-1","probe-2"]')
    ids = []
    if r is not None:
        ids = r.json().get("ids", [])
        found["batch"] = len(ids) == 2
    await ok("ack", "POST", "/v1/queues/default/ack", json.dumps({"cid": 1, "ids": ids}).encode())
    await ok("queue_info", "GET", "/v1/queues/default")
    r = await ok("metrics", "GET", "/metrics")
    if r is not None:
        found["metrics"] = b"process_resident_memory_bytes" in r.body
    await ok("longpoll", "GET", "/v1/consumer?cid=2&limit=1&wait=0.01")
    return found


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {"name{labels}": value} (labels kept verbatim)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        try:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
        except ValueError:
            continue
    return out


def metric(metrics: dict[str, float], name: str, queue: str | None = None) -> float | None:
    """The value of ``name`` (optionally for one queue), None when absent."""
    if queue is None and name in metrics:
        return metrics[name]
    for key, value in metrics.items():
        if key.startswith(name + "{") and (queue is None or f'queue="{queue}"' in key):
            return value
    return None


async def counters(host: str, port: int, queue: str = "default") -> dict[str, Any]:
    """Depth and totals of a queue: from GET /v1/queues/{q}, else from /metrics."""
    try:
        r = await call(host, port, "GET", f"/v1/queues/{queue}")
        if r.status == 200:
            info = r.json()
            return {"counts": info.get("counts", {}), "totals": info.get("totals", {})}
    except (OSError, ValueError, asyncio.TimeoutError):
        pass
    r = await call(host, port, "GET", "/metrics")
    m = parse_metrics(r.body.decode())
    counts = {}
    for state in ("ready", "leased", "delayed"):
        for key, value in m.items():
            if (
                key.startswith("wonderq_queue_messages{")
                and f'queue="{queue}"' in key
                and f'state="{state}"' in key
            ):
                counts[state] = int(value)
    totals = {}
    for t in ("published", "delivered", "deleted", "expired", "dead_lettered"):
        v = metric(m, f"wonderq_{t}_total", queue)
        if v is not None:
            totals[t] = int(v)
    return {"counts": counts, "totals": totals}


# --------------------------------------------------------------------------------------------
# Fill


async def fill(
    host: str, port: int, count: int, size: int = 200, queue: str = "default", batch: int = 1000
) -> dict:
    """Publish ``count`` messages of ``size`` bytes; batch route when it answers, else pipelined
    single publishes. Returns a LOADJSON-shaped summary (messages = messages stored)."""
    stats = loadlib.Stats()
    started = time.perf_counter()
    item = b'"' + b"x" * size + b'"'
    left = count
    use_batch = batch > 1
    if use_batch:
        probe_reply = await call(
            host, port, "POST", f"/v1/queues/{queue}/batch", b"[" + item + b"]", "application/json"
        )
        use_batch = probe_reply.status == 201
        if use_batch:
            left -= 1
            stats.messages += 1
    one = request("POST", "/v1/publish", b"x" * size, "text/plain; charset=utf-8")

    async def worker(proto: loadlib.RoundTripProtocol) -> None:
        nonlocal left
        while left > 0:
            if use_batch:
                n = min(batch, left)
                left -= n
                body = b"[" + b",".join([item] * n) + b"]"
                payload = request("POST", f"/v1/queues/{queue}/batch", body, "application/json")
                expect, per = 1, n
            else:
                n = min(64, left)
                left -= n
                payload, expect, per = one * n, n, 1
            t0 = time.perf_counter_ns()
            replies = await proto.round_trip(payload, expect)
            stats.record(t0)
            stats.requests += expect
            for r in replies:
                if r.status == 201:
                    stats.messages += per
                else:
                    stats.bad += 1
                    if stats.bad == 1:
                        print(f"fill: {r.status} {r.body[:200]!r}", file=sys.stderr)

    protos = [await loadlib.connect(host, port, parse_http) for _ in range(4)]
    try:
        await asyncio.gather(*(worker(p) for p in protos))
    finally:
        for p in protos:
            p.close()
    name = "fill_batch" if use_batch else "fill_publish"
    return loadlib.summary(name, stats, time.perf_counter() - started, 1)


# --------------------------------------------------------------------------------------------
# Long polling


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class Waiter(asyncio.Protocol):
    """One parked receiver: sends a long-poll receive, re-sends it after every answer."""

    def __init__(self, cid: int, wait_s: int, on_message: Any) -> None:
        self.req = request("GET", f"/v1/consumer?cid={cid}&limit=1&wait={wait_s}")
        self.buf = bytearray()
        self.on_message = on_message
        self.transport: asyncio.Transport | None = None
        self.answers = 0
        self.empty = 0
        self.errors = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def park(self) -> None:
        if self.transport is not None:
            self.transport.write(self.req)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter_ns()
        self.buf += data
        while True:
            got = parse_http(self.buf, 0)
            if got is None:
                return
            reply, end = got
            del self.buf[:end]
            self.answers += 1
            if reply.status != 200:
                self.errors += 1
            elif b'"id"' in reply.body:
                self.on_message(now)
            else:
                self.empty += 1
            self.park()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def longpoll(
    host: str, port: int, pid: int, waiters: int = 1000, idle_s: float = 10.0, wakes: int = 1000
) -> dict:
    loop = asyncio.get_running_loop()
    woken: asyncio.Queue[int] = asyncio.Queue()
    protos: list[Waiter] = []
    for i in range(waiters):
        _, w = await loop.create_connection(
            lambda i=i: Waiter(10_000 + i, 20, woken.put_nowait), host, port
        )
        protos.append(w)
    for w in protos:
        w.park()
    await asyncio.sleep(1.0)  # let every receive reach the server and park
    early = sum(w.answers for w in protos)
    cpu0, t0 = proc_cpu_s(pid), time.perf_counter()
    await asyncio.sleep(idle_s)
    cpu1, t1 = proc_cpu_s(pid), time.perf_counter()
    idle_answers = sum(w.answers for w in protos) - early

    publisher = await loadlib.connect(host, port, parse_http)
    one = request("POST", "/v1/publish", b"x" * 200, "text/plain; charset=utf-8")
    lat_us = []
    lost = 0
    for _ in range(wakes):
        if lost >= 20:  # the server does not park receivers: do not wait 2 s a thousand times
            break
        t_pub = time.perf_counter_ns()
        (reply,) = await publisher.round_trip(one, 1)
        if reply.status != 201:
            lost += 1
            continue
        try:
            t_ans = await asyncio.wait_for(woken.get(), 2.0)
        except asyncio.TimeoutError:
            lost += 1
            continue
        lat_us.append((t_ans - t_pub) / 1000)

    burst = None
    t_pub = time.perf_counter_ns()
    reply = await publisher.round_trip(
        request(
            "POST",
            "/v1/queues/default/batch",
            b"[" + b",".join([b'"' + b"y" * 200 + b'"'] * waiters) + b"]",
            "application/json",
        ),
        1,
    )
    if reply[0].status == 201:
        last = t_pub
        got = 0
        try:
            while got < waiters:
                last = await asyncio.wait_for(woken.get(), 2.0)
                got += 1
        except asyncio.TimeoutError:
            pass
        burst = {"messages": waiters, "answered": got, "last_after_publish_ms": None}
        burst["last_after_publish_ms"] = round(max(0, last - t_pub) / 1e6, 3)
    publisher.close()
    for w in protos:
        if w.transport is not None:
            w.transport.close()

    lat_us.sort()
    return {
        "script": "longpoll",
        "waiters": waiters,
        "parked_early_answers": early,
        "idle_s": round(t1 - t0, 3),
        "idle_cpu_s": round(cpu1 - cpu0, 4),
        "idle_answers": idle_answers,
        "wakes": wakes,
        "wakes_lost": lost,
        "wake_ms": {
            "p50": round(loadlib.percentile(lat_us, 50) / 1000, 3) if lat_us else None,
            "p99": round(loadlib.percentile(lat_us, 99) / 1000, 3) if lat_us else None,
            "max": round(lat_us[-1] / 1000, 3) if lat_us else None,
        },
        "errors": sum(w.errors for w in protos),
        "burst": burst,
    }


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("probe")
    sub.add_parser("counters").add_argument("--queue", default="default")
    f = sub.add_parser("fill")
    f.add_argument("--count", type=int, default=1_000_000)
    f.add_argument("--size", type=int, default=200)
    f.add_argument("--queue", default="default")
    f.add_argument("--batch", type=int, default=1000, help="1 = single publishes only")
    lp = sub.add_parser("longpoll")
    lp.add_argument("--pid", type=int, required=True, help="server PID, for its CPU time")
    lp.add_argument("--waiters", type=int, default=1000)
    lp.add_argument("--idle", type=float, default=10.0)
    lp.add_argument("--wakes", type=int, default=1000)
    args = parser.parse_args(argv)
    if args.what == "probe":
        print(json.dumps(loadlib.run(probe(args.host, args.port))))
    elif args.what == "counters":
        print(json.dumps(loadlib.run(counters(args.host, args.port, args.queue))))
    elif args.what == "fill":
        result = loadlib.run(
            fill(args.host, args.port, args.count, args.size, args.queue, args.batch)
        )
        loadlib.emit(result)
        return 1 if result["bad"] else 0
    else:
        result = loadlib.run(
            longpoll(args.host, args.port, args.pid, args.waiters, args.idle, args.wakes)
        )
        loadlib.emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
