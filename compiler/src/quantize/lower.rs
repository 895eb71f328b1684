//! The lowering itself: one walk over the NN IR in topological order.

use std::collections::{BTreeSet, HashMap};

use fhec_ir::Preprocess;
use fhec_ir::circuit::{
    CNode, COp, Circuit, InputQuant, OutputQuant, Range, TableIndex, ValueId, kernels, verify::verify,
};
use fhec_ir::nn::{Graph, Grid, NodeId, Op, Pool, interp};
use ndarray::{Array2, Array4, ArrayD, Axis, IxDyn, Zip};

use super::{Calibration, QuantError, QuantOptions, RangeMode, Rounding};
use fhec_ir::circuit::eval::eval_node;
use rayon::prelude::*;

/// `x ≈ scale ⊙ v + offset`, both of the value's full shape.
#[derive(Clone, Debug)]
struct Affine {
    scale: ArrayD<f64>,
    offset: ArrayD<f64>,
}

impl Affine {
    fn uniform(shape: &[usize], scale: f64, offset: f64) -> Affine {
        Affine { scale: ArrayD::from_elem(IxDyn(shape), scale), offset: ArrayD::from_elem(IxDyn(shape), offset) }
    }

    fn map(&self, f: impl Fn(&ArrayD<f64>) -> ArrayD<f64>) -> Affine {
        Affine { scale: f(&self.scale), offset: f(&self.offset) }
    }
}

/// An element-wise function fused into the next table. Parameters are full-shape.
#[derive(Clone, Debug)]
enum Func {
    Relu,
    LeakyRelu(f64),
    PRelu(ArrayD<f64>),
    Sigmoid,
    Tanh,
    HardSigmoid(f64, f64),
    Clip(f64, f64),
    Square,
    Poly(Vec<f64>),
    Affine(ArrayD<f64>, ArrayD<f64>),
    Quant(Grid),
}

impl Func {
    fn apply(&self, x: f64, e: usize) -> f64 {
        match self {
            Func::Relu => x.max(0.0),
            Func::LeakyRelu(a) => {
                if x >= 0.0 {
                    x
                } else {
                    a * x
                }
            }
            Func::PRelu(s) => {
                if x >= 0.0 {
                    x
                } else {
                    s.as_slice().expect("standard layout")[e] * x
                }
            }
            Func::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Func::Tanh => x.tanh(),
            Func::HardSigmoid(a, b) => (a * x + b).clamp(0.0, 1.0),
            Func::Clip(lo, hi) => x.max(*lo).min(*hi),
            Func::Square => x * x,
            Func::Poly(c) => c.iter().rev().fold(0.0, |acc, &k| acc * x + k),
            Func::Affine(k, t) => k.as_slice().expect("standard")[e] * x + t.as_slice().expect("standard")[e],
            Func::Quant(g) => g.dequantize(g.quantize(x as f32)) as f64,
        }
    }

    fn params(&self) -> Vec<&ArrayD<f64>> {
        match self {
            Func::PRelu(s) => vec![s],
            Func::Affine(k, t) => vec![k, t],
            _ => vec![],
        }
    }

    fn map_params(&self, f: &impl Fn(&ArrayD<f64>) -> ArrayD<f64>) -> Func {
        match self {
            Func::PRelu(s) => Func::PRelu(f(s)),
            Func::Affine(k, t) => Func::Affine(f(k), f(t)),
            other => other.clone(),
        }
    }
}

/// The lowered form of an NN value.
#[derive(Clone, Debug)]
enum Low {
    /// An integer value of the circuit with its dequantization map.
    Int { id: ValueId, deq: Affine, cal: NodeId },
    /// Element-wise functions still to be applied to an integer value (in the next table).
    Pending { id: ValueId, deq: Affine, chain: Vec<Func>, cal: NodeId },
}

/// Per-element interval and noise variance of a circuit value.
struct Analysis {
    lo: ArrayD<f64>,
    hi: ArrayD<f64>,
    var: ArrayD<f64>,
}

struct Lowerer<'a> {
    g: &'a Graph,
    cal: &'a Calibration,
    opts: &'a QuantOptions,
    nodes: Vec<CNode>,
    an: Vec<Analysis>,
    low: HashMap<NodeId, Low>,
    /// Integer values of every emitted node on each calibration image (calibrated ranges).
    cvals: Vec<Vec<ArrayD<i64>>>,
}

/// Largest magnitude an accumulator may reach (exact in f64, far inside i64).
const MAX_ABS: f64 = (1u64 << 50) as f64;

/// Quantizes a verified NN graph into a verified circuit.
pub fn quantize(g: &Graph, pre: Preprocess, cal: &Calibration, opts: &QuantOptions) -> Result<Circuit, QuantError> {
    opts.validate()?;
    let mut l = Lowerer { g, cal, opts, nodes: vec![], an: vec![], low: HashMap::new(), cvals: vec![] };
    let order = g.topo_order().ok_or_else(|| QuantError::Internal("cyclic graph".into()))?;
    let pixel_to_q = l.lower_input(pre)?;
    for id in order {
        if matches!(g.node(id).op, Op::Input { .. }) {
            continue;
        }
        let low = l.lower_node(id)?;
        l.low.insert(id, low);
    }
    let out = g.outputs()[0];
    let (oid, deq) = match l.low[&out].clone() {
        Low::Int { id, deq, .. } => (id, deq),
        p @ Low::Pending { .. } => l.materialize(out, p)?,
    };
    let mut metadata = g.metadata.clone();
    metadata.insert(Preprocess::METADATA_KEY.into(), pre.to_string());
    let mut c = Circuit {
        name: g.name.clone(),
        metadata,
        nodes: l.nodes,
        output: oid,
        input_quant: InputQuant { pixel_to_q },
        output_quant: OutputQuant {
            scale: deq.scale.iter().copied().collect(),
            offset: deq.offset.iter().copied().collect(),
        },
        round_chunk: 1,
        output_bits: opts.output_bits,
    };
    c.round_chunk = c.default_round_chunk();
    verify(&c).map_err(|e| QuantError::Internal(e.to_string()))?;
    Ok(c)
}

/// Axes along which an array is not constant.
fn varying_axes(a: &ArrayD<f64>) -> BTreeSet<usize> {
    let mut s = BTreeSet::new();
    for ax in 0..a.ndim() {
        if a.shape()[ax] > 1 && a.lanes(Axis(ax)).into_iter().any(|l| l.iter().any(|&v| v != l[0])) {
            s.insert(ax);
        }
    }
    s
}

fn bits_for(max: i64) -> u32 {
    (64 - (max.max(0) as u64).leading_zeros()).max(1)
}

fn bcast(a: &ArrayD<f64>, shape: &[usize]) -> ArrayD<f64> {
    a.broadcast(IxDyn(shape)).expect("broadcastable").to_owned()
}

fn f32s_to_f64(a: &ArrayD<f32>) -> ArrayD<f64> {
    a.mapv(|v| v as f64)
}

/// The finest step `m / k` (`k <= qmax`) on which all weights lie, if any: weights of an
/// already-quantized (or QAT) model keep their integers.
fn weight_grid(w: &[f64], qmax: i64) -> Option<f64> {
    let m = w.iter().fold(0f64, |a, &v| a.max(v.abs()));
    if m == 0.0 {
        return Some(1.0);
    }
    let sample: Vec<f64> = w.iter().copied().step_by((w.len() / 64).max(1)).collect();
    let fits = |vals: &[f64], step: f64| vals.iter().all(|&v| ((v / step) - (v / step).round()).abs() < 1e-3);
    (1..=qmax).map(|k| m / k as f64).find(|&step| fits(&sample, step) && fits(w, step)).filter(|step| {
        // A "grid" whose step is finer than what qmax allows anyway is not informative.
        m / step <= qmax as f64 + 1e-6
    })
}

impl<'a> Lowerer<'a> {
    fn unsupported(&self, id: NodeId, message: impl Into<String>) -> QuantError {
        let n = self.g.node(id);
        QuantError::Unsupported { node: n.name.clone(), op: n.op.name(), message: message.into() }
    }

    /// Adds a circuit node and its analysis.
    fn emit(&mut self, name: String, op: COp, inputs: Vec<ValueId>, shape: Vec<usize>) -> Result<ValueId, QuantError> {
        let a = |i: usize| &self.an[inputs[i]];
        let an = match &op {
            COp::Input { .. } => unreachable!("the input is added by lower_input"),
            COp::Conv { weight, strides, pads, dilations, groups } => {
                let w = weight.mapv(|v| v as f64);
                let (wp, wn) = (w.mapv(|v| v.max(0.0)), w.mapv(|v| v.min(0.0)));
                let c = |w: &Array4<f64>, x: &ArrayD<f64>| {
                    kernels::conv2d(x.view(), w, *strides, *pads, *dilations, *groups)
                };
                let (lo, hi) = (&c(&wp, &a(0).lo) + &c(&wn, &a(0).hi), &c(&wp, &a(0).hi) + &c(&wn, &a(0).lo));
                Analysis { lo, hi, var: c(&w.mapv(|v| v * v), &a(0).var) }
            }
            COp::Dense { weight } => {
                let w = weight.mapv(|v| v as f64);
                let (wp, wn) = (w.mapv(|v| v.max(0.0)), w.mapv(|v| v.min(0.0)));
                let d = |w: &Array2<f64>, x: &ArrayD<f64>| kernels::dense(x.view(), w);
                let (lo, hi) = (&d(&wp, &a(0).lo) + &d(&wn, &a(0).hi), &d(&wp, &a(0).hi) + &d(&wn, &a(0).lo));
                Analysis { lo, hi, var: d(&w.mapv(|v| v * v), &a(0).var) }
            }
            COp::AddClear(k) => {
                let k = k.mapv(|v| v as f64);
                Analysis { lo: &a(0).lo + &k, hi: &a(0).hi + &k, var: a(0).var.clone() }
            }
            COp::Add => Analysis { lo: &a(0).lo + &a(1).lo, hi: &a(0).hi + &a(1).hi, var: &a(0).var + &a(1).var },
            COp::Sub => Analysis { lo: &a(0).lo - &a(1).hi, hi: &a(0).hi - &a(1).lo, var: &a(0).var + &a(1).var },
            COp::SumPool(p) => Analysis {
                lo: kernels::sum_pool(a(0).lo.view(), p),
                hi: kernels::sum_pool(a(0).hi.view(), p),
                var: kernels::sum_pool(a(0).var.view(), p),
            },
            COp::MaxPool { pool, shift, .. } => {
                // An approximate comparison lands within 2^(shift+1) of the exact maximum
                // (half a step of rounding, one step of noise); errors add up over a window.
                let err = if *shift > 0 {
                    ((pool.kernel[0] * pool.kernel[1]).saturating_sub(1) as f64) * (1u64 << (shift + 1)) as f64
                } else {
                    0.0
                };
                Analysis {
                    lo: kernels::fold_pool(a(0).lo.view(), pool, 0.0, f64::max).mapv(|v| v - err),
                    hi: kernels::fold_pool(a(0).hi.view(), pool, 0.0, f64::max).mapv(|v| v + err),
                    var: kernels::fold_pool(a(0).var.view(), pool, 1.0, f64::max).mapv(|v| v + 1.0),
                }
            }
            COp::Round { shift, mode } => {
                let d = (1u64 << shift) as f64;
                Analysis {
                    lo: a(0).lo.mapv(|v| (v / d).floor()),
                    hi: a(0).hi.mapv(|v| (v / d).floor()),
                    // Exact rounding adds its bootstraps' outputs; an approximate one's
                    // readers see its input's noise.
                    var: if mode.is_approximate() { a(0).var.clone() } else { a(0).var.mapv(|v| v + *shift as f64) },
                }
            }
            COp::Table { tables, .. } => {
                let lo = tables.iter().flatten().copied().min().unwrap_or(0) as f64;
                let hi = tables.iter().flatten().copied().max().unwrap_or(0) as f64;
                let s = IxDyn(&shape);
                Analysis {
                    lo: ArrayD::from_elem(s.clone(), lo),
                    hi: ArrayD::from_elem(s.clone(), hi),
                    var: ArrayD::ones(s),
                }
            }
            COp::Reshape => {
                let r = |x: &ArrayD<f64>| x.to_shape(IxDyn(&shape)).expect("size").to_owned();
                Analysis { lo: r(&a(0).lo), hi: r(&a(0).hi), var: r(&a(0).var) }
            }
            COp::Transpose { perm } => {
                let t = |x: &ArrayD<f64>| x.clone().permuted_axes(IxDyn(perm)).as_standard_layout().into_owned();
                Analysis { lo: t(&a(0).lo), hi: t(&a(0).hi), var: t(&a(0).var) }
            }
        };
        let (lo, hi) = (
            an.lo.iter().copied().fold(f64::INFINITY, f64::min),
            an.hi.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        );
        if lo.abs() > MAX_ABS || hi.abs() > MAX_ABS {
            return Err(QuantError::Unsupported {
                node: name,
                op: "accumulator",
                message: format!("values reach [{lo}, {hi}], beyond 2^50; lower the bit widths"),
            });
        }
        let norm2 = an.var.iter().copied().fold(1.0f64, f64::max).sqrt();
        let node = CNode { name, op, inputs, shape, range: Range { min: lo as i64, max: hi as i64 }, norm2 };
        // The node's values on the calibration images.
        let n_img = self.cvals.first().map_or(0, |v| v.len());
        let vals = (0..n_img)
            .into_par_iter()
            .map(|i| {
                let xs: Vec<&ArrayD<i64>> = node.inputs.iter().map(|&j| &self.cvals[j][i]).collect();
                eval_node(&node, &xs)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| QuantError::Internal(format!("'{}' on a calibration image: {e}", node.name)))?;
        self.nodes.push(node);
        self.an.push(an);
        self.cvals.push(vals);
        Ok(self.nodes.len() - 1)
    }

    fn lower_input(&mut self, pre: Preprocess) -> Result<Vec<i64>, QuantError> {
        let gid = self.g.inputs()[0];
        let node = self.g.node(gid);
        let shape = node.shape.clone();
        let users = self.g.users_of(gid);
        // A quantized model fixes the input grid with a QuantizeLinear right after the input.
        let grid = match users.first().map(|&u| &self.g.node(u).op) {
            Some(Op::FakeQuant(gr)) if users.iter().all(|&u| self.g.node(u).op == Op::FakeQuant(*gr)) => Some(*gr),
            _ => None,
        };
        let (pixel_to_q, deq): (Vec<i64>, Affine) = match grid {
            Some(gr) => {
                let q: Vec<i64> = (0..=255u8).map(|p| gr.quantize(pre.apply(p)) - gr.qmin).collect();
                (q, Affine::uniform(&shape, gr.scale as f64, (gr.qmin - gr.zero_point) as f64 * gr.scale as f64))
            }
            None => {
                let qmax = (1i64 << self.opts.input_bits) - 1;
                let q: Vec<i64> = (0..=255u32).map(|p| ((p as f64) * qmax as f64 / 255.0).round() as i64).collect();
                // pre(p) is affine in p: x = alpha * p + beta, and p ≈ q * 255 / qmax.
                let beta = pre.apply(0) as f64;
                let alpha = (pre.apply(255) as f64 - beta) / 255.0;
                (q, Affine::uniform(&shape, alpha * 255.0 / qmax as f64, beta))
            }
        };
        let max = pixel_to_q.iter().copied().max().unwrap_or(0);
        let s = IxDyn(&shape);
        self.nodes.push(CNode {
            name: node.name.clone(),
            op: COp::Input { bits: bits_for(max) },
            inputs: vec![],
            shape: shape.clone(),
            range: Range { min: pixel_to_q.iter().copied().min().unwrap_or(0), max },
            norm2: 1.0,
        });
        self.an.push(Analysis {
            lo: ArrayD::from_elem(s.clone(), *pixel_to_q.iter().min().unwrap_or(&0) as f64),
            hi: ArrayD::from_elem(s.clone(), max as f64),
            var: ArrayD::ones(s),
        });
        self.low.insert(gid, Low::Int { id: 0, deq, cal: gid });
        let images = if self.opts.ranges == RangeMode::Calibrated { &self.cal.pixels[..] } else { &[] };
        let encoded = images
            .iter()
            .filter(|px| px.len() == shape.iter().product::<usize>())
            .map(|px| {
                let q: Vec<i64> = px.iter().map(|&p| pixel_to_q[p as usize]).collect();
                ArrayD::from_shape_vec(IxDyn(&shape), q).expect("size checked")
            })
            .collect();
        self.cvals.push(encoded);
        Ok(pixel_to_q)
    }

    /// The integer form of an NN node's value, materializing pending functions, and
    /// requantizing (identity table) if its scale varies along axes other than `allowed`.
    fn int_of(&mut self, nn: NodeId, allowed: &[usize]) -> Result<(ValueId, Affine), QuantError> {
        let low = self.low[&nn].clone();
        let (id, deq) = match low {
            Low::Int { id, deq, .. } => (id, deq),
            p @ Low::Pending { .. } => self.materialize(nn, p)?,
        };
        if varying_axes(&deq.scale).iter().all(|a| allowed.contains(a)) {
            return Ok((id, deq));
        }
        let cal = match &self.low[&nn] {
            Low::Int { cal, .. } | Low::Pending { cal, .. } => *cal,
        };
        self.materialize(nn, Low::Pending { id, deq, chain: vec![], cal })
    }

    fn pending(&self, nn: NodeId) -> (ValueId, Affine, Vec<Func>, NodeId) {
        match self.low[&nn].clone() {
            Low::Int { id, deq, cal } => (id, deq, vec![], cal),
            Low::Pending { id, deq, chain, cal } => (id, deq, chain, cal),
        }
    }

    /// Emits the table lookup (with offset and rounding) that applies a pending chain and
    /// requantizes; returns the table's value and its dequantization map.
    fn materialize(&mut self, _nn: NodeId, low: Low) -> Result<(ValueId, Affine), QuantError> {
        let (id, deq, chain, cal) = match low {
            Low::Int { id, deq, cal } => (id, deq, vec![], cal),
            Low::Pending { id, deq, chain, cal } => (id, deq, chain, cal),
        };
        let name = format!("{}.table", self.g.node(cal).name);
        let shape = self.nodes[id].shape.clone();
        let n: usize = shape.iter().product();
        // Axes the tables must distinguish: where the scale or a chain parameter varies.
        let mut axes = varying_axes(&deq.scale);
        for f in &chain {
            for p in f.params() {
                axes.extend(varying_axes(p));
            }
        }
        // Offsets that vary elsewhere (zero padding at borders) become an integer clear addition.
        let (offset, residual) = reduce_offset(&deq, &axes);
        let index = match axes.len() {
            0 => TableIndex::Shared,
            1 => TableIndex::PerAxis(*axes.iter().next().expect("one axis")),
            _ => TableIndex::PerElement,
        };
        let a = &self.an[id];
        let mut lo = Zip::from(&a.lo).and(&residual).fold(f64::INFINITY, |m, &l, &r| m.min(l + r as f64)) as i64;
        let mut hi = Zip::from(&a.hi).and(&residual).fold(f64::NEG_INFINITY, |m, &h, &r| m.max(h + r as f64)) as i64;
        // Calibrated ranges: what the calibration images produce, plus a margin.
        let mut narrowed = false;
        if !self.cvals[id].is_empty() {
            let (mut clo, mut chi) = (i64::MAX, i64::MIN);
            for v in &self.cvals[id] {
                Zip::from(v).and(&residual).for_each(|&x, &r| {
                    clo = clo.min(x + r);
                    chi = chi.max(x + r);
                });
            }
            let m = ((chi - clo) as f64 * self.opts.range_margin_pct as f64 / 100.0).ceil() as i64 + 1;
            let (nlo, nhi) = (lo.max(clo - m), hi.min(chi + m));
            narrowed = (nlo, nhi) != (lo, hi);
            (lo, hi) = (nlo, nhi);
        }
        let span = hi - lo;
        let layer = &self.g.node(cal).name;
        let maxb = self.opts.table_bits_of(layer);
        let approx = self.opts.rounding_of(layer) == Rounding::Approximate;
        // Rounded indices: `round((x - lo) / 2^k)` (+1 with approximate rounding, which keeps
        // a step of guard at each end of the table, so the index tops out at 2^maxb - 2).
        let top = |k: u32| {
            let idx = (span + if k > 0 { 1i64 << (k - 1) } else { 0 }) >> k;
            if approx && k > 0 { idx + 2 } else { idx }
        };
        let mut k = 0u32;
        while k < 62 && top(k) >= 1i64 << maxb {
            k += 1;
        }
        let approx = approx && k > 0;
        let half = if k > 0 { 1i64 << (k - 1) } else { 0 };
        let guard = if approx { 1i64 << k } else { 0 };
        let add = residual.mapv(|r| r - lo + half + guard);
        let mut v = id;
        if narrowed || add.iter().any(|&x| x != 0) {
            let c = if add.iter().all(|&x| x == add.iter().next().copied().unwrap_or(0)) {
                ArrayD::from_elem(IxDyn(&[]), add.iter().next().copied().unwrap_or(0))
            } else {
                add
            };
            v = self.emit(format!("{}.offset", self.g.node(cal).name), COp::AddClear(c), vec![v], shape.clone())?;
            if narrowed {
                // Declare the calibrated range: values outside it are out of contract.
                let (rlo, rhi) = (half + guard, hi - lo + half + guard);
                self.nodes[v].range = Range { min: rlo, max: rhi };
                let a = &mut self.an[v];
                a.lo.mapv_inplace(|x| x.clamp(rlo as f64, rhi as f64));
                a.hi.mapv_inplace(|x| x.clamp(rlo as f64, rhi as f64));
            }
        }
        if k > 0 {
            v = self.emit(
                format!("{}.round", self.g.node(cal).name),
                COp::Round { shift: k, mode: if approx { Rounding::Approximate } else { Rounding::Exact } },
                vec![v],
                shape.clone(),
            )?;
        }
        // An approximate rounding's top guard step is part of the table.
        let in_width = bits_for(self.nodes[v].range.max + guard.signum());
        // Output quantization: the grid of a trailing FakeQuant, else from calibration.
        let out = match chain.last() {
            Some(Func::Quant(gr)) => OutQ::Grid(*gr),
            _ => self.act_quant(cal),
        };
        let reps: Vec<usize> = match &index {
            TableIndex::Shared => vec![0],
            TableIndex::PerAxis(ax) => {
                let stride: usize = shape[ax + 1..].iter().product();
                (0..shape[*ax]).map(|c| c * stride).collect()
            }
            TableIndex::PerElement => (0..n).collect(),
        };
        let sc = deq.scale.as_standard_layout();
        let scale = sc.as_slice().expect("standard");
        let off = offset.as_slice().expect("standard");
        let tables: Vec<Vec<i64>> = reps
            .iter()
            .map(|&e| {
                (0..1i64 << in_width)
                    .map(|i| {
                        let u = ((i - guard.signum()) << k) + lo;
                        let mut x = scale[e] * u as f64 + off[e];
                        for f in &chain {
                            x = f.apply(x, e);
                        }
                        out.quantize(x)
                    })
                    .collect()
            })
            .collect();
        let t = self.emit(name, COp::Table { in_width, index, tables }, vec![v], shape.clone())?;
        Ok((t, out.affine(&shape)))
    }

    fn act_quant(&self, cal: NodeId) -> OutQ {
        let (lo, hi) = self.cal.range(cal).unwrap_or((0.0, 1.0));
        let (lo, hi) = (lo as f64, hi as f64);
        let qmax = (1i64 << self.opts.act_bits_of(&self.g.node(cal).name)) - 1;
        let (scale, zp) = if lo >= 0.0 {
            (if hi > 0.0 { hi / qmax as f64 } else { 1.0 }, 0)
        } else if hi <= 0.0 {
            (-lo / qmax as f64, qmax)
        } else {
            let s = (hi - lo) / qmax as f64;
            (s, (-lo / s).round() as i64)
        };
        OutQ::Act { scale, zp, qmax }
    }

    fn lower_node(&mut self, id: NodeId) -> Result<Low, QuantError> {
        let node = self.g.node(id);
        let ins = self.g.inputs_of(id);
        let shape = node.shape.clone();
        let name = node.name.clone();
        let elementwise = |f: Func, l: &Lowerer| -> Low {
            let (v, deq, mut chain, _) = l.pending(ins[0]);
            chain.push(f);
            Low::Pending { id: v, deq, chain, cal: id }
        };
        let full = |a: &ArrayD<f32>| bcast(&f32s_to_f64(a), &shape);
        Ok(match &node.op {
            Op::Input { .. } => unreachable!("handled by lower_input"),
            Op::Conv(c) => {
                let (x, deq) = self.int_of(ins[0], &[1])?;
                let s_in: Vec<f64> = (0..deq.scale.shape()[1]).map(|ch| deq.scale[[0, ch, 0, 0]]).collect();
                let w = c.weight.mapv(|v| v as f64);
                let (o, ipg, _, _) = w.dim();
                let opg = o / c.groups;
                let mut wq = Array4::<i64>::zeros(w.raw_dim());
                let mut s_w = vec![1.0; o];
                let qmax = (1i64 << (self.opts.weight_bits_of(&name) - 1)) - 1;
                for oc in 0..o {
                    let g = oc / opg;
                    let mut eff = w.index_axis(Axis(0), oc).to_owned();
                    for (ic, mut plane) in eff.axis_iter_mut(Axis(0)).enumerate() {
                        plane *= s_in[g * ipg + ic];
                    }
                    let vals: Vec<f64> = eff.iter().copied().collect();
                    let step = weight_grid(&vals, qmax).unwrap_or_else(|| {
                        let m = vals.iter().fold(0f64, |a, &v| a.max(v.abs()));
                        if m > 0.0 { m / qmax as f64 } else { 1.0 }
                    });
                    s_w[oc] = step;
                    wq.index_axis_mut(Axis(0), oc).assign(&eff.mapv(|v| (v / step).round() as i64));
                }
                // Output offset: the float conv (with bias) of the input offset tensor.
                let mut cst = kernels::conv2d(deq.offset.view(), &w, c.strides, c.pads, c.dilations, c.groups);
                for (oc, mut plane) in cst.axis_iter_mut(Axis(1)).enumerate() {
                    plane += c.bias.as_ref().map_or(0.0, |b| b[oc] as f64);
                }
                let v = self.emit(
                    name.clone(),
                    COp::Conv {
                        weight: wq,
                        strides: c.strides,
                        pads: c.pads,
                        dilations: c.dilations,
                        groups: c.groups,
                    },
                    vec![x],
                    shape.clone(),
                )?;
                let sw = ArrayD::from_shape_vec(IxDyn(&[1, o, 1, 1]), s_w).expect("shape");
                Low::Int { id: v, deq: Affine { scale: bcast(&sw, &shape), offset: cst }, cal: id }
            }
            Op::Dense { weight, bias } => {
                let rank = self.g.node(ins[0]).shape.len();
                let (x, deq) = self.int_of(ins[0], &[rank - 1])?;
                if varying_axes(&deq.offset).iter().any(|&a| a != rank - 1) {
                    return Err(self.unsupported(id, "input offsets vary along a non-feature axis"));
                }
                let kdim = weight.ncols();
                let lane =
                    |a: &ArrayD<f64>| -> Vec<f64> { a.as_standard_layout().iter().take(kdim).copied().collect() };
                let (s_in, o_in) = (lane(&deq.scale), lane(&deq.offset));
                let w = weight.mapv(|v| v as f64);
                let qmax = (1i64 << (self.opts.weight_bits_of(&name) - 1)) - 1;
                let mut wq = Array2::<i64>::zeros(w.raw_dim());
                let mut s_w = Vec::with_capacity(w.nrows());
                let mut cst = Vec::with_capacity(w.nrows());
                for (o, row) in w.outer_iter().enumerate() {
                    let eff: Vec<f64> = row.iter().zip(&s_in).map(|(a, b)| a * b).collect();
                    let step = weight_grid(&eff, qmax).unwrap_or_else(|| {
                        let m = eff.iter().fold(0f64, |a, &v| a.max(v.abs()));
                        if m > 0.0 { m / qmax as f64 } else { 1.0 }
                    });
                    s_w.push(step);
                    for (k, &e) in eff.iter().enumerate() {
                        wq[[o, k]] = (e / step).round() as i64;
                    }
                    let c: f64 = row.iter().zip(&o_in).map(|(a, b)| a * b).sum();
                    cst.push(c + bias.as_ref().map_or(0.0, |b| b[o] as f64));
                }
                let v = self.emit(name.clone(), COp::Dense { weight: wq }, vec![x], shape.clone())?;
                let mut ps = vec![1; shape.len()];
                ps[rank - 1] = s_w.len();
                let sw = ArrayD::from_shape_vec(IxDyn(&ps), s_w).expect("shape");
                let cs = ArrayD::from_shape_vec(IxDyn(&ps), cst).expect("shape");
                Low::Int { id: v, deq: Affine { scale: bcast(&sw, &shape), offset: bcast(&cs, &shape) }, cal: id }
            }
            Op::AddConst(c) => self.affine(ins[0], id, &ArrayD::ones(IxDyn(&shape)), &full(c)),
            Op::MulConst(c) => self.affine(ins[0], id, &full(c), &ArrayD::zeros(IxDyn(&shape))),
            Op::BatchNorm { scale, bias, mean, var, epsilon } => {
                let mut ps = vec![1; shape.len()];
                ps[1] = scale.len();
                let k: Vec<f64> =
                    (0..scale.len()).map(|c| scale[c] as f64 / ((var[c] + epsilon) as f64).sqrt()).collect();
                let t: Vec<f64> = (0..scale.len()).map(|c| bias[c] as f64 - mean[c] as f64 * k[c]).collect();
                let k = bcast(&ArrayD::from_shape_vec(IxDyn(&ps), k).expect("shape"), &shape);
                let t = bcast(&ArrayD::from_shape_vec(IxDyn(&ps), t).expect("shape"), &shape);
                self.affine(ins[0], id, &k, &t)
            }
            Op::Relu => elementwise(Func::Relu, self),
            Op::LeakyRelu { alpha } => elementwise(Func::LeakyRelu(*alpha as f64), self),
            Op::PRelu(s) => elementwise(Func::PRelu(full(s)), self),
            Op::Sigmoid => elementwise(Func::Sigmoid, self),
            Op::Tanh => elementwise(Func::Tanh, self),
            Op::HardSigmoid { alpha, beta } => elementwise(Func::HardSigmoid(*alpha as f64, *beta as f64), self),
            Op::Clip { min, max } => elementwise(
                Func::Clip(min.map_or(f64::NEG_INFINITY, |v| v as f64), max.map_or(f64::INFINITY, |v| v as f64)),
                self,
            ),
            Op::Square => elementwise(Func::Square, self),
            Op::Poly(c) => elementwise(Func::Poly(c.iter().map(|&v| v as f64).collect()), self),
            Op::Mul if ins[0] == ins[1] => elementwise(Func::Square, self),
            Op::Mul => {
                return Err(self.unsupported(
                    id,
                    "a product of two different computed tensors needs two bootstraps per element; not supported yet",
                ));
            }
            Op::FakeQuant(gr) => {
                if let Low::Int { id: v, deq, cal } = &self.low[&ins[0]] {
                    if on_grid(deq, gr, self.nodes[*v].range) {
                        return Ok(Low::Int { id: *v, deq: deq.clone(), cal: *cal });
                    }
                }
                elementwise(Func::Quant(*gr), self)
            }
            Op::Add | Op::Sub => {
                let (a, da) = self.int_of(ins[0], &[0, 1, 2, 3, 4, 5])?;
                let (b, db) = self.int_of(ins[1], &[0, 1, 2, 3, 4, 5])?;
                let same =
                    Zip::from(&da.scale).and(&db.scale).all(|&x, &y| (x - y).abs() <= 1e-9 * x.abs().max(y.abs()));
                if !same || self.nodes[a].shape != self.nodes[b].shape {
                    return Err(self.unsupported(
                        id,
                        "adding tensors on different scales (a residual connection) is not supported yet",
                    ));
                }
                let sub = matches!(node.op, Op::Sub);
                let v = self.emit(name, if sub { COp::Sub } else { COp::Add }, vec![a, b], shape.clone())?;
                let offset = if sub { &da.offset - &db.offset } else { &da.offset + &db.offset };
                Low::Int { id: v, deq: Affine { scale: da.scale, offset }, cal: id }
            }
            Op::MaxPool(p) => {
                let (x, deq) = self.int_of(ins[0], &[1])?;
                let (x, deq) = if deq.scale.iter().any(|&s| s <= 0.0) {
                    let cal = ins[0];
                    self.materialize(ins[0], Low::Pending { id: x, deq, chain: vec![], cal })?
                } else {
                    (x, deq)
                };
                // Max commutes with a positive per-channel map only if offsets are per channel too.
                let (x, deq) = self.channelwise_offsets(ins[0], x, deq)?;
                // With approximate rounding, the comparisons are sized for the calibrated
                // range of what they compare, and those of values wider than a table read
                // read the top bits of the differences (two guard steps at each end). Exact
                // rounding keeps exact comparisons over the exact range.
                let approx = self.opts.rounding_of(&name) == Rounding::Approximate;
                let x = if approx { self.calibrated_range(&name, x)? } else { x };
                let span = self.nodes[x].range.max - self.nodes[x].range.min;
                let maxb = self.opts.table_bits_of(&name);
                let (diff_offset, diff_width, shift) = if approx && bits_for(2 * span) > maxb {
                    let mut s = 1u32;
                    while s < 40 && 2 * span + 4 * (1i64 << s) >= 1i64 << (maxb + s) {
                        s += 1;
                    }
                    (span + 2 * (1i64 << s), maxb, s)
                } else {
                    (span, bits_for(2 * span), 0)
                };
                let op = COp::MaxPool { pool: p.clone(), diff_offset, diff_width, shift };
                let v = self.emit(name, op, vec![x], shape.clone())?;
                let ch = |a: &ArrayD<f64>| {
                    bcast(
                        &a.slice_each_axis(|ax| {
                            if ax.axis.index() >= 2 { ndarray::Slice::from(0..1) } else { ndarray::Slice::from(..) }
                        })
                        .to_owned(),
                        &shape,
                    )
                };
                Low::Int { id: v, deq: deq.map(ch), cal: id }
            }
            Op::AvgPool { pool, .. } => {
                let (x, deq) = self.int_of(ins[0], &[1])?;
                let v = self.emit(name, COp::SumPool(pool.clone()), vec![x], shape.clone())?;
                let in_shape = self.nodes[x].shape.clone();
                let f = |a: &ArrayD<f64>| -> Result<ArrayD<f64>, QuantError> {
                    let a32 = a.mapv(|v| v as f32);
                    interp::eval_op(&node.op, &[a32.view()], &shape)
                        .map(|r| f32s_to_f64(&r))
                        .map_err(|e| QuantError::Internal(e.0))
                };
                let avg_ones = f(&ArrayD::ones(IxDyn(&in_shape)))?;
                let sum_ones = kernels::sum_pool(ArrayD::<f64>::ones(IxDyn(&in_shape)).view(), pool);
                let ch = bcast(
                    &deq.scale
                        .slice_each_axis(|ax| {
                            if ax.axis.index() >= 2 { ndarray::Slice::from(0..1) } else { ndarray::Slice::from(..) }
                        })
                        .to_owned(),
                    &shape,
                );
                let scale = &ch * &(&avg_ones / &sum_ones.mapv(|v| v.max(1.0)));
                Low::Int { id: v, deq: Affine { scale, offset: f(&deq.offset)? }, cal: id }
            }
            Op::SumPool(pool) => {
                let (x, deq) = self.int_of(ins[0], &[1])?;
                let v = self.emit(name, COp::SumPool(pool.clone()), vec![x], shape.clone())?;
                let ch = bcast(
                    &deq.scale
                        .slice_each_axis(|ax| {
                            if ax.axis.index() >= 2 { ndarray::Slice::from(0..1) } else { ndarray::Slice::from(..) }
                        })
                        .to_owned(),
                    &shape,
                );
                Low::Int {
                    id: v,
                    deq: Affine { scale: ch, offset: kernels::sum_pool(deq.offset.view(), pool) },
                    cal: id,
                }
            }
            Op::GlobalAvgPool => {
                let (x, deq) = self.int_of(ins[0], &[1])?;
                let s = &self.nodes[x].shape;
                let p =
                    Pool { kernel: [s[2], s[3]], strides: [1, 1], pads: [0; 4], dilations: [1, 1], ceil_mode: false };
                let area = (s[2] * s[3]) as f64;
                let v = self.emit(name, COp::SumPool(p), vec![x], shape.clone())?;
                let mean = |a: &ArrayD<f64>| {
                    bcast(
                        &(a.mean_axis(Axis(3))
                            .expect("w")
                            .mean_axis(Axis(2))
                            .expect("h")
                            .insert_axis(Axis(2))
                            .insert_axis(Axis(3))),
                        &shape,
                    )
                };
                let scale = mean(&deq.scale) / area;
                Low::Int { id: v, deq: Affine { scale, offset: mean(&deq.offset) }, cal: id }
            }
            Op::Reshape | Op::Transpose { .. } => {
                let perm = if let Op::Transpose { perm } = &node.op { Some(perm.clone()) } else { None };
                let tf = |a: &ArrayD<f64>| match &perm {
                    Some(p) => a.clone().permuted_axes(IxDyn(p)).as_standard_layout().into_owned(),
                    None => a.as_standard_layout().to_shape(IxDyn(&shape)).expect("size").to_owned(),
                };
                // Pending functions are applied first, so their tables stay per channel.
                let all: Vec<usize> = (0..self.g.node(ins[0]).shape.len()).collect();
                let (v, deq) = self.int_of(ins[0], &all)?;
                let cal = ins[0];
                let chain: Vec<Func> = vec![];
                let op = match &perm {
                    Some(p) => COp::Transpose { perm: p.clone() },
                    None => COp::Reshape,
                };
                let nv = self.emit(name, op, vec![v], shape.clone())?;
                let deq = deq.map(tf);
                if chain.is_empty() {
                    Low::Int { id: nv, deq, cal }
                } else {
                    Low::Pending { id: nv, deq, chain: chain.iter().map(|f| f.map_params(&tf)).collect(), cal }
                }
            }
            Op::Softmax { .. } | Op::LogSoftmax { .. } if self.g.outputs().contains(&id) => {
                // Monotone per row: the argmax of the scores does not change.
                self.low[&ins[0]].clone()
            }
            Op::Softmax { .. } | Op::LogSoftmax { .. } => {
                return Err(self.unsupported(id, "softmax is supported only as the model's last op"));
            }
            Op::Pad { .. } => {
                return Err(self.unsupported(
                    id,
                    "a separate Pad is not supported by the quantizer; pad in the Conv or pooling op",
                ));
            }
        })
    }

    /// Applies `x -> k ⊙ x + t`.
    fn affine(&self, input: NodeId, id: NodeId, k: &ArrayD<f64>, t: &ArrayD<f64>) -> Low {
        match self.low[&input].clone() {
            Low::Int { id: v, deq, .. } => {
                Low::Int { id: v, deq: Affine { scale: &deq.scale * k, offset: &(&deq.offset * k) + t }, cal: id }
            }
            Low::Pending { id: v, deq, mut chain, .. } => {
                chain.push(Func::Affine(k.clone(), t.clone()));
                Low::Pending { id: v, deq, chain, cal: id }
            }
        }
    }

    /// With calibrated ranges, declares the range the calibration images produce for `x`
    /// (plus the margin, within the exact one) on a no-op clear addition named
    /// `{name}.calibrated`, so that what reads it (max pooling) is sized for it; values outside
    /// it are out of contract, as for tables. Returns `x` itself when nothing narrows.
    fn calibrated_range(&mut self, name: &str, x: ValueId) -> Result<ValueId, QuantError> {
        if self.cvals[x].is_empty() {
            return Ok(x);
        }
        let r = self.nodes[x].range;
        let (mut clo, mut chi) = (i64::MAX, i64::MIN);
        for v in &self.cvals[x] {
            for &e in v.iter() {
                clo = clo.min(e);
                chi = chi.max(e);
            }
        }
        let m = ((chi - clo) as f64 * self.opts.range_margin_pct as f64 / 100.0).ceil() as i64 + 1;
        let (lo, hi) = (r.min.max(clo - m), r.max.min(chi + m));
        if (lo, hi) == (r.min, r.max) {
            return Ok(x);
        }
        let shape = self.nodes[x].shape.clone();
        let v =
            self.emit(format!("{name}.calibrated"), COp::AddClear(ArrayD::from_elem(IxDyn(&[]), 0)), vec![x], shape)?;
        self.nodes[v].range = Range { min: lo, max: hi };
        let a = &mut self.an[v];
        a.lo.mapv_inplace(|e| e.clamp(lo as f64, hi as f64));
        a.hi.mapv_inplace(|e| e.clamp(lo as f64, hi as f64));
        Ok(v)
    }

    /// Makes offsets constant per channel (axis 1) by adding the integer residual.
    fn channelwise_offsets(&mut self, nn: NodeId, x: ValueId, deq: Affine) -> Result<(ValueId, Affine), QuantError> {
        let axes: BTreeSet<usize> = [1].into_iter().collect();
        let (offset, residual) = reduce_offset(&deq, &axes);
        if residual.iter().all(|&r| r == 0) {
            return Ok((x, Affine { scale: deq.scale, offset }));
        }
        let shape = self.nodes[x].shape.clone();
        let v = self.emit(format!("{}.offset", self.g.node(nn).name), COp::AddClear(residual), vec![x], shape)?;
        Ok((v, Affine { scale: deq.scale, offset }))
    }
}

/// Output quantization of a table.
enum OutQ {
    Grid(Grid),
    Act { scale: f64, zp: i64, qmax: i64 },
}

impl OutQ {
    fn quantize(&self, y: f64) -> i64 {
        match self {
            OutQ::Grid(g) => g.quantize(y as f32),
            OutQ::Act { scale, zp, qmax } => ((y / scale).round_ties_even() as i64 + zp).clamp(0, *qmax),
        }
    }

    fn affine(&self, shape: &[usize]) -> Affine {
        match self {
            OutQ::Grid(g) => Affine::uniform(shape, g.scale as f64, -(g.zero_point as f64) * g.scale as f64),
            OutQ::Act { scale, zp, .. } => Affine::uniform(shape, *scale, -(*zp as f64) * scale),
        }
    }
}

/// Whether an integer value with map `deq` already is the grid's integer (so a
/// FakeQuant on it is the identity).
fn on_grid(deq: &Affine, g: &Grid, r: Range) -> bool {
    let s = g.scale as f64;
    let first = |a: &ArrayD<f64>| a.iter().next().copied().unwrap_or(0.0);
    let (sc, of) = (first(&deq.scale), first(&deq.offset));
    if deq.scale.iter().any(|&v| v != sc) || deq.offset.iter().any(|&v| v != of) || (sc - s).abs() > 1e-7 * s {
        return false;
    }
    // x = s * v + of = s * (q - zp)  =>  q = v + of / s + zp
    let shift = of / s + g.zero_point as f64;
    (shift - shift.round()).abs() < 1e-4
        && r.min + shift.round() as i64 >= g.qmin
        && r.max + shift.round() as i64 <= g.qmax
}

/// Splits offsets into a part constant along every axis outside `axes` (the median of
/// each group) and an integer residual in units of the scale.
fn reduce_offset(deq: &Affine, axes: &BTreeSet<usize>) -> (ArrayD<f64>, ArrayD<i64>) {
    let shape = deq.offset.shape().to_vec();
    if varying_axes(&deq.offset).iter().all(|a| axes.contains(a)) {
        return (deq.offset.clone(), ArrayD::zeros(IxDyn(&shape)));
    }
    let mut groups: HashMap<Vec<usize>, Vec<f64>> = HashMap::new();
    let key = |idx: &IxDyn| -> Vec<usize> { axes.iter().map(|&a| idx[a]).collect() };
    for (idx, &v) in deq.offset.indexed_iter() {
        groups.entry(key(&idx)).or_default().push(v);
    }
    let medians: HashMap<Vec<usize>, f64> = groups
        .into_iter()
        .map(|(k, mut v)| {
            v.sort_by(f64::total_cmp);
            (k, v[v.len() / 2])
        })
        .collect();
    let mut offset = deq.offset.clone();
    let mut residual = ArrayD::<i64>::zeros(IxDyn(&shape));
    for (idx, o) in offset.indexed_iter_mut() {
        let m = medians[&key(&idx)];
        let s = deq.scale[&idx];
        residual[&idx] = if s != 0.0 { ((*o - m) / s).round() as i64 } else { 0 };
        *o = m;
    }
    (offset, residual)
}
