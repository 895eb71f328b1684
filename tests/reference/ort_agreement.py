#!/usr/bin/env python3
"""Checks `fhec eval --mode float` against onnxruntime prediction by prediction.

Runs the model in onnxruntime on a whole IDX test set, runs `fhec eval ... --predictions`,
and reports both accuracies and the images where the predicted classes differ.
Needs onnxruntime and numpy (tests/fixtures/requirements.txt); not part of CI.

  python tests/reference/ort_agreement.py examples/models/cnn_mnist.onnx \
      --dataset mnist --data ../shared/data [--preprocess unit] [--fhec target/debug/fhec]
"""
import argparse
import gzip
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort

PRE = {
    "unit": lambda p: p / 255.0,
    "raw255": lambda p: p,
    "mnist-norm": lambda p: (p / 255.0 - 0.1307) / 0.3081,
}


def idx(path):
    op = gzip.open if path.endswith(".gz") else open
    with op(path, "rb") as f:
        data = f.read()
    nd = struct.unpack(">I", data[:4])[0] & 0xFF
    dims = struct.unpack(">" + "I" * nd, data[4 : 4 + 4 * nd])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * nd).reshape(dims)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--preprocess", default="unit", choices=sorted(PRE))
    ap.add_argument("--fhec", default="target/debug/fhec")
    a = ap.parse_args()
    d = a.data if os.path.exists(os.path.join(a.data, "t10k-labels-idx1-ubyte.gz")) else os.path.join(a.data, a.dataset)
    x = idx(os.path.join(d, "t10k-images-idx3-ubyte.gz")).astype(np.float32)
    y = idx(os.path.join(d, "t10k-labels-idx1-ubyte.gz")).astype(np.int64)
    sess = ort.InferenceSession(a.model, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [1 if not isinstance(s, int) else s for s in inp.shape]
    ort_pred = []
    for img in x:
        v = PRE[a.preprocess](img).astype(np.float32).reshape(shape)
        ort_pred.append(int(np.argmax(sess.run(None, {inp.name: v})[0])))
    ort_pred = np.array(ort_pred)
    with tempfile.TemporaryDirectory() as t:
        pf = os.path.join(t, "p.txt")
        r = subprocess.run([a.fhec, "eval", a.model, "--dataset", a.dataset, "--data", a.data, "--mode", "float",
                            "--preprocess", a.preprocess, "--predictions", pf], capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(r.stderr)
        fhec_line = r.stdout.strip().splitlines()[-1]
        fhec_pred = np.loadtxt(pf, dtype=np.int64)
    diff = np.nonzero(fhec_pred != ort_pred)[0]
    print(f"{a.model} on {a.dataset} ({len(y)} images, preprocess {a.preprocess})")
    print(f"onnxruntime {ort.__version__}: accuracy {np.mean(ort_pred == y):.4f} ({int(np.sum(ort_pred == y))}/{len(y)})")
    print(f"fhec float:  {fhec_line}")
    print(f"predictions that differ: {len(diff)} {list(diff[:20])}")
    sys.exit(1 if len(diff) else 0)


if __name__ == "__main__":
    main()
