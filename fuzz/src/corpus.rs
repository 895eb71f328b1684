//! Writing the committed seed corpus (`fhec-fuzz corpus`): every target's seeds made in
//! code, as `seed-NN.bin` (so that campaigns start from fixed bytes even where the code
//! draws fresh keys), and for the artifact target the artifacts of a few bundled models
//! (`model-NAME.fhec`, compiled as `fhec build --no-fit` does). Files a campaign found
//! (`found-*`, from `run --save-new`) are kept.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use fhec_compiler::build::{BuildOptions, build};
use fhec_runtime::dataset::{DatasetKind, bundled_train_sample};

use crate::targets::{Target, repo_root};

/// Bundled models whose artifacts seed the artifact target (small circuits of each kind:
/// a plain CNN, the network made for encryption, the ONNX zoo export style).
const ARTIFACT_MODELS: [&str; 3] = ["cnn_mnist.onnx", "fhe_mnist.onnx", "zoo_mnist8.onnx"];

/// Largest committed seed.
pub const MAX_FILE: usize = 120_000;

/// Writes `target`'s seeds under `dir/NAME/`, replacing the previous `seed-*` and
/// `model-*` files; returns the files written.
pub fn write(target: &dyn Target, dir: &Path) -> Result<Vec<PathBuf>> {
    let out = dir.join(target.name());
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    for f in crate::engine::files_in(&out) {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with("seed-") || name.starts_with("model-") {
            std::fs::remove_file(&f)?;
        }
    }
    let mut files = vec![];
    let mut seen = std::collections::HashSet::new();
    let mut seeds: Vec<(String, Vec<u8>)> =
        target.seeds().into_iter().enumerate().map(|(i, b)| (format!("seed-{i:02}.bin"), b)).collect();
    if target.name() == "artifact" {
        seeds.extend(model_artifacts()?);
    }
    for (name, bytes) in seeds {
        if bytes.len() > MAX_FILE || !seen.insert(bytes.clone()) {
            continue;
        }
        let path = out.join(name);
        std::fs::write(&path, &bytes).with_context(|| format!("cannot write {}", path.display()))?;
        files.push(path);
    }
    Ok(files)
}

/// Artifacts of [`ARTIFACT_MODELS`], calibrated on 64 bundled training images.
fn model_artifacts() -> Result<Vec<(String, Vec<u8>)>> {
    let manifest = fhec_compiler::manifest::Manifest::parse(&std::fs::read_to_string(
        repo_root().join("examples/models/manifest.json"),
    )?)
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut out = vec![];
    for file in ARTIFACT_MODELS {
        let entry = manifest.models.iter().find(|m| m.file == file).context("model not in the manifest")?;
        let kind: DatasetKind = entry.dataset.parse()?;
        let ds = bundled_train_sample(kind);
        let calib: Vec<&[u8]> = (0..64).map(|i| ds.pixels(i)).collect();
        let bytes = std::fs::read(repo_root().join("examples/models").join(file))?;
        let opts = BuildOptions { preprocess: Some(entry.preprocess), ..BuildOptions::default() };
        let art = build(&bytes, file, &calib, &opts).with_context(|| format!("cannot build {file}"))?;
        let stem = file.trim_end_matches(".onnx");
        out.push((format!("model-{stem}.fhec"), art.to_bytes()));
    }
    Ok(out)
}
