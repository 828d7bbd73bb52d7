"""bench/gen/httpgen.c, the benchmark's HTTP load generator, against a real ``wonderq serve``
and the Python ceiling: it must count what the server did, and nothing the server did not.

Compiled with the system's C compiler into the test's temporary directory; each run lasts
half a second on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from _server import ServerProcess, info, request, running_server

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "bench" / "gen" / "httpgen.c"
BODY = "x" * 200
RECV = "/v1/consumer?cid=1001&limit=1&visibility=60"
DELETE = "/v1/consumer?cid=1001&id="
Q = "/v1/queues/default"

pytestmark = pytest.mark.timeout(60)


def require_program(name: str, how: str) -> str:
    """The program's path; skips without it, unless WONDERQ_REQUIRE_ALL=1 (then it fails)."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed: {how}"
        if os.environ.get("WONDERQ_REQUIRE_ALL") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def httpgen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = require_program("cc", "apt-get install gcc")
    exe = tmp_path_factory.mktemp("httpgen") / "httpgen"
    subprocess.run([cc, "-O2", "-Wall", "-Werror", "-o", str(exe), str(SOURCE)], check=True)
    return exe


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    with running_server() as srv:
        yield srv


def load(httpgen: Path, port: int, *mode: str, connections: int = 8) -> dict:
    cmd = [str(httpgen), "--port", str(port), "-c", str(connections), "--duration", "0.5"]
    done = subprocess.run([*cmd, *mode], capture_output=True, text=True, timeout=30, check=True)
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("LOADJSON ")]
    result: dict = json.loads(line.removeprefix("LOADJSON "))
    assert result["errors"] == {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}
    assert result["bad"] == 0, result
    return result


def publish(*more: str) -> list[str]:
    return ["--fixed", "POST", "/v1/publish", "--body", BODY, *more]


def deleted(srv: ServerProcess) -> int:
    return int(info(srv, "default")["totals"]["deleted"])


def test_publishes_count_what_the_server_stored(httpgen: Path, server: ServerProcess) -> None:
    one = load(httpgen, server.port, *publish())
    sixteen = load(httpgen, server.port, *publish("--pipeline", "16"))
    assert one["requests"] > 0 and one["messages"] == one["requests"]
    assert sixteen["messages"] == sixteen["requests"] and sixteen["pipeline"] == 16
    # every answer counted was a 201 the server sent; a round cut off at the deadline may
    # have been stored without its answer being read
    stored = int(info(server, "default")["totals"]["published"])
    assert one["messages"] + sixteen["messages"] <= stored
    assert stored <= one["messages"] + sixteen["messages"] + 8 + 8 * 16


def test_receive_delete_deletes_the_ids_it_received(httpgen: Path, server: ServerProcess) -> None:
    load(httpgen, server.port, *publish("--pipeline", "16"))
    before = int(info(server, "default")["counts"]["ready"])
    result = load(httpgen, server.port, "--recvdel", RECV, DELETE)
    assert result["messages"] > 0 and result["empty"] == 0
    # requests alternate receive and delete on each connection
    assert result["messages"] * 2 <= result["requests"] <= result["messages"] * 2 + 2 * 8
    assert result["messages"] <= deleted(server) <= result["messages"] + 8
    assert result["messages"] < before


def test_until_empty_ends_the_run_when_the_queue_runs_dry(
    httpgen: Path, server: ServerProcess
) -> None:
    """300 messages on 8 connections: the run ends at the first empty answer, long before
    its 20 s, having deleted every message it counted and no more."""
    for _ in range(3):
        body = json.dumps(["m"] * 100)
        assert request(server, "POST", f"{Q}/batch", body=body).status == 201
    cmd = [str(httpgen), "--port", str(server.port), "-c", "8", "--duration", "20"]
    mode = ["--recvdel", RECV, DELETE, "--until-empty"]
    done = subprocess.run([*cmd, *mode], capture_output=True, text=True, timeout=30, check=True)
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("LOADJSON ")]
    result = json.loads(line.removeprefix("LOADJSON "))
    assert result["duration_s"] < 10
    assert result["empty"] >= 1 and result["bad"] == 0
    # leased answers whose deletes were still in flight at the end are not counted
    assert 300 - 8 <= result["messages"] <= deleted(server) <= 300
    refused = subprocess.run([*cmd, *publish("--until-empty")], capture_output=True, timeout=30)
    assert refused.returncode == 2 and b"usage" in refused.stderr


def test_receive_ack_acks_every_id_of_the_batch(httpgen: Path, server: ServerProcess) -> None:
    load(httpgen, server.port, *publish("--pipeline", "16"))
    recv = f"{Q}/messages?cid=1001&limit=100&visibility=60"
    result = load(httpgen, server.port, "--recvack", recv, f"{Q}/ack", "1001")
    assert result["messages"] > 0
    assert result["messages"] <= deleted(server) <= result["messages"] + 8 * 100


def test_the_cycle_keeps_the_depth(httpgen: Path, server: ServerProcess) -> None:
    load(httpgen, server.port, *publish("--pipeline", "16"))
    before = int(info(server, "default")["counts"]["ready"])
    cycle = ["--recvdel", RECV, DELETE, "--publish", "/v1/publish", "--body", BODY]
    result = load(httpgen, server.port, *cycle)
    assert result["messages"] > 0 and result["empty"] == 0
    # each connection publishes, receives, deletes: at most one publish ahead at the deadline
    assert before <= int(info(server, "default")["counts"]["ready"]) + 8
    assert result["messages"] * 3 <= result["requests"] <= result["messages"] * 3 + 3 * 8


def test_a_server_that_is_not_a_queue_counts_no_message(httpgen: Path) -> None:
    """The ceiling answers {"ok":true} to everything: no id, no "messages", so nothing was
    received, deleted or found empty (the generator deletes id 1 to keep the same mix)."""
    cmd = [sys.executable, str(ROOT / "bench" / "ceiling.py"), "--port", "0", "--reading"]
    ceiling = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert ceiling.stdout is not None
        port = int(ceiling.stdout.readline().rsplit(":", 1)[1])
        result = load(httpgen, port, "--recvdel", RECV, DELETE)
        assert result["requests"] > 0
        assert result["messages"] == 0 and result["empty"] == 0
    finally:
        ceiling.terminate()
        ceiling.wait(10)


def test_spread_publishes_send_a_big_body_whole_to_each_queue(
    httpgen: Path, server: ServerProcess
) -> None:
    """--spread with one request per round writes the head it builds and then the body, not
    a copy of both (bench/bigmsg.py's PUTs of distinct files): every queue gets whole bodies."""
    size = 300_000
    for k in range(3):
        assert request(server, "PUT", f"/v1/queues/q{k}", body="{}").status == 201
    mode = [
        "--spread",
        "3",
        "--body-bytes",
        str(size),
        "--fixed",
        "POST",
        "/v1/queues/{q}/messages",
    ]
    result = load(httpgen, server.port, *mode, connections=4)
    stored = [int(info(server, f"q{k}")["totals"]["published"]) for k in range(3)]
    assert result["messages"] > 3 and result["messages"] <= sum(stored) <= result["messages"] + 4
    assert max(stored) - min(stored) <= 4  # round robin over the queues
    for k in range(3):
        peeked = request(server, "GET", f"/v1/queues/q{k}/peek?limit=1").json()
        assert peeked["messages"][0]["body"] == "x" * size
    # And a receive after such a round goes out without the body (the cycle's next request).
    cycle = ["--spread", "3", "--body-bytes", str(size), "--publish", "/v1/queues/{q}/messages"]
    cycle += ["--recvdel", "/v1/queues/{q}/messages?cid=1&limit=1&visibility=60"]
    cycle += ["/v1/queues/{q}/messages/", "--delete-suffix", "?cid=1"]
    result = load(httpgen, server.port, *cycle, connections=4)
    assert result["messages"] > 0 and result["empty"] == 0
