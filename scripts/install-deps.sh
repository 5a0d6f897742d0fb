#!/usr/bin/env bash
# Install what projectord needs to build and test on Debian 12 (bookworm).
# Idempotent and fast on a ready machine: apt runs only when a package is
# missing. Without root, prints what to install and exits 1.
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  libpq-dev libev-dev libconfig-dev libjansson-dev libcmocka-dev
  # The server (postgresql-15 provides postgresql-contrib-15: uuid-ossp,
  # pgcrypto) and the client tools the tests use (psql).
  postgresql-15 postgresql-client-15
  python3 python3-psycopg python3-pytest python3-yaml
  # systemd-analyze and strace, for the unit file checks (nothing is started).
  systemd strace
  # promtool, for the alert rules in deploy/prometheus (test_monitoring.py);
  # the package's server is not started by the tests.
  prometheus
  # Sanitizer and fuzzing builds (libFuzzer's runtime is in libclang-rt).
  clang libclang-rt-14-dev
  # The Debian package (debian/, docs/packaging.md) and its checks: build,
  # lintian, the man pages (man, groff).
  dpkg-dev debhelper fakeroot lintian man-db groff-base
)

installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

missing=()
for p in "${packages[@]}"; do
  installed "$p" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: ${missing[*]}" >&2
  echo "install-deps: run as root, or: sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends "${missing[@]}"
