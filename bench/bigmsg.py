"""Big messages: publish and receive of 1 KiB, 64 KiB and 1 MiB bodies in MB/s, against
nginx accepting and serving the same sizes in the same run, and the memory a burst of
1 MiB publishes takes beyond what the engine accounts.

    python bench/bigmsg.py                        # 3 rounds x 5 s per size
    python bench/bigmsg.py --runs 1 --duration 2  # a smoke run

Rates (16 connections, httpgen, pinned like run.py's; rounds interleaved):

* ``publish``: POST /v1/queues/big<size>/messages with a body of ``size`` bytes; nginx:
  POST of the same body to ``location /`` (read and discarded, 200);
* ``nginx publish, kept``: PUT /keep/q<k> of the same body, k counting up, so nginx stores
  every body in a new file (WebDAV: into a temporary file, then renamed) in a tmpfs
  (/dev/shm), as a queue keeps every body in memory: nginx doing a growing queue's work.
  The files are removed after each round. Its ratio is reported beside the first; the
  first stays the goal's reference.
* ``receive``: GET /v1/queues/big<size>/messages?cid=1 then DELETE of the id, on the
  messages the publish round stored, until the first receive that finds the queue empty
  (httpgen ``--until-empty``: receiving is faster than publishing, so the round ends before
  its duration, and its rate is that of a queue that still had messages); nginx: GET of a
  static file of ``size`` bytes (bench/peers/nginx.conf.template, ``location /blob/``).
  MB/s counts bodies only (10^6 bytes), one per acknowledged delete or nginx 200.
  ``nginx receive, distinct files``: the same GETs spread over 1 GiB of distinct files of
  ``size`` bytes (at most 65,536), so nginx too sends bodies that are not in the CPU's
  caches, as a queue holding gigabytes does; its ratio is reported beside the first.
* ``cycle``: publish, receive and delete on each connection (httpgen's cycle), so the queue
  stays near empty: the steady state of a queue whose consumers keep up, in which the
  engine reuses freed memory. nginx gets the same three requests (POST of the body, GET of
  a file of its size, a DELETE answered 200). MB/s counts each body once.
* ``fresh pages``: MB/s at which the kernel gives a process new zeroed memory of the kind
  the server's heap gets (a private anonymous mapping, in 2 MiB transparent huge pages when
  the server runs with them, else 4 KiB pages), faulted in a body's size at a time with
  ``madvise(MADV_POPULATE_WRITE)`` as the engine does a new block, pinned to the server's
  core. A queue that grows stores every body in such pages; nginx, discarding the
  body, takes none. ``nginx + fresh pages`` is the rate nginx would have if it also had to
  take a body's worth of fresh pages per request: 1 / (1/nginx + 1/fresh pages), round by
  round. It is what a publish into a growing queue can hope for here.

Memory: a fresh server takes 1 MiB publishes for ``--burst`` seconds on 8 connections; its
VmRSS is sampled every 20 ms (peak) and compared with ``wonderq_memory_bytes`` once the
burst ends, then again after every message was received and deleted.
"""

from __future__ import annotations

import argparse
import ctypes
import mmap
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import scalelib
from scalelib import Bench, harness

SIZES = (1024, 65536, 1048576)
CONNS = 16


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.running = True

    def run(self) -> None:
        while self.running:
            value = harness.proc_rss_bytes(self.pid) or 0
            self.peak = max(self.peak, value)
            time.sleep(0.02)


COLD_BYTES = 1 << 30  # bytes of distinct files nginx serves in "nginx receive, distinct files"
KEEP_NAMES = 1 << 24  # names of "nginx publish, kept": more than a round can PUT, so none repeats


def distinct_files(size: int) -> int:
    return max(1, min(65536, COLD_BYTES // size))


def remove_kept(path: Path) -> int:
    """Remove the files nginx kept; their number. A PUT still in flight when the round ended
    may add one while this runs: try again."""
    count = sum(1 for _ in path.iterdir())
    for _ in range(50):
        try:
            shutil.rmtree(path)
            return count
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"could not remove {path}")


def workloads(
    size: int, q: str, wq: harness.Server, nginx: harness.Server
) -> dict[str, tuple[harness.Server, list[str]]]:
    """httpgen's arguments of each row, by row name."""
    body = ["--body-bytes", str(size)]
    receive = f"/v1/queues/{q}/messages?cid=1&limit=1&visibility=60"
    return {
        # First, and its files removed after it: the queue is empty while it runs.
        "nginx publish, kept": (
            nginx,
            [*body, "--spread", str(KEEP_NAMES), "--fixed", "PUT", "/keep/{q}"],
        ),
        "wq publish": (wq, [*body, "--fixed", "POST", f"/v1/queues/{q}/messages"]),
        "nginx publish": (nginx, [*body, "--fixed", "POST", "/upload"]),
        "wq receive": (
            wq,
            [
                *["--recvdel", receive, f"/v1/queues/{q}/messages/", "--delete-suffix", "?cid=1"],
                "--until-empty",
            ],
        ),
        "nginx receive": (nginx, ["--fixed", "GET", f"/blob/{size}"]),
        # The same GETs over distinct files, COLD_BYTES of them: bodies that are not in the
        # CPU's caches, as the messages of a queue holding gigabytes are not.
        "nginx receive, distinct files": (
            nginx,
            ["--spread", str(distinct_files(size)), "--fixed", "GET", f"/blob/{size}.d/{{q}}"],
        ),
        # Publish, receive and delete on each connection: the steady state of a queue that
        # its consumers keep up with (its memory is reused, not fresh); nginx gets the same
        # three requests (POST of the body, GET of a file of its size, DELETE: a fixed 200).
        "wq cycle": (
            wq,
            [
                *body,
                "--recvdel",
                f"/v1/queues/{q}c/messages?cid=1&limit=1&visibility=60",
                f"/v1/queues/{q}c/messages/",
                "--delete-suffix",
                "?cid=1",
                "--publish",
                f"/v1/queues/{q}c/messages",
            ],
        ),
        "nginx cycle": (
            nginx,
            [*body, "--recvdel", f"/blob/{size}", "/upload/", "--publish", "/upload"],
        ),
    }


MADV_POPULATE_WRITE = 23  # Linux 5.14+; what the engine faults a big new block in with


def fresh_pages_mb_s(size: int, huge: bool, total: int = 1 << 30) -> float:
    """MB/s of faulting in ``total`` bytes of new private anonymous memory, ``size`` bytes at
    a time, as the engine does a new block: one madvise(MADV_POPULATE_WRITE) each (where the
    kernel has it; else one byte written per 4 KiB page), in transparent huge pages if
    ``huge``."""
    m = mmap.mmap(-1, total, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if huge:
        m.madvise(mmap.MADV_HUGEPAGE)
    libc = ctypes.CDLL(None, use_errno=True)
    view = ctypes.c_char.from_buffer(m)
    addr = ctypes.addressof(view)
    step = max(size - size % 4096, 4096)
    populate = libc.madvise(ctypes.c_void_p(addr), ctypes.c_size_t(4096), MADV_POPULATE_WRITE) == 0
    t0 = time.perf_counter()
    for off in range(0, total - step + 1, step):
        if populate:
            libc.madvise(ctypes.c_void_p(addr + off), ctypes.c_size_t(step), MADV_POPULATE_WRITE)
        else:
            for page in range(off, off + step, 4096):
                m[page] = 1
    seconds = time.perf_counter() - t0
    del view
    m.close()
    return (total - total % step) / seconds / 1e6


def fresh_pages(size: int, huge: bool, pin: list[str]) -> float:
    """fresh_pages_mb_s in a new process on the server's core."""
    kind = "huge" if huge else "small"
    cmd = [*pin, sys.executable, __file__, "--fresh-pages", str(size), kind]
    return float(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def huge_pages(pid: int) -> bool:
    """Whether the server ``pid`` runs with glibc's heap in transparent huge pages."""
    with open(f"/proc/{pid}/environ", "rb") as f:
        env = f.read().split(b"\0")
    return any(x.startswith(b"GLIBC_TUNABLES=") and b"glibc.malloc.hugetlb=1" in x for x in env)


def median_ratio(tops: list[float], bottoms: list[float]) -> float:
    """The median of the per-round ratios top / bottom (rounds interleaved), to 3 places."""
    pairs = zip(tops, bottoms, strict=True)
    return round(scalelib.median([t / b for t, b in pairs if b]), 3)


def mbps(result: dict, size: int) -> float:
    return result["messages"] * size / (result.get("duration_s") or 1) / 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--burst", type=float, default=1.0, help="seconds of 1 MiB publishes (0: none)")
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    ap.add_argument("--fresh-pages", nargs=2, help=argparse.SUPPRESS)  # fresh_pages's child
    args = ap.parse_args()
    if args.fresh_pages:
        size, kind = args.fresh_pages
        print(f"{fresh_pages_mb_s(int(size), kind == 'huge'):.1f}")
        return 0
    bench = Bench(args.duration)
    doc: dict[str, Any] = {"machine": scalelib.machine(), "pinning": bench.pinning, "sizes": {}}
    nginx = bench.launcher.nginx()
    try:
        assert nginx.tmpdir is not None
        blob = Path(nginx.tmpdir.name) / "blob"
        blob.mkdir(exist_ok=True)
        for size in args.sizes:
            (blob / str(size)).write_bytes(b"x" * size)
            files = blob / f"{size}.d"
            files.mkdir()
            for i in range(distinct_files(size)):
                (files / f"q{i}").write_bytes(b"x" * size)
        with bench.wonderq() as wq:
            huge = huge_pages(wq.pid)
            doc["huge_pages"] = huge
            harness.log(f"server heap in transparent huge pages: {huge}")
            for size in args.sizes:
                q = f"big{size}"
                scalelib.create_queues(wq.port, [q, f"{q}c"])
                results: dict[str, list[dict]] = {k: [] for k in workloads(size, q, wq, nginx)}
                fresh: list[float] = []
                for r in range(args.runs):
                    fresh.append(fresh_pages(size, huge, bench.launcher.pin))
                    harness.log(f"{size} B round {r + 1} fresh pages: {fresh[-1]:.1f} MB/s")
                    for name, (server, gen_args) in workloads(size, q, wq, nginx).items():
                        res = bench.gen(server, *gen_args, conns=CONNS, name=name)
                        if name.startswith("nginx receive"):
                            res["messages"] = res["requests"] - res.get("bad", 0)
                        elif name == "nginx cycle":
                            # httpgen counts a queue's answers (201, "true"); nginx's are 200
                            # with {"ok":true}: a cycle is three answers below 400.
                            failed = res.get("errors", {}).get("status", 0)
                            res["messages"] = (res["requests"] - failed) // 3
                            res["bad"] = failed
                        if name == "nginx publish, kept":
                            assert nginx.keepdir is not None
                            keep = Path(nginx.keepdir.name)
                            res["files"] = remove_kept(keep / "keep")
                        res["mb_s"] = mbps(res, size)
                        results[name].append(res)
                        harness.log(
                            f"{size} B round {r + 1} {name}: {res['mb_s']:.1f} MB/s, "
                            f"p99 {res['latency_ms']['p99']} ms, empty {res.get('empty')}, "
                            f"bad {res.get('bad')}, {res['duration_s']:.2f} s"
                            + (f", {res['files']} files" if "files" in res else "")
                        )
                    scalelib.call(wq.port, "POST", f"/v1/queues/{q}/purge")
                row: dict[str, Any] = {}
                for name, res in results.items():
                    row[name] = scalelib.summary(res, "mb_s")
                    row[name]["empty"] = sum(x.get("empty", 0) for x in res)
                row["fresh pages"] = {"mb_s": scalelib.median(fresh), "runs": fresh}
                mb_s = {name: [r["mb_s"] for r in res] for name, res in results.items()}
                # nginx + fresh pages: nginx's time per byte plus the kernel's for new pages.
                pairs = zip(mb_s["nginx publish"], fresh, strict=True)
                both = [1 / (1 / n + 1 / f) for n, f in pairs]
                row["nginx + fresh pages"] = {"mb_s": scalelib.median(both), "runs": both}
                row["nginx + fresh pages x nginx"] = median_ratio(both, mb_s["nginx publish"])
                row["publish x nginx + fresh pages"] = median_ratio(mb_s["wq publish"], both)
                for side in ("publish", "receive", "cycle"):
                    row[f"{side} x nginx"] = median_ratio(mb_s[f"wq {side}"], mb_s[f"nginx {side}"])
                row["publish x nginx, kept"] = median_ratio(
                    mb_s["wq publish"], mb_s["nginx publish, kept"]
                )
                row["receive x nginx, distinct files"] = median_ratio(
                    mb_s["wq receive"], mb_s["nginx receive, distinct files"]
                )
                doc["sizes"][size] = row
        # The burst (--burst 0: none).
        if args.burst > 0:
            with bench.wonderq() as wq:
                scalelib.call(wq.port, "GET", "/healthz")
                time.sleep(0.5)
                rss0 = scalelib.rss(wq.pid)
                sampler = RssSampler(wq.pid)
                sampler.start()
                burst = bench.gen(
                    wq,
                    "--body-bytes",
                    "1048576",
                    "--fixed",
                    "POST",
                    "/v1/publish",
                    conns=8,
                    name="burst",
                    duration=args.burst,
                )
                time.sleep(0.5)
                m = scalelib.metrics(wq.port)
                rss1 = scalelib.rss(wq.pid)
                peak = sampler.peak
                drain = bench.gen(
                    wq,
                    "--recvdel",
                    "/v1/consumer?cid=1&limit=1&visibility=60",
                    "/v1/consumer?cid=1&id=",
                    conns=8,
                    name="drain",
                    duration=max(2.0, args.burst * 3),
                )
                time.sleep(0.5)
                m2 = scalelib.metrics(wq.port)
                rss2 = scalelib.rss(wq.pid)
                sampler.running = False
                accounted = int(m.get("wonderq_memory_bytes", 0))
                doc["burst"] = {
                    "published": burst["messages"],
                    "rss_before": rss0,
                    "rss_after_burst": rss1,
                    "rss_peak": peak,
                    "memory_bytes_after_burst": accounted,
                    "rss_growth_minus_accounted": rss1 - rss0 - accounted,
                    "peak_growth_minus_accounted": peak - rss0 - accounted,
                    "drained": drain["messages"],
                    "memory_bytes_after_drain": int(m2.get("wonderq_memory_bytes", 0)),
                    "rss_after_drain": rss2,
                    "command": burst["command"],
                }
                harness.log(f"burst: {doc['burst']}")
    finally:
        nginx.stop()
    scalelib.emit("bigmsg", doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
