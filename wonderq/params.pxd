# cython: language_level=3
# C types for params.py, compiled in Cython's pure-Python mode (the .py stays the readable
# source). The faces cimport the cpdef functions, so a check is a C call.

cimport cython

from wonderq.request cimport Request, split_query

# Validated-value caches (C globals: no dict lookup).
cdef dict _NO_PARAMS                # the params of an empty query (shared, never mutated)
cdef dict _INTS                     # plain ASCII digits -> int
cdef dict _MILLIS                   # plain decimal seconds -> whole ms
cdef dict _RECEIVES                 # receive query -> (cid, limit, visibility_ms, wait_ms)
cdef Py_ssize_t _CACHE_SIZE         # each cache is cleared when it holds this many
cdef str _last_queue                # the name param_queue returned last

cpdef dict parse_query(str query)
cpdef param_int(dict params, str name, lo, hi, default, bint cache=*)
cdef _parse_digits(str value, bint cache)
cpdef param_id(dict params, str name=*)
cpdef param_cid(dict params)
cpdef param_ms(dict params, str name, max_ms, default)
cdef _parse_seconds(str value)
cpdef known_queue(str name)
cpdef str param_queue(Request req)


@cython.locals(n=Py_ssize_t, char=Py_UCS4)
cdef bint _is_queue_name(str name)
cpdef param_path_id(Request req)


@cython.locals(params=dict)
cpdef tuple delete_args(str query)
cpdef long long param_delay(str query) except? -2


@cython.locals(args=tuple, params=dict)
cpdef tuple receive_args(str query, Py_ssize_t max_batch)


# A plain id's digits summed in C (18 digits fit a long long).
@cython.locals(text=str, msg_id=cython.longlong, char=Py_UCS4)
cpdef long long plain_id(object value) except -1
