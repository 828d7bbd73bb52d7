"""The same boto3 scenario against moto's server and against WonderQ: the answers agree
wherever moto follows SQS (ids, handles, hosts and clocks normalised; the known
differences are listed in docs/SQS.md)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from _server import ServerProcess, running_server
from _sqs import client, moto_server
from botocore.exceptions import ClientError

pytestmark = pytest.mark.timeout(180)

ATTRIBUTES = {
    "s": {"DataType": "String", "StringValue": "héllo ✓"},
    "n": {"DataType": "Number", "StringValue": "42"},
    "b": {"DataType": "Binary", "BinaryValue": b"\x00\x01\xfe"},
    "c": {"DataType": "String.custom", "StringValue": "x"},
}


def scenario(sqs: Any) -> list[Any]:
    """A transcript of one session: what a client observes, minus what differs by design
    (MessageId, ReceiptHandle, hosts, accounts, timestamps, request ids)."""
    out: list[Any] = []

    def step(name: str, call: Any, **kw: Any) -> Any:
        try:
            result = call(**kw)
        except ClientError as exc:
            error = exc.response["Error"]
            out.append(
                (name, "error", error["Code"], exc.response["ResponseMetadata"]["HTTPStatusCode"])
            )
            return None
        result = dict(result)
        result.pop("ResponseMetadata", None)
        out.append((name, normalise(result)))
        return result

    url = step("create", sqs.create_queue, QueueName="cmp", Attributes={"VisibilityTimeout": "40"})[
        "QueueUrl"
    ]
    step("create again", sqs.create_queue, QueueName="cmp", Attributes={"VisibilityTimeout": "40"})
    step(
        "create differently",
        sqs.create_queue,
        QueueName="cmp",
        Attributes={"VisibilityTimeout": "41"},
    )
    step("url", sqs.get_queue_url, QueueName="cmp")
    step("url of nothing", sqs.get_queue_url, QueueName="nothing-here")
    step("send", sqs.send_message, QueueUrl=url, MessageBody="one ✓", MessageAttributes=ATTRIBUTES)
    step("send plain", sqs.send_message, QueueUrl=url, MessageBody="two")
    step(
        "batch",
        sqs.send_message_batch,
        QueueUrl=url,
        Entries=[
            {"Id": "a", "MessageBody": "three"},
            {"Id": "b", "MessageBody": "four", "MessageAttributes": {"k": ATTRIBUTES["s"]}},
        ],
    )
    step("batch empty", sqs.send_message_batch, QueueUrl=url, Entries=[])
    step(
        "batch too many",
        sqs.send_message_batch,
        QueueUrl=url,
        Entries=[{"Id": f"i{i}", "MessageBody": "x"} for i in range(11)],
    )
    step(
        "batch same ids",
        sqs.send_message_batch,
        QueueUrl=url,
        Entries=[{"Id": "x", "MessageBody": "x"}, {"Id": "x", "MessageBody": "y"}],
    )
    got = step(
        "receive",
        sqs.receive_message,
        QueueUrl=url,
        MaxNumberOfMessages=10,
        MessageAttributeNames=["All"],
        MessageSystemAttributeNames=["ApproximateReceiveCount"],
    )
    messages = got["Messages"]
    step("receive more", sqs.receive_message, QueueUrl=url)
    step("too many", sqs.receive_message, QueueUrl=url, MaxNumberOfMessages=11)
    step(
        "hide",
        sqs.change_message_visibility,
        QueueUrl=url,
        ReceiptHandle=messages[0]["ReceiptHandle"],
        VisibilityTimeout=0,
    )
    again = step(
        "receive again",
        sqs.receive_message,
        QueueUrl=url,
        MessageSystemAttributeNames=["ApproximateReceiveCount"],
    )
    step(
        "delete stale", sqs.delete_message, QueueUrl=url, ReceiptHandle=messages[0]["ReceiptHandle"]
    )
    step(
        "delete",
        sqs.delete_message,
        QueueUrl=url,
        ReceiptHandle=again["Messages"][0]["ReceiptHandle"],
    )
    step(
        "delete batch",
        sqs.delete_message_batch,
        QueueUrl=url,
        Entries=[
            {"Id": f"d{i}", "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages[1:])
        ],
    )
    attributes = step("attributes", sqs.get_queue_attributes, QueueUrl=url, AttributeNames=["All"])
    out[-1] = ("attributes", {k: attributes["Attributes"][k] for k in COMPARED_ATTRIBUTES})
    step(
        "set",
        sqs.set_queue_attributes,
        QueueUrl=url,
        Attributes={"DelaySeconds": "3", "MaximumMessageSize": "2048"},
    )
    step(
        "attributes after",
        sqs.get_queue_attributes,
        QueueUrl=url,
        AttributeNames=["DelaySeconds", "MaximumMessageSize"],
    )
    step("tag", sqs.tag_queue, QueueUrl=url, Tags={"a": "1", "b": "2"})
    step("untag", sqs.untag_queue, QueueUrl=url, TagKeys=["a"])
    step("tags", sqs.list_queue_tags, QueueUrl=url)
    step("list", sqs.list_queues, QueueNamePrefix="cm")
    step("purge", sqs.purge_queue, QueueUrl=url)
    step("delete queue", sqs.delete_queue, QueueUrl=url)
    step("send to nothing", sqs.send_message, QueueUrl=url, MessageBody="x")
    return out


COMPARED_ATTRIBUTES = (
    "VisibilityTimeout",
    "DelaySeconds",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)


def normalise(value: Any) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in ("MessageId", "ReceiptHandle"):
                out[key] = "<id>"
            elif key in ("QueueUrl", "QueueUrls", "queueUrls"):
                urls = item if isinstance(item, list) else [item]
                names = [u.rsplit("/", 1)[1] for u in urls]
                out[key] = names if isinstance(item, list) else names[0]
            else:
                out[key] = normalise(item)
        return out
    if isinstance(value, list):
        return [normalise(v) for v in value]
    return value


@pytest.fixture(scope="module")
def srv() -> Iterator[ServerProcess]:
    with running_server() as server:
        yield server


def test_wonderq_answers_as_moto_does(srv: ServerProcess) -> None:
    with moto_server() as moto_url:
        expected = scenario(client(moto_url))
    got = scenario(client(srv.url))
    for want, have in zip(expected, got, strict=True):
        assert have == want, json.dumps([want, have], default=repr, ensure_ascii=False)
