/*
 * listener: LISTEN on the configured channel (see listener.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fleet.h"
#include "listener.h"
#include "log.h"
#include "pgconn.h"

struct listener {
    struct pgconn *conn;
    struct pgconn *presence; /* holds the presence lock; conn itself without a target */
    char *listen_sql;
    char instance_key[12];
    char instance_id[12];
    listener_wake_cb wake;
    void *arg;
};

static int queue_presence(struct listener *l, struct pgconn *c)
{
    const char *params[] = {l->instance_key, l->instance_id};
    return pgconn_query(c, "SELECT pg_try_advisory_lock($1::int, $2::int)", 2, params);
}

/* The separate read-model connection only takes the presence lock. */
static void presence_cb(struct pgconn *c, void *arg, enum pgconn_event ev, const PGresult *res,
                        const PGnotify *notify)
{
    (void)notify;
    struct listener *l = arg;
    if (ev == PGCONN_READY && queue_presence(l, c) == 0)
        pgconn_sync(c);
    else if (ev == PGCONN_RESULT && !pgconn_result_ok(res))
        log_error("listener: presence lock failed: %s (SQLSTATE %s)", pgconn_error_line(res),
                  pgconn_sqlstate(res));
}

static void conn_cb(struct pgconn *c, void *arg, enum pgconn_event ev, const PGresult *res,
                    const PGnotify *notify)
{
    struct listener *l = arg;
    switch (ev) {
    case PGCONN_READY:
        if (pgconn_query(c, l->listen_sql, 0, NULL) == 0 &&
            (l->presence != c || queue_presence(l, c) == 0))
            pgconn_sync(c);
        break;
    case PGCONN_RESULT:
        if (!pgconn_result_ok(res))
            log_error("listener: LISTEN or presence lock failed: %s (SQLSTATE %s)",
                      pgconn_error_line(res), pgconn_sqlstate(res));
        break;
    case PGCONN_SYNC:
        /* Listening again: look for what was committed while we were not. */
        l->wake(l->arg);
        break;
    case PGCONN_NOTIFY:
        log_debug("listener: notification on %s", notify->relname);
        l->wake(l->arg);
        break;
    case PGCONN_LOST:
        break;
    }
}

/* LISTEN takes an identifier, not a parameter: quote it. */
static char *listen_statement(const char *channel)
{
    size_t size = strlen("LISTEN \"\"") + 2 * strlen(channel) + 1;
    char *sql = malloc(size), *o = sql;
    if (!sql)
        return NULL;
    o += sprintf(o, "LISTEN \"");
    for (const char *s = channel; *s; s++) {
        if (*s == '"')
            *o++ = '"';
        *o++ = *s;
    }
    strcpy(o, "\"");
    return sql;
}

struct listener *listener_new(struct ev_loop *loop, const char *conninfo, const char *target,
                              const char *channel, int instance_id, listener_wake_cb wake,
                              void *arg)
{
    struct listener *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    snprintf(l->instance_key, sizeof l->instance_key, "%d", FLEET_INSTANCE_LOCK);
    snprintf(l->instance_id, sizeof l->instance_id, "%d", instance_id);
    l->wake = wake;
    l->arg = arg;
    l->listen_sql = listen_statement(channel);
    l->conn = pgconn_new(loop, "listener", conninfo, conn_cb, l);
    l->presence = target ? pgconn_new(loop, "presence", target, presence_cb, l) : l->conn;
    if (!l->listen_sql || !l->conn || !l->presence) {
        listener_free(l);
        return NULL;
    }
    return l;
}

void listener_start(struct listener *l)
{
    pgconn_start(l->conn);
    if (l->presence != l->conn)
        pgconn_start(l->presence);
}

void listener_free(struct listener *l)
{
    if (!l)
        return;
    if (l->presence != l->conn)
        pgconn_free(l->presence);
    pgconn_free(l->conn);
    free(l->listen_sql);
    free(l);
}
