"""Access control in-process (wonderq/auth.py): the auth file, bearer tokens, globs, rights,
the decision cache, rate-limited failure logs, reload, SigV4 against requests signed by
botocore/boto3 themselves, and the protected-mode decision and gate.

The HTTP faces' per-route enforcement is tested through the real server once it is wired
(see docs/SECURITY.md); here each piece is pinned down alone.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import random
import re
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wonderq import auth
from wonderq.auth import (
    WWW_AUTHENTICATE,
    AuthConfig,
    AuthConfigError,
    AuthError,
    Authorizer,
    FailureLog,
    Forbidden,
    SqsAuthError,
    Unauthorized,
    allowed_anonymous,
    is_loopback_host,
    protected_factory,
    protected_mode,
)

pytest.importorskip("botocore")
boto3 = pytest.importorskip("boto3")
import botocore.session  # noqa: E402
from botocore.auth import SigV4Auth, SigV4QueryAuth  # noqa: E402
from botocore.awsrequest import AWSRequest, AWSResponse  # noqa: E402
from botocore.credentials import Credentials  # noqa: E402

CI_TOKEN = "ci-token-0123456789abcdef"
ADMIN_TOKEN = "admin-token-0123456789abcdef"
HASHED_TOKEN = "hashed-token-0123456789abcdef"
AKID = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
READER_AKID = "AKIDREADER"
READER_SECRET = "reader-secret-0123456789"

AUTH_TOML = f"""
# who may do what
[tokens.ci]
token = "{CI_TOKEN}"
queues = ["jobs-*", "default"]
rights = ["publish", "consume"]

[tokens.admin]
token = "{ADMIN_TOKEN}"
rights = ["publish", "consume", "admin", "metrics"]

[tokens.hashed]
token_sha256 = "{hashlib.sha256(HASHED_TOKEN.encode()).hexdigest()}"
queues = ["[ab]x-?", "report"]
rights = ["consume"]

[aws.{AKID}]
secret = "{SECRET}"
rights = ["publish", "consume", "admin"]

[aws.{READER_AKID}]
secret = "{READER_SECRET}"
queues = ["jobs-*"]
rights = ["consume"]
"""


def bearer(token: str) -> bytes:
    return b"Bearer " + token.encode()


@pytest.fixture
def authz() -> Authorizer:
    return Authorizer(AuthConfig.parse(AUTH_TOML, "auth.toml"))


# ---- the file ----------------------------------------------------------------------------------


def test_load_reads_tokens_hashes_and_keys(tmp_path: Path) -> None:
    path = tmp_path / "auth.toml"
    path.write_text(AUTH_TOML)
    config = AuthConfig.load(str(path))
    assert config.summary() == "3 tokens, 2 AWS access keys"
    names = sorted(p.name for _, p in config.tokens.values())
    assert names == ["admin", "ci", "hashed"]
    assert config.aws[READER_AKID].principal.queues == ("jobs-*",)
    # the default glob
    assert config.aws[AKID].principal.queues == ("*",)


def bad(text: str) -> str:
    with pytest.raises(AuthConfigError) as info:
        AuthConfig.parse(text, "auth.toml")
    message = str(info.value)
    assert "\n" not in message
    return message


def test_syntax_errors_name_the_line_and_column() -> None:
    message = bad('[tokens.ci]\ntoken = "x\nrights = []\n')
    assert message.startswith("auth.toml:2: "), message
    message = bad("[tokens.ci]\n\n\nrights = [publish]\n")
    assert message.startswith("auth.toml:4: "), message
    assert "column" in message


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        # an unknown right, on its key's line
        (f'[tokens.a]\ntoken = "{CI_TOKEN}"\nrights = ["publsh"]\n', 3, "rights must"),
        # a right missing: the table's line
        (f'# c\n[tokens.a]\ntoken = "{CI_TOKEN}"\n', 2, "no rights"),
        # unknown key (a typo of rights)
        (f'[tokens.a]\ntoken = "{CI_TOKEN}"\nright = ["publish"]\n', 3, "unknown key 'right'"),
        # both token and token_sha256
        (
            f'\n[tokens.a]\ntoken = "{CI_TOKEN}"\ntoken_sha256 = "{"0" * 64}"\nrights=["publish"]',
            2,
            "exactly one of token and token_sha256",
        ),
        # neither
        ('[tokens.a]\nrights = ["publish"]\n', 1, "exactly one of token"),
        # a short token
        ('\n\n[tokens."a"]\ntoken = "short"\nrights = ["publish"]\n', 4, "at least 16"),
        # a token with a space cannot be sent as a bearer token
        ('[tokens.a]\ntoken = "has a space in it ok"\nrights = ["publish"]\n', 2, "RFC 6750"),
        # a bad hash
        ('[tokens.a]\ntoken_sha256 = "abc"\nrights = ["publish"]\n', 2, "64 hex digits"),
        # a bad glob
        (f'[tokens.a]\ntoken = "{CI_TOKEN}"\nqueues = ["a/b"]\nrights = ["publish"]', 3, "glob"),
        (f'[tokens.a]\ntoken = "{CI_TOKEN}"\nqueues = []\nrights = ["publish"]', 3, "non-empty"),
        # the same secret twice
        (
            f'[tokens.a]\ntoken = "{CI_TOKEN}"\nrights = ["publish"]\n'
            f'[tokens.b]\ntoken = "{CI_TOKEN}"\nrights = ["consume"]\n',
            4,
            "same secret as [tokens.a]",
        ),
        # an unknown table
        ('[token.a]\ntoken = "x"\n', 1, "unknown table [token]"),
        # an AWS key without a secret
        ('[aws.AKID]\nrights = ["publish"]\n', 1, "needs secret"),
        ('[aws.AKID]\nsecret = "s"\nqueues = ["*"]\nrights = ["root"]\n', 4, "rights must"),
        ('[aws."AK/ID"]\nsecret = "s"\nrights = ["publish"]\n', 1, "access key id"),
    ],
)
def test_semantic_errors_name_the_line(text: str, line: int, words: str) -> None:
    message = bad(text)
    assert message.startswith(f"auth.toml:{line}: "), message
    assert words in message, message
    # never the secret itself
    assert CI_TOKEN not in message


def test_file_problems_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(AuthConfigError, match=r"missing\.toml: cannot read it: No such file"):
        AuthConfig.load(str(tmp_path / "missing.toml"))
    empty = tmp_path / "empty.toml"
    empty.write_text("# nothing\n")
    with pytest.raises(AuthConfigError, match="nobody could get in"):
        AuthConfig.load(str(empty))
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b"# ok\n# caf\xe9\n")
    with pytest.raises(AuthConfigError, match=r"latin\.toml:2: not valid UTF-8"):
        AuthConfig.load(str(latin))


# ---- bearer tokens -----------------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, b"", b"   ", ""])
def test_no_token_is_401_with_the_challenge(authz: Authorizer, header: Any) -> None:
    with pytest.raises(Unauthorized) as info:
        authz.check_bearer(header, "publish", "jobs-1")
    err = info.value
    assert (err.status, err.code) == (401, "unauthorized")
    assert err.headers == WWW_AUTHENTICATE == b'WWW-Authenticate: Bearer realm="wonderq"\r\n'
    assert "Authorization: Bearer" in err.message


@pytest.mark.parametrize(
    "header",
    [
        bearer("not-a-token-of-this-server"),
        bearer(CI_TOKEN[:-1]),  # a prefix of a real one
        bearer(CI_TOKEN + "x"),
        b"Basic " + CI_TOKEN.encode(),
        CI_TOKEN.encode(),  # no scheme
        b"Bearer",
        b"Bearer    ",
        "Bearer \u00e9\u00e9\u00e9",
        b"Bearer \xff\xfe",
    ],
)
def test_unknown_or_malformed_token_is_401_invalid_token(authz: Authorizer, header: Any) -> None:
    with pytest.raises(Unauthorized) as info:
        authz.check_bearer(header, "publish", "jobs-1")
    err = info.value
    assert (err.status, err.code) == (401, "invalid_token")
    assert err.headers.startswith(b'WWW-Authenticate: Bearer realm="wonderq"')
    assert err.headers.endswith(b"\r\n")
    assert CI_TOKEN[:10] not in err.message


@pytest.mark.parametrize(
    "header",
    [
        bearer(CI_TOKEN),
        CI_TOKEN and f"Bearer {CI_TOKEN}",  # str
        b"bearer " + CI_TOKEN.encode(),  # the scheme is case-insensitive (RFC 9110 11.1)
        b"BEARER   " + CI_TOKEN.encode() + b"  ",
        bytearray(bearer(CI_TOKEN)),
    ],
)
def test_right_token_with_the_right_passes(authz: Authorizer, header: Any) -> None:
    key = bytes(header) if isinstance(header, bytearray) else header
    assert authz.check_bearer(key, "publish", "jobs-1") is None
    assert authz.check_bearer(key, "consume", "default") is None


def test_right_token_without_the_right_is_403(authz: Authorizer) -> None:
    with pytest.raises(Forbidden) as info:
        authz.check_bearer(bearer(CI_TOKEN), "admin", "jobs-1")
    err = info.value
    assert (err.status, err.code, err.headers) == (403, "forbidden", b"")
    assert "'ci'" in err.message and "'admin'" in err.message
    # a right it has, on a queue outside its globs
    with pytest.raises(Forbidden, match="may not publish on the queue 'other'"):
        authz.check_bearer(bearer(CI_TOKEN), "publish", "other")
    # server-wide rights take queue None
    with pytest.raises(Forbidden):
        authz.check_bearer(bearer(CI_TOKEN), "metrics", None)
    authz.check_bearer(bearer(ADMIN_TOKEN), "metrics", None)


def test_token_sha256_and_globs(authz: Authorizer) -> None:
    token = bearer(HASHED_TOKEN)
    for queue in ("ax-1", "bx-z", "report"):
        authz.check_bearer(token, "consume", queue)
        assert authz.may_see(token, queue)
    for queue in ("cx-1", "ax-12", "ax-", "reports", "Report", "xreport"):
        with pytest.raises(Forbidden):
            authz.check_bearer(token, "consume", queue)
        assert not authz.may_see(token, queue)
    ci = authz.authenticate(bearer(CI_TOKEN))
    assert [q for q in ("jobs-1", "jobs-", "jobs", "default", "x") if ci.may_see(q)] == [
        "jobs-1",
        "jobs-",
        "default",
    ]
    assert authz.may_see(bearer(ADMIN_TOKEN), "anything")
    assert not authz.may_see(None, "jobs-1")
    assert not authz.may_see(bearer("nope-nope-nope-nope"), "jobs-1")
    name, rights, queues = ci  # unpacks as (name, rights, queues)
    assert (name, rights, queues) == (
        "ci",
        frozenset({"publish", "consume"}),
        ("jobs-*", "default"),
    )


def test_see_is_any_right_on_the_queue(authz: Authorizer) -> None:
    authz.check_bearer(bearer(HASHED_TOKEN), auth.SEE, "ax-1")  # holds only consume there
    authz.check_bearer(bearer(CI_TOKEN), auth.SEE, "jobs-9")
    with pytest.raises(Forbidden, match="has no right on the queue 'ax-1'"):
        authz.check_bearer(bearer(CI_TOKEN), auth.SEE, "ax-1")
    with pytest.raises(Unauthorized):
        authz.check_bearer(None, auth.SEE, "ax-1")
    assert auth.SEE not in auth.RIGHTS  # never granted in a file


def test_every_sqs_action_has_a_right() -> None:
    model = botocore.session.get_session().get_service_model("sqs")
    assert set(model.operation_names) - {"ListQueues"} == set(auth.SQS_ACTION_RIGHTS)
    assert set(auth.SQS_ACTION_RIGHTS.values()) <= {*auth.RIGHTS, auth.SEE}


def test_every_right_on_its_own() -> None:
    text = "".join(
        f'[tokens.{right}]\ntoken = "{right}-token-0123456789abcdef"\nrights = ["{right}"]\n'
        for right in auth.RIGHTS
    )
    authz = Authorizer(AuthConfig.parse(text))
    for holder in auth.RIGHTS:
        header = bearer(f"{holder}-token-0123456789abcdef")
        for right in auth.RIGHTS:
            queue = None if right == "metrics" else "q"
            if right == holder:
                authz.check_bearer(header, right, queue)
            else:
                with pytest.raises(Forbidden):
                    authz.check_bearer(header, right, queue)


def test_token_is_compared_by_digest_in_constant_time(
    authz: Authorizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    # The authorizer binds hmac's constant-time comparison when it is made (auth.py imports
    # hmac there, not at start-up); the spy wraps that binding.
    real = authz._compare_digest
    assert real is hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(authz, "_compare_digest", spy)
    authz.check_bearer(bearer(CI_TOKEN), "publish", "jobs-1")
    assert calls == [(hashlib.sha256(CI_TOKEN.encode()).digest(),) * 2]
    # the secret itself never reaches a comparison
    for a, b in calls:
        assert CI_TOKEN.encode() not in (a, b)
        assert len(a) == len(b) == 32


def test_decisions_are_cached_and_bounded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "auth.toml"
    path.write_text(AUTH_TOML)
    authz = Authorizer.from_file(str(path), cache_headers=4, cache_queues=8)
    calls = 0
    real = authz.authenticate

    def counting(header: Any) -> Any:
        nonlocal calls
        calls += 1
        return real(header)

    monkeypatch.setattr(authz, "authenticate", counting)
    for _ in range(100):
        authz.check_bearer(bearer(CI_TOKEN), "publish", "jobs-1")
        authz.check_bearer(bearer(CI_TOKEN), "consume", "jobs-1")  # same entry, other bit
    assert calls == 1
    bits = auth.RIGHT_BITS
    assert authz.allowed == {
        bearer(CI_TOKEN): {"jobs-1": bits["publish"] | bits["consume"] | bits[auth.SEE]}
    }
    # what the compiled faces do inline, and check_bearer on a miss
    assert authz.allowed[bearer(CI_TOKEN)]["jobs-1"] & bits["publish"]
    # a refusal is decided again every time (and raised every time)
    for _ in range(3):
        with pytest.raises(Forbidden):
            authz.check_bearer(bearer(CI_TOKEN), "admin", "jobs-1")
    assert calls == 4
    with pytest.raises(Forbidden):
        authz.check_bearer(bearer(CI_TOKEN), "publish", "other")
    assert authz.allowed[bearer(CI_TOKEN)]["other"] == 0
    # bounded: queues per header, then headers
    for i in range(100):
        authz.check_bearer(bearer(CI_TOKEN), "publish", f"jobs-{i}")
    assert len(authz.allowed[bearer(CI_TOKEN)]) <= 8
    for variant in range(10):  # spellings of the same token are different headers
        header = b"Bearer" + b" " * (variant + 1) + CI_TOKEN.encode()
        authz.check_bearer(header, "publish", "jobs-1")
    assert len(authz.allowed) <= 4
    # unknown tokens are never cached (anyone could churn the cache with them)
    for i in range(20):
        with pytest.raises(Unauthorized):
            authz.check_bearer(bearer(f"unknown-{i:016d}"), "publish", "jobs-1")
    assert not any(b"unknown" in key for key in authz.allowed)
    # a long header is decided every time instead of being kept
    long_header = b"Bearer " + b" " * 600 + CI_TOKEN.encode()
    before = calls
    authz.check_bearer(long_header, "publish", "jobs-1")
    authz.check_bearer(long_header, "publish", "jobs-1")
    assert calls == before + 2
    assert all(len(key) <= 512 for key in authz.allowed)
    # reload clears it in place (a face may hold the dict)
    held = authz.allowed
    assert held
    assert authz.reload()
    assert authz.allowed is held and not held


# ---- failure logs ------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def auth_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "wonderq.auth"]


def test_failures_from_one_address_are_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    authz = Authorizer(AuthConfig.parse(AUTH_TOML), failures=FailureLog(interval_s=60, clock=clock))
    caplog.set_level(logging.WARNING, "wonderq.auth")
    for _ in range(1000):
        with pytest.raises(Unauthorized):
            authz.check_bearer(bearer("guess-guess-guess-guess"), "publish", "q", "10.0.0.5")
        clock.now += 0.01  # 1000 tries in 10 s
    lines = auth_lines(caplog)
    assert len(lines) == 1, lines
    assert "10.0.0.5" in lines[0] and "not known" in lines[0]
    clock.now += 60
    with pytest.raises(Forbidden):
        authz.check_bearer(bearer(CI_TOKEN), "admin", "jobs-1", "10.0.0.5")
    lines = auth_lines(caplog)
    assert len(lines) == 2
    assert "999 more" in lines[1] and "'ci'" in lines[1]
    # another address has its own allowance
    with pytest.raises(Unauthorized):
        authz.check_bearer(None, "publish", "q", "10.0.0.6")
    assert len(auth_lines(caplog)) == 3
    for line in auth_lines(caplog):
        assert CI_TOKEN not in line and "guess-guess" not in line


def test_failures_from_many_addresses_are_capped(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    failures = FailureLog(interval_s=60, max_lines=20, max_peers=50, clock=clock)
    caplog.set_level(logging.WARNING, "wonderq.auth")
    for i in range(500):
        failures.note(f"10.1.{i // 256}.{i % 256}", "the token is not known to this server")
    assert len(auth_lines(caplog)) == 20
    assert len(failures._peers) <= 50
    clock.now += 61
    failures.note("10.9.9.9", "the token is not known to this server")
    lines = auth_lines(caplog)
    assert len(lines) == 22
    assert "480 more refused requests" in lines[20]
    assert "10.9.9.9" in lines[21]


# ---- reload ------------------------------------------------------------------------------------


def test_reload_swaps_the_config_and_keeps_it_when_the_new_file_is_bad(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "auth.toml"
    path.write_text(AUTH_TOML)
    authz = Authorizer.from_file(str(path))
    authz.check_bearer(bearer(CI_TOKEN), "publish", "jobs-1")
    caplog.set_level(logging.INFO, "wonderq.auth")
    # ci loses publish
    path.write_text(
        AUTH_TOML.replace('rights = ["publish", "consume"]\n', 'rights = ["consume"]\n', 1)
    )
    assert authz.reload() is True
    with pytest.raises(Forbidden):  # the cached decision went with the old config
        authz.check_bearer(bearer(CI_TOKEN), "publish", "jobs-1")
    assert any("reloaded" in line for line in auth_lines(caplog))
    # a broken file: the previous config stays, and the log says why, with the line
    path.write_text(path.read_text() + "\n[tokens.x]\ntoken = 'x'\nrights = ['publish']\n")
    assert authz.reload() is False
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert re.search(r"kept the previous configuration: .*auth\.toml:\d+: token must", errors[0])
    authz.check_bearer(bearer(CI_TOKEN), "consume", "jobs-1")
    path.unlink()
    assert authz.reload() is False
    authz.check_bearer(bearer(CI_TOKEN), "consume", "jobs-1")


# ---- SigV4 -------------------------------------------------------------------------------------

ENDPOINT = "http://127.0.0.1:8080"
QUEUE_URL = f"{ENDPOINT}/000000000000/jobs-1"


def capture_client(secret: str = SECRET, key_id: str = AKID) -> tuple[Any, list[Any]]:
    """A boto3 SQS client whose requests are captured after signing instead of sent."""
    captured: list[Any] = []

    class Raw:  # what AWSResponse reads the body from
        def stream(self, **_: Any) -> Any:
            yield b"{}"

    def before_send(request: Any, **_: Any) -> AWSResponse:
        captured.append(request)
        return AWSResponse(request.url, 200, {}, Raw())

    client = boto3.client(
        "sqs",
        endpoint_url=ENDPOINT,
        region_name="us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=botocore.config.Config(retries={"max_attempts": 0}),
    )
    client.meta.events.register("before-send", before_send)
    return client, captured


def parts(request: Any) -> tuple[str, str, str, dict[str, str], bytes]:
    """What the SQS face would hand verify_sigv4: the wire path and query, lower-case headers
    (Host as the HTTP client sends it), the body."""
    url = urlsplit(request.url)
    headers = {
        k.lower(): v.decode() if isinstance(v, bytes) else str(v)
        for k, v in request.headers.items()
    }
    headers.setdefault("host", url.netloc)
    body = request.body or b""
    if isinstance(body, str):
        body = body.encode()
    return request.method, url.path, url.query, headers, body


def boto3_request(operation: str = "send_message", **kw: Any) -> tuple[Any, ...]:
    secret = kw.pop("secret", SECRET)
    key_id = kw.pop("key_id", AKID)
    client, captured = capture_client(secret, key_id)
    params = kw or {"QueueUrl": QUEUE_URL, "MessageBody": "hello"}
    getattr(client, operation)(**params)
    assert captured
    return parts(captured[0])


def verify(authz: Authorizer, req: tuple[Any, ...], now: float | None = None, **kw: Any) -> Any:
    method, path, query, headers, body = req
    return authz.verify_sigv4(
        method, path, query, headers, body, time.time() if now is None else now, **kw
    )


def sqs_error(authz: Authorizer, req: tuple[Any, ...], now: float | None = None, **kw: Any):
    with pytest.raises(SqsAuthError) as info:
        verify(authz, req, now, **kw)
    return info.value


def test_boto3_json_protocol_good_secret_passes(authz: Authorizer) -> None:
    req = boto3_request()
    assert req[3]["x-amz-target"] == "AmazonSQS.SendMessage"
    principal = verify(authz, req)
    assert principal.name == AKID
    key_id, rights, queues = principal
    assert (key_id, queues) == (AKID, ("*",)) and "admin" in rights
    req = boto3_request(
        "receive_message", secret=READER_SECRET, key_id=READER_AKID, QueueUrl=QUEUE_URL
    )
    reader = verify(authz, req)
    assert reader.allows("consume", "jobs-1") and not reader.allows("publish", "jobs-1")
    authz.check_sqs(reader, "consume", "jobs-1", QUEUE_URL)
    with pytest.raises(SqsAuthError) as info:
        authz.check_sqs(reader, "publish", "jobs-1", QUEUE_URL)
    assert info.value.code == "AccessDenied" and info.value.status == 403
    assert info.value.message == f"Access to the resource {QUEUE_URL} is denied."


def test_boto3_bad_secret_is_signature_does_not_match(authz: Authorizer) -> None:
    err = sqs_error(authz, boto3_request(secret=SECRET[:-1] + "X"))
    assert (err.code, err.status) == ("SignatureDoesNotMatch", 403)
    assert err.message.startswith("The request signature we calculated does not match")
    assert SECRET not in str(err)


def test_unknown_key_is_invalid_client_token_id(authz: Authorizer) -> None:
    err = sqs_error(authz, boto3_request(key_id="AKIDUNKNOWN"))
    assert (err.code, err.status) == ("InvalidClientTokenId", 403)
    assert err.message == "The security token included in the request is invalid."


def test_clock_skew_as_sqs_answers_it(authz: Authorizer) -> None:
    req = boto3_request()
    now = time.time()
    verify(authz, req, now + 14 * 60)
    verify(authz, req, now - 14 * 60)
    err = sqs_error(authz, req, now + 16 * 60)
    assert (err.code, err.status) == ("SignatureDoesNotMatch", 403)
    assert re.fullmatch(
        r"Signature expired: \d{8}T\d{6}Z is now earlier than \d{8}T\d{6}Z "
        r"\(\d{8}T\d{6}Z - 15 min\.\)",
        err.message,
    ), err.message
    err = sqs_error(authz, req, now - 16 * 60)
    assert err.code == "SignatureDoesNotMatch"
    assert err.message.startswith("Signature not yet current:") and "+ 15 min.)" in err.message
    # a stricter window when asked (the brief's 5 minutes)
    strict = Authorizer(authz.config, max_skew_s=300)
    verify(strict, req, now + 4 * 60)
    err = sqs_error(strict, req, now + 6 * 60)
    assert err.code == "SignatureDoesNotMatch" and "- 5 min.)" in err.message


def test_tampering_is_refused(authz: Authorizer) -> None:
    method, path, query, headers, body = boto3_request()
    verify(authz, (method, path, query, headers, body))
    tampered_body = body.replace(b"hello", b"hellO")
    assert tampered_body != body
    err = sqs_error(authz, (method, path, query, headers, tampered_body))
    assert err.code == "SignatureDoesNotMatch"
    for name, value in [
        ("x-amz-target", "AmazonSQS.DeleteQueue"),
        ("host", "127.0.0.1:8081"),
        ("x-amz-date", time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() - 60))),
    ]:
        err = sqs_error(authz, (method, path, query, {**headers, name: value}, body))
        assert err.code == "SignatureDoesNotMatch", name
    err = sqs_error(authz, (method, "/000000000000/jobs-1", query, headers, body))
    assert err.code == "SignatureDoesNotMatch"
    err = sqs_error(authz, (method, path, "Action=DeleteQueue", headers, body))
    assert err.code == "SignatureDoesNotMatch"
    err = sqs_error(authz, ("PUT", path, query, headers, body))
    assert err.code == "SignatureDoesNotMatch"
    # a signed header left out
    stripped = {k: v for k, v in headers.items() if k != "x-amzn-query-mode"}
    assert sqs_error(authz, (method, path, query, stripped, body)).code == "SignatureDoesNotMatch"
    # an unsigned header may be added or changed (as with AWS)
    verify(authz, (method, path, query, {**headers, "x-extra": "1", "user-agent": "x"}, body))


def sign(
    method: str,
    url: str,
    body: bytes | str | dict[str, str] = b"",
    headers: dict[str, str] | None = None,
    secret: str = SECRET,
    query_auth: bool = False,
    expires: int = 3600,
    context: dict[str, Any] | None = None,
) -> tuple[Any, ...]:
    """A request signed by botocore's own signers (header or presigned)."""
    request = AWSRequest(method=method, url=url, data=body, headers=headers or {})
    request.context.update(context or {})
    credentials = Credentials(AKID, secret)
    if query_auth:
        SigV4QueryAuth(credentials, "sqs", "eu-west-3", expires=expires).add_auth(request)
    else:
        SigV4Auth(credentials, "sqs", "eu-west-3").add_auth(request)
    return parts(request.prepare())


def test_query_protocol_form_body(authz: Authorizer) -> None:
    body = "Action=SendMessage&MessageBody=caf%C3%A9%20%2B%20cr%C3%A8me&Version=2012-11-05"
    headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
    req = sign("POST", QUEUE_URL, body, headers)
    assert req[1] == "/000000000000/jobs-1"
    assert verify(authz, req).name == AKID
    method, path, query, hdrs, raw = req
    assert sqs_error(authz, (method, path, query, hdrs, raw + b"&x=1")).code == (
        "SignatureDoesNotMatch"
    )
    # GET with the parameters in the query string, signed in the header
    req = sign(
        "GET", f"{QUEUE_URL}?Action=ReceiveMessage&MaxNumberOfMessages=10&Version=2012-11-05"
    )
    verify(authz, req)
    # odd characters in the query and path survive canonicalisation (SigV4 encodes the
    # query once, leaving - _ . ~ alone; the path twice)
    req = sign("GET", f"{ENDPOINT}/000000000000/a%20b/?Action=GetQueueUrl&QueueName=x%2Fy~%21%20")
    verify(authz, req)


def test_presigned_urls(authz: Authorizer) -> None:
    # botocore's own presigner: the form parameters move into the query string
    req = sign(
        "POST",
        QUEUE_URL,
        {"Action": "ReceiveMessage", "MaxNumberOfMessages": "1"},
        {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
        query_auth=True,
        expires=60,
    )
    method, path, query, headers, body = req
    assert "X-Amz-Signature=" in query and "Action=ReceiveMessage" in query and body == b""
    assert "authorization" not in headers
    now = time.time()
    assert verify(authz, req, now).name == AKID
    err = sqs_error(authz, req, now + 61)
    assert (err.code, err.status) == ("RequestExpired", 400)
    err = sqs_error(authz, req, now + 16 * 60)  # past SQS's own 15 minutes as well
    assert err.code == "SignatureDoesNotMatch" and err.message.startswith("Signature expired")
    tampered = query.replace("MaxNumberOfMessages=1", "MaxNumberOfMessages=10")
    assert sqs_error(authz, (method, path, tampered, headers, body)).code == (
        "SignatureDoesNotMatch"
    )
    bad_secret = sign("GET", f"{QUEUE_URL}?Action=ReceiveMessage", secret="x" * 40, query_auth=True)
    assert sqs_error(authz, bad_secret).code == "SignatureDoesNotMatch"
    # boto3's generate_presigned_url (JSON protocol: the signed headers must come along)
    client, _ = capture_client()
    url = urlsplit(client.generate_presigned_url("receive_message", Params={"QueueUrl": QUEUE_URL}))
    headers = {
        "host": url.netloc,
        "content-type": "application/x-amz-json-1.0",
        "x-amz-target": "AmazonSQS.ReceiveMessage",
        "x-amzn-query-mode": "true",
    }
    verify(authz, ("POST", url.path, url.query, headers, b""))
    err = sqs_error(authz, ("POST", url.path, url.query, {"host": url.netloc}, b""))
    assert "signed but was not sent" in err.message
    # a missing parameter
    cut = "&".join(p for p in url.query.split("&") if not p.startswith("X-Amz-Expires"))
    err = sqs_error(authz, ("POST", url.path, cut, headers, b""))
    assert (err.code, err.status) == ("IncompleteSignature", 400)


def test_unsigned_payload_only_over_https(authz: Authorizer) -> None:
    # botocore sends UNSIGNED-PAYLOAD when payload signing is off, over HTTPS only
    req = sign(
        "POST",
        "https://127.0.0.1:8443/",
        '{"QueueUrl": "x"}',
        {"Content-Type": "application/x-amz-json-1.0"},
        context={"payload_signing_enabled": False},
    )
    assert req[3]["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"
    verify(authz, req, tls=True)
    err = sqs_error(authz, req, tls=False)
    assert err.code == "IncompleteSignature" and "HTTPS" in err.message
    # a declared payload hash must be the body's
    method, path, query, headers, body = sign("POST", QUEUE_URL, "Action=ListQueues")
    declared = {**headers, "x-amz-content-sha256": hashlib.sha256(b"other").hexdigest()}
    assert sqs_error(authz, (method, path, query, declared, body)).code == ("SignatureDoesNotMatch")


def test_missing_and_malformed_credentials(authz: Authorizer) -> None:
    headers = {"host": "127.0.0.1:8080", "x-amz-date": "20260101T000000Z"}
    err = sqs_error(authz, ("POST", "/", "", headers, b"Action=ListQueues"))
    assert (err.code, err.status) == ("MissingAuthenticationToken", 403)
    cases = [
        "AWS AKIDEXAMPLE:abc",  # Signature Version 2
        "AWS4-HMAC-SHA256",
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/sqs/aws4_request",
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/sqs/aws4_request, "
        "SignedHeaders=host, Signature=" + "0" * 64,
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/sqs/aws4_request, "
        "SignedHeaders=host, Signature=" + "0" * 64 + ", Signature=00",
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/sqs/aws4_request, "
        "SignedHeaders=x-amz-date, Signature=" + "0" * 64,
    ]
    for value in cases:
        err = sqs_error(authz, ("POST", "/", "", {**headers, "authorization": value}, b""))
        assert (err.code, err.status) == ("IncompleteSignature", 400), (value, err)
    # both forms at once
    req = sign("GET", f"{QUEUE_URL}?Action=ListQueues", query_auth=True)
    method, path, query, hdrs, body = req
    err = sqs_error(
        authz, (method, path, query, {**hdrs, "authorization": "AWS4-HMAC-SHA256 x"}, body)
    )
    assert err.code == "IncompleteSignature"
    # the wrong service or a date that is not the scope's
    good = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/{date}/us-east-1/{svc}/aws4_request, " + (
        "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64
    )
    now = time.mktime(time.strptime("20260101T000000Z", "%Y%m%dT%H%M%SZ")) - time.timezone
    value = good.format(date="20260101", svc="sns")
    err = sqs_error(authz, ("POST", "/", "", {**headers, "authorization": value}, b""), now)
    assert err.code == "SignatureDoesNotMatch" and "'sqs'" in err.message
    value = good.format(date="20251231", svc="sqs")
    err = sqs_error(authz, ("POST", "/", "", {**headers, "authorization": value}, b""), now)
    assert err.code == "SignatureDoesNotMatch" and "Credential scope" in err.message
    value = good.format(date="20260101", svc="sqs")
    err = sqs_error(authz, ("POST", "/", "", {**headers, "authorization": value}, b""), now)
    assert err.code == "SignatureDoesNotMatch"


def test_signature_compared_in_constant_time(
    authz: Authorizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # sigv4 imports hmac when it verifies
    verify(authz, boto3_request())
    assert len(seen) == 1 and len(seen[0][0]) == len(seen[0][1]) == 64


def test_a_secret_never_reaches_the_log(
    authz: Authorizer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for req in (boto3_request(secret="wrong-secret-0123456789"), boto3_request(key_id="AKIDNOPE")):
        with pytest.raises(SqsAuthError):
            verify(authz, req, peer="10.0.0.9")
    with pytest.raises(Unauthorized):
        authz.check_bearer(bearer(CI_TOKEN + "z"), "publish", "q", "10.0.0.1")
    with pytest.raises(Forbidden):
        authz.check_bearer(bearer(CI_TOKEN), "admin", "q", "10.0.0.2")
    text = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("wonderq"))
    assert "refused 10.0.0.9: SigV4 SignatureDoesNotMatch" in text
    for secret in (SECRET, CI_TOKEN, "wrong-secret-0123456789"):
        assert secret not in text


# ---- fuzzing -----------------------------------------------------------------------------------

HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x2FF), max_size=300)
SIGV4_PIECES = st.lists(
    st.sampled_from(
        [
            "AWS4-HMAC-SHA256",
            " ",
            ",",
            ", ",
            "=",
            "/",
            ";",
            "Credential=",
            "SignedHeaders=",
            "Signature=",
            AKID,
            "20260101",
            "us-east-1",
            "sqs",
            "aws4_request",
            "host",
            "x-amz-date",
            "0" * 64,
            "\u00e9",
            "\x00",
            "%",
        ]
    ),
    max_size=30,
).map("".join)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(header=st.one_of(st.binary(max_size=300), HEADER_TEXT, st.none()))
def test_fuzzed_bearer_headers_only_raise_the_error_family(header: Any) -> None:
    authz = Authorizer(AuthConfig.parse(AUTH_TOML))
    for right, queue in (("publish", "jobs-1"), ("metrics", None)):
        try:
            authz.check_bearer(header, right, queue, "10.0.0.1")
        except AuthError as exc:
            assert exc.status in (401, 403)
            assert exc.code in ("unauthorized", "invalid_token", "forbidden")
            assert "\n" not in exc.message


@settings(max_examples=400, deadline=None, derandomize=True)
@given(
    authorization=st.one_of(SIGV4_PIECES, HEADER_TEXT),
    date=st.one_of(st.just("20260101T000000Z"), HEADER_TEXT),
    query=st.one_of(st.just(""), HEADER_TEXT, SIGV4_PIECES.map(lambda s: "X-Amz-Algorithm=" + s)),
)
def test_fuzzed_sigv4_only_raises_sqs_errors(authorization: str, date: str, query: str) -> None:
    authz = Authorizer(AuthConfig.parse(AUTH_TOML))
    headers = {"host": "127.0.0.1", "x-amz-date": date, "authorization": authorization}
    with pytest.raises(SqsAuthError) as info:
        authz.verify_sigv4("POST", "/", query, headers, b"{}", 1767225600.0)
    assert info.value.status in (400, 403)


def test_fuzzed_presigned_queries_replayable() -> None:
    """Random mutations of a good presigned query: refused with an SQS error, never a crash.
    Seed from WONDERQ_TEST_SEED to replay."""
    seed = int(os.environ.get("WONDERQ_TEST_SEED", random.randrange(2**32)))
    print(f"WONDERQ_TEST_SEED={seed}")
    rng = random.Random(seed)
    authz = Authorizer(AuthConfig.parse(AUTH_TOML))
    method, path, query, headers, body = sign(
        "GET", f"{QUEUE_URL}?Action=ReceiveMessage", query_auth=True
    )
    alphabet = "%&=+/;:, XZ0a\u00e9\x00-"

    def canonical(q: str) -> str:
        request = auth._SigV4Request(authz, method, path, q, headers, body, 0.0, False)
        return request.canonical_query(skip=None)

    for _ in range(300):
        chars = list(query)
        for _ in range(rng.randrange(1, 4)):
            i = rng.randrange(len(chars))
            op = rng.randrange(3)
            if op == 0:
                chars[i] = rng.choice(alphabet)
            elif op == 1:
                del chars[i]
            else:
                chars.insert(i, rng.choice(alphabet))
        mutated = "".join(chars)
        if mutated == query:
            continue
        try:
            authz.verify_sigv4(method, path, mutated, headers, body, time.time())
        except SqsAuthError:
            continue
        # a mutation that still verifies must change nothing that is signed (an empty
        # parameter from a doubled '&', say)
        assert canonical(mutated) == canonical(query), (seed, mutated)


# ---- protected mode ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "peer", "allow", "served"),
    [
        ("127.0.0.1", "127.0.0.1", False, True),
        ("127.0.0.1", "10.0.0.1", False, True),  # cannot happen: a loopback bind
        ("localhost", "192.168.1.2", False, True),
        ("::1", "::1", False, True),
        ("[::1]", "::1", False, True),
        ("0.0.0.0", "127.0.0.1", False, True),
        ("0.0.0.0", "127.8.9.10", False, True),  # all of 127.0.0.0/8
        ("0.0.0.0", "::1", False, True),
        ("::", "::ffff:127.0.0.1", False, True),  # an IPv4 client of a dual-stack socket
        ("::", "::ffff:127.3.2.1", False, True),
        ("0.0.0.0", "10.0.0.1", False, False),
        ("0.0.0.0", "192.168.1.2", False, False),
        ("::", "::ffff:10.0.0.1", False, False),
        ("::", "fe80::1%eth0", False, False),
        ("192.168.1.5", "192.168.1.2", False, False),
        ("myhost.example", "10.0.0.1", False, False),
        ("0.0.0.0", "", False, False),  # unknown peer: refused
        ("0.0.0.0", "not an ip", False, False),
        ("0.0.0.0", "10.0.0.1", True, True),  # --allow-anonymous
        ("::", "2001:db8::1", True, True),
    ],
)
def test_allowed_anonymous(host: str, peer: str, allow: bool, served: bool) -> None:
    assert allowed_anonymous(host, peer, allow) is served


def test_protected_mode_applies_without_auth_file_beyond_loopback() -> None:
    assert protected_mode("0.0.0.0", None, False)
    assert protected_mode("::", None, False)
    assert protected_mode("10.1.2.3", None, False)
    assert not protected_mode("0.0.0.0", "auth.toml", False)
    assert not protected_mode("0.0.0.0", None, True)
    assert not protected_mode("127.0.0.1", None, False)
    assert not protected_mode("127.1.2.3", None, False)
    assert not protected_mode("LOCALHOST", None, False)
    assert is_loopback_host("::1") and not is_loopback_host("::")


def test_protected_factory_is_the_plain_factory_when_nothing_can_be_refused() -> None:
    def factory() -> None:
        return None

    assert protected_factory(factory, "127.0.0.1", False) is factory
    assert protected_factory(factory, "0.0.0.0", True) is factory
    assert protected_factory(factory, "0.0.0.0", False) is not factory


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


@pytest.mark.timeout(20)
@pytest.mark.parametrize("refuse", [False, True])
def test_gate_hands_over_or_refuses_a_real_connection(refuse: bool) -> None:
    """Over a real loopback connection: the gate swaps in the application's protocol, or
    answers 403 protected_mode and closes (the decision is forced here; the real one is
    tested above, and through the real server in tests/test_tls.py)."""
    import uvloop

    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        gate = auth._Gate(_Echo, lambda ip: not refuse, 5.0, FailureLog())
        server = await loop.create_server(lambda: gate, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]

        def client() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(b"GET /v1/queues HTTP/1.1\r\nHost: x\r\n\r\n")
                data = b""
                while b"\r\n\r\n" not in data or not data.endswith((b"ok", b"}")):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                return data

        try:
            return await asyncio.wait_for(loop.run_in_executor(None, client), 10)
        finally:
            server.close()

    data = uvloop.run(main())
    if refuse:
        assert data.startswith(b"HTTP/1.1 403 Forbidden\r\n")
        assert b"Cache-Control: no-store\r\n" in data and b"Connection: close\r\n" in data
        assert b'"code": "protected_mode"' in data and b"--auth-file" in data
    else:
        assert data.endswith(b"ok")


class _FakeTransport:
    def __init__(self, ip: str) -> None:
        self.ip = ip
        self.protocol: Any = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return (self.ip, 40000) if name == "peername" else default

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def close(self) -> None:
        pass


@pytest.mark.timeout(20)
def test_refused_connections_are_logged_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "wonderq.auth")
    made: list[Any] = []

    async def main() -> None:
        factory = protected_factory(lambda: made.append(1) or _Echo(), "0.0.0.0", False)
        for i in range(300):
            transport = _FakeTransport("10.0.0.7" if i % 3 else "127.0.0.1")
            factory().connection_made(transport)
            proto = transport.protocol
            if isinstance(proto, auth._Refuse):
                proto.connection_lost(None)  # cancels its timer

    asyncio.run(main())
    assert len(made) == 100  # the loopback ones got the application's protocol
    lines = auth_lines(caplog)
    assert len(lines) == 1 and "10.0.0.7" in lines[0] and "protected mode" in lines[0]
