# cython: language_level=3
"""WonderQ's queue engine: every message, the ready order, the timer heap and the counters.

No I/O, no clock: every call that depends on time takes ``now`` (monotonic ms). Data layout and
ownership rules are in ``_core.pxd``; the Python-facing contract is in ``_core.pyi``.

This file is the compilation unit: imports, errors and argument checks, then one include file
per concept under ``engine/``, in dependency order (see the includes at the end).

Complexity (n = messages held, k = messages in one call):
  publish O(1) (O(log n) with a delay); receive O(k) plus O(k log n) for the leases;
  delete / change_lease O(log n); expire O(log n) per entry; purge / delete_queue O(n);
  dump_messages O(max_count) after an O(n) snapshot at cursor 0. A queue with a retention
  period adds O(log q) when its oldest ready message changes (q = queues with retention) and
  O(1) per message dropped; queues without one pay a test of that attribute.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.long cimport PyLong_AsLongLongAndOverflow
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

cdef extern from "Python.h":
    bint PyLong_Check(object o)
    bint PyBool_Check(object o)
    bint PyBytes_CheckExact(object o)

include "engine/consts.pxi"

# ---- exported bounds ----------------------------------------------------------------------

# The header plus allocation slack (8-byte rounding in a slab, or malloc's chunk word): an
# estimate the memory limit counts against, not an exact figure.
MESSAGE_OVERHEAD = sizeof(Msg) + 8
MAX_ID = C_MAX_ID
MAX_VISIBILITY_MS = C_MAX_VISIBILITY_MS
MAX_DELAY_MS = C_MAX_DELAY_MS
MAX_QUEUES = C_MAX_QUEUES
MAX_NOW = C_MAX_NOW
MIN_RETENTION_MS = C_MIN_RETENTION_MS
MAX_RETENTION_MS = C_MAX_RETENTION_MS
MAX_META_BYTES = C_MAX_META_BYTES

cdef int64_t C_MESSAGE_OVERHEAD = MESSAGE_OVERHEAD
cdef bytes EMPTY_RESPONSE = b'{"messages":[]}'
# Broker.last_name when nothing is cached: no caller can pass this object.
cdef object NO_NAME = object()


# ---- errors -------------------------------------------------------------------------------

class EngineError(Exception):
    """Bad input to the engine; ``status`` and ``code`` say how the API layer answers it."""

    status = 500
    code = "engine_error"

    def __init__(self, message, code=None):
        super().__init__(message)
        if code is not None:
            self.code = code


class InvalidArgument(EngineError, ValueError):
    status = 400
    code = "invalid_argument"


class QueueNotFound(EngineError, KeyError):
    status = 404
    code = "queue_not_found"

    def __str__(self):
        # KeyError would repr() the message.
        return Exception.__str__(self)


class QueueInUse(EngineError):
    status = 409
    code = "queue_in_use"


class MessageTooLarge(EngineError):
    status = 413
    code = "message_too_large"


class MemoryLimitExceeded(EngineError):
    status = 507
    code = "memory_limit"


class IdsExhausted(EngineError):
    status = 507
    code = "ids_exhausted"


cpdef int64_t now_ms() noexcept:
    """The server's clock: CLOCK_MONOTONIC in whole milliseconds, the same clock and value as
    ``time.monotonic_ns() // 1_000_000`` at a fraction of its cost (a C call, no big-int
    division); the ``now`` the server passes to every engine call. cpdef: the store cimports
    it (_core.pxd) and reads the clock without a Python call or an int object."""
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000 + ts.tv_nsec // 1000000


def id_json(int64_t msg_id):
    """``b'{"id":N}'``, a publish's answer, built in C (``%d`` formatting costs ~800
    instructions)."""
    cdef char buf[32]
    cdef char* p = put(buf, b'{"id":', 6)
    if msg_id < 0:
        raise ValueError("a message id is not negative")
    p = write_u64(p, <uint64_t>msg_id, digits_u64(<uint64_t>msg_id))
    p[0] = b'}'
    return PyBytes_FromStringAndSize(buf, p + 1 - buf)


cdef extern from *:
    """
    #if defined(__GLIBC__)
    #include <malloc.h>
    static int wq_malloc_trim(void) { return malloc_trim(0); }
    static int wq_mmap_threshold(long n) { return mallopt(M_MMAP_THRESHOLD, (int)n); }
    #else
    static int wq_malloc_trim(void) { return 0; }
    static int wq_mmap_threshold(long n) { return 0; }
    #endif
    """
    int wq_malloc_trim() nogil
    int wq_mmap_threshold(long n) nogil
    # GCC/Clang: start loading a cache line now, to overlap misses with other work.
    void __builtin_prefetch(const void* addr) noexcept nogil


def release_free_memory():
    """Give the C heap's free pages back to the system (glibc's ``malloc_trim``; a no-op
    elsewhere). The server calls it once, when start-up is done: importing and building
    leave ~1.5 MB of freed heap resident (bench/locust_sizing.py measures the idle process).
    True when memory was released."""
    return wq_malloc_trim() == 1


def keep_big_blocks_in_heap(long nbytes=32 << 20):
    """Have glibc's malloc serve blocks below ``nbytes`` from its heap rather than from a
    mapping each (``mallopt(M_MMAP_THRESHOLD)``; a no-op elsewhere). The server calls it at
    start. Otherwise a big message's block (a 1 MiB body) is a mapping of its own, which
    never holds an aligned 2 MiB huge page and costs a page of rounding: a queue of 1 MiB
    messages then publishes ~25% slower and holds ~4 KiB more per message (bench/bigmsg.py,
    see bench/RESULTS.md, "Big messages"). glibc raises its threshold by itself once a big
    block is freed, which a queue that only grows never does. True when set."""
    return wq_mmap_threshold(nbytes) == 1


def fail(what):
    raise AssertionError(what)


# ---- argument checks ----------------------------------------------------------------------

cdef inline int64_t arg_int(object value, int64_t lo, int64_t hi, str code, str name) except? -1:
    """``value`` as an int64 in lo..hi (bool refused), else InvalidArgument(code)."""
    cdef int overflow = 0
    cdef long long v
    if PyLong_Check(value) and not PyBool_Check(value):
        v = PyLong_AsLongLongAndOverflow(value, &overflow)
        if overflow == 0 and lo <= v <= hi:
            return v
    raise InvalidArgument(f"{name} must be an integer in {lo}..{hi}", code)


cdef inline int check_now(int64_t now) except -1:
    if now < 0 or now > C_MAX_NOW:
        raise InvalidArgument(f"now must be in 0..{C_MAX_NOW}", "invalid_now")
    return 0


cdef inline object attributes_bytes(object attributes, int64_t max_bytes):
    """A message's attribute blob as bytes (bytearray and memoryview copied) or None; at most
    ``max_bytes`` long (MessageTooLarge), else invalid_attributes."""
    if attributes is None:
        return None
    if not PyBytes_CheckExact(attributes):
        if not isinstance(attributes, (bytearray, memoryview)):
            raise InvalidArgument("attributes must be bytes or None", "invalid_attributes")
        attributes = bytes(attributes)
    if PyBytes_GET_SIZE(attributes) > max_bytes:
        raise MessageTooLarge(f"attributes are {PyBytes_GET_SIZE(attributes)} bytes, more than "
                              f"max_message_bytes ({max_bytes})")
    return attributes


cdef inline int64_t attributes_cost(object attributes) noexcept:
    """Bytes the memory limit counts for a checked blob: its length and 4 for that length."""
    return 0 if attributes is None else 4 + PyBytes_GET_SIZE(attributes)


cdef inline bytes body_bytes(object body):
    """The body as a bytes object (bytearray and memoryview copied), else invalid_body."""
    if PyBytes_CheckExact(body):
        return <bytes>body
    if isinstance(body, (bytearray, memoryview)):
        return bytes(body)
    raise InvalidArgument("body must be bytes", "invalid_body")


# ---- the engine, one concept per file -------------------------------------------------------

include "engine/codec.pxi"        # UTF-8 validation, JSON escaping, parsing, answers
include "engine/slab.pxi"         # the slab allocator
include "engine/message.pxi"      # a message's block: header, body
include "engine/bodyblock.pxi"    # a big body read straight into its block
include "engine/bodyview.pxi"     # big bodies answered from their blocks
include "engine/timers.pxi"       # the timer heap of leases and delays
include "engine/leases.pxi"       # the lease table (id -> leased message)
include "engine/ready.pxi"        # a queue's ready set: FIFO + return heap
include "engine/queues.pxi"       # queue names, attributes, the dead-letter rule
include "engine/names.pxi"        # the table of queue names lookup() reads
include "engine/retention.pxi"    # dropping messages past their queue's retention
include "engine/dump.pxi"         # the sorted snapshot behind dump_messages
include "engine/broker.pxi"       # the Broker: the Python API over all of the above
include "engine/invariants.pxi"   # Broker.check_invariants
