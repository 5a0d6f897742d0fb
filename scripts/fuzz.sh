#!/usr/bin/env bash
# Build the libFuzzer targets (clang) and run each for SECONDS (default 20),
# starting from the seed corpus in tests/fuzz/corpus/TARGET. Every seed and
# every past crash kept there is replayed first, so they act as regression
# tests. New inputs found go to a temporary copy; a crash leaves its input in
# build-fuzz/artifacts/ and fails the script.
#   scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}

CC=clang cmake -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPROJECTORD_FUZZ=ON \
  -DPROJECTORD_TESTS=OFF >/dev/null
cmake --build build-fuzz -j"${JOBS:-2}" >/dev/null

export LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp"
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
mkdir -p build-fuzz/artifacts
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for target in event config snapshot declared; do
  seeds=tests/fuzz/corpus/$target
  echo "=== fuzz_$target: replaying $(ls "$seeds" | wc -l) seeds, then ${seconds}s"
  build-fuzz/tests/fuzz/fuzz_"$target" "$seeds"/* > "$work/$target-replay.log" 2>&1 ||
    { cat "$work/$target-replay.log"; exit 1; }
  mkdir -p "$work/$target"
  cp "$seeds"/* "$work/$target/"
  build-fuzz/tests/fuzz/fuzz_"$target" -max_total_time="$seconds" -max_len=65536 \
    -artifact_prefix=build-fuzz/artifacts/ "$work/$target" > "$work/$target.log" 2>&1 ||
    { tail -40 "$work/$target.log"; echo "fuzz_$target: crash, input in build-fuzz/artifacts/"; exit 1; }
  tail -1 "$work/$target.log"
done
echo "=== fuzzing found nothing"
