//! The analyses of the circuit IR, each a function over a circuit with its own verifier.
//!
//! * [`range`]: interval arithmetic over the integer weights (every node's `range`);
//! * [`calibrate`]: the values the calibration images produce, and the narrowing of a
//!   table's input range to them plus a margin (calibrated declarations);
//! * [`noise`]: the noise 2-norm feeding every bootstrap (every node's `norm2`).
//!
//! The lowering (`crate::quantize`) runs the three transfer functions on every node it
//! emits, because what it emits next depends on them (a table's size on its input range,
//! that range on calibration); each module also recomputes its result from a finished
//! circuit and checks the circuit against it, which [`verify`] runs for all of them.

pub mod calibrate;
pub mod noise;
pub mod range;

use fhec_ir::circuit::Circuit;

/// One analysis, for listing and verifying them all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AnalysisKind {
    /// [`range`].
    Range,
    /// [`calibrate`].
    Calibrate,
    /// [`noise`].
    Noise,
}

impl AnalysisKind {
    /// Every analysis, in the order the lowering runs them on a node.
    pub const ALL: [AnalysisKind; 3] = [AnalysisKind::Range, AnalysisKind::Calibrate, AnalysisKind::Noise];

    /// Its name (its module).
    pub fn name(self) -> &'static str {
        match self {
            AnalysisKind::Range => "range",
            AnalysisKind::Calibrate => "calibrate",
            AnalysisKind::Noise => "noise",
        }
    }

    /// Runs the analysis' verifier on `c` (`images`: the calibration images `c` was
    /// compiled with; only [`calibrate`] reads them).
    pub fn verify(self, c: &Circuit, images: &[&[u8]]) -> Result<(), AnalysisError> {
        match self {
            AnalysisKind::Range => range::verify(c)?,
            AnalysisKind::Calibrate => calibrate::verify(c, images)?,
            AnalysisKind::Noise => noise::verify(c)?,
        }
        Ok(())
    }
}

/// An analysis' verifier rejected a circuit.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum AnalysisError {
    /// [`range::verify`].
    #[error("range analysis: {0}")]
    Range(#[from] range::RangeError),
    /// [`calibrate::verify`].
    #[error("calibration: {0}")]
    Calibrate(#[from] calibrate::CalibrateError),
    /// [`noise::verify`].
    #[error("noise analysis: {0}")]
    Noise(#[from] noise::NoiseError),
}

/// Runs every analysis' verifier on `c`.
pub fn verify(c: &Circuit, images: &[&[u8]]) -> Result<(), AnalysisError> {
    AnalysisKind::ALL.into_iter().try_for_each(|k| k.verify(c, images))
}
