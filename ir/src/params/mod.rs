//! TFHE parameters, the noise model that sizes them, and the encoding plan of a circuit.
//!
//! Variances are in torus units (the ciphertext modulus `q = 2^64` is 1). Formulas follow
//! Bergerat et al., "Parameter Optimization & Larger Precision for (T)FHE" (J. Cryptology
//! 2023, eprint 2022/704), for binary secret keys and Gaussian noise:
//! * security: a key of dimension `d` needs `log2(σ) >= -0.025696778711484593·d + 2.675931372549016`
//!   (Concrete's 128-bit fit for a 64-bit modulus), and `σ >= 2^-62`;
//! * one CMux of the blind rotation adds `(k+1)N·D(B, l)·σ_bsk² + B^-2l/24·(1 + kN/2)`
//!   plus the 64-bit FFT error `0.00705·2^(2·(64-53) + 2·log2 B - 128)·l·k^1.22·N^2.22·(k+1)`;
//!   a PBS is `n` CMuxes;
//! * the keyswitch from dimension `kN` to `n` adds `kN·(D(B, l)·σ_ksk² + B^-2l/24)`;
//!
//! where `D(B, l)` is the sum of the squared digits of one decomposed coefficient
//! ([`digit_square_sum`]; the paper's `l(B²+2)/12` assumes uniform digits, which tfhe-rs's
//! balanced decomposition does not give: measured failure rates showed it, `RELIABILITY.md`);
//! * the modulus switch to `2N` adds `(n/48 + 1/12)/(2N)²`: the runtime centers it (removes
//!   the mean of the mask's rounding errors, which it knows, [`centered_ms_variance`]),
//!   which halves the `n/24` of a plain switch.
//!
//! A bootstrap reading `w` bits (plus the padding bit) from a value encoded with
//! `Δ = 2^(63-P)` is correct with probability `1 - p` when
//! `2^(2(P-w))·V_in + V_KS + V_MS <= (2^(-w-2)/κ)²`, `κ = √2·erfc⁻¹(p)`.
//!
//! Layout: this module holds the parameter sets ([`TfheParams`], [`RoundKeyParams`]) and
//! their dimensions and key sizes; `security.rs` the 128-bit curve; `noise.rs` the
//! variances and failure probabilities; `cost.rs` their estimated time (from
//! [`crate::cost`]); `encoding.rs` the encoding plan and the requirements of every
//! bootstrap; `result.rs` the form of returned results; `setup.rs` the chosen [`FheSetup`].

mod cost;
mod encoding;
mod noise;
mod result;
mod security;
mod setup;

use serde::{Deserialize, Serialize};

pub use cost::BootstrapMix;
pub use encoding::{EncodingError, EncodingPlan};
pub use noise::{
    NoiseRequirement, Variances, centered_ms_variance, digit_square_sum, erfc, failure_probability, kappa,
    truncation_variance,
};
pub use result::{OutputEncoding, RESULT_TRUNCATION_FAILURE, ResultForm, ResultKey, result_form, result_form_for};
pub use security::{estimated_security_bits, is_secure, min_secure_std};
pub use setup::FheSetup;

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
/// An [`input_prefix`](RoundKeyParams::input_prefix) has no rounding bootstrap key
/// (`bootstrap: None`): only the prefix, as the key inputs are encrypted under and results
/// are switched to (a circuit without exact rounding, whose first tables' keyswitches and
/// whose download shrink with it).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundKeyParams {
    /// `k_r`.
    pub glwe_dimension: usize,
    /// `N_r`.
    pub polynomial_size: usize,
    /// Noise std (torus) of the prefix (and of its bootstrap key when there is one).
    pub glwe_noise_std: f64,
    /// The rounding bootstrap key's decomposition; `None` for an input prefix, which has no
    /// bootstrap key.
    pub bootstrap: Option<Decomposition>,
}

/// A gadget decomposition: `level` digits of `base_log` bits each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decomposition {
    /// The base (log2).
    pub base_log: u32,
    /// The number of levels.
    pub level: u32,
}

impl Decomposition {
    /// Whether tfhe-rs takes it: at least one level of at least one bit, and at most 64
    /// bits in all.
    pub fn is_valid(&self) -> bool {
        self.base_log > 0 && self.level > 0 && self.base_log as u64 * self.level as u64 <= 64
    }
}

impl RoundKeyParams {
    /// The prefix of the main GLWE key, `k_r = 1` and `N_r = size`, as the key inputs are
    /// encrypted under and results are switched to, with no bootstrap key of its own.
    pub fn input_prefix(size: usize, glwe_noise_std: f64) -> RoundKeyParams {
        RoundKeyParams { glwe_dimension: 1, polynomial_size: size, glwe_noise_std, bootstrap: None }
    }

    /// Whether a rounding bootstrap key exists for this key (false for an
    /// [`input_prefix`](RoundKeyParams::input_prefix)).
    pub fn has_bootstrap_key(&self) -> bool {
        self.bootstrap.is_some()
    }
}

impl TfheParams {
    /// The shape of the parameters on one line: `n=760 k=1 N=2048 PBS 2x2^16 KS 8x2^2`, and
    /// the rounding bootstrap's when there is one (`; rounding k=4 N=512 PBS 2x2^15`).
    pub fn summary(&self) -> String {
        let round = self.round_key.map_or(String::new(), |r| match r.bootstrap {
            None => format!("; input key k={} N={}", r.glwe_dimension, r.polynomial_size),
            Some(d) => {
                format!("; rounding k={} N={} PBS {}x2^{}", r.glwe_dimension, r.polynomial_size, d.level, d.base_log)
            }
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

    /// Why these parameters cannot be keys' parameters at all, if they cannot: a dimension of
    /// zero or beyond what any TFHE parameter set uses (small key 2^16 coefficients, GLWE key
    /// 2^20, polynomials powers of two from 16 to 2^20), decompositions beyond 64 bits, noise
    /// that is not a positive finite number, a rounding key larger than the main one.
    /// Checked when an artifact loads, before anything sizes memory by them.
    pub fn shape_error(&self) -> Option<String> {
        const MAX_LWE: usize = 1 << 16;
        const MAX_GLWE: usize = 1 << 20;
        let poly_ok = |n: usize| (16..=MAX_GLWE).contains(&n) && n.is_power_of_two();
        let decomp_ok = |base_log, level| Decomposition { base_log, level }.is_valid();
        let std_ok = |s: f64| s.is_finite() && s > 0.0 && s < 1.0;
        let big = self.glwe_dimension.checked_mul(self.polynomial_size);
        if self.lwe_dimension == 0
            || self.lwe_dimension > MAX_LWE
            || self.glwe_dimension == 0
            || !poly_ok(self.polynomial_size)
            || big.is_none_or(|b| b > MAX_GLWE)
        {
            return Some(format!("dimensions out of range ({})", self.summary()));
        }
        if !decomp_ok(self.pbs_base_log, self.pbs_level) || !decomp_ok(self.ks_base_log, self.ks_level) {
            return Some(format!("decompositions out of range ({})", self.summary()));
        }
        if !std_ok(self.lwe_noise_std) || !std_ok(self.glwe_noise_std) {
            return Some("noise deviations that are not in (0, 1)".into());
        }
        if let Some(r) = self.round_key {
            let prefix = r.glwe_dimension.checked_mul(r.polynomial_size);
            if r.glwe_dimension == 0 || !poly_ok(r.polynomial_size) || prefix.is_none_or(|d| Some(d) > big) {
                return Some(format!("a rounding key out of range ({})", self.summary()));
            }
            if r.bootstrap.is_some_and(|d| !d.is_valid()) || !std_ok(r.glwe_noise_std) {
                return Some(format!("a rounding key out of range ({})", self.summary()));
            }
        }
        None
    }

    /// The bootstrap exact rounding's reads use, as a parameter set of its own (the main one
    /// without a rounding key): the same `n` and keyswitch, its own GLWE key and
    /// decomposition. Its `var_pbs`, `var_ms` and `pbs_cost` are the rounding bootstrap's.
    /// For an input prefix (no bootstrap key) it describes the prefix key, with zero
    /// decomposition levels: ask [`TfheParams::rounding_bsk`] for a bootstrap's parameters.
    pub fn rounding_bootstrap(&self) -> TfheParams {
        match self.round_key {
            None => *self,
            Some(r) => TfheParams {
                glwe_dimension: r.glwe_dimension,
                polynomial_size: r.polynomial_size,
                glwe_noise_std: r.glwe_noise_std,
                // An input prefix has no bootstrap key: zero levels in this view.
                pbs_base_log: r.bootstrap.map_or(0, |d| d.base_log),
                pbs_level: r.bootstrap.map_or(0, |d| d.level),
                round_key: None,
                ..*self
            },
        }
    }

    /// Whether a rounding bootstrap key exists (a rounding key that is not only an input
    /// prefix, see [`RoundKeyParams`]).
    pub fn has_rounding_bsk(&self) -> bool {
        self.round_key.is_some_and(|r| r.has_bootstrap_key())
    }

    /// The rounding bootstrap key's parameters ([`TfheParams::rounding_bootstrap`]) when
    /// there is one, `None` when rounding reads use the main bootstrap or the rounding key
    /// is only an input prefix.
    pub fn rounding_bsk(&self) -> Option<TfheParams> {
        self.has_rounding_bsk().then(|| self.rounding_bootstrap())
    }

    /// The fingerprint of the parameter set: the FNV-1a checksum ([`crate::framing::checksum`])
    /// of its bincode form (fixed-width integers). The runtime's key and ciphertext files
    /// start with it, and a client part records it for the key pair it asks for.
    pub fn fingerprint(&self) -> u64 {
        crate::framing::checksum(&bincode::serialize(self).expect("parameters always serialize"))
    }

    /// `kN`, dimension of the flattened GLWE key.
    pub fn big_dimension(&self) -> usize {
        // Saturating: parameters read from a file are checked ([`TfheParams::shape_error`])
        // by what loads them, and a saturated dimension matches no key.
        self.glwe_dimension.saturating_mul(self.polynomial_size)
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
