"""The projection API's rule that a projection's SQL names only its own
tables (src/projection.h): a rebuild's search_path holds the shadow schema
alone, so a statement naming another table prepares live but not in the
rebuild. That used to retry the rebuild's setup with backoff for ever; it
now gives the rebuild up at once, with the rule in its error, and the
authors' harness (projection_harness.py) reports it from the projection's
own test.

No example projection breaks the rule, so the tests make the shadow lack
one of catalog's tables, as it lacks another projection's: an event trigger
renames the shadow's `categories` right after projectord_begin_rebuild
(sql/V008) creates and grants it. catalog's statements name `categories`,
which the rebuild then can not find, exactly as it could not find `users`.
"""

import uuid

import pytest

from daemon import Daemon, EXIT_FAILURE, REFUSED_TRANSITION, ProjectordError, run_cli
from eventgen import at

SHADOWS = "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'projectord_rebuild%'"

HIDE_SHADOW_CATEGORIES = """
CREATE FUNCTION public.hide_shadow_categories() RETURNS event_trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF to_regclass('projectord_rebuild_catalog.categories') IS NOT NULL THEN
        ALTER TABLE projectord_rebuild_catalog.categories RENAME TO categories_elsewhere;
    END IF;
END;
$$;
CREATE EVENT TRIGGER hide_shadow_categories ON ddl_command_end WHEN TAG IN ('GRANT')
    EXECUTE FUNCTION public.hide_shadow_categories();
"""


def some_catalog_events(case):
    c = uuid.uuid4()
    case.emit("Category", c, "CategoryCreated", {"name": "Kitchen"}, at(0, 9))
    case.emit("Product", uuid.uuid4(), "ProductCreated",
              {"sku": "K-1", "name": "Kettle", "price_cents": 2599, "category_id": str(c)}, at(0, 10))


def test_a_rebuild_whose_sql_names_a_table_it_lacks_fails_at_once(db, workdir):
    db.execute(HIDE_SHADOW_CATEGORIES)
    cli = Daemon(db.conninfo, workdir, name="cli")
    # Without the fix the command retries the shadow's setup until killed.
    result = run_cli(["-c", cli.config_path, "rebuild", "catalog"], timeout=20)
    assert result.returncode == EXIT_FAILURE, result.stdout + result.stderr
    assert "catalog: not rebuilt" in result.stdout
    assert ('relation "categories" does not exist (SQLSTATE 42P01): a rebuild sees only the '
            "projection's own tables, so its SQL may name no other") in result.stderr
    assert result.stderr.count("giving the rebuild up") == 1, result.stderr
    assert "retrying" not in result.stderr, result.stderr
    # The giving up is the rebuild's own (ABANDON), not a refused step taken for a lost one.
    assert REFUSED_TRANSITION not in result.stderr, result.stderr
    assert "another instance's now" not in result.stderr, result.stderr
    error = db.scalar("SELECT last_error FROM read_model.projection_metadata"
                      " WHERE projection_name = 'catalog'")
    assert error.startswith('rebuild failed: relation "categories" does not exist (SQLSTATE 42P01)')
    assert db.query(SHADOWS) == [], "the given-up rebuild left its shadow schema"


def test_the_harness_reports_it_from_the_projections_own_test(db, projection_case):
    db.execute(HIDE_SHADOW_CATEGORIES)
    case = projection_case("catalog")
    some_catalog_events(case)
    with pytest.raises(ProjectordError) as err:
        case.run(timeout=20)
    assert "a rebuild sees only the projection's own tables" in str(err.value)
