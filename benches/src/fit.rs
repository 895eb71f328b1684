//! `fhec-bench fit`: models nobody trained for fhec, compiled with no flags by the automatic
//! fit, run encrypted, beside Concrete ML on the same files in the same run; writes the `fit`
//! section of BENCHMARKS.md.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use fhec_compiler::manifest::ManifestEntry;
use fhec_driver::compile::{CompileOptions, Compiled, compile_model_with};
use fhec_driver::encrypted::fhe_eval;
use fhec_driver::measure::measure_accuracy;
use fhec_driver::model::load_manifest;
use fhec_runtime::dataset::{Dataset, DatasetKind};

use crate::common::{cpu_model, machine_line, run_anchor, save_section};

/// The bundled models that were not trained for fhec (plain PyTorch training, onnxruntime's
/// quantizer, third-party exports kept byte-exact); with the external exports
/// (`examples/models/external/`), what this benchmark compiles.
pub const PLAIN_BUNDLED: &[&str] = &[
    "cnn_mnist.onnx",
    "cnn_mnist_qdq.onnx",
    "cnn_fashion.onnx",
    "zoo_mnist8.onnx",
    "burn_mnist_bn.onnx",
    "ort_int8_qlinear.onnx",
];

/// What `cargo bench-table fit` runs (see `Bench::Fit`).
pub struct FitRun<'a> {
    pub models: &'a Path,
    pub external: &'a Path,
    pub only: &'a [String],
    pub data: &'a Path,
    pub images: usize,
    pub cml_python: &'a str,
    pub cml_images: usize,
    pub cml_max_fhe_seconds: f64,
    pub out: &'a Path,
    pub limit: Option<usize>,
}

/// One model's figures.
pub struct Row {
    file: String,
    origin: &'static str,
    cells: Vec<String>,
    widths: String,
}

/// The models of the benchmark: the plain bundled ones, then the external exports.
pub fn models(run: &FitRun) -> Result<Vec<(PathBuf, ManifestEntry, &'static str)>> {
    let mut out = vec![];
    let bundled = load_manifest(run.models)?;
    for f in PLAIN_BUNDLED {
        let m = bundled
            .models
            .iter()
            .find(|m| m.file == *f)
            .with_context(|| format!("{f} is not in {}/manifest.json", run.models.display()))?;
        out.push((run.models.join(f), m.clone(), "bundled"));
    }
    if run.external.join("manifest.json").is_file() {
        for m in load_manifest(run.external)?.models {
            out.push((run.external.join(&m.file), m, "external"));
        }
    }
    if !run.only.is_empty() {
        for o in run.only {
            if !out.iter().any(|(_, m, _)| &m.file == o) {
                bail!("{o} is not one of the benchmark's models");
            }
        }
        out.retain(|(_, m, _)| run.only.contains(&m.file));
    }
    Ok(out)
}

pub fn pct(k: f64, n: usize) -> String {
    format!("{:.2}%", 100.0 * k / n.max(1) as f64)
}

/// The test set of a model: its dataset, the images of its classes.
pub fn test_set(run: &FitRun, m: &ManifestEntry, kind: DatasetKind) -> Result<Dataset> {
    let mut ds = Dataset::load_test(run.data, kind)?;
    if let Some(c) = &m.classes {
        ds.keep_classes(c);
    }
    if let Some(n) = run.limit {
        ds.truncate(n);
    }
    Ok(ds)
}

pub fn one_model(run: &FitRun, path: &Path, m: &ManifestEntry, origin: &'static str) -> Result<Row> {
    let kind: DatasetKind = m.dataset.parse()?;
    let args = CompileOptions {
        calib_dataset: Some(kind),
        preprocess: Some(m.preprocess),
        classes: m.classes.clone(),
        ..CompileOptions::default()
    };
    let t = std::time::Instant::now();
    let compiled = compile_model_with(path, &args, &mut |_, _, _| {}, false);
    let fit_s = t.elapsed().as_secs_f64();
    let Compiled { graph, artifact: art, fit, .. } = match compiled {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("{e:#}").replace('|', "/").replace('\n', " ");
            let mut cells = vec![format!("does not compile: {msg}")];
            cells.resize(12, "—".into());
            return Ok(Row { file: m.file.clone(), origin, cells, widths: String::new() });
        }
    };
    let ds = test_set(run, m, kind)?;
    let acc = measure_accuracy(&graph, &art, &ds, m.preprocess)?;
    let n = ds.len();
    let setup = art.fhe.as_ref().context("the fit chose a circuit without parameters")?;
    let stats = art.circuit.bootstrap_stats();
    let widths: Vec<String> = stats.by_width.iter().map(|(w, k)| format!("{k} x {w}-bit")).collect();
    let mut sample = ds.clone();
    sample.truncate(run.images);
    let fhe = if run.images > 0 { Some(fhe_eval(path, &art, &sample, kind)?) } else { None };
    let val = fit.as_ref().and_then(|f| f.chosen.and_then(|i| f.candidates[i].accuracy));
    let draws = if acc.draws.len() > 1 {
        let lo = *acc.draws.iter().min().unwrap_or(&0) as f64;
        let hi = *acc.draws.iter().max().unwrap_or(&0) as f64;
        format!(" ({} draws, {} to {})", acc.draws.len(), pct(lo, n), pct(hi, n))
    } else {
        String::new()
    };
    let mut cells = vec![
        format!("{} on {n}", pct(acc.float as f64, n)),
        format!(
            "{}{draws}{}",
            pct(acc.simulated, n),
            if acc.outside > 0 { format!("; {} outside", acc.outside) } else { String::new() }
        ),
        format!("{:+.2}", 100.0 * (acc.simulated - acc.float as f64) / n.max(1) as f64),
        format!("{} ({})", stats.total(), if widths.is_empty() { "no tables".into() } else { widths.join(", ") }),
        format!("{}; 2^{:.1} / inference", setup.params.summary(), setup.global_p_error.max(1e-300).log2()),
        format!("{:.1} s", setup.est_cost_ms / 1000.0),
    ];
    match &fhe {
        Some(f) => {
            cells.push(format!("{:.2} s / {:.2} CPU-s", f.evaluate_s, f.evaluate_cpu_s));
            cells.push(format!(
                "{}/{} {}, {}/{} correct",
                f.agree,
                f.compared,
                if art.circuit.is_approximate() { "same class as sim." } else { "= sim." },
                f.correct,
                sample.len()
            ));
        }
        None => cells.extend(["not run".into(), "—".into()]),
    }
    cells.push(format!("{:.0} s{}", fit_s, val.map_or(String::new(), |v| format!("; validation {v:.2}%"))));
    // Concrete ML on the same file.
    let cml = if run.cml_python == "none" { None } else { Some(concrete_ml(run, path, m)?) };
    let (cml_cell, ratio, acc_gap) = match &cml {
        None => ("not run (--concrete-ml-python none)".to_string(), "—".to_string(), "—".to_string()),
        Some(v) if v["compiled"] == false => (
            format!("does not compile: {}", v["error"].as_str().unwrap_or("?").replace('|', "/")),
            "—".into(),
            "—".into(),
        ),
        Some(v) => {
            let clear = v["clear_accuracy"].as_f64().unwrap_or(f64::NAN);
            let boots = v["bootstraps"].as_u64().unwrap_or(0);
            let p = v["global_p_error"].as_f64().unwrap_or(f64::NAN);
            let (time, secs, measured) = match v["median_evaluate_s"].as_f64() {
                Some(s) => (
                    format!("{s:.1} s / {:.1} CPU-s", v["median_evaluate_cpu_s"].as_f64().unwrap_or(f64::NAN)),
                    s,
                    true,
                ),
                None => {
                    let est = v["fhe_estimate_s"].as_f64().unwrap_or(f64::NAN);
                    let spent = v["fhe_elapsed_s"].as_f64().unwrap_or(f64::NAN);
                    (format!("not finished in {spent:.0} s (its estimate: {est:.0} s)"), est, false)
                }
            };
            let cell = format!(
                "{:.2}% (clear-quantized, {} images); {boots} bootstraps; {time}; 2^{:.1} / inference",
                100.0 * clear,
                v["clear_images"].as_u64().unwrap_or(0),
                p.max(1e-300).log2()
            );
            let ratio = match &fhe {
                Some(f) => format!("{:.2}{}", f.evaluate_s / secs, if measured { "" } else { " (vs its estimate)" }),
                None => "—".into(),
            };
            let gap = format!("{:+.2}", 100.0 * (acc.simulated / n.max(1) as f64 - clear));
            (cell, ratio, gap)
        }
    };
    cells.push(cml_cell);
    cells.push(ratio);
    cells.push(acc_gap);
    let layers: Vec<String> =
        art.options.iter().filter_map(|(k, v)| k.strip_prefix("layer ").map(|l| format!("`{l}`: {v}"))).collect();
    Ok(Row { file: m.file.clone(), origin, cells, widths: layers.join("; ") })
}

/// Runs the Concrete ML anchor on one file (its JSON result).
pub fn concrete_ml(run: &FitRun, path: &Path, m: &ManifestEntry) -> Result<serde_json::Value> {
    let mut extra: Vec<String> = vec![
        "--preprocess".into(),
        m.preprocess.to_string(),
        "--max-fhe-seconds".into(),
        format!("{}", run.cml_max_fhe_seconds),
    ];
    if let Some(o) = &m.output {
        extra.extend(["--output".into(), o.clone()]);
    }
    if let Some(c) = &m.classes {
        let c: Vec<String> = c.iter().map(|v| v.to_string()).collect();
        extra.extend(["--classes".into(), c.join(",")]);
    }
    if let Some(n) = run.limit {
        extra.extend(["--accuracy-limit".into(), n.to_string()]);
    }
    let refs: Vec<&str> = extra.iter().map(String::as_str).collect();
    run_anchor(
        run.cml_python,
        "concrete_ml.py",
        (path, run.data, &m.dataset, run.cml_images),
        &refs,
        "benches/anchors/setup.sh --concrete-ml",
    )
}

/// `cargo bench-table fit`.
pub fn bench_fit(run: &FitRun) -> Result<()> {
    if run.images == 0 {
        bail!("--images must be at least 1 (the benchmark measures encrypted runs)");
    }
    let list = models(run)?;
    let cpu = cpu_model();
    let before = machine_line();
    let mut rows = vec![];
    for (path, m, origin) in &list {
        eprintln!("== {} ({origin})", m.file);
        rows.push(one_model(run, path, m, origin)?);
        // The section is rewritten after every model: a long run keeps what it measured.
        write_section(run, &cpu, &before, &machine_line(), &rows, list.len())?;
    }
    println!("wrote the fit section of {} ({} models)", run.out.display(), rows.len());
    Ok(())
}

/// Writes the section with the rows measured so far (`total` models in the run).
pub fn write_section(run: &FitRun, cpu: &str, before: &str, after: &str, rows: &[Row], total: usize) -> Result<()> {
    let mut s = String::from(
        "## Models nobody trained for fhec, compiled with no flags (the automatic fit), beside Concrete ML\n\n",
    );
    s.push_str(&format!(
        "Produced by `cargo bench-table fit --data ../shared/data --images {}{}` in one run on {cpu}. Every model is compiled by `fhec build` with no flag besides its data (the bundled training sample of its dataset: 500 images calibrate, 1,000 validate), preprocessing, output and classes (from the `manifest.json` beside it): the fit chooses every width per layer, the rounding and the parameters, for the least estimated server time within 0.5 points of the float model's validation accuracy. *Float* and *simulated*: top-1 on the whole test set (of the model's classes; simulated: the mean over 10 read-noise draws sampled from the chosen parameters, with their range). *fhec evaluate*: median over the first {} test images, encrypted by the client, evaluated with the evaluation key only on both cores, decrypted (wall / CPU time of the process); *vs sim.*: classes equal to the noise-free simulation's. *Est.*: the parameter search's estimate on one core. *Concrete ML 1.9*: `benches/anchors/concrete_ml.py` on the same file (n_bits 6, rounding threshold 6 bits, its default failure probability, calibrated on 1,000 training images), clear-quantized accuracy on the test set, its encrypted run on {} image(s) with a limit of {:.0} s (beyond it, its own estimate is shown). *fhec / CML*: evaluate time over Concrete ML's. *Δ vs CML*: fhec's simulated accuracy minus Concrete ML's clear-quantized one (points). Machine before the run: {before}; after: {after}.{}\n\n",
        run.images,
        if run.cml_python == "none" { " --concrete-ml-python none" } else { "" },
        run.images,
        run.cml_images,
        run.cml_max_fhe_seconds,
        if rows.len() < total { format!(" Run in progress: {} of {total} models.", rows.len()) } else { String::new() }
    ));
    s.push_str("| model | from | float | simulated | Δ points | bootstraps / image | parameters, failure | est. server time (1 core) | fhec evaluate (wall / CPU) | encrypted vs sim. | fit time | Concrete ML 1.9 (same file, same run) | fhec / CML | Δ vs CML |\n");
    s.push_str("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for r in rows {
        s.push_str(&format!("| {} | {} | {} |\n", r.file, r.origin, r.cells.join(" | ")));
    }
    s.push_str("\nWidths the fit chose, per layer:\n\n");
    for r in rows {
        if !r.widths.is_empty() {
            s.push_str(&format!("- {}: {}\n", r.file, r.widths));
        }
    }
    save_section(run.out, "# fhec benchmarks", "fit", &s)?;
    Ok(())
}
