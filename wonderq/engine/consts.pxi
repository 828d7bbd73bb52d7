# The engine's bounds and tunables, in one place. Included first by _core.pyx.

from libc.stdint cimport INT64_MAX


# ---- message states -------------------------------------------------------------------------

cdef enum:
    MSG_READY = 0       # in a return heap (messages in a FIFO have no state byte)
    MSG_LEASED = 1      # in the timer heap with cid >= 0, and in the lease table
    MSG_DELAYED = 2     # in the timer heap with cid == -1

# ---- bounds of the API (exported by _core as MAX_ID, MAX_VISIBILITY_MS, ...) -------------------

cdef int64_t C_MAX_ID = INT64_MAX                   # ids and cids: 1..2**63-1 (cids from 0)
cdef int64_t C_MAX_VISIBILITY_MS = 43200 * 1000     # ms: longest lease (12 h)
cdef int64_t C_MAX_DELAY_MS = 604800 * 1000         # ms: longest publish delay (7 days)
# ms: largest ``now`` (139 years of a monotonic clock; wall-clock ms also fit until 2109): a
# message's publish time is kept in 43 signed bits (message.pxi), and now + any timeout stays
# far from int64 overflow. Times given back to restore may be negative, down to -C_MAX_NOW - 1.
cdef int64_t C_MAX_NOW = (1 << 42) - 1
# ms: a queue's retention period (60 s .. 14 days, as Amazon SQS), or 0 = keep until deleted.
cdef int64_t C_MIN_RETENTION_MS = 60 * 1000
cdef int64_t C_MAX_RETENTION_MS = 14 * 86400 * 1000
# bytes: largest raw body. Escaped bodies (6 bytes per input byte at worst) and a blob stay
# far below 2**31 bytes.
cdef int64_t C_MAX_MESSAGE_BYTES = 1 << 28
# queues: a message records its queue's index in 24 bits (MsgSlot.queue_idx + queue_hi), so
# up to 2**24 would fit; the limit is kept where a server's memory for empty queues (~0.5 KiB
# each, bench/scale.py) and tests/test_core.py's count-limit test stay modest.
cdef int64_t C_MAX_QUEUES = 1 << 18
# bytes: largest queue ``meta`` (UTF-8), the opaque text a face keeps with a queue.
cdef int64_t C_MAX_META_BYTES = 65536

# ---- a message's time word (Msg.times, message.pxi) ---------------------------------------------

cdef enum:
    TIME_SHIFT = 21                 # bits 63..21: publish time, ms, 43-bit two's complement
    MSG_HAS_ATTRIBUTES = 1 << 20    # bit 20: an attribute blob follows the body
    MSG_RECEIVED = 1 << 19          # bit 19: received at least once, a receipt in Broker.receipts
    MSG_BIG = 1 << 18               # bit 18: malloc'ed, the payload length just before the header
    MSG_PAD_MASK = 7                # bits 2..0: a slab block's bytes after the payload (0..7)

# ---- a big block's head (message.pxi, bodyview.pxi) -------------------------------------------

cdef enum:
    BIG_HEAD_BYTES = 16             # the view word and the payload length, before the header
    VIEW_MIN_BYTES = 32768          # escaped bodies from here on are answered as BodyViews
    PREFETCH_BYTES = 262144         # of the next big body a receive will answer (bodyview.pxi)

cdef int64_t BLOCK_ORPHAN = (<int64_t>1) << 62  # in the view word: the message is gone

# ---- a receipt's first receive (Receipt.first, message.pxi) -------------------------------------

cdef enum:
    FIRST_RECEIVE_MASK = 0xFFFFF    # 20 bits: first receive (0 = never), coded as below
    FIRST_RECEIVE_EXACT = 1 << 16   # ms: delays (first receive - publish) stored exactly below
    FIRST_RECEIVE_STEP = 1 << 15    # codes per doubling above it (relative error < 2**-15)

# ---- array sizes ------------------------------------------------------------------------------

cdef int64_t MIN_HEAP_CAP = 64          # entries: smallest timer heap kept when shrinking
cdef int64_t MIN_RHEAP_CAP = 8          # entries: smallest return heap kept when shrinking
cdef uint64_t MIN_TABLE_CAP = 64        # slots: smallest lease table (and index of all ids)
# slots: largest lease table rehashed to shrink it while non-empty (4 MiB of slots).
cdef uint64_t MAX_SHRINK_TABLE_CAP = 1 << 18

# ---- slab allocator (see slab.pxi) ----------------------------------------------------------

cdef enum:
    SLAB_BYTES = 65536          # bytes: one slab, aligned on its size
    SLAB_HEADER = 64            # bytes reserved for struct Slab at the slab's start
    SLAB_MAX_BLOCK = 2048       # bytes: larger blocks are malloc'ed (slab tail waste < 3%)
    PAGE_BYTES = 4096           # the page size populate_if_fresh assumes (x86-64, arm64 4K)
    POPULATE_MIN_BYTES = 32768  # blocks from here on are faulted in at once when fresh
    ARENA_BYTES = 4 << 20       # bytes mmap'ed at a time and carved into slabs; kept to the end
    SLAB_KEEP_DIRTY = 16        # empty slabs kept with their pages (1 MiB), to absorb churn
    WQ_MADV_POPULATE_WRITE = 23  # Linux >= 5.14; older kernels answer EINVAL, and pages fault in
    WQ_MADV_HUGEPAGE = 14       # Linux (transparent huge pages); elsewhere EINVAL, nothing else
