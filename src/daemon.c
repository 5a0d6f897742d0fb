/*
 * daemon: wires the loop for `projectord run` (see daemon.h).
 *
 * Each enabled projection gets a runner with its own connection, so one
 * slow or failed projection never holds the others back. The listener and
 * the poll timer only wake runners; runners decide what to read.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "fleet.h"
#include "listener.h"
#include "log.h"
#include "notify.h"
#include "registry.h"
#include "runner.h"

#define STOP_GRACE_S    30.0
#define NOTIFY_STATUS_S 5.0 /* STATUS= refresh when there is no watchdog */

struct daemon {
    struct ev_loop *loop;
    const struct config *cfg;
    char owner[300];
    struct fleet fleet;
    struct runner **runners;
    size_t nrunners;
    size_t nrunning;
    struct listener *listener;
    ev_timer poll_timer;
    ev_timer stop_timer;
    ev_signal sigterm, sigint, sighup;
    ev_timer notify_timer; /* systemd: WATCHDOG=1 and STATUS= (notify.h) */
    bool ready;            /* READY=1 sent */
    bool stopping;
    int exit_code;
};

static void wake_all(void *arg)
{
    struct daemon *d = arg;
    for (size_t i = 0; i < d->nrunners; i++)
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
                  d->nrunners, d->fleet.owned, d->fleet.instances);
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

static void notify_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
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
    (void)r;
    struct daemon *d = arg;
    if (--d->nrunning == 0)
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
    if (d->nrunning == 0) {
        ev_break(loop, EVBREAK_ALL);
        return;
    }
    for (size_t i = 0; i < d->nrunners; i++)
        runner_stop(d->runners[i]);
}

static void hup_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    log_warning("received SIGHUP: live reload is not supported yet; restart to apply changes");
}

static int add_runners(struct daemon *d)
{
    d->runners = calloc(projection_registry_count, sizeof *d->runners);
    if (!d->runners)
        return -1;
    for (size_t i = 0; i < projection_registry_count; i++) {
        const struct projection *p = projection_registry[i];
        const struct projection_config *pc = config_projection(d->cfg, p->name);
        if (!pc || !pc->enabled) {
            log_info("%s: disabled in the configuration", p->name);
            continue;
        }
        struct runner *r = runner_new(d->loop, p, pc, d->cfg, d->owner, &d->fleet, runner_done, d);
        if (!r)
            return -1;
        d->runners[d->nrunners++] = r;
    }
    d->nrunning = d->nrunners;
    d->fleet.projections = (int)d->nrunners;
    return 0;
}

static void setup_watchers(struct daemon *d)
{
    double poll_s = d->cfg->poll_interval_ms / 1000.0;
    ev_timer_init(&d->poll_timer, poll_cb, poll_s, poll_s);
    d->poll_timer.data = d;
    ev_timer_start(d->loop, &d->poll_timer);
    ev_timer_init(&d->stop_timer, stop_timeout_cb, STOP_GRACE_S, 0.0);
    d->stop_timer.data = d;
    ev_signal_init(&d->sigterm, stop_cb, SIGTERM);
    ev_signal_init(&d->sigint, stop_cb, SIGINT);
    ev_signal_init(&d->sighup, hup_cb, SIGHUP);
    d->sigterm.data = d->sigint.data = d->sighup.data = d;
    ev_signal_start(d->loop, &d->sigterm);
    ev_signal_start(d->loop, &d->sigint);
    ev_signal_start(d->loop, &d->sighup);
}

static void teardown(struct daemon *d)
{
    listener_free(d->listener);
    for (size_t i = 0; i < d->nrunners; i++)
        runner_free(d->runners[i]);
    free(d->runners);
    ev_signal_stop(d->loop, &d->sigterm);
    ev_signal_stop(d->loop, &d->sigint);
    ev_signal_stop(d->loop, &d->sighup);
    ev_timer_stop(d->loop, &d->poll_timer);
    ev_timer_stop(d->loop, &d->stop_timer);
    ev_timer_stop(d->loop, &d->notify_timer);
    notify_close();
}

int daemon_run(const struct config *cfg)
{
    struct daemon d = {.cfg = cfg};
    d.loop = ev_default_loop(EVFLAG_AUTO);
    if (!d.loop) {
        log_error("cannot initialise the event loop");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    char host[256] = "unknown";
    gethostname(host, sizeof host - 1);
    snprintf(d.owner, sizeof d.owner, "%s:%ld", host, (long)getpid());
    d.fleet.instance_id =
        (int)(((unsigned)getpid() * 2654435761u ^ (unsigned)time(NULL)) & 0x7fffffff);

    if (add_runners(&d) < 0) {
        log_error("out of memory");
        teardown(&d);
        return 1;
    }
    if (d.nrunners == 0)
        log_warning("no projection is enabled: nothing to do");
    d.listener = listener_new(d.loop, cfg->conninfo, cfg->listen_channel, d.fleet.instance_id,
                              listener_wake, &d);
    if (!d.listener) {
        log_error("out of memory");
        teardown(&d);
        return 1;
    }
    setup_watchers(&d);
    notify_setup(&d);
    log_info("projectord %s starting as %s with %zu projection(s)", PROJECTORD_VERSION, d.owner,
             d.nrunners);
    listener_start(d.listener);
    for (size_t i = 0; i < d.nrunners; i++)
        runner_start(d.runners[i]);

    ev_run(d.loop, 0);

    log_info("projectord stopped");
    teardown(&d);
    return d.exit_code;
}
