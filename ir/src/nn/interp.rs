//! The float interpreter of the NN IR, on ndarray.
//!
//! It follows ONNX semantics for every op (the frontend resolves attributes such as
//! `auto_pad` into explicit fields first); tract's execution of the source ONNX file is the
//! reference it is tested against.

use std::collections::HashMap;

use ndarray::{Array4, ArrayD, ArrayView4, ArrayViewD, Axis, Ix4, IxDyn, s};

use super::{Conv, Graph, NodeId, Op, Pool, Tensor};

/// An interpreter failure (bad inputs; a verified graph never fails otherwise).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InterpError(pub String);

/// Runs the graph on `inputs` (one tensor per graph input, of the input's shape) and
/// returns the outputs in order.
///
/// ```
/// use fhec_ir::nn::{Graph, Op, interp};
/// use ndarray::{ArrayD, IxDyn};
///
/// // relu(x) + 1 over a 1x4 input.
/// let mut g = Graph::new("tiny");
/// let x = g.add_input("x", vec![1, 4]);
/// let r = g.add_op("relu", Op::Relu, &[x]).unwrap();
/// let one = ArrayD::from_elem(IxDyn(&[1]), 1.0f32);
/// let y = g.add_op("plus_one", Op::AddConst(one), &[r]).unwrap();
/// g.add_output(y);
/// let input = ArrayD::from_shape_vec(IxDyn(&[1, 4]), vec![-2.0, -0.5, 0.5, 2.0]).unwrap();
/// let out = interp::run(&g, &[input]).unwrap();
/// assert_eq!(out[0].iter().copied().collect::<Vec<f32>>(), [1.0, 1.0, 1.5, 3.0]);
/// ```
pub fn run(g: &Graph, inputs: &[Tensor]) -> Result<Vec<Tensor>, InterpError> {
    let values = run_all(g, inputs)?;
    Ok(g.outputs().iter().map(|o| values[o].clone()).collect())
}

/// Like [`run`], returning every node's value (for debugging and pass-equivalence tests).
pub fn run_all(g: &Graph, inputs: &[Tensor]) -> Result<HashMap<NodeId, Tensor>, InterpError> {
    if inputs.len() != g.inputs().len() {
        return Err(InterpError(format!("the graph takes {} input(s), got {}", g.inputs().len(), inputs.len())));
    }
    let order = g.topo_order().ok_or_else(|| InterpError("the graph has a cycle".into()))?;
    let mut values: HashMap<NodeId, Tensor> = HashMap::with_capacity(order.len());
    for id in order {
        let node = g.node(id);
        let v = if let Op::Input { index } = node.op {
            let x = &inputs[index];
            if x.shape() != node.shape.as_slice() {
                return Err(InterpError(format!(
                    "input '{}' has shape {:?}, expected {:?}",
                    node.name,
                    x.shape(),
                    node.shape
                )));
            }
            x.clone()
        } else {
            let args: Vec<ArrayViewD<f32>> = g.inputs_of(id).iter().map(|p| values[p].view()).collect();
            eval_op(&node.op, &args, &node.shape).map_err(|e| InterpError(format!("node '{}': {e}", node.name)))?
        };
        values.insert(id, v);
    }
    Ok(values)
}

/// Evaluates one op on its input values. `out_shape` is the node's shape (used by
/// `Reshape`). Also used by the ONNX frontend to fold constant subgraphs.
pub fn eval_op(op: &Op, args: &[ArrayViewD<f32>], out_shape: &[usize]) -> Result<Tensor, InterpError> {
    let shapes: Vec<&[usize]> = args.iter().map(|a| a.shape()).collect();
    let expect = op.infer_shape(&shapes, out_shape).map_err(|e| InterpError(e.0))?;
    let x = || args[0].view();
    let out = match op {
        Op::Input { .. } => return Err(InterpError("an input cannot be evaluated".into())),
        Op::Conv(c) => conv2d(&as4(x())?, c).into_dyn(),
        Op::Dense { weight, bias } => {
            let shape = x().shape().to_vec();
            let inner = *shape.last().unwrap();
            let rows = x().len() / inner;
            let flat = x().to_shape((rows, inner)).map_err(|e| InterpError(e.to_string()))?.to_owned();
            let mut y = flat.dot(&weight.t());
            if let Some(b) = bias {
                y += b;
            }
            let mut out_shape = shape;
            *out_shape.last_mut().unwrap() = weight.nrows();
            y.into_shape_with_order(IxDyn(&out_shape)).map_err(|e| InterpError(e.to_string()))?
        }
        Op::AddConst(c) => &x() + c,
        Op::MulConst(c) => &x() * c,
        Op::Add => &args[0] + &args[1],
        Op::Sub => &args[0] - &args[1],
        Op::Mul => &args[0] * &args[1],
        Op::Relu => x().mapv(|v| v.max(0.0)),
        Op::LeakyRelu { alpha } => x().mapv(|v| if v >= 0.0 { v } else { alpha * v }),
        Op::PRelu(slope) => {
            let mut y = x().to_owned();
            let sb =
                slope.broadcast(y.raw_dim()).ok_or_else(|| InterpError("prelu slope does not broadcast".into()))?;
            y.zip_mut_with(&sb, |v, &a| {
                if *v < 0.0 {
                    *v *= a
                }
            });
            y
        }
        Op::Sigmoid => x().mapv(|v| 1.0 / (1.0 + (-v).exp())),
        Op::Tanh => x().mapv(f32::tanh),
        Op::HardSigmoid { alpha, beta } => x().mapv(|v| (alpha * v + beta).clamp(0.0, 1.0)),
        Op::Clip { min, max } => {
            let (lo, hi) = (min.unwrap_or(f32::NEG_INFINITY), max.unwrap_or(f32::INFINITY));
            x().mapv(|v| v.max(lo).min(hi))
        }
        Op::Square => x().mapv(|v| v * v),
        Op::FakeQuant(g) => x().mapv(|v| g.dequantize(g.quantize(v))),
        Op::BatchNorm { scale, bias, mean, var, epsilon } => {
            let mut y = x().to_owned();
            for (c, mut lane) in y.axis_iter_mut(Axis(1)).enumerate() {
                let k = scale[c] / (var[c] + epsilon).sqrt();
                let (m, b) = (mean[c], bias[c]);
                lane.mapv_inplace(|v| (v - m) * k + b);
            }
            y
        }
        Op::MaxPool(p) => pool2d(&as4(x())?, p, PoolKind::Max).into_dyn(),
        Op::AvgPool { pool, count_include_pad } => {
            pool2d(&as4(x())?, pool, PoolKind::Avg { count_include_pad: *count_include_pad }).into_dyn()
        }
        Op::SumPool(p) => crate::circuit::kernels::sum_pool(x(), p),
        Op::Poly(c) => x().mapv(|v| c.iter().rev().fold(0.0, |acc, &k| acc * v + k)),
        Op::GlobalAvgPool => {
            let shape = x().shape().to_vec();
            let spatial: usize = shape[2..].iter().product();
            let flat = x().to_shape((shape[0], shape[1], spatial)).map_err(|e| InterpError(e.to_string()))?.to_owned();
            let m = flat.sum_axis(Axis(2)) / spatial as f32;
            let mut out_shape = shape;
            out_shape[2..].iter_mut().for_each(|d| *d = 1);
            m.into_shape_with_order(IxDyn(&out_shape)).map_err(|e| InterpError(e.to_string()))?
        }
        Op::Pad { pads, value } => {
            let x4 = as4(x())?;
            let (n, c, h, w) = x4.dim();
            let mut y = Array4::from_elem((n, c, h + pads[0] + pads[2], w + pads[1] + pads[3]), *value);
            y.slice_mut(s![.., .., pads[0]..pads[0] + h, pads[1]..pads[1] + w]).assign(&x4);
            y.into_dyn()
        }
        Op::Reshape => {
            let v: Vec<f32> = x().iter().copied().collect();
            ArrayD::from_shape_vec(IxDyn(out_shape), v).map_err(|e| InterpError(e.to_string()))?
        }
        Op::Transpose { perm } => x().permuted_axes(IxDyn(perm)).as_standard_layout().into_owned(),
        Op::Softmax { axis } => softmax(x(), *axis, false),
        Op::LogSoftmax { axis } => softmax(x(), *axis, true),
    };
    debug_assert_eq!(out.shape(), expect.as_slice());
    Ok(out.as_standard_layout().into_owned())
}

fn as4<'a>(x: ArrayViewD<'a, f32>) -> Result<ArrayView4<'a, f32>, InterpError> {
    x.into_dimensionality::<Ix4>().map_err(|_| InterpError("expected an NCHW tensor".into()))
}

fn softmax(x: ArrayViewD<f32>, axis: usize, log: bool) -> Tensor {
    let mut y = x.to_owned();
    for mut lane in y.lanes_mut(Axis(axis)) {
        let m = lane.fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        lane.mapv_inplace(|v| v - m);
        let sum: f32 = lane.iter().map(|v| v.exp()).sum();
        if log {
            let ls = sum.ln();
            lane.mapv_inplace(|v| v - ls);
        } else {
            lane.mapv_inplace(|v| v.exp() / sum);
        }
    }
    y
}

/// Convolution (the circuit's generic im2col kernel on f32) plus bias.
fn conv2d(x: &ArrayView4<f32>, c: &Conv) -> Array4<f32> {
    let y = crate::circuit::kernels::conv2d(x.view().into_dyn(), &c.weight, c.strides, c.pads, c.dilations, c.groups);
    let mut y = y.into_dimensionality::<ndarray::Ix4>().expect("NCHW output");
    if let Some(b) = &c.bias {
        for (o, mut plane) in y.axis_iter_mut(Axis(1)).enumerate() {
            plane += b[o];
        }
    }
    y
}

enum PoolKind {
    Max,
    Avg { count_include_pad: bool },
}

fn pool2d(x: &ArrayView4<f32>, p: &Pool, kind: PoolKind) -> Array4<f32> {
    let (n, c, h, w) = x.dim();
    let [oh, ow] = p.output_hw([h, w]).expect("shape verified");
    let [kh, kw] = p.kernel;
    let [sh, sw] = p.strides;
    let [dh, dw] = p.dilations;
    let (pt, pl) = (p.pads[0] as isize, p.pads[1] as isize);
    // Padded extent: positions in [-pad_begin, len + pad_end) count for count_include_pad.
    let (hend, wend) = ((h + p.pads[2]) as isize, (w + p.pads[3]) as isize);
    let mut out = Array4::<f32>::zeros((n, c, oh, ow));
    for b in 0..n {
        for ch in 0..c {
            let plane = x.slice(s![b, ch, .., ..]);
            for oy in 0..oh {
                for ox in 0..ow {
                    let (mut acc, mut cnt, mut padded) = (
                        match kind {
                            PoolKind::Max => f32::NEG_INFINITY,
                            PoolKind::Avg { .. } => 0.0,
                        },
                        0usize,
                        0usize,
                    );
                    for ky in 0..kh {
                        let iy = (oy * sh + ky * dh) as isize - pt;
                        for kx in 0..kw {
                            let ix = (ox * sw + kx * dw) as isize - pl;
                            if iy < hend && ix < wend {
                                padded += 1;
                            }
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                continue;
                            }
                            let v = plane[[iy as usize, ix as usize]];
                            match kind {
                                PoolKind::Max => acc = acc.max(v),
                                PoolKind::Avg { .. } => acc += v,
                            }
                            cnt += 1;
                        }
                    }
                    out[[b, ch, oy, ox]] = match kind {
                        PoolKind::Max => acc,
                        PoolKind::Avg { count_include_pad: true } => acc / padded.max(1) as f32,
                        PoolKind::Avg { count_include_pad: false } => acc / cnt.max(1) as f32,
                    };
                }
            }
        }
    }
    out
}
