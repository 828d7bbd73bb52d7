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
    void wq_md5_hex_many(char *out, const uint8_t **p, const size_t *n, int count) noexcept nogil
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


def md5_hex_many(list datas not None) -> list:
    """Hex MD5s of up to 16 ``bytes`` (the batch way: four at a time)."""
    cdef const uint8_t* p[16]
    cdef size_t n[16]
    cdef char out[16 * 32]
    cdef int k, count = len(datas)
    if count > 16:
        raise ValueError("at most 16 at once")
    for k in range(count):
        data = datas[k]
        if type(data) is not bytes:
            raise TypeError("bytes expected")
        p[k] = <const uint8_t*>PyBytes_AS_STRING(data)
        n[k] = <size_t>PyBytes_GET_SIZE(data)
    wq_md5_hex_many(out, p, n, count)
    return [out[32 * k:32 * k + 32].decode("ascii") for k in range(count)]


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
