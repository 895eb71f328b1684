//! What the search reports: every candidate tried, the outcome, and the errors that name the
//! limiting layer.

use super::*;

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
    /// Validation images outside the calibrated ranges (their encrypted result is
    /// unspecified), if simulated.
    pub outside: Option<usize>,
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
            "  {:<3} {:<8} {:>10} {:>9} {:>9}  {:<44} widths",
            "#", "step", "bootstraps", "est. s", "valid.", "verdict"
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

/// The error when no candidate meets the budget: the most accurate candidate, and the layer
/// whose read is hardest for the parameters.
pub(super) fn nothing_fits(
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
