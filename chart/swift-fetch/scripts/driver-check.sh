# Init container of the inference pods (inference.driverCheck.minVersion): fail the pod, with a
# message saying why, when the NVIDIA driver on any of its GPUs is older than the minimum.
# Usage: sh -c "$(cat driver-check.sh)" driver-check MIN_VERSION
set -eu
min="$1"

say() { echo "driver check: $*" >&2; }

# Versions such as 535.104.05 compare field by field as numbers (05 is 5, a missing field is 0).
older() {
  a="$1" b="$2"
  while [ -n "$a$b" ]; do
    x="${a%%.*}" y="${b%%.*}"
    if [ "$a" = "$x" ]; then a=""; else a="${a#*.}"; fi
    if [ "$b" = "$y" ]; then b=""; else b="${b#*.}"; fi
    [ "${x:-0}" -lt "${y:-0}" ] && return 0
    [ "${x:-0}" -gt "${y:-0}" ] && return 1
  done
  return 1
}

if ! command -v nvidia-smi >/dev/null 2>&1; then
  say "nvidia-smi is not in this container. The NVIDIA container toolkit mounts it into containers that request a GPU: is the node's container runtime the NVIDIA one (or inference.runtimeClassName set), and does the pod request a GPU?"
  exit 1
fi
if ! out="$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>&1)"; then
  say "nvidia-smi failed: $out"
  exit 1
fi
[ -n "$out" ] || { say "nvidia-smi listed no GPU"; exit 1; }
bad=""
for v in $out; do
  case "$v" in
    *[!0-9.]* | .* | *. | "") say "unexpected driver version '$v' from nvidia-smi"; exit 1 ;;
  esac
  if older "$v" "$min"; then bad="$bad $v"; fi
done
if [ -n "$bad" ]; then
  say "NVIDIA driver$bad is older than the required $min (inference.driverCheck.minVersion): upgrade the node's driver or keep these pods off this node"
  exit 1
fi
echo "driver check: NVIDIA driver $(echo $out) >= $min"
