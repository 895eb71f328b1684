#!/usr/bin/env python3
"""Writes the bundled samples: the first N test images and labels of MNIST and
Fashion-MNIST, as IDX gz files with the original names (so `--data examples/data`
works wherever a full IDX directory does).

  python examples/data/make_samples.py --src ../shared/data --n 200
"""
import argparse
import gzip
import os
import struct

ap = argparse.ArgumentParser()
ap.add_argument("--src", default=os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data"))
ap.add_argument("--n", type=int, default=200)
args = ap.parse_args()
here = os.path.dirname(os.path.abspath(__file__))
for ds in ("mnist", "fashion-mnist"):
    os.makedirs(os.path.join(here, ds), exist_ok=True)
    with gzip.open(os.path.join(args.src, ds, "t10k-images-idx3-ubyte.gz")) as f:
        data = f.read()
    _, n, r, c = struct.unpack(">IIII", data[:16])
    body = data[16 : 16 + args.n * r * c]
    with gzip.GzipFile(os.path.join(here, ds, "t10k-images-idx3-ubyte.gz"), "wb", mtime=0) as f:
        f.write(struct.pack(">IIII", 0x803, args.n, r, c) + body)
    with gzip.open(os.path.join(args.src, ds, "t10k-labels-idx1-ubyte.gz")) as f:
        data = f.read()
    with gzip.GzipFile(os.path.join(here, ds, "t10k-labels-idx1-ubyte.gz"), "wb", mtime=0) as f:
        f.write(struct.pack(">II", 0x801, args.n) + data[8 : 8 + args.n])
    print(ds, args.n, "images")
