# Broker.check_invariants: every structural invariant of the engine, checked the slow and
# obvious way (Python sets and dicts) for the tests, which call it after every operation.

from libc.stdint cimport uintptr_t


cdef int broker_check_invariants(Broker self) except -1:
    """Broker.check_invariants: raise AssertionError if any internal invariant is broken."""
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
    check_names(&self.names, self.queue_index)
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
            memory += msg_accounted(m)
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
            memory += msg_accounted(m)
        if q.ready != n_fifo + q.rheap_len:
            fail(f"queue {name}: ready count {q.ready} != {n_fifo + q.rheap_len}")
    for qi in range(n_slots):
        if self.queues[qi].active and self.queues[qi].dlq_refs != refs.get(qi, 0):
            fail(f"queue slot {qi}: dead-letter reference count is wrong")
    check_retention(self, n_slots)
    if self.timers.len > self.timers.cap:
        fail("timer heap overflow")
    for i in range(self.timers.len):
        e = &self.timers.entries[i]
        m = e.msg
        if i > 0:
            parent = (i - 1) >> 1
            if entry_before(e, &self.timers.entries[parent]):
                fail(f"timer heap out of order at {i}")
        if m.link.slot.heap_index != i:
            fail(f"timer entry {i}: stored slot {m.link.slot.heap_index}")
        if e.msg_id != m.id:
            fail(f"timer entry {i}: id copy is stale")
        qi = msg_queue(m)
        if qi >= n_slots or not self.queues[qi].active:
            fail(f"timer entry {i}: message of a missing queue")
        if e.cid >= 0:
            if m.link.slot.state != MSG_LEASED:
                fail(f"timer entry {i}: lease of a message not marked leased")
            leased[qi] = leased.get(qi, 0) + 1
            slot = ht_find(&self.leases, m.id)
            if slot < 0 or self.leases.slots[slot].v.msg != m:
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
        memory += msg_accounted(m)
    for qi in range(n_slots):
        q = &self.queues[qi]
        if q.active and (q.leased != leased.get(qi, 0) or q.delayed != delayed.get(qi, 0)):
            fail(f"queue slot {qi}: leased/delayed counts are wrong")
    for i in range(<int64_t>(self.leases.mask + 1)):
        if self.leases.slots[i].id != 0:
            table_count += 1
            if ht_find(&self.leases, self.leases.slots[i].id) != i:
                fail(f"lease table slot {i} unreachable by probing")
            if self.leases.slots[i].v.msg.link.slot.state != MSG_LEASED:
                fail(f"lease table holds message {self.leases.slots[i].id}, not leased")
    if table_count != self.leases.count or table_count != sum(leased.values()):
        fail("lease table count is wrong")
    if table_count * 5 > <int64_t>(self.leases.mask + 1) * 3:
        fail("lease table above load 0.6")
    check_receipts(self, where)
    count = len(ids)
    if count != self.message_count_:
        fail(f"message_count {self.message_count_} != {count}")
    if memory != self.memory_bytes_:
        fail(f"memory_bytes {self.memory_bytes_} != {memory}")
    if ids and max(ids) >= self.next_id_:
        fail("an id is not below next_id")
    check_slabs(&self.slabs, ptrs)
    if self.all_ids.slots != NULL:
        if self.all_ids.count != count:
            fail("the index of all ids misses messages")
        for msg_id, (qi, p) in where.items():
            slot = ht_find(&self.all_ids, msg_id)
            if slot < 0 or <uintptr_t>self.all_ids.slots[slot].v.msg != p:
                fail(f"the index of all ids is wrong for {msg_id}")
    for i in range(self.dump_len):
        if i > 0 and self.dump[i - 1].id >= self.dump[i].id:
            fail("dump snapshot out of order")
        if self.dump[i].msg != NULL:
            found = where.get(self.dump[i].id)
            if found is None or found != (self.dump[i].queue_idx,
                                          <uintptr_t>self.dump[i].msg):
                fail(f"dump snapshot entry {self.dump[i].id} is stale")
    return 0

cdef int check_receipts(Broker self, dict where) except -1:
    """The receipt table holds exactly the messages marked received, each reachable."""
    cdef LeaseTable* t = &self.receipts
    cdef int64_t i
    cdef int64_t n = 0
    cdef Msg* m
    for i in range(<int64_t>(t.mask + 1)):
        if t.slots[i].id != 0:
            n += 1
            if ht_find(t, t.slots[i].id) != i:
                fail(f"receipt table slot {i} unreachable by probing")
            if t.slots[i].id not in where:
                fail(f"receipt of message {t.slots[i].id}, which is not held")
    for msg_id, (qi, p) in where.items():
        m = <Msg*><uintptr_t>p
        if (m.times & MSG_RECEIVED) != 0 and ht_find(t, msg_id) < 0:
            fail(f"message {msg_id} marked received has no receipt")
        if (m.times & MSG_RECEIVED) == 0 and ht_find(t, msg_id) >= 0:
            fail(f"message {msg_id} has a receipt but is not marked received")
    if n != t.count:
        fail("receipt table count is wrong")
    if n * 5 > <int64_t>(t.mask + 1) * 3:
        fail("receipt table above load 0.6")
    return 0


cdef int check_slabs(SlabAllocator* a, list ptrs) except -1:
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
        if m.times & MSG_BIG:
            if block_bytes(msg_payload(m)) <= SLAB_MAX_BLOCK or m.times & MSG_PAD_MASK:
                fail(f"message {m.id} malloc'ed, small enough for a slab")
            continue
        base = p & ~(<uintptr_t>SLAB_BYTES - 1)
        s = <Slab*>base
        if block_bytes(msg_payload(m)) != s.block_bytes:
            fail(f"message {m.id} in a slab of another size class")
        if (p - base - SLAB_HEADER) % s.block_bytes or p + s.block_bytes > base + s.bump:
            fail(f"message {m.id} is not on a handed-out block boundary")
        live[base] = live.get(base, 0) + 1
    for base, n in live.items():
        if (<Slab*><uintptr_t>base).live != n:
            fail(f"slab {base:#x} counts {(<Slab*><uintptr_t>base).live} blocks, holds {n}")
    for cls in range(SLAB_MAX_BLOCK // 8 + 1):
        prev = NULL
        s = a.classes[cls]
        while s != NULL:
            if s.prev != prev or not s.has_room or s.block_bytes != <uint32_t>(cls * 8):
                fail(f"slab list of class {cls} is broken")
            if s.free_list == NULL and s.bump + s.block_bytes > SLAB_BYTES:
                fail(f"full slab listed in class {cls}")
            if s.live == 0:
                empty_listed += 1
            prev = s
            s = s.next
    if len(live) + empty_listed != a.slabs_in_use:
        fail(f"slabs_in_use {a.slabs_in_use} != {len(live) + empty_listed}")
    return 0


cdef int check_retention(Broker self, int64_t n_slots) except -1:
    """The retention heap holds exactly the queues with retention and ready messages, each at
    its stored slot, keyed by its lowest-id ready message, in heap order."""
    cdef RetentionHeap* h = &self.retention
    cdef RetentionEntry* e
    cdef Queue* q
    cdef Msg* head
    cdef int64_t i
    cdef int32_t qi
    if h.len > h.cap:
        fail("retention heap overflow")
    seen = set()
    for i in range(h.len):
        e = &h.entries[i]
        if i > 0 and ret_before(e, &h.entries[(i - 1) >> 1]):
            fail(f"retention heap out of order at {i}")
        qi = e.queue_idx
        if qi < 0 or qi >= n_slots or not self.queues[qi].active:
            fail(f"retention entry {i}: not an active queue")
        q = &self.queues[qi]
        if q.ret_index != i or qi in seen:
            fail(f"retention entry {i}: queue slot {qi} stores slot {q.ret_index}")
        seen.add(qi)
        if q.retention_ms <= 0 or q.ready <= 0:
            fail(f"retention entry {i}: queue slot {qi} has no retention or nothing ready")
        head = ready_head(q)
        if e.msg_id != head.id or e.deadline_ms != msg_sent_ms(head) + q.retention_ms:
            fail(f"retention entry {i}: stale key for queue slot {qi}")
    for qi in range(n_slots):
        q = &self.queues[qi]
        if q.active and qi not in seen and (q.ret_index != -1 or (
                q.retention_ms > 0 and q.ready > 0)):
            fail(f"queue slot {qi}: missing from the retention heap")
    return 0


cdef int check_names(NameTable* t, dict index) except -1:
    """The name table (names.pxi) holds exactly the registry's names: each once, at its hash's
    probe run with no empty slot before it, with the right index, length and first bytes."""
    cdef const char* data
    cdef Py_ssize_t n
    cdef NameSlot* s
    if t.used != <uint64_t>len(index):
        fail(f"the name table holds {t.used} names, the registry {len(index)}")
    if t.slots != NULL and t.used * 2 > t.mask + 1:
        fail("the name table is more than half full")
    for name, qi in index.items():
        if not name_bytes(name, &data, &n):
            fail(f"queue {name!r}: not an ASCII str")
        s = names_slot_of(t, name, qi)
        if s == NULL:
            fail(f"queue {name!r}: not in the name table")
        if not slot_holds(s, <uint64_t>hash(name), data, n):
            fail(f"queue {name!r}: its name slot is wrong")
    return 0
