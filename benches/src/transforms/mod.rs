//! `fhec-bench transforms`: how much of an image the keyed image transforms
//! (`fhec_ir::transform`: EtC, SKK, Tanaka) leave to an attacker, beside TFHE ciphertexts of
//! the same images as the control. For each dataset, scheme, attacker model and attack
//! ([`attacks`]): the SSIM and PSNR of the reconstructions against the originals
//! ([`quality`]), the share of the key's map recovered, and the top-1 accuracy of an
//! ordinary classifier trained on plain images (the bundled float `seed_*.onnx`) on the
//! reconstructions, beside its accuracy on the originals; a grid picture per dataset
//! ([`grid`]). Writes the `transforms` section of BENCHMARKS.md.

pub mod attacks;
pub mod grid;
pub mod models;
pub mod quality;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use fhec_compiler::ImportOptions;
use fhec_compiler::quantize::Rounding;
use fhec_driver::model::{load_model, preprocess_of};
use fhec_driver::{CompileOptions, compile_model};
use fhec_ir::transform::{Transform, TransformKey};
use fhec_ir::{Graph, Preprocess};
use fhec_runtime::app::Client;
use fhec_runtime::dataset::{Dataset, DatasetKind};
use fhec_runtime::fhe::SeededCtTensor;
use fhec_runtime::sim;
use rayon::prelude::*;

use self::attacks::{
    Histograms, JIGSAW_IMAGES, as_image, body_image, ciphertext_only_plan, etc_jigsaw_refine, feature, invert_with,
    known_plaintext_plan, plan_agreement,
};
use self::quality::{mse, psnr_of_mse, show_psnr, ssim};
use crate::common::{cpu_model, machine_line, save_section};

/// The key file the benchmark uses by default.
pub const DEFAULT_KEY: &str = "examples/models/transforms/demo.key";
/// Known plain/transformed pairs of the known-plaintext attacks.
pub const KNOWN_PAIRS: [usize; 2] = [1, 10];
/// Weight of the edge continuity against the statistics in [`etc_jigsaw_refine`] (fixed
/// beforehand, not tuned on the attacked images).
pub const JIGSAW_LAMBDA: f64 = 1.0;
/// Images (rows) of each grid picture.
pub const GRID_ROWS: usize = 6;
/// Upscaling of each grid cell.
pub const GRID_SCALE: usize = 3;

/// What `fhec-bench transforms` measures.
pub struct TransformsRun<'a> {
    /// Directory with `mnist/` and `fashion-mnist/` IDX test and training sets.
    pub data: &'a Path,
    /// The transform key file; `None`: [`DEFAULT_KEY`], or a fixed development key when
    /// that file does not exist (said in the section).
    pub key: Option<&'a Path>,
    /// Attacked test images per dataset (the first N).
    pub images: usize,
    /// The schemes attacked.
    pub schemes: &'a [Transform],
    /// Directory of the bundled models (the classifiers `seed_mnist.onnx`, `seed_fashion.onnx`).
    pub models: &'a Path,
    /// The model whose 128-bit parameters and input encoding encrypt the TFHE control.
    pub tfhe_model: &'a Path,
    /// Directory of the grid pictures.
    pub figures: &'a Path,
    /// Markdown file whose transforms section is (re)written.
    pub out: &'a Path,
    /// The models trained on transformed images, with their `manifest.json`.
    pub trained: &'a Path,
    /// Encrypted images per model in the models table (0: no encrypted runs).
    pub encrypted_images: usize,
    /// The models table's accuracies on the first N test images only (default: all).
    pub accuracy_limit: Option<usize>,
}

/// One measured row.
struct Row {
    dataset: &'static str,
    scheme: String,
    attacker: String,
    attack: String,
    ssim: f64,
    psnr: f64,
    plan: Option<f64>,
    accuracy: f64,
}

/// A second table of the section, filled by [`trained_model_table`].
pub struct ExtraTable {
    /// Its heading.
    pub title: String,
    /// Text under the heading.
    pub note: String,
    /// Column names.
    pub header: Vec<String>,
    /// Cells, row by row.
    pub rows: Vec<Vec<String>>,
}

/// The models table ([`models::model_rows`]): the plain seed network with TFHE, the same
/// network with EtC and SKK folded in, and the networks trained on each transform in
/// plaintext and with TFHE; `None` without the key file the trained models were trained
/// with (the development key of a run without `demo.key`).
pub fn trained_model_table(run: &TransformsRun<'_>, key_file: Option<&Path>) -> Result<Option<ExtraTable>> {
    let Some(key) = key_file else { return Ok(None) };
    let rows = models::model_rows(&models::ModelRun {
        data: run.data,
        models: run.models,
        transforms: run.trained,
        key,
        images: run.encrypted_images,
        limit: run.accuracy_limit,
    })?;
    let n = run
        .accuracy_limit
        .map_or("the full test sets (10,000 images each)".to_string(), |n| format!("the first {n} test images"));
    Ok(Some(ExtraTable {
        title: format!(
            "Accuracy and time per image of the three routes, per scheme and dataset, on {n}; encrypted runs on the first {} test images of each.",
            run.encrypted_images
        ),
        note: format!(
            "Every model is the seed network (`examples/models/seed_*.onnx`; trained on each transform: `{}`, `bash examples/train/train_transforms.sh`, key {}) compiled as `fhec demo` compiles it (the model's widths, tables of at most 6 bits read with approximate rounding, calibrated on the bundled training sample, transformed with the key for a trained model). *TFHE*: the server never sees the image nor the result. *Folded*: the plain model with the transform folded into its circuit (`fhec build --fold-transform`); the client sends transformed images, encrypted. *Trained on it, plaintext*: what learnable image encryption serves, at the speed of an ordinary model, with the leakage of the table above; its time is fhec's reference float interpreter, one image at a time (an optimised runtime is faster still). Simulated accuracies of approximate rounding are the mean over read-noise draws; an encrypted run is checked against the simulation of the same image (the same class under approximate rounding).",
            run.trained.display(),
            key.display()
        ),
        header: models::HEADER.iter().map(|h| h.to_string()).collect(),
        rows: rows
            .into_iter()
            .map(|r| {
                let mut cells = vec![r.dataset, r.scheme, r.route, format!("`{}`", r.model)];
                cells.extend(r.cells);
                cells
            })
            .collect(),
    }))
}

/// A float classifier trained on plain images.
struct Classifier {
    graph: Graph,
    pre: Preprocess,
    shape: Vec<usize>,
    file: String,
}

impl Classifier {
    fn load(path: &Path) -> Result<Classifier> {
        let graph = load_model(path, &ImportOptions::default())?;
        let pre = preprocess_of(path, &graph, None)?;
        let shape = graph.node(graph.inputs()[0]).shape.clone();
        let file = path.file_name().map_or_else(|| path.display().to_string(), |f| f.to_string_lossy().into());
        Ok(Classifier { graph, pre, shape, file })
    }

    /// Top-1 accuracy on `images` with `labels`.
    fn accuracy(&self, images: &[Vec<u8>], labels: &[u8]) -> Result<f64> {
        let correct = images
            .par_iter()
            .zip(labels)
            .map(|(img, &label)| {
                let v: Vec<f32> = img.iter().map(|&p| self.pre.apply(p)).collect();
                let x = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&self.shape), v)
                    .context("the classifier's input is not one image")?;
                let out = fhec_ir::nn::interp::run(&self.graph, &[x]).map_err(|e| anyhow::anyhow!("{}", e.0))?;
                let scores: Vec<f64> = out[0].iter().map(|&s| s as f64).collect();
                Ok((sim::argmax(&scores) == label as usize) as usize)
            })
            .collect::<Result<Vec<usize>>>()?;
        Ok(correct.iter().sum::<usize>() as f64 / images.len().max(1) as f64)
    }
}

/// The key, and how the section names it.
fn load_key(path: Option<&Path>) -> Result<(TransformKey, String)> {
    let default = Path::new(DEFAULT_KEY);
    match path {
        Some(p) => Ok((fhec_driver::transform::read_key(p)?, format!("`{}`", p.display()))),
        None if default.is_file() => Ok((fhec_driver::transform::read_key(default)?, format!("`{DEFAULT_KEY}`"))),
        None => {
            eprintln!("note: {DEFAULT_KEY} does not exist; using a fixed development key");
            let key = TransformKey::from_bytes(std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(11)));
            Ok((key, format!("a fixed development key (bytes `37·i + 11`; `{DEFAULT_KEY}` was absent)")))
        }
    }
}

/// The training set of `kind` under `data` (`DIR/train-images-idx3-ubyte[.gz]`, or in the
/// dataset's subdirectory).
fn load_train(data: &Path, kind: DatasetKind) -> Result<Dataset> {
    let find = |stem: &str| -> Option<PathBuf> {
        [data.to_path_buf(), data.join(kind.dir_name())]
            .into_iter()
            .flat_map(|d| [d.join(format!("{stem}.gz")), d.join(stem)])
            .find(|p| p.is_file())
    };
    match (find("train-images-idx3-ubyte"), find("train-labels-idx1-ubyte")) {
        (Some(i), Some(l)) => Ok(Dataset::load_files(&i, &l)?),
        _ => bail!("no {} training set (train-images-idx3-ubyte[.gz]) in {}", kind.dir_name(), data.display()),
    }
}

fn images_of(ds: &Dataset) -> Vec<Vec<u8>> {
    (0..ds.len()).map(|i| ds.pixels(i).to_vec()).collect()
}

/// One dataset's measurements and grid columns.
struct DatasetRun<'a> {
    name: &'static str,
    h: usize,
    w: usize,
    originals: &'a [Vec<u8>],
    labels: &'a [u8],
    classifier: &'a Classifier,
    rows: Vec<Row>,
    /// Grid columns: a short name and the first images.
    columns: Vec<(String, Vec<Vec<u8>>)>,
}

impl DatasetRun<'_> {
    /// Measures `recon` and keeps its first grid images under the column name `label`.
    fn add(
        &mut self,
        label: String,
        (scheme, attacker, attack): (&str, &str, &str),
        recon: &[Vec<u8>],
        plan: Option<f64>,
    ) -> Result<()> {
        let (h, w) = (self.h, self.w);
        let pairs: Vec<(f64, f64)> =
            recon.par_iter().zip(self.originals).map(|(r, o)| (ssim(r, o, h, w), mse(r, o))).collect();
        let n = pairs.len().max(1) as f64;
        let row = Row {
            dataset: self.name,
            scheme: scheme.into(),
            attacker: attacker.into(),
            attack: attack.into(),
            ssim: pairs.iter().map(|p| p.0).sum::<f64>() / n,
            psnr: psnr_of_mse(pairs.iter().map(|p| p.1).sum::<f64>() / n),
            plan,
            accuracy: self.classifier.accuracy(recon, self.labels)?,
        };
        eprintln!("  {}", show_row(&row));
        self.rows.push(row);
        self.columns.push((label, recon.iter().take(GRID_ROWS).cloned().collect()));
        Ok(())
    }
}

/// Encrypts images with a fresh client key of `part` and returns the top-8-bit images of
/// their LWE bodies.
fn tfhe_bodies(client: &Client, images: &[Vec<u8>]) -> Result<Vec<Vec<u8>>> {
    images
        .iter()
        .map(|img| {
            let bytes = client.encrypt(img)?;
            let ct = SeededCtTensor::from_bytes(&bytes, &client.spec().params)?;
            Ok(body_image(&ct.bodies))
        })
        .collect()
}

pub fn bench_transforms(run: &TransformsRun<'_>) -> Result<()> {
    let started = Instant::now();
    let machine = machine_line();
    let (key, key_name) = load_key(run.key)?;
    eprintln!("compiling {} for the TFHE control", run.tfhe_model.display());
    let (_, art) = compile_model(run.tfhe_model, &CompileOptions::seed_network(Rounding::Approximate))?;
    let setup = art.fhe.as_ref().context("the TFHE control's model has no 128-bit parameters")?;
    let tfhe_desc = format!(
        "{} compiled as `fhec demo` compiles it, {}-bit security, input {}",
        run.tfhe_model.file_name().map_or_else(String::new, |f| f.to_string_lossy().into()),
        setup.security_bits,
        art.circuit.input_shape().iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x"),
    );
    let part = art.client_part()?.to_bytes();
    let mut rows = vec![];
    let mut figures = vec![];
    let datasets = [
        ("mnist", DatasetKind::Mnist, "seed_mnist.onnx", "transforms-mnist.png"),
        ("fashion-mnist", DatasetKind::FashionMnist, "seed_fashion.onnx", "transforms-fashion.png"),
    ];
    let mut classifiers = vec![];
    for (name, kind, model, figure) in datasets {
        eprintln!("{name}: loading");
        let mut test = Dataset::load_test(run.data, kind)?;
        test.truncate(run.images);
        let train = load_train(run.data, kind)?;
        let (h, w) = (test.rows, test.cols);
        let originals = images_of(&test);
        let train_images = images_of(&train);
        let classifier = Classifier::load(&run.models.join(model))?;
        classifiers.push(format!("{} ({name})", classifier.file));
        let mut d = DatasetRun {
            name,
            h,
            w,
            originals: &originals,
            labels: &test.labels,
            classifier: &classifier,
            rows: vec![],
            columns: vec![],
        };
        d.add("original".into(), ("—", "—", "the original images"), &originals, None)?;
        let n = originals.len();
        for &t in run.schemes {
            eprintln!("{name}: {t}");
            let scheme = t.to_string();
            let truth = t.plan(&key, h, w)?;
            let transformed: Vec<Vec<u8>> =
                originals.iter().map(|p| t.apply_plan(&truth, p)).collect::<Result<_, _>>()?;
            let shown: Vec<Vec<u8>> = transformed.iter().map(|v| as_image(t, v)).collect();
            let as_is = match t {
                Transform::Tanaka { .. } => "none: the transformed image as is (output channel 0, 17·v)",
                _ => "none: the transformed image as is",
            };
            let shown_label = match t {
                Transform::Tanaka { .. } => format!("{t} transformed (channel 0, 17·v)"),
                _ => format!("{t} transformed"),
            };
            d.add(shown_label, (&scheme, "—", as_is), &shown, None)?;
            let feat: Vec<Vec<u8>> = transformed.iter().map(|v| feature(t, v, h, w)).collect();
            let what = (scheme.as_str(), "one transformed image, no key", "key-free feature reconstruction");
            d.add(format!("{t} key-free"), what, &feat, None)?;
            let public = Histograms::of_sources(t, train_images.iter().map(|v| v.as_slice()));
            let found = ciphertext_only_plan(t, h, w, &transformed, &public);
            let recon: Vec<Vec<u8>> = transformed.iter().map(|v| invert_with(t, &found, v)).collect();
            d.add(
                format!("{t} ciphertext-only"),
                (
                    &scheme,
                    &format!("ciphertext-only: the {n} transformed images + training-set statistics"),
                    "statistical key recovery (Hungarian), then inversion",
                ),
                &recon,
                Some(plan_agreement(&found, &truth)),
            )?;
            if let Transform::Etc { block } = t {
                let refined = etc_jigsaw_refine(block as usize, (h, w), &transformed, &public, &found, JIGSAW_LAMBDA);
                let recon: Vec<Vec<u8>> = transformed.iter().map(|v| invert_with(t, &refined, v)).collect();
                d.add(
                    format!("{t} ciphertext-only + jigsaw"),
                    (
                        &scheme,
                        &format!("ciphertext-only: the {n} transformed images + training-set statistics"),
                        "the same, then jigsaw refinement on tile edges, then inversion",
                    ),
                    &recon,
                    Some(plan_agreement(&refined, &truth)),
                )?;
            }
            for k in KNOWN_PAIRS {
                let pairs: Vec<(Vec<u8>, Vec<u8>)> = train_images[..k]
                    .iter()
                    .map(|p| Ok((p.clone(), t.apply_plan(&truth, p)?)))
                    .collect::<Result<_>>()?;
                let found = known_plaintext_plan(t, h, w, &pairs);
                let recon: Vec<Vec<u8>> = transformed.iter().map(|v| invert_with(t, &found, v)).collect();
                let s = if k == 1 { "" } else { "s" };
                d.add(
                    format!("{t} known-plaintext ({k} pair{s})"),
                    (&scheme, &format!("known-plaintext: {k} pair{s}"), "key recovery (Hungarian), then inversion"),
                    &recon,
                    Some(plan_agreement(&found, &truth)),
                )?;
            }
        }
        eprintln!("{name}: TFHE control (encrypting {n} images)");
        let client = Client::new(&part)?;
        let bodies = tfhe_bodies(&client, &originals)?;
        let tfhe = "TFHE";
        let what = (tfhe, "the ciphertexts", "none: top 8 bits of each LWE body as pixels");
        d.add("TFHE body bytes".into(), what, &bodies, None)?;
        let etc = run.schemes.iter().copied().find(|t| matches!(t, Transform::Etc { .. }));
        let mut attacked = vec![Transform::Skk];
        attacked.extend(etc);
        for t in attacked {
            let public = Histograms::of_sources(t, train_images.iter().map(|v| v.as_slice()));
            let found = ciphertext_only_plan(t, h, w, &bodies, &public);
            let recon: Vec<Vec<u8>> = bodies.iter().map(|v| invert_with(t, &found, v)).collect();
            d.add(
                format!("TFHE {t} ciphertext-only"),
                (
                    tfhe,
                    &format!("ciphertext-only: the {n} ciphertexts + training-set statistics"),
                    &format!("{t} statistical key recovery on the bodies"),
                ),
                &recon,
                None,
            )?;
        }
        if let Some(t) = etc {
            let k = KNOWN_PAIRS[KNOWN_PAIRS.len() - 1];
            let plain = &train_images[..k];
            let pairs: Vec<(Vec<u8>, Vec<u8>)> = plain.iter().cloned().zip(tfhe_bodies(&client, plain)?).collect();
            let found = known_plaintext_plan(t, h, w, &pairs);
            let recon: Vec<Vec<u8>> = bodies.iter().map(|v| invert_with(t, &found, v)).collect();
            d.add(
                format!("TFHE {t} known-plaintext ({k} pairs)"),
                (tfhe, &format!("known-plaintext: {k} pairs"), &format!("{t} key recovery on the bodies")),
                &recon,
                None,
            )?;
        }
        let path = run.figures.join(figure);
        let rows_of_grid: Vec<Vec<Vec<u8>>> =
            (0..GRID_ROWS.min(n)).map(|r| d.columns.iter().map(|c| c.1[r].clone()).collect()).collect();
        grid::write_grid(&path, &rows_of_grid, h, w, GRID_SCALE)?;
        eprintln!("wrote {}", path.display());
        figures.push((name, path, d.columns.iter().map(|c| c.0.clone()).collect::<Vec<_>>()));
        rows.extend(d.rows);
    }
    let key_file = match run.key {
        Some(k) => Some(k),
        None => Some(Path::new(DEFAULT_KEY)).filter(|p| p.is_file()),
    };
    let extra = trained_model_table(run, key_file)?;
    let body = section(
        run,
        &Section {
            rows: &rows,
            figures: &figures,
            key: &key_name,
            classifiers: &classifiers,
            tfhe: &tfhe_desc,
            machine: &machine,
            seconds: started.elapsed().as_secs_f64(),
            extra: extra.as_ref(),
        },
    );
    save_section(run.out, "# fhec benchmarks", "transforms", &body)?;
    println!("wrote {}", run.out.display());
    Ok(())
}

fn show_row(r: &Row) -> String {
    format!(
        "| {} | {} | {} | {} | {:.3} | {} | {} | {:.1}% |",
        r.dataset,
        r.scheme,
        r.attacker,
        r.attack,
        r.ssim,
        show_psnr(r.psnr),
        r.plan.map_or("—".into(), |p| format!("{:.1}%", 100.0 * p)),
        100.0 * r.accuracy
    )
}

/// What the section shows.
struct Section<'a> {
    rows: &'a [Row],
    figures: &'a [(&'static str, PathBuf, Vec<String>)],
    key: &'a str,
    classifiers: &'a [String],
    tfhe: &'a str,
    machine: &'a str,
    seconds: f64,
    extra: Option<&'a ExtraTable>,
}

/// A path as a link from the directory of `out`.
fn link(out: &Path, target: &Path) -> String {
    let base = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let t = target.strip_prefix(base).or_else(|_| target.strip_prefix("./")).unwrap_or(target);
    t.display().to_string()
}

fn section(run: &TransformsRun<'_>, s: &Section<'_>) -> String {
    let schemes: Vec<String> = run.schemes.iter().map(|t| format!("`{t}`")).collect();
    let mut out = format!(
        "## Attacks on the keyed image transforms (issue 27)\n\n\
Produced by `cargo bench-table transforms --data {data}` in {secs:.0} s: the first {n} test images of each \
dataset transformed with {key} by {schemes}, then attacked as in arXiv 2004.13263 \
(\"Attacks on Image Encryption Schemes for Privacy-Preserving Deep Neural Networks\") and its follow-ups \
(`benches/src/transforms/attacks.rs`). **These transforms are not encryption**; the control is the same \
images encrypted for real with TFHE ({tfhe}, a fresh client key per dataset), attacked where it makes sense. \
Attacker models: *ciphertext-only*: every transformed image (a server sees every query) and the public \
training set's histogram of every pixel (16 bins; of every 4-bit sub-pixel for Tanaka), never the attacked test images; *known-plaintext*: 1 or 10 \
training images with their transforms under the same key, then the {n} test images. Key recovery matches each \
output unit (EtC: a tile, with its 8 orientations and negation; Tanaka: a sub-pixel position of the tile, \
with its negation; SKK: a pixel's negation) to a source unit by the cost of the evidence (values wrong on \
the pairs; the chi-square distance between the histogram of each output value across the transformed images \
and the public histogram of the candidate source, reversed when negated), then a Hungarian assignment, then inverts the \
images; for EtC, the ciphertext-only plan is also refined as a jigsaw puzzle (*+ jigsaw*: local search swapping and \
turning tiles, on the statistical cost plus {JIGSAW_LAMBDA} x the mean absolute difference of the pixels across \
every tile edge over 255, on the first {JIGSAW_IMAGES} transformed images). *SSIM*: mean over images (Wang et al. 2004, 7x7 uniform window, K1 = 0.01, K2 = 0.03, L = 255, as \
scikit-image's default); *PSNR*: of the mean squared error over the images (inf: every image exact); \
*plan recovered*: share of output values whose source and negation are exactly the key's (a blank tile or \
sub-pixel the evidence cannot place counts as wrong even when swapping it changes no image); *accuracy*: top-1 of a \
float classifier trained on plain images ({classifiers}), on the reconstructions (on the originals in the \
first row of each dataset; about 10% is chance). CPU: {cpu}; machine at the start: {machine}.\n\n\
| dataset | scheme | attacker has | attack | SSIM | PSNR (dB) | plan recovered | classifier accuracy |\n\
| --- | --- | --- | --- | --- | --- | --- | --- |\n",
        data = run.data.display(),
        secs = s.seconds,
        n = run.images,
        key = s.key,
        schemes = schemes.join(", "),
        tfhe = s.tfhe,
        classifiers = s.classifiers.join(", "),
        cpu = cpu_model(),
        machine = s.machine,
    );
    for r in s.rows {
        out.push_str(&show_row(r));
        out.push('\n');
    }
    out.push('\n');
    for (name, path, columns) in s.figures {
        out.push_str(&format!(
            "{name}: ![{name} reconstructions]({}) rows: the first {GRID_ROWS} test images; columns, left to right: {} \
(each cell {GRID_SCALE}x, nearest neighbour).\n\n",
            link(run.out, path),
            columns.join("; ")
        ));
    }
    out.push_str("### Models trained on transformed images\n\n");
    match s.extra {
        Some(t) if !t.rows.is_empty() => {
            out.push_str(&format!(
                "{}\n\n{}\n\n| {} |\n|{}\n",
                t.title,
                t.note,
                t.header.join(" | "),
                " --- |".repeat(t.header.len())
            ));
            for r in &t.rows {
                out.push_str(&format!("| {} |\n", r.join(" | ")));
            }
            out.push('\n');
        }
        _ => out.push_str(
            "Not measured yet: the accuracy and time of models trained on transformed images and of folded models \
go here (`trained_model_table` in `benches/src/transforms/mod.rs`).\n\n",
        ),
    }
    out
}
