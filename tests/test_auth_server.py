"""Access control as the real server applies it today: ``--auth-file`` checked at start-up,
re-read on SIGHUP, and protected mode over a real connection.

Per-route enforcement (401/403 on each route) is wired into the faces after the api.py
split; tests/test_auth.py pins the decisions down in-process meanwhile.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from _server import ServerProcess, get, request, running_server, server_command

pytestmark = pytest.mark.timeout(60)

TOKEN = "server-test-token-0123456789"
GOOD = f'[tokens.ci]\ntoken = "{TOKEN}"\nqueues = ["jobs-*"]\nrights = ["publish"]\n'


def run_serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("WONDERQ_")}
    full_env.update(env or {})
    return subprocess.run(
        [*server_command(), "serve", "--host", "127.0.0.1", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=full_env,
        stdin=subprocess.DEVNULL,
    )


def wait_for_line(srv: ServerProcess, text: str, after: int = 0, timeout: float = 10.0) -> str:
    """The first output line after index ``after`` containing ``text`` (polls the output the
    reader thread collects; fails after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in srv.lines[after:]:
            if text in line:
                return line
        time.sleep(0.02)
    raise AssertionError(f"no line with {text!r}:\n{srv.output()}")


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ('[tokens.ci]\ntoken = "x\n', ("auth.toml:2:",)),
        ('\n[tokens.ci]\ntoken = "short"\nrights = ["publish"]\n', ("auth.toml:3:", "at least 16")),
        (f'[tokens.ci]\ntoken = "{TOKEN}"\nrights = ["root"]\n', ("auth.toml:3:", "rights")),
    ],
)
def test_a_bad_auth_file_is_a_one_line_start_up_error(
    tmp_path: Path, content: str, words: tuple[str, ...]
) -> None:
    path = tmp_path / "auth.toml"
    path.write_text(content)
    for proc in (
        run_serve("--auth-file", str(path)),
        run_serve(env={"WONDERQ_AUTH_FILE": str(path)}),
    ):
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert lines[0].startswith("wonderq serve: error: --auth-file ")
        for word in words:
            assert word in lines[0]
        assert TOKEN not in lines[0]
    proc = run_serve("--auth-file", str(tmp_path / "none.toml"))
    assert proc.returncode == 1 and "none.toml: cannot read it" in proc.stderr


def test_sighup_reloads_and_keeps_the_old_file_when_the_new_one_is_bad(tmp_path: Path) -> None:
    path = tmp_path / "auth.toml"
    path.write_text(GOOD)
    with running_server("--auth-file", str(path)) as srv:
        wait_for_line(srv, "access control: 1 tokens, 0 AWS access keys")
        mark = len(srv.lines)
        path.write_text(GOOD + '[aws.AKID]\nsecret = "s3cr3t"\nrights = ["consume"]\n')
        srv.signal(signal.SIGHUP)
        line = wait_for_line(srv, "reloaded", mark)
        assert "1 tokens, 1 AWS access keys" in line
        mark = len(srv.lines)
        path.write_text(GOOD + "[tokens.bad]\nrights = ['publish']\n")
        srv.signal(signal.SIGHUP)
        line = wait_for_line(srv, "kept the previous configuration", mark)
        assert "auth.toml:5:" in line and "exactly one of token" in line
        assert get(srv, "/healthz").status == 200  # still serving
        for text in srv.lines:
            assert TOKEN not in text and "s3cr3t" not in text
    assert srv.proc is not None and srv.proc.returncode == 0


def test_sighup_takes_a_right_away_from_a_token_that_just_used_it(tmp_path: Path) -> None:
    """The decisions the server keeps (the router's last one, the Authorizer's cache) do not
    outlive a reload: a publish allowed a moment ago is refused once the file says so."""
    path = tmp_path / "auth.toml"
    path.write_text(GOOD.replace('["publish"]', '["publish", "admin"]'))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with running_server("--auth-file", str(path)) as srv:
        assert request(srv, "PUT", "/v1/queues/jobs-1", "{}", auth).status == 201
        for _ in range(3):  # the same queue, header and route each time: the kept decision
            assert request(srv, "POST", "/v1/queues/jobs-1/messages", "m", auth).status == 201
        mark = len(srv.lines)
        path.write_text(GOOD.replace('["publish"]', '["consume"]'))
        srv.signal(signal.SIGHUP)
        wait_for_line(srv, "reloaded", mark)
        resp = request(srv, "POST", "/v1/queues/jobs-1/messages", "m", auth)
        assert resp.status == 403, (resp.status, resp.body)
        assert request(srv, "GET", "/v1/queues/jobs-1/messages?cid=1", None, auth).status == 200


def test_sighup_without_auth_file_is_harmless() -> None:
    with running_server() as srv:
        mark = len(srv.lines)
        srv.signal(signal.SIGHUP)
        wait_for_line(srv, "SIGHUP: no --auth-file", mark)
        assert get(srv, "/healthz").status == 200


def test_protected_mode_serves_loopback_clients_of_a_wildcard_bind() -> None:
    """Bound to 0.0.0.0 without --auth-file: protected mode is on and says so, and a loopback
    client (the only kind a test may be) is served. A refused client is tested over a real
    connection in tests/test_auth.py (test_gate_hands_over_or_refuses_a_real_connection)."""
    with running_server("--host", "0.0.0.0") as srv:
        line = wait_for_line(srv, "protected mode")
        assert "--auth-file" in line
        assert get(srv, "/healthz").status == 200
        assert get(srv, "/v1/queues").status == 200
    with running_server("--host", "0.0.0.0", "--allow-anonymous") as srv:
        wait_for_line(srv, "--allow-anonymous: anyone")
        assert not any("protected mode" in line for line in srv.lines)
        assert get(srv, "/healthz").status == 200
