//! The noise model: variances of bootstraps, keyswitches and modulus switches, and the
//! failure probability of a bootstrap read (formulas in the module doc of [`super`]).

use serde::{Deserialize, Serialize};

use super::TfheParams;

impl TfheParams {
    /// Variance the result keyswitch adds ([`TfheParams::result_ks`]; 0 without one).
    pub fn var_result_ks(&self) -> f64 {
        self.result_ks().map_or(0.0, |(b, l)| self.ks_variance(b, l))
    }

    /// Variance of a keyswitch of the `kN - d` tail coefficients onto the input key with
    /// base `2^base_log` and `level` levels.
    pub(super) fn ks_variance(&self, base_log: u32, level: u32) -> f64 {
        let tail = self.big_dimension().saturating_sub(self.input_dimension()) as f64;
        let (b, l) = ((base_log as f64).exp2(), level as f64);
        tail * (digit_square_sum(base_log, level) * self.input_noise_std().powi(2) + b.powf(-2.0 * l) / 24.0)
    }

    /// Output variance of one PBS.
    pub fn var_pbs(&self) -> f64 {
        let (n, k, big_n) = (self.lwe_dimension as f64, self.glwe_dimension as f64, self.polynomial_size as f64);
        let (b, l) = ((self.pbs_base_log as f64).exp2(), self.pbs_level as f64);
        let key = (k + 1.0) * big_n * digit_square_sum(self.pbs_base_log, self.pbs_level) * self.glwe_noise_std.powi(2);
        let decomp = b.powf(-2.0 * l) / 24.0 * (1.0 + k * big_n / 2.0);
        let fft = 0.00705
            * (2.0 * 11.0 + 2.0 * self.pbs_base_log as f64 - 128.0).exp2()
            * l
            * k.powf(1.22)
            * big_n.powf(2.22)
            * (k + 1.0);
        n * (key + decomp + fft)
    }

    /// Variance added by the keyswitch.
    pub fn var_ks(&self) -> f64 {
        let (b, l) = ((self.ks_base_log as f64).exp2(), self.ks_level as f64);
        let key = digit_square_sum(self.ks_base_log, self.ks_level) * self.lwe_noise_std.powi(2);
        self.big_dimension() as f64 * (key + b.powf(-2.0 * l) / 24.0)
    }

    /// Variance added by the modulus switch to `2N` ([`centered_ms_variance`]).
    pub fn var_ms(&self) -> f64 {
        centered_ms_variance(self.lwe_dimension, self.polynomial_size)
    }

    /// Variance of a fresh input encryption ([`TfheParams::input_noise_std`]).
    pub fn var_fresh(&self) -> f64 {
        self.input_noise_std().powi(2)
    }
}

/// Variance (torus) added by the runtime's centered modulus switch of an LWE ciphertext of
/// dimension `n` under a uniform binary key to `2N` (`2·big_n`) before a blind rotation:
/// `(n/48 + 1/12)/(2N)²`. Rounding each mask coefficient errs by `e_i`, uniform over a step
/// of `1/2N` (variance `1/12` step²), which adds `-Σ s_i·e_i` to the phase: `n/24` step² for
/// a plain switch, half of it the mean `Σ e_i/2`, which the server knows and removes
/// (`runtime::fhe::schedule::center_modulus_switch`, as tfhe-rs's centered switch); the
/// body's own rounding adds `1/12`.
pub fn centered_ms_variance(n: usize, big_n: usize) -> f64 {
    let two_n = 2.0 * big_n as f64;
    (n as f64 / 48.0 + 1.0 / 12.0) / (two_n * two_n)
}

/// `Σ E[d_j²]` over the `level` digits `d_j` of tfhe-rs's balanced signed decomposition in
/// base `B = 2^base_log` of a uniformly random value: what one coefficient decomposed for a
/// keyswitch or an external product multiplies the key's noise variance by.
///
/// tfhe-rs decomposes from the lowest level up, each digit in `[-B/2, B/2]` with the tie at
/// `B/2` broken by the next digit's top bit (eprint 2021/1161), which makes the digits of
/// the higher levels smaller on average than uniform ones: `E[d_0²] = (B² + 2)/12` (the
/// lowest level, uniform), `E[d_1²] = (B² - 1)/12`, and `E[d_j²] = L + (E[d_0²] - L)(-1/B)^j`
/// with `L = (B³ + B² - B + 2) / (12(B + 1))` (exact: an enumeration of every value of a few
/// levels gives these, and the runtime's keyswitch noise measures it, `fhe::test_support`).
/// It lies 11 to 13% below the paper's `level·(B² + 2)/12` in base 4 and 31 to 33% below
/// in base 2, the bases keyswitches use.
pub fn digit_square_sum(base_log: u32, level: u32) -> f64 {
    let b = (base_log as f64).exp2();
    let first = (b * b + 2.0) / 12.0;
    let limit = (b * b * b + b * b - b + 2.0) / (12.0 * (b + 1.0));
    let r = -1.0 / b;
    level as f64 * limit + (first - limit) * (1.0 - r.powi(level as i32)) / (1.0 - r)
}

/// `erfc(x)` with a relative error below about 1.2e-7 (Chebyshev fit of Numerical Recipes).
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.26551223
            + t * (1.00002368
                + t * (0.37409196
                    + t * (0.09678418
                        + t * (-0.18628806
                            + t * (0.27886807
                                + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
            .exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// `κ = √2·erfc⁻¹(p)`: the number of standard deviations a Gaussian stays within with
/// probability `1 - p`.
pub fn kappa(p: f64) -> f64 {
    let (mut lo, mut hi) = (0.0f64, 40.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if erfc(mid) > p { lo = mid } else { hi = mid }
    }
    std::f64::consts::SQRT_2 * 0.5 * (lo + hi)
}

/// Variance (torus) added by rounding every coefficient of an LWE ciphertext of dimension
/// `dim` under a binary key to its top `bits` bits (a modulus switch to `2^bits`): the
/// modulus-switch formula with `2N = 2^bits`.
pub fn truncation_variance(dim: usize, bits: u32) -> f64 {
    (dim as f64 / 24.0 + 1.0 / 12.0) * (-2.0 * bits as f64).exp2()
}

/// What one kind of bootstrap needs from the noise.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct NoiseRequirement {
    /// Bits of the encoding of the value read (`Δ = 2^(63-P)`).
    pub encoding_bits: u32,
    /// Bits the bootstrap reads (`w`; `k - 1` for both reads of a `k`-bit chunk of exact rounding,
    /// see `Circuit::round_chunks`).
    pub read_bits: u32,
    /// Squared 2-norm of the linear chain from bootstrapped (or fresh) sources.
    pub norm2_sq: f64,
    /// PBS outputs added to the value before this read (exact rounding steps).
    pub extra_pbs: u32,
    /// The `extra_pbs` outputs come from the rounding bootstrap ([`TfheParams::rounding_bootstrap`]).
    pub extra_from_rounding: bool,
    /// The read is a rounding bootstrap's (its modulus switch is to `2N_r`).
    pub rounding_read: bool,
    /// Number of such bootstraps per inference.
    pub count: usize,
    /// A decryption by the client rather than a bootstrap (no keyswitch or modulus switch).
    pub decryption: bool,
    /// A read of an approximate rounding ([`COp::Round`](crate::circuit::COp::Round) with
    /// `approx`): one step off is its semantics, so it fails only when the noise reaches a
    /// whole step (`2^(-w-1)`) instead of half of one.
    pub approx: bool,
}

/// The variances [`failure_probability`] combines, computed once per parameter set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Variances {
    /// A main bootstrap's output.
    pub pbs: f64,
    /// A fresh encryption.
    pub fresh: f64,
    /// A rounding bootstrap's output.
    pub round_pbs: f64,
    /// The keyswitch.
    pub ks: f64,
    /// The modulus switch before a main bootstrap.
    pub ms: f64,
    /// The modulus switch before a rounding bootstrap.
    pub round_ms: f64,
}

impl Variances {
    /// The variances of `p`.
    pub fn of(p: &TfheParams) -> Variances {
        let r = p.rounding_bootstrap();
        Variances {
            pbs: p.var_pbs(),
            fresh: p.var_fresh(),
            round_pbs: r.var_pbs(),
            ks: p.var_ks(),
            ms: p.var_ms(),
            round_ms: r.var_ms(),
        }
    }

    /// Failure probability of one bootstrap meeting `req` (see [`failure_probability`]).
    pub fn failure_probability(&self, req: &NoiseRequirement) -> f64 {
        let v_src = self.pbs.max(self.fresh);
        let v_extra = if req.extra_from_rounding { self.round_pbs } else { self.pbs };
        let v_in = req.norm2_sq * v_src + req.extra_pbs as f64 * v_extra;
        let scale = (2.0f64).powi(2 * (req.encoding_bits as i32 - req.read_bits as i32));
        let v_ms = if req.rounding_read { self.round_ms } else { self.ms };
        let var = scale * v_in + if req.decryption { 0.0 } else { self.ks + v_ms };
        let margin = (-(req.read_bits as f64) - if req.approx { 1.0 } else { 2.0 }).exp2();
        erfc(margin / (var.sqrt() * std::f64::consts::SQRT_2))
    }

    /// Standard deviation of the noise an approximate rounding's readers see, in units of
    /// the rounded value's input (`v` in `(v + e) >> shift`): the linear chain's noise moved
    /// to the read's encoding, plus the keyswitch and the modulus switch. `input_bits` is the
    /// encoding of the rounding's input, `out_bits` that of the rounding.
    pub fn approx_round_sigma(&self, norm2: f64, input_bits: u32, out_bits: u32, shift: u32) -> f64 {
        let p = out_bits + shift;
        let scale = (2.0f64).powi(2 * (input_bits as i32 - p as i32));
        let var = scale * norm2 * norm2 * self.pbs.max(self.fresh) + self.ks + self.ms;
        var.sqrt() * (2.0f64).powi(p as i32 + 1)
    }
}

/// Failure probability of one bootstrap meeting `req` with parameters `p`: the value read
/// carries its linear chain's noise (`norm2² · V_pbs`, or fresh noise) plus that of the
/// bootstrap outputs added to it (`extra_pbs`, main or rounding ones), scaled to the read's
/// encoding, plus the keyswitch and the modulus switch of the bootstrap that reads it.
pub fn failure_probability(p: &TfheParams, req: &NoiseRequirement) -> f64 {
    Variances::of(p).failure_probability(req)
}

#[cfg(test)]
mod tests {
    use super::digit_square_sum;

    /// Exact sums of `E[d_j²]` over levels, from an enumeration of every `l·b`-bit value
    /// decomposed as tfhe-rs does (`decompose_one_level`).
    #[test]
    fn digit_square_sums_match_the_enumeration() {
        let cases = [
            (1u32, 4u32, 0.5 + 0.25 + 0.375 + 0.3125),
            (2, 3, 1.5 + 1.25 + 1.3125),
            (2, 7, 1.5 + 1.25 + 1.3125 + 1.296875 + 1.30078125 + 1.2998046875 + 1.300048828125),
            (3, 2, 5.5 + 5.25),
            (4, 3, 21.5 + 21.25 + 21.265625),
            (4, 1, 21.5),
        ];
        for (b, l, want) in cases {
            let got = digit_square_sum(b, l);
            assert!((got - want).abs() < 1e-9 * want, "B=2^{b} l={l}: {got} != {want}");
        }
        assert_eq!(digit_square_sum(5, 0), 0.0);
    }
}
