/*
 * procstat: the standard process_* metrics of a Prometheus client, read
 * from /proc/self (Linux) at each scrape: CPU time, resident and virtual
 * memory, open and allowed file descriptors, start time. Only /proc/self
 * is read, which the systemd unit's ProcSubset=pid leaves visible. A value
 * that cannot be read is left out rather than reported wrong.
 */
#ifndef PROJECTORD_PROCSTAT_H
#define PROJECTORD_PROCSTAT_H

#include "metrics.h"

/* Append the process_* families to out. Reads procfs: fast, never waits on I/O. */
void procstat_render(struct mbuf *out);

#endif
