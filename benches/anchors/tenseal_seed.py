#!/usr/bin/env python3
"""TenSEAL (CKKS) benchmark anchor for `cargo bench-table speed`: the seed network, encrypted.

An independent re-implementation of the evaluation in OpenMined TenSEAL's "Tutorial 4 -
Encrypted Convolution on MNIST", run with fhec's bundled weights (an ONNX file, default
examples/models/seed_mnist.onnx) instead of a freshly trained torch model.

Network: Conv2d(1->4, k7, s3, no pad) -> x*x -> flatten(256) -> Linear(256->64) -> x*x
-> Linear(64->10); input pixel/255 in [0,1]. CKKS: poly_modulus_degree 8192,
coeff_mod_bit_sizes [31, 26 x6, 31], global scale 2^26, Galois keys.

Client/server split: the server works on a context deserialized from the public
serialization (public, relin and Galois keys, no secret key), on the deserialized input
ciphertext; the client deserializes the server's result before decrypting.

Measured per image (first N test images): client encrypt (ts.im2col_encoding, i.e.
encode + encrypt), server evaluate (the encrypted forward pass; wall clock and process CPU
time, which counts all TenSEAL threads), client decrypt; (de)serialization is excluded
from these three and reported on stderr. Also the serialized input ("upload") and result
("download") sizes, the public context size, the context + key generation time, the
decrypted argmax vs a float64 numpy forward pass of the same weights and vs the label,
and the drift max|dec - float| / max|float|.

Prints one JSON object on stdout; progress goes to stderr. Errors exit with code 2.
"""

import argparse
import gzip
import json
import os
import statistics
import struct
import sys
import time

try:
    import numpy as np
except ImportError:
    print("tenseal_seed: error: numpy is not installed: run benches/anchors/setup.sh", file=sys.stderr)
    sys.exit(2)

KERNEL, STRIDE, CHANNELS, SIDE = 7, 3, 4, 28
POLY_MOD, COEFF_BITS, SCALE_BITS = 8192, [31, 26, 26, 26, 26, 26, 26, 31], 26


class AnchorError(Exception):
    pass


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- weights
def load_weights(path):
    """Conv + two dense layers from the ONNX graph, as float64 (dense weights as [in, out])."""
    import onnx
    from onnx import numpy_helper

    if not os.path.isfile(path):
        raise AnchorError(f"ONNX file not found: {path}")
    try:
        model = onnx.load(path)
    except Exception as e:
        raise AnchorError(f"cannot read ONNX file {path}: {e}") from None
    g = model.graph
    inits = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in g.initializer}
    for n in g.node:  # weights may also sit in Constant nodes
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            inits.setdefault(n.output[0], numpy_helper.to_array(n.attribute[0].t).astype(np.float64))
    attrs = lambda n: {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}  # noqa: E731
    conv, dense, squares = [], [], 0
    producer_add = {i: n for n in g.node if n.op_type == "Add" for i in n.input}
    for n in g.node:
        a = attrs(n)
        if n.op_type == "Conv":
            w = inits.get(n.input[1])
            b = inits.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
            if w is None or a.get("strides", [1, 1]) != [STRIDE, STRIDE] or any(a.get("pads", [0] * 4)) \
                    or a.get("group", 1) != 1 or any(d != 1 for d in a.get("dilations", [1, 1])):
                raise AnchorError(f"Conv {n.name!r}: need constant weights, stride {STRIDE}, no padding, group 1 ({a})")
            conv.append((w, np.zeros(w.shape[0]) if b is None else b))
        elif n.op_type == "Gemm":
            w, b = inits.get(n.input[1]), inits.get(n.input[2]) if len(n.input) > 2 else None
            if w is None or a.get("transA", 0):
                raise AnchorError(f"Gemm {n.name!r}: need constant B and transA=0")
            w = (w.T if a.get("transB", 0) else w) * a.get("alpha", 1.0)
            b = np.zeros(w.shape[1]) if b is None else b * a.get("beta", 1.0)
            dense.append((w, np.broadcast_to(b, (w.shape[1],)).copy()))
        elif n.op_type == "MatMul":
            w, add = inits.get(n.input[1]), producer_add.get(n.output[0])
            b = next((inits[i] for i in add.input if i in inits), None) if add is not None else None
            if w is None or w.ndim != 2:
                raise AnchorError(f"MatMul {n.name!r}: need a constant 2-D weight")
            dense.append((w, np.zeros(w.shape[1]) if b is None else np.broadcast_to(b, (w.shape[1],)).copy()))
        elif (n.op_type == "Mul" and n.input[0] == n.input[1]) or \
                (n.op_type == "Pow" and n.input[1] in inits and float(inits[n.input[1]]) == 2.0):
            squares += 1
    if len(conv) != 1 or len(dense) != 2 or squares != 2:
        raise AnchorError(f"{path}: expected the seed network (1 Conv, 2 squares, 2 dense layers); "
                          f"found {len(conv)} Conv, {squares} squares, {len(dense)} Gemm/MatMul")
    (cw, cb), (w1, b1), (w2, b2) = conv[0], dense[0], dense[1]
    if cw.shape != (CHANNELS, 1, KERNEL, KERNEL) or cb.shape != (CHANNELS,):
        raise AnchorError(f"conv weight {cw.shape} / bias {cb.shape}: need (4, 1, 7, 7) / (4,)")
    n_win = ((SIDE - KERNEL) // STRIDE + 1) ** 2
    if w1.shape[0] != CHANNELS * n_win or w2.shape[0] != w1.shape[1] or b1.shape != (w1.shape[1],):
        raise AnchorError(f"dense shapes fc1 {w1.shape} fc2 {w2.shape}: need [{CHANNELS * n_win}, H] and [H, C]")
    return {"conv_w": cw.reshape(CHANNELS, KERNEL, KERNEL), "conv_b": cb, "w1": w1, "b1": b1, "w2": w2, "b2": b2}


def float_forward(W, img):
    """float64 reference: the same network in numpy (flatten is channel-major, as torch's view)."""
    win = np.lib.stride_tricks.sliding_window_view(img, (KERNEL, KERNEL))[::STRIDE, ::STRIDE]
    conv = np.einsum("ijkl,ckl->cij", win, W["conv_w"]) + W["conv_b"][:, None, None]
    h = (conv * conv).reshape(-1) @ W["w1"] + W["b1"]
    return (h * h) @ W["w2"] + W["b2"]


# ----------------------------------------------------------------------------- data
def read_idx(path):
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        buf = f.read()
    if len(buf) < 4 or buf[0] != 0 or buf[1] != 0 or buf[2] != 0x08:
        raise AnchorError(f"{path}: not a uint8 IDX file")
    ndim = buf[3]
    dims = struct.unpack(">" + "I" * ndim, buf[4:4 + 4 * ndim])
    data = np.frombuffer(buf, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise AnchorError(f"{path}: {data.size} values, header says {dims}")
    return data.reshape(dims)


def find_file(data_dir, dataset, stem):
    for d in (os.path.join(data_dir, dataset), data_dir):
        for name in (stem + ".gz", stem):
            p = os.path.join(d, name)
            if os.path.isfile(p):
                return p
    raise AnchorError(f"{stem}.gz not found in {data_dir} or {os.path.join(data_dir, dataset)}")


def load_test(data_dir, dataset, n):
    x = read_idx(find_file(data_dir, dataset, "t10k-images-idx3-ubyte"))
    y = read_idx(find_file(data_dir, dataset, "t10k-labels-idx1-ubyte"))
    if x.ndim != 3 or x.shape[1:] != (SIDE, SIDE) or y.ndim != 1 or len(y) != len(x):
        raise AnchorError(f"test set shapes images {x.shape} labels {y.shape}: need [N,28,28] and [N]")
    if n > len(x):
        raise AnchorError(f"--images {n} but {data_dir} holds only {len(x)} {dataset} test images")
    return x[:n].astype(np.float64) / 255.0, y[:n].astype(int)


# ----------------------------------------------------------------------------- CKKS
def server_forward(ts, W, enc_x, windows_nb):
    """Tutorial 4's EncConvNet.forward, on weights prepared as plain Python lists."""
    channels = [enc_x.conv2d_im2col(k, windows_nb) + b for k, b in zip(W["k_list"], W["kb_list"])]
    enc = ts.CKKSVector.pack_vectors(channels)
    enc.square_()
    enc = enc.mm(W["w1_list"]) + W["b1_list"]
    enc.square_()
    return enc.mm(W["w2_list"]) + W["b2_list"]


def run(args):
    try:
        import tenseal as ts
    except ImportError:
        raise AnchorError("tenseal is not installed: run benches/anchors/setup.sh and use its .venv") from None
    if args.images < 1 or args.threads < 1:
        raise AnchorError("--images and --threads must be >= 1")
    if not os.path.isdir(args.data):
        raise AnchorError(f"data directory not found: {args.data}")
    W = load_weights(args.onnx)
    W.update(k_list=W["conv_w"].tolist(), kb_list=W["conv_b"].tolist(), w1_list=W["w1"].tolist(),
             b1_list=W["b1"].tolist(), w2_list=W["w2"].tolist(), b2_list=W["b2"].tolist())
    xs, ys = load_test(args.data, args.dataset, args.images)

    pc, cpu = time.perf_counter, time.process_time
    t0 = pc()
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=POLY_MOD,
                     coeff_mod_bit_sizes=COEFF_BITS, n_threads=args.threads)
    ctx.global_scale = 2 ** SCALE_BITS
    ctx.generate_galois_keys()
    keygen_s = pc() - t0
    public = ctx.serialize(save_public_key=True, save_secret_key=False,
                           save_galois_keys=True, save_relin_keys=True)
    server_ctx = ts.context_from(public, n_threads=args.threads)
    if server_ctx.has_secret_key() or not server_ctx.has_galois_keys():
        raise AnchorError("server context must hold Galois keys and no secret key")
    log(f"keygen {keygen_s:.2f} s, public context {len(public)} bytes, {args.threads} thread(s)")

    rec = {k: [] for k in ("enc", "eval", "eval_cpu", "dec", "up", "down", "ser")}
    agree = correct = 0
    max_drift = 0.0
    for i, (img, label) in enumerate(zip(xs, ys)):
        t0 = pc()                                      # client: encode + encrypt
        enc_x, windows_nb = ts.im2col_encoding(ctx, img.tolist(), KERNEL, KERNEL, STRIDE)
        t1 = pc()
        upload = enc_x.serialize()
        t2 = pc()                                      # server: public context only
        srv_x = ts.ckks_vector_from(server_ctx, upload)
        t3, c3 = pc(), cpu()
        enc_out = server_forward(ts, W, srv_x, windows_nb)
        t4, c4 = pc(), cpu()
        download = enc_out.serialize()
        t5 = pc()                                      # client: decrypt
        cli_out = ts.ckks_vector_from(ctx, download)
        t6 = pc()
        scores = np.array(cli_out.decrypt())
        t7 = pc()
        ref = float_forward(W, img)
        if scores.shape != ref.shape:
            raise AnchorError(f"decrypted {scores.shape[0]} scores, float pass gives {ref.shape[0]}")
        drift = float(np.abs(scores - ref).max() / max(np.abs(ref).max(), 1e-12))
        enc_pred, float_pred = int(scores.argmax()), int(ref.argmax())
        agree += enc_pred == float_pred
        correct += enc_pred == label
        max_drift = max(max_drift, drift)
        for k, v in (("enc", t1 - t0), ("eval", t4 - t3), ("eval_cpu", c4 - c3), ("dec", t7 - t6),
                     ("up", len(upload)), ("down", len(download)),
                     ("ser", (t2 - t1) + (t3 - t2) + (t5 - t4) + (t6 - t5))):
            rec[k].append(v)
        log(f"image {i}: label {label} enc {enc_pred} float {float_pred} drift {drift:.4f} | "
            f"encrypt {t1 - t0:.3f} s, evaluate {t4 - t3:.2f} s wall / {c4 - c3:.2f} s cpu, "
            f"decrypt {t7 - t6:.4f} s, (de)serialize {rec['ser'][-1]:.3f} s | "
            f"up {len(upload)} B, down {len(download)} B")

    med = statistics.median
    return {
        "tool": "tenseal", "tenseal_version": ts.__version__, "onnx": args.onnx,
        "dataset": args.dataset, "images": args.images, "threads": args.threads,
        "context_bytes": len(public), "keygen_s": keygen_s,
        "encrypt_s": rec["enc"], "evaluate_s": rec["eval"], "evaluate_cpu_s": rec["eval_cpu"],
        "decrypt_s": rec["dec"],
        "upload_bytes": int(med(rec["up"])), "download_bytes": int(med(rec["down"])),
        "agree_with_float": int(agree), "correct": int(correct), "max_rel_drift": max_drift,
        "median_encrypt_s": med(rec["enc"]), "median_evaluate_s": med(rec["eval"]),
        "median_evaluate_cpu_s": med(rec["eval_cpu"]), "median_decrypt_s": med(rec["dec"]),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--onnx", default="examples/models/seed_mnist.onnx", help="seed network weights")
    ap.add_argument("--data", default="examples/data",
                    help="directory with t10k-*-ubyte.gz, directly or under mnist/ or fashion-mnist/")
    ap.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist"])
    ap.add_argument("--images", type=int, default=5, help="evaluate the first N test images")
    ap.add_argument("--threads", type=int, default=2, help="TenSEAL context n_threads")
    args = ap.parse_args()
    try:
        out = run(args)
    except AnchorError as e:
        log(f"tenseal_seed: error: {e}")
        sys.exit(2)
    except (OSError, ValueError, MemoryError) as e:
        log(f"tenseal_seed: error: {type(e).__name__}: {e}")
        sys.exit(2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
