"""The OpenAPI document (wonderq/openapi.json): valid OpenAPI 3.1, complete against DESIGN.md,
served as is at GET /openapi.json, and honoured by the live server (schemathesis)."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _server import MAX_ID, ServerProcess, get, running_server

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
DOC_PATH = ROOT / "wonderq" / "openapi.json"
DOC: dict[str, Any] = json.loads(DOC_PATH.read_text("utf-8"))

# Every route of DESIGN.md's two tables plus /openapi.json, as OpenAPI paths.
DESIGN_ROUTES = {
    ("post", "/v1/publish"),
    ("get", "/v1/consumer"),
    ("delete", "/v1/consumer"),
    ("get", "/v1/queues"),
    ("put", "/v1/queues/{queue}"),
    ("get", "/v1/queues/{queue}"),
    ("delete", "/v1/queues/{queue}"),
    ("post", "/v1/queues/{queue}/purge"),
    ("post", "/v1/queues/{queue}/messages"),
    ("post", "/v1/queues/{queue}/batch"),
    ("get", "/v1/queues/{queue}/messages"),
    ("delete", "/v1/queues/{queue}/messages/{id}"),
    ("post", "/v1/queues/{queue}/ack"),
    ("post", "/v1/queues/{queue}/messages/{id}/lease"),
    ("get", "/v1/queues/{queue}/peek"),
    ("get", "/v1/events"),
    ("get", "/healthz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
}
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in DOC["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                yield method, path, op


def resolve(node: Any) -> Any:
    """The document with every local $ref inlined (it has no recursive refs)."""
    if isinstance(node, dict):
        if "$ref" in node:
            target: Any = DOC
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            return resolve(target)
        return {k: resolve(v) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve(v) for v in node]
    return node


def parameters(method: str, path: str) -> dict[str, dict[str, Any]]:
    item = DOC["paths"][path]
    params = [*item.get("parameters", []), *item[method].get("parameters", [])]
    return {p["name"]: p for p in resolve(params)}


# ---- the document -----------------------------------------------------------------------------
def test_document_is_valid_openapi_3_1() -> None:
    from openapi_spec_validator import validate

    assert DOC["openapi"].startswith("3.1")
    validate(DOC)


def design_routes_from_markdown(text: str) -> set[tuple[str, str]]:
    routes = set()
    for m in re.finditer(r"^\| `([A-Z]+) (/[^`?]*)[^`]*` \|", text, re.M):
        path = re.sub(r"\{q\}", "{queue}", m.group(2))
        routes.add((m.group(1).lower(), path))
    return routes


def test_every_route_of_the_design_is_documented() -> None:
    documented = {(m, p) for m, p, _ in operations()}
    assert documented == DESIGN_ROUTES
    # When the shared design contract is at hand, read its tables too.
    candidates = [os.environ.get("WONDERQ_DESIGN", ""), str(ROOT.parent / "shared" / "DESIGN.md")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            routes = design_routes_from_markdown(Path(candidate).read_text("utf-8"))
            assert len(routes) >= 15, routes
            assert routes <= documented, routes - documented


def test_every_operation_has_an_id_summary_and_common_errors() -> None:
    ids = set()
    for method, path, op in operations():
        assert op.get("operationId") and op["operationId"] not in ids, (method, path)
        ids.add(op["operationId"])
        assert op.get("summary"), (method, path)
        for status in ("414", "431", "500", "503"):
            assert status in op["responses"], (method, path, status)


def test_errors_per_route() -> None:
    for method, path, op in operations():
        codes = set(op["responses"])
        if "{queue}" in path:
            assert {"400", "404"} <= codes, (method, path)
        if parameters(method, path):
            assert "400" in codes, (method, path)
        if "requestBody" in op:
            assert "413" in codes, (method, path)
    for method, path in [
        ("post", "/v1/publish"),
        ("post", "/v1/queues/{queue}/messages"),
        ("post", "/v1/queues/{queue}/batch"),
    ]:
        assert "507" in DOC["paths"][path][method]["responses"], path
    assert "409" in DOC["paths"]["/v1/queues/{queue}"]["delete"]["responses"]
    assert "204" in DOC["paths"]["/v1/queues/{queue}"]["delete"]["responses"]
    assert "201" in DOC["paths"]["/v1/queues/{queue}"]["put"]["responses"]
    assert "200" in DOC["paths"]["/v1/queues/{queue}"]["put"]["responses"]
    # 405 with Allow is documented once, for all routes.
    not_allowed = resolve(DOC["components"]["responses"]["MethodNotAllowed"])
    assert "Allow" in not_allowed["headers"]
    for name in ("UriTooLong", "HeadersTooLarge", "InsufficientStorage", "Conflict"):
        assert name in DOC["components"]["responses"]


def test_every_response_has_cache_control_and_content_length() -> None:
    for method, path, op in operations():
        for status, response in resolve(op["responses"]).items():
            headers = response.get("headers", {})
            assert headers["Cache-Control"]["schema"]["const"] == "no-store", (path, status)
            assert "Date" in headers, (method, path, status)
            if status == "204":
                assert "content" not in response and "Content-Length" not in headers
            elif "text/event-stream" in response.get("content", {}):
                assert "Content-Length" not in headers  # a stream's length is its end
            else:
                assert "Content-Length" in headers, (method, path, status)
                assert response.get("content"), (method, path, status)


def test_error_schema() -> None:
    error = resolve(DOC["components"]["schemas"]["Error"])
    assert error["required"] == ["error"]
    inner = error["properties"]["error"]
    assert set(inner["required"]) == {"code", "message"}
    for method, path, op in operations():
        for status, response in resolve(op["responses"]).items():
            if int(status) >= 400:
                schema = response["content"]["application/json"]["schema"]
                assert schema == error, (method, path, status)


def test_parameters_have_exact_patterns_and_ranges() -> None:
    decimal = "^[0-9]+(\\.[0-9]+)?$"
    ranges = {"visibility": 43200, "timeout": 43200, "delay": 604800, "wait": 20}
    seen = set()
    for method, path, _ in operations():
        for name, p in parameters(method, path).items():
            seen.add(name)
            schema = p["schema"]
            if name == "cid":
                assert p["required"] and p["in"] == "query"
                assert (schema["type"], schema["minimum"], schema["maximum"]) == (
                    "integer",
                    0,
                    MAX_ID,
                )
            elif name == "id":
                assert p["required"]
                assert (schema["type"], schema["minimum"], schema["maximum"]) == (
                    "integer",
                    1,
                    MAX_ID,
                )
            elif name == "limit" and path == "/v1/queues":
                assert not p["required"]
                assert (schema["minimum"], schema["maximum"], schema["default"]) == (1, 1000, 1000)
            elif name in ("prefix", "after"):
                assert not p["required"] and p["in"] == "query"
                assert schema["pattern"] == "^[A-Za-z0-9_-]{0,80}$"
            elif name == "limit":
                assert not p["required"]
                assert (schema["minimum"], schema["default"]) == (1, 1)
                assert "max-batch" in p["description"]
            elif name in ranges:
                assert schema["type"] == "string" and schema["pattern"] == decimal
                assert schema["x-minimum"] == 0 and schema["x-maximum"] == ranges[name]
                assert str(ranges[name]) in p["description"]
                assert p["required"] == (name == "timeout")
            elif name == "queue":
                assert p["in"] == "path" and schema["pattern"] == "^[A-Za-z0-9_-]{1,80}$"
            else:
                raise AssertionError(f"undocumented parameter kind {name}")
    assert seen == {
        *("cid", "id", "limit", "wait", "visibility", "delay", "timeout", "queue"),
        *("prefix", "after"),
    }
    receive = parameters("get", "/v1/queues/{queue}/messages")
    assert set(receive) == {"queue", "cid", "limit", "wait", "visibility"}
    assert set(parameters("get", "/v1/consumer")) == {"cid", "limit", "wait", "visibility"}
    assert set(parameters("delete", "/v1/consumer")) == {"cid", "id"}
    assert set(parameters("post", "/v1/publish")) == {"delay"}


def test_patterns_accept_and_refuse_what_the_contract_says() -> None:
    decimal = re.compile("^[0-9]+(\\.[0-9]+)?$")
    for good in ("0", "30", "0.25", "20", "604800"):
        assert decimal.match(good)
    for bad in ("-1", "+1", "1e3", "nan", "inf", ".5", "5.", "", " 1", "0x10"):
        assert not decimal.match(bad), bad
    name = re.compile("^[A-Za-z0-9_-]{1,80}$")
    assert name.match("jobs-dlq_2") and name.match("a" * 80)
    for bad in ("", "a" * 81, "a.b", "a b", "a/b", "é"):
        assert not name.match(bad), bad


def test_request_bodies() -> None:
    def body(method: str, path: str) -> dict[str, Any]:
        return dict(resolve(DOC["paths"][path][method]["requestBody"]))

    for path in ("/v1/publish", "/v1/queues/{queue}/messages"):
        raw = body("post", path)
        assert raw["required"] and raw["content"]["text/plain"]["schema"]["minLength"] == 1
    batch = body("post", "/v1/queues/{queue}/batch")["content"]["application/json"]["schema"]
    assert batch["type"] == "array" and batch["minItems"] == 1
    string_entry, object_entry = batch["items"]["oneOf"]
    assert string_entry["type"] == "string"
    assert object_entry["required"] == ["body"]
    assert object_entry["properties"]["delay"]["maximum"] == 604800
    ack = body("post", "/v1/queues/{queue}/ack")["content"]["application/json"]["schema"]
    assert set(ack["required"]) == {"cid", "ids"}
    assert ack["properties"]["ids"]["items"]["minimum"] == 1
    put = body("put", "/v1/queues/{queue}")
    assert put["required"] is False
    attrs = put["content"]["application/json"]["schema"]
    assert attrs["additionalProperties"] is False
    assert set(attrs["properties"]) == {
        "visibility_timeout",
        "delay",
        "max_receives",
        "dead_letter_queue",
        "max_message_bytes",
    }
    assert attrs["properties"]["max_receives"]["type"] == ["integer", "null"]
    assert attrs["properties"]["dead_letter_queue"]["type"] == ["string", "null"]
    for path, method in [
        ("/v1/queues/{queue}/purge", "post"),
        ("/v1/queues/{queue}/messages/{id}/lease", "post"),
    ]:
        assert "requestBody" not in DOC["paths"][path][method]


def test_response_schemas() -> None:
    info = resolve(DOC["components"]["schemas"]["QueueInfo"])
    assert set(info["required"]) == {"name", "attributes", "counts", "totals"}
    assert set(info["properties"]["counts"]["required"]) == {"ready", "leased", "delayed"}
    assert set(info["properties"]["totals"]["required"]) == {
        "published",
        "delivered",
        "deleted",
        "expired",
        "dead_lettered",
    }
    metrics = DOC["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain; version=0.0.4"]


def test_examples_match_their_schemas() -> None:
    from jsonschema import Draft202012Validator

    checked = 0
    for _method, _path, op in operations():
        holders = [resolve(op.get("requestBody", {})), *resolve(op["responses"]).values()]
        for holder in holders:
            for media in holder.get("content", {}).values():
                if "example" in media:
                    Draft202012Validator(media["schema"]).validate(media["example"])
                    checked += 1
    for schema in DOC["components"]["schemas"].values():
        for example in schema.get("examples", []):
            Draft202012Validator(resolve(schema)).validate(example)
            checked += 1
    assert checked > 20


def test_document_is_packaged() -> None:
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    assert "openapi.json" in pyproject["tool"]["setuptools"]["package-data"]["wonderq"]


# ---- the live server --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with running_server() as srv:
        yield srv


def test_served_document_is_the_packaged_file(server: ServerProcess) -> None:
    resp = get(server, "/openapi.json")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    assert resp.json() == DOC


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_schemathesis_finds_no_5xx_and_no_nonconforming_response(
    server: ServerProcess, tmp_path: Path
) -> None:
    pytest.importorskip("schemathesis")
    doc = copy.deepcopy(DOC)
    # A long poll on an empty queue would park for up to `wait` seconds: keep waits short so
    # the run spends its time on requests, not on waiting.
    doc["components"]["parameters"]["wait"]["schema"]["pattern"] = "^0(\\.[0-9]{1,2})?$"
    # The event stream never ends by itself: a client that reads a whole body would time out
    # (tests/test_status_assets.py checks it).
    del doc["paths"]["/v1/events"]
    schema_file = tmp_path / "openapi.json"
    schema_file.write_text(json.dumps(doc), "utf-8")
    seed = int(os.environ.get("WONDERQ_SCHEMATHESIS_SEED", "4242"))
    print(f"schemathesis seed {seed} (set WONDERQ_SCHEMATHESIS_SEED to replay)")
    checks = ",".join(
        [
            "not_a_server_error",
            "status_code_conformance",
            "content_type_conformance",
            "response_headers_conformance",
            "response_schema_conformance",
            "unsupported_method",
            "allow_header_conformance",
        ]
    )
    cmd = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--no-color",
        "run",
        str(schema_file),
        "--url",
        server.url,
        "--checks",
        checks,
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        os.environ.get("WONDERQ_SCHEMATHESIS_EXAMPLES", "30"),
        "--seed",
        str(seed),
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--report-dir",
        str(tmp_path / "report"),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=540, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-20000:] + "\n--- server ---\n" + server.output()
    get(server, "/healthz")  # still up
