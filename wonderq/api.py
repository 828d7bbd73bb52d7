# cython: language_level=3, annotation_typing=False, always_allow_keywords=False
"""WonderQ's own routes: handlers only.

A handler reads its parameters (``wonderq.params``: a bad one is a 400 naming it), makes
one store call (``wonderq.store``) and turns the store's answer into bytes. When the store
answers later (a :class:`~wonderq.deferred.Deferred`), :meth:`Api.reply` parks the request and
answers it once the store has; a receive with ``wait`` that finds nothing is parked in the
long polls (``wonderq.longpoll``). Errors propagate to the router, which answers them in one
place (``wonderq.errors.answer_error``).

Each seed route is its named-queue twin on the queue ``default``: ``POST /v1/publish`` is
``POST /v1/queues/default/messages``, and so on.

Compiled with Cython in pure-Python mode (``api.pxd``): the hot handlers are cpdef methods
over the protocol's typed ``Request``, the parameter checks and the store's methods are C
calls. The file runs unchanged as plain Python when it is not built. An extension type takes
no attribute it does not declare: a new attribute of ``Api`` goes into ``api.pxd`` too.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._core import InvalidArgument, batch_ids_json, id_json
from .answers import render_ack, render_info, render_list, render_list_for, render_purged
from .deferred import Deferred
from .errors import BackendUnavailable, BadParameter, answer_error
from .limits import DEFAULT_QUEUE, MAX_ID, MAX_VISIBILITY_MS
from .params import (
    batch_entries,
    delete_args,
    list_args,
    param_cid,
    param_delay,
    param_int,
    param_ms,
    param_path_id,
    param_queue,
    parse_json,
    parse_query,
    queue_attributes_ms,
    receive_args,
)
from .request import JSON_HEADERS, Request, Response
from .statuspage import StatusPage
from .store import Store

if TYPE_CHECKING:
    from .longpoll import LongPoll
    from .metrics import Metrics
    from .routing import Router

__all__ = ["EMPTY_MESSAGES", "Api"]

#: The answer of a receive that found nothing.
EMPTY_MESSAGES = b'{"messages":[]}'
_TRUE: Response = (200, b"true", JSON_HEADERS)
_FALSE: Response = (200, b"false", JSON_HEADERS)
_HEALTHY: Response = (200, b'{"status":"ok"}', JSON_HEADERS)
_NO_CONTENT: Response = (204, b"", b"")
_NO_MESSAGES: Response = (200, EMPTY_MESSAGES, JSON_HEADERS)
_MAX_LIST = 1000  # queues on one page of GET /v1/queues


class Api:
    """WonderQ's routes over one store.

    ``router`` answers deferred requests; ``longpoll`` parks receives; ``metrics`` renders
    ``/metrics`` (set by the server once built).
    """

    def __init__(self, store: Store, router: Router, longpoll: LongPoll, max_batch: int) -> None:
        self.store = store
        self.router = router
        self.longpoll = longpoll
        self.max_batch = max_batch
        self.metrics: Metrics | None = None
        self._openapi: bytes | None = None
        # The status page: its assets (read now) and its event stream.
        self.statuspage = StatusPage(store)
        self.sqs: Any = None  # the SQS face (wonderq.sqs.SqsFace), set by the server

    def routes(self, add: Any) -> None:
        """The route table. Templates are tried in the order first added: the benchmarks'
        routes (batch publish, receive, batch ack) first."""
        add("POST", "/v1/publish", self.handle_publish, "publish:default")
        # A big body these two publish is read into the block of its message, if the store
        # offers one (Store.body_block): no copy of it (wonderq.bodyread).
        self.router.read_bodies_into(
            self.store.body_block, [self.handle_publish, self.handle_publish_message]
        )
        add("GET", "/v1/consumer", self.handle_receive, "consume:default")
        add("DELETE", "/v1/consumer", self.handle_delete, "consume:default")
        add("GET", "/healthz", self.handle_health)
        add("GET", "/metrics", self.handle_metrics, "metrics")
        add("GET", "/openapi.json", self.handle_openapi)
        add("POST", "/v1/queues/{queue}/batch", self.handle_publish_batch, "publish:{queue}")
        add("GET", "/v1/queues/{queue}/messages", self.handle_receive_messages, "consume:{queue}")
        add("POST", "/v1/queues/{queue}/messages", self.handle_publish_message, "publish:{queue}")
        add("POST", "/v1/queues/{queue}/ack", self.handle_ack, "consume:{queue}")
        add(
            "DELETE",
            "/v1/queues/{queue}/messages/{id}",
            self.handle_delete_message,
            "consume:{queue}",
        )
        add(
            "POST",
            "/v1/queues/{queue}/messages/{id}/lease",
            self.handle_change_lease,
            "consume:{queue}",
        )
        # Any known token may list; the page shows only the queues it has a right on.
        add("GET", "/v1/queues", self.handle_list_queues, "see")
        add("PUT", "/v1/queues/{queue}", self.handle_put_queue, "admin:{queue}")
        add("GET", "/v1/queues/{queue}", self.handle_get_queue, "see:{queue}")
        add("DELETE", "/v1/queues/{queue}", self.handle_delete_queue, "admin:{queue}")
        add("POST", "/v1/queues/{queue}/purge", self.handle_purge, "admin:{queue}")
        add("GET", "/v1/queues/{queue}/peek", self.handle_peek, "admin:{queue}")
        # The status page (wonderq/statuspage.py): the page and its assets are open (they
        # hold no data); the counters stream needs the metrics right.
        add("GET", "/", self.handle_status_page)
        add("GET", "/static/{file}", self.handle_static)
        add("GET", "/v1/events", self.handle_events, "metrics")
        # A request's queue is named to the store as soon as its target arrives, before its
        # head and body are parsed (the engine starts loading the queue's slot in its name
        # table; bench/RESULTS.md, "Many queues"), and the {queue} segment is handed on as
        # the store's own str for that name (Store.queue_names).
        if self.store.queue_names is not None:
            self.router.hint_queues(self.store.queue_names)

    # ---- answers that come later -----------------------------------------------------------

    def reply(self, req: Request, result: Any, render: Any) -> Response | None:
        """``render(result)``: at once, or once a Deferred ``result`` is done (then None is
        returned and the router answers later). ``render`` returns the response, or a
        Deferred of one (a second store call), or None when it parked the request."""
        if type(result) is Deferred:
            if not result.done:
                req.deferred = result
                result.add(partial(self._later, req, render))
                return None
            result = result.result()
        response = render(result)
        if type(response) is Deferred:
            return self.reply(req, response, _same)
        return response

    def _later(self, req: Request, render: Any, result: Deferred) -> None:
        try:
            response = self.reply(req, result, render)
        except Exception as exc:
            response = answer_error(exc, f"{req.method} {req.path}")
        if response is not None:
            self.router.answer(req, response)

    # ---- messages ---------------------------------------------------------------------------

    def handle_publish(self, req: Request) -> Response | None:
        """``POST /v1/publish[?delay=]``: publish_to() on ``default``."""
        return self.publish_to(req, DEFAULT_QUEUE)

    def handle_publish_message(self, req: Request) -> Response | None:
        """``POST /v1/queues/{queue}/messages[?delay=]``: publish_to() on ``queue``."""
        return self.publish_to(req, param_queue(req))

    def publish_to(self, req: Request, queue: str) -> Response | None:
        """The raw body is the message; 201 ``{"id": N}``. ``delay=0`` overrides the queue's
        delay."""
        msg_id = self.store.publish(queue, req.body, param_delay(req.query))
        if type(msg_id) is Deferred:
            return self.reply(req, msg_id, _render_id)
        return (201, id_json(msg_id), JSON_HEADERS)

    def handle_receive(self, req: Request) -> Response | None:
        """``GET /v1/consumer?cid=&limit=&wait=&visibility=``: receive_from() on ``default``."""
        return self.receive_from(req, DEFAULT_QUEUE)

    def handle_receive_messages(self, req: Request) -> Response | None:
        """``GET /v1/queues/{queue}/messages?...``: receive_from() on ``queue``."""
        return self.receive_from(req, param_queue(req))

    def receive_from(self, req: Request, queue: str) -> Response | None:
        """Lease up to ``limit`` messages to ``cid``; with ``wait`` and none available, park
        the request until some are or the wait ends."""
        args = receive_args(req.query, self.max_batch)
        body = self.store.receive(queue, args[0], args[1], args[2])
        if type(body) is Deferred:
            return self.reply(req, body, partial(self._received, req, queue, args))
        if args[3] and len(body) == len(EMPTY_MESSAGES):
            return self._park(req, queue, args)
        return (200, body, JSON_HEADERS)

    def _received(self, req: Request, queue: str, args: tuple[int, int, int, int], body: bytes):
        if args[3] and len(body) == len(EMPTY_MESSAGES):
            return self._park(req, queue, args)
        return (200, body, JSON_HEADERS)

    def _park(self, req: Request, queue: str, args: tuple[int, int, int, int]) -> Response | None:
        # Through a Python attribute lookup: partial() of the typed C method would call
        # Store.receive itself, never a Python subclass's override (RedisStore).
        receive = getattr(self.store, "receive")  # noqa: B009
        attempt = partial(receive, queue, args[0], args[1], args[2])
        return self.longpoll.park(req, queue, args[3], attempt, _render_messages, _NO_MESSAGES)

    def handle_delete(self, req: Request) -> Response | None:
        """``DELETE /v1/consumer?cid=&id=``: delete_from() on ``default``."""
        cid, msg_id = delete_args(req.query)
        return self.delete_from(req, DEFAULT_QUEUE, cid, msg_id)

    def handle_delete_message(self, req: Request) -> Response | None:
        """``DELETE /v1/queues/{queue}/messages/{id}?cid=``: delete_from() on ``queue``."""
        queue = param_queue(req)
        msg_id = param_path_id(req)
        return self.delete_from(req, queue, param_cid(parse_query(req.query)), msg_id)

    def delete_from(self, req: Request, queue: str, cid: int, msg_id: int) -> Response | None:
        """Ack: 200 ``true`` if the lease was ``cid``'s and still valid, else ``false`` (also
        for a message of another queue)."""
        deleted = self.store.delete(queue, cid, msg_id)
        if type(deleted) is Deferred:
            return self.reply(req, deleted, _render_bool)
        return _TRUE if deleted else _FALSE

    def handle_publish_batch(self, req: Request) -> Response | None:
        """``POST /v1/queues/{queue}/batch``: a JSON array of 1..max_batch entries, each a
        string or ``{"body", "delay"}``; all or nothing; 201 ``{"ids": [...]}``."""
        queue = param_queue(req)
        # The usual batch (plain strings) parsed, checked and stored in one pass by the
        # store; None for anything else, which the general way below parses and names.
        answer = self.store.publish_batch_json(queue, req.body)
        if answer is not None:
            if type(answer) is Deferred:
                return self.reply(req, answer, _render_created)
            return (201, answer, JSON_HEADERS)
        entries = parse_json(req.body, "the batch")
        if entries.__class__ is not list or not 0 < len(entries) <= self.max_batch:
            raise BadParameter(
                "invalid_batch",
                f"the batch must be a JSON array of 1 to {self.max_batch} messages",
            )
        delays = None
        try:
            # All strings (the usual case) in one C-level pass; anything else, or a lone
            # surrogate, goes the slow way, which also names the bad entry.
            bodies = list(map(str.encode, entries))
        except (TypeError, UnicodeEncodeError):
            bodies, delays = batch_entries(entries)
        first = self.store.publish_batch(queue, bodies, delays)
        if type(first) is Deferred:
            return self.reply(req, first, partial(_render_ids, len(bodies)))
        return (201, batch_ids_json(first, len(bodies)), JSON_HEADERS)

    def handle_ack(self, req: Request) -> Response | None:
        """``POST /v1/queues/{queue}/ack`` with ``{"cid": C, "ids": [...]}``: delete each id
        by the rule of a single delete; 200 ``{"deleted": [...], "failed": [...]}``, each in
        input order (an id given twice fails the second time)."""
        queue = param_queue(req)
        answer = self.store.ack_json(queue, req.body)
        if answer is not None:
            if type(answer) is Deferred:
                return self.reply(req, answer, _render_ok)
            return (200, answer, JSON_HEADERS)
        doc = parse_json(req.body, "the ack body")
        if doc.__class__ is not dict:
            raise BadParameter(
                "invalid_body", "the ack body must be a JSON object with cid and ids"
            )
        for key in doc:
            if key != "cid" and key != "ids":
                raise BadParameter(
                    "invalid_body", f"unknown key {key!r} (an ack body has cid and ids)"
                )
        cid = doc.get("cid")
        if cid.__class__ is not int or not 0 <= cid <= MAX_ID:  # bool's class is not int
            raise BadParameter("invalid_cid", f"cid is required, an integer from 0 to {MAX_ID}")
        ids = doc.get("ids")
        if ids.__class__ is not list or not 0 < len(ids) <= self.max_batch:
            raise BadParameter(
                "invalid_ids", f"ids is required, an array of 1 to {self.max_batch} message ids"
            )
        try:
            # The store checks every id (an int, not a bool, in 1..MAX_ID) before deleting any.
            outcome = self.store.delete_batch(queue, cid, ids)
        except InvalidArgument as exc:
            if exc.code != "invalid_id":
                raise
            raise BadParameter("invalid_ids", f"ids must be integers from 1 to {MAX_ID}") from None
        if type(outcome) is Deferred:
            outcome = _bad_ids_later(outcome)
        return self.reply(req, outcome, render_ack)

    def handle_change_lease(self, req: Request) -> Response | None:
        """``POST /v1/queues/{queue}/messages/{id}/lease?cid=&timeout=``: the lease now ends
        ``timeout`` seconds from now (0: released at once); 200 ``true`` or ``false``."""
        queue = param_queue(req)
        msg_id = param_path_id(req)
        params = parse_query(req.query)
        cid = param_cid(params)
        if "timeout" not in params:
            raise BadParameter("invalid_timeout", "timeout is required (seconds, 0 releases)")
        timeout_ms = param_ms(params, "timeout", MAX_VISIBILITY_MS, 0)
        return self.reply(
            req, self.store.change_lease(queue, cid, msg_id, timeout_ms), _render_bool
        )

    def handle_peek(self, req: Request) -> Response | None:
        """``GET /v1/queues/{queue}/peek?limit=``: the next available messages, as a receive
        would return them now, without leasing or counting them."""
        queue = param_queue(req)
        limit = param_int(parse_query(req.query), "limit", 1, self.max_batch, 1)
        return self.reply(req, self.store.peek(queue, limit), _render_ok)

    # ---- queues -----------------------------------------------------------------------------
    # Each route reads its queue name first (param_queue: a bad name is a 400 before any
    # lookup); the store raises QueueNotFound (404) for a well-formed name of no queue.

    def handle_list_queues(self, req: Request) -> Response | None:
        """``GET /v1/queues?prefix=&after=&limit=``: queues in name order, a page at a time;
        ``next`` is the ``after`` of the next page, or null on the last."""
        prefix, after, limit = list_args(req.query, _MAX_LIST)
        page = self.store.list_queues(prefix, after, limit)
        authorizer = self.router.authorizer
        if authorizer is None:
            return self.reply(req, page, render_list)
        # With access control, only the queues the token has a right on (a page may then
        # hold fewer than limit; next still continues where it ended).
        principal = authorizer.authenticate(getattr(req, "authorization", None))
        return self.reply(req, page, partial(render_list_for, principal))

    def handle_put_queue(self, req: Request) -> Response | None:
        """``PUT /v1/queues/{queue}``: create (201) or update (200) with the JSON attributes
        of the body (optional; a missing key keeps its value); answers the info. The store
        checks the result as a whole and changes nothing when it refuses."""
        queue = param_queue(req)
        attributes = queue_attributes_ms(parse_json(req.body, "the body")) if req.body else None
        authorizer = self.router.authorizer
        if authorizer is not None and attributes and attributes.get("dead_letter_queue"):
            # Naming a dead-letter queue sends messages there: admin on it too.
            authorizer.check_bearer(
                getattr(req, "authorization", None),
                "admin",
                attributes["dead_letter_queue"],
                req.conn.peer,
            )
        created = self.store.put_queue(queue, attributes)
        return self.reply(req, created, partial(self._put_done, queue))

    def _put_done(self, queue: str, created: bool) -> Any:
        status = 201 if created else 200
        return self.reply_value(self.store.queue_info(queue), partial(render_info, status))

    def handle_get_queue(self, req: Request) -> Response | None:
        """``GET /v1/queues/{queue}``: attributes and counters."""
        return self.reply(req, self.store.queue_info(param_queue(req)), partial(render_info, 200))

    def handle_delete_queue(self, req: Request) -> Response | None:
        """``DELETE /v1/queues/{queue}``: drop the queue and its messages; 204. Refused (409)
        for ``default`` and for a queue that is another's dead-letter queue."""
        queue = param_queue(req)
        return self.reply(req, self.store.delete_queue(queue), partial(self._deleted, queue))

    def _deleted(self, queue: str, dropped: int) -> Response:
        self.longpoll.drop(queue)  # its long polls answer empty at once
        return _NO_CONTENT

    def handle_purge(self, req: Request) -> Response | None:
        """``POST /v1/queues/{queue}/purge``: drop its ready, delayed and leased messages
        (the totals stay); 200 ``{"purged": n}``."""
        return self.reply(req, self.store.purge(param_queue(req)), render_purged)

    # ---- the status page: each delegates to wonderq/statuspage.py -------------------------

    def handle_status_page(self, req: Request) -> Response:
        """``GET /`` (without ``Action``: that is the SQS query protocol): the status page."""
        if self.sqs is not None and self.sqs.kind(req):
            return self.sqs.dispatch(req)
        return self.statuspage.page(req)

    def handle_static(self, req: Request) -> Response:
        """``GET /static/{file}``: the page's scripts, styles and images."""
        return self.statuspage.asset(req)

    def handle_events(self, req: Request) -> Response | None:
        """``GET /v1/events``: server-sent events, the counters once a second."""
        return self.statuspage.stream(req)

    # ---- operations -------------------------------------------------------------------------

    def handle_health(self, req: Request) -> Response | None:
        """``GET /healthz``: liveness, and whether the store's backend answers."""
        return self.reply(req, self.store.health(), _render_health)

    def handle_metrics(self, req: Request) -> Response | None:
        """``GET /metrics``: Prometheus text format, rendered a slice per event-loop turn
        (answered later when it takes more than one: ``Metrics.scrape``)."""
        assert self.metrics is not None
        return self.metrics.scrape(req)

    def handle_openapi(self, req: Request) -> Response:
        """``GET /openapi.json``: the API's OpenAPI document, shipped with the package."""
        if self._openapi is None:
            self._openapi = (Path(__file__).parent / "openapi.json").read_bytes()
        return (200, self._openapi, JSON_HEADERS)

    def reply_value(self, result: Any, render: Any) -> Any:
        """``render(result)`` now, or a Deferred of it once ``result`` is done (for a
        render that needs a second store call)."""
        if type(result) is not Deferred:
            return render(result)
        if result.done:
            return render(result.result())
        chained = Deferred()
        result.add(partial(_chain, chained, render))
        return chained


def _chain(chained: Deferred, render: Any, result: Deferred) -> None:
    try:
        chained.resolve(render(result.result()))
    except Exception as exc:
        chained.fail(exc)


# ---- rendering --------------------------------------------------------------------------------


def _same(response: Response) -> Response:
    return response


def _render_id(msg_id: int) -> Response:
    return (201, id_json(msg_id), JSON_HEADERS)


def _render_ids(n: int, first: int) -> Response:
    return (201, batch_ids_json(first, n), JSON_HEADERS)


def _render_created(body: bytes) -> Response:
    return (201, body, JSON_HEADERS)


def _render_ok(body: bytes) -> Response:
    return (200, body, JSON_HEADERS)


def _render_bool(done: bool) -> Response:
    return _TRUE if done else _FALSE


def _render_messages(body: bytes) -> Response | None:
    """A receive's answer, or None when it found nothing (a long poll waits on)."""
    if len(body) == len(EMPTY_MESSAGES):
        return None
    return (200, body, JSON_HEADERS)


def _bad_ids_later(outcome: Deferred) -> Deferred:
    """The same 400 as handle_ack's, for a store that reports a bad id in its later answer
    (RedisStore checks the queue first, on Redis, as the engine does)."""
    out = Deferred()
    outcome.add(partial(_bad_ids_done, out))
    return out


def _bad_ids_done(out: Deferred, outcome: Deferred) -> None:
    error = outcome.error
    if error is None:
        out.resolve(outcome.value)
    elif isinstance(error, InvalidArgument) and error.code == "invalid_id":
        out.fail(BadParameter("invalid_ids", f"ids must be integers from 1 to {MAX_ID}"))
    else:
        out.fail(error)


def _render_health(healthy: bool) -> Response:
    if healthy:
        return _HEALTHY
    return answer_error(BackendUnavailable("the store's backend does not answer"), "")
