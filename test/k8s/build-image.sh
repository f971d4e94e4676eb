#!/usr/bin/env bash
# Builds the nodemesh container image (the repository's Dockerfile) with podman, without any
# registry: the Debian 12 base is made with debootstrap and imported locally, then
# `podman build --pull=never --network host`. Idempotent and quick when nothing changed:
#
#   - the base is made once per month and mirror, kept as a tarball in $NODEMESH_CACHE_DIR
#     (/var/cache/nodemesh) and as the image localhost/nodemesh-base:<key>, reused when present;
#   - the build stage's apt downloads reuse the host's apt cache (/var/cache/apt/archives is
#     mounted into the build, and apt in the debootstrapped base keeps what it downloads);
#   - the build stage's configure finds the npm tarballs the dashboard embeds (elkjs) in the
#     host's cache (NODEMESH_NPM_CACHE, default $NODEMESH_CACHE_DIR/npm, mounted at
#     /var/cache/nodemesh/npm, where cmake/NpmTarball.cmake looks), so it downloads nothing;
#   - the build stage compiles through ccache with the host's cache directory mounted, the
#     source at the host's own path and the build tree at build/release under it, as the
#     release preset has it: compile commands are identical, so the host build's objects hit;
#   - podman's layer cache skips every step whose inputs did not change.
#
#   bash test/k8s/build-image.sh             build (or confirm) localhost/nodemesh:<version>
#   bash test/k8s/build-image.sh --no-cache  every step again (the base and ccache still reused)
#   bash test/k8s/build-image.sh --tag       print the image's name only
#
# Environment: NODEMESH_IMAGE (default localhost/nodemesh:<project version>),
# NODEMESH_MIRROR (default http://deb.debian.org/debian), NODEMESH_CACHE_DIR,
# NODEMESH_NPM_CACHE, CCACHE_DIR
# (default: ccache's own), CONTAINERS_CONF (default: one written under .cache/podman).
# Needs root, podman, runc and debootstrap (bash test/install-deps.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)

version=$(sed -n 's/^project(nodemesh VERSION \([0-9][0-9.]*\).*/\1/p' "$root/CMakeLists.txt")
[[ -n $version ]] || { echo "build-image: no project version in $root/CMakeLists.txt" >&2; exit 1; }
image=${NODEMESH_IMAGE:-localhost/nodemesh:$version}
layers=(--layers)
case ${1:-} in
  --tag) echo "$image"; exit 0 ;;
  --no-cache) layers=(--no-cache) ;;
  '') ;;
  *) echo "usage: $0 [--no-cache|--tag]" >&2; exit 2 ;;
esac

step() { printf '==> build-image: %s\n' "$*"; }
fail() { echo "build-image: $*" >&2; exit 1; }

((EUID == 0)) || fail "needs root (podman storage under /var/lib/containers, debootstrap)"
for tool in podman runc debootstrap ccache; do
  command -v "$tool" >/dev/null || fail "$tool is missing: run bash test/install-deps.sh"
done

# Podman as these machines need it: runc (crun refuses the hybrid cgroup layout), cgroupfs
# (no systemd to ask for cgroups), and ulimits no higher than the host's own, which a
# container cannot raise.
if [[ -z ${CONTAINERS_CONF:-} ]]; then
  export CONTAINERS_CONF=$root/.cache/podman/containers.conf
  mkdir -p "$(dirname "$CONTAINERS_CONF")"
  cat >"$CONTAINERS_CONF.tmp" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
  mv "$CONTAINERS_CONF.tmp" "$CONTAINERS_CONF"
fi

# The base: Debian 12 minbase from the mirror, with the suites the host installs from
# (bookworm, bookworm-updates, bookworm-security) so that the build stage finds the same
# package versions as the host's apt cache holds.
mirror=${NODEMESH_MIRROR:-http://deb.debian.org/debian}
security_mirror=${NODEMESH_SECURITY_MIRROR:-${mirror%/debian}/debian-security}
recipe=1  # one more whenever the way the base is made below changes
key="bookworm-$(date -u +%Y%m)-$(printf '%s' "$recipe $mirror $security_mirror" | sha256sum | cut -c1-8)"
base=localhost/nodemesh-base:$key
cache_dir=${NODEMESH_CACHE_DIR:-/var/cache/nodemesh}
tarball=$cache_dir/debian-$key.tar
started=$SECONDS
if podman image exists "$base"; then
  step "base $base present"
else
  mkdir -p "$cache_dir"
  if [[ ! -s $tarball ]]; then
    step "debootstrap --variant=minbase bookworm from $mirror (once per month and mirror)"
    rootfs=$(mktemp -d "$cache_dir/rootfs.XXXXXX")
    trap 'rm -rf "$rootfs" "$tarball.tmp"' EXIT
    # dpkg without an fsync per file, as in Docker's Debian images: a third faster here, for
    # debootstrap and every apt-get of the image builds (nothing runs dpkg in a container).
    mkdir -p "$rootfs/etc/dpkg/dpkg.cfg.d"
    echo force-unsafe-io >"$rootfs/etc/dpkg/dpkg.cfg.d/unsafe-io"
    # --cache-dir: the .debs come from, and go to, the host's apt cache.
    debootstrap --variant=minbase --cache-dir=/var/cache/apt/archives bookworm "$rootfs" \
      "$mirror" | sed -u 's/^/    /'
    rm -f "$rootfs/etc/apt/sources.list"
    cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security_mirror
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
    tar --numeric-owner -C "$rootfs" -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
    trap - EXIT
    # Tarballs of earlier months or mirrors are not needed any more.
    find "$cache_dir" -maxdepth 1 -name 'debian-bookworm-*.tar' ! -name "debian-$key.tar" -delete
  fi
  step "importing $tarball as $base"
  podman import --quiet "$tarball" "$base" >/dev/null
  step "base ready in $((SECONDS - started)) s"
fi

# The compiler cache the host's release build fills (.ci/run sets CCACHE_DIR).
ccache_dir=${CCACHE_DIR:-$(ccache -k cache_dir)}
# The npm tarballs the host's configure fetched (cmake/NpmTarball.cmake).
npm_cache=${NODEMESH_NPM_CACHE:-$cache_dir/npm}
mkdir -p "$ccache_dir" "$npm_cache" /var/cache/apt/archives/partial

# ccache hashes the locale variables: the build stage gets those the host build had.
host_locale=()
for name in LANG LC_ALL LC_CTYPE LC_MESSAGES; do
  [[ -v $name ]] && host_locale+=("$name=${!name}")
done

# The build stage is tagged too, so that podman's step cache of the current build is kept
# while what earlier builds left (untagged, unused) is pruned: without that every change of
# the source would leave a build tree behind.
build_image=${image%:*}-build:${image##*:}
build() {
  podman build --pull=never --network host \
    --file "$root/Dockerfile" \
    --build-arg BASE="$base" \
    --build-arg VERSION="$version" \
    --build-arg SOURCE_DIR="$root" \
    --build-arg HOST_LOCALE="${host_locale[*]}" \
    --volume /var/cache/apt/archives:/var/cache/apt/archives \
    --volume "$ccache_dir":/ccache \
    --volume "$npm_cache":/var/cache/nodemesh/npm \
    "$@" "$root" 2>&1 | sed -u 's/^/    /'
}

step "podman build $image (base $base, ccache $ccache_dir)"
started=$SECONDS
build "${layers[@]}" --target build --tag "$build_image"
build --layers --tag "$image"
step "$image built in $((SECONDS - started)) s"
podman image prune --force --filter label=io.nodemesh.stage=build >/dev/null
podman image prune --force --filter label=org.opencontainers.image.title=nodemesh >/dev/null
for old in $(podman images --format '{{.Repository}}:{{.Tag}}' localhost/nodemesh-base); do
  [[ $old == "$base" ]] || podman rmi "$old" >/dev/null 2>&1 || true
done
