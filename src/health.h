/*
 * health: whether `run` is ready to serve, for /readyz (metrics.h). Judged
 * from this instance's side, as the status view judges health (SPEC §3,
 * "healthy means progressing"): ready when it is connected and every
 * projection it owns is neither failed nor stalled. Projections other
 * instances own are theirs to judge: an instance standing by for all of
 * them is ready.
 */
#ifndef PROJECTORD_HEALTH_H
#define PROJECTORD_HEALTH_H

#include <stdbool.h>
#include <stddef.h>

#include "metrics.h"
#include "runner.h"

/*
 * runners[i]: NULL for a slot never started. connected: the instance's own
 * database session is up (not stopping, the schema there, the listener
 * connected); when false, not_connected says why. Appends one line to why
 * ("ready: ..." or "not ready: ...") and returns the verdict.
 */
bool health_ready(struct mbuf *why, struct runner *const *runners, size_t n, bool connected,
                  const char *not_connected);

#endif
