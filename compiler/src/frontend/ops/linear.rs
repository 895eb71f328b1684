//! Gemm and MatMul with constant weights.

use fhec_ir::nn::Op;
use ndarray::{Array1, Array2, ArrayD, Ix2};

use super::super::tensor::CTensor;
use super::{ImportError, Importer, NodeCtx, Val, constant, required};

fn matrix(ctx: &NodeCtx, t: ArrayD<f32>, what: &str) -> Result<Array2<f32>, ImportError> {
    let s = t.shape().to_vec();
    t.into_dimensionality::<Ix2>().map_err(|_| ctx.err(format!("{what} must be 2-D, got shape {s:?}")))
}

pub(super) fn gemm(imp: &mut Importer, ctx: &NodeCtx, inputs: &[Option<Val>]) -> Result<Vec<Val>, ImportError> {
    let a = required(ctx, inputs, 0)?.clone();
    let b = matrix(ctx, constant(ctx, inputs, 1, "B (the weight)")?.to_f32(), "B")?;
    let alpha = ctx.float_or("alpha", 1.0)?;
    let beta = ctx.float_or("beta", 1.0)?;
    let trans_a = ctx.int_or("transA", 0)? != 0;
    let trans_b = ctx.int_or("transB", 0)? != 0;
    let weight = if trans_b { b } else { b.t().to_owned() } * alpha;
    let n_out = weight.nrows();
    let bias = match inputs.get(2).and_then(|v| v.as_ref()) {
        None => None,
        Some(_) => {
            let c = constant(ctx, inputs, 2, "C (the bias)")?.to_f32();
            let ok = match c.shape() {
                [] => true,
                [n] => *n == 1 || *n == n_out,
                [1, n] => *n == 1 || *n == n_out,
                _ => false,
            };
            if !ok {
                return Err(ctx.err(format!(
                    "bias C of shape {:?} is not supported (a scalar or one value per output, {n_out})",
                    c.shape()
                )));
            }
            let v: Vec<f32> = c.iter().map(|&x| x * beta).collect();
            Some(if v.len() == 1 { Array1::from_elem(n_out, v[0]) } else { Array1::from_vec(v) })
        }
    };
    let rank = imp.shape_of(&a).len();
    if rank != 2 {
        return Err(ctx.err(format!("input A must be 2-D, got rank {rank}")));
    }
    let a =
        if trans_a { imp.apply(ctx, Some("transpose_a"), Op::Transpose { perm: vec![1, 0] }, &[a], &[])? } else { a };
    Ok(vec![imp.apply(ctx, None, Op::Dense { weight, bias }, &[a], &[])?])
}

pub(super) fn matmul(imp: &mut Importer, ctx: &NodeCtx, inputs: &[Option<Val>]) -> Result<Vec<Val>, ImportError> {
    let a = required(ctx, inputs, 0)?.clone();
    let b = required(ctx, inputs, 1)?.clone();
    match (&a, &b) {
        (Val::Const(x), Val::Const(y)) => {
            let (x, y) = (matrix(ctx, x.to_f32(), "A")?, matrix(ctx, y.to_f32(), "B")?);
            if x.ncols() != y.nrows() {
                return Err(ctx.err(format!("cannot multiply {:?} by {:?}", x.shape(), y.shape())));
            }
            Ok(vec![Val::Const(CTensor::F32(x.dot(&y).into_dyn()))])
        }
        (Val::Node(_), Val::Const(w)) => {
            let w = matrix(ctx, w.to_f32(), "B (the weight)")?;
            Ok(vec![imp.apply(ctx, None, Op::Dense { weight: w.t().to_owned(), bias: None }, &[a], &[])?])
        }
        _ => {
            Err(ctx
                .err("fhec supports MatMul of a computed value by a constant weight matrix (A computed, B constant)"))
        }
    }
}
