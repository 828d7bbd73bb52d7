"""Every fast path proven equal to its general path, through the real code, both ways.

WonderQ answers its most common requests by shortcuts: the engine parses a plain batch or ack
body in one C pass (``publish_batch_json``, ``ack_json``), the protocol splits a plain query in
one pass (``split_query``), a plain id skips the validators (``plain_id``), a repeated receive
query is a dict lookup (``receive_args``), the router remembers the last static path and the
last path with one ``{param}`` (and finds routes by prefix), and the protocol writes the common
answer inline from cached heads. Each test here feeds the same requests both ways (a form the
shortcut takes, and an equivalent one it declines) and requires the same answers AND the same
state after them (queue counts and totals, what a later receive returns); a spy on the store
checks that each way really went where the test meant it to.

In-process through tests/_harness.py (fake clock), except the durable store's twins, which
need a real event loop and a data directory. The Hypothesis seed is the session's
(``WONDERQ_TEST_SEED``, see conftest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import tempfile
import types
from email.utils import formatdate
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
from _harness import FakeClock, Harness
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from wonderq import params, protocol, request
from wonderq.config import Settings
from wonderq.errors import BadParameter
from wonderq.limits import MAX_ID
from wonderq.routing import Router
from wonderq.store import DurableStore, MemoryStore

MAX_BATCH = 8  # small, so batches and acks over the limit come up
QUEUE = "q"
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---- spies: which way did each request go? ------------------------------------------------------


class SpyMemoryStore(MemoryStore):
    """Records, for each batch publish and batch ack, whether the store's fast path took it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fast: list[bool] = []

    def publish_batch_json(self, queue: str, data: bytes) -> Any:
        answer = super().publish_batch_json(queue, data)
        self.fast.append(answer is not None)
        return answer

    def ack_json(self, queue: str, data: bytes) -> Any:
        answer = super().ack_json(queue, data)
        self.fast.append(answer is not None)
        return answer


class SpyDurableStore(DurableStore):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fast: list[bool] = []

    def publish_batch_json(self, queue: str, data: bytes) -> Any:
        answer = super().publish_batch_json(queue, data)
        self.fast.append(answer is not None)
        return answer

    def ack_json(self, queue: str, data: bytes) -> Any:
        answer = super().ack_json(queue, data)
        self.fast.append(answer is not None)
        return answer


def twin(queue_attributes: dict[str, Any]) -> tuple[Harness, Harness]:
    """Two harnesses over spied memory stores, each with the queue ``q``."""
    out = []
    for _ in range(2):
        clock = FakeClock()
        cfg = Settings(max_batch=MAX_BATCH)
        h = Harness(SpyMemoryStore(cfg, clock=clock), settings=cfg, clock=clock)
        assert h.ask("PUT", f"/v1/queues/{QUEUE}", json.dumps(queue_attributes))[0] == 201
        out.append(h)
    return out[0], out[1]


def outcome(response: Any) -> tuple[Any, ...]:
    """What must be equal both ways: the whole answer, or for an error its status and code
    (the general path may word the message after the entry it parsed)."""
    status, body, headers = response
    if status >= 400:
        return status, json.loads(body)["error"]["code"], headers
    return status, body, headers


def answer(h: Harness, method: str, target: str, body: str | bytes = b"") -> tuple[Any, ...]:
    pending = h.send(method, target, body)
    assert pending.immediate, f"{method} {target} was deferred"
    return outcome(pending.response)


def state(h: Harness) -> Any:
    """The queue's counts and totals, and the ready messages a peek shows."""
    status, info = h.ask("GET", f"/v1/queues/{QUEUE}")
    assert status == 200
    peek = h.ask("GET", f"/v1/queues/{QUEUE}/peek?limit={MAX_BATCH}")[1]
    return info["counts"], info["totals"], peek


# ---- JSON renderings: plain (the fast path's form) and declined-but-equal ---------------------

WS = st.sampled_from(["", " ", "\n", "\t ", "\r\n "])
BODY_CHARS = 'ab xyz-é中😀"\\\n\t\x01'
BODIES = st.text(alphabet=BODY_CHARS, min_size=0, max_size=6)


def is_plain(body: str) -> bool:
    """A body the fast path takes: no quote, no backslash, no control character."""
    return not any(c in '"\\' or ord(c) < 0x20 for c in body)


def plain_string(body: str) -> str:
    """The body as a JSON string in the plain form when it has one (else its escaped form)."""
    return f'"{body}"' if is_plain(body) else json.dumps(body, ensure_ascii=False)


def escape_first(text: str) -> str:
    """``text`` as a JSON string whose first character is written as a \\u escape (astral
    characters as a surrogate pair): the same string, a form the fast path declines."""
    if not text:
        return '""'
    code = ord(text[0])
    if code > 0xFFFF:
        code -= 0x10000
        first = f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    else:
        first = f"\\u{code:04x}"
    return '"' + first + json.dumps(text[1:], ensure_ascii=False)[1:]


def general_entry(body: str, how: int) -> str:
    """The same entry in a form the fast path declines."""
    if how == 0:
        return escape_first(body)
    if how == 1:
        return '{"body": ' + json.dumps(body, ensure_ascii=False) + "}"
    return '{"\\u0062ody":' + escape_first(body) + "}"


@st.composite
def batches(draw: Any) -> tuple[list[str], str, str]:
    """(bodies, the batch in the plain form, the same batch in a declined form)."""
    bodies = draw(st.lists(BODIES, min_size=0, max_size=MAX_BATCH + 1))
    ws = draw(st.lists(WS, min_size=2 * len(bodies) + 2, max_size=2 * len(bodies) + 2))
    plain = ws[0] + "[" + ",".join(ws[2 * i + 1] + plain_string(b) for i, b in enumerate(bodies))
    plain += ws[-1] + "]"
    hows = draw(st.lists(st.integers(0, 2), min_size=len(bodies), max_size=len(bodies)))
    declined = [general_entry(b, how) for b, how in zip(bodies, hows, strict=True)]
    if bodies and draw(st.booleans()):
        # Only one entry needs to be declined for the whole batch to take the general path.
        keep = draw(st.integers(0, len(bodies) - 1))
        declined = [
            d if i == keep else plain_string(b)
            for i, (b, d) in enumerate(zip(bodies, declined, strict=True))
        ]
        if all(is_plain(b) for b in bodies) and declined[keep] == plain_string(bodies[keep]):
            declined[keep] = general_entry(bodies[keep], 1)
    general = "[" + ",".join(declined) + "]"
    return bodies, plain, general


def fast_path_takes(bodies: list[str], max_message_bytes: int) -> bool:
    return 0 < len(bodies) <= MAX_BATCH and all(
        b and is_plain(b) and len(b.encode()) <= max_message_bytes for b in bodies
    )


# ---- (a) batch publish ---------------------------------------------------------------------------

STEPS_A = st.lists(
    st.one_of(
        st.tuples(st.just("batch"), batches()),
        st.tuples(st.just("receive"), st.integers(0, 3), st.integers(1, MAX_BATCH)),
        st.tuples(st.just("advance"), st.sampled_from([0.5, 1, 3, 31])),
    ),
    min_size=1,
    max_size=12,
)


@FAST
@given(delay=st.sampled_from([0, 2]), max_bytes=st.sampled_from([6, 1024]), steps=STEPS_A)
def test_batch_publish_fast_path_equals_the_general_path(
    delay: int, max_bytes: int, steps: list[Any]
) -> None:
    fast, general = twin({"delay": delay, "max_message_bytes": max_bytes})
    for step in steps:
        if step[0] == "batch":
            bodies, plain, declined = step[1]
            taken = len(fast.store.fast)  # type: ignore[attr-defined]
            a = answer(fast, "POST", f"/v1/queues/{QUEUE}/batch", plain.encode())
            b = answer(general, "POST", f"/v1/queues/{QUEUE}/batch", declined.encode())
            if "" in bodies and any(len(x.encode()) > max_bytes for x in bodies):
                # Two errors in one batch: the general path names the first it checks, and
                # object entries are checked for emptiness before the engine checks sizes
                # (params.batch_entries), strings all in the engine in entry order. Either
                # way a 4xx, and nothing stored (the state is compared below).
                assert a[0] in (400, 413) and b[0] in (400, 413), (a, b)
            else:
                assert a == b, (plain, declined)
            assert fast.store.fast[taken] == fast_path_takes(bodies, max_bytes), plain  # type: ignore[attr-defined]
        elif step[0] == "receive":
            target = f"/v1/queues/{QUEUE}/messages?cid={step[1]}&limit={step[2]}"
            assert answer(fast, "GET", target) == answer(general, "GET", target)
        else:
            fast.advance(step[1])
            general.advance(step[1])
        assert state(fast) == state(general)
    assert not any(general.store.fast)  # type: ignore[attr-defined]
    # Everything published comes out the same: bodies, ids, order, receive counts.
    for h in (fast, general):
        h.advance(100)
    target = f"/v1/queues/{QUEUE}/messages?cid=9&limit={MAX_BATCH}"
    assert answer(fast, "GET", target) == answer(general, "GET", target)
    assert state(fast) == state(general)


def test_the_batch_renderings_mean_the_same_and_are_taken_as_meant() -> None:
    """The generator's own check: both forms parse to the same bodies; the declined form has
    a backslash or an object entry (so split_plain_strings refuses it)."""
    for bodies in (["a"], ["é中😀", "x y"], ['a"b', "c\\d", "\n"], ["😀"] * 3):
        for how in range(3):
            declined = "[" + ",".join(general_entry(b, how) for b in bodies) + "]"
            parsed = json.loads(declined)
            assert [e if isinstance(e, str) else e["body"] for e in parsed] == bodies
            assert "\\" in declined or "{" in declined
        assert json.loads("[" + ",".join(plain_string(b) for b in bodies) + "]") == bodies


# ---- (b) batch ack -------------------------------------------------------------------------------


def ack_plain(cid: int, ids: list[int], cid_first: bool, ws: list[str]) -> str:
    cid_part = f'"cid"{ws[0]}:{ws[1]}{cid}'
    ids_part = f'"ids"{ws[2]}:{ws[3]}[' + ",".join(f"{ws[4]}{i}" for i in ids) + f"{ws[5]}]"
    parts = [cid_part, ids_part] if cid_first else [ids_part, cid_part]
    return "{" + ws[6] + f",{ws[7]}".join(parts) + ws[8] + "}"


def ack_declined(cid: int, ids: list[int], cid_first: bool, how: int) -> str:
    """The same ack the fast path declines: an escaped key, or cid 0 written ``-0`` (JSON's
    integer zero, RFC 8259 section 6 allows the minus)."""
    cid_key = '"\\u0063id"' if how != 1 else '"cid"'
    ids_key = '"i\\u0064s"' if how != 0 else '"ids"'
    cid_text = "-0" if cid == 0 and how == 2 else str(cid)
    parts = [f"{cid_key}:{cid_text}", f"{ids_key}:{json.dumps(ids)}"]
    if not cid_first:
        parts.reverse()
    return "{" + ",".join(parts) + "}"


STEPS_B = st.lists(
    st.one_of(
        st.tuples(
            st.just("ack"),
            st.integers(0, 2),  # cid
            st.lists(st.integers(1, 14), min_size=0, max_size=MAX_BATCH + 1),
            st.booleans(),  # cid first
            st.lists(WS, min_size=9, max_size=9),
            st.integers(0, 2),  # how the declined form differs
        ),
        st.tuples(st.just("receive"), st.integers(0, 2), st.integers(1, MAX_BATCH)),
        st.tuples(st.just("advance"), st.sampled_from([1, 5, 11])),
    ),
    min_size=1,
    max_size=14,
)


@FAST
@given(n=st.integers(1, 12), steps=STEPS_B)
def test_batch_ack_fast_path_equals_the_general_path(n: int, steps: list[Any]) -> None:
    fast, general = twin({"visibility_timeout": 10})
    for h in (fast, general):
        for size in (min(n, MAX_BATCH), n - MAX_BATCH):
            if size > 0:
                assert (
                    h.ask("POST", f"/v1/queues/{QUEUE}/batch", json.dumps(["m"] * size))[0] == 201
                )
    for step in steps:
        if step[0] == "ack":
            _, cid, ids, cid_first, ws, how = step
            taken = len(fast.store.fast)  # type: ignore[attr-defined]
            plain = ack_plain(cid, ids, cid_first, ws)
            declined = ack_declined(cid, ids, cid_first, how)
            a = answer(fast, "POST", f"/v1/queues/{QUEUE}/ack", plain)
            b = answer(general, "POST", f"/v1/queues/{QUEUE}/ack", declined)
            assert a == b, (plain, declined)
            assert fast.store.fast[taken] == (0 < len(ids) <= MAX_BATCH), plain  # type: ignore[attr-defined]
        elif step[0] == "receive":
            target = f"/v1/queues/{QUEUE}/messages?cid={step[1]}&limit={step[2]}"
            assert answer(fast, "GET", target) == answer(general, "GET", target)
        else:
            fast.advance(step[1])
            general.advance(step[1])
        assert state(fast) == state(general)
    # The batch publishes of the setup went the fast way on both; no ack did on the general
    # twin.
    setup = 1 if n <= MAX_BATCH else 2
    assert all(general.store.fast[:setup]) and not any(general.store.fast[setup:])  # type: ignore[attr-defined]


# ---- the durable store's fast paths (a real loop, a data directory) ---------------------------


async def durable_answer(h: Harness, method: str, target: str, body: str = "") -> Any:
    pending = h.send(method, target, body)
    while not pending.answered:
        await asyncio.sleep(0.001)
    return outcome(pending.response)


async def durable_state(h: Harness) -> Any:
    info = json.loads((await durable_answer(h, "GET", f"/v1/queues/{QUEUE}"))[1])
    peek = await durable_answer(h, "GET", f"/v1/queues/{QUEUE}/peek?limit={MAX_BATCH}")
    return info["counts"], info["totals"], peek


async def durable_harness(data_dir: str, fsync: str) -> Harness:
    cfg = Settings(max_batch=MAX_BATCH, data_dir=data_dir, fsync=fsync)
    store = SpyDurableStore(cfg)
    store.open()
    h = Harness(store, settings=cfg, loop=asyncio.get_running_loop())
    await h.started
    return h


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    delay=st.sampled_from([0, 60]),
    fsync=st.sampled_from(["always", "never"]),
    batch_list=st.lists(batches(), min_size=1, max_size=4),
    acks=st.lists(st.lists(st.integers(1, 30), min_size=1, max_size=MAX_BATCH), max_size=3),
)
@pytest.mark.timeout(120)
def test_durable_fast_paths_equal_the_general_paths_and_recover_alike(
    delay: int, fsync: str, batch_list: list[Any], acks: list[list[int]]
) -> None:
    """The durable store's publish_batch_json and ack_json (the engine fills the stored
    bodies and the deleted ids for the log) against the general paths, on twin data
    directories: same answers, same state, and the same state again after each directory
    is recovered by a new store."""

    async def main(dirs: list[str]) -> None:
        fast = await durable_harness(dirs[0], fsync)
        general = await durable_harness(dirs[1], fsync)
        for h in (fast, general):
            attrs = json.dumps({"delay": delay, "max_message_bytes": 1024})
            assert (await durable_answer(h, "PUT", f"/v1/queues/{QUEUE}", attrs))[0] == 201
        for bodies, plain, declined in batch_list:
            a = await durable_answer(fast, "POST", f"/v1/queues/{QUEUE}/batch", plain)
            b = await durable_answer(general, "POST", f"/v1/queues/{QUEUE}/batch", declined)
            assert a == b, (plain, declined)
            assert fast.store.fast[-1] == fast_path_takes(bodies, 1024)  # type: ignore[attr-defined]
        receive = f"/v1/queues/{QUEUE}/messages?cid=1&limit={MAX_BATCH}"
        assert await durable_answer(fast, "GET", receive) == await durable_answer(
            general, "GET", receive
        )
        for ids in acks:
            a = await durable_answer(
                fast, "POST", f"/v1/queues/{QUEUE}/ack", ack_plain(1, ids, True, [""] * 9)
            )
            b = await durable_answer(
                general, "POST", f"/v1/queues/{QUEUE}/ack", ack_declined(1, ids, True, 0)
            )
            assert a == b
            assert fast.store.fast[-1]  # type: ignore[attr-defined]
        assert not any(general.store.fast)  # type: ignore[attr-defined]
        assert await durable_state(fast) == await durable_state(general)
        await fast.store.close()
        await general.store.close()
        # What each log holds: the same state once recovered (the fast path logged the
        # bodies it stored and the ids it deleted).
        fast = await durable_harness(dirs[0], fsync)
        general = await durable_harness(dirs[1], fsync)
        assert await durable_state(fast) == await durable_state(general)
        receive = f"/v1/queues/{QUEUE}/messages?cid=2&limit={MAX_BATCH}"
        assert await durable_answer(fast, "GET", receive) == await durable_answer(
            general, "GET", receive
        )
        await fast.store.close()
        await general.store.close()

    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        asyncio.run(asyncio.wait_for(main([a, b]), 60))


# ---- (c) query split ----------------------------------------------------------------------------

NAMES = st.sampled_from(["cid", "limit", "visibility", "wait", "id", "x", "delay", "é"])
VALUES = st.one_of(
    st.integers(0, 2000).map(str),
    st.sampled_from(["", "0.25", "1.0", "30", "-1", "abc", "007", "1e3", "a b", "é", "=", "?"]),
)


def percent_encode(text: str, which: list[bool]) -> str:
    """``text`` with the characters picked by ``which`` percent-encoded (UTF-8), the rest as
    they are (a space as ``+``, as forms send it)."""
    out = []
    for i, ch in enumerate(text):
        if ch == " ":
            out.append("+" if not which[i % len(which)] else "%20")
        elif ch in "&=+%" or which[i % len(which)] or not ch.isascii():
            out.append("".join(f"%{b:02X}" for b in ch.encode()))
        else:
            out.append(ch)
    return "".join(out)


def latin1(text: str) -> str:
    """The query as the protocol hands it over: the raw bytes as latin-1 text."""
    return text.encode().decode("latin-1")


@FAST
@given(
    pairs=st.lists(st.tuples(NAMES, VALUES), max_size=6),
    which=st.lists(st.booleans(), min_size=1, max_size=8),
)
def test_query_split_fast_path_equals_percent_decoding(
    pairs: list[tuple[str, str]], which: list[bool]
) -> None:
    reference: dict[str, Any] = {}
    for name, value in pairs:
        reference[name] = params.REPEATED if name in reference else value
    encoded = "&".join(percent_encode(n, which) + "=" + percent_encode(v, which) for n, v in pairs)
    assert params.parse_query(latin1(encoded)) == reference
    plain_pairs = all(not any(c in "&=+% " or not c.isascii() for c in n + v) for n, v in pairs)
    if plain_pairs:
        plain = "&".join(f"{n}={v}" for n, v in pairs)
        fast = request.split_query(plain)
        if len(set(n for n, _ in pairs)) == len(pairs):
            assert fast == reference  # the fast path took it and agrees
        else:
            assert fast is None  # a repeated name is the general path's to mark
        assert params.parse_query(plain) == reference


@FAST
@given(
    cid=st.integers(0, 3),
    limit=st.integers(1, MAX_BATCH),
    visibility=st.sampled_from(["", "0", "0.5", "1", "2.001"]),
    which=st.lists(st.booleans(), min_size=1, max_size=8),
    advance=st.sampled_from([0, 0.6, 1.5, 3]),
)
def test_receive_and_delete_with_percent_encoded_queries_equal_the_plain_ones(
    cid: int, limit: int, visibility: str, which: list[bool], advance: float
) -> None:
    """``cid=%31`` is ``cid=1``: the same leases, the same deletes, the same state."""
    plain_h, encoded_h = twin({})
    for h in (plain_h, encoded_h):
        h.ask("POST", f"/v1/queues/{QUEUE}/batch", json.dumps([f"m{i}" for i in range(6)]))
        h.ask("POST", "/v1/queues/default/batch", json.dumps([f"d{i}" for i in range(6)]))
    pairs = [("cid", str(cid)), ("limit", str(limit))]
    if visibility:
        pairs.append(("visibility", visibility))
    plain = "&".join(f"{n}={v}" for n, v in pairs)
    encoded = "&".join(percent_encode(n, which) + "=" + percent_encode(v, which) for n, v in pairs)
    for route in (f"/v1/queues/{QUEUE}/messages", "/v1/consumer"):
        a = answer(plain_h, "GET", f"{route}?{plain}")
        b = answer(encoded_h, "GET", f"{route}?{latin1(encoded)}")
        assert a == b, (plain, encoded)
    for h in (plain_h, encoded_h):
        h.advance(advance)
    for msg_id in (1, 2, 7, 8):
        tail = f"cid={cid}&id={msg_id}"
        enc_tail = percent_encode("cid", which) + "=" + percent_encode(str(cid), which)
        enc_tail += "&" + percent_encode("id", which) + "=" + percent_encode(str(msg_id), which)
        a = answer(plain_h, "DELETE", f"/v1/consumer?{tail}")
        b = answer(encoded_h, "DELETE", f"/v1/consumer?{latin1(enc_tail)}")
        assert a == b, (tail, enc_tail)
        target = f"/v1/queues/{QUEUE}/messages/{msg_id}"
        a = answer(plain_h, "DELETE", f"{target}?cid={cid}")
        b = answer(encoded_h, "DELETE", f"{target}?{latin1(enc_tail.split('&')[0])}")
        assert a == b
    assert state(plain_h) == state(encoded_h)
    for h in (plain_h, encoded_h):
        h.advance(100)
    for route in (f"/v1/queues/{QUEUE}/messages", "/v1/consumer"):
        target = f"{route}?cid=9&limit={MAX_BATCH}"
        assert answer(plain_h, "GET", target) == answer(encoded_h, "GET", target)


# ---- (d) plain ids -------------------------------------------------------------------------------


def reference_id(text: str) -> int | None:
    """The id ``text`` spells by the contract (ASCII digits, 1..2^63-1), else None."""
    if not text or not all("0" <= c <= "9" for c in text):
        return None
    value = int(text)
    return value if 1 <= value <= MAX_ID else None


ID_TEXTS = st.one_of(
    st.integers(0, MAX_ID + 10).map(str),
    st.tuples(st.integers(0, 25), st.integers(0, MAX_ID + 10)).map(
        lambda t: "0" * t[0] + str(t[1])
    ),
    st.text(alphabet="0123456789٣²x-+ ", max_size=22),
)


@settings(max_examples=400, deadline=None)
@given(text=ID_TEXTS)
def test_plain_id_agrees_with_param_id(text: str) -> None:
    expected = reference_id(text)
    fast = params.plain_id(text)
    # The fast path either declines (0) or agrees.
    assert fast in (0, expected)
    if len(text) <= 18 and expected is not None:
        assert fast == expected  # and it takes every id of up to 18 plain digits
    try:
        general: int | None = params.param_id({"id": text})
    except BadParameter as exc:
        assert exc.code == "invalid_id"
        general = None
    assert general == expected
    assert (fast or general) == expected  # as param_path_id and delete_args combine them


@FAST
@given(
    ids=st.lists(st.integers(1, 8), min_size=1, max_size=6),
    zeros=st.lists(st.integers(0, 22), min_size=1, max_size=6),
)
def test_ids_with_leading_zeros_act_as_the_plain_ids(ids: list[int], zeros: list[int]) -> None:
    plain_h, padded_h = twin({})
    for h in (plain_h, padded_h):
        h.ask("POST", f"/v1/queues/{QUEUE}/batch", json.dumps(["m"] * 5))
        h.ask("POST", "/v1/queues/default/batch", json.dumps(["m"] * 5))
        h.ask("GET", f"/v1/queues/{QUEUE}/messages?cid=1&limit=5")
        h.ask("GET", "/v1/consumer?cid=1&limit=3")
    for i, msg_id in enumerate(ids):
        padded = "0" * zeros[i % len(zeros)] + str(msg_id)
        for plain_target, padded_target in (
            (
                f"/v1/queues/{QUEUE}/messages/{msg_id}?cid=1",
                f"/v1/queues/{QUEUE}/messages/{padded}?cid=1",
            ),
            (f"/v1/consumer?cid=1&id={msg_id}", f"/v1/consumer?cid=1&id={padded}"),
        ):
            assert answer(plain_h, "DELETE", plain_target) == answer(
                padded_h, "DELETE", padded_target
            ), padded_target
        lease = f"/v1/queues/{QUEUE}/messages/{{}}/lease?cid=1&timeout=0"
        assert answer(plain_h, "POST", lease.format(msg_id)) == answer(
            padded_h, "POST", lease.format(padded)
        )
        assert state(plain_h) == state(padded_h)


# ---- (e) cached receive arguments ---------------------------------------------------------------

RECEIVE_PARAMS = st.fixed_dictionaries(
    {"cid": st.sampled_from(["1", "0", "77", "9223372036854775807", "x", "-1", "0007"])},
    optional={
        "limit": st.sampled_from(["1", "5", "8", "9", "0", "1000", "x"]),
        "visibility": st.sampled_from(["0", "0.25", "30", "43200", "43201", "1e3"]),
        "wait": st.sampled_from(["0", "0.5", "20", "21", "nan"]),
        "other": st.sampled_from(["1", ""]),
    },
)


_PARAMS_SOURCE = Path(params.__file__).with_name("params.py")
_PARAMS_CODE = compile(_PARAMS_SOURCE.read_text(), str(_PARAMS_SOURCE), "exec")


def receive_args_fresh(query: str, max_batch: int) -> Any:
    """receive_args of params.py run as plain Python in a new module, its caches empty:
    the general path's answer (or error). (The built module's caches are C-private.)"""
    module = types.ModuleType("wonderq._params_fresh")
    module.__package__ = "wonderq"
    exec(_PARAMS_CODE, module.__dict__)
    return receive_args_outcome(query, max_batch, module.receive_args)


def receive_args_outcome(query: str, max_batch: int, receive_args: Any = None) -> Any:
    try:
        return (receive_args or params.receive_args)(query, max_batch)
    except BadParameter as exc:
        return ("error", exc.code)


@settings(max_examples=150, deadline=None)
@given(
    given_params=RECEIVE_PARAMS,
    order=st.randoms(use_true_random=False),
    max_batches=st.lists(st.sampled_from([1, 8, 1000]), min_size=1, max_size=3),
)
def test_cached_receive_arguments_equal_a_fresh_parse(
    given_params: dict[str, str], order: Any, max_batches: list[int]
) -> None:
    items = list(given_params.items())
    queries = []
    for _ in range(3):
        order.shuffle(items)
        queries.append("&".join(f"{n}={v}" for n, v in items))
    for max_batch in max_batches:
        expected = receive_args_fresh(queries[0], max_batch)
        # First use, repeat (from the cache), and every order of the same parameters, each
        # against the answer of an empty cache, also when the limit of max_batch changed.
        for query in queries + queries:
            assert receive_args_outcome(query, max_batch) == expected, (query, max_batch)


def test_a_cached_value_is_still_range_checked_for_another_parameter() -> None:
    """The caches are by text, not by parameter: a value cached as a cid is still checked
    as a limit, and a receive cached under a larger max_batch is refused under a smaller."""
    assert params.receive_args("cid=5000&limit=1", 1000) == (5000, 1, -1, 0)
    assert receive_args_outcome("cid=1&limit=5000", 1000) == ("error", "invalid_limit")
    assert params.receive_args("cid=1&limit=50", 100)[1] == 50
    assert receive_args_outcome("cid=1&limit=50", 10) == ("error", "invalid_limit")
    assert params.receive_args("cid=1&wait=20", 10)[3] == 20000
    assert receive_args_outcome("cid=1&visibility=20&limit=1&wait=20.001", 10) == (
        "error",
        "invalid_wait",
    )


# ---- (f) the dispatch cache ----------------------------------------------------------------------

ROUTES = [
    ("POST", "/v1/publish"),
    ("GET", "/v1/consumer"),
    ("DELETE", "/v1/consumer"),
    ("GET", "/healthz"),
    ("GET", "/v1/queues"),
    ("POST", "/v1/queues/{queue}/batch"),
    ("GET", "/v1/queues/{queue}/messages"),
    ("POST", "/v1/queues/{queue}/messages"),
    ("DELETE", "/v1/queues/{queue}/messages/{id}"),
    ("POST", "/v1/queues/{queue}/messages/{id}/lease"),
    ("PUT", "/v1/queues/{queue}"),
    ("GET", "/v1/queues/{queue}"),
    ("GET", "/static/{file}"),
]
PATHS = st.sampled_from(
    [
        "/v1/publish",
        "/v1/consumer",
        "/healthz",
        "/v1/queues",
        "/v1/queues/a/batch",
        "/v1/queues/b/messages",
        "/v1/queues/a/messages/7",
        "/v1/queues/a/messages/7/lease",
        "/v1/queues/a",
        "/v1/queues/consumer",
        "/v1/queues//messages",
        "/v1/queues/a/",
        "/static/app.js",
        "/nowhere",
        "/v1/publish/",
        "/",
        "",
    ]
)
METHODS = st.sampled_from(["GET", "POST", "DELETE", "PUT", "HEAD", "PATCH"])


def recording_router() -> tuple[Router, list[Any]]:
    calls: list[Any] = []
    router = Router()
    for method, template in ROUTES:

        def handler(req: Any, method: str = method, template: str = template) -> Any:
            calls.append((method, template, req.params))
            return (200, f"{method} {template} {req.params}".encode(), b"")

        router.add(method, template, handler)
    return router, calls


def request_for(method: str, path: str) -> request.Request:
    return request.Request(method, path, "", b"", True, None)  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(sequence=st.lists(st.tuples(METHODS, PATHS), min_size=1, max_size=30))
def test_dispatch_with_the_last_path_remembered_equals_a_fresh_router(
    sequence: list[tuple[str, str]],
) -> None:
    shared, shared_calls = recording_router()
    for method, path in sequence:
        fresh, fresh_calls = recording_router()
        before = len(shared_calls)
        got = shared.dispatch(request_for(method, path))
        expected = fresh.dispatch(request_for(method, path))
        assert got == expected, (method, path)
        # The same handler with the same path parameters (or none, for a 404 or 405).
        assert shared_calls[before:] == fresh_calls, (method, path)
    # The request counts the metrics read are the sums of the fresh routers' counts.
    totals: dict[Any, int] = {}
    for method, path in sequence:
        fresh, _ = recording_router()
        fresh.dispatch(request_for(method, path))
        for key, n in fresh.request_counts().items():
            totals[key] = totals.get(key, 0) + n
    assert shared.request_counts() == totals


def segment_walk(router: Router, path: str) -> tuple[Any, Any]:
    """The general path of Router.match: a static route, else the walk (Router.walk)."""
    return router.match(path) if path in router.static else router.walk(path)


SEGMENT = st.sampled_from(["v1", "queues", "a", "b", "messages", "7", "static", "x.js", ""])


def _changed(template: str, index: int) -> str:
    parts = template.split("/")
    i = 1 + index % (len(parts) - 1)
    parts[i] = "a" if parts[i][:1] == "{" else "{x}"
    return "/".join(parts)


# A server route with one segment changed (a {param} made a literal, or a literal a {param}):
# routes that overlap the server's, which the lookup by prefix must leave to the walk.
NEAR_TEMPLATE = st.builds(
    _changed, st.sampled_from([template for _, template in ROUTES]), st.integers(0, 5)
)


def _filled(template: str, value: str) -> str:
    return "/".join(value if part[:1] == "{" else part for part in template.split("/"))


@settings(max_examples=500, deadline=None)
@given(extra=st.lists(NEAR_TEMPLATE, max_size=4), data=st.data())
def test_route_lookup_by_prefix_and_suffix_equals_the_segment_walk(
    extra: list[str], data: st.DataObject
) -> None:
    """Router.match finds a one-{param} route by its prefix and suffix, without splitting the
    path, unless another route could match the same paths (then it walks them in order):
    the same route and parameters as the walk, for the server's routes plus random ones
    that overlap them."""
    router, _ = recording_router()
    for template in extra:
        with contextlib.suppress(ValueError):  # routed twice
            router.add("GET", template, lambda req: None)
    # A path of a random shape, or one of a route's (added or not) with its {params} filled.
    templates = [template for _, template in ROUTES] + extra
    path = data.draw(
        st.one_of(
            st.lists(SEGMENT, max_size=6).map(lambda parts: "/" + "/".join(parts)),
            st.builds(_filled, st.sampled_from(templates), SEGMENT),
            st.builds(_filled, st.sampled_from(extra or templates), SEGMENT),
        )
    )
    route, params = router.match(path)
    expected_route, expected_params = segment_walk(router, path)
    assert route is expected_route, (path, router.dynamic)
    assert params == expected_params, path


def test_routes_that_overlap_are_walked_in_the_order_added() -> None:
    """``/v1/queues/x`` matches both ``/v1/queues/{q}`` and ``/v1/{b}/x``: the first added
    wins, as in the walk, though the other's prefix is looked at first."""
    router = Router()
    for template in ("/v1/{c}/zzz", "/v1/queues/{q}", "/v1/{b}/x"):
        router.add("GET", template, lambda req: None)
    route, params = router.match("/v1/queues/x")
    assert route is not None and route.name == "/v1/queues/{q}"
    assert params == {"q": "x"}
    assert router.match("/v1/other/x")[1] == {"b": "other"}
    assert router.match("/v1/queues/zzz")[1] == {"c": "queues"}  # /v1/{c}/zzz came first


def test_route_lookup_by_prefix_takes_the_common_routes() -> None:
    """The named-queue routes and the static files are found without the walk: a router
    whose walk is broken still finds them (and only them)."""
    router, _ = recording_router()
    router.dynamic = []  # the walk finds nothing now
    assert router.match("/v1/queues/jobs/messages")[1] == {"queue": "jobs"}
    assert router.match("/v1/queues/jobs/batch")[1] == {"queue": "jobs"}
    assert router.match("/v1/queues/jobs")[1] == {"queue": "jobs"}
    assert router.match("/static/app.js")[1] == {"file": "app.js"}
    assert router.match("/v1/queues/jobs/messages/7")[1] == {"queue": "jobs", "id": "7"}
    assert router.match("/v1/queues/jobs/messages/7/lease")[1] == {"queue": "jobs", "id": "7"}
    assert router.match("/v1/queues/jobs/messages//lease") == (None, None)
    assert router.match("/v1/queues//messages") == (None, None)  # an empty {param}


# ---- (g) the inline answer write -----------------------------------------------------------------

FIXED_TIME = 1_700_000_000.0
STATUSES = sorted(s.value for s in HTTPStatus if s.value >= 200)


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 5555) if name == "peername" else default


class Owner:
    def __init__(self) -> None:
        self.connections: set[Any] = set()
        self.shutting_down = False


class ScriptedApp:
    """Answers each request with the next response of a script."""

    def __init__(self, responses: list[Any]) -> None:
        self.responses = list(responses)

    def dispatch(self, req: Any) -> Any:
        return self.responses.pop(0)

    def cancel(self, req: Any) -> None:
        pass

    def count(self, route: str, status: int) -> None:
        pass


MODES = {
    # name: (request version and header, Connection header of the answer or None for none)
    "1.1": ("HTTP/1.1", "", None),
    "1.1-close": ("HTTP/1.1", "Connection: close\r\n", "close"),
    "1.0": ("HTTP/1.0", "", "close"),
    "1.0-keep-alive": ("HTTP/1.0", "Connection: keep-alive\r\n", "keep-alive"),
}
HEADER_LINES = [
    request.JSON_HEADERS,
    b"",
    b"Content-Type: text/plain\r\nAllow: GET, PUT\r\n",
    # An answer with its own Cache-Control (the status page's assets): no no-store then.
    b'Content-Type: text/html\r\nETag: "x"\r\nCache-Control: no-cache\r\n',
]


def reference_answer(
    status: int, body: bytes, headers: bytes, method: str, conn: str | None
) -> bytes:
    """An answer written out the plain way, field by field (RFC 9110/9112)."""
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}"]
    lines.append(f"Date: {formatdate(FIXED_TIME, usegmt=True)}")
    lines.append("Server: wonderq")
    if b"Cache-Control: " not in headers:
        lines.append("Cache-Control: no-store")
    head = ("\r\n".join(lines) + "\r\n").encode() + headers
    no_body = status in (204, 304)
    if not no_body:
        head += f"Content-Length: {len(body)}\r\n".encode()
    if conn is not None:
        head += f"Connection: {conn}\r\n".encode()
    head += b"\r\n"
    return head + (b"" if no_body or method == "HEAD" else body)


def run_protocol(requests: bytes, responses: list[Any], access_log: bool) -> bytes:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        transport = FakeTransport()
        proto = protocol.HttpProtocol(
            ScriptedApp(responses), Owner(), Settings(access_log=access_log)
        )
        proto.connection_made(transport)  # type: ignore[arg-type]
        proto.data_received(requests)
        return b"".join(transport.written)
    finally:
        loop.close()
        asyncio.set_event_loop(None)


ANSWERS = st.tuples(
    st.sampled_from(STATUSES),
    st.one_of(st.integers(0, 40), st.integers(2040, 2060), st.integers(0, 5000)),
    st.sampled_from(range(len(HEADER_LINES))),
    st.sampled_from(["GET", "POST", "HEAD", "DELETE"]),
)


@settings(max_examples=150, deadline=None)
@given(
    answers=st.lists(ANSWERS, min_size=1, max_size=6),
    mode=st.sampled_from(sorted(MODES)),
    access_log=st.booleans(),
)
def test_answers_on_the_wire_equal_a_plain_rendering(
    answers: list[Any], mode: str, access_log: bool
) -> None:
    """Pipelined requests answered from the cached heads (first use and repeats), inline
    and through the general write (access log on), byte for byte as a field-by-field
    rendering. A close ends the connection: the answers after it are not sent."""
    version, header, conn = MODES[mode]
    request.refresh_date(FIXED_TIME)
    try:
        requests = b""
        responses = []
        expected = b""
        for i, (status, length, which, method) in enumerate(answers):
            body = bytes(48 + (i + j) % 10 for j in range(length))
            requests += f"{method} /x{i} {version}\r\nHost: t\r\n{header}\r\n".encode()
            responses.append((status, body, HEADER_LINES[which]))
            expected += reference_answer(status, body, HEADER_LINES[which], method, conn)
            if conn == "close":
                break  # the last request of the connection
        assert run_protocol(requests, responses, access_log) == expected
    finally:
        request.refresh_date()


def test_reference_rendering_matches_a_known_answer() -> None:
    """The reference itself, against an answer written out by hand."""
    want = (
        b"HTTP/1.1 201 Created\r\nDate: Tue, 14 Nov 2023 22:13:20 GMT\r\nServer: wonderq\r\n"
        b"Cache-Control: no-store\r\nContent-Type: application/json\r\nContent-Length: 8\r\n"
        b'\r\n{"id":1}'
    )
    assert reference_answer(201, b'{"id":1}', request.JSON_HEADERS, "POST", None) == want
    assert re.match(rb"HTTP/1.1 204 No Content\r\n", reference_answer(204, b"", b"", "GET", None))


# ---- (h) the Authorization line lifted out of the head -------------------------------------------


class RecordingApp:
    """Records what the application sees of each request; answers 200 with its path."""

    def __init__(self) -> None:
        self.seen: list[tuple[Any, ...]] = []

    def dispatch(self, req: Any) -> Any:
        headers = None if req.headers is None else list(req.headers)
        self.seen.append((req.method, req.path, req.query, req.body, req.authorization, headers))
        return (200, req.path.encode(), b"Content-Type: text/plain\r\n")

    def cancel(self, req: Any) -> None:
        pass

    def count(self, route: str, status: int) -> None:
        pass


class FullTransport(FakeTransport):
    """Also what an error answer's lingering close calls."""

    def can_write_eof(self) -> bool:
        return False

    def abort(self) -> None:
        self.closed = True


def run_reads(reads: list[bytes], lift: bool) -> tuple[list[tuple[Any, ...]], bytes]:
    """Feed ``reads`` to one connection; with ``lift``, as under ``--auth-file`` (the protocol
    lifts Authorization lines out of heads); without, every header goes through llhttp."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        transport = FullTransport()
        app = RecordingApp()
        proto = protocol.HttpProtocol(
            app, Owner(), Settings(auth_file="auth.toml" if lift else None)
        )
        proto.connection_made(transport)  # type: ignore[arg-type]
        for data in reads:
            proto.data_received(data)
        return app.seen, b"".join(transport.written)
    finally:
        loop.close()
        asyncio.set_event_loop(None)


AUTH_NAMES = ["Authorization"] * 8 + ["authorization", "AUTHORIZATION"]
VALUE_BYTES = st.one_of(
    # the plain form, which the protocol lifts (two lines in three)
    st.sampled_from([b"Bearer tok-0123456789", b"Bearer abc=", b"Basic x y"]),
    st.sampled_from([b"Bearer tok-0123456789", b"Bearer abc=", b"Basic x y"]),
    # anything: spaces around, tabs, control and non-ASCII bytes, empty
    st.lists(
        st.sampled_from(
            [
                b"Bearer ",
                b"tok-0123456789",
                b"abc",
                b"=",
                b" ",
                b"  ",
                b"\t",
                b"\x01",
                b"\x7f",
                b"\x80",
            ]
        ),
        max_size=6,
    ).map(b"".join),
)
OTHER_HEADERS = [b"Host: t", b"X-A: 1", b"Accept: */*", b"Content-Type: text/plain"]


@st.composite
def heads_with_authorization(draw: Any) -> bytes:
    """One request: a target under /v1/ or not, some headers, zero to two Authorization lines
    (any casing, any value, maybe folded), a body when there is a length."""
    method = draw(st.sampled_from(["GET", "POST", "DELETE"]))
    target = draw(st.sampled_from(["/v1/publish", "/v1/queues/q/messages?cid=1", "/v1/x", "/"]))
    lines = draw(st.lists(st.sampled_from(OTHER_HEADERS), max_size=3))
    for _ in range(draw(st.sampled_from([0, 1, 1, 1, 1, 2]))):
        name = draw(st.sampled_from(AUTH_NAMES)).encode()
        space = draw(st.sampled_from([b" "] * 8 + [b"", b"  "]))
        line = name + b":" + space + draw(VALUE_BYTES)
        if draw(st.integers(0, 5)) == 0:
            line += b"\r\n " + draw(VALUE_BYTES)  # a folded line
        lines.insert(draw(st.integers(0, len(lines))), line)
    body = draw(st.sampled_from([b"", b"m", b"x" * 40]))
    if body or method == "POST":
        lines.append(b"Content-Length: %d" % len(body))
    return (
        b"%s %s HTTP/1.1\r\n" % (method.encode(), target.encode())
        + b"".join(line + b"\r\n" for line in lines)
        + b"\r\n"
        + body
    )


@settings(max_examples=400, deadline=None)
@given(
    requests=st.lists(heads_with_authorization(), min_size=1, max_size=3),
    cuts=st.lists(st.integers(1, 400), max_size=3),
)
def test_lifted_authorization_equals_llhttps_header(requests: list[bytes], cuts: list[int]) -> None:
    """Pipelined requests, cut into reads anywhere: the application sees the same requests
    (method, target, body, Authorization value, the headers kept for non-/v1/ targets) and
    the client the same bytes (answers, 400s) whether the protocol lifts Authorization lines
    out of heads or llhttp reads every header."""
    data = b"".join(requests)
    reads, start = [], 0
    for cut in sorted(cuts):
        if start < cut < len(data):
            reads.append(data[start:cut])
            start = cut
    reads.append(data[start:])
    request.refresh_date(FIXED_TIME)
    try:
        assert run_reads(reads, lift=True) == run_reads(reads, lift=False)
    finally:
        request.refresh_date()


def test_the_plain_authorization_line_is_lifted() -> None:
    """The test above compares two real paths: the plain form does take the lift."""
    from wonderq.headscan import Lifter

    head = b"POST /v1/publish HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer tok\r\n"
    rest = b"Content-Length: 1\r\n\r\nm"
    first, second = Lifter(), Lifter()
    assert first.lift(head + rest) == b"POST /v1/publish HTTP/1.1\r\nHost: t\r\n" + rest
    assert first.value == b"Bearer tok"
    assert second.lift(head + rest) is not None
    assert second.value is first.value  # one object for every connection that sends it
    declined = [
        head.replace(b"Authorization", b"authorization") + rest,  # llhttp's
        head.replace(b"/v1/", b"/") + rest,  # the SQS face keeps its headers
        head.replace(b": ", b":  ") + rest,  # llhttp skips the second space
        head.replace(b"tok", b"t\tok") + rest,  # a tab
        head.replace(b"tok", b"t\xc3\xa9") + rest,  # not ASCII
        head + b" folded\r\n" + rest,
        head[:-2],  # the line is not complete in this read
        b"POST /v1/publish HTTP/1.1\r\nHost: t\r\n\r\nAuthorization: Bearer tok\r\n",  # body
    ]
    for data in declined:
        assert Lifter().lift(data) is None, data
    seen, out = run_reads([head + rest], lift=True)
    assert seen == [("POST", "/v1/publish", "", b"m", b"Bearer tok", None)]
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")


def test_two_authorization_lines_are_refused_either_way() -> None:
    """A request with two Authorization headers is a 400, whichever of them was lifted."""
    data = (
        b"POST /v1/publish HTTP/1.1\r\nAuthorization: Bearer a\r\n"
        b"authorization: Bearer b\r\nContent-Length: 1\r\n\r\nm"
    )
    for lift in (True, False):
        seen, out = run_reads([data], lift=lift)
        assert seen == []
        assert out.startswith(b"HTTP/1.1 400 "), out
        assert b"more than one Authorization header" in out


@FAST
@given(a=st.binary(max_size=40), b=st.binary(max_size=40))
def test_a_kept_value_is_reused_exactly_when_equal(a: bytes, b: bytes) -> None:
    """A connection's remembered Authorization value (compared in constant time) is handed
    back for an equal value and never for a different one, even one differing only in its
    first or last byte."""
    from wonderq.headscan import Lifter

    lifter = Lifter()
    first = lifter.keep(bytes(a))
    assert first == a
    again = lifter.keep(bytes(b))
    assert again == b
    assert (again is first) == (a == b)
    if a:
        for i in (0, len(a) - 1):
            other = a[:i] + bytes([a[i] ^ 1]) + a[i + 1 :]
            kept = Lifter()
            assert kept.keep(bytes(a)) is not kept.keep(other)


# ---- wonderq.pathscan: the router's C compares against the str methods ----------------------

PATH_TEXT = st.text(alphabet="/vq1abé€%", max_size=14)  # latin-1 and wider characters
LITERAL = st.text(alphabet="/vq1abé", max_size=5)  # a route's literal part (latin-1)


@settings(max_examples=500, deadline=None)
@given(path=PATH_TEXT, prefix=LITERAL, rest=LITERAL, start=st.integers(0, 14))
def test_pathscan_answers_as_the_str_methods(path: str, prefix: str, rest: str, start: int) -> None:
    from wonderq.pathscan import rest_is, segment_after

    end = path.find("/", len(prefix))
    end = len(path) if end < 0 else end
    expected = end if path.startswith(prefix) and end > len(prefix) else -1
    assert segment_after(path, prefix.encode("latin-1")) == expected
    start = min(start, len(path))
    assert rest_is(path, start, rest.encode("latin-1")) == (path[start:] == rest)


def _path_index_model(entries: list[tuple[str, str]], path: str) -> tuple[int, int, int]:
    """PathIndex.find as the str methods say it: (index, start, end) of the entry ``path``
    matches (its prefix, a non-empty segment without "/", its rest), else (-1, 0, 0)."""
    found = []
    for i, (prefix, rest) in enumerate(entries):
        if not path.startswith(prefix):
            continue
        end = path.find("/", len(prefix))
        end = len(path) if end < 0 else end
        if end > len(prefix) and path[end:] == rest:
            found.append((i, len(prefix), end))
    assert len(found) <= 1, "the entries given overlap"
    return found[0] if found else (-1, 0, 0)


# Prefixes ending in "/" and rests that are "" or begin with "/": as the router builds them, so
# no path matches two entries of different rests (those of one prefix differ in their rest).
PREFIX = st.sampled_from(["/", "/v1/queues/", "/v1/qé/", "/static/", "/a/b/c/d/e/"])
REST = st.sampled_from(["", "/messages", "/batch", "/purge", "/peek", "/ack", "/é", "/x/y"])


@settings(max_examples=500, deadline=None)
@given(
    entries=st.lists(st.tuples(PREFIX, REST), max_size=8, unique=True),
    path=st.one_of(PATH_TEXT, st.builds(lambda p, s, r: p + s + r, PREFIX, PATH_TEXT, REST)),
)
def test_path_index_finds_as_the_str_methods(entries: list[tuple[str, str]], path: str) -> None:
    """PathIndex compares in C (eight bytes at a time, the prefix's segment found once for
    all its entries) and with the str methods for a path of wider characters: the same
    entry and segment as a plain model, whatever the entries' order."""
    from wonderq.pathscan import PathIndex

    # Entries whose paths overlap (one prefix a longer one's beginning) are not the router's.
    assume(all(not (a != b and b.startswith(a)) for a, _ in entries for b, _ in entries))
    index = PathIndex([(p.encode("latin-1"), r.encode("latin-1")) for p, r in entries])
    assert (index.find(path), index.start, index.end) == _path_index_model(entries, path)
