//! The exact integer simulator of a circuit: bit for bit what decryption returns when no
//! bootstrap fails (table lookups read exact integers, linear ops are exact, rounding is
//! an exact floor, max pooling is a chain of exact pairwise maxima), for every input whose
//! values stay in the ranges the circuit was compiled for. An input that leaves them is
//! reported ([`SimError::out_of_range`]): its encrypted result is unspecified.

use fhec_ir::circuit::eval::{EvalError, eval_node};
use fhec_ir::circuit::{COp, Circuit, ValueId};
use ndarray::{ArrayD, IxDyn};

/// A value left its range, or the circuit is malformed.
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
    /// The input drove a value outside the range the circuit was compiled for (possible
    /// with calibrated ranges, for inputs unlike the calibration set); otherwise the
    /// circuit itself is wrong or corrupt.
    pub out_of_range: bool,
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
        let fail = |message: String, out_of_range: bool| SimError {
            node: id,
            name: n.name.clone(),
            op: n.op.name(),
            message,
            out_of_range,
        };
        let v = match &n.op {
            COp::Input { .. } => {
                if input.shape() != n.shape.as_slice() {
                    return Err(fail(format!("input shape {:?}, expected {:?}", input.shape(), n.shape), false));
                }
                input.clone()
            }
            _ => {
                let xs: Vec<&ArrayD<i64>> = n.inputs.iter().map(|&i| &vals[i]).collect();
                eval_node(n, &xs).map_err(|e| match e {
                    EvalError::OutOfRange(m) => fail(m, true),
                    EvalError::Invalid(m) => fail(m, false),
                })?
            }
        };
        vals.push(v);
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
                out_of_range: true,
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
