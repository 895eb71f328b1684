//! Conv and the pooling ops.

use fhec_ir::nn::{Conv, Op, Pool};
use ndarray::{Array1, Ix4};

use super::{ImportError, Importer, NodeCtx, Val, constant, required};

/// Reads `strides`, `dilations`, `pads`/`auto_pad` for a 2-D window op and resolves the
/// padding for input spatial size `hw`.
fn window(
    ctx: &NodeCtx,
    kernel: [usize; 2],
    hw: [usize; 2],
) -> Result<([usize; 2], [usize; 4], [usize; 2]), ImportError> {
    let pair = |name: &str| -> Result<[usize; 2], ImportError> {
        match ctx.ints(name)? {
            None => Ok([1, 1]),
            Some(v) if v.len() == 2 && v.iter().all(|&x| x >= 1) => Ok([v[0] as usize, v[1] as usize]),
            Some(v) => {
                Err(ctx
                    .err(format!("attribute '{name}' = {v:?} is not supported (two positive values for a 2-D window)")))
            }
        }
    };
    let strides = pair("strides")?;
    let dilations = pair("dilations")?;
    let auto_pad = ctx.string("auto_pad")?.unwrap_or_else(|| "NOTSET".into());
    let pads = match auto_pad.as_str() {
        "NOTSET" => match ctx.ints("pads")? {
            None => [0; 4],
            Some(p) if p.len() == 4 && p.iter().all(|&x| x >= 0) => {
                [p[0] as usize, p[1] as usize, p[2] as usize, p[3] as usize]
            }
            Some(p) => {
                return Err(ctx.err(format!("attribute 'pads' = {p:?} is not supported (four non-negative values)")));
            }
        },
        "VALID" => [0; 4],
        "SAME_UPPER" | "SAME_LOWER" => {
            let mut p = [0; 4];
            for a in 0..2 {
                let out = hw[a].div_ceil(strides[a]);
                let span = (kernel[a] - 1) * dilations[a] + 1;
                let total = ((out - 1) * strides[a] + span).saturating_sub(hw[a]);
                let small = total / 2;
                let (begin, end) =
                    if auto_pad == "SAME_UPPER" { (small, total - small) } else { (total - small, small) };
                p[a] = begin;
                p[a + 2] = end;
            }
            p
        }
        other => {
            return Err(ctx.err(format!(
                "attribute 'auto_pad' = \"{other}\" is not supported (NOTSET, VALID, SAME_UPPER, SAME_LOWER)"
            )));
        }
    };
    Ok((strides, pads, dilations))
}

fn nchw(ctx: &NodeCtx, imp: &Importer, v: &Val) -> Result<[usize; 4], ImportError> {
    let s = imp.shape_of(v);
    if s.len() != 4 {
        return Err(
            ctx.err(format!("input of shape {s:?} is not supported: fhec handles 2-D images (NCHW, rank 4) here"))
        );
    }
    Ok([s[0], s[1], s[2], s[3]])
}

pub(super) fn conv(imp: &mut Importer, ctx: &NodeCtx, inputs: &[Option<Val>]) -> Result<Vec<Val>, ImportError> {
    let x = required(ctx, inputs, 0)?.clone();
    let w = constant(ctx, inputs, 1, "the weight")?.to_f32();
    let b = match inputs.get(2).and_then(|v| v.as_ref()) {
        None => None,
        Some(_) => Some(constant(ctx, inputs, 2, "the bias")?.to_f32()),
    };
    if w.ndim() != 4 {
        return Err(ctx.err(format!(
            "a weight of shape {:?} is not supported: fhec handles 2-D convolutions (4-D kernels)",
            w.shape()
        )));
    }
    let [_, _, h, wd] = nchw(ctx, imp, &x)?;
    let weight = w.into_dimensionality::<Ix4>().expect("rank checked");
    let kernel = [weight.dim().2, weight.dim().3];
    if let Some(k) = ctx.ints("kernel_shape")?
        && (k.len() != 2 || k[0] as usize != kernel[0] || k[1] as usize != kernel[1])
    {
        return Err(
            ctx.err(format!("attribute 'kernel_shape' = {k:?} disagrees with the weight shape {:?}", weight.shape()))
        );
    }
    let group = ctx.int_or("group", 1)?;
    if group < 1 {
        return Err(ctx.err(format!("attribute 'group' = {group} must be positive")));
    }
    let (strides, pads, dilations) = window(ctx, kernel, [h, wd])?;
    let bias = match b {
        None => None,
        Some(b) => {
            if b.ndim() != 1 || b.len() != weight.dim().0 {
                return Err(ctx.err(format!(
                    "bias of shape {:?} does not match {} output channels",
                    b.shape(),
                    weight.dim().0
                )));
            }
            Some(Array1::from_iter(b.iter().copied()))
        }
    };
    let op = Op::Conv(Conv { weight, bias, strides, pads, dilations, groups: group as usize });
    Ok(vec![imp.apply(ctx, None, op, &[x], &[])?])
}

fn pool_geometry(ctx: &NodeCtx, imp: &Importer, x: &Val) -> Result<Pool, ImportError> {
    let [_, _, h, w] = nchw(ctx, imp, x)?;
    let kernel = match ctx.ints("kernel_shape")? {
        Some(k) if k.len() == 2 && k.iter().all(|&v| v >= 1) => [k[0] as usize, k[1] as usize],
        Some(k) => {
            return Err(ctx.err(format!("attribute 'kernel_shape' = {k:?} is not supported (two positive values)")));
        }
        None => return Err(ctx.err("attribute 'kernel_shape' is required")),
    };
    let (strides, pads, dilations) = window(ctx, kernel, [h, w])?;
    let ceil_mode = ctx.int_or("ceil_mode", 0)? != 0;
    Ok(Pool { kernel, strides, pads, dilations, ceil_mode })
}

pub(super) fn max_pool(imp: &mut Importer, ctx: &NodeCtx, inputs: &[Option<Val>]) -> Result<Vec<Val>, ImportError> {
    // Max commutes with the (increasing) dequantization, so it keeps an integer grid.
    let (x, g) = imp.unquant(required(ctx, inputs, 0)?);
    ctx.expect_int("storage_order", 0, "row-major")?;
    let p = pool_geometry(ctx, imp, &x)?;
    let y = imp.apply(ctx, None, Op::MaxPool(p), &[x], &[])?;
    Ok(vec![imp.requant(y, g)])
}

pub(super) fn average_pool(imp: &mut Importer, ctx: &NodeCtx, inputs: &[Option<Val>]) -> Result<Vec<Val>, ImportError> {
    let x = required(ctx, inputs, 0)?.clone();
    let pool = pool_geometry(ctx, imp, &x)?;
    let count_include_pad = ctx.int_or("count_include_pad", 0)? != 0;
    Ok(vec![imp.apply(ctx, None, Op::AvgPool { pool, count_include_pad }, &[x], &[])?])
}

pub(super) fn global_average_pool(
    imp: &mut Importer,
    ctx: &NodeCtx,
    inputs: &[Option<Val>],
) -> Result<Vec<Val>, ImportError> {
    let x = required(ctx, inputs, 0)?.clone();
    let r = imp.shape_of(&x).len();
    if r < 3 {
        return Err(ctx.err(format!("input of rank {r} has no spatial axes")));
    }
    Ok(vec![imp.apply(ctx, None, Op::GlobalAvgPool, &[x], &[])?])
}

pub(super) fn global_max_pool(
    imp: &mut Importer,
    ctx: &NodeCtx,
    inputs: &[Option<Val>],
) -> Result<Vec<Val>, ImportError> {
    let x = required(ctx, inputs, 0)?.clone();
    let [_, _, h, w] = nchw(ctx, imp, &x)?;
    let p = Pool { kernel: [h, w], strides: [1, 1], pads: [0; 4], dilations: [1, 1], ceil_mode: false };
    Ok(vec![imp.apply(ctx, None, Op::MaxPool(p), &[x], &[])?])
}

pub(super) fn pad(imp: &mut Importer, ctx: &NodeCtx, inputs: &[Option<Val>]) -> Result<Vec<Val>, ImportError> {
    let x = required(ctx, inputs, 0)?.clone();
    let mode = ctx.string("mode")?.unwrap_or_else(|| "constant".into());
    if mode != "constant" {
        return Err(ctx.err(format!("attribute 'mode' = \"{mode}\" is not supported (only constant)")));
    }
    let rank = imp.shape_of(&x).len();
    let (pads, value) = if ctx.opset < 11 {
        let p = ctx.ints("pads")?.ok_or_else(|| ctx.err("attribute 'pads' is required"))?;
        (p, ctx.float_or("value", 0.0)?)
    } else {
        let p = constant(ctx, inputs, 1, "pads")?
            .as_int()
            .ok_or_else(|| ctx.err("pads must be integers"))?
            .iter()
            .copied()
            .collect::<Vec<i64>>();
        let v = match inputs.get(2).and_then(|v| v.as_ref()) {
            None => 0.0,
            Some(_) => constant(ctx, inputs, 2, "constant_value")?.to_f32().iter().next().copied().unwrap_or(0.0),
        };
        if inputs.get(3).is_some_and(|v| v.is_some()) {
            return Err(ctx.err("the 'axes' input is not supported"));
        }
        (p, v)
    };
    if pads.len() != 2 * rank || pads.iter().any(|&p| p < 0) {
        return Err(ctx.err(format!("pads {pads:?} are not supported (2 x rank non-negative values)")));
    }
    if pads.iter().all(|&p| p == 0) {
        return Ok(vec![x]);
    }
    if rank != 4 || pads[0] != 0 || pads[1] != 0 || pads[4] != 0 || pads[5] != 0 {
        return Err(ctx.err(format!("pads {pads:?} are not supported: fhec pads the two spatial axes of NCHW only")));
    }
    let p = [pads[2] as usize, pads[3] as usize, pads[6] as usize, pads[7] as usize];
    Ok(vec![imp.apply(ctx, None, Op::Pad { pads: p, value }, &[x], &[])?])
}
