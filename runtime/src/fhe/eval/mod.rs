//! Server-side evaluation: [`evaluate_with_progress`] checks the input and the parameters,
//! then runs the circuit's nodes in order, one function per circuit op ([`COp`]):
//! `linear` (convolutions, dense layers, clear additions, sums, sum pooling, reshapes,
//! transposes: leveled, no bootstrap), `table` (table lookups), `round` (exact rounding in
//! chunks, approximate rounding) and `max_pool` (pairwise maxima by comparison tables).

mod linear;
mod max_pool;
mod round;
mod table;

#[cfg(feature = "probes")]
pub(crate) use round::sign_lut;
#[cfg(feature = "probes")]
pub(crate) use table::table_lut;

use std::sync::atomic::AtomicUsize;

use fhec_ir::artifact::ParametrizedCircuit;
use fhec_ir::circuit::{COp, Circuit, Rounding};

use super::{CtTensor, FheError, ServerKey};

/// What every op function needs: the server key, the ciphertext size, the progress
/// counter, and who watches the bootstraps.
#[derive(Clone, Copy)]
pub(super) struct Ctx<'a> {
    /// The evaluation key.
    pub sk: &'a ServerKey,
    /// Words per ciphertext (`kN + 1`).
    pub size: usize,
    /// Bootstraps done.
    pub progress: &'a AtomicUsize,
    /// The node being evaluated.
    pub node: usize,
    /// Called with every bootstrap output (noise measurements, `fhe::test_support`).
    pub observer: Option<Observer<'a>>,
}

/// Where a bootstrap happens: what an [`Observer`] is told with each output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootstrapSite {
    /// The circuit node.
    pub node: usize,
    /// The element: of the output of a table, of the input of an exact rounding, the
    /// window of a max pooling.
    pub element: usize,
    /// Which of the element's bootstraps: 0 for a table; an exact rounding's steps in
    /// order (sign read, then the chunk's table if any, chunk after chunk); a max
    /// pooling's comparisons, from 1 (the window's `i`-th element against the running
    /// maximum).
    pub index: usize,
}

/// Watches bootstrap outputs (each a ciphertext under the big key) as they are computed.
pub type Observer<'a> = &'a (dyn Fn(BootstrapSite, &[u64]) + Sync);

impl Ctx<'_> {
    /// Tells the observer, if any, about the outputs `outs` (`size` words each) of the
    /// bootstraps of elements `element(0), element(1), ...`, each the `index`-th of its element.
    pub fn observe(&self, outs: &[u64], index: usize, element: impl Fn(usize) -> usize) {
        if let Some(seen) = self.observer {
            for (i, out) in outs.chunks_exact(self.size).enumerate() {
                seen(BootstrapSite { node: self.node, element: element(i), index }, out);
            }
        }
    }
}

/// Evaluates the circuit on an encrypted input with the server key only.
pub fn evaluate(sk: &ServerKey, pc: &ParametrizedCircuit<'_>, input: &CtTensor) -> Result<CtTensor, FheError> {
    evaluate_with_progress(sk, pc, input, &AtomicUsize::new(0))
}

/// Multiplies every ciphertext by `2^j` to move from `t.bits` encoding bits to `to`.
pub(super) fn rescale(t: &CtTensor, to: u32) -> Result<CtTensor, FheError> {
    if to > t.bits {
        return Err(FheError::Unsupported(format!("cannot move a value from {} to {to} encoding bits", t.bits)));
    }
    let f = 1u64 << (t.bits - to);
    Ok(CtTensor { shape: t.shape.clone(), bits: to, data: t.data.iter().map(|&x| x.wrapping_mul(f)).collect() })
}

/// Checks that the key is of the circuit's parameters, that the input is the circuit's,
/// and that every bootstrap fits the parameters.
fn check(sk: &ServerKey, pc: &ParametrizedCircuit<'_>, input: &CtTensor) -> Result<(), FheError> {
    let (c, p) = (pc.circuit(), &sk.params);
    if p != pc.params() {
        return Err(FheError::ParamsMismatch(
            "the evaluation key was made for other TFHE parameters than this circuit's".into(),
        ));
    }
    let size = sk.lwe_size();
    if input.shape != c.input_shape()
        || input.bits != pc.input_bits()
        || input.data.len() != input.shape.iter().product::<usize>() * size
    {
        return Err(FheError::Shape(format!(
            "the encrypted input ({:?}, {} bits, {} words) does not match the circuit's input ({:?}, {} bits, {} words per value)",
            input.shape,
            input.bits,
            input.data.len(),
            c.input_shape(),
            pc.input_bits(),
            size
        )));
    }
    // A bootstrap reads at most log2(N) bits (tables with N; the rest of a rounding chunk
    // with the rounding bootstrap's N_r).
    let rounds = c.has_exact_rounding();
    if rounds && p.round_key.is_some() && p.rounding_bsk().is_none() {
        return Err(FheError::Unsupported(format!(
            "the circuit rounds exactly but the parameters have no rounding bootstrap key ({})",
            p.summary()
        )));
    }
    let round_n = p.rounding_bootstrap().polynomial_size;
    for (widest, n) in
        [(c.max_table_width(), p.polynomial_size), (if rounds { c.round_chunk.saturating_sub(1) } else { 0 }, round_n)]
    {
        if widest > n.trailing_zeros() {
            return Err(FheError::Unsupported(format!(
                "the circuit reads {widest} bits in one bootstrap, more than N = {n} allows"
            )));
        }
    }
    Ok(())
}

/// [`evaluate`], adding one to `progress` after every bootstrap (for progress bars; the
/// total is [`Circuit::bootstrap_stats`]`.total()`).
pub fn evaluate_with_progress(
    sk: &ServerKey,
    pc: &ParametrizedCircuit<'_>,
    input: &CtTensor,
    progress: &AtomicUsize,
) -> Result<CtTensor, FheError> {
    evaluate_observed(sk, pc, input, progress, None)
}

/// [`evaluate_with_progress`], calling `observer` with every bootstrap output.
pub(crate) fn evaluate_observed(
    sk: &ServerKey,
    pc: &ParametrizedCircuit<'_>,
    input: &CtTensor,
    progress: &AtomicUsize,
    observer: Option<Observer<'_>>,
) -> Result<CtTensor, FheError> {
    check(sk, pc, input)?;
    let (c, plan): (&Circuit, _) = (pc.circuit(), pc.plan());
    let base = Ctx { sk, size: sk.lwe_size(), progress, node: 0, observer };
    let mut vals: Vec<Option<CtTensor>> = vec![None; c.nodes.len()];
    vals[0] = Some(input.clone());
    // Free values no longer used, to bound memory.
    let mut last_use = vec![0usize; c.nodes.len()];
    for (id, n) in c.nodes.iter().enumerate() {
        for &i in &n.inputs {
            last_use[i] = id;
        }
    }
    last_use[c.output] = usize::MAX;
    for id in 1..c.nodes.len() {
        let node = &c.nodes[id];
        let cx = Ctx { node: id, ..base };
        let x = |k: usize| vals[node.inputs[k]].as_ref().expect("inputs precede");
        let (bits, shape) = (plan.bits[id], node.shape.as_slice());
        let out = match &node.op {
            COp::Input { .. } => unreachable!("node 0"),
            COp::Conv { weight, strides, pads, dilations, groups } => {
                linear::conv(&cx, &rescale(x(0), bits)?, weight, *strides, *pads, *dilations, *groups, shape)
            }
            COp::Dense { weight } => linear::dense(&cx, &rescale(x(0), bits)?, weight, shape),
            COp::AddClear(k) => linear::add_clear(&cx, rescale(x(0), bits)?, k, shape)?,
            COp::Add => linear::add(&rescale(x(0), bits)?, &rescale(x(1), bits)?, false, shape),
            COp::Sub => linear::add(&rescale(x(0), bits)?, &rescale(x(1), bits)?, true, shape),
            COp::SumPool(pool) => linear::sum_pool(&cx, &rescale(x(0), bits)?, pool, shape),
            COp::Reshape => CtTensor { shape: shape.to_vec(), ..rescale(x(0), bits)? },
            COp::Transpose { perm } => linear::transpose(&cx, &rescale(x(0), bits)?, perm, shape)?,
            COp::Gather { src, negate, max } => linear::gather(&cx, &rescale(x(0), bits)?, src, negate, *max, shape),
            COp::Table { in_width, index, tables } => {
                table::table(&cx, &rescale(x(0), *in_width)?, *in_width, index, tables, bits, shape)
            }
            COp::Round { shift, mode: Rounding::Approximate } => round::approximate(&cx, x(0), *shift, bits, shape)?,
            COp::Round { shift, mode: Rounding::Exact } => {
                round::exact(&cx, x(0), &c.round_chunks(*shift), *shift, shape)
            }
            COp::MaxPool { pool, diff_offset, diff_width, shift } => {
                max_pool::max_pool(&cx, x(0), pool, *diff_offset, *diff_width, *shift, shape)
            }
        };
        if out.bits != bits {
            return Err(FheError::Unsupported(format!(
                "%{id}: produced {} encoding bits, the plan says {bits}",
                out.bits
            )));
        }
        vals[id] = Some(out);
        for &i in &node.inputs {
            if last_use[i] == id {
                vals[i] = None;
            }
        }
    }
    Ok(vals[c.output].take().expect("output computed"))
}
