# A queue's attributes and rules that need no other queue: names, attribute checks, the
# dead-letter decision. The registry of queues (names, indices, dead-letter references) is the
# Broker's.

import re
from collections.abc import Mapping


_QUEUE_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}")


cdef int queue_check_name(object name) except -1:
    if not isinstance(name, str) or _QUEUE_NAME.fullmatch(name) is None:
        raise InvalidArgument(
            "queue name must match [A-Za-z0-9_-]{1,80}", "invalid_queue_name")
    return 0


cdef dict queue_default_attributes(int64_t visibility_ms, int64_t max_message_bytes):
    """The attributes of a new queue before its own are applied."""
    return {
        "visibility_timeout_ms": visibility_ms,
        "delay_ms": 0,
        "max_receives": None,
        "dead_letter_queue": None,
        "max_message_bytes": max_message_bytes,
        "retention_ms": None,
        "meta": None,
    }


cdef object queue_check_meta(object value):
    """``meta``: None, or a str of at most C_MAX_META_BYTES bytes of UTF-8 that the engine
    keeps for the faces without reading it (the SQS face's JSON object of SQS-only queue
    attributes and tags)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidArgument("meta must be a string or null", "invalid_attribute")
    try:
        n = len((<str>value).encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidArgument("meta must be valid UTF-8 text", "invalid_attribute") from None
    if n > C_MAX_META_BYTES:
        raise InvalidArgument(
            f"meta must be at most {C_MAX_META_BYTES} bytes", "invalid_attribute")
    return value


cdef int queue_apply_attributes(dict new, object attributes, int64_t max_message_bytes) except -1:
    """Check each of ``attributes`` (in its order) and set it in ``new``; InvalidArgument
    (``invalid_attribute``) names the first bad one. Whether the dead-letter queue exists is
    the broker's check."""
    if attributes is None:
        return 0
    if not isinstance(attributes, Mapping):
        raise InvalidArgument("attributes must be a mapping", "invalid_attribute")
    for key, value in attributes.items():
        if key == "visibility_timeout_ms":
            new[key] = arg_int(value, 0, C_MAX_VISIBILITY_MS, "invalid_attribute", key)
        elif key == "delay_ms":
            new[key] = arg_int(value, 0, C_MAX_DELAY_MS, "invalid_attribute", key)
        elif key == "max_receives":
            new[key] = (None if value is None
                        else arg_int(value, 1, C_MAX_ID, "invalid_attribute", key))
        elif key == "max_message_bytes":
            new[key] = arg_int(value, 1, max_message_bytes, "invalid_attribute", key)
        elif key == "retention_ms":
            new[key] = (None if value is None
                        else arg_int(value, C_MIN_RETENTION_MS, C_MAX_RETENTION_MS,
                                     "invalid_attribute", key))
        elif key == "dead_letter_queue":
            if value is not None and not isinstance(value, str):
                raise InvalidArgument(
                    "dead_letter_queue must be a queue name or null", "invalid_attribute")
            new[key] = value
        elif key == "meta":
            new[key] = queue_check_meta(value)
        else:
            raise InvalidArgument(f"unknown attribute {key!r}", "invalid_attribute")
    return 0


cdef inline bint goes_to_dlq(Queue* q, uint32_t receives) noexcept nogil:
    """Whether a message received ``receives`` times, leaving a lease in q, is dead-lettered
    rather than made available again."""
    return q.max_receives > 0 and receives >= q.max_receives and q.dlq >= 0
