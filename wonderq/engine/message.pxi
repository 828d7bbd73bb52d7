# A message's block: the Msg header (_core.pxd), then its JSON-escaped body. Small blocks
# come from the slab allocator, larger ones from malloc; the size class follows from
# body_len, so nothing records which.

from libc.stdint cimport UINT32_MAX
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy


cdef inline int64_t msg_block_bytes(int64_t body_len) noexcept nogil:
    return (<int64_t>sizeof(Msg) + body_len + 7) & ~(<int64_t>7)


cdef inline int32_t msg_queue(Msg* m) noexcept nogil:
    """The index of the queue of a message that is not in a ready FIFO (24 bits)."""
    return <int32_t>m.link.slot.queue_idx | (<int32_t>m.link.slot.queue_hi << 16)


cdef inline void msg_set_queue(Msg* m, int32_t qi) noexcept nogil:
    m.link.slot.queue_idx = <uint16_t>(qi & 0xFFFF)
    m.link.slot.queue_hi = <uint8_t>(qi >> 16)


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
