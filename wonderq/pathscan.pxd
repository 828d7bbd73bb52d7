# cython: language_level=3
# routing.py cimports these: C calls on every request routed by its path's parts.

cimport cython

cpdef Py_ssize_t segment_after(str path, bytes prefix) except -2
cpdef bint rest_is(str path, Py_ssize_t start, bytes rest) except -1


@cython.final
cdef class PathIndex:
    cdef tuple _keep                 # ((prefix, rest, index), ...), those of a prefix together
    cdef Py_ssize_t count            # entries
    cdef const char** prefixes       # each entry's prefix (one pointer for equal prefixes)
    cdef const char** rests          # each entry's rest
    cdef Py_ssize_t* lens            # len(prefix), len(rest), index in entries: of each
    cdef readonly Py_ssize_t start   # the segment find() matched last: path[start:end]
    cdef readonly Py_ssize_t end

    cpdef Py_ssize_t find(self, str path) except -2
