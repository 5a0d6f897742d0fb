/*
 * listener: the LISTEN connection that wakes the runners.
 *
 * A notification is only a hint that events were committed; after every
 * (re)connect the LISTEN is issued again and the owner is woken as well,
 * since notifications sent while disconnected are lost. The connection to
 * the read-model database (the same one unless database.target is set)
 * holds the instance's presence lock (fleet.h), where the ownership locks
 * are, so other instances count this one exactly while it is connected.
 */
#ifndef PROJECTORD_LISTENER_H
#define PROJECTORD_LISTENER_H

#include <ev.h>

struct listener;

typedef void (*listener_wake_cb)(void *arg);

/*
 * conninfo: the event store; target: the read-model database, NULL when the
 * same. Returns NULL when out of memory. The strings are copied.
 */
struct listener *listener_new(struct ev_loop *loop, const char *conninfo, const char *target,
                              const char *channel, int instance_id, listener_wake_cb wake,
                              void *arg);
void listener_start(struct listener *l);
void listener_free(struct listener *l);

#endif
