//! Calibration: the values the calibration images produce at every node of the integer
//! circuit, and the narrowing of a table's (or a max pooling's) input range to them.
//!
//! **Contract.** [`Observed`] holds every node's integer values on each calibration image
//! (the circuit's own semantics, `fhec_ir::circuit::eval`); [`narrow`] turns an exact range
//! and an observed one into the declared range: the observed one widened by the margin
//! (`ceil(span · margin% ) + 1` on each side), within the exact one. A range so declared
//! holds every calibration image by construction; [`verify`] checks that every declared
//! range of a circuit holds the values of the images it was calibrated on.
//!
//! What stays in the lowering, and why: the narrowed range decides what the lowering emits
//! next (the offset, whether and how far to round, the table's width and entries, the
//! sizing of approximate max pooling), so calibration cannot run after lowering; the
//! lowering pushes every node it emits into an [`Observed`] and asks it for the range
//! before emitting the table. [`observe`] recomputes the same values from a finished
//! circuit.

use fhec_ir::circuit::eval::eval_node;
use fhec_ir::circuit::{CNode, Circuit, Range};
use fhec_ir::sim;
use ndarray::{ArrayD, Zip};
use rayon::prelude::*;

/// A node could not be evaluated on a calibration image, or left its range.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum CalibrateError {
    /// Evaluating a node failed (a compiler bug).
    #[error("'{node}' on a calibration image: {message}")]
    Eval {
        /// The node.
        node: String,
        /// The evaluator's message.
        message: String,
    },
    /// A calibration image drives a value outside its node's declared range.
    #[error("calibration image {image}: {message}")]
    OutOfRange {
        /// The image.
        image: usize,
        /// The simulator's message.
        message: String,
    },
}

/// Every node's values on every calibration image, in node order.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    vals: Vec<Vec<ArrayD<i64>>>,
}

impl Observed {
    /// Starts with the input node's values: the encoded calibration images (none: no
    /// calibration, every range stays exact).
    pub fn new(inputs: Vec<ArrayD<i64>>) -> Observed {
        Observed { vals: vec![inputs] }
    }

    /// Evaluates `node` (whose inputs were pushed before) on every image and records it.
    pub fn push(&mut self, node: &CNode) -> Result<(), CalibrateError> {
        let n_img = self.vals.first().map_or(0, |v| v.len());
        let vals = (0..n_img)
            .into_par_iter()
            .map(|i| {
                let xs: Vec<&ArrayD<i64>> = node.inputs.iter().map(|&j| &self.vals[j][i]).collect();
                eval_node(node, &xs)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CalibrateError::Eval { node: node.name.clone(), message: e.to_string() })?;
        self.vals.push(vals);
        Ok(())
    }

    /// The smallest and largest value of node `id` over the images, after adding the
    /// per-element `residual` when given; `None` without images.
    pub fn range_of(&self, id: usize, residual: Option<&ArrayD<i64>>) -> Option<(i64, i64)> {
        if self.vals[id].is_empty() {
            return None;
        }
        let (mut lo, mut hi) = (i64::MAX, i64::MIN);
        for v in &self.vals[id] {
            match residual {
                Some(r) => Zip::from(v).and(r).for_each(|&x, &r| {
                    lo = lo.min(x + r);
                    hi = hi.max(x + r);
                }),
                None => {
                    for &e in v.iter() {
                        lo = lo.min(e);
                        hi = hi.max(e);
                    }
                }
            }
        }
        Some((lo, hi))
    }
}

/// The declared range for an `exact` range whose calibration images produce `observed`:
/// `observed` widened by `ceil(span · margin_pct / 100) + 1` on each side, within `exact`.
pub fn narrow(exact: (i64, i64), observed: (i64, i64), margin_pct: u32) -> (i64, i64) {
    let (clo, chi) = observed;
    let m = ((chi - clo) as f64 * margin_pct as f64 / 100.0).ceil() as i64 + 1;
    (exact.0.max(clo - m), exact.1.min(chi + m))
}

/// The range of every node of `c` over `images` (8-bit pixels of its input size).
pub fn observe(c: &Circuit, images: &[&[u8]]) -> Result<Vec<Option<Range>>, CalibrateError> {
    let mut out: Vec<Option<Range>> = vec![None; c.nodes.len()];
    for px in images {
        let vals = sim::simulate_all(c, sim::encode_image(c, px))
            .map_err(|e| CalibrateError::Eval { node: c.name.clone(), message: e.to_string() })?;
        for (o, v) in out.iter_mut().zip(&vals) {
            let (lo, hi) = v.iter().fold((i64::MAX, i64::MIN), |(l, h), &x| (l.min(x), h.max(x)));
            *o = Some(match *o {
                Some(r) => Range { min: r.min.min(lo), max: r.max.max(hi) },
                None => Range { min: lo, max: hi },
            });
        }
    }
    Ok(out)
}

/// Checks that every value of `c` on the calibration `images` lies in its declared range.
pub fn verify(c: &Circuit, images: &[&[u8]]) -> Result<(), CalibrateError> {
    for (image, px) in images.iter().enumerate() {
        let vals = sim::simulate_all(c, sim::encode_image(c, px))
            .map_err(|e| CalibrateError::OutOfRange { image, message: e.to_string() })?;
        sim::check_ranges(c, &vals).map_err(|e| CalibrateError::OutOfRange { image, message: e.to_string() })?;
    }
    Ok(())
}
