# The queues' names -> indices that Broker.lookup reads on every request: an open-addressing
# table of 64-byte slots (one cache line each, in a mapping of its own), linear probing, at
# most half full. A slot holds the name's hash, its index and its first NAME_INLINE bytes,
# so a lookup of a name that fits reads one line of memory, where a dict reads four (index
# slot, entry, key object, int object). Spread over 100,000 queues those lines are cold,
# and the router's and this lookup's misses overlap: bench/RESULTS.md, "But removing both
# lookups does". The dict (Broker.queue_index) stays the registry; this table follows it
# (put_queue, delete_queue).
# Queue names are ASCII ([A-Za-z0-9_-]{1,80}): a name's bytes are its str's compact data.

from cpython.unicode cimport PyUnicode_GET_LENGTH
from libc.string cimport memcmp, memcpy
from posix.mman cimport (
    MAP_ANONYMOUS, MAP_FAILED, MAP_PRIVATE, PROT_READ, PROT_WRITE, madvise, mmap, munmap,
)


cdef extern from "Python.h":
    Py_ssize_t _Py_HashBytes(const void* src, Py_ssize_t n)
    bint PyUnicode_IS_COMPACT_ASCII(object o)
    void* PyUnicode_DATA(object o)
    int PyUnicode_KIND(object o)
    int PyUnicode_1BYTE_KIND


# NameSlot, NameTable and NAME_INLINE are declared in _core.pxd (Broker holds a NameTable).
cdef enum:
    NAMES_MIN_CAP = 64
    NAMES_HUGE_BYTES = 2 << 20  # a table this big asks for huge pages (x86-64's are 2 MiB)


cdef inline bint name_bytes(object name, const char** data, Py_ssize_t* n):
    """The bytes of a str that can be a queue's name (exact str, compact ASCII)."""
    if type(name) is not str or not PyUnicode_IS_COMPACT_ASCII(name):
        return False
    data[0] = <const char*>PyUnicode_DATA(name)
    n[0] = PyUnicode_GET_LENGTH(name)
    return True


cdef inline bint slot_holds(NameSlot* s, uint64_t h, const char* data, Py_ssize_t n) noexcept:
    """Whether s may hold that name: its hash, length and first bytes (all of a short name)."""
    return (s.hash == h and s.len == n
            and memcmp(s.key, data, <size_t>(n if n < NAME_INLINE else NAME_INLINE)) == 0)


cdef int names_grow(NameTable* t) except -1:
    """Twice the slots (NAMES_MIN_CAP at first), every name placed again."""
    cdef uint64_t cap = (t.mask + 1) * 2 if t.slots != NULL else NAMES_MIN_CAP
    cdef NameSlot* old = t.slots
    cdef uint64_t old_cap = t.mask + 1 if old != NULL else 0
    cdef uint64_t i, j
    # A mapping of its own (page-aligned, so every slot is one cache line): the old table's
    # pages go back to the system at once, where a freed heap block would stay resident
    # (each doubling would leave the last table behind: ~16 MB at 100,000 queues).
    cdef void* mem = mmap(NULL, cap * sizeof(NameSlot), PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    cdef NameSlot* slots
    if mem == MAP_FAILED:
        raise MemoryError()
    slots = <NameSlot*>mem
    if cap * sizeof(NameSlot) >= NAMES_HUGE_BYTES:
        # In huge pages where the system allows them (THP "madvise" or "always"): a lookup's
        # slot, and the hint's prefetch of it, then rarely miss the TLB as well (a prefetch
        # waits for its page walk, which a virtual machine's nested paging makes long).
        madvise(mem, cap * sizeof(NameSlot), WQ_MADV_HUGEPAGE)
    for i in range(cap):
        slots[i].idx = -1
    for i in range(old_cap):
        if old[i].idx >= 0:
            j = old[i].hash & (cap - 1)
            while slots[j].idx >= 0:
                j = (j + 1) & (cap - 1)
            slots[j] = old[i]
    if old != NULL:
        munmap(old, old_cap * sizeof(NameSlot))
    t.slots = slots
    t.mask = cap - 1
    return 0


cdef int names_reserve(NameTable* t) except -1:
    """Room for one more name at most half full (grown now if need be), so that the next
    names_insert cannot fail."""
    if t.slots == NULL or (t.used + 1) * 2 > t.mask + 1:
        names_grow(t)
    return 0


cdef int32_t names_find(NameTable* t, uint64_t h, const char* data, Py_ssize_t n,
                        list names_by_idx) except -2:
    """The index of the queue whose name's bytes are data[:n] (h: the name's hash, as its
    str hashes), or -1. A name longer than its slot keeps is compared whole with
    ``names_by_idx[idx]``, the registry's name."""
    cdef uint64_t i
    cdef NameSlot* s
    if t.slots == NULL:
        return -1
    i = h & t.mask
    while True:
        s = &t.slots[i]
        if s.idx < 0:
            return -1
        if slot_holds(s, h, data, n) and (
                n <= NAME_INLINE
                or memcmp(PyUnicode_DATA(names_by_idx[s.idx]), data, <size_t>n) == 0):
            return s.idx
        i = (i + 1) & t.mask


cdef inline void names_prefetch(NameTable* t, uint64_t h) noexcept:
    """Start loading the slot where a lookup of a name of hash h begins, and go on: a hint
    given as the request's target arrives, so that the lookup, after its head and body are
    parsed, finds the line in the cache (spread over 100,000 queues it was a miss of ~300
    ns: bench/RESULTS.md, "Many queues"). A str of ASCII hashes as its bytes do
    (_Py_HashBytes: tests/test_core_names.py checks it), so the hint's hash of a target's
    bytes is the lookup's."""
    if t.slots != NULL:
        __builtin_prefetch(&t.slots[h & t.mask])


cdef NameSlot* names_slot_of(NameTable* t, object name, int32_t idx) except? NULL:
    """The slot of queue ``idx``, named ``name``: in the probe run from the name's hash,
    before any empty slot; NULL if it is not there."""
    cdef uint64_t i
    if t.slots == NULL:
        return NULL
    i = <uint64_t>hash(name) & t.mask
    while t.slots[i].idx != idx:
        if t.slots[i].idx < 0:
            return NULL
        i = (i + 1) & t.mask
    return &t.slots[i]


cdef int names_insert(NameTable* t, object name, int32_t idx) except -1:
    """Add ``name`` (not in the table) for queue ``idx``."""
    cdef const char* data
    cdef Py_ssize_t n
    cdef uint64_t h, i
    cdef NameSlot* s
    if not name_bytes(name, &data, &n):
        raise ValueError("a queue name is an ASCII str")
    h = <uint64_t>hash(name)
    names_reserve(t)
    i = h & t.mask
    while t.slots[i].idx >= 0:
        i = (i + 1) & t.mask
    s = &t.slots[i]
    s.hash = h
    s.idx = idx
    s.len = <int32_t>n
    memcpy(s.key, data, <size_t>(n if n < NAME_INLINE else NAME_INLINE))
    t.used += 1
    return 0


cdef int names_delete(NameTable* t, object name, int32_t idx) except -1:
    """Remove queue ``idx``'s slot (named ``name``), moving the slots after it back so that
    no probe meets a hole (linear probing's deletion: no tombstones)."""
    cdef uint64_t i, j, home
    cdef NameSlot* slots = t.slots
    cdef NameSlot* found = names_slot_of(t, name, idx)
    if found == NULL:
        return 0
    i = <uint64_t>(found - slots)
    j = i
    while True:
        j = (j + 1) & t.mask
        if slots[j].idx < 0:
            break
        home = slots[j].hash & t.mask
        # slots[j] stays when its home lies cyclically in (i, j]
        if (i < home <= j) if i <= j else (i < home or home <= j):
            continue
        slots[i] = slots[j]
        i = j
    slots[i].idx = -1
    t.used -= 1
    return 0


cdef void names_free(NameTable* t) noexcept:
    if t.slots != NULL:
        munmap(t.slots, (t.mask + 1) * sizeof(NameSlot))
    t.slots = NULL
    t.mask = 0
    t.used = 0
