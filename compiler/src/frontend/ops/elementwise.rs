//! Element-wise arithmetic, activations, normalisation and softmax.

use fhec_ir::nn::{Op, broadcast_shapes};
use ndarray::{Array1, ArrayD, IxDyn, Zip};

use super::super::tensor::CTensor;
use super::{ImportError, Importer, NodeCtx, Val, axis, constant, required};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Bin {
    Add,
    Sub,
    Mul,
    Div,
}

fn broadcast_f32(
    ctx: &NodeCtx,
    a: &ArrayD<f32>,
    b: &ArrayD<f32>,
    f: impl Fn(f32, f32) -> f32,
) -> Result<ArrayD<f32>, ImportError> {
    let s = broadcast_shapes(a.shape(), b.shape()).map_err(|e| ctx.err(e.0))?;
    let (av, bv) = (a.broadcast(IxDyn(&s)).unwrap(), b.broadcast(IxDyn(&s)).unwrap());
    Ok(Zip::from(&av).and(&bv).map_collect(|&x, &y| f(x, y)))
}

fn broadcast_i64(
    ctx: &NodeCtx,
    a: &ArrayD<i64>,
    b: &ArrayD<i64>,
    f: impl Fn(i64, i64) -> Option<i64>,
) -> Result<ArrayD<i64>, ImportError> {
    let s = broadcast_shapes(a.shape(), b.shape()).map_err(|e| ctx.err(e.0))?;
    let (av, bv) = (a.broadcast(IxDyn(&s)).unwrap(), b.broadcast(IxDyn(&s)).unwrap());
    let mut bad = false;
    let out = Zip::from(&av).and(&bv).map_collect(|&x, &y| {
        f(x, y).unwrap_or_else(|| {
            bad = true;
            0
        })
    });
    if bad {
        return Err(ctx.err("integer overflow or division by zero while folding constants"));
    }
    Ok(out)
}

fn fold(ctx: &NodeCtx, kind: Bin, a: &CTensor, b: &CTensor) -> Result<CTensor, ImportError> {
    if let (CTensor::Int(x, t), CTensor::Int(y, _)) = (a, b) {
        let f = match kind {
            Bin::Add => i64::checked_add,
            Bin::Sub => i64::checked_sub,
            Bin::Mul => i64::checked_mul,
            Bin::Div => i64::checked_div,
        };
        return Ok(CTensor::Int(broadcast_i64(ctx, x, y, f)?, *t));
    }
    let f = match kind {
        Bin::Add => |x: f32, y: f32| x + y,
        Bin::Sub => |x, y| x - y,
        Bin::Mul => |x, y| x * y,
        Bin::Div => |x, y| x / y,
    };
    Ok(CTensor::F32(broadcast_f32(ctx, &a.to_f32(), &b.to_f32(), f)?))
}

/// `x (op) c` with a constant `c` that must not grow `x`.
fn with_const(
    imp: &mut Importer,
    ctx: &NodeCtx,
    kind: Bin,
    x: Val,
    c: &CTensor,
    const_left: bool,
) -> Result<Val, ImportError> {
    let xs = imp.shape_of(&x);
    let c = c.to_f32();
    let out = broadcast_shapes(&xs, c.shape()).map_err(|e| ctx.err(e.0))?;
    if out != xs {
        return Err(ctx.err(format!(
            "the constant operand of shape {:?} would broadcast the computed operand {xs:?} to {out:?}, which fhec does not support",
            c.shape()
        )));
    }
    match (kind, const_left) {
        (Bin::Add, _) => imp.apply(ctx, None, Op::AddConst(c), &[x], &[]),
        (Bin::Mul, _) => imp.apply(ctx, None, Op::MulConst(c), &[x], &[]),
        (Bin::Sub, false) => imp.apply(ctx, None, Op::AddConst(c.mapv(|v| -v)), &[x], &[]),
        (Bin::Sub, true) => {
            let neg = imp.apply(ctx, Some("neg"), Op::MulConst(ArrayD::from_elem(IxDyn(&[]), -1.0)), &[x], &[])?;
            imp.apply(ctx, None, Op::AddConst(c), &[neg], &[])
        }
        (Bin::Div, false) => {
            if c.iter().any(|&v| v == 0.0) {
                return Err(ctx.err("division by a constant that contains zero"));
            }
            imp.apply(ctx, None, Op::MulConst(c.mapv(|v| 1.0 / v)), &[x], &[])
        }
        (Bin::Div, true) => Err(ctx.err("dividing a constant by a computed value (a reciprocal) is not supported")),
    }
}

fn binary(imp: &mut Importer, ctx: &NodeCtx, inputs: &[Option<Val>], kind: Bin) -> Result<Vec<Val>, ImportError> {
    let a = required(ctx, inputs, 0)?.clone();
    let b = required(ctx, inputs, 1)?.clone();
    let out = match (a, b) {
        (Val::Const(x), Val::Const(y)) => Val::Const(fold(ctx, kind, &x, &y)?),
        (x @ Val::Node(_), Val::Const(c)) => with_const(imp, ctx, kind, x, &c, false)?,
        (Val::Const(c), y @ Val::Node(_)) => with_const(imp, ctx, kind, y, &c, true)?,
        (x, y) => {
            let op = match kind {
                Bin::Add => Op::Add,
                Bin::Sub => Op::Sub,
                Bin::Mul => Op::Mul,
                Bin::Div => {
                    return Err(ctx.err("dividing two computed values is not supported"));
                }
            };
            imp.apply(ctx, None, op, &[x, y], &[])?
        }
    };
    Ok(vec![out])
}

pub(super) fn add(imp: &mut Importer, ctx: &NodeCtx, inputs: &[Option<Val>]) -> Result<Vec<Val>, ImportError> {
    binary(imp, ctx, inputs, Bin::Add)
}
pub(super) fn sub(imp: &mut Importer, ctx: &NodeCtx, inputs: &[Option<Val>]) -> Result<Vec<Val>, ImportError> {
    binary(imp, ctx, inputs, Bin::Sub)
}
pub(super) fn mul(imp: &mut Importer, ctx: &NodeCtx, inputs: &[Option<Val>]) -> Result<Vec<Val>, ImportError> {
    binary(imp, ctx, inputs, Bin::Mul)
}
pub(super) fn div(imp: &mut Importer, ctx: &NodeCtx, inputs: &[Option<Val>]) -> Result<Vec<Val>, ImportError> {
    binary(imp, ctx, inputs, Bin::Div)
}

pub(super) fn pow(imp: &mut Importer, ctx: &NodeCtx, inputs: &[Option<Val>]) -> Result<Vec<Val>, ImportError> {
    let x = required(ctx, inputs, 0)?.clone();
    let e = constant(ctx, inputs, 1, "the exponent")?.to_f32();
    if let Val::Const(c) = &x {
        let b = c.to_f32();
        return Ok(vec![Val::Const(CTensor::F32(broadcast_f32(ctx, &b, &e, f32::powf)?))]);
    }
    let first = e.iter().next().copied();
    match first {
        Some(p) if e.iter().all(|&v| v == p) && e.len() <= imp.shape_of(&x).iter().product::<usize>() => match p {
            2.0 => Ok(vec![imp.apply(ctx, None, Op::Square, &[x], &[])?]),
            1.0 => Ok(vec![x]),
            _ => Err(ctx.err(format!("exponent {p} is not supported (only 2, a square activation)"))),
        },
        _ => Err(ctx.err("only a single constant exponent 2 is supported")),
    }
}

fn unary(imp: &mut Importer, ctx: &NodeCtx, inputs: &[Option<Val>], op: Op) -> Result<Vec<Val>, ImportError> {
    let x = required(ctx, inputs, 0)?.clone();
    Ok(vec![imp.apply(ctx, None, op, &[x], &[])?])
}

pub(super) fn relu(imp: &mut Importer, ctx: &NodeCtx, inputs: &[Option<Val>]) -> Result<Vec<Val>, ImportError> {
    unary(imp, ctx, inputs, Op::Relu)
}
pub(super) fn sigmoid(imp: &mut Importer, ctx: &NodeCtx, inputs: &[Option<Val>]) -> Result<Vec<Val>, ImportError> {
    unary(imp, ctx, inputs, Op::Sigmoid)
}
pub(super) fn tanh(imp: &mut Importer, ctx: &NodeCtx, inputs: &[Option<Val>]) -> Result<Vec<Val>, ImportError> {
    unary(imp, ctx, inputs, Op::Tanh)
}
pub(super) fn leaky_relu(imp: &mut Importer, ctx: &NodeCtx, inputs: &[Option<Val>]) -> Result<Vec<Val>, ImportError> {
    let alpha = ctx.float_or("alpha", 0.01)?;
    unary(imp, ctx, inputs, Op::LeakyRelu { alpha })
}
pub(super) fn hard_sigmoid(imp: &mut Importer, ctx: &NodeCtx, inputs: &[Option<Val>]) -> Result<Vec<Val>, ImportError> {
    let alpha = ctx.float_or("alpha", 0.2)?;
    let beta = ctx.float_or("beta", 0.5)?;
    unary(imp, ctx, inputs, Op::HardSigmoid { alpha, beta })
}

pub(super) fn prelu(imp: &mut Importer, ctx: &NodeCtx, inputs: &[Option<Val>]) -> Result<Vec<Val>, ImportError> {
    let x = required(ctx, inputs, 0)?.clone();
    let slope = constant(ctx, inputs, 1, "the slope")?.to_f32();
    let xs = imp.shape_of(&x);
    // Older exports give a per-channel slope [C] for an NCHW input; ONNX broadcasts it
    // from the right, so align it with axis 1 when that is what it means.
    let slope = if slope.ndim() == 1 && xs.len() > 2 && slope.len() == xs[1] && slope.len() != xs[xs.len() - 1] {
        let mut s = vec![slope.len()];
        s.extend(std::iter::repeat_n(1, xs.len() - 2));
        slope.into_shape_with_order(IxDyn(&s)).expect("same element count")
    } else {
        slope
    };
    Ok(vec![imp.apply(ctx, None, Op::PRelu(slope), &[x], &[])?])
}

pub(super) fn clip(imp: &mut Importer, ctx: &NodeCtx, inputs: &[Option<Val>]) -> Result<Vec<Val>, ImportError> {
    let bound = |i: usize, name: &str| -> Result<Option<f32>, ImportError> {
        if ctx.opset < 11 {
            return ctx.float(name);
        }
        match inputs.get(i).and_then(|v| v.as_ref()) {
            None => Ok(None),
            Some(_) => {
                let c = constant(ctx, inputs, i, name)?.to_f32();
                if c.len() != 1 {
                    return Err(ctx.err(format!("'{name}' must be a scalar, got shape {:?}", c.shape())));
                }
                Ok(c.iter().next().copied())
            }
        }
    };
    let (min, max) = (bound(1, "min")?, bound(2, "max")?);
    // Exporters write the float limits for "no bound".
    let min = min.filter(|v| *v > f32::MIN);
    let max = max.filter(|v| *v < f32::MAX);
    unary(imp, ctx, inputs, Op::Clip { min, max })
}

pub(super) fn batch_norm(imp: &mut Importer, ctx: &NodeCtx, inputs: &[Option<Val>]) -> Result<Vec<Val>, ImportError> {
    let x = required(ctx, inputs, 0)?.clone();
    ctx.expect_int("training_mode", 0, "inference")?;
    ctx.expect_int("spatial", 1, "per-channel statistics")?;
    let mut p = Vec::new();
    for (i, what) in [(1, "scale"), (2, "bias"), (3, "mean"), (4, "var")] {
        let c = constant(ctx, inputs, i, what)?.to_f32();
        if c.ndim() != 1 {
            return Err(ctx.err(format!("'{what}' must be 1-D, got shape {:?}", c.shape())));
        }
        p.push(Array1::from_iter(c.iter().copied()));
    }
    let epsilon = ctx.float_or("epsilon", 1e-5)?;
    let (var, mean, bias, scale) = (p.pop().unwrap(), p.pop().unwrap(), p.pop().unwrap(), p.pop().unwrap());
    let op = Op::BatchNorm { scale, bias, mean, var, epsilon };
    Ok(vec![imp.apply(ctx, None, op, &[x], &[])?])
}

fn softmax_like(imp: &mut Importer, ctx: &NodeCtx, inputs: &[Option<Val>], log: bool) -> Result<Vec<Val>, ImportError> {
    let x = required(ctx, inputs, 0)?.clone();
    let shape = imp.shape_of(&x);
    let rank = shape.len();
    let default = if ctx.opset < 13 { 1 } else { -1 };
    let a = axis(ctx, ctx.int_or("axis", default)?, rank, "axis")?;
    let make = |axis| if log { Op::LogSoftmax { axis } } else { Op::Softmax { axis } };
    if ctx.opset >= 13 || a == rank - 1 {
        return Ok(vec![imp.apply(ctx, None, make(a), &[x], &[])?]);
    }
    // Before opset 13 the input is coerced to 2-D [prod(..axis), prod(axis..)].
    let flat = [shape[..a].iter().product::<usize>(), shape[a..].iter().product::<usize>()];
    let r = imp.apply(ctx, Some("flatten"), Op::Reshape, &[x], &flat)?;
    let s = imp.apply(ctx, Some("softmax2d"), make(1), &[r], &[])?;
    Ok(vec![imp.apply(ctx, None, Op::Reshape, &[s], &shape)?])
}

pub(super) fn softmax(imp: &mut Importer, ctx: &NodeCtx, inputs: &[Option<Val>]) -> Result<Vec<Val>, ImportError> {
    softmax_like(imp, ctx, inputs, false)
}
pub(super) fn log_softmax(imp: &mut Importer, ctx: &NodeCtx, inputs: &[Option<Val>]) -> Result<Vec<Val>, ImportError> {
    softmax_like(imp, ctx, inputs, true)
}
