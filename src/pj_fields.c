/*
 * pj_fields: the field accessors of projection.h. Each is payload.c's rule
 * plus recording the reason in the batch through pj_bad().
 */
#include "payload.h"
#include "projection.h"

#include <inttypes.h>
#include <stdio.h>

#define PJ_ERRLEN 256

int pj_str(struct pj_ctx *ctx, const json_t *obj, const char *key, const char **out)
{
    char err[PJ_ERRLEN];
    if (payload_string(obj, key, out, err, sizeof err) < 0)
        return pj_bad(ctx, "%s", err);
    return 0;
}

int pj_opt_str(struct pj_ctx *ctx, const json_t *obj, const char *key, const char **out)
{
    char err[PJ_ERRLEN];
    if (payload_opt_string(obj, key, out, err, sizeof err) < 0)
        return pj_bad(ctx, "%s", err);
    return 0;
}

int pj_int64(struct pj_ctx *ctx, const json_t *obj, const char *key, int64_t *out)
{
    char err[PJ_ERRLEN];
    if (payload_int64(obj, key, out, err, sizeof err) < 0)
        return pj_bad(ctx, "%s", err);
    return 0;
}

int pj_uuid(struct pj_ctx *ctx, const json_t *obj, const char *key, const char **out)
{
    char err[PJ_ERRLEN];
    if (payload_uuid(obj, key, out, err, sizeof err) < 0)
        return pj_bad(ctx, "%s", err);
    return 0;
}

int pj_opt_uuid(struct pj_ctx *ctx, const json_t *obj, const char *key, const char **out)
{
    char err[PJ_ERRLEN];
    if (payload_opt_uuid(obj, key, out, err, sizeof err) < 0)
        return pj_bad(ctx, "%s", err);
    return 0;
}

int pj_array(struct pj_ctx *ctx, const json_t *obj, const char *key, const json_t **out)
{
    char err[PJ_ERRLEN];
    if (payload_array(obj, key, out, err, sizeof err) < 0)
        return pj_bad(ctx, "%s", err);
    return 0;
}

const char *pj_i64(char buf[21], int64_t v)
{
    snprintf(buf, 21, "%" PRId64, v);
    return buf;
}
