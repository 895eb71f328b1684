//! `Artifact::from_bytes`, and what `fhec eval` and a client do with a loaded artifact:
//! print it, simulate it on an image (exactly and with sampled noise), take its
//! parameters, and make a client (key generation and one encryption).
//!
//! Structure-aware mutations decode the payload (without the verifier), edit one field of
//! the circuit or its parameters, and encode it again with a sound frame, so that edits
//! reach the verifier and everything after it.
//!
//! Properties beyond "no panic": an accepted artifact round-trips (its bytes read back to
//! the same bytes).

use arbitrary::Arbitrary;
use fhec_ir::artifact::{Artifact, FORMAT, MAX_PAYLOAD};
use fhec_ir::circuit::{COp, Rounding, TableIndex};
use fhec_runtime::app::Client;
use fhec_runtime::sim;
use ndarray::{ArrayD, IxDyn};
use rand::RngExt;

use super::{Outcome, Target, arb, edit_param, rejected};
use crate::framed;
use crate::mutate::{Rng, interesting};

/// `Artifact::from_bytes`.
pub struct ArtifactTarget;

/// Inputs of at most this many values are simulated.
const MAX_RUN_VALUES: usize = 1 << 16;
/// Images are encrypted when values times input-key coefficients are at most this.
const MAX_ENCRYPT_WORK: usize = 1 << 22;

impl Target for ArtifactTarget {
    fn name(&self) -> &'static str {
        "artifact"
    }

    fn about(&self) -> &'static str {
        "Artifact::from_bytes: round trip, print, simulation, parameters, Client::new and encrypt"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        let with = super::app::artifact();
        let mut without = with.clone();
        without.fhe = None;
        without.options.insert("fhe".into(), "no parameters (fuzz seed)".into());
        let toy = Artifact {
            fhec_version: "fuzz".into(),
            source: "toy".into(),
            options: Default::default(),
            circuit: super::toy::table_circuit(),
            fhe: None,
        };
        vec![with.to_bytes(), without.to_bytes(), toy.to_bytes()]
    }

    fn mutate(&self, input: &[u8], other: &[u8], rng: &mut Rng) -> Option<Vec<u8>> {
        if rng.random_bool(0.7)
            && let Some(a) = decode(input)
        {
            return edit(a, rng).map(|a| a.to_bytes());
        }
        framed::mutate(input, other, rng)
    }

    fn run(&self, input: &[u8]) -> Result<Outcome, String> {
        let a = match Artifact::from_bytes(input) {
            Ok(a) => a,
            Err(e) => return rejected(e),
        };
        let bytes = a.to_bytes();
        let again = Artifact::from_bytes(&bytes).map_err(|e| format!("round trip refused: {e}"))?;
        if again.to_bytes() != bytes {
            return Err("round trip changed the artifact".into());
        }
        let c = &a.circuit;
        let _ = fhec_ir::circuit::print::print(c);
        let _ = c.bootstrap_stats();
        let n = c.input_shape().iter().try_fold(1usize, |x, &d| x.checked_mul(d));
        let pixels: Option<Vec<u8>> = n.filter(|&n| n <= MAX_RUN_VALUES).map(|n| (0..n).map(|i| i as u8).collect());
        if let Some(px) = &pixels {
            let _ = sim::classify(c, px);
        }
        let Ok(pc) = a.parametrized() else { return Ok(Outcome::Accepted("artifact without parameters".into())) };
        let _ = pc.params().summary();
        if let (Some(px), Some(setup)) = (&pixels, &a.fhe) {
            let sigma = setup.approx_round_sigma(c);
            let _ = sim::classify_noisy(c, px, &sigma);
            let client = Client::new(input).map_err(|e| format!("an artifact that loads makes no client: {e}"))?;
            // Encryption costs a mask coefficient per value and input-key coefficient: legitimately
            // long for a large image under large parameters, so only for small ones.
            if px.len().saturating_mul(pc.params().input_dimension()) <= MAX_ENCRYPT_WORK {
                client.encrypt(px).map_err(|e| format!("encrypting an image of the artifact's size: {e}"))?;
            }
        }
        Ok(Outcome::Accepted("artifact with parameters".into()))
    }
}

/// The artifact in `b` as it decodes, without the verifier.
fn decode(b: &[u8]) -> Option<Artifact> {
    framed::decode_ir(b, FORMAT.magic, MAX_PAYLOAD)
}

/// One typed edit of an artifact.
#[derive(Arbitrary, Debug)]
enum Edit {
    /// A dimension of a node's shape.
    Shape { node: u16, dim: u8 },
    /// A node's shape gains or loses a dimension.
    Rank { node: u16, add: bool },
    /// An input of a node: another node, itself, a later node, out of range; or one input
    /// more or fewer.
    Input { node: u16, how: u8 },
    /// A node's declared range.
    Range { node: u16, max: bool },
    /// A node's noise norm.
    Norm { node: u16, how: u8 },
    /// A field of a node's op.
    Op { node: u16, field: u8 },
    /// A node's op replaced by another op.
    Replace { node: u16, op: u8 },
    /// A node removed, duplicated, or two nodes swapped.
    Nodes { node: u16, other: u16, how: u8 },
    /// The output node.
    Output,
    /// The rounding chunk or the output bits.
    Rounding { chunk: bool },
    /// The pixel map or the output dequantization: a length or a value.
    Quant { which: u8, how: u8 },
    /// A TFHE parameter, or the parameters removed.
    Param { field: u8 },
    /// The encoding plan: a length or a value.
    Plan { how: u8 },
}

fn pick(n: usize, i: u16) -> Option<usize> {
    (n > 0).then(|| i as usize % n)
}

/// Applies a random edit (`None` if it does not apply to this artifact).
fn edit(mut a: Artifact, rng: &mut Rng) -> Option<Artifact> {
    let big = |rng: &mut Rng| if rng.random_bool(0.5) { interesting(rng) as usize } else { rng.random_range(0..8) };
    let c = &mut a.circuit;
    let n = c.nodes.len();
    match arb::<Edit>(rng)? {
        Edit::Shape { node, dim } => {
            let s = &mut c.nodes[pick(n, node)?].shape;
            let d = pick(s.len(), dim as u16)?;
            s[d] = big(rng);
        }
        Edit::Rank { node, add } => {
            let s = &mut c.nodes[pick(n, node)?].shape;
            if add {
                s.insert(rng.random_range(0..=s.len()), rng.random_range(0..4));
            } else {
                s.pop();
            }
        }
        Edit::Input { node, how } => {
            let i = pick(n, node)?;
            let ins = &mut c.nodes[i].inputs;
            match how % 5 {
                0 => ins.push(rng.random_range(0..n)),
                1 => {
                    ins.pop();
                }
                2 => *ins.first_mut()? = i,
                3 => *ins.first_mut()? = rng.random_range(i..n + 2),
                _ => *ins.first_mut()? = big(rng),
            }
        }
        Edit::Range { node, max } => {
            let r = &mut c.nodes[pick(n, node)?].range;
            let v = match rng.random_range(0..3) {
                0 => interesting(rng) as i64,
                1 => [i64::MIN, i64::MAX, 0, -1][rng.random_range(0..4)],
                _ => (if max { r.max } else { r.min }).wrapping_add(rng.random_range(-3..=3)),
            };
            if max { r.max = v } else { r.min = v }
        }
        Edit::Norm { node, how } => {
            c.nodes[pick(n, node)?].norm2 = [f64::NAN, f64::INFINITY, -1.0, 0.0, 1e300, 1e-300][how as usize % 6];
        }
        Edit::Op { node, field } => op_field(&mut c.nodes[pick(n, node)?].op, field, rng),
        Edit::Replace { node, op } => {
            let i = pick(n, node)?;
            c.nodes[i].op = match op % 7 {
                0 => COp::Input { bits: rng.random_range(0..70) },
                1 => COp::Add,
                2 => COp::Sub,
                3 => COp::Reshape,
                4 => COp::Round { shift: rng.random_range(0..70), mode: Rounding::Exact },
                5 => COp::Transpose { perm: vec![0, 3, 1, 2] },
                _ => COp::Table {
                    in_width: rng.random_range(0..10),
                    index: TableIndex::Shared,
                    tables: vec![vec![0; 4]],
                },
            };
        }
        Edit::Nodes { node, other, how } => {
            let (i, j) = (pick(n, node)?, pick(n, other)?);
            match how % 3 {
                0 => {
                    c.nodes.remove(i);
                }
                1 => {
                    let dup = c.nodes[i].clone();
                    c.nodes.insert(j, dup);
                }
                _ => c.nodes.swap(i, j),
            }
        }
        Edit::Output => c.output = if rng.random_bool(0.5) { rng.random_range(0..n + 2) } else { big(rng) },
        Edit::Rounding { chunk } => {
            if chunk {
                c.round_chunk = rng.random_range(0..70);
            } else {
                c.output_bits = rng.random_bool(0.8).then(|| rng.random_range(0..70));
            }
        }
        Edit::Quant { which, how } => {
            let v = interesting(rng);
            match (which % 3, how % 3) {
                (0, 0) => {
                    c.input_quant.pixel_to_q.pop();
                }
                (0, _) => *c.input_quant.pixel_to_q.get_mut(rng.random_range(0..256))? = v as i64,
                (1, 0) => {
                    c.output_quant.scale.pop();
                }
                (1, _) => *c.output_quant.scale.first_mut()? = f64::from_bits(v),
                (_, 0) => c.output_quant.offset.push(0.0),
                (_, _) => *c.output_quant.offset.first_mut()? = f64::NAN,
            }
        }
        Edit::Param { field } => {
            if field % 13 == 12 {
                a.fhe = None;
            } else {
                edit_param(&mut a.fhe.as_mut()?.params, field % 13, interesting(rng))?;
            }
        }
        Edit::Plan { how } => {
            let bits = &mut a.fhe.as_mut()?.plan.bits;
            match how % 3 {
                0 => {
                    bits.pop();
                }
                1 => bits.push(8),
                _ => *bits.first_mut()? = rng.random_range(0..70),
            }
        }
    }
    Some(a)
}

/// Sets one field of an op to an awkward value.
fn op_field(op: &mut COp, field: u8, rng: &mut Rng) {
    let big = |rng: &mut Rng| if rng.random_bool(0.5) { interesting(rng) as usize } else { rng.random_range(0..5) };
    match op {
        COp::Input { bits } => *bits = rng.random_range(0..70),
        COp::Conv { weight, strides, pads, dilations, groups } => match field % 5 {
            0 => strides[rng.random_range(0..2)] = big(rng),
            1 => pads[rng.random_range(0..4)] = big(rng),
            2 => dilations[rng.random_range(0..2)] = big(rng),
            3 => *groups = big(rng),
            _ => {
                if let Some(w) = weight.iter_mut().next() {
                    *w = interesting(rng) as i64;
                }
            }
        },
        COp::Dense { weight } => {
            if field.is_multiple_of(2) {
                *weight = weight.t().to_owned();
            } else if let Some(w) = weight.iter_mut().next() {
                *w = interesting(rng) as i64;
            }
        }
        COp::AddClear(t) => {
            let mut shape = t.shape().to_vec();
            if field.is_multiple_of(2) {
                shape.push(1);
            } else {
                shape.pop();
            }
            if let Ok(a) = ArrayD::from_shape_vec(IxDyn(&shape), t.iter().copied().collect()) {
                *t = a;
            } else if let Some(v) = t.iter_mut().next() {
                *v = i64::MAX;
            }
        }
        COp::SumPool(p) | COp::MaxPool { pool: p, .. } if field.is_multiple_of(2) => match field % 8 {
            0 => p.kernel[rng.random_range(0..2)] = big(rng),
            2 => p.strides[rng.random_range(0..2)] = big(rng),
            4 => p.pads[rng.random_range(0..4)] = big(rng),
            _ => p.dilations[rng.random_range(0..2)] = big(rng),
        },
        COp::MaxPool { diff_offset, diff_width, shift, .. } => match field % 3 {
            0 => *diff_offset = interesting(rng) as i64,
            1 => *diff_width = rng.random_range(0..70),
            _ => *shift = rng.random_range(0..70),
        },
        COp::SumPool(p) => p.ceil_mode = !p.ceil_mode,
        COp::Round { shift, mode } => {
            if field.is_multiple_of(2) {
                *shift = rng.random_range(0..70);
            } else {
                *mode = if mode.is_approximate() { Rounding::Exact } else { Rounding::Approximate };
            }
        }
        COp::Table { in_width, index, tables } => match field % 5 {
            0 => *in_width = rng.random_range(0..70),
            1 => *index = TableIndex::PerAxis(big(rng)),
            2 => *index = TableIndex::PerElement,
            3 => {
                if let Some(t) = tables.first_mut() {
                    t.pop();
                }
            }
            _ => {
                if let Some(v) = tables.first_mut().and_then(|t| t.first_mut()) {
                    *v = interesting(rng) as i64;
                }
            }
        },
        COp::Transpose { perm } => match field % 3 {
            0 => perm.reverse(),
            1 => perm.push(big(rng)),
            _ => {
                if let Some(p) = perm.first_mut() {
                    *p = big(rng);
                }
            }
        },
        COp::Gather { src, negate, max } => match field % 4 {
            0 => src.push(big(rng) as u32),
            1 => {
                if let Some(s) = src.first_mut() {
                    *s = big(rng) as u32;
                }
            }
            2 => {
                negate.pop();
            }
            _ => *max = interesting(rng) as i64,
        },
        COp::Add | COp::Sub | COp::Reshape => {}
    }
}
