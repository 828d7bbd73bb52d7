"""Helpers of the SQS face's tests: boto3 clients for a server (the JSON protocol, and
botocore forced to the query protocol), moto's server as the oracle, and an independent
MD5OfMessageAttributes."""

from __future__ import annotations

import contextlib
import copy
import gzip
import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

boto3 = pytest.importorskip("boto3")
botocore = pytest.importorskip("botocore")
from botocore.config import Config  # noqa: E402

CREDENTIALS = {"aws_access_key_id": "AKIDEXAMPLE", "aws_secret_access_key": "secret"}
NO_RETRY = Config(
    retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=5, read_timeout=30
)


def client(url: str, **kw: Any) -> Any:
    """A boto3 SQS client (the JSON 1.0 protocol of current botocore) for ``url``."""
    return boto3.client(
        "sqs", endpoint_url=url, region_name="us-east-1", config=NO_RETRY, **CREDENTIALS, **kw
    )


def _query_model(tmp: Path) -> Path:
    """botocore's SQS model switched to the query protocol: the JSON model plus the query
    names moto ships for it (``service-2.moto-extras.json``: SQS's query element names),
    with the lists and maps that have them flattened, as SQS's query model had them."""
    import botocore.session

    moto_sqs = Path(pytest.importorskip("moto").__file__).parent / "sqs" / "2012-11-05"
    loader = botocore.session.get_session().get_component("data_loader")
    model = copy.deepcopy(loader.load_service_model("sqs", "service-2"))
    with gzip.open(moto_sqs / "service-2.moto-extras.json.gz") as f:
        extras = json.load(f)["merge"]

    def merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
        for key, value in extra.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = value

    merge(model, extras)
    model["metadata"]["protocol"] = "query"
    model["metadata"]["protocols"] = ["query"]

    def rename(node: Any) -> None:
        if isinstance(node, dict):
            if "locationNameForQueryCompatibility" in node:
                node["locationName"] = node.pop("locationNameForQueryCompatibility")
            for value in node.values():
                rename(value)
        elif isinstance(node, list):
            for value in node:
                rename(value)

    rename(model)
    for shape in model["shapes"].values():
        if shape.get("type") == "list" and "locationName" in shape.get("member", {}):
            shape["flattened"] = True
        if shape.get("type") == "map" and "locationName" in shape.get("key", {}):
            shape["flattened"] = True
    # A structure member that is a flattened list is named by its member's element.
    for shape in model["shapes"].values():
        for member in shape.get("members", {}).values():
            target = model["shapes"][member["shape"]]
            element = target.get("member", {}).get("locationName")
            if target.get("type") == "list" and element and "locationName" not in member:
                member["locationName"] = element
            if (
                target.get("type") == "map"
                and target.get("flattened")
                and "locationName" not in member
            ):
                member["locationName"] = target.get("locationName", member.get("locationName"))
    out = tmp / "sqs" / "2012-11-05"
    out.mkdir(parents=True, exist_ok=True)
    (out / "service-2.json").write_text(json.dumps(model))
    return tmp


def query_client(url: str, tmp: Path) -> Any:
    """A boto3 SQS client whose botocore speaks the query protocol (forms in, XML out)."""
    import botocore.session

    session = botocore.session.get_session()
    session.get_component("data_loader").search_paths.insert(0, str(_query_model(tmp)))
    return boto3.Session(botocore_session=session).client(
        "sqs", endpoint_url=url, region_name="us-east-1", config=NO_RETRY, **CREDENTIALS
    )


def reference_md5(attributes: dict[str, dict[str, Any]]) -> str:
    """MD5OfMessageAttributes as the AWS SDK for Java computes it (written from its
    description, not from wonderq's code). Binary values as bytes."""
    digest = hashlib.md5()

    def put(data: bytes) -> None:
        digest.update(struct.pack(">I", len(data)))
        digest.update(data)

    for name in sorted(attributes):
        value = attributes[name]
        put(name.encode("utf-8"))
        put(value["DataType"].encode("utf-8"))
        if "StringValue" in value:
            digest.update(b"\x01")
            put(value["StringValue"].encode("utf-8"))
        else:
            digest.update(b"\x02")
            put(value["BinaryValue"])
    return digest.hexdigest()


def require_program(name: str, how: str) -> str:
    """The path of ``name``, else skip (fail under WONDERQ_REQUIRE_ALL=1)."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed; install it with: {how}"
        if os.environ.get("WONDERQ_REQUIRE_ALL") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """moto's server on a free loopback port (stopped by its PID)."""
    program = require_program("moto_server", "pip install 'moto[server]'")
    port = _free_port()
    proc = subprocess.Popen(
        [program, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
