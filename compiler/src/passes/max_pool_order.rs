//! Pass `max-pool-order`: max pooling and a nondecreasing activation commute.
//!
//! **Establishes:** nothing by itself; adds the equivalent order of every max pooling next
//! to a nondecreasing element-wise activation with scalar parameters (ReLU, a leaky ReLU of
//! non-negative slope, clip, sigmoid, tanh, hard sigmoid of positive slope, a fake
//! quantization), so that extraction picks the cheaper one: `maxpool(relu(x)) =
//! relu(maxpool(x))` exactly, since `max(f(a), f(b)) = f(max(a, b))` for nondecreasing `f`.
//! **Expects:** a verified NN graph. **Options:** none.
//!
//! The activation after the pooling reads `k` times fewer values (a 2x2 window: 4x fewer
//! tables), but the comparisons then read the wide accumulator instead of the activation's
//! narrow output: with approximate rounding a comparison reads the top bits of a difference
//! at the cost of a table, so the cost model prefers pooling first; with exact rounding,
//! comparing wide values costs rounding bootstraps, and it keeps the activation first.
//! Exact in float (1e-4).

use fhec_ir::nn::Op;

use super::egraph::{Rule, add_op, class, param, rule};

/// Whether `op` is element-wise, nondecreasing and has no per-element parameters.
fn monotone(op: &Op) -> bool {
    match op {
        Op::Relu | Op::Sigmoid | Op::Tanh | Op::Clip { .. } => true,
        Op::LeakyRelu { alpha } => *alpha >= 0.0,
        Op::HardSigmoid { alpha, .. } => *alpha > 0.0,
        Op::FakeQuant(g) => g.scale > 0.0,
        _ => false,
    }
}

/// The e-graph names of the activations [`monotone`] may accept.
const ACTIVATIONS: &[&str] = &["relu", "leaky", "clip", "sigmoid", "tanh", "hsig", "fq"];

/// The rules of the group.
pub fn rules() -> Vec<Rule> {
    let mut rules = vec![];
    for act in ACTIVATIONS {
        rules.push(rule(&format!("pool-before-{act}"), &format!("(maxpool ?p ({act} ?q ?x))"), |eg, s| {
            let (p, q, x) = (param(eg, s, "?p"), param(eg, s, "?q"), class(s, "?x"));
            if !monotone(&q.op) {
                return None;
            }
            let pooled = add_op(eg, p.name, p.op, &[x], None)?;
            add_op(eg, q.name, q.op, &[pooled], None)
        }));
        rules.push(rule(&format!("{act}-before-pool"), &format!("({act} ?q (maxpool ?p ?x))"), |eg, s| {
            let (p, q, x) = (param(eg, s, "?p"), param(eg, s, "?q"), class(s, "?x"));
            if !monotone(&q.op) {
                return None;
            }
            let activated = add_op(eg, q.name, q.op, &[x], None)?;
            add_op(eg, p.name, p.op, &[activated], None)
        }));
    }
    rules
}
