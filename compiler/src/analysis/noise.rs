//! Noise analysis: the variance, in units of a fresh bootstrap output's, of every element
//! of every value, and the 2-norm that sizes the bootstrap reading it.
//!
//! **Contract.** A bootstrap output (a table, the input, a max pooling's maxima) has
//! variance 1; a linear op adds its inputs' variances weighted by the squared weights (as
//! Concrete's MANP analysis); exact rounding adds its bootstraps' outputs (one per bit
//! removed, bounded); an approximate rounding's readers see its input's noise. A node's
//! `norm2` is the square root of its largest element variance, at least 1 ([`norm2`]).
//! [`analyze`] recomputes every node's variances from the circuit alone; [`verify`] checks
//! that every `norm2` of a circuit is exactly what it gives (the lowering runs
//! [`transfer`] on every node it emits).

use fhec_ir::circuit::{COp, Circuit, kernels};
use ndarray::{ArrayD, IxDyn};

/// The variances of a node with op `op` and output `shape` from its inputs' variances.
pub fn transfer(op: &COp, ins: &[&ArrayD<f64>], shape: &[usize]) -> ArrayD<f64> {
    let a = |i: usize| ins[i];
    match op {
        COp::Input { .. } | COp::Table { .. } => ArrayD::ones(IxDyn(shape)),
        COp::Conv { weight, strides, pads, dilations, groups } => {
            let w2 = weight.mapv(|v| (v as f64) * (v as f64));
            kernels::conv2d(a(0).view(), &w2, *strides, *pads, *dilations, *groups)
        }
        COp::Dense { weight } => kernels::dense(a(0).view(), &weight.mapv(|v| (v as f64) * (v as f64))),
        COp::AddClear(_) => a(0).clone(),
        COp::Add | COp::Sub => a(0) + a(1),
        COp::SumPool(p) => kernels::sum_pool(a(0).view(), p),
        COp::MaxPool { pool, .. } => kernels::fold_pool(a(0).view(), pool, 1.0, f64::max).mapv(|v| v + 1.0),
        COp::Round { shift, mode } => {
            if mode.is_approximate() {
                a(0).clone()
            } else {
                a(0).mapv(|v| v + *shift as f64)
            }
        }
        COp::Reshape => a(0).to_shape(IxDyn(shape)).expect("size").to_owned(),
        COp::Transpose { perm } => a(0).clone().permuted_axes(IxDyn(perm)).as_standard_layout().into_owned(),
        // A negation keeps the variance.
        COp::Gather { src, negate, .. } => {
            let v: Vec<f64> = a(0).iter().copied().collect();
            ArrayD::from_shape_vec(IxDyn(shape), kernels::signed_gather(&v, src, negate, |x| x)).expect("size")
        }
    }
}

/// The 2-norm of a value with element variances `var`: `sqrt(max(1, max var))`.
pub fn norm2(var: &ArrayD<f64>) -> f64 {
    var.iter().copied().fold(1.0f64, f64::max).sqrt()
}

/// The variances of every node of `c`.
pub fn analyze(c: &Circuit) -> Vec<ArrayD<f64>> {
    let mut out: Vec<ArrayD<f64>> = Vec::with_capacity(c.nodes.len());
    for n in &c.nodes {
        let v = transfer(&n.op, &n.inputs.iter().map(|&i| &out[i]).collect::<Vec<_>>(), &n.shape);
        out.push(v);
    }
    out
}

/// A node whose `norm2` is not what the analysis gives.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("%{id} '{name}': norm2 {declared} but the analysis gives {computed}")]
pub struct NoiseError {
    /// The node.
    pub id: usize,
    /// Its name.
    pub name: String,
    /// Its `norm2`.
    pub declared: f64,
    /// The analysis' 2-norm.
    pub computed: f64,
}

/// Checks that every `norm2` of `c` is exactly [`norm2`] of [`analyze`]'s variances.
pub fn verify(c: &Circuit) -> Result<(), NoiseError> {
    for (id, (n, v)) in c.nodes.iter().zip(analyze(c)).enumerate() {
        let computed = norm2(&v);
        if n.norm2.to_bits() != computed.to_bits() {
            return Err(NoiseError { id, name: n.name.clone(), declared: n.norm2, computed });
        }
    }
    Ok(())
}
