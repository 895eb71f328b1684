//! `fhec`: the command-line front of the compiler and runtime.
//!
//! Every failure prints `error: ...` naming the file and what is wrong, and exits with
//! status 2. The CLI is the only place that touches files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
#[cfg(feature = "fhe")]
use fhec_compiler::params::FheSetup;
use fhec_compiler::params::{ParamOptions, select};
use fhec_compiler::quantize::{QuantOptions, compile_circuit};
use fhec_compiler::report::build_report;
use fhec_compiler::{ImportOptions, import_onnx};
use fhec_ir::artifact::Artifact;
use fhec_ir::nn::{interp, print};
use fhec_ir::{Graph, Preprocess};
use fhec_runtime::dataset::{Dataset, DatasetKind, bundled_sample};
#[cfg(feature = "fhe")]
use fhec_runtime::fhe::{ClientKey, CtTensor, ServerKey, evaluate};
use fhec_runtime::sim;
use rayon::prelude::*;

/// fhec: compile grayscale-image CNNs (ONNX) into TFHE circuits and run them.
#[derive(Parser)]
#[command(name = "fhec", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct ImportArgs {
    /// Override the model's input shape, e.g. `1,1,28,28` (for symbolic image sizes).
    #[arg(long, value_delimiter = ',')]
    input_shape: Option<Vec<usize>>,
}

impl ImportArgs {
    fn options(&self) -> ImportOptions {
        ImportOptions { input_shape: self.input_shape.clone(), ..ImportOptions::default() }
    }
}

/// Options of the compilation of an ONNX model into a circuit.
#[derive(clap::Args, Clone)]
struct CompileArgs {
    #[command(flatten)]
    import: ImportArgs,
    /// Bits of the encrypted input values (8 keeps 8-bit pixels exact).
    #[arg(long, default_value_t = QuantOptions::default().input_bits)]
    input_bits: u32,
    /// Bits of the weights (signed, per output channel).
    #[arg(long, default_value_t = QuantOptions::default().weight_bits)]
    weight_bits: u32,
    /// Bits of the activations (table outputs).
    #[arg(long, default_value_t = QuantOptions::default().act_bits)]
    act_bits: u32,
    /// Widest table read; wider accumulators are rounded exactly first.
    #[arg(long, default_value_t = QuantOptions::default().max_table_bits)]
    max_table_bits: u32,
    /// Calibration images: a directory with an IDX test set, or a folder of PNG / PGM images
    /// of the model's input size. Default: the bundled sample (200 test images) of the
    /// calibration dataset.
    #[arg(long)]
    calib: Option<PathBuf>,
    /// Dataset of the calibration images. Default: the model's `fhec.dataset` metadata, else mnist.
    #[arg(long, value_parser = parse_dataset)]
    calib_dataset: Option<DatasetKind>,
    /// Use at most this many calibration images.
    #[arg(long, default_value_t = 200)]
    calib_limit: usize,
    /// Pixel scaling of the model's input (default: its `fhec.preprocess` metadata, else unit).
    #[arg(long)]
    preprocess: Option<Preprocess>,
    /// Failure probability allowed for one whole inference (all bootstraps together).
    #[arg(long, default_value_t = (-40.0f64).exp2())]
    global_p_error: f64,
    /// Failure probability of each bootstrap instead (overrides --global-p-error).
    #[arg(long)]
    p_error: Option<f64>,
}

impl CompileArgs {
    fn quant_options(&self) -> QuantOptions {
        QuantOptions {
            input_bits: self.input_bits,
            weight_bits: self.weight_bits,
            act_bits: self.act_bits,
            max_table_bits: self.max_table_bits,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Import an ONNX model and print its NN IR.
    Inspect {
        /// The ONNX model.
        model: PathBuf,
        /// Print a JSON summary (op counts, shapes, parameter count) instead.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        import: ImportArgs,
    },
    /// Compile an ONNX model into a circuit artifact and report its cost.
    Build {
        /// The ONNX model.
        model: PathBuf,
        /// Output artifact (default: the model's path with extension `.fhec`). An existing
        /// file is replaced only if it is an fhec artifact.
        #[arg(short, long)]
        out: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Also print the circuit IR.
        #[arg(long)]
        print_circuit: bool,
        #[command(flatten)]
        compile: CompileArgs,
    },
    /// Measure top-1 accuracy on an IDX test set.
    Eval {
        /// An ONNX model (compiled on the fly for `simulate`) or an artifact from `fhec build`.
        model: PathBuf,
        /// Which test set.
        #[arg(long, value_parser = parse_dataset)]
        dataset: DatasetKind,
        /// Directory holding the IDX files (directly or in `mnist/` / `fashion-mnist/`).
        #[arg(long)]
        data: PathBuf,
        /// How to execute the model.
        #[arg(long, value_enum, default_value = "float")]
        mode: Mode,
        /// Evaluate only the first N images.
        #[arg(long)]
        limit: Option<usize>,
        /// Write the predicted class of every image, one per line, to this file.
        #[arg(long)]
        predictions: Option<PathBuf>,
        #[command(flatten)]
        compile: CompileArgs,
    },
    /// Benchmarks that write result tables.
    #[command(subcommand)]
    Bench(Bench),
    #[cfg(feature = "fhe")]
    /// Generate a client key and an evaluation (server) key for an artifact.
    Keygen {
        /// The artifact (from `fhec build`).
        artifact: PathBuf,
        /// Directory to write `client.key` (secret: keep it) and `server.key` (send it).
        #[arg(long)]
        out: PathBuf,
        /// Replace existing key files.
        #[arg(long)]
        force: bool,
    },
    #[cfg(feature = "fhe")]
    /// Encrypt one image of an IDX test set with the client key.
    Encrypt {
        /// The artifact.
        artifact: PathBuf,
        /// The client key.
        #[arg(long)]
        client_key: PathBuf,
        /// Dataset of the image.
        #[arg(long, value_parser = parse_dataset)]
        dataset: DatasetKind,
        /// IDX directory (default: the bundled sample).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Index of the image in the set.
        #[arg(long, default_value_t = 0)]
        index: usize,
        /// Output file of the encrypted image.
        #[arg(short, long)]
        out: PathBuf,
    },
    #[cfg(feature = "fhe")]
    /// Classify an encrypted image with the evaluation key only (the server side).
    Run {
        /// The artifact.
        artifact: PathBuf,
        /// The evaluation key.
        #[arg(long)]
        server_key: PathBuf,
        /// The encrypted image.
        #[arg(long)]
        input: PathBuf,
        /// Output file of the encrypted result.
        #[arg(short, long)]
        out: PathBuf,
    },
    #[cfg(feature = "fhe")]
    /// Decrypt an encrypted result with the client key and print the class.
    Decrypt {
        /// The artifact.
        artifact: PathBuf,
        /// The client key.
        #[arg(long)]
        client_key: PathBuf,
        /// The encrypted result.
        #[arg(long)]
        input: PathBuf,
    },
    #[cfg(feature = "fhe")]
    /// The quick start: compile the bundled model, generate keys, classify sample images
    /// encrypted, and compare with the simulation.
    Demo {
        /// How many bundled sample images to classify.
        #[arg(long, default_value_t = 3)]
        images: usize,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// Float vs simulated accuracy of every bundled model on full test sets; writes the
    /// accuracy section of BENCHMARKS.md.
    Accuracy {
        /// Directory of the bundled models (with manifest.json).
        #[arg(long, default_value = "examples/models")]
        models: PathBuf,
        /// Directory with `mnist/` and `fashion-mnist/` IDX test sets (10k images each).
        #[arg(long)]
        data: PathBuf,
        /// Markdown file whose accuracy section is (re)written.
        #[arg(long, default_value = "BENCHMARKS.md")]
        out: PathBuf,
        /// Evaluate only the first N images of each set.
        #[arg(long)]
        limit: Option<usize>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// The float interpreter of the NN IR.
    Float,
    /// The exact integer simulation of the compiled circuit.
    Simulate,
    #[cfg(feature = "fhe")]
    /// Encrypted execution (keys generated for the run; compared with simulation).
    Fhe,
}

fn parse_dataset(s: &str) -> Result<DatasetKind, String> {
    s.parse()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Inspect { model, json, import } => {
            let g = load_model(&model, &import.options())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&fhec_compiler::summary::summarize(&g))?);
            } else {
                print!("{}", print::print(&g));
            }
            Ok(())
        }
        Command::Bench(Bench::Accuracy { models, data, out, limit }) => bench_accuracy(&models, &data, &out, limit),
        #[cfg(feature = "fhe")]
        Command::Keygen { artifact, out, force } => {
            let art = load_artifact(&artifact)?;
            let setup = fhe_of(&art, &artifact)?;
            std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
            let (cp, sp) = (out.join("client.key"), out.join("server.key"));
            for p in [&cp, &sp] {
                if p.exists() && !force {
                    bail!("{} exists; refusing to overwrite it (use --force)", p.display());
                }
            }
            let t = std::time::Instant::now();
            let ck = ClientKey::generate(&setup.params);
            let sk = ck.server_key();
            let (cb, sb) = (ck.to_bytes(), sk.to_bytes());
            write_new(&cp, &cb)?;
            write_new(&sp, &sb)?;
            println!(
                "keys generated in {:.1} s: {} ({:.1} MiB, secret), {} ({:.1} MiB, evaluation key)",
                t.elapsed().as_secs_f64(),
                cp.display(),
                cb.len() as f64 / 1048576.0,
                sp.display(),
                sb.len() as f64 / 1048576.0
            );
            Ok(())
        }
        #[cfg(feature = "fhe")]
        Command::Encrypt { artifact, client_key, dataset, data, index, out } => {
            let art = load_artifact(&artifact)?;
            let setup = fhe_of(&art, &artifact)?;
            let ck = ClientKey::from_bytes(&read(&client_key)?, &setup.params)
                .with_context(|| format!("cannot load {}", client_key.display()))?;
            let ds = match data {
                Some(d) => Dataset::load_test(&d, dataset)?,
                None => bundled_sample(dataset),
            };
            if index >= ds.len() {
                bail!("image index {index} is out of range: the set has {} images", ds.len());
            }
            let ct = ck.encrypt_image(&art.circuit, &setup.plan, ds.pixels(index))?;
            let b = ct.to_bytes(&setup.params);
            write_new(&out, &b)?;
            println!(
                "encrypted image {index} (label {}) to {} ({:.1} MiB)",
                ds.labels[index],
                out.display(),
                b.len() as f64 / 1048576.0
            );
            Ok(())
        }
        #[cfg(feature = "fhe")]
        Command::Run { artifact, server_key, input, out } => {
            let art = load_artifact(&artifact)?;
            let setup = fhe_of(&art, &artifact)?;
            let sk = ServerKey::from_bytes(&read(&server_key)?, &setup.params)
                .with_context(|| format!("cannot load {}", server_key.display()))?;
            let ct = CtTensor::from_bytes(&read(&input)?, &setup.params)
                .with_context(|| format!("cannot load {}", input.display()))?;
            let t = std::time::Instant::now();
            let res = evaluate(&sk, &art.circuit, &setup.plan, &ct)?;
            let b = res.to_bytes(&setup.params);
            write_new(&out, &b)?;
            println!(
                "evaluated in {:.2} s; wrote {} ({:.1} KiB)",
                t.elapsed().as_secs_f64(),
                out.display(),
                b.len() as f64 / 1024.0
            );
            Ok(())
        }
        #[cfg(feature = "fhe")]
        Command::Decrypt { artifact, client_key, input } => {
            let art = load_artifact(&artifact)?;
            let setup = fhe_of(&art, &artifact)?;
            let ck = ClientKey::from_bytes(&read(&client_key)?, &setup.params)
                .with_context(|| format!("cannot load {}", client_key.display()))?;
            let ct = CtTensor::from_bytes(&read(&input)?, &setup.params)
                .with_context(|| format!("cannot load {}", input.display()))?;
            let out_shape = &art.circuit.nodes[art.circuit.output].shape;
            if ct.shape != *out_shape {
                bail!(
                    "{} holds a tensor of shape {:?}, not this circuit's result {:?}",
                    input.display(),
                    ct.shape,
                    out_shape
                );
            }
            let scores = art.circuit.output_quant.scores(&ck.decrypt(&ct));
            let s: Vec<String> = scores.iter().map(|v| format!("{v:.3}")).collect();
            println!("scores: [{}]", s.join(", "));
            println!("class: {}", sim::argmax(&scores));
            Ok(())
        }
        #[cfg(feature = "fhe")]
        Command::Demo { images } => demo(images),
        Command::Build { model, out, json, print_circuit, compile } => {
            let (_, art) = compile_model(&model, &compile)?;
            let out = out.unwrap_or_else(|| model.with_extension("fhec"));
            let bytes = art.to_bytes();
            write_artifact(&out, &bytes)?;
            let report = build_report(&art.circuit, &art.options, art.fhe.as_ref());
            if json {
                let mut v = serde_json::to_value(&report)?;
                v["artifact"] = serde_json::json!({ "path": out.display().to_string(), "bytes": bytes.len() });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                if print_circuit {
                    print!("{}", fhec_ir::circuit::print::print(&art.circuit));
                }
                print!("{}", report.to_text());
                println!("wrote {} ({} bytes)", out.display(), bytes.len());
            }
            Ok(())
        }
        Command::Eval { model, dataset, data, mode, limit, predictions, compile } => {
            let mut ds = Dataset::load_test(&data, dataset)?;
            if let Some(n) = limit {
                ds.truncate(n);
            }
            if ds.is_empty() {
                bail!("no images to evaluate");
            }
            let bytes = read(&model)?;
            let preds: Vec<usize> = match mode {
                Mode::Float => {
                    if Artifact::sniff(&bytes) {
                        bail!("{} is a compiled artifact; float mode needs the ONNX model", model.display());
                    }
                    let g = import(&model, &bytes, &compile.import.options())?;
                    let pre = preprocess_of(&g, compile.preprocess)?;
                    let shape = image_input_shape(&g, &ds)?;
                    header(&model, g.len(), "nodes", dataset, &ds, pre, "float");
                    (0..ds.len())
                        .into_par_iter()
                        .map(|i| {
                            let out = interp::run(&g, &[ds.input(i, pre, &shape)])?;
                            Ok(sim::argmax(&out[0].iter().map(|&v| v as f64).collect::<Vec<_>>()))
                        })
                        .collect::<Result<_, interp::InterpError>>()?
                }
                #[cfg(feature = "fhe")]
                Mode::Fhe => {
                    let art = if Artifact::sniff(&bytes) {
                        Artifact::from_bytes(&bytes).with_context(|| format!("cannot load {}", model.display()))?
                    } else {
                        compile_model(&model, &compile)?.1
                    };
                    fhe_eval(&model, &art, &ds, dataset)?
                }
                Mode::Simulate => {
                    let art = if Artifact::sniff(&bytes) {
                        Artifact::from_bytes(&bytes).with_context(|| format!("cannot load {}", model.display()))?
                    } else {
                        compile_model(&model, &compile)?.1
                    };
                    let c = &art.circuit;
                    let n: usize = c.input_shape().iter().product();
                    if n != ds.rows * ds.cols {
                        bail!(
                            "the circuit's input has shape {:?} ({n} values), but the dataset's images are {}x{}",
                            c.input_shape(),
                            ds.rows,
                            ds.cols
                        );
                    }
                    let pre = c.metadata.get(Preprocess::METADATA_KEY).cloned().unwrap_or_default();
                    println!(
                        "model: {} ({} circuit nodes, {} bootstraps), dataset: {} ({} images), preprocess: {pre}, mode: simulate",
                        model.display(),
                        c.nodes.len(),
                        c.bootstrap_stats().total(),
                        dataset.dir_name(),
                        ds.len()
                    );
                    (0..ds.len())
                        .into_par_iter()
                        .map(|i| sim::classify(c, ds.pixels(i)).map(|(p, _)| p))
                        .collect::<Result<_, sim::SimError>>()?
                }
            };
            let correct = preds.iter().zip(&ds.labels).filter(|(p, l)| **p == **l as usize).count();
            if let Some(path) = predictions {
                let text: String = preds.iter().map(|p| format!("{p}\n")).collect();
                std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            }
            println!("accuracy: {:.4} ({correct}/{})", correct as f64 / ds.len() as f64, ds.len());
            Ok(())
        }
    }
}

/// Replaces the part of `doc` between `<!-- NAME:begin -->` and `<!-- NAME:end -->`
/// (appending the section if absent).
fn replace_section(doc: &str, name: &str, body: &str) -> String {
    let (b, e) = (format!("<!-- {name}:begin -->"), format!("<!-- {name}:end -->"));
    match (doc.find(&b), doc.find(&e)) {
        (Some(i), Some(j)) if j > i => format!("{}{b}\n{body}{}", &doc[..i], &doc[j..]),
        _ => format!("{}{}{b}\n{body}{e}\n", doc, if doc.is_empty() || doc.ends_with('\n') { "" } else { "\n" }),
    }
}

fn machine_line() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!(
        "{} cores, load average {} (1/5/15 min) at the start",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load.join(" ")
    )
}

fn bench_accuracy(models: &Path, data: &Path, out: &Path, limit: Option<usize>) -> Result<()> {
    use fhec_compiler::manifest::Manifest;
    let mpath = models.join("manifest.json");
    let text = std::fs::read_to_string(&mpath).with_context(|| format!("cannot read {}", mpath.display()))?;
    let manifest = Manifest::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", mpath.display()))?;
    let machine = machine_line();
    let mut rows = vec![];
    for m in &manifest.models {
        let path = models.join(&m.file);
        let kind: DatasetKind = m.dataset.parse().map_err(|e: String| anyhow::anyhow!("{e}"))?;
        let mut ds = Dataset::load_test(data, kind)?;
        if let Some(n) = limit {
            ds.truncate(n);
        }
        let args = CompileArgs {
            import: ImportArgs { input_shape: None },
            input_bits: QuantOptions::default().input_bits,
            weight_bits: QuantOptions::default().weight_bits,
            act_bits: QuantOptions::default().act_bits,
            max_table_bits: QuantOptions::default().max_table_bits,
            calib: None,
            calib_dataset: Some(kind),
            calib_limit: 200,
            preprocess: Some(m.preprocess),
            global_p_error: ParamOptions::default().global_p_error,
            p_error: None,
        };
        let t0 = std::time::Instant::now();
        let (g, art) = compile_model(&path, &args)?;
        let build_s = t0.elapsed().as_secs_f64();
        let shape = image_input_shape(&g, &ds)?;
        let float = (0..ds.len())
            .into_par_iter()
            .map(|i| {
                let out = interp::run(&g, &[ds.input(i, m.preprocess, &shape)])?;
                Ok((sim::argmax(&out[0].iter().map(|&v| v as f64).collect::<Vec<_>>()) == ds.labels[i] as usize)
                    as usize)
            })
            .collect::<Result<Vec<usize>, interp::InterpError>>()?
            .into_iter()
            .sum::<usize>();
        let c = &art.circuit;
        let simulated = (0..ds.len())
            .into_par_iter()
            .map(|i| sim::classify(c, ds.pixels(i)).map(|(p, _)| (p == ds.labels[i] as usize) as usize))
            .collect::<Result<Vec<usize>, sim::SimError>>()?
            .into_iter()
            .sum::<usize>();
        let st = c.bootstrap_stats();
        let n = ds.len() as f64;
        let row = format!(
            "| {} | {} | {} | {:.2}% | {:.2}% | {:+.2} | {} | {} | {} | {} | {:.1} KB | {:.1} s |",
            m.file,
            m.dataset,
            m.preprocess,
            100.0 * float as f64 / n,
            100.0 * simulated as f64 / n,
            100.0 * (simulated as f64 - float as f64) / n,
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
Produced by `fhec bench accuracy --data {}` ({} images per test set). Default compile \
options: input {} bits, weights {} bits, activations {} bits, tables read at most {} bits \
(wider accumulators are rounded exactly first); calibration on the bundled 200-image sample. \
Machine: {machine}.\n\n\
| model | dataset | preprocess | float | simulated | Δ points | table bootstraps | rounding bootstraps (1-bit) | widest table (bits) | widest value (bits) | artifact | build time |\n\
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n{}\n",
        data.display(),
        limit.map_or("all".to_string(), |n| n.to_string()),
        d.input_bits,
        d.weight_bits,
        d.act_bits,
        d.max_table_bits,
        rows.join("\n")
    );
    let doc = std::fs::read_to_string(out).unwrap_or_else(|_| "# fhec benchmarks\n\n".to_string());
    std::fs::write(out, replace_section(&doc, "accuracy", &body))
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}

#[cfg(feature = "fhe")]
fn load_artifact(path: &Path) -> Result<Artifact> {
    let bytes = read(path)?;
    Artifact::from_bytes(&bytes).with_context(|| format!("cannot load artifact {}", path.display()))
}

#[cfg(feature = "fhe")]
fn fhe_of<'a>(art: &'a Artifact, path: &Path) -> Result<&'a FheSetup> {
    art.fhe.as_ref().ok_or_else(|| {
        anyhow::anyhow!(
            "{} has no TFHE parameters ({}); rebuild with narrower widths (e.g. --max-table-bits 5)",
            path.display(),
            art.options.get("fhe").map_or("none chosen", |s| s.as_str())
        )
    })
}

/// Writes a file atomically (write then rename).
#[cfg(feature = "fhe")]
fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))
}

#[cfg(feature = "fhe")]
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

#[cfg(feature = "fhe")]
/// Encrypted evaluation: keys once, then per image encrypt / evaluate / decrypt, each result
/// compared with the simulation.
fn fhe_eval(model: &Path, art: &Artifact, ds: &Dataset, kind: DatasetKind) -> Result<Vec<usize>> {
    let setup = fhe_of(art, model)?;
    let c = &art.circuit;
    println!(
        "model: {} ({} bootstraps per image), dataset: {} ({} images), mode: fhe, parameters: n={} k={} N={}",
        model.display(),
        c.bootstrap_stats().total(),
        kind.dir_name(),
        ds.len(),
        setup.params.lwe_dimension,
        setup.params.glwe_dimension,
        setup.params.polynomial_size
    );
    let t = std::time::Instant::now();
    let ck = ClientKey::generate(&setup.params);
    let sk = ck.server_key();
    println!("keygen: {:.1} s", t.elapsed().as_secs_f64());
    let (mut te, mut tv, mut td) = (vec![], vec![], vec![]);
    let mut preds = vec![];
    let mut agree = 0;
    for i in 0..ds.len() {
        let t0 = std::time::Instant::now();
        let ct = ck.encrypt_image(c, &setup.plan, ds.pixels(i))?;
        let t1 = std::time::Instant::now();
        let out = evaluate(&sk, c, &setup.plan, &ct)?;
        let t2 = std::time::Instant::now();
        let v = ck.decrypt(&out);
        let scores = c.output_quant.scores(&v);
        let t3 = std::time::Instant::now();
        let want: Vec<i64> = sim::simulate(c, sim::encode_image(c, ds.pixels(i)))?.iter().copied().collect();
        agree += (v == want) as usize;
        let p = sim::argmax(&scores);
        te.push((t1 - t0).as_secs_f64());
        tv.push((t2 - t1).as_secs_f64());
        td.push((t3 - t2).as_secs_f64());
        println!(
            "image {i}: label {} class {p} ({}) evaluate {:.2} s",
            ds.labels[i],
            if v == want { "= simulation" } else { "DIFFERS from simulation" },
            tv[i]
        );
        preds.push(p);
    }
    println!(
        "agreement with simulation: {agree}/{}; median latency per image: encrypt {:.3} s, evaluate {:.2} s, decrypt {:.4} s",
        ds.len(),
        median(&mut te),
        median(&mut tv),
        median(&mut td)
    );
    println!(
        "security: {:.0} bits; failure probability per inference <= 2^{:.1}",
        setup.security_bits,
        setup.global_p_error.max(1e-300).log2()
    );
    Ok(preds)
}

#[cfg(feature = "fhe")]
/// Compile options of the quick start: narrow enough for fast bootstraps.
fn demo_args() -> CompileArgs {
    CompileArgs {
        import: ImportArgs { input_shape: None },
        input_bits: DEMO.0,
        weight_bits: DEMO.1,
        act_bits: DEMO.2,
        max_table_bits: DEMO.3,
        calib: None,
        calib_dataset: Some(DatasetKind::Mnist),
        calib_limit: 200,
        preprocess: None,
        global_p_error: ParamOptions::default().global_p_error,
        p_error: None,
    }
}

#[cfg(feature = "fhe")]
/// (input, weight, activation, max table) bits of the demo build.
const DEMO: (u32, u32, u32, u32) = (4, 4, 4, 5);
#[cfg(feature = "fhe")]
/// The demo model, compiled into the binary.
const DEMO_MODEL: &[u8] = include_bytes!("../../../examples/models/seed_mnist.onnx");

#[cfg(feature = "fhe")]
fn demo(images: usize) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("fhec-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let model = dir.join("seed_mnist.onnx");
    std::fs::write(&model, DEMO_MODEL)?;
    println!("== fhec demo: the TenSEAL tutorial network (seed_mnist), encrypted end to end ==");
    let (_, art) = compile_model(&model, &demo_args())?;
    let report = build_report(&art.circuit, &art.options, art.fhe.as_ref());
    print!("{}", report.to_text());
    let mut ds = bundled_sample(DatasetKind::Mnist);
    ds.truncate(images.max(1));
    let preds = fhe_eval(Path::new("seed_mnist.onnx (bundled)"), &art, &ds, DatasetKind::Mnist)?;
    let correct = preds.iter().zip(&ds.labels).filter(|(p, l)| **p == **l as usize).count();
    println!("accuracy: {:.4} ({correct}/{})", correct as f64 / ds.len() as f64, ds.len());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn header(model: &Path, n: usize, what: &str, dataset: DatasetKind, ds: &Dataset, pre: Preprocess, mode: &str) {
    println!(
        "model: {} ({n} {what}), dataset: {} ({} images), preprocess: {pre}, mode: {mode}",
        model.display(),
        dataset.dir_name(),
        ds.len()
    );
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read model {}", path.display()))
}

fn import(path: &Path, bytes: &[u8], options: &ImportOptions) -> Result<Graph> {
    import_onnx(bytes, options).with_context(|| format!("cannot import {}", path.display()))
}

fn load_model(path: &Path, options: &ImportOptions) -> Result<Graph> {
    import(path, &read(path)?, options)
}

fn preprocess_of(g: &Graph, flag: Option<Preprocess>) -> Result<Preprocess> {
    if let Some(p) = flag {
        return Ok(p);
    }
    match g.metadata.get(Preprocess::METADATA_KEY) {
        None => Ok(Preprocess::Unit),
        Some(v) => v.parse().map_err(|e: String| anyhow::anyhow!("model metadata {}: {e}", Preprocess::METADATA_KEY)),
    }
}

/// Imports, calibrates and quantizes a model.
fn compile_model(model: &Path, args: &CompileArgs) -> Result<(Graph, Artifact)> {
    let bytes = read(model)?;
    if Artifact::sniff(&bytes) {
        bail!("{} is already a compiled artifact", model.display());
    }
    let g = import(model, &bytes, &args.import.options())?;
    let pre = preprocess_of(&g, args.preprocess)?;
    let kind = match args.calib_dataset {
        Some(k) => k,
        None => match g.metadata.get("fhec.dataset") {
            Some(d) => d.parse().map_err(|e: String| anyhow::anyhow!("model metadata fhec.dataset: {e}"))?,
            None => DatasetKind::Mnist,
        },
    };
    let (mut calib, calib_name) = match &args.calib {
        Some(dir) => {
            // An IDX test set, or else a folder of PNG / PGM images of the model's input size.
            let ds = match Dataset::load_test(dir, kind) {
                Ok(ds) => ds,
                Err(fhec_runtime::dataset::DatasetError::NotFound { .. }) => {
                    let s = &g.node(g.inputs()[0]).shape;
                    let (rows, cols) = (s[s.len().saturating_sub(2)], s[s.len() - 1]);
                    fhec_runtime::dataset::load_image_dir(dir, rows, cols)?
                }
                Err(e) => return Err(e.into()),
            };
            (ds, dir.display().to_string())
        }
        None => (bundled_sample(kind), format!("bundled {} sample", kind.dir_name())),
    };
    calib.truncate(args.calib_limit.max(1));
    image_input_shape(&g, &calib)?;
    let images: Vec<&[u8]> = (0..calib.len()).map(|i| calib.pixels(i)).collect();
    let opts = args.quant_options();
    let circuit =
        compile_circuit(&g, pre, &images, &opts).with_context(|| format!("cannot compile {}", model.display()))?;
    let mut options = BTreeMap::new();
    options.insert("input_bits".into(), opts.input_bits.to_string());
    options.insert("weight_bits".into(), opts.weight_bits.to_string());
    options.insert("act_bits".into(), opts.act_bits.to_string());
    options.insert("max_table_bits".into(), opts.max_table_bits.to_string());
    options.insert("preprocess".into(), pre.to_string());
    options.insert("calibration".into(), format!("{} ({} images)", calib_name, calib.len()));
    let popts = ParamOptions { global_p_error: args.global_p_error, p_error: args.p_error };
    let fhe = match select(&circuit, &popts) {
        Ok(s) => Some(s),
        Err(e) => {
            options.insert("fhe".into(), format!("unavailable: {e}"));
            None
        }
    };
    let source = model.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    Ok((g, Artifact { fhec_version: env!("CARGO_PKG_VERSION").into(), source, options, circuit, fhe }))
}

/// Writes an artifact atomically, refusing to replace a file that is not an artifact.
fn write_artifact(path: &Path, bytes: &[u8]) -> Result<()> {
    if path.exists() {
        let head = std::fs::read(path).with_context(|| format!("cannot read existing {}", path.display()))?;
        if !Artifact::sniff(&head) {
            bail!(
                "{} exists and is not an fhec artifact; refusing to overwrite it (choose another -o)",
                path.display()
            );
        }
    }
    let tmp = path.with_extension(format!("fhec.tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

/// The model input shape, checked against the dataset's image size.
fn image_input_shape(g: &Graph, ds: &Dataset) -> Result<Vec<usize>> {
    let input = g.node(g.inputs()[0]);
    let n: usize = input.shape.iter().product();
    if n != ds.rows * ds.cols {
        bail!(
            "model input '{}' has shape {:?} ({n} values), but the dataset's images are {}x{} ({} values)",
            input.name,
            input.shape,
            ds.rows,
            ds.cols,
            ds.rows * ds.cols
        );
    }
    Ok(input.shape.clone())
}
