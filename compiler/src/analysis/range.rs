//! Range analysis: per-element interval arithmetic over a circuit's integer ops.
//!
//! **Contract.** [`transfer`] gives, from the intervals of a node's inputs, an interval
//! holding every value the node can take (sound for any input image); a node's declared
//! [`Range`](fhec_ir::circuit::Range) is the hull of its intervals. The one exception is a
//! *calibrated declaration* ([`super::calibrate`]): a clear addition may declare a range
//! narrower than its intervals' hull (what the calibration images produce, plus a margin);
//! its intervals are then clamped to the declared range, and values outside it are out of
//! contract. [`analyze`] recomputes every node's intervals that way; [`verify`] checks that
//! every declared range is the hull, or a calibrated declaration within it, and below
//! [`MAX_ABS`].
//!
//! The lowering (`crate::quantize`) runs [`transfer`] on every node it emits, so the ranges
//! of a compiled circuit are exactly what [`analyze`] recomputes.

use fhec_ir::circuit::{COp, Circuit, Range, kernels};
use ndarray::{Array2, Array4, ArrayD, IxDyn};

/// Largest magnitude an accumulator may reach (exact in f64, far inside i64).
pub const MAX_ABS: f64 = (1u64 << 50) as f64;

/// Per-element lower and upper bounds of a value (integers held in f64).
#[derive(Clone, Debug, PartialEq)]
pub struct Intervals {
    /// Lower bounds.
    pub lo: ArrayD<f64>,
    /// Upper bounds.
    pub hi: ArrayD<f64>,
}

impl Intervals {
    /// Every element in `r`.
    pub fn uniform(shape: &[usize], r: Range) -> Intervals {
        let s = IxDyn(shape);
        Intervals { lo: ArrayD::from_elem(s.clone(), r.min as f64), hi: ArrayD::from_elem(s, r.max as f64) }
    }

    /// The smallest lower and the largest upper bound.
    pub fn hull(&self) -> (f64, f64) {
        (
            self.lo.iter().copied().fold(f64::INFINITY, f64::min),
            self.hi.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        )
    }

    /// The hull as a declared range.
    pub fn range(&self) -> Range {
        let (lo, hi) = self.hull();
        Range { min: lo as i64, max: hi as i64 }
    }

    /// Clamps every bound into `r` (a calibrated declaration).
    pub fn clamp(&mut self, r: Range) {
        let (lo, hi) = (r.min as f64, r.max as f64);
        self.lo.mapv_inplace(|e| e.clamp(lo, hi));
        self.hi.mapv_inplace(|e| e.clamp(lo, hi));
    }
}

/// The intervals of a node with op `op` and output `shape` from its inputs' intervals.
/// Panics on [`COp::Input`], whose range is declared (see [`Intervals::uniform`]).
pub fn transfer(op: &COp, ins: &[&Intervals], shape: &[usize]) -> Intervals {
    let a = |i: usize| ins[i];
    match op {
        COp::Input { .. } => panic!("the input's range is declared, not computed"),
        COp::Conv { weight, strides, pads, dilations, groups } => {
            let w = weight.mapv(|v| v as f64);
            let (wp, wn) = (w.mapv(|v| v.max(0.0)), w.mapv(|v| v.min(0.0)));
            let c =
                |w: &Array4<f64>, x: &ArrayD<f64>| kernels::conv2d(x.view(), w, *strides, *pads, *dilations, *groups);
            Intervals { lo: &c(&wp, &a(0).lo) + &c(&wn, &a(0).hi), hi: &c(&wp, &a(0).hi) + &c(&wn, &a(0).lo) }
        }
        COp::Dense { weight } => {
            let w = weight.mapv(|v| v as f64);
            let (wp, wn) = (w.mapv(|v| v.max(0.0)), w.mapv(|v| v.min(0.0)));
            let d = |w: &Array2<f64>, x: &ArrayD<f64>| kernels::dense(x.view(), w);
            Intervals { lo: &d(&wp, &a(0).lo) + &d(&wn, &a(0).hi), hi: &d(&wp, &a(0).hi) + &d(&wn, &a(0).lo) }
        }
        COp::AddClear(k) => {
            let k = k.mapv(|v| v as f64);
            Intervals { lo: &a(0).lo + &k, hi: &a(0).hi + &k }
        }
        COp::Add => Intervals { lo: &a(0).lo + &a(1).lo, hi: &a(0).hi + &a(1).hi },
        COp::Sub => Intervals { lo: &a(0).lo - &a(1).hi, hi: &a(0).hi - &a(1).lo },
        COp::SumPool(p) => {
            Intervals { lo: kernels::sum_pool(a(0).lo.view(), p), hi: kernels::sum_pool(a(0).hi.view(), p) }
        }
        COp::MaxPool { pool, shift, .. } => {
            // An approximate comparison lands within 2^(shift+1) of the exact maximum
            // (half a step of rounding, one step of noise); errors add up over a window.
            let err = if *shift > 0 {
                ((pool.kernel[0] * pool.kernel[1]).saturating_sub(1) as f64) * (1u64 << (shift + 1)) as f64
            } else {
                0.0
            };
            Intervals {
                lo: kernels::fold_pool(a(0).lo.view(), pool, 0.0, f64::max).mapv(|v| v - err),
                hi: kernels::fold_pool(a(0).hi.view(), pool, 0.0, f64::max).mapv(|v| v + err),
            }
        }
        COp::Round { shift, .. } => {
            let d = (1u64 << shift) as f64;
            Intervals { lo: a(0).lo.mapv(|v| (v / d).floor()), hi: a(0).hi.mapv(|v| (v / d).floor()) }
        }
        COp::Table { tables, .. } => {
            let lo = tables.iter().flatten().copied().min().unwrap_or(0) as f64;
            let hi = tables.iter().flatten().copied().max().unwrap_or(0) as f64;
            let s = IxDyn(shape);
            Intervals { lo: ArrayD::from_elem(s.clone(), lo), hi: ArrayD::from_elem(s, hi) }
        }
        COp::Reshape => {
            let r = |x: &ArrayD<f64>| x.to_shape(IxDyn(shape)).expect("size").to_owned();
            Intervals { lo: r(&a(0).lo), hi: r(&a(0).hi) }
        }
        COp::Transpose { perm } => {
            let t = |x: &ArrayD<f64>| x.clone().permuted_axes(IxDyn(perm)).as_standard_layout().into_owned();
            Intervals { lo: t(&a(0).lo), hi: t(&a(0).hi) }
        }
        COp::Gather { src, negate, max } => {
            // A negated element's bounds swap: max - hi is its lowest value.
            let (m, lo, hi) =
                (*max as f64, a(0).lo.iter().copied().collect::<Vec<_>>(), a(0).hi.iter().copied().collect::<Vec<_>>());
            let pick = |x: &[f64], y: &[f64]| {
                let v =
                    src.iter().zip(negate).map(|(&s, &n)| if n { m - y[s as usize] } else { x[s as usize] }).collect();
                ArrayD::from_shape_vec(IxDyn(shape), v).expect("size")
            };
            Intervals { lo: pick(&lo, &hi), hi: pick(&hi, &lo) }
        }
    }
}

/// A declared range the analysis does not justify.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RangeError {
    /// The declared range differs from the computed hull and is no calibrated declaration.
    #[error("%{id} '{name}': declared range [{}, {}] but the analysis gives [{}, {}]", declared.min, declared.max, computed.min, computed.max)]
    Mismatch {
        /// The node.
        id: usize,
        /// Its name.
        name: String,
        /// Its declared range.
        declared: Range,
        /// The analysis' hull.
        computed: Range,
    },
    /// Values beyond [`MAX_ABS`].
    #[error("%{id} '{name}': values reach [{lo}, {hi}], beyond 2^50")]
    TooWide {
        /// The node.
        id: usize,
        /// Its name.
        name: String,
        /// Lowest bound.
        lo: f64,
        /// Highest bound.
        hi: f64,
    },
}

/// Whether `declared` may stand for `computed` at a node with op `op`: equal, or a
/// calibrated declaration (a clear addition narrowing within the computed hull).
fn justified(op: &COp, declared: Range, computed: Range) -> bool {
    declared == computed
        || (matches!(op, COp::AddClear(_)) && computed.min <= declared.min && declared.max <= computed.max)
}

/// What the analysis gives for every node of `c`: its intervals (clamped at calibrated
/// declarations, see the module doc) and the hull before clamping (what a declaration
/// narrows); the first declared range the analysis does not justify is an error.
pub fn analyze_checked(c: &Circuit) -> Result<(Vec<Intervals>, Vec<Range>), RangeError> {
    let mut out: Vec<Intervals> = Vec::with_capacity(c.nodes.len());
    let mut hulls = Vec::with_capacity(c.nodes.len());
    for (id, n) in c.nodes.iter().enumerate() {
        let mut iv = match n.op {
            COp::Input { .. } => Intervals::uniform(&n.shape, n.range),
            _ => transfer(&n.op, &n.inputs.iter().map(|&i| &out[i]).collect::<Vec<_>>(), &n.shape),
        };
        let (lo, hi) = iv.hull();
        if lo.abs() > MAX_ABS || hi.abs() > MAX_ABS {
            return Err(RangeError::TooWide { id, name: n.name.clone(), lo, hi });
        }
        let computed = iv.range();
        if !justified(&n.op, n.range, computed) {
            return Err(RangeError::Mismatch { id, name: n.name.clone(), declared: n.range, computed });
        }
        if n.range != computed {
            iv.clamp(n.range);
        }
        out.push(iv);
        hulls.push(computed);
    }
    Ok((out, hulls))
}

/// The intervals of every node of `c`, clamped at calibrated declarations (see
/// [`analyze_checked`]; an unjustified range is kept as computed).
pub fn analyze(c: &Circuit) -> Vec<Intervals> {
    let mut out: Vec<Intervals> = Vec::with_capacity(c.nodes.len());
    for n in &c.nodes {
        let mut iv = match n.op {
            COp::Input { .. } => Intervals::uniform(&n.shape, n.range),
            _ => transfer(&n.op, &n.inputs.iter().map(|&i| &out[i]).collect::<Vec<_>>(), &n.shape),
        };
        if n.range != iv.range() && justified(&n.op, n.range, iv.range()) {
            iv.clamp(n.range);
        }
        out.push(iv);
    }
    out
}

/// Checks that every declared range of `c` is what the analysis gives (see the module doc).
pub fn verify(c: &Circuit) -> Result<(), RangeError> {
    analyze_checked(c).map(|_| ())
}
