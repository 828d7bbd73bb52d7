"""Many queues: the engine past 65,536 queues (a message's queue index is 24 bits), the
store's paging (kept-in-order names, ``stats_page``) and the incremental ``/metrics``
render. No timing here: the figures are bench/scale.py's."""

from __future__ import annotations

import asyncio
import json
import os
import random
import resource
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from _server import ServerProcess, publish, running_server
from prometheus_client.parser import text_string_to_metric_families

from wonderq import _core, params
from wonderq.longpoll import LongPoll
from wonderq.metrics import Metrics
from wonderq.queuenames import QueueNames
from wonderq.store import MemoryStore, Store

pytestmark = pytest.mark.timeout(120)


def test_queues_past_65536_keep_their_messages_apart() -> None:
    """Queue indexes above 16 bits: leases, delays, expiry and dead letters of a message in
    queue 70,000 stay in that queue (a 16-bit index would wrap to queue 4,464)."""
    b = _core.Broker()
    n = 70_001
    for i in range(1, n):
        b.put_queue(f"q{i}")
    last, wrapped = f"q{n - 1}", f"q{(n - 1) % 65536}"
    b.put_queue("dlq")
    b.put_queue(last, {"max_receives": 1, "dead_letter_queue": "dlq"})
    a = b.publish(last, b"a", 0)
    b.publish(last, b"d", 0, 50)  # delayed: sits in the timer heap
    got = json.loads(b.receive(last, 7, 1, 0, 10))["messages"]
    assert [m["id"] for m in got] == [a]
    assert b.delete(last, 7, a, 5) is True
    b.publish(last, b"x", 0)
    [x] = json.loads(b.receive(last, 8, 1, 0, 10))["messages"]
    b.expire(100, 1000)  # the lease of x runs out: dead-lettered; the delay ends
    b.check_invariants()
    assert json.loads(b.peek("dlq", 10, 100))["messages"][0]["id"] == x["id"]
    assert b.ready_count(last) == 1  # the delayed one, in its own queue
    assert b.ready_count(wrapped) == 0
    row = b.stats([last])[0]
    assert row[0] == last and row[4] == 3  # published


def test_engine_stats_by_names_skips_missing_and_keeps_order() -> None:
    b = _core.Broker()
    for name in ("b", "a", "c"):
        b.put_queue(name)
    b.publish("c", b"m", 0)
    rows = b.stats(["c", "nope", "a"])
    assert [r[0] for r in rows] == ["c", "a"]
    assert rows[0][1] == 1
    assert [r[0] for r in b.stats()] == ["a", "b", "c", "default"]


class _Rows(Store):
    """A store with only stats(): the base class's stats_page slices it."""

    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        super().__init__()
        self.rows = rows

    def stats(self) -> list[tuple[Any, ...]]:
        return self.rows


@pytest.mark.parametrize("limit", [1, 2, 3, 10])
def test_stats_pages_cover_every_queue_once(limit: int) -> None:
    mem = MemoryStore()
    for i in range(7):
        mem.put_queue(f"q{i}", None)
    mem.delete_queue("q3")
    for store in (mem, _Rows(mem.stats())):
        seen: list[str] = []
        after = ""
        while True:
            rows, nxt = store.stats_page(after, limit)
            assert len(rows) <= limit
            seen += [r[0] for r in rows]
            if nxt is None:
                break
            assert nxt == rows[-1][0]
            after = nxt
        assert seen == [r[0] for r in mem.stats()]


def test_list_queues_follows_creates_and_deletes_after_a_listing() -> None:
    store = MemoryStore()
    store.put_queue("m", None)
    assert [q["name"] for q in store.list_queues("", "", 100)[0]] == ["default", "m"]
    store.put_queue("a", None)
    store.put_queue("m", {"delay_ms": 5})  # an update: not a new name
    store.put_queue("z", None)
    store.delete_queue("m")
    infos, nxt = store.list_queues("", "", 2)
    assert [q["name"] for q in infos] == ["a", "default"] and nxt == "default"
    infos, nxt = store.list_queues("", nxt, 2)
    assert [q["name"] for q in infos] == ["z"] and nxt is None


def test_names_stay_in_order_through_random_creates_deletes_and_pages() -> None:
    """Creates and deletes (a few, or hundreds, between two pages; a name deleted and
    created again) against the engine's own sorted names. Seed: WONDERQ_TEST_SEED."""
    seed = int(os.environ.get("WONDERQ_TEST_SEED", random.randrange(2**32)))
    print(f"WONDERQ_TEST_SEED={seed}")
    rng = random.Random(seed)
    store = MemoryStore()
    store.put_queue("seed", None)
    store.sorted_names()  # built: from now on kept in step by the changes
    live = {"default", "seed"}
    for _ in range(60):
        for _ in range(rng.choice([1, 5, 70, 300])):
            name = f"n{rng.randrange(500)}"
            if name in live and rng.random() < 0.5:
                store.delete_queue(name)
                live.discard(name)
            else:
                store.put_queue(name, None)
                live.add(name)
        assert store.sorted_names() == sorted(live) == store.broker.queue_names()
        after = rng.choice(sorted(live))
        infos, _ = store.list_queues("", after, 5)
        assert [q["name"] for q in infos] == [n for n in sorted(live) if n > after][:5]


class _Router:
    """What Metrics needs of the router: request counts, and answer() for deferred scrapes."""

    def __init__(self) -> None:
        self.answers: list[tuple[Any, Any]] = []

    def request_counts(self) -> dict[tuple[str, int], int]:
        return {("GET /metrics", 200): 3}

    def answer(self, req: Any, response: Any) -> None:
        self.answers.append((req, response))


def _samples(text: bytes) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def _metrics(store: MemoryStore, router: _Router, pending: list[Any], **kw: Any) -> Metrics:
    longpoll = LongPoll(lambda req, resp: None, lambda delay, cb: None)
    return Metrics(store, router, longpoll, lambda: 5, call_soon=pending.append, **kw)  # type: ignore[arg-type]


def test_a_servers_first_scrape_imports_prometheus_client_off_the_loop() -> None:
    """In a running loop, the first scrape is answered later (prometheus_client is imported
    on a thread meanwhile), a scrape arriving before that shares its answer, and the loop
    runs other callbacks in between; the next scrape starts at once."""
    store = MemoryStore()
    for i in range(10):
        store.put_queue(f"q{i}", None)
    router = _Router()
    longpoll = LongPoll(lambda req, resp: None, lambda delay, cb: None)
    metrics = Metrics(store, router, longpoll, lambda: 5)  # type: ignore[arg-type]
    first, second, third = object(), object(), object()
    ticks = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert metrics.scrape(first) is None  # type: ignore[arg-type]
        assert metrics.scrape(second) is None  # type: ignore[arg-type]
        loop.call_soon(ticks.append, 1)
        for _ in range(2000):
            if len(router.answers) == 2:
                break
            await asyncio.sleep(0.005)
        answer = metrics.scrape(third)  # type: ignore[arg-type]
        assert answer is not None and answer[0] == 200

    asyncio.run(main())
    assert ticks == [1]
    assert [req for req, _ in router.answers] == [first, second]
    status, body, _ = router.answers[0][1]
    assert status == 200
    assert router.answers[1][1][1] is body  # one render for both
    samples = _samples(bytes(body))
    assert samples["wonderq_queue_messages"][(("queue", "q3"), ("state", "ready"))] == 0


def test_a_scrape_of_many_queues_is_answered_over_several_turns() -> None:
    store = MemoryStore()
    for i in range(1000):
        store.put_queue(f"q{i:04d}", None)
        store.publish(f"q{i:04d}", b"m" * (i % 3 + 1), -1)
    router = _Router()
    pending: list[Any] = []
    # slice 0: one page per turn, so the scrape must take several
    metrics = _metrics(store, router, pending, slice_s=0.0, page_queues=100)
    first, second = object(), object()
    assert metrics.scrape(first) is None  # type: ignore[arg-type]
    turns = 0
    while pending:
        callback = pending.pop(0)
        if turns == 2:
            assert metrics.scrape(second) is None  # type: ignore[arg-type]  # joins
            store.delete_queue("q0999")  # not rendered yet: left out
            store.publish("q0000", b"late", -1)  # rendered already: the next scrape's
        callback()
        turns += 1
    assert turns >= 9
    assert [req for req, _ in router.answers] == [first, second]
    (_, (status, body, headers)), (_, same) = router.answers
    assert status == 200 and same[1] is body
    assert headers.startswith(b"Content-Type: text/plain")
    m = _samples(body)
    published = m["wonderq_published_total"]
    assert len(published) == 1000  # default + q0000..q0998
    assert published[(("queue", "q0000"),)] == 1
    assert (("queue", "q0999"),) not in published
    ready = m["wonderq_queue_messages"]
    assert ready[(("queue", "q0005"), ("state", "ready"))] == 1
    assert m["wonderq_connections"][()] == 5
    assert m["wonderq_http_requests_total"][(("route", "GET /metrics"), ("status", "200"))] == 3
    assert "process_resident_memory_bytes" in m
    # The next scrape sees the publish that came during the last one; render() agrees.
    assert _samples(metrics.render())["wonderq_published_total"][(("queue", "q0000"),)] == 2


def test_a_small_scrape_is_answered_at_once_and_matches_render() -> None:
    store = MemoryStore()
    store.put_queue("jobs", None)
    store.publish("jobs", b"x", 60_000)
    router = _Router()
    pending: list[Any] = []
    metrics = _metrics(store, router, pending)
    response = metrics.scrape(object())  # type: ignore[arg-type]
    assert response is not None and not pending and not router.answers
    m = _samples(response[1])
    assert m["wonderq_queue_messages"][(("queue", "jobs"), ("state", "delayed"))] == 1
    again = _samples(metrics.render())
    for name, series in m.items():
        if not name.startswith("process_"):
            assert again[name] == series, name


def test_the_server_raises_its_open_file_limit_to_the_hard_one() -> None:
    """Every connection is a file descriptor: started with a soft limit of 256, the server
    raises it to the hard limit and says so."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(f"the hard open-file limit ({hard}) leaves nothing to raise")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        srv = ServerProcess()
        srv.start()  # inherits the soft limit of 256
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        limits = Path(f"/proc/{srv.pid}/limits").read_text()
        [line] = [x for x in limits.splitlines() if x.startswith("Max open files")]
        now_soft, now_hard = line.split()[3:5]
        assert now_soft == now_hard
        assert "raised the open-file limit from 256 to" in srv.output()
    finally:
        srv.stop()


def test_queue_names_are_checked_as_the_rule_says() -> None:
    """param_queue's check (a C loop when compiled, for names the cache does not hold)
    agrees with the rule's regex on random segments. Seed: WONDERQ_TEST_SEED."""
    from wonderq.errors import BadParameter
    from wonderq.limits import QUEUE_NAME
    from wonderq.params import param_queue
    from wonderq.request import Request

    seed = int(os.environ.get("WONDERQ_TEST_SEED", random.randrange(2**32)))
    print(f"WONDERQ_TEST_SEED={seed}")
    rng = random.Random(seed)
    alphabet = "azAZ09_-.é \x00/:[`{@~%"
    segments = ["", "a" * 80, "a" * 81, "default", "q-1_Z", "Ω", "%61b", "a%2Fb", "%C3%28", "%"]
    segments += ["".join(rng.choices(alphabet, k=rng.randrange(84))) for _ in range(5000)]
    segments += [
        "".join(rng.choices(["%41", "%2d", "%5F", "%2F", "%FF", "a", "%"], k=5)) for _ in range(500)
    ]
    for segment in segments:
        req = Request("GET", "/", "", b"", True, None)  # type: ignore[arg-type]
        req.params = {"queue": segment}
        try:  # what the segment spells, percent-decoded (RFC 3986); None if not UTF-8
            spelled: str | None = unquote(segment, errors="strict")
        except UnicodeDecodeError:
            spelled = None
        valid = spelled is not None and QUEUE_NAME.fullmatch(spelled) is not None
        try:
            assert param_queue(req) == spelled, repr(segment)
            assert valid, repr(segment)
        except BadParameter:
            assert not valid, repr(segment)


def test_big_answers_pipelined_with_small_ones_arrive_whole_and_in_order() -> None:
    """A body of 256 KiB or more is written without being joined with what precedes it
    (protocol._flush): big last, big first, big in the middle of one read's answers."""
    from conftest import RawConnection, http_request

    big = "b" * (600 * 1024)
    with running_server() as srv:
        ids = [publish(srv, "default", big) for _ in range(3)]
        with RawConnection(srv.port, timeout=30) as conn:
            receive = http_request("GET", "/v1/consumer?cid=5&limit=1&visibility=60")
            health = http_request("GET", "/healthz")
            # health, big | big, health | health, big, health, in one write each
            for batch in ([health, receive], [receive, health], [health, receive, health]):
                conn.send(b"".join(batch))
                for sent in batch:
                    resp = conn.read_response()
                    assert resp.status == 200
                    if sent is health:
                        assert json.loads(resp.body) == {"status": "ok"}
                    else:
                        [msg] = json.loads(resp.body)["messages"]
                        assert msg["id"] == ids.pop(0)
                        assert msg["body"] == big
        assert not ids


def test_sample_values_are_written_as_prometheus_client_writes_them() -> None:
    from prometheus_client.utils import floatToGoString

    from wonderq.metrics import render_family

    values = [0, 1, 4095, 4096, 999_999, 1_000_000, 12_345_678, 2**62]
    for v in values:
        row = ("q", v, v, v, v, v, v, v, v)
        assert render_family(0, [row]).decode().split("\n")[0].endswith(" " + floatToGoString(v))
        line = render_family(3, [row]).decode()
        assert line == f'wonderq_deleted_total{{queue="q"}} {floatToGoString(v)}\n'


def test_spread_queue_paths_route_every_request_to_its_queue() -> None:
    """Requests spread over many queues, each path many times and some percent-encoded,
    land in their own queues (the router matches each path; the engine finds each name in
    its name table), and a route added later is found too."""
    from _harness import Harness

    h = Harness()
    names = [f"kq{k}" for k in range(12)]
    for name in names:
        assert h.ask("PUT", f"/v1/queues/{name}")[0] == 201
    sent: dict[str, list[str]] = {name: [] for name in names}
    for turn in range(4):
        for k, name in enumerate(names):
            segment = name if (turn + k) % 3 else "".join(f"%{ord(c):02X}" for c in name)
            body = f"{name}-{turn}"
            assert h.ask("POST", f"/v1/queues/{segment}/messages", body)[0] == 201
            sent[name].append(body)
    for name in names:
        status, answer = h.ask("GET", f"/v1/queues/{name}/messages?cid=1&limit=10")
        assert status == 200
        assert [m["body"] for m in answer["messages"]] == sent[name]
    assert h.ask("POST", "/v1/queues/kq99/messages", "x")[0] == 404  # no such queue
    h.router.add("GET", "/v1/queues/{queue}/extra", lambda req: (200, b"1", b""))
    assert h.ask("GET", "/v1/queues/kq1/extra")[0] == 200


class Names(QueueNames):
    """A store's table of queue names that records what it is asked, and knows one name."""

    def __init__(self, known: dict[str, str] | None = None) -> None:
        self.hints: list[tuple[bytes, int]] = []
        self.asked: list[str] = []
        self.known = known or {}

    def prefetch_name(self, data: bytes, start: int) -> None:
        self.hints.append((data, start))

    def known_name(self, path: str, start: int, end: int) -> str | None:
        self.asked.append(path[start:end])
        return self.known.get(path[start:end])


def test_a_requests_queue_is_named_to_the_store_as_its_target_arrives() -> None:
    """Router.hint_queues: the targets of routes whose first {param} is {queue} are handed
    to the store's hint with where the segment starts; others are not."""
    from wonderq.routing import Router

    router = Router()
    assert router.queue_hint is None
    for template in (
        "/v1/publish",
        "/v1/queues/{queue}",
        "/v1/queues/{queue}/messages",
        "/v1/queues/{queue}/messages/{id}",
        "/static/{file}",
        "/v2/{tenant}/queues/{queue}",  # its first {param} is not {queue}
        "/v3/q/{queue}",
    ):
        router.add("GET", template, lambda req: (200, b"", b""))
    names = Names()
    router.hint_queues(names)
    assert router.queue_hint == ((b"/v1/queues/", b"/v3/q/"), names)
    targets = [
        b"/v1/queues/a/messages",
        b"/v1/queues/b",
        b"/v1/queues/c/messages/7?cid=1",
        b"/v1/publish",
        b"/v1/queues",
        b"/static/app.js",
        b"/v2/t/queues/d",
        b"/v3/q/e?x",
    ]
    for target in targets:  # as HttpProtocol.on_url does
        for prefix in router.queue_hint[0]:
            if target.startswith(prefix):
                router.queue_hint[1].prefetch_name(target, len(prefix))
                break
    assert names.hints == [
        (b"/v1/queues/a/messages", 11),
        (b"/v1/queues/b", 11),
        (b"/v1/queues/c/messages/7?cid=1", 11),
        (b"/v3/q/e?x", 6),
    ]
    bare = Router()
    bare.add("GET", "/static/{file}", lambda req: (200, b"", b""))
    bare.hint_queues(names)
    assert bare.queue_hint is None  # no route begins with {queue}: the protocol calls nothing


def test_the_api_wires_the_stores_names_into_the_router() -> None:
    from wonderq.api import Api
    from wonderq.queuenames import QueueNames
    from wonderq.routing import Router

    store = MemoryStore()
    assert store.queue_names is store.broker  # the engine's table
    assert isinstance(store.broker, QueueNames)
    router = Router()
    Api(store, router, LongPoll(router.answer, None), 100).routes(router.add)
    assert router.queue_hint == ((b"/v1/queues/",), store.broker)
    assert Store().queue_names is None  # a store that offers none
    other = Router()
    Api(Store(), other, LongPoll(other.answer, None), 100).routes(other.add)
    assert other.queue_hint is None


def test_a_queue_segment_is_handed_on_as_the_stores_own_name() -> None:
    """A {queue}-only route gets the object the store's known_name gives (no new str), a
    segment it does not know gets a new str, and other routes are as before."""
    from wonderq.request import Request
    from wonderq.routing import Router

    mine = "".join(["jo", "bs"])  # not the interned literal: its identity tells it apart
    names = Names({"jobs": mine})
    got: list[Any] = []
    router = Router()
    router.add(
        "POST", "/v1/queues/{queue}/messages", lambda req: got.append(params.param_queue(req))
    )
    router.add("GET", "/v1/queues/{queue}/messages/{id}", lambda req: got.append(req.params))
    router.add("GET", "/static/{file}", lambda req: got.append(req.params))
    router.hint_queues(names)

    def send(method: str, path: str) -> None:
        router.dispatch(Request(method, path, "", b"", True, None))  # type: ignore[arg-type]

    send("POST", "/v1/queues/jobs/messages")
    send("POST", "/v1/queues/other/messages")
    send("POST", "/v1/queues/%6Aobs/messages")
    send("GET", "/v1/queues/jobs/messages/7")
    send("GET", "/static/jobs")
    assert got[0] is mine  # and param_queue took it as it is (params.known_queue)
    assert got[1:3] == ["other", "jobs"]  # "%6Aobs" decoded and checked by param_queue
    assert got[3] == {"queue": "jobs", "id": "7"}
    assert got[4] == {"file": "jobs"}
    assert names.asked == ["jobs", "other", "%6Aobs"]
