# The engine's data layout, read like a C header.
#
# Ownership: every Msg is owned by exactly one container at a time - its queue's ready FIFO, its
# queue's return heap, or the broker's timer heap (leased and delayed messages). The lease table
# is a non-owning index of the leased messages only; the receipt table holds the receive count
# and first receive of every message received at least once. Message memory comes from the
# broker's slab allocator (blocks up to SLAB_MAX_BLOCK bytes) or from malloc (larger ones,
# flagged MSG_BIG in the time word).

cimport cython
from cpython.object cimport PyObject
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

from wonderq.queuenames cimport QueueNames

# The server's clock (monotonic ms), for the store to call in C.
cpdef int64_t now_ms() noexcept

cdef struct Msg

# Where a message sits while it is NOT linked in a ready FIFO (same 8 bytes as Msg.next).
cdef struct MsgSlot:
    int32_t heap_index      # slot in the timer heap; valid only while leased or delayed
    uint16_t queue_idx      # low 16 bits of the owning queue's index (msg_queue())
    uint8_t state           # MSG_READY (in a return heap), MSG_LEASED or MSG_DELAYED
    uint8_t queue_hi        # high 8 bits of that index: 24 bits in all, the slot stays 8 bytes

# A message is in a ready FIFO (uses next) or elsewhere (uses slot), never both.
cdef union MsgLink:
    Msg* next               # next message of the queue's ready FIFO (NULL at the tail)
    MsgSlot slot            # heap slot, queue and state while not in a FIFO

# One block per message: this 24-byte header, then the JSON-escaped body, then (iff times has
# MSG_HAS_ATTRIBUTES) the attribute blob and its 4-byte length (message.pxi). The body's length
# follows from the block's size (its slab's size class less the padding kept in times, or the
# length kept before a malloc'ed block's header, with the count of its BodyViews: message.pxi);
# the receive count and first receive of a message received at least once are in the broker's
# receipt table (MSG_RECEIVED).
cdef struct Msg:
    int64_t id              # 1..MAX_ID, unique, kept when dead-lettered
    MsgLink link            # FIFO link or heap slot (see MsgLink)
    uint64_t times          # publish time, flags, block padding (message.pxi)

# Entry of the broker-wide timer heap (binary min-heap by (deadline_ms, msg_id); timers.pxi).
cdef struct TimerEntry:
    int64_t deadline_ms     # lease end or delay end, monotonic ms
    int64_t msg_id          # copy of msg.id so comparisons do not touch the message
    int64_t cid             # lease owner, or -1 for a delay
    Msg* msg                # the message (owned by the heap while here)

cdef struct TimerHeap:
    TimerEntry* entries     # array of cap entries, the first len in heap order
    int64_t len             # entries in use
    int64_t cap             # entries allocated

# The receive count and first receive of a message received at least once (leases.pxi).
cdef struct Receipt:
    uint32_t receives       # receive count; saturates at 2**32-1, reset to 0 by dead-lettering
    uint32_t first          # first receive, coded (message.pxi: first_receive_code); 0 = never

# What a table slot maps its id to: the message (the lease table, the index of all ids) or the
# message's receipt (the receipt table).
cdef union SlotValue:
    Msg* msg
    Receipt receipt

# Open-addressing slot of an id table (the lease table: id -> leased message).
cdef struct LeaseSlot:
    int64_t id              # message id, 0 = empty slot
    SlotValue v             # v.msg (not owned) or v.receipt, by table

# Linear probing, backward-shift deletion, power-of-two size, load <= 0.6.
cdef struct LeaseTable:
    LeaseSlot* slots        # array of mask + 1 slots
    uint64_t mask           # capacity - 1
    int shift               # 64 - log2(capacity), for Fibonacci hashing
    int64_t count           # occupied slots

# Header at the start of every 64 KiB slab: blocks of one size, found by masking an address.
cdef struct Slab:
    Slab* next              # next slab in its class's list of slabs with room
    Slab* prev              # previous slab in that list
    void* free_list         # freed blocks of this slab, linked through their first word
    uint32_t live           # blocks handed out and not freed
    uint32_t bump           # offset of the first never-used byte
    uint32_t block_bytes    # size of every block of this slab (a multiple of 8)
    uint32_t has_room       # on its class's list (a block free, or bump room left)

# Size-class allocator for message blocks; slabs are carved from mmap'ed arenas.
cdef struct SlabAllocator:
    Slab* classes[257]      # per class (block_bytes / 8): first slab with room, or NULL
    Slab** free_slabs       # empty slabs, pages returned (beyond SLAB_KEEP_DIRTY) or kept
    int64_t n_free          # entries in free_slabs
    int64_t free_cap        # entries allocated in free_slabs
    char* arena_next        # next unused slab of the newest arena
    char* arena_end         # end of the newest arena
    void** arenas           # every arena, unmapped on dealloc
    int64_t n_arenas        # entries in arenas
    int64_t arenas_cap      # entries allocated in arenas
    int64_t slabs_in_use    # slabs holding at least one block (for tests and metrics)

# One message of a dump_messages snapshot, sorted by id.
cdef struct DumpEntry:
    int64_t id              # the message's id
    Msg* msg                # the message, NULL once it is freed during the iteration
    int64_t queue_idx       # its queue, updated when it is dead-lettered during the iteration

# One queue; lives in Broker.queues[idx], its name in Broker.queue_names_by_idx[idx].
cdef struct Queue:
    bint active             # slot in use (deleted queues leave a free slot)
    Msg* fifo_head          # oldest fresh message (lowest id), NULL if the FIFO is empty
    Msg* fifo_tail          # newest message of the FIFO; stale while fifo_head is NULL
    Msg** rheap             # min-heap by id of messages available again
    int64_t rheap_len       # messages in rheap
    int64_t rheap_cap       # slots allocated in rheap
    int64_t visibility_ms   # default lease length, 0..MAX_VISIBILITY_MS
    int64_t delay_ms        # default publish delay, 0..MAX_DELAY_MS
    int64_t max_receives    # dead-letter after this many receives; 0 = no limit
    int64_t max_message_bytes   # largest raw body accepted by publish
    int32_t dlq             # index of the dead-letter queue, -1 = none
    int32_t dlq_refs        # how many queues use this one as their dead-letter queue
    int64_t ready           # messages in the FIFO and the return heap
    int64_t leased          # messages leased (including expired, not yet processed leases)
    int64_t delayed         # messages waiting for their delay to end
    int64_t published       # total publishes (not restores)
    int64_t delivered       # total messages handed out by receive
    int64_t deleted         # total successful deletes (acks)
    int64_t expired         # total leases that ran out (not dead-lettered)
    int64_t dead_lettered   # total messages moved from here to the dead-letter queue
    int64_t retention_ms    # messages older than this (since publish) are dropped; 0 = never
    int32_t ret_index       # slot in Broker.retention, -1 unless retention_ms and ready > 0
    int64_t expired_retention   # total messages dropped because their retention ran out

# Broker.names (engine/names.pxi): queue name -> index, one 64-byte slot per name.
cdef enum:
    NAME_INLINE = 48            # a name's first bytes kept in its slot

cdef struct NameSlot:
    uint64_t hash               # the name str's hash()
    int32_t idx                 # its queue index; -1: an empty slot
    int32_t len                 # bytes of the name
    char key[NAME_INLINE]       # its first bytes

cdef struct NameTable:
    NameSlot* slots             # mask + 1 slots, 64-byte aligned; NULL until the first insert
    uint64_t mask               # slots - 1 (a power of two)
    uint64_t used               # slots holding a name


# Entry of the retention heap: a queue whose oldest ready message (lowest id) has a retention
# deadline, keyed like the timer heap by (deadline_ms, msg_id) of that message.
cdef struct RetentionEntry:
    int64_t deadline_ms     # publish time + retention of the queue's lowest-id ready message
    int64_t msg_id          # that message's id (ties, and the order expire() follows)
    int32_t queue_idx       # the queue

cdef struct RetentionHeap:
    RetentionEntry* entries  # array of cap entries, the first len in heap order
    int64_t len             # entries in use (queues with retention and ready messages)
    int64_t cap             # entries allocated


# Final (never subclassed): its cdef methods are direct C calls, not vtable calls
# (bench/instructions.py: publish -22, recvdel -12 instructions per request).
@cython.final
cdef class Broker(QueueNames):
    cdef Queue* queues              # array of queue_cap queues, indexed by queue idx
    cdef int32_t queue_cap          # queues allocated
    cdef dict queue_index           # name -> idx of active queues
    cdef NameTable names            # the same, for lookup() (engine/names.pxi)
    cdef list queue_names_by_idx    # idx -> name (None for a free slot)
    cdef list free_queue_idx        # free slots of queues, reused before growing
    cdef dict queue_meta            # idx -> the queue's meta str (only queues that have one)
    cdef object last_name           # the name lookup() resolved last (compared by identity)
    cdef int32_t last_idx           # its queue idx; valid while last_name is not NO_NAME
    # The last prefetch_name: its bytes (kept alive), where the name is in them, its hash
    # (known_name reuses it for the same name instead of hashing it again).
    cdef bytes hint_data
    cdef Py_ssize_t hint_start
    cdef Py_ssize_t hint_len
    cdef uint64_t hint_hash
    cdef TimerHeap timers           # leases and delays of every queue
    cdef RetentionHeap retention    # queues with retention, by their next retention deadline
    cdef LeaseTable leases          # id -> Msg of leased messages only
    cdef LeaseTable receipts        # id -> Receipt of every message received (MSG_RECEIVED)
    cdef SlabAllocator slabs        # memory of messages up to SLAB_MAX_BLOCK bytes
    cdef LeaseTable all_ids         # id -> Msg of every message while restoring (slots NULL else)
    cdef DumpEntry* dump            # snapshot of a running dump_messages iteration, or NULL
    cdef int64_t dump_len           # entries in dump
    cdef int64_t dump_pos           # next entry to return
    cdef int64_t dump_last          # id returned last (the cursor handed out)
    cdef bint track_dead_letters    # record dead-letter moves for take_dead_lettered()
    cdef list dead_letters          # (id, dead-letter queue name) moves not yet taken
    cdef int64_t default_visibility_ms  # visibility of new queues
    cdef int64_t max_message_bytes_     # default and ceiling of queues' max_message_bytes
    cdef int64_t max_batch              # bound of receive limit and batch sizes
    cdef int64_t max_memory_            # memory limit in bytes, 0 = none
    cdef int64_t memory_bytes_          # sum of MESSAGE_OVERHEAD + escaped body (+ blob)
    cdef int64_t message_count_         # messages held
    cdef uint64_t next_id_              # id of the next publish (may be MAX_ID + 1)
    cdef Msg** scratch                  # max_batch message pointers for receive/publish_batch
    cdef int64_t* scratch_len           # max_batch escaped lengths for publish_batch
    cdef const uint8_t** scratch_src    # max_batch bodies (raw bytes) for publish_batch
    cdef int64_t* scratch_raw           # max_batch raw body lengths for publish_batch

    cdef int32_t lookup(self, object name) except -1
    cdef void end_lease(self, int32_t qi, Msg* m, bint expired, int64_t now) noexcept
    cdef void make_available(self, int32_t qi, Msg* m, int64_t now) noexcept
    cdef void drop_retained(self, int32_t qi, Msg* m) noexcept
    cdef void free_msg(self, Msg* m) noexcept
    cdef int64_t drop_queue_messages(self, int32_t qi) except -1
    cdef int id_exists(self, int64_t msg_id) except -1
    cdef int index_all_ids(self) except -1
    cdef void drop_all_ids(self) noexcept
    cdef int64_t dump_find(self, int64_t msg_id) noexcept
    cdef int build_dump(self) except -1
    cdef void drop_dump(self) noexcept
    cdef int note_dead_letter(self, Queue* q, Msg* m) except -1
    cdef bint lease_check(self, int32_t qi, int64_t cid, int64_t msg_id, int64_t now,
                          int64_t* slot_out) noexcept
    cdef int64_t token_check(self, int32_t qi, int64_t msg_id, int64_t receives,
                             int64_t now) noexcept
    cdef bint delete_one(self, int32_t qi, int64_t cid, int64_t msg_id, int64_t now) noexcept
    cdef void delete_at(self, int32_t qi, int64_t slot) noexcept
    cdef int change_at(self, int32_t qi, int64_t slot, int64_t timeout, int64_t now) except -1
    cdef int64_t take_ready(self, int32_t qi, int64_t n, int64_t now, bint lease) except -1
    cdef void untake(self, int32_t qi, int64_t n) noexcept
    cdef void lease_taken(self, int32_t qi, int64_t cid, int64_t n, int64_t now,
                          int64_t deadline) noexcept
    cdef void after_removals(self) noexcept
    cdef int64_t delete_many(self, int32_t qi, int64_t cid, const int64_t* ids, int64_t n,
                             int64_t now, int64_t* done) noexcept
    cdef dict queue_attributes(self, int32_t qi)
    # The hot calls of the server (also Python methods): C calls from the compiled api.
    cpdef publish(self, queue, body, int64_t now, delay_ms=*, attributes=*)
    cpdef publish_batch_json(self, queue, bytes data, int64_t now, list bodies=*)
    cpdef receive(self, queue, cid, limit, int64_t now, visibility_ms=*, list leased=*)
    cpdef object peek(self, queue, limit, int64_t now)
    cpdef delete(self, queue, cid, msg_id, int64_t now)
    cpdef ack_json(self, queue, bytes data, int64_t now, list deleted=*)
    cpdef ready_count(self, name)
    cpdef int64_t queue_delay_ms(self, queue) except -1
    cpdef int64_t next_deadline(self) noexcept
    cdef int64_t store_batch(self, int32_t qi, int64_t n, int64_t total, int64_t n_delayed,
                             PyObject** delay_items, int64_t now,
                             PyObject** attr_items) except -1
