# cython: language_level=3
# C types for api.py, compiled in Cython's pure-Python mode (this file augments it; the .py
# stays the readable source). Only what the hot path touches is typed: the seed's routes,
# the named-queue receive, publish and delete, dispatch and the parameter helpers. Names
# other modules import stay Python globals; everything the server, the metrics collector or
# the tests read or set on Api is a public attribute.

cimport cython

from wonderq._core cimport Broker
from wonderq.protocol cimport Request, split_query

# Validated-value caches and shared answers (C globals: no dict lookup).
cdef dict _NO_PARAMS                # the params of an empty query (shared, never mutated)
cdef dict _INTS                     # plain ASCII digits -> int
cdef dict _MILLIS                   # plain decimal seconds -> whole ms
cdef dict _NAMES                    # raw {queue} path segment -> queue name
cdef Py_ssize_t _CACHE_SIZE         # each cache is cleared when it holds this many
cdef tuple _TRUE, _FALSE            # a delete's answers


# Module functions: C calls from the handlers; the cpdef ones are also the Python API.
cpdef dict parse_query(str query)
cpdef param_int(dict params, str name, lo, hi, default, bint cache=*)
cdef _parse_digits(str value, bint cache)
cpdef param_id(dict params, str name=*)
cpdef param_cid(dict params)
cpdef param_ms(dict params, str name, max_ms, default)
cdef _parse_seconds(str value)
cpdef str param_queue(Request req)
cpdef param_path_id(Request req)
cpdef bytes ids_json(list ids)


# A plain id's digits summed in C (18 digits fit a long long).
@cython.locals(text=str, msg_id=cython.longlong, char=Py_UCS4)
cpdef long long _plain_id(object value) except -1


@cython.final
cdef class Route:
    cdef readonly str name           # the template
    cdef readonly dict handlers      # method -> (handler, label, counts by status)
    cdef Py_ssize_t segments         # of the template split at "/"
    cdef tuple literals              # (index, text) of the literal segments, the last first
    cdef readonly tuple params       # (index, name) of the {name} segments

    @cython.locals(i=Py_ssize_t, text=str, name=str, value=str, found=dict)
    cpdef dict match(self, list segments)


@cython.final
cdef class Router:
    cdef public dict static          # path without {params} -> Route
    cdef public list dynamic         # Routes with {params}, in the order first added
    cdef dict _by_name               # template -> Route

    @cython.locals(route=Route, params=dict)
    cpdef tuple match(self, str path)


@cython.final
cdef class Api:
    cdef public Broker broker            # the engine (its hot methods are C calls)
    cdef public object wal               # wonderq.wal.Wal with --data-dir, else None
    cdef tuple _storage_errors           # exception classes answered 507
    cdef dict _default_delays            # queue -> its delay_ms, for the log
    cdef public Py_ssize_t max_batch     # bound of limit, batch and ack sizes
    cdef public object expiry            # the server's Expiry timer
    cdef object _call_later              # loop.call_later
    cdef public bint closing             # shutting down: long polls answer at once
    cdef public dict waiters             # queue -> WaitQueue, only queues with live waiters
    cdef dict _other_counts              # (route label, status) -> responses not by a route
    cdef public Router router            # the route table
    cdef dict _static                    # path -> {method: (handler, label, counts)}
    cdef str _last_path                  # the static path dispatched last (None at first)
    cdef dict _last_methods              # _static[_last_path]
    cdef public object registry          # the Prometheus CollectorRegistry
    cdef object _openapi                 # bytes of openapi.json once read, else None
    cdef dict _receive_queries           # receive query -> (cid, limit, visibility, wait)
    cdef public object sqs               # INTERIM glue: the SQS face, or None

    @cython.locals(path=str, methods=dict, found=dict, entry=tuple, response=tuple,
                   status=Py_ssize_t)
    cpdef dispatch(self, Request req)

    @cython.locals(route=Route, entry=tuple, response=tuple, status=Py_ssize_t)
    cdef _dispatch_dynamic(self, Request req)

    cpdef count(self, str route, int status)

    # The hot routes; C calls from dispatch through the route table's bound methods.
    cpdef handle_publish(self, Request req)

    @cython.locals(args=tuple)
    cpdef handle_receive(self, Request req)

    @cython.locals(params=dict, queries=dict, args=tuple)
    cpdef tuple receive_args(self, str query)

    @cython.locals(params=dict)
    cpdef handle_delete(self, Request req)

    @cython.locals(queue=str, args=tuple)
    cpdef handle_receive_messages(self, Request req)

    @cython.locals(queue=str)
    cpdef handle_publish_message(self, Request req)

    @cython.locals(queue=str)
    cpdef handle_delete_message(self, Request req)

    @cython.locals(queue=str, broker=Broker)
    cpdef handle_publish_batch(self, Request req)

    @cython.locals(queue=str)
    cpdef handle_ack(self, Request req)

    # Building blocks of the handlers.
    @cython.locals(broker=Broker)
    cpdef publish_one(self, str queue, bytes body, delay_ms)
    cpdef _after_publish(self, str queue)
    cpdef note_deadline(self)

    @cython.locals(broker=Broker)
    cpdef receive_or_park(self, Request req, str queue, cid, limit, visibility_ms, wait_ms)
