# cython: language_level=3
# C types for log.py, compiled in Cython's pure-Python mode (the .py stays the readable
# source). What a durable publish or delete runs on the event loop is typed here: the
# pending frame's state as C fields and the append methods as C functions, so an append is
# a few field reads and list appends, not a dozen instance-dict lookups. Everything else
# (start, compaction, metrics, close) keeps its attributes in the instance __dict__.

cimport cython

from wonderq.store cimport Log


@cython.final
cdef class Wal(Log):
    cdef dict __dict__              # the attributes not declared here
    cdef public bint _always        # --fsync always: answers wait for the group commit
    # the pending frame (see _seal)
    cdef public dict _pub           # queue -> [ids, bodies, optional columns] (_group)
    cdef public list _mid           # [kind, queue | None | times, ids] groups
    cdef public list _dels          # deleted ids
    cdef public list _misc          # encoded next-id sections
    cdef public Py_ssize_t _frame_bytes
    cdef public Py_ssize_t _frame_limit  # FRAME_SOFT_LIMIT: seal the frame past this
    cdef public object _pq          # the queue of the last publish group, or None
    cdef public list _pids          # ... its ids
    cdef public list _pbodies       # ... its bodies
    cdef public bint _pslow         # ... it carries delays, receives or sent times
    cdef public object _id_mark     # int: a publish from this id on reserves more ids
    cdef public object _end_of_turn  # the scheduled end-of-turn flush, or None
    cdef public object _loop        # the event loop once started
    cdef public object _failed      # the WalError while the log cannot be written, or None
    cdef public bint _closed

    # and the append methods of Log (wonderq/store.pxd)
    cdef list _group(self, queue, msg_id, body, delay_ms)
    cdef _publish_checks(self, msg_id)
