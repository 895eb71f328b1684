//! Pass `argmax-tail`: drops output ops that do not change the argmax.
//!
//! **Establishes:** no graph output is a Softmax or LogSoftmax over its class axis (every
//! other axis of size 1), a multiplication by one positive constant, or an addition of one
//! constant. The class scores change (logits instead of probabilities), the predicted
//! class does not. **Expects:** a verified NN graph. **Options:** none.
//! Argmax-preserving, not value-preserving: its tests compare predictions.

use fhec_ir::nn::Op;

use super::egraph::{Nn, NnGraph, Rule, class, param, rule};

fn class_axis_only(shape: &[usize], axis: usize) -> bool {
    shape.iter().enumerate().all(|(a, &d)| a == axis || d == 1)
}

fn out(eg: &mut NnGraph, x: egg::Id) -> Option<egg::Id> {
    Some(eg.add(Nn::Out(x)))
}

/// The rules of the group.
pub fn rules() -> Vec<Rule> {
    vec![
        rule("drop-softmax", "(out (softmax ?p ?x))", |eg, s| {
            let p = param(eg, s, "?p");
            match p.op {
                Op::Softmax { axis } if class_axis_only(&p.shape, axis) => out(eg, class(s, "?x")),
                _ => None,
            }
        }),
        rule("drop-log-softmax", "(out (logsoftmax ?p ?x))", |eg, s| {
            let p = param(eg, s, "?p");
            match p.op {
                Op::LogSoftmax { axis } if class_axis_only(&p.shape, axis) => out(eg, class(s, "?x")),
                _ => None,
            }
        }),
        rule("drop-positive-scale", "(out (mulc ?p ?x))", |eg, s| {
            let Op::MulConst(c) = param(eg, s, "?p").op else { return None };
            let a = *c.iter().next()?;
            if a > 0.0 && c.iter().all(|&v| v == a) { out(eg, class(s, "?x")) } else { None }
        }),
        rule("drop-uniform-shift", "(out (addc ?p ?x))", |eg, s| {
            let Op::AddConst(c) = param(eg, s, "?p").op else { return None };
            let a = *c.iter().next()?;
            if c.iter().all(|&v| v == a) { out(eg, class(s, "?x")) } else { None }
        }),
    ]
}
