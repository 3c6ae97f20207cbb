#!/usr/bin/env bash
# Installs a real S3 server (MinIO) for the object-storage tests into the per-user tool cache, once,
# and prints its path on stdout (progress on stderr): MINIO_BIN=$(bash .ci/install-minio.sh).
# No release binary is reachable here, so it is built through the Go module proxy (about 6 minutes
# on 2 cores the first time); the version is pinned so every run tests against the same server.
# MinIO is AGPL: it is only run beside the tests, never shipped or linked.
set -euo pipefail
MINIO_VERSION="${MINIO_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}"
cache="${SWIFT_FETCH_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/swift-fetch/bin}"
minio="$cache/minio"
stamp="$cache/.minio-version"
mkdir -p "$cache"
if ! { [ -x "$minio" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$MINIO_VERSION" ]; }; then
  command -v go >/dev/null || { echo "install-minio: go is required to build minio" >&2; exit 1; }
  echo "install-minio: building minio $MINIO_VERSION into $cache (about 6 minutes the first time)" >&2
  tmp=$(mktemp -d "$cache/.build.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  CGO_ENABLED=0 GOBIN="$tmp" go install -trimpath "github.com/minio/minio@$MINIO_VERSION" >&2
  mv -f "$tmp/minio" "$minio"
  echo "$MINIO_VERSION" > "$stamp"
fi
echo "install-minio: $("$minio" --version 2>/dev/null | head -n 1)" >&2
echo "$minio"
