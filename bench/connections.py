"""Many connections: an idle crowd, parked long polls and an accept storm beside busy ones.

    python bench/connections.py                 # 10,000 idle + 5,000 long polls, 3 x 5 s
    python bench/connections.py --idle 2000 --longpolls 1000 --runs 1 --duration 2  # smoke

One fresh server (``--max-connections 20000 --idle-timeout 600``, pinned like run.py's):

1. the busy rate without a crowd: httpgen's publish, receive, delete cycle on 64
   connections (``-c 64``);
2. the accept storm: ``--idle`` connections opened in one second (paced evenly, from
   127.0.0.2-5 so no source port range runs out), each sending ``GET /healthz`` and reading
   its answer, then staying open and idle; connect errors, answers that are not 200, the
   time for all of them and the server's VmRSS growth per idle connection;
3. ``--longpolls`` receives parked on an empty queue (``wait=20``, parked again when
   answered), VmRSS growth per parked long poll;
4. the busy rate again with the crowd in place (and once more after it left): the ratio
   with to without is the figure (goal >= 0.8);
5. the cap: a second server with ``--max-connections 1000`` takes a storm of 1,200
   connections: every one over the cap must be answered ``503 too_many_connections`` and
   closed, none reset or left hanging.

The crowd lives in this process (its own event loop in a thread), the busy load in httpgen.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import threading
import time
from typing import Any

import scalelib
from scalelib import Bench, harness

BODY = "x" * 200
HEALTH = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
SOURCES = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]


def cycle_args() -> list[str]:
    return [
        "--recvdel",
        "/v1/consumer?cid=1001&limit=1&visibility=60",
        "/v1/consumer?cid=1001&id=",
        "--publish",
        "/v1/publish",
        "--body",
        BODY,
    ]


class Client(asyncio.Protocol):
    """One connection: sends ``request``, counts answers (status of each), and with
    ``again`` sends it again after each answer (a long poll re-parking)."""

    def __init__(self, request: bytes, again: bool, done: asyncio.Future[int]) -> None:
        self.request = request
        self.again = again
        self.done = done
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.answers = 0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buf) < end + 4 + length:
                return
            status = int(head[9:12])
            self.buf = self.buf[end + 4 + length :]
            self.answers += 1
            if not self.done.done():
                self.done.set_result(status)
            if self.again and self.transport is not None:
                self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.done.done():
            self.done.set_result(-1)


class Crowd:
    """Connections held open in a thread of their own (uvloop)."""

    def __init__(self) -> None:
        import uvloop

        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.clients: list[Client] = []

    def run(self, coro: Any, timeout: float = 300) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _open(
        self, port: int, request: bytes, again: bool, source: str
    ) -> tuple[str, Client | None]:
        done: asyncio.Future[int] = self.loop.create_future()
        try:
            _, client = await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: Client(request, again, done), "127.0.0.1", port, local_addr=(source, 0)
                ),
                30,
            )
        except (OSError, asyncio.TimeoutError) as exc:
            return f"connect: {type(exc).__name__}", None
        if again:
            return "parked", client
        try:
            status = await asyncio.wait_for(done, 30)
        except asyncio.TimeoutError:
            return "no answer", client
        return str(status), client

    async def storm(
        self, port: int, count: int, seconds: float, request: bytes = HEALTH, again: bool = False
    ) -> dict[str, Any]:
        """``count`` connections opened evenly over ``seconds``; outcome counts."""
        t0 = time.perf_counter()
        tasks = []
        step = seconds / count
        for i in range(count):
            tasks.append(
                asyncio.ensure_future(self._open(port, request, again, SOURCES[i % len(SOURCES)]))
            )
            if i % 50 == 49:
                await asyncio.sleep(max(0.0, t0 + (i + 1) * step - time.perf_counter()))
        results = await asyncio.gather(*tasks)
        took = time.perf_counter() - t0
        outcomes: dict[str, int] = {}
        for outcome, client in results:
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            if client is not None:
                self.clients.append(client)
        return {"count": count, "seconds": round(took, 2), "outcomes": outcomes}

    def close_all(self) -> None:
        async def close() -> None:
            for c in self.clients:
                if c.transport is not None:
                    c.transport.abort()
            self.clients.clear()
            await asyncio.sleep(0.2)

        self.run(close())

    def stop(self) -> None:
        self.close_all()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def settle_rss(pid: int) -> int:
    time.sleep(1.0)
    return scalelib.rss(pid)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--idle", type=int, default=10_000)
    ap.add_argument("--longpolls", type=int, default=5_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--cap", type=int, default=1000, help="--max-connections of the cap test")
    args = ap.parse_args()
    fds = scalelib.raise_fd_limit()
    if fds < args.idle + args.longpolls + 200:
        raise SystemExit(f"the open-file limit ({fds}) is too low for this crowd")
    bench = Bench(args.duration)
    doc: dict[str, Any] = {"machine": scalelib.machine(), "pinning": bench.pinning}
    crowd = Crowd()
    try:
        with bench.wonderq("--max-connections", "20000", "--idle-timeout", "600") as server:
            port = server.port
            scalelib.create_queues(port, ["lp"])
            busy = {"without": [], "with": []}

            def run(label: str) -> None:
                for _ in range(args.runs):
                    r = bench.gen(server, *cycle_args(), name=label)
                    harness.log(
                        f"  {label}: {r['mps']:,.0f} msg/s, p99 {r['latency_ms']['p99']} ms"
                    )
                    busy["without" if label == "no crowd" else "with"].append(r)

            run("no crowd")
            rss0 = settle_rss(server.pid)
            storm = crowd.run(crowd.storm(port, args.idle, 1.0))
            rss1 = settle_rss(server.pid)
            harness.log(f"storm: {storm}; RSS {rss0:,} -> {rss1:,}")
            longpoll = b"GET /v1/queues/lp/messages?cid=7&wait=20 HTTP/1.1\r\nHost: x\r\n\r\n"
            parked = crowd.run(crowd.storm(port, args.longpolls, 2.0, longpoll, again=True))
            rss2 = settle_rss(server.pid)
            waiting = scalelib.metrics(port).get("wonderq_waiting_receives")
            connections = scalelib.metrics(port).get("wonderq_connections")
            harness.log(f"long polls: {parked}; waiting {waiting}; RSS {rss2:,}")
            run("crowd")
            alive = sum(1 for c in crowd.clients if not c.closed)
            crowd.close_all()
            run("no crowd")
            without = scalelib.summary(busy["without"])
            with_crowd = scalelib.summary(busy["with"])
            doc["busy"] = {
                "without crowd": without,
                "with crowd": with_crowd,
                "x_without": round(with_crowd["mps"] / without["mps"], 3),
            }
            doc["storm"] = storm
            doc["idle"] = {
                "connections": args.idle,
                "rss_before": rss0,
                "rss_after": rss1,
                "bytes_per_idle_connection": round((rss1 - rss0) / args.idle),
            }
            doc["longpolls"] = {
                "parked": parked,
                "waiting_receives_metric": waiting,
                "connections_metric": connections,
                "bytes_per_parked_long_poll": round((rss2 - rss1) / args.longpolls),
                "crowd_still_open_after_busy_runs": alive,
            }
        with bench.wonderq("--max-connections", str(args.cap)) as server:
            over = int(args.cap * 1.2)
            cap = crowd.run(crowd.storm(server.port, over, 1.0))
            crowd.close_all()
            cap["expected"] = {"200": args.cap, "503": over - args.cap}
            doc["cap"] = cap
            harness.log(f"cap {args.cap}: {cap}")
    finally:
        with contextlib.suppress(Exception):
            crowd.stop()
    doc["median_note"] = "busy rates: medians of the runs before and after the crowd vs with it"
    scalelib.emit("connections", doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
