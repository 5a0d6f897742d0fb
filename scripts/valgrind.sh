#!/usr/bin/env bash
# The test suite under valgrind memcheck (issue 5): a plain -O1 -g build in
# build-vg/, the unit tests run under memcheck, then the integration tests
# with every projectord process they start wrapped in valgrind
# (PROJECTORD_WRAPPER, tests/integration/daemon.py) and their deadlines
# stretched (PROJECTORD_TEST_SLOWDOWN). Fails when a test fails, or when
# valgrind reports any memory error or a definite leak in any projectord
# process (each process logs to build-vg/valgrind/vg.PID.log; with -q a
# clean process leaves an empty log, so every non-empty log is a finding).
#
#   scripts/valgrind.sh                 unit tests + every integration test file
#   scripts/valgrind.sh test_cli.py ... only these integration files (no unit tests)
#
# Environment: JOBS (integration files run in parallel, default 2),
# VALGRIND_SLOWDOWN (deadline factor, default 10), PROJECTORD_FAULTS=full
# (the fault suite's full counts; slow under valgrind).
# Not part of scripts/test.sh: the whole suite takes far longer than the CI
# budget (see docs/reliability.md for the last run and its duration).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
dir=build-vg
logs=$repo/$dir/valgrind
jobs=${JOBS:-2}
slowdown=${VALGRIND_SLOWDOWN:-10}
python=/usr/bin/python3
[ -x "$python" ] || python=python3

command -v valgrind >/dev/null || { echo "valgrind.sh: valgrind is not installed (apt-get install valgrind)" >&2; exit 69; }

files=()
for arg in "$@"; do
  case "$arg" in
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    -*) echo "valgrind.sh: unknown option '$arg'" >&2; exit 64 ;;
    */*) files+=("$arg") ;;
    *) files+=("tests/integration/$arg") ;;
  esac
done
run_unit=0
if [ ${#files[@]} -eq 0 ]; then
  run_unit=1
  files=(tests/integration/test_*.py)
fi
for f in "${files[@]}"; do
  [ -f "$f" ] || { echo "valgrind.sh: no such test file: $f" >&2; exit 64; }
done

echo "=== $dir: configure and build (-O1 -g, no sanitizers)"
cmake -B "$dir" -DCMAKE_BUILD_TYPE=None -DCMAKE_C_FLAGS="-O1 -g -fno-omit-frame-pointer" \
  -DPROJECTORD_SANITIZE=OFF >/dev/null
cmake --build "$dir" -j"$jobs" >/dev/null

rm -rf "$logs"
mkdir -p "$logs"
# Some tests run projectord as `nobody` (an unreadable config file); its
# valgrind must be able to write its log too.
chmod 1777 "$logs"
# -q: only errors and definite leak records are written, so a clean
# process leaves an empty log. Leaks count as errors (exit 99).
vg=(valgrind -q --tool=memcheck --leak-check=full --show-leak-kinds=definite
    --errors-for-leak-kinds=definite --error-exitcode=99 --num-callers=30
    --suppressions="$repo/tests/valgrind.supp")
started=$(date +%s)
failed=()

if [ "$run_unit" -eq 1 ]; then
  echo "=== unit tests under memcheck"
  for t in "$dir"/tests/test_*; do
    [ -x "$t" ] || continue
    name=$(basename "$t")
    if ! "${vg[@]}" --log-file="$logs/unit.$name.%p.log" "$t" >"$logs/unit.$name.out" 2>&1; then
      failed+=("unit $name (see $logs/unit.$name.out)")
    fi
  done
fi

echo "=== ${#files[@]} integration test file(s) under memcheck, $jobs at a time, slowdown $slowdown"
export PROJECTORD_BIN=$repo/$dir/projectord
export PROJECTORD_SQL_DIR=$repo/sql
export PROJECTORD_TEST_SLOWDOWN=$slowdown
export PROJECTORD_WRAPPER="${vg[*]} --log-file=$logs/vg.%p.log"
run_file() {
  local f=$1 name
  name=$(basename "$f" .py)
  local t0=$SECONDS rc=0
  "$python" -m pytest -q -p no:cacheprovider "$f" >"$logs/$name.out" 2>&1 || rc=$?
  echo "$rc" >"$logs/$name.rc"
  echo "--- $name: exit $rc after $((SECONDS - t0))s"
}
running=0
for f in "${files[@]}"; do
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
  run_file "$f" &
  running=$((running + 1))
done
wait || true
for f in "${files[@]}"; do
  name=$(basename "$f" .py)
  rc=$(cat "$logs/$name.rc" 2>/dev/null || echo missing)
  if [ "$rc" != 0 ]; then
    failed+=("$name: pytest exit $rc (see $logs/$name.out)")
    tail -n 30 "$logs/$name.out" || true
  fi
done

echo "=== valgrind findings"
processes=$(find "$logs" -name '*.log' | wc -l)
dirty=$(find "$logs" -name '*.log' -size +0 | sort)
if [ -n "$dirty" ]; then
  for log in $dirty; do
    echo "--- $log"
    head -n 60 "$log"
  done
  failed+=("valgrind reported errors or definite leaks in $(echo "$dirty" | wc -l) of $processes processes")
fi
echo "$processes projectord processes ran under memcheck in $(( $(date +%s) - started ))s"

if [ ${#failed[@]} -gt 0 ]; then
  printf 'FAILED: %s\n' "${failed[@]}"
  exit 1
fi
echo "=== valgrind: no errors, no definite leaks"
