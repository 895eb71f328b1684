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
    };
    Ok(v.as_standard_layout().into_owned())
}
