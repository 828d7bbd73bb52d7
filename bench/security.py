"""What access control and TLS cost, measured side by side in one run (docs/SECURITY.md).

    python bench/security.py                  # 3 runs x 10 s per cell, medians
    python bench/security.py --duration 3 --runs 1
    python bench/security.py --cells plain,tls,nginx-tls --workloads publish

Cells, each a fresh process, interleaved run by run so that a ratio compares figures taken
within seconds of each other on a possibly shared machine (pinning as bench/run.py does):

- ``plain``: WonderQ, no access control, plain HTTP;
- ``token``: WonderQ with ``--auth-file``, every request carrying ``Authorization: Bearer``;
- ``tls``: WonderQ serving HTTPS itself (``--tls-cert/--tls-key``);
- ``nginx-tls``: nginx (one worker) terminating TLS in front of a plain WonderQ, keep-alive
  to it: the usual alternative (docs/SECURITY.md, "Behind a proxy instead");
- ``nginx`` and ``nginx-https``: nginx alone answering every request with a constant 200
  (bench/run.py's C ceiling), over plain HTTP and over HTTPS: what TLS costs a C server
  (publish only).

Workloads: publish of 200 B, and publish + receive + delete, wrk with 64 keep-alive
connections (TLS is negotiated once per connection). Targets: token >= 0.95 x plain for both;
tls >= 0.5 x plain for publish (nginx-https / nginx says how much of its rate a C server keeps
over TLS with the same requests, certificate and generator). The self-signed certificate
(EC P-256) is made with the ``openssl`` command in a temporary directory; needs wrk, nginx and
openssl.

Two tables: messages per second, and requests per CPU-second of the server side (WonderQ; for
nginx-tls, nginx and WonderQ together), which a machine shared with other work moves less
than rates. A cell whose load generator used GENERATOR_BOUND (90%) or more of its core is
marked: it measured wrk, not the server. Then, for token / plain and tls / plain, the median
of each run's own ratio (the cells of a run are seconds apart, in the opposite order every
other run): the figure that a machine whose speed drifts over minutes moves least.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness
from harness import GENERATOR_BOUND, Launcher, Meter, Server, ServerMissing, log
from workloads import Bench

TOKEN = "bench-token-0123456789abcdefghij"
# publish_recv_delete publishes what it receives and deletes, so it needs no prefill (which
# would need the token too).
WORKLOADS = (
    ("publish", "publish 200 B"),
    ("publish_recv_delete", "publish + receive + delete"),
)
CELLS = ("plain", "token", "tls", "nginx-tls", "nginx", "nginx-https")
# The cells that only the publishes are measured in.
PUBLISH_ONLY = ("tls", "nginx-tls", "nginx", "nginx-https")
# What nginx does with every request: pass it to WonderQ, or answer it (nginx-https).
PROXY = """proxy_pass http://wonderq;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;"""
CONSTANT = """add_header Cache-Control no-store;
            default_type application/json;
            return 200 '{"ok":true}';"""

NGINX_TLS = """
@USER@
worker_processes 1;
daemon off;
master_process on;
pid @PREFIX@/nginx.pid;
error_log @PREFIX@/error.log warn;
events { worker_connections 4096; use epoll; multi_accept on; }
http {
    access_log off;
    keepalive_requests 1000000000;
    keepalive_timeout 75s;
    client_body_temp_path @PREFIX@/client_body;
    proxy_temp_path @PREFIX@/proxy;
    fastcgi_temp_path @PREFIX@/fastcgi;
    uwsgi_temp_path @PREFIX@/uwsgi;
    scgi_temp_path @PREFIX@/scgi;
    @UPSTREAM@
    server {
        listen 127.0.0.1:@PORT@ ssl backlog=4096;
        ssl_certificate @CERT@;
        ssl_certificate_key @KEY@;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {
            @LOCATION@
        }
    }
}
"""


def make_pki(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def nginx_tls(launcher: Launcher, upstream: int | None, cert: Path, key: Path) -> Server:
    """nginx on HTTPS, passing each request to WonderQ on port ``upstream``, or answering it
    itself (``upstream=None``)."""
    exe = shutil.which("nginx")
    if exe is None:
        raise ServerMissing("nginx is not installed")
    tmp = tempfile.TemporaryDirectory(prefix="wonderq-nginx-tls-")
    port = harness.free_port()
    conf = Path(tmp.name) / "nginx.conf"
    user = "user root;" if os.geteuid() == 0 else ""
    text = NGINX_TLS
    for name, value in (
        ("@USER@", user), ("@PREFIX@", tmp.name), ("@PORT@", str(port)),
        ("@UPSTREAM@", "" if upstream is None else
         f"upstream wonderq {{ server 127.0.0.1:{upstream}; keepalive 64; }}"),
        ("@LOCATION@", CONSTANT if upstream is None else PROXY),
        ("@CERT@", str(cert)), ("@KEY@", str(key)),
    ):  # fmt: skip
        text = text.replace(name, value)
    conf.write_text(text)
    proc, log_path = launcher.spawn(
        "nginx-tls", [exe, "-p", tmp.name, "-c", str(conf), "-e", f"{tmp.name}/error.log"]
    )
    server = Server("nginx-tls", proc, port, log_path, tmp)
    try:
        harness.wait_port(port, proc)
    except RuntimeError as exc:
        server.stop()
        raise ServerMissing(f"nginx: {exc}") from exc
    server.pids_for_cpu = [proc.pid, *harness.proc_children(proc.pid)]
    return server


@contextlib.contextmanager
def cell(
    bench: Bench, name: str, auth_file: Path, cert: Path, key: Path
) -> Iterator[tuple[Server, str, dict[str, str]]]:
    """The server(s) of one cell; yields the one to measure (for nginx-tls, nginx, whose CPU
    is counted with WonderQ's behind it), the URL scheme and wrk's environment."""
    env = dict(os.environ)
    scheme = "https" if name in ("tls", "nginx-tls", "nginx-https") else "http"
    if name == "nginx":
        with harness.running(bench.launcher.nginx) as server:
            yield server, scheme, env
        return
    if name == "nginx-https":
        server = nginx_tls(bench.launcher, None, cert, key)
        try:
            yield server, scheme, env
        finally:
            server.stop()
        return
    if name == "token":
        server = bench.launcher.wonderq("--auth-file", str(auth_file))
        env["WQ_AUTHORIZATION"] = f"Bearer {TOKEN}"
    elif name == "tls":
        server = bench.launcher.wonderq("--tls-cert", str(cert), "--tls-key", str(key))
    else:
        server = bench.launcher.wonderq()
    front = None
    try:
        if name == "nginx-tls":
            front = nginx_tls(bench.launcher, server.port, cert, key)
            front.pids_for_cpu += [server.pid]
        yield (front or server), scheme, env
    finally:
        if front is not None:
            front.stop()
        server.stop()


def measure(bench: Bench, name: str, workload: str, paths: tuple[Path, Path, Path]) -> dict:
    auth_file, cert, key = paths
    with cell(bench, name, auth_file, cert, key) as (server, scheme, env):
        if scheme == "http" and bench.args.generator == "httpgen":
            cmd = httpgen_cmd(bench, workload, server.port, env.get("WQ_AUTHORIZATION"))
        else:
            cmd = wrk_cmd(bench, workload, f"{scheme}://127.0.0.1:{server.port}/")
        return bench.meter.measure(server, cmd, env)


def httpgen_cmd(bench: Bench, workload: str, port: int, authorization: str | None) -> list[str]:
    """httpgen (pre-built requests, lighter than wrk's Lua) for the plain-HTTP cells, the
    token sent on every request as ``Authorization``. It does not speak TLS."""
    from workloads import DEPTH_SWEEP, PUBLISH

    more = PUBLISH if workload == "publish" else DEPTH_SWEEP.httpgen
    cmd = [str(harness.httpgen()), "--port", str(port), "-c", str(bench.args.connections)]
    cmd += ["--duration", f"{bench.duration:g}", "--name", workload, *more]
    return cmd + (["--header", f"Authorization: {authorization}"] if authorization else [])


def wrk_cmd(bench: Bench, workload: str, url: str) -> list[str]:
    """wrk with the workload's Lua script (bench/wrk/), which sends WQ_AUTHORIZATION when the
    environment has it: the generator that speaks HTTPS as well as HTTP."""
    script = str(harness.ROOT / "bench" / "wrk" / f"{workload}.lua")
    conns, duration = bench.args.connections, f"{bench.duration:g}"
    return ["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--timeout", "10s", "-s", script, url]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--cells", default=",".join(CELLS), help="some of: " + ", ".join(CELLS))
    parser.add_argument(
        "--generator",
        choices=("wrk", "httpgen"),
        default="wrk",
        help="for the plain-HTTP cells (TLS cells always use wrk, which speaks HTTPS)",
    )
    parser.add_argument(
        "--workloads",
        default=",".join(w for w, _ in WORKLOADS),
        help="some of: " + ", ".join(w for w, _ in WORKLOADS),
    )
    args = parser.parse_args(argv)
    cells = [c for c in CELLS if c in args.cells.split(",")]
    workloads = [(w, label) for w, label in WORKLOADS if w in args.workloads.split(",")]
    for tool in ("wrk", "nginx", "openssl"):
        if shutil.which(tool) is None:
            sys.stderr.write(f"{tool} is missing (apt-get install -y {tool})\n")
            return 1
    server_pin, gen_pin, pinning = harness.cpu_plan()
    log(pinning)
    with tempfile.TemporaryDirectory(prefix="wonderq-security-") as tmp:
        root = Path(tmp)
        cert, key = make_pki(root)
        auth_file = root / "auth.toml"
        auth_file.write_text(
            f'[tokens.bench]\ntoken = "{TOKEN}"\nrights = ["publish", "consume"]\n'
        )
        logdir = root / "logs"
        logdir.mkdir()
        bench = Bench(args, Meter(gen_pin, args.duration), Launcher(server_pin, logdir))
        results: dict[tuple[str, str], list[dict]] = {}
        for i in range(args.runs):
            for workload, label in workloads:
                # Every other run the other way round, so a drift of the machine's speed
                # within a run favours no cell.
                for name in cells if i % 2 == 0 else cells[::-1]:
                    if workload != "publish" and name in PUBLISH_ONLY:
                        continue  # the TLS targets are about publishes
                    log(f"run {i + 1}/{args.runs}: {name}: {label}")
                    result = measure(bench, name, workload, (auth_file, cert, key))
                    results.setdefault((workload, name), []).append(result)
                    log(
                        f"  {result['mps']:,.0f} msg/s, server {result['server_cpu'] or 0:.0%} "
                        f"of a core, wrk {result['loadgen_cpu'] or 0:.0%}, other work "
                        f"{result['other_cpu']:.0%}"
                    )
                    time.sleep(0.5)
    print()
    table(results, workloads, cells, "msg/s", lambda r: r["mps"])
    print()
    table(results, workloads, cells, "requests per server CPU-second", per_cpu_second)
    print()
    for a, b in (("token", "plain"), ("tls", "plain")):
        for workload, label in workloads:
            runs_a, runs_b = results.get((workload, a), []), results.get((workload, b), [])
            if runs_a and runs_b:
                pairs = zip(runs_a, runs_b, strict=True)
                ratios = [x["mps"] / y["mps"] for x, y in pairs if y["mps"]]
                each = ", ".join(f"{r:.2f}" for r in ratios)
                print(
                    f"{a} / {b}, {label}: median of the runs' ratios "
                    f"{statistics.median(ratios):.2f}x ({each})"
                )
    print()
    print(
        f"server CPU: WonderQ's process (for nginx-tls, nginx's and WonderQ's; for nginx and "
        f"nginx-https, nginx's); "
        f"* = the load generator used {GENERATOR_BOUND:.0%} or more of its core"
    )
    return 0


def per_cpu_second(result: dict) -> float:
    """Requests per CPU-second of the server side (0 when its CPU share is unknown)."""
    cpu = result.get("server_cpu")
    return result["rps"] / cpu if cpu else 0.0


def table(
    results: dict[tuple[str, str], list[dict]],
    workloads: list[tuple[str, str]],
    cells: list[str],
    unit: str,
    figure: Callable[[dict], float],
) -> None:
    """One markdown table: the median of ``figure`` per cell, and the ratios."""
    print(f"| workload ({unit}) | {' | '.join(cells)} | token / plain | tls / plain | "
          "nginx-tls / plain | tls / nginx-tls | nginx-https / nginx |")  # fmt: skip
    print(f"|---|{'---|' * (len(cells) + 5)}")
    for workload, label in workloads:
        med: dict[str, float] = {}
        marks: dict[str, str] = {}
        for (w, n), runs in results.items():
            if w == workload:
                med[n] = statistics.median(figure(r) for r in runs)
                gen = statistics.median(r.get("loadgen_cpu") or 0.0 for r in runs)
                marks[n] = "*" if gen >= GENERATOR_BOUND else ""
        row = " | ".join(f"{med[n]:,.0f}{marks[n]}" if n in med else "-" for n in cells)

        def ratio(a: str, b: str, med: dict[str, float] = med) -> str:
            return f"{med[a] / med[b]:.2f}x" if a in med and b in med and med[b] else "-"

        print(
            f"| {label} | {row} | {ratio('token', 'plain')} | {ratio('tls', 'plain')} | "
            f"{ratio('nginx-tls', 'plain')} | {ratio('tls', 'nginx-tls')} | "
            f"{ratio('nginx-https', 'nginx')} |"
        )


if __name__ == "__main__":
    sys.exit(main())
