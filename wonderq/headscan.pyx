# cython: language_level=3
"""The ``Authorization`` line of a native request, lifted out of its head before llhttp.

With access control on, every request carries ``Authorization: Bearer <token>``. Handed to
httptools, that one line costs ~1,300 instructions of a ~14,000-instruction publish: llhttp
walks its bytes, httptools makes bytes objects of its name and value and calls the protocol's
``on_header`` through Python (callgrind, bench/instructions.py's ``publish_token`` against
a publish with a dummy header of the same size). Here a read that starts a ``/v1/`` request
is scanned line by line in C up to its ``Authorization`` line; the value is taken and the
rest of the read goes to llhttp without that line (~550 instructions, most of them the copy
of the read).

Only the unambiguous case is lifted: the exact spelling ``Authorization: `` at the start of a
header line, a value of visible ASCII and spaces that does not start with a space (llhttp
skips leading spaces and keeps trailing ones), its CRLF and the byte after it in this read,
no folded line after it. llhttp reads such a line as exactly this header with exactly this
value. Anything else (another casing, tabs, bytes llhttp may refuse, a line cut by the read,
the requests pipelined after the first) goes through llhttp and ``on_header`` as before, so
the answers are the same either way: tests/test_fast_paths.py, section (h), feeds both paths
and compares.
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint64_t
from libc.string cimport memchr, memcmp, memcpy

cdef enum:
    _SCAN_BYTES = 8192  # heads are scanned this far; a longer one goes through llhttp
    _NAME_BYTES = 15  # len(b"Authorization: ")
    _MAX_VALUE = 512  # a longer value goes through llhttp (and is not kept in _shared)
    _SHARED_VALUES = 1024  # bound of _shared

# One bytes object per distinct value lifted, shared by every connection that sends it: the
# router's last decision is then found by identity (Router._authorize). Emptied when full.
cdef dict _shared = {}


cdef inline bint _native_target(const char* p, Py_ssize_t n):
    """The read starts "<METHOD> /v1/": a request of the native routes, which keep no headers
    (the SQS face's requests keep theirs, Authorization included, for SigV4)."""
    cdef Py_ssize_t i = 0
    while i < 8 and i < n and b'A' <= p[i] <= b'Z':
        i += 1
    return i >= 3 and i + 5 <= n and p[i] == b' ' and memcmp(p + i + 1, b"/v1/", 4) == 0


cdef inline bint _visible_ascii(const char* value, Py_ssize_t size):
    """Every byte of ``value`` is SP or visible ASCII (0x20-0x7E): tested 8 bytes at a time,
    as a bit trick on the word (a byte below 0x20, or one at 0x7F or above)."""
    cdef uint64_t word
    cdef uint64_t bad = 0
    cdef Py_ssize_t i = 0
    while i + 8 <= size:
        memcpy(&word, value + i, 8)
        bad |= ((word - 0x2020202020202020ULL) & ~word) | (word + 0x0101010101010101ULL) | word
        i += 8
    while i < size:
        if <unsigned char>value[i] < 0x20 or <unsigned char>value[i] > 0x7E:
            return False
        i += 1
    return (bad & 0x8080808080808080ULL) == 0


cdef inline bint _equal(const char* a, const char* b, Py_ssize_t n):
    """The n bytes at a and b are equal, in a time that depends on n only, never on where
    they differ (as ``hmac.compare_digest``): what a connection remembers of an
    Authorization header is compared with this, so timing cannot reveal a prefix of another
    client's token sent on the same connection (behind a proxy, one upstream connection
    carries several clients)."""
    cdef const unsigned char* x = <const unsigned char*>a
    cdef const unsigned char* y = <const unsigned char*>b
    cdef uint64_t u, v
    cdef uint64_t diff = 0
    cdef Py_ssize_t i = 0
    while i + 8 <= n:
        memcpy(&u, x + i, 8)
        memcpy(&v, y + i, 8)
        diff |= u ^ v
        i += 8
    while i < n:
        diff |= x[i] ^ y[i]
        i += 1
    return diff == 0


cdef bytes _share(bytes value):
    shared = _shared.get(value)
    if shared is not None:
        return shared
    if len(_shared) >= _SHARED_VALUES:
        _shared.clear()
    _shared[value] = value
    return value


@cython.final
cdef class Lifter:
    """A connection's scanner: :meth:`lift` takes the line, :attr:`value` keeps its value. A
    client sends the same token on every request of a connection: ``value`` stays the same
    bytes object while it does (one object for all the connections that send it), so the
    router's cache finds its hash already computed, or its last decision by identity."""

    def __cinit__(self):
        self.value = None

    cpdef bytes keep(self, bytes value):
        """An Authorization value that came through llhttp (``on_header``): the object kept
        for it, now :attr:`value`."""
        return self._keep(PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value), value)

    cdef bytes _keep(self, const char* value, Py_ssize_t size, bytes made):
        """The kept object for the ``size`` bytes at ``value``: :attr:`value` if they are
        the same (compared in constant time), else a new one (``made`` if not None), shared
        with the other connections unless longer than _MAX_VALUE."""
        cdef bytes last = self.value
        if (
            last is not None
            and PyBytes_GET_SIZE(last) == size
            and _equal(PyBytes_AS_STRING(last), value, size)
        ):
            return last
        if made is None:
            made = PyBytes_FromStringAndSize(value, size)
        self.value = _share(made) if size <= _MAX_VALUE else made
        return self.value

    cpdef object lift(self, bytes data):
        """``data`` (a read that starts a message) without its ``Authorization`` line, the
        value of which is now :attr:`value`; None if the line is not there plainly (see the
        module's docstring): then ``data`` goes to llhttp as it is."""
        cdef const char* p = PyBytes_AS_STRING(data)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
        if not _native_target(p, n):
            return None
        cdef const char* end = p + (n if n < _SCAN_BYTES else _SCAN_BYTES)
        cdef const char* line = p
        cdef const char* cr
        cdef const char* value
        while True:
            # The line that starts at ``line``: a header line, since the request line comes
            # first and the scan stops at the empty line. A second Authorization line after
            # a lifted one goes through on_header, which refuses it as llhttp's path does.
            cr = <const char*>memchr(line, b'\r', end - line)
            if cr == NULL or end - cr < 3 or cr[1] != b'\n':
                return None  # the head goes on past this read (or a bare CR: llhttp's to refuse)
            if cr == line:
                return None  # the empty line: the head has no Authorization line
            if (
                line[0] == b'A'
                and cr - line > _NAME_BYTES
                and memcmp(line, b"Authorization: ", _NAME_BYTES) == 0
            ):
                break
            line = cr + 2
        value = line + _NAME_BYTES
        cdef Py_ssize_t size = cr - value
        if (
            size > _MAX_VALUE
            or value[0] == b' '  # llhttp skips it (it keeps trailing spaces)
            or cr[2] == b' '
            or cr[2] == b'\t'  # a folded line would continue the value
            or not _visible_ascii(value, size)
        ):
            return None
        self._keep(value, size, None)
        # The line and the CRLF before it go; the CRLF after it ends the line before.
        cdef Py_ssize_t before = (line - 2) - p
        cdef Py_ssize_t after = n - (cr - p)
        cdef bytes rest = PyBytes_FromStringAndSize(NULL, before + after)
        cdef char* out = PyBytes_AS_STRING(rest)
        memcpy(out, p, before)
        memcpy(out + before, cr, after)
        return rest
