"""Redis used as a work queue, driven over raw RESP (no client library in the way).

Workloads (each prints one ``LOADJSON {...}`` line, see bench/loadlib.py):

``fill``      LPUSH ``--count`` unique values of ``--size`` bytes into ``--key`` (1,000 values per
              command, pipelined), for the memory column.
``reliable``  the reliable-queue pattern: ``LMOVE key key:processing RIGHT LEFT`` hands a
              consumer the oldest message and parks it in a processing list; after "work" the
              consumer removes it with ``LREM key:processing 1 <value>``. With ``--pipeline 1``
              each connection strictly alternates LMOVE, wait, LREM, wait. With ``--pipeline P``
              each round writes the LREMs of the previous round's messages and P new LMOVEs in
              one write. Messages = LREMs that removed exactly one value. Fill first.
``lpush``     LPUSH one value per command, ``--pipeline`` deep (redis-benchmark does the same;
              this one exists to cross-check it with the same client as ``reliable``).

    python bench/peers/redis_queue.py --port 6379 fill --count 1000000
    python bench/peers/redis_queue.py --port 6379 reliable -c 64 --pipeline 16 --duration 10

The client is Python on one core: in ``reliable`` it, not Redis, is usually the limit
(bench/run.py prints the load generator's CPU use beside the figure).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import loadlib


class RespError(Exception):
    pass


def parse_resp(buf: bytearray, pos: int) -> tuple[Any, int] | None:
    """One RESP2 reply (simple string, error, integer, bulk string) from buf[pos:]."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        return None
    kind = buf[pos]
    if kind == 36:  # '$' bulk string
        n = int(buf[pos + 1 : end])
        if n < 0:
            return (None, end + 2)  # nil: the list was empty
        stop = end + 2 + n
        if len(buf) < stop + 2:
            return None
        return bytes(buf[end + 2 : stop]), stop + 2
    if kind == 58:  # ':' integer
        return int(buf[pos + 1 : end]), end + 2
    if kind == 43:  # '+' simple string
        return bytes(buf[pos + 1 : end]), end + 2
    if kind == 45:  # '-' error
        return RespError(bytes(buf[pos + 1 : end]).decode()), end + 2
    raise ValueError(f"unsupported RESP reply type {chr(kind)!r}")


def command(*args: bytes) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def value(i: int, size: int) -> bytes:
    """A unique value of exactly ``size`` bytes (LREM must find the one we mean)."""
    head = b"%012d" % i
    return head + b"x" * (size - len(head)) if size > len(head) else head[:size]


async def fill(args: argparse.Namespace) -> dict:
    stats = loadlib.Stats()
    per_cmd = 1000
    conns = 4
    key = args.key.encode()
    started = time.perf_counter()
    next_i = 0

    async def worker(proto: loadlib.RoundTripProtocol) -> None:
        nonlocal next_i
        while next_i < args.count:
            cmds = []
            for _ in range(16):
                if next_i >= args.count:
                    break
                n = min(per_cmd, args.count - next_i)
                vals = [value(args.start + next_i + k, args.size) for k in range(n)]
                next_i += n
                cmds.append(command(b"LPUSH", key, *vals))
                stats.messages += n
            t0 = time.perf_counter_ns()
            replies = await proto.round_trip(b"".join(cmds), len(cmds))
            stats.record(t0)
            stats.requests += len(cmds)
            stats.bad += sum(isinstance(r, RespError) for r in replies)

    protos = [await loadlib.connect(args.host, args.port, parse_resp) for _ in range(conns)]
    await asyncio.gather(*(worker(p) for p in protos))
    for p in protos:
        p.close()
    return loadlib.summary("redis_fill", stats, time.perf_counter() - started, 16)


async def reliable(args: argparse.Namespace) -> dict:
    processing = args.key.encode() + b":processing"
    return await loadlib.consume(
        args,
        parse_resp,
        "redis_reliable",
        command(b"LMOVE", args.key.encode(), processing, b"RIGHT", b"LEFT"),
        lease=lambda value: value if isinstance(value, bytes) else None,
        ack=lambda value: command(b"LREM", processing, b"1", value),
        acked=lambda removed: removed == 1,
    )


async def lpush(args: argparse.Namespace) -> dict:
    one = command(b"LPUSH", args.key.encode(), value(0, args.size))
    return await loadlib.produce(args, parse_resp, "redis_lpush", one, lambda n: isinstance(n, int))


def main(argv: list[str] | None = None) -> int:
    def options(parser: argparse.ArgumentParser, fill: argparse.ArgumentParser) -> None:
        parser.add_argument("--key", default="wonderq-bench")
        fill.add_argument("--start", type=int, default=0, help="first value's number (unique)")

    timed = {"reliable": reliable, "lpush": lpush}
    return loadlib.peer_main(__doc__ or "", 6379, fill, timed, argv, options)


if __name__ == "__main__":
    sys.exit(main())
