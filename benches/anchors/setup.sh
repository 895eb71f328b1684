#!/usr/bin/env bash
# Create benches/anchors/.venv (if missing) and install the TenSEAL anchor's pinned requirements.
# Idempotent: a second run only checks that the pins are satisfied.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
if [ ! -x "$venv/bin/python" ]; then
    echo "creating $venv" >&2
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
"$venv/bin/python" -c 'import tenseal, onnx, numpy'
echo "TenSEAL anchor env ready: $venv" >&2
