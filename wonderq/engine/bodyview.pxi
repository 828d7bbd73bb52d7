# A receive's answer that sends big bodies from the messages' own blocks. build_response copies
# every body into one bytes object, which for a 64 KiB body was the biggest piece of the
# server's own CPU after the kernel's (perf: memmove 9% of its samples, bench/RESULTS.md, "Big
# messages"). An escaped body of VIEW_MIN_BYTES or more is instead handed out as a BodyView, a
# read-only buffer of the block, and the answer is a SplitBody: its pieces in order, which the
# protocol gives the transport as they are (one writev). A transport may hold a view after the
# message is deleted (a client that reads slowly), so a big block counts the views of it that
# are alive (big_views): a message freed while viewed leaves its block to the last view.


cdef class BodyView:
    """A read-only buffer of the escaped body of a big message, holding its block alive.
    Made by the engine only (body_view)."""

    cdef Msg* m           # the block, NULL for a view made from Python (no buffer)
    cdef Py_ssize_t size  # bytes of escaped body

    def __dealloc__(self):
        if self.m != NULL:
            big_unview(self.m)

    def __len__(self):
        return self.size

    def __bytes__(self):
        if self.m == NULL:
            return b""
        return PyBytes_FromStringAndSize(msg_body(self.m), self.size)

    def __getbuffer__(self, Py_buffer* buf, int flags):
        if self.m == NULL:
            raise BufferError("a BodyView comes from the engine only")
        PyBuffer_FillInfo(buf, self, msg_body(self.m), self.size, 1, flags)

    def __releasebuffer__(self, Py_buffer* buf):
        pass


cdef BodyView body_view(Msg* m, Py_ssize_t size):
    """A view of the first ``size`` bytes of the body of the big message m."""
    cdef BodyView v = BodyView.__new__(BodyView)
    v.m = m
    v.size = size
    big_views(m)[0] += 1
    return v


cdef class SplitBody:
    """An answer's body in pieces, in order: bytes objects and BodyViews. ``len()`` is the
    whole body's length in bytes and ``bytes()`` joins it."""

    cdef readonly tuple pieces
    cdef readonly Py_ssize_t size

    def __len__(self):
        return self.size

    def __bytes__(self):
        return b"".join(self.pieces)

    def __repr__(self):
        return f"<SplitBody {self.size} bytes in {len(self.pieces)} pieces>"


cdef inline void prefetch_next_body(Msg* m) noexcept nogil:
    """Start loading the first PREFETCH_BYTES of the body of m, the next message a receive
    of its queue will answer, if it is a big one: its block is cold in a deep queue."""
    cdef char* p
    cdef int64_t i, n
    if not (m.times & MSG_BIG):
        return
    p = msg_body(m)
    n = msg_payload(m)
    if n > PREFETCH_BYTES:
        n = PREFETCH_BYTES
    i = 0
    while i < n:
        __builtin_prefetch(p + i)
        i += 64
