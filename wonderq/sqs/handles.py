"""Receipt handles: WonderQ's lease tokens written for SQS.

A lease is named by ``(queue, id, receives)``: the receive count that receive gave the
message (DESIGN.md, "Lease token"). The handle is that triple and a tag, a SipHash-2-4 of it
under a 128-bit key drawn from the store's secret, in URL-safe base64 without padding:

    version (1, = 2) | id (8, big-endian) | receives (4) | queue name (UTF-8) | tag (8)

A handle whose tag does not verify was forged, mangled or issued by another store (or by
this one before a restart: the key is per store): ``ReceiptHandleIsInvalid``. A genuine
handle of an earlier receive is *stale*: DeleteMessage and ChangeMessageVisibility with it
succeed and change nothing, as SQS documents, because the engine acts on a token only
while it names the current lease.

The encoding and the check are C (``digest.h``, shared with the face's fast path,
:mod:`wonderq.sqs._fast`). Handles of version 1 (a 10-byte keyed BLAKE2b tag), which servers
before this one issued, still verify: on the Redis store the key is the deployment's, so a
rolling upgrade keeps the handles already handed out.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from hashlib import blake2b

from ._digest import decode_handle, encode_handle

__all__ = ["ReceiptHandles", "siphash_key"]

_V1 = 1
_V1_TAG_BYTES = 10
_V1_HEAD = 1 + 8 + 4
_V1_MIN = _V1_HEAD + 1 + _V1_TAG_BYTES
_ALPHABET = re.compile(r"[A-Za-z0-9_-]{20,1024}")  # URL-safe base64, no padding


def siphash_key(key: bytes) -> tuple[int, int]:
    """The SipHash key ``(k0, k1)`` the handles of ``key`` are tagged with."""
    digest = blake2b(key, digest_size=16, person=b"wonderq-handle").digest()
    return int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:], "little")


class ReceiptHandles:
    """Encodes and verifies handles under one key (16 to 64 bytes)."""

    __slots__ = ("_key", "k0", "k1")

    def __init__(self, key: bytes) -> None:
        if not 16 <= len(key) <= 64:
            raise ValueError("the handle key must be 16 to 64 bytes")
        self._key = key
        self.k0, self.k1 = siphash_key(key)

    def encode(self, queue: str, msg_id: int, receives: int) -> str:
        """The handle of the lease ``(queue, msg_id, receives)``."""
        return encode_handle(self.k0, self.k1, queue.encode(), msg_id, receives)

    def decode(self, handle: object) -> tuple[str, int, int] | None:
        """``(queue, id, receives)`` of a handle this key issued, else None."""
        if not isinstance(handle, str) or not handle.isascii():
            return None
        decoded = decode_handle(self.k0, self.k1, handle.encode("ascii"))
        if decoded is None:
            return self._decode_v1(handle)
        queue, msg_id, receives = decoded
        try:
            return queue.decode(), msg_id, receives
        except UnicodeDecodeError:
            return None

    def _decode_v1(self, handle: str) -> tuple[str, int, int] | None:
        if _ALPHABET.fullmatch(handle) is None:
            return None
        try:
            raw = base64.urlsafe_b64decode(handle + "=" * (-len(handle) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(raw) < _V1_MIN or raw[0] != _V1:
            return None
        data, tag = raw[:-_V1_TAG_BYTES], raw[-_V1_TAG_BYTES:]
        expected = blake2b(data, digest_size=_V1_TAG_BYTES, key=self._key).digest()
        if not hmac.compare_digest(tag, expected):
            return None
        try:
            queue = data[_V1_HEAD:].decode()
        except UnicodeDecodeError:
            return None
        return queue, int.from_bytes(data[1:9], "big"), int.from_bytes(data[9:13], "big")
