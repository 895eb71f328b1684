//! The model rows of `fhec-bench transforms`: for each dataset, the plain seed network run
//! with TFHE; the same network with EtC and SKK folded into its circuit (the client sends
//! transformed images, the circuit costs the same); and the networks trained on each
//! transform (`examples/models/transforms/`), served in plaintext as learnable image
//! encryption serves them, and compiled and run encrypted. Accuracy on the full test set
//! (float, and the exact simulation, which encrypted runs equal), time per image in
//! plaintext and encrypted.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use fhec_compiler::quantize::Rounding;
use fhec_driver::compile::{CompileOptions, Compiled, compile_model_with};
use fhec_driver::encrypted::{FheRun, fhe_eval_with, median};
use fhec_driver::measure::{Accuracy, measure_accuracy, simulate_draws};
use fhec_driver::model::image_input_shape;
use fhec_driver::transform::{read_key, transform_set};
use fhec_ir::artifact::Artifact;
use fhec_ir::nn::interp;
use fhec_ir::{Graph, Preprocess, Transform};
use fhec_runtime::dataset::{Dataset, DatasetKind};

use crate::fit::pct;

/// What the model rows measure.
pub struct ModelRun<'a> {
    /// Directory with `mnist/` and `fashion-mnist/` test sets.
    pub data: &'a Path,
    /// The bundled models (the plain seed networks).
    pub models: &'a Path,
    /// The transform-trained models, with their `manifest.json`.
    pub transforms: &'a Path,
    /// The transform key the trained models were trained with (and the folds use).
    pub key: &'a Path,
    /// Encrypted images per model (the first test images).
    pub images: usize,
    /// Only the first N test images for the accuracies.
    pub limit: Option<usize>,
}

/// One row of the models table.
pub struct ModelRow {
    /// Dataset name.
    pub dataset: String,
    /// The transform (`none` for the plain model).
    pub scheme: String,
    /// How the model meets the transform.
    pub route: String,
    /// The model file.
    pub model: String,
    /// The other cells, in [`HEADER`] order after the first four.
    pub cells: Vec<String>,
}

/// The table's columns.
pub const HEADER: &[&str] = &[
    "dataset",
    "transform",
    "route",
    "model",
    "plaintext accuracy (float)",
    "compiled accuracy (simulated)",
    "plaintext ms / image",
    "bootstraps; est. server time",
    "encrypted s / image (2 cores)",
    "encrypted check",
];

/// A transform-trained model of the manifest.
struct Trained {
    file: String,
    kind: DatasetKind,
    transform: Transform,
}

fn trained_models(dir: &Path) -> Result<Vec<Trained>> {
    let path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let mut out = vec![];
    for m in v["models"].as_array().with_context(|| format!("{}: no models array", path.display()))? {
        let field = |k: &str| m[k].as_str().with_context(|| format!("{}: a model without {k}", path.display()));
        out.push(Trained {
            file: field("file")?.into(),
            kind: field("dataset")?.parse()?,
            transform: field("transform")?.parse()?,
        });
    }
    Ok(out)
}

/// Median milliseconds of one float inference (fhec's reference interpreter, one image at a
/// time) over the first images of `ds`.
fn plaintext_ms(g: &Graph, ds: &Dataset, pre: Preprocess) -> Result<f64> {
    let shape = image_input_shape(g, ds)?;
    let mut times: Vec<f64> = (0..ds.len().min(200))
        .map(|i| {
            let x = ds.input(i, pre, &shape);
            let t = Instant::now();
            interp::run(g, &[x]).map(|_| t.elapsed().as_secs_f64() * 1000.0)
        })
        .collect::<Result<_, _>>()?;
    Ok(median(&mut times))
}

fn cost_cell(art: &Artifact) -> String {
    let s = art.circuit.bootstrap_stats();
    let est = art.fhe.as_ref().map_or("no parameters".into(), |f| format!("{:.1} s one core", f.est_cost_ms / 1000.0));
    format!("{}; {est}", s.total())
}

fn fhe_cells(f: Option<&FheRun>, art: &Artifact, n: usize) -> [String; 2] {
    match f {
        None => ["not run".into(), "—".into()],
        Some(f) => [
            format!("{:.2}", f.evaluate_s),
            format!(
                "{}/{} {}, {}/{n} correct",
                f.agree,
                f.compared,
                if art.circuit.is_approximate() { "same class as sim." } else { "= sim." },
                f.correct
            ),
        ],
    }
}

fn simulated(acc: f64, draws: &[usize], n: usize) -> String {
    match (draws.iter().min(), draws.iter().max()) {
        (Some(lo), Some(hi)) if draws.len() > 1 => {
            format!("{} ({} draws, {} to {})", pct(acc, n), draws.len(), pct(*lo as f64, n), pct(*hi as f64, n))
        }
        _ => pct(acc, n),
    }
}

/// Every model compiled the same way: as `fhec demo` compiles the seed network (the model's
/// widths, tables of at most 6 bits read with approximate rounding, no fit), calibrated on
/// the bundled training sample of its dataset (transformed with the key for a trained model).
fn compile(path: &Path, kind: DatasetKind, key: Option<&Path>, fold: Option<Transform>) -> Result<Compiled> {
    let args = CompileOptions {
        calib_dataset: Some(kind),
        transform_key: key.map(Path::to_path_buf),
        fold_transform: fold,
        ..CompileOptions::seed_network(Rounding::Approximate)
    };
    compile_model_with(path, &args, &mut |_, _, _| {}, false)
        .with_context(|| format!("cannot compile {}", path.display()))
}

fn preprocess(g: &Graph) -> Result<Preprocess> {
    Ok(fhec_compiler::build::preprocess_of(g, None)?)
}

/// Every row: per dataset, the plain model, its folds, the trained models.
pub fn model_rows(run: &ModelRun) -> Result<Vec<ModelRow>> {
    let key = read_key(run.key)?;
    let trained = trained_models(run.transforms)?;
    let mut rows = vec![];
    for kind in [DatasetKind::Mnist, DatasetKind::FashionMnist] {
        let dataset = kind.dir_name().to_string();
        let mut ds = Dataset::load_test(run.data, kind)?;
        if let Some(n) = run.limit {
            ds.truncate(n);
        }
        let n = ds.len();
        let mut sample = ds.clone();
        sample.truncate(run.images);
        let stem = if kind == DatasetKind::Mnist { "mnist" } else { "fashion" };
        let plain_path: PathBuf = run.models.join(format!("seed_{stem}.onnx"));
        eprintln!("transforms: {} (plain, TFHE)", plain_path.display());
        let plain = compile(&plain_path, kind, None, None)?;
        let pre = preprocess(&plain.graph)?;
        let acc = measure_accuracy(&plain.graph, &plain.artifact, &ds, pre)?;
        let fhe =
            (run.images > 0).then(|| fhe_eval_with(&plain_path, &plain.artifact, &sample, kind, None)).transpose()?;
        let mut cells = vec![
            pct(acc.float as f64, n),
            simulated(acc.simulated, &acc.draws, n),
            format!("{:.2}", plaintext_ms(&plain.graph, &ds, pre)?),
            cost_cell(&plain.artifact),
        ];
        cells.extend(fhe_cells(fhe.as_ref(), &plain.artifact, sample.len()));
        rows.push(ModelRow {
            dataset: dataset.clone(),
            scheme: "none".into(),
            route: "TFHE".into(),
            model: file_name(&plain_path),
            cells,
        });
        for t in [Transform::Etc { block: 4 }, Transform::Skk] {
            eprintln!("transforms: {} with {t} folded", plain_path.display());
            let f = compile(&plain_path, kind, Some(run.key), Some(t))?;
            let moved = transform_set(&ds, t, &key)?;
            let sims = simulate_draws(&f.artifact, &moved)?;
            let same = f.artifact.circuit.bootstrap_stats() == plain.artifact.circuit.bootstrap_stats()
                && f.artifact.fhe.as_ref().map(|s| &s.params) == plain.artifact.fhe.as_ref().map(|s| &s.params);
            let fhe = (run.images > 0)
                .then(|| fhe_eval_with(&plain_path, &f.artifact, &sample, kind, Some(run.key)))
                .transpose()?;
            let mut cells = vec![
                format!("{} (the plain model's)", pct(acc.float as f64, n)),
                simulated(sims.mean_correct(), &sims.correct, n),
                "—".into(),
                format!(
                    "{}{}",
                    cost_cell(&f.artifact),
                    if same { " (= plain: same bootstraps and parameters)" } else { " (differs from plain!)" }
                ),
            ];
            cells.extend(fhe_cells(fhe.as_ref(), &f.artifact, sample.len()));
            rows.push(ModelRow {
                dataset: dataset.clone(),
                scheme: t.to_string(),
                route: "folded into the plain model, TFHE".into(),
                model: file_name(&plain_path),
                cells,
            });
        }
        for m in trained.iter().filter(|m| m.kind == kind) {
            let path = run.transforms.join(&m.file);
            eprintln!("transforms: {} (trained on {})", path.display(), m.transform);
            let c = compile(&path, kind, Some(run.key), None)?;
            if fhec_compiler::build::transform_of(&c.graph)? != Some(m.transform) {
                bail!("{}: its fhec.transform metadata is not the manifest's {}", path.display(), m.transform);
            }
            let pre = preprocess(&c.graph)?;
            let moved = transform_set(&ds, m.transform, &key)?;
            let Accuracy { float, simulated: sim, draws, .. } = measure_accuracy(&c.graph, &c.artifact, &moved, pre)?;
            let ms = plaintext_ms(&c.graph, &moved, pre)?;
            rows.push(ModelRow {
                dataset: dataset.clone(),
                scheme: m.transform.to_string(),
                route: "trained on it, plaintext (learnable image encryption)".into(),
                model: m.file.clone(),
                cells: vec![pct(float as f64, n), "—".into(), format!("{ms:.2}"), "0".into(), "—".into(), "—".into()],
            });
            let fhe = (run.images > 0)
                .then(|| fhe_eval_with(&path, &c.artifact, &sample, kind, Some(run.key)))
                .transpose()?;
            let mut cells = vec![pct(float as f64, n), simulated(sim, &draws, n), "—".into(), cost_cell(&c.artifact)];
            cells.extend(fhe_cells(fhe.as_ref(), &c.artifact, sample.len()));
            rows.push(ModelRow {
                dataset: dataset.clone(),
                scheme: m.transform.to_string(),
                route: "trained on it, TFHE".into(),
                model: m.file.clone(),
                cells,
            });
        }
    }
    Ok(rows)
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()
}
