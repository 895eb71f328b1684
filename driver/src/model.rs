//! Model files and the defaults they imply: reading and importing an ONNX file, the
//! `manifest.json` beside third-party models kept byte-exact, and what a model says (or its
//! manifest entry says) about its preprocessing, dataset, classes and image size.

use std::path::Path;

use anyhow::{Context, Result, bail};
use fhec_compiler::manifest::{Manifest, ManifestEntry};
use fhec_compiler::{ImportOptions, import_onnx};
use fhec_ir::{Graph, Preprocess};
use fhec_runtime::dataset::{Dataset, DatasetKind};

/// Reads a model file.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read model {}", path.display()))
}

/// Imports a model; a model with several outputs whose `manifest.json` entry names the
/// class scores gets that output unless one is given.
pub fn import(path: &Path, bytes: &[u8], options: &ImportOptions) -> Result<Graph> {
    let mut options = options.clone();
    if options.output.is_none() {
        options.output = manifest_entry(path)?.and_then(|m| m.output);
    }
    import_onnx(bytes, &options).with_context(|| format!("cannot import {}", path.display()))
}

/// Reads and imports a model file.
pub fn load_model(path: &Path, options: &ImportOptions) -> Result<Graph> {
    import(path, &read(path)?, options)
}

/// The entry of `model` in a `manifest.json` beside it, if there is one (how fhec knows the
/// preprocessing and dataset of third-party models that are kept byte-exact, without
/// metadata of their own). A `manifest.json` that is not an fhec models manifest (the name
/// is common) is ignored with a note on stderr, never an error.
pub fn manifest_entry(model: &Path) -> Result<Option<ManifestEntry>> {
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
pub fn preprocess_of(model: &Path, g: &Graph, flag: Option<Preprocess>) -> Result<Preprocess> {
    if flag.is_none()
        && !g.metadata.contains_key(Preprocess::METADATA_KEY)
        && let Some(m) = manifest_entry(model)?
    {
        return Ok(m.preprocess);
    }
    Ok(fhec_compiler::build::preprocess_of(g, flag)?)
}

/// input's last two dimensions.
pub fn image_size(g: &Graph) -> (usize, usize) {
    let s = &g.node(g.inputs()[0]).shape;
    let n: usize = s.iter().product();
    let side = (n as f64).sqrt().round() as usize;
    if side * side == n { (side, side) } else { (s[s.len().saturating_sub(2)], s[s.len() - 1]) }
}

/// The dataset a model classifies: the flag, else its `fhec.dataset` metadata, else its
/// entry in a `manifest.json` beside it.
pub fn dataset_of(model: &Path, g: &Graph, flag: Option<DatasetKind>) -> Result<Option<DatasetKind>> {
    if let Some(k) = flag {
        return Ok(Some(k));
    }
    if let Some(d) = g.metadata.get("fhec.dataset") {
        return Ok(Some(d.parse().context("model metadata fhec.dataset")?));
    }
    match manifest_entry(model)? {
        Some(m) => Ok(Some(m.dataset.parse().with_context(|| format!("manifest entry of {}", m.file))?)),
        None => Ok(None),
    }
}

/// The model input shape, checked against the dataset's image size.
pub fn image_input_shape(g: &Graph, ds: &Dataset) -> Result<Vec<usize>> {
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

/// The manifest of a models directory.
pub fn load_manifest(models: &Path) -> Result<Manifest> {
    let mpath = models.join("manifest.json");
    let text = std::fs::read_to_string(&mpath).with_context(|| format!("cannot read {}", mpath.display()))?;
    Manifest::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", mpath.display()))
}
