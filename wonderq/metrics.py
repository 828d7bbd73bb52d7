"""``GET /metrics``: every metric's name and help text, read from the store at scrape time.

Nothing is counted twice: the store keeps the queue counters (the engine's per-queue
totals, or Redis's), the router keeps the responses by route and status, the long-poll layer
knows its waiters, the server its connections. The collector reads them when Prometheus
scrapes.

**Many queues: rendered incrementally.** Each queue has eight series, about 400 bytes of
text, so 10,000 queues make a 4 MB answer and 100,000 queues 40 MB. Rendered in one go
through ``prometheus_client``'s objects that took ~340 ms at 10,000 queues, and every request
of every connection waited behind it. So the per-queue families are written here directly
as text, a page of queues at a time (``store.stats_page``: no sort, no walk of every queue),
and a scrape works for at most :data:`SLICE_S` per event-loop turn before it lets the loop
serve I/O again (``call_soon``); the answer goes out when the last page is done. Scrapes that
arrive while one is being rendered share its answer. A small server (a few hundred queues)
is answered within the first slice, at once. The fixed families (memory, connections,
requests by route, the store's own, ``process_*``) are read when the scrape starts, through
``prometheus_client``, and come first in the answer.

Why not the alternatives: a cache between scrapes serves stale counters and still blocks the
loop while it is rebuilt; series only for queues that are not idle leaves the worst case
(every queue holding a message) as slow as before, and makes series vanish and reappear,
which breaks ``rate()`` over idle periods. The price of slicing: the queues of one answer are
read over several loop turns (milliseconds apart), not at one instant; a queue created during
a scrape before the page being rendered shows in the next scrape, one deleted is left out.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import Metric

    from .longpoll import LongPoll
    from .request import Request, Response
    from .routing import Router
    from .store import Store

__all__ = ["CONTENT_TYPE", "PAGE_QUEUES", "SLICE_S", "Metrics", "render_family"]

# prometheus_client's CONTENT_TYPE_PLAIN_0_0_4, written out: prometheus_client (~1.5 MB of
# modules: http.server, wsgiref, urllib.request...) is imported at the first scrape, not at
# start, which keeps an idle server small (bench/locust_sizing.py; tests/test_metrics.py
# checks the two strings are the same).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_HEADERS = b"Content-Type: " + CONTENT_TYPE.encode() + b"\r\n"

# Seconds of rendering per event-loop turn: past it a scrape yields to the loop. 2 ms keeps
# a publish behind a scrape of 100,000 queues within a few ms (bench/scale.py).
SLICE_S = 0.002
# Queues read and rendered between two looks at the clock (~0.4 ms of work at 1.5 us each).
PAGE_QUEUES = 256

# The families of one queue: (name after ``wonderq_``, type, help), in the order of the
# store's stats() rows after the name (the first family takes three values: by state).
_FAMILIES = (
    ("queue_messages", "gauge", "Messages in a queue by state."),
    ("published_total", "counter", "Messages published to the queue."),
    ("delivered_total", "counter", "Messages handed out by receives (redeliveries count)."),
    ("deleted_total", "counter", "Messages deleted (acknowledged)."),
    ("expired_total", "counter", "Leases that ran out."),
    ("dead_lettered_total", "counter", "Messages moved to the dead-letter queue."),
    ("retention_expired_total", "counter", "Messages dropped because their retention ran out."),
)
_HEADS = tuple(
    f"# HELP wonderq_{name} {help_text}\n# TYPE wonderq_{name} {kind}\n".encode()
    for name, kind, help_text in _FAMILIES
)


def _generate_latest(registry: CollectorRegistry) -> bytes:
    from prometheus_client import generate_latest

    return generate_latest(registry)


def _num(n: int) -> str:
    """A sample value as prometheus_client writes it (``5.0``, ``1.2345678e+07``), so the
    text is the same as before for anyone who matched it."""
    if n < 1_000_000:
        return f"{n}.0"
    from prometheus_client.utils import floatToGoString

    return floatToGoString(n)


# _num() of the small values most counters and depths have, looked up instead of called
# (a third of the render's time at 100,000 queues went to the calls).
_SMALL = tuple(_num(n) for n in range(4096))


def render_family(family: int, rows: list[tuple[Any, ...]]) -> bytes:
    """The samples of one family for ``rows`` (the store's stats rows). Queue names need no
    escaping (the name rule allows only ``[A-Za-z0-9_-]``)."""
    num = _num
    small = _SMALL
    if family == 0:
        text = "".join(
            [
                f'wonderq_queue_messages{{queue="{r[0]}",state="ready"}} '
                f"{small[r[1]] if r[1] < 4096 else num(r[1])}\n"
                f'wonderq_queue_messages{{queue="{r[0]}",state="leased"}} '
                f"{small[r[2]] if r[2] < 4096 else num(r[2])}\n"
                f'wonderq_queue_messages{{queue="{r[0]}",state="delayed"}} '
                f"{small[r[3]] if r[3] < 4096 else num(r[3])}\n"
                for r in rows
            ]
        )
    else:
        prefix = "wonderq_" + _FAMILIES[family][0]
        i = family + 3
        if rows and len(rows[0]) <= i:  # a store whose rows end before this column: 0
            rows = [(*r, 0) for r in rows]
        text = "".join(
            [
                f'{prefix}{{queue="{r[0]}"}} {small[r[i]] if r[i] < 4096 else num(r[i])}\n'
                for r in rows
            ]
        )
    return text.encode("ascii")


class _Scrape:
    """One render in progress: where it is, the text so far, and who waits for it.

    The first family's pass reads the queues' rows page by page (``store.stats_page``) and
    keeps the pages, so the other families are rendered from the same rows: the eight series
    of a queue are from one instant. The last family's pass drops each page once rendered
    (freeing 100,000 rows at once would hold the loop ~4 ms). The text grows in one
    bytearray, which is the answer's body: no join of tens of MB at the end.
    """

    __slots__ = ("after", "body", "family", "pages", "pos", "waiting")

    def __init__(self, head: bytes) -> None:
        self.after = ""  # the last queue name read
        self.pages: list[list[tuple[Any, ...]] | None] = []  # the rows read, page by page
        self.family = 0  # the family being rendered
        self.pos = 0  # from families 1..5: the next page of self.pages to render
        self.body = bytearray(head)
        self.body += _HEADS[0]
        self.waiting: list[Request] = []


def _bug_answer(exc: Exception) -> Response:
    """The answer to the scrapes waiting when rendering failed: a bug, answered as one."""
    from .errors import answer_error

    return answer_error(exc, "GET /metrics")


class Metrics:
    """The ``/metrics`` answer: :meth:`scrape` for the route, :meth:`render` for tools.

    ``call_soon`` schedules the next slice of a scrape (the running loop's by default).
    ``registry`` holds the fixed families (WonderQ's own and ``process_*``).
    """

    def __init__(
        self,
        store: Store,
        router: Router,
        longpoll: LongPoll,
        connection_count: Callable[[], int],
        *,
        call_soon: Callable[..., Any] | None = None,
        slice_s: float = SLICE_S,
        page_queues: int = PAGE_QUEUES,
    ) -> None:
        self._store = store
        self._router = router
        self._longpoll = longpoll
        self._connection_count = connection_count
        self._call_soon = call_soon
        self.slice_s = slice_s
        self.page_queues = page_queues
        self._scrape: _Scrape | None = None  # the render in progress, if any
        self._registry: CollectorRegistry | None = None
        # The requests of the first scrape while prometheus_client is imported, else None.
        self._importing: list[Request] | None = None

    @property
    def registry(self) -> CollectorRegistry:
        """The fixed families' registry, made at the first scrape (see CONTENT_TYPE)."""
        if self._registry is None:
            from prometheus_client import CollectorRegistry, ProcessCollector

            self._registry = CollectorRegistry(auto_describe=True)
            ProcessCollector(registry=self._registry)
            self._registry.register(self)
        return self._registry

    # ---- the route ----------------------------------------------------------------------------

    def scrape(self, req: Request) -> Response | None:
        """Answer ``req`` now if the whole text takes one slice, else return None and answer
        it through the router once the last slice is done (joining a render under way)."""
        current = self._scrape
        if current is not None:
            current.waiting.append(req)
            return None
        if self._importing is not None:
            self._importing.append(req)
            return None
        if self._registry is None and self._call_soon is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (tools, the in-process tests): imported below
                loop = None
            if loop is not None:
                self._import_first(req, loop)
                return None
        scrape = _Scrape(_generate_latest(self.registry))
        if self._step(scrape, time.perf_counter() + self.slice_s):
            return (200, self._finish(scrape), _HEADERS)
        scrape.waiting.append(req)
        self._scrape = scrape
        self._schedule()
        return None

    def _import_first(self, req: Request, loop: asyncio.AbstractEventLoop) -> None:
        """The first scrape of a server: prometheus_client is imported on a thread, which
        takes ~30 ms (bench/scale.py's in-process scrape, 24-33 ms as one turn of the loop);
        the interpreter switches threads every 5 ms (``sys.getswitchinterval``), so the loop
        keeps serving meanwhile. The scrape starts once the import is done."""
        self._importing = [req]

        def work() -> None:
            error: Exception | None = None
            try:
                import prometheus_client.core
                import prometheus_client.utils  # noqa: F401
            except Exception as exc:  # answered as a bug, never a stuck scrape
                error = exc
            loop.call_soon_threadsafe(self._imported, error)

        threading.Thread(target=work, name="wonderq-metrics-import", daemon=True).start()

    def _imported(self, error: Exception | None) -> None:
        waiting = self._importing or []
        self._importing = None
        try:
            if error is not None:
                raise error
            scrape = _Scrape(_generate_latest(self.registry))
        except Exception as exc:
            self._answer_all(waiting, _bug_answer(exc))
            return
        scrape.waiting.extend(waiting)
        self._scrape = scrape
        self._continue()

    def _schedule(self) -> None:
        call_soon = self._call_soon or asyncio.get_running_loop().call_soon
        call_soon(self._continue)

    def _continue(self) -> None:
        scrape = self._scrape
        assert scrape is not None
        try:
            if not self._step(scrape, time.perf_counter() + self.slice_s):
                self._schedule()
                return
            response: Response = (200, self._finish(scrape), _HEADERS)
        except Exception as exc:  # a bug: answered as one, never a stuck scrape
            response = _bug_answer(exc)
        self._scrape = None
        self._answer_all(scrape.waiting, response)

    def _answer_all(self, waiting: list[Request], response: Response) -> None:
        for req in waiting:
            self._router.answer(req, response)

    # ---- rendering ------------------------------------------------------------------------

    def render(self) -> bytes:
        """The whole text now, in one go (tools and tests; the route uses :meth:`scrape`)."""
        scrape = _Scrape(_generate_latest(self.registry))
        while not self._step(scrape, float("inf")):
            pass
        return self._finish(scrape)

    def _step(self, scrape: _Scrape, deadline: float) -> bool:
        """Render pages of queues until ``deadline`` (perf_counter); True when all are."""
        body = scrape.body
        pages = scrape.pages
        last = len(_FAMILIES) - 1
        while True:
            family = scrape.family
            if family == 0:
                rows, after = self._store.stats_page(scrape.after, self.page_queues)
                pages.append(rows)
                body += render_family(0, rows)
                if after is None:
                    scrape.family = 1
                    body += _HEADS[1]
                else:
                    scrape.after = after
            else:
                pos = scrape.pos
                rows = pages[pos]  # type: ignore[assignment]
                body += render_family(family, rows)
                if family == last:
                    pages[pos] = None
                scrape.pos = pos = pos + 1
                if pos == len(pages):
                    if family == last:
                        return True
                    scrape.pos = 0
                    scrape.family = family + 1
                    body += _HEADS[family + 1]
            if time.perf_counter() >= deadline:
                return False

    def _finish(self, scrape: _Scrape) -> bytes:
        """The body: a bytearray, written by the protocol like bytes (and not copied)."""
        return scrape.body  # type: ignore[return-value]

    # ---- the fixed families (prometheus_client's collector interface) ---------------------

    def describe(self) -> list[Metric]:
        return []  # names are only known at scrape time; no duplicate checks needed

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        store = self._store
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
