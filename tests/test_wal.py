"""The write-ahead log's format and writer: record encoding, group commit, the fsync modes,
I/O errors (wonderq/wal/). Recovery and compaction are in test_wal_recovery.py."""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wonderq.wal import (
    Chunk,
    DeadLetter,
    Delete,
    End,
    FirstReceives,
    NextId,
    Publish,
    Purge,
    QueueDelete,
    QueuePut,
    Receive,
    Wal,
    WalError,
    decode_payload,
    encode_frame,
    read_file,
    recover,
)
from wonderq.wal.files import PREALLOC_BYTES, segment_name
from wonderq.wal.format import FRAME_HEADER, FRAME_HEADER_SIZE
from wonderq.wal.log import ID_RESERVE_BLOCK

# ---- encoding round trip ------------------------------------------------------------------

names = st.text(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", min_size=1, max_size=80
)
ids = st.integers(1, 2**63 - 1)
u64 = st.integers(0, 2**64 - 1)
attr_values = st.one_of(st.none(), st.integers(0, 2**53), names)
records = st.one_of(
    st.builds(
        QueuePut, names, st.dictionaries(st.text(min_size=1, max_size=20), attr_values, max_size=5)
    ),
    st.builds(QueueDelete, names),
    st.builds(Purge, names),
    st.builds(
        Publish,
        ids,
        names,
        st.binary(max_size=300),
        st.integers(0, 2**63 - 1),
        st.integers(0, 2**32 - 1),
        # format 2: sent and first receive times, the attribute blob (each often absent)
        st.one_of(st.just(0), st.integers(0, 2**63 - 1)),
        st.one_of(st.just(0), st.integers(0, 2**63 - 1)),
        st.one_of(st.none(), st.binary(max_size=100)),
    ),
    st.builds(Receive, st.lists(ids, max_size=20).map(tuple)),
    st.builds(DeadLetter, st.lists(ids, max_size=20).map(tuple), names),
    st.builds(Delete, st.lists(ids, max_size=20).map(tuple)),
    st.builds(NextId, u64),
    st.builds(Chunk, u64),
    st.builds(End, u64),
    st.lists(st.tuples(ids, u64), max_size=20).map(
        lambda pairs: FirstReceives(tuple(i for i, _ in pairs), tuple(t for _, t in pairs))
    ),
)


@pytest.mark.timeout(60)
@settings(max_examples=150, deadline=None)
@given(st.lists(records, min_size=1, max_size=30))
def test_every_record_type_round_trips(recs: list[Any]) -> None:
    frame = encode_frame(recs)
    length, crc = FRAME_HEADER.unpack_from(frame, 0)
    payload = frame[FRAME_HEADER_SIZE:]
    assert length == len(payload)
    assert crc == zlib.crc32(payload)
    assert decode_payload(payload) == recs


@pytest.mark.timeout(10)
def test_a_frame_that_does_not_decode_is_an_error() -> None:
    with pytest.raises(ValueError):
        decode_payload(b"\xff")
    good = encode_frame([Delete((1, 2, 3))])[FRAME_HEADER_SIZE:]
    with pytest.raises((ValueError, Exception)):
        decode_payload(good[:-3])


# ---- helpers ------------------------------------------------------------------------------------


class Syscalls:
    """Counts (and can break) the writer's pwritev and fdatasync. Writes of the zeros the
    log writes ahead of its frames (files.LogFile._grow) are counted apart, in ``grows``,
    and broken only by ``grow_error``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.writes = 0
        self.grows = 0
        self.grow_error: Callable[[], OSError | None] = lambda: None
        self.fsyncs = 0
        self.write_error: Callable[[], OSError | None] = lambda: None
        self.fsync_error: Callable[[], OSError | None] = lambda: None
        self.fsync_gate: threading.Event | None = None
        self.partial: int | None = None  # write only this many bytes before failing
        real_pwritev = os.pwritev
        real_fdatasync = os.fdatasync

        def pwritev(fd: int, bufs: list[Any], offset: int) -> int:
            if all(bytes(b).count(0) == len(b) for b in bufs):
                self.grows += 1
                err = self.grow_error()
                if err is not None:
                    raise err
                return real_pwritev(fd, bufs, offset)
            self.writes += 1
            if self.partial is not None:
                data = b"".join(bytes(b) for b in bufs)[: self.partial]
                self.partial = None
                os.pwrite(fd, data, offset)
                raise OSError(errno.ENOSPC, "No space left on device (test)")
            err = self.write_error()
            if err is not None:
                raise err
            return real_pwritev(fd, bufs, offset)

        def fdatasync(fd: int) -> None:
            self.fsyncs += 1
            if self.fsync_gate is not None:
                self.fsync_gate.wait(10)
            err = self.fsync_error()
            if err is not None:
                raise err
            real_fdatasync(fd)

        monkeypatch.setattr(os, "pwritev", pwritev)
        monkeypatch.setattr(os, "fdatasync", fdatasync)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 20))


async def started(path: Any, **kw: Any) -> Wal:
    w = Wal(path, **kw)
    w.recover().close()
    await w.start()
    return w


def log_records(path: Any) -> list[Any]:
    out: list[Any] = []
    for name in sorted(os.listdir(path)):
        if name.endswith(".log"):
            _, recs, scan = read_file(os.path.join(path, name))
            assert scan.reason == "", (name, scan)
            out.extend(recs)
    return out


def published(path: Any) -> list[int]:
    return [r.msg_id for r in log_records(path) if isinstance(r, Publish)]


@pytest.mark.timeout(20)
def test_queues_created_used_and_deleted_leave_nothing_behind(tmp_path: Any) -> None:
    """The log encodes a queue's name once and keeps it while the queue lives: a server that
    makes and drops queues with ever new names (temporary queues) must not keep them all.
    bench/soak.py on the durable store grew 10% in 3 minutes before this was so."""

    async def main() -> None:
        w = await started(tmp_path, fsync="always")
        w.append_queue_put("kept", {})
        w.append_publish(1, "kept", b"k")
        for i in range(2, 202):
            name = f"tmp-{i}"
            w.append_queue_put(name, {})
            w.append_publish(i, name, b"x")
            w.append_dead_letter(i, "kept")
            w.append_queue_delete(name)
            if i % 50 == 0:
                await w.commit()
        await w.commit()
        assert set(w._names) == {"kept"}
        await w.close()

    run(main())
    records = log_records(tmp_path)
    assert [r.msg_id for r in records if isinstance(r, Publish)] == list(range(1, 202))
    assert [r.name for r in records if isinstance(r, QueueDelete)] == [
        f"tmp-{i}" for i in range(2, 202)
    ]
    assert all(r.queue == "kept" for r in records if isinstance(r, DeadLetter))


# ---- group commit -------------------------------------------------------------------------------


@pytest.mark.timeout(20)
def test_one_turn_of_publishes_and_deletes_is_one_write_one_fsync(
    tmp_path: Any, monkeypatch: Any
) -> None:
    async def main() -> None:
        w = await started(tmp_path, fsync="always")
        sc = Syscalls(monkeypatch)
        futures = []
        for i in range(1, 201):
            w.append_publish(i, "default", b"body %d" % i)
            futures.append(w.commit())
            if i % 3 == 0:
                w.append_delete(i - 1)
                futures.append(w.commit())
        assert len({id(f) for f in futures}) == 1
        assert not futures[0].done()
        await asyncio.gather(*futures)
        assert (sc.writes, sc.fsyncs) == (1, 1)
        await w.close()

    run(main())
    assert published(tmp_path) == list(range(1, 201))


@pytest.mark.timeout(20)
def test_the_segment_grows_by_zeros_written_ahead_and_recovery_cuts_them(
    tmp_path: Any, monkeypatch: Any
) -> None:
    seg = tmp_path / segment_name(1)
    body = b"b" * 1000

    async def main() -> None:
        w = await started(tmp_path, fsync="always")
        sc = Syscalls(monkeypatch)
        for i in range(1, 1501):  # about 1.5 MB of frames: two chunks of zeros
            w.append_publish(i, "default", body)
            if i % 100 == 0:
                await w.commit()
        assert sc.grows == 2 and sc.writes == 15
        assert os.path.getsize(seg) == 2 * PREALLOC_BYTES
        # A crash now leaves the zeros on disk: recovery reads every frame and cuts them,
        # with nothing reported dropped.
        crash = tmp_path.parent / (tmp_path.name + "-crash")
        shutil.copytree(tmp_path, crash)
        with recover(crash) as state:
            assert [m.msg_id for m in state.messages()] == list(range(1, 1501))
            assert state.report.dropped_bytes == 0 and not state.report.dropped_reason
        assert os.path.getsize(crash / segment_name(1)) == w.metrics()["wonderq_wal_bytes"]
        await w.close()

    run(main())
    assert published(tmp_path) == list(range(1, 1501))


@pytest.mark.timeout(20)
def test_a_failed_grow_writes_the_frames_as_a_plain_append(tmp_path: Any, monkeypatch: Any) -> None:
    async def main() -> None:
        w = await started(tmp_path, fsync="always")
        sc = Syscalls(monkeypatch)
        sc.grow_error = lambda: OSError(errno.ENOSPC, "No space left on device (test)")
        w.append_publish(1, "default", b"one")
        await w.commit()  # answered: the frame went out without the zeros ahead
        assert (sc.grows, sc.writes, sc.fsyncs) == (1, 1, 1)
        size = os.path.getsize(tmp_path / segment_name(1))
        assert size == w.metrics()["wonderq_wal_bytes"] < PREALLOC_BYTES
        sc.grow_error = lambda: None
        w.append_publish(2, "default", b"two")
        await w.commit()
        assert sc.grows == 2 and os.path.getsize(tmp_path / segment_name(1)) == PREALLOC_BYTES
        await w.close()

    run(main())
    assert published(tmp_path) == [1, 2]


@pytest.mark.timeout(20)
def test_fsync_never_appends_without_zeros(tmp_path: Any, monkeypatch: Any) -> None:
    async def main() -> None:
        w = await started(tmp_path, fsync="never")
        sc = Syscalls(monkeypatch)
        for i in range(1, 51):
            w.append_publish(i, "default", b"x" * 100)
            w.flush()
            await asyncio.sleep(0)
        await w.sync()
        assert sc.grows == 0 and sc.writes >= 1 and sc.fsyncs == 1
        assert os.path.getsize(tmp_path / segment_name(1)) == w.metrics()["wonderq_wal_bytes"]
        await w.close()

    run(main())
    assert published(tmp_path) == list(range(1, 51))


@pytest.mark.timeout(20)
def test_records_appended_during_a_write_go_out_in_the_next(
    tmp_path: Any, monkeypatch: Any
) -> None:
    async def main() -> None:
        w = await started(tmp_path, fsync="always")
        sc = Syscalls(monkeypatch)
        sc.fsync_gate = threading.Event()
        w.append_publish(1, "default", b"first")
        first = w.commit()
        await asyncio.sleep(0.05)  # the write of turn 1 is now blocked in fsync
        later = []
        for turn in range(5):  # five more turns while it is in flight
            w.append_publish(2 + turn, "default", b"later")
            later.append(w.commit())
            await asyncio.sleep(0.01)
        assert not first.done() and len({id(f) for f in later}) == 1
        sc.fsync_gate.set()
        await first
        await later[0]
        assert (sc.writes, sc.fsyncs) == (2, 2)
        await w.close()

    run(main())
    assert published(tmp_path) == [1, 2, 3, 4, 5, 6]


@pytest.mark.timeout(20)
def test_receives_alone_are_written_but_never_waited_for(tmp_path: Any, monkeypatch: Any) -> None:
    async def main() -> None:
        w = await started(tmp_path, fsync="always")
        w.append_publish(1, "default", b"x")
        await w.commit()
        sc = Syscalls(monkeypatch)
        w.append_receive([1])
        assert w.flush() is None
        await asyncio.sleep(0.05)
        assert (sc.writes, sc.fsyncs) == (1, 0)
        await w.close()

    run(main())
    assert Receive((1,)) in log_records(tmp_path)


# ---- fsync modes --------------------------------------------------------------------------------


@pytest.mark.timeout(20)
def test_always_answers_only_after_the_fsync(tmp_path: Any, monkeypatch: Any) -> None:
    async def main() -> None:
        w = await started(tmp_path, fsync="always")
        sc = Syscalls(monkeypatch)
        sc.fsync_gate = threading.Event()
        w.append_publish(1, "default", b"x")
        fut = w.commit()
        assert fut is not None
        await asyncio.sleep(0.1)
        assert sc.writes == 1 and not fut.done()  # written, fsync still running
        sc.fsync_gate.set()
        await fut
        assert sc.fsyncs == 1
        await w.close()

    run(main())


@pytest.mark.timeout(20)
def test_everysec_writes_at_once_and_fsyncs_in_the_background(
    tmp_path: Any, monkeypatch: Any
) -> None:
    async def main() -> None:
        w = await started(tmp_path, fsync="everysec", tick_s=0.2)
        sc = Syscalls(monkeypatch)
        w._last_sync = time.monotonic()  # the start just counted as a sync
        for i in range(1, 4):
            w.append_publish(i, "default", b"x")
            assert w.commit() is None  # answers do not wait
            await asyncio.sleep(0.01)
        assert sc.writes >= 1 and sc.fsyncs == 0
        assert published(tmp_path) == [1, 2, 3]  # in the file already, before any fsync
        await asyncio.sleep(0.5)
        assert sc.fsyncs >= 1
        assert w.metrics()["wonderq_wal_fsyncs_total"] >= 1
        fsyncs = sc.fsyncs
        await asyncio.sleep(0.5)  # nothing new: no fsync
        assert sc.fsyncs == fsyncs
        await w.close()

    run(main())


@pytest.mark.timeout(20)
def test_never_writes_and_leaves_the_flushing_to_the_os(tmp_path: Any, monkeypatch: Any) -> None:
    async def main() -> None:
        w = await started(tmp_path, fsync="never", tick_s=0.05)
        sc = Syscalls(monkeypatch)
        for i in range(1, 4):
            w.append_publish(i, "default", b"x")
            assert w.commit() is None
            await asyncio.sleep(0.1)
        assert sc.writes >= 3 and sc.fsyncs == 0
        await w.close()  # close syncs, whatever the mode
        assert sc.fsyncs == 1

    run(main())
    assert published(tmp_path) == [1, 2, 3]


@pytest.mark.timeout(10)
def test_a_bad_fsync_mode_is_refused(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="fsync"):
        Wal(tmp_path, fsync="sometimes")


# ---- disk full and I/O errors -------------------------------------------------------------------


@pytest.mark.timeout(20)
def test_disk_full_fails_the_answers_then_the_log_recovers(tmp_path: Any, monkeypatch: Any) -> None:
    async def main() -> None:
        w = await started(tmp_path, fsync="always", tick_s=0.05)
        w.append_publish(1, "default", b"before")
        await w.commit()
        sc = Syscalls(monkeypatch)
        full = True
        sc.write_error = lambda: OSError(errno.ENOSPC, "No space left on device") if full else None
        w.append_publish(2, "default", b"during")
        fut = w.commit()
        with pytest.raises(WalError) as err:
            await fut
        assert err.value.status == 507 and err.value.code == "storage_error"
        assert "No space left" in str(err.value)
        with pytest.raises(WalError):
            w.check_writable()
        assert w.metrics()["wonderq_wal_failed"] == 1
        assert w.metrics()["wonderq_wal_write_failures_total"] == 1
        # Deletes are still attempted (and fail while the disk is full).
        w.append_delete(1)
        with pytest.raises(WalError):
            await w.commit()
        full = False
        await asyncio.sleep(0.3)  # the tick retries by itself
        w.check_writable()
        w.append_publish(3, "default", b"after")
        await w.commit()
        assert w.metrics()["wonderq_wal_failed"] == 0
        await w.close()

    run(main())
    # What failed was retried in order once the disk had room: the log matches memory.
    recs = log_records(tmp_path)
    assert [r.msg_id for r in recs if isinstance(r, Publish)] == [1, 2, 3]
    assert Delete((1,)) in recs


@pytest.mark.timeout(20)
def test_a_torn_partial_write_is_cut_off_before_the_retry(tmp_path: Any, monkeypatch: Any) -> None:
    async def main() -> None:
        w = await started(tmp_path, fsync="always")
        w.append_publish(1, "default", b"a" * 100)
        await w.commit()
        sc = Syscalls(monkeypatch)
        sc.partial = 37  # half a frame reaches the disk, then ENOSPC
        w.append_publish(2, "default", b"b" * 100)
        with pytest.raises(WalError):
            await w.commit()
        w.append_publish(3, "default", b"c" * 100)
        await w.commit()
        await w.close()

    run(main())
    assert published(tmp_path) == [1, 2, 3]  # log_records asserts no torn frame anywhere


@pytest.mark.timeout(20)
def test_a_failed_fsync_rewrites_what_it_may_have_lost(tmp_path: Any, monkeypatch: Any) -> None:
    async def main() -> None:
        w = await started(tmp_path, fsync="always")
        sc = Syscalls(monkeypatch)
        failures = [OSError(errno.EIO, "Input/output error")]
        sc.fsync_error = lambda: failures.pop() if failures else None
        w.append_publish(1, "default", b"x")
        with pytest.raises(WalError, match="Input/output"):
            await w.commit()
        assert w.metrics()["wonderq_wal_fsync_failures_total"] == 1
        w.append_publish(2, "default", b"y")
        await w.commit()
        writes = sc.writes
        await w.close()
        assert writes == 2

    run(main())
    assert published(tmp_path) == [1, 2]


# ---- the rest of the API ------------------------------------------------------------------------


@pytest.mark.timeout(20)
def test_appends_reach_the_file_in_an_order_that_replays_the_same(tmp_path: Any) -> None:
    async def main() -> None:
        w = await started(tmp_path, fsync="never", wall_ms=lambda: 1_000_000)
        w.append_queue_put("jobs", {"visibility_timeout_ms": 5000})
        w.append_publish(1, "jobs", b"one", delay_ms=250)
        w.append_publish_batch(2, "default", [b"two", b"three"])
        w.append_receive([2, 3])
        w.append_dead_letter(2, "jobs")
        w.append_delete(3)
        w.append_delete_many([])
        w.flush()
        w.append_purge("default")
        w.append_queue_delete("jobs")
        w.append_publish(4, "default", b"four")
        await w.sync()
        await w.close()

    run(main())
    recs = [r for r in log_records(tmp_path) if not isinstance(r, NextId)]
    assert recs == [
        QueuePut("jobs", {"visibility_timeout_ms": 5000}),
        Publish(1, "jobs", b"one", 1_000_250, 0),
        Publish(2, "default", b"two"),
        Publish(3, "default", b"three"),
        Receive((2, 3)),
        DeadLetter((2,), "jobs"),
        Delete((3,)),
        Purge("default"),
        QueueDelete("jobs"),
        Publish(4, "default", b"four"),
    ]


@pytest.mark.timeout(20)
def test_ids_are_reserved_ahead_so_a_lost_tail_never_reissues_them(tmp_path: Any) -> None:
    async def main() -> None:
        w = await started(tmp_path, fsync="always")
        w.append_publish(5, "default", b"x")
        await w.commit()
        await w.close()

    run(main())
    with recover(tmp_path) as state:
        assert state.next_id == 5 + ID_RESERVE_BLOCK


@pytest.mark.timeout(20)
def test_metrics_are_exposed_in_prometheus_text(tmp_path: Any) -> None:
    async def main() -> str:
        w = await started(tmp_path, fsync="always")
        w.append_publish(1, "default", b"x")
        await w.commit()
        text = w.render_metrics()
        m = w.metrics()
        assert m["wonderq_wal_segments"] == 1
        assert m["wonderq_wal_fsyncs_total"] >= 1
        assert m["wonderq_wal_last_fsync_seconds"] >= 0
        assert m["wonderq_wal_fsync_seconds_total"] >= m["wonderq_wal_last_fsync_seconds"]
        # The segment holds zeros written ahead until it is closed; the figure counts frames.
        assert os.path.getsize(tmp_path / segment_name(1)) >= PREALLOC_BYTES
        await w.close()
        assert m["wonderq_wal_bytes"] == os.path.getsize(tmp_path / segment_name(1))
        return text

    text = run(main())
    for name in (
        "wonderq_wal_bytes",
        "wonderq_wal_segments",
        "wonderq_wal_compactions_total",
        "wonderq_wal_last_fsync_seconds",
        "wonderq_wal_fsync_failures_total",
    ):
        assert f"\n{name} " in "\n" + text
    assert "# TYPE wonderq_wal_compactions_total counter" in text
