#!/usr/bin/env bash
# Create the anchors' Python environments and install their pinned requirements.
#   setup.sh                  TenSEAL anchor in benches/anchors/.venv
#   setup.sh --concrete-ml    also the Concrete ML anchor in benches/anchors/.venv-cml (large: torch)
# Idempotent: a second run only checks that the pins are satisfied.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

make_env() { # venv requirements import-check
    local venv="$1" req="$2" check="$3"
    if [ ! -x "$venv/bin/python" ]; then
        echo "creating $venv" >&2
        python3 -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
    "$venv/bin/python" -c "$check"
    echo "anchor env ready: $venv" >&2
}

cml=0
for arg in "$@"; do
    case "$arg" in
        --concrete-ml) cml=1 ;;
        *) echo "setup.sh: unknown option $arg (known: --concrete-ml)" >&2; exit 2 ;;
    esac
done
make_env "$here/.venv" "$here/requirements.txt" 'import tenseal, onnx, numpy'
if [ "$cml" = 1 ]; then
    make_env "$here/.venv-cml" "$here/requirements-concrete-ml.txt" 'import concrete.ml, onnx, numpy, brevitas'
fi
