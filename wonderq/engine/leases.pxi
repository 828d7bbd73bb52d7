# The lease table: id -> leased Msg, open addressing (linear probing, backward-shift deletion,
# Fibonacci hashing, load <= 0.6). Also the index of all ids while restoring.

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
