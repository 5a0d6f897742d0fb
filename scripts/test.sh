#!/usr/bin/env bash
# The full test suite: unit and integration tests (ctest) on a normal build,
# then again on an ASan+UBSan build.
#   scripts/test.sh           both passes, then each fuzz target for 10 s
#   scripts/test.sh --quick   the normal build only
# Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "test.sh: unknown argument '$arg' (--quick)" >&2; exit 64 ;;
  esac
done

# ctest runs as many tests at once as there are cores (at least 2: most wait on PostgreSQL)
jobs=${JOBS:-$(( $(nproc) > 2 ? $(nproc) : 2 ))}

scripts/install-deps.sh

# The integration tests need the Debian python3 (psycopg, pytest), not a
# pyenv one that may come first on PATH; tests/CMakeLists.txt prefers it.
# CTEST_EXCLUDE: a regex of tests ctest leaves out of the pass.
run_pass() {
  local dir=$1; shift
  echo "=== $dir: configure and build"
  cmake -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@"
  cmake --build "$dir" -j"$jobs"
  echo "=== $dir: ctest"
  ctest --test-dir "$dir" --output-on-failure -j"$jobs" ${CTEST_EXCLUDE:+-E "$CTEST_EXCLUDE"}
}

run_pass build

if [ "$quick" -eq 0 ]; then
  # Sanitized binaries are slower: the integration tests stretch their
  # deadlines by PROJECTORD_TEST_SLOWDOWN. test_packaging builds and installs
  # the tree twice more and runs the binary only for --version and
  # check-config: the plain pass covers it, and the CI's time is kept for
  # the tests that run the daemon; test_debian_package builds, installs and
  # purges the Debian package, whose binary is not the sanitized one;
  # test_fifth_projection builds the tree
  # again and reruns tests of this pass with a fifth projection. The declared forms' runs of the projection
  # tests (integration.declared.*) repeat the compiled forms' under the same
  # code; test_declared.py and the unit tests run the declared code here.
  # test_operations_seeds replays fixed schedules the plain pass runs too
  # (the random schedule still runs here), and test_schema, test_migrate
  # and test_no_examples are SQL applied and compared, with little of the
  # daemon's code in it (migrate's C runs in the unit tests and the fuzz
  # targets too).
  ASAN_OPTIONS=detect_leaks=1 \
  LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp" \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  PROJECTORD_TEST_SLOWDOWN=3 \
  CTEST_EXCLUDE='integration[.](test_packaging$|test_debian_package$|test_fifth_projection$|test_no_examples_build$|test_no_examples$|test_migrate$|test_operations_seeds$|test_schema$|declared[.])' \
    run_pass build-asan -DPROJECTORD_SANITIZE=ON
fi

if [ "$quick" -eq 0 ]; then
  # 10 s a target keeps the whole suite under 20 minutes on 2 cores; run
  # FUZZ_SECONDS=600 scripts/fuzz.sh for a real session.
  scripts/fuzz.sh "${FUZZ_SECONDS:-10}"
fi

echo "=== all tests passed"
