# A message's block: the Msg header (_core.pxd), its JSON-escaped body, then - only when the
# MSG_HAS_ATTRIBUTES bit of its time word is set - a 4-byte length and the attribute blob
# (opaque bytes the store keeps for it, e.g. SQS message attributes). Small blocks come from the
# slab allocator, larger ones from malloc; the size class follows from the block's size, so
# nothing records which.
#
# Times. Msg.times packs the publish time and the first receive time in one 8-byte word, so a
# message costs 8 bytes more than before they were kept (bench/bench_core.py: 1M x 200 B
# messages, 239.0 -> 247.0 MB of RSS): two plain int64 fields would cost 16 (the 8-byte block
# rounding leaves no room for 12). The publish time (``now`` of the publish, monotonic ms) takes
# 43 signed bits: exact, +-139 years. The first receive is kept as its distance from the publish
# in 20 bits: exact below 65.5 s, then truncated to 16 significant bits (an error under 31 ppm
# of the distance: < 0.12 s after an hour, < 3 s after a day), which is what SQS's
# ApproximateFirstReceiveTimestamp promises and more than a retention period needs (retention
# reads only the exact publish time).

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport UINT32_MAX, uintptr_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy
from posix.mman cimport madvise


cdef extern from "<sys/mman.h>" nogil:
    int mincore(void* addr, size_t length, unsigned char* vec)


cdef extern from *:
    int __builtin_clzll(unsigned long long x) noexcept nogil


cdef inline int32_t msg_queue(Msg* m) noexcept nogil:
    """The index of the queue of a message that is not in a ready FIFO (24 bits)."""
    return <int32_t>m.link.slot.queue_idx | (<int32_t>m.link.slot.queue_hi << 16)


cdef inline void msg_set_queue(Msg* m, int32_t qi) noexcept nogil:
    m.link.slot.queue_idx = <uint16_t>(qi & 0xFFFF)
    m.link.slot.queue_hi = <uint8_t>(qi >> 16)


# ---- block -------------------------------------------------------------------------------------

cdef inline char* msg_body(Msg* m) noexcept nogil:
    return (<char*>m) + sizeof(Msg)


cdef inline int64_t msg_extra_bytes(Msg* m) noexcept nogil:
    """Bytes after the body: 0, or the attribute blob's 4-byte length and the blob."""
    cdef uint32_t n
    if not (m.times & MSG_HAS_ATTRIBUTES):
        return 0
    memcpy(&n, msg_body(m) + m.body_len, 4)
    return 4 + <int64_t>n


cdef inline int64_t block_bytes(int64_t payload) noexcept nogil:
    """The block of a message with ``payload`` bytes after its header (8-byte rounded)."""
    return (<int64_t>sizeof(Msg) + payload + 7) & ~(<int64_t>7)


cdef inline int64_t msg_block_bytes(Msg* m) noexcept nogil:
    return block_bytes(m.body_len + msg_extra_bytes(m))


cdef inline int64_t msg_accounted(Msg* m) noexcept nogil:
    """What the memory limit counts for m (see MESSAGE_OVERHEAD)."""
    return C_MESSAGE_OVERHEAD + m.body_len + msg_extra_bytes(m)


cdef void populate_if_fresh(char* p, int64_t n) noexcept nogil:
    """Fault in the pages of a big new block with one madvise(MADV_POPULATE_WRITE) when
    they were never touched (a queue that grows takes fresh memory from the kernel), rather
    than one page-fault trap per 4 KiB while the body is copied in. A block in reused memory
    (its first whole page resident, mincore) is left alone: populating present pages costs
    as much as copying them. bench/bigmsg.py: see bench/RESULTS.md, "Big messages"."""
    cdef uintptr_t start = (<uintptr_t>p + PAGE_BYTES - 1) & ~(<uintptr_t>PAGE_BYTES - 1)
    cdef uintptr_t end = (<uintptr_t>p + <uintptr_t>n) & ~(<uintptr_t>PAGE_BYTES - 1)
    cdef unsigned char resident = 0
    if end <= start:
        return
    if mincore(<void*>start, PAGE_BYTES, &resident) == 0 and not (resident & 1):
        madvise(<void*>start, end - start, WQ_MADV_POPULATE_WRITE)


cdef inline Msg* msg_alloc(SlabAllocator* a, int64_t payload) noexcept nogil:
    cdef int64_t block = block_bytes(payload)
    cdef Msg* m
    if block <= SLAB_MAX_BLOCK:
        return <Msg*>slab_alloc(a, <uint32_t>block)
    m = <Msg*>malloc(sizeof(Msg) + payload)
    if m != NULL and payload >= POPULATE_MIN_BYTES:
        populate_if_fresh(<char*>m, <int64_t>sizeof(Msg) + payload)
    return m


cdef inline void msg_release(SlabAllocator* a, Msg* m) noexcept nogil:
    if msg_block_bytes(m) <= SLAB_MAX_BLOCK:
        slab_free(a, m)
    else:
        free(m)


cdef inline Msg* msg_new(SlabAllocator* a, int64_t msg_id, const uint8_t* src, int64_t n,
                         int64_t esc_len, int64_t sent_ms, int64_t extra) noexcept:
    """A new message holding the ``n`` bytes at ``src`` escaped, published at ``sent_ms``, with
    ``extra`` bytes after the body for msg_set_attributes; NULL when out of memory."""
    cdef Msg* m = msg_alloc(a, esc_len + extra)
    if m == NULL:
        return NULL
    m.id = msg_id
    m.link.next = NULL
    m.body_len = <uint32_t>esc_len
    m.receives = 0
    m.times = time_word(sent_ms)
    if esc_len == n:
        memcpy(msg_body(m), src, n)
    else:
        json_escape_into(msg_body(m), src, n)
    return m


cdef void msg_set_attributes(Msg* m, object attributes) noexcept:
    """Store a checked blob (bytes) after the body; msg_new made room (attributes_cost)."""
    cdef uint32_t n = <uint32_t>PyBytes_GET_SIZE(attributes)
    m.times |= MSG_HAS_ATTRIBUTES
    memcpy(msg_body(m) + m.body_len, &n, 4)
    memcpy(msg_body(m) + m.body_len + 4, PyBytes_AS_STRING(attributes), n)


cdef object msg_attributes(Msg* m):
    """The attribute blob as bytes, or None."""
    cdef uint32_t n
    if not (m.times & MSG_HAS_ATTRIBUTES):
        return None
    memcpy(&n, msg_body(m) + m.body_len, 4)
    return PyBytes_FromStringAndSize(msg_body(m) + m.body_len + 4, n)


cdef inline uint32_t receives_after(uint32_t r) noexcept nogil:
    return r + 1 if r < UINT32_MAX else r


# ---- times -------------------------------------------------------------------------------------

cdef inline uint64_t time_word(int64_t sent_ms) noexcept nogil:
    return (<uint64_t>sent_ms) << TIME_SHIFT


cdef inline int64_t msg_sent_ms(Msg* m) noexcept nogil:
    return (<int64_t>m.times) >> TIME_SHIFT  # arithmetic shift: the sign comes back


cdef inline uint64_t first_receive_code(int64_t delta) noexcept nogil:
    """The 20-bit code of a first receive ``delta`` ms after the publish (1..2**20-1)."""
    cdef int e
    if delta < FIRST_RECEIVE_EXACT:
        return 1 + <uint64_t>(delta if delta > 0 else 0)
    e = 64 - __builtin_clzll(<uint64_t>delta) - 16   # keep the 16 leading bits
    if e > 29:
        return FIRST_RECEIVE_MASK  # saturates (beyond any distance this engine's times allow)
    return 1 + <uint64_t>e * FIRST_RECEIVE_STEP + (<uint64_t>delta >> e)


cdef inline int64_t first_receive_delta(uint64_t code) noexcept nogil:
    """The inverse of first_receive_code (code >= 1), truncated as stored."""
    cdef uint64_t v = code - 1
    cdef uint64_t e
    if v < FIRST_RECEIVE_EXACT:
        return <int64_t>v
    e = (v >> 15) - 1
    return <int64_t>((v - e * FIRST_RECEIVE_STEP) << e)


cdef inline uint64_t first_receive_after(Msg* m, int64_t now) noexcept nogil:
    """The first-receive code m has once received at ``now``."""
    cdef uint64_t code = m.times & FIRST_RECEIVE_MASK
    return code if code else first_receive_code(now - msg_sent_ms(m))


cdef inline void msg_note_receive(Msg* m, int64_t now) noexcept nogil:
    """Record the first receive (the first call only)."""
    if (m.times & FIRST_RECEIVE_MASK) == 0:
        m.times |= first_receive_code(now - msg_sent_ms(m))


cdef inline object msg_first_receive_ms(Msg* m):
    """The first receive time (ms, as stored), or None if never received."""
    cdef uint64_t code = m.times & FIRST_RECEIVE_MASK
    if code == 0:
        return None
    return msg_sent_ms(m) + first_receive_delta(code)
