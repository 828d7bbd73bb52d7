# A big request body read straight into the block its message will have, so that a publish
# takes the block as it is instead of copying the body into a new one (bench/RESULTS.md, "Big
# messages": that copy was a fifth of a 1 MiB publish's CPU). wonderq.bodyread's BodyReader
# fills it from the socket when the router says the request is a publish on a store that
# offers blocks (Store.body_block); Broker.publish takes it when the body needs no escaping
# and the message has no attributes, else copies from it as from a bytes object.

from cpython.buffer cimport PyBuffer_FillInfo


cdef class BodyBlock:
    """``size`` bytes of body, writable through the buffer protocol, in the block of a big
    message (message.pxi, big_alloc: the payload length, the 24-byte header, the body).
    Once a message has taken the block it is empty (len 0, no buffer)."""

    cdef Msg* m           # the block, or NULL once taken
    cdef int64_t size     # bytes of body
    cdef int exports      # buffers handed out and not yet released (a block lent is not taken)

    def __cinit__(self, Py_ssize_t size):
        if size <= SLAB_MAX_BLOCK or size > C_MAX_MESSAGE_BYTES:
            raise ValueError(
                f"a body block holds {SLAB_MAX_BLOCK + 1}..{C_MAX_MESSAGE_BYTES} bytes")
        self.m = big_alloc(size)
        if self.m == NULL:
            raise MemoryError()
        self.size = size

    def __dealloc__(self):
        if self.m != NULL:
            msg_free_big(self.m)

    def __len__(self):
        return self.size if self.m != NULL else 0

    def __bytes__(self):
        if self.m == NULL:
            return b""
        return PyBytes_FromStringAndSize(msg_body(self.m), self.size)

    def __getbuffer__(self, Py_buffer* buf, int flags):
        if self.m == NULL:
            raise BufferError("the block was taken by a message")
        PyBuffer_FillInfo(buf, self, msg_body(self.m), self.size, 0, flags)
        self.exports += 1

    def __releasebuffer__(self, Py_buffer* buf):
        self.exports -= 1

    cdef inline const uint8_t* text(self) except NULL:
        if self.m == NULL:
            raise InvalidArgument("the body was already taken by a message", "invalid_body")
        return <const uint8_t*>msg_body(self.m)

    cdef inline Msg* take(self, int64_t msg_id, int64_t sent_ms) noexcept:
        """The block as the message ``msg_id`` holding the body as it is (the caller checked
        that it needs no escaping), or NULL while a buffer of it is lent out."""
        cdef Msg* m = self.m
        if m == NULL or self.exports:
            return NULL
        msg_start(m, msg_id, sent_ms)
        self.m = NULL
        return m
