# The JSON the fast path reads and writes (included by wonderq/sqs/_fast.pyx): the input
# objects of its actions, read in one pass over the body, and the bytes of its answers.

cdef extern from *:
    """
    /* Length of the longest prefix of s[0:n] of bytes JSON writes as they are and that need no
       UTF-8 check: ASCII >= 0x20, not a quote or a backslash. SSE2 looks at 16 bytes a step
       (a signed compare: bytes >= 0x80 count as < 0x20 and stop the run). */
    #if defined(__SSE2__)
    #include <emmintrin.h>
    static inline Py_ssize_t wq_sqs_plain(const unsigned char *s, Py_ssize_t n) {
        const __m128i low = _mm_set1_epi8(0x20), quote = _mm_set1_epi8(0x22),
                      bslash = _mm_set1_epi8(0x5C);
        Py_ssize_t i = 0;
        for (; i + 16 <= n; i += 16) {
            __m128i v = _mm_loadu_si128((const __m128i *)(s + i));
            __m128i bad = _mm_or_si128(_mm_cmplt_epi8(v, low),
                                       _mm_or_si128(_mm_cmpeq_epi8(v, quote),
                                                    _mm_cmpeq_epi8(v, bslash)));
            int mask = _mm_movemask_epi8(bad);
            if (mask) return i + __builtin_ctz(mask);
        }
        for (; i < n; i++) {
            unsigned char c = s[i];
            if (c < 0x20 || c >= 0x80 || c == 0x22 || c == 0x5C) return i;
        }
        return i;
    }
    #else
    static inline Py_ssize_t wq_sqs_plain(const unsigned char *s, Py_ssize_t n) {
        Py_ssize_t i = 0;
        for (; i < n; i++) {
            unsigned char c = s[i];
            if (c < 0x20 || c >= 0x80 || c == 0x22 || c == 0x5C) return i;
        }
        return i;
    }
    #endif
    """
    Py_ssize_t wq_sqs_plain(const uint8_t *s, Py_ssize_t n) noexcept nogil


# The actions taken.
cdef enum:
    A_SEND = 1
    A_SEND_BATCH = 2
    A_RECEIVE = 3
    A_DELETE_BATCH = 4

# Keys of the input object (bits), and of a batch entry.
cdef enum:
    K_QUEUE_URL = 1
    K_BODY = 2
    K_DELAY = 4
    K_MAX = 8
    K_VISIBILITY = 16
    K_WAIT = 32
    K_ENTRIES = 64
    E_ID = 1
    E_BODY = 2
    E_DELAY = 4
    E_HANDLE = 8

# Escapes of json.dumps(ensure_ascii=False): 0 as is, else the character after the backslash
# ('u' for \u00XX).
cdef char ESCAPE[256]


cdef void _escape_init() noexcept:
    cdef int c
    for c in range(256):
        ESCAPE[c] = 0
    for c in range(32):
        ESCAPE[c] = 0x75  # u
    ESCAPE[0x22] = 0x22
    ESCAPE[0x5C] = 0x5C
    ESCAPE[0x08] = 0x62  # b
    ESCAPE[0x09] = 0x74  # t
    ESCAPE[0x0A] = 0x6E  # n
    ESCAPE[0x0C] = 0x66  # f
    ESCAPE[0x0D] = 0x72  # r


_escape_init()


cdef struct Span:
    const uint8_t* p      # the characters between the quotes, as sent
    Py_ssize_t n
    bint plain            # no escape and ASCII only: the value is these bytes


cdef struct Entry:
    int keys              # E_* seen
    Span id
    Span text             # MessageBody or ReceiptHandle
    long long delay_s


cdef struct Input:
    int keys              # K_* seen
    Span queue_url
    Span body
    long long delay_s
    long long max_messages
    long long visibility_s
    long long wait_s
    int entries           # entries read
    Entry entry[10]


# ---- reading JSON ---------------------------------------------------------------------------
cdef inline Py_ssize_t skip_ws(const uint8_t* s, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    while i < n and (s[i] == 0x20 or s[i] == 0x0A or s[i] == 0x0D or s[i] == 0x09):
        i += 1
    return i


cdef Py_ssize_t read_string(const uint8_t* s, Py_ssize_t i, Py_ssize_t n,
                            Span* out) noexcept nogil:
    """``s[i]`` follows an opening quote: the index after the closing one, ``out`` the span;
    -1 for a raw control character (JSON refuses it) or no end."""
    cdef Py_ssize_t start = i
    cdef uint8_t c
    out.plain = True
    while True:
        i += wq_sqs_plain(s + i, n - i)
        if i >= n:
            return -1
        c = s[i]
        if c == 0x22:
            out.p = s + start
            out.n = i - start
            return i + 1
        if c < 0x20:
            return -1
        out.plain = False
        if c == 0x5C:
            i += 2  # the escaped character is checked when the value is decoded
        else:
            i += 1


cdef Py_ssize_t read_int(const uint8_t* s, Py_ssize_t i, Py_ssize_t n,
                         long long* out) noexcept nogil:
    """A non-negative integer of at most 9 digits as JSON writes it; -1 for anything else (a
    sign, a fraction, an exponent: the general path answers those)."""
    cdef Py_ssize_t start = i
    cdef long long value = 0
    while i < n and 0x30 <= s[i] <= 0x39:
        value = value * 10 + (s[i] - 0x30)
        i += 1
    if i == start or i - start > 9 or (s[start] == 0x30 and i - start > 1):
        return -1
    if i < n and (s[i] == 0x2E or s[i] == 0x65 or s[i] == 0x45):
        return -1
    out[0] = value
    return i


cdef inline int key_of(Span* k) noexcept nogil:
    """The K_* bit of an input key, 0 for another."""
    if not k.plain:
        return 0
    if k.n == 8 and memcmp(k.p, b"QueueUrl", 8) == 0:
        return K_QUEUE_URL
    if k.n == 11 and memcmp(k.p, b"MessageBody", 11) == 0:
        return K_BODY
    if k.n == 12 and memcmp(k.p, b"DelaySeconds", 12) == 0:
        return K_DELAY
    if k.n == 19 and memcmp(k.p, b"MaxNumberOfMessages", 19) == 0:
        return K_MAX
    if k.n == 17 and memcmp(k.p, b"VisibilityTimeout", 17) == 0:
        return K_VISIBILITY
    if k.n == 15 and memcmp(k.p, b"WaitTimeSeconds", 15) == 0:
        return K_WAIT
    if k.n == 7 and memcmp(k.p, b"Entries", 7) == 0:
        return K_ENTRIES
    return 0


cdef inline int entry_key_of(Span* k) noexcept nogil:
    if not k.plain:
        return 0
    if k.n == 2 and memcmp(k.p, b"Id", 2) == 0:
        return E_ID
    if k.n == 11 and memcmp(k.p, b"MessageBody", 11) == 0:
        return E_BODY
    if k.n == 12 and memcmp(k.p, b"DelaySeconds", 12) == 0:
        return E_DELAY
    if k.n == 13 and memcmp(k.p, b"ReceiptHandle", 13) == 0:
        return E_HANDLE
    return 0


cdef Py_ssize_t read_entry(const uint8_t* s, Py_ssize_t i, Py_ssize_t n, Entry* e,
                           int allowed) noexcept nogil:
    """One batch entry object from ``s[i]`` (its ``{``): the index after it, else -1."""
    cdef Span key
    cdef int bit
    e.keys = 0
    i = skip_ws(s, i + 1, n)
    if i < n and s[i] == 0x7D:
        return i + 1
    while True:
        if i >= n or s[i] != 0x22:
            return -1
        i = read_string(s, i + 1, n, &key)
        if i < 0:
            return -1
        bit = entry_key_of(&key)
        if bit == 0 or not (bit & allowed) or (e.keys & bit):
            return -1
        e.keys |= bit
        i = skip_ws(s, i, n)
        if i >= n or s[i] != 0x3A:
            return -1
        i = skip_ws(s, i + 1, n)
        if bit == E_DELAY:
            i = read_int(s, i, n, &e.delay_s)
        elif i < n and s[i] == 0x22:
            i = read_string(s, i + 1, n, &e.id if bit == E_ID else &e.text)
        else:
            return -1
        if i < 0:
            return -1
        i = skip_ws(s, i, n)
        if i < n and s[i] == 0x2C:
            i = skip_ws(s, i + 1, n)
            continue
        if i < n and s[i] == 0x7D:
            return i + 1
        return -1


cdef bint read_input(const uint8_t* s, Py_ssize_t n, Input* inp, int allowed,
                     int entry_keys) noexcept nogil:
    """The request's input object, its keys among ``allowed``; False to decline."""
    cdef Py_ssize_t i = skip_ws(s, 0, n)
    cdef Span key
    cdef int bit
    inp.keys = 0
    inp.entries = 0
    if i >= n or s[i] != 0x7B:
        return False
    i = skip_ws(s, i + 1, n)
    if i < n and s[i] == 0x7D:
        return skip_ws(s, i + 1, n) == n
    while True:
        if i >= n or s[i] != 0x22:
            return False
        i = read_string(s, i + 1, n, &key)
        if i < 0:
            return False
        bit = key_of(&key)
        if bit == 0 or not (bit & allowed) or (inp.keys & bit):
            return False
        inp.keys |= bit
        i = skip_ws(s, i, n)
        if i >= n or s[i] != 0x3A:
            return False
        i = skip_ws(s, i + 1, n)
        if i >= n:
            return False
        if bit == K_QUEUE_URL or bit == K_BODY:
            if s[i] != 0x22:
                return False
            i = read_string(s, i + 1, n, &inp.queue_url if bit == K_QUEUE_URL else &inp.body)
        elif bit == K_DELAY:
            i = read_int(s, i, n, &inp.delay_s)
        elif bit == K_MAX:
            i = read_int(s, i, n, &inp.max_messages)
        elif bit == K_VISIBILITY:
            i = read_int(s, i, n, &inp.visibility_s)
        elif bit == K_WAIT:
            i = read_int(s, i, n, &inp.wait_s)
        else:  # K_ENTRIES
            if s[i] != 0x5B:
                return False
            i = skip_ws(s, i + 1, n)
            while i < n and s[i] == 0x7B:
                if inp.entries == MAX_ENTRIES:
                    return False
                i = read_entry(s, i, n, &inp.entry[inp.entries], entry_keys)
                if i < 0:
                    return False
                inp.entries += 1
                i = skip_ws(s, i, n)
                if i < n and s[i] == 0x2C:
                    i = skip_ws(s, i + 1, n)
                    if i >= n or s[i] != 0x7B:
                        return False
            if i >= n or s[i] != 0x5D:
                return False
            i += 1
        if i < 0:
            return False
        i = skip_ws(s, i, n)
        if i < n and s[i] == 0x2C:
            i = skip_ws(s, i + 1, n)
            continue
        if i < n and s[i] == 0x7D:
            return skip_ws(s, i + 1, n) == n
        return False


# ---- values ---------------------------------------------------------------------------------
cdef inline int hex4(const uint8_t* p) noexcept nogil:
    cdef int value = 0, k, c
    for k in range(4):
        c = p[k]
        if 0x30 <= c <= 0x39:
            c -= 0x30
        elif 0x61 <= c <= 0x66:
            c -= 0x57
        elif 0x41 <= c <= 0x46:
            c -= 0x37
        else:
            return -1
        value = value * 16 + c
    return value


cdef inline bint sqs_char(uint32_t cp) noexcept nogil:
    """A character SQS accepts in a body: #x9 #xA #xD #x20-#xD7FF #xE000-#xFFFD
    #x10000-#x10FFFF."""
    if cp < 0x20:
        return cp == 0x09 or cp == 0x0A or cp == 0x0D
    if cp < 0xD800:
        return True
    if cp < 0xE000:
        return False
    if cp < 0x10000:
        return cp <= 0xFFFD
    return cp <= 0x10FFFF


cdef inline uint8_t* put_utf8(uint8_t* o, uint32_t cp) noexcept nogil:
    if cp < 0x80:
        o[0] = <uint8_t>cp
        return o + 1
    if cp < 0x800:
        o[0] = <uint8_t>(0xC0 | (cp >> 6))
        o[1] = <uint8_t>(0x80 | (cp & 0x3F))
        return o + 2
    if cp < 0x10000:
        o[0] = <uint8_t>(0xE0 | (cp >> 12))
        o[1] = <uint8_t>(0x80 | ((cp >> 6) & 0x3F))
        o[2] = <uint8_t>(0x80 | (cp & 0x3F))
        return o + 3
    o[0] = <uint8_t>(0xF0 | (cp >> 18))
    o[1] = <uint8_t>(0x80 | ((cp >> 12) & 0x3F))
    o[2] = <uint8_t>(0x80 | ((cp >> 6) & 0x3F))
    o[3] = <uint8_t>(0x80 | (cp & 0x3F))
    return o + 4


cdef Py_ssize_t decode_body(const uint8_t* s, Py_ssize_t n, uint8_t* out) noexcept nogil:
    """The UTF-8 bytes of a body string with escapes or non-ASCII characters into ``out`` (at
    least ``n`` bytes): their count, or -1 when the general path must answer (a character SQS
    refuses, a lone surrogate, invalid UTF-8, an unknown escape)."""
    cdef Py_ssize_t i = 0
    cdef uint8_t* o = out
    cdef uint8_t c, e
    cdef int unit, low
    cdef uint32_t cp
    while i < n:
        c = s[i]
        if c == 0x5C:
            if i + 1 >= n:
                return -1
            e = s[i + 1]
            i += 2
            if e == 0x22 or e == 0x5C or e == 0x2F:
                o[0] = e
                o += 1
            elif e == 0x6E:
                o[0] = 0x0A
                o += 1
            elif e == 0x72:
                o[0] = 0x0D
                o += 1
            elif e == 0x74:
                o[0] = 0x09
                o += 1
            elif e == 0x75:
                if i + 4 > n:
                    return -1
                unit = hex4(s + i)
                if unit < 0:
                    return -1
                i += 4
                if 0xD800 <= unit < 0xDC00:
                    if i + 6 > n or s[i] != 0x5C or s[i + 1] != 0x75:
                        return -1
                    low = hex4(s + i + 2)
                    if not 0xDC00 <= low < 0xE000:
                        return -1
                    i += 6
                    cp = 0x10000 + ((<uint32_t>(unit - 0xD800)) << 10) + <uint32_t>(low - 0xDC00)
                else:
                    cp = <uint32_t>unit
                if not sqs_char(cp):
                    return -1
                o = put_utf8(o, cp)
            else:
                return -1  # \b, \f (characters SQS refuses) or no escape at all
        elif c < 0x80:
            o[0] = c
            o += 1
            i += 1
        else:
            if c < 0xC2:
                return -1
            if c < 0xE0:
                if i + 2 > n or (s[i + 1] & 0xC0) != 0x80:
                    return -1
                cp = 0  # any two-byte character is allowed
                memcpy(o, s + i, 2)
                o += 2
                i += 2
            elif c < 0xF0:
                if i + 3 > n or (s[i + 1] & 0xC0) != 0x80 or (s[i + 2] & 0xC0) != 0x80:
                    return -1
                cp = ((c & 0x0F) << 12) | ((s[i + 1] & 0x3F) << 6) | (s[i + 2] & 0x3F)
                if cp < 0x800 or not sqs_char(cp):
                    return -1
                memcpy(o, s + i, 3)
                o += 3
                i += 3
            elif c < 0xF5:
                if (i + 4 > n or (s[i + 1] & 0xC0) != 0x80 or (s[i + 2] & 0xC0) != 0x80
                        or (s[i + 3] & 0xC0) != 0x80):
                    return -1
                cp = (((c & 0x07) << 18) | ((s[i + 1] & 0x3F) << 12)
                      | ((s[i + 2] & 0x3F) << 6) | (s[i + 3] & 0x3F))
                if cp < 0x10000 or cp > 0x10FFFF:
                    return -1
                memcpy(o, s + i, 4)
                o += 4
                i += 4
            else:
                return -1
    return o - out


cdef object body_bytes(Span* span):
    """The message body a span holds (bytes), or None to decline (empty, or see
    decode_body)."""
    cdef uint8_t* buf
    cdef Py_ssize_t got
    if span.n == 0:
        return None
    if span.plain:
        return PyBytes_FromStringAndSize(<const char*>span.p, span.n)
    buf = <uint8_t*>malloc(span.n)
    if buf == NULL:
        raise MemoryError()
    got = decode_body(span.p, span.n, buf)
    if got <= 0:
        free(buf)
        return None
    data = PyBytes_FromStringAndSize(<const char*>buf, got)
    free(buf)
    return data


cdef inline bint entry_id_ok(Span* span) noexcept nogil:
    """``[A-Za-z0-9_-]{1,80}``, as sent (plain)."""
    cdef Py_ssize_t k
    cdef uint8_t c
    if not span.plain or span.n < 1 or span.n > 80:
        return False
    for k in range(span.n):
        c = span.p[k]
        if not (0x61 <= c <= 0x7A or 0x41 <= c <= 0x5A or 0x30 <= c <= 0x39 or c == 0x5F
                or c == 0x2D):
            return False
    return True


cdef bint ids_ok(Input* inp) noexcept nogil:
    """Every entry has a valid Id, all distinct."""
    cdef int a, b
    for a in range(inp.entries):
        if not (inp.entry[a].keys & E_ID) or not entry_id_ok(&inp.entry[a].id):
            return False
        for b in range(a):
            if (inp.entry[a].id.n == inp.entry[b].id.n
                    and memcmp(inp.entry[a].id.p, inp.entry[b].id.p, inp.entry[a].id.n) == 0):
                return False
    return True


# ---- writing JSON ---------------------------------------------------------------------------
cdef inline char* put(char* o, const char* s, Py_ssize_t n) noexcept nogil:
    memcpy(o, s, n)
    return o + n


cdef inline char* put_u64(char* o, uint64_t v) noexcept nogil:
    cdef char tmp[20]
    cdef int k = 0
    while True:
        tmp[k] = <char>(0x30 + v % 10)
        k += 1
        v //= 10
        if v == 0:
            break
    while k:
        k -= 1
        o[0] = tmp[k]
        o += 1
    return o


cdef char* put_escaped(char* o, const uint8_t* s, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i = 0, run
    cdef char e
    cdef uint8_t c
    while True:
        run = wq_sqs_plain(s + i, n - i)
        memcpy(o, s + i, run)
        o += run
        i += run
        if i >= n:
            return o
        c = s[i]
        e = ESCAPE[c]
        if e == 0:
            o[0] = <char>c
            o += 1
        elif e == 0x75:
            o = put(o, b"\\u00", 4)
            o[0] = HEX[c >> 4]
            o[1] = HEX[c & 15]
            o += 2
        else:
            o[0] = 0x5C
            o[1] = e
            o += 2
        i += 1
