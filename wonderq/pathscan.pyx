# cython: language_level=3
"""The router's compares of a path against a route's literal parts, in C.

Router._match_params finds a queue route by its literal prefix, the ``{queue}`` segment and
the literal rest (``/v1/queues/`` + name + ``/messages``). With ``str.startswith``,
``str.find`` and ``str.endswith`` those three steps took ~820 instructions of a publish
spread over many queues, most of it CPython's generic ``PyUnicode_Tailmatch`` (callgrind,
bench/instructions.py's spread100k against spread1, where the router's last path hits).
A path as the protocol makes it is latin-1 text, one byte per character in memory: these
compare those bytes with a route's literals encoded as latin-1 (``memcmp``) and look for the
``/`` with ``memchr``. A str of wider characters (a caller's own) takes the str methods:
same answers.

``PathIndex`` holds the routes of one ``{param}`` between a literal prefix and a literal
rest, and finds a path's route among them in one C call, where the router had looped over
them in Python, a tuple unpacked per route and a call of the two functions above per
candidate: bench/instructions.py spread100k 14,545 -> 14,253 instructions a request,
recvdel_q 15,314 -> 15,189.
"""

from libc.stdlib cimport free, malloc
from libc.stdint cimport uint64_t
from libc.string cimport memchr, memcmp, memcpy


cdef extern from "Python.h":
    int PyUnicode_KIND(object o)
    void* PyUnicode_DATA(object o)


cpdef Py_ssize_t segment_after(str path, bytes prefix) except -2:
    """The end of the non-empty segment that follows ``prefix`` at the start of ``path``
    (the index of the next ``/``, or the length), or -1 when ``path`` does not begin with
    ``prefix`` (latin-1) or the segment is empty."""
    cdef Py_ssize_t n = len(prefix)
    cdef Py_ssize_t length = len(path)
    cdef const char* data
    cdef const char* slash
    cdef Py_ssize_t end
    if length <= n:
        return -1
    if PyUnicode_KIND(path) != 1:
        if not path.startswith(prefix.decode("latin-1")):
            return -1
        end = path.find("/", n)
        end = length if end < 0 else end
        return end if end > n else -1
    data = <const char*>PyUnicode_DATA(path)
    if memcmp(data, <const char*>prefix, n) != 0:
        return -1
    slash = <const char*>memchr(data + n, 47, length - n)  # "/"
    end = length if slash == NULL else slash - data
    return end if end > n else -1


cpdef bint rest_is(str path, Py_ssize_t start, bytes rest) except -1:
    """Whether ``path[start:]`` is ``rest`` (latin-1), for ``0 <= start <= len(path)``."""
    cdef Py_ssize_t n = len(rest)
    if len(path) - start != n:
        return False
    if PyUnicode_KIND(path) != 1:
        return path.endswith(rest.decode("latin-1"))
    return memcmp(<const char*>PyUnicode_DATA(path) + start, <const char*>rest, n) == 0


cdef inline bint same8(const char* a, const char* b) noexcept nogil:
    cdef uint64_t x
    cdef uint64_t y
    memcpy(&x, a, 8)
    memcpy(&y, b, 8)
    return x == y


cdef inline bint same_bytes(const char* a, const char* b, Py_ssize_t n) noexcept nogil:
    """memcmp(a, b, n) == 0 for the few bytes of a route's literal, without the call: eight
    bytes a compare, the last eight overlapping the ones before."""
    if n >= 8:
        while n > 8:
            if not same8(a, b):
                return False
            a += 8
            b += 8
            n -= 8
        return same8(a + n - 8, b + n - 8)
    while n > 0:
        if a[0] != b[0]:
            return False
        a += 1
        b += 1
        n -= 1
    return True


cdef class PathIndex:
    """Templates ``prefix + {param} + rest`` (latin-1 bytes), matched in C: ``find(path)``
    is the index of the entry whose prefix begins ``path``, followed by a non-empty segment
    without ``/`` and then exactly its rest; ``start`` and ``end`` are that segment's bounds
    in ``path``. No path may match two entries (the router gives it only routes whose paths
    no other route's match): entries of the same prefix are tried together, that prefix and
    the segment's end found once."""

    def __cinit__(self, entries):
        cdef Py_ssize_t i
        cdef bytes prefix
        cdef bytes rest
        cdef dict first = {}  # a prefix -> its one bytes object here
        cdef list keep = []
        for i, (p, r) in enumerate(entries):
            prefix = first.setdefault(bytes(p), bytes(p))
            keep.append((prefix, bytes(r), i))
        # The entries of one prefix next to each other, in the order of the prefixes' first
        # entries; each keeps its index in ``entries``.
        order = {prefix: k for k, prefix in enumerate(first)}
        self._keep = tuple(sorted(keep, key=lambda e: (order[e[0]], e[2])))
        self.count = len(self._keep)
        self.prefixes = <const char**>malloc(max(self.count, 1) * sizeof(char*))
        self.rests = <const char**>malloc(max(self.count, 1) * sizeof(char*))
        self.lens = <Py_ssize_t*>malloc(max(self.count, 1) * 3 * sizeof(Py_ssize_t))
        if self.prefixes == NULL or self.rests == NULL or self.lens == NULL:
            raise MemoryError()
        for i in range(self.count):
            prefix, rest, index = self._keep[i]
            self.prefixes[i] = <const char*>prefix
            self.rests[i] = <const char*>rest
            self.lens[3 * i] = len(prefix)
            self.lens[3 * i + 1] = len(rest)
            self.lens[3 * i + 2] = index

    def __dealloc__(self):
        free(self.prefixes)
        free(self.rests)
        free(self.lens)

    cpdef Py_ssize_t find(self, str path) except -2:
        """The index (in ``entries``) of the entry ``path`` matches, or -1 (``start`` and
        ``end`` then 0)."""
        cdef Py_ssize_t length = len(path)
        cdef const char* data
        cdef const char* prefix = NULL
        cdef Py_ssize_t i
        cdef Py_ssize_t n = 0
        cdef Py_ssize_t end = 0
        cdef Py_ssize_t rest
        cdef bytes prefix_bytes
        cdef bytes rest_bytes
        self.start = self.end = 0
        if PyUnicode_KIND(path) != 1:
            for i in range(self.count):
                prefix_bytes, rest_bytes, _ = self._keep[i]
                end = segment_after(path, prefix_bytes)
                if end > 0 and rest_is(path, end, rest_bytes):
                    self.start = len(prefix_bytes)
                    self.end = end
                    return self.lens[3 * i + 2]
            return -1
        data = <const char*>PyUnicode_DATA(path)
        for i in range(self.count):
            if self.prefixes[i] != prefix:  # the first entry of a prefix: where its segment ends
                prefix = self.prefixes[i]
                n = self.lens[3 * i]
                end = 0
                if length > n and same_bytes(data, prefix, n):
                    end = n
                    while end < length and data[end] != 47:  # "/"
                        end += 1
            rest = self.lens[3 * i + 1]
            if end > n and length - end == rest and same_bytes(data + end, self.rests[i], rest):
                self.start = n
                self.end = end
                return self.lens[3 * i + 2]
        return -1
