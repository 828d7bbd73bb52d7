"""Every named-queue route through the real server, with raw HTTP: answers, counters and
every validation error (status, error shape, the message naming the parameter)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _server import (
    MAX_ID,
    Response,
    ServerProcess,
    check_error,
    get,
    request,
    running_server,
    unique_name,
)
from conftest import wait_until

pytestmark = pytest.mark.timeout(60)

MAX_BATCH = 10
MAX_MESSAGE = 4096
MAX_REQUEST = 65536


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with running_server(
        "--max-batch",
        str(MAX_BATCH),
        "--max-message-bytes",
        str(MAX_MESSAGE),
        "--max-request-bytes",
        str(MAX_REQUEST),
        "--visibility-timeout",
        "30",
    ) as srv:
        yield srv


# ---- helpers ----------------------------------------------------------------------------------
def put(srv: ServerProcess, name: str, attrs: Any = None, raw: str | None = None) -> Response:
    body = raw if raw is not None else (None if attrs is None else json.dumps(attrs))
    return request(srv, "PUT", f"/v1/queues/{name}", body=body if body is not None else b"")


def make_queue(srv: ServerProcess, **attrs: Any) -> str:
    name = unique_name()
    resp = put(srv, name, attrs)
    assert resp.status == 201, resp.body
    return name


def info(srv: ServerProcess, name: str) -> dict[str, Any]:
    resp = get(srv, f"/v1/queues/{name}")
    assert resp.status == 200, resp.body
    return dict(resp.json())


def publish(srv: ServerProcess, name: str, body: str | bytes = "m", query: str = "") -> int:
    resp = request(srv, "POST", f"/v1/queues/{name}/messages{query}", body=body)
    assert resp.status == 201, resp.body
    doc = resp.json()
    assert set(doc) == {"id"} and isinstance(doc["id"], int)
    return int(doc["id"])


def receive(srv: ServerProcess, name: str, query: str) -> list[dict[str, Any]]:
    resp = get(srv, f"/v1/queues/{name}/messages?{query}")
    assert resp.status == 200, resp.body
    doc = resp.json()
    assert set(doc) == {"messages"}
    return list(doc["messages"])


def delete_msg(srv: ServerProcess, name: str, msg_id: int, cid: int) -> Any:
    resp = request(srv, "DELETE", f"/v1/queues/{name}/messages/{msg_id}?cid={cid}")
    assert resp.status == 200, resp.body
    return resp.json()


def lease(srv: ServerProcess, name: str, msg_id: int, cid: int, timeout: str) -> Any:
    path = f"/v1/queues/{name}/messages/{msg_id}/lease?cid={cid}&timeout={timeout}"
    resp = request(srv, "POST", path)
    assert resp.status == 200, resp.body
    return resp.json()


def batch(srv: ServerProcess, name: str, entries: Any) -> Response:
    return request(srv, "POST", f"/v1/queues/{name}/batch", body=json.dumps(entries))


def ack(srv: ServerProcess, name: str, doc: Any) -> Response:
    return request(srv, "POST", f"/v1/queues/{name}/ack", body=json.dumps(doc))


def totals_and_counts(srv: ServerProcess, name: str) -> tuple[dict[str, int], dict[str, int]]:
    doc = info(srv, name)
    return doc["counts"], doc["totals"]


def metric(text: str, series: str) -> float:
    """The value of one series (name with its labels, as printed) in Prometheus text."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{series} not in /metrics")


def check_info_shape(doc: dict[str, Any], name: str) -> None:
    assert set(doc) == {"name", "attributes", "counts", "totals"}
    assert doc["name"] == name
    assert set(doc["attributes"]) == {
        "visibility_timeout",
        "delay",
        "max_receives",
        "dead_letter_queue",
        "max_message_bytes",
    }
    assert set(doc["counts"]) == {"ready", "leased", "delayed"}
    assert set(doc["totals"]) == {"published", "delivered", "deleted", "expired", "dead_lettered"}
    for v in [*doc["counts"].values(), *doc["totals"].values()]:
        assert isinstance(v, int) and not isinstance(v, bool) and v >= 0


DEFAULT_ATTRIBUTES = {
    "visibility_timeout": 30,
    "delay": 0,
    "max_receives": None,
    "dead_letter_queue": None,
    "max_message_bytes": MAX_MESSAGE,
}
ZERO_COUNTS = {"ready": 0, "leased": 0, "delayed": 0}
ZERO_TOTALS = {"published": 0, "delivered": 0, "deleted": 0, "expired": 0, "dead_lettered": 0}


# ---- list, create, update, info, delete -------------------------------------------------------
def test_list_has_default_and_is_sorted(server: ServerProcess) -> None:
    a, b = make_queue(server), make_queue(server)
    resp = get(server, "/v1/queues")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    queues = resp.json()["queues"]
    names = [q["name"] for q in queues]
    assert "default" in names and a in names and b in names
    assert names == sorted(names)
    for q in queues:
        check_info_shape(q, q["name"])


def test_put_creates_201_then_updates_200(server: ServerProcess) -> None:
    name = unique_name()
    resp = put(server, name, {})
    assert resp.status == 201
    doc = resp.json()
    check_info_shape(doc, name)
    assert doc["attributes"] == DEFAULT_ATTRIBUTES
    assert doc["counts"] == ZERO_COUNTS and doc["totals"] == ZERO_TOTALS
    resp = put(server, name, {"visibility_timeout": 5})
    assert resp.status == 200
    assert resp.json()["attributes"] == {**DEFAULT_ATTRIBUTES, "visibility_timeout": 5}
    resp = put(server, name, {"delay": 2})  # a missing key keeps its value
    assert resp.status == 200
    expected = {**DEFAULT_ATTRIBUTES, "visibility_timeout": 5, "delay": 2}
    assert resp.json()["attributes"] == expected
    assert info(server, name)["attributes"] == expected


def test_put_without_body_creates_with_defaults(server: ServerProcess) -> None:
    name = unique_name()
    resp = request(server, "PUT", f"/v1/queues/{name}")
    assert resp.status == 201
    assert resp.json()["attributes"] == DEFAULT_ATTRIBUTES
    resp = request(server, "PUT", f"/v1/queues/{name}", body=b"")
    assert resp.status == 200  # exists: nothing changes
    assert resp.json()["attributes"] == DEFAULT_ATTRIBUTES


def test_put_all_attributes_and_fractions(server: ServerProcess) -> None:
    dlq = make_queue(server)
    name = unique_name()
    attrs = {
        "visibility_timeout": 0.25,
        "delay": 1.5,
        "max_receives": 3,
        "dead_letter_queue": dlq,
        "max_message_bytes": 100,
    }
    resp = put(server, name, attrs)
    assert resp.status == 201
    assert resp.json()["attributes"] == attrs
    # Limits are inclusive.
    edge = {"visibility_timeout": 43200, "delay": 604800, "max_message_bytes": MAX_MESSAGE}
    resp = put(server, name, edge)
    assert resp.status == 200
    assert resp.json()["attributes"] == {**attrs, **edge}
    zero = {"visibility_timeout": 0, "delay": 0, "max_message_bytes": 1, "max_receives": 1}
    assert put(server, name, zero).status == 200
    # Seconds are rounded up to whole milliseconds.
    assert (
        put(server, name, {"visibility_timeout": 0.0001}).json()["attributes"]["visibility_timeout"]
        == 0.001
    )


def test_put_can_change_default(server: ServerProcess) -> None:
    resp = put(server, "default", {"visibility_timeout": 31})
    assert resp.status == 200
    assert resp.json()["attributes"]["visibility_timeout"] == 31
    assert put(server, "default", {"visibility_timeout": 30}).status == 200


def test_get_queue_info_and_missing_queue(server: ServerProcess) -> None:
    name = make_queue(server)
    check_info_shape(info(server, name), name)
    check_error(get(server, f"/v1/queues/{unique_name()}"), 404, code="queue_not_found")


def test_delete_queue(server: ServerProcess) -> None:
    name = make_queue(server)
    publish(server, name, "gone")
    resp = request(server, "DELETE", f"/v1/queues/{name}")
    assert resp.status == 204 and resp.body == b""
    check_error(get(server, f"/v1/queues/{name}"), 404, code="queue_not_found")
    check_error(request(server, "DELETE", f"/v1/queues/{name}"), 404, code="queue_not_found")
    assert name not in [q["name"] for q in get(server, "/v1/queues").json()["queues"]]
    # Re-created, it is a new, empty queue.
    assert put(server, name, {}).status == 201
    counts, totals = totals_and_counts(server, name)
    assert counts == ZERO_COUNTS and totals == ZERO_TOTALS


def test_delete_default_is_refused(server: ServerProcess) -> None:
    check_error(request(server, "DELETE", "/v1/queues/default"), 409, code="queue_in_use")
    assert info(server, "default")["name"] == "default"


def test_delete_queue_used_as_dead_letter_queue_is_refused(server: ServerProcess) -> None:
    dlq = make_queue(server)
    src = make_queue(server, max_receives=2, dead_letter_queue=dlq)
    err = check_error(request(server, "DELETE", f"/v1/queues/{dlq}"), 409, code="queue_in_use")
    assert dlq in err["message"]
    assert put(server, src, {"max_receives": None, "dead_letter_queue": None}).status == 200
    assert request(server, "DELETE", f"/v1/queues/{dlq}").status == 204


# ---- bad names --------------------------------------------------------------------------------
BAD_NAMES = ["bad.name", "a" * 81, "sp%20ace", "caf%C3%A9", "semi%3Bcolon", "%2E%2E"]


@pytest.mark.parametrize("bad", BAD_NAMES)
@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("PUT", "", "{}"),
        ("GET", "", None),
        ("DELETE", "", None),
        ("POST", "/purge", None),
        ("POST", "/messages", "x"),
        ("GET", "/messages?cid=1", None),
        ("POST", "/batch", '["x"]'),
        ("POST", "/ack", '{"cid": 1, "ids": [1]}'),
        ("DELETE", "/messages/1?cid=1", None),
        ("POST", "/messages/1/lease?cid=1&timeout=1", None),
    ],
)
def test_bad_queue_names_are_400(
    server: ServerProcess, bad: str, method: str, suffix: str, body: str | None
) -> None:
    resp = request(server, method, f"/v1/queues/{bad}{suffix}", body=body)
    check_error(resp, 400, names="queue")


def test_longest_name_is_fine(server: ServerProcess) -> None:
    name = "A-z_9" * 16
    assert len(name) == 80
    assert put(server, name, {}).status == 201
    assert request(server, "DELETE", f"/v1/queues/{name}").status == 204


# ---- attribute validation ---------------------------------------------------------------------
BAD_ATTRIBUTES: list[tuple[str, str | None]] = [
    ('{"colour": "blue"}', "colour"),
    ('{"visibility_timeout": "30"}', "visibility_timeout"),
    ('{"visibility_timeout": true}', "visibility_timeout"),
    ('{"visibility_timeout": null}', "visibility_timeout"),
    ('{"visibility_timeout": -1}', "visibility_timeout"),
    ('{"visibility_timeout": 43201}', "visibility_timeout"),
    ('{"visibility_timeout": 43200.001}', "visibility_timeout"),
    ('{"visibility_timeout": 1e400}', "visibility_timeout"),
    ('{"visibility_timeout": NaN}', None),  # not JSON: may be refused as a bad body
    ('{"visibility_timeout": [30]}', "visibility_timeout"),
    ('{"delay": -0.5}', "delay"),
    ('{"delay": 604801}', "delay"),
    ('{"delay": "0"}', "delay"),
    ('{"delay": Infinity}', None),
    ('{"max_receives": 0}', "max_receives"),
    ('{"max_receives": -3}', "max_receives"),
    ('{"max_receives": 1.5}', "max_receives"),
    ('{"max_receives": "3"}', "max_receives"),
    ('{"max_receives": true}', "max_receives"),
    ('{"max_message_bytes": 0}', "max_message_bytes"),
    ('{"max_message_bytes": 4097}', "max_message_bytes"),
    ('{"max_message_bytes": 10.5}', "max_message_bytes"),
    ('{"max_message_bytes": "10"}', "max_message_bytes"),
    ('{"max_message_bytes": null}', "max_message_bytes"),
    ('{"dead_letter_queue": 5}', "dead_letter_queue"),
    ('{"dead_letter_queue": "bad.name"}', "dead_letter_queue"),
    ('{"dead_letter_queue": ""}', "dead_letter_queue"),
]


@pytest.mark.parametrize(("raw", "names"), BAD_ATTRIBUTES)
def test_bad_attribute_on_create_is_400_and_creates_nothing(
    server: ServerProcess, raw: str, names: str | None
) -> None:
    name = unique_name()
    check_error(put(server, name, raw=raw), 400, names=names)
    check_error(get(server, f"/v1/queues/{name}"), 404)


@pytest.mark.parametrize(("raw", "names"), BAD_ATTRIBUTES)
def test_bad_attribute_on_update_is_400_and_changes_nothing(
    server: ServerProcess, raw: str, names: str | None
) -> None:
    name = make_queue(server, visibility_timeout=7)
    check_error(put(server, name, raw=raw), 400, names=names)
    assert info(server, name)["attributes"] == {**DEFAULT_ATTRIBUTES, "visibility_timeout": 7}


def test_one_bad_attribute_among_good_ones_changes_nothing(server: ServerProcess) -> None:
    name = make_queue(server)
    check_error(put(server, name, {"visibility_timeout": 9, "delay": -1}), 400, names="delay")
    assert info(server, name)["attributes"] == DEFAULT_ATTRIBUTES


@pytest.mark.parametrize("raw", ["[]", '"x"', "5", "null", "{", '{"a": 1,}', "\xff"])
def test_put_body_must_be_a_json_object(server: ServerProcess, raw: str) -> None:
    name = unique_name()
    body = raw.encode("latin-1") if raw == "\xff" else raw.encode()
    resp = request(server, "PUT", f"/v1/queues/{name}", body=body)
    check_error(resp, 400)
    check_error(get(server, f"/v1/queues/{name}"), 404)


def test_max_receives_needs_a_dead_letter_queue(server: ServerProcess) -> None:
    name = unique_name()
    check_error(put(server, name, {"max_receives": 3}), 400, names="max_receives")
    check_error(get(server, f"/v1/queues/{name}"), 404)
    # On update too, and removing the dead-letter queue while max_receives is set.
    dlq = make_queue(server)
    name = make_queue(server)
    check_error(put(server, name, {"max_receives": 3}), 400, names="max_receives")
    assert put(server, name, {"max_receives": 3, "dead_letter_queue": dlq}).status == 200
    check_error(put(server, name, {"dead_letter_queue": None}), 400, names="max_receives")
    assert info(server, name)["attributes"]["dead_letter_queue"] == dlq


def test_dead_letter_queue_must_exist(server: ServerProcess) -> None:
    missing = unique_name()
    name = unique_name()
    resp = put(server, name, {"max_receives": 3, "dead_letter_queue": missing})
    err = check_error(resp, 400, names="dead_letter_queue")
    assert missing in err["message"]
    check_error(get(server, f"/v1/queues/{name}"), 404)


def test_queue_cannot_be_its_own_dead_letter_queue(server: ServerProcess) -> None:
    name = unique_name()  # on create
    check_error(
        put(server, name, {"max_receives": 1, "dead_letter_queue": name}),
        400,
        names="dead_letter_queue",
    )
    name = make_queue(server)  # on update
    check_error(
        put(server, name, {"max_receives": 1, "dead_letter_queue": name}),
        400,
        names="dead_letter_queue",
    )
    assert info(server, name)["attributes"] == DEFAULT_ATTRIBUTES


def test_dead_letter_queue_without_max_receives_is_allowed(server: ServerProcess) -> None:
    dlq = make_queue(server)
    name = unique_name()
    resp = put(server, name, {"dead_letter_queue": dlq})
    assert resp.status == 201
    assert resp.json()["attributes"]["dead_letter_queue"] == dlq
    assert resp.json()["attributes"]["max_receives"] is None


# ---- publish one ------------------------------------------------------------------------------
def test_publish_answers_201_with_increasing_ids(server: ServerProcess) -> None:
    name = make_queue(server)
    ids = [publish(server, name, f"m{i}") for i in range(5)]
    assert ids == sorted(ids) and len(set(ids)) == 5 and ids[0] >= 1
    counts, totals = totals_and_counts(server, name)
    assert counts["ready"] == 5 and totals["published"] == 5


@pytest.mark.not_on(
    "redis-cluster",
    reason="an id carries its queue's cluster slot: queues in different slots count apart",
)
def test_ids_increase_across_queues(server: ServerProcess) -> None:
    first = publish(server, make_queue(server))
    assert publish(server, make_queue(server)) > first  # one server-wide counter


def test_publish_to_missing_queue_is_404(server: ServerProcess) -> None:
    resp = request(server, "POST", f"/v1/queues/{unique_name()}/messages", body="x")
    check_error(resp, 404, code="queue_not_found")


def test_publish_body_limits(server: ServerProcess) -> None:
    name = make_queue(server)
    check_error(request(server, "POST", f"/v1/queues/{name}/messages", body=b""), 400, names="body")
    check_error(
        request(server, "POST", f"/v1/queues/{name}/messages", body=b"ok \xff"), 400, names="body"
    )
    check_error(
        request(server, "POST", f"/v1/queues/{name}/messages", body=b"\xed\xa0\x80"),
        400,
        names="body",
    )  # an encoded surrogate is not UTF-8
    publish(server, name, "x" * MAX_MESSAGE)
    resp = request(server, "POST", f"/v1/queues/{name}/messages", body="x" * (MAX_MESSAGE + 1))
    check_error(resp, 413, code="message_too_large")
    # The queue's own limit.
    assert put(server, name, {"max_message_bytes": 10}).status == 200
    publish(server, name, "é" * 5)  # 10 bytes
    resp = request(server, "POST", f"/v1/queues/{name}/messages", body="é" * 5 + "x")
    check_error(resp, 413, code="message_too_large")
    counts, totals = totals_and_counts(server, name)
    assert counts["ready"] == 2 and totals["published"] == 2


def test_declared_length_over_the_limit_is_413_at_once(server: ServerProcess) -> None:
    name = make_queue(server)
    for path in (
        f"/v1/queues/{name}/messages",
        f"/v1/queues/{name}/batch",
        f"/v1/queues/{name}/ack",
        "/v1/publish",
    ):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(
                f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {10**9}\r\n\r\n".encode()
            )
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            assert data.startswith(b"HTTP/1.1 413"), (path, data[:200])


@pytest.mark.parametrize(
    "value",
    ["-1", "+1", "1e3", "nan", "inf", ".5", "5.", "abc", "", "604801", "604800.001", "0x10", "1,5"],
)
def test_publish_bad_delay_is_400(server: ServerProcess, value: str) -> None:
    name = make_queue(server)
    resp = request(server, "POST", f"/v1/queues/{name}/messages?delay={value}", body="x")
    check_error(resp, 400, names="delay")
    assert totals_and_counts(server, name)[1]["published"] == 0


def test_publish_delay_and_parameters(server: ServerProcess) -> None:
    name = make_queue(server)
    publish(server, name, "a", "?delay=604800")
    publish(server, name, "b", "?delay=0")
    publish(server, name, "c", "?delay=0.25")
    publish(server, name, "d", "?unknown=1&also=2")  # unknown parameters are ignored
    check_error(
        request(server, "POST", f"/v1/queues/{name}/messages?delay=1&delay=2", body="x"),
        400,
        names="delay",
    )  # a repeated parameter
    counts = info(server, name)["counts"]
    assert counts == {"ready": 2, "leased": 0, "delayed": 2}
    wait_until(
        lambda: info(server, name)["counts"] == {"ready": 3, "leased": 0, "delayed": 1},
        what="the 0.25 s delay to end",
    )


def test_queue_delay_applies_and_message_delay_overrides(server: ServerProcess) -> None:
    name = make_queue(server, delay=60)
    publish(server, name, "queue default")
    now_id = publish(server, name, "no delay", "?delay=0")
    assert info(server, name)["counts"] == {"ready": 1, "leased": 0, "delayed": 1}
    assert [m["id"] for m in receive(server, name, "cid=1&limit=10")] == [now_id]


# ---- publish a batch --------------------------------------------------------------------------
def test_batch_of_strings_and_objects(server: ServerProcess) -> None:
    name = make_queue(server)
    resp = batch(server, name, ["a", {"body": "b"}, {"body": "c", "delay": 0}, "d"])
    assert resp.status == 201
    ids = resp.json()["ids"]
    assert set(resp.json()) == {"ids"}
    assert ids == list(range(ids[0], ids[0] + 4))
    got = receive(server, name, "cid=1&limit=10")
    assert [(m["id"], m["body"]) for m in got] == list(zip(ids, "abcd", strict=True))


@pytest.mark.parametrize(
    ("raw", "bodies"),
    [
        (b' [ "a" ,\n"b" ]\r\n', ["a", "b"]),  # plain strings: the engine's C pass
        ('["h\u00e9", "\u2603"]'.encode(), ["h\u00e9", "\u2603"]),
        (b'["a\\"b", "c\\nd", "\\u00e9"]', ['a"b', "c\nd", "\u00e9"]),  # escapes: json
    ],
)
def test_batch_bodies_as_written(server: ServerProcess, raw: bytes, bodies: list[str]) -> None:
    name = make_queue(server)
    resp = request(server, "POST", f"/v1/queues/{name}/batch", body=raw)
    assert resp.status == 201, resp.body
    got = receive(server, name, "cid=1&limit=10")
    assert [m["body"] for m in got] == bodies
    assert [m["id"] for m in got] == resp.json()["ids"]


def test_batch_delays_override_the_queue_delay(server: ServerProcess) -> None:
    name = make_queue(server, delay=60)
    resp = batch(server, name, ["x", {"body": "y", "delay": 0}, {"body": "z", "delay": 0.2}])
    assert resp.status == 201
    assert info(server, name)["counts"] == {"ready": 1, "leased": 0, "delayed": 2}
    wait_until(
        lambda: info(server, name)["counts"] == {"ready": 2, "leased": 0, "delayed": 1},
        what="the 0.2 s delay of the batch entry to end",
    )


def test_batch_up_to_max_batch(server: ServerProcess) -> None:
    name = make_queue(server)
    resp = batch(server, name, [f"m{i}" for i in range(MAX_BATCH)])
    assert resp.status == 201 and len(resp.json()["ids"]) == MAX_BATCH


BAD_BATCHES: list[tuple[Any, int, str | None]] = [
    ([], 400, None),
    ({"body": "x"}, 400, None),
    ("x", 400, None),
    (["ok", ""], 400, "body"),
    (["ok", 5], 400, None),
    (["ok", None], 400, None),
    (["ok", ["x"]], 400, None),
    (["ok", {"delay": 1}], 400, "body"),
    (["ok", {"body": ""}], 400, "body"),
    (["ok", {"body": 5}], 400, "body"),
    (["ok", {"body": "x", "delay": -1}], 400, "delay"),
    (["ok", {"body": "x", "delay": 604801}], 400, "delay"),
    (["ok", {"body": "x", "delay": "5"}], 400, "delay"),
    (["ok", {"body": "x", "delay": True}], 400, "delay"),
    (["ok", {"body": "x", "delay": None}], 400, "delay"),
    (["ok", {"body": "x", "colour": 1}], 400, "colour"),
    (["ok", "\ud800"], 400, None),  # a lone surrogate is not UTF-8
    (["ok", "x" * (MAX_MESSAGE + 1)], 413, None),
    ([f"m{i}" for i in range(MAX_BATCH + 1)], 400, None),
]


@pytest.mark.parametrize(("entries", "status", "names"), BAD_BATCHES)
def test_bad_batch_stores_nothing(
    server: ServerProcess, entries: Any, status: int, names: str | None
) -> None:
    name = make_queue(server)
    publish(server, name, "before")
    check_error(batch(server, name, entries), status, names=names)
    counts, totals = totals_and_counts(server, name)
    assert counts == {"ready": 1, "leased": 0, "delayed": 0}
    assert totals["published"] == 1


@pytest.mark.parametrize("raw", [b"[", b'["a",]', b"\xff", b'["a"] x', b"", b"NaN"])
def test_batch_body_must_be_json(server: ServerProcess, raw: bytes) -> None:
    name = make_queue(server)
    check_error(request(server, "POST", f"/v1/queues/{name}/batch", body=raw), 400)
    assert totals_and_counts(server, name)[1]["published"] == 0


def test_batch_to_missing_queue_is_404(server: ServerProcess) -> None:
    check_error(batch(server, unique_name(), ["x"]), 404, code="queue_not_found")


def test_batch_respects_queue_max_message_bytes(server: ServerProcess) -> None:
    name = make_queue(server, max_message_bytes=3)
    check_error(batch(server, name, ["abc", "abcd"]), 413, code="message_too_large")
    assert batch(server, name, ["abc", "ab"]).status == 201


# ---- receive ----------------------------------------------------------------------------------
def test_receive_lowest_ids_first_and_limit(server: ServerProcess) -> None:
    name = make_queue(server)
    ids = [publish(server, name, f"m{i}") for i in range(5)]
    got = receive(server, name, "cid=1")  # limit defaults to 1
    assert [(m["id"], m["body"], m["receives"]) for m in got] == [(ids[0], "m0", 1)]
    assert set(got[0]) == {"id", "body", "receives"}
    got = receive(server, name, "cid=1&limit=3")
    assert [m["id"] for m in got] == ids[1:4]
    assert [m["id"] for m in receive(server, name, f"cid=2&limit={MAX_BATCH}")] == ids[4:]
    assert receive(server, name, "cid=3&limit=10") == []


def test_redelivered_message_comes_before_newer_ones(server: ServerProcess) -> None:
    name = make_queue(server)
    first = publish(server, name, "old")
    receive(server, name, "cid=1&visibility=30")
    second = publish(server, name, "new")
    assert lease(server, name, first, 1, "0") is True
    got = receive(server, name, "cid=2&limit=10")
    assert [(m["id"], m["receives"]) for m in got] == [(first, 2), (second, 1)]


def test_receive_extreme_valid_parameters(server: ServerProcess) -> None:
    name = make_queue(server)
    publish(server, name)
    assert len(receive(server, name, f"cid={MAX_ID}&visibility=43200")) == 1
    assert receive(server, name, "cid=0&wait=0&visibility=0.001") == []
    publish(server, name)
    got = receive(server, name, f"cid=0&wait=20&limit={MAX_BATCH}&other=ignored")
    assert len(got) == 1  # available: answered at once, whatever the wait


def test_receive_visibility_zero_makes_it_available_at_once(server: ServerProcess) -> None:
    name = make_queue(server)
    mid = publish(server, name, "v0")
    assert receive(server, name, "cid=1&visibility=0")[0]["id"] == mid
    got = receive(server, name, "cid=2&wait=1")  # available at once (wait: timer slack only)
    assert [(m["id"], m["receives"]) for m in got] == [(mid, 2)]
    assert delete_msg(server, name, mid, 1) is False  # 1's lease ended at once
    assert delete_msg(server, name, mid, 2) is True


def test_receive_uses_queue_visibility_timeout(server: ServerProcess) -> None:
    name = make_queue(server, visibility_timeout=0.3)
    mid = publish(server, name)
    receive(server, name, "cid=1")
    assert receive(server, name, "cid=2") == []
    got = wait_until(lambda: receive(server, name, "cid=2"), what="the queue's 0.3 s lease")
    assert [m["id"] for m in got] == [mid]
    assert info(server, name)["totals"]["expired"] == 1


def test_receive_from_missing_queue_is_404(server: ServerProcess) -> None:
    check_error(
        get(server, f"/v1/queues/{unique_name()}/messages?cid=1"), 404, code="queue_not_found"
    )


BAD_RECEIVE_QUERIES = [
    ("", "cid"),
    ("limit=1", "cid"),
    ("cid=", "cid"),
    ("cid=-1", "cid"),
    ("cid=%2B1", "cid"),
    (f"cid={MAX_ID + 1}", "cid"),
    ("cid=1.5", "cid"),
    ("cid=abc", "cid"),
    ("cid=1e3", "cid"),
    ("cid=1&cid=2", "cid"),
    ("cid=1&limit=0", "limit"),
    ("cid=1&limit=-1", "limit"),
    (f"cid=1&limit={MAX_BATCH + 1}", "limit"),
    ("cid=1&limit=x", "limit"),
    ("cid=1&limit=", "limit"),
    ("cid=1&limit=1&limit=1", "limit"),
    ("cid=1&visibility=-1", "visibility"),
    ("cid=1&visibility=43201", "visibility"),
    ("cid=1&visibility=43200.0001", "visibility"),
    ("cid=1&visibility=1e3", "visibility"),
    ("cid=1&visibility=nan", "visibility"),
    ("cid=1&visibility=inf", "visibility"),
    ("cid=1&visibility=.5", "visibility"),
    ("cid=1&visibility=", "visibility"),
    ("cid=1&wait=-1", "wait"),
    ("cid=1&wait=20.001", "wait"),
    ("cid=1&wait=21", "wait"),
    ("cid=1&wait=%2B1", "wait"),
    ("cid=1&wait=1e1", "wait"),
    ("cid=1&wait=5.", "wait"),
    ("cid=1&wait=x", "wait"),
]


@pytest.mark.parametrize(("query", "names"), BAD_RECEIVE_QUERIES)
def test_bad_receive_parameters_are_400_and_lease_nothing(
    server: ServerProcess, query: str, names: str
) -> None:
    name = make_queue(server)
    publish(server, name)
    check_error(get(server, f"/v1/queues/{name}/messages?{query}"), 400, names=names)
    assert info(server, name)["counts"]["ready"] == 1


# ---- delete (ack) -----------------------------------------------------------------------------
def test_delete_rules(server: ServerProcess) -> None:
    name = make_queue(server)
    other = make_queue(server)
    mid = publish(server, name)
    assert delete_msg(server, name, mid, 1) is False  # not leased
    receive(server, name, "cid=1")
    assert delete_msg(server, name, mid, 2) is False  # someone else's lease
    assert delete_msg(server, other, mid, 1) is False  # wrong queue
    assert delete_msg(server, name, MAX_ID, 1) is False  # unknown id
    assert delete_msg(server, name, mid, 1) is True
    assert delete_msg(server, name, mid, 1) is False  # gone
    counts, totals = totals_and_counts(server, name)
    assert counts == ZERO_COUNTS and totals["deleted"] == 1


def test_delete_after_lease_expired_is_false(server: ServerProcess) -> None:
    name = make_queue(server)
    mid = publish(server, name)
    receive(server, name, "cid=1&visibility=0.2")
    wait_until(lambda: info(server, name)["counts"]["ready"] == 1, what="the lease to run out")
    assert delete_msg(server, name, mid, 1) is False


@pytest.mark.parametrize(
    ("path", "names"),
    [
        ("/messages/0?cid=1", "id"),
        ("/messages/-1?cid=1", "id"),
        (f"/messages/{MAX_ID + 1}?cid=1", "id"),
        ("/messages/abc?cid=1", "id"),
        ("/messages/1.0?cid=1", "id"),
        ("/messages/1", "cid"),
        ("/messages/1?cid=-1", "cid"),
        ("/messages/1?cid=1&cid=1", "cid"),
    ],
)
def test_bad_delete_parameters_are_400(server: ServerProcess, path: str, names: str) -> None:
    name = make_queue(server)
    check_error(request(server, "DELETE", f"/v1/queues/{name}{path}"), 400, names=names)


def test_delete_in_missing_queue_is_404(server: ServerProcess) -> None:
    resp = request(server, "DELETE", f"/v1/queues/{unique_name()}/messages/1?cid=1")
    check_error(resp, 404, code="queue_not_found")


# ---- batch ack --------------------------------------------------------------------------------
def test_ack_batch(server: ServerProcess) -> None:
    name = make_queue(server)
    ids = [publish(server, name, f"m{i}") for i in range(4)]
    receive(server, name, "cid=5&limit=3")  # ids[0..2] leased to 5; ids[3] ready
    resp = ack(server, name, {"cid": 5, "ids": [ids[2], ids[3], ids[0], ids[2], MAX_ID]})
    assert resp.status == 200
    assert resp.json() == {"deleted": [ids[2], ids[0]], "failed": [ids[3], ids[2], MAX_ID]}
    resp = ack(server, name, {"cid": 6, "ids": [ids[1]]})  # not 6's lease
    assert resp.json() == {"deleted": [], "failed": [ids[1]]}
    counts, totals = totals_and_counts(server, name)
    assert counts == {"ready": 1, "leased": 1, "delayed": 0} and totals["deleted"] == 2


@pytest.mark.parametrize("route", ["batch", "ack", ""])
@pytest.mark.parametrize("number", [b"1e-99999999999999999999", b"1e99999999999999999999"])
def test_json_number_out_of_range_is_400(server: ServerProcess, route: str, number: bytes) -> None:
    """Found by fuzzing: Decimal refuses such exponents with its own exception (a 500)."""
    name = make_queue(server)
    body = {
        "batch": b'[{"body": "a", "delay": %s}]' % number,
        "ack": b'{"cid": 1, "ids": [%s]}' % number,
        "": b'{"delay": %s}' % number,
    }[route]
    method, path = (
        ("PUT", f"/v1/queues/{name}") if not route else ("POST", f"/v1/queues/{name}/{route}")
    )
    check_error(request(server, method, path, body=body), 400, code="invalid_body")
    assert get(server, "/healthz").status == 200


def test_ack_body_in_any_key_order_and_spacing(server: ServerProcess) -> None:
    name = make_queue(server)
    ids = [publish(server, name, f"m{i}") for i in range(2)]
    receive(server, name, "cid=5&limit=2")
    raw = b' {\n "ids" : [ %d ,%d ] ,"cid":5 }\t' % (ids[1], ids[0])
    resp = request(server, "POST", f"/v1/queues/{name}/ack", body=raw)
    assert resp.status == 200, resp.body
    assert resp.json() == {"deleted": [ids[1], ids[0]], "failed": []}


def test_ack_batch_up_to_max_batch(server: ServerProcess) -> None:
    name = make_queue(server)
    resp = ack(server, name, {"cid": 0, "ids": list(range(1, MAX_BATCH + 1))})
    assert resp.status == 200 and len(resp.json()["failed"]) == MAX_BATCH


@pytest.mark.parametrize(
    ("doc", "names"),
    [
        ({"ids": "MID"}, "cid"),
        ({"cid": -1, "ids": "MID"}, "cid"),
        ({"cid": MAX_ID + 1, "ids": "MID"}, "cid"),
        ({"cid": "1", "ids": "MID"}, "cid"),
        ({"cid": 1.5, "ids": "MID"}, "cid"),
        ({"cid": True, "ids": "MID"}, "cid"),
        ({"cid": None, "ids": "MID"}, "cid"),
        ({"cid": 1}, "ids"),
        ({"cid": 1, "ids": 1}, "ids"),
        ({"cid": 1, "ids": []}, "ids"),
        ({"cid": 1, "ids": [0]}, "ids"),
        ({"cid": 1, "ids": [MAX_ID + 1]}, "ids"),
        ({"cid": 1, "ids": ["1"]}, "ids"),
        ({"cid": 1, "ids": [1.5]}, "ids"),
        ({"cid": 1, "ids": [True]}, "ids"),
        ({"cid": 1, "ids": list(range(1, MAX_BATCH + 2))}, "ids"),
        ({"cid": 1, "ids": "MID", "colour": 1}, "colour"),
        ([1, 2], None),
        ("x", None),
    ],
)
def test_bad_ack_body_is_400_and_deletes_nothing(
    server: ServerProcess, doc: Any, names: str | None
) -> None:
    name = make_queue(server)
    mid = publish(server, name)
    receive(server, name, "cid=1")
    if isinstance(doc, dict) and doc.get("ids") == "MID":
        doc = {**doc, "ids": [mid]}  # a valid id, so that only the named field is wrong
    check_error(ack(server, name, doc), 400, names=names)
    assert info(server, name)["counts"]["leased"] == 1


@pytest.mark.parametrize("raw", [b"", b"{", b"\xff", b'{"cid": 1, "ids": [1]} x'])
def test_ack_body_must_be_json(server: ServerProcess, raw: bytes) -> None:
    name = make_queue(server)
    check_error(request(server, "POST", f"/v1/queues/{name}/ack", body=raw), 400)


def test_ack_in_missing_queue_is_404(server: ServerProcess) -> None:
    check_error(ack(server, unique_name(), {"cid": 1, "ids": [1]}), 404, code="queue_not_found")


# ---- change lease -----------------------------------------------------------------------------
def test_extend_keeps_the_lease(server: ServerProcess) -> None:
    """End to end: an extended lease outlives its first deadline (the lease is still cid
    1's when the shorter lease of another message has run out). The exact boundaries:
    tests/test_api_inprocess.py."""
    name = make_queue(server)
    mid = publish(server, name)
    marker = publish(server, name)
    receive(server, name, "cid=1&visibility=0.3&limit=2")
    assert lease(server, name, mid, 1, "30") is True
    got = wait_until(lambda: receive(server, name, "cid=2"), what="the 0.3 s lease")
    assert [m["id"] for m in got] == [marker]  # and not mid: still leased to 1
    assert delete_msg(server, name, mid, 1) is True


def test_extend_can_shorten(server: ServerProcess) -> None:
    name = make_queue(server)
    mid = publish(server, name)
    receive(server, name, "cid=1&visibility=30")
    assert lease(server, name, mid, 1, "0.2") is True
    got = wait_until(lambda: receive(server, name, "cid=2"), what="the shortened lease")
    assert [(m["id"], m["receives"]) for m in got] == [(mid, 2)]
    assert info(server, name)["totals"]["expired"] == 1


def test_release_makes_it_available_at_once(server: ServerProcess) -> None:
    name = make_queue(server)
    mid = publish(server, name)
    receive(server, name, "cid=1")
    assert lease(server, name, mid, 1, "0") is True
    got = receive(server, name, "cid=2")
    assert [(m["id"], m["receives"]) for m in got] == [(mid, 2)]
    assert lease(server, name, mid, 1, "0") is False  # no longer 1's
    assert info(server, name)["totals"]["expired"] == 0  # a release is not an expiry


def test_lease_rules(server: ServerProcess) -> None:
    name = make_queue(server)
    mid = publish(server, name)
    assert lease(server, name, mid, 1, "10") is False  # not leased
    receive(server, name, "cid=1&visibility=0.2")
    assert lease(server, name, mid, 2, "10") is False  # someone else's
    assert lease(server, name, MAX_ID, 1, "10") is False  # unknown id
    wait_until(lambda: info(server, name)["counts"]["ready"] == 1, what="the lease to run out")
    assert lease(server, name, mid, 1, "10") is False  # expired: can never be extended


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("cid=1", "timeout"),
        ("cid=1&timeout=-1", "timeout"),
        ("cid=1&timeout=43201", "timeout"),
        ("cid=1&timeout=43200.0001", "timeout"),
        ("cid=1&timeout=1e2", "timeout"),
        ("cid=1&timeout=nan", "timeout"),
        ("cid=1&timeout=", "timeout"),
        ("cid=1&timeout=1&timeout=2", "timeout"),
        ("timeout=1", "cid"),
        ("cid=x&timeout=1", "cid"),
    ],
)
def test_bad_lease_parameters_are_400(server: ServerProcess, query: str, names: str) -> None:
    name = make_queue(server)
    mid = publish(server, name)
    receive(server, name, "cid=1")
    resp = request(server, "POST", f"/v1/queues/{name}/messages/{mid}/lease?{query}")
    check_error(resp, 400, names=names)
    assert info(server, name)["counts"]["leased"] == 1


@pytest.mark.parametrize("msg_id", ["0", str(MAX_ID + 1), "x"])
def test_bad_lease_id_is_400(server: ServerProcess, msg_id: str) -> None:
    name = make_queue(server)
    resp = request(server, "POST", f"/v1/queues/{name}/messages/{msg_id}/lease?cid=1&timeout=1")
    check_error(resp, 400, names="id")


def test_lease_in_missing_queue_is_404(server: ServerProcess) -> None:
    resp = request(server, "POST", f"/v1/queues/{unique_name()}/messages/1/lease?cid=1&timeout=1")
    check_error(resp, 404, code="queue_not_found")


# ---- purge ------------------------------------------------------------------------------------
def test_purge_drops_ready_delayed_and_leased(server: ServerProcess) -> None:
    name = make_queue(server)
    leased = publish(server, name, "leased")
    receive(server, name, "cid=1")
    publish(server, name, "ready")
    publish(server, name, "delayed", "?delay=60")
    resp = request(server, "POST", f"/v1/queues/{name}/purge")
    assert resp.status == 200 and resp.json() == {"purged": 3}
    counts, totals = totals_and_counts(server, name)
    assert counts == ZERO_COUNTS
    assert totals["published"] == 3 and totals["delivered"] == 1  # totals are kept
    assert delete_msg(server, name, leased, 1) is False
    assert request(server, "POST", f"/v1/queues/{name}/purge").json() == {"purged": 0}
    assert info(server, name)["attributes"] == DEFAULT_ATTRIBUTES  # the queue stays


def test_purge_missing_queue_is_404(server: ServerProcess) -> None:
    check_error(
        request(server, "POST", f"/v1/queues/{unique_name()}/purge"), 404, code="queue_not_found"
    )


# ---- counters ---------------------------------------------------------------------------------
def test_counters_follow_every_operation(server: ServerProcess) -> None:
    name = make_queue(server)
    a = publish(server, name, "a")
    b = publish(server, name, "b")
    publish(server, name, "c", "?delay=60")
    counts, totals = totals_and_counts(server, name)
    assert counts == {"ready": 2, "leased": 0, "delayed": 1}
    assert totals == {**ZERO_TOTALS, "published": 3}
    receive(server, name, "cid=1&limit=2&visibility=0.2")
    counts, totals = totals_and_counts(server, name)
    assert counts == {"ready": 0, "leased": 2, "delayed": 1}
    assert totals["delivered"] == 2
    assert lease(server, name, a, 1, "30") is True
    wait_until(lambda: totals_and_counts(server, name)[1]["expired"] == 1, what="b's lease")
    counts, totals = totals_and_counts(server, name)
    assert counts == {"ready": 1, "leased": 1, "delayed": 1}
    assert totals["expired"] == 1
    assert delete_msg(server, name, a, 1) is True
    got = receive(server, name, "cid=2")
    assert [(m["id"], m["receives"]) for m in got] == [(b, 2)]
    counts, totals = totals_and_counts(server, name)
    assert counts == {"ready": 0, "leased": 1, "delayed": 1}
    assert totals == {
        "published": 3,
        "delivered": 3,
        "deleted": 1,
        "expired": 1,
        "dead_lettered": 0,
    }
    listed = {q["name"]: q for q in get(server, "/v1/queues").json()["queues"]}
    assert listed[name]["counts"] == counts and listed[name]["totals"] == totals


@pytest.mark.not_on(
    "redis",
    reason="/metrics on Redis reads counters cached for up to a second",
)
def test_metrics_show_named_queues(server: ServerProcess) -> None:
    name = make_queue(server)
    publish(server, name)
    resp = get(server, "/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    text = resp.body.decode()
    assert metric(text, f'wonderq_published_total{{queue="{name}"}}') == 1
    ready = [
        ln
        for ln in text.splitlines()
        if ln.startswith("wonderq_queue_messages{")
        and f'queue="{name}"' in ln
        and 'state="ready"' in ln
    ]
    assert len(ready) == 1 and float(ready[0].split()[-1]) == 1


# ---- routing errors ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PATCH", "/v1/queues/q1", {"GET", "PUT", "DELETE"}),
        ("POST", "/v1/queues/q1", {"GET", "PUT", "DELETE"}),
        ("POST", "/v1/queues", {"GET"}),
        ("DELETE", "/v1/queues", {"GET"}),
        ("GET", "/v1/queues/q1/purge", {"POST"}),
        ("PUT", "/v1/queues/q1/messages", {"GET", "POST"}),
        ("DELETE", "/v1/queues/q1/messages", {"GET", "POST"}),
        ("GET", "/v1/queues/q1/batch", {"POST"}),
        ("GET", "/v1/queues/q1/ack", {"POST"}),
        ("GET", "/v1/queues/q1/messages/1", {"DELETE"}),
        ("POST", "/v1/queues/q1/messages/1", {"DELETE"}),
        ("GET", "/v1/queues/q1/messages/1/lease", {"POST"}),
        ("GET", "/v1/publish", {"POST"}),
        ("POST", "/v1/consumer", {"GET", "DELETE"}),
        ("POST", "/healthz", {"GET"}),
    ],
)
def test_wrong_method_is_405_with_allow(
    server: ServerProcess, method: str, path: str, allowed: set[str]
) -> None:
    resp = request(server, method, path, body=b"" if method in ("POST", "PUT", "PATCH") else None)
    check_error(resp, 405)
    got = {m.strip() for m in resp.headers["Allow"].split(",")}
    assert allowed <= got and got <= allowed | {"HEAD", "OPTIONS"}, got


@pytest.mark.parametrize(
    "path", ["/v1/nope", "/v1/queues/q1/nope", "/v1/queues/q1/messages/1/nope", "/v2/queues"]
)
def test_unknown_route_is_404(server: ServerProcess, path: str) -> None:
    check_error(get(server, path), 404)


# ---- the memory limit -------------------------------------------------------------------------
MAX_MEMORY = 200_000


@pytest.fixture(scope="module")
def small_server() -> Iterator[ServerProcess]:
    with running_server("--max-memory", str(MAX_MEMORY)) as srv:
        yield srv


def fill(srv: ServerProcess, name: str, size: int = 1000) -> list[int]:
    """Publish ``size``-byte messages until the server answers 507; returns the ids stored."""
    ids: list[int] = []
    for _ in range(MAX_MEMORY // size + 10):
        resp = request(srv, "POST", f"/v1/queues/{name}/messages", body="x" * size)
        if resp.status == 507:
            check_error(resp, 507, code="memory_limit")
            return ids
        assert resp.status == 201, resp.body
        ids.append(resp.json()["id"])
    raise AssertionError("the memory limit never answered 507")


@pytest.mark.not_on(
    "redis",
    reason="--max-memory is Redis's maxmemory there: all of Redis's memory, not message bytes",
)
def test_memory_limit_refuses_publishes_and_keeps_serving(small_server: ServerProcess) -> None:
    name = make_queue(small_server)
    ids = fill(small_server, name)
    assert ids
    before = info(small_server, name)
    # Nothing is stored by a refused publish, a refused batch, or the seed route.
    check_error(
        request(small_server, "POST", "/v1/publish", body="y" * 1000), 507, code="memory_limit"
    )
    check_error(batch(small_server, name, ["z" * 1000] * 5), 507, code="memory_limit")
    after = info(small_server, name)
    assert after["counts"] == before["counts"] and after["totals"] == before["totals"]
    # Metrics show the bytes held and the limit.
    text = get(small_server, "/metrics").body.decode()
    assert metric(text, "wonderq_memory_limit_bytes") == MAX_MEMORY
    assert 0.5 * MAX_MEMORY < metric(text, "wonderq_memory_bytes") <= MAX_MEMORY
    # Receives, deletes and info keep working.
    got = receive(small_server, name, "cid=1&limit=5")
    assert [m["id"] for m in got] == ids[:5]
    resp = ack(small_server, name, {"cid": 1, "ids": ids[:5]})
    assert resp.json() == {"deleted": ids[:5], "failed": []}
    # Space was freed: publishing works again.
    publish(small_server, name, "x" * 1000)
    # Purge frees everything.
    assert request(small_server, "POST", f"/v1/queues/{name}/purge").status == 200
    publish(small_server, name, "x" * 1000)
    assert request(small_server, "DELETE", f"/v1/queues/{name}").status == 204


# ---- the ids' JSON (in-process: the answers of the batch routes) -------------------------------
@pytest.mark.parametrize("n", [1, 2, 3, 99, 100, 101, 250, MAX_BATCH])
def test_batch_ids_json_is_the_plain_join(n: int) -> None:
    from wonderq._core import batch_ids_json
    from wonderq.answers import ids_json

    firsts = [*range(1, 230), *(10**k + d for k in range(2, 19) for d in (-101, -1, 0, 1, 99))]
    for first in [*firsts, MAX_ID - n + 1]:
        expected = ",".join(map(str, range(first, first + n))).encode()
        if first >= 1:
            assert batch_ids_json(first, n) == b'{"ids":[' + expected + b"]}", (first, n)
        else:
            with pytest.raises(ValueError):
                batch_ids_json(first, n)
        assert ids_json(list(range(first, first + n))) == expected, (first, n)


def test_ids_json_of_any_ids() -> None:
    from wonderq.answers import ids_json

    for ids in ([], [5], [3, 2, 1], [7, 9, 8, 10], [1, 2, 4], [100, 101, 101], [99, 100, 101]):
        assert ids_json(ids) == ",".join(map(str, ids)).encode()


# ---- the compiled build (in-process) ------------------------------------------------------------
def _source(name: str) -> Any:
    """wonderq/<name>.py run as plain Python, whether or not it is compiled."""
    import importlib
    import importlib.util

    module = importlib.import_module(f"wonderq.{name}")
    path = Path(module.__file__ or "").with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"wonderq._{name}_source", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("source", [False, True], ids=["build", "source"])
def test_router_matches_whole_segments(source: bool) -> None:
    import wonderq.routing

    routing = _source("routing") if source else wonderq.routing
    router = routing.Router()
    for template in ("/v1/queues/{queue}/messages", "/v1/queues/{queue}/messages/{id}", "/v1/x"):
        router.add("GET", template, print)
    route, params = router.match("/v1/queues/q%2Fa/messages/17")
    assert route is not None and route.name == "/v1/queues/{queue}/messages/{id}"
    assert params == {"queue": "q%2Fa", "id": "17"}
    route, params = router.match("/v1/x")
    assert route is not None and route.name == "/v1/x" and params is None
    for path in ("/v1/queues//messages", "/v1/queues/q/messages/", "/v1/queues/q/Messages", "/v1"):
        assert router.match(path) == (None, None), path
    with pytest.raises(ValueError, match="whole path segment"):
        router.add("GET", "/v1/queues/q{queue}", print)


@pytest.mark.parametrize("source", [False, True], ids=["build", "source"])
def test_plain_id_reads_only_plain_ids(source: bool) -> None:
    """The fast path of a delete's id: anything it refuses (0) goes through param_id."""
    import wonderq.params

    params: Any = _source("params") if source else wonderq.params
    for value, expected in [("1", 1), ("007", 7), ("9" * 18, 10**18 - 1), (str(MAX_ID), 0)]:
        assert params.plain_id(value) == expected, value
    refused: tuple[Any, ...] = (
        "0",
        "",
        " 1",
        "1a",
        "-1",
        "+1",
        "\uff11\uff12",  # fullwidth digits: str.isdigit() says yes
        "\u0663",  # an Arabic-Indic digit
        None,
        params.REPEATED,
        "9" * 19,
    )
    for value in refused:
        assert params.plain_id(value) == 0, value
