#!/usr/bin/env bash
# Trains the bundled transform models (examples/models/transforms/): the seed network on
# etc:4, skk and tanaka:4 images of MNIST and Fashion-MNIST under the published demo key.
# One command, from the repository root:
#   PYTHON=.venv/bin/python DATA=../shared/data bash examples/train/train_transforms.sh
# The key is made only if absent (never replaced: the committed models were trained with it).
set -euo pipefail
python="${PYTHON:-.venv/bin/python}"
data="${DATA:-../shared/data}"
dir=examples/models/transforms
key="$dir/demo.key"
if [ ! -f "$key" ]; then
    cargo run --quiet --bin fhec -- transform-key -o "$key"
fi
for scheme in etc:4 skk tanaka:4; do
    prefix="${scheme/:/}"
    for dataset in mnist fashion-mnist; do
        suffix="${dataset%-mnist}"
        "$python" examples/train/train.py --arch seed --dataset "$dataset" --data "$data" \
            --out "$dir/${prefix}_seed_${suffix}.onnx" --compile-widths 4/5/7/6 \
            --transform "$scheme" --transform-key "$key"
    done
done
