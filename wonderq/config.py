"""Server settings: one dataclass, filled from command-line flags and ``WONDERQ_<NAME>``.

Every setting has a flag (``--max-batch``) and an environment variable (``WONDERQ_MAX_BATCH``);
a flag given on the command line wins over the environment, which wins over the default.
Values arrive as strings from both sources and go through the same parser, so a bad value
gets the same one-line message whichever way it came (see :class:`ConfigError`).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .limits import FSYNC_MODES, MAX_VISIBILITY_MS

__all__ = ["FIELDS", "ConfigError", "Field", "Settings", "settings_from"]

ENV_PREFIX = "WONDERQ_"

# The engine's own ceiling (DESIGN.md "Parameters"), in the seconds the flag takes.
MAX_VISIBILITY_S = MAX_VISIBILITY_MS // 1000
# ids and cids are 63-bit; nothing we count in bytes or connections comes near that.
_MAX_INT = 2**63 - 1
_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
# A plain decimal, as the HTTP API reads times: no sign, exponent, nan or inf.
_DECIMAL = re.compile(r"[0-9]+(\.[0-9]+)?\Z")
_BACKEND = re.compile(r"rediss?(\+sentinel|\+cluster)?://[^/\s]+(/\S*)?\Z", re.IGNORECASE)


class ConfigError(ValueError):
    """A setting with a bad value; ``str()`` is one line naming the flag or variable."""


@dataclass(frozen=True)
class Settings:
    """Everything the server reads at start-up. Units are in the names."""

    host: str = "127.0.0.1"
    port: int = 8080  # 0 picks a free port; the bound one is logged
    visibility_timeout_s: float = 30.0  # default lease of the queues
    max_message_bytes: int = 1048576  # one message body, as Amazon SQS
    max_batch: int = 1000  # `limit`, batch publish and batch ack entries
    max_request_bytes: int = 16 * 1024 * 1024  # any request body
    max_memory: int = 0  # bytes the engine may hold; 0 = no limit
    log_level: str = "info"
    access_log: bool = False
    # HTTP tunables (not in the contract's flag list; defaults suit a public-facing server).
    idle_timeout_s: float = 60.0  # keep-alive connection with no request in progress
    header_timeout_s: float = 10.0  # from a request's first byte to the end of its headers
    max_connections: int = 10000  # open client connections; more are answered 503
    max_header_bytes: int = 16 * 1024  # all header lines of one request (431 over it)
    max_url_bytes: int = 8 * 1024  # the request target (414 over it)
    shutdown_timeout_s: float = 5.0  # grace for in-flight requests on SIGTERM/SIGINT
    # Durability (docs/DURABILITY.md): off unless data_dir is set.
    data_dir: str | None = None  # directory of the write-ahead log; None = memory only
    fsync: str = "everysec"  # always | everysec | never
    compact_min_bytes: int = 64 * 1024 * 1024  # compact once the log passes max(this, 2 x live)
    # Scale-out (docs/SCALEOUT.md): the queues in Redis/Valkey when backend is set.
    backend: str | None = None  # redis://, rediss://, redis+sentinel://, redis+cluster://
    redis_wait: int = 0  # replicas that must have a publish before it is answered (WAIT)
    redis_wait_timeout_s: float = 1.0  # how long WAIT may take before the publish gets 503
    redis_timeout_s: float = 2.0  # an answer from Redis, else 503 backend_unavailable
    redis_connect_timeout_s: float = 1.0  # a TCP (and TLS) connect to a Redis node
    redis_pool: int = 1  # connections per Redis node (requests of a turn share one write)
    # Access control and TLS (docs/SECURITY.md).
    auth_file: str | None = None  # TOML of tokens, AWS keys and rights; None = no access control
    allow_anonymous: bool = False  # without auth_file, serve non-loopback clients too
    tls_cert: str | None = None  # PEM certificate chain; with tls_key, serve HTTPS
    tls_key: str | None = None  # PEM private key of tls_cert
    # The Amazon SQS face (docs/SQS.md): how QueueUrl and QueueArn are written.
    sqs_base_url: str | None = None  # scheme://host[:port] of QueueUrls; None = the Host header
    sqs_account: str = "000000000000"  # the 12-digit account id in QueueUrls and ARNs
    sqs_region: str = "us-east-1"  # the region in QueueArns

    @property
    def visibility_timeout_ms(self) -> int:
        """The default lease in whole milliseconds, rounded up like the HTTP API rounds."""
        return seconds_to_ms(self.visibility_timeout_s)


def seconds_to_ms(seconds: float) -> int:
    """Seconds to whole milliseconds, rounding up (0.0001 s is 1 ms, never 0)."""
    ms = seconds * 1000
    whole = int(ms)
    return whole if whole >= ms else whole + 1


# ---- parsers: str -> value, raising ValueError with the reason -----------------------------


def _integer(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        text = text.strip()
        if not (text.isascii() and text.isdigit()) or len(text.lstrip("0")) > 19:
            raise ValueError(f"must be a whole number from {lo} to {hi}")
        value = int(text)
        if not lo <= value <= hi:
            raise ValueError(f"must be a whole number from {lo} to {hi}")
        return value

    return parse


def _seconds(lo: float, hi: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        text = text.strip()
        if not _DECIMAL.match(text) or not lo <= float(text) <= hi:
            raise ValueError(f"must be a number of seconds from {lo:g} to {hi:g}, like 30 or 0.5")
        return float(text)

    return parse


def _host(text: str) -> str:
    text = text.strip()
    if not text or any(c.isspace() for c in text):
        raise ValueError("must be a host name or an IP address, like 127.0.0.1")
    return text


def _base_url(text: str) -> str:
    text = text.strip().rstrip("/")
    scheme, sep, rest = text.partition("://")
    if (
        not sep
        or scheme not in ("http", "https")
        or not rest
        or any(c.isspace() for c in rest)
        or "?" in rest
        or "#" in rest
    ):
        raise ValueError("must be an http:// or https:// URL, like https://sqs.example.com:8080")
    return text


def _account(text: str) -> str:
    text = text.strip()
    if len(text) != 12 or not (text.isascii() and text.isdigit()):
        raise ValueError("must be a 12-digit AWS account id, like 000000000000")
    return text


def _region(text: str) -> str:
    text = text.strip()
    if not re.fullmatch(r"[a-z0-9-]{1,32}", text):
        raise ValueError("must be an AWS region name, like us-east-1")
    return text


def _log_level(text: str) -> str:
    level = text.strip().lower()
    if level not in _LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(_LOG_LEVELS)}")
    return level


def _directory(text: str) -> str:
    if not text.strip():
        raise ValueError("must be a directory path")
    return text


def _file(text: str) -> str:
    if not text.strip():
        raise ValueError("must be a file path")
    return text


def _fsync_mode(text: str) -> str:
    mode = text.strip().lower()
    if mode not in FSYNC_MODES:
        raise ValueError(f"must be one of {', '.join(FSYNC_MODES)}")
    return mode


def _backend_url(text: str) -> str:
    # The full parse is wonderq.redis.connection.parse_url, at start-up (it needs the
    # optional `redis` extra); here only what a typo gets wrong.
    text = text.strip()
    if not _BACKEND.match(text):
        raise ValueError(
            "must be a URL redis://host:port/db, rediss://..., "
            "redis+sentinel://host:port/master or redis+cluster://host:port"
        )
    return text


def _boolean(text: str) -> bool:
    word = text.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false (1/0, yes/no, on/off)")


@dataclass(frozen=True)
class Field:
    """How one setting is read: its flag, its parser, and the help text of ``--help``."""

    name: str  # attribute of Settings
    flag: str  # --kebab-case
    parse: Callable[[str], Any]
    help: str
    metavar: str | None = None
    switch: bool = False  # a flag without a value (``--access-log``)

    @property
    def env(self) -> str:
        """The environment variable that sets this field, e.g. ``WONDERQ_MAX_BATCH``."""
        return ENV_PREFIX + self.flag[2:].upper().replace("-", "_")


FIELDS: tuple[Field, ...] = (
    Field("host", "--host", _host, "address to listen on (default 127.0.0.1)", "HOST"),
    Field("port", "--port", _integer(0, 65535), "TCP port; 0 picks a free one (default 8080)", "N"),
    Field(
        "visibility_timeout_s",
        "--visibility-timeout",
        _seconds(0, MAX_VISIBILITY_S),
        "default lease of a received message, in seconds (default 30)",
        "SECONDS",
    ),
    Field(
        "max_message_bytes",
        "--max-message-bytes",
        _integer(1, 2**31 - 1),
        "largest message body in bytes (default 1048576, as Amazon SQS)",
        "BYTES",
    ),
    Field(
        "max_batch",
        "--max-batch",
        _integer(1, 1_000_000),
        "most messages per receive, batch publish or batch ack (default 1000)",
        "N",
    ),
    Field(
        "max_request_bytes",
        "--max-request-bytes",
        _integer(1, _MAX_INT),
        "largest request body in bytes; bigger ones get 413 (default 16777216 = 16 MiB)",
        "BYTES",
    ),
    Field(
        "max_memory",
        "--max-memory",
        _integer(0, _MAX_INT),
        "bytes of messages to hold before publishes get 507; 0 means no limit (default 0)",
        "BYTES",
    ),
    Field(
        "log_level",
        "--log-level",
        _log_level,
        f"one of {', '.join(_LOG_LEVELS)} (default info)",
        "LEVEL",
    ),
    Field(
        "access_log",
        "--access-log",
        _boolean,
        "log one line per request (off by default)",
        switch=True,
    ),
    Field(
        "idle_timeout_s",
        "--idle-timeout",
        _seconds(0.001, 86400),
        "close a keep-alive connection idle this many seconds (default 60)",
        "SECONDS",
    ),
    Field(
        "header_timeout_s",
        "--header-timeout",
        _seconds(0.001, 86400),
        "answer 408 and close if a request's headers take longer, in seconds (default 10)",
        "SECONDS",
    ),
    Field(
        "max_connections",
        "--max-connections",
        _integer(1, 10_000_000),
        "open client connections; more are answered 503 and closed (default 10000)",
        "N",
    ),
    Field(
        "max_header_bytes",
        "--max-header-bytes",
        _integer(256, 1 << 30),
        "all header lines of a request, in bytes; more get 431 (default 16384)",
        "BYTES",
    ),
    Field(
        "max_url_bytes",
        "--max-url-bytes",
        _integer(64, 1 << 30),
        "the request target, in bytes; longer gets 414 (default 8192)",
        "BYTES",
    ),
    Field(
        "shutdown_timeout_s",
        "--shutdown-timeout",
        _seconds(0, 3600),
        "on SIGTERM/SIGINT, wait this long for in-flight requests, in seconds (default 5)",
        "SECONDS",
    ),
    Field(
        "data_dir",
        "--data-dir",
        _directory,
        "keep the queues on disk in DIR too (a write-ahead log, replayed at start-up) so they "
        "survive restarts and crashes; created if missing (default: memory only)",
        "DIR",
    ),
    Field(
        "fsync",
        "--fsync",
        _fsync_mode,
        "with --data-dir: 'always' answers a publish or delete once it is on disk (one fsync "
        "per batch of requests), 'everysec' fsyncs once a second (a crash of the machine loses "
        "up to ~1 s), 'never' leaves it to the OS (default everysec)",
        "MODE",
    ),
    Field(
        "compact_min_bytes",
        "--compact-min-bytes",
        _integer(1, _MAX_INT),
        "with --data-dir: compact the log once it passes max(BYTES, 2 x the live data) "
        "(default 67108864 = 64 MiB)",
        "BYTES",
    ),
    Field(
        "backend",
        "--backend",
        _backend_url,
        "keep the queues in Redis/Valkey 7+ so any number of WonderQ servers share them: "
        "redis://host:port/db, rediss://... (TLS), redis+sentinel://host:port/master or "
        "redis+cluster://host:port (docs/SCALEOUT.md; default: in this process)",
        "URL",
    ),
    Field(
        "redis_wait",
        "--redis-wait",
        _integer(0, 100),
        "with --backend: answer a publish only once N replicas have it (Redis WAIT), so a "
        "failover loses no acknowledged message (default 0)",
        "N",
    ),
    Field(
        "redis_wait_timeout_s",
        "--redis-wait-timeout",
        _seconds(0.001, 60),
        "with --redis-wait: how long the replicas may take before the publish gets 503 (default 1)",
        "SECONDS",
    ),
    Field(
        "redis_timeout_s",
        "--redis-timeout",
        _seconds(0.01, 600),
        "with --backend: how long to wait for Redis before answering 503 (default 2)",
        "SECONDS",
    ),
    Field(
        "redis_connect_timeout_s",
        "--redis-connect-timeout",
        _seconds(0.01, 600),
        "with --backend: how long a connection to a Redis node may take (default 1)",
        "SECONDS",
    ),
    Field(
        "redis_pool",
        "--redis-pool",
        _integer(1, 64),
        "with --backend: connections per Redis node; each event-loop turn's requests share "
        "one write (default 1)",
        "N",
    ),
    Field(
        "auth_file",
        "--auth-file",
        _file,
        "turn access control on: bearer tokens and AWS keys with their queues and rights, in "
        "TOML (docs/SECURITY.md); re-read on SIGHUP (default: none)",
        "FILE",
    ),
    Field(
        "allow_anonymous",
        "--allow-anonymous",
        _boolean,
        "without --auth-file, serve clients beyond loopback too; by default a server bound to "
        "a non-loopback --host answers them 403 (protected mode)",
        switch=True,
    ),
    Field(
        "tls_cert",
        "--tls-cert",
        _file,
        "serve HTTPS (TLS 1.2+) on the same port with this PEM certificate chain; needs --tls-key",
        "FILE",
    ),
    Field(
        "tls_key",
        "--tls-key",
        _file,
        "the PEM private key of --tls-cert (not encrypted)",
        "FILE",
    ),
    Field(
        "sqs_base_url",
        "--sqs-base-url",
        _base_url,
        "the scheme://host[:port] the SQS face writes in QueueUrls (default: from each "
        "request's Host header, which works behind port mapping and proxies)",
        "URL",
    ),
    Field(
        "sqs_account",
        "--sqs-account",
        _account,
        "the 12-digit account id in the SQS face's QueueUrls and ARNs (default 000000000000)",
        "ID",
    ),
    Field(
        "sqs_region",
        "--sqs-region",
        _region,
        "the region in the SQS face's QueueArns (default us-east-1)",
        "REGION",
    ),
)


def settings_from(flags: Mapping[str, str | None], environ: Mapping[str, str]) -> Settings:
    """Build Settings from raw flag values (by field name; None = not given) and the environment.

    Raises ConfigError naming the flag or variable whose value is bad.
    """
    values: dict[str, Any] = {}
    for field in FIELDS:
        raw = flags.get(field.name)
        source = field.flag
        if raw is None:
            raw = environ.get(field.env)
            source = field.env
        if raw is None:
            continue
        try:
            values[field.name] = field.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc} (got {raw!r})") from None
    settings = Settings(**values)
    if (settings.tls_cert is None) != (settings.tls_key is None):
        given, missing = (
            ("--tls-cert", "--tls-key")
            if settings.tls_cert is not None
            else ("--tls-key", "--tls-cert")
        )
        raise ConfigError(f"{given} needs {missing} too (the certificate and its private key)")
    logging.getLogger("wonderq").debug("settings: %s", dataclasses.asdict(settings))
    return settings
