#!/usr/bin/env bash
# Builds the Kubernetes binaries the kube tests run against into the per-user tool cache, once, and
# prints the cache directory on stdout (progress goes to stderr), so callers can do
# KUBE_BIN_DIR=$(bash .ci/install-kube.sh | tail -n 1).
#   kube-apiserver, kubectl  built from k8s.io/kubernetes through the Go module proxy: no release
#            tarball is reachable here, and the module zip has no staging/ tree, so each
#            ./staging/src/k8s.io/X replace is pointed at the published k8s.io/X v0.N module.
#   etcd     is Debian's etcd-server package (installed by .ci/run), not built here.
# The version ldflags matter: without them the server reports v0.0.0 and helm refuses the chart's
# kubeVersion. Idempotent: binaries that already report the pinned version are reused.
set -euo pipefail
KUBE_VERSION="${KUBE_VERSION:-v1.31.0}"
cache="${SWIFT_FETCH_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/swift-fetch/bin}"
mkdir -p "$cache"

have() { # have BINARY: the cached binary exists and reports the pinned version
  case "$1" in
    kube-apiserver) "$cache/kube-apiserver" --version 2>/dev/null | grep -qx "Kubernetes $KUBE_VERSION" ;;
    kubectl) "$cache/kubectl" version --client -o json 2>/dev/null | grep -q "\"gitVersion\": \"$KUBE_VERSION\"" ;;
  esac
}

missing=()
for b in kube-apiserver kubectl; do have "$b" || missing+=("$b"); done

if [ ${#missing[@]} -gt 0 ]; then
  command -v go >/dev/null || { echo "install-kube: go is required to build ${missing[*]}" >&2; exit 1; }
  tmp=$(mktemp -d "$cache/.build-kube.XXXXXX")
  trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
  echo "install-kube: building ${missing[*]} $KUBE_VERSION into $cache (about 7 minutes on 2 cores the first time)" >&2
  src_dir=$(GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  cp -r "$src_dir" "$tmp/src"
  chmod -R u+w "$tmp/src"
  staging="v0.${KUBE_VERSION#v1.}" # k8s.io/kubernetes v1.N.P publishes its staging modules as v0.N.P
  sed -i -E "s#^([[:space:]]*)(k8s\.io/[A-Za-z0-9._-]+) => \./staging/src/k8s\.io/[A-Za-z0-9._-]+\$#\1\2 => \2 $staging#" "$tmp/src/go.mod"
  if grep -q '=> ./staging' "$tmp/src/go.mod"; then
    echo "install-kube: go.mod still points into ./staging after rewriting:" >&2
    grep '=> ./staging' "$tmp/src/go.mod" >&2
    exit 1
  fi
  rm -f "$tmp/src/go.work" "$tmp/src/go.work.sum"
  pkg=k8s.io/component-base/version
  minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
  ldflags="-s -w -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags="$ldflags -X $pkg.gitTreeState=clean -X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION"
  for b in "${missing[@]}"; do
    (cd "$tmp/src" && GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0 \
      go build -trimpath -ldflags "$ldflags" -o "$tmp/$b" "./cmd/$b") >&2
    # Rename into place, so an interrupted build never leaves a half-written binary.
    mv -f "$tmp/$b" "$cache/$b"
  done
fi

for b in kube-apiserver kubectl; do
  have "$b" || { echo "install-kube: $cache/$b does not report $KUBE_VERSION" >&2; exit 1; }
done
command -v etcd >/dev/null || echo "install-kube: etcd is not on PATH (Debian package etcd-server)" >&2
echo "install-kube: $("$cache/kube-apiserver" --version) / kubectl $KUBE_VERSION / $(etcd --version 2>/dev/null | head -n 1)" >&2
echo "$cache"
