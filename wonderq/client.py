"""A small synchronous WonderQ client over the standard library's ``http.client``.

One persistent (keep-alive) connection per :class:`Client`; not thread-safe (use one client
per thread). Every failure raises :class:`WonderQError`: an error answered by the server
carries its HTTP status and ``code``; a transport failure has ``status`` 0 and ``code``
``connection_error`` (or ``timeout``).

A keep-alive connection that the server closed while it was idle is only noticed on the next
request. Calls that cannot change messages (health, metrics, queue info, list, put, delete
queue) then reconnect once and retry. Calls that change messages (publish, receive, delete,
ack, lease, purge) are never retried: the request may have been carried out before the
connection dropped, and a retry could publish twice, lease more messages, or report a
successful ack as ``False``.

Example::

    with Client("http://127.0.0.1:8080") as wq:
        wq.put_queue("jobs", visibility_timeout=60)
        wq.publish("resize image 42", queue="jobs")
        for msg in wq.receive(cid=7, limit=10, queue="jobs", wait=20):
            ...
            wq.delete(7, msg.id, queue="jobs")
"""

from __future__ import annotations

import http.client
import json
import math
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import TracebackType
from typing import Any, TypeAlias
from urllib.parse import quote, urlencode, urlsplit

__all__ = ["Client", "Message", "WonderQError"]

Seconds: TypeAlias = int | float | Decimal | str
"""A duration in seconds: a number, or a decimal string sent as is (``"0.25"``)."""

# Errors that mean the connection is unusable (closed by the peer, reset, refused).
_CONNECTION_ERRORS = (http.client.HTTPException, ConnectionError, OSError)


class WonderQError(Exception):
    """An error answered by the server, or a transport failure.

    ``status`` is the HTTP status (0 for a transport failure), ``code`` the server's
    snake_case error code (``queue_not_found``, ``memory_limit``, ...; ``connection_error``
    or ``timeout`` for a transport failure), ``message`` its human sentence.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Message:
    """A leased message: its id, its body, and how many times it has been received."""

    id: int
    body: str
    receives: int


def format_seconds(value: Seconds) -> str:
    """Write a duration the way the server reads it: a plain decimal, no exponent.

    The server rounds up to whole milliseconds and refuses (400) anything out of range, so
    no clamping happens here; a negative or non-finite number is sent as is and refused.
    """
    if isinstance(value, bool):
        raise TypeError("a duration in seconds must be a number, not a bool")
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    # repr() gives the shortest string that round-trips; Decimal writes it without exponent.
    dec = Decimal(repr(value)) if isinstance(value, float) else value
    text = format(dec, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


class Client:
    """A keep-alive connection to one WonderQ server.

    ``base_url`` is ``http://host:port`` (``https://`` works too), optionally with a path
    prefix. ``timeout`` is the socket timeout in seconds for connecting and for each
    answer; a long poll's ``wait`` is added to it.

    ``queue=None`` in a message call means the queue ``default``, through the seed routes
    where there is one (``POST /v1/publish``, ``GET`` and ``DELETE /v1/consumer``).
    """

    def __init__(self, base_url: str = "http://127.0.0.1:8080", timeout: float = 30.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be http://host[:port], got {base_url!r}")
        self.base_url = base_url
        self.timeout = timeout
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        self._conn: http.client.HTTPConnection | None = None
        # True once the current connection has carried a full exchange: only then can a
        # failure be the server having closed an idle keep-alive connection.
        self._reused = False

    # ---- lifecycle ------------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection (a later call opens a new one)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._reused = False

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---- messages -------------------------------------------------------------------------
    def publish(
        self, body: str | bytes, queue: str | None = None, delay: Seconds | None = None
    ) -> int:
        """Publish one message; returns its id. ``delay`` keeps it invisible that long
        (default: the queue's ``delay``)."""
        data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        path = "/v1/publish" if queue is None else f"{_queue_path(queue)}/messages"
        query = {} if delay is None else {"delay": format_seconds(delay)}
        result = self._call(
            "POST", path, query, data, "text/plain; charset=utf-8", idempotent=False
        )
        return int(result["id"])

    def publish_batch(
        self, entries: Iterable[str | Mapping[str, Any]], queue: str | None = None
    ) -> list[int]:
        """Publish many messages, all or nothing; returns their ids in input order.

        Each entry is a body (``str``) or a mapping ``{"body": str, "delay": seconds}``; an
        entry's delay overrides the queue's.
        """
        payload: list[str | dict[str, Any]] = []
        for entry in entries:
            if isinstance(entry, str):
                payload.append(entry)
            else:
                item = dict(entry)
                if isinstance(item.get("delay"), Decimal):
                    item["delay"] = float(item["delay"])
                payload.append(item)
        path = f"{_queue_path(queue)}/batch"
        result = self._call("POST", path, {}, _json_bytes(payload), _JSON, idempotent=False)
        return [int(i) for i in result["ids"]]

    def receive(
        self,
        cid: int,
        limit: int = 1,
        queue: str | None = None,
        wait: Seconds | None = None,
        visibility: Seconds | None = None,
    ) -> list[Message]:
        """Lease up to ``limit`` available messages to consumer ``cid``, lowest ids first.

        ``wait`` (seconds, up to 20) long-polls: the call returns as soon as a message is
        available, or with ``[]`` when the wait ends. ``visibility`` is the lease duration
        (default: the queue's ``visibility_timeout``).
        """
        query: dict[str, str] = {"cid": str(cid), "limit": str(limit)}
        if wait is not None:
            query["wait"] = format_seconds(wait)
        if visibility is not None:
            query["visibility"] = format_seconds(visibility)
        path = "/v1/consumer" if queue is None else f"{_queue_path(queue)}/messages"
        extra = _wait_seconds(wait)
        result = self._call("GET", path, query, None, None, idempotent=False, extra=extra)
        return [
            Message(int(m["id"]), str(m["body"]), int(m["receives"])) for m in result["messages"]
        ]

    def delete(self, cid: int, id: int, queue: str | None = None) -> bool:
        """Ack: delete message ``id`` if it is leased to ``cid`` and the lease has not run
        out. ``True`` if deleted; ``False`` otherwise (nothing changes)."""
        if queue is None:
            path, query = "/v1/consumer", {"cid": str(cid), "id": str(id)}
        else:
            path, query = f"{_queue_path(queue)}/messages/{id}", {"cid": str(cid)}
        return bool(self._call("DELETE", path, query, None, None, idempotent=False))

    def ack_batch(
        self, cid: int, ids: Iterable[int], queue: str | None = None
    ) -> tuple[list[int], list[int]]:
        """Delete many messages by the rule of :meth:`delete`; returns ``(deleted, failed)``,
        each in input order."""
        body = _json_bytes({"cid": cid, "ids": list(ids)})
        result = self._call("POST", f"{_queue_path(queue)}/ack", {}, body, _JSON, idempotent=False)
        return [int(i) for i in result["deleted"]], [int(i) for i in result["failed"]]

    def extend(self, cid: int, id: int, timeout: Seconds, queue: str | None = None) -> bool:
        """Set the lease of message ``id`` (held by ``cid``) to end ``timeout`` seconds from
        now; ``0`` releases it. Same answer as :meth:`delete`."""
        path = f"{_queue_path(queue)}/messages/{id}/lease"
        query = {"cid": str(cid), "timeout": format_seconds(timeout)}
        return bool(self._call("POST", path, query, None, None, idempotent=False))

    def release(self, cid: int, id: int, queue: str | None = None) -> bool:
        """Give message ``id`` back at once (lease timeout 0): it is available again, its
        receive count kept (or it moves to the dead-letter queue at ``max_receives``)."""
        return self.extend(cid, id, 0, queue)

    # ---- queues ---------------------------------------------------------------------------
    def put_queue(self, name: str, **attributes: Any) -> dict[str, Any]:
        """Create queue ``name`` or update its attributes; returns the queue info.

        Attributes: ``visibility_timeout`` and ``delay`` (seconds), ``max_receives`` (int or
        ``None``), ``dead_letter_queue`` (name or ``None``), ``max_message_bytes`` (int).
        Only the given ones are sent; ``None`` is sent as JSON ``null`` (it unsets).
        """
        for key, value in attributes.items():
            if isinstance(value, Decimal):
                attributes[key] = float(value)
        body = _json_bytes(attributes)
        result = self._call("PUT", _queue_path(name), {}, body, _JSON, idempotent=True)
        return dict(result)

    create_queue = put_queue

    def get_queue(self, name: str) -> dict[str, Any]:
        """The queue's info: ``name``, ``attributes``, ``counts`` and ``totals``."""
        return dict(self._call("GET", _queue_path(name), {}, None, None, idempotent=True))

    def list_queues(self) -> list[dict[str, Any]]:
        """Every queue's info, sorted by name."""
        result = self._call("GET", "/v1/queues", {}, None, None, idempotent=True)
        return [dict(q) for q in result["queues"]]

    def delete_queue(self, name: str) -> None:
        """Delete the queue and all its messages."""
        self._call("DELETE", _queue_path(name), {}, None, None, idempotent=True)

    def purge(self, name: str) -> int:
        """Drop every message of the queue; returns how many."""
        result = self._call("POST", f"{_queue_path(name)}/purge", {}, None, None, idempotent=False)
        return int(result["purged"])

    # ---- operations -----------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """``GET /healthz``: ``{"status": "ok"}`` while the server is up."""
        return dict(self._call("GET", "/healthz", {}, None, None, idempotent=True))

    def metrics(self) -> str:
        """``GET /metrics``: the Prometheus text."""
        return str(self._call("GET", "/metrics", {}, None, None, idempotent=True, raw=True))

    # ---- transport ------------------------------------------------------------------------
    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self.timeout)
            self._reused = False
        return self._conn

    def _call(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        body: bytes | None,
        content_type: str | None,
        *,
        idempotent: bool,
        extra: float = 0.0,
        raw: bool = False,
    ) -> Any:
        """Send one request and decode the answer; retry once on a stale keep-alive
        connection if ``idempotent``. ``extra`` seconds are added to the read timeout."""
        url = self._prefix + path
        if query:
            url += "?" + urlencode(query)
        headers = {"Accept": "application/json"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        if body is None and method in ("POST", "PUT"):
            body = b""  # http.client then sends Content-Length: 0
        for attempt in (1, 2):
            conn = self._connection()
            reused = self._reused
            try:
                status, data = self._exchange(conn, method, url, body, headers, extra)
            except TimeoutError as exc:
                self.close()
                raise WonderQError(0, "timeout", f"{method} {url}: no answer in time") from exc
            except _CONNECTION_ERRORS as exc:
                self.close()
                if attempt == 1 and reused and idempotent:
                    continue
                raise WonderQError(0, "connection_error", f"{method} {url}: {exc!r}") from exc
            return _decode(status, data, raw)
        raise AssertionError("unreachable")

    def _exchange(
        self,
        conn: http.client.HTTPConnection,
        method: str,
        url: str,
        body: bytes | None,
        headers: Mapping[str, str],
        extra: float,
    ) -> tuple[int, bytes]:
        read_timeout = self.timeout + extra
        if conn.sock is None:
            conn.connect()
        sock: socket.socket = conn.sock
        sock.settimeout(read_timeout)
        conn.request(method, url, body=body, headers=dict(headers))
        response = conn.getresponse()
        data = response.read()
        if response.will_close:
            self.close()
        else:
            self._reused = True
        return response.status, data


_JSON = "application/json"


def _queue_path(name: str | None) -> str:
    return "/v1/queues/" + quote("default" if name is None else name, safe="")


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _wait_seconds(wait: Seconds | None) -> float:
    if wait is None:
        return 0.0
    try:
        seconds = float(wait)
    except ValueError:
        return 0.0
    return seconds if math.isfinite(seconds) and seconds > 0 else 0.0


def _decode(status: int, data: bytes, raw: bool) -> Any:
    """The decoded body of a 2xx answer; WonderQError for anything else."""
    if status >= 400:
        try:
            err = json.loads(data)["error"]
            code, message = str(err["code"]), str(err["message"])
        except (ValueError, KeyError, TypeError):
            code, message = f"http_{status}", data.decode("utf-8", "replace")[:200]
        raise WonderQError(status, code, message)
    if status == 204 or not data:
        return None
    if raw:
        return data.decode("utf-8")
    try:
        return json.loads(data)
    except ValueError as exc:
        raise WonderQError(status, "bad_response", f"not JSON: {data[:200]!r}") from exc
