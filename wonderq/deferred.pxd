# cython: language_level=3
# C types for deferred.py, compiled in Cython's pure-Python mode (the .py stays the readable
# source).

cimport cython


@cython.final
cdef class Deferred:
    cdef public bint done             # the answer (or the error) is known
    cdef public object value          # the answer once done
    cdef public object error          # the exception once failed, else None
    cdef list _callbacks              # callbacks waiting for done, or None

    cpdef add(self, object callback)
    cpdef resolve(self, object value)
    cpdef fail(self, object error)
    cdef _run(self)


@cython.final
cdef class Fanout:
    cdef public object fut            # the future every answer waits for
    cdef list _waiting                # the Deferreds made, in order
    cdef list _values                 # their answers, in the same order

    cpdef Deferred deferred(self, object value)
