//! The cost model: the estimated server time of a circuit's bootstraps, in one place.
//!
//! Two consumers read it, with the same constants:
//! * the parameter search (`fhec_compiler::params`, and through it the fit) prices a
//!   parameter set in milliseconds per keyswitch + bootstrap ([`pbs_ms`], [`ks_ms`], via
//!   `TfheParams::{pbs_cost, ks_cost, mix_cost}`);
//! * the e-graph extraction (`fhec_compiler::passes::egraph::cost`) decides before any
//!   parameters exist, so it prices a table read by its width alone ([`width_weight`],
//!   [`tables`]) relative to a 4-bit bootstrap, plus the noise growth of linear ops
//!   ([`NOISE_BIT_WEIGHT`]) and a tie-breaker per op ([`OP_WEIGHT`]).
//!
//! **Origin of the constants.** All are measurements on the development machine (2 cores),
//! of bootstraps and keyswitches as the runtime batches them (16 ciphertexts per pass over
//! a key); `bootstrap_costs_for_the_cost_model` and `keyswitch_costs_for_the_cost_model` in
//! `runtime/tests/keys.rs` produce the data (in a release build: `cargo test --release
//! --workspace --test keys -- --ignored --nocapture costs_for_the_cost_model`). Refitted on
//! 2026-12-07 on an Intel Xeon with AVX-512 (tfhe 1.8), idle: the per-parameter-set
//! coefficients on twelve bootstrap sets (n=700..890, k=1..4, N=512..8192, 1 to 5 levels,
//! the demo's n=730 k=1 N=2048 2 levels among them; every one within 7%) and eight
//! keyswitch sets (within 13%, the largest key the furthest; a keyswitch is under a tenth
//! of a bootstrap). The width weight comes from two earlier measurements (one keyswitch +
//! bootstrap each), [`TABLE_MS_4_BITS`] and [`TABLE_MS_6_BITS`]: the cost grows about
//! `2^1.5` per extra bit read beyond 4 (a ratio, which the refit leaves as it was).

/// ms per CMux, per bootstrap level, per GLWE polynomial `(k+1)` and per `N·log2 N`: the
/// forward FFTs of the decomposed accumulator.
pub const PBS_FORWARD_FFT_MS: f64 = 1.16e-7;
/// ms per CMux, per level, per `(k+1)²·N`: the products with the bootstrap key.
pub const PBS_KEY_PRODUCT_MS: f64 = 2.81e-7;
/// ms per CMux, per `(k+1)·N·log2 N`: the inverse FFTs and the rotation.
pub const PBS_INVERSE_FFT_MS: f64 = 1.56e-7;
/// ms per keyswitch key word used (`kN·ℓ_ks` rows of `n+1` words, a row used for each
/// non-zero signed digit).
pub const KS_WORD_MS: f64 = 1.50e-7;

/// Measured ms of one keyswitch + table bootstrap reading 4 bits (N=2048).
pub const TABLE_MS_4_BITS: f64 = 59.7;
/// Measured ms of one keyswitch + table bootstrap reading 6 bits (N=8192).
pub const TABLE_MS_6_BITS: f64 = 484.0;
/// Width below which a bootstrap costs the same ([`width_weight`] is 1).
pub const BASE_TABLE_BITS: f64 = 4.0;
/// Growth of [`width_weight`] per extra bit, as a power of two: `log2(484 / 59.7) / 2 =
/// 1.51`, from [`TABLE_MS_6_BITS`] and [`TABLE_MS_4_BITS`], rounded.
pub const WIDTH_EXPONENT: f64 = 1.5;
/// Weight of one bit of noise growth of a linear op, in 4-bit bootstraps: every bit a
/// linear chain adds shrinks the budget of the next bootstrap (larger parameters for all of
/// them); one bit weighs as much as one 4-bit bootstrap, so it decides only between forms
/// with the same bootstraps.
pub const NOISE_BIT_WEIGHT: f64 = 1.0;
/// Weight of every op, so that of two forms with equal bootstraps the one with fewer ops wins.
pub const OP_WEIGHT: f64 = 1e-3;

/// Estimated ms of one programmable bootstrap with LWE dimension `n`, GLWE dimension `k`,
/// polynomial size `big_n` and `levels` decomposition levels: `n` CMuxes, each `(k+1)·ℓ`
/// forward FFTs of size `N`, `(k+1)²·ℓ` products with the key, `k+1` inverse FFTs.
pub fn pbs_ms(n: usize, k: usize, big_n: usize, levels: u32) -> f64 {
    let (n, k, big_n) = (n as f64, k as f64, big_n as f64);
    let (l, log_n) = (levels as f64, big_n.log2());
    n * (k + 1.0)
        * big_n
        * (PBS_FORWARD_FFT_MS * l * log_n + PBS_KEY_PRODUCT_MS * (k + 1.0) * l + PBS_INVERSE_FFT_MS * log_n)
}

/// Estimated ms of one keyswitch from dimension `k·big_n` to `n` with `levels` levels of base
/// `2^base_log`: a fraction `1 - 2^-base_log` of the digits is non-zero.
pub fn ks_ms(n: usize, k: usize, big_n: usize, levels: u32, base_log: u32) -> f64 {
    let (n, k, big_n) = (n as f64, k as f64, big_n as f64);
    let nonzero = 1.0 - (-(base_log as f64)).exp2();
    KS_WORD_MS * k * big_n * levels as f64 * (n + 1.0) * nonzero
}

/// Relative cost of one bootstrap reading `t` bits (1 up to [`BASE_TABLE_BITS`], then
/// `2^WIDTH_EXPONENT` per bit).
pub fn width_weight(t: f64) -> f64 {
    (WIDTH_EXPONENT * (t - BASE_TABLE_BITS).max(0.0)).exp2()
}

/// Bootstraps (weighted) for `elems` table lookups on values of `b` bits: a table at width
/// `t = min(b, max_table_bits)` plus one rounding bootstrap per bit dropped before it; with
/// `approximate` rounding, wider values are read at `max_table_bits` with no rounding
/// bootstraps.
pub fn tables(elems: f64, b: f64, max_table_bits: f64, approximate: bool) -> f64 {
    let t = b.ceil().min(max_table_bits).max(1.0);
    let rounding = if approximate { 0.0 } else { (b.ceil() - t).max(0.0) };
    elems * (1.0 + rounding) * width_weight(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_width_weight_follows_the_measured_bootstraps() {
        let measured = (TABLE_MS_6_BITS / TABLE_MS_4_BITS).log2() / 2.0;
        assert!((measured - WIDTH_EXPONENT).abs() < 0.05, "{measured}");
        assert_eq!(width_weight(4.0), 1.0);
        assert_eq!(width_weight(6.0), 8.0);
    }
}
