"""/metrics: Prometheus text that prometheus_client's own parser reads, with the families of
the contract, read from the engine at scrape time."""

from __future__ import annotations

from typing import Any

import pytest
from _server import ServerProcess, get, request
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.timeout(60)


def scrape(srv: ServerProcess) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    resp = get(srv, "/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(resp.body.decode()):
        for sample in family.samples:
            key = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[key] = sample.value
    return samples


def test_metrics_parse_and_have_the_contract_families(fresh: ServerProcess) -> None:
    ids = [request(fresh, "POST", "/v1/publish", body=f"m{i}").json()["id"] for i in range(3)]
    get(fresh, "/v1/consumer?cid=1&limit=2")
    assert request(fresh, "DELETE", f"/v1/consumer?cid=1&id={ids[0]}").json() is True
    request(fresh, "POST", "/v1/publish", body="later", headers={}).json()
    request(fresh, "POST", "/v1/publish?delay=60", body="delayed")
    get(fresh, "/v1/consumer?cid=x")
    get(fresh, "/nowhere")

    m = scrape(fresh)
    q = (("queue", "default"),)
    assert m["wonderq_published_total"][q] == 5
    assert m["wonderq_delivered_total"][q] == 2
    assert m["wonderq_deleted_total"][q] == 1
    assert m["wonderq_expired_total"][q] == 0
    assert m["wonderq_dead_lettered_total"][q] == 0
    states = m["wonderq_queue_messages"]
    assert states[(("queue", "default"), ("state", "ready"))] == 2
    assert states[(("queue", "default"), ("state", "leased"))] == 1
    assert states[(("queue", "default"), ("state", "delayed"))] == 1
    assert m["wonderq_memory_bytes"][()] > 0
    assert m["wonderq_memory_limit_bytes"][()] == 0
    assert m["wonderq_connections"][()] >= 1
    requests = m["wonderq_http_requests_total"]
    assert requests[(("route", "POST /v1/publish"), ("status", "201"))] == 5
    assert requests[(("route", "GET /v1/consumer"), ("status", "200"))] == 1
    assert requests[(("route", "GET /v1/consumer"), ("status", "400"))] == 1
    assert requests[(("route", "DELETE /v1/consumer"), ("status", "200"))] == 1
    assert requests[(("route", "-"), ("status", "404"))] == 1
    assert m["process_resident_memory_bytes"][()] > 0
    assert "process_cpu_seconds_total" in m


def test_memory_limit_is_reported() -> None:
    from _server import running_server

    with running_server("--max-memory", "123456") as srv:
        assert scrape(srv)["wonderq_memory_limit_bytes"][()] == 123456


def test_protocol_errors_are_counted(wq: ServerProcess) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", wq.port), timeout=5) as sock:
        sock.sendall(b"NONSENSE\r\n\r\n")
        while sock.recv(4096):
            pass
    assert scrape(wq)["wonderq_http_requests_total"][(("route", "-"), ("status", "400"))] >= 1


def test_waiting_receives_counts_parked_long_polls(fresh: ServerProcess) -> None:
    """wonderq_waiting_receives, which the long-poll tests wait on: up when a receive parks,
    down when it is answered, when its client goes away, and when its wait ends."""
    import socket

    from conftest import http_request, wait_parked, waiting_receives

    assert waiting_receives(fresh) == 0
    socks = []
    for i, wait in enumerate(("10", "10", "1")):
        sock = socket.create_connection(("127.0.0.1", fresh.port), timeout=5)
        sock.sendall(http_request("GET", f"/v1/consumer?cid={i}&wait={wait}"))
        socks.append(sock)
        wait_parked(fresh, i + 1)
    wait_parked(fresh, 2)  # the third one's wait ended
    assert request(fresh, "POST", "/v1/publish", body="m").status == 201
    wait_parked(fresh, 1)  # the first was answered
    socks[1].close()
    wait_parked(fresh, 0)  # the second's client went away
    for sock in socks:
        sock.close()


def test_content_type_is_prometheus_clients() -> None:
    """metrics.py writes the text format's content type out (the server does not import
    prometheus_client): it must stay the library's own string."""
    from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

    from wonderq.metrics import CONTENT_TYPE

    assert CONTENT_TYPE == CONTENT_TYPE_PLAIN_0_0_4


def test_metrics_scrape_content_type(fresh: ServerProcess) -> None:
    """A scrape answers the text format's type."""
    r = get(fresh, "/metrics")
    assert r.status == 200
    assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"


# ---- the text is prometheus_client's, written without it -------------------------------------


class _FixedStore:
    def memory_bytes(self) -> int:
        return 12_345_678

    def memory_limit(self) -> int:
        return 0

    def metrics(self) -> list[tuple[str, str, str, float]]:
        return [
            ("wonderq_wal_bytes", "gauge", "Bytes of the log.", 4096),
            ("wonderq_wal_fsyncs_total", "counter", "fsync calls.", 7),
            ("wonderq_odd", "counter", 'A help with \\ and\na newline, "quoted".', 1.5),
        ]


class _FixedRouter:
    def request_counts(self) -> dict[tuple[str, int], int]:
        return {
            ("POST /v1/publish", 201): 10_000_001,
            ("GET /v1/queues/{queue}", 200): 3,
            ('GET "odd\\route"\n', 404): 1,
        }


class _FixedLongPoll:
    count = 2


def test_fixed_families_are_what_prometheus_client_wrote() -> None:
    """Metrics.fixed() writes what prometheus_client.generate_latest wrote for the same
    families through a registry with its ProcessCollector (which the server used before):
    the same lines, byte for byte, but the process_* values, read a moment apart."""
    from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    from wonderq.metrics import Metrics

    store, router, longpoll = _FixedStore(), _FixedRouter(), _FixedLongPoll()
    metrics = Metrics(store, router, longpoll, lambda: 64)  # type: ignore[arg-type]

    class Collector:
        def collect(self) -> Any:
            yield GaugeMetricFamily(
                "wonderq_memory_bytes", "Bytes of messages the store holds.", 12_345_678
            )
            yield GaugeMetricFamily(
                "wonderq_memory_limit_bytes", "The store's memory limit in bytes (0 = none).", 0
            )
            requests = CounterMetricFamily(
                "wonderq_http_requests",
                "HTTP responses by route and status.",
                labels=["route", "status"],
            )
            for (route, status), n in sorted(router.request_counts().items()):
                requests.add_metric([route, str(status)], n)
            yield requests
            yield GaugeMetricFamily("wonderq_connections", "Open client connections.", 64)
            yield GaugeMetricFamily("wonderq_waiting_receives", "Parked long polls.", 2)
            for name, kind, help_text, value in store.metrics():
                family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
                yield family(name, help_text, value)

    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    registry.register(Collector())  # type: ignore[arg-type]
    theirs = generate_latest(registry).decode()
    ours = metrics.fixed().decode()

    def masked(text: str) -> list[str]:
        return [
            line.rsplit(" ", 1)[0] if line.startswith("process_") else line
            for line in text.splitlines()
        ]

    assert masked(ours) == masked(theirs)
    assert (
        'wonderq_http_requests_total{route="POST /v1/publish",status="201"} 1.0000001e+07' in ours
    )
    assert "process_resident_memory_bytes " in ours and "process_max_fds " in ours
    rss = next(
        f for f in text_string_to_metric_families(ours) if f.name.endswith("resident_memory_bytes")
    )
    assert rss.samples[0].value > 1e6


def test_sample_values_are_formatted_as_prometheus_client_formats_them() -> None:
    from prometheus_client.utils import floatToGoString

    from wonderq.metrics import go_float

    values = [0, 1, 0.5, -3.25, 999_999, 1_000_000, 1_234_567, 12_345_678.9, 10**7, 2**53, 1e16]
    values += [1.5e16, 1e22, 123456789012.5, -1e9, float("inf"), float("-inf"), float("nan")]
    values += [n * 7_919 for n in range(0, 10**6, 4_099)] + [
        n / 3 for n in range(1, 10**8, 999_983)
    ]
    for v in values:
        assert go_float(v) == floatToGoString(v), v
