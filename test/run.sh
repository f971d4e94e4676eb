#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine, as root: installs what is missing,
# builds the Release, sanitizer and fuzzing configurations, and runs every test tier
# (unit, kernel, e2e, and k8s: the chart and the image) in Release, the unit and kernel
# tiers again under ASan + UBSan (the kernel tier runs the sanitized agent through the
# proxy loop), and a bounded run of each fuzz target (built by the same clang build).
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
stage "release tests (unit, kernel, e2e, k8s)"
ctest --preset release -j "$jobs"

stage "sanitizer and fuzzing build (clang, ASan + UBSan, libFuzzer)"
cmake --preset asan -DNODEMESH_FUZZ_SECONDS="$fuzz_seconds" >/dev/null
cmake --build --preset asan -j "$jobs"
stage "sanitizer tests (unit, kernel)"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --preset asan -j "$jobs" -L 'unit|kernel'

stage "fuzz targets (${fuzz_seconds}s each)"
ctest --preset asan -j "$jobs" -L fuzz

stage "all tests passed"
