# cython: language_level=3
# protocol.py cimports the scanner: a C call on every read that starts a request.

cimport cython


@cython.final
cdef class Lifter:
    cdef public bytes value  # the last Authorization value lifted (kept while it repeats)

    cpdef object lift(self, bytes data)
    cpdef bytes keep(self, bytes value)
    cdef bytes _keep(self, const char* value, Py_ssize_t size, bytes made)
