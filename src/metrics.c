/*
 * metrics: the Prometheus endpoint (see metrics.h).
 *
 * HTTP is kept to what a scraper sends: one GET request line and headers,
 * answered with "Connection: close" and the body, then the socket is
 * closed. Anything else gets a short error status.
 */
#define _GNU_SOURCE /* accept4 */
#include "metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"

const double histogram_bounds[HISTOGRAM_BUCKETS] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
};

/* ---- text ---------------------------------------------------------------- */

void mbuf_printf(struct mbuf *b, const char *fmt, ...)
{
    for (int attempt = 0; attempt < 2 && !b->oom; attempt++) {
        va_list ap;
        va_start(ap, fmt);
        int n =
            vsnprintf(b->data ? b->data + b->len : NULL, b->data ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if (b->data && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap : 4096;
        while (cap <= b->len + (size_t)n)
            cap *= 2;
        char *grown = realloc(b->data, cap);
        if (!grown) {
            b->oom = true;
            return;
        }
        b->data = grown;
        b->cap = cap;
    }
}

void mbuf_free(struct mbuf *b)
{
    free(b->data);
    *b = (struct mbuf){0};
}

void histogram_observe(struct histogram *h, double seconds)
{
    for (int i = 0; i < HISTOGRAM_BUCKETS; i++)
        if (seconds <= histogram_bounds[i]) {
            h->buckets[i]++;
            break;
        }
    h->count++;
    h->sum += seconds;
}

void metrics_family(struct mbuf *out, const char *name, const char *type, const char *help)
{
    mbuf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void metrics_histogram(struct mbuf *out, const char *name, const char *label,
                       const struct histogram *h)
{
    uint64_t cumulative = 0;
    for (int i = 0; i < HISTOGRAM_BUCKETS; i++) {
        cumulative += h->buckets[i];
        mbuf_printf(out, "%s_bucket{projection=\"%s\",le=\"%g\"} %llu\n", name, label,
                    histogram_bounds[i], (unsigned long long)cumulative);
    }
    mbuf_printf(out, "%s_bucket{projection=\"%s\",le=\"+Inf\"} %llu\n", name, label,
                (unsigned long long)h->count);
    mbuf_printf(out, "%s_sum{projection=\"%s\"} %.6f\n", name, label, h->sum);
    mbuf_printf(out, "%s_count{projection=\"%s\"} %llu\n", name, label,
                (unsigned long long)h->count);
}

int metrics_parse_address(const char *text, char *host, size_t hostlen, char *port, size_t portlen)
{
    const char *colon = strrchr(text, ':');
    const char *h = text, *hend = colon;
    if (!colon || colon == text)
        return -1;
    if (text[0] == '[') {
        if (colon[-1] != ']' || colon - text < 3)
            return -1;
        h = text + 1;
        hend = colon - 1;
    } else if (memchr(text, ':', (size_t)(colon - text))) {
        return -1; /* an IPv6 address needs its brackets */
    }
    char *end;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || errno || p < 1 || p > 65535)
        return -1;
    if ((size_t)(hend - h) >= hostlen || strlen(colon + 1) >= portlen)
        return -1;
    memcpy(host, h, (size_t)(hend - h));
    host[hend - h] = '\0';
    strcpy(port, colon + 1);
    return 0;
}

/* ---- the server ----------------------------------------------------------- */

struct client {
    struct metrics_server *m;
    struct client *next;
    ev_io io;
    ev_timer deadline;
    char req[METRICS_MAX_REQUEST];
    size_t reqlen;
    struct mbuf resp;
    size_t sent;
    bool draining; /* response sent: reading what the client still sends, until it closes */
};

struct metrics_server {
    struct ev_loop *loop;
    int fd;
    ev_io accept_io;
    metrics_render_cb render;
    metrics_ready_cb ready;
    void *arg;
    struct client *clients;
    int nclients;
};

static void client_close(struct client *c)
{
    struct metrics_server *m = c->m;
    ev_io_stop(m->loop, &c->io);
    ev_timer_stop(m->loop, &c->deadline);
    close(c->io.fd);
    for (struct client **p = &m->clients; *p; p = &(*p)->next)
        if (*p == c) {
            *p = c->next;
            break;
        }
    if (m->nclients-- == METRICS_MAX_CLIENTS)
        ev_io_start(m->loop, &m->accept_io); /* room again for the queued ones */
    mbuf_free(&c->resp);
    free(c);
}

static void respond(struct client *c, const char *status, const char *type, const char *body,
                    size_t bodylen)
{
    mbuf_printf(&c->resp,
                "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                "Connection: close\r\n\r\n%.*s",
                status, type, bodylen, (int)bodylen, body);
}

static const char plain[] = "text/plain; charset=utf-8";

/* Whether the request's path (query string aside) is name. */
static bool path_is(const char *path, const char *name)
{
    size_t n = strlen(name);
    return strcspn(path, " ?\r\n") == n && strncmp(path, name, n) == 0;
}

/* /readyz: the caller's verdict, its reason as the body. */
static void answer_ready(struct client *c)
{
    struct mbuf why = {0};
    bool ready = c->m->ready(&why, c->m->arg);
    if (why.oom)
        respond(c, "500 Internal Server Error", plain, "out of memory\n", 14);
    else
        respond(c, ready ? "200 OK" : "503 Service Unavailable", plain, why.data ? why.data : "",
                why.len);
    mbuf_free(&why);
}

/* The whole request is in: answer it. */
static void route(struct client *c)
{
    static const char paths[] = "paths: /metrics /healthz /readyz\n";
    if (strncmp(c->req, "GET ", 4) != 0) {
        respond(c, "405 Method Not Allowed", plain, "GET only\n", 9);
        return;
    }
    const char *path = c->req + 4;
    if (path_is(path, "/healthz")) {
        respond(c, "200 OK", plain, "ok\n", 3); /* answered by the loop: it runs */
        return;
    }
    if (path_is(path, "/readyz")) {
        answer_ready(c);
        return;
    }
    if (!path_is(path, "/metrics")) {
        respond(c, "404 Not Found", plain, paths, sizeof paths - 1);
        return;
    }
    struct mbuf body = {0};
    c->m->render(&body, c->m->arg);
    if (body.oom)
        respond(c, "500 Internal Server Error", plain, "out of memory\n", 14);
    else
        respond(c, "200 OK", "text/plain; version=0.0.4; charset=utf-8", body.data ? body.data : "",
                body.len);
    mbuf_free(&body);
}

static void client_write(struct client *c)
{
    while (c->sent < c->resp.len) {
        ssize_t n = send(c->io.fd, c->resp.data + c->sent, c->resp.len - c->sent, MSG_NOSIGNAL);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0) {
            client_close(c);
            return;
        }
        c->sent += (size_t)n;
    }
    /*
     * Closing with unread input would reset the connection, and the client
     * could lose the response (a POST body, an oversized request): half-close
     * and read until the client closes too, within the deadline.
     */
    shutdown(c->io.fd, SHUT_WR);
    c->draining = true;
    ev_io_stop(c->m->loop, &c->io);
    ev_io_set(&c->io, c->io.fd, EV_READ);
    ev_io_start(c->m->loop, &c->io);
}

static void client_drain(struct client *c)
{
    char buf[4096];
    ssize_t n;
    while ((n = recv(c->io.fd, buf, sizeof buf, 0)) > 0)
        ;
    if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
        client_close(c);
}

static bool request_complete(const struct client *c)
{
    return memmem(c->req, c->reqlen, "\r\n\r\n", 4) || memmem(c->req, c->reqlen, "\n\n", 2);
}

static void client_read(struct client *c)
{
    for (;;) {
        ssize_t n = recv(c->io.fd, c->req + c->reqlen, sizeof c->req - 1 - c->reqlen, 0);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0) {
            client_close(c);
            return;
        }
        c->reqlen += (size_t)n;
        c->req[c->reqlen] = '\0';
        if (request_complete(c))
            route(c);
        else if (c->reqlen == sizeof c->req - 1)
            respond(c, "431 Request Header Fields Too Large", "text/plain", "too large\n", 10);
        else
            continue;
        if (c->resp.oom) {
            client_close(c);
            return;
        }
        ev_io_stop(c->m->loop, &c->io);
        ev_io_set(&c->io, c->io.fd, EV_WRITE);
        ev_io_start(c->m->loop, &c->io);
        client_write(c);
        return;
    }
}

static void client_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    struct client *c = w->data;
    if ((revents & EV_READ) && c->draining)
        client_drain(c);
    else if (revents & EV_READ)
        client_read(c);
    else if (revents & EV_WRITE)
        client_write(c);
}

static void deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    client_close(w->data); /* a scraper that neither sends nor reads */
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    struct metrics_server *m = w->data;
    for (;;) {
        int fd = accept4(m->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                log_warning("metrics: accept failed: %s", strerror(errno));
            return;
        }
        struct client *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->m = m;
        c->next = m->clients;
        m->clients = c;
        m->nclients++;
        ev_io_init(&c->io, client_cb, fd, EV_READ);
        c->io.data = c;
        ev_timer_init(&c->deadline, deadline_cb, METRICS_TIMEOUT_S, 0.0);
        c->deadline.data = c;
        ev_io_start(loop, &c->io);
        ev_timer_start(loop, &c->deadline);
        if (m->nclients == METRICS_MAX_CLIENTS) {
            ev_io_stop(loop, w); /* the rest wait in the listen backlog */
            return;
        }
    }
}

/* A listening, non-blocking socket on host:port, or -1 with err set. */
static int open_listener(const char *host, const char *port, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve '%s': %s", host, gai_strerror(rc));
        return -1;
    }
    int fd = -1, saved = 0;
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
        int one = 1;
        if (fd >= 0 && (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
                        bind(fd, a->ai_addr, a->ai_addrlen) < 0 || listen(fd, 64) < 0)) {
            saved = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0)
        snprintf(err, errlen, "cannot listen on %s:%s: %s", host, port, strerror(saved));
    return fd;
}

struct metrics_server *metrics_listen(struct ev_loop *loop, const char *address,
                                      metrics_render_cb render, metrics_ready_cb ready, void *arg,
                                      char *err, size_t errlen)
{
    char host[256], port[8];
    if (metrics_parse_address(address, host, sizeof host, port, sizeof port) < 0) {
        snprintf(err, errlen, "'%s' is not HOST:PORT", address);
        return NULL;
    }
    struct metrics_server *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    m->fd = open_listener(host, port, err, errlen);
    if (m->fd < 0) {
        free(m);
        return NULL;
    }
    m->loop = loop;
    m->render = render;
    m->ready = ready;
    m->arg = arg;
    ev_io_init(&m->accept_io, accept_cb, m->fd, EV_READ);
    m->accept_io.data = m;
    ev_io_start(loop, &m->accept_io);
    return m;
}

void metrics_close(struct metrics_server *m)
{
    if (!m)
        return;
    while (m->clients)
        client_close(m->clients);
    ev_io_stop(m->loop, &m->accept_io);
    close(m->fd);
    free(m);
}
