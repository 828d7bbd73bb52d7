"""Access control: who may publish, consume and administer which queues.

``--auth-file`` (TOML) names the callers. ``[tokens.NAME]`` tables are bearer tokens of the
HTTP API (``Authorization: Bearer <token>``); ``[aws.ACCESS_KEY_ID]`` tables are credentials of
the SQS face, whose requests are checked by their AWS Signature Version 4. Each has ``queues``
(fnmatch globs over queue names, default ``["*"]``) and ``rights`` (:data:`RIGHTS`)::

    [tokens.ci]
    token = "s3cr3t-token-of-at-least-16-chars"   # or token_sha256 = "<64 hex digits>"
    queues = ["jobs-*", "default"]
    rights = ["publish", "consume"]

    [aws.AKIDEXAMPLE]
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    rights = ["publish", "consume", "admin"]

Secrets are never compared as strings: a presented bearer token is hashed (SHA-256) and looked
up by its digest, so what a timing difference could reveal is a prefix of a digest, which says
nothing about the secret; the match is then confirmed with :func:`hmac.compare_digest`. SigV4
signatures are compared with :func:`hmac.compare_digest` too (:mod:`wonderq.sigv4` verifies
them). No secret, token or signature is put in a log line, an error message or a metric.

The hot path is :meth:`Authorizer.check_bearer`: what a header may do on a queue is kept in a
bounded two-level dict (:attr:`Authorizer.allowed`), which the compiled faces read inline, so
a request whose decision is known costs two dict lookups and a bit test.

Also here: the protected-mode decision (without ``--auth-file``, a server bound to a
non-loopback address serves only loopback clients unless ``--allow-anonymous``) and the
connection gate that applies it. docs/SECURITY.md describes the whole model.
"""

from __future__ import annotations

import asyncio
import fnmatch
import ipaddress
import logging
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, NamedTuple

from .sigv4 import SqsAuthError, _SigV4Request

__all__ = [
    "RIGHTS",
    "RIGHT_BITS",
    "SEE",
    "SIGV4_MAX_SKEW_S",
    "SQS_ACTION_RIGHTS",
    "WWW_AUTHENTICATE",
    "AuthConfig",
    "AuthConfigError",
    "AuthError",
    "Authorizer",
    "FailureLog",
    "Forbidden",
    "Principal",
    "SqsAuthError",
    "Unauthorized",
    "allowed_anonymous",
    "is_loopback_host",
    "protected_factory",
    "protected_mode",
]

log = logging.getLogger("wonderq.auth")

#: What a token or key may be granted. ``consume`` = receive, delete, change lease;
#: ``admin`` = create, update, delete, purge, peek; ``metrics`` = /metrics and /v1/events.
RIGHTS = ("publish", "consume", "admin", "metrics")

#: Not a right one grants: ``check_bearer(header, SEE, queue)`` asks for any right on the queue
#: (reading a queue's info, GetQueueUrl), as listing does.
SEE = "see"

#: One bit per right in the masks of :attr:`Authorizer.allowed`.
RIGHT_BITS = {"publish": 1, "consume": 2, "admin": 4, "metrics": 8, SEE: 16}

#: The right each SQS action needs on the queue it names (the SQS face calls
#: :meth:`Authorizer.check_sqs` with it). ListQueues needs none: it lists only the queues the
#: key may see. A move task acts on two queues: ``admin`` on both (source and destination).
#: CreateQueue with a RedrivePolicy also needs ``admin`` on the dead-letter queue.
SQS_ACTION_RIGHTS = {
    "SendMessage": "publish",
    "SendMessageBatch": "publish",
    "ReceiveMessage": "consume",
    "DeleteMessage": "consume",
    "DeleteMessageBatch": "consume",
    "ChangeMessageVisibility": "consume",
    "ChangeMessageVisibilityBatch": "consume",
    "CreateQueue": "admin",
    "DeleteQueue": "admin",
    "PurgeQueue": "admin",
    "SetQueueAttributes": "admin",
    "TagQueue": "admin",
    "UntagQueue": "admin",
    "AddPermission": "admin",
    "RemovePermission": "admin",
    "StartMessageMoveTask": "admin",
    "CancelMessageMoveTask": "admin",
    "ListMessageMoveTasks": "admin",
    "GetQueueUrl": SEE,
    "GetQueueAttributes": SEE,
    "ListQueueTags": SEE,
    "ListDeadLetterSourceQueues": SEE,
}

#: RFC 6750 section 3: the challenge of a 401 (``error=`` added when a token was presented).
WWW_AUTHENTICATE = b'WWW-Authenticate: Bearer realm="wonderq"\r\n'
_WWW_AUTHENTICATE_INVALID = b'WWW-Authenticate: Bearer realm="wonderq", error="invalid_token"\r\n'

#: How far a SigV4 request's date may be from our clock, either way. Amazon SQS answers
#: "Signature expired: ... (... - 15 min.)" past 15 minutes (aws/aws-sdk-go#487,
#: aws/aws-sdk-php#642), and SQS presigned URLs last no longer than that either.
SIGV4_MAX_SKEW_S = 15 * 60

# A bearer token as RFC 6750 section 2.1 lets it be written (b64token).
_B64TOKEN = re.compile(rb"[A-Za-z0-9\-._~+/]+=*\Z")
_MIN_TOKEN_CHARS = 16
_HEX64 = re.compile(r"[0-9a-fA-F]{64}\Z")
_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}\Z")
_ACCESS_KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}\Z")
# Queue names are [A-Za-z0-9_-]{1,80}; a glob adds * ? [ ] and ! (fnmatch's negated set).
_GLOB = re.compile(r"[A-Za-z0-9_\-*?\[\]!]{1,200}\Z")
_TOKEN_KEYS = frozenset(("token", "token_sha256", "queues", "rights"))
_AWS_KEYS = frozenset(("secret", "queues", "rights"))

# The decision cache (Authorizer.allowed): at most _CACHE_HEADERS headers of known tokens,
# each with at most _CACHE_QUEUES queues; a header longer than _CACHE_MAX_HEADER (a real one
# is ~60 bytes) is decided every time instead of being kept.
_CACHE_HEADERS = 1024
_CACHE_QUEUES = 4096
_CACHE_MAX_HEADER = 512


# ---- errors ------------------------------------------------------------------------------------


class AuthConfigError(ValueError):
    """A bad ``--auth-file``: ``str()`` is one line naming the file, the line and the problem."""


class AuthError(Exception):
    """A request refused by access control, shaped like the API's ``ApiError``: the face answers
    it as ``{"error": {"code", "message"}}`` with ``status`` and the extra ``headers`` lines."""

    status = 500
    code = "auth_error"

    def __init__(self, code: str, message: str, headers: bytes = b"") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.headers = headers


class Unauthorized(AuthError):
    """401: no token, or one this server does not know. Carries ``WWW-Authenticate``."""

    status = 401


class Forbidden(AuthError):
    """403: a known token without the right for this queue, or protected mode."""

    status = 403


def _missing_token() -> Unauthorized:
    return Unauthorized(
        "unauthorized",
        "this server requires a token: send the header Authorization: Bearer <token>",
        WWW_AUTHENTICATE,
    )


def _invalid_token(why: str) -> Unauthorized:
    return Unauthorized("invalid_token", why, _WWW_AUTHENTICATE_INVALID)


# ---- principals --------------------------------------------------------------------------------


@lru_cache(maxsize=1024)
def _matcher(patterns: tuple[str, ...]) -> Callable[[str], Any]:
    """One compiled regex for a principal's globs (fnmatch semantics, case-sensitive)."""
    if "*" in patterns:
        return lambda name: True
    union = "|".join(f"(?:{fnmatch.translate(p)})" for p in patterns)
    return re.compile(union).match


class Principal(NamedTuple):
    """Who a request is: a token's name or an access key id, its rights and its queue globs.
    Unpacks as ``(name, rights, queues)``."""

    name: str
    rights: frozenset[str]
    queues: tuple[str, ...]

    def may_see(self, queue: str) -> bool:
        """Whether ``queue`` is one of this principal's (listing, any right)."""
        return _matcher(self.queues)(queue) is not None

    def mask(self, queue: str | None) -> int:
        """The RIGHT_BITS this principal holds on ``queue`` (None: its server-wide rights)."""
        if queue is not None and _matcher(self.queues)(queue) is None:
            return 0
        bits = RIGHT_BITS[SEE]
        for right in self.rights:
            bits |= RIGHT_BITS[right]
        return bits

    def allows(self, right: str, queue: str | None) -> bool:
        """Whether this principal holds ``right`` on ``queue`` (None: a server-wide right)."""
        if right not in self.rights and right != SEE:
            return False
        return queue is None or _matcher(self.queues)(queue) is not None


@dataclass
class _AwsKey:
    principal: Principal
    secret: str


@dataclass
class AuthConfig:
    """A parsed ``--auth-file``: bearer tokens by the SHA-256 digest of their secret, and AWS
    credentials by access key id."""

    path: str = "<memory>"
    tokens: dict[bytes, tuple[bytes, Principal]] = field(default_factory=dict)  # digest ->
    aws: dict[str, _AwsKey] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str) -> AuthConfig:
        """Read and validate ``path``; raises AuthConfigError (one line) if it is unusable."""
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError as exc:
            raise AuthConfigError(f"{path}: cannot read it: {exc.strerror or exc}") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            raise AuthConfigError(f"{path}:{line}: not valid UTF-8") from None
        return cls.parse(text, path)

    @classmethod
    def parse(cls, text: str, path: str = "<memory>") -> AuthConfig:
        """Validate the TOML ``text`` (``path`` only names it in errors)."""
        # Imported here: a server without --auth-file never loads the TOML parser.
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover - Python 3.10 (pyproject requires tomli there)
            import tomli as tomllib
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise AuthConfigError(_toml_error(path, text, exc)) from None
        return _Validator(path, text).config(doc)

    def summary(self) -> str:
        """For the log: how many of each, never a secret."""
        return f"{len(self.tokens)} tokens, {len(self.aws)} AWS access keys"


def _toml_error(path: str, text: str, exc: Exception) -> str:
    message = " ".join(str(exc).split())
    m = re.search(r"\(at line (\d+), column (\d+)\)", message)
    if m:
        problem = message[: m.start()].strip()
        return f"{path}:{m.group(1)}: {problem} (column {m.group(2)})"
    m = re.search(r"\(at end of document\)", message)
    if m:
        line = text.count("\n") + 1
        return f"{path}:{line}: {message[: m.start()].strip()} (at the end of the file)"
    return f"{path}: {message}"


class _Validator:
    """Checks the parsed document; errors name the line of the table (or key) at fault, found
    in the text, since tomllib reports lines only for syntax errors."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def fail(
        self, problem: str, section: str, name: str | None = None, key: str | None = None
    ) -> AuthConfigError:
        line = self.locate(section, name, key)
        where = f"{self.path}:{line}" if line else self.path
        return AuthConfigError(f"{where}: {problem}")

    def locate(self, section: str, name: str | None, key: str | None) -> int | None:
        """The 1-based line of ``[section.name]`` (or of ``key =`` inside it), else of the
        first line mentioning ``name``, else None."""
        parts = [re.escape(section)]
        if name is not None:
            parts.append(rf"(?:{re.escape(name)}|\"{re.escape(name)}\"|'{re.escape(name)}')")
        end = r"\s*\]" if name is not None else r"\s*[.\]]"
        header = re.compile(r"\s*\[\s*" + r"\s*\.\s*".join(parts) + end)
        key_line = re.compile(rf"\s*\"?{re.escape(key)}\"?\s*=") if key else None
        for i, line in enumerate(self.lines):
            if header.match(line):
                if key_line is None:
                    return i + 1
                for j in range(i + 1, len(self.lines)):
                    if self.lines[j].lstrip().startswith("["):
                        break
                    if key_line.match(self.lines[j]):
                        return j + 1
                return i + 1
        if name is not None:
            for i, line in enumerate(self.lines):
                if name in line:
                    return i + 1
        return None

    def config(self, doc: dict[str, Any]) -> AuthConfig:
        path = self.path
        for section in doc:
            if section not in ("tokens", "aws"):
                raise self.fail(
                    f"unknown table [{section}]: expected [tokens.NAME] or [aws.ACCESS_KEY_ID]",
                    section,
                )
        config = AuthConfig(path)
        tokens = doc.get("tokens", {})
        if not isinstance(tokens, dict):
            raise self.fail("'tokens' must be tables [tokens.NAME]", "tokens")
        for name, table in tokens.items():
            digest, principal = self.token(name, table)
            if digest in config.tokens:
                other = config.tokens[digest][1].name
                raise self.fail(
                    f"[tokens.{name}] has the same secret as [tokens.{other}]", "tokens", name
                )
            config.tokens[digest] = (digest, principal)
        keys = doc.get("aws", {})
        if not isinstance(keys, dict):
            raise self.fail("'aws' must be tables [aws.ACCESS_KEY_ID]", "aws")
        for key_id, table in keys.items():
            config.aws[key_id] = self.aws_key(key_id, table)
        if not config.tokens and not config.aws:
            raise AuthConfigError(
                f"{path}: no [tokens.NAME] or [aws.ACCESS_KEY_ID] table: nobody could get in"
            )
        return config

    def common(self, section: str, name: str, table: dict[str, Any]) -> Principal:
        queues = table.get("queues", ["*"])
        if (
            not isinstance(queues, list)
            or not queues
            or not all(isinstance(q, str) and _GLOB.match(q) for q in queues)
        ):
            raise self.fail(
                "queues must be a non-empty list of queue names or globs "
                '(letters, digits, _ - and * ? [ ] !), like ["jobs-*"]',
                section,
                name,
                "queues",
            )
        rights = table.get("rights")
        if rights is None:
            raise self.fail(
                f"[{section}.{name}] has no rights: give some of {', '.join(RIGHTS)}",
                section,
                name,
            )
        if (
            not isinstance(rights, list)
            or not rights
            or not all(isinstance(r, str) and r in RIGHTS for r in rights)
        ):
            raise self.fail(
                f"rights must be a non-empty list of {', '.join(RIGHTS)}",
                section,
                name,
                "rights",
            )
        return Principal(name, frozenset(rights), tuple(dict.fromkeys(queues)))

    def token(self, name: str, table: Any) -> tuple[bytes, Principal]:
        if not isinstance(table, dict):
            raise self.fail(f"tokens.{name} must be a table [tokens.{name}]", "tokens", name)
        if not _NAME.match(name):
            raise self.fail(
                f"token name {name!r} must be 1-64 letters, digits or _ . @ -", "tokens", name
            )
        unknown = sorted(set(table) - _TOKEN_KEYS)
        if unknown:
            raise self.fail(
                f"[tokens.{name}] has unknown key {unknown[0]!r} "
                "(expected token or token_sha256, queues, rights)",
                "tokens",
                name,
                unknown[0],
            )
        secret, hashed = table.get("token"), table.get("token_sha256")
        if (secret is None) == (hashed is None):
            raise self.fail(
                f"[tokens.{name}] needs exactly one of token and token_sha256", "tokens", name
            )
        if secret is not None:
            if not isinstance(secret, str) or not _B64TOKEN.match(secret.encode("utf-8")):
                raise self.fail(
                    "token must be letters, digits and - . _ ~ + / (then any =), as a bearer "
                    "token is written (RFC 6750)",
                    "tokens",
                    name,
                    "token",
                )
            if len(secret) < _MIN_TOKEN_CHARS:
                raise self.fail(
                    f"token must be at least {_MIN_TOKEN_CHARS} characters (make one with: "
                    "python -c 'import secrets; print(secrets.token_urlsafe(32))')",
                    "tokens",
                    name,
                    "token",
                )
            import hashlib  # here and in Authorizer: not at start-up (see Authorizer)

            digest = hashlib.sha256(secret.encode("ascii")).digest()
        else:
            if not isinstance(hashed, str) or not _HEX64.match(hashed):
                raise self.fail(
                    "token_sha256 must be the 64 hex digits of the token's SHA-256 "
                    "(printf %s TOKEN | sha256sum)",
                    "tokens",
                    name,
                    "token_sha256",
                )
            digest = bytes.fromhex(hashed)
        return digest, self.common("tokens", name, table)

    def aws_key(self, key_id: str, table: Any) -> _AwsKey:
        if not isinstance(table, dict):
            raise self.fail(f"aws.{key_id} must be a table [aws.{key_id}]", "aws", key_id)
        if not _ACCESS_KEY_ID.match(key_id):
            raise self.fail(
                f"access key id {key_id!r} must be 1-128 letters, digits or _ . -", "aws", key_id
            )
        unknown = sorted(set(table) - _AWS_KEYS)
        if unknown:
            raise self.fail(
                f"[aws.{key_id}] has unknown key {unknown[0]!r} (expected secret, queues, rights)",
                "aws",
                key_id,
                unknown[0],
            )
        secret = table.get("secret")
        if not isinstance(secret, str) or not secret or not secret.isprintable():
            raise self.fail(
                f"[aws.{key_id}] needs secret, the secret access key (a non-empty string)",
                "aws",
                key_id,
                "secret" if "secret" in table else None,
            )
        return _AwsKey(self.common("aws", key_id, table), secret)


# ---- failure log -------------------------------------------------------------------------------


class FailureLog:
    """Logs refused requests, rate-limited so the log cannot become the attack.

    One line per client address per ``interval_s`` (the next one says how many were not
    logged), and at most ``max_lines`` lines per interval over all addresses (a line at the
    end of the interval says how many were dropped). Addresses remembered: ``max_peers``,
    the oldest forgotten first.
    """

    def __init__(
        self,
        logger: logging.Logger = log,
        *,
        interval_s: float = 60.0,
        max_lines: int = 20,
        max_peers: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._interval_s = interval_s
        self._max_lines = max_lines
        self._max_peers = max_peers
        self._clock = clock
        self._peers: dict[str, list[float]] = {}  # peer -> [last logged at, not logged since]
        self._window_start = clock()
        self._lines = 0  # lines in the current window
        self._dropped = 0  # failures not logged because of max_lines, this window

    def note(self, peer: str | None, reason: str) -> None:
        """One refused request from ``peer`` (an IP address; None = unknown)."""
        now = self._clock()
        if now - self._window_start >= self._interval_s:
            if self._dropped:
                self._log.warning(
                    "access control: %d more refused requests in the last %.0f s not logged",
                    self._dropped,
                    self._interval_s,
                )
            self._window_start = now
            self._lines = 0
            self._dropped = 0
        key = peer or "-"
        entry = self._peers.get(key)
        if entry is not None and now - entry[0] < self._interval_s:
            entry[1] += 1
            return
        if self._lines >= self._max_lines:
            self._dropped += 1
            if entry is not None:
                entry[1] += 1
            return
        self._lines += 1
        if entry is not None and entry[1]:
            self._log.warning(
                "access control refused %s: %s (and %d more since the last line about it)",
                key,
                reason,
                int(entry[1]),
            )
        else:
            self._log.warning("access control refused %s: %s", key, reason)
        self._peers.pop(key, None)
        self._peers[key] = [now, 0]
        if len(self._peers) > self._max_peers:
            del self._peers[next(iter(self._peers))]


# ---- the authorizer ----------------------------------------------------------------------------


class Authorizer:
    """Decides requests against the current :class:`AuthConfig` (replaced by :meth:`reload`)."""

    def __init__(
        self,
        config: AuthConfig,
        *,
        failures: FailureLog | None = None,
        max_skew_s: float = SIGV4_MAX_SKEW_S,
        region: str | None = None,
        cache_headers: int = _CACHE_HEADERS,
        cache_queues: int = _CACHE_QUEUES,
    ) -> None:
        self.config = config
        self.failures = failures or FailureLog()
        self.max_skew_s = max_skew_s
        self.region = region  # SigV4 scope region required; None accepts any
        self._cache_headers = cache_headers
        self._cache_queues = cache_queues
        #: The decision cache, for the faces' hot path: Authorization header value -> queue
        #: (None for server-wide rights) -> mask of RIGHT_BITS that header holds there.
        #: Two lookups whose keys hash once each (no tuple to build, hash and compare):
        #: callgrind, from compiled code, ~270 instructions against ~670 for a
        #: (header, right, queue) key and ~1630 for calling check_bearer. A miss (no entry, or
        #: the bit unset) means: call check_bearer, which decides, fills this and raises if
        #: refused. Only known tokens get in (unknown ones would let anyone churn it), and
        #: reload clears it in place, so a face may keep a reference to the dict.
        self.allowed: dict[bytes | str, dict[str | None, int]] = {}
        self._signing_keys: dict[tuple[str, str, str, str], bytes] = {}
        # hashlib and hmac (with OpenSSL's _hashlib, ~0.8 MB of resident memory) are imported
        # by a server with --auth-file only, here.
        import hashlib
        import hmac

        self._sha256 = hashlib.sha256
        self._compare_digest = hmac.compare_digest
        self._hmac_digest = hmac.digest

    @classmethod
    def from_file(cls, path: str, **kwargs: Any) -> Authorizer:
        """Load ``path`` (AuthConfigError, one line, if it is unusable)."""
        return cls(AuthConfig.load(path), **kwargs)

    def reload(self, path: str | None = None) -> bool:
        """Re-read the file (SIGHUP). A bad file keeps the current config and logs why."""
        path = path or self.config.path
        try:
            config = AuthConfig.load(path)
        except AuthConfigError as exc:
            log.error("access control: kept the previous configuration: %s", exc)
            return False
        self.config = config
        # Empty each per-queue dict, not only the outer one: the router keeps a reference
        # to the last one it used and trusts it while it is not empty (Router._authorize).
        for queues in self.allowed.values():
            queues.clear()
        self.allowed.clear()
        self._signing_keys = {}
        log.info("access control: reloaded %s (%s)", path, config.summary())
        return True

    # ---- bearer tokens ----------------------------------------------------------------------

    def authenticate(self, authorization: bytes | str | None) -> Principal:
        """The principal of an ``Authorization`` header value; Unauthorized if none or unknown."""
        if authorization is None:
            raise _missing_token()
        value = (
            authorization.encode("utf-8", "surrogatepass")
            if isinstance(authorization, str)
            else bytes(authorization)
        )
        value = value.strip(b" \t")
        if not value:
            raise _missing_token()
        scheme, _, token = value.partition(b" ")
        token = token.strip(b" \t")
        if scheme.lower() != b"bearer" or not token:
            raise _invalid_token("the Authorization header must be: Bearer <token>")
        digest = self._sha256(token).digest()
        entry = self.config.tokens.get(digest)
        # The dict found the digest; compare_digest makes the final match constant-time over
        # the digest whatever the dict's equality did (see the module docstring).
        if entry is None or not self._compare_digest(digest, entry[0]):
            raise _invalid_token("the token is not known to this server")
        return entry[1]

    def check_bearer(
        self,
        authorization: bytes | str | None,
        right: str,
        queue: str | None,
        peer: str | None = None,
    ) -> None:
        """Allow the request or raise Unauthorized (401) / Forbidden (403).

        ``right`` is one of :data:`RIGHTS`; ``queue`` the queue the request acts on (None for
        server-wide rights: ``metrics``); ``peer`` the client's IP address, for the failure log.
        """
        if authorization is not None:
            queues = self.allowed.get(authorization)
            if queues is not None:
                mask = queues.get(queue)
                if mask is not None and mask & RIGHT_BITS[right]:
                    return
        try:
            principal = self.authenticate(authorization)
        except Unauthorized as exc:
            self.failures.note(peer, exc.message)
            raise
        assert authorization is not None  # authenticate refuses None
        mask = principal.mask(queue)
        if len(authorization) <= _CACHE_MAX_HEADER:
            self._remember(authorization, queue, mask)
        if mask & RIGHT_BITS[right]:
            return
        if right != SEE and right not in principal.rights:
            decision = f"the token {principal.name!r} does not have the right {right!r}"
        elif right == SEE:
            decision = f"the token {principal.name!r} has no right on the queue {queue!r}"
        else:
            decision = f"the token {principal.name!r} may not {right} on the queue {queue!r}"
        self.failures.note(peer, decision)
        raise Forbidden("forbidden", decision)

    def _remember(self, authorization: bytes | str, queue: str | None, mask: int) -> None:
        allowed = self.allowed
        queues = allowed.get(authorization)
        if queues is None:
            if len(allowed) >= self._cache_headers:
                allowed.pop(next(iter(allowed))).clear()  # emptied as on reload
            queues = allowed[authorization] = {}
        elif len(queues) >= self._cache_queues:
            queues.clear()
        queues[queue] = mask

    def may_see(self, authorization: bytes | str | Principal | None, queue: str) -> bool:
        """Whether the caller may see ``queue`` in ``GET /v1/queues`` (any right on it). Pass
        the principal from :meth:`authenticate` when filtering a whole page."""
        if isinstance(authorization, Principal):
            return authorization.may_see(queue)
        try:
            principal = self.authenticate(authorization)
        except Unauthorized:
            return False
        return principal.may_see(queue)

    # ---- SigV4 (the SQS face) ----------------------------------------------------------------

    def verify_sigv4(
        self,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        body: bytes,
        now: float,
        *,
        tls: bool = False,
        peer: str | None = None,
    ) -> Principal:
        """Check an SQS request's AWS Signature Version 4; its principal, or SqsAuthError.

        ``path`` and ``query`` as they came on the wire (percent-encoded; query without '?'),
        ``headers`` with lower-case names (repeated ones joined by ','), ``now`` wall-clock
        seconds. Both forms are accepted: the ``Authorization`` header, and the presigned
        query string (``X-Amz-Signature=``). ``tls``: the request came over HTTPS, the only
        case where a header-signed ``x-amz-content-sha256: UNSIGNED-PAYLOAD`` is accepted
        (botocore sends it only over HTTPS; over plain HTTP it would leave the body open to
        change in transit). ``peer``: the client's IP address, for the failure log.
        """
        request = _SigV4Request(self, method, path, query, headers, body, now, tls)
        try:
            return request.verify()
        except SqsAuthError as exc:
            self.failures.note(peer, f"SigV4 {exc.code}: {exc.message}"[:300])
            raise

    def check_sqs(
        self,
        principal: Principal,
        right: str,
        queue: str | None,
        resource: str,
        peer: str | None = None,
    ) -> None:
        """Raise SQS's ``AccessDenied`` unless ``principal`` holds ``right`` on ``queue``
        (``resource``: the queue URL, named in the message as SQS does; ``right`` from
        :data:`SQS_ACTION_RIGHTS`)."""
        if not principal.allows(right, queue):
            self.failures.note(peer, f"access key {principal.name!r} may not {right} on {queue!r}")
            raise SqsAuthError("AccessDenied", f"Access to the resource {resource} is denied.")

    def signing_key(self, key_id: str, secret: str, date: str, region: str, service: str) -> bytes:
        """The SigV4 signing key (four HMACs), remembered per key, day, region and service."""
        cache_key = (key_id, date, region, service)
        key = self._signing_keys.get(cache_key)
        if key is None:
            key = self._hmac_digest(("AWS4" + secret).encode("utf-8"), date.encode(), "sha256")
            for part in (region, service, "aws4_request"):
                key = self._hmac_digest(key, part.encode("utf-8"), "sha256")
            if len(self._signing_keys) >= 256:
                self._signing_keys.clear()
            self._signing_keys[cache_key] = key
        return key


# ---- protected mode ----------------------------------------------------------------------------


def _is_loopback_ip(text: str) -> bool:
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def is_loopback_host(host: str) -> bool:
    """Whether ``--host`` listens on loopback only (``localhost``, 127.0.0.0/8, ``::1``)."""
    host = host.strip().strip("[]")
    return host.lower() in ("localhost", "localhost.") or _is_loopback_ip(host)


def protected_mode(host: str, auth_file: str | None, allow_anonymous: bool) -> bool:
    """Whether the server runs in protected mode: bound beyond loopback, with nobody named."""
    return auth_file is None and not allow_anonymous and not is_loopback_host(host)


def allowed_anonymous(host_bound: str, peer_ip: str, allow_anonymous: bool) -> bool:
    """Whether a client without credentials may be served when there is no ``--auth-file``:
    always on a loopback-bound server or with ``--allow-anonymous``, else only a loopback
    client (127.0.0.0/8, ::1, ::ffff:127.x)."""
    return allow_anonymous or is_loopback_host(host_bound) or _is_loopback_ip(peer_ip)


PROTECTED_MESSAGE = (
    "this server is in protected mode: it listens beyond loopback without --auth-file, so it "
    "answers only clients on its own machine. To serve others, start it with "
    "--auth-file FILE (tokens and rights, see docs/SECURITY.md), or with --allow-anonymous "
    "if anyone who can reach it may do anything"
)


class _Refuse(asyncio.Protocol):
    """Answers a connection refused by protected mode: reads the request head (bounded, timed),
    writes one 403 and closes."""

    def __init__(self, response: bytes, timeout_s: float) -> None:
        self._response = response
        self._timeout_s = timeout_s
        self._seen = b""
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._timeout_s, transport.close)

    def data_received(self, data: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        self._seen = (self._seen + data)[-16384:]
        if b"\r\n\r\n" in self._seen or b"\n\n" in self._seen or len(self._seen) >= 16384:
            self._transport.write(self._response)
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._transport = None


def _refusal_bytes() -> bytes:
    import json

    from .request import http_date

    body = json.dumps({"error": {"code": "protected_mode", "message": PROTECTED_MESSAGE}}).encode()
    head = (
        "HTTP/1.1 403 Forbidden\r\n"
        f"Date: {http_date()}\r\n"
        "Server: wonderq\r\nCache-Control: no-store\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class _Gate(asyncio.Protocol):
    """Stands in for the real protocol until the peer is known, then hands the transport to
    the real one (a loopback client) or to :class:`_Refuse` (anyone else). One check per
    connection; requests then cost nothing extra."""

    def __init__(
        self,
        factory: Callable[[], Any],
        allow: Callable[[str], bool],
        timeout_s: float,
        failures: FailureLog,
    ) -> None:
        self._factory = factory
        self._allow = allow
        self._timeout_s = timeout_s
        self._failures = failures

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        ip = str(peer[0]) if peer else ""
        if self._allow(ip):
            proto = self._factory()
        else:
            self._failures.note(ip, "protected mode (no --auth-file, not a loopback client)")
            proto = _Refuse(_refusal_bytes(), self._timeout_s)
        transport.set_protocol(proto)
        proto.connection_made(transport)


def protected_factory(
    factory: Callable[[], Any], host: str, allow_anonymous: bool, timeout_s: float = 10.0
) -> Callable[[], Any]:
    """Wrap a protocol factory so that, on a server bound to ``host``, connections that
    :func:`allowed_anonymous` refuses get 403 ``protected_mode``; ``factory`` itself when no
    connection could be refused."""
    if allow_anonymous or is_loopback_host(host):
        return factory

    def allow(ip: str) -> bool:
        return allowed_anonymous(host, ip, allow_anonymous)

    failures = FailureLog()  # one line per address per minute: a flood cannot flood the log
    return lambda: _Gate(factory, allow, timeout_s, failures)
