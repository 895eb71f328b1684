//! The exact integer simulator of a circuit: bit for bit what decryption returns when no
//! bootstrap fails (table lookups read exact integers, linear ops are exact, rounding is
//! an exact floor, max pooling is a chain of exact pairwise maxima).

use fhec_ir::circuit::{COp, Circuit, TableIndex, ValueId, kernels};
use ndarray::{ArrayD, IxDyn};

/// A value left its declared range or a table index its table: the circuit is wrong
/// (or corrupt), never the input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("simulation of %{node} '{name}' ({op}): {message}")]
pub struct SimError {
    /// Node index.
    pub node: ValueId,
    /// Node name.
    pub name: String,
    /// Op name.
    pub op: &'static str,
    /// What went wrong.
    pub message: String,
}

/// Client-side encoding of an image (8-bit pixels, row-major) into the circuit's input.
pub fn encode_image(c: &Circuit, pixels: &[u8]) -> ArrayD<i64> {
    let v: Vec<i64> = pixels.iter().map(|&p| c.input_quant.pixel_to_q[p as usize]).collect();
    ArrayD::from_shape_vec(IxDyn(c.input_shape()), v).expect("caller checked the pixel count")
}

/// Runs the circuit and returns every node's value.
pub fn simulate_all(c: &Circuit, input: ArrayD<i64>) -> Result<Vec<ArrayD<i64>>, SimError> {
    let mut vals: Vec<ArrayD<i64>> = Vec::with_capacity(c.nodes.len());
    for (id, n) in c.nodes.iter().enumerate() {
        let fail = |message: String| SimError { node: id, name: n.name.clone(), op: n.op.name(), message };
        let x = || vals[n.inputs[0]].view();
        let v = match &n.op {
            COp::Input { .. } => {
                if input.shape() != n.shape.as_slice() {
                    return Err(fail(format!("input shape {:?}, expected {:?}", input.shape(), n.shape)));
                }
                input.clone()
            }
            COp::Conv { weight, strides, pads, dilations, groups } => {
                kernels::conv2d(x(), weight, *strides, *pads, *dilations, *groups)
            }
            COp::Dense { weight } => kernels::dense(x(), weight),
            COp::AddClear(k) => &x() + k,
            COp::Add => &vals[n.inputs[0]] + &vals[n.inputs[1]],
            COp::Sub => &vals[n.inputs[0]] - &vals[n.inputs[1]],
            COp::SumPool(p) => kernels::sum_pool(x(), p),
            COp::MaxPool { pool, .. } => kernels::fold_pool(x(), pool, 0, i64::max),
            COp::Round { shift } => {
                if let Some(bad) = x().iter().find(|&&v| v < 0) {
                    return Err(fail(format!("rounds a negative value {bad}")));
                }
                x().mapv(|v| v >> shift)
            }
            COp::Table { in_width, index, tables } => {
                let len = 1i64 << in_width;
                let xv = x();
                let axis_len = |a: usize| xv.shape()[a];
                let mut out = ArrayD::<i64>::zeros(xv.raw_dim());
                for (k, (o, (idx, &v))) in out.iter_mut().zip(xv.indexed_iter()).enumerate() {
                    if v < 0 || v >= len {
                        return Err(fail(format!("table index {v} outside [0, {len})")));
                    }
                    let t = match index {
                        TableIndex::Shared => 0,
                        TableIndex::PerAxis(a) => {
                            let _ = axis_len(*a);
                            idx[*a]
                        }
                        TableIndex::PerElement => k,
                    };
                    *o = tables[t][v as usize];
                }
                out
            }
            COp::Reshape => {
                let flat: Vec<i64> = x().iter().copied().collect();
                ArrayD::from_shape_vec(IxDyn(&n.shape), flat).map_err(|e| fail(e.to_string()))?
            }
            COp::Transpose { perm } => x().permuted_axes(IxDyn(perm)).as_standard_layout().into_owned(),
        };
        vals.push(v.as_standard_layout().into_owned());
    }
    Ok(vals)
}

/// Runs the circuit and returns the output integers.
pub fn simulate(c: &Circuit, input: ArrayD<i64>) -> Result<ArrayD<i64>, SimError> {
    let mut all = simulate_all(c, input)?;
    Ok(all.swap_remove(c.output))
}

/// Checks that every value lies in its node's declared range.
pub fn check_ranges(c: &Circuit, values: &[ArrayD<i64>]) -> Result<(), SimError> {
    for (id, (n, v)) in c.nodes.iter().zip(values).enumerate() {
        if let Some(bad) = v.iter().find(|&&x| !n.range.contains(x)) {
            return Err(SimError {
                node: id,
                name: n.name.clone(),
                op: n.op.name(),
                message: format!("value {bad} outside the declared range [{}, {}]", n.range.min, n.range.max),
            });
        }
    }
    Ok(())
}

/// Scores (dequantized outputs) and the predicted class of an image.
pub fn classify(c: &Circuit, pixels: &[u8]) -> Result<(usize, Vec<f64>), SimError> {
    let out = simulate(c, encode_image(c, pixels))?;
    let flat: Vec<i64> = out.iter().copied().collect();
    let scores = c.output_quant.scores(&flat);
    Ok((argmax(&scores), scores))
}

/// Index of the largest score (first on ties).
pub fn argmax(scores: &[f64]) -> usize {
    let mut best = 0;
    for (i, &s) in scores.iter().enumerate() {
        if s > scores[best] {
            best = i;
        }
    }
    best
}
