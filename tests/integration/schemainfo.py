"""What the migrations made of a database, as comparable values: the
functions and views of projectord's schemas with their definitions, and the
privileges on them and on the tables. Two databases whose catalogs are
equal were migrated to the same schema, however they got there."""

import psycopg

SCHEMAS = ("event_store", "read_model")

QUERIES = {
    "functions": """SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid),
                           coalesce(p.proacl, acldefault('f', p.proowner))::text
                      FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                     WHERE n.nspname = ANY(%(schemas)s) ORDER BY 1""",
    "views": """SELECT c.oid::regclass::text, pg_get_viewdef(c.oid),
                       coalesce(c.relacl, acldefault('r', c.relowner))::text
                  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = ANY(%(schemas)s) AND c.relkind = 'v' ORDER BY 1""",
    "relations": """SELECT c.oid::regclass::text, c.relkind::text,
                           coalesce(c.relacl, acldefault('r', c.relowner))::text,
                           (SELECT string_agg(format('%%s %%s', a.attname,
                                                     format_type(a.atttypid, a.atttypmod)),
                                              ', ' ORDER BY a.attnum)
                              FROM pg_attribute a
                             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)
                      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = ANY(%(schemas)s) ORDER BY 1""",
    "schemas": """SELECT nspname::text, coalesce(nspacl, acldefault('n', nspowner))::text
                    FROM pg_namespace WHERE nspname = ANY(%(schemas)s) ORDER BY 1""",
    "triggers": """SELECT tgrelid::regclass::text, tgname::text, pg_get_triggerdef(oid)
                     FROM pg_trigger WHERE NOT tgisinternal
                      AND tgrelid::regclass::text LIKE ANY(ARRAY['event_store.%%', 'read_model.%%'])
                    ORDER BY 1, 2""",
}


def catalog(conninfo):
    """{kind: [rows]} for QUERIES' kinds."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        return {kind: conn.execute(sql, {"schemas": list(SCHEMAS)}).fetchall()
                for kind, sql in QUERIES.items()}


def differences(a, b):
    """Lines naming what differs between catalogs a and b (empty: the same)."""
    out = []
    for kind in QUERIES:
        rows_a = {r[0]: r[1:] for r in a[kind]}
        rows_b = {r[0]: r[1:] for r in b[kind]}
        for name in sorted(set(rows_a) | set(rows_b)):
            if rows_a.get(name) != rows_b.get(name):
                out.append(f"{kind} {name}: {rows_a.get(name)!r} != {rows_b.get(name)!r}")
    return out
