//! The manifest of bundled models (`examples/models/manifest.json`): which dataset each
//! model classifies and how its input is scaled.

use fhec_ir::Preprocess;
use serde::Deserialize;

/// One bundled model.
#[derive(Clone, Debug, Deserialize)]
pub struct ManifestEntry {
    /// File name in the models directory.
    pub file: String,
    /// `mnist` or `fashion-mnist`.
    pub dataset: String,
    /// Input scaling.
    #[serde(deserialize_with = "de_pre")]
    pub preprocess: Preprocess,
    /// The output holding the class scores, for a model with several outputs.
    #[serde(default)]
    pub output: Option<String>,
    /// The label of each output index, for a model trained on some classes only (the two
    /// digits of a binary classifier).
    #[serde(default)]
    pub classes: Option<Vec<u8>>,
}

/// The manifest.
#[derive(Clone, Debug, Deserialize)]
pub struct Manifest {
    /// The models, in report order.
    pub models: Vec<ManifestEntry>,
}

fn de_pre<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Preprocess, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

/// A manifest that is not valid JSON of the expected form.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid model manifest: {0}")]
pub struct ManifestError(pub String);

impl Manifest {
    /// Parses the JSON text of a manifest.
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        serde_json::from_str(text).map_err(|e| ManifestError(e.to_string()))
    }
}
