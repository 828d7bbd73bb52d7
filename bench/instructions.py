"""Instructions per request, counted by valgrind's callgrind: repeatable where wall-clock rates
on a shared machine are not (the figures quoted in commit messages, docstrings and
bench/RESULTS.md's notes).

Each workload feeds whole HTTP requests to one connection's protocol object in this process,
over a fake transport, with no sockets: the WonderQ protocol + api + engine as the server
builds them, the same protocol in front of an application that returns a constant answer
(``stub``), or the Python ceiling of bench/ceiling.py. The script runs itself under callgrind
twice, with N1 and N2 requests, and divides the difference by N2 - N1, so start-up and
import cost cancel out.

    python bench/instructions.py                      # every workload (needs valgrind)
    python bench/instructions.py publish publish16    # some of them
    python bench/instructions.py --feed publish 1000  # one run, no valgrind (what is measured)

Batch workloads count per message, the others per request. ``*16`` workloads send 16
pipelined requests per read.

The SQS face's workloads come in pairs with the native routes doing the same work, built as
bench/sqs_bench.py's wrk scripts build them (the docs/SQS.md goal is SQS >= 0.6x native):

    sqs_send    / q_send        SendMessage           / POST /v1/queues/default/messages
    sqs_batch10 / q_batch10     SendMessageBatch(10)  / POST .../batch of 10 (per message)
    sqs_recvdel10 / q_recvack10 ReceiveMessage(10) + DeleteMessageBatch / receive limit=10
                                + POST .../ack (per message; delete and ack bodies built here)

    python bench/instructions.py sqs_send q_send sqs_batch10 q_batch10 sqs_recvdel10 q_recvack10
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# Requests per event-loop turn of the publish_turns / publish_wal workloads: 64, what perf stat
# counted for a server under 64 busy connections (one request of each per turn).
TURN = int(os.environ.get("WONDERQ_TURN", "64"))
BODY = b"x" * 200
HOST = b"Host: 127.0.0.1:8080\r\n"
TOKEN = "bench-token-0123456789abcdefghij"
AUTH = b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
PUBLISH = (
    b"POST /v1/publish HTTP/1.1\r\n" + HOST + b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 200\r\n\r\n" + BODY
)
RECEIVE = b"GET /v1/consumer?cid=1001&limit=1&visibility=60 HTTP/1.1\r\n" + HOST + b"\r\n"
DELETE = b"DELETE /v1/consumer?cid=1001&id=%d HTTP/1.1\r\n" + HOST + b"\r\n"
Q = b"/v1/queues/default"
Q_RECEIVE = b"GET " + Q + b"/messages?cid=1001&limit=1&visibility=60 HTTP/1.1\r\n" + HOST + b"\r\n"
Q_DELETE = b"DELETE " + Q + b"/messages/%d?cid=1001 HTTP/1.1\r\n" + HOST + b"\r\n"
Q_RECEIVE_100 = (
    b"GET " + Q + b"/messages?cid=1001&limit=100&visibility=60 HTTP/1.1\r\n" + HOST + b"\r\n"
)
BATCH_BODY = b"[" + b",".join([b'"' + BODY + b'"'] * 100) + b"]"
BATCH = (
    b"POST " + Q + b"/batch HTTP/1.1\r\n" + HOST + b"Content-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n" % len(BATCH_BODY)
) + BATCH_BODY

Q_SEND = (
    b"POST " + Q + b"/messages HTTP/1.1\r\n" + HOST + b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 200\r\n\r\n" + BODY
)
# bench/scale.py's publishes: queues q0..q<N-1> exist; spread1 publishes to q0 only (of
# 10,000), spread10k and spread100k to each in turn (the same requests, only the spreading
# differs), counted after a first pass over every queue (in both runs, so it cancels out).
SPREAD = {"spread1": 10_000, "spread10k": 10_000, "spread100k": 100_000}
SPREAD_SEND = (
    b"POST /v1/queues/q%d/messages HTTP/1.1\r\n" + HOST + b"Content-Type: text/plain; "
    b"charset=utf-8\r\nContent-Length: 200\r\n\r\n" + BODY
)
BATCH10_BODY = b"[" + b",".join([b'"' + BODY + b'"'] * 10) + b"]"
Q_BATCH10 = (
    b"POST " + Q + b"/batch HTTP/1.1\r\n" + HOST + b"Content-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n" % len(BATCH10_BODY)
) + BATCH10_BODY
Q_RECEIVE_10 = (
    b"GET " + Q + b"/messages?cid=1001&limit=10&visibility=60 HTTP/1.1\r\n" + HOST + b"\r\n"
)
Q_ACK_HEAD = b"POST " + Q + b"/ack HTTP/1.1\r\n" + HOST + b"Content-Type: application/json\r\n"
# The SQS face's JSON 1.0 protocol, with the headers bench/wrk/sqs_*.lua send.
SQS_URL = b"http://127.0.0.1:8080/000000000000/default"
SQS_AUTH = (
    b"Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/sqs/"
    b"aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature="
    + b"0" * 64
    + b"\r\n"
)


def sqs_request(action: bytes, body: bytes) -> bytes:
    return (
        b"POST / HTTP/1.1\r\n" + HOST + SQS_AUTH + b"Content-Type: application/x-amz-json-1.0\r\n"
        b"X-Amz-Target: AmazonSQS." + action + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )


SQS_SEND = sqs_request(
    b"SendMessage", b'{"QueueUrl":"' + SQS_URL + b'","MessageBody":"' + BODY + b'"}'
)
SQS_BATCH10 = sqs_request(
    b"SendMessageBatch",
    b'{"QueueUrl":"'
    + SQS_URL
    + b'","Entries":['
    + b",".join(b'{"Id":"m%d","MessageBody":"%s"}' % (i, BODY) for i in range(1, 11))
    + b"]}",
)
SQS_RECEIVE_10 = sqs_request(
    b"ReceiveMessage",
    b'{"QueueUrl":"' + SQS_URL + b'","MaxNumberOfMessages":10,"VisibilityTimeout":60}',
)

# name -> (what it measures, requests or messages per unit of N)
WORKLOADS = {
    "ceiling": "the Python ceiling (bench/ceiling.py), one publish per read",
    "ceiling16": "the Python ceiling, 16 pipelined publishes per read",
    "reading": "the Python reading ceiling (ceiling.py --reading), one publish per read",
    "reading16": "the Python reading ceiling, 16 pipelined publishes per read",
    "ceiling_recvdel": "the Python ceiling, GET + DELETE /v1/consumer alternating (per request)",
    "reading_recvdel": "the Python reading ceiling, GET + DELETE alternating (per request)",
    "stub": "WonderQ's protocol before a constant answer, one publish per read",
    "stub16": "WonderQ's protocol before a constant answer, 16 pipelined publishes per read",
    "publish": "POST /v1/publish, one per read",
    "publish16": "POST /v1/publish, 16 pipelined per read",
    "recvdel": "GET + DELETE /v1/consumer, alternating (per request)",
    "recvdel_q": "named-queue receive + delete, alternating (per request)",
    "publish_turns": "POST /v1/publish, one per read, an event-loop turn every 64 requests",
    "publish_wal": "the same with --data-dir (--fsync everysec): the log's cost per publish",
    "publish_token": "POST /v1/publish with Authorization: Bearer (--auth-file), one per read",
    "recvdel_token": "GET + DELETE /v1/consumer with Authorization: Bearer, alternating",
    "batch": "batch publish of 100 x 200 B (per message)",
    "recvack": "batch receive of 100 + batch ack (per message; ack bodies built outside)",
    "q_send": "POST /v1/queues/default/messages, one per read (sqs_send's native twin)",
    "sqs_send": "SQS SendMessage (JSON 1.0), one per read",
    "q_batch10": "batch publish of 10 x 200 B (per message; sqs_batch10's native twin)",
    "sqs_batch10": "SQS SendMessageBatch of 10 x 200 B (JSON 1.0, per message)",
    "q_recvack10": "receive limit=10 + batch ack (per message; sqs_recvdel10's native twin)",
    "sqs_recvdel10": "SQS ReceiveMessage(10) + DeleteMessageBatch (JSON 1.0, per message)",
    "spread1": "POST /v1/queues/q0/messages with 10,000 queues (bench/scale.py's 1 queue)",
    "spread10k": "POST /v1/queues/q<k>/messages, k round robin over 10,000 queues",
    "spread100k": "POST /v1/queues/q<k>/messages, k round robin over 100,000 queues",
    "big64k": "POST /v1/queues/big/messages of 64 KiB (bench/bigmsg.py), in reads of 256 KiB",
    "big64k_recv": "receive + delete of 64 KiB messages (per message)",
    "big1m": "POST /v1/queues/big/messages of 1 MiB, in reads of 256 KiB",
    "big1m_recv": "receive + delete of 1 MiB messages (per message)",
}
# The big workloads: body bytes, messages stored before (in both runs alike), and the two
# counts of the run (far fewer than the default: valgrind runs ~50x slower than the CPU).
BIG = {"big64k": 65536, "big1m": 1 << 20}
BIG_PREFILL = {"big64k": 250, "big1m": 30}
RUNS = {"big64k": (50, 250), "big64k_recv": (50, 250), "big1m": (6, 30), "big1m_recv": (6, 30)}
READ_BYTES = 256 * 1024  # the most uvloop reads from a socket at once


class Transport(asyncio.Transport):
    """Takes what the protocol writes; nothing goes anywhere."""

    def __init__(self) -> None:
        super().__init__()
        self.last = b""
        self.protocol: Any = None  # a protocol that took the transport over (set_protocol)

    def write(self, data: Any) -> None:
        self.last = data

    def writelines(self, list_of_data: Any) -> None:
        self.last = list_of_data[-1]  # uvloop's writev: no join

    def get_protocol(self) -> Any:
        return self.protocol

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def close(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 5555) if name == "peername" else default


def protocol_for(workload: str, transport: Transport) -> Any:
    if workload.startswith(("ceiling", "reading")):
        sys.path.insert(0, str(HERE))
        import ceiling

        kind = (
            ceiling.ReadingProtocol if workload.startswith("reading") else ceiling.CeilingProtocol
        )
        proto: Any = kind(ceiling.Clock())
        proto.connection_made(transport)
        return proto
    from wonderq import _core, protocol, request
    from wonderq.api import Api
    from wonderq.config import Settings
    from wonderq.longpoll import LongPoll
    from wonderq.routing import Router
    from wonderq.store import MemoryStore

    # With --auth-file the protocol lifts Authorization out of heads (wonderq.headscan).
    settings = Settings(auth_file="bench" if workload.endswith("_token") else None)

    class Owner:
        connections: set[Any] = set()
        shutting_down = False

    broker = _core.Broker(max_batch=1000)
    app: Any
    if workload.startswith("stub"):

        class Stub:
            answer = (201, b'{"id":1}', request.JSON_HEADERS)

            def dispatch(self, req: Any) -> Any:
                return self.answer

            def cancel(self, req: Any) -> None:
                pass

            def count(self, route: str, status: int) -> None:
                pass

        app = Stub()
    else:
        loop = asyncio.get_event_loop()
        store: Any = MemoryStore(broker=broker)
        app = Router()
        longpoll = LongPoll(app.answer, loop.call_later)
        if workload == "publish_wal":
            import atexit
            import shutil
            import tempfile

            from wonderq.store import DurableStore

            data_dir = tempfile.mkdtemp(prefix="wonderq-instructions-")
            atexit.register(shutil.rmtree, data_dir, True)
            store = DurableStore(Settings(data_dir=data_dir, fsync="everysec"), broker=broker)
            store.open()
            loop.run_until_complete(store.start(loop, longpoll))
        else:
            store.start(loop, longpoll)
        Api(store, app, longpoll, 1000).routes(app.add)
        from functools import partial

        from wonderq.server import LazySqsFace, _sqs_face

        sqs = LazySqsFace(partial(_sqs_face, store, longpoll=longpoll))  # as the server does
        app.add("POST", "/", sqs.handle)
        app.set_fallback(sqs.handle, "/{account}/{queue}", ("GET", "POST"), sqs.kind)
        if workload.endswith("_token"):
            from wonderq.auth import AuthConfig, Authorizer

            text = f'[tokens.bench]\ntoken = "{TOKEN}"\nrights = ["publish", "consume"]\n'
            app.authorizer = Authorizer(AuthConfig.parse(text))
    if workload.startswith("spread"):
        for k in range(SPREAD[workload]):
            broker.put_queue(f"q{k}")
    if workload.startswith("big"):
        size = BIG[workload.split("_")[0]]
        broker.put_queue("big")
        for _ in range(BIG_PREFILL[workload.split("_")[0]]):  # as many in both runs
            broker.publish("big", b"x" * size, time.monotonic_ns() // 1_000_000)
    for _ in range(60):  # messages for the consuming workloads, the same whatever N
        broker.publish_batch("default", [BODY] * 1000, time.monotonic_ns() // 1_000_000)
    proto = protocol.HttpProtocol(app, Owner(), settings)
    transport.set_protocol(proto)
    proto.connection_made(transport)
    return proto


def feed(workload: str, n: int) -> None:
    """Send ``n`` requests (messages, for the batch workloads) of ``workload``."""
    import uvloop

    asyncio.set_event_loop(uvloop.new_event_loop())
    transport = Transport()
    received = protocol_for(workload, transport).data_received
    token = workload.endswith("_token")
    if token:
        workload = workload[: -len("_token")]
    if workload in ("ceiling", "reading", "stub", "publish"):
        publish = PUBLISH.replace(HOST, HOST + AUTH) if token else PUBLISH
        for _ in range(n):
            received(publish)
        # A publish is answered 201 (the ceilings: a fixed 200); anything else is an error.
        assert transport.last[:12] in (b"HTTP/1.1 201", b"HTTP/1.1 200", b""), transport.last[:200]
    elif workload in ("publish_turns", "publish_wal"):
        # The log writes once per event-loop turn: let the loop turn every TURN requests.
        loop = asyncio.get_event_loop()
        for i in range(n):
            received(PUBLISH)
            if i % TURN == TURN - 1:
                loop.run_until_complete(asyncio.sleep(0))
        assert transport.last[:12] == b"HTTP/1.1 201", transport.last[:200]
    elif workload in ("ceiling16", "reading16", "stub16", "publish16"):
        data = PUBLISH * 16
        for _ in range(n // 16):
            received(data)
    elif workload.endswith(("recvdel", "recvdel_q")):
        receive, delete = (Q_RECEIVE, Q_DELETE) if workload == "recvdel_q" else (RECEIVE, DELETE)
        if token:
            receive, delete = receive.replace(HOST, HOST + AUTH), delete.replace(HOST, HOST + AUTH)
        for i in range(n // 2):  # the i-th receive leases id i + 1
            received(receive)
            received(delete % (i + 1))
        queue = workload.startswith("recvdel")  # else a ceiling: the same fixed answer
        assert transport.last.endswith(b"true" if queue else b'{"ok":true}'), transport.last
    elif workload == "batch":
        for _ in range(n // 100):
            received(BATCH)
        assert transport.last.startswith(b"HTTP/1.1 201"), transport.last[:200]
    elif workload == "recvack":
        for first in range(1, n + 1 - 99, 100):
            received(Q_RECEIVE_100)
            body = b'{"cid":1001,"ids":[%s]}' % b",".join(
                b"%d" % i for i in range(first, first + 100)
            )
            head = b"POST " + Q + b"/ack HTTP/1.1\r\n" + HOST
            received(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            assert b'"failed":[]' in transport.last, transport.last[-200:]
    elif workload in ("q_send", "sqs_send"):
        request = Q_SEND if workload == "q_send" else SQS_SEND
        for _ in range(n):
            received(request)
        assert transport.last.startswith((b"HTTP/1.1 201", b"HTTP/1.1 200")), transport.last
    elif workload in ("q_batch10", "sqs_batch10"):
        request = Q_BATCH10 if workload == "q_batch10" else SQS_BATCH10
        for _ in range(n // 10):
            received(request)
        assert transport.last.startswith((b"HTTP/1.1 201", b"HTTP/1.1 200")), transport.last
        assert b'Failed":[]' in transport.last or workload == "q_batch10", transport.last
    elif workload == "q_recvack10":
        for first in range(1, n + 1 - 9, 10):
            received(Q_RECEIVE_10)
            ids = b",".join(b"%d" % i for i in range(first, first + 10))
            body = b'{"cid":1001,"ids":[%s]}' % ids
            received(Q_ACK_HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            assert b'"failed":[]' in transport.last, transport.last[-200:]
    elif workload == "sqs_recvdel10":
        # The client's side kept cheap (it is counted too, ~2,500 instructions a message as the
        # native twin's): the answer split at each handle (all of one length: the same queue),
        # the delete body one %-format of a template made once.
        entries = b",".join(b'{"Id":"e%d","ReceiptHandle":"%%s"}' % i for i in range(10))
        template = b'{"QueueUrl":"' + SQS_URL + b'","Entries":[' + entries + b"]}"
        head = (
            b"POST / HTTP/1.1\r\n" + HOST + SQS_AUTH + b"Content-Type: application/x-amz-json-1.0"
        )
        head += b"\r\nX-Amz-Target: AmazonSQS.DeleteMessageBatch\r\nContent-Length: "
        size = 0
        for _ in range(n // 10):
            received(SQS_RECEIVE_10)
            pieces = transport.last.split(b'"ReceiptHandle":"')
            size = size or pieces[1].index(b'"')
            body = template % tuple([piece[:size] for piece in pieces[1:]])
            received(head + b"%d\r\n\r\n" % len(body) + body)
            assert transport.last.endswith(b'"Failed":[]}'), transport.last[-300:]
    elif workload in SPREAD:
        queues = SPREAD[workload]
        requests = [SPREAD_SEND % k for k in range(1 if workload == "spread1" else queues)]
        count = len(requests)
        for i in range(queues):  # one pass first, in both counts: the steady state of
            received(requests[i % count])  # bench/scale.py, which sends each path many times
        for i in range(n):
            received(requests[i % count])
        assert transport.last.startswith(b"HTTP/1.1 201"), transport.last[:200]
    elif workload in BIG:
        size = BIG[workload]
        head = b"POST /v1/queues/big/messages HTTP/1.1\r\n" + HOST
        head += b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n\r\n" % size
        reads = reads_of(head + b"x" * size)
        for _ in range(n):
            read_in_pieces(transport, received, reads)
        assert transport.last.startswith(b"HTTP/1.1 201"), transport.last[:200]
    elif workload.startswith("big") and workload.endswith("_recv"):
        receive = b"GET /v1/queues/big/messages?cid=1001&limit=1&visibility=60 HTTP/1.1\r\n"
        receive += HOST + b"\r\n"
        delete = b"DELETE /v1/queues/big/messages/%d?cid=1001 HTTP/1.1\r\n" + HOST + b"\r\n"
        stored = BIG_PREFILL[workload.split("_")[0]]
        if n > stored:
            raise SystemExit(f"{workload}: at most {stored} messages (the ones stored first)")
        for i in range(n):  # per message: the i-th receive leases id i + 1
            received(receive)
            received(delete % (i + 1))
        assert transport.last.endswith(b"true"), transport.last
    else:
        raise SystemExit(f"unknown workload {workload!r}")


def reads_of(data: bytes) -> list[bytes]:
    """``data`` cut in reads of at most READ_BYTES, as uvloop reads a socket."""
    return [data[start : start + READ_BYTES] for start in range(0, len(data), READ_BYTES)]


def read_in_pieces(transport: Transport, received: Any, reads: list[bytes]) -> None:
    """The reads, as uvloop hands them over: to the protocol, or, once a big body's reader
    has taken the transport over (wonderq.bodyread), copied into the buffer it offers (the
    kernel's copy in a server; valgrind counts its ``rep movsb`` as an instruction a byte)."""
    for piece in reads:
        current = transport.protocol
        if current is None or not hasattr(current, "get_buffer"):
            received(piece)
            continue
        buf = memoryview(current.get_buffer(len(piece)))
        buf[: len(piece)] = piece
        current.buffer_updated(len(piece))


def collected(workload: str, n: int) -> int:
    """Instructions callgrind counts for the whole run of ``feed(workload, n)``."""
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    cmd += [sys.executable, __file__, "--feed", workload, str(n)]
    # This tree's package, not whichever one is installed (bench/run.py from a copy).
    path = os.pathsep.join(p for p in (str(HERE.parent), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=path)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stderr
    m = re.search(r"Collected : (\d+)", out)
    if m is None:
        raise RuntimeError(f"no callgrind total in:\n{out[-2000:]}")
    return int(m.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workloads", nargs="*", help=", ".join(WORKLOADS))
    parser.add_argument("--n1", type=int, help="requests of the first run (default 1600)")
    parser.add_argument("--n2", type=int, help="requests of the second run (default 9600)")
    parser.add_argument("--feed", nargs=2, metavar=("WORKLOAD", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.feed:
        feed(args.feed[0], int(args.feed[1]))
        return 0
    unknown = set(args.workloads) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads {sorted(unknown)}: choose from {', '.join(WORKLOADS)}")
    for workload in args.workloads or list(WORKLOADS):
        n1, n2 = RUNS.get(workload, (1600, 9600))
        n1, n2 = args.n1 or n1, args.n2 or n2
        a, b = collected(workload, n1), collected(workload, n2)
        per = (b - a) / (n2 - n1)
        print(f"{workload:16} {per:8,.0f} instructions  {WORKLOADS[workload]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
