//! Pass `merge-linear`: chains of linear ops with no activation between them become one.
//!
//! **Establishes:** no Dense reads another Dense directly (`W2 (W1 x + b1) + b2` is one
//! Dense `W2 W1`, `W2 b1 + b2`); together with `fold-affine`, the constant scalings and
//! shifts between them are gone too. Convolutions are not merged with each other (the
//! composed kernel is larger and its padding semantics differ); a Conv followed by a Dense
//! stays two ops. **Expects:** a verified NN graph. **Options:** none.
//! Exact up to float rounding (1e-4). The cost model prefers the merged form: it removes
//! the wide intermediate accumulator (and so the rounding bootstraps after it).

use fhec_ir::nn::Op;
use ndarray::Array1;

use super::egraph::{Rule, add_op, class, param, rule};

/// The rules of the group.
pub fn rules() -> Vec<Rule> {
    vec![rule("dense-of-dense", "(dense ?p (dense ?q ?x))", |eg, s| {
        let (p, q) = (param(eg, s, "?p"), param(eg, s, "?q"));
        let (Op::Dense { weight: w2, bias: b2 }, Op::Dense { weight: w1, bias: b1 }) = (&p.op, &q.op) else {
            return None;
        };
        let w = w2.dot(w1);
        let b1 = b1.clone().unwrap_or_else(|| Array1::zeros(w1.nrows()));
        let b = w2.dot(&b1) + b2.clone().unwrap_or_else(|| Array1::zeros(w2.nrows()));
        add_op(eg, format!("{}+{}", q.name, p.name), Op::Dense { weight: w, bias: Some(b) }, &[class(s, "?x")], None)
    })]
}
