#!/usr/bin/env bash
# Builds the runtime base image of deploy/Dockerfile without an image
# registry: debootstrap makes a minimal Debian root file system from the
# Debian package archive, and `docker import` turns it into an image.
#
# Usage: deploy/base-image.sh [TAG]     (default tag: downpour-base:bookworm)
#
# Build the Downpour image on it with
#   docker build --build-arg RUNTIME_BASE=downpour-base:bookworm ...
#
# The root file system is cached as a tar file in $DOWNPOUR_CACHE (default
# ~/.cache/downpour), so a second run on the same machine skips debootstrap.
# An existing image with the tag is kept; set DOWNPOUR_REBUILD_BASE=1 to
# build it again. Needs root (debootstrap) and the Docker daemon.
set -euo pipefail

tag=${1:-downpour-base:bookworm}
suite=bookworm
cache=${DOWNPOUR_CACHE:-$HOME/.cache/downpour}
rootfs_tar=$cache/$suite-minbase.tar

if [[ ${DOWNPOUR_REBUILD_BASE:-0} != 1 ]] && docker image inspect "$tag" >/dev/null 2>&1; then
  echo "base-image: $tag exists; set DOWNPOUR_REBUILD_BASE=1 to build it again" >&2
  exit 0
fi

# The Debian mirror apt uses on this machine, or deb.debian.org.
mirror_from_apt() {
  local uri
  uri=$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources \
        /etc/apt/sources.list.d/*.list 2>/dev/null |
        grep -v -- '-security' | grep -oE 'https?://[^ ]+' | head -n1 || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

if [[ ${DOWNPOUR_REBUILD_BASE:-0} == 1 || ! -s $rootfs_tar ]]; then
  if ! command -v debootstrap >/dev/null; then
    echo "base-image: installing debootstrap" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  fi
  mirror=${DOWNPOUR_DEBIAN_MIRROR:-$(mirror_from_apt)}
  rootfs=$(mktemp -d)
  trap 'rm -rf "$rootfs"' EXIT
  echo "base-image: debootstrap $suite from $mirror (a few minutes)" >&2
  debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >/dev/null
  # Documentation, manual pages, locales and package lists are not needed
  # at run time.
  rm -rf "$rootfs"/usr/share/{doc,man,info,locale}/* "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
    "$rootfs"/var/log/*.log "$rootfs"/tmp/*
  mkdir -p "$cache"
  tar --numeric-owner -C "$rootfs" -cf "$rootfs_tar.partial" .
  mv "$rootfs_tar.partial" "$rootfs_tar"
fi

echo "base-image: importing $rootfs_tar as $tag" >&2
docker import --change 'CMD ["/bin/bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  "$rootfs_tar" "$tag" >/dev/null
docker image ls "$tag"
