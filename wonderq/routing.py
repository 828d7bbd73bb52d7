# cython: language_level=3, annotation_typing=False, always_allow_keywords=False
"""The route table and the one dispatch: method + path to a handler, errors to answers.

The :class:`Router` is the application the protocol talks to (``dispatch``, ``cancel``,
``count``: see ``wonderq.protocol.App``). The faces register their handlers with
:meth:`Router.add`:

* A handler is ``handler(req) -> Response | None``: ``(status, body, header_lines)``, or
  None when it answers later through :meth:`Router.answer` (long polls, store answers that
  come later). ``req.params`` holds the ``{name}`` segments of the route's template.
* Exact paths are one dict lookup; templates with ``{name}`` segments (each matching one
  non-empty path segment) are tried in the order first added. A known path with another
  method is a 405 with ``Allow``, an unknown path a 404.
* Errors raised by a handler become answers in one place, :func:`wonderq.errors.answer_error`.
* ``"<METHOD> <template>"`` is the ``route`` label of ``wonderq_http_requests_total``.
* Access control (``--auth-file``): a route names the right it needs and on which queue
  (``add(..., access="publish:{queue}")``: the ``{queue}`` path segment, a queue name, or no
  queue for server-wide rights such as ``metrics``). With an ``authorizer`` set, the router
  checks the request's bearer token before the handler runs (401/403); routes without
  ``access`` are open (``/healthz``, the status page's assets) or check by themselves (the
  SQS face, whose requests are signed with SigV4).

Compiled with Cython in pure-Python mode (``routing.pxd``); runs as plain Python unbuilt.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import Any

from .auth import RIGHT_BITS
from .errors import ApiError, answer_error
from .params import known_queue, param_queue
from .pathscan import PathIndex, segment_after
from .queuenames import QueueNames
from .request import Request, Response, error_response

__all__ = ["Handler", "MethodNotAllowed", "Route", "Router"]

Handler = Callable[[Request], "Response | None"]
# A route's method: (handler, metric label, responses counted by status, access or None).
Entry = tuple[Handler, str, list[int], Any]

_PARAM_SEGMENT = re.compile(r"\{\w+\}")  # a {name} segment of a route template


class Route:
    """One path template and its handlers by method.

    ``handlers`` maps a method to ``(handler, label, counts)``: the label
    (``"GET /v1/consumer"``) is the ``route`` of ``wonderq_http_requests_total``, built once
    here, and ``counts`` is a list indexed by status, bumped on the hot path (a list index
    is the cheapest counter Python has) and read by the collector at scrape time.

    A template with ``{params}`` is matched segment by segment against the path split at
    ``/``, not by a regular expression (bench/instructions.py recvdel_q: a regex per template
    cost about 2.6 times the instructions of the split and compare).
    """

    def __init__(self, name: str) -> None:
        self.name = name  # the template (the metric label of a 405)
        parts = name.split("/")
        for part in parts:
            if "{" in part and _PARAM_SEGMENT.fullmatch(part) is None:
                raise ValueError(f"{name}: a {{param}} must be a whole path segment")
        self.segments = len(parts)  # a matching path has as many
        # (index, text) of the literal segments, the last first: it tells routes apart.
        self.literals = tuple((i, p) for i, p in reversed(list(enumerate(parts))) if p[:1] != "{")
        # (index, name) of the {name} segments, each matching one non-empty segment.
        self.params = tuple((i, p[1:-1]) for i, p in enumerate(parts) if p[:1] == "{")
        # Its only {param} is {queue}: dispatch hands it over in req.queue, no dict made.
        self.queue_only = [p for _, p in self.params] == ["queue"]
        # method -> (handler, label, counts by status, access: (right, queue, bit) or None)
        self.handlers: dict[str, Entry] = {}

    def match(self, segments: list[str]) -> dict[str, str] | None:
        """The path parameters if the path, split at ``/``, matches the template; else None."""
        if len(segments) != self.segments:
            return None
        for i, text in self.literals:
            if segments[i] != text:
                return None
        found = {}
        for i, name in self.params:
            value = segments[i]
            if not value:
                return None
            found[name] = value
        return found


# Router._deeper's entries: (prefix, its length, [(Route, the Route of what follows the first
# {param})]), the prefix as latin-1 bytes (wonderq.pathscan compares it with a path's).
DeeperEntry = tuple[bytes, int, list[tuple["Route", "Route"]]]


def _head(route: Route) -> str:
    """The literal beginning of a route with {params}, through the ``/`` before its first
    one: ``/v1/queues/`` of ``/v1/queues/{queue}/messages``."""
    return "/".join(route.name.split("/")[: route.params[0][0]]) + "/"


def _fast_index(routes: list[Route]) -> tuple[PathIndex, tuple[Route, ...], list[DeeperEntry]]:
    """Router's lookup by literal parts for ``routes``: each route whose paths no other route
    can match, by its literal prefix (through the ``/`` before its first {param}) and what
    follows that {param}. The routes with one {param} go into a PathIndex by prefix and
    literal rest (``"/messages"``, ``""``), with the tuple of those routes in its order; the
    others by prefix, with the rest of the template as a Route."""
    singles: list[tuple[bytes, bytes]] = []
    single_routes: list[Route] = []
    deeper: dict[str, list[tuple[Route, Route]]] = {}
    for route in routes:
        if any(other is not route and _overlap(route.name, other.name) for other in routes):
            continue
        if not route.name.isascii():
            continue  # walked: a path's latin-1 bytes are not its UTF-8
        prefix = _head(route)
        rest = "".join("/" + part for part in route.name.split("/")[route.params[0][0] + 1 :])
        if len(route.params) == 1:
            singles.append((prefix.encode("latin-1"), rest.encode("latin-1")))
            single_routes.append(route)
        else:
            deeper.setdefault(prefix, []).append((route, Route(rest)))
    return (
        PathIndex(singles),
        tuple(single_routes),
        [(prefix.encode("latin-1"), len(prefix), tails) for prefix, tails in deeper.items()],
    )


def _overlap(a: str, b: str) -> bool:
    """Whether one path could match both templates (segment by segment)."""
    pa, pb = a.split("/"), b.split("/")
    if len(pa) != len(pb):
        return False
    # Two literal segments that differ tell the templates' paths apart.
    return all(x == y or x[:1] == "{" or y[:1] == "{" for x, y in zip(pa, pb, strict=True))


class MethodNotAllowed(ApiError):
    """405 with the ``Allow`` header (RFC 9110 section 15.5.6)."""

    def __init__(self, method: str, route: Route) -> None:
        methods = sorted(route.handlers)
        super().__init__(
            405,
            "method_not_allowed",
            f"{method} is not allowed on {route.name}; use {' or '.join(methods)}",
            b"Allow: " + ", ".join(methods).encode() + b"\r\n",
        )


_FROM_PATH = "{queue}"  # an access's queue taken from the {queue} path segment


def _access(spec: str | None) -> tuple[str, Any, int] | None:
    """``"publish:{queue}"`` -> ``("publish", "{queue}", RIGHT_BITS["publish"])``;
    ``"metrics"`` -> ``("metrics", None, RIGHT_BITS["metrics"])``."""
    if spec is None:
        return None
    right, _, queue = spec.partition(":")
    if right not in RIGHT_BITS:
        raise ValueError(f"unknown right {right!r}")
    if not queue:
        return right, None, RIGHT_BITS[right]
    # _authorize tells {queue} by identity, and keeps its last decision by the queue's
    # identity: one object for each name, whatever route it came from.
    return right, (_FROM_PATH if queue == _FROM_PATH else sys.intern(queue)), RIGHT_BITS[right]


def _accept_none(req: Request) -> bool:
    return False


class Router:
    """The route table, the dispatch, and the request counts.

    ``on_cancel(req)`` is told when the connection of a deferred request closed (the long
    polls drop its waiter: it leases nothing).
    """

    def __init__(self, on_cancel: Callable[[Request], None] | None = None) -> None:
        self.static: dict[str, dict[str, Entry]] = {}
        self.dynamic: list[Route] = []
        # Routes whose paths no other route's can match, by their literal parts (see
        # _fast_index and match()): those of one {param} in a PathIndex, with the tuple of
        # those routes in its order, and the others by prefix.
        self._singles, self._single_routes, self._deeper = _fast_index([])
        self._matched: Route | None = None  # the route _match_params found last
        self._routes: dict[str, Route] = {}  # template -> Route
        self._on_cancel = on_cancel
        # (route label, status) -> responses not counted by a route's own list (404, 405,
        # deferred answers, the protocol's errors); see request_counts().
        self._other_counts: dict[tuple[str, int], int] = {}
        # The static path dispatched last and its methods: consecutive requests (a
        # connection's publishes, a consumer's receives and deletes) usually share it, and
        # comparing the new path string is cheaper than hashing it.
        self._last_path: str | None = None
        self._last_methods: dict[str, Entry] = {}
        # The same for the last path with one {param} (a producer publishing to one queue, a
        # consumer receiving from one; paths with a message id are not kept, they seldom
        # come twice): its route and its parameters, one dict shared by the requests of that
        # path (no handler changes req.params).
        self._last_dyn_path: str | None = None
        self._last_dyn_route: Route | None = None
        self._last_dyn_params: dict[str, str] | None = None
        self._last_dyn_queue: str | None = None
        self.authorizer: Any = None  # wonderq.auth.Authorizer with --auth-file
        # See hint_queues: (target prefixes, the store's names) for the protocol, or None.
        self.queue_hint: tuple[tuple[bytes, ...], QueueNames] | None = None
        self._names: QueueNames | None = None  # the store's table of queue names, or None
        # Its decision cache (Authorizer.allowed), read by _authorize, and whose it is.
        self._allowed: dict[Any, dict[str | None, int]] = {}
        self._allowed_of: Any = None
        self._ok_header: Any = None
        self._ok_queue: Any = None
        self._ok_queues: dict[str | None, int] | None = None
        self._ok_mask = 0
        self._fallback: dict[str, Entry] | None = None  # see set_fallback
        self._fallback_accepts: Callable[[Request], Any] = _accept_none
        # See read_bodies_into: the store's body_block, and the handlers whose bodies go there.
        self._new_block: Callable[[int], Any] | None = None
        self._block_handlers: set[Handler] = set()

    def set_fallback(
        self,
        handler: Handler,
        label: str,
        methods: tuple[str, ...],
        accepts: Callable[[Request], Any],
    ) -> None:
        """Send what no route matches to ``handler`` when ``accepts(req)`` says it is its
        own (the SQS face: queue URL paths ``/<account>/<queue>``); anything else stays a
        404."""
        counts = [0] * 600
        self._fallback = {m: (handler, f"{m} {label}", counts, None) for m in methods}
        self._fallback_accepts = accepts

    def add(self, method: str, template: str, handler: Handler, access: str | None = None) -> None:
        """Route ``method template`` to ``handler``; ``access`` is ``"<right>:<queue>"``
        (``<queue>`` a name or ``{queue}``), ``"<right>"`` for a server-wide right, or None
        for a route the router does not check."""
        route = self._routes.get(template)
        if route is None:
            route = self._routes[template] = Route(template)
            if route.params:
                self.dynamic.append(route)
                self._singles, self._single_routes, self._deeper = _fast_index(self.dynamic)
            else:
                self.static[template] = route.handlers
        if method in route.handlers:
            raise ValueError(f"{method} {template} is routed twice")
        route.handlers[method] = (handler, f"{method} {template}", [0] * 600, _access(access))

    def match(self, path: str) -> tuple[Route | None, dict[str, str] | None]:
        """The route of ``path`` and its path parameters, or ``(None, None)``.

        A route is found by the literal prefix before its first ``{param}`` and by what
        follows that segment: a dict lookup for routes with one ``{param}``, the rest split
        at ``/`` for the others (bench/instructions.py q_send: splitting the whole path and
        walking the routes was ~3,000 instructions of a ~17,500 publish). Routes whose paths
        another's could match are walked in order, segment by segment."""
        if path in self.static:
            return self._routes[path], None
        found = self._match_params(path)
        route = self._matched
        if isinstance(found, str):
            return route, {route.params[0][1]: found}  # type: ignore[union-attr]
        return route, found

    def _match_params(self, path: str) -> dict[str, str] | str | None:
        """match() for a path that is not a static route's (dispatch looked it up): the path
        parameters, or the segment alone (a str) for a route of one {param}, and the route in
        ``_matched`` (None when none matches; no tuple made per request)."""
        # The prefix, a non-empty segment up to the next "/", then a route's literal rest: in
        # C (wonderq.pathscan.PathIndex; bench/instructions.py spread100k).
        i = self._singles.find(path)
        if i >= 0:
            route = self._single_routes[i]
            self._matched = route
            n = self._singles.start
            end = self._singles.end
            if route.queue_only and self._names is not None:
                # The store's own str for the name: no str made, and its lookup is the
                # str's identity (Store.queue_names).
                name = self._names.known_name(path, n, end)
                if name is not None:
                    # Valid by the engine's own rule: param_queue need not check.
                    known_queue(name)
                    return name
            return path[n:end]
        for prefix, n, deeper in self._deeper:
            end = segment_after(path, prefix)
            if end > 0:
                segments = path[end:].split("/")
                for route, tail in deeper:
                    params = tail.match(segments)
                    if params is not None:
                        params[route.params[0][1]] = path[n:end]
                        self._matched = route
                        return params
        walked, params = self.walk(path)
        self._matched = walked
        return params

    def walk(self, path: str) -> tuple[Route | None, dict[str, str] | None]:
        """The general way for a path that is not a static route's: split at ``/``, try
        every route with {params} in the order added."""
        segments = path.split("/")
        for route in self.dynamic:
            params = route.match(segments)
            if params is not None:
                return route, params
        return None, None

    def read_bodies_into(self, new_block: Callable[[int], Any], handlers: list[Handler]) -> None:
        """Have the big body of a POST routed to one of ``handlers`` read into
        ``new_block(size)`` (the store's Store.body_block: a block the engine takes as its
        message) rather than into a bytes object; see body_block."""
        self._new_block = new_block
        self._block_handlers = set(handlers)

    def hint_queues(self, names: QueueNames) -> None:
        """Use the store's table of queue names (Store.queue_names) for the routes whose
        first ``{param}`` is ``{queue}``, added so far:

        * the protocol names a request's queue to it as soon as the target arrives, before
          the head and body are parsed: ``queue_hint`` becomes ``(prefixes, names)``, the
          literal beginnings of those routes (``/v1/queues/``), and the protocol calls
          ``names.prefetch_name(target, len(prefix))`` for a target that begins with one;
        * a route whose only ``{param}`` is ``{queue}`` gets ``names.known_name(path,
          start, end)``, the store's own str for that name, rather than a new str; a
          segment it does not know (no such queue, percent-encoded) is a new str as before.
        """
        prefixes = []
        for route in self.dynamic:
            prefix = _head(route).encode()
            if route.params[0][1] == "queue" and prefix not in prefixes:
                prefixes.append(prefix)
        self.queue_hint = (tuple(prefixes), names) if prefixes else None
        self._names = names

    # ---- the protocol's application interface ----------------------------------------------

    def body_block(self, method: bytes, url: bytes, size: int) -> Any:
        """Where the protocol reads the big body (``size`` bytes, still arriving) of a request
        for ``method url``: a block of the store when the route publishes it as it is (see
        read_bodies_into and wonderq.bodyread), else None (a bytes object)."""
        if self._new_block is None or method != b"POST" or url[:1] != b"/":
            return None
        route, _ = self.match(url.partition(b"?")[0].decode("latin-1"))
        if route is None:
            return None
        entry = route.handlers.get("POST")
        if entry is None or entry[0] not in self._block_handlers:
            return None
        return self._new_block(size)

    def dispatch(self, req: Request) -> Response | None:
        """Route ``req``, run its handler, map errors; None when the answer comes later."""
        path = req.path
        methods: dict[str, Entry] | None
        if path == self._last_path:
            methods = self._last_methods
        else:
            methods = self.static.get(path)
            if methods is None:
                if path == self._last_dyn_path:
                    route = self._last_dyn_route
                    req.params = self._last_dyn_params
                    req.queue = self._last_dyn_queue
                else:
                    found: dict[str, str] | str | None
                    # No memory of the paths a spread of queues sends: a dict of them (it
                    # was one, 16,384 paths) misses in the cache as the engine's lookup does,
                    # and the two misses overlap, so the match, which touches nothing cold,
                    # costs less (bench/RESULTS.md, "But removing both lookups does").
                    found = self._match_params(path)
                    route = self._matched
                    if isinstance(found, str):  # one {param}: its segment
                        if route.queue_only:  # type: ignore[union-attr]
                            req.queue = found  # no dict to make (spread10k: -300 instructions)
                        else:
                            req.params = {route.params[0][1]: found}  # type: ignore[union-attr]
                    else:
                        req.params = found
                    if route is not None and len(route.params) == 1:
                        self._last_dyn_path = path
                        self._last_dyn_route = route
                        self._last_dyn_params = req.params
                        self._last_dyn_queue = req.queue
                if route is None:
                    if self._fallback is None or not self._fallback_accepts(req):
                        return self._not_found(req)
                    methods = self._fallback
                else:
                    methods = route.handlers
            else:
                self._last_path = path
                self._last_methods = methods
        entry = methods.get(req.method)
        if entry is None:
            return self._not_allowed(req)
        try:
            if self.authorizer is not None and entry[3] is not None:
                self._authorize(req, entry[3])
            response = entry[0](req)
        except Exception as exc:
            response = answer_error(exc, f"{req.method} {req.path}")
        if response is None:
            req.route = entry[1]
            return None
        status = response[0]
        entry[2][status] += 1
        return response

    def set_cancel(self, on_cancel: Callable[[Request], None]) -> None:
        """Who is told when the connection of a deferred request closed."""
        self._on_cancel = on_cancel

    def _authorize(self, req: Request, access: tuple[str, Any, int]) -> None:
        """Raise the 401/403 of access control unless the request's token may do ``access``
        (a right, the queue it applies to, the right's bit). The usual case is two dict
        lookups in the authorizer's decision cache (the header's bytes, then the queue) and
        a bit test, all C calls when compiled; anything else asks ``check_bearer``, which
        verifies the token (SHA-256, then ``hmac.compare_digest``) and fills the cache.

        Before those lookups, the last allowed decision: the same header object (connections
        sharing a token share one, see wonderq.headscan) on the same queue object reuses its
        mask while the header's per-queue dict is not empty. The Authorizer empties every
        per-queue dict it drops (reload, eviction), so a stale decision is never reused."""
        right, queue, bit = access
        if queue is _FROM_PATH:
            queue = param_queue(req)  # a bad name is a 400 before any 403
        authorizer = self.authorizer
        if authorizer is not self._allowed_of:
            # Authorizer.reload clears its dict in place, so one reference stays valid; the
            # last decision was another authorizer's.
            self._allowed = authorizer.allowed
            self._allowed_of = authorizer
            self._ok_queues = None
        header = req.authorization
        if header is self._ok_header and queue is self._ok_queue and self._ok_queues:
            bits = self._ok_mask
            if bits & bit:
                return
        if header is not None:
            per_queue = self._allowed.get(header)
            if per_queue is not None:
                mask = per_queue.get(queue)
                if mask is not None:
                    bits = mask  # a C integer when compiled: the test makes no int object
                    if bits & bit:
                        self._ok_header = header
                        self._ok_queue = queue
                        self._ok_queues = per_queue
                        self._ok_mask = bits
                        return
        authorizer.check_bearer(header, right, queue, req.conn.peer)

    def cancel(self, req: Request) -> None:
        """The connection of a deferred request closed."""
        if self._on_cancel is not None:
            self._on_cancel(req)

    def count(self, route: str, status: int) -> None:
        """Count one response under the route label ``route`` (``-``: no route)."""
        key = (route, status)
        self._other_counts[key] = self._other_counts.get(key, 0) + 1

    # ---- for the faces and the metrics ------------------------------------------------------

    def answer(self, req: Request, response: Response) -> None:
        """Answer a deferred request (counted under the route it was dispatched to)."""
        self.count(req.route, response[0])
        req.conn.complete(req, response)

    def request_counts(self) -> dict[tuple[str, int], int]:
        """Responses so far by (route label, status), for the metrics."""
        counts = dict(self._other_counts)
        for route in self._routes.values():
            for _, label, by_status, _ in route.handlers.values():
                for status, n in enumerate(by_status):
                    if n:
                        counts[(label, status)] = counts.get((label, status), 0) + n
        return counts

    def _not_found(self, req: Request) -> Response:
        self.count("-", 404)
        path = req.path if len(req.path) <= 200 else req.path[:200] + "..."
        return error_response(404, "not_found", f"no route for {req.method} {path}")

    def _not_allowed(self, req: Request) -> Response:
        route, _ = self.match(req.path)
        if route is None:  # a method the fallback does not take
            return self._not_found(req)
        self.count(route.name, 405)
        return answer_error(MethodNotAllowed(req.method, route), "")
