#!/usr/bin/env python3
"""onnxruntime top-1 of an ONNX classifier on the MNIST / Fashion-MNIST test set (10,000 images).

The reference figure for the third-party models in `examples/models/external/`: what the
file itself computes under onnxruntime, with the preprocessing its origin uses, to compare
with `fhec eval --mode float`.

    ort_accuracy.py --model M.onnx --data ../shared/data --dataset mnist --preprocess unit
                    [--output NAME] [--input-size H,W] [--classes 0,1] [--limit N]
                    [--predictions FILE]

Preprocessing of a pixel p in 0..255: `unit` p/255, `raw255` p, `mnist-norm`
(p/255 - 0.1307)/0.3081.

Input layout is read from the model's single data input: [N,1,H,W] (NCHW), [N,H,W,1]
(NHWC), [N,H,W], or flattened [N,H*W]; the batch dimension may be fixed (1: one image per
run) or symbolic (batches of 500). Images go to the model's H x W (read from the model, or
`--input-size H,W` when the file does not say) by averaging k x l pixel blocks when
28 = kH = lW (14x14: 2x2 average pooling, 7x7: 4x4), or by centring the image on a border
of pixel value 0 when H, W >= 28 with even differences (32x32: 2 pixels each side); the
preprocessing is applied to the resulting (not rounded) pixel values. Any other size is an
error.

The class is the argmax over the last axis of the first output, or of `--output NAME` when
the model has several (for example logits and probabilities). `--classes 0,1` is for a model
trained on a subset of the labels (output index i means label classes[i]): "top1" is then
measured on the test images of those labels only, and "top1_all" on all of them (the figure
`fhec eval`, which compares the output index with the label, prints for such a model).

`--predictions FILE` writes the predicted output index of every image, one per line (the
format of `fhec eval --predictions`, so the two files can be compared with `cmp`).

Prints one JSON object: {"model", "dataset", "preprocess", "correct", "total", "top1", ...}.
Exits 2 with a message on stderr on any error (missing file, unknown output, shapes).
"""

import argparse
import gzip
import json
import math
import os
import struct
import sys

import numpy as np

ORT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(uint8)": np.uint8}
PREPROCESS = {
    "unit": lambda p: p / 255.0,
    "raw255": lambda p: p,
    "mnist-norm": lambda p: (p / 255.0 - 0.1307) / 0.3081,
}


class Error(Exception):
    """A reported failure (exit 2)."""


def read_idx(path):
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        buf = f.read()
    if len(buf) < 4 or buf[:3] != b"\x00\x00\x08":
        raise Error(f"{path}: not a uint8 IDX file")
    dims = struct.unpack(">" + "I" * buf[3], buf[4:4 + 4 * buf[3]])
    data = np.frombuffer(buf, np.uint8, offset=4 + 4 * len(dims))
    if data.size != int(np.prod(dims)):
        raise Error(f"{path}: {data.size} values, header says {dims}")
    return data.reshape(dims)


def find_file(data_dir, dataset, stem):
    for d in (os.path.join(data_dir, dataset), data_dir):
        for name in (stem + ".gz", stem):
            p = os.path.join(d, name)
            if os.path.isfile(p):
                return p
    raise Error(f"{stem}.gz not found in {data_dir} or {os.path.join(data_dir, dataset)}")


def load_test(data_dir, dataset):
    x = read_idx(find_file(data_dir, dataset, "t10k-images-idx3-ubyte"))
    y = read_idx(find_file(data_dir, dataset, "t10k-labels-idx1-ubyte"))
    if x.ndim != 3 or x.shape[1:] != (28, 28) or y.ndim != 1 or len(y) != len(x):
        raise Error(f"{dataset} test set: images {x.shape}, labels {y.shape}: need [N,28,28] and [N]")
    return x, y.astype(int)


def resize(x, h, w):
    """[N,28,28] pixel values (float) to [N,h,w] by the rule in the module doc."""
    if (h, w) == (28, 28):
        return x, "none"
    if 28 % h == 0 and 28 % w == 0:
        k, l = 28 // h, 28 // w
        return x.reshape(len(x), h, k, w, l).mean(axis=(2, 4)), f"{k}x{l} average pooling"
    if h >= 28 and w >= 28 and (h - 28) % 2 == 0 and (w - 28) % 2 == 0:
        ph, pw = (h - 28) // 2, (w - 28) // 2
        return np.pad(x, ((0, 0), (ph, ph), (pw, pw))), f"zero border {ph},{pw} (pixel value 0)"
    raise Error(f"input size {h}x{w}: no rule from 28x28 (needs 28 divisible by H and W, "
                f"or H, W >= 28 with an even difference)")


def to_layout(x, layout):
    if layout == "NCHW":
        return x[:, None, :, :]
    if layout == "NHWC":
        return x[:, :, :, None]
    if layout == "NHW":
        return x
    return x.reshape(len(x), -1)  # flat


def input_info(model, size_flag):
    """(name, layout, (h, w), shown dims, batch fixed to 1) of the model's single data input."""
    g = model.graph
    inits = {t.name for t in g.initializer}
    ins = [i for i in g.input if i.name not in inits]
    if len(ins) != 1:
        raise Error(f"model has {len(ins)} data inputs ({', '.join(i.name for i in ins)}): need 1")
    inp = ins[0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
    shown = [d if d is not None else "?" for d in dims]
    rest = dims[1:]
    if len(dims) == 4 and rest[0] == 1:
        layout, hw = "NCHW", (rest[1], rest[2])
    elif len(dims) == 4 and rest[2] == 1:
        layout, hw = "NHWC", (rest[0], rest[1])
    elif len(dims) == 3:
        layout, hw = "NHW", (rest[0], rest[1])
    elif len(dims) == 2:
        layout = "flat"
        side = math.isqrt(rest[0]) if rest[0] else None
        hw = (side, side) if side and side * side == rest[0] else (None, None)
    else:
        raise Error(f"input {inp.name} of shape {shown}: need [N,1,H,W], [N,H,W,1], [N,H,W] or [N,H*W]")
    if size_flag:
        if all(hw) and tuple(hw) != tuple(size_flag) and not (layout == "flat" and hw[0] * hw[1] == size_flag[0] * size_flag[1]):
            raise Error(f"--input-size {size_flag[0]},{size_flag[1]} but input {inp.name} is {shown}")
        hw = tuple(size_flag)
    elif not all(hw):
        hw = (28, 28)
    if layout == "flat" and rest[0] and rest[0] != hw[0] * hw[1]:
        raise Error(f"input {inp.name} of shape {shown} is not {hw[0]}x{hw[1]} pixels")
    return inp.name, layout, tuple(hw), shown, dims[0] == 1


def fail(msg):
    print(f"ort_accuracy: {msg}", file=sys.stderr)
    sys.exit(2)


def parse_hw(text):
    try:
        h, w = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--input-size takes H,W (got {text!r})") from None
    if h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError("--input-size: H and W must be positive")
    return h, w


def parse_classes(text):
    try:
        cls = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--classes takes a comma-separated label list (got {text!r})") from None
    if len(set(cls)) != len(cls) or any(c < 0 or c > 9 for c in cls):
        raise argparse.ArgumentTypeError("--classes: distinct labels in 0..9")
    return cls


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, help="folder with the IDX files, directly or in mnist/ / fashion-mnist/")
    ap.add_argument("--dataset", choices=["mnist", "fashion-mnist"], default="mnist")
    ap.add_argument("--preprocess", choices=sorted(PREPROCESS), default="unit")
    ap.add_argument("--output", help="name of the class-score output (default: the first)")
    ap.add_argument("--input-size", type=parse_hw, help="H,W of the model input when the file leaves it symbolic")
    ap.add_argument("--classes", type=parse_classes, help="labels of the model's output indices, for a subset model")
    ap.add_argument("--limit", type=int, default=0, help="first N test images only (default: all)")
    ap.add_argument("--predictions", help="write the predicted output index of every image to this file, one per line")
    args = ap.parse_args()

    try:
        import onnx
        import onnxruntime as ort
    except ImportError as e:
        fail(f"needs the onnx and onnxruntime packages: {e}")
    if not os.path.isfile(args.model):
        fail(f"model not found: {args.model}")
    try:
        model = onnx.load(args.model)
    except Exception as e:  # noqa: BLE001
        fail(f"cannot read {args.model}: {e}")
    try:
        name, layout, hw, dims, fixed_batch = input_info(model, args.input_size)
        raw, labels = load_test(args.data, args.dataset)
    except Error as e:
        fail(str(e))
    if args.limit:
        raw, labels = raw[:args.limit], labels[:args.limit]

    try:
        sess = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001
        fail(f"onnxruntime cannot load {args.model}: {' '.join(str(e).split())[:400]}")
    outs = [o.name for o in sess.get_outputs()]
    out = args.output or outs[0]
    if out not in outs:
        fail(f"no output {out!r}; the model's outputs are {outs}")
    in_type = next(i.type for i in sess.get_inputs() if i.name == name)
    if in_type not in ORT_TYPES:
        fail(f"input {name} has type {in_type}: need float, double or uint8")

    try:
        x, rule = resize(raw.astype(np.float64), *hw)
    except Error as e:
        fail(str(e))
    x = to_layout(PREPROCESS[args.preprocess](x), layout).astype(ORT_TYPES[in_type])
    batch = 1 if fixed_batch else 500
    preds = []
    try:
        for i in range(0, len(x), batch):
            scores = sess.run([out], {name: x[i:i + batch]})[0]
            preds.append(np.asarray(scores).reshape(len(x[i:i + batch]), -1).argmax(axis=1))
    except Exception as e:  # noqa: BLE001
        fail(f"onnxruntime failed on {args.model}: {' '.join(str(e).split())[:400]}")
    pred = np.concatenate(preds)
    if args.predictions:
        try:
            with open(args.predictions, "w") as f:
                f.write("".join(f"{int(p)}\n" for p in pred))
        except OSError as e:
            fail(f"cannot write {args.predictions}: {e}")

    result = {"model": args.model, "dataset": args.dataset, "preprocess": args.preprocess,
              "input": name, "input_shape": dims, "layout": layout, "input_size": list(hw),
              "resize": rule, "output": out}
    if args.classes:
        cls = np.array(args.classes)
        if pred.max() >= len(cls):
            fail(f"output {out} has index {int(pred.max())} but --classes lists {len(cls)} labels")
        digit = cls[pred]
        keep = np.isin(labels, cls)
        correct = int((digit[keep] == labels[keep]).sum())
        result.update({"classes": args.classes, "correct": correct, "total": int(keep.sum()),
                       "top1": round(correct / max(int(keep.sum()), 1), 4),
                       "top1_all": round(float((pred == labels).mean()), 4)})
    else:
        correct = int((pred == labels).sum())
        result.update({"correct": correct, "total": len(labels), "top1": round(correct / len(labels), 4)})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
