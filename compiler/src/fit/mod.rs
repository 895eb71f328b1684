//! Automatic fitting: the compile choices of least estimated server time whose accuracy stays
//! within a budget of the float model's.
//!
//! What `fhec build` does by default. The search space is every width the model and the
//! command line leave free: the weight bits of each linear layer, the width each table reads
//! and the bits it outputs, how wide accumulators are rounded (approximately, or exactly
//! with rounding bootstraps), the range margin; the TFHE parameters are chosen for each
//! candidate by [`crate::params::select_rounding`], whose estimate of the server time is the
//! cost. Accuracy is the simulated top-1 on validation images that are not the calibration
//! images (with approximate reads, the mean over read-noise draws sampled from the
//! candidate's parameters); without labels, agreement with the float model's predictions.
//!
//! The cost of a TFHE circuit is one parameter set for all its bootstraps, set by the
//! hardest read: a table reading `r` bits of a value whose noise 2-norm is `ν` (the 2-norm of
//! the integer weights before it) needs noise below a step of `r` bits, so `r + log2 ν`
//! prices a layer. Layers with few inputs or small weights can therefore read more bits, or
//! keep more weight bits, at no cost: mixed precision per layer is free accuracy. The
//! search:
//! 1. **uniform grid**: every (weight bits, table bits) pair with the other widths high,
//!    costed (compile + parameter search, no simulation); then simulated in order of cost,
//!    skipping pairs no wider than one that already failed, until one meets the budget;
//! 2. **fill**: each layer's widths are raised one at a time while the estimated cost does
//!    not grow;
//! 3. **descend**: each layer whose narrowing makes the circuit cheaper is narrowed in turn
//!    (then filled again), keeping the cheapest narrowing that still meets the budget, until
//!    none does;
//! 4. **margin**: the range margin of the chosen widths, for the best accuracy at no cost.
//!
//! A candidate meets the budget when its validation accuracy, less a guard of
//! [`GUARD_SE`] standard errors of the measured loss, is within the budget of the float
//! model's: validation images are few, and a loss measured on them is noisy.
//!
//! Every candidate is kept in the [`FitReport`] with its widths, bootstraps, estimated time
//! and accuracy. The search is deterministic: candidates are visited in a fixed order and the
//! noise draws are seeded by the image, the draw number and [`FitOptions::seed`].

mod candidate;
mod report;
mod search;

use std::collections::{BTreeMap, HashMap};

use fhec_ir::circuit::{COp, Circuit};
use fhec_ir::nn::{Graph, interp};
use fhec_ir::params::FheSetup;
use fhec_ir::{Preprocess, sim};
use rayon::prelude::*;
use serde::Serialize;

use crate::params::{ParamError, ParamOptions, select_rounding};
use crate::quantize::{Calibration, LayerWidths, QuantError, QuantOptions, Rounding, calibration_inputs, quantize};

use candidate::*;
use report::nothing_fits;
pub use report::{Candidate, FitError, FitReport, Fitted, describe, layer_widths, limiting_layer};
use search::Search;
pub use search::fit;

/// What the search minimises.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum Objective {
    /// The least estimated server time within the accuracy budget.
    #[default]
    Time,
    /// The best validation accuracy within the time limit.
    Accuracy,
}

/// An objective that is not `time` or `accuracy`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown objective '{0}' (expected time or accuracy)")]
pub struct UnknownObjective(pub String);

impl std::str::FromStr for Objective {
    type Err = UnknownObjective;
    fn from_str(s: &str) -> Result<Self, UnknownObjective> {
        match s {
            "time" => Ok(Objective::Time),
            "accuracy" => Ok(Objective::Accuracy),
            _ => Err(UnknownObjective(s.into())),
        }
    }
}

impl std::fmt::Display for Objective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Objective::Time => "time",
            Objective::Accuracy => "accuracy",
        })
    }
}

/// Which widths the search must keep as the base options give them (a flag or the model's
/// metadata named them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Fixed {
    /// `input_bits`.
    pub input_bits: bool,
    /// `weight_bits` (of every layer).
    pub weight_bits: bool,
    /// `act_bits` (of every table).
    pub act_bits: bool,
    /// `max_table_bits` (of every table).
    pub table_bits: bool,
    /// The rounding.
    pub rounding: bool,
    /// The range margin.
    pub range_margin: bool,
}

/// Options of the search.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FitOptions {
    /// Largest loss of top-1 accuracy allowed against the float model, in points.
    pub accuracy_budget: f64,
    /// Largest estimated server time per image on one core, in seconds.
    pub max_server_time: Option<f64>,
    /// What is minimised.
    pub objective: Objective,
    /// Seeds the read-noise draws.
    pub seed: u64,
    /// Read-noise draws per validation image for circuits with approximate reads.
    pub draws: u64,
    /// Widths the search keeps.
    pub fixed: Fixed,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            accuracy_budget: 0.5,
            max_server_time: None,
            objective: Objective::Time,
            seed: 0,
            draws: 2,
            fixed: Fixed::default(),
        }
    }
}

/// The images of a fit: calibration (ranges) and validation (accuracy), disjoint.
#[derive(Clone, Copy, Debug)]
pub struct FitData<'a> {
    /// Calibration images (8-bit pixels of the model's input size).
    pub calibration: &'a [&'a [u8]],
    /// Validation images.
    pub validation: &'a [&'a [u8]],
    /// Labels of the validation images; `None`: the float model's predictions stand in.
    pub labels: Option<&'a [u8]>,
}

/// Standard errors of the measured accuracy loss kept as a guard against validation noise:
/// a candidate meets the budget when `validation accuracy - GUARD_SE · SE` does, with `SE =
/// sqrt(d) / n` for `d` validation images (of `n`) whose class differs from the float
/// model's. On 1,000 images a 2% disagreement costs 0.22 points of the budget.
pub const GUARD_SE: f64 = 0.5;
