# cython: language_level=3, annotation_typing=False
"""An HTTP request as the application sees it, and the split of a plain query string.

The connection (``wonderq.protocol``) makes a :class:`Request` of each complete message and
hands it to the application; the application answers with a :data:`Response`. Compiled with
Cython in pure-Python mode (``request.pxd``): the protocol fills the fields as C stores, and
the parameter checks call :func:`split_query` as a C call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .protocol import HttpProtocol

__all__ = ["Request", "Response", "split_query"]

#: ``(status, body, header_lines)``: header_lines are complete ``Name: value\r\n`` lines,
#: Content-Type included; the protocol adds the status line, Date, Server, Cache-Control,
#: Content-Length and Connection.
Response = tuple[int, bytes, bytes]


class Request:
    """One parsed request. ``conn`` answers it later when ``dispatch`` deferred it.

    ``path`` and ``query`` are the raw (not percent-decoded) parts of the target, as latin-1
    text. ``params`` and ``route`` are for the application (path parameters, the route's
    metric label), ``deferred`` holds its state while the request is parked; ``response`` is
    set only for an error the protocol found itself, answered in turn; ``echo_keep_alive``
    when the client sent ``Connection: keep-alive``. ``authorization`` is the
    ``Authorization`` header (bytes) or None (a field, not an added attribute: access control
    reads it on every request). ``if_none_match`` (bytes) exists only when the request carried
    that header (read it with ``getattr(req, "if_none_match", None)``). Other attributes may
    be added (compiled, the class keeps a ``__dict__`` for them, created only when one is
    set). ``headers`` is the
    list of ``(lowercase name, value)`` bytes pairs in arrival order, kept only for targets
    outside ``/v1/`` (the SQS face reads ``X-Amz-Target``, ``Content-Type`` and ``Host``; the
    native routes read none, so their hot path stores none), else None.
    """

    def __init__(
        self,
        method: str,
        path: str,
        query: str,
        body: bytes,
        keep_alive: bool,
        conn: HttpProtocol,
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.body = body
        self.keep_alive = keep_alive
        self.conn = conn
        self.params: dict[str, str] | None = None
        self.route = ""
        self.deferred: Any = None
        self.response: Response | None = None
        self.echo_keep_alive = False
        self.authorization: bytes | None = None
        self.headers: list[tuple[bytes, bytes]] | None = None

    @classmethod
    def failed(cls, conn: HttpProtocol, response: Response) -> Request:
        """A placeholder that answers ``response`` in its turn, then closes the connection."""
        req = cls("-", "-", "", b"", False, conn)
        req.response = response
        return req


def _origin_form(path: str) -> str:
    """The path of an absolute-form target (RFC 9112 section 3.2.2, which servers MUST
    accept): ``http://host:port/p`` -> ``/p``. Anything else (``*``) keeps a form no route
    matches, so it answers 404."""
    scheme, sep, rest = path.partition("://")
    if sep and scheme.lower() in ("http", "https"):
        slash = rest.find("/")
        return rest[slash:] if slash >= 0 else "/"
    return path


def split_query(query: str) -> dict[str, str] | None:
    """``{name: value}`` of a plain query string (``cid=7&limit=1``: nothing percent-encoded,
    no ``+``, no name twice), in one pass; None for any other, which the application parses
    its own way. A part without ``=`` is a name with an empty value; empty parts are skipped.
    Compiled, it takes about half the instructions of the split in Python."""
    if "%" in query or "+" in query:
        return None
    params: dict[str, str] = {}
    end = len(query)
    start = 0
    while start < end:
        stop = query.find("&", start)
        if stop < 0:
            stop = end
        if stop > start:
            eq = query.find("=", start, stop)
            if eq < 0:
                name = query[start:stop]
                value = ""
            else:
                name = query[start:eq]
                value = query[eq + 1 : stop]
            if name in params:
                return None
            params[name] = value
        start = stop + 1
    return params
