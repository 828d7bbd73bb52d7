"""Log format 2 (docs/DURABILITY.md, "Sections"): a message's sent time, first receive time
and attribute blob, in publish sections and snapshot rows; what a plain message costs; files of
version 1 and of unknown versions. The server-level round trip is in tests/test_sqs_clients.py
(``test_durable_message_attributes_and_times_survive_a_restart``)."""

from __future__ import annotations

import asyncio
import json
import struct
from pathlib import Path
from typing import Any

import pytest

from wonderq.wal import (
    Chunk,
    Delete,
    FirstReceives,
    Publish,
    Wal,
    WalCorruptError,
    decode_payload,
    encode_frame,
    recover,
)
from wonderq.wal.files import segment_name
from wonderq.wal.format import (
    F_ATTRIBUTES,
    F_KNOWN,
    F_SENT,
    FILE_HEADER,
    FORMAT_VERSION,
    FRAME_HEADER_SIZE,
    LOG_MAGIC,
    PUB,
    S_PUBLISH,
    frame,
    read_file,
)

core = pytest.importorskip("wonderq._core")

W = 1_800_000_000_000  # a wall clock (ms) for these tests: 2027-01-15
BLOB = b"\x01kind\x00resize"  # an attribute blob: opaque to the log


def write_segment(
    d: Path, frames: list[bytes], version: int = FORMAT_VERSION, seq: int = 1
) -> Path:
    d.mkdir(exist_ok=True)
    path = d / segment_name(seq)
    path.write_bytes(FILE_HEADER.pack(LOG_MAGIC, version, seq) + b"".join(frames))
    return path


# ---- the bytes ----------------------------------------------------------------------------------
def test_a_plain_message_is_laid_out_as_in_format_1() -> None:
    """No flag, no column: a message without sent time or attributes costs what it cost in
    format 1, byte for byte (the native publish path writes only such messages)."""
    payload = encode_frame([Publish(7, "q", b"body")])[FRAME_HEADER_SIZE:]
    v1 = PUB.pack(S_PUBLISH, 0, 1, 1) + b"q" + struct.pack("<QI", 7, 4) + b"body"
    assert payload == v1


def test_what_the_format_2_columns_cost() -> None:
    def size(*recs: Publish) -> int:
        return len(encode_frame(list(recs)))

    plain = size(Publish(7, "q", b"body"))
    assert size(Publish(7, "q", b"body", sent_ms=W)) == plain + 8
    assert size(Publish(7, "q", b"body", sent_ms=W, attributes=BLOB)) == plain + 8 + 4 + len(BLOB)
    assert size(Publish(7, "q", b"body", first_receive_ms=W)) == plain + 8
    # In a section with some, a message without a blob costs its 4-byte length field only.
    two = size(Publish(7, "q", b"a", attributes=BLOB), Publish(8, "q", b"b"))
    assert two == size(Publish(7, "q", b"a", attributes=BLOB)) + 8 + 4 + 1 + 4


@pytest.mark.parametrize(
    "records",
    [
        [Publish(1, "q", b"a"), Publish(2, "q", b"bb"), Publish(3, "r", b"")],
        [
            Publish(1, "q", b"a", sent_ms=W, attributes=BLOB),
            Publish(2, "q", b"bb"),  # no time, no blob, between two that have them
            Publish(3, "q", b"c", W + 5_000, 2, W - 1, W, b""),  # an empty blob is a blob
            Publish(4, "q", b"d", sent_ms=W + 1),
            Publish(5, "r", b"e", attributes=b"x" * 70_000),
        ],
    ],
    ids=["without attributes", "with attributes and times"],
)
def test_publish_sections_round_trip(records: list[Publish]) -> None:
    assert decode_payload(encode_frame(records)[FRAME_HEADER_SIZE:]) == records


def test_unknown_publish_flags_are_refused(tmp_path: Path) -> None:
    payload = encode_frame([Publish(1, "q", b"a", sent_ms=W)])[FRAME_HEADER_SIZE:]
    assert payload[1] == F_SENT
    bad = payload[:1] + bytes([F_SENT | (F_KNOWN + 1)]) + payload[2:]
    with pytest.raises(ValueError, match="unknown publish flags"):
        decode_payload(bad)
    # In a file, a checksummed frame that does not decode stops the start (never truncated).
    write_segment(tmp_path / "data", [frame(bad)])
    with pytest.raises(WalCorruptError, match="does not decode"):
        recover(tmp_path / "data")


@pytest.mark.parametrize("cut", [1, 3, 5, 9])
def test_a_section_shorter_than_its_columns_is_refused(cut: int) -> None:
    payload = encode_frame([Publish(1, "q", b"a", sent_ms=W, attributes=BLOB)])[FRAME_HEADER_SIZE:]
    assert payload[1] == F_SENT | F_ATTRIBUTES
    with pytest.raises(ValueError):
        decode_payload(payload[:-cut])


def test_a_file_of_an_unknown_version_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = write_segment(tmp_path / "data", [encode_frame([Publish(1, "q", b"a")])], version=3)
    before = path.read_bytes()
    with pytest.raises(
        WalCorruptError, match=r"format version 3, this program reads versions 1, 2"
    ):
        recover(tmp_path / "data")
    with pytest.raises(WalCorruptError, match="format version 3"):
        read_file(path)
    assert path.read_bytes() == before


def test_the_version_constant_is_the_one_in_format() -> None:
    """Every module writes the version of wonderq.wal.format (no copy of the number)."""
    root = Path(__file__).resolve().parent.parent / "wonderq" / "wal"
    for py in root.glob("*.py"):
        text = py.read_text()
        if py.name != "format.py":
            assert "FORMAT_VERSION =" not in text, py.name
    assert FORMAT_VERSION == 2


def test_new_files_are_version_2(tmp_path: Path) -> None:
    async def run() -> None:
        log = Wal(tmp_path, fsync="always")
        log.recover().close()
        await log.start()
        log.append_send(1, "default", b"x", 0, W, BLOB)
        await log.commit()  # type: ignore[misc]
        await log.close()

    asyncio.run(run())
    [seg] = [p for p in tmp_path.iterdir() if p.suffix == ".log"]
    assert FILE_HEADER.unpack(seg.read_bytes()[:16])[1] == 2
    assert read_file(seg)[1][-1] == Publish(1, "default", b"x", sent_ms=W, attributes=BLOB)


# ---- the Wal's appends --------------------------------------------------------------------------
def test_sends_and_plain_publishes_share_a_section(tmp_path: Path) -> None:
    """append_send and append_publish to one queue in one turn: one section whose columns
    hold the defaults for the plain messages, whichever came first."""

    async def run() -> None:
        log = Wal(tmp_path, fsync="always", wall_ms=lambda: W)
        log.recover().close()
        await log.start()
        log.append_publish(1, "default", b"p1")
        log.append_send(2, "default", b"s2", 0, W - 10, BLOB)
        log.append_publish(3, "default", b"p3")
        log.append_send(4, "default", b"s4", 1_000, W - 5)  # delayed, no blob
        log.append_publish(5, "default", b"p5", 2_000)
        log.append_publish_batch(6, "default", [b"b6", b"b7"], None, W - 1)
        await log.commit()  # type: ignore[misc]
        await log.close()

    asyncio.run(run())
    with recover(tmp_path) as state:
        assert state.messages() == [
            Publish(1, "default", b"p1"),
            Publish(2, "default", b"s2", sent_ms=W - 10, attributes=BLOB),
            Publish(3, "default", b"p3"),
            Publish(4, "default", b"s4", W + 1_000, sent_ms=W - 5),
            Publish(5, "default", b"p5", W + 2_000),
            Publish(6, "default", b"b6", sent_ms=W - 1),
            Publish(7, "default", b"b7", sent_ms=W - 1),
        ]
        assert state.report.frames == 1  # the turn (with the id reserve)


# ---- recovery into the engine -------------------------------------------------------------------
def broker_from(tmp_path: Path, records: list[Any], now: int, wall: int, **kw: Any) -> Any:
    write_segment(tmp_path / "data", [encode_frame(records)])
    broker = core.Broker()
    with recover(tmp_path / "data") as state:
        state.load_into(broker, now, wall, **kw)
    broker.check_invariants()
    return broker


def test_recovery_restores_attributes_and_times(tmp_path: Path) -> None:
    now = 5_000_000  # the new process's engine clock; wall - now = the offset
    offset = W - now
    broker = broker_from(
        tmp_path,
        [
            Publish(1, "default", b"a", sent_ms=W - 60_000, attributes=BLOB),
            Publish(
                2, "default", b"b", receives=1, sent_ms=W - 50_000, first_receive_ms=W - 40_000
            ),
            Publish(3, "default", b"c"),  # no time logged: sent at the restart
            Publish(4, "default", b"d", sent_ms=W + 9_999_000),  # the clock went back: now
        ],
        now,
        W,
        sent_offset_ms=offset,
    )
    _, rows = broker.dump_messages(0, 10, now)
    assert [(m[0], m[5] + offset, m[7]) for m in rows] == [
        (1, W - 60_000, BLOB),
        (2, W - 50_000, None),
        (3, W, None),
        (4, W, None),
    ]
    assert rows[1][6] + offset == W - 40_000  # first receive, as SQS answers it
    assert rows[0][6] is None
    got = broker.receive_list("default", 1, 10, now, 30_000)
    assert [(r[0], r[2], r[3] + offset, r[5]) for r in got] == [
        (1, 1, W - 60_000, BLOB),
        (2, 2, W - 50_000, None),
        (3, 1, W, None),
        (4, 1, W, None),
    ]


@pytest.mark.parametrize("future", [False, True], ids=["all past", "one after the clock"])
def test_messages_with_only_a_sent_time(tmp_path: Path, future: bool) -> None:
    """What a snapshot holds for most messages (recovery's shortcut for them): the sent time
    becomes the engine's, and one later than the wall clock is taken as now."""
    now = 5_000_000
    offset = W - now
    last = W + 60_000 if future else W - 1
    broker = broker_from(
        tmp_path,
        [Publish(i, "default", b"m", sent_ms=W - 1000 + i) for i in range(1, 5)]
        + [Publish(5, "default", b"m", sent_ms=last)],
        now,
        W,
    )
    _, rows = broker.dump_messages(0, 10, now)
    assert [m[5] + offset for m in rows] == [W - 999, W - 998, W - 997, W - 996, min(last, W)]


def test_retention_counts_from_the_original_sent_time(tmp_path: Path) -> None:
    from wonderq.wal import QueuePut

    now = 1_000_000
    minute = 60_000
    broker = broker_from(
        tmp_path,
        [
            QueuePut("kept", {"retention_ms": minute}),
            Publish(1, "kept", b"old", sent_ms=W - 2 * minute),  # past its retention already
            Publish(2, "kept", b"young", sent_ms=W - minute // 2),
            Publish(3, "kept", b"plain"),  # no time logged: counts from the restart
        ],
        now,
        W,
    )
    assert broker.expire(now, 100) == 1
    assert [m[0] for m in broker.dump_messages(0, 10, now)[1]] == [2, 3]
    assert broker.expire(now + minute // 2, 100) == 1
    assert [m[0] for m in broker.dump_messages(0, 10, now)[1]] == [3]
    assert broker.queue_info("kept")["counts"]["ready"] == 1


# ---- snapshots ----------------------------------------------------------------------------------
def test_a_snapshot_keeps_attributes_and_times(tmp_path: Path) -> None:
    """Compaction writes the engine's rows with their times and blobs; recovery from the
    snapshot alone gives them back."""
    from wonderq.wal import BrokerSnapshotSource

    clock = {"now": 1_000, "wall": W}
    offset = W - 1_000

    async def run() -> Any:
        broker = core.Broker()
        log = Wal(tmp_path, fsync="always", wall_ms=lambda: clock["wall"])
        log.recover().close()
        source = BrokerSnapshotSource(broker, lambda: clock["now"], lambda: clock["wall"], offset)
        await log.start(source)
        broker.put_queue("q", {"retention_ms": 3_600_000})
        log.append_queue_put("q", broker.queue_info("q")["attributes"])
        a = broker.publish("q", b"with", 1_000, 0, BLOB)
        log.append_send(a, "q", b"with", 0, 1_000 + offset, BLOB)
        clock["now"] += 250
        b = broker.publish("q", b"plain", clock["now"], 0)
        log.append_publish(b, "q", b"plain")
        clock["now"] += 250
        [row] = broker.receive_list("q", 9, 1, clock["now"], 60_000)  # the first receive of a
        log.append_receive([row[0]])
        await log.commit()  # type: ignore[misc]
        await log.compact()
        await log.close()
        assert log.compactions == 1
        return broker.dump_messages(0, 10, clock["now"])[1]

    before = asyncio.run(run())
    snaps = sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".snap")
    assert snaps == ["snapshot-00000000000000000002.snap"]
    with recover(tmp_path) as state:
        assert state.messages() == [
            Publish(1, "q", b"with", 0, 1, W, W + 500, BLOB),
            Publish(2, "q", b"plain", 0, 0, W + 250),
        ]
        broker = core.Broker()
        state.load_into(broker, 5_000, W + 4_000, sent_offset_ms=offset)  # the same offset
    after = broker.dump_messages(0, 10, 5_000)[1]
    # Leases are not durable (delay 0 now); the rest is as it was.
    assert [(m[0], m[2], m[3], m[5], m[6], m[7]) for m in after] == [
        (m[0], m[2], m[3], m[5], m[6], m[7]) for m in before
    ]
    assert json.loads(broker.receive("q", 1, 10, 5_000, 0))["messages"][0]["receives"] == 2


def test_first_receives_logged_after_the_publish(tmp_path: Path) -> None:
    """The earliest logged first receive of an id wins (a dead-letter move logs another);
    a deleted id's is forgotten."""
    write_segment(
        tmp_path / "data",
        [
            encode_frame([Publish(1, "default", b"a", sent_ms=W), Publish(2, "default", b"b")]),
            encode_frame([FirstReceives((1, 2), (W + 10, W + 20))]),
            encode_frame([FirstReceives((1,), (W + 99,)), Delete((2,))]),
            encode_frame([Publish(3, "default", b"c"), FirstReceives((3,), (W + 30,))]),
        ],
    )
    with recover(tmp_path / "data") as state:
        assert state.messages() == [
            Publish(1, "default", b"a", sent_ms=W, first_receive_ms=W + 10),
            Publish(3, "default", b"c", first_receive_ms=W + 30),
        ]
        assert state._rep.first_receives == {1: W + 10, 3: W + 30}


@pytest.mark.parametrize(
    ("chunk_at", "second"),
    [(16, W + 60), (10_000, 0)],
    ids=["logged after the chunk", "logged before the chunk"],
)
def test_a_snapshot_row_and_a_logged_first_receive(
    tmp_path: Path, chunk_at: int, second: int
) -> None:
    """A snapshot chunk holds the exact state at its position: its row's first receive wins;
    one logged after the chunk counts if the row has none, one logged before it does not."""
    from wonderq.wal.files import snapshot_name
    from wonderq.wal.format import SNAP_MAGIC, End, NextId

    d = tmp_path / "data"
    d.mkdir()
    (d / snapshot_name(1)).write_bytes(
        FILE_HEADER.pack(SNAP_MAGIC, FORMAT_VERSION, 1)
        + encode_frame([NextId(10)])
        + encode_frame(
            [
                Chunk(chunk_at),
                Publish(1, "default", b"a", 0, 1, W, W + 5),
                Publish(2, "default", b"b", sent_ms=W),
            ]
        )
        + encode_frame([End(2)])
    )
    write_segment(d, [encode_frame([FirstReceives((1, 2), (W + 50, W + 60))])])
    with recover(d) as state:
        assert [(m.msg_id, m.first_receive_ms) for m in state.messages()] == [
            (1, W + 5),
            (2, second),
        ]


# ---- the durable store ------------------------------------------------------------------------
def test_the_store_logs_sent_times_for_queues_with_a_retention_period(tmp_path: Path) -> None:
    """Native publishes (single, batch, JSON batch) to a queue with a retention period are
    logged with their sent time, those to other queues are not (they cost what they did);
    after a restart the former have the same wall-clock sent time, so their retention counts
    from the original publish."""
    from wonderq.config import Settings
    from wonderq.store import DurableStore

    settings = Settings(data_dir=str(tmp_path / "data"), fsync="always")

    async def first_run() -> dict[int, int]:
        store = DurableStore(settings)
        store.open()
        await store.start(asyncio.get_running_loop(), store.listener)
        await asyncio.sleep(0)
        store.put_queue("kept", {"retention_ms": 3_600_000})
        store.put_queue("plain", None)
        store.publish("kept", b"one", -1)
        store.publish_batch("kept", [b"two", b"three"], None)
        store.publish_batch_json("kept", b'["four"]')
        store.publish("plain", b"five", -1)
        store.put_queue("kept", {"retention_ms": None})  # no longer: logged without
        store.publish("kept", b"six", -1)
        _, rows = store.broker.dump_messages(0, 10, store.now())
        await store.close()
        return {m[0]: m[5] + store.wall_offset_ms for m in rows}

    sent = asyncio.run(first_run())
    logged = {}
    for seg in sorted((tmp_path / "data").glob("wal-*.log")):
        logged.update({r.body: r.sent_ms for r in read_file(seg)[1] if isinstance(r, Publish)})
    assert logged == {
        b"one": sent[1],
        b"two": sent[2],
        b"three": sent[3],
        b"four": sent[4],
        b"five": 0,
        b"six": 0,
    }
    store = DurableStore(settings)
    store.open()
    _, rows = store.broker.dump_messages(0, 10, store.now())
    again = {m[0]: m[5] + store.wall_offset_ms for m in rows}
    assert {i: again[i] for i in (1, 2, 3, 4)} == {i: sent[i] for i in (1, 2, 3, 4)}
    assert again[5] >= sent[5] and again[6] >= sent[6]  # the restart's time


@pytest.mark.parametrize("sticky", [0.0, 0.95], ids=["mixed", "in streaks"])
@pytest.mark.parametrize("seed", range(4))
def test_one_message_frames_of_every_shape(tmp_path: Path, seed: int, sticky: float) -> None:
    """What low load writes: a frame per message. Recovery's fast paths (plain messages,
    SQS sends with and without a blob) and the general decoder take turns as shapes and
    queues change (a queue whose name starts another's included); the result is the same."""
    import random

    from wonderq.wal import QueuePut

    rng = random.Random(seed)
    frames = [encode_frame([QueuePut("q", {}), QueuePut("qq", {})])]
    live: dict[int, Publish] = {}
    queue = shape = ""
    for msg_id in range(1, 400):
        if not queue or rng.random() >= sticky:  # in streaks: mostly the same queue and shape
            queue = rng.choice(["q", "qq", "default"])
            shape = rng.choice(["plain", "plain", "sent", "blob", "blob", "empty blob", "delayed"])
        body = "".join(rng.choices("ab é✓", k=rng.randint(1, 30))).encode()
        p = Publish(msg_id, queue, body)
        if shape != "plain":
            p = p._replace(sent_ms=W - rng.randint(1, 10**6))
        if shape == "blob":
            p = p._replace(attributes=rng.randbytes(rng.randint(1, 20)))
        elif shape == "empty blob":
            p = p._replace(attributes=b"")
        elif shape == "delayed":
            p = p._replace(delay_end_ms=W + 1000)
        records: list[Any] = [p]
        live[msg_id] = p
        if rng.random() < 0.1:
            gone = rng.choice(list(live))
            records.append(Delete((gone,)))
            del live[gone]
        frames.append(encode_frame(records))
    write_segment(tmp_path / "data", frames)
    with recover(tmp_path / "data") as state:
        assert state.messages() == sorted(live.values())
        broker = core.Broker()
        state.load_into(broker, 1_000, W, sent_offset_ms=W - 1_000)
    _, rows = broker.dump_messages(0, 1000, 1_000)
    assert [(m[0], m[7]) for m in rows] == [(p.msg_id, p.attributes) for p in sorted(live.values())]
