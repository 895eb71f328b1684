//! Post-training quantization: NN IR (float) -> circuit IR (integer).
//!
//! **Scheme.** Every integer tensor `v` of the circuit stands for a float tensor through a
//! dequantization map `x ≈ scale ⊙ v + offset` ([`Affine`], per element, broadcast).
//! * The client quantizes the image (`pixel -> q`, a 256-entry map), so the input is exact
//!   at 8 bits and the offset of a normalisation (`mnist-norm`) is just an offset.
//! * A linear op (Conv, Dense) on `v` absorbs the input scale into its weights
//!   (`W' = W · diag(scale)`), quantizes them per output channel to `weight_bits` (or keeps
//!   the grid they already lie on, for quantized or QAT models), and accumulates exactly in
//!   integers; the input offset and the bias become the output offset, computed by running
//!   the float op on the offset tensor (so zero padding is exact).
//! * Affine element-wise ops (Add/Mul by constants, BatchNorm) only change the map.
//! * A chain of non-linear element-wise ops (activations, a square, fake quantization,
//!   affine ops between them) becomes one table lookup that dequantizes its input, applies
//!   the chain and requantizes to `act_bits` (scale from calibration) or to the grid of a
//!   trailing `FakeQuant`. Tables are per channel when the maps or the chain vary per
//!   channel. Before a table, a clear addition makes the accumulator non-negative; if it is
//!   still wider than `max_table_bits`, an exact rounding drops its low bits.
//! * Average pooling is a sum whose scale moves into the map; max pooling is exact on
//!   integers (a chain of pairwise maxima through tables in TFHE).
//! * A trailing Softmax / LogSoftmax is dropped: it does not change the argmax.
//!
//! **Analyses** ([`crate::analysis`]): ranges are exact interval arithmetic over the
//! integer weights from the input range, narrowed at table inputs by calibration; the noise
//! 2-norm of each value is the square root of the largest sum of squared weights from the
//! last bootstrap, propagated per element. The lowering runs their transfer functions on
//! every node it emits; the range and noise verifiers check the finished circuit.

mod lower;
mod maps;
mod node;

use std::collections::{BTreeMap, HashMap};

use fhec_ir::nn::{Graph, NodeId, Tensor, interp};

pub use lower::quantize;

/// Bits of the scores the client reads by default: their top 12 (the lower bits of a wide
/// accumulator carry the linear chain's noise, which the simulator samples). Scores only
/// feed an argmax, so 12 bits (a step of 1/4096 of their range) cost next to no accuracy, and they
/// free the parameters from what the last bit of a 13- to 20-bit score would demand (for the
/// bundled seed networks, 2 bootstrap decomposition levels instead of 3 at N = 4096, 4
/// instead of 5 at N = 8192).
/// `fhec build --score-bits all` reads every bit.
pub const DEFAULT_SCORE_BITS: u32 = 12;

/// Bit widths and limits of the quantization.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QuantOptions {
    /// Bits of the encrypted input values (8 keeps 8-bit pixels exact).
    pub input_bits: u32,
    /// Bits of the signed weights (per output channel scale).
    pub weight_bits: u32,
    /// Bits of the activations (table outputs).
    pub act_bits: u32,
    /// Widest table index; wider accumulators are rounded exactly first.
    pub max_table_bits: u32,
    /// Which ranges size the tables (see [`RangeMode`]).
    pub ranges: RangeMode,
    /// With calibrated ranges, the margin added on each side of a measured range, in
    /// percent of its span.
    pub range_margin_pct: u32,
    /// How a wide accumulator is rounded before its table (see [`Rounding`]).
    pub rounding: Rounding,
    /// Bits of the scores the client reads, their top ones (`None`: all of them, exactly;
    /// see `Circuit::output_bits`). Default [`DEFAULT_SCORE_BITS`].
    pub output_bits: Option<u32>,
    /// Widths of single layers over the ones above, by NN node name: a linear node's
    /// `weight_bits`, and the `act_bits`, `table_bits` and `rounding` of the table that
    /// applies a node's activation chain (named after the chain's last node).
    pub layers: BTreeMap<String, LayerWidths>,
}

/// Widths of one layer (see [`QuantOptions::layers`]); `None` keeps the global one.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerWidths {
    /// Bits of a linear node's weights.
    pub weight_bits: Option<u32>,
    /// Bits of a table's outputs.
    pub act_bits: Option<u32>,
    /// Widest index a table reads.
    pub table_bits: Option<u32>,
    /// How the table's input is rounded.
    pub rounding: Option<Rounding>,
}

/// How an accumulator wider than `max_table_bits` is rounded before its table reads it
/// (the IR's rounding mode, [`fhec_ir::circuit::Rounding`]).
pub use fhec_ir::circuit::{Rounding, UnknownRounding};

/// How the range a table reads is bounded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RangeMode {
    /// The exact worst case over every possible image (interval analysis): correct for any
    /// input, but often ~10x wider than what images produce, so narrow tables see coarse
    /// values.
    Exact,
    /// The range the calibration images produce in the integer circuit, plus a margin,
    /// within the exact one. Every value inside it is computed exactly (encrypted equals
    /// simulated); an image that drives a value outside it is reported by the simulator
    /// and gets an unspecified encrypted result. This is how TFHE compilers size tables
    /// (Concrete's input sets).
    #[default]
    Calibrated,
}

/// A range mode that is not `exact` or `calibrated`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown range mode '{0}' (expected exact or calibrated)")]
pub struct UnknownRangeMode(pub String);

impl std::str::FromStr for RangeMode {
    type Err = UnknownRangeMode;
    fn from_str(s: &str) -> Result<Self, UnknownRangeMode> {
        match s {
            "exact" => Ok(RangeMode::Exact),
            "calibrated" => Ok(RangeMode::Calibrated),
            _ => Err(UnknownRangeMode(s.into())),
        }
    }
}

impl std::fmt::Display for RangeMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RangeMode::Exact => "exact",
            RangeMode::Calibrated => "calibrated",
        })
    }
}

impl Default for QuantOptions {
    fn default() -> Self {
        QuantOptions {
            input_bits: 8,
            weight_bits: 7,
            act_bits: 7,
            max_table_bits: 11,
            ranges: RangeMode::Calibrated,
            range_margin_pct: 10,
            rounding: Rounding::Exact,
            output_bits: Some(DEFAULT_SCORE_BITS),
            layers: BTreeMap::new(),
        }
    }
}

impl QuantOptions {
    /// The defaults, with the widths a model names in its metadata
    /// (`fhec.compile.input_bits`, `weight_bits`, `act_bits`, `max_table_bits`): a network
    /// trained for given widths (quantization-aware training) says so.
    pub fn for_model(g: &Graph) -> Result<QuantOptions, QuantError> {
        let mut o = QuantOptions::default();
        for (name, field) in [
            ("input_bits", &mut o.input_bits),
            ("weight_bits", &mut o.weight_bits),
            ("act_bits", &mut o.act_bits),
            ("max_table_bits", &mut o.max_table_bits),
        ] {
            let key = format!("fhec.compile.{name}");
            if let Some(v) = g.metadata.get(&key) {
                *field = v
                    .trim()
                    .parse()
                    .map_err(|_| QuantError::Options(format!("model metadata {key}: '{v}' is not a bit width")))?;
            }
        }
        Ok(o)
    }

    /// Weight bits of the linear node `name`.
    pub fn weight_bits_of(&self, name: &str) -> u32 {
        self.layers.get(name).and_then(|l| l.weight_bits).unwrap_or(self.weight_bits)
    }

    /// Output bits of the table applying the chain that ends at node `name`.
    pub fn act_bits_of(&self, name: &str) -> u32 {
        self.layers.get(name).and_then(|l| l.act_bits).unwrap_or(self.act_bits)
    }

    /// Widest index of the table applying the chain that ends at node `name`.
    pub fn table_bits_of(&self, name: &str) -> u32 {
        self.layers.get(name).and_then(|l| l.table_bits).unwrap_or(self.max_table_bits)
    }

    /// Rounding before the table applying the chain that ends at node `name`.
    pub fn rounding_of(&self, name: &str) -> Rounding {
        self.layers.get(name).and_then(|l| l.rounding).unwrap_or(self.rounding)
    }

    /// Checks the options against what the circuit can represent.
    pub fn validate(&self) -> Result<(), QuantError> {
        let bad = |m: String| Err(QuantError::Options(m));
        for (name, l) in &self.layers {
            let layer = QuantOptions {
                weight_bits: l.weight_bits.unwrap_or(self.weight_bits),
                act_bits: l.act_bits.unwrap_or(self.act_bits),
                max_table_bits: l.table_bits.unwrap_or(self.max_table_bits),
                layers: BTreeMap::new(),
                ..self.clone()
            };
            layer.validate().map_err(|e| QuantError::Options(format!("layer '{name}': {e}")))?;
        }
        if let Some(b) = self.output_bits
            && !(4..=62).contains(&b)
        {
            return bad(format!("output bits {b} must be in 4..=62"));
        }
        if !(1..=8).contains(&self.input_bits) {
            return bad(format!("input bits {} must be in 1..=8", self.input_bits));
        }
        if !(2..=16).contains(&self.weight_bits) {
            return bad(format!("weight bits {} must be in 2..=16", self.weight_bits));
        }
        if !(1..=16).contains(&self.act_bits) {
            return bad(format!("activation bits {} must be in 1..=16", self.act_bits));
        }
        if !(2..=20).contains(&self.max_table_bits) {
            return bad(format!("max table bits {} must be in 2..=20", self.max_table_bits));
        }
        if self.range_margin_pct > 1000 {
            return bad(format!("range margin {}% must be at most 1000%", self.range_margin_pct));
        }
        Ok(())
    }
}

/// Why a model could not be quantized.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuantError {
    /// Invalid options.
    #[error("invalid quantization options: {0}")]
    Options(String),
    /// An op or op placement the quantizer does not support.
    #[error("node '{node}' ({op}): {message}")]
    Unsupported {
        /// NN node name.
        node: String,
        /// NN op name.
        op: &'static str,
        /// What is not supported.
        message: String,
    },
    /// Calibration failed.
    #[error("calibration: {0}")]
    Calibration(String),
    /// The produced circuit failed verification (a compiler bug).
    #[error("internal error: {0}")]
    Internal(String),
}

/// Float ranges of every NN node's output over a calibration set.
#[derive(Clone, Debug, Default)]
pub struct Calibration {
    ranges: HashMap<NodeId, (f32, f32)>,
    /// Number of calibration inputs.
    pub count: usize,
    /// The calibration images as 8-bit pixels, when known: the integer circuit runs on
    /// them to measure calibrated ranges ([`RangeMode::Calibrated`]; without images the
    /// exact ranges are used).
    pub pixels: Vec<Vec<u8>>,
}

impl Calibration {
    /// Runs the float interpreter on every input and records each node's min and max.
    pub fn run(g: &Graph, inputs: &[Tensor]) -> Result<Calibration, QuantError> {
        if inputs.is_empty() {
            return Err(QuantError::Calibration("no calibration inputs".into()));
        }
        let mut ranges: HashMap<NodeId, (f32, f32)> = HashMap::new();
        for x in inputs {
            let vals = interp::run_all(g, std::slice::from_ref(x)).map_err(|e| QuantError::Calibration(e.0))?;
            for (id, v) in vals {
                let e = ranges.entry(id).or_insert((f32::INFINITY, f32::NEG_INFINITY));
                for &x in v.iter() {
                    if x.is_finite() {
                        e.0 = e.0.min(x);
                        e.1 = e.1.max(x);
                    }
                }
            }
        }
        Ok(Calibration { ranges, count: inputs.len(), pixels: vec![] })
    }

    /// The recorded range of a node.
    pub fn range(&self, id: NodeId) -> Option<(f32, f32)> {
        self.ranges.get(&id).copied()
    }
}

/// The model's float inputs for 8-bit images (row-major pixels of its input size).
pub fn calibration_inputs(
    g: &Graph,
    pre: fhec_ir::Preprocess,
    calib_images: &[&[u8]],
) -> Result<Vec<Tensor>, QuantError> {
    let shape = g.node(g.inputs()[0]).shape.clone();
    let n: usize = shape.iter().product();
    calib_images
        .iter()
        .map(|px| {
            if px.len() != n {
                return Err(QuantError::Calibration(format!(
                    "a calibration image has {} pixels, the model input {shape:?} takes {n}",
                    px.len()
                )));
            }
            Ok(Tensor::from_shape_vec(ndarray::IxDyn(&shape), px.iter().map(|&p| pre.apply(p)).collect())
                .expect("size checked"))
        })
        .collect()
}

/// Calibrates on 8-bit images (row-major pixels of the model's input size) and quantizes.
pub fn compile_circuit(
    g: &Graph,
    pre: fhec_ir::Preprocess,
    calib_images: &[&[u8]],
    opts: &QuantOptions,
) -> Result<fhec_ir::circuit::Circuit, QuantError> {
    let inputs = calibration_inputs(g, pre, calib_images)?;
    let mut cal = Calibration::run(g, &inputs)?;
    cal.pixels = calib_images.iter().map(|p| p.to_vec()).collect();
    quantize(g, pre, &cal, opts)
}
