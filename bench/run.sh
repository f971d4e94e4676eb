#!/usr/bin/env bash
# Runs a benchmark on demand and prints its figures with ratios against the baseline
# measured in the same run. Results worth keeping go to bench/RESULTS.md with this command.
#
#   bash bench/run.sh parsers     parser throughput vs bare llhttp and bare HPACK decoding
#   bash bench/run.sh metrics     cost per request of recording metrics vs the bare loop
#   bash bench/run.sh tap         cost per request of a tap on the worker (none, not matching,
#                                 every request), and per event of GET /tap's JSON
#   bash bench/run.sh proxy [proxy_bench flags]
#                                 added latency and throughput through the agent vs direct,
#                                 with and without L7 parsing, and HAProxy, nginx and a bare
#                                 relay in the same hop
#                                 (root; about 20 minutes); --grpc: gRPC calls at a fixed
#                                 rate through the agent, HAProxy (HTTP/2) and nginx grpc_pass
#   bash bench/run.sh bulk [bulk_bench flags]
#                                 iperf3 throughput, one stream and 16, direct vs through one
#                                 hop and two, with the agent copying and splicing
#                                 (root; about 4 minutes)
#   bash bench/run.sh endurance [endurance_bench flags]
#                                 10,000 connections at once, a 10-minute soak with connection
#                                 churn, 1,000 pod enrol/release cycles: the agent's memory per
#                                 connection and over time, sent vs counted, and what is left
#                                 behind (root; about 15 minutes; --only and shorter flags);
#                                 --only peers: memory per idle and active connection against
#                                 HAProxy and nginx (--peer-before AGENT: an older build's
#                                 agent beside this one); --only service: the conntrack lookup of a
#                                 connection to a Service, alone and at 1,000 new connections/s
#   bash bench/run.sh rss [rss_bench flags]
#                                 the agent's resident memory with 0, 100 and 500 idle pods
#                                 enrolled, per library, against the 12 MiB budget and HAProxy
#                                 and nginx idle; --agent label=binary twice for before/after
#                                 (root; about 3 minutes a round)
#   bash bench/run.sh services [services_bench flags]
#                                 10,000 Services in the test API server, then a stream of
#                                 Service events: the agent's RSS and CPU per event; with
#                                 --before AGENT, an older build's agent measured beside this
#                                 one (root; a few minutes)
#   bash bench/run.sh aggregator [aggregator_bench flags]
#                                 one aggregator fed by synthetic agents (--nodes,
#                                 --pods-per-node, --routes, --peers, --retained-seconds): its
#                                 memory, CPU per delta, stat/edges/routes/top latency over 1 min
#                                 and 1 h, and with --tap-agents the tap fan-out; --before
#                                 AGGREGATOR: an older build's measured first (minutes to an hour)
#   bash bench/run.sh dashboard [dashboard_bench flags]
#                                 meshctl dashboard's call graph of 1,000 workloads and 5,000
#                                 calls from a real aggregator, laid out and drawn in headless
#                                 Chromium: layout and render times against the 2 s aim
#   bash bench/run.sh replicas [replicas_bench flags]
#                                 what an extra aggregator replica costs an agent, and a
#                                 restarted replica's catch-up of an hour from its peer
#                                 (in process; seconds)
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  echo "usage: bash bench/run.sh parsers|metrics|tap|proxy [flags]|bulk [flags]|endurance [flags]|rss [flags]|services [flags]|dashboard [flags]|aggregator [flags]|replicas [flags]" >&2
  exit 2
}
[[ $# -ge 1 ]] || usage
[[ $# -eq 1 || $1 == proxy || $1 == bulk || $1 == endurance || $1 == rss || $1 == services || $1 == dashboard || $1 == aggregator || $1 == replicas ]] || usage

need_root() {
  if [[ $EUID -ne 0 ]]; then
    echo "bench/run.sh $1 needs root (netns, cgroups, eBPF): run it with sudo" >&2
    exit 2
  fi
}

build() {
  bash test/install-deps.sh >/dev/null
  cmake --preset release >/dev/null
  cmake --build --preset release --target "$@" >/dev/null
}

# A Google Benchmark binary: 5 repetitions, medians, then report.py's table of them.
google_benchmark() {
  local name=$1 what=$2
  build "${name}_bench"
  out=$(mktemp)
  trap 'rm -f "$out"' EXIT
  echo "$what, 5 repetitions, medians (this takes about a minute)" >&2
  "./build/release/bench/${name}_bench" --benchmark_repetitions=5 \
    --benchmark_report_aggregates_only=true --benchmark_format=json >"$out"
  /usr/bin/python3 bench/report.py "$name" "$out"
}

case "$1" in
  parsers) google_benchmark parsers "parser throughput" ;;
  metrics) google_benchmark metrics "metrics recording cost" ;;
  tap) google_benchmark tap "tapping cost" ;;
  proxy)
    need_root proxy
    build proxy_bench nodemesh-agent nodemesh-loadgen nodemesh-relay
    # Three interleaved rounds, medians: one busy spell of the machine cannot decide a
    # scenario. Pinning and workers are explained in bench/RESULTS.md.
    ./build/release/bench/proxy_bench --rounds 3 "${@:2}"
    ;;
  bulk)
    need_root bulk
    build bulk_bench nodemesh-agent
    # Three interleaved rounds, medians, as the proxy benchmark.
    ./build/release/bench/bulk_bench --rounds 3 "${@:2}"
    ;;
  endurance)
    need_root endurance
    build endurance_bench nodemesh-agent nodemesh-aggregator
    ./build/release/bench/endurance_bench "${@:2}"
    ;;
  rss)
    need_root rss
    build rss_bench nodemesh-agent nodemesh-aggregator
    ./build/release/bench/rss_bench "${@:2}"
    ;;
  dashboard)
    build dashboard_bench meshctl nodemesh-aggregator
    ./build/release/bench/dashboard_bench "${@:2}"
    ;;
  aggregator)
    build aggregator_bench nodemesh-aggregator
    ./build/release/bench/aggregator_bench "${@:2}"
    ;;
  replicas)
    build replicas_bench
    ./build/release/bench/replicas_bench "${@:2}"
    ;;
  services)
    need_root services
    build services_bench nodemesh-agent
    ./build/release/bench/services_bench "${@:2}"
    ;;
  *) usage ;;
esac
