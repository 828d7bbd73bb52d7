"""What an idle in-memory server loads: only what serving needs, so that its resident memory
stays small (bench/RESULTS.md, "1,000,000 x 200 B resident"). Modules that only some requests
or options need are imported on first use: decimal (a JSON number with a fraction), hashlib
and hmac (--auth-file, the status page's ETags), mimetypes (the status page's files); the email
package and datetime not at all (the Date header is written by request.http_date). Python's
own import log (PYTHONPROFILEIMPORTTIME, on stderr) of a real server says what it loaded."""

from __future__ import annotations

import http.client
import json

import pytest
from _server import ServerProcess, request

# Imported on first use only (decimal: a JSON fraction; hashlib, hmac: --auth-file, the status
# page; mimetypes: the status page; wonderq.tls: --tls-cert), or not at all by an in-memory
# server on an ASCII host (email, datetime, the idna codec and unicodedata).
LAZY = {
    "decimal",
    "_decimal",
    "hashlib",
    "_hashlib",
    "hmac",
    "mimetypes",
    "wonderq.tls",
    "email",
    "datetime",
    "_datetime",
    "encodings.idna",
    "unicodedata",
    "prometheus_client",  # at the first scrape of /metrics
}


def lazy(modules: list[str]) -> list[str]:
    return sorted(m for m in modules if m in LAZY or m.startswith("email."))


def imported_after_startup(srv: ServerProcess) -> list[str]:
    """The modules the server imported once the interpreter had started: after ``site``,
    whose .pth hooks belong to the machine, not to the server."""
    names = [
        line.rsplit("|", 1)[1].strip()
        for line in srv.lines
        if line.startswith("import time:") and "|" in line and "imported package" not in line
    ]
    return names[names.index("site") + 1 :]


@pytest.mark.timeout(60)
def test_an_idle_in_memory_server_imports_only_what_serving_needs() -> None:
    srv = ServerProcess(env={"PYTHONPROFILEIMPORTTIME": "1"}).start()
    try:
        batch = request(srv, "POST", "/v1/queues/default/batch", json.dumps(["a", "b"]))
        ids = batch.json()["ids"]
        assert batch.status == 201 and len(ids) == 2
        got = request(srv, "GET", "/v1/consumer?cid=1&limit=2").json()["messages"]
        assert [m["id"] for m in got] == ids
        assert request(srv, "DELETE", f"/v1/consumer?cid=1&id={ids[0]}").json() is True
        before = imported_after_startup(srv)
        # A fraction of a second in a JSON body brings decimal in (seconds convert to ms
        # exactly, rounded up), and the status page hashlib (its files' ETags).
        put = request(srv, "PUT", "/v1/queues/lazy", json.dumps({"visibility_timeout": 1.0001}))
        assert put.status in (200, 201)
        attrs = request(srv, "GET", "/v1/queues/lazy").json()["attributes"]
        assert attrs["visibility_timeout"] == 1.001
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        try:
            conn.request("GET", "/")  # the page answers no-cache, not the API's no-store
            page = conn.getresponse()
            assert page.status == 200 and page.read().startswith(b"<!doctype html>")
            assert (page.getheader("ETag") or "").startswith('"')
        finally:
            conn.close()
    finally:
        assert srv.stop() == 0
    assert "wonderq.api" in before  # the import log is there at all
    assert lazy(before) == []
    after = imported_after_startup(srv)
    assert {"decimal", "hashlib"} <= set(after)
    on_use = {"decimal", "_decimal", "hashlib", "_hashlib", "hmac", "mimetypes"}
    assert [m for m in lazy(after) if m not in on_use] == []
