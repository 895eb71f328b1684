//! The models a service serves: each full artifact with what the API tells about it.

use std::path::Path;

use fhec_ir::artifact::{Artifact, ArtifactError};
use fhec_ir::client::ClientSpec;
use fhec_ir::wire::{encrypted_image_bytes, evaluation_key_bytes};

/// Why an artifact cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The file does not read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A client part, which holds no circuit.
    #[error(
        "{0} is a client part (no circuit); serve the model's full artifact (`fhec build` writes MODEL.fhec beside it)"
    )]
    ClientPart(String),
    /// Not an artifact, or one without TFHE parameters.
    #[error("{name}: {source}")]
    Artifact {
        /// The model.
        name: String,
        /// Why.
        source: ArtifactError,
    },
}

/// A served model.
pub struct Model {
    /// Its name in URLs (the artifact file's name without `.fhec`).
    pub name: String,
    /// The full artifact (circuit and weights: never sent).
    pub artifact: Vec<u8>,
    /// Its client part's bytes (what clients download).
    pub client_part: Vec<u8>,
    /// Its client part.
    pub spec: ClientSpec,
    /// Bootstraps of one classification (the total of a job's progress).
    pub bootstraps: usize,
    /// Bytes of its evaluation key as a client sends it (seeded form).
    pub key_bytes: usize,
    /// Bytes of one encrypted image as a client sends it (seeded form).
    pub image_bytes: usize,
    /// Bytes of the evaluation key once expanded in memory.
    pub loaded_key_bytes: usize,
}

impl Model {
    /// A model named `name` from its full artifact's bytes (it must have TFHE parameters).
    pub fn from_bytes(name: &str, artifact: Vec<u8>) -> Result<Model, ModelError> {
        if ClientSpec::sniff(&artifact) {
            return Err(ModelError::ClientPart(name.into()));
        }
        let err = |source| ModelError::Artifact { name: name.into(), source };
        let art = Artifact::from_bytes(&artifact).map_err(err)?;
        let spec = art.client_part().map_err(err)?;
        let (bsk, ksk) = spec.params.key_bytes();
        Ok(Model {
            name: name.into(),
            client_part: spec.to_bytes(),
            bootstraps: art.circuit.bootstrap_stats().total(),
            key_bytes: evaluation_key_bytes(&spec.params),
            image_bytes: encrypted_image_bytes(&spec.input.shape),
            loaded_key_bytes: bsk + ksk,
            spec,
            artifact,
        })
    }

    /// A model from an artifact file, named after the file (`models/seedq.fhec` is `seedq`).
    pub fn load(path: &Path) -> Result<Model, ModelError> {
        let bytes =
            std::fs::read(path).map_err(|source| ModelError::Read { path: path.display().to_string(), source })?;
        let file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let name = file.strip_suffix(".fhec").unwrap_or(&file);
        Model::from_bytes(name, bytes)
    }

    /// The parameters in one line.
    pub fn params_summary(&self) -> String {
        self.spec.params.summary()
    }
}
