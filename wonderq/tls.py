"""TLS: the server's ``ssl.SSLContext`` from ``--tls-cert`` and ``--tls-key``, and what
uvloop's TLS transport hands decrypted bytes to.

HTTPS is served on the same port by the standard library's ``ssl`` over uvloop's transports
(``loop.create_server(..., ssl=context)``). The context is built once, before the port is
bound, so a missing, unreadable, malformed, encrypted or mismatched certificate or key is a
one-line start-up error instead of a failure at the first handshake.

Compiled in Cython's pure-Python mode (types in tls.pxd), for :class:`TlsReads`, which runs
on every read of an HTTPS connection.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any

from .protocol import HttpProtocol

__all__ = ["TlsError", "TlsReads", "server_context", "tls_reads"]

# What TlsReads offers uvloop to decrypt into: one buffer for every connection of a server
# (uvloop reads into it and hands it over in the same call, and never from inside a
# protocol's callback). 256 KiB: the most uvloop reads from a socket at once.
_BUFFER_BYTES = 256 * 1024


class TlsReads:
    """The protocol uvloop's TLS transport talks to: an HttpProtocol, with decrypted bytes
    read into one reused buffer.

    Given a plain protocol (``data_received``), uvloop's TLS layer decrypts each read into a
    new 256 KiB bytes object, then shrinks it: in a glibc process that has not yet freed a
    block that large, every such allocation is an mmap, a page fault or more, an mremap and
    a munmap, a third of the server's CPU under HTTPS load (perf). Given ``get_buffer``, it
    decrypts into the buffer offered instead. The bytes are then parsed in place: HttpProtocol
    keeps nothing of ``data`` past ``data_received`` (httptools copies what it hands on).
    """

    def __init__(self, http: HttpProtocol, buffer: memoryview) -> None:
        self._http = http
        self._buffer = buffer  # shared: see tls_reads()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._http.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._http.connection_lost(exc)

    def eof_received(self) -> bool:
        return self._http.eof_received()

    def pause_writing(self) -> None:
        self._http.pause_writing()

    def resume_writing(self) -> None:
        self._http.resume_writing()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        self._http.data_received(self._buffer[:nbytes])


class TlsError(Exception):
    """The certificate or key cannot be used; ``str()`` is one line naming the file."""


class _SSLObject(ssl.SSLObject):
    """An ``ssl.SSLObject`` whose ``read``, ``write`` and ``pending`` are those of the C
    object beneath it (the same arguments, except that read's size is not optional).

    uvloop calls them for every record, and SSLObject's own are Python functions that only
    pass the call on: a Python frame each time, about 2,200 CPU instructions per HTTPS
    request (callgrind). ``SSLContext.wrap_bio`` builds its objects with
    ``sslobject_class._create``; should a later Python build them otherwise, or the C
    object not be ``_sslobj``, they are plain SSLObjects.
    """

    @classmethod
    def _create(cls, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        self = super()._create(*args, **kwargs)  # type: ignore[misc]
        sslobj = getattr(self, "_sslobj", None)
        if sslobj is not None:
            self.read = sslobj.read
            self.write = sslobj.write
            self.pending = sslobj.pending
        return self


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
    context.sslobject_class = _SSLObject
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


def tls_reads(factory: Callable[[], HttpProtocol]) -> Callable[[], TlsReads]:
    """The protocol factory for ``loop.create_server(..., ssl=...)`` from HttpProtocol's: its
    connections share one read buffer (allocated here, so a server without TLS has none)."""
    buffer = memoryview(bytearray(_BUFFER_BYTES))
    return lambda: TlsReads(factory(), buffer)
