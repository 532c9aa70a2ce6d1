#!/usr/bin/env bash
# Builds the downpour image on a machine without an image registry: the
# binary is compiled on the host, and deploy/Dockerfile's `prebuilt` target
# places it on the base image that deploy/base-image.sh makes.
#
# Usage: deploy/build-image.sh [TAG]     (default tag: downpour:latest)
#
# DOWNPOUR_BINARY names a downpour binary built already, such as the one
# `cargo test --release` leaves in target/release; without it the script
# runs `cargo build --release --bin downpour` first.
set -euo pipefail
cd "$(dirname "$0")/.."

tag=${1:-downpour:latest}
base=${DOWNPOUR_BASE_IMAGE:-downpour-base:bookworm}

deploy/base-image.sh "$base"
binary=${DOWNPOUR_BINARY:-}
if [[ -z $binary ]]; then
  cargo build --release --locked --bin downpour
  binary=target/release/downpour
fi
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
# Line tables help backtraces on the host but only add size to the image.
objcopy --strip-debug "$binary" "$context/downpour"
cp -r data/mnist "$context/mnist"
# --network none: the build steps need no network, and no container joins
# a network this script did not make.
DOCKER_BUILDKIT=0 docker build --quiet --network none -f deploy/Dockerfile \
  --target prebuilt --build-arg "RUNTIME_BASE=$base" -t "$tag" "$context" >/dev/null
docker image ls "$tag"
