"""The benchmark's harness: what it takes to run a server and a load generator fairly, and
nothing about what the load is (bench/workloads.py) or how it is reported (bench/report.py).

Installs what is missing (Debian packages, the ``bench`` extra, the compiled engine, the C
load generator bench/gen/httpgen.c), pins the server and the load generator to cores of their
own with taskset, starts every kind of server on a free loopback port and stops it by its PID
(and only by its PID), and measures one load generator run: its result line and the CPU share
of the server, of the generator and of the rest of the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS_DIR = BENCH / "results"
HTTPGEN_SRC = BENCH / "gen" / "httpgen.c"

sys.path.insert(0, str(BENCH))
import httpload  # noqa: E402  (bench/ is not a package)


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


# A benchmark stopped with `kill PID` stops the servers it started, as Ctrl-C does: SIGTERM
# unwinds like an exception, so every `finally` that stops a server runs (by default the
# process would die at once and leave them running).
if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)


class ServerMissing(Exception):
    """A server could not be started (not installed, or it exits at once)."""


class RouteMissing(Exception):
    """WonderQ does not answer a route the workload needs."""


class ToolMissing(Exception):
    """A load generator is missing and could not be installed or built."""


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
    "cc": "gcc",
    "valgrind": "valgrind",
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
    keepdir: tempfile.TemporaryDirectory | None = None  # nginx: where PUT /keep/ stores bodies

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
        if self.keepdir is not None:
            self.keepdir.cleanup()


class Launcher:
    """Starts every kind of server with the same pinning and logging."""

    def __init__(self, pin: list[str], logdir: Path) -> None:
        self.pin = pin
        self.logdir = logdir
        self.count = 0

    def spawn(
        self, name: str, cmd: list[str], env: dict | None = None, cwd: Path | None = None
    ) -> tuple[subprocess.Popen, Path]:
        """Start ``cmd`` pinned, its output in a numbered log file; the process and that file."""
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

    def announced_port(self, proc: subprocess.Popen, log_path: Path, timeout: float) -> int:
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
        # Another build ($WONDERQ_SERVER_CMD) runs with its own package: this tree on its
        # PYTHONPATH would shadow it (an editable install's finder comes after the path).
        env = dict(os.environ) if os.environ.get("WONDERQ_SERVER_CMD") else tree_env()
        proc, log_path = self.spawn(
            "wonderq", [*cmd, "serve", "--host", "127.0.0.1", "--port", "0", *flags], env
        )
        try:
            port = self.announced_port(proc, log_path, 30)
        except RuntimeError as exc:
            raise ServerMissing(f"wonderq serve: {exc}") from exc
        return Server("wonderq", proc, port, log_path)

    def ceiling(self, reading: bool = False) -> Server:
        """bench/ceiling.py; ``reading``: its mode that also takes the URL, headers and body."""
        name = "reading" if reading else "ceiling"
        cmd = [sys.executable, str(BENCH / "ceiling.py"), "--port", "0"]
        proc, log_path = self.spawn(name, [*cmd, "--reading"] if reading else cmd)
        return Server(name, proc, self.announced_port(proc, log_path, 20), log_path)

    def _on_free_port(
        self,
        name: str,
        program: str,
        args: Callable[[str, int], list[str]],
        tmp: tempfile.TemporaryDirectory | None = None,
    ) -> Server:
        """Starts ``program`` (from PATH) as ``args(exe, port)`` on a free port it is told to
        use, and waits until it listens; ``tmp`` goes when the server stops."""
        exe = shutil.which(program)
        if exe is None:
            if tmp is not None:
                tmp.cleanup()
            raise ServerMissing(f"{program} is not installed")
        port = free_port()
        proc, log_path = self.spawn(name, args(exe, port))
        server = Server(name, proc, port, log_path, tmp)
        try:
            wait_port(port, proc)
        except RuntimeError as exc:
            server.stop()
            raise ServerMissing(f"{program}: {exc}") from exc
        return server

    def nginx(self) -> Server:
        tmp = tempfile.TemporaryDirectory(prefix="wonderq-nginx-")
        conf = Path(tmp.name) / "nginx.conf"
        # PUT /keep/<name> stores the body in a file there: in memory (tmpfs) where the machine
        # has /dev/shm, as a queue keeps its bodies in memory (bench/bigmsg.py).
        shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        keep = tempfile.TemporaryDirectory(prefix="wonderq-nginx-keep-", dir=shm)

        def args(exe: str, port: int) -> list[str]:
            template = (BENCH / "peers" / "nginx.conf.template").read_text()
            user = "user root;" if os.geteuid() == 0 else ""  # root: no setuid, dirs stay ours
            conf.write_text(
                template.replace("@PORT@", str(port))
                .replace("@PREFIX@", tmp.name)
                .replace("@KEEP@", keep.name)
                .replace("@USER@", user)
            )
            return [exe, "-p", tmp.name, "-c", str(conf), "-e", f"{tmp.name}/error.log"]

        try:
            server = self._on_free_port("nginx", "nginx", args, tmp)
        except BaseException:
            keep.cleanup()
            raise
        server.keepdir = keep
        server.pids_for_cpu = [server.pid, *proc_children(server.pid)]  # master + its worker
        return server

    def redis(self) -> Server:
        tmp = tempfile.TemporaryDirectory(prefix="wonderq-redis-")

        def args(exe: str, port: int) -> list[str]:
            cmd = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
            return [*cmd, "no", "--dir", tmp.name, "--daemonize", "no"]

        return self._on_free_port("redis", "redis-server", args, tmp)

    def beanstalkd(self) -> Server:
        # no -b: no binlog, jobs in memory only, like the others here
        return self._on_free_port(
            "beanstalkd", "beanstalkd", lambda exe, port: [exe, "-l", "127.0.0.1", "-p", str(port)]
        )


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

# A load generator at or above this share of its core is the bottleneck: the row measures
# the generator, not the server (bench/report.py marks it and counts it toward no goal).
GENERATOR_BOUND = 0.90


@dataclass
class Meter:
    """Runs load generators on their own core and accounts for the CPU of each side."""

    gen_pin: list[str]  # taskset prefix of the load generator's core ([] when not pinned)
    duration: float  # seconds a timed generator runs

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
        # rusage of the child we just reaped: the load generator's own CPU time (taskset
        # execs it, so the child is the generator itself)
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


def httpgen() -> Path:
    """The C load generator, compiled from bench/gen/httpgen.c when missing or older than its
    source (into bench/results/, which git ignores)."""
    exe = RESULTS_DIR / "httpgen"
    if exe.exists() and exe.stat().st_mtime >= HTTPGEN_SRC.stat().st_mtime:
        return exe
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise ToolMissing("no C compiler for bench/gen/httpgen.c: apt-get install gcc")
    RESULTS_DIR.mkdir(exist_ok=True)
    cmd = [cc, "-O2", "-Wall", "-o", str(exe), str(HTTPGEN_SRC)]
    built = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if built.returncode != 0:
        raise ToolMissing(f"{shlex.join(cmd)} failed: {built.stderr[-500:]}")
    return exe


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
    if not commit:  # a copy of the tree (git archive) has no git directory
        commit = os.environ.get("WONDERQ_COMMIT", "?") + " (a copy of the tree without git)"
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
        "httpgen": f"bench/gen/httpgen.c, built by {first_line(['cc', '--version'])}",
        "wrk": first_line(["wrk", "-v"]),
        "nginx": first_line(["nginx", "-v"]),
        "Redis": first_line(["redis-server", "--version"]),
        "beanstalkd": first_line(["beanstalkd", "-v"]),
        "pinning": pinning,
    }
