//! `fhec-bench reliability`: every kind of bootstrap the runtime performs, run by the
//! thousand at inflated failure targets, each output decrypted and checked, the observed
//! failure rate beside the noise model's prediction (`fhec_driver::reliability`); writes the
//! section of RELIABILITY.md.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use fhec_driver::reliability::{Bound, CONFIDENCE, Event, Kind, Measurement, Options, measure};

use crate::common::{cpu_model, machine_line, save_section};

/// What to run.
pub struct ReliabilityRun<'a> {
    /// Per-bootstrap failure targets, as log2 (e.g. -6, -8, -10).
    pub targets: &'a [i32],
    /// The kinds measured.
    pub kinds: &'a [Kind],
    /// Values read per kind and target: `events / p`, at most `max_values` (about `events`
    /// failures expected where the target binds).
    pub events: f64,
    /// The most values read per kind and target.
    pub max_values: usize,
    /// Seed of the inputs.
    pub seed: u64,
    /// Markdown file whose section is (re)written.
    pub out: &'a Path,
}

pub fn bench_reliability(run: &ReliabilityRun<'_>) -> Result<()> {
    let (cpu, before, start) = (cpu_model(), machine_line(), Instant::now());
    let mut done: Vec<Measurement> = vec![];
    let total = run.targets.len() * run.kinds.len();
    for &t in run.targets {
        let p = (t as f64).exp2();
        let values = ((run.events / p).ceil() as usize).min(run.max_values);
        for &kind in run.kinds {
            eprintln!("== {} at p = 2^{t}, {values} values", kind.name());
            let t0 = Instant::now();
            let m = measure(kind, &Options { p_error: p, values, seed: run.seed })?;
            eprintln!(
                "   {} ({} bootstraps, {:.0} s)",
                m.setup.params.summary(),
                m.bootstraps_run,
                t0.elapsed().as_secs_f64()
            );
            for r in &m.rows {
                eprintln!(
                    "   {} ({:?}): {} of {} = {:.5}, predicted {:.5}, interval [{:.5}, {:.5}]{}",
                    r.what,
                    r.event,
                    r.observed,
                    r.bootstraps,
                    r.rate(),
                    r.predicted,
                    r.interval.0,
                    r.interval.1,
                    if r.agrees() { "" } else { "  DISAGREES" }
                );
            }
            done.push(m);
            // Rewritten after every measurement: a long run keeps what it measured.
            let header = Header {
                run,
                cpu: &cpu,
                before: &before,
                after: &machine_line(),
                seconds: start.elapsed().as_secs_f64(),
            };
            write_section(&header, &done, total)?;
        }
    }
    println!("wrote the reliability section of {} ({} measurements)", run.out.display(), done.len());
    Ok(())
}

struct Header<'a> {
    run: &'a ReliabilityRun<'a>,
    cpu: &'a str,
    before: &'a str,
    after: &'a str,
    seconds: f64,
}

/// A rate with enough digits to compare.
fn rate(r: f64) -> String {
    if r == 0.0 {
        "0".into()
    } else if r >= 0.01 {
        format!("{r:.4}")
    } else {
        format!("{r:.2e}")
    }
}

fn write_section(h: &Header<'_>, done: &[Measurement], total: usize) -> Result<()> {
    let run = h.run;
    let targets: Vec<String> = run.targets.iter().map(|t| t.to_string()).collect();
    let kinds: Vec<&str> = run.kinds.iter().map(|k| k.name()).collect();
    let mut s = String::from("### Measured vs predicted, by kind and target\n\n");
    s.push_str(&format!(
        "Produced by `cargo bench-table reliability --targets={} --kinds {} --events {} --max-values {} --seed {}` \
in one run on {} ({:.0} min). Machine before the run: {}; after: {}.{}\n\n",
        targets.join(","),
        kinds.join(","),
        run.events,
        run.max_values,
        run.seed,
        h.cpu,
        h.seconds / 60.0,
        h.before,
        h.after,
        if done.len() < total {
            format!(" Run in progress: {} of {total} measurements.", done.len())
        } else {
            String::new()
        }
    ));
    s.push_str(&format!(
        "*Bootstraps*: bootstraps of the row's kind decrypted and counted; *observed*: outputs that \
differ from what the bootstrap computes without noise (*failure*), or approximate reads one \
step off (*step off*, their semantics); *predicted*: the noise model's rate, the mean over the \
bootstraps counted of `Variances::failure_probability` of each one's requirement \
(`EncodingPlan::node_requirements`, what the parameter search checks), or \
`FheSetup::approx_step_rate` for steps off; *interval*: Clopper-Pearson, {:.1}%; *model*: \
*exact* (the interval must contain the prediction) or *upper bound* (the prediction must not \
lie below the interval; the note says why). Parameters: chosen by the search for the target \
(128-bit secure) with `--p-error 2^t`.\n\n",
        100.0 * CONFIDENCE
    ));
    s.push_str("| kind | event | p target | parameters | bootstraps | observed | observed rate | predicted rate | 99.9% interval | model | agrees |\n");
    s.push_str("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    let mut notes: Vec<&str> = vec![];
    for m in done {
        for r in &m.rows {
            let model = match r.bound {
                Bound::Exact => "exact".to_string(),
                Bound::Upper => {
                    if !notes.contains(&r.note) {
                        notes.push(r.note);
                    }
                    let i = notes.iter().position(|n| *n == r.note).expect("pushed") + 1;
                    format!("upper bound ({i})")
                }
            };
            s.push_str(&format!(
                "| {} | {} | 2^{:.0} | {} | {} | {} | {} | {} | [{}, {}] | {} | {} |\n",
                r.what,
                match r.event {
                    Event::Failure => "failure",
                    Event::StepOff => "step off",
                },
                m.p_error.log2(),
                m.setup.params.summary(),
                r.bootstraps,
                r.observed,
                rate(r.rate()),
                rate(r.predicted),
                rate(r.interval.0),
                rate(r.interval.1),
                model,
                if r.agrees() { "yes" } else { "**no**" }
            ));
        }
    }
    if !notes.is_empty() {
        s.push('\n');
        for (i, n) in notes.iter().enumerate() {
            s.push_str(&format!("({}) {}.\n", i + 1, n));
        }
    }
    save_section(run.out, "# fhec reliability", "reliability", &s)?;
    Ok(())
}
