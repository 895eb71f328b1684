//! `fhec eval`: top-1 accuracy of a model or an artifact on a test set, in float, in the
//! exact simulation, or encrypted.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use fhec_driver::compile::{classes_of, compile_model};
use fhec_driver::files::{self, Replace};
use fhec_driver::measure::simulate_draws;
use fhec_driver::model::{image_input_shape, import, preprocess_of, read};
use fhec_ir::Preprocess;
use fhec_ir::artifact::Artifact;
use fhec_ir::client::ClientSpec;
use fhec_ir::nn::interp;
use fhec_runtime::dataset::{Dataset, DatasetKind};
use fhec_runtime::sim;
use rayon::prelude::*;

use crate::args::{CompileArgs, Mode, parse_dataset};

/// Measure top-1 accuracy on an IDX test set.
#[derive(clap::Args)]
pub struct Args {
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
    /// Replace the predictions file if it exists.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    compile: CompileArgs,
}

/// Runs `fhec eval`.
pub fn run(a: Args) -> Result<()> {
    let Args { model, dataset, data, mode, limit, predictions, force, compile } = a;
    if let Some(p) = &predictions {
        files::check_output(p, &[&model, &data], Replace::from_flag(force), "--predictions")?;
    }
    // A model compiled on the fly calibrates on the bundled sample of the set it is
    // evaluated on, unless it says otherwise.
    let mut compile = compile.options();
    compile.calib_dataset = compile.calib_dataset.or(Some(dataset));
    let mut ds = Dataset::load_test(&data, dataset)?;
    let bytes = read(&model)?;
    if ClientSpec::sniff(&bytes) {
        bail!("{}", fhec_driver::compile::not_a_model(&model));
    }
    // A model of some classes only is measured on the images of those classes.
    let classes = match &compile.classes {
        Some(c) => Some(c.clone()),
        None if Artifact::sniff(&bytes) => Artifact::from_bytes(&bytes)
            .ok()
            .and_then(|a| a.options.get("classes").map(|s| s.split(',').filter_map(|v| v.parse().ok()).collect())),
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
            let g = import(&model, &bytes, &compile.import)?;
            let pre = preprocess_of(&model, &g, compile.preprocess)?;
            let transform = fhec_compiler::build::transform_of(&g)?;
            let key = compile.transform_key.as_deref();
            let ds = &fhec_driver::transform::for_model(&model, transform, key, ds.clone())?;
            let shape = image_input_shape(&g, ds)?;
            header(&model, g.len(), "nodes", dataset, ds, pre, "float");
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
            fhec_driver::encrypted::fhe_eval_with(&model, &art, &ds, dataset, compile.transform_key.as_deref())?.preds
        }
        Mode::Simulate => {
            let art = if Artifact::sniff(&bytes) {
                Artifact::from_bytes(&bytes).with_context(|| format!("cannot load {}", model.display()))?
            } else {
                compile_model(&model, &compile)?.1
            };
            let c = &art.circuit;
            let transform = art.transform()?;
            let key = compile.transform_key.as_deref();
            let ds = &fhec_driver::transform::for_model(&model, transform, key, ds.clone())?;
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
            let sims = simulate_draws(&art, ds)?;
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
                let pct: Vec<String> = sims.correct.iter().map(|&k| format!("{:.2}%", 100.0 * k as f64 / n)).collect();
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
        files::write(&path, text.as_bytes(), Replace::from_flag(force))?;
    }
    println!("accuracy: {:.4} ({correct}/{})", correct as f64 / ds.len() as f64, ds.len());
    Ok(())
}

/// One line naming what is evaluated.
fn header(
    model: &std::path::Path,
    n: usize,
    what: &str,
    dataset: DatasetKind,
    ds: &Dataset,
    pre: Preprocess,
    mode: &str,
) {
    println!(
        "model: {} ({n} {what}), dataset: {} ({} images), preprocess: {pre}, mode: {mode}",
        model.display(),
        dataset.dir_name(),
        ds.len()
    );
}
