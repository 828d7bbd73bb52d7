"""The log reads what earlier versions wrote: ``tests/data/wal-v1/`` is a data directory made
by the server of commit 6832194 (the single-module ``wonderq/wal.py``), with the state that
server's own recovery found in ``expected.json`` (how it was made: tests/data/README.md).

A change that alters how recovery reads format version 1 (a section, a flag, the snapshot's
chunk positions, the id reserve) fails here, whatever the round-trip tests of the new code say.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from wonderq.wal import BrokerSnapshotSource, Publish, Wal, read_file, recover
from wonderq.wal.format import FILE_HEADER, FORMAT_VERSION

FIXTURE = Path(__file__).parent / "data" / "wal-v1"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())


def expected_messages() -> list[Publish]:
    return [
        Publish(m["id"], m["queue"], m["body"].encode(), m["delay_end_ms"], m["receives"])
        for m in EXPECTED["messages"]
    ]


def first_delay_end() -> int:
    return min(m.delay_end_ms for m in expected_messages() if m.delay_end_ms)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A copy of the fixture: recovery may repair files, and the fixture must stay as made."""
    d = tmp_path / "data"
    d.mkdir()
    for name in EXPECTED["files"]:
        shutil.copy(FIXTURE / name, d / name)
    return d


def test_the_fixture_is_what_its_readme_says() -> None:
    # A snapshot and the segment after it; small enough to read in a review.
    assert EXPECTED["files"] == [
        "snapshot-00000000000000000002.snap",
        "wal-00000000000000000002.log",
    ]
    assert sum((FIXTURE / n).stat().st_size for n in EXPECTED["files"]) < 16 * 1024


@pytest.mark.timeout(30)
def test_recovers_the_exact_state_an_old_server_wrote(data_dir: Path) -> None:
    before = {n: (data_dir / n).read_bytes() for n in EXPECTED["files"]}
    with recover(data_dir) as state:
        assert state.queues == EXPECTED["queues"]
        assert state.messages() == expected_messages()
        assert state.next_id == EXPECTED["next_id"]
        assert state.report.snapshot == "snapshot-00000000000000000002.snap"
        assert state.report.segments == ["wal-00000000000000000002.log"]
        assert state.report.dropped_bytes == 0 and not state.report.set_aside
    # A clean directory is read, not repaired.
    assert {n: (data_dir / n).read_bytes() for n in sorted(before)} == before


def test_the_state_holds_every_kind_of_record() -> None:
    """The fixture exercises what it should: if a regeneration lost a case, say so here."""
    msgs = {m.body: m for m in expected_messages()}
    queues = EXPECTED["queues"]
    assert queues["jobs"]["dead_letter_queue"] == "jobs-dlq"  # attributes, updated after
    assert queues["jobs"]["visibility_timeout_ms"] == 90_000  # the snapshot
    assert queues["doomed"]["visibility_timeout_ms"] == 5000  # deleted, then created again
    assert b"x1" not in msgs and b"j2" not in msgs  # queue deletion, purge
    assert msgs[b"j1"].queue == "jobs-dlq" and msgs[b"j1"].receives == 1  # moved in snapshot
    assert msgs[b"j3"].queue == "jobs-dlq" and msgs[b"j3"].receives == 0  # moved in segment
    assert msgs[b"beta"].receives == 1 and msgs[b"d2"].receives == 1  # leased at shutdown
    assert b"alpha" not in msgs and b"d1" not in msgs  # acked, one by one and in a batch
    assert all(msgs[b].delay_end_ms > 0 for b in (b"s1", b"s2", b"later", b"later too"))
    assert max(msgs[b].msg_id for b in msgs) < EXPECTED["next_id"]
    seq, records, scan = read_file(FIXTURE / "snapshot-00000000000000000002.snap")
    assert (seq, scan.reason) == (2, "")
    assert any(type(r).__name__ == "Chunk" for r in records)


def v1_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    """The attributes format 1 knew; those added since must be at their defaults (None)."""
    known = next(iter(EXPECTED["queues"].values())).keys()
    added = {k: v for k, v in attributes.items() if k not in known}
    assert all(v is None for v in added.values()), added
    return {k: v for k, v in attributes.items() if k in known}


@pytest.mark.timeout(30)
def test_the_real_engine_serves_the_old_messages(data_dir: Path) -> None:
    core = pytest.importorskip("wonderq._core")
    broker = core.Broker()
    wall = first_delay_end() - 60_000  # a minute before the first delay ends
    with recover(data_dir) as state:
        assert state.load_into(broker, 0, wall) == len(EXPECTED["messages"])
    broker.check_invariants()
    assert broker.queue_names() == sorted(EXPECTED["queues"])
    for name, attrs in EXPECTED["queues"].items():
        assert v1_attributes(broker.queue_info(name)["attributes"]) == attrs
    by_queue: dict[str, list[Publish]] = {}
    for m in expected_messages():
        by_queue.setdefault(m.queue, []).append(m)
    for queue, msgs in by_queue.items():
        answer = json.loads(broker.receive(queue, 1, 1000, 0))
        ready = [m for m in msgs if not m.delay_end_ms]
        assert answer["messages"] == [
            {"id": m.msg_id, "body": m.body.decode(), "receives": m.receives + 1} for m in ready
        ]
        delayed = broker.queue_info(queue)["counts"]["delayed"]
        assert delayed == len(msgs) - len(ready)
    assert broker.next_id >= EXPECTED["next_id"]
    assert broker.publish("default", b"new", 0) >= EXPECTED["next_id"]


@pytest.mark.timeout(60)
def test_the_new_log_continues_and_compacts_an_old_directory(data_dir: Path) -> None:
    """Go on after an old segment (in a new one of the current version: the old one is left
    as its header says), compact both into a new snapshot, and read it all back."""
    core = pytest.importorskip("wonderq._core")
    wall = first_delay_end() - 60_000  # every delay still runs, none past the engine's cap
    old_segment = (data_dir / "wal-00000000000000000002.log").read_bytes()

    async def run() -> list[Publish]:
        broker: Any = core.Broker()
        log = Wal(data_dir, fsync="always", wall_ms=lambda: wall)
        with log.recover() as state:
            state.load_into(broker, 0, wall)
        await log.start(BrokerSnapshotSource(broker, lambda: 0, lambda: wall))
        new_id = broker.publish("jobs", b"new", 0)
        log.append_publish(new_id, "jobs", b"new")
        await log.commit()  # type: ignore[misc]
        # The old segment is as it was; the new record went to segment 3, of version 2.
        assert (data_dir / "wal-00000000000000000002.log").read_bytes() == old_segment
        seq, records, scan = read_file(data_dir / "wal-00000000000000000003.log")
        assert (seq, scan.reason) == (3, "") and Publish(new_id, "jobs", b"new") in records
        head = (data_dir / "wal-00000000000000000003.log").read_bytes()[:16]
        assert FILE_HEADER.unpack(head)[1] == FORMAT_VERSION == 2
        with recover(data_dir) as state:  # the old segment and the new one, in order
            assert state.messages() == sorted(
                [*expected_messages(), Publish(new_id, "jobs", b"new")], key=lambda m: m.msg_id
            )
        await log.compact()
        await log.close()
        assert log.compactions == 1
        return [Publish(new_id, "jobs", b"new")]

    added = asyncio.run(run())
    with recover(data_dir) as state:
        assert state.report.snapshot == "snapshot-00000000000000000004.snap"
        assert {q: v1_attributes(a) for q, a in state.queues.items()} == EXPECTED["queues"]
        # The snapshot (format 2) holds every message's sent time: the engine's, which for
        # a message of a format 1 log is the time it was recovered.
        messages = state.messages()
        assert {m.sent_ms for m in messages} == {wall}
        assert [m._replace(sent_ms=0) for m in messages] == sorted(
            expected_messages() + added, key=lambda m: m.msg_id
        )
