//! `fhec-bench`: the benchmark harness that writes `BENCHMARKS.md`'s tables (kept out of the
//! user's `fhec` CLI). Run it from the repository root, in release:
//! `cargo run --release -p fhec-benches --bin fhec-bench -- speed --data ../shared/data`
//! (or `cargo bench-table speed --data ../shared/data`, the alias in `.cargo/config.toml`).
//! `reliability` writes RELIABILITY.md instead (no data needed).

mod accuracy;
mod common;
mod fit;
mod frontier;
mod models;
mod ranges;
mod reliability;
mod serve_load;
mod speed;
mod transforms;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use fhec_driver::reliability::Kind;

/// Benchmarks that write result tables into BENCHMARKS.md.
#[derive(Parser)]
#[command(name = "fhec-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// `fhec serve` under load on loopback: N clients with their own keys each classify M
    /// images, all at once; images per minute beside `fhec run` and the runtime's `Server`
    /// in the same run, p50/p99 latency, the servers' peak memory; one process on SQLite and,
    /// with --database, one and two processes sharing PostgreSQL. Writes the serve section
    /// of BENCHMARKS.md.
    ServeLoad {
        /// The MNIST model, compiled as the service serves the seed network
        /// (`CompileOptions::seed_network`).
        #[arg(long, default_value = "examples/models/seedq_mnist.onnx")]
        model: PathBuf,
        /// Concurrent clients.
        #[arg(long, default_value_t = 4)]
        clients: usize,
        /// Images per client.
        #[arg(long, default_value_t = 2)]
        images: usize,
        /// Images of each single-process baseline.
        #[arg(long, default_value_t = 3)]
        baseline_images: usize,
        /// A PostgreSQL URL of a user who may create databases (`.ci/postgres` prints one);
        /// without it only SQLite is measured.
        #[arg(long, env = "FHEC_TEST_POSTGRES", hide_env_values = true)]
        database: Option<String>,
        /// The `fhec` binary (default: the one beside fhec-bench).
        #[arg(long)]
        fhec: Option<PathBuf>,
        /// Output markdown file (its serve section is replaced).
        #[arg(long, default_value = "BENCHMARKS.md")]
        out: PathBuf,
    },
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
    /// The accuracy / server-time frontier (issue 25): frontier and bundled models compiled,
    /// simulated on the whole test sets and run encrypted, beside TenSEAL's seed network and
    /// Concrete ML on the same files in the same run; writes the frontier section of
    /// BENCHMARKS.md and one SVG picture per dataset.
    Frontier {
        /// Directory of the bundled models (with manifest.json, and frontier/ with its own).
        #[arg(long, default_value = "examples/models")]
        models: PathBuf,
        /// The points: model files (relative to --models) with compile flags as in `speed`
        /// (`frontier/mnist_c10f96.onnx:rounding=approximate`).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "frontier/mnist_c2k8s4f32_sq.onnx:rounding=approximate:accuracy-budget=3,frontier/mnist_c3f24.onnx:rounding=approximate:accuracy-budget=3,frontier/mnist_c18k12s4f96_sq.onnx:rounding=approximate:accuracy-budget=2,frontier/mnist_c12f96_sq.onnx:rounding=approximate:accuracy-budget=2,frontier/mnist_c16f128_kd.onnx:rounding=approximate:accuracy-budget=2,frontier/mnist_c16f128_sq.onnx:rounding=approximate:accuracy-budget=2,seedq_mnist.onnx:max-table-bits=6:rounding=approximate,seed_mnist.onnx:rounding=approximate,seed_mnist.onnx,qat2_mnist.onnx,frontier/fashion_c2k8s4f32_sq.onnx:rounding=approximate:accuracy-budget=3,frontier/fashion_c3f24_sq.onnx:rounding=approximate:accuracy-budget=3,frontier/fashion_c16f128_sq.onnx:rounding=approximate:accuracy-budget=2,frontier/fashion_c24k8s4f384_sq.onnx:rounding=approximate:accuracy-budget=2:score-bits=10,frontier/fashion_c32f128_sq.onnx:rounding=approximate:accuracy-budget=2,seed_fashion.onnx:rounding=approximate,qat2_fashion.onnx"
        )]
        points: Vec<String>,
        /// Directory with `mnist/` and `fashion-mnist/` IDX test sets.
        #[arg(long)]
        data: PathBuf,
        /// Encrypted images per point, at most (the first test images; the median is reported).
        #[arg(long, default_value_t = 3)]
        images: usize,
        /// Estimated server time (one core, seconds) allowed per point: a model estimated at
        /// `e` per image runs `min(images, budget / e)` images, none if that is below one.
        #[arg(long, default_value_t = 700.0)]
        budget: f64,
        /// Python with TenSEAL (`benches/anchors/setup.sh`); `none` skips it.
        #[arg(long, default_value = "benches/anchors/.venv/bin/python")]
        python: String,
        /// Python with Concrete ML 1.9 (`benches/anchors/setup.sh --concrete-ml`); `none` skips it.
        #[arg(long, default_value = "benches/anchors/.venv-cml/bin/python")]
        concrete_ml_python: String,
        /// The files Concrete ML compiles and runs encrypted (the best frontier models).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "frontier/mnist_c18k12s4f96_sq.onnx,frontier/fashion_c32f128_sq.onnx"
        )]
        concrete_ml_models: Vec<String>,
        /// Encrypted images per model for Concrete ML.
        #[arg(long, default_value_t = 1)]
        concrete_ml_images: usize,
        /// Seconds Concrete ML may spend on one image (its `--max-fhe-seconds`): a model it
        /// estimates above this runs one image killed at the limit, and its row gives the
        /// compile statistics, the clear-quantized accuracy and the estimate instead.
        #[arg(long, default_value_t = 1800.0)]
        concrete_ml_max_seconds: f64,
        /// Concrete ML's own MNIST example (`benches/anchors/cml_mnist_example.py`, its Brevitas
        /// QAT network FC 784-192x3 at 2 bits): the state dict its `train` mode wrote, run once
        /// on MNIST beside the files above; `none` skips it.
        #[arg(long, default_value = "benches/anchors/cml_mnist_example.pt")]
        concrete_ml_example: String,
        /// Directory of the pictures.
        #[arg(long, default_value = "benches/figures")]
        figures: PathBuf,
        /// Markdown file whose frontier section is (re)written.
        #[arg(long, default_value = "BENCHMARKS.md")]
        out: PathBuf,
    },
    /// Encrypted latency, sizes and scheduling efficiency of chosen bundled models, beside the
    /// TenSEAL (CKKS) evaluation of the seed network with the same weights and images,
    /// measured in the same run; writes the speed section of BENCHMARKS.md.
    Speed {
        /// Directory of the bundled models (with manifest.json).
        #[arg(long, default_value = "examples/models")]
        models: PathBuf,
        /// The bundled models to run encrypted, each optionally followed by compile flags that
        /// override its defaults, `:`-separated: `seedq_mnist.onnx:max-table-bits=6` (flags:
        /// input-bits, weight-bits, act-bits, max-table-bits, rounding, score-bits,
        /// range-margin, and accuracy-budget, which runs `fhec build`'s fit within that budget). The
        /// anchors' ratios use the file.
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
    /// Out-of-range rates of the test sets per bundled model and range margin, with the
    /// cost of each margin; writes the ranges section of RELIABILITY.md.
    Ranges {
        /// Directory of the bundled models (with manifest.json).
        #[arg(long, default_value = "examples/models")]
        models: PathBuf,
        /// Model files to measure (default: all in the manifest).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Directory with `mnist/` and `fashion-mnist/` IDX test sets (10k images each).
        #[arg(long)]
        data: PathBuf,
        /// Range margins to measure, percent.
        #[arg(long, value_delimiter = ',', default_value = "0,5,10,20,50")]
        margins: Vec<u32>,
        /// Evaluate only the first N images of each set.
        #[arg(long)]
        limit: Option<usize>,
        /// Markdown file whose ranges section is (re)written.
        #[arg(long, default_value = "RELIABILITY.md")]
        out: PathBuf,
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
    /// Attacks on the keyed image transforms (EtC, SKK, Tanaka) after arXiv 2004.13263:
    /// ciphertext-only and known-plaintext key recovery and key-free reconstruction, measured
    /// by SSIM, PSNR, the share of the key's map recovered and a plain classifier's accuracy on
    /// the reconstructions, beside TFHE ciphertexts of the same images as the control; writes
    /// the transforms section of BENCHMARKS.md and a grid picture per dataset.
    Transforms {
        /// Directory with `mnist/` and `fashion-mnist/` IDX test and training sets.
        #[arg(long)]
        data: PathBuf,
        /// The transform key file [default: examples/models/transforms/demo.key; when that
        /// file is absent, a fixed development key, said in the section].
        #[arg(long)]
        key: Option<PathBuf>,
        /// Attacked test images per dataset (the first N).
        #[arg(long, default_value_t = 1000)]
        images: usize,
        /// The schemes attacked.
        #[arg(long, value_delimiter = ',', default_value = "etc:4,skk,tanaka:4")]
        schemes: Vec<fhec_ir::transform::Transform>,
        /// Directory of the bundled models (the classifiers seed_mnist.onnx and seed_fashion.onnx).
        #[arg(long, default_value = "examples/models")]
        models: PathBuf,
        /// The model whose 128-bit parameters and input encoding encrypt the TFHE control.
        #[arg(long, default_value = "examples/models/seedq_mnist.onnx")]
        tfhe_model: PathBuf,
        /// Directory of the grid pictures (transforms-mnist.png, transforms-fashion.png).
        #[arg(long, default_value = "benches/figures")]
        figures: PathBuf,
        /// Markdown file whose transforms section is (re)written.
        #[arg(long, default_value = "BENCHMARKS.md")]
        out: PathBuf,
        /// The models trained on transformed images (with their manifest.json).
        #[arg(long, default_value = "examples/models/transforms")]
        trained: PathBuf,
        /// Encrypted images per model in the models table (0: none).
        #[arg(long, default_value_t = 2)]
        encrypted_images: usize,
        /// The models table's accuracies on the first N test images only (default: all 10,000).
        #[arg(long)]
        accuracy_limit: Option<usize>,
    },
    /// Every kind of bootstrap the runtime performs, run by the thousand at inflated
    /// per-bootstrap failure targets (the parameter search choosing 128-bit parameters for
    /// each), every output decrypted and checked: observed failure rates beside the noise
    /// model's prediction; writes the reliability section of RELIABILITY.md.
    Reliability {
        /// Per-bootstrap failure targets, as powers of two (`-6,-8,-10`: 2^-6, 2^-8, 2^-10).
        #[arg(long, value_delimiter = ',', allow_negative_numbers = true, default_value = "-6,-8,-10")]
        targets: Vec<i32>,
        /// The kinds measured (comma-separated): table, exact-rounding,
        /// approximate-rounding, max-pool, approximate-max-pool.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "table,exact-rounding,approximate-rounding,max-pool,approximate-max-pool"
        )]
        kinds: Vec<String>,
        /// Values read per kind and target: this many divided by the target (about this many
        /// failures expected where the target binds), at most `--max-values`.
        #[arg(long, default_value_t = 32.0)]
        events: f64,
        /// The most values read per kind and target.
        #[arg(long, default_value_t = 16384)]
        max_values: usize,
        /// Seed of the inputs and the values read.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Markdown file whose reliability section is (re)written.
        #[arg(long, default_value = "RELIABILITY.md")]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse().bench) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", fhec_driver::error_message(&e));
            ExitCode::from(2)
        }
    }
}

fn run(bench: Bench) -> Result<()> {
    match bench {
        Bench::Accuracy { models, data, out, limit } => accuracy::bench_accuracy(&models, &data, &out, limit),
        Bench::Passes { models, data, out, limit, policies_on } => {
            accuracy::bench_passes(&models, &data, &out, limit, &policies_on)
        }
        Bench::Ranges { models, only, data, margins, limit, out } => ranges::bench_ranges(&ranges::RangesRun {
            models: &models,
            only: &only,
            data: &data,
            margins: &margins,
            limit,
            out: &out,
        }),
        Bench::Models { models, data, images, budget, out, limit } => {
            models::bench_models(&models, &data, images, budget, &out, limit)
        }
        Bench::Fit {
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
        } => fit::bench_fit(&fit::FitRun {
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
        Bench::ServeLoad { model, clients, images, baseline_images, database, fhec, out } => {
            if clients == 0 || images == 0 {
                anyhow::bail!("--clients and --images must be at least 1");
            }
            serve_load::bench_serve_load(&serve_load::ServeLoadRun {
                model: &model,
                clients,
                images,
                baseline_images,
                database: database.as_deref(),
                fhec: &fhec.unwrap_or_else(serve_load::default_fhec),
                out: &out,
            })
        }
        Bench::Transforms {
            data,
            key,
            images,
            schemes,
            models,
            tfhe_model,
            figures,
            out,
            trained,
            encrypted_images,
            accuracy_limit,
        } => {
            if images == 0 || schemes.is_empty() {
                anyhow::bail!("--images and --schemes must not be empty");
            }
            transforms::bench_transforms(&transforms::TransformsRun {
                data: &data,
                key: key.as_deref(),
                images,
                schemes: &schemes,
                models: &models,
                tfhe_model: &tfhe_model,
                figures: &figures,
                out: &out,
                trained: &trained,
                encrypted_images,
                accuracy_limit,
            })
        }
        Bench::Reliability { targets, kinds, events, max_values, seed, out } => {
            let kinds = kinds
                .iter()
                .map(|k| Kind::parse(k).ok_or_else(|| anyhow::anyhow!("unknown kind '{k}'")))
                .collect::<Result<Vec<_>>>()?;
            reliability::bench_reliability(&reliability::ReliabilityRun {
                targets: &targets,
                kinds: &kinds,
                events,
                max_values,
                seed,
                out: &out,
            })
        }
        Bench::Frontier {
            models,
            points,
            data,
            images,
            budget,
            python,
            concrete_ml_python,
            concrete_ml_models,
            concrete_ml_images,
            concrete_ml_max_seconds,
            concrete_ml_example,
            figures,
            out,
        } => frontier::bench_frontier(&frontier::FrontierRun {
            models: &models,
            points: &points,
            data: &data,
            images,
            budget,
            tenseal_python: &python,
            cml_python: &concrete_ml_python,
            cml_models: &concrete_ml_models,
            cml_images: concrete_ml_images,
            cml_max_seconds: concrete_ml_max_seconds,
            cml_example: &concrete_ml_example,
            figures: &figures,
            out: &out,
        }),
        Bench::Speed {
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
        } => speed::bench_speed(&speed::SpeedRun {
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
    }
}
