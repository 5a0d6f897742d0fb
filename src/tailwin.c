/*
 * tailwin: snapshot parsing and window arithmetic (see tailwin.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tailwin.h"

static int parse_u64(const char **p, uint64_t *out)
{
    if (**p < '0' || **p > '9')
        return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(*p, &end, 10);
    if (errno != 0)
        return -1;
    *out = v;
    *p = end;
    return 0;
}

static int parse_xip(const char *p, struct snapshot *s)
{
    size_t cap = 0;
    while (*p) {
        uint64_t x;
        if (parse_u64(&p, &x) < 0 || x < s->xmin || x >= s->xmax)
            return -1;
        if (s->nxip > 0 && x <= s->xip[s->nxip - 1])
            return -1;
        if (s->nxip == cap) {
            cap = cap ? cap * 2 : 8;
            uint64_t *grown = realloc(s->xip, cap * sizeof *grown);
            if (!grown)
                return -1;
            s->xip = grown;
        }
        s->xip[s->nxip++] = x;
        if (*p == ',' && p[1] != '\0')
            p++;
        else if (*p)
            return -1;
    }
    return 0;
}

int snapshot_parse(const char *text, struct snapshot *out)
{
    struct snapshot s = {0};
    const char *p = text;
    if (!p || parse_u64(&p, &s.xmin) < 0 || *p++ != ':' || parse_u64(&p, &s.xmax) < 0 ||
        *p++ != ':' || s.xmin > s.xmax || parse_xip(p, &s) < 0) {
        free(s.xip);
        return -1;
    }
    *out = s;
    return 0;
}

void snapshot_free(struct snapshot *s)
{
    free(s->xip);
    s->xip = NULL;
    s->nxip = 0;
}

static bool in_xip(const struct snapshot *s, uint64_t xid)
{
    size_t lo = 0, hi = s->nxip;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->xip[mid] == xid)
            return true;
        if (s->xip[mid] < xid)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

bool snapshot_visible(const struct snapshot *s, uint64_t xid)
{
    if (xid < s->xmin)
        return true;
    if (xid >= s->xmax)
        return false;
    return !in_xip(s, xid);
}

bool snapshot_covers(const struct snapshot *newer, const struct snapshot *older)
{
    if (newer->xmax < older->xmax)
        return false;
    for (size_t i = 0; i < newer->nxip; i++)
        if (snapshot_visible(older, newer->xip[i]))
            return false;
    return true;
}

bool tailwin_contains(const struct snapshot *lo, const struct snapshot *hi, uint64_t xid)
{
    return snapshot_visible(hi, xid) && !snapshot_visible(lo, xid);
}

int tailwin_params(const struct snapshot *lo, struct tailwin_params *p)
{
    size_t size = 3 + lo->nxip * 21;
    p->xip_lo = malloc(size);
    if (!p->xip_lo)
        return -1;
    size_t n = 0;
    p->xip_lo[n++] = '{';
    for (size_t i = 0; i < lo->nxip; i++)
        n += (size_t)snprintf(p->xip_lo + n, size - n, "%s%" PRIu64, i ? "," : "", lo->xip[i]);
    p->xip_lo[n++] = '}';
    p->xip_lo[n] = '\0';
    snprintf(p->xmax_lo, sizeof p->xmax_lo, "%" PRIu64, lo->xmax);
    return 0;
}

void tailwin_params_free(struct tailwin_params *p)
{
    free(p->xip_lo);
    p->xip_lo = NULL;
}
