"""Run the real server for a test: ``wonderq serve --host 127.0.0.1 --port 0 [flags]``.

The port is read from the line ``wonderq listening on http://127.0.0.1:PORT`` (stdout or
stderr; ``https://`` with TLS, any bound address), then ``GET /healthz`` is polled until it
answers (for an HTTPS server pass ``ssl_context``, a client context trusting its CA). The
process is stopped by its PID (SIGTERM, then SIGKILL if it does not exit). Its output is kept
for failure messages.

Also raw HTTP helpers that check what every answer must carry (``Cache-Control: no-store``,
``Content-Length``) and the error shape.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"wonderq listening on (https?)://(?:\[[0-9a-fA-F:.]+\]|[^\s:/]+):(\d+)")
MAX_ID = 2**63 - 1


def server_command() -> list[str]:
    """``$WONDERQ_SERVER_CMD`` if set (to test another build), else the console script next to
    this interpreter, else on PATH, else ``python -m wonderq``."""
    override = os.environ.get("WONDERQ_SERVER_CMD")
    if override:
        return shlex.split(override)
    beside = Path(sys.executable).with_name("wonderq")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("wonderq")
    if found:
        return [found]
    return [sys.executable, "-m", "wonderq"]


class ServerProcess:
    """One ``wonderq serve`` process on an ephemeral loopback port."""

    def __init__(
        self,
        *flags: str,
        env: Mapping[str, str] | None = None,
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.flags = list(flags)
        self.ssl_context = ssl_context  # for HTTPS: trusts the server's certificate
        self.scheme = "http"
        self.requested_port = port
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.lines: list[str] = []
        self._listening = threading.Event()
        self._reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def output(self) -> str:
        return "".join(self.lines[-200:])

    def start(self, timeout: float = 20.0) -> ServerProcess:
        # Not the runner's WONDERQ_* settings; WONDERQ_TEST_CLUSTERS is for the cluster
        # wrapper (tests/wonderq_on_redis_cluster.py), which does not pass it on.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("WONDERQ_") or k == "WONDERQ_TEST_CLUSTERS"
        }
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.extra_env)
        cmd = [
            *server_command(),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.requested_port),
        ]
        cmd += self.flags
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,  # a Ctrl-C in the terminal is for pytest, not for it
            cwd=ROOT,  # so that `python -m wonderq` finds the package when not installed
        )
        self._reader = threading.Thread(target=self._read_output, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while not self._listening.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server did not start: {cmd}\n{self.output()}")
        while True:
            try:
                if get(self, "/healthz").status == 200:
                    return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server never answered /healthz\n{self.output()}")
            time.sleep(0.05)

    def _read_output(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if not self._listening.is_set():
                m = LISTENING.search(line)
                if m:
                    self.scheme = m.group(1)
                    self.port = int(m.group(2))
                    self._listening.set()

    def signal(self, signum: int) -> None:
        """Send ``signum`` to this server's PID (only ever to this PID)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signum)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait, SIGKILL if needed; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        if self._reader is not None:
            self._reader.join(2)
        return self.proc.returncode


@contextlib.contextmanager
def running_server(
    *flags: str, env: Mapping[str, str] | None = None, ssl_context: ssl.SSLContext | None = None
) -> Iterator[ServerProcess]:
    """A started server, stopped (by PID) when the block ends."""
    srv = ServerProcess(*flags, env=env, ssl_context=ssl_context)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def unique_name(prefix: str = "t") -> str:
    """A fresh queue name, so tests sharing a server never share a queue."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# ---- raw HTTP ---------------------------------------------------------------------------------
@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    srv: ServerProcess,
    method: str,
    path: str,
    body: bytes | str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> Response:
    """One request on a fresh connection; checks the headers every answer must carry."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    conn: http.client.HTTPConnection
    if srv.scheme == "https":
        conn = http.client.HTTPSConnection(
            "127.0.0.1", srv.port, timeout=timeout, context=srv.ssl_context
        )
    else:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        resp = conn.getresponse()
        data = resp.read()
        result = Response(resp.status, resp.headers, data)
    finally:
        conn.close()
    check_common_headers(result)
    return result


def get(srv: ServerProcess, path: str, **kw: Any) -> Response:
    return request(srv, "GET", path, **kw)


def check_common_headers(resp: Response) -> None:
    cache = resp.headers.get("Cache-Control", "")
    assert "no-store" in cache, f"{resp.status} without Cache-Control: no-store"
    assert resp.headers.get("Date"), f"{resp.status} without Date"
    if resp.status == 204:
        assert resp.body == b""
    else:
        length = resp.headers.get("Content-Length")
        assert length is not None, f"{resp.status} without Content-Length"
        assert int(length) == len(resp.body)


def check_error(
    resp: Response, status: int, names: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """Assert the JSON error shape ``{"error": {"code", "message"}}`` with ``status``; that
    the message names ``names`` (case-insensitive) and, if given, the exact ``code``."""
    assert resp.status == status, (resp.status, resp.body[:300])
    assert resp.headers.get("Content-Type", "").startswith("application/json")
    doc = resp.json()
    assert set(doc) == {"error"}, doc
    err = doc["error"]
    assert isinstance(err.get("code"), str) and re.fullmatch(r"[a-z][a-z0-9_]*", err["code"]), err
    assert isinstance(err.get("message"), str) and err["message"], err
    if names is not None:
        assert names.lower() in err["message"].lower(), (names, err)
    if code is not None:
        assert err["code"] == code, err
    return dict(err)


# ---- named queues -----------------------------------------------------------------------------
def make_queue(srv: ServerProcess, prefix: str = "q", **attrs: Any) -> str:
    """A new queue with a fresh name and ``attrs`` (the PUT body), asserting 201."""
    name = unique_name(prefix)
    resp = request(srv, "PUT", f"/v1/queues/{name}", body=json.dumps(attrs))
    assert resp.status == 201, resp.body
    return name


def publish(srv: ServerProcess, name: str, body: str = "m", query: str = "") -> int:
    """Publish one message to queue ``name``; its id."""
    resp = request(srv, "POST", f"/v1/queues/{name}/messages{query}", body=body)
    assert resp.status == 201, resp.body
    return int(resp.json()["id"])


def receive(srv: ServerProcess, name: str, query: str) -> list[dict[str, Any]]:
    """The messages one receive of queue ``name`` with ``query`` leased."""
    resp = get(srv, f"/v1/queues/{name}/messages?{query}")
    assert resp.status == 200, resp.body
    return list(resp.json()["messages"])


def info(srv: ServerProcess, name: str) -> dict[str, Any]:
    """The queue's info document (attributes, counts, totals)."""
    resp = get(srv, f"/v1/queues/{name}")
    assert resp.status == 200, resp.body
    return dict(resp.json())
