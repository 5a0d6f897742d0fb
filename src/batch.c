/*
 * batch: statement bookkeeping behind pj_exec / pj_bad (see batch.h).
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"

static int statement_count(const struct projection *p)
{
    int n = 0;
    while (p->statements[n].sql)
        n++;
    return n;
}

int batch_init(struct pj_ctx *b, const struct projection *p, struct pgconn *conn)
{
    *b = (struct pj_ctx){
        .conn = conn, .proj = p, .nstatements = statement_count(p), .event = BATCH_NO_EVENT};
    if (bulk_init(&b->bulk, p, b->nstatements) < 0)
        return -1;
    if (p->state_size > 0 && !(b->state = calloc(1, p->state_size)))
        return -1;
    return 0;
}

static void release_state(struct pj_ctx *b)
{
    if (b->state && b->proj->release)
        b->proj->release(b->state);
    if (b->state)
        memset(b->state, 0, b->proj->state_size);
}

void batch_free(struct pj_ctx *b)
{
    release_state(b);
    free(b->state);
    free(b->stmts);
    bulk_free(&b->bulk);
    b->state = NULL;
    b->stmts = NULL;
    b->n = b->cap = 0;
}

void batch_reset(struct pj_ctx *b)
{
    release_state(b);
    bulk_clear(&b->bulk);
    b->n = 0;
    b->queued = 0;
    b->event = BATCH_NO_EVENT;
    b->err[0] = '\0';
}

/*
 * Send each statement holding events, with its parameters as arrays. A
 * failure belongs to one event only when one event is held in all: held
 * statements go out in the projection's order, not the events'.
 */
static int send_held(struct pj_ctx *b)
{
    bool alone = b->bulk.held == 1;
    for (int i = 0; b->bulk.held > 0 && i < b->nstatements; i++) {
        struct bulk_stmt *s = &b->bulk.stmts[i];
        if (s->n == 0)
            continue;
        const char *params[s->nparams];
        for (int k = 0; k < s->nparams; k++)
            if (!(params[k] = bulk_param(&b->bulk, i, k)))
                return -1;
        char name[16];
        batch_stmt_name(i, name);
        if (pgconn_exec_prepared(b->conn, name, s->nparams, params) < 0 ||
            batch_record(b, alone ? s->event : BATCH_NO_EVENT, s->flags | BATCH_HELD, s->n) < 0)
            return -1;
    }
    bulk_clear(&b->bulk);
    return 0;
}

int batch_flush(struct pj_ctx *b)
{
    b->event = BATCH_NO_EVENT;
    b->err[0] = '\0';
    if (send_held(b) < 0)
        return -1;
    if (b->proj->flush && b->proj->flush(b, b->state) != PJ_OK)
        return -1;
    return send_held(b); /* what the flush itself held */
}

void *pj_state(struct pj_ctx *ctx)
{
    return ctx->state;
}

int batch_record(struct pj_ctx *b, int event, unsigned flags, size_t nevents)
{
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        struct batch_stmt *grown = realloc(b->stmts, cap * sizeof *grown);
        if (!grown)
            return -1;
        b->stmts = grown;
        b->cap = cap;
    }
    b->stmts[b->n++] = (struct batch_stmt){.event = event, .flags = flags, .nevents = nevents};
    return 0;
}

size_t batch_queued(const struct pj_ctx *b)
{
    return b->queued;
}

const struct batch_stmt *batch_stmt(const struct pj_ctx *b, size_t i)
{
    return i < b->n ? &b->stmts[i] : NULL;
}

void batch_stmt_name(int idx, char buf[16])
{
    snprintf(buf, 16, "pj%d", idx);
}

enum pj_outcome pj_exec(struct pj_ctx *ctx, int id, const char *const *params)
{
    int stmt = PJ_STMT_INDEX(id);
    if (stmt < 0 || stmt >= ctx->nstatements)
        return pj_bad(ctx, "projection %s: no statement %d", ctx->proj->name, stmt);
    const struct pj_statement *s = &ctx->proj->statements[stmt];
    const char *key = s->key > 0 ? params[s->key - 1] : NULL;
    ctx->queued++;
    /* A statement about a held key must come after the held events. */
    if (bulk_conflicts(&ctx->bulk, key) && send_held(ctx) < 0)
        return PJ_RETRY;
    if (ctx->bulk.stmts[stmt].cols) { /* PJ_BULK */
        if (bulk_hold(&ctx->bulk, stmt, ctx->event, params) < 0)
            return PJ_RETRY;
        return (ctx->one_by_one || !key) && send_held(ctx) < 0 ? PJ_RETRY : PJ_OK;
    }
    char name[16];
    batch_stmt_name(stmt, name);
    if (pgconn_exec_prepared(ctx->conn, name, s->nparams, params) < 0 ||
        batch_record(ctx, ctx->event, s->flags, 1) < 0)
        return PJ_RETRY;
    return PJ_OK;
}

enum pj_outcome pj_bad(struct pj_ctx *ctx, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->err, sizeof ctx->err, fmt, ap);
    va_end(ap);
    return PJ_BAD_EVENT;
}

enum pj_outcome pj_bad_in(struct pj_ctx *ctx, const char *where, ...)
{
    char reason[sizeof ctx->err];
    snprintf(reason, sizeof reason, "%s", ctx->err);
    va_list ap;
    va_start(ap, where);
    int n = vsnprintf(ctx->err, sizeof ctx->err, where, ap);
    va_end(ap);
    size_t room = n >= 0 && (size_t)n < sizeof ctx->err ? sizeof ctx->err - (size_t)n : 0;
    if (room > 2) /* ": " and what of the reason fits */
        snprintf(ctx->err + n, room, ": %.*s", (int)(room - 3), reason);
    return PJ_BAD_EVENT;
}
