"""The SQS face as real clients meet it: boto3 (the JSON 1.0 protocol), botocore forced to
the query protocol, raw form requests parsed as XML, and the AWS CLI, against the real
``wonderq`` server on an ephemeral loopback port."""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from _server import ServerProcess, get, publish, receive, request, running_server, unique_name
from _sqs import client, query_client, reference_md5, require_program
from botocore.exceptions import ClientError

pytestmark = pytest.mark.timeout(120)

NS = "{http://queue.amazonaws.com/doc/2012-11-05/}"
JSON_TYPE = "application/x-amz-json-1.0"


@pytest.fixture(scope="module")
def srv() -> Iterator[ServerProcess]:
    with running_server() as server:
        yield server


@pytest.fixture(scope="module", params=["json", "query"])
def sqs(request: pytest.FixtureRequest, srv: ServerProcess, tmp_path_factory: Any) -> Any:
    """One client per wire protocol: every test using it runs over both."""
    if request.param == "json":
        return client(srv.url)
    return query_client(srv.url, tmp_path_factory.mktemp("model"))


def error_of(call: Any, **kw: Any) -> dict[str, Any]:
    with pytest.raises(ClientError) as info:
        call(**kw)
    return dict(info.value.response["Error"]) | {
        "status": info.value.response["ResponseMetadata"]["HTTPStatusCode"]
    }


ATTRIBUTES = {
    "s": {"DataType": "String", "StringValue": "héllo ✓ 𝄞"},
    "n": {"DataType": "Number", "StringValue": "-12.5"},
    "b": {"DataType": "Binary", "BinaryValue": b"\x00\x01\xff"},
    "trace.id": {"DataType": "String.uuid", "StringValue": "abc"},
    "trace.span": {"DataType": "Number.int", "StringValue": "7"},
}


# ---- the round trip -----------------------------------------------------------------------------
def test_send_receive_delete_with_attributes_and_md5s(sqs: Any, srv: ServerProcess) -> None:
    url = sqs.create_queue(QueueName=unique_name("rt"))["QueueUrl"]
    assert url.startswith(f"{srv.url}/000000000000/rt-")
    body = "payload é ✓ 𝄞 <xml> & \r\n\t"
    sent = sqs.send_message(QueueUrl=url, MessageBody=body, MessageAttributes=ATTRIBUTES)
    assert sent["MD5OfMessageBody"] == hashlib.md5(body.encode()).hexdigest()
    assert sent["MD5OfMessageAttributes"] == reference_md5(ATTRIBUTES)
    assert sent["MessageId"].isdigit()
    before_ms = int(time.time() * 1000)
    got = sqs.receive_message(
        QueueUrl=url,
        MaxNumberOfMessages=10,
        MessageSystemAttributeNames=["All"],
        MessageAttributeNames=["s", "trace.*"],
    )
    [message] = got["Messages"]
    assert message["MessageId"] == sent["MessageId"]
    assert message["Body"] == body
    assert message["MD5OfBody"] == sent["MD5OfMessageBody"]
    chosen = {k: ATTRIBUTES[k] for k in ("s", "trace.id", "trace.span")}
    assert message["MessageAttributes"] == chosen
    assert message["MD5OfMessageAttributes"] == reference_md5(chosen)
    system = message["Attributes"]
    assert set(system) == {
        "SenderId",
        "SentTimestamp",
        "ApproximateReceiveCount",
        "ApproximateFirstReceiveTimestamp",
    }
    assert system["ApproximateReceiveCount"] == "1"
    assert abs(int(system["SentTimestamp"]) - before_ms) < 60_000
    assert int(system["ApproximateFirstReceiveTimestamp"]) >= int(system["SentTimestamp"])
    sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "0"
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "0"
    sqs.delete_queue(QueueUrl=url)


def test_no_attributes_means_no_md5_and_none_unasked(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=unique_name("plain"))["QueueUrl"]
    sent = sqs.send_message(QueueUrl=url, MessageBody="x")
    assert "MD5OfMessageAttributes" not in sent
    sqs.send_message(QueueUrl=url, MessageBody="y", MessageAttributes=ATTRIBUTES)
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in messages] == ["x", "y"]
    for message in messages:  # attributes were not asked for: none, and no MD5 of them
        assert "MessageAttributes" not in message and "MD5OfMessageAttributes" not in message
        assert "Attributes" not in message


def test_deprecated_attribute_names_still_select(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=unique_name("old"))["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="x")
    [message] = sqs.receive_message(QueueUrl=url, AttributeNames=["ApproximateReceiveCount"])[
        "Messages"
    ]
    assert message["Attributes"] == {"ApproximateReceiveCount": "1"}


# ---- receipt handles: stale, forged, foreign ----------------------------------------------------
def test_stale_handle_succeeds_and_changes_nothing(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=unique_name("stale"))["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="x")
    [first] = sqs.receive_message(QueueUrl=url, VisibilityTimeout=0)["Messages"]
    [second] = sqs.receive_message(QueueUrl=url, VisibilityTimeout=30, AttributeNames=["All"])[
        "Messages"
    ]
    assert second["Attributes"]["ApproximateReceiveCount"] == "2"
    assert first["ReceiptHandle"] != second["ReceiptHandle"]
    # The first lease is over: its handle acts on nothing, and says so only by doing nothing.
    sqs.delete_message(QueueUrl=url, ReceiptHandle=first["ReceiptHandle"])
    sqs.change_message_visibility(
        QueueUrl=url, ReceiptHandle=first["ReceiptHandle"], VisibilityTimeout=0
    )
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "1"
    # The current handle releases it, then deletes it once received again.
    sqs.change_message_visibility(
        QueueUrl=url, ReceiptHandle=second["ReceiptHandle"], VisibilityTimeout=0
    )
    [third] = sqs.receive_message(QueueUrl=url)["Messages"]
    sqs.delete_message(QueueUrl=url, ReceiptHandle=third["ReceiptHandle"])
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "0"
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_forged_and_foreign_handles_are_invalid(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=unique_name("forge"))["QueueUrl"]
    other = sqs.create_queue(QueueName=unique_name("other"))["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="x")
    [message] = sqs.receive_message(QueueUrl=url)["Messages"]
    handle = message["ReceiptHandle"]
    raw = bytearray(base64.urlsafe_b64decode(handle + "=" * (-len(handle) % 4)))
    raw[5] ^= 1  # another id, same tag
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    for bad, queue in ((forged, url), ("not-a-handle", url), (handle, other)):
        err = error_of(sqs.delete_message, QueueUrl=queue, ReceiptHandle=bad)
        assert err["Code"] == "ReceiptHandleIsInvalid" and err["status"] == 400
        err = error_of(
            sqs.change_message_visibility, QueueUrl=queue, ReceiptHandle=bad, VisibilityTimeout=5
        )
        assert err["Code"] == "ReceiptHandleIsInvalid"
    sqs.delete_message(QueueUrl=url, ReceiptHandle=handle)


# ---- both faces see the same queues -------------------------------------------------------------
def test_sqs_and_native_routes_share_messages(sqs: Any, srv: ServerProcess) -> None:
    name = unique_name("both")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="from sqs")
    [native] = receive(srv, name, "cid=1&limit=10")
    assert native["body"] == "from sqs"
    msg_id = publish(srv, name, "from native")
    [message] = sqs.receive_message(QueueUrl=url)["Messages"]
    assert message["MessageId"] == str(msg_id) and message["Body"] == "from native"
    assert get(srv, f"/v1/queues/{name}").json()["counts"]["leased"] == 2
    # A queue's retention drops old messages and counts them (SQS's MessageRetentionPeriod).
    # (On Redis /metrics comes from a cache refreshed once a second: awaited, not assumed.)
    line = f'wonderq_retention_expired_total{{queue="{name}"}} 0.0'
    deadline = time.monotonic() + 10
    while line not in get(srv, "/metrics").body.decode():
        assert time.monotonic() < deadline, f"/metrics never showed {line}"
        time.sleep(0.05)


# ---- long polls ---------------------------------------------------------------------------------
def test_long_poll_answers_when_a_message_comes(sqs: Any, srv: ServerProcess) -> None:
    url = sqs.create_queue(QueueName=unique_name("poll"))["QueueUrl"]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        future = pool.submit(sqs.receive_message, QueueUrl=url, WaitTimeSeconds=10)
        time.sleep(0.3)  # let it park (nothing observable to wait on from outside)
        assert not future.done()
        sqs.send_message(QueueUrl=url, MessageBody="wake")
        got = future.result(timeout=15)
    assert [m["Body"] for m in got["Messages"]] == ["wake"]
    assert time.monotonic() - started < 5


def test_long_poll_wakes_on_a_native_publish(srv: ServerProcess) -> None:
    sqs = client(srv.url)
    name = unique_name("npoll")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(sqs.receive_message, QueueUrl=url, WaitTimeSeconds=10)
        time.sleep(0.3)
        publish(srv, name, "native")
        got = future.result(timeout=15)
    assert [m["Body"] for m in got["Messages"]] == ["native"]


def test_queue_wait_time_is_the_default(sqs: Any) -> None:
    url = sqs.create_queue(
        QueueName=unique_name("wait"), Attributes={"ReceiveMessageWaitTimeSeconds": "1"}
    )["QueueUrl"]
    started = time.monotonic()
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    assert 0.9 <= time.monotonic() - started < 5
    started = time.monotonic()
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)
    assert time.monotonic() - started < 0.9


# ---- batches ------------------------------------------------------------------------------------
def test_batches(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=unique_name("batch"))["QueueUrl"]
    sent = sqs.send_message_batch(
        QueueUrl=url,
        Entries=[
            {"Id": "a", "MessageBody": "one", "MessageAttributes": {"k": ATTRIBUTES["s"]}},
            {"Id": "b", "MessageBody": "bad \x00"},
            {"Id": "c", "MessageBody": "two", "DelaySeconds": 0},
            {"Id": "d", "MessageBody": "late", "DelaySeconds": 901},
        ],
    )
    assert [e["Id"] for e in sent["Successful"]] == ["a", "c"]
    assert sent["Successful"][0]["MD5OfMessageAttributes"] == reference_md5({"k": ATTRIBUTES["s"]})
    failed = {e["Id"]: e for e in sent["Failed"]}
    assert failed["b"]["Code"] == "InvalidMessageContents" and failed["b"]["SenderFault"]
    assert failed["d"]["Code"] == "InvalidParameterValue"
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in messages] == ["one", "two"]
    changed = sqs.change_message_visibility_batch(
        QueueUrl=url,
        Entries=[
            {"Id": "x", "ReceiptHandle": messages[0]["ReceiptHandle"], "VisibilityTimeout": 60},
            {"Id": "y", "ReceiptHandle": "garbage-handle-garbage", "VisibilityTimeout": 60},
        ],
    )
    assert [e["Id"] for e in changed["Successful"]] == ["x"]
    assert changed["Failed"][0]["Code"] == "ReceiptHandleIsInvalid"
    deleted = sqs.delete_message_batch(
        QueueUrl=url,
        Entries=[
            {"Id": f"m{i}", "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
        ],
    )
    assert [e["Id"] for e in deleted["Successful"]] == ["m0", "m1"] and deleted.get(
        "Failed", []
    ) == []  # XML has no empty list
    entries = [{"Id": f"e{i}", "MessageBody": "x"} for i in range(11)]
    assert error_of(sqs.send_message_batch, QueueUrl=url, Entries=entries)["Code"] == (
        "AWS.SimpleQueueService.TooManyEntriesInBatchRequest"
    )
    twice = [{"Id": "same", "MessageBody": "x"}, {"Id": "same", "MessageBody": "y"}]
    assert error_of(sqs.send_message_batch, QueueUrl=url, Entries=twice)["Code"] == (
        "AWS.SimpleQueueService.BatchEntryIdsNotDistinct"
    )
    bad_id = [{"Id": "no spaces", "MessageBody": "x"}]
    assert error_of(sqs.send_message_batch, QueueUrl=url, Entries=bad_id)["Code"] == (
        "AWS.SimpleQueueService.InvalidBatchEntryId"
    )
    big = [{"Id": f"e{i}", "MessageBody": "x" * 300_000} for i in range(4)]
    assert error_of(sqs.send_message_batch, QueueUrl=url, Entries=big)["Code"] == (
        "AWS.SimpleQueueService.BatchRequestTooLong"
    )


# ---- queues and their attributes ----------------------------------------------------------------
def test_create_is_idempotent_only_with_the_same_attributes(sqs: Any) -> None:
    name = unique_name("idem")
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "45"})["QueueUrl"]
    assert (
        sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "45"})["QueueUrl"] == url
    )
    assert sqs.create_queue(QueueName=name)["QueueUrl"] == url
    err = error_of(sqs.create_queue, QueueName=name, Attributes={"VisibilityTimeout": "46"})
    assert err["Code"] == "QueueAlreadyExists"
    assert sqs.get_queue_url(QueueName=name)["QueueUrl"] == url


def test_queue_attributes_round_trip(sqs: Any) -> None:
    dlq = sqs.create_queue(QueueName=unique_name("dlq"))["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    assert dlq_arn == "arn:aws:sqs:us-east-1:000000000000:" + dlq.rsplit("/", 1)[1]
    url = sqs.create_queue(
        QueueName=unique_name("attrs"),
        Attributes={"DelaySeconds": "2", "MaximumMessageSize": "2048"},
        tags={"team": "core"},
    )["QueueUrl"]
    policy = json.dumps({"Version": "2012-10-17", "Statement": []})
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2})
    sqs.set_queue_attributes(
        QueueUrl=url,
        Attributes={
            "VisibilityTimeout": "100",
            "MessageRetentionPeriod": "600",
            "ReceiveMessageWaitTimeSeconds": "0",
            "RedrivePolicy": redrive,
            "Policy": policy,
        },
    )
    got = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert got["VisibilityTimeout"] == "100"
    assert got["DelaySeconds"] == "2"
    assert got["MaximumMessageSize"] == "2048"
    assert got["MessageRetentionPeriod"] == "600"
    assert json.loads(got["RedrivePolicy"]) == {
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": 2,
    }
    assert json.loads(got["Policy"]) == json.loads(policy)
    assert int(got["LastModifiedTimestamp"]) >= int(got["CreatedTimestamp"]) > 1_600_000_000
    one = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["DelaySeconds"])["Attributes"]
    assert one == {"DelaySeconds": "2"}
    err = error_of(sqs.get_queue_attributes, QueueUrl=url, AttributeNames=["Nope"])
    assert err["Code"] == "InvalidAttributeName"
    err = error_of(sqs.set_queue_attributes, QueueUrl=url, Attributes={"DelaySeconds": "901"})
    assert err["Code"] == "InvalidAttributeValue"
    assert sqs.list_dead_letter_source_queues(QueueUrl=dlq)["queueUrls"] == [url]
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"team": "core"}
    sqs.tag_queue(QueueUrl=url, Tags={"env": "test"})
    sqs.untag_queue(QueueUrl=url, TagKeys=["team"])
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"env": "test"}
    # Dead-lettering by the redrive policy: two receives, then the DLQ has it (same id).
    sent = sqs.send_message(QueueUrl=url, MessageBody="poison", DelaySeconds=0)
    for _ in range(2):
        [m] = sqs.receive_message(QueueUrl=url, VisibilityTimeout=0, WaitTimeSeconds=5)["Messages"]
        sqs.change_message_visibility(
            QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0
        )
    [moved] = sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=5)["Messages"]
    assert moved["MessageId"] == sent["MessageId"] and moved["Body"] == "poison"
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"RedrivePolicy": ""})
    assert (
        "RedrivePolicy"
        not in sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    )


def test_list_queues_prefix_and_pages(sqs: Any) -> None:
    prefix = unique_name("page")
    urls = [sqs.create_queue(QueueName=f"{prefix}-{i}")["QueueUrl"] for i in range(5)]
    assert sqs.list_queues(QueueNamePrefix=prefix)["QueueUrls"] == urls
    seen: list[str] = []
    kwargs: dict[str, Any] = {"QueueNamePrefix": prefix, "MaxResults": 2}
    while True:
        page = sqs.list_queues(**kwargs)
        seen += page.get("QueueUrls", [])
        if "NextToken" not in page:
            break
        kwargs["NextToken"] = page["NextToken"]
    assert seen == urls
    sqs.purge_queue(QueueUrl=urls[0])
    for url in urls:
        sqs.delete_queue(QueueUrl=url)
    assert "QueueUrls" not in sqs.list_queues(QueueNamePrefix=prefix)
    assert error_of(sqs.get_queue_url, QueueName=f"{prefix}-0")["Code"] == (
        "AWS.SimpleQueueService.NonExistentQueue"
    )


# ---- errors -------------------------------------------------------------------------------------
def test_parameter_errors(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=unique_name("err"))["QueueUrl"]
    for kw in ({"MaxNumberOfMessages": 11}, {"WaitTimeSeconds": 21}, {"VisibilityTimeout": 43201}):
        err = error_of(sqs.receive_message, QueueUrl=url, **kw)
        assert err["Code"] == "InvalidParameterValue" and err["status"] == 400, err
    err = error_of(sqs.send_message, QueueUrl=url, MessageBody="x", DelaySeconds=901)
    assert err["Code"] == "InvalidParameterValue"
    err = error_of(sqs.send_message, QueueUrl=url, MessageBody="\x01")
    assert err["Code"] == "InvalidMessageContents"
    err = error_of(sqs.send_message, QueueUrl=url, MessageBody="x" * (1024 * 1024 + 1))
    assert err["Code"] == "InvalidParameterValue"
    err = error_of(sqs.send_message, QueueUrl=url + "-nope", MessageBody="x")
    assert err["Code"] == "AWS.SimpleQueueService.NonExistentQueue"
    err = error_of(sqs.create_queue, QueueName="jobs.fifo", Attributes={"FifoQueue": "true"})
    assert err["Code"] in ("InvalidParameterValue", "InvalidAttributeValue")
    err = error_of(
        sqs.add_permission, QueueUrl=url, Label="l", AWSAccountIds=["1"], Actions=["SendMessage"]
    )
    assert err["Code"] == "AWS.SimpleQueueService.UnsupportedOperation"


def test_json_error_headers_and_unknown_actions(srv: ServerProcess) -> None:
    def call(target: str, body: dict[str, Any]) -> Any:
        return request(
            srv,
            "POST",
            "/",
            body=json.dumps(body),
            headers={"Content-Type": JSON_TYPE, "X-Amz-Target": f"AmazonSQS.{target}"},
        )

    resp = call("GetQueueUrl", {"QueueName": "nope-nope"})
    assert resp.status == 400
    assert resp.headers["Content-Type"] == JSON_TYPE
    assert resp.headers["x-amzn-query-error"] == "AWS.SimpleQueueService.NonExistentQueue;Sender"
    assert resp.headers["x-amzn-RequestId"]
    assert resp.json()["__type"] == "com.amazonaws.sqs#QueueDoesNotExist"
    resp = call("Frobnicate", {})
    assert resp.status == 400 and resp.json()["__type"].endswith("#InvalidAction")
    resp = request(
        srv,
        "POST",
        "/",
        body="{",
        headers={"Content-Type": JSON_TYPE, "X-Amz-Target": "AmazonSQS.ListQueues"},
    )
    assert resp.status == 400 and resp.headers["Content-Type"] == JSON_TYPE
    resp = request(srv, "GET", "/?Action=Frobnicate")
    root = ET.fromstring(resp.body)
    assert resp.status == 400 and root.tag == NS + "ErrorResponse"
    assert root.findtext(f"{NS}Error/{NS}Code") == "InvalidAction"
    # Not SQS at all (no Action, no target): WonderQ's own 404, untouched.
    assert request(srv, "GET", "/000000000000/q").status == 404


# ---- raw query requests, at the queue URL path --------------------------------------------------
def test_raw_query_requests_at_the_queue_path(srv: ServerProcess) -> None:
    name = unique_name("raw")
    resp = request(
        srv,
        "GET",
        "/?" + urlencode({"Action": "CreateQueue", "QueueName": name, "Version": "2012-11-05"}),
    )
    assert resp.status == 200, resp.body
    url = ET.fromstring(resp.body).findtext(f"{NS}CreateQueueResult/{NS}QueueUrl")
    assert url == f"{srv.url}/000000000000/{name}"
    form = urlencode(
        {
            "Action": "SendMessage",
            "MessageBody": "form ✓",
            "MessageAttribute.1.Name": "k",
            "MessageAttribute.1.Value.DataType": "String",
            "MessageAttribute.1.Value.StringValue": "v",
        }
    )
    resp = request(
        srv,
        "POST",
        f"/000000000000/{name}",
        body=form,
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
    )
    assert resp.status == 200, resp.body
    result = ET.fromstring(resp.body).find(f"{NS}SendMessageResult")
    assert result is not None
    assert result.findtext(NS + "MD5OfMessageBody") == hashlib.md5("form ✓".encode()).hexdigest()
    assert result.findtext(NS + "MD5OfMessageAttributes") == reference_md5(
        {"k": {"DataType": "String", "StringValue": "v"}}
    )
    resp = request(
        srv, "GET", f"/000000000000/{name}?Action=ReceiveMessage&MessageAttributeName.1=All"
    )
    message = ET.fromstring(resp.body).find(f"{NS}ReceiveMessageResult/{NS}Message")
    assert message is not None and message.findtext(NS + "Body") == "form ✓"
    assert message.findtext(f"{NS}MessageAttribute/{NS}Value/{NS}StringValue") == "v"


def test_queue_url_follows_the_host_header(srv: ServerProcess) -> None:
    resp = request(
        srv,
        "POST",
        "/",
        body=json.dumps({"QueueName": "default"}),
        headers={
            "Content-Type": JSON_TYPE,
            "X-Amz-Target": "AmazonSQS.GetQueueUrl",
            "Host": "sqs.example:9999",
        },
    )
    assert resp.json() == {"QueueUrl": "http://sqs.example:9999/000000000000/default"}


def test_base_url_account_and_region_flags() -> None:
    with running_server(
        "--sqs-base-url",
        "https://queues.example.com/",
        "--sqs-account",
        "123456789012",
        "--sqs-region",
        "eu-west-3",
    ) as server:
        sqs = client(server.url)
        url = sqs.create_queue(QueueName="flags")["QueueUrl"]
        assert url == "https://queues.example.com/123456789012/flags"
        # The URL names another host: the queue is still found by its last segment.
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
        assert arn["QueueArn"] == "arn:aws:sqs:eu-west-3:123456789012:flags"


# ---- the AWS CLI --------------------------------------------------------------------------------
def test_aws_cli(srv: ServerProcess, tmp_path: Path) -> None:
    aws = require_program("aws", "pip install awscli")
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
    }

    def cli(*args: str) -> Any:
        done = subprocess.run(
            [aws, "--endpoint-url", srv.url, "--output", "json", "sqs", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout) if done.stdout.strip() else None

    name = unique_name("cli")
    url = cli("create-queue", "--queue-name", name)["QueueUrl"]
    sent = cli("send-message", "--queue-url", url, "--message-body", "from the cli")
    assert sent["MD5OfMessageBody"] == hashlib.md5(b"from the cli").hexdigest()
    [message] = cli("receive-message", "--queue-url", url, "--attribute-names", "All")["Messages"]
    assert (
        message["Body"] == "from the cli"
        and message["Attributes"]["ApproximateReceiveCount"] == "1"
    )
    cli("delete-message", "--queue-url", url, "--receipt-handle", message["ReceiptHandle"])
    attributes = cli("get-queue-attributes", "--queue-url", url, "--attribute-names", "All")[
        "Attributes"
    ]
    assert attributes["ApproximateNumberOfMessages"] == "0"
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "0"
    cli("delete-queue", "--queue-url", url)
    assert sys.executable  # the CLI ran as its own process, with its own botocore


# ---- with --data-dir ------------------------------------------------------------------------
@pytest.mark.not_on(
    "redis", reason="tests --data-dir; a restarted test server gets a fresh redis-server"
)
def test_durable_queue_meta_and_messages_survive_a_restart(tmp_path: Path) -> None:
    """SQS-only queue attributes live in the engine's queue ``meta``, which the log records
    with the queue; messages sent through SQS are logged with their attributes and times
    (test_durable_message_attributes_and_times_survive_a_restart)."""
    flags = ("--data-dir", str(tmp_path / "data"), "--fsync", "always")
    with running_server(*flags) as server:
        sqs = client(server.url)
        url = sqs.create_queue(
            QueueName="kept",
            Attributes={"ReceiveMessageWaitTimeSeconds": "3", "MessageRetentionPeriod": "600"},
            tags={"team": "core"},
        )["QueueUrl"]
        sent = sqs.send_message(QueueUrl=url, MessageBody="survives", MessageAttributes=ATTRIBUTES)
        assert sent["MD5OfMessageAttributes"] == reference_md5(ATTRIBUTES)
        created = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["CreatedTimestamp"])
    with running_server(*flags) as server:
        sqs = client(server.url)
        url = sqs.get_queue_url(QueueName="kept")["QueueUrl"]
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert attributes["ReceiveMessageWaitTimeSeconds"] == "3"
        assert attributes["MessageRetentionPeriod"] == "600"
        assert attributes["CreatedTimestamp"] == created["Attributes"]["CreatedTimestamp"]
        assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"team": "core"}
        [message] = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)["Messages"]
        assert message["MessageId"] == sent["MessageId"] and message["Body"] == "survives"
        sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def wal_compactions(server: ServerProcess) -> float:
    for line in get(server, "/metrics").body.decode().splitlines():
        if line.startswith("wonderq_wal_compactions_total "):
            return float(line.split()[1])
    raise AssertionError("wonderq_wal_compactions_total is not in /metrics")


@pytest.mark.not_on(
    "redis", reason="tests --data-dir; a restarted test server gets a fresh redis-server"
)
@pytest.mark.parametrize("stop", ["sigterm", "sigkill", "compacted"])
def test_durable_message_attributes_and_times_survive_a_restart(tmp_path: Path, stop: str) -> None:
    """Log format 2 (docs/DURABILITY.md): after a restart a message has its attributes (and
    their MD5), its SentTimestamp and its ApproximateFirstReceiveTimestamp as before. Stopped
    by SIGTERM, killed (--fsync always: what was answered is on disk), or after a compaction
    (the snapshot's rows carry them)."""
    flags = ["--data-dir", str(tmp_path / "data"), "--fsync", "always"]
    if stop == "compacted":
        flags += ["--compact-min-bytes", "4096"]
    system = ["SentTimestamp", "ApproximateFirstReceiveTimestamp", "ApproximateReceiveCount"]

    def receive_all(sqs: Any, url: str, visibility: int) -> dict[str, dict[str, Any]]:
        got = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=visibility,
            MessageSystemAttributeNames=system,
            MessageAttributeNames=["All"],
        )
        return {m["Body"]: m for m in got["Messages"]}

    server = ServerProcess(*flags).start()
    try:
        sqs = client(server.url)
        url = sqs.create_queue(QueueName="kept")["QueueUrl"]
        sent = sqs.send_message(QueueUrl=url, MessageBody="with", MessageAttributes=ATTRIBUTES)
        assert sent["MD5OfMessageAttributes"] == reference_md5(ATTRIBUTES)
        sqs.send_message(QueueUrl=url, MessageBody="plain")
        time.sleep(0.01)  # a first receive later than the send, to the millisecond
        before = receive_all(sqs, url, 0)  # received once, visible again at once
        assert sorted(before) == ["plain", "with"]
        # Receives are logged but never waited for; a send answered after them under --fsync
        # always is on disk with everything logged before it.
        other = sqs.create_queue(QueueName="other")["QueueUrl"]
        sqs.send_message(QueueUrl=other, MessageBody="after the receive")
        if stop == "compacted":
            filler = sqs.create_queue(QueueName="filler")["QueueUrl"]
            entries = [{"Id": str(i), "MessageBody": "f" * 1000} for i in range(10)]
            sqs.send_message_batch(QueueUrl=filler, Entries=entries)
            sqs.purge_queue(QueueUrl=filler)
            deadline = time.monotonic() + 20
            while wal_compactions(server) < 1:  # the tick (1 s) starts it
                assert time.monotonic() < deadline, server.output()
                time.sleep(0.05)
        if stop == "sigkill":
            server.signal(signal.SIGKILL)
            assert server.wait(10) == -signal.SIGKILL
        else:
            assert server.stop() == 0
    finally:
        server.stop()
    with running_server(*flags) as server:
        sqs = client(server.url)
        url = sqs.get_queue_url(QueueName="kept")["QueueUrl"]
        after = receive_all(sqs, url, 30)
    assert sorted(after) == ["plain", "with"]
    for body, message in after.items():
        was = before[body]
        assert message["MessageId"] == was["MessageId"]
        assert message["Attributes"]["SentTimestamp"] == was["Attributes"]["SentTimestamp"]
        first = message["Attributes"]["ApproximateFirstReceiveTimestamp"]
        assert first == was["Attributes"]["ApproximateFirstReceiveTimestamp"]
        assert int(first) > int(was["Attributes"]["SentTimestamp"])
        assert message["Attributes"]["ApproximateReceiveCount"] == "2"
    with_attributes = after["with"]
    assert with_attributes["MessageAttributes"] == before["with"]["MessageAttributes"]
    assert with_attributes["MessageAttributes"]["b"]["BinaryValue"] == b"\x00\x01\xff"
    assert with_attributes["MD5OfMessageAttributes"] == reference_md5(ATTRIBUTES)
    assert "MessageAttributes" not in after["plain"]
    assert "MD5OfMessageAttributes" not in after["plain"]


def test_sigterm_answers_parked_long_polls_empty() -> None:
    server = ServerProcess().start()
    try:
        sqs = client(server.url)
        url = sqs.create_queue(QueueName="bye")["QueueUrl"]
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            future = pool.submit(sqs.receive_message, QueueUrl=url, WaitTimeSeconds=20)
            time.sleep(0.3)  # let it park
            started = time.monotonic()
            assert server.stop() == 0
            assert "Messages" not in future.result(timeout=15)
            assert time.monotonic() - started < 10
    finally:
        server.stop()
