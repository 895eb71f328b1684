//! Shape manipulation and the constant-only ops that exporters use to compute shapes.

use fhec_ir::nn::Op;
use ndarray::{ArrayD, Axis, IxDyn, Slice};

use super::super::tensor::{CTensor, IntType};
use super::{ImportError, Importer, NodeCtx, Val, axis, constant, required};

fn ints_of(ctx: &NodeCtx, c: &CTensor, what: &str) -> Result<Vec<i64>, ImportError> {
    c.as_int()
        .map(|a| a.iter().copied().collect())
        .ok_or_else(|| ctx.err(format!("{what} must be an integer tensor, got {}", c.describe())))
}

fn i64s(v: Vec<i64>) -> Val {
    let n = v.len();
    Val::Const(CTensor::Int(ArrayD::from_shape_vec(IxDyn(&[n]), v).expect("1-D"), IntType::I64))
}

/// Reshapes a value to a static shape (emitting a `Reshape` node for computed values).
fn reshape_to(imp: &mut Importer, ctx: &NodeCtx, x: Val, target: Vec<usize>) -> Result<Val, ImportError> {
    if let (real, Some(g)) = imp.unquant(&x) {
        let r = reshape_to(imp, ctx, real, target)?;
        return Ok(imp.requant(r, Some(g)));
    }
    let src = imp.shape_of(&x);
    if src == target {
        return Ok(x);
    }
    let numel = |s: &[usize]| s.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let (a, b) = (numel(&src), numel(&target));
    if a != b {
        let count = |n: Option<usize>| n.map_or("too many".to_string(), |n| n.to_string());
        return Err(ctx.err(format!(
            "cannot reshape {src:?} ({} elements) to {target:?} ({} elements)",
            count(a),
            count(b)
        )));
    }
    match x {
        Val::Const(CTensor::F32(t)) => Ok(Val::Const(CTensor::F32(reshape_array(t, &target)))),
        Val::Const(CTensor::Int(t, ty)) => Ok(Val::Const(CTensor::Int(reshape_array(t, &target), ty))),
        node => imp.apply(ctx, None, Op::Reshape, &[node], &target),
    }
}

fn reshape_array<T: Clone>(t: ArrayD<T>, target: &[usize]) -> ArrayD<T> {
    let v: Vec<T> = t.iter().cloned().collect();
    ArrayD::from_shape_vec(IxDyn(target), v).expect("element count checked")
}

pub(super) fn identity(_: &mut Importer, ctx: &NodeCtx, inputs: &[Option<Val>]) -> Result<Vec<Val>, ImportError> {
    Ok(vec![required(ctx, inputs, 0)?.clone()])
}

pub(super) fn reshape(imp: &mut Importer, ctx: &NodeCtx, inputs: &[Option<Val>]) -> Result<Vec<Val>, ImportError> {
    let x = required(ctx, inputs, 0)?.clone();
    let spec = if ctx.opset < 5 {
        ctx.ints("shape")?.ok_or_else(|| ctx.err("attribute 'shape' is required"))?
    } else {
        ints_of(ctx, constant(ctx, inputs, 1, "the target shape")?, "the target shape")?
    };
    let allow_zero = ctx.int_or("allowzero", 0)? != 0;
    let src = imp.shape_of(&x);
    let total: usize = src.iter().product();
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &d) in spec.iter().enumerate() {
        match d {
            0 if !allow_zero => {
                out.push(*src.get(i).ok_or_else(|| {
                    ctx.err(format!("shape {spec:?} copies dimension {i} of {src:?}, which has none"))
                })?)
            }
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1)
            }
            d if d >= 0 => out.push(d as usize),
            _ => return Err(ctx.err(format!("target shape {spec:?} is invalid"))),
        }
    }
    if let Some(i) = infer {
        let known = out.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).unwrap_or(0);
        if known == 0 || !total.is_multiple_of(known) {
            return Err(ctx.err(format!("cannot reshape {src:?} to {spec:?}")));
        }
        out[i] = total / known;
    }
    Ok(vec![reshape_to(imp, ctx, x, out)?])
}

pub(super) fn flatten(imp: &mut Importer, ctx: &NodeCtx, inputs: &[Option<Val>]) -> Result<Vec<Val>, ImportError> {
    let x = required(ctx, inputs, 0)?.clone();
    let s = imp.shape_of(&x);
    let a = ctx.int_or("axis", 1)?;
    let a = if a == s.len() as i64 { s.len() } else { axis(ctx, a, s.len(), "axis")? };
    let target = vec![s[..a].iter().product(), s[a..].iter().product()];
    Ok(vec![reshape_to(imp, ctx, x, target)?])
}

fn axes_of(ctx: &NodeCtx, inputs: &[Option<Val>]) -> Result<Option<Vec<i64>>, ImportError> {
    if ctx.opset < 13 {
        return ctx.ints("axes");
    }
    match inputs.get(1).and_then(|v| v.as_ref()) {
        None => Ok(None),
        Some(_) => Ok(Some(ints_of(ctx, constant(ctx, inputs, 1, "axes")?, "axes")?)),
    }
}

pub(super) fn squeeze(imp: &mut Importer, ctx: &NodeCtx, inputs: &[Option<Val>]) -> Result<Vec<Val>, ImportError> {
    let x = required(ctx, inputs, 0)?.clone();
    let s = imp.shape_of(&x);
    let axes = match axes_of(ctx, inputs)? {
        None => (0..s.len()).filter(|&i| s[i] == 1).collect::<Vec<_>>(),
        Some(a) => a.iter().map(|&v| axis(ctx, v, s.len(), "axis")).collect::<Result<_, _>>()?,
    };
    for &a in &axes {
        if s[a] != 1 {
            return Err(ctx.err(format!("cannot squeeze axis {a} of size {} in {s:?}", s[a])));
        }
    }
    let target = s.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &d)| d).collect();
    Ok(vec![reshape_to(imp, ctx, x, target)?])
}

pub(super) fn unsqueeze(imp: &mut Importer, ctx: &NodeCtx, inputs: &[Option<Val>]) -> Result<Vec<Val>, ImportError> {
    let x = required(ctx, inputs, 0)?.clone();
    let s = imp.shape_of(&x);
    let axes = axes_of(ctx, inputs)?.ok_or_else(|| ctx.err("axes are required"))?;
    let rank = s.len() + axes.len();
    let mut axes: Vec<usize> = axes.iter().map(|&v| axis(ctx, v, rank, "axis")).collect::<Result<_, _>>()?;
    axes.sort_unstable();
    axes.dedup();
    let mut it = s.iter();
    let target = (0..rank).map(|i| if axes.contains(&i) { 1 } else { *it.next().unwrap_or(&1) }).collect();
    Ok(vec![reshape_to(imp, ctx, x, target)?])
}

pub(super) fn transpose(imp: &mut Importer, ctx: &NodeCtx, inputs: &[Option<Val>]) -> Result<Vec<Val>, ImportError> {
    let x = required(ctx, inputs, 0)?.clone();
    let rank = imp.shape_of(&x).len();
    let perm: Vec<usize> = match ctx.ints("perm")? {
        None => (0..rank).rev().collect(),
        Some(p) => p.iter().map(|&v| axis(ctx, v, rank, "perm entry")).collect::<Result<_, _>>()?,
    };
    let (x, g) = imp.unquant(&x);
    let out = match x {
        Val::Const(CTensor::Int(t, ty)) => {
            if perm.len() != rank {
                return Err(ctx.err(format!("perm {perm:?} does not fit rank {rank}")));
            }
            Val::Const(CTensor::Int(t.permuted_axes(IxDyn(&perm)).as_standard_layout().into_owned(), ty))
        }
        v => imp.apply(ctx, None, Op::Transpose { perm }, &[v], &[])?,
    };
    Ok(vec![imp.requant(out, g)])
}

pub(super) fn shape(imp: &mut Importer, ctx: &NodeCtx, inputs: &[Option<Val>]) -> Result<Vec<Val>, ImportError> {
    let x = required(ctx, inputs, 0)?;
    let s = imp.shape_of(x);
    let r = s.len() as i64;
    let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let start = clampi(ctx.int_or("start", 0)?);
    let end = clampi(ctx.int_or("end", r)?);
    let v: Vec<i64> = s[start..end.max(start)].iter().map(|&d| d as i64).collect();
    Ok(vec![i64s(v)])
}

pub(super) fn constant_op(_: &mut Importer, ctx: &NodeCtx, _: &[Option<Val>]) -> Result<Vec<Val>, ImportError> {
    let scalar_f = |v: f32| CTensor::F32(ArrayD::from_elem(IxDyn(&[]), v));
    let t = if let Some(t) = ctx.tensor("value")? {
        t
    } else if let Some(v) = ctx.float("value_float")? {
        scalar_f(v)
    } else if let Some(v) = ctx.floats("value_floats")? {
        CTensor::F32(ArrayD::from_shape_vec(IxDyn(&[v.len()]), v).expect("1-D"))
    } else if let Some(v) = ctx.int("value_int")? {
        CTensor::Int(ArrayD::from_elem(IxDyn(&[]), v), IntType::I64)
    } else if let Some(v) = ctx.ints("value_ints")? {
        let n = v.len();
        CTensor::Int(ArrayD::from_shape_vec(IxDyn(&[n]), v).expect("1-D"), IntType::I64)
    } else {
        return Err(ctx.err("no supported value attribute (value, value_float(s), value_int(s))"));
    };
    Ok(vec![Val::Const(t)])
}

pub(super) fn constant_of_shape(
    _: &mut Importer,
    ctx: &NodeCtx,
    inputs: &[Option<Val>],
) -> Result<Vec<Val>, ImportError> {
    let dims = ints_of(ctx, constant(ctx, inputs, 0, "the shape")?, "the shape")?;
    if dims.iter().any(|&d| d < 0) || dims.iter().map(|&d| d as usize).product::<usize>() > 1 << 24 {
        return Err(ctx.err(format!("shape {dims:?} is invalid or too large")));
    }
    let shape: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
    let value = ctx.tensor("value")?.unwrap_or(CTensor::F32(ArrayD::from_elem(IxDyn(&[1]), 0.0)));
    Ok(vec![Val::Const(match value {
        CTensor::F32(v) => CTensor::F32(ArrayD::from_elem(IxDyn(&shape), v.iter().next().copied().unwrap_or(0.0))),
        CTensor::Int(v, t) => CTensor::Int(ArrayD::from_elem(IxDyn(&shape), v.iter().next().copied().unwrap_or(0)), t),
    })])
}

pub(super) fn cast(_: &mut Importer, ctx: &NodeCtx, inputs: &[Option<Val>]) -> Result<Vec<Val>, ImportError> {
    let x = required(ctx, inputs, 0)?.clone();
    let to = ctx.int("to")?.ok_or_else(|| ctx.err("attribute 'to' is required"))? as i32;
    let is_float = matches!(to, 1 | 10 | 11);
    let out = match x {
        Val::Node(_) if is_float => x,
        Val::Node(_) | Val::Quant(..) => {
            return Err(ctx.err(format!("casting a computed value to ONNX type {to} is not supported (only to float)")));
        }
        Val::Const(c) if is_float => Val::Const(CTensor::F32(c.to_f32())),
        Val::Const(c) => {
            let ty = [
                IntType::Bool,
                IntType::U8,
                IntType::I8,
                IntType::U16,
                IntType::I16,
                IntType::I32,
                IntType::U32,
                IntType::I64,
                IntType::U64,
            ]
            .into_iter()
            .find(|t| t.onnx_code() == to)
            .ok_or_else(|| ctx.err(format!("casting to ONNX type {to} is not supported")))?;
            let v = match c {
                CTensor::F32(a) => a.mapv(|v| v as i64),
                CTensor::Int(a, _) => a,
            };
            let v = if ty == IntType::Bool { v.mapv(|x| (x != 0) as i64) } else { v };
            Val::Const(CTensor::Int(v, ty))
        }
    };
    Ok(vec![out])
}

pub(super) fn gather(_: &mut Importer, ctx: &NodeCtx, inputs: &[Option<Val>]) -> Result<Vec<Val>, ImportError> {
    let data = constant(ctx, inputs, 0, "the data")?;
    let idx = ints_of(ctx, constant(ctx, inputs, 1, "the indices")?, "the indices")?;
    let idx_shape = constant(ctx, inputs, 1, "the indices")?.shape().to_vec();
    let s = data.shape().to_vec();
    let a = axis(ctx, ctx.int_or("axis", 0)?, s.len(), "axis")?;
    let n = s[a] as i64;
    let mut pos = Vec::with_capacity(idx.len());
    for &i in &idx {
        let j = if i < 0 { i + n } else { i };
        if j < 0 || j >= n {
            return Err(ctx.err(format!("index {i} out of range for axis {a} of size {n}")));
        }
        pos.push(j as usize);
    }
    let mut target: Vec<usize> = s[..a].to_vec();
    target.extend(&idx_shape);
    target.extend(&s[a + 1..]);
    Ok(vec![Val::Const(match data {
        CTensor::F32(t) => CTensor::F32(reshape_array(t.select(Axis(a), &pos), &target)),
        CTensor::Int(t, ty) => CTensor::Int(reshape_array(t.select(Axis(a), &pos), &target), *ty),
    })])
}

pub(super) fn concat(imp: &mut Importer, ctx: &NodeCtx, inputs: &[Option<Val>]) -> Result<Vec<Val>, ImportError> {
    let mut parts = Vec::new();
    for i in 0..inputs.len() {
        parts.push(constant(ctx, inputs, i, "every input")?.clone());
    }
    let rank = parts.first().map_or(0, |p| p.shape().len());
    if let Some(p) = parts.iter().find(|p| p.shape().len() != rank) {
        return Err(ctx.err(format!("inputs of ranks {rank} and {} cannot be concatenated", p.shape().len())));
    }
    let a = axis(ctx, ctx.int("axis")?.ok_or_else(|| ctx.err("attribute 'axis' is required"))?, rank, "axis")?;
    let _ = imp;
    let out = if parts.iter().all(|p| matches!(p, CTensor::Int(..))) {
        let ty = match &parts[0] {
            CTensor::Int(_, t) => *t,
            CTensor::F32(_) => unreachable!(),
        };
        let views: Vec<_> = parts.iter().map(|p| p.as_int().expect("checked").view()).collect();
        CTensor::Int(ndarray::concatenate(Axis(a), &views).map_err(|e| ctx.err(e.to_string()))?, ty)
    } else {
        let owned: Vec<ArrayD<f32>> = parts.iter().map(|p| p.to_f32()).collect();
        let views: Vec<_> = owned.iter().map(|p| p.view()).collect();
        CTensor::F32(ndarray::concatenate(Axis(a), &views).map_err(|e| ctx.err(e.to_string()))?)
    };
    Ok(vec![Val::Const(out)])
}

pub(super) fn slice(_: &mut Importer, ctx: &NodeCtx, inputs: &[Option<Val>]) -> Result<Vec<Val>, ImportError> {
    let data = constant(ctx, inputs, 0, "the data")?;
    let s = data.shape().to_vec();
    let get = |i: usize, attr: &str| -> Result<Option<Vec<i64>>, ImportError> {
        if ctx.opset < 10 {
            return ctx.ints(attr);
        }
        match inputs.get(i).and_then(|v| v.as_ref()) {
            None => Ok(None),
            Some(_) => Ok(Some(ints_of(ctx, constant(ctx, inputs, i, attr)?, attr)?)),
        }
    };
    let starts = get(1, "starts")?.ok_or_else(|| ctx.err("'starts' is required"))?;
    let ends = get(2, "ends")?.ok_or_else(|| ctx.err("'ends' is required"))?;
    let axes = get(3, "axes")?.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = if ctx.opset < 10 { None } else { get(4, "steps")? }.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err(ctx.err("starts, ends, axes and steps differ in length"));
    }
    let mut f = data.clone();
    for k in 0..starts.len() {
        let a = axis(ctx, axes[k], s.len(), "axis")?;
        if steps[k] < 1 {
            return Err(ctx.err(format!("step {} is not supported (positive steps only)", steps[k])));
        }
        let n = s[a] as i64;
        let norm = |v: i64| (if v < 0 { v + n } else { v }).clamp(0, n);
        let (b, e) = (norm(starts[k]), norm(ends[k]).max(norm(starts[k])));
        let sl = Slice::new(b as isize, Some(e as isize), steps[k] as isize);
        f = match f {
            CTensor::F32(t) => CTensor::F32(t.slice_axis(Axis(a), sl).to_owned()),
            CTensor::Int(t, ty) => CTensor::Int(t.slice_axis(Axis(a), sl).to_owned(), ty),
        };
    }
    Ok(vec![Val::Const(f)])
}
