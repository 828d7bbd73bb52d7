# cython: language_level=3
# The engine's Broker derives from it; the protocol and the router call it (vtable calls).

cdef class QueueNames:
    cpdef prefetch_name(self, bytes data, Py_ssize_t start)
    cpdef known_name(self, str path, Py_ssize_t start, Py_ssize_t end)
