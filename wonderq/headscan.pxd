# cython: language_level=3
# protocol.py cimports the scanner: a C call on every read that starts a request.

cimport cython

cpdef bint same_secret(bytes a, bytes b)


@cython.final
cdef class Lifter:
    cdef public bytes value  # the last Authorization value lifted (kept while it repeats)

    cpdef object lift(self, bytes data)
