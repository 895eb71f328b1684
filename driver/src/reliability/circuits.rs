//! The measured circuits: for each kind of bootstrap, a circuit whose bootstraps of that
//! kind read values carrying the noise the model assumes, built in the circuit IR and
//! checked by the compiler's analyses like a compiled one.
//!
//! Every circuit starts the same way: 1-bit inputs go through an identity table (the
//! *sources*: real bootstrap outputs, as what a linear layer reads in a network), a linear
//! layer mixes 16 channels with the weights of [`weights`] (the noise 2-norm of every
//! output is `sqrt(72)`), and a clear addition per element moves each mixed value to a
//! chosen *target* (so that the values read are spread as the measurement needs, whatever
//! the sources). The weight matrix is orthogonal, so the noise of the 16 outputs of one
//! row, Gaussian combinations of the same independent source noises, is uncorrelated and
//! hence independent: every bootstrap measured is an independent trial.

use anyhow::{Result, bail};
use fhec_compiler::analysis::{noise, range};
use fhec_ir::circuit::eval::eval_node;
use fhec_ir::circuit::{
    CNode, COp, Circuit, InputQuant, OutputQuant, Range, Rounding, TableIndex, kernels, verify::verify,
};
use fhec_ir::nn::Pool;
use ndarray::{Array2, Array4, ArrayD, IxDyn};

/// Channels the linear layer mixes.
pub(super) const CHANNELS: usize = 16;

/// The mixing weights: the Kronecker product of the quaternion matrix of `(3, -2, 1, 2)`
/// (orthogonal, rows of squared norm 18) and the 4x4 Hadamard matrix, a 16x16 orthogonal
/// integer matrix whose rows have squared norm 72 (entries ±1 to ±3, like a 4-bit layer's).
pub(super) fn weights() -> Array2<i64> {
    let (a, b, c, d) = (3i64, -2, 1, 2);
    let q = [[a, b, c, d], [-b, a, -d, c], [-c, d, a, -b], [-d, -c, b, a]];
    let h = [[1i64, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]];
    Array2::from_shape_fn((CHANNELS, CHANNELS), |(i, j)| q[i / 4][j / 4] * h[i % 4][j % 4])
}

/// A small deterministic generator (SplitMix64) for inputs and targets.
pub(super) struct Rng(pub u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi]`.
    pub(super) fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }
}

/// A circuit under construction, with every node's clear value on the chosen input.
struct Builder {
    nodes: Vec<CNode>,
    ivs: Vec<range::Intervals>,
    vars: Vec<ArrayD<f64>>,
    vals: Vec<ArrayD<i64>>,
}

impl Builder {
    /// A circuit whose input (1-bit values of `shape`) is `input`.
    fn new(shape: &[usize], input: ArrayD<i64>) -> Builder {
        let r = Range { min: 0, max: 1 };
        let node = CNode {
            name: "input".into(),
            op: COp::Input { bits: 1 },
            inputs: vec![],
            shape: shape.to_vec(),
            range: r,
            norm2: 1.0,
        };
        Builder {
            nodes: vec![node],
            ivs: vec![range::Intervals::uniform(shape, r)],
            vars: vec![ArrayD::ones(IxDyn(shape))],
            vals: vec![input],
        }
    }

    /// Appends a node (with the range `declared` instead of the analysis' hull: a
    /// calibrated declaration of a clear addition).
    fn push(&mut self, name: &str, op: COp, inputs: Vec<usize>, shape: &[usize], declared: Option<Range>) -> usize {
        let mut iv = range::transfer(&op, &inputs.iter().map(|&i| &self.ivs[i]).collect::<Vec<_>>(), shape);
        let r = declared.unwrap_or_else(|| iv.range());
        iv.clamp(r);
        let var = noise::transfer(&op, &inputs.iter().map(|&i| &self.vars[i]).collect::<Vec<_>>(), shape);
        let node = CNode { name: name.into(), op, inputs, shape: shape.to_vec(), range: r, norm2: noise::norm2(&var) };
        let ins: Vec<&ArrayD<i64>> = node.inputs.iter().map(|&i| &self.vals[i]).collect();
        let val = eval_node(&node, &ins).expect("the measured circuits stay in range");
        self.nodes.push(node);
        self.ivs.push(iv);
        self.vars.push(var);
        self.vals.push(val);
        self.nodes.len() - 1
    }

    /// The sources (an identity table of the input), mixed by [`weights`] (a dense layer
    /// over the last axis of `[rows, 16]`, or a 1x1 convolution of `[1, 16, h, w]`), then
    /// moved to `targets` by a clear addition declaring the range `[lo, hi]`. Returns the
    /// addition's node.
    fn front(&mut self, targets: &ArrayD<i64>, (lo, hi): (i64, i64)) -> usize {
        let shape = self.nodes[0].shape.clone();
        let src = self.push("source", identity(1), vec![0], &shape, None);
        let op = if shape.len() == 2 {
            COp::Dense { weight: weights() }
        } else {
            let w = weights();
            let kernel = Array4::from_shape_fn((CHANNELS, CHANNELS, 1, 1), |(o, i, _, _)| w[[o, i]]);
            COp::Conv { weight: kernel, strides: [1, 1], pads: [0; 4], dilations: [1, 1], groups: 1 }
        };
        let mix = self.push("mix", op, vec![src], &shape, None);
        let shift = targets - &self.vals[mix];
        self.push("target", COp::AddClear(shift), vec![mix], &shape, Some(Range { min: lo, max: hi }))
    }

    /// The circuit, with `output` as its output, verified like a compiled one.
    fn finish(self, name: &str, output: usize) -> Result<Circuit> {
        let outputs: usize = self.nodes[output].shape.iter().product();
        let mut c = Circuit {
            name: name.into(),
            metadata: Default::default(),
            nodes: self.nodes,
            output,
            input_quant: InputQuant { pixel_to_q: (0..256).map(|p| p & 1).collect() },
            output_quant: OutputQuant { scale: vec![1.0; outputs], offset: vec![0.0; outputs] },
            round_chunk: 1,
            output_bits: None,
        };
        c.round_chunk = c.default_round_chunk();
        verify(&c)?;
        range::verify(&c)?;
        noise::verify(&c)?;
        Ok(c)
    }
}

/// The identity table on `bits` bits.
fn identity(bits: u32) -> COp {
    COp::Table { in_width: bits, index: TableIndex::Shared, tables: vec![(0..1i64 << bits).collect()] }
}

/// A measured circuit and what its bootstraps should compute.
pub(super) struct Bench {
    /// The circuit.
    pub circuit: Circuit,
    /// Its input integers (row-major).
    pub input: Vec<i64>,
    /// The value of every element before the measured bootstraps (the targets).
    pub targets: Vec<i64>,
    /// The node of the sources (whose failures would spoil the measurement).
    pub source: usize,
    /// The node whose bootstraps are measured.
    pub measured: usize,
    /// The table reading an exact rounding's result (measured too), if any.
    pub after: Option<usize>,
}

/// Random 1-bit inputs of `shape`.
fn random_input(shape: &[usize], rng: &mut Rng) -> ArrayD<i64> {
    ArrayD::from_shape_fn(IxDyn(shape), |_| (rng.next() & 1) as i64)
}

fn bench(b: Builder, name: &str, output: usize, measured: usize, after: Option<usize>) -> Result<Bench> {
    let input = b.vals[0].iter().copied().collect();
    let targets = b.vals[3].iter().copied().collect();
    Ok(Bench { circuit: b.finish(name, output)?, input, targets, source: 1, measured, after })
}

/// Table lookups: `rows × 16` values spread evenly over `[0, 2^width)`, each read by an
/// identity table of `width` bits.
pub(super) fn table(rows: usize, width: u32, rng: &mut Rng) -> Result<Bench> {
    let shape = [rows, CHANNELS];
    let mut b = Builder::new(&shape, random_input(&shape, rng));
    let max = (1i64 << width) - 1;
    let targets = ArrayD::from_shape_fn(IxDyn(&shape), |_| rng.range(0, max));
    let x = b.front(&targets, (0, max));
    let t = b.push("read", identity(width), vec![x], &shape, None);
    bench(b, "table", t, t, None)
}

/// Exact rounding of `shift` bits off `bits`-bit values spread evenly over `[0, 2^bits)`,
/// then an identity table reading the result (as the compiler emits it).
pub(super) fn exact_rounding(rows: usize, bits: u32, shift: u32, rng: &mut Rng) -> Result<Bench> {
    let shape = [rows, CHANNELS];
    let mut b = Builder::new(&shape, random_input(&shape, rng));
    let max = (1i64 << bits) - 1;
    let targets = ArrayD::from_shape_fn(IxDyn(&shape), |_| rng.range(0, max));
    let x = b.front(&targets, (0, max));
    let r = b.push("round", COp::Round { shift, mode: Rounding::Exact }, vec![x], &shape, None);
    let t = b.push("read", identity(bits - shift), vec![r], &shape, None);
    bench(b, "exact-rounding", t, r, Some(t))
}

/// Approximate rounding of `shift` bits, read by an identity table of `width` bits: values
/// spread evenly over every step but the guard steps `0` and `2^width - 1`.
pub(super) fn approximate_rounding(rows: usize, width: u32, shift: u32, rng: &mut Rng) -> Result<Bench> {
    let shape = [rows, CHANNELS];
    let mut b = Builder::new(&shape, random_input(&shape, rng));
    let (lo, hi) = (1i64 << shift, (((1i64 << width) - 1) << shift) - 1);
    let targets = ArrayD::from_shape_fn(IxDyn(&shape), |_| rng.range(lo, hi));
    let x = b.front(&targets, (lo, hi));
    let r = b.push("round", COp::Round { shift, mode: Rounding::Approximate }, vec![x], &shape, None);
    let t = b.push("read", identity(width), vec![r], &shape, None);
    bench(b, "approximate-rounding", t, t, None)
}

/// The comparisons of a max pooling's windows: `(diff_offset, diff_width, shift)` for values
/// of span `span`, as the compiler sizes them (exact, or approximate reading `width` bits).
pub(super) fn comparison_shape(span: i64, approx_width: Option<u32>) -> (i64, u32, u32) {
    let bits_for = |v: i64| (64 - (v.max(0) as u64).leading_zeros()).max(1);
    match approx_width {
        None => (span, bits_for(2 * span), 0),
        Some(width) => {
            let mut s = 1u32;
            while s < 40 && 2 * span + 4 * (1i64 << s) >= 1i64 << (width + s) {
                s += 1;
            }
            (span + 2 * (1i64 << s), width, s)
        }
    }
}

/// Max pooling over 2x2 windows of `[1, 16, 2·half_h, 2·half_w]` values of `bits` bits, each
/// window's values increasing in the order the comparisons take them by a gap between
/// `gap.0` and `gap.1`, so that every comparison lands where the pairwise maximum is
/// injective in what it reads: every failure (and every step off) shows in its output.
/// Exact comparisons, or approximate ones reading `approx_width` bits.
pub(super) fn max_pool(
    (half_h, half_w): (usize, usize),
    bits: u32,
    gap: (i64, i64),
    approx_width: Option<u32>,
    rng: &mut Rng,
) -> Result<Bench> {
    let shape = [1, CHANNELS, 2 * half_h, 2 * half_w];
    let mut b = Builder::new(&shape, random_input(&shape, rng));
    let max = (1i64 << bits) - 1;
    let pool = Pool { kernel: [2, 2], strides: [2, 2], pads: [0; 4], dilations: [1, 1], ceil_mode: false };
    let mut targets = ArrayD::zeros(IxDyn(&shape));
    for win in kernels::window_indices(&shape, &pool) {
        let mut v = rng.range(0, (max - 3 * gap.1).max(0));
        for &i in &win {
            if v > max {
                bail!("windows of 4 values {}-{} apart do not fit {bits} bits", gap.0, gap.1);
            }
            targets.as_slice_mut().expect("standard layout")[i] = v;
            v += rng.range(gap.0, gap.1);
        }
    }
    let x = b.front(&targets, (0, max));
    let (diff_offset, diff_width, shift) = comparison_shape(max, approx_width);
    let op = COp::MaxPool { pool: pool.clone(), diff_offset, diff_width, shift };
    let out_shape = kernels::pool_shape(&shape, &pool);
    let m = b.push("pool", op, vec![x], &out_shape, None);
    bench(b, if approx_width.is_some() { "approximate-max-pool" } else { "max-pool" }, m, m, None)
}
