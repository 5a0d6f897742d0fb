/*
 * users: one row per registered user (SPEC §4).
 *
 * An email another user already has (case-insensitive) is a bad event: the
 * unique index on lower(email) raises unique_violation (SQLSTATE 23505),
 * which the runner treats as a data error of this event. A second
 * UserRegistered for an existing id is ignored, whatever its email.
 */
#include "projection.h"

enum {
    ST_REGISTER = PJ_STMT_ID(0, 6),
    ST_VERIFY_EMAIL = PJ_STMT_ID(1, 2),
    ST_CHANGE_EMAIL = PJ_STMT_ID(2, 3),
    ST_LOG_IN = PJ_STMT_ID(3, 2),
    ST_CHANGE_ROLE = PJ_STMT_ID(4, 3),
    ST_SET_STATUS = PJ_STMT_ID(5, 3),
};

static const struct pj_statement statements[] = {
    /* $1 id, $2 email, $3 first_name, $4 last_name, $5 role|NULL, $6 occurred_at */
    PJ_STATEMENT(ST_REGISTER, .key = 1, .flags = PJ_COUNT_IGNORED,
                 .sql =
                     "INSERT INTO users (id, email, first_name, last_name, role, status,"
                     "                   email_verified, login_count, created_at, updated_at)"
                     " VALUES ($1::uuid, $2::text, $3::text, $4::text, coalesce($5::text, 'user'),"
                     "         'active', false, 0, $6::timestamptz, $6::timestamptz)"
                     " ON CONFLICT (id) DO NOTHING"),
    /* PJ_BULK (projection.h): $1 ids, $2 occurred_at, one element per event */
    PJ_STATEMENT(ST_VERIFY_EMAIL, .key = 1, .flags = PJ_BULK | PJ_COUNT_IGNORED,
                 .sql = "UPDATE users u SET email_verified = true,"
                        " email_verified_at = e.at, updated_at = e.at"
                        " FROM unnest($1::uuid[], $2::timestamptz[]) AS e(id, at)"
                        " WHERE u.id = e.id"),
    /* $1 id, $2 email, $3 occurred_at */
    PJ_STATEMENT(ST_CHANGE_EMAIL, .key = 1, .flags = PJ_COUNT_IGNORED,
                 .sql = "UPDATE users SET email = $2::text, email_verified = false,"
                        " email_verified_at = NULL, updated_at = $3::timestamptz"
                        " WHERE id = $1::uuid"),
    /* PJ_BULK: $1 ids, $2 occurred_at */
    PJ_STATEMENT(ST_LOG_IN, .key = 1, .flags = PJ_BULK | PJ_COUNT_IGNORED,
                 .sql = "UPDATE users u SET login_count = u.login_count + 1,"
                        " last_login_at = e.at, updated_at = e.at"
                        " FROM unnest($1::uuid[], $2::timestamptz[]) AS e(id, at)"
                        " WHERE u.id = e.id"),
    /* PJ_BULK: $1 ids, $2 roles, $3 occurred_at */
    PJ_STATEMENT(ST_CHANGE_ROLE, .key = 1, .flags = PJ_BULK | PJ_COUNT_IGNORED,
                 .sql = "UPDATE users u SET role = e.role, updated_at = e.at"
                        " FROM unnest($1::uuid[], $2::text[], $3::timestamptz[]) AS e(id, role, at)"
                        " WHERE u.id = e.id"),
    /* PJ_BULK: $1 ids, $2 statuses ('active' | 'inactive', from the handler), $3 occurred_at */
    PJ_STATEMENT(ST_SET_STATUS, .key = 1, .flags = PJ_BULK | PJ_COUNT_IGNORED,
                 .sql = "UPDATE users u SET status = e.status, updated_at = e.at"
                        " FROM unnest($1::uuid[], $2::text[], $3::timestamptz[])"
                        "      AS e(id, status, at)"
                        " WHERE u.id = e.id"),
    PJ_STATEMENTS_END,
};

static enum pj_outcome user_registered(struct pj_ctx *ctx, const struct pj_event *ev,
                                       const json_t *payload)
{
    const char *email, *first_name, *last_name, *role;
    if (!pj_str(ctx, payload, "email", &email) ||
        !pj_str(ctx, payload, "first_name", &first_name) ||
        !pj_str(ctx, payload, "last_name", &last_name) || !pj_opt_str(ctx, payload, "role", &role))
        return PJ_BAD_EVENT;
    return PJ_EXEC(ctx, ST_REGISTER, ev->aggregate_id, email, first_name, last_name, role,
                   ev->occurred_at);
}

static enum pj_outcome user_email_verified(struct pj_ctx *ctx, const struct pj_event *ev,
                                           const json_t *payload)
{
    (void)payload;
    return PJ_EXEC(ctx, ST_VERIFY_EMAIL, ev->aggregate_id, ev->occurred_at);
}

static enum pj_outcome user_email_changed(struct pj_ctx *ctx, const struct pj_event *ev,
                                          const json_t *payload)
{
    const char *email;
    if (!pj_str(ctx, payload, "email", &email))
        return PJ_BAD_EVENT;
    return PJ_EXEC(ctx, ST_CHANGE_EMAIL, ev->aggregate_id, email, ev->occurred_at);
}

static enum pj_outcome user_logged_in(struct pj_ctx *ctx, const struct pj_event *ev,
                                      const json_t *payload)
{
    (void)payload;
    return PJ_EXEC(ctx, ST_LOG_IN, ev->aggregate_id, ev->occurred_at);
}

static enum pj_outcome user_role_changed(struct pj_ctx *ctx, const struct pj_event *ev,
                                         const json_t *payload)
{
    const char *role;
    if (!pj_str(ctx, payload, "role", &role))
        return PJ_BAD_EVENT;
    return PJ_EXEC(ctx, ST_CHANGE_ROLE, ev->aggregate_id, role, ev->occurred_at);
}

static enum pj_outcome user_deactivated(struct pj_ctx *ctx, const struct pj_event *ev,
                                        const json_t *payload)
{
    (void)payload;
    return PJ_EXEC(ctx, ST_SET_STATUS, ev->aggregate_id, "inactive", ev->occurred_at);
}

static enum pj_outcome user_reactivated(struct pj_ctx *ctx, const struct pj_event *ev,
                                        const json_t *payload)
{
    (void)payload;
    return PJ_EXEC(ctx, ST_SET_STATUS, ev->aggregate_id, "active", ev->occurred_at);
}

static const struct pj_handler handlers[] = {
    {"UserRegistered", user_registered},      {"UserEmailVerified", user_email_verified},
    {"UserEmailChanged", user_email_changed}, {"UserLoggedIn", user_logged_in},
    {"UserRoleChanged", user_role_changed},   {"UserDeactivated", user_deactivated},
    {"UserReactivated", user_reactivated},    {NULL, NULL},
};

static const char *const tables[] = {"users", NULL};

extern const struct projection projection_users;
const struct projection projection_users = {
    .name = "users",
    .version = 1,
    .description = "registered users: email, role, status, verification and logins",
    .tables = tables,
    .statements = statements,
    .handlers = handlers,
};
