"""GET /v1/queues pages through the queues; GET /v1/queues/{q}/peek looks without leasing.

In-process (tests/_harness.py) for the rules, plus one pass through the real server."""

from __future__ import annotations

import random
import string

import pytest
from _harness import Harness
from _server import request, running_server
from hypothesis import given, settings
from hypothesis import strategies as st


def names_of(doc: dict) -> list[str]:
    return [q["name"] for q in doc["queues"]]


def page_all(h: Harness, prefix: str, limit: int) -> list[str]:
    """Every name under ``prefix``, paging by ``next`` as a client would."""
    seen: list[str] = []
    after = ""
    while True:
        status, doc = h.ask("GET", f"/v1/queues?prefix={prefix}&limit={limit}&after={after}")
        assert status == 200, doc
        assert len(doc["queues"]) <= limit
        seen += names_of(doc)
        if doc["next"] is None:
            return seen
        assert doc["next"] == seen[-1]
        after = doc["next"]


@settings(max_examples=40, deadline=None)
@given(
    names=st.sets(st.text(alphabet="ab-_1", min_size=1, max_size=4), max_size=25),
    prefix=st.text(alphabet="ab-_1", max_size=2),
    limit=st.integers(min_value=1, max_value=7),
)
def test_paging_returns_every_matching_queue_once_in_order(
    names: set[str], prefix: str, limit: int
) -> None:
    h = Harness()
    for name in names:
        assert h.ask("PUT", f"/v1/queues/{name}")[0] in (200, 201)
    expected = sorted(n for n in {*names, "default"} if n.startswith(prefix))
    assert page_all(h, prefix, limit) == expected


def test_without_parameters_every_queue_in_name_order_and_no_next() -> None:
    h = Harness()
    for name in ("b", "a", "c-1"):
        h.ask("PUT", f"/v1/queues/{name}")
    status, doc = h.ask("GET", "/v1/queues")
    assert status == 200 and names_of(doc) == ["a", "b", "c-1", "default"]
    assert doc["next"] is None
    # after a name that is not a queue: continues after where it would sort
    assert names_of(h.ask("GET", "/v1/queues?after=b0")[1]) == ["c-1", "default"]


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("limit=0", "invalid_limit"),
        ("limit=1001", "invalid_limit"),
        ("limit=x", "invalid_limit"),
        ("prefix=a%2Fb", "invalid_prefix"),
        ("prefix=" + "a" * 81, "invalid_prefix"),
        ("after=a.b", "invalid_after"),
        ("after=a&after=b", "invalid_after"),
    ],
)
def test_bad_paging_parameters_are_400_naming_them(query: str, code: str) -> None:
    status, doc = Harness().ask("GET", f"/v1/queues?{query}")
    assert status == 400 and doc["error"]["code"] == code, doc
    assert code.removeprefix("invalid_") in doc["error"]["message"]


def test_peek_shows_what_a_receive_would_get_and_changes_nothing() -> None:
    h = Harness()
    h.ask("PUT", "/v1/queues/jobs")
    ids = h.ask("POST", "/v1/queues/jobs/batch", '["a","b","c"]')[1]["ids"]
    h.ask("POST", "/v1/queues/jobs/messages?delay=60", "later")
    # one leased: not shown
    got = h.ask("GET", "/v1/queues/jobs/messages?cid=1")[1]["messages"]
    assert [m["id"] for m in got] == [ids[0]]
    before = h.ask("GET", "/v1/queues/jobs")[1]
    status, doc = h.ask("GET", "/v1/queues/jobs/peek?limit=10")
    assert status == 200
    assert [(m["id"], m["body"], m["receives"]) for m in doc["messages"]] == [
        (ids[1], "b", 0),
        (ids[2], "c", 0),
    ]
    assert h.ask("GET", "/v1/queues/jobs")[1] == before  # nothing leased, nothing counted
    assert h.ask("GET", "/v1/queues/jobs/peek")[1]["messages"][0]["id"] == ids[1]  # limit 1
    # the lease runs out: the message is back, first, with its receive count
    h.advance(31)
    peeked = h.ask("GET", "/v1/queues/jobs/peek?limit=1")[1]["messages"]
    assert [(m["id"], m["receives"]) for m in peeked] == [(ids[0], 1)]
    received = h.ask("GET", "/v1/queues/jobs/messages?cid=2&limit=3")[1]["messages"]
    assert [m["id"] for m in received] == ids


@pytest.mark.parametrize(
    ("target", "status", "code"),
    [
        ("/v1/queues/nope/peek", 404, "queue_not_found"),
        ("/v1/queues/jobs/peek?limit=0", 400, "invalid_limit"),
        ("/v1/queues/jobs/peek?limit=100000", 400, "invalid_limit"),
        ("/v1/queues/a.b/peek", 400, "invalid_queue_name"),
    ],
)
def test_peek_errors(target: str, status: int, code: str) -> None:
    h = Harness()
    h.ask("PUT", "/v1/queues/jobs")
    got, doc = h.ask("GET", target)
    assert (got, doc["error"]["code"]) == (status, code)


def test_paging_and_peek_through_the_server() -> None:
    rng = random.Random(7)
    names = sorted({"p-" + "".join(rng.choices(string.ascii_lowercase, k=6)) for _ in range(30)})
    with running_server() as srv:
        for name in names:
            assert request(srv, "PUT", f"/v1/queues/{name}").status == 201
        seen: list[str] = []
        after = ""
        while True:
            resp = request(srv, "GET", f"/v1/queues?prefix=p-&limit=7&after={after}")
            doc = resp.json()
            seen += names_of(doc)
            if doc["next"] is None:
                break
            after = doc["next"]
        assert seen == names
        request(srv, "POST", f"/v1/queues/{names[0]}/messages", b"hello <b>")
        resp = request(srv, "GET", f"/v1/queues/{names[0]}/peek")
        assert resp.status == 200
        assert resp.json()["messages"][0]["body"] == "hello <b>"
