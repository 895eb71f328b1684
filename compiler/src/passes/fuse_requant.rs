//! Pass `fuse-requant`: minimal element-wise chains around requantizations.
//!
//! Lowering turns every chain of element-wise ops between two linear ops (activation,
//! requantization, affine maps) into one table; this group removes the ops of a chain that
//! a requantization makes redundant, so the table is the requantization fused with what
//! is left of its activation.
//!
//! **Establishes:** `fq(relu x) = fq x` when the grid has no negative value
//! (`qmin >= zero_point`); `fq(clip x) = fq x` when the clip bounds enclose the grid's
//! range; `fq(fq x) = fq x` on one grid; `relu(fq x) = fq x` on a grid without negative
//! values. **Expects:** a verified NN graph. **Options:** none. Exact.

use fhec_ir::nn::Op;

use super::egraph::{Nn, Rule, add_op, class, param, rule};

/// The rules of the group.
pub fn rules() -> Vec<Rule> {
    vec![
        rule("fq-absorbs-relu", "(fq ?p (relu ?q ?x))", |eg, s| {
            let p = param(eg, s, "?p");
            match p.op {
                Op::FakeQuant(g) if g.qmin >= g.zero_point => add_op(eg, p.name, p.op.clone(), &[class(s, "?x")], None),
                _ => None,
            }
        }),
        rule("fq-absorbs-clip", "(fq ?p (clip ?q ?x))", |eg, s| {
            let p = param(eg, s, "?p");
            let (Op::FakeQuant(g), Op::Clip { min, max }) = (&p.op, param(eg, s, "?q").op) else { return None };
            let lo_ok = min.is_none_or(|m| m <= g.dequantize(g.qmin));
            let hi_ok = max.is_none_or(|m| m >= g.dequantize(g.qmax));
            if lo_ok && hi_ok { add_op(eg, p.name, p.op.clone(), &[class(s, "?x")], None) } else { None }
        }),
        rule("fq-idempotent", "(fq ?p (fq ?q ?x))", |eg, s| {
            if param(eg, s, "?p").op == param(eg, s, "?q").op {
                eg.lookup(Nn::FakeQuant([class(s, "?q"), class(s, "?x")]))
            } else {
                None
            }
        }),
        rule("relu-of-nonneg-fq", "(relu ?p (fq ?q ?x))", |eg, s| match param(eg, s, "?q").op {
            Op::FakeQuant(g) if g.qmin >= g.zero_point => eg.lookup(Nn::FakeQuant([class(s, "?q"), class(s, "?x")])),
            _ => None,
        }),
    ]
}
