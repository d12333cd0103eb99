/*
 * sockbench c-reference: a single-threaded epoll echo server (RFC 862).
 *
 * It is the machine's ceiling beside the Python models: the same service,
 * the same ready line and the same stop rules, with as little work per byte
 * as the kernel allows. It is deliberately plain: one thread, one epoll set,
 * level-triggered, non-blocking sockets, one fixed buffer per connection.
 *
 * Usage: echo_server HOST PORT BACKLOG [IDLE_S SEND_S]
 *   HOST     address to listen on (IPv4 or IPv6, e.g. 127.0.0.1 or ::1)
 *   PORT     0 lets the OS pick; the bound port is printed in the ready line
 *   BACKLOG  passed to listen() as is
 *   IDLE_S   close a connection that has nothing to send and receives no
 *            byte for this many seconds; 0 (the default) = never
 *   SEND_S   close a connection whose pending echo makes no progress for
 *            this many seconds (the client does not read); 0 = never
 *
 * Once listening it prints one JSON line on stdout, exactly as the Python
 * models do, and flushes it:
 *   {"event": "ready", "model": "c-reference", "service": "echo",
 *    "host": "127.0.0.1", "port": 40123, "pid": 4242, "backlog": 5}
 *
 * Flow control: each connection owns BUF_BYTES of buffer. Bytes read are
 * sent back at once; what the peer does not take stays in the buffer and
 * the connection waits for EPOLLOUT. While the buffer is full the server
 * stops asking for EPOLLIN, so a client that sends but never reads is held
 * back by TCP instead of growing the server's memory.
 *
 * Stopping: SIGTERM and SIGINT are taken through a signalfd in the same
 * epoll set (no handler races). On either, every connection and the
 * listener are closed and the process exits 0.
 *
 * Timeouts: every connection remembers when it last received and last
 * sent; a sweep over all connections, at most every twentieth of the
 * shortest timeout, closes the expired ones with one line on stderr each.
 *
 * Error handling: an error on one connection (reset, broken pipe) prints one
 * line on stderr and closes that connection only. Running out of file
 * descriptors (EMFILE, ENFILE, ENOBUFS, ENOMEM from accept) takes the
 * listener out of the epoll set for a back-off, 100 ms doubling to 1 s and
 * reset by the next successful accept, with one line per pause, instead of
 * spinning on a listener that stays readable. Errors before the ready line
 * (bad address, port in use) print one line and exit 1.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* 64 KiB: a full 1 MiB message passes in a few turns of the loop, and 10k
 * connections still fit in under 1 GiB. */
#define BUF_BYTES (64 * 1024)
/* Events taken per epoll_wait: enough that 100 busy connections are served
 * in one or two calls. */
#define MAX_EVENTS 256
/* Accept back-off bounds (s): a freed descriptor is used within a tenth of
 * a second; waiting clients wait at most a second once some are free. */
#define BACKOFF_FIRST_S 0.1
#define BACKOFF_LONGEST_S 1.0
/* Shortest interval between two timeout sweeps (s). */
#define MIN_SWEEP_S 0.01

struct conn {
    int fd;
    uint32_t events;        /* interest currently registered with epoll */
    size_t start, end;      /* pending bytes are buf[start, end) */
    int peer_eof;           /* the client shut its sending side */
    double last_read;       /* monotonic s of the last byte received (or the accept) */
    double last_sent;       /* ... of the last byte sent, or when an echo began to wait */
    struct conn *prev, *next;
    char buf[BUF_BYTES];
};

/* Tags for the two non-connection fds in the epoll set. */
static char LISTENER_TAG, SIGNAL_TAG;

static int epfd = -1;
static int listen_fd = -1;
static struct conn *conns = NULL;
static double idle_s = 0, send_s = 0, sweep_every = 0;
static double next_sweep = 0;          /* 0: none planned */
static double accept_resume_at = 0;    /* 0: accepting */
static double backoff_s = BACKOFF_FIRST_S;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what) {
    fprintf(stderr, "c-reference: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int set_interest(int op, int fd, uint32_t events, void *ptr) {
    struct epoll_event ev = {.events = events, .data.ptr = ptr};
    return epoll_ctl(epfd, op, fd, &ev);
}

static void close_conn(struct conn *c) {
    close(c->fd); /* also removes it from the epoll set */
    if (c->prev) c->prev->next = c->next; else conns = c->next;
    if (c->next) c->next->prev = c->prev;
    free(c);
}

static void conn_error(struct conn *c, const char *what) {
    fprintf(stderr, "c-reference: connection fd %d: %s: %s\n", c->fd, what, strerror(errno));
    close_conn(c);
}

static void accept_all(void) {
    for (;;) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* One failure per pause: the listener is out of the epoll set meanwhile. */
                fprintf(stderr, "c-reference listener: accept: %s; not accepting for %g s\n", strerror(errno), backoff_s);
                if (epoll_ctl(epfd, EPOLL_CTL_DEL, listen_fd, NULL) == 0) accept_resume_at = now_s() + backoff_s;
                backoff_s = backoff_s * 2 < BACKOFF_LONGEST_S ? backoff_s * 2 : BACKOFF_LONGEST_S;
                return;
            }
            fprintf(stderr, "c-reference: accept: %s\n", strerror(errno));
            return;
        }
        /* Replies go out as soon as they are read: Nagle would hold a
         * partial echo back waiting for an ACK, which a ceiling must not. */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = malloc(sizeof *c);
        if (!c) {
            fprintf(stderr, "c-reference: out of memory for a connection\n");
            close(fd);
            continue;
        }
        backoff_s = BACKOFF_FIRST_S;
        c->fd = fd;
        c->start = c->end = 0;
        c->peer_eof = 0;
        c->last_read = c->last_sent = now_s();
        if (sweep_every > 0 && next_sweep == 0) next_sweep = c->last_read + sweep_every;
        c->events = EPOLLIN;
        c->prev = NULL;
        c->next = conns;
        if (conns) conns->prev = c;
        conns = c;
        if (set_interest(EPOLL_CTL_ADD, fd, c->events, c) < 0) conn_error(c, "epoll_ctl");
    }
}

/* Send what is pending. Returns -1 if the connection was closed. */
static int flush(struct conn *c) {
    while (c->start < c->end) {
        ssize_t n = send(c->fd, c->buf + c->start, c->end - c->start, MSG_NOSIGNAL);
        if (n > 0) {
            c->start += (size_t)n;
            c->last_sent = now_s();
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        } else {
            conn_error(c, "send");
            return -1;
        }
    }
    if (c->start == c->end) c->start = c->end = 0;
    return 0;
}

/* Read into the free space at the tail (compacting first if needed). Returns -1 if closed. */
static int fill(struct conn *c) {
    if (c->end == BUF_BYTES && c->start > 0) {
        memmove(c->buf, c->buf + c->start, c->end - c->start);
        c->end -= c->start;
        c->start = 0;
    }
    if (c->end == BUF_BYTES) return 0;
    ssize_t n = recv(c->fd, c->buf + c->end, BUF_BYTES - c->end, 0);
    if (n > 0) {
        c->last_read = now_s();
        if (c->start == c->end) c->last_sent = c->last_read; /* the send timeout counts from here */
        c->end += (size_t)n;
    } else if (n == 0) {
        c->peer_eof = 1;
    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        conn_error(c, "recv");
        return -1;
    }
    return 0;
}

static void serve_conn(struct conn *c, uint32_t ready) {
    if ((ready & (EPOLLIN | EPOLLHUP | EPOLLERR)) && !c->peer_eof && fill(c) < 0) return;
    if (flush(c) < 0) return;
    if (c->peer_eof && c->start == c->end) {
        close_conn(c);
        return;
    }
    uint32_t want = 0;
    if (!c->peer_eof && c->end - c->start < BUF_BYTES) want |= EPOLLIN;
    if (c->start < c->end) want |= EPOLLOUT;
    if (want != c->events) {
        c->events = want;
        if (set_interest(EPOLL_CTL_MOD, c->fd, want, c) < 0) conn_error(c, "epoll_ctl");
    }
}

/* Close every connection whose timeout expired; plan the next sweep. */
static void sweep(double now) {
    struct conn *c = conns;
    while (c) {
        struct conn *next = c->next;
        int pending = c->start < c->end;
        double since = c->last_read > c->last_sent ? c->last_read : c->last_sent;
        if (pending && send_s > 0 && now - c->last_sent >= send_s) {
            fprintf(stderr, "c-reference connection fd %d: reply made no progress for %g s (--send-timeout); "
                    "connection closed\n", c->fd, send_s);
            close_conn(c);
        } else if (!pending && !c->peer_eof && idle_s > 0 && now - since >= idle_s) {
            fprintf(stderr, "c-reference connection fd %d: no byte received for %g s (--idle-timeout); "
                    "connection closed\n", c->fd, idle_s);
            close_conn(c);
        }
        c = next;
    }
    next_sweep = conns ? now + sweep_every : 0;
}

/* Milliseconds until the next timer (sweep, accept resume), or -1 for none. */
static int wait_ms(void) {
    double next = 0;
    if (next_sweep > 0) next = next_sweep;
    if (accept_resume_at > 0 && (next == 0 || accept_resume_at < next)) next = accept_resume_at;
    if (next == 0) return -1;
    double ms = (next - now_s()) * 1000;
    return ms <= 0 ? 0 : (int)ms + 1;
}

static double parse_seconds(const char *text, const char *what) {
    char *endp;
    double value = strtod(text, &endp);
    if (*text == '\0' || *endp != '\0' || !(value >= 0) || value > 1e9) {
        fprintf(stderr, "c-reference: %s must be a number of seconds >= 0, got %s\n", what, text);
        exit(2);
    }
    return value;
}

static void open_listener(const char *host, const char *port, int backlog, char *bound_host, size_t host_len,
                          int *bound_port) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "c-reference: cannot resolve %s port %s: %s\n", host, port, gai_strerror(rc));
        exit(1);
    }
    listen_fd = socket(res->ai_family, res->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, res->ai_protocol);
    if (listen_fd < 0) die("socket");
    /* As asyncio does on Unix: a restarted server may rebind a port in TIME-WAIT. */
    int one = 1;
    setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(listen_fd, res->ai_addr, res->ai_addrlen) < 0) {
        fprintf(stderr, "c-reference: cannot listen on %s port %s: %s\n", host, port, strerror(errno));
        exit(1);
    }
    freeaddrinfo(res);
    if (listen(listen_fd, backlog) < 0) die("listen");

    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(listen_fd, (struct sockaddr *)&ss, &len) < 0) die("getsockname");
    if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &a->sin6_addr, bound_host, host_len);
        *bound_port = ntohs(a->sin6_port);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &a->sin_addr, bound_host, host_len);
        *bound_port = ntohs(a->sin_port);
    }
}

static int open_signalfd(void) {
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    /* An inherited SIG_IGN would discard the signal before signalfd sees it. */
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0) die("sigprocmask");
    int fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0) die("signalfd");
    return fd;
}

int main(int argc, char **argv) {
    if (argc != 4 && argc != 6) {
        fprintf(stderr, "usage: %s HOST PORT BACKLOG [IDLE_S SEND_S]\n", argv[0]);
        return 2;
    }
    if (argc == 6) {
        idle_s = parse_seconds(argv[4], "IDLE_S");
        send_s = parse_seconds(argv[5], "SEND_S");
    }
    double shortest = idle_s > 0 && (send_s == 0 || idle_s < send_s) ? idle_s : send_s;
    if (shortest > 0) sweep_every = shortest / 20 > MIN_SWEEP_S ? shortest / 20 : MIN_SWEEP_S;
    const char *host = argv[1], *port = argv[2];
    char *endp;
    long backlog = strtol(argv[3], &endp, 10);
    if (*argv[3] == '\0' || *endp != '\0' || backlog < 0 || backlog > INT_MAX) {
        fprintf(stderr, "c-reference: backlog must be a non-negative integer, got %s\n", argv[3]);
        return 2;
    }

    int sig_fd = open_signalfd();
    char bound_host[INET6_ADDRSTRLEN];
    int bound_port;
    open_listener(host, port, (int)backlog, bound_host, sizeof bound_host, &bound_port);

    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) die("epoll_create1");
    if (set_interest(EPOLL_CTL_ADD, listen_fd, EPOLLIN, &LISTENER_TAG) < 0) die("epoll_ctl listener");
    if (set_interest(EPOLL_CTL_ADD, sig_fd, EPOLLIN, &SIGNAL_TAG) < 0) die("epoll_ctl signalfd");

    printf("{\"event\": \"ready\", \"model\": \"c-reference\", \"service\": \"echo\", \"host\": \"%s\", "
           "\"port\": %d, \"pid\": %d, \"backlog\": %ld}\n",
           bound_host, bound_port, (int)getpid(), backlog);
    fflush(stdout);

    struct epoll_event events[MAX_EVENTS];
    int running = 1;
    while (running) {
        int n = epoll_wait(epfd, events, MAX_EVENTS, wait_ms());
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            void *ptr = events[i].data.ptr;
            if (ptr == &SIGNAL_TAG) {
                running = 0;
            } else if (ptr == &LISTENER_TAG) {
                accept_all();
            } else {
                serve_conn(ptr, events[i].events);
            }
        }
        /* No dangling pointers in `events`: a connection is only freed while
         * its own event is served, and epoll reports an fd once per batch;
         * the sweep runs after the batch. */
        double now = now_s();
        if (next_sweep > 0 && now >= next_sweep) sweep(now);
        if (accept_resume_at > 0 && now >= accept_resume_at) {
            accept_resume_at = 0;
            if (set_interest(EPOLL_CTL_ADD, listen_fd, EPOLLIN, &LISTENER_TAG) < 0) die("epoll_ctl listener");
        }
    }

    while (conns) {
        struct conn *next = conns->next;
        close(conns->fd);
        free(conns);
        conns = next;
    }
    close(listen_fd);
    close(sig_fd);
    close(epfd);
    return 0;
}
