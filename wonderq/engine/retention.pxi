# Retention: a queue with ``retention_ms`` drops a message once ``now >= publish time +
# retention_ms`` (counted in its ``expired_retention``) instead of delivering it.
#
# Where it is checked: a message about to become available (lease end, release, delay end,
# dead-letter move) is dropped then if its time has passed; receive and peek drop the expired
# messages they meet; and expire() drops expired queue heads. For the last one the broker keeps
# the retention heap: one entry per queue that has retention and ready messages, keyed by the
# (deadline, id) of its lowest-id ready message, so next_deadline() covers retention and
# expire() drops in (deadline, id) order, one budget unit per message, merged with the timer
# heap. The heads are exact whenever publish times grow with ids (one server clock); a message
# published earlier than a lower id (a restore, a fake clock) is dropped when it reaches the
# head or a receive meets it. Costs: O(log q) per change of a retention queue's head (q =
# queues with retention), nothing for queues without retention.

from libc.stdlib cimport realloc


cdef inline bint retention_passed(Queue* q, Msg* m, int64_t now) noexcept nogil:
    return q.retention_ms > 0 and now >= msg_sent_ms(m) + q.retention_ms


cdef inline bint ret_before(const RetentionEntry* a, const RetentionEntry* b) noexcept nogil:
    return a.deadline_ms < b.deadline_ms or (
        a.deadline_ms == b.deadline_ms and a.msg_id < b.msg_id)


cdef inline void ret_place(RetentionHeap* h, Queue* queues, int64_t i,
                           RetentionEntry* e) noexcept nogil:
    h.entries[i] = e[0]
    queues[e.queue_idx].ret_index = <int32_t>i


cdef inline bint ret_before_timer(const RetentionEntry* a, const TimerEntry* b) noexcept nogil:
    return a.deadline_ms < b.deadline_ms or (
        a.deadline_ms == b.deadline_ms and a.msg_id < b.msg_id)


cdef void ret_sift_up(RetentionHeap* h, Queue* queues, int64_t i) noexcept nogil:
    cdef RetentionEntry e = h.entries[i]
    cdef int64_t parent
    while i > 0:
        parent = (i - 1) >> 1
        if not ret_before(&e, &h.entries[parent]):
            break
        ret_place(h, queues, i, &h.entries[parent])
        i = parent
    ret_place(h, queues, i, &e)


cdef void ret_sift_down(RetentionHeap* h, Queue* queues, int64_t i) noexcept nogil:
    cdef RetentionEntry e = h.entries[i]
    cdef int64_t child
    while True:
        child = 2 * i + 1
        if child >= h.len:
            break
        if child + 1 < h.len and ret_before(&h.entries[child + 1], &h.entries[child]):
            child += 1
        if not ret_before(&h.entries[child], &e):
            break
        ret_place(h, queues, i, &h.entries[child])
        i = child
    ret_place(h, queues, i, &e)


cdef int ret_reserve(RetentionHeap* h, int64_t cap) except -1:
    """Room for ``cap`` entries (one per queue slot), so ret_update cannot fail."""
    cdef RetentionEntry* entries
    if cap <= h.cap:
        return 0
    entries = <RetentionEntry*>realloc(h.entries, cap * sizeof(RetentionEntry))
    if entries == NULL:
        raise MemoryError()
    h.entries = entries
    h.cap = cap
    return 0


cdef void ret_update(RetentionHeap* h, Queue* queues, int32_t qi) noexcept nogil:
    """Put queue qi's entry right after its ready set or its retention changed: keyed by its
    lowest-id ready message, or removed (no retention, or nothing ready)."""
    cdef Queue* q = &queues[qi]
    cdef RetentionEntry e
    cdef Msg* head
    cdef int64_t i = q.ret_index
    if q.retention_ms > 0 and q.ready > 0:
        head = ready_head(q)
        e.deadline_ms = msg_sent_ms(head) + q.retention_ms
        e.msg_id = head.id
        e.queue_idx = qi
        if i < 0:
            i = h.len
            h.len += 1
            h.entries[i] = e
            ret_sift_up(h, queues, i)
        else:
            h.entries[i] = e
            if i > 0 and ret_before(&e, &h.entries[(i - 1) >> 1]):
                ret_sift_up(h, queues, i)
            else:
                ret_sift_down(h, queues, i)
    elif i >= 0:
        q.ret_index = -1
        h.len -= 1
        if i != h.len:
            ret_place(h, queues, i, &h.entries[h.len])
            if i > 0 and ret_before(&h.entries[i], &h.entries[(i - 1) >> 1]):
                ret_sift_up(h, queues, i)
            else:
                ret_sift_down(h, queues, i)
