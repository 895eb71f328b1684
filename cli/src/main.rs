//! `fhec`: the command-line front of the compiler and runtime.
//!
//! Every failure prints `error: ...` naming the file and what is wrong, and exits with
//! status 2. The CLI is the only place that touches files.

#[cfg(feature = "fhe")]
mod bench_fit;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use fhec_compiler::BuildOptions;
use fhec_compiler::build::{PassOptions, build_fitted, build_graph_with};
use fhec_compiler::fit::{FitData, FitError, FitOptions, FitReport, Fixed, Objective};
use fhec_compiler::params::ParamOptions;
use fhec_compiler::passes::{ActivationPolicy, Pipeline};
use fhec_compiler::quantize::{QuantOptions, RangeMode, Rounding};
use fhec_compiler::report::build_report;
use fhec_compiler::{ImportOptions, import_onnx};
use fhec_ir::artifact::Artifact;
use fhec_ir::nn::{interp, print};
use fhec_ir::{Graph, Preprocess};
#[cfg(feature = "fhe")]
use fhec_runtime::app::{Client, Server};
use fhec_runtime::dataset::{Dataset, DatasetKind, bundled_sample, bundled_train_sample};
use fhec_runtime::sim;
use rayon::prelude::*;
#[cfg(feature = "fhe")]
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

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
    /// The output holding the class scores, for a model with several outputs.
    #[arg(long)]
    output: Option<String>,
}

impl ImportArgs {
    fn options(&self) -> ImportOptions {
        ImportOptions { input_shape: self.input_shape.clone(), output: self.output.clone(), ..ImportOptions::default() }
    }
}

/// Options of the compilation of an ONNX model into a circuit.
#[derive(clap::Args, Clone)]
struct CompileArgs {
    #[command(flatten)]
    import: ImportArgs,
    /// Bits of the encrypted input values (8 keeps 8-bit pixels exact). By default the
    /// automatic fit chooses every width (per layer) that neither a flag nor the model's
    /// `fhec.compile.*` metadata names; a width given either way is kept. (With --no-fit:
    /// the metadata, else 8 / 7 / 7 / 11 for these four widths.)
    #[arg(long)]
    input_bits: Option<u32>,
    /// Bits of the weights (signed, per output channel), for every layer.
    #[arg(long)]
    weight_bits: Option<u32>,
    /// Bits of the activations (table outputs), for every table.
    #[arg(long)]
    act_bits: Option<u32>,
    /// Widest table read; wider accumulators are rounded first.
    #[arg(long)]
    max_table_bits: Option<u32>,
    /// What bounds the values a table reads: `calibrated` (what the calibration images
    /// produce, plus --range-margin; images outside are reported by the simulator) or
    /// `exact` (the worst case over all images; much coarser tables).
    #[arg(long, default_value_t = QuantOptions::default().ranges)]
    ranges: RangeMode,
    /// Margin around calibrated ranges, in percent of their span (default 10; the fit may
    /// choose another).
    #[arg(long)]
    range_margin: Option<u32>,
    /// How accumulators wider than --max-table-bits are rounded before their table: `exact`
    /// (rounding bootstraps; encrypted equals simulated bit for bit) or `approximate` (the
    /// table reads the top bits directly, no rounding bootstraps; a read near a step
    /// boundary may be one step off, which `--mode simulate` samples). Default: the fit's
    /// choice (with --no-fit: exact).
    #[arg(long)]
    rounding: Option<Rounding>,
    /// Calibration (and validation) images of the model's input size: an IDX images file or
    /// a directory with an IDX set, a folder of PNG / PGM images, or a NumPy `.npy` array.
    /// The first --calib-limit images calibrate, the next --validation-limit validate the
    /// fit. Default: the bundled training sample of the model's dataset (--calib-dataset).
    #[arg(long)]
    calib: Option<PathBuf>,
    /// Which bundled sample calibrates a model without --calib (1,500 training images:
    /// 500 calibrate, 1,000 validate). Default: the model's `fhec.dataset` metadata or its
    /// entry in a `manifest.json` beside it; a model that says neither needs this flag or
    /// --calib.
    #[arg(long, value_parser = parse_dataset)]
    calib_dataset: Option<DatasetKind>,
    /// Use at most this many calibration images.
    #[arg(long, default_value_t = 500, value_parser = at_least_one)]
    calib_limit: usize,
    /// Validation images for the fit (same forms as --calib). Default: the images of
    /// --calib (or of the bundled sample) after the calibration ones.
    #[arg(long)]
    validation: Option<PathBuf>,
    /// The label of each output index, for a model trained on some classes only (say
    /// `0,1` for a digit-0-or-1 classifier): calibration, validation and accuracy keep the
    /// images of those classes. Default: the model's entry in a `manifest.json` beside it.
    #[arg(long, value_delimiter = ',')]
    classes: Option<Vec<u8>>,
    /// Use at most this many validation images.
    #[arg(long, default_value_t = 1000, value_parser = at_least_one)]
    validation_limit: usize,
    /// Largest loss of top-1 validation accuracy against the float model that the fit
    /// accepts, in points.
    #[arg(long, default_value_t = 0.5)]
    accuracy_budget: f64,
    /// Largest estimated server time per image (seconds on one core) that the fit accepts.
    #[arg(long)]
    max_server_time: Option<f64>,
    /// What the fit minimises: `time` (within the accuracy budget) or `accuracy` (within
    /// --max-server-time).
    #[arg(long, default_value_t = Objective::Time)]
    objective: Objective,
    /// Seed of the fit's read-noise draws (the search is deterministic for a seed).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Compile exactly the given widths (else the model's metadata, else the defaults),
    /// without the automatic fit.
    #[arg(long)]
    no_fit: bool,
    /// When no width choice gets 128-bit parameters, build a simulation-only artifact
    /// (the default widths, no keys can be made for it) instead of failing.
    #[arg(long)]
    allow_simulation_only: bool,
    /// Pixel scaling of the model's input (default: its `fhec.preprocess` metadata, else its
    /// entry in a `manifest.json` beside the model file, else unit).
    #[arg(long)]
    preprocess: Option<Preprocess>,
    /// Failure probability allowed for one whole inference (all bootstraps together).
    #[arg(long, default_value_t = (-40.0f64).exp2())]
    global_p_error: f64,
    /// Failure probability of each bootstrap instead (overrides --global-p-error).
    #[arg(long)]
    p_error: Option<f64>,
    /// Optimisation passes run before quantization, in order, comma-separated (`none`: the
    /// graph as imported). Passes: declutter (every rule group in one e-graph),
    /// canonical-activations, fuse-requant, fold-affine, merge-linear, sum-pooling, max-pool-order,
    /// argmax-tail, activations. Default: activations,declutter.
    #[arg(long)]
    passes: Option<String>,
    /// Activations: `table` (exact tables), `poly` (least-squares polynomials of
    /// --poly-degree on each activation's calibrated range), `auto` (the cost model's
    /// choice: an activation that is linear on its range becomes free, others stay tables).
    #[arg(long, default_value_t = ActivationPolicy::default())]
    activations: ActivationPolicy,
    /// Degree of the polynomials of `--activations poly`.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=8))]
    poly_degree: u32,
}

impl CompileArgs {
    /// What the command line gives without flags.
    fn defaults() -> CompileArgs {
        CompileArgs {
            import: ImportArgs { input_shape: None, output: None },
            input_bits: None,
            weight_bits: None,
            act_bits: None,
            max_table_bits: None,
            ranges: QuantOptions::default().ranges,
            range_margin: None,
            rounding: None,
            calib: None,
            calib_dataset: None,
            calib_limit: 500,
            validation: None,
            classes: None,
            validation_limit: 1000,
            accuracy_budget: 0.5,
            max_server_time: None,
            objective: Objective::Time,
            seed: 0,
            no_fit: false,
            allow_simulation_only: false,
            preprocess: None,
            global_p_error: ParamOptions::default().global_p_error,
            p_error: None,
            passes: None,
            activations: ActivationPolicy::default(),
            poly_degree: 2,
        }
    }

    /// The pass pipeline and its options.
    fn pass_options(&self) -> Result<PassOptions> {
        let pipeline = match &self.passes {
            None => PassOptions::default().pipeline,
            Some(spec) => Pipeline::parse(spec)?.names().iter().map(|s| s.to_string()).collect(),
        };
        Ok(PassOptions { pipeline, activations: self.activations, poly_degree: self.poly_degree as usize })
    }

    /// The widths: flags first, then the model's `fhec.compile.*` metadata (a model trained
    /// for given widths says so), then the defaults.
    fn quant_options(&self, g: &Graph) -> Result<QuantOptions> {
        Ok(self.quant_options_over(QuantOptions::for_model(g)?))
    }

    /// The flags over the widths of `m`.
    fn quant_options_over(&self, m: QuantOptions) -> QuantOptions {
        QuantOptions {
            input_bits: self.input_bits.unwrap_or(m.input_bits),
            weight_bits: self.weight_bits.unwrap_or(m.weight_bits),
            act_bits: self.act_bits.unwrap_or(m.act_bits),
            max_table_bits: self.max_table_bits.unwrap_or(m.max_table_bits),
            ranges: self.ranges,
            range_margin_pct: self.range_margin.unwrap_or(m.range_margin_pct),
            rounding: self.rounding.unwrap_or(m.rounding),
            ..m
        }
    }

    /// What the fit keeps: every width a flag or the model's metadata gives.
    fn fit_options(&self, g: &Graph) -> FitOptions {
        let meta = |k: &str| g.metadata.contains_key(&format!("fhec.compile.{k}"));
        FitOptions {
            accuracy_budget: self.accuracy_budget,
            max_server_time: self.max_server_time,
            objective: self.objective,
            seed: self.seed,
            fixed: Fixed {
                input_bits: self.input_bits.is_some() || meta("input_bits"),
                weight_bits: self.weight_bits.is_some() || meta("weight_bits"),
                act_bits: self.act_bits.is_some() || meta("act_bits"),
                table_bits: self.max_table_bits.is_some() || meta("max_table_bits"),
                rounding: self.rounding.is_some(),
                range_margin: self.range_margin.is_some(),
            },
            ..FitOptions::default()
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
        /// Print the NN IR as imported and after every pass (with what each pass did).
        #[arg(long)]
        print_ir_after_all: bool,
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
    /// Encrypt an image (a PNG / PGM file, or one image of a test set) with the client key.
    Encrypt {
        /// The artifact.
        artifact: PathBuf,
        /// The client key.
        #[arg(long)]
        client_key: PathBuf,
        /// A grayscale PNG or binary PGM image of the model's input size.
        #[arg(long, conflicts_with = "dataset")]
        image: Option<PathBuf>,
        /// Or a test set to take the image from.
        #[arg(long, value_parser = parse_dataset)]
        dataset: Option<DatasetKind>,
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
    /// The quick start: compile the bundled seed network (`seedq_mnist`, 6-bit tables),
    /// generate keys, classify sample images encrypted, and compare with the simulation.
    Demo {
        /// How many bundled sample images to classify.
        #[arg(long, default_value_t = 2)]
        images: usize,
        /// How accumulators are rounded before their table: `approximate` (320 bootstraps,
        /// about 10 s per image; a read near a step boundary may be one step off, so only the
        /// class is compared with the simulation) or `exact` (1,344 bootstraps, about 35 s
        /// per image; outputs equal the simulation bit for bit).
        #[arg(long, default_value_t = Rounding::Approximate)]
        rounding: Rounding,
    },
}

#[derive(Subcommand)]
enum Bench {
    #[cfg(feature = "fhe")]
    /// Models nobody trained for fhec (the plain bundled ones and the external exports),
    /// each compiled with no flags by the automatic fit: chosen widths per layer, float and
    /// simulated accuracy on the full test sets, encrypted runs compared with the simulation,
    /// beside Concrete ML 1.9 on the same file in the same run; writes the fit section of
    /// BENCHMARKS.md.
    Fit {
        /// Directory of the bundled models (with manifest.json).
        #[arg(long, default_value = "examples/models")]
        models: PathBuf,
        /// Directory of the external exports (with manifest.json).
        #[arg(long, default_value = "examples/models/external")]
        external: PathBuf,
        /// Only these model files (comma-separated).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Directory with `mnist/` and `fashion-mnist/` IDX test sets (10k images each).
        #[arg(long)]
        data: PathBuf,
        /// Encrypted images per model: the first N test images (latency is the median).
        #[arg(long, default_value_t = 2)]
        images: usize,
        /// Python with Concrete ML 1.9 (`benches/anchors/setup.sh --concrete-ml`); `none` skips it.
        #[arg(long, default_value = "benches/anchors/.venv-cml/bin/python")]
        concrete_ml_python: String,
        /// Encrypted images per model for Concrete ML.
        #[arg(long, default_value_t = 1)]
        concrete_ml_images: usize,
        /// Longest encrypted run of Concrete ML per image, in seconds (beyond it, its own
        /// estimate is reported).
        #[arg(long, default_value_t = 900.0)]
        concrete_ml_max_fhe_seconds: f64,
        /// Markdown file whose fit section is (re)written.
        #[arg(long, default_value = "BENCHMARKS.md")]
        out: PathBuf,
        /// Measure accuracy on only the first N test images.
        #[arg(long)]
        limit: Option<usize>,
    },
    #[cfg(feature = "fhe")]
    /// One row per bundled model: float and simulated accuracy on full test sets, an
    /// encrypted sample compared with the simulation, bootstraps, parameters, latency, key
    /// and ciphertext sizes; writes the models section of BENCHMARKS.md.
    Models {
        /// Directory of the bundled models (with manifest.json).
        #[arg(long, default_value = "examples/models")]
        models: PathBuf,
        /// Directory with `mnist/` and `fashion-mnist/` IDX test sets (10k images each).
        #[arg(long)]
        data: PathBuf,
        /// Encrypted images per model, at most: the first N test images (latency is the median).
        #[arg(long, default_value_t = 3)]
        images: usize,
        /// Estimated server time (one core, seconds) allowed per model: a model whose estimate
        /// per image is `e` runs `min(images, budget / e)` images, none if that is below one
        /// (the row then says so, with the estimate).
        #[arg(long, default_value_t = 2000.0)]
        budget: f64,
        /// Markdown file whose models section is (re)written.
        #[arg(long, default_value = "BENCHMARKS.md")]
        out: PathBuf,
        /// Measure accuracy on only the first N images of each set.
        #[arg(long)]
        limit: Option<usize>,
    },
    #[cfg(feature = "fhe")]
    /// Encrypted latency, sizes and scheduling efficiency of chosen bundled models, beside the
    /// TenSEAL (CKKS) evaluation of the seed network with the same weights and images,
    /// measured in the same run; writes the speed section of BENCHMARKS.md.
    Speed {
        /// Directory of the bundled models (with manifest.json).
        #[arg(long, default_value = "examples/models")]
        models: PathBuf,
        /// The bundled models to run encrypted, each optionally followed by compile flags that
        /// override its defaults, `:`-separated: `seedq_mnist.onnx:max-table-bits=6` (flags:
        /// input-bits, weight-bits, act-bits, max-table-bits, rounding). The anchors' ratios
        /// use the file.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "fhe_mnist.onnx,seed_mnist.onnx,seed_mnist.onnx:rounding=approximate,seedq_mnist.onnx,seedq_mnist.onnx:max-table-bits=6,seedq_mnist.onnx:max-table-bits=6:rounding=approximate"
        )]
        only: Vec<String>,
        /// Directory with `mnist/` and `fashion-mnist/` IDX test sets.
        #[arg(long)]
        data: PathBuf,
        /// Encrypted images per model: the first N test images (latencies are medians).
        #[arg(long, default_value_t = 5)]
        images: usize,
        /// Python with TenSEAL for the anchor (`benches/anchors/setup.sh` makes this one);
        /// `none` skips the anchor.
        #[arg(long, default_value = "benches/anchors/.venv/bin/python")]
        python: String,
        /// The bundled seed networks TenSEAL evaluates (their weights; CKKS computes the
        /// float network, so a QAT export's clipping and rounding are left out).
        #[arg(long, value_delimiter = ',', default_value = "seed_mnist.onnx,seedq_mnist.onnx")]
        tenseal_models: Vec<String>,
        /// Python with Concrete ML 1.9 for its anchor (`benches/anchors/setup.sh --concrete-ml`
        /// makes this one); `none` skips it.
        #[arg(long, default_value = "benches/anchors/.venv-cml/bin/python")]
        concrete_ml_python: String,
        /// The bundled models Concrete ML compiles and runs encrypted (the same ONNX files).
        #[arg(long, value_delimiter = ',', default_value = "seed_mnist.onnx,seedq_mnist.onnx")]
        concrete_ml_models: Vec<String>,
        /// Encrypted images per model for Concrete ML (the first N; minutes each).
        #[arg(long, default_value_t = 3)]
        concrete_ml_images: usize,
        /// Markdown file whose speed section is (re)written.
        #[arg(long, default_value = "BENCHMARKS.md")]
        out: PathBuf,
    },
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
    /// The optimisation passes on every bundled model: bootstraps, widths, estimated cost and
    /// simulated accuracy without passes and with the default pipeline, plus the activation
    /// policies (`poly`, `auto`) on the ReLU and square-activation models; writes the passes
    /// section of BENCHMARKS.md.
    Passes {
        /// Directory of the bundled models (with manifest.json).
        #[arg(long, default_value = "examples/models")]
        models: PathBuf,
        /// Directory with `mnist/` and `fashion-mnist/` IDX test sets (10k images each).
        #[arg(long)]
        data: PathBuf,
        /// Markdown file whose passes section is (re)written.
        #[arg(long, default_value = "BENCHMARKS.md")]
        out: PathBuf,
        /// Evaluate only the first N images of each set.
        #[arg(long)]
        limit: Option<usize>,
        /// Models that also get `--activations poly` and `auto` rows.
        #[arg(long, value_delimiter = ',', default_value = "cnn_mnist.onnx,qat2_mnist.onnx,seed_mnist.onnx")]
        policies_on: Vec<String>,
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

/// A count of at least one.
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
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
        Command::Bench(Bench::Fit {
            models,
            external,
            only,
            data,
            images,
            concrete_ml_python,
            concrete_ml_images,
            concrete_ml_max_fhe_seconds,
            out,
            limit,
        }) => bench_fit::bench_fit(&bench_fit::FitRun {
            models: &models,
            external: &external,
            only: &only,
            data: &data,
            images,
            cml_python: &concrete_ml_python,
            cml_images: concrete_ml_images,
            cml_max_fhe_seconds: concrete_ml_max_fhe_seconds,
            out: &out,
            limit,
        }),
        Command::Bench(Bench::Passes { models, data, out, limit, policies_on }) => {
            bench_passes(&models, &data, &out, limit, &policies_on)
        }
        #[cfg(feature = "fhe")]
        Command::Bench(Bench::Models { models, data, images, budget, out, limit }) => {
            bench_models(&models, &data, images, budget, &out, limit)
        }
        #[cfg(feature = "fhe")]
        Command::Bench(Bench::Speed {
            models,
            only,
            data,
            images,
            python,
            tenseal_models,
            concrete_ml_python,
            concrete_ml_models,
            concrete_ml_images,
            out,
        }) => bench_speed(&SpeedRun {
            models: &models,
            only: &only,
            data: &data,
            images,
            tenseal_python: &python,
            tenseal_models: &tenseal_models,
            cml_python: &concrete_ml_python,
            cml_models: &concrete_ml_models,
            cml_images: concrete_ml_images,
            out: &out,
        }),
        #[cfg(feature = "fhe")]
        Command::Keygen { artifact, out, force } => {
            let art = read_artifact(&artifact)?;
            std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
            let (cp, sp) = (out.join("client.key"), out.join("server.key"));
            for p in [&cp, &sp] {
                if p.exists() && !force {
                    bail!("{} exists; refusing to overwrite it (use --force)", p.display());
                }
            }
            let t = std::time::Instant::now();
            let client = Client::new(&art).with_context(|| format!("cannot use {}", artifact.display()))?;
            let (cb, sb) = (client.secret_key(), client.evaluation_key());
            write_new(&cp, &cb)?;
            write_new(&sp, &sb)?;
            println!(
                "keys generated in {:.1} s: {} ({}, secret: keep it), {} ({}, evaluation key: send it to the server)",
                t.elapsed().as_secs_f64(),
                cp.display(),
                size(cb.len()),
                sp.display(),
                size(sb.len())
            );
            Ok(())
        }
        #[cfg(feature = "fhe")]
        Command::Encrypt { artifact, client_key, dataset, data, index, image, out } => {
            let client = Client::with_key(&read_artifact(&artifact)?, &read(&client_key)?)
                .with_context(|| format!("cannot load {} for {}", client_key.display(), artifact.display()))?;
            let shape = client.artifact().circuit.input_shape().to_vec();
            let (pixels, what) = match (&image, dataset) {
                (Some(path), _) => {
                    let (rows, cols) = (shape[shape.len().saturating_sub(2)], shape[shape.len() - 1]);
                    let px = fhec_runtime::dataset::load_image(path, rows, cols)?;
                    (px, path.display().to_string())
                }
                (None, Some(kind)) => {
                    let ds = match data {
                        Some(d) => Dataset::load_test(&d, kind)?,
                        None => bundled_sample(kind),
                    };
                    if index >= ds.len() {
                        bail!("image index {index} is out of range: the set has {} images", ds.len());
                    }
                    (
                        ds.pixels(index).to_vec(),
                        format!("{} image {index} (label {})", kind.dir_name(), ds.labels[index]),
                    )
                }
                (None, None) => bail!("give an image file (--image) or a dataset (--dataset, with --index)"),
            };
            let b = client.encrypt(&pixels)?;
            if out.exists() {
                bail!("{} exists; refusing to overwrite it", out.display());
            }
            write_new(&out, &b)?;
            println!("encrypted {what} to {} ({})", out.display(), size(b.len()));
            Ok(())
        }
        #[cfg(feature = "fhe")]
        Command::Run { artifact, server_key, input, out } => {
            let server = Server::new(&read_artifact(&artifact)?, &read(&server_key)?)
                .with_context(|| format!("cannot load {} for {}", server_key.display(), artifact.display()))?;
            let ct = read(&input)?;
            let t = std::time::Instant::now();
            let res = with_progress(server.bootstraps(), "evaluating", |p| server.classify_with_progress(&ct, p))
                .with_context(|| format!("cannot evaluate {}", input.display()))?;
            write_new(&out, &res)?;
            println!("evaluated in {:.2} s; wrote {} ({})", t.elapsed().as_secs_f64(), out.display(), size(res.len()));
            Ok(())
        }
        #[cfg(feature = "fhe")]
        Command::Decrypt { artifact, client_key, input } => {
            let client = Client::with_key(&read_artifact(&artifact)?, &read(&client_key)?)
                .with_context(|| format!("cannot load {} for {}", client_key.display(), artifact.display()))?;
            let pred = client.decrypt(&read(&input)?).with_context(|| format!("cannot decrypt {}", input.display()))?;
            let s: Vec<String> = pred.scores.iter().map(|v| format!("{v:.3}")).collect();
            println!("scores: [{}]", s.join(", "));
            println!("class: {}", pred.class);
            Ok(())
        }
        #[cfg(feature = "fhe")]
        Command::Demo { images, rounding } => demo(images, rounding),
        Command::Build { model, out, json, print_circuit, print_ir_after_all, compile } => {
            let mut show = |pass: &str, g: &Graph, notes: &[String]| {
                if print_ir_after_all {
                    println!("// ----- IR after pass '{pass}'");
                    for n in notes {
                        println!("// {n}");
                    }
                    print!("{}", print::print(g));
                }
            };
            if print_ir_after_all {
                let bytes = read(&model)?;
                let g = import(&model, &bytes, &compile.import.options())?;
                println!("// ----- IR as imported");
                print!("{}", print::print(&g));
            }
            let Compiled { artifact: art, before_passes: before, fit, .. } =
                compile_model_with(&model, &compile, &mut show, true)?;
            let out = out.unwrap_or_else(|| model.with_extension("fhec"));
            let bytes = art.to_bytes();
            write_artifact(&out, &bytes)?;
            let report = build_report(&art.circuit, &art.options, art.fhe.as_ref());
            if json {
                let mut v = serde_json::to_value(&report)?;
                if let Some(b) = &before {
                    v["before_passes"] = serde_json::to_value(build_report(&b.circuit, &b.options, b.fhe.as_ref()))?;
                }
                if let Some(f) = &fit {
                    v["fit"] = serde_json::to_value(f)?;
                }
                v["artifact"] = serde_json::json!({ "path": out.display().to_string(), "bytes": bytes.len() });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                if print_circuit {
                    print!("{}", fhec_ir::circuit::print::print(&art.circuit));
                }
                if let Some(f) = &fit {
                    print!("{}", f.to_text());
                }
                print!("{}", report.to_text());
                if let Some(b) = &before {
                    println!("{}", pass_comparison(b, &art));
                }
                println!("wrote {} ({} bytes)", out.display(), bytes.len());
            }
            Ok(())
        }
        Command::Eval { model, dataset, data, mode, limit, predictions, compile } => {
            // A model compiled on the fly calibrates on the bundled sample of the set it is
            // evaluated on, unless it says otherwise.
            let compile = CompileArgs { calib_dataset: compile.calib_dataset.or(Some(dataset)), ..compile };
            let mut ds = Dataset::load_test(&data, dataset)?;
            let bytes = read(&model)?;
            // A model of some classes only is measured on the images of those classes.
            let classes = match &compile.classes {
                Some(c) => Some(c.clone()),
                None if Artifact::sniff(&bytes) => Artifact::from_bytes(&bytes).ok().and_then(|a| {
                    a.options.get("classes").map(|s| s.split(',').filter_map(|v| v.parse().ok()).collect())
                }),
                None => classes_of(&model, &compile)?,
            };
            if let Some(c) = &classes {
                ds.keep_classes(c);
            }
            if let Some(n) = limit {
                ds.truncate(n);
            }
            if ds.is_empty() {
                bail!("no images to evaluate");
            }
            let preds: Vec<usize> = match mode {
                Mode::Float => {
                    if Artifact::sniff(&bytes) {
                        bail!("{} is a compiled artifact; float mode needs the ONNX model", model.display());
                    }
                    let g = import(&model, &bytes, &compile.import.options())?;
                    let pre = preprocess_of(&model, &g, compile.preprocess)?;
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
                    fhe_eval(&model, &art, &ds, dataset)?.preds
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
                    let sims = simulate_draws(&art, &ds)?;
                    if sims.outside > 0 {
                        println!(
                            "{} of {} images drove a value outside the calibrated ranges (counted as errors; see --ranges)",
                            sims.outside,
                            ds.len()
                        );
                    }
                    if sims.correct.len() > 1 {
                        // One draw of the read noise is one sample of the accuracy: show
                        // how much it moves, then report the first draw (the predictions).
                        let n = ds.len() as f64;
                        let pct: Vec<String> =
                            sims.correct.iter().map(|&k| format!("{:.2}%", 100.0 * k as f64 / n)).collect();
                        println!(
                            "approximate rounding: {} draws of the read noise give {} (mean {:.2}%); the predictions and the accuracy below are the first draw's",
                            sims.correct.len(),
                            pct.join(", "),
                            100.0 * sims.mean_correct() / n
                        );
                    }
                    sims.preds
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

/// How many independent samples of approximate rounding's read noise a simulated accuracy
/// averages (one draw moves the MNIST test-set accuracy by about 0.1 point).
const NOISE_DRAWS: u64 = 10;

/// The read-noise draws to simulate an artifact with: [`NOISE_DRAWS`] when it has
/// approximate rounding and parameters to sample the noise from, else one (deterministic).
fn noise_draws(art: &Artifact) -> u64 {
    if art.circuit.is_approximate() && art.fhe.is_some() { NOISE_DRAWS } else { 1 }
}

/// Simulated predictions of every image of a set. An image that drives a value outside the
/// circuit's calibrated ranges gets the class `usize::MAX` (an error) and is counted.
/// Approximate rounding's read noise is sampled from the artifact's parameters (its
/// `draw`-th sample; see [`sim::classify_noisy_draw`]).
fn simulate_set(art: &Artifact, ds: &Dataset, draw: u64) -> Result<(Vec<usize>, usize)> {
    let c = &art.circuit;
    let sigma = art.fhe.as_ref().map(|s| s.approx_round_sigma(c)).unwrap_or_default();
    let preds = (0..ds.len())
        .into_par_iter()
        .map(|i| match sim::classify_noisy_draw(c, ds.pixels(i), &sigma, draw) {
            Ok((p, _)) => Ok(p),
            Err(e) if e.out_of_range => Ok(usize::MAX),
            Err(e) => Err(e),
        })
        .collect::<Result<Vec<usize>, sim::SimError>>()?;
    let outside = preds.iter().filter(|&&p| p == usize::MAX).count();
    Ok((preds, outside))
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
        "{} cores, load average {} (1/5/15 min)",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load.join(" ")
    )
}

/// The manifest of a models directory.
fn load_manifest(models: &Path) -> Result<fhec_compiler::manifest::Manifest> {
    let mpath = models.join("manifest.json");
    let text = std::fs::read_to_string(&mpath).with_context(|| format!("cannot read {}", mpath.display()))?;
    fhec_compiler::manifest::Manifest::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", mpath.display()))
}

/// Correct float predictions, correct simulated predictions and images outside the
/// calibrated ranges, over a whole test set.
struct Accuracy {
    float: usize,
    /// Correct simulated predictions, the mean over the read-noise draws.
    simulated: f64,
    /// Correct simulated predictions of each read-noise draw (one without approximate rounding).
    draws: Vec<usize>,
    /// Images outside the calibrated ranges (in the first draw).
    outside: usize,
}

impl Accuracy {
    /// How the simulated accuracy over `n` images was sampled, for approximate rounding: the
    /// number of draws and their range (`None` for a deterministic simulation).
    fn spread(&self, n: f64) -> Option<String> {
        let (lo, hi) = (self.draws.iter().min()?, self.draws.iter().max()?);
        (self.draws.len() > 1).then(|| {
            format!(
                "mean of {} read-noise draws, {:.2}% to {:.2}%",
                self.draws.len(),
                100.0 * *lo as f64 / n,
                100.0 * *hi as f64 / n
            )
        })
    }
}

/// A set simulated with each read-noise draw ([`noise_draws`]).
struct SimDraws {
    /// Correct predictions of each draw.
    correct: Vec<usize>,
    /// The first draw's predictions and images outside the calibrated ranges.
    preds: Vec<usize>,
    outside: usize,
}

impl SimDraws {
    fn mean_correct(&self) -> f64 {
        self.correct.iter().sum::<usize>() as f64 / self.correct.len() as f64
    }
}

fn simulate_draws(art: &Artifact, ds: &Dataset) -> Result<SimDraws> {
    let mut sims = SimDraws { correct: vec![], preds: vec![], outside: 0 };
    for draw in 0..noise_draws(art) {
        let (preds, outside) = simulate_set(art, ds, draw)?;
        sims.correct.push(preds.iter().zip(&ds.labels).filter(|(p, l)| **p == **l as usize).count());
        if draw == 0 {
            (sims.preds, sims.outside) = (preds, outside);
        }
    }
    Ok(sims)
}

fn measure_accuracy(g: &Graph, art: &Artifact, ds: &Dataset, pre: Preprocess) -> Result<Accuracy> {
    let shape = image_input_shape(g, ds)?;
    let float = (0..ds.len())
        .into_par_iter()
        .map(|i| {
            let out = interp::run(g, &[ds.input(i, pre, &shape)])?;
            Ok((sim::argmax(&out[0].iter().map(|&v| v as f64).collect::<Vec<_>>()) == ds.labels[i] as usize) as usize)
        })
        .collect::<Result<Vec<usize>, interp::InterpError>>()?
        .into_iter()
        .sum::<usize>();
    let sims = simulate_draws(art, ds)?;
    Ok(Accuracy { float, simulated: sims.mean_correct(), draws: sims.correct, outside: sims.outside })
}

/// The widths an artifact was compiled at: input/weight/activation/table bits.
fn widths_of(art: &Artifact) -> String {
    ["input_bits", "weight_bits", "act_bits", "max_table_bits"]
        .iter()
        .map(|k| art.options.get(*k).map_or("?", |v| v.as_str()))
        .collect::<Vec<_>>()
        .join("/")
}

fn bench_accuracy(models: &Path, data: &Path, out: &Path, limit: Option<usize>) -> Result<()> {
    let manifest = load_manifest(models)?;
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
            calib_dataset: Some(kind),
            preprocess: Some(m.preprocess),
            no_fit: true,
            ..CompileArgs::defaults()
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
Produced by `fhec bench accuracy --data {}` ({} images per test set). Default compile \
options: input {} bits, weights {} bits, activations {} bits, tables read at most {} bits \
(wider accumulators are rounded exactly first), unless the model's metadata names the widths \
it was trained for (column *widths*: input/weight/activation/table bits); table ranges \
calibrated on the bundled 200-image sample with a {}% margin. *Outside*: test images that \
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
        d.range_margin_pct,
        rows.join("\n")
    );
    let doc = std::fs::read_to_string(out).unwrap_or_else(|_| "# fhec benchmarks\n\n".to_string());
    std::fs::write(out, replace_section(&doc, "accuracy", &body))
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}

/// One row of the passes table: a model compiled with one pipeline.
fn passes_row(model: &str, args: &CompileArgs, art: &Artifact, notes: &[String], acc: &Accuracy, n: f64) -> String {
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

fn bench_passes(models: &Path, data: &Path, out: &Path, limit: Option<usize>, policies_on: &[String]) -> Result<()> {
    let manifest = load_manifest(models)?;
    let machine = machine_line();
    let mut rows = vec![];
    for m in &manifest.models {
        let path = models.join(&m.file);
        let kind: DatasetKind = m.dataset.parse().map_err(|e: String| anyhow::anyhow!("{e}"))?;
        let mut ds = Dataset::load_test(data, kind)?;
        if let Some(n) = limit {
            ds.truncate(n);
        }
        let base = CompileArgs {
            calib_dataset: Some(kind),
            preprocess: Some(m.preprocess),
            no_fit: true,
            ..CompileArgs::defaults()
        };
        let mut variants = vec![CompileArgs { passes: Some("none".into()), ..base.clone() }, base.clone()];
        if policies_on.iter().any(|f| f == &m.file) {
            for d in [2, 4] {
                variants.push(CompileArgs { activations: ActivationPolicy::Poly, poly_degree: d, ..base.clone() });
            }
            variants.push(CompileArgs { activations: ActivationPolicy::Auto, ..base.clone() });
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
Produced by `fhec bench passes --data {}` ({} images per test set). Each model is compiled \
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
    let doc = std::fs::read_to_string(out).unwrap_or_else(|_| "# fhec benchmarks\n\n".to_string());
    std::fs::write(out, replace_section(&doc, "passes", &body))
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}

/// Reads an artifact file, checking that it is one (the app API validates the rest).
#[cfg(feature = "fhe")]
fn read_artifact(path: &Path) -> Result<Vec<u8>> {
    let bytes = read(path)?;
    if !Artifact::sniff(&bytes) {
        bail!("{} is not an fhec artifact (build one with `fhec build MODEL.onnx`)", path.display());
    }
    Ok(bytes)
}

/// A byte count for people.
#[cfg(feature = "fhe")]
fn size(bytes: usize) -> String {
    let b = bytes as f64;
    if b >= 1048576.0 {
        format!("{:.1} MiB", b / 1048576.0)
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{bytes} B")
    }
}

/// Runs `f` with a bootstrap counter shown as a progress bar on a terminal.
#[cfg(feature = "fhe")]
fn with_progress<T>(total: usize, msg: &str, f: impl FnOnce(&AtomicUsize) -> T) -> T {
    let counter = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    let bar = indicatif::ProgressBar::new(total as u64).with_message(msg.to_string());
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} bootstraps, {elapsed} (eta {eta})")
            .expect("template")
            .progress_chars("=> "),
    );
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                bar.set_position(counter.load(Ordering::Relaxed) as u64);
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            bar.finish_and_clear();
        });
        let out = f(&counter);
        done.store(true, Ordering::Relaxed);
        out
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
/// Encrypted evaluation through the app API: keys once, then per image the client encrypts,
/// the server classifies the bytes, the client decrypts; each result is compared with the
/// simulation.
fn fhe_eval(model: &Path, art: &Artifact, ds: &Dataset, kind: DatasetKind) -> Result<FheRun> {
    let c = &art.circuit;
    let bytes = art.to_bytes();
    let t = std::time::Instant::now();
    let client = Client::new(&bytes).with_context(|| format!("cannot use {}", model.display()))?;
    let ek = client.evaluation_key();
    let server = Server::new(&bytes, &ek)?;
    let keygen = t.elapsed().as_secs_f64();
    let setup = art.fhe.as_ref().expect("Client::new checked the parameters");
    let approx = c.is_approximate();
    println!(
        "model: {} ({} bootstraps per image), dataset: {} ({} images), mode: fhe",
        model.display(),
        server.bootstraps(),
        kind.dir_name(),
        ds.len(),
    );
    println!(
        "parameters: {}; security {:.0} bits; failure probability per inference <= 2^{:.1}",
        setup.params.summary(),
        setup.security_bits,
        setup.global_p_error.max(1e-300).log2()
    );
    println!("keygen: {keygen:.1} s; evaluation key {}", size(ek.len()));
    // One bootstrap alone, measured before the runs (rayon's threads keep spinning for a
    // moment after a parallel section, which would slow a measurement taken right after).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pbs_s = server.one_bootstrap_seconds(20);
    let round_pbs_s = if setup.params.has_rounding_bsk() { server.one_rounding_bootstrap_seconds(20) } else { pbs_s };
    let (mut te, mut tv, mut td, mut tc) = (vec![], vec![], vec![], vec![]);
    let (mut up, mut down) = (0, 0);
    let mut preds = vec![];
    let mut agree = 0;
    let mut outside = 0;
    let mut correct = 0;
    for i in 0..ds.len() {
        let t0 = std::time::Instant::now();
        let ct = client.encrypt(ds.pixels(i))?;
        let t1 = std::time::Instant::now();
        let cpu0 = process_cpu_seconds();
        let res = with_progress(server.bootstraps(), &format!("image {}/{}", i + 1, ds.len()), |pr| {
            server.classify_with_progress(&ct, pr)
        })?;
        let t2 = std::time::Instant::now();
        tc.push(process_cpu_seconds() - cpu0);
        let pred = client.decrypt(&res)?;
        let t3 = std::time::Instant::now();
        // An image outside the calibrated ranges has no specified result to compare with.
        let want: Option<Vec<i64>> = match sim::simulate(c, sim::encode_image(c, ds.pixels(i))) {
            Ok(v) => Some(v.iter().copied().collect()),
            Err(e) if e.out_of_range => None,
            Err(e) => return Err(e.into()),
        };
        // Approximate rounding makes the encrypted outputs a noisy function of the image:
        // only the class is compared, with the noise-free simulation's.
        let same = want
            .as_ref()
            .is_none_or(|w| if approx { sim::argmax(&c.output_quant.scores(w)) == pred.class } else { pred.raw == *w });
        outside += want.is_none() as usize;
        agree += (same && want.is_some()) as usize;
        correct += (pred.class == ds.labels[i] as usize) as usize;
        (up, down) = (ct.len(), res.len());
        te.push((t1 - t0).as_secs_f64());
        tv.push((t2 - t1).as_secs_f64());
        td.push((t3 - t2).as_secs_f64());
        println!(
            "image {i}: label {} -> class {} ({}); encrypt {:.3} s, evaluate {:.2} s, decrypt {:.4} s",
            ds.labels[i],
            pred.class,
            match (&want, same) {
                (None, _) => "outside the calibrated ranges: result unspecified",
                (Some(_), true) if approx => "same class as the noise-free simulation",
                (Some(_), false) if approx => "class differs from the noise-free simulation",
                (Some(_), true) => "= simulation",
                (Some(_), false) => "DIFFERS from simulation",
            },
            te[i],
            tv[i],
            td[i]
        );
        preds.push(pred.class);
    }
    println!(
        "agreement with simulation: {agree}/{} ({}){}; encrypted accuracy {correct}/{}",
        ds.len() - outside,
        if approx { "same class; approximate rounding reads may be one step off" } else { "outputs equal" },
        if outside > 0 { format!(", {outside} images outside the calibrated ranges") } else { String::new() },
        ds.len()
    );
    println!(
        "median latency per image: encrypt {:.3} s, evaluate {:.2} s, decrypt {:.4} s; upload {}, download {} per image",
        median(&mut te),
        median(&mut tv),
        median(&mut td),
        size(up),
        size(down)
    );
    // The scheduling efficiency: evaluation time over the ideal of every bootstrap at its
    // single-thread cost spread over all cores.
    let rounding = server.rounding_bootstraps();
    let ideal = ((server.bootstraps() - rounding) as f64 * pbs_s + rounding as f64 * round_pbs_s) / cores as f64;
    let efficiency = median(&mut tv) / ideal;
    let round_note = if setup.params.has_rounding_bsk() {
        format!(", rounding bootstrap {:.1} ms", round_pbs_s * 1e3)
    } else {
        String::new()
    };
    println!(
        "one keyswitch + bootstrap (one thread, median of 20): {:.1} ms{round_note}; scheduling efficiency {:.2} (evaluate / (sum over bootstraps of one of its kind / {cores} cores))",
        pbs_s * 1e3,
        efficiency
    );
    if agree + outside != ds.len() && !approx {
        bail!("{} of {} encrypted results differ from the simulation", ds.len() - outside - agree, ds.len() - outside);
    }
    Ok(FheRun {
        preds,
        agree,
        compared: ds.len() - outside,
        correct,
        keygen_s: keygen,
        eval_key_bytes: ek.len(),
        encrypt_s: median(&mut te),
        evaluate_s: median(&mut tv),
        evaluate_cpu_s: median(&mut tc),
        decrypt_s: median(&mut td),
        upload: up,
        download: down,
        pbs_s,
        round_pbs_s,
        efficiency,
    })
}

/// What an encrypted evaluation measured.
#[cfg(feature = "fhe")]
struct FheRun {
    preds: Vec<usize>,
    agree: usize,
    /// Images inside the calibrated ranges (the others have no specified result).
    compared: usize,
    correct: usize,
    keygen_s: f64,
    eval_key_bytes: usize,
    encrypt_s: f64,
    evaluate_s: f64,
    /// CPU time of the whole process (all threads) during an evaluation (median).
    evaluate_cpu_s: f64,
    decrypt_s: f64,
    upload: usize,
    download: usize,
    /// One keyswitch + bootstrap on one thread (median).
    pbs_s: f64,
    /// The same for the rounding bootstrap (`pbs_s` without a rounding key).
    round_pbs_s: f64,
    /// Evaluation time / ((main bootstraps × `pbs_s` + rounding ones × `round_pbs_s`) / cores).
    efficiency: f64,
}

#[cfg(feature = "fhe")]
impl FheRun {
    /// One bootstrap's time, and the rounding bootstrap's when it differs.
    fn bootstrap_ms(&self) -> String {
        if self.round_pbs_s == self.pbs_s {
            format!("{:.1} ms", self.pbs_s * 1e3)
        } else {
            format!("{:.1} ms (rounding {:.1} ms)", self.pbs_s * 1e3, self.round_pbs_s * 1e3)
        }
    }
}

/// The per-model table of the bundled models (see `Bench::Models`).
#[cfg(feature = "fhe")]
fn bench_models(
    models: &Path,
    data: &Path,
    images: usize,
    budget: f64,
    out: &Path,
    limit: Option<usize>,
) -> Result<()> {
    let manifest = load_manifest(models)?;
    let load_before = machine_line();
    let mut rows = vec![];
    let mut failures = vec![];
    for m in &manifest.models {
        let path = models.join(&m.file);
        let kind: DatasetKind = m.dataset.parse().map_err(|e: String| anyhow::anyhow!("{e}"))?;
        let mut ds = Dataset::load_test(data, kind)?;
        if let Some(n) = limit {
            ds.truncate(n);
        }
        println!("== {} ==", m.file);
        let args = CompileArgs {
            calib_dataset: Some(kind),
            preprocess: Some(m.preprocess),
            no_fit: true,
            ..CompileArgs::defaults()
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
    let body = format!(
        "## Bundled models: accuracy, cost and encrypted runs\n\n\
Produced by `fhec bench models --data {} --images {images}{}`. One row per bundled model, \
compiled at its default options (the widths its metadata names, else input 8 / weights 7 / \
activations 7 / tables 11 bits; ranges calibrated on the bundled 200-image sample). *Float* \
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
key) make a layer's bootstraps cheaper than one alone, hence values below 1. Machine before the run: {load_before}; after: {}.\n\n\
| model | dataset | widths (in/w/act/table) | float | simulated | Δ points | bootstraps / image | widest table | parameters; security, failure / inference | encrypted sample | encrypt | evaluate | decrypt | one bootstrap | efficiency | keygen | evaluation key | upload / image | download / image |\n\
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n{}\n",
        data.display(),
        if budget != 2000.0 { format!(" --budget {budget}") } else { String::new() },
        limit.map_or("all".to_string(), |n| n.to_string()),
        machine_line(),
        rows.join("\n"),
    );
    let doc = std::fs::read_to_string(out).unwrap_or_else(|_| "# fhec benchmarks\n\n".to_string());
    let doc = replace_section(&doc, "models", &body);
    std::fs::write(out, doc).with_context(|| format!("cannot write {}", out.display()))?;
    println!("wrote {}", out.display());
    if !failures.is_empty() {
        bail!("encrypted runs failed: {}", failures.join("; "));
    }
    Ok(())
}

/// CPU seconds used so far by this process, all threads (user + system, from
/// `/proc/self/stat`; 0 where that file does not exist).
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest.split_whitespace().skip(11).take(2).filter_map(|x| x.parse().ok()).collect();
    // The kernel reports clock ticks, 100 per second on Linux (USER_HZ).
    f.iter().sum::<f64>() / 100.0
}

/// Runs an anchor script (`benches/anchors/NAME`) with `python` on `onnx` and the first
/// `images` test images of `dataset` under `data` (plus `extra` arguments) and returns the
/// JSON object it printed on stdout (its progress goes to our stderr).
#[cfg(feature = "fhe")]
fn run_anchor(
    python: &str,
    script: &str,
    (onnx, data, dataset, images): (&Path, &Path, &str, usize),
    extra: &[&str],
    setup: &str,
) -> Result<serde_json::Value> {
    let script = Path::new("benches/anchors").join(script);
    let out = std::process::Command::new(python)
        .arg(&script)
        .arg("--onnx")
        .arg(onnx)
        .arg("--data")
        .arg(data)
        .args(["--dataset", dataset, "--images", &images.to_string()])
        .args(extra)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {python} {} (run {setup} first)", script.display()))?;
    if !out.status.success() {
        bail!("the anchor {} failed ({})", script.display(), out.status);
    }
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("the anchor {} printed no JSON result", script.display()))
}

/// What `fhec bench speed` measures and where it writes (see `Bench::Speed`).
#[cfg(feature = "fhe")]
struct SpeedRun<'a> {
    models: &'a Path,
    only: &'a [String],
    data: &'a Path,
    images: usize,
    /// Python for the TenSEAL anchor, or `none`.
    tenseal_python: &'a str,
    tenseal_models: &'a [String],
    /// Python for the Concrete ML anchor, or `none`.
    cml_python: &'a str,
    cml_models: &'a [String],
    cml_images: usize,
    out: &'a Path,
}

/// One `--only` entry of `fhec bench speed`: a bundled file and the compile flags it is
/// built with (`seedq_mnist.onnx:max-table-bits=6:rounding=approximate`).
#[cfg(feature = "fhe")]
struct ModelSpec {
    file: String,
    /// `(flag, value)` in the order given.
    flags: Vec<(String, String)>,
}

#[cfg(feature = "fhe")]
impl ModelSpec {
    const FLAGS: [&'static str; 5] = ["input-bits", "weight-bits", "act-bits", "max-table-bits", "rounding"];

    fn parse(s: &str) -> Result<ModelSpec> {
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
        let mut args = CompileArgs::defaults();
        spec.apply(&mut args).with_context(|| format!("'{s}'"))?;
        args.quant_options_over(QuantOptions::default()).validate().with_context(|| format!("'{s}'"))?;
        Ok(spec)
    }

    /// The file, and its flags as `fhec` options when it has some.
    fn label(&self) -> String {
        if self.flags.is_empty() {
            return self.file.clone();
        }
        let flags: Vec<String> = self.flags.iter().map(|(k, v)| format!("--{k} {v}")).collect();
        format!("{} ({})", self.file, flags.join(" "))
    }

    fn apply(&self, args: &mut CompileArgs) -> Result<()> {
        for (k, v) in &self.flags {
            if k == "rounding" {
                args.rounding =
                    Some(v.parse().map_err(|e: fhec_compiler::quantize::UnknownRounding| anyhow::anyhow!(e))?);
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
#[cfg(feature = "fhe")]
struct AnchorTime {
    model: String,
    evaluate_s: f64,
}

#[cfg(feature = "fhe")]
fn ratio_to(anchors: &[AnchorTime], model: &str, evaluate_s: f64) -> String {
    anchors
        .iter()
        .find(|a| a.model == model)
        .map_or_else(|| "—".into(), |a| format!("{:.2}", evaluate_s / a.evaluate_s))
}

/// The speed table (see `Bench::Speed`).
#[cfg(feature = "fhe")]
fn bench_speed(run: &SpeedRun) -> Result<()> {
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
    let load_before = machine_line();
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
        let kind: DatasetKind = m.dataset.parse().map_err(|e: String| anyhow::anyhow!("{e}"))?;
        let full = Dataset::load_test(data, kind)?;
        let mut ds = full.clone();
        ds.truncate(images);
        println!("== {} ==", spec.label());
        let mut args = CompileArgs {
            calib_dataset: Some(kind),
            preprocess: Some(m.preprocess),
            no_fit: true,
            ..CompileArgs::defaults()
        };
        spec.apply(&mut args)?;
        let (g, art) = compile_model(&path, &args)?;
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
Produced by `fhec bench speed --data {} --images {images}` (models: {}; a file followed by \
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
(below 1 is faster). Machine before the run: {load_before}; after: {}.\n\n\
| system | model | images | test-set accuracy | accuracy on the images | bootstraps / image | parameters | encrypt | evaluate | evaluate CPU | decrypt | one bootstrap | efficiency | keygen | evaluation key | upload / image | download / image | vs TenSEAL | vs Concrete ML |\n\
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n{}\n",
        data.display(),
        run.only.join(","),
        machine_line(),
        rows.join("\n"),
    );
    let doc = std::fs::read_to_string(run.out).unwrap_or_else(|_| "# fhec benchmarks\n\n".to_string());
    std::fs::write(run.out, replace_section(&doc, "speed", &body))
        .with_context(|| format!("cannot write {}", run.out.display()))?;
    println!("wrote {}", run.out.display());
    Ok(())
}

#[cfg(feature = "fhe")]
/// The demo model, compiled into the binary: the seed network (TenSEAL's tutorial network)
/// trained with fhec's quantization, whose metadata carries its widths and dataset.
const DEMO_MODEL: &[u8] = include_bytes!("../../examples/models/seedq_mnist.onnx");

#[cfg(feature = "fhe")]
/// The widest table the demo reads: 6 bits keeps the seed network within 0.3 points of float
/// with either rounding (BENCHMARKS.md, speed section).
const DEMO_TABLE_BITS: u32 = 6;

#[cfg(feature = "fhe")]
fn demo(images: usize, rounding: Rounding) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("fhec-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let model = dir.join("seedq_mnist.onnx");
    std::fs::write(&model, DEMO_MODEL)?;
    println!(
        "== fhec demo: the bundled seed network (seedq_mnist, --max-table-bits {DEMO_TABLE_BITS} --rounding {rounding}), end to end =="
    );
    let args = CompileArgs {
        max_table_bits: Some(DEMO_TABLE_BITS),
        rounding: Some(rounding),
        no_fit: true,
        calib_dataset: Some(DatasetKind::Mnist),
        ..CompileArgs::defaults()
    };
    let compiled = compile_model(&model, &args);
    let _ = std::fs::remove_dir_all(&dir);
    let (_, art) = compiled?;
    let report = build_report(&art.circuit, &art.options, art.fhe.as_ref());
    print!("{}", report.to_text());
    let mut ds = bundled_sample(DatasetKind::Mnist);
    ds.truncate(images.max(1));
    println!();
    fhe_eval(Path::new("seedq_mnist.onnx (bundled)"), &art, &ds, DatasetKind::Mnist)?;
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

/// Imports a model; a model with several outputs whose `manifest.json` entry names the
/// class scores gets that output unless one is given.
fn import(path: &Path, bytes: &[u8], options: &ImportOptions) -> Result<Graph> {
    let mut options = options.clone();
    if options.output.is_none() {
        options.output = manifest_entry(path)?.and_then(|m| m.output);
    }
    import_onnx(bytes, &options).with_context(|| format!("cannot import {}", path.display()))
}

fn load_model(path: &Path, options: &ImportOptions) -> Result<Graph> {
    import(path, &read(path)?, options)
}

/// The entry of `model` in a `manifest.json` beside it, if there is one (how fhec knows the
/// preprocessing and dataset of third-party models that are kept byte-exact, without
/// metadata of their own). A `manifest.json` that is not an fhec models manifest (the name
/// is common) is ignored with a note on stderr, never an error.
fn manifest_entry(model: &Path) -> Result<Option<fhec_compiler::manifest::ManifestEntry>> {
    let (Some(dir), Some(name)) = (model.parent(), model.file_name()) else { return Ok(None) };
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    if !dir.join("manifest.json").is_file() {
        return Ok(None);
    }
    match load_manifest(dir) {
        Ok(manifest) => Ok(manifest.models.into_iter().find(|m| std::ffi::OsStr::new(&m.file) == name)),
        Err(e) => {
            eprintln!("note: ignoring {}: {e:#}", dir.join("manifest.json").display());
            Ok(None)
        }
    }
}

/// The input scaling of a model: the flag, else its `fhec.preprocess` metadata, else its
/// entry in a `manifest.json` beside it, else unit.
fn preprocess_of(model: &Path, g: &Graph, flag: Option<Preprocess>) -> Result<Preprocess> {
    if flag.is_none() && !g.metadata.contains_key(Preprocess::METADATA_KEY) {
        if let Some(m) = manifest_entry(model)? {
            return Ok(m.preprocess);
        }
    }
    Ok(fhec_compiler::build::preprocess_of(g, flag)?)
}

/// Imports, optimises, calibrates and quantizes a model.
fn compile_model(model: &Path, args: &CompileArgs) -> Result<(Graph, Artifact)> {
    let c = compile_model_with(model, args, &mut |_, _, _| {}, false)?;
    Ok((c.graph, c.artifact))
}

/// A compiled model: the imported graph, the artifact, the artifact of the same widths
/// without passes (when asked for), and the fit's report (when the fit chose the widths).
struct Compiled {
    graph: Graph,
    artifact: Artifact,
    before_passes: Option<Artifact>,
    fit: Option<FitReport>,
}

/// The rows and columns of the images a model takes: a square image when its input holds
/// a square number of values (`[1, 1, 28, 28]`, `[1, 28, 28, 1]`, `[1, 784]`), else the
/// input's last two dimensions.
fn image_size(g: &Graph) -> (usize, usize) {
    let s = &g.node(g.inputs()[0]).shape;
    let n: usize = s.iter().product();
    let side = (n as f64).sqrt().round() as usize;
    if side * side == n { (side, side) } else { (s[s.len().saturating_sub(2)], s[s.len() - 1]) }
}

/// The dataset a model classifies: the flag, else its `fhec.dataset` metadata, else its
/// entry in a `manifest.json` beside it.
fn dataset_of(model: &Path, g: &Graph, flag: Option<DatasetKind>) -> Result<Option<DatasetKind>> {
    if let Some(k) = flag {
        return Ok(Some(k));
    }
    if let Some(d) = g.metadata.get("fhec.dataset") {
        return Ok(Some(d.parse().map_err(|e: String| anyhow::anyhow!("model metadata fhec.dataset: {e}"))?));
    }
    match manifest_entry(model)? {
        Some(m) => {
            Ok(Some(m.dataset.parse().map_err(|e: String| anyhow::anyhow!("manifest entry of {}: {e}", m.file))?))
        }
        None => Ok(None),
    }
}

/// The calibration and validation images of a build, and how to name them.
fn build_images(model: &Path, g: &Graph, args: &CompileArgs) -> Result<(Dataset, Dataset, String)> {
    let (rows, cols) = image_size(g);
    let kind = dataset_of(model, g, args.calib_dataset)?;
    let (mut calib, name) = match (&args.calib, kind) {
        (Some(path), _) => (
            fhec_runtime::dataset::load_images(path, rows, cols, kind.unwrap_or(DatasetKind::Mnist))?,
            path.display().to_string(),
        ),
        (None, Some(kind)) => {
            if (rows, cols) != (28, 28) {
                bail!(
                    "{} takes {rows}x{cols} images and the bundled {} sample is 28x28: pass --calib with images of the model's size (an IDX file or directory, a folder of PNG / PGM images, or a .npy array)",
                    model.display(),
                    kind.dir_name()
                );
            }
            (bundled_train_sample(kind), format!("bundled {} training sample", kind.dir_name()))
        }
        (None, None) => bail!(
            "{} does not say which images it classifies (no fhec.dataset metadata): pass --calib-dataset mnist|fashion-mnist to calibrate on a bundled sample, or --calib DATA with images of its input size ({rows}x{cols}; an IDX file or directory, a folder of PNG / PGM images, or a .npy array)",
            model.display()
        ),
    };
    let mut validation = match &args.validation {
        Some(path) => fhec_runtime::dataset::load_images(path, rows, cols, kind.unwrap_or(DatasetKind::Mnist))?,
        None => calib.split_off(args.calib_limit),
    };
    if let Some(classes) = classes_of(model, args)? {
        calib.keep_classes(&classes);
        validation.keep_classes(&classes);
    }
    calib.truncate(args.calib_limit);
    validation.truncate(args.validation_limit);
    image_input_shape(g, &calib)?;
    Ok((calib, validation, name))
}

/// The classes of a model's outputs: the flag, else its manifest entry.
fn classes_of(model: &Path, args: &CompileArgs) -> Result<Option<Vec<u8>>> {
    if let Some(c) = &args.classes {
        return Ok(Some(c.clone()));
    }
    Ok(manifest_entry(model)?.and_then(|m| m.classes))
}

/// [`compile_model`], showing the graph after each pass to `after`, and with `compare`,
/// also compiling the same widths without passes for the report. Unless `--no-fit`, the
/// automatic fit chooses the widths.
fn compile_model_with(
    model: &Path,
    args: &CompileArgs,
    after: &mut dyn FnMut(&str, &Graph, &[String]),
    compare: bool,
) -> Result<Compiled> {
    let bytes = read(model)?;
    if Artifact::sniff(&bytes) {
        bail!("{} is already a compiled artifact", model.display());
    }
    let g = import(model, &bytes, &args.import.options())?;
    let pre = preprocess_of(model, &g, args.preprocess)?;
    let (calib, validation, calib_name) = build_images(model, &g, args)?;
    let images: Vec<&[u8]> = (0..calib.len()).map(|i| calib.pixels(i)).collect();
    let mut o = BuildOptions {
        import: args.import.options(),
        quant: Some(args.quant_options(&g)?),
        preprocess: Some(pre),
        params: ParamOptions { global_p_error: args.global_p_error, p_error: args.p_error },
        calibration_name: calib_name,
        passes: args.pass_options()?,
    };
    let source = model.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let mut fit = None;
    let art = if args.no_fit {
        build_graph_with(&g, &source, &images, &o, after)
            .with_context(|| format!("cannot compile {}", model.display()))?
    } else {
        if validation.is_empty() {
            bail!(
                "no validation images for the fit: {} has only {} images (give more, or --validation DATA, or --no-fit)",
                o.calibration_name,
                calib.len()
            );
        }
        let val: Vec<&[u8]> = (0..validation.len()).map(|i| validation.pixels(i)).collect();
        let data = FitData {
            calibration: &images,
            validation: &val,
            labels: validation.has_labels().then_some(&validation.labels[..]),
        };
        let fo = args.fit_options(&g);
        let progress = indicatif::ProgressBar::new_spinner().with_message("fitting widths to the accuracy budget");
        progress.enable_steady_tick(std::time::Duration::from_millis(200));
        let fitted = build_fitted(&g, &source, &data, &o, &fo, after);
        progress.finish_and_clear();
        match fitted {
            Ok((art, report, quant)) => {
                o.quant = Some(quant);
                fit = Some(report);
                art
            }
            Err(fhec_compiler::BuildError::Fit(e @ FitError::Infeasible { .. })) if args.allow_simulation_only => {
                eprintln!("note: {e}; building the default widths for simulation only");
                build_graph_with(&g, &source, &images, &o, after)
                    .with_context(|| format!("cannot compile {}", model.display()))?
            }
            Err(fhec_compiler::BuildError::Fit(e)) => {
                if let Some(r) = e.report() {
                    eprint!("{}", r.to_text());
                }
                return Err(anyhow::Error::new(e).context(format!("cannot fit {}", model.display())));
            }
            Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot compile {}", model.display()))),
        }
    };
    let before = if compare && !o.passes.pipeline.is_empty() {
        let o = BuildOptions { passes: PassOptions::none(), ..o };
        Some(
            build_graph_with(&g, &source, &images, &o, &mut |_, _, _| {})
                .with_context(|| format!("cannot compile {} without passes", model.display()))?,
        )
    } else {
        None
    };
    let mut art = art;
    if let Some(c) = classes_of(model, args)? {
        let c: Vec<String> = c.iter().map(|v| v.to_string()).collect();
        art.options.insert("classes".into(), c.join(","));
    }
    Ok(Compiled { graph: g, artifact: art, before_passes: before, fit })
}

/// One line comparing the circuit before and after the passes.
fn pass_comparison(before: &Artifact, after: &Artifact) -> String {
    let side = |a: &Artifact| {
        let r = build_report(&a.circuit, &a.options, a.fhe.as_ref());
        let mut widths: Vec<String> = r.tables_by_width.iter().map(|(w, n)| format!("{n} x {w}-bit")).collect();
        if widths.is_empty() {
            widths.push("no tables".into());
        }
        let est = match &r.fhe {
            Some(f) => format!("est. {:.0} s one core", f.est_latency_ms_one_core / 1000.0),
            None => "no 128-bit parameters".into(),
        };
        format!("{} bootstraps ({}; {} rounding), {est}", r.total_bootstraps, widths.join(", "), r.rounding_bootstraps)
    };
    format!("passes: before {} -> after {}", side(before), side(after))
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
