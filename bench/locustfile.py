"""Locust users of a WonderQ deployment: producers, consumers, crashing consumers, long pollers.

Each user class carries a tag of its own name, so a run can pick classes by name or by tag:

    # the mixed scenario: every class by its weight, 60 s, reports in bench/results/
    locust -f bench/locustfile.py --headless -u 50 -r 10 -t 60s --host http://127.0.0.1:8080 \\
        --csv bench/results/mixed --html bench/results/mixed.html

    # only some users (by class name, or --tags producer consumer)
    locust -f bench/locustfile.py --headless -u 8 -r 8 -t 30s --host http://127.0.0.1:8080 \\
        Producer Consumer

    # the 1,000,000-message sizing run lives in bench/locust_sizing.py (a LoadTestShape)

Classes (all on queue ``--wq-queue``, default ``default``; bodies of ``--wq-body-bytes``):

* ``Producer`` (tag ``producer``): ``POST /v1/publish``, one message a request.
* ``BatchProducer`` (``batch_producer``): ``POST /v1/queues/{q}/batch``, ``--wq-batch`` messages.
* ``Consumer`` (``consumer``): ``GET /v1/consumer?cid=&limit=10`` then ``--wq-work-ms`` of
  simulated work per message, then ``DELETE /v1/consumer?cid=&id=`` for each.
* ``BatchConsumer`` (``batch_consumer``): ``GET /v1/queues/{q}/messages?limit=--wq-batch``,
  work, then one ``POST /v1/queues/{q}/ack`` for all of them.
* ``CrashingConsumer`` (``crashing``): leases with a short visibility (``--wq-crash-visibility``)
  and never deletes: its messages come back when the lease runs out, so expiry and redelivery
  carry load.
* ``LongPollConsumer`` (``longpoll``): ``GET /v1/consumer?...&wait=--wq-wait``, then deletes.

Every user has its own consumer id. A request counts as failed when the status is not the one
the contract promises, when a body does not parse, or when an ack of a message we hold a valid
lease on answers ``false`` (a lost lease is a bug at these visibilities).
"""

from __future__ import annotations

import itertools
import json
import random

import gevent
from locust import FastHttpUser, constant, events, tag, task

_cids = itertools.count(1)


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    g = parser.add_argument_group("WonderQ")
    g.add_argument("--wq-queue", default="default", help="queue to use (default: default)")
    g.add_argument("--wq-body-bytes", type=int, default=200, help="bytes per message")
    g.add_argument("--wq-batch", type=int, default=100, help="messages per batch publish/receive")
    g.add_argument("--wq-work-ms", type=float, default=1.0, help="simulated work per message")
    g.add_argument("--wq-visibility", type=float, default=30.0, help="consumers' lease, s")
    g.add_argument(
        "--wq-crash-visibility", type=float, default=0.5, help="crashing consumers' lease, s"
    )
    g.add_argument("--wq-wait", type=float, default=2.0, help="long-poll wait, s (max 20)")
    # the sizing scenario (bench/locust_sizing.py)
    g.add_argument("--wq-target", type=int, default=1_000_000, help="sizing: messages to hold")
    g.add_argument("--wq-max-rss-mb", type=float, default=260.0, help="sizing: memory goal, MB")
    g.add_argument("--wq-timeout", type=float, default=1500.0, help="sizing: give up after, s")


def seconds(x: float) -> str:
    """A time as the API reads it: a plain decimal, no exponent."""
    return f"{x:.3f}".rstrip("0").rstrip(".") or "0"


class WonderQUser(FastHttpUser):
    """Shared set-up: options, a consumer id of its own, the request bodies."""

    abstract = True
    wait_time = constant(0)

    def on_start(self) -> None:
        o = self.environment.parsed_options
        self.queue = getattr(o, "wq_queue", "default")
        self.body = b"x" * getattr(o, "wq_body_bytes", 200)
        self.batch = getattr(o, "wq_batch", 100)
        self.work_s = getattr(o, "wq_work_ms", 1.0) / 1000.0
        self.visibility = seconds(getattr(o, "wq_visibility", 30.0))
        self.cid = next(_cids)
        self.batch_body = json.dumps([self.body.decode()] * self.batch).encode()

    # ---- helpers every consumer uses -------------------------------------------------------

    def receive(self, path: str, name: str) -> list[dict]:
        """GET a receive route; returns its messages ([] when empty), [] on failure."""
        with self.client.get(path, name=name, catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"receive answered {r.status_code}: {r.text[:200]}")
                return []
            try:
                messages = r.json()["messages"]
                for m in messages:
                    if m["receives"] < 1 or not isinstance(m["id"], int):
                        raise ValueError(f"bad message {m!r:.200}")
            except (ValueError, KeyError, TypeError) as exc:
                r.failure(f"receive body: {exc}")
                return []
            return messages

    def work(self, n: int) -> None:
        if self.work_s > 0 and n:
            gevent.sleep(self.work_s * n)

    def delete_one(self, msg_id: int) -> None:
        with self.client.delete(
            f"/v1/consumer?cid={self.cid}&id={msg_id}",
            name="DELETE /v1/consumer",
            catch_response=True,
        ) as r:
            if r.status_code != 200:
                r.failure(f"delete answered {r.status_code}: {r.text[:200]}")
            elif r.text.strip() != "true":
                r.failure(f"delete of {msg_id} answered {r.text.strip()!r}: lease lost")

    def ack(self, ids: list[int]) -> None:
        body = json.dumps({"cid": self.cid, "ids": ids})
        with self.client.post(
            f"/v1/queues/{self.queue}/ack",
            data=body,
            headers={"Content-Type": "application/json"},
            name="POST /v1/queues/{q}/ack",
            catch_response=True,
        ) as r:
            if r.status_code != 200:
                r.failure(f"ack answered {r.status_code}: {r.text[:200]}")
                return
            try:
                result = r.json()
            except ValueError as exc:
                r.failure(f"ack body: {exc}")
                return
            if result.get("failed") or len(result.get("deleted", ())) != len(ids):
                r.failure(f"ack of {len(ids)} failed for {result.get('failed')!r:.200}")


class Producer(WonderQUser):
    """Publishes one message per request on the seed route."""

    weight = 3

    @tag("producer")
    @task
    def publish(self) -> None:
        with self.client.post(
            "/v1/publish",
            data=self.body,
            headers={"Content-Type": "text/plain; charset=utf-8"},
            name="POST /v1/publish",
            catch_response=True,
        ) as r:
            if r.status_code != 201:
                r.failure(f"publish answered {r.status_code}: {r.text[:200]}")


class BatchProducer(WonderQUser):
    """Publishes ``--wq-batch`` messages per request."""

    weight = 1

    @tag("batch_producer")
    @task
    def publish_batch(self) -> None:
        with self.client.post(
            f"/v1/queues/{self.queue}/batch",
            data=self.batch_body,
            headers={"Content-Type": "application/json"},
            name="POST /v1/queues/{q}/batch",
            catch_response=True,
        ) as r:
            if r.status_code != 201:
                r.failure(f"batch answered {r.status_code}: {r.text[:200]}")
                return
            try:
                if len(r.json()["ids"]) != self.batch:
                    r.failure("batch answered a wrong number of ids")
            except (ValueError, KeyError, TypeError) as exc:
                r.failure(f"batch body: {exc}")


class Consumer(WonderQUser):
    """Receives up to 10, works on each, deletes each (seed routes)."""

    weight = 3

    @tag("consumer")
    @task
    def consume(self) -> None:
        messages = self.receive(
            f"/v1/consumer?cid={self.cid}&limit=10&visibility={self.visibility}",
            "GET /v1/consumer",
        )
        if not messages:
            gevent.sleep(0.05)  # an empty queue: do not spin
            return
        self.work(len(messages))
        for m in messages:
            self.delete_one(m["id"])


class BatchConsumer(WonderQUser):
    """Receives up to ``--wq-batch``, works, acknowledges them all in one request."""

    weight = 1

    @tag("batch_consumer")
    @task
    def consume_batch(self) -> None:
        messages = self.receive(
            f"/v1/queues/{self.queue}/messages?cid={self.cid}&limit={self.batch}"
            f"&visibility={self.visibility}",
            "GET /v1/queues/{q}/messages",
        )
        if not messages:
            gevent.sleep(0.05)
            return
        self.work(len(messages))
        self.ack([m["id"] for m in messages])


class CrashingConsumer(WonderQUser):
    """Leases and never deletes: as if the worker died mid-job. The short lease runs out and
    the messages go back to the queue with their receive count raised."""

    weight = 1

    @tag("crashing")
    @task
    def lease_and_vanish(self) -> None:
        o = self.environment.parsed_options
        visibility = seconds(getattr(o, "wq_crash_visibility", 0.5))
        messages = self.receive(
            f"/v1/consumer?cid={self.cid}&limit=5&visibility={visibility}",
            "GET /v1/consumer [crashing]",
        )
        # a crashed worker is replaced after a while; meanwhile it holds nothing else
        gevent.sleep(random.uniform(0.05, 0.2) if messages else 0.1)


class LongPollConsumer(WonderQUser):
    """Waits on the server for work (``wait=``) instead of polling, then deletes."""

    weight = 2

    @tag("longpoll")
    @task
    def long_poll(self) -> None:
        o = self.environment.parsed_options
        wait = seconds(min(20.0, getattr(o, "wq_wait", 2.0)))
        messages = self.receive(
            f"/v1/consumer?cid={self.cid}&limit=10&wait={wait}&visibility={self.visibility}",
            "GET /v1/consumer [wait]",
        )
        self.work(len(messages))
        for m in messages:
            self.delete_one(m["id"])
