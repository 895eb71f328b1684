//! Keyed image transforms on the session's side: reading a client's key file, and turning
//! a set of images into what a model trained on transformed images takes
//! ([`Transform::model_input`]), for its calibration, validation and accuracy runs. The key
//! is read and used, never written anywhere.

use std::path::Path;

use anyhow::{Context, Result, bail};
use fhec_compiler::params::ParamOptions;
use fhec_ir::artifact::Artifact;
use fhec_ir::transform::{Transform, TransformKey};
use fhec_runtime::dataset::Dataset;
use ndarray::Array2;

/// Reads a transform key file (`fhec transform-key` writes one), naming the file in errors.
pub fn read_key(path: &Path) -> Result<TransformKey> {
    let bytes = crate::files::read(path, "transform key")?;
    TransformKey::from_file_bytes(&bytes).with_context(|| format!("cannot load the transform key {}", path.display()))
}

/// The key of a model that names `transform`: the file `key` names, or an error saying how
/// to give one. `what` names the model, artifact or client part.
pub fn key_for(what: &Path, transform: Transform, key: Option<&Path>) -> Result<TransformKey> {
    match key {
        Some(path) => read_key(path),
        None => bail!("{}", missing_key(&what.display().to_string(), transform)),
    }
}

/// The message for a model that names a transform when no key file is given.
pub fn missing_key(what: &str, transform: Transform) -> String {
    format!(
        "{what} takes images through the keyed transform {transform} (its {} metadata): give the key file the model was trained with, --transform-key FILE (`fhec transform-key -o FILE` makes a new one; the key is only read, never written into an artifact)",
        Transform::METADATA_KEY
    )
}

/// `ds` as a model trained on `transform` takes it: every image transformed under `key`
/// ([`Transform::model_input`]), `channels x rows` high (Tanaka's two channels stacked) so
/// that `rows * cols` stays the model's input size. The labels are kept.
pub fn transform_set(ds: &Dataset, transform: Transform, key: &TransformKey) -> Result<Dataset> {
    let plan = transform
        .plan(key, ds.rows, ds.cols)
        .with_context(|| format!("cannot apply the transform {transform} to {}x{} images", ds.rows, ds.cols))?;
    let [channels, rows, cols] = plan.shape;
    let mut values = Vec::with_capacity(ds.len() * channels * rows * cols);
    for i in 0..ds.len() {
        values.extend(transform.model_input(&plan, ds.pixels(i))?);
    }
    let pixels = Array2::from_shape_vec((ds.len(), channels * rows * cols), values).context("transformed set")?;
    Ok(Dataset { pixels, rows: channels * rows, cols, labels: ds.labels.clone() })
}

/// `ds` for a model that names `transform` (if any), with the key file `key`: the set
/// transformed ([`transform_set`]), or unchanged for a model without transform. A model
/// with a transform and no key file is an error naming both ([`missing_key`]).
pub fn for_model(what: &Path, transform: Option<Transform>, key: Option<&Path>, ds: Dataset) -> Result<Dataset> {
    match transform {
        None => Ok(ds),
        Some(t) => transform_set(&ds, t, &key_for(what, t, key)?),
    }
}

/// `art` (compiled from a model trained on plain images) taking images transformed by `t`
/// under `key`: the transform folded into its circuit ([`fhec_compiler::fold`]), parameters
/// chosen again.
pub fn fold(art: &Artifact, t: Transform, key: &TransformKey, params: &ParamOptions) -> Result<Artifact> {
    let shape = art.circuit.input_shape();
    let (h, w) = t.image_size(shape)?;
    let plan = t.plan(key, h, w)?;
    Ok(fhec_compiler::fold::fold_artifact(art, t, &plan, params)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_keeps_its_labels_and_stacks_tanaka_channels() {
        let ds = Dataset {
            pixels: Array2::from_shape_fn((3, 16), |(i, j)| (i * 16 + j) as u8),
            rows: 4,
            cols: 4,
            labels: vec![1, 2, 3],
        };
        let key = TransformKey::from_bytes([7; 32]);
        let t = Transform::Tanaka { block: 2 };
        let out = transform_set(&ds, t, &key).unwrap();
        assert_eq!((out.rows, out.cols, out.len()), (8, 4, 3));
        assert_eq!(out.labels, ds.labels);
        let plan = t.plan(&key, 4, 4).unwrap();
        assert_eq!(out.pixels(1), t.model_input(&plan, ds.pixels(1)).unwrap());
        let e = for_model(Path::new("m.onnx"), Some(t), None, ds.clone()).unwrap_err().to_string();
        assert!(
            e.contains("m.onnx takes images through the keyed transform tanaka:2") && e.contains("--transform-key"),
            "{e}"
        );
        let e = transform_set(&ds, Transform::Etc { block: 3 }, &key).unwrap_err();
        assert!(format!("{e:#}").contains("multiples of the block size 3"), "{e:#}");
    }
}
