//! `fhec-bench accuracy` and `fhec-bench passes`: float vs simulated accuracy of every bundled model, and the passes' effect on bootstraps and accuracy.

use std::path::Path;

use anyhow::Result;
use fhec_compiler::passes::ActivationPolicy;
use fhec_compiler::quantize::QuantOptions;
use fhec_compiler::report::build_report;
use fhec_driver::compile::{CompileOptions, Compiled, compile_model, compile_model_with};
use fhec_driver::measure::{Accuracy, measure_accuracy, widths_of};
use fhec_driver::model::load_manifest;
use fhec_ir::Graph;
use fhec_ir::artifact::Artifact;
use fhec_runtime::dataset::{Dataset, DatasetKind};

use crate::common::{machine_line, save_section};

pub fn bench_accuracy(models: &Path, data: &Path, out: &Path, limit: Option<usize>) -> Result<()> {
    let manifest = load_manifest(models)?;
    let machine = machine_line();
    let mut rows = vec![];
    for m in &manifest.models {
        let path = models.join(&m.file);
        let kind: DatasetKind = m.dataset.parse()?;
        let mut ds = Dataset::load_test(data, kind)?;
        if let Some(n) = limit {
            ds.truncate(n);
        }
        let args = CompileOptions {
            calib_dataset: Some(kind),
            preprocess: Some(m.preprocess),
            no_fit: true,
            ..CompileOptions::default()
        };
        let t0 = std::time::Instant::now();
        let (g, art) = compile_model(&path, &args)?;
        let build_s = t0.elapsed().as_secs_f64();
        let Accuracy { float, simulated, outside, .. } = measure_accuracy(&g, &art, &ds, m.preprocess)?;
        let c = &art.circuit;
        let st = c.bootstrap_stats();
        let n = ds.len() as f64;
        let row = format!(
            "| {} | {} | {} | {} | {:.2}% | {:.2}% | {:+.2} | {} | {} | {} | {} | {} | {:.1} KB | {:.1} s |",
            m.file,
            m.dataset,
            m.preprocess,
            widths_of(&art),
            100.0 * float as f64 / n,
            100.0 * simulated / n,
            100.0 * (simulated - float as f64) / n,
            outside,
            st.by_width.values().sum::<usize>(),
            st.rounding,
            st.max_width(),
            c.nodes.iter().map(|x| x.range.width()).max().unwrap_or(0),
            art.to_bytes().len() as f64 / 1024.0,
            build_s
        );
        println!("{row}");
        rows.push(row);
    }
    let d = QuantOptions::default();
    let body = format!(
        "## Accuracy: float vs compiled circuit (simulated)\n\n\
Produced by `cargo bench-table accuracy --data {}` ({} images per test set). Default compile \
options: input {} bits, weights {} bits, activations {} bits, tables read at most {} bits \
(wider accumulators are rounded exactly first), unless the model's metadata names the widths \
it was trained for (column *widths*: input/weight/activation/table bits); table ranges \
calibrated on the first {} images of the bundled training sample with a {}% margin. *Outside*: test images that \
drive a value outside the calibrated ranges (counted as errors in *simulated*). \
Machine at the start: {machine}.\n\n\
| model | dataset | preprocess | widths | float | simulated | Δ points | outside | table bootstraps | rounding bootstraps | widest table (bits) | widest value (bits) | artifact | build time |\n\
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n{}\n",
        data.display(),
        limit.map_or("all".to_string(), |n| n.to_string()),
        d.input_bits,
        d.weight_bits,
        d.act_bits,
        d.max_table_bits,
        CompileOptions::default().calib_limit,
        d.range_margin_pct,
        rows.join("\n")
    );
    save_section(out, "# fhec benchmarks", "accuracy", &body)?;
    println!("wrote {}", out.display());
    Ok(())
}

/// One row of the passes table: a model compiled with one pipeline.
pub fn passes_row(
    model: &str,
    args: &CompileOptions,
    art: &Artifact,
    notes: &[String],
    acc: &Accuracy,
    n: f64,
) -> String {
    let st = art.circuit.bootstrap_stats();
    let est = match &build_report(&art.circuit, &art.options, art.fhe.as_ref()).fhe {
        Some(f) => format!("{:.0} s", f.est_latency_ms_one_core / 1000.0),
        None => "no 128-bit params".into(),
    };
    let widths: Vec<String> = st.by_width.iter().map(|(w, k)| format!("{k} x {w}-bit")).collect();
    format!(
        "| {model} | {} | {} | {} | {} | {} | {} | {est} | {:.2}% | {:.2}% |",
        args.passes.as_deref().unwrap_or("activations,declutter"),
        match args.activations {
            ActivationPolicy::Poly => format!("poly, degree {}", args.poly_degree),
            p => p.to_string(),
        },
        if notes.is_empty() { "—".into() } else { notes.join("; ") },
        st.total(),
        widths.join(", "),
        st.rounding,
        100.0 * acc.float as f64 / n,
        100.0 * acc.simulated / n,
    )
}

pub fn bench_passes(
    models: &Path,
    data: &Path,
    out: &Path,
    limit: Option<usize>,
    policies_on: &[String],
) -> Result<()> {
    let manifest = load_manifest(models)?;
    let machine = machine_line();
    let mut rows = vec![];
    for m in &manifest.models {
        let path = models.join(&m.file);
        let kind: DatasetKind = m.dataset.parse()?;
        let mut ds = Dataset::load_test(data, kind)?;
        if let Some(n) = limit {
            ds.truncate(n);
        }
        let base = CompileOptions {
            calib_dataset: Some(kind),
            preprocess: Some(m.preprocess),
            no_fit: true,
            ..CompileOptions::default()
        };
        let mut variants = vec![CompileOptions { passes: Some("none".into()), ..base.clone() }, base.clone()];
        if policies_on.iter().any(|f| f == &m.file) {
            for d in [2, 4] {
                variants.push(CompileOptions { activations: ActivationPolicy::Poly, poly_degree: d, ..base.clone() });
            }
            variants.push(CompileOptions { activations: ActivationPolicy::Auto, ..base.clone() });
        }
        for args in &variants {
            let mut notes = vec![];
            let mut last: Option<Graph> = None;
            let mut keep = |pass: &str, g: &Graph, ns: &[String]| {
                for n in ns {
                    if let Some(r) = n.strip_prefix("rules fired: ") {
                        notes.push(format!("{pass}: {r}"));
                    } else if let Some(i) = n.find("estimated cost ") {
                        notes.push(format!("cost {}", &n[i + "estimated cost ".len()..]));
                    } else if n.contains("replaced") || n.starts_with("no activation") {
                        notes.push(format!("{pass}: {n}"));
                    }
                }
                last = Some(g.clone());
            };
            let Compiled { graph: g, artifact: art, .. } = compile_model_with(&path, args, &mut keep, false)?;
            let optimized = last.unwrap_or(g);
            let acc = measure_accuracy(&optimized, &art, &ds, m.preprocess)?;
            let row = passes_row(&m.file, args, &art, &notes, &acc, ds.len() as f64);
            println!("{row}");
            rows.push(row);
        }
    }
    let body = format!(
        "## Optimisation passes: bootstraps and accuracy before and after\n\n\
Produced by `cargo bench-table passes --data {}` ({} images per test set). Each model is compiled \
without passes (`none`) and with the default pipeline (`activations,declutter`: the \
activation policy, then every e-graph rule group in one e-graph, extracted with the \
bootstrap cost model of `compiler/src/passes/egraph/cost.rs`); the models named by \
`--policies-on` also with `--activations poly` (least-squares polynomials of degree 2 and 4 \
fitted to each activation over the values its input takes on the calibration images) and \
`auto`. *Rules / notes*: the rules that fired, the \
e-graph's estimated cost before -> after, the activations replaced. *Float*: the float \
interpreter on the graph after the passes (so a polynomial's own effect shows). *Est. server time*: the parameter search's \
estimate for one image on one core. Widths are the model's defaults (see the accuracy \
section). Machine at the start: {machine}.\n\n\
| model | passes | activations | rules / notes | bootstraps | tables | rounding | est. server time | float (after passes) | simulated |\n\
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n{}\n",
        data.display(),
        limit.map_or("all".to_string(), |n| n.to_string()),
        rows.join("\n")
    );
    save_section(out, "# fhec benchmarks", "passes", &body)?;
    println!("wrote {}", out.display());
    Ok(())
}
