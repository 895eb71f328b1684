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
    /// most [`RESULT_TRUNCATION_FAILURE`] under `p` (see [`ResultForm::decrypts_reliably_for`];
    /// false when `c` has no such output or `plan` no encoding for it).
    pub fn decrypts_reliably(&self, p: &TfheParams, plan: &EncodingPlan, c: &crate::circuit::Circuit) -> bool {
        if self.key == ResultKey::Glwe && self.word_bits == 64 {
            return true;
        }
        OutputEncoding::of(plan, c).is_some_and(|o| self.decrypts_reliably_for(p, &o))
    }

    /// Whether decrypting every value of an output encoded as `out` in this form fails with
    /// probability at most [`RESULT_TRUNCATION_FAILURE`] under `p`.
    ///
    /// The output is encoded on `P = out.bits` bits and carries the noise of its linear chain
    /// (`norm2² · V_pbs`, or fresh noise); a keyswitch adds its variance
    /// ([`TfheParams::var_result_ks`], [`TfheParams::var_ks`]), and rounding the coefficients
    /// to their top `b` bits adds [`truncation_variance`] of the form's dimension. 64 bits
    /// under the GLWE key are the words themselves, always accepted.
    pub fn decrypts_reliably_for(&self, p: &TfheParams, out: &OutputEncoding) -> bool {
        if self.key == ResultKey::Glwe && self.word_bits == 64 {
            return true;
        }
        let Some(dim) = self.dimension(p) else { return false };
        if !(1..=64).contains(&self.word_bits) {
            return false;
        }
        let bits = out.bits;
        let mut var = out.norm2 * out.norm2 * p.var_pbs().max(p.var_fresh());
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
        let read = out.read_bits;
        let half = if read < bits { (-(read as f64) - 1.0).exp2() } else { (-(bits as f64) - 2.0).exp2() };
        erfc(half / (var.sqrt() * std::f64::consts::SQRT_2)) <= RESULT_TRUNCATION_FAILURE
    }
}

/// How a circuit's output is encoded, all that decrypting it and judging a result's form
/// need ([`ResultForm::decrypts_reliably_for`], [`result_form_for`]): what a client part
/// (`crate::client::ClientSpec`) carries instead of the circuit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutputEncoding {
    /// The output's shape.
    pub shape: Vec<usize>,
    /// Bits of its encoding (`Δ = 2^(63 - bits)`).
    pub bits: u32,
    /// Bits the client reads ([`EncodingPlan::output_read_bits`]).
    pub read_bits: u32,
    /// Noise 2-norm of the linear chain ending at the output.
    pub norm2: f64,
}

impl OutputEncoding {
    /// The encoding of `c`'s output under `plan`, `None` if either lacks the output node.
    pub fn of(plan: &EncodingPlan, c: &crate::circuit::Circuit) -> Option<OutputEncoding> {
        let node = c.nodes.get(c.output)?;
        let bits = *plan.bits.get(c.output)?;
        Some(OutputEncoding { shape: node.shape.clone(), bits, read_bits: plan.output_read_bits(c), norm2: node.norm2 })
    }

    /// Number of output values (`None` on overflow).
    pub fn values(&self) -> Option<usize> {
        self.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
    }
}

/// The form in which a server returns the results of `c` under `p`: the fewest bytes among
/// those that [decrypt reliably](ResultForm::decrypts_reliably). Results are what a client
/// downloads, so this is the download size lever. For `seedq_mnist` (13-bit scores,
/// `N = 4096`, a 2048-coefficient input key) ten scores take 10 x 2049 coefficients of 21
/// bits under the input key instead of 10 x 4097 of 24 bits under the GLWE key; scores
/// encoded on few enough bits go to the small key (`n + 1` coefficients).
pub fn result_form(p: &TfheParams, plan: &EncodingPlan, c: &crate::circuit::Circuit) -> ResultForm {
    match OutputEncoding::of(plan, c) {
        Some(out) => result_form_for(p, &out),
        None => ResultForm { key: ResultKey::Glwe, word_bits: 64 },
    }
}

/// [`result_form`] of an output encoded as `out`.
pub fn result_form_for(p: &TfheParams, out: &OutputEncoding) -> ResultForm {
    let values = out.values().unwrap_or(usize::MAX);
    [ResultKey::Glwe, ResultKey::Input, ResultKey::Small]
        .into_iter()
        .flat_map(|key| (1..=64).map(move |word_bits| ResultForm { key, word_bits }))
        .filter(|f| f.decrypts_reliably_for(p, out))
        .filter_map(|f| Some((f.data_bytes(p, values)?, f)))
        .min_by_key(|&(bytes, _)| bytes)
        .map_or(ResultForm { key: ResultKey::Glwe, word_bits: 64 }, |(_, f)| f)
}
