/*
 * sockbench native load worker: the C engine of bench/loadgen.
 *
 * It speaks the same worker contract as the Python worker
 * (bench/loadgen/worker.py), so the parent (bench/loadgen/driver.py), the
 * merge, results, figures and report do not care which engine measured:
 *
 *   loadgen READY_FD
 *     stdin line 1: the job as JSON (the LoadSpec as a dict under "spec",
 *                   this worker's clients, offset, rate share, CPU, address);
 *     the worker sets up (affinity, open-files limit, buffers) and writes one
 *                   byte to READY_FD;
 *     stdin line 2: {"start_wall": T}, a wall-clock start shared by all;
 *     stdout:       exactly one JSON document at the end, the same fields
 *                   as the Python worker's report; histograms are sent as
 *                   {counts index: count} in HdrHistogram's own index scheme
 *                   (1 us .. 60 s, 3 significant digits), which merge.py
 *                   pours into real HdrHistograms. On failure:
 *                   {"ok": false, "error": "..."} and exit status 1.
 *   loadgen --index-of   reads integers (us) on stdin and prints the counts
 *                   index of each, so a test can check it against hdrh.
 *
 * One thread, one level-triggered epoll set over non-blocking sockets. A
 * client keeps one connection and sends one request at a time on it: at once
 * when it is free (closed loop) or when the schedule says (open loop: every
 * request that is due is released at one wake-up of the loop, and the next
 * release is due no closer than BATCH_HORIZON_S after a wake-up, so a high
 * rate costs one wake-up per batch, not per request). The release deadline
 * is the epoll_pwait2 timeout itself (nanoseconds), so a release costs one
 * system call, not three (epoll_wait, then read and timerfd_settime of a
 * timerfd). Kernels before 5.11 lack epoll_pwait2: there the timeout is
 * epoll_wait's, rounded up to a millisecond, and the report says so
 * (coarse_timer; late starts then show the coarser schedule).
 *
 * Echo replies do not get wake-ups of their own in open loop: while every due
 * request has a connection, the loop sleeps (clock_nanosleep) through
 * replies to the next release and reads what has arrived then, with a
 * zero-timeout epoll, before it releases. Each reply is timed by the
 * kernel's receive timestamp (SO_TIMESTAMPNS), not by when it was read, so
 * the sleep is in no latency; a request that waits for a connection makes
 * replies wake the loop again (lazy_ok says when). Without it a wake-up's
 * fixed cost, the kernel's going to sleep and being woken, came twice per
 * request at rates too low for batches: once for the release, once for
 * the reply.
 *
 * What the horizon costs: a request due while the loop sleeps goes out at
 * the next wake-up, up to BATCH_HORIZON_S after its due time (about half
 * that on average when the rate exceeds 1 / BATCH_HORIZON_S; at lower rates
 * each request has its own wake-up at its due time and only the wake-up
 * latency remains). That delay is in the corrected latency (measured from
 * the due time) and not in the uncorrected one; the report gives its mean
 * (send_lag_mean_s) and the release wake-ups' lag (wake_lag_*), so a reader
 * can tell the generator's share from the server's.
 *
 * Every echo byte is compared with the message sent; a file reply must have
 * the header "OK <size>" and exactly size bytes, and a sampled fraction is
 * SHA-256 hashed (libcrypto) and compared. An http client keeps its
 * connection alive and sends GET after GET; replies are classified by h11's
 * rules, as the Python engine's h11 parser does (see "http" below). A
 * timeauth request is one login: prompt, name, ACK, password, time line
 * (see "timeauth" below). Outcomes
 * use the Python engine's taxonomy (bench/loadgen/clients.py, recording.py).
 *
 * End of run: at the window's end nothing new is sent; replies in flight
 * get up to DRAIN_S to arrive (so no unread bytes make close() send a
 * reset), then every connection is closed with a FIN.
 *
 * Error handling: bad job JSON or a failed setup is reported as the one
 * error document. Connect and request failures are data, classified and
 * counted. SIGALRM (the default action kills) is armed grace_s past the
 * planned end as a backstop; the parent has its own, longer, timeout.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24  /* include/uapi/linux/in.h, for older libc headers */
#endif
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#ifdef HAVE_LIBCRYPTO
#include <openssl/evp.h>
#endif

/* HdrHistogram layout for lowest 1, highest 60e6, 3 significant digits:
 * the constants hdrh derives (bench/histograms.py reads them from
 * hdrh; tests/test_loadgen_native.py checks this arithmetic against it). */
#define HIGHEST_US 60000000LL
#define SUB_BUCKET_MASK 2047LL
#define UNIT_MAGNITUDE 0
#define HALF_COUNT_MAGNITUDE 10
#define HALF_COUNT 1024
#define BUCKET_SHIFT 11
#define COUNTS_LEN 17408

/* Read buffers, shared by all connections of the worker (each reply chunk is
 * checked before the next read): 64 KiB holds any usual echo message in one
 * read; 256 KiB cuts the reads per MiB of file body fourfold. */
#define ECHO_BUFFER (64 * 1024)
#define FILE_BUFFER (256 * 1024)
/* A file reply header is "OK <size>\n" or "ERR <code> <reason>\n"; the
 * Python engine's MAX_HEADER. */
#define MAX_HEADER 512
/* An HTTP reply head (status line and headers) may take up to 16 KiB: h11's
 * default max_incomplete_event_size, the Python engine's bound, so both
 * engines call the same over-long head corrupt. */
#define MAX_HTTP_HEAD (16 * 1024)
/* Digits of a Content-Length h11 accepts (CONTENT_LENGTH_MAX_DIGITS). */
#define MAX_LENGTH_DIGITS 20
/* Pause before retrying a failed connect, as the Python engine does: a
 * closed port refuses in ~30 us and retrying at once would spin a core. */
#define RETRY_DELAY_S 0.01
/* A start later than this after its due time is a late start (schedule.py's
 * LATE_TOLERANCE_S). */
#define LATE_TOLERANCE_S 0.001
/* Open loop: the release timer is armed no closer than this after a wake-up,
 * so at high rates one wake-up releases a batch. 75 us is about two vCPU
 * wake-ups here: small against any queueing worth studying, and it bounds
 * how late a batched request goes out. */
#define BATCH_HORIZON_S 0.000075
/* Open loop: replies are read at the release wake-ups (not at a wake-up of
 * their own) only if a whole reply fits in the socket's receive window, so a
 * server never waits on a full window while the worker sleeps. The smallest
 * receive window Linux opens with is ~64 KiB (tcp_rmem's default 128 KiB
 * halved); 32 KiB leaves room. */
#define LAZY_REPLY_MAX (32 * 1024)
/* End of run: how long replies still in flight may take to arrive before
 * the connections are closed; a healthy server needs microseconds. */
#define DRAIN_S 0.2
/* Open files a worker needs besides one per client (worker.py's FD_SLACK). */
#define FD_SLACK 64
/* Events taken per epoll_wait: a few calls per round of 1000 connections. */
#define MAX_EVENTS 512
/* Timer slack asked for, as schedule.py does: the kernel's default 50 us
 * would be added to open-loop wake-ups. */
#define TIMER_SLACK_NS 1000
/* Distinct ERR reply texts and errno names kept (more are lumped). */
#define MAX_NAMED 16
/* The worker's own caveats: at most a couple can arise (open files, libcrypto). */
#define MAX_WARNINGS 4
/* Initial sizes of growable buffers (they double as needed): a job line and
 * a short run's report fit in 64 KiB; 4096 timeline pairs cover a few
 * seconds of intervals. */
#define INITIAL_BUFFER (64 * 1024)
#define INITIAL_PAIRS 4096

enum cstate { C_NONE, C_RETRY, C_CONNECTING, C_IDLE, C_BUSY, C_CLOSED };
enum { ERR_RESET, ERR_TIMEOUT, ERR_CLOSED_EARLY, ERR_SHORT, ERR_CORRUPT, ERR_DENIED, ERR_HTTP_3XX, ERR_HTTP_4XX, ERR_HTTP_5XX, N_ERR };
/* bench/vocabulary.py's REQUEST_ERRORS (http_Nxx: HTTP_FAILURES) */
static const char *ERR_NAMES[N_ERR] = {"reset", "timeout", "closed_early", "short", "corrupt", "denied", "http_3xx", "http_4xx", "http_5xx"};
/* http chunked body: a chunk's size line, its data, the CRLF after it, the trailer */
enum { CH_SIZE, CH_DATA, CH_CRLF, CH_TRAILER };
/* timeauth: what the next reply byte of a connection belongs to */
enum { TA_PROMPT, TA_ACK, TA_TIME, TA_ERR };
enum { CO_OK, CO_REFUSED, CO_RESET, CO_TIMEOUT, CO_EMFILE, CO_EADDRNOTAVAIL, CO_OTHER, N_CO };
static const char *CO_NAMES[N_CO] = {"ok", "refused", "reset", "timeout", "emfile", "eaddrnotavail", "other"};

struct file_target { char *line; size_t line_len; long long size; unsigned char sha[32]; int has_sha; };

struct conn {
    int fd;
    enum cstate state;
    int file_pos;
    long long served;             /* requests on the current connection */
    int completed;                /* this client completed a request in the window */
    double t_int, t_sent, t_first, t_connect;
    long long got;                /* reply bytes received for the request in flight */
    const char *out; size_t out_left;  /* request bytes not yet sent */
    int want_out;                 /* EPOLLOUT registered */
    /* file service */
    int in_header; char header[MAX_HEADER + 1]; int header_len;
    long long size, left; int target;
    /* http: a head split over reads (allocated only then), the reply's
     * failure (an ERR_HTTP_* or -1), its body still to come (-1: until the
     * server closes), and whether the server closes after it */
    char *head; int head_len; int failure; long long body_left; int close_after;
    /* http, a chunked body: CH_* phase, bytes left of the chunk, of its CRLF matched */
    int chunked, chunk_phase, crlf_pos; long long chunk_left;
    /* timeauth: TA_*, prompt bytes matched, the request in flight sent its name */
    int ta_expect, ta_matched, ta_named;
#ifdef HAVE_LIBCRYPTO
    EVP_MD_CTX *sha;
#endif
    /* open loop idle list */
    struct conn *idle_prev, *idle_next; int in_idle;
};

struct named { char name[96]; long long n; };

static struct {
    /* job */
    int index, clients, client_offset, cpu, echo, http, timeauth, open_loop, rpc, path_random;
    char *login_name, *login_password; size_t login_name_len, login_password_len;
    unsigned long long path_rng;
    double rate, phase_s, grace_s, warmup_s, duration_s, connect_timeout, request_timeout, sample, interval;
    long long message_bytes;
    char ip[64]; int port; int v6;
    /* source addresses taken in turn, one per connect (job "source_ips"); none: the kernel's choice */
    struct in_addr *sources; int n_sources; unsigned next_source;
    struct file_target *files; int n_files;
    unsigned long long seed;
    /* run */
    double run_start, window_start, window_end;
    int ep;
    int coarse;                   /* no epoll_pwait2: millisecond timeouts */
    unsigned char *buf; size_t buf_size;
    char *message;
    struct conn *conns;
    int *retry_q; double *retry_at; int rq_head, rq_len;
    int busy;
    int stopping;
    double sample_acc;
    /* open loop */
    long long released, started; double t0, step, t_stop, release_at;
    struct conn *idle_head, *idle_tail;
    long long wakeups, late_starts, late_generator;
    double lag_max, lag_sum;
    double send_lag_sum; long long send_lag_n;   /* send time - due time, requests due in the window */
    /* open loop: replies read at release wake-ups (lazy_ok) */
    int lazy_fits, ts_ok, ts_broken;
    int n_want_out;               /* connections waiting for EPOLLOUT (connecting, or output pending) */
    long long waits, lazy_waits, ts_missing, ts_clamped;
    long long real_offset_ns;     /* CLOCK_REALTIME - CLOCK_MONOTONIC, for kernel receive timestamps */
    /* stats */
    long long payload_bytes, requests;
    long long errors[N_ERR], connects[N_CO];
    struct named other_errnos[MAX_NAMED]; int n_other;
    struct named err_replies[MAX_NAMED]; int n_err_replies;
    long long idle_lost;
    uint32_t *latency, *ttfb, *uncorrected, *connect_h, *lag_h, *censored;
    long long clients_served;
    /* timeline: one dense array for the interval being filled (completions
     * arrive in time order), flushed to (index, count) pairs when it moves */
    long long k0; int tl_len; double tl_origin, tl_inv;
    int tl_cur; uint32_t *tl_counts; int *tl_touched; int tl_ntouched;
    long long *tl_n; int *tl_start;       /* per interval: count, first pair */
    int *tl_pair_idx; uint32_t *tl_pair_n; int tl_pairs, tl_pairs_cap;
    char warnings[MAX_WARNINGS][400]; int n_warnings;
} G;

/* ------------------------------------------------------------------ output */

struct out { char *p; size_t len, cap; };

static void out_grow(struct out *o, size_t more) {
    if (o->len + more + 1 <= o->cap) return;
    size_t cap = o->cap ? o->cap : INITIAL_BUFFER;
    while (cap < o->len + more + 1) cap *= 2;
    char *p = realloc(o->p, cap);
    if (!p) { fputs("loadgen: out of memory\n", stderr); _exit(1); }
    o->p = p; o->cap = cap;
}

static void outf(struct out *o, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    out_grow(o, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(o->p + o->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    o->len += (size_t)n;
}

/* A JSON string; bytes outside printable ASCII become '?' or \uXXXX escapes,
 * so the document is valid UTF-8 whatever a server sent. */
static void out_str(struct out *o, const char *s) {
    outf(o, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') outf(o, "\\%c", c);
        else if (c < 0x20) outf(o, "\\u%04x", c);
        else if (c >= 0x80) outf(o, "?");
        else outf(o, "%c", c);
    }
    outf(o, "\"");
}

static void write_all(int fd, const char *p, size_t n) {
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0) fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) { if (errno == EINTR) continue; return; }
        p += w; n -= (size_t)w;
    }
}

static void fail_run(const char *fmt, ...) {
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct out o = {0};
    outf(&o, "{\"ok\": false, \"error\": ");
    out_str(&o, msg);
    outf(&o, "}");
    write_all(1, o.p, o.len);
    exit(1);
}

/* ------------------------------------------------------------------ JSON in */

enum jtype { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };
struct jnode { enum jtype type; char *key; double num; char *str; struct jnode *child, *next; };

static const char *jp;

static void jws(void) { while (*jp == ' ' || *jp == '\t' || *jp == '\n' || *jp == '\r') jp++; }

static void put_utf8(char **w, unsigned cp) {
    char *q = *w;
    if (cp < 0x80) *q++ = (char)cp;
    else if (cp < 0x800) { *q++ = (char)(0xC0 | cp >> 6); *q++ = (char)(0x80 | (cp & 0x3F)); }
    else if (cp < 0x10000) { *q++ = (char)(0xE0 | cp >> 12); *q++ = (char)(0x80 | ((cp >> 6) & 0x3F)); *q++ = (char)(0x80 | (cp & 0x3F)); }
    else { *q++ = (char)(0xF0 | cp >> 18); *q++ = (char)(0x80 | ((cp >> 12) & 0x3F)); *q++ = (char)(0x80 | ((cp >> 6) & 0x3F)); *q++ = (char)(0x80 | (cp & 0x3F)); }
    *w = q;
}

static unsigned hex4(void) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = *jp++;
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else fail_run("bad \\u escape in the job JSON");
    }
    return v;
}

static char *jstring(void) {
    if (*jp != '"') fail_run("job JSON: expected a string");
    jp++;
    char *s = malloc(strlen(jp) + 1), *w = s;   /* decoded text is never longer */
    if (!s) fail_run("out of memory");
    while (*jp != '"') {
        if (!*jp) fail_run("job JSON: unterminated string");
        if (*jp != '\\') { *w++ = *jp++; continue; }
        jp++;
        char c = *jp++;
        switch (c) {
        case 'n': *w++ = '\n'; break;
        case 't': *w++ = '\t'; break;
        case 'r': *w++ = '\r'; break;
        case 'b': *w++ = '\b'; break;
        case 'f': *w++ = '\f'; break;
        case 'u': {
            unsigned cp = hex4();
            if (cp >= 0xD800 && cp < 0xDC00 && jp[0] == '\\' && jp[1] == 'u') {
                jp += 2;
                unsigned lo = hex4();
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            put_utf8(&w, cp);
            break;
        }
        default: *w++ = c;
        }
    }
    jp++;
    *w = 0;
    return s;
}

static struct jnode *jvalue(void) {
    struct jnode *n = calloc(1, sizeof *n);
    if (!n) fail_run("out of memory");
    jws();
    if (*jp == '{' || *jp == '[') {
        int obj = *jp == '{';
        n->type = obj ? J_OBJ : J_ARR;
        jp++;
        struct jnode **tail = &n->child;
        jws();
        if (*jp == (obj ? '}' : ']')) { jp++; return n; }
        for (;;) {
            char *key = NULL;
            if (obj) {
                jws();
                key = jstring();
                jws();
                if (*jp++ != ':') fail_run("job JSON: expected ':'");
            }
            struct jnode *kid = jvalue();
            kid->key = key;
            *tail = kid; tail = &kid->next;
            jws();
            if (*jp == ',') { jp++; continue; }
            if (*jp == (obj ? '}' : ']')) { jp++; return n; }
            fail_run("job JSON: expected ',' or a closing bracket");
        }
    }
    if (*jp == '"') { n->type = J_STR; n->str = jstring(); return n; }
    if (!strncmp(jp, "true", 4)) { n->type = J_BOOL; n->num = 1; jp += 4; return n; }
    if (!strncmp(jp, "false", 5)) { n->type = J_BOOL; jp += 5; return n; }
    if (!strncmp(jp, "null", 4)) { n->type = J_NULL; jp += 4; return n; }
    char *end;
    n->num = strtod(jp, &end);
    if (end == jp) fail_run("job JSON: unexpected character %.20s", jp);
    n->type = J_NUM;
    jp = end;
    return n;
}

static struct jnode *jget(struct jnode *obj, const char *key) {
    for (struct jnode *k = obj ? obj->child : NULL; k; k = k->next)
        if (k->key && !strcmp(k->key, key)) return k;
    return NULL;
}

static double jnum(struct jnode *obj, const char *key, int required, double dflt) {
    struct jnode *v = jget(obj, key);
    if (!v || v->type == J_NULL) {
        if (required) fail_run("job: field %s missing", key);
        return dflt;
    }
    if (v->type != J_NUM && v->type != J_BOOL) fail_run("job: field %s must be a number", key);
    return v->num;
}

static const char *jstr(struct jnode *obj, const char *key) {
    struct jnode *v = jget(obj, key);
    if (!v || v->type != J_STR) fail_run("job: field %s must be a string", key);
    return v->str;
}

static char *read_line(void) {
    size_t cap = INITIAL_BUFFER, len = 0;
    char *s = malloc(cap);
    if (!s) fail_run("out of memory");
    int c;
    while ((c = getchar()) != EOF && c != '\n') {
        if (len + 2 > cap) { cap *= 2; s = realloc(s, cap); if (!s) fail_run("out of memory"); }
        s[len++] = (char)c;
    }
    if (c == EOF && len == 0) { free(s); return NULL; }
    s[len] = 0;
    return s;
}

/* ------------------------------------------------------------------ time, histograms */

static inline double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* hdrh's counts index of a value in microseconds (histograms.index_of). */
static inline int index_of(long long v) {
    if (v > HIGHEST_US) v = HIGHEST_US;
    if (v < 0) v = 0;
    int bucket = (64 - __builtin_clzll((unsigned long long)(v | SUB_BUCKET_MASK))) - BUCKET_SHIFT;
    return ((bucket + 1) << HALF_COUNT_MAGNITUDE) + (int)(v >> (bucket + UNIT_MAGNITUDE)) - HALF_COUNT;
}

static inline int us_index(double seconds) { return index_of((long long)(seconds * 1e6)); }

static uint32_t *new_counts(void) {
    uint32_t *c = calloc(COUNTS_LEN, sizeof *c);
    if (!c) fail_run("out of memory");
    return c;
}

static void tl_flush(void) {
    if (G.tl_cur < 0) return;
    G.tl_start[G.tl_cur] = G.tl_pairs;
    for (int i = 0; i < G.tl_ntouched; i++) {
        int idx = G.tl_touched[i];
        if (G.tl_pairs == G.tl_pairs_cap) {
            G.tl_pairs_cap = G.tl_pairs_cap ? G.tl_pairs_cap * 2 : INITIAL_PAIRS;
            G.tl_pair_idx = realloc(G.tl_pair_idx, G.tl_pairs_cap * sizeof(int));
            G.tl_pair_n = realloc(G.tl_pair_n, G.tl_pairs_cap * sizeof(uint32_t));
            if (!G.tl_pair_idx || !G.tl_pair_n) fail_run("out of memory");
        }
        G.tl_pair_idx[G.tl_pairs] = idx;
        G.tl_pair_n[G.tl_pairs++] = G.tl_counts[idx];
        G.tl_counts[idx] = 0;
    }
    G.tl_ntouched = 0;
}

/* One request answered whole and correct at t_done (recording.py's complete). */
static void record_complete(struct conn *c, double t_done, long long nbytes) {
    if (t_done >= G.window_end) return;
    int idx = us_index(t_done - c->t_int);
    int k = (int)((t_done - G.tl_origin) * G.tl_inv);
    if (k >= G.tl_len) k = G.tl_len - 1;
    if (k < 0) k = 0;
    if (k != G.tl_cur) {
        if (k > G.tl_cur) { tl_flush(); G.tl_cur = k; }
        else k = G.tl_cur;  /* read after a later one (kernel-timed replies of one wake-up): its neighbour's interval */
    }
    if (G.tl_counts[idx]++ == 0) G.tl_touched[G.tl_ntouched++] = idx;
    G.tl_n[k]++;
    if (t_done < G.window_start) return;
    G.requests++;
    if (!c->completed) { c->completed = 1; G.clients_served++; }
    G.payload_bytes += nbytes;
    G.latency[idx]++;
    G.ttfb[us_index(c->t_first - c->t_sent)]++;
    if (G.open_loop) G.uncorrected[us_index(t_done - c->t_sent)]++;
}

static inline int in_window(double t) { return G.window_start <= t && t < G.window_end; }

static void count_named(struct named *tab, int *n, const char *name) {
    for (int i = 0; i < *n; i++)
        if (!strcmp(tab[i].name, name)) { tab[i].n++; return; }
    if (*n == MAX_NAMED) name = "(other texts)";
    for (int i = 0; i < *n; i++)
        if (!strcmp(tab[i].name, name)) { tab[i].n++; return; }
    if (*n == MAX_NAMED) { tab[MAX_NAMED - 1].n++; return; }
    snprintf(tab[*n].name, sizeof tab[*n].name, "%s", name);
    tab[(*n)++].n = 1;
}

static void connect_failed(int err) {
    int o;
    switch (err) {
    case ECONNREFUSED: o = CO_REFUSED; break;
    case ECONNRESET: case ECONNABORTED: case EPIPE: o = CO_RESET; break;
    case ETIMEDOUT: o = CO_TIMEOUT; break;
    case EMFILE: o = CO_EMFILE; break;
    case EADDRNOTAVAIL: o = CO_EADDRNOTAVAIL; break;
    default: o = CO_OTHER;
    }
    G.connects[o]++;
    if (o == CO_OTHER) {
        const char *name = strerrorname_np(err);
        char fallback[32];
        if (!name) { snprintf(fallback, sizeof fallback, "%d", err); name = fallback; }
        count_named(G.other_errnos, &G.n_other, name);
    }
}

/* ------------------------------------------------------------------ connections */

static void start_connect(struct conn *c);
static int wait_events(struct epoll_event *evs, int max, double seconds);
static void send_request(struct conn *c, double t_intended);
static void conn_ready(struct conn *c);

static void set_events(struct conn *c, int want_out) {
    if (c->want_out == want_out) return;
    struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.u64 = (uint64_t)(c - G.conns)};
    epoll_ctl(G.ep, EPOLL_CTL_MOD, c->fd, &ev);
    G.n_want_out += want_out - c->want_out;
    c->want_out = want_out;
}

static void idle_remove(struct conn *c) {
    if (!c->in_idle) return;
    if (c->idle_prev) c->idle_prev->idle_next = c->idle_next; else G.idle_head = c->idle_next;
    if (c->idle_next) c->idle_next->idle_prev = c->idle_prev; else G.idle_tail = c->idle_prev;
    c->idle_prev = c->idle_next = NULL;
    c->in_idle = 0;
}

static void free_sha(struct conn *c) {
#ifdef HAVE_LIBCRYPTO
    if (c->sha) { EVP_MD_CTX_free(c->sha); c->sha = NULL; }
#else
    (void)c;
#endif
}

/* Close the connection; abort = reset (a failed stream), else FIN. */
static void close_conn(struct conn *c, int abort) {
    if (c->state == C_BUSY) G.busy--;
    idle_remove(c);
    free_sha(c);
    free(c->head); c->head = NULL; c->head_len = 0;
    if (c->fd >= 0) {
        if (abort) {
            struct linger l = {1, 0};
            setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
        }
        close(c->fd);  /* also removes it from the epoll set */
        c->fd = -1;
    }
    c->state = C_NONE;
    G.n_want_out -= c->want_out;
    c->want_out = 0;
}

static void schedule_retry(struct conn *c) {
    c->state = C_RETRY;
    int slot = (G.rq_head + G.rq_len) % G.clients;
    G.retry_q[slot] = (int)(c - G.conns);
    G.retry_at[slot] = now() + RETRY_DELAY_S;
    G.rq_len++;
}

static void start_connect(struct conn *c) {
    if (G.stopping) { c->state = C_CLOSED; return; }
    c->t_connect = now();
    int fd = socket(G.v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) { connect_failed(errno); schedule_retry(c); return; }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    /* kernel receive timestamps: what lets replies be read late and timed right (lazy_ok) */
    if (G.lazy_fits && setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one) < 0) G.ts_broken = 1;
    if (G.n_sources && !G.v6) {
        /* Bind the source address only: IP_BIND_ADDRESS_NO_PORT leaves the port to
         * connect(), which picks it per 4-tuple instead of reserving one per address. */
        struct sockaddr_in src = {.sin_family = AF_INET, .sin_addr = G.sources[G.next_source++ % (unsigned)G.n_sources]};
        if (setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one) < 0 ||
            bind(fd, (struct sockaddr *)&src, sizeof src) < 0) {
            connect_failed(errno);
            close(fd);
            schedule_retry(c);
            return;
        }
    }
    int r;
    if (G.v6) {
        struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)G.port)};
        inet_pton(AF_INET6, G.ip, &a.sin6_addr);
        r = connect(fd, (struct sockaddr *)&a, sizeof a);
    } else {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)G.port)};
        inet_pton(AF_INET, G.ip, &a.sin_addr);
        r = connect(fd, (struct sockaddr *)&a, sizeof a);
    }
    if (r < 0 && errno != EINPROGRESS) {
        connect_failed(errno);
        close(fd);
        schedule_retry(c);
        return;
    }
    c->fd = fd;
    c->state = C_CONNECTING;
    c->want_out = 1;
    G.n_want_out++;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u64 = (uint64_t)(c - G.conns)};
    if (epoll_ctl(G.ep, EPOLL_CTL_ADD, fd, &ev) < 0) fail_run("epoll_ctl: %s", strerror(errno));
}

static void connected(struct conn *c) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
        connect_failed(err);
        close_conn(c, 0);
        schedule_retry(c);
        return;
    }
    G.connects[CO_OK]++;
    G.connect_h[us_index(now() - c->t_connect)]++;
    c->served = 0;
    c->ta_expect = TA_PROMPT;  /* timeauth: the server greets every connection with its prompt */
    c->ta_matched = 0;
    c->state = C_IDLE;
    set_events(c, 0);
    conn_ready(c);
}

/* A request failed after connect: count it, reset the stream, reconnect. */
static void fail_request(struct conn *c, int kind, double t) {
    if (in_window(t)) G.errors[kind]++;
    close_conn(c, 1);
    start_connect(c);
}

/* The stream ended (EOF or error) outside fail_request. */
static void lost(struct conn *c, int err) {
    if (c->state == C_BUSY) {
        int kind = err ? ERR_RESET : c->got == 0 ? ERR_CLOSED_EARLY : ERR_SHORT;
        double t = now();
        if (in_window(t)) G.errors[kind]++;
    } else {
        G.idle_lost++;
    }
    close_conn(c, 0);
    start_connect(c);
}

static void finish(struct conn *c, double t, long long nbytes) {
    c->state = C_IDLE;
    G.busy--;
    free_sha(c);
    c->served++;
    record_complete(c, t, nbytes);
    if ((G.rpc && c->served >= G.rpc) || c->close_after) {
        close_conn(c, 0);
        start_connect(c);
    } else {
        conn_ready(c);
    }
}

static void flush_out(struct conn *c) {
    while (c->out_left) {
        ssize_t w = send(c->fd, c->out, c->out_left, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR) { set_events(c, 1); return; }
            lost(c, errno);
            return;
        }
        c->out += w;
        c->out_left -= (size_t)w;
    }
    set_events(c, 0);
}

#ifdef HAVE_LIBCRYPTO
/* Whether the next file reply is hashed: exactly `sample` of them, evenly spread. */
static int take_sample(void) {
    if (G.sample <= 0.0) return 0;
    G.sample_acc += G.sample;
    if (G.sample_acc >= 1.0) { G.sample_acc -= 1.0; return 1; }
    return 0;
}
#endif

/* path_order random: the worker's own generator (xorshift64*, seeded per
 * worker like the Python engine's random.Random(seed); another sequence
 * than Python's, the same spread over the paths). */
static int next_random_path(void) {
    unsigned long long x = G.path_rng;
    x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
    G.path_rng = x;
    return (int)(((x * 0x2545F4914F6CDD1DULL) >> 33) % (unsigned long long)G.n_files);
}

static void send_request(struct conn *c, double t_intended) {
    double t = now();
    c->t_int = t_intended < 0 ? t : t_intended;
    c->t_sent = t;
    c->got = 0;
    c->state = C_BUSY;
    G.busy++;
    if (G.echo) {
        c->out = G.message;
        c->out_left = (size_t)G.message_bytes;
    } else if (G.timeauth) {
        c->ta_named = 0;
        c->header_len = 0;
        if (c->ta_expect != TA_ACK) return;  /* the name goes out when the prompt is in */
        c->ta_named = 1;
        c->out = G.login_name;
        c->out_left = G.login_name_len;
    } else {
        if (G.path_random) c->file_pos = next_random_path();
        struct file_target *f = &G.files[c->file_pos];
        c->target = c->file_pos;
        c->file_pos = (c->file_pos + 1) % G.n_files;
        c->size = f->size;
        c->left = 0;
        c->in_header = 1;
        c->header_len = 0;
        c->failure = -1;
        c->close_after = 0;
        c->chunked = 0;
#ifdef HAVE_LIBCRYPTO
        if (f->has_sha && take_sample()) {
            c->sha = EVP_MD_CTX_new();
            if (!c->sha || !EVP_DigestInit_ex(c->sha, EVP_sha256(), NULL)) fail_run("libcrypto: cannot start SHA-256");
        }
#endif
        c->out = f->line;
        c->out_left = f->line_len;
    }
    flush_out(c);
}

/* ------------------------------------------------------------------ dispatch */

static void start_next(struct conn *c) {
    double intended = G.t0 + (double)G.started * G.step;
    G.started++;
    send_request(c, intended);
    if (!in_window(intended)) return;
    double lag = c->t_sent - intended;  /* the generator's part of this request's corrected latency */
    G.send_lag_sum += lag;
    G.send_lag_n++;
    if (lag > LATE_TOLERANCE_S) G.late_starts++;
}

/* A connection is free (just connected or just answered). */
static void conn_ready(struct conn *c) {
    if (G.stopping) { close_conn(c, 0); c->state = C_CLOSED; return; }
    if (!G.open_loop) { send_request(c, -1.0); return; }
    if (G.started < G.released) { start_next(c); return; }
    c->in_idle = 1;
    c->idle_next = NULL;
    c->idle_prev = G.idle_tail;
    if (G.idle_tail) G.idle_tail->idle_next = c; else G.idle_head = c;
    G.idle_tail = c;
}

/* Open loop: release every request due by t, start what has a free
 * connection, and set the next release deadline (G.release_at, the loop's
 * wake-up time) to the next due time but no closer than the batch horizon
 * after this wake-up. Called at every wake-up of the loop, whatever woke it:
 * a wake-up for a reply releases what has come due. A deadline already set
 * between the next due time and the horizon is kept, so wake-ups for replies
 * do not push a release later and later. */
static void release_due(double t) {
    double due_until = t < G.t_stop ? t : G.t_stop;
    long long released = due_until >= G.t0 ? (long long)((due_until - G.t0) / G.step) + 1 : 0;
    if (released > G.released) {
        double lag = t - (G.t0 + (double)G.released * G.step);
        if (lag < 0) lag = 0;
        if (lag > G.lag_max) G.lag_max = lag;
        if (in_window(t)) {  /* counted in the window, as the worker's CPU is */
            G.wakeups++;
            G.lag_sum += lag;
            G.lag_h[us_index(lag)]++;
        }
        G.released = released;
        while (G.started < G.released && G.idle_head) {
            struct conn *c = G.idle_head;
            idle_remove(c);
            double intended = G.t0 + (double)G.started * G.step;
            start_next(c);
            /* a free connection waited for this wake-up: the lateness is the generator's */
            if (c->t_sent - intended > LATE_TOLERANCE_S && in_window(intended)) G.late_generator++;
        }
    }
    double next_due = G.t0 + (double)G.released * G.step;
    if (next_due >= G.t_stop) { G.release_at = INFINITY; return; }
    double want = next_due > t + BATCH_HORIZON_S ? next_due : t + BATCH_HORIZON_S;
    if (G.release_at < next_due || G.release_at > want) G.release_at = want;
}

/* ------------------------------------------------------------------ replies */

/* Read what has arrived on c into G.buf; *t is when it arrived (monotonic).
 * With receive timestamps on (G.lazy_fits) that is the kernel's time of the
 * last segment read (SO_TIMESTAMPNS, CLOCK_REALTIME, moved to the monotonic
 * clock by G.real_offset_ns), so a reply read at a later wake-up is still
 * timed when it came; it is kept within [sent, now] (ts_clamped counts the
 * corrections, which a sane clock never needs). A read without a timestamp
 * is timed now; after timestamps have been seen it ends reading late for the
 * run (ts_broken). */
static ssize_t recv_reply(struct conn *c, double *t) {
    if (!G.lazy_fits) {
        /* A file body that is not hashed is only counted: MSG_TRUNC has the
         * kernel drop those bytes instead of copying them to G.buf, which at
         * ~1 GB/s was most of this worker's CPU. At most the bytes the reply
         * still owes, so what comes after it is read, and judged, as before. */
        int discard = !G.echo && !G.http && !G.timeauth && c->state == C_BUSY && !c->in_header && c->left > 0
#ifdef HAVE_LIBCRYPTO
                      && !c->sha
#endif
            ;
        size_t want = discard && (unsigned long long)c->left < G.buf_size ? (size_t)c->left : G.buf_size;
        ssize_t n = recv(c->fd, G.buf, want, discard ? MSG_TRUNC : 0);
        *t = now();
        return n;
    }
    union { char buf[CMSG_SPACE(sizeof(struct timespec))]; struct cmsghdr align; } ctl;
    struct iovec iov = {.iov_base = G.buf, .iov_len = G.buf_size};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf};
    ssize_t n = recvmsg(c->fd, &msg, 0);
    double t_now = now();
    *t = t_now;
    if (n <= 0) return n;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_TIMESTAMPNS) continue;
        struct timespec ts;
        memcpy(&ts, CMSG_DATA(cm), sizeof ts);
        long long mono_ns = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec - G.real_offset_ns;
        double arrived = (double)mono_ns * 1e-9;
        if (arrived > t_now) { arrived = t_now; G.ts_clamped++; }
        else if (c->state == C_BUSY && arrived < c->t_sent) { arrived = c->t_sent; G.ts_clamped++; }
        *t = arrived;
        G.ts_ok = 1;
        return n;
    }
    /* Before the first timestamp the kernel may still be turning them on (it
     * does so from a work queue): reads are prompt then, timed right by now. */
    G.ts_missing++;
    if (G.ts_ok) G.ts_broken = 1;
    return n;
}

static void echo_read(struct conn *c, ssize_t n, double t) {
    if (c->state != C_BUSY) { fail_request(c, ERR_CORRUPT, t); return; }  /* bytes nobody asked for */
    if (c->got == 0) c->t_first = t;
    if (c->got + n > G.message_bytes || memcmp(G.buf, G.message + c->got, (size_t)n) != 0) {
        fail_request(c, ERR_CORRUPT, t);
        return;
    }
    c->got += n;
    if (c->got == G.message_bytes) finish(c, t, c->got);
}

static int is_space(char ch) { return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\v' || ch == '\f'; }

/* Parse the header collected so far (without its newline), as the Python
 * engine does: exactly the two words "OK" and the expected size in plain
 * digits. Returns 0 when the body may follow, -1 when the request failed. */
static int file_header(struct conn *c, double t) {
    c->header[c->header_len] = 0;
    const char *words[3] = {0};
    int lens[3] = {0}, n = 0;
    for (const char *p = c->header; *p && n < 3;) {
        while (is_space(*p)) p++;
        if (!*p) break;
        words[n] = p;
        while (*p && !is_space(*p)) p++;
        lens[n] = (int)(p - words[n]);
        n++;
    }
    if (n == 2 && lens[0] == 2 && !strncmp(words[0], "OK", 2) && lens[1] <= 18) {
        long long size = 0;
        int digits = 1;
        for (int i = 0; i < lens[1]; i++) {
            if (words[1][i] < '0' || words[1][i] > '9') { digits = 0; break; }
            size = size * 10 + (words[1][i] - '0');
        }
        if (digits && size == c->size) { c->left = c->size; c->in_header = 0; return 0; }
    }
    if (n >= 1 && lens[0] == 3 && !strncmp(words[0], "ERR", 3)) {
        char text[81];
        snprintf(text, sizeof text, "%.80s", c->header);
        count_named(G.err_replies, &G.n_err_replies, text);
    }
    fail_request(c, ERR_CORRUPT, t);
    return -1;
}

static void http_read(struct conn *c, const unsigned char *p, size_t n, double t);
static void timeauth_read(struct conn *c, const unsigned char *p, size_t n, double t);

/* Reply bytes of a service other than echo: the file service's here, http's and timeauth's below. */
static void file_read(struct conn *c, ssize_t n, double t) {
    if (G.http) { http_read(c, G.buf, (size_t)n, t); return; }
    if (G.timeauth) { timeauth_read(c, G.buf, (size_t)n, t); return; }
    if (c->state != C_BUSY) { fail_request(c, ERR_CORRUPT, t); return; }
    if (c->got == 0) c->t_first = t;
    c->got += n;
    ssize_t pos = 0;
    if (c->in_header) {
        unsigned char *nl = memchr(G.buf, '\n', (size_t)n);
        ssize_t take = nl ? nl - G.buf : n;
        if (c->header_len + take > MAX_HEADER) { fail_request(c, ERR_CORRUPT, t); return; }
        memcpy(c->header + c->header_len, G.buf, (size_t)take);
        c->header_len += (int)take;
        if (!nl) return;
        if (file_header(c, t) < 0) return;
        pos = take + 1;
    }
    long long body = n - pos;
    if (body > c->left) { fail_request(c, ERR_CORRUPT, t); return; }
#ifdef HAVE_LIBCRYPTO
    if (body && c->sha) EVP_DigestUpdate(c->sha, G.buf + pos, (size_t)body);
#endif
    c->left -= body;
    if (c->left == 0) {
#ifdef HAVE_LIBCRYPTO
        if (c->sha) {
            unsigned char md[32];
            unsigned int len = 0;
            EVP_DigestFinal_ex(c->sha, md, &len);
            if (len != 32 || memcmp(md, G.files[c->target].sha, 32) != 0) { fail_request(c, ERR_CORRUPT, t); return; }
        }
#endif
        finish(c, t, c->size);
    }
}

/* ---------------------------------------------------------------- http
 * The Python engine's HttpConnection (bench/loadgen/clients.py) parses
 * replies with h11; these functions follow h11's rules for a reply to GET
 * so that both engines classify every reply alike: the head ends at the
 * first blank line ("\n\r?\n"; one "\r" before each "\n" is dropped), the
 * status line is "HTTP/d.d ddd[ reason]", header lines are "token:
 * value" (a line starting with a space or tab continues the one before),
 * Content-Length is digits (a comma list or repeated headers must agree),
 * Transfer-Encoding is "chunked" at most once (and then beats
 * Content-Length: the body is decoded as h11's ChunkedReader does), 1xx
 * heads are skipped, 204 and 304 have no body, and a head without either
 * length is a body that ends when the server closes. A 2xx must carry Content-Length equal to the
 * file's size and exactly that many bytes (hashed on the sampled fraction);
 * 3xx, 4xx and 5xx are failures of their own kind (http_Nxx), their body
 * read and the connection kept; anything else is corrupt. "Connection:
 * close" or HTTP/1.0 ends the connection after the reply. */

static int hexval(char ch);

static int lower(int ch) { return ch >= 'A' && ch <= 'Z' ? ch + ('a' - 'A') : ch; }

/* RFC 9110 token characters (h11's header name) */
static int tchar(unsigned char ch) {
    return (ch >= '0' && ch <= '9') || (lower(ch) >= 'a' && lower(ch) <= 'z') || (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* h11's vchar_or_obs_text: any byte but NUL and whitespace */
static int vchar(unsigned char ch) { return ch && !strchr(" \t\n\r\f\v", ch); }

static int name_is(const char *name, size_t len, const char *want) {
    if (strlen(want) != len) return 0;
    for (size_t i = 0; i < len; i++) if (lower((unsigned char)name[i]) != want[i]) return 0;
    return 1;
}

struct http_head { int status, v11, close, has_length, chunked, bad; char length[MAX_LENGTH_DIGITS + 1]; };

/* One comma-separated element of a header value, trimmed of spaces and tabs: [*p, end) -> [s, s+n) */
static int next_element(const char **p, const char *end, const char **s, size_t *n) {
    if (*p > end) return 0;
    const char *a = *p, *b = memchr(a, ',', (size_t)(end - a));
    if (!b) b = end;
    *p = b + 1;
    while (a < b && (*a == ' ' || *a == '\t')) a++;
    const char *z = b;
    while (z > a && (z[-1] == ' ' || z[-1] == '\t')) z--;
    *s = a; *n = (size_t)(z - a);
    return 1;
}

/* One logical header line (folded lines joined by a space). */
static void http_header(struct http_head *h, const char *line, size_t len) {
    size_t i = 0;
    while (i < len && tchar((unsigned char)line[i])) i++;
    if (i == 0 || i == len || line[i] != ':') { h->bad = 1; return; }
    const char *name = line;
    size_t name_len = i++;
    while (i < len && (line[i] == ' ' || line[i] == '\t')) i++;
    size_t end = len;
    while (end > i && (line[end - 1] == ' ' || line[end - 1] == '\t')) end--;
    for (size_t k = i; k < end; k++)
        if (!vchar((unsigned char)line[k]) && line[k] != ' ' && line[k] != '\t') { h->bad = 1; return; }
    const char *v = line + i, *vend = line + end, *s;
    size_t n;
    if (name_is(name, name_len, "content-length")) {
        const char *first = NULL;
        size_t first_n = 0;
        for (const char *p = v; next_element(&p, vend, &s, &n);) {
            if (!first) { first = s; first_n = n; }
            else if (n != first_n || memcmp(s, first, n)) { h->bad = 1; return; }
        }
        if (!first || first_n == 0 || first_n > MAX_LENGTH_DIGITS) { h->bad = 1; return; }
        for (size_t k = 0; k < first_n; k++) if (first[k] < '0' || first[k] > '9') { h->bad = 1; return; }
        if (h->has_length && (strlen(h->length) != first_n || memcmp(h->length, first, first_n))) { h->bad = 1; return; }
        memcpy(h->length, first, first_n);
        h->length[first_n] = 0;
        h->has_length = 1;
    } else if (name_is(name, name_len, "transfer-encoding")) {
        if (h->chunked || !name_is(v, (size_t)(vend - v), "chunked")) { h->bad = 1; return; }
        h->chunked = 1;
    } else if (name_is(name, name_len, "connection")) {
        for (const char *p = v; next_element(&p, vend, &s, &n);)
            if (name_is(s, n, "close")) h->close = 1;
    }
}

/* Parse a complete head [s, s+len) (its blank line included). */
static void http_parse_head(struct http_head *h, const char *s, size_t len) {
    static char logical[MAX_HTTP_HEAD + 1];
    size_t logical_len = 0;
    int have_logical = 0, first = 1;
    memset(h, 0, sizeof *h);
    const char *p = s, *end = s + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = (size_t)((nl ? nl : end) - p);
        const char *line = p;
        p += n + 1;
        if (n && line[n - 1] == '\r') n--;
        if (first) {
            first = 0;
            /* HTTP/d.d ddd[ reason] */
            if (n < 12 || memcmp(line, "HTTP/", 5) || line[5] < '0' || line[5] > '9' || line[6] != '.' ||
                line[7] < '0' || line[7] > '9' || line[8] != ' ') { h->bad = 1; return; }
            for (int k = 9; k < 12; k++) if (line[k] < '0' || line[k] > '9') { h->bad = 1; return; }
            if (n > 12 && line[12] != ' ') { h->bad = 1; return; }
            for (size_t k = 13; k < n; k++)
                if (!vchar((unsigned char)line[k]) && line[k] != ' ' && line[k] != '\t') { h->bad = 1; return; }
            h->status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
            h->v11 = line[5] > '1' || (line[5] == '1' && line[7] >= '1');
            continue;
        }
        if (n == 0) break;  /* the blank line */
        if (line[0] == ' ' || line[0] == '\t') {  /* obs-fold: continues the line before */
            if (!have_logical) { h->bad = 1; return; }
            size_t k = 0;
            while (k < n && (line[k] == ' ' || line[k] == '\t')) k++;
            logical[logical_len++] = ' ';
            memcpy(logical + logical_len, line + k, n - k);
            logical_len += n - k;
            continue;
        }
        if (have_logical) { http_header(h, logical, logical_len); if (h->bad) return; }
        memcpy(logical, line, n);
        logical_len = n;
        have_logical = 1;
    }
    if (have_logical) http_header(h, logical, logical_len);
    if (h->status < 100) h->bad = 1;  /* h11: no status class below 1xx */
}

/* Where the head in [s, s+len) ends (just past its blank line), searching
 * from `from`; 0 while it has not ended. */
static size_t http_head_end(const char *s, size_t len, size_t from) {
    for (size_t i = from; i < len; i++) {
        if (s[i] != '\n') continue;
        if (i + 1 < len && s[i + 1] == '\n') return i + 2;
        if (i + 2 < len && s[i + 1] == '\r' && s[i + 2] == '\n') return i + 3;
    }
    return 0;
}

/* The reply's status is in: set up the body, or fail. Returns 0 to go on. */
static int http_status(struct conn *c, const struct http_head *h, double t) {
    int cls = h->status / 100;
    c->close_after = h->close || !h->v11;
    if (cls == 2) {
        char want[32];
        snprintf(want, sizeof want, "%lld", c->size);
        /* (a 204 has no body: right only for an empty file) */
        if (!h->has_length || strcmp(h->length, want) || (h->status == 204 && c->size)) {
            fail_request(c, ERR_CORRUPT, t);
            return -1;
        }
        c->body_left = h->status == 204 ? 0 : c->size;
    } else {
        if (cls < 3 || cls > 5) { fail_request(c, ERR_CORRUPT, t); return -1; }
        c->failure = ERR_HTTP_3XX + (cls - 3);
        c->body_left = h->status == 304 ? 0 : h->has_length ? strtoll(h->length, NULL, 10) : -1;
    }
    if (h->chunked && h->status != 204 && h->status != 304) {  /* Transfer-Encoding beats Content-Length */
        c->chunked = 1;
        c->chunk_phase = CH_SIZE;
        c->body_left = -2;  /* neither 0 (done) nor -1 (until close): the chunks say */
    }
    return 0;
}

/* Body bytes [p, p+n) of the reply: counted (a 2xx may not exceed the file's size) and hashed. */
static int http_body(struct conn *c, const unsigned char *p, size_t n, double t) {
    c->got += (long long)n;
    if (c->failure >= 0) return 0;
    c->left += (long long)n;
    if (c->left > c->size) { fail_request(c, ERR_CORRUPT, t); return -1; }  /* more bytes than the file has */
#ifdef HAVE_LIBCRYPTO
    if (c->sha) EVP_DigestUpdate(c->sha, p, n);
#endif
    return 0;
}

/* Gather bytes of a chunk size line or of the trailer into c->head: up to
 * and including the first newline (line) or all there is (trailer). Returns
 * the bytes taken, or -1 if the head bound is exceeded. */
static long long chunk_gather(struct conn *c, const unsigned char *p, size_t n, int line) {
    if (!c->head && !(c->head = malloc(MAX_HTTP_HEAD))) fail_run("out of memory");
    const unsigned char *nl = line ? memchr(p, '\n', n) : NULL;
    size_t take = nl ? (size_t)(nl - p) + 1 : n;
    if ((size_t)c->head_len + take > MAX_HTTP_HEAD) return -1;
    memcpy(c->head + c->head_len, p, take);
    c->head_len += (int)take;
    return (long long)take;
}

/* A chunked body, h11's ChunkedReader: "HEX[;ext][OWS]\r\n", the chunk's
 * bytes, "\r\n", ..., "0\r\n", trailer lines, a blank line. Consumes
 * from *p; sets body_left to 0 when the body has ended. Returns -1 if the
 * request failed. */
static int http_chunked(struct conn *c, const unsigned char **pp, size_t *np, double t) {
    const unsigned char *p = *pp;
    size_t n = *np;
    while (n && c->body_left) {
        if (c->chunk_phase == CH_SIZE) {
            long long take = chunk_gather(c, p, n, 1);
            if (take < 0) { fail_request(c, ERR_CORRUPT, t); return -1; }
            c->got += take;
            p += take; n -= (size_t)take;
            if (c->head[c->head_len - 1] != '\n') continue;
            /* h11 ends the line at the first CRLF: a bare LF before it fails its pattern */
            int len = c->head_len - 1, k = 0;
            if (len < 1 || c->head[len - 1] != '\r') { fail_request(c, ERR_CORRUPT, t); return -1; }
            len--;
            unsigned long long size = 0;
            while (k < len && k < 21 && hexval(c->head[k]) >= 0) {
                size = size > (ULLONG_MAX >> 4) ? ULLONG_MAX : size << 4 | (unsigned)hexval(c->head[k]);
                k++;
            }
            int ok = k >= 1 && k <= 20;
            if (ok && k < len && c->head[k] != ';')
                for (int i = k; i < len; i++) if (c->head[i] != ' ' && c->head[i] != '\t') { ok = 0; break; }
            c->head_len = 0;
            if (!ok) { fail_request(c, ERR_CORRUPT, t); return -1; }
            if (size == 0) { c->chunk_phase = CH_TRAILER; continue; }
            c->chunk_left = size > (unsigned long long)LLONG_MAX ? LLONG_MAX : (long long)size;
            c->chunk_phase = CH_DATA;
        } else if (c->chunk_phase == CH_DATA) {
            size_t take = (long long)n < c->chunk_left ? n : (size_t)c->chunk_left;
            if (http_body(c, p, take, t) < 0) return -1;
            c->chunk_left -= (long long)take;
            p += take; n -= take;
            if (!c->chunk_left) { c->chunk_phase = CH_CRLF; c->crlf_pos = 0; }
        } else if (c->chunk_phase == CH_CRLF) {
            if (*p != "\r\n"[c->crlf_pos]) { fail_request(c, ERR_CORRUPT, t); return -1; }  /* malformed chunk footer */
            p++; n--;
            c->got++;
            if (++c->crlf_pos == 2) c->chunk_phase = CH_SIZE;
        } else {  /* CH_TRAILER: lines up to a blank one, as a head's */
            int before = c->head_len;
            long long take = chunk_gather(c, p, n, 0);
            if (take < 0) { fail_request(c, ERR_CORRUPT, t); return -1; }
            const char *s = c->head;
            size_t avail = (size_t)c->head_len, end;
            if (s[0] == '\n') end = 1;
            else if (s[0] == '\r' && avail < 2) end = 0;
            else if (s[0] == '\r' && s[1] == '\n') end = 2;
            else end = http_head_end(s, avail, before > 2 ? (size_t)before - 2 : 0);
            if (!end) {  /* all taken; wait for more */
                c->got += take;
                p += take; n -= (size_t)take;
                continue;
            }
            if (end > 2) {  /* trailer fields: header lines by the head's rules */
                struct http_head h;
                memset(&h, 0, sizeof h);
                const char *q = s, *stop = s + end;
                while (q < stop) {
                    const char *nl = memchr(q, '\n', (size_t)(stop - q));
                    size_t len = (size_t)(nl - q);
                    if (len && q[len - 1] == '\r') len--;
                    if (len && (q[0] == ' ' || q[0] == '\t')) { h.bad = 1; break; }  /* (a folded trailer: refused) */
                    if (len) http_header(&h, q, len);
                    if (h.bad) break;
                    q = nl + 1;
                }
                if (h.bad) { fail_request(c, ERR_CORRUPT, t); return -1; }
            }
            size_t used = end - (size_t)before;
            c->got += (long long)used;
            p += used; n -= used;
            c->head_len = 0;
            c->body_left = 0;
            c->chunked = 0;
        }
    }
    *pp = p;
    *np = n;
    return 0;
}

/* The whole reply is in. Returns 0 if the connection carries on with the
 * next request, -1 if it was closed or failed. */
static int http_end(struct conn *c, double t) {
    if (c->failure < 0) {
        if (c->left != c->size) { fail_request(c, ERR_CORRUPT, t); return -1; }  /* a chunked body short of the file */
#ifdef HAVE_LIBCRYPTO
        if (c->sha) {
            unsigned char md[32];
            unsigned int len = 0;
            EVP_DigestFinal_ex(c->sha, md, &len);
            if (len != 32 || memcmp(md, G.files[c->target].sha, 32) != 0) { fail_request(c, ERR_CORRUPT, t); return -1; }
        }
#endif
        finish(c, t, c->size);
    } else {
        /* the server answered, not with the file: a failure of its own kind, the connection kept */
        c->state = C_IDLE;
        G.busy--;
        free_sha(c);
        c->served++;
        if (in_window(t)) G.errors[c->failure]++;
        if ((G.rpc && c->served >= G.rpc) || c->close_after) { close_conn(c, 0); start_connect(c); }
        else conn_ready(c);
    }
    return c->state == C_BUSY ? 0 : -1;
}

/* Reply bytes [p, p+n) of an http connection. A read may end one reply and
 * begin the next (the closed loop sends the next request as soon as one
 * ends): what is left over is parsed as the next reply, as h11 keeps it. */
static void http_read(struct conn *c, const unsigned char *p, size_t n, double t) {
    while (n) {
        if (c->state != C_BUSY) {
            /* bytes nobody asked for; after a reply that closed the connection, nobody reads them */
            if (c->fd >= 0 && c->state == C_IDLE) fail_request(c, ERR_CORRUPT, t);
            return;
        }
        if (c->got == 0) c->t_first = t;
        if (c->in_header) {
            const char *s = (const char *)p;
            size_t avail = n, from = 0;
            if (c->head_len || (!c->head && !http_head_end(s, n, 0))) {
                /* the head spans reads: gather it */
                if (!c->head && !(c->head = malloc(MAX_HTTP_HEAD))) fail_run("out of memory");
                size_t room = (size_t)(MAX_HTTP_HEAD - c->head_len), take = n < room ? n : room;
                from = c->head_len > 2 ? (size_t)c->head_len - 2 : 0;
                memcpy(c->head + c->head_len, p, take);
                s = c->head;
                avail = (size_t)c->head_len + take;
            }
            if (avail && (s[0] == '\n' || (s[0] == '\r' && avail > 1 && s[1] == '\n') || (unsigned char)s[0] < 0x21)) {
                fail_request(c, ERR_CORRUPT, t);  /* h11: no status line / an illegal first byte */
                return;
            }
            size_t end = http_head_end(s, avail, from);
            if (!end) {
                if (avail >= MAX_HTTP_HEAD) { fail_request(c, ERR_CORRUPT, t); return; }
                c->got += (long long)n;
                c->head_len = (int)avail;
                return;
            }
            size_t used = end - (s == c->head ? (size_t)c->head_len : 0);  /* bytes of this read in the head */
            struct http_head h;
            http_parse_head(&h, s, end);
            free(c->head); c->head = NULL; c->head_len = 0;
            c->got += (long long)used;
            p += used; n -= used;
            if (h.bad) { fail_request(c, ERR_CORRUPT, t); return; }
            if (h.status < 200) continue;  /* 1xx: the real reply follows */
            c->in_header = 0;
            if (http_status(c, &h, t) < 0) return;
        } else if (c->chunked) {
            if (http_chunked(c, &p, &n, t) < 0) return;
        } else if (c->body_left != 0) {
            size_t take = c->body_left < 0 || (long long)n < c->body_left ? n : (size_t)c->body_left;
            if (http_body(c, p, take, t) < 0) return;
            if (c->body_left > 0) c->body_left -= (long long)take;
            p += take; n -= take;
        }
        if (!c->in_header && c->body_left == 0 && http_end(c, t) < 0) return;
    }
}

/* ---------------------------------------------------------------- timeauth
 * The Python engine's TimeAuthConnection (bench/loadgen/clients.py): a
 * request is one login on a kept connection. The "name?" prompt (on
 * connect, and after every time line) may arrive while the client is idle;
 * the name goes out once it is in, then the ACK byte is read, the password
 * sent and the "TIME ..." line read (at most MAX_HEADER bytes). The
 * server's "ERR 401" line is a refused login (denied), any other reply
 * corrupt (an ERR line's text kept as the file service's). */

static const char TA_PROMPT_TEXT[] = "name?\n";
#define TA_PROMPT_LEN (sizeof TA_PROMPT_TEXT - 1)
#define TA_ACK_BYTE 0x06

static void timeauth_line(struct conn *c, double t) {
    c->header[c->header_len] = 0;
    int expect = c->ta_expect;
    c->header_len = 0;
    if (expect == TA_TIME && !strncmp(c->header, "TIME ", 5)) {
        c->ta_expect = TA_PROMPT;
        finish(c, t, c->got);
        return;
    }
    if (!strncmp(c->header, "ERR 401", 7)) { fail_request(c, ERR_DENIED, t); return; }
    if (!strncmp(c->header, "ERR", 3)) {
        char text[81];
        size_t len = strlen(c->header);
        while (len && (c->header[len - 1] == '\n' || c->header[len - 1] == '\r' || c->header[len - 1] == ' ')) len--;
        snprintf(text, sizeof text, "%.*s", (int)(len < 80 ? len : 80), c->header);
        count_named(G.err_replies, &G.n_err_replies, text);
    }
    fail_request(c, ERR_CORRUPT, t);
}

static void timeauth_read(struct conn *c, const unsigned char *p, size_t n, double t) {
    while (n) {
        if (c->fd < 0 || (c->state != C_BUSY && c->state != C_IDLE)) return;  /* closed or recycled */
        if (c->ta_expect == TA_PROMPT) {  /* not part of a request's reply: it may come while idle */
            size_t take = TA_PROMPT_LEN - (size_t)c->ta_matched;
            if (take > n) take = n;
            if (memcmp(p, TA_PROMPT_TEXT + c->ta_matched, take)) { fail_request(c, ERR_CORRUPT, t); return; }
            p += take; n -= take;
            c->ta_matched += (int)take;
            if ((size_t)c->ta_matched == TA_PROMPT_LEN) {
                c->ta_matched = 0;
                c->ta_expect = TA_ACK;
                if (c->state == C_BUSY && !c->ta_named) {
                    c->ta_named = 1;
                    c->out = G.login_name;
                    c->out_left = G.login_name_len;
                    flush_out(c);
                }
            }
            continue;
        }
        if (c->state != C_BUSY || !c->ta_named) { fail_request(c, ERR_CORRUPT, t); return; }  /* bytes nobody asked for */
        if (c->got == 0) c->t_first = t;
        if (c->ta_expect == TA_ACK) {
            if (*p == TA_ACK_BYTE) {
                p++; n--;
                c->got++;
                c->ta_expect = TA_TIME;
                c->out = G.login_password;
                c->out_left = G.login_password_len;
                flush_out(c);
                continue;
            }
            if (*p != 'E') { fail_request(c, ERR_CORRUPT, t); return; }  /* neither the ACK nor an error line */
            c->ta_expect = TA_ERR;  /* not the ACK: the server's error line */
        }
        const unsigned char *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p) + 1 : n;
        if ((size_t)c->header_len + take > MAX_HEADER) { fail_request(c, ERR_CORRUPT, t); return; }
        memcpy(c->header + c->header_len, p, take);
        c->header_len += (int)take;
        c->got += (long long)take;
        p += take; n -= take;
        if (nl) timeauth_line(c, t);
    }
}

static void on_event(struct conn *c, uint32_t ev) {
    if (c->state == C_CONNECTING) {
        if (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)) connected(c);
        return;
    }
    if (c->fd < 0) return;
    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        double t;
        ssize_t n = recv_reply(c, &t);
        if (n > 0) {
            if (G.echo) echo_read(c, n, t); else file_read(c, n, t);
        } else if (n == 0) {
            lost(c, 0);
        } else if (errno != EAGAIN && errno != EINTR) {
            lost(c, errno);
        }
        return;  /* level-triggered: pending output is retried on the next EPOLLOUT */
    }
    if ((ev & EPOLLOUT) && c->out_left) flush_out(c);
}

/* ------------------------------------------------------------------ setup */

static int hexval(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

static void warn(const char *fmt, ...) {
    if (G.n_warnings == MAX_WARNINGS) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(G.warnings[G.n_warnings++], sizeof G.warnings[0], fmt, ap);
    va_end(ap);
}

/* The GET of a file named relative to the root, as the Python engine sends
 * it (h11 writing spec.request_target's path and its two headers): the
 * name percent-encoded as urllib.parse.quote(name.lstrip("/"),
 * safe="/~!$&'()*+,;=:@") does. */
static char *http_request(const char *name) {
    while (*name == '/') name++;
    struct out o = {0};
    outf(&o, "GET /");
    for (const unsigned char *q = (const unsigned char *)name; *q; q++) {
        if ((*q >= 'A' && *q <= 'Z') || (*q >= 'a' && *q <= 'z') || (*q >= '0' && *q <= '9') || strchr("_.-~/!$&'()*+,;=:@", *q))
            outf(&o, "%c", *q);
        else
            outf(&o, "%%%02X", *q);
    }
    outf(&o, " HTTP/1.1\r\nHost: %s%s%s:%d\r\nUser-Agent: sockbench\r\n\r\n", G.v6 ? "[" : "", G.ip, G.v6 ? "]" : "", G.port);
    return o.p;
}

/* The job's source addresses (bench.loadgen.spec.source_addresses): IPv4 only, as given there. */
static void parse_sources(struct jnode *list) {
    if (!list) return;
    if (list->type != J_ARR) fail_run("job: field source_ips must be a list of IPv4 addresses");
    for (struct jnode *a = list->child; a; a = a->next) G.n_sources++;
    if (!G.n_sources) return;
    G.sources = calloc((size_t)G.n_sources, sizeof *G.sources);
    if (!G.sources) fail_run("out of memory");
    int i = 0;
    for (struct jnode *a = list->child; a; a = a->next, i++)
        if (a->type != J_STR || inet_pton(AF_INET, a->str, &G.sources[i]) != 1)
            fail_run("job: source_ips[%d] is not an IPv4 address", i);
    G.next_source = (unsigned)G.index;  /* worker i starts at address i, so workers do not move in step */
}

static void parse_job(struct jnode *job) {
    struct jnode *spec = jget(job, "spec");
    if (!spec || spec->type != J_OBJ) fail_run("job: field spec missing");
    G.index = (int)jnum(job, "index", 1, 0);
    G.clients = (int)jnum(job, "clients", 1, 0);
    G.client_offset = (int)jnum(job, "client_offset", 1, 0);
    G.cpu = (int)jnum(job, "cpu", 0, -1);
    G.rate = jnum(job, "rate", 0, 0);
    G.phase_s = jnum(job, "phase_s", 0, 0);
    G.grace_s = jnum(job, "grace_s", 1, 0);
    G.seed = (unsigned long long)jnum(job, "seed", 1, 0);
    snprintf(G.ip, sizeof G.ip, "%s", jstr(job, "ip"));
    G.v6 = strchr(G.ip, ':') != NULL;
    G.port = (int)jnum(spec, "port", 1, 0);
    parse_sources(jget(job, "source_ips"));
    G.echo = !strcmp(jstr(spec, "service"), "echo");
    G.http = !strcmp(jstr(spec, "service"), "http");
    G.timeauth = !strcmp(jstr(spec, "service"), "timeauth");
    if (G.http) {
        /* This engine sends one GET at a time; a spec asking for another method or for
         * pipelining must not be measured as if it had been honoured. */
        struct jnode *method = jget(spec, "method");
        if (method && method->type == J_STR && strcmp(method->str, "GET"))
            fail_run("the native engine sends GET only, not %s: use engine python", method->str);
        if (jnum(spec, "pipeline", 0, 1) > 1)
            fail_run("the native engine does not pipeline http requests: use engine python");
    }
    if (G.timeauth) {
        /* NAME:PASSWORD, the password all after the first colon; each sent as a line */
        const char *login = jstr(spec, "login"), *colon = strchr(login, ':');
        if (!colon || colon == login) fail_run("job: the timeauth service needs a login NAME:PASSWORD");
        G.login_name_len = (size_t)(colon - login) + 1;
        G.login_password_len = strlen(colon + 1) + 1;
        G.login_name = malloc(G.login_name_len);
        G.login_password = malloc(G.login_password_len);
        if (!G.login_name || !G.login_password) fail_run("out of memory");
        memcpy(G.login_name, login, G.login_name_len - 1);
        G.login_name[G.login_name_len - 1] = '\n';
        memcpy(G.login_password, colon + 1, G.login_password_len - 1);
        G.login_password[G.login_password_len - 1] = '\n';
    }
    struct jnode *order = jget(spec, "path_order");
    G.path_random = order && order->type == J_STR && !strcmp(order->str, "random");
    G.open_loop = !strcmp(jstr(spec, "mode"), "open");
    G.warmup_s = jnum(spec, "warmup_s", 1, 0);
    G.duration_s = jnum(spec, "duration_s", 1, 0);
    G.message_bytes = (long long)jnum(spec, "message_bytes", 1, 0);
    G.rpc = (int)jnum(spec, "requests_per_connection", 1, 0);
    G.connect_timeout = jnum(spec, "connect_timeout_s", 1, 0);
    G.request_timeout = jnum(spec, "request_timeout_s", 1, 0);
    G.sample = jnum(spec, "checksum_sample", 1, 0);
    G.interval = jnum(spec, "timeline_interval_s", 1, 0);
    if (G.clients < 1) fail_run("job: clients must be >= 1");
    if (G.interval <= 0) fail_run("job: timeline_interval_s must be > 0");
    if (G.open_loop && G.rate <= 0) fail_run("job: open loop needs a rate > 0");
    if (G.echo && G.message_bytes < 1) fail_run("job: message_bytes must be >= 1");
    if (!G.echo && !G.timeauth) {
        struct jnode *files = jget(spec, "files");
        if (!files || files->type != J_ARR || !files->child) fail_run("job: the file service needs files");
        for (struct jnode *f = files->child; f; f = f->next) G.n_files++;
        G.files = calloc((size_t)G.n_files, sizeof *G.files);
        int i = 0;
        int known = 0;  /* files whose SHA-256 is given */
        for (struct jnode *f = files->child; f; f = f->next, i++) {
            const char *name = jstr(f, "name");
            size_t len = strlen(name);
            if (G.http) {
                G.files[i].line = http_request(name);
                G.files[i].line_len = strlen(G.files[i].line);
            } else {
                G.files[i].line = malloc(len + 2);
                memcpy(G.files[i].line, name, len);
                G.files[i].line[len] = '\n';
                G.files[i].line[len + 1] = 0;
                G.files[i].line_len = len + 1;
            }
            G.files[i].size = (long long)jnum(f, "size", 1, 0);
            const char *sha = jstr(f, "sha256");
            if (strlen(sha) == 64) {
                G.files[i].has_sha = 1;
                for (int b = 0; b < 32; b++) {
                    int hi = hexval(sha[2 * b]), lo = hexval(sha[2 * b + 1]);
                    if (hi < 0 || lo < 0) fail_run("job: bad sha256 for %s", name);
                    G.files[i].sha[b] = (unsigned char)(hi << 4 | lo);
                }
                known++;
            }
        }
        (void)known;
#ifndef HAVE_LIBCRYPTO
        if (known && G.sample > 0)
            warn("native engine built without libcrypto (no openssl/evp.h): file checksums were not verified, "
                 "only header and size; install libssl-dev to verify them");
#endif
    }
}

static void raise_nofile(rlim_t needed) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || needed <= rl.rlim_cur) return;
    rlim_t target = rl.rlim_max == RLIM_INFINITY || needed < rl.rlim_max ? needed : rl.rlim_max;
    rl.rlim_cur = target;
    setrlimit(RLIMIT_NOFILE, &rl);
    if (target < needed)
        warn("a worker needs %llu open files for its clients but the hard limit is %llu: connects beyond it fail "
             "with EMFILE (conn_emfile); raise it (ulimit -Hn) or use more workers",
             (unsigned long long)needed, (unsigned long long)rl.rlim_max);
}

static void setup(void) {
    if (G.cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(G.cpu, &set);
        if (sched_setaffinity(0, sizeof set, &set) < 0) fail_run("sched_setaffinity(%d): %s", G.cpu, strerror(errno));
    }
    raise_nofile((rlim_t)G.clients + FD_SLACK);
    signal(SIGPIPE, SIG_IGN);
    prctl(PR_SET_TIMERSLACK, TIMER_SLACK_NS, 0, 0, 0);
    G.buf_size = G.echo ? ECHO_BUFFER : FILE_BUFFER;
    G.path_rng = G.seed * 0x9E3779B97F4A7C15ULL + 0x632BE59BD9B4E019ULL;  /* seeded per worker */
    G.buf = malloc(G.buf_size);
    G.conns = calloc((size_t)G.clients, sizeof *G.conns);
    G.retry_q = calloc((size_t)G.clients, sizeof *G.retry_q);
    G.retry_at = calloc((size_t)G.clients, sizeof *G.retry_at);
    if (!G.buf || !G.conns || !G.retry_q || !G.retry_at) fail_run("out of memory");
    if (G.echo) {
        /* random bytes (xorshift64*, seeded per worker) so a server that mangles any byte is caught */
        G.message = malloc((size_t)G.message_bytes);
        if (!G.message) fail_run("out of memory");
        unsigned long long x = G.seed * 0x9E3779B97F4A7C15ULL + 1;
        for (long long i = 0; i < G.message_bytes; i++) {
            x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
            G.message[i] = (char)((x * 0x2545F4914F6CDD1DULL) >> 56);
        }
    }
    for (int i = 0; i < G.clients; i++) {
        G.conns[i].fd = -1;
        G.conns[i].file_pos = G.n_files ? (G.client_offset + i) % G.n_files : 0;
    }
    G.latency = new_counts(); G.ttfb = new_counts(); G.uncorrected = new_counts();
    G.connect_h = new_counts(); G.lag_h = new_counts(); G.tl_counts = new_counts(); G.censored = new_counts();
    G.tl_touched = calloc(COUNTS_LEN, sizeof(int));
    G.ep = epoll_create1(EPOLL_CLOEXEC);
    if (G.ep < 0) fail_run("epoll_create1: %s", strerror(errno));
    struct epoll_event probe;
    if (wait_events(&probe, 1, 0.0) < 0 && errno == ENOSYS) G.coarse = 1;  /* reported as coarse_timer */
}

/* ------------------------------------------------------------------ run */

static void sleep_until(double t) {
    struct timespec ts = {.tv_sec = (time_t)t, .tv_nsec = (long)((t - floor(t)) * 1e9)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {}
}

/* epoll_wait for up to `seconds` (>= 0; the loop's deadlines are at most a
 * second ahead), to the nanosecond where the kernel has epoll_pwait2. */
static int wait_events(struct epoll_event *evs, int max, double seconds) {
#ifdef SYS_epoll_pwait2
    if (!G.coarse) {
        struct timespec ts = {.tv_sec = (time_t)seconds};
        ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
        return (int)syscall(SYS_epoll_pwait2, G.ep, evs, max, &ts, NULL, 0);
    }
#else
    G.coarse = 1;
#endif
    return epoll_wait(G.ep, evs, max, (int)ceil(seconds * 1000.0));
}

static void sweep(double t) {
    for (int i = 0; i < G.clients; i++) {
        struct conn *c = &G.conns[i];
        if (c->state == C_BUSY && t - c->t_sent > G.request_timeout) {
            /* no latency, but known to have waited this long: censored (worker.py's report) */
            if (in_window(t)) G.censored[us_index(t - c->t_int)]++;
            fail_request(c, ERR_TIMEOUT, t);
        }
        else if (c->state == C_CONNECTING && t - c->t_connect > G.connect_timeout) {
            G.connects[CO_TIMEOUT]++;
            close_conn(c, 0);
            schedule_retry(c);
        }
    }
}

/* Wait until `until` (monotonic seconds) or an event, and handle the events.
 * The timeout is taken from a fresh clock reading: the caller may have spent
 * a while sending a batch since its own. */
static void poll_once(double until) {
    struct epoll_event evs[MAX_EVENTS];
    double t = now();
    if (until > t && in_window(t)) G.waits++;
    int n = wait_events(evs, MAX_EVENTS, until > t ? until - t : 0.0);
    if (n < 0 && errno != EINTR) fail_run("epoll_wait: %s", strerror(errno));
    for (int i = 0; i < n; i++) on_event(&G.conns[evs[i].data.u64], evs[i].events);
}

/* The offset that moves kernel receive timestamps (CLOCK_REALTIME) to the
 * loop's clock; taken at every lazy wake-up, so a step of the wall clock
 * mistimes at most the replies read at one wake-up. */
static void clock_offset(void) {
    struct timespec real, mono;
    clock_gettime(CLOCK_REALTIME, &real);
    clock_gettime(CLOCK_MONOTONIC, &mono);
    G.real_offset_ns = ((long long)real.tv_sec - mono.tv_sec) * 1000000000LL + (real.tv_nsec - mono.tv_nsec);
}

/* Open loop: may the loop sleep through replies and read them at its next
 * release wake-up? Only while nothing waits on a reply: every due request
 * has a connection (a reply would free one for a waiting request: then the
 * reply must wake the loop), no connect is in progress and no output is
 * pending (both need EPOLLOUT), the service is echo with replies that fit
 * in the receive window (LAZY_REPLY_MAX) and the kernel has been seen to
 * time-stamp them. */
static inline int lazy_ok(void) {
    return G.lazy_fits && G.ts_ok && !G.ts_broken && G.started >= G.released && G.n_want_out == 0;
}

/* Sleep until `until` without waking for socket events, then read what has
 * arrived (epoll with a zero timeout: one more system call per wake-up, one
 * wake-up fewer per reply). The replies are timed by the kernel's receive
 * timestamps (recv_reply), so the sleep is not in their latency. */
static void lazy_wait(double until) {
    double t = now();
    if (until > t) {
        if (in_window(t)) { G.waits++; G.lazy_waits++; }
        sleep_until(until);
    }
    clock_offset();
    struct epoll_event evs[MAX_EVENTS];
    int n;
    do {
        n = wait_events(evs, MAX_EVENTS, 0.0);
        if (n < 0 && errno != EINTR) fail_run("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++) on_event(&G.conns[evs[i].data.u64], evs[i].events);
    } while (n == MAX_EVENTS);
}

struct end { double cpu_s, wall_s, start_late, pending_oldest; long long connecting, pending, unstarted; };

static struct end run(void) {
    struct end e = {0};
    G.window_start = G.run_start + G.warmup_s;
    G.window_end = G.window_start + G.duration_s;
    G.k0 = (long long)floor((G.run_start - G.window_start) / G.interval);
    G.tl_origin = G.window_start + (double)G.k0 * G.interval;
    G.tl_len = (int)ceil((G.window_end - G.tl_origin) / G.interval);
    if (G.tl_len < 1) G.tl_len = 1;
    G.tl_inv = 1.0 / G.interval;
    G.tl_n = calloc((size_t)G.tl_len, sizeof *G.tl_n);
    G.tl_start = calloc((size_t)G.tl_len + 1, sizeof *G.tl_start);
    if (!G.tl_n || !G.tl_start) fail_run("out of memory");
    for (int k = 0; k <= G.tl_len; k++) G.tl_start[k] = -1;
    G.tl_cur = -1;
    G.sample_acc = 1.0;  /* the first file reply of each worker is verified */
    if (G.open_loop) {
        G.step = 1.0 / G.rate;
        G.t0 = G.run_start + G.phase_s;
        G.t_stop = G.window_end;
        /* Replies read late (lazy_ok): echo only, whose reply is one exchange
         * of a known size. Other services' replies are not bounded in advance
         * (an error page, a file of any size), or take several exchanges
         * each of which would wait for a release. */
        G.lazy_fits = G.echo && G.message_bytes <= LAZY_REPLY_MAX;
        clock_offset();
    }
    /* ten checks per timeout (10% detection error), every 10 ms to 1 s */
    double tmo = G.request_timeout < G.connect_timeout ? G.request_timeout : G.connect_timeout;
    double period = tmo / 10 < 0.01 ? 0.01 : tmo / 10 > 1.0 ? 1.0 : tmo / 10;

    sleep_until(G.run_start);
    double t = now();
    e.start_late = t - G.run_start;
    double cpu_mark = 0, wall_mark = 0;
    int marked = 0;
    if (G.warmup_s <= 0) { cpu_mark = cpu_seconds(); wall_mark = now(); marked = 1; }
    for (int i = 0; i < G.clients; i++) start_connect(&G.conns[i]);
    if (G.open_loop) { G.released = 0; G.release_at = G.t0; }
    double next_sweep = t + period;
    for (;;) {
        t = now();
        if (!marked && t >= G.window_start) { cpu_mark = cpu_seconds(); wall_mark = t; marked = 1; }
        if (t >= G.window_end) break;
        if (G.open_loop) release_due(t);
        while (G.rq_len && G.retry_at[G.rq_head] <= t) {
            struct conn *c = &G.conns[G.retry_q[G.rq_head]];
            G.rq_head = (G.rq_head + 1) % G.clients;
            G.rq_len--;
            start_connect(c);
        }
        if (t >= next_sweep) { sweep(t); next_sweep = t + period; }
        double until = G.window_end < next_sweep ? G.window_end : next_sweep;
        if (!marked && G.window_start < until) until = G.window_start;
        if (G.rq_len && G.retry_at[G.rq_head] < until) until = G.retry_at[G.rq_head];
        if (G.open_loop && G.release_at < until) until = G.release_at;
        if (lazy_ok()) lazy_wait(until); else poll_once(until);
    }
    if (!marked) { cpu_mark = cpu_seconds(); wall_mark = G.window_start; }
    double cpu_end = cpu_seconds(), wall_end = now();
    G.stopping = 1;
    t = wall_end;
    /* A request in flight at the window end is censored only if it has waited
     * longer than every request completed in the window (recording.py's
     * censor_in_flight: shorter ones balance those in flight when it opened). */
    int longest = -1;
    for (int i = COUNTS_LEN - 1; i >= 0; i--) if (G.latency[i]) { longest = i; break; }
    for (int i = 0; i < G.clients; i++) {
        struct conn *c = &G.conns[i];
        if (c->state == C_CONNECTING) e.connecting++;
        if (c->state == C_BUSY) {
            int idx = us_index(G.window_end - c->t_int);
            if (idx > longest) G.censored[idx]++;
            e.pending++;
            if (t - c->t_sent > e.pending_oldest) e.pending_oldest = t - c->t_sent;
        }
    }
    e.unstarted = G.released - G.started;
    for (long long i = G.started; i < G.released; i++)  /* due and never sent: censored from the due time */
        G.censored[us_index(G.window_end - (G.t0 + (double)i * G.step))]++;
    /* Clean end: nothing new is sent; cancel connects, close idle connections,
     * and give replies in flight DRAIN_S to arrive so that closing sends a FIN. */
    for (int i = 0; i < G.clients; i++) {
        struct conn *c = &G.conns[i];
        if (c->state == C_CONNECTING || c->state == C_IDLE) { close_conn(c, 0); c->state = C_CLOSED; }
        else if (c->state == C_RETRY) c->state = C_CLOSED;
    }
    G.rq_len = 0;
    double drain_end = now() + DRAIN_S;
    while (G.busy > 0 && (t = now()) < drain_end) poll_once(drain_end);
    for (int i = 0; i < G.clients; i++) if (G.conns[i].fd >= 0) close_conn(&G.conns[i], 0);
    if (G.ts_broken && G.lazy_waits)
        warn("kernel receive timestamps stopped during the run (%lld reads without one): from then on the open "
             "loop woke for every reply; the read that found one missing was timed when it was read, up to one "
             "release interval late", G.ts_missing);
    tl_flush();
    e.wall_s = wall_end - wall_mark > 1e-9 ? wall_end - wall_mark : 1e-9;
    e.cpu_s = cpu_end - cpu_mark;
    return e;
}

/* ------------------------------------------------------------------ report */

static void out_counts(struct out *o, const char *name, const uint32_t *c, int first) {
    outf(o, "%s\"%s\": {", first ? "" : ", ", name);
    int sep = 0;
    for (int i = 0; i < COUNTS_LEN; i++)
        if (c[i]) { outf(o, "%s\"%d\": %u", sep ? ", " : "", i, c[i]); sep = 1; }
    outf(o, "}");
}

static void out_named(struct out *o, const char *key, struct named *tab, int n, long long extra_idle) {
    outf(o, ", \"%s\": {", key);
    for (int i = 0; i < n; i++) {
        if (i) outf(o, ", ");
        out_str(o, tab[i].name);
        outf(o, ": %lld", tab[i].n);
    }
    if (extra_idle) outf(o, "%s\"idle_lost\": %lld", n ? ", " : "", extra_idle);
    outf(o, "}");
}

static double lag_percentile(double pct) {
    long long total = 0;
    for (int i = 0; i < COUNTS_LEN; i++) total += G.lag_h[i];
    if (!total) return 0;
    long long target = (long long)(pct * (double)total / 100 + 0.5), seen = 0;
    if (target < 1) target = 1;
    for (int i = 0; i < COUNTS_LEN; i++) {
        seen += G.lag_h[i];
        if (seen >= target) {
            /* lowest value of bucket i (the figure is for a warning, not a column) */
            int bucket = (i >> HALF_COUNT_MAGNITUDE) - 1, sub = (i & (HALF_COUNT - 1)) + HALF_COUNT;
            if (bucket < 0) { bucket = 0; sub -= HALF_COUNT; }
            return (double)((long long)sub << (bucket + UNIT_MAGNITUDE)) / 1e6;
        }
    }
    return 0;
}

static void report(struct end *e) {
    struct out o = {0};
    outf(&o, "{\"ok\": true, \"index\": %d, \"loop\": \"native\", \"engine\": \"native\"", G.index);
    outf(&o, ", \"requests\": %lld, \"payload_bytes\": %lld", G.requests, G.payload_bytes);
    outf(&o, ", \"late_starts\": %lld, \"late_starts_generator\": %lld", G.late_starts, G.late_generator);
    outf(&o, ", \"errors\": {");
    for (int i = 0; i < N_ERR; i++) outf(&o, "%s\"%s\": %lld", i ? ", " : "", ERR_NAMES[i], G.errors[i]);
    outf(&o, "}, \"connects\": {");
    for (int i = 0; i < N_CO; i++) outf(&o, "%s\"%s\": %lld", i ? ", " : "", CO_NAMES[i], G.connects[i]);
    outf(&o, "}");
    out_named(&o, "other_errnos", G.other_errnos, G.n_other, 0);
    out_named(&o, "notes", NULL, 0, G.idle_lost);
    out_named(&o, "err_replies", G.err_replies, G.n_err_replies, 0);
    outf(&o, ", \"histograms\": {");
    out_counts(&o, "latency", G.latency, 1);
    out_counts(&o, "ttfb", G.ttfb, 0);
    out_counts(&o, "connect", G.connect_h, 0);
    out_counts(&o, "censored", G.censored, 0);
    if (G.open_loop) out_counts(&o, "latency_uncorrected", G.uncorrected, 0);
    outf(&o, "}, \"timeline\": {\"k0\": %lld, \"n\": [", G.k0);
    for (int k = 0; k < G.tl_len; k++) outf(&o, "%s%lld", k ? ", " : "", G.tl_n[k]);
    outf(&o, "], \"lat\": [");
    for (int k = 0; k < G.tl_len; k++) {
        outf(&o, "%s{", k ? ", " : "");
        int start = G.tl_start[k];
        if (start >= 0) {
            int end = G.tl_pairs;
            for (int j = k + 1; j < G.tl_len; j++) if (G.tl_start[j] >= 0) { end = G.tl_start[j]; break; }
            for (int p = start; p < end; p++) outf(&o, "%s\"%d\": %u", p > start ? ", " : "", G.tl_pair_idx[p], G.tl_pair_n[p]);
        }
        outf(&o, "}");
    }
    outf(&o, "]}");
    outf(&o, ", \"cpu_s\": %.6f, \"window_wall_s\": %.6f, \"cpu_pct\": %.3f", e->cpu_s, e->wall_s, 100.0 * e->cpu_s / e->wall_s);
    outf(&o, ", \"start_late_s\": %.6f, \"connecting_at_end\": %lld", e->start_late, e->connecting);
    outf(&o, ", \"clients_served\": %lld", G.clients_served);
    outf(&o, ", \"source_addrs\": %d", G.n_sources > 1 ? G.n_sources : 1);
    outf(&o, ", \"pending_requests\": %lld, \"pending_oldest_s\": %.6f, \"unstarted\": %lld", e->pending, e->pending_oldest, e->unstarted);
    outf(&o, ", \"coarse_timer\": %s, \"loop_errors\": 0, \"loop_error_samples\": []", G.open_loop && G.coarse ? "true" : "false");
    outf(&o, ", \"wakeups\": %lld, \"wake_lag_mean_s\": %.6f, \"wake_lag_p99_s\": %.6f, \"wake_lag_max_s\": %.6f",
         G.wakeups, G.wakeups ? G.lag_sum / (double)G.wakeups : 0.0, lag_percentile(99.0), G.lag_max);
    outf(&o, ", \"waits\": %lld, \"lazy_waits\": %lld, \"send_lag_mean_s\": %.9f, \"send_lag_n\": %lld",
         G.waits, G.lazy_waits, G.send_lag_n ? G.send_lag_sum / (double)G.send_lag_n : 0.0, G.send_lag_n);
    outf(&o, ", \"rx_timestamps\": %s, \"rx_timestamps_missing\": %lld, \"rx_timestamps_clamped\": %lld",
         G.lazy_fits && G.ts_ok ? "true" : "false", G.ts_missing, G.ts_clamped);
    outf(&o, ", \"warnings\": [");
    for (int i = 0; i < G.n_warnings; i++) { if (i) outf(&o, ", "); out_str(&o, G.warnings[i]); }
    outf(&o, "]}");
    write_all(1, o.p, o.len);
}

static int index_of_mode(void) {
    long long v;
    while (scanf("%lld", &v) == 1) printf("%d\n", index_of(v));
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--index-of")) return index_of_mode();
    int ready_fd = argc > 1 ? atoi(argv[1]) : -1;
    /* stdout carries only the report (report() and fail_run()); nothing else here prints */
    char *line = read_line();
    if (!line) fail_run("no job on stdin");
    jp = line;
    struct jnode *job = jvalue();
    if (job->type != J_OBJ) fail_run("job JSON: expected an object");
    parse_job(job);
    setup();
    if (ready_fd >= 0) {
        if (write(ready_fd, "r", 1) != 1) fail_run("cannot signal readiness: %s", strerror(errno));
        close(ready_fd);
    }
    char *go = read_line();
    if (!go) fail_run("the parent closed stdin before sending the start time");
    jp = go;
    struct jnode *start = jvalue();
    double start_wall = jnum(start, "start_wall", 1, 0);
    struct timespec rt;
    clock_gettime(CLOCK_REALTIME, &rt);
    double wall = (double)rt.tv_sec + rt.tv_nsec * 1e-9;
    G.run_start = now() + (start_wall - wall);
    double until_end = (start_wall - wall > 0 ? start_wall - wall : 0) + G.warmup_s + G.duration_s;
    alarm((unsigned)ceil(until_end + G.grace_s));
    struct end e = run();
    alarm(0);
    report(&e);
    return 0;
}
