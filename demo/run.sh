#!/usr/bin/env bash
# The emojivoto debugging story on a local nodemesh cluster, from a fresh Debian 12
# machine, as root:
#
#   bash demo/run.sh        install what is missing, build, start the cluster (two
#                           simulated nodes, an agent each, the aggregator, emojivoto
#                           unmeshed), mesh the app live and trace its failures with
#                           meshctl; the cluster keeps running afterwards
#   bash demo/run.sh down   remove everything the cluster made
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ${1:-} == down ]]; then
  exec /usr/bin/python3 demo/cluster.py down
fi
if [[ $# -gt 0 ]]; then
  echo "usage: bash demo/run.sh [down]" >&2
  exit 2
fi

stage() { printf '\n==> %s\n' "$*"; }

stage "dependencies"
bash test/install-deps.sh

stage "build (release)"
cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)" --target nodemesh-agent nodemesh-aggregator meshctl

stage "local cluster"
/usr/bin/python3 demo/cluster.py up

stage "the story"
/usr/bin/python3 demo/cluster.py story
