"""The SQS face's fast path (wonderq/sqs/_fast.pyx) proven equal to its general path, and the
digests it shares with it (wonderq/sqs/digest.h) proven against the standard library.

The fast path takes SendMessage, SendMessageBatch, ReceiveMessage and DeleteMessageBatch in
plain JSON and declines anything else before any store call. Each test here sends the same
requests to two servers (in-process, over memory stores on fake clocks): one in a form the
fast path takes, the other in an equivalent form it declines (a key written with a JSON
escape, which json.loads reads as the same key), and requires the same answers AND the same
state after them; the face's ``fast.taken`` counter checks that each went the way meant.
Answers that come later (a store answering with Deferreds) are compared over the model store
of tests/test_sqs_face.py. The Hypothesis seed is the session's (``WONDERQ_TEST_SEED``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any

import pytest
from _harness import FakeClock, FakeConnection, Harness
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_sqs_face import ModelStore

from wonderq._core import QueueNotFound
from wonderq.deferred import Deferred
from wonderq.errors import StorageError
from wonderq.request import Request
from wonderq.sqs import SqsFace
from wonderq.sqs._digest import md5_hex, md5_hex_many, siphash24
from wonderq.sqs.attributes import bad_character
from wonderq.sqs.handles import ReceiptHandles
from wonderq.store import MemoryStore

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
URL = "http://127.0.0.1:8080/000000000000/q"
_RID = re.compile(rb"x-amzn-RequestId: [0-9a-f-]{36}\r\n")


# ---- the digests ------------------------------------------------------------------------------
@given(st.binary(max_size=300))
@FAST
def test_md5_is_hashlibs(data: bytes) -> None:
    assert md5_hex(data) == hashlib.md5(data, usedforsecurity=False).hexdigest()


@given(st.lists(st.binary(max_size=300), max_size=16))
@FAST
def test_md5_four_at_a_time_is_hashlibs(datas: list[bytes]) -> None:
    """The batch way (SSE2 lanes, messages of different block counts side by side)."""
    assert md5_hex_many(datas) == [hashlib.md5(d, usedforsecurity=False).hexdigest() for d in datas]


def test_md5_at_block_edges() -> None:
    for n in (0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000, 100_000):
        data = bytes(range(256)) * (n // 256 + 1)
        assert md5_hex(data[:n]) == hashlib.md5(data[:n]).hexdigest(), n
        pieces = [data[: n + k] for k in range(5)]
        assert md5_hex_many(pieces) == [hashlib.md5(d).hexdigest() for d in pieces], n


def test_siphash_test_vectors() -> None:
    """The SipHash paper's vectors (key 00..0f): the empty message and 00..0e."""
    key = bytes(range(16))
    assert siphash24(key, b"") == 0x726FDB47DD0E0E31
    assert siphash24(key, bytes(range(15))) == 0xA129CA6149BE45E5


@given(
    st.from_regex(r"[A-Za-z0-9_-]{1,80}", fullmatch=True),
    st.integers(1, 2**63 - 1),
    st.integers(0, 2**32 - 1),
)
@FAST
def test_handles_round_trip_and_refuse_any_change(queue: str, msg_id: int, receives: int) -> None:
    handles = ReceiptHandles(b"k" * 32)
    handle = handles.encode(queue, msg_id, receives)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", handle)
    assert handles.decode(handle) == (queue, msg_id, receives)
    assert ReceiptHandles(b"j" * 32).decode(handle) is None
    raw = bytearray(base64.urlsafe_b64decode(handle + "=" * (-len(handle) % 4)))
    for at in range(len(raw)):
        raw[at] ^= 4
        changed = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
        assert handles.decode(changed) is None, at
        raw[at] ^= 4


def test_first_version_handles_still_verify() -> None:
    """Handles of the first version (BLAKE2b tag) that servers before this one issued."""
    key = b"k" * 32
    data = bytes((1,)) + (77).to_bytes(8, "big") + (3).to_bytes(4, "big") + b"jobs"
    tag = hashlib.blake2b(data, digest_size=10, key=key).digest()
    handle = base64.urlsafe_b64encode(data + tag).rstrip(b"=").decode()
    assert ReceiptHandles(key).decode(handle) == ("jobs", 77, 3)
    assert ReceiptHandles(b"x" * 32).decode(handle) is None


# ---- two servers: the fast way and the general way --------------------------------------------
class Twin:
    """WonderQ's routes and the SQS face over a memory store, in this process."""

    def __init__(self) -> None:
        clock = FakeClock()
        self.h = Harness(MemoryStore(clock=clock), clock=clock)
        self.face = SqsFace(self.h.store, longpoll=self.h.longpoll)
        self.face.routes(self.h.router)
        # A small MaximumMessageSize: a batch the engine refuses whole, sent entry by entry.
        created = self.call(
            "CreateQueue", {"QueueName": "q", "Attributes": {"MaximumMessageSize": "1024"}}
        )
        assert created[0] == 200

    def call(self, action: str, params: Any, escaped: bool = False) -> tuple[Any, ...]:
        body = json.dumps(params).encode()
        if escaped:  # the same input, a key the fast path does not read: the general path's
            body = body.replace(b'"QueueUrl"', b'"Queue\\u0055rl"', 1)
        req = Request("POST", "/", "", body, True, FakeConnection())  # type: ignore[arg-type]
        req.headers = [
            (b"host", b"127.0.0.1:8080"),
            (b"content-type", b"application/x-amz-json-1.0"),
            (b"x-amz-target", b"AmazonSQS." + action.encode()),
        ]
        response = self.h.router.dispatch(req)
        assert response is not None, f"{action} was deferred"
        status, answer, headers = response
        return status, answer, _RID.sub(b"x-amzn-RequestId: -\r\n", headers)

    def state(self) -> Any:
        status, info = self.h.ask("GET", "/v1/queues/q")
        assert status == 200
        return info["counts"], info["totals"], self.h.ask("GET", "/v1/queues/q/peek?limit=20")[1]


_HANDLE = re.compile(rb'"ReceiptHandle":"[A-Za-z0-9_-]+"|receipt handle \\"[^\\]*\\"')


def comparable(answer: tuple[Any, ...]) -> tuple[Any, ...]:
    """An answer with its receipt handles (each store has its own key) left out."""
    status, body, headers = answer
    return status, _HANDLE.sub(b"H", body), headers


def both(action: str, params: Any, fast: Twin, general: Twin, general_params: Any = None) -> bool:
    """Send ``params`` both ways (``general_params``: the general twin's own, when they hold
    its receipt handles); the answers must be equal. Whether the fast path took it."""
    taken = fast.face.fast.taken
    general_taken = general.face.fast.taken
    got = fast.call(action, params)
    want = general.call(action, general_params or params, escaped=True)
    assert comparable(got) == comparable(want)
    assert general.face.fast.taken == general_taken
    return fast.face.fast.taken == taken + 1


# Bodies: plain ASCII (the usual), text with escapes, UTF-8, and characters SQS refuses.
bodies = st.one_of(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
    st.text(max_size=20),
    st.sampled_from(
        ["", "a\tb\nc\rd", 'q"uote\\', "\x00", "\x08", "\ufffe", "é✓𝄞", "\ud800", "y" * 1500]
    ),
)
delays = st.one_of(st.none(), st.integers(0, 1000), st.sampled_from(["5", -1, 1.5, True]))


def _with(params: dict[str, Any], **optional: Any) -> dict[str, Any]:
    params.update({k: v for k, v in optional.items() if v is not None})
    return params


def _takes(body: str, delay: Any) -> bool:
    """Whether the fast path takes a message (else the general path answers its error)."""
    plain_delay = delay is None or (type(delay) is int and 0 <= delay <= 900)
    return bool(body) and not bad_character(body) and plain_delay


@given(st.lists(st.tuples(bodies, delays), min_size=1, max_size=6))
@FAST
def test_send_message_both_ways(messages: list[tuple[str, Any]]) -> None:
    fast, general = Twin(), Twin()
    for body, delay in messages:
        params = _with({"QueueUrl": URL, "MessageBody": body}, DelaySeconds=delay)
        assert both("SendMessage", params, fast, general) == _takes(body, delay)
    assert fast.state() == general.state()


entry_ids = st.one_of(st.sampled_from(["a", "b", "c", "A-1", "x_2"]), st.just(""), st.just("b c"))


@given(
    st.lists(st.tuples(entry_ids, bodies, delays), min_size=0, max_size=12),
    st.sampled_from([URL, URL + "/", "q", "http://h/1/nope", "http://h/1/bad name", ""]),
)
@FAST
def test_send_message_batch_both_ways(entries: list[tuple[str, str, Any]], url: str) -> None:
    fast, general = Twin(), Twin()
    params = {
        "QueueUrl": url,
        "Entries": [_with({"Id": i, "MessageBody": b}, DelaySeconds=d) for i, b, d in entries],
    }
    took = both("SendMessageBatch", params, fast, general)
    ids = [i for i, _, _ in entries]
    plain = all(_takes(b, d) for _, b, d in entries) and len(set(ids)) == len(ids)
    expected = url not in ("", "http://h/1/bad name") and 0 < len(entries) <= 10
    assert took == (expected and plain and "" not in ids and "b c" not in ids)
    assert fast.state() == general.state()


def test_a_batch_the_engine_refuses_whole_goes_entry_by_entry() -> None:
    """One body over the queue's MaximumMessageSize: that entry fails, the others are sent."""
    fast, general = Twin(), Twin()
    entries = [{"Id": f"m{i}", "MessageBody": "y" * (1500 if i == 1 else 10)} for i in range(3)]
    assert both("SendMessageBatch", {"QueueUrl": URL, "Entries": entries}, fast, general)
    assert fast.state() == general.state()
    _, totals, peek = fast.state()
    assert totals["published"] == 2 and [m["body"] for m in peek["messages"]] == ["y" * 10] * 2


@given(
    st.integers(0, 30),
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.integers(0, 12)),
            st.one_of(st.none(), st.integers(0, 50_000)),
            st.one_of(st.none(), st.just(0)),
        ),
        min_size=1,
        max_size=4,
    ),
    bodies,
)
@FAST
def test_receive_message_both_ways(
    count: int, receives: list[tuple[Any, Any, Any]], body: str
) -> None:
    fast, general = Twin(), Twin()
    for twin in (fast, general):
        for _ in range(count):
            twin.call("SendMessage", {"QueueUrl": URL, "MessageBody": body or "x"})
    for limit, visibility, wait in receives:
        params = _with(
            {"QueueUrl": URL},
            MaxNumberOfMessages=limit,
            VisibilityTimeout=visibility,
            WaitTimeSeconds=wait,
        )
        both("ReceiveMessage", params, fast, general)
        fast.h.advance(1)
        general.h.advance(1)
    assert fast.state() == general.state()


KINDS = ["current", "stale", "forged", "other", "empty", "dup"]


@given(st.integers(1, 12), st.lists(st.sampled_from(KINDS), max_size=11))
@FAST
def test_delete_message_batch_both_ways(count: int, kinds: list[str]) -> None:
    fast, general = Twin(), Twin()
    entries = []
    for twin in (fast, general):
        for i in range(count):
            twin.call("SendMessage", {"QueueUrl": URL, "MessageBody": f"m{i}"})
        handles = {}
        for kind, visibility in (("stale", 0), ("current", 60)):
            params = {"QueueUrl": URL, "MaxNumberOfMessages": 10, "VisibilityTimeout": visibility}
            messages = json.loads(twin.call("ReceiveMessage", params)[1]).get("Messages", [])
            handles[kind] = [m["ReceiptHandle"] for m in messages] or ["x" * 30]
        made = []
        for k, kind in enumerate(kinds):
            handle = handles["stale" if kind == "stale" else "current"][
                k % len(handles["current"]) if kind != "stale" else 0
            ]
            if kind == "forged":
                handle = handle[:-3] + ("AAA" if handle[-3:] != "AAA" else "BBB")
            elif kind == "other":
                handle = ReceiptHandles(b"o" * 32).encode("q", 1, 1)
            elif kind == "empty":
                handle = ""
            made.append({"Id": "dup" if kind == "dup" else f"e{k}", "ReceiptHandle": handle})
        entries.append({"QueueUrl": URL, "Entries": made})
    both("DeleteMessageBatch", entries[0], fast, general, entries[1])
    assert fast.state() == general.state()


def test_the_fast_path_takes_the_benchmarks_requests() -> None:
    """What bench/instructions.py and bench/wrk/sqs_*.lua send goes the fast way."""
    twin = Twin()
    body = "x" * 200
    twin.call("ReceiveMessage", {"QueueUrl": URL})  # the queue's default wait, now known
    before = twin.face.fast.taken
    twin.call("SendMessage", {"QueueUrl": URL, "MessageBody": body})
    entries = [{"Id": f"m{i}", "MessageBody": body} for i in range(10)]
    twin.call("SendMessageBatch", {"QueueUrl": URL, "Entries": entries})
    _, answer, _ = twin.call(
        "ReceiveMessage", {"QueueUrl": URL, "MaxNumberOfMessages": 10, "VisibilityTimeout": 60}
    )
    got = json.loads(answer)["Messages"]
    assert len(got) == 10 and got[0]["MD5OfBody"] == hashlib.md5(body.encode()).hexdigest()
    deletes = [{"Id": f"e{i}", "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)]
    _, answer, _ = twin.call("DeleteMessageBatch", {"QueueUrl": URL, "Entries": deletes})
    assert json.loads(answer) == {"Successful": [{"Id": f"e{i}"} for i in range(10)], "Failed": []}
    assert twin.face.fast.taken == before + 4


# ---- answers that come later --------------------------------------------------------------------
class Conn:
    def __init__(self) -> None:
        self.answers: list[Any] = []

    def complete(self, req: Any, response: Any) -> None:
        self.answers.append(response)


def _request(action: str, params: Any) -> Request:
    req = Request("POST", "/", "", json.dumps(params).encode(), True, Conn())  # type: ignore[arg-type]
    req.headers = [(b"x-amz-target", b"AmazonSQS." + action.encode())]
    return req


def _later(
    face: SqsFace,
    store: ModelStore,
    action: str,
    params: Any,
    fast: bool,
    error: BaseException | None = None,
) -> Any:
    """The answer of a request to a store whose every answer comes later."""
    req = _request(action, params)
    response = face.fast.handle(req) if fast else face.dispatch(req)
    while response is None and not req.conn.answers:  # type: ignore[attr-defined]
        assert isinstance(req.deferred, Deferred)
        store.flush(error)
    if response is None:
        [response] = req.conn.answers  # type: ignore[attr-defined]
    status, body, headers = response
    return status, body, _RID.sub(b"-", headers)


@pytest.mark.parametrize("error", [None, QueueNotFound("gone"), StorageError("disk full")])
def test_answers_that_come_later_both_ways(error: BaseException | None) -> None:
    answers = []
    for fast in (True, False):
        store = ModelStore(later=True)
        face = SqsFace(store, call_later=lambda *a: None)  # type: ignore[arg-type]
        got = [
            _later(face, store, "SendMessage", {"QueueUrl": "default", "MessageBody": "a"}, fast)
        ]
        entries = [{"Id": f"m{i}", "MessageBody": f"b{i}"} for i in range(3)]
        got.append(
            _later(
                face,
                store,
                "SendMessageBatch",
                {"QueueUrl": "default", "Entries": entries},
                fast,
                error,
            )
        )
        face._wait_cache["default"] = 0
        received = _later(
            face, store, "ReceiveMessage", {"QueueUrl": "default", "MaxNumberOfMessages": 10}, fast
        )
        messages = json.loads(received[1]).get("Messages", [])
        deletes = [
            {"Id": f"e{i}", "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
        ]
        if deletes:
            got.append(
                _later(
                    face,
                    store,
                    "DeleteMessageBatch",
                    {"QueueUrl": "default", "Entries": deletes},
                    fast,
                    error,
                )
            )
        got.append(len(messages))
        got.append(sorted(store.queues["default"]["messages"]))
        answers.append(got)
    assert answers[0] == answers[1]
