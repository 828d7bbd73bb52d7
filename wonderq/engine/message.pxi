# A message's block: the 24-byte Msg header (_core.pxd), its JSON-escaped body, then - only when
# the MSG_HAS_ATTRIBUTES bit of its time word is set - the attribute blob and its 4-byte length.
# The body, blob and length are the block's payload. Small blocks come from the slab allocator,
# where the payload's length follows from the slab's size class less the block's 0-7 bytes of
# padding (kept in the time word); a larger block is malloc'ed with its payload length in the 8
# bytes before the header (MSG_BIG), and before those a count of the BodyViews of its body still
# held (bodyview.pxi: an answer's body sent from the block itself). So 1,000,000 x 200 B
# messages take 224-byte blocks
# (bench/rss_breakdown.py: see bench/RESULTS.md, "Memory"): the length, the receive count and
# the first receive no longer take 8 of every message's bytes.
#
# Times. Msg.times packs the publish time (``now`` of the publish, monotonic ms, 43 signed bits:
# exact, +-139 years) with the flags and the padding. The receive count and the first receive
# are kept only for a message that was received: in its Receipt in Broker.receipts (an id
# table, leases.pxi), which a publish never touches. The first receive is kept as its distance
# from the publish in 20 bits: exact below 65.5 s, then truncated to 16 significant bits (an
# error under 31 ppm of the distance: < 0.12 s after an hour, < 3 s after a day), which is what
# SQS's ApproximateFirstReceiveTimestamp promises and more than a retention period needs
# (retention reads only the exact publish time).

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


cdef inline int64_t msg_payload(Msg* m) noexcept nogil:
    """Bytes after the header: the body, and the blob and its length if it has one."""
    if m.times & MSG_BIG:
        return (<int64_t*>m)[-1]
    return (<int64_t>(<Slab*>(<uintptr_t>m & ~(<uintptr_t>SLAB_BYTES - 1))).block_bytes
            - <int64_t>sizeof(Msg) - <int64_t>(m.times & MSG_PAD_MASK))


cdef inline int64_t extra_of(Msg* m, int64_t payload) noexcept nogil:
    """Bytes after the body of m, whose payload is ``payload``: 0, or the blob and its length."""
    cdef uint32_t n
    if not (m.times & MSG_HAS_ATTRIBUTES):
        return 0
    memcpy(&n, msg_body(m) + payload - 4, 4)
    return 4 + <int64_t>n


cdef inline int64_t msg_body_len(Msg* m) noexcept nogil:
    """Bytes of the escaped body (no quotes)."""
    cdef int64_t payload = msg_payload(m)
    return payload - extra_of(m, payload)


cdef inline int64_t block_bytes(int64_t payload) noexcept nogil:
    """The block of a message with ``payload`` bytes after its header (8-byte rounded)."""
    return (<int64_t>sizeof(Msg) + payload + 7) & ~(<int64_t>7)


cdef inline int64_t msg_accounted(Msg* m) noexcept nogil:
    """What the memory limit counts for m (see MESSAGE_OVERHEAD)."""
    return C_MESSAGE_OVERHEAD + msg_payload(m)


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


cdef inline int64_t* big_views(Msg* m) noexcept nogil:
    """The view word of a big block: BodyViews of its body held, | BLOCK_ORPHAN once the
    message is gone (the last view then frees the block). The malloc'ed block starts here."""
    return (<int64_t*>m) - 2


cdef inline Msg* big_alloc(int64_t payload) noexcept nogil:
    """A malloc'ed block for ``payload`` bytes after the header: no views, its length in the
    8 bytes before the header and MSG_BIG in m.times (the caller ORs the rest in); NULL when
    out of memory. Freed by msg_release / msg_free_big."""
    cdef char* p = <char*>malloc(BIG_HEAD_BYTES + sizeof(Msg) + payload)
    cdef Msg* m
    if p == NULL:
        return NULL
    if payload >= POPULATE_MIN_BYTES:
        populate_if_fresh(p, BIG_HEAD_BYTES + <int64_t>sizeof(Msg) + payload)
    m = <Msg*>(p + BIG_HEAD_BYTES)
    big_views(m)[0] = 0
    (<int64_t*>m)[-1] = payload
    m.times = MSG_BIG
    return m


cdef inline void big_free(Msg* m) noexcept nogil:
    """Free a big block, or, while views of its body are held, leave that to the last one."""
    cdef int64_t* views = big_views(m)
    if views[0]:
        views[0] |= BLOCK_ORPHAN
    else:
        free(views)


cdef inline void big_unview(Msg* m) noexcept nogil:
    """A view of a big block's body is gone: free the block if it was the last one of a
    message already freed (big_free)."""
    cdef int64_t* views = big_views(m)
    views[0] -= 1
    if views[0] == BLOCK_ORPHAN:
        free(views)


cdef inline Msg* msg_alloc(SlabAllocator* a, int64_t payload) noexcept nogil:
    """A block for ``payload`` bytes after the header, its flags and padding set in m.times
    (the caller ORs the rest in); NULL when out of memory."""
    cdef int64_t block = block_bytes(payload)
    cdef Msg* m
    if block <= SLAB_MAX_BLOCK:
        m = <Msg*>slab_alloc(a, <uint32_t>block)
        if m != NULL:
            m.times = <uint64_t>(block - <int64_t>sizeof(Msg) - payload)
        return m
    return big_alloc(payload)


cdef inline void msg_release(SlabAllocator* a, Msg* m) noexcept nogil:
    if m.times & MSG_BIG:
        big_free(m)
    else:
        slab_free(a, m)


cdef inline void msg_free_big(Msg* m) noexcept nogil:
    """Free m if it is malloc'ed (the broker's end: slab blocks go with their arenas)."""
    if m.times & MSG_BIG:
        big_free(m)


cdef inline void msg_start(Msg* m, int64_t msg_id, int64_t sent_ms) noexcept nogil:
    """Set the header of a new block from msg_alloc: its id, no link, its publish time."""
    m.id = msg_id
    m.link.next = NULL
    m.times |= time_word(sent_ms)


cdef inline Msg* msg_new(SlabAllocator* a, int64_t msg_id, const uint8_t* src, int64_t n,
                         int64_t esc_len, int64_t sent_ms, int64_t extra) noexcept:
    """A new message holding the ``n`` bytes at ``src`` escaped, published at ``sent_ms``, with
    ``extra`` bytes after the body for msg_set_attributes; NULL when out of memory."""
    cdef Msg* m = msg_alloc(a, esc_len + extra)
    if m == NULL:
        return NULL
    msg_start(m, msg_id, sent_ms)
    if esc_len == n:
        memcpy(msg_body(m), src, n)
    else:
        json_escape_into(msg_body(m), src, n)
    return m


cdef void msg_set_attributes(Msg* m, object attributes) noexcept:
    """Store a checked blob (bytes) and its length at the end of the payload; msg_new made
    room for them (attributes_cost) after the body."""
    cdef uint32_t n = <uint32_t>PyBytes_GET_SIZE(attributes)
    cdef char* end = msg_body(m) + msg_payload(m)
    memcpy(end - 4 - n, PyBytes_AS_STRING(attributes), n)
    memcpy(end - 4, &n, 4)
    m.times |= MSG_HAS_ATTRIBUTES


cdef object msg_attributes(Msg* m):
    """The attribute blob as bytes, or None."""
    cdef uint32_t n
    cdef char* end
    if not (m.times & MSG_HAS_ATTRIBUTES):
        return None
    end = msg_body(m) + msg_payload(m)
    memcpy(&n, end - 4, 4)
    return PyBytes_FromStringAndSize(end - 4 - n, n)


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


cdef inline uint32_t first_receive_after(Msg* m, Receipt r, int64_t now) noexcept nogil:
    """The first-receive code m (with receipt r) has once received at ``now``."""
    return r.first if r.first else <uint32_t>first_receive_code(now - msg_sent_ms(m))


cdef inline object first_receive_ms(Msg* m, Receipt r):
    """The first receive time (ms, as stored), or None if never received."""
    if r.first == 0:
        return None
    return msg_sent_ms(m) + first_receive_delta(r.first)
