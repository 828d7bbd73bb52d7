"""The query protocol of SQS: ``Action=...`` form parameters (a POST body or the query
string of a GET or POST), answered in XML in the 2012-11-05 namespace. Clients: SDKs from
before November 2023, boto3 < 1.34.90, hand-rolled HTTP clients.

Parameters arrive flat (``Attribute.1.Name``, ``MessageAttribute.2.Value.StringValue``,
``SendMessageBatchRequestEntry.3.MessageBody``); :func:`parse` turns them into the same
input object the JSON protocol carries, so the actions see one shape. :func:`answer` writes
an output object as SQS's XML, whose lists and maps are "flattened" (repeated elements
named by their member: ``<Attribute><Name/><Value/></Attribute>``).
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

from ..request import Response
from .errors import SqsError, error

__all__ = ["FORM_TYPE", "answer", "answer_error", "parse"]

FORM_TYPE = b"application/x-www-form-urlencoded"
NAMESPACE = "http://queue.amazonaws.com/doc/2012-11-05/"
_HEADERS = b"Content-Type: text/xml\r\n"
# XML parsers turn a raw CR into LF (XML 1.0 section 2.11): written as a reference it stays.
_ENTITIES = {"\r": "&#xD;"}


def _text(value: str) -> str:
    return escape(value, _ENTITIES)


# Flattened maps: parameter prefix -> (input member, key element, value element).
_MAPS = {
    "Attribute": ("Attributes", "Name", "Value"),
    "MessageAttribute": ("MessageAttributes", "Name", "Value"),
    "MessageSystemAttribute": ("MessageSystemAttributes", "Name", "Value"),
    "Tag": ("Tags", "Key", "Value"),
}
# Flattened lists of strings: parameter prefix -> input member.
_LISTS = {
    "AttributeName": "AttributeNames",
    "MessageAttributeName": "MessageAttributeNames",
    "MessageSystemAttributeName": "MessageSystemAttributeNames",
    "TagKey": "TagKeys",
    "AWSAccountId": "AWSAccountIds",
    "ActionName": "Actions",
    "StringListValue": "StringListValues",
    "BinaryListValue": "BinaryListValues",
}
# Flattened lists of structures (batch entries).
_ENTRIES = (
    "SendMessageBatchRequestEntry",
    "DeleteMessageBatchRequestEntry",
    "ChangeMessageVisibilityBatchRequestEntry",
)


def parse(query: str, body: bytes, form: bool) -> dict[str, Any]:
    """The input object of a query-protocol request: the parameters of the query string
    and (``form``) of the form body, with ``Action`` among them."""
    pairs: list[tuple[str, str]] = []
    try:
        if query:
            pairs += parse_qsl(
                query.encode("latin-1").decode("utf-8"),
                keep_blank_values=True,
                errors="strict",
            )
        if form and body:
            pairs += parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict")
    except (UnicodeError, ValueError):
        raise error("MalformedQueryString", "The query string is not valid UTF-8.") from None
    tree: dict[str, Any] = {}
    for name, value in pairs:
        node = tree
        parts = name.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise error("MalformedQueryString", f"The parameter {name} is malformed.")
            node = child
        last = parts[-1]
        if isinstance(node.get(last), dict):
            raise error("MalformedQueryString", f"The parameter {name} is malformed.")
        node[last] = value
    return _shape(tree, top=True)


def _items(node: Any) -> list[Any]:
    """The members of a flattened list node ``{"1": ..., "2": ...}`` in index order."""
    if not isinstance(node, dict):
        raise error("MalformedQueryString", "A list parameter is missing its index.")
    ordered = []
    for index, value in node.items():
        if not (index.isdigit() and index.isascii()):
            raise error("MalformedQueryString", f"Bad list index {index!r}.")
        ordered.append((int(index), value))
    ordered.sort(key=lambda item: item[0])
    return [value for _, value in ordered]


def _shape(tree: dict[str, Any], top: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, node in tree.items():
        if key in _MAPS and isinstance(node, dict):
            member, key_name, value_name = _MAPS[key]
            # Attribute.Name=..&Attribute.Value=..: the unnumbered legacy form (kombu sends it).
            entries = [node] if key_name in node else _items(node)
            mapping: dict[str, Any] = {}
            for entry in entries:
                if not isinstance(entry, dict) or key_name not in entry:
                    raise error("MissingParameter", f"A {key} parameter has no {key_name}.")
                value = entry.get(value_name)
                if isinstance(value, dict):
                    value = _shape(value, top=False)
                mapping[entry[key_name]] = value
            out[member] = mapping
        elif key in _LISTS and isinstance(node, dict):
            out[_LISTS[key]] = _items(node)
        elif key in _ENTRIES and isinstance(node, dict):
            out["Entries"] = [
                _shape(entry, top=False) if isinstance(entry, dict) else entry
                for entry in _items(node)
            ]
        elif isinstance(node, dict) and node and all(k.isdigit() for k in node):
            # A flattened list under its own name (MessageSystemAttributeNames.1=All).
            out[key] = [
                _shape(item, top=False) if isinstance(item, dict) else item for item in _items(node)
            ]
        elif isinstance(node, dict) and len(node) == 1 and "member" in node:
            # A list that is not flattened (members added to SQS's model after the JSON
            # switch, e.g. MessageSystemAttributeNames.member.1).
            out[key] = [
                _shape(item, top=False) if isinstance(item, dict) else item
                for item in _items(node["member"])
            ]
        elif isinstance(node, dict) and len(node) == 1 and "entry" in node:
            # A map that is not flattened: X.entry.1.key / X.entry.1.value.
            mapping = {}
            for entry in _items(node["entry"]):
                if not isinstance(entry, dict) or "key" not in entry:
                    raise error("MissingParameter", f"A {key} entry has no key.")
                value = entry.get("value")
                mapping[entry["key"]] = (
                    _shape(value, top=False) if isinstance(value, dict) else value
                )
            out[key] = mapping
        elif isinstance(node, dict):
            out[key] = _shape(node, top=False)
        else:
            out[key] = node
    if top and "Tags" in out and out.get("Action") == "CreateQueue":
        out["tags"] = out.pop("Tags")  # CreateQueue's member is lowercase in the JSON model
    return out


# ---- answers ----------------------------------------------------------------------------------

# Output members written as repeated elements: member -> element name.
_REPEATED = {
    "QueueUrls": "QueueUrl",
    "queueUrls": "QueueUrl",
    "Messages": "Message",
    "Failed": "BatchResultErrorEntry",
}
# Output maps: member -> (element, key element, value element).
_OUT_MAPS = {
    "Attributes": ("Attribute", "Name", "Value"),
    "MessageAttributes": ("MessageAttribute", "Name", "Value"),
    "Tags": ("Tag", "Key", "Value"),
}


def _xml(parts: list[str], member: str, value: Any, successful: str) -> None:
    if value is None:
        return
    if member in _OUT_MAPS:
        element, key_name, value_name = _OUT_MAPS[member]
        for key, item in value.items():
            parts.append(f"<{element}><{key_name}>{_text(key)}</{key_name}><{value_name}>")
            if isinstance(item, dict):
                for sub, subvalue in item.items():
                    _xml(parts, sub, subvalue, successful)
            else:
                parts.append(_text(str(item)))
            parts.append(f"</{value_name}></{element}>")
        return
    if isinstance(value, list):
        element = successful if member == "Successful" else _REPEATED.get(member, member)
        for item in value:
            if isinstance(item, dict):
                parts.append(f"<{element}>")
                for sub, subvalue in item.items():
                    _xml(parts, sub, subvalue, successful)
                parts.append(f"</{element}>")
            else:
                parts.append(f"<{element}>{_text(str(item))}</{element}>")
        return
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (bytes, bytearray)):
        text = base64.b64encode(value).decode("ascii")
    else:
        text = _text(str(value))
    parts.append(f"<{member}>{text}</{member}>")


# Actions whose answer has no result element (only ResponseMetadata).
_NO_RESULT = frozenset(
    (
        "DeleteQueue",
        "PurgeQueue",
        "SetQueueAttributes",
        "TagQueue",
        "UntagQueue",
        "DeleteMessage",
        "ChangeMessageVisibility",
        "AddPermission",
        "RemovePermission",
    )
)


def answer(action: str, result: dict[str, Any], request_id: bytes) -> Response:
    """The XML answer of ``action`` with output ``result``."""
    rid = request_id.decode("ascii")
    parts = [f'<?xml version="1.0"?><{action}Response xmlns="{NAMESPACE}">']
    if action not in _NO_RESULT:
        parts.append(f"<{action}Result>")
        successful = f"{action}ResultEntry"
        for member, value in result.items():
            _xml(parts, member, value, successful)
        parts.append(f"</{action}Result>")
    parts.append(
        f"<ResponseMetadata><RequestId>{rid}</RequestId></ResponseMetadata></{action}Response>"
    )
    return (200, "".join(parts).encode(), _HEADERS + b"x-amzn-RequestId: " + request_id + b"\r\n")


def answer_error(exc: SqsError, request_id: bytes) -> Response:
    """SQS's ``ErrorResponse``."""
    kind = "Sender" if exc.sender else "Receiver"
    body = (
        f'<?xml version="1.0"?><ErrorResponse xmlns="{NAMESPACE}"><Error><Type>{kind}</Type>'
        f"<Code>{escape(exc.code)}</Code><Message>{_text(exc.message)}</Message><Detail/>"
        f"</Error><RequestId>{request_id.decode('ascii')}</RequestId></ErrorResponse>"
    )
    return (exc.status, body.encode(), _HEADERS + b"x-amzn-RequestId: " + request_id + b"\r\n")
