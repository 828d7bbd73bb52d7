# Id tables: open addressing (linear probing, backward-shift deletion, Fibonacci hashing,
# load <= 0.6). The lease table (id -> leased Msg), the receipt table (id -> Receipt of every
# message received at least once; its functions are at the end) and, while restoring, the
# index of all ids (id -> Msg).

from libc.stdlib cimport calloc, free


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


cdef inline LeaseSlot* ht_add(LeaseTable* t, int64_t msg_id) noexcept nogil:
    """The slot of a new, absent id, for the caller to fill; capacity reserved by the caller."""
    cdef uint64_t i = ht_hash(t, msg_id)
    while t.slots[i].id != 0:
        i = (i + 1) & t.mask
    t.slots[i].id = msg_id
    t.count += 1
    return &t.slots[i]


cdef inline void ht_insert(LeaseTable* t, int64_t msg_id, Msg* m) noexcept nogil:
    """Insert an absent id -> m; capacity reserved by the caller."""
    ht_add(t, msg_id).v.msg = m


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
    t.slots[i].v.msg = NULL
    t.count -= 1


cdef int ht_resize(LeaseTable* t, uint64_t cap) except -1:
    cdef LeaseTable fresh
    cdef uint64_t i
    ht_init(&fresh, cap)
    for i in range(t.mask + 1):
        if t.slots[i].id != 0:
            ht_add(&fresh, t.slots[i].id).v = t.slots[i].v
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


# ---- receipts: the receive count and first receive of the messages received -------------------

cdef inline Receipt msg_receipt(LeaseTable* t, Msg* m) noexcept nogil:
    """m's receipt in the receipt table t; zeros if m was never received."""
    cdef Receipt none
    if m.times & MSG_RECEIVED:
        return t.slots[ht_find(t, m.id)].v.receipt
    none.receives = 0
    none.first = 0
    return none


cdef inline Receipt msg_count_receive(LeaseTable* t, Msg* m, int64_t now) noexcept nogil:
    """Count a receive of m at ``now`` (the first one also as its first receive), room
    reserved in t; the receipt after it."""
    cdef LeaseSlot* s
    if m.times & MSG_RECEIVED:
        s = &t.slots[ht_find(t, m.id)]
        s.v.receipt.receives = receives_after(s.v.receipt.receives)
        if s.v.receipt.first == 0:  # restored with a count, but no first receive
            s.v.receipt.first = <uint32_t>first_receive_code(now - msg_sent_ms(m))
    else:
        s = ht_add(t, m.id)
        s.v.receipt.receives = 1
        s.v.receipt.first = <uint32_t>first_receive_code(now - msg_sent_ms(m))
        m.times |= MSG_RECEIVED
    return s.v.receipt


cdef inline void msg_set_receipt(LeaseTable* t, Msg* m, Receipt r) noexcept nogil:
    """Give m, never received, the receipt r unless it is zeros; room reserved in t."""
    if r.receives or r.first:
        ht_add(t, m.id).v.receipt = r
        m.times |= MSG_RECEIVED


cdef inline void msg_reset_receives(LeaseTable* t, Msg* m) noexcept nogil:
    """Set m's receive count to 0 (dead-lettered); its first receive stays."""
    if m.times & MSG_RECEIVED:
        t.slots[ht_find(t, m.id)].v.receipt.receives = 0


cdef inline void msg_drop_receipt(LeaseTable* t, Msg* m) noexcept nogil:
    """Forget m's receipt (m is freed)."""
    if m.times & MSG_RECEIVED:
        ht_remove_at(t, ht_find(t, m.id))
        m.times &= ~(<uint64_t>MSG_RECEIVED)
