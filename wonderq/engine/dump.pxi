# The dump snapshot behind Broker.dump_messages: every message (id, block, queue) sorted by id.

from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset


cdef int dump_sort(DumpEntry* a, int64_t n) except -1:
    """Sort by id: LSD radix sort on bytes, skipping bytes all ids share; O(n) per pass."""
    cdef int64_t i, shift
    cdef int64_t counts[256]
    cdef int64_t total, c
    cdef DumpEntry* src = a
    cdef DumpEntry* dst
    cdef DumpEntry* tmp
    cdef bint is_sorted = True
    for i in range(1, n):
        if a[i - 1].id > a[i].id:
            is_sorted = False
            break
    if is_sorted:
        return 0
    tmp = <DumpEntry*>malloc(n * sizeof(DumpEntry))
    if tmp == NULL:
        raise MemoryError()
    dst = tmp
    for shift in range(0, 64, 8):
        memset(counts, 0, sizeof(counts))
        for i in range(n):
            counts[(src[i].id >> shift) & 255] += 1
        if counts[(src[0].id >> shift) & 255] == n:
            continue  # every id has this byte
        total = 0
        for i in range(256):
            c = counts[i]
            counts[i] = total
            total += c
        for i in range(n):
            c = (src[i].id >> shift) & 255
            dst[counts[c]] = src[i]
            counts[c] += 1
        src, dst = dst, src
    if src != a:
        memcpy(a, src, n * sizeof(DumpEntry))
    free(tmp)
    return 0
