# The nodemesh image: nodemesh-agent, nodemesh-aggregator and meshctl in /usr/local/bin of a
# slim Debian 12 holding only the libraries they load. No ENTRYPOINT: whoever runs the image
# names the binary (the Helm chart does, for the agent and the aggregator).
#
#   podman build --network host --build-arg VERSION=0.1.0 -t nodemesh:0.1.0 .
#
# test/k8s/build-image.sh builds it with no registry: BASE is a debootstrapped Debian 12
# imported locally, the host's apt cache is mounted at /var/cache/apt/archives, its
# compiler cache at /ccache and its npm tarballs (elkjs, which meshctl's dashboard embeds) at
# /var/cache/nodemesh/npm, where the configure step looks for them, and SOURCE_DIR is the host's checkout path, so that the compile
# commands equal those of the host's release build and ccache hits (docs/ARCHITECTURE.md
# section 8). Without those mounts the build is the same, only slower (the configure step
# downloads elkjs from the npm registry; -DNODEMESH_DASHBOARD=OFF builds meshctl without it).
ARG BASE=docker.io/library/debian:bookworm-slim

FROM ${BASE} AS build
# Marks what this stage leaves in the builder's cache, for build-image.sh to prune.
LABEL io.nodemesh.stage=build
ENV DEBIAN_FRONTEND=noninteractive
# The toolchain and libraries of test/install-deps.sh that the three binaries need (Boost is
# header-only: nothing of it reaches the runtime stage).
# Docker's Debian images delete downloaded packages after each install (docker-clean), which
# would empty an apt cache mounted into the build; this stage is thrown away anyway.
RUN rm -f /etc/apt/apt.conf.d/docker-clean \
 && apt-get update \
 && apt-get install -y --no-install-recommends \
      g++ gcc cmake ninja-build ccache pkg-config \
      clang bpftool libbpf-dev libelf-dev zlib1g-dev linux-libc-dev \
      libabsl-dev libfmt-dev libnghttp2-dev node-llhttp nlohmann-json3-dev libcli11-dev \
      libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc \
      libssl-dev libyaml-cpp-dev libnetfilter-conntrack-dev libedit-dev \
      libboost-dev \
 && rm -rf /var/lib/apt/lists/*

# The release preset's layout: the build tree is build/release under the source.
# HOST_LOCALE ("LANG=C.UTF-8 ...") is the host build's locale, set for the compiler: ccache
# hashes those variables (they change the compiler's messages), so the host's cache hits only
# under the same ones.
ARG SOURCE_DIR=/src
ARG HOST_LOCALE=
ENV CCACHE_DIR=/ccache CCACHE_STATSLOG=/tmp/ccache-stats.log
# A RUN names the path in the layer cache's key: buildah keys WORKDIR and COPY without the
# ARG's value, and would reuse a layer copied to another path for the same sources.
RUN mkdir -p "${SOURCE_DIR}"
WORKDIR ${SOURCE_DIR}
COPY . .
# Then the Debian packages of every shared library the binaries load, for the runtime stage
# (a path ldd gives or its target, whichever dpkg knows; one step, as each step's layer
# costs a walk of the whole build tree).
RUN env ${HOST_LOCALE} cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_CXX_COMPILER=g++ -DCMAKE_C_COMPILER=gcc -DBUILD_TESTING=OFF \
 && env ${HOST_LOCALE} cmake --build build/release \
      --target nodemesh-agent nodemesh-aggregator meshctl \
 && echo "ccache, this build:" && ccache --show-log-stats \
 && mkdir /out \
 && install -s -m 0755 build/release/agent/nodemesh-agent \
      build/release/aggregator/nodemesh-aggregator build/release/cli/meshctl /out/ \
 && ldd /out/* | awk '$3 ~ /^\// { print $3 }' | sort -u > /tmp/libraries \
 && { dpkg -S $(cat /tmp/libraries) $(xargs readlink -f < /tmp/libraries) 2>/dev/null || true; } \
      | cut -d: -f1 | sort -u > /out/runtime-packages \
 && echo "runtime packages:" $(cat /out/runtime-packages)

FROM ${BASE} AS runtime
# The project version (project() in CMakeLists.txt; a k8s test checks they agree).
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="nodemesh" \
      org.opencontainers.image.description="nodemesh-agent, nodemesh-aggregator and meshctl" \
      org.opencontainers.image.version="${VERSION}"
ENV DEBIAN_FRONTEND=noninteractive
COPY --from=build /out/runtime-packages /tmp/runtime-packages
# The base's packages brought up to date (security updates), then the libraries. The
# downloaded packages stay out of the image, unless they are the builder's mounted cache.
RUN rm -f /etc/apt/apt.conf.d/docker-clean \
 && apt-get update \
 && apt-get upgrade -y --no-install-recommends \
 && apt-get install -y --no-install-recommends $(cat /tmp/runtime-packages) \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages \
 && { mountpoint -q /var/cache/apt/archives || apt-get clean; }
COPY --from=build /out/nodemesh-agent /out/nodemesh-aggregator /out/meshctl /usr/local/bin/
RUN if ldd /usr/local/bin/* | grep 'not found'; then exit 1; fi
# Root, as the chart runs the agent: loading eBPF programs, entering pods' network namespaces
# and reading other processes' /proc entries take capabilities, and a non-root user would
# need them as ambient capabilities, which Kubernetes cannot grant. The chart drops every
# capability but the four the agent needs; the aggregator and meshctl need none.
USER root
