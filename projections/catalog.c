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
    ST_CATEGORY_CREATE,
    ST_CATEGORY_RENAME,
    ST_PRODUCT_CREATE,
    ST_PRODUCT_RENAME,
    ST_PRODUCT_PRICE,
    ST_PRODUCT_CATEGORIZE,
    ST_PRODUCT_DISCONTINUE,
};

static const struct pj_statement statements[] = {
    /* $1 id, $2 name, $3 occurred_at */
    [ST_CATEGORY_CREATE] =
        {"INSERT INTO categories (id, name, product_count, created_at, updated_at)"
         " VALUES ($1::uuid, $2::text,"
         "  (SELECT count(*) FROM products"
         "    WHERE category_id = $1::uuid AND status = 'active'),"
         "  $3::timestamptz, $3::timestamptz)"
         " ON CONFLICT (id) DO NOTHING",
         3},
    /* $1 id, $2 name, $3 occurred_at */
    [ST_CATEGORY_RENAME] = {"UPDATE categories SET name = $2::text, updated_at = $3::timestamptz"
                            " WHERE id = $1::uuid",
                            3},
    /* $1 id, $2 sku, $3 name, $4 price_cents, $5 category_id|NULL, $6 version, $7 occurred_at */
    [ST_PRODUCT_CREATE] =
        {"WITH new_row AS ("
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
         " SELECT 1 FROM new_row",
         7},
    /* PJ_BULK (projection.h): $1 ids, $2 names, $3 versions, $4 occurred_at */
    [ST_PRODUCT_RENAME] = {"UPDATE products p SET name = e.name, version = e.version,"
                           " updated_at = e.at"
                           " FROM unnest($1::uuid[], $2::text[], $3::integer[], $4::timestamptz[])"
                           "      AS e(id, name, version, at)"
                           " WHERE p.id = e.id",
                           4, PJ_BULK},
    /* PJ_BULK: $1 ids, $2 price_cents, $3 versions, $4 occurred_at */
    [ST_PRODUCT_PRICE] = {"UPDATE products p SET price_cents = e.price, version = e.version,"
                          " updated_at = e.at"
                          " FROM unnest($1::uuid[], $2::bigint[], $3::integer[], $4::timestamptz[])"
                          "      AS e(id, price, version, at)"
                          " WHERE p.id = e.id",
                          4, PJ_BULK},
    /*
     * $1 id, $2 category_id|NULL, $3 version, $4 occurred_at. An active
     * product that really changes category moves one count from the old
     * category to the new one (either may be NULL or not exist yet).
     */
    [ST_PRODUCT_CATEGORIZE] =
        {"WITH old_row AS ("
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
         " SELECT 1 FROM updated",
         4},
    /*
     * $1 id, $2 version, $3 occurred_at. Only the first discontinue of an
     * active product leaves its category's count.
     */
    [ST_PRODUCT_DISCONTINUE] =
        {"WITH old_row AS ("
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
         " SELECT 1 FROM updated",
         3},
    {NULL, 0},
};

static int category_created(struct pj_ctx *ctx, const struct pj_event *ev, const json_t *payload)
{
    const char *name;
    if (pj_str(ctx, payload, "name", &name) < 0)
        return -1;
    const char *params[] = {ev->aggregate_id, name, ev->occurred_at};
    return pj_exec(ctx, ST_CATEGORY_CREATE, params, PJ_COUNT_IGNORED);
}

static int category_renamed(struct pj_ctx *ctx, const struct pj_event *ev, const json_t *payload)
{
    const char *name;
    if (pj_str(ctx, payload, "name", &name) < 0)
        return -1;
    const char *params[] = {ev->aggregate_id, name, ev->occurred_at};
    return pj_exec(ctx, ST_CATEGORY_RENAME, params, PJ_COUNT_IGNORED);
}

static int product_created(struct pj_ctx *ctx, const struct pj_event *ev, const json_t *payload)
{
    const char *sku, *name, *category_id;
    int64_t price;
    char price_buf[21];
    if (pj_str(ctx, payload, "sku", &sku) < 0 || pj_str(ctx, payload, "name", &name) < 0 ||
        pj_int64(ctx, payload, "price_cents", &price) < 0 ||
        pj_opt_uuid(ctx, payload, "category_id", &category_id) < 0)
        return -1;
    const char *params[] = {ev->aggregate_id,         sku,         name,
                            pj_i64(price_buf, price), category_id, ev->aggregate_version_text,
                            ev->occurred_at};
    return pj_exec(ctx, ST_PRODUCT_CREATE, params, PJ_COUNT_IGNORED);
}

static int product_renamed(struct pj_ctx *ctx, const struct pj_event *ev, const json_t *payload)
{
    const char *name;
    if (pj_str(ctx, payload, "name", &name) < 0)
        return -1;
    const char *params[] = {ev->aggregate_id, name, ev->aggregate_version_text, ev->occurred_at};
    return pj_exec(ctx, ST_PRODUCT_RENAME, params, PJ_COUNT_IGNORED);
}

static int product_price_changed(struct pj_ctx *ctx, const struct pj_event *ev,
                                 const json_t *payload)
{
    int64_t price;
    char price_buf[21];
    if (pj_int64(ctx, payload, "price_cents", &price) < 0)
        return -1;
    const char *params[] = {ev->aggregate_id, pj_i64(price_buf, price), ev->aggregate_version_text,
                            ev->occurred_at};
    return pj_exec(ctx, ST_PRODUCT_PRICE, params, PJ_COUNT_IGNORED);
}

static int product_categorized(struct pj_ctx *ctx, const struct pj_event *ev, const json_t *payload)
{
    const char *category_id;
    if (pj_opt_uuid(ctx, payload, "category_id", &category_id) < 0)
        return -1;
    const char *params[] = {ev->aggregate_id, category_id, ev->aggregate_version_text,
                            ev->occurred_at};
    return pj_exec(ctx, ST_PRODUCT_CATEGORIZE, params, PJ_COUNT_IGNORED);
}

static int product_discontinued(struct pj_ctx *ctx, const struct pj_event *ev,
                                const json_t *payload)
{
    (void)payload;
    const char *params[] = {ev->aggregate_id, ev->aggregate_version_text, ev->occurred_at};
    return pj_exec(ctx, ST_PRODUCT_DISCONTINUE, params, PJ_COUNT_IGNORED);
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
