//! The encoding plan of a circuit and the noise requirements of its bootstraps.

use serde::{Deserialize, Serialize};

use super::NoiseRequirement;

/// A circuit that cannot be encoded (a compiler bug: the quantizer sizes values so that
/// every one can be).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodingError {
    /// An approximate rounding reads more bits than its input is encoded on.
    #[error("%{id} reads {read} bits off a {bits}-bit encoding")]
    ReadTooWide {
        /// The node.
        id: usize,
        /// Bits read.
        read: u32,
        /// Bits of the input's encoding.
        bits: u32,
    },
    /// An exact rounding removes all of its input's bits.
    #[error("%{id} rounds {shift} bits off a {bits}-bit encoding")]
    RoundTooWide {
        /// The node.
        id: usize,
        /// Bits removed.
        shift: u32,
        /// Bits of the input's encoding.
        bits: u32,
    },
    /// A sum of values encoded on different bits.
    #[error("%{id} adds values encoded on {a} and {b} bits")]
    Mismatch {
        /// The node.
        id: usize,
        /// Bits of the first operand.
        a: u32,
        /// Bits of the second.
        b: u32,
    },
    /// A value would need more bits than the torus holds, or fewer than it has.
    #[error("%{id} '{name}' would be encoded on {bits} bits but needs {need} (at most 62)")]
    Bits {
        /// The node.
        id: usize,
        /// Its name.
        name: String,
        /// Bits it would be encoded on.
        bits: u32,
        /// Bits it needs.
        need: u32,
    },
}

/// The encoding plan: every circuit value `v` is held as `v·Δ + e` with `Δ = 2^(63 - bits[v])`.
///
/// A value read by a bootstrap must be encoded with exactly the bits it is read at (a
/// table reading `w` bits: `w`; exact rounding of a `P`-bit value: `P`; max pooling: the
/// width of its differences), linear ops keep their input's encoding, and a value may be
/// multiplied by `2^j` to move to an encoding with `j` fewer bits when its range allows.
/// So bits flow backward from readers (the most any reader needs) and forward from
/// sources (rounding removes bits).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodingPlan {
    /// Bits of the encoding of each node's value.
    pub bits: Vec<u32>,
}

/// Bits to hold the non-negative `max`.
fn ubits(max: i64) -> u32 {
    (64 - (max.max(0) as u64).leading_zeros()).max(1)
}

impl EncodingPlan {
    /// Plans the encodings of a circuit.
    pub fn plan(c: &crate::circuit::Circuit) -> Result<EncodingPlan, EncodingError> {
        use crate::circuit::{COp, Rounding};
        let n = c.nodes.len();
        // Bits each value must have for its readers.
        let mut need = vec![1u32; n];
        let out = &c.nodes[c.output];
        need[c.output] = ubits(out.range.min.saturating_abs().max(out.range.max)) + 1;
        for id in (0..n).rev() {
            let node = &c.nodes[id];
            let req = match &node.op {
                COp::Table { in_width, .. } => *in_width,
                // An approximate rounding's readers read its input's top bits directly.
                COp::Round { shift, mode: Rounding::Approximate } => need[id] + shift,
                COp::Round { .. } => ubits(c.nodes[node.inputs[0]].range.max),
                COp::MaxPool { diff_width, shift, .. } => need[id].max(*diff_width + shift),
                COp::Input { .. } => continue,
                _ => need[id],
            };
            for &i in &node.inputs {
                need[i] = need[i].max(req);
            }
        }
        let mut bits = vec![0u32; n];
        for id in 0..n {
            let node = &c.nodes[id];
            bits[id] = match &node.op {
                COp::Input { .. } | COp::Table { .. } => need[id],
                // Read at its readers' width, from its input moved to `need + shift` bits.
                COp::Round { shift, mode: Rounding::Approximate } => {
                    let b = bits[node.inputs[0]];
                    if b < need[id] + shift {
                        return Err(EncodingError::ReadTooWide { id, read: need[id] + shift, bits: b });
                    }
                    need[id]
                }
                COp::Round { shift, mode: Rounding::Exact } => {
                    let b = bits[node.inputs[0]];
                    if b <= *shift {
                        return Err(EncodingError::RoundTooWide { id, shift: *shift, bits: b });
                    }
                    b - shift
                }
                COp::Add | COp::Sub => {
                    let (a, b) = (bits[node.inputs[0]], bits[node.inputs[1]]);
                    if a != b {
                        return Err(EncodingError::Mismatch { id, a, b });
                    }
                    a
                }
                _ => bits[node.inputs[0]],
            };
            if bits[id] < need[id] || bits[id] > 62 {
                return Err(EncodingError::Bits { id, name: node.name.clone(), bits: bits[id], need: need[id] });
            }
        }
        Ok(EncodingPlan { bits })
    }

    /// Bits of the output the client reads: all of its encoding, or its top
    /// `Circuit::output_bits` when fewer.
    pub fn output_read_bits(&self, c: &crate::circuit::Circuit) -> u32 {
        let bits = self.bits.get(c.output).copied().unwrap_or(0);
        c.output_bits.map_or(bits, |b| b.clamp(1, bits.max(1)))
    }

    /// The noise requirements of every bootstrap (and of the final decryption): those of
    /// every node ([`EncodingPlan::node_requirements`]), equal ones merged (counts added).
    pub fn requirements(&self, c: &crate::circuit::Circuit) -> Vec<NoiseRequirement> {
        let mut reqs: Vec<NoiseRequirement> = vec![];
        for r in (0..c.nodes.len()).flat_map(|id| self.node_requirements(c, id)) {
            if let Some(e) = reqs.iter_mut().find(|e| {
                e.encoding_bits == r.encoding_bits
                    && e.read_bits == r.read_bits
                    && e.extra_pbs == r.extra_pbs
                    && e.norm2_sq == r.norm2_sq
                    && e.decryption == r.decryption
                    && e.extra_from_rounding == r.extra_from_rounding
                    && e.rounding_read == r.rounding_read
                    && e.approx == r.approx
            }) {
                e.count += r.count;
            } else {
                reqs.push(r);
            }
        }
        reqs
    }

    /// The noise requirements of node `id`'s bootstraps, in the order the runtime performs
    /// them for each element (an exact rounding's reads chunk after chunk, each chunk's sign
    /// read before its table; a max pooling's comparisons, the `i`-th of every window with
    /// `i - 1` comparison outputs in its running maximum), then, for the output node, that
    /// of the client's decryption.
    pub fn node_requirements(&self, c: &crate::circuit::Circuit, id: usize) -> Vec<NoiseRequirement> {
        use crate::circuit::{COp, Rounding, kernels};
        let mut reqs: Vec<NoiseRequirement> = vec![];
        let mut push = |r: NoiseRequirement| reqs.push(r);
        let node = &c.nodes[id];
        let elems: usize = node.shape.iter().product();
        let input = node.inputs.first().map(|&i| &c.nodes[i]);
        match &node.op {
            COp::Table { in_width, .. } => {
                let x = input.expect("table input");
                // An approximate rounding is read from its input (moved to the read's
                // encoding); an exact one adds its bootstraps' outputs to its input.
                let (encoding_bits, nu, extra, approx) = match x.op {
                    COp::Round { shift, mode: Rounding::Approximate } => {
                        (self.bits[x.inputs[0]] - shift, c.nodes[x.inputs[0]].norm2, 0, true)
                    }
                    COp::Round { shift, mode: Rounding::Exact } => (
                        self.bits[node.inputs[0]],
                        c.nodes[x.inputs[0]].norm2,
                        crate::circuit::round_bootstraps(&c.round_chunks(shift)) as u32,
                        false,
                    ),
                    _ => (self.bits[node.inputs[0]], x.norm2, 0, false),
                };
                push(NoiseRequirement {
                    encoding_bits,
                    read_bits: *in_width,
                    norm2_sq: nu * nu,
                    extra_pbs: extra,
                    extra_from_rounding: true,
                    rounding_read: false,
                    count: elems,
                    decryption: false,
                    approx,
                });
            }
            COp::Round { mode: Rounding::Approximate, .. } => {}
            COp::Round { shift, mode: Rounding::Exact } => {
                // Per chunk of k bits at bit j: the sign read and (k > 1) the (k-1)-bit
                // table of the rest, both with the noise scaled by 2^(P-j-k+1) and a
                // (k-1)-bit margin (see Circuit::round_chunks), after `extra` bootstrap
                // outputs have been added to the value.
                let x = input.expect("round input");
                let (mut j, mut extra) = (0u32, 0u32);
                for k in c.round_chunks(*shift) {
                    for _ in 0..crate::circuit::chunk_bootstraps(k) {
                        push(NoiseRequirement {
                            encoding_bits: self.bits[node.inputs[0]] - j,
                            read_bits: k - 1,
                            norm2_sq: x.norm2 * x.norm2,
                            extra_pbs: extra,
                            extra_from_rounding: true,
                            rounding_read: true,
                            count: elems,
                            decryption: false,
                            approx: false,
                        });
                        extra += 1;
                    }
                    j += k;
                }
            }
            COp::MaxPool { pool, diff_width, shift, .. } => {
                // An approximate comparison reads the top bits of a difference moved to
                // `diff_width + shift` bits (its noise scaled by 2^-shift less). The `i`-th
                // comparison of a window reads `x_i - m`, where the running maximum `m` is
                // the window's first element plus the `i - 1` comparison outputs before it.
                let x = input.expect("max pool input");
                let counts = kernels::window_counts(&x.shape, pool);
                let longest = counts.iter().copied().max().unwrap_or(0);
                for i in 1..longest {
                    push(NoiseRequirement {
                        encoding_bits: self.bits[node.inputs[0]] - shift,
                        read_bits: *diff_width,
                        norm2_sq: 2.0 * x.norm2 * x.norm2,
                        extra_pbs: (i - 1) as u32,
                        extra_from_rounding: false,
                        rounding_read: false,
                        count: counts.iter().filter(|&&c| c > i).count(),
                        decryption: false,
                        approx: *shift > 0,
                    });
                }
            }
            _ => {}
        }
        if id == c.output {
            // Scores read to their top bits only may be a step off, like an approximate
            // rounding's reads (see `Circuit::output_bits`).
            // Its top bits are read in place (no multiplication moves them), so the noise
            // is not scaled: the requirement's encoding is the read's.
            let read_bits = self.output_read_bits(c);
            push(NoiseRequirement {
                encoding_bits: read_bits,
                read_bits,
                norm2_sq: node.norm2 * node.norm2,
                extra_pbs: 0,
                extra_from_rounding: false,
                rounding_read: false,
                count: elems,
                decryption: true,
                approx: read_bits < self.bits[id],
            });
        }
        reqs
    }
}
