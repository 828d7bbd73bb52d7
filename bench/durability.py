"""Durability figures (issue 6): what the write-ahead log costs, and how fast a restart is.

    python bench/durability.py                 # print the "## Durability" section
    python bench/durability.py --write         # ... and put it into bench/RESULTS.md
    python bench/durability.py --only rate     # or: --only recovery

1. **Publish rate** at 64 connections (wrk, ``wrk/publish.lua``: ``POST /v1/publish`` of
   200 B), in memory and with ``--data-dir`` under ``--fsync always``, ``everysec`` and
   ``never``, as ratios of the in-memory rate of the same run. Each repetition runs the four
   modes back to back (in a rotated order), each on a fresh server and a fresh data directory;
   the figures are medians over the repetitions. Server on core 0, wrk on core 1 (taskset).
2. **Recovery** of a log of N messages (default 1,000,000 x 200 B): fill through the batch
   route (``POST /v1/queues/default/batch``, 1000 per request), stop the server (SIGTERM),
   restart it on the same directory and time it until ``/healthz`` answers; the server's own
   ``recovered ... in X s`` line gives the recovery proper. Disk bytes per message = the data
   directory's size / N.

Loopback only. Every process started here is stopped by its own PID. The machine's load
average is recorded next to the figures (other work on a shared machine lowers the rates).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS_MD = BENCH / "RESULTS.md"
SECTION = "## Durability"
MODES = ("memory", "always", "everysec", "never")
LISTENING = re.compile(rb"wonderq listening on http://127\.0\.0\.1:(\d+)")
RECOVERED = re.compile(
    rb"recovered (\d+) messages in (\d+) queues from .* in ([0-9.]+) s \(read ([0-9.]+) s\)"
)


def log(msg: str) -> None:
    print(f"[durability] {msg}", file=sys.stderr, flush=True)


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def pinning() -> tuple[list[str], list[str], str]:
    """taskset prefixes for the server and wrk, and a sentence saying so."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) >= 2 and shutil.which("taskset"):
        return (
            ["taskset", "-c", str(cores[0])],
            ["taskset", "-c", str(cores[1])],
            f"server on core {cores[0]}, the load generator on core {cores[1]} (taskset)",
        )
    return [], [], f"not pinned ({len(cores)} core(s))"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its threads (the log's writer included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """``python -m wonderq serve`` from this tree on a free loopback port."""

    def __init__(self, flags: list[str], pin: list[str], log_path: Path) -> None:
        env = dict(os.environ)
        env = {k: v for k, v in env.items() if not k.startswith("WONDERQ_")}
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        cmd = [*pin, sys.executable, "-m", "wonderq", "serve", "--host", "127.0.0.1"]
        cmd += ["--port", "0", *flags]
        self.log_path = log_path
        self.started = time.monotonic()
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        # taskset execs the program, so this PID is the server's.
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
        self.port = 0
        deadline = time.monotonic() + 120
        while not self.port:
            m = LISTENING.search(log_path.read_bytes())
            if m:
                self.port = int(m.group(1))
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server did not start: {self.output()[-2000:]}")
            time.sleep(0.002)
        while not self.healthy():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server never answered /healthz: {self.output()[-2000:]}")
            time.sleep(0.002)
        self.ready_s = time.monotonic() - self.started

    def healthy(self) -> bool:
        with contextlib.suppress(OSError, http.client.HTTPException):
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            try:
                conn.request("GET", "/healthz")
                return conn.getresponse().status == 200
            finally:
                conn.close()
        return False

    def output(self) -> str:
        return self.log_path.read_bytes().decode(errors="replace")

    def stop(self) -> int | None:
        """SIGTERM to our PID, SIGKILL after 60 s (a big log takes a while to flush)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


# ---- 1. publish rate by fsync mode ---------------------------------------------------------------


@dataclass
class RateRun:
    mode: str
    rate: float  # requests/s (every one a 201)
    p50_ms: float
    p99_ms: float
    server_cpu: float  # share of one core used by the server process during the run
    errors: int
    load: str  # load average at the end


@dataclass
class RateResults:
    runs: list[RateRun] = field(default_factory=list)
    duration_s: float = 0.0
    reps: int = 0
    load_start: str = ""
    load_end: str = ""

    def median(self, mode: str) -> float:
        return statistics.median(r.rate for r in self.runs if r.mode == mode)

    def paired_ratio(self, mode: str, per_cpu: bool = False) -> float:
        """Median over repetitions of (mode rate / in-memory rate of the same repetition);
        ``per_cpu``: of requests per server CPU-second instead."""

        def value(r: RateRun) -> float:
            return r.rate / r.server_cpu if per_cpu else r.rate

        mem = [value(r) for r in self.runs if r.mode == "memory"]
        this = [value(r) for r in self.runs if r.mode == mode]
        return statistics.median(t / m for t, m in zip(this, mem, strict=True))


def load_run(
    port: int, pin: list[str], duration_s: float, connections: int, generator: str = "wrk"
) -> dict:
    """One load run of 200 B publishes: wrk with ``wrk/publish.lua``, or httpgen (requests
    built once: light enough that the server, not the generator, is the limit)."""
    if generator == "httpgen":
        if str(BENCH) not in sys.path:  # bench/ is not a package
            sys.path.insert(0, str(BENCH))
        import harness
        from workloads import PUBLISH

        cmd = [*pin, str(harness.httpgen()), "--port", str(port), "-c", str(connections)]
        cmd += ["--duration", f"{duration_s:g}", "--name", "publish", *PUBLISH]
    else:
        cmd = [*pin, "wrk", "-t1", f"-c{connections}", f"-d{duration_s:g}s", "--timeout", "10s"]
        cmd += ["-s", str(BENCH / "wrk" / "publish.lua"), f"http://127.0.0.1:{port}/"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 60).stdout
    for line in out.splitlines():
        for marker in ("WRKJSON ", "LOADJSON "):
            if line.startswith(marker):
                return json.loads(line[len(marker) :])
    raise RuntimeError(f"no result line from {generator}:\n{out[-2000:]}")


def measure_rate(args: argparse.Namespace, workdir: Path) -> RateResults:
    spin, gpin, _ = pinning()
    res = RateResults(duration_s=args.duration, reps=args.runs, load_start=loadavg())
    for rep in range(args.runs):
        order = MODES[rep % len(MODES) :] + MODES[: rep % len(MODES)]
        for mode in order:
            data = workdir / f"rate-{rep}-{mode}"
            flags = [] if mode == "memory" else ["--data-dir", str(data), "--fsync", mode]
            srv = Server(flags, spin, workdir / f"rate-{rep}-{mode}.log")
            try:
                load_run(srv.port, gpin, 1.0, args.connections, args.generator)  # warm-up
                cpu0, t0 = cpu_seconds(srv.proc.pid), time.monotonic()
                result = load_run(srv.port, gpin, args.duration, args.connections, args.generator)
                cpu = (cpu_seconds(srv.proc.pid) - cpu0) / (time.monotonic() - t0)
            finally:
                srv.stop()
            shutil.rmtree(data, ignore_errors=True)
            errors = sum(result["errors"].values())
            run = RateRun(
                mode,
                result["requests"] / result["duration_s"],
                result["latency_ms"]["p50"],
                result["latency_ms"]["p99"],
                cpu,
                errors,
                loadavg(),
            )
            res.runs.append(run)
            log(
                f"rep {rep + 1}/{args.runs} {mode:8s} {run.rate:9,.0f} req/s  p50 {run.p50_ms} ms"
                f"  p99 {run.p99_ms} ms  srv CPU {cpu:.0%}  errors {errors}  load {run.load}"
            )
    res.load_end = loadavg()
    return res


# ---- 2. recovery of a big log --------------------------------------------------------------


@dataclass
class RecoveryResults:
    messages: int = 0
    body_bytes: int = 0
    fill_s: float = 0.0
    disk_bytes: int = 0
    files: list[str] = field(default_factory=list)
    recovered_s: list[float] = field(default_factory=list)  # the server's own figure
    read_s: list[float] = field(default_factory=list)  # of which reading the files
    ready_s: list[float] = field(default_factory=list)  # process start -> /healthz answers
    stop_s: float = 0.0
    load: list[str] = field(default_factory=list)


def fill(port: int, n: int, body_bytes: int, batch: int = 1000) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        sent = 0
        while sent < n:
            k = min(batch, n - sent)
            # Unique bodies of exactly body_bytes bytes.
            bodies = [f"{sent + i:012d}".ljust(body_bytes, "x") for i in range(k)]
            conn.request("POST", "/v1/queues/default/batch", json.dumps(bodies).encode())
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 201:
                raise RuntimeError(f"batch publish answered {resp.status}: {data[:200]!r}")
            sent += k
    finally:
        conn.close()


def measure_recovery(args: argparse.Namespace, workdir: Path) -> RecoveryResults:
    spin, _, _ = pinning()
    res = RecoveryResults(messages=args.messages, body_bytes=args.body_bytes)
    data = workdir / "recovery"
    srv = Server(["--data-dir", str(data)], spin, workdir / "fill.log")
    try:
        t0 = time.monotonic()
        fill(srv.port, args.messages, args.body_bytes)
        res.fill_s = time.monotonic() - t0
        log(f"filled {args.messages:,} messages in {res.fill_s:.1f} s")
    finally:
        t0 = time.monotonic()
        srv.stop()
        res.stop_s = time.monotonic() - t0
    res.disk_bytes = dir_bytes(data)
    res.files = sorted(p.name for p in data.iterdir())
    for i in range(args.restarts):
        res.load.append(loadavg())
        srv = Server(["--data-dir", str(data)], spin, workdir / f"restart-{i}.log")
        try:
            m = RECOVERED.search(srv.log_path.read_bytes())
            if m is None:
                raise RuntimeError(f"no 'recovered' line: {srv.output()[-2000:]}")
            count = int(m.group(1))
            if count != args.messages:
                raise RuntimeError(f"recovered {count} messages, not {args.messages}")
            res.recovered_s.append(float(m.group(3)))
            res.read_s.append(float(m.group(4)))
            res.ready_s.append(srv.ready_s)
        finally:
            srv.stop()
        log(
            f"restart {i + 1}: recovered in {res.recovered_s[-1]:.2f} s (read "
            f"{res.read_s[-1]:.2f} s), /healthz after {res.ready_s[-1]:.2f} s, load {res.load[-1]}"
        )
    shutil.rmtree(data, ignore_errors=True)
    return res


# ---- the report --------------------------------------------------------------------------------


def fmt_rate(x: float) -> str:
    return f"{x / 1000:.1f}k" if x >= 10_000 else f"{x:,.0f}"


def report(args: argparse.Namespace, rate: RateResults | None, rec: RecoveryResults | None) -> str:
    _, _, pin = pinning()
    lines = [
        SECTION,
        "",
        f"_Measured by `python bench/durability.py` on {time.strftime('%Y-%m-%d %H:%M')} "
        f"(commit {git_head()}); {pin}; {os.cpu_count()} cores shared with other work, so "
        "the load average is given with each figure._",
        "",
    ]
    if rate is not None:
        goals = {"everysec": ">= 0.85x", "always": ">= 0.35x"}  # issue 15's
        gen = "httpgen" if args.generator == "httpgen" else "wrk `publish.lua`"
        lines += [
            f"### Publish rate by `--fsync` mode ({gen}, 200 B, {args.connections} connections)",
            "",
            f"Medians of {rate.reps} repetitions of {rate.duration_s:g} s; each repetition runs "
            "the four modes back to back on fresh servers and data directories. *x in-memory*: "
            "median over the repetitions of the mode's rate divided by the in-memory rate of "
            "the same repetition. *srv CPU*: share of core 0 the server process used, its "
            "log threads included (100% = the server is the bottleneck; less = it waited for "
            "the disk, for the generator, or for the other work on the machine). *per CPU-s*: "
            "requests per second of server CPU, the cost of a request whatever else ran, and its "
            f"ratio to in memory. Load average {rate.load_start} at the start, {rate.load_end} at "
            "the end.",
            "",
            "| mode | requests/s | x in-memory | goal | p50 ms | p99 ms | srv CPU | per CPU-s "
            "| each run |",
            "|---|--:|--:|---|--:|--:|--:|--:|---|",
        ]
        for mode in MODES:
            runs = [r for r in rate.runs if r.mode == mode]
            label = "in memory" if mode == "memory" else f"`--fsync {mode}`"
            ratio = "1.00x" if mode == "memory" else f"{rate.paired_ratio(mode):.2f}x"
            lines.append(
                f"| {label} | {fmt_rate(rate.median(mode))} | {ratio} | {goals.get(mode, '')} | "
                f"{statistics.median(r.p50_ms for r in runs):.2f} | "
                f"{statistics.median(r.p99_ms for r in runs):.2f} | "
                f"{statistics.median(r.server_cpu for r in runs):.0%} | "
                f"{fmt_rate(statistics.median(r.rate / r.server_cpu for r in runs))} "
                f"({rate.paired_ratio(mode, per_cpu=True):.2f}x) | "
                + ", ".join(fmt_rate(r.rate) for r in runs)
                + " |"
            )
        lines.append("")
        mem_cpu = statistics.median(r.server_cpu for r in rate.runs if r.mode == "memory")
        if mem_cpu < 0.9 and any(rate.paired_ratio(m) > 1 for m in MODES[1:]):
            lines += [
                f"Reading the ratios: the in-memory server used only {mem_cpu:.0%} of its core "
                "(as in the side-by-side table), so something other than its CPU bounded its "
                "rate, while the `everysec` and `never` servers kept their core busy; their "
                "requests/s can therefore exceed the in-memory rate. *per CPU-s* is the "
                "figure that compares what a request costs.",
                "",
            ]
    if rec is not None:
        per_msg = rec.disk_bytes / rec.messages
        lines += [
            f"### Recovery of {rec.messages:,} messages of {rec.body_bytes} B",
            "",
            f"Filled through `POST /v1/queues/default/batch` (1000 per request, "
            f"{rec.fill_s:.0f} s, `--fsync everysec`), stopped with SIGTERM "
            f"({rec.stop_s:.1f} s), restarted {len(rec.recovered_s)} times on the same "
            f"directory; medians. Load average at the restarts: {'; '.join(rec.load)}.",
            "",
            "| figure | value | goal |",
            "|---|--:|---|",
            f"| recovery, the server's `recovered ... in X s` line | "
            f"{statistics.median(rec.recovered_s):.2f} s | < 3 s |",
            f"| of which reading and checking the files | "
            f"{statistics.median(rec.read_s):.2f} s | |",
            f"| process start to `/healthz` answering | {statistics.median(rec.ready_s):.2f} s | |",
            f"| each restart (recovery) | {', '.join(f'{s:.2f} s' for s in rec.recovered_s)} | |",
            f"| log on disk | {rec.disk_bytes / 1e6:.0f} MB ({', '.join(rec.files)}) | |",
            f"| disk bytes per message | {per_msg:.0f} B ({per_msg - rec.body_bytes:.0f} B "
            f"over the body) | |",
            "",
        ]
    return "\n".join(lines)


def git_head() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except OSError:
        return "?"
    return out or "?"


def write_section(text: str) -> None:
    """Replace the "## Durability" section of RESULTS.md (up to the next "## " heading or the
    end); everything else stays byte for byte. Appended if the file has none."""
    old = RESULTS_MD.read_text() if RESULTS_MD.exists() else "# WonderQ benchmark results\n"
    block = text.rstrip("\n") + "\n"
    m = re.search(rf"^{re.escape(SECTION)}\n", old, re.MULTILINE)
    if m is None:
        new = old.rstrip("\n") + "\n\n" + block
    else:
        nxt = re.search(r"^## ", old[m.end() :], re.MULTILINE)
        end = m.end() + nxt.start() if nxt else len(old)
        new = old[: m.start()] + block + ("\n" if nxt else "") + old[end:]
    RESULTS_MD.write_text(new)


@contextlib.contextmanager
def scratch(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="wonderq-durability-bench-"))
    try:
        yield path
    finally:
        if keep:
            log(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--only", choices=("rate", "recovery"), help="measure only this")
    p.add_argument("--runs", type=int, default=3, help="repetitions of the rate figures")
    p.add_argument("--duration", type=float, default=8.0, help="seconds per wrk run")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument(
        "--generator",
        choices=("wrk", "httpgen"),
        default="wrk",
        help="load generator of the rate figures (httpgen: pre-built requests, lighter)",
    )
    p.add_argument("--messages", type=int, default=1_000_000, help="messages in the big log")
    p.add_argument("--body-bytes", type=int, default=200)
    p.add_argument("--restarts", type=int, default=3, help="restarts timed on the big log")
    p.add_argument("--write", action="store_true", help="put the section into RESULTS.md")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory and logs")
    args = p.parse_args()
    if args.only != "recovery" and args.generator == "wrk" and not shutil.which("wrk"):
        sys.exit("wrk is not installed (apt-get install wrk)")
    with scratch(args.keep) as workdir:
        rate = measure_rate(args, workdir) if args.only != "recovery" else None
        rec = measure_recovery(args, workdir) if args.only != "rate" else None
    text = report(args, rate, rec)
    print(text)
    if args.write:
        write_section(text)
        log(f"wrote the {SECTION!r} section of {RESULTS_MD.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
