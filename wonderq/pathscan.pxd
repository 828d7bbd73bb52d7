# cython: language_level=3
# routing.py cimports these: C calls on every request routed by its path's parts.

cpdef Py_ssize_t segment_after(str path, bytes prefix) except -2
cpdef bint rest_is(str path, Py_ssize_t start, bytes rest) except -1
