//! Automatic fitting: the compile choices of least estimated server time whose accuracy stays
//! within a budget of the float model's.
//!
//! What `fhec build` does by default. The search space is every width the model and the
//! command line leave free: the weight bits of each linear layer, the width each table reads
//! and the bits it outputs, how wide accumulators are rounded (approximately, or exactly
//! with rounding bootstraps), the range margin; the TFHE parameters are chosen for each
//! candidate by [`crate::params::select_rounding`], whose estimate of the server time is the
//! cost. Accuracy is the simulated top-1 on validation images that are not the calibration
//! images (with approximate reads, the mean over read-noise draws sampled from the
//! candidate's parameters); without labels, agreement with the float model's predictions.
//!
//! The cost of a TFHE circuit is one parameter set for all its bootstraps, set by the
//! hardest read: a table reading `r` bits of a value whose noise 2-norm is `ν` (the 2-norm of
//! the integer weights before it) needs noise below a step of `r` bits, so `r + log2 ν`
//! prices a layer. Layers with few inputs or small weights can therefore read more bits, or
//! keep more weight bits, at no cost: mixed precision per layer is free accuracy. The
//! search:
//! 1. **uniform grid**: every (weight bits, table bits) pair with the other widths high,
//!    costed (compile + parameter search, no simulation); then simulated in order of cost,
//!    skipping pairs no wider than one that already failed, until one meets the budget;
//! 2. **fill**: each layer's widths are raised one at a time while the estimated cost does
//!    not grow;
//! 3. **descend**: each layer whose narrowing makes the circuit cheaper is narrowed in turn
//!    (then filled again), keeping the cheapest narrowing that still meets the budget, until
//!    none does;
//! 4. **margin**: the range margin of the chosen widths, for the best accuracy at no cost.
//!
//! A candidate meets the budget when its validation accuracy, less a guard of
//! [`GUARD_SE`] standard errors of the measured loss, is within the budget of the float
//! model's: validation images are few, and a loss measured on them is noisy.
//!
//! Every candidate is kept in the [`FitReport`] with its widths, bootstraps, estimated time
//! and accuracy. The search is deterministic: candidates are visited in a fixed order and the
//! noise draws are seeded by the image, the draw number and [`FitOptions::seed`].

use std::collections::{BTreeMap, HashMap};

use fhec_ir::circuit::{COp, Circuit};
use fhec_ir::nn::{Graph, interp};
use fhec_ir::params::FheSetup;
use fhec_ir::{Preprocess, sim};
use rayon::prelude::*;
use serde::Serialize;

use crate::params::{ParamError, ParamOptions, select_rounding};
use crate::quantize::{Calibration, LayerWidths, QuantError, QuantOptions, Rounding, calibration_inputs, quantize};

/// Bits of the scores the client reads when the fit chooses (their top bits; the lower ones
/// carry noise). Scores only feed an argmax; 16 bits of a wide accumulator lose nothing.
pub const OUTPUT_BITS: u32 = 16;

/// What the search minimises.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum Objective {
    /// The least estimated server time within the accuracy budget.
    #[default]
    Time,
    /// The best validation accuracy within the time limit.
    Accuracy,
}

impl std::str::FromStr for Objective {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "time" => Ok(Objective::Time),
            "accuracy" => Ok(Objective::Accuracy),
            _ => Err(format!("unknown objective '{s}' (expected time or accuracy)")),
        }
    }
}

impl std::fmt::Display for Objective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Objective::Time => "time",
            Objective::Accuracy => "accuracy",
        })
    }
}

/// Which widths the search must keep as the base options give them (a flag or the model's
/// metadata named them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Fixed {
    /// `input_bits`.
    pub input_bits: bool,
    /// `weight_bits` (of every layer).
    pub weight_bits: bool,
    /// `act_bits` (of every table).
    pub act_bits: bool,
    /// `max_table_bits` (of every table).
    pub table_bits: bool,
    /// The rounding.
    pub rounding: bool,
    /// The range margin.
    pub range_margin: bool,
}

/// Options of the search.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FitOptions {
    /// Largest loss of top-1 accuracy allowed against the float model, in points.
    pub accuracy_budget: f64,
    /// Largest estimated server time per image on one core, in seconds.
    pub max_server_time: Option<f64>,
    /// What is minimised.
    pub objective: Objective,
    /// Seeds the read-noise draws.
    pub seed: u64,
    /// Read-noise draws per validation image for circuits with approximate reads.
    pub draws: u64,
    /// Widths the search keeps.
    pub fixed: Fixed,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            accuracy_budget: 0.5,
            max_server_time: None,
            objective: Objective::Time,
            seed: 0,
            draws: 2,
            fixed: Fixed::default(),
        }
    }
}

/// The images of a fit: calibration (ranges) and validation (accuracy), disjoint.
#[derive(Clone, Copy, Debug)]
pub struct FitData<'a> {
    /// Calibration images (8-bit pixels of the model's input size).
    pub calibration: &'a [&'a [u8]],
    /// Validation images.
    pub validation: &'a [&'a [u8]],
    /// Labels of the validation images; `None`: the float model's predictions stand in.
    pub labels: Option<&'a [u8]>,
}

/// One candidate the search tried.
#[derive(Clone, Debug, Serialize)]
pub struct Candidate {
    /// Which step proposed it (`grid`, `fill`, `descend`, `margin`).
    pub step: &'static str,
    /// Its widths, on one line.
    pub widths: String,
    /// Bootstraps per inference.
    pub bootstraps: usize,
    /// Estimated server time per image on one core (seconds); `None` without 128-bit parameters.
    pub est_seconds: Option<f64>,
    /// The parameters, on one line, or why there are none.
    pub params: String,
    /// Validation accuracy (percent), if simulated.
    pub accuracy: Option<f64>,
    /// What the search concluded.
    pub verdict: String,
}

/// What the search did and chose.
#[derive(Clone, Debug, Serialize)]
pub struct FitReport {
    /// The options.
    pub options: FitOptions,
    /// Float top-1 on the validation images (percent; 100 without labels).
    pub float_accuracy: f64,
    /// Validation images.
    pub validation_images: usize,
    /// Whether accuracy is against labels (else agreement with the float model).
    pub labelled: bool,
    /// Calibration images.
    pub calibration_images: usize,
    /// Every candidate, in the order tried.
    pub candidates: Vec<Candidate>,
    /// Index of the chosen candidate.
    pub chosen: Option<usize>,
    /// Why it was chosen (or why nothing was).
    pub reason: String,
    /// Wall-clock seconds of the search.
    pub seconds: f64,
}

impl FitReport {
    /// The report as text lines.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "fit: {} candidates in {:.1} s; float {:.2}% on {} validation images ({}), calibration {} images; budget {} points, objective {}{}",
            self.candidates.len(),
            self.seconds,
            self.float_accuracy,
            self.validation_images,
            if self.labelled { "labelled" } else { "agreement with the float model" },
            self.calibration_images,
            self.options.accuracy_budget,
            self.options.objective,
            self.options.max_server_time.map_or(String::new(), |t| format!(", at most {t} s"))
        );
        let _ = writeln!(
            s,
            "  {:<3} {:<8} {:>10} {:>9} {:>9}  {:<44} {}",
            "#", "step", "bootstraps", "est. s", "valid.", "verdict", "widths"
        );
        for (i, c) in self.candidates.iter().enumerate() {
            let _ = writeln!(
                s,
                "{} {:<3} {:<8} {:>10} {:>9} {:>9}  {:<44} {}",
                if Some(i) == self.chosen { "*" } else { " " },
                i,
                c.step,
                c.bootstraps,
                c.est_seconds.map_or("-".into(), |t| format!("{t:.1}")),
                c.accuracy.map_or("-".into(), |a| format!("{a:.2}%")),
                c.verdict,
                c.widths
            );
        }
        let _ = writeln!(s, "fit: {}", self.reason);
        s
    }
}

/// The outcome of a fit.
#[derive(Clone, Debug)]
pub struct Fitted {
    /// The chosen options.
    pub quant: QuantOptions,
    /// Its circuit (rounding chunk chosen).
    pub circuit: Circuit,
    /// Its parameters.
    pub setup: FheSetup,
    /// What the search did.
    pub report: FitReport,
}

/// Why nothing was chosen.
#[derive(Debug, thiserror::Error)]
pub enum FitError {
    /// Quantization failed.
    #[error(transparent)]
    Quant(#[from] QuantError),
    /// No candidate has 128-bit parameters.
    #[error(
        "no width choice gets 128-bit TFHE parameters: {limit}; the most accurate circuit tried ({nearest}) is simulation-only (--allow-simulation-only builds it)"
    )]
    Infeasible {
        /// What limits the model.
        limit: String,
        /// The most accurate candidate.
        nearest: String,
        /// The search.
        report: Box<FitReport>,
    },
    /// Every candidate with parameters is over the time limit.
    #[error(
        "no width choice meets --max-server-time {limit} s: the cheapest circuit tried takes an estimated {cheapest:.1} s per image on one core ({nearest})"
    )]
    OverTime {
        /// The limit.
        limit: f64,
        /// The cheapest estimate.
        cheapest: f64,
        /// The cheapest candidate.
        nearest: String,
        /// The search.
        report: Box<FitReport>,
    },
    /// Candidates have parameters but none is accurate enough.
    #[error(
        "no width choice within the accuracy budget ({budget} points below float {float:.2}%): the nearest is {nearest}; {limit}. Raise --accuracy-budget to accept it, or retrain the model for fhec (examples/train)"
    )]
    OverBudget {
        /// The budget.
        budget: f64,
        /// Float accuracy.
        float: f64,
        /// The most accurate candidate with parameters.
        nearest: String,
        /// The layer that limits it.
        limit: String,
        /// The search.
        report: Box<FitReport>,
    },
}

impl FitError {
    /// The search's report.
    pub fn report(&self) -> Option<&FitReport> {
        match self {
            FitError::Quant(_) => None,
            FitError::Infeasible { report, .. }
            | FitError::OverBudget { report, .. }
            | FitError::OverTime { report, .. } => Some(report),
        }
    }
}

/// One compiled candidate.
#[derive(Clone)]
struct Eval {
    circuit: Circuit,
    setup: Result<FheSetup, ParamError>,
    accuracy: Option<f64>,
    /// [`GUARD_SE`] standard errors of the accuracy loss measured on the validation
    /// images (a fraction), subtracted before comparing with the budget.
    guard: f64,
}

/// Standard errors of the measured accuracy loss kept as a guard against validation noise:
/// a candidate meets the budget when `validation accuracy - GUARD_SE · SE` does, with `SE =
/// sqrt(d) / n` for `d` validation images (of `n`) whose class differs from the float
/// model's. On 1,000 images a 2% disagreement costs 0.22 points of the budget.
pub const GUARD_SE: f64 = 0.5;

/// Validation images of the quick first look at a grid candidate ([`Search::quick_reject`]).
const QUICK_IMAGES: usize = 250;

/// How far below the target a quick look must land to reject a candidate (4 points: far
/// beyond the noise of 250 images).
const QUICK_MARGIN: f64 = 0.04;

impl Eval {
    fn cost(&self) -> Option<f64> {
        self.setup.as_ref().ok().map(|s| s.est_cost_ms)
    }
}

/// The layers the widths are chosen for.
#[derive(Clone, Debug)]
struct Layers {
    /// Linear nodes (weights).
    linear: Vec<String>,
    /// Tables, by the name of the node whose chain they apply.
    tables: Vec<String>,
    /// Whether some max pooling reads table outputs (their width then costs).
    pool_reads_tables: bool,
}

fn layers_of(c: &Circuit) -> Layers {
    let mut linear = vec![];
    let mut tables = vec![];
    for n in &c.nodes {
        match &n.op {
            COp::Conv { .. } | COp::Dense { .. } => linear.push(n.name.clone()),
            COp::Table { .. } => {
                if let Some(base) = n.name.strip_suffix(".table") {
                    if !tables.iter().any(|t| t == base) {
                        tables.push(base.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    let pool_reads_tables = c.nodes.iter().any(|n| {
        matches!(n.op, COp::MaxPool { .. })
            && n.inputs.first().is_some_and(|&i| matches!(c.nodes[i].op, COp::Table { .. }))
    });
    Layers { linear, tables, pool_reads_tables }
}

struct Search<'a> {
    g: &'a Graph,
    pre: Preprocess,
    cal: Calibration,
    validation: &'a [&'a [u8]],
    /// The reference class of every validation image (labels or float predictions).
    reference: Vec<usize>,
    /// Whether the references are labels.
    labelled: bool,
    /// The float model's class of every validation image.
    float_pred: Vec<usize>,
    params: &'a ParamOptions,
    fit: &'a FitOptions,
    cache: HashMap<String, Eval>,
    report: Vec<Candidate>,
    /// Cache key -> index in `report` of the candidate's first (fullest) entry.
    seen: HashMap<String, usize>,
}

fn key(q: &QuantOptions) -> String {
    serde_json::to_string(q).unwrap_or_default()
}

/// The widths of `q` on one line: the globals, then each layer that differs.
pub fn describe(q: &QuantOptions) -> String {
    let mut s = format!(
        "in {} w {} a {} r {} {} margin {}%{}",
        q.input_bits,
        q.weight_bits,
        q.act_bits,
        q.max_table_bits,
        q.rounding,
        q.range_margin_pct,
        q.output_bits.map_or(String::new(), |b| format!(" scores {b}b"))
    );
    for (name, l) in &q.layers {
        let mut parts = vec![];
        if let Some(w) = l.weight_bits.filter(|&w| w != q.weight_bits) {
            parts.push(format!("w {w}"));
        }
        if let Some(r) = l.table_bits.filter(|&r| r != q.max_table_bits) {
            parts.push(format!("r {r}"));
        }
        if let Some(a) = l.act_bits.filter(|&a| a != q.act_bits) {
            parts.push(format!("a {a}"));
        }
        if let Some(r) = l.rounding.filter(|&r| r != q.rounding) {
            parts.push(r.to_string());
        }
        if !parts.is_empty() {
            s.push_str(&format!("; {name}: {}", parts.join(" ")));
        }
    }
    s
}

impl<'a> Search<'a> {
    /// Compiles and costs `q` (cached).
    fn compile(&mut self, q: &QuantOptions) -> Result<Eval, QuantError> {
        let k = key(q);
        if let Some(e) = self.cache.get(&k) {
            return Ok(e.clone());
        }
        let mut circuit = quantize(self.g, self.pre, &self.cal, q)?;
        let setup = select_rounding(&mut circuit, self.params);
        let e = Eval { circuit, setup, accuracy: None, guard: 0.0 };
        self.cache.insert(k, e.clone());
        Ok(e)
    }

    /// Records a candidate (once per distinct options; a later verdict replaces an earlier one).
    fn note(&mut self, step: &'static str, q: &QuantOptions, e: &Eval, verdict: String) {
        let k = key(q);
        let c = Candidate {
            step,
            widths: describe(q),
            bootstraps: e.circuit.bootstrap_stats().total(),
            est_seconds: e.cost().map(|ms| ms / 1000.0),
            params: match &e.setup {
                Ok(s) => {
                    format!("{}; failure 2^{:.1} / inference", s.params.summary(), s.global_p_error.max(1e-300).log2())
                }
                Err(err) => err.to_string(),
            },
            accuracy: e.accuracy.map(|a| 100.0 * a),
            verdict,
        };
        match self.seen.get(&k) {
            Some(&i) => {
                let step = self.report[i].step;
                self.report[i] = Candidate { step, ..c };
            }
            None => {
                self.seen.insert(k, self.report.len());
                self.report.push(c);
            }
        }
    }

    /// Whether `q` is clearly over budget on the first [`QUICK_IMAGES`] validation images
    /// alone (one draw): [`QUICK_MARGIN`] below `target` there. Most narrow candidates are
    /// far off; this spares their full simulation. Returns the quick accuracy.
    fn quick_reject(&mut self, q: &QuantOptions, target: f64) -> Result<Option<f64>, QuantError> {
        let e = self.compile(q)?;
        let n = self.validation.len();
        if e.accuracy.is_some() || n < 2 * QUICK_IMAGES {
            return Ok(None);
        }
        let c = &e.circuit;
        let sigma = match &e.setup {
            Ok(s) if c.is_approximate() => s.approx_round_sigma(c),
            _ => vec![],
        };
        let seed = self.fit.seed.wrapping_mul(1_000_003);
        let correct = (0..QUICK_IMAGES)
            .into_par_iter()
            .filter(|&i| {
                sim::classify_noisy_draw(c, self.validation[i], &sigma, seed)
                    .is_ok_and(|(class, _)| class == self.reference[i])
            })
            .count();
        let a = correct as f64 / QUICK_IMAGES as f64;
        Ok((a < target - QUICK_MARGIN).then_some(a))
    }

    /// Simulated validation accuracy of `q` (cached), a fraction.
    fn accuracy(&mut self, q: &QuantOptions) -> Result<(Eval, f64), QuantError> {
        let mut e = self.compile(q)?;
        if let Some(a) = e.accuracy {
            return Ok((e, a));
        }
        let c = &e.circuit;
        let sigma = match &e.setup {
            Ok(s) if c.is_approximate() => s.approx_round_sigma(c),
            _ => vec![],
        };
        let draws = if sigma.is_empty() { 1 } else { self.fit.draws.max(1) };
        let n = self.validation.len();
        let seed = self.fit.seed.wrapping_mul(1_000_003);
        let (correct, differ): (usize, usize) = (0..n * draws as usize)
            .into_par_iter()
            .map(|k| {
                let (d, i) = ((k / n) as u64, k % n);
                let class = sim::classify_noisy_draw(c, self.validation[i], &sigma, seed.wrapping_add(d))
                    .map_or(usize::MAX, |(class, _)| class);
                ((class == self.reference[i]) as usize, (class != self.float_pred[i]) as usize)
            })
            .reduce(|| (0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        let total = n as f64 * draws as f64;
        let a = correct as f64 / total;
        e.accuracy = Some(a);
        e.guard = GUARD_SE * (differ as f64 / draws as f64).sqrt() / n as f64;
        self.cache.insert(key(q), e.clone());
        Ok((e, a))
    }
}

fn with_layer(q: &QuantOptions, name: &str, f: impl FnOnce(&mut LayerWidths)) -> QuantOptions {
    let mut q = q.clone();
    f(q.layers.entry(name.to_string()).or_default());
    q
}

/// The knobs of one layer the fill and descend steps move, with their bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Knob {
    Weight,
    Table,
    Act,
}

const WEIGHT_BITS: (u32, u32) = (3, 8);
const TABLE_BITS: (u32, u32) = (3, 9);
const ACT_BITS: (u32, u32) = (2, 8);

fn get(q: &QuantOptions, name: &str, k: Knob) -> u32 {
    match k {
        Knob::Weight => q.weight_bits_of(name),
        Knob::Table => q.table_bits_of(name),
        Knob::Act => q.act_bits_of(name),
    }
}

fn set(q: &QuantOptions, name: &str, k: Knob, v: u32) -> Option<QuantOptions> {
    let (lo, hi) = match k {
        Knob::Weight => WEIGHT_BITS,
        Knob::Table => TABLE_BITS,
        Knob::Act => ACT_BITS,
    };
    if !(lo..=hi).contains(&v) {
        return None;
    }
    Some(with_layer(q, name, |l| match k {
        Knob::Weight => l.weight_bits = Some(v),
        Knob::Table => l.table_bits = Some(v),
        Knob::Act => l.act_bits = Some(v),
    }))
}

/// Fits the widths of `g` (the graph after the passes; `reference` is the model as imported,
/// whose float predictions set the accuracy to keep).
pub fn fit(
    g: &Graph,
    reference: &Graph,
    pre: Preprocess,
    data: &FitData,
    base: &QuantOptions,
    params: &ParamOptions,
    fit: &FitOptions,
) -> Result<Fitted, FitError> {
    let start = std::time::Instant::now();
    if data.validation.is_empty() {
        return Err(QuantError::Calibration("no validation images".into()).into());
    }
    let inputs = calibration_inputs(g, pre, data.calibration)?;
    let mut cal = Calibration::run(g, &inputs)?;
    cal.pixels = data.calibration.iter().map(|p| p.to_vec()).collect();
    let val_inputs = calibration_inputs(reference, pre, data.validation)?;
    let float_pred: Vec<usize> = val_inputs
        .par_iter()
        .map(|x| {
            interp::run(reference, std::slice::from_ref(x))
                .map(|out| sim::argmax(&out[0].iter().map(|&v| v as f64).collect::<Vec<_>>()))
                .unwrap_or(usize::MAX)
        })
        .collect();
    let (reference_classes, float_accuracy) = match data.labels {
        Some(l) => {
            let ok = float_pred.iter().zip(l).filter(|(p, l)| **p == **l as usize).count();
            (l.iter().map(|&v| v as usize).collect(), ok as f64 / l.len().max(1) as f64)
        }
        None => (float_pred.clone(), 1.0),
    };
    let mut s = Search {
        g,
        pre,
        cal,
        validation: data.validation,
        reference: reference_classes,
        labelled: data.labels.is_some(),
        float_pred: float_pred.clone(),
        params,
        fit,
        cache: HashMap::new(),
        report: vec![],
        seen: HashMap::new(),
    };
    let target = float_accuracy - fit.accuracy_budget / 100.0 - 1e-12;
    let in_time = |e: &Eval| match (e.cost(), fit.max_server_time) {
        (Some(c), Some(t)) => c / 1000.0 <= t,
        (Some(_), None) => true,
        (None, _) => false,
    };

    // The base of every candidate: what is fixed stays, the rest starts wide.
    let fx = fit.fixed;
    let mut base = base.clone();
    if !fx.input_bits {
        base.input_bits = 8;
    }
    base.output_bits = Some(OUTPUT_BITS);
    let probe = s.compile(&base)?;
    let layers = layers_of(&probe.circuit);
    let roundings: Vec<Rounding> =
        if fx.rounding { vec![base.rounding] } else { vec![Rounding::Approximate, Rounding::Exact] };
    let ws: Vec<u32> = if fx.weight_bits { vec![base.weight_bits] } else { (4..=8).collect() };
    let rs: Vec<u32> = if fx.table_bits { vec![base.max_table_bits] } else { (3..=8).collect() };

    // 1. Uniform grid, costed; then simulated cheapest first.
    let mut chosen: Option<(QuantOptions, Eval, f64)> = None;
    let mut all: Vec<(QuantOptions, Eval)> = vec![];
    for &rounding in &roundings {
        let mut grid: Vec<(QuantOptions, Eval)> = vec![];
        for &w in &ws {
            for &r in &rs {
                let acts: Vec<u32> = if fx.act_bits {
                    vec![base.act_bits]
                } else if layers.pool_reads_tables {
                    // Max pooling compares table outputs, reading one bit more than they
                    // have: outputs narrower than the reads keep the comparisons from setting
                    // the parameters (the fill step widens them where that is free).
                    vec![r.saturating_sub(1).max(2)]
                } else {
                    vec![8]
                };
                for a in acts {
                    let q = QuantOptions { weight_bits: w, max_table_bits: r, act_bits: a, rounding, ..base.clone() };
                    let e = match s.compile(&q) {
                        Ok(e) => e,
                        Err(err) => {
                            s.report.push(Candidate {
                                step: "grid",
                                widths: describe(&q),
                                bootstraps: 0,
                                est_seconds: None,
                                params: String::new(),
                                accuracy: None,
                                verdict: format!("does not quantize: {err}"),
                            });
                            continue;
                        }
                    };
                    let verdict = if e.cost().is_none() {
                        "no 128-bit parameters".into()
                    } else if !in_time(&e) {
                        "over --max-server-time".into()
                    } else {
                        "costed".into()
                    };
                    s.note("grid", &q, &e, verdict);
                    grid.push((q, e));
                }
            }
        }
        let mut feasible: Vec<(QuantOptions, Eval)> = grid.iter().filter(|(_, e)| in_time(e)).cloned().collect();
        all.extend(grid);
        match fit.objective {
            Objective::Time => {
                feasible.sort_by(|a, b| {
                    a.1.cost().unwrap_or(f64::MAX).total_cmp(&b.1.cost().unwrap_or(f64::MAX)).then_with(|| {
                        let wide = |q: &QuantOptions| q.weight_bits + q.max_table_bits + q.act_bits;
                        wide(&b.0).cmp(&wide(&a.0))
                    })
                });
                let mut failed: Vec<QuantOptions> = vec![];
                for (q, _) in feasible {
                    let narrower = |f: &QuantOptions| {
                        q.weight_bits <= f.weight_bits
                            && q.max_table_bits <= f.max_table_bits
                            && q.act_bits <= f.act_bits
                    };
                    if failed.iter().any(narrower) {
                        let e = s.compile(&q)?;
                        s.note("grid", &q, &e, "skipped: no wider than a failed one".into());
                        continue;
                    }
                    if let Some(a) = s.quick_reject(&q, target)? {
                        let e = s.compile(&q)?;
                        s.note(
                            "grid",
                            &q,
                            &e,
                            format!("over budget: {:.1}% on the first {QUICK_IMAGES} images", 100.0 * a),
                        );
                        failed.push(q);
                        continue;
                    }
                    let (e, a) = s.accuracy(&q)?;
                    if a - e.guard >= target {
                        s.note("grid", &q, &e, "within budget: cheapest uniform".into());
                        chosen = Some((q, e, a));
                        break;
                    }
                    s.note("grid", &q, &e, "over budget".into());
                    failed.push(q);
                }
            }
            Objective::Accuracy => {
                for (q, _) in feasible {
                    let (e, a) = s.accuracy(&q)?;
                    s.note("grid", &q, &e, "simulated".into());
                    if chosen.as_ref().is_none_or(|(_, ce, ca)| {
                        a > *ca || (a == *ca && e.cost().unwrap_or(f64::MAX) < ce.cost().unwrap_or(f64::MAX))
                    }) {
                        chosen = Some((q, e, a));
                    }
                }
            }
        }
        if chosen.as_ref().is_some_and(|(_, e, a)| fit.objective == Objective::Accuracy || *a - e.guard >= target) {
            break;
        }
    }

    let Some((mut q, mut e, mut acc)) =
        chosen.filter(|(_, e, a)| fit.objective == Objective::Accuracy || *a - e.guard >= target)
    else {
        return Err(nothing_fits(&mut s, &all, float_accuracy, fit, start));
    };

    // 2-3. Fill every layer up to the cost, then narrow the layers that set it.
    let knobs: Vec<(String, Knob)> = layers
        .linear
        .iter()
        .filter(|_| !fx.weight_bits)
        .map(|n| (n.clone(), Knob::Weight))
        .chain(layers.tables.iter().filter(|_| !fx.table_bits).map(|n| (n.clone(), Knob::Table)))
        .chain(layers.tables.iter().filter(|_| !fx.act_bits).map(|n| (n.clone(), Knob::Act)))
        .collect();
    let fill = |s: &mut Search, q: &QuantOptions, e: &Eval| -> Result<(QuantOptions, Eval), QuantError> {
        // (Never fails: a wider candidate that does not compile is not taken.)
        let (mut q, mut e) = (q.clone(), e.clone());
        let limit = e.cost().unwrap_or(f64::MAX) * (1.0 + 1e-9);
        loop {
            let mut changed = false;
            for (name, k) in &knobs {
                let Some(up) = set(&q, name, *k, get(&q, name, *k) + 1) else { continue };
                let Ok(ue) = s.compile(&up) else { continue };
                if ue.cost().is_some_and(|c| c <= limit) {
                    (q, e) = (up, ue);
                    changed = true;
                }
            }
            if !changed {
                return Ok((q, e));
            }
        }
    };
    if !knobs.is_empty() {
        let (fq, _) = fill(&mut s, &q, &e)?;
        if fq != q {
            let (fe, fa) = s.accuracy(&fq)?;
            // Wider weights raise the noise 2-norm, hence the share of one-step-off reads:
            // keep the filled widths only if they are at least as accurate.
            if fa >= acc - 1e-12 {
                s.note("fill", &fq, &fe, "wider at the same cost".into());
                (q, e, acc) = (fq, fe, fa);
            } else {
                s.note("fill", &fq, &fe, "less accurate: kept the uniform widths".into());
            }
        }
    }
    if fit.objective == Objective::Time {
        for _ in 0..12 {
            let cost = e.cost().unwrap_or(f64::MAX);
            let mut moves: Vec<(QuantOptions, Eval)> = vec![];
            for (name, k) in &knobs {
                let Some(down) = set(&q, name, *k, get(&q, name, *k).saturating_sub(1)) else { continue };
                let Ok(de) = s.compile(&down) else { continue };
                if de.cost().is_some_and(|c| c < cost * (1.0 - 1e-6)) && in_time(&de) {
                    moves.push((down, de));
                }
            }
            moves.sort_by(|a, b| a.1.cost().unwrap_or(f64::MAX).total_cmp(&b.1.cost().unwrap_or(f64::MAX)));
            let mut best: Option<(QuantOptions, Eval, f64)> = None;
            for (dq, de) in moves {
                let (fq, fe) = fill(&mut s, &dq, &de)?;
                let (fe, fa) = s.accuracy(&fq).map(|(e2, a)| (e2, a)).unwrap_or((fe, 0.0));
                if fa - fe.guard >= target {
                    s.note("descend", &fq, &fe, "within budget".into());
                    if best.as_ref().is_none_or(|(_, be, ba)| {
                        let (c, bc) = (fe.cost().unwrap_or(f64::MAX), be.cost().unwrap_or(f64::MAX));
                        c < bc * (1.0 - 1e-6) || (c <= bc * (1.0 + 1e-6) && fa > *ba)
                    }) {
                        best = Some((fq, fe, fa));
                    }
                } else {
                    s.note("descend", &fq, &fe, "over budget".into());
                }
            }
            match best {
                Some(b) => (q, e, acc) = b,
                None => break,
            }
        }
    }

    // 4. The range margin: accuracy at (nearly) the same cost.
    if !fx.range_margin {
        for m in [5u32, 20] {
            let mq = QuantOptions { range_margin_pct: m, ..q.clone() };
            let (me, ma) = s.accuracy(&mq)?;
            let cheap = me.cost().is_some_and(|c| c <= e.cost().unwrap_or(f64::MAX) * 1.001);
            if cheap && ma > acc + 1e-12 {
                s.note("margin", &mq, &me, "more accurate at the same cost".into());
                (q, e, acc) = (mq, me, ma);
            } else {
                s.note("margin", &mq, &me, "not better".into());
            }
        }
    }

    s.note("chosen", &q, &e, "chosen".into());
    let chosen_index = s.seen.get(&key(&q)).copied();
    let reason = format!(
        "chose {} : {} bootstraps, est. {:.1} s per image on one core, validation {:.2}% ({:+.2} points from float), {}",
        describe(&q),
        e.circuit.bootstrap_stats().total(),
        e.cost().unwrap_or(0.0) / 1000.0,
        100.0 * acc,
        100.0 * (acc - float_accuracy),
        match fit.objective {
            Objective::Time => "the least estimated time within the budget".to_string(),
            Objective::Accuracy => "the best accuracy within the time limit".to_string(),
        }
    );
    let report = FitReport {
        options: fit.clone(),
        float_accuracy: 100.0 * float_accuracy,
        validation_images: data.validation.len(),
        labelled: data.labels.is_some(),
        calibration_images: data.calibration.len(),
        candidates: s.report,
        chosen: chosen_index,
        reason,
        seconds: start.elapsed().as_secs_f64(),
    };
    let setup = e.setup.clone().expect("a chosen candidate has parameters");
    Ok(Fitted { quant: q, circuit: e.circuit, setup, report })
}

/// The error when no candidate meets the budget: the most accurate candidate, and the layer
/// whose read is hardest for the parameters.
fn nothing_fits(
    s: &mut Search,
    all: &[(QuantOptions, Eval)],
    float_accuracy: f64,
    fit: &FitOptions,
    start: std::time::Instant,
) -> FitError {
    let any_feasible = all.iter().any(|(_, e)| e.cost().is_some());
    let in_time = |e: &Eval| e.cost().is_some_and(|c| fit.max_server_time.is_none_or(|t| c / 1000.0 <= t));
    if any_feasible && !all.iter().any(|(_, e)| in_time(e)) {
        let (q, e) = all
            .iter()
            .filter(|(_, e)| e.cost().is_some())
            .min_by(|a, b| a.1.cost().unwrap_or(f64::MAX).total_cmp(&b.1.cost().unwrap_or(f64::MAX)))
            .expect("some candidate has parameters");
        let cheapest = e.cost().unwrap_or(0.0) / 1000.0;
        let nearest = format!("{}, {} bootstraps", describe(q), e.circuit.bootstrap_stats().total());
        let report = Box::new(FitReport {
            options: fit.clone(),
            float_accuracy: 100.0 * float_accuracy,
            validation_images: s.validation.len(),
            labelled: s.labelled,
            calibration_images: s.cal.count,
            candidates: std::mem::take(&mut s.report),
            chosen: None,
            reason: "nothing fits the time limit".into(),
            seconds: start.elapsed().as_secs_f64(),
        });
        return FitError::OverTime { limit: fit.max_server_time.unwrap_or(0.0), cheapest, nearest, report };
    }
    // The most accurate candidate simulated (with parameters if any has them).
    let nearest = all
        .iter()
        .filter_map(|(q, e)| {
            let a = s.cache.get(&key(q)).and_then(|e| e.accuracy)?;
            (e.cost().is_some() == any_feasible).then_some((q.clone(), e.clone(), a))
        })
        .max_by(|a, b| a.2.total_cmp(&b.2));
    // Without parameters, nothing was simulated: simulate the narrowest and the widest.
    let nearest = nearest.or_else(|| {
        let q = all.last().map(|(q, _)| q.clone())?;
        let (e, a) = s.accuracy(&q).ok()?;
        Some((q, e, a))
    });
    let (nearest_text, limit) = match &nearest {
        Some((q, e, a)) => (
            format!(
                "{} ({} bootstraps, {}, validation {:.2}%)",
                describe(q),
                e.circuit.bootstrap_stats().total(),
                e.cost().map_or("no 128-bit parameters".into(), |c| format!(
                    "est. {:.1} s per image on one core",
                    c / 1000.0
                )),
                100.0 * a
            ),
            limiting_layer(&e.circuit),
        ),
        None => ("none".into(), "no candidate compiled".into()),
    };
    let report = Box::new(FitReport {
        options: fit.clone(),
        float_accuracy: 100.0 * float_accuracy,
        validation_images: s.validation.len(),
        labelled: s.labelled,
        calibration_images: s.cal.count,
        candidates: std::mem::take(&mut s.report),
        chosen: None,
        reason: "nothing fits".into(),
        seconds: start.elapsed().as_secs_f64(),
    });
    if any_feasible {
        FitError::OverBudget {
            budget: fit.accuracy_budget,
            float: 100.0 * float_accuracy,
            nearest: nearest_text,
            limit,
            report,
        }
    } else {
        // The narrowest candidate shows what limits the model best.
        let limit = all.first().map_or(limit, |(_, e)| limiting_layer(&e.circuit));
        FitError::Infeasible { limit, nearest: nearest_text, report }
    }
}

/// The bootstrapped read that needs the least noise: its layer, width, 2-norm and the bits
/// of the value it reads (`r + log2 ν` prices a read, see the module doc).
pub fn limiting_layer(c: &Circuit) -> String {
    let mut worst: Option<(f64, String)> = None;
    for (id, n) in c.nodes.iter().enumerate() {
        let (read, what) = match &n.op {
            COp::Table { in_width, .. } => (*in_width, "table"),
            COp::MaxPool { diff_width, .. } => (*diff_width, "max pooling"),
            _ => continue,
        };
        let nu = if matches!(n.op, COp::Table { .. }) { c.table_input_norm2(id) } else { c.nodes[n.inputs[0]].norm2 };
        // The accumulator behind the read (before its rounding and offset).
        let mut src = n.inputs[0];
        while matches!(c.nodes[src].op, COp::Round { .. } | COp::AddClear(_)) {
            src = c.nodes[src].inputs[0];
        }
        let d = read as f64 + nu.max(1.0).log2();
        if worst.as_ref().is_none_or(|(w, _)| d > *w) {
            worst = Some((
                d,
                format!(
                    "layer '{}' limits it: its {what} reads {read} bits of a {}-bit accumulator whose noise 2-norm is {:.1} (weights of '{}')",
                    n.name.strip_suffix(".table").unwrap_or(&n.name),
                    c.nodes[src].range.width(),
                    nu,
                    c.nodes[src].name
                ),
            ));
        }
    }
    worst.map_or("the circuit has no bootstrap".into(), |(_, s)| s)
}

/// The per-layer widths of a circuit as compiled, for the report: every linear node's weight
/// bits and every table's read and output bits.
pub fn layer_widths(q: &QuantOptions, c: &Circuit) -> BTreeMap<String, String> {
    let l = layers_of(c);
    let mut out = BTreeMap::new();
    for n in &l.linear {
        out.insert(n.clone(), format!("weights {} bits", q.weight_bits_of(n)));
    }
    for t in &l.tables {
        let read = c
            .nodes
            .iter()
            .find(|n| n.name == format!("{t}.table"))
            .and_then(|n| if let COp::Table { in_width, .. } = n.op { Some(in_width) } else { None });
        out.insert(
            format!("{t} (table)"),
            format!(
                "reads {} bits (at most {}), outputs {} bits, {} rounding",
                read.map_or("?".into(), |r| r.to_string()),
                q.table_bits_of(t),
                q.act_bits_of(t),
                q.rounding_of(t)
            ),
        );
    }
    out
}
