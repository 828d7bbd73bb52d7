"""CPU seconds of the log's recovery of N messages, in-process (no server, no wall clock).

    python bench/wal_replay.py                    # 1,000,000 x 200 B, both frame shapes
    python bench/wal_replay.py -n 200000 --runs 3
    python bench/wal_replay.py --sqs                 # messages as SQS sends log them

Writes two segments of N publishes of 200 B to a scratch directory, each run in a fresh
interpreter: frames of 1000 messages (what ``POST /v1/queues/default/batch`` writes, the shape
``bench/durability.py`` fills its big log with) and frames of one message each (what single
publishes at low load write: the replay's per-frame path). For each it prints the CPU time
(``time.process_time``) of ``recover()`` (reading and checking the files) and of
``load_into()`` into the real engine. CPU time of the process, not wall time: on a machine
shared with other work it changes far less than wall time, so two commits can be compared by
the ratio of their figures. Used to check that a change to recovery is not slower.

With ``--sqs`` every message carries what an SQS send logs (format 2): its sent time and an
attribute blob of 40 bytes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BODY = b"x" * 200
SENT_MS = 1_800_000_000_000
BLOB = b"a" * 40  # about what one String message attribute takes


def write_segment(path: Path, n: int, per_frame: int, sqs: bool = False) -> None:
    from wonderq.wal import Publish, encode_frame

    try:
        from wonderq.wal.files import segment_name
        from wonderq.wal.format import FILE_HEADER, FORMAT_VERSION, LOG_MAGIC
    except ImportError:  # the single-module log, before the wonderq.wal package
        from wonderq.wal import (  # type: ignore[attr-defined,no-redef]
            FILE_HEADER,
            FORMAT_VERSION,
            LOG_MAGIC,
            segment_name,
        )
    path.mkdir(parents=True)
    with open(path / segment_name(1), "wb") as f:
        f.write(FILE_HEADER.pack(LOG_MAGIC, FORMAT_VERSION, 1))
        for first in range(1, n + 1, per_frame):
            last = min(first + per_frame, n + 1)
            if sqs:
                msgs = [
                    Publish(i, "default", BODY, sent_ms=SENT_MS, attributes=BLOB)  # type: ignore[call-arg]
                    for i in range(first, last)
                ]
            else:
                msgs = [Publish(i, "default", BODY) for i in range(first, last)]
            f.write(encode_frame(msgs))


def measure(path: Path) -> tuple[float, float, int]:
    """(recover CPU s, load_into CPU s, messages) for one run in this process."""
    from wonderq._core import Broker
    from wonderq.wal import recover

    c0 = time.process_time()
    with recover(path) as state:
        c1 = time.process_time()
        restored = state.load_into(Broker(), 10_000, SENT_MS + 10_000)
    c2 = time.process_time()
    return c1 - c0, c2 - c1, restored


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("-n", "--messages", type=int, default=1_000_000)
    p.add_argument("--runs", type=int, default=1, help="fresh-interpreter runs per shape")
    p.add_argument("--sqs", action="store_true", help="messages with a sent time and a blob")
    p.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # one run, in a child
    args = p.parse_args()
    if args.measure:
        rec, load, restored = measure(args.measure)
        print(f"{rec:.3f} {load:.3f} {restored}")
        return 0
    work = Path(tempfile.mkdtemp(prefix="wonderq-wal-replay-"))
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        for per_frame in (1000, 1):
            d = work / f"frames-of-{per_frame}"
            write_segment(d, args.messages, per_frame, args.sqs)
            size = sum(f.stat().st_size for f in d.iterdir())
            for run in range(args.runs):
                out = subprocess.run(
                    [sys.executable, __file__, "--measure", str(d)],
                    capture_output=True,
                    text=True,
                    check=True,
                    env=env,
                ).stdout.split()
                rec, load, restored = float(out[0]), float(out[1]), int(out[2])
                assert restored == args.messages, (restored, args.messages)
                print(
                    f"{args.messages:,} messages in frames of {per_frame} ({size / 1e6:.0f} MB), "
                    f"run {run + 1}: recover {rec:.2f} s + load_into {load:.2f} s "
                    f"= {rec + load:.2f} s of CPU",
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
