//! How a client turns 8-bit pixels into the model's input values.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Pixel scaling expected by a model. Stored in a model's ONNX `metadata_props` under
/// [`Preprocess::METADATA_KEY`] and carried into compiled artifacts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Preprocess {
    /// `p / 255`, values in `[0, 1]`.
    Unit,
    /// `p`, values in `[0, 255]`.
    Raw255,
    /// `(p / 255 - 0.1307) / 0.3081`, the usual MNIST normalisation.
    MnistNorm,
}

impl Preprocess {
    /// Metadata key naming the preprocessing in an ONNX model or an artifact.
    pub const METADATA_KEY: &'static str = "fhec.preprocess";

    /// All variants, for help texts.
    pub const ALL: [Preprocess; 3] = [Preprocess::Unit, Preprocess::Raw255, Preprocess::MnistNorm];

    /// Maps one pixel.
    pub fn apply(self, p: u8) -> f32 {
        let p = p as f32;
        match self {
            Preprocess::Unit => p / 255.0,
            Preprocess::Raw255 => p,
            Preprocess::MnistNorm => (p / 255.0 - 0.1307) / 0.3081,
        }
    }

    /// The closed range of values [`Preprocess::apply`] produces.
    pub fn range(self) -> (f32, f32) {
        (self.apply(0), self.apply(255))
    }
}

impl fmt::Display for Preprocess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Preprocess::Unit => "unit",
            Preprocess::Raw255 => "raw255",
            Preprocess::MnistNorm => "mnist-norm",
        })
    }
}

/// A preprocessing name that is not `unit`, `raw255` or `mnist-norm`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown preprocessing '{0}' (expected unit, raw255 or mnist-norm)")]
pub struct UnknownPreprocess(pub String);

impl FromStr for Preprocess {
    type Err = UnknownPreprocess;
    fn from_str(s: &str) -> Result<Self, UnknownPreprocess> {
        match s {
            "unit" => Ok(Preprocess::Unit),
            "raw255" => Ok(Preprocess::Raw255),
            "mnist-norm" => Ok(Preprocess::MnistNorm),
            _ => Err(UnknownPreprocess(s.into())),
        }
    }
}
