# cython: language_level=3
"""WonderQ's queue engine: every message, the ready order, the timer heap and the counters.

No I/O, no clock: every call that depends on time takes ``now`` (monotonic ms). Data layout and
ownership rules are in ``_core.pxd``; the Python-facing contract is in ``_core.pyi``.

Complexity (n = messages held, k = messages in one call):
  publish O(1) (O(log n) with a delay); receive O(k) plus O(k log n) for the leases;
  delete / change_lease O(log n); expire O(log n) per entry; purge / delete_queue O(n);
  dump_messages O(max_count) after an O(n) snapshot at cursor 0.
"""

import re
from collections.abc import Mapping

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.object cimport PyObject
from libc.stdint cimport INT64_MAX, UINT32_MAX, uintptr_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memchr, memcmp, memcpy, memset
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec
from posix.mman cimport (
    MADV_DONTNEED, MAP_ANONYMOUS, MAP_FAILED, MAP_PRIVATE, PROT_READ, PROT_WRITE, madvise, mmap,
    munmap,
)

cdef extern from *:
    # GCC/Clang: start loading a cache line now, to overlap independent misses.
    void __builtin_prefetch(const void* addr) noexcept nogil

cdef extern from *:
    """
    /* Length of the longest prefix of s made of bytes JSON leaves alone and that need no UTF-8
       check: ASCII >= 0x20, not a quote (0x22) or a backslash (0x5C). SSE2 looks at 16 bytes
       per step (signed compare: bytes >= 0x80 count as < 0x20 and stop the run); elsewhere it
       returns 0 and the caller's 8-byte loop does the work. */
    #if defined(__SSE2__)
    #include <emmintrin.h>
    static inline Py_ssize_t wq_plain_prefix(const unsigned char *s, Py_ssize_t n) {
        const __m128i low = _mm_set1_epi8(0x20), quote = _mm_set1_epi8(0x22),
                      bslash = _mm_set1_epi8(0x5C);
        Py_ssize_t i = 0;
        for (; i + 16 <= n; i += 16) {
            __m128i v = _mm_loadu_si128((const __m128i *)(s + i));
            __m128i bad = _mm_or_si128(_mm_cmplt_epi8(v, low),
                                       _mm_or_si128(_mm_cmpeq_epi8(v, quote),
                                                    _mm_cmpeq_epi8(v, bslash)));
            int mask = _mm_movemask_epi8(bad);
            if (mask) return i + __builtin_ctz(mask);
        }
        return i;
    }
    #else
    static inline Py_ssize_t wq_plain_prefix(const unsigned char *s, Py_ssize_t n) {
        (void)s; (void)n; return 0;
    }
    #endif
    """
    Py_ssize_t wq_plain_prefix(const uint8_t* s, Py_ssize_t n) noexcept nogil

cdef extern from "Python.h":
    bint PyLong_Check(object o)
    bint PyBool_Check(object o)
    bint PyBytes_CheckExact(object o)
    object PySequence_Fast(object o, const char* message)
    Py_ssize_t PySequence_Fast_GET_SIZE(object o)
    PyObject** PySequence_Fast_ITEMS(object o)

# ---- constants ----------------------------------------------------------------------------

cdef enum:
    MSG_READY = 0       # in a return heap (messages in a FIFO have no state byte)
    MSG_LEASED = 1      # in the timer heap with cid >= 0, and in the lease table
    MSG_DELAYED = 2     # in the timer heap with cid == -1

cdef int64_t C_MAX_ID = INT64_MAX
cdef int64_t C_MAX_VISIBILITY_MS = 43200 * 1000
cdef int64_t C_MAX_DELAY_MS = 604800 * 1000
# now + any timeout stays far from int64 overflow.
cdef int64_t C_MAX_NOW = 1 << 62
# Escaped bodies must fit Msg.body_len (uint32): 6 bytes per input byte at worst.
cdef int64_t C_MAX_MESSAGE_BYTES = 1 << 28
# Msg.queue_idx is a uint16.
cdef int64_t C_MAX_QUEUES = 65536
# Smallest capacities kept when shrinking arrays (entries).
cdef int64_t MIN_HEAP_CAP = 64
cdef int64_t MIN_RHEAP_CAP = 8
cdef uint64_t MIN_TABLE_CAP = 64
# Largest lease table rehashed to shrink it while non-empty (slots; 4 MiB).
cdef uint64_t MAX_SHRINK_TABLE_CAP = 1 << 18

# The header plus allocation slack (8-byte rounding in a slab, or malloc's chunk word): an
# estimate the memory limit counts against, not an exact figure.
MESSAGE_OVERHEAD = sizeof(Msg) + 8
MAX_ID = C_MAX_ID
MAX_VISIBILITY_MS = C_MAX_VISIBILITY_MS
MAX_DELAY_MS = C_MAX_DELAY_MS
MAX_QUEUES = C_MAX_QUEUES

cdef int64_t C_MESSAGE_OVERHEAD = MESSAGE_OVERHEAD
cdef bytes EMPTY_RESPONSE = b'{"messages":[]}'
# Broker.last_name when nothing is cached: no caller can pass this object.
cdef object NO_NAME = object()

_QUEUE_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}")
_ATTRIBUTES = (
    "visibility_timeout_ms", "delay_ms", "max_receives", "dead_letter_queue", "max_message_bytes",
)


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


def now_ms():
    """The server's clock: CLOCK_MONOTONIC in whole milliseconds, the same clock and value as
    ``time.monotonic_ns() // 1_000_000`` at a fraction of its cost (a C call, no big-int
    division); the ``now`` the server passes to every engine call."""
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


cdef inline bytes body_bytes(object body):
    """The body as a bytes object (bytearray and memoryview copied), else invalid_body."""
    if PyBytes_CheckExact(body):
        return <bytes>body
    if isinstance(body, (bytearray, memoryview)):
        return bytes(body)
    raise InvalidArgument("body must be bytes", "invalid_body")


# ---- UTF-8 validation and JSON escaping -----------------------------------------------------

# Extra bytes json.dumps(ensure_ascii=False) adds for each byte: 1 for \" \\ \b \t \n \f \r,
# 5 for other control characters (\u00XX), 0 otherwise (UTF-8 lead/continuation bytes included).
cdef uint8_t ESC_EXTRA[256]
cdef const char* HEX_DIGITS = b"0123456789abcdef"


cdef void esc_init() noexcept:
    cdef int c
    for c in range(256):
        ESC_EXTRA[c] = 5 if c < 0x20 else 0
    for c in (0x22, 0x5C, 0x08, 0x09, 0x0A, 0x0C, 0x0D):
        ESC_EXTRA[c] = 1


esc_init()

# SWAR masks: a word of 8 plain bytes (ASCII, >= 0x20, not '"' or '\\') skips all checks.
cdef uint64_t ONES = 0x0101010101010101ULL
cdef uint64_t HIGHS = 0x8080808080808080ULL


cdef inline bint word_is_plain(uint64_t w) noexcept nogil:
    cdef uint64_t q = w ^ (ONES * 0x22)
    cdef uint64_t b = w ^ (ONES * 0x5C)
    cdef uint64_t special = (
        w | ((w - ONES * 0x20) & ~w) | ((q - ONES) & ~q) | ((b - ONES) & ~b)
    )
    return (special & HIGHS) == 0


cdef inline bint is_cont(uint8_t c) noexcept nogil:
    return (c & 0xC0) == 0x80


cdef int64_t utf8_escaped_len(const uint8_t* s, int64_t n) noexcept nogil:
    """Length of the JSON-escaped form of s, or -1 if s is not strict UTF-8 (as Python's decoder:
    no overlongs, no surrogates, nothing above U+10FFFF, no truncated sequence)."""
    cdef int64_t i = 0
    cdef int64_t extra = 0
    cdef uint64_t w
    cdef uint8_t c, c1
    while i < n:
        i += wq_plain_prefix(s + i, n - i)  # 16 bytes per step (SSE2 builds)
        if i >= n:
            break
        if i + 8 <= n:
            memcpy(&w, s + i, 8)
            if word_is_plain(w):
                i += 8
                continue
        c = s[i]
        if c < 0x80:
            extra += ESC_EXTRA[c]
            i += 1
        elif c < 0xC2:
            return -1
        elif c < 0xE0:
            if i + 1 >= n or not is_cont(s[i + 1]):
                return -1
            i += 2
        elif c < 0xF0:
            if i + 2 >= n:
                return -1
            c1 = s[i + 1]
            if c == 0xE0:
                if c1 < 0xA0 or c1 > 0xBF:
                    return -1
            elif c == 0xED:
                if c1 < 0x80 or c1 > 0x9F:
                    return -1
            elif not is_cont(c1):
                return -1
            if not is_cont(s[i + 2]):
                return -1
            i += 3
        elif c < 0xF5:
            if i + 3 >= n:
                return -1
            c1 = s[i + 1]
            if c == 0xF0:
                if c1 < 0x90 or c1 > 0xBF:
                    return -1
            elif c == 0xF4:
                if c1 < 0x80 or c1 > 0x8F:
                    return -1
            elif not is_cont(c1):
                return -1
            if not is_cont(s[i + 2]) or not is_cont(s[i + 3]):
                return -1
            i += 4
        else:
            return -1
    return n + extra


cdef void json_escape_into(char* out, const uint8_t* s, int64_t n) noexcept nogil:
    """Write s (valid UTF-8) escaped as json.dumps(ensure_ascii=False) does, without quotes."""
    cdef int64_t i
    cdef uint8_t c
    for i in range(n):
        c = s[i]
        if ESC_EXTRA[c] == 0:
            out[0] = <char>c
            out += 1
        elif ESC_EXTRA[c] == 1:
            out[0] = b'\\'
            if c == 0x22 or c == 0x5C:
                out[1] = <char>c
            elif c == 0x08:
                out[1] = b'b'
            elif c == 0x09:
                out[1] = b't'
            elif c == 0x0A:
                out[1] = b'n'
            elif c == 0x0C:
                out[1] = b'f'
            else:
                out[1] = b'r'
            out += 2
        else:
            memcpy(out, b"\\u00", 4)
            out[4] = HEX_DIGITS[c >> 4]
            out[5] = HEX_DIGITS[c & 15]
            out += 6


cdef inline int hex_value(char c) noexcept nogil:
    return c - 48 if c <= b'9' else c - 87  # '0'..'9', 'a'..'f' (json_escape_into's digits)


cdef bytes json_unescape(const char* s, int64_t n):
    """The raw body back from its escaped form (only the escapes json_escape_into writes)."""
    cdef int64_t i = 0
    cdef int64_t raw = 0
    cdef char* p
    cdef char c
    if memchr(s, b'\\', n) == NULL:
        return PyBytes_FromStringAndSize(s, n)
    while i < n:
        i += (6 if s[i + 1] == b'u' else 2) if s[i] == b'\\' else 1
        raw += 1
    out = PyBytes_FromStringAndSize(NULL, raw)
    p = PyBytes_AS_STRING(out)
    i = 0
    while i < n:
        c = s[i]
        if c != b'\\':
            p[0] = c
            i += 1
        else:
            c = s[i + 1]
            if c == b'u':
                p[0] = <char>(hex_value(s[i + 4]) * 16 + hex_value(s[i + 5]))
                i += 6
            else:
                p[0] = (b'\b' if c == b'b' else b'\t' if c == b't' else b'\n' if c == b'n'
                        else b'\f' if c == b'f' else b'\r' if c == b'r' else c)
                i += 2
        p += 1
    return out


cdef inline const uint8_t* bytes_ptr(bytes b) noexcept:
    return <const uint8_t*>PyBytes_AS_STRING(b)


cdef inline int64_t body_escaped_len(bytes body, int64_t max_bytes) except -1:
    """Validate a body (1..max_bytes bytes of UTF-8); return its escaped length."""
    cdef int64_t n = PyBytes_GET_SIZE(body)
    cdef int64_t esc
    if n == 0:
        raise InvalidArgument("body must not be empty", "invalid_body")
    if n > max_bytes:
        raise MessageTooLarge(f"body is {n} bytes, more than max_message_bytes ({max_bytes})")
    esc = utf8_escaped_len(bytes_ptr(body), n)
    if esc < 0:
        raise InvalidArgument("body must be valid UTF-8", "invalid_body")
    if esc > UINT32_MAX:
        raise MessageTooLarge("body is too large once escaped")
    return esc


cdef inline int64_t skip_json_ws(const uint8_t* s, int64_t i, int64_t n) noexcept nogil:
    while i < n and (s[i] == b' ' or s[i] == b'\n' or s[i] == b'\r' or s[i] == b'\t'):
        i += 1
    return i


cdef int64_t split_plain_strings(const uint8_t* s, int64_t n, const uint8_t** starts,
                                 int64_t* lens, int64_t max_items) noexcept nogil:
    """The strings of a JSON array of 1..max_items strings without a backslash: their texts
    into starts/lens, returning how many; 0 when ``s`` is anything else (the caller parses it
    the general way). The texts are not checked here (UTF-8, control characters)."""
    cdef int64_t i = skip_json_ws(s, 0, n)
    cdef int64_t count = 0
    cdef const uint8_t* quote
    if i >= n or s[i] != b'[':
        return 0
    i = skip_json_ws(s, i + 1, n)
    while True:
        if i >= n or s[i] != b'"' or count == max_items:
            return 0
        i += 1
        quote = <const uint8_t*>memchr(s + i, b'"', n - i)
        if quote == NULL or memchr(s + i, b'\\', quote - (s + i)) != NULL:
            return 0
        starts[count] = s + i
        lens[count] = quote - (s + i)
        count += 1
        i = skip_json_ws(s, quote - s + 1, n)
        if i < n and s[i] == b',':
            i = skip_json_ws(s, i + 1, n)
        elif i < n and s[i] == b']':
            return count if skip_json_ws(s, i + 1, n) == n else 0
        else:
            return 0


cdef inline bint is_digit(uint8_t c) noexcept nogil:
    return <uint8_t>(c - 48) < 10


cdef int64_t parse_json_id(const uint8_t* s, int64_t* pos, int64_t n) noexcept nogil:
    """The JSON integer at s[pos[0]] (no sign, fraction or exponent; at most INT64_MAX),
    moving pos past it; -1 for anything else."""
    cdef int64_t i = pos[0]
    cdef int64_t start = i
    cdef uint64_t v = 0
    while i < n and is_digit(s[i]) and i - start < 19:
        v = v * 10 + (s[i] - 48)
        i += 1
    if (i == start or (s[start] == 48 and i - start > 1) or v > <uint64_t>INT64_MAX
            or (i < n and (is_digit(s[i]) or s[i] == b'.' or s[i] == b'e' or s[i] == b'E'))):
        return -1
    pos[0] = i
    return <int64_t>v


cdef int64_t parse_ack(const uint8_t* s, int64_t n, int64_t* cid, int64_t* ids,
                       int64_t max_ids) noexcept nogil:
    """``{"cid": C, "ids": [I, ...]}`` (either order, JSON whitespace anywhere): C into cid,
    the 1..max_ids ids (each >= 1) into ids, returning how many; 0 for anything else."""
    cdef int64_t i = skip_json_ws(s, 0, n)
    cdef int64_t count = 0
    cdef int64_t v
    cdef bint seen_cid = False
    if i >= n or s[i] != b'{':
        return 0
    i = skip_json_ws(s, i + 1, n)
    while True:
        if i + 5 > n or s[i] != b'"' or s[i + 4] != b'"':
            return 0
        if memcmp(s + i + 1, b"cid", 3) == 0 and not seen_cid:
            seen_cid = True
            i = skip_json_ws(s, i + 5, n)
            if i >= n or s[i] != b':':
                return 0
            i = skip_json_ws(s, i + 1, n)
            cid[0] = parse_json_id(s, &i, n)
            if cid[0] < 0:
                return 0
        elif memcmp(s + i + 1, b"ids", 3) == 0 and count == 0:
            i = skip_json_ws(s, i + 5, n)
            if i >= n or s[i] != b':':
                return 0
            i = skip_json_ws(s, i + 1, n)
            if i >= n or s[i] != b'[':
                return 0
            while True:
                i = skip_json_ws(s, i + 1, n)
                v = parse_json_id(s, &i, n)
                if v < 1 or count == max_ids:
                    return 0
                ids[count] = v
                count += 1
                i = skip_json_ws(s, i, n)
                if i < n and s[i] == b']':
                    break
                if i >= n or s[i] != b',':
                    return 0
            i += 1
        else:
            return 0
        i = skip_json_ws(s, i, n)
        if i < n and s[i] == b',':
            i = skip_json_ws(s, i + 1, n)
        elif i < n and s[i] == b'}':
            if not seen_cid or count == 0 or skip_json_ws(s, i + 1, n) != n:
                return 0
            return count
        else:
            return 0


cdef char* write_ids(char* p, const int64_t* ids, const int64_t* flags, int64_t n,
                     int64_t flag) noexcept nogil:
    """The ids whose flag is ``flag``, comma-separated."""
    cdef char* start = p
    cdef int64_t i
    for i in range(n):
        if flags[i] == flag:
            if p != start:
                p[0] = b','
                p += 1
            p = write_u64(p, <uint64_t>ids[i], digits_u64(<uint64_t>ids[i]))
    return p


cpdef bytes batch_ids_json(int64_t first, int64_t n):
    """``{"ids":[first,...,first+n-1]}``, a batch publish's answer, in one allocation."""
    if first < 1 or n < 1 or first > C_MAX_ID - n + 1:
        raise ValueError("the ids of a batch are 1 or more of 1..MAX_ID")
    cdef int64_t size = 8 + 2 + (n - 1)
    cdef int64_t i
    cdef char* p
    for i in range(n):
        size += digits_u64(<uint64_t>(first + i))
    out = PyBytes_FromStringAndSize(NULL, size)
    p = PyBytes_AS_STRING(out)
    p = put(p, b'{"ids":[', 8)
    for i in range(n):
        if i:
            p[0] = b','
            p += 1
        p = write_u64(p, <uint64_t>(first + i), digits_u64(<uint64_t>(first + i)))
    put(p, b']}', 2)
    return out


# ---- slab allocator: memory of message blocks -------------------------------------------------
# Blocks up to SLAB_MAX_BLOCK bytes come from 64 KiB slabs, one size class per 8 bytes, with no
# per-block header: with glibc, malloc(24 + 200) takes a 240-byte chunk, a slab block 224 bytes
# (1M x 200-byte messages: 254.5 MB of RSS with malloc, 239.0 MB with slabs in
# bench/bench_core.py). A block finds its slab by masking its address (slabs are aligned on their
# size, carved from mmap'ed arenas). Empty slabs give their pages back (madvise) beyond a few kept
# warm, and each class keeps its last slab, so a queue that empties and refills makes no syscall.
# A slab's pages are faulted in with one madvise(MADV_POPULATE_WRITE) when it is taken: in
# bench/bench_core.py's publish loop that cut the cost per message from ~260 to ~210 ns (a page
# fault trap per 18 messages was a fifth of it).
# Bigger blocks use malloc, where its 8-16 bytes of overhead are under 1%.

cdef enum:
    SLAB_BYTES = 65536          # one slab, aligned on its size
    SLAB_HEADER = 64            # bytes reserved for struct Slab at the slab's start
    SLAB_MAX_BLOCK = 2048       # larger blocks are malloc'ed (slab tail waste stays < 3%)
    ARENA_BYTES = 4 << 20       # mmap'ed at a time and carved into slabs; never unmapped early
    SLAB_KEEP_DIRTY = 16        # empty slabs kept with their pages (1 MiB), to absorb churn
    WQ_MADV_POPULATE_WRITE = 23  # Linux >= 5.14; older kernels answer EINVAL, and pages fault in


cdef inline int64_t msg_block_bytes(int64_t body_len) noexcept nogil:
    return (<int64_t>sizeof(Msg) + body_len + 7) & ~(<int64_t>7)


cdef Slab* slab_new(SlabAllocator* a) noexcept nogil:
    """An unused slab: a freed one, or the next of the newest arena; NULL when out of memory."""
    cdef char* raw
    cdef char* start
    cdef void** grown
    cdef Slab* s
    if a.n_free > 0:
        a.n_free -= 1
        s = a.free_slabs[a.n_free]
        # Fault its 16 pages in one call rather than one trap each (a no-op if still present).
        madvise(s, SLAB_BYTES, WQ_MADV_POPULATE_WRITE)
        return s
    if a.arena_next == a.arena_end:
        if a.n_arenas == a.arenas_cap:
            grown = <void**>realloc(a.arenas, (a.arenas_cap * 2 + 8) * sizeof(void*))
            if grown == NULL:
                return NULL
            a.arenas = grown
            a.arenas_cap = a.arenas_cap * 2 + 8
        # Map one slab more than needed, then trim both ends to get SLAB_BYTES alignment.
        raw = <char*>mmap(NULL, ARENA_BYTES + SLAB_BYTES, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        if <void*>raw == MAP_FAILED:
            return NULL
        start = <char*>((<uintptr_t>raw + SLAB_BYTES - 1) & ~(<uintptr_t>SLAB_BYTES - 1))
        if start != raw:
            munmap(raw, start - raw)
        if start + ARENA_BYTES != raw + ARENA_BYTES + SLAB_BYTES:
            munmap(start + ARENA_BYTES, raw + ARENA_BYTES + SLAB_BYTES - (start + ARENA_BYTES))
        a.arenas[a.n_arenas] = start
        a.n_arenas += 1
        a.arena_next = start
        a.arena_end = start + ARENA_BYTES
    s = <Slab*>a.arena_next
    a.arena_next += SLAB_BYTES
    madvise(s, SLAB_BYTES, WQ_MADV_POPULATE_WRITE)
    return s


cdef inline void* slab_alloc(SlabAllocator* a, uint32_t block) noexcept nogil:
    """A block of ``block`` bytes (a multiple of 8, <= SLAB_MAX_BLOCK); NULL when out of memory."""
    cdef Slab* s = a.classes[block >> 3]
    cdef void* p
    if s == NULL:
        s = slab_new(a)
        if s == NULL:
            return NULL
        s.next = NULL
        s.prev = NULL
        s.free_list = NULL
        s.live = 0
        s.bump = SLAB_HEADER
        s.block_bytes = block
        s.has_room = 1
        a.classes[block >> 3] = s
        a.slabs_in_use += 1
    if s.free_list != NULL:
        p = s.free_list
        s.free_list = (<void**>p)[0]
    else:
        p = <char*>s + s.bump
        s.bump += block
    s.live += 1
    if s.free_list == NULL and s.bump + block > SLAB_BYTES:
        # Full: s, the head of its class's list, leaves it.
        a.classes[block >> 3] = s.next
        if s.next != NULL:
            s.next.prev = NULL
        s.next = NULL
        s.has_room = 0
    return p


cdef void slab_release(SlabAllocator* a, Slab* s) noexcept nogil:
    """Take an empty slab off its class's list and keep it for any class."""
    cdef Slab** grown
    if a.n_free == a.free_cap:
        grown = <Slab**>realloc(a.free_slabs, (a.free_cap * 2 + 64) * sizeof(Slab*))
        if grown == NULL:
            return  # it stays on its class's list, empty and usable
        a.free_slabs = grown
        a.free_cap = a.free_cap * 2 + 64
    if s.prev != NULL:
        s.prev.next = s.next
    else:
        a.classes[s.block_bytes >> 3] = s.next
    if s.next != NULL:
        s.next.prev = s.prev
    if a.n_free >= SLAB_KEEP_DIRTY:
        madvise(s, SLAB_BYTES, MADV_DONTNEED)
    a.free_slabs[a.n_free] = s
    a.n_free += 1
    a.slabs_in_use -= 1


cdef inline void slab_free(SlabAllocator* a, void* p) noexcept nogil:
    cdef Slab* s = <Slab*>(<uintptr_t>p & ~(<uintptr_t>SLAB_BYTES - 1))
    cdef uint32_t cls = s.block_bytes >> 3
    (<void**>p)[0] = s.free_list
    s.free_list = p
    s.live -= 1
    if not s.has_room:
        s.prev = NULL
        s.next = a.classes[cls]
        if s.next != NULL:
            s.next.prev = s
        a.classes[cls] = s
        s.has_room = 1
    if s.live == 0 and (s.prev != NULL or s.next != NULL):
        slab_release(a, s)  # not the class's last slab


cdef void slab_destroy(SlabAllocator* a) noexcept nogil:
    cdef int64_t i
    for i in range(a.n_arenas):
        munmap(a.arenas[i], ARENA_BYTES)
    free(a.arenas)
    free(a.free_slabs)
    memset(a, 0, sizeof(SlabAllocator))


cdef inline Msg* msg_alloc(SlabAllocator* a, int64_t body_len) noexcept nogil:
    cdef int64_t block = msg_block_bytes(body_len)
    if block <= SLAB_MAX_BLOCK:
        return <Msg*>slab_alloc(a, <uint32_t>block)
    return <Msg*>malloc(sizeof(Msg) + body_len)


cdef inline void msg_release(SlabAllocator* a, Msg* m) noexcept nogil:
    if msg_block_bytes(m.body_len) <= SLAB_MAX_BLOCK:
        slab_free(a, m)
    else:
        free(m)


cdef inline Msg* msg_new(SlabAllocator* a, int64_t msg_id, const uint8_t* src, int64_t n,
                         int64_t esc_len) noexcept:
    """A new message holding the ``n`` bytes at ``src`` escaped; NULL when out of memory."""
    cdef Msg* m = msg_alloc(a, esc_len)
    if m == NULL:
        return NULL
    m.id = msg_id
    m.link.next = NULL
    m.body_len = <uint32_t>esc_len
    m.receives = 0
    if esc_len == n:
        memcpy(msg_body(m), src, n)
    else:
        json_escape_into(msg_body(m), src, n)
    return m


cdef inline char* msg_body(Msg* m) noexcept nogil:
    return (<char*>m) + sizeof(Msg)


cdef inline uint32_t receives_after(uint32_t r) noexcept nogil:
    return r + 1 if r < UINT32_MAX else r


# ---- receive response -----------------------------------------------------------------------

cdef inline int digits_u64(uint64_t v) noexcept nogil:
    cdef int d = 1
    while v >= 10:
        v //= 10
        d += 1
    return d


cdef inline char* write_u64(char* p, uint64_t v, int d) noexcept nogil:
    cdef char* end = p + d
    cdef char* q = end
    while True:
        q -= 1
        q[0] = <char>(48 + v % 10)
        v //= 10
        if v == 0:
            break
    return end


cdef inline char* put(char* p, const char* s, Py_ssize_t n) noexcept nogil:
    memcpy(p, s, n)
    return p + n


cdef bytes build_response(Msg** msgs, int64_t n):
    """``{"messages":[{"id":..,"body":"..","receives":..},...]}`` with each receive count as it
    will be after this receive. One allocation, no Python object per message."""
    cdef int64_t size = 13 + 2 + (n - 1)
    cdef int64_t i
    cdef Msg* m
    cdef char* p
    for i in range(n):
        m = msgs[i]
        size += (6 + digits_u64(<uint64_t>m.id) + 9 + m.body_len + 13
                 + digits_u64(receives_after(m.receives)) + 1)
    out = PyBytes_FromStringAndSize(NULL, size)
    p = PyBytes_AS_STRING(out)
    p = put(p, b'{"messages":[', 13)
    for i in range(n):
        m = msgs[i]
        if i:
            p[0] = b','
            p += 1
        p = put(p, b'{"id":', 6)
        p = write_u64(p, <uint64_t>m.id, digits_u64(<uint64_t>m.id))
        p = put(p, b',"body":"', 9)
        p = put(p, msg_body(m), m.body_len)
        p = put(p, b'","receives":', 13)
        p = write_u64(p, receives_after(m.receives), digits_u64(receives_after(m.receives)))
        p[0] = b'}'
        p += 1
    put(p, b']}', 2)
    return out


# ---- timer heap: one binary min-heap by (deadline_ms, msg_id) for leases and delays ---------
# Each entry's message stores its slot (msg.link.slot.heap_index), kept right on every move, so
# any entry can be removed or re-keyed in O(log n). Children of i: 2i+1, 2i+2. The code takes
# any arity: 4 children per node halve the depth and ran expire 1.3-1.8x faster on the 1M-lease
# burst of bench/bench_core.py, but the design contract (DESIGN.md) names a binary heap, and the
# server expires in bounded slices either way, so the contract's shape stays until it changes.

cdef enum:
    HEAP_ARITY = 2

cdef inline bint entry_before(const TimerEntry* a, const TimerEntry* b) noexcept nogil:
    return a.deadline_ms < b.deadline_ms or (
        a.deadline_ms == b.deadline_ms and a.msg_id < b.msg_id)


cdef inline void heap_place(TimerHeap* h, int64_t i, TimerEntry* e) noexcept nogil:
    h.entries[i] = e[0]
    e.msg.link.slot.heap_index = <int32_t>i


cdef void heap_sift_up(TimerHeap* h, int64_t i) noexcept nogil:
    cdef TimerEntry e = h.entries[i]
    cdef int64_t parent
    while i > 0:
        parent = (i - 1) // HEAP_ARITY
        if not entry_before(&e, &h.entries[parent]):
            break
        heap_place(h, i, &h.entries[parent])
        i = parent
    heap_place(h, i, &e)


cdef void heap_sift_down(TimerHeap* h, int64_t i) noexcept nogil:
    cdef TimerEntry e = h.entries[i]
    cdef int64_t n = h.len
    cdef int64_t first, last, child, c
    while True:
        first = HEAP_ARITY * i + 1
        if first >= n:
            break
        last = min(first + HEAP_ARITY, n)
        child = first
        for c in range(first + 1, last):
            if entry_before(&h.entries[c], &h.entries[child]):
                child = c
        if not entry_before(&h.entries[child], &e):
            break
        heap_place(h, i, &h.entries[child])
        i = child
    heap_place(h, i, &e)


cdef inline void heap_fix(TimerHeap* h, int64_t i) noexcept nogil:
    """Restore heap order after the entry at i changed its key."""
    if i > 0 and entry_before(&h.entries[i], &h.entries[(i - 1) // HEAP_ARITY]):
        heap_sift_up(h, i)
    else:
        heap_sift_down(h, i)


cdef int heap_reserve(TimerHeap* h, int64_t extra) except -1:
    """Make room for ``extra`` pushes, so the mutations that follow cannot fail."""
    cdef int64_t cap
    cdef TimerEntry* entries
    if h.len + extra <= h.cap:
        return 0
    cap = max(h.cap * 2, h.len + extra, MIN_HEAP_CAP)
    entries = <TimerEntry*>realloc(h.entries, cap * sizeof(TimerEntry))
    if entries == NULL:
        raise MemoryError()
    h.entries = entries
    h.cap = cap
    return 0


cdef inline void heap_push(TimerHeap* h, int64_t deadline_ms, int64_t cid, Msg* m) noexcept:
    """Push a lease (cid >= 0) or a delay (cid == -1); capacity reserved by the caller."""
    cdef TimerEntry* e = &h.entries[h.len]
    e.deadline_ms = deadline_ms
    e.msg_id = m.id
    e.cid = cid
    e.msg = m
    m.link.slot.heap_index = <int32_t>h.len
    h.len += 1
    heap_sift_up(h, h.len - 1)


cdef inline void heap_remove(TimerHeap* h, int64_t i) noexcept nogil:
    h.len -= 1
    if i != h.len:
        heap_place(h, i, &h.entries[h.len])
        heap_fix(h, i)


cdef void heap_rebuild(TimerHeap* h) noexcept nogil:
    """Heapify in O(n) after entries were filtered out."""
    cdef int64_t i
    for i in range(h.len):
        h.entries[i].msg.link.slot.heap_index = <int32_t>i
    i = (h.len - 2) // HEAP_ARITY
    while i >= 0:
        heap_sift_down(h, i)
        i -= 1


cdef void heap_maybe_shrink(TimerHeap* h) noexcept:
    """Give back memory after a burst (keep a quarter-full array at worst)."""
    cdef int64_t cap
    cdef TimerEntry* entries
    if h.cap > MIN_HEAP_CAP and h.len < h.cap // 4:
        cap = max(h.cap // 2, MIN_HEAP_CAP)
        entries = <TimerEntry*>realloc(h.entries, cap * sizeof(TimerEntry))
        if entries != NULL:
            h.entries = entries
            h.cap = cap


# ---- lease table: id -> leased Msg, open addressing ---------------------------------------

cdef inline uint64_t ht_hash(LeaseTable* t, int64_t msg_id) noexcept nogil:
    # Fibonacci hashing spreads consecutive ids over the table.
    return (<uint64_t>msg_id * 0x9E3779B97F4A7C15ULL) >> t.shift


cdef int ht_init(LeaseTable* t, uint64_t cap) except -1:
    cdef LeaseSlot* slots = <LeaseSlot*>calloc(cap, sizeof(LeaseSlot))
    cdef int bits = 0
    if slots == NULL:
        raise MemoryError()
    while (<uint64_t>1 << bits) < cap:
        bits += 1
    t.slots = slots
    t.mask = cap - 1
    t.shift = 64 - bits
    t.count = 0
    return 0


cdef inline int64_t ht_find(LeaseTable* t, int64_t msg_id) noexcept nogil:
    """Slot of msg_id, or -1."""
    cdef uint64_t i = ht_hash(t, msg_id)
    while True:
        if t.slots[i].id == msg_id:
            return <int64_t>i
        if t.slots[i].id == 0:
            return -1
        i = (i + 1) & t.mask


cdef inline void ht_insert(LeaseTable* t, int64_t msg_id, Msg* m) noexcept nogil:
    """Insert an absent id; capacity reserved by the caller."""
    cdef uint64_t i = ht_hash(t, msg_id)
    while t.slots[i].id != 0:
        i = (i + 1) & t.mask
    t.slots[i].id = msg_id
    t.slots[i].msg = m
    t.count += 1


cdef void ht_remove_at(LeaseTable* t, int64_t slot) noexcept nogil:
    """Backward-shift deletion: pull later members of the probe run into the hole."""
    cdef uint64_t i = <uint64_t>slot
    cdef uint64_t j = i
    cdef uint64_t home
    while True:
        j = (j + 1) & t.mask
        if t.slots[j].id == 0:
            break
        home = ht_hash(t, t.slots[j].id)
        # Leave the entry if its home lies cyclically in (i, j]: the hole is not on its path.
        if (i < j and i < home <= j) or (i > j and (home > i or home <= j)):
            continue
        t.slots[i] = t.slots[j]
        i = j
    t.slots[i].id = 0
    t.slots[i].msg = NULL
    t.count -= 1


cdef int ht_resize(LeaseTable* t, uint64_t cap) except -1:
    cdef LeaseTable fresh
    cdef uint64_t i
    ht_init(&fresh, cap)
    for i in range(t.mask + 1):
        if t.slots[i].id != 0:
            ht_insert(&fresh, t.slots[i].id, t.slots[i].msg)
    free(t.slots)
    t[0] = fresh
    return 0


cdef inline int ht_reserve(LeaseTable* t, int64_t extra) except -1:
    """Grow so that count + extra stays at load <= 0.6."""
    cdef uint64_t cap = t.mask + 1
    if <uint64_t>(t.count + extra) * 5 <= cap * 3:
        return 0
    while <uint64_t>(t.count + extra) * 5 > cap * 3:
        cap *= 2
    return ht_resize(t, cap)


cdef void ht_maybe_shrink(LeaseTable* t) noexcept:
    """Give memory back after a burst of leases. An empty table is replaced in O(1), whatever
    its size. A non-empty one is halved below load 0.1 (then 0.2, far from the 0.6 growth
    point) only while small: a rehash costs O(capacity), and must not stall one expire call
    (2M slots took ~20 ms in the burst of bench/bench_core.py; 256K slots take ~1 ms)."""
    cdef uint64_t cap = t.mask + 1
    cdef LeaseTable fresh
    if cap <= MIN_TABLE_CAP:
        return
    try:
        if t.count == 0:
            ht_init(&fresh, MIN_TABLE_CAP)
            free(t.slots)
            t[0] = fresh
        elif cap <= MAX_SHRINK_TABLE_CAP and <uint64_t>t.count * 10 < cap:
            ht_resize(t, cap // 2)
    except MemoryError:
        pass


# ---- return heap: a queue's min-heap by id of messages available again --------------------

cdef inline void rheap_push(Queue* q, Msg* m) noexcept nogil:
    """Capacity reserved by the caller."""
    cdef int64_t i = q.rheap_len
    cdef int64_t parent
    m.link.slot.state = MSG_READY
    m.link.slot.heap_index = -1
    q.rheap_len += 1
    while i > 0:
        parent = (i - 1) >> 1
        if q.rheap[parent].id <= m.id:
            break
        q.rheap[i] = q.rheap[parent]
        i = parent
    q.rheap[i] = m


cdef inline Msg* rheap_pop(Queue* q) noexcept nogil:
    cdef Msg* top = q.rheap[0]
    cdef Msg* last
    cdef int64_t i = 0
    cdef int64_t child
    cdef int64_t n
    q.rheap_len -= 1
    n = q.rheap_len
    if n > 0:
        last = q.rheap[n]
        while True:
            child = 2 * i + 1
            if child >= n:
                break
            if child + 1 < n and q.rheap[child + 1].id < q.rheap[child].id:
                child += 1
            if q.rheap[child].id >= last.id:
                break
            q.rheap[i] = q.rheap[child]
            i = child
        q.rheap[i] = last
    return top


cdef void rheap_maybe_shrink(Queue* q) noexcept nogil:
    cdef int64_t cap
    cdef Msg** items
    if q.rheap_cap > MIN_RHEAP_CAP and q.rheap_len < q.rheap_cap // 4:
        cap = max(q.rheap_cap // 2, MIN_RHEAP_CAP)
        items = <Msg**>realloc(q.rheap, cap * sizeof(Msg*))
        if items != NULL:
            q.rheap = items
            q.rheap_cap = cap


# ---- ready FIFO: fresh messages in id order -----------------------------------------------

cdef inline void fifo_append(Queue* q, Msg* m) noexcept nogil:
    m.link.next = NULL
    if q.fifo_head == NULL:
        q.fifo_head = m
    else:
        q.fifo_tail.link.next = m
    q.fifo_tail = m


cdef inline Msg* ready_pop(Queue* q) noexcept nogil:
    """The available message with the lowest id (the queue has one)."""
    cdef Msg* m = q.fifo_head
    if m != NULL and (q.rheap_len == 0 or m.id < q.rheap[0].id):
        q.fifo_head = m.link.next
        return m
    return rheap_pop(q)


# ---- dump snapshot: every message sorted by id -------------------------------------------------

cdef int dump_sort(DumpEntry* a, int64_t n) except -1:
    """Sort by id: LSD radix sort on bytes, skipping bytes all ids share; O(n) per pass."""
    cdef int64_t i, shift
    cdef int64_t counts[256]
    cdef int64_t total, c
    cdef DumpEntry* src = a
    cdef DumpEntry* dst
    cdef DumpEntry* tmp
    cdef bint is_sorted = True
    for i in range(1, n):
        if a[i - 1].id > a[i].id:
            is_sorted = False
            break
    if is_sorted:
        return 0
    tmp = <DumpEntry*>malloc(n * sizeof(DumpEntry))
    if tmp == NULL:
        raise MemoryError()
    dst = tmp
    for shift in range(0, 64, 8):
        memset(counts, 0, sizeof(counts))
        for i in range(n):
            counts[(src[i].id >> shift) & 255] += 1
        if counts[(src[0].id >> shift) & 255] == n:
            continue  # every id has this byte
        total = 0
        for i in range(256):
            c = counts[i]
            counts[i] = total
            total += c
        for i in range(n):
            c = (src[i].id >> shift) & 255
            dst[counts[c]] = src[i]
            counts[c] += 1
        src, dst = dst, src
    if src != a:
        memcpy(a, src, n * sizeof(DumpEntry))
    free(tmp)
    return 0


cdef inline bint goes_to_dlq(Queue* q, Msg* m) noexcept nogil:
    """Whether m, leaving a lease in q, is dead-lettered rather than made available again."""
    return q.max_receives > 0 and m.receives >= q.max_receives and q.dlq >= 0


# ---- the broker ---------------------------------------------------------------------------

cdef class Broker:
    """All queues of one server, one id counter, one timer heap."""

    def __cinit__(self):
        self.queues = NULL
        self.queue_cap = 0
        self.timers.entries = NULL
        self.timers.len = 0
        self.timers.cap = 0
        self.leases.slots = NULL
        self.leases.mask = 0
        self.leases.count = 0
        self.scratch = NULL
        self.scratch_len = NULL
        self.scratch_src = NULL
        self.scratch_raw = NULL
        memset(&self.slabs, 0, sizeof(SlabAllocator))
        memset(&self.all_ids, 0, sizeof(LeaseTable))
        self.dump = NULL
        self.dump_len = 0
        self.last_name = NO_NAME

    def __init__(self, *, visibility_ms=30000, max_message_bytes=1048576, max_batch=1000,
                 max_memory=0, track_dead_letters=False):
        if self.queue_index is not None:
            raise RuntimeError("Broker.__init__ called twice")
        self.default_visibility_ms = arg_int(
            visibility_ms, 0, C_MAX_VISIBILITY_MS, "invalid_visibility", "visibility_ms")
        self.max_message_bytes_ = arg_int(
            max_message_bytes, 1, C_MAX_MESSAGE_BYTES, "invalid_max_message_bytes",
            "max_message_bytes")
        self.max_batch = arg_int(max_batch, 1, 1 << 20, "invalid_max_batch", "max_batch")
        self.max_memory_ = arg_int(max_memory, 0, C_MAX_ID, "invalid_max_memory", "max_memory")
        self.memory_bytes_ = 0
        self.message_count_ = 0
        self.next_id_ = 1
        self.track_dead_letters = bool(track_dead_letters)
        self.dead_letters = []
        self.queue_index = {}
        self.queue_names_by_idx = []
        self.free_queue_idx = []
        if self.leases.slots == NULL:
            ht_init(&self.leases, MIN_TABLE_CAP)
        if self.scratch == NULL:
            self.scratch = <Msg**>malloc(self.max_batch * sizeof(Msg*))
            self.scratch_len = <int64_t*>malloc(self.max_batch * sizeof(int64_t))
            self.scratch_src = <const uint8_t**>malloc(self.max_batch * sizeof(uint8_t*))
            self.scratch_raw = <int64_t*>malloc(self.max_batch * sizeof(int64_t))
            if (self.scratch == NULL or self.scratch_len == NULL or self.scratch_src == NULL
                    or self.scratch_raw == NULL):
                raise MemoryError()
        self.put_queue("default")

    def __dealloc__(self):
        # Slab blocks go with their arenas; only malloc'ed (large) messages are freed one by one.
        cdef int32_t qi
        cdef int64_t i
        cdef Msg* m
        cdef Msg* nxt
        for qi in range(self.queue_cap):
            m = self.queues[qi].fifo_head
            while m != NULL:
                nxt = m.link.next
                if msg_block_bytes(m.body_len) > SLAB_MAX_BLOCK:
                    free(m)
                m = nxt
            for i in range(self.queues[qi].rheap_len):
                if msg_block_bytes(self.queues[qi].rheap[i].body_len) > SLAB_MAX_BLOCK:
                    free(self.queues[qi].rheap[i])
            free(self.queues[qi].rheap)
        for i in range(self.timers.len):
            if msg_block_bytes(self.timers.entries[i].msg.body_len) > SLAB_MAX_BLOCK:
                free(self.timers.entries[i].msg)
        slab_destroy(&self.slabs)
        free(self.all_ids.slots)
        free(self.dump)
        free(self.timers.entries)
        free(self.leases.slots)
        free(self.queues)
        free(self.scratch)
        free(self.scratch_len)
        free(self.scratch_src)
        free(self.scratch_raw)

    # ---- internals ------------------------------------------------------------------------

    cdef int32_t lookup(self, object name) except -1:
        # Callers often pass the same str object each time (a constant): an identity hit skips
        # the dict lookup (~30 ns of a ~350 ns publish in bench/bench_core.py).
        if name is self.last_name:
            return self.last_idx
        idx = self.queue_index.get(name) if isinstance(name, str) else None
        if idx is None:
            raise QueueNotFound(f"queue {name!r} does not exist")
        self.last_name = name
        self.last_idx = idx
        return idx

    cdef int reserve_ready(self, Queue* q, int64_t extra) except -1:
        """Room for ``extra`` more messages in q's return heap, so make_available cannot fail."""
        cdef int64_t cap
        cdef Msg** items
        if q.rheap_len + extra <= q.rheap_cap:
            return 0
        cap = max(q.rheap_cap * 2, q.rheap_len + extra, MIN_RHEAP_CAP)
        items = <Msg**>realloc(q.rheap, cap * sizeof(Msg*))
        if items == NULL:
            raise MemoryError()
        q.rheap = items
        q.rheap_cap = cap
        return 0

    cdef void make_available(self, Queue* q, Msg* m) noexcept:
        """Add m to q's ready set. Appending keeps the FIFO sorted when m is newer than its tail
        (always true for fresh publishes); anything older goes to the return heap."""
        if q.fifo_head == NULL or m.id > q.fifo_tail.id:
            fifo_append(q, m)
        else:
            rheap_push(q, m)
        q.ready += 1

    cdef void end_lease(self, int32_t qi, Msg* m, bint expired) noexcept:
        """m's lease ran out (expired) or was released, and m has left the timer heap and the
        lease table: make it available again, or dead-letter it. The caller reserved room in
        both queues' return heaps."""
        cdef Queue* q = &self.queues[qi]
        q.leased -= 1
        cdef int64_t slot
        if goes_to_dlq(q, m):
            q.dead_lettered += 1
            m.receives = 0
            if self.dump != NULL:
                slot = self.dump_find(m.id)
                if slot >= 0:
                    self.dump[slot].queue_idx = q.dlq
            self.make_available(&self.queues[q.dlq], m)
        else:
            if expired:
                q.expired += 1
            self.make_available(q, m)

    cdef void free_msg(self, Msg* m) noexcept:
        cdef int64_t slot
        if self.all_ids.slots != NULL:
            ht_remove_at(&self.all_ids, ht_find(&self.all_ids, m.id))
        if self.dump != NULL:
            slot = self.dump_find(m.id)
            if slot >= 0:
                self.dump[slot].msg = NULL
        self.memory_bytes_ -= C_MESSAGE_OVERHEAD + m.body_len
        self.message_count_ -= 1
        msg_release(&self.slabs, m)

    cdef int64_t drop_queue_messages(self, int32_t qi) except -1:
        """Free every message of queue qi (ready, leased, delayed); O(n). Returns how many."""
        cdef Queue* q = &self.queues[qi]
        cdef int64_t n = 0
        cdef int64_t i, j
        cdef int64_t slot
        cdef Msg* m = q.fifo_head
        cdef Msg* nxt
        cdef TimerEntry* e
        while m != NULL:
            nxt = m.link.next
            self.free_msg(m)
            n += 1
            m = nxt
        q.fifo_head = NULL
        q.fifo_tail = NULL
        for i in range(q.rheap_len):
            self.free_msg(q.rheap[i])
        n += q.rheap_len
        q.rheap_len = 0
        rheap_maybe_shrink(q)
        if q.leased + q.delayed > 0:
            j = 0
            for i in range(self.timers.len):
                e = &self.timers.entries[i]
                if e.msg.link.slot.queue_idx == qi:
                    if e.cid >= 0:
                        slot = ht_find(&self.leases, e.msg_id)
                        ht_remove_at(&self.leases, slot)
                    self.free_msg(e.msg)
                    n += 1
                else:
                    self.timers.entries[j] = e[0]
                    j += 1
            self.timers.len = j
            heap_rebuild(&self.timers)
            heap_maybe_shrink(&self.timers)
            ht_maybe_shrink(&self.leases)
        q.ready = 0
        q.leased = 0
        q.delayed = 0
        return n

    cdef int id_exists(self, int64_t msg_id) except -1:
        """Whether a message has this id: O(1) for ids >= next_id or leased; otherwise through
        the index of all ids, built in O(n) by the first such call and kept until a publish."""
        if <uint64_t>msg_id >= self.next_id_:
            return 0
        if ht_find(&self.leases, msg_id) >= 0:
            return 1
        if self.all_ids.slots == NULL:
            self.index_all_ids()
        return ht_find(&self.all_ids, msg_id) >= 0

    cdef int index_all_ids(self) except -1:
        cdef uint64_t cap = MIN_TABLE_CAP
        cdef int32_t qi
        cdef int64_t i
        cdef Msg* m
        while <uint64_t>(self.message_count_ + 1) * 5 > cap * 3:
            cap *= 2
        ht_init(&self.all_ids, cap)
        for qi in range(len(self.queue_names_by_idx)):
            m = self.queues[qi].fifo_head
            while m != NULL:
                ht_insert(&self.all_ids, m.id, m)
                m = m.link.next
            for i in range(self.queues[qi].rheap_len):
                m = self.queues[qi].rheap[i]
                ht_insert(&self.all_ids, m.id, m)
        for i in range(self.timers.len):
            ht_insert(&self.all_ids, self.timers.entries[i].msg_id, self.timers.entries[i].msg)
        return 0

    cdef void drop_all_ids(self) noexcept:
        free(self.all_ids.slots)
        memset(&self.all_ids, 0, sizeof(LeaseTable))

    cdef int note_dead_letter(self, Queue* q, Msg* m) except -1:
        """Record a dead-letter move before it happens (so a failure here changes nothing)."""
        self.dead_letters.append((m.id, self.queue_names_by_idx[q.dlq]))
        return 0

    cdef int64_t dump_find(self, int64_t msg_id) noexcept:
        """Index of msg_id in the dump snapshot, or -1; O(log n)."""
        cdef int64_t lo = 0
        cdef int64_t hi = self.dump_len
        cdef int64_t mid
        while lo < hi:
            mid = (lo + hi) >> 1
            if self.dump[mid].id < msg_id:
                lo = mid + 1
            else:
                hi = mid
        return lo if lo < self.dump_len and self.dump[lo].id == msg_id else -1

    cdef int build_dump(self) except -1:
        """Snapshot every message (id, pointer, queue), sorted by id: O(n) plus the sort."""
        cdef int64_t n = 0
        cdef int32_t qi
        cdef int64_t i
        cdef Msg* m
        cdef DumpEntry* d = <DumpEntry*>malloc(max(self.message_count_, 1) * sizeof(DumpEntry))
        if d == NULL:
            raise MemoryError()
        for qi in range(len(self.queue_names_by_idx)):
            m = self.queues[qi].fifo_head
            while m != NULL:
                d[n].id = m.id
                d[n].msg = m
                d[n].queue_idx = qi
                n += 1
                m = m.link.next
            for i in range(self.queues[qi].rheap_len):
                m = self.queues[qi].rheap[i]
                d[n].id = m.id
                d[n].msg = m
                d[n].queue_idx = qi
                n += 1
        for i in range(self.timers.len):
            m = self.timers.entries[i].msg
            d[n].id = m.id
            d[n].msg = m
            d[n].queue_idx = m.link.slot.queue_idx
            n += 1
        try:
            dump_sort(d, n)
        except MemoryError:
            free(d)
            raise
        self.dump = d
        self.dump_len = n
        self.dump_pos = 0
        self.dump_last = 0
        return 0

    cdef void drop_dump(self) noexcept:
        free(self.dump)
        self.dump = NULL
        self.dump_len = 0

    cdef inline bint lease_check(self, int32_t qi, int64_t cid, int64_t msg_id, int64_t now,
                                 int64_t* slot_out) noexcept:
        """Table slot of msg_id if it is in queue qi, leased to cid with now < deadline; else
        False (the ownership rule of delete and change_lease)."""
        cdef int64_t slot = ht_find(&self.leases, msg_id)
        cdef Msg* m
        cdef TimerEntry* e
        if slot < 0:
            return 0
        m = self.leases.slots[slot].msg
        if m.link.slot.queue_idx != qi:
            return 0
        e = &self.timers.entries[m.link.slot.heap_index]
        if e.cid != cid or now >= e.deadline_ms:
            return 0
        slot_out[0] = slot
        return 1

    cdef inline bint delete_one(self, int32_t qi, int64_t cid, int64_t msg_id,
                                int64_t now) noexcept:
        cdef int64_t slot = -1
        cdef Msg* m
        if not self.lease_check(qi, cid, msg_id, now, &slot):
            return False
        m = self.leases.slots[slot].msg
        heap_remove(&self.timers, m.link.slot.heap_index)
        ht_remove_at(&self.leases, slot)
        self.queues[qi].leased -= 1
        self.queues[qi].deleted += 1
        self.free_msg(m)
        return True

    cdef void after_removals(self) noexcept:
        heap_maybe_shrink(&self.timers)
        ht_maybe_shrink(&self.leases)

    cdef dict queue_attributes(self, int32_t qi):
        cdef Queue* q = &self.queues[qi]
        return {
            "visibility_timeout_ms": q.visibility_ms,
            "delay_ms": q.delay_ms,
            "max_receives": q.max_receives if q.max_receives > 0 else None,
            "dead_letter_queue": self.queue_names_by_idx[q.dlq] if q.dlq >= 0 else None,
            "max_message_bytes": q.max_message_bytes,
        }

    # ---- queues ---------------------------------------------------------------------------

    def put_queue(self, name, attributes=None):
        """Create queue ``name`` or update its attributes; True if it was created."""
        cdef int32_t qi
        cdef int32_t dlq_idx
        cdef Queue* q
        cdef Queue* grown
        if not isinstance(name, str) or _QUEUE_NAME.fullmatch(name) is None:
            raise InvalidArgument(
                "queue name must match [A-Za-z0-9_-]{1,80}", "invalid_queue_name")
        if attributes is None:
            attributes = {}
        if not isinstance(attributes, Mapping):
            raise InvalidArgument("attributes must be a mapping", "invalid_attribute")
        existing = self.queue_index.get(name)
        if existing is None:
            new = {
                "visibility_timeout_ms": self.default_visibility_ms,
                "delay_ms": 0,
                "max_receives": None,
                "dead_letter_queue": None,
                "max_message_bytes": self.max_message_bytes_,
            }
        else:
            new = self.queue_attributes(existing)
        for key, value in attributes.items():
            if key == "visibility_timeout_ms":
                new[key] = arg_int(value, 0, C_MAX_VISIBILITY_MS, "invalid_attribute", key)
            elif key == "delay_ms":
                new[key] = arg_int(value, 0, C_MAX_DELAY_MS, "invalid_attribute", key)
            elif key == "max_receives":
                new[key] = (None if value is None
                            else arg_int(value, 1, C_MAX_ID, "invalid_attribute", key))
            elif key == "max_message_bytes":
                new[key] = arg_int(value, 1, self.max_message_bytes_, "invalid_attribute", key)
            elif key == "dead_letter_queue":
                if value is not None and not isinstance(value, str):
                    raise InvalidArgument(
                        "dead_letter_queue must be a queue name or null", "invalid_attribute")
                new[key] = value
            else:
                raise InvalidArgument(f"unknown attribute {key!r}", "invalid_attribute")
        dlq = new["dead_letter_queue"]
        if dlq is not None:
            if dlq == name:
                raise InvalidArgument(
                    "dead_letter_queue cannot be the queue itself", "invalid_attribute")
            if dlq not in self.queue_index:
                raise InvalidArgument(
                    f"dead_letter_queue {dlq!r} does not exist", "invalid_attribute")
        if new["max_receives"] is not None and dlq is None:
            raise InvalidArgument(
                "max_receives requires a dead_letter_queue", "invalid_attribute")
        if existing is None:
            if self.free_queue_idx:
                qi = self.free_queue_idx.pop()
            else:
                qi = len(self.queue_names_by_idx)
                if qi >= C_MAX_QUEUES:
                    raise InvalidArgument(
                        f"at most {C_MAX_QUEUES} queues", "too_many_queues")
                if qi >= self.queue_cap:
                    grown = <Queue*>realloc(
                        self.queues, (self.queue_cap * 2 + 4) * sizeof(Queue))
                    if grown == NULL:
                        raise MemoryError()
                    memset(grown + self.queue_cap, 0, (self.queue_cap + 4) * sizeof(Queue))
                    self.queues = grown
                    self.queue_cap = self.queue_cap * 2 + 4
                self.queue_names_by_idx.append(None)
            q = &self.queues[qi]
            memset(q, 0, sizeof(Queue))
            q.active = True
            q.dlq = -1
            self.queue_names_by_idx[qi] = name
            self.queue_index[name] = qi
        else:
            qi = existing
            q = &self.queues[qi]
        dlq_idx = -1 if dlq is None else self.queue_index[dlq]
        if q.dlq >= 0:
            self.queues[q.dlq].dlq_refs -= 1
        if dlq_idx >= 0:
            self.queues[dlq_idx].dlq_refs += 1
        q.dlq = dlq_idx
        q.visibility_ms = new["visibility_timeout_ms"]
        q.delay_ms = new["delay_ms"]
        q.max_receives = 0 if new["max_receives"] is None else new["max_receives"]
        q.max_message_bytes = new["max_message_bytes"]
        return existing is None

    def delete_queue(self, name):
        """Drop the queue and every message in it; returns how many messages."""
        cdef int32_t qi = self.lookup(name)
        cdef Queue* q = &self.queues[qi]
        cdef int64_t n
        if name == "default":
            raise QueueInUse("the default queue cannot be deleted")
        if q.dlq_refs > 0:
            raise QueueInUse(f"queue {name!r} is the dead_letter_queue of another queue")
        n = self.drop_queue_messages(qi)
        if q.dlq >= 0:
            self.queues[q.dlq].dlq_refs -= 1
        free(q.rheap)
        memset(q, 0, sizeof(Queue))
        del self.queue_index[name]
        self.queue_names_by_idx[qi] = None
        self.last_name = NO_NAME  # the cached name may be this queue's
        self.free_queue_idx.append(qi)
        return n

    def purge(self, name):
        """Drop every message of the queue (ready, delayed and leased); returns how many."""
        return self.drop_queue_messages(self.lookup(name))

    def has_queue(self, name):
        return isinstance(name, str) and name in self.queue_index

    def queue_names(self):
        """Names of all queues, sorted."""
        return sorted(self.queue_index)

    def queue_info(self, name):
        cdef int32_t qi = self.lookup(name)
        cdef Queue* q = &self.queues[qi]
        return {
            "name": name,
            "attributes": self.queue_attributes(qi),
            "counts": {"ready": q.ready, "leased": q.leased, "delayed": q.delayed},
            "totals": {
                "published": q.published,
                "delivered": q.delivered,
                "deleted": q.deleted,
                "expired": q.expired,
                "dead_lettered": q.dead_lettered,
            },
        }

    cpdef ready_count(self, name):
        """Messages available now."""
        return self.queues[self.lookup(name)].ready

    # ---- messages -------------------------------------------------------------------------

    cpdef publish(self, queue, body, int64_t now, delay_ms=-1):
        """Store one message and return its id."""
        cdef int32_t qi = self.lookup(queue)
        cdef Queue* q = &self.queues[qi]
        cdef int64_t delay
        cdef int64_t esc
        cdef Msg* m
        check_now(now)
        delay = arg_int(delay_ms, -1, C_MAX_DELAY_MS, "invalid_delay", "delay_ms")
        if delay < 0:
            delay = q.delay_ms
        data = body_bytes(body)
        esc = body_escaped_len(data, q.max_message_bytes)
        if self.next_id_ > <uint64_t>C_MAX_ID:
            raise IdsExhausted("message ids are exhausted")
        if self.max_memory_ and self.memory_bytes_ + C_MESSAGE_OVERHEAD + esc > self.max_memory_:
            raise MemoryLimitExceeded("the broker's memory limit is reached")
        if delay > 0:
            heap_reserve(&self.timers, 1)
        m = msg_new(&self.slabs, <int64_t>self.next_id_, bytes_ptr(data), PyBytes_GET_SIZE(data),
                    esc)
        if m == NULL:
            raise MemoryError()
        if self.all_ids.slots != NULL:
            self.drop_all_ids()  # restoring is over
        self.next_id_ += 1
        self.memory_bytes_ += C_MESSAGE_OVERHEAD + esc
        self.message_count_ += 1
        q.published += 1
        if delay > 0:
            m.link.slot.queue_idx = <uint16_t>qi
            m.link.slot.state = MSG_DELAYED
            heap_push(&self.timers, now + delay, -1, m)
            q.delayed += 1
        else:
            fifo_append(q, m)  # the newest id: the FIFO stays sorted
            q.ready += 1
        return m.id

    def publish_batch(self, queue, bodies, int64_t now, delays=None):
        """All or nothing; returns the first id of range(first, first + len(bodies))."""
        cdef int32_t qi = self.lookup(queue)
        cdef Queue* q = &self.queues[qi]
        cdef int64_t n, i, delay, esc
        cdef int64_t total = 0
        cdef int64_t n_delayed = 0
        cdef PyObject** items
        cdef PyObject** delay_items = NULL
        check_now(now)
        if isinstance(bodies, (bytes, bytearray, memoryview, str)):
            raise InvalidArgument("bodies must be a sequence of bodies", "invalid_batch")
        seq = PySequence_Fast(bodies, b"bodies must be a sequence")
        n = PySequence_Fast_GET_SIZE(seq)
        if n < 1 or n > self.max_batch:
            raise InvalidArgument(
                f"a batch holds 1..{self.max_batch} messages", "invalid_batch")
        items = PySequence_Fast_ITEMS(seq)
        for i in range(n):
            if not PyBytes_CheckExact(<object>items[i]):
                seq = [body_bytes(b) for b in seq]
                items = PySequence_Fast_ITEMS(seq)
                break
        if delays is not None:
            if isinstance(delays, (bytes, bytearray, memoryview, str)):
                raise InvalidArgument("delays must be a sequence of integers", "invalid_delay")
            delay_seq = PySequence_Fast(delays, b"delays must be a sequence")
            if PySequence_Fast_GET_SIZE(delay_seq) != n:
                raise InvalidArgument("delays must have one entry per body", "invalid_delay")
            delay_items = PySequence_Fast_ITEMS(delay_seq)
        # Pass 1: validate everything and size it; nothing is stored yet.
        for i in range(n):
            if delay_items != NULL:
                delay = arg_int(<object>delay_items[i], -1, C_MAX_DELAY_MS, "invalid_delay",
                                "delay_ms")
                if delay < 0:
                    delay = q.delay_ms
                if delay > 0:
                    n_delayed += 1
            esc = body_escaped_len(<bytes><object>items[i], q.max_message_bytes)
            self.scratch_src[i] = bytes_ptr(<bytes><object>items[i])
            self.scratch_raw[i] = PyBytes_GET_SIZE(<bytes><object>items[i])
            self.scratch_len[i] = esc
            total += C_MESSAGE_OVERHEAD + esc
        if delay_items == NULL and q.delay_ms > 0:
            n_delayed = n
        return self.store_batch(qi, n, total, n_delayed, delay_items, now)

    cpdef publish_batch_json(self, queue, bytes data, int64_t now):
        """Publish the batch ``data`` when it is a JSON array of plain strings (no backslash,
        each a valid message for the queue) and return the answer, ``{"ids":[...]}``; else
        store nothing and return None, for the caller to parse the general way and name the
        error. A plain string's text is its body, already in the stored (escaped) form."""
        cdef int32_t qi = self.lookup(queue)
        cdef Queue* q = &self.queues[qi]
        cdef int64_t n, i, raw
        cdef int64_t total = 0
        check_now(now)
        n = split_plain_strings(bytes_ptr(data), PyBytes_GET_SIZE(data), self.scratch_src,
                                self.scratch_raw, self.max_batch)
        if n <= 0:
            return None
        for i in range(n):
            raw = self.scratch_raw[i]
            if (raw == 0 or raw > q.max_message_bytes
                    or utf8_escaped_len(self.scratch_src[i], raw) != raw):
                return None  # empty, too long, control characters or not UTF-8
            self.scratch_len[i] = raw
            total += C_MESSAGE_OVERHEAD + raw
        return batch_ids_json(
            self.store_batch(qi, n, total, n if q.delay_ms > 0 else 0, NULL, now), n)

    cdef int64_t store_batch(self, int32_t qi, int64_t n, int64_t total, int64_t n_delayed,
                             PyObject** delay_items, int64_t now) except -1:
        """Pass 2 of a batch publish: store the ``n`` validated bodies of scratch_src /
        scratch_raw (escaped lengths in scratch_len, ``total`` bytes with overheads) under
        consecutive ids, all or nothing; returns the first id."""
        cdef Queue* q = &self.queues[qi]
        cdef int64_t i, delay
        cdef int64_t first
        cdef Msg* m
        if self.next_id_ + <uint64_t>n - 1 > <uint64_t>C_MAX_ID:
            raise IdsExhausted("message ids are exhausted")
        if self.max_memory_ and self.memory_bytes_ + total > self.max_memory_:
            raise MemoryLimitExceeded("the broker's memory limit is reached")
        heap_reserve(&self.timers, n_delayed)
        first = <int64_t>self.next_id_
        for i in range(n):
            m = msg_new(&self.slabs, first + i, self.scratch_src[i], self.scratch_raw[i],
                        self.scratch_len[i])
            if m == NULL:
                while i > 0:
                    i -= 1
                    msg_release(&self.slabs, self.scratch[i])
                raise MemoryError()
            self.scratch[i] = m
        if self.all_ids.slots != NULL:
            self.drop_all_ids()  # restoring is over
        for i in range(n):
            m = self.scratch[i]
            if delay_items != NULL:
                delay = <int64_t>(<object>delay_items[i])
                if delay < 0:
                    delay = q.delay_ms
            else:
                delay = q.delay_ms
            if delay > 0:
                m.link.slot.queue_idx = <uint16_t>qi
                m.link.slot.state = MSG_DELAYED
                heap_push(&self.timers, now + delay, -1, m)
                q.delayed += 1
            else:
                fifo_append(q, m)
                q.ready += 1
        self.next_id_ += <uint64_t>n
        self.memory_bytes_ += total
        self.message_count_ += n
        q.published += n
        return first

    cpdef receive(self, queue, cid, limit, int64_t now, visibility_ms=-1, list leased=None):
        """Lease up to ``limit`` available messages to ``cid``; returns the JSON response.
        ``leased``, if given, gets the leased ids appended (for the durability log)."""
        cdef int32_t qi = self.lookup(queue)
        cdef Queue* q = &self.queues[qi]
        cdef int64_t c = arg_int(cid, 0, C_MAX_ID, "invalid_cid", "cid")
        cdef int64_t n = arg_int(limit, 1, self.max_batch, "invalid_limit", "limit")
        cdef int64_t vis, i, deadline
        cdef Msg* m
        cdef Msg** got = self.scratch
        cdef Py_ssize_t leased_before = 0
        check_now(now)
        vis = arg_int(visibility_ms, -1, C_MAX_VISIBILITY_MS, "invalid_visibility",
                      "visibility_ms")
        if vis < 0:
            vis = q.visibility_ms
        if n > q.ready:
            n = q.ready
        if n == 0:
            return EMPTY_RESPONSE
        heap_reserve(&self.timers, n)
        ht_reserve(&self.leases, n)
        for i in range(n):
            got[i] = ready_pop(q)
        try:
            out = build_response(got, n)
            if leased is not None:
                leased_before = len(leased)
                for i in range(n):
                    leased.append(got[i].id)
        except MemoryError:
            if leased is not None:
                del leased[leased_before:]
            # Every taken id is below every remaining ready id: prepend them, newest first.
            i = n
            while i > 0:
                i -= 1
                got[i].link.next = q.fifo_head
                if q.fifo_head == NULL:
                    q.fifo_tail = got[i]
                q.fifo_head = got[i]
            raise
        rheap_maybe_shrink(q)
        deadline = now + vis
        for i in range(n):
            m = got[i]
            m.receives = receives_after(m.receives)
            m.link.slot.queue_idx = <uint16_t>qi
            m.link.slot.state = MSG_LEASED
            heap_push(&self.timers, deadline, c, m)
            ht_insert(&self.leases, m.id, m)
        q.ready -= n
        q.leased += n
        q.delivered += n
        return out

    cpdef delete(self, queue, cid, msg_id, int64_t now):
        """Ack: True iff msg_id is in queue, leased to cid and now < deadline."""
        cdef int32_t qi = self.lookup(queue)
        cdef int64_t c = arg_int(cid, 0, C_MAX_ID, "invalid_cid", "cid")
        cdef int64_t mid = arg_int(msg_id, 1, C_MAX_ID, "invalid_id", "id")
        check_now(now)
        if self.delete_one(qi, c, mid, now):
            self.after_removals()
            return True
        return False

    def delete_batch(self, queue, cid, msg_ids, int64_t now):
        """Delete each id by the rule of delete; returns (deleted, failed) in input order."""
        cdef int32_t qi = self.lookup(queue)
        cdef int64_t c = arg_int(cid, 0, C_MAX_ID, "invalid_cid", "cid")
        cdef int64_t n, i
        cdef int64_t* ids = self.scratch_len
        cdef PyObject** items
        if isinstance(msg_ids, (bytes, bytearray, memoryview, str)):
            raise InvalidArgument("ids must be a sequence of integers", "invalid_batch")
        seq = PySequence_Fast(msg_ids, b"ids must be a sequence of integers")
        n = PySequence_Fast_GET_SIZE(seq)
        if n > self.max_batch:
            raise InvalidArgument(f"at most {self.max_batch} ids", "invalid_batch")
        items = PySequence_Fast_ITEMS(seq)
        for i in range(n):
            ids[i] = arg_int(<object>items[i], 1, C_MAX_ID, "invalid_id", "id")
        check_now(now)
        self.delete_many(qi, c, ids, n, now, self.scratch_raw)
        deleted = []
        failed = []
        for i in range(n):
            (deleted if self.scratch_raw[i] else failed).append(ids[i])
        return deleted, failed

    cdef int64_t delete_many(self, int32_t qi, int64_t cid, const int64_t* ids, int64_t n,
                             int64_t now, int64_t* done) noexcept:
        """Delete each of ``ids`` in order by the rule of delete: done[i] is 1 if ids[i] was
        deleted, else 0. Returns how many were."""
        cdef int64_t i
        cdef int64_t n_deleted = 0
        for i in range(n):
            done[i] = self.delete_one(qi, cid, ids[i], now)
            n_deleted += done[i]
        if n_deleted:
            self.after_removals()
        return n_deleted

    cpdef ack_json(self, queue, bytes data, int64_t now):
        """The fast path of a batch ack: when ``data`` is ``{"cid": C, "ids": [...]}`` with a
        valid cid and 1..max_batch valid ids, delete each as delete_batch does and return
        ``b'{"deleted":[...],"failed":[...]}'``; otherwise delete nothing and return None."""
        cdef int32_t qi = self.lookup(queue)
        cdef int64_t cid = -1
        cdef int64_t* ids = self.scratch_len
        cdef int64_t* done = self.scratch_raw
        cdef int64_t n, i, size, n_deleted
        cdef char* p
        check_now(now)
        n = parse_ack(bytes_ptr(data), PyBytes_GET_SIZE(data), &cid, ids, self.max_batch)
        if n == 0:
            return None
        n_deleted = self.delete_many(qi, cid, ids, n, now, done)
        size = 12 + 12 + 2
        for i in range(n):
            size += digits_u64(<uint64_t>ids[i])
        size += (n_deleted - 1 if n_deleted else 0) + (n - n_deleted - 1 if n > n_deleted else 0)
        out = PyBytes_FromStringAndSize(NULL, size)
        p = PyBytes_AS_STRING(out)
        p = put(p, b'{"deleted":[', 12)
        p = write_ids(p, ids, done, n, 1)
        p = put(p, b'],"failed":[', 12)
        p = write_ids(p, ids, done, n, 0)
        put(p, b']}', 2)
        return out

    def change_lease(self, queue, cid, msg_id, timeout_ms, int64_t now):
        """Extend (timeout_ms > 0) or release (0) a lease; same rule and answer as delete."""
        cdef int32_t qi = self.lookup(queue)
        cdef Queue* q = &self.queues[qi]
        cdef int64_t c = arg_int(cid, 0, C_MAX_ID, "invalid_cid", "cid")
        cdef int64_t mid = arg_int(msg_id, 1, C_MAX_ID, "invalid_id", "id")
        cdef int64_t timeout = arg_int(timeout_ms, 0, C_MAX_VISIBILITY_MS, "invalid_timeout",
                                       "timeout_ms")
        cdef int64_t slot = -1
        cdef int64_t hi
        cdef Msg* m
        check_now(now)
        if not self.lease_check(qi, c, mid, now, &slot):
            return False
        m = self.leases.slots[slot].msg
        hi = m.link.slot.heap_index
        if timeout > 0:
            self.timers.entries[hi].deadline_ms = now + timeout
            heap_fix(&self.timers, hi)
            return True
        self.reserve_ready(q, 1)
        if q.dlq >= 0:
            self.reserve_ready(&self.queues[q.dlq], 1)
            if self.track_dead_letters and goes_to_dlq(q, m):
                self.note_dead_letter(q, m)
        heap_remove(&self.timers, hi)
        ht_remove_at(&self.leases, slot)
        self.end_lease(qi, m, False)
        self.after_removals()
        return True

    # ---- timers ---------------------------------------------------------------------------

    cpdef int64_t next_deadline(self) noexcept:
        """The earliest lease/delay deadline, or -1 if there is none."""
        return self.timers.entries[0].deadline_ms if self.timers.len else -1

    def expire(self, int64_t now, budget):
        """Process at most ``budget`` due heap entries in (deadline, id) order."""
        cdef int64_t b
        cdef int64_t done = 0
        cdef TimerEntry e
        cdef Msg* m
        cdef Queue* q
        cdef int32_t qi
        check_now(now)
        b = arg_int(budget, 0, C_MAX_ID, "invalid_budget", "budget")
        while done < b and self.timers.len > 0 and self.timers.entries[0].deadline_ms <= now:
            e = self.timers.entries[0]
            m = e.msg
            if e.cid >= 0:
                # The lease table slot is a likely cache miss: let it load during the sift.
                __builtin_prefetch(&self.leases.slots[ht_hash(&self.leases, e.msg_id)])
            qi = m.link.slot.queue_idx
            q = &self.queues[qi]
            self.reserve_ready(q, 1)
            if e.cid >= 0 and q.dlq >= 0:
                self.reserve_ready(&self.queues[q.dlq], 1)
                if self.track_dead_letters and goes_to_dlq(q, m):
                    self.note_dead_letter(q, m)
            heap_remove(&self.timers, 0)
            if e.cid >= 0:
                ht_remove_at(&self.leases, ht_find(&self.leases, e.msg_id))
                self.end_lease(qi, m, True)
            else:
                q.delayed -= 1
                self.make_available(q, m)
            done += 1
        if done:
            self.after_removals()
        return done

    # ---- accounting and metrics -----------------------------------------------------------

    @property
    def memory_bytes(self):
        """Bytes held: sum over messages of MESSAGE_OVERHEAD + len(escaped body)."""
        return self.memory_bytes_

    @property
    def memory_limit(self):
        """The configured limit in bytes (0 = none)."""
        return self.max_memory_

    @property
    def message_count(self):
        return self.message_count_

    def stats(self):
        """(name, ready, leased, delayed, published, delivered, deleted, expired,
        dead_lettered) per queue, sorted by name."""
        cdef int32_t qi
        cdef Queue* q
        rows = []
        for name in sorted(self.queue_index):
            qi = self.queue_index[name]
            q = &self.queues[qi]
            rows.append((name, q.ready, q.leased, q.delayed, q.published, q.delivered,
                         q.deleted, q.expired, q.dead_lettered))
        return rows

    # ---- recovery hooks -------------------------------------------------------------------

    @property
    def next_id(self):
        """The id the next publish will get."""
        return self.next_id_

    def set_next_id(self, next_id):
        """Continue the id counter from ``next_id`` (it never moves backwards)."""
        if (not isinstance(next_id, int) or isinstance(next_id, bool)
                or not 1 <= next_id <= MAX_ID + 1):
            raise InvalidArgument(f"next_id must be an integer in 1..{MAX_ID + 1}",
                                  "invalid_id")
        if next_id > self.next_id_:
            self.next_id_ = next_id

    def restore(self, queue, msg_id, body, receives, int64_t now, delay_ms=0):
        """Insert a message with a given id and receive count, bypassing the memory limit."""
        cdef int32_t qi = self.lookup(queue)
        cdef Queue* q = &self.queues[qi]
        cdef int64_t mid = arg_int(msg_id, 1, C_MAX_ID, "invalid_id", "id")
        cdef int64_t esc, r, delay
        cdef Msg* m
        data = body_bytes(body)
        esc = body_escaped_len(data, C_MAX_MESSAGE_BYTES)
        r = arg_int(receives, 0, UINT32_MAX, "invalid_receives", "receives")
        check_now(now)
        delay = arg_int(delay_ms, 0, C_MAX_DELAY_MS, "invalid_delay", "delay_ms")
        if self.id_exists(mid):
            raise InvalidArgument(f"id {mid} is in use", "invalid_id")
        if delay > 0:
            heap_reserve(&self.timers, 1)
        else:
            self.reserve_ready(q, 1)
        if self.all_ids.slots != NULL:
            ht_reserve(&self.all_ids, 1)
        m = msg_new(&self.slabs, mid, bytes_ptr(data), PyBytes_GET_SIZE(data), esc)
        if m == NULL:
            raise MemoryError()
        m.receives = <uint32_t>r
        if self.all_ids.slots != NULL:
            ht_insert(&self.all_ids, mid, m)
        self.memory_bytes_ += C_MESSAGE_OVERHEAD + esc
        self.message_count_ += 1
        if <uint64_t>mid >= self.next_id_:
            self.next_id_ = <uint64_t>mid + 1
        if delay > 0:
            m.link.slot.queue_idx = <uint16_t>qi
            m.link.slot.state = MSG_DELAYED
            heap_push(&self.timers, now + delay, -1, m)
            q.delayed += 1
        else:
            self.make_available(q, m)

    def dump_messages(self, cursor, max_count, int64_t now):
        """A chunk of every message for a snapshot, in id order: (next_cursor, [(id, queue,
        raw body, receives, delay_remaining_ms), ...])."""
        cdef int64_t c = arg_int(cursor, 0, C_MAX_ID, "invalid_cursor", "cursor")
        cdef int64_t k = arg_int(max_count, 1, C_MAX_ID, "invalid_max_count", "max_count")
        cdef int64_t pos, hi, lo, mid, delay
        cdef DumpEntry* e
        cdef Msg* m
        check_now(now)
        if c == 0 or self.dump == NULL:
            self.drop_dump()
            self.build_dump()
        if c == 0:
            pos = 0
        elif c == self.dump_last:
            pos = self.dump_pos
        else:
            lo = 0
            hi = self.dump_len
            while lo < hi:  # the first entry with id > c
                mid = (lo + hi) >> 1
                if self.dump[mid].id <= c:
                    lo = mid + 1
                else:
                    hi = mid
            pos = lo
        out = []
        while pos < self.dump_len and len(out) < k:
            e = &self.dump[pos]
            pos += 1
            m = e.msg
            if m == NULL:
                continue
            delay = 0
            # A message is delayed iff the heap slot its union claims holds it with cid -1 (for
            # a message in a FIFO the union holds a pointer: no heap entry points back at it).
            hi = m.link.slot.heap_index
            if (0 <= hi < self.timers.len and self.timers.entries[hi].msg == m
                    and self.timers.entries[hi].cid < 0):
                delay = max(self.timers.entries[hi].deadline_ms - now, 0)
            out.append((m.id, self.queue_names_by_idx[e.queue_idx],
                        json_unescape(msg_body(m), m.body_len), m.receives, delay))
        if pos >= self.dump_len:
            self.drop_dump()
            return 0, out
        self.dump_pos = pos
        self.dump_last = self.dump[pos - 1].id
        return self.dump_last, out

    def take_dead_lettered(self):
        """The (id, dead-letter queue) moves since the last call, in order (empty unless the
        broker was made with track_dead_letters=True)."""
        out = self.dead_letters
        self.dead_letters = []
        return out

    # ---- debugging ------------------------------------------------------------------------

    def allocator_stats(self):
        """Slab allocator figures: slabs holding blocks, empty slabs kept, arenas mapped."""
        return {
            "slab_bytes": SLAB_BYTES,
            "slabs_in_use": self.slabs.slabs_in_use,
            "free_slabs": self.slabs.n_free,
            "arenas": self.slabs.n_arenas,
            "arena_bytes": ARENA_BYTES,
        }

    def check_invariants(self):
        """Raise AssertionError if any internal invariant is broken."""
        cdef int32_t qi
        cdef int64_t i, parent, n_fifo, slot
        cdef Msg* m
        cdef Msg* prev
        cdef Queue* q
        cdef TimerEntry* e
        cdef int64_t memory = 0
        cdef int64_t count = 0
        cdef int64_t table_count = 0

        ids = set()
        ptrs = []
        where = {}
        leased = {}
        delayed = {}
        refs = {}
        n_slots = len(self.queue_names_by_idx)
        if n_slots > self.queue_cap:
            fail("more queue names than queue slots")
        if set(self.queue_index.values()) != {
                i for i, name in enumerate(self.queue_names_by_idx) if name is not None}:
            fail("queue_index and queue_names_by_idx disagree")
        if "default" not in self.queue_index:
            fail("the default queue is missing")
        for qi in range(n_slots):
            q = &self.queues[qi]
            name = self.queue_names_by_idx[qi]
            if (name is not None) != bool(q.active):
                fail(f"queue slot {qi}: active flag and name disagree")
            if not q.active:
                if q.fifo_head != NULL or q.rheap_len or q.ready or q.leased or q.delayed:
                    fail(f"free queue slot {qi} holds messages")
                continue
            if self.queue_index[name] != qi:
                fail(f"queue {name}: wrong index")
            if q.dlq >= 0:
                if q.dlq >= n_slots or not self.queues[q.dlq].active or q.dlq == qi:
                    fail(f"queue {name}: bad dead-letter queue")
                refs[q.dlq] = refs.get(q.dlq, 0) + 1
            if q.max_receives > 0 and q.dlq < 0:
                fail(f"queue {name}: max_receives without dead-letter queue")
            n_fifo = 0
            prev = NULL
            m = q.fifo_head
            while m != NULL:
                if prev != NULL and prev.id >= m.id:
                    fail(f"queue {name}: FIFO out of order")
                if m.id in ids:
                    fail(f"id {m.id} held twice")
                ids.add(m.id)
                ptrs.append(<uintptr_t>m)
                where[m.id] = (qi, <uintptr_t>m)
                memory += C_MESSAGE_OVERHEAD + m.body_len
                n_fifo += 1
                prev = m
                m = m.link.next
            if prev != NULL and prev != q.fifo_tail:
                fail(f"queue {name}: stale FIFO tail")
            if q.rheap_len > q.rheap_cap:
                fail(f"queue {name}: return heap overflow")
            for i in range(q.rheap_len):
                m = q.rheap[i]
                if i > 0 and q.rheap[(i - 1) >> 1].id > m.id:
                    fail(f"queue {name}: return heap out of order at {i}")
                if m.link.slot.state != MSG_READY:
                    fail(f"queue {name}: return heap message {m.id} not ready")
                if m.id in ids:
                    fail(f"id {m.id} held twice")
                ids.add(m.id)
                ptrs.append(<uintptr_t>m)
                where[m.id] = (qi, <uintptr_t>m)
                memory += C_MESSAGE_OVERHEAD + m.body_len
            if q.ready != n_fifo + q.rheap_len:
                fail(f"queue {name}: ready count {q.ready} != {n_fifo + q.rheap_len}")
        for qi in range(n_slots):
            if self.queues[qi].active and self.queues[qi].dlq_refs != refs.get(qi, 0):
                fail(f"queue slot {qi}: dead-letter reference count is wrong")
        if self.timers.len > self.timers.cap:
            fail("timer heap overflow")
        for i in range(self.timers.len):
            e = &self.timers.entries[i]
            m = e.msg
            if i > 0:
                parent = (i - 1) // HEAP_ARITY
                if entry_before(e, &self.timers.entries[parent]):
                    fail(f"timer heap out of order at {i}")
            if m.link.slot.heap_index != i:
                fail(f"timer entry {i}: stored slot {m.link.slot.heap_index}")
            if e.msg_id != m.id:
                fail(f"timer entry {i}: id copy is stale")
            qi = m.link.slot.queue_idx
            if qi >= n_slots or not self.queues[qi].active:
                fail(f"timer entry {i}: message of a missing queue")
            if e.cid >= 0:
                if m.link.slot.state != MSG_LEASED:
                    fail(f"timer entry {i}: lease of a message not marked leased")
                leased[qi] = leased.get(qi, 0) + 1
                slot = ht_find(&self.leases, m.id)
                if slot < 0 or self.leases.slots[slot].msg != m:
                    fail(f"leased message {m.id} missing from the lease table")
            else:
                if e.cid != -1 or m.link.slot.state != MSG_DELAYED:
                    fail(f"timer entry {i}: bad delay entry")
                delayed[qi] = delayed.get(qi, 0) + 1
            if m.id in ids:
                fail(f"id {m.id} held twice")
            ids.add(m.id)
            ptrs.append(<uintptr_t>m)
            where[m.id] = (qi, <uintptr_t>m)
            memory += C_MESSAGE_OVERHEAD + m.body_len
        for qi in range(n_slots):
            q = &self.queues[qi]
            if q.active and (q.leased != leased.get(qi, 0) or q.delayed != delayed.get(qi, 0)):
                fail(f"queue slot {qi}: leased/delayed counts are wrong")
        for i in range(<int64_t>(self.leases.mask + 1)):
            if self.leases.slots[i].id != 0:
                table_count += 1
                if ht_find(&self.leases, self.leases.slots[i].id) != i:
                    fail(f"lease table slot {i} unreachable by probing")
                if self.leases.slots[i].msg.link.slot.state != MSG_LEASED:
                    fail(f"lease table holds message {self.leases.slots[i].id}, not leased")
        if table_count != self.leases.count or table_count != sum(leased.values()):
            fail("lease table count is wrong")
        if table_count * 5 > <int64_t>(self.leases.mask + 1) * 3:
            fail("lease table above load 0.6")
        count = len(ids)
        if count != self.message_count_:
            fail(f"message_count {self.message_count_} != {count}")
        if memory != self.memory_bytes_:
            fail(f"memory_bytes {self.memory_bytes_} != {memory}")
        if ids and max(ids) >= self.next_id_:
            fail("an id is not below next_id")
        self._check_slabs(ptrs)
        if self.all_ids.slots != NULL:
            if self.all_ids.count != count:
                fail("the index of all ids misses messages")
            for msg_id, (qi, p) in where.items():
                slot = ht_find(&self.all_ids, msg_id)
                if slot < 0 or <uintptr_t>self.all_ids.slots[slot].msg != p:
                    fail(f"the index of all ids is wrong for {msg_id}")
        for i in range(self.dump_len):
            if i > 0 and self.dump[i - 1].id >= self.dump[i].id:
                fail("dump snapshot out of order")
            if self.dump[i].msg != NULL:
                found = where.get(self.dump[i].id)
                if found is None or found != (self.dump[i].queue_idx,
                                              <uintptr_t>self.dump[i].msg):
                    fail(f"dump snapshot entry {self.dump[i].id} is stale")

    def _check_slabs(self, ptrs):
        """Every small message lies in a slab of its size class, on a block boundary; slab live
        counts, class lists and the in-use count agree."""
        cdef uintptr_t p, base
        cdef Msg* m
        cdef Slab* s
        cdef Slab* prev
        cdef int cls
        cdef int64_t empty_listed = 0
        live = {}
        for p in ptrs:
            m = <Msg*>p
            if msg_block_bytes(m.body_len) > SLAB_MAX_BLOCK:
                continue
            base = p & ~(<uintptr_t>SLAB_BYTES - 1)
            s = <Slab*>base
            if s.block_bytes != msg_block_bytes(m.body_len):
                fail(f"message {m.id} in a slab of another size class")
            if (p - base - SLAB_HEADER) % s.block_bytes or p + s.block_bytes > base + s.bump:
                fail(f"message {m.id} is not on a handed-out block boundary")
            live[base] = live.get(base, 0) + 1
        for base, n in live.items():
            if (<Slab*><uintptr_t>base).live != n:
                fail(f"slab {base:#x} counts {(<Slab*><uintptr_t>base).live} blocks, holds {n}")
        for cls in range(SLAB_MAX_BLOCK // 8 + 1):
            prev = NULL
            s = self.slabs.classes[cls]
            while s != NULL:
                if s.prev != prev or not s.has_room or s.block_bytes != <uint32_t>(cls * 8):
                    fail(f"slab list of class {cls} is broken")
                if s.free_list == NULL and s.bump + s.block_bytes > SLAB_BYTES:
                    fail(f"full slab listed in class {cls}")
                if s.live == 0:
                    empty_listed += 1
                prev = s
                s = s.next
        if len(live) + empty_listed != self.slabs.slabs_in_use:
            fail(f"slabs_in_use {self.slabs.slabs_in_use} != {len(live) + empty_listed}")
