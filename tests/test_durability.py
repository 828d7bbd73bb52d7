"""Durability as users meet it: ``wonderq serve --data-dir`` killed with SIGKILL (by its PID)
under load and restarted on the same directory; damaged log files; compaction interrupted by a
kill; a restart that must bring back queues, attributes, delays and receive counts; a data
directory the server cannot use; and, in-process, the 507 answers of a log that cannot write.

The crash tests keep a ledger of what clients were told and what they tried, and check after
every restart: an answered publish is there with its body unless a delete of it was attempted;
an answered delete never comes back; nothing is there that nobody sent; new ids are above every
id ever seen. Kill points are random: the seed is printed (``WONDERQ_TEST_SEED`` replays it).
"""

from __future__ import annotations

import asyncio
import errno
import http.client
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _server import ServerProcess, server_command
from conftest import RawConnection, http_request
from prometheus_client.parser import text_string_to_metric_families

SEED = int(os.environ.get("WONDERQ_TEST_SEED", random.randrange(2**32)))
CHECKER_CID = 999_999  # the cid the checks drain with (load consumers use 1 and 2)
SEGMENT_1 = "wal-00000000000000000001.log"


@pytest.fixture(autouse=True)
def _print_seed() -> None:
    print(f"WONDERQ_TEST_SEED={SEED}")


def start(data: Path, *flags: str) -> ServerProcess:
    return ServerProcess("--data-dir", str(data), *flags).start()


def kill9(srv: ServerProcess) -> None:
    """SIGKILL to this server's PID, and reap it."""
    srv.signal(signal.SIGKILL)
    srv.wait(10)
    srv.stop()


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    """Servers a test started (append them): each stopped by its PID at the end."""
    started: list[ServerProcess] = []
    yield started
    for srv in started:
        srv.stop()


# ---- a client and the ledger of what it knows --------------------------------------------------


class Client:
    """One keep-alive connection; ``call`` returns (status, JSON) or raises one of GONE."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def call(self, method: str, path: str, body: bytes | str | None = None) -> tuple[int, Any]:
        if isinstance(body, str):
            body = body.encode()
        self.conn.request(method, path, body=body)
        resp = self.conn.getresponse()
        data = resp.read()
        return resp.status, (json.loads(data) if data else None)

    def close(self) -> None:
        self.conn.close()


def call(srv: ServerProcess, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One request on a connection of its own; a dict or list body is sent as JSON."""
    if isinstance(body, dict | list):
        body = json.dumps(body)
    client = Client(srv.port)
    try:
        return client.call(method, path, body)
    finally:
        client.close()


GONE = (OSError, http.client.HTTPException)  # what a killed server looks like to a client


class Ledger:
    """What the clients were told, and what they tried, over every run of the server."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent: set[str] = set()  # every body sent in a publish (bodies are unique)
        self.answered: dict[int, tuple[str, str]] = {}  # id -> (queue, body) of 201 answers
        self.delete_tried: set[int] = set()  # ids a delete or an ack was sent for
        self.deleted: set[int] = set()  # ids whose delete was answered true / "deleted"
        self.max_id = 0  # the highest id any answer showed
        self.publishes = 0  # publish requests answered
        self.deletes = 0  # delete requests answered

    def saw(self, ids: list[int]) -> None:
        with self.lock:
            self.max_id = max(self.max_id, *ids, 0)


@dataclass(frozen=True)
class Mix:
    """The shape of a load."""

    publishers: int = 4  # threads publishing
    consumers: int = 2  # threads receiving and deleting (cids 1, 2, ...)
    batch_share: float = 0.2  # publishes that are batches of 20
    limit: int = 10  # messages per receive
    delete_share: float = 0.8  # received messages deleted (the rest stay leased)
    ack_share: float = 0.5  # deletes by batch ack (the others one request per message)


def publish_load(
    port: int,
    ledger: Ledger,
    stop: threading.Event,
    tag: str,
    rng: random.Random,
    queue: str,
    mix: Mix,
) -> None:
    """Publish unique bodies until ``stop`` or the server is gone: single publishes and
    batches of 20."""
    client = Client(port)
    n = 0
    try:
        while not stop.is_set():
            n += 1
            if rng.random() < mix.batch_share:
                bodies = [f"{tag}-{n}-{i}-{'x' * rng.randrange(1, 200)}" for i in range(20)]
                with ledger.lock:
                    ledger.sent.update(bodies)
                status, doc = client.call("POST", f"/v1/queues/{queue}/batch", json.dumps(bodies))
                assert status == 201, (status, doc)
                with ledger.lock:
                    ledger.publishes += 1
                    for msg_id, body in zip(doc["ids"], bodies, strict=True):
                        ledger.answered[msg_id] = (queue, body)
                ledger.saw(doc["ids"])
            else:
                body = f"{tag}-{n}-{'y' * rng.randrange(1, 300)}"
                with ledger.lock:
                    ledger.sent.add(body)
                path = "/v1/publish" if queue == "default" else f"/v1/queues/{queue}/messages"
                status, doc = client.call("POST", path, body)
                assert status == 201, (status, doc)
                with ledger.lock:
                    ledger.publishes += 1
                    ledger.answered[doc["id"]] = (queue, body)
                ledger.saw([doc["id"]])
    except GONE:
        pass
    finally:
        client.close()


def consume_load(
    port: int, ledger: Ledger, stop: threading.Event, cid: int, rng: random.Random, mix: Mix
) -> None:
    """Receive from ``default`` and delete most of what came, one by one or by a batch ack;
    the rest stay leased, so a restart must make them available again."""
    client = Client(port)
    query = f"cid={cid}&limit={mix.limit}&visibility=60"
    try:
        while not stop.is_set():
            status, doc = client.call("GET", f"/v1/consumer?{query}")
            assert status == 200, (status, doc)
            ids = [m["id"] for m in doc["messages"]]
            ledger.saw(ids)
            if not ids:
                time.sleep(0.005)
                continue
            chosen = [i for i in ids if rng.random() < mix.delete_share]
            if not chosen:
                continue
            with ledger.lock:
                ledger.delete_tried.update(chosen)
            if rng.random() < mix.ack_share:
                ack = json.dumps({"cid": cid, "ids": chosen})
                status, doc = client.call("POST", "/v1/queues/default/ack", ack)
                assert status == 200 and doc["failed"] == [], (status, doc)
                with ledger.lock:
                    ledger.deleted.update(doc["deleted"])
                    ledger.deletes += 1
            else:
                for msg_id in chosen:
                    status, doc = client.call("DELETE", f"/v1/consumer?cid={cid}&id={msg_id}")
                    assert (status, doc) == (200, True)
                    with ledger.lock:
                        ledger.deleted.add(msg_id)
                        ledger.deletes += 1
    except GONE:
        pass
    finally:
        client.close()


class Load:
    """Publisher and consumer threads against one server."""

    def __init__(
        self, srv: ServerProcess, ledger: Ledger, rng: random.Random, tag: str, mix: Mix = Mix()
    ) -> None:
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []  # an unexpected answer fails the test
        for i in range(mix.publishers):
            prng = random.Random(rng.randrange(2**32))
            tag_i = f"{tag}p{i}"
            self._spawn(publish_load, srv.port, ledger, self.stop, tag_i, prng, "default", mix)
        for cid in range(1, mix.consumers + 1):
            crng = random.Random(rng.randrange(2**32))
            self._spawn(consume_load, srv.port, ledger, self.stop, cid, crng, mix)

    def _spawn(self, fn: Callable[..., None], *args: Any) -> None:
        def body() -> None:
            try:
                fn(*args)
            except BaseException as exc:
                self.errors.append(exc)

        t = threading.Thread(target=body, daemon=True)
        self.threads.append(t)
        t.start()

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(20)
            assert not t.is_alive(), "a load thread hung"
        if self.errors:
            raise self.errors[0]


def drain(srv: ServerProcess, queue: str) -> dict[int, tuple[str, str, int]]:
    """Lease every available message of ``queue`` to the checker: id -> (queue, body,
    receives)."""
    client = Client(srv.port)
    found: dict[int, tuple[str, str, int]] = {}
    path = f"/v1/queues/{queue}/messages?cid={CHECKER_CID}&limit=1000&visibility=3600"
    try:
        while True:
            status, doc = client.call("GET", path)
            assert status == 200, (status, doc)
            if not doc["messages"]:
                return found
            for m in doc["messages"]:
                assert m["id"] not in found, f"message {m['id']} delivered twice in one drain"
                found[m["id"]] = (queue, m["body"], m["receives"])
    finally:
        client.close()


def verify(
    srv: ServerProcess,
    ledger: Ledger,
    rng: random.Random,
    queues: tuple[str, ...] = ("default",),
    ack_fraction: float = 0.5,
) -> dict[int, tuple[str, str, int]]:
    """The crash invariants, on a freshly restarted server (so nothing is leased). Then a
    probe publish (ids continue above every id seen), and the checker acks ``ack_fraction``
    of what it drained, so that later runs also delete recovered messages."""
    present: dict[int, tuple[str, str, int]] = {}
    for queue in queues:
        present.update(drain(srv, queue))
    bodies = [body for _, body, _ in present.values()]
    assert len(set(bodies)) == len(bodies), "a message is there twice"
    lost = sorted(i for i in ledger.answered if i not in ledger.delete_tried and i not in present)
    assert not lost, f"{len(lost)} answered publishes lost, e.g. {lost[:5]}"
    changed = [
        (i, present[i][:2], ledger.answered[i])
        for i in ledger.answered
        if i in present and present[i][:2] != ledger.answered[i]
    ]
    assert not changed, f"messages changed: {changed[:3]}"
    back = sorted(ledger.deleted & present.keys())
    assert not back, f"{len(back)} answered deletes came back, e.g. {back[:5]}"
    unknown = [i for i, (_, body, _) in present.items() if body not in ledger.sent]
    assert not unknown, f"messages nobody sent: {unknown[:5]}"
    probe = f"probe-{time.monotonic_ns()}"
    ledger.sent.add(probe)
    status, doc = call(srv, "POST", "/v1/publish", probe)
    assert status == 201
    assert doc["id"] > max(ledger.max_id, *present, 0), "an id was issued again"
    ledger.answered[doc["id"]] = ("default", probe)
    ledger.saw([doc["id"]])
    for queue in queues:
        ids = [i for i, (q, _, _) in present.items() if q == queue and rng.random() < ack_fraction]
        for k in range(0, len(ids), 1000):
            chunk = ids[k : k + 1000]
            ledger.delete_tried.update(chunk)
            status, doc = call(
                srv, "POST", f"/v1/queues/{queue}/ack", {"cid": CHECKER_CID, "ids": chunk}
            )
            assert status == 200 and doc["failed"] == [], (status, doc)
            ledger.deleted.update(doc["deleted"])
    return present


# ---- kill -9 under load ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_kill_9_under_publish_and_delete_load_loses_nothing_answered(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    data = tmp_path / "data"
    ledger = Ledger()
    kills = 4
    for run in range(kills + 1):
        srv = start(data, "--fsync", "always")
        try:
            if run:
                present = verify(srv, ledger, rng)
                print(f"run {run}: {len(present)} messages back; ledger: {len(ledger.answered)}")
            if run == kills:
                break
            publishes, deletes = ledger.publishes, ledger.deletes
            load = Load(srv, ledger, rng, f"r{run}")
            time.sleep(rng.uniform(0.4, 1.5))
            kill9(srv)  # mid-load: requests are in flight
            load.join()
            print(
                f"run {run}: {ledger.publishes - publishes} publishes and "
                f"{ledger.deletes - deletes} deletes answered before the kill"
            )
            assert ledger.publishes - publishes > 20, "the load did not get going"
            assert ledger.deletes - deletes > 5, "the load did not get going"
        finally:
            srv.stop()
    assert "recovered" in srv.output()


# ---- damaged files -----------------------------------------------------------------------------


def frame_offsets(path: Path) -> list[tuple[int, int]]:
    """(offset, length) of each complete frame of a log segment (16-byte file header, then
    frames of u32 length, u32 crc32, payload)."""
    data = path.read_bytes()
    pos, out = 16, []
    while pos + 8 <= len(data):
        (n,) = struct.unpack_from("<I", data, pos)
        if pos + 8 + n > len(data):
            break
        out.append((pos, 8 + n))
        pos += 8 + n
    return out


def write_log_of(data: Path, bodies: list[str]) -> list[tuple[int, int]]:
    """Publish ``bodies`` one request at a time with --fsync always (each answer waits for its
    own write, so each is in a frame of its own), stop gracefully; returns each body's
    (id, frame index)."""
    srv = start(data, "--fsync", "always")
    try:
        ids = [call(srv, "POST", "/v1/publish", b)[1]["id"] for b in bodies]
    finally:
        assert srv.stop() == 0
    raw = (data / SEGMENT_1).read_bytes()
    frames = frame_offsets(data / SEGMENT_1)
    where = []
    for msg_id, body in zip(ids, bodies, strict=True):
        at = raw.index(body.encode())
        where.append((msg_id, next(k for k, (o, n) in enumerate(frames) if o <= at < o + n)))
    assert [k for _, k in where] == sorted({k for _, k in where}), "one publish per frame"
    return where


def bodies_back(srv: ServerProcess) -> list[str]:
    return sorted(body for _, body, _ in drain(srv, "default").values())


@pytest.mark.timeout(60)
def test_a_torn_tail_is_cut_off_and_the_rest_recovered(tmp_path: Path) -> None:
    data = tmp_path / "data"
    bodies = [f"message {i:02d}" for i in range(20)]
    write_log_of(data, bodies)
    seg = data / SEGMENT_1
    offset, length = frame_offsets(seg)[-1]
    with open(seg, "r+b") as f:  # a crash in the middle of the last write
        f.truncate(offset + length // 2)
    srv = start(data)
    try:
        assert bodies_back(srv) == bodies[:-1]
        out = srv.output()
        assert "dropped" in out and f"{SEGMENT_1}:{offset}" in out, out
        assert seg.stat().st_size == offset
        # It carries on from there: a new publish survives the next restart.
        assert call(srv, "POST", "/v1/publish", "after the repair")[0] == 201
    finally:
        assert srv.stop() == 0
    srv = start(data)
    try:
        assert bodies_back(srv) == sorted([*bodies[:-1], "after the repair"])
        assert "dropped" not in srv.output()
    finally:
        srv.stop()


@pytest.mark.timeout(60)
def test_a_corrupt_record_in_the_middle_ends_the_log_there(tmp_path: Path) -> None:
    data = tmp_path / "data"
    bodies = [f"message {i:02d}" for i in range(20)]
    where = write_log_of(data, bodies)
    seg = data / SEGMENT_1
    frames = frame_offsets(seg)
    bad = where[10][1]  # the frame of message 10
    offset = frames[bad][0]
    raw = bytearray(seg.read_bytes())
    at = raw.index(b"message 10", offset)
    raw[at + 8] ^= 0x55  # a flipped byte inside the body: the frame's checksum fails
    seg.write_bytes(bytes(raw))
    srv = start(data)
    try:
        assert bodies_back(srv) == bodies[:10]
        out = srv.output()
        assert "dropped" in out and f"{SEGMENT_1}:{offset}" in out, out
        assert seg.stat().st_size == offset
        # The dropped bytes are kept for inspection.
        kept = data / f"{SEGMENT_1}.dropped-{offset}"
        assert kept.exists() and kept.stat().st_size == len(raw) - offset
    finally:
        srv.stop()


# ---- compaction --------------------------------------------------------------------------------


def compacting(data: Path) -> bool:
    """A compaction is under way: a snapshot being written, or the old segment not yet
    removed."""
    names = os.listdir(data)
    return (
        any(n.endswith(".snap.tmp") for n in names)
        or sum(n.startswith("wal-") and n.endswith(".log") for n in names) > 1
    )


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_kills_during_compaction_under_load_lose_nothing(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    data = tmp_path / "data"
    flags = ("--fsync", "always", "--compact-min-bytes", "65536")
    ledger = Ledger()
    queues = ("default", "bulk")
    # A queue nobody consumes keeps 1,000 messages that every snapshot must carry. The load
    # publishes in batches and consumes faster than it publishes, so the log soon holds twice
    # the live data and compactions follow one another (checked every second).
    mix = Mix(publishers=2, consumers=3, batch_share=0.5, limit=50, delete_share=1, ack_share=1)
    srv = start(data, *flags)
    try:
        assert call(srv, "PUT", "/v1/queues/bulk")[0] == 201
        for k in range(2):
            bodies = [f"bulk-{k}-{i}-{'z' * 50}" for i in range(500)]
            ledger.sent.update(bodies)
            status, doc = call(srv, "POST", "/v1/queues/bulk/batch", bodies)
            assert status == 201
            ledger.answered.update(
                (i, ("bulk", b)) for i, b in zip(doc["ids"], bodies, strict=True)
            )
            ledger.saw(doc["ids"])
    finally:
        kill9(srv)
    landed = attempts = 0
    while landed < 3 and attempts < 8:
        attempts += 1
        srv = start(data, *flags)
        try:
            verify(srv, ledger, rng, queues, ack_fraction=0.05)
            load = Load(srv, ledger, rng, f"c{attempts}", mix)
            deadline = time.monotonic() + 8
            while not compacting(data) and time.monotonic() < deadline:
                time.sleep(0.0005)
            time.sleep(rng.uniform(0, 0.004))
            kill9(srv)
            load.join()
        finally:
            srv.stop()
        # The crash image, kept for a post-mortem if a check fails.
        shutil.copytree(data, tmp_path / f"image-{attempts}")
        in_compaction = compacting(data)  # the files as the kill left them
        landed += in_compaction
        print(f"attempt {attempts}: killed {'during' if in_compaction else 'outside'} compaction")
    assert landed >= 1, "no kill landed during a compaction"
    # Last: compactions that complete under load, a graceful stop, and a restart.
    srv = start(data, *flags)
    try:
        verify(srv, ledger, rng, queues)
        load = Load(srv, ledger, rng, "final", mix)
        deadline = time.monotonic() + 20
        while wal_metric(srv, "wonderq_wal_compactions_total") < 2:
            assert time.monotonic() < deadline, "no compaction completed under load"
            time.sleep(0.05)
        load.join()
    finally:
        assert srv.stop() == 0
    srv = start(data, *flags)
    try:
        verify(srv, ledger, rng, queues)
        names = os.listdir(data)
        assert sum(n.endswith(".snap") for n in names) == 1, names
        log_bytes = sum((data / n).stat().st_size for n in names)
        assert log_bytes < 4 * 1024 * 1024, names  # bounded, not the whole history
    finally:
        srv.stop()


def wal_metric(srv: ServerProcess, name: str) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not in /metrics")


# ---- a restart brings everything back ------------------------------------------------------------


def queue_info(srv: ServerProcess, name: str) -> dict[str, Any]:
    status, doc = call(srv, "GET", f"/v1/queues/{name}")
    assert status == 200, (status, doc)
    return doc


def receive(srv: ServerProcess, queue: str, cid: int, limit: int = 10) -> list[dict[str, Any]]:
    status, doc = call(srv, "GET", f"/v1/queues/{queue}/messages?cid={cid}&limit={limit}")
    assert status == 200, (status, doc)
    return doc["messages"]


@pytest.mark.timeout(60)
def test_restart_restores_queues_attributes_delays_and_receive_counts(tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = start(data)  # --fsync everysec; a graceful stop writes everything
    try:
        for name, attrs in (
            ("dlq", {}),
            ("jobs", {"visibility_timeout": 7, "max_receives": 2, "dead_letter_queue": "dlq"}),
            ("short", {"visibility_timeout": 0.2, "max_receives": 1, "dead_letter_queue": "dlq"}),
            ("slow", {"delay": 60, "max_message_bytes": 1000}),
            ("gone", {}),
            ("purged", {}),
        ):
            assert call(srv, "PUT", f"/v1/queues/{name}", attrs)[0] == 201
        attributes = {
            q["name"]: q["attributes"] for q in call(srv, "GET", "/v1/queues")[1]["queues"]
        }
        a, b, c = call(srv, "POST", "/v1/queues/jobs/batch", ["a", "b", "c"])[1]["ids"]
        # a: received twice, released each time: the second release dead-letters it.
        for _ in range(2):
            assert [m["id"] for m in receive(srv, "jobs", 1, 1)] == [a]
            assert call(srv, "POST", f"/v1/queues/jobs/messages/{a}/lease?cid=1&timeout=0") == (
                200,
                True,
            )
        # b: received once and still leased at the restart; c: received and deleted.
        assert [m["id"] for m in receive(srv, "jobs", 2, 1)] == [b]
        assert [m["id"] for m in receive(srv, "jobs", 3, 1)] == [c]
        assert call(srv, "DELETE", f"/v1/queues/jobs/messages/{c}?cid=3") == (200, True)
        # e: its lease runs out and the expiry timer moves it to the dead-letter queue.
        e = call(srv, "POST", "/v1/queues/short/messages", "e")[1]["id"]
        assert [m["id"] for m in receive(srv, "short", 4)] == [e]
        deadline = time.monotonic() + 10
        while queue_info(srv, "dlq")["counts"]["ready"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert queue_info(srv, "dlq")["counts"]["ready"] == 2
        # Delays: one of the request, one of the queue.
        later_at = time.monotonic()
        later = call(srv, "POST", "/v1/publish?delay=3", "later")[1]["id"]
        slow = call(srv, "POST", "/v1/queues/slow/messages", "slow")[1]["id"]
        # A deleted queue and a purged one.
        call(srv, "POST", "/v1/queues/gone/messages", "x")
        assert call(srv, "DELETE", "/v1/queues/gone")[0] == 204
        call(srv, "POST", "/v1/queues/purged/messages", "y")
        assert call(srv, "POST", "/v1/queues/purged/purge") == (200, {"purged": 1})
    finally:
        assert srv.stop() == 0
    srv = start(data)
    try:
        queues = {q["name"]: q for q in call(srv, "GET", "/v1/queues")[1]["queues"]}
        assert sorted(queues) == ["default", "dlq", "jobs", "purged", "short", "slow"]
        assert {name: q["attributes"] for name, q in queues.items()} == {
            name: attrs for name, attrs in attributes.items() if name != "gone"
        }
        assert queues["purged"]["counts"] == {"ready": 0, "leased": 0, "delayed": 0}
        assert queues["slow"]["counts"] == {"ready": 0, "leased": 0, "delayed": 1}
        assert queues["default"]["counts"] == {"ready": 0, "leased": 0, "delayed": 1}
        # Receive counts: b was received once (its lease did not survive), a and e were reset
        # by the move to the dead-letter queue.
        assert [(m["id"], m["body"], m["receives"]) for m in receive(srv, "jobs", 5)] == [
            (b, "b", 2)
        ]
        assert [(m["id"], m["receives"]) for m in receive(srv, "dlq", 5)] == [(a, 1), (e, 1)]
        # The delay goes on from the wall clock: "later" shows up ~3 s after its publish.
        status, doc = call(srv, "GET", "/v1/consumer?cid=6&wait=10")
        waited = time.monotonic() - later_at
        assert status == 200 and [m["id"] for m in doc["messages"]] == [later]
        assert 2.5 <= waited <= 6, waited
        status, doc = call(srv, "POST", "/v1/publish", "new")
        assert doc["id"] > max(a, b, c, e, later, slow)
    finally:
        srv.stop()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["everysec", "never"])
def test_every_fsync_mode_keeps_messages_over_a_graceful_restart(tmp_path: Path, mode: str) -> None:
    data = tmp_path / "data"
    srv = start(data, "--fsync", mode)
    try:
        ids = [call(srv, "POST", "/v1/publish", f"m{i}")[1]["id"] for i in range(50)]
        for msg_id in ids[:10]:
            assert [m["id"] for m in receive(srv, "default", 1, 1)] == [msg_id]
            assert call(srv, "DELETE", f"/v1/consumer?cid=1&id={msg_id}") == (200, True)
        # The log's figures are in /metrics, in a text Prometheus' own parser reads.
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        for name, kind in (
            ("wonderq_wal_bytes", "gauge"),
            ("wonderq_wal_segments", "gauge"),
            ("wonderq_wal_compactions", "counter"),
            ("wonderq_wal_fsyncs", "counter"),
            ("wonderq_wal_fsync_seconds", "counter"),
            ("wonderq_wal_fsync_failures", "counter"),
            ("wonderq_wal_write_failures", "counter"),
            ("wonderq_wal_failed", "gauge"),
        ):
            assert families[name].type == kind, name
        assert families["wonderq_wal_bytes"].samples[0].value > 50 * 10
        assert families["wonderq_wal_failed"].samples[0].value == 0
    finally:
        assert srv.stop() == 0
    assert "the log is flushed and closed" in srv.output()
    srv = start(data, "--fsync", mode)
    try:
        assert sorted(drain(srv, "default")) == ids[10:]
    finally:
        srv.stop()


@pytest.mark.timeout(60)
def test_pipelined_answers_stay_in_order_with_fsync_always(tmp_path: Path) -> None:
    srv = start(tmp_path / "data", "--fsync", "always")
    try:
        with RawConnection(srv.port) as conn:
            reqs = [http_request("POST", "/v1/publish", f"p{i}".encode()) for i in range(10)]
            reqs.append(http_request("GET", "/v1/consumer?cid=1&limit=3"))
            reqs += [http_request("POST", "/v1/publish", f"q{i}".encode()) for i in range(5)]
            conn.send(b"".join(reqs))
            answers = [conn.read_response() for _ in reqs]
            ids = [r.json()["id"] for r in answers[:10]]  # type: ignore[index]
            assert ids == sorted(ids) and all(r.status == 201 for r in answers[:10])
            got = [m["id"] for m in answers[10].json()["messages"]]  # type: ignore[index]
            assert got == ids[:3]
            more = [r.json()["id"] for r in answers[11:]]  # type: ignore[index]
            assert more == sorted(more) and more[0] > ids[-1]
            # A delete waits for its fsync too, then the next request is answered.
            conn.send(
                http_request("DELETE", f"/v1/consumer?cid=1&id={ids[0]}")
                + http_request("DELETE", f"/v1/consumer?cid=1&id={ids[0]}")
            )
            assert [conn.read_response().body for _ in range(2)] == [b"true", b"false"]
    finally:
        srv.stop()


# ---- the in-memory server does not pay for the log ----------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("durable", [False, True], ids=["in-memory", "data-dir"])
def test_only_a_server_with_a_data_dir_imports_the_log(tmp_path: Path, durable: bool) -> None:
    """The server and the api import ``wonderq.wal`` lazily, only with --data-dir. Python's own
    import log (PYTHONPROFILEIMPORTTIME, on stderr) of a real server that served a publish, a
    receive and a delete says which modules it loaded; with --data-dir the same log lists the
    package, which shows the check sees it."""
    flags = ["--data-dir", str(tmp_path / "data")] if durable else []
    srv = ServerProcess(*flags, env={"PYTHONPROFILEIMPORTTIME": "1"}).start()
    try:
        msg_id = call(srv, "POST", "/v1/publish", "m")[1]["id"]
        assert [m["id"] for m in receive(srv, "default", 1)] == [msg_id]
        assert call(srv, "DELETE", f"/v1/consumer?cid=1&id={msg_id}") == (200, True)
    finally:
        assert srv.stop() == 0
    loaded = {
        line.rsplit("|", 1)[1].strip()
        for line in srv.lines
        if line.startswith("import time:") and "|" in line
    }
    assert "wonderq.api" in loaded  # the import log is there at all
    wal_modules = sorted(m for m in loaded if m == "wonderq.wal" or m.startswith("wonderq.wal."))
    if durable:
        assert "wonderq.wal.log" in wal_modules
    else:
        assert wal_modules == []


# ---- a data directory the server cannot use -----------------------------------------------------


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WONDERQ_")}
    return subprocess.run(
        [*server_command(), "serve", "--host", "127.0.0.1", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def assert_startup_error(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, proc.stderr
    for word in words:
        assert word in errors[0], (word, errors[0])
    assert "listening" not in proc.stderr


@pytest.mark.timeout(60)
def test_a_data_dir_that_is_a_file_is_a_clear_startup_error(tmp_path: Path) -> None:
    path = tmp_path / "a-file"
    path.write_text("not a directory")
    assert_startup_error(serve("--data-dir", str(path)), "data directory", str(path))
    assert_startup_error(serve("--data-dir", str(path / "sub")), "data directory")


@pytest.mark.timeout(60)
def test_a_read_only_data_dir_is_a_clear_startup_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    # Root ignores permission bits, but not the immutable attribute; others get chmod.
    if os.geteuid() == 0:
        try:
            subprocess.run(["chattr", "+i", str(data)], check=True, capture_output=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            pytest.skip(f"cannot make a directory read-only as root here: {exc}")
        undo: Callable[[], object] = lambda: subprocess.run(["chattr", "-i", str(data)])  # noqa: E731
    else:
        data.chmod(0o555)
        undo = lambda: data.chmod(0o755)  # noqa: E731
    try:
        # "Permission denied" (chmod) or "Operation not permitted" (immutable)
        assert_startup_error(serve("--data-dir", str(data)), "cannot use the data directory")
    finally:
        undo()


@pytest.mark.timeout(60)
def test_two_servers_cannot_share_a_data_dir(tmp_path: Path, servers: list[ServerProcess]) -> None:
    data = tmp_path / "data"
    servers.append(start(data))
    assert_startup_error(serve("--data-dir", str(data)), "in use by another server")


def test_bad_fsync_mode_is_refused() -> None:
    proc = serve("--data-dir", "/nonexistent", "--fsync", "sometimes")
    assert proc.returncode == 2 and "--fsync" in proc.stderr and "Traceback" not in proc.stderr


# ---- 507 when the log cannot write (in-process: a full disk is hard to make for real) ----------


@pytest.mark.timeout(30)
def test_a_failed_log_answers_publishes_507_and_keeps_serving_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from _harness import Harness

    from wonderq.config import Settings
    from wonderq.store import DurableStore
    from wonderq.wal import Wal

    async def main() -> None:
        settings = Settings(data_dir=str(tmp_path), fsync="always")
        store = DurableStore(settings)
        # The log by hand (not store.open()): a short tick, so the writer retries quickly.
        wal = Wal(tmp_path, fsync="always", tick_s=0.05)
        wal.recover().close()
        store.wal = wal
        h = Harness(store, settings=settings, loop=asyncio.get_running_loop())
        await h.started

        async def ask(method: str, target: str, body: bytes = b"") -> tuple[int, Any, bool]:
            """(status, JSON, whether the answer was deferred)."""
            pending = h.send(method, target, body)
            while not pending.answered:
                await asyncio.sleep(0.001)
            return pending.status, pending.json, not pending.immediate

        status, doc, deferred = await ask("POST", "/v1/publish", b"one")
        assert (status, deferred) == (201, True)  # answered only after its fsync
        one = doc["id"]
        assert (await ask("GET", "/v1/consumer?cid=1"))[1]["messages"][0]["id"] == one

        real_pwritev = os.pwritev
        full = True

        def pwritev(fd: int, bufs: list[Any], offset: int) -> int:
            if full:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_pwritev(fd, bufs, offset)

        monkeypatch.setattr(os, "pwritev", pwritev)
        # The publish that hits the full disk: stored in memory, but not acknowledged.
        status, doc, deferred = await ask("POST", "/v1/queues/default/messages", b"two")
        assert (status, deferred) == (507, True)
        assert doc["error"]["code"] == "storage_error" and "No space" in doc["error"]["message"]
        # The log is failed: publishes are refused up front, before the engine stores them.
        for target, body in (("/v1/publish", b"three"), ("/v1/queues/default/batch", b'["x"]')):
            status, doc, deferred = await ask("POST", target, body)
            assert (status, doc["error"]["code"], deferred) == (507, "storage_error", False)
        # Reads go on; a delete is tried, and not acknowledged while the disk is full.
        assert (await ask("GET", "/v1/queues/default"))[0] == 200
        status, doc, _ = await ask("GET", "/v1/consumer?cid=2&limit=10")
        assert status == 200 and [m["body"] for m in doc["messages"]] == ["two"]
        status, doc, deferred = await ask("DELETE", f"/v1/consumer?cid=1&id={one}")
        assert (status, doc["error"]["code"], deferred) == (507, "storage_error", True)
        # The disk has room again: the writer's retry clears the failure.
        full = False
        await asyncio.sleep(0.3)
        status, doc, deferred = await ask("POST", "/v1/publish", b"four")
        assert (status, deferred) == (201, True), doc
        await store.close()

    asyncio.run(asyncio.wait_for(main(), 20))


# ---- the log's group commit: an answer waits for its own records -------------------------------


@pytest.mark.timeout(30)
def test_a_commit_waits_for_records_appended_while_a_write_was_finishing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (found by the kill -9 test): a write completing in the same event-loop turn
    as an append + commit, but before that turn's flush, used to hand the writer the batch
    holding the new waiter without the records still being built, so the answer (of an ack,
    say) was released before its delete was on disk."""
    from test_wal import Syscalls, log_records

    from wonderq.wal import Delete, Wal

    async def main() -> None:
        wal = Wal(tmp_path, fsync="always")
        wal.recover().close()
        await wal.start()
        gate = Syscalls(monkeypatch).fsync_gate = threading.Event()
        # The race depends on how many loop steps the write's completion takes to arrive:
        # try each.
        for msg_id in range(1, 17):
            gate.clear()
            wal.append_publish(msg_id, "default", b"m")
            wal.commit()
            await asyncio.sleep(0.05)  # flushed: that write now waits in fdatasync
            gate.set()
            time.sleep(0.1)  # (blocking) it finishes; its completion is queued on the loop
            for _ in range(msg_id % 4):
                await asyncio.sleep(0)
            wal.append_delete(msg_id)
            answer = wal.commit()  # its flush may be queued behind the completion
            assert answer is not None
            await answer
            deleted = [i for r in log_records(tmp_path) if isinstance(r, Delete) for i in r.ids]
            assert msg_id in deleted, f"ack of {msg_id} answered before its delete was written"
        await wal.close()

    asyncio.run(asyncio.wait_for(main(), 20))
