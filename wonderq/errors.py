"""The error families every layer raises, and the one place they become answers.

Three families, as asyncpg has them:

* :class:`ApiError` — what the client did wrong (a bad parameter, no such route): raised by
  ``params``, ``routing`` and the faces, answered with its own status and code.
* The engine's ``EngineError`` (``wonderq._core``) and :class:`StoreError` — what the store
  refused or could not do (no such queue, memory limit, the log cannot be written, the backend
  is unreachable): they carry ``status`` and ``code`` too.
* Anything else is a broken invariant: a 500 and a log line, never a silent 4xx.
"""

from __future__ import annotations

import logging

from ._core import EngineError
from .auth import AuthError
from .request import Response, error_response

__all__ = [
    "INTERNAL_ERROR",
    "ApiError",
    "BackendUnavailable",
    "BadParameter",
    "NotFound",
    "ShuttingDown",
    "StorageError",
    "StoreError",
    "answer_error",
]

log = logging.getLogger("wonderq")

INTERNAL_ERROR = error_response(500, "internal_error", "internal server error")


class ApiError(Exception):
    """A request the API refuses: answered as ``{"error": {"code", "message"}}``.

    ``headers`` are extra complete header lines (``b"Allow: GET\\r\\n"``)."""

    def __init__(self, status: int, code: str, message: str, headers: bytes = b"") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


class BadParameter(ApiError):
    """400 for a bad query parameter or body; the message names the parameter."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(400, code, message)


class NotFound(ApiError):
    """404: no such route."""

    def __init__(self, message: str) -> None:
        super().__init__(404, "not_found", message)


class StoreError(Exception):
    """A store could not do what was asked, for a reason that is not the client's request."""

    status = 500
    code = "store_error"


class StorageError(StoreError):
    """507: the durable store cannot write its log (disk full, I/O error)."""

    status = 507
    code = "storage_error"


class BackendUnavailable(StoreError):
    """503: the backend (Redis) cannot be reached or did not answer in time."""

    status = 503
    code = "backend_unavailable"


class ShuttingDown(StoreError):
    """503: the server stopped before the answer was ready."""

    status = 503
    code = "shutting_down"


def answer_error(exc: BaseException, what: str) -> Response:
    """The answer to a failed request: the client's errors and the store's refusals as the
    JSON error shape, anything else a 500 with the traceback logged (``what`` names the
    request in the log line)."""
    if isinstance(exc, (ApiError, AuthError)):  # AuthError: 401 / 403 of access control
        return error_response(exc.status, exc.code, exc.message, exc.headers)
    if isinstance(exc, (EngineError, StoreError)):
        return error_response(exc.status, exc.code, str(exc))
    log.error("%s failed", what, exc_info=exc)
    return INTERNAL_ERROR
