/* httpgen: a light HTTP/1.1 load generator for bench/run.py, one thread, loopback only.
 *
 * Why not wrk for every row: wrk adds and removes each connection's EPOLLOUT interest around
 * every request (two epoll_ctl calls, an extra epoll_wait) and, with a Lua response(), runs Lua
 * per answer. Without pipelining that makes it as busy as the server it measures (87-99% of
 * its core in bench/RESULTS.md), so the ratios measured the generator. Here a connection writes
 * its next request from the loop that parsed the answer, with one write(); EPOLLOUT is asked
 * for only when the kernel did not take a request whole. The bytes of every request are
 * built before the clock starts, except the id of a delete (a few digits) and an ack's list.
 *
 *   httpgen --port P [-c 64] [--duration 10] [--name NAME] MODE ...
 *   modes:
 *     --fixed METHOD PATH [--body B] [--ctype T] [--pipeline N] [--per-request K]
 *             [--header 'Name: value']...  (extra header lines, e.g. X-Amz-Target)
 *         one constant request, N of them written at once per round (a round's latency is
 *         that of its last answer); messages = 2xx answers x K
 *     --recvdel RECV_PATH DELETE_PREFIX
 *         GET RECV_PATH, then DELETE DELETE_PREFIX<id> of the "id":N in the answer;
 *         messages = deletes answered true
 *     --recvack RECV_PATH ACK_PATH CID
 *         GET RECV_PATH, then POST ACK_PATH {"cid":CID,"ids":[every "id":N of the answer]};
 *         messages = ids under "deleted"
 *     --recvdel ... --publish PATH --body B
 *         the depth sweep's cycle: publish, receive, delete on each connection, so the queue
 *         keeps its depth while receives take the oldest (pre-filled) messages
 *   --body-bytes N   a body of N 'x' (big messages: a command-line argument stops at 128 KiB)
 *   --delete-suffix S  what follows the id of a delete (`?cid=1` for the named-queue route)
 *   --until-empty    (--recvdel, --recvack) end the run at the first answer that finds the
 *                    queue empty, before the duration: the rate is then that of a queue that
 *                    still had messages (bench/bigmsg.py's receive rounds)
 *   --spread N       every path may hold {q}: a queue name q0..q<N-1>, the next one (round
 *                    robin over all connections) for each round or publish/receive/delete
 *                    cycle, so the load touches N queues evenly (bench/scale.py)
 *   A receive answer without "messages" comes from a server that is not a queue (the
 *   ceilings, nginx): the generator then deletes or acks id 1, so that server gets the same
 *   mix of requests. With "messages" but no id the queue was empty: counted, received again.
 *
 * Prints one line: LOADJSON {...} with the keys of bench/loadlib.py's summary(). Latencies
 * are per round in microsecond buckets up to 1 s. It connects to 127.0.0.1 only and stops at
 * the duration whatever is in flight.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <stdarg.h>

#define HIST_US (1u << 20) /* latency buckets: one per microsecond, the last holds >= 1 s */
#define MAX_IDS 4096       /* ids taken from one receive answer */
#define ID_DIGITS 20
#define MAX_INPUT (16u << 20) /* bytes of unparsed answers a connection may hold */

enum mode { FIXED, RECVDEL, RECVACK };
enum kind { K_FIXED, K_PUBLISH, K_RECV, K_DELETE, K_ACK };

struct conn {
    int fd;
    enum kind kind;     /* what the request in flight is */
    int pending;        /* answers still due for the round in flight */
    uint64_t t0_ns;     /* when the round was written */
    char *in;           /* received bytes not yet parsed, from in[0] */
    size_t in_len, in_cap;
    char *out;          /* the round being written: shared (fixed) or own */
    size_t out_len, out_off;
    const char *tail;   /* written after out (a --spread request's body); out_off counts both */
    size_t tail_len;
    const char *next_tail; /* set by build_spread for the send_round that follows it */
    size_t next_tail_len;
    char *own;          /* this connection's request buffer (receive/delete/ack) */
    size_t own_cap;
    unsigned gen;       /* bumped when the connection is reopened: stale input is dropped */
    int q;              /* --spread: the queue of the round or cycle in flight */
    char *recv_own;     /* --spread: this connection's receive request */
    size_t recv_own_cap;
};

static struct {
    enum mode mode;
    int port, conns, pipeline, per_request, spread, spread_next, until_empty;
    double duration_s;
    const char *name, *method, *path, *body, *ctype, *recv, *del, *ack, *cid, *publish;
    const char *del_suffix;
    char *fixed;        /* the constant round (fixed mode) */
    size_t fixed_len;
    char *recv_req;     /* the constant receive request */
    size_t recv_len;
    char host[1100];    /* the Host line and the --header lines */
    char extra[1024];   /* --header lines, each ending in CRLF, sent after Host */
} cfg = {.conns = 64, .duration_s = 10, .pipeline = 1, .per_request = 1, .name = "httpgen",
         .ctype = "text/plain; charset=utf-8"};

static struct {
    uint64_t requests, messages, empty, bad, status, connect, read, write;
    uint64_t rounds, lat_sum_us, lat_max_us;
    uint32_t *hist;
} st;

static int epfd;
static uint64_t now_ns, deadline_ns; /* now_ns: read before each event is handled (vDSO) */

static uint64_t clock_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static void *xrealloc(void *p, size_t n) {
    p = realloc(p, n);
    if (p == NULL) die("realloc");
    return p;
}

/* Appends printf output to a growing buffer. */
static void bprintf(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void bprintf(char **buf, size_t *len, size_t *cap, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(*buf + *len, *cap - *len, fmt, ap);
        va_end(ap);
        if (n < 0) die("vsnprintf");
        if ((size_t)n < *cap - *len) {
            *len += (size_t)n;
            return;
        }
        *cap = (*cap + (size_t)n) * 2;
        *buf = xrealloc(*buf, *cap);
    }
}

static void record_round(struct conn *c) {
    uint64_t us = (now_ns - c->t0_ns) / 1000u;
    st.hist[us < HIST_US ? us : HIST_US - 1]++;
    st.rounds++;
    st.lat_sum_us += us;
    if (us > st.lat_max_us) st.lat_max_us = us;
}

static void want_out(struct conn *c, int on) {
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl");
}

static int open_conn(struct conn *c);

static void reopen(struct conn *c) {
    c->gen++;
    c->in_len = 0;
    c->pending = 0;
    if (c->fd < 0) return;
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    if (now_ns >= deadline_ns) return;
    if (open_conn(c) < 0) st.connect++;
}

/* tmpl with each {q} replaced by q<k>, appended to buf (--spread). */
static void expand(char **buf, size_t *len, size_t *cap, const char *tmpl, int k) {
    for (const char *p = tmpl; *p;) {
        const char *hole = strstr(p, "{q}");
        if (hole == NULL) {
            bprintf(buf, len, cap, "%s", p);
            return;
        }
        bprintf(buf, len, cap, "%.*sq%d", (int)(hole - p), p, k);
        p = hole + 3;
    }
}

static int next_queue(void) {
    int k = cfg.spread_next++;
    if (cfg.spread_next >= cfg.spread) cfg.spread_next = 0;
    return k;
}

/* A round of --fixed (or the cycle's publish) for queue k, in c->own. A single request's body
 * is not copied: it is left to c->tail (big bodies would make the copy the generator's work). */
static size_t build_spread(struct conn *c, int k, int count) {
    size_t len = 0;
    if (count == 1 && cfg.body) {
        static size_t body_len = (size_t)-1; /* cfg.body is set once: measured once */
        if (body_len == (size_t)-1) body_len = strlen(cfg.body);
        bprintf(&c->own, &len, &c->own_cap, "%s ", cfg.method);
        expand(&c->own, &len, &c->own_cap, cfg.path, k);
        bprintf(&c->own, &len, &c->own_cap,
                " HTTP/1.1\r\n%sContent-Type: %s\r\nContent-Length: %zu\r\n\r\n", cfg.host,
                cfg.ctype, body_len);
        c->next_tail = cfg.body;
        c->next_tail_len = body_len;
        return len;
    }
    for (int i = 0; i < count; i++) {
        bprintf(&c->own, &len, &c->own_cap, "%s ", cfg.method);
        expand(&c->own, &len, &c->own_cap, cfg.path, k);
        if (cfg.body)
            bprintf(&c->own, &len, &c->own_cap,
                    " HTTP/1.1\r\n%sContent-Type: %s\r\nContent-Length: %zu\r\n\r\n%s", cfg.host,
                    cfg.ctype, strlen(cfg.body), cfg.body);
        else
            bprintf(&c->own, &len, &c->own_cap, " HTTP/1.1\r\n%s\r\n", cfg.host);
    }
    return len;
}

/* Writes what is left of the round; asks for EPOLLOUT only if the kernel took part of it. */
static void flush_out(struct conn *c) {
    size_t total = c->out_len + c->tail_len;
    while (c->out_off < total) {
        struct iovec iov[2];
        int parts = 1;
        if (c->out_off < c->out_len) {
            iov[0].iov_base = c->out + c->out_off;
            iov[0].iov_len = c->out_len - c->out_off;
            iov[1].iov_base = (void *)c->tail;
            iov[1].iov_len = c->tail_len;
            parts = c->tail_len ? 2 : 1;
        } else {
            iov[0].iov_base = (void *)(c->tail + (c->out_off - c->out_len));
            iov[0].iov_len = total - c->out_off;
        }
        ssize_t n = writev(c->fd, iov, parts);
        if (n > 0) {
            c->out_off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) {
            want_out(c, 1);
            return;
        }
        st.write++;
        reopen(c);
        return;
    }
}

/* Sends buf, and then the body build_spread left out if it just built buf. */
static void send_round(struct conn *c, enum kind kind, char *buf, size_t len, int answers) {
    c->tail = c->next_tail;
    c->tail_len = c->next_tail_len;
    c->next_tail_len = 0;
    if (now_ns >= deadline_ns) {
        c->pending = 0; /* time is up: this connection stays quiet */
        return;
    }
    c->kind = kind;
    c->out = buf;
    c->out_len = len;
    c->out_off = 0;
    c->pending = answers;
    c->t0_ns = now_ns;
    flush_out(c);
}

static void send_recv(struct conn *c) {
    if (cfg.spread) {
        size_t len = 0;
        bprintf(&c->recv_own, &len, &c->recv_own_cap, "GET ");
        expand(&c->recv_own, &len, &c->recv_own_cap, cfg.recv, c->q);
        bprintf(&c->recv_own, &len, &c->recv_own_cap, " HTTP/1.1\r\n%s\r\n", cfg.host);
        send_round(c, K_RECV, c->recv_own, len, 1);
        return;
    }
    send_round(c, K_RECV, cfg.recv_req, cfg.recv_len, 1);
}

/* What follows a delete, an ack or an empty receive: a publish in the cycle, else a receive. */
static void send_next(struct conn *c) {
    if (cfg.spread) c->q = next_queue();
    if (cfg.publish && cfg.spread)
        send_round(c, K_PUBLISH, c->own, build_spread(c, c->q, 1), 1);
    else if (cfg.publish)
        send_round(c, K_PUBLISH, cfg.fixed, cfg.fixed_len, 1);
    else
        send_recv(c);
}

static void send_fixed(struct conn *c) {
    if (cfg.spread)
        send_round(c, K_FIXED, c->own, build_spread(c, next_queue(), cfg.pipeline), cfg.pipeline);
    else
        send_round(c, K_FIXED, cfg.fixed, cfg.fixed_len, cfg.pipeline);
}

static void send_delete(struct conn *c, const char *id, size_t id_len) {
    size_t len = 0;
    bprintf(&c->own, &len, &c->own_cap, "DELETE ");
    if (cfg.spread)
        expand(&c->own, &len, &c->own_cap, cfg.del, c->q);
    else
        bprintf(&c->own, &len, &c->own_cap, "%s", cfg.del);
    bprintf(&c->own, &len, &c->own_cap, "%.*s%s HTTP/1.1\r\n%s\r\n", (int)id_len, id,
            cfg.del_suffix ? cfg.del_suffix : "", cfg.host);
    send_round(c, K_DELETE, c->own, len, 1);
}

/* ids: "1,2,3" (already comma-joined). */
static void send_ack(struct conn *c, const char *ids, size_t ids_len) {
    char head[256];
    int body_len = snprintf(head, sizeof head, "{\"cid\":%s,\"ids\":[", cfg.cid) + (int)ids_len + 2;
    size_t len = 0;
    bprintf(&c->own, &len, &c->own_cap,
            "POST %s HTTP/1.1\r\n%sContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            "%s%.*s]}",
            cfg.ack, cfg.host, body_len, head, (int)ids_len, ids);
    send_round(c, K_ACK, c->own, len, 1);
}

/* Every "id":N of a receive answer, comma-joined into out; returns how many. The message
 * bodies are ours (plain 'x'), so a "id": inside one cannot occur. */
static int collect_ids(const char *body, size_t len, char *out, size_t *out_len, int max) {
    const char *p = body, *end = body + len;
    int n = 0;
    *out_len = 0;
    while (n < max && (p = memmem(p, (size_t)(end - p), "\"id\":", 5)) != NULL) {
        p += 5;
        while (p < end && *p == ' ') p++;
        const char *d = p;
        while (p < end && *p >= '0' && *p <= '9' && p - d < ID_DIGITS) p++;
        if (p == d) continue;
        if (n) out[(*out_len)++] = ',';
        memcpy(out + *out_len, d, (size_t)(p - d));
        *out_len += (size_t)(p - d);
        n++;
    }
    return n;
}

/* Ids listed under "deleted":[...] of an ack answer. */
static int count_deleted(const char *body, size_t len) {
    const char *p = memmem(body, len, "\"deleted\":[", 11);
    if (p == NULL) return -1;
    const char *end = memchr(p, ']', (size_t)(body + len - p));
    if (end == NULL) return -1;
    int n = 0, digit = 0;
    for (p += 11; p < end; p++) {
        if (*p >= '0' && *p <= '9') {
            if (!digit) n++;
            digit = 1;
        } else {
            digit = 0;
        }
    }
    return n;
}

static void on_answer(struct conn *c, int status, const char *body, size_t len) {
    static char ids[MAX_IDS * (ID_DIGITS + 1)];
    size_t ids_len;
    st.requests++;
    if (status >= 400) st.status++;
    /* A queue's receive answer starts {"messages":[ and has the first "id" before its
     * body: look no further, so a big answer (1 MiB, or nginx's file) is not scanned. */
    int queue = memmem(body, len < 32 ? len : 32, "\"messages\"", 10) != NULL;
    switch (c->kind) {
    case K_FIXED:
        if (status >= 200 && status < 300)
            st.messages += (uint64_t)cfg.per_request;
        else
            st.bad++;
        if (--c->pending == 0) {
            record_round(c);
            send_fixed(c);
        }
        return;
    case K_PUBLISH:
        record_round(c);
        c->pending = 0;
        if (status != 201) st.bad++;
        send_recv(c);
        return;
    case K_RECV: {
        record_round(c);
        c->pending = 0;
        if (status != 200) {
            st.bad++;
            send_next(c);
            return;
        }
        int one = cfg.mode == RECVDEL;
        int n = collect_ids(body, one && len > 64 ? 64 : len, ids, &ids_len, one ? 1 : MAX_IDS);
        if (n == 0 && queue) {
            st.empty++;
            if (cfg.until_empty) deadline_ns = now_ns; /* the loop ends after this batch */
            send_next(c);
            return;
        }
        if (n == 0) { /* not a queue: the same requests with a made-up id */
            ids[0] = '1';
            ids_len = 1;
        }
        if (cfg.mode == RECVDEL)
            send_delete(c, ids, ids_len);
        else
            send_ack(c, ids, ids_len);
        return;
    }
    case K_DELETE:
        record_round(c);
        c->pending = 0;
        if (len >= 4 && memcmp(body, "true", 4) == 0)
            st.messages++;
        else if (status >= 400 || (len >= 5 && memcmp(body, "false", 5) == 0))
            st.bad++;
        send_next(c);
        return;
    case K_ACK:
        record_round(c);
        c->pending = 0;
        if (status == 200) {
            int d = count_deleted(body, len);
            if (d > 0) st.messages += (uint64_t)d;
            if (d >= 0 && memmem(body, len, "\"failed\":[]", 11) == NULL) st.bad++;
        } else {
            st.bad++;
        }
        send_next(c);
        return;
    }
}

/* Length of a header's value when the header block [h, h+len) has it, else -1. */
static long header_number(const char *h, size_t len, const char *name) {
    size_t nl = strlen(name);
    for (const char *p = h, *end = h + len; p < end;) {
        const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        if (eol == NULL) eol = end;
        if ((size_t)(eol - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':')
            return strtol(p + nl + 1, NULL, 10);
        p = eol + 2;
    }
    return -1;
}

/* Parses every whole answer in c->in; returns 0, or -1 when the stream is not HTTP we read. */
static int parse_answers(struct conn *c) {
    size_t pos = 0;
    while (c->pending > 0) {
        const char *start = c->in + pos;
        size_t avail = c->in_len - pos;
        const char *hend = memmem(start, avail, "\r\n\r\n", 4);
        if (hend == NULL) break;
        size_t head_len = (size_t)(hend - start) + 4;
        if (avail < 12 || memcmp(start, "HTTP/1.", 7) != 0) return -1;
        int status = atoi(start + 9);
        long body_len = header_number(start, head_len, "Content-Length");
        if (body_len < 0 && (status == 204 || status == 304 || status < 200))
            body_len = 0; /* no body, by definition (RFC 9112 section 6.3) */
        if (body_len < 0) return -1; /* no chunked answers here */
        if (avail < head_len + (size_t)body_len) break;
        pos += head_len + (size_t)body_len;
        unsigned gen = c->gen;
        on_answer(c, status, start + head_len, (size_t)body_len);
        if (c->gen != gen) return 0; /* reopened while answering: its input is gone */
    }
    if (pos) {
        memmove(c->in, c->in + pos, c->in_len - pos);
        c->in_len -= pos;
    }
    return 0;
}

static void on_readable(struct conn *c) {
    if (c->in_cap - c->in_len < 16384) {
        if (c->in_cap >= MAX_INPUT) { /* no answer is this long: not HTTP we can read */
            st.read++;
            reopen(c);
            return;
        }
        c->in_cap *= 2;
        c->in = xrealloc(c->in, c->in_cap);
    }
    ssize_t n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n <= 0) {
        st.read++;
        reopen(c);
        return;
    }
    c->in_len += (size_t)n;
    if (parse_answers(c) < 0) {
        st.read++;
        reopen(c);
    }
}

static void start(struct conn *c) {
    if (cfg.mode == FIXED)
        send_fixed(c);
    else
        send_next(c);
}

static int open_conn(struct conn *c) {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)cfg.port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0) die("socket");
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK) < 0) die("fcntl");
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl");
    start(c);
    return 0;
}

static double ms_at(double p) {
    if (st.rounds == 0) return -1;
    uint64_t rank = (uint64_t)(p / 100.0 * (double)st.rounds + 0.999999);
    if (rank < 1) rank = 1;
    uint64_t seen = 0;
    for (uint32_t us = 0; us < HIST_US; us++) {
        seen += st.hist[us];
        if (seen >= rank) return us / 1000.0;
    }
    return st.lat_max_us / 1000.0;
}

static void print_ms(const char *key, double v, const char *sep) {
    if (v < 0)
        printf("\"%s\":null%s", key, sep);
    else
        printf("\"%s\":%.6g%s", key, v, sep);
}

static void usage(void) {
    fputs("usage: httpgen --port P [-c N] [--duration S] [--name NAME]\n"
          "  [--spread N] [--body-bytes N] [--delete-suffix S] [--until-empty]\n"
          "  (--fixed METHOD PATH [--body B] [--ctype T] [--pipeline N] [--per-request K]\n"
          "   | --recvdel RECV_PATH DELETE_PREFIX [--publish PATH --body B]\n"
          "   | --recvack RECV_PATH ACK_PATH CID)\n",
          stderr);
    exit(2);
}

static void parse_args(int argc, char **argv) {
    int modes = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
#define NEXT (i + 1 < argc ? argv[++i] : (usage(), ""))
        if (!strcmp(a, "--port")) cfg.port = atoi(NEXT);
        else if (!strcmp(a, "-c")) cfg.conns = atoi(NEXT);
        else if (!strcmp(a, "--duration")) cfg.duration_s = atof(NEXT);
        else if (!strcmp(a, "--name")) cfg.name = NEXT;
        else if (!strcmp(a, "--body")) cfg.body = NEXT;
        else if (!strcmp(a, "--body-bytes")) {
            long n = atol(NEXT);
            char *b = malloc((size_t)(n > 0 ? n : 0) + 1);
            if (b == NULL) die("malloc");
            memset(b, 'x', (size_t)(n > 0 ? n : 0));
            b[n > 0 ? n : 0] = 0;
            cfg.body = b;
        } else if (!strcmp(a, "--spread")) cfg.spread = atoi(NEXT);
        else if (!strcmp(a, "--until-empty")) cfg.until_empty = 1;
        else if (!strcmp(a, "--delete-suffix")) cfg.del_suffix = NEXT;
        else if (!strcmp(a, "--ctype")) cfg.ctype = NEXT;
        else if (!strcmp(a, "--header")) {
            const char *h = NEXT;
            size_t used = strlen(cfg.extra);
            if (used + strlen(h) + 3 > sizeof cfg.extra) {
                fprintf(stderr, "httpgen: --header lines longer than %zu bytes\n", sizeof cfg.extra);
                exit(2);
            }
            snprintf(cfg.extra + used, sizeof cfg.extra - used, "%s\r\n", h);
        }
        else if (!strcmp(a, "--pipeline")) cfg.pipeline = atoi(NEXT);
        else if (!strcmp(a, "--per-request")) cfg.per_request = atoi(NEXT);
        else if (!strcmp(a, "--publish")) cfg.method = "POST", cfg.publish = cfg.path = NEXT;
        else if (!strcmp(a, "--fixed")) {
            cfg.mode = FIXED, modes++;
            cfg.method = NEXT;
            cfg.path = NEXT;
        } else if (!strcmp(a, "--recvdel")) {
            cfg.mode = RECVDEL, modes++;
            cfg.recv = NEXT;
            cfg.del = NEXT;
        } else if (!strcmp(a, "--recvack")) {
            cfg.mode = RECVACK, modes++;
            cfg.recv = NEXT;
            cfg.ack = NEXT;
            cfg.cid = NEXT;
        } else
            usage();
#undef NEXT
    }
    if (modes != 1 || (cfg.publish && cfg.mode != RECVDEL) ||
        (cfg.until_empty && (cfg.mode == FIXED || cfg.publish)) || cfg.port <= 0 || cfg.port > 65535 || cfg.conns < 1 || cfg.pipeline < 1 ||
        cfg.duration_s <= 0 || cfg.duration_s > 3600)
        usage();
}

/* The constant requests, built once. */
static void build_requests(void) {
    int n = snprintf(cfg.host, sizeof cfg.host, "Host: 127.0.0.1:%d\r\n", cfg.port);
    memcpy(cfg.host + n, cfg.extra, strlen(cfg.extra) + 1);  /* fits: host is extra + 76 */
    size_t cap = 256;
    if (cfg.mode == FIXED || cfg.publish) {
        char *one = malloc(cap);
        size_t len = 0;
        if (cfg.body)
            bprintf(&one, &len, &cap,
                    "%s %s HTTP/1.1\r\n%sContent-Type: %s\r\nContent-Length: %zu\r\n\r\n%s",
                    cfg.method, cfg.path, cfg.host, cfg.ctype, strlen(cfg.body), cfg.body);
        else
            bprintf(&one, &len, &cap, "%s %s HTTP/1.1\r\n%s\r\n", cfg.method, cfg.path, cfg.host);
        cfg.fixed_len = len * (size_t)cfg.pipeline;
        cfg.fixed = malloc(cfg.fixed_len);
        for (int i = 0; i < cfg.pipeline; i++) memcpy(cfg.fixed + len * (size_t)i, one, len);
        free(one);
    }
    if (cfg.mode != FIXED) {
        cfg.recv_req = malloc(cap);
        bprintf(&cfg.recv_req, &cfg.recv_len, &cap, "GET %s HTTP/1.1\r\n%s\r\n", cfg.recv,
                cfg.host);
    }
}

int main(int argc, char **argv) {
    parse_args(argc, argv);
    build_requests();
    signal(SIGPIPE, SIG_IGN);
    st.hist = calloc(HIST_US, sizeof *st.hist);
    struct conn *conns = calloc((size_t)cfg.conns, sizeof *conns);
    if (st.hist == NULL || conns == NULL) die("calloc");
    epfd = epoll_create1(0);
    if (epfd < 0) die("epoll_create1");
    uint64_t started = now_ns = clock_ns();
    deadline_ns = started + (uint64_t)(cfg.duration_s * 1e9);
    int live = 0;
    for (int i = 0; i < cfg.conns; i++) {
        struct conn *c = &conns[i];
        c->in_cap = 65536;
        c->in = malloc(c->in_cap);
        c->own_cap = 256;
        c->own = malloc(c->own_cap);
        c->recv_own_cap = 256;
        c->recv_own = malloc(c->recv_own_cap);
        if (open_conn(c) < 0)
            st.connect++;
        else
            live++;
    }
    if (live == 0) {
        fprintf(stderr, "httpgen: cannot connect to 127.0.0.1:%d\n", cfg.port);
        return 1;
    }
    struct epoll_event evs[256];
    while ((now_ns = clock_ns()) < deadline_ns) {
        int timeout_ms = (int)((deadline_ns - now_ns) / 1000000u) + 1;
        int n = epoll_wait(epfd, evs, 256, timeout_ms < 50 ? timeout_ms : 50);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            now_ns = clock_ns(); /* per event: a round's clock starts at its write() */
            if (evs[i].events & EPOLLOUT) {
                flush_out(c);
                if (c->fd >= 0 && c->out_off == c->out_len + c->tail_len) want_out(c, 0);
            }
            if (c->fd >= 0 && evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(c);
        }
    }
    double secs = (double)(now_ns - started) / 1e9;
    printf("LOADJSON {\"script\":\"%s\",\"generator\":\"httpgen\",\"requests\":%llu,"
           "\"duration_s\":%.6g,\"messages\":%llu,\"empty\":%llu,\"bad\":%llu,\"pipeline\":%d,"
           "\"errors\":{\"connect\":%llu,\"read\":%llu,\"write\":%llu,\"status\":%llu,"
           "\"timeout\":0},\"latency_ms\":{",
           cfg.name, (unsigned long long)st.requests, secs, (unsigned long long)st.messages,
           (unsigned long long)st.empty, (unsigned long long)st.bad, cfg.pipeline,
           (unsigned long long)st.connect, (unsigned long long)st.read,
           (unsigned long long)st.write, (unsigned long long)st.status);
    print_ms("p50", ms_at(50), ",");
    print_ms("p90", ms_at(90), ",");
    print_ms("p99", ms_at(99), ",");
    print_ms("p999", ms_at(99.9), ",");
    print_ms("max", st.rounds ? st.lat_max_us / 1000.0 : -1, ",");
    print_ms("mean", st.rounds ? (double)st.lat_sum_us / (double)st.rounds / 1000.0 : -1, "}}\n");
    return st.requests ? 0 : 1;
}
