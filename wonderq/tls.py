"""TLS: the server's ``ssl.SSLContext`` from ``--tls-cert`` and ``--tls-key``.

HTTPS is served on the same port by the standard library's ``ssl`` over uvloop's transports
(``loop.create_server(..., ssl=context)``). The context is built once, before the port is
bound, so a missing, unreadable, malformed, encrypted or mismatched certificate or key is a
one-line start-up error instead of a failure at the first handshake.
"""

from __future__ import annotations

import ssl

__all__ = ["TlsError", "server_context"]


class TlsError(Exception):
    """The certificate or key cannot be used; ``str()`` is one line naming the file."""


def _read(flag: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise TlsError(f"{flag} {path}: cannot read it: {exc.strerror or exc}") from None


def _certificate_parses(pem: bytes) -> bool:
    try:
        ssl.create_default_context(cadata=pem.decode("ascii", "replace"))
    except (ssl.SSLError, ValueError):
        return False
    return True


def server_context(cert_path: str, key_path: str) -> ssl.SSLContext:
    """A server context with TLS 1.2 as the floor and the library's default ciphers (which
    exclude the broken ones); raises TlsError with a one-line reason."""
    cert = _read("--tls-cert", cert_path)
    key = _read("--tls-key", key_path)
    # ssl's own messages ("[SSL] PEM lib (_ssl.c:3900)") do not say which file is wrong, so
    # look first at what each file holds.
    if b"-----BEGIN CERTIFICATE-----" not in cert:
        raise TlsError(f"--tls-cert {cert_path}: no PEM certificate in it")
    if b"PRIVATE KEY-----" not in key:
        raise TlsError(f"--tls-key {key_path}: no PEM private key in it")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # No session tickets to resume: a ticket key that lives as long as the process would
    # undo forward secrecy for every session it covers.
    context.options |= ssl.OP_NO_TICKET
    asked_password = False

    def no_password() -> bytes:
        # Never prompt on a terminal; say what is wrong instead.
        nonlocal asked_password
        asked_password = True
        raise ValueError("encrypted key")

    try:
        context.load_cert_chain(cert_path, key_path, password=no_password)
    except (ssl.SSLError, ValueError) as exc:
        if asked_password:
            raise TlsError(
                f"--tls-key {key_path}: the key is encrypted; a passphrase is not supported "
                "(decrypt it with: openssl pkey -in KEY -out KEY.plain)"
            ) from None
        reason = getattr(exc, "reason", None) or str(exc)
        if reason == "KEY_VALUES_MISMATCH":
            raise TlsError(
                f"--tls-key {key_path} is not the private key of the certificate in "
                f"--tls-cert {cert_path}"
            ) from None
        if "PEM lib" in str(exc):  # one of the two does not parse: say which
            if not _certificate_parses(cert):
                raise TlsError(
                    f"--tls-cert {cert_path}: the certificate is not valid PEM / X.509"
                ) from None
            raise TlsError(f"--tls-key {key_path}: the private key is not valid PEM") from None
        raise TlsError(
            f"cannot use --tls-cert {cert_path} with --tls-key {key_path}: "
            f"{' '.join(str(reason).split())}"
        ) from None
    except OSError as exc:
        raise TlsError(
            f"cannot use --tls-cert {cert_path} with --tls-key {key_path}: {exc.strerror or exc}"
        ) from None
    return context
