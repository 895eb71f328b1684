//! The extraction cost model: estimated bootstraps, weighted by the width each reads,
//! plus the noise budget the linear chains consume.
//!
//! * A table-producing op (an activation, a square, a fake quantization, a product of two
//!   computed values, a softmax) costs, per output element, one table lookup at width
//!   `t = min(b, max_table_bits)` plus one rounding bootstrap per bit dropped before it
//!   (`b - t`), where `b` is the estimated width of its input ([`super::Data::bits`]); with
//!   approximate rounding (`CostParams::approximate`) the table reads the top `t` bits and
//!   no rounding bootstrap is charged. Lowering fuses a
//!   chain of element-wise ops into one table; this model charges each op of a chain, so
//!   shorter chains (what `fuse-requant` produces) are preferred.
//! * A bootstrap at width `t` weighs `2^(1.5 (t - 4))` (at least 1): the polynomial size,
//!   hence the cost, roughly doubles per extra bit beyond 4 (59.7 ms at 4 bits, N=2048;
//!   484 ms at 6 bits, N=8192, measured on the development machine). The constants and
//!   the functions [`tables`] and [`width_weight`] live in [`fhec_ir::cost`], the one cost
//!   model, with the per-parameter-set costs the parameter search uses.
//! * Max pooling costs `k - 1` pairwise maxima per output element, each a table on the
//!   difference (one bit wider than its input): read whole under exact rounding (lowering
//!   compares over the exact range, without rounding first), its top bits under approximate.
//! * A linear op costs `log2` of the bound on the 2-norm of its integer weight rows,
//!   `(weight_bits - 1) + log2(fan_in) / 2`: every bit of noise growth a linear chain adds
//!   shrinks the budget of the next bootstrap (larger parameters for all of them). One bit
//!   weighs as much as one 4-bit bootstrap, so it decides only between forms with the same
//!   bootstraps (a merged linear chain consumes less than its parts).
//! * Every op also costs `1e-3`, so of two forms with equal bootstraps the one with fewer
//!   ops wins (an average pool counts as two, a sum and a scale; a batch norm as two, a scale and
//!   a shift); parameters and output
//!   markers cost nothing.
//!
//! Estimates, not measurements: `BENCHMARKS.md` (section `passes`) compares them with the
//! compiled circuits.

use egg::{CostFunction, Id, Language};
use fhec_ir::nn::Op;

use super::{Nn, NnGraph, fan_in, is_table_op, param_of};

use fhec_ir::cost::{NOISE_BIT_WEIGHT, OP_WEIGHT};
pub use fhec_ir::cost::{tables, width_weight};

/// The cost function (see the module doc).
pub struct BootstrapCost<'a> {
    eg: &'a NnGraph,
}

impl<'a> BootstrapCost<'a> {
    /// A cost function reading the analysis of `eg`.
    pub fn new(eg: &'a NnGraph) -> Self {
        BootstrapCost { eg }
    }

    /// The cost of one e-node alone (without its children).
    pub fn node_cost(&self, n: &Nn) -> f64 {
        let Some(p) = param_of(self.eg, n) else { return 0.0 };
        let c = &self.eg.analysis.cost;
        let elems = p.shape.iter().product::<usize>() as f64;
        let in_bits = |k: usize| self.eg[n.children()[k]].data.bits;
        let own = match &p.op {
            Op::Mul => 2.0 * tables(elems, in_bits(1).max(in_bits(2)) + 1.0, c.max_table_bits, c.approximate),
            Op::MaxPool(pool) => {
                let k = (pool.kernel[0] * pool.kernel[1]) as f64;
                // The difference is one bit wider than the input. Lowering compares exactly
                // over the whole range under exact rounding (no rounding bootstrap first:
                // the comparison reads every bit), and reads the top bits under approximate.
                let b = in_bits(1) + 1.0;
                let per = if c.approximate {
                    tables(elems, b, c.max_table_bits, true)
                } else {
                    elems * width_weight(b.ceil())
                };
                (k - 1.0) * per
            }
            op if is_table_op(op) => tables(elems, in_bits(1), c.max_table_bits, c.approximate),
            // Bound on the integer weight row's 2-norm: weight_bits - 1 bits per weight and
            // sqrt(fan-in) rows. Lowering absorbs input scalings into the weights, so the
            // float weights here would mislead; every linear op costs its own growth.
            op @ (Op::Conv(_) | Op::Dense { .. }) => {
                NOISE_BIT_WEIGHT * ((c.weight_bits - 1.0) + 0.5 * (fan_in(op) as f64).log2())
            }
            // A sum (or a scale) and a scale: charged as one more op than the explicit
            // ops, so that the scale is exposed to folding.
            Op::AvgPool { .. } | Op::GlobalAvgPool | Op::BatchNorm { .. } => 2.0 * OP_WEIGHT,
            _ => 0.0,
        };
        own + OP_WEIGHT
    }
}

impl CostFunction<Nn> for BootstrapCost<'_> {
    type Cost = f64;

    fn cost<C>(&mut self, n: &Nn, mut costs: C) -> f64
    where
        C: FnMut(Id) -> f64,
    {
        self.node_cost(n) + n.children().iter().map(|&c| costs(c)).sum::<f64>()
    }
}
