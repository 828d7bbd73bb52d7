"""SQS's errors: one exception carrying the code each protocol writes.

A modeled error (botocore's ``service-2.json`` names it) has a shape name, which the JSON
protocol writes as ``__type: com.amazonaws.sqs#<Shape>``, and a legacy query code, which the
query protocol writes in ``<Code>`` and the JSON protocol in the ``x-amzn-query-error``
header (botocore and the other SDKs report that one as the error code). The common errors
(``InvalidParameterValue``, ``MissingParameter``, ``InvalidAction``...) have no shape; their
code is both.
"""

from __future__ import annotations

__all__ = ["SqsError", "error"]

# shape name -> (legacy query code, HTTP status, sender's fault)
_MODELED: dict[str, tuple[str, int, bool]] = {
    "QueueDoesNotExist": ("AWS.SimpleQueueService.NonExistentQueue", 400, True),
    "QueueNameExists": ("QueueAlreadyExists", 400, True),
    "QueueDeletedRecently": ("AWS.SimpleQueueService.QueueDeletedRecently", 400, True),
    "BatchEntryIdsNotDistinct": ("AWS.SimpleQueueService.BatchEntryIdsNotDistinct", 400, True),
    "BatchRequestTooLong": ("AWS.SimpleQueueService.BatchRequestTooLong", 400, True),
    "EmptyBatchRequest": ("AWS.SimpleQueueService.EmptyBatchRequest", 400, True),
    "InvalidBatchEntryId": ("AWS.SimpleQueueService.InvalidBatchEntryId", 400, True),
    "TooManyEntriesInBatchRequest": (
        "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
        400,
        True,
    ),
    "MessageNotInflight": ("AWS.SimpleQueueService.MessageNotInflight", 400, True),
    "PurgeQueueInProgress": ("AWS.SimpleQueueService.PurgeQueueInProgress", 403, True),
    "UnsupportedOperation": ("AWS.SimpleQueueService.UnsupportedOperation", 400, True),
    "InvalidIdFormat": ("InvalidIdFormat", 400, True),
    "ReceiptHandleIsInvalid": ("ReceiptHandleIsInvalid", 400, True),
    "InvalidMessageContents": ("InvalidMessageContents", 400, True),
    "InvalidAttributeName": ("InvalidAttributeName", 400, True),
    "InvalidAttributeValue": ("InvalidAttributeValue", 400, True),
    "OverLimit": ("OverLimit", 403, True),
    "RequestThrottled": ("RequestThrottled", 403, True),
    "InvalidAddress": ("InvalidAddress", 404, True),
    "InvalidSecurity": ("InvalidSecurity", 403, True),
    "ResourceNotFoundException": ("ResourceNotFoundException", 404, True),
}

# Common errors (no shape): code -> (HTTP status, sender's fault).
_COMMON: dict[str, tuple[int, bool]] = {
    "InvalidParameterValue": (400, True),
    "MissingParameter": (400, True),
    "InvalidAction": (400, True),
    "InvalidQueryParameter": (400, True),
    "MalformedQueryString": (404, True),
    "InvalidClientTokenId": (403, True),
    "AccessDenied": (403, True),
    "MissingAuthenticationToken": (403, True),
    "SignatureDoesNotMatch": (403, True),
    "RequestExpired": (400, True),
    "IncompleteSignature": (400, True),
    "ServiceUnavailable": (503, False),
    "InternalFailure": (500, False),
    "SerializationException": (400, True),
}


class SqsError(Exception):
    """An SQS error answer: ``shape`` for ``__type``, ``code`` the legacy query code."""

    def __init__(self, shape: str, message: str) -> None:
        super().__init__(message)
        self.message = message
        modeled = _MODELED.get(shape)
        if modeled is not None:
            self.shape = shape
            self.code, self.status, self.sender = modeled
        else:
            self.shape = shape
            self.code = shape
            self.status, self.sender = _COMMON.get(shape, (400, True))

    def __repr__(self) -> str:
        return f"SqsError({self.shape!r}, {self.message!r})"


def error(shape: str, message: str) -> SqsError:
    """An :class:`SqsError` to raise."""
    return SqsError(shape, message)


def invalid(parameter: str, value: object, reason: str) -> SqsError:
    """SQS's own wording for a bad parameter value."""
    return SqsError(
        "InvalidParameterValue",
        f"Value {value} for parameter {parameter} is invalid. Reason: {reason}.",
    )


def no_such_queue() -> SqsError:
    return SqsError("QueueDoesNotExist", "The specified queue does not exist.")
