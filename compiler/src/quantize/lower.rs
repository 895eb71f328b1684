//! The lowering itself: one walk over the NN IR in topological order ([`quantize`]), the
//! emission of circuit nodes with their analyses ([`Lowerer::emit`]: range, noise and the
//! calibration values, from `crate::analysis`), and the tables that apply pending chains
//! ([`Lowerer::materialize`]). Each NN op's lowering is in `node.rs`; the maps in `maps.rs`.

use std::collections::{BTreeSet, HashMap};

use fhec_ir::Preprocess;
use fhec_ir::circuit::{CNode, COp, Circuit, InputQuant, OutputQuant, Range, TableIndex, ValueId, verify::verify};
use fhec_ir::nn::{Graph, NodeId, Op};
use ndarray::{ArrayD, IxDyn, Zip};

use super::{Calibration, QuantError, QuantOptions, RangeMode, Rounding};
use crate::analysis::calibrate::{self, Observed};
use crate::analysis::noise;
use crate::analysis::range::{self, Intervals};

use super::maps::{Affine, Func, OutQ, bits_for, reduce_offset, varying_axes};

/// The lowered form of an NN value.
#[derive(Clone, Debug)]
pub(super) enum Low {
    /// An integer value of the circuit with its dequantization map.
    Int { id: ValueId, deq: Affine, cal: NodeId },
    /// Element-wise functions still to be applied to an integer value (in the next table).
    Pending { id: ValueId, deq: Affine, chain: Vec<Func>, cal: NodeId },
}

pub(super) struct Lowerer<'a> {
    pub(super) g: &'a Graph,
    pub(super) cal: &'a Calibration,
    pub(super) opts: &'a QuantOptions,
    pub(super) nodes: Vec<CNode>,
    /// Range analysis of every emitted node.
    pub(super) ranges: Vec<Intervals>,
    /// Noise analysis (element variances) of every emitted node.
    pub(super) vars: Vec<ArrayD<f64>>,
    pub(super) low: HashMap<NodeId, Low>,
    /// Values of every emitted node on each calibration image (calibrated ranges).
    pub(super) observed: Observed,
}

/// Quantizes a verified NN graph into a verified circuit.
pub fn quantize(g: &Graph, pre: Preprocess, cal: &Calibration, opts: &QuantOptions) -> Result<Circuit, QuantError> {
    opts.validate()?;
    let mut l = Lowerer {
        g,
        cal,
        opts,
        nodes: vec![],
        ranges: vec![],
        vars: vec![],
        low: HashMap::new(),
        observed: Observed::default(),
    };
    let order = g.topo_order().ok_or_else(|| QuantError::Internal("cyclic graph".into()))?;
    let pixel_to_q = l.lower_input(pre)?;
    for id in order {
        if matches!(g.node(id).op, Op::Input { .. }) {
            continue;
        }
        let low = l.lower_node(id)?;
        l.low.insert(id, low);
    }
    let out = g.outputs()[0];
    let (oid, deq) = match l.low[&out].clone() {
        Low::Int { id, deq, .. } => (id, deq),
        p @ Low::Pending { .. } => l.materialize(out, p)?,
    };
    let mut metadata = g.metadata.clone();
    metadata.insert(Preprocess::METADATA_KEY.into(), pre.to_string());
    let mut c = Circuit {
        name: g.name.clone(),
        metadata,
        nodes: l.nodes,
        output: oid,
        input_quant: InputQuant { pixel_to_q },
        output_quant: OutputQuant {
            scale: deq.scale.iter().copied().collect(),
            offset: deq.offset.iter().copied().collect(),
        },
        round_chunk: 1,
        output_bits: opts.output_bits,
    };
    c.round_chunk = c.default_round_chunk();
    verify(&c).map_err(|e| QuantError::Internal(e.to_string()))?;
    // The analyses recomputed from the circuit alone agree with what the lowering declared.
    range::verify(&c).map_err(|e| QuantError::Internal(e.to_string()))?;
    noise::verify(&c).map_err(|e| QuantError::Internal(e.to_string()))?;
    Ok(c)
}

impl<'a> Lowerer<'a> {
    pub(super) fn unsupported(&self, id: NodeId, message: impl Into<String>) -> QuantError {
        let n = self.g.node(id);
        QuantError::Unsupported { node: n.name.clone(), op: n.op.name(), message: message.into() }
    }

    /// Adds a circuit node with its analyses: range ([`range::transfer`]), noise
    /// ([`noise::transfer`]) and its values on the calibration images ([`Observed::push`]).
    pub(super) fn emit(
        &mut self,
        name: String,
        op: COp,
        inputs: Vec<ValueId>,
        shape: Vec<usize>,
    ) -> Result<ValueId, QuantError> {
        let iv = range::transfer(&op, &inputs.iter().map(|&i| &self.ranges[i]).collect::<Vec<_>>(), &shape);
        let var = noise::transfer(&op, &inputs.iter().map(|&i| &self.vars[i]).collect::<Vec<_>>(), &shape);
        let (lo, hi) = iv.hull();
        if lo.abs() > range::MAX_ABS || hi.abs() > range::MAX_ABS {
            return Err(QuantError::Unsupported {
                node: name,
                op: "accumulator",
                message: format!("values reach [{lo}, {hi}], beyond 2^50; lower the bit widths"),
            });
        }
        let node = CNode { name, op, inputs, shape, range: iv.range(), norm2: noise::norm2(&var) };
        self.observed.push(&node).map_err(|e| QuantError::Internal(e.to_string()))?;
        self.nodes.push(node);
        self.ranges.push(iv);
        self.vars.push(var);
        Ok(self.nodes.len() - 1)
    }

    pub(super) fn lower_input(&mut self, pre: Preprocess) -> Result<Vec<i64>, QuantError> {
        let gid = self.g.inputs()[0];
        let node = self.g.node(gid);
        let shape = node.shape.clone();
        let users = self.g.users_of(gid);
        // A quantized model fixes the input grid with a QuantizeLinear right after the input.
        let grid = match users.first().map(|&u| &self.g.node(u).op) {
            Some(Op::FakeQuant(gr)) if users.iter().all(|&u| self.g.node(u).op == Op::FakeQuant(*gr)) => Some(*gr),
            _ => None,
        };
        let (pixel_to_q, deq): (Vec<i64>, Affine) = match grid {
            Some(gr) => {
                let q: Vec<i64> = (0..=255u8).map(|p| gr.quantize(pre.apply(p)) - gr.qmin).collect();
                (q, Affine::uniform(&shape, gr.scale as f64, (gr.qmin - gr.zero_point) as f64 * gr.scale as f64))
            }
            None => {
                let qmax = (1i64 << self.opts.input_bits) - 1;
                let q: Vec<i64> = (0..=255u32).map(|p| ((p as f64) * qmax as f64 / 255.0).round() as i64).collect();
                // pre(p) is affine in p: x = alpha * p + beta, and p ≈ q * 255 / qmax.
                let beta = pre.apply(0) as f64;
                let alpha = (pre.apply(255) as f64 - beta) / 255.0;
                (q, Affine::uniform(&shape, alpha * 255.0 / qmax as f64, beta))
            }
        };
        let max = pixel_to_q.iter().copied().max().unwrap_or(0);
        let range = Range { min: pixel_to_q.iter().copied().min().unwrap_or(0), max };
        self.nodes.push(CNode {
            name: node.name.clone(),
            op: COp::Input { bits: bits_for(max) },
            inputs: vec![],
            shape: shape.clone(),
            range,
            norm2: 1.0,
        });
        self.ranges.push(Intervals::uniform(&shape, range));
        self.vars.push(ArrayD::ones(IxDyn(&shape)));
        self.low.insert(gid, Low::Int { id: 0, deq, cal: gid });
        let images = if self.opts.ranges == RangeMode::Calibrated { &self.cal.pixels[..] } else { &[] };
        let encoded = images
            .iter()
            .filter(|px| px.len() == shape.iter().product::<usize>())
            .map(|px| {
                let q: Vec<i64> = px.iter().map(|&p| pixel_to_q[p as usize]).collect();
                ArrayD::from_shape_vec(IxDyn(&shape), q).expect("size checked")
            })
            .collect();
        self.observed = Observed::new(encoded);
        Ok(pixel_to_q)
    }

    /// The integer form of an NN node's value, materializing pending functions, and
    /// requantizing (identity table) if its scale varies along axes other than `allowed`.
    pub(super) fn int_of(&mut self, nn: NodeId, allowed: &[usize]) -> Result<(ValueId, Affine), QuantError> {
        let low = self.low[&nn].clone();
        let (id, deq) = match low {
            Low::Int { id, deq, .. } => (id, deq),
            p @ Low::Pending { .. } => self.materialize(nn, p)?,
        };
        if varying_axes(&deq.scale).iter().all(|a| allowed.contains(a)) {
            return Ok((id, deq));
        }
        let cal = match &self.low[&nn] {
            Low::Int { cal, .. } | Low::Pending { cal, .. } => *cal,
        };
        self.materialize(nn, Low::Pending { id, deq, chain: vec![], cal })
    }

    pub(super) fn pending(&self, nn: NodeId) -> (ValueId, Affine, Vec<Func>, NodeId) {
        match self.low[&nn].clone() {
            Low::Int { id, deq, cal } => (id, deq, vec![], cal),
            Low::Pending { id, deq, chain, cal } => (id, deq, chain, cal),
        }
    }

    /// Emits the table lookup (with offset and rounding) that applies a pending chain and
    /// requantizes; returns the table's value and its dequantization map.
    pub(super) fn materialize(&mut self, _nn: NodeId, low: Low) -> Result<(ValueId, Affine), QuantError> {
        let (id, deq, chain, cal) = match low {
            Low::Int { id, deq, cal } => (id, deq, vec![], cal),
            Low::Pending { id, deq, chain, cal } => (id, deq, chain, cal),
        };
        let name = format!("{}.table", self.g.node(cal).name);
        let shape = self.nodes[id].shape.clone();
        let n: usize = shape.iter().product();
        // Axes the tables must distinguish: where the scale or a chain parameter varies.
        let mut axes = varying_axes(&deq.scale);
        for f in &chain {
            for p in f.params() {
                axes.extend(varying_axes(p));
            }
        }
        // Offsets that vary elsewhere (zero padding at borders) become an integer clear addition.
        let (offset, residual) = reduce_offset(&deq, &axes);
        let index = match axes.len() {
            0 => TableIndex::Shared,
            1 => TableIndex::PerAxis(*axes.iter().next().expect("one axis")),
            _ => TableIndex::PerElement,
        };
        let a = &self.ranges[id];
        let mut lo = Zip::from(&a.lo).and(&residual).fold(f64::INFINITY, |m, &l, &r| m.min(l + r as f64)) as i64;
        let mut hi = Zip::from(&a.hi).and(&residual).fold(f64::NEG_INFINITY, |m, &h, &r| m.max(h + r as f64)) as i64;
        // Calibrated ranges: what the calibration images produce, plus a margin.
        let mut narrowed = false;
        if let Some(seen) = self.observed.range_of(id, Some(&residual)) {
            let (nlo, nhi) = calibrate::narrow((lo, hi), seen, self.opts.range_margin_pct);
            narrowed = (nlo, nhi) != (lo, hi);
            (lo, hi) = (nlo, nhi);
        }
        let span = hi - lo;
        let layer = &self.g.node(cal).name;
        let maxb = self.opts.table_bits_of(layer);
        let approx = self.opts.rounding_of(layer) == Rounding::Approximate;
        // Rounded indices: `round((x - lo) / 2^k)` (+1 with approximate rounding, which keeps
        // a step of guard at each end of the table, so the index tops out at 2^maxb - 2).
        let top = |k: u32| {
            let idx = (span + if k > 0 { 1i64 << (k - 1) } else { 0 }) >> k;
            if approx && k > 0 { idx + 2 } else { idx }
        };
        let mut k = 0u32;
        while k < 62 && top(k) >= 1i64 << maxb {
            k += 1;
        }
        let approx = approx && k > 0;
        let half = if k > 0 { 1i64 << (k - 1) } else { 0 };
        let guard = if approx { 1i64 << k } else { 0 };
        let add = residual.mapv(|r| r - lo + half + guard);
        let mut v = id;
        if narrowed || add.iter().any(|&x| x != 0) {
            let c = if add.iter().all(|&x| x == add.iter().next().copied().unwrap_or(0)) {
                ArrayD::from_elem(IxDyn(&[]), add.iter().next().copied().unwrap_or(0))
            } else {
                add
            };
            v = self.emit(format!("{}.offset", self.g.node(cal).name), COp::AddClear(c), vec![v], shape.clone())?;
            if narrowed {
                // Declare the calibrated range: values outside it are out of contract.
                let declared = Range { min: half + guard, max: hi - lo + half + guard };
                self.nodes[v].range = declared;
                self.ranges[v].clamp(declared);
            }
        }
        if k > 0 {
            v = self.emit(
                format!("{}.round", self.g.node(cal).name),
                COp::Round { shift: k, mode: if approx { Rounding::Approximate } else { Rounding::Exact } },
                vec![v],
                shape.clone(),
            )?;
        }
        // An approximate rounding's top guard step is part of the table.
        let in_width = bits_for(self.nodes[v].range.max + guard.signum());
        // Output quantization: the grid of a trailing FakeQuant, else from calibration.
        let out = match chain.last() {
            Some(Func::Quant(gr)) => OutQ::Grid(*gr),
            _ => self.act_quant(cal),
        };
        let reps: Vec<usize> = match &index {
            TableIndex::Shared => vec![0],
            TableIndex::PerAxis(ax) => {
                let stride: usize = shape[ax + 1..].iter().product();
                (0..shape[*ax]).map(|c| c * stride).collect()
            }
            TableIndex::PerElement => (0..n).collect(),
        };
        let sc = deq.scale.as_standard_layout();
        let scale = sc.as_slice().expect("standard");
        let off = offset.as_slice().expect("standard");
        let tables: Vec<Vec<i64>> = reps
            .iter()
            .map(|&e| {
                (0..1i64 << in_width)
                    .map(|i| {
                        let u = ((i - guard.signum()) << k) + lo;
                        let mut x = scale[e] * u as f64 + off[e];
                        for f in &chain {
                            x = f.apply(x, e);
                        }
                        out.quantize(x)
                    })
                    .collect()
            })
            .collect();
        let t = self.emit(name, COp::Table { in_width, index, tables }, vec![v], shape.clone())?;
        Ok((t, out.affine(&shape)))
    }

    pub(super) fn act_quant(&self, cal: NodeId) -> OutQ {
        let (lo, hi) = self.cal.range(cal).unwrap_or((0.0, 1.0));
        let (lo, hi) = (lo as f64, hi as f64);
        let qmax = (1i64 << self.opts.act_bits_of(&self.g.node(cal).name)) - 1;
        let (scale, zp) = if lo >= 0.0 {
            (if hi > 0.0 { hi / qmax as f64 } else { 1.0 }, 0)
        } else if hi <= 0.0 {
            (-lo / qmax as f64, qmax)
        } else {
            let s = (hi - lo) / qmax as f64;
            (s, (-lo / s).round() as i64)
        };
        OutQ::Act { scale, zp, qmax }
    }

    /// Applies `x -> k ⊙ x + t`.
    pub(super) fn affine(&self, input: NodeId, id: NodeId, k: &ArrayD<f64>, t: &ArrayD<f64>) -> Low {
        match self.low[&input].clone() {
            Low::Int { id: v, deq, .. } => {
                Low::Int { id: v, deq: Affine { scale: &deq.scale * k, offset: &(&deq.offset * k) + t }, cal: id }
            }
            Low::Pending { id: v, deq, mut chain, .. } => {
                chain.push(Func::Affine(k.clone(), t.clone()));
                Low::Pending { id: v, deq, chain, cal: id }
            }
        }
    }

    /// With calibrated ranges, declares the range the calibration images produce for `x`
    /// (plus the margin, within the exact one) on a no-op clear addition named
    /// `{name}.calibrated`, so that what reads it (max pooling) is sized for it; values outside
    /// it are out of contract, as for tables. Returns `x` itself when nothing narrows.
    pub(super) fn calibrated_range(&mut self, name: &str, x: ValueId) -> Result<ValueId, QuantError> {
        let Some(seen) = self.observed.range_of(x, None) else {
            return Ok(x);
        };
        let r = self.nodes[x].range;
        let (lo, hi) = calibrate::narrow((r.min, r.max), seen, self.opts.range_margin_pct);
        if (lo, hi) == (r.min, r.max) {
            return Ok(x);
        }
        let shape = self.nodes[x].shape.clone();
        let v =
            self.emit(format!("{name}.calibrated"), COp::AddClear(ArrayD::from_elem(IxDyn(&[]), 0)), vec![x], shape)?;
        let declared = Range { min: lo, max: hi };
        self.nodes[v].range = declared;
        self.ranges[v].clamp(declared);
        Ok(v)
    }

    /// Makes offsets constant per channel (axis 1) by adding the integer residual.
    pub(super) fn channelwise_offsets(
        &mut self,
        nn: NodeId,
        x: ValueId,
        deq: Affine,
    ) -> Result<(ValueId, Affine), QuantError> {
        let axes: BTreeSet<usize> = [1].into_iter().collect();
        let (offset, residual) = reduce_offset(&deq, &axes);
        if residual.iter().all(|&r| r == 0) {
            return Ok((x, Affine { scale: deq.scale, offset }));
        }
        let shape = self.nodes[x].shape.clone();
        let v = self.emit(format!("{}.offset", self.g.node(nn).name), COp::AddClear(residual), vec![x], shape)?;
        Ok((v, Affine { scale: deq.scale, offset }))
    }
}
