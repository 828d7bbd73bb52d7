# cython: language_level=3
# C types for protocol.py, compiled in Cython's pure-Python mode (this file augments it; the
# .py stays the readable source). Only what the hot path touches is typed; everything the
# application or the tests read stays a Python attribute (public) or a module global.

cimport cython

from wonderq.headscan cimport Lifter
from wonderq.queuenames cimport QueueNames
from wonderq.request cimport Request, _new_request, _prefix, _query_mark

# Module state read on every answer (C globals: no dict lookup).
cdef tuple _LENGTH_TAILS             # b"<n>\r\n\r\n" for n < _LENGTH_TAILS_MAX
cdef Py_ssize_t _LENGTH_TAILS_MAX    # bodies this long or longer format their length
cdef Py_ssize_t _WRITE_AS_IS_BYTES   # a last piece this long is written, not joined
cdef dict _METHODS                   # method bytes -> interned str
cdef tuple _NO_QUEUE                 # HttpProtocol._queue while nothing is queued

cdef int _IDLE, _HEAD, _BODY         # HttpProtocol._phase
cdef int _PAUSE_WRITE_BUFFER, _PAUSE_PIPELINE  # bits of HttpProtocol._paused
cdef int _T_PARSE, _T_BUSY, _T_LINGER          # HttpProtocol._timer_kind
cdef double TICKS_PER_S              # Deadlines' ticks per second


cdef class Deadlines


@cython.final
cdef class HttpProtocol:
    # The connection.
    cdef object _app                # App
    cdef object _dispatch           # _app.dispatch, bound once
    cdef readonly tuple _hint_prefixes  # targets whose queue is named to _names (on_url)
    cdef QueueNames _names          # the store's table of queue names (Router.hint_queues)
    cdef object _owner              # Owner: the set of connections, shutting_down
    cdef object _loop               # the running event loop
    cdef object _loop_time          # _loop.time, bound once
    cdef Py_ssize_t _max_url_bytes      # 414 past this
    cdef Py_ssize_t _max_header_bytes   # 431 past this (names + values)
    cdef Py_ssize_t _max_body_bytes     # 413 past this
    cdef Py_ssize_t _max_body_digits    # digits of _max_body_bytes
    cdef Py_ssize_t _max_connections    # 503 at accept past this
    cdef double _idle_timeout_s     # keep-alive idle, and between pieces of a body
    cdef double _header_timeout_s   # from the first byte of a request to its last header
    cdef bint _log_access           # write the access log (takes the slow path)
    cdef Lifter _lifter             # lifts Authorization out of heads (access control on)
    cdef object _parser             # httptools.HttpRequestParser
    cdef object _feed               # _parser.feed_data, bound once
    cdef object _get_method         # _parser.get_method, bound once
    cdef object _should_keep_alive  # _parser.should_keep_alive, bound once
    cdef object _transport          # None once the connection is lost
    cdef public bint closed         # the connection is gone, or going
    cdef public object peer         # "host:port" for logs
    # The message being parsed.
    cdef int _phase                 # _IDLE, _HEAD or _BODY
    cdef bytes _url                 # the request target so far, None between messages
    cdef list _headers              # this message's headers (not under /v1/), or None
    cdef Py_ssize_t _head_bytes     # header names + values of this message
    cdef Py_ssize_t _head_mark      # _head_bytes when the previous read ended in a head
    cdef object _head_mark_url      # _url then
    cdef Py_ssize_t _head_raw_bytes  # bytes of reads that completed no header line
    cdef double _head_deadline      # loop time the headers must be complete by; 0: unset
    cdef bint _special              # Content-Length, Expect or Connection was seen
    cdef bytes _content_length      # its digits as sent, or None
    cdef object _expect             # the Expect value, or None
    cdef bint _echo_keep_alive      # Connection: keep-alive was sent
    cdef bytes _raw_method          # the method of the last request, from httptools
    cdef str _method                # ... as the application sees it
    cdef object _body               # None, one bytes, or a list of pieces
    cdef Py_ssize_t _body_bytes     # size of the pieces while _body is a list
    cdef object _reader             # the BodyReader reading a big body, or None
    # The pipeline.
    cdef object _busy               # the parked Request, or None
    cdef object _queue              # deque of Requests behind _busy, or _NO_QUEUE (empty)
    cdef bint _continue_pending     # a 100 Continue is owed once the pipeline is clear
    cdef bint _reading_done         # discard further input
    cdef bint _shutting_down        # close after the last answer
    cdef bint _plain                # none of: reading done, shutting down, access log
    cdef bint _linger               # a lingering close is under way
    cdef int _paused                # _PAUSE_* bits
    cdef list _out                  # pieces of answers not yet written
    cdef bint _out_views            # _out holds BodyViews: writelines, never a join
    cdef bytes _if_none_match       # that header of the message being parsed, or None
    cdef bytes _authorization       # that header of the message being parsed, or None
    # A streamed answer (start_stream).
    cdef object _stream             # its Request, or None
    cdef bint _stream_chunked       # HTTP/1.1: chunked; HTTP/1.0: until the close
    # The timer.
    cdef Deadlines _deadlines       # shared by the server's connections
    cdef long long _tick            # the tick of _deadlines it is armed for; 0: none
    cdef int _timer_kind            # _T_PARSE, _T_BUSY or _T_LINGER
    cdef double _deadline           # for _T_LINGER
    cdef double _last_active        # loop time of the last read the slow path saw
    cdef bint _active               # a read completed requests since the timer fired

    @cython.locals(lifter=Lifter, value=bytes)
    cpdef data_received(self, object data)

    @cython.locals(start=cython.p_char, prefix=bytes, hint=cython.p_char, k=Py_ssize_t,
                   n=Py_ssize_t)
    cpdef on_url(self, bytes url)

    @cython.locals(n=Py_ssize_t, headers=list, lifter=Lifter)
    cpdef on_header(self, bytes name, bytes value)
    cpdef on_headers_complete(self)
    cpdef on_body(self, bytes data)

    @cython.locals(n=Py_ssize_t, keep_alive=bint, echo=bint, url=bytes, mark=Py_ssize_t,
                   path=str, query=str, raw_method=bytes, method=str, out=list)
    cpdef on_message_complete(self)

    @cython.locals(length=bytes)
    cdef _check_head(self)
    cdef _more_body(self, bytes data)
    cdef _run(self, Request req)
    cdef _enqueue(self, Request req)
    cdef _answer_of(self, Request req)
    cdef _park(self, Request req)
    cdef _flush(self)
    cdef _append_body(self, object body)
    cdef _write(self, Request req, object response)
    cdef _after_partial_read(self, Py_ssize_t nbytes)

    cdef _start_body_reader(self)
    cdef _new_parser(self)
    cdef _drop_reader(self)
    cdef _parse_failed(self, object exc)
    cdef _fail(self, int status, str code, str message)
    cdef _fail_with(self, object response)
    cdef _refuse(self, int status, str code, str message)
    cdef _stop_reading(self)
    cdef _too_large(self)
    cdef _headers_message(self)
    cdef _expect_received(self, bytes expect)
    cdef _close(self)
    cdef _linger_close(self)
    cdef _pause(self, int reason)
    cdef _resume(self, int reason)
    cdef _arm_for_state(self)
    cdef double _parse_deadline(self) except? -1.0
    cdef _set_deadline(self, int kind, double deadline)


@cython.final
cdef class Deadlines:
    cdef object _loop               # the event loop
    cdef dict _buckets              # tick -> set of HttpProtocol armed for it
    cdef list _ticks                # heap of the ticks in _buckets
    cdef object _handle             # the loop's TimerHandle, or None
    cdef long long _handle_tick     # the tick it fires at
    cdef long long _fired           # the last tick _fire took as due

    @cython.locals(tick="long long", old="long long", bucket=set)
    cpdef arm(self, HttpProtocol proto, double when)

    @cython.locals(tick="long long", bucket=set)
    cpdef disarm(self, HttpProtocol proto)
    cdef _call_at(self, long long tick)

    @cython.locals(now="long long", tick="long long", ticks=list, due=list, bucket=set,
                   proto=HttpProtocol)
    cpdef _fire(self)
