"""Operations and packaging: the licence, one version everywhere, the
documents' links, the `cmake --install` layout for two prefixes (binary,
config and unit agree), the systemd unit (systemd-analyze verify and
security), the systemd notification protocol checked against a test
socket, the Dockerfile and docker-compose.yml (docker cannot run here, so
they are parsed and checked), and the environment-only configuration a
container uses, end to end with the real daemon."""

import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from urllib.parse import urlsplit

import pytest
import yaml

import oracle
import schemainfo
from daemon import BIN, EXIT_OK, REPO_ROOT, SLOWDOWN, Daemon, clean_env, run_cli
from eventgen import Command, event, generate_mix
from pgcluster import free_port

UNIT_TEMPLATE = os.path.join(REPO_ROOT, "systemd", "projectord.service.in")
MAX_EXPOSURE = 2.0


def run(argv, timeout=120, **kwargs):
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout, **kwargs)


def systemd_analyze():
    path = shutil.which("systemd-analyze")
    if not path:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    return path


def default_config_path(binary):
    """The default configuration file compiled into binary, as --help shows it."""
    out = run([binary, "--help"]).stdout
    match = re.search(r"(?m)^\s*-c, --config FILE .*\(default (/\S+)\)$", out)
    assert match, out
    return match.group(1)


def project_version():
    with open(os.path.join(REPO_ROOT, "CMakeLists.txt")) as f:
        return re.search(r"project\(projectord\s+VERSION\s+([0-9A-Za-z.+-]+)", f.read()).group(1)


class Install:
    """A staged `cmake --install` (DESTDIR) of the source tree configured
    with one CMAKE_INSTALL_PREFIX; path() maps an installed path into it."""

    def __init__(self, destdir, prefix):
        self.destdir, self.prefix = destdir, prefix

    def path(self, installed):
        return os.path.join(self.destdir, installed.lstrip("/"))

    def files(self):
        """Every installed file, as its path on the target system."""
        return sorted("/" + os.path.relpath(os.path.join(d, f), self.destdir)
                      for d, _, names in os.walk(self.destdir) for f in names)


def build_and_install(workdir, prefix):
    """Configure and build the source tree (the binary alone, no tests) with
    this prefix, then install it into a DESTDIR, as packagers do."""
    build, destdir = os.path.join(workdir, "build"), os.path.join(workdir, "root")
    proc = run(["cmake", "-S", REPO_ROOT, "-B", build, "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
                "-DPROJECTORD_TESTS=OFF", f"-DCMAKE_INSTALL_PREFIX={prefix}"])
    assert proc.returncode == 0, proc.stdout
    proc = run(["cmake", "--build", build, "-j2"], timeout=1200)
    assert proc.returncode == 0, proc.stdout
    proc = run(["cmake", "--install", build], env=dict(os.environ, DESTDIR=destdir))
    assert proc.returncode == 0, proc.stdout
    return Install(destdir, prefix)


@pytest.fixture(scope="module")
def install(tmp_path_factory):
    """install(prefix): the tree built and installed with that prefix, once
    per module (each is a build of its own: the prefix is compiled in)."""
    done = {}

    def get(prefix):
        if prefix not in done:
            done[prefix] = build_and_install(str(tmp_path_factory.mktemp("install")), prefix)
        return done[prefix]
    return get


@pytest.fixture(scope="module")
def installed_unit(install):
    """The unit as a --prefix /usr install (a package) puts it."""
    return install("/usr").path("/usr/lib/systemd/system/projectord.service")


# --------------------------------------------------------------------------
# Licence, changelog, one version
# --------------------------------------------------------------------------

def changelog_releases():
    """[(version, date)] of CHANGELOG.md's headings, newest first; the
    Unreleased section has no date."""
    with open(os.path.join(REPO_ROOT, "CHANGELOG.md")) as f:
        return re.findall(r"(?m)^## \[([^\]]+)\](?: - (\d{4}-\d{2}-\d{2}))?\s*$", f.read())


def test_one_version():
    """The binary, CMake's project(), the latest release of CHANGELOG.md and
    the reference say the same version."""
    version = project_version()
    assert run([BIN, "--version"]).stdout.split() == ["projectord", version]
    releases = changelog_releases()
    assert releases and releases[0] == ("Unreleased", ""), releases
    released = [(v, d) for v, d in releases[1:]]
    assert released and all(d for _, d in released), "every release has a date"
    assert released[0][0] == version, f"CHANGELOG.md's latest release is {released[0][0]}"
    with open(os.path.join(REPO_ROOT, "docs", "reference.md")) as f:
        assert re.search(rf"\bprojectord {re.escape(version)}\b", f.read())
    # The Debian package's version (docs/packaging.md): debian/changelog's top entry.
    with open(os.path.join(REPO_ROOT, "debian", "changelog")) as f:
        assert re.match(rf"projectord \({re.escape(version)}\) ", f.readline())


def test_license():
    with open(os.path.join(REPO_ROOT, "LICENSE")) as f:
        text = f.read()
    assert text.startswith("PostgreSQL License\n")
    assert "Copyright (c) 2026, the projectord developers" in text


def markdown_links(path):
    """The relative link targets in a Markdown file: [(file or "", anchor or "")]."""
    with open(path) as f:
        text = f.read()
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    return [tuple(t.partition("#")[::2]) for t in targets if not re.match(r"[a-z]+:", t)]


def markdown_anchors(path):
    """The anchors of a Markdown file's headings, as GitHub makes them."""
    with open(path) as f:
        text = re.sub(r"(?ms)^```.*?^```", "", f.read())
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"(?m)^#+ (.+)$", text)}


@pytest.mark.parametrize("doc", ["README.md", "docs/reference.md", "CHANGELOG.md", "docs/monitoring.md"])
def test_documents_link_only_what_the_repository_has(doc):
    """The README once linked a contract that was not in the repository:
    every relative link of the documents names a file that is, and a
    heading of it."""
    path = os.path.join(REPO_ROOT, doc)
    for target, anchor in markdown_links(path):
        linked = os.path.normpath(os.path.join(os.path.dirname(path), target)) if target else path
        assert os.path.exists(linked), f"{doc}: {target}"
        if anchor:
            assert anchor in markdown_anchors(linked), f"{doc}: {target}#{anchor}"
    with open(path) as f:
        assert "SPEC.md" not in f.read()


# --------------------------------------------------------------------------
# cmake --install and the unit file
# --------------------------------------------------------------------------

@pytest.mark.parametrize("prefix, config", [
    ("/usr", "/etc/projectord/projectord.conf"),
    ("/usr/local", "/usr/local/etc/projectord/projectord.conf"),
])
def test_install_binary_config_and_unit_agree(install, prefix, config):
    """The binary's default config file is where the install put the
    config (for --prefix /usr: /etc, not /usr/etc), and the unit runs the
    installed binary and reads that directory."""
    inst = install(prefix)
    binary = f"{prefix}/bin/projectord"
    assert default_config_path(inst.path(binary)) == config
    datadir = f"{prefix}/share/projectord/"  # the declared projections are .conf files too
    assert [f for f in inst.files() if f.endswith(".conf") and not f.startswith(datadir)] == [config]
    unit = unit_settings(inst.path(f"{prefix}/lib/systemd/system/projectord.service"))
    assert unit["ExecStart"] == [f"{binary} run"]
    assert os.access(inst.path(binary), os.X_OK)
    assert unit["EnvironmentFile"] == [f"-{os.path.dirname(config)}/projectord.env"]
    want_confdir = ["projectord"] if config.startswith("/etc/projectord/") else []
    assert unit.get("ConfigurationDirectory", []) == want_confdir
    outside = [f for f in inst.files()
               if not f.startswith(prefix + "/") and not f.startswith(os.path.dirname(config) + "/")]
    assert outside == []


def test_install_layout(install):
    inst = install("/usr")
    binary = inst.path("/usr/bin/projectord")
    assert os.access(binary, os.X_OK)
    assert run([binary, "--version"]).stdout.split() == ["projectord", project_version()]
    assert os.path.isfile(inst.path("/etc/projectord/projectord.conf"))
    want_sql = sorted(os.path.basename(p) for p in glob.glob(os.path.join(REPO_ROOT, "sql", "V*.sql"))
                      + ["adopt", "repeatable", "examples.list"])
    got_sql = sorted(os.listdir(inst.path("/usr/share/projectord/sql")))
    assert got_sql == want_sql and want_sql
    want_r = sorted(os.path.basename(p) for p in glob.glob(os.path.join(REPO_ROOT, "sql", "repeatable", "R__*.sql")))
    assert want_r and sorted(os.listdir(inst.path("/usr/share/projectord/sql/repeatable"))) == want_r
    # `projectord migrate` adopts an original event store with this one (sql/adopt/).
    assert os.listdir(inst.path("/usr/share/projectord/sql/adopt")) == ["original_event_store.sql"]
    # ... and finds the installed directory by itself.
    assert "(default /usr/share/projectord/sql)" in run([binary, "--help"]).stdout
    with open(inst.path("/usr/lib/systemd/system/projectord.service")) as f:
        unit = f.read()
    assert not re.search(r"@[A-Za-z0-9_]+@", unit), "a template variable left in the unit"
    # The declared projections, loadable as they are (projection_dir).
    declared = sorted(os.path.basename(p) for p in
                      glob.glob(os.path.join(REPO_ROOT, "projections", "declared", "*.conf")))
    assert declared and sorted(os.listdir(inst.path("/usr/share/projectord/projections"))) == declared
    assert sorted(os.listdir(inst.path("/usr/share/projectord/examples"))) == sorted(
        os.listdir(os.path.join(REPO_ROOT, "examples", "declared")))
    # The man pages, with the install's paths in them.
    for page in ("/usr/share/man/man1/projectord.1", "/usr/share/man/man5/projectord.conf.5"):
        with open(inst.path(page)) as f:
            text = f.read()
        assert "/etc/projectord/projectord.conf" in text and not re.search(r"@[A-Za-z0-9_]+@", text)
    docdir = "/usr/share/doc/projectord"
    want_docs = {f"{docdir}/{f}" for f in ("README.md", "CHANGELOG.md", "LICENSE")}
    want_docs |= {f"{docdir}/docs/{f}" for f in os.listdir(os.path.join(REPO_ROOT, "docs"))}
    assert {f for f in inst.files() if f.startswith(docdir + "/")} == want_docs
    assert f"{docdir}/docs/reference.md" in want_docs


def unit_settings(path):
    """{key: [values]} of the unit's [Service] section."""
    settings, section = {}, None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("["):
                section = line
            elif section == "[Service]":
                key, _, value = line.partition("=")
                settings.setdefault(key, []).append(value)
    return settings


def test_unit_file_settings(installed_unit):
    s = unit_settings(installed_unit)
    assert s["Type"] == ["notify"]  # notify-reload needs systemd 253; Debian 12 has 252
    assert s["Restart"] == ["on-failure"]
    assert re.fullmatch(r"/bin/kill -HUP \$MAINPID", s["ExecReload"][0])
    assert s["WatchdogSec"] and s["NotifyAccess"] == ["main"]
    assert s["ExecStart"][0].split()[-1] == "run" and " -c " not in s["ExecStart"][0]
    assert s["DynamicUser"] == ["yes"] and s["CapabilityBoundingSet"] == [""]


def test_unit_file_verifies(install, installed_unit, tmp_path):
    """systemd-analyze verify on the installed unit, its ExecStart pointed at
    the staged binary (verify checks that it exists). Unknown keys are
    only warnings, so any output at all fails the test."""
    analyze = systemd_analyze()
    with open(installed_unit) as f:
        text = f.read()
    binary = install("/usr").path("/usr/bin/projectord")
    text, n = re.subn(r"(?m)^ExecStart=/usr/bin/projectord\b", f"ExecStart={binary}", text)
    assert n == 1
    unit = tmp_path / "projectord.service"
    unit.write_text(text)
    proc = run([analyze, "verify", "--man=no", str(unit)])
    assert proc.returncode == 0 and proc.stdout.strip() == "", proc.stdout


def test_unit_file_exposure(installed_unit):
    analyze = systemd_analyze()
    proc = run([analyze, "security", "--offline=true", "--no-pager", installed_unit])
    match = re.search(r"Overall exposure level for projectord\.service: (\d+(?:\.\d+)?)", proc.stdout)
    assert match, proc.stdout
    exposure = float(match.group(1))
    assert exposure <= MAX_EXPOSURE, proc.stdout


# --------------------------------------------------------------------------
# The notification protocol (sd_notify(3)) against a test socket
# --------------------------------------------------------------------------

class NotifySocket:
    """The service manager's end: a datagram socket the daemon is told
    about through NOTIFY_SOCKET; records (time, {VAR: value}) per datagram."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.messages = []

    def close(self):
        self.sock.close()

    def env(self, **extra):
        return {"NOTIFY_SOCKET": self.path, **extra}

    def _receive(self, until):
        self.sock.settimeout(max(until - time.monotonic(), 0.001))
        try:
            data = self.sock.recv(4096).decode()
        except socket.timeout:
            return None
        fields = dict(line.split("=", 1) for line in data.split("\n") if line)
        self.messages.append((time.monotonic(), fields))
        return fields

    def wait_for(self, key, match=lambda value: True, timeout=10):
        """The first message from now on with key set to a matching value."""
        until = time.monotonic() + timeout * SLOWDOWN
        while time.monotonic() < until:
            fields = self._receive(until)
            if fields is not None and key in fields and match(fields[key]):
                return fields
        raise AssertionError(f"no {key}= within {timeout}s; got {self.messages}")

    def collect(self, seconds):
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            self._receive(until)

    def times(self, key):
        return [t for t, fields in self.messages if key in fields]

    def values(self, key):
        return [fields[key] for _, fields in self.messages if key in fields]


@pytest.fixture
def notify_socket(workdir):
    ns = NotifySocket(os.path.join(workdir, "notify.sock"))
    yield ns
    ns.close()


def daemon_sessions(db):
    return db.scalar("SELECT count(*) FROM pg_stat_activity"
                     " WHERE datname = current_database() AND application_name LIKE 'projectord/%%'")


def stop_and_expect_stopping(daemon, ns):
    daemon.kill(signal.SIGTERM)
    ns.wait_for("STOPPING", lambda v: v == "1")
    assert daemon.wait(timeout=40) == EXIT_OK
    ns.collect(0.2)  # what was sent after STOPPING=1


def test_notify_protocol(db, start_daemon, notify_socket):
    """READY=1 once, after the daemon connected; STATUS= summaries;
    WATCHDOG=1 every WATCHDOG_USEC/2; STOPPING=1 on SIGTERM. WATCHDOG_PID is
    left unset (the daemon's pid is not known before it starts): any pid
    then takes the watchdog, as sd_watchdog_enabled(3) says."""
    ns = notify_socket
    daemon = start_daemon(env=ns.env(WATCHDOG_USEC="2000000"))
    ns.wait_for("READY", lambda v: v == "1", timeout=15)
    assert daemon_sessions(db) >= 1, "READY=1 before any connection to the database"
    daemon.wait_started()

    ns.wait_for("STATUS", lambda v: v.startswith("running") and "4 owned" in v)
    ns.collect(3.5 * SLOWDOWN)
    beats = ns.times("WATCHDOG")
    assert len(beats) >= 3, ns.messages
    gaps = [b - a for a, b in zip(beats, beats[1:])]
    # Never late. Never early either, on a normal build; when a slow build
    # (valgrind, PROJECTORD_TEST_SLOWDOWN > 1) stalls the loop, a beat comes
    # late and libev keeps the schedule, so the next gap shrinks: there the
    # beats must only come every second on average, not faster.
    assert all(g <= 1.5 * SLOWDOWN for g in gaps), gaps
    if SLOWDOWN == 1:
        assert all(g >= 0.5 for g in gaps), gaps
    else:
        assert sum(gaps) / len(gaps) >= 0.75, gaps
    assert all(v == "1" for v in ns.values("WATCHDOG"))

    stop_and_expect_stopping(daemon, ns)
    assert ns.values("READY") == ["1"]
    for status in ns.values("STATUS"):
        assert "\n" not in status and re.match(r"(connecting|running|stopping): ", status), status
    assert ns.values("STATUS")[-1].startswith("stopping")


def test_notify_no_ready_while_the_database_is_unreachable(start_daemon, notify_socket):
    ns = notify_socket
    closed = f"host=127.0.0.1 port={free_port()} dbname=nothing user=postgres"
    daemon = start_daemon(conninfo=closed, env=ns.env(WATCHDOG_USEC="2000000"))
    ns.collect(3.0 * SLOWDOWN)
    assert "READY" not in [k for _, fields in ns.messages for k in fields], ns.messages
    assert len(ns.times("WATCHDOG")) >= 2, "the watchdog must be fed while connecting"
    assert ns.values("STATUS") and ns.values("STATUS")[0].startswith("connecting")
    stop_and_expect_stopping(daemon, ns)


def test_notify_watchdog_pid_of_another_process(db, start_daemon, notify_socket):
    """WATCHDOG_PID naming another process: that watchdog is not ours, so no
    WATCHDOG=1; the rest of the protocol goes on."""
    ns = notify_socket
    daemon = start_daemon(env=ns.env(WATCHDOG_USEC="200000", WATCHDOG_PID="1"))
    ns.wait_for("READY", lambda v: v == "1", timeout=15)
    ns.collect(1.0)
    assert ns.times("WATCHDOG") == []
    stop_and_expect_stopping(daemon, ns)


# --------------------------------------------------------------------------
# Dockerfile and docker-compose.yml (parsed: no docker engine here)
# --------------------------------------------------------------------------

def dockerfile_stages(path=os.path.join(REPO_ROOT, "Dockerfile")):
    """[(FROM arguments, [(INSTRUCTION, arguments)])] per stage."""
    with open(path) as f:
        text = re.sub(r"\\\n", " ", "".join(l for l in f if not l.lstrip().startswith("#")))
    stages = []
    for line in text.splitlines():
        if not line.strip():
            continue
        word, _, args = line.strip().partition(" ")
        word, args = word.upper(), re.sub(r"\s+", " ", args.strip())
        if word == "FROM":
            stages.append((args, []))
        else:
            assert stages, f"{word} before FROM"
            stages[-1][1].append((word, args))
    return stages


def apt_packages(instructions):
    packages = set()
    for word, args in instructions:
        for m in re.finditer(r"apt-get install ([^&;|]*)", args):
            packages |= {p for p in m.group(1).split() if not p.startswith("-")}
    return packages


def exec_form(args):
    """A JSON-array instruction argument ("exec form") as a list."""
    return json.loads(args)


def library_owners(binary):
    """{shared library the binary needs: Debian packages that ship a file of
    that name}; sanitizer runtimes (test builds only) left out."""
    if not shutil.which("dpkg") or not shutil.which("readelf"):
        pytest.skip("needs dpkg and readelf (Debian)")
    out = run(["readelf", "-d", binary]).stdout
    owners = {}
    for lib in re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", out):
        if not re.match(r"lib(asan|ubsan|clang_rt)", lib):
            listing = run(["dpkg", "-S", f"*/{lib}"]).stdout
            owners[lib] = {p.split(":")[0] for line in listing.splitlines()
                           for p in line.split(": ")[0].split(", ")}
    return owners


def test_dockerfile():
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage: a build stage and a runtime stage"
    assert all(frm.split()[0] == "debian:bookworm-slim" for frm, _ in stages)
    (build_from, build), (_, runtime) = stages[0], stages[-1]
    build_name = build_from.split()[-1]
    assert re.search(r"\bAS \w+$", build_from, re.I)
    assert {"cmake", "pkg-config", "libpq-dev", "libev-dev", "libconfig-dev",
            "libjansson-dev"} <= apt_packages(build)
    for word, args in build:
        if word == "COPY" and not args.startswith("--"):
            for src in args.split()[:-1]:
                assert os.path.exists(os.path.join(REPO_ROOT, src)), f"COPY {src}: no such path"

    rt_packages = apt_packages(runtime)
    for lib, owners in library_owners(BIN).items():  # libc6 is in every image
        assert owners & (rt_packages | {"libc6"}), f"{lib} ({', '.join(owners)}) is not installed"
    assert {"libpq5", "libev4", "libconfig9", "libjansson4", "ca-certificates"} <= rt_packages
    assert not any(p.endswith("-dev") or p in ("build-essential", "cmake") for p in rt_packages)
    for word, args in runtime:
        if word == "COPY":
            assert args.startswith(f"--from={build_name} "), f"runtime COPY not from the build: {args}"
            assert "/etc" not in args, "no config file in the image: environment only"

    last = {word: args for word, args in runtime}
    assert "USER" in last and last["USER"].split(":")[0] not in ("root", "0")
    check = re.sub(r"^(--\S+ )*CMD ", "", last["HEALTHCHECK"])
    assert exec_form(check) == ["projectord", "status", "--check"]
    assert exec_form(last["ENTRYPOINT"]) == ["projectord"]
    assert exec_form(last["CMD"]) == ["run"]


def environment(service):
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def compose_services():
    with open(os.path.join(REPO_ROOT, "docker-compose.yml")) as f:
        return yaml.safe_load(f)["services"]


def test_docker_compose():
    services = compose_services()
    pg, pd = services["postgres"], services["projectord"]

    assert pg["image"].startswith("postgres:")
    pg_env = environment(pg)
    db, user, password = pg_env["POSTGRES_DB"], pg_env["POSTGRES_USER"], pg_env["POSTGRES_PASSWORD"]
    test = pg["healthcheck"]["test"]
    test = test if isinstance(test, list) else ["CMD-SHELL", test]
    assert "pg_isready" in " ".join(test)

    assert "build" in pd or "image" in pd
    pd_env = environment(pd)
    url = urlsplit(pd_env["PROJECTORD_DATABASE_URL"])
    assert url.scheme in ("postgres", "postgresql")
    assert (url.hostname, url.path) == ("postgres", f"/{db}")
    # The daemon connects as V007's least-privilege role, not as the superuser (issue 19).
    assert url.username == "projectord" and url.username != user
    assert "PROJECTORD_LOG_LEVEL" in pd_env
    # Environment only: no config file mounted, no -c.
    assert not any("/etc/projectord" in str(v) for v in pd.get("volumes", []))
    assert "-c" not in str(pd.get("command", "")).split()
    assert pd["depends_on"]["postgres"]["condition"] == "service_healthy"
    # The schema comes from `projectord migrate` (issue 19), before the daemon starts, run
    # as the database's owner (the migrations create the schemas and the role).
    mig = services["migrate"]
    assert mig.get("build") == pd.get("build") and mig.get("image") == pd.get("image")
    assert mig["command"] == ["migrate"]
    mig_url = urlsplit(environment(mig)["PROJECTORD_DATABASE_URL"])
    assert (mig_url.hostname, mig_url.username, mig_url.password, mig_url.path) == \
        ("postgres", user, password, f"/{db}")
    assert mig["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert pd["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    # The role's password (V007 sets none), set by the owner after the migrations, before
    # the daemon: the one the daemon's URL carries.
    role = services["daemon-role"]
    assert role["image"] == pg["image"]
    assert role["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert pd["depends_on"]["daemon-role"]["condition"] == "service_completed_successfully"
    sql = role["command"][-1]
    assert role["command"][:3] == ["psql", "-v", "ON_ERROR_STOP=1"]
    assert sql == f"ALTER ROLE projectord PASSWORD '{url.password}'", sql
    role_env = environment(role)
    assert (role_env["PGHOST"], role_env["PGUSER"], role_env["PGPASSWORD"], role_env["PGDATABASE"]) \
        == ("postgres", user, password, db)
    # The metrics port is published, and the healthcheck asks /readyz on it.
    listen = pd_env["PROJECTORD_METRICS_LISTEN"]
    host, _, port = listen.rpartition(":")
    assert host in ("0.0.0.0", "[::]"), "reachable from outside the container"
    assert any(str(p).split(":")[-1] == port for p in pd["ports"]), pd["ports"]
    check = compose_healthcheck(pd)
    assert f"/dev/tcp/127.0.0.1/{port}" in check and "GET /readyz" in check


def compose_healthcheck(service):
    """The shell command of a compose healthcheck [CMD, bash, -c, COMMAND]."""
    test = service["healthcheck"]["test"]
    assert test[:3] == ["CMD", "bash", "-c"], test
    return test[3]


def test_docker_compose_healthcheck_judges_the_instance(db, start_daemon):
    """The compose file's healthcheck command, run with bash against a real
    daemon whose metrics listen on a free port: healthy while the
    projections it owns are, unhealthy once one of them fails."""
    pd = compose_services()["projectord"]
    port = free_port()
    compose_port = environment(pd)["PROJECTORD_METRICS_LISTEN"].rpartition(":")[2]
    check = compose_healthcheck(pd).replace(f"/dev/tcp/127.0.0.1/{compose_port}",
                                            f"/dev/tcp/127.0.0.1/{port}")
    probe = lambda: run(["bash", "-c", check], timeout=10).returncode  # noqa: E731
    daemon = start_daemon(poll_interval_ms=200, env={"PROJECTORD_METRICS_LISTEN": f"127.0.0.1:{port}"})
    db.append_all(generate_mix(seed=19, n_events=100, days=1))
    daemon.wait_caught_up(timeout=60)
    assert probe() == 0
    db.append([Command("User", uuid.uuid4(), 0, [event("UserRegistered", {
        "email": "x@example.org", "first_name": "A", "last_name": "B"})]) for _ in range(2)])
    deadline = time.monotonic() + 30
    while probe() == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert probe() != 0, "a failed projection owned here makes the instance unhealthy"


def test_docker_compose_migrate_makes_the_schema(cluster):
    """The compose file's `migrate` service, run against a test cluster (its
    URL pointed there): the database ends with the schema the migrations
    give, and the next start of the service is a no-op."""
    with open(os.path.join(REPO_ROOT, "docker-compose.yml")) as f:
        mig = yaml.safe_load(f)["services"]["migrate"]
    name = f"compose_{os.getpid()}"
    cluster.create_database(name, schema=False)
    url = urlsplit(environment(mig)["PROJECTORD_DATABASE_URL"])
    env = clean_env(PROJECTORD_DATABASE_URL=f"{url.scheme}://postgres@127.0.0.1:{cluster.port}/{name}",
                    PROJECTORD_SQL_DIR=os.path.join(REPO_ROOT, "sql"))  # the image's, installed
    try:
        for _ in range(2):
            proc = run_cli(mig["command"], env=env)
            assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "nothing to apply" in proc.stdout
        fresh = f"compose_fresh_{os.getpid()}"
        cluster.create_database(fresh)
        try:
            want = schemainfo.catalog(cluster.conninfo(fresh))
        finally:
            cluster.drop_database(fresh)
        assert schemainfo.differences(want, schemainfo.catalog(cluster.conninfo(name))) == []
    finally:
        cluster.drop_database(name)


# --------------------------------------------------------------------------
# Environment-only configuration, end to end (what the container does)
# --------------------------------------------------------------------------

class EnvOnlyDaemon(Daemon):
    """`projectord run` with no -c: the default path, absent here, and the
    environment only; wrapper: a command to run it under (strace)."""

    wrapper = []

    def start(self):
        self.starts += 1
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(self.wrapper + [BIN, "run"], stdout=log,
                                         stderr=subprocess.STDOUT, env=clean_env(**self.env))
        return self

    def kill(self, sig=signal.SIGTERM):
        """Signal projectord itself, also under the wrapper (its child)."""
        pid = self.proc.pid
        if self.wrapper:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                pid = int(f.read().split()[0])
        os.kill(pid, sig)


def env_only(db):
    return {"PROJECTORD_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{db.cluster.port}/{db.name}",
            "PROJECTORD_LOG_LEVEL": "debug"}


def test_environment_only_configuration(db, workdir):
    default_config = default_config_path(BIN)
    if os.path.exists(default_config):
        pytest.skip(f"{default_config} exists on this machine")
    env = env_only(db)
    proc = run_cli(["check-config"], env=clean_env(**env))
    assert proc.returncode == EXIT_OK and "no file" in proc.stdout, proc.stdout + proc.stderr

    daemon = EnvOnlyDaemon(db.conninfo, workdir, name="envonly", env=env)
    try:
        daemon.start()
        db.append_all(generate_mix(seed=7, n_events=300))
        daemon.wait_caught_up()
        with db.connect() as conn:
            oracle.assert_read_model_matches_fold(conn)
        proc = run_cli(["status", "--check"], env=clean_env(**env))
        assert proc.returncode == EXIT_OK, proc.stdout + proc.stderr
        assert re.search(r"\.c:\d+: ", daemon.log(tail=100000)), "PROJECTORD_LOG_LEVEL=debug ignored"
        assert daemon.stop() == EXIT_OK
    finally:
        daemon.close()


# --------------------------------------------------------------------------
# The unit's SystemCallFilter lets the daemon do its work
# --------------------------------------------------------------------------

def syscall_set(analyze, names):
    """The system calls of names (groups like @system-service expanded)."""
    calls = set()
    for name in names:
        if not name.startswith("@"):
            calls.add(name)
            continue
        out = run([analyze, "syscall-filter", "--no-pager", name]).stdout.splitlines()[1:]
        entries = [l.strip() for l in out if l.strip() and not l.strip().startswith("#")]
        calls |= syscall_set(analyze, entries)
    return calls


def test_syscalls_allowed_by_the_unit_filter(db, workdir):
    """No systemd to run the unit here: run the daemon under strace through
    start, catch-up, live events, SIGHUP and SIGTERM, and check every system
    call it made against the unit's SystemCallFilter= lines."""
    analyze = systemd_analyze()
    if not shutil.which("strace"):
        pytest.skip("strace is not installed")
    if re.search(r"lib(asan|ubsan)", run(["readelf", "-d", BIN]).stdout):
        pytest.skip("a sanitizer runtime makes system calls of its own")
    allowed = set()
    for line in unit_settings(UNIT_TEMPLATE)["SystemCallFilter"]:
        if line.startswith("~"):
            allowed -= syscall_set(analyze, line[1:].split())
        else:
            allowed |= syscall_set(analyze, line.split())

    trace = os.path.join(workdir, "strace.out")
    commands = generate_mix(seed=11, n_events=250)
    db.append_all(commands[:-20])
    port = free_port()  # scrapes too: /metrics reads /proc/self (process_*)
    env = dict(env_only(db), PROJECTORD_METRICS_LISTEN=f"127.0.0.1:{port}")
    daemon = EnvOnlyDaemon(db.conninfo, workdir, name="straced", env=env)
    daemon.wrapper = ["strace", "-f", "-qq", "-o", trace]
    try:
        daemon.start()
        daemon.wait_caught_up(timeout=60)
        db.append(commands[-20:])  # live, one by one
        daemon.wait_caught_up(timeout=60)
        for path in ("/metrics", "/healthz", "/readyz"):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
                assert resp.status == 200, path
        daemon.kill(signal.SIGHUP)
        time.sleep(0.5)
        assert daemon.stop(timeout=40) == EXIT_OK
    finally:
        daemon.close()
    with open(trace) as f:
        used = {m.group(1) for m in re.finditer(r"(?m)^\d+\s+([a-z0-9_]+)\(", f.read())}
    assert {"connect", "epoll_wait", "sendto"} <= used, "strace saw nothing useful"
    assert used - {"execve"} <= allowed, f"blocked by SystemCallFilter: {sorted(used - allowed)}"
