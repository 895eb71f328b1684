//! The compiled artifact: the only thing that crosses from the compiler to the runtime.
//!
//! File layout: the shared framing ([`crate::framing`]) with the 8-byte magic `FHECART\0`:
//! a little-endian `u32` format version, a `u64` payload length, the bincode payload, and a
//! `u64` FNV-1a checksum of the payload. Loading checks all of them and a size limit, so a
//! truncated, corrupt or foreign file is an error naming what is wrong, never a panic.
//!
//! Format 8: a circuit's `fhec.transform` metadata (the keyed image transform the model
//! takes, scheme only) is binding and checked on load ([`Artifact::transform`]).
//!
//! [`Artifact::parametrized`] gives the circuit with its TFHE parameters
//! ([`ParametrizedCircuit`]), what the runtime's keys and evaluation take.

use std::collections::BTreeMap;

use bincode::Options;
use serde::{Deserialize, Serialize};

use crate::circuit::{Circuit, verify::verify};
use crate::framing::{Format, FramingError};
use crate::params::{EncodingPlan, FheSetup, TfheParams};

/// File magic.
pub const MAGIC: &[u8; 8] = b"FHECART\0";
/// Current format version.
pub const FORMAT_VERSION: u32 = 8;
/// Largest payload accepted (1 GiB).
pub const MAX_PAYLOAD: u64 = 1 << 30;
/// The artifact's framing.
pub const FORMAT: Format =
    Format { magic: *MAGIC, name: "an fhec artifact", version: FORMAT_VERSION, max_payload: MAX_PAYLOAD };

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
    /// The artifact was compiled without TFHE parameters.
    #[error("the artifact has no TFHE parameters ({reason})")]
    NoParameters {
        /// Why, as the build recorded it (its `fhe` option), or "none chosen".
        reason: String,
    },
}

impl From<FramingError> for ArtifactError {
    fn from(e: FramingError) -> ArtifactError {
        match e {
            FramingError::WrongKind { .. } => ArtifactError::Magic,
            FramingError::Version { found, .. } => ArtifactError::Version { found },
            FramingError::Checksum => ArtifactError::Checksum,
            e @ (FramingError::Truncated { .. } | FramingError::TooLarge { .. }) => ArtifactError::Size(e.to_string()),
        }
    }
}

fn codec() -> impl Options {
    bincode::DefaultOptions::new().with_varint_encoding().with_limit(MAX_PAYLOAD)
}

impl Artifact {
    /// Serializes the artifact.
    pub fn to_bytes(&self) -> Vec<u8> {
        FORMAT.frame(&codec().serialize(self).expect("an artifact always serializes"))
    }

    /// Whether bytes start like an artifact (to tell artifacts from ONNX files).
    pub fn sniff(bytes: &[u8]) -> bool {
        FORMAT.sniff(bytes)
    }

    /// Parses and validates an artifact.
    pub fn from_bytes(bytes: &[u8]) -> Result<Artifact, ArtifactError> {
        let payload = FORMAT.unframe(bytes)?;
        let a: Artifact = codec().deserialize(payload).map_err(|e| ArtifactError::Decode(e.to_string()))?;
        verify(&a.circuit).map_err(|e| ArtifactError::Invalid(e.to_string()))?;
        a.transform()?;
        if let Some(f) = &a.fhe {
            if let Some(m) = f.params.shape_error() {
                return Err(ArtifactError::Invalid(format!("its TFHE parameters are impossible: {m}")));
            }
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

    /// The keyed image transform the model takes its input through (the circuit's
    /// `fhec.transform` metadata, checked against its input shape), if it names one. The
    /// artifact holds the scheme only, never a key.
    pub fn transform(&self) -> Result<Option<crate::transform::Transform>, ArtifactError> {
        crate::transform::Transform::of_metadata(&self.circuit.metadata, self.circuit.input_shape())
            .map_err(|e| ArtifactError::Invalid(e.to_string()))
    }

    /// The circuit with its TFHE parameters, or why there are none
    /// ([`ArtifactError::NoParameters`], with the reason the build recorded).
    pub fn parametrized(&self) -> Result<ParametrizedCircuit<'_>, ArtifactError> {
        let Some(setup) = &self.fhe else {
            let reason = self.options.get("fhe").cloned().unwrap_or_else(|| "none chosen".into());
            return Err(ArtifactError::NoParameters { reason });
        };
        ParametrizedCircuit::new(&self.circuit, setup)
    }
}

/// A circuit with the TFHE parameters and the encoding plan it runs under: what keys,
/// encryption and encrypted evaluation need. Built only when the plan is the circuit's
/// (one encoding per node, as [`EncodingPlan::plan`] computes it).
#[derive(Clone, Copy, Debug)]
pub struct ParametrizedCircuit<'a> {
    circuit: &'a Circuit,
    params: &'a TfheParams,
    plan: &'a EncodingPlan,
}

impl<'a> ParametrizedCircuit<'a> {
    /// `circuit` under the parameters and plan of `setup`.
    pub fn new(circuit: &'a Circuit, setup: &'a FheSetup) -> Result<ParametrizedCircuit<'a>, ArtifactError> {
        Self::with_params(circuit, &setup.params, &setup.plan)
    }

    /// `circuit` under `params` and `plan` (parameters chosen apart from a setup, as tests
    /// do); fails if `plan` is not the circuit's encoding plan.
    pub fn with_params(
        circuit: &'a Circuit,
        params: &'a TfheParams,
        plan: &'a EncodingPlan,
    ) -> Result<ParametrizedCircuit<'a>, ArtifactError> {
        let want = EncodingPlan::plan(circuit).map_err(|e| ArtifactError::Invalid(e.to_string()))?;
        if want != *plan {
            return Err(ArtifactError::Invalid("the encoding plan is not the circuit's".into()));
        }
        Ok(ParametrizedCircuit { circuit, params, plan })
    }

    /// The circuit.
    pub fn circuit(&self) -> &'a Circuit {
        self.circuit
    }

    /// The TFHE parameters.
    pub fn params(&self) -> &'a TfheParams {
        self.params
    }

    /// The encoding of every node.
    pub fn plan(&self) -> &'a EncodingPlan {
        self.plan
    }

    /// Encoding bits of the circuit's input.
    pub fn input_bits(&self) -> u32 {
        self.plan.bits[0]
    }
}
