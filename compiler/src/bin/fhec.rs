//! `fhec`: the command-line front of the compiler and runtime.
//!
//! Every failure prints `error: ...` naming the file and what is wrong, and exits with
//! status 2. The CLI is the only place that touches files.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use fhec_compiler::{ImportOptions, import_onnx};
use fhec_ir::nn::{interp, print};
use fhec_ir::{Graph, Preprocess};
use fhec_runtime::dataset::{Dataset, DatasetKind};
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
    /// Measure top-1 accuracy on an IDX test set.
    Eval {
        /// The ONNX model.
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
        /// Pixel scaling: unit (p/255), raw255 (p) or mnist-norm. Default: the model's
        /// `fhec.preprocess` metadata, else unit.
        #[arg(long)]
        preprocess: Option<Preprocess>,
        /// Write the predicted class of every image, one per line, to this file.
        #[arg(long)]
        predictions: Option<PathBuf>,
        #[command(flatten)]
        import: ImportArgs,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    /// The float interpreter of the NN IR.
    Float,
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
        Command::Eval { model, dataset, data, mode, limit, preprocess, predictions, import } => {
            let g = load_model(&model, &import.options())?;
            let mut ds = Dataset::load_test(&data, dataset)?;
            if let Some(n) = limit {
                ds.truncate(n);
            }
            if ds.is_empty() {
                bail!("no images to evaluate");
            }
            let pre = match preprocess {
                Some(p) => p,
                None => model_preprocess(&g)?.unwrap_or(Preprocess::Unit),
            };
            let shape = image_input_shape(&g, &ds)?;
            println!(
                "model: {} ({} nodes), dataset: {} ({} images), preprocess: {pre}, mode: {}",
                model.display(),
                g.len(),
                dataset.dir_name(),
                ds.len(),
                match mode {
                    Mode::Float => "float",
                }
            );
            let preds: Vec<usize> = (0..ds.len())
                .into_par_iter()
                .map(|i| {
                    let out = interp::run(&g, &[ds.input(i, pre, &shape)])?;
                    Ok(argmax(out[0].iter().copied()))
                })
                .collect::<Result<_, interp::InterpError>>()?;
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

fn load_model(path: &Path, options: &ImportOptions) -> Result<Graph> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read model {}", path.display()))?;
    import_onnx(&bytes, options).with_context(|| format!("cannot import {}", path.display()))
}

fn model_preprocess(g: &Graph) -> Result<Option<Preprocess>> {
    match g.metadata.get(Preprocess::METADATA_KEY) {
        None => Ok(None),
        Some(v) => {
            v.parse().map(Some).map_err(|e: String| anyhow::anyhow!("model metadata {}: {e}", Preprocess::METADATA_KEY))
        }
    }
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

fn argmax(it: impl Iterator<Item = f32>) -> usize {
    let mut best = (0, f32::NEG_INFINITY);
    for (i, v) in it.enumerate() {
        if v > best.1 {
            best = (i, v);
        }
    }
    best.0
}
