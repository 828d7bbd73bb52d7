"""What the Redis store reports: a queue's ``queue_info`` decoded from its script's reply, and
the figures behind ``stats()``, the memory gauges and ``/metrics``, refreshed from Redis only
while someone reads them."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from .answers import _wait
from .connection import encode

if TYPE_CHECKING:
    from .store import RedisStore

log = logging.getLogger("wonderq.redis")

STATS_IDLE_S = 30.0  # stop refreshing stats() this long after the last reader


def _meta(raw: bytes | None) -> str | None:
    """The queue's meta as stored by put_queue: "" is null, "=<text>" is the text."""
    return raw[1:].decode() if raw else None


def _opt_int(value: bytes | None) -> int | None:
    if value is None or value == b"":
        return None
    return int(value)


def info_dict(name: str, reply: list[Any]) -> dict[str, Any]:
    """The engine's ``queue_info`` shape from the info script's reply."""
    flat = reply[0]
    a = {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)}
    t = {reply[4][i].decode(): int(reply[4][i + 1]) for i in range(0, len(reply[4]), 2)}
    return {
        "name": name,
        "attributes": {
            "visibility_timeout_ms": int(a.get("vis", 0)),
            "delay_ms": int(a.get("delay", 0)),
            "max_receives": _opt_int(a.get("maxr")),
            "dead_letter_queue": (a.get("dlq") or b"").decode() or None,
            "max_message_bytes": int(a.get("mmb", 0)),
            "retention_ms": _opt_int(a.get("ret")),
            "meta": _meta(a.get("meta")),
        },
        "counts": {"ready": int(reply[1]), "leased": int(reply[2]), "delayed": int(reply[3])},
        "totals": {
            k: t.get(k, 0)
            for k in ("published", "delivered", "deleted", "expired", "dead_lettered")
        },
    }


def metric_rows(store: RedisStore) -> list[tuple[str, str, str, float]]:
    """The store's own ``/metrics`` rows: (name, type, help, value)."""
    backend = store.backend
    rows: list[tuple[str, str, str, float]] = [
        (
            "wonderq_redis_up",
            "gauge",
            "1 while Redis answers.",
            float(bool(backend and backend.reachable)),
        ),
        (
            "wonderq_redis_sweeper",
            "gauge",
            "1 while this server holds the sweeper lease.",
            float(bool(store.sweeper and store.sweeper.holder)),
        ),
        (
            "wonderq_redis_dead_letter_moves_total",
            "counter",
            "Dead-letter moves this server started.",
            float(store.dead_letter_moves),
        ),
        (
            "wonderq_redis_wait_failures_total",
            "counter",
            "Publishes answered 503 because replicas did not confirm them.",
            float(store.wait_failures),
        ),
    ]
    if backend is not None:
        rows.append(
            (
                "wonderq_redis_errors_total",
                "counter",
                "Requests answered 503 (Redis unreachable or too slow).",
                float(backend.errors),
            )
        )
        rows.append(
            (
                "wonderq_redis_retries_total",
                "counter",
                "Requests re-sent where they surely had not run (MOVED, refused connect...).",
                float(backend.retries),
            )
        )
    return rows


async def refresh_loop(store: RedisStore) -> None:
    """Keep stats() and the memory figures at most about a second old while someone
    reads them (/metrics, the status page): every server of a deployment reading every
    queue's counters every second would cost Redis servers x queues scripts a second,
    so a server nobody asks reads nothing."""
    while True:
        try:
            if time.monotonic() - store._asked < STATS_IDLE_S:
                await store.refresh_stats()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("refreshing queue stats failed: %s", exc)
        await asyncio.sleep(1.0)


async def read_figures(store: RedisStore) -> None:
    """Read what stats() and the memory gauges answer: every queue's counters (its info
    script) and every primary's ``INFO memory``, summed over the primaries."""
    infos, _ = await _wait(store.list_queues("", "", 1 << 30))
    rows = []
    for info in infos:
        c, t = info["counts"], info["totals"]
        rows.append(
            (
                info["name"],
                c["ready"],
                c["leased"],
                c["delayed"],
                t["published"],
                t["delivered"],
                t["deleted"],
                t["expired"],
                t["dead_lettered"],
                store._expired_retention.get(info["name"], 0),
            )
        )
    store._stats = rows
    used = limit = 0
    backend = store.backend
    assert backend is not None
    for address in backend.primaries():
        reply = await backend.call_node(address, encode(["INFO", "memory"]))
        if isinstance(reply, bytes):
            fields = dict(line.split(":", 1) for line in reply.decode().splitlines() if ":" in line)
            used += int(fields.get("used_memory", 0))
            limit += int(fields.get("maxmemory", 0))
    store._memory, store._memory_limit = used, limit
