"""The Debian package (debian/, docs/packaging.md), built from the source
tree as a packager would (dpkg-buildpackage -us -uc -b on a copy of the
tree), inspected (contents, conffiles, control fields, lintian), installed
for real with apt (CI runs as root on a fresh Debian 12 machine) and
purged at the end; in between the installed binary, configuration, unit,
migrations, declared projections and man pages are used as they are.

Also the man pages against what they describe: the commands of --help, the
keys and variables of docs/reference.md."""

import os
import re
import shutil
import subprocess

import pytest

from daemon import EXIT_OK, REPO_ROOT
from test_packaging import MAX_EXPOSURE, project_version, unit_settings

PACKAGE = "projectord"
CONFIG = "/etc/projectord/projectord.conf"
UNIT = "/lib/systemd/system/projectord.service"
DOCDIR = "/usr/share/doc/projectord"
DATADIR = "/usr/share/projectord"
MAN_PAGES = ["/usr/share/man/man1/projectord.1.gz", "/usr/share/man/man5/projectord.conf.5.gz"]
TOOLS = {"dpkg-buildpackage": "dpkg-dev", "dh": "debhelper", "lintian": "lintian",
         "fakeroot": "fakeroot", "man": "man-db", "groff": "groff-base",
         "systemd-analyze": "systemd"}
# Where the package may put files: nothing else (no /usr/local, no /var,
# no enabled-unit symlinks).
ALLOWED_TOP = ("/etc/projectord/", "/lib/systemd/system/", "/usr/bin/", DOCDIR + "/",
               "/usr/share/man/", DATADIR + "/")
# Where installing could leave something behind that dpkg does not list.
# Paths are compared resolved(): /lib is /usr/lib on a merged-/usr system.
WATCHED = ["/etc", "/usr/local", "/lib/systemd", "/usr/lib/systemd", "/usr/share/projectord"]


def run(argv, timeout=300, **kwargs):
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          errors="replace", timeout=timeout, **kwargs)


def need_tools():
    """The packaging tools; scripts/install-deps.sh installs them, so in CI
    (CI set) a missing one fails instead of skipping."""
    missing = sorted({pkg for tool, pkg in TOOLS.items() if not shutil.which(tool)})
    if missing:
        message = f"missing Debian packages {' '.join(missing)} (scripts/install-deps.sh installs them)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def copy_tree(dest):
    """The source tree as a checkout has it (tracked and untracked files, not
    the ignored build directories), so that the package is built from what
    is in the work tree, not from stale build products."""
    listing = run(["git", "-C", REPO_ROOT, "ls-files", "-z", "--cached", "--others",
                   "--exclude-standard"])
    if listing.returncode == 0 and listing.stdout:
        for rel in filter(None, listing.stdout.split("\0")):
            src = os.path.join(REPO_ROOT, rel)
            if os.path.isfile(src):  # a deleted, not yet committed file is listed too
                os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
                shutil.copy2(src, os.path.join(dest, rel))
    else:  # not a git checkout (a tarball)
        shutil.copytree(REPO_ROOT, dest, dirs_exist_ok=True, symlinks=True,
                        ignore=shutil.ignore_patterns("build*", ".git", "__pycache__", "obj-*"))


class Package:
    def __init__(self, workdir):
        self.workdir = workdir
        self.deb = os.path.join(workdir, f"{PACKAGE}_{project_version()}_{self.arch()}.deb")
        self.changes = self.deb[:-len(".deb")] + ".changes"

    @staticmethod
    def arch():
        return run(["dpkg", "--print-architecture"]).stdout.strip()

    def field(self, name):
        return run(["dpkg-deb", "-f", self.deb, name]).stdout.strip()

    def files(self):
        """{path on the target: dpkg-deb -c's line} of the regular files and
        links (directories left out)."""
        out = run(["dpkg-deb", "-c", self.deb]).stdout
        files = {}
        for line in out.splitlines():
            path = line.split(None, 5)[5].split(" -> ")[0]
            if not line.startswith("d"):
                files["/" + path.lstrip("./")] = line
        return files


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """The package, built once from a copy of the tree: the .deb lands next
    to the copy, in a temporary directory."""
    need_tools()
    workdir = str(tmp_path_factory.mktemp("deb"))
    src = os.path.join(workdir, "src")
    copy_tree(src)
    env = dict(os.environ, DEB_BUILD_OPTIONS="parallel=2")
    proc = run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    pkg = Package(workdir)
    assert os.path.isfile(pkg.deb), os.listdir(workdir)
    return pkg


# --------------------------------------------------------------------------
# The package as built
# --------------------------------------------------------------------------

def test_package_version_is_the_project_version(package):
    version = project_version()
    assert package.field("Package") == PACKAGE
    assert package.field("Version") == version
    changelog = run(["dpkg-parsechangelog", "-l", os.path.join(REPO_ROOT, "debian", "changelog"),
                     "-S", "Version"])
    assert changelog.stdout.strip() == version, changelog.stderr


def test_package_control_fields(package):
    depends = package.field("Depends")
    for lib in ("libpq5", "libev4", "libconfig9", "libjansson4", "libc6"):
        assert re.search(rf"\b{lib}\b", depends), depends
    assert package.field("Section") == "database"
    assert "-" not in package.field("Version"), "a native package: the project's version as it is"


def test_package_contents(package):
    files = package.files()
    paths = set(files)
    local = sorted(p for p in paths if p.startswith("/usr/local"))
    assert not local, f"files under /usr/local: {local}"
    stray = sorted(p for p in paths if not p.startswith(ALLOWED_TOP))
    assert not stray, f"files outside the package's places: {stray}"

    want = {"/usr/bin/projectord", CONFIG, UNIT, *MAN_PAGES,
            f"{DOCDIR}/README.md", f"{DOCDIR}/CHANGELOG.md", f"{DOCDIR}/copyright",
            f"{DOCDIR}/changelog.gz"}
    want |= {f"{DOCDIR}/docs/{f}" for f in os.listdir(os.path.join(REPO_ROOT, "docs"))}
    sql = os.path.join(REPO_ROOT, "sql")
    want |= {f"{DATADIR}/sql/{f}" for f in os.listdir(sql) if re.fullmatch(r"V\d+__\w+\.sql", f)}
    want |= {f"{DATADIR}/sql/repeatable/{f}" for f in os.listdir(os.path.join(sql, "repeatable"))
             if f.startswith("R__")}
    want.add(f"{DATADIR}/sql/adopt/original_event_store.sql")
    want.add(f"{DATADIR}/sql/examples.list")  # which migrations `migrate --no-examples` leaves out
    want |= {f"{DATADIR}/projections/{f}"
             for f in os.listdir(os.path.join(REPO_ROOT, "projections", "declared")) if f.endswith(".conf")}
    want |= {f"{DATADIR}/examples/{f}" for f in os.listdir(os.path.join(REPO_ROOT, "examples", "declared"))}
    assert paths == want, f"missing: {sorted(want - paths)}; unexpected: {sorted(paths - want)}"
    assert files["/usr/bin/projectord"].startswith("-rwxr-xr-x root/root")
    # The licence is debian/copyright; a second copy is what lintian calls extra-license-file.
    assert f"{DOCDIR}/LICENSE" not in paths


def test_package_conffiles_and_scripts(package, tmp_path):
    control = tmp_path / "control"
    assert run(["dpkg-deb", "-e", package.deb, str(control)]).returncode == 0
    assert (control / "conffiles").read_text().split() == [CONFIG]
    # Installed, neither enabled nor started: the scripts never enable the
    # unit outright (only again after an upgrade when it was enabled) and
    # start it only through deb-systemd-invoke, which leaves a disabled unit.
    postinst = (control / "postinst").read_text()
    enables = [l.strip() for l in postinst.splitlines() if "deb-systemd-helper enable" in l]
    assert enables and all(l.startswith("deb-systemd-helper enable") for l in enables), postinst
    assert postinst.index("deb-systemd-helper debian-installed") < postinst.index("was-enabled")
    assert not re.search(r"(?m)^\s*(systemctl (start|enable)|useradd|adduser)\b", postinst)


def lintian_findings(package):
    """[(severity letter, tag, rest)] of lintian on the .deb and .changes."""
    proc = run(["lintian", "--pedantic", "--display-info", "--display-experimental",
                package.changes], timeout=300)
    findings = []
    for line in proc.stdout.splitlines():
        m = re.match(r"([EWIPX]): \S+: (\S+)\s*(.*)$", line)
        if m:
            findings.append(m.groups())
    return proc, findings


def documented_lintian_tags():
    with open(os.path.join(REPO_ROOT, "docs", "packaging.md")) as f:
        return set(re.findall(r"(?m)^\| `([a-z0-9.+-]+)` \|", f.read()))


def test_lintian(package):
    """No lintian error; every other finding is listed, with why, in
    docs/packaging.md (a new one fails until it is fixed or listed)."""
    proc, findings = lintian_findings(package)
    print("\n".join(f"{s}: {tag} {rest}" for s, tag, rest in findings))
    errors = [f for f in findings if f[0] == "E"]
    assert not errors, proc.stdout
    assert proc.returncode == 0, proc.stdout + proc.stderr
    undocumented = {tag for _, tag, _ in findings} - documented_lintian_tags()
    assert not undocumented, f"lintian findings not listed in docs/packaging.md: {sorted(undocumented)}"


# --------------------------------------------------------------------------
# The man pages against what they describe (from the package, no install)
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def extracted(package, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("root"))
    assert run(["dpkg-deb", "-x", package.deb, root]).returncode == 0
    return root


def render(page):
    """The man page as man shows it, wide (one option a line)."""
    proc = run(["man", "--warnings", "-l", page], env=dict(os.environ, MANWIDTH="200", LC_ALL="C.UTF-8",
                                                          MAN_KEEP_FORMATTING=""))
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return proc.stdout


def reference_section(title):
    with open(os.path.join(REPO_ROOT, "docs", "reference.md")) as f:
        text = f.read()
    m = re.search(rf"(?ms)^#+ {re.escape(title)}\n(.*?)(?=^#+ )", text)
    assert m, title
    return m.group(1)


def test_man_pages_render_without_warnings(extracted):
    for page in MAN_PAGES:
        path = os.path.join(extracted, page.lstrip("/"))
        proc = subprocess.run(f"zcat {path} | groff -man -ww -z", shell=True,
                              stderr=subprocess.PIPE, text=True)
        assert proc.returncode == 0 and proc.stderr == "", f"{page}: {proc.stderr}"
        text = render(path)
        assert f"projectord {project_version()}" in text
        assert not re.search(r"@[A-Za-z_]+@", text), "a template variable left in the page"


def test_man_page_1_has_every_command_option_and_exit_code(extracted):
    text = render(os.path.join(extracted, MAN_PAGES[0].lstrip("/")))
    sections = set(re.findall(r"(?m)^([A-Z][A-Z ]+)$", text))
    assert {"NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "COMMANDS", "EXIT STATUS",
            "ENVIRONMENT", "FILES", "SIGNALS", "SEE ALSO"} <= sections, sections
    binary = os.path.join(extracted, "usr/bin/projectord")
    usage = run([binary, "--help"]).stdout
    listed = usage.split("\ncommands:\n", 1)[1].split("\noptions:\n", 1)[0]
    commands = re.findall(r"(?m)^([a-z][a-z-]+)\b", listed)
    assert len(commands) >= 10, usage
    for command in commands:
        assert re.search(rf"(?m)^       {command}\b", text), f"command {command} not in projectord(1)"
    for option in re.findall(r"(?m)^  (-\w, --[a-z-]+)", usage):
        assert option in text, f"option {option} not in projectord(1)"
    exit_codes = re.findall(r"(?m)^\| (\d+) \|", reference_section("Exit codes"))
    assert exit_codes == ["0", "1", "64", "69", "77", "78"]
    for code in exit_codes:
        assert re.search(rf"(?m)^       {code}\s", text), f"exit code {code} not in projectord(1)"
    # Every key's variable is in projectord.conf(5) (below); projectord(1) names the
    # ones a command line uses most and points there.
    for var in ("PROJECTORD_DATABASE_URL", "PROJECTORD_TARGET_DATABASE_URL",
                "PROJECTORD_PROJECTION_DIR", "PROJECTORD_LOG_LEVEL", "PROJECTORD_SQL_DIR"):
        assert var in text, f"{var} not in projectord(1)"
    assert "projectord.conf(5)" in text
    for sig in ("SIGTERM", "SIGINT", "SIGHUP"):
        assert sig in text
    assert CONFIG in text and f"{DATADIR}/sql" in text and UNIT in text


def test_man_page_5_has_every_key(extracted):
    text = render(os.path.join(extracted, MAN_PAGES[1].lstrip("/")))
    keys = re.findall(r"(?m)^\| `([a-z_.A-Z]+)` \|", reference_section("Keys"))
    assert "batch_size" in keys and "projections.NAME.on_error" in keys, keys
    for key in keys:
        shown = key.replace("NAME", "name")
        assert re.search(rf"(?m)^       {re.escape(shown)} \(", text), f"key {key} not in projectord.conf(5)"
    for var in re.findall(r"(?m)^\| `(PROJECTORD_\w+)` \|", reference_section("Environment")):
        assert var in text, f"{var} not in projectord.conf(5)"


# --------------------------------------------------------------------------
# Installed for real, then purged
# --------------------------------------------------------------------------

def resolved(path):
    """path with its directory resolved (/lib/x is /usr/lib/x on a merged-/usr
    system), not its last part: a symlink stays itself."""
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def snapshot():
    """Every path under the watched directories, resolved()."""
    paths = set()
    for top in WATCHED:
        for d, dirs, names in os.walk(top):
            paths.update(resolved(os.path.join(d, n)) for n in dirs + names)
    return paths


def apt(*args):
    return run(["apt-get", "-y", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=120", *args],
               env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"), timeout=600)


def installed_state():
    return run(["dpkg-query", "-W", "-f=${Status}", PACKAGE]).stdout.strip()


@pytest.fixture(scope="module")
def installed(package):
    """The package installed with apt, as a user installs a downloaded
    .deb; purged when the module is done (test_purge does it, and checks)."""
    if os.geteuid() != 0:
        pytest.skip("installing the package needs root (CI runs as root)")
    state = installed_state()
    if state and not state.endswith("not-installed") and state != "unknown ok not-installed":
        pytest.skip(f"{PACKAGE} is installed on this machine already ({state}): not touching it")
    if os.path.exists("/etc/projectord"):
        pytest.skip("/etc/projectord exists on this machine: not touching it")
    before = snapshot()
    proc = apt("install", package.deb)
    try:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert installed_state() == "install ok installed"
        yield {"before": before, "after": snapshot(), "apt": proc.stdout + proc.stderr}
    finally:
        if installed_state() not in ("", "unknown ok not-installed"):
            apt("purge", PACKAGE)


def dpkg_listed():
    """The package's paths as dpkg lists them, resolved."""
    return {resolved(p) for p in run(["dpkg", "-L", PACKAGE]).stdout.split()}


def test_installed_files_are_the_package_s(installed, package):
    listed = dpkg_listed()
    assert {resolved(p) for p in package.files()} <= listed
    created = installed["after"] - installed["before"]
    # The unit is not enabled: no symlink in /etc/systemd/system.
    assert not [p for p in created if p.startswith("/etc/systemd")], sorted(created)
    unlisted = {p for p in created if p not in listed}
    assert not unlisted, f"installing created files dpkg does not list: {sorted(unlisted)}"
    assert not [p for p in created if p.startswith("/usr/local")]


def installed_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PG") and not k.startswith("PROJECTORD_")}
    env.update(extra)
    return env


def test_installed_binary(installed):
    proc = run(["/usr/bin/projectord", "--version"], env=installed_env())
    assert proc.stdout.split() == ["projectord", project_version()]
    usage = run(["/usr/bin/projectord", "--help"], env=installed_env()).stdout
    assert f"(default {CONFIG})" in usage
    assert f"(default {DATADIR}/sql)" in usage


def test_installed_check_config(installed):
    """check-config with no -c reads the installed file (the binary's
    default path); its example database is not there to connect to, so it
    checks the file alone and exits 0, saying which file it read."""
    proc = run(["/usr/bin/projectord", "check-config"], env=installed_env(), timeout=60)
    assert proc.returncode == EXIT_OK, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[0] == f"# effective configuration (from {CONFIG})"
    assert 'conninfo = "' in proc.stdout


def test_installed_migrations_and_declared_projections(installed, cluster):
    """The installed binary finds the installed migrations by itself (no
    --sql-dir, no PROJECTORD_SQL_DIR) and they make the schema; the
    installed declared projections load and their statements prepare
    against it (check-config with a reachable database)."""
    name = f"pkg_{os.getpid()}"
    cluster.create_database(name, schema=False)
    try:
        url = f"postgresql://postgres@127.0.0.1:{cluster.port}/{name}"
        proc = run(["/usr/bin/projectord", "migrate"], env=installed_env(PROJECTORD_DATABASE_URL=url))
        assert proc.returncode == EXIT_OK, proc.stdout + proc.stderr
        installed_files = [f for f in os.listdir(f"{DATADIR}/sql") if f.endswith(".sql")]
        installed_files += os.listdir(f"{DATADIR}/sql/repeatable")
        applied = cluster.psql_value(name, "SELECT count(*) FROM public.flyway_schema_history"
                                           " WHERE success")
        assert int(applied) == len(installed_files), (applied, installed_files)
        env = installed_env(PROJECTORD_DATABASE_URL=url, PROJECTORD_PROJECTION_DIR=f"{DATADIR}/projections")
        listing = run(["/usr/bin/projectord", "list"], env=env).stdout
        assert listing.count(f"  declared ({DATADIR}/projections/") == 4, listing
        proc = run(["/usr/bin/projectord", "check-config"], env=env, timeout=60)
        assert proc.returncode == EXIT_OK and proc.stderr == "", proc.stdout + proc.stderr
    finally:
        cluster.drop_database(name)


def test_installed_unit(installed):
    analyze = shutil.which("systemd-analyze")
    # verify with its man page check on: Documentation= names the installed pages.
    proc = run([analyze, "verify", UNIT])
    assert proc.returncode == 0 and (proc.stdout + proc.stderr).strip() == "", proc.stdout + proc.stderr
    s = unit_settings(UNIT)
    assert s["ExecStart"] == ["/usr/bin/projectord run"]
    assert s["EnvironmentFile"] == ["-/etc/projectord/projectord.env"]
    assert s["DynamicUser"] == ["yes"], "a transient user: the package creates none"
    assert s["ConfigurationDirectory"] == ["projectord"]
    proc = run([analyze, "security", "--offline=true", "--no-pager", UNIT])
    m = re.search(r"Overall exposure level for projectord\.service: (\d+(?:\.\d+)?)", proc.stdout)
    assert m and float(m.group(1)) <= MAX_EXPOSURE, proc.stdout


def test_installed_man_pages(installed):
    for page, name in zip(MAN_PAGES, ["projectord", "projectord.conf"]):
        section = page.split(".")[-2]
        assert run(["man", "-w", section, name]).stdout.strip() == page
        proc = run(["man", "--warnings", "-l", page], env=dict(os.environ, MANWIDTH="80"))
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
        assert proc.stdout.lstrip().startswith(name.upper() + "(")


def test_installed_docs(installed):
    with open(f"{DOCDIR}/copyright") as f:
        assert "License: PostgreSQL" in f.read()
    for doc in ("README.md", "CHANGELOG.md", "docs/reference.md"):
        assert os.path.isfile(f"{DOCDIR}/{doc}"), doc
    # The unit's Documentation= links are there to follow.
    for link in re.findall(r"file://(\S+)", open(UNIT).read()):
        assert os.path.isfile(link), link


def test_purge(installed, package):
    """Purging removes every file of the package, the conffile and
    /etc/projectord with it, and leaves nothing installing added."""
    listed = dpkg_listed()
    proc = apt("purge", PACKAGE)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert installed_state() in ("", "unknown ok not-installed")
    left = {p for p in listed if os.path.lexists(p) and not os.path.isdir(p)}
    assert not left, sorted(left)
    assert not os.path.exists("/etc/projectord")
    assert not os.path.exists(DATADIR)
    assert snapshot() - installed["before"] == set()
