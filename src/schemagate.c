/*
 * schemagate: wait for projectord's schema before `run` starts (see schemagate.h).
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backoff.h"
#include "config.h"
#include "log.h"
#include "pgconn.h"
#include "schemagate.h"

#define GATE_BACKOFF_INITIAL_S 1.0
#define GATE_BACKOFF_MAX_S     30.0

struct probe {
    struct schemagate *gate;
    struct pgconn *conn;
    const char *params[2]; /* event store?, read model? */
    ev_timer retry;
    struct backoff backoff;
    char *said; /* the last line logged, so it is not repeated */
    bool asked; /* a question is in flight */
    bool ok;
};

struct schemagate {
    struct ev_loop *loop;
    struct probe probes[2];
    int nprobes;
    ev_timer done; /* reports ready from the loop, outside pgconn's callbacks */
    schemagate_ready_cb ready;
    void *arg;
};

static uint32_t jitter(void)
{
    static uint32_t state;
    if (state == 0)
        state = (uint32_t)getpid() ^ (uint32_t)time(NULL) ^ 0x85ebca6bu;
    state ^= state << 13;
    state ^= state >> 17;
    state ^= state << 5;
    return state;
}

static void ask(struct probe *p)
{
    if (p->ok || p->asked || !pgconn_idle(p->conn))
        return;
    if (pgconn_query(p->conn, SCHEMAGATE_SQL, 2, p->params) == 0 && pgconn_sync(p->conn) == 0)
        p->asked = true;
}

static void say(struct probe *p, const char *line)
{
    if (p->said && strcmp(p->said, line) == 0)
        return;
    log_error("%s; retrying with backoff", line);
    free(p->said);
    p->said = strdup(line);
}

static void answer(struct probe *p, const PGresult *res)
{
    if (!pgconn_result_ok(res)) {
        char line[600];
        snprintf(line, sizeof line, "cannot tell whether the schema is there: %s (SQLSTATE %s)",
                 pgconn_error_line(res), pgconn_sqlstate(res));
        say(p, line);
    } else if (PQntuples(res) == 1 && !PQgetisnull(res, 0, 0)) {
        say(p, PQgetvalue(res, 0, 0));
    } else {
        if (p->said)
            log_info("%s: the schema is there now; starting", pgconn_name(p->conn));
        p->ok = true;
        return;
    }
    ev_timer_set(&p->retry, backoff_next(&p->backoff, jitter()), 0.0);
    ev_timer_start(p->gate->loop, &p->retry);
}

static void all_ok(struct schemagate *g)
{
    bool all = true;
    for (int i = 0; i < g->nprobes; i++)
        all = all && g->probes[i].ok;
    if (all)
        ev_timer_start(g->loop, &g->done);
}

static void conn_cb(struct pgconn *c, void *arg, enum pgconn_event ev, const PGresult *res,
                    const PGnotify *notify)
{
    (void)c, (void)notify;
    struct probe *p = arg;
    struct schemagate *g = p->gate;
    switch (ev) {
    case PGCONN_READY:
        ask(p);
        break;
    case PGCONN_RESULT:
        answer(p, res);
        break;
    case PGCONN_SYNC:
        p->asked = false;
        if (p->ok) {
            pgconn_close(p->conn);
            all_ok(g);
        }
        break;
    case PGCONN_STANDBY:
        /* A hot standby is the runners' to report (and to wait out): it is no
         * place to judge the schema from, nor to hold the daemon back. */
        p->ok = true;
        pgconn_close(p->conn);
        all_ok(g);
        break;
    case PGCONN_LOST:
        p->asked = false;
        break;
    default:
        break;
    }
}

static void retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    ask(w->data);
}

static void done_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    struct schemagate *g = w->data;
    g->ready(g->arg); /* may free g: nothing after this */
}

struct schemagate *schemagate_new(struct ev_loop *loop, const char *conninfo, const char *target,
                                  schemagate_ready_cb ready, void *arg)
{
    struct schemagate *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    g->loop = loop;
    g->ready = ready;
    g->arg = arg;
    bool apart = config_apart(conninfo, target);
    g->nprobes = apart ? 2 : 1;
    for (int i = 0; i < g->nprobes; i++) {
        struct probe *p = &g->probes[i];
        p->gate = g;
        p->params[0] = !apart || i == 0 ? "t" : "f";
        p->params[1] = !apart || i == 1 ? "t" : "f";
        p->backoff = (struct backoff)BACKOFF_INIT(GATE_BACKOFF_INITIAL_S, GATE_BACKOFF_MAX_S);
        ev_timer_init(&p->retry, retry_cb, 0.0, 0.0);
        p->retry.data = p;
        p->conn = pgconn_new(loop, i == 0 ? "schema" : "schema (read model)",
                             i == 0 ? conninfo : target, conn_cb, p);
        if (!p->conn || pgconn_set_application_name(p->conn, "projectord/schema") < 0) {
            schemagate_free(g);
            return NULL;
        }
    }
    ev_timer_init(&g->done, done_cb, 0.0, 0.0);
    g->done.data = g;
    return g;
}

void schemagate_start(struct schemagate *g)
{
    for (int i = 0; i < g->nprobes; i++)
        pgconn_start(g->probes[i].conn);
}

void schemagate_free(struct schemagate *g)
{
    if (!g)
        return;
    for (int i = 0; i < g->nprobes; i++) {
        ev_timer_stop(g->loop, &g->probes[i].retry);
        pgconn_free(g->probes[i].conn);
        free(g->probes[i].said);
    }
    ev_timer_stop(g->loop, &g->done);
    free(g);
}
