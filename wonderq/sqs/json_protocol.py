"""The AWS JSON 1.0 protocol of SQS: what botocore >= 1.34.90, the AWS CLI v2 and the SDKs
released since November 2023 send.

A request is ``POST`` with ``Content-Type: application/x-amz-json-1.0`` and
``X-Amz-Target: AmazonSQS.<Action>``; its body is the action's input as a JSON object. The
answer is the output as JSON (binary values base64), or an error
``{"__type": "com.amazonaws.sqs#<Shape>", "message": ...}`` with
``x-amzn-query-error: <legacy code>;Sender`` (botocore reports that code, as the query
protocol would have) and ``x-amzn-RequestId``.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from ..request import Response
from .errors import SqsError, error

__all__ = ["CONTENT_TYPE", "answer", "answer_error", "parse"]

CONTENT_TYPE = b"application/x-amz-json-1.0"
_HEADERS = b"Content-Type: application/x-amz-json-1.0\r\n"
_PREFIX = "com.amazonaws.sqs#"


def parse(body: bytes) -> dict[str, Any]:
    """The input object of a request body (an empty body is an empty input)."""
    if not body:
        return {}
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise error("SerializationException", "The request body is not valid JSON.") from None
    if not isinstance(doc, dict):
        raise error("SerializationException", "The request body must be a JSON object.")
    return doc


def _default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


# One encoder for every answer (json.dumps with options builds a new one per call).
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=_default).encode


def answer(result: dict[str, Any], request_id: bytes) -> Response:
    """A 200 answer with ``result`` as the output object."""
    if len(result) == 2 and "MessageId" in result:  # SendMessage, without attributes
        body = b'{"MD5OfMessageBody":"%s","MessageId":"%s"}' % (
            result["MD5OfMessageBody"].encode("ascii"),
            result["MessageId"].encode("ascii"),
        )
    else:
        body = _encode(result).encode()
    return (200, body, _HEADERS + b"x-amzn-RequestId: " + request_id + b"\r\n")


def answer_error(exc: SqsError, request_id: bytes) -> Response:
    """The error answer of ``exc``."""
    body = json.dumps({"__type": _PREFIX + exc.shape, "message": exc.message}, ensure_ascii=False)
    fault = b"Sender" if exc.sender else b"Receiver"
    headers = (
        _HEADERS
        + b"x-amzn-RequestId: "
        + request_id
        + b"\r\nx-amzn-query-error: "
        + exc.code.encode()
        + b";"
        + fault
        + b"\r\n"
    )
    return (exc.status, body.encode(), headers)
