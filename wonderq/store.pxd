# cython: language_level=3
# C types for store.py, compiled in Cython's pure-Python mode (the .py stays the readable
# source). The faces hold a typed Store, so every call below is a C call through the vtable;
# a Python subclass (RedisStore) overrides the cpdef methods like any Python method.

cimport cython

from wonderq._core cimport Broker, now_ms
from wonderq.deferred cimport Deferred, Fanout
from wonderq.queuenames cimport QueueNames


cdef class Store:
    cdef public object listener       # the Listener (long polls) told of available messages
    cdef dict _waiting                # listener.waiting: queues with parked receives
    cdef public QueueNames queue_names  # its table of queue names for the HTTP layer, or None

    cpdef put_queue(self, str name, object attributes)
    cpdef delete_queue(self, str name)
    cpdef purge(self, str name)
    cpdef queue_info(self, str name)
    cpdef list_queues(self, str prefix, str after, Py_ssize_t limit)
    cpdef publish(self, str queue, object body, long long delay_ms)
    cpdef publish_batch(self, str queue, list bodies, object delays)
    cpdef publish_batch_json(self, str queue, bytes data)
    cpdef receive(self, str queue, object cid, object limit, long long visibility_ms)
    cpdef peek(self, str queue, object limit)
    cpdef delete(self, str queue, object cid, object msg_id)
    cpdef delete_batch(self, str queue, object cid, list ids)
    cpdef ack_json(self, str queue, bytes data)
    cpdef change_lease(self, str queue, object cid, object msg_id, long long timeout_ms)
    # The SQS face's section.
    cdef bytes _token_key             # the receipt handles' secret (random per store)
    cdef public long long wall_offset_ms  # epoch ms - monotonic ms, taken at creation
    cpdef token_key(self)
    cpdef send(self, str queue, bytes body, long long delay_ms, object attributes)
    cpdef receive_messages(self, str queue, object limit, long long visibility_ms)
    cpdef delete_by_token(self, str queue, object msg_id, object receives)
    cpdef change_lease_by_token(self, str queue, object msg_id, object receives,
                                long long timeout_ms)


cdef class MemoryStore(Store):
    cdef public Broker broker         # the engine
    cdef public object clock          # a test's clock, or None: _core.now_ms
    cdef object _loop                 # the serving loop, None until start()
    cdef object _timer                # the expiry timer's handle, or None
    cdef public long long armed_ms    # the deadline the timer is armed for (huge: none)
    cdef list _names                  # queue names in order once built, else None
    cdef set _added                   # names created since _names was brought up to date
    cdef set _removed                 # names deleted since, still in _names

    cpdef long long now(self) except -1
    cpdef after_publish(self, str queue)
    cpdef after_change_lease(self, long long timeout_ms)
    cpdef note_deadline(self)
    cpdef arm(self, long long deadline_ms)
    cpdef expire_due(self, long long now)  # the SQS face's section
    cpdef list receive_rows(self, str queue, object limit, long long visibility_ms)


# The log's calls on every change (wonderq.wal.Wal derives from it): C calls.
cdef class Log:
    cpdef check_writable(self)
    cpdef append_publish(self, msg_id, str queue, body, long long delay_ms=*,
                         long long receives=*)
    cpdef append_send(self, msg_id, queue, body, delay_ms, sent_ms, attributes=*)
    cpdef append_receive(self, ids)
    cpdef append_delete(self, msg_id)
    cpdef append_delete_many(self, ids)
    cpdef commit(self)


cdef class DurableStore(MemoryStore):
    cdef public object settings       # the server's Settings (data_dir, fsync, ...)
    cdef public object wall_ms        # wall-clock ms (delays are logged as wall-clock ends)
    cdef public Log wal               # the wonderq.wal.Wal once open() ran, else None
    cdef public Py_ssize_t recovered  # messages restored by open()
    cdef public Py_ssize_t recovered_queues  # queues restored by open()
    cdef public double read_s         # of open(): seconds reading and checking the files
    cdef set _retained                # queues with a retention period (publishes log the time)
    cdef Fanout _fanout               # the answers waiting for the last commit seen, or None

    cdef object _writable(self)
    cdef object _durable(self, object value)
    cdef long long _delay(self, str queue, long long delay_ms) except? -1
    cdef long long _sent(self, long long now)
    cdef long long _sent_for(self, str queue, long long now)


# The SQS face's receive rows with wall-clock times: a C function, no Python call per receive.
@cython.locals(row=tuple, out=list)
cdef list _epoch_rows(list rows, long long offset_ms)
