#!/usr/bin/env bash
# Builds a local stand-in for the official Node image, for machines where Docker Hub is not
# reachable, and prints its name on stdout (progress on stderr):
#   BASE_IMAGE=$(bash .ci/build-base.sh)
#   podman build --network host --build-arg BASE_IMAGE="$BASE_IMAGE" -t swift-fetch .
# Debian trixie from the Debian archive (mmdebstrap), laid out like the official image: Node from
# the distribution (trixie ships 20.19, which satisfies package.json's engines) with its headers
# (libnode-dev: better-sqlite3 is compiled against them), npm from the npm registry in /usr/local
# (the official image's npm; Debian's npm package would pull in 160 MB of node-* packages and
# python3 through node-gyp, and every one of them would end up in the runtime stage), CA
# certificates and useradd.
#
# The host's CA bundle is copied in and NODE_EXTRA_CA_CERTS points at it: where registries are
# reached through a TLS-intercepting proxy, the host trusts the proxy's CA and RUN steps (npm ci)
# must too. This base is for local builds only; published images use the official base.
#
# Cached: the tarball and the imported image are named by a key over everything that goes into
# them (the mmdebstrap command line, the npm tarball's integrity, the host's CA bundle, the apt
# settings), so a re-run with nothing changed takes a fraction of a second and an edited recipe
# builds a new base. SWIFT_FETCH_BASE_REFRESH=1 rebuilds anyway (e.g. for Debian security updates).
set -euo pipefail
SUITE="${SWIFT_FETCH_BASE_SUITE:-trixie}"
MIRROR="${SWIFT_FETCH_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${SWIFT_FETCH_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
PACKAGES="nodejs,libnode-dev,ca-certificates,passwd"
# The npm that Node 20's official images bundle, checked against the registry's integrity.
NPM_VERSION="10.8.2"
NPM_INTEGRITY="sha512-x/AIjFIKRllrhcb48dqUNAAZl0ig9+qMuN91RpZo3Cb2+zuibfh+KISl6+kVVyktDz230JKc208UkQwwMqyB+w=="
CA_BUNDLE="${SWIFT_FETCH_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
NAME="${SWIFT_FETCH_BASE_IMAGE_NAME:-localhost/swift-fetch-node-base}"
cache="${SWIFT_FETCH_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/swift-fetch/image}"
mkdir -p "$cache"

for tool in mmdebstrap podman npm node; do
  command -v "$tool" >/dev/null || { echo "build-base: $tool is not installed (apt-get install mmdebstrap podman; Node with npm)" >&2; exit 1; }
done
[ -r "$CA_BUNDLE" ] || { echo "build-base: no CA bundle at $CA_BUNDLE" >&2; exit 1; }

# As in Debian's own container images: apt keeps no package caches or downloaded .debs, so an
# `apt-get install` in a Dockerfile adds only the packages to its layer (not 90 MB of caches).
apt_conf="$cache/docker-clean.conf"
cat > "$apt_conf.tmp" <<'CONF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Acquire::Languages "none";
CONF
mv -f "$apt_conf.tmp" "$apt_conf"
npm_tgz="$cache/npm-$NPM_VERSION.tgz"

# Docs, man pages and locales are left out as in Debian's slim images; npm is unpacked where the
# official image has it.
recipe=(
  --variant=apt --format=tar --include="$PACKAGES"
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-exclude=/usr/share/info/*'
  --customize-hook="upload $apt_conf /etc/apt/apt.conf.d/docker-clean"
  --customize-hook="upload $CA_BUNDLE /etc/ssl/certs/ca-certificates.crt"
  --customize-hook='mkdir -p "$1/usr/local/lib/node_modules/npm"'
  --customize-hook="tar -xzf $npm_tgz -C \"\$1/usr/local/lib/node_modules/npm\" --strip-components=1 --no-same-owner"
  --customize-hook='ln -s ../lib/node_modules/npm/bin/npm-cli.js "$1/usr/local/bin/npm"'
  --customize-hook='ln -s ../lib/node_modules/npm/bin/npx-cli.js "$1/usr/local/bin/npx"'
  --customize-hook='chroot "$1" npm --version'
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin'
)
sources=("deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" "deb $SECURITY_MIRROR $SUITE-security main")
key=$( { printf '%s\n' "$SUITE" "${recipe[@]}" "${sources[@]}" "$NPM_INTEGRITY"; sha256sum < "$CA_BUNDLE"; cat "$apt_conf"; } \
  | sha256sum | cut -c1-16)
image="$NAME:$SUITE-$key"
tarball="$cache/node-base-$SUITE-$key.tar"

if [ "${SWIFT_FETCH_BASE_REFRESH:-}" != 1 ] && podman image exists "$image"; then
  echo "build-base: $image is up to date" >&2
  echo "$image"
  exit 0
fi

integrity() { node -e 'const c=require("crypto"),fs=require("fs");console.log("sha512-"+c.createHash("sha512").update(fs.readFileSync(process.argv[1])).digest("base64"))' "$1"; }
if [ ! -s "$npm_tgz" ] || [ "$(integrity "$npm_tgz")" != "$NPM_INTEGRITY" ]; then
  echo "build-base: npm pack npm@$NPM_VERSION" >&2
  tmp=$(mktemp -d "$cache/.npm.XXXXXX")
  (cd "$tmp" && npm pack --silent "npm@$NPM_VERSION" >/dev/null)
  got=$(integrity "$tmp/npm-$NPM_VERSION.tgz")
  [ "$got" = "$NPM_INTEGRITY" ] || { echo "build-base: npm-$NPM_VERSION.tgz has integrity $got, expected $NPM_INTEGRITY" >&2; rm -rf "$tmp"; exit 1; }
  mv -f "$tmp/npm-$NPM_VERSION.tgz" "$npm_tgz"
  rm -rf "$tmp"
fi

if [ "${SWIFT_FETCH_BASE_REFRESH:-}" = 1 ] || [ ! -s "$tarball" ]; then
  echo "build-base: mmdebstrap $SUITE ($PACKAGES) -> $tarball" >&2
  start=$(date +%s)
  # Written beside the final name and renamed, so an interrupted run leaves no half tarball.
  mmdebstrap "${recipe[@]}" "$SUITE" "$tarball.tmp" "${sources[@]}" >&2
  mv -f "$tarball.tmp" "$tarball"
  echo "build-base: mmdebstrap took $(( $(date +%s) - start )) s" >&2
  # Older tarballs of this suite are superseded.
  find "$cache" -maxdepth 1 -name "node-base-$SUITE-*.tar" ! -name "$(basename "$tarball")" -delete
fi

podman import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt' \
  --change 'CMD ["node"]' \
  --change "LABEL io.swift-fetch.base.suite=$SUITE io.swift-fetch.base.key=$key" \
  "$tarball" "$image" >&2
podman tag "$image" "$NAME:$SUITE"
# Bases built from older inputs are superseded; images built on them keep their layers.
for old in $(podman images --format '{{.Repository}}:{{.Tag}}' | grep -E "^$NAME:$SUITE-[0-9a-f]{16}\$" | grep -vxF "$image"); do
  podman untag "$old" "$old" >&2
done
echo "build-base: imported $image ($(podman run --rm --network none "$image" node --version))" >&2
echo "$image"
