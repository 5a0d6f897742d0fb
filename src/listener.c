/*
 * listener: LISTEN on the configured channel (see listener.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fleet.h"
#include "listener.h"
#include "log.h"
#include "pace.h"
#include "pgconn.h"

struct listener {
    struct ev_loop *loop;
    struct pgconn *conn;
    struct pgconn *presence; /* holds the presence lock; conn itself without a target */
    char *listen_sql;
    char *unlisten_sql;
    char instance_key[12];
    char instance_id[12];
    listener_wake_cb wake;
    listener_progress_cb progress;
    listener_request_cb request;
    void *arg;
    struct pace notes; /* the notification rate */
    int64_t n_notes;
    double tick_s;   /* 0: always listen */
    bool polling;    /* the channel is left: the tick wakes the owner */
    int64_t head;    /* the highest head the owner's opens found, */
    double moved_at; /* and when it was found to have moved */
    ev_timer tick;
    bool standby_said; /* a hot standby (pgconn.h) is in the log: not again until a primary */
};

/* On the read-model connection: the presence lock, and requests from now on. */
static int queue_presence(struct listener *l, struct pgconn *c)
{
    const char *params[] = {l->instance_key, l->instance_id};
    if (pgconn_query(c, "LISTEN \"" FLEET_REQUEST_CHANNEL "\"", 0, NULL) < 0)
        return -1;
    return pgconn_query(c, "SELECT pg_try_advisory_lock($1::int, $2::int)", 2, params);
}

/* A notification on the requests' channel; false for any other. */
static bool on_request(struct listener *l, const PGnotify *notify)
{
    if (strcmp(notify->relname, FLEET_REQUEST_CHANNEL) != 0)
        return false;
    log_debug("listener: a request for %s", notify->extra);
    l->request(l->arg);
    return true;
}

/*
 * A hot standby is never listened on (pgconn.h): NOTIFY does not reach a
 * standby, and the projections refuse it too. The connection waits for its
 * promotion; the poll timer keeps waking the owner meanwhile.
 */
static void on_standby(struct listener *l, struct pgconn *c)
{
    if (l->standby_said)
        return;
    l->standby_said = true;
    if (c != l->conn)
        log_warning("listener: database.target names a hot standby: this instance's presence lock"
                    " waits for its promotion (point database.target at the primary)");
    else
        log_warning("listener: database.conninfo names a hot standby: NOTIFY does not reach a"
                    " standby, so nothing is listened for until it is promoted (point"
                    " database.conninfo at the primary)");
}

/* The separate read-model connection only takes the presence lock. */
static void presence_cb(struct pgconn *c, void *arg, enum pgconn_event ev, const PGresult *res,
                        const PGnotify *notify)
{
    struct listener *l = arg;
    if (ev == PGCONN_STANDBY)
        on_standby(l, c);
    else if (ev == PGCONN_READY && queue_presence(l, c) == 0)
        pgconn_sync(c);
    else if (ev == PGCONN_RESULT && !pgconn_result_ok(res))
        log_error("listener: presence lock failed: %s (SQLSTATE %s)", pgconn_error_line(res),
                  pgconn_sqlstate(res));
    else if (ev == PGCONN_NOTIFY)
        on_request(l, notify);
}

/* Leave the channel (or listen again): one statement of its own request. */
static bool switch_channel(struct listener *l, bool listen)
{
    if (!pgconn_idle(l->conn))
        return false; /* connecting, or a switch under way: try again later */
    return pgconn_query(l->conn, listen ? l->listen_sql : l->unlisten_sql, 0, NULL) == 0 &&
           pgconn_sync(l->conn) == 0;
}

static void start_polling(struct listener *l)
{
    if (!switch_channel(l, false))
        return;
    l->polling = true;
    double seen_at;
    l->progress(l->arg, &l->head, &seen_at);
    l->moved_at = ev_now(l->loop);
    ev_timer_set(&l->tick, l->tick_s, l->tick_s);
    ev_timer_start(l->loop, &l->tick);
    log_debug("listener: notifications at %.0f/s: polling every %.1f ms instead", l->notes.rate,
              l->tick_s * 1000);
}

/* Listening again: the sync of the LISTEN wakes the owner (conn_cb). */
static void stop_polling(struct listener *l)
{
    if (!switch_channel(l, true))
        return;
    l->polling = false;
    ev_timer_stop(l->loop, &l->tick);
    log_debug("listener: the event store went quiet: listening again");
}

static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct listener *l = w->data;
    l->wake(l->arg);
    int64_t head;
    double seen_at;
    l->progress(l->arg, &head, &seen_at);
    if (head != l->head) {
        l->head = head;
        l->moved_at = seen_at;
        return;
    }
    /* quiet: opens found the same head for a while; or no open tells (none running) */
    double now = ev_now(l->loop);
    bool quiet = seen_at - l->moved_at >= LISTENER_QUIET_S;
    bool untold = now - seen_at >= LISTENER_UNTOLD_S && now - l->moved_at >= LISTENER_UNTOLD_S;
    if (l->tick_s == 0 || quiet || untold)
        stop_polling(l);
}

static void on_notify(struct listener *l, const PGnotify *notify)
{
    if (on_request(l, notify))
        return;
    int n = pgconn_notifies(l->conn);
    log_debug("listener: %d notification(s) on %s", n, notify->relname);
    l->wake(l->arg);
    l->n_notes += n;
    pace_note(&l->notes, ev_now(l->loop), l->n_notes);
    if (!l->polling && l->tick_s > 0 && l->notes.rate > LISTENER_POLL_RATE)
        start_polling(l);
}

static void conn_cb(struct pgconn *c, void *arg, enum pgconn_event ev, const PGresult *res,
                    const PGnotify *notify)
{
    struct listener *l = arg;
    switch (ev) {
    case PGCONN_STANDBY:
        on_standby(l, c);
        break;
    case PGCONN_READY:
        l->standby_said = false;
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
        on_notify(l, notify);
        break;
    case PGCONN_LOST:
        /* the reconnect listens again */
        l->polling = false;
        ev_timer_stop(l->loop, &l->tick);
        break;
    }
}

/* LISTEN and UNLISTEN take an identifier, not a parameter: quote it. */
static char *channel_statement(const char *verb, const char *channel)
{
    size_t size = strlen(verb) + strlen(" \"\"") + 2 * strlen(channel) + 1;
    char *sql = malloc(size), *o = sql;
    if (!sql)
        return NULL;
    o += sprintf(o, "%s \"", verb);
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
                              listener_progress_cb progress, listener_request_cb request, void *arg)
{
    struct listener *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->loop = loop;
    l->progress = progress;
    ev_init(&l->tick, tick_cb);
    l->tick.data = l;
    snprintf(l->instance_key, sizeof l->instance_key, "%d", FLEET_INSTANCE_LOCK);
    snprintf(l->instance_id, sizeof l->instance_id, "%d", instance_id);
    l->wake = wake;
    l->request = request;
    l->arg = arg;
    l->listen_sql = channel_statement("LISTEN", channel);
    l->unlisten_sql = channel_statement("UNLISTEN", channel);
    l->conn = pgconn_new(loop, "listener", conninfo, conn_cb, l);
    l->presence = target ? pgconn_new(loop, "presence", target, presence_cb, l) : l->conn;
    if (!l->listen_sql || !l->unlisten_sql || !l->conn || !l->presence ||
        pgconn_set_application_name(l->conn, "projectord/listener") < 0 ||
        pgconn_set_application_name(l->presence, l->presence == l->conn
                                                     ? "projectord/listener"
                                                     : "projectord/presence") < 0) {
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

void listener_set_tick(struct listener *l, double tick_s)
{
    l->tick_s = tick_s;
    if (l->polling && tick_s > 0) {
        ev_timer_set(&l->tick, tick_s, tick_s);
        ev_timer_again(l->loop, &l->tick);
    }
}

bool listener_connected(const struct listener *l)
{
    return pgconn_connected(l->conn) && pgconn_connected(l->presence);
}

void listener_free(struct listener *l)
{
    if (!l)
        return;
    if (l->presence != l->conn)
        pgconn_free(l->presence);
    pgconn_free(l->conn);
    ev_timer_stop(l->loop, &l->tick);
    free(l->listen_sql);
    free(l->unlisten_sql);
    free(l);
}
