/*
 * libFuzzer target: event payload decoding and every projection handler's
 * validation. The first byte picks a handler (over all compiled-in
 * projections), the rest is event_data. The batch's connection is never
 * connected, so a handler that gets as far as pj_exec sees it fail, which
 * is the end of what can run without a database.
 */
#include <ev.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "batch.h"
#include "payload.h"
#include "pgconn.h"
#include "registry.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void ignore(struct pgconn *c, void *arg, enum pgconn_event ev, const PGresult *res,
                   const PGnotify *n)
{
    (void)c, (void)arg, (void)ev, (void)res, (void)n;
}

static const struct pj_handler *pick(uint8_t selector, const struct projection **owner)
{
    size_t total = 0;
    for (size_t i = 0; i < projection_registry_count; i++)
        for (const struct pj_handler *h = projection_registry[i]->handlers; h->event_type; h++)
            total++;
    size_t want = selector % total;
    for (size_t i = 0; i < projection_registry_count; i++)
        for (const struct pj_handler *h = projection_registry[i]->handlers; h->event_type; h++)
            if (want-- == 0) {
                *owner = projection_registry[i];
                return h;
            }
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct pgconn *conn;
    if (!conn)
        conn = pgconn_new(ev_default_loop(0), "fuzz", "", ignore, NULL);
    if (size < 1)
        return 0;
    const struct projection *p;
    const struct pj_handler *h = pick(data[0], &p);
    struct pj_event ev = {
        .position = 42,
        .position_text = "42",
        .event_id = "00000000-0000-0000-0000-000000000001",
        .stream_id = "00000000-0000-0000-0000-000000000002",
        .aggregate_type = "Fuzz",
        .aggregate_id = "00000000-0000-0000-0000-000000000003",
        .event_type = h->event_type,
        .event_version = 1,
        .aggregate_version = 7,
        .aggregate_version_text = "7",
        .event_data = (const char *)data + 1,
        .occurred_at = "2026-11-21 10:00:00+00",
        .transaction_id = "750",
    };
    struct pj_ctx ctx;
    batch_init(&ctx, p, conn);
    json_t *payload = NULL;
    if (!(h->flags & PJ_NO_PAYLOAD)) {
        payload = payload_decode((const char *)data + 1, size - 1, NULL, ctx.err, sizeof ctx.err);
        if (!payload) {
            batch_free(&ctx);
            return 0;
        }
    }
    h->fn(&ctx, &ev, payload);
    json_decref(payload);
    batch_free(&ctx);
    return 0;
}
