//! `fhec-bench speed`: encrypted latency, sizes and scheduling efficiency beside TenSEAL and Concrete ML in the same run.

use std::path::Path;

use anyhow::{Context, Result, bail};
use fhec_compiler::quantize::QuantOptions;
use fhec_driver::compile::{CompileOptions, compile_model};
use fhec_driver::encrypted::fhe_eval;
use fhec_driver::measure::{NOISE_DRAWS, measure_accuracy};
use fhec_driver::model::load_manifest;
use fhec_driver::progress::size;
use fhec_ir::preprocess::Preprocess;
use fhec_runtime::dataset::{Dataset, DatasetKind};

use crate::common::{cpu_model, machine_line, run_anchor, save_section};

/// What `cargo bench-table speed` measures and where it writes (see `Bench::Speed`).
pub struct SpeedRun<'a> {
    pub models: &'a Path,
    pub only: &'a [String],
    pub data: &'a Path,
    pub images: usize,
    /// Python for the TenSEAL anchor, or `none`.
    pub tenseal_python: &'a str,
    pub tenseal_models: &'a [String],
    /// Python for the Concrete ML anchor, or `none`.
    pub cml_python: &'a str,
    pub cml_models: &'a [String],
    pub cml_images: usize,
    pub out: &'a Path,
}

/// One `--only` entry of `cargo bench-table speed`: a bundled file and the compile flags it is
/// built with (`seedq_mnist.onnx:max-table-bits=6:rounding=approximate`).
pub struct ModelSpec {
    file: String,
    /// `(flag, value)` in the order given.
    flags: Vec<(String, String)>,
}

impl ModelSpec {
    const FLAGS: [&'static str; 8] = [
        "input-bits",
        "weight-bits",
        "act-bits",
        "max-table-bits",
        "rounding",
        "score-bits",
        "range-margin",
        "accuracy-budget",
    ];

    pub fn parse(s: &str) -> Result<ModelSpec> {
        let mut parts = s.split(':');
        let file = parts.next().unwrap_or_default().trim().to_string();
        if file.is_empty() {
            bail!("'{s}': no model file before the flags");
        }
        let flags = parts
            .map(|kv| {
                let (k, v) = kv
                    .split_once('=')
                    .with_context(|| format!("'{s}': '{kv}' is not flag=value (e.g. max-table-bits=6)"))?;
                if !Self::FLAGS.contains(&k) {
                    bail!("'{s}': unknown flag '{k}' (known: {})", Self::FLAGS.join(", "));
                }
                Ok((k.to_string(), v.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        let spec = ModelSpec { file, flags };
        // Malformed or out-of-range values fail now, not after the anchors' minutes.
        let mut args = CompileOptions::default();
        spec.apply(&mut args).with_context(|| format!("'{s}'"))?;
        args.quant_options_over(QuantOptions::default()).validate().with_context(|| format!("'{s}'"))?;
        Ok(spec)
    }

    /// The model file (relative to the models directory).
    pub fn file(&self) -> &str {
        &self.file
    }

    /// A short name for pictures: the file's stem and its flags' values.
    pub fn short_label(&self) -> String {
        let stem = Path::new(&self.file).file_stem().map_or(self.file.clone(), |s| s.to_string_lossy().into_owned());
        let flags: Vec<String> = self
            .flags
            .iter()
            .filter_map(|(k, v)| match k.as_str() {
                "rounding" => Some(v.chars().take(6).collect()),
                "max-table-bits" => Some(format!("t{v}")),
                "accuracy-budget" => None,
                _ => Some(format!("{k}={v}")),
            })
            .collect();
        if flags.is_empty() { stem } else { format!("{stem} {}", flags.join(" ")) }
    }

    /// The file, and its flags as `fhec` options when it has some.
    pub fn label(&self) -> String {
        if self.flags.is_empty() {
            return self.file.clone();
        }
        let flags: Vec<String> = self.flags.iter().map(|(k, v)| format!("--{k} {v}")).collect();
        format!("{} ({})", self.file, flags.join(" "))
    }

    /// How a benchmark compiles this spec's model: the bundled calibration sample of its
    /// dataset, its preprocessing, the widths its metadata names (`--no-fit`), then the flags.
    pub fn options(&self, kind: DatasetKind, preprocess: Preprocess) -> Result<CompileOptions> {
        let mut args = CompileOptions {
            calib_dataset: Some(kind),
            preprocess: Some(preprocess),
            no_fit: true,
            ..CompileOptions::default()
        };
        self.apply(&mut args)?;
        Ok(args)
    }

    pub fn apply(&self, args: &mut CompileOptions) -> Result<()> {
        for (k, v) in &self.flags {
            if k == "rounding" {
                args.rounding = Some(v.parse()?);
                continue;
            }
            if k == "score-bits" {
                args.score_bits = Some(if v == "all" {
                    0
                } else {
                    v.parse().with_context(|| format!("'{v}' is not `all` or a number of bits"))?
                });
                continue;
            }
            if k == "accuracy-budget" {
                // The fit, as `fhec build` runs it, within this budget (points of accuracy).
                args.no_fit = false;
                args.accuracy_budget = v.parse().with_context(|| format!("'{v}' is not a number of points"))?;
                continue;
            }
            if k == "range-margin" {
                args.range_margin = Some(v.parse().with_context(|| format!("'{v}' is not a percentage"))?);
                continue;
            }
            let slot = match k.as_str() {
                "input-bits" => &mut args.input_bits,
                "weight-bits" => &mut args.weight_bits,
                "act-bits" => &mut args.act_bits,
                _ => &mut args.max_table_bits,
            };
            *slot = Some(v.parse().with_context(|| format!("'{v}' is not a number of bits"))?);
        }
        Ok(())
    }
}

/// An anchor's evaluate time per image (wall, median) on one model, for the ratio columns.
pub struct AnchorTime {
    model: String,
    evaluate_s: f64,
}

pub fn ratio_to(anchors: &[AnchorTime], model: &str, evaluate_s: f64) -> String {
    anchors
        .iter()
        .find(|a| a.model == model)
        .map_or_else(|| "—".into(), |a| format!("{:.2}", evaluate_s / a.evaluate_s))
}

/// The speed table (see `Bench::Speed`).
pub fn bench_speed(run: &SpeedRun) -> Result<()> {
    let (models, data, images) = (run.models, run.data, run.images);
    if images == 0 {
        bail!("--images must be at least 1 (latencies are medians over the images)");
    }
    if run.cml_images == 0 {
        bail!("--concrete-ml-images must be at least 1 (latencies are medians over the images)");
    }
    let manifest = load_manifest(models)?;
    let entry = |file: &String| {
        manifest
            .models
            .iter()
            .find(|m| &m.file == file)
            .with_context(|| format!("{file} is not in {}", models.join("manifest.json").display()))
    };
    let specs = run.only.iter().map(|s| ModelSpec::parse(s)).collect::<Result<Vec<_>>>()?;
    let entries = specs.iter().map(|s| entry(&s.file)).collect::<Result<Vec<_>>>()?;
    let cml_entries =
        if run.cml_python == "none" { vec![] } else { run.cml_models.iter().map(entry).collect::<Result<Vec<_>>>()? };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (cpu, load_before) = (cpu_model(), machine_line());
    let mut rows = vec![];
    let (mut tenseal, mut cml) = (vec![], vec![]);
    // The anchors first: the seed networks' weights, the same first test images.
    let tenseal_files = if run.tenseal_python == "none" { &[][..] } else { run.tenseal_models };
    for file in tenseal_files {
        let seed = models.join(file);
        println!("== TenSEAL anchor: seed network ({}), {images} images ==", seed.display());
        let threads = cores.to_string();
        let on = (seed.as_path(), data, "mnist", images);
        let v = run_anchor(
            run.tenseal_python,
            "tenseal_seed.py",
            on,
            &["--threads", &threads],
            "benches/anchors/setup.sh",
        )?;
        let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        let n = v["images"].as_u64().unwrap_or(0);
        tenseal.push(AnchorTime { model: file.clone(), evaluate_s: f("median_evaluate_s") });
        let row = format!(
            "| TenSEAL {} (CKKS N=8192, scale 2^26, {} threads) | {file} (same weights) | {n} | — (approximate: CKKS results drift) | {}/{n} correct, {}/{n} = float argmax, max drift {:.1}% of the largest score | — | CKKS, ~128 bits (SEAL default), approximate | {:.3} s | {:.2} s | {:.2} s | {:.4} s | — | — | {:.1} s | {} | {} | {} | 1.00 | — |",
            v["tenseal_version"].as_str().unwrap_or("?"),
            v["threads"],
            v["correct"],
            v["agree_with_float"],
            100.0 * f("max_rel_drift"),
            f("median_encrypt_s"),
            f("median_evaluate_s"),
            f("median_evaluate_cpu_s"),
            f("median_decrypt_s"),
            f("keygen_s"),
            size(v["context_bytes"].as_u64().unwrap_or(0) as usize),
            size(v["upload_bytes"].as_u64().unwrap_or(0) as usize),
            size(v["download_bytes"].as_u64().unwrap_or(0) as usize),
        );
        println!("{row}");
        rows.push(row);
    }
    for m in &cml_entries {
        let path = models.join(&m.file);
        let n = run.cml_images;
        println!("== Concrete ML anchor: {} ({}), {n} images ==", m.file, m.dataset);
        let on = (path.as_path(), data, m.dataset.as_str(), n);
        let v = run_anchor(run.cml_python, "concrete_ml.py", on, &[], "benches/anchors/setup.sh --concrete-ml")?;
        let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        let evaluate_s = f("median_evaluate_s");
        cml.push(AnchorTime { model: m.file.clone(), evaluate_s });
        let row = format!(
            "| Concrete ML {} (TFHE, n_bits {}, rounding {} bits, {cores} threads) | {} (same file) | {n} | {:.2}% (clear-quantized, what its FHE computes) | {}/{n} correct, {}/{n} equal to its clear-quantized run | {} (widest {} bits) | Concrete's optimizer, 128 bits, failure 2^{:.1} / inference | {:.3} s | {:.2} s | {:.2} s | {:.4} s | — | — | {:.1} s | {} | {} | {} | {} | 1.00 |",
            v["concrete_ml_version"].as_str().unwrap_or("?"),
            v["n_bits"],
            v["rounding_threshold_bits"],
            m.file,
            100.0 * f("clear_accuracy"),
            v["correct"],
            v["equal_to_clear"],
            v["bootstraps"],
            v["widest_integer_bits"],
            f("global_p_error").max(1e-300).log2(),
            f("median_encrypt_s"),
            evaluate_s,
            f("median_evaluate_cpu_s"),
            f("median_decrypt_s"),
            f("keygen_s"),
            size(v["eval_key_bytes"].as_u64().unwrap_or(0) as usize),
            size(v["upload_bytes"].as_u64().unwrap_or(0) as usize),
            size(v["download_bytes"].as_u64().unwrap_or(0) as usize),
            ratio_to(&tenseal, &m.file, evaluate_s),
        );
        println!("{row}");
        rows.push(row);
    }
    for (spec, m) in specs.iter().zip(entries) {
        let path = models.join(&m.file);
        let kind: DatasetKind = m.dataset.parse()?;
        let full = Dataset::load_test(data, kind)?;
        let mut ds = full.clone();
        ds.truncate(images);
        println!("== {} ==", spec.label());
        let (g, art) = compile_model(&path, &spec.options(kind, m.preprocess)?)?;
        let setup = art.fhe.as_ref().with_context(|| format!("{}: no 128-bit parameters fit", m.file))?;
        let acc = measure_accuracy(&g, &art, &full, m.preprocess)?;
        let st = art.circuit.bootstrap_stats();
        let widths: Vec<String> = st.by_width.iter().map(|(w, k)| format!("{k} x {w}-bit")).collect();
        let r = fhe_eval(&path, &art, &ds, kind)?;
        let approx = art.circuit.is_approximate();
        let row = format!(
            "| fhec (TFHE, {cores} threads) | {} | {} | {:.2}% (compiled circuit, {}; float {:.2}%) | {}/{} correct, {}/{} {} | {} ({} + {} rounding) | {}; {:.0} bits, failure 2^{:.1} / inference{} | {:.3} s | {:.2} s | {:.2} s | {:.4} s | {} | {:.2} | {:.1} s | {} | {} | {} | {} | {} |",
            spec.label(),
            ds.len(),
            100.0 * acc.simulated / full.len() as f64,
            match acc.spread(full.len() as f64) {
                Some(spread) => format!("approximate rounding's read noise sampled, {spread}"),
                None => "what its FHE computes".to_string(),
            },
            100.0 * acc.float as f64 / full.len() as f64,
            r.correct,
            ds.len(),
            r.agree,
            r.compared,
            if approx { "same class as the noise-free simulation" } else { "equal to the simulation" },
            st.total(),
            widths.join(", "),
            st.rounding,
            setup.params.summary(),
            setup.security_bits,
            setup.global_p_error.max(1e-300).log2(),
            if approx {
                format!("; {:.1}% of rounded reads one step off", 100.0 * setup.approx_step_rate(&art.circuit))
            } else {
                String::new()
            },
            r.encrypt_s,
            r.evaluate_s,
            r.evaluate_cpu_s,
            r.decrypt_s,
            r.bootstrap_ms(),
            r.efficiency,
            r.keygen_s,
            size(r.eval_key_bytes),
            size(r.upload),
            size(r.download),
            ratio_to(&tenseal, &m.file, r.evaluate_s),
            ratio_to(&cml, &m.file, r.evaluate_s),
        );
        println!("{row}");
        rows.push(row);
    }
    let cml_note = if cml_entries.is_empty() {
        "Concrete ML was not run (`--concrete-ml-python none`).".to_string()
    } else {
        format!(
            "The Concrete ML anchor (`benches/anchors/concrete_ml.py`, set up by `benches/anchors/setup.sh \
--concrete-ml`) compiles the same ONNX files with Concrete ML's `compile_onnx_model` (a QAT \
file's QuantizeLinear/DequantizeLinear pairs written as the same float Div/Round/Clip/Mul, which \
Concrete ML reads; 6-bit quantization, accumulators rounded to 6 bits, its default error probability; calibrated on 1000 \
training images) and runs its documented client/server deployment (`FHEModelClient` keys and \
encryption, `FHEModelServer.run` with the evaluation keys only) on the first {} images. \
Its *evaluation key* is the serialized (compressed) evaluation keys.",
            run.cml_images
        )
    };
    let body = format!(
        "## Speed: encrypted inference beside TenSEAL and Concrete ML, one run\n\n\
Produced by `cargo bench-table speed --data {} --images {images}` (models: {}; a file followed by \
flags, such as `seedq_mnist.onnx (--max-table-bits 6)`, is that file compiled with those widths \
instead of the ones its metadata names). Each system encrypts \
the first MNIST test images on the client, evaluates them on the server with the \
public evaluation key only (both cores), and decrypts; latencies are medians over the images \
(wall clock; *evaluate CPU*: CPU time of the server process, all threads). *Test-set accuracy*: \
top-1 on all 10,000 test images of the integer computation each TFHE system's encrypted run \
reproduces exactly (fhec: the compiled circuit's simulation; Concrete ML: its clear-quantized \
execution); for a `--rounding approximate` row, the simulation with the one-step-off reads sampled \
from its parameters' noise, the mean of {NOISE_DRAWS} independent draws per image (each seeded by the \
image and the draw number; the range over the draws follows), and *accuracy on the images* \
compares classes with the noise-free simulation. The TenSEAL \
anchor (`benches/anchors/tenseal_seed.py`, set up by `benches/anchors/setup.sh`) is an \
independent re-implementation of TenSEAL Tutorial 4's encrypted evaluation of the seed \
network, loaded with the weights of each seed-network file it names, so the systems evaluate \
the same network on the same images (for the quantization-aware `seedq_mnist.onnx`, CKKS \
computes its float layers and squares without the clipping and rounding of its activations); \
its *evaluation key* is the public CKKS context (Galois and \
relinearization keys). {cml_note} *One bootstrap*: one keyswitch + bootstrap at fhec's parameters \
on one thread (median of 20; and the rounding bootstrap's when the parameters have a rounding \
key); *efficiency*: evaluate / (sum over the bootstraps of one of its kind / cores), below 1 \
because the runtime batches a layer's blind rotations (up to 16 per pass over the bootstrap key). *vs TenSEAL*, *vs Concrete ML*: evaluate time over the anchor's on the same network \
(below 1 is faster). Machine: {cpu}; before the run: {load_before}; after: {}.\n\n\
| system | model | images | test-set accuracy | accuracy on the images | bootstraps / image | parameters | encrypt | evaluate | evaluate CPU | decrypt | one bootstrap | efficiency | keygen | evaluation key | upload / image | download / image | vs TenSEAL | vs Concrete ML |\n\
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n{}\n",
        data.display(),
        run.only.join(","),
        machine_line(),
        rows.join("\n"),
    );
    save_section(run.out, "# fhec benchmarks", "speed", &body)?;
    println!("wrote {}", run.out.display());
    Ok(())
}
