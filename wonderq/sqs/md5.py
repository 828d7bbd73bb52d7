"""The MD5 digests SQS returns and the SDKs verify (Java, .NET, PHP, Ruby throw on a
mismatch).

``MD5OfMessageBody`` is the hex MD5 of the body's UTF-8 bytes. ``MD5OfMessageAttributes``
is the hex MD5 of the attributes sorted by name, each written as: 4-byte big-endian length +
UTF-8 name, the same for the DataType, one transport byte (1 for String and Number and their
``.custom`` types, 2 for Binary) and the length-prefixed value (UTF-8 for strings, raw
bytes for Binary). It is omitted when there are no attributes.

The attribute blob a message carries in the engine is exactly that encoding (see
:mod:`wonderq.sqs.attributes`), so the digest of all of a message's attributes is the MD5 of
its blob and a subset is the MD5 of its segments.
"""

from __future__ import annotations

from hashlib import md5

from ._digest import md5_hex

__all__ = ["md5_hex", "md5_of_segments"]

# md5_hex(data) -> str: hex MD5 of ``data`` (a body's UTF-8 bytes, or a whole attribute blob),
# in C (wonderq/sqs/digest.h): less than half the instructions of hashlib's for a short body.


def md5_of_segments(segments: list[bytes]) -> str:
    """Hex MD5 of attribute segments already in name order."""
    digest = md5(usedforsecurity=False)
    for segment in segments:
        digest.update(segment)
    return digest.hexdigest()
