//! `fhec-bench ranges`: how often test images leave the calibrated ranges, per bundled model
//! and range margin, and what a wider margin costs (bootstraps, estimated server time,
//! accuracy). Writes the `ranges` section of `RELIABILITY.md`.
//!
//! A value outside its declared range wraps around the torus in the encrypted circuit, so
//! the result of such an image is unspecified; the simulator detects it exactly
//! ([`fhec_ir::sim::SimError::out_of_range`]). The calibrated range of every table input
//! is what the calibration images produce, widened by the margin on each side.

use std::path::Path;

use anyhow::{Context, Result};
use fhec_compiler::report::build_report;
use fhec_driver::compile::{CompileOptions, compile_model};
use fhec_driver::measure::{Accuracy, measure_accuracy};
use fhec_driver::model::load_manifest;
use fhec_runtime::dataset::{Dataset, DatasetKind};

use crate::common::{machine_line, save_section};

/// What to measure.
pub struct RangesRun<'a> {
    /// The bundled models' directory (with `manifest.json`).
    pub models: &'a Path,
    /// Model files to measure (all when empty).
    pub only: &'a [String],
    /// The datasets' directory.
    pub data: &'a Path,
    /// Range margins, percent.
    pub margins: &'a [u32],
    /// Test images per set, at most (all when `None`).
    pub limit: Option<usize>,
    /// The markdown file to write the section into.
    pub out: &'a Path,
}

/// One model at one margin.
struct Row {
    margin: u32,
    outside: usize,
    accuracy: f64,
    bootstraps: usize,
    est_s: Option<f64>,
}

pub fn bench_ranges(r: &RangesRun) -> Result<()> {
    let manifest = load_manifest(r.models)?;
    let machine = machine_line();
    let mut lines = vec![];
    let mut summary = vec![];
    for m in manifest.models.iter().filter(|m| r.only.is_empty() || r.only.contains(&m.file)) {
        let path = r.models.join(&m.file);
        let kind: DatasetKind = m.dataset.parse()?;
        let mut ds = Dataset::load_test(r.data, kind)?;
        if let Some(n) = r.limit {
            ds.truncate(n);
        }
        let n = ds.len();
        let mut rows = vec![];
        for &margin in r.margins {
            let args = CompileOptions {
                calib_dataset: Some(kind),
                preprocess: Some(m.preprocess),
                no_fit: true,
                range_margin: Some(margin),
                ..CompileOptions::default()
            };
            let (g, art) = compile_model(&path, &args).with_context(|| format!("{} at margin {margin}%", m.file))?;
            let Accuracy { simulated, outside, .. } = measure_accuracy(&g, &art, &ds, m.preprocess)?;
            let est_s = build_report(&art.circuit, &art.options, art.fhe.as_ref())
                .fhe
                .map(|f| f.est_latency_ms_one_core / 1000.0);
            let row = Row {
                margin,
                outside,
                accuracy: 100.0 * simulated / n as f64,
                bootstraps: art.circuit.bootstrap_stats().total(),
                est_s,
            };
            let line = format!(
                "| {} | {} | {}% | {} | {:.2}% | {:.2}% | {} | {} |",
                m.file,
                m.dataset,
                row.margin,
                row.outside,
                100.0 * row.outside as f64 / n as f64,
                row.accuracy,
                row.bootstraps,
                row.est_s.map_or("no 128-bit params".into(), |s| format!("{s:.1} s")),
            );
            println!("{line}");
            lines.push(line);
            rows.push(row);
        }
        summary.push(format!("| {} | {} |", m.file, zero_rate_choice(&rows)));
    }
    let body = format!(
        "## Out-of-range rates per model and range margin\n\n\
Produced by `cargo bench-table ranges --data {}` ({} test images per set). Every bundled model \
compiled at the widths its metadata names (else the defaults), without the fit, its table \
ranges calibrated on the bundled sample and widened by the margin on each side. *Outside*: \
test images that drive some value outside a declared range: their encrypted result is \
unspecified (the simulator detects it exactly and counts them as errors in *simulated*). \
*Est. time*: the cost model's server time per image on one core. Machine at the start: \
{machine}.\n\n\
| model | dataset | margin | outside | rate | simulated | bootstraps | est. time |\n\
| --- | --- | --- | --- | --- | --- | --- | --- |\n{}\n\n\
The smallest margin measured with no image outside, and what it costs against the default \
margin of {}%:\n\n\
| model | smallest margin with none outside |\n| --- | --- |\n{}\n",
        r.data.display(),
        r.limit.map_or("all".to_string(), |n| n.to_string()),
        lines.join("\n"),
        fhec_compiler::quantize::QuantOptions::default().range_margin_pct,
        summary.join("\n"),
    );
    save_section(r.out, "# fhec reliability", "ranges", &body)?;
    println!("wrote {}", r.out.display());
    Ok(())
}

/// The smallest margin with no image outside, with its cost and accuracy beside the
/// default margin's.
fn zero_rate_choice(rows: &[Row]) -> String {
    let default = fhec_compiler::quantize::QuantOptions::default().range_margin_pct;
    let base = rows.iter().find(|r| r.margin == default);
    let Some(z) = rows.iter().filter(|r| r.outside == 0).min_by_key(|r| r.margin) else {
        return "none of those measured".into();
    };
    match base {
        Some(b) => format!(
            "{}%: {:+} bootstraps, est. time x{:.2}, accuracy {:+.2} points",
            z.margin,
            z.bootstraps as i64 - b.bootstraps as i64,
            match (z.est_s, b.est_s) {
                (Some(a), Some(b)) if b > 0.0 => a / b,
                _ => f64::NAN,
            },
            z.accuracy - b.accuracy
        ),
        None => format!("{}%", z.margin),
    }
}
