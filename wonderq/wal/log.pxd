# cython: language_level=3
# C types for log.py, compiled in Cython's pure-Python mode (the .py stays the readable
# source). What a durable publish or delete runs on the event loop is typed here: the
# pending frame's state as C fields and the append methods as C functions, so an append is
# a few field reads and list appends, not a dozen instance-dict lookups.

from wonderq.store cimport Log


cdef class Wal(Log):
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
    # the rest: written to by start, commit, the writer's callbacks, compaction and metrics
    # (no __dict__: a declared field is read in C and no call pays a check for overrides)
    cdef public object data_dir, fsync, compact_min_bytes, compact_ratio, snapshot_chunk
    cdef public object _wall_ms, _tick_s, _names, _cur, _ready, _inflight, _force_retry
    cdef public object _started, _id_reserved, _seq, _seg_pos, _old_bytes, _segments
    cdef public object _snapshot_bytes, _recovered, _source, _compaction, _compact_after
    cdef public object compactions, compaction_failures, fsync_failures, write_failures
    cdef public object last_snapshot_s, _writer, _wexec, _sexec, _tick, _last_sync

    # Log's methods (wonderq/store.pxd), as Wal defines them
    cpdef check_writable(self)
    cpdef append_publish(self, msg_id, str queue, body, long long delay_ms=*,
                         long long receives=*)
    cpdef append_send(self, msg_id, queue, body, delay_ms, sent_ms, attributes=*)
    cpdef append_receive(self, ids)
    cpdef append_delete(self, msg_id)
    cpdef append_delete_many(self, ids)
    cpdef commit(self)
    cdef list _group(self, queue, msg_id, body, delay_ms)
    cdef _publish_checks(self, msg_id)
