"""Redis's instructions per store operation, counted by valgrind's callgrind: repeatable where
Redis's CPU time on a shared machine is not (the figures behind docs/SCALEOUT.md's "Cost").

    python bench/redis_instructions.py                 # every operation, 2,000 calls each
    python bench/redis_instructions.py --calls 500 publish ack100

It starts its own redis-server under callgrind on a free loopback port, drives it through
RedisStore from this process (16 calls in flight, so replies are pipelined as in a server),
and for each operation zeroes the counters (``callgrind_control -z``), runs the calls and
dumps (``callgrind_control -d``): instructions per call and per message. Only Redis is
counted, not this client. Stops its redis-server by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BODY = b"x" * 200
OPS = ("publish", "publish100", "receive1", "delete", "receive100", "ack100", "empty")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def total_ir(directory: Path, before: set[Path]) -> int:
    """Ir of the newest dump (the one ``-d`` just wrote)."""
    for _ in range(200):
        new = sorted(set(directory.glob("cg.out*")) - before, key=lambda p: p.stat().st_mtime)
        if new:
            text = new[-1].read_text(errors="replace")
            m = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
            if m:
                return int(m.group(1))
        time.sleep(0.05)
    raise RuntimeError("callgrind wrote no dump")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("ops", nargs="*", help=f"some of {' '.join(OPS)} (default all)")
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--scripts", type=Path, help="load the Lua scripts from here (to compare)")
    p.add_argument("--keep", type=Path, help="copy each operation's callgrind dump here")
    args = p.parse_args()
    args.ops = args.ops or list(OPS)
    if set(args.ops) - set(OPS):
        p.error(f"unknown operations {sorted(set(args.ops) - set(OPS))}")
    for tool in ("valgrind", "callgrind_control", "redis-server"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing: apt-get install -y valgrind redis-server")
    import redis

    from wonderq.config import Settings
    from wonderq.redis import RedisStore, lua, wait

    if args.scripts:
        lua.SCRIPTS_DIR = args.scripts

    with tempfile.TemporaryDirectory(prefix="wq-redis-ir-") as tmp:
        d = Path(tmp)
        port = free_port()
        proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={d}/cg.out",
             "--dump-instr=no", "redis-server", "--port", str(port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            client = redis.Redis(port=port, socket_timeout=60)
            for _ in range(600):
                try:
                    client.ping()
                    break
                except Exception:
                    time.sleep(0.1)
            store = RedisStore(Settings(backend=f"redis://127.0.0.1:{port}/0", max_batch=1000))
            store.open()
            results: dict[str, dict[str, float]] = {}

            def ctl(flag: str) -> None:
                subprocess.run(
                    ["callgrind_control", flag, str(proc.pid)],
                    check=True,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )

            async def measure(name: str, n: int, make: Callable[[int], Any], per: int) -> None:
                loop = asyncio.get_running_loop()
                done = [0]
                finished = loop.create_future()

                def again(_x: Any = None) -> None:
                    if done[0] >= n:
                        if done[0] == n and not finished.done():
                            done[0] += 1
                            finished.set_result(None)
                        return
                    i = done[0]
                    done[0] += 1
                    make(i).add(again)

                ctl("-z")
                before = set(d.glob("cg.out*"))
                for _ in range(min(16, n)):
                    again()
                await finished
                ctl("-d")
                ir = total_ir(d, before)
                if args.keep:
                    args.keep.mkdir(parents=True, exist_ok=True)
                    newest = max(set(d.glob("cg.out*")) - before, key=lambda p: p.stat().st_mtime)
                    shutil.copy(newest, args.keep / f"callgrind.{name}")
                results[name] = {"per_call": ir / n, "per_message": ir / n / per}
                print(
                    f"{name:<12} {ir / n:>12,.0f} instructions/call {ir / n / per:>10,.0f} "
                    f"/message",
                    flush=True,
                )

            async def run() -> None:
                await store.start_bare(asyncio.get_running_loop())
                n = args.calls
                leased: list[int] = []

                def keep(d: Any) -> Any:
                    d.add(lambda x: leased.extend(_ids(x.value)) if x.error is None else None)
                    return d

                if "empty" in args.ops:
                    await measure("empty", n, lambda i: store.command_on("x", ["PING"]), 1)
                # enough messages for the receives below, published outside the counted runs
                for _ in range(n // 50 + 2):
                    await wait(store.publish_batch("default", [BODY] * 100, None))
                if "publish" in args.ops:
                    await measure("publish", n, lambda i: store.publish("default", BODY, -1), 1)
                if "publish100" in args.ops:
                    bodies = [BODY] * 100
                    await measure(
                        "publish100",
                        max(1, n // 10),
                        lambda i: store.publish_batch("default", bodies, None),
                        100,
                    )
                if "receive1" in args.ops or "delete" in args.ops:
                    await measure(
                        "receive1", n, lambda i: keep(store.receive("default", 1, 1, 60_000)), 1
                    )
                    ids = list(leased)
                    leased.clear()
                    if "delete" in args.ops:
                        await measure(
                            "delete", len(ids), lambda i: store.delete("default", 1, ids[i]), 1
                        )
                if "receive100" in args.ops or "ack100" in args.ops:
                    k = max(1, n // 10)
                    await measure(
                        "receive100",
                        k,
                        lambda i: keep(store.receive("default", 2, 100, 60_000)),
                        100,
                    )
                    groups = [leased[i : i + 100] for i in range(0, len(leased), 100)]
                    if "ack100" in args.ops:
                        await measure(
                            "ack100",
                            len(groups),
                            lambda i: store.delete_batch("default", 2, groups[i]),
                            100,
                        )
                await store.close()

            asyncio.run(run())
            print("IRJSON " + json.dumps(results))
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return 0


def _ids(answer: Any) -> list[int]:
    return [m["id"] for m in json.loads(answer)["messages"]] if answer else []


if __name__ == "__main__":
    sys.exit(main())
