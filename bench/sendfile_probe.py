"""What a zero-copy send could save on 64 KiB answers: a probe for a design, not WonderQ.

    python bench/sendfile_probe.py                  # 4 rounds x 4 s, 64 KiB
    python bench/sendfile_probe.py --runs 1 --duration 2

WonderQ sends a big message's body from its block with ``writev``: the kernel copies the
64 KiB out of memory a deep queue holds cold (``_copy_from_iter``, ~28% of the server's
samples in bench/RESULTS.md, "Big messages"), where nginx sends a file with ``sendfile`` and
copies nothing. Would bodies kept in a memfd and sent with ``sendfile`` close that gap? Two
bare uvloop servers answer every request with a small head and 64 KiB taken in turn from the
same 2 GiB memfd (far more than the caches hold): ``writev`` from its mapping, or
``sendfile`` from the file (the head written first; what the socket does not take is written
from the mapping). Pinned like run.py's, rounds interleaved; httpgen GETs on 16 connections.
The figure that matters is MB per second of the server's CPU: how much each way costs the
server, whether or not the client (which copies every byte it reads) is what limits the rate.

What it does not show: how WonderQ would keep bodies in such a file safely. The kernel keeps
references to the pages it sends until the peer has read them, so a deleted message's pages
must leave the file (``fallocate(PUNCH_HOLE)``, whole pages only) instead of being written
over, and pages the file shares with a partly punched huge page would be zeroed in place.
That cost decided it: built into WonderQ with vmsplice on a branch, a lent page had to be
given back and a new one faulted in for every 4 KiB, which cost what the copy did
(bench/RESULTS.md, "Zero-copy for 64 KiB answers, built").
"""

from __future__ import annotations

import argparse
import asyncio
import mmap
import os
import statistics
import sys
import tempfile
from pathlib import Path

SIZE = 65536
TOTAL = 2 << 30  # bytes of bodies the server cycles through
CHUNK = 1 << 20


def serve(mode: str) -> None:
    """One probe server (a child of main()), announcing its port as the harness expects."""
    import uvloop

    fd = os.memfd_create("bodies")
    os.ftruncate(fd, TOTAL)
    mapped = mmap.mmap(fd, TOTAL)
    for offset in range(0, TOTAL, CHUNK):  # every page faulted in before the clock starts
        mapped[offset : offset + CHUNK] = b"x" * CHUNK
    view = memoryview(mapped)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % SIZE
    bodies = TOTAL // SIZE
    taken = [0]

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: asyncio.Transport = transport  # type: ignore[assignment]
            self.sock = transport.get_extra_info("socket").fileno()

        def data_received(self, data: bytes) -> None:
            for _ in range(data.count(b"\r\n\r\n")):
                offset = (taken[0] % bodies) * SIZE
                taken[0] += 1
                if mode == "writev" or self.transport.get_write_buffer_size():
                    self.transport.writelines([head, view[offset : offset + SIZE]])
                    continue
                self.transport.write(head)
                sent = 0
                if not self.transport.get_write_buffer_size():
                    try:
                        while sent < SIZE:
                            sent += os.sendfile(self.sock, fd, offset + sent, SIZE - sent)
                    except BlockingIOError:
                        pass
                if sent < SIZE:
                    self.transport.write(view[offset + sent : offset + SIZE])

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Probe, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        print(f"{mode} listening on http://127.0.0.1:{port}", flush=True)
        await asyncio.Event().wait()

    uvloop.install()
    asyncio.run(main())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--duration", type=float, default=4.0)
    ap.add_argument("--serve", choices=["writev", "sendfile"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve)
        return 0
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import harness

    server_pin, gen_pin, pinning = harness.cpu_plan()
    launcher = harness.Launcher(server_pin, Path(tempfile.mkdtemp(prefix="wonderq-probe-")))
    meter = harness.Meter(gen_pin, args.duration)
    httpgen = str(harness.httpgen())
    harness.log(f"sendfile probe: {args.runs} x {args.duration:g} s, {SIZE} B; {pinning}")
    rows: dict[str, list[dict]] = {"writev": [], "sendfile": []}
    servers = {}
    try:
        for mode in rows:
            cmd = [sys.executable, __file__, "--serve", mode]
            proc, log_path = launcher.spawn(mode, cmd)
            port = launcher.announced_port(proc, log_path, 120)
            servers[mode] = harness.Server(mode, proc, port, log_path)
        for _ in range(args.runs):
            for mode, server in servers.items():
                gen = [httpgen, "--port", str(server.port), "-c", "16"]
                gen += ["--duration", str(args.duration), "--fixed", "GET", "/x"]
                r = meter.measure(server, gen)
                mb_s = r["rps"] * SIZE / 1e6
                per_cpu = mb_s / r["server_cpu"] if r["server_cpu"] else 0.0
                rows[mode].append({"mb_s": mb_s, "per_cpu": per_cpu, **r})
                harness.log(
                    f"  {mode}: {mb_s:,.0f} MB/s, server CPU {r['server_cpu']:.2f}, "
                    f"httpgen {r['loadgen_cpu']:.2f}: {per_cpu:,.0f} MB per server CPU-s"
                )
    finally:
        for server in servers.values():
            server.stop()
    pairs = zip(rows["sendfile"], rows["writev"], strict=True)
    ratios = [s["per_cpu"] / w["per_cpu"] for s, w in pairs]
    for mode, results in rows.items():
        harness.log(
            f"{mode}: median {statistics.median(r['mb_s'] for r in results):,.0f} MB/s, "
            f"{statistics.median(r['per_cpu'] for r in results):,.0f} MB per server CPU-s"
        )
    harness.log(f"sendfile / writev, MB per server CPU-s: median {statistics.median(ratios):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
