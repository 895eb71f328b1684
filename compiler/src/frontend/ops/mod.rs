//! The registry of per-op import functions: one small function per ONNX op type.
//!
//! Each function receives the node context and its inputs (`None` for an omitted
//! optional input) and returns one value per ONNX output it supports.

mod conv;
mod elementwise;
mod linear;
mod quant;
mod shape;

use super::{ImportError, Importer, NodeCtx, Val};

/// An import function.
pub(crate) type OpFn = fn(&mut Importer, &NodeCtx, &[Option<Val>]) -> Result<Vec<Val>, ImportError>;

/// Default-domain (`ai.onnx`) operators.
const REGISTRY: &[(&str, OpFn)] = &[
    ("Add", elementwise::add),
    ("AveragePool", conv::average_pool),
    ("BatchNormalization", elementwise::batch_norm),
    ("Cast", shape::cast),
    ("Clip", elementwise::clip),
    ("Concat", shape::concat),
    ("Constant", shape::constant_op),
    ("ConstantOfShape", shape::constant_of_shape),
    ("Conv", conv::conv),
    ("ConvInteger", quant::conv_integer),
    ("DequantizeLinear", quant::dequantize_linear),
    ("Div", elementwise::div),
    ("Dropout", shape::identity),
    ("Flatten", shape::flatten),
    ("Gather", shape::gather),
    ("Gemm", linear::gemm),
    ("GlobalAveragePool", conv::global_average_pool),
    ("GlobalMaxPool", conv::global_max_pool),
    ("HardSigmoid", elementwise::hard_sigmoid),
    ("Identity", shape::identity),
    ("LeakyRelu", elementwise::leaky_relu),
    ("LogSoftmax", elementwise::log_softmax),
    ("MatMul", linear::matmul),
    ("MatMulInteger", quant::matmul_integer),
    ("MaxPool", conv::max_pool),
    ("Mul", elementwise::mul),
    ("PRelu", elementwise::prelu),
    ("Pad", conv::pad),
    ("Pow", elementwise::pow),
    ("QLinearConv", quant::qlinear_conv),
    ("QLinearMatMul", quant::qlinear_matmul),
    ("QuantizeLinear", quant::quantize_linear),
    ("Relu", elementwise::relu),
    ("Reshape", shape::reshape),
    ("Shape", shape::shape),
    ("Sigmoid", elementwise::sigmoid),
    ("Slice", shape::slice),
    ("Softmax", elementwise::softmax),
    ("Squeeze", shape::squeeze),
    ("Sub", elementwise::sub),
    ("Tanh", elementwise::tanh),
    ("Transpose", shape::transpose),
    ("Unsqueeze", shape::unsqueeze),
];

/// onnxruntime's contrib operators (`com.microsoft` domain).
const MS_REGISTRY: &[(&str, OpFn)] = &[("QLinearAdd", quant::qlinear_add)];

/// The import function of an op type in a domain (`""` for the default domain).
pub(crate) fn lookup(domain: &str, op_type: &str) -> Option<OpFn> {
    let reg = match domain {
        "" => REGISTRY,
        "com.microsoft" => MS_REGISTRY,
        _ => return None,
    };
    reg.iter().find(|(n, _)| *n == op_type).map(|(_, f)| *f)
}

/// Names of all supported op types, sorted, contrib ops with their domain.
pub(crate) fn supported() -> Vec<String> {
    let mut v: Vec<String> = REGISTRY.iter().map(|(n, _)| n.to_string()).collect();
    v.extend(MS_REGISTRY.iter().map(|(n, _)| format!("com.microsoft::{n}")));
    v
}

/// Input `i`, which must be present.
pub(crate) fn required<'a>(ctx: &NodeCtx, inputs: &'a [Option<Val>], i: usize) -> Result<&'a Val, ImportError> {
    inputs
        .get(i)
        .and_then(|v| v.as_ref())
        .ok_or_else(|| ctx.err(format!("input #{i} is missing ({} given)", inputs.len())))
}

/// Input `i` as a constant, or an error saying it must be one.
pub(crate) fn constant<'a>(
    ctx: &NodeCtx,
    inputs: &'a [Option<Val>],
    i: usize,
    what: &str,
) -> Result<&'a super::CTensor, ImportError> {
    match required(ctx, inputs, i)? {
        Val::Const(c) => Ok(c),
        Val::Node(_) | Val::Quant(..) => Err(ctx.err(format!(
            "{what} (input #{i}) is computed at run time; fhec needs it to be a constant (an initializer or folded from one)"
        ))),
    }
}

/// Optional input `i` as a constant: `None` when omitted.
pub(crate) fn optional_constant<'a>(
    ctx: &NodeCtx,
    inputs: &'a [Option<Val>],
    i: usize,
    what: &str,
) -> Result<Option<&'a super::CTensor>, ImportError> {
    match inputs.get(i).and_then(|v| v.as_ref()) {
        None => Ok(None),
        Some(_) => constant(ctx, inputs, i, what).map(Some),
    }
}

/// Normalises a possibly negative axis against `rank`.
pub(crate) fn axis(ctx: &NodeCtx, a: i64, rank: usize, what: &str) -> Result<usize, ImportError> {
    let r = rank as i64;
    if a < -r || a >= r {
        return Err(ctx.err(format!("{what} {a} is out of range for rank {rank}")));
    }
    Ok(if a < 0 { (a + r) as usize } else { a as usize })
}
