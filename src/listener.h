/*
 * listener: the LISTEN connection that wakes the runners.
 *
 * A notification is only a hint that events were committed; after every
 * (re)connect the LISTEN is issued again and the owner is woken as well,
 * since notifications sent while disconnected are lost. The connection to
 * the read-model database (the same one unless database.target is set)
 * holds the instance's presence lock (fleet.h), where the ownership locks
 * are, so other instances count this one exactly while it is connected.
 *
 * While notifications come faster than LISTENER_POLL_RATE a second, the
 * listener leaves the channel and wakes the owner every tick instead (the
 * paced reads find the events: docs/design.md, "Leaving the channel while
 * busy"); every commit of a listened channel signals the listening backend,
 * which cost the writers 15 % of their throughput on a 2-core box. When the
 * opens have found nothing new for LISTENER_QUIET_S, it listens again and
 * wakes the owner once more, for what was committed in between.
 *
 * The connection to the read-model database also listens for operators'
 * requests (FLEET_REQUEST_CHANNEL), always: they are rare.
 */
#ifndef PROJECTORD_LISTENER_H
#define PROJECTORD_LISTENER_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#define LISTENER_POLL_RATE 2000.0 /* notifications a second */
#define LISTENER_QUIET_S   0.05
#define LISTENER_UNTOLD_S  1.0 /* no open for this long: listen again, the safe default */

struct listener;

typedef void (*listener_wake_cb)(void *arg);
/*
 * Operators asked something (fleet.h, FLEET_REQUEST_CHANNEL). No name:
 * notifications read together arrive as one (pgconn.c), so the owner must
 * look at every projection's request anyway.
 */
typedef void (*listener_request_cb)(void *arg);
/* The highest head position the owner's opens found, and when an open last found one. */
typedef void (*listener_progress_cb)(void *arg, int64_t *head, double *seen_at);

/*
 * conninfo: the event store; target: the read-model database, NULL when the
 * same. Returns NULL when out of memory. The strings are copied.
 */
struct listener *listener_new(struct ev_loop *loop, const char *conninfo, const char *target,
                              const char *channel, int instance_id, listener_wake_cb wake,
                              listener_progress_cb progress, listener_request_cb request,
                              void *arg);
void listener_start(struct listener *l);
/* The tick while the channel is left, in seconds; 0: always listen. */
void listener_set_tick(struct listener *l, double tick_s);
void listener_free(struct listener *l);
/* Whether its sessions (LISTEN, and the presence lock's) are up now. */
bool listener_connected(const struct listener *l);

#endif
