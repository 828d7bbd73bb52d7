"""AWS Signature Version 4 verification, for the SQS face.

:meth:`wonderq.auth.Authorizer.verify_sigv4` hands each request to a :class:`_SigV4Request`,
which parses either form (the ``Authorization`` header or the presigned query string), rebuilds
the canonical request as botocore does and compares the signature with
:func:`hmac.compare_digest`. The key (with its principal) and the signing-key cache stay with the
authorizer, so a reload of ``--auth-file`` is seen here at once. Refusals are
:class:`SqsAuthError`, carrying the code, message and status Amazon SQS would answer; no secret
or signature is put in one.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote_to_bytes

if TYPE_CHECKING:
    from .auth import Authorizer, Principal

__all__ = ["SqsAuthError"]


class SqsAuthError(Exception):
    """A SigV4 request refused, with the code, message and status Amazon SQS would answer
    (``InvalidClientTokenId``, ``SignatureDoesNotMatch``, ...); the SQS face renders it in
    its protocol's error shape (``__type`` in JSON, ``ErrorResponse`` in XML)."""

    def __init__(self, code: str, message: str, status: int = 403) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


# ---- SigV4 verification ------------------------------------------------------------------------

_ALGORITHM = "AWS4-HMAC-SHA256"
_UNSIGNED = "UNSIGNED-PAYLOAD"
_AMZ_DATE = re.compile(r"(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z\Z")
_SIGNATURE = re.compile(r"[0-9a-f]{64}\Z")
_HEADER_NAME = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+\Z")
_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check "
    "your AWS Secret Access Key and signing method. Consult the service documentation for "
    "details."
)
_PRESIGN_PARAMS = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Signature",
    "X-Amz-Date",
    "X-Amz-SignedHeaders",
    "X-Amz-Expires",
)
_MAX_PRESIGN_EXPIRES_S = 604800


def _incomplete(message: str) -> SqsAuthError:
    return SqsAuthError("IncompleteSignature", message, 400)


def _mismatch(message: str = _MISMATCH) -> SqsAuthError:
    return SqsAuthError("SignatureDoesNotMatch", message, 403)


def _amz_time(seconds: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(seconds))


def _uri_encode(raw: str) -> str:
    """RFC 3986 encoding of a query part as SigV4 canonicalises it: decode what was sent,
    then encode everything but the unreserved characters."""
    return quote(unquote_to_bytes(raw), safe="-_.~")


def _canonical_path(path: str) -> str:
    """The path as botocore canonicalises it for every service but S3: dot segments and empty
    segments removed, then percent-encoded once more (the wire form is already encoded)."""
    segments: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if segments:
                segments.pop()
        else:
            segments.append(part)
    normal = "/" + "/".join(segments)
    if path.endswith("/") and segments:
        normal += "/"
    return quote(normal, safe="/~")


class _SigV4Request:
    """One request being verified (a class so the steps can share the parsed parts)."""

    def __init__(
        self,
        authorizer: Authorizer,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        body: bytes,
        now: float,
        tls: bool,
    ) -> None:
        self.authorizer = authorizer
        self.method = method.upper()
        self.path = path or "/"
        self.query = query
        self.headers = headers
        self.body = body
        self.now = now
        self.tls = tls
        self.pairs = [p.partition("=") for p in query.split("&") if p] if query else []

    def param(self, name: str) -> str | None:
        found = None
        for key, _, value in self.pairs:
            if key == name:
                if found is not None:
                    raise _incomplete(f"The query parameter {name} is repeated.")
                found = unquote_to_bytes(value).decode("utf-8", "replace")
        return found

    def verify(self) -> Principal:
        authorization = self.headers.get("authorization")
        presigned = any(key == "X-Amz-Algorithm" for key, _, _ in self.pairs)
        if authorization is not None and presigned:
            raise _incomplete(
                "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter or "
                "the Authorization header should be specified."
            )
        if presigned:
            return self.verify_presigned()
        if authorization is None or not authorization.strip():
            raise SqsAuthError(
                "MissingAuthenticationToken",
                "The request must contain either a valid (registered) AWS access key ID or "
                "X.509 certificate.",
            )
        return self.verify_header(authorization)

    # -- the two forms --

    def verify_header(self, authorization: str) -> Principal:
        import hashlib  # here, not at start-up (auth.Authorizer)

        algorithm, _, rest = authorization.strip().partition(" ")
        if algorithm != _ALGORITHM:
            raise _incomplete(
                f"Unsupported AWS 'algorithm': only {_ALGORITHM} (Signature Version 4) is accepted."
            )
        fields: dict[str, str] = {}
        for part in rest.split(","):
            name, eq, value = part.strip().partition("=")
            if not eq or name in fields:
                raise _incomplete(
                    f"Authorization header requires each component as Name=value, once. "
                    f"Authorization={algorithm} {_redact(rest)}"
                )
            fields[name] = value.strip()
        missing = [n for n in ("Credential", "SignedHeaders", "Signature") if n not in fields]
        if missing:
            raise _incomplete(
                " ".join(f"Authorization header requires '{n}' parameter." for n in missing)
                + f" Authorization={algorithm} {_redact(rest)}"
            )
        amz_date = self.headers.get("x-amz-date")
        if amz_date is None:
            date = self.headers.get("date")
            if date is None:
                raise _incomplete(
                    "Authorization header requires existence of either a 'X-Amz-Date' or a "
                    "'Date' header."
                )
            # Imported here: a server without --auth-file never loads the email package.
            from email.utils import mktime_tz, parsedate_tz

            parsed = parsedate_tz(date)
            if parsed is None:
                raise _incomplete("The Date header is not an HTTP date.")
            amz_date = _amz_time(mktime_tz(parsed))
        content_sha = self.headers.get("x-amz-content-sha256")
        actual = hashlib.sha256(self.body).hexdigest()
        if content_sha is None:
            payload = actual
        elif content_sha == _UNSIGNED:
            if not self.tls:
                raise _incomplete(
                    "x-amz-content-sha256: UNSIGNED-PAYLOAD is accepted only over HTTPS."
                )
            payload = _UNSIGNED
        elif content_sha.lower() != actual:
            raise _mismatch(
                "The provided 'x-amz-content-sha256' header does not match what was computed."
            )
        else:
            payload = content_sha
        return self.check(
            fields["Credential"],
            fields["SignedHeaders"],
            fields["Signature"],
            amz_date,
            None,
            [payload],
            self.canonical_query(skip=None),
        )

    def verify_presigned(self) -> Principal:
        import hashlib  # here, not at start-up (auth.Authorizer)

        values = {name: self.param(name) for name in _PRESIGN_PARAMS}
        if any(v is None for v in values.values()):
            raise _incomplete(
                "AWS query-string parameters must include 'X-Amz-Algorithm', "
                "'X-Amz-Credential', 'X-Amz-Signature', 'X-Amz-Date', 'X-Amz-SignedHeaders', "
                "'X-Amz-Expires'. Re-examine the query-string parameters."
            )
        if values["X-Amz-Algorithm"] != _ALGORITHM:
            raise _incomplete(f'X-Amz-Algorithm only supports "{_ALGORITHM}"')
        expires = values["X-Amz-Expires"] or ""
        if not (expires.isascii() and expires.isdigit()) or not (
            1 <= int(expires) <= _MAX_PRESIGN_EXPIRES_S
        ):
            raise _incomplete(
                f"X-Amz-Expires must be a whole number of seconds from 1 to "
                f"{_MAX_PRESIGN_EXPIRES_S}."
            )
        # botocore signs the body's hash (the parameters moved to the query leave it empty);
        # presigners built on S3's rules sign UNSIGNED-PAYLOAD. Either covers the query.
        payloads = [hashlib.sha256(self.body).hexdigest(), _UNSIGNED]
        return self.check(
            values["X-Amz-Credential"] or "",
            values["X-Amz-SignedHeaders"] or "",
            values["X-Amz-Signature"] or "",
            values["X-Amz-Date"] or "",
            int(expires),
            payloads,
            self.canonical_query(skip="X-Amz-Signature"),
        )

    # -- shared steps --

    def canonical_query(self, skip: str | None) -> str:
        encoded = sorted(
            (_uri_encode(key), _uri_encode(value)) for key, _, value in self.pairs if key != skip
        )
        return "&".join(f"{k}={v}" for k, v in encoded)

    def check(
        self,
        credential: str,
        signed_headers: str,
        signature: str,
        amz_date: str,
        expires_s: int | None,
        payloads: list[str],
        canonical_query: str,
    ) -> Principal:
        import hashlib  # here, not at start-up (auth.Authorizer)
        import hmac

        scope = credential.split("/")
        if len(scope) != 5 or not all(scope):
            raise _incomplete(
                "Credential must have the form ACCESS_KEY_ID/YYYYMMDD/REGION/SERVICE/aws4_request."
            )
        key_id, date, region, service, terminator = scope
        if terminator != "aws4_request":
            raise _mismatch(
                f"Credential should be scoped with a valid terminator: 'aws4_request', "
                f"not '{terminator}'."
            )
        m = _AMZ_DATE.match(amz_date)
        if m is None:
            raise _incomplete(
                "X-Amz-Date must be in the ISO-8601 basic format YYYYMMDD'T'HHMMSS'Z'."
            )
        from datetime import datetime, timezone  # only with --auth-file (start-up memory)

        try:
            year, month, day, hour, minute, second = (int(g) for g in m.groups())
            signed_at = int(
                datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc).timestamp()
            )
        except ValueError:
            raise _incomplete("X-Amz-Date is not a valid date.") from None
        names = signed_headers.split(";")
        if not all(_HEADER_NAME.match(n) for n in names):
            raise _incomplete("SignedHeaders must be lower-case header names separated by ';'.")
        if "host" not in names:
            raise _incomplete("'Host' must be a 'SignedHeader' in the AWS Authorization.")
        key = self.authorizer.config.aws.get(key_id)
        if key is None:
            raise SqsAuthError(
                "InvalidClientTokenId", "The security token included in the request is invalid."
            )
        if date != amz_date[:8]:
            raise _mismatch(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date "
                f"from HTTP: '{date}' != '{amz_date[:8]}', from '{amz_date}'."
            )
        if service != "sqs":
            raise _mismatch("Credential should be scoped to correct service: 'sqs'.")
        if self.authorizer.region is not None and region != self.authorizer.region:
            raise _mismatch(f"Credential should be scoped to a valid region, not '{region}'.")
        self.check_time(signed_at, expires_s)
        lines = []
        for name in names:
            value = self.headers.get(name)
            if value is None:
                raise _mismatch(f"The header '{name}' is signed but was not sent.")
            lines.append(f"{name}:{' '.join(value.split())}\n")
        if not _SIGNATURE.match(signature):
            raise _mismatch()
        signing_key = self.authorizer.signing_key(key_id, key.secret, date, region, service)
        head = "\n".join(
            (
                self.method,
                _canonical_path(self.path),
                canonical_query,
                "".join(lines),
                signed_headers,
            )
        )
        scope_text = f"{date}/{region}/{service}/aws4_request"
        given = signature.encode("ascii")
        for payload in payloads:
            canonical = f"{head}\n{payload}"
            to_sign = "\n".join(
                (
                    _ALGORITHM,
                    amz_date,
                    scope_text,
                    hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest(),
                )
            )
            expected = hmac.new(signing_key, to_sign.encode("utf-8"), "sha256").hexdigest()
            if hmac.compare_digest(expected.encode("ascii"), given):
                return key.principal
        raise _mismatch()

    def check_time(self, signed_at: int, expires_s: int | None) -> None:
        """SQS's rule: a signature is good from ``max_skew_s`` before its date to
        ``max_skew_s`` after it (or its X-Amz-Expires, if shorter), whatever the form."""
        skew = self.authorizer.max_skew_s
        now = self.now
        minutes = f"{skew / 60:g} min."
        if now > signed_at + skew:
            raise _mismatch(
                f"Signature expired: {_amz_time(signed_at)} is now earlier than "
                f"{_amz_time(now - skew)} ({_amz_time(now)} - {minutes})"
            )
        if now < signed_at - skew:
            raise _mismatch(
                f"Signature not yet current: {_amz_time(signed_at)} is still later than "
                f"{_amz_time(now + skew)} ({_amz_time(now)} + {minutes})"
            )
        if expires_s is not None and now > signed_at + expires_s:
            raise SqsAuthError(
                "RequestExpired",
                f"Request has expired: signed at {_amz_time(signed_at)} for {expires_s} s, "
                f"now {_amz_time(now)}.",
                400,
            )


def _redact(text: str) -> str:
    """An Authorization header for an error message, its signature cut out."""
    return re.sub(r"Signature=[^,\s]*", "Signature=…", text)[:300]
