#!/usr/bin/env bash
# Writes the containers.conf podman needs in this sandbox and prints its path on stdout, so callers
# can do `export CONTAINERS_CONF=$(bash .ci/podman-setup.sh)`. The file lives in our cache, not in
# /etc: these are workarounds for this machine, not settings to impose on every podman user of it.
#   runtime = "runc"             crun is not installed here (podman's default on Debian).
#   cgroup_manager = "cgroupfs"  there is no systemd to manage scopes.
#   default_ulimits = []         podman would set rlimits (nofile, nproc) on every container, and
#                                setting rlimits is refused in this sandbox.
#   infra_image unset            the pod "pause" container is built locally from catatonit
#                                (localhost/podman-pause) instead of pulled from k8s.gcr.io.
# Idempotent: the file is rewritten only when its content changes.
set -euo pipefail
cache="${SWIFT_FETCH_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/swift-fetch/image}"
conf="$cache/containers.conf"
mkdir -p "$cache"

for tool in podman runc; do
  command -v "$tool" >/dev/null || { echo "podman-setup: $tool is not installed (apt-get install podman runc)" >&2; exit 1; }
done

want=$(cat <<'EOF'
# Written by .ci/podman-setup.sh (swift-fetch): podman settings this sandbox needs.
[containers]
default_ulimits = []

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
)
if [ ! -f "$conf" ] || [ "$(cat "$conf")" != "$want" ]; then
  printf '%s\n' "$want" > "$conf.tmp"
  mv -f "$conf.tmp" "$conf"
  echo "podman-setup: wrote $conf" >&2
fi

# Prove the settings work here before anything relies on them.
CONTAINERS_CONF="$conf" podman info --format '{{.Host.OCIRuntime.Name}} / {{.Host.CgroupManager}}' >/dev/null \
  || { echo "podman-setup: podman does not start with $conf" >&2; exit 1; }
echo "$conf"
