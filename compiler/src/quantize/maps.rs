//! The maps of lowered values: a value's dequantization map ([`Affine`]), the element-wise
//! functions pending on it ([`Func`]), a table's output quantization ([`OutQ`]), and the
//! helpers on weights and offsets.

use std::collections::{BTreeSet, HashMap};

use fhec_ir::circuit::Range;
use fhec_ir::nn::Grid;
use ndarray::{ArrayD, Axis, IxDyn};

/// `x ≈ scale ⊙ v + offset`, both of the value's full shape.
#[derive(Clone, Debug)]
pub(super) struct Affine {
    pub(super) scale: ArrayD<f64>,
    pub(super) offset: ArrayD<f64>,
}

impl Affine {
    pub(super) fn uniform(shape: &[usize], scale: f64, offset: f64) -> Affine {
        Affine { scale: ArrayD::from_elem(IxDyn(shape), scale), offset: ArrayD::from_elem(IxDyn(shape), offset) }
    }

    pub(super) fn map(&self, f: impl Fn(&ArrayD<f64>) -> ArrayD<f64>) -> Affine {
        Affine { scale: f(&self.scale), offset: f(&self.offset) }
    }
}

/// An element-wise function fused into the next table. Parameters are full-shape.
#[derive(Clone, Debug)]
pub(super) enum Func {
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
    pub(super) fn apply(&self, x: f64, e: usize) -> f64 {
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

    pub(super) fn params(&self) -> Vec<&ArrayD<f64>> {
        match self {
            Func::PRelu(s) => vec![s],
            Func::Affine(k, t) => vec![k, t],
            _ => vec![],
        }
    }

    pub(super) fn map_params(&self, f: &impl Fn(&ArrayD<f64>) -> ArrayD<f64>) -> Func {
        match self {
            Func::PRelu(s) => Func::PRelu(f(s)),
            Func::Affine(k, t) => Func::Affine(f(k), f(t)),
            other => other.clone(),
        }
    }
}

/// Axes along which an array is not constant.
pub(super) fn varying_axes(a: &ArrayD<f64>) -> BTreeSet<usize> {
    let mut s = BTreeSet::new();
    for ax in 0..a.ndim() {
        if a.shape()[ax] > 1 && a.lanes(Axis(ax)).into_iter().any(|l| l.iter().any(|&v| v != l[0])) {
            s.insert(ax);
        }
    }
    s
}

pub(super) fn bits_for(max: i64) -> u32 {
    (64 - (max.max(0) as u64).leading_zeros()).max(1)
}

pub(super) fn bcast(a: &ArrayD<f64>, shape: &[usize]) -> ArrayD<f64> {
    a.broadcast(IxDyn(shape)).expect("broadcastable").to_owned()
}

pub(super) fn f32s_to_f64(a: &ArrayD<f32>) -> ArrayD<f64> {
    a.mapv(|v| v as f64)
}

/// The finest step `m / k` (`k <= qmax`) on which all weights lie, if any: weights of an
/// already-quantized (or QAT) model keep their integers.
pub(super) fn weight_grid(w: &[f64], qmax: i64) -> Option<f64> {
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

/// Output quantization of a table.
pub(super) enum OutQ {
    Grid(Grid),
    Act { scale: f64, zp: i64, qmax: i64 },
}

impl OutQ {
    pub(super) fn quantize(&self, y: f64) -> i64 {
        match self {
            OutQ::Grid(g) => g.quantize(y as f32),
            OutQ::Act { scale, zp, qmax } => ((y / scale).round_ties_even() as i64 + zp).clamp(0, *qmax),
        }
    }

    pub(super) fn affine(&self, shape: &[usize]) -> Affine {
        match self {
            OutQ::Grid(g) => Affine::uniform(shape, g.scale as f64, -(g.zero_point as f64) * g.scale as f64),
            OutQ::Act { scale, zp, .. } => Affine::uniform(shape, *scale, -(*zp as f64) * scale),
        }
    }
}

/// Whether an integer value with map `deq` already is the grid's integer (so a
/// FakeQuant on it is the identity).
pub(super) fn on_grid(deq: &Affine, g: &Grid, r: Range) -> bool {
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
pub(super) fn reduce_offset(deq: &Affine, axes: &BTreeSet<usize>) -> (ArrayD<f64>, ArrayD<i64>) {
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
