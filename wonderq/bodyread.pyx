# cython: language_level=3
"""A big request body read by the kernel straight into the bytes object the request gets.

For a body of ``Content-Length`` >= ``BIG_BODY_BYTES`` still arriving when a read ends,
HttpProtocol hands the connection to a :class:`BodyReader` (``transport.set_protocol``) until
the last byte of the body is in. uvloop sees ``get_buffer``/``buffer_updated`` and reads the
socket into the buffer offered: the unfilled rest of one bytes object of the declared size.
Each byte of the body is then copied once, by the kernel, instead of four times (into
uvloop's bytes of each read, into httptools' bytes of each piece, into the join of the
pieces; perf in bench/RESULTS.md, "Big messages"). The reader never asks for more than the
body's rest, so what follows it (a pipelined request) stays in the socket for HttpProtocol.

For a publish on a store that offers them, the body is read into a block of the engine
instead (``_core.BodyBlock``, from ``app.body_block``): the message then takes that block as
it is, with no copy of the body at all.

The bytes object (or block) is written to only while this reader alone holds it, and is
handed on only when full. A transport without buffered reads (asyncio's, which calls
``data_received``) works too, with one copy per read.
"""

from cpython.buffer cimport (
    PyBUF_SIMPLE,
    PyBUF_WRITABLE,
    PyBuffer_FillInfo,
    PyBuffer_Release,
    PyObject_GetBuffer,
)
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.string cimport memcpy

# A body this long or longer is read straight into its bytes (the rest of it, once a read
# ends inside it). Smaller ones cost less as httptools' pieces.
BIG_BODY_BYTES = 32 * 1024


def take_over(conn, transport, Py_ssize_t size, body, new_block=None):
    """A BodyReader now reading the rest of the body of ``size`` bytes for ``conn``, of which
    ``body`` has come (None, one bytes, or a list of pieces); None if the body stays with
    ``conn``: it is small, complete, or the transport's protocol is not ``conn`` or cannot be
    handed over (TLS). ``new_block()``: a writable buffer of ``size`` bytes to read the body
    into (and hand on), or None for a new bytes object."""
    if size < BIG_BODY_BYTES:
        return None
    try:
        if transport.get_protocol() is not conn:
            return None
    except (AttributeError, NotImplementedError):
        return None
    reader = BodyReader(conn, size, None if new_block is None else new_block())
    if type(body) is list:
        for piece in body:
            reader.append(piece)
    elif body is not None:
        reader.append(body)
    if reader.missing() == 0:
        return None  # the message completes with the next read (cannot happen with llhttp)
    transport.set_protocol(reader)
    return reader


cdef class BodyReader:
    """The transport's protocol while the rest of one big body arrives; ``conn`` (the
    HttpProtocol) gets the body through ``_body_read(body)`` and everything else (the loss of
    the connection, EOF, write flow control) as it happens."""

    cdef object conn        # the HttpProtocol the body is for
    cdef object body        # bytes or a block, written up to ``filled``; None once handed on
    cdef char* dst          # where body's bytes are
    cdef Py_buffer view     # the block's buffer while it is read into
    cdef bint holds_view    # view is held (released once the body is in or dropped)
    cdef Py_ssize_t filled  # bytes of the body in so far
    cdef Py_ssize_t size    # the declared Content-Length

    def __cinit__(self, conn, Py_ssize_t size, block=None):
        self.conn = conn
        if block is None:
            self.body = PyBytes_FromStringAndSize(NULL, size)
            self.dst = PyBytes_AS_STRING(self.body)
        else:
            PyObject_GetBuffer(block, &self.view, PyBUF_SIMPLE | PyBUF_WRITABLE)
            if self.view.len != size:
                PyBuffer_Release(&self.view)
                raise ValueError("the block is not the body's size")
            self.holds_view = True
            self.body = block
            self.dst = <char*>self.view.buf
        self.size = size
        self.filled = 0

    def __dealloc__(self):
        self._release()

    cdef void _release(self) noexcept:
        """Give the block's buffer back: nothing is written to it any more."""
        if self.holds_view:
            self.holds_view = False
            PyBuffer_Release(&self.view)

    def append(self, bytes piece):
        """Copy in a piece that arrived before the reader took over (HttpProtocol's)."""
        cdef Py_ssize_t n = PyBytes_GET_SIZE(piece)
        if self.body is None or n > self.size - self.filled:
            raise ValueError("more body than declared")
        memcpy(self.dst + self.filled, PyBytes_AS_STRING(piece), n)
        self.filled += n

    def missing(self):
        """Bytes of the body still to come."""
        return self.size - self.filled

    def cancel(self):
        """Drop the body (the connection failed or closed): nothing more is read into it."""
        self._release()
        self.body = None
        self.filled = self.size

    # ---- uvloop's buffered reading -------------------------------------------------------

    def get_buffer(self, sizehint):
        if self.body is None:
            raise RuntimeError("the body reader was cancelled")
        return self

    def __getbuffer__(self, Py_buffer* buf, int flags):
        PyBuffer_FillInfo(buf, self, self.dst + self.filled, self.size - self.filled, 0, flags)

    def __releasebuffer__(self, Py_buffer* buf):
        pass

    def buffer_updated(self, Py_ssize_t nbytes):
        self.filled += nbytes
        self._progress()

    cdef _progress(self):
        if self.filled < self.size:
            self.conn._body_progress()
            return
        body = self.body
        self.body = None
        self._release()
        if body is not None:
            self.conn._body_read(body)

    # ---- a plain transport ----------------------------------------------------------------

    def data_received(self, data):
        cdef Py_ssize_t n = len(data)
        cdef Py_ssize_t take
        cdef bytes chunk
        if self.body is None:
            self.conn.data_received(data)
            return
        take = min(n, self.size - self.filled)
        chunk = bytes(data[:take]) if take < n or type(data) is not bytes else data
        memcpy(self.dst + self.filled, PyBytes_AS_STRING(chunk), take)
        self.filled += take
        self._progress()
        if take < n:
            self.conn.data_received(data[take:])

    # ---- the rest goes to the connection ------------------------------------------------

    def connection_made(self, transport):
        pass

    def connection_lost(self, exc):
        self._release()
        self.body = None
        self.conn.connection_lost(exc)

    def eof_received(self):
        return self.conn.eof_received()

    def pause_writing(self):
        self.conn.pause_writing()

    def resume_writing(self):
        self.conn.resume_writing()
