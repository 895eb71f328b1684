//! The integer semantics of one circuit node: what the simulator computes and what the
//! compiler runs on calibration images to measure the values tables will read.

use ndarray::{ArrayD, IxDyn};

use super::{CNode, COp, TableIndex, kernels};

/// Why a node could not be evaluated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EvalError {
    /// A value left the range the circuit was compiled for (an exact rounding of a negative
    /// value, a table index outside its table). With calibrated ranges this means the input
    /// is unlike the calibration images; encrypted evaluation then returns an unspecified
    /// result.
    OutOfRange(String),
    /// The circuit is malformed (a compiler bug or a corrupt artifact).
    Invalid(String),
}

impl std::fmt::Display for EvalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EvalError::OutOfRange(m) | EvalError::Invalid(m) => f.write_str(m),
        }
    }
}

/// Evaluates `node` on the values of its inputs.
pub fn eval_node(node: &CNode, inputs: &[&ArrayD<i64>]) -> Result<ArrayD<i64>, EvalError> {
    check_magnitude(node, inputs)?;
    let x = || inputs[0].view();
    let v = match &node.op {
        COp::Input { .. } => return Err(EvalError::Invalid("the input node has no semantics of its own".into())),
        COp::Conv { weight, strides, pads, dilations, groups } => {
            kernels::conv2d(x(), weight, *strides, *pads, *dilations, *groups)
        }
        COp::Dense { weight } => kernels::dense(x(), weight),
        COp::AddClear(k) => &x() + k,
        COp::Add => inputs[0] + inputs[1],
        COp::Sub => inputs[0] - inputs[1],
        COp::SumPool(p) => kernels::sum_pool(x(), p),
        // Exact comparisons (shift 0) are exact maxima; the kernel also checks that every
        // difference stays inside its table (values outside calibrated ranges).
        COp::MaxPool { pool, diff_offset, diff_width, shift } => {
            kernels::approx_max_pool(x(), pool, *diff_offset, *diff_width, *shift, |v| v >> shift)
                .map_err(|e| EvalError::OutOfRange(e.to_string()))?
        }
        COp::Round { shift, .. } => {
            if let Some(bad) = x().iter().find(|&&v| v < 0) {
                return Err(EvalError::OutOfRange(format!("rounds the negative value {bad}")));
            }
            x().mapv(|v| v >> shift)
        }
        COp::Table { in_width, index, tables } => {
            let len = 1i64 << in_width;
            let xv = x();
            let mut out = ArrayD::<i64>::zeros(xv.raw_dim());
            for (k, (o, (idx, &v))) in out.iter_mut().zip(xv.indexed_iter()).enumerate() {
                if v < 0 || v >= len {
                    return Err(EvalError::OutOfRange(format!("table index {v} outside [0, {len})")));
                }
                let t = match index {
                    TableIndex::Shared => 0,
                    TableIndex::PerAxis(a) => idx[*a],
                    TableIndex::PerElement => k,
                };
                *o = tables[t][v as usize];
            }
            out
        }
        COp::Reshape => {
            let flat: Vec<i64> = x().iter().copied().collect();
            ArrayD::from_shape_vec(IxDyn(&node.shape), flat).map_err(|e| EvalError::Invalid(e.to_string()))?
        }
        COp::Transpose { perm } => x().permuted_axes(IxDyn(perm)).as_standard_layout().into_owned(),
        COp::Gather { src, negate, max } => {
            let flat: Vec<i64> = x().iter().copied().collect();
            let out = kernels::signed_gather(&flat, src, negate, |v| max - v);
            ArrayD::from_shape_vec(IxDyn(&node.shape), out).map_err(|e| EvalError::Invalid(e.to_string()))?
        }
    };
    Ok(v.as_standard_layout().into_owned())
}

/// Checks, before `node` is computed, that no sum it forms can leave the 64-bit integers:
/// the largest input magnitude times the weights' 1-norm (convolutions, dense layers), the
/// window size (sum pooling), plus the constants added. Inputs inside the declared ranges of
/// a verified circuit always pass; an input that is not (an image unlike the calibration
/// set, a corrupt artifact) is reported as out of range instead of overflowing.
pub fn check_magnitude(node: &CNode, inputs: &[&ArrayD<i64>]) -> Result<(), EvalError> {
    let max_abs = |a: &ArrayD<i64>| a.iter().map(|&v| (v as i128).abs()).max().unwrap_or(0);
    let l1 = |w: &mut dyn Iterator<Item = &i64>| w.map(|&v| (v as i128).abs()).sum::<i128>();
    let m = inputs.iter().map(|a| max_abs(a)).max().unwrap_or(0);
    let bound = match &node.op {
        COp::Conv { weight, .. } => m.checked_mul(l1(&mut weight.iter())),
        COp::Dense { weight } => m.checked_mul(l1(&mut weight.iter())),
        COp::AddClear(k) => Some(m + max_abs(k)),
        COp::Add | COp::Sub => Some(inputs.iter().map(|a| max_abs(a)).sum()),
        COp::SumPool(p) => m.checked_mul((p.kernel[0] as i128).saturating_mul(p.kernel[1] as i128)),
        // `x_i - m + offset` and the running maximum.
        COp::MaxPool { diff_offset, .. } => Some(2 * m + (*diff_offset as i128).abs()),
        COp::Gather { max, .. } => Some(m + (*max as i128).abs()),
        _ => Some(0),
    };
    match bound {
        Some(b) if b <= i64::MAX as i128 => Ok(()),
        _ => Err(EvalError::OutOfRange(format!(
            "inputs of magnitude up to {m} would overflow 64-bit integers in this {}",
            node.op.name()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{Array2, ArrayD, IxDyn};

    use super::*;
    use crate::circuit::Range;

    fn node(op: COp, shape: &[usize]) -> CNode {
        CNode {
            name: "n".into(),
            op,
            inputs: vec![0],
            shape: shape.to_vec(),
            range: Range { min: 0, max: 0 },
            norm2: 1.0,
        }
    }

    #[test]
    fn sums_that_would_overflow_are_out_of_range_not_panics() {
        let x = ArrayD::from_elem(IxDyn(&[1, 2]), 3i64);
        let dense = node(COp::Dense { weight: Array2::from_elem((1, 2), i64::MAX / 4) }, &[1, 1]);
        let e = eval_node(&dense, &[&x]).unwrap_err();
        assert!(matches!(&e, EvalError::OutOfRange(m) if m.contains("overflow 64-bit integers in this dense")), "{e}");
        let add = node(COp::AddClear(ArrayD::from_elem(IxDyn(&[1, 2]), i64::MAX)), &[1, 2]);
        assert!(matches!(eval_node(&add, &[&x]), Err(EvalError::OutOfRange(_))));
        // In range: computed.
        let small = node(COp::Dense { weight: Array2::from_elem((1, 2), 5) }, &[1, 1]);
        assert_eq!(eval_node(&small, &[&x]).unwrap().iter().copied().collect::<Vec<_>>(), vec![30]);
    }
}
