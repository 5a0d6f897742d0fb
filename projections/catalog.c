/*
 * catalog: categories and products (SPEC §4).
 *
 * The invariant to keep: categories.product_count = the number of active
 * products whose category_id is that category, in whatever order the
 * Category and Product streams arrive. So a category counts the products
 * that already name it when it is created, and each product statement moves
 * the count in the same statement as the product change, deciding from the
 * product row as it was before (the old_row CTE: every CTE of a statement
 * sees the same snapshot, so the UPDATE's own result can not be used for
 * that). categories.updated_at moves only with Category events.
 */
#include "projection.h"

enum {
    ST_CATEGORY_CREATE = PJ_STMT_ID(0, 3),
    ST_CATEGORY_RENAME = PJ_STMT_ID(1, 3),
    ST_PRODUCT_CREATE = PJ_STMT_ID(2, 7),
    ST_PRODUCT_RENAME = PJ_STMT_ID(3, 4),
    ST_PRODUCT_PRICE = PJ_STMT_ID(4, 4),
    ST_PRODUCT_CATEGORIZE = PJ_STMT_ID(5, 4),
    ST_PRODUCT_DISCONTINUE = PJ_STMT_ID(6, 3),
};

static const struct pj_statement statements[] = {
    /* $1 id, $2 name, $3 occurred_at */
    PJ_STATEMENT(ST_CATEGORY_CREATE, .key = 1, .flags = PJ_COUNT_IGNORED,
                 .sql = "INSERT INTO categories (id, name, product_count, created_at, updated_at)"
                        " VALUES ($1::uuid, $2::text,"
                        "  (SELECT count(*) FROM products"
                        "    WHERE category_id = $1::uuid AND status = 'active'),"
                        "  $3::timestamptz, $3::timestamptz)"
                        " ON CONFLICT (id) DO NOTHING"),
    /* $1 id, $2 name, $3 occurred_at */
    PJ_STATEMENT(ST_CATEGORY_RENAME, .key = 1, .flags = PJ_COUNT_IGNORED,
                 .sql = "UPDATE categories SET name = $2::text, updated_at = $3::timestamptz"
                        " WHERE id = $1::uuid"),
    /* $1 id, $2 sku, $3 name, $4 price_cents, $5 category_id|NULL, $6 version, $7 occurred_at */
    PJ_STATEMENT(ST_PRODUCT_CREATE, .key = 1, .flags = PJ_COUNT_IGNORED,
                 .sql = "WITH new_row AS ("
                        "  INSERT INTO products (id, sku, name, price_cents, category_id, status,"
                        "                        version, created_at, updated_at)"
                        "  VALUES ($1::uuid, $2::text, $3::text, $4::bigint, $5::uuid, 'active',"
                        "          $6::integer, $7::timestamptz, $7::timestamptz)"
                        "  ON CONFLICT (id) DO NOTHING"
                        "  RETURNING category_id"
                        "), counted AS ("
                        "  UPDATE categories c SET product_count = c.product_count + 1"
                        "  FROM new_row WHERE c.id = new_row.category_id"
                        ")"
                        " SELECT 1 FROM new_row"),
    /* PJ_BULK (projection.h): $1 ids, $2 names, $3 versions, $4 occurred_at */
    PJ_STATEMENT(ST_PRODUCT_RENAME, .key = 1, .flags = PJ_BULK | PJ_COUNT_IGNORED,
                 .sql = "UPDATE products p SET name = e.name, version = e.version,"
                        " updated_at = e.at"
                        " FROM unnest($1::uuid[], $2::text[], $3::integer[], $4::timestamptz[])"
                        "      AS e(id, name, version, at)"
                        " WHERE p.id = e.id"),
    /* PJ_BULK: $1 ids, $2 price_cents, $3 versions, $4 occurred_at */
    PJ_STATEMENT(ST_PRODUCT_PRICE, .key = 1, .flags = PJ_BULK | PJ_COUNT_IGNORED,
                 .sql = "UPDATE products p SET price_cents = e.price, version = e.version,"
                        " updated_at = e.at"
                        " FROM unnest($1::uuid[], $2::bigint[], $3::integer[], $4::timestamptz[])"
                        "      AS e(id, price, version, at)"
                        " WHERE p.id = e.id"),
    /*
     * $1 id, $2 category_id|NULL, $3 version, $4 occurred_at. An active
     * product that really changes category moves one count from the old
     * category to the new one (either may be NULL or not exist yet).
     */
    PJ_STATEMENT(ST_PRODUCT_CATEGORIZE, .key = 1, .flags = PJ_COUNT_IGNORED,
                 .sql = "WITH old_row AS ("
                        "  SELECT id, category_id, status FROM products"
                        "  WHERE id = $1::uuid FOR UPDATE"
                        "), moved AS ("
                        "  SELECT category_id AS old_category FROM old_row"
                        "  WHERE status = 'active' AND category_id IS DISTINCT FROM $2::uuid"
                        "), updated AS ("
                        "  UPDATE products p SET category_id = $2::uuid, version = $3::integer,"
                        "                        updated_at = $4::timestamptz"
                        "  FROM old_row WHERE p.id = old_row.id"
                        "  RETURNING p.id"
                        "), moved_out AS ("
                        "  UPDATE categories c SET product_count = c.product_count - 1"
                        "  FROM moved WHERE c.id = moved.old_category"
                        "), moved_in AS ("
                        "  UPDATE categories c SET product_count = c.product_count + 1"
                        "  FROM moved WHERE c.id = $2::uuid"
                        ")"
                        " SELECT 1 FROM updated"),
    /*
     * $1 id, $2 version, $3 occurred_at. Only the first discontinue of an
     * active product leaves its category's count.
     */
    PJ_STATEMENT(ST_PRODUCT_DISCONTINUE, .key = 1, .flags = PJ_COUNT_IGNORED,
                 .sql = "WITH old_row AS ("
                        "  SELECT id, category_id, status FROM products"
                        "  WHERE id = $1::uuid FOR UPDATE"
                        "), updated AS ("
                        "  UPDATE products p SET status = 'discontinued', version = $2::integer,"
                        "                        updated_at = $3::timestamptz"
                        "  FROM old_row WHERE p.id = old_row.id"
                        "  RETURNING p.id"
                        "), uncounted AS ("
                        "  UPDATE categories c SET product_count = c.product_count - 1"
                        "  FROM old_row"
                        "  WHERE old_row.status = 'active' AND c.id = old_row.category_id"
                        ")"
                        " SELECT 1 FROM updated"),
    PJ_STATEMENTS_END,
};

static enum pj_outcome category_created(struct pj_ctx *ctx, const struct pj_event *ev,
                                        const json_t *payload)
{
    const char *name;
    if (!pj_str(ctx, payload, "name", &name))
        return PJ_BAD_EVENT;
    return PJ_EXEC(ctx, ST_CATEGORY_CREATE, ev->aggregate_id, name, ev->occurred_at);
}

static enum pj_outcome category_renamed(struct pj_ctx *ctx, const struct pj_event *ev,
                                        const json_t *payload)
{
    const char *name;
    if (!pj_str(ctx, payload, "name", &name))
        return PJ_BAD_EVENT;
    return PJ_EXEC(ctx, ST_CATEGORY_RENAME, ev->aggregate_id, name, ev->occurred_at);
}

static enum pj_outcome product_created(struct pj_ctx *ctx, const struct pj_event *ev,
                                       const json_t *payload)
{
    const char *sku, *name, *category_id;
    int64_t price;
    char price_buf[21];
    if (!pj_str(ctx, payload, "sku", &sku) || !pj_str(ctx, payload, "name", &name) ||
        !pj_int64(ctx, payload, "price_cents", &price) ||
        !pj_opt_uuid(ctx, payload, "category_id", &category_id))
        return PJ_BAD_EVENT;
    return PJ_EXEC(ctx, ST_PRODUCT_CREATE, ev->aggregate_id, sku, name, pj_i64(price_buf, price),
                   category_id, ev->aggregate_version_text, ev->occurred_at);
}

static enum pj_outcome product_renamed(struct pj_ctx *ctx, const struct pj_event *ev,
                                       const json_t *payload)
{
    const char *name;
    if (!pj_str(ctx, payload, "name", &name))
        return PJ_BAD_EVENT;
    return PJ_EXEC(ctx, ST_PRODUCT_RENAME, ev->aggregate_id, name, ev->aggregate_version_text,
                   ev->occurred_at);
}

static enum pj_outcome product_price_changed(struct pj_ctx *ctx, const struct pj_event *ev,
                                             const json_t *payload)
{
    int64_t price;
    char price_buf[21];
    if (!pj_int64(ctx, payload, "price_cents", &price))
        return PJ_BAD_EVENT;
    return PJ_EXEC(ctx, ST_PRODUCT_PRICE, ev->aggregate_id, pj_i64(price_buf, price),
                   ev->aggregate_version_text, ev->occurred_at);
}

static enum pj_outcome product_categorized(struct pj_ctx *ctx, const struct pj_event *ev,
                                           const json_t *payload)
{
    const char *category_id;
    if (!pj_opt_uuid(ctx, payload, "category_id", &category_id))
        return PJ_BAD_EVENT;
    return PJ_EXEC(ctx, ST_PRODUCT_CATEGORIZE, ev->aggregate_id, category_id,
                   ev->aggregate_version_text, ev->occurred_at);
}

static enum pj_outcome product_discontinued(struct pj_ctx *ctx, const struct pj_event *ev,
                                            const json_t *payload)
{
    (void)payload;
    return PJ_EXEC(ctx, ST_PRODUCT_DISCONTINUE, ev->aggregate_id, ev->aggregate_version_text,
                   ev->occurred_at);
}

static const struct pj_handler handlers[] = {
    {"CategoryCreated", category_created},
    {"CategoryRenamed", category_renamed},
    {"ProductCreated", product_created},
    {"ProductRenamed", product_renamed},
    {"ProductPriceChanged", product_price_changed},
    {"ProductCategorized", product_categorized},
    {"ProductDiscontinued", product_discontinued},
    {NULL, NULL},
};

static const char *const tables[] = {"categories", "products", NULL};

extern const struct projection projection_catalog;
const struct projection projection_catalog = {
    .name = "catalog",
    .version = 1,
    .description = "categories and products, with each category's count of active products",
    .tables = tables,
    .statements = statements,
    .handlers = handlers,
};
