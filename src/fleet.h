/*
 * fleet: how the instances running against one database share the
 * projections. Each instance holds a presence lock (advisory, key1 =
 * FLEET_INSTANCE_LOCK) on its listener connection; each projection is owned
 * through an advisory lock (key1 = FLEET_PROJECTION_LOCK, key2 =
 * hashtext(name)) held by the owning runner's connection, so it is released
 * by the server the moment that connection goes away. An instance claims a
 * projection only while it owns fewer than its share, ceil(P / N), and
 * hands projections back when it owns more.
 *
 * One struct per daemon, owned by daemon.c and shared by its runners; all
 * access is from the loop, so no locking.
 */
#ifndef PROJECTORD_FLEET_H
#define PROJECTORD_FLEET_H

struct readshare;

#define FLEET_PROJECTION_LOCK 1886546532 /* "prjd" */
#define FLEET_INSTANCE_LOCK   1886546537 /* "prji" */

/*
 * An operator's request (rebuild, resume, replay) is written to the
 * projection's status row and announced on this channel of the read-model
 * database, its payload the projection's name, so the owner reads it at
 * once instead of at its next heartbeat (which still finds it should the
 * notification be lost).
 */
#define FLEET_REQUEST_CHANNEL "projectord_request"

struct fleet {
    int projections;         /* enabled here (every instance is expected to run the same config) */
    int owned;               /* projections this instance holds the lock of */
    int instances;           /* instances seen holding their presence lock, at the last count */
    int instance_id;         /* key2 of this instance's presence lock */
    struct readshare *share; /* the runners' shared reads (readshare.h), or NULL */
};

/* The most projections one instance should own. */
static inline int fleet_share(const struct fleet *f)
{
    int n = f->instances > 0 ? f->instances : 1;
    return (f->projections + n - 1) / n;
}

#endif
