/*
 * health: the readiness verdict (see health.h).
 */
#include "health.h"

#include <inttypes.h>
#include <string.h>

#include "runner_metrics.h"

bool health_ready(struct mbuf *why, struct runner *const *runners, size_t n, bool connected,
                  const char *not_connected)
{
    if (!connected) {
        mbuf_printf(why, "not ready: %s\n", not_connected);
        return false;
    }
    int64_t head = runner_metrics_head(runners, n);
    int owned = 0, sick = 0;
    struct mbuf list = {0};
    for (size_t i = 0; i < n; i++) {
        struct runner_gauges v;
        if (!runners[i])
            continue;
        runner_gauges(runners[i], &v);
        if (!v.owned)
            continue;
        owned++;
        if (v.failed)
            mbuf_printf(&list, "%s%s failed", sick++ ? "; " : "", runner_name(runners[i]));
        else if (runner_metrics_stalled(&v, head))
            mbuf_printf(&list, "%s%s stalled (%" PRId64 " events behind, no progress for %.0f s)",
                        sick++ ? "; " : "", runner_name(runners[i]),
                        (v.head_position > head ? v.head_position : head) - v.last_position,
                        v.progress_age);
    }
    if (sick)
        mbuf_printf(why, "not ready: %s\n", list.data);
    else
        mbuf_printf(why, "ready: %d projection(s) owned by this instance, all healthy\n", owned);
    why->oom |= list.oom;
    mbuf_free(&list);
    return sick == 0;
}
