"""Type stubs for the compiled queue engine (``wonderq/_core.pyx``).

The engine does no I/O and reads no clock: every call that depends on time takes ``now``,
monotonic milliseconds supplied by the caller. All times are integer milliseconds.

Errors: every exception the engine raises for bad input derives from :class:`EngineError` and
carries ``status`` (the HTTP status the API layer answers with) and ``code`` (the snake_case
error code of the JSON error body); ``str(exc)`` is a human sentence naming the parameter.
When an engine call raises, the engine's state is unchanged. Arguments are checked in the order
of the signature (see tests/model.py for the exact order); ``now`` must be in 0..2**42-1
(``invalid_now``; 139 years of a monotonic clock). Integer arguments must be ``int`` (``bool``
is refused).

Every message keeps its publish time (``sent_ms``, the ``now`` of its publish, exact) and its
first receive time (``first_receive_ms``: exact up to 65.5 s after the publish, then to 16
significant bits of that distance, an error under 31 ppm), and optionally an opaque attribute
blob (bytes the store keeps for it, e.g. SQS message attributes). A queue with
``retention_ms`` drops a message once ``now >= sent_ms + retention_ms`` (see ``expire``).

``InvalidArgument.code`` values: ``invalid_queue_name``, ``invalid_attribute``, ``invalid_body``,
``invalid_batch``, ``invalid_limit``, ``invalid_cid``, ``invalid_id``, ``invalid_delay``,
``invalid_visibility``, ``invalid_timeout``, ``invalid_receives``, ``invalid_budget``,
``invalid_now``, ``invalid_cursor``, ``invalid_max_count``, ``invalid_time``,
``invalid_attributes``, ``too_many_queues`` (and ``invalid_<setting>`` for Broker's
constructor).
"""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from .queuenames import QueueNames

#: Bytes accounted per message on top of its JSON-escaped body (and of its attribute blob plus
#: 4 when it has one): the 24-byte C header plus allocation slack (an estimate; the memory
#: limit counts against it).
MESSAGE_OVERHEAD: Final[int]
#: Largest message id / consumer id (2**63 - 1).
MAX_ID: Final[int]
#: Attribute limits in milliseconds (the contract's 43200 s and 604800 s).
MAX_VISIBILITY_MS: Final[int]
MAX_DELAY_MS: Final[int]
#: Most queues one broker holds at once (65536).
MAX_QUEUES: Final[int]
#: Largest ``now`` (2**42 - 1 ms); times given to ``restore`` may go down to -MAX_NOW - 1.
MAX_NOW: Final[int]
#: Bounds of a queue's ``retention_ms`` (60 s and 14 days, as Amazon SQS).
MIN_RETENTION_MS: Final[int]
MAX_RETENTION_MS: Final[int]
#: Largest queue ``meta`` in bytes of UTF-8 (65536).
MAX_META_BYTES: Final[int]

def now_ms() -> int:
    """CLOCK_MONOTONIC in whole milliseconds: ``time.monotonic_ns() // 1_000_000``, cheaper.
    The ``now`` the server passes to every engine call."""

def keep_big_blocks_in_heap(nbytes: int = 32 << 20) -> bool:
    """glibc's ``mallopt(M_MMAP_THRESHOLD, nbytes)``: blocks below it come from the heap (in
    huge pages where the heap has them), not a mapping each. True when set."""

def release_free_memory() -> bool:
    """glibc's malloc_trim(0): the C heap's free pages back to the system."""

def batch_ids_json(first: int, n: int) -> bytes:
    """``b'{"ids":[first,...,first+n-1]}'``, the answer to a batch publish."""

def id_json(msg_id: int) -> bytes:
    """``b'{"id":N}'``, the answer to a publish."""

class EngineError(Exception):
    status: int
    code: str
    def __init__(self, message: str, code: str | None = None) -> None:
        """``code`` overrides the class's default code for this instance."""

class InvalidArgument(EngineError, ValueError):
    """400; ``code`` names the problem, e.g. ``invalid_limit``, ``invalid_body``."""

class QueueNotFound(EngineError, KeyError):
    """404 ``queue_not_found``."""

class QueueInUse(EngineError):
    """409 ``queue_in_use``: the queue is another queue's dead-letter queue, or is ``default``."""

class MessageTooLarge(EngineError):
    """413 ``message_too_large``: a body is longer than the queue's ``max_message_bytes``."""

class MemoryLimitExceeded(EngineError):
    """507 ``memory_limit``: storing the message(s) would pass the broker's memory limit."""

class IdsExhausted(EngineError):
    """507 ``ids_exhausted``: the id counter has passed MAX_ID (practically unreachable)."""

class BodyBlock:
    """``size`` (2049..2**28) bytes of a big body, writable through the buffer protocol, in
    a block laid out as a big message's. ``Broker.publish`` takes the block itself as the
    message (no copy of the body) when the body needs no JSON escaping and the message has
    no attributes and no buffer of the block is held; else it copies from it. Once taken the
    block is empty: ``len()`` 0, no buffer."""

    def __init__(self, size: int) -> None: ...
    def __len__(self) -> int: ...
    def __bytes__(self) -> bytes: ...
    def __buffer__(self, flags: int) -> memoryview: ...

class BodyView:
    """A read-only buffer of the escaped body of a big message (VIEW_MIN_BYTES = 32 KiB or
    more), sharing its block: the block stays alive while a view of it does, also after the
    message was deleted, purged or dropped. Made by the engine only: one made from Python is
    empty and has no buffer."""

    def __len__(self) -> int: ...
    def __bytes__(self) -> bytes: ...
    def __buffer__(self, flags: int) -> memoryview: ...

class SplitBody:
    """A receive's or peek's answer holding big bodies: ``pieces``, bytes objects and
    BodyViews in order, which together are exactly the one-piece answer. ``len()`` is its
    length in bytes; ``bytes()`` joins it. The server writes the pieces as they are."""

    @property
    def pieces(self) -> tuple[bytes | BodyView, ...]: ...
    @property
    def size(self) -> int: ...
    def __len__(self) -> int: ...
    def __bytes__(self) -> bytes: ...

class Broker(QueueNames):
    """All queues of one server, one id counter, one timer heap.

    The queue named ``default`` always exists and cannot be deleted.
    """

    def __init__(
        self,
        *,
        visibility_ms: int = 30000,
        max_message_bytes: int = 1048576,
        max_batch: int = 1000,
        max_memory: int = 0,
        track_dead_letters: bool = False,
    ) -> None:
        """``visibility_ms`` and ``max_message_bytes`` are the defaults of new queues (and of
        ``default``); ``max_message_bytes`` is also the ceiling a queue may be set to.
        ``max_batch`` bounds ``limit`` and batch sizes. ``max_memory`` = 0 means no limit.
        Bounds: visibility_ms 0..MAX_VISIBILITY_MS, max_message_bytes 1..2**28,
        max_batch 1..2**20, max_memory >= 0; else InvalidArgument. ``track_dead_letters``
        records dead-letter moves for :meth:`take_dead_lettered` (the durability log)."""

    # ---- queues -------------------------------------------------------------------------
    def prefetch_name(self, data: bytes, start: int) -> None:
        """A hint that the queue named ``data[start:end]`` (``end``: the next ``/`` or ``?``,
        or the end) is about to be looked up: its slot in the name table starts loading.
        Changes nothing a caller sees; any bytes will do."""
    def known_name(self, path: str, start: int, end: int) -> str | None:
        """The name of the queue named ``path[start:end]``, as the broker keeps it (the same
        str object on every call), or None: the router hands it on, and the lookup that
        follows is its identity. Reads only; any str and bounds will do."""
    def put_queue(self, name: str, attributes: Mapping[str, Any] | None = None) -> bool:
        """Create queue ``name`` or update its attributes; True if it was created.

        Keys (all optional; a missing key keeps the current value, or the default on create):
        ``visibility_timeout_ms`` (0..MAX_VISIBILITY_MS), ``delay_ms`` (0..MAX_DELAY_MS),
        ``max_receives`` (int >= 1, or None for no limit), ``dead_letter_queue`` (str or None),
        ``max_message_bytes`` (1..broker max), ``retention_ms`` (60_000..1_209_600_000, or None
        to keep messages until deleted), ``meta`` (None, or a str of at most MAX_META_BYTES
        bytes of UTF-8 that the engine keeps without reading: the SQS face's JSON object of
        SQS-only queue attributes and tags). Keys are checked in the mapping's order.
        Unknown keys, wrong types and out-of-range values raise InvalidArgument (code
        ``invalid_attribute``) naming the key. ``max_receives``
        without a dead-letter queue, a dead-letter queue that does not exist, or the queue
        itself as its dead-letter queue raise InvalidArgument. Bad names (not
        ``[A-Za-z0-9_-]{1,80}``) raise InvalidArgument (``invalid_queue_name``).
        """

    def delete_queue(self, name: str) -> int:
        """Drop the queue and every message in it (ready, delayed, leased); returns how many.
        QueueNotFound; QueueInUse for ``default`` or a queue serving as a dead-letter queue."""

    def purge(self, name: str) -> int:
        """Drop every message of the queue (ready, delayed and leased); returns how many."""

    def has_queue(self, name: str) -> bool: ...
    def queue_names(self) -> list[str]:
        """Names of all queues, sorted."""

    def queue_info(self, name: str) -> dict[str, Any]:
        """``{"name", "attributes": {visibility_timeout_ms, delay_ms, max_receives,
        dead_letter_queue, max_message_bytes, retention_ms, meta}, "counts": {ready, leased,
        delayed}, "totals": {published, delivered, deleted, expired, dead_lettered}}``.
        ``max_receives``, ``dead_letter_queue``, ``retention_ms`` and ``meta`` are None when
        unset. (The ``expired_retention`` total is in ``stats()`` only, so the API's
        ``<info>`` keeps the contract's five totals.)"""

    def ready_count(self, name: str) -> int:
        """Messages available now (cheap; used to decide whether to park a long poll)."""

    def queue_delay_ms(self, queue: str) -> int:
        """The queue's default publish delay, what a publish with ``delay_ms=-1`` gets (the
        durable log records the delay each publish got). QueueNotFound. O(1)."""

    # ---- messages -----------------------------------------------------------------------
    def publish(
        self,
        queue: str,
        body: bytes | bytearray | memoryview | BodyBlock,
        now: int,
        delay_ms: int = -1,
        attributes: bytes | bytearray | memoryview | None = None,
    ) -> int:
        """Store one message and return its id. ``delay_ms`` -1 means the queue's default
        delay; > 0 keeps the message invisible until ``now + delay_ms``. The body must be
        1..max_message_bytes bytes of valid UTF-8 (InvalidArgument ``invalid_body`` /
        MessageTooLarge). ``attributes``: an opaque blob kept with the message (None: none;
        another type: ``invalid_attributes``; longer than max_message_bytes:
        MessageTooLarge), counted by the memory limit; a message without one costs nothing
        for it. The publish time is ``now``. Counts ``published``. O(1), O(log n) when
        delayed."""

    def publish_batch(
        self,
        queue: str,
        bodies: Sequence[bytes],
        now: int,
        delays: Sequence[int] | None = None,
        attributes: Sequence[bytes | None] | None = None,
    ) -> int:
        """All or nothing: validate every body (and delay, and blob), check memory for the
        whole batch, then store them with consecutive ids. Returns the first id; the ids are
        ``range(first, first + len(bodies))``. 1..max_batch bodies (``invalid_batch``);
        ``delays[i]`` as ``delay_ms`` of publish (-1 = queue default); ``delays`` of another
        length is ``invalid_delay``; ``attributes[i]`` as publish's ``attributes``, a list of
        another length is ``invalid_attributes``."""

    def publish_batch_json(
        self, queue: str, data: bytes, now: int, bodies: list[bytes] | None = None
    ) -> bytes | None:
        """The fast path of a JSON batch: when ``data`` is a JSON array of 1..max_batch
        strings without a backslash, each a valid body for the queue (non-empty, UTF-8, no
        control character, at most max_message_bytes), publish them all (as publish_batch
        with the queue's delay) and return ``b'{"ids":[...]}'``. Otherwise store nothing and
        return None: the caller parses ``data`` itself and reports what is wrong. Raises as
        publish_batch when the memory limit or the ids run out. ``bodies``, if given, gets
        the raw body of each stored message appended, in id order, so the durable log can
        record them; when nothing is stored (None or an exception) it is left as it was."""

    def ack_json(
        self, queue: str, data: bytes, now: int, deleted: list[int] | None = None
    ) -> bytes | None:
        """The fast path of a JSON batch ack: when ``data`` is ``{"cid": C, "ids": [...]}``
        (either key order, JSON whitespace anywhere) with C in 0..MAX_ID and 1..max_batch
        ids in 1..MAX_ID written as plain JSON integers, delete each as delete_batch does and
        return ``b'{"deleted":[...],"failed":[...]}'`` (input order). Otherwise delete
        nothing and return None: the caller parses ``data`` itself and names the error.
        ``deleted``, if given, gets the ids it deleted appended, in input order (for the
        durable log); left as it was when the call returns None."""

    def receive(
        self,
        queue: str,
        cid: int,
        limit: int,
        now: int,
        visibility_ms: int = -1,
        leased: list[int] | None = None,
    ) -> bytes | SplitBody:
        """Lease up to ``limit`` available messages (lowest ids first) to ``cid`` until
        ``now + visibility_ms`` (-1 = the queue's visibility timeout) and count one receive on
        each. Returns the JSON response body, exactly
        ``{"messages":[{"id":17,"body":"<escaped>","receives":1},...]}`` with no spaces;
        bodies escaped as ``json.dumps(s, ensure_ascii=False)`` escapes them. Bytes, or a
        SplitBody when an escaped body is 32 KiB or more (``bytes()`` of it is the same
        answer).
        ``limit`` outside 1..max_batch: InvalidArgument (``invalid_limit``); ``cid`` outside
        0..MAX_ID: InvalidArgument (``invalid_cid``); ``visibility_ms`` outside
        -1..MAX_VISIBILITY_MS: ``invalid_visibility``. Nothing available: the constant
        ``b'{"messages":[]}'``. O(k log n) for k messages. ``leased``, if given, gets the
        leased ids appended, in order (for the durability log)."""

    def receive_list(
        self,
        queue: str,
        cid: int,
        limit: int,
        now: int,
        visibility_ms: int = -1,
        leased: list[int] | None = None,
    ) -> list[tuple[int, bytes, int, int, int, bytes | None]]:
        """``receive`` (same rules, arguments and effects), answered as one tuple per leased
        message: ``(id, raw body, receives, sent_ms, first_receive_ms, attributes)`` -
        receives as after this receive, first_receive_ms this receive's ``now`` (as stored)
        when it is the first, ``attributes`` None when the message has no blob. Nothing
        available: ``[]``. (The SQS face.)"""

    def peek(self, queue: str, limit: int, now: int) -> bytes | SplitBody:
        """The next ``limit`` available messages, those a receive would take now (lowest ids
        first), in exactly receive's JSON format, each with its current receive count. Nothing
        is leased or counted; messages past the queue's retention that it meets are dropped
        (as a receive would). ``limit`` 1..max_batch (``invalid_limit``). O(k log n).
        (For dashboards and debugging: GET /v1/queues/{q}/peek.)"""

    def delete(self, queue: str, cid: int, msg_id: int, now: int) -> bool:
        """Ack: True iff message ``msg_id`` is in ``queue``, leased to ``cid``, and
        ``now < deadline``; it is then removed (counts ``deleted``). Otherwise False and
        nothing changes. ``msg_id`` outside 1..MAX_ID: InvalidArgument (``invalid_id``).
        O(log n)."""

    def delete_batch(
        self, queue: str, cid: int, msg_ids: Iterable[int], now: int
    ) -> tuple[list[int], list[int]]:
        """Delete each id by the rule of ``delete``; returns ``(deleted, failed)`` in input
        order (a repeated id fails the second time). At most max_batch ids (``invalid_batch``);
        every id is checked before any is deleted."""

    def change_lease(self, queue: str, cid: int, msg_id: int, timeout_ms: int, now: int) -> bool:
        """Same ownership rule as ``delete``. If it holds, the lease deadline becomes
        ``now + timeout_ms``; ``timeout_ms == 0`` releases the message at once (it becomes
        available, or is dead-lettered if it reached max_receives; not counted as expired).
        ``timeout_ms`` outside 0..MAX_VISIBILITY_MS: ``invalid_timeout``. O(log n)."""

    def delete_token(self, queue: str, msg_id: int, receives: int, now: int) -> bool:
        """Delete by lease token (DESIGN.md "Lease token"): the token of a receive is the
        message's id and the receive count that receive gave it. True iff ``msg_id`` is in
        ``queue``, leased (to any cid), its receive count equals ``receives`` (the receive
        that gave the token holds the current lease) and ``now < deadline``; the message is
        then removed (counts ``deleted``). Otherwise False and nothing changes, so a token
        from an earlier receive can never act. ``receives`` 0..2**32-1 (``invalid_receives``).
        O(log n)."""

    def change_lease_token(
        self, queue: str, msg_id: int, receives: int, timeout_ms: int, now: int
    ) -> bool:
        """``change_lease`` by lease token, with the rule of ``delete_token``: extend
        (deadline = now + timeout_ms) or release (``timeout_ms == 0``: available again, or
        dead-lettered at max_receives; not counted as expired). O(log n)."""

    # ---- timers -------------------------------------------------------------------------
    def next_deadline(self) -> int:
        """The earliest deadline ``expire`` has work at: a lease or delay end, or the
        retention end of a queue's oldest ready message; -1 if there is none. O(1)."""

    def expire(self, now: int, budget: int) -> int:
        """Process at most ``budget`` heap entries whose deadline is <= now, in (deadline, id)
        order: an expired lease makes the message available again with its receive count
        (``expired`` += 1), or moves it to the dead-letter queue when receives >= max_receives
        (``dead_lettered`` += 1 on the source queue; receives reset to 0; same id and body);
        an ended delay makes the message available. A message that would become available
        after its queue's retention has passed is dropped instead (``expired_retention`` += 1
        in stats). The oldest ready message (lowest id) of a queue with retention, once its
        retention has passed, is an entry too: dropped, in the same (deadline, id) order.
        Returns the number processed.
        Until an entry is processed by ``expire``, an expired lease still blocks the message
        from ``receive`` but can no longer be deleted or changed. ``budget`` >= 0
        (``invalid_budget``); O(log n) per entry."""

    # ---- accounting and metrics ---------------------------------------------------------
    @property
    def memory_bytes(self) -> int:
        """Bytes held: sum over messages of MESSAGE_OVERHEAD + len(escaped body), plus 4 +
        len(blob) for those with an attribute blob."""

    @property
    def memory_limit(self) -> int:
        """The configured limit in bytes (0 = none)."""

    @property
    def message_count(self) -> int: ...
    def stats(
        self, names: Iterable[str] | None = None
    ) -> list[tuple[str, int, int, int, int, int, int, int, int, int]]:
        """One tuple per queue for the metrics collector: (name, ready, leased, delayed,
        published, delivered, deleted, expired, dead_lettered, expired_retention), sorted by
        name; with ``names``, for those of them that exist, in that order.
        ``expired_retention``: messages dropped because their retention ran out."""

    # ---- recovery hooks (durability) ----------------------------------------------------
    @property
    def next_id(self) -> int:
        """The id the next publish will get (MAX_ID + 1 once ids are exhausted)."""

    def set_next_id(self, next_id: int) -> None:
        """Continue the id counter from ``next_id`` (it never moves backwards: a smaller value
        is ignored). ``next_id`` outside 1..MAX_ID + 1: InvalidArgument (``invalid_id``)."""

    def restore(
        self,
        queue: str,
        msg_id: int,
        body: bytes,
        receives: int,
        now: int,
        delay_ms: int = 0,
        sent_ms: int | None = None,
        first_receive_ms: int | None = None,
        attributes: bytes | None = None,
    ) -> None:
        """Insert a message with a given id and receive count as available (or delayed by
        ``delay_ms``), bypassing the memory limit; the id counter moves past ``msg_id``.
        ``sent_ms`` (None: ``now``) and ``first_receive_ms`` (None: never received) are in
        -2**42..2**42-1 (``invalid_time``; before the publish counts as at it) and kept as
        publish keeps them; ``attributes`` as publish's (at most 2**28 bytes). A message
        already past its queue's retention is stored, then dropped by expire or a receive.
        Does not count ``published``. InvalidArgument (``invalid_id``) if the id is in use.
        The body must be non-empty valid UTF-8; the queue's ``max_message_bytes`` is not
        applied (the limit may have changed since). ``receives`` 0..2**32-1
        (``invalid_receives``); ``delay_ms`` 0..MAX_DELAY_MS.

        Cost: O(1) in any order. The engine keeps no index of all ids (to save memory), so the
        first restore of an id below ``next_id`` builds one in O(n); it is kept up to date
        until the next ``publish``/``publish_batch`` (the end of recovery) frees it. Restoring
        in increasing id order, then calling ``set_next_id``, never needs it."""

    def dump_messages(
        self, cursor: int, max_count: int, now: int
    ) -> tuple[int, list[tuple[int, str, bytes, int, int, int, int | None, bytes | None]]]:
        """Every message for a snapshot, a chunk at a time, in id order. Start with cursor 0;
        returns ``(next_cursor, batch)``, next_cursor 0 meaning the iteration is complete
        (otherwise it is the last id of the batch). ``batch`` holds up to ``max_count``
        ``(id, queue, body, receives, delay_remaining_ms, sent_ms, first_receive_ms,
        attributes)``: the raw body as published; ``delay_remaining_ms`` = max(0, deadline -
        now) for a delayed message, else 0 (leased messages too); first_receive_ms and
        attributes None when absent (restore takes all of them back). Cursor 0 takes a
        sorted snapshot of all messages (O(n), plus a radix sort unless ids are already in
        order; 24 bytes per message until the iteration ends);
        each later call is O(max_count). Other calls may change the broker between two calls:
        a message that exists during the whole iteration is returned exactly once, with its
        state at the call that returns it (a dead-lettered one under its new queue); messages
        created meanwhile are not returned, removed ones not after their removal. A cursor
        other than the last one handed out continues after that id. InvalidArgument
        (``invalid_cursor``, ``invalid_max_count``) for a cursor outside 0..MAX_ID or a
        max_count below 1."""

    def take_dead_lettered(self) -> list[tuple[int, str]]:
        """The ``(id, dead-letter queue)`` moves made by ``expire`` and ``change_lease``
        since the last call, in order; always empty unless ``track_dead_letters``."""

    # ---- debugging ----------------------------------------------------------------------
    def allocator_stats(self) -> dict[str, int]:
        """The slab allocator's state: ``slab_bytes``, ``slabs_in_use`` (slabs holding message
        blocks, plus at most one empty slab kept per size class), ``free_slabs`` (empty slabs,
        their pages given back beyond the first 16), ``arenas`` and ``arena_bytes`` (address
        space mapped). Messages up to 2 KiB live in slabs, larger ones are malloc'ed."""

    def check_invariants(self) -> None:
        """Raise AssertionError if any internal invariant is broken: the heap order, each
        entry's stored slot, per-queue counts, memory accounting, ready order."""
