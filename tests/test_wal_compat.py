"""The log reads what earlier versions wrote: data directories written by real servers of
earlier commits, each with the state that server's own recovery found in ``expected.json``
(how they were made: tests/data/README.md):

- ``tests/data/wal-v1/``: commit 6832194 (the single-module ``wonderq/wal.py``);
- ``tests/data/wal-v1-main/``: commit 1e75173, the code just before log format 2.

Both are format version 1. A change that alters how recovery reads it (a section, a flag, the
snapshot's chunk positions, the id reserve) fails here, whatever the round-trip tests of the
new code say.
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

DATA = Path(__file__).parent / "data"


class Old:
    """One fixture directory and the state its writer recovered from it."""

    def __init__(self, name: str) -> None:
        self.path = DATA / name
        self.expected = json.loads((self.path / "expected.json").read_text())

    def messages(self) -> list[Publish]:
        return [
            Publish(m["id"], m["queue"], m["body"].encode(), m["delay_end_ms"], m["receives"])
            for m in self.expected["messages"]
        ]

    def first_delay_end(self) -> int:
        return min(m.delay_end_ms for m in self.messages() if m.delay_end_ms)


@pytest.fixture(params=["wal-v1", "wal-v1-main"])
def old(request: pytest.FixtureRequest) -> Old:
    return Old(request.param)


@pytest.fixture
def data_dir(tmp_path: Path, old: Old) -> Path:
    """A copy of the fixture: recovery may repair files, and the fixture must stay as made."""
    d = tmp_path / "data"
    d.mkdir()
    for name in old.expected["files"]:
        shutil.copy(old.path / name, d / name)
    return d


def test_the_fixture_is_what_its_readme_says(old: Old) -> None:
    # A snapshot and the segment after it; small enough to read in a review.
    assert old.expected["files"] == [
        "snapshot-00000000000000000002.snap",
        "wal-00000000000000000002.log",
    ]
    assert sum((old.path / n).stat().st_size for n in old.expected["files"]) < 16 * 1024


@pytest.mark.timeout(30)
def test_recovers_the_exact_state_an_old_server_wrote(data_dir: Path, old: Old) -> None:
    before = {n: (data_dir / n).read_bytes() for n in old.expected["files"]}
    with recover(data_dir) as state:
        assert state.queues == old.expected["queues"]
        assert state.messages() == old.messages()
        assert state.next_id == old.expected["next_id"]
        assert state.report.snapshot == "snapshot-00000000000000000002.snap"
        assert state.report.segments == ["wal-00000000000000000002.log"]
        assert state.report.dropped_bytes == 0 and not state.report.set_aside
    # A clean directory is read, not repaired.
    assert {n: (data_dir / n).read_bytes() for n in sorted(before)} == before


def test_the_state_holds_every_kind_of_record(old: Old) -> None:
    """The fixture exercises what it should: if a regeneration lost a case, say so here."""
    msgs = {m.body: m for m in old.messages()}
    queues = old.expected["queues"]
    assert queues["jobs"]["dead_letter_queue"] == "jobs-dlq"  # attributes, updated after
    assert queues["jobs"]["visibility_timeout_ms"] == 90_000  # the snapshot
    assert queues["doomed"]["visibility_timeout_ms"] == 5000  # deleted, then created again
    assert b"x1" not in msgs and b"j2" not in msgs  # queue deletion, purge
    assert msgs[b"j1"].queue == "jobs-dlq" and msgs[b"j1"].receives == 1  # moved in snapshot
    assert msgs[b"j3"].queue == "jobs-dlq" and msgs[b"j3"].receives == 0  # moved in segment
    assert msgs[b"beta"].receives == 1 and msgs[b"d2"].receives == 1  # leased at shutdown
    assert b"alpha" not in msgs and b"d1" not in msgs  # acked, one by one and in a batch
    assert all(msgs[b].delay_end_ms > 0 for b in (b"s1", b"s2", b"later", b"later too"))
    assert max(msgs[b].msg_id for b in msgs) < old.expected["next_id"]
    seq, records, scan = read_file(old.path / "snapshot-00000000000000000002.snap")
    assert (seq, scan.reason) == (2, "")
    assert any(type(r).__name__ == "Chunk" for r in records)


def v1_attributes(old: Old, attributes: dict[str, Any]) -> dict[str, Any]:
    """The attributes format 1 knew; those added since must be at their defaults (None)."""
    known = next(iter(old.expected["queues"].values())).keys()
    added = {k: v for k, v in attributes.items() if k not in known}
    assert all(v is None for v in added.values()), added
    return {k: v for k, v in attributes.items() if k in known}


@pytest.mark.timeout(30)
def test_the_real_engine_serves_the_old_messages(data_dir: Path, old: Old) -> None:
    core = pytest.importorskip("wonderq._core")
    broker = core.Broker()
    wall = old.first_delay_end() - 60_000  # a minute before the first delay ends
    with recover(data_dir) as state:
        assert state.load_into(broker, 0, wall) == len(old.expected["messages"])
    broker.check_invariants()
    assert broker.queue_names() == sorted(old.expected["queues"])
    for name, attrs in old.expected["queues"].items():
        assert v1_attributes(old, broker.queue_info(name)["attributes"]) == attrs
    by_queue: dict[str, list[Publish]] = {}
    for m in old.messages():
        by_queue.setdefault(m.queue, []).append(m)
    for queue, msgs in by_queue.items():
        answer = json.loads(broker.receive(queue, 1, 1000, 0))
        ready = [m for m in msgs if not m.delay_end_ms]
        assert answer["messages"] == [
            {"id": m.msg_id, "body": m.body.decode(), "receives": m.receives + 1} for m in ready
        ]
        delayed = broker.queue_info(queue)["counts"]["delayed"]
        assert delayed == len(msgs) - len(ready)
    assert broker.next_id >= old.expected["next_id"]
    assert broker.publish("default", b"new", 0) >= old.expected["next_id"]


@pytest.mark.timeout(60)
def test_the_new_log_continues_and_compacts_an_old_directory(data_dir: Path, old: Old) -> None:
    """Go on after an old segment (in a new one of the current version: the old one is left
    as its header says), compact both into a new snapshot, and read it all back."""
    core = pytest.importorskip("wonderq._core")
    wall = old.first_delay_end() - 60_000  # every delay still runs, none past the engine's cap
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
                [*old.messages(), Publish(new_id, "jobs", b"new")], key=lambda m: m.msg_id
            )
        await log.compact()
        await log.close()
        assert log.compactions == 1
        return [Publish(new_id, "jobs", b"new")]

    added = asyncio.run(run())
    with recover(data_dir) as state:
        assert state.report.snapshot == "snapshot-00000000000000000004.snap"
        assert {q: v1_attributes(old, a) for q, a in state.queues.items()} == old.expected["queues"]
        # The snapshot (format 2) holds every message's sent time: the engine's, which for
        # a message of a format 1 log is the time it was recovered.
        messages = state.messages()
        assert {m.sent_ms for m in messages} == {wall}
        assert [m._replace(sent_ms=0) for m in messages] == sorted(
            old.messages() + added, key=lambda m: m.msg_id
        )


@pytest.mark.timeout(90)
def test_a_server_goes_on_from_an_old_directory_with_sqs_messages(data_dir: Path, old: Old) -> None:
    """The real server on the format 1 directory: it serves the old messages, logs an SQS
    send with attributes in a new segment of format 2, and after a restart (reading both
    segments) answers the old messages and the new one with its attributes."""
    from _server import running_server
    from _sqs import client, reference_md5

    attributes = {"kind": {"DataType": "String", "StringValue": "resize"}}
    old_segment = (data_dir / "wal-00000000000000000002.log").read_bytes()
    flags = ("--data-dir", str(data_dir), "--fsync", "always")
    with running_server(*flags) as server:
        sqs = client(server.url)
        url = sqs.get_queue_url(QueueName="jobs")["QueueUrl"]
        sent = sqs.send_message(QueueUrl=url, MessageBody="new", MessageAttributes=attributes)
    assert (data_dir / "wal-00000000000000000002.log").read_bytes() == old_segment
    head = (data_dir / "wal-00000000000000000003.log").read_bytes()[:16]
    assert FILE_HEADER.unpack(head)[1] == FORMAT_VERSION
    with running_server(*flags) as server:
        sqs = client(server.url)
        url = sqs.get_queue_url(QueueName="jobs")["QueueUrl"]
        got = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["SentTimestamp"],
        )["Messages"]
    by_body = {m["Body"]: m for m in got}
    old = {m.body.decode() for m in old.messages() if m.queue == "jobs"}
    assert set(by_body) == old | {"new"}
    assert by_body["new"]["MessageId"] == sent["MessageId"]
    assert by_body["new"]["MessageAttributes"] == attributes
    assert by_body["new"]["MD5OfMessageAttributes"] == reference_md5(attributes)
    assert all("MessageAttributes" not in by_body[b] for b in old)  # format 1 had none
