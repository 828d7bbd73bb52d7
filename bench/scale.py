"""Many queues: what 10,000 and 100,000 queues cost WonderQ.

    python bench/scale.py                      # 1 vs 10,000 vs 100,000 queues, 3 x 5 s each
    python bench/scale.py --queues 10000 --runs 1 --duration 2     # a smoke run

For each count N a fresh server (pinned like bench/run.py's) gets queues ``q0..q<N-1>``:

* memory per empty queue: the server's VmRSS before and after creating them, / N;
* rates: httpgen spreads its requests round robin over all N queues (``--spread``):
  ``publish`` (POST /v1/queues/q<k>/messages, 200 B) and ``cycle`` (publish, receive,
  delete on one queue, the next queue for the next cycle); the same commands with N = 1 are
  the one-queue rates. Rounds are interleaved across the servers (medians); *x one queue*
  is the median of the round-by-round ratios;
* ``/metrics`` with one message in every queue: answer size and time to the whole answer,
  and the publishers' latency with a scrape every second against without (``publish`` vs
  ``publish+scrape``, interleaved): the scrape renders a slice per event-loop turn, so the
  publishers' p99 should barely move;
* the longest slice of one scrape, measured in-process (``Metrics`` over a ``MemoryStore``
  with the same queues): the longest the event loop is held by a scrape;
* ``GET /v1/queues`` pages at N: the first page, a page from the middle (``after=``) and a
  ``prefix=`` lookup, median time of 10 each.

Figures go to stdout (a SCALEJSON line) and bench/results/scale-*.json.
"""

from __future__ import annotations

import argparse
import gc
import threading
import time
from typing import Any

import scalelib
from scalelib import Bench, harness, median

BODY = "x" * 200


def names(n: int) -> list[str]:
    return [f"q{k}" for k in range(n)]


def publish_args(n: int) -> list[str]:
    return ["--spread", str(n), "--fixed", "POST", "/v1/queues/{q}/messages", "--body", BODY]


def cycle_args(n: int) -> list[str]:
    return [
        "--spread",
        str(n),
        "--recvdel",
        "/v1/queues/{q}/messages?cid=1&limit=1&visibility=60",
        "/v1/queues/{q}/messages/",
        "--delete-suffix",
        "?cid=1",
        "--publish",
        "/v1/queues/{q}/messages",
        "--body",
        BODY,
    ]


class Scraper(threading.Thread):
    """GET /metrics once a second while the publishers run."""

    def __init__(self, port: int, seconds: float) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.stop_at = time.monotonic() + seconds
        self.times: list[float] = []

    def run(self) -> None:
        while time.monotonic() < self.stop_at:
            t0 = time.monotonic()
            took, reply = scalelib.timed_get(self.port, "/metrics")
            if reply.status == 200:
                self.times.append(took)
            time.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))


def slices_in_process(n: int) -> dict[str, Any]:
    """The longest event-loop turn of one scrape of n queues (one message each)."""
    sys_path_root = str(harness.ROOT)
    import sys

    if sys_path_root not in sys.path:
        sys.path.insert(0, sys_path_root)
    # A server imports prometheus_client on a thread at its first scrape, the loop serving
    # meanwhile (Metrics._import_first): done here before the clock starts, as it is not a
    # turn of the loop.
    import prometheus_client.core  # noqa: F401

    from wonderq.longpoll import LongPoll
    from wonderq.metrics import Metrics
    from wonderq.routing import Router
    from wonderq.store import MemoryStore

    store = MemoryStore()
    for name in names(n):
        store.put_queue(name, None)
        store.publish(name, b"m", -1)

    class NoConnection:
        """The router's part in a scrape, with nobody to write to: only the render counts."""

        def __init__(self) -> None:
            self.router = Router()
            self.request_counts = self.router.request_counts

        def answer(self, req: Any, response: Any) -> None:
            pass

    router = NoConnection()
    pending: list[Any] = []
    m = Metrics(
        store,
        router,  # type: ignore[arg-type]
        LongPoll(router.answer, None),  # type: ignore[arg-type]
        lambda: 0,
        call_soon=pending.append,
    )
    gc.collect()
    gc.freeze()  # as the server does once started (wonderq/server.py)
    out: dict[str, Any] = {}
    for _ in range(3):  # the best of 3 whole renders, the worst turn seen in any
        walls: list[float] = []
        cpus: list[float] = []

        def turn(call: Any, walls: list[float] = walls, cpus: list[float] = cpus) -> Any:
            w, c = time.perf_counter(), time.thread_time()
            result = call()
            walls.append(time.perf_counter() - w)
            cpus.append(time.thread_time() - c)
            return result

        answered = turn(lambda: m.scrape(object()))  # type: ignore[arg-type]
        while pending:
            turn(pending.pop())
        if not out or sum(cpus) * 1000 < out["render_cpu_ms"]:
            out["render_cpu_ms"] = round(sum(cpus) * 1000, 1)
        out["turns"] = len(walls)
        # CPU time: what the loop did in the turn; wall time adds what the busy machine's
        # other processes took meanwhile (a preempted turn looks long, but is not work)
        out["max_turn_cpu_ms"] = round(max(out.get("max_turn_cpu_ms", 0), max(cpus) * 1000), 2)
        out["max_turn_wall_ms"] = round(max(out.get("max_turn_wall_ms", 0), max(walls) * 1000), 2)
        out["answered_at_once"] = answered is not None
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--queues", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    args = ap.parse_args()
    scalelib.raise_fd_limit()
    bench = Bench(args.duration)
    counts = [1, *args.queues]
    doc: dict[str, Any] = {"machine": scalelib.machine(), "pinning": bench.pinning, "counts": {}}
    harness.log(f"scale: {counts} queues; {bench.pinning}")
    servers = {}
    stack = []
    try:
        for n in counts:
            cm = bench.wonderq("--max-connections", "20000")
            server = cm.__enter__()
            stack.append(cm)
            servers[n] = server
            scalelib.call(server.port, "GET", "/healthz")
            time.sleep(0.5)
            rss0 = scalelib.rss(server.pid)
            t0 = time.perf_counter()
            scalelib.create_queues(server.port, names(n))
            took = time.perf_counter() - t0
            time.sleep(0.5)
            rss1 = scalelib.rss(server.pid)
            doc["counts"][n] = {
                "create_s": round(took, 2),
                "rss_before": rss0,
                "rss_after": rss1,
                "bytes_per_empty_queue": round((rss1 - rss0) / n) if n > 1 else None,
            }
            harness.log(f"{n} queues created in {took:.1f} s; RSS {rss0:,} -> {rss1:,}")

        cases = {}
        for n, server in servers.items():
            cases[f"publish {n}"] = lambda s=server, n=n: bench.gen(s, *publish_args(n))
            cases[f"cycle {n}"] = lambda s=server, n=n: bench.gen(s, *cycle_args(n))
        rates = scalelib.interleave(args.runs, cases)
        for n in counts:
            for kind in ("publish", "cycle"):
                doc["counts"][n][kind] = scalelib.summary(rates[f"{kind} {n}"])
            for kind in ("publish", "cycle"):
                # Round by round (the rounds are interleaved), then the median: a busy phase
                # of the machine slows both rates of its round alike.
                ratios = [
                    r["mps"] / one["mps"]
                    for r, one in zip(rates[f"{kind} {n}"], rates[f"{kind} 1"], strict=True)
                ]
                doc["counts"][n][kind]["x_one_queue"] = round(median(ratios), 3)
                doc["counts"][n][kind]["x_one_queue_rounds"] = [round(x, 3) for x in ratios]

        # One message in every queue (the case), then scrapes.
        for n, server in servers.items():
            if n == 1:
                continue
            replies = scalelib.pipeline(
                server.port,
                [
                    scalelib.httpload.request("POST", f"/v1/queues/{q}/messages", b"m")
                    for q in names(n)
                ],
            )
            assert all(r.status == 201 for r in replies)
            scrapes = [scalelib.timed_get(server.port, "/metrics") for _ in range(3)]
            listing = {}
            for label, path in (
                ("first page", "/v1/queues?limit=1000"),
                ("middle page", f"/v1/queues?limit=1000&after=q{n // 2}"),
                ("prefix", f"/v1/queues?prefix=q{n - 1}&limit=10"),
            ):
                times = []
                for _ in range(10):
                    took, reply = scalelib.timed_get(server.port, path)
                    assert reply.status == 200, reply.body[:200]
                    times.append(took)
                listing[label] = round(median(times) * 1000, 2)
            doc["counts"][n]["metrics"] = {
                "bytes": len(scrapes[0][1].body),
                "answer_ms_median": round(median([t for t, _ in scrapes]) * 1000, 1),
            }
            doc["counts"][n]["list_queues_ms"] = listing
            harness.log(f"{n}: /metrics {doc['counts'][n]['metrics']}, /v1/queues {listing}")

            def scraped(s: Any = server, n: int = n) -> dict:
                scraper = Scraper(s.port, args.duration)
                scraper.start()
                result = bench.gen(s, *publish_args(n))
                scraper.join()
                result["scrapes"] = len(scraper.times)
                return result

            both = scalelib.interleave(
                args.runs,
                {
                    "publish": lambda s=server, n=n: bench.gen(s, *publish_args(n)),
                    "scrape": scraped,
                },
            )
            doc["counts"][n]["publish_vs_scrape"] = {
                "without": scalelib.summary(both["publish"]),
                "with a scrape every second": scalelib.summary(both["scrape"]),
            }
            doc["counts"][n]["metrics"]["in_process"] = slices_in_process(n)
            harness.log(f"{n}: in-process scrape {doc['counts'][n]['metrics']['in_process']}")
    finally:
        for cm in reversed(stack):
            cm.__exit__(None, None, None)
    scalelib.emit("scale", doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
