"""Receipt handles: WonderQ's lease tokens written for SQS.

A lease is named by ``(queue, id, receives)``: the receive count that receive gave the
message (DESIGN.md, "Lease token"). The handle is that triple and a tag, a keyed BLAKE2b of
it under the store's secret key, in URL-safe base64 without padding:

    version (1) | id (8, big-endian) | receives (4) | queue name (UTF-8) | tag (10)

A handle whose tag does not verify was forged, mangled or issued by another store (or by
this one before a restart: the key is per store): ``ReceiptHandleIsInvalid``. A genuine
handle of an earlier receive is *stale*: DeleteMessage and ChangeMessageVisibility with it
succeed and change nothing, as SQS documents, because the engine acts on a token only
while it names the current lease.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from hashlib import blake2b

__all__ = ["ReceiptHandles"]

_VERSION = 1
_TAG_BYTES = 10
_HEAD = 1 + 8 + 4
_MIN = _HEAD + 1 + _TAG_BYTES
_ALPHABET = re.compile(r"[A-Za-z0-9_-]{20,1024}")  # URL-safe base64, no padding


class ReceiptHandles:
    """Encodes and verifies handles under one key (16 to 64 bytes)."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if not 16 <= len(key) <= 64:
            raise ValueError("the handle key must be 16 to 64 bytes")
        self._key = key

    def _tag(self, data: bytes) -> bytes:
        return blake2b(data, digest_size=_TAG_BYTES, key=self._key).digest()

    def encode(self, queue: str, msg_id: int, receives: int) -> str:
        """The handle of the lease ``(queue, msg_id, receives)``."""
        data = b"".join(
            (
                bytes((_VERSION,)),
                msg_id.to_bytes(8, "big"),
                receives.to_bytes(4, "big"),
                queue.encode(),
            )
        )
        return base64.urlsafe_b64encode(data + self._tag(data)).rstrip(b"=").decode("ascii")

    def decode(self, handle: object) -> tuple[str, int, int] | None:
        """``(queue, id, receives)`` of a handle this key issued, else None."""
        if not isinstance(handle, str) or _ALPHABET.fullmatch(handle) is None:
            return None
        try:
            raw = base64.urlsafe_b64decode(handle + "=" * (-len(handle) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(raw) < _MIN or raw[0] != _VERSION:
            return None
        data, tag = raw[:-_TAG_BYTES], raw[-_TAG_BYTES:]
        if not hmac.compare_digest(tag, self._tag(data)):
            return None
        try:
            queue = data[_HEAD:].decode()
        except UnicodeDecodeError:
            return None
        return queue, int.from_bytes(data[1:9], "big"), int.from_bytes(data[9:13], "big")
