//! The exact integer simulator of a circuit: bit for bit what decryption returns when no
//! bootstrap fails (table lookups read exact integers, linear ops are exact, rounding is
//! an exact floor, max pooling is a chain of exact pairwise maxima), for every input whose
//! values stay in the ranges the circuit was compiled for. An input that leaves them is
//! reported ([`SimError::out_of_range`]): its encrypted result is unspecified.
//!
//! Approximate rounding ([`COp::Round`] with [`Rounding::Approximate`](crate::circuit::Rounding)) is the one place where encrypted
//! evaluation is not a function of the input: a read near a step boundary lands one step off
//! with a probability set by the bootstrap noise. [`simulate_all`] computes the noise-free
//! floor; [`simulate_all_noisy`] samples the noise (standard deviations from
//! [`crate::params::FheSetup::approx_round_sigma`]) with a generator seeded by the input, so
//! that accuracy measured in simulation is what encrypted evaluation gives on average and
//! stays reproducible.

use crate::circuit::eval::{EvalError, check_magnitude, eval_node};
use crate::circuit::{COp, Circuit, Rounding, ValueId, kernels};
use ndarray::{ArrayD, IxDyn};

/// A value left its range, or the circuit is malformed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("simulation of %{node} '{name}' ({op}): {message}")]
pub struct SimError {
    /// Node index.
    pub node: ValueId,
    /// Node name.
    pub name: String,
    /// Op name.
    pub op: &'static str,
    /// What went wrong.
    pub message: String,
    /// The input drove a value outside the range the circuit was compiled for (possible
    /// with calibrated ranges, for inputs unlike the calibration set); otherwise the
    /// circuit itself is wrong or corrupt.
    pub out_of_range: bool,
}

/// Client-side encoding of an image (8-bit pixels, row-major) into the circuit's input.
pub fn encode_image(c: &Circuit, pixels: &[u8]) -> ArrayD<i64> {
    let v: Vec<i64> = pixels.iter().map(|&p| c.input_quant.pixel_to_q[p as usize]).collect();
    ArrayD::from_shape_vec(IxDyn(c.input_shape()), v).expect("caller checked the pixel count")
}

/// Runs the circuit and returns every node's value (approximate rounding without noise: an
/// exact floor).
pub fn simulate_all(c: &Circuit, input: ArrayD<i64>) -> Result<Vec<ArrayD<i64>>, SimError> {
    simulate_all_noisy(c, input, &[], 0)
}

/// Runs the circuit with the read noise of approximate rounding sampled: `sigma[id]` is node
/// `id`'s noise deviation in units of its input (an empty slice: no noise), and `seed` seeds
/// the generator. A rounding read is `floor((v + 1/2 + e) / 2^shift)`, which is the runtime's
/// read with its boundaries half a unit off the multiples of `2^shift`; a read outside its
/// tables' steps (which would wrap around the torus) is reported as out of range.
pub fn simulate_all_noisy(
    c: &Circuit,
    input: ArrayD<i64>,
    sigma: &[f64],
    seed: u64,
) -> Result<Vec<ArrayD<i64>>, SimError> {
    let mut rng = SplitMix(seed);
    // The last step an approximate rounding's reads may land on: its tables' last entry.
    let mut top: Vec<i64> = vec![i64::MAX; c.nodes.len()];
    for n in &c.nodes {
        if let COp::Table { in_width, .. } = n.op
            && let Some(&i) = n.inputs.first()
        {
            top[i] = top[i].min((1i64 << in_width.min(62)) - 1);
        }
    }
    let mut vals: Vec<ArrayD<i64>> = Vec::with_capacity(c.nodes.len());
    for (id, n) in c.nodes.iter().enumerate() {
        let fail = |message: String, out_of_range: bool| SimError {
            node: id,
            name: n.name.clone(),
            op: n.op.name(),
            message,
            out_of_range,
        };
        let v = match &n.op {
            COp::Input { .. } => {
                if input.shape() != n.shape.as_slice() {
                    return Err(fail(format!("input shape {:?}, expected {:?}", input.shape(), n.shape), false));
                }
                input.clone()
            }
            COp::Round { shift, mode: Rounding::Approximate } => {
                // A read below step 0 or past the table's last entry wraps around the torus
                // (a negacyclic lookup): the result is garbage, reported like a table index
                // outside its table. The guard steps keep in-range values away from both.
                let x = &vals[n.inputs[0]];
                let last = if top[id] == i64::MAX { n.range.max + 1 } else { top[id] };
                let d = (1u64 << shift) as f64;
                let s = sigma.get(id).copied().unwrap_or(0.0);
                let mut out = ArrayD::<i64>::zeros(x.raw_dim());
                for (o, &v) in out.iter_mut().zip(x.iter()) {
                    let read =
                        if s > 0.0 { ((v as f64 + 0.5 + s * rng.gaussian()) / d).floor() as i64 } else { v >> shift };
                    if v < 0 || !(0..=last).contains(&read) {
                        return Err(fail(
                            format!("approximately rounds {v} to step {read}, outside the table's steps 0 to {last}"),
                            true,
                        ));
                    }
                    *o = read;
                }
                out
            }
            COp::MaxPool { pool, diff_offset, diff_width, shift: shift @ 1.. } => {
                // Approximate comparisons: each read, like an approximate rounding's, may land
                // one step off (boundaries half a unit below the multiples of 2^shift).
                let s = sigma.get(id).copied().unwrap_or(0.0);
                let d = (1u64 << shift) as f64;
                check_magnitude(n, &[&vals[n.inputs[0]]]).map_err(|e| fail(e.to_string(), true))?;
                kernels::approx_max_pool(vals[n.inputs[0]].view(), pool, *diff_offset, *diff_width, *shift, |v| {
                    if s > 0.0 { ((v as f64 + 0.5 + s * rng.gaussian()) / d).floor() as i64 } else { v >> shift }
                })
                .map_err(|e| fail(e.to_string(), true))?
            }
            _ => {
                let xs: Vec<&ArrayD<i64>> = n.inputs.iter().map(|&i| &vals[i]).collect();
                eval_node(n, &xs).map_err(|e| match e {
                    EvalError::OutOfRange(m) => fail(m, true),
                    EvalError::Invalid(m) => fail(m, false),
                })?
            }
        };
        // Scores read to their top bits: the decrypted value carries the chain's noise.
        let v = match sigma.get(id) {
            Some(&s) if s > 0.0 && id == c.output && c.output_bits.is_some() => {
                v.mapv(|x| x + (s * rng.gaussian()).round() as i64)
            }
            _ => v,
        };
        vals.push(v);
    }
    Ok(vals)
}

/// Runs the circuit and returns the output integers.
pub fn simulate(c: &Circuit, input: ArrayD<i64>) -> Result<ArrayD<i64>, SimError> {
    let mut all = simulate_all(c, input)?;
    Ok(all.swap_remove(c.output))
}

/// Checks that every value lies in its node's declared range.
pub fn check_ranges(c: &Circuit, values: &[ArrayD<i64>]) -> Result<(), SimError> {
    for (id, (n, v)) in c.nodes.iter().zip(values).enumerate() {
        if let Some(bad) = v.iter().find(|&&x| !n.range.contains(x)) {
            return Err(SimError {
                node: id,
                name: n.name.clone(),
                op: n.op.name(),
                message: format!("value {bad} outside the declared range [{}, {}]", n.range.min, n.range.max),
                out_of_range: true,
            });
        }
    }
    Ok(())
}

/// Scores (dequantized outputs) and the predicted class of an image.
pub fn classify(c: &Circuit, pixels: &[u8]) -> Result<(usize, Vec<f64>), SimError> {
    classify_noisy(c, pixels, &[])
}

/// [`classify`] with approximate rounding's read noise sampled (see [`simulate_all_noisy`]),
/// from a generator seeded by the pixels: the same image always gets the same draw.
pub fn classify_noisy(c: &Circuit, pixels: &[u8], sigma: &[f64]) -> Result<(usize, Vec<f64>), SimError> {
    classify_noisy_draw(c, pixels, sigma, 0)
}

/// [`classify_noisy`] with the `draw`-th independent sample of the read noise (draw 0 is
/// [`classify_noisy`]'s). Several draws per image show how much an accuracy measured with
/// sampled noise depends on the sample.
pub fn classify_noisy_draw(
    c: &Circuit,
    pixels: &[u8],
    sigma: &[f64],
    draw: u64,
) -> Result<(usize, Vec<f64>), SimError> {
    let hash = pixels.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    let seed = hash ^ draw.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut all = simulate_all_noisy(c, encode_image(c, pixels), sigma, seed)?;
    let out = all.swap_remove(c.output);
    let flat: Vec<i64> = out.iter().copied().collect();
    let scores = c.output_quant.scores(&flat);
    Ok((argmax(&scores), scores))
}

/// Index of the largest score (first on ties).
pub fn argmax(scores: &[f64]) -> usize {
    let mut best = 0;
    for (i, &s) in scores.iter().enumerate() {
        if s > scores[best] {
            best = i;
        }
    }
    best
}

/// A small deterministic generator (SplitMix64) for the simulator's noise draws.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform draw in (0, 1).
    fn uniform(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// A standard normal draw (Box-Muller).
    fn gaussian(&mut self) -> f64 {
        (-2.0 * self.uniform().ln()).sqrt() * (std::f64::consts::TAU * self.uniform()).cos()
    }
}
