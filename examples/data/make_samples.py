#!/usr/bin/env python3
"""Writes the bundled samples: the first N test images and labels of MNIST and
Fashion-MNIST, and the first M training images and labels, as IDX gz files with the
original names (so `--data examples/data` works wherever a full IDX directory does).
The training sample is what `fhec build` calibrates and validates on by default (first
500 images: calibration; the next 1000: validation); the test sample serves the quick
start and the tests.

  python examples/data/make_samples.py --src ../shared/data --n 200 --train-n 1500
"""
import argparse
import gzip
import os
import struct

ap = argparse.ArgumentParser()
ap.add_argument("--src", default=os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data"))
ap.add_argument("--n", type=int, default=200)
ap.add_argument("--train-n", type=int, default=1500)
args = ap.parse_args()
here = os.path.dirname(os.path.abspath(__file__))
for ds in ("mnist", "fashion-mnist"):
    os.makedirs(os.path.join(here, ds), exist_ok=True)
    for split, n in (("t10k", args.n), ("train", args.train_n)):
        with gzip.open(os.path.join(args.src, ds, f"{split}-images-idx3-ubyte.gz")) as f:
            data = f.read()
        _, total, r, c = struct.unpack(">IIII", data[:16])
        body = data[16 : 16 + n * r * c]
        with gzip.GzipFile(os.path.join(here, ds, f"{split}-images-idx3-ubyte.gz"), "wb", mtime=0) as f:
            f.write(struct.pack(">IIII", 0x803, n, r, c) + body)
        with gzip.open(os.path.join(args.src, ds, f"{split}-labels-idx1-ubyte.gz")) as f:
            data = f.read()
        with gzip.GzipFile(os.path.join(here, ds, f"{split}-labels-idx1-ubyte.gz"), "wb", mtime=0) as f:
            f.write(struct.pack(">II", 0x801, n) + data[8 : 8 + n])
        print(ds, split, n, "images")
