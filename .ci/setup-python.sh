#!/usr/bin/env bash
# Creates .venv with the real hub clients the interop tests drive. Idempotent.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv="$here/.venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/test/interop/requirements.txt"
"$venv/bin/python" -c 'import huggingface_hub, modelscope, transformers; print("python clients:", huggingface_hub.__version__, modelscope.__version__, transformers.__version__)'
