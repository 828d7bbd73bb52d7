"""The SQS section of the :class:`~wonderq.store.Store` interface on Redis (``send`` and
``receive_messages``; the lease-token methods are the store's own ``delete_token`` and
``change_lease_token``).

A message's SQS extras live apart from its body, in the queue's hash ``wq:{q}:x``, and only
where there are any, so a plain message costs what it did: field ``<id>`` holds the attribute
blob of a message sent with attributes, field ``<id>f`` the time of its first SQS receive.
The sent time is the publish time every stored body already starts with (Redis's clock,
epoch ms), so a message published through WonderQ's own API shows its publish time too.
Deletes, retention, purges and queue deletions drop the extras with the message; a
dead-letter move carries them in its outbox entry (scripts/take.lua, send.lua, prelude.lua).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .._core import MAX_DELAY_MS, MAX_VISIBILITY_MS
from ..deferred import Deferred
from ..store import SQS_CID
from .checks import _append_body, _BadBody, _check_int, _int_arg, _Refusal

if TYPE_CHECKING:
    from .store import RedisStore


def send(
    store: RedisStore, queue: str, body: bytes, delay_ms: int, attributes: bytes | None
) -> Deferred:
    """Store one message with its attribute blob (None or empty: none) -> id."""
    args: list[bytes] = []
    try:
        if not _int_arg(delay_ms, -1, MAX_DELAY_MS):
            raise _Refusal("invalid_delay", f"delay_ms must be an integer in -1..{MAX_DELAY_MS}")
        _append_body(args, delay_ms, body)
        if attributes is not None and not isinstance(attributes, (bytes, bytearray, memoryview)):
            raise _Refusal("invalid_attributes", "attributes must be bytes or None")
    except _Refusal as refusal:
        return store._refuse(queue, refusal)
    except _BadBody:
        return store._check_bodies(queue, "", [body], [delay_ms])
    if attributes:
        args.append(bytes(attributes))
    return store.script("send", queue, args, parse=lambda r: store._published(queue, int(r)))


def receive_messages(store: RedisStore, queue: str, limit: int, visibility_ms: int) -> Deferred:
    """Lease up to ``limit`` messages to ``SQS_CID`` -> rows ``(id, body bytes, receives,
    sent epoch ms, first-receive epoch ms, attribute blob or None)``."""
    try:
        _check_int(limit, 1, store.max_batch, "invalid_limit", "limit")
        _check_int(visibility_ms, -1, MAX_VISIBILITY_MS, "invalid_visibility", "visibility_ms")
    except _Refusal as refusal:
        return store._refuse(queue, refusal)
    args = [b"%d" % SQS_CID, b"%d" % limit, b"%d" % visibility_ms]
    return store.script("take", queue, args, parse=lambda r: _rows(store, queue, r))


def _rows(store: RedisStore, queue: str, reply: list[Any]) -> Any:
    flat, moves = reply
    rows: list[tuple[Any, ...]] = []
    if not flat:
        if store.subscriber is not None:
            store.subscriber.want(queue)  # long polls park after an empty receive
        return store._after_moves(queue, moves, rows)
    for i in range(0, len(flat), 5):
        msg_id, value, receives, first, blob = flat[i : i + 5]
        sent, _, escaped = value.partition(b"|")
        rows.append((int(msg_id), unescape(escaped), receives, int(sent), int(first), blob))
    return store._after_moves(queue, moves, rows)


def unescape(escaped: bytes) -> bytes:
    """A body as stored (JSON-escaped, without quotes) -> its bytes."""
    if b"\\" not in escaped:
        return escaped
    return json.loads(b'"' + escaped + b'"').encode()


def outbox_extras(parts: list[bytes]) -> list[bytes]:
    """The SQS extras of a split outbox entry (``dlq, token, body[, first, blob]``): the
    import script's last arguments."""
    return parts[3:5] if len(parts) == 5 else []
