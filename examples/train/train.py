#!/usr/bin/env python3
"""Trains fhec's bundled grayscale CNNs on MNIST / Fashion-MNIST and exports ONNX.

CPU only, PyTorch from PyPI (see requirements.txt). Reads the IDX files as distributed
(`--data DIR` holding `mnist/` and `fashion-mnist/`, default `../shared/data`).
CI never runs this: the exported models are committed under `examples/models/`.

Architectures (`--arch`):
  cnn   a small CNN for encrypted inference: Conv(1->8, 5x5, stride 2) ReLU
        Conv(8->16, 5x5, stride 2) ReLU Linear(256->10); input p/255.
  teacher  a large float CNN (three 3x3 convolutions, 32/64/128 channels), only a teacher
        for knowledge distillation (`--save-torch T.pt`, then `--teacher T.pt`).
  seed  the TenSEAL encrypted-convolution tutorial network: Conv(1->4, 7x7, stride 3)
        x*x Linear(256->64) x*x Linear(64->10); Adam 1e-3, 10 epochs, batch 64,
        seed 73, input p/255 (no normalisation), as the tutorial trains it.
  seedq the same network, quantization-aware trained on fhec's grids (each x*x clipped
        at a learned bound and rounded to --act-bits; see --model-rounding).

Each export carries its preprocessing in the ONNX metadata (`fhec.preprocess`), and a
JSON file beside it records the command, seed and measured float accuracy.

Keyed image transforms (`--transform etc:B|skk|tanaka:B --transform-key FILE`): the model is trained
and tested on images transformed with the key (transforms.py, byte for byte as fhec), and
its metadata names the scheme (`fhec.transform`), never the key; fhec then needs the same
key file to calibrate (`fhec build --transform-key`) and to encrypt (`fhec encrypt
--transform-key`). The first layer of every architecture takes the transform's channels
(`transforms.output_shape`: two for Tanaka's scheme, 4-bit halves given as 17*v; one
otherwise), so `tanaka:B` trains like `etc:B` and `skk`.

Example:
  python examples/train/train.py --arch seed --dataset mnist --out examples/models/seed_mnist.onnx
"""
import argparse
import math
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import transforms  # noqa: E402  (beside this file)


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(data_dir, dataset, split, transform=None):
    """Images as (n, c, h, w) floats p/255 and labels; with `transform` = (scheme, key), the
    images are transforms.model_input of the IDX images (what fhec's client encrypts)."""
    d = os.path.join(data_dir, dataset)
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(os.path.join(d, f"{prefix}-images-idx3-ubyte.gz"))
    if transform:
        images = transforms.model_input(transform[0], transform[1], images)
    else:
        images = images[:, None]
    x = images.astype(np.float32) / 255.0
    y = read_idx(os.path.join(d, f"{prefix}-labels-idx1-ubyte.gz")).astype(np.int64)
    return torch.from_numpy(x), torch.from_numpy(y)


class Cnn(nn.Module):
    def __init__(self, in_channels=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 8, 5, stride=2)
        self.conv2 = nn.Conv2d(8, 16, 5, stride=2)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        return self.fc(x.flatten(1))


class Teacher(nn.Module):
    """A large float CNN, not meant for fhec: the teacher of `--teacher` (knowledge
    distillation). Conv(->32, 3x3) ReLU Conv(->64, 3x3) ReLU MaxPool(2) Conv(->128, 3x3) ReLU
    MaxPool(2) Dropout Linear(->256) ReLU Dropout Linear(->10)."""

    def __init__(self, in_channels=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.conv3 = nn.Conv2d(64, 128, 3, padding=1)
        self.fc1 = nn.Linear(128 * 7 * 7, 256)
        self.fc2 = nn.Linear(256, 10)
        self.drop = nn.Dropout(0.3)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.max_pool2d(F.relu(self.conv3(x)), 2)
        x = self.drop(F.relu(self.fc1(x.flatten(1))))
        return self.fc2(self.drop(x))


class Seed(nn.Module):
    """TenSEAL tutorial 4's ConvNet (hidden 64, output 10)."""

    def __init__(self, in_channels=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 4, kernel_size=7, padding=0, stride=3)
        self.fc1 = nn.Linear(256, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = self.conv1(x)
        x = x * x
        x = x.view(-1, 256)
        x = self.fc1(x)
        x = x * x
        return self.fc2(x)


def ste_round(x):
    """Rounding with the straight-through gradient."""
    return x + (torch.round(x) - x).detach()


class QState:
    """Quantization-aware training switches, shared by the layers of one network."""

    def __init__(self, input_bits, weight_bits, act_bits, table_bits):
        self.input_bits, self.weight_bits, self.act_bits = input_bits, weight_bits, act_bits
        self.table_bits = table_bits
        self.model_rounding = False
        # "observed": round over the range the accumulator takes on training batches (what
        # fhec's calibrated ranges see); "worst": over the worst case the weights allow.
        self.rounding_ranges = "observed"
        # Observed ranges from a calibration pass (`--calibrate-ranges`): `calibrating` makes
        # each layer take its range from the batch it sees; `frozen` keeps it while training.
        self.calibrating = False
        self.frozen = False
        self.export = False
        self.window_penalty = 0.0
        self.window_ratio = 2.0
        self.read_noise = 0.0


def fake_quant_export(x, scale):
    # Exported as QuantizeLinear -> DequantizeLinear (uint8, zero point 0); the clamp
    # before it keeps the integers in [0, 2^bits - 1], so fhec reads a bits-wide grid.
    return torch.fake_quantize_per_tensor_affine(x, float(scale), 0, 0, 255)


class QInput(nn.Module):
    """The image on fhec's input grid: round(p/255 * (2^b - 1)) / (2^b - 1)."""

    def __init__(self, q):
        super().__init__()
        self.q = q

    def forward(self, x):
        qmax = (1 << self.q.input_bits) - 1
        if self.q.export:
            return fake_quant_export(x, 1.0 / qmax)
        return ste_round(x * qmax) / qmax


def quant_weight(w, bits):
    """Symmetric per-output-channel weights on a (2^(bits-1) - 1)-level grid (STE)."""
    qmax = (1 << (bits - 1)) - 1
    s = w.detach().abs().flatten(1).max(1).values.clamp(min=1e-8) / qmax
    s = s.view(-1, *([1] * (w.dim() - 1)))
    return ste_round(w / s) * s


def fhec_rounding(acc, w_int, in_max, table_bits):
    """What fhec's circuit does before an activation table: the integer accumulator `acc`
    (input integers in [0, in_max] times integer weights) is shifted by its worst-case
    minimum and rounded exactly to `table_bits` bits (`k` low bits dropped, `k` from the
    worst-case span). Returns the value the table sees, as an accumulator (STE gradient)."""
    with torch.no_grad():
        red = tuple(range(1, w_int.dim()))
        lo = float((w_int.clamp(max=0).sum(red) * in_max).min())
        hi = float((w_int.clamp(min=0).sum(red) * in_max).max())
        span, k = hi - lo, 0
        while (int(span) + ((1 << (k - 1)) if k else 0)) >> k >= (1 << table_bits):
            k += 1
        if k == 0:
            return acc
        half = 1 << (k - 1)
        u = torch.floor((acc - lo + half) / (1 << k)) * (1 << k) + lo
    return acc + (u - acc).detach()


def observed_rounding(acc, lo, hi, table_bits, margin_pct=10, read_noise=0.0):
    """fhec's rounding before a table with calibrated ranges: the range [lo, hi] widened by
    the margin, `k` low bits dropped so that it fits `table_bits` bits, and the table reading
    the representative `lo + round((acc - lo) / 2^k) * 2^k` (clamped to the range, as values
    outside it are out of contract). Returns that value (STE gradient)."""
    with torch.no_grad():
        m = math.ceil((hi - lo) * margin_pct / 100) + 1
        lo, hi = math.floor(lo) - m, math.ceil(hi) + m
        span, k = hi - lo, 0
        while (int(span) + ((1 << (k - 1)) if k else 0)) >> k >= (1 << table_bits):
            k += 1
        if k == 0:
            return acc
        # read_noise: Gaussian noise (deviation in table steps) added before the read, like the
        # read noise of fhec's approximate rounding (a read near a step boundary lands one off).
        e = torch.randn_like(acc) * (read_noise * (1 << k)) if read_noise else 0.0
        t = torch.floor((acc - lo + (1 << (k - 1)) + e) / (1 << k)).clamp(0, (1 << table_bits) - 1)
        u = t * (1 << k) + lo
    return acc + (u - acc).detach()


class QLayer(nn.Module):
    """A convolution or dense layer on fhec's integer grid: integer inputs (step `in_scale`)
    times per-channel integer weights, the accumulator rounded as fhec rounds it before the
    next table (when `round_for_table`), then dequantized and biased."""

    def __init__(self, q, inner, in_bits, round_for_table=True, pool=1):
        super().__init__()
        self.q, self.inner, self.in_bits, self.round_for_table = q, inner, in_bits, round_for_table
        # Average pooling (pool x pool, stride pool) after the convolution, before the
        # activation: fhec compiles it as an integer sum pool of the accumulators (free), the
        # 1/pool^2 folded into the next table, so the table reads the summed accumulator.
        self.pool = pool
        # Observed accumulator range (EMA of batch extremes), for observed-range rounding.
        self.wbits = None  # this layer's weight bits, if not q.weight_bits (fhec finds the coarser grid)
        self.register_buffer("acc_lo", torch.tensor(float("nan")))
        self.register_buffer("acc_hi", torch.tensor(float("nan")))

    def weight_bits(self):
        return self.wbits or self.q.weight_bits

    def forward(self, x, in_scale):
        m = self.inner
        if self.q.export:
            return F.avg_pool2d(m(x), self.pool) if self.pool > 1 else m(x)
        qmax = (1 << (self.weight_bits() - 1)) - 1
        w = m.weight
        s = w.detach().abs().flatten(1).max(1).values.clamp(min=1e-8) / qmax
        w_int = ste_round(w / s.view(-1, *([1] * (w.dim() - 1))))
        x_int = x / in_scale
        if isinstance(m, nn.Conv2d):
            acc = F.conv2d(x_int, w_int, None, m.stride, m.padding)
            if self.pool > 1:
                acc = F.avg_pool2d(acc, self.pool) * (self.pool * self.pool)  # integer sum pool
            shape = (1, -1, 1, 1)
        else:
            acc = F.linear(x_int, w_int)
            shape = (1, -1)
        if self.round_for_table and self.q.model_rounding:
            if self.q.rounding_ranges == "worst":
                acc = fhec_rounding(acc, w_int.detach(), (1 << self.in_bits) - 1, self.q.table_bits)
            else:
                if self.q.calibrating:
                    with torch.no_grad():
                        self.acc_lo.copy_(acc.min()), self.acc_hi.copy_(acc.max())
                elif self.training and not self.q.frozen:
                    with torch.no_grad():
                        lo, hi = acc.min(), acc.max()
                        if torch.isnan(self.acc_lo):
                            self.acc_lo.copy_(lo), self.acc_hi.copy_(hi)
                        else:
                            self.acc_lo.mul_(0.9).add_(0.1 * lo), self.acc_hi.mul_(0.9).add_(0.1 * hi)
                acc = observed_rounding(acc, float(self.acc_lo), float(self.acc_hi), self.q.table_bits,
                                        read_noise=self.q.read_noise if self.training else 0.0)
        return acc * (in_scale * s / (self.pool * self.pool)).view(shape) + m.bias.view(shape)


class QRelu(nn.Module):
    """ReLU clipped at a learned bound (PACT) and rounded to act_bits levels."""

    def __init__(self, q, init=4.0, data_init=False):
        super().__init__()
        self.q = q
        self.alpha = nn.Parameter(torch.tensor(init))
        # data_init: set the bound from the first training batch (99.9th percentile of the
        # positive pre-activations) instead of `init`; a pooled layer's values are much smaller
        # than 4, and a 4-bit grid up to 4 would leave them one or two levels.
        self.data_init = data_init

    def scale(self):
        return (self.alpha.abs() + 1e-3) / ((1 << self.q.act_bits) - 1)

    def pre(self, x):
        """What is clipped (the identity here; QSquare squares)."""
        return x

    def window(self):
        """The pre-activation interval the clipped output varies over: [0, alpha] for ReLU."""
        a = self.alpha.detach().abs() + 1e-3
        return torch.zeros_like(a), a

    def forward(self, x):
        qmax = (1 << self.q.act_bits) - 1
        a = self.alpha.abs() + 1e-3
        x = self.pre(x)
        if self.data_init and self.training:
            with torch.no_grad():
                pos = x.detach().flatten()
                pos = pos[pos > 0]
                if pos.numel():
                    self.alpha.copy_(torch.quantile(pos[:1 << 20], 0.999))
            self.data_init = False
            a = self.alpha.abs() + 1e-3
        if self.q.export:
            a = float(a)
            return fake_quant_export(torch.clamp(x, 0.0, a), a / qmax)
        y = torch.minimum(F.relu(x), a)
        s = a / qmax
        return ste_round(y / s) * s


class QSquare(QRelu):
    """x*x clipped at a learned bound (PACT-style) and rounded to act_bits levels: the seed
    network's square activation on fhec's activation grid."""

    def pre(self, x):
        return x * x

    def window(self):
        """x*x clipped at alpha varies over [-sqrt(alpha), sqrt(alpha)]."""
        r = (self.alpha.detach().abs() + 1e-3).sqrt()
        return -r, r


class SeedQ(nn.Module):
    """The seed network (Conv(1->4, 7x7, stride 3) x*x Linear(256->64) x*x Linear(64->10))
    trained on fhec's integer grids: same layers and activations, narrow tables."""

    def __init__(self, q, in_channels=1):
        super().__init__()
        self.q = q
        self.inq = QInput(q)
        self.conv1 = QLayer(q, nn.Conv2d(in_channels, 4, kernel_size=7, stride=3), q.input_bits)
        self.act1 = QSquare(q)
        self.fc1 = QLayer(q, nn.Linear(256, 64), q.act_bits)
        self.act2 = QSquare(q)
        self.fc2 = QLayer(q, nn.Linear(64, 10), q.act_bits, round_for_table=False)

    def forward(self, x):
        x = self.inq(x)
        x = self.act1(self.conv1(x, 1.0 / ((1 << self.q.input_bits) - 1)))
        x = self.act2(self.fc1(x.flatten(1), self.act1.scale()))
        return self.fc2(x, self.act2.scale())


class Fhe(nn.Module):
    """Few activations, narrow tables: Conv(1->C, 7x7, stride 3) ReLU Linear(64C->H) ReLU Linear(H->10)."""

    def __init__(self, q, channels=4, hidden=32, in_channels=1):
        super().__init__()
        self.q = q
        self.inq = QInput(q)
        self.conv1 = QLayer(q, nn.Conv2d(in_channels, channels, kernel_size=7, stride=3), q.input_bits)
        self.act1 = QRelu(q)
        self.fc1 = QLayer(q, nn.Linear(64 * channels, hidden), q.act_bits)
        self.act2 = QRelu(q)
        self.fc2 = QLayer(q, nn.Linear(hidden, 10), q.act_bits, round_for_table=False)

    def forward(self, x):
        x = self.inq(x)
        x = self.act1(self.conv1(x, 1.0 / ((1 << self.q.input_bits) - 1)))
        x = self.act2(self.fc1(x.flatten(1), self.act1.scale()))
        return self.fc2(x, self.act2.scale())

    def span_penalty(self):
        """How much wider each layer's worst-case pre-activation range is than the window
        its ReLU reads (a table of fixed width then sees the window at a coarser step)."""
        pen = 0.0
        for layer, act, x_max in ((self.conv1, self.act1, 1.0), (self.fc1, self.act2, self.act1.alpha.abs())):
            w = layer.inner.weight
            span = w.abs().flatten(1).sum(1) * x_max
            pen = pen + F.relu(span / (act.alpha.abs() + 1e-3) - 2.0).mean()
        return pen


class QNet(nn.Module):
    """A QAT network from a layer spec (`--layers`), e.g. `c16k5s2,c32k5s2,f64`: each `cCkKsS[pP][aA]`
    a Conv(->C, KxK, stride S, zero padding P) [AvgPool(A) before the activation] and an
    activation, each `fH` a Linear(->H) and an activation, then Linear(->10). The activation
    (`act`) is a clipped ReLU or a clipped square x*x (the seed network's): in a TFHE table
    either costs one bootstrap, and the square gives more accuracy per table."""

    def __init__(self, q, spec, in_channels=1, act="relu"):
        super().__init__()
        self.q = q
        self.inq = QInput(q)
        self.layers, self.acts = nn.ModuleList(), nn.ModuleList()
        c, hw, flat, in_bits = in_channels, 28, None, q.input_bits
        for item in spec.split(","):
            if item.startswith("c"):
                assert flat is None, "convolutions before dense layers"
                v = {t[0]: int(t[1:]) for t in _spec_tokens(item)}
                k, st, pad, pool = v["k"], v.get("s", 1), v.get("p", 0), v.get("a", 1)
                inner = nn.Conv2d(c, v["c"], kernel_size=k, stride=st, padding=pad)
                c, hw = v["c"], ((hw + 2 * pad - k) // st + 1) // pool
            else:
                pool = 1
                flat = flat or c * hw * hw
                inner = nn.Linear(flat, int(item[1:]))
                flat = int(item[1:])
            self.layers.append(QLayer(q, inner, in_bits, pool=pool))
            self.acts.append(QSquare(q) if act == "square" else QRelu(q, data_init=pool > 1))
            in_bits = q.act_bits
        self.fc = QLayer(q, nn.Linear(flat or c * hw * hw, 10), q.act_bits, round_for_table=False)

    def forward(self, x):
        x = self.inq(x)
        scale = 1.0 / ((1 << self.q.input_bits) - 1)
        self.window_pen = 0.0
        for layer, act in zip(self.layers, self.acts):
            if isinstance(layer.inner, nn.Linear):
                x = x.flatten(1)
            pre = layer(x, scale)
            if self.training and self.q.window_penalty:
                self.window_pen = self.window_pen + window_penalty(pre, act, self.q.window_ratio)
            x = act(pre)
            scale = act.scale()
        return self.fc(x.flatten(1), scale)


def window_penalty(pre, act, ratio):
    """How much wider each channel's batch range of the pre-activation is than the part of it
    the activation's window covers ([0, alpha] for ReLU, [-sqrt(alpha), sqrt(alpha)] for the
    square; log of the ratio, beyond `ratio`): fhec's table reads the whole calibrated range at
    one step, so the window gets more of the table's 2^T entries when the range hugs it.
    Scale-free (a range shrunk inside the window costs nothing)."""
    lo, hi = act.window()
    u = (pre - lo) / (hi - lo)
    red = [d for d in range(u.dim()) if d != 1]
    umin, umax = u.amin(dim=red), u.amax(dim=red)
    span = (umax - umin).clamp(min=1e-3)
    overlap = (torch.minimum(umax, torch.ones_like(umax)) - torch.maximum(umin, torch.zeros_like(umin))).clamp(min=0.05)
    return F.relu(torch.log2(span / overlap) - math.log2(ratio)).mean()


def _spec_tokens(item):
    out, cur = [], ""
    for ch in item:
        if ch.isalpha() and cur:
            out.append(cur)
            cur = ""
        cur += ch
    return out + [cur]


ARCHS = {"cnn": (Cnn, 5), "teacher": (Teacher, 12), "seed": (Seed, 10), "fhe": (Fhe, 15), "qnet": (QNet, 15), "seedq": (SeedQ, 15)}
QAT_ARCHS = ("fhe", "qnet", "seedq")


def augment(xb, gen):
    """Random affine jitter per image: rotation up to 10 degrees, scale 0.9-1.1, shift up to
    2 pixels (the usual MNIST augmentation; it curbs overfitting of the larger nets)."""
    n = len(xb)
    ang = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(10)
    sc = 1 + (torch.rand(n, generator=gen) * 2 - 1) * 0.1
    sh = (torch.rand(n, 2, generator=gen) * 2 - 1) * (2 / 14)
    cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
    theta = torch.stack([torch.stack([cos, -sin, sh[:, 0]], 1), torch.stack([sin, cos, sh[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(xb.shape), align_corners=False)
    return F.grid_sample(xb, grid, align_corners=False, padding_mode="zeros")


def shift(xb, r, gen):
    """Random integer shift of each image by up to `r` pixels in each direction (zero fill)."""
    n, _, h, w = xb.shape
    pad = F.pad(xb, (r, r, r, r))
    d = torch.randint(0, 2 * r + 1, (n, 2), generator=gen)
    rows = (torch.arange(h).view(1, h) + d[:, :1]).view(n, 1, h, 1).expand(n, 1, h, w + 2 * r)
    pad = torch.gather(pad, 2, rows)
    cols = (torch.arange(w).view(1, w) + d[:, 1:]).view(n, 1, 1, w).expand(n, 1, h, w)
    return torch.gather(pad, 3, cols)


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
    ap.add_argument("--input-bits", type=int, default=3, help="QAT (arch fhe): bits of the input pixels")
    ap.add_argument("--weight-bits", type=int, default=4, help="QAT (arch fhe): bits of the signed weights")
    ap.add_argument("--act-bits", type=int, default=3, help="QAT (arch fhe): bits of the activations")
    ap.add_argument("--max-table-bits", type=int, default=None,
                    help="QAT (arch fhe): widest table fhec should build (default act bits + 1), stored in the metadata")
    ap.add_argument("--model-rounding", action="store_true",
                    help="QAT (arch fhe): also model fhec's exact rounding of each accumulator to the table width "
                         "(over the ranges --rounding-ranges names), from epoch --rounding-from on")
    ap.add_argument("--rounding-ranges", choices=["observed", "worst"], default="observed",
                    help="QAT: the ranges the modelled rounding covers: observed on training batches (like fhec's "
                         "calibrated ranges, the default) or the worst case of the weights (like --ranges exact)")
    ap.add_argument("--rounding-from", type=int, default=1, help="QAT: first epoch (0-based) that models rounding")
    ap.add_argument("--span-penalty", type=float, default=0.0,
                    help="QAT (arch fhe): weight of a penalty on worst-case range / ReLU window (narrow tables)")
    ap.add_argument("--compile-widths", default=None, metavar="I/W/A/T",
                    help="arch cnn/seed (post-training quantization): the widths fhec compiles the model at by "
                         "default (input/weight/activation/table bits), stored in the metadata like QAT's")
    ap.add_argument("--channels", type=int, default=None, help="arch fhe: convolution channels (default 4)")
    ap.add_argument("--augment", choices=["affine", "flip"], default=None,
                    help="training-image augmentation: random affine jitter (digits) or horizontal flips (clothes)")
    ap.add_argument("--hidden", type=int, default=32, help="arch fhe: hidden units")
    ap.add_argument("--layers", default="c16k5s2,c32k5s2",
                    help="arch qnet: layers before the final Linear(->10), e.g. c16k5s2,c32k5s2,f64 "
                         "(cCkKsSpPaA: Conv(->C, KxK, stride S, padding P), AvgPool(A) before the activation if aA "
                         "is given (fhec sums it for free), + ReLU; fH: Linear(->H) + ReLU)")
    ap.add_argument("--act", choices=["relu", "square"], default="relu",
                    help="arch qnet: the activation after each layer (clipped ReLU, or clipped x*x as the seed network)")
    ap.add_argument("--window-penalty", type=float, default=0.0,
                    help="arch qnet: weight of a penalty on log2(pre-activation batch range / part of it inside the "
                         "activation's window) beyond --window-ratio (keeps fhec's calibrated table ranges tight around [0, alpha] "
                         "for ReLU, [-sqrt(alpha), sqrt(alpha)] for the square)")
    ap.add_argument("--read-noise", type=float, default=0.0,
                    help="QAT with --model-rounding (observed ranges): Gaussian noise, deviation in table steps, "
                         "added before each modelled table read in training (fhec's approximate rounding reads "
                         "with noise; 0 = exact reads)")
    ap.add_argument("--calibrate-ranges", type=int, default=0, metavar="N",
                    help="QAT with --model-rounding (observed ranges): take each table's range from the first N "
                         "training images at the start of every epoch and before the final test, as fhec "
                         "calibrates (its bundled sample: 500 images), instead of a moving average of batch "
                         "ranges (narrower than fhec's, so the test accuracy overstates the circuit's)")
    ap.add_argument("--window-ratio", type=float, default=2.0,
                    help="arch qnet: range / covered-window ratio the window penalty allows")
    ap.add_argument("--layer-weight-bits", default=None,
                    help="QAT: weight bits of each layer in order (e.g. 2,3,4), each at most --weight-bits (which "
                         "fhec gets in the metadata; it finds each layer's coarser grid itself)")
    ap.add_argument("--teacher", default=None, metavar="FILE.pt",
                    help="knowledge distillation: a TorchScript teacher (train.py --arch teacher --save-torch FILE.pt); "
                         "the loss mixes the labels' cross-entropy with the teacher's softened outputs")
    ap.add_argument("--distill-alpha", type=float, default=0.5,
                    help="with --teacher: weight of the labels' cross-entropy (the rest is the teacher's)")
    ap.add_argument("--distill-temp", type=float, default=4.0, help="with --teacher: softmax temperature")
    ap.add_argument("--save-torch", default=None, metavar="FILE.pt",
                    help="also save the trained network as TorchScript (a teacher for --teacher)")
    ap.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    ap.add_argument("--shift", type=int, default=0, help="random shifts of the training images by up to this many pixels")
    ap.add_argument("--label-smoothing", type=float, default=0.0, help="label smoothing of the cross-entropy")
    ap.add_argument("--weight-decay", type=float, default=0.0,
                    help="decoupled weight decay (AdamW instead of Adam when above 0)")
    ap.add_argument("--transform", default=None, metavar="SCHEME",
                    help="train on images under a keyed transform (etc:B, skk or tanaka:B; needs --transform-key; "
                         "the first layer takes the transform's channels, two for tanaka:B); "
                         "the ONNX metadata names the scheme (fhec.transform), never the key")
    ap.add_argument("--transform-key", default=None, metavar="FILE",
                    help="the transform key file (`fhec transform-key -o FILE` writes one)")
    args = ap.parse_args()
    transform = None
    in_channels = 1  # the first layer's input channels: the transform's, else the grayscale image's
    if bool(args.transform) != bool(args.transform_key):
        ap.error("--transform and --transform-key go together")
    if args.transform:
        try:
            channels = transforms.output_shape(args.transform, 28, 28)[0]
            key = transforms.read_key(args.transform_key)
        except (OSError, ValueError) as e:
            ap.error(str(e))
        if args.augment or args.shift:
            ap.error("--augment and --shift move pixels, which a keyed transform does not commute with")
        transform = (args.transform, key)
        in_channels = channels

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(args.threads)
    make, default_epochs = ARCHS[args.arch]
    epochs = args.epochs or default_epochs
    xtr, ytr = load(args.data, args.dataset, "train", transform)
    xte, yte = load(args.data, args.dataset, "test", transform)
    q = None
    if args.arch in QAT_ARCHS:
        args.max_table_bits = args.max_table_bits or args.act_bits + 1
        q = QState(args.input_bits, args.weight_bits, args.act_bits, args.max_table_bits)
        q.rounding_ranges = args.rounding_ranges
        q.window_penalty = args.window_penalty
        q.window_ratio = args.window_ratio
        q.read_noise = args.read_noise
        args.channels = args.channels or 4
        if args.arch == "qnet":
            net = make(q, args.layers, in_channels=in_channels, act=args.act)
        elif args.arch == "seedq":
            net = make(q, in_channels=in_channels)
        else:
            net = make(q, args.channels, args.hidden, in_channels=in_channels)
        if args.layer_weight_bits:
            qlayers = [m for m in net.modules() if isinstance(m, QLayer)]
            bits = [int(v) for v in args.layer_weight_bits.split(",")]
            if len(bits) != len(qlayers) or max(bits) > args.weight_bits:
                ap.error(f"--layer-weight-bits: {len(qlayers)} numbers, each at most --weight-bits")
            for m, b in zip(qlayers, bits):
                m.wbits = b
    else:
        net = make(in_channels=in_channels)
    teacher = None
    if args.teacher:
        try:
            teacher = torch.jit.load(args.teacher).eval()
        except (OSError, RuntimeError) as e:
            ap.error(f"--teacher {args.teacher}: {e}")
        print(f"teacher {args.teacher}: test acc {accuracy(teacher, xte, yte):.4f}", flush=True)
    if args.weight_decay > 0:
        opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    else:
        opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs) if q or args.arch == "teacher" else None
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xtr, ytr), batch_size=64, shuffle=True)
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.time()

    def calibrate():
        """Each table's range from the first --calibrate-ranges training images, layer by layer
        (a layer's inputs come through the already calibrated layers before it), then frozen."""
        if not (q and args.calibrate_ranges and q.model_rounding and q.rounding_ranges == "observed"):
            return
        net.eval()
        q.calibrating = True
        with torch.no_grad():
            net(xtr[: args.calibrate_ranges])
        q.calibrating, q.frozen = False, True

    for epoch in range(epochs):
        if q:
            q.model_rounding = args.model_rounding and epoch >= args.rounding_from
            calibrate()
        net.train()
        total = 0.0
        for xb, yb in loader:
            if args.augment == "affine":
                xb = augment(xb, gen)
            elif args.augment == "flip":
                flip = torch.rand(len(xb), generator=gen) < 0.5
                xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(3), xb)
            if args.shift:
                xb = shift(xb, args.shift, gen)
            opt.zero_grad()
            logits = net(xb)
            loss = F.cross_entropy(logits, yb, label_smoothing=args.label_smoothing)
            if teacher is not None:
                t, a = args.distill_temp, args.distill_alpha
                with torch.no_grad():
                    soft = F.log_softmax(teacher(xb) / t, dim=1)
                kd = F.kl_div(F.log_softmax(logits / t, dim=1), soft, log_target=True, reduction="batchmean")
                loss = a * loss + (1 - a) * t * t * kd
            if q and args.window_penalty:
                loss = loss + args.window_penalty * net.window_pen
            if q and args.span_penalty and hasattr(net, "span_penalty"):
                loss = loss + args.span_penalty * net.span_penalty()
            loss.backward()
            opt.step()
            total += loss.item() * len(xb)
        if sched:
            sched.step()
        print(f"epoch {epoch + 1}/{epochs}: loss {total / len(xtr):.4f}, test acc {accuracy(net, xte, yte):.4f}", flush=True)
    calibrate()
    acc = accuracy(net, xte, yte)
    if args.calibrate_ranges:
        print(f"calibrated ranges: test acc {acc:.4f}", flush=True)

    net.eval()
    if args.save_torch:
        torch.jit.trace(net, torch.zeros(1, in_channels, 28, 28)).save(args.save_torch)
    if q:
        # Bake the fake-quantized weights in (fhec recognises weights that lie on a grid),
        # then switch activations to QuantizeLinear/DequantizeLinear for the export.
        with torch.no_grad():
            for m in net.modules():
                if isinstance(m, QLayer):
                    m.inner.weight.copy_(quant_weight(m.inner.weight, m.weight_bits()))
        q.export = True
        acc = accuracy(net, xte, yte)
        print(f"exported graph: test acc {acc:.4f}")
    torch.onnx.export(
        net, torch.zeros(1, in_channels, 28, 28), args.out, opset_version=13,
        input_names=["image"], output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
    )
    m = onnx.load(args.out)
    props = {"fhec.preprocess": "unit", "fhec.dataset": args.dataset, "fhec.arch": args.arch}
    if args.transform:
        props["fhec.transform"] = args.transform  # the scheme only: the key stays with its owner
    if q:
        # The widths the network was trained for: `fhec build` uses them without flags.
        props.update({
            "fhec.compile.input_bits": str(args.input_bits), "fhec.compile.weight_bits": str(args.weight_bits),
            "fhec.compile.act_bits": str(args.act_bits),
            "fhec.compile.max_table_bits": str(args.max_table_bits),
        })
    if args.compile_widths and not q:
        widths = [int(v) for v in args.compile_widths.split("/")]
        if len(widths) != 4:
            ap.error("--compile-widths takes four numbers: input/weight/activation/table bits")
        props.update({f"fhec.compile.{k}": str(v) for k, v in
                      zip(["input_bits", "weight_bits", "act_bits", "max_table_bits"], widths)})
    onnx.helper.set_model_props(m, props)
    onnx.save(m, args.out)
    info = {
        "command": " ".join(["python", "examples/train/train.py"] + sys.argv[1:]),
        "arch": args.arch, "dataset": args.dataset, "seed": args.seed, "epochs": epochs,
        "float_test_accuracy_torch": round(acc, 4), "train_seconds": round(time.time() - t0, 1),
        "torch": torch.__version__, "preprocess": "unit",
    }
    if args.compile_widths and not q:
        info["compile_widths"] = args.compile_widths
    if args.transform:
        info["transform"] = args.transform
    if q:
        info["qat"] = {"input_bits": args.input_bits, "weight_bits": args.weight_bits, "act_bits": args.act_bits,
                       "max_table_bits": args.max_table_bits, "model_rounding": args.model_rounding,
                       "augment": args.augment}
        if args.arch == "fhe":
            info["qat"].update({"channels": args.channels, "hidden": args.hidden})
        if args.arch == "qnet":
            info["qat"]["layers"] = args.layers
            if args.act != "relu":
                info["qat"]["act"] = args.act
        if args.shift:
            info["qat"]["shift"] = args.shift
        if args.layer_weight_bits:
            info["qat"]["layer_weight_bits"] = args.layer_weight_bits
        if args.window_penalty:
            info["qat"]["window_penalty"] = args.window_penalty
            info["qat"]["window_ratio"] = args.window_ratio
        if args.read_noise:
            info["qat"]["read_noise"] = args.read_noise
        if args.calibrate_ranges:
            info["qat"]["calibrate_ranges"] = args.calibrate_ranges
    if args.teacher:
        info["distill"] = {"teacher": os.path.basename(args.teacher), "alpha": args.distill_alpha,
                           "temperature": args.distill_temp}
    for key, default in (("lr", 1e-3), ("label_smoothing", 0.0), ("weight_decay", 0.0)):
        if getattr(args, key) != default:
            info[key] = getattr(args, key)
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump(info, f, indent=2)
    print(json.dumps(info))


if __name__ == "__main__":
    main()
