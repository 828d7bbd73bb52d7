# UTF-8 validation, JSON escaping and the JSON the engine reads and writes itself: batch
# bodies, ack bodies, and the receive / publish answers, all built in C.

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport INT64_MAX, UINT32_MAX
from libc.stdlib cimport free, malloc
from libc.string cimport memchr, memcmp, memcpy

cdef extern from *:
    """
    /* Length of the longest prefix of s made of bytes JSON leaves alone and that need no UTF-8
       check: ASCII >= 0x20, not a quote (0x22) or a backslash (0x5C). SSE2 looks at 16 bytes
       per step (signed compare: bytes >= 0x80 count as < 0x20 and stop the run); elsewhere it
       returns 0 and the caller's 8-byte loop does the work. */
    #if defined(__SSE2__)
    #include <emmintrin.h>
    #if defined(__GNUC__) && defined(__x86_64__)
    #include <immintrin.h>
    #define WQ_AVX2_MIN 512
    /* The same test 32 bytes per step, for long runs (a big message body: the scan was 9% of
       a 64 KiB publish, perf) on CPUs with AVX2; runs shorter than WQ_AVX2_MIN keep the SSE2
       loop alone, so small bodies cost the same instructions as before. */
    __attribute__((target("avx2")))
    static Py_ssize_t wq_plain_prefix_avx2(const unsigned char *s, Py_ssize_t n) {
        const __m256i low = _mm256_set1_epi8(0x20), quote = _mm256_set1_epi8(0x22),
                      bslash = _mm256_set1_epi8(0x5C);
        Py_ssize_t i = 0;
        for (; i + 32 <= n; i += 32) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(s + i));
            __m256i bad = _mm256_or_si256(_mm256_cmpgt_epi8(low, v),
                                          _mm256_or_si256(_mm256_cmpeq_epi8(v, quote),
                                                          _mm256_cmpeq_epi8(v, bslash)));
            unsigned mask = (unsigned)_mm256_movemask_epi8(bad);
            if (mask) return i + __builtin_ctz(mask);
        }
        return i;
    }
    static int wq_avx2 = -1;  /* unknown until the first long run */
    #endif
    static inline Py_ssize_t wq_plain_prefix(const unsigned char *s, Py_ssize_t n) {
        const __m128i low = _mm_set1_epi8(0x20), quote = _mm_set1_epi8(0x22),
                      bslash = _mm_set1_epi8(0x5C);
        Py_ssize_t i = 0;
    #if defined(__GNUC__) && defined(__x86_64__)
        if (n >= WQ_AVX2_MIN) {
            if (wq_avx2 < 0) wq_avx2 = __builtin_cpu_supports("avx2") ? 1 : 0;
            if (wq_avx2) {
                i = wq_plain_prefix_avx2(s, n);
                if (i + 32 <= n) return i;  /* stopped at a byte to look at */
            }
        }
    #endif
        for (; i + 16 <= n; i += 16) {
            __m128i v = _mm_loadu_si128((const __m128i *)(s + i));
            __m128i bad = _mm_or_si128(_mm_cmplt_epi8(v, low),
                                       _mm_or_si128(_mm_cmpeq_epi8(v, quote),
                                                    _mm_cmpeq_epi8(v, bslash)));
            int mask = _mm_movemask_epi8(bad);
            if (mask) return i + __builtin_ctz(mask);
        }
        return i;
    }
    #else
    static inline Py_ssize_t wq_plain_prefix(const unsigned char *s, Py_ssize_t n) {
        (void)s; (void)n; return 0;
    }
    #endif
    """
    Py_ssize_t wq_plain_prefix(const uint8_t* s, Py_ssize_t n) noexcept nogil


# Extra bytes json.dumps(ensure_ascii=False) adds for each byte: 1 for \" \\ \b \t \n \f \r,
# 5 for other control characters (\u00XX), 0 otherwise (UTF-8 lead/continuation bytes included).
cdef uint8_t ESC_EXTRA[256]
cdef const char* HEX_DIGITS = b"0123456789abcdef"


cdef void esc_init() noexcept:
    cdef int c
    for c in range(256):
        ESC_EXTRA[c] = 5 if c < 0x20 else 0
    for c in (0x22, 0x5C, 0x08, 0x09, 0x0A, 0x0C, 0x0D):
        ESC_EXTRA[c] = 1


esc_init()

# SWAR masks: a word of 8 plain bytes (ASCII, >= 0x20, not '"' or '\\') skips all checks.
cdef uint64_t ONES = 0x0101010101010101ULL
cdef uint64_t HIGHS = 0x8080808080808080ULL


cdef inline bint word_is_plain(uint64_t w) noexcept nogil:
    cdef uint64_t q = w ^ (ONES * 0x22)
    cdef uint64_t b = w ^ (ONES * 0x5C)
    cdef uint64_t special = (
        w | ((w - ONES * 0x20) & ~w) | ((q - ONES) & ~q) | ((b - ONES) & ~b)
    )
    return (special & HIGHS) == 0


cdef inline bint is_cont(uint8_t c) noexcept nogil:
    return (c & 0xC0) == 0x80


cdef int64_t utf8_escaped_len(const uint8_t* s, int64_t n) noexcept nogil:
    """Length of the JSON-escaped form of s, or -1 if s is not strict UTF-8 (as Python's decoder:
    no overlongs, no surrogates, nothing above U+10FFFF, no truncated sequence)."""
    cdef int64_t i = 0
    cdef int64_t extra = 0
    cdef uint64_t w
    cdef uint8_t c, c1
    while i < n:
        i += wq_plain_prefix(s + i, n - i)  # 16 bytes per step (SSE2 builds)
        if i >= n:
            break
        if i + 8 <= n:
            memcpy(&w, s + i, 8)
            if word_is_plain(w):
                i += 8
                continue
        c = s[i]
        if c < 0x80:
            extra += ESC_EXTRA[c]
            i += 1
        elif c < 0xC2:
            return -1
        elif c < 0xE0:
            if i + 1 >= n or not is_cont(s[i + 1]):
                return -1
            i += 2
        elif c < 0xF0:
            if i + 2 >= n:
                return -1
            c1 = s[i + 1]
            if c == 0xE0:
                if c1 < 0xA0 or c1 > 0xBF:
                    return -1
            elif c == 0xED:
                if c1 < 0x80 or c1 > 0x9F:
                    return -1
            elif not is_cont(c1):
                return -1
            if not is_cont(s[i + 2]):
                return -1
            i += 3
        elif c < 0xF5:
            if i + 3 >= n:
                return -1
            c1 = s[i + 1]
            if c == 0xF0:
                if c1 < 0x90 or c1 > 0xBF:
                    return -1
            elif c == 0xF4:
                if c1 < 0x80 or c1 > 0x8F:
                    return -1
            elif not is_cont(c1):
                return -1
            if not is_cont(s[i + 2]) or not is_cont(s[i + 3]):
                return -1
            i += 4
        else:
            return -1
    return n + extra


cdef void json_escape_into(char* out, const uint8_t* s, int64_t n) noexcept nogil:
    """Write s (valid UTF-8) escaped as json.dumps(ensure_ascii=False) does, without quotes."""
    cdef int64_t i
    cdef uint8_t c
    for i in range(n):
        c = s[i]
        if ESC_EXTRA[c] == 0:
            out[0] = <char>c
            out += 1
        elif ESC_EXTRA[c] == 1:
            out[0] = b'\\'
            if c == 0x22 or c == 0x5C:
                out[1] = <char>c
            elif c == 0x08:
                out[1] = b'b'
            elif c == 0x09:
                out[1] = b't'
            elif c == 0x0A:
                out[1] = b'n'
            elif c == 0x0C:
                out[1] = b'f'
            else:
                out[1] = b'r'
            out += 2
        else:
            memcpy(out, b"\\u00", 4)
            out[4] = HEX_DIGITS[c >> 4]
            out[5] = HEX_DIGITS[c & 15]
            out += 6


cdef inline int hex_value(char c) noexcept nogil:
    return c - 48 if c <= b'9' else c - 87  # '0'..'9', 'a'..'f' (json_escape_into's digits)


cdef bytes json_unescape(const char* s, int64_t n):
    """The raw body back from its escaped form (only the escapes json_escape_into writes)."""
    cdef int64_t i = 0
    cdef int64_t raw = 0
    cdef char* p
    cdef char c
    if memchr(s, b'\\', n) == NULL:
        return PyBytes_FromStringAndSize(s, n)
    while i < n:
        i += (6 if s[i + 1] == b'u' else 2) if s[i] == b'\\' else 1
        raw += 1
    out = PyBytes_FromStringAndSize(NULL, raw)
    p = PyBytes_AS_STRING(out)
    i = 0
    while i < n:
        c = s[i]
        if c != b'\\':
            p[0] = c
            i += 1
        else:
            c = s[i + 1]
            if c == b'u':
                p[0] = <char>(hex_value(s[i + 4]) * 16 + hex_value(s[i + 5]))
                i += 6
            else:
                p[0] = (b'\b' if c == b'b' else b'\t' if c == b't' else b'\n' if c == b'n'
                        else b'\f' if c == b'f' else b'\r' if c == b'r' else c)
                i += 2
        p += 1
    return out


cdef inline const uint8_t* bytes_ptr(bytes b) noexcept:
    return <const uint8_t*>PyBytes_AS_STRING(b)


cdef inline int64_t body_escaped_len(bytes body, int64_t max_bytes) except -1:
    """Validate a body (1..max_bytes bytes of UTF-8); return its escaped length."""
    return text_escaped_len(bytes_ptr(body), PyBytes_GET_SIZE(body), max_bytes)


cdef inline int64_t text_escaped_len(const uint8_t* s, int64_t n, int64_t max_bytes) except -1:
    """body_escaped_len of the ``n`` bytes at ``s``."""
    cdef int64_t esc
    if n == 0:
        raise InvalidArgument("body must not be empty", "invalid_body")
    if n > max_bytes:
        raise MessageTooLarge(f"body is {n} bytes, more than max_message_bytes ({max_bytes})")
    esc = utf8_escaped_len(s, n)
    if esc < 0:
        raise InvalidArgument("body must be valid UTF-8", "invalid_body")
    if esc > UINT32_MAX:
        raise MessageTooLarge("body is too large once escaped")
    return esc


cdef inline int64_t skip_json_ws(const uint8_t* s, int64_t i, int64_t n) noexcept nogil:
    while i < n and (s[i] == b' ' or s[i] == b'\n' or s[i] == b'\r' or s[i] == b'\t'):
        i += 1
    return i


cdef int64_t split_plain_strings(const uint8_t* s, int64_t n, const uint8_t** starts,
                                 int64_t* lens, int64_t max_items) noexcept nogil:
    """The strings of a JSON array of 1..max_items strings without a backslash: their texts
    into starts/lens, returning how many; 0 when ``s`` is anything else (the caller parses it
    the general way). The texts are not checked here (UTF-8, control characters)."""
    cdef int64_t i = skip_json_ws(s, 0, n)
    cdef int64_t count = 0
    cdef const uint8_t* quote
    if i >= n or s[i] != b'[':
        return 0
    i = skip_json_ws(s, i + 1, n)
    while True:
        if i >= n or s[i] != b'"' or count == max_items:
            return 0
        i += 1
        quote = <const uint8_t*>memchr(s + i, b'"', n - i)
        if quote == NULL or memchr(s + i, b'\\', quote - (s + i)) != NULL:
            return 0
        starts[count] = s + i
        lens[count] = quote - (s + i)
        count += 1
        i = skip_json_ws(s, quote - s + 1, n)
        if i < n and s[i] == b',':
            i = skip_json_ws(s, i + 1, n)
        elif i < n and s[i] == b']':
            return count if skip_json_ws(s, i + 1, n) == n else 0
        else:
            return 0


cdef inline bint is_digit(uint8_t c) noexcept nogil:
    return <uint8_t>(c - 48) < 10


cdef int64_t parse_json_id(const uint8_t* s, int64_t* pos, int64_t n) noexcept nogil:
    """The JSON integer at s[pos[0]] (no sign, fraction or exponent; at most INT64_MAX),
    moving pos past it; -1 for anything else."""
    cdef int64_t i = pos[0]
    cdef int64_t start = i
    cdef uint64_t v = 0
    while i < n and is_digit(s[i]) and i - start < 19:
        v = v * 10 + (s[i] - 48)
        i += 1
    if (i == start or (s[start] == 48 and i - start > 1) or v > <uint64_t>INT64_MAX
            or (i < n and (is_digit(s[i]) or s[i] == b'.' or s[i] == b'e' or s[i] == b'E'))):
        return -1
    pos[0] = i
    return <int64_t>v


cdef int64_t parse_ack(const uint8_t* s, int64_t n, int64_t* cid, int64_t* ids,
                       int64_t max_ids) noexcept nogil:
    """``{"cid": C, "ids": [I, ...]}`` (either order, JSON whitespace anywhere): C into cid,
    the 1..max_ids ids (each >= 1) into ids, returning how many; 0 for anything else."""
    cdef int64_t i = skip_json_ws(s, 0, n)
    cdef int64_t count = 0
    cdef int64_t v
    cdef bint seen_cid = False
    if i >= n or s[i] != b'{':
        return 0
    i = skip_json_ws(s, i + 1, n)
    while True:
        if i + 5 > n or s[i] != b'"' or s[i + 4] != b'"':
            return 0
        if memcmp(s + i + 1, b"cid", 3) == 0 and not seen_cid:
            seen_cid = True
            i = skip_json_ws(s, i + 5, n)
            if i >= n or s[i] != b':':
                return 0
            i = skip_json_ws(s, i + 1, n)
            cid[0] = parse_json_id(s, &i, n)
            if cid[0] < 0:
                return 0
        elif memcmp(s + i + 1, b"ids", 3) == 0 and count == 0:
            i = skip_json_ws(s, i + 5, n)
            if i >= n or s[i] != b':':
                return 0
            i = skip_json_ws(s, i + 1, n)
            if i >= n or s[i] != b'[':
                return 0
            while True:
                i = skip_json_ws(s, i + 1, n)
                v = parse_json_id(s, &i, n)
                if v < 1 or count == max_ids:
                    return 0
                ids[count] = v
                count += 1
                i = skip_json_ws(s, i, n)
                if i < n and s[i] == b']':
                    break
                if i >= n or s[i] != b',':
                    return 0
            i += 1
        else:
            return 0
        i = skip_json_ws(s, i, n)
        if i < n and s[i] == b',':
            i = skip_json_ws(s, i + 1, n)
        elif i < n and s[i] == b'}':
            if not seen_cid or count == 0 or skip_json_ws(s, i + 1, n) != n:
                return 0
            return count
        else:
            return 0


cdef char* write_ids(char* p, const int64_t* ids, const int64_t* flags, int64_t n,
                     int64_t flag) noexcept nogil:
    """The ids whose flag is ``flag``, comma-separated."""
    cdef char* start = p
    cdef int64_t i
    for i in range(n):
        if flags[i] == flag:
            if p != start:
                p[0] = b','
                p += 1
            p = write_u64(p, <uint64_t>ids[i], digits_u64(<uint64_t>ids[i]))
    return p


cpdef bytes batch_ids_json(int64_t first, int64_t n):
    """``{"ids":[first,...,first+n-1]}``, a batch publish's answer, in one allocation."""
    if first < 1 or n < 1 or first > C_MAX_ID - n + 1:
        raise ValueError("the ids of a batch are 1 or more of 1..MAX_ID")
    cdef int64_t size = 8 + 2 + (n - 1)
    cdef int64_t i
    cdef char* p
    for i in range(n):
        size += digits_u64(<uint64_t>(first + i))
    out = PyBytes_FromStringAndSize(NULL, size)
    p = PyBytes_AS_STRING(out)
    p = put(p, b'{"ids":[', 8)
    for i in range(n):
        if i:
            p[0] = b','
            p += 1
        p = write_u64(p, <uint64_t>(first + i), digits_u64(<uint64_t>(first + i)))
    put(p, b']}', 2)
    return out


# ---- answers ---------------------------------------------------------------------------------

cdef inline int digits_u64(uint64_t v) noexcept nogil:
    cdef int d = 1
    while v >= 10:
        v //= 10
        d += 1
    return d


cdef inline char* write_u64(char* p, uint64_t v, int d) noexcept nogil:
    cdef char* end = p + d
    cdef char* q = end
    while True:
        q -= 1
        q[0] = <char>(48 + v % 10)
        v //= 10
        if v == 0:
            break
    return end


cdef inline char* put(char* p, const char* s, Py_ssize_t n) noexcept nogil:
    memcpy(p, s, n)
    return p + n


cdef inline uint32_t shown_receives(Msg* m, bint received, LeaseTable* receipts) noexcept nogil:
    cdef uint32_t r = msg_receipt(receipts, m).receives
    return receives_after(r) if received else r


cdef inline char* put_message_head(char* p, Msg* m) noexcept nogil:
    """``{"id":<id>,"body":"`` of m (after its comma, if any)."""
    p = put(p, b'{"id":', 6)
    p = write_u64(p, <uint64_t>m.id, digits_u64(<uint64_t>m.id))
    return put(p, b',"body":"', 9)


cdef inline char* put_message_tail(char* p, Msg* m, bint received,
                                   LeaseTable* receipts) noexcept nogil:
    """``","receives":<n>}`` of m."""
    cdef uint32_t r = shown_receives(m, received, receipts)
    p = put(p, b'","receives":', 13)
    p = write_u64(p, r, digits_u64(r))
    p[0] = b'}'
    return p + 1


cdef object build_response(Msg** msgs, int64_t n, bint received, LeaseTable* receipts):
    """``{"messages":[{"id":..,"body":"..","receives":..},...]}`` with each receive count as it
    will be after this receive (``received``) or as it is (a peek); ``receipts`` is the
    broker's receipt table. One allocation, no Python object per message; a SplitBody
    (bodyview.pxi) instead when a body is VIEW_MIN_BYTES or more."""
    cdef int64_t size = 13 + 2 + (n - 1)
    cdef int64_t viewed = 0
    cdef int64_t i, body_len
    cdef Msg* m
    cdef char* p
    for i in range(n):
        m = msgs[i]
        body_len = msg_body_len(m)
        if body_len >= VIEW_MIN_BYTES:
            viewed += body_len
        size += (6 + digits_u64(<uint64_t>m.id) + 9 + body_len + 13
                 + digits_u64(shown_receives(m, received, receipts)) + 1)
    if viewed:
        return build_split_response(msgs, n, received, receipts, size, viewed)
    out = PyBytes_FromStringAndSize(NULL, size)
    p = PyBytes_AS_STRING(out)
    p = put(p, b'{"messages":[', 13)
    for i in range(n):
        m = msgs[i]
        if i:
            p[0] = b','
            p += 1
        p = put_message_head(p, m)
        p = put(p, msg_body(m), msg_body_len(m))
        p = put_message_tail(p, m, received, receipts)
    put(p, b']}', 2)
    return out


cdef SplitBody build_split_response(Msg** msgs, int64_t n, bint received, LeaseTable* receipts,
                                    int64_t size, int64_t viewed):
    """build_response's answer of ``size`` bytes as a SplitBody: the ``viewed`` bytes of
    bodies of VIEW_MIN_BYTES or more as BodyViews of their blocks, the rest as bytes."""
    cdef char* buf = <char*>malloc(size - viewed)
    cdef char* p = buf
    cdef int64_t i, body_len
    cdef Msg* m
    cdef list pieces = []
    cdef SplitBody answer
    if buf == NULL:
        raise MemoryError()
    try:
        p = put(p, b'{"messages":[', 13)
        for i in range(n):
            m = msgs[i]
            if i:
                p[0] = b','
                p += 1
            p = put_message_head(p, m)
            body_len = msg_body_len(m)
            if body_len >= VIEW_MIN_BYTES:
                pieces.append(PyBytes_FromStringAndSize(buf, p - buf))
                pieces.append(body_view(m, body_len))
                p = buf
            else:
                p = put(p, msg_body(m), body_len)
            p = put_message_tail(p, m, received, receipts)
        p = put(p, b']}', 2)
        pieces.append(PyBytes_FromStringAndSize(buf, p - buf))
    finally:
        free(buf)
    answer = SplitBody.__new__(SplitBody)
    answer.pieces = tuple(pieces)
    answer.size = size
    return answer
