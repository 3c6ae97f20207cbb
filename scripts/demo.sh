#!/usr/bin/env bash
# Offline demo: serve a tiny model from the fake hub on loopback, pull it over both protocols into
# ./demo-store, and show what each reader finds. No internet needed (after npm ci). The fake hub
# takes two free ports, one on 127.0.0.1 (hub API) and one on 127.0.0.2 (its CDN), and prints them.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d node_modules ] || npm ci
[ -f dist/cli/main.js ] || npm run build
work=.demo
rm -rf "$work" && mkdir -p "$work"
node_modules/.bin/tsx test/fakehub/main.ts --make-demo "$work/hub" >/dev/null
node_modules/.bin/tsx test/fakehub/main.ts --root "$work/hub" --port 0 >"$work/hub.out" 2>"$work/hub.err" &
hub=$!
trap 'kill $hub 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do grep -q MODELSCOPE_ENDPOINT "$work/hub.out" 2>/dev/null && break; sleep 0.1; done
eval "export $(grep '^HF_ENDPOINT=' "$work/hub.out")"
eval "export $(grep '^MODELSCOPE_ENDPOINT=' "$work/hub.out")"
echo "fake hub: HF_ENDPOINT=$HF_ENDPOINT MODELSCOPE_ENDPOINT=$MODELSCOPE_ENDPOINT"
grep '^fake-hub: CDN' "$work/hub.err" || true

store=${SWIFT_FETCH_STORE:-$PWD/demo-store}
set -x
node bin/swift-fetch.js pull hf://demo/tiny-model --store "$store"
node bin/swift-fetch.js pull ms://demo/tiny-model --store "$store"
node bin/swift-fetch.js ls --store "$store"
node bin/swift-fetch.js pull hf://demo/tiny-model --store "$store" --json | tail -n 1
ls -l "$(node bin/swift-fetch.js path hf://demo/tiny-model --store "$store")"
set +x
if [ -x .venv/bin/python ]; then
  echo "huggingface_hub, offline, from the store:"
  HF_HOME="$store/huggingface" HF_HUB_OFFLINE=1 .venv/bin/python -c \
    'from huggingface_hub import snapshot_download; print(snapshot_download("demo/tiny-model"))'
  echo "modelscope, offline, from the store:"
  MODELSCOPE_CACHE="$store/modelscope" .venv/bin/python -c \
    'from modelscope import snapshot_download; print(snapshot_download("demo/tiny-model", local_files_only=True))' 2>/dev/null
else
  echo "no .venv: skipping the Python readers (bash .ci/setup-python.sh makes it: python3 -m venv .venv + the hub clients)"
fi
