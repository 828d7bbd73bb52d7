"""/metrics: Prometheus text that prometheus_client's own parser reads, with the families of
the contract, read from the engine at scrape time."""

from __future__ import annotations

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
    """metrics.py writes the text format's content type out, so that prometheus_client is
    imported only at the first scrape: it must stay the library's own string."""
    from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

    from wonderq.metrics import CONTENT_TYPE

    assert CONTENT_TYPE == CONTENT_TYPE_PLAIN_0_0_4


def test_metrics_scrape_content_type(fresh: ServerProcess) -> None:
    """The first scrape (prometheus_client loaded then) answers the text format's type."""
    r = get(fresh, "/metrics")
    assert r.status == 200
    assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
