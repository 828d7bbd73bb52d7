"""The Amazon SQS face: the same port speaks SQS, so boto3, the AWS CLI, the AWS SDKs and
Celery/kombu work with ``endpoint_url`` pointed at WonderQ (docs/SQS.md).

A request is SQS (:meth:`SqsFace.kind`) when its path is ``/`` or a queue URL path
``/<account>/<queue>`` and it carries ``X-Amz-Target: AmazonSQS.<Action>`` (the JSON 1.0
protocol, :mod:`.json_protocol`) or an ``Action`` parameter in its query string or form body
(the query protocol, :mod:`.query_protocol`). Both become one input object for the action
(:mod:`.actions`), whose output each protocol writes its own way. SQS queues are WonderQ
queues: the face calls only the store.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from typing import Any
from urllib.parse import unquote

from .._core import EngineError
from ..deferred import Deferred
from ..errors import NotFound, StoreError
from ..longpoll import LongPoll
from ..request import Request, Response
from ..store import Store
from . import json_protocol, query_protocol
from ._fast import FastPath
from .actions import Actions, Context, Park, engine_error
from .errors import SqsError, error
from .handles import ReceiptHandles

__all__ = ["JSON", "QUERY", "SqsError", "SqsFace"]

log = logging.getLogger("wonderq.sqs")

NOT_SQS, JSON, QUERY = 0, 1, 2
_TARGET = b"amazonsqs."
#: Actions of SQS that WonderQ does not implement: answered UnsupportedOperation.
UNSUPPORTED = frozenset(
    (
        "AddPermission",
        "RemovePermission",
        "StartMessageMoveTask",
        "CancelMessageMoveTask",
        "ListMessageMoveTasks",
    )
)


def _headers(req: Request) -> dict[bytes, bytes]:
    """The request's headers by lowercase name (the last of a repeated one)."""
    headers = req.headers
    return dict(headers) if headers else {}


def _has_action(text: str) -> bool:
    return text.startswith("Action=") or "&Action=" in text


class SqsFace(Actions):
    """Answers SQS requests from the store.

    ``account``, ``region`` and ``base_url`` (``--sqs-account``, ``--sqs-region``,
    ``--sqs-base-url``) shape QueueUrl and QueueArn; without a base URL a QueueUrl is built
    from the request's ``Host`` (so it works behind port mapping and proxies).
    ``longpoll`` is the server's (receives with ``WaitTimeSeconds`` park there, beside the
    native face's); without one (tests) the face makes its own from ``call_later``.
    ``authorizer`` (``--auth-file``) checks every request's SigV4 signature and rights.
    """

    def __init__(
        self,
        store: Store,
        *,
        longpoll: LongPoll | None = None,
        call_later: Any = None,
        account: str = "000000000000",
        region: str = "us-east-1",
        base_url: str | None = None,
        authorizer: Any = None,
        tls: bool = False,
    ) -> None:
        self.store = store
        self.account = account
        self.region = region
        self.base_url = base_url.rstrip("/") if base_url else None
        self.handles = ReceiptHandles(store.token_key())
        if longpoll is None:
            longpoll = LongPoll(_complete, call_later)
        self.longpoll = longpoll
        self.authorizer = authorizer
        self.tls = tls  # served over HTTPS (SigV4 then accepts UNSIGNED-PAYLOAD)
        self.started_s = int(time.time())
        self._wait_cache: dict[str, int] = {}
        # The fast path of the common JSON requests (wonderq.sqs._fast); it also gives the
        # request ids, so both paths draw from one counter.
        self.fast = FastPath(self, store, self.handles.k0, self.handles.k1)
        self._actions = {
            name[7:]: getattr(self, name) for name in dir(self) if name.startswith("action_")
        }

    # ---- classification -----------------------------------------------------------------------
    @staticmethod
    def kind(req: Request) -> int:
        """JSON, QUERY or NOT_SQS for ``req`` (cheap: the path is checked first)."""
        path = req.path
        if path != "/" and (path.count("/") != 2 or path.endswith("/") or path.startswith("/v1/")):
            return NOT_SQS
        headers = _headers(req)
        target = headers.get(b"x-amz-target")
        if target is not None and target[:10].lower() == _TARGET:
            return JSON
        if req.query and _has_action(req.query):
            return QUERY
        if req.body and req.method == "POST":
            content_type = headers.get(b"content-type", b"")
            if content_type.lower().startswith(query_protocol.FORM_TYPE):
                try:
                    text = req.body[:4096].decode("latin-1")
                except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes anything
                    return NOT_SQS
                if _has_action(text):
                    return QUERY
        return NOT_SQS

    # ---- the hook for access control ----------------------------------------------------------
    def authorize(
        self, req: Request, headers: dict[bytes, bytes], action: str, params: dict[str, Any]
    ) -> None:
        """With ``--auth-file``: check the request's AWS Signature Version 4 and the key's
        right for the action on its queue, raising SQS's own errors (``InvalidClientTokenId``,
        ``SignatureDoesNotMatch``, ``AccessDenied``, ...). The principal is kept on the
        request so ListQueues shows only the queues it may see."""
        authorizer = self.authorizer
        if authorizer is None:
            return
        from ..auth import SQS_ACTION_RIGHTS, SqsAuthError

        text = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers.items()}
        try:
            principal = authorizer.verify_sigv4(
                req.method,
                req.path,
                req.query,
                text,
                req.body,
                time.time(),
                tls=self.tls,
                peer=req.conn.peer,
            )
            req.principal = principal
            queue = None
            if action not in ("ListQueues", "CreateQueue"):
                queue = self.queue_of_request(req, params)
            elif action == "CreateQueue":
                queue = params.get("QueueName") or None
            right = SQS_ACTION_RIGHTS.get(action, "admin")
            if queue is not None or right != "see":
                authorizer.check_sqs(principal, right, queue, queue or "*", peer=req.conn.peer)
        except SqsAuthError as exc:
            refused = SqsError(exc.code, exc.message)
            refused.status = exc.status
            raise refused from None

    @staticmethod
    def queue_of_request(req: Request, params: dict[str, Any]) -> str | None:
        url = params.get("QueueUrl")
        if isinstance(url, str) and url:
            return url.rstrip("/").rsplit("/", 1)[-1]
        if req.path != "/":
            return unquote(req.path.rsplit("/", 1)[1])
        return None

    # ---- dispatch -----------------------------------------------------------------------------
    def _request_id(self) -> bytes:
        """A UUID-shaped id, unique per server run (a random prefix and a counter)."""
        return self.fast.request_id()

    def dispatch(self, req: Request, kind: int = 0) -> Response | None:
        """Answer ``req`` (an SQS request), or None when the answer comes later."""
        if not kind:
            kind = self.kind(req)
        request_id = self._request_id()
        json_protocol_used = kind == JSON
        action = ""
        headers = _headers(req)
        try:
            if json_protocol_used:
                action = headers.get(b"x-amz-target", b"")[10:].decode("latin-1")
                params = json_protocol.parse(req.body)
            else:
                content_type = headers.get(b"content-type", b"")
                form = req.method == "POST" and content_type.lower().startswith(
                    query_protocol.FORM_TYPE
                )
                params = query_protocol.parse(req.query, req.body, form)
                action = str(params.pop("Action", ""))
            handler = self._actions.get(action)
            if handler is None:
                if action in UNSUPPORTED:
                    raise error("UnsupportedOperation", f"WonderQ does not implement {action}.")
                raise error(
                    "InvalidAction",
                    f"The action {action or '(none)'} is not valid for this endpoint.",
                )
            self.authorize(req, headers, action, params)
            path_queue = ""
            if req.path != "/":
                path_queue = unquote(req.path.rsplit("/", 1)[1])
            ctx = Context(req, json_protocol_used, action, request_id, headers, path_queue)
            ctx.base_url = self.base_url
            result = self._drive(ctx, handler(ctx, params), None, None)
        except Exception as exc:
            return self._error(json_protocol_used, exc, request_id, action)
        if result is _PENDING:
            return None
        return self._finish(ctx, result)

    def run(self, req: Request, action: str, request_id: bytes, steps: Any) -> Response | None:
        """Go on with ``steps``, an action's generator the fast path started (a store answer
        that comes later, a refused batch entry), as :meth:`dispatch` would."""
        ctx = Context(req, True, action, request_id, {}, "")
        ctx.base_url = self.base_url
        try:
            result = self._drive(ctx, steps, None, None)
        except Exception as exc:
            return self._error(True, exc, request_id, action)
        if result is _PENDING:
            return None
        return self._finish(ctx, result)

    def _finish(self, ctx: Context, result: Any) -> Response | None:
        if type(result) is Park:
            empty = self._answer(ctx, result.empty)
            attempt = partial(self._attempt, ctx, result.attempt)
            return self.longpoll.park(ctx.req, result.queue, result.wait_ms, attempt, _same, empty)
        return self._answer(ctx, result)

    def _answer(self, ctx: Context, result: dict[str, Any]) -> Response:
        if ctx.json:
            return json_protocol.answer(result, ctx.request_id)
        return query_protocol.answer(ctx.action, result, ctx.request_id)

    def _error(
        self, json_used: bool, exc: BaseException, request_id: bytes, action: str
    ) -> Response:
        if isinstance(exc, SqsError):
            sqs_error = exc
        elif isinstance(exc, EngineError):
            sqs_error = engine_error(exc)
        elif isinstance(exc, NotImplementedError):
            # A store without the SQS section (Store's defaults raise NotImplementedError).
            sqs_error = error(
                "UnsupportedOperation", f"{action or 'this action'} is not available on this store"
            )
        elif isinstance(exc, StoreError):
            sqs_error = error("ServiceUnavailable", str(exc) or "the store is unavailable")
        else:
            log.error("SQS %s failed", action or "request", exc_info=exc)
            sqs_error = error("InternalFailure", "internal server error")
        if json_used:
            return json_protocol.answer_error(sqs_error, request_id)
        return query_protocol.answer_error(sqs_error, request_id)

    # ---- the driver of the action generators --------------------------------------------------
    def _drive(self, ctx: Context, steps: Any, value: Any, thrown: BaseException | None) -> Any:
        """Run an action until it returns (its output) or waits on a Deferred (_PENDING).
        Store calls answered at once resume it at once: the in-memory path never waits."""
        while True:
            try:
                step = steps.send(value) if thrown is None else steps.throw(thrown)
            except StopIteration as stop:
                return stop.value
            value = thrown = None
            if type(step) is Deferred:
                if not step.done:
                    ctx.req.deferred = step
                    step.add(partial(self._resumed, ctx, steps))
                    return _PENDING
                if step.error is not None:
                    thrown = step.error
                else:
                    value = step.value
            else:
                value = step

    def _resumed(self, ctx: Context, steps: Any, done: Deferred) -> None:
        try:
            result = self._drive(ctx, steps, done.value, done.error)
            if result is _PENDING:
                return
            response = self._finish(ctx, result)
        except Exception as exc:
            response = self._error(ctx.json, exc, ctx.request_id, ctx.action)
        if response is not None:
            ctx.req.conn.complete(ctx.req, response)

    def _attempt(self, ctx: Context, args: tuple[Any, ...]) -> Response | None:
        """One more try of a parked receive: its answer, or None while nothing is there."""
        queue, limit, visibility_ms = args[0], args[1], args[2]
        try:
            rows = self.store.receive_messages(queue, limit, visibility_ms)
            if type(rows) is Deferred:  # a networked store: its answer is awaited, then given
                out = Deferred()
                rows.add(partial(self._attempted, ctx, args, out))
                return out  # type: ignore[return-value]
            if not rows:
                return None
            return self._answer(ctx, self.received(rows, args))
        except Exception as exc:
            return self._error(ctx.json, exc, ctx.request_id, ctx.action)

    def _attempted(
        self, ctx: Context, args: tuple[Any, ...], out: Deferred, done: Deferred
    ) -> None:
        try:
            rows = done.result()
            out.resolve(self._answer(ctx, self.received(rows, args)) if rows else None)
        except Exception as exc:
            out.resolve(self._error(ctx.json, exc, ctx.request_id, ctx.action))

    # ---- routes -------------------------------------------------------------------------------
    def routes(self, router: Any) -> None:
        """``POST /`` and, for any path no other route takes, the queue URL paths
        ``/<account>/<queue>`` (GET or POST). ``GET /`` is the status page's, which hands
        requests with ``Action`` here."""
        router.add("POST", "/", self.fast.handle)
        router.set_fallback(self.fast.handle, "/{account}/{queue}", ("GET", "POST"), self.kind)

    def handle(self, req: Request) -> Response | None:
        """An SQS request, or the 404 any unknown route gets: the fast path
        (wonderq.sqs._fast) for the common JSON requests, else :meth:`handle_general`."""
        return self.fast.handle(req)

    def handle_general(self, req: Request) -> Response | None:
        """What the fast path declines."""
        kind = self.kind(req)
        if kind == NOT_SQS:
            path = req.path if len(req.path) <= 200 else req.path[:200] + "..."
            raise NotFound(f"no route for {req.method} {path}")
        return self.dispatch(req, kind)

    # ---- lifecycle ----------------------------------------------------------------------------
    def cancel(self, req: Request) -> None:
        """A deferred request's connection closed."""
        self.longpoll.cancel(req)

    def close(self) -> None:
        """Shutdown: parked receives answer empty at once."""
        self.longpoll.close()


_PENDING: Any = object()


def _same(response: Any) -> Any:
    return response


def _complete(req: Request, response: Response) -> None:
    req.conn.complete(req, response)
