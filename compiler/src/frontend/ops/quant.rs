//! Already-quantized models: QuantizeLinear / DequantizeLinear (QDQ), QLinearConv,
//! QLinearMatMul, ConvInteger, MatMulInteger, and onnxruntime's `com.microsoft::QLinearAdd`.
//!
//! The NN IR is a float IR; an integer tensor `q` of the model is represented by the real
//! value it stands for, `(q - zero_point) * scale`, computed by a `FakeQuant` node, and the
//! import keeps the grid beside it ([`Val::Quant`]). Integer weights become the real
//! weights they encode. So the float interpreter reproduces the model's integer semantics
//! (up to float rounding), and the quantizer recognises the grids and keeps them.

use fhec_ir::nn::{Grid, Op};
use ndarray::{ArrayD, IxDyn};

use super::super::tensor::{CTensor, IntType};
use super::{ImportError, Importer, NodeCtx, Val, constant, conv, optional_constant, required};

/// Integer range of an ONNX integer type used for quantized tensors.
fn qrange(ctx: &NodeCtx, t: IntType) -> Result<(i64, i64), ImportError> {
    match t {
        IntType::U8 => Ok((0, 255)),
        IntType::I8 => Ok((-128, 127)),
        IntType::U16 => Ok((0, 65535)),
        IntType::I16 => Ok((-32768, 32767)),
        IntType::I32 => Ok((i32::MIN as i64, i32::MAX as i64)),
        other => Err(ctx.err(format!("quantized type {other:?} is not supported (uint8, int8, uint16, int16)"))),
    }
}

/// A per-tensor grid from scale and zero-point inputs.
fn grid(ctx: &NodeCtx, inputs: &[Option<Val>], si: usize, zi: usize) -> Result<Grid, ImportError> {
    let s = constant(ctx, inputs, si, "the scale")?.to_f32();
    if s.len() != 1 {
        return Err(ctx.err(format!(
            "a per-axis scale of shape {:?} on a computed tensor is not supported (per-tensor only)",
            s.shape()
        )));
    }
    let scale = s.iter().next().copied().unwrap_or(0.0);
    if !(scale.is_finite() && scale > 0.0) {
        return Err(ctx.err(format!("scale {scale} must be positive and finite")));
    }
    let (zero_point, ty) = match inputs.get(zi).and_then(|v| v.as_ref()) {
        None => (0, IntType::U8),
        Some(_) => match constant(ctx, inputs, zi, "the zero point")? {
            CTensor::Int(z, t) if z.len() == 1 => (z.iter().next().copied().unwrap_or(0), *t),
            other => return Err(ctx.err(format!("zero point {} must be one integer", other.describe()))),
        },
    };
    let (qmin, qmax) = qrange(ctx, ty)?;
    Ok(Grid { scale, zero_point, qmin, qmax })
}

/// Reshapes a per-tensor (one value) or per-axis (1-D along `axis`) parameter so that it
/// broadcasts against a tensor of shape `shape`.
fn along(ctx: &NodeCtx, v: &ArrayD<f32>, axis: usize, shape: &[usize], what: &str) -> Result<ArrayD<f32>, ImportError> {
    if v.len() == 1 {
        return Ok(ArrayD::from_elem(IxDyn(&[]), v.iter().next().copied().unwrap_or(0.0)));
    }
    if v.ndim() != 1 || axis >= shape.len() || v.len() != shape[axis] {
        return Err(ctx.err(format!("{what} of shape {:?} does not match axis {axis} of {shape:?}", v.shape())));
    }
    let mut s = vec![1; shape.len()];
    s[axis] = v.len();
    Ok(v.clone().into_shape_with_order(IxDyn(&s)).expect("same size"))
}

/// Real value of a constant integer tensor: `(q - zp) * scale`, scale and zero point per
/// tensor or per `axis`.
fn dequant_const(
    ctx: &NodeCtx,
    q: &CTensor,
    scale: &ArrayD<f32>,
    zp: Option<&CTensor>,
    axis: usize,
) -> Result<ArrayD<f32>, ImportError> {
    let q = q.as_int().ok_or_else(|| ctx.err(format!("expected an integer tensor, got {}", q.describe())))?;
    let zp = zp.map(|z| z.to_f32()).unwrap_or_else(|| ArrayD::zeros(IxDyn(&[])));
    let s = along(ctx, scale, axis, q.shape(), "scale")?;
    let z = along(ctx, &zp, axis, q.shape(), "zero point")?;
    Ok((&q.mapv(|v| v as f32) - &z) * &s)
}

impl Importer {
    /// Splits a possibly quantized value into its real value and grid.
    pub(crate) fn unquant(&self, v: &Val) -> (Val, Option<Grid>) {
        match v {
            Val::Quant(id, g) => (Val::Node(*id), Some(*g)),
            other => (other.clone(), None),
        }
    }

    /// Re-attaches a grid to a real value produced by a grid-preserving op.
    pub(crate) fn requant(&self, v: Val, g: Option<Grid>) -> Val {
        match (v, g) {
            (Val::Node(id), Some(g)) => Val::Quant(id, g),
            (v, _) => v,
        }
    }

    /// Real value of a quantized input of a QLinear op, given that op's own scale and zero
    /// point for it.
    fn real_input(&mut self, ctx: &NodeCtx, v: &Val, g: Grid) -> Result<Val, ImportError> {
        match v {
            Val::Quant(id, have) if have.scale == g.scale && have.zero_point == g.zero_point => Ok(Val::Node(*id)),
            Val::Quant(id, have) => {
                // q = real/have.scale + have.zp; wanted (q - g.zp) * g.scale.
                let k = g.scale / have.scale;
                let m = self.apply(
                    ctx,
                    Some("rescale"),
                    Op::MulConst(ArrayD::from_elem(IxDyn(&[]), k)),
                    &[Val::Node(*id)],
                    &[],
                )?;
                let off = (have.zero_point - g.zero_point) as f32 * g.scale;
                self.apply(ctx, Some("reoffset"), Op::AddConst(ArrayD::from_elem(IxDyn(&[]), off)), &[m], &[])
            }
            Val::Const(c) => Ok(Val::Const(CTensor::F32(c.to_f32().mapv(|q| (q - g.zero_point as f32) * g.scale)))),
            Val::Node(_) => Err(ctx.err("expects a quantized (integer) input, but it is a float tensor")),
        }
    }

    /// Applies `FakeQuant(g)` to a real value and returns the quantized value.
    fn quantize_to(&mut self, ctx: &NodeCtx, real: Val, g: Grid) -> Result<Val, ImportError> {
        match real {
            Val::Const(c) => Ok(Val::Const(CTensor::Int(c.to_f32().mapv(|x| g.quantize(x)), IntType::I64))),
            v => match self.apply(ctx, Some("quant"), Op::FakeQuant(g), &[v], &[])? {
                Val::Node(id) => Ok(Val::Quant(id, g)),
                other => Ok(other),
            },
        }
    }
}

pub(super) fn quantize_linear(
    imp: &mut Importer,
    ctx: &NodeCtx,
    inputs: &[Option<Val>],
) -> Result<Vec<Val>, ImportError> {
    let x = required(ctx, inputs, 0)?.clone();
    if let Val::Const(c) = &x {
        // Weights quantized in the file: keep the integers.
        let s = constant(ctx, inputs, 1, "the scale")?.to_f32();
        let zp = optional_constant(ctx, inputs, 2, "the zero point")?;
        let ty = match zp {
            Some(CTensor::Int(_, t)) => *t,
            _ => IntType::U8,
        };
        let (lo, hi) = qrange(ctx, ty)?;
        let real = c.to_f32();
        let axis = if real.ndim() == 0 { 0 } else { super::axis(ctx, ctx.int_or("axis", 1)?, real.ndim(), "axis")? };
        let sb = along(ctx, &s, axis, real.shape(), "scale")?;
        let zb = along(
            ctx,
            &zp.map(|z| z.to_f32()).unwrap_or_else(|| ArrayD::zeros(IxDyn(&[]))),
            axis,
            real.shape(),
            "zero point",
        )?;
        let q = ((&real / &sb).mapv(|v| v.round_ties_even()) + &zb).mapv(|v| (v as i64).clamp(lo, hi));
        return Ok(vec![Val::Const(CTensor::Int(q, ty))]);
    }
    let g = grid(ctx, inputs, 1, 2)?;
    let (real, _) = imp.unquant(&x);
    Ok(vec![imp.quantize_to(ctx, real, g)?])
}

pub(super) fn dequantize_linear(
    imp: &mut Importer,
    ctx: &NodeCtx,
    inputs: &[Option<Val>],
) -> Result<Vec<Val>, ImportError> {
    let x = required(ctx, inputs, 0)?.clone();
    if let Val::Const(c) = &x {
        let s = constant(ctx, inputs, 1, "the scale")?.to_f32();
        let zp = optional_constant(ctx, inputs, 2, "the zero point")?;
        let a = ctx.int_or("axis", 1)?;
        let axis = if c.shape().is_empty() { 0 } else { super::axis(ctx, a, c.shape().len(), "axis")? };
        return Ok(vec![Val::Const(CTensor::F32(dequant_const(ctx, c, &s, zp, axis)?))]);
    }
    let g = grid(ctx, inputs, 1, 2)?;
    Ok(vec![imp.real_input(ctx, &x, g)?])
}

/// Real weights of a QLinear op: integers with per-tensor or per-output-channel scale.
fn real_weights(ctx: &NodeCtx, inputs: &[Option<Val>], wi: usize, axis: usize) -> Result<ArrayD<f32>, ImportError> {
    let w = constant(ctx, inputs, wi, "the weight")?;
    let s = constant(ctx, inputs, wi + 1, "the weight scale")?.to_f32();
    let zp = optional_constant(ctx, inputs, wi + 2, "the weight zero point")?;
    dequant_const(ctx, w, &s, zp, axis)
}

pub(super) fn qlinear_conv(imp: &mut Importer, ctx: &NodeCtx, inputs: &[Option<Val>]) -> Result<Vec<Val>, ImportError> {
    let xg = grid(ctx, inputs, 1, 2)?;
    let x = imp.real_input(ctx, required(ctx, inputs, 0)?, xg)?;
    let w = real_weights(ctx, inputs, 3, 0)?;
    let yg = grid(ctx, inputs, 6, 7)?;
    let b = match inputs.get(8).and_then(|v| v.as_ref()) {
        None => None,
        Some(_) => {
            // int32 bias with scale x_scale * w_scale[c], zero point 0
            let bq = constant(ctx, inputs, 8, "the bias")?;
            let ws = constant(ctx, inputs, 4, "the weight scale")?.to_f32().mapv(|v| v * xg.scale);
            Some(Val::Const(CTensor::F32(dequant_const(ctx, bq, &ws, None, 0)?)))
        }
    };
    let mut args = vec![Some(x), Some(Val::Const(CTensor::F32(w)))];
    if let Some(b) = b {
        args.push(Some(b));
    }
    let y = conv::conv(imp, ctx, &args)?.remove(0);
    Ok(vec![imp.quantize_to(ctx, y, yg)?])
}

pub(super) fn qlinear_matmul(
    imp: &mut Importer,
    ctx: &NodeCtx,
    inputs: &[Option<Val>],
) -> Result<Vec<Val>, ImportError> {
    let ag = grid(ctx, inputs, 1, 2)?;
    let a = imp.real_input(ctx, required(ctx, inputs, 0)?, ag)?;
    let bw = constant(ctx, inputs, 3, "B (the weight)")?;
    let axis = bw.shape().len().saturating_sub(1);
    let b = real_weights(ctx, inputs, 3, axis)?;
    let yg = grid(ctx, inputs, 6, 7)?;
    let y = super::linear::matmul(imp, ctx, &[Some(a), Some(Val::Const(CTensor::F32(b)))])?.remove(0);
    Ok(vec![imp.quantize_to(ctx, y, yg)?])
}

/// `ConvInteger` / `MatMulInteger`: integer accumulation of `(x - x_zp) * (w - w_zp)`; the
/// result is an int32 tensor, represented by its (integer-valued) real value.
fn integer_op(
    imp: &mut Importer,
    ctx: &NodeCtx,
    inputs: &[Option<Val>],
    is_conv: bool,
) -> Result<Vec<Val>, ImportError> {
    let x = required(ctx, inputs, 0)?.clone();
    let (xi, wi) = (2, 3);
    let x_zp = match inputs.get(xi).and_then(|v| v.as_ref()) {
        None => 0,
        Some(_) => match constant(ctx, inputs, xi, "the input zero point")? {
            CTensor::Int(z, _) if z.len() == 1 => z.iter().next().copied().unwrap_or(0),
            other => return Err(ctx.err(format!("input zero point {} must be one integer", other.describe()))),
        },
    };
    // The integers x - x_zp as a real value: q = real / scale + zp.
    let xr = match &x {
        Val::Quant(id, g) => {
            let m = imp.apply(
                ctx,
                Some("to_int"),
                Op::MulConst(ArrayD::from_elem(IxDyn(&[]), 1.0 / g.scale)),
                &[Val::Node(*id)],
                &[],
            )?;
            let off = (g.zero_point - x_zp) as f32;
            if off == 0.0 {
                m
            } else {
                imp.apply(ctx, Some("zero_point"), Op::AddConst(ArrayD::from_elem(IxDyn(&[]), off)), &[m], &[])?
            }
        }
        Val::Const(c) => Val::Const(CTensor::F32(c.to_f32().mapv(|v| v - x_zp as f32))),
        Val::Node(_) => return Err(ctx.err("expects an integer input produced by QuantizeLinear")),
    };
    let w = constant(ctx, inputs, 1, "the weight")?;
    let w_zp = optional_constant(ctx, inputs, wi, "the weight zero point")?;
    let axis = if is_conv { 0 } else { w.shape().len().saturating_sub(1) };
    let wr = dequant_const(ctx, w, &ArrayD::from_elem(IxDyn(&[]), 1.0), w_zp, axis)?;
    let args = [Some(xr), Some(Val::Const(CTensor::F32(wr)))];
    if is_conv { conv::conv(imp, ctx, &args) } else { super::linear::matmul(imp, ctx, &args) }
}

pub(super) fn conv_integer(imp: &mut Importer, ctx: &NodeCtx, inputs: &[Option<Val>]) -> Result<Vec<Val>, ImportError> {
    integer_op(imp, ctx, inputs, true)
}

pub(super) fn matmul_integer(
    imp: &mut Importer,
    ctx: &NodeCtx,
    inputs: &[Option<Val>],
) -> Result<Vec<Val>, ImportError> {
    integer_op(imp, ctx, inputs, false)
}

/// `com.microsoft::QLinearAdd(A, A_scale, A_zp, B, B_scale, B_zp, C_scale, C_zp)`.
pub(super) fn qlinear_add(imp: &mut Importer, ctx: &NodeCtx, inputs: &[Option<Val>]) -> Result<Vec<Val>, ImportError> {
    let ag = grid(ctx, inputs, 1, 2)?;
    let bg = grid(ctx, inputs, 4, 5)?;
    let cg = grid(ctx, inputs, 6, 7)?;
    let a = imp.real_input(ctx, required(ctx, inputs, 0)?, ag)?;
    let b = imp.real_input(ctx, required(ctx, inputs, 3)?, bg)?;
    let sum = super::elementwise::add(imp, ctx, &[Some(a), Some(b)])?.remove(0);
    Ok(vec![imp.quantize_to(ctx, sum, cg)?])
}
