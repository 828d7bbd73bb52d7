"""Every route x {no token, wrong token, a known token without the right, one with it},
through the real server with ``--auth-file``: the table below is the contract of which right
each route needs and on which queue (docs/SECURITY.md).

A route the server does not have (it answers 404 ``not_found`` to a token with every right)
is skipped, so the table can list the contract's routes ahead of their handlers.
"""

from __future__ import annotations

import json
import os
import random
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from _server import Response, ServerProcess, check_error, request, running_server, unique_name

from wonderq.auth import RIGHTS, SEE

pytestmark = pytest.mark.timeout(120)

# One token per right (that right only), one per right with every other right, one with
# every right on "t-*" only, and one with everything (for setting the stage).
TOKENS = {
    **{f"only-{r}": (f"only-{r}-token-0123456789", [r], ["*"]) for r in RIGHTS},
    **{
        f"all-but-{r}": (f"all-but-{r}-token-0123456789", [x for x in RIGHTS if x != r], ["*"])
        for r in RIGHTS
    },
    "elsewhere": ("elsewhere-token-0123456789", list(RIGHTS), ["other-*"]),
    "t-star": ("t-star-token-0123456789abc", list(RIGHTS), ["t-*"]),
    "root": ("root-token-0123456789abcdef", list(RIGHTS), ["*"]),
}


def auth_file(path: Path) -> Path:
    path.write_text(
        "".join(
            f'[tokens.{name}]\ntoken = "{token}"\nqueues = {json.dumps(queues)}\n'
            f"rights = {json.dumps(rights)}\n"
            for name, (token, rights, queues) in TOKENS.items()
        )
    )
    return path


def headers(name: str | None) -> dict[str, str]:
    if name is None:
        return {}
    if name == "wrong":
        return {"Authorization": "Bearer wrong-token-0123456789abcdef"}
    return {"Authorization": f"Bearer {TOKENS[name][0]}"}


@dataclass
class Route:
    """One route: how to call it on a queue, the right it needs, and its success status."""

    method: str
    path: str  # {q} = the queue, {id} = a message id prepared for it
    right: str  # a right, SEE (any right on the queue), or "" (open: /healthz)
    ok: int
    body: str | None = None
    queue: str | None = "named"  # "named": a fresh queue; "default"; None: no queue

    @property
    def name(self) -> str:
        return f"{self.method} {self.path}"


ROUTES = [
    Route("GET", "/healthz", "", 200, queue=None),
    Route("POST", "/v1/publish", "publish", 201, "m", queue="default"),
    Route("GET", "/v1/consumer?cid=1", "consume", 200, queue="default"),
    Route("DELETE", "/v1/consumer?cid=1&id={id}", "consume", 200, queue="default"),
    Route("PUT", "/v1/queues/{q}", "admin", 200, "{}"),
    Route("GET", "/v1/queues/{q}", SEE, 200),
    Route("DELETE", "/v1/queues/{q}", "admin", 204),
    Route("POST", "/v1/queues/{q}/purge", "admin", 200),
    Route("GET", "/v1/queues/{q}/peek", "admin", 200),
    Route("POST", "/v1/queues/{q}/messages", "publish", 201, "m"),
    Route("POST", "/v1/queues/{q}/batch", "publish", 201, '["a", "b"]'),
    Route("GET", "/v1/queues/{q}/messages?cid=1", "consume", 200),
    Route("DELETE", "/v1/queues/{q}/messages/{id}?cid=1", "consume", 200),
    Route("POST", "/v1/queues/{q}/ack", "consume", 200, '{"cid": 1, "ids": [{id}]}'),
    Route("POST", "/v1/queues/{q}/messages/{id}/lease?cid=1&timeout=1", "consume", 200),
    Route("GET", "/metrics", "metrics", 200, queue=None),
]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    path = auth_file(tmp_path_factory.mktemp("auth") / "auth.toml")
    with running_server("--auth-file", str(path)) as server:
        yield server


def call(srv: ServerProcess, route: Route, token: str | None, prepare: bool = True) -> Response:
    """Call ``route`` with ``token``; the queue and a message id are set up with ``root``."""
    queue = "default" if route.queue == "default" else unique_name("t")
    msg_id = 0
    root = headers("root")
    if prepare and route.queue == "named":
        assert request(srv, "PUT", f"/v1/queues/{queue}", "{}", root).status == 201
    if prepare and route.queue is not None:
        base = "/v1/publish" if queue == "default" else f"/v1/queues/{queue}/messages"
        resp = request(srv, "POST", base, "x", root)
        assert resp.status == 201, resp.body
        msg_id = resp.json()["id"]
        receive = (
            "/v1/consumer?cid=1&limit=10"
            if queue == "default"
            else f"/v1/queues/{queue}/messages?cid=1&limit=10"
        )
        assert request(srv, "GET", receive, None, root).status == 200  # leased to cid 1
    path = route.path.replace("{q}", queue).replace("{id}", str(msg_id))
    body = route.body.replace("{id}", str(msg_id)) if route.body else route.body
    return request(srv, route.method, path, body, headers(token))


def present(srv: ServerProcess, route: Route) -> bool:
    resp = call(srv, route, "root")
    return not (resp.status == 404 and resp.json()["error"]["code"] == "not_found")


def granted(right: str) -> str:
    """A token holding ``right`` (and nothing else where possible)."""
    return "only-consume" if right == SEE else f"only-{right}"


def denied(right: str) -> str:
    """A known token lacking ``right`` on the route's queue."""
    return "elsewhere" if right == SEE else f"all-but-{right}"


def assert_401(resp: Response) -> None:
    check_error(resp, 401)
    challenge = resp.headers.get("WWW-Authenticate", "")
    assert challenge.startswith('Bearer realm="wonderq"'), challenge


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
def test_every_route_with_every_kind_of_caller(srv: ServerProcess, route: Route) -> None:
    if not present(srv, route):
        pytest.skip(f"{route.name} is not served yet")
    if route.right == "":
        for token in (None, "wrong", "only-publish", "root"):
            assert call(srv, route, token).status == route.ok
        return
    resp = call(srv, route, granted(route.right))
    assert resp.status == route.ok, (resp.status, resp.body)
    assert_401(call(srv, route, None))
    assert_401(call(srv, route, "wrong"))
    resp = call(srv, route, denied(route.right))
    check_error(resp, 403, code="forbidden")
    # a token with every right, but on other queues only
    if route.queue is not None and route.right != "metrics":
        check_error(call(srv, route, "elsewhere"), 403, code="forbidden")
    # every right on the queues of a glob: the queue in the path is the one checked
    if route.queue == "named":
        resp = call(srv, route, "t-star")
        assert resp.status == route.ok, (resp.status, resp.body)
    elif route.queue == "default":
        check_error(call(srv, route, "t-star"), 403, code="forbidden")


def test_listing_shows_only_the_queues_a_token_may_see(srv: ServerProcess) -> None:
    root = headers("root")
    mine, theirs = unique_name("t"), unique_name("other")
    for name in (mine, theirs):
        assert request(srv, "PUT", f"/v1/queues/{name}", "{}", root).status == 201

    def names(token: str) -> set[str]:
        resp = request(srv, "GET", "/v1/queues?limit=1000", None, headers(token))
        assert resp.status == 200, resp.body
        return {q["name"] for q in resp.json()["queues"]}

    assert {mine, theirs} <= names("root")
    seen = names("elsewhere")
    assert theirs in seen and mine not in seen and "default" not in seen
    assert_401(request(srv, "GET", "/v1/queues", None, {}))
    assert_401(request(srv, "GET", "/v1/queues", None, headers("wrong")))


def test_malformed_authorization_headers_never_500(srv: ServerProcess) -> None:
    """Random Authorization values on raw sockets: always 401 (or 400 for what HTTP itself
    refuses), never 500; the server stays up. WONDERQ_TEST_SEED replays."""
    seed = int(os.environ.get("WONDERQ_TEST_SEED", random.randrange(2**32)))
    print(f"WONDERQ_TEST_SEED={seed}")
    rng = random.Random(seed)
    alphabet = [bytes([b]) for b in range(0x20, 0x7F)] + [b"\t", b"\x80", b"\xff", b"\xc3\xa9"]
    pieces = [b"Bearer", b"bearer", b" ", b"  ", TOKENS["root"][0].encode(), b"=", b"Basic"]
    for _ in range(200):
        value = b"".join(rng.choice(pieces + alphabet) for _ in range(rng.randrange(0, 40)))
        if value == b"Bearer " + TOKENS["root"][0].encode():
            continue
        raw = (
            b"POST /v1/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
            b"Authorization: " + value + b"\r\nConnection: close\r\n\r\nm"
        )
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
            sock.sendall(raw)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        status = int(data.split(b" ", 2)[1])
        assert status in (201, 400, 401, 403), (seed, value, data[:200])
        if status == 201:  # the value was a valid spelling of root's token
            assert TOKENS["root"][0].encode() in value
    assert request(srv, "GET", "/healthz").status == 200
