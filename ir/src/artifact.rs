//! The compiled artifact: the only thing that crosses from the compiler to the runtime.
//!
//! File layout: the 8-byte magic `FHECART\0`, a little-endian `u32` format version, a
//! `u64` payload length, the bincode payload, and a `u64` FNV-1a checksum of the payload.
//! Loading checks all of them and a size limit, so a truncated, corrupt or foreign file is
//! an error naming what is wrong, never a panic.

use std::collections::BTreeMap;

use bincode::Options;
use serde::{Deserialize, Serialize};

use crate::circuit::{Circuit, verify::verify};

/// File magic.
pub const MAGIC: &[u8; 8] = b"FHECART\0";
/// Current format version.
pub const FORMAT_VERSION: u32 = 6;
/// Largest payload accepted (1 GiB).
pub const MAX_PAYLOAD: u64 = 1 << 30;

/// A compiled model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    /// fhec version that built it.
    pub fhec_version: String,
    /// Source model file name.
    pub source: String,
    /// Build options, as `name -> value` (for reports).
    pub options: BTreeMap<String, String>,
    /// The circuit.
    pub circuit: Circuit,
    /// TFHE parameters and encodings, when 128-bit parameters meeting the error target exist.
    pub fhe: Option<crate::params::FheSetup>,
}

/// Why an artifact could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// Not an fhec artifact at all.
    #[error("not an fhec artifact (bad magic bytes)")]
    Magic,
    /// Written by an incompatible fhec.
    #[error("artifact format version {found} is not supported (this fhec reads version {FORMAT_VERSION})")]
    Version {
        /// Version in the file.
        found: u32,
    },
    /// Truncated or oversized.
    #[error("artifact is truncated or malformed: {0}")]
    Size(String),
    /// The checksum does not match.
    #[error("artifact is corrupt (checksum mismatch)")]
    Checksum,
    /// The payload does not decode.
    #[error("artifact payload does not decode: {0}")]
    Decode(String),
    /// The circuit is inconsistent.
    #[error("artifact holds an invalid circuit: {0}")]
    Invalid(String),
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

fn codec() -> impl Options {
    bincode::DefaultOptions::new().with_varint_encoding().with_limit(MAX_PAYLOAD)
}

impl Artifact {
    /// Serializes the artifact.
    pub fn to_bytes(&self) -> Vec<u8> {
        let payload = codec().serialize(self).expect("an artifact always serializes");
        let mut out = Vec::with_capacity(payload.len() + 28);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(&payload);
        out.extend_from_slice(&fnv(&payload).to_le_bytes());
        out
    }

    /// Whether bytes start like an artifact (to tell artifacts from ONNX files).
    pub fn sniff(bytes: &[u8]) -> bool {
        bytes.starts_with(MAGIC)
    }

    /// Parses and validates an artifact.
    pub fn from_bytes(bytes: &[u8]) -> Result<Artifact, ArtifactError> {
        if !Self::sniff(bytes) {
            return Err(ArtifactError::Magic);
        }
        if bytes.len() < 20 {
            return Err(ArtifactError::Size(format!("{} bytes is shorter than the header", bytes.len())));
        }
        let found = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if found != FORMAT_VERSION {
            return Err(ArtifactError::Version { found });
        }
        let len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
        if len > MAX_PAYLOAD {
            return Err(ArtifactError::Size(format!("payload of {len} bytes exceeds the {MAX_PAYLOAD}-byte limit")));
        }
        let end = 20 + len as usize;
        if bytes.len() != end + 8 {
            return Err(ArtifactError::Size(format!(
                "header announces {len} payload bytes, file has {}",
                bytes.len().saturating_sub(28)
            )));
        }
        let payload = &bytes[20..end];
        if fnv(payload).to_le_bytes() != bytes[end..] {
            return Err(ArtifactError::Checksum);
        }
        let a: Artifact = codec().deserialize(payload).map_err(|e| ArtifactError::Decode(e.to_string()))?;
        verify(&a.circuit).map_err(|e| ArtifactError::Invalid(e.to_string()))?;
        if let Some(f) = &a.fhe {
            let plan =
                crate::params::EncodingPlan::plan(&a.circuit).map_err(|e| ArtifactError::Invalid(e.to_string()))?;
            if plan != f.plan || !f.params.is_secure() {
                return Err(ArtifactError::Invalid(
                    "its TFHE parameters do not match its circuit or are not secure".into(),
                ));
            }
        }
        Ok(a)
    }
}
