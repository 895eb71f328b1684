//! Measured failure rates of every kind of bootstrap the runtime performs, against the
//! noise model's prediction.
//!
//! For one kind and one per-bootstrap failure target `p` (the compiler's `--p-error`),
//! [`measure`] builds a circuit whose bootstraps of that kind read values with the noise the
//! model assumes ([`circuits`]: realistic weights over real bootstrap outputs), lets the
//! parameter search choose 128-bit parameters for the target (`compiler::params::select`,
//! or `select_rounding` with exact rounding), encrypts, evaluates with the server key only
//! (the runtime's `evaluate`, which reports every bootstrap output to an observer), decrypts
//! every bootstrap output and counts those that differ from what the bootstrap should
//! compute. The prediction is the model's own: `Variances::failure_probability` of each
//! bootstrap's requirement (`EncodingPlan::node_requirements`, what the search checks),
//! averaged over the bootstraps counted; for approximate reads, the one-step-off rate is
//! `FheSetup::approx_step_rate`. Each [`Row`] carries the Clopper-Pearson interval of the
//! observed rate and whether the model is claimed exact there or an upper bound
//! ([`Bound`]).

mod circuits;
pub mod stats;

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use fhec_compiler::params::{ParamOptions, select, select_rounding};
use fhec_ir::artifact::ParametrizedCircuit;
use fhec_ir::circuit::{COp, kernels};
use fhec_ir::params::{FheSetup, NoiseRequirement, Variances};
use fhec_runtime::fhe::ClientKey;
use fhec_runtime::fhe::test_support::{BootstrapSite, PhaseDecryptor, evaluate_observed};

use circuits::CHANNELS;

/// Confidence of the intervals.
pub const CONFIDENCE: f64 = 0.999;

/// A kind of bootstrap the runtime performs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A table lookup (keyswitch + PBS reading 4 bits) of a linear layer's output.
    Table,
    /// Exact rounding of 5 bits off an 8-bit accumulator in chunks (sign reads and chunk
    /// tables with the rounding bootstrap), then the 3-bit table that reads the result.
    ExactRounding,
    /// Approximate rounding: a 4-bit table reading the top bits of an 8-bit accumulator.
    ApproximateRounding,
    /// Exact max pooling (2x2 windows): comparison tables of 5 bits.
    MaxPool,
    /// Approximate max pooling (2x2 windows): comparisons reading the top 6 bits of the
    /// differences of 8-bit values.
    ApproximateMaxPool,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 5] =
        [Kind::Table, Kind::ExactRounding, Kind::ApproximateRounding, Kind::MaxPool, Kind::ApproximateMaxPool];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Table => "table",
            Kind::ExactRounding => "exact-rounding",
            Kind::ApproximateRounding => "approximate-rounding",
            Kind::MaxPool => "max-pool",
            Kind::ApproximateMaxPool => "approximate-max-pool",
        }
    }

    /// The kind named `s`.
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// What is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A bootstrap output that is not what it should compute (for approximate reads: two
    /// steps or more off).
    Failure,
    /// An approximate read one step off (its semantics, modelled separately).
    StepOff,
}

/// How the prediction relates to the true rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// The model claims the rate: the interval must contain the prediction.
    Exact,
    /// The model bounds the rate from above (why is the row's `note`): the prediction must
    /// not lie below the interval.
    Upper,
}

/// One measured rate.
#[derive(Clone, Debug)]
pub struct Row {
    /// What was measured.
    pub what: String,
    /// The event counted.
    pub event: Event,
    /// How the prediction relates to the rate.
    pub bound: Bound,
    /// Bootstraps counted.
    pub bootstraps: usize,
    /// Events observed.
    pub observed: usize,
    /// Predicted rate (the mean over the bootstraps counted).
    pub predicted: f64,
    /// Clopper-Pearson interval of the observed rate ([`CONFIDENCE`]).
    pub interval: (f64, f64),
    /// Why the prediction is an upper bound, if it is one.
    pub note: &'static str,
}

impl Row {
    fn new(what: String, event: Event, bound: Bound, (observed, bootstraps, expected): (usize, usize, f64)) -> Row {
        Row {
            what,
            event,
            bound,
            bootstraps,
            observed,
            predicted: if bootstraps > 0 { expected / bootstraps as f64 } else { 0.0 },
            interval: stats::clopper_pearson(observed, bootstraps, CONFIDENCE),
            note: "",
        }
    }

    /// The observed rate.
    pub fn rate(&self) -> f64 {
        if self.bootstraps == 0 { 0.0 } else { self.observed as f64 / self.bootstraps as f64 }
    }

    /// Whether the observation agrees with the prediction ([`Bound`]) at [`CONFIDENCE`].
    pub fn agrees(&self) -> bool {
        self.agrees_within(self.interval)
    }

    /// Whether the observation agrees with the prediction at `confidence` (a test that runs
    /// on every commit takes a wider interval, to fail by chance rarely).
    pub fn agrees_at(&self, confidence: f64) -> bool {
        self.agrees_within(stats::clopper_pearson(self.observed, self.bootstraps, confidence))
    }

    fn agrees_within(&self, (lo, hi): (f64, f64)) -> bool {
        match self.bound {
            Bound::Exact => lo <= self.predicted && self.predicted <= hi,
            Bound::Upper => lo <= self.predicted,
        }
    }
}

/// The measurement of one kind at one target.
#[derive(Clone, Debug)]
pub struct Measurement {
    /// The kind.
    pub kind: Kind,
    /// The per-bootstrap failure target the parameters were chosen for.
    pub p_error: f64,
    /// The chosen parameters.
    pub setup: FheSetup,
    /// The rates.
    pub rows: Vec<Row>,
    /// Bootstraps the evaluation ran (the sources' included).
    pub bootstraps_run: usize,
}

/// What to measure.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Per-bootstrap failure target (the compiler's `--p-error`).
    pub p_error: f64,
    /// Values read per kind (elements, or comparisons of max pooling; at least this many).
    pub values: usize,
    /// Seed of the inputs and the values read (the encryption's randomness is fresh).
    pub seed: u64,
}

/// Decodes a phase encoded on `bits` bits to the nearest integer (as decryption does).
fn decode(phase: u64, bits: u32) -> i64 {
    let shift = 63 - bits;
    (phase.wrapping_add(1u64 << (shift - 1)) as i64) >> shift
}

/// Measures one kind of bootstrap at `opts.p_error`.
pub fn measure(kind: Kind, opts: &Options) -> Result<Measurement> {
    let mut rng = circuits::Rng(opts.seed ^ (kind as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let lines = opts.values.div_ceil(CHANNELS).max(1);
    let windows = opts.values.div_ceil(3 * CHANNELS).max(1);
    let bench = match kind {
        Kind::Table => circuits::table(lines, 4, &mut rng)?,
        Kind::ExactRounding => circuits::exact_rounding(lines, 8, 5, &mut rng)?,
        Kind::ApproximateRounding => circuits::approximate_rounding(lines, 4, 4, &mut rng)?,
        Kind::MaxPool => circuits::max_pool((1, windows), 4, (2, 4), None, &mut rng)?,
        // Gaps over 16 consecutive values, a whole step of the comparisons' reads (shift 4):
        // the differences read then sit uniformly within their steps, as the step-off
        // model assumes of a network's values.
        Kind::ApproximateMaxPool => circuits::max_pool((1, windows), 8, (60, 75), Some(6), &mut rng)?,
    };
    let mut c = bench.circuit.clone();
    let po = ParamOptions { p_error: Some(opts.p_error), ..ParamOptions::default() };
    let setup = if c.has_exact_rounding() { select_rounding(&mut c, &po) } else { select(&c, &po) }
        .with_context(|| format!("no parameters for the {} circuit at p_error {:e}", kind.name(), opts.p_error))?;
    let pc = ParametrizedCircuit::new(&c, &setup)?;
    let ck = ClientKey::generate(&setup.params);
    let sk = ck.server_key();
    let input = ck.encrypt(&bench.input, c.input_shape(), pc.input_bits());

    // Every bootstrap output of the nodes watched, decrypted to its phase.
    let per_element = |id: usize| match &c.nodes[id].op {
        COp::Round { shift, .. } => fhec_ir::circuit::round_bootstraps(&c.round_chunks(*shift)),
        COp::MaxPool { pool, .. } => pool.kernel[0] * pool.kernel[1] - 1,
        _ => 1,
    };
    let watched: Vec<usize> = [Some(bench.source), Some(bench.measured), bench.after].into_iter().flatten().collect();
    let slots: Vec<(usize, usize, Vec<AtomicU64>)> = watched
        .iter()
        .map(|&id| {
            let elems = match &c.nodes[id].op {
                COp::MaxPool { .. } => c.nodes[id].shape.iter().product::<usize>(),
                _ => c.nodes[c.nodes[id].inputs[0]].shape.iter().product(),
            };
            let per = per_element(id);
            (id, per, (0..elems * per).map(|_| AtomicU64::new(0)).collect())
        })
        .collect();
    let dec = PhaseDecryptor::new(&ck);
    let observer = |site: BootstrapSite, out: &[u64]| {
        if let Some((_, per, slot)) = slots.iter().find(|(id, ..)| *id == site.node) {
            // A max pooling's comparisons count from 1.
            let index = if matches!(c.nodes[site.node].op, COp::MaxPool { .. }) { site.index - 1 } else { site.index };
            slot[site.element * per + index].store(dec.phase(out), Ordering::Relaxed);
        }
    };
    evaluate_observed(&sk, &pc, &input, &observer)?;
    let phases = |id: usize| -> Vec<u64> {
        let (_, _, s) = slots.iter().find(|(i, ..)| *i == id).expect("watched");
        s.iter().map(|a| a.load(Ordering::Relaxed)).collect()
    };

    // The sources must all be right (their reads are far from the target: a failure would
    // spoil the values measured, and means something else is wrong).
    let bits = &setup.plan.bits;
    let bad =
        phases(bench.source).iter().zip(&bench.input).filter(|&(&ph, &v)| decode(ph, bits[bench.source]) != v).count();
    if bad > 0 {
        bail!("{bad} of the {} source bootstraps failed", bench.input.len());
    }

    let v = Variances::of(&setup.params);
    let p = |r: &NoiseRequirement| v.failure_probability(r);
    let reqs = |id: usize| -> Vec<NoiseRequirement> {
        setup.plan.node_requirements(&c, id).into_iter().filter(|r| !r.decryption).collect()
    };
    let m = bench.measured;
    let rows = match kind {
        Kind::Table => {
            let got = phases(m);
            let fails = bench.targets.iter().zip(&got).filter(|&(&t, &ph)| decode(ph, bits[m]) != t).count();
            let pr = p(&reqs(m)[0]);
            let n = got.len();
            vec![Row::new("table lookup, 4 bits".into(), Event::Failure, Bound::Exact, (fails, n, pr * n as f64))]
        }
        Kind::ExactRounding => exact_rounding_rows(&c, &setup, &bench, &phases, &reqs, &p),
        Kind::ApproximateRounding => {
            let COp::Round { shift, .. } = c.nodes[c.nodes[m].inputs[0]].op else { unreachable!("a rounding") };
            let got = phases(m);
            let (mut off, mut fails) = (0, 0);
            for (&t, &ph) in bench.targets.iter().zip(&got) {
                match (decode(ph, bits[m]) - (t >> shift)).abs() {
                    0 => {}
                    1 => off += 1,
                    _ => fails += 1,
                }
            }
            let n = got.len();
            let what = String::from("approximate rounding read, 4 of 8 bits");
            let mut fail = Row::new(what.clone(), Event::Failure, Bound::Upper, (fails, n, p(&reqs(m)[0]) * n as f64));
            fail.note = "the model's event is noise reaching a whole step; two steps off needs more";
            let step = Row::new(what, Event::StepOff, Bound::Exact, (off, n, setup.approx_step_rate(&c) * n as f64));
            vec![fail, step]
        }
        Kind::MaxPool | Kind::ApproximateMaxPool => {
            let p_comparison: Vec<f64> = reqs(m).iter().map(p).collect();
            max_pool_rows(&c, &setup, &bench, &phases(m), &p_comparison)
        }
    };
    let bootstraps_run = c.bootstrap_stats().total();
    Ok(Measurement { kind, p_error: opts.p_error, setup, rows, bootstraps_run })
}

/// The rows of exact rounding: sign reads, chunk tables, and the table reading the result.
/// An element's bootstraps after its first failure read other values than the model's
/// (they are not counted).
fn exact_rounding_rows(
    c: &fhec_ir::circuit::Circuit,
    setup: &FheSetup,
    bench: &circuits::Bench,
    phases: &dyn Fn(usize) -> Vec<u64>,
    reqs: &dyn Fn(usize) -> Vec<NoiseRequirement>,
    p: &dyn Fn(&NoiseRequirement) -> f64,
) -> Vec<Row> {
    let r = bench.measured;
    let COp::Round { shift, .. } = c.nodes[r].op else { unreachable!("a rounding") };
    let chunks = c.round_chunks(shift);
    let per = fhec_ir::circuit::round_bootstraps(&chunks);
    let (got, round_reqs) = (phases(r), reqs(r));
    let after = bench.after.expect("a table reads the rounding");
    let read = phases(after);
    let p_bits = setup.plan.bits[c.nodes[r].inputs[0]];
    // (failures, counted, expected failures) of sign reads, chunk tables, the table after.
    let (mut sign, mut rest, mut table) = ((0, 0, 0.0), (0, 0, 0.0), (0, 0, 0.0));
    let table_p = p(&reqs(after)[0]);
    for (e, &t) in bench.targets.iter().enumerate() {
        let ph = &got[e * per..(e + 1) * per];
        let (mut b, mut j, mut ok) = (0usize, 0u32, true);
        for &k in &chunks {
            // The sign read: the chunk's top bit (phase in the second half of the torus).
            let want = (t >> (j + k - 1)) & 1 == 1;
            if ok {
                sign.1 += 1;
                sign.2 += p(&round_reqs[b]);
                if ((ph[b] as i64) < 0) != want {
                    sign.0 += 1;
                    ok = false;
                }
            }
            b += 1;
            if k > 1 {
                // The chunk table: the rest of the chunk, times 2^j.
                let want = ((t >> j) & ((1 << (k - 1)) - 1)) << j;
                if ok {
                    rest.1 += 1;
                    rest.2 += p(&round_reqs[b]);
                    if decode(ph[b], p_bits) != want {
                        rest.0 += 1;
                        ok = false;
                    }
                }
                b += 1;
            }
            j += k;
        }
        if ok {
            table.1 += 1;
            table.2 += table_p;
            if decode(read[e], setup.plan.bits[after]) != t >> shift {
                table.0 += 1;
            }
        }
    }
    let k = c.round_chunk;
    let mut signs = Row::new(
        format!("exact rounding: sign reads (chunks of {k} bits)"),
        Event::Failure,
        if chunks.iter().all(|&k| k == 1) { Bound::Exact } else { Bound::Upper },
        sign,
    );
    if signs.bound == Bound::Upper {
        signs.note = "a sign read of a chunk of k >= 2 bits fails only next to the sign boundary, on one side";
    }
    let mut rows = vec![signs];
    if rest.1 > 0 {
        rows.push(Row::new(
            format!("exact rounding: chunk tables ({} bits)", k - 1),
            Event::Failure,
            Bound::Exact,
            rest,
        ));
    }
    rows.push(Row::new(
        format!("table after exact rounding, {} bits", setup.plan.bits[r]),
        Event::Failure,
        Bound::Exact,
        table,
    ));
    rows
}

/// The rows of max pooling: every comparison, against the running maximum as the decrypted
/// outputs make it (so that a comparison after one that failed, or landed a step off, is
/// judged on what it really reads).
fn max_pool_rows(
    c: &fhec_ir::circuit::Circuit,
    setup: &FheSetup,
    bench: &circuits::Bench,
    got: &[u64],
    p_comparison: &[f64],
) -> Vec<Row> {
    let m = bench.measured;
    let COp::MaxPool { pool, diff_offset, diff_width, shift } = &c.nodes[m].op else { unreachable!("max pooling") };
    let (offset, s) = (*diff_offset, *shift);
    let x = c.nodes[m].inputs[0];
    let bits = setup.plan.bits[x];
    let per = pool.kernel[0] * pool.kernel[1] - 1;
    let step = |q: i64| kernels::approx_max_step(q, offset, s);
    let (mut counted, mut fails, mut off, mut expected) = (0usize, 0usize, 0usize, 0.0);
    for (w, win) in kernels::window_indices(&c.nodes[x].shape, pool).iter().enumerate() {
        let mut max = bench.targets[win[0]];
        for (i, &at) in win.iter().enumerate().skip(1) {
            let q = (bench.targets[at] - max + offset) >> s;
            let out = decode(got[w * per + i - 1], bits);
            max += out;
            // Counted where the pairwise maximum tells apart the steps around q (a step off
            // and two steps off, for approximate comparisons): always, with the values
            // `circuits::max_pool` chooses, unless an earlier comparison failed by several
            // steps.
            let seen = if s == 0 {
                step(q) > step(q - 1) && q + 1 < 1 << diff_width
            } else {
                step(q - 1) > step(q - 2) && q + 2 < 1 << diff_width
            };
            if !seen {
                continue;
            }
            counted += 1;
            expected += p_comparison[i - 1];
            match (-2..=2).find(|&d| step(q + d) == out).map(i64::abs) {
                Some(0) => {}
                Some(1) if s > 0 => off += 1,
                _ => fails += 1,
            }
        }
    }
    let what = format!(
        "max pooling comparison, 2x2, {}",
        if s > 0 {
            format!("approximate, {diff_width} of {} bits", diff_width + s)
        } else {
            format!("{diff_width} bits")
        }
    );
    let mut rows = vec![Row::new(
        what.clone(),
        Event::Failure,
        if s > 0 { Bound::Upper } else { Bound::Exact },
        (fails, counted, expected),
    )];
    if s > 0 {
        rows[0].note = "the model's event is noise reaching a whole step; two steps off needs more";
        rows.push(Row::new(
            what,
            Event::StepOff,
            Bound::Exact,
            (off, counted, setup.approx_step_rate(c) * counted as f64),
        ));
    }
    rows
}
