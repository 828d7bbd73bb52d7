# A queue's ready set: the messages a receive may take, lowest id first. Fresh messages arrive
# in id order and wait in a FIFO (O(1) append and pop); messages available again (an expired or
# released lease, a delay that ended, a dead-letter move, a restore) have older ids and wait in
# the return heap, a binary min-heap by id. ready_pop takes the lower of the two heads.

from libc.stdlib cimport realloc


# ---- return heap: a queue's min-heap by id of messages available again ------------------------

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


cdef inline Msg* ready_head(Queue* q) noexcept nogil:
    """The available message with the lowest id, left in place (the queue has one)."""
    cdef Msg* m = q.fifo_head
    if m != NULL and (q.rheap_len == 0 or m.id < q.rheap[0].id):
        return m
    return q.rheap[0]


cdef inline Msg* ready_pop(Queue* q) noexcept nogil:
    """The available message with the lowest id (the queue has one)."""
    cdef Msg* m = q.fifo_head
    if m != NULL and (q.rheap_len == 0 or m.id < q.rheap[0].id):
        q.fifo_head = m.link.next
        return m
    return rheap_pop(q)


cdef int ready_reserve(Queue* q, int64_t extra) except -1:
    """Room for ``extra`` more messages in q's return heap, so ready_add cannot fail."""
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


cdef inline void ready_add(Queue* q, Msg* m) noexcept nogil:
    """Add m to q's ready set (room reserved by the caller). Appending keeps the FIFO sorted
    when m is newer than its tail (always true for fresh publishes); anything older goes to the
    return heap."""
    if q.fifo_head == NULL or m.id > q.fifo_tail.id:
        fifo_append(q, m)
    else:
        rheap_push(q, m)
    q.ready += 1


cdef inline void ready_unpop(Queue* q, Msg** got, int64_t n) noexcept nogil:
    """Give back the ``n`` messages just popped (got[0..n-1], in id order): each is below every
    remaining ready id, so they go to the FIFO's front, newest first, keeping it sorted. The
    caller had not yet subtracted them from q.ready."""
    cdef int64_t i = n
    while i > 0:
        i -= 1
        got[i].link.next = q.fifo_head
        if q.fifo_head == NULL:
            q.fifo_tail = got[i]
        q.fifo_head = got[i]
