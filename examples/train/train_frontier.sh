#!/usr/bin/env bash
# Trains the accuracy/speed frontier models (examples/models/frontier/, issue 25): networks
# designed for fhec's cost model: one strided convolution (7x7 stride 3: 8x8 maps; in the
# `k8s4` ones 8x8 stride 4: 6x6 maps; in the `k12s4` one 12x12 stride 4: 5x5 maps) and one
# small dense layer, 4-bit inputs / weights / activations (6 / 5 / 5 in some, free in the
# circuit) and 5-bit tables read with approximate rounding, the circuit's rounding modelled
# in training; from 104 to 2,176 activations. The `_sq` ones
# with clipped-square activations instead of clipped ReLUs (same cost, more accuracy per
# table), the `_kd` ones distilled from a large float teacher (trained first, kept in
# examples/train/work/, not committed). `fashion_c24k8s4f384_sq` also trains with label
# smoothing and weight decay, and with the tables' ranges taken from fhec's 500 calibration
# images (`--calibrate-ranges`), so its test accuracy is the circuit's.
# One command, from the repository root (two or three trainings at a time, one thread each; about
# 115 minutes on 2 cores, most of it the distillations, whose teacher runs on every batch):
#   PYTHON=.venv/bin/python DATA=../shared/data bash examples/train/train_frontier.sh
# `fhec-bench frontier` (`cargo bench-table frontier --data ../shared/data`) measures them.
set -euo pipefail
python="${PYTHON:-.venv/bin/python}"
data="${DATA:-../shared/data}"
dir=examples/models/frontier
work=examples/train/work
mkdir -p "$dir" "$work"
mnist=(--dataset mnist --input-bits 4 --weight-bits 4 --act-bits 4 --max-table-bits 5
       --model-rounding --augment affine --window-penalty 0.1)
fashion=(--dataset fashion-mnist --input-bits 6 --weight-bits 4 --act-bits 4 --max-table-bits 5
         --model-rounding --augment flip --window-penalty 0.1)
train() {
    local out="$1"; shift
    "$python" examples/train/train.py --arch qnet --data "$data" --threads 1 --out "$dir/$out" "$@" \
        > "$dir/${out%.onnx}.log" 2>&1
}
teacher() {
    local name="$1"; shift
    "$python" examples/train/train.py --arch teacher --data "$data" --threads 1 \
        --save-torch "$work/$name.pt" --out "$work/$name.onnx" "$@" > "$work/$name.log" 2>&1
}
teacher teacher_mnist --dataset mnist --augment affine --epochs 4 &
teacher teacher_fashion --dataset fashion-mnist --augment flip --epochs 5 &
wait
train mnist_c2f16.onnx "${mnist[@]}" --layers c2k7s3,f16 --epochs 15 &
train mnist_c3f24.onnx "${mnist[@]}" --layers c3k7s3,f24 --epochs 15 &
wait
train mnist_c10f96.onnx "${mnist[@]}" --layers c10k7s3,f96 --epochs 30 &
train mnist_c16f128.onnx "${mnist[@]}" --layers c16k7s3,f128 --epochs 30 &
wait
train fashion_c2f16.onnx "${fashion[@]}" --layers c2k7s3,f16 --epochs 15 &
train fashion_c4f32.onnx "${fashion[@]}" --layers c4k7s3,f32 --epochs 15 &
wait
train fashion_c3f24.onnx "${fashion[@]}" --layers c3k7s3,f24 --epochs 15 &
train fashion_c16f128.onnx "${fashion[@]}" --layers c16k7s3,f128 --epochs 10
train mnist_c16f128_kd.onnx "${mnist[@]}" --layers c16k7s3,f128 --epochs 30 --teacher "$work/teacher_mnist.pt" &
train fashion_c16f128_kd.onnx "${fashion[@]}" --layers c16k7s3,f128 --epochs 10 --teacher "$work/teacher_fashion.pt" &
wait
train mnist_c12f96_sq.onnx "${mnist[@]}" --layers c12k7s3,f96 --act square --epochs 30 &
train mnist_c16f128_sq.onnx "${mnist[@]}" --layers c16k7s3,f128 --act square --epochs 30 &
wait
train fashion_c3f24_sq.onnx "${fashion[@]}" --layers c3k7s3,f24 --act square --epochs 15 &
train fashion_c16f128_sq.onnx "${fashion[@]}" --layers c16k7s3,f128 --act square --epochs 10 &
train fashion_c32f128_sq.onnx "${fashion[@]}" --layers c32k7s3,f128 --act square --epochs 30
wait
train mnist_c2k8s4f32_sq.onnx "${mnist[@]}" --layers c2k8s4,f32 --act square --epochs 15 &
train fashion_c2k8s4f32_sq.onnx "${fashion[@]}" --layers c2k8s4,f32 --act square --epochs 15 &
wait
train mnist_c14k8s4f96_sq.onnx "${mnist[@]}" --layers c14k8s4,f96 --epochs 30 --act square \
    --input-bits 6 --weight-bits 5 --act-bits 5 --seed 1 &
train fashion_c32k8s4f128_sq.onnx "${fashion[@]}" --layers c32k8s4,f128 --epochs 30 --act square \
    --weight-bits 5 --act-bits 5 &
wait
train mnist_c18k12s4f96_sq.onnx "${mnist[@]}" --layers c18k12s4,f96 --epochs 30 --act square \
    --input-bits 6 --weight-bits 5 --act-bits 5 &
train fashion_c24k8s4f384_sq.onnx "${fashion[@]}" --layers c24k8s4,f384 --epochs 30 --act square \
    --weight-bits 5 --act-bits 5 --label-smoothing 0.1 --weight-decay 0.05 --calibrate-ranges 500
wait
