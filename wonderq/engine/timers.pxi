# The timer heap: one binary min-heap by (deadline_ms, msg_id) for leases and delays.
#
# Each entry's message stores its slot (msg.link.slot.heap_index), kept right on every move, so
# any entry can be removed or re-keyed in O(log n). Children of i: 2i+1, 2i+2; parent (i-1)/2.
# Ties break on the id, so equal deadlines stay in publish order. Binary, as the design contract
# (DESIGN.md) says: a 4-ary heap ran expire 1.3-1.8x faster on the 1M-lease burst of
# bench/bench_core.py, but the server expires in bounded slices either way.

from libc.stdlib cimport realloc


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
        parent = (i - 1) >> 1
        if not entry_before(&e, &h.entries[parent]):
            break
        heap_place(h, i, &h.entries[parent])
        i = parent
    heap_place(h, i, &e)


cdef void heap_sift_down(TimerHeap* h, int64_t i) noexcept nogil:
    cdef TimerEntry e = h.entries[i]
    cdef int64_t n = h.len
    cdef int64_t child
    while True:
        child = 2 * i + 1
        if child >= n:
            break
        if child + 1 < n and entry_before(&h.entries[child + 1], &h.entries[child]):
            child += 1
        if not entry_before(&h.entries[child], &e):
            break
        heap_place(h, i, &h.entries[child])
        i = child
    heap_place(h, i, &e)


cdef inline void heap_fix(TimerHeap* h, int64_t i) noexcept nogil:
    """Restore heap order after the entry at i changed its key."""
    if i > 0 and entry_before(&h.entries[i], &h.entries[(i - 1) >> 1]):
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
    i = (h.len - 2) >> 1
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
