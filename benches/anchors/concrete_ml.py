#!/usr/bin/env python3
"""Zama Concrete ML benchmark anchor for `fhec bench speed`: the same ONNX file, encrypted.

Compiles an ONNX model with Concrete ML's `compile_onnx_model` (opset converted to 14, the
one Concrete ML reads; inputs pixel/255 in [0,1], as fhec's bundled models take them),
calibrated on `--calib` training images, at `--n-bits` with `--rounding-threshold-bits`
(Concrete ML's own accuracy/speed knob) and its default per-bootstrap error probability.

Measured: compile time; the circuit's bootstrap count, widest integer and global error
probability; the clear-quantized accuracy on the whole test set (Concrete ML's integer
semantics without encryption, the figure its FHE output reproduces); then the deployment
path Concrete ML documents, with a client/server split: `FHEModelDev` saves the model,
`FHEModelClient` generates keys and serializes the evaluation keys, encrypts each of the
first `--images` test images (quantize + encrypt + serialize), `FHEModelServer.run`
evaluates with the evaluation keys only (wall clock and process CPU time, all threads),
and the client deserializes and decrypts. Each decrypted output is compared with the
clear-quantized output of the same image (Concrete ML's FHE execution equals it unless a
bootstrap fails).

Prints one JSON object on stdout; progress goes to stderr. Errors exit with code 2.
"""

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tenseal_seed import AnchorError, find_file, read_idx  # noqa: E402  (IDX reading, no TenSEAL import)

import numpy as np  # noqa: E402


def log(msg):
    print(f"[concrete_ml {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cpu_s():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def load_set(data_dir, dataset, split):
    x = read_idx(find_file(data_dir, dataset, f"{split}-images-idx3-ubyte"))
    y = read_idx(find_file(data_dir, dataset, f"{split}-labels-idx1-ubyte"))
    if x.ndim != 3 or x.shape[1:] != (28, 28) or len(y) != len(x):
        raise AnchorError(f"{dataset} {split}: images {x.shape}, labels {y.shape}: need [N,28,28] and [N]")
    return (x.astype(np.float32) / 255.0)[:, None, :, :], y.astype(int)


def load_onnx(path):
    import onnx
    from onnx import version_converter

    if not os.path.isfile(path):
        raise AnchorError(f"ONNX file not found: {path}")
    try:
        model = onnx.load(path)
    except Exception as e:  # noqa: BLE001
        raise AnchorError(f"cannot read ONNX file {path}: {e}") from None
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset != 14:
        model = version_converter.convert_version(model, 14)
    return expand_qdq(model), opset


def expand_qdq(model):
    """Concrete ML's ONNX reader has no QuantizeLinear / DequantizeLinear (QAT exports such as
    fhec's `--arch seedq` carry them on activations). Each pair with a constant scalar scale
    `s` and zero point `z` computes `(clip(round(x/s) + z, lo, hi) - z)·s` in float; write it
    with Div, Round, Add, Clip, Sub, Mul, ops Concrete ML reads, so it compiles the same
    function (and quantizes it at its own n_bits, as for any float model)."""
    import onnx
    from onnx import helper, numpy_helper

    g = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    producer = {o: n for n in g.node for o in n.output}
    nodes, fresh = [], iter(range(1 << 30))
    dropped = set()
    for n in g.node:
        if n.op_type == "QuantizeLinear":
            dropped.add(n.output[0])  # emitted with its DequantizeLinear
            continue
        if n.op_type != "DequantizeLinear":
            nodes.append(n)
            continue
        q = producer.get(n.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            raise AnchorError(f"DequantizeLinear {n.name!r} does not read a QuantizeLinear")
        scale = consts.get(q.input[1])
        zp = consts.get(q.input[2]) if len(q.input) > 2 and q.input[2] else np.zeros((), np.uint8)
        if scale is None or np.size(scale) != 1 or np.size(zp) != 1:
            raise AnchorError(f"QuantizeLinear {q.name!r}: need a constant scalar scale and zero point")
        info = np.iinfo(zp.dtype)
        z, s = float(zp.reshape(())), float(scale.reshape(()))

        def const(v):
            name = f"qdq_c{next(fresh)}"
            g.initializer.append(numpy_helper.from_array(np.asarray(v, np.float32), name))
            return name

        def tmp():
            return f"qdq_t{next(fresh)}"

        a, b, c, d, e = tmp(), tmp(), tmp(), tmp(), tmp()
        nodes += [
            helper.make_node("Div", [q.input[0], const(s)], [a]),
            helper.make_node("Round", [a], [b]),
            helper.make_node("Add", [b, const(z)], [c]),
            helper.make_node("Clip", [c, const(info.min), const(info.max)], [d]),
            helper.make_node("Sub", [d, const(z)], [e]),
            helper.make_node("Mul", [e, const(s)], [n.output[0]]),
        ]
    if any(i in dropped for m in nodes for i in m.input):
        raise AnchorError("a QuantizeLinear output is read by something other than a DequantizeLinear")
    del g.node[:]
    g.node.extend(nodes)
    onnx.checker.check_model(model)
    return model


def run(args):
    import concrete.fhe as cfhe
    import concrete.ml
    from concrete.ml.deployment import FHEModelClient, FHEModelDev, FHEModelServer
    from concrete.ml.torch.compile import compile_onnx_model

    model, opset = load_onnx(args.onnx)
    xtr, _ = load_set(args.data, args.dataset, "train")
    xte, yte = load_set(args.data, args.dataset, "t10k")
    if args.images > len(xte):
        raise AnchorError(f"--images {args.images} but the test set holds {len(xte)} images")
    rng = np.random.default_rng(args.seed)
    calib = xtr[rng.choice(len(xtr), size=min(args.calib, len(xtr)), replace=False)]

    out = {
        "concrete_ml_version": concrete.ml.__version__,
        "concrete_python_version": cfhe.__version__,
        "onnx": os.path.basename(args.onnx),
        "onnx_opset": opset,
        "n_bits": args.n_bits,
        "rounding_threshold_bits": args.rounding_threshold_bits,
        "calib": len(calib),
    }
    log(f"compile {args.onnx} (opset {opset} -> 14), n_bits {args.n_bits}, rounding {args.rounding_threshold_bits}")
    t0 = time.perf_counter()
    try:
        qm = compile_onnx_model(model, calib, n_bits=args.n_bits,
                                rounding_threshold_bits=args.rounding_threshold_bits)
    except Exception as e:  # noqa: BLE001
        raise AnchorError(f"Concrete ML cannot compile {args.onnx}: {type(e).__name__}: {e}") from None
    out["compile_s"] = round(time.perf_counter() - t0, 2)
    circuit = qm.fhe_circuit
    out["bootstraps"] = int(circuit.programmable_bootstrap_count)
    out["widest_integer_bits"] = int(circuit.graph.maximum_integer_bit_width())
    out["global_p_error"] = float(circuit.global_p_error)
    out["p_error"] = float(circuit.p_error)
    log(f"compiled in {out['compile_s']} s: {out['bootstraps']} bootstraps, widest {out['widest_integer_bits']} bits")

    # Concrete ML's integer semantics in the clear, on the whole test set.
    q_clear = qm.quantized_forward(qm.quantize_input(xte), fhe="disable")
    out["clear_accuracy"] = float((np.argmax(q_clear, axis=1) == yte).mean())
    out["clear_images"] = len(xte)
    log(f"clear-quantized accuracy {out['clear_accuracy']:.4f} on {len(xte)} images")

    work = tempfile.mkdtemp(prefix="fhec_cml_")
    try:
        dep = os.path.join(work, "dep")
        FHEModelDev(dep, qm).save()
        client = FHEModelClient(dep)
        t0 = time.perf_counter()
        client.generate_private_and_evaluation_keys(force=True)
        out["keygen_s"] = round(time.perf_counter() - t0, 2)
        ek = client.get_serialized_evaluation_keys()
        out["eval_key_bytes"] = len(ek)
        log(f"keygen {out['keygen_s']} s, evaluation keys {len(ek)} bytes")
        server = FHEModelServer(dep)
        server.load()
        ek_server = cfhe.EvaluationKeys.deserialize(ek)
        enc, ev, ev_cpu, dec, up, down = [], [], [], [], [], []
        correct = equal = 0
        for i in range(args.images):
            t0 = time.perf_counter()
            ct = client.quantize_encrypt_serialize(xte[i:i + 1])
            enc.append(time.perf_counter() - t0)
            up.append(len(ct))
            t0, c0 = time.perf_counter(), cpu_s()
            res = server.run(ct, ek_server)
            ev.append(time.perf_counter() - t0)
            ev_cpu.append(cpu_s() - c0)
            down.append(len(res))
            t0 = time.perf_counter()
            y = np.asarray(client.deserialize_decrypt(res))
            dec.append(time.perf_counter() - t0)
            # The decrypted integers of the output layer, on the grid of the clear run.
            same = bool(np.array_equal(y.reshape(-1), np.asarray(q_clear[i]).reshape(-1)))
            equal += same
            correct += int(np.argmax(y) == yte[i])
            log(f"image {i}: evaluate {ev[-1]:.1f} s ({ev_cpu[-1]:.1f} CPU-s), label {yte[i]}, "
                f"prediction {int(np.argmax(y))}, equal to the clear run: {same}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out.update({
        "images": args.images,
        "correct": correct,
        "equal_to_clear": equal,
        "median_encrypt_s": statistics.median(enc),
        "median_evaluate_s": statistics.median(ev),
        "median_evaluate_cpu_s": statistics.median(ev_cpu),
        "median_decrypt_s": statistics.median(dec),
        "upload_bytes": int(statistics.median(up)),
        "download_bytes": int(statistics.median(down)),
        "threads": os.cpu_count(),
    })
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--onnx", required=True, help="the ONNX model (input pixel/255)")
    ap.add_argument("--data", required=True,
                    help="directory with train-* and t10k-* IDX files, directly or under mnist/ or fashion-mnist/")
    ap.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist"])
    ap.add_argument("--images", type=int, default=3, help="encrypt and evaluate the first N test images")
    ap.add_argument("--n-bits", type=int, default=6, help="Concrete ML quantization bits")
    ap.add_argument("--rounding-threshold-bits", type=int, default=6,
                    help="Concrete ML's rounding of accumulators before tables (0: none)")
    ap.add_argument("--calib", type=int, default=1000, help="calibration images from the training set")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.rounding_threshold_bits == 0:
        args.rounding_threshold_bits = None
    if args.images < 1:
        log("error: --images must be at least 1")
        sys.exit(2)
    try:
        out = run(args)
    except AnchorError as e:
        log(f"error: {e}")
        sys.exit(2)
    except (OSError, ValueError, MemoryError) as e:
        log(f"error: {type(e).__name__}: {e}")
        sys.exit(2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
