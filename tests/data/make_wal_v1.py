"""Make the ``wal-v1`` fixture: a data directory written by a real server of a given tree.

    python tests/data/make_wal_v1.py --tree /path/to/a/checkout --out tests/data/wal-v1

``--tree`` is the checkout whose ``wonderq`` writes the directory (built in place:
``python setup.py build_ext --inplace``); the fixture in the repository was made with commit
6832194, the last one with the single-module log (``wonderq/wal.py``). The script starts
``python -m wonderq serve`` of that tree on a loopback port with ``--data-dir``, drives it
over HTTP (queues with attributes, publishes one by one and in batches, delays, receives,
acks, a dead-letter move, a purge, a queue deletion), forces a compaction with a small
``--compact-min-bytes`` halfway, so the directory holds a snapshot and a segment written after
it, and stops the server with SIGTERM. It then recovers the directory with that same tree's
``recover()``, checks the result against what the HTTP answers said must be there, and writes
it to ``expected.json`` beside the files: the state ``tests/test_wal_compat.py`` requires the
current code to recover from them.

Loopback only; the one server it starts is stopped by its PID.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

LISTENING = re.compile(rb"wonderq listening on http://127\.0\.0\.1:(\d+)")


class Server:
    def __init__(self, tree: Path, data_dir: Path, log_path: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WONDERQ_")}
        env["PYTHONPATH"] = str(tree)
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        cmd = [sys.executable, "-m", "wonderq", "serve", "--host", "127.0.0.1", "--port", "0"]
        cmd += ["--data-dir", str(data_dir), "--fsync", "always"]
        cmd += ["--compact-min-bytes", "4096"]
        self.proc = subprocess.Popen(
            cmd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=tree,
        )
        deadline = time.monotonic() + 60
        self.port = 0
        while not self.port:
            m = LISTENING.search(log_path.read_bytes())
            if m:
                self.port = int(m.group(1))
            elif self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                sys.exit(f"the server did not start:\n{log_path.read_text()}")
            else:
                time.sleep(0.02)

    def call(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=data)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        if resp.status != status:
            raise RuntimeError(f"{method} {path}: {resp.status} {raw[:300]!r}")
        return (
            json.loads(raw) if raw and resp.getheader("Content-Type", "").endswith("json") else raw
        )

    def metric(self, name: str) -> float:
        text = self.call("GET", "/metrics").decode()
        m = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
        return float(m.group(1)) if m else 0.0

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def drive(srv: Server) -> dict[int, list[Any]]:
    """The scenario. Returns what must survive: id -> [queue, body, receives, delayed]."""
    live: dict[int, list[Any]] = {}

    def pub(queue: str, body: bytes, query: str = "") -> int:
        msg_id = srv.call("POST", f"/v1/queues/{queue}/messages{query}", body, 201)["id"]
        live[msg_id] = [queue, body, 0, bool(query) or queue == "slow"]
        return int(msg_id)

    def batch(queue: str, bodies: list[str]) -> list[int]:
        ids = srv.call("POST", f"/v1/queues/{queue}/batch", bodies, 201)["ids"]
        for i, b in zip(ids, bodies, strict=True):
            live[i] = [queue, b.encode(), 0, False]
        return [int(i) for i in ids]

    def receive(queue: str, cid: int, limit: int, visibility: int = 3600) -> list[int]:
        path = f"/v1/queues/{queue}/messages?cid={cid}&limit={limit}&visibility={visibility}"
        got = [m["id"] for m in srv.call("GET", path)["messages"]]
        for i in got:
            live[i][2] += 1
        return got

    def release(queue: str, cid: int, msg_id: int) -> None:
        path = f"/v1/queues/{queue}/messages/{msg_id}/lease?cid={cid}&timeout=0"
        assert srv.call("POST", path) is True

    # ---- before the compaction: this ends up in the snapshot -------------------------------
    srv.call("PUT", "/v1/queues/jobs-dlq", {}, 201)
    srv.call(
        "PUT",
        "/v1/queues/jobs",
        {
            "visibility_timeout": 60,
            "max_receives": 2,
            "dead_letter_queue": "jobs-dlq",
            "max_message_bytes": 4096,
        },
        201,
    )
    srv.call("PUT", "/v1/queues/slow", {"delay": 120}, 201)
    srv.call("PUT", "/v1/queues/doomed", {}, 201)
    srv.call("PUT", "/v1/queues/scratch", {}, 201)
    alpha = pub("default", b"alpha")
    beta = pub("default", b"beta")
    d1, d2, _d3 = batch("default", ["d1", "d2", "d3 \u00e9\u2713"])
    assert receive("default", 7, 2) == [alpha, beta]
    assert srv.call("DELETE", f"/v1/queues/default/messages/{alpha}?cid=7") is True
    del live[alpha]
    j1 = pub("jobs", b"j1")
    j2 = pub("jobs", b"j2")
    for _ in range(2):  # the second release moves j1 to jobs-dlq, receives back to 0
        assert receive("jobs", 1, 1) == [j1]
        release("jobs", 1, j1)
    live[j1][:3] = ["jobs-dlq", b"j1", 0]
    pub("slow", b"s1")  # the queue's own delay
    pub("default", b"later", "?delay=600")
    x = [pub("doomed", b"x1"), pub("doomed", b"x2")]
    # Filler: published and acked, so the log outgrows twice the live data and compacts.
    filler = batch("scratch", ["f" * 300] * 100)
    got = receive("scratch", 3, 100)
    assert got == filler
    ack = srv.call("POST", "/v1/queues/scratch/ack", {"cid": 3, "ids": got})
    assert ack["deleted"] == got
    for i in got:
        del live[i]
    deadline = time.monotonic() + 60
    while srv.metric("wonderq_wal_compactions_total") < 1:
        if time.monotonic() > deadline:
            raise RuntimeError("no compaction within 60 s")
        time.sleep(0.1)

    # ---- after it: the segment that follows the snapshot -----------------------------------
    srv.call("POST", "/v1/queues/jobs/purge")  # j2 goes
    del live[j2]
    j3 = pub("jobs", b"j3")
    srv.call("DELETE", "/v1/queues/doomed", None, 204)  # x1, x2 go with it
    for i in x:
        del live[i]
    srv.call("PUT", "/v1/queues/doomed", {"visibility_timeout": 5}, 201)
    pub("doomed", b"y1")
    assert receive("default", 9, 2) == [d1, d2]
    ack = srv.call("POST", "/v1/queues/default/ack", {"cid": 9, "ids": [d1]})
    assert ack["deleted"] == [d1]
    del live[d1]
    assert receive("jobs-dlq", 4, 1) == [j1]  # left leased: recovered available, 1 receive
    srv.call("PUT", "/v1/queues/jobs", {"visibility_timeout": 90}, 200)
    pub("default", "h\u00e9llo \u2713".encode())
    srv.call("POST", "/v1/publish", b"seed route", 201)
    last = max(live) + 1
    live[last] = ["default", b"seed route", 0, False]
    batch("jobs", ["j4", "j5"])
    for _ in range(2):  # a dead-letter move in the segment, after one in the snapshot
        assert receive("jobs", 2, 1) == [j3]
        release("jobs", 2, j3)
    live[j3][:3] = ["jobs-dlq", b"j3", 0]
    pub("slow", b"s2")
    pub("default", b"later too", "?delay=900")
    return live


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tree", type=Path, required=True, help="the checkout whose server writes")
    p.add_argument("--out", type=Path, required=True, help="the directory to create")
    args = p.parse_args()
    tree = args.tree.resolve()
    if args.out.exists():
        sys.exit(f"{args.out} exists; remove it first")
    sys.path.insert(0, str(tree))
    from wonderq import wal  # the tree's own log, to read back what its server wrote

    assert Path(wal.__file__).resolve().is_relative_to(tree), wal.__file__
    commit = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="make-wal-v1-"))
    data = work / "data"
    srv = Server(tree, data, work / "server.log")
    try:
        t0 = time.time_ns() // 1_000_000
        live = drive(srv)
        t1 = time.time_ns() // 1_000_000
    finally:
        code = srv.stop()
    if code != 0:
        sys.exit(f"the server exited {code}:\n{(work / 'server.log').read_text()}")
    files = sorted(f for f in os.listdir(data) if f.endswith((".log", ".snap")))
    if not any(f.endswith(".snap") for f in files):
        sys.exit(f"no snapshot in {files}")
    with wal.recover(data) as state:
        msgs = state.messages()
        got = {m.msg_id: [m.queue, m.body, m.receives, m.delay_end_ms > 0] for m in msgs}
        if got != live:
            sys.exit(f"recovered {got}\nexpected {live}")
        for m in msgs:
            delay_s = {b"later": 600, b"later too": 900}.get(m.body, 120)
            if m.delay_end_ms and not t0 + delay_s * 1000 <= m.delay_end_ms <= t1 + delay_s * 1000:
                sys.exit(f"message {m.msg_id}: delay ends at {m.delay_end_ms}, not in the run")
        expected = {
            "made_by": f"tests/data/make_wal_v1.py --tree <checkout of {commit or '?'}>",
            "files": files,
            "queues": state.queues,
            "next_id": state.next_id,
            "messages": [
                {
                    "id": m.msg_id,
                    "queue": m.queue,
                    "body": m.body.decode(),
                    "receives": m.receives,
                    "delay_end_ms": m.delay_end_ms,
                }
                for m in msgs
            ],
        }
    args.out.mkdir(parents=True)
    for f in files:  # not the server's lock file
        shutil.copy(data / f, args.out / f)
    (args.out / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    shutil.rmtree(work)
    print(f"wrote {args.out}: {', '.join(files)}; {len(msgs)} messages, next id {state.next_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
