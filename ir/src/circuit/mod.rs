//! The circuit IR: what a TFHE server evaluates, as integer-only ops.
//!
//! A [`Circuit`] is a list of [`CNode`]s in SSA form (a node's inputs are earlier
//! nodes). Values are tensors of integers. Linear ops (convolutions and dense layers
//! with clear integer weights, clear additions, sums of ciphertexts, sum pooling) are
//! leveled in TFHE; every non-linear step is a table lookup, which is one programmable
//! bootstrap per element ([`COp::Table`]), or several ([`COp::MaxPool`] uses one per
//! pairwise max, exact [`COp::Round`] one or two per chunk of removed bits).
//!
//! Every node carries the range of its values (from interval analysis over the integer
//! weights; a clear addition before a table may declare the narrower range the calibration
//! images produce, see `fhec_compiler::analysis`) and the noise 2-norm of the linear chain
//! since the last bootstrap (the square root of the largest sum of squared weights
//! feeding one element, as Concrete's MANP analysis computes it).

pub mod eval;
pub mod kernels;
pub mod print;
pub mod verify;

use std::collections::BTreeMap;

use ndarray::{Array2, Array4, ArrayD};
use serde::{Deserialize, Serialize};

use crate::nn::Pool;

/// Index of a node in [`Circuit::nodes`].
pub type ValueId = usize;

/// Closed integer range of every element of a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    /// Smallest value.
    pub min: i64,
    /// Largest value.
    pub max: i64,
}

impl Range {
    /// Bits needed to hold `max - min + 1` distinct values (at least 1).
    pub fn width(&self) -> u32 {
        let span = self.max.abs_diff(self.min);
        (64 - span.leading_zeros()).max(1)
    }

    /// Whether `v` lies in the range.
    pub fn contains(&self, v: i64) -> bool {
        self.min <= v && v <= self.max
    }
}

/// How an accumulator wider than a table's read is rounded before the table reads it (the
/// mode of a [`COp::Round`], and the compiler's option).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Rounding {
    /// Exactly, with rounding bootstraps (two per chunk of removed bits): encrypted
    /// evaluation equals the simulation bit for bit.
    #[default]
    Exact,
    /// No rounding bootstraps: the table reads the accumulator's top bits directly, the
    /// removed bits acting as noise, so a read near a step boundary may land one step off
    /// (the simulator samples these steps from the chosen parameters' noise). Far cheaper;
    /// costs one step of guard at each end of the table.
    Approximate,
}

impl Rounding {
    /// Whether this is [`Rounding::Approximate`].
    pub fn is_approximate(self) -> bool {
        self == Rounding::Approximate
    }
}

/// A rounding mode that is neither `exact` nor `approximate`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown rounding '{0}' (expected exact or approximate)")]
pub struct UnknownRounding(pub String);

impl std::str::FromStr for Rounding {
    type Err = UnknownRounding;
    fn from_str(s: &str) -> Result<Self, UnknownRounding> {
        match s {
            "exact" => Ok(Rounding::Exact),
            "approximate" | "approx" => Ok(Rounding::Approximate),
            _ => Err(UnknownRounding(s.into())),
        }
    }
}

impl std::fmt::Display for Rounding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Rounding::Exact => "exact",
            Rounding::Approximate => "approximate",
        })
    }
}

/// How lookup tables are indexed along a value's elements.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TableIndex {
    /// One table for every element.
    Shared,
    /// One table per index along this axis (per channel).
    PerAxis(usize),
    /// One table per element (row-major).
    PerElement,
}

/// An integer circuit operation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum COp {
    /// The encrypted input: the client's quantized image, values in `[0, 2^bits)`.
    Input {
        /// Bits per input value.
        bits: u32,
    },
    /// 2-D convolution with clear integer weights `[out, in / groups, kh, kw]` and zero padding.
    Conv {
        /// Integer kernel.
        weight: Array4<i64>,
        /// Strides.
        strides: [usize; 2],
        /// Padding `[top, left, bottom, right]` (zeros).
        pads: [usize; 4],
        /// Dilations.
        dilations: [usize; 2],
        /// Groups.
        groups: usize,
    },
    /// `y = W x` over the last axis, `W` of shape `[out, in]`.
    Dense {
        /// Integer weights.
        weight: Array2<i64>,
    },
    /// Adds a clear integer tensor (broadcast to the value's shape).
    AddClear(ArrayD<i64>),
    /// Sum of two ciphertext tensors of the same shape.
    Add,
    /// Difference of two ciphertext tensors of the same shape.
    Sub,
    /// Sum over pooling windows (zero padding).
    SumPool(Pool),
    /// Max over pooling windows (padding ignored), computed as a chain of pairwise maxima
    /// `m + relu(x - m)`, each relu a table reading `diff + diff_offset` in
    /// `[0, 2^diff_width)`.
    ///
    /// With `shift > 0` the comparisons are approximate, like an approximate rounding: a
    /// table reads the top `diff_width` bits of the `diff_width + shift`-bit offset
    /// difference, the step `q = (d + diff_offset) >> shift` (noise may move it one step), and
    /// adds `max(0, q·2^shift + 2^(shift-1) - diff_offset)` to the running maximum
    /// ([`kernels::approx_max_step`]). Each comparison is then within `2^shift` of the exact
    /// one: max pooling of wide accumulators (before their activation, where it commutes
    /// with any nondecreasing one) reads as few bits as a table does.
    MaxPool {
        /// Window geometry.
        pool: Pool,
        /// Offset that makes every pairwise difference non-negative.
        diff_offset: i64,
        /// Width of the offset differences (their top bits with `shift`).
        diff_width: u32,
        /// Low bits of the differences the comparisons do not read (0: exact).
        #[serde(default)]
        shift: u32,
    },
    /// Exact rounding down: `v >> shift` for `v >= 0` (the compiler adds `2^(shift-1)` first
    /// for round-to-nearest). In TFHE the removed bits go in chunks from the bottom
    /// ([`Circuit::round_chunks`]): a 1-bit chunk costs one bootstrap (its sign), a `k`-bit
    /// chunk two (its top bit's sign, then a `(k-1)`-bit table of the rest).
    ///
    /// With [`Rounding::Approximate`], no bootstrap rounds: the tables that read the value (its only readers)
    /// read the top bits of the unrounded ciphertext directly, the removed bits acting as
    /// noise. Each read is then `(v + e) >> shift` for the bootstrap's noise `e`, which is
    /// `v >> shift` or one step off when `v` lies within a few noise deviations of a step
    /// boundary ([`crate::params::FheSetup::approx_round_sigma`] gives the deviation; the
    /// simulator can sample it). Such a value keeps one step of guard on each side of its
    /// range, `[1, 2^w - 2]` for a `w`-bit table, so that an off-by-one stays in the table.
    Round {
        /// Bits removed.
        shift: u32,
        /// [`Rounding::Approximate`]: no rounding bootstraps, a read that may be one step
        /// off.
        mode: Rounding,
    },
    /// Table lookup: `y = table[v]`, `v` in `[0, 2^in_width)`.
    Table {
        /// Width of the index.
        in_width: u32,
        /// How elements pick their table.
        index: TableIndex,
        /// The tables, each with `2^in_width` entries.
        tables: Vec<Vec<i64>>,
    },
    /// Row-major reshape to the node's shape (no computation).
    Reshape,
    /// Axis permutation (no computation).
    Transpose {
        /// Output axis `i` is input axis `perm[i]`.
        perm: Vec<usize>,
    },
    /// A signed gather over the row-major elements: output element `i` is input element
    /// `src[i]`, or `max - x[src[i]]` where `negate[i]`. No bootstrap: the ciphertexts move,
    /// and a negation is `max·Δ - ct`, which keeps the noise. It undoes a keyed image
    /// transform folded into a circuit ([`crate::transform`]): the client sends the
    /// transformed image, and the circuit starts by putting its pixels back.
    Gather {
        /// Source element of each output element (a permutation of `0..len`).
        src: Vec<u32>,
        /// Whether each output element is negated.
        negate: Vec<bool>,
        /// The value a negation subtracts from.
        max: i64,
    },
}

impl COp {
    /// Short name for printing and statistics.
    pub fn name(&self) -> &'static str {
        match self {
            COp::Input { .. } => "input",
            COp::Conv { .. } => "conv",
            COp::Dense { .. } => "dense",
            COp::AddClear(_) => "add_clear",
            COp::Add => "add",
            COp::Sub => "sub",
            COp::SumPool(_) => "sum_pool",
            COp::MaxPool { .. } => "max_pool",
            COp::Round { .. } => "round",
            COp::Table { .. } => "table",
            COp::Reshape => "reshape",
            COp::Transpose { .. } => "transpose",
            COp::Gather { .. } => "gather",
        }
    }

    /// Number of inputs.
    pub fn arity(&self) -> usize {
        match self {
            COp::Input { .. } => 0,
            COp::Add | COp::Sub => 2,
            _ => 1,
        }
    }

    /// Whether the op's output is freshly bootstrapped (its noise does not depend on its input's).
    pub fn bootstraps(&self) -> bool {
        matches!(self, COp::Table { .. } | COp::MaxPool { .. })
    }
}

/// One node of the circuit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CNode {
    /// Provenance (`{nn_node}.{role}`).
    pub name: String,
    /// The operation.
    pub op: COp,
    /// Input nodes.
    pub inputs: Vec<ValueId>,
    /// Output shape.
    pub shape: Vec<usize>,
    /// Exact range of every output element.
    pub range: Range,
    /// Noise 2-norm of the linear chain ending here, relative to a fresh or bootstrapped
    /// ciphertext (1 for inputs and bootstrapped values).
    pub norm2: f64,
}

/// How the client maps 8-bit pixels to the circuit's input integers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputQuant {
    /// `pixel_to_q[p]` is the integer encrypted for pixel value `p` (256 entries).
    pub pixel_to_q: Vec<i64>,
}

/// How the client turns the decrypted output integers into scores.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutputQuant {
    /// Per output element: `score = scale * v + offset`.
    pub scale: Vec<f64>,
    /// Per output element offset.
    pub offset: Vec<f64>,
}

impl OutputQuant {
    /// Dequantizes decrypted output integers.
    pub fn scores(&self, v: &[i64]) -> Vec<f64> {
        v.iter().zip(self.scale.iter().zip(&self.offset)).map(|(&q, (&s, &o))| s * q as f64 + o).collect()
    }
}

/// An integer circuit: node 0 is the input, [`Circuit::output`] the result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Circuit {
    /// Model name.
    pub name: String,
    /// Metadata carried from the model (`fhec.preprocess`, ...).
    pub metadata: BTreeMap<String, String>,
    /// Nodes in SSA order.
    pub nodes: Vec<CNode>,
    /// The node whose value the client decrypts.
    pub output: ValueId,
    /// Client-side input quantization.
    pub input_quant: InputQuant,
    /// Client-side output dequantization.
    pub output_quant: OutputQuant,
    /// Widest chunk of bits one step of exact rounding removes (at least 1; see
    /// [`Circuit::round_chunks`]). Lowering sets one more than the widest table
    /// ([`Circuit::default_round_chunk`]); parameter selection keeps the cheapest width.
    pub round_chunk: u32,
    /// How the client reads the output: `None`, exactly (every bit of every score, as the
    /// simulator computes it); `Some(b)`, its top `b` bits (of its encoding), the lower ones
    /// carrying the noise of the linear chain, so a decrypted score may differ from the
    /// simulated one by a few units. Scores only feed an argmax, and their accumulators are
    /// wide (often 20 bits), so reading their top 12 bits loses nothing in practice and frees
    /// the parameters from the one requirement that a wide accumulator's last bit imposes.
    /// The simulator samples that noise ([`crate::params::FheSetup::approx_round_sigma`]).
    #[serde(default)]
    pub output_bits: Option<u32>,
}

/// Statistics of the bootstraps of a circuit.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BootstrapStats {
    /// Table bootstraps per inference, by the width they read.
    pub by_width: BTreeMap<u32, usize>,
    /// Bootstraps of exact rounding (sign extractions and chunk tables, see
    /// [`Circuit::round_chunks`]).
    pub rounding: usize,
    /// Largest noise 2-norm feeding a bootstrap.
    pub max_norm2: f64,
    /// Of the table bootstraps, those reading a value under the input key
    /// ([`Circuit::on_input_key`]): their keyswitches are shorter.
    #[serde(default)]
    pub tables_on_input_key: usize,
    /// Of the rounding bootstraps, those reading a value under the input key.
    #[serde(default)]
    pub rounding_on_input_key: usize,
}

impl BootstrapStats {
    /// Total bootstraps per inference.
    pub fn total(&self) -> usize {
        self.by_width.values().sum::<usize>() + self.rounding
    }

    /// Widest table read.
    pub fn max_width(&self) -> u32 {
        self.by_width.keys().copied().max().unwrap_or(0)
    }
}

/// Bootstraps that remove one `k`-bit chunk of exact rounding: its top bit's sign, and for
/// `k > 1` a table of the rest.
pub fn chunk_bootstraps(k: u32) -> usize {
    if k == 1 { 1 } else { 2 }
}

/// Bootstraps of one value's exact rounding in `chunks`.
pub fn round_bootstraps(chunks: &[u32]) -> usize {
    chunks.iter().map(|&k| chunk_bootstraps(k)).sum()
}

impl Circuit {
    /// The widest table the circuit reads (0 without tables).
    pub fn max_table_width(&self) -> u32 {
        self.nodes
            .iter()
            .filter_map(|n| match &n.op {
                COp::Table { in_width, .. } => Some(*in_width),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    /// Whether some value is rounded exactly (with rounding bootstraps).
    pub fn has_exact_rounding(&self) -> bool {
        self.nodes.iter().any(|n| matches!(n.op, COp::Round { mode: Rounding::Exact, .. }))
    }

    /// Whether some value is rounded approximately (read noise may move it one step): an
    /// approximate rounding, or an approximate max pooling.
    pub fn has_approx_rounding(&self) -> bool {
        self.nodes
            .iter()
            .any(|n| matches!(n.op, COp::Round { mode: Rounding::Approximate, .. } | COp::MaxPool { shift: 1.., .. }))
    }

    /// Whether encrypted evaluation may differ from the noise-free simulation within the
    /// circuit's semantics: approximate rounding's one-step-off reads, or scores read to
    /// their top bits only ([`Circuit::output_bits`]). Such circuits are compared by class.
    pub fn is_approximate(&self) -> bool {
        self.has_approx_rounding() || self.output_bits.is_some()
    }

    /// One more than the widest table: no rounding bootstrap then reads more bits than a
    /// table already does.
    pub fn default_round_chunk(&self) -> u32 {
        1 + self.max_table_width()
    }

    /// How a [`COp::Round`] of `shift` bits removes them, lowest chunk first: chunks of at
    /// most [`Circuit::round_chunk`] bits, as few bootstraps as possible (full chunks,
    /// then the remainder; a remainder of one bit costs one bootstrap instead of two).
    ///
    /// A `k`-bit chunk at bit `j` of a value whose bits below `j` are zero: multiplied by
    /// `2^(P-j-k+1)` (P its encoding bits), the chunk fills the top `k` bits of the torus;
    /// one bootstrap reads the sign (the chunk's top bit `b`) and `b·2^(j+k-1)` is
    /// subtracted; the rest `r` (`k-1` bits, the top bit now zero) is read by a `(k-1)`-bit
    /// table and `r·2^j` subtracted. Each read has the margin of a `(k-1)`-bit table and the
    /// input noise scaled as for a 1-bit step at `j` (the noise model's
    /// [`NoiseRequirement`](crate::params::NoiseRequirement)s).
    pub fn round_chunks(&self, shift: u32) -> Vec<u32> {
        let k = self.round_chunk.clamp(1, shift.max(1));
        let mut chunks = vec![k; (shift / k) as usize];
        if !shift.is_multiple_of(k) {
            chunks.push(shift % k);
        }
        chunks
    }

    /// The input node's shape.
    pub fn input_shape(&self) -> &[usize] {
        &self.nodes[0].shape
    }

    /// Bootstraps of one node (table lookups by width, rounding bootstraps).
    pub fn node_bootstraps(&self, id: ValueId) -> (Option<(u32, usize)>, usize) {
        let n = &self.nodes[id];
        let elems: usize = n.shape.iter().product();
        match &n.op {
            COp::Table { in_width, .. } => (Some((*in_width, elems)), 0),
            COp::MaxPool { pool, diff_width, .. } => {
                let input = &self.nodes[n.inputs[0]].shape;
                (Some((*diff_width, kernels::max_pool_comparisons(input, pool))), 0)
            }
            COp::Round { mode: Rounding::Approximate, .. } => (None, 0),
            COp::Round { shift, .. } => (None, elems * round_bootstraps(&self.round_chunks(*shift))),
            _ => (None, 0),
        }
    }

    /// Which values are linear combinations of the input and of exact rounding's outputs
    /// only: with a rounding key, these ciphertexts live on the prefix of the big key that
    /// inputs are encrypted under (`TfheParams::input_dimension`), so keyswitching them
    /// costs less. Table and max-pool outputs are on the whole key.
    pub fn on_input_key(&self) -> Vec<bool> {
        let mut on = vec![false; self.nodes.len()];
        for (id, n) in self.nodes.iter().enumerate() {
            on[id] = match n.op {
                COp::Input { .. } => true,
                COp::Table { .. } | COp::MaxPool { .. } => false,
                _ => n.inputs.iter().all(|&i| on[i]),
            };
        }
        on
    }

    /// Bootstrap counts and widths of one inference.
    pub fn bootstrap_stats(&self) -> BootstrapStats {
        let mut s = BootstrapStats::default();
        let on = self.on_input_key();
        for id in 0..self.nodes.len() {
            let (t, r) = self.node_bootstraps(id);
            let reads_input_key = matches!(self.nodes[id].op, COp::Table { .. } | COp::Round { .. })
                && self.nodes[id].inputs.first().is_some_and(|&i| on[i]);
            if let Some((w, n)) = t
                && n > 0
            {
                *s.by_width.entry(w).or_default() += n;
                if reads_input_key {
                    s.tables_on_input_key += n;
                }
            }
            s.rounding += r;
            if reads_input_key {
                s.rounding_on_input_key += r;
            }
            if t.is_some() || r > 0 {
                s.max_norm2 = s.max_norm2.max(self.table_input_norm2(id));
            }
        }
        s
    }

    /// The noise 2-norm feeding the bootstraps of node `id`.
    pub fn table_input_norm2(&self, id: ValueId) -> f64 {
        let n = &self.nodes[id];
        match &n.op {
            // A pairwise max reads x - m, where m = m' + relu(..) carries one bootstrap more.
            COp::MaxPool { .. } => {
                let x = self.nodes[n.inputs[0]].norm2;
                (2.0 * x * x + 1.0).sqrt()
            }
            _ => n.inputs.first().map_or(1.0, |&i| self.nodes[i].norm2),
        }
    }
}
