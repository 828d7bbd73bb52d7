# The slab allocator: memory of message blocks.
#
# Blocks up to SLAB_MAX_BLOCK bytes come from 64 KiB slabs, one size class per 8 bytes, with no
# per-block header: with glibc, malloc(24 + 200) took a 240-byte chunk, a slab block 224 bytes
# (1M x 200-byte messages with the 24-byte header of then: 254.5 MB of RSS with malloc,
# 239.0 MB with slabs in bench/bench_core.py). A block finds its slab by masking its address
# (slabs are aligned on their size, carved from mmap'ed arenas). Empty slabs give their pages
# back (madvise) beyond a few kept warm, and each class keeps its last slab, so a queue that
# empties and refills makes no syscall.
# A slab's pages are faulted in with one madvise(MADV_POPULATE_WRITE) when it is taken: in
# bench/bench_core.py's publish loop that cut the cost per message from ~260 to ~210 ns (a page
# fault trap per 18 messages was a fifth of it).
# Bigger blocks use malloc, where its 8-16 bytes of overhead are under 1%.
# Sizes are in consts.pxi.

from libc.stdint cimport uintptr_t
from libc.stdlib cimport free, realloc
from libc.string cimport memset
from posix.mman cimport (
    MADV_DONTNEED, MAP_ANONYMOUS, MAP_FAILED, MAP_PRIVATE, PROT_READ, PROT_WRITE, madvise, mmap,
    munmap,
)


cdef Slab* slab_new(SlabAllocator* a) noexcept nogil:
    """An unused slab: a freed one, or the next of the newest arena; NULL when out of memory."""
    cdef char* raw
    cdef char* start
    cdef void** grown
    cdef Slab* s
    if a.n_free > 0:
        a.n_free -= 1
        s = a.free_slabs[a.n_free]
        # Fault its 16 pages in one call rather than one trap each (a no-op if still present).
        madvise(s, SLAB_BYTES, WQ_MADV_POPULATE_WRITE)
        return s
    if a.arena_next == a.arena_end:
        if a.n_arenas == a.arenas_cap:
            grown = <void**>realloc(a.arenas, (a.arenas_cap * 2 + 8) * sizeof(void*))
            if grown == NULL:
                return NULL
            a.arenas = grown
            a.arenas_cap = a.arenas_cap * 2 + 8
        # Map one slab more than needed, then trim both ends to get SLAB_BYTES alignment.
        raw = <char*>mmap(NULL, ARENA_BYTES + SLAB_BYTES, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        if <void*>raw == MAP_FAILED:
            return NULL
        start = <char*>((<uintptr_t>raw + SLAB_BYTES - 1) & ~(<uintptr_t>SLAB_BYTES - 1))
        if start != raw:
            munmap(raw, start - raw)
        if start + ARENA_BYTES != raw + ARENA_BYTES + SLAB_BYTES:
            munmap(start + ARENA_BYTES, raw + ARENA_BYTES + SLAB_BYTES - (start + ARENA_BYTES))
        a.arenas[a.n_arenas] = start
        a.n_arenas += 1
        a.arena_next = start
        a.arena_end = start + ARENA_BYTES
    s = <Slab*>a.arena_next
    a.arena_next += SLAB_BYTES
    madvise(s, SLAB_BYTES, WQ_MADV_POPULATE_WRITE)
    return s


cdef inline void* slab_alloc(SlabAllocator* a, uint32_t block) noexcept nogil:
    """A block of ``block`` bytes (a multiple of 8, <= SLAB_MAX_BLOCK); NULL when out of memory."""
    cdef Slab* s = a.classes[block >> 3]
    cdef void* p
    if s == NULL:
        s = slab_new(a)
        if s == NULL:
            return NULL
        s.next = NULL
        s.prev = NULL
        s.free_list = NULL
        s.live = 0
        s.bump = SLAB_HEADER
        s.block_bytes = block
        s.has_room = 1
        a.classes[block >> 3] = s
        a.slabs_in_use += 1
    if s.free_list != NULL:
        p = s.free_list
        s.free_list = (<void**>p)[0]
    else:
        p = <char*>s + s.bump
        s.bump += block
    s.live += 1
    if s.free_list == NULL and s.bump + block > SLAB_BYTES:
        # Full: s, the head of its class's list, leaves it.
        a.classes[block >> 3] = s.next
        if s.next != NULL:
            s.next.prev = NULL
        s.next = NULL
        s.has_room = 0
    return p


cdef void slab_release(SlabAllocator* a, Slab* s) noexcept nogil:
    """Take an empty slab off its class's list and keep it for any class."""
    cdef Slab** grown
    if a.n_free == a.free_cap:
        grown = <Slab**>realloc(a.free_slabs, (a.free_cap * 2 + 64) * sizeof(Slab*))
        if grown == NULL:
            return  # it stays on its class's list, empty and usable
        a.free_slabs = grown
        a.free_cap = a.free_cap * 2 + 64
    if s.prev != NULL:
        s.prev.next = s.next
    else:
        a.classes[s.block_bytes >> 3] = s.next
    if s.next != NULL:
        s.next.prev = s.prev
    if a.n_free >= SLAB_KEEP_DIRTY:
        madvise(s, SLAB_BYTES, MADV_DONTNEED)
    a.free_slabs[a.n_free] = s
    a.n_free += 1
    a.slabs_in_use -= 1


cdef inline void slab_free(SlabAllocator* a, void* p) noexcept nogil:
    cdef Slab* s = <Slab*>(<uintptr_t>p & ~(<uintptr_t>SLAB_BYTES - 1))
    cdef uint32_t cls = s.block_bytes >> 3
    (<void**>p)[0] = s.free_list
    s.free_list = p
    s.live -= 1
    if not s.has_room:
        s.prev = NULL
        s.next = a.classes[cls]
        if s.next != NULL:
            s.next.prev = s
        a.classes[cls] = s
        s.has_room = 1
    if s.live == 0 and (s.prev != NULL or s.next != NULL):
        slab_release(a, s)  # not the class's last slab


cdef void slab_destroy(SlabAllocator* a) noexcept nogil:
    cdef int64_t i
    for i in range(a.n_arenas):
        munmap(a.arenas[i], ARENA_BYTES)
    free(a.arenas)
    free(a.free_slabs)
    memset(a, 0, sizeof(SlabAllocator))
