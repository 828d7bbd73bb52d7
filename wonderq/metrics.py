"""``GET /metrics``: every metric's name and help text, read from the store at scrape time.

Nothing is counted twice: the store keeps the queue counters (the engine's per-queue
totals, or Redis's), the router keeps the responses by route and status, the long-poll layer
knows its waiters, the server its connections. The collector reads them when Prometheus
scrapes, through ``prometheus_client``'s custom-collector interface, beside its standard
``process_*`` metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

if TYPE_CHECKING:
    from .longpoll import LongPoll
    from .routing import Router
    from .store import Store

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

# The per-queue totals, in the order of the store's stats() rows after the three counts.
_TOTALS = (
    ("published", "Messages published to the queue."),
    ("delivered", "Messages handed out by receives (redeliveries count)."),
    ("deleted", "Messages deleted (acknowledged)."),
    ("expired", "Leases that ran out."),
    ("dead_lettered", "Messages moved to the dead-letter queue."),
    ("retention_expired", "Messages dropped because their retention ran out."),
)


class Metrics:
    """The registry the ``/metrics`` route renders, and the collector of WonderQ's own
    metrics in it."""

    def __init__(
        self,
        store: Store,
        router: Router,
        longpoll: LongPoll,
        connection_count: Callable[[], int],
    ) -> None:
        self._store = store
        self._router = router
        self._longpoll = longpoll
        self._connection_count = connection_count
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        self.registry.register(self)

    def render(self) -> bytes:
        """The Prometheus text format, read now."""
        return generate_latest(self.registry)

    def describe(self) -> list[Metric]:
        return []  # names are only known at scrape time; no duplicate checks needed

    def collect(self) -> Iterator[Metric]:
        store = self._store
        messages = GaugeMetricFamily(
            "wonderq_queue_messages", "Messages in a queue by state.", labels=["queue", "state"]
        )
        totals = [
            CounterMetricFamily(f"wonderq_{name}", help_text, labels=["queue"])
            for name, help_text in _TOTALS
        ]
        for row in store.stats():
            name = row[0]
            messages.add_metric([name, "ready"], row[1])
            messages.add_metric([name, "leased"], row[2])
            messages.add_metric([name, "delayed"], row[3])
            # A store without retention (its rows end at dead_lettered) counts 0 there.
            for family, value in zip(totals, (*row[4:10], 0), strict=False):
                family.add_metric([name], value)
        yield messages
        yield from totals
        yield GaugeMetricFamily(
            "wonderq_memory_bytes", "Bytes of messages the store holds.", store.memory_bytes()
        )
        yield GaugeMetricFamily(
            "wonderq_memory_limit_bytes",
            "The store's memory limit in bytes (0 = none).",
            store.memory_limit(),
        )
        requests = CounterMetricFamily(
            "wonderq_http_requests",
            "HTTP responses by route and status.",
            labels=["route", "status"],
        )
        for (route, status), n in sorted(self._router.request_counts().items()):
            requests.add_metric([route, str(status)], n)
        yield requests
        yield GaugeMetricFamily(
            "wonderq_connections", "Open client connections.", self._connection_count()
        )
        yield GaugeMetricFamily(
            "wonderq_waiting_receives", "Parked long polls.", self._longpoll.count
        )
        for name, kind, help_text, value in store.metrics():
            if kind == "counter":
                yield CounterMetricFamily(name, help_text, value)
            else:
                yield GaugeMetricFamily(name, help_text, value)
