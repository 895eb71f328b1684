//! Structural verifier of the circuit IR.

use super::{COp, Circuit, Rounding, TableIndex, kernels};
use crate::nn::broadcast_shapes;

/// The most values one circuit node may hold (2^24: a grayscale CNN's largest activation
/// tensor is orders of magnitude smaller; the simulator holds every node's values as `i64`).
pub const MAX_VALUES: usize = 1 << 24;

/// A broken circuit invariant, naming the node.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid circuit: {0}")]
pub struct CircuitError(pub String);

/// Checks: node 0 is the only input; inputs precede their users with the right arity;
/// shapes follow from the ops; tables have `2^in_width` entries, as many tables as their
/// indexing needs, and their inputs' ranges fit `[0, 2^in_width)`; every table entry lies
/// in the node's range; rounding reads non-negative values; an approximate rounding is
/// read by tables only, each with a step of guard on both sides of its range; the client
/// maps have the right sizes.
pub fn verify(c: &Circuit) -> Result<(), CircuitError> {
    let err = |m: String| Err(CircuitError(m));
    if c.nodes.is_empty() || !matches!(c.nodes[0].op, COp::Input { .. }) {
        return err("node 0 must be the input".into());
    }
    if c.output >= c.nodes.len() {
        return err(format!("output %{} does not exist", c.output));
    }
    if c.round_chunk == 0 || c.round_chunk > 25 {
        return err(format!("rounding chunks of {} bits (1 to 25 allowed)", c.round_chunk));
    }
    for (id, n) in c.nodes.iter().enumerate() {
        let at = |m: String| Err(CircuitError(format!("%{id} '{}' ({}): {m}", n.name, n.op.name())));
        // Bounded first, so that every size below (of this node, or of its inputs, checked
        // before it) is computed without overflow, and no simulation allocates beyond it.
        if n.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).is_none_or(|v| v > MAX_VALUES) {
            return at(format!("shape {:?} is too large (at most {MAX_VALUES} values)", n.shape));
        }
        if n.inputs.len() != n.op.arity() {
            return at(format!("{} inputs for arity {}", n.inputs.len(), n.op.arity()));
        }
        if n.inputs.iter().any(|&i| i >= id) {
            return at(format!("inputs {:?} do not all precede it", n.inputs));
        }
        if id > 0 && matches!(n.op, COp::Input { .. }) {
            return at("a second input".into());
        }
        if n.range.min > n.range.max {
            return at(format!("empty range {:?}", n.range));
        }
        let ins: Vec<&super::CNode> = n.inputs.iter().map(|&i| &c.nodes[i]).collect();
        if ins.iter().any(|i| matches!(i.op, COp::Round { mode: Rounding::Approximate, .. }))
            && !matches!(n.op, COp::Table { .. })
        {
            return at("reads an approximate rounding, which only tables may read".into());
        }
        let x = ins.first().map(|i| i.shape.clone()).unwrap_or_default();
        let expect: Vec<usize> = match &n.op {
            COp::Input { bits } => {
                if *bits == 0 || *bits > 32 || n.range.min < 0 || n.range.max >= 1i64 << bits {
                    return at(format!("range {:?} does not fit {bits} bits", n.range));
                }
                n.shape.clone()
            }
            COp::Conv { weight, strides, pads, dilations, groups } => {
                let (o, ipg, kh, kw) = weight.dim();
                if x.len() != 4 || *groups == 0 || ipg.checked_mul(*groups) != Some(x[1]) || o % groups != 0 {
                    return at(format!("kernel {:?} x {groups} groups does not fit input {x:?}", weight.shape()));
                }
                let p = crate::nn::Pool {
                    kernel: [kh, kw],
                    strides: *strides,
                    pads: *pads,
                    dilations: *dilations,
                    ceil_mode: false,
                };
                let hw = p.output_hw([x[2], x[3]]).map_err(|e| CircuitError(e.0))?;
                vec![x[0], o, hw[0], hw[1]]
            }
            COp::Dense { weight } => {
                if x.last() != Some(&weight.ncols()) {
                    return at(format!("weight {:?} does not fit input {x:?}", weight.shape()));
                }
                let mut s = x.clone();
                *s.last_mut().expect("rank >= 1") = weight.nrows();
                s
            }
            COp::AddClear(v) => {
                if broadcast_shapes(&x, v.shape()).ok().as_deref() != Some(&x[..]) {
                    return at(format!("constant {:?} does not broadcast to {x:?}", v.shape()));
                }
                x.clone()
            }
            COp::Add | COp::Sub => {
                if ins[0].shape != ins[1].shape {
                    return at(format!("operands {:?} and {:?} differ", ins[0].shape, ins[1].shape));
                }
                x.clone()
            }
            COp::SumPool(p) => {
                if x.len() != 4 {
                    return at("needs NCHW".into());
                }
                p.output_hw([x[2], x[3]]).map_err(|e| CircuitError(e.0))?;
                kernels::pool_shape(&x, p)
            }
            COp::MaxPool { pool, diff_offset, diff_width, shift } => {
                if x.len() != 4 {
                    return at("needs NCHW".into());
                }
                pool.output_hw([x[2], x[3]]).map_err(|e| CircuitError(e.0))?;
                // (In i128: a file's ranges may span all of i64.)
                let span = ins[0].range.max as i128 - ins[0].range.min as i128;
                // With approximate comparisons, a guard step at each end keeps a read that
                // noise moves one step inside the table.
                let guard = if *shift > 0 && *shift <= 40 { 1i128 << shift } else { 0 };
                if *diff_width > 40
                    || *shift > 40
                    || (*diff_offset as i128) < span + guard
                    || 2 * span + 2 * guard >= (1i128 << (diff_width + shift))
                {
                    return at(format!(
                        "differences of span {span} do not fit offset {diff_offset}, width {diff_width}, shift {shift}"
                    ));
                }
                kernels::pool_shape(&x, pool)
            }
            COp::Round { shift, .. } => {
                if ins[0].range.min < 0 || *shift == 0 || *shift > 62 {
                    return at(format!("rounds a value of range {:?} by {shift} bits", ins[0].range));
                }
                x.clone()
            }
            COp::Table { in_width, index, tables } => {
                if *in_width == 0 || *in_width > 24 {
                    return at(format!("tables of 2^{in_width} entries (1 to 24 index bits allowed)"));
                }
                let len = 1usize << in_width;
                if tables.iter().any(|t| t.len() != len) {
                    return at(format!("tables must have 2^{in_width} entries"));
                }
                let want = match index {
                    TableIndex::Shared => 1,
                    TableIndex::PerAxis(a) if *a < x.len() => x[*a],
                    TableIndex::PerAxis(a) => return at(format!("axis {a} out of range")),
                    TableIndex::PerElement => x.iter().product(),
                };
                if tables.len() != want {
                    return at(format!("{} tables for {want} indices", tables.len()));
                }
                let r = ins[0].range;
                if r.min < 0 || r.max >= len as i64 {
                    return at(format!("input range {r:?} does not fit [0, {len})"));
                }
                if matches!(ins[0].op, COp::Round { mode: Rounding::Approximate, .. })
                    && (r.min < 1 || r.max > len as i64 - 2)
                {
                    return at(format!("approximately rounded range {r:?} has no guard step inside [0, {len})"));
                }
                if tables.iter().flatten().any(|&v| !n.range.contains(v)) {
                    return at(format!("a table entry lies outside the declared range {:?}", n.range));
                }
                x.clone()
            }
            COp::Reshape => {
                if x.iter().product::<usize>() != n.shape.iter().product::<usize>() {
                    return at(format!("cannot reshape {x:?} to {:?}", n.shape));
                }
                n.shape.clone()
            }
            COp::Transpose { perm } => {
                let mut p = perm.clone();
                p.sort_unstable();
                if p != (0..x.len()).collect::<Vec<_>>() {
                    return at(format!("{perm:?} is not a permutation of rank {}", x.len()));
                }
                perm.iter().map(|&a| x[a]).collect()
            }
            COp::Gather { src, negate, .. } => {
                let len: usize = x.iter().product();
                if src.len() != len || negate.len() != len {
                    return at(format!("gathers {} elements with {} negations from {len}", src.len(), negate.len()));
                }
                let mut seen = vec![false; len];
                for &s in src {
                    match seen.get_mut(s as usize) {
                        Some(v) if !*v => *v = true,
                        _ => {
                            return at(format!(
                                "source {s} is out of range or repeated: not a permutation of 0..{len}"
                            ));
                        }
                    }
                }
                x.clone()
            }
        };
        if expect != n.shape {
            return at(format!("declares shape {:?}, its op gives {expect:?}", n.shape));
        }
        if !(n.norm2.is_finite() && n.norm2 >= 1.0 - 1e-9) {
            return at(format!("noise 2-norm {} is not >= 1", n.norm2));
        }
    }
    if matches!(c.nodes[c.output].op, COp::Round { mode: Rounding::Approximate, .. }) {
        return err("the output is an approximate rounding, which only tables may read".into());
    }
    let input = &c.nodes[0];
    if c.input_quant.pixel_to_q.len() != 256 || c.input_quant.pixel_to_q.iter().any(|&q| !input.range.contains(q)) {
        return err("the pixel map must have 256 entries inside the input range".into());
    }
    let n_out: usize = c.nodes[c.output].shape.iter().product();
    if c.output_quant.scale.len() != n_out || c.output_quant.offset.len() != n_out {
        return err(format!("the output map must have {n_out} entries"));
    }
    Ok(())
}
