/*
 * sockbench c-reference: a single-threaded epoll echo server (RFC 862).
 *
 * It is the machine's ceiling beside the Python models: the same service,
 * the same ready line and the same stop rules, with as little work per byte
 * as the kernel allows. It is deliberately plain: one thread, one epoll set,
 * level-triggered, non-blocking sockets, one fixed buffer per connection.
 *
 * Usage: echo_server HOST PORT BACKLOG
 *   HOST     address to listen on (IPv4 or IPv6, e.g. 127.0.0.1 or ::1)
 *   PORT     0 lets the OS pick; the bound port is printed in the ready line
 *   BACKLOG  passed to listen() as is
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
 * Error handling: an error on one connection (reset, broken pipe) prints one
 * line on stderr and closes that connection only. Running out of file
 * descriptors pauses accepting until a connection closes, instead of
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
#include <unistd.h>

/* 64 KiB: a full 1 MiB message passes in a few turns of the loop, and 10k
 * connections still fit in under 1 GiB. */
#define BUF_BYTES (64 * 1024)
/* Events taken per epoll_wait: enough that 100 busy connections are served
 * in one or two calls. */
#define MAX_EVENTS 256

struct conn {
    int fd;
    uint32_t events;        /* interest currently registered with epoll */
    size_t start, end;      /* pending bytes are buf[start, end) */
    int peer_eof;           /* the client shut its sending side */
    struct conn *prev, *next;
    char buf[BUF_BYTES];
};

/* Tags for the two non-connection fds in the epoll set. */
static char LISTENER_TAG, SIGNAL_TAG;

static int epfd = -1;
static int listen_fd = -1;
static int accept_paused = 0;
static struct conn *conns = NULL;

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
    if (accept_paused && set_interest(EPOLL_CTL_ADD, listen_fd, EPOLLIN, &LISTENER_TAG) == 0)
        accept_paused = 0;
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
                fprintf(stderr, "c-reference: accept: %s; pausing accepts until a connection closes\n", strerror(errno));
                if (conns && epoll_ctl(epfd, EPOLL_CTL_DEL, listen_fd, NULL) == 0) accept_paused = 1;
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
        c->fd = fd;
        c->start = c->end = 0;
        c->peer_eof = 0;
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
    if (argc != 4) {
        fprintf(stderr, "usage: %s HOST PORT BACKLOG\n", argv[0]);
        return 2;
    }
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
        int n = epoll_wait(epfd, events, MAX_EVENTS, -1);
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
         * its own event is served, and epoll reports an fd once per batch. */
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
