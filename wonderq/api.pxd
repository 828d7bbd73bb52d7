# cython: language_level=3
# C types for api.py, compiled in Cython's pure-Python mode (the .py stays the readable
# source). The hot handlers are cpdef methods over the protocol's typed Request; the store is
# typed, so its methods are C calls; the parameter checks are cimported C functions.

cimport cython

from wonderq.params cimport (delete_args, param_cid, param_delay, param_int, param_path_id,
                             param_queue, parse_query, receive_args)
from wonderq.request cimport Request
from wonderq.deferred cimport Deferred
from wonderq.store cimport Store

cdef tuple _TRUE, _FALSE            # a delete's answers


@cython.final
cdef class Api:
    cdef public Store store          # queue state: every handler's one call
    cdef public object router        # the Router: answers deferred requests
    cdef public object longpoll      # the LongPoll: parks receives
    cdef public Py_ssize_t max_batch  # bound of limit, batch and ack sizes
    cdef public object metrics       # the Metrics of /metrics, set by the server
    cdef object _openapi             # bytes of openapi.json once read, else None
    cdef public object statuspage    # wonderq.statuspage.StatusPage
    cdef public object sqs           # the SQS face, which takes GET / with Action

    cpdef reply(self, Request req, object result, object render)

    # The hot routes; C calls from the router through the route table's bound methods.
    cpdef handle_publish(self, Request req)
    cpdef handle_publish_message(self, Request req)
    cpdef publish_to(self, Request req, str queue)
    cpdef handle_receive(self, Request req)
    cpdef handle_receive_messages(self, Request req)

    @cython.locals(args=tuple, body=object)
    cpdef receive_from(self, Request req, str queue)
    cpdef handle_delete(self, Request req)
    cpdef handle_delete_message(self, Request req)
    cpdef delete_from(self, Request req, str queue, object cid, object msg_id)

    @cython.locals(queue=str)
    cpdef handle_publish_batch(self, Request req)

    @cython.locals(queue=str)
    cpdef handle_ack(self, Request req)
