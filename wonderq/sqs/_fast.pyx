# cython: language_level=3, boundscheck=False, wraparound=False
"""The fast path of the SQS face: the JSON-protocol requests a busy client sends most
(SendMessage, SendMessageBatch, ReceiveMessage, DeleteMessageBatch), read and answered in C.

It takes a request only in the plain forms a client writes: the action's usual parameters and
no others, each once; strings whose characters are all allowed (escapes, UTF-8 and anything
SQS or JSON would refuse are checked here or left to the general path); integers written
plainly and within range; every batch entry valid; no access control. Anything else is
*declined* before any store call (``DECLINED``) and goes through the general path
(:mod:`wonderq.sqs.actions`), which answers it, errors included. What it takes, it answers
with the same bytes and leaves the store in the same state as the general path
(tests/test_sqs_fast.py proves both ways equal): the same store calls in the same order, but
for a batch send on the memory store, which is one engine call storing what the sends one by
one would (see _send_all). A store answer that comes later (a ``Deferred``) or a refusal of
one batch entry continues in the general path's own code.

Measured by callgrind: ``python bench/instructions.py sqs_send sqs_batch10 sqs_recvdel10``
(the figures are in the commits that brought each step).
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp, memcpy, memset

from wonderq.deferred cimport Deferred
from wonderq.request cimport Request
from wonderq.store cimport MemoryStore, Store

import os
from functools import partial

from .._core import EngineError, QueueNotFound
from .actions import MAX_MESSAGE_BYTES, _failure, engine_error

cdef extern from "digest.h":
    int WQ_HANDLE_HEAD
    void wq_md5_hex(char *out, const uint8_t *p, size_t n) noexcept nogil
    void wq_md5_hex_many(char *out, const uint8_t **p, const size_t *n, int count) noexcept nogil
    size_t wq_handle_encode(char *out, uint64_t k0, uint64_t k1, const uint8_t *queue,
                            size_t queue_len, uint64_t id, uint32_t receives) noexcept nogil
    int wq_handle_decode(uint64_t k0, uint64_t k1, const uint8_t *s, size_t n, uint8_t *raw,
                         uint64_t *id, uint32_t *receives, size_t *queue_len) noexcept nogil

#: What :meth:`FastPath.answer` returns for a request it leaves to the general path.
DECLINED = object()

cdef object _DECLINED = DECLINED
cdef Py_ssize_t _MAX_MESSAGE_BYTES = MAX_MESSAGE_BYTES
cdef int MAX_ENTRIES = 10
cdef bytes _CONTENT_TYPE = b"Content-Type: application/x-amz-json-1.0\r\nx-amzn-RequestId: "
cdef const char* HEX = b"0123456789abcdef"
cdef object _PARKED = object()  # _settled: the request waits on the store
cdef enum:
    SEND = 1
    RECEIVE = 2

include "fast_json.pxi"


@cython.final
cdef class FastPath:
    """The fast path of one :class:`wonderq.sqs.SqsFace` (its store, handle key, request ids,
    wait cache; its general path for what is declined, errors and later answers)."""

    cdef Store store                   # the face's store when it is a Store (C calls), else None
    cdef object any_store              # the face's store, whatever its class (tests' models)
    cdef object face
    cdef uint64_t k0, k1               # the handles' SipHash key
    cdef char rid_prefix[8]            # hex, random per face
    cdef uint64_t rid_count            # request ids given
    cdef dict wait_cache               # face._wait_cache: queue -> ReceiveMessageWaitTimeSeconds
    cdef public uint64_t taken         # requests answered here (tests check which way went)
    cdef bint batch_store              # a MemoryStore: a batch is one engine call, receive_rows
    cdef bytes last_url                # the last QueueUrl read, and its queue
    cdef str last_queue
    cdef bytes last_queue_bytes

    def __init__(self, face, store, uint64_t k0, uint64_t k1):
        self.face = face
        self.store = store if isinstance(store, Store) else None
        self.any_store = store
        self.batch_store = type(store) is MemoryStore
        self.k0 = k0
        self.k1 = k1
        prefix = os.urandom(4).hex().encode()
        memcpy(self.rid_prefix, PyBytes_AS_STRING(prefix), 8)
        self.rid_count = 0
        self.wait_cache = face._wait_cache
        self.last_url = b""
        self.last_queue = ""
        self.last_queue_bytes = b""

    cpdef bytes request_id(self):
        """A UUID-shaped id, unique per face (a random prefix and a counter)."""
        cdef char out[36]
        self._rid_into(out)
        return PyBytes_FromStringAndSize(out, 36)

    cdef void _rid_into(self, char* out) noexcept:
        cdef uint64_t count
        cdef int k
        self.rid_count += 1
        count = self.rid_count
        memcpy(out, self.rid_prefix, 8)
        memcpy(out + 8, b"-0000-4000-8000-", 16)
        for k in range(12):
            out[35 - k] = HEX[count & 15]
            count >>= 4

    cdef tuple _response(self, char* body, Py_ssize_t n, const char* rid):
        cdef char head[128]
        cdef char* o = put(head, PyBytes_AS_STRING(_CONTENT_TYPE),
                           PyBytes_GET_SIZE(_CONTENT_TYPE))
        o = put(o, rid, 36)
        o = put(o, b"\r\n", 2)
        return (200, PyBytes_FromStringAndSize(body, n), PyBytes_FromStringAndSize(head, o - head))

    cdef str _queue_of(self, Span* url):
        """The queue a plain QueueUrl names (its last path segment), or None to decline."""
        cdef Py_ssize_t end, start, k
        cdef uint8_t c
        if not url.plain or url.n == 0:
            return None
        if url.n == PyBytes_GET_SIZE(self.last_url) and memcmp(
            url.p, PyBytes_AS_STRING(self.last_url), url.n
        ) == 0:
            return self.last_queue
        end = url.n
        while end > 0 and url.p[end - 1] == 0x2F:
            end -= 1
        start = end
        while start > 0 and url.p[start - 1] != 0x2F:
            start -= 1
        if end - start < 1 or end - start > 80:
            return None
        for k in range(start, end):
            c = url.p[k]
            if not (0x61 <= c <= 0x7A or 0x41 <= c <= 0x5A or 0x30 <= c <= 0x39 or c == 0x5F
                    or c == 0x2D):
                return None
        self.last_url = PyBytes_FromStringAndSize(<const char*>url.p, url.n)
        self.last_queue_bytes = PyBytes_FromStringAndSize(<const char*>url.p + start, end - start)
        self.last_queue = self.last_queue_bytes.decode("ascii")
        return self.last_queue

    # ---- the route ----------------------------------------------------------------------------
    def handle(self, Request req):
        """The face's routes (``POST /``, queue URL paths): a JSON-protocol request the fast
        path takes, else the general path's answer (``face.handle_general``)."""
        cdef object target = _target(req.headers)
        if target is not None and self.face.authorizer is None:
            answer = self.answer(req, target)
            if answer is not _DECLINED:
                return answer
        return self.face.handle_general(req)

    cpdef object answer(self, Request req, bytes target):
        """The answer of a JSON-protocol request (``target`` its ``X-Amz-Target``), None when
        it comes later, or DECLINED."""
        cdef Py_ssize_t n = PyBytes_GET_SIZE(target)
        cdef const char* t = PyBytes_AS_STRING(target)
        cdef int action
        if n < 10 or not _is_sqs_target(t):
            return _DECLINED
        t += 10
        n -= 10
        if n == 11 and memcmp(t, b"SendMessage", 11) == 0:
            action = A_SEND
        elif n == 16 and memcmp(t, b"SendMessageBatch", 16) == 0:
            action = A_SEND_BATCH
        elif n == 14 and memcmp(t, b"ReceiveMessage", 14) == 0:
            action = A_RECEIVE
        elif n == 18 and memcmp(t, b"DeleteMessageBatch", 18) == 0:
            action = A_DELETE_BATCH
        else:
            return _DECLINED
        body = req.body
        if type(body) is not bytes:
            return _DECLINED
        if action == A_SEND:
            answer = self._send(req, <bytes>body)
        elif action == A_SEND_BATCH:
            answer = self._send_batch(req, <bytes>body)
        elif action == A_RECEIVE:
            answer = self._receive(req, <bytes>body)
        else:
            answer = self._delete_batch(req, <bytes>body)
        if answer is not _DECLINED:
            self.taken += 1
        return answer

    # ---- SendMessage --------------------------------------------------------------------------
    cdef object _send(self, Request req, bytes body):
        cdef Input inp
        cdef char rid[36]
        cdef char md5[32]
        cdef long long delay_ms = -1
        if not read_input(<const uint8_t*>PyBytes_AS_STRING(body), PyBytes_GET_SIZE(body), &inp,
                          K_QUEUE_URL | K_BODY | K_DELAY, 0):
            return _DECLINED
        queue = self._queue_of(&inp.queue_url) if inp.keys & K_QUEUE_URL else None
        if queue is None or not (inp.keys & K_BODY):
            return _DECLINED
        if inp.keys & K_DELAY:
            if inp.delay_s > 900:
                return _DECLINED
            delay_ms = inp.delay_s * 1000
        data = body_bytes(&inp.body)
        if data is None or PyBytes_GET_SIZE(data) > _MAX_MESSAGE_BYTES:
            return _DECLINED
        wq_md5_hex(md5, <const uint8_t*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
        self._rid_into(rid)
        try:
            msg_id = self._settled(req, self._store_send(queue, data, delay_ms), SEND, None, md5,
                                   rid)
            if msg_id is _PARKED:
                return None
            return self._sent(md5, msg_id, rid)
        except Exception as exc:
            return self.face._error(True, exc, PyBytes_FromStringAndSize(rid, 36), "SendMessage")

    cdef object _store_send(self, str queue, bytes data, long long delay_ms):
        if self.store is not None:
            return self.store.send(queue, data, delay_ms, None)
        return self.any_store.send(queue, data, delay_ms, None)

    cdef tuple _sent(self, const char* md5, object msg_id, const char* rid):
        cdef char out[96]
        cdef char* o = put(out, b'{"MD5OfMessageBody":"', 21)
        o = put(o, md5, 32)
        o = put(o, b'","MessageId":"', 15)
        o = put_u64(o, <uint64_t>msg_id)
        o = put(o, b'"}', 2)
        return self._response(out, o - out, rid)

    # ---- an answer the store gives later -------------------------------------------------------
    cdef object _settled(self, Request req, object result, int kind, str queue, const char* md5,
                         const char* rid):
        """The store's answer ``result`` when it is known now (a done Deferred's error is
        raised), else ``_PARKED``: the request waits on the Deferred and :meth:`_later` answers
        it with the ``kind`` of answer (SEND: ``md5``; RECEIVE: ``queue``'s messages)."""
        cdef Deferred d
        if type(result) is not Deferred:
            return result
        d = <Deferred>result
        if not d.done:
            req.deferred = d
            d.add(partial(self._later, req, kind,
                          PyBytes_FromStringAndSize(md5, 32) if kind == SEND else queue,
                          PyBytes_FromStringAndSize(rid, 36)))
            return _PARKED
        if d.error is not None:
            raise d.error
        return d.value

    def _later(self, Request req, int kind, object what, bytes rid, Deferred done):
        action = "SendMessage" if kind == SEND else "ReceiveMessage"
        try:
            if done.error is not None:
                raise done.error
            if kind == SEND:
                response = self._sent(PyBytes_AS_STRING(<bytes>what), done.value, rid)
            else:
                response = self._received(what, done.value, rid)
        except Exception as exc:
            response = self.face._error(True, exc, rid, action)
        req.conn.complete(req, response)

    # ---- SendMessageBatch ---------------------------------------------------------------------
    cdef object _send_batch(self, Request req, bytes body):
        cdef Input inp
        cdef char rid[36]
        cdef char md5s[320]         # 32 hex digits an entry
        cdef const uint8_t* starts[10]
        cdef size_t sizes[10]
        cdef uint64_t ids[10]
        cdef long long delays[10]
        cdef Py_ssize_t total = 0, size
        cdef int k, count
        cdef Entry* e
        cdef char* out
        cdef char* o
        if not read_input(<const uint8_t*>PyBytes_AS_STRING(body), PyBytes_GET_SIZE(body), &inp,
                          K_QUEUE_URL | K_ENTRIES, E_ID | E_BODY | E_DELAY):
            return _DECLINED
        queue = self._queue_of(&inp.queue_url) if inp.keys & K_QUEUE_URL else None
        count = inp.entries
        if queue is None or count == 0 or not ids_ok(&inp):
            return _DECLINED
        datas = []
        for k in range(count):
            e = &inp.entry[k]
            if not (e.keys & E_BODY):
                return _DECLINED
            delays[k] = -1
            if e.keys & E_DELAY:
                if e.delay_s > 900:
                    return _DECLINED
                delays[k] = e.delay_s * 1000
            data = body_bytes(&e.text)
            if data is None:
                return _DECLINED
            total += PyBytes_GET_SIZE(data)
            datas.append(data)
        if total > _MAX_MESSAGE_BYTES:
            return _DECLINED
        memset(sizes, 0, sizeof(sizes))  # (gcc cannot tell count <= 10)
        memset(starts, 0, sizeof(starts))
        for k in range(count):
            data = datas[k]
            starts[k] = <const uint8_t*>PyBytes_AS_STRING(data)
            sizes[k] = <size_t>PyBytes_GET_SIZE(data)
        wq_md5_hex_many(md5s, starts, sizes, count)
        self._rid_into(rid)
        start = 0
        if self.batch_store and not (self.store._waiting and queue in self.store._waiting):
            # The memory store takes the batch in one engine call: the same messages, ids and
            # state as one send each (nothing else runs between them, and nobody waits on the
            # queue to be woken between two). It stores all or nothing; a refusal is retried
            # entry by entry below, as the general path sends them.
            try:
                start = self._send_all(queue, datas, delays, count, ids)
            except Exception as exc:  # the queue does not exist: the whole request fails
                return self.face._error(
                    True, exc, PyBytes_FromStringAndSize(rid, 36), "SendMessageBatch")
        for k in range(start, count):
            try:
                msg_id = self._store_send(queue, datas[k], delays[k])
            except QueueNotFound as exc:  # the whole request fails, as in the general path
                return self.face._error(
                    True, exc, PyBytes_FromStringAndSize(rid, 36), "SendMessageBatch")
            except EngineError as exc:
                return self._send_rest(req, queue, &inp, datas, md5s, ids, k, exc, rid)
            except Exception as exc:
                return self.face._error(
                    True, exc, PyBytes_FromStringAndSize(rid, 36), "SendMessageBatch")
            if type(msg_id) is Deferred:
                if not (<Deferred>msg_id).done or (<Deferred>msg_id).error is not None:
                    return self._send_rest(req, queue, &inp, datas, md5s, ids, k, msg_id, rid)
                msg_id = (<Deferred>msg_id).value
            ids[k] = <uint64_t>msg_id
        size = 32 + count * (120 + 80)
        out = <char*>malloc(size)
        if out == NULL:
            raise MemoryError()
        o = put(out, b'{"Successful":[', 15)
        for k in range(count):
            if k:
                o[0] = 0x2C
                o += 1
            e = &inp.entry[k]
            o = put(o, b'{"Id":"', 7)
            o = put(o, <const char*>e.id.p, e.id.n)
            o = put(o, b'","MD5OfMessageBody":"', 22)
            o = put(o, md5s + 32 * k, 32)
            o = put(o, b'","MessageId":"', 15)
            o = put_u64(o, ids[k])
            o = put(o, b'"}', 2)
        o = put(o, b'],"Failed":[]}', 14)
        try:
            return self._response(out, o - out, rid)
        finally:
            free(out)

    cdef int _send_all(self, str queue, list datas, long long* delays, int count,
                       uint64_t* ids) except -2:
        """Publish the whole batch at once: ``count`` with ``ids`` set, or 0 when the engine
        refused it (nothing stored). QueueNotFound is raised."""
        cdef int k
        cdef uint64_t first
        with_delays = None
        for k in range(count):
            if delays[k] >= 0:
                with_delays = [delays[j] for j in range(count)]
                break
        try:
            first = <uint64_t>self.store.publish_batch(queue, datas, with_delays)
        except QueueNotFound:
            raise
        except EngineError:
            return 0
        for k in range(count):
            ids[k] = first + k
        return count

    cdef object _send_rest(self, Request req, str queue, Input* inp, list datas,
                           char* md5s, uint64_t* ids, int at, object what,
                           const char* rid):
        """Entry ``at`` was refused (``what`` the EngineError) or answers later (``what`` the
        Deferred): the general path's loop takes over from there."""
        cdef int k
        prepared = []
        successful = []
        failed = []
        for k in range(inp.entries):
            entry_id = PyBytes_FromStringAndSize(
                <const char*>inp.entry[k].id.p, inp.entry[k].id.n).decode("ascii")
            md5 = PyBytes_FromStringAndSize(md5s + 32 * k, 32).decode("ascii")
            delay_ms = inp.entry[k].delay_s * 1000 if inp.entry[k].keys & E_DELAY else -1
            prepared.append((entry_id, (datas[k], delay_ms, None, md5)))
            if k < at:
                successful.append({"Id": entry_id, "MD5OfMessageBody": md5,
                                   "MessageId": str(ids[k])})
        face = self.face
        request_id = PyBytes_FromStringAndSize(rid, 36)
        if type(what) is Deferred:
            steps = face._send_entries(queue, prepared, at, successful, failed, at > 0, what)
        else:
            failed.append(_failure(prepared[at][0], engine_error(what)))
            steps = face._send_entries(queue, prepared, at + 1, successful, failed, at > 0, None)
        return face.run(req, "SendMessageBatch", request_id, steps)

    # ---- ReceiveMessage -----------------------------------------------------------------------
    cdef object _receive(self, Request req, bytes body):
        cdef Input inp
        cdef char rid[36]
        cdef long long limit = 1, visibility_ms = -1
        if not read_input(<const uint8_t*>PyBytes_AS_STRING(body), PyBytes_GET_SIZE(body), &inp,
                          K_QUEUE_URL | K_MAX | K_VISIBILITY | K_WAIT, 0):
            return _DECLINED
        queue = self._queue_of(&inp.queue_url) if inp.keys & K_QUEUE_URL else None
        if queue is None:
            return _DECLINED
        if inp.keys & K_MAX:
            if not 1 <= inp.max_messages <= 10:
                return _DECLINED
            limit = inp.max_messages
        if inp.keys & K_VISIBILITY:
            if inp.visibility_s > 43200:
                return _DECLINED
            visibility_ms = inp.visibility_s * 1000
        if inp.keys & K_WAIT:
            if inp.wait_s != 0:
                return _DECLINED  # a long poll: the general path parks it
        elif self.wait_cache.get(queue) != 0:
            return _DECLINED  # the queue's default wait is unknown here, or not 0
        self._rid_into(rid)
        try:
            if self.batch_store:  # a MemoryStore: the rows without the times
                rows = (<MemoryStore>self.store).receive_rows(queue, limit, visibility_ms)
            elif self.store is not None:
                rows = self.store.receive_messages(queue, limit, visibility_ms)
            else:
                rows = self.any_store.receive_messages(queue, limit, visibility_ms)
            rows = self._settled(req, rows, RECEIVE, queue, NULL, rid)
            if rows is _PARKED:
                return None
            return self._received(queue, rows, rid)
        except Exception as exc:
            return self.face._error(True, exc, PyBytes_FromStringAndSize(rid, 36),
                                    "ReceiveMessage")

    cdef tuple _received(self, str queue, object rows, const char* rid):
        cdef Py_ssize_t count, size, k, body_n
        cdef char md5s[320]
        cdef const uint8_t* starts[10]
        cdef size_t sizes[10]
        cdef bytes name
        cdef char* out
        cdef char* o
        cdef const uint8_t* b
        cdef tuple row
        if not rows:
            return self._response(b"{}", 2, rid)
        name = self.last_queue_bytes if queue is self.last_queue else queue.encode()
        count = len(rows)
        if count > 10:  # never: the fast path receives at most 10
            raise ValueError("more rows than a receive asks for")
        size = 16
        memset(sizes, 0, sizeof(sizes))  # (gcc cannot tell count <= 10)
        memset(starts, 0, sizeof(starts))
        for k in range(count):
            row = <tuple>rows[k]
            data = <bytes>row[1]
            starts[k] = <const uint8_t*>PyBytes_AS_STRING(data)
            sizes[k] = <size_t>PyBytes_GET_SIZE(data)
            size += 120 + 64 + 4 * (PyBytes_GET_SIZE(name) + 24) // 3 + 6 * PyBytes_GET_SIZE(data)
        wq_md5_hex_many(md5s, starts, sizes, <int>count)
        out = <char*>malloc(size)
        if out == NULL:
            raise MemoryError()
        try:
            o = put(out, b'{"Messages":[', 13)
            for k in range(count):
                row = <tuple>rows[k]
                msg_id = row[0]
                data = <bytes>row[1]
                b = <const uint8_t*>PyBytes_AS_STRING(data)
                body_n = PyBytes_GET_SIZE(data)
                if k:
                    o[0] = 0x2C
                    o += 1
                o = put(o, b'{"MessageId":"', 14)
                o = put_u64(o, <uint64_t>msg_id)
                o = put(o, b'","ReceiptHandle":"', 19)
                o += wq_handle_encode(o, self.k0, self.k1,
                                      <const uint8_t*>PyBytes_AS_STRING(name),
                                      PyBytes_GET_SIZE(name), <uint64_t>msg_id,
                                      <uint32_t>row[2])
                o = put(o, b'","MD5OfBody":"', 15)
                o = put(o, md5s + 32 * k, 32)
                o = put(o, b'","Body":"', 10)
                o = put_escaped(o, b, body_n)
                o = put(o, b'"}', 2)
            o = put(o, b"]}", 2)
            return self._response(out, o - out, rid)
        finally:
            free(out)

    # ---- DeleteMessageBatch -------------------------------------------------------------------
    cdef object _delete_batch(self, Request req, bytes body):
        cdef Input inp
        cdef char rid[36]
        cdef uint8_t raw[768]
        cdef uint64_t ids[10]
        cdef uint32_t receives[10]
        cdef size_t queue_len = 0
        cdef int k, count
        cdef Entry* e
        cdef bytes name
        cdef char* out
        cdef char* o
        if not read_input(<const uint8_t*>PyBytes_AS_STRING(body), PyBytes_GET_SIZE(body), &inp,
                          K_QUEUE_URL | K_ENTRIES, E_ID | E_HANDLE):
            return _DECLINED
        queue = self._queue_of(&inp.queue_url) if inp.keys & K_QUEUE_URL else None
        count = inp.entries
        if queue is None or count == 0 or not ids_ok(&inp):
            return _DECLINED
        name = self.last_queue_bytes if queue is self.last_queue else queue.encode()
        for k in range(count):
            e = &inp.entry[k]
            if not (e.keys & E_HANDLE) or not e.text.plain:
                return _DECLINED
            if not wq_handle_decode(self.k0, self.k1, e.text.p, e.text.n, raw, &ids[k],
                                    &receives[k], &queue_len):
                return _DECLINED  # invalid, or of the first version: the general path
            if <Py_ssize_t>queue_len != PyBytes_GET_SIZE(name) or memcmp(
                raw + WQ_HANDLE_HEAD, PyBytes_AS_STRING(name), queue_len
            ) != 0:
                return _DECLINED
        self._rid_into(rid)
        for k in range(count):
            try:
                if self.store is not None:
                    done = self.store.delete_by_token(queue, ids[k], receives[k])
                else:
                    done = self.any_store.delete_by_token(queue, ids[k], receives[k])
            except Exception as exc:
                return self.face._error(
                    True, exc, PyBytes_FromStringAndSize(rid, 36), "DeleteMessageBatch")
            if type(done) is Deferred and (
                not (<Deferred>done).done or (<Deferred>done).error is not None
            ):
                return self._delete_rest(req, queue, &inp, ids, receives, k, done, rid)
        out = <char*>malloc(32 + count * 100)
        if out == NULL:
            raise MemoryError()
        o = put(out, b'{"Successful":[', 15)
        for k in range(count):
            if k:
                o[0] = 0x2C
                o += 1
            o = put(o, b'{"Id":"', 7)
            o = put(o, <const char*>inp.entry[k].id.p, inp.entry[k].id.n)
            o = put(o, b'"}', 2)
        o = put(o, b'],"Failed":[]}', 14)
        try:
            return self._response(out, o - out, rid)
        finally:
            free(out)

    cdef object _delete_rest(self, Request req, str queue, Input* inp, uint64_t* ids,
                             uint32_t* receives, int at, object pending, const char* rid):
        """Entry ``at``'s delete answers later: the general path's loop takes over."""
        cdef int k
        prepared = []
        successful = []
        for k in range(inp.entries):
            entry_id = PyBytes_FromStringAndSize(
                <const char*>inp.entry[k].id.p, inp.entry[k].id.n).decode("ascii")
            prepared.append((entry_id, (ids[k], receives[k])))
            if k < at:
                successful.append({"Id": entry_id})
        face = self.face
        steps = face._delete_entries(queue, prepared, at, successful, [], pending)
        return face.run(req, "DeleteMessageBatch", PyBytes_FromStringAndSize(rid, 36), steps)


cdef object _target(object headers):
    """The last ``x-amz-target`` of a request's headers, or None."""
    cdef Py_ssize_t k
    cdef tuple pair
    if headers is None:
        return None
    for k in range(len(<list>headers) - 1, -1, -1):
        pair = <tuple>(<list>headers)[k]
        name = pair[0]
        if PyBytes_GET_SIZE(name) == 12 and memcmp(PyBytes_AS_STRING(name), b"x-amz-target",
                                                   12) == 0:
            return pair[1]
    return None


cdef inline bint _is_sqs_target(const char* t) noexcept:
    """``amazonsqs.`` in any case (the first ten bytes of ``t``)."""
    cdef const char* want = b"amazonsqs."
    cdef int k
    cdef char c
    for k in range(10):
        c = t[k]
        if 0x41 <= c <= 0x5A:
            c += 0x20
        if c != want[k]:
            return False
    return True
