/*
 * sockbench reference echo client: closed loop, many connections, one thread.
 *
 * It measures what the machine can do so that sockbench's own Python load
 * generator can be compared against it (bench calibrate). It is as plain as
 * the server: one epoll set, level-triggered, non-blocking sockets.
 *
 * Usage:
 *   echo_client --host H --port P [--connections N] [--size M]
 *               [--duration S] [--warmup S] [--connect-mode]
 *
 * Persistent mode (default): N connections are opened first. Each sends M
 * bytes, waits until M bytes have come back (compared with what was sent),
 * records the round trip and sends again, until the run ends.
 *
 * Connect mode (--connect-mode): each of N slots repeatedly connects, sends
 * M bytes, reads M bytes back and closes. Latency is from the start of
 * connect() to the last byte of the answer. This is the connect+request+close
 * rate; every cycle leaves one socket in TIME-WAIT on the client side.
 *
 * The first --warmup seconds are run but not counted. Then, for --duration
 * seconds, every round trip that completes is counted and its latency goes
 * into a log-linear histogram (64 linear steps per power of two of
 * nanoseconds: under 1.6% error). At the end one JSON line is printed:
 *   {"mode": ..., "connections": N, "message_bytes": M, "round_trips": R,
 *    "duration_s": D, "rt_per_s": R/D, "p50_us": ..., "p90_us": ...,
 *    "p99_us": ..., "max_us": ..., "mean_us": ..., "cpu_pct": ...,
 *    "errors": E, "connect_errors": C}
 * cpu_pct is this process's user+system CPU over the measured window, in
 * percent of one core. Percentiles are null when nothing completed.
 *
 * Error handling: a connection that fails (reset, early close, wrong bytes)
 * is counted in "errors" and, in persistent mode, dropped; in connect mode
 * the slot starts over. Failing to open the persistent connections at the
 * start is fatal: one line on stderr, exit 1. Every wait is bounded by the
 * end of the run, so the client always exits after warmup + duration.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Histogram: 2^SUB_BITS linear sub-buckets per power of two of nanoseconds. */
#define SUB_BITS 6
#define SUB (1u << SUB_BITS)
#define HIST_BUCKETS ((64 - SUB_BITS + 1) * SUB)
/* Events taken per epoll_wait: a few calls per round of 1000 connections. */
#define MAX_EVENTS 256
/* Scratch for received bytes; large enough that a 1 MiB echo needs few reads. */
#define RECV_BYTES (64 * 1024)
/* Opening the persistent connections must not hang on a dead server. */
#define CONNECT_TIMEOUT_MS 5000
/* Waiting for the server to finish echoing what is in flight at the end:
 * a healthy server needs microseconds; a stuck one must not hold us. */
#define DRAIN_MS 1000

enum state { IDLE, CONNECTING, ACTIVE };

struct conn {
    int fd;
    enum state state;
    size_t sent, received;
    uint32_t events;
    int64_t t_start;
};

static struct {
    const char *host, *port;
    int connections;
    size_t size;
    double duration, warmup;
    int connect_mode;
} opt = {NULL, NULL, 1, 1024, 1.0, 0.0, 0};

static int epfd;
static struct addrinfo *addr;
static unsigned char *payload, *scratch;
static uint64_t hist[HIST_BUCKETS];
static uint64_t round_trips, errors, connect_errors;
static int64_t lat_max, lat_sum_ns;
static int64_t measure_start, measure_end;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static unsigned bucket_of(uint64_t v) {
    if (v < SUB) return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v);
    return (e - SUB_BITS + 1) * SUB + (unsigned)((v >> (e - SUB_BITS)) & (SUB - 1));
}

static double bucket_mid(unsigned i) {
    if (i < SUB) return i;
    unsigned e = i / SUB + SUB_BITS - 1, sub = i % SUB;
    double width = (double)(1ull << (e - SUB_BITS));
    return (double)(1ull << e) + sub * width + width / 2;
}

static void record(int64_t start, int64_t end) {
    if (end < measure_start || end >= measure_end) return;
    int64_t ns = end - start;
    hist[bucket_of((uint64_t)ns)]++;
    round_trips++;
    lat_sum_ns += ns;
    if (ns > lat_max) lat_max = ns;
}

static void print_percentile(const char *name, double q) {
    if (round_trips == 0) {
        printf(", \"%s\": null", name);
        return;
    }
    uint64_t rank = (uint64_t)(q * (double)round_trips);
    if (rank < 1) rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += hist[i];
        if (seen >= rank) {
            double v = bucket_mid(i);
            if (v > (double)lat_max) v = (double)lat_max;
            printf(", \"%s\": %.1f", name, v / 1000.0);
            return;
        }
    }
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void set_events(struct conn *c, uint32_t want) {
    if (want == c->events) return;
    struct epoll_event ev = {.events = want, .data.ptr = c};
    epoll_ctl(epfd, c->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &ev);
    c->events = want;
}

static void drop(struct conn *c) {
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    c->state = IDLE;
    c->events = 0;
}

/* Start a non-blocking connect. Returns 0 on success or pending, -1 on error. */
static int start_connect(struct conn *c) {
    c->fd = socket(addr->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) return -1;
    c->events = 0;
    c->t_start = now_ns();
    if (connect(c->fd, addr->ai_addr, addr->ai_addrlen) < 0 && errno != EINPROGRESS) {
        drop(c);
        return -1;
    }
    c->state = CONNECTING;
    set_events(c, EPOLLOUT);
    return 0;
}

/* Send what remains of the message; keep reading meanwhile (the server echoes as we send). */
static int send_some(struct conn *c) {
    while (c->sent < opt.size) {
        ssize_t n = send(c->fd, payload + c->sent, opt.size - c->sent, MSG_NOSIGNAL);
        if (n > 0) c->sent += (size_t)n;
        else if (n < 0 && errno == EINTR) continue;
        else if (n < 0 && errno == EAGAIN) break;
        else return -1;
    }
    set_events(c, c->sent < opt.size ? EPOLLIN | EPOLLOUT : EPOLLIN);
    return 0;
}

static int begin_request(struct conn *c, int64_t t) {
    c->t_start = t;
    c->sent = c->received = 0;
    return send_some(c);
}

static void fail(struct conn *c) {
    errors++;
    drop(c);
}

static void on_connected(struct conn *c) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0) {
        connect_errors++;
        drop(c);
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->state = ACTIVE;
    c->sent = c->received = 0;
    /* Connect mode: the request follows at once and latency counts from
     * connect(). Persistent mode: requests start once every connection is open. */
    if (opt.connect_mode && send_some(c) < 0) fail(c);
}

static void on_readable(struct conn *c) {
    size_t want = opt.size - c->received;
    ssize_t n = recv(c->fd, scratch, want < RECV_BYTES ? want : RECV_BYTES, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n <= 0 || memcmp(scratch, payload + c->received, (size_t)n) != 0) {
        fail(c);
        return;
    }
    c->received += (size_t)n;
    if (c->received < opt.size) return;
    int64_t t = now_ns();
    record(c->t_start, t);
    if (opt.connect_mode) {
        drop(c);
    } else if (begin_request(c, t) < 0) {
        fail(c);
    }
}

static void serve(struct conn *c, uint32_t ready) {
    if (c->state == CONNECTING) {
        on_connected(c);
        return;
    }
    if ((ready & EPOLLOUT) && c->sent < opt.size && send_some(c) < 0) {
        fail(c);
        return;
    }
    if (ready & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(c);
}

/* Persistent mode: open one connection, blocking with a timeout. */
static int open_persistent(struct conn *c) {
    if (start_connect(c) < 0) return -1;
    struct pollfd p = {.fd = c->fd, .events = POLLOUT};
    if (poll(&p, 1, CONNECT_TIMEOUT_MS) != 1) {
        errno = ETIMEDOUT;
        return -1;
    }
    on_connected(c);
    return c->fd >= 0 ? 0 : -1;
}

/* Close politely: half-close each connection and read until the server's
 * EOF, so that no unread echo turns our close into a reset (which the server
 * would log as an error). Bounded by DRAIN_MS; whatever is left is closed. */
static void drain(struct conn *conns) {
    int open = 0;
    for (int i = 0; i < opt.connections; i++) {
        struct conn *c = &conns[i];
        if (c->fd < 0) continue;
        if (c->state != ACTIVE || shutdown(c->fd, SHUT_WR) < 0) {
            drop(c);
            continue;
        }
        set_events(c, EPOLLIN);
        open++;
    }
    int64_t deadline = now_ns() + (int64_t)DRAIN_MS * 1000000;
    struct epoll_event events[MAX_EVENTS];
    while (open > 0) {
        int64_t left = deadline - now_ns();
        if (left <= 0) break;
        int n = epoll_wait(epfd, events, MAX_EVENTS, (int)(left / 1000000) + 1);
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            ssize_t got = recv(c->fd, scratch, RECV_BYTES, 0);
            if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (got <= 0) {
                drop(c);
                open--;
            }
        }
    }
    for (int i = 0; i < opt.connections; i++) drop(&conns[i]);
}

static void usage(const char *argv0) {
    fprintf(stderr,
            "usage: %s --host H --port P [--connections N] [--size BYTES] [--duration S] [--warmup S] "
            "[--connect-mode]\n",
            argv0);
    exit(2);
}

static void parse_args(int argc, char **argv) {
    static struct option longopts[] = {
        {"host", required_argument, 0, 'h'},     {"port", required_argument, 0, 'p'},
        {"connections", required_argument, 0, 'c'}, {"size", required_argument, 0, 's'},
        {"duration", required_argument, 0, 'd'}, {"warmup", required_argument, 0, 'w'},
        {"connect-mode", no_argument, 0, 'C'},   {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
            case 'h': opt.host = optarg; break;
            case 'p': opt.port = optarg; break;
            case 'c': opt.connections = atoi(optarg); break;
            case 's': opt.size = (size_t)strtoull(optarg, NULL, 10); break;
            case 'd': opt.duration = atof(optarg); break;
            case 'w': opt.warmup = atof(optarg); break;
            case 'C': opt.connect_mode = 1; break;
            default: usage(argv[0]);
        }
    }
    if (!opt.host || !opt.port || opt.connections < 1 || opt.size < 1 || opt.duration <= 0 || opt.warmup < 0)
        usage(argv[0]);
}

int main(int argc, char **argv) {
    parse_args(argc, argv);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int rc = getaddrinfo(opt.host, opt.port, &hints, &addr);
    if (rc != 0) {
        fprintf(stderr, "echo_client: cannot resolve %s port %s: %s\n", opt.host, opt.port, gai_strerror(rc));
        return 1;
    }
    payload = malloc(opt.size);
    scratch = malloc(RECV_BYTES);
    struct conn *conns = calloc((size_t)opt.connections, sizeof *conns);
    if (!payload || !scratch || !conns) {
        fprintf(stderr, "echo_client: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < opt.size; i++) payload[i] = (unsigned char)(i * 31 + 7); /* not all-equal bytes */
    epfd = epoll_create1(EPOLL_CLOEXEC);

    int64_t t0 = now_ns();
    measure_start = t0 + (int64_t)(opt.warmup * 1e9);
    measure_end = measure_start + (int64_t)(opt.duration * 1e9);
    for (int i = 0; i < opt.connections; i++) {
        conns[i].fd = -1;
        if (opt.connect_mode) continue;
        if (open_persistent(&conns[i]) < 0) {
            fprintf(stderr, "echo_client: connection %d to %s port %s failed: %s\n", i + 1, opt.host, opt.port,
                    strerror(errno));
            return 1;
        }
    }
    if (!opt.connect_mode) { /* the clock starts once every connection is open */
        t0 = now_ns();
        measure_start = t0 + (int64_t)(opt.warmup * 1e9);
        measure_end = measure_start + (int64_t)(opt.duration * 1e9);
        for (int i = 0; i < opt.connections; i++)
            if (begin_request(&conns[i], now_ns()) < 0) fail(&conns[i]);
    }

    struct epoll_event events[MAX_EVENTS];
    double cpu0 = -1;
    for (;;) {
        int64_t t = now_ns();
        if (cpu0 < 0 && t >= measure_start) cpu0 = cpu_seconds();
        if (t >= measure_end) break;
        int idle = 0, live = 0;
        for (int i = 0; i < opt.connections; i++) {
            if (conns[i].fd >= 0) { live++; continue; }
            if (!opt.connect_mode) continue;
            if (start_connect(&conns[i]) < 0) { connect_errors++; idle++; } else live++;
        }
        if (live == 0 && !opt.connect_mode) break; /* every connection failed */
        int64_t next = cpu0 < 0 ? measure_start : measure_end;
        int timeout_ms = idle ? 1 : (int)((next - t) / 1000000) + 1; /* retry failed connects soon */
        int n = epoll_wait(epfd, events, MAX_EVENTS, timeout_ms);
        for (int i = 0; i < n; i++) serve(events[i].data.ptr, events[i].events);
    }
    double cpu = cpu0 < 0 ? 0 : cpu_seconds() - cpu0;
    double duration = opt.duration;

    printf("{\"mode\": \"%s\", \"connections\": %d, \"message_bytes\": %zu, \"round_trips\": %llu, "
           "\"duration_s\": %.6f, \"rt_per_s\": %.1f",
           opt.connect_mode ? "connect" : "persistent", opt.connections, opt.size,
           (unsigned long long)round_trips, duration, round_trips / duration);
    print_percentile("p50_us", 0.50);
    print_percentile("p90_us", 0.90);
    print_percentile("p99_us", 0.99);
    if (round_trips) printf(", \"max_us\": %.1f, \"mean_us\": %.1f", lat_max / 1000.0,
                            (double)lat_sum_ns / round_trips / 1000.0);
    else printf(", \"max_us\": null, \"mean_us\": null");
    printf(", \"cpu_pct\": %.1f, \"errors\": %llu, \"connect_errors\": %llu}\n", cpu / duration * 100.0,
           (unsigned long long)errors, (unsigned long long)connect_errors);
    fflush(stdout);

    drain(conns);
    close(epfd);
    freeaddrinfo(addr);
    return 0;
}
