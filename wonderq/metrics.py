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
is answered within the first slice, at once. The fixed families (``process_*``, memory,
connections, requests by route, the store's own) are read when the scrape starts and come
first in the answer.

**No prometheus_client in the server.** The text is written here, in the format (0.0.4) and
with the number formatting of ``prometheus_client.generate_latest`` and its
``ProcessCollector`` (tests/test_metrics.py compares them), so the answer is the same as when
it was rendered through them; importing that package at the first scrape added ~3.8 MB to
the server's resident memory (bench/locust_sizing.py reads it from this very answer).

Why not the alternatives: a cache between scrapes serves stale counters and still blocks the
loop while it is rebuilt; series only for queues that are not idle leaves the worst case
(every queue holding a message) as slow as before, and makes series vanish and reappear,
which breaks ``rate()`` over idle periods. The price of slicing: the queues of one answer are
read over several loop turns (milliseconds apart), not at one instant; a queue created during
a scrape before the page being rendered shows in the next scrape, one deleted is left out.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .longpoll import LongPoll
    from .request import Request, Response
    from .routing import Router
    from .store import Store

__all__ = ["CONTENT_TYPE", "PAGE_QUEUES", "SLICE_S", "Metrics", "render_family"]

# prometheus_client's CONTENT_TYPE_PLAIN_0_0_4, written out (the server does not import
# prometheus_client; tests/test_metrics.py checks the two strings are the same).
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


def go_float(value: float) -> str:
    """A sample value as prometheus_client writes it (its ``floatToGoString``): Python's
    ``repr`` of the float, except that a number whose integer part has more than 6 digits is
    written with an exponent, as Go does (``12345678.0`` -> ``1.2345678e+07``)."""
    d = float(value)
    if d != d:
        return "NaN"
    if d in (float("inf"), float("-inf")):
        return "+Inf" if d > 0 else "-Inf"
    text = repr(d)
    point = text.find(".")
    if d > 0 and point > 6:
        digits = (text[:point] + text[point + 1 :]).rstrip("0")
        mantissa = digits[0] + "." + digits[1:] if len(digits) > 1 else digits
        return f"{mantissa}e+{point - 1:02d}"
    return text


def _num(n: int) -> str:
    """A sample value as prometheus_client writes it (``5.0``, ``1.2345678e+07``), so the
    text is the same as before for anyone who matched it."""
    if n < 1_000_000:
        return f"{n}.0"
    return go_float(n)


def _family(name: str, kind: str, help_text: str, samples: Sequence[tuple[str, float]]) -> str:
    """One family in the text format: HELP, TYPE, then ``(labels, value)`` samples (labels
    already written, ``{route="...",status="..."}`` or empty). A counter's name ends in
    ``_total`` (added when missing), as prometheus_client writes counters."""
    if kind == "counter" and not name.endswith("_total"):
        name += "_total"
    doc = help_text.replace("\\", "\\\\").replace("\n", "\\n")
    lines = [f"# HELP {name} {doc}\n# TYPE {name} {kind}\n"]
    lines += [f"{name}{labels} {go_float(value)}\n" for labels, value in samples]
    return "".join(lines)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Process:
    """The ``process_*`` families of prometheus_client's ``ProcessCollector``, read from
    /proc/self at each scrape (none where there is no /proc)."""

    def __init__(self) -> None:
        self.ticks = float(os.sysconf("SC_CLK_TCK"))
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.boot_s = 0.0
        try:
            with open("/proc/stat", "rb") as f:
                for line in f:
                    if line.startswith(b"btime "):
                        self.boot_s = float(line.split()[1])
                        break
        except OSError:
            pass

    def text(self) -> str:
        if not self.boot_s:
            return ""
        out = []
        try:
            with open("/proc/self/stat", "rb") as f:
                parts = f.read().split(b")")[-1].split()
            cpu_s = (float(parts[11]) + float(parts[12])) / self.ticks
            out += [
                _family(
                    "process_virtual_memory_bytes",
                    "gauge",
                    "Virtual memory size in bytes.",
                    [("", float(parts[20]))],
                ),
                _family(
                    "process_resident_memory_bytes",
                    "gauge",
                    "Resident memory size in bytes.",
                    [("", float(parts[21]) * self.page)],
                ),
                _family(
                    "process_start_time_seconds",
                    "gauge",
                    "Start time of the process since unix epoch in seconds.",
                    [("", float(parts[19]) / self.ticks + self.boot_s)],
                ),
                _family(
                    "process_cpu_seconds_total",
                    "counter",
                    "Total user and system CPU time spent in seconds.",
                    [("", cpu_s)],
                ),
            ]
        except OSError:
            pass
        try:
            max_fds = None
            with open("/proc/self/limits", "rb") as f:
                for line in f:
                    if line.startswith(b"Max open file"):
                        max_fds = float(line.split()[3])
                        break
            open_fds = len(os.listdir("/proc/self/fd"))
            out.append(
                _family(
                    "process_open_fds",
                    "gauge",
                    "Number of open file descriptors.",
                    [("", open_fds)],
                )
            )
            if max_fds is not None:
                help_text = "Maximum number of open file descriptors."
                out.append(_family("process_max_fds", "gauge", help_text, [("", max_fds)]))
        except OSError:
            pass
        return "".join(out)


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
        self._process: _Process | None = None  # made at the first scrape

    # ---- the route ----------------------------------------------------------------------------

    def scrape(self, req: Request) -> Response | None:
        """Answer ``req`` now if the whole text takes one slice, else return None and answer
        it through the router once the last slice is done (joining a render under way)."""
        current = self._scrape
        if current is not None:
            current.waiting.append(req)
            return None
        scrape = _Scrape(self.fixed())
        if self._step(scrape, time.perf_counter() + self.slice_s):
            return (200, self._finish(scrape), _HEADERS)
        scrape.waiting.append(req)
        self._scrape = scrape
        self._schedule()
        return None

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
            from .errors import answer_error

            response = answer_error(exc, "GET /metrics")
        self._scrape = None
        for req in scrape.waiting:
            self._router.answer(req, response)

    # ---- rendering ------------------------------------------------------------------------

    def render(self) -> bytes:
        """The whole text now, in one go (tools and tests; the route uses :meth:`scrape`)."""
        scrape = _Scrape(self.fixed())
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

    # ---- the fixed families -------------------------------------------------------------

    def fixed(self) -> bytes:
        """``process_*``, then WonderQ's own fixed families, then the store's."""
        if self._process is None:
            self._process = _Process()
        store = self._store
        requests = [
            (f'{{route="{_label(route)}",status="{status}"}}', n)
            for (route, status), n in sorted(self._router.request_counts().items())
        ]
        out = [
            self._process.text(),
            _family(
                "wonderq_memory_bytes",
                "gauge",
                "Bytes of messages the store holds.",
                [("", store.memory_bytes())],
            ),
            _family(
                "wonderq_memory_limit_bytes",
                "gauge",
                "The store's memory limit in bytes (0 = none).",
                [("", store.memory_limit())],
            ),
            _family(
                "wonderq_http_requests", "counter", "HTTP responses by route and status.", requests
            ),
            _family(
                "wonderq_connections",
                "gauge",
                "Open client connections.",
                [("", self._connection_count())],
            ),
            _family(
                "wonderq_waiting_receives",
                "gauge",
                "Parked long polls.",
                [("", self._longpoll.count)],
            ),
        ]
        out += [
            _family(name, kind, help_text, [("", value)])
            for name, kind, help_text, value in store.metrics()
        ]
        return "".join(out).encode("utf-8")
