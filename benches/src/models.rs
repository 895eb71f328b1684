//! `fhec-bench models`: one row per bundled model (accuracy, encrypted sample, cost, sizes).

use std::path::Path;

use anyhow::{Result, bail};
use fhec_driver::compile::{CompileOptions, compile_model};
use fhec_driver::encrypted::fhe_eval;
use fhec_driver::measure::{measure_accuracy, widths_of};
use fhec_driver::model::load_manifest;
use fhec_driver::progress::size;
use fhec_runtime::dataset::{Dataset, DatasetKind};

use crate::common::{cpu_model, machine_line, save_section};

pub fn bench_models(
    models: &Path,
    data: &Path,
    images: usize,
    budget: f64,
    out: &Path,
    limit: Option<usize>,
) -> Result<()> {
    let manifest = load_manifest(models)?;
    let (cpu, load_before) = (cpu_model(), machine_line());
    let mut rows = vec![];
    let mut failures = vec![];
    for m in &manifest.models {
        let path = models.join(&m.file);
        let kind: DatasetKind = m.dataset.parse()?;
        let mut ds = Dataset::load_test(data, kind)?;
        if let Some(n) = limit {
            ds.truncate(n);
        }
        println!("== {} ==", m.file);
        let args = CompileOptions {
            calib_dataset: Some(kind),
            preprocess: Some(m.preprocess),
            no_fit: true,
            ..CompileOptions::default()
        };
        let (g, art) = compile_model(&path, &args)?;
        let acc = measure_accuracy(&g, &art, &ds, m.preprocess)?;
        let n = ds.len() as f64;
        println!(
            "float {:.2}%, simulated {:.2}% ({} images, {} outside the calibrated ranges)",
            100.0 * acc.float as f64 / n,
            100.0 * acc.simulated / n,
            ds.len(),
            acc.outside
        );
        let st = art.circuit.bootstrap_stats();
        let widths: Vec<String> = st.by_width.iter().map(|(w, k)| format!("{k} x {w}-bit")).collect();
        let mut row = format!(
            "| {} | {} | {} | {:.2}% | {:.2}% | {:+.2} | {} ({} + {} rounding) | {} |",
            m.file,
            m.dataset,
            widths_of(&art),
            100.0 * acc.float as f64 / n,
            100.0 * acc.simulated / n,
            100.0 * (acc.simulated - acc.float as f64) / n,
            st.total(),
            widths.join(", "),
            st.rounding,
            st.max_width(),
        );
        let dash = " — |".repeat(10);
        match art.fhe.as_ref() {
            None => row.push_str(&format!(" none at 128 bits |{dash}")),
            Some(setup) if ((budget / (setup.est_cost_ms / 1000.0)) as usize).min(images) == 0 => {
                row.push_str(&format!(
                    " {}; 128 bits, 2^{:.1} | not run (estimated {:.0} s per image on one core) |{}",
                    setup.params.summary(),
                    setup.global_p_error.max(1e-300).log2(),
                    setup.est_cost_ms / 1000.0,
                    " — |".repeat(9)
                ))
            }
            Some(setup) => {
                let mut sample = ds.clone();
                sample.truncate(((budget / (setup.est_cost_ms / 1000.0)) as usize).min(images));
                let r = match fhe_eval(&path, &art, &sample, kind) {
                    Ok(r) => r,
                    Err(e) => {
                        // Keep the rest of the table; the command still fails at the end.
                        eprintln!("error: {}: {e:#}", m.file);
                        failures.push(format!("{}: {e:#}", m.file));
                        row.push_str(&format!(" {} | FAILED: {e:#} |{}", setup.params.summary(), " — |".repeat(9)));
                        println!("{row}");
                        rows.push(row);
                        continue;
                    }
                };
                row.push_str(&format!(
                    " {}; {:.0} bits, 2^{:.1} | {}/{} equal, {}/{} correct | {:.2} s | {:.1} s | {:.4} s | {} | {:.2} | {:.1} s | {} | {} | {} |",
                    setup.params.summary(),
                    setup.security_bits,
                    setup.global_p_error.max(1e-300).log2(),
                    r.agree,
                    r.compared,
                    r.correct,
                    sample.len(),
                    r.encrypt_s,
                    r.evaluate_s,
                    r.decrypt_s,
                    r.bootstrap_ms(),
                    r.efficiency,
                    r.keygen_s,
                    size(r.eval_key_bytes),
                    size(r.upload),
                    size(r.download),
                ));
            }
        }
        println!("{row}");
        rows.push(row);
    }
    let calib = CompileOptions::default().calib_limit;
    let body = format!(
        "## Bundled models: accuracy, cost and encrypted runs\n\n\
Produced by `cargo bench-table models --data {} --images {images}{}`. One row per bundled model, \
compiled at its default options (the widths its metadata names, else input 8 / weights 7 / \
activations 7 / tables 11 bits; ranges calibrated on the first {calib} images of the bundled training sample). *Float* \
and *simulated*: top-1 accuracy of the float model and of the compiled integer circuit on \
{} test images per set (images outside the calibrated ranges count as errors). \
*Encrypted*: the first test images (at most {images}, fewer for models whose estimated \
server time per image on one core times the count would exceed {budget:.0} s) are encrypted \
by the client, classified by the server with the evaluation key only and decrypted (the byte API of `fhec_runtime::app`); \
*equal* counts decrypted outputs identical to the simulation's. Latencies are medians over \
those images, with both cores; *one bootstrap*: one keyswitch + bootstrap at the model's \
parameters on one thread (median of 20, measured in the same run; and the rounding bootstrap's \
when the parameters have a rounding key); *efficiency*: evaluate / (sum over the bootstraps of \
one of its kind / cores): 1.00 is every core bootstrapping one ciphertext at a time without \
idling; the runtime's batched blind rotations (up to 16 ciphertexts per pass over the bootstrap \
key) make a layer's bootstraps cheaper than one alone, hence values below 1. Machine: {cpu}; before the run: {load_before}; after: {}.\n\n\
| model | dataset | widths (in/w/act/table) | float | simulated | Δ points | bootstraps / image | widest table | parameters; security, failure / inference | encrypted sample | encrypt | evaluate | decrypt | one bootstrap | efficiency | keygen | evaluation key | upload / image | download / image |\n\
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n{}\n",
        data.display(),
        if budget != 2000.0 { format!(" --budget {budget}") } else { String::new() },
        limit.map_or("all".to_string(), |n| n.to_string()),
        machine_line(),
        rows.join("\n"),
    );
    save_section(out, "# fhec benchmarks", "models", &body)?;
    println!("wrote {}", out.display());
    if !failures.is_empty() {
        bail!("encrypted runs failed: {}", failures.join("; "));
    }
    Ok(())
}
