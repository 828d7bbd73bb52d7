"""The sizing scenario: 1,000,000 messages of 200 bytes in, the memory they take, all out again.

    locust -f bench/locust_sizing.py --headless --host http://127.0.0.1:8080 \\
        --csv bench/results/sizing --html bench/results/sizing.html

Run it against a server that nothing else uses. A ``LoadTestShape`` drives three phases:

1. fill: ``SizingProducer`` users publish exactly ``--wq-target`` (1,000,000) messages of
   ``--wq-body-bytes`` (200) bytes: ``POST /v1/queues/default/batch`` with 1,000 per request when
   the server has the route, else one ``POST /v1/publish`` each;
2. at the target, the server's ``process_resident_memory_bytes`` is read from ``/metrics``;
3. drain: ``SizingConsumer`` users receive up to 1,000 at a time (``GET /v1/consumer``, with a
   10-minute lease so nothing is redelivered) and acknowledge them (``POST .../ack``, else one
   ``DELETE`` each) until the queue is empty.

At the end it checks, from the server's own counters (``GET /v1/queues/default``, else
``/metrics``), that the run published, delivered and deleted exactly the target and left the
queue empty, and from the consumers' side that no id came twice. It prints

    1,000,000 x 200 B: N MB resident

and exits non-zero, loudly, when the queue did not drain, a count is off, or memory is above
``--wq-max-rss-mb`` (260). Options: see ``locust -f bench/locust_sizing.py --help`` (WonderQ).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import sys
import time
import urllib.parse
from typing import Any

import gevent
from locust import FastHttpUser, LoadTestShape, constant, events, task

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import locustfile  # noqa: F401  (registers the --wq-* options)

log = logging.getLogger("sizing")

BATCH = 1000  # messages per batch publish / receive (the server's default --max-batch)
PRODUCERS = 4
CONSUMERS = 4


class Run:
    """What the phases share (one process: Locust's local runner)."""

    target = 1_000_000
    claimed = 0  # messages producers have taken on to publish
    published_ok = 0  # messages the server answered 201 for
    seen: set[int] = set()  # ids consumers received
    duplicates = 0
    deleted_ok = 0  # acks the server confirmed
    use_batch: bool | None = None
    use_ack: bool | None = None
    start_counters: dict[str, Any] = {}
    rss_bytes: float | None = None
    phase = "begin"  # begin -> fill -> measure -> drain -> done
    problems: list[str] = []
    started = 0.0


def _host(environment) -> tuple[str, int]:
    url = urllib.parse.urlsplit(environment.host)
    return url.hostname or "127.0.0.1", url.port or 80


def _get(environment, path: str) -> tuple[int, bytes]:
    host, port = _host(environment)
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def _post(environment, path: str, body: bytes) -> int:
    host, port = _host(environment)
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        return r.status
    finally:
        conn.close()


def _metrics(environment) -> dict[str, float]:
    status, body = _get(environment, "/metrics")
    out: dict[str, float] = {}
    if status != 200:
        return out
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


def counters(environment) -> dict[str, int]:
    """ready/leased/delayed and published/delivered/deleted/expired of queue ``default``."""
    status, body = _get(environment, "/v1/queues/default")
    if status == 200:
        info = json.loads(body)
        return {**info.get("counts", {}), **info.get("totals", {})}
    m = _metrics(environment)
    out: dict[str, int] = {}
    for key, value in m.items():
        if 'queue="default"' not in key:
            continue
        if key.startswith("wonderq_queue_messages{"):
            for state in ("ready", "leased", "delayed"):
                if f'state="{state}"' in key:
                    out[state] = int(value)
        for total in ("published", "delivered", "deleted", "expired", "dead_lettered"):
            if key.startswith(f"wonderq_{total}_total{{"):
                out[total] = int(value)
    return out


def depth(c: dict[str, int]) -> int:
    return c.get("ready", 0) + c.get("leased", 0) + c.get("delayed", 0)


def delta(c: dict[str, int], name: str) -> int:
    return c.get(name, 0) - Run.start_counters.get(name, 0)


def begin(environment) -> None:
    """Reads the starting counters and which routes exist (from the shape's first tick: Locust
    may tick the shape before its test_start event fires)."""
    o = environment.parsed_options
    Run.target = o.wq_target
    Run.started = time.monotonic()
    Run.start_counters = counters(environment)
    if depth(Run.start_counters):
        Run.problems.append(f"queue default was not empty at start: {Run.start_counters}")
    probe = b'["sizing-probe"]'
    Run.use_batch = _post(environment, "/v1/queues/default/batch", probe) == 201
    if Run.use_batch:
        Run.claimed = Run.published_ok = 1  # the probe is message number 1
    ack = json.dumps({"cid": 1, "ids": [1]}).encode()  # not leased by cid 1: answers "failed"
    Run.use_ack = _post(environment, "/v1/queues/default/ack", ack) == 200
    log.warning(
        "sizing: %s messages of %d B, publish by %s, ack by %s",
        f"{Run.target:,}",
        o.wq_body_bytes,
        "batch" if Run.use_batch else "single request",
        "batch ack" if Run.use_ack else "single delete",
    )


class SizingProducer(FastHttpUser):
    wait_time = constant(0)

    def on_start(self) -> None:
        o = self.environment.parsed_options
        self.body = b"x" * o.wq_body_bytes
        self.batch_body = json.dumps([self.body.decode()] * BATCH).encode()

    @task
    def publish(self) -> None:
        n = min(BATCH if Run.use_batch else 1, Run.target - Run.claimed)
        if n <= 0:
            gevent.sleep(0.2)
            return
        Run.claimed += n
        if Run.use_batch:
            body = self.batch_body if n == BATCH else json.dumps([self.body.decode()] * n)
            path, name = "/v1/queues/default/batch", "POST /v1/queues/default/batch"
            ctype = "application/json"
        else:
            body, path, name, ctype = self.body, "/v1/publish", "POST /v1/publish", "text/plain"
        with self.client.post(
            path, data=body, headers={"Content-Type": ctype}, name=name, catch_response=True
        ) as r:
            if r.status_code == 201:
                Run.published_ok += n
            else:
                r.failure(f"publish answered {r.status_code}: {r.text[:200]}")


class SizingConsumer(FastHttpUser):
    wait_time = constant(0)
    _next_cid = 100

    def on_start(self) -> None:
        SizingConsumer._next_cid += 1
        self.cid = SizingConsumer._next_cid

    @task
    def drain(self) -> None:
        with self.client.get(
            f"/v1/consumer?cid={self.cid}&limit={BATCH}&visibility=600",
            name="GET /v1/consumer",
            catch_response=True,
        ) as r:
            if r.status_code != 200:
                r.failure(f"receive answered {r.status_code}: {r.text[:200]}")
                return
            ids = [m["id"] for m in r.json()["messages"]]
        if not ids:
            gevent.sleep(0.1)
            return
        for i in ids:
            if i in Run.seen:
                Run.duplicates += 1
            Run.seen.add(i)
        if Run.use_ack:
            with self.client.post(
                "/v1/queues/default/ack",
                data=json.dumps({"cid": self.cid, "ids": ids}),
                headers={"Content-Type": "application/json"},
                name="POST /v1/queues/default/ack",
                catch_response=True,
            ) as r:
                if r.status_code != 200:
                    r.failure(f"ack answered {r.status_code}: {r.text[:200]}")
                    return
                result = r.json()
                Run.deleted_ok += len(result.get("deleted", ()))
                if result.get("failed"):
                    r.failure(f"ack failed for {len(result['failed'])} ids")
            return
        for i in ids:
            with self.client.delete(
                f"/v1/consumer?cid={self.cid}&id={i}",
                name="DELETE /v1/consumer",
                catch_response=True,
            ) as r:
                if r.status_code == 200 and r.text.strip() == "true":
                    Run.deleted_ok += 1
                else:
                    r.failure(f"delete of {i} answered {r.status_code} {r.text[:100]!r}")


class SizingShape(LoadTestShape):
    """fill -> measure -> drain -> stop; each phase ends on the server's counters."""

    def tick(self) -> tuple[int, float, list] | None:
        env = self.runner.environment
        o = env.parsed_options
        if Run.phase == "begin":
            begin(env)
            Run.phase = "fill"
        if time.monotonic() - Run.started > o.wq_timeout:
            Run.problems.append(f"gave up after {o.wq_timeout:.0f} s in phase {Run.phase}")
            return None
        if Run.phase == "fill":
            if Run.published_ok < Run.target:
                if Run.claimed >= Run.target and Run.published_ok < Run.claimed:
                    # every claim was sent: if some failed, they will never arrive
                    failed = env.stats.total.num_failures
                    if failed:
                        Run.problems.append(f"{failed} requests failed while filling")
                        return None
                return (PRODUCERS, PRODUCERS, [SizingProducer])
            # Locust keeps the users it has when only the class list changes: stop them all
            # (one tick at 0 users) before the consumers are spawned.
            Run.phase = "measure"
            return (0, 100, [SizingProducer])
        if Run.phase == "measure":
            c = counters(env)
            if delta(c, "published") < Run.target or depth(c) < Run.target:
                return (0, 100, [SizingProducer])
            time.sleep(0.5)  # let the allocator settle before reading
            m = _metrics(env)
            Run.rss_bytes = m.get("process_resident_memory_bytes")
            log.warning(
                "sizing: %s messages held, %.0f MB resident",
                f"{depth(c):,}",
                (Run.rss_bytes or 0) / 1e6,
            )
            Run.phase = "drain"
        if Run.phase == "drain":
            c = counters(env)
            if depth(c) > 0 or delta(c, "deleted") < Run.target:
                return (CONSUMERS, CONSUMERS, [SizingConsumer])
            Run.phase = "done"
        return None


@events.quitting.add_listener
def _verdict(environment, **_kw) -> None:
    o = environment.parsed_options
    c = counters(environment)
    problems = list(Run.problems)
    want = Run.target
    for name in ("published", "delivered", "deleted"):
        got = delta(c, name)
        if got != want:
            problems.append(f"server counted {got:,} {name}, expected {want:,}")
    if depth(c):
        problems.append(f"the queue did not drain: {depth(c):,} messages left ({c})")
    if delta(c, "expired"):
        problems.append(f"{delta(c, 'expired'):,} leases expired: some messages were redelivered")
    if Run.duplicates:
        problems.append(f"consumers received {Run.duplicates:,} ids twice")
    if len(Run.seen) != want:
        problems.append(f"consumers received {len(Run.seen):,} distinct ids, expected {want:,}")
    if Run.deleted_ok != want:
        problems.append(f"consumers saw {Run.deleted_ok:,} successful deletes, expected {want:,}")
    if environment.stats.total.num_failures:
        problems.append(f"{environment.stats.total.num_failures} requests failed")
    mb = (Run.rss_bytes or 0) / 1e6
    if Run.rss_bytes is None:
        problems.append("process_resident_memory_bytes was never read at the target")
    elif mb > o.wq_max_rss_mb:
        problems.append(f"{mb:.1f} MB resident is above the goal of {o.wq_max_rss_mb:.0f} MB")
    size = o.wq_body_bytes
    # MB = 10**6 bytes, the stricter reading of the goal; one decimal so 260.4 is not "260"
    print(f"\n{want:,} x {size} B: {mb:.1f} MB resident", flush=True)
    seconds = time.monotonic() - Run.started
    if problems:
        print("SIZING FAILED:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        environment.process_exit_code = 1
    else:
        print(
            f"sizing passed in {seconds:.0f} s: {want:,} published, delivered and deleted "
            f"exactly once; queue empty; {mb:.1f} MB <= {o.wq_max_rss_mb:.0f} MB",
            flush=True,
        )
        environment.process_exit_code = 0
