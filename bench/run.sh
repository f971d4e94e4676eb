#!/usr/bin/env bash
# Runs a benchmark on demand and prints its figures with ratios against the baseline
# measured in the same run. Results worth keeping go to bench/RESULTS.md with this command.
#
#   bash bench/run.sh parsers     parser throughput vs bare llhttp
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { echo "usage: bash bench/run.sh parsers" >&2; exit 2; }
[[ $# -eq 1 ]] || usage

build() {
  bash test/install-deps.sh >/dev/null
  cmake --preset release >/dev/null
  cmake --build --preset release --target "$@" >/dev/null
}

case "$1" in
  parsers)
    build parsers_bench
    out=$(mktemp)
    trap 'rm -f "$out"' EXIT
    echo "parser throughput, 5 repetitions, medians (this takes about a minute)" >&2
    ./build/release/bench/parsers_bench --benchmark_repetitions=5 \
      --benchmark_report_aggregates_only=true --benchmark_format=json >"$out"
    /usr/bin/python3 bench/report.py parsers "$out"
    ;;
  *) usage ;;
esac
