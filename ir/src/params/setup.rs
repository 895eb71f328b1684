//! Chosen parameters and what they achieve.

use serde::{Deserialize, Serialize};

use super::{EncodingPlan, ResultKey, TfheParams, Variances, result_form, truncation_variance};

/// Chosen parameters and what they achieve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FheSetup {
    /// The parameters.
    pub params: TfheParams,
    /// How every value is encoded.
    pub plan: EncodingPlan,
    /// Bootstraps (and decryptions) per inference the target was split over.
    pub operations: usize,
    /// Largest failure probability of one bootstrap under these parameters.
    pub p_error: f64,
    /// Upper bound on the probability that one inference has a failure.
    pub global_p_error: f64,
    /// Estimated security (bits, weaker key).
    pub security_bits: f64,
    /// Estimated server time per inference on one core (ms).
    pub est_cost_ms: f64,
}

impl FheSetup {
    /// Per node, the standard deviation of an approximate rounding's read noise in units of
    /// its input (see [`Variances::approx_round_sigma`]); 0 for every other node. The
    /// simulator samples it to reproduce the off-by-one steps encrypted evaluation makes.
    ///
    /// With scores read to their top bits ([`crate::circuit::Circuit::output_bits`]), the
    /// output node's entry is the deviation of the decrypted scores in their own units: the
    /// linear chain's noise, plus the result's keyswitch and truncation
    /// ([`result_form`]).
    pub fn approx_round_sigma(&self, c: &crate::circuit::Circuit) -> Vec<f64> {
        let v = Variances::of(&self.params);
        let mut sigma: Vec<f64> = c
            .nodes
            .iter()
            .enumerate()
            .map(|(id, n)| match n.op {
                crate::circuit::COp::Round { shift, mode: crate::circuit::Rounding::Approximate } => {
                    let src = n.inputs[0];
                    v.approx_round_sigma(c.nodes[src].norm2, self.plan.bits[src], self.plan.bits[id], shift)
                }
                // An approximate max pooling's comparisons read x - m (m carries one more
                // bootstrap output), in units of x.
                crate::circuit::COp::MaxPool { shift: shift @ 1.., diff_width, .. } => {
                    let src = n.inputs[0];
                    v.approx_round_sigma(c.table_input_norm2(id), self.plan.bits[src], diff_width, shift)
                }
                _ => 0.0,
            })
            .collect();
        if c.output_bits.is_some() && c.output < sigma.len() {
            sigma[c.output] = self.output_sigma(c);
        }
        sigma
    }

    /// Deviation of a decrypted score from the simulated one, in units of the output value:
    /// the output's linear-chain noise, the result keyswitch's and the coefficient truncation
    /// of the form the server returns ([`result_form`]).
    pub fn output_sigma(&self, c: &crate::circuit::Circuit) -> f64 {
        let p = &self.params;
        let form = result_form(p, &self.plan, c);
        let norm2 = c.nodes[c.output].norm2;
        let mut var = norm2 * norm2 * p.var_pbs().max(p.var_fresh());
        var += match form.key {
            ResultKey::Glwe => 0.0,
            ResultKey::Input => p.var_result_ks(),
            ResultKey::Small => p.var_ks(),
        };
        if form.word_bits < 64
            && let Some(d) = form.dimension(p)
        {
            var += truncation_variance(d, form.word_bits);
        }
        let bits = self.plan.bits[c.output] as i32;
        var.sqrt() * (2.0f64).powi(bits + 1)
    }

    /// Expected fraction of an approximate rounding's reads that land one step off, for a
    /// value spread evenly over its steps: `E|e| / 2^shift` (0 without approximate rounding;
    /// the largest over the circuit's roundings).
    pub fn approx_step_rate(&self, c: &crate::circuit::Circuit) -> f64 {
        let sigma = self.approx_round_sigma(c);
        c.nodes
            .iter()
            .zip(&sigma)
            .filter_map(|(n, &s)| match n.op {
                crate::circuit::COp::Round { shift, mode: crate::circuit::Rounding::Approximate }
                | crate::circuit::COp::MaxPool { shift: shift @ 1.., .. } => {
                    Some((s * (2.0 / std::f64::consts::PI).sqrt() / (1u64 << shift) as f64).min(1.0))
                }
                _ => None,
            })
            .fold(0.0, f64::max)
    }
}
