//! The NN IR operations and their shape rules.

use ndarray::{Array1, Array2, Array4};
use serde::{Deserialize, Serialize};

use super::{Shape, Tensor};

/// A 2-D convolution (NCHW input, OIHW kernel), as ONNX `Conv` after `auto_pad` is resolved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conv {
    /// Kernel, `[out_channels, in_channels / groups, kh, kw]`.
    pub weight: Array4<f32>,
    /// Optional per-output-channel bias.
    pub bias: Option<Array1<f32>>,
    /// Strides `[sh, sw]`.
    pub strides: [usize; 2],
    /// Zero padding `[top, left, bottom, right]`.
    pub pads: [usize; 4],
    /// Dilations `[dh, dw]`.
    pub dilations: [usize; 2],
    /// Number of groups (`in_channels` for a depthwise convolution).
    pub groups: usize,
}

/// The geometry of a 2-D pooling window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    /// Window `[kh, kw]`.
    pub kernel: [usize; 2],
    /// Strides `[sh, sw]`.
    pub strides: [usize; 2],
    /// Padding `[top, left, bottom, right]` (`-inf` for max, zeros for average).
    pub pads: [usize; 4],
    /// Dilations `[dh, dw]`.
    pub dilations: [usize; 2],
    /// Output size rounds up instead of down; a window that would start inside the
    /// end padding is dropped (the PyTorch / ONNX rule).
    pub ceil_mode: bool,
}

impl Pool {
    /// Output spatial size for an input of spatial size `[h, w]`.
    pub fn output_hw(&self, hw: [usize; 2]) -> Result<[usize; 2], ShapeError> {
        let mut out = [0; 2];
        for a in 0..2 {
            out[a] = window_count(
                hw[a],
                self.kernel[a],
                self.strides[a],
                self.pads[a],
                self.pads[a + 2],
                self.dilations[a],
                self.ceil_mode,
            )
            .ok_or_else(|| {
                ShapeError(format!(
                    "pooling window {:?} (dilations {:?}, pads {:?}) does not fit input {:?}",
                    self.kernel, self.dilations, self.pads, hw
                ))
            })?;
        }
        Ok(out)
    }
}

/// Number of sliding windows along one axis, or `None` if not even one fits.
pub(crate) fn window_count(
    len: usize,
    kernel: usize,
    stride: usize,
    pad_begin: usize,
    pad_end: usize,
    dilation: usize,
    ceil_mode: bool,
) -> Option<usize> {
    if kernel == 0 || stride == 0 || dilation == 0 {
        return None;
    }
    // Checked: kernels, dilations and pads come from model files.
    let span = (kernel - 1).checked_mul(dilation)?.checked_add(1)?;
    let padded = len.checked_add(pad_begin)?.checked_add(pad_end)?;
    if padded < span {
        return None;
    }
    let room = padded - span;
    let mut n = if ceil_mode { room.div_ceil(stride) } else { room / stride } + 1;
    if ceil_mode && (n - 1).checked_mul(stride)? >= len + pad_begin {
        n -= 1;
    }
    Some(n)
}

/// A uniform integer grid: `real = scale * (q - zero_point)`, `q` in `qmin..=qmax`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Grid {
    /// Step between grid points.
    pub scale: f32,
    /// Integer that represents 0.
    pub zero_point: i64,
    /// Smallest integer.
    pub qmin: i64,
    /// Largest integer.
    pub qmax: i64,
}

impl Grid {
    /// Quantizes a real value (round half to even, as ONNX does) and clamps.
    pub fn quantize(&self, x: f32) -> i64 {
        let v = (x / self.scale).round_ties_even() as i64 + self.zero_point;
        v.clamp(self.qmin, self.qmax)
    }

    /// The real value of an integer.
    pub fn dequantize(&self, q: i64) -> f32 {
        (q - self.zero_point) as f32 * self.scale
    }
}

/// One operation of the NN IR. Every op has exactly one output.
///
/// Element-wise ops with a constant operand carry it (`AddConst`, `MulConst`);
/// ONNX `Sub`/`Div` by a constant are imported as `AddConst(-c)` / `MulConst(1/c)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// Graph input number `index` (its shape is the node's shape).
    Input {
        /// Position among the graph inputs.
        index: usize,
    },
    /// 2-D convolution.
    Conv(Conv),
    /// `y = x · weightᵀ + bias` over the last axis (ONNX Gemm / MatMul with constant weights).
    Dense {
        /// `[out_features, in_features]`.
        weight: Array2<f32>,
        /// Optional `[out_features]`.
        bias: Option<Array1<f32>>,
    },
    /// `x + c`, `c` broadcast to `x` (numpy rules; the output shape is `x`'s).
    AddConst(Tensor),
    /// `x * c`, `c` broadcast to `x`.
    MulConst(Tensor),
    /// `a + b`, both computed (numpy broadcasting).
    Add,
    /// `a - b`, both computed.
    Sub,
    /// `a * b`, both computed (`x * x` is a square activation).
    Mul,
    /// `max(x, 0)`.
    Relu,
    /// `x` if `x >= 0` else `alpha * x`.
    LeakyRelu {
        /// Negative slope.
        alpha: f32,
    },
    /// `x` if `x >= 0` else `slope * x`, `slope` broadcast to `x`.
    PRelu(Tensor),
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
    /// `max(0, min(1, alpha * x + beta))`.
    HardSigmoid {
        /// Slope.
        alpha: f32,
        /// Offset.
        beta: f32,
    },
    /// `min(max(x, min), max)`; a missing bound is infinite.
    Clip {
        /// Lower bound.
        min: Option<f32>,
        /// Upper bound.
        max: Option<f32>,
    },
    /// `x * x` (ONNX `Pow(x, 2)`).
    Square,
    /// Inference-mode batch normalisation over axis 1.
    BatchNorm {
        /// `gamma`, per channel.
        scale: Array1<f32>,
        /// `beta`, per channel.
        bias: Array1<f32>,
        /// Running mean.
        mean: Array1<f32>,
        /// Running variance.
        var: Array1<f32>,
        /// Added to the variance.
        epsilon: f32,
    },
    /// 2-D max pooling over NCHW.
    MaxPool(Pool),
    /// 2-D average pooling over NCHW.
    AvgPool {
        /// Window geometry.
        pool: Pool,
        /// Padded positions count in the divisor.
        count_include_pad: bool,
    },
    /// Mean over the spatial axes of NCHW, keeping them as size 1.
    GlobalAvgPool,
    /// 2-D sum pooling over NCHW (zero padding): average pooling without its divisor, which
    /// the `sum-pooling` rewrites move into a following `MulConst`.
    SumPool(Pool),
    /// The polynomial `c0 + c1 x + c2 x^2 + ...` (coefficients in increasing degree),
    /// element-wise: an activation replaced by the `activations` pass.
    Poly(Vec<f32>),
    /// Fake quantization (ONNX `QuantizeLinear` then `DequantizeLinear`):
    /// `(clamp(round_half_even(x / scale) + zero_point, qmin, qmax) - zero_point) * scale`.
    /// Marks a tensor that an already-quantized model keeps on an integer grid.
    FakeQuant(Grid),
    /// Constant padding of the two spatial axes of NCHW.
    Pad {
        /// `[top, left, bottom, right]`.
        pads: [usize; 4],
        /// The fill value.
        value: f32,
    },
    /// Row-major reshape to the node's shape.
    Reshape,
    /// Axis permutation: output axis `i` is input axis `perm[i]`.
    Transpose {
        /// The permutation.
        perm: Vec<usize>,
    },
    /// Softmax along `axis`.
    Softmax {
        /// Normalised axis.
        axis: usize,
    },
    /// Log-softmax along `axis`.
    LogSoftmax {
        /// Normalised axis.
        axis: usize,
    },
}

/// A shape rule was violated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ShapeError(pub String);

macro_rules! shape_err {
    ($($t:tt)*) => { Err(ShapeError(format!($($t)*))) };
}

/// Numpy-style broadcast of two shapes.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Result<Shape, ShapeError> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank { a[i + a.len() - rank] } else { 1 };
        let db = if i + b.len() >= rank { b[i + b.len() - rank] } else { 1 };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return shape_err!("shapes {a:?} and {b:?} do not broadcast"),
        };
    }
    Ok(out)
}

fn check_unidirectional(x: &[usize], c: &[usize], what: &str) -> Result<(), ShapeError> {
    let out = broadcast_shapes(x, c)?;
    if out != x {
        return shape_err!("{what} of shape {c:?} would grow the input {x:?} to {out:?}");
    }
    Ok(())
}

impl Op {
    /// Short lower-case name used by the printer and by summaries.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Conv(_) => "conv",
            Op::Dense { .. } => "dense",
            Op::AddConst(_) => "add_const",
            Op::MulConst(_) => "mul_const",
            Op::Add => "add",
            Op::Sub => "sub",
            Op::Mul => "mul",
            Op::Relu => "relu",
            Op::LeakyRelu { .. } => "leaky_relu",
            Op::PRelu(_) => "prelu",
            Op::Sigmoid => "sigmoid",
            Op::Tanh => "tanh",
            Op::HardSigmoid { .. } => "hard_sigmoid",
            Op::Clip { .. } => "clip",
            Op::Square => "square",
            Op::BatchNorm { .. } => "batch_norm",
            Op::MaxPool(_) => "max_pool",
            Op::AvgPool { .. } => "avg_pool",
            Op::GlobalAvgPool => "global_avg_pool",
            Op::SumPool(_) => "sum_pool",
            Op::Poly(_) => "poly",
            Op::Pad { .. } => "pad",
            Op::FakeQuant(_) => "fake_quant",
            Op::Reshape => "reshape",
            Op::Transpose { .. } => "transpose",
            Op::Softmax { .. } => "softmax",
            Op::LogSoftmax { .. } => "log_softmax",
        }
    }

    /// How many inputs the op takes.
    pub fn arity(&self) -> usize {
        match self {
            Op::Input { .. } => 0,
            Op::Add | Op::Sub | Op::Mul => 2,
            _ => 1,
        }
    }

    /// Number of stored parameters (weights, biases, constants).
    pub fn parameter_count(&self) -> usize {
        match self {
            Op::Conv(c) => c.weight.len() + c.bias.as_ref().map_or(0, |b| b.len()),
            Op::Dense { weight, bias } => weight.len() + bias.as_ref().map_or(0, |b| b.len()),
            Op::AddConst(c) | Op::MulConst(c) | Op::PRelu(c) => c.len(),
            Op::Poly(c) => c.len(),
            Op::BatchNorm { scale, .. } => 4 * scale.len(),
            _ => 0,
        }
    }

    /// The output shape for the given input shapes. `declared` is the node's own shape,
    /// which is authoritative only for `Input` and `Reshape` (checked for element count).
    pub fn infer_shape(&self, inputs: &[&[usize]], declared: &[usize]) -> Result<Shape, ShapeError> {
        if inputs.len() != self.arity() {
            return shape_err!("{} takes {} input(s), got {}", self.name(), self.arity(), inputs.len());
        }
        let x = inputs.first().copied().unwrap_or(&[]);
        let rank_at_least = |r: usize| -> Result<(), ShapeError> {
            if x.len() < r {
                return shape_err!("{} needs an input of rank >= {r}, got {x:?}", self.name());
            }
            Ok(())
        };
        match self {
            Op::Input { .. } => Ok(declared.to_vec()),
            Op::Conv(c) => {
                if x.len() != 4 {
                    return shape_err!("conv needs an NCHW input, got {x:?}");
                }
                let [o, ipg, kh, kw] =
                    [c.weight.shape()[0], c.weight.shape()[1], c.weight.shape()[2], c.weight.shape()[3]];
                if c.groups == 0 || ipg.checked_mul(c.groups) != Some(x[1]) || o % c.groups != 0 {
                    return shape_err!(
                        "conv kernel {:?} with {} group(s) does not fit an input with {} channel(s)",
                        c.weight.shape(),
                        c.groups,
                        x[1]
                    );
                }
                if let Some(b) = &c.bias
                    && b.len() != o
                {
                    return shape_err!("conv bias has {} values for {o} output channels", b.len());
                }
                let pool = Pool {
                    kernel: [kh, kw],
                    strides: c.strides,
                    pads: c.pads,
                    dilations: c.dilations,
                    ceil_mode: false,
                };
                let [h, w] = pool.output_hw([x[2], x[3]])?;
                Ok(vec![x[0], o, h, w])
            }
            Op::Dense { weight, bias } => {
                rank_at_least(1)?;
                let (out, inp) = weight.dim();
                if x[x.len() - 1] != inp {
                    return shape_err!(
                        "dense weight [{out}, {inp}] does not fit input {x:?} (last axis must be {inp})"
                    );
                }
                if let Some(b) = bias
                    && b.len() != out
                {
                    return shape_err!("dense bias has {} values for {out} outputs", b.len());
                }
                let mut s = x.to_vec();
                *s.last_mut().unwrap() = out;
                Ok(s)
            }
            Op::AddConst(c) | Op::MulConst(c) | Op::PRelu(c) => {
                check_unidirectional(x, c.shape(), "constant")?;
                Ok(x.to_vec())
            }
            Op::Add | Op::Sub | Op::Mul => broadcast_shapes(inputs[0], inputs[1]),
            Op::Relu
            | Op::LeakyRelu { .. }
            | Op::Sigmoid
            | Op::Tanh
            | Op::HardSigmoid { .. }
            | Op::Clip { .. }
            | Op::FakeQuant(_)
            | Op::Poly(_)
            | Op::Square => Ok(x.to_vec()),
            Op::BatchNorm { scale, bias, mean, var, .. } => {
                rank_at_least(2)?;
                let c = x[1];
                for (n, v) in [("scale", scale), ("bias", bias), ("mean", mean), ("var", var)] {
                    if v.len() != c {
                        return shape_err!("batch_norm {n} has {} values for {c} channels", v.len());
                    }
                }
                Ok(x.to_vec())
            }
            Op::MaxPool(p) | Op::AvgPool { pool: p, .. } | Op::SumPool(p) => {
                if x.len() != 4 {
                    return shape_err!("{} needs an NCHW input, got {x:?}", self.name());
                }
                let [h, w] = p.output_hw([x[2], x[3]])?;
                Ok(vec![x[0], x[1], h, w])
            }
            Op::GlobalAvgPool => {
                rank_at_least(3)?;
                let mut s = x.to_vec();
                s[2..].iter_mut().for_each(|d| *d = 1);
                Ok(s)
            }
            Op::Pad { pads, .. } => {
                if x.len() != 4 {
                    return shape_err!("pad needs an NCHW input, got {x:?}");
                }
                let side = |d: usize, a: usize, b: usize| d.checked_add(a)?.checked_add(b);
                match (side(x[2], pads[0], pads[2]), side(x[3], pads[1], pads[3])) {
                    (Some(h), Some(w)) => Ok(vec![x[0], x[1], h, w]),
                    _ => shape_err!("padding {pads:?} of input {x:?} overflows"),
                }
            }
            Op::Reshape => {
                let count = |s: &[usize]| s.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
                let (Some(a), Some(b)) = (count(x), count(declared)) else {
                    return shape_err!("reshape of {x:?} to {declared:?} overflows");
                };
                if a != b {
                    return shape_err!("cannot reshape {x:?} ({a} elements) to {declared:?} ({b} elements)");
                }
                Ok(declared.to_vec())
            }
            Op::Transpose { perm } => {
                let mut seen = vec![false; x.len()];
                if perm.len() != x.len() || perm.iter().any(|&p| p >= x.len() || std::mem::replace(&mut seen[p], true))
                {
                    return shape_err!("transpose permutation {perm:?} is not a permutation of rank {}", x.len());
                }
                Ok(perm.iter().map(|&p| x[p]).collect())
            }
            Op::Softmax { axis } | Op::LogSoftmax { axis } => {
                if *axis >= x.len() {
                    return shape_err!("{} axis {axis} out of range for {x:?}", self.name());
                }
                Ok(x.to_vec())
            }
        }
    }
}
