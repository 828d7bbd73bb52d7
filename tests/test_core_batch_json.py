"""Broker.publish_batch_json, the C fast path of a JSON batch: whenever it answers, it must
have done exactly what parsing the JSON and calling publish_batch does; whenever it declines
(None), it must have stored nothing, so the general path can parse the batch and name what
is wrong."""

from __future__ import annotations

import json

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from wonderq import _core

NOW = 1_000


def brokers(**kwargs):
    return _core.Broker(**kwargs), _core.Broker(**kwargs)


def general(broker, data: bytes) -> bytes | None:
    """What the API's general path stores for ``data``: its answer, or None for a 400."""
    try:
        entries = json.loads(data.decode())
    except (UnicodeDecodeError, ValueError):
        return None
    if entries.__class__ is not list or not all(e.__class__ is str and e for e in entries):
        return None
    try:
        bodies = [e.encode() for e in entries]
        first = broker.publish_batch("default", bodies, NOW)
    except (UnicodeEncodeError, _core.InvalidArgument, _core.MessageTooLarge):
        return None
    return b'{"ids":[' + b",".join(b"%d" % (first + i) for i in range(len(bodies))) + b"]}"


def drained(broker) -> bytes:
    broker.check_invariants()
    return broker.receive("default", 1, 1000, NOW + 1, 60_000)


def check_same(data: bytes, **kwargs) -> bytes | None:
    fast, slow = brokers(**kwargs)
    bodies: list[bytes] = [b"kept"]
    answer = fast.publish_batch_json("default", data, NOW, bodies)
    if answer is None:
        assert fast.message_count == 0, "declined but stored"
        assert fast.memory_bytes == 0
        assert bodies == [b"kept"]
    else:
        assert answer == general(slow, data)
        assert bodies == [b"kept", *(e.encode() for e in json.loads(data))]
        assert json.loads(answer) == {"ids": list(range(1, len(json.loads(data)) + 1))}
        assert drained(fast) == drained(slow)
    return answer


@pytest.mark.parametrize(
    "data",
    [
        b'["a"]',
        b'["hello","world"]',
        b' \t\r\n[ "a" ,\n"b" ] \n',
        '["h\u00e9llo", "\u2603", "\U0001f600"]'.encode(),
        b'["' + b"x" * 200 + b'"]',
        b'["<>&\'/ \x7f"]',
    ],
)
def test_plain_strings_take_the_fast_path(data: bytes) -> None:
    assert check_same(data) is not None


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"[]",
        b"[ ]",
        b"{}",
        b'"a"',
        b'["a",]',
        b'["a" "b"]',
        b'["a"] x',
        b'["a"',
        b'["a',
        b'["a\\"b"]',  # an escape: the general path decodes it
        b'["a\\nb"]',
        b'["\\u00e9"]',
        b'[""]',  # empty body: the general path names it
        b'["a\tb"]',  # a raw control character: invalid JSON
        b'["a\x00b"]',
        b'["\xff"]',  # not UTF-8
        b'["\xed\xa0\x80"]',  # an encoded surrogate
        b'["a", 1]',
        b'["a", null]',
        b'[{"body": "a"}]',
        b'[["a"]]',
        b'\xef\xbb\xbf["a"]',  # a BOM
    ],
)
def test_anything_else_is_declined_and_nothing_stored(data: bytes) -> None:
    assert check_same(data) is None


def test_more_than_max_batch_is_declined() -> None:
    fast = _core.Broker(max_batch=3)
    assert fast.publish_batch_json("default", b'["a","b","c","d"]', NOW) is None
    assert fast.message_count == 0
    assert fast.publish_batch_json("default", b'["a","b","c"]', NOW) == b'{"ids":[1,2,3]}'


def test_a_body_over_the_queue_limit_is_declined() -> None:
    fast = _core.Broker()
    fast.put_queue("small", {"max_message_bytes": 3})
    assert fast.publish_batch_json("small", b'["abc","abcd"]', NOW) is None
    assert fast.message_count == 0
    assert fast.publish_batch_json("small", b'["abc","ab"]', NOW) == b'{"ids":[1,2]}'


def test_the_memory_limit_refuses_the_whole_batch() -> None:
    fast = _core.Broker(max_memory=2 * (_core.MESSAGE_OVERHEAD + 10))
    assert fast.publish_batch_json("default", b'["' + b"x" * 10 + b'"]', NOW) == b'{"ids":[1]}'
    bodies: list[bytes] = []
    with pytest.raises(_core.MemoryLimitExceeded):
        fast.publish_batch_json("default", b'["' + b"x" * 10 + b'","y"]', NOW, bodies)
    assert fast.message_count == 1
    assert bodies == []  # taken back: nothing was stored
    fast.check_invariants()


def test_the_queue_delay_applies() -> None:
    fast = _core.Broker()
    fast.put_queue("later", {"delay_ms": 5_000})
    assert fast.publish_batch_json("later", b'["a","b"]', NOW) == b'{"ids":[1,2]}'
    assert fast.receive("later", 1, 10, NOW + 4_999) == b'{"messages":[]}'
    assert fast.next_deadline() == NOW + 5_000
    fast.expire(NOW + 5_000, 100)
    assert json.loads(fast.receive("later", 1, 10, NOW + 5_000))["messages"][1]["body"] == "b"
    fast.check_invariants()


def test_a_missing_queue_raises() -> None:
    with pytest.raises(_core.QueueNotFound):
        _core.Broker().publish_batch_json("nope", b'["a"]', NOW)


json_text = st.text(st.characters(codec="utf-8"), max_size=30)


@settings(max_examples=300, deadline=None)
@given(
    entries=st.lists(json_text, min_size=0, max_size=8),
    ascii_only=st.booleans(),
    spaces=st.sampled_from(["", " ", "\n\t"]),
)
# DEL is ASCII, but json.dumps(ensure_ascii=True) writes it as \u007f: an escape, which the
# fast path leaves to the general one (a run found it; the test had asked for the fast path).
@example(entries=["\x7f"], ascii_only=True, spaces="")
def test_agrees_with_the_general_path(entries: list[str], ascii_only: bool, spaces: str) -> None:
    data = json.dumps(entries, ensure_ascii=ascii_only, separators=("," + spaces, ":"))
    try:
        encoded = data.encode()
    except UnicodeEncodeError:  # a lone surrogate: not a body anyone can send as UTF-8
        return
    answer = check_same(encoded)
    # Every entry written without an escape: the fast path takes the whole batch.
    if entries and all(e and "\\" not in json.dumps(e, ensure_ascii=ascii_only) for e in entries):
        assert answer is not None, data


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40))
def test_arbitrary_bytes_never_store_what_the_general_path_would_not(raw: bytes) -> None:
    check_same(b'["' + raw + b'"]')
    check_same(raw)


# ---- Broker.ack_json ---------------------------------------------------------------------


def leased_twins(n: int = 6, cid: int = 7):
    """Two brokers holding messages 1..n, 1..n-1 leased to ``cid`` (n stays ready)."""
    pair = brokers(max_batch=10)
    for broker in pair:
        broker.publish_batch("default", [b"m%d" % i for i in range(n)], NOW)
        broker.receive("default", cid, n - 1, NOW, 60_000)
    return pair


def general_ack(broker, data: bytes) -> bytes | None:
    """What the API's general path answers for ``data``, or None for a 400."""
    try:
        doc = json.loads(data.decode())
    except (UnicodeDecodeError, ValueError):
        return None
    if doc.__class__ is not dict or set(doc) != {"cid", "ids"}:
        return None
    cid, ids = doc["cid"], doc["ids"]
    if cid.__class__ is not int or not 0 <= cid <= _core.MAX_ID:
        return None
    if ids.__class__ is not list or not 0 < len(ids) <= 10:
        return None
    try:
        deleted, failed = broker.delete_batch("default", cid, ids, NOW + 1)
    except _core.InvalidArgument:
        return None
    return json.dumps({"deleted": deleted, "failed": failed}, separators=(",", ":")).encode()


def check_same_ack(data: bytes) -> bytes | None:
    fast, slow = leased_twins()
    deleted: list[int] = [-1]
    answer = fast.ack_json("default", data, NOW + 1, deleted)
    if answer is None:
        assert fast.message_count == 6, "declined but deleted"
        assert deleted == [-1]
    else:
        assert answer == general_ack(slow, data)
        assert fast.message_count == slow.message_count
        assert deleted == [-1, *json.loads(answer)["deleted"]]
    fast.check_invariants()
    return answer


@pytest.mark.parametrize(
    ("data", "answer"),
    [
        (b'{"cid":7,"ids":[1,2]}', b'{"deleted":[1,2],"failed":[]}'),
        (b'{"ids":[3,99,1,1],"cid":7}', b'{"deleted":[3,1],"failed":[99,1]}'),
        (b' {\n"cid" : 7 ,\t"ids":[ 6 , 5 ] }\r\n', b'{"deleted":[5],"failed":[6]}'),
        (b'{"cid":8,"ids":[1,2]}', b'{"deleted":[],"failed":[1,2]}'),
        (b'{"cid":0,"ids":[%d]}' % _core.MAX_ID, b'{"deleted":[],"failed":[%d]}' % _core.MAX_ID),
    ],
)
def test_ack_takes_the_fast_path(data: bytes, answer: bytes) -> None:
    assert check_same_ack(data) == answer


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{}",
        b"[]",
        b'{"cid":7}',
        b'{"ids":[1]}',
        b'{"cid":7,"ids":[]}',
        b'{"cid":-1,"ids":[1]}',
        b'{"cid":7.0,"ids":[1]}',
        b'{"cid":7e0,"ids":[1]}',
        b'{"cid":07,"ids":[1]}',
        b'{"cid":"7","ids":[1]}',
        b'{"cid":true,"ids":[1]}',
        b'{"cid":9223372036854775808,"ids":[1]}',
        b'{"cid":12345678901234567890,"ids":[1]}',
        b'{"cid":7,"ids":[0]}',
        b'{"cid":7,"ids":[-1]}',
        b'{"cid":7,"ids":[1.5]}',
        b'{"cid":7,"ids":[null]}',
        b'{"cid":7,"ids":[1,]}',
        b'{"cid":7,"ids":[1 2]}',
        b'{"cid":7,"ids":[[1]]}',
        b'{"cid":7,"ids":[1,2,3,4,5,6,7,8,9,10,11]}',
        b'{"cid":7,"cid":7,"ids":[1]}',
        b'{"cid":7,"ids":[1],"ids":[2]}',
        b'{"cid":7,"ids":[1],"x":1}',
        b'{"cid":7,"ids":[1]} x',
        b'{"cid":7,"ids":[1]',
        b'{"cid":7,"ids":[1],}',
        b'{"cid" 7,"ids":[1]}',
        b'{"\\u0063id":7,"ids":[1]}',
    ],
)
def test_ack_declines_anything_else_and_deletes_nothing(data: bytes) -> None:
    assert check_same_ack(data) is None


ack_values = st.one_of(
    st.integers(min_value=-2, max_value=12),
    st.just(2**63),
    st.sampled_from([1.0, "1", None, True, [1]]),
)


@settings(max_examples=300, deadline=None)
@given(
    cid=st.one_of(st.sampled_from([7, 8, 0]), ack_values),
    ids=st.lists(ack_values, max_size=12),
    ids_first=st.booleans(),
    spaces=st.sampled_from(["", " ", "\n"]),
)
def test_ack_agrees_with_the_general_path(cid, ids, ids_first: bool, spaces: str) -> None:
    doc = {"ids": ids, "cid": cid} if ids_first else {"cid": cid, "ids": ids}
    data = json.dumps(doc, separators=("," + spaces, ":" + spaces)).encode()
    answer = check_same_ack(data)
    valid = (
        cid.__class__ is int
        and 0 <= cid < 2**63
        and 0 < len(ids) <= 10
        and all(i.__class__ is int and 0 < i < 2**63 for i in ids)
    )
    assert (answer is not None) == valid, data


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40))
def test_ack_arbitrary_bytes(raw: bytes) -> None:
    check_same_ack(raw)
    check_same_ack(b'{"cid":7,"ids":[' + raw + b"]}")


# ---- the clock and the publish answer ---------------------------------------------------------


def test_now_ms_is_the_monotonic_clock_in_ms() -> None:
    import time

    for _ in range(100):
        before = time.monotonic_ns() // 1_000_000
        now = _core.now_ms()
        after = time.monotonic_ns() // 1_000_000
        assert before <= now <= after


@pytest.mark.parametrize("msg_id", [0, 1, 9, 10, 12345, 10**18, _core.MAX_ID])
def test_id_json(msg_id: int) -> None:
    assert _core.id_json(msg_id) == b'{"id":%d}' % msg_id
    assert json.loads(_core.id_json(msg_id)) == {"id": msg_id}


def test_id_json_refuses_what_is_not_an_id() -> None:
    with pytest.raises(ValueError):
        _core.id_json(-1)
    with pytest.raises(OverflowError):
        _core.id_json(2**63)
