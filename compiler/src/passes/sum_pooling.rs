//! Pass `sum-pooling`: average pooling as a sum whose scale folds into the next op.
//!
//! **Establishes:** no `avg_pool` and no `global_avg_pool`: each is a `sum_pool` followed
//! by a `MulConst` by the reciprocal window count (per output position when padded
//! positions do not count), which `fold-affine` moves into the next Conv or Dense, or
//! lowering into the next table. **Expects:** a verified NN graph. **Options:** none.
//! Exact up to float rounding (1e-4).

use fhec_ir::nn::{Op, Pool, Tensor, interp};
use ndarray::IxDyn;

use super::egraph::{Rule, add_op, class, param, rule};

/// The rules of the group.
pub fn rules() -> Vec<Rule> {
    vec![
        rule("avgpool-to-sum", "(avgpool ?p ?x)", |eg, s| {
            let p = param(eg, s, "?p");
            let Op::AvgPool { pool, .. } = &p.op else { return None };
            let x = class(s, "?x");
            let xs = eg[x].data.shape.clone();
            // One image, one channel: the divisor only depends on the position.
            let one = [1, 1, xs[2], xs[3]];
            let ones = Tensor::ones(IxDyn(&one));
            let out = [1, 1, p.shape[2], p.shape[3]];
            let avg = interp::eval_op(&p.op, &[ones.view()], &out).ok()?;
            let sum = interp::eval_op(&Op::SumPool(pool.clone()), &[ones.view()], &out).ok()?;
            let d = ndarray::Zip::from(&avg).and(&sum).map_collect(|&a, &s| if s > 0.0 { a / s } else { 0.0 });
            let sp = add_op(eg, format!("{}.sum", p.name), Op::SumPool(pool.clone()), &[x], None)?;
            add_op(eg, p.name, Op::MulConst(d), &[sp], None)
        }),
        rule("gap-to-sum", "(gap ?p ?x)", |eg, s| {
            let p = param(eg, s, "?p");
            let x = class(s, "?x");
            let xs = eg[x].data.shape.clone();
            if xs.len() != 4 {
                return None;
            }
            let pool =
                Pool { kernel: [xs[2], xs[3]], strides: [1, 1], pads: [0; 4], dilations: [1, 1], ceil_mode: false };
            let area = (xs[2] * xs[3]) as f32;
            let sp = add_op(eg, format!("{}.sum", p.name), Op::SumPool(pool), &[x], None)?;
            add_op(eg, p.name, Op::MulConst(Tensor::from_elem(IxDyn(&[1]), 1.0 / area)), &[sp], None)
        }),
    ]
}
