# cython: language_level=3
# C types for request.py, compiled in Cython's pure-Python mode (the .py stays the readable
# source).

cimport cython


@cython.final
@cython.freelist(64)
cdef class Request:
    cdef public object method       # str: interned for the usual methods
    cdef public object path         # str, raw (not percent-decoded), latin-1
    cdef public object query        # str, raw, without the "?"
    cdef public object body         # bytes, whole (chunks joined)
    cdef public bint keep_alive     # llhttp's verdict for this message
    cdef public object conn         # the HttpProtocol that answers it
    cdef public object params       # the application's path parameters, or None
    cdef public object queue        # the raw {queue} segment of a route with no other param
    cdef public object route        # the application's metric label of a deferred request
    cdef public object deferred     # the application's state while parked
    cdef public object response     # an error the protocol answers in turn, or None
    cdef public bint echo_keep_alive  # the client sent Connection: keep-alive
    cdef public object headers      # [(lowercase name, value)] outside /v1/, else None
    cdef public object authorization  # the Authorization header (bytes), or None
    # Set only now and then (None from the allocation: _new_request does not store them).
    cdef public object if_none_match  # the If-None-Match header (bytes), or None
    cdef public object principal    # the SQS face's verified AWS principal, or None


@cython.locals(params=dict, end=Py_ssize_t, start=Py_ssize_t, stop=Py_ssize_t, eq=Py_ssize_t,
               name=str, value=str)
cpdef dict split_query(str query)


# The protocol's hot path cimports these (C calls).
cdef dict _prefixes                 # headers -> {status: head up to Content-Length: }


@cython.locals(prefixes=dict)
cpdef bytes _prefix(object status, object headers)


@cython.locals(req=Request)
cpdef Request _new_request(object method, object path, object query, object body,
                           bint keep_alive, object conn)


@cython.locals(i=Py_ssize_t)
cpdef Py_ssize_t _query_mark(bytes url)
