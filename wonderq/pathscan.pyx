# cython: language_level=3
"""The router's compares of a path against a route's literal parts, in C.

Router._match_params finds a queue route by its literal prefix, the ``{queue}`` segment and
the literal rest (``/v1/queues/`` + name + ``/messages``). With ``str.startswith``,
``str.find`` and ``str.endswith`` those three steps took ~820 instructions of a publish
spread over many queues, most of it CPython's generic ``PyUnicode_Tailmatch`` (callgrind,
bench/instructions.py's spread100k against spread1, where the router's last path hits).
A path as the protocol makes it is latin-1 text, one byte per character in memory: these
compare those bytes with a route's literals encoded as latin-1 (``memcmp``) and look for the
``/`` with ``memchr``. A str of wider characters (a caller's own) takes the str methods:
same answers.
"""

from libc.string cimport memchr, memcmp


cdef extern from "Python.h":
    int PyUnicode_KIND(object o)
    void* PyUnicode_DATA(object o)


cpdef Py_ssize_t segment_after(str path, bytes prefix) except -2:
    """The end of the non-empty segment that follows ``prefix`` at the start of ``path``
    (the index of the next ``/``, or the length), or -1 when ``path`` does not begin with
    ``prefix`` (latin-1) or the segment is empty."""
    cdef Py_ssize_t n = len(prefix)
    cdef Py_ssize_t length = len(path)
    cdef const char* data
    cdef const char* slash
    cdef Py_ssize_t end
    if length <= n:
        return -1
    if PyUnicode_KIND(path) != 1:
        if not path.startswith(prefix.decode("latin-1")):
            return -1
        end = path.find("/", n)
        end = length if end < 0 else end
        return end if end > n else -1
    data = <const char*>PyUnicode_DATA(path)
    if memcmp(data, <const char*>prefix, n) != 0:
        return -1
    slash = <const char*>memchr(data + n, 47, length - n)  # "/"
    end = length if slash == NULL else slash - data
    return end if end > n else -1


cpdef bint rest_is(str path, Py_ssize_t start, bytes rest) except -1:
    """Whether ``path[start:]`` is ``rest`` (latin-1), for ``0 <= start <= len(path)``."""
    cdef Py_ssize_t n = len(rest)
    if len(path) - start != n:
        return False
    if PyUnicode_KIND(path) != 1:
        return path.endswith(rest.decode("latin-1"))
    return memcmp(<const char*>PyUnicode_DATA(path) + start, <const char*>rest, n) == 0
