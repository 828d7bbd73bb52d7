"""SqsFace in-process over a small reference store (a pure-Python model of the store's SQS
section): the action driver, answers that come later (a store answering with Deferreds, as
the durable store does under --fsync always), parked long polls, and cancellation."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import pytest

from wonderq._core import QueueNotFound
from wonderq.deferred import Deferred
from wonderq.errors import StorageError
from wonderq.sqs import JSON, QUERY, SqsFace

pytestmark = pytest.mark.timeout(30)


class ModelStore:
    """Queues of messages with leases by token; ``later`` makes every answer a Deferred
    resolved by ``flush()`` (as a group commit would)."""

    def __init__(self, later: bool = False) -> None:
        self.later = later
        self.pending: list[tuple[Deferred, Any]] = []
        self.queues: dict[str, dict[str, Any]] = {
            "default": {"attributes": self._defaults(), "messages": {}}
        }
        self.next_id = 1
        self.now_ms = 1_000_000

    @staticmethod
    def _defaults() -> dict[str, Any]:
        return {
            "visibility_timeout_ms": 30000,
            "delay_ms": 0,
            "max_receives": None,
            "dead_letter_queue": None,
            "max_message_bytes": 1048576,
            "retention_ms": None,
            "meta": None,
        }

    def _answer(self, value: Any) -> Any:
        if not self.later:
            return value
        d = Deferred()
        self.pending.append((d, value))
        return d

    def flush(self, error: BaseException | None = None) -> None:
        pending, self.pending = self.pending, []
        for d, value in pending:
            if error is None:
                d.resolve(value)
            else:
                d.fail(error)

    def token_key(self) -> bytes:
        return b"k" * 32

    def _queue(self, name: str) -> dict[str, Any]:
        if name not in self.queues:
            raise QueueNotFound(f"no queue {name!r}")
        return self.queues[name]

    def put_queue(self, name: str, attributes: dict[str, Any] | None) -> Any:
        created = name not in self.queues
        if created:
            self.queues[name] = {"attributes": self._defaults(), "messages": {}}
        self.queues[name]["attributes"].update(attributes or {})
        return self._answer(created)

    def queue_info(self, name: str) -> Any:
        q = self._queue(name)
        msgs = q["messages"].values()
        return {
            "name": name,
            "attributes": dict(q["attributes"]),
            "counts": {
                "ready": sum(1 for m in msgs if m["lease"] is None),
                "leased": sum(1 for m in msgs if m["lease"] is not None),
                "delayed": 0,
            },
        }

    def list_queues(self, prefix: str, after: str, limit: int) -> Any:
        names = [n for n in sorted(self.queues) if n.startswith(prefix) and n > after]
        page = names[:limit]
        infos = [self.queue_info(n) for n in page]
        return infos, (page[-1] if len(names) > limit else None)

    def delete_queue(self, name: str) -> Any:
        self._queue(name)
        del self.queues[name]
        return self._answer(0)

    def purge(self, name: str) -> Any:
        n = len(self._queue(name)["messages"])
        self.queues[name]["messages"].clear()
        return self._answer(n)

    def send(self, queue: str, body: bytes, delay_ms: int, attributes: bytes | None) -> Any:
        q = self._queue(queue)
        msg_id = self.next_id
        self.next_id += 1
        q["messages"][msg_id] = {
            "body": body,
            "receives": 0,
            "lease": None,
            "blob": attributes,
            "sent": self.now_ms,
            "first": None,
        }
        return self._answer(msg_id)

    def receive_messages(self, queue: str, limit: int, visibility_ms: int) -> Any:
        rows = []
        for msg_id, m in sorted(self._queue(queue)["messages"].items()):
            if m["lease"] is None and len(rows) < limit:
                m["receives"] += 1
                m["lease"] = m["receives"]
                m["first"] = m["first"] or self.now_ms
                rows.append((msg_id, m["body"], m["receives"], m["sent"], m["first"], m["blob"]))
        return rows

    def delete_by_token(self, queue: str, msg_id: int, receives: int) -> Any:
        m = self._queue(queue)["messages"].get(msg_id)
        if m is None or m["lease"] != receives:
            return False
        del self.queues[queue]["messages"][msg_id]
        return self._answer(True)

    def change_lease_by_token(self, queue: str, msg_id: int, receives: int, timeout_ms: int) -> Any:
        m = self._queue(queue)["messages"].get(msg_id)
        if m is None or m["lease"] != receives:
            return False
        if timeout_ms == 0:
            m["lease"] = None
        return True


class Conn:
    def __init__(self) -> None:
        self.closed = False
        self.answers: list[tuple[Any, Any]] = []

    def complete(self, req: Any, response: Any) -> None:
        self.answers.append((req, response))


class Req:
    def __init__(self, action: str, params: dict[str, Any], path: str = "/") -> None:
        self.method = "POST"
        self.path = path
        self.query = ""
        self.body = json.dumps(params).encode()
        self.headers = [
            (b"host", b"h:1"),
            (b"content-type", b"application/x-amz-json-1.0"),
            (b"x-amz-target", b"AmazonSQS." + action.encode()),
        ]
        self.conn = Conn()
        self.deferred: Any = None


class Timers:
    """call_later by hand: run() fires what is due at the fake time."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[list[Any]] = []

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> Any:
        timer = [self.now + delay, fn, args, False]
        self.timers.append(timer)

        class Handle:
            def cancel(self_inner) -> None:
                timer[3] = True

        return Handle()

    def advance(self, seconds: float) -> None:
        self.now += seconds
        while True:
            due = [t for t in self.timers if not t[3] and t[0] <= self.now]
            if not due:
                return
            for t in due:
                t[3] = True
                t[1](*t[2])


def make(later: bool = False) -> tuple[SqsFace, ModelStore, Timers]:
    store = ModelStore(later)
    timers = Timers()
    face = SqsFace(store, call_later=timers.call_later)  # type: ignore[arg-type]
    return face, store, timers


def call(face: SqsFace, action: str, **params: Any) -> tuple[int, dict[str, Any]]:
    req = Req(action, params)
    response = face.dispatch(req)  # type: ignore[arg-type]
    assert response is not None, "deferred"
    return response[0], json.loads(response[1])


def test_kind() -> None:
    face, _, _ = make()
    assert face.kind(Req("ListQueues", {})) == JSON  # type: ignore[arg-type]
    assert face.kind(Req("ListQueues", {}, path="/000000000000/q")) == JSON  # type: ignore[arg-type]
    for path in ("/v1/queues", "/a/b/c", "/a/", "/metrics"):
        assert face.kind(Req("ListQueues", {}, path=path)) == 0, path  # type: ignore[arg-type]
    req = Req("x", {})
    req.headers = [(b"content-type", b"application/x-www-form-urlencoded")]
    req.body = b"Version=1&Action=ListQueues"
    assert face.kind(req) == QUERY  # type: ignore[arg-type]
    req.body = b"NoAction=1"
    assert face.kind(req) == 0  # type: ignore[arg-type]
    req.query, req.body = "Action=ListQueues", b""
    assert face.kind(req) == QUERY  # type: ignore[arg-type]


def test_round_trip_over_the_model() -> None:
    face, store, _ = make()
    status, out = call(face, "CreateQueue", QueueName="q", Attributes={"VisibilityTimeout": "9"})
    assert status == 200 and out == {"QueueUrl": "http://h:1/000000000000/q"}
    assert store.queues["q"]["attributes"]["visibility_timeout_ms"] == 9000
    meta = json.loads(store.queues["q"]["attributes"]["meta"])
    assert meta["SqsManagedSseEnabled"] == "true" and "CreatedTimestamp" in meta
    status, out = call(face, "SendMessage", QueueUrl="q", MessageBody="b")
    assert status == 200 and out["MessageId"] == "1"
    status, out = call(face, "ReceiveMessage", QueueUrl="q")
    [message] = out["Messages"]
    status, out = call(face, "DeleteMessage", QueueUrl="q", ReceiptHandle=message["ReceiptHandle"])
    assert status == 200 and store.queues["q"]["messages"] == {}


def test_answers_that_come_later() -> None:
    face, store, _ = make(later=True)
    req = Req("CreateQueue", {"QueueName": "q"})
    assert face.dispatch(req) is None  # type: ignore[arg-type]
    assert isinstance(req.deferred, Deferred) and req.conn.answers == []
    store.flush()
    [(answered, (status, body, headers))] = req.conn.answers
    assert answered is req and status == 200 and json.loads(body)["QueueUrl"].endswith("/q")
    # A batch waits on every entry's store answer in turn, then answers once.
    req = Req(
        "SendMessageBatch",
        {"QueueUrl": "q", "Entries": [{"Id": str(i), "MessageBody": "x"} for i in range(3)]},
    )
    assert face.dispatch(req) is None  # type: ignore[arg-type]
    for _ in range(3):
        assert req.conn.answers == []
        store.flush()
    [(_, (status, body, _))] = req.conn.answers
    assert [e["MessageId"] for e in json.loads(body)["Successful"]] == ["1", "2", "3"]
    # A store error thrown into the action becomes the SQS error.
    req = Req("SendMessage", {"QueueUrl": "q", "MessageBody": "x"})
    assert face.dispatch(req) is None  # type: ignore[arg-type]
    store.flush(QueueNotFound("gone meanwhile"))
    [(_, (status, body, headers))] = req.conn.answers
    assert status == 400 and b"NonExistentQueue" in headers
    req = Req("SendMessage", {"QueueUrl": "q", "MessageBody": "x"})
    assert face.dispatch(req) is None  # type: ignore[arg-type]
    store.flush(StorageError("disk full"))
    [(_, (status, body, headers))] = req.conn.answers
    assert status == 503 and json.loads(body)["__type"].endswith("#ServiceUnavailable")


def test_long_poll_parks_wakes_and_times_out() -> None:
    face, store, timers = make()
    call(face, "CreateQueue", QueueName="q")
    req = Req("ReceiveMessage", {"QueueUrl": "q", "WaitTimeSeconds": 5})
    assert face.dispatch(req) is None  # type: ignore[arg-type]
    call(face, "SendMessage", QueueUrl="q", MessageBody="now")
    face.longpoll.available("q")  # what a store tells its listener after a send
    [(_, (status, body, _))] = req.conn.answers
    assert json.loads(body)["Messages"][0]["Body"] == "now"
    # Nothing comes: the empty answer at the end of the wait, and nothing leased after.
    req = Req("ReceiveMessage", {"QueueUrl": "q", "WaitTimeSeconds": 2})
    assert face.dispatch(req) is None  # type: ignore[arg-type]
    timers.advance(1.9)
    assert req.conn.answers == []
    timers.advance(0.2)
    [(_, (status, body, _))] = req.conn.answers
    assert status == 200 and json.loads(body) == {}
    # A cancelled waiter (its client left) leases nothing.
    req = Req("ReceiveMessage", {"QueueUrl": "q", "WaitTimeSeconds": 5})
    assert face.dispatch(req) is None  # type: ignore[arg-type]
    face.cancel(req)  # type: ignore[arg-type]
    call(face, "SendMessage", QueueUrl="q", MessageBody="later")
    timers.advance(1)
    assert req.conn.answers == []
    assert all(
        m["lease"] is None for m in store.queues["q"]["messages"].values() if m["body"] == b"later"
    )
    # Shutdown answers parked receives at once.
    call(face, "PurgeQueue", QueueUrl="q")
    req = Req("ReceiveMessage", {"QueueUrl": "q", "WaitTimeSeconds": 5})
    assert face.dispatch(req) is None  # type: ignore[arg-type]
    face.close()
    assert len(req.conn.answers) == 1
    # After shutdown began, a long poll answers at once, from dispatch itself.
    req = Req("ReceiveMessage", {"QueueUrl": "q", "WaitTimeSeconds": 5})
    response = face.dispatch(req)  # type: ignore[arg-type]
    assert response is not None and response[0] == 200 and req.conn.answers == []


def test_deleted_queue_answers_a_parked_receive_at_once() -> None:
    face, _, _ = make()
    call(face, "CreateQueue", QueueName="q")
    req = Req("ReceiveMessage", {"QueueUrl": "q", "WaitTimeSeconds": 5})
    assert face.dispatch(req) is None  # type: ignore[arg-type]
    call(face, "DeleteQueue", QueueUrl="q")
    [(_, (status, body, _))] = req.conn.answers  # at once, with nothing
    assert status == 200 and json.loads(body) == {}


def test_a_bug_is_a_500_internal_failure(caplog: pytest.LogCaptureFixture) -> None:
    face, store, _ = make()

    def broken(*args: Any) -> Any:
        raise RuntimeError("bug")

    store.purge = broken  # type: ignore[method-assign]
    status, out = call(face, "PurgeQueue", QueueUrl="default")
    assert status == 500 and out["__type"].endswith("InternalFailure")
    assert "PurgeQueue failed" in caplog.text


def test_random_json_inputs_never_crash() -> None:
    import random

    seed = int(os.environ.get("WONDERQ_TEST_SEED") or random.randrange(2**32))
    print("seed", seed)
    rng = random.Random(seed)
    face, _, _ = make()
    values: list[Any] = [None, 0, -1, 11, "x", "", [], {}, [1], {"a": 1}, True, 1.5, "q", "All"]
    actions = sorted(name[7:] for name in dir(face) if name.startswith("action_"))
    keys = [
        "QueueUrl",
        "QueueName",
        "MessageBody",
        "Entries",
        "Attributes",
        "MaxNumberOfMessages",
        "ReceiptHandle",
        "VisibilityTimeout",
        "MessageAttributes",
        "Tags",
        "TagKeys",
        "AttributeNames",
        "MessageAttributeNames",
        "NextToken",
        "MaxResults",
        "WaitTimeSeconds",
    ]
    for _ in range(2000):
        params = {rng.choice(keys): rng.choice(values) for _ in range(rng.randint(0, 4))}
        if rng.random() < 0.5:
            params["QueueUrl"] = "default"
        if "WaitTimeSeconds" in params:
            params["WaitTimeSeconds"] = 0
        req = Req(rng.choice(actions), params)
        response = face.dispatch(req)  # type: ignore[arg-type]
        assert response is not None
        assert response[0] in (200, 400, 403), (req.body, response)
