"""Shared pieces of the benchmark's own load tools (bench/httpload.py, bench/peers/*.py).

A load tool here is a few asyncio connections on uvloop, each a closed loop: write one round
(one command, or a pipeline of several), wait for every answer, record the round trip, repeat
until the time is up. Results are printed as one line ``LOADJSON {...}`` with the same keys as
the wrk scripts' ``WRKJSON`` line, so bench/run.py reads both alike.

These tools are Python, so on the load generator's single core they may be what limits a run;
bench/run.py records the load generator's CPU use next to each figure to show when they are.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

try:
    import uvloop
except ImportError:  # the tools still work on stock asyncio, only slower
    uvloop = None  # type: ignore[assignment]


class Stats:
    """Counters and round-trip latencies (microseconds) of one load run."""

    def __init__(self) -> None:
        self.requests = 0  # commands or HTTP requests answered
        self.messages = 0  # messages that went through (stored, or consumed and deleted)
        self.empty = 0  # receives that found the queue empty
        self.bad = 0  # answers the workload did not expect
        self.latency_us = array.array("q")  # one sample per round trip

    def record(self, started_ns: int) -> None:
        self.latency_us.append((time.perf_counter_ns() - started_ns) // 1000)


def percentile(sorted_values: Any, p: float) -> float:
    """Nearest-rank percentile of an ascending sequence; NaN when it is empty."""
    if not len(sorted_values):
        return math.nan
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return float(sorted_values[rank - 1])


def summary(name: str, stats: Stats, duration_s: float, pipeline: int, **extra: Any) -> dict:
    """The same shape as the wrk scripts' WRKJSON line (latencies in milliseconds)."""
    lat = sorted(stats.latency_us)

    def ms(p: float) -> float | None:
        v = percentile(lat, p)
        return None if math.isnan(v) else round(v / 1000.0, 3)

    result = {
        "script": name,
        "requests": stats.requests,
        "duration_s": round(duration_s, 4),
        "messages": stats.messages,
        "empty": stats.empty,
        "bad": stats.bad,
        "pipeline": pipeline,
        "errors": {"connect": 0, "read": 0, "write": 0, "status": stats.bad, "timeout": 0},
        "latency_ms": {
            "p50": ms(50),
            "p90": ms(90),
            "p99": ms(99),
            "p999": ms(99.9),
            "max": round(lat[-1] / 1000.0, 3) if lat else None,
            "mean": round(sum(lat) / len(lat) / 1000.0, 3) if lat else None,
        },
    }
    result.update(extra)
    return result


def emit(result: dict) -> None:
    print("LOADJSON " + json.dumps(result, separators=(",", ":")), flush=True)


# A reply parser takes (buffer, start) and returns (reply, next_start), or None while the
# buffer does not yet hold a whole reply.
Parser = Callable[[bytearray, int], "tuple[Any, int] | None"]


class RoundTripProtocol(asyncio.Protocol):
    """A client connection that writes a round of commands and collects ``n`` replies."""

    def __init__(self, parse: Parser) -> None:
        self.parse = parse
        self.buf = bytearray()
        self.pos = 0  # start of the first unparsed byte in buf
        self.replies: list[Any] = []
        self.expect = 0
        self.waiter: asyncio.Future | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection lost: {exc}"))

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        parse = self.parse
        pos = self.pos
        replies = self.replies
        while True:
            got = parse(buf, pos)
            if got is None:
                break
            replies.append(got[0])
            pos = got[1]
        if pos == len(buf):
            buf.clear()
            pos = 0
        elif pos > 1 << 20:
            del buf[:pos]
            pos = 0
        self.pos = pos
        if len(replies) >= self.expect and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(replies)

    async def round_trip(self, payload: bytes, n: int) -> list[Any]:
        """Write ``payload`` (holding ``n`` commands) and return their ``n`` replies in order."""
        assert self.transport is not None, "not connected"
        self.replies = []
        self.expect = n
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(payload)
        return await self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def connect(host: str, port: int, parse: Parser) -> RoundTripProtocol:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(lambda: RoundTripProtocol(parse), host, port)
    return proto


async def run_for(
    duration_s: float, workers: list[Callable[[Callable[[], bool]], Awaitable[None]]]
) -> float:
    """Run every worker until ``duration_s`` has passed; returns the measured wall time.

    Each worker gets a ``running()`` callable and loops while it returns True.
    """
    deadline = time.perf_counter() + duration_s
    started = time.perf_counter()

    def running() -> bool:
        return time.perf_counter() < deadline

    await asyncio.gather(*(w(running) for w in workers))
    return time.perf_counter() - started


def run(main: Awaitable[Any]) -> Any:
    """Run a coroutine on uvloop when it is installed."""
    if uvloop is not None:
        return uvloop.run(main)  # type: ignore[arg-type]
    return asyncio.run(main)  # type: ignore[arg-type]


async def produce(
    args: argparse.Namespace, parse: Parser, name: str, put: bytes, stored: Callable[[Any], bool]
) -> dict:
    """The producer's loop of a peer tool, on ``args.connections`` connections for
    ``args.duration`` seconds: each round writes ``args.pipeline`` copies of the command
    ``put`` and waits for their replies; ``stored(reply)`` says whether one went through."""
    stats = Stats()
    payload = put * args.pipeline

    async def worker(running: Callable[[], bool]) -> None:
        proto = await connect(args.host, args.port, parse)
        try:
            while running():
                t0 = time.perf_counter_ns()
                replies = await proto.round_trip(payload, args.pipeline)
                stats.record(t0)
                stats.requests += args.pipeline
                for reply in replies:
                    if stored(reply):
                        stats.messages += 1
                    else:
                        stats.bad += 1
        finally:
            proto.close()

    elapsed = await run_for(args.duration, [worker] * args.connections)
    return summary(f"{name}_p{args.pipeline}", stats, elapsed, args.pipeline)


async def consume(
    args: argparse.Namespace,
    parse: Parser,
    name: str,
    take: bytes,
    lease: Callable[[Any], Any],
    ack: Callable[[Any], bytes],
    acked: Callable[[Any], bool],
) -> dict:
    """The consumer's loop of a peer tool, on ``args.connections`` connections for
    ``args.duration`` seconds. ``take`` leases the next message; ``lease(reply)`` is the
    handle its reply gives, or None when the queue was empty; ``ack(handle)`` acknowledges it
    and ``acked(reply)`` says whether that went through (a message). With ``args.pipeline``
    1 a connection strictly alternates take, wait, ack, wait; with P, each round writes the
    acks of the previous round's messages and P new takes at once."""
    stats = Stats()
    depth = args.pipeline

    def count_acks(replies: list[Any]) -> None:
        for reply in replies:
            if acked(reply):
                stats.messages += 1
            else:
                stats.bad += 1

    async def worker(running: Callable[[], bool]) -> None:
        proto = await connect(args.host, args.port, parse)
        try:
            if depth == 1:
                while running():
                    t0 = time.perf_counter_ns()
                    (reply,) = await proto.round_trip(take, 1)
                    stats.record(t0)
                    stats.requests += 1
                    handle = lease(reply)
                    if handle is None:
                        stats.empty += 1
                        continue
                    t0 = time.perf_counter_ns()
                    count_acks(await proto.round_trip(ack(handle), 1))
                    stats.record(t0)
                    stats.requests += 1
                return
            held: list[Any] = []
            while True:
                more = running()
                cmds = [ack(handle) for handle in held]
                if more:
                    cmds.append(take * depth)
                n = len(held) + (depth if more else 0)
                if n == 0:
                    break
                t0 = time.perf_counter_ns()
                replies = await proto.round_trip(b"".join(cmds), n)
                stats.record(t0)
                stats.requests += n
                count_acks(replies[: len(held)])
                held = [h for h in map(lease, replies[len(held) :]) if h is not None]
                if more and not held:
                    stats.empty += 1
        finally:
            proto.close()

    elapsed = await run_for(args.duration, [worker] * args.connections)
    return summary(f"{name}_p{depth}", stats, elapsed, depth)


Workload = Callable[[argparse.Namespace], Awaitable[dict]]


def peer_main(
    doc: str,
    port: int,
    fill: Workload,
    timed: dict[str, Workload],
    argv: list[str] | None = None,
    options: Callable[[argparse.ArgumentParser, argparse.ArgumentParser], None] | None = None,
) -> int:
    """The command line every bench/peers/ tool shares: ``--host --port --size``, a ``fill``
    workload (``--count``) and timed workloads (``-c --pipeline --duration``); ``options``
    adds a tool's own to the main parser and to ``fill``'s. Runs the chosen workload, prints
    its LOADJSON line, exits 1 on bad answers."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=port)
    parser.add_argument("--size", type=int, default=200, help="bytes per message")
    sub = parser.add_subparsers(dest="workload", required=True)
    f = sub.add_parser("fill")
    f.add_argument("--count", type=int, default=1_000_000)
    if options is not None:
        options(parser, f)
    for name in timed:
        p = sub.add_parser(name)
        p.add_argument("-c", "--connections", type=int, default=64)
        p.add_argument("--pipeline", type=int, default=1)
        p.add_argument("--duration", type=float, default=10.0, help="seconds")
    args = parser.parse_args(argv)
    work = fill if args.workload == "fill" else timed[args.workload]
    result = run(work(args))
    emit(result)
    return 1 if result["bad"] else 0
