"""The SQS actions, written once for both protocols.

Each action is a generator method ``action_<Name>(ctx, params)``: it ``yield``\\ s every store
call and receives the store's answer (the driver in :class:`wonderq.sqs.SqsFace` resumes it
at once for an answer that is ready, or when a :class:`~wonderq.deferred.Deferred` resolves; a
store error is thrown into it). It returns the action's output object in the JSON shape, or
a :class:`Park` to long-poll. ``params`` is the action's input object (the JSON shape; the
query protocol's flat parameters are converted to it first).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from .._core import EngineError, QueueNotFound
from ..limits import QUEUE_NAME
from .attributes import (
    BOUNDS,
    META_STRINGS,
    READABLE,
    Selector,
    apply_queue_attributes,
    bad_character,
    check_int,
    message_attributes_out,
    parse_message_attributes,
    selector,
)
from .errors import SqsError, error, invalid, no_such_queue
from .md5 import md5_hex, md5_of_segments

if TYPE_CHECKING:
    from ..request import Request
    from ..store import Store
    from .handles import ReceiptHandles

__all__ = ["MAX_BATCH", "MAX_MESSAGE_BYTES", "Actions", "Context", "Park"]

#: SQS's limits on this face, whatever WonderQ's own routes allow.
MAX_BATCH = 10
MAX_MESSAGE_BYTES = 1_048_576  # a message (body + attributes) and a whole batch
MAX_RECEIVE = 10
MAX_WAIT_S = 20
MAX_VISIBILITY_S = 43_200
MAX_DELAY_S = 900
MAX_TAGS = 50
META_BYTES = 65_536

_ENTRY_ID = re.compile(r"[A-Za-z0-9_-]{1,80}")
_SYSTEM_NAMES = (
    "SenderId",
    "SentTimestamp",
    "ApproximateReceiveCount",
    "ApproximateFirstReceiveTimestamp",
)
_KNOWN_SYSTEM = frozenset(
    (
        *_SYSTEM_NAMES,
        "All",
        "SequenceNumber",
        "MessageDeduplicationId",
        "MessageGroupId",
        "AWSTraceHeader",
        "DeadLetterQueueSourceArn",
    )
)

Steps = Generator[Any, Any, Any]


class Context:
    """One SQS request as the actions see it."""

    __slots__ = ("action", "base_url", "headers", "json", "path_queue", "req", "request_id")

    def __init__(
        self,
        req: Request,
        json_protocol: bool,
        action: str,
        request_id: bytes,
        headers: dict[bytes, bytes],
        path_queue: str,
    ) -> None:
        self.req = req
        self.json = json_protocol
        self.action = action
        self.request_id = request_id
        self.headers = headers  # by lowercase name
        self.path_queue = path_queue  # the queue of a /<account>/<queue> path, else ""
        # scheme://host[:port] of QueueUrls (no trailing slash): --sqs-base-url, else worked
        # out from the headers when an action first needs it (see base()).
        self.base_url: str | None = None

    def base(self) -> str:
        """The base of QueueUrls: the configured one, else the request's ``Host`` (or a
        proxy's ``X-Forwarded-Host``/``-Proto``), so the URL works for this client."""
        if self.base_url is None:
            headers = self.headers
            host = headers.get(b"x-forwarded-host") or headers.get(b"host") or b"localhost"
            proto = headers.get(b"x-forwarded-proto") or b"http"
            host_text = host.decode("latin-1").split(",")[0].strip()
            self.base_url = f"{proto.decode('latin-1').split(',')[0].strip()}://{host_text}"
        return self.base_url


class Park:
    """An action's request to long-poll: the face parks it until ``attempt()`` answers or
    ``wait_ms`` passes (then ``empty`` is the answer)."""

    __slots__ = ("attempt", "empty", "queue", "wait_ms")

    def __init__(self, queue: str, attempt: Any, empty: dict[str, Any], wait_ms: int) -> None:
        self.queue = queue
        self.attempt = attempt
        self.empty = empty
        self.wait_ms = wait_ms


def _str_list(params: dict[str, Any], name: str) -> list[str]:
    value = params.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise error("InvalidParameterValue", f"{name} must be a list of strings.")
    return value


def _string(params: dict[str, Any], name: str, required: bool = True) -> str | None:
    value = params.get(name)
    if value is None or (value == "" and required):
        if required:
            raise error("MissingParameter", f"The request must contain the parameter {name}.")
        return None
    if not isinstance(value, str):
        raise error("InvalidParameterValue", f"{name} must be a string.")
    return value


def _epoch_s() -> int:
    return int(time.time())


def _token(after: str) -> str:
    return base64.urlsafe_b64encode(after.encode()).decode("ascii")


def _after(token: Any) -> str:
    if token is None or token == "":
        return ""
    try:
        name = base64.urlsafe_b64decode(str(token).encode("ascii")).decode()
    except (binascii.Error, ValueError, UnicodeError):
        name = ""
    if QUEUE_NAME.fullmatch(name) is None:
        raise error("InvalidParameterValue", "Invalid NextToken value.")
    return name


class Actions:
    """The actions; mixed into :class:`wonderq.sqs.SqsFace`, which provides the fields."""

    store: Store
    handles: ReceiptHandles
    account: str
    region: str
    started_s: int
    _wait_cache: dict[str, int]
    longpoll: Any  # the server's LongPoll

    # ---- names and URLs -----------------------------------------------------------------------
    def queue_url(self, ctx: Context, name: str) -> str:
        return f"{ctx.base()}/{self.account}/{name}"

    def queue_arn(self, name: str) -> str:
        return f"arn:aws:sqs:{self.region}:{self.account}:{name}"

    def queue_of(self, ctx: Context, params: dict[str, Any]) -> str:
        """The queue a request names: its ``QueueUrl`` (a URL of any host and account, or a
        bare name), else the queue of its ``/<account>/<queue>`` path."""
        url = params.get("QueueUrl")
        if url is None or url == "":
            if ctx.path_queue:
                return ctx.path_queue
            raise error("MissingParameter", "The request must contain the parameter QueueUrl.")
        if not isinstance(url, str):
            raise error("InvalidParameterValue", "QueueUrl must be a string.")
        name = url.rstrip("/").rsplit("/", 1)[-1]
        if QUEUE_NAME.fullmatch(name) is None:
            raise no_such_queue()
        return name

    # ---- queue attributes ---------------------------------------------------------------------
    @staticmethod
    def meta_of(info: dict[str, Any]) -> dict[str, Any]:
        raw = info["attributes"].get("meta")
        if not raw:
            return {}
        try:
            meta = json.loads(raw)
        except ValueError:
            return {}
        return meta if isinstance(meta, dict) else {}

    def visible_attributes(self, info: dict[str, Any]) -> dict[str, str]:
        """Every attribute GetQueueAttributes can show, as SQS's strings."""
        attributes = info["attributes"]
        counts = info["counts"]
        meta = self.meta_of(info)
        name = info["name"]
        created = str(meta.get("CreatedTimestamp", self.started_s))
        out = {
            "VisibilityTimeout": str(-(-attributes["visibility_timeout_ms"] // 1000)),
            "MaximumMessageSize": str(attributes["max_message_bytes"]),
            "ApproximateNumberOfMessages": str(counts["ready"]),
            "ApproximateNumberOfMessagesNotVisible": str(counts["leased"]),
            "ApproximateNumberOfMessagesDelayed": str(counts["delayed"]),
            "CreatedTimestamp": created,
            "LastModifiedTimestamp": str(meta.get("LastModifiedTimestamp", created)),
            "QueueArn": self.queue_arn(name),
            "DelaySeconds": str(-(-attributes["delay_ms"] // 1000)),
            "ReceiveMessageWaitTimeSeconds": str(meta.get("ReceiveMessageWaitTimeSeconds", 0)),
        }
        retention_ms = attributes.get("retention_ms")
        if retention_ms is not None:
            out["MessageRetentionPeriod"] = str(-(-retention_ms // 1000))
        if attributes.get("max_receives") is not None and attributes.get("dead_letter_queue"):
            out["RedrivePolicy"] = json.dumps(
                {
                    "deadLetterTargetArn": self.queue_arn(attributes["dead_letter_queue"]),
                    "maxReceiveCount": attributes["max_receives"],
                },
                separators=(",", ":"),
            )
        for key in META_STRINGS:
            if key in meta:
                out[key] = str(meta[key])
        return {key: out[key] for key in READABLE if key in out}

    def _put(self, name: str, engine: dict[str, Any], meta: dict[str, Any]) -> Any:
        meta["LastModifiedTimestamp"] = _epoch_s()
        text = json.dumps(meta, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
        if len(text.encode()) > META_BYTES:
            raise error("OverLimit", "The queue's attributes and tags take more than 64 KiB.")
        engine["meta"] = text
        self._wait_cache.pop(name, None)
        return self.store.put_queue(name, engine)

    def _queue_info(self, name: str) -> Steps:
        try:
            info = yield self.store.queue_info(name)
        except QueueNotFound:
            raise no_such_queue() from None
        return info

    # ---- queues -------------------------------------------------------------------------------
    def action_CreateQueue(self, ctx: Context, params: dict[str, Any]) -> Steps:
        name = _string(params, "QueueName")
        assert name is not None
        if name.endswith(".fifo"):
            raise error(
                "InvalidParameterValue",
                "WonderQ serves standard queues only: FIFO queues (.fifo) are not supported.",
            )
        if QUEUE_NAME.fullmatch(name) is None:
            raise error(
                "InvalidParameterValue",
                "Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in "
                "length",
            )
        attributes = params.get("Attributes") or {}
        tags = params.get("tags") or params.get("Tags") or {}
        engine: dict[str, Any] = {}
        meta: dict[str, Any] = {}
        apply_queue_attributes(attributes, engine, meta, creating=True)
        _check_tags(tags)
        try:
            info = yield self.store.queue_info(name)
        except QueueNotFound:
            info = None
        if info is not None:
            current = self.visible_attributes(info)
            for key, value in attributes.items():
                if key == "FifoQueue":
                    continue
                if not _same(key, str(value), current.get(key)):
                    raise error(
                        "QueueNameExists",
                        f"A queue already exists with the same name and a different value for "
                        f"attribute {key}",
                    )
            return {"QueueUrl": self.queue_url(ctx, name)}
        target = engine.get("dead_letter_queue")
        if target is not None:
            yield from self._queue_info(target)
        now = _epoch_s()
        meta["CreatedTimestamp"] = now
        if tags:
            meta["tags"] = dict(tags)
        yield self._put(name, engine, meta)
        return {"QueueUrl": self.queue_url(ctx, name)}

    def action_GetQueueUrl(self, ctx: Context, params: dict[str, Any]) -> Steps:
        name = _string(params, "QueueName")
        assert name is not None
        if QUEUE_NAME.fullmatch(name) is None:
            raise no_such_queue()
        yield from self._queue_info(name)
        return {"QueueUrl": self.queue_url(ctx, name)}

    def action_ListQueues(self, ctx: Context, params: dict[str, Any]) -> Steps:
        prefix = _string(params, "QueueNamePrefix", required=False) or ""
        max_results = params.get("MaxResults")
        limit = check_int("MaxResults", max_results, 1, 1000, 1000)
        after = _after(params.get("NextToken"))
        infos, next_name = yield self.store.list_queues(prefix, after, limit)
        principal = getattr(ctx.req, "principal", None)  # with --auth-file: its queues only
        if principal is not None:
            infos = [info for info in infos if principal.may_see(info["name"])]
        result: dict[str, Any] = {}
        if infos:
            result["QueueUrls"] = [self.queue_url(ctx, info["name"]) for info in infos]
        if next_name is not None and max_results is not None:
            result["NextToken"] = _token(next_name)
        return result

    def action_DeleteQueue(self, ctx: Context, params: dict[str, Any]) -> Steps:
        name = self.queue_of(ctx, params)
        self._wait_cache.pop(name, None)
        try:
            yield self.store.delete_queue(name)
        except QueueNotFound:
            raise no_such_queue() from None
        self.longpoll.drop(name)  # its parked receives (both faces') answer empty at once
        return {}

    def action_PurgeQueue(self, ctx: Context, params: dict[str, Any]) -> Steps:
        name = self.queue_of(ctx, params)
        try:
            yield self.store.purge(name)
        except QueueNotFound:
            raise no_such_queue() from None
        return {}

    def action_GetQueueAttributes(self, ctx: Context, params: dict[str, Any]) -> Steps:
        name = self.queue_of(ctx, params)
        wanted = _str_list(params, "AttributeNames")
        info = yield from self._queue_info(name)
        visible = self.visible_attributes(info)
        for key in wanted:
            if key != "All" and key not in READABLE and key not in ("FifoQueue",):
                raise error("InvalidAttributeName", f"Unknown Attribute {key}.")
        if "All" in wanted:
            chosen = visible
        else:
            chosen = {key: visible[key] for key in wanted if key in visible}
        return {"Attributes": chosen} if chosen else {}

    def action_SetQueueAttributes(self, ctx: Context, params: dict[str, Any]) -> Steps:
        name = self.queue_of(ctx, params)
        attributes = params.get("Attributes")
        if attributes is None:
            raise error("MissingParameter", "The request must contain the parameter Attributes.")
        info = yield from self._queue_info(name)
        engine: dict[str, Any] = {}
        meta = self.meta_of(info)
        apply_queue_attributes(attributes, engine, meta, creating=False)
        target = engine.get("dead_letter_queue")
        if target is not None:
            if target == name:
                raise error(
                    "InvalidParameterValue",
                    "Value for parameter RedrivePolicy is invalid. Reason: a queue cannot be "
                    "its own dead-letter queue.",
                )
            yield from self._queue_info(target)
        yield self._put(name, engine, meta)
        return {}

    def action_TagQueue(self, ctx: Context, params: dict[str, Any]) -> Steps:
        name = self.queue_of(ctx, params)
        tags = params.get("Tags")
        if not tags:
            raise error("MissingParameter", "The request must contain the parameter Tags.")
        _check_tags(tags)
        info = yield from self._queue_info(name)
        meta = self.meta_of(info)
        merged = dict(meta.get("tags") or {})
        merged.update(tags)
        if len(merged) > MAX_TAGS:
            raise error("InvalidParameterValue", f"Too many tags: a queue has at most {MAX_TAGS}.")
        meta["tags"] = merged
        yield self._put(name, {}, meta)
        return {}

    def action_UntagQueue(self, ctx: Context, params: dict[str, Any]) -> Steps:
        name = self.queue_of(ctx, params)
        keys = _str_list(params, "TagKeys")
        if not keys:
            raise error("MissingParameter", "The request must contain the parameter TagKeys.")
        info = yield from self._queue_info(name)
        meta = self.meta_of(info)
        tags = dict(meta.get("tags") or {})
        for key in keys:
            tags.pop(key, None)
        meta["tags"] = tags
        yield self._put(name, {}, meta)
        return {}

    def action_ListQueueTags(self, ctx: Context, params: dict[str, Any]) -> Steps:
        name = self.queue_of(ctx, params)
        info = yield from self._queue_info(name)
        tags = self.meta_of(info).get("tags") or {}
        return {"Tags": tags} if tags else {}

    def action_ListDeadLetterSourceQueues(self, ctx: Context, params: dict[str, Any]) -> Steps:
        name = self.queue_of(ctx, params)
        yield from self._queue_info(name)
        max_results = params.get("MaxResults")
        limit = check_int("MaxResults", max_results, 1, 1000, 1000)
        after = _after(params.get("NextToken"))
        sources: list[str] = []
        next_name = None
        cursor = after
        while True:
            infos, more = yield self.store.list_queues("", cursor, 1000)
            for info in infos:
                if info["attributes"].get("dead_letter_queue") == name:
                    if len(sources) == limit:
                        next_name = sources[-1]
                        break
                    sources.append(info["name"])
            if next_name is not None or more is None:
                break
            cursor = more
        result: dict[str, Any] = {"queueUrls": [self.queue_url(ctx, q) for q in sources]}
        if next_name is not None and max_results is not None:
            result["NextToken"] = _token(next_name)
        return result

    # ---- messages -----------------------------------------------------------------------------
    def _message(self, entry: dict[str, Any], where: str) -> tuple[bytes, int, bytes | None, str]:
        """Body bytes, delay (ms, -1 = the queue's), attribute blob and MD5 of a message to
        send; raises SqsError."""
        body = entry.get("MessageBody")
        if body is None or body == "":
            raise error(
                "MissingParameter", f"The request must contain the parameter {where}MessageBody."
            )
        if not isinstance(body, str):
            raise error("InvalidParameterValue", f"{where}MessageBody must be a string.")
        if bad_character(body):
            raise error(
                "InvalidMessageContents",
                "Invalid characters found. Valid unicode characters are #x9 | #xA | #xD | "
                "#x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF",
            )
        data = body.encode()
        delay = entry.get("DelaySeconds")
        delay_ms = (
            -1 if delay is None else check_int("DelaySeconds", delay, 0, MAX_DELAY_S, 0) * 1000
        )
        blob, size = parse_message_attributes(entry.get("MessageAttributes"))
        system = entry.get("MessageSystemAttributes")
        if system:
            _check_system_attributes(system)
        if len(data) + size > MAX_MESSAGE_BYTES:
            raise error(
                "InvalidParameterValue",
                f"One or more parameters are invalid. Reason: Message must be shorter than "
                f"{MAX_MESSAGE_BYTES} bytes.",
            )
        return data, delay_ms, blob, md5_hex(data)

    def _sent(self, msg_id: int, body_md5: str, blob: bytes | None) -> dict[str, Any]:
        out = {"MD5OfMessageBody": body_md5, "MessageId": str(msg_id)}
        if blob:
            out["MD5OfMessageAttributes"] = md5_hex(blob)
        return out

    def action_SendMessage(self, ctx: Context, params: dict[str, Any]) -> Steps:
        queue = self.queue_of(ctx, params)
        data, delay_ms, blob, body_md5 = self._message(params, "")
        try:
            msg_id = yield self.store.send(queue, data, delay_ms, blob)
        except QueueNotFound:
            raise no_such_queue() from None
        return self._sent(msg_id, body_md5, blob)

    def _entries(self, params: dict[str, Any], what: str) -> list[dict[str, Any]]:
        entries = params.get("Entries")
        if not entries:
            raise error(
                "EmptyBatchRequest",
                f"There should be at least one {what}RequestEntry in the request.",
            )
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise error("InvalidParameterValue", "Entries must be a list of objects.")
        if len(entries) > MAX_BATCH:
            raise error(
                "TooManyEntriesInBatchRequest",
                f"Maximum number of entries per request are {MAX_BATCH}. You have sent "
                f"{len(entries)}.",
            )
        seen = set()
        for entry in entries:
            entry_id = entry.get("Id")
            if not isinstance(entry_id, str) or _ENTRY_ID.fullmatch(entry_id) is None:
                raise error(
                    "InvalidBatchEntryId",
                    "A batch entry id can only contain alphanumeric characters, hyphens and "
                    "underscores. It can be at most 80 letters long.",
                )
            if entry_id in seen:
                raise error("BatchEntryIdsNotDistinct", f"Id {entry_id} repeated.")
            seen.add(entry_id)
        return entries

    def action_SendMessageBatch(self, ctx: Context, params: dict[str, Any]) -> Steps:
        queue = self.queue_of(ctx, params)
        entries = self._entries(params, "SendMessageBatch")
        total = 0
        for entry in entries:
            body = entry.get("MessageBody")
            if isinstance(body, str):
                total += len(body.encode(errors="surrogatepass"))
            _, size = _attribute_size(entry.get("MessageAttributes"))
            total += size
        if total > MAX_MESSAGE_BYTES:
            raise error(
                "BatchRequestTooLong",
                f"Batch requests cannot be longer than {MAX_MESSAGE_BYTES} bytes. You have sent "
                f"{total} bytes.",
            )
        # Each entry is checked first (no side effect), then sent in order.
        prepared: list[tuple[str, Any]] = []
        for entry in entries:
            try:
                prepared.append((entry["Id"], self._message(entry, "")))
            except SqsError as exc:
                prepared.append((entry["Id"], exc))
        return (yield from self._send_entries(queue, prepared, 0, [], [], False, None))

    def _send_entries(
        self,
        queue: str,
        prepared: list[tuple[str, Any]],
        start: int,
        successful: list[dict[str, Any]],
        failed: list[dict[str, Any]],
        sent: bool,
        pending: Any,
    ) -> Steps:
        """SendMessageBatch from entry ``start`` on: each ``(Id, message or SqsError)`` of
        ``prepared`` sent in order. ``pending`` is the store's answer to entry ``start``'s
        send when it was already made (the fast path hands over here, wonderq.sqs._fast)."""
        for index in range(start, len(prepared)):
            entry_id, message = prepared[index]
            if isinstance(message, SqsError):
                failed.append(_failure(entry_id, message))
                continue
            data, delay_ms, blob, body_md5 = message
            try:
                if pending is not None:
                    step, pending = pending, None
                else:
                    step = self.store.send(queue, data, delay_ms, blob)
                msg_id = yield step
            except QueueNotFound:
                raise no_such_queue() from None
            except EngineError as exc:
                failed.append(_failure(entry_id, engine_error(exc)))
                continue
            sent = True
            out = {"Id": entry_id}
            out.update(self._sent(msg_id, body_md5, blob))
            successful.append(out)
        if not sent:
            # No entry reached the store, which would have said the queue is missing.
            yield from self._queue_info(queue)
        return {"Successful": successful, "Failed": failed}

    def action_ReceiveMessage(self, ctx: Context, params: dict[str, Any]) -> Steps:
        queue = self.queue_of(ctx, params)
        limit = check_int(
            "MaxNumberOfMessages", params.get("MaxNumberOfMessages"), 1, MAX_RECEIVE, 1
        )
        visibility = params.get("VisibilityTimeout")
        visibility_ms = (
            -1
            if visibility is None
            else check_int("VisibilityTimeout", visibility, 0, MAX_VISIBILITY_S, 0) * 1000
        )
        wait = params.get("WaitTimeSeconds")
        if wait is None:
            wait_s = self._wait_cache.get(queue)
            if wait_s is None:
                info = yield from self._queue_info(queue)
                wait_s = int(self.meta_of(info).get("ReceiveMessageWaitTimeSeconds", 0))
                if len(self._wait_cache) > 4096:
                    self._wait_cache.clear()
                self._wait_cache[queue] = wait_s
        else:
            wait_s = check_int("WaitTimeSeconds", wait, 0, MAX_WAIT_S, 0)
        system = set(_str_list(params, "MessageSystemAttributeNames"))
        system.update(_str_list(params, "AttributeNames"))
        if "All" in system:
            system.update(_SYSTEM_NAMES)
        system_names = [n for n in _SYSTEM_NAMES if n in system]
        chosen = selector(params.get("MessageAttributeNames"))
        args = (queue, limit, visibility_ms, system_names, chosen)
        try:
            rows = yield self.store.receive_messages(queue, limit, visibility_ms)
        except QueueNotFound:
            raise no_such_queue() from None
        if rows or wait_s == 0:
            return self.received(rows, args)
        return Park(queue, args, {}, wait_s * 1000)

    def received(self, rows: list[tuple[Any, ...]], args: tuple[Any, ...]) -> dict[str, Any]:
        """The ReceiveMessage output for the store's rows."""
        if not rows:
            return {}
        queue, _, _, system_names, chosen = args
        encode = self.handles.encode
        messages = []
        for row in rows:
            msg_id, body, receives, sent_ms, first_ms, blob = row
            message: dict[str, Any] = {
                "MessageId": str(msg_id),
                "ReceiptHandle": encode(queue, msg_id, receives),
                "MD5OfBody": md5_hex(body),
                "Body": body.decode(),
            }
            if system_names:
                values = {
                    "SenderId": self.account,
                    "SentTimestamp": str(sent_ms),
                    "ApproximateReceiveCount": str(receives),
                    "ApproximateFirstReceiveTimestamp": str(first_ms),
                }
                message["Attributes"] = {n: values[n] for n in system_names}
            if chosen is not None and blob:
                selected, segments = message_attributes_out(blob, chosen)
                if selected:
                    message["MD5OfMessageAttributes"] = md5_of_segments(segments)
                    message["MessageAttributes"] = selected
            messages.append(message)
        return {"Messages": messages}

    def _handle(self, queue: str, handle: Any) -> tuple[int, int]:
        if handle is None or handle == "":
            raise error("MissingParameter", "The request must contain the parameter ReceiptHandle.")
        decoded = self.handles.decode(handle)
        if decoded is None or decoded[0] != queue:
            raise error(
                "ReceiptHandleIsInvalid",
                f'The input receipt handle "{handle}" is not a valid receipt handle.',
            )
        return decoded[1], decoded[2]

    def action_DeleteMessage(self, ctx: Context, params: dict[str, Any]) -> Steps:
        queue = self.queue_of(ctx, params)
        msg_id, receives = self._handle(queue, params.get("ReceiptHandle"))
        try:
            yield self.store.delete_by_token(queue, msg_id, receives)
        except QueueNotFound:
            raise no_such_queue() from None
        return {}

    def action_DeleteMessageBatch(self, ctx: Context, params: dict[str, Any]) -> Steps:
        queue = self.queue_of(ctx, params)
        entries = self._entries(params, "DeleteMessageBatch")
        prepared: list[tuple[str, Any]] = []
        for entry in entries:
            try:
                prepared.append((entry["Id"], self._handle(queue, entry.get("ReceiptHandle"))))
            except SqsError as exc:
                prepared.append((entry["Id"], exc))
        return (yield from self._delete_entries(queue, prepared, 0, [], [], None))

    def _delete_entries(
        self,
        queue: str,
        prepared: list[tuple[str, Any]],
        start: int,
        successful: list[dict[str, Any]],
        failed: list[dict[str, Any]],
        pending: Any,
    ) -> Steps:
        """DeleteMessageBatch from entry ``start`` on: each ``(Id, (id, receives) or
        SqsError)`` of ``prepared`` deleted in order; ``pending`` as in _send_entries."""
        for index in range(start, len(prepared)):
            entry_id, token = prepared[index]
            if isinstance(token, SqsError):
                failed.append(_failure(entry_id, token))
                continue
            try:
                if pending is not None:
                    step, pending = pending, None
                else:
                    step = self.store.delete_by_token(queue, token[0], token[1])
                yield step
            except QueueNotFound:
                raise no_such_queue() from None
            successful.append({"Id": entry_id})
        if not successful:  # no entry reached the store, which would have said the queue is missing
            yield from self._queue_info(queue)
        return {"Successful": successful, "Failed": failed}

    def action_ChangeMessageVisibility(self, ctx: Context, params: dict[str, Any]) -> Steps:
        queue = self.queue_of(ctx, params)
        msg_id, receives = self._handle(queue, params.get("ReceiptHandle"))
        timeout_s = check_int(
            "VisibilityTimeout", params.get("VisibilityTimeout"), 0, MAX_VISIBILITY_S, None
        )
        try:
            yield self.store.change_lease_by_token(queue, msg_id, receives, timeout_s * 1000)
        except QueueNotFound:
            raise no_such_queue() from None
        return {}

    def action_ChangeMessageVisibilityBatch(self, ctx: Context, params: dict[str, Any]) -> Steps:
        queue = self.queue_of(ctx, params)
        entries = self._entries(params, "ChangeMessageVisibilityBatch")
        successful: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        for entry in entries:
            try:
                msg_id, receives = self._handle(queue, entry.get("ReceiptHandle"))
                timeout_s = check_int(
                    "VisibilityTimeout", entry.get("VisibilityTimeout"), 0, MAX_VISIBILITY_S, None
                )
                yield self.store.change_lease_by_token(queue, msg_id, receives, timeout_s * 1000)
            except QueueNotFound:
                raise no_such_queue() from None
            except SqsError as exc:
                failed.append(_failure(entry["Id"], exc))
                continue
            successful.append({"Id": entry["Id"]})
        if not successful:  # no entry reached the store, which would have said the queue is missing
            yield from self._queue_info(queue)
        return {"Successful": successful, "Failed": failed}


def _attribute_size(attributes: Any) -> tuple[None, int]:
    """The bytes ``attributes`` count towards a batch's size (0 if malformed: the entry
    itself then fails on its own)."""
    if not isinstance(attributes, dict):
        return None, 0
    size = 0
    for name, value in attributes.items():
        size += len(str(name).encode(errors="surrogatepass"))
        if isinstance(value, dict):
            for key in ("DataType", "StringValue", "BinaryValue"):
                item = value.get(key)
                if isinstance(item, str):
                    size += len(item.encode(errors="surrogatepass"))
                elif isinstance(item, (bytes, bytearray)):
                    size += len(item)
    return None, size


def _failure(entry_id: str, exc: SqsError) -> dict[str, Any]:
    return {"Id": entry_id, "SenderFault": exc.sender, "Code": exc.code, "Message": exc.message}


def _check_tags(tags: Any) -> None:
    if not isinstance(tags, dict):
        raise error("InvalidParameterValue", "Tags must be a map of strings.")
    if len(tags) > MAX_TAGS:
        raise error("InvalidParameterValue", f"Too many tags: a queue has at most {MAX_TAGS}.")
    for key, value in tags.items():
        if not isinstance(key, str) or not 1 <= len(key) <= 128:
            raise error("InvalidParameterValue", "A tag key must be 1 to 128 characters.")
        if not isinstance(value, str) or len(value) > 256:
            raise error(
                "InvalidParameterValue", f"The value of tag {key} must be at most 256 characters."
            )


def _check_system_attributes(system: Any) -> None:
    if not isinstance(system, dict):
        raise error("InvalidParameterValue", "MessageSystemAttributes must be a map.")
    for name, value in system.items():
        if name != "AWSTraceHeader":
            raise error(
                "InvalidParameterValue",
                f"Message system attribute name '{name}' is invalid: only AWSTraceHeader can "
                "be set.",
            )
        if (
            not isinstance(value, dict)
            or value.get("DataType") != "String"
            or not value.get("StringValue")
        ):
            raise error(
                "InvalidParameterValue",
                "Message system attribute AWSTraceHeader must be a non-empty String.",
            )


def _same(key: str, given: str, current: str | None) -> bool:
    """Whether a CreateQueue attribute equals the existing queue's (numbers by value, JSON
    documents by content)."""
    if current is None:
        if key in BOUNDS:
            return False
        return given == ""
    if key in BOUNDS:
        return given.strip() == current
    if key in ("RedrivePolicy", "RedriveAllowPolicy", "Policy"):
        try:
            a, b = json.loads(given), json.loads(current)
        except ValueError:
            return given == current
        if key == "RedrivePolicy" and isinstance(a, dict) and isinstance(b, dict):
            a = {k: str(v) for k, v in a.items()}
            b = {k: str(v) for k, v in b.items()}
        return bool(a == b)
    return given == current


def engine_error(exc: EngineError) -> SqsError:
    """An engine refusal as the SQS error a client expects."""
    name = type(exc).__name__
    if name == "QueueNotFound":
        return no_such_queue()
    if name == "MessageTooLarge":
        return error(
            "InvalidParameterValue",
            f"One or more parameters are invalid. Reason: Message must be shorter than the "
            f"queue's MaximumMessageSize ({exc}).",
        )
    if name in ("MemoryLimitExceeded", "IdsExhausted"):
        return error("ServiceUnavailable", f"The server cannot store more messages now: {exc}")
    if name == "QueueInUse":
        return error("InvalidParameterValue", str(exc))
    return invalid_engine(exc)


def invalid_engine(exc: EngineError) -> SqsError:
    return error("InvalidParameterValue", str(exc))


__all__ += ["Selector", "engine_error", "invalid"]
