#!/usr/bin/env bash
# build.sh: the container images the deployment tests run, built offline from Debian's packages.
#
# No image registry is reachable here, so the base image the Dockerfile names
# (debian:bookworm-slim) is made with debootstrap --variant=minbase, as
# Debian's own slim image is, and imported into podman under that name. On top
# of it, bridged-test-systemd: systemd (PID 1 in a container), dbus, logrotate,
# python3-venv; no procps (the units must not need /bin/kill).
# Kept between runs: a second call with the same inputs returns at once.
#   bash tests/tools/images/build.sh      (root; podman, buildah, debootstrap)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${BRIDGED_IMAGE_CACHE:-/var/cache/bridged-ci/images}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/containers.conf}"
mkdir -p "$cache"

need=()
for p in podman buildah debootstrap runc; do command -v "$p" >/dev/null || need+=("$p"); done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

base=docker.io/library/debian:bookworm-slim
if ! podman image exists "$base"; then
  if [ ! -s "$cache/bookworm-minbase.tar" ]; then
    root=$(mktemp -d /tmp/bookworm-root.XXXXXX)
    trap 'rm -rf "$root"' EXIT
    debootstrap --variant=minbase bookworm "$root" "$mirror" >/dev/null
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -cf "$cache/bookworm-minbase.tar.partial" .
    mv "$cache/bookworm-minbase.tar.partial" "$cache/bookworm-minbase.tar"
    rm -rf "$root"
    trap - EXIT
  fi
  podman import --change 'CMD ["bash"]' "$cache/bookworm-minbase.tar" "$base" >/dev/null
fi

systemd_image=localhost/bridged-test-systemd
stamp=$(sha256sum "$here/systemd.Containerfile" | cut -c1-16)
if [ "$(podman image inspect --format '{{index .Labels "bridged.stamp"}}' "$systemd_image" 2>/dev/null)" != "$stamp" ]; then
  podman build -q --format docker --label "bridged.stamp=$stamp" -t "$systemd_image" \
    -f "$here/systemd.Containerfile" "$here" >/dev/null
fi
echo "images: $base, $systemd_image"
