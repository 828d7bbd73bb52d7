"""The JSON documents of the batch-ack, purge and queue routes, built from a store's answers.

Cold paths (the hot answers are built in C by the engine: ``_core.id_json``,
``batch_ids_json``, ``Broker.receive_json``, ``Broker.ack_json``), so this module stays plain
Python; ``wonderq.api`` hands these functions to :meth:`~wonderq.api.Api.reply` as renderers.
"""

from __future__ import annotations

import json
from typing import Any

from .request import JSON_HEADERS, Response

__all__ = [
    "encode_json",
    "ids_json",
    "queue_info_json",
    "render_ack",
    "render_info",
    "render_list",
    "render_list_for",
    "render_purged",
    "seconds_json",
]


def render_ack(outcome: tuple[list[int], list[int]]) -> Response:
    deleted, failed = outcome
    return (
        200,
        b'{"deleted":[%s],"failed":[%s]}' % (ids_json(deleted), ids_json(failed)),
        JSON_HEADERS,
    )


def render_purged(purged: int) -> Response:
    return (200, b'{"purged":%d}' % purged, JSON_HEADERS)


def render_info(status: int, info: dict[str, Any]) -> Response:
    return (status, encode_json(queue_info_json(info)), JSON_HEADERS)


def render_list(page: tuple[list[dict[str, Any]], str | None]) -> Response:
    infos, next_name = page
    doc = {"queues": [queue_info_json(info) for info in infos], "next": next_name}
    return (200, encode_json(doc), JSON_HEADERS)


def render_list_for(principal: Any, page: tuple[list[dict[str, Any]], str | None]) -> Response:
    infos, next_name = page
    return render_list(([i for i in infos if principal.may_see(i["name"])], next_name))


def ids_json(ids: list[int]) -> bytes:
    """``ids`` as the items of a JSON array (``b"7,8,9"``). The batch routes' usual answers
    are built in C (``_core.batch_ids_json``, ``Broker.ack_json``); this serves the rest."""
    return ",".join(map(str, ids)).encode()


def seconds_json(ms: int) -> int | float:
    """Whole ms as JSON seconds: ``30`` for 30000, ``0.25`` for 250."""
    return ms // 1000 if ms % 1000 == 0 else ms / 1000


def queue_info_json(info: dict[str, Any]) -> dict[str, Any]:
    """A store's queue info as the API shows it: times in seconds, not ``*_ms``."""
    attributes = info["attributes"]
    return {
        "name": info["name"],
        "attributes": {
            "visibility_timeout": seconds_json(attributes["visibility_timeout_ms"]),
            "delay": seconds_json(attributes["delay_ms"]),
            "max_receives": attributes["max_receives"],
            "dead_letter_queue": attributes["dead_letter_queue"],
            "max_message_bytes": attributes["max_message_bytes"],
        },
        "counts": info["counts"],
        "totals": info["totals"],
    }


def encode_json(value: Any) -> bytes:
    """Compact JSON as the engine writes it (no spaces), for handlers that build bodies."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
