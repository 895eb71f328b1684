//! The form in which a server returns results (key and coefficient width).

use serde::{Deserialize, Serialize};

use super::{EncodingPlan, TfheParams, erfc, truncation_variance};

/// Largest failure probability of decrypting one result value that the result's
/// form may cause (see [`ResultForm::decrypts_reliably`]).
pub const RESULT_TRUNCATION_FAILURE: f64 = 5.421010862427522e-20; // 2^-64

/// The key a result ciphertext is under when a server returns it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ResultKey {
    /// The big (GLWE) key, as evaluation leaves it: `kN + 1` coefficients.
    Glwe,
    /// The input key, the big key's `d`-coefficient prefix ([`TfheParams::result_ks`]):
    /// `d + 1` coefficients.
    Input,
    /// The small key (`n + 1` coefficients), by the bootstraps' keyswitch key, whose noise
    /// only outputs encoded on few bits survive.
    Small,
}

/// How a server returns the result ciphertexts (see `fhec_runtime::fhe::CompactCtTensor`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultForm {
    /// The key the ciphertexts are switched to.
    pub key: ResultKey,
    /// Bits kept per coefficient, its top ones (1 to 64; 64 keeps the words exact).
    pub word_bits: u32,
}

impl ResultForm {
    /// The LWE dimension of the result ciphertexts under `p`, `None` if `p` has no such key.
    pub fn dimension(&self, p: &TfheParams) -> Option<usize> {
        match self.key {
            ResultKey::Glwe => Some(p.big_dimension()),
            ResultKey::Input => p.result_ks().map(|_| p.input_dimension()),
            ResultKey::Small => Some(p.lwe_dimension),
        }
    }

    /// Bytes of the coefficients of `values` result ciphertexts under `p` (`word_bits` each,
    /// packed), `None` if `p` has no such key or on overflow.
    pub fn data_bytes(&self, p: &TfheParams, values: usize) -> Option<usize> {
        let bits = values.checked_mul(self.dimension(p)?.checked_add(1)?)?.checked_mul(self.word_bits as usize)?;
        Some(bits.div_ceil(8))
    }

    /// Whether decrypting every output value of `c` in this form fails with probability at
    /// most [`RESULT_TRUNCATION_FAILURE`] under `p`.
    ///
    /// The output of `c` is encoded on `P = plan.bits[output]` bits and carries the noise of
    /// its linear chain (`norm2² · V_pbs`, or fresh noise); a keyswitch adds its variance
    /// ([`TfheParams::var_result_ks`], [`TfheParams::var_ks`]), and rounding the coefficients
    /// to their top `b` bits adds [`truncation_variance`] of the form's dimension. 64 bits
    /// under the GLWE key are the words themselves, always accepted.
    pub fn decrypts_reliably(&self, p: &TfheParams, plan: &EncodingPlan, c: &crate::circuit::Circuit) -> bool {
        if self.key == ResultKey::Glwe && self.word_bits == 64 {
            return true;
        }
        let (Some(&bits), Some(dim)) = (plan.bits.get(c.output), self.dimension(p)) else { return false };
        if !(1..=64).contains(&self.word_bits) {
            return false;
        }
        let norm2 = c.nodes.get(c.output).map_or(f64::INFINITY, |n| n.norm2);
        let mut var = norm2 * norm2 * p.var_pbs().max(p.var_fresh());
        var += match self.key {
            ResultKey::Glwe => 0.0,
            ResultKey::Input => p.var_result_ks(),
            ResultKey::Small => p.var_ks(),
        };
        if self.word_bits < 64 {
            var += truncation_variance(dim, self.word_bits);
        }
        // Read exactly: half a unit of the encoding. Read to its top bits: a whole step of
        // them (one step off is part of the semantics, as for the bootstraps' approximate reads).
        let read = plan.output_read_bits(c);
        let half = if read < bits { (-(read as f64) - 1.0).exp2() } else { (-(bits as f64) - 2.0).exp2() };
        erfc(half / (var.sqrt() * std::f64::consts::SQRT_2)) <= RESULT_TRUNCATION_FAILURE
    }
}

/// The form in which a server returns the results of `c` under `p`: the fewest bytes among
/// those that [decrypt reliably](ResultForm::decrypts_reliably). Results are what a client
/// downloads, so this is the download size lever. For `seedq_mnist` (13-bit scores,
/// `N = 4096`, a 2048-coefficient input key) ten scores take 10 x 2049 coefficients of 21
/// bits under the input key instead of 10 x 4097 of 24 bits under the GLWE key; scores
/// encoded on few enough bits go to the small key (`n + 1` coefficients).
pub fn result_form(p: &TfheParams, plan: &EncodingPlan, c: &crate::circuit::Circuit) -> ResultForm {
    let values = c.nodes.get(c.output).map_or(1, |n| n.shape.iter().product::<usize>());
    [ResultKey::Glwe, ResultKey::Input, ResultKey::Small]
        .into_iter()
        .flat_map(|key| (1..=64).map(move |word_bits| ResultForm { key, word_bits }))
        .filter(|f| f.decrypts_reliably(p, plan, c))
        .filter_map(|f| Some((f.data_bytes(p, values)?, f)))
        .min_by_key(|&(bytes, _)| bytes)
        .map_or(ResultForm { key: ResultKey::Glwe, word_bits: 64 }, |(_, f)| f)
}
