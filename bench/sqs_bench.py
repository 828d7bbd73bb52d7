"""The SQS face's throughput: SendMessage, SendMessageBatch(10) and ReceiveMessage(10) +
DeleteMessageBatch in messages/s, with boto3 (one client, one thread: what an application
sees) and with wrk sending pre-built JSON-protocol requests (what the server can do), against
WonderQ and against moto's server in the same run, and WonderQ's own routes for the same work
(POST .../messages, .../batch of 10, receive limit=10 + batch ack).

    python bench/sqs_bench.py                 # 10 s a workload
    python bench/sqs_bench.py --smoke         # 1 s a workload, fewer messages: proves it runs
    python bench/sqs_bench.py --no-moto --json out.json

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
def moto() -> Iterator[str | None]:
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
        yield f"http://127.0.0.1:{port}"
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


# ---- wrk ----------------------------------------------------------------------------------
def wrk(
    script: str, url: str, duration_s: float, connections: int, env: dict[str, str]
) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        return {"na": "wrk missing (apt-get install -y wrk)"}
    done = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration_s:g}s",
            "--timeout",
            "10s",
            "-s",
            str(WRK_DIR / f"{script}.lua"),
            url + "/",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "WQ_BODY_BYTES": str(len(BODY)), **env},
        timeout=duration_s + 60,
    )
    for line in done.stdout.splitlines():
        if line.startswith("WRKJSON "):
            result = json.loads(line[8:])
            result["msg_per_s"] = round(result["messages"] / max(result["duration_s"], 1e-9), 1)
            return result
    return {"na": f"wrk failed: {done.stderr.strip()[:200]}"}


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


def wrk_rows(
    url: str, duration_s: float, connections: int, prefill: Callable[[str], None]
) -> dict[str, Any]:
    sqs = sqs_client(url)
    stamp = int(time.time() * 1000)
    send_url = sqs.create_queue(QueueName=f"bench-send-{stamp}")["QueueUrl"]
    recv_url = sqs.create_queue(QueueName=f"bench-recv-{stamp}")["QueueUrl"]
    env = {"WQ_QUEUE_URL": send_url, "WQ_BATCH": "10"}
    out = {
        "send": wrk("sqs_send", url, duration_s, connections, env),
        "send_batch10": wrk("sqs_send_batch", url, duration_s, connections, env),
    }
    prefill(recv_url)
    out["recv10_delete_batch"] = wrk(
        "sqs_recv_delete",
        url,
        duration_s,
        connections,
        {"WQ_QUEUE_URL": recv_url, "WQ_BATCH": "10"},
    )
    return out


def native_rows(
    url: str, duration_s: float, connections: int, prefill_count: int
) -> dict[str, Any]:
    """WonderQ's own routes for the same work, by the same wrk."""
    stamp = int(time.time() * 1000)
    queue = f"bench-native-{stamp}"
    native_prefill(url, queue, 0)
    out = {
        "send": wrk(
            "publish", url, duration_s, connections, {"WQ_PATH": f"/v1/queues/{queue}/messages"}
        ),
        "send_batch10": wrk(
            "batch_publish", url, duration_s, connections, {"WQ_QUEUE": queue, "WQ_BATCH": "10"}
        ),
    }
    recv = f"bench-native-recv-{stamp}"
    native_prefill(url, recv, prefill_count)
    out["recv10_delete_batch"] = wrk(
        "batch_recv_ack", url, duration_s, connections, {"WQ_QUEUE": recv, "WQ_BATCH": "10"}
    )
    return out


def ratio(a: dict[str, Any], b: dict[str, Any]) -> str:
    if "msg_per_s" not in a or "msg_per_s" not in b or not b["msg_per_s"]:
        return "n/a"
    return f"{a['msg_per_s'] / b['msg_per_s']:.2f}x"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per workload")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument(
        "--prefill", type=int, default=400_000, help="messages before a receive run (WonderQ)"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="1 s a workload: proves the script works"
    )
    parser.add_argument("--no-moto", action="store_true", help="skip moto's server")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args(argv)
    if args.smoke:
        args.duration, args.prefill = 1.0, 50_000
    results: dict[str, Any] = {"duration_s": args.duration, "connections": args.connections}
    with wonderq() as url:
        results["wonderq_boto3"] = boto3_rows(
            url, args.duration, lambda q, _: native_prefill(url, q.rsplit("/", 1)[1], 20_000)
        )
        results["wonderq_wrk"] = wrk_rows(
            url,
            args.duration,
            args.connections,
            lambda q: native_prefill(url, q.rsplit("/", 1)[1], args.prefill),
        )
        results["wonderq_native"] = native_rows(url, args.duration, args.connections, args.prefill)
    if not args.no_moto:
        with moto() as moto_url:
            if moto_url is None:
                results["moto_boto3"] = results["moto_wrk"] = {"na": "moto_server missing"}
            else:
                results["moto_boto3"] = boto3_rows(
                    moto_url, args.duration, lambda q, _: sqs_prefill(moto_url, q, 1000)
                )
                results["moto_wrk"] = wrk_rows(
                    moto_url,
                    args.duration,
                    args.connections,
                    lambda q: sqs_prefill(moto_url, q, 2000),
                )
    head = ("workload", "client", "WonderQ SQS", "native", "SQS/native", "moto", "vs moto")
    print("{:<22} {:<6} {:>12} {:>10} {:>11} {:>10} {:>8}".format(*head))
    for key in ("send", "send_batch10", "recv10_delete_batch"):
        for client in ("boto3", "wrk"):
            ours = results[f"wonderq_{client}"].get(key, {})
            native = results["wonderq_native"].get(key, {}) if client == "wrk" else {}
            other = results.get(f"moto_{client}", {}).get(key, {})
            print(
                f"{key:<22} {client:<6} {ours.get('msg_per_s', 'n/a'):>12} "
                f"{native.get('msg_per_s', '-'):>10} {ratio(ours, native) if native else '-':>11} "
                f"{other.get('msg_per_s', 'n/a'):>10} {ratio(ours, other):>8}"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
