/*
 * pj_fields: the field accessors of projection.h. Each is payload.c's rule
 * plus recording the reason in the batch through pj_bad().
 */
#include "payload.h"
#include "projection.h"

#include <inttypes.h>
#include <stdio.h>

#define PJ_ERRLEN 256

/* An accessor's answer: rc is payload.c's, err its reason. */
static bool checked(struct pj_ctx *ctx, int rc, const char *err)
{
    if (rc == 0)
        return true;
    pj_bad(ctx, "%s", err);
    return false;
}

bool pj_str(struct pj_ctx *ctx, const json_t *obj, const char *key, const char **out)
{
    char err[PJ_ERRLEN];
    return checked(ctx, payload_string(obj, key, out, err, sizeof err), err);
}

bool pj_opt_str(struct pj_ctx *ctx, const json_t *obj, const char *key, const char **out)
{
    char err[PJ_ERRLEN];
    return checked(ctx, payload_opt_string(obj, key, out, err, sizeof err), err);
}

bool pj_int64(struct pj_ctx *ctx, const json_t *obj, const char *key, int64_t *out)
{
    char err[PJ_ERRLEN];
    return checked(ctx, payload_int64(obj, key, out, err, sizeof err), err);
}

bool pj_uuid(struct pj_ctx *ctx, const json_t *obj, const char *key, const char **out)
{
    char err[PJ_ERRLEN];
    return checked(ctx, payload_uuid(obj, key, out, err, sizeof err), err);
}

bool pj_opt_uuid(struct pj_ctx *ctx, const json_t *obj, const char *key, const char **out)
{
    char err[PJ_ERRLEN];
    return checked(ctx, payload_opt_uuid(obj, key, out, err, sizeof err), err);
}

bool pj_object(struct pj_ctx *ctx, const json_t *obj, const char *key, const json_t **out)
{
    char err[PJ_ERRLEN];
    return checked(ctx, payload_object(obj, key, out, err, sizeof err), err);
}

bool pj_array(struct pj_ctx *ctx, const json_t *obj, const char *key, const json_t **out)
{
    char err[PJ_ERRLEN];
    return checked(ctx, payload_array(obj, key, out, err, sizeof err), err);
}

bool pj_object_at(struct pj_ctx *ctx, const json_t *array, const char *key, size_t i,
                  const json_t **out)
{
    char err[PJ_ERRLEN];
    return checked(ctx, payload_object_at(array, key, i, out, err, sizeof err), err);
}

bool pj_add_overflows(int64_t a, int64_t b, int64_t *out)
{
    return payload_add_overflows(a, b, out);
}

bool pj_mul_overflows(int64_t a, int64_t b, int64_t *out)
{
    return payload_mul_overflows(a, b, out);
}

const char *pj_i64(char buf[21], int64_t v)
{
    snprintf(buf, 21, "%" PRId64, v);
    return buf;
}
