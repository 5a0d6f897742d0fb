/*
 * bulk: events held back for PJ_BULK statements (see bulk.h).
 */
#include "bulk.h"

#include <stdlib.h>
#include <string.h>

int bulk_init(struct bulk *b, const struct projection *p, int nstmts)
{
    *b = (struct bulk){.nstmts = nstmts};
    b->stmts = calloc((size_t)nstmts + 1, sizeof *b->stmts);
    if (!b->stmts)
        return -1;
    for (int i = 0; i < nstmts; i++) {
        const struct pj_statement *s = &p->statements[i];
        if (!(s->flags & PJ_BULK) || s->key < 1 || s->key > s->nparams)
            continue; /* registry_check refuses such a projection */
        b->stmts[i].nparams = s->nparams;
        b->stmts[i].key = s->key;
        b->stmts[i].flags = s->flags;
        b->stmts[i].cols = calloc((size_t)s->nparams, sizeof *b->stmts[i].cols);
        if (!b->stmts[i].cols)
            return -1;
    }
    return 0;
}

void bulk_free(struct bulk *b)
{
    for (int i = 0; b->stmts && i < b->nstmts; i++) {
        for (int k = 0; b->stmts[i].cols && k < b->stmts[i].nparams; k++)
            pj_textarr_free(&b->stmts[i].cols[k]);
        free(b->stmts[i].cols);
    }
    free(b->stmts);
    free(b->keys);
    *b = (struct bulk){0};
}

void bulk_clear(struct bulk *b)
{
    for (int i = 0; i < b->nstmts; i++) {
        struct bulk_stmt *s = &b->stmts[i];
        for (int k = 0; s->cols && k < s->nparams; k++) {
            s->cols[k].len = 0;
            s->cols[k].n = 0;
        }
        s->n = 0;
    }
    if (b->nkeys > 0)
        memset(b->keys, 0, b->keycap * sizeof *b->keys);
    b->nkeys = 0;
    b->held = 0;
}

/* FNV-1a; 0 marks a free slot, so it is never a hash. */
static uint64_t key_hash(const char *key)
{
    uint64_t h = 14695981039346656037ULL;
    for (const unsigned char *c = (const unsigned char *)key; *c; c++)
        h = (h ^ *c) * 1099511628211ULL;
    return h ? h : 1;
}

static size_t slot_of(const struct bulk *b, uint64_t h)
{
    size_t i = (size_t)h & (b->keycap - 1);
    while (b->keys[i] && b->keys[i] != h)
        i = (i + 1) & (b->keycap - 1);
    return i;
}

bool bulk_conflicts(const struct bulk *b, const char *key)
{
    if (b->held == 0)
        return false;
    if (!key)
        return true;
    return b->keys[slot_of(b, key_hash(key))] != 0;
}

/* Keep the table at most half full. */
static int keys_reserve(struct bulk *b)
{
    if (2 * (b->nkeys + 1) <= b->keycap)
        return 0;
    size_t cap = b->keycap ? 2 * b->keycap : 1024;
    uint64_t *old = b->keys;
    size_t oldcap = b->keycap;
    b->keys = calloc(cap, sizeof *b->keys);
    if (!b->keys) {
        b->keys = old;
        return -1;
    }
    b->keycap = cap;
    for (size_t i = 0; i < oldcap; i++)
        if (old[i])
            b->keys[slot_of(b, old[i])] = old[i];
    free(old);
    return 0;
}

static int add_key(struct bulk *b, const char *key)
{
    if (keys_reserve(b) < 0)
        return -1;
    uint64_t h = key_hash(key);
    size_t i = slot_of(b, h);
    if (!b->keys[i]) {
        b->keys[i] = h;
        b->nkeys++;
    }
    return 0;
}

int bulk_hold(struct bulk *b, int stmt, int event, const char *const *params)
{
    struct bulk_stmt *s = &b->stmts[stmt];
    const char *key = params[s->key - 1];
    if (key && add_key(b, key) < 0)
        return -1;
    for (int k = 0; k < s->nparams; k++)
        if (pj_textarr_add(&s->cols[k], params[k]) != PJ_OK)
            return -1;
    if (s->n++ == 0)
        s->event = event;
    b->held++;
    return 0;
}

const char *bulk_param(struct bulk *b, int stmt, int i)
{
    return pj_textarr_literal(&b->stmts[stmt].cols[i]);
}
