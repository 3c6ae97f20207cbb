#!/usr/bin/env bash
# Builds the swift-fetch image with podman on the local Debian base and prints its name on stdout
# (progress on stderr). The image tests find it under the same name (SWIFT_FETCH_IMAGE):
#   export CONTAINERS_CONF=$(bash .ci/podman-setup.sh)
#   export SWIFT_FETCH_IMAGE=$(bash .ci/build-image.sh)
#   npx vitest run test/image
# BASE_IMAGE=<image> builds on another base instead (e.g. docker.io/library/node:... where Docker
# Hub is reachable). Layers are cached in podman's storage: a run where only src/ changed
# recompiles TypeScript and copies dist/, the dependency stages are reused.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE="${SWIFT_FETCH_IMAGE:-localhost/swift-fetch:ci}"

if [ -z "${CONTAINERS_CONF:-}" ]; then
  CONTAINERS_CONF=$(bash .ci/podman-setup.sh)
  export CONTAINERS_CONF
fi
base="${BASE_IMAGE:-$(bash .ci/build-base.sh)}"

version=$(node -p 'require("./package.json").version')
# The revision label says which tree the image was built from; "-dirty" when it has local edits,
# so a test run can tell a stale image from a fresh one.
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [ "$revision" != unknown ] && [ -n "$(git status --porcelain -- Dockerfile package.json package-lock.json tsconfig.json src bin 2>/dev/null)" ]; then
  revision="$revision-dirty"
fi

start=$(date +%s)
# --network host: RUN steps reach the Debian archive and the npm registry the way the host does
# (through its proxy), and no bridge network is needed. The created date is the commit's, not
# the wall clock's, so an unchanged tree reuses every cached layer.
podman build --network host --layers \
  --build-arg BASE_IMAGE="$base" \
  --build-arg VERSION="$version" \
  --build-arg REVISION="$revision" \
  --build-arg CREATED="$(git log -1 --format=%cI 2>/dev/null || echo unknown)" \
  --tag "$IMAGE" . >&2
echo "build-image: $IMAGE built in $(( $(date +%s) - start )) s, $(podman image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1 / 1e6}') on $base" >&2
echo "$IMAGE"
