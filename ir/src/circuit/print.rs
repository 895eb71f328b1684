//! Stable textual form of the circuit IR (snapshots, `fhec build --print-circuit`).
//!
//! ```text
//! circuit "name" {
//!   %0 = input bits=8 : [1, 1, 28, 28] in [0, 255] w8
//!   %1 = conv %0 "c" w=[8, 1, 5, 5]{-7..7} s=[2, 2] p=[0, 0, 0, 0] d=[1, 1] g=1 : [1, 8, 12, 12] in [-611, 523] w11 n2=12.6
//!   %2 = table %1 "c.act" in=w11 per_axis(1) x8 : [1, 8, 12, 12] in [0, 63] w6
//!   output %2
//! }
//! ```
//! `w` is the bit width of the range, `n2` the noise 2-norm (shown when above 1).

use std::fmt::Write;

use super::{COp, Circuit, Rounding, TableIndex};
use crate::nn::print::fmt_f32;

fn int_summary(shape: &[usize], it: impl Iterator<Item = i64>) -> String {
    let (mut lo, mut hi) = (i64::MAX, i64::MIN);
    for v in it {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    format!("{shape:?}{{{lo}..{hi}}}")
}

/// Renders the circuit.
pub fn print(c: &Circuit) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "circuit {:?} {{", c.name);
    for (k, v) in &c.metadata {
        let _ = writeln!(out, "  meta {k:?} = {v:?}");
    }
    if c.has_exact_rounding() {
        let _ = writeln!(out, "  round_chunk {}", c.round_chunk);
    }
    for (id, n) in c.nodes.iter().enumerate() {
        let args: Vec<String> = n.inputs.iter().map(|i| format!("%{i}")).collect();
        let _ = write!(out, "  %{id} = {}", n.op.name());
        if !args.is_empty() {
            let _ = write!(out, " {}", args.join(", "));
        }
        let _ = write!(out, " {:?}", n.name);
        let attrs = match &n.op {
            COp::Input { bits } => format!("bits={bits}"),
            COp::Conv { weight, strides, pads, dilations, groups } => format!(
                "w={} s={strides:?} p={pads:?} d={dilations:?} g={groups}",
                int_summary(weight.shape(), weight.iter().copied())
            ),
            COp::Dense { weight } => format!("w={}", int_summary(weight.shape(), weight.iter().copied())),
            COp::AddClear(v) if v.len() <= 8 => {
                format!("{:?}{{{}}}", v.shape(), v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", "))
            }
            COp::AddClear(v) => int_summary(v.shape(), v.iter().copied()),
            COp::SumPool(p) => {
                format!("k={:?} s={:?} p={:?}{}", p.kernel, p.strides, p.pads, if p.ceil_mode { " ceil" } else { "" })
            }
            COp::MaxPool { pool: p, diff_offset, diff_width, shift } => format!(
                "k={:?} s={:?} p={:?}{} diff=+{diff_offset} w{diff_width}{}",
                p.kernel,
                p.strides,
                p.pads,
                if p.ceil_mode { " ceil" } else { "" },
                if *shift > 0 { format!(" approx shift={shift}") } else { String::new() }
            ),
            COp::Round { shift, mode: Rounding::Exact } => format!("shift={shift}"),
            COp::Round { shift, mode: Rounding::Approximate } => format!("shift={shift} approx"),
            COp::Table { in_width, index, tables } => {
                let idx = match index {
                    TableIndex::Shared => "shared".to_string(),
                    TableIndex::PerAxis(a) => format!("per_axis({a})"),
                    TableIndex::PerElement => "per_element".to_string(),
                };
                let mut h: u64 = 0xcbf29ce484222325;
                for v in tables.iter().flatten() {
                    h = (h ^ (*v as u64)).wrapping_mul(0x100000001b3);
                }
                format!("in=w{in_width} {idx} x{} hash={:08x}", tables.len(), h as u32)
            }
            COp::Transpose { perm } => format!("perm={perm:?}"),
            COp::Gather { src, negate, max } => {
                let moved = src.iter().enumerate().filter(|&(i, &s)| s as usize != i).count();
                let negated = negate.iter().filter(|&&n| n).count();
                format!("moved={moved}/{} negated={negated} max={max}", src.len())
            }
            COp::Add | COp::Sub | COp::Reshape => String::new(),
        };
        if !attrs.is_empty() {
            let _ = write!(out, " {attrs}");
        }
        let _ = write!(out, " : {:?} in [{}, {}] w{}", n.shape, n.range.min, n.range.max, n.range.width());
        if n.norm2 > 1.0 + 1e-9 {
            let _ = write!(out, " n2={}", fmt_f32(n.norm2 as f32));
        }
        out.push('\n');
    }
    let oq = &c.output_quant;
    let _ = writeln!(
        out,
        "  output %{} scale={} offset={}",
        c.output,
        fmt_f32(oq.scale.iter().copied().fold(0.0, f64::max) as f32),
        fmt_f32(oq.offset.iter().copied().fold(f64::NEG_INFINITY, f64::max) as f32)
    );
    out.push_str("}\n");
    out
}
