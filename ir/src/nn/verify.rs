//! The NN IR verifier: run after the frontend and after every pass.

use super::{Graph, Op};

/// A broken IR invariant, naming the node at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid NN IR: {0}")]
pub struct VerifyError(pub String);

/// Checks the invariants every pass may rely on:
/// the graph is acyclic; input slots of each node are exactly `0..arity`; each node's
/// shape is what its op infers from its inputs; `Input` nodes are exactly the graph
/// inputs, numbered in order; there is at least one output; all constants are finite.
pub fn verify(g: &Graph) -> Result<(), VerifyError> {
    let err = |m: String| Err(VerifyError(m));
    if g.topo_order().is_none() {
        return err("the graph has a cycle".into());
    }
    if g.outputs().is_empty() {
        return err("the graph has no output".into());
    }
    for (i, &id) in g.inputs().iter().enumerate() {
        match g.node(id).op {
            Op::Input { index } if index == i => {}
            _ => return err(format!("graph input #{i} (node '{}') is not Input {{ index: {i} }}", g.node(id).name)),
        }
    }
    for id in g.node_ids() {
        let node = g.node(id);
        let mut slots = g.input_slots(id);
        slots.sort_unstable();
        let expected: Vec<usize> = (0..node.op.arity()).collect();
        let got: Vec<usize> = slots.iter().map(|s| s.0).collect();
        if got != expected {
            return err(format!(
                "node '{}' ({}) has input slots {got:?}, expected {expected:?}",
                node.name,
                node.op.name()
            ));
        }
        if let Op::Input { .. } = node.op
            && !g.inputs().contains(&id)
        {
            return err(format!("input node '{}' is not a graph input", node.name));
        }
        let shapes: Vec<&[usize]> = slots.iter().map(|&(_, p)| g.node(p).shape.as_slice()).collect();
        match node.op.infer_shape(&shapes, &node.shape) {
            Ok(s) if s == node.shape => {}
            Ok(s) => {
                return err(format!(
                    "node '{}' ({}) declares shape {:?} but its inputs give {s:?}",
                    node.name,
                    node.op.name(),
                    node.shape
                ));
            }
            Err(e) => return err(format!("node '{}' ({}): {e}", node.name, node.op.name())),
        }
        if node.shape.contains(&0) {
            return err(format!("node '{}' has an empty shape {:?}", node.name, node.shape));
        }
        if !constants_finite(&node.op) {
            return err(format!("node '{}' ({}) has a NaN or infinite constant", node.name, node.op.name()));
        }
    }
    Ok(())
}

fn fin<'a>(it: &mut impl Iterator<Item = &'a f32>) -> bool {
    it.all(|v| v.is_finite())
}

fn constants_finite(op: &Op) -> bool {
    match op {
        Op::Conv(c) => fin(&mut c.weight.iter()) && c.bias.as_ref().is_none_or(|b| fin(&mut b.iter())),
        Op::Dense { weight, bias } => fin(&mut weight.iter()) && bias.as_ref().is_none_or(|b| fin(&mut b.iter())),
        Op::AddConst(c) | Op::MulConst(c) | Op::PRelu(c) => fin(&mut c.iter()),
        Op::BatchNorm { scale, bias, mean, var, epsilon } => {
            fin(&mut scale.iter().chain(bias).chain(mean).chain(var)) && epsilon.is_finite()
        }
        Op::LeakyRelu { alpha } => alpha.is_finite(),
        Op::Pad { value, .. } => value.is_finite(),
        Op::FakeQuant(g) => g.scale.is_finite() && g.scale > 0.0 && g.qmin <= g.qmax,
        Op::HardSigmoid { alpha, beta } => alpha.is_finite() && beta.is_finite(),
        Op::Clip { min, max } => !min.is_some_and(f32::is_nan) && !max.is_some_and(f32::is_nan),
        _ => true,
    }
}
