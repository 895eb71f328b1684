//! Accuracy on image sets: the float model, and the exact simulation of a circuit with
//! approximate rounding's read noise sampled over several draws.

use anyhow::Result;
use fhec_ir::artifact::Artifact;
use fhec_ir::nn::interp;
use fhec_ir::{Graph, Preprocess};
use fhec_runtime::dataset::Dataset;
use fhec_runtime::sim;
use rayon::prelude::*;

use crate::model::image_input_shape;

/// How many independent samples of approximate rounding's read noise a simulated accuracy
/// averages (one draw moves the MNIST test-set accuracy by about 0.1 point).
pub const NOISE_DRAWS: u64 = 10;

/// The read-noise draws to simulate an artifact with: [`NOISE_DRAWS`] when it has
/// approximate rounding and parameters to sample the noise from, else one (deterministic).
pub fn noise_draws(art: &Artifact) -> u64 {
    if art.circuit.is_approximate() && art.fhe.is_some() { NOISE_DRAWS } else { 1 }
}

/// Simulated predictions of every image of a set. An image that drives a value outside the
/// circuit's calibrated ranges gets the class `usize::MAX` (an error) and is counted.
/// Approximate rounding's read noise is sampled from the artifact's parameters (its
/// `draw`-th sample; see [`sim::classify_noisy_draw`]).
pub fn simulate_set(art: &Artifact, ds: &Dataset, draw: u64) -> Result<(Vec<usize>, usize)> {
    let c = &art.circuit;
    let sigma = art.fhe.as_ref().map(|s| s.approx_round_sigma(c)).unwrap_or_default();
    let preds = (0..ds.len())
        .into_par_iter()
        .map(|i| match sim::classify_noisy_draw(c, ds.pixels(i), &sigma, draw) {
            Ok((p, _)) => Ok(p),
            Err(e) if e.out_of_range => Ok(usize::MAX),
            Err(e) => Err(e),
        })
        .collect::<Result<Vec<usize>, sim::SimError>>()?;
    let outside = preds.iter().filter(|&&p| p == usize::MAX).count();
    Ok((preds, outside))
}

/// Correct float predictions, correct simulated predictions and images outside the
/// calibrated ranges, over a whole test set.
pub struct Accuracy {
    /// Correct float predictions.
    pub float: usize,
    /// Correct simulated predictions, the mean over the read-noise draws.
    pub simulated: f64,
    /// Correct simulated predictions of each read-noise draw (one without approximate rounding).
    pub draws: Vec<usize>,
    /// Images outside the calibrated ranges (in the first draw).
    pub outside: usize,
}

impl Accuracy {
    /// How the simulated accuracy over `n` images was sampled, for approximate rounding: the
    /// number of draws and their range (`None` for a deterministic simulation).
    pub fn spread(&self, n: f64) -> Option<String> {
        let (lo, hi) = (self.draws.iter().min()?, self.draws.iter().max()?);
        (self.draws.len() > 1).then(|| {
            format!(
                "mean of {} read-noise draws, {:.2}% to {:.2}%",
                self.draws.len(),
                100.0 * *lo as f64 / n,
                100.0 * *hi as f64 / n
            )
        })
    }
}

/// A set simulated with each read-noise draw ([`noise_draws`]).
pub struct SimDraws {
    /// Correct predictions of each draw.
    pub correct: Vec<usize>,
    /// The first draw's predictions and images outside the calibrated ranges.
    pub preds: Vec<usize>,
    /// Images outside the calibrated ranges (first draw).
    pub outside: usize,
}

impl SimDraws {
    /// The mean number of correct predictions over the draws.
    pub fn mean_correct(&self) -> f64 {
        self.correct.iter().sum::<usize>() as f64 / self.correct.len() as f64
    }
}

/// Simulates a set with each read-noise draw ([`noise_draws`]).
pub fn simulate_draws(art: &Artifact, ds: &Dataset) -> Result<SimDraws> {
    let mut sims = SimDraws { correct: vec![], preds: vec![], outside: 0 };
    for draw in 0..noise_draws(art) {
        let (preds, outside) = simulate_set(art, ds, draw)?;
        sims.correct.push(preds.iter().zip(&ds.labels).filter(|(p, l)| **p == **l as usize).count());
        if draw == 0 {
            (sims.preds, sims.outside) = (preds, outside);
        }
    }
    Ok(sims)
}

/// Float and simulated accuracy of a model and its artifact over a set.
pub fn measure_accuracy(g: &Graph, art: &Artifact, ds: &Dataset, pre: Preprocess) -> Result<Accuracy> {
    let shape = image_input_shape(g, ds)?;
    let float = (0..ds.len())
        .into_par_iter()
        .map(|i| {
            let out = interp::run(g, &[ds.input(i, pre, &shape)])?;
            Ok((sim::argmax(&out[0].iter().map(|&v| v as f64).collect::<Vec<_>>()) == ds.labels[i] as usize) as usize)
        })
        .collect::<Result<Vec<usize>, interp::InterpError>>()?
        .into_iter()
        .sum::<usize>();
    let sims = simulate_draws(art, ds)?;
    Ok(Accuracy { float, simulated: sims.mean_correct(), draws: sims.correct, outside: sims.outside })
}

/// The widths an artifact was compiled at: input/weight/activation/table bits.
pub fn widths_of(art: &Artifact) -> String {
    ["input_bits", "weight_bits", "act_bits", "max_table_bits"]
        .iter()
        .map(|k| art.options.get(*k).map_or("?", |v| v.as_str()))
        .collect::<Vec<_>>()
        .join("/")
}
