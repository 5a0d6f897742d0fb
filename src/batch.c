/*
 * batch: statement bookkeeping behind pj_exec / pj_bad (see batch.h).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "batch.h"

static int statement_count(const struct projection *p)
{
    int n = 0;
    while (p->statements[n].sql)
        n++;
    return n;
}

void batch_init(struct pj_ctx *b, const struct projection *p, struct pgconn *conn)
{
    *b = (struct pj_ctx){
        .conn = conn, .proj = p, .nstatements = statement_count(p), .event = BATCH_NO_EVENT};
}

void batch_free(struct pj_ctx *b)
{
    free(b->stmts);
    b->stmts = NULL;
    b->n = b->cap = 0;
}

void batch_reset(struct pj_ctx *b)
{
    b->n = 0;
    b->event = BATCH_NO_EVENT;
    b->err[0] = '\0';
}

int batch_record(struct pj_ctx *b, int event, unsigned flags)
{
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        struct batch_stmt *grown = realloc(b->stmts, cap * sizeof *grown);
        if (!grown)
            return -1;
        b->stmts = grown;
        b->cap = cap;
    }
    b->stmts[b->n++] = (struct batch_stmt){.event = event, .flags = flags};
    return 0;
}

const struct batch_stmt *batch_stmt(const struct pj_ctx *b, size_t i)
{
    return i < b->n ? &b->stmts[i] : NULL;
}

void batch_stmt_name(int idx, char buf[16])
{
    snprintf(buf, 16, "pj%d", idx);
}

int pj_exec(struct pj_ctx *ctx, int stmt, const char *const *params, unsigned flags)
{
    if (stmt < 0 || stmt >= ctx->nstatements)
        return pj_bad(ctx, "projection %s: no statement %d", ctx->proj->name, stmt);
    char name[16];
    batch_stmt_name(stmt, name);
    if (pgconn_exec_prepared(ctx->conn, name, ctx->proj->statements[stmt].nparams, params) < 0)
        return -1;
    return batch_record(ctx, ctx->event, flags);
}

int pj_bad(struct pj_ctx *ctx, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->err, sizeof ctx->err, fmt, ap);
    va_end(ap);
    return -1;
}
