"""The SQS face's pieces in-process: MD5s (against an independent implementation of the
algorithm the SDKs verify), attribute validation and blobs, receipt handles, query-protocol
parsing and XML, JSON errors."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from _sqs import reference_md5

from wonderq.sqs import json_protocol, query_protocol
from wonderq.sqs.attributes import (
    apply_queue_attributes,
    bad_character,
    blob_segments,
    message_attributes_out,
    parse_message_attributes,
    selector,
)
from wonderq.sqs.errors import SqsError
from wonderq.sqs.handles import ReceiptHandles
from wonderq.sqs.md5 import md5_hex, md5_of_segments

NS = "{http://queue.amazonaws.com/doc/2012-11-05/}"


def random_attributes(rng: random.Random) -> dict[str, dict[str, Any]]:
    attributes: dict[str, dict[str, Any]] = {}
    for _ in range(rng.randint(1, 10)):
        name = "".join(rng.choice("abcXYZ019_-") for _ in range(rng.randint(1, 12)))
        kind = rng.choice(["String", "Number", "Binary", "String.custom", "Binary.png"])
        if kind.startswith("Binary"):
            attributes[name] = {
                "DataType": kind,
                "BinaryValue": bytes(rng.randrange(256) for _ in range(rng.randint(1, 40))),
            }
        elif kind == "Number":
            attributes[name] = {"DataType": kind, "StringValue": str(rng.randint(-(10**9), 10**9))}
        else:
            text = "".join(rng.choice("héllo wörld ✓ 𝄞\t\n") for _ in range(rng.randint(1, 20)))
            attributes[name] = {"DataType": kind, "StringValue": text}
    return attributes


def test_md5_of_attributes_matches_the_reference() -> None:
    seed = int(os.environ.get("WONDERQ_TEST_SEED") or random.randrange(2**32))
    print("seed", seed)
    rng = random.Random(seed)
    for _ in range(200):
        attributes = random_attributes(rng)
        wire = {
            k: (
                {**v, "BinaryValue": base64.b64encode(v["BinaryValue"]).decode()}
                if "BinaryValue" in v
                else v
            )
            for k, v in attributes.items()
        }
        blob, size = parse_message_attributes(wire)
        assert blob is not None
        assert md5_hex(blob) == reference_md5(attributes)
        # A subset read back from the blob hashes as the SDK hashes what it received.
        names = sorted(attributes)
        chosen_names = rng.sample(names, rng.randint(1, len(names)))
        out, segments = message_attributes_out(blob, selector(chosen_names))  # type: ignore[arg-type]
        assert set(out) == set(chosen_names)
        assert md5_of_segments(segments) == reference_md5({n: attributes[n] for n in chosen_names})
        for name, value in out.items():
            assert value == attributes[name]
        assert size == sum(
            len(n.encode())
            + len(v["DataType"])
            + len(v.get("StringValue", "").encode())
            + len(v.get("BinaryValue", b""))
            for n, v in attributes.items()
        )


def test_md5_known_vector() -> None:
    # Worked by hand: name "a" (len 1), type "String" (len 6), transport 1, value "b".
    data = b"\x00\x00\x00\x01a\x00\x00\x00\x06String\x01\x00\x00\x00\x01b"
    blob, _ = parse_message_attributes({"a": {"DataType": "String", "StringValue": "b"}})
    assert blob == data
    assert md5_hex(blob) == hashlib.md5(data).hexdigest()
    assert md5_hex("héllo".encode()) == hashlib.md5("héllo".encode()).hexdigest()


def test_selector_prefixes_and_all() -> None:
    blob, _ = parse_message_attributes(
        {n: {"DataType": "String", "StringValue": "v"} for n in ("a.b", "a.c", "ab", "x")}
    )
    assert blob is not None
    names = lambda sel: sorted(message_attributes_out(blob, selector(sel))[0])  # noqa: E731
    assert names(["All"]) == ["a.b", "a.c", "ab", "x"]
    assert names([".*"]) == ["a.b", "a.c", "ab", "x"]
    assert names(["a.*"]) == ["a.b", "a.c"]
    assert names(["x", "nope"]) == ["x"]
    assert selector([]) is None and selector(None) is None
    assert [s[0] for s in blob_segments(blob)] == ["a.b", "a.c", "ab", "x"]


@pytest.mark.parametrize(
    ("attributes", "fragment"),
    [
        ({"AWS.x": {"DataType": "String", "StringValue": "v"}}, "reserved"),
        ({"a..b": {"DataType": "String", "StringValue": "v"}}, "period"),
        ({"a": {"DataType": "Text", "StringValue": "v"}}, "type"),
        ({"a": {"DataType": "String", "StringValue": ""}}, "non-empty"),
        ({"a": {"DataType": "Number", "StringValue": "1e999"}}, "range"),
        ({"a": {"DataType": "Number", "StringValue": "abc"}}, "number"),
        ({"a": {"DataType": "Binary", "StringValue": "x"}}, "Binary"),
        ({"a": {"DataType": "Binary", "BinaryValue": "!!"}}, "base64"),
        ({"a": {"DataType": "String", "StringValue": "\x00"}}, "invalid characters"),
        ({f"n{i}": {"DataType": "String", "StringValue": "v"} for i in range(11)}, "exceeds"),
        ({"a": {"DataType": "String", "StringValue": "v", "StringListValues": ["x"]}}, "list"),
    ],
)
def test_bad_message_attributes(attributes: dict[str, Any], fragment: str) -> None:
    with pytest.raises(SqsError) as info:
        parse_message_attributes(attributes)
    assert info.value.code == "InvalidParameterValue"
    assert fragment.lower() in info.value.message.lower()


def test_body_characters() -> None:
    assert not bad_character("plain\ttext\r\n é ✓ 𝄞 \ue000 \ufffd")
    for char in ("\x00", "\x08", "\x1f", "\ufffe", "\uffff", "\ud800"):
        assert bad_character(f"a{char}b"), repr(char)


def test_receipt_handles() -> None:
    handles = ReceiptHandles(b"k" * 32)
    handle = handles.encode("jobs", 2**63 - 1, 7)
    assert handle.isascii() and "=" not in handle and "+" not in handle and "/" not in handle
    assert handles.decode(handle) == ("jobs", 2**63 - 1, 7)
    assert handles.decode(handles.encode("q", 1, 0)) == ("q", 1, 0)
    # Another store's handle, a flipped character, garbage, not a str: all invalid.
    assert ReceiptHandles(b"x" * 32).decode(handle) is None
    flipped = handle[:5] + ("A" if handle[5] != "A" else "B") + handle[6:]
    assert handles.decode(flipped) is None
    for junk in ("", "short", "!" * 40, "a" * 2000, None, 17):
        assert handles.decode(junk) is None


def test_queue_attributes_mapping() -> None:
    engine: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    apply_queue_attributes(
        {
            "VisibilityTimeout": "45",
            "DelaySeconds": "5",
            "MaximumMessageSize": "2048",
            "MessageRetentionPeriod": "60",
            "ReceiveMessageWaitTimeSeconds": "20",
            "RedrivePolicy": json.dumps(
                {
                    "deadLetterTargetArn": "arn:aws:sqs:us-east-1:000000000000:dlq",
                    "maxReceiveCount": "3",
                }
            ),
            "Policy": '{"Version": "2012-10-17"}',
        },
        engine,
        meta,
        creating=True,
    )
    assert engine == {
        "visibility_timeout_ms": 45000,
        "delay_ms": 5000,
        "max_message_bytes": 2048,
        "retention_ms": 60000,
        "max_receives": 3,
        "dead_letter_queue": "dlq",
    }
    assert meta["ReceiveMessageWaitTimeSeconds"] == 20
    assert meta["Policy"] == '{"Version": "2012-10-17"}'
    for bad, code in [
        ({"VisibilityTimeout": "43201"}, "InvalidAttributeValue"),
        ({"DelaySeconds": "901"}, "InvalidAttributeValue"),
        ({"MaximumMessageSize": "1023"}, "InvalidAttributeValue"),
        ({"ReceiveMessageWaitTimeSeconds": "x"}, "InvalidAttributeValue"),
        ({"Nope": "1"}, "InvalidAttributeName"),
        ({"ContentBasedDeduplication": "true"}, "InvalidAttributeName"),
        ({"FifoQueue": "true"}, "InvalidAttributeValue"),
        ({"RedrivePolicy": '{"maxReceiveCount": 3}'}, "InvalidParameterValue"),
        ({"RedrivePolicy": "{"}, "InvalidAttributeValue"),
    ]:
        with pytest.raises(SqsError) as info:
            apply_queue_attributes(bad, {}, {}, creating=False)
        assert info.value.code == code, bad


def test_query_parameters_become_the_json_shape() -> None:
    query = (
        "Action=SendMessageBatch&QueueUrl=http%3A%2F%2Fh%2F0%2Fq"
        "&SendMessageBatchRequestEntry.2.Id=b&SendMessageBatchRequestEntry.2.MessageBody=two"
        "&SendMessageBatchRequestEntry.1.Id=a&SendMessageBatchRequestEntry.1.MessageBody=one+%C3%A9"
        "&SendMessageBatchRequestEntry.1.DelaySeconds=3"
        "&SendMessageBatchRequestEntry.1.MessageAttribute.1.Name=k"
        "&SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.DataType=String"
        "&SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.StringValue=v"
    )
    params = query_protocol.parse("", query.encode(), form=True)
    assert params == {
        "Action": "SendMessageBatch",
        "QueueUrl": "http://h/0/q",
        "Entries": [
            {
                "Id": "a",
                "MessageBody": "one é",
                "DelaySeconds": "3",
                "MessageAttributes": {"k": {"DataType": "String", "StringValue": "v"}},
            },
            {"Id": "b", "MessageBody": "two"},
        ],
    }
    params = query_protocol.parse(
        "Action=CreateQueue&QueueName=q&Attribute.1.Name=VisibilityTimeout&Attribute.1.Value=5"
        "&Tag.1.Key=team&Tag.1.Value=x&AttributeName.2=B&AttributeName.1=A",
        b"",
        form=False,
    )
    assert params == {
        "Action": "CreateQueue",
        "QueueName": "q",
        "Attributes": {"VisibilityTimeout": "5"},
        "tags": {"team": "x"},
        "AttributeNames": ["A", "B"],
    }
    # Lists and maps that are not flattened (members newer than the query protocol).
    params = query_protocol.parse(
        "Action=ReceiveMessage&MessageSystemAttributeNames.member.2=B"
        "&MessageSystemAttributeNames.member.1=A&M.entry.1.key=k&M.entry.1.value=v"
        "&N.2=y&N.1=x",
        b"",
        form=False,
    )
    assert params["MessageSystemAttributeNames"] == ["A", "B"]
    assert params["M"] == {"k": "v"}
    assert params["N"] == ["x", "y"]
    # kombu's unnumbered legacy form of SetQueueAttributes.
    legacy = query_protocol.parse(
        "Action=SetQueueAttributes&Attribute.Name=Policy&Attribute.Value=p", b"", False
    )
    assert legacy["Attributes"] == {"Policy": "p"}
    for bad in ("a=1&a.b=2", "a.b=1&a=2", "Attribute.x.Name=1", "%ff=1"):
        with pytest.raises(SqsError):
            query_protocol.parse(bad, b"", form=False)


def test_xml_answer_shapes() -> None:
    status, body, headers = query_protocol.answer(
        "ReceiveMessage",
        {
            "Messages": [
                {
                    "MessageId": "7",
                    "ReceiptHandle": "h",
                    "MD5OfBody": "m",
                    "Body": "a < b & \r c",
                    "Attributes": {"SentTimestamp": "1"},
                    "MessageAttributes": {
                        "s": {"StringValue": "v", "DataType": "String"},
                        "b": {"BinaryValue": b"\x00\x01", "DataType": "Binary"},
                    },
                }
            ]
        },
        b"rid",
    )
    assert status == 200
    assert headers == b"Content-Type: text/xml\r\nx-amzn-RequestId: rid\r\n"
    root = ET.fromstring(body)
    assert root.tag == NS + "ReceiveMessageResponse"
    message = root.find(f"{NS}ReceiveMessageResult/{NS}Message")
    assert message is not None
    assert message.findtext(NS + "Body") == "a < b & \r c"  # the CR survives as &#xD;
    assert message.findtext(f"{NS}Attribute/{NS}Name") == "SentTimestamp"
    attrs = {
        a.findtext(NS + "Name"): (
            a.findtext(f"{NS}Value/{NS}StringValue"),
            a.findtext(f"{NS}Value/{NS}BinaryValue"),
        )
        for a in message.findall(NS + "MessageAttribute")
    }
    assert attrs == {"s": ("v", None), "b": (None, "AAE=")}
    assert root.findtext(f"{NS}ResponseMetadata/{NS}RequestId") == "rid"
    _, body, _ = query_protocol.answer(
        "SendMessageBatch",
        {
            "Successful": [{"Id": "a", "MessageId": "1"}],
            "Failed": [{"Id": "b", "SenderFault": True, "Code": "C", "Message": "M"}],
        },
        b"r",
    )
    root = ET.fromstring(body)
    result = root.find(NS + "SendMessageBatchResult")
    assert result is not None
    assert result.findtext(f"{NS}SendMessageBatchResultEntry/{NS}Id") == "a"
    assert result.findtext(f"{NS}BatchResultErrorEntry/{NS}SenderFault") == "true"
    _, body, _ = query_protocol.answer("DeleteQueue", {}, b"r")
    assert ET.fromstring(body).find(NS + "DeleteQueueResult") is None


def test_error_shapes() -> None:
    exc = SqsError("QueueDoesNotExist", "The specified queue does not exist.")
    status, body, headers = json_protocol.answer_error(exc, b"rid")
    assert status == 400
    assert json.loads(body) == {
        "__type": "com.amazonaws.sqs#QueueDoesNotExist",
        "message": "The specified queue does not exist.",
    }
    assert b"x-amzn-query-error: AWS.SimpleQueueService.NonExistentQueue;Sender\r\n" in headers
    assert b"x-amzn-RequestId: rid\r\n" in headers
    status, body, _ = query_protocol.answer_error(exc, b"rid")
    root = ET.fromstring(body)
    assert root.tag == NS + "ErrorResponse"
    assert root.findtext(f"{NS}Error/{NS}Code") == "AWS.SimpleQueueService.NonExistentQueue"
    assert root.findtext(f"{NS}Error/{NS}Type") == "Sender"
    with pytest.raises(SqsError):
        json_protocol.parse(b"[1]")
    with pytest.raises(SqsError):
        json_protocol.parse(b"{")
    assert json_protocol.parse(b"") == {}
