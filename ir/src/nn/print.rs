//! The stable textual form of the NN IR, used by snapshots and `fhec inspect`.
//!
//! ```text
//! graph "name" {
//!   %0 = input "x" : [1, 1, 28, 28]
//!   %1 = conv %0 "Conv_0" w=[8, 1, 3, 3] bias s=[1, 1] p=[1, 1, 1, 1] d=[1, 1] g=1 : [1, 8, 28, 28]
//!   output %1
//! }
//! ```
//! Nodes are numbered in a deterministic topological order. Large constants are
//! summarised by their shape and a few statistics; constants of at most 8 values are
//! printed in full. Floats use 6 significant digits.

use std::collections::HashMap;
use std::fmt::Write;

use super::{Graph, NodeId, Op, Pool, Tensor};

/// Renders the graph.
pub fn print(g: &Graph) -> String {
    let mut out = String::new();
    let order = g.topo_order().unwrap_or_else(|| g.node_ids());
    let num: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let _ = writeln!(out, "graph {:?} {{", g.name);
    for (k, v) in &g.metadata {
        let _ = writeln!(out, "  meta {k:?} = {v:?}");
    }
    for &id in &order {
        let node = g.node(id);
        let args: Vec<String> = g.inputs_of(id).iter().map(|p| format!("%{}", num[p])).collect();
        let _ = write!(out, "  %{} = {}", num[&id], node.op.name());
        if !args.is_empty() {
            let _ = write!(out, " {}", args.join(", "));
        }
        let _ = write!(out, " {:?}", node.name);
        let attrs = attrs(&node.op);
        if !attrs.is_empty() {
            let _ = write!(out, " {attrs}");
        }
        let _ = writeln!(out, " : {:?}", node.shape);
    }
    let outs: Vec<String> = g.outputs().iter().map(|o| format!("%{}", num[o])).collect();
    let _ = writeln!(out, "  output {}", outs.join(", "));
    out.push_str("}\n");
    out
}

/// Formats a float with 6 significant digits, stably across platforms.
pub fn fmt_f32(v: f32) -> String {
    if v == 0.0 {
        return "0".into();
    }
    if !v.is_finite() {
        return format!("{v}");
    }
    let s = format!("{:.5e}", v);
    // Parse back to drop trailing zeros while keeping the value exact to 6 digits.
    let p: f64 = s.parse().unwrap_or(v as f64);
    let a = p.abs();
    if (1e-4..1e6).contains(&a) {
        let mut t = format!("{:.*}", (5 - a.log10().floor() as i32).max(0) as usize, p);
        if t.contains('.') {
            while t.ends_with('0') {
                t.pop();
            }
            if t.ends_with('.') {
                t.pop();
            }
        }
        t
    } else {
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        let m = if m.contains('.') { m.trim_end_matches('0').trim_end_matches('.') } else { m };
        format!("{m}e{e}")
    }
}

fn tensor(t: &Tensor) -> String {
    if t.len() <= 8 {
        let vals: Vec<String> = t.iter().map(|&v| fmt_f32(v)).collect();
        format!("{:?}{{{}}}", t.shape(), vals.join(", "))
    } else {
        summary(t.shape(), t.iter().copied())
    }
}

fn summary(shape: &[usize], it: impl Iterator<Item = f32>) -> String {
    let (mut lo, mut hi, mut sum) = (f32::INFINITY, f32::NEG_INFINITY, 0f64);
    for v in it {
        lo = lo.min(v);
        hi = hi.max(v);
        sum += v as f64;
    }
    format!("{shape:?}{{min={} max={} sum={}}}", fmt_f32(lo), fmt_f32(hi), fmt_f32(sum as f32))
}

fn pool(p: &Pool) -> String {
    format!(
        "k={:?} s={:?} p={:?} d={:?}{}",
        p.kernel,
        p.strides,
        p.pads,
        p.dilations,
        if p.ceil_mode { " ceil" } else { "" }
    )
}

fn attrs(op: &Op) -> String {
    match op {
        Op::Conv(c) => {
            let mut s = format!("w={}", summary(c.weight.shape(), c.weight.iter().copied()));
            if let Some(b) = &c.bias {
                let _ = write!(s, " b={}", summary(b.shape(), b.iter().copied()));
            }
            let _ = write!(s, " s={:?} p={:?} d={:?} g={}", c.strides, c.pads, c.dilations, c.groups);
            s
        }
        Op::Dense { weight, bias } => {
            let mut s = format!("w={}", summary(weight.shape(), weight.iter().copied()));
            if let Some(b) = bias {
                let _ = write!(s, " b={}", summary(b.shape(), b.iter().copied()));
            }
            s
        }
        Op::AddConst(c) | Op::MulConst(c) | Op::PRelu(c) => tensor(c),
        Op::LeakyRelu { alpha } => format!("alpha={}", fmt_f32(*alpha)),
        Op::HardSigmoid { alpha, beta } => format!("alpha={} beta={}", fmt_f32(*alpha), fmt_f32(*beta)),
        Op::Clip { min, max } => {
            format!("min={} max={}", min.map_or("-inf".into(), fmt_f32), max.map_or("inf".into(), fmt_f32))
        }
        Op::BatchNorm { scale, bias, mean, var, epsilon } => format!(
            "scale={} bias={} mean={} var={} eps={}",
            summary(scale.shape(), scale.iter().copied()),
            summary(bias.shape(), bias.iter().copied()),
            summary(mean.shape(), mean.iter().copied()),
            summary(var.shape(), var.iter().copied()),
            fmt_f32(*epsilon)
        ),
        Op::MaxPool(p) | Op::SumPool(p) => pool(p),
        Op::Poly(c) => format!("c=[{}]", c.iter().map(|&v| fmt_f32(v)).collect::<Vec<_>>().join(", ")),
        Op::AvgPool { pool: p, count_include_pad } => {
            format!("{}{}", pool(p), if *count_include_pad { " count_include_pad" } else { "" })
        }
        Op::Transpose { perm } => format!("perm={perm:?}"),
        Op::FakeQuant(g) => format!("scale={} zp={} q=[{}, {}]", fmt_f32(g.scale), g.zero_point, g.qmin, g.qmax),
        Op::Pad { pads, value } => format!("p={pads:?} value={}", fmt_f32(*value)),
        Op::Softmax { axis } | Op::LogSoftmax { axis } => format!("axis={axis}"),
        _ => String::new(),
    }
}
