//! Pass `canonical-activations`: one spelling per activation.
//!
//! **Establishes:** `x * x` is `square`; `Clip(0, inf)` and `LeakyRelu(0)` are `relu`;
//! `LeakyRelu(1)` is gone; a PRelu with one slope is a LeakyRelu; `relu(relu x)`,
//! `clip(relu x)` (lower bound >= 0) and `relu(clip x)` (lower bound >= 0) lose the
//! redundant op. (ONNX `Pow(x, 2)` is already `square` at import.)
//! **Expects:** a verified NN graph. **Options:** none. Exact (float semantics unchanged).

use fhec_ir::nn::Op;

use super::egraph::{Nn, Rule, add_op, class, param, rule};

/// The rules of the group.
pub fn rules() -> Vec<Rule> {
    vec![
        rule("square-of-mul", "(mul ?p ?x ?x)", |eg, s| {
            let p = param(eg, s, "?p");
            add_op(eg, p.name, Op::Square, &[class(s, "?x")], None)
        }),
        rule("relu-of-clip", "(clip ?p ?x)", |eg, s| {
            let p = param(eg, s, "?p");
            match p.op {
                Op::Clip { min: Some(0.0), max: None } => add_op(eg, p.name, Op::Relu, &[class(s, "?x")], None),
                _ => None,
            }
        }),
        rule("relu-of-leaky", "(leaky ?p ?x)", |eg, s| {
            let p = param(eg, s, "?p");
            match p.op {
                Op::LeakyRelu { alpha: 0.0 } => add_op(eg, p.name, Op::Relu, &[class(s, "?x")], None),
                _ => None,
            }
        }),
        rule("identity-leaky", "(leaky ?p ?x)", |eg, s| match param(eg, s, "?p").op {
            Op::LeakyRelu { alpha: 1.0 } => Some(class(s, "?x")),
            _ => None,
        }),
        rule("leaky-of-prelu", "(prelu ?p ?x)", |eg, s| {
            let p = param(eg, s, "?p");
            let Op::PRelu(slope) = &p.op else { return None };
            let a = *slope.iter().next()?;
            if slope.iter().any(|&v| v != a) {
                return None;
            }
            add_op(eg, p.name, Op::LeakyRelu { alpha: a }, &[class(s, "?x")], None)
        }),
        rule("relu-of-relu", "(relu ?p (relu ?q ?x))", |eg, s| eg.lookup(Nn::Relu([class(s, "?q"), class(s, "?x")]))),
        rule("clip-of-relu", "(clip ?p (relu ?q ?x))", |eg, s| {
            let p = param(eg, s, "?p");
            match p.op {
                Op::Clip { min: Some(m), .. } if m >= 0.0 => add_op(eg, p.name, p.op.clone(), &[class(s, "?x")], None),
                _ => None,
            }
        }),
        rule("relu-of-nonneg-clip", "(relu ?p (clip ?q ?x))", |eg, s| match param(eg, s, "?q").op {
            Op::Clip { min: Some(m), .. } if m >= 0.0 => eg.lookup(Nn::Clip([class(s, "?q"), class(s, "?x")])),
            _ => None,
        }),
    ]
}
