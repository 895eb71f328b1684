//! The lowering of one NN node ([`Lowerer::lower_node`]).

use fhec_ir::circuit::{COp, kernels};
use fhec_ir::nn::{NodeId, Op, Pool, interp};
use ndarray::{Array2, Array4, ArrayD, Axis, IxDyn, Zip};

use super::QuantError;
use super::Rounding;
use super::lower::{Low, Lowerer};
use super::maps::{Affine, Func, bcast, bits_for, f32s_to_f64, on_grid, varying_axes, weight_grid};

impl Lowerer<'_> {
    /// Lowers NN node `id` (its inputs are lowered).
    pub(super) fn lower_node(&mut self, id: NodeId) -> Result<Low, QuantError> {
        let node = self.g.node(id);
        let ins = self.g.inputs_of(id);
        let shape = node.shape.clone();
        let name = node.name.clone();
        let elementwise = |f: Func, l: &Lowerer| -> Low {
            let (v, deq, mut chain, _) = l.pending(ins[0]);
            chain.push(f);
            Low::Pending { id: v, deq, chain, cal: id }
        };
        let full = |a: &ArrayD<f32>| bcast(&f32s_to_f64(a), &shape);
        Ok(match &node.op {
            Op::Input { .. } => unreachable!("handled by lower_input"),
            Op::Conv(c) => {
                let (x, deq) = self.int_of(ins[0], &[1])?;
                let s_in: Vec<f64> = (0..deq.scale.shape()[1]).map(|ch| deq.scale[[0, ch, 0, 0]]).collect();
                let w = c.weight.mapv(|v| v as f64);
                let (o, ipg, _, _) = w.dim();
                let opg = o / c.groups;
                let mut wq = Array4::<i64>::zeros(w.raw_dim());
                let mut s_w = vec![1.0; o];
                let qmax = (1i64 << (self.opts.weight_bits_of(&name) - 1)) - 1;
                for oc in 0..o {
                    let g = oc / opg;
                    let mut eff = w.index_axis(Axis(0), oc).to_owned();
                    for (ic, mut plane) in eff.axis_iter_mut(Axis(0)).enumerate() {
                        plane *= s_in[g * ipg + ic];
                    }
                    let vals: Vec<f64> = eff.iter().copied().collect();
                    let step = weight_grid(&vals, qmax).unwrap_or_else(|| {
                        let m = vals.iter().fold(0f64, |a, &v| a.max(v.abs()));
                        if m > 0.0 { m / qmax as f64 } else { 1.0 }
                    });
                    s_w[oc] = step;
                    wq.index_axis_mut(Axis(0), oc).assign(&eff.mapv(|v| (v / step).round() as i64));
                }
                // Output offset: the float conv (with bias) of the input offset tensor.
                let mut cst = kernels::conv2d(deq.offset.view(), &w, c.strides, c.pads, c.dilations, c.groups);
                for (oc, mut plane) in cst.axis_iter_mut(Axis(1)).enumerate() {
                    plane += c.bias.as_ref().map_or(0.0, |b| b[oc] as f64);
                }
                let v = self.emit(
                    name.clone(),
                    COp::Conv {
                        weight: wq,
                        strides: c.strides,
                        pads: c.pads,
                        dilations: c.dilations,
                        groups: c.groups,
                    },
                    vec![x],
                    shape.clone(),
                )?;
                let sw = ArrayD::from_shape_vec(IxDyn(&[1, o, 1, 1]), s_w).expect("shape");
                Low::Int { id: v, deq: Affine { scale: bcast(&sw, &shape), offset: cst }, cal: id }
            }
            Op::Dense { weight, bias } => {
                let rank = self.g.node(ins[0]).shape.len();
                let (x, deq) = self.int_of(ins[0], &[rank - 1])?;
                if varying_axes(&deq.offset).iter().any(|&a| a != rank - 1) {
                    return Err(self.unsupported(id, "input offsets vary along a non-feature axis"));
                }
                let kdim = weight.ncols();
                let lane =
                    |a: &ArrayD<f64>| -> Vec<f64> { a.as_standard_layout().iter().take(kdim).copied().collect() };
                let (s_in, o_in) = (lane(&deq.scale), lane(&deq.offset));
                let w = weight.mapv(|v| v as f64);
                let qmax = (1i64 << (self.opts.weight_bits_of(&name) - 1)) - 1;
                let mut wq = Array2::<i64>::zeros(w.raw_dim());
                let mut s_w = Vec::with_capacity(w.nrows());
                let mut cst = Vec::with_capacity(w.nrows());
                for (o, row) in w.outer_iter().enumerate() {
                    let eff: Vec<f64> = row.iter().zip(&s_in).map(|(a, b)| a * b).collect();
                    let step = weight_grid(&eff, qmax).unwrap_or_else(|| {
                        let m = eff.iter().fold(0f64, |a, &v| a.max(v.abs()));
                        if m > 0.0 { m / qmax as f64 } else { 1.0 }
                    });
                    s_w.push(step);
                    for (k, &e) in eff.iter().enumerate() {
                        wq[[o, k]] = (e / step).round() as i64;
                    }
                    let c: f64 = row.iter().zip(&o_in).map(|(a, b)| a * b).sum();
                    cst.push(c + bias.as_ref().map_or(0.0, |b| b[o] as f64));
                }
                let v = self.emit(name.clone(), COp::Dense { weight: wq }, vec![x], shape.clone())?;
                let mut ps = vec![1; shape.len()];
                ps[rank - 1] = s_w.len();
                let sw = ArrayD::from_shape_vec(IxDyn(&ps), s_w).expect("shape");
                let cs = ArrayD::from_shape_vec(IxDyn(&ps), cst).expect("shape");
                Low::Int { id: v, deq: Affine { scale: bcast(&sw, &shape), offset: bcast(&cs, &shape) }, cal: id }
            }
            Op::AddConst(c) => self.affine(ins[0], id, &ArrayD::ones(IxDyn(&shape)), &full(c)),
            Op::MulConst(c) => self.affine(ins[0], id, &full(c), &ArrayD::zeros(IxDyn(&shape))),
            Op::BatchNorm { scale, bias, mean, var, epsilon } => {
                let mut ps = vec![1; shape.len()];
                ps[1] = scale.len();
                let k: Vec<f64> =
                    (0..scale.len()).map(|c| scale[c] as f64 / ((var[c] + epsilon) as f64).sqrt()).collect();
                let t: Vec<f64> = (0..scale.len()).map(|c| bias[c] as f64 - mean[c] as f64 * k[c]).collect();
                let k = bcast(&ArrayD::from_shape_vec(IxDyn(&ps), k).expect("shape"), &shape);
                let t = bcast(&ArrayD::from_shape_vec(IxDyn(&ps), t).expect("shape"), &shape);
                self.affine(ins[0], id, &k, &t)
            }
            Op::Relu => elementwise(Func::Relu, self),
            Op::LeakyRelu { alpha } => elementwise(Func::LeakyRelu(*alpha as f64), self),
            Op::PRelu(s) => elementwise(Func::PRelu(full(s)), self),
            Op::Sigmoid => elementwise(Func::Sigmoid, self),
            Op::Tanh => elementwise(Func::Tanh, self),
            Op::HardSigmoid { alpha, beta } => elementwise(Func::HardSigmoid(*alpha as f64, *beta as f64), self),
            Op::Clip { min, max } => elementwise(
                Func::Clip(min.map_or(f64::NEG_INFINITY, |v| v as f64), max.map_or(f64::INFINITY, |v| v as f64)),
                self,
            ),
            Op::Square => elementwise(Func::Square, self),
            Op::Poly(c) => elementwise(Func::Poly(c.iter().map(|&v| v as f64).collect()), self),
            Op::Mul if ins[0] == ins[1] => elementwise(Func::Square, self),
            Op::Mul => {
                return Err(self.unsupported(
                    id,
                    "a product of two different computed tensors needs two bootstraps per element; not supported yet",
                ));
            }
            Op::FakeQuant(gr) => {
                if let Low::Int { id: v, deq, cal } = &self.low[&ins[0]]
                    && on_grid(deq, gr, self.nodes[*v].range)
                {
                    return Ok(Low::Int { id: *v, deq: deq.clone(), cal: *cal });
                }
                elementwise(Func::Quant(*gr), self)
            }
            Op::Add | Op::Sub => {
                let (a, da) = self.int_of(ins[0], &[0, 1, 2, 3, 4, 5])?;
                let (b, db) = self.int_of(ins[1], &[0, 1, 2, 3, 4, 5])?;
                let same =
                    Zip::from(&da.scale).and(&db.scale).all(|&x, &y| (x - y).abs() <= 1e-9 * x.abs().max(y.abs()));
                if !same || self.nodes[a].shape != self.nodes[b].shape {
                    return Err(self.unsupported(
                        id,
                        "adding tensors on different scales (a residual connection) is not supported yet",
                    ));
                }
                let sub = matches!(node.op, Op::Sub);
                let v = self.emit(name, if sub { COp::Sub } else { COp::Add }, vec![a, b], shape.clone())?;
                let offset = if sub { &da.offset - &db.offset } else { &da.offset + &db.offset };
                Low::Int { id: v, deq: Affine { scale: da.scale, offset }, cal: id }
            }
            Op::MaxPool(p) => {
                let (x, deq) = self.int_of(ins[0], &[1])?;
                let (x, deq) = if deq.scale.iter().any(|&s| s <= 0.0) {
                    let cal = ins[0];
                    self.materialize(ins[0], Low::Pending { id: x, deq, chain: vec![], cal })?
                } else {
                    (x, deq)
                };
                // Max commutes with a positive per-channel map only if offsets are per channel too.
                let (x, deq) = self.channelwise_offsets(ins[0], x, deq)?;
                // With approximate rounding, the comparisons are sized for the calibrated
                // range of what they compare, and those of values wider than a table read
                // read the top bits of the differences (two guard steps at each end). Exact
                // rounding keeps exact comparisons over the exact range.
                let approx = self.opts.rounding_of(&name) == Rounding::Approximate;
                let x = if approx { self.calibrated_range(&name, x)? } else { x };
                let span = self.nodes[x].range.max - self.nodes[x].range.min;
                let maxb = self.opts.table_bits_of(&name);
                let (diff_offset, diff_width, shift) = if approx && bits_for(2 * span) > maxb {
                    let mut s = 1u32;
                    while s < 40 && 2 * span + 4 * (1i64 << s) >= 1i64 << (maxb + s) {
                        s += 1;
                    }
                    (span + 2 * (1i64 << s), maxb, s)
                } else {
                    (span, bits_for(2 * span), 0)
                };
                let op = COp::MaxPool { pool: p.clone(), diff_offset, diff_width, shift };
                let v = self.emit(name, op, vec![x], shape.clone())?;
                let ch = |a: &ArrayD<f64>| {
                    bcast(
                        &a.slice_each_axis(|ax| {
                            if ax.axis.index() >= 2 { ndarray::Slice::from(0..1) } else { ndarray::Slice::from(..) }
                        })
                        .to_owned(),
                        &shape,
                    )
                };
                Low::Int { id: v, deq: deq.map(ch), cal: id }
            }
            Op::AvgPool { pool, .. } => {
                let (x, deq) = self.int_of(ins[0], &[1])?;
                let v = self.emit(name, COp::SumPool(pool.clone()), vec![x], shape.clone())?;
                let in_shape = self.nodes[x].shape.clone();
                let f = |a: &ArrayD<f64>| -> Result<ArrayD<f64>, QuantError> {
                    let a32 = a.mapv(|v| v as f32);
                    interp::eval_op(&node.op, &[a32.view()], &shape)
                        .map(|r| f32s_to_f64(&r))
                        .map_err(|e| QuantError::Internal(e.0))
                };
                let avg_ones = f(&ArrayD::ones(IxDyn(&in_shape)))?;
                let sum_ones = kernels::sum_pool(ArrayD::<f64>::ones(IxDyn(&in_shape)).view(), pool);
                let ch = bcast(
                    &deq.scale
                        .slice_each_axis(|ax| {
                            if ax.axis.index() >= 2 { ndarray::Slice::from(0..1) } else { ndarray::Slice::from(..) }
                        })
                        .to_owned(),
                    &shape,
                );
                let scale = &ch * &(&avg_ones / &sum_ones.mapv(|v| v.max(1.0)));
                Low::Int { id: v, deq: Affine { scale, offset: f(&deq.offset)? }, cal: id }
            }
            Op::SumPool(pool) => {
                let (x, deq) = self.int_of(ins[0], &[1])?;
                let v = self.emit(name, COp::SumPool(pool.clone()), vec![x], shape.clone())?;
                let ch = bcast(
                    &deq.scale
                        .slice_each_axis(|ax| {
                            if ax.axis.index() >= 2 { ndarray::Slice::from(0..1) } else { ndarray::Slice::from(..) }
                        })
                        .to_owned(),
                    &shape,
                );
                Low::Int {
                    id: v,
                    deq: Affine { scale: ch, offset: kernels::sum_pool(deq.offset.view(), pool) },
                    cal: id,
                }
            }
            Op::GlobalAvgPool => {
                let (x, deq) = self.int_of(ins[0], &[1])?;
                let s = &self.nodes[x].shape;
                let p =
                    Pool { kernel: [s[2], s[3]], strides: [1, 1], pads: [0; 4], dilations: [1, 1], ceil_mode: false };
                let area = (s[2] * s[3]) as f64;
                let v = self.emit(name, COp::SumPool(p), vec![x], shape.clone())?;
                let mean = |a: &ArrayD<f64>| {
                    bcast(
                        &(a.mean_axis(Axis(3))
                            .expect("w")
                            .mean_axis(Axis(2))
                            .expect("h")
                            .insert_axis(Axis(2))
                            .insert_axis(Axis(3))),
                        &shape,
                    )
                };
                let scale = mean(&deq.scale) / area;
                Low::Int { id: v, deq: Affine { scale, offset: mean(&deq.offset) }, cal: id }
            }
            Op::Reshape | Op::Transpose { .. } => {
                let perm = if let Op::Transpose { perm } = &node.op { Some(perm.clone()) } else { None };
                let tf = |a: &ArrayD<f64>| match &perm {
                    Some(p) => a.clone().permuted_axes(IxDyn(p)).as_standard_layout().into_owned(),
                    None => a.as_standard_layout().to_shape(IxDyn(&shape)).expect("size").to_owned(),
                };
                // Pending functions are applied first, so their tables stay per channel.
                let all: Vec<usize> = (0..self.g.node(ins[0]).shape.len()).collect();
                let (v, deq) = self.int_of(ins[0], &all)?;
                let cal = ins[0];
                let chain: Vec<Func> = vec![];
                let op = match &perm {
                    Some(p) => COp::Transpose { perm: p.clone() },
                    None => COp::Reshape,
                };
                let nv = self.emit(name, op, vec![v], shape.clone())?;
                let deq = deq.map(tf);
                if chain.is_empty() {
                    Low::Int { id: nv, deq, cal }
                } else {
                    Low::Pending { id: nv, deq, chain: chain.iter().map(|f| f.map_params(&tf)).collect(), cal }
                }
            }
            Op::Softmax { .. } | Op::LogSoftmax { .. } if self.g.outputs().contains(&id) => {
                // Monotone per row: the argmax of the scores does not change.
                self.low[&ins[0]].clone()
            }
            Op::Softmax { .. } | Op::LogSoftmax { .. } => {
                return Err(self.unsupported(id, "softmax is supported only as the model's last op"));
            }
            Op::Pad { .. } => {
                return Err(self.unsupported(
                    id,
                    "a separate Pad is not supported by the quantizer; pad in the Conv or pooling op",
                ));
            }
        })
    }
}
