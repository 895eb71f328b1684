//! The search itself: compiling, costing and validating candidates, and the four steps.

use super::*;

pub(super) struct Search<'a> {
    pub(super) g: &'a Graph,
    pub(super) pre: Preprocess,
    pub(super) cal: Calibration,
    pub(super) validation: &'a [&'a [u8]],
    /// The reference class of every validation image (labels or float predictions).
    pub(super) reference: Vec<usize>,
    /// Whether the references are labels.
    pub(super) labelled: bool,
    /// The float model's class of every validation image.
    pub(super) float_pred: Vec<usize>,
    pub(super) params: &'a ParamOptions,
    pub(super) fit: &'a FitOptions,
    pub(super) cache: HashMap<String, Eval>,
    pub(super) report: Vec<Candidate>,
    /// Cache key -> index in `report` of the candidate's first (fullest) entry.
    pub(super) seen: HashMap<String, usize>,
}

impl<'a> Search<'a> {
    /// Compiles and costs `q` (cached).
    pub(super) fn compile(&mut self, q: &QuantOptions) -> Result<Eval, QuantError> {
        let k = key(q);
        if let Some(e) = self.cache.get(&k) {
            return Ok(e.clone());
        }
        let mut circuit = quantize(self.g, self.pre, &self.cal, q)?;
        let setup = select_rounding(&mut circuit, self.params);
        let e = Eval { circuit, setup, accuracy: None, guard: 0.0, outside: None };
        self.cache.insert(k, e.clone());
        Ok(e)
    }

    /// Records a candidate (once per distinct options; a later verdict replaces an earlier one).
    pub(super) fn note(&mut self, step: &'static str, q: &QuantOptions, e: &Eval, verdict: String) {
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
            outside: e.outside,
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
    pub(super) fn quick_reject(&mut self, q: &QuantOptions, target: f64) -> Result<Option<f64>, QuantError> {
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
    pub(super) fn accuracy(&mut self, q: &QuantOptions) -> Result<(Eval, f64), QuantError> {
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
        let (correct, differ, outside): (usize, usize, usize) = (0..n * draws as usize)
            .into_par_iter()
            .map(|k| {
                let (d, i) = ((k / n) as u64, k % n);
                let (class, out) = match sim::classify_noisy_draw(c, self.validation[i], &sigma, seed.wrapping_add(d)) {
                    Ok((class, _)) => (class, false),
                    Err(e) => (usize::MAX, e.out_of_range && d == 0),
                };
                ((class == self.reference[i]) as usize, (class != self.float_pred[i]) as usize, out as usize)
            })
            .reduce(|| (0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2));
        let total = n as f64 * draws as f64;
        let a = correct as f64 / total;
        e.accuracy = Some(a);
        e.outside = Some(outside);
        e.guard = GUARD_SE * (differ as f64 / draws as f64).sqrt() / n as f64;
        self.cache.insert(key(q), e.clone());
        Ok((e, a))
    }
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
                                outside: None,
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
                    // The ranges' margin changes the accuracy at (nearly) the same cost: a
                    // margin that clips less, or wastes fewer of a table's steps, may bring
                    // these widths within budget (step 4 tunes it for the chosen widths).
                    if let Some(m) = margin_within(&mut s, &q, &e, target, fx.range_margin)? {
                        chosen = Some(m);
                        break;
                    }
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
                let (fe, fa) = s.accuracy(&fq).unwrap_or((fe, 0.0));
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
        let own = q.range_margin_pct;
        for m in MARGINS.into_iter().filter(|&m| m != own) {
            let (mq, me, ma, cheap) = at_margin(&mut s, &q, &e, m)?;
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
        "chose {} : {} bootstraps, est. {:.1} s per image on one core, validation {:.2}% ({:+.2} points from float; {} of {} images outside the calibrated ranges), {}",
        describe(&q),
        e.circuit.bootstrap_stats().total(),
        e.cost().unwrap_or(0.0) / 1000.0,
        100.0 * acc,
        100.0 * (acc - float_accuracy),
        e.outside.unwrap_or(0),
        data.validation.len(),
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

/// Range margins (percent) the fit tries (the default is 10%).
const MARGINS: [u32; 3] = [5, 10, 20];

/// For widths `q` (evaluated as `e`) over budget: the first of the other range margins
/// ([`MARGINS`]) that brings them within `target` at no more than their cost, with its
/// evaluation and accuracy (none when the margin is fixed by the user or none does).
fn margin_within(
    s: &mut Search,
    q: &QuantOptions,
    e: &Eval,
    target: f64,
    fixed: bool,
) -> Result<Option<(QuantOptions, Eval, f64)>, QuantError> {
    if fixed {
        return Ok(None);
    }
    for m in MARGINS.into_iter().filter(|&m| m != q.range_margin_pct) {
        let (mq, me, ma, cheap) = at_margin(s, q, e, m)?;
        if cheap && ma - me.guard >= target {
            s.note("grid", &mq, &me, "within budget at this range margin".into());
            return Ok(Some((mq, me, ma)));
        }
        s.note("grid", &mq, &me, "over budget at this range margin too".into());
    }
    Ok(None)
}

/// Widths `q` (evaluated as `e`) at range margin `m`: the options, their evaluation and
/// validation accuracy, and whether they cost no more than `e` (the margin moves the ranges,
/// hence possibly the parameters).
fn at_margin(
    s: &mut Search,
    q: &QuantOptions,
    e: &Eval,
    m: u32,
) -> Result<(QuantOptions, Eval, f64, bool), QuantError> {
    let mq = QuantOptions { range_margin_pct: m, ..q.clone() };
    let (me, ma) = s.accuracy(&mq)?;
    let cheap = me.cost().is_some_and(|c| c <= e.cost().unwrap_or(f64::MAX) * 1.001);
    Ok((mq, me, ma, cheap))
}
