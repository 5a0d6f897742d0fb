"""A fifth projection, added as a user would: the suite and the demo take
the build's projections from `projectord list --names`, so adding one
touches only its own files and its migration (issue 17).

- declared: projection_dir holds examples/declared/logins_per_day.conf and
  the sql dir a copy of sql/ plus its table as one more migration; a
  representative part of the suite runs with it present
  (PROJECTORD_TEST_PROJECTION_DIR, PROJECTORD_SQL_DIR), so every daemon the
  tests start runs five projections and waits for all five.
- compiled: a copy of the tree with one projections/NAME.c and one
  sql/V900__NAME.sql dropped in, built; its scripts/demo.sh runs to the end
  (it waits for every projection of `list --names`, compiled-in and
  declared: six there), and a catch-up test runs against that binary.

The oracle knows the four examples only: the fifth is enabled, waited for
and must be live at the head; the exact row checks leave it out.

Rebuilds the tree: scripts/test.sh leaves it out of the ASan pass.
"""

import os
import shutil
import subprocess
import sys

from daemon import BIN, REPO_ROOT, SLOWDOWN, clean_env
from pgcluster import SQL_DIR

HERE = os.path.dirname(os.path.abspath(__file__))

# The suite's tests run again with the fifth projection present: a catch-up
# with the oracle's exact checks, rebuild --all, status, clean stops.
SUBSET = ["test_catchup.py", "test_rebuild.py::test_rebuild_all_while_readers_read_and_writers_write",
          "test_cli.py::test_status_after_a_run", "test_cli.py::test_idle_daemon_is_live_and_healthy",
          "test_faults.py::test_signal_stops_cleanly"]

# The compiled fifth projection: every event counted per UTC day.
EVENTS_PER_DAY_C = r'''/*
 * events_per_day: how many events were stored per UTC day, any type.
 */
#include "projection.h"

enum {
    ST_COUNT = PJ_STMT_ID(0, 1),
};

static const struct pj_statement statements[] = {
    /* $1 occurred_at */
    PJ_STATEMENT(ST_COUNT,
                 .sql = "INSERT INTO events_per_day AS d (day, events)"
                        " VALUES (($1::timestamptz AT TIME ZONE 'UTC')::date, 1)"
                        " ON CONFLICT (day) DO UPDATE SET events = d.events + 1"),
    PJ_STATEMENTS_END,
};

static enum pj_outcome any_event(struct pj_ctx *ctx, const struct pj_event *ev,
                                 const json_t *payload)
{
    (void)payload;
    return PJ_EXEC(ctx, ST_COUNT, ev->occurred_at);
}

static const struct pj_handler handlers[] = {
    {"*", any_event, PJ_NO_PAYLOAD},
    {NULL, NULL, 0},
};

static const char *const tables[] = {"events_per_day", NULL};

extern const struct projection projection_events_per_day;
const struct projection projection_events_per_day = {
    .name = "events_per_day",
    .version = 1,
    .description = "events stored per UTC day",
    .tables = tables,
    .statements = statements,
    .handlers = handlers,
};
'''

EVENTS_PER_DAY_SQL = """-- events_per_day (projections/events_per_day.c): its table, and the
-- daemon role's rights on it (sql/V007).
CREATE TABLE IF NOT EXISTS read_model.events_per_day (
    day    date PRIMARY KEY,
    events bigint NOT NULL
);
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON read_model.events_per_day TO projectord;
"""


def sql_dir_with(tmp, name, text):
    """A copy of the sql dir under test plus one migration."""
    out = os.path.join(tmp, "sql")
    shutil.copytree(SQL_DIR, out)
    with open(os.path.join(out, f"V900__{name}.sql"), "w") as f:
        f.write(text)
    return out


def build_names(binary, env):
    out = subprocess.run([binary, "-c", "/dev/null", "list", "--names"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def run_suite(tests, **env):
    """pytest on tests (paths under tests/integration) in a child with env."""
    child = dict(os.environ, **env)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x"]
                          + [os.path.join(HERE, t) for t in tests],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=child,
                          cwd=REPO_ROOT, timeout=900 * SLOWDOWN)
    assert proc.returncode == 0, proc.stdout[-6000:]
    return proc.stdout


def test_list_names_is_the_builds_projections(tmp_path):
    """`list --names`: one name a line, compiled-in and declared alike;
    anything after it is a usage error."""
    env = clean_env(PROJECTORD_PROJECTION_DIR=os.path.join(REPO_ROOT, "examples", "declared"))
    assert build_names(BIN, env) == ["catalog", "event_stats", "logins_per_day", "orders", "users"]
    extra = subprocess.run([BIN, "list", "--names", "x"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=env)
    assert extra.returncode == 64 and "list: unexpected arguments" in extra.stderr


def test_the_suite_with_a_declared_fifth_projection(tmp_path):
    declared = tmp_path / "declared"
    declared.mkdir()
    shutil.copy(os.path.join(REPO_ROOT, "examples", "declared", "logins_per_day.conf"), declared)
    with open(os.path.join(REPO_ROOT, "examples", "declared", "logins_per_day.sql")) as f:
        sql = sql_dir_with(str(tmp_path), "logins_per_day", f.read())
    assert "logins_per_day" in build_names(BIN, clean_env(PROJECTORD_PROJECTION_DIR=str(declared)))
    run_suite(SUBSET, PROJECTORD_BIN=BIN, PROJECTORD_SQL_DIR=sql,
              PROJECTORD_TEST_PROJECTION_DIR=str(declared))


def copy_tree(dest):
    """The source tree as a user's checkout would have it: no build dirs."""
    def ignore(path, names):
        return [n for n in names if n == ".git" or n.startswith("build")
                or n == "__pycache__"] if path == REPO_ROOT else \
            [n for n in names if n == "__pycache__"]
    shutil.copytree(REPO_ROOT, dest, ignore=ignore)


def test_a_compiled_fifth_projection_touches_only_its_own_files(tmp_path):
    tree = str(tmp_path / "tree")
    copy_tree(tree)
    # The user's whole change: one C file and one migration.
    with open(os.path.join(tree, "projections", "events_per_day.c"), "w") as f:
        f.write(EVENTS_PER_DAY_C)
    with open(os.path.join(tree, "sql", "V900__events_per_day.sql"), "w") as f:
        f.write(EVENTS_PER_DAY_SQL)
    build = os.path.join(tree, "build")
    for argv in (["cmake", "-B", build, "-DCMAKE_BUILD_TYPE=RelWithDebInfo", "-DPROJECTORD_TESTS=OFF"],
                 ["cmake", "--build", build, "-j2", "--target", "projectord"]):
        proc = subprocess.run(argv, cwd=tree, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-4000:]
    binary = os.path.join(build, "projectord")
    assert "events_per_day" in build_names(binary, clean_env())

    # The demo waits for every projection: the four, logins_per_day, this one.
    demo = subprocess.run(["scripts/demo.sh"], cwd=tree, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=300 * SLOWDOWN)
    assert demo.returncode == 0, demo.stdout[-6000:]
    assert "events_per_day" in demo.stdout

    run_suite(["test_catchup.py"], PROJECTORD_BIN=binary,
              PROJECTORD_SQL_DIR=os.path.join(tree, "sql"))
