"""The SQS face's throughput: SendMessage, SendMessageBatch(10) and ReceiveMessage(10) +
DeleteMessageBatch in messages/s, with boto3 (one client, one thread: what an application
sees) and with wrk sending pre-built JSON-protocol requests (what the server can do), against
WonderQ and against moto's server in the same run, and WonderQ's own routes for the same work
(POST .../messages, .../batch of 10, receive limit=10 + batch ack).

    python bench/sqs_bench.py                 # 3 rounds of 5 s a workload
    python bench/sqs_bench.py --smoke         # 1 s a workload, fewer messages: proves it runs
    python bench/sqs_bench.py --no-moto --json out.json

The server is pinned to one core and the load generator to the other (taskset), as in
bench/run.py, and each round runs an SQS workload and its native twin back to back, so the
ratio is taken between figures seconds apart; the table gives medians over ``--runs`` rounds
(the ratio: the median of the per-round ratios). Sends go out from httpgen (bench/gen), which
writes pre-built requests (SendMessage and SendMessageBatch carry their ``X-Amz-Target`` and a
SigV4-shaped ``Authorization`` header, as an SDK would); receive + delete needs each answer's
receipt handles, so both faces' receive rows run wrk with a Lua script. A row whose generator
used 90% or more of its core is marked: it measured the generator.

Goals (docs/SQS.md): the SQS face at >= 0.6x WonderQ's native routes for the same work, and
>= 100x moto. Needs wrk (apt-get install -y wrk) for the wrk rows and moto_server
(pip install 'moto[server]') for the moto column; rows it cannot run say n/a.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # harness (bench/ is not a package)
WRK_DIR = HERE / "wrk"
BODY = "x" * 200
LISTENING = re.compile(r"wonderq listening on http://127\.0\.0\.1:(\d+)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wonderq_command() -> list[str]:
    """``$WONDERQ_SERVER_CMD`` if set (as tests/_server.py), else the console script."""
    override = os.environ.get("WONDERQ_SERVER_CMD")
    if override:
        return shlex.split(override)
    beside = Path(sys.executable).with_name("wonderq")
    if beside.exists():
        return [str(beside)]
    return [sys.executable, "-m", "wonderq"]


@contextlib.contextmanager
def wonderq() -> Iterator[str]:
    """``wonderq serve`` on a free loopback port; stopped by its PID."""
    proc = subprocess.Popen(
        [*wonderq_command(), "serve", "--host", "127.0.0.1", "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("WONDERQ_")},
    )
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 30
        port = 0
        while not port and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                raise RuntimeError("wonderq did not start")
            found = LISTENING.search(line)
            if found:
                port = int(found.group(1))
        if not port:
            raise RuntimeError("wonderq did not say where it listens")
        # Keep reading its log, so a full pipe never blocks the server.
        threading.Thread(target=proc.stderr.read, daemon=True).start()
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def moto() -> Iterator[tuple[str, subprocess.Popen] | None]:
    """moto's server on a free loopback port: (its URL, its process), or None if missing."""
    program = shutil.which("moto_server")
    if program is None:
        yield None
        return
    port = free_port()
    proc = subprocess.Popen(
        [program, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def sqs_client(url: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "sqs",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret",
        config=Config(retries={"max_attempts": 1}),
    )


# ---- boto3 ----------------------------------------------------------------------------------
def rate(duration_s: float, step: Callable[[], int]) -> dict[str, Any]:
    """Call ``step`` (it returns the messages it moved) for ``duration_s``; messages/s."""
    messages = calls = 0
    started = time.perf_counter()
    end = started + duration_s
    while time.perf_counter() < end:
        moved = step()
        if moved < 0:
            break
        messages += moved
        calls += 1
    elapsed = time.perf_counter() - started
    return {
        "messages": messages,
        "requests": calls,
        "seconds": round(elapsed, 3),
        "msg_per_s": round(messages / elapsed, 1),
    }


def boto3_rows(url: str, duration_s: float, prefill: Callable[[str, int], None]) -> dict[str, Any]:
    sqs = sqs_client(url)
    name = f"bench-boto3-{int(time.time() * 1000)}"
    queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
    out: dict[str, Any] = {}
    out["send"] = rate(
        duration_s, lambda: (sqs.send_message(QueueUrl=queue_url, MessageBody=BODY), 1)[1]
    )
    entries = [{"Id": f"m{i}", "MessageBody": BODY} for i in range(10)]
    out["send_batch10"] = rate(
        duration_s,
        lambda: len(sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)["Successful"]),
    )

    def receive_delete() -> int:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=60)
        messages = got.get("Messages", [])
        if not messages:
            return -1  # drained: the rate so far stands
        done = sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": f"d{i}", "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            ],
        )
        return len(done["Successful"])

    prefill(queue_url, 0)
    out["recv10_delete_batch"] = rate(duration_s, receive_delete)
    sqs.delete_queue(QueueUrl=queue_url)
    return out


def native_prefill(base: str, queue: str, count: int) -> None:
    """``count`` messages into a WonderQ queue through the native batch route."""
    host, port = base.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.request("PUT", f"/v1/queues/{queue}", body=b"{}")
    conn.getresponse().read()
    body = json.dumps([BODY] * 1000).encode()
    for _ in range(0, count, 1000):
        conn.request(
            "POST",
            f"/v1/queues/{queue}/batch",
            body=body,
            headers={"Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 201, resp.status
    conn.close()


def sqs_prefill(url: str, queue_url: str, count: int) -> None:
    sqs = sqs_client(url)
    entries = [{"Id": f"m{i}", "MessageBody": BODY} for i in range(10)]
    for _ in range(0, count, 10):
        sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)


def ratio(a: dict[str, Any], b: dict[str, Any]) -> str:
    if "msg_per_s" not in a or "msg_per_s" not in b or not b["msg_per_s"]:
        return "n/a"
    return f"{a['msg_per_s'] / b['msg_per_s']:.2f}x"


# ---- pinned rounds: the SQS face against the native routes ----------------------------------
# A SigV4-shaped Authorization header (not a valid signature: neither WonderQ without
# --auth-file nor moto checks it, but moto routes a request to SQS by the service it names).
AUTH = (
    "Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/sqs/aws4_request, "
    "SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=" + "0" * 64
)
JSON_TYPE = "application/x-amz-json-1.0"


def sqs_fixed(queue_url: str, action: str, per_request: int) -> list[str]:
    """httpgen arguments: one constant JSON-protocol request of ``action`` to ``queue_url``."""
    if action == "SendMessage":
        body = json.dumps({"QueueUrl": queue_url, "MessageBody": BODY})
    else:
        entries = [{"Id": f"m{i}", "MessageBody": BODY} for i in range(per_request)]
        body = json.dumps({"QueueUrl": queue_url, "Entries": entries})
    return [
        "--fixed", "POST", "/", "--body", body, "--ctype", JSON_TYPE,
        "--header", f"X-Amz-Target: AmazonSQS.{action}", "--header", AUTH,
        "--per-request", str(per_request),
    ]  # fmt: skip


def pinned_rounds(
    args: argparse.Namespace, moto_server: tuple[str, subprocess.Popen] | None
) -> dict[str, Any]:
    """``args.runs`` rounds of each workload on the SQS face and on the native routes of one
    pinned server (and once on moto's server, pinned the same way, if given)."""
    import statistics
    import tempfile

    import harness

    server_pin, gen_pin, plan = harness.cpu_plan()
    meter = harness.Meter(gen_pin, args.duration)
    gen = str(harness.httpgen())
    conns = str(args.connections)
    out: dict[str, Any] = {"plan": plan, "rounds": []}
    with tempfile.TemporaryDirectory() as logdir:
        server = harness.Launcher(server_pin, Path(logdir)).wonderq()
        try:
            url = f"http://127.0.0.1:{server.port}"
            sqs = sqs_client(url)
            send_url = sqs.create_queue(QueueName="bench-sqs-send")["QueueUrl"]
            recv_url = sqs.create_queue(QueueName="bench-sqs-recv")["QueueUrl"]
            native_prefill(url, "bench-native", 0)

            def httpgen_load(name: str, more: list[str]) -> dict[str, Any]:
                cmd = [gen, "--port", str(server.port), "-c", conns]
                cmd += ["--duration", f"{args.duration:g}", "--name", name, *more]
                return meter.measure(server, cmd)

            def wrk_load(script: str, env: dict[str, str]) -> dict[str, Any]:
                cmd = ["wrk", "-t1", f"-c{conns}", f"-d{args.duration:g}s", "--timeout", "10s"]
                cmd += ["-s", str(WRK_DIR / f"{script}.lua"), url + "/"]
                environ = {**os.environ, "WQ_BODY_BYTES": str(len(BODY)), **env}
                return meter.measure(server, cmd, environ)

            native_q = "/v1/queues/bench-native"
            batch10 = json.dumps([BODY] * 10)
            for _ in range(args.runs):
                row: dict[str, Any] = {}
                row["send"] = (
                    httpgen_load("sqs_send", sqs_fixed(send_url, "SendMessage", 1)),
                    httpgen_load("q_send", ["--fixed", "POST", native_q + "/messages",
                                            "--body", BODY]),
                )  # fmt: skip
                row["send_batch10"] = (
                    httpgen_load("sqs_batch10", sqs_fixed(send_url, "SendMessageBatch", 10)),
                    httpgen_load("q_batch10", ["--fixed", "POST", native_q + "/batch", "--body",
                                               batch10, "--ctype", "application/json",
                                               "--per-request", "10"]),
                )  # fmt: skip
                native_prefill(url, recv_url.rsplit("/", 1)[1], args.prefill)
                sqs_recv = wrk_load("sqs_recv_delete", {"WQ_QUEUE_URL": recv_url, "WQ_BATCH": "10"})
                native_prefill(url, "bench-native-recv", args.prefill)
                native_recv = wrk_load(
                    "batch_recv_ack", {"WQ_QUEUE": "bench-native-recv", "WQ_BATCH": "10"}
                )
                row["recv10_delete_batch"] = (sqs_recv, native_recv)
                out["rounds"].append(row)
        finally:
            server.stop()
        if moto_server is not None:
            out["moto"] = moto_rounds(args, meter, gen, *moto_server)
    summary: dict[str, Any] = {}
    for key in ("send", "send_batch10", "recv10_delete_batch"):
        pairs = [r[key] for r in out["rounds"]]
        sqs_mps = [p[0]["mps"] for p in pairs]
        nat_mps = [p[1]["mps"] for p in pairs]
        summary[key] = {
            "sqs_msg_per_s": statistics.median(sqs_mps),
            "native_msg_per_s": statistics.median(nat_mps),
            "ratio": statistics.median(a / b for a, b in zip(sqs_mps, nat_mps, strict=True) if b),
            "sqs_gen_cpu": max(p[0]["loadgen_cpu"] or 0.0 for p in pairs),
            "native_gen_cpu": max(p[1]["loadgen_cpu"] or 0.0 for p in pairs),
            "sqs_srv_cpu": statistics.median(p[0]["server_cpu"] or 0.0 for p in pairs),
            "other_cpu": max(max(p[0]["other_cpu"], p[1]["other_cpu"]) for p in pairs),
        }
    out["summary"] = summary
    return out


def moto_rounds(
    args: argparse.Namespace, meter: Any, gen: str, moto_url: str, proc: subprocess.Popen
) -> dict[str, Any]:
    """The same SQS workloads once against moto's server."""
    import harness

    port = int(moto_url.rsplit(":", 1)[1])
    server = harness.Server("moto", proc, port, Path(os.devnull))
    sqs = sqs_client(moto_url)
    send_url = sqs.create_queue(QueueName="bench-sqs-send")["QueueUrl"]
    recv_url = sqs.create_queue(QueueName="bench-sqs-recv")["QueueUrl"]
    out: dict[str, Any] = {}

    def load(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
        return dict(meter.measure(server, cmd, env))

    base = [gen, "--port", str(port), "-c", str(args.connections), "--duration"]
    base += [f"{args.duration:g}"]
    out["send"] = load([*base, "--name", "moto_send", *sqs_fixed(send_url, "SendMessage", 1)])
    out["send_batch10"] = load(
        [*base, "--name", "moto_batch10", *sqs_fixed(send_url, "SendMessageBatch", 10)]
    )
    sqs_prefill(moto_url, recv_url, 2000)
    cmd = ["wrk", "-t1", f"-c{args.connections}", f"-d{args.duration:g}s", "--timeout", "10s"]
    cmd += ["-s", str(WRK_DIR / "sqs_recv_delete.lua"), moto_url + "/"]
    env = {**os.environ, "WQ_BODY_BYTES": str(len(BODY)), "WQ_QUEUE_URL": recv_url}
    out["recv10_delete_batch"] = load(cmd, {**env, "WQ_BATCH": "10"})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per workload")
    parser.add_argument("--runs", type=int, default=3, help="rounds (medians are quoted)")
    parser.add_argument("--connections", type=int, default=64, help="connections")
    parser.add_argument(
        "--prefill", type=int, default=600_000, help="messages before a receive run"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="1 s a workload: proves the script works"
    )
    parser.add_argument("--no-moto", action="store_true", help="skip moto's server")
    parser.add_argument("--no-boto3", action="store_true", help="skip the boto3 rows")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args(argv)
    if args.smoke:
        args.duration, args.prefill, args.runs = 1.0, 50_000, 1
    results: dict[str, Any] = {"duration_s": args.duration, "connections": args.connections}
    with contextlib.ExitStack() as stack:
        moto_server = None if args.no_moto else stack.enter_context(moto())
        moto_url = moto_server[0] if moto_server else None
        results["pinned"] = pinned_rounds(args, moto_server)
        if not args.no_boto3:
            with wonderq() as url:
                results["wonderq_boto3"] = boto3_rows(
                    url,
                    args.duration,
                    lambda q, _: native_prefill(url, q.rsplit("/", 1)[1], 20_000),
                )
            if moto_url is not None:
                results["moto_boto3"] = boto3_rows(
                    moto_url, args.duration, lambda q, _: sqs_prefill(moto_url, q, 1000)
                )
    pinned = results["pinned"]
    print(
        pinned["plan"] + f"; {args.runs} rounds of {args.duration:g} s, {args.connections} "
        "connections; medians (* = generator at >= 90% of its core: counts toward no goal)"
    )
    head = ("workload", "WonderQ SQS", "native", "SQS/native", "gen CPU", "moto", "vs moto")
    print("{:<22} {:>12} {:>10} {:>11} {:>9} {:>10} {:>8}".format(*head))
    for key, row in pinned["summary"].items():
        gen = max(row["sqs_gen_cpu"], row["native_gen_cpu"])
        mark = "*" if gen >= 0.9 else ""
        moto_row = pinned.get("moto", {}).get(key)
        moto_mps = f"{moto_row['mps']:,.0f}" if moto_row else "n/a"
        vs = (
            f"{row['sqs_msg_per_s'] / moto_row['mps']:,.0f}x"
            if moto_row and moto_row["mps"]
            else "n/a"
        )
        print(
            f"{key:<22} {row['sqs_msg_per_s']:>12,.0f} {row['native_msg_per_s']:>10,.0f} "
            f"{row['ratio']:>10.2f}x {gen * 100:>7.0f}%{mark:1} {moto_mps:>10} {vs:>8}"
        )
    if not args.no_boto3:
        print("boto3, one client thread (what an application sees):")
        for key in ("send", "send_batch10", "recv10_delete_batch"):
            ours = results["wonderq_boto3"].get(key, {})
            other = results.get("moto_boto3", {}).get(key, {})
            ours_mps, moto_mps = ours.get("msg_per_s", "n/a"), other.get("msg_per_s", "n/a")
            print(f"{key:<22} {ours_mps:>12} moto {moto_mps:>10} {ratio(ours, other):>8}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
