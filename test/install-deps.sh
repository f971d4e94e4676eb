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
  libssl-dev libcurl4-openssl-dev libyaml-cpp-dev libnetfilter-conntrack-dev
  # real peers and tools for tests and benchmarks
  iproute2 procps curl jq nginx-light haproxy wrk nghttp2-client nghttp2-server
  python3 python3-grpcio prometheus
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
for svc in nginx haproxy prometheus; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl disable --now "$svc" >/dev/null 2>&1 || true
  fi
done
echo "install-deps: all ${#packages[@]} packages present"
