//! Pass `fold-affine`: BatchNormalization and input normalisation folded into the
//! neighbouring linear op.
//!
//! **Establishes** (where the shapes allow): no `batch_norm` (each becomes `x * k + t`, then
//! folds); chains of constant multiplications / additions are one op each, in the order
//! `(x * k) + t`; a per-output-channel `* k` or `+ t` after a Conv or Dense is in its
//! weights and bias; a per-input-channel `* k` (and, without padding, `+ t`) before a Conv,
//! or a per-feature one before a Dense (also through a flattening reshape), is in its
//! weights and bias, except a scaling of an activation's output: the activation's table
//! absorbs it exactly, while folding it into the next weights can cost them precision (a
//! BatchNorm channel with a near-zero variance scales one weight column by ~300: -0.27
//! points on `burn_mnist_bn`, measured). Sub/Div by constants are `AddConst` / `MulConst` since import, so
//! `(x - mean) / std` folds the same way. A polynomial of degree <= 1 (an activation the
//! `activations` pass found linear on its range) is `x * k + t`.
//! **Expects:** a verified NN graph. **Options:** none. Exact up to float rounding (1e-4).

use fhec_ir::nn::{Conv, Op, Tensor};
use ndarray::{Array1, Axis, IxDyn};

use super::egraph::{NnGraph, Rule, add_op, class, is_table_op, param, param_of, rule};

/// Whether class `id` is (also) computed by a table-producing op: a constant scaling of
/// it is absorbed exactly by that table, so it should not move into the next weights.
fn is_table_output(eg: &NnGraph, id: egg::Id) -> bool {
    eg[id].nodes.iter().any(|n| param_of(eg, n).is_some_and(|p| is_table_op(&p.op)))
}

/// The values of `c` broadcast to `shape`, if they vary along `axis` only.
pub(crate) fn per_axis(c: &Tensor, shape: &[usize], axis: usize) -> Option<Vec<f32>> {
    let full = c.broadcast(IxDyn(shape))?;
    let n = shape[axis];
    let mut v: Vec<Option<f32>> = vec![None; n];
    for (idx, &x) in full.indexed_iter() {
        let slot = &mut v[idx[axis]];
        match slot {
            None => *slot = Some(x),
            Some(y) if *y == x => {}
            Some(_) => return None,
        }
    }
    v.into_iter().collect()
}

fn shape(eg: &NnGraph, id: egg::Id) -> Vec<usize> {
    eg[id].data.shape.clone()
}

fn conv_map(c: &Conv, f: impl Fn(usize, usize) -> f32, bias: impl Fn(usize, f32) -> f32) -> Conv {
    // f(oc, input channel) scales the kernel, bias(oc, old) gives the new bias.
    let mut w = c.weight.clone();
    let (o, ipg) = (w.shape()[0], w.shape()[1]);
    let opg = o / c.groups;
    for oc in 0..o {
        for ic in 0..ipg {
            let k = f(oc, (oc / opg) * ipg + ic);
            w.index_axis_mut(Axis(0), oc).index_axis_mut(Axis(0), ic).mapv_inplace(|v| v * k);
        }
    }
    let b: Array1<f32> = (0..o).map(|oc| bias(oc, c.bias.as_ref().map_or(0.0, |b| b[oc]))).collect();
    Conv { weight: w, bias: Some(b), ..c.clone() }
}

/// The rules of the group.
pub fn rules() -> Vec<Rule> {
    vec![
        rule("bn-to-affine", "(bn ?p ?x)", |eg, s| {
            let p = param(eg, s, "?p");
            let Op::BatchNorm { scale, bias, mean, var, epsilon } = &p.op else { return None };
            let mut ps = vec![1; p.shape.len()];
            ps[1] = scale.len();
            let k: Vec<f32> = (0..scale.len()).map(|c| scale[c] / (var[c] + epsilon).sqrt()).collect();
            let t: Vec<f32> = (0..scale.len()).map(|c| bias[c] - mean[c] * k[c]).collect();
            let k = Tensor::from_shape_vec(IxDyn(&ps), k).ok()?;
            let t = Tensor::from_shape_vec(IxDyn(&ps), t).ok()?;
            let m = add_op(eg, format!("{}.scale", p.name), Op::MulConst(k), &[class(s, "?x")], None)?;
            add_op(eg, format!("{}.shift", p.name), Op::AddConst(t), &[m], None)
        }),
        rule("affine-poly", "(poly ?p ?x)", |eg, s| {
            let p = param(eg, s, "?p");
            let Op::Poly(c) = &p.op else { return None };
            if c.len() > 2 {
                return None;
            }
            let (t, k) = (c.first().copied().unwrap_or(0.0), c.get(1).copied().unwrap_or(0.0));
            let one = |v: f32| Tensor::from_elem(IxDyn(&[1]), v);
            let m = add_op(eg, format!("{}.scale", p.name), Op::MulConst(one(k)), &[class(s, "?x")], None)?;
            add_op(eg, format!("{}.shift", p.name), Op::AddConst(one(t)), &[m], None)
        }),
        rule("mulc-mulc", "(mulc ?p (mulc ?q ?x))", |eg, s| {
            let (Op::MulConst(a), Op::MulConst(b)) = (param(eg, s, "?p").op, param(eg, s, "?q").op) else {
                return None;
            };
            let name = param(eg, s, "?q").name;
            add_op(eg, name, Op::MulConst(&a * &b), &[class(s, "?x")], None)
        }),
        rule("addc-addc", "(addc ?p (addc ?q ?x))", |eg, s| {
            let (Op::AddConst(a), Op::AddConst(b)) = (param(eg, s, "?p").op, param(eg, s, "?q").op) else {
                return None;
            };
            let name = param(eg, s, "?q").name;
            add_op(eg, name, Op::AddConst(&a + &b), &[class(s, "?x")], None)
        }),
        rule("mulc-of-addc", "(mulc ?p (addc ?q ?x))", |eg, s| {
            let (p, q) = (param(eg, s, "?p"), param(eg, s, "?q"));
            let (Op::MulConst(a), Op::AddConst(b)) = (&p.op, &q.op) else { return None };
            let m = add_op(eg, p.name, Op::MulConst(a.clone()), &[class(s, "?x")], None)?;
            add_op(eg, q.name, Op::AddConst(a * b), &[m], None)
        }),
        rule("conv-then-mulc", "(mulc ?p (conv ?q ?x))", |eg, s| {
            let (p, q) = (param(eg, s, "?p"), param(eg, s, "?q"));
            let (Op::MulConst(k), Op::Conv(c)) = (&p.op, &q.op) else { return None };
            let k = per_axis(k, &q.shape, 1)?;
            let c = conv_map(c, |oc, _| k[oc], |oc, b| b * k[oc]);
            add_op(eg, q.name, Op::Conv(c), &[class(s, "?x")], None)
        }),
        rule("conv-then-addc", "(addc ?p (conv ?q ?x))", |eg, s| {
            let (p, q) = (param(eg, s, "?p"), param(eg, s, "?q"));
            let (Op::AddConst(t), Op::Conv(c)) = (&p.op, &q.op) else { return None };
            let t = per_axis(t, &q.shape, 1)?;
            let c = conv_map(c, |_, _| 1.0, |oc, b| b + t[oc]);
            add_op(eg, q.name, Op::Conv(c), &[class(s, "?x")], None)
        }),
        rule("dense-then-mulc", "(mulc ?p (dense ?q ?x))", |eg, s| {
            let (p, q) = (param(eg, s, "?p"), param(eg, s, "?q"));
            let (Op::MulConst(k), Op::Dense { weight, bias }) = (&p.op, &q.op) else { return None };
            let k = per_axis(k, &q.shape, q.shape.len() - 1)?;
            let mut w = weight.clone();
            for (o, mut row) in w.outer_iter_mut().enumerate() {
                row *= k[o];
            }
            let b = (0..w.nrows()).map(|o| bias.as_ref().map_or(0.0, |b| b[o]) * k[o]).collect();
            add_op(eg, q.name, Op::Dense { weight: w, bias: Some(b) }, &[class(s, "?x")], None)
        }),
        rule("dense-then-addc", "(addc ?p (dense ?q ?x))", |eg, s| {
            let (p, q) = (param(eg, s, "?p"), param(eg, s, "?q"));
            let (Op::AddConst(t), Op::Dense { weight, bias }) = (&p.op, &q.op) else { return None };
            let t = per_axis(t, &q.shape, q.shape.len() - 1)?;
            let b = (0..weight.nrows()).map(|o| bias.as_ref().map_or(0.0, |b| b[o]) + t[o]).collect();
            add_op(eg, q.name, Op::Dense { weight: weight.clone(), bias: Some(b) }, &[class(s, "?x")], None)
        }),
        rule("conv-of-mulc", "(conv ?p (mulc ?q ?x))", |eg, s| {
            let (p, q) = (param(eg, s, "?p"), param(eg, s, "?q"));
            let (Op::Conv(c), Op::MulConst(k)) = (&p.op, &q.op) else { return None };
            if is_table_output(eg, class(s, "?x")) {
                return None;
            }
            let k = per_axis(k, &shape(eg, class(s, "?x")), 1)?;
            let c = conv_map(c, |_, ic| k[ic], |_, b| b);
            add_op(eg, p.name, Op::Conv(c), &[class(s, "?x")], None)
        }),
        rule("conv-of-addc", "(conv ?p (addc ?q ?x))", |eg, s| {
            let (p, q) = (param(eg, s, "?p"), param(eg, s, "?q"));
            let (Op::Conv(c), Op::AddConst(t)) = (&p.op, &q.op) else { return None };
            if c.pads.iter().any(|&v| v != 0) {
                return None;
            }
            let t = per_axis(t, &shape(eg, class(s, "?x")), 1)?;
            let (o, ipg) = (c.weight.shape()[0], c.weight.shape()[1]);
            let opg = o / c.groups;
            let extra: Vec<f32> = (0..o)
                .map(|oc| {
                    (0..ipg)
                        .map(|ic| {
                            t[(oc / opg) * ipg + ic] * c.weight.index_axis(Axis(0), oc).index_axis(Axis(0), ic).sum()
                        })
                        .sum()
                })
                .collect();
            let c = conv_map(c, |_, _| 1.0, |oc, b| b + extra[oc]);
            add_op(eg, p.name, Op::Conv(c), &[class(s, "?x")], None)
        }),
        rule("dense-of-mulc", "(dense ?p (mulc ?q ?x))", |eg, s| {
            let xs = shape(eg, class(s, "?x"));
            dense_of_const(eg, s, &xs, class(s, "?x"))
        }),
        rule("dense-of-addc", "(dense ?p (addc ?q ?x))", |eg, s| {
            let xs = shape(eg, class(s, "?x"));
            dense_of_const(eg, s, &xs, class(s, "?x"))
        }),
        rule("dense-of-flat-mulc", "(dense ?p (reshape ?r (mulc ?q ?x)))", dense_of_flat),
        rule("dense-of-flat-addc", "(dense ?p (reshape ?r (addc ?q ?x)))", dense_of_flat),
    ]
}

/// `dense(c-op(x))` with the constant varying along the features only: folded.
fn dense_of_const(eg: &mut NnGraph, s: &egg::Subst, xs: &[usize], x: egg::Id) -> Option<egg::Id> {
    if xs[..xs.len() - 1].iter().product::<usize>() != 1 {
        return None;
    }
    let flat = |c: &Tensor| per_axis(c, xs, xs.len() - 1);
    let (p, q) = (param(eg, s, "?p"), param(eg, s, "?q"));
    if matches!(q.op, Op::MulConst(_)) && is_table_output(eg, x) {
        return None;
    }
    let op = fold_into_dense(&p.op, &q.op, flat)?;
    add_op(eg, p.name, op, &[x], None)
}

fn fold_into_dense(dense: &Op, c: &Op, flat: impl Fn(&Tensor) -> Option<Vec<f32>>) -> Option<Op> {
    let Op::Dense { weight, bias } = dense else { return None };
    let mut w = weight.clone();
    let mut b: Array1<f32> = bias.clone().unwrap_or_else(|| Array1::zeros(w.nrows()));
    match c {
        Op::MulConst(k) => {
            let k = flat(k)?;
            for (j, mut col) in w.axis_iter_mut(Axis(1)).enumerate() {
                col *= k[j];
            }
        }
        Op::AddConst(t) => {
            let t = Array1::from(flat(t)?);
            b = b + w.dot(&t);
        }
        _ => return None,
    }
    Some(Op::Dense { weight: w, bias: Some(b) })
}

/// `dense(reshape(c-op(x)))`, the reshape flattening a single image: the constant,
/// broadcast to `x` and flattened, folds into the dense weights.
fn dense_of_flat(eg: &mut NnGraph, s: &egg::Subst) -> Option<egg::Id> {
    let x = class(s, "?x");
    let xs = shape(eg, x);
    let r = param(eg, s, "?r");
    if r.shape.len() != 2 || r.shape[0] != 1 || xs.first() != Some(&1) {
        return None;
    }
    let (p, q) = (param(eg, s, "?p"), param(eg, s, "?q"));
    if matches!(q.op, Op::MulConst(_)) && is_table_output(eg, x) {
        return None;
    }
    let flat = |c: &Tensor| -> Option<Vec<f32>> { Some(c.broadcast(IxDyn(&xs))?.iter().copied().collect()) };
    let op = fold_into_dense(&p.op, &q.op, flat)?;
    let rx = add_op(eg, r.name, Op::Reshape, &[x], Some(r.shape.clone()))?;
    add_op(eg, p.name, op, &[rx], None)
}
