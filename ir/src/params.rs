//! TFHE parameters, the noise model that sizes them, and the encoding plan of a circuit.
//!
//! Variances are in torus units (the ciphertext modulus `q = 2^64` is 1). Formulas follow
//! Bergerat et al., "Parameter Optimization & Larger Precision for (T)FHE" (J. Cryptology
//! 2023, eprint 2022/704), for binary secret keys and Gaussian noise:
//! * security: a key of dimension `d` needs `log2(σ) >= -0.025696778711484593·d + 2.675931372549016`
//!   (Concrete's 128-bit fit for a 64-bit modulus), and `σ >= 2^-62`;
//! * one CMux of the blind rotation adds `l(k+1)N(B²+2)/12·σ_bsk² + B^-2l/24·(1 + kN/2)`
//!   plus the 64-bit FFT error `0.00705·2^(2·(64-53) + 2·log2 B - 128)·l·k^1.22·N^2.22·(k+1)`;
//!   a PBS is `n` CMuxes;
//! * the keyswitch from dimension `kN` to `n` adds `kN·(l·(B²+2)/12·σ_ksk² + B^-2l/24)`;
//! * the modulus switch to `2N` adds `(n/24 + 1/12)/(2N)²`.
//!
//! A bootstrap reading `w` bits (plus the padding bit) from a value encoded with
//! `Δ = 2^(63-P)` is correct with probability `1 - p` when
//! `2^(2(P-w))·V_in + V_KS + V_MS <= (2^(-w-2)/κ)²`, `κ = √2·erfc⁻¹(p)`.

use serde::{Deserialize, Serialize};

/// One TFHE parameter set: the small LWE key (dimension `n`) used by bootstrapping, and
/// the GLWE key (`k` polynomials of size `N`) whose flattening (dimension `kN`) encrypts
/// every value between bootstraps.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TfheParams {
    /// `n`, dimension of the small LWE key.
    pub lwe_dimension: usize,
    /// `k`.
    pub glwe_dimension: usize,
    /// `N`.
    pub polynomial_size: usize,
    /// Noise std (torus) of the keyswitch key, under the small key.
    pub lwe_noise_std: f64,
    /// Noise std (torus) of the bootstrap key and of fresh encryptions, under the GLWE key.
    pub glwe_noise_std: f64,
    /// Bootstrap key decomposition base (log2).
    pub pbs_base_log: u32,
    /// Bootstrap key decomposition levels.
    pub pbs_level: u32,
    /// Keyswitch key decomposition base (log2).
    pub ks_base_log: u32,
    /// Keyswitch key decomposition levels.
    pub ks_level: u32,
    /// A second, smaller bootstrap for exact rounding's reads (`None`: they use the main one).
    pub round_key: Option<RoundKeyParams>,
}

/// The rounding bootstrap: its own GLWE key of `k_r` polynomials of size `N_r` whose
/// flattening is the first `k_r·N_r` coefficients of the main flattened GLWE key. It reads
/// the small-key ciphertexts the main keyswitch makes (the same small key `n`), and its
/// outputs, LWE ciphertexts of dimension `k_r·N_r`, are main-key ciphertexts once their mask
/// is padded with zeros: no second keyswitch. Exact rounding's reads are narrow (at most one
/// chunk) and its outputs need less precision than a table's that feed a wide dot product,
/// so a far cheaper bootstrap serves them.
///
/// Security: the shared prefix gets its own 128-bit noise (`glwe_noise_std` on the curve at
/// dimension `k_r·N_r`); the main key keeps its noise on the rest.
///
/// With `pbs_level == 0` there is no rounding bootstrap key: only the prefix, as the key
/// inputs are encrypted under and results are switched to (a circuit without exact
/// rounding, whose first tables' keyswitches and whose download shrink with it).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundKeyParams {
    /// `k_r`.
    pub glwe_dimension: usize,
    /// `N_r`.
    pub polynomial_size: usize,
    /// Noise std (torus) of the rounding bootstrap key.
    pub glwe_noise_std: f64,
    /// Its decomposition base (log2).
    pub pbs_base_log: u32,
    /// Its decomposition levels.
    pub pbs_level: u32,
}

const SEC_A: f64 = -0.025696778711484593;
const SEC_B: f64 = 2.675931372549016;

/// Smallest Gaussian std (torus) giving 128-bit security at dimension `d`.
pub fn min_secure_std(d: usize) -> f64 {
    (SEC_A * d as f64 + SEC_B).max(-62.0).exp2()
}

/// Whether `std` at dimension `d` meets the 128-bit curve.
pub fn is_secure(d: usize, std: f64) -> bool {
    d >= 450 && std.log2() >= (SEC_A * d as f64 + SEC_B).max(-62.0) - 1e-9
}

/// Rough security estimate: 128 bits scaled by how far the dimension exceeds the minimal
/// one for this noise on the 128-bit curve (LWE hardness grows about linearly in `d`).
pub fn estimated_security_bits(d: usize, std: f64) -> f64 {
    let d_min = (std.log2().max(-62.0) - SEC_B) / SEC_A;
    128.0 * d as f64 / d_min.max(1.0)
}

impl TfheParams {
    /// The shape of the parameters on one line: `n=760 k=1 N=2048 PBS 2x2^16 KS 8x2^2`, and
    /// the rounding bootstrap's when there is one (`; rounding k=4 N=512 PBS 2x2^15`).
    pub fn summary(&self) -> String {
        let round = self.round_key.map_or(String::new(), |r| {
            if r.pbs_level == 0 {
                return format!("; input key k={} N={}", r.glwe_dimension, r.polynomial_size);
            }
            format!(
                "; rounding k={} N={} PBS {}x2^{}",
                r.glwe_dimension, r.polynomial_size, r.pbs_level, r.pbs_base_log
            )
        });
        format!(
            "n={} k={} N={} PBS {}x2^{} KS {}x2^{}{round}",
            self.lwe_dimension,
            self.glwe_dimension,
            self.polynomial_size,
            self.pbs_level,
            self.pbs_base_log,
            self.ks_level,
            self.ks_base_log
        )
    }

    /// The bootstrap exact rounding's reads use, as a parameter set of its own (the main one
    /// without a rounding key): the same `n` and keyswitch, its own GLWE key and
    /// decomposition. Its `var_pbs`, `var_ms` and `pbs_cost` are the rounding bootstrap's.
    pub fn rounding_bootstrap(&self) -> TfheParams {
        match self.round_key {
            None => *self,
            Some(r) => TfheParams {
                glwe_dimension: r.glwe_dimension,
                polynomial_size: r.polynomial_size,
                glwe_noise_std: r.glwe_noise_std,
                pbs_base_log: r.pbs_base_log,
                pbs_level: r.pbs_level,
                round_key: None,
                ..*self
            },
        }
    }

    /// Whether a rounding bootstrap key exists (a rounding key that is not only an input
    /// prefix, see [`RoundKeyParams`]).
    pub fn has_rounding_bsk(&self) -> bool {
        self.round_key.is_some_and(|r| r.pbs_level > 0)
    }

    /// The rounding bootstrap key's parameters ([`TfheParams::rounding_bootstrap`]) when
    /// there is one, `None` when rounding reads use the main bootstrap or the rounding key
    /// is only an input prefix: callers need not know the `pbs_level == 0` convention.
    pub fn rounding_bsk(&self) -> Option<TfheParams> {
        self.has_rounding_bsk().then(|| self.rounding_bootstrap())
    }

    /// `kN`, dimension of the flattened GLWE key.
    pub fn big_dimension(&self) -> usize {
        self.glwe_dimension * self.polynomial_size
    }

    /// Dimension of the key fresh inputs are encrypted under: with a rounding key, its
    /// `k_r·N_r` prefix of the big key (the ciphertexts are padded with zeros to the big
    /// dimension, and keyswitches skip the zero tail), else the big key.
    pub fn input_dimension(&self) -> usize {
        self.rounding_bootstrap().big_dimension()
    }

    /// Levels of the result keyswitch key ([`TfheParams::result_ks`]).
    pub const RESULT_KS_LEVEL: u32 = 2;

    /// Decomposition (base log, levels) of the result keyswitch key, which moves a result
    /// ciphertext from the big key to the input key (its [`TfheParams::input_dimension`]
    /// prefix) so that the client downloads `d + 1` coefficients per value instead of
    /// `kN + 1`; `None` when the input key is the big key. Only the `kN - d` tail
    /// coefficients are switched; the key's rows are encryptions under the input key with
    /// its noise ([`TfheParams::input_noise_std`]), so it needs no noise or security of its
    /// own. [`TfheParams::RESULT_KS_LEVEL`] levels, the base that minimises
    /// [`TfheParams::var_result_ks`].
    pub fn result_ks(&self) -> Option<(u32, u32)> {
        if self.input_dimension() >= self.big_dimension() {
            return None;
        }
        let l = Self::RESULT_KS_LEVEL;
        let base = (1..=64 / l).min_by(|&a, &b| self.ks_variance(a, l).total_cmp(&self.ks_variance(b, l))).unwrap_or(1);
        Some((base, l))
    }

    /// Variance the result keyswitch adds ([`TfheParams::result_ks`]; 0 without one).
    pub fn var_result_ks(&self) -> f64 {
        self.result_ks().map_or(0.0, |(b, l)| self.ks_variance(b, l))
    }

    /// Variance of a keyswitch of the `kN - d` tail coefficients onto the input key with
    /// base `2^base_log` and `level` levels.
    fn ks_variance(&self, base_log: u32, level: u32) -> f64 {
        let tail = self.big_dimension().saturating_sub(self.input_dimension()) as f64;
        let (b, l) = ((base_log as f64).exp2(), level as f64);
        tail * (l * (b * b + 2.0) / 12.0 * self.input_noise_std().powi(2) + b.powf(-2.0 * l) / 24.0)
    }

    /// Noise std of fresh input encryptions (the 128-bit noise of [`TfheParams::input_dimension`]).
    pub fn input_noise_std(&self) -> f64 {
        self.rounding_bootstrap().glwe_noise_std
    }

    /// Every key meets the 128-bit curve (and a rounding key is a proper prefix-sized
    /// GLWE key of the main one).
    pub fn is_secure(&self) -> bool {
        let r = self.rounding_bootstrap();
        is_secure(self.lwe_dimension, self.lwe_noise_std)
            && is_secure(self.big_dimension(), self.glwe_noise_std)
            && r.big_dimension() <= self.big_dimension()
            && is_secure(r.big_dimension(), r.glwe_noise_std)
    }

    /// Security estimate of the weakest key, in bits.
    pub fn security_bits(&self) -> f64 {
        let r = self.rounding_bootstrap();
        estimated_security_bits(self.lwe_dimension, self.lwe_noise_std)
            .min(estimated_security_bits(self.big_dimension(), self.glwe_noise_std))
            .min(estimated_security_bits(r.big_dimension(), r.glwe_noise_std))
    }

    /// Output variance of one PBS.
    pub fn var_pbs(&self) -> f64 {
        let (n, k, big_n) = (self.lwe_dimension as f64, self.glwe_dimension as f64, self.polynomial_size as f64);
        let (b, l) = ((self.pbs_base_log as f64).exp2(), self.pbs_level as f64);
        let key = l * (k + 1.0) * big_n * (b * b + 2.0) / 12.0 * self.glwe_noise_std.powi(2);
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
        self.big_dimension() as f64 * (l * (b * b + 2.0) / 12.0 * self.lwe_noise_std.powi(2) + b.powf(-2.0 * l) / 24.0)
    }

    /// Variance added by the modulus switch to `2N`.
    pub fn var_ms(&self) -> f64 {
        let two_n = 2.0 * self.polynomial_size as f64;
        (self.lwe_dimension as f64 / 24.0 + 1.0 / 12.0) / (two_n * two_n)
    }

    /// Variance of a fresh input encryption ([`TfheParams::input_noise_std`]).
    pub fn var_fresh(&self) -> f64 {
        self.input_noise_std().powi(2)
    }

    /// Estimated cost of one keyswitch + PBS, in milliseconds on one core of the development
    /// machine (see [`TfheParams::pbs_cost`] and [`TfheParams::ks_cost`]).
    pub fn cost(&self) -> f64 {
        self.pbs_cost() + self.ks_cost()
    }

    /// The bootstrap's part of [`TfheParams::cost`], as the runtime does it (batched blind
    /// rotations, 16 per pass over the bootstrap key): `n` CMuxes, each `(k+1)·ℓ` forward
    /// FFTs of size `N`, `(k+1)²·ℓ` products with the key, and `k+1` inverse FFTs with the
    /// rotation. Coefficients fitted on eleven measured sets (n=700..890, k=1..4,
    /// N=512..8192, 1 to 5 levels; `bootstrap_costs_for_the_cost_model` in
    /// `runtime/tests/transport.rs`), within 8%.
    pub fn pbs_cost(&self) -> f64 {
        let (n, k, big_n) = (self.lwe_dimension as f64, self.glwe_dimension as f64, self.polynomial_size as f64);
        let (l, log_n) = (self.pbs_level as f64, big_n.log2());
        n * (k + 1.0) * big_n * (9.67e-8 * l * log_n + 4.17e-7 * (k + 1.0) * l + 2.82e-7 * log_n)
    }

    /// The keyswitch's part of [`TfheParams::cost`]: the runtime keyswitches up to 16
    /// ciphertexts in one pass over the key (`kN·ℓ_ks` rows of `n+1` words), so the cost is
    /// arithmetic: about 0.19 ns per key row word used, and a row is used for the signed
    /// digits that are not zero (a fraction `1 - 2^-b` of them, base `2^b`). Fitted on four
    /// measured sets (`bootstrap_costs_for_the_cost_model`), within 5%.
    pub fn ks_cost(&self) -> f64 {
        let (n, k, big_n) = (self.lwe_dimension as f64, self.glwe_dimension as f64, self.polynomial_size as f64);
        let nonzero = 1.0 - (-(self.ks_base_log as f64)).exp2();
        1.86e-7 * k * big_n * self.ks_level as f64 * (n + 1.0) * nonzero
    }

    /// Relative cost of one keyswitch + rounding bootstrap (the main keyswitch, then the
    /// rounding key's bootstrap).
    pub fn round_cost(&self) -> f64 {
        self.rounding_bootstrap().pbs_cost() + self.ks_cost()
    }

    /// Estimated server time (ms on one core) of the bootstraps of `mix`: main ones with the
    /// main key, rounding ones with the rounding key, and the keyswitches of values under the
    /// input key ([`TfheParams::input_dimension`]) over that many coefficients only.
    pub fn mix_cost(&self, mix: &BootstrapMix) -> f64 {
        let short = mix.main_on_input_key + mix.rounding_on_input_key;
        let saved = 1.0 - self.input_dimension() as f64 / self.big_dimension() as f64;
        mix.main as f64 * self.cost() + mix.rounding as f64 * self.round_cost() - short as f64 * saved * self.ks_cost()
    }

    /// Bytes of the bootstrap keys (Fourier, 16 bytes per complex over N/2 per polynomial; the
    /// main one plus the rounding one, if any) and of the keyswitch keys (8 bytes per u64;
    /// the bootstraps' one plus the result's, if any) in the server's memory (the evaluation key travels in
    /// seeded form, far smaller: `crate::wire::evaluation_key_bytes`).
    pub fn key_bytes(&self) -> (usize, usize) {
        let (n, k, big_n) = (self.lwe_dimension, self.glwe_dimension, self.polynomial_size);
        let bsk = |p: &TfheParams| {
            p.lwe_dimension
                * p.pbs_level as usize
                * (p.glwe_dimension + 1)
                * (p.glwe_dimension + 1)
                * p.polynomial_size
                * 8
        };
        let round = if self.has_rounding_bsk() { bsk(&self.rounding_bootstrap()) } else { 0 };
        let ksk = k * big_n * self.ks_level as usize * (n + 1) * 8;
        let d = self.input_dimension();
        let result_ksk = self.result_ks().map_or(0, |(_, l)| (k * big_n - d) * l as usize * (d + 1) * 8);
        (bsk(self) + round, ksk + result_ksk)
    }
}

/// The bootstraps of one inference, as the cost model counts them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BootstrapMix {
    /// Bootstraps with the main key (tables, max pooling).
    pub main: usize,
    /// Exact rounding's bootstraps.
    pub rounding: usize,
    /// Of `main`, those reading a value under the input key (`Circuit::on_input_key`).
    pub main_on_input_key: usize,
    /// Of `rounding`, those reading a value under the input key.
    pub rounding_on_input_key: usize,
}

impl BootstrapMix {
    /// The mix of a circuit's bootstraps.
    pub fn of(s: &crate::circuit::BootstrapStats) -> BootstrapMix {
        BootstrapMix {
            main: s.total() - s.rounding,
            rounding: s.rounding,
            main_on_input_key: s.tables_on_input_key,
            rounding_on_input_key: s.rounding_on_input_key,
        }
    }
}

/// `(main, rounding)` bootstraps, none of them reading under the input key.
impl From<(usize, usize)> for BootstrapMix {
    fn from((main, rounding): (usize, usize)) -> BootstrapMix {
        BootstrapMix { main, rounding, ..BootstrapMix::default() }
    }
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

/// The encoding plan: every circuit value `v` is held as `v·Δ + e` with `Δ = 2^(63 - bits[v])`.
///
/// A value read by a bootstrap must be encoded with exactly the bits it is read at (a
/// table reading `w` bits: `w`; exact rounding of a `P`-bit value: `P`; max pooling: the
/// width of its differences), linear ops keep their input's encoding, and a value may be
/// multiplied by `2^j` to move to an encoding with `j` fewer bits when its range allows.
/// So bits flow backward from readers (the most any reader needs) and forward from
/// sources (rounding removes bits).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodingPlan {
    /// Bits of the encoding of each node's value.
    pub bits: Vec<u32>,
}

/// Bits to hold the non-negative `max`.
fn ubits(max: i64) -> u32 {
    (64 - (max.max(0) as u64).leading_zeros()).max(1)
}

impl EncodingPlan {
    /// Plans the encodings of a circuit.
    pub fn plan(c: &crate::circuit::Circuit) -> Result<EncodingPlan, String> {
        use crate::circuit::COp;
        let n = c.nodes.len();
        // Bits each value must have for its readers.
        let mut need = vec![1u32; n];
        let out = &c.nodes[c.output];
        need[c.output] = ubits(out.range.min.abs().max(out.range.max)) + 1;
        for id in (0..n).rev() {
            let node = &c.nodes[id];
            let req = match &node.op {
                COp::Table { in_width, .. } => *in_width,
                // An approximate rounding's readers read its input's top bits directly.
                COp::Round { shift, approx: true } => need[id] + shift,
                COp::Round { .. } => ubits(c.nodes[node.inputs[0]].range.max),
                COp::MaxPool { diff_width, shift, .. } => need[id].max(*diff_width + shift),
                COp::Input { .. } => continue,
                _ => need[id],
            };
            for &i in &node.inputs {
                need[i] = need[i].max(req);
            }
        }
        let mut bits = vec![0u32; n];
        for id in 0..n {
            let node = &c.nodes[id];
            bits[id] = match &node.op {
                COp::Input { .. } | COp::Table { .. } => need[id],
                // Read at its readers' width, from its input moved to `need + shift` bits.
                COp::Round { shift, approx: true } => {
                    let b = bits[node.inputs[0]];
                    if b < need[id] + shift {
                        return Err(format!("%{id} reads {} bits off a {b}-bit encoding", need[id] + shift));
                    }
                    need[id]
                }
                COp::Round { shift, approx: false } => {
                    let b = bits[node.inputs[0]];
                    if b <= *shift {
                        return Err(format!("%{id} rounds {shift} bits off a {b}-bit encoding"));
                    }
                    b - shift
                }
                COp::Add | COp::Sub => {
                    let (a, b) = (bits[node.inputs[0]], bits[node.inputs[1]]);
                    if a != b {
                        return Err(format!("%{id} adds values encoded on {a} and {b} bits"));
                    }
                    a
                }
                _ => bits[node.inputs[0]],
            };
            if bits[id] < need[id] || bits[id] > 62 {
                return Err(format!(
                    "%{id} '{}' would be encoded on {} bits but needs {} (at most 62)",
                    node.name, bits[id], need[id]
                ));
            }
        }
        Ok(EncodingPlan { bits })
    }

    /// Bits of the output the client reads: all of its encoding, or its top
    /// `Circuit::output_bits` when fewer.
    pub fn output_read_bits(&self, c: &crate::circuit::Circuit) -> u32 {
        let bits = self.bits.get(c.output).copied().unwrap_or(0);
        c.output_bits.map_or(bits, |b| b.clamp(1, bits.max(1)))
    }

    /// The noise requirements of every bootstrap (and of the final decryption).
    pub fn requirements(&self, c: &crate::circuit::Circuit) -> Vec<NoiseRequirement> {
        use crate::circuit::{COp, kernels};
        let mut reqs: Vec<NoiseRequirement> = vec![];
        let mut push = |r: NoiseRequirement| {
            if let Some(e) = reqs.iter_mut().find(|e| {
                e.encoding_bits == r.encoding_bits
                    && e.read_bits == r.read_bits
                    && e.extra_pbs == r.extra_pbs
                    && e.norm2_sq == r.norm2_sq
                    && e.decryption == r.decryption
                    && e.extra_from_rounding == r.extra_from_rounding
                    && e.rounding_read == r.rounding_read
                    && e.approx == r.approx
            }) {
                e.count += r.count;
            } else {
                reqs.push(r);
            }
        };
        for (id, node) in c.nodes.iter().enumerate() {
            let elems: usize = node.shape.iter().product();
            let input = node.inputs.first().map(|&i| &c.nodes[i]);
            match &node.op {
                COp::Table { in_width, .. } => {
                    let x = input.expect("table input");
                    // An approximate rounding is read from its input (moved to the read's
                    // encoding); an exact one adds its bootstraps' outputs to its input.
                    let (encoding_bits, nu, extra, approx) = match x.op {
                        COp::Round { shift, approx: true } => {
                            (self.bits[x.inputs[0]] - shift, c.nodes[x.inputs[0]].norm2, 0, true)
                        }
                        COp::Round { shift, approx: false } => (
                            self.bits[node.inputs[0]],
                            c.nodes[x.inputs[0]].norm2,
                            crate::circuit::round_bootstraps(&c.round_chunks(shift)) as u32,
                            false,
                        ),
                        _ => (self.bits[node.inputs[0]], x.norm2, 0, false),
                    };
                    push(NoiseRequirement {
                        encoding_bits,
                        read_bits: *in_width,
                        norm2_sq: nu * nu,
                        extra_pbs: extra,
                        extra_from_rounding: true,
                        rounding_read: false,
                        count: elems,
                        decryption: false,
                        approx,
                    });
                }
                COp::Round { approx: true, .. } => {}
                COp::Round { shift, approx: false } => {
                    // Per chunk of k bits at bit j: the sign read and (k > 1) the (k-1)-bit
                    // table of the rest, both with the noise scaled by 2^(P-j-k+1) and a
                    // (k-1)-bit margin (see Circuit::round_chunks), after `extra` bootstrap
                    // outputs have been added to the value.
                    let x = input.expect("round input");
                    let (mut j, mut extra) = (0u32, 0u32);
                    for k in c.round_chunks(*shift) {
                        for _ in 0..crate::circuit::chunk_bootstraps(k) {
                            push(NoiseRequirement {
                                encoding_bits: self.bits[node.inputs[0]] - j,
                                read_bits: k - 1,
                                norm2_sq: x.norm2 * x.norm2,
                                extra_pbs: extra,
                                extra_from_rounding: true,
                                rounding_read: true,
                                count: elems,
                                decryption: false,
                                approx: false,
                            });
                            extra += 1;
                        }
                        j += k;
                    }
                }
                COp::MaxPool { pool, diff_width, shift, .. } => {
                    // An approximate comparison reads the top bits of a difference moved to
                    // `diff_width + shift` bits (its noise scaled by 2^-shift less).
                    let x = input.expect("max pool input");
                    let window = pool.kernel[0] * pool.kernel[1];
                    push(NoiseRequirement {
                        encoding_bits: self.bits[node.inputs[0]] - shift,
                        read_bits: *diff_width,
                        norm2_sq: 2.0 * x.norm2 * x.norm2,
                        extra_pbs: window.saturating_sub(1) as u32,
                        extra_from_rounding: false,
                        rounding_read: false,
                        count: kernels::max_pool_comparisons(&x.shape, pool),
                        decryption: false,
                        approx: *shift > 0,
                    });
                }
                _ => {}
            }
            if id == c.output {
                // Scores read to their top bits only may be a step off, like an approximate
                // rounding's reads (see `Circuit::output_bits`).
                // Its top bits are read in place (no multiplication moves them), so the noise
                // is not scaled: the requirement's encoding is the read's.
                let read_bits = self.output_read_bits(c);
                push(NoiseRequirement {
                    encoding_bits: read_bits,
                    read_bits,
                    norm2_sq: node.norm2 * node.norm2,
                    extra_pbs: 0,
                    extra_from_rounding: false,
                    rounding_read: false,
                    count: elems,
                    decryption: true,
                    approx: read_bits < self.bits[id],
                });
            }
        }
        reqs
    }
}

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
                crate::circuit::COp::Round { shift, approx: true } => {
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
        if form.word_bits < 64 {
            if let Some(d) = form.dimension(p) {
                var += truncation_variance(d, form.word_bits);
            }
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
                crate::circuit::COp::Round { shift, approx: true }
                | crate::circuit::COp::MaxPool { shift: shift @ 1.., .. } => {
                    Some((s * (2.0 / std::f64::consts::PI).sqrt() / (1u64 << shift) as f64).min(1.0))
                }
                _ => None,
            })
            .fold(0.0, f64::max)
    }
}
