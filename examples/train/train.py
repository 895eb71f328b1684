#!/usr/bin/env python3
"""Trains fhec's bundled grayscale CNNs on MNIST / Fashion-MNIST and exports ONNX.

CPU only, PyTorch from PyPI (see requirements.txt). Reads the IDX files as distributed
(`--data DIR` holding `mnist/` and `fashion-mnist/`, default `../shared/data`).
CI never runs this: the exported models are committed under `examples/models/`.

Architectures (`--arch`):
  cnn   a small CNN for encrypted inference: Conv(1->8, 5x5, stride 2) ReLU
        Conv(8->16, 5x5, stride 2) ReLU Linear(256->10); input p/255.
  seed  the TenSEAL encrypted-convolution tutorial network: Conv(1->4, 7x7, stride 3)
        x*x Linear(256->64) x*x Linear(64->10); Adam 1e-3, 10 epochs, batch 64,
        seed 73, input p/255 (no normalisation), as the tutorial trains it.

Each export carries its preprocessing in the ONNX metadata (`fhec.preprocess`), and a
JSON file beside it records the command, seed and measured float accuracy.

Example:
  python examples/train/train.py --arch seed --dataset mnist --out examples/models/seed_mnist.onnx
"""
import argparse
import gzip
import json
import os
import struct
import sys
import time

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(data_dir, dataset, split):
    d = os.path.join(data_dir, dataset)
    prefix = "train" if split == "train" else "t10k"
    x = read_idx(os.path.join(d, f"{prefix}-images-idx3-ubyte.gz")).astype(np.float32) / 255.0
    y = read_idx(os.path.join(d, f"{prefix}-labels-idx1-ubyte.gz")).astype(np.int64)
    return torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y)


class Cnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 5, stride=2)
        self.conv2 = nn.Conv2d(8, 16, 5, stride=2)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        return self.fc(x.flatten(1))


class Seed(nn.Module):
    """TenSEAL tutorial 4's ConvNet (hidden 64, output 10)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, kernel_size=7, padding=0, stride=3)
        self.fc1 = nn.Linear(256, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = self.conv1(x)
        x = x * x
        x = x.view(-1, 256)
        x = self.fc1(x)
        x = x * x
        return self.fc2(x)


ARCHS = {"cnn": (Cnn, 5), "seed": (Seed, 10)}


def accuracy(net, x, y):
    net.eval()
    with torch.no_grad():
        pred = torch.cat([net(x[i : i + 1000]).argmax(1) for i in range(0, len(x), 1000)])
    return (pred == y).float().mean().item()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=sorted(ARCHS), required=True)
    ap.add_argument("--dataset", choices=["mnist", "fashion-mnist"], required=True)
    ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--seed", type=int, default=73)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(args.threads)
    make, default_epochs = ARCHS[args.arch]
    epochs = args.epochs or default_epochs
    xtr, ytr = load(args.data, args.dataset, "train")
    xte, yte = load(args.data, args.dataset, "test")
    net = make()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xtr, ytr), batch_size=64, shuffle=True)
    t0 = time.time()
    for epoch in range(epochs):
        net.train()
        total = 0.0
        for xb, yb in loader:
            opt.zero_grad()
            loss = F.cross_entropy(net(xb), yb)
            loss.backward()
            opt.step()
            total += loss.item() * len(xb)
        print(f"epoch {epoch + 1}/{epochs}: loss {total / len(xtr):.4f}, test acc {accuracy(net, xte, yte):.4f}", flush=True)
    acc = accuracy(net, xte, yte)

    net.eval()
    torch.onnx.export(
        net, torch.zeros(1, 1, 28, 28), args.out, opset_version=13,
        input_names=["image"], output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
    )
    m = onnx.load(args.out)
    onnx.helper.set_model_props(m, {"fhec.preprocess": "unit", "fhec.dataset": args.dataset, "fhec.arch": args.arch})
    onnx.save(m, args.out)
    info = {
        "command": " ".join(["python", "examples/train/train.py"] + sys.argv[1:]),
        "arch": args.arch, "dataset": args.dataset, "seed": args.seed, "epochs": epochs,
        "float_test_accuracy_torch": round(acc, 4), "train_seconds": round(time.time() - t0, 1),
        "torch": torch.__version__, "preprocess": "unit",
    }
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump(info, f, indent=2)
    print(json.dumps(info))


if __name__ == "__main__":
    main()
