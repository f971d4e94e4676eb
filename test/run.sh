#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine, as root: installs what is missing,
# builds the Release, sanitizer and fuzzing configurations, and runs every test tier
# (unit, kernel, e2e, and k8s: the chart and the image) in Release, the unit and kernel
# tiers again under ASan + UBSan (the kernel tier runs the sanitized agent through the
# proxy loop), and a bounded run of each fuzz target (built by the same clang build). The
# sanitizer build is a unity build (NODEMESH_UNITY, CMakeLists.txt) and runs beside the
# release tests.
#
#   bash test/run.sh                  everything
#   FUZZ_SECONDS=5 bash test/run.sh   shorter fuzzing
set -euo pipefail
cd "$(dirname "$0")/.."

fuzz_seconds=${FUZZ_SECONDS:-30}
jobs=$(nproc)

# Each stage says when it starts and how long the one before it took, so that a run's log shows
# where its time went.
stage_started=$SECONDS
stage_name=
stage() {
  if [[ -n $stage_name ]]; then
    printf '==> %s: %d s\n' "$stage_name" $((SECONDS - stage_started))
  fi
  stage_name=$*
  stage_started=$SECONDS
  printf '\n==> %s (at %d s)\n' "$*" "$SECONDS"
}

stage "dependencies"
bash test/install-deps.sh

stage "release build"
cmake --preset release >/dev/null
cmake --build --preset release -j "$jobs"

# The release tests spend most of their time waiting on the processes and peers they start,
# and leave the cores half idle: the sanitizer build runs beside them at the lowest priority,
# taking only what they leave, so that no test waits on it. It runs in a process group of
# its own (setsid), ended with the script should a test fail.
stage "release tests (unit, kernel, e2e, k8s), the sanitizer build beside them"
cmake --preset asan -DNODEMESH_FUZZ_SECONDS="$fuzz_seconds" -DNODEMESH_UNITY=ON >/dev/null
asan_log=build/asan/build.log
setsid nice -n 19 cmake --build --preset asan -j "$jobs" >"$asan_log" 2>&1 &
asan_build=$!
trap 'kill -TERM -- "-$asan_build" 2>/dev/null || true' EXIT
ctest --preset release -j "$jobs"

stage "sanitizer and fuzzing build (clang, ASan + UBSan, libFuzzer; unity): its rest"
if ! wait "$asan_build"; then
  tail -n 200 "$asan_log"
  echo "test/run.sh: the sanitizer build failed (whole log: $asan_log)" >&2
  exit 1
fi
trap - EXIT
tail -n 1 "$asan_log"
stage "sanitizer tests (unit, kernel)"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --preset asan -j "$jobs" -L 'unit|kernel'

stage "fuzz targets (${fuzz_seconds}s each)"
ctest --preset asan -j "$jobs" -L fuzz

stage "all tests passed"
