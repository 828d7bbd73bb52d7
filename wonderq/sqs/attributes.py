"""Message attributes (validated, stored as one opaque blob per message) and queue
attributes (SQS's names and strings <-> the engine's attributes and the queue's ``meta``).

**The blob.** A message's attributes live in the engine as one ``bytes`` (no Python object
per message): the attributes sorted by name, each in the encoding
``MD5OfMessageAttributes`` hashes (:mod:`wonderq.sqs.md5`): 4-byte big-endian length + name,
length + DataType, a transport byte (1 string, 2 binary), length + value. So the digest of
all of them is the MD5 of the blob, and any subset is read back without a second format.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from typing import Any

from .errors import SqsError, error, invalid

__all__ = [
    "MAX_ATTRIBUTES",
    "blob_segments",
    "encode_blob",
    "message_attributes_out",
    "parse_message_attributes",
    "selector",
]

MAX_ATTRIBUTES = 10  # per message, as SQS
MAX_NAME_CHARS = 256
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,256}")
_STRING, _BINARY = 1, 2
# The characters SQS accepts in a body and a string attribute value (XML 1.0's Char):
# #x9 #xA #xD #x20-#xD7FF #xE000-#xFFFD #x10000-#x10FFFF.
_BAD_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


# The ASCII characters SQS refuses: the controls but tab, line feed and carriage return.
_ASCII_CONTROLS = bytes(c for c in range(32) if c not in (9, 10, 13))


def bad_character(text: str) -> bool:
    """True if ``text`` holds a character SQS refuses (``InvalidMessageContents``).
    ASCII text (the usual body) is checked by one C pass of ``bytes.translate`` instead of
    the pattern (callgrind: ~10k instructions for 200 characters by the pattern)."""
    if text.isascii():
        data = text.encode("ascii")
        return len(data.translate(None, _ASCII_CONTROLS)) != len(data)
    return _BAD_CHAR.search(text) is not None


def _b64(value: Any, what: str) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if not isinstance(value, str):
        raise error("InvalidParameterValue", f"{what} must be base64-encoded binary data.")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise error("InvalidParameterValue", f"{what} is not valid base64.") from None


def _segment(name: bytes, data_type: bytes, transport: int, value: bytes) -> bytes:
    return b"".join(
        (
            len(name).to_bytes(4, "big"),
            name,
            len(data_type).to_bytes(4, "big"),
            data_type,
            bytes((transport,)),
            len(value).to_bytes(4, "big"),
            value,
        )
    )


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise error(
            "InvalidParameterValue",
            f"Message (user) attribute name '{name}' is invalid: it must be 1 to 256 "
            "characters of A-Z a-z 0-9 _ - .",
        )
    lower = name.lower()
    if lower.startswith(("aws.", "amazon.")):
        raise error(
            "InvalidParameterValue",
            f"You can't use message attribute names beginning with 'AWS.' or 'Amazon.'. "
            f"These strings are reserved for internal use. Attribute name(s): {name}",
        )
    if name[0] == "." or name[-1] == "." or ".." in name:
        raise error(
            "InvalidParameterValue",
            f"Message (user) attribute name '{name}' must not start or end with a period or "
            "hold two periods in a row.",
        )
    return name


def _check_number(name: str, text: str) -> None:
    try:
        number = Decimal(text.strip())
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite():
        raise error(
            "InvalidParameterValue",
            f"Can't cast the value of message (user) attribute '{name}' to a number.",
        )
    digits = len(number.as_tuple().digits)
    if number and (digits > 38 or not Decimal("1E-128") <= abs(number) <= Decimal("1E+126")):
        raise error(
            "InvalidParameterValue",
            f"Value of message (user) attribute '{name}' is out of range: a Number has at "
            "most 38 digits, between 10^-128 and 10^+126.",
        )


def parse_message_attributes(attributes: Any) -> tuple[bytes | None, int]:
    """``{name: {DataType, StringValue | BinaryValue}}`` (the JSON shape; BinaryValue as
    base64 text or bytes) validated as SQS does: the blob (None if there are none) and the
    bytes they count towards the message size (names, types, values)."""
    if attributes is None:
        return None, 0
    if not isinstance(attributes, dict):
        raise error("InvalidParameterValue", "MessageAttributes must be a map.")
    if not attributes:
        return None, 0
    if len(attributes) > MAX_ATTRIBUTES:
        raise error(
            "InvalidParameterValue",
            f"Number of message attributes [{len(attributes)}] exceeds the allowed maximum "
            f"[{MAX_ATTRIBUTES}].",
        )
    segments = []
    size = 0
    for name in sorted(attributes):
        _check_name(name)
        value = attributes[name]
        if not isinstance(value, dict):
            raise error("InvalidParameterValue", f"Message (user) attribute '{name}' is invalid.")
        data_type = value.get("DataType")
        if not isinstance(data_type, str) or not data_type:
            raise error(
                "InvalidParameterValue",
                f"The message attribute '{name}' must contain a non-empty message attribute type.",
            )
        base = data_type.partition(".")[0]  # "Number.int": a custom type of Number
        if base not in ("String", "Number", "Binary") or len(data_type) > MAX_NAME_CHARS:
            raise error(
                "InvalidParameterValue",
                f"The type of message (user) attribute '{name}' is invalid. You must use only "
                "the following supported type prefixes: Binary, Number, String.",
            )
        if value.get("StringListValues") or value.get("BinaryListValues"):
            raise error(
                "InvalidParameterValue",
                "Message attribute list values in SendMessage operation are not supported.",
            )
        if base == "Binary":
            raw = value.get("BinaryValue")
            if raw is None or "StringValue" in value:
                raise error(
                    "InvalidParameterValue",
                    f"The message attribute '{name}' with type 'Binary' must use field 'Binary'.",
                )
            data = _b64(raw, f"The binary value of message attribute '{name}'")
            transport = _BINARY
        else:
            text = value.get("StringValue")
            if text is None or "BinaryValue" in value:
                raise error(
                    "InvalidParameterValue",
                    f"The message attribute '{name}' with type '{base}' must use field 'String'.",
                )
            if not isinstance(text, str) or text == "":
                raise error(
                    "InvalidParameterValue",
                    f"The message attribute '{name}' must contain a non-empty message "
                    "attribute value.",
                )
            if bad_character(text):
                raise error(
                    "InvalidParameterValue",
                    f"Message (user) attribute '{name}' value contains invalid characters.",
                )
            if base == "Number":
                _check_number(name, text)
            data = text.encode()
            transport = _STRING
        if not data:
            raise error(
                "InvalidParameterValue",
                f"The message attribute '{name}' must contain a non-empty message attribute value.",
            )
        name_bytes = name.encode()
        type_bytes = data_type.encode()
        size += len(name_bytes) + len(type_bytes) + len(data)
        segments.append(_segment(name_bytes, type_bytes, transport, data))
    return b"".join(segments), size


def encode_blob(attributes: dict[str, tuple[str, str | bytes]]) -> bytes:
    """A blob from ``{name: (DataType, value)}`` (tests and tools; no validation)."""
    segments = []
    for name in sorted(attributes):
        data_type, value = attributes[name]
        if isinstance(value, bytes):
            segments.append(_segment(name.encode(), data_type.encode(), _BINARY, value))
        else:
            segments.append(_segment(name.encode(), data_type.encode(), _STRING, value.encode()))
    return b"".join(segments)


def blob_segments(blob: bytes) -> Iterator[tuple[str, str, bool, bytes, bytes]]:
    """``(name, DataType, is_binary, value bytes, the whole segment)`` of each attribute of
    a blob, in name order."""
    i = 0
    n = len(blob)
    while i < n:
        start = i
        length = int.from_bytes(blob[i : i + 4], "big")
        name = blob[i + 4 : i + 4 + length].decode()
        i += 4 + length
        length = int.from_bytes(blob[i : i + 4], "big")
        data_type = blob[i + 4 : i + 4 + length].decode()
        i += 4 + length
        transport = blob[i]
        length = int.from_bytes(blob[i + 1 : i + 5], "big")
        value = blob[i + 5 : i + 5 + length]
        i += 5 + length
        yield name, data_type, transport == _BINARY, value, blob[start:i]


class Selector:
    """Which message attributes a receive asked for: ``All``/``.*``, exact names, or
    prefixes written ``name.*``."""

    __slots__ = ("everything", "names", "prefixes")

    def __init__(self, names: list[str]) -> None:
        self.everything = False
        self.names: set[str] = set()
        self.prefixes: tuple[str, ...] = ()
        prefixes = []
        for name in names:
            if name in ("All", ".*"):
                self.everything = True
            elif name.endswith(".*"):
                prefixes.append(name[:-1])  # keep the period: "a.*" selects "a.b", not "ab"
            else:
                self.names.add(name)
        self.prefixes = tuple(prefixes)

    def wants(self, name: str) -> bool:
        return (
            self.everything
            or name in self.names
            or (bool(self.prefixes) and name.startswith(self.prefixes))
        )

    @property
    def empty(self) -> bool:
        return not (self.everything or self.names or self.prefixes)


def selector(names: Any) -> Selector | None:
    """A :class:`Selector` for ``MessageAttributeNames``, or None when none are asked."""
    if not names:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise error("InvalidParameterValue", "MessageAttributeNames must be a list of strings.")
    chosen = Selector(names)
    return None if chosen.empty else chosen


def message_attributes_out(
    blob: bytes, chosen: Selector
) -> tuple[dict[str, dict[str, Any]], list[bytes]]:
    """The selected attributes of ``blob`` in the JSON shape (BinaryValue as bytes: each
    protocol writes it as base64) and their segments, for the MD5."""
    out: dict[str, dict[str, Any]] = {}
    segments = []
    for name, data_type, binary, value, segment in blob_segments(blob):
        if chosen.everything or chosen.wants(name):
            if binary:
                out[name] = {"BinaryValue": value, "DataType": data_type}
            else:
                out[name] = {"StringValue": value.decode(), "DataType": data_type}
            segments.append(segment)
    return out, segments


# ---- queue attributes -------------------------------------------------------------------------

#: SQS's defaults and bounds (seconds or bytes) for the attributes a client may set.
DEFAULTS = {
    "VisibilityTimeout": 30,
    "DelaySeconds": 0,
    "MaximumMessageSize": 1_048_576,
    "MessageRetentionPeriod": 345_600,
    "ReceiveMessageWaitTimeSeconds": 0,
}
BOUNDS = {
    "VisibilityTimeout": (0, 43_200),
    "DelaySeconds": (0, 900),
    "MaximumMessageSize": (1_024, 1_048_576),
    "MessageRetentionPeriod": (60, 1_209_600),
    "ReceiveMessageWaitTimeSeconds": (0, 20),
}
#: Attributes kept verbatim in the queue's meta (stored, not enforced).
META_STRINGS = (
    "Policy",
    "RedriveAllowPolicy",
    "KmsMasterKeyId",
    "KmsDataKeyReusePeriodSeconds",
    "SqsManagedSseEnabled",
)
#: What GetQueueAttributes knows, in the order ``All`` lists them.
READABLE = (
    "Policy",
    "VisibilityTimeout",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "CreatedTimestamp",
    "LastModifiedTimestamp",
    "QueueArn",
    "ApproximateNumberOfMessagesDelayed",
    "DelaySeconds",
    "ReceiveMessageWaitTimeSeconds",
    "RedrivePolicy",
    "RedriveAllowPolicy",
    "KmsMasterKeyId",
    "KmsDataKeyReusePeriodSeconds",
    "SqsManagedSseEnabled",
)
#: FIFO-only attributes: a standard queue refuses them.
FIFO_ONLY = ("ContentBasedDeduplication", "DeduplicationScope", "FifoThroughputLimit")


def _whole(name: str, value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().isdigit() and value.strip().isascii():
        number = int(value.strip())
    else:
        raise error("InvalidAttributeValue", f"Invalid value for the parameter {name}.")
    lo, hi = BOUNDS[name]
    if not lo <= number <= hi:
        raise error(
            "InvalidAttributeValue",
            f"Invalid value for the parameter {name}. Reason: must be between {lo} and {hi}.",
        )
    return number


def queue_name_of_arn(arn: str) -> str | None:
    """``arn:aws:sqs:<region>:<account>:<name>`` -> name (any region and account)."""
    parts = arn.split(":")
    if len(parts) != 6 or parts[0] != "arn" or parts[2] != "sqs" or not parts[5]:
        return None
    return parts[5]


def apply_queue_attributes(
    attributes: Any, engine: dict[str, Any], meta: dict[str, Any], creating: bool
) -> None:
    """Validate SQS queue ``attributes`` and write them into ``engine`` (the engine's
    ``put_queue`` attributes) and ``meta`` (the queue's JSON meta). Raises SqsError."""
    if attributes is None:
        attributes = {}
    if not isinstance(attributes, dict):
        raise error("InvalidParameterValue", "Attributes must be a map of strings.")
    for name, value in attributes.items():
        if name in ("FifoQueue",):
            if str(value).lower() == "true":
                raise error(
                    "InvalidAttributeValue",
                    "Invalid value for the parameter FifoQueue. Reason: WonderQ serves "
                    "standard queues only (no FIFO queues).",
                )
            continue
        if name in FIFO_ONLY:
            raise error(
                "InvalidAttributeName",
                f"Unknown Attribute {name}. {name} applies only to FIFO queues.",
            )
        if not isinstance(value, str) and not (isinstance(value, int) and name in BOUNDS):
            raise error("InvalidAttributeValue", f"Invalid value for the parameter {name}.")
        if name == "VisibilityTimeout":
            engine["visibility_timeout_ms"] = _whole(name, value) * 1000
        elif name == "DelaySeconds":
            engine["delay_ms"] = _whole(name, value) * 1000
        elif name == "MaximumMessageSize":
            engine["max_message_bytes"] = _whole(name, value)
        elif name == "MessageRetentionPeriod":
            engine["retention_ms"] = _whole(name, value) * 1000
        elif name == "ReceiveMessageWaitTimeSeconds":
            meta[name] = _whole(name, value)
        elif name == "RedrivePolicy":
            _redrive(str(value), engine)
        elif name == "RedriveAllowPolicy":
            if value:
                _redrive_allow(str(value))
                meta[name] = value
            else:
                meta.pop(name, None)
        elif name in META_STRINGS:
            if name == "Policy" and value:
                _json_object(name, str(value))
            if value == "":
                meta.pop(name, None)
            else:
                meta[name] = value
        else:
            raise error("InvalidAttributeName", f"Unknown Attribute {name}.")
    if creating:
        engine.setdefault("visibility_timeout_ms", DEFAULTS["VisibilityTimeout"] * 1000)
        engine.setdefault("retention_ms", DEFAULTS["MessageRetentionPeriod"] * 1000)
        meta.setdefault("SqsManagedSseEnabled", "true")


def _json_object(name: str, value: str) -> dict[str, Any]:
    try:
        doc = json.loads(value)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise error(
            "InvalidAttributeValue",
            f"Invalid value for the parameter {name}. Reason: Invalid JSON.",
        )
    return doc


def _redrive(value: str, engine: dict[str, Any]) -> None:
    if value == "":
        engine["max_receives"] = None
        engine["dead_letter_queue"] = None
        return
    doc = _json_object("RedrivePolicy", value)
    target = doc.get("deadLetterTargetArn")
    count = doc.get("maxReceiveCount")
    if isinstance(count, str) and count.isdigit() and count.isascii():
        count = int(count)
    if target is None or count is None:
        raise error(
            "InvalidParameterValue",
            "Value "
            + value
            + " for parameter RedrivePolicy is invalid. Reason: Redrive policy does not "
            "contain mandatory attribute: "
            + ("deadLetterTargetArn." if target is None else "maxReceiveCount."),
        )
    name = queue_name_of_arn(target) if isinstance(target, str) else None
    if name is None:
        raise error(
            "InvalidParameterValue",
            f"Value {value} for parameter RedrivePolicy is invalid. Reason: Invalid value for "
            "deadLetterTargetArn.",
        )
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 1000:
        raise error(
            "InvalidParameterValue",
            f"Value {value} for parameter RedrivePolicy is invalid. Reason: Invalid value for "
            "maxReceiveCount: must be an integer from 1 to 1000.",
        )
    engine["max_receives"] = count
    engine["dead_letter_queue"] = name


def _redrive_allow(value: str) -> None:
    doc = _json_object("RedriveAllowPolicy", value)
    permission = doc.get("redrivePermission")
    if permission not in ("allowAll", "denyAll", "byQueue"):
        raise error(
            "InvalidParameterValue",
            f"Value {value} for parameter RedriveAllowPolicy is invalid. Reason: Invalid value "
            "for redrivePermission: allowAll, denyAll or byQueue.",
        )


def check_int(name: str, value: Any, lo: int, hi: int, default: int | None) -> int:
    """An integer parameter of an action (JSON number or query string), else
    ``InvalidParameterValue`` in SQS's words."""
    if value is None:
        if default is None:
            raise error("MissingParameter", f"The request must contain the parameter {name}.")
        return default
    if isinstance(value, bool):
        raise invalid(name, value, f"Must be an integer from {lo} to {hi}")
    if isinstance(value, str):
        text = value.strip()
        if not (text.lstrip("-").isdigit() and text.isascii()) or len(text) > 12:
            raise invalid(name, value, f"Must be an integer from {lo} to {hi}")
        value = int(text)
    if not isinstance(value, int):
        raise invalid(name, value, f"Must be an integer from {lo} to {hi}")
    if not lo <= value <= hi:
        raise invalid(name, value, f"Must be between {lo} and {hi}, if provided")
    return value


__all__ += [
    "BOUNDS",
    "DEFAULTS",
    "FIFO_ONLY",
    "META_STRINGS",
    "READABLE",
    "Selector",
    "SqsError",
    "apply_queue_attributes",
    "bad_character",
    "check_int",
    "queue_name_of_arn",
]
