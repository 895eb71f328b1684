#!/usr/bin/env python3
"""Zama Concrete ML benchmark anchor for `cargo bench-table speed`: the same ONNX file, encrypted.

Compiles an ONNX model with Concrete ML's `compile_onnx_model` (opset converted to 14, the
one Concrete ML reads), calibrated on `--calib` training images preprocessed as fhec does
(`--preprocess`: unit p/255, raw255 p, mnist-norm (p/255-0.1307)/0.3081 for a pixel p in
0..255), at `--n-bits` with `--rounding-threshold-bits` (Concrete ML's own accuracy/speed
knob) and its default per-bootstrap error probability.

Measured: compile time; the circuit's bootstrap count, widest integer and global error
probability; the clear-quantized accuracy on the test set (Concrete ML's integer semantics
without encryption, the figure its FHE output reproduces; all 10,000 images unless
`--accuracy-limit`); the float accuracy of the original file under onnxruntime; then the
deployment path Concrete ML documents, with a client/server split: `FHEModelDev` saves the
model, `FHEModelClient` generates keys and serializes the evaluation keys, encrypts each of
the first `--images` test images (quantize + encrypt + serialize), `FHEModelServer.run`
evaluates with the evaluation keys only (wall clock and process CPU time, all threads), and
the client deserializes and decrypts. Each decrypted output is compared with the
clear-quantized output of the same image (Concrete ML's FHE execution equals it unless a
bootstrap fails).

Third-party files. The model is kept as it is unless Concrete ML cannot read it; every
rewrite is listed in the "graph_edits" field (each computes the same function):
  - `--output NAME` cuts a model with several outputs to its class-score output;
  - an opset the ONNX version converter cannot bring to 14 is relabelled 14 when none of the
    graph's operators changed meaning between 14 and it (e.g. BatchNormalization-15);
  - auto_pad (SAME_UPPER/SAME_LOWER/VALID) is written as explicit pads;
  - DequantizeLinear (and other operators Concrete ML lacks) on constants is folded into a
    float initializer; QuantizeLinear -> DequantizeLinear pairs on activations are written
    as Div, Round, Add, Clip, Sub, Mul (the same float function, which Concrete ML reads);
  - with `--expand-qlinear` only: QLinearConv / QLinearMatMul / QLinearAdd as the float op
    between fake-quantization pairs (off by default: such a file "does not compile");
  - a trailing Softmax / LogSoftmax (no Concrete ML implementation) is dropped: the class
    (argmax) is unchanged;
  - a Reshape to a hard-coded batch of 1 gets -1 there (Concrete ML calibrates on a batch).
The edited model's float predictions are compared with the original's under onnxruntime
("graph_edit_agreement").

Inputs: [N,1,H,W] (NCHW), [N,H,W,1] (NHWC), [N,H,W] or flattened [N,H*W], batch dimension
fixed or symbolic. The 28x28 images are brought to the model's H x W (read from the model,
or `--input-size H,W`) by averaging k x l pixel blocks when 28 = kH = lW (14x14: 2x2
average pooling, 7x7: 4x4), or by centring them on a border of pixel value 0 when H, W >= 28
and H-28, W-28 are even (32x32: 2 pixels each side); the preprocessing is applied to the
resulting (not rounded) pixel values.

Time budget: before the encrypted run, the time of one image is estimated from the
circuit's complexity (Concrete's optimizer cost) times a rate measured on this machine
(seconds per complexity unit of a 128-bootstrap 6-bit table lookup). If the estimate
exceeds `--skip-fhe-above` (default an hour), no key is generated and no image runs: the
result keeps the compile statistics, the rate probe and the estimate ("fhe_skipped"). If it
exceeds `--max-fhe-seconds`, one image is run and killed at that limit; otherwise each
image runs under the same limit. Key generation has the same limit, compilation
`--max-compile-seconds`; the worker process is killed when its resident memory passes
`--max-memory-gb`. The pipeline runs in a child process that records its progress, so a
killed stage still yields the fields measured before it.

Prints one JSON object on stdout; progress goes to stderr. A model Concrete ML cannot
compile prints "compiled": false with a short "error" and exits 0; so does one whose
encrypted run times out ("fhe_timed_out": true) or fails ("fhe_error"). Bad arguments, a
missing file or data set, or a missing Python package exit with code 2.
"""

import argparse
import json
import math
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tenseal_seed import AnchorError, find_file, read_idx  # noqa: E402  (IDX reading, no TenSEAL import)

import numpy as np  # noqa: E402

TARGET_OPSET = 14
PREPROCESS = {
    "unit": lambda p: p / 255.0,
    "raw255": lambda p: p,
    "mnist-norm": lambda p: (p / 255.0 - 0.1307) / 0.3081,
}
# Operators that changed between opset 14 and a later one only in ways that do not matter to
# an inference graph of float tensors (types such as bfloat16, optional inputs, training mode
# kept off); a model using only these and unchanged operators may be relabelled 14.
RELABEL_OK = {
    "BatchNormalization": lambda n: all(a.name != "training_mode" or a.i == 0 for a in n.attribute),
    "Pow": lambda n: True,
    "Shape": lambda n: not any(a.name in ("start", "end") for a in n.attribute),
    "PRelu": lambda n: True,
    "Where": lambda n: True,
    "Identity": lambda n: True,
    "LessOrEqual": lambda n: True,
    "GreaterOrEqual": lambda n: True,
}
QLINEAR = {"QLinearConv", "QLinearMatMul", "QLinearAdd"}
# Operators through which a uint8/int8 tensor's dequantized value passes unchanged (positive
# scale): evaluated on the dequantized value by --expand-qlinear.
QPASS = {"MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity"}


def log(msg):
    """A progress line on stderr, named by the script that was run (this one or one reusing it)."""
    name = os.path.splitext(os.path.basename(sys.argv[0]))[0]
    print(f"[{name} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cpu_s():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def short(e, limit=300):
    """A one-line reason from an exception."""
    text = " ".join(str(e).split())
    text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def attr(obj, name):
    """An attribute of a Concrete parameter object (a method in concrete-python 2.10)."""
    v = getattr(obj, name, None)
    return v() if callable(v) else v


class Unsupported(Exception):
    """The model cannot be brought to a form Concrete ML compiles (reported, exit 0)."""


# ----------------------------------------------------------------------------- data
def load_raw(data_dir, dataset, split):
    x = read_idx(find_file(data_dir, dataset, f"{split}-images-idx3-ubyte"))
    y = read_idx(find_file(data_dir, dataset, f"{split}-labels-idx1-ubyte"))
    if x.ndim != 3 or x.shape[1:] != (28, 28) or len(y) != len(x):
        raise AnchorError(f"{dataset} {split}: images {x.shape}, labels {y.shape}: need [N,28,28] and [N]")
    return x, y.astype(int)


def resize(x, h, w):
    """[N,28,28] pixel values (float) to [N,h,w]; see the module doc for the rule."""
    if (h, w) == (28, 28):
        return x, "none"
    if 28 % h == 0 and 28 % w == 0:
        k, l = 28 // h, 28 // w
        return x.reshape(len(x), h, k, w, l).mean(axis=(2, 4)), f"{k}x{l} average pooling"
    if h >= 28 and w >= 28 and (h - 28) % 2 == 0 and (w - 28) % 2 == 0:
        ph, pw = (h - 28) // 2, (w - 28) // 2
        return np.pad(x, ((0, 0), (ph, ph), (pw, pw))), f"zero border {ph},{pw} (pixel value 0)"
    raise Unsupported(f"input size {h}x{w}: no rule from 28x28 (needs 28 divisible by H and W, "
                      f"or H, W >= 28 with an even difference)")


def to_layout(x, layout):
    """[N,h,w] float32 to the model's input layout."""
    if layout == "NCHW":
        return x[:, None, :, :]
    if layout == "NHWC":
        return x[:, :, :, None]
    if layout == "NHW":
        return x
    return x.reshape(len(x), -1)  # flat


def input_info(model, size_flag):
    """(name, layout, (h, w), dims, batch fixed to 1) of the model's single data input."""
    g = model.graph
    inits = {t.name for t in g.initializer}
    ins = [i for i in g.input if i.name not in inits]
    if len(ins) != 1:
        raise Unsupported(f"model has {len(ins)} data inputs ({', '.join(i.name for i in ins)}): need 1")
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
        raise Unsupported(f"input {inp.name} of shape {shown}: need [N,1,H,W], [N,H,W,1], [N,H,W] or [N,H*W]")
    if size_flag:
        if all(hw) and tuple(hw) != tuple(size_flag) and not (layout == "flat" and hw[0] * hw[1] == size_flag[0] * size_flag[1]):
            raise Unsupported(f"--input-size {size_flag[0]},{size_flag[1]} but input {inp.name} is {shown}")
        hw = tuple(size_flag)
    elif not all(hw):
        hw = (28, 28)
    if layout == "flat" and rest[0] and rest[0] != hw[0] * hw[1]:
        raise Unsupported(f"input {inp.name} of shape {shown} is not {hw[0]}x{hw[1]} pixels")
    return inp.name, layout, tuple(hw), shown, dims[0] == 1


def prepare(raw, pre, hw, layout):
    x, rule = resize(raw.astype(np.float64), *hw)
    return to_layout(PREPROCESS[pre](x).astype(np.float32), layout), rule


# ----------------------------------------------------------------------------- ONNX edits
def consts_of(g):
    from onnx import numpy_helper

    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return consts


def fresh_names(g, prefix):
    used = {v for n in g.node for v in list(n.input) + list(n.output)} | {t.name for t in g.initializer}
    i = 0
    while True:
        name = f"{prefix}{i}"
        i += 1
        if name not in used:
            yield name


def cut_to_output(model, name):
    """A model with `name` as its only output (onnx.utils.Extractor)."""
    import onnx
    from onnx.utils import Extractor

    g = model.graph
    inits = {t.name for t in g.initializer}
    inputs = [i.name for i in g.input if i.name not in inits]
    produced = {o for n in g.node for o in n.output}
    if name not in produced and name not in {o.name for o in g.output}:
        raise Unsupported(f"--output {name}: no such tensor (outputs: {', '.join(o.name for o in g.output)})")
    inferred = onnx.shape_inference.infer_shapes(model)
    return Extractor(inferred).extract_model(inputs, [name])


def opset_of(model):
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def to_opset14(model, edits):
    """The model at opset 14: the ONNX version converter, else a relabel when allowed."""
    import onnx
    from onnx import defs, version_converter

    src = opset_of(model)
    if src == TARGET_OPSET:
        return model
    try:
        out = version_converter.convert_version(model, TARGET_OPSET)
        if out.ir_version < 7:  # the converter keeps the IR; opset 14 needs 7
            edits.append(f"IR version {out.ir_version} -> 7 with the opset conversion {src} -> {TARGET_OPSET}")
            out.ir_version = 7
        return out
    except Exception as e:  # noqa: BLE001
        conv_err = short(e, 160)
    if src is None or src < TARGET_OPSET:
        raise Unsupported(f"opset conversion {src} -> {TARGET_OPSET} failed: {conv_err}")
    changed = []
    for n in model.graph.node:
        if n.domain not in ("", "ai.onnx"):
            continue
        try:
            a = defs.get_schema(n.op_type, src).since_version
            b = defs.get_schema(n.op_type, TARGET_OPSET).since_version
        except Exception:  # noqa: BLE001
            changed.append(n.op_type)
            continue
        if a != b and not (n.op_type in RELABEL_OK and RELABEL_OK[n.op_type](n)):
            changed.append(n.op_type)
    if changed:
        raise Unsupported(f"opset conversion {src} -> {TARGET_OPSET} failed ({conv_err}); operators that "
                          f"changed since 14: {', '.join(sorted(set(changed)))}")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for o in out.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = TARGET_OPSET
    if out.ir_version > 8:
        out.ir_version = 8  # the IR of opset 14's ONNX release
    edits.append(f"opset {src} relabelled {TARGET_OPSET}: the version converter failed ({conv_err}); "
                 f"the graph's operators mean the same at {TARGET_OPSET}")
    return out


def drop_unused_domains(model):
    used = {n.domain for n in model.graph.node}
    keep = [o for o in model.opset_import if o.domain in ("", "ai.onnx") or o.domain in used]
    if len(keep) != len(model.opset_import):
        del model.opset_import[:]
        model.opset_import.extend(keep)


def shapes_of(model):
    """Static shapes (None for unknown dims) of the tensors onnx shape inference knows."""
    import onnx

    inf = onnx.shape_inference.infer_shapes(model)
    out = {}
    for v in list(inf.graph.value_info) + list(inf.graph.input) + list(inf.graph.output):
        t = v.type.tensor_type
        if t.HasField("shape"):
            out[v.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    for t in inf.graph.initializer:
        out[t.name] = list(t.dims)
    return out


def explicit_pads(model, edits):
    """auto_pad SAME_UPPER / SAME_LOWER / VALID as explicit pads (Concrete ML refuses auto_pad,
    on Conv even its default NOTSET, which is dropped)."""
    from onnx import helper

    notset = 0
    for n in model.graph.node:
        for a in list(n.attribute):
            if n.op_type == "Conv" and a.name == "auto_pad" and a.s in (b"NOTSET", b""):
                n.attribute.remove(a)
                notset += 1
    if notset:
        edits.append(f"auto_pad NOTSET (the default) removed from {notset} Conv (Concrete ML refuses the attribute)")
    shapes_known = None
    zero = []
    for n in model.graph.node:  # no pads and no auto_pad: ONNX's default, zero padding, written out
        names = {a.name for a in n.attribute}
        if n.op_type in ("Conv", "MaxPool", "AveragePool") and "pads" not in names and "auto_pad" not in names:
            k = next((list(a.ints) for a in n.attribute if a.name == "kernel_shape"), None)
            if k is None:
                shapes_known = shapes_known or shapes_of(model)
                w = shapes_known.get(n.input[1]) if len(n.input) > 1 else None
                k = w[2:] if w else None
            if k is None:
                continue
            n.attribute.append(helper.make_attribute("pads", [0] * (2 * len(k))))
            zero.append(n.op_type)
    if zero:
        edits.append(f"pads [0, ...] (the ONNX default) written on {len(zero)} {'/'.join(sorted(set(zero)))} that "
                     f"leave them out (Concrete ML requires them on Conv)")
    nodes = [n for n in model.graph.node if n.op_type in ("Conv", "MaxPool", "AveragePool")
             and any(a.name == "auto_pad" and a.s not in (b"NOTSET", b"") for a in n.attribute)]
    if not nodes:
        return
    shapes = shapes_of(model)
    done = []
    for n in nodes:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        mode = attrs["auto_pad"].decode()
        shape = shapes.get(n.input[0])
        if n.op_type == "Conv":
            wshape = shapes.get(n.input[1])
            kernel = attrs.get("kernel_shape") or (wshape[2:] if wshape else None)
        else:
            kernel = attrs.get("kernel_shape")
        if not shape or kernel is None or any(d is None for d in shape[2:]):
            raise Unsupported(f"{n.op_type} {n.name!r} has auto_pad {mode} and an input of unknown size")
        spatial = shape[2:]
        strides = attrs.get("strides", [1] * len(spatial))
        dil = attrs.get("dilations", [1] * len(spatial))
        begin, end = [], []
        for size, k, s, d in zip(spatial, kernel, strides, dil):
            if mode == "VALID":
                total = 0
            else:
                total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            lo = total // 2 if mode in ("SAME_UPPER", "VALID") else total - total // 2
            begin.append(lo)
            end.append(total - lo)
        for a in list(n.attribute):
            if a.name in ("auto_pad", "pads"):
                n.attribute.remove(a)
        n.attribute.append(helper.make_attribute("pads", begin + end))
        if n.op_type == "Conv" and "kernel_shape" not in attrs:
            n.attribute.append(helper.make_attribute("kernel_shape", list(kernel)))
        done.append(f"{n.op_type} {n.name or n.output[0]} {mode} -> pads {begin + end}")
    edits.append("auto_pad written as explicit pads (Concrete ML refuses auto_pad): " + "; ".join(done))


def supported_ops():
    from concrete.ml.onnx.onnx_utils import ONNX_OPS_TO_NUMPY_IMPL

    return set(ONNX_OPS_TO_NUMPY_IMPL)


def op_name(n):
    return n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"


def fold_constants(model, edits, ops):
    """Evaluates the nodes Concrete ML has no implementation of whose inputs are all constants
    (e.g. a weight's DequantizeLinear) and stores their results as float initializers."""
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    g = model.graph
    consts = consts_of(g)
    folded, keep = [], []
    for n in g.node:
        if n.op_type not in ops and n.domain in ("", "ai.onnx") and n.op_type != "Constant" \
                and all((not i) or i in consts for i in n.input):
            try:
                res = ReferenceEvaluator(n).run(None, {i: consts[i] for i in n.input if i})
            except Exception as e:  # noqa: BLE001
                raise Unsupported(f"cannot fold constant {n.op_type} {n.name!r}: {short(e, 120)}") from None
            for name, v in zip(n.output, res):
                v = np.asarray(v)
                consts[name] = v
                g.initializer.append(numpy_helper.from_array(v, name))
            folded.append(n.op_type)
        else:
            keep.append(n)
    if folded:
        del g.node[:]
        g.node.extend(keep)
        kinds = ", ".join(f"{folded.count(k)} {k}" for k in sorted(set(folded)))
        edits.append(f"constant {kinds} folded into float initializers")


def expand_qdq(model, edits=None):
    """Concrete ML's ONNX reader has no QuantizeLinear / DequantizeLinear (QAT exports such as
    fhec's `--arch seedq` carry them on activations). Each pair with a constant scalar scale
    `s` and zero point `z` computes `(clip(round(x/s) + z, lo, hi) - z)·s` in float; write it
    with Div, Round, Add, Clip, Sub, Mul, ops Concrete ML reads, so it compiles the same
    function (and quantizes it at its own n_bits, as for any float model)."""
    from onnx import helper, numpy_helper

    g = model.graph
    if not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in g.node):
        return model
    consts = consts_of(g)
    producer = {o: n for n in g.node for o in n.output}
    nodes, fresh = [], fresh_names(g, "qdq_")
    dropped = set()
    pairs = 0
    for n in g.node:
        if n.op_type == "QuantizeLinear":
            dropped.add(n.output[0])  # emitted with its DequantizeLinear
            continue
        if n.op_type != "DequantizeLinear":
            nodes.append(n)
            continue
        q = producer.get(n.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            raise Unsupported(f"DequantizeLinear {n.name!r} does not read a QuantizeLinear")
        scale = consts.get(q.input[1])
        zp = consts.get(q.input[2]) if len(q.input) > 2 and q.input[2] else np.zeros((), np.uint8)
        if scale is None or zp is None or np.size(scale) != 1 or np.size(zp) != 1:
            raise Unsupported(f"QuantizeLinear {q.name!r}: need a constant scalar scale and zero point")
        info = np.iinfo(zp.dtype)
        z, s = float(zp.reshape(())), float(scale.reshape(()))

        def const(v):
            name = next(fresh)
            g.initializer.append(numpy_helper.from_array(np.asarray(v, np.float32), name))
            return name

        a, b, c, d, e = (next(fresh) for _ in range(5))
        nodes += [
            helper.make_node("Div", [q.input[0], const(s)], [a]),
            helper.make_node("Round", [a], [b]),
            helper.make_node("Add", [b, const(z)], [c]),
            helper.make_node("Clip", [c, const(info.min), const(info.max)], [d]),
            helper.make_node("Sub", [d, const(z)], [e]),
            helper.make_node("Mul", [e, const(s)], [n.output[0]]),
        ]
        pairs += 1
    if any(i in dropped for m in nodes for i in m.input) or any(o.name in dropped for o in g.output):
        raise Unsupported("a QuantizeLinear output is read by something other than a DequantizeLinear")
    del g.node[:]
    g.node.extend(nodes)
    if edits is not None:
        edits.append(f"{pairs} QuantizeLinear->DequantizeLinear pairs written as Div, Round, Add, Clip, Sub, Mul")
    return model


def expand_qlinear(model, edits):
    """QLinearConv / QLinearMatMul / com.microsoft QLinearAdd as DequantizeLinear -> float op ->
    QuantizeLinear -> DequantizeLinear (fake quantization: the same integer grid, computed on the
    dequantized values); an operator in QPASS on a quantized tensor runs on its dequantized
    value (it commutes with dequantization); the quantized input's QuantizeLinear becomes a
    fake-quantization pair. The pairs are then expanded by `expand_qdq`."""
    from onnx import helper, numpy_helper

    g = model.graph
    if not any(n.op_type in QLINEAR for n in g.node):
        return
    consts = consts_of(g)
    fresh = fresh_names(g, "ql_")
    fq = {}  # quantized tensor -> its dequantized float tensor
    nodes = []
    counts = {}

    def const(v):
        name = next(fresh)
        g.initializer.append(numpy_helper.from_array(np.asarray(v), name))
        consts[name] = np.asarray(v)
        return name

    grid = {}  # quantized tensor -> (scale, zero point) of its fake quantization

    def same_grid(t, s, z):
        a, b = grid[t], (consts.get(s), consts.get(z) if z else np.zeros((), np.uint8))
        return all(u is not None and v is not None and np.array_equal(np.asarray(u, np.float64), np.asarray(v, np.float64))
                   for u, v in zip(a, b))

    def deq(t, s, z, axis=1):
        """The float value of quantized tensor t (scale s, zero point z)."""
        if t in fq:
            if not same_grid(t, s, z):
                raise Unsupported(f"--expand-qlinear: {t!r} is read with another scale or zero point than it was written with")
            return fq[t]
        if t in consts:
            sv, zv = consts[s], (consts[z] if z else np.zeros((), np.uint8))
            w = consts[t].astype(np.float64)
            if np.size(sv) > 1:  # per channel, along `axis`
                shape = [1] * w.ndim
                shape[axis] = -1
                sv, zv = sv.reshape(shape), zv.reshape(shape)
            return const(((w - zv.astype(np.float64)) * sv).astype(np.float32))
        raise Unsupported(f"quantized tensor {t!r} has no known dequantized value")

    def fake_quant(x, s, z, out):
        q, d = next(fresh), out
        nodes.append(helper.make_node("QuantizeLinear", [x, s, z], [q]))
        dq = next(fresh)
        nodes.append(helper.make_node("DequantizeLinear", [q, s, z], [dq]))
        fq[d] = dq
        grid[d] = (consts.get(s), consts.get(z) if z else np.zeros((), np.uint8))

    for n in g.node:
        kind = n.op_type
        if kind == "QuantizeLinear" and n.input[0] not in consts:
            fake_quant(n.input[0], n.input[1], n.input[2] if len(n.input) > 2 else "", n.output[0])
        elif kind == "DequantizeLinear" and n.input[0] in fq:
            deq(n.input[0], n.input[1], n.input[2] if len(n.input) > 2 else "")  # checks the grid
            nodes.append(helper.make_node("Identity", [fq[n.input[0]]], [n.output[0]]))
        elif kind == "QLinearConv":
            x, xs, xz, w, ws, wz, ys, yz = n.input[:8]
            xf, wf = deq(x, xs, xz), deq(w, ws, wz, axis=0)
            ins = [xf, wf]
            if len(n.input) > 8 and n.input[8]:
                sx, sw = consts[xs].astype(np.float64), consts[ws].astype(np.float64).reshape(-1)
                ins.append(const((consts[n.input[8]].astype(np.float64) * sx * sw).astype(np.float32)))
            y = next(fresh)
            nodes.append(helper.make_node("Conv", ins, [y], name=n.name))
            nodes[-1].attribute.extend(n.attribute)
            fake_quant(y, ys, yz, n.output[0])
        elif kind == "QLinearMatMul":
            a, as_, az, b, bs, bz, ys, yz = n.input[:8]
            y = next(fresh)
            nodes.append(helper.make_node("MatMul", [deq(a, as_, az), deq(b, bs, bz, axis=1)], [y], name=n.name))
            fake_quant(y, ys, yz, n.output[0])
        elif kind == "QLinearAdd":
            a, as_, az, b, bs, bz, ys, yz = n.input[:8]
            y = next(fresh)
            nodes.append(helper.make_node("Add", [deq(a, as_, az), deq(b, bs, bz)], [y], name=n.name))
            fake_quant(y, ys, yz, n.output[0])
        elif n.input and n.input[0] in fq:
            if kind not in QPASS:
                raise Unsupported(f"--expand-qlinear: {kind} on a quantized tensor")
            out = next(fresh)
            m = helper.make_node(kind, [fq[n.input[0]]] + list(n.input[1:]), [out], name=n.name)
            m.attribute.extend(n.attribute)
            nodes.append(m)
            fq[n.output[0]] = out
            grid[n.output[0]] = grid[n.input[0]]
        else:
            nodes.append(n)
            continue
        counts[kind] = counts.get(kind, 0) + 1
    for o in g.output:
        if o.name in fq:
            nodes.append(helper.make_node("Identity", [fq[o.name]], [o.name]))
            from onnx import TensorProto

            o.type.tensor_type.elem_type = TensorProto.FLOAT
    del g.node[:]
    g.node.extend(nodes)
    # Drop initializers nothing reads any more (the integer weights).
    read = {i for m in g.node for i in m.input}
    keep = [t for t in g.initializer if t.name in read]
    del g.initializer[:]
    g.initializer.extend(keep)
    drop_unused_domains(model)
    edits.append("--expand-qlinear: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
                 + " written as float operators between QuantizeLinear->DequantizeLinear pairs")


def drop_trailing_softmax(model, edits, ops):
    g = model.graph
    if len(g.output) != 1:
        return
    out = g.output[0].name
    last = next((n for n in g.node if out in n.output), None)
    if last is None or last.op_type not in ("Softmax", "LogSoftmax") or last.op_type in ops:
        return
    src = last.input[0]
    g.node.remove(last)
    for n in g.node:  # the producer of the scores now writes the graph output
        for i, o in enumerate(n.output):
            if o == src:
                n.output[i] = out
        for i, v in enumerate(n.input):
            if v == src:
                n.input[i] = out
    edits.append(f"trailing {last.op_type} dropped (Concrete ML 1.9 has no {last.op_type}; the class, "
                 f"the argmax, is unchanged; outputs are the scores before it)")


def free_batch_reshapes(model, edits, fixed_batch):
    """Reshape of an activation to a hard-coded leading 1 -> -1 (the other dims resolved)."""
    from onnx import numpy_helper

    if not fixed_batch:
        return
    g = model.graph
    consts = consts_of(g)
    shapes = None
    fixed = []
    for n in g.node:
        if n.op_type != "Reshape" or n.input[0] in consts or n.input[1] not in consts:
            continue
        shape = [int(v) for v in consts[n.input[1]].reshape(-1)]
        if not shape or shape[0] != 1:
            continue
        rest = shape[1:]
        if -1 in rest or 0 in rest:
            shapes = shapes or shapes_of(model)
            src = shapes.get(n.input[0])
            if not src or any(d is None for d in src[1:]) or (src[0] not in (1, None)):
                raise Unsupported(f"Reshape {n.name!r} to {shape}: input size unknown")
            per = int(np.prod(src[1:]))
            rest = [src[i + 1] if v == 0 else v for i, v in enumerate(rest)]
            if -1 in rest:
                known = int(np.prod([v for v in rest if v != -1]))
                rest = [per // known if v == -1 else v for v in rest]
        new = np.asarray([-1] + rest, np.int64)
        name = n.input[1] + "_anybatch"
        g.initializer.append(numpy_helper.from_array(new, name))
        n.input[1] = name
        fixed.append(f"{n.name or n.output[0]} {shape} -> {new.tolist()}")
    if fixed:
        edits.append("Reshape to a hard-coded batch of 1 made batch-free (Concrete ML calibrates on a "
                     "batch): " + "; ".join(fixed))


def load_model(args, state):
    """The model as read (cut to its class-score output) and its input's layout."""
    import onnx

    edits = state["graph_edits"]
    try:
        model = onnx.load(args.onnx)
    except Exception as e:  # noqa: BLE001
        raise AnchorError(f"cannot read ONNX file {args.onnx}: {e}") from None
    state["onnx_opset"] = opset_of(model)
    state["onnx_producer"] = f"{model.producer_name} {model.producer_version}".strip()
    outs = [o.name for o in model.graph.output]
    state["onnx_outputs"] = outs
    if args.output:
        if outs != [args.output]:
            model = cut_to_output(model, args.output)
            edits.append(f"cut to output {args.output} (onnx.utils.Extractor; the file has {', '.join(outs)})")
    elif len(outs) != 1:
        raise Unsupported(f"model has {len(outs)} outputs ({', '.join(outs)}): name the class scores with --output")
    state["output"] = model.graph.output[0].name
    name, layout, hw, dims, fixed_batch = input_info(model, args.input_size)
    state.update({"input_name": name, "input_shape": dims, "input_layout": layout, "input_size": list(hw)})
    return model, layout, hw, fixed_batch


def static_reshapes(model, edits, sample, fixed_batch):
    """A Reshape whose target shape is computed from an activation's shape (PyTorch's
    `x.view(x.size(0), -1)`: Shape -> Gather -> Unsqueeze -> Concat) gets the constant
    [-1, d1, ...] of the shapes it produces under onnxruntime on one and two images (its first
    dimension must follow the batch, the others must not); the shape computation, now dead,
    is removed (Concrete ML's calibration fails on shape tensors)."""
    import onnx
    from onnx import helper, numpy_helper

    g = model.graph
    consts = consts_of(g)
    dyn = [n for n in g.node if n.op_type == "Reshape" and n.input[1] not in consts]
    if not dyn:
        return
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for n in dyn:
        probe.graph.output.append(helper.make_tensor_value_info(n.output[0], onnx.TensorProto.FLOAT, None))
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        names = [n.output[0] for n in dyn]
        shapes = [[np.shape(v) for v in sess.run(names, {name: sample[:b]})] for b in ((1,) if fixed_batch else (1, 2))]
    except Exception as e:  # noqa: BLE001
        raise Unsupported(f"Reshape to a computed shape, and onnxruntime cannot evaluate it: {short(e, 150)}") from None
    done = []
    for k, n in enumerate(dyn):
        got = [sh[k] for sh in shapes]
        if any(sh[0] != b for sh, b in zip(got, (1, 2))) or any(sh[1:] != got[0][1:] for sh in got):
            raise Unsupported(f"Reshape {n.name or n.output[0]} to a computed shape {got}: not batch x fixed dims")
        new = np.asarray([-1] + list(got[0][1:]), np.int64)
        cname = n.output[0] + "_static_shape"
        g.initializer.append(numpy_helper.from_array(new, cname))
        n.input[1] = cname
        done.append(f"{n.name or n.output[0]} -> {new.tolist()}")
    # Remove the nodes nothing reads any more.
    while True:
        read = {i for m in g.node for i in m.input} | {o.name for o in g.output}
        dead = [m for m in g.node if not any(o in read for o in m.output)]
        if not dead:
            break
        for m in dead:
            g.node.remove(m)
    edits.append("Reshape to a shape computed from the activation's shape given that shape as a constant "
                 "(without it Concrete ML 1.9 stops in calibration, AssertionError in post_training.py, on the shape computation): " + "; ".join(done))


def edit_model(args, original, state, fixed_batch, sample):
    """The model Concrete ML compiles: `original` with the edits it needs (module doc)."""
    import onnx

    edits = state["graph_edits"]
    model = onnx.ModelProto()
    model.CopyFrom(original)
    ops = supported_ops()
    handled = {"QuantizeLinear", "DequantizeLinear", "Softmax", "LogSoftmax"} | (QLINEAR if args.expand_qlinear else set())
    consts = consts_of(model.graph)
    missing = sorted({op_name(n) for n in model.graph.node
                      if n.op_type not in ops and n.op_type not in handled and n.op_type != "Constant"
                      and not all((not i) or i in consts for i in n.input)})
    if missing:
        ql = {"QLinearConv", "QLinearMatMul", "com.microsoft.QLinearAdd"}
        hint = " (--expand-qlinear rewrites the QLinear ones as float ops)" if set(missing) & ql else ""
        raise Unsupported("operators Concrete ML 1.9 does not implement: " + ", ".join(missing) + hint)
    if args.expand_qlinear:
        expand_qlinear(model, edits)
    drop_unused_domains(model)
    drop_trailing_softmax(model, edits, ops)  # before the converter wraps an opset < 13 one in Flatten/Reshape
    if (opset_of(model) or 0) >= 11:  # Clip with min/max inputs and Round exist from 11
        fold_constants(model, edits, ops)
        expand_qdq(model, edits)
    model = to_opset14(model, edits)
    explicit_pads(model, edits)
    fold_constants(model, edits, ops)
    expand_qdq(model, edits)
    drop_trailing_softmax(model, edits, ops)
    free_batch_reshapes(model, edits, fixed_batch)
    static_reshapes(model, edits, sample, fixed_batch)
    inits = {t.name for t in model.graph.initializer}
    listed = [i for i in model.graph.input if i.name in inits]
    if listed:  # IR < 4 lists the weights as graph inputs too; Concrete ML then wants them as inputs
        keep = [i for i in model.graph.input if i.name not in inits]
        del model.graph.input[:]
        model.graph.input.extend(keep)
        edits.append(f"{len(listed)} initializers removed from the graph inputs (listed there by IR < 4; "
                     f"Concrete ML counts them as data inputs)")
    left = sorted({op_name(n) for n in model.graph.node if n.op_type not in ops})
    if left:
        raise Unsupported("operators Concrete ML 1.9 does not implement: " + ", ".join(left))
    try:
        onnx.checker.check_model(model)
    except Exception as e:  # noqa: BLE001
        raise Unsupported(f"edited model fails the ONNX checker: {short(e, 200)}") from None
    return model


# ----------------------------------------------------------------------------- onnxruntime
def ort_scores(model, x, fixed_batch, chunk=1000):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = os.cpu_count() or 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    step = 1 if fixed_batch else chunk
    outs = [np.asarray(sess.run(None, {name: x[i:i + step]})[0]).reshape(min(step, len(x) - i), -1)
            for i in range(0, len(x), step)]
    return np.concatenate(outs)


# ----------------------------------------------------------------------------- time estimate
def measure_rate():
    """Seconds per unit of Concrete's complexity on this machine: a 6-bit table lookup on 128
    encrypted values (128 keyswitches + bootstraps), one run after key generation."""
    from concrete import fhe

    lut = fhe.LookupTable([(v * v + 7) % 64 for v in range(64)])

    @fhe.compiler({"x": "encrypted"})
    def f(x):
        return lut[x]

    rng = np.random.default_rng(0)
    circuit = f.compile([rng.integers(0, 64, size=(128,)) for _ in range(16)])
    circuit.keygen()
    enc = circuit.encrypt(rng.integers(0, 64, size=(128,)))
    t0 = time.perf_counter()
    circuit.run(enc)
    dt = time.perf_counter() - t0
    return dt / float(circuit.complexity), dt, int(circuit.programmable_bootstrap_count)


# ----------------------------------------------------------------------------- worker
class State:
    """The result so far, written atomically to a file the supervisor reads."""

    def __init__(self, path):
        self.path, self.d = path, {"graph_edits": []}

    def __getitem__(self, k):
        return self.d[k]

    def __setitem__(self, k, v):
        self.d[k] = v

    def update(self, other):
        self.d.update(other)

    def stage(self, name, limit=None):
        self.d["_stage"], self.d["_stage_t0"], self.d["_stage_limit"] = name, time.time(), limit
        self.save()

    def save(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.d, f, default=lambda o: o.item() if hasattr(o, "item") else str(o))
        os.replace(tmp, self.path)


def worker(args, work):
    """Runs `work(args, st)` in the worker process, recording its result and stage in `st`."""
    st = State(args.worker_state)
    try:
        work(args, st)
    except Unsupported as e:
        st["compiled"], st["error"] = False, str(e)
        log(f"does not compile: {e}")
    except AnchorError as e:
        st["_fatal"] = str(e)
    except ImportError as e:
        st["_fatal"] = f"{e} (run benches/anchors/setup.sh --concrete-ml)"
    except Exception as e:  # noqa: BLE001  (reported in the JSON, with the stage it happened in)
        log(f"error in stage {st.d.get('_stage')}: {short(e, 2000)}")
        if st.d.get("compiled"):
            st["fhe_error"] = f"{st.d.get('_stage')}: {short(e)}"
        else:
            st["compiled"], st["error"] = False, f"{st.d.get('_stage')}: {short(e)}"
    st.stage("done")


def work(args, st):
    import concrete.fhe as cfhe
    import concrete.ml
    import onnxruntime
    from concrete.ml.torch.compile import compile_onnx_model

    st.update({
        "concrete_ml_version": concrete.ml.__version__,
        "concrete_python_version": cfhe.__version__,
        "onnx": os.path.basename(args.onnx),
        "dataset": args.dataset,
        "preprocess": args.preprocess,
        "n_bits": args.n_bits,
        "rounding_threshold_bits": args.rounding_threshold_bits,
        "compiled": False,
        "error": None,
    })
    st.stage("load")
    raw_tr, ytr = load_raw(args.data, args.dataset, "train")
    raw_te, yte = load_raw(args.data, args.dataset, "t10k")
    labels = list(range(10))
    if args.classes:
        # A model of a subset of the labels: output index i means label classes[i]; test and
        # calibration images are those of the listed labels, labels become output indices.
        labels = args.classes
        keep_tr, keep_te = np.isin(ytr, labels), np.isin(yte, labels)
        raw_tr, raw_te = raw_tr[keep_tr], raw_te[keep_te]
        yte = np.array([labels.index(v) for v in yte[keep_te]])
        st["classes"] = labels
    if args.images > len(raw_te):
        raise AnchorError(f"--images {args.images} but the test set holds {len(raw_te)} images")
    original, layout, hw, fixed_batch = load_model(args, st)
    rng = np.random.default_rng(args.seed)
    calib_raw = raw_tr[rng.choice(len(raw_tr), size=min(args.calib, len(raw_tr)), replace=False)]
    calib, rule = prepare(calib_raw, args.preprocess, hw, layout)
    n_acc = min(args.accuracy_limit or len(raw_te), len(raw_te))
    n_acc = max(n_acc, args.images)
    xte, _ = prepare(raw_te[:n_acc], args.preprocess, hw, layout)
    yte = yte[:n_acc]
    st.update({"resize": rule, "calib": len(calib)})

    # Float accuracy of the original file (output cut only).
    st.stage("float")
    src = f"onnxruntime {onnxruntime.__version__}, original file"
    try:
        f_orig = ort_scores(original, xte, fixed_batch)
        st["float_accuracy"] = float((np.argmax(f_orig, axis=1) == yte).mean())
    except Exception as e:  # noqa: BLE001
        f_orig, src = None, None
        st["float_error"] = short(e, 200)
    st.update({"float_accuracy_source": src, "float_images": len(xte)})

    st.stage("edit")
    model = edit_model(args, original, st, fixed_batch, xte[:2])
    log(f"{args.onnx}: opset {st['onnx_opset']}, input {st['input_shape']} ({layout}, {hw[0]}x{hw[1]}, "
        f"resize {rule}), preprocess {args.preprocess}, {len(st['graph_edits'])} graph edits")
    for e in st["graph_edits"]:
        log(f"  edit: {e}")
    # The edited model's float predictions against the original's.
    if st["graph_edits"]:
        try:
            f_edit = ort_scores(model, xte, fixed_batch)
            if f_orig is None:
                st["float_accuracy"] = float((np.argmax(f_edit, axis=1) == yte).mean())
                st["float_accuracy_source"] = f"onnxruntime {onnxruntime.__version__}, edited model (the original does not run)"
            else:
                st["graph_edit_agreement"] = float((np.argmax(f_edit, axis=1) == np.argmax(f_orig, axis=1)).mean())
        except Exception as e:  # noqa: BLE001
            st["graph_edit_check_error"] = short(e, 200)
    if "float_accuracy" in st.d:
        log(f"float accuracy {st['float_accuracy']:.4f} ({st['float_accuracy_source']}) on {len(xte)} images"
            + (f", edited model agrees on {st.d.get('graph_edit_agreement', float('nan')):.4f}" if st["graph_edits"] else ""))

    log(f"compile (opset {st['onnx_opset']} -> 14), n_bits {args.n_bits}, rounding {args.rounding_threshold_bits}, "
        f"{len(calib)} calibration images")
    qm = compile_stage(args, st, lambda: compile_onnx_model(
        model, calib, n_bits=args.n_bits, rounding_threshold_bits=args.rounding_threshold_bits))
    run_compiled(args, st, qm, xte, yte, labels)


def compile_stage(args, st, compile_model):
    """`compile_model()` as the compile stage (its time limit; a failure is "compiled": false)."""
    st.stage("compile", args.max_compile_seconds)
    t0 = time.perf_counter()
    try:
        qm = compile_model()
    except MemoryError:
        raise Unsupported("out of memory while compiling") from None
    except Exception as e:  # noqa: BLE001
        import traceback

        traceback.print_exc(file=sys.stderr)
        tb = traceback.extract_tb(e.__traceback__)
        where = f" (at {os.path.basename(tb[-1].filename)}:{tb[-1].lineno} in {tb[-1].name})" if tb else ""
        raise Unsupported(f"Concrete ML cannot compile it: {short(e)}{where}") from None
    st["compile_s"] = round(time.perf_counter() - t0, 2)
    st["compiled"] = True
    return qm


def run_compiled(args, st, qm, xte, yte, labels):
    """Everything after compilation: the circuit's statistics, the clear-quantized accuracy on
    `xte`, the time estimate, key generation and the encrypted run of the first `--images`
    images through Concrete ML's client/server API."""
    import concrete.fhe as cfhe
    from concrete.ml.deployment import FHEModelClient, FHEModelDev, FHEModelServer

    circuit = qm.fhe_circuit
    stats = circuit.statistics
    st.update({
        "bootstraps": int(circuit.programmable_bootstrap_count),
        "bootstraps_per_parameter": {
            f"N={attr(k, 'polynomial_size')},k={attr(k, 'glwe_dimension')},n={attr(k, 'input_lwe_dimension')}": int(v)
            for k, v in stats.get("programmable_bootstrap_count_per_parameter", {}).items()},
        "widest_integer_bits": int(circuit.graph.maximum_integer_bit_width()),
        "global_p_error": float(circuit.global_p_error),
        "p_error": float(circuit.p_error),
        "complexity": float(circuit.complexity),
        "key_bytes_uncompressed": int(stats.get("size_of_bootstrap_keys", 0)) + int(stats.get("size_of_keyswitch_keys", 0)),
    })
    log(f"compiled in {st['compile_s']} s: {st['bootstraps']} bootstraps {st['bootstraps_per_parameter']}, "
        f"widest {st['widest_integer_bits']} bits, global p_error {st['global_p_error']:.3g}")

    # Concrete ML's integer semantics in the clear.
    st.stage("clear")
    q_clear = np.concatenate([qm.quantized_forward(qm.quantize_input(xte[i:i + 500]), fhe="disable")
                              for i in range(0, len(xte), 500)])
    q_clear = q_clear.reshape(len(xte), -1)
    st["clear_accuracy"] = float((np.argmax(q_clear, axis=1) == yte).mean())
    st["clear_images"] = len(xte)
    log(f"clear-quantized accuracy {st['clear_accuracy']:.4f} on {len(xte)} images")

    st.stage("estimate", 600)
    rate, dt, pbs = measure_rate()
    est = rate * st["complexity"]
    st.update({"fhe_estimate_s": round(est, 1),
               "rate_probe": f"{pbs} 6-bit bootstraps in {dt:.2f} s ({1000 * dt / pbs:.1f} ms each, wall)"})
    budget_images = args.images if est <= args.max_fhe_seconds else 1
    st["images_requested"] = args.images
    if est > args.skip_fhe_above:
        st["fhe_skipped"] = True
        log(f"estimated {est:.0f} s per image (rate probe: {st['rate_probe']}), above --skip-fhe-above "
            f"{args.skip_fhe_above:.0f} s: no encrypted image")
        return
    log(f"estimated {est:.0f} s per image (rate probe: {st['rate_probe']}); running {budget_images} image(s), "
        f"each killed at {args.max_fhe_seconds} s")

    work_dir = tempfile.mkdtemp(prefix="fhec_cml_")
    try:
        dep = os.path.join(work_dir, "dep")
        FHEModelDev(dep, qm).save()
        client = FHEModelClient(dep)
        st.stage("keygen", args.max_fhe_seconds)
        t0 = time.perf_counter()
        client.generate_private_and_evaluation_keys(force=True)
        st["keygen_s"] = round(time.perf_counter() - t0, 2)
        ek = client.get_serialized_evaluation_keys()
        st["eval_key_bytes"] = len(ek)
        log(f"keygen {st['keygen_s']} s, evaluation keys {len(ek)} bytes")
        server = FHEModelServer(dep)
        server.load()
        ek_server = cfhe.EvaluationKeys.deserialize(ek)
        st["per_image"] = []
        for i in range(budget_images):
            st.stage(f"fhe image {i}", args.max_fhe_seconds)
            t0 = time.perf_counter()
            ct = client.quantize_encrypt_serialize(xte[i:i + 1])
            enc = time.perf_counter() - t0
            t0, c0 = time.perf_counter(), cpu_s()
            res = server.run(ct, ek_server)
            ev, ev_cpu = time.perf_counter() - t0, cpu_s() - c0
            t0 = time.perf_counter()
            y = np.asarray(client.deserialize_decrypt(res))
            dec = time.perf_counter() - t0
            # The decrypted integers of the output layer, on the grid of the clear run.
            same = bool(np.array_equal(y.reshape(-1), q_clear[i].reshape(-1)))
            st["per_image"].append({
                "encrypt_s": enc, "evaluate_s": ev, "evaluate_cpu_s": ev_cpu, "decrypt_s": dec,
                "upload_bytes": len(ct), "download_bytes": len(res), "label": int(labels[yte[i]]),
                "prediction": int(labels[int(np.argmax(y))]) if int(np.argmax(y)) < len(labels) else int(np.argmax(y)), "equal_to_clear": same})
            st.save()
            log(f"image {i}: evaluate {ev:.1f} s ({ev_cpu:.1f} CPU-s), label {labels[yte[i]]}, "
                f"prediction {st['per_image'][-1]['prediction']}, equal to the clear run: {same}")
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


# ----------------------------------------------------------------------------- supervisor
def rss_bytes(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def finish(d):
    """Medians and totals from the per-image records; private fields removed."""
    per = d.get("per_image") or []
    d["images"] = len(per)
    d["correct"] = sum(p["prediction"] == p["label"] for p in per)
    d["equal_to_clear"] = sum(p["equal_to_clear"] for p in per)
    med = lambda k: statistics.median(p[k] for p in per) if per else None  # noqa: E731
    d.update({
        "median_encrypt_s": med("encrypt_s"),
        "median_evaluate_s": med("evaluate_s"),
        "median_evaluate_cpu_s": med("evaluate_cpu_s"),
        "median_decrypt_s": med("decrypt_s"),
        "upload_bytes": int(med("upload_bytes")) if per else None,
        "download_bytes": int(med("download_bytes")) if per else None,
        "threads": os.cpu_count(),
    })
    d.setdefault("fhe_timed_out", False)
    return {k: v for k, v in d.items() if not k.startswith("_")}


def supervise(args, argv):
    work_dir = tempfile.mkdtemp(prefix="fhec_cml_state_")
    path = os.path.join(work_dir, "state.json")
    limit_mem = int(args.max_memory_gb * 2**30)
    # The script that was run (this one, or one that reuses this supervisor), as the worker.
    cmd = [sys.executable, os.path.abspath(sys.argv[0]), *argv, "--worker-state", path]
    t_start = time.time()
    # The worker's stdout goes to our stderr: only the final JSON is on stdout.
    child = subprocess.Popen(cmd, stdout=sys.stderr, stderr=None)
    killed = None
    peak = 0
    try:
        while child.poll() is None:
            time.sleep(0.5)
            rss = rss_bytes(child.pid)
            peak = max(peak, rss)
            try:
                with open(path) as f:
                    d = json.load(f)
            except (OSError, ValueError):
                d = {}
            stage, t0, lim = d.get("_stage"), d.get("_stage_t0"), d.get("_stage_limit")
            if rss > limit_mem:
                killed = ("memory", stage, rss)
            elif lim and t0 and time.time() - t0 > lim:
                killed = ("time", stage, time.time() - t0)
            if killed:
                log(f"killing the worker (pid {child.pid}): {killed[0]} limit in stage {stage}")
                child.send_signal(signal.SIGKILL)
                child.wait()
                break
    except KeyboardInterrupt:
        child.send_signal(signal.SIGKILL)
        child.wait()
        raise
    try:
        with open(path) as f:
            d = json.load(f)
    except (OSError, ValueError):
        d = {}
    shutil.rmtree(work_dir, ignore_errors=True)
    if "_fatal" in d:
        log(f"error: {d['_fatal']}")
        return 2
    if not d:
        log(f"error: the worker exited ({child.returncode}) before writing any result")
        return 2
    stage = d.get("_stage")
    if killed is None and stage != "done":
        # Died on its own: a crash or the kernel's out-of-memory killer.
        rc = child.returncode
        why = f"the worker died in stage {stage} (exit {rc}{', signal ' + str(-rc) if rc and rc < 0 else ''}" \
              f"{', out of memory?' if rc == -9 else ''}; peak RSS {peak / 2**30:.1f} GiB)"
        if d.get("compiled") and stage not in ("compile", "clear", "estimate"):
            d["fhe_error"] = why
        else:
            d["compiled"], d["error"] = False, why
    elif killed:
        kind, stage, amount = killed
        if kind == "memory":
            why = f"out of memory: worker RSS {amount / 2**30:.1f} GiB over --max-memory-gb {args.max_memory_gb} in stage {stage}"
            if stage == "compile" or not d.get("compiled"):
                d["compiled"], d["error"] = False, why
            else:
                d["fhe_error"] = why
        elif stage == "compile":
            d["compiled"], d["error"] = False, f"compilation exceeded --max-compile-seconds {args.max_compile_seconds}"
        elif stage in ("keygen",) or (stage or "").startswith("fhe image"):
            d.update({"fhe_timed_out": True, "fhe_timeout_stage": stage,
                      "fhe_elapsed_s": round(amount, 1), "fhe_max_seconds": args.max_fhe_seconds})
        else:
            d["fhe_error"] = f"stage {stage} exceeded its time limit"
    d["peak_rss_bytes"] = peak
    d["total_s"] = round(time.time() - t_start, 1)
    print(json.dumps(finish(d)))
    return 0


def parse_classes(text):
    try:
        cls = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--classes {text!r}: need a comma-separated label list") from None
    if len(set(cls)) != len(cls) or any(c < 0 or c > 9 for c in cls):
        raise argparse.ArgumentTypeError("--classes: distinct labels in 0..9")
    return cls


def parse_size(s):
    try:
        h, w = (int(v) for v in s.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--input-size {s!r}: need H,W") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"--input-size {s!r}: need positive sizes")
    return (h, w)


def onnx_file(path):
    if not os.path.isfile(path):
        raise AnchorError(f"ONNX file not found: {path}")


def main(work=work, description=None, model_help="the ONNX model", check_model=onnx_file):
    """The command line of this anchor, or (given `work`, a description, what `--onnx` names and
    a check of that file raising AnchorError) of another that reuses its supervisor: same
    options but the ONNX-only ones, same JSON."""
    onnx_mode = work is globals()["work"]
    ap = argparse.ArgumentParser(description=description or __doc__.split("\n\n")[0])
    ap.add_argument("--onnx", required=True, help=model_help)
    ap.add_argument("--data", required=True,
                    help="directory with train-* and t10k-* IDX files, directly or under mnist/ or fashion-mnist/")
    ap.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist"])
    if onnx_mode:
        ap.add_argument("--preprocess", default="unit", choices=list(PREPROCESS),
                        help="pixel p in 0..255 -> unit: p/255, raw255: p, mnist-norm: (p/255-0.1307)/0.3081")
        ap.add_argument("--output", help="the class-score output of a model with several outputs")
        ap.add_argument("--classes", type=parse_classes, metavar="0,1",
                        help="labels of the output indices of a model trained on a subset of the labels: accuracy, "
                             "calibration and encrypted images on the test/training images of those labels only")
        ap.add_argument("--input-size", type=parse_size, metavar="H,W",
                        help="the model's image size when its input shape does not say it (default: from the model, else 28,28)")
        ap.add_argument("--expand-qlinear", action="store_true",
                        help="rewrite QLinearConv/QLinearMatMul/QLinearAdd as float ops between fake-quantization pairs")
        ap.add_argument("--n-bits", type=int, default=6, help="Concrete ML quantization bits")
        ap.add_argument("--rounding-threshold-bits", type=int, default=6,
                        help="Concrete ML's rounding of accumulators before tables (0: none)")
    ap.add_argument("--images", type=int, default=3, help="encrypt and evaluate the first N test images")
    ap.add_argument("--calib", type=int, default=1000, help="calibration images from the training set")
    ap.add_argument("--accuracy-limit", type=int, default=0,
                    help="clear-quantized and float accuracy on the first N test images (0: all)")
    ap.add_argument("--max-fhe-seconds", type=float, default=1800,
                    help="kill key generation or one encrypted image at this many seconds")
    ap.add_argument("--skip-fhe-above", type=float, default=3600,
                    help="run no encrypted image when the estimate per image is above this many seconds")
    ap.add_argument("--max-compile-seconds", type=float, default=7200)
    ap.add_argument("--max-memory-gb", type=float, default=None,
                    help="kill the worker above this resident memory (default: 85%% of the memory available at start)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--worker-state", help=argparse.SUPPRESS)
    argv = sys.argv[1:]
    args = ap.parse_args()
    if onnx_mode and args.rounding_threshold_bits == 0:
        args.rounding_threshold_bits = None
    if args.images < 1:
        log("error: --images must be at least 1")
        sys.exit(2)
    try:
        check_model(args.onnx)
    except AnchorError as e:
        log(f"error: {e}")
        sys.exit(2)
    if args.worker_state:
        worker(args, work)
        return
    if args.max_memory_gb is None:
        with open("/proc/meminfo") as f:
            avail = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
        args.max_memory_gb = round(0.85 * avail / 2**20, 1)
    try:
        sys.exit(supervise(args, argv))
    except (OSError, ValueError) as e:
        log(f"error: {type(e).__name__}: {e}")
        sys.exit(2)


if __name__ == "__main__":
    main()
