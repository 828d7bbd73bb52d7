# The Broker: all queues of one server, one id counter, one timer heap, one lease table. It
# ties the structures of the other include files together and is the Python-facing API
# (documented in _core.pyi).

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.object cimport PyObject
from libc.stdint cimport UINT32_MAX
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memset

cdef extern from "Python.h":
    bint PyBytes_CheckExact(object o)
    object PySequence_Fast(object o, const char* message)
    Py_ssize_t PySequence_Fast_GET_SIZE(object o)
    PyObject** PySequence_Fast_ITEMS(object o)


cdef class Broker:
    """All queues of one server, one id counter, one timer heap."""

    def __cinit__(self):
        self.queues = NULL
        self.queue_cap = 0
        memset(&self.names, 0, sizeof(NameTable))
        self.timers.entries = NULL
        self.timers.len = 0
        self.timers.cap = 0
        memset(&self.retention, 0, sizeof(RetentionHeap))
        self.leases.slots = NULL
        self.leases.mask = 0
        self.leases.count = 0
        self.scratch = NULL
        self.scratch_len = NULL
        self.scratch_src = NULL
        self.scratch_raw = NULL
        memset(&self.slabs, 0, sizeof(SlabAllocator))
        memset(&self.all_ids, 0, sizeof(LeaseTable))
        memset(&self.receipts, 0, sizeof(LeaseTable))
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
        self.queue_meta = {}
        if self.leases.slots == NULL:
            ht_init(&self.leases, MIN_TABLE_CAP)
        if self.receipts.slots == NULL:
            ht_init(&self.receipts, MIN_TABLE_CAP)
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
                msg_free_big(m)
                m = nxt
            for i in range(self.queues[qi].rheap_len):
                msg_free_big(self.queues[qi].rheap[i])
            free(self.queues[qi].rheap)
        for i in range(self.timers.len):
            msg_free_big(self.timers.entries[i].msg)
        slab_destroy(&self.slabs)
        free(self.all_ids.slots)
        free(self.receipts.slots)
        free(self.dump)
        names_free(&self.names)
        free(self.timers.entries)
        free(self.retention.entries)
        free(self.leases.slots)
        free(self.queues)
        free(self.scratch)
        free(self.scratch_len)
        free(self.scratch_src)
        free(self.scratch_raw)

    # ---- internals ------------------------------------------------------------------------

    cdef int32_t lookup(self, object name) except -1:
        # Callers often pass the same str object each time (a constant): an identity hit skips
        # the name table's lookup (~30 ns of a ~350 ns publish in bench/bench_core.py).
        cdef const char* data
        cdef Py_ssize_t n
        cdef int32_t qi
        if name is self.last_name:
            return self.last_idx
        if name_bytes(name, &data, &n):
            # One slot per name (names.pxi), not the dict's four places in memory.
            qi = names_find(&self.names, <uint64_t>hash(name), data, n,
                            self.queue_names_by_idx)
            if qi < 0:
                raise QueueNotFound(f"queue {name!r} does not exist")
            self.last_name = name
            self.last_idx = qi
            return qi
        idx = self.queue_index.get(name) if isinstance(name, str) else None
        if idx is None:
            raise QueueNotFound(f"queue {name!r} does not exist")
        self.last_name = name
        self.last_idx = idx
        return idx

    cdef void end_lease(self, int32_t qi, Msg* m, bint expired, int64_t now) noexcept:
        """m's lease ran out (expired) or was released, and m has left the timer heap and the
        lease table: make it available again, or dead-letter it. The caller reserved room in
        both queues' return heaps."""
        cdef Queue* q = &self.queues[qi]
        q.leased -= 1
        cdef int64_t slot
        if goes_to_dlq(q, msg_receipt(&self.receipts, m).receives):
            q.dead_lettered += 1
            msg_reset_receives(&self.receipts, m)
            if self.dump != NULL:
                slot = self.dump_find(m.id)
                if slot >= 0:
                    self.dump[slot].queue_idx = q.dlq
            self.make_available(q.dlq, m, now)
        else:
            if expired:
                q.expired += 1
            self.make_available(qi, m, now)

    cdef void make_available(self, int32_t qi, Msg* m, int64_t now) noexcept:
        """m (in no container) becomes available in queue qi, or is dropped there if its
        retention has passed. Room in qi's return heap is reserved by the caller."""
        cdef Queue* q = &self.queues[qi]
        if retention_passed(q, m, now):
            q.expired_retention += 1
            self.free_msg(m)
            return
        ready_add(q, m)
        if q.retention_ms:
            ret_update(&self.retention, self.queues, qi)

    cdef void drop_retained(self, int32_t qi, Msg* m) noexcept:
        """m, just popped from qi's ready set, is past its retention: count and free it."""
        self.queues[qi].ready -= 1
        self.queues[qi].expired_retention += 1
        self.free_msg(m)

    cdef void free_msg(self, Msg* m) noexcept:
        cdef int64_t slot
        if self.all_ids.slots != NULL:
            ht_remove_at(&self.all_ids, ht_find(&self.all_ids, m.id))
        if self.dump != NULL:
            slot = self.dump_find(m.id)
            if slot >= 0:
                self.dump[slot].msg = NULL
        self.memory_bytes_ -= msg_accounted(m)
        self.message_count_ -= 1
        msg_drop_receipt(&self.receipts, m)
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
                if msg_queue(e.msg) == qi:
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
        ht_maybe_shrink(&self.receipts)
        q.ready = 0
        q.leased = 0
        q.delayed = 0
        ret_update(&self.retention, self.queues, qi)
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
            d[n].queue_idx = msg_queue(m)
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
        m = self.leases.slots[slot].v.msg
        if msg_queue(m) != qi:
            return 0
        e = &self.timers.entries[m.link.slot.heap_index]
        if e.cid != cid or now >= e.deadline_ms:
            return 0
        slot_out[0] = slot
        return 1

    cdef inline int64_t token_check(self, int32_t qi, int64_t msg_id, int64_t receives,
                                    int64_t now) noexcept:
        """Table slot of msg_id if it is in queue qi, leased (to anyone) by the receive that
        counted ``receives``, with now < deadline; else -1 (the rule of a lease token)."""
        cdef int64_t slot = ht_find(&self.leases, msg_id)
        cdef Msg* m
        if slot < 0:
            return -1
        m = self.leases.slots[slot].v.msg
        if (msg_queue(m) != qi or msg_receipt(&self.receipts, m).receives != receives
                or now >= self.timers.entries[m.link.slot.heap_index].deadline_ms):
            return -1
        return slot

    cdef inline bint delete_one(self, int32_t qi, int64_t cid, int64_t msg_id,
                                int64_t now) noexcept:
        cdef int64_t slot = -1
        if not self.lease_check(qi, cid, msg_id, now, &slot):
            return False
        self.delete_at(qi, slot)
        return True

    cdef inline void delete_at(self, int32_t qi, int64_t slot) noexcept:
        """Delete the leased message of lease table slot ``slot`` (its lease checked)."""
        cdef Msg* m = self.leases.slots[slot].v.msg
        heap_remove(&self.timers, m.link.slot.heap_index)
        ht_remove_at(&self.leases, slot)
        self.queues[qi].leased -= 1
        self.queues[qi].deleted += 1
        self.free_msg(m)

    cdef int change_at(self, int32_t qi, int64_t slot, int64_t timeout,
                       int64_t now) except -1:
        """Set the lease of table slot ``slot`` (checked) to end at now + timeout, or end it
        now (timeout 0: available again or dead-lettered, not counted as expired)."""
        cdef Queue* q = &self.queues[qi]
        cdef Msg* m = self.leases.slots[slot].v.msg
        cdef int64_t hi = m.link.slot.heap_index
        if timeout > 0:
            self.timers.entries[hi].deadline_ms = now + timeout
            heap_fix(&self.timers, hi)
            return 0
        ready_reserve(q, 1)
        if q.dlq >= 0:
            ready_reserve(&self.queues[q.dlq], 1)
            if self.track_dead_letters and goes_to_dlq(
                    q, msg_receipt(&self.receipts, m).receives):
                self.note_dead_letter(q, m)
        heap_remove(&self.timers, hi)
        ht_remove_at(&self.leases, slot)
        self.end_lease(qi, m, False, now)
        self.after_removals()
        return 0

    cdef void after_removals(self) noexcept:
        heap_maybe_shrink(&self.timers)
        ht_maybe_shrink(&self.leases)
        ht_maybe_shrink(&self.receipts)

    cdef dict queue_attributes(self, int32_t qi):
        cdef Queue* q = &self.queues[qi]
        return {
            "visibility_timeout_ms": q.visibility_ms,
            "delay_ms": q.delay_ms,
            "max_receives": q.max_receives if q.max_receives > 0 else None,
            "dead_letter_queue": self.queue_names_by_idx[q.dlq] if q.dlq >= 0 else None,
            "max_message_bytes": q.max_message_bytes,
            "retention_ms": q.retention_ms if q.retention_ms > 0 else None,
            "meta": self.queue_meta.get(qi),
        }

    # ---- queues ---------------------------------------------------------------------------

    cpdef prefetch_name(self, bytes data, Py_ssize_t start):
        """A hint: the queue named data[start:end] (end: the next "/" or "?", or the end) is
        about to be looked up; its slot in the name table starts loading. Changes nothing a
        caller sees; any bytes will do (the protocol passes a request's target as it
        arrives: QueueNames)."""
        cdef const char* p = data
        cdef Py_ssize_t n = len(data)
        cdef Py_ssize_t end
        if start < 0 or start >= n:
            return
        end = start
        while end < n and p[end] != 47 and p[end] != 63:  # "/", "?"
            end += 1
        self.hint_data = data
        self.hint_start = start
        self.hint_len = end - start
        self.hint_hash = <uint64_t>_Py_HashBytes(p + start, end - start)
        names_prefetch(&self.names, self.hint_hash)

    cpdef known_name(self, str path, Py_ssize_t start, Py_ssize_t end):
        """The name of the queue named path[start:end], as this broker keeps it (the same
        str object on every call), or None when no queue is named so. The next lookup of
        that object is its identity: the router hands it on instead of a new str of the
        segment, so a request spread over many queues makes no str and hashes its name
        once (the hint's hash, when it named the same bytes). Reads only; any str and
        bounds will do."""
        cdef const char* data
        cdef Py_ssize_t n = end - start
        cdef uint64_t h
        cdef int32_t qi
        if (start < 0 or n <= 0 or end > PyUnicode_GET_LENGTH(path)
                or PyUnicode_KIND(path) != PyUnicode_1BYTE_KIND):
            return None
        data = <const char*>PyUnicode_DATA(path) + start
        # A str of one byte per character hashes as those bytes: the slot names_insert chose.
        if (self.hint_data is not None and n == self.hint_len and memcmp(
                data, <const char*>self.hint_data + self.hint_start, <size_t>n) == 0):
            h = self.hint_hash
        else:
            h = <uint64_t>_Py_HashBytes(data, n)
        qi = names_find(&self.names, h, data, n, self.queue_names_by_idx)
        if qi < 0:
            return None
        name = self.queue_names_by_idx[qi]
        self.last_name = name
        self.last_idx = qi
        return name

    def put_queue(self, name, attributes=None):
        """Create queue ``name`` or update its attributes; True if it was created."""
        cdef int32_t qi
        cdef int32_t dlq_idx
        cdef Queue* q
        cdef Queue* grown
        queue_check_name(name)
        if type(name) is not str:
            name = str(name)  # an exact str, as the name table keeps (names.pxi)
        existing = self.queue_index.get(name)
        if existing is None:
            new = queue_default_attributes(self.default_visibility_ms, self.max_message_bytes_)
        else:
            new = self.queue_attributes(existing)
        queue_apply_attributes(new, attributes, self.max_message_bytes_)
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
        if new["retention_ms"] is not None:
            # One entry per queue slot at most: ret_update never needs to grow it.
            ret_reserve(&self.retention, len(self.queue_names_by_idx) + 1)
        if existing is None:
            names_reserve(&self.names)  # first, so that names_insert below cannot fail
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
            q.ret_index = -1
            names_insert(&self.names, name, qi)
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
        q.retention_ms = 0 if new["retention_ms"] is None else new["retention_ms"]
        ret_update(&self.retention, self.queues, qi)
        if new["meta"] is None:
            self.queue_meta.pop(qi, None)
        else:
            self.queue_meta[qi] = new["meta"]
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
        self.queue_meta.pop(qi, None)
        del self.queue_index[name]
        names_delete(&self.names, self.queue_names_by_idx[qi], qi)
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

    cpdef int64_t queue_delay_ms(self, queue) except -1:
        """The queue's default publish delay (what a publish with delay_ms=-1 gets)."""
        return self.queues[self.lookup(queue)].delay_ms

    # ---- messages -------------------------------------------------------------------------

    cpdef publish(self, queue, body, int64_t now, delay_ms=-1, attributes=None):
        """Store one message and return its id."""
        cdef int32_t qi = self.lookup(queue)
        cdef Queue* q = &self.queues[qi]
        cdef int64_t delay
        cdef int64_t esc
        cdef int64_t cost
        cdef const uint8_t* src
        cdef int64_t n
        cdef Msg* m = NULL
        cdef BodyBlock block = None
        check_now(now)
        delay = arg_int(delay_ms, -1, C_MAX_DELAY_MS, "invalid_delay", "delay_ms")
        if delay < 0:
            delay = q.delay_ms
        if type(body) is BodyBlock:  # a big body read into its block (bodyblock.pxi)
            block = <BodyBlock>body
            src = block.text()
            n = block.size
        else:
            data = body_bytes(body)
            src = bytes_ptr(data)
            n = PyBytes_GET_SIZE(data)
        esc = text_escaped_len(src, n, q.max_message_bytes)
        cost = C_MESSAGE_OVERHEAD + esc
        if attributes is not None:
            attributes = attributes_bytes(attributes, q.max_message_bytes)
            cost += attributes_cost(attributes)
        if self.next_id_ > <uint64_t>C_MAX_ID:
            raise IdsExhausted("message ids are exhausted")
        if self.max_memory_ and self.memory_bytes_ + cost > self.max_memory_:
            raise MemoryLimitExceeded("the broker's memory limit is reached")
        if delay > 0:
            heap_reserve(&self.timers, 1)
        if block is not None and esc == n and attributes is None:
            m = block.take(<int64_t>self.next_id_, now)  # no copy of the body
        if m == NULL:
            m = msg_new(&self.slabs, <int64_t>self.next_id_, src, n, esc, now,
                        cost - C_MESSAGE_OVERHEAD - esc)
        if m == NULL:
            raise MemoryError()
        if attributes is not None:
            msg_set_attributes(m, attributes)
        if self.all_ids.slots != NULL:
            self.drop_all_ids()  # restoring is over
        self.next_id_ += 1
        self.memory_bytes_ += cost
        self.message_count_ += 1
        q.published += 1
        if delay > 0:
            msg_set_queue(m, qi)
            m.link.slot.state = MSG_DELAYED
            heap_push(&self.timers, now + delay, -1, m)
            q.delayed += 1
        else:
            fifo_append(q, m)  # the newest id: the FIFO stays sorted
            q.ready += 1
            if q.retention_ms and q.ready == 1:
                ret_update(&self.retention, self.queues, qi)  # the queue's first ready message
        return m.id

    def publish_batch(self, queue, bodies, int64_t now, delays=None, attributes=None):
        """All or nothing; returns the first id of range(first, first + len(bodies))."""
        cdef int32_t qi = self.lookup(queue)
        cdef Queue* q = &self.queues[qi]
        cdef int64_t n, i, delay, esc
        cdef int64_t total = 0
        cdef int64_t n_delayed = 0
        cdef PyObject** items
        cdef PyObject** delay_items = NULL
        cdef PyObject** attr_items = NULL
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
        if attributes is not None:
            if isinstance(attributes, (bytes, bytearray, memoryview, str)):
                raise InvalidArgument("attributes must be a sequence of blobs or None",
                                      "invalid_attributes")
            attr_seq = PySequence_Fast(attributes, b"attributes must be a sequence")
            if PySequence_Fast_GET_SIZE(attr_seq) != n:
                raise InvalidArgument("attributes must have one entry per body",
                                      "invalid_attributes")
            attr_seq = [attributes_bytes(a, C_MAX_MESSAGE_BYTES) for a in attr_seq]
            attr_items = PySequence_Fast_ITEMS(attr_seq)
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
            if attr_items != NULL:
                attributes_bytes(<object>attr_items[i], q.max_message_bytes)  # the size
                total += attributes_cost(<object>attr_items[i])
        if delay_items == NULL and q.delay_ms > 0:
            n_delayed = n
        return self.store_batch(qi, n, total, n_delayed, delay_items, now, attr_items)

    cpdef publish_batch_json(self, queue, bytes data, int64_t now, list bodies=None):
        """Publish the batch ``data`` when it is a JSON array of plain strings (no backslash,
        each a valid message for the queue) and return the answer, ``{"ids":[...]}``; else
        store nothing and return None, for the caller to parse the general way and name the
        error. A plain string's text is its body, already in the stored (escaped) form.
        ``bodies``, if given, gets the stored bodies appended (for the durability log)."""
        cdef int32_t qi = self.lookup(queue)
        cdef Queue* q = &self.queues[qi]
        cdef int64_t n, i, raw, first
        cdef int64_t total = 0
        cdef Py_ssize_t bodies_before = 0
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
        if bodies is None:
            return batch_ids_json(
                self.store_batch(qi, n, total, n if q.delay_ms > 0 else 0, NULL, now, NULL), n)
        # Appended before storing, taken back on failure: nothing can fail after the store.
        bodies_before = len(bodies)
        try:
            for i in range(n):
                bodies.append(PyBytes_FromStringAndSize(<const char*>self.scratch_src[i],
                                                        self.scratch_raw[i]))
            first = self.store_batch(qi, n, total, n if q.delay_ms > 0 else 0, NULL, now, NULL)
        except BaseException:
            del bodies[bodies_before:]
            raise
        return batch_ids_json(first, n)

    cdef int64_t store_batch(self, int32_t qi, int64_t n, int64_t total, int64_t n_delayed,
                             PyObject** delay_items, int64_t now,
                             PyObject** attr_items) except -1:
        """Pass 2 of a batch publish: store the ``n`` validated bodies of scratch_src /
        scratch_raw (escaped lengths in scratch_len, ``total`` bytes with overheads) under
        consecutive ids, with the checked blobs of attr_items (NULL: none), all or nothing;
        returns the first id."""
        cdef Queue* q = &self.queues[qi]
        cdef int64_t i, delay
        cdef int64_t first
        cdef int64_t extra
        cdef Msg* m
        if self.next_id_ + <uint64_t>n - 1 > <uint64_t>C_MAX_ID:
            raise IdsExhausted("message ids are exhausted")
        if self.max_memory_ and self.memory_bytes_ + total > self.max_memory_:
            raise MemoryLimitExceeded("the broker's memory limit is reached")
        heap_reserve(&self.timers, n_delayed)
        first = <int64_t>self.next_id_
        for i in range(n):
            extra = 0
            if attr_items != NULL:
                extra = attributes_cost(<object>attr_items[i])
            m = msg_new(&self.slabs, first + i, self.scratch_src[i], self.scratch_raw[i],
                        self.scratch_len[i], now, extra)
            if m == NULL:
                while i > 0:
                    i -= 1
                    msg_release(&self.slabs, self.scratch[i])
                raise MemoryError()
            if attr_items != NULL and <object>attr_items[i] is not None:
                msg_set_attributes(m, <object>attr_items[i])
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
                msg_set_queue(m, qi)
                m.link.slot.state = MSG_DELAYED
                heap_push(&self.timers, now + delay, -1, m)
                q.delayed += 1
            else:
                fifo_append(q, m)
                q.ready += 1
        if q.retention_ms:
            ret_update(&self.retention, self.queues, qi)
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
        cdef int64_t vis, i
        cdef Msg** got = self.scratch
        cdef Py_ssize_t leased_before = 0
        check_now(now)
        vis = arg_int(visibility_ms, -1, C_MAX_VISIBILITY_MS, "invalid_visibility",
                      "visibility_ms")
        if vis < 0:
            vis = q.visibility_ms
        n = self.take_ready(qi, n, now, True)
        if n == 0:
            return EMPTY_RESPONSE
        try:
            out = build_response(got, n, True, &self.receipts)
            if leased is not None:
                leased_before = len(leased)
                for i in range(n):
                    leased.append(got[i].id)
        except MemoryError:
            if leased is not None:
                del leased[leased_before:]
            self.untake(qi, n)
            raise
        self.lease_taken(qi, c, n, now, now + vis)
        if q.ready:
            prefetch_next_body(ready_head(q))
        return out

    def receive_list(self, queue, cid, limit, int64_t now, visibility_ms=-1, list leased=None):
        """receive, answered as a list of (id, raw body, receives, sent_ms, first_receive_ms,
        attributes) (the SQS face)."""
        cdef int32_t qi = self.lookup(queue)
        cdef Queue* q = &self.queues[qi]
        cdef int64_t c = arg_int(cid, 0, C_MAX_ID, "invalid_cid", "cid")
        cdef int64_t n = arg_int(limit, 1, self.max_batch, "invalid_limit", "limit")
        cdef int64_t vis, i
        cdef Msg** got = self.scratch
        cdef Msg* m
        cdef Receipt r
        cdef Py_ssize_t leased_before = 0
        check_now(now)
        vis = arg_int(visibility_ms, -1, C_MAX_VISIBILITY_MS, "invalid_visibility",
                      "visibility_ms")
        if vis < 0:
            vis = q.visibility_ms
        n = self.take_ready(qi, n, now, True)
        out = []
        if n == 0:
            return out
        try:
            for i in range(n):
                m = got[i]
                r = msg_receipt(&self.receipts, m)
                out.append((m.id, json_unescape(msg_body(m), msg_body_len(m)),
                            receives_after(r.receives), msg_sent_ms(m),
                            msg_sent_ms(m) + first_receive_delta(first_receive_after(m, r, now)),
                            msg_attributes(m)))
            if leased is not None:
                leased_before = len(leased)
                for i in range(n):
                    leased.append(got[i].id)
        except MemoryError:
            if leased is not None:
                del leased[leased_before:]
            self.untake(qi, n)
            raise
        self.lease_taken(qi, c, n, now, now + vis)
        return out

    cdef inline int64_t take_ready(self, int32_t qi, int64_t n, int64_t now,
                                   bint lease) except -1:
        """Pop up to ``n`` ready messages of qi into scratch, lowest ids first (with room
        reserved to lease them if ``lease``); messages past the queue's retention met on the
        way are dropped. Returns how many. Follow with lease_taken, or untake to give them
        back."""
        cdef Queue* q = &self.queues[qi]
        cdef Msg** got = self.scratch
        cdef int64_t i
        cdef int64_t k = 0
        cdef Msg* m
        if n > q.ready:
            n = q.ready
        if n == 0:
            return 0
        if lease:
            heap_reserve(&self.timers, n)
            ht_reserve(&self.leases, n)
            ht_reserve(&self.receipts, n)
        if not q.retention_ms:
            for i in range(n):
                got[i] = ready_pop(q)
            return n
        while k < n and q.ready > k:
            m = ready_pop(q)
            if retention_passed(q, m, now):
                self.drop_retained(qi, m)
            else:
                got[k] = m
                k += 1
        if k == 0:
            ret_update(&self.retention, self.queues, qi)
            rheap_maybe_shrink(q)
        return k

    cdef void untake(self, int32_t qi, int64_t n) noexcept:
        """Give back the n messages take_ready popped."""
        ready_unpop(&self.queues[qi], self.scratch, n)
        if self.queues[qi].retention_ms:
            ret_update(&self.retention, self.queues, qi)

    cdef inline void lease_taken(self, int32_t qi, int64_t cid, int64_t n, int64_t now,
                                 int64_t deadline) noexcept:
        """Lease the n messages take_ready popped to cid until deadline, counting a receive."""
        cdef Queue* q = &self.queues[qi]
        cdef Msg** got = self.scratch
        cdef int64_t i
        cdef Msg* m
        rheap_maybe_shrink(q)
        for i in range(n):
            m = got[i]
            msg_count_receive(&self.receipts, m, now)
            msg_set_queue(m, qi)
            m.link.slot.state = MSG_LEASED
            heap_push(&self.timers, deadline, cid, m)
            ht_insert(&self.leases, m.id, m)
        q.ready -= n
        q.leased += n
        q.delivered += n
        if q.retention_ms:
            ret_update(&self.retention, self.queues, qi)

    cpdef object peek(self, queue, limit, int64_t now):
        """The messages a receive would take now, in its JSON format with their current receive
        counts; nothing is leased or counted (messages past retention are dropped)."""
        cdef int32_t qi = self.lookup(queue)
        cdef int64_t n = arg_int(limit, 1, self.max_batch, "invalid_limit", "limit")
        check_now(now)
        n = self.take_ready(qi, n, now, False)
        if n == 0:
            return EMPTY_RESPONSE
        self.untake(qi, n)
        rheap_maybe_shrink(&self.queues[qi])
        return build_response(self.scratch, n, False, &self.receipts)

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

    cpdef ack_json(self, queue, bytes data, int64_t now, list deleted=None):
        """The fast path of a batch ack: when ``data`` is ``{"cid": C, "ids": [...]}`` with a
        valid cid and 1..max_batch valid ids, delete each as delete_batch does and return
        ``b'{"deleted":[...],"failed":[...]}'``; otherwise delete nothing and return None.
        ``deleted``, if given, gets the deleted ids appended (for the durability log)."""
        cdef int32_t qi = self.lookup(queue)
        cdef int64_t cid = -1
        cdef int64_t* ids = self.scratch_len
        cdef int64_t* done = self.scratch_raw
        cdef int64_t n, i, size, n_deleted
        cdef Py_ssize_t before = 0
        cdef Py_ssize_t j
        cdef char* p
        check_now(now)
        n = parse_ack(bytes_ptr(data), PyBytes_GET_SIZE(data), &cid, ids, self.max_batch)
        if n == 0:
            return None
        if deleted is not None:
            # Every id goes in before deleting (this may fail: nothing changed yet); the ones
            # not deleted are taken out after, which allocates nothing.
            before = len(deleted)
            deleted.extend([ids[i] for i in range(n)])
        n_deleted = self.delete_many(qi, cid, ids, n, now, done)
        if deleted is not None:
            j = before
            for i in range(n):
                if done[i]:
                    deleted[j] = deleted[before + i]
                    j += 1
            del deleted[j:]
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
        cdef int64_t c = arg_int(cid, 0, C_MAX_ID, "invalid_cid", "cid")
        cdef int64_t mid = arg_int(msg_id, 1, C_MAX_ID, "invalid_id", "id")
        cdef int64_t timeout = arg_int(timeout_ms, 0, C_MAX_VISIBILITY_MS, "invalid_timeout",
                                       "timeout_ms")
        cdef int64_t slot = -1
        check_now(now)
        if not self.lease_check(qi, c, mid, now, &slot):
            return False
        self.change_at(qi, slot, timeout, now)
        return True

    def delete_token(self, queue, msg_id, receives, int64_t now):
        """Delete by lease token (id, receives): True iff msg_id is in queue, leased by the
        receive that counted ``receives`` and now < deadline."""
        cdef int32_t qi = self.lookup(queue)
        cdef int64_t mid = arg_int(msg_id, 1, C_MAX_ID, "invalid_id", "id")
        cdef int64_t r = arg_int(receives, 0, UINT32_MAX, "invalid_receives", "receives")
        cdef int64_t slot
        check_now(now)
        slot = self.token_check(qi, mid, r, now)
        if slot < 0:
            return False
        self.delete_at(qi, slot)
        self.after_removals()
        return True

    def change_lease_token(self, queue, msg_id, receives, timeout_ms, int64_t now):
        """change_lease by lease token (id, receives); the rule of delete_token."""
        cdef int32_t qi = self.lookup(queue)
        cdef int64_t mid = arg_int(msg_id, 1, C_MAX_ID, "invalid_id", "id")
        cdef int64_t r = arg_int(receives, 0, UINT32_MAX, "invalid_receives", "receives")
        cdef int64_t timeout = arg_int(timeout_ms, 0, C_MAX_VISIBILITY_MS, "invalid_timeout",
                                       "timeout_ms")
        cdef int64_t slot
        check_now(now)
        slot = self.token_check(qi, mid, r, now)
        if slot < 0:
            return False
        self.change_at(qi, slot, timeout, now)
        return True

    # ---- timers ---------------------------------------------------------------------------

    cpdef int64_t next_deadline(self) noexcept:
        """The earliest lease, delay or retention deadline, or -1 if there is none."""
        cdef int64_t t = self.timers.entries[0].deadline_ms if self.timers.len else -1
        cdef int64_t r
        if self.retention.len:
            r = self.retention.entries[0].deadline_ms
            if t < 0 or r < t:
                return r
        return t

    def expire(self, int64_t now, budget):
        """Process at most ``budget`` due entries in (deadline, id) order: timer heap entries
        (lease and delay ends) and retention heap heads (a queue's oldest ready message past
        its retention), merged."""
        cdef int64_t b
        cdef int64_t done = 0
        cdef TimerEntry e
        cdef Msg* m
        cdef Queue* q
        cdef int32_t qi
        check_now(now)
        b = arg_int(budget, 0, C_MAX_ID, "invalid_budget", "budget")
        while done < b:
            if self.retention.len > 0 and self.retention.entries[0].deadline_ms <= now and (
                    self.timers.len == 0 or self.timers.entries[0].deadline_ms > now
                    or ret_before_timer(&self.retention.entries[0], &self.timers.entries[0])):
                # A queue's oldest ready message is past its retention.
                qi = self.retention.entries[0].queue_idx
                q = &self.queues[qi]
                self.drop_retained(qi, ready_pop(q))
                ret_update(&self.retention, self.queues, qi)
                rheap_maybe_shrink(q)
                done += 1
                continue
            if self.timers.len == 0 or self.timers.entries[0].deadline_ms > now:
                break
            e = self.timers.entries[0]
            m = e.msg
            if e.cid >= 0:
                # The lease table slot is a likely cache miss: let it load during the sift.
                __builtin_prefetch(&self.leases.slots[ht_hash(&self.leases, e.msg_id)])
            qi = msg_queue(m)
            q = &self.queues[qi]
            ready_reserve(q, 1)
            if e.cid >= 0 and q.dlq >= 0:
                ready_reserve(&self.queues[q.dlq], 1)
                if self.track_dead_letters and goes_to_dlq(
                        q, msg_receipt(&self.receipts, m).receives):
                    self.note_dead_letter(q, m)
            heap_remove(&self.timers, 0)
            if e.cid >= 0:
                ht_remove_at(&self.leases, ht_find(&self.leases, e.msg_id))
                self.end_lease(qi, m, True, now)
            else:
                q.delayed -= 1
                self.make_available(qi, m, now)
            done += 1
        if done:
            self.after_removals()
        return done

    # ---- accounting and metrics -----------------------------------------------------------

    @property
    def memory_bytes(self):
        """Bytes held: sum over messages of MESSAGE_OVERHEAD + len(escaped body) (+ blob)."""
        return self.memory_bytes_

    @property
    def memory_limit(self):
        """The configured limit in bytes (0 = none)."""
        return self.max_memory_

    @property
    def message_count(self):
        return self.message_count_

    def stats(self, names=None):
        """(name, ready, leased, delayed, published, delivered, deleted, expired,
        dead_lettered, expired_retention) per queue, sorted by name; with ``names``, for those
        of them that exist, in their order (the metrics render a few hundred queues per
        event-loop turn, so a scrape of 100,000 queues never sorts or walks them all at once)."""
        cdef int32_t qi
        cdef Queue* q
        rows = []
        index = self.queue_index
        for name in (sorted(index) if names is None else names):
            idx = index.get(name)
            if idx is None:
                continue
            qi = idx
            q = &self.queues[qi]
            rows.append((name, q.ready, q.leased, q.delayed, q.published, q.delivered,
                         q.deleted, q.expired, q.dead_lettered, q.expired_retention))
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

    def restore(self, queue, msg_id, body, receives, int64_t now, delay_ms=0, sent_ms=None,
                first_receive_ms=None, attributes=None):
        """Insert a message with a given id and receive count, bypassing the memory limit."""
        cdef int32_t qi = self.lookup(queue)
        cdef Queue* q = &self.queues[qi]
        cdef int64_t mid = arg_int(msg_id, 1, C_MAX_ID, "invalid_id", "id")
        cdef int64_t esc, r, delay, sent
        cdef int64_t first = 0
        cdef Receipt receipt
        cdef Msg* m
        data = body_bytes(body)
        esc = body_escaped_len(data, C_MAX_MESSAGE_BYTES)
        r = arg_int(receives, 0, UINT32_MAX, "invalid_receives", "receives")
        check_now(now)
        delay = arg_int(delay_ms, 0, C_MAX_DELAY_MS, "invalid_delay", "delay_ms")
        sent = now if sent_ms is None else arg_int(
            sent_ms, -C_MAX_NOW - 1, C_MAX_NOW, "invalid_time", "sent_ms")
        if first_receive_ms is not None:
            first = arg_int(first_receive_ms, -C_MAX_NOW - 1, C_MAX_NOW, "invalid_time",
                            "first_receive_ms")
        attrs = attributes_bytes(attributes, C_MAX_MESSAGE_BYTES)
        if self.id_exists(mid):
            raise InvalidArgument(f"id {mid} is in use", "invalid_id")
        if delay > 0:
            heap_reserve(&self.timers, 1)
        else:
            ready_reserve(q, 1)
        if self.all_ids.slots != NULL:
            ht_reserve(&self.all_ids, 1)
        ht_reserve(&self.receipts, 1)
        m = msg_new(&self.slabs, mid, bytes_ptr(data), PyBytes_GET_SIZE(data), esc, sent,
                    attributes_cost(attrs))
        if m == NULL:
            raise MemoryError()
        if attrs is not None:
            msg_set_attributes(m, attrs)
        receipt.receives = <uint32_t>r
        receipt.first = 0 if first_receive_ms is None else <uint32_t>first_receive_code(
            first - sent)
        msg_set_receipt(&self.receipts, m, receipt)
        if self.all_ids.slots != NULL:
            ht_insert(&self.all_ids, mid, m)
        self.memory_bytes_ += msg_accounted(m)
        self.message_count_ += 1
        if <uint64_t>mid >= self.next_id_:
            self.next_id_ = <uint64_t>mid + 1
        if delay > 0:
            msg_set_queue(m, qi)
            m.link.slot.state = MSG_DELAYED
            heap_push(&self.timers, now + delay, -1, m)
            q.delayed += 1
        else:
            ready_add(q, m)
            if q.retention_ms:
                ret_update(&self.retention, self.queues, qi)

    def dump_messages(self, cursor, max_count, int64_t now):
        """A chunk of every message for a snapshot, in id order: (next_cursor, [(id, queue,
        raw body, receives, delay_remaining_ms, sent_ms, first_receive_ms, attributes),
        ...])."""
        cdef int64_t c = arg_int(cursor, 0, C_MAX_ID, "invalid_cursor", "cursor")
        cdef int64_t k = arg_int(max_count, 1, C_MAX_ID, "invalid_max_count", "max_count")
        cdef int64_t pos, hi, lo, mid, delay
        cdef DumpEntry* e
        cdef Msg* m
        cdef Receipt r
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
            r = msg_receipt(&self.receipts, m)
            out.append((m.id, self.queue_names_by_idx[e.queue_idx],
                        json_unescape(msg_body(m), msg_body_len(m)), r.receives, delay,
                        msg_sent_ms(m), first_receive_ms(m, r), msg_attributes(m)))
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
        """Raise AssertionError if any internal invariant is broken (invariants.pxi)."""
        broker_check_invariants(self)
