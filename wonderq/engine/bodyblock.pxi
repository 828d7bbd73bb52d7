# A big request body read straight into the block its message will have, so that a publish
# takes the block as it is instead of copying the body into a new one (bench/RESULTS.md, "Big
# messages": that copy was a fifth of a 1 MiB publish's CPU). wonderq.bodyread's BodyReader
# fills it from the socket when the router says the request is a publish on a store that
# offers blocks (Store.body_block); Broker.publish takes it when the body needs no escaping
# and the message has no attributes, else copies from it as from a bytes object.

from cpython.buffer cimport PyBuffer_FillInfo


cdef class BodyBlock:
    """``size`` bytes of body, writable through the buffer protocol, in a malloc'ed block laid
    out as a big message's (message.pxi: the payload length, the 24-byte header, the body).
    Once a message has taken the block it is empty (len 0, no buffer)."""

    cdef char* base       # the block, or NULL once taken
    cdef int64_t size     # bytes of body
    cdef int exports      # buffers handed out and not yet released (a block lent is not taken)

    def __cinit__(self, Py_ssize_t size):
        cdef int64_t total
        if size <= SLAB_MAX_BLOCK or size > C_MAX_MESSAGE_BYTES:
            raise ValueError(
                f"a body block holds {SLAB_MAX_BLOCK + 1}..{C_MAX_MESSAGE_BYTES} bytes")
        total = 8 + <int64_t>sizeof(Msg) + size
        self.base = <char*>malloc(total)
        if self.base == NULL:
            raise MemoryError()
        if size >= POPULATE_MIN_BYTES:
            populate_if_fresh(self.base, total)
        self.size = size

    def __dealloc__(self):
        free(self.base)

    def __len__(self):
        return self.size if self.base != NULL else 0

    def __bytes__(self):
        if self.base == NULL:
            return b""
        return PyBytes_FromStringAndSize(self.base + 8 + sizeof(Msg), self.size)

    def __getbuffer__(self, Py_buffer* buf, int flags):
        if self.base == NULL:
            raise BufferError("the block was taken by a message")
        PyBuffer_FillInfo(buf, self, self.base + 8 + sizeof(Msg), self.size, 0, flags)
        self.exports += 1

    def __releasebuffer__(self, Py_buffer* buf):
        self.exports -= 1

    cdef inline const uint8_t* text(self) except NULL:
        if self.base == NULL:
            raise InvalidArgument("the body was already taken by a message", "invalid_body")
        return <const uint8_t*>(self.base + 8 + sizeof(Msg))

    cdef inline Msg* take(self, int64_t msg_id, int64_t sent_ms) noexcept:
        """The block as the message ``msg_id`` holding the body as it is (the caller checked
        that it needs no escaping), or NULL while a buffer of it is lent out."""
        cdef Msg* m
        if self.base == NULL or self.exports:
            return NULL
        m = <Msg*>(self.base + 8)
        (<int64_t*>m)[-1] = self.size
        m.id = msg_id
        m.link.next = NULL
        m.times = MSG_BIG | time_word(sent_ms)
        self.base = NULL
        return m
