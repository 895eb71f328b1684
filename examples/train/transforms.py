#!/usr/bin/env python3
"""Keyed image transforms ("learnable image encryption"), the mirror of fhec's
`fhec_ir::transform` (ir/src/transform/mod.rs documents the schemes and the keyed stream;
this file follows it byte for byte).

These transforms are NOT encryption: the same key maps every image the same way, and the
attacks of arXiv 2004.13263 recover recognisable content from transformed images. fhec
provides them to train models on transformed images and to compare with TFHE.

Schemes (grayscale uint8 images of shape (h, w)):
  etc:B     EtC block scrambling: B x B tiles reordered, each rotated, mirrored, negated.
  skk       a keyed negation (p -> 255 - p) of every pixel position.
  tanaka:B  each pixel split into 4-bit halves (2 channels), the 2*B*B sub-pixels of every
            tile shuffled and negated (v -> 15 - v) the same way. Output (2, h, w), 0..15.

Use from Python (numpy and hashlib only):
  key = transforms.read_key("transform.key")          # written by `fhec transform-key`
  x = transforms.apply("etc:4", key, images)          # images: (h, w) or (n, h, w) uint8
  images = transforms.invert("etc:4", key, x)         # x: (c, h, w) or (n, c, h, w)
  x = transforms.model_input("tanaka:4", key, images) # what a model trained on it takes

A model trained on transformed images takes `model_input`: the transform, with Tanaka's
4-bit values v given as 17*v (0..255, like pixels), then its preprocessing (`fhec.preprocess`,
e.g. p/255) as for pixels: fhec's `Transform::model_input`, which `fhec encrypt
--transform-key` applies before encryption.

Check against the fixture fhec's tests write (tests/fixtures/transforms.json):
  python3 examples/train/transforms.py --check tests/fixtures/transforms.json
"""
import argparse
import hashlib
import json
import re
import struct
import sys

import numpy as np

KEY_MAGIC = b"FHECTKEY"
KEY_VERSION = 1
KEY_BYTES = 32
PREFIX = "fhec/transform/v1/"


class Bytes:
    """Readers over a byte source `next_byte()`, as in ir/src/transform/stream.rs."""

    def next_u32(self):
        return struct.unpack("<I", bytes(self.next_byte() for _ in range(4)))[0]

    def uniform(self, n):
        """Uniform in 0..n: reject x >= 2^32 - (2^32 mod n); n <= 1 gives 0, reads nothing."""
        if n <= 1:
            return 0
        limit = (1 << 32) - (1 << 32) % n
        while True:
            x = self.next_u32()
            if x < limit:
                return x % n

    def permutation(self, m):
        """Fisher-Yates: for i = m-1 down to 1, swap a[i] and a[uniform(i + 1)]."""
        a = list(range(m))
        for i in range(m - 1, 0, -1):
            j = self.uniform(i + 1)
            a[i], a[j] = a[j], a[i]
        return a

    def bits(self, count):
        """count bits, least significant bit of each byte first."""
        out = []
        while len(out) < count:
            b = self.next_byte()
            out.extend((b >> k) & 1 for k in range(8))
        return out[:count]


class KeyStream(Bytes):
    """SHA-256(key || domain || counter as u64 little-endian), counter = 0, 1, ..."""

    def __init__(self, key, domain):
        if len(key) != KEY_BYTES:
            raise ValueError(f"a transform key holds {KEY_BYTES} bytes, not {len(key)}")
        self.prefix = bytes(key) + domain.encode("ascii")
        self.counter = 0
        self.block = b""
        self.pos = 0

    def next_byte(self):
        if self.pos == len(self.block):
            self.block = hashlib.sha256(self.prefix + struct.pack("<Q", self.counter)).digest()
            self.counter += 1
            self.pos = 0
        self.pos += 1
        return self.block[self.pos - 1]


class FixedBytes(Bytes):
    """Chosen bytes, then zeros (for checking the readers)."""

    def __init__(self, data):
        self.data, self.pos = bytes(data), 0

    def next_byte(self):
        b = self.data[self.pos] if self.pos < len(self.data) else 0
        self.pos += 1
        return b


def fnv1a(data):
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def key_from_file_bytes(data):
    """The key of a `transform.key` file (fhec's framing: magic, u32 version, u64 length,
    payload, u64 FNV-1a checksum of the payload, all little-endian)."""
    if not data.startswith(KEY_MAGIC):
        raise ValueError("not an fhec transform key (bad magic bytes)")
    if len(data) < 20:
        raise ValueError("the file is truncated")
    version, length = struct.unpack("<IQ", data[8:20])
    if version != KEY_VERSION:
        raise ValueError(f"transform key format version {version} is not supported (this reads {KEY_VERSION})")
    if length != KEY_BYTES or len(data) != 20 + KEY_BYTES + 8:
        raise ValueError("the file is truncated, has trailing data or is not a 32-byte key")
    payload = data[20 : 20 + KEY_BYTES]
    if struct.unpack("<Q", data[20 + KEY_BYTES :])[0] != fnv1a(payload):
        raise ValueError("the file is corrupt (checksum mismatch)")
    return payload


def key_to_file_bytes(key):
    key = bytes(key)
    if len(key) != KEY_BYTES:
        raise ValueError(f"a transform key holds {KEY_BYTES} bytes, not {len(key)}")
    return KEY_MAGIC + struct.pack("<IQ", KEY_VERSION, KEY_BYTES) + key + struct.pack("<Q", fnv1a(key))


def read_key(path):
    with open(path, "rb") as f:
        try:
            return key_from_file_bytes(f.read())
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None


def parse(scheme):
    """('etc', B), ('skk', None) or ('tanaka', B), as fhec parses the name."""
    if scheme == "skk":
        return "skk", None
    m = re.fullmatch(r"(etc|tanaka):([1-9][0-9]*)", scheme)
    if not m:
        raise ValueError(f"unknown transform '{scheme}' (expected etc:B, skk or tanaka:B, with B >= 1)")
    return m.group(1), int(m.group(2))


def output_shape(scheme, h, w):
    name, b = parse(scheme)
    if h < 1 or w < 1 or h * w > 1 << 24:
        raise ValueError(f"{scheme}: an image of height {h} and width {w} is not supported")
    if b is not None and (h % b or w % b):
        raise ValueError(f"{scheme}: the image's height ({h}) and width ({w}) must be multiples of {b}")
    return (2 if name == "tanaka" else 1, h, w)


def plan(scheme, key, h, w):
    """(src, negate, max, shape): output value i is source[src[i]], or max minus it where
    negate[i]; the source is the image (etc, skk) or its two 4-bit channels (tanaka)."""
    shape = output_shape(scheme, h, w)
    name, b = parse(scheme)
    n_out = shape[0] * h * w
    src = np.zeros(n_out, dtype=np.int64)
    neg = np.zeros(n_out, dtype=bool)
    if name == "skk":
        src[:] = np.arange(h * w)
        neg[:] = KeyStream(key, PREFIX + "skk/negate").bits(h * w)
        return src, neg, 255, shape
    if name == "etc":
        cols, n = w // b, (h // b) * (w // b)
        order = KeyStream(key, PREFIX + "etc/positions").permutation(n)
        rs = KeyStream(key, PREFIX + "etc/rotation")
        rotation = [rs.uniform(4) for _ in range(n)]
        flip = KeyStream(key, PREFIX + "etc/flip").bits(n)
        negate = KeyStream(key, PREFIX + "etc/negate").bits(n)
        for t in range(n):
            oy, ox = (t // cols) * b, (t % cols) * b
            s = order[t]
            iy, ix = (s // cols) * b, (s % cols) * b
            for y in range(b):
                for x in range(b):
                    xm = b - 1 - x if flip[t] else x
                    ty, tx = [(y, xm), (b - 1 - xm, y), (b - 1 - y, b - 1 - xm), (xm, b - 1 - y)][rotation[t]]
                    o = (oy + y) * w + ox + x
                    src[o] = (iy + ty) * w + ix + tx
                    neg[o] = negate[t]
        return src, neg, 255, shape
    per_tile = 2 * b * b
    shuffle = KeyStream(key, PREFIX + "tanaka/shuffle").permutation(per_tile)
    negate = KeyStream(key, PREFIX + "tanaka/negate").bits(per_tile)

    def at(j, ty, tx):
        c, r = divmod(j, b * b)
        return c * h * w + (ty + r // b) * w + tx + r % b

    for ty in range(0, h, b):
        for tx in range(0, w, b):
            for j in range(per_tile):
                o = at(j, ty, tx)
                src[o] = at(shuffle[j], ty, tx)
                neg[o] = negate[j]
    return src, neg, 15, shape


def apply(scheme, key, images):
    """Transforms (h, w) or (n, h, w) uint8 images: (c, h, w) or (n, c, h, w) uint8."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim not in (2, 3):
        raise ValueError("images must be uint8 of shape (h, w) or (n, h, w)")
    batch = images.reshape((-1,) + images.shape[-2:])
    h, w = batch.shape[1:]
    src, neg, top, shape = plan(scheme, key, h, w)
    flat = batch.reshape(len(batch), h * w)
    if shape[0] == 2:
        flat = np.concatenate([flat >> 4, flat & 15], axis=1)
    out = flat[:, src]
    out = np.where(neg, np.uint8(top) - out, out).astype(np.uint8)
    out = out.reshape((len(batch),) + shape)
    return out[0] if images.ndim == 2 else out


def model_input(scheme, key, images):
    """What a model trained on `scheme` takes for (h, w) or (n, h, w) uint8 images: `apply`,
    with Tanaka's 4-bit values v widened to 17*v so that every scheme spans 0..255."""
    out = apply(scheme, key, images)
    return out * np.uint8(17) if parse(scheme)[0] == "tanaka" else out


def invert(scheme, key, transformed):
    """The images whose transform is `transformed` ((c, h, w) or (n, c, h, w))."""
    x = np.asarray(transformed)
    if x.dtype != np.uint8 or x.ndim not in (3, 4):
        raise ValueError("a transformed image is uint8 of shape (c, h, w) or (n, c, h, w)")
    batch = x.reshape((-1,) + x.shape[-3:])
    h, w = batch.shape[2:]
    src, neg, top, shape = plan(scheme, key, h, w)
    if batch.shape[1:] != shape:
        raise ValueError(f"{scheme}: a transformed {h}x{w} image has shape {shape}, not {batch.shape[1:]}")
    if batch.max(initial=0) > top:
        raise ValueError(f"{scheme}: values above {top} are not transformed values")
    flat = batch.reshape(len(batch), -1)
    vals = np.where(neg, np.uint8(top) - flat, flat).astype(np.uint8)
    source = np.empty_like(vals)
    source[:, src] = vals
    if shape[0] == 2:
        source = (source[:, : h * w] << 4) | source[:, h * w :]
    out = source.reshape(len(batch), h, w)
    return out[0] if x.ndim == 3 else out


def check_readers():
    """The readers on chosen bytes (the same cases as the Rust unit tests)."""
    assert FixedBytes([0xFF, 0xFF, 0xFF, 0xFF, 7, 0, 0, 0]).uniform(3) == 1
    assert FixedBytes([0xFE, 0xFF, 0xFF, 0xFF]).uniform(3) == 2
    assert FixedBytes([5, 0, 0, 0, 1, 0, 0, 0]).permutation(3) == [0, 1, 2]
    assert FixedBytes([3, 0, 0, 0, 0, 0, 0, 0]).permutation(3) == [1, 2, 0]
    bits = FixedBytes([0b0000_0110, 0b1000_0000]).bits(16)
    assert [k for k in range(16) if bits[k]] == [1, 2, 15]


def check(path):
    with open(path) as f:
        fx = json.load(f)
    check_readers()
    kf = fx["key_file"]
    try:
        read_back = key_from_file_bytes(bytes.fromhex(kf["file"]))
    except ValueError as e:
        raise SystemExit(f"{path}: the key file does not read: {e}") from None
    if read_back != bytes.fromhex(kf["key"]):
        raise SystemExit(f"{path}: the key file does not read as its key")
    if key_to_file_bytes(bytes.fromhex(kf["key"])).hex() != kf["file"]:
        raise SystemExit(f"{path}: the key does not write as its key file")
    for c in fx["cases"]:
        key, h, w = bytes.fromhex(c["key"]), c["h"], c["w"]
        image = np.frombuffer(bytes.fromhex(c["image"]), dtype=np.uint8).reshape(h, w)
        want = np.frombuffer(bytes.fromhex(c["output"]), dtype=np.uint8).reshape(c["shape"])
        got = apply(c["scheme"], key, image)
        if got.shape != want.shape or not np.array_equal(got, want):
            bad = np.flatnonzero(got.reshape(-1) != want.reshape(-1)) if got.shape == want.shape else []
            raise SystemExit(f"{path}: {c['scheme']} on {h}x{w} differs from fhec (first at {list(bad[:5])})")
        if not np.array_equal(invert(c["scheme"], key, want), image):
            raise SystemExit(f"{path}: {c['scheme']} on {h}x{w}: invert does not give the image back")
        widened = want * np.uint8(17) if c["scheme"].startswith("tanaka") else want
        if not np.array_equal(model_input(c["scheme"], key, image), widened):
            raise SystemExit(f"{path}: {c['scheme']} on {h}x{w}: model_input is not the transform widened to 0..255")
        batch = apply(c["scheme"], key, np.stack([image, 255 - image]))
        if not np.array_equal(batch[0], want):
            raise SystemExit(f"{path}: {c['scheme']} on {h}x{w}: a batch differs from one image")
    print(f"{len(fx['cases'])} cases agree with fhec byte for byte ({path})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", metavar="FIXTURE", required=True, help="check against fhec's fixture")
    check(ap.parse_args().check)


if __name__ == "__main__":
    main()
