/*
 * daemon: wires the loop for `projectord run` (see daemon.h).
 *
 * Each enabled projection gets a runner with its own connection, so one
 * slow or failed projection never holds the others back. The listener and
 * the poll timer only wake runners; runners decide what to read. SIGHUP
 * reloads the configuration file: log level and format, batch size and
 * bytes, poll interval, stall timeout, on_error and enabling or disabling a
 * projection take effect at once; a changed database or channel needs a
 * restart, and the log says so. It also loads projection_dir again: a new
 * declared projection starts, a changed one's runner is replaced (a changed
 * version then rebuilds it without downtime, as at start).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "declared.h"
#include "fleet.h"
#include "health.h"
#include "readshare.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "procstat.h"
#include "registry.h"
#include "runner.h"
#include "runner_metrics.h"
#include "schemagate.h"

#define STOP_GRACE_S    30.0
#define NOTIFY_STATUS_S 5.0 /* STATUS= refresh when there is no watchdog */

struct daemon {
    struct ev_loop *loop;
    struct config *cfg;         /* reloads update it in place: runners read it */
    const char *config_path;    /* NULL: the default path */
    const char *level_override; /* -l, which a reload must not undo */
    char owner[300];
    struct fleet fleet;
    struct runner **runners;    /* one slot per projection, registry order (room for all) */
    bool *active;               /* the slot's runner runs (not disabled, not finished) */
    struct runner_stats *stats; /* the slot's counts, kept across runner restarts */
    struct metrics_server *metrics;
    struct declared **retired; /* declarations a reload replaced: freed after the runners */
    size_t nretired;
    size_t nrunning;
    struct listener *listener;
    struct schemagate *gate; /* until the schema is there: nothing else starts */
    ev_timer poll_timer;
    ev_timer stop_timer;
    ev_timer respawn_timer; /* starts the runners of enabled slots whose runner has finished */
    ev_signal sigterm, sigint, sighup;
    ev_timer notify_timer; /* systemd: WATCHDOG=1 and STATUS= (notify.h) */
    bool ready;            /* READY=1 sent */
    bool stopping;
    int exit_code;
};

static void wake_all(void *arg)
{
    struct daemon *d = arg;
    if (d->gate)
        return;
    readshare_wake_round(d->fleet.share);
    for (size_t i = 0; i < projection_registry_count; i++)
        if (d->active[i])
            runner_wake(d->runners[i]);
}

static void poll_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    wake_all(w->data);
}

/* -- systemd notifications (notify.h): no-ops without NOTIFY_SOCKET -- */

static void notify_summary(const struct daemon *d)
{
    const char *state = d->stopping ? "stopping" : d->ready ? "running" : "connecting";
    notify_status("%s: %zu projection(s) enabled, %d owned by this instance, %d instance(s)", state,
                  d->nrunning, d->fleet.owned, d->fleet.instances);
}

/* The listener wakes us after each (re)connect: the first one means ready. */
static void listener_wake(void *arg)
{
    struct daemon *d = arg;
    if (!d->ready) {
        d->ready = true;
        notify_ready();
        notify_summary(d);
    }
    wake_all(d);
}

/*
 * Operators asked something (listener.h): every runner reads its status
 * row now. Requests are rare, and notifications read together arrive as
 * one, so the name alone would miss the others.
 */
static void listener_request(void *arg)
{
    struct daemon *d = arg;
    for (size_t i = 0; i < projection_registry_count; i++)
        if (d->active[i])
            runner_poke(d->runners[i]);
}

/* What the runners' opens found (listener.h): the highest head, and when. */
static void listener_progress(void *arg, int64_t *head, double *seen_at)
{
    struct daemon *d = arg;
    *head = 0;
    *seen_at = 0;
    for (size_t i = 0; i < projection_registry_count; i++) {
        if (!d->active[i])
            continue;
        struct runner_gauges g;
        runner_gauges(d->runners[i], &g);
        if (g.head_position > *head)
            *head = g.head_position;
        if (g.head_at > *seen_at)
            *seen_at = g.head_at;
    }
}

static void notify_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    /* From now: after a stalled loop, libev would fire the beats missed in a burst. */
    ev_timer_again(loop, w);
    if (notify_watchdog_interval() > 0)
        notify_watchdog();
    notify_summary(w->data);
}

static void notify_setup(struct daemon *d)
{
    if (!notify_enabled())
        return;
    double watchdog_s = notify_watchdog_interval();
    double every = watchdog_s > 0 ? watchdog_s : NOTIFY_STATUS_S;
    ev_timer_init(&d->notify_timer, notify_timer_cb, 0.0, every);
    d->notify_timer.data = d;
    ev_timer_start(d->loop, &d->notify_timer);
}

/* -- end of systemd notifications -- */

static void runner_done(struct runner *r, void *arg)
{
    struct daemon *d = arg;
    for (size_t i = 0; i < projection_registry_count; i++)
        if (d->runners[i] == r && d->active[i]) {
            d->active[i] = false;
            d->nrunning--;
            /*
             * Enabled again while it was stopping: its successor starts
             * once this one is gone, from the loop (not from inside the
             * callbacks of the runner it frees).
             */
            if (!d->stopping && d->cfg->projections[i].enabled)
                ev_timer_start(d->loop, &d->respawn_timer);
        }
    /* A runner disabled by a reload stays in its slot until re-enabled or teardown. */
    if (d->stopping && d->nrunning == 0)
        ev_break(d->loop, EVBREAK_ALL);
}

static void stop_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct daemon *d = w->data;
    log_error("shutdown: batches still in flight after %.0fs; exiting without them", STOP_GRACE_S);
    d->exit_code = 1;
    ev_break(loop, EVBREAK_ALL);
}

static void stop_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)revents;
    struct daemon *d = w->data;
    if (d->stopping)
        return;
    d->stopping = true;
    notify_stopping();
    notify_summary(d);
    log_info("received %s: finishing the batches in flight", strsignal(w->signum));
    ev_timer_stop(loop, &d->poll_timer);
    listener_free(d->listener);
    d->listener = NULL;
    ev_timer_start(loop, &d->stop_timer);
    if (d->nrunning == 0 || d->gate) { /* waiting for the schema: no runner has started */
        ev_break(loop, EVBREAK_ALL);
        return;
    }
    for (size_t i = 0; i < projection_registry_count; i++)
        if (d->active[i])
            runner_stop(d->runners[i]);
}

/* Start the runner of registry slot i. Returns 0, or -1 when out of memory. */
static int start_runner(struct daemon *d, size_t i)
{
    const struct projection *p = projection_registry[i];
    runner_free(d->runners[i]); /* a finished one, from before a reload disabled it */
    d->runners[i] = runner_new(d->loop, p, config_projection(d->cfg, p->name), d->cfg, d->owner,
                               &d->fleet, &d->stats[i], runner_done, d);
    if (!d->runners[i])
        return -1;
    d->active[i] = true;
    d->nrunning++;
    return 0;
}

/*
 * The projections enabled here, which the fleet's share is computed from;
 * a runner still stopping after a reload disabled it no longer counts.
 */
static void count_enabled(struct daemon *d)
{
    d->fleet.projections = 0;
    for (size_t i = 0; i < projection_registry_count; i++)
        d->fleet.projections += d->cfg->projections[i].enabled;
}

static void respawn_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct daemon *d = w->data;
    if (d->gate)
        return; /* the schema's arrival starts them */
    for (size_t i = 0; i < projection_registry_count && !d->stopping; i++) {
        if (!d->cfg->projections[i].enabled || d->active[i])
            continue;
        if (start_runner(d, i) == 0)
            runner_start(d->runners[i]);
        else
            log_error("%s: out of memory starting its runner", projection_registry[i]->name);
    }
}

static int add_runners(struct daemon *d)
{
    /* Room for every projection a reload may declare: runners point at their stats. */
    d->runners = calloc(CONFIG_MAX_PROJECTIONS, sizeof *d->runners);
    d->active = calloc(CONFIG_MAX_PROJECTIONS, sizeof *d->active);
    d->stats = calloc(CONFIG_MAX_PROJECTIONS, sizeof *d->stats);
    if (!d->runners || !d->active || !d->stats)
        return -1;
    for (size_t i = 0; i < projection_registry_count; i++) {
        if (!d->cfg->projections[i].enabled)
            log_info("%s: disabled in the configuration", projection_registry[i]->name);
        else if (start_runner(d, i) < 0)
            return -1;
    }
    count_enabled(d);
    return 0;
}

static bool same_text(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

/* Settings a running daemon can not change. */
static void warn_restart_needed(const struct config *old, const struct config *next)
{
    if (!same_text(old->conninfo, next->conninfo))
        log_warning("reload: database.conninfo changed: restart projectord to apply it");
    if (!same_text(old->target_conninfo, next->target_conninfo))
        log_warning("reload: database.target changed: restart projectord to apply it");
    if (!same_text(old->listen_channel, next->listen_channel))
        log_warning("reload: listen_channel changed: restart projectord to apply it");
    if (!same_text(old->metrics_listen, next->metrics_listen))
        log_warning("reload: metrics.listen changed: restart projectord to apply it");
}

/* Enable, disable and re-police projections as the new file says. */
static void apply_projections(struct daemon *d, const struct config *next)
{
    for (size_t i = 0; i < projection_registry_count; i++) {
        struct projection_config *pc = &d->cfg->projections[i];
        const struct projection_config *np = &next->projections[i];
        pc->on_error = np->on_error;
        if (pc->enabled == np->enabled)
            continue;
        pc->enabled = np->enabled;
        log_info("reload: %s %s", pc->name, np->enabled ? "enabled" : "disabled");
        if (np->enabled && d->active[i])
            log_info("reload: %s: starts again once its runner has stopped", pc->name);
        else if (np->enabled)
            ev_timer_start(d->loop, &d->respawn_timer);
        else if (d->active[i])
            runner_stop(d->runners[i]);
    }
    count_enabled(d);
}

/* The declarations a reload found, to be put in use once the config is good too. */
struct declared_reload {
    struct declared **loaded;
    size_t n;
};

/*
 * Load projection_dir again. Returns 0 (list holds what it found, maybe
 * nothing), or -1 after logging why: the running projections stay.
 */
static int reload_declared(struct daemon *d, struct declared_reload *list)
{
    char err[1024], *dir;
    *list = (struct declared_reload){0};
    if (config_projection_dir(d->config_path, &dir, err, sizeof err) < 0) {
        log_error("reload: %s; keeping the running configuration", err);
        return -1;
    }
    if (!dir)
        return 0;
    int rc = declared_load_list(dir, &list->loaded, &list->n, err, sizeof err);
    if (rc < 0)
        log_error("reload: %s; keeping the running configuration and projections", err);
    free(dir);
    return rc;
}

/* The registry's names, then the names list adds (new projections go at the end). */
static size_t reload_names(const struct declared_reload *list, const char **names)
{
    size_t n = 0;
    for (size_t i = 0; i < projection_registry_count && n < CONFIG_MAX_PROJECTIONS; i++)
        names[n++] = projection_registry[i]->name;
    for (size_t i = 0; i < list->n && n < CONFIG_MAX_PROJECTIONS; i++)
        if (!registry_find(list->loaded[i]->proj.name))
            names[n++] = list->loaded[i]->proj.name;
    return n;
}

/*
 * Put the reloaded declarations in use: a new one gets a slot at the end
 * (disabled in d->cfg, so apply_projections starts it as enabled by the
 * file), a changed one replaces its projection, whose runner stops and
 * starts again with it (runner_done's respawn). Unchanged ones are
 * dropped. A replaced declaration is kept until teardown (d->retired): its
 * runner, and a finished one in its slot, may still point at it.
 */
static void apply_declared(struct daemon *d, const struct declared_reload *list,
                           const struct config *next)
{
    for (size_t k = 0; k < projection_registry_count; k++) {
        const char *origin = registry_origin(projection_registry[k]);
        bool found = false;
        for (size_t i = 0; origin && i < list->n && !found; i++)
            found = strcmp(list->loaded[i]->proj.name, projection_registry[k]->name) == 0;
        if (origin && !found)
            log_warning("reload: %s: %s declares it no more; it runs on until a restart",
                        projection_registry[k]->name, origin);
    }
    for (size_t i = 0; i < list->n; i++) {
        struct declared *nd = list->loaded[i];
        const struct projection *old = registry_find(nd->proj.name);
        const struct declared *od = declared_of(old);
        if (od && strcmp(od->text, nd->text) == 0 && strcmp(od->file, nd->file) == 0) {
            declared_free(nd);
            continue;
        }
        size_t slot = projection_registry_count;
        for (size_t k = 0; old && k < projection_registry_count; k++)
            if (projection_registry[k] == old)
                slot = k;
        if (!old && slot >= CONFIG_MAX_PROJECTIONS) {
            log_error("reload: %s: more than %d projections; not added", nd->file,
                      CONFIG_MAX_PROJECTIONS);
            declared_free(nd);
            continue;
        }
        struct declared **retired = realloc(d->retired, (d->nretired + 1) * sizeof *retired);
        if (!retired || registry_put(&nd->proj, nd->file) < 0) {
            log_error("reload: %s: out of memory; not applied", nd->file);
            if (retired)
                d->retired = retired;
            declared_free(nd);
            continue;
        }
        d->retired = retired;
        if (od)
            d->retired[d->nretired++] = (struct declared *)od;
        if (!old) {
            const struct projection_config *np = config_projection(next, nd->proj.name);
            struct projection_config *pc = &d->cfg->projections[d->cfg->n_projections++];
            *pc = *np;
            pc->enabled = false; /* apply_projections starts it when the file enables it */
            log_info("reload: %s: declared in %s (version %d)", nd->proj.name, nd->file,
                     nd->proj.version);
            continue;
        }
        log_info("reload: %s: %s changed (version %d, was %d): its runner starts again with it",
                 nd->proj.name, nd->file, nd->proj.version, old->version);
        if (d->active[slot])
            runner_stop(d->runners[slot]); /* runner_done respawns it with the new one */
    }
}

static void reload(struct daemon *d)
{
    struct declared_reload list;
    if (reload_declared(d, &list) < 0)
        return;
    const char *names[CONFIG_MAX_PROJECTIONS];
    size_t nnames = reload_names(&list, names);
    struct config next;
    char err[1024];
    if (config_load(&next, d->config_path, names, nnames, err, sizeof err) < 0) {
        log_error("reload: %s; keeping the running configuration", err);
        for (size_t i = 0; i < list.n; i++)
            declared_free(list.loaded[i]);
        free(list.loaded);
        return;
    }
    apply_declared(d, &list, &next);
    free(list.loaded);
    if (d->level_override)
        log_level_parse(d->level_override, &next.log_level);
    warn_restart_needed(d->cfg, &next);
    log_setup(next.log_level, next.log_format);
    d->cfg->log_level = next.log_level;
    d->cfg->log_format = next.log_format;
    d->cfg->batch_size = next.batch_size;
    d->cfg->min_read_interval_ms = next.min_read_interval_ms;
    d->cfg->batch_max_bytes = next.batch_max_bytes;
    readshare_set_ahead_bytes(d->fleet.share,
                              (int64_t)READSHARE_AHEAD_BOUNDS * next.batch_max_bytes);
    d->cfg->stall_timeout_ms = next.stall_timeout_ms;
    listener_set_tick(d->listener, next.min_read_interval_ms / 1000.0);
    d->cfg->rebuild_on_version_change = next.rebuild_on_version_change;
    if (d->cfg->poll_interval_ms != next.poll_interval_ms) {
        d->cfg->poll_interval_ms = next.poll_interval_ms;
        d->poll_timer.repeat = next.poll_interval_ms / 1000.0;
        ev_timer_again(d->loop, &d->poll_timer);
    }
    apply_projections(d, &next);
    config_free(&next);
    log_info("reload: configuration applied (batch_size %d, batch_max_bytes %d, "
             "poll_interval_ms %d, min_read_interval_ms %d, stall_timeout_ms %d, log level %s)",
             d->cfg->batch_size, d->cfg->batch_max_bytes, d->cfg->poll_interval_ms,
             d->cfg->min_read_interval_ms, d->cfg->stall_timeout_ms,
             log_level_name(d->cfg->log_level));
}

static void hup_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    struct daemon *d = w->data;
    if (d->stopping)
        return;
    log_info("received SIGHUP: reloading the configuration");
    notify_reloading();
    reload(d);
    if (d->ready)
        notify_ready(); /* systemd waits for READY=1 after RELOADING=1 */
    notify_summary(d);
}

static void setup_watchers(struct daemon *d)
{
    double poll_s = d->cfg->poll_interval_ms / 1000.0;
    ev_timer_init(&d->poll_timer, poll_cb, poll_s, poll_s);
    d->poll_timer.data = d;
    ev_timer_start(d->loop, &d->poll_timer);
    ev_timer_init(&d->stop_timer, stop_timeout_cb, STOP_GRACE_S, 0.0);
    d->stop_timer.data = d;
    ev_timer_init(&d->respawn_timer, respawn_cb, 0.0, 0.0);
    d->respawn_timer.data = d;
    ev_signal_init(&d->sigterm, stop_cb, SIGTERM);
    ev_signal_init(&d->sigint, stop_cb, SIGINT);
    ev_signal_init(&d->sighup, hup_cb, SIGHUP);
    d->sigterm.data = d->sigint.data = d->sighup.data = d;
    ev_signal_start(d->loop, &d->sigterm);
    ev_signal_start(d->loop, &d->sigint);
    ev_signal_start(d->loop, &d->sighup);
    /*
     * main() blocked SIGHUP; libev's handler is set now (the loop does not
     * use signalfd, so libev leaves the mask alone): unblock it, and one
     * sent meanwhile is delivered to the handler, for the loop's hup_cb.
     */
    sigset_t hup;
    sigemptyset(&hup);
    sigaddset(&hup, SIGHUP);
    sigprocmask(SIG_UNBLOCK, &hup, NULL);
}

static void render_metrics(struct mbuf *out, void *arg)
{
    struct daemon *d = arg;
    runner_metrics_render(out, d->runners, d->stats, projection_registry_count, d->fleet.instances);
    procstat_render(out);
}

/* /readyz: connected, and every projection owned here healthy (health.h). */
static bool ready_metrics(struct mbuf *why, void *arg)
{
    struct daemon *d = arg;
    const char *not_connected = d->stopping ? "stopping"
                                : d->gate   ? "waiting for the schema (projectord migrate)"
                                : !listener_connected(d->listener) ? "not connected to the database"
                                                                   : NULL;
    return health_ready(why, d->runners, projection_registry_count, not_connected == NULL,
                        not_connected);
}

/* The Prometheus endpoint, if configured; failing to listen is a startup error. */
static int start_metrics(struct daemon *d)
{
    char err[512];
    if (!d->cfg->metrics_listen)
        return 0;
    d->metrics = metrics_listen(d->loop, d->cfg->metrics_listen, render_metrics, ready_metrics, d,
                                err, sizeof err);
    if (!d->metrics) {
        log_error("metrics.listen: %s", err);
        return -1;
    }
    log_info("metrics: serving http://%s/metrics (and /healthz, /readyz)", d->cfg->metrics_listen);
    return 0;
}

/* The schema is there (schemagate.h): start listening and projecting. */
static void schema_ready(void *arg)
{
    struct daemon *d = arg;
    schemagate_free(d->gate);
    d->gate = NULL;
    listener_start(d->listener);
    for (size_t i = 0; i < projection_registry_count; i++)
        if (d->active[i])
            runner_start(d->runners[i]);
    ev_timer_start(d->loop, &d->respawn_timer); /* those a reload enabled meanwhile */
}

static void teardown(struct daemon *d)
{
    schemagate_free(d->gate);
    listener_free(d->listener);
    metrics_close(d->metrics);
    for (size_t i = 0; d->runners && i < projection_registry_count; i++)
        runner_free(d->runners[i]);
    free(d->runners);
    free(d->active);
    free(d->stats);
    for (size_t i = 0; i < d->nretired; i++)
        declared_free(d->retired[i]);
    free(d->retired);
    readshare_free(d->fleet.share);
    ev_signal_stop(d->loop, &d->sigterm);
    ev_signal_stop(d->loop, &d->sigint);
    ev_signal_stop(d->loop, &d->sighup);
    ev_timer_stop(d->loop, &d->poll_timer);
    ev_timer_stop(d->loop, &d->stop_timer);
    ev_timer_stop(d->loop, &d->respawn_timer);
    ev_timer_stop(d->loop, &d->notify_timer);
    notify_close();
}

int daemon_run(struct config *cfg, const char *config_path, const char *level_override)
{
    struct daemon d = {.cfg = cfg, .config_path = config_path, .level_override = level_override};
    d.loop = ev_default_loop(EVFLAG_AUTO);
    if (!d.loop) {
        log_error("cannot initialise the event loop");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    /*
     * SIGHUP is blocked since main() began (main.c): a reload sent while the
     * daemon starts stays pending until setup_watchers unblocks it.
     */
    char host[256] = "unknown";
    gethostname(host, sizeof host - 1);
    snprintf(d.owner, sizeof d.owner, "%s:%ld", host, (long)getpid());
    log_set_instance(d.owner); /* every JSON record names it */
    d.fleet.instance_id =
        (int)(((unsigned)getpid() * 2654435761u ^ (unsigned)time(NULL)) & 0x7fffffff);

    d.fleet.share = readshare_new(d.loop, cfg->batch_size, READSHARE_AHEAD);
    if (d.fleet.share)
        readshare_set_ahead_bytes(d.fleet.share,
                                  (int64_t)READSHARE_AHEAD_BOUNDS * cfg->batch_max_bytes);
    if (!d.fleet.share || add_runners(&d) < 0) {
        log_error("out of memory");
        teardown(&d);
        return 1;
    }
    if (d.nrunning == 0)
        log_warning("no projection is enabled: nothing to do (a reload may enable some)");
    d.listener =
        listener_new(d.loop, cfg->conninfo, cfg->target_conninfo, cfg->listen_channel,
                     d.fleet.instance_id, listener_wake, listener_progress, listener_request, &d);
    if (!d.listener) {
        log_error("out of memory");
        teardown(&d);
        return 1;
    }
    if (start_metrics(&d) < 0) {
        teardown(&d);
        return 1;
    }
    setup_watchers(&d);
    notify_setup(&d);
    log_info("projectord %s starting as %s with %zu projection(s)", PROJECTORD_VERSION, d.owner,
             d.nrunning);
    listener_set_tick(d.listener, cfg->min_read_interval_ms / 1000.0);
    d.gate = schemagate_new(d.loop, cfg->conninfo, cfg->target_conninfo, schema_ready, &d);
    if (!d.gate) {
        log_error("out of memory");
        teardown(&d);
        return 1;
    }
    schemagate_start(d.gate);

    ev_run(d.loop, 0);

    log_info("projectord stopped");
    teardown(&d);
    return d.exit_code;
}
