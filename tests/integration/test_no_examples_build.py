"""The build without the four example projections (issue 19, "The
schema"): `cmake -DPROJECTORD_EXAMPLES=OFF` builds a daemon that has none
of them (`list --names` is empty), whose `migrate` leaves their migrations
(sql/examples.list) out unless --examples, and whose install has a config
without their blocks (it loads) and none of their declared forms.

Builds a copy of the tree: scripts/test.sh leaves it out of the ASan pass.
"""

import os
import subprocess

from daemon import EXIT_OK, clean_env
from test_fifth_projection import copy_tree
from test_migrate import EMPTY_CONFIG, new_db
from test_no_examples import example_files


def run(argv, **kwargs):
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=900, **kwargs)
    assert proc.returncode == 0, proc.stdout[-4000:]
    return proc.stdout


def test_build_without_examples(cluster, tmp_path):
    tree = str(tmp_path / "tree")
    copy_tree(tree)
    build = os.path.join(tree, "build")
    run(["cmake", "-B", build, "-DCMAKE_BUILD_TYPE=RelWithDebInfo", "-DPROJECTORD_TESTS=OFF",
         "-DPROJECTORD_EXAMPLES=OFF", "-DCMAKE_INSTALL_PREFIX=/usr"], cwd=tree)
    run(["cmake", "--build", build, "-j2", "--target", "projectord"], cwd=tree)
    binary = os.path.join(build, "projectord")

    def cli(*args, env=None):
        return subprocess.run([binary, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env or clean_env(), timeout=60)

    names = cli("-c", "/dev/null", "list", "--names")
    assert names.returncode == EXIT_OK and names.stdout == "", names
    assert "--no-examples       leave out" in cli("migrate", "--help").stdout
    assert "(this build's default)" in [line for line in cli("migrate", "--help").stdout.splitlines()
                                        if "not applied, not recorded" in line][0]

    # migrate leaves the examples out by default; --examples overrides.
    db = new_db(cluster, "noex_build")
    env = clean_env(PROJECTORD_DATABASE_URL=db.conninfo)
    sql = os.path.join(tree, "sql")
    dry = cli("-c", EMPTY_CONFIG, "migrate", "--dry-run", "--sql-dir", sql, env=env)
    assert dry.returncode == EXIT_OK, dry.stderr
    listed = example_files()
    assert "V001__event_store.sql: would be applied" in dry.stdout
    assert f"{len(listed)} example migration(s) left out" in dry.stdout
    for f in listed:
        assert f"{f}: would be applied" not in dry.stdout
    dry = cli("-c", EMPTY_CONFIG, "migrate", "--dry-run", "--examples", "--sql-dir", sql, env=env)
    assert all(f"{f}: would be applied" in dry.stdout for f in listed)
    applied = cli("-c", EMPTY_CONFIG, "migrate", "--sql-dir", sql, env=env)
    assert applied.returncode == EXIT_OK, applied.stderr
    assert db.scalar("SELECT to_regclass('read_model.projection_metadata') IS NOT NULL")
    assert db.scalar("SELECT to_regclass('read_model.products') IS NULL")

    # The install: a config that loads (no blocks naming the examples), the
    # migrations with their list, no declared forms of the examples.
    dest = str(tmp_path / "dest")
    run(["cmake", "--install", build], env=dict(os.environ, DESTDIR=dest))
    conf = os.path.join(dest, "etc", "projectord", "projectord.conf")
    installed = cli("-c", conf, "list", "--names")
    assert installed.returncode == EXIT_OK and installed.stdout == "", installed
    with open(conf) as f:
        assert "# catalog     = {" in f.read()
    share = os.path.join(dest, "usr", "share", "projectord")
    assert os.path.exists(os.path.join(share, "sql", "examples.list"))
    assert not os.path.exists(os.path.join(share, "projections"))
