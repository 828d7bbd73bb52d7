"""The whole benchmark in one command: WonderQ next to its ceilings and its peers.

    python bench/run.py              # 3 runs of 10 s per workload, rewrites bench/RESULTS.md
    python bench/run.py --quick      # 1 run of 3 s per workload: checks everything end to end

It installs what is missing (Debian: wrk, redis-server, beanstalkd, nginx; PyPI: the ``bench``
extra of pyproject.toml), then, for every run, starts each server on a free loopback port
(pinned to core 0 with taskset), drives it with the same workloads from core 1, stops it, and
at the end writes the medians into the generated region of bench/RESULTS.md. Raw numbers of
every run go to bench/results/run-<time>.json, server logs beside them.

Servers: WonderQ (``python -m wonderq serve``, from this tree), the Python ceiling
(bench/ceiling.py), nginx with one worker (``return 200``), Redis, beanstalkd. See
bench/README.md for what each workload does and what each number means.

Routes WonderQ does not have yet show as "n/a (route missing)"; a server that cannot start
shows "n/a (server missing)". Nothing here kills a process it did not start.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.util
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WRK_DIR = BENCH / "wrk"
RESULTS_MD = BENCH / "RESULTS.md"
RESULTS_DIR = BENCH / "results"
BEGIN = "<!-- BEGIN bench/run.py: generated, do not edit by hand -->"
END = "<!-- END bench/run.py -->"
SIZING_LINE = re.compile(r"1,000,000 x 200 B: [\d.,]+ MB resident.*")

sys.path.insert(0, str(BENCH))
import httpload  # noqa: E402  (bench/ is not a package)
import loadlib  # noqa: E402

MISSING_ROUTE = "n/a (route missing)"
NONE = "-"  # a figure that was not measured
MISSING_SERVER = "n/a (server missing)"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ============================================================================================
# Installing what is missing


DEBIAN = {  # command -> Debian package
    "wrk": "wrk",
    "redis-server": "redis-server",
    "redis-benchmark": "redis-tools",
    "beanstalkd": "beanstalkd",
    "nginx": "nginx",
    "taskset": "util-linux",
}


def ensure_tools(install: bool) -> None:
    missing = sorted({pkg for cmd, pkg in DEBIAN.items() if shutil.which(cmd) is None})
    if missing:
        if not install:
            log(f"missing Debian packages {missing}; their rows will be n/a (--no-install)")
        elif os.geteuid() != 0 and shutil.which("sudo") is None:
            log(f"missing Debian packages {missing} and not root: their rows will be n/a")
        else:
            sudo = [] if os.geteuid() == 0 else ["sudo"]
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            log(f"apt-get install {' '.join(missing)}")
            subprocess.run([*sudo, "apt-get", "update", "-q"], check=False, env=env)
            with no_service_autostart(sudo):
                subprocess.run(
                    [*sudo, "apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
                    check=False,
                    env=env,
                )
    try:
        import locust  # noqa: F401
    except ImportError:
        if install:
            reqs = bench_extra()
            log(f"pip install {' '.join(reqs)} (the bench extra)")
            subprocess.run([sys.executable, "-m", "pip", "install", *reqs], check=False)
    ensure_wonderq_built(install)


@contextlib.contextmanager
def no_service_autostart(sudo: list[str]) -> Iterator[None]:
    """Debian starts nginx, redis-server and beanstalkd as system services on install (ports
    80, 6379, 11300). The benchmark starts its own on free ports and stops them; it must not
    leave daemons behind. A policy-rc.d that answers 101 ("action forbidden") stops invoke-rc.d
    from starting them, for the length of the install only (and only if none exists already)."""
    policy = Path("/usr/sbin/policy-rc.d")
    if policy.exists():
        yield
        return
    script = (
        "#!/bin/sh\n# written by bench/run.py during apt-get install; removed after\nexit 101\n"
    )
    subprocess.run(
        [*sudo, "tee", str(policy)], input=script, text=True, stdout=subprocess.DEVNULL, check=False
    )
    subprocess.run([*sudo, "chmod", "755", str(policy)], check=False)
    try:
        yield
    finally:
        subprocess.run([*sudo, "rm", "-f", str(policy)], check=False)


def bench_extra() -> list[str]:
    try:
        import tomllib

        with open(ROOT / "pyproject.toml", "rb") as f:
            return list(tomllib.load(f)["project"]["optional-dependencies"]["bench"])
    except Exception:  # Python 3.10 has no tomllib; the extra's main entry is enough
        return ["locust>=2.20"]


def ensure_wonderq_built(install: bool) -> None:
    """Compile the engine in place when the tree has it but it is not built."""
    if not (ROOT / "wonderq" / "_core.pyx").exists():
        return
    probe = subprocess.run(
        [sys.executable, "-c", "import wonderq._core"],
        cwd=ROOT,
        env=tree_env(),
        capture_output=True,
    )
    if probe.returncode != 0 and install:
        log("building the engine: python setup.py build_ext --inplace")
        subprocess.run(
            [sys.executable, "setup.py", "build_ext", "--inplace", "-q"], cwd=ROOT, check=False
        )


def tree_env(**extra: str) -> dict[str, str]:
    """Environment that makes ``python -m wonderq`` run this working tree."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


# ============================================================================================
# Cores, processes, ports


def cpu_plan() -> tuple[list[str], list[str], str]:
    """taskset prefixes for the server and the load generator, and a sentence saying so."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) >= 2 and shutil.which("taskset"):
        s, g = cores[0], cores[1]
        return (
            ["taskset", "-c", str(s)],
            ["taskset", "-c", str(g)],
            f"server pinned to core {s}, load generator to core {g} (taskset)",
        )
    return [], [], f"not pinned ({len(cores)} core(s) available): server and load share them"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"not listening on {port} after {timeout:.0f} s")


def proc_children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            kids.append(int(entry))
    return kids


def proc_cpu_s(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += httpload.proc_cpu_s(pid)
    return total


def proc_rss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@dataclass
class Server:
    """A server this run started: we stop it by its PID and only by its PID."""

    name: str
    proc: subprocess.Popen
    port: int
    log_path: Path
    tmpdir: tempfile.TemporaryDirectory | None = None
    pids_for_cpu: list[int] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_s(self) -> float:
        return proc_cpu_s(self.pids_for_cpu or [self.pid])

    def rss(self) -> int | None:
        return proc_rss_bytes(self.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                log(f"{self.name} (pid {self.pid}) ignored SIGTERM for 15 s: SIGKILL")
                self.proc.kill()
                self.proc.wait(5)
        if self.tmpdir is not None:
            self.tmpdir.cleanup()


class Launcher:
    """Starts every kind of server with the same pinning and logging."""

    def __init__(self, pin: list[str], logdir: Path) -> None:
        self.pin = pin
        self.logdir = logdir
        self.count = 0

    def _spawn(
        self, name: str, cmd: list[str], env: dict | None = None, cwd: Path | None = None
    ) -> tuple[subprocess.Popen, Path]:
        self.count += 1
        log_path = self.logdir / f"{self.count:03d}-{name}.log"
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(
                [*self.pin, *cmd],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=cwd,
            )
        return proc, log_path

    def _announced_port(self, proc: subprocess.Popen, log_path: Path, timeout: float) -> int:
        """Reads ``... listening on http://127.0.0.1:PORT`` (or https) from the server's output."""
        deadline = time.monotonic() + timeout
        pattern = re.compile(rb"listening on https?://[\d.]+:(\d+)")
        while time.monotonic() < deadline:
            m = pattern.search(log_path.read_bytes())
            if m:
                return int(m.group(1))
            if proc.poll() is not None:
                tail = log_path.read_bytes()[-2000:].decode(errors="replace")
                raise RuntimeError(f"exited with {proc.returncode}: {tail}")
            time.sleep(0.05)
        proc.kill()
        proc.wait()
        raise RuntimeError(f"no 'listening on' line within {timeout:.0f} s")

    def wonderq(self, *flags: str) -> Server:
        cmd = wonderq_command()
        if cmd is None:
            raise ServerMissing("no wonderq/__main__.py and no wonderq console script")
        proc, log_path = self._spawn(
            "wonderq", [*cmd, "serve", "--host", "127.0.0.1", "--port", "0", *flags], tree_env()
        )
        try:
            port = self._announced_port(proc, log_path, 30)
        except RuntimeError as exc:
            raise ServerMissing(f"wonderq serve: {exc}") from exc
        return Server("wonderq", proc, port, log_path)

    def ceiling(self) -> Server:
        proc, log_path = self._spawn(
            "ceiling", [sys.executable, str(BENCH / "ceiling.py"), "--port", "0"]
        )
        return Server("ceiling", proc, self._announced_port(proc, log_path, 20), log_path)

    def nginx(self) -> Server:
        exe = shutil.which("nginx")
        if exe is None:
            raise ServerMissing("nginx is not installed")
        tmp = tempfile.TemporaryDirectory(prefix="wonderq-nginx-")
        port = free_port()
        conf = Path(tmp.name) / "nginx.conf"
        template = (BENCH / "peers" / "nginx.conf.template").read_text()
        user = "user root;" if os.geteuid() == 0 else ""  # root: no setuid, temp dirs stay ours
        conf.write_text(
            template.replace("@PORT@", str(port))
            .replace("@PREFIX@", tmp.name)
            .replace("@USER@", user)
        )
        proc, log_path = self._spawn(
            "nginx", [exe, "-p", tmp.name, "-c", str(conf), "-e", f"{tmp.name}/error.log"]
        )
        server = Server("nginx", proc, port, log_path, tmp)
        try:
            wait_port(port, proc)
        except RuntimeError as exc:
            server.stop()
            raise ServerMissing(f"nginx: {exc}") from exc
        server.pids_for_cpu = [proc.pid, *proc_children(proc.pid)]  # master + its one worker
        return server

    def redis(self) -> Server:
        exe = shutil.which("redis-server")
        if exe is None:
            raise ServerMissing("redis-server is not installed")
        tmp = tempfile.TemporaryDirectory(prefix="wonderq-redis-")
        port = free_port()
        cmd = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
        cmd += ["no", "--dir", tmp.name, "--daemonize", "no"]
        proc, log_path = self._spawn("redis", cmd)
        server = Server("redis", proc, port, log_path, tmp)
        try:
            wait_port(port, proc)
        except RuntimeError as exc:
            server.stop()
            raise ServerMissing(f"redis-server: {exc}") from exc
        return server

    def beanstalkd(self) -> Server:
        exe = shutil.which("beanstalkd")
        if exe is None:
            raise ServerMissing("beanstalkd is not installed")
        port = free_port()  # no -b: no binlog, jobs in memory only, like the others here
        proc, log_path = self._spawn("beanstalkd", [exe, "-l", "127.0.0.1", "-p", str(port)])
        server = Server("beanstalkd", proc, port, log_path)
        try:
            wait_port(port, proc)
        except RuntimeError as exc:
            server.stop()
            raise ServerMissing(f"beanstalkd: {exc}") from exc
        return server


class ServerMissing(Exception):
    pass


class RouteMissing(Exception):
    pass


def wonderq_command() -> list[str] | None:
    """``$WONDERQ_SERVER_CMD`` when set (to measure another build), else this tree's package."""
    override = os.environ.get("WONDERQ_SERVER_CMD")
    if override:
        return shlex.split(override)
    if (ROOT / "wonderq" / "__main__.py").exists():
        return [sys.executable, "-m", "wonderq"]
    script = shutil.which("wonderq")
    return [script] if script else None


@contextlib.contextmanager
def running(start: Callable[[], Server]) -> Iterator[Server]:
    server = start()
    try:
        yield server
    finally:
        server.stop()


# ============================================================================================
# Running one load generator and reading its result


@dataclass
class Bench:
    args: argparse.Namespace
    gen_pin: list[str]
    launcher: Launcher
    features: dict[str, bool] = field(default_factory=dict)
    rates: dict[str, float] = field(default_factory=dict)  # last messages/s per workload key

    @property
    def duration(self) -> float:
        return self.args.duration

    def expected(self, key: str, default: float) -> float:
        return self.rates.get(key, default)

    def measure(self, server: Server, cmd: list[str], env: dict | None = None) -> dict:
        """Runs one load generator against ``server``; returns its JSON result plus rates,
        the server's CPU share and the load generator's CPU share during the run."""
        full = [*self.gen_pin, *cmd]
        resource_children_delta()  # baseline: nothing else is reaped until this child is
        busy0 = machine_busy_s()
        cpu0, t0 = server.cpu_s(), time.perf_counter()
        proc = subprocess.Popen(
            full,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=ROOT,
        )
        try:
            out, err = proc.communicate(timeout=self.duration * 4 + 180)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise RuntimeError(f"load generator timed out: {shlex.join(full)}") from None
        wall = time.perf_counter() - t0
        if server.proc.poll() is not None:
            tail = server.log_path.read_bytes()[-1500:].decode(errors="replace")
            raise RuntimeError(
                f"{server.name} exited ({server.proc.returncode}) under load: {tail}"
            )
        cpu1 = server.cpu_s()
        busy1 = machine_busy_s()
        # rusage of the child we just reaped: the load generator's own CPU time
        usage = resource_children_delta()
        text = out.decode(errors="replace")
        result = parse_result(text)
        if result is None:
            raise RuntimeError(
                f"no result line from {shlex.join(full)} (exit {proc.returncode}): "
                f"{(text + err.decode(errors='replace'))[-600:]}"
            )
        d = result.get("duration_s") or wall
        result["rps"] = result["requests"] / d if d else 0.0
        result["mps"] = result["messages"] / d if d else 0.0
        result["server_cpu"] = (cpu1 - cpu0) / wall if wall else None
        result["loadgen_cpu"] = usage / wall if wall else None
        # CPU that neither side used: other work on a shared machine (in cores' worth)
        result["other_cpu"] = max(0.0, (busy1 - busy0) - (cpu1 - cpu0) - usage) / wall
        result["command"] = shlex.join(full)
        return result


def machine_busy_s() -> float:
    """CPU seconds all cores spent not idle since boot, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / httpload.CLK_TCK


_last_children_cpu = [0.0]


def resource_children_delta() -> float:
    """CPU seconds used by children reaped since the previous call (our load generators)."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = ru.ru_utime + ru.ru_stime
    delta = total - _last_children_cpu[0]
    _last_children_cpu[0] = total
    return delta


def parse_result(text: str) -> dict | None:
    for line in reversed(text.splitlines()):
        for marker in ("WRKJSON ", "LOADJSON "):
            if line.startswith(marker):
                return json.loads(line[len(marker) :])
    # redis-benchmark --csv: "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",...
    rows = [r for r in text.splitlines() if r.startswith('"') and not r.startswith('"test"')]
    if rows:
        cols = [c.strip('"') for c in rows[-1].split(",")]
        return {
            "script": cols[0],
            "redis_benchmark": True,
            "rps_reported": float(cols[1]),
            "requests": 0,
            "messages": 0,
            "latency_ms": {
                "p50": float(cols[4]),
                "p99": float(cols[6]),
                "max": float(cols[7]),
                "mean": float(cols[2]),
            },
        }
    return None


def wrk_cmd(bench: Bench, script: str, port: int, threads: int = 1) -> list[str]:
    return [
        "wrk",
        f"-t{threads}",
        f"-c{bench.args.connections}",
        f"-d{bench.duration:g}s",
        "--timeout",
        "10s",
        "-s",
        str(WRK_DIR / f"{script}.lua"),
        f"http://127.0.0.1:{port}/",
    ]


# ============================================================================================
# Workloads


@dataclass
class Workload:
    key: str  # stable id in results
    label: str  # row label
    script: str = ""  # wrk script, for the HTTP servers
    needs: tuple[str, ...] = ()  # WonderQ features it needs
    prefill: str = ""  # "single" or "batch": fill the queue before (consuming workloads)
    default_rate: float = 50_000.0  # messages/s guess for sizing the prefill of the first run


HTTP_WORKLOADS = [
    Workload("publish", "publish 200 B", "publish", ("publish",)),
    Workload(
        "recv_delete",
        "receive + delete (limit=1)",
        "recv_delete",
        ("receive", "delete"),
        "single",
        30_000,
    ),
    Workload("batch_publish", "batch publish 100 x 200 B", "batch_publish", ("batch",)),
    Workload(
        "batch_recv_ack",
        "batch receive 100 + batch ack",
        "batch_recv_ack",
        ("receive", "batch", "ack"),
        "batch",
        700_000,
    ),
    Workload("pipeline_publish", "publish 200 B, 16 pipelined", "pipeline_publish", ("publish",)),
]


def guarded(fn: Callable[[], dict]) -> dict:
    try:
        return fn()
    except RouteMissing as exc:
        return {"na": MISSING_ROUTE, "why": str(exc)}
    except ServerMissing as exc:
        return {"na": MISSING_SERVER, "why": str(exc)}
    except Exception as exc:  # one broken workload must not lose the others
        log(f"  error: {exc}")
        return {"na": f"error: {str(exc).splitlines()[0][:120]}", "trace": traceback.format_exc()}


def check_features(bench: Bench, w: Workload) -> None:
    missing = [f for f in w.needs if not bench.features.get(f)]
    if missing:
        raise RouteMissing(", ".join(missing))


def fill_wonderq(bench: Bench, server: Server, count: int) -> dict:
    batch = 1000 if bench.features.get("batch") else 1
    t0 = time.perf_counter()
    result = loadlib.run(httpload.fill("127.0.0.1", server.port, count, 200, "default", batch))
    if result["bad"] or result["messages"] != count:
        raise RuntimeError(f"fill stored {result['messages']} of {count} ({result['bad']} failed)")
    log(f"  filled {count:,} in {time.perf_counter() - t0:.1f} s ({result['script']})")
    return result


def run_http(bench: Bench, out: dict, groups: list[str]) -> None:
    """Every wrk workload against the ceilings and WonderQ, back to back for each workload, so
    that a ratio compares figures taken within seconds of each other (the machine may be
    shared). The ceilings are stateless and run for the whole loop; WonderQ gets a fresh
    process per workload."""
    for group in ("ceiling", "nginx", "wonderq"):
        out.setdefault(group, {})
    if shutil.which("wrk") is None:
        for group in ("ceiling", "nginx", "wonderq"):
            for w in HTTP_WORKLOADS:
                out[group][w.key] = {"na": "n/a (wrk missing)"}
        return
    starters = {"ceiling": bench.launcher.ceiling, "nginx": bench.launcher.nginx}
    ceilings: dict[str, Server | str] = {}
    try:
        if "ceiling" in groups:
            for name, start in starters.items():
                try:
                    ceilings[name] = start()
                except ServerMissing as exc:
                    ceilings[name] = str(exc)
        for w in HTTP_WORKLOADS:
            for name in list(ceilings):
                server = ceilings[name]
                if isinstance(server, str):
                    out[name][w.key] = {"na": MISSING_SERVER, "why": server}
                    continue
                if server.proc.poll() is not None:  # something ended it: a fresh one
                    log(f"{name} exited ({server.proc.returncode}); starting another")
                    server.stop()
                    server = ceilings[name] = starters[name]()
                log(f"{name}: {w.label}")
                out[name][w.key] = guarded(
                    lambda w=w, server=server: bench.measure(
                        server, wrk_cmd(bench, w.script, server.port)
                    )
                )
            if "wonderq" in groups:
                log(f"wonderq: {w.label}")
                out["wonderq"][w.key] = guarded(lambda w=w: wonderq_workload(bench, w))
    finally:
        for server in ceilings.values():
            if isinstance(server, Server):
                server.stop()


def wonderq_workload(bench: Bench, w: Workload) -> dict:
    check_features(bench, w)
    with running(bench.launcher.wonderq) as server:
        prefill = 0
        if w.prefill:
            rate = bench.expected(w.key, w.default_rate)
            prefill = int(min(8_000_000, max(20_000, rate * bench.duration * 1.5)))
            fill_wonderq(bench, server, prefill)
        result = bench.measure(server, wrk_cmd(bench, w.script, server.port))
        result["prefill"] = prefill
        result["rss_after"] = server.rss()
        if w.prefill and result["messages"]:
            bench.rates[w.key] = result["mps"]
        return result


def run_depth(bench: Bench, out: dict) -> None:
    rows = out.setdefault("depth", {})
    for depth in bench.args.depths:
        key = f"depth_{depth}"
        log(f"wonderq: publish + receive + delete at depth {depth:,}")

        def one(depth: int = depth) -> dict:
            check_features(bench, Workload("", "", needs=("publish", "receive", "delete")))
            if shutil.which("wrk") is None:
                return {"na": "n/a (wrk missing)"}
            with running(bench.launcher.wonderq) as server:
                rss_empty = server.rss()
                fill = fill_wonderq(bench, server, depth) if depth else None
                memory = None
                if depth == 1_000_000:
                    memory = read_wonderq_memory(bench, server, rss_empty)
                result = bench.measure(server, wrk_cmd(bench, "publish_recv_delete", server.port))
                result["depth"] = depth
                result["memory"] = memory
                result["fill_s"] = fill["duration_s"] if fill else 0
                return result

        rows[key] = guarded(one)


def read_wonderq_memory(bench: Bench, server: Server, rss_empty: int | None) -> dict:
    time.sleep(0.5)
    memory: dict[str, Any] = {"vmrss": server.rss(), "vmrss_empty": rss_empty}
    if bench.features.get("metrics"):
        with contextlib.suppress(Exception):
            r = httpload.call_sync("127.0.0.1", server.port, "GET", "/metrics")
            m = httpload.parse_metrics(r.body.decode())
            memory["process_resident_memory_bytes"] = m.get("process_resident_memory_bytes")
            memory["wonderq_memory_bytes"] = httpload.metric(m, "wonderq_memory_bytes")
    return memory


def run_longpoll(bench: Bench, out: dict) -> None:
    log("wonderq: long polling, 1,000 parked waiters")

    def one() -> dict:
        check_features(bench, Workload("", "", needs=("longpoll", "publish")))
        with running(bench.launcher.wonderq) as server:
            return loadlib.run(
                httpload.longpoll(
                    "127.0.0.1",
                    server.port,
                    server.pid,
                    waiters=bench.args.waiters,
                    idle_s=bench.args.idle,
                    wakes=bench.args.waiters,
                )
            )

    out["longpoll"] = guarded(one)


PEER_KEYS = ("lpush_p1", "lpush_p16", "reliable_p1", "reliable_p16")
PEER_KEYS += ("put_p1", "put_p16", "work_p1", "work_p16")


def run_redis(bench: Bench, out: dict) -> None:
    rows = out.setdefault("redis", {})
    tool = [sys.executable, str(BENCH / "peers" / "redis_queue.py")]
    try:
        with running(bench.launcher.redis) as server:
            port = ["--port", str(server.port)]
            log("redis: fill 1,000,000 x 200 B")
            rows["fill"] = guarded(
                lambda: bench.measure(server, [*tool, *port, "fill", "--count", "1000000"])
            )
            time.sleep(0.5)
            rows["memory"] = {"vmrss": server.rss()}
            left = 1_000_000  # messages in the list; the reliable runs consume them
            for depth in (1, 16):
                key = f"reliable_p{depth}"
                log(f"redis: LMOVE + LREM, pipeline {depth}")
                default = 60_000 * depth**0.5
                need = int(bench.expected(f"redis_{key}", default) * bench.duration * 1.5)
                if need > left:  # top up with values that stay unique
                    fill = [*tool, *port, "fill", "--count", str(need - left)]
                    fill += ["--start", str(10_000_000 + depth * 10_000_000)]
                    guarded(lambda fill=fill: bench.measure(server, fill))
                    left = need
                cmd = [*tool, *port, "reliable", "-c", str(bench.args.connections)]
                cmd += ["--pipeline", str(depth), "--duration", f"{bench.duration:g}"]
                rows[key] = guarded(lambda cmd=cmd: bench.measure(server, cmd))
                left -= rows[key].get("messages", 0)
                if rows[key].get("mps"):
                    bench.rates[f"redis_{key}"] = rows[key]["mps"]
            if shutil.which("redis-benchmark"):
                for depth in (1, 16):
                    key = f"lpush_p{depth}"
                    log(f"redis: LPUSH (redis-benchmark), pipeline {depth}")
                    rate = bench.expected(f"redis_{key}", 30_000 * depth**0.9)
                    n = max(10_000, int(rate * bench.duration))
                    cmd = ["redis-benchmark", *("-h", "127.0.0.1", "-p", str(server.port))]
                    cmd += ["-c", str(bench.args.connections), "-n", str(n), "-P", str(depth)]
                    cmd += ["-d", "200", "-t", "lpush", "--csv"]
                    rows[key] = guarded(lambda cmd=cmd, n=n: redis_benchmark(bench, server, cmd, n))
                    if rows[key].get("mps"):
                        bench.rates[f"redis_{key}"] = rows[key]["mps"]
            else:
                for depth in (1, 16):
                    rows[f"lpush_p{depth}"] = {"na": "n/a (redis-benchmark missing)"}
    except ServerMissing as exc:
        for key in ("memory", *PEER_KEYS):
            rows.setdefault(key, {"na": MISSING_SERVER, "why": str(exc)})


def redis_benchmark(bench: Bench, server: Server, cmd: list[str], n: int) -> dict:
    result = bench.measure(server, cmd)
    # redis-benchmark reports its own rate over the time it measured; it is count-bound
    result["requests"] = n
    result["messages"] = n
    result["rps"] = result["mps"] = result["rps_reported"]
    result["duration_s"] = n / result["rps_reported"] if result["rps_reported"] else None
    return result


def run_beanstalkd(bench: Bench, out: dict) -> None:
    rows = out.setdefault("beanstalkd", {})
    tool = [sys.executable, str(BENCH / "peers" / "beanstalk_queue.py")]
    try:
        with running(bench.launcher.beanstalkd) as server:
            port = ["--port", str(server.port)]
            log("beanstalkd: fill 1,000,000 x 200 B")
            rows["fill"] = guarded(
                lambda: bench.measure(server, [*tool, *port, "fill", "--count", "1000000"])
            )
            time.sleep(0.5)
            rows["memory"] = {"vmrss": server.rss()}
            left = 1_000_000  # jobs ready; the work runs consume them
            for depth in (1, 16):
                key = f"work_p{depth}"
                log(f"beanstalkd: reserve + delete, pipeline {depth}")
                default = 40_000 * depth**0.5
                need = int(bench.expected(f"beanstalkd_{key}", default) * bench.duration * 1.5)
                if need > left:
                    fill = [*tool, *port, "fill", "--count", str(need - left)]
                    guarded(lambda fill=fill: bench.measure(server, fill))
                    left = need
                cmd = [*tool, *port, "work", "-c", str(bench.args.connections)]
                cmd += ["--pipeline", str(depth), "--duration", f"{bench.duration:g}"]
                rows[key] = guarded(lambda cmd=cmd: bench.measure(server, cmd))
                left -= rows[key].get("messages", 0)
                if rows[key].get("mps"):
                    bench.rates[f"beanstalkd_{key}"] = rows[key]["mps"]
            for depth in (1, 16):
                key = f"put_p{depth}"
                log(f"beanstalkd: put, pipeline {depth}")
                cmd = [*tool, *port, "put", "-c", str(bench.args.connections)]
                cmd += ["--pipeline", str(depth), "--duration", f"{bench.duration:g}"]
                rows[key] = guarded(lambda cmd=cmd: bench.measure(server, cmd))
    except ServerMissing as exc:
        for key in ("memory", *PEER_KEYS):
            rows.setdefault(key, {"na": MISSING_SERVER, "why": str(exc)})


def run_sizing(bench: Bench, out: dict) -> None:
    """The Locust sizing scenario (bench/locust_sizing.py), once, on a fresh server."""
    log("wonderq: Locust sizing scenario (1,000,000 x 200 B, fill then drain)")

    def one() -> dict:
        # 1M single publishes and deletes through Locust take the best part of an hour on
        # one core: the runner waits for the batch routes (the scenario itself falls back).
        check_features(bench, Workload("", "", needs=("batch", "ack", "receive", "metrics")))
        if importlib.util.find_spec("locust") is None:
            return {"na": "n/a (locust missing)"}
        with running(bench.launcher.wonderq) as server:
            prefix = RESULTS_DIR / "sizing"
            cmd = [sys.executable, "-m", "locust", "-f", str(BENCH / "locust_sizing.py")]
            cmd += ["--headless", "--host"]
            cmd += [f"http://127.0.0.1:{server.port}", "--csv", str(prefix)]
            cmd += ["--html", f"{prefix}.html", "--only-summary", "--loglevel", "WARNING"]
            full = [*bench.gen_pin, *cmd]
            t0 = time.perf_counter()
            proc = subprocess.run(
                full, capture_output=True, text=True, cwd=ROOT, timeout=1800, check=False
            )
            text = proc.stdout + proc.stderr
            (RESULTS_DIR / "sizing.log").write_text(text)
            m = SIZING_LINE.search(text)
            return {
                "line": m.group(0).strip() if m else None,
                "exit": proc.returncode,
                "seconds": round(time.perf_counter() - t0, 1),
                "command": shlex.join(cmd),
                "tail": text[-1500:],
            }

    out["sizing"] = guarded(one)


# ============================================================================================
# Aggregation and the markdown


def med(values: list[float | None]) -> float | None:
    vals = [v for v in values if isinstance(v, (int, float))]
    return statistics.median(vals) if vals else None


def cell_runs(runs: list[dict], group: str, key: str) -> list[dict]:
    return [r.get(group, {}).get(key, {}) for r in runs]


def fmt_rate(v: float | None) -> str:
    if v is None:
        return NONE
    if v >= 100_000:
        return f"{v / 1000:,.0f}k"
    if v >= 10_000:
        return f"{v / 1000:,.1f}k"
    return f"{v:,.0f}"


def fmt_ms(v: float | None) -> str:
    if v is None:
        return NONE
    return f"{v:.2f}" if v < 10 else f"{v:.1f}"


def fmt_x(v: float | None) -> str:
    return NONE if v is None else f"{v:.2f}x"


def fmt_pct(v: float | None) -> str:
    return NONE if v is None else f"{100 * v:.0f}%"


def fmt_mb(v: float | None) -> str:
    """MB = 10**6 bytes (the goals' unit, read strictly)."""
    return NONE if v is None else f"{v / 1e6:,.1f} MB"


@dataclass
class Row:
    server: str
    workload: str
    cells: list[dict]
    how: str = ""

    def na(self) -> str | None:
        """Why there is no figure: only when no run produced one."""
        if any("requests" in c for c in self.cells):
            return None
        for c in self.cells:
            if c.get("na"):
                return c["na"]
        return "not run"

    def partial(self) -> str:
        """ "2 of 3 runs" when some runs failed (the median is over the others)."""
        good = sum(1 for c in self.cells if "requests" in c)
        return f"{good} of {len(self.cells)} runs" if good < len(self.cells) else ""

    def m(self, metric: str) -> float | None:
        if metric in ("p50", "p99"):
            return med([c.get("latency_ms", {}).get(metric) for c in self.cells])
        return med([c.get(metric) for c in self.cells])


def ratio(runs: list[dict], group: str, key: str, base_group: str, base_key: str) -> float | None:
    """Median over runs of this run's requests/s divided by the base's, same run."""
    vals = []
    for r in runs:
        a = r.get(group, {}).get(key, {}).get("rps")
        b = r.get(base_group, {}).get(base_key, {}).get("rps")
        if a and b:
            vals.append(a / b)
    return med(vals)


REDIS_PY = "peers/redis_queue.py (Python client)"
BEANSTALK_PY = "peers/beanstalk_queue.py (Python client)"


def throughput_rows(runs: list[dict]) -> list[tuple[Row, str | None]]:
    """(row, key of the same workload on the ceilings, for ratios)."""
    rows: list[tuple[Row, str | None]] = []
    for group, name in (
        ("wonderq", "WonderQ"),
        ("ceiling", "Python ceiling"),
        ("nginx", "nginx, 1 worker"),
    ):
        for w in HTTP_WORKLOADS:
            rows.append(
                (Row(name, w.label, cell_runs(runs, group, w.key), f"wrk {w.script}.lua"), w.key)
            )
    peer_rows = [
        ("redis", "lpush_p1", "Redis", "LPUSH 200 B", "redis-benchmark"),
        ("redis", "lpush_p16", "Redis", "LPUSH 200 B, 16 pipelined", "redis-benchmark -P 16"),
        ("redis", "reliable_p1", "Redis", "LMOVE + LREM (reliable queue)", REDIS_PY),
        ("redis", "reliable_p16", "Redis", "LMOVE + LREM, 16 pipelined", REDIS_PY),
        ("beanstalkd", "put_p1", "beanstalkd", "put 200 B", BEANSTALK_PY),
        ("beanstalkd", "put_p16", "beanstalkd", "put 200 B, 16 pipelined", BEANSTALK_PY),
        ("beanstalkd", "work_p1", "beanstalkd", "reserve + delete", BEANSTALK_PY),
        ("beanstalkd", "work_p16", "beanstalkd", "reserve + delete, 16 pipelined", BEANSTALK_PY),
    ]
    for group, key, name, label, how in peer_rows:
        rows.append((Row(name, label, cell_runs(runs, group, key), how), None))
    return rows


def group_key(row: Row) -> str:
    return {"WonderQ": "wonderq", "Python ceiling": "ceiling", "nginx, 1 worker": "nginx"}.get(
        row.server, ""
    )


def render(runs: list[dict], meta: dict) -> str:
    out: list[str] = []
    a = out.append
    n = len(runs)
    a(
        f"_Generated by `{meta['command']}` on {meta['date']}; medians of {n} run(s), "
        f"{meta['duration']:g} s per workload, {meta['connections']} connections, "
        f"{meta['pinning']}._"
    )
    a("")
    a("### Machine")
    a("")
    for k, v in meta["machine"].items():
        a(f"- {k}: {v}")
    a("")
    a("### Throughput and latency")
    a("")
    a(
        "Requests/s and messages/s are medians over the runs; p50/p99 are per request (per round "
        "of 16 when pipelined) in milliseconds. *x ceiling* and *x nginx* divide requests/s by the "
        "same workload's requests/s on the Python ceiling and on nginx in the same run, then take "
        "the median. *srv CPU* / *gen CPU*: share of one core used by the server and by the load "
        "generator during the run (100% = that side is the bottleneck). *other CPU*: what the "
        "rest of the machine used meanwhile (out of 200% on 2 cores); when it is high, both "
        "sides were starved and the absolute rates are low, while the ratios, taken seconds "
        "apart, still compare like with like."
    )
    a("")
    a(
        "| server | workload | requests/s | messages/s | p50 ms | p99 ms | x ceiling | x nginx "
        "| srv CPU | gen CPU | other CPU | load |"
    )
    a("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|")
    for row, base in throughput_rows(runs):
        na = row.na()
        if na:
            a(f"| {row.server} | {row.workload} | {na} | | | | | | | | | {row.how} |")
            continue
        g = group_key(row)
        xc = ratio(runs, g, base, "ceiling", base) if g and g != "ceiling" and base else None
        xn = ratio(runs, g, base, "nginx", base) if g and g != "nginx" and base else None
        notes = [row.partial()] if row.partial() else []
        empties = med([c.get("empty") for c in row.cells])
        if empties and row.server == "WonderQ":
            notes.append(f"{empties:,.0f} empty receives")
        a(
            f"| {row.server} | {row.workload} | {fmt_rate(row.m('rps'))} | "
            f"{fmt_rate(row.m('mps'))} | {fmt_ms(row.m('p50'))} | {fmt_ms(row.m('p99'))} | "
            f"{fmt_x(xc)} | {fmt_x(xn)} | {fmt_pct(row.m('server_cpu'))} | "
            f"{fmt_pct(row.m('loadgen_cpu'))} | {fmt_pct(row.m('other_cpu'))} | "
            f"{row.how}{'; ' if notes else ''}"
            f"{'; '.join(notes)} |"
        )
    a("")
    a(
        "Ceiling rows run WonderQ's own wrk scripts: the ceiling answers every request with the "
        "same fixed 200, so its *receive* rows are receives only (nothing to delete)."
    )
    a("")

    # ---- memory
    a("### Resident memory with 1,000,000 messages of 200 B")
    a("")
    a("| server | resident (VmRSS) | empty | per message | how |")
    a("|---|--:|--:|--:|---|")
    wq = [r.get("depth", {}).get("depth_1000000", {}) for r in runs]
    wq_mem = [c.get("memory") or {} for c in wq]
    wq_na = next((c.get("na") for c in wq if c.get("na")), None)
    if wq_na or not any(wq_mem):
        a(f"| WonderQ | {wq_na or 'not run'} | | | |")
    else:
        rss = med([m.get("vmrss") for m in wq_mem])
        empty = med([m.get("vmrss_empty") for m in wq_mem])
        prom = med([m.get("process_resident_memory_bytes") for m in wq_mem])
        per = (rss - empty) / 1e6 if rss and empty else None
        extra = f"; /metrics process_resident_memory_bytes {fmt_mb(prom)}" if prom else ""
        per_msg = NONE if per is None else f"{per:.0f} B"
        a(f"| WonderQ | {fmt_mb(rss)} | {fmt_mb(empty)} | {per_msg} | VmRSS{extra} |")
    for group, name in (("redis", "Redis"), ("beanstalkd", "beanstalkd")):
        cells = [r.get(group, {}).get("memory", {}) for r in runs]
        na = next((c.get("na") for c in cells if c.get("na")), None)
        if na:
            a(f"| {name} | {na} | | | |")
            continue
        rss = med([c.get("vmrss") for c in cells])
        a(
            f"| {name} | {fmt_mb(rss)} | | {NONE if not rss else f'{rss / 1e6:.0f} B'} | "
            f"1M unique values, VmRSS |"
        )
    sizing = runs[0].get("sizing") if runs else None
    if sizing:
        a("")
        if sizing.get("na"):
            a(f"Locust sizing scenario: {sizing['na']}.")
        else:
            status = "passed" if sizing.get("exit") == 0 else f"FAILED (exit {sizing.get('exit')})"
            a(
                f"Locust sizing scenario ({status}, {sizing.get('seconds')} s, "
                f"`{sizing.get('command')}`):"
            )
            a("")
            a(f"**{sizing.get('line') or 'no sizing line printed: see bench/results/sizing.log'}**")
    a("")

    # ---- depth
    a("### Depth sweep: publish + receive + delete (wrk publish_recv_delete.lua)")
    a("")
    a("| depth | messages/s (full lives) | requests/s | p50 ms | p99 ms | x depth 0 | srv CPU |")
    a("|--:|--:|--:|--:|--:|--:|--:|")
    for depth in meta["depths"]:
        row = Row("WonderQ", str(depth), cell_runs(runs, "depth", f"depth_{depth}"))
        na = row.na()
        if na:
            a(f"| {depth:,} | {na} | | | | | |")
            continue
        vals = []
        for r in runs:
            x = r.get("depth", {}).get(f"depth_{depth}", {}).get("mps")
            b = r.get("depth", {}).get("depth_0", {}).get("mps")
            if x and b:
                vals.append(x / b)
        a(
            f"| {depth:,} | {fmt_rate(row.m('mps'))} | {fmt_rate(row.m('rps'))} | "
            f"{fmt_ms(row.m('p50'))} | {fmt_ms(row.m('p99'))} | {fmt_x(med(vals))} | "
            f"{fmt_pct(row.m('server_cpu'))} |"
        )
    a("")

    # ---- long poll
    a("### Long polling: 1,000 parked waiters (bench/httpload.py longpoll)")
    a("")
    lp = [r.get("longpoll", {}) for r in runs]
    lp_na = next((c.get("na") for c in lp if c.get("na")), None)
    if lp_na or not any("idle_cpu_s" in c for c in lp):
        a(f"{lp_na or 'not run'}")
    else:
        idle = med([c.get("idle_cpu_s") for c in lp])
        idle_s = med([c.get("idle_s") for c in lp])
        p50 = med([c.get("wake_ms", {}).get("p50") for c in lp])
        p99 = med([c.get("wake_ms", {}).get("p99") for c in lp])
        mx = med([c.get("wake_ms", {}).get("max") for c in lp])
        lost = sum(c.get("wakes_lost", 0) for c in lp)
        a("| figure | value | goal |")
        a("|---|--:|---|")
        a(
            f"| server CPU over {idle_s or 0:.0f} idle s, 1,000 parked | "
            f"{NONE if idle is None else idle} s | ~0 |"
        )
        a(f"| publish -> parked waiter answered, p50 | {fmt_ms(p50)} ms | |")
        a(f"| publish -> parked waiter answered, p99 | {fmt_ms(p99)} ms | <= 5 ms |")
        a(f"| publish -> parked waiter answered, max | {fmt_ms(mx)} ms | |")
        a(f"| wakes lost (no answer within 2 s) | {lost} | 0 |")
        bursts = [c.get("burst") for c in lp if c.get("burst")]
        if bursts:
            last = med([b.get("last_after_publish_ms") for b in bursts])
            got = med([b.get("answered") for b in bursts])
            a(f"| batch of 1,000 -> last of {got:,.0f} waiters answered | {fmt_ms(last)} ms | |")
    a("")

    # ---- WonderQ against the peers
    a("### WonderQ against the peers (messages/s, medians)")
    a("")
    a("| WonderQ workload | peer workload | WonderQ | peer | WonderQ / peer | peer's side |")
    a("|---|---|--:|--:|--:|---|")
    for text, wq_rate, peer_rate, peer_gen, peer_srv in comparisons(runs):
        r = wq_rate / peer_rate if wq_rate and peer_rate else None
        side = ""
        if peer_gen is not None and peer_srv is not None:
            side = (
                f"client-bound (gen CPU {fmt_pct(peer_gen)}): the peer can do more"
                if peer_gen > 0.85 and peer_srv < 0.85
                else f"server {fmt_pct(peer_srv)}, client {fmt_pct(peer_gen)}"
            )
        a(f"| {text} | {fmt_rate(wq_rate)} | {fmt_rate(peer_rate)} | {fmt_x(r)} | {side} |")
    a("")

    # ---- goals
    a("### Goals (issues 3, 4, 5)")
    a("")
    a("| goal | measured | |")
    a("|---|--:|---|")
    for text, value, ok in goals(runs):
        mark = NONE if ok is None else ("met" if ok else "**not met**")
        a(f"| {text} | {value} | {mark} |")
    a("")
    a(
        "Every command this run executed is in the run's JSON file "
        f"(`{meta['json']}`), with the raw figures of every run."
    )
    return "\n".join(out)


COMPARISONS = [  # (WonderQ key, peer group, peer key, label)
    ("publish", "redis", "lpush_p1", "publish 200 B | Redis LPUSH"),
    ("publish", "beanstalkd", "put_p1", "publish 200 B | beanstalkd put"),
    ("recv_delete", "redis", "reliable_p1", "receive + delete | Redis LMOVE + LREM"),
    ("recv_delete", "beanstalkd", "work_p1", "receive + delete | beanstalkd reserve + delete"),
    ("pipeline_publish", "redis", "lpush_p16", "publish, 16 pipelined | Redis LPUSH, 16 pipelined"),
    ("pipeline_publish", "beanstalkd", "put_p16", "publish, 16 pipelined | beanstalkd put x16"),
    ("batch_publish", "redis", "lpush_p16", "batch publish 100 | Redis LPUSH, 16 pipelined"),
    ("batch_recv_ack", "redis", "reliable_p16", "batch receive + ack | Redis LMOVE + LREM x16"),
    (
        "batch_recv_ack",
        "beanstalkd",
        "work_p16",
        "batch receive + ack | beanstalkd reserve + delete x16",
    ),
]


def comparisons(runs: list[dict]) -> Iterator[tuple[str, Any, Any, Any, Any]]:
    for wq_key, group, key, label in COMPARISONS:
        wq = med([r.get("wonderq", {}).get(wq_key, {}).get("mps") for r in runs])
        cells = [r.get(group, {}).get(key, {}) for r in runs]
        peer = med([c.get("mps") for c in cells])
        gen = med([c.get("loadgen_cpu") for c in cells])
        srv = med([c.get("server_cpu") for c in cells])
        yield label, wq, peer, gen, srv


def goals(runs: list[dict]) -> list[tuple[str, str, bool | None]]:
    res: list[tuple[str, str, bool | None]] = []

    def add_ratio(text: str, key: str, goal: float) -> None:
        r = ratio(runs, "wonderq", key, "ceiling", key)
        res.append((text, fmt_x(r), None if r is None else r >= goal))

    add_ratio("publish >= 0.8x ceiling", "publish", 0.8)
    add_ratio("receive + delete >= 0.7x ceiling", "recv_delete", 0.7)
    add_ratio("16 pipelined publish >= 0.7x pipelined ceiling", "pipeline_publish", 0.7)
    vals = []
    for r in runs:
        x = r.get("depth", {}).get("depth_1000000", {}).get("mps")
        b = r.get("depth", {}).get("depth_0", {}).get("mps")
        if x and b:
            vals.append(x / b)
    d = med(vals)
    res.append(("rate at 1M deep >= 0.8x empty", fmt_x(d), None if d is None else d >= 0.8))
    bp = med([r.get("wonderq", {}).get("batch_publish", {}).get("mps") for r in runs])
    res.append(
        ("batch publish >= 1,000,000 msg/s", fmt_rate(bp), None if bp is None else bp >= 1e6)
    )
    rl = med([r.get("redis", {}).get("lpush_p16", {}).get("mps") for r in runs])
    res.append(
        (
            "batch publish > Redis LPUSH x16 (msg/s)",
            f"{fmt_rate(bp)} vs {fmt_rate(rl)}",
            None if bp is None or rl is None else bp > rl,
        )
    )
    br = med([r.get("wonderq", {}).get("batch_recv_ack", {}).get("mps") for r in runs])
    res.append(
        ("batch receive + ack >= 500,000 msg/s", fmt_rate(br), None if br is None else br >= 5e5)
    )
    lp = [r.get("longpoll", {}) for r in runs if not r.get("longpoll", {}).get("na")]
    p99 = med([c.get("wake_ms", {}).get("p99") for c in lp])
    res.append(
        (
            "long poll: answered within 5 ms of a publish (p99)",
            f"{fmt_ms(p99)} ms",
            None if p99 is None else p99 <= 5,
        )
    )
    mem = [
        (r.get("depth", {}).get("depth_1000000", {}).get("memory") or {}).get("vmrss") for r in runs
    ]
    m = med(mem)
    res.append(
        ("1,000,000 x 200 B resident <= 260 MB", fmt_mb(m), None if m is None else m <= 260e6)
    )
    return res


def machine_info(pinning: str) -> dict[str, str]:
    def first_line(cmd: list[str]) -> str:
        if shutil.which(cmd[0]) is None:
            return "not installed"
        p = subprocess.run(cmd, capture_output=True, text=True, check=False)
        text = (p.stdout + p.stderr).strip()
        return text.splitlines()[0] if text else "?"

    model = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        mem = f"{int(f.readline().split()[1]) / 1024 / 1024:.0f} GiB"
    versions = {}
    for mod in ("uvloop", "httptools", "locust"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:
            versions[mod] = "not installed"
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "wonderq"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    return {
        "CPU": f"{os.cpu_count()} x {model} (nproc {len(os.sched_getaffinity(0))}), {mem} RAM",
        "kernel": platform.release(),
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "Python": f"{platform.python_version()} (uvloop {versions['uvloop']}, httptools "
        f"{versions['httptools']}, locust {versions['locust']})",
        "WonderQ": f"commit {commit}{' + uncommitted changes in wonderq/' if dirty else ''}",
        "wrk": first_line(["wrk", "-v"]),
        "nginx": first_line(["nginx", "-v"]),
        "Redis": first_line(["redis-server", "--version"]),
        "beanstalkd": first_line(["beanstalkd", "-v"]),
        "pinning": pinning,
    }


def write_results_md(region: str) -> None:
    """Replace the generated region of bench/RESULTS.md; everything else stays byte for byte
    (the "## Engine" section and hand-written notes belong to others)."""
    block = f"{BEGIN}\n{region}\n{END}"
    if RESULTS_MD.exists():
        text = RESULTS_MD.read_text()
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            _, tail = rest.split(END, 1)
            text = head + block + tail
        else:
            # first time: put the generated section before the first "## " heading
            m = re.search(r"^## ", text, re.MULTILINE)
            section = f"## Side by side (bench/run.py)\n\n{block}\n\n"
            text = (
                (text[: m.start()] + section + text[m.start() :])
                if m
                else (text.rstrip("\n") + "\n\n" + section)
            )
    else:
        text = (
            "# WonderQ benchmark results\n\n"
            "How to reproduce and what each number means: bench/README.md.\n\n"
            f"## Side by side (bench/run.py)\n\n{block}\n"
        )
    RESULTS_MD.write_text(text)


# ============================================================================================


GROUPS = ("ceiling", "wonderq", "depth", "longpoll", "redis", "beanstalkd", "sizing")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Run the WonderQ benchmark suite (bench/README.md).")
    p.add_argument("--quick", action="store_true", help="1 run, 3 s per workload")
    p.add_argument("--runs", type=int, help="runs to take medians over (default 3; quick 1)")
    p.add_argument("--duration", type=float, help="seconds per workload (default 10; quick 3)")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--depths", type=int, nargs="+", default=[0, 100_000, 1_000_000])
    p.add_argument("--waiters", type=int, default=1000, help="parked long polls")
    p.add_argument("--idle", type=float, default=10.0, help="idle seconds with waiters parked")
    p.add_argument("--only", nargs="+", choices=GROUPS, help="run only these groups")
    p.add_argument("--skip", nargs="+", choices=GROUPS, default=[], help="skip these groups")
    p.add_argument("--no-install", action="store_true", help="do not apt-get/pip install")
    p.add_argument("--no-write", action="store_true", help="do not rewrite bench/RESULTS.md")
    args = p.parse_args(argv)
    args.runs = args.runs or (1 if args.quick else 3)
    args.duration = args.duration or (3.0 if args.quick else 10.0)
    groups = [g for g in (args.only or GROUPS) if g not in args.skip]
    command = ("python bench/run.py " + shlex.join(sys.argv[1:] if argv is None else argv)).strip()

    ensure_tools(not args.no_install)
    server_pin, gen_pin, pinning = cpu_plan()
    machine = machine_info(pinning)  # before this process pins itself (it reads nproc)
    if gen_pin:  # this process fills queues and drives long polls: keep it off the server's core
        os.sched_setaffinity(0, {int(gen_pin[-1])})
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    logdir = RESULTS_DIR / f"logs-{stamp}"
    logdir.mkdir()
    json_path = RESULTS_DIR / f"run-{stamp}.json"
    bench = Bench(args, gen_pin, Launcher(server_pin, logdir))
    resource_children_delta()

    log(f"{pinning}; {args.runs} run(s) of {args.duration:g} s; groups: {' '.join(groups)}")
    meta = {
        "command": command,
        "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "duration": args.duration,
        "connections": args.connections,
        "pinning": pinning,
        "depths": args.depths,
        "machine": machine,
        "json": str(json_path.relative_to(ROOT)),
    }
    if {"wonderq", "depth", "longpoll", "sizing"} & set(groups):
        try:
            with running(bench.launcher.wonderq) as server:
                bench.features = loadlib.run(httpload.probe("127.0.0.1", server.port))
            log(f"WonderQ routes: {bench.features}")
        except ServerMissing as exc:
            log(f"WonderQ is not runnable: {exc}")
    meta["features"] = bench.features

    runs: list[dict] = []
    try:
        for i in range(args.runs):
            log(f"===== run {i + 1} of {args.runs}")
            out: dict[str, Any] = {}
            runs.append(out)
            if "ceiling" in groups or "wonderq" in groups:
                run_http(bench, out, groups)
            if "depth" in groups:
                run_depth(bench, out)
            if "longpoll" in groups:
                run_longpoll(bench, out)
            if "redis" in groups:
                run_redis(bench, out)
            if "beanstalkd" in groups:
                run_beanstalkd(bench, out)
            json_path.write_text(json.dumps({"meta": meta, "runs": runs}, indent=1))
        if "sizing" in groups and runs:
            run_sizing(bench, runs[0])
    except KeyboardInterrupt:
        log("interrupted: writing what was measured")
    json_path.write_text(json.dumps({"meta": meta, "runs": runs}, indent=1))
    region = render(runs, meta)
    if not args.no_write:
        write_results_md(region)
        log(f"wrote {RESULTS_MD.relative_to(ROOT)} and {json_path.relative_to(ROOT)}")
    else:
        print(region)
    return 0


if __name__ == "__main__":
    sys.exit(main())
