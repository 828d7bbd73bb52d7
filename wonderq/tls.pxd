# cython: language_level=3
# C types for tls.py, compiled in Cython's pure-Python mode (the .py stays the readable
# source): TlsReads calls HttpProtocol.data_received directly.

cimport cython

from wonderq.protocol cimport HttpProtocol

cdef Py_ssize_t _BUFFER_BYTES


@cython.final
cdef class TlsReads:
    cdef HttpProtocol _http
    cdef object _buffer              # the memoryview every TLS read is decrypted into
