/*
 * tailread: the connection-free rules of reading the tail (tailread.h).
 */
#include "tailread.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runner_sql.h"

enum { OPEN_COL_TROUBLE = 4 }; /* SQL_OPEN_WINDOW's trouble column */

static int64_t parse_i64(const char *text)
{
    return text && *text ? strtoll(text, NULL, 10) : 0;
}

static int set_str(char **dst, const char *src)
{
    char *copy = strdup(src);
    if (!copy)
        return -1;
    free(*dst);
    *dst = copy;
    return 0;
}

bool tailread_checkpoint_valid(const struct checkpoint *cp)
{
    struct snapshot lo, hi;
    if (snapshot_parse(cp->lo, &lo) < 0)
        return false;
    bool ok = snapshot_parse(cp->hi, &hi) == 0;
    snapshot_free(&lo);
    if (ok)
        snapshot_free(&hi);
    return ok;
}

int tailread_open_params(const char *lo_text, struct tailwin_params *p, const char **why)
{
    struct snapshot lo;
    if (snapshot_parse(lo_text, &lo) < 0) {
        *why = "stored snapshot is malformed";
        return -1;
    }
    int rc = tailwin_params(&lo, p);
    snapshot_free(&lo);
    if (rc < 0) {
        *why = "out of memory";
        return -1;
    }
    return 0;
}

bool tailread_covers(const char *hi_text, const char *lo_text)
{
    struct snapshot hi, lo;
    if (snapshot_parse(hi_text, &hi) < 0)
        return false;
    if (snapshot_parse(lo_text, &lo) < 0) {
        snapshot_free(&hi);
        return false;
    }
    bool covers = snapshot_covers(&hi, &lo);
    snapshot_free(&hi);
    snapshot_free(&lo);
    return covers;
}

void tailread_window(const PGresult *res, struct rs_window *w)
{
    *w = (struct rs_window){.hi = PQgetvalue(res, 0, 0),
                            .first = parse_i64(PQgetvalue(res, 0, 1)),
                            .last = parse_i64(PQgetvalue(res, 0, 2)),
                            .head = parse_i64(PQgetvalue(res, 0, 3)),
                            .empty = PQgetisnull(res, 0, 1)};
}

bool tailread_foreign_ids(const PGresult *res, int64_t last_position, char *msg, size_t size)
{
    if (PQnfields(res) <= OPEN_COL_TROUBLE || PQgetisnull(res, 0, OPEN_COL_TROUBLE))
        return false;
    char kind[16] = "", a[32] = "", b[32] = "";
    sscanf(PQgetvalue(res, 0, OPEN_COL_TROUBLE), "%15s %31s %31s", kind, a, b);
    const char *what;
    char detail[160];
    if (strcmp(kind, "checkpoint") == 0) {
        what = "the checkpoint comes from another cluster";
        snprintf(detail, sizeof detail, "its snapshot reaches transaction id %s, this server %s", a,
                 b);
    } else if (strcmp(kind, "ahead") == 0) {
        what = "the event store holds transaction ids ahead of this server's";
        snprintf(detail, sizeof detail, "id %s, next id here %s", a, b);
    } else {
        what = "the event store holds transaction ids the checkpoint counts as applied";
        snprintf(detail, sizeof detail,
                 "event at position %s, id %s, beyond last_position %" PRId64, a, b, last_position);
    }
    snprintf(msg, size,
             "%s (%s): restored or copied from another cluster, or written with an explicit"
             " transaction_id; nothing is read until an administrator runs"
             " `projectord adopt-restored-store` (README)",
             what, detail);
    return true;
}

int tailread_open_window(struct checkpoint *cp, const struct rs_window *w)
{
    if (w->empty) {
        cp->window_open = false;
        return set_str(&cp->lo, w->hi) < 0 || set_str(&cp->hi, w->hi) < 0 ? -1 : 0;
    }
    if (set_str(&cp->lo, cp->hi) < 0 || set_str(&cp->hi, w->hi) < 0)
        return -1;
    cp->window_open = true;
    cp->window_pos = w->first - 1;
    cp->window_max = w->last;
    return 0;
}

bool tailread_cut_by_bytes(const PGresult *res)
{
    int n = PQntuples(res);
    return n > 0 && PQnfields(res) > FC_BYTES_FULL &&
           strcmp(PQgetvalue(res, n - 1, FC_BYTES_FULL), "t") == 0;
}

int tailread_first_after(const PGresult *res, int64_t pos)
{
    int n = PQntuples(res), i = 0;
    while (i < n && parse_i64(PQgetvalue(res, i, FC_POSITION)) <= pos)
        i++;
    return i;
}

double tailread_epoch(const char *text)
{
    int y, mo, d, h, mi, at = 0;
    double sec;
    if (!text || sscanf(text, "%4d-%2d-%2d %2d:%2d:%lf%n", &y, &mo, &d, &h, &mi, &sec, &at) != 6 ||
        text[4] != '-' || (text[at] != '+' && text[at] != '-'))
        return -1;
    /* The offset: +HH, +HH:MM or +HH:MM:SS (east of UTC positive). */
    const char *zone = text + at + 1;
    int part[3] = {0, 0, 0}, used = 0, k = 0;
    for (int i = 0; i < 3; i++) {
        if (i > 0 && zone[used] != ':')
            break;
        if (sscanf(zone + used + (i > 0), "%2d%n", &part[i], &k) != 1)
            return -1;
        used += k + (i > 0);
    }
    if (zone[used] != '\0')
        return -1;
    struct tm tm = {
        .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h, .tm_min = mi};
    double shift = part[0] * 3600.0 + part[1] * 60.0 + part[2];
    double local = (double)timegm(&tm) + sec;
    return text[at] == '+' ? local - shift : local + shift;
}
