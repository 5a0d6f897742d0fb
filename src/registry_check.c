/*
 * registry_check: the start-time checks of the compiled-in projections'
 * declarations (see registry.h). PJ_EXEC checks a handler's parameters
 * against its statement id when it compiles; this checks the statement ids
 * against the SQL, which C can not read at build time. It runs once per
 * process, before any command, so a projection that would fail in the
 * middle of a batch ("bind message supplies 3 parameters, but prepared
 * statement requires 4", retried forever) never starts instead.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "registry.h"

/* Where quoted text that starts at sql (a ' " or $tag$) ends, or NULL. */
static const char *quoted_end(const char *sql)
{
    if (*sql == '\'' || *sql == '"') {
        /* A doubled quote inside is the quote itself; the scan just goes on. */
        const char *end = strchr(sql + 1, *sql);
        return end ? end + 1 : NULL;
    }
    /* $tag$ ... $tag$ with tag empty or an identifier not starting with a digit. */
    const char *t = sql + 1;
    if (isdigit((unsigned char)*t))
        return NULL;
    while (isalnum((unsigned char)*t) || *t == '_')
        t++;
    if (*t != '$')
        return NULL;
    size_t taglen = (size_t)(t - sql) + 1;
    for (const char *p = t + 1; (p = strchr(p, '$')) != NULL; p++)
        if (strncmp(p, sql, taglen) == 0)
            return p + taglen;
    return NULL;
}

static bool ident_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '$';
}

int registry_max_placeholder(const char *sql)
{
    int max = 0;
    const char *p = sql;
    while (*p) {
        if (p[0] == '-' && p[1] == '-') {
            p += strcspn(p, "\n");
        } else if (p[0] == '/' && p[1] == '*') {
            const char *end = strstr(p + 2, "*/");
            p = end ? end + 2 : p + strlen(p);
        } else if ((*p == '\'' || *p == '"') && quoted_end(p)) {
            p = quoted_end(p);
        } else if (*p == '$' && p > sql && ident_char(p[-1])) {
            p++; /* inside an identifier (a$1 is a name) */
        } else if (*p == '$' && quoted_end(p)) {
            p = quoted_end(p);
        } else if (*p == '$' && isdigit((unsigned char)p[1])) {
            int n = 0;
            for (p++; isdigit((unsigned char)*p) && n < 100000; p++)
                n = n * 10 + (*p - '0');
            if (n > max)
                max = n;
        } else {
            p++;
        }
    }
    return max;
}

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static int check_statement(const struct projection *p, int i, char *err, size_t errlen)
{
    const struct pj_statement *s = &p->statements[i];
    int used = registry_max_placeholder(s->sql);
    if (used != s->nparams)
        return fail(err, errlen,
                    "projection %s: statement %d: its SQL uses %d parameters ($1..$%d) but its id "
                    "declares %d (PJ_STMT_ID(%d, %d))",
                    p->name, i, used, used, s->nparams, i, s->nparams);
    if (s->flags & ~(unsigned)(PJ_BULK | PJ_COUNT_IGNORED))
        return fail(err, errlen, "projection %s: statement %d: unknown flags 0x%x", p->name, i,
                    s->flags & ~(unsigned)(PJ_BULK | PJ_COUNT_IGNORED));
    if (s->key < 0 || s->key > s->nparams)
        return fail(err, errlen, "projection %s: statement %d: .key = %d but it has %d parameters",
                    p->name, i, s->key, s->nparams);
    if ((s->flags & PJ_BULK) && s->key == 0)
        return fail(err, errlen,
                    "projection %s: statement %d is PJ_BULK without a key: say which parameter "
                    "names its row (.key = 1 for $1)",
                    p->name, i);
    return 0;
}

static int check_statements(const struct projection *p, char *err, size_t errlen)
{
    if (!p->statements)
        return fail(err, errlen, "projection %s: no statements (PJ_STATEMENTS_END alone for none)",
                    p->name);
    int i = 0;
    for (; p->statements[i].sql; i++)
        if (check_statement(p, i, err, errlen) < 0)
            return -1;
    if (p->statements[i].nparams != -1)
        return fail(err, errlen,
                    "projection %s: no statement %d: number the statement ids 0, 1, 2, ... "
                    "(PJ_STMT_ID), give each a PJ_STATEMENT and end with PJ_STATEMENTS_END",
                    p->name, i);
    return 0;
}

int registry_check(const struct projection *p, char *err, size_t errlen)
{
    const char *name = p->name ? p->name : "";
    /* The shadow schema projectord_rebuild_NAME takes it as it is (sql/V008). */
    if (!*name || strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_") != strlen(name) ||
        isdigit((unsigned char)name[0]) || strlen(name) > 40)
        return fail(err, errlen,
                    "projection '%s': a name is 1 to 40 of a-z, 0-9 and _, not starting with a "
                    "digit",
                    name);
    if (!p->tables || !p->tables[0])
        return fail(err, errlen, "projection %s: no tables", name);
    if (!p->handlers || !p->handlers[0].event_type)
        return fail(err, errlen, "projection %s: no handlers", name);
    for (const struct pj_handler *h = p->handlers; h->event_type; h++)
        if (!h->fn)
            return fail(err, errlen, "projection %s: the handler of %s has no function", name,
                        h->event_type);
    return check_statements(p, err, errlen);
}

int registry_check_all(char *err, size_t errlen)
{
    for (size_t i = 0; i < projection_registry_count; i++)
        if (registry_check(projection_registry[i], err, errlen) < 0)
            return -1;
    return 0;
}
