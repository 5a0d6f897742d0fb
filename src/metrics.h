/*
 * metrics: a Prometheus text endpoint (GET /metrics) served from the
 * daemon's own loop, plus the small pieces to write that text. The same
 * listener answers the probes of an orchestrator: GET /healthz (liveness:
 * 200 whenever the loop answers at all) and GET /readyz (readiness: 200 or
 * 503, as the caller's ready callback judges, with its reason as body).
 *
 * The server never blocks: sockets are non-blocking, each client has a
 * deadline and a bounded request, at most METRICS_MAX_CLIENTS are served
 * at once (more wait in the listen backlog), and a response is rendered once per
 * request into memory and written as the socket takes it. The caller's
 * render callback produces the body; it runs on the loop, so it may read
 * any daemon state.
 */
#ifndef PROJECTORD_METRICS_H
#define PROJECTORD_METRICS_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define METRICS_MAX_CLIENTS 16
#define METRICS_TIMEOUT_S   5.0
#define METRICS_MAX_REQUEST 4096

/* A growing text buffer; zero-initialise. oom sticks once an append failed. */
struct mbuf {
    char *data;
    size_t len, cap;
    bool oom;
};

void mbuf_printf(struct mbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void mbuf_free(struct mbuf *b);

/*
 * A histogram with fixed bucket bounds in seconds (1 ms .. 10 s), enough
 * for batch durations and commit-to-apply latencies alike.
 */
#define HISTOGRAM_BUCKETS 13
extern const double histogram_bounds[HISTOGRAM_BUCKETS];

struct histogram {
    uint64_t buckets[HISTOGRAM_BUCKETS]; /* observations <= bound, not cumulative */
    uint64_t count;                      /* all observations, +Inf included */
    double sum;
};

void histogram_observe(struct histogram *h, double seconds);

/* The # HELP and # TYPE lines of a metric family. */
void metrics_family(struct mbuf *out, const char *name, const char *type, const char *help);

/* One histogram's _bucket, _sum and _count lines, labelled projection="label". */
void metrics_histogram(struct mbuf *out, const char *name, const char *label,
                       const struct histogram *h);

/*
 * Split "HOST:PORT" ("[::1]:9187" for IPv6; HOST may be a name) into its
 * parts. Returns 0, or -1 when text is not of that form or the port is not
 * in 1..65535.
 */
int metrics_parse_address(const char *text, char *host, size_t hostlen, char *port, size_t portlen);

struct metrics_server;

typedef void (*metrics_render_cb)(struct mbuf *out, void *arg);
/* Whether the daemon is ready; why: one short line or two for the body. */
typedef bool (*metrics_ready_cb)(struct mbuf *why, void *arg);

/*
 * Listen on address (HOST:PORT) and serve render's text at /metrics and
 * ready's verdict at /readyz; both get arg.
 * Returns NULL with a one-line reason in err (bad address, bind failure).
 * Free with metrics_close(), which also drops the clients being served.
 */
struct metrics_server *metrics_listen(struct ev_loop *loop, const char *address,
                                      metrics_render_cb render, metrics_ready_cb ready, void *arg,
                                      char *err, size_t errlen);
void metrics_close(struct metrics_server *m);

#endif
