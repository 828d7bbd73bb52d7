"""beanstalkd as a work queue, driven over its plain-text protocol (no client library).

Workloads (each prints one ``LOADJSON {...}`` line, see bench/loadlib.py):

``fill``  ``put`` ``--count`` jobs of ``--size`` bytes (pipelined), for the memory column.
``put``   ``put 0 0 60 <size>`` one job per command, ``--pipeline`` commands per round.
``work``  the consumer's loop: ``reserve-with-timeout 0`` leases the next job, then
          ``delete <id>`` acknowledges it. With ``--pipeline 1`` each connection strictly
          alternates reserve, wait, delete, wait; with ``--pipeline P`` each round writes the
          deletes of the previous round's jobs and P new reserves in one write.
          Messages = deletes answered DELETED. Fill first.

    python bench/peers/beanstalk_queue.py --port 11300 fill --count 1000000
    python bench/peers/beanstalk_queue.py --port 11300 work -c 64 --pipeline 16 --duration 10

The client is Python on one core and may be the limit (bench/run.py prints its CPU use).
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


def parse_reply(buf: bytearray, pos: int) -> tuple[Any, int] | None:
    """One reply line, with the job body when it is ``RESERVED <id> <bytes>``.

    Returns ``(word, arg)``: ``(b"INSERTED", id)``, ``(b"RESERVED", id)``, ``(b"DELETED", None)``,
    ``(b"TIMED_OUT", None)`` or an error word such as ``(b"NOT_FOUND", None)``.
    """
    end = buf.find(b"\r\n", pos)
    if end < 0:
        return None
    parts = bytes(buf[pos:end]).split()
    word = parts[0] if parts else b""
    if word == b"RESERVED":
        stop = end + 2 + int(parts[2])
        if len(buf) < stop + 2:
            return None
        return (word, parts[1]), stop + 2
    return (word, parts[1] if len(parts) > 1 else None), end + 2


def put_command(size: int) -> bytes:
    return b"put 0 0 60 %d\r\n%s\r\n" % (size, b"x" * size)


async def fill(args: argparse.Namespace) -> dict:
    stats = loadlib.Stats()
    one = put_command(args.size)
    per_round = 256
    left = args.count
    started = time.perf_counter()

    async def worker(proto: loadlib.RoundTripProtocol) -> None:
        nonlocal left
        while left > 0:
            n = min(per_round, left)
            left -= n
            t0 = time.perf_counter_ns()
            replies = await proto.round_trip(one * n, n)
            stats.record(t0)
            stats.requests += n
            for word, _ in replies:
                if word == b"INSERTED":
                    stats.messages += 1
                else:
                    stats.bad += 1

    protos = [await loadlib.connect(args.host, args.port, parse_reply) for _ in range(4)]
    await asyncio.gather(*(worker(p) for p in protos))
    for p in protos:
        p.close()
    return loadlib.summary("beanstalk_fill", stats, time.perf_counter() - started, per_round)


async def put(args: argparse.Namespace) -> dict:
    one = put_command(args.size)
    return await loadlib.produce(
        args, parse_reply, "beanstalk_put", one, lambda r: r[0] == b"INSERTED"
    )


async def work(args: argparse.Namespace) -> dict:
    return await loadlib.consume(
        args,
        parse_reply,
        "beanstalk_work",
        b"reserve-with-timeout 0\r\n",
        lease=lambda reply: reply[1] if reply[0] == b"RESERVED" else None,
        ack=lambda job: b"delete %s\r\n" % job,
        acked=lambda reply: reply[0] == b"DELETED",
    )


def main(argv: list[str] | None = None) -> int:
    return loadlib.peer_main(__doc__ or "", 11300, fill, {"put": put, "work": work}, argv)


if __name__ == "__main__":
    sys.exit(main())
