/*
 * textarr: the text-array literals of projection.h (struct pj_textarr):
 * values gathered one by one and sent as one text[] parameter. Its own
 * module because both the batch (a projection's own arrays) and bulk.c
 * (the held PJ_BULK statements' columns) use it, and neither should call
 * the other for it.
 */
#include <stdlib.h>
#include <string.h>

#include "projection.h"

/* Room for one more element of at most need bytes (quoted and escaped). */
static int textarr_reserve(struct pj_textarr *a, size_t need)
{
    if (a->len + need + 3 <= a->cap)
        return 0;
    size_t cap = a->cap ? a->cap : 1024;
    while (cap < a->len + need + 3)
        cap *= 2;
    char *grown = realloc(a->buf, cap);
    if (!grown)
        return -1;
    a->buf = grown;
    a->cap = cap;
    return 0;
}

enum pj_outcome pj_textarr_add(struct pj_textarr *a, const char *value)
{
    size_t need = value ? 2 * strlen(value) + 3 : 5;
    if (textarr_reserve(a, need) < 0)
        return PJ_RETRY;
    a->buf[a->len++] = a->n++ ? ',' : '{';
    if (!value) {
        memcpy(a->buf + a->len, "NULL", 4);
        a->len += 4;
        return PJ_OK;
    }
    a->buf[a->len++] = '"';
    for (const char *c = value; *c; c++) {
        if (*c == '"' || *c == '\\')
            a->buf[a->len++] = '\\';
        a->buf[a->len++] = *c;
    }
    a->buf[a->len++] = '"';
    return PJ_OK;
}

const char *pj_textarr_literal(struct pj_textarr *a)
{
    if (textarr_reserve(a, 0) < 0)
        return NULL;
    if (a->n == 0)
        a->buf[a->len] = '{';
    /* Close without committing the brace, so more can be added. */
    size_t end = a->n == 0 ? a->len + 1 : a->len;
    a->buf[end] = '}';
    a->buf[end + 1] = '\0';
    return a->buf;
}

void pj_textarr_free(struct pj_textarr *a)
{
    free(a->buf);
    *a = (struct pj_textarr){0};
}
