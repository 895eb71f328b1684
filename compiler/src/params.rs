//! Parameter selection: the cheapest 128-bit TFHE parameters that keep every bootstrap of
//! a circuit within the failure target.
//!
//! The noise model and the encoding plan live in [`fhec_ir::params`]; this module searches
//! `k ∈ {1, 2}`, `N ∈ {2^8..2^16}`, `n ∈ 450..=1400` (noise at the 128-bit security minimum
//! for each dimension), and for each the best bootstrap and keyswitch decompositions and,
//! for circuits with exact rounding, a rounding bootstrap of its own (a smaller GLWE key
//! sharing a prefix of the main one, see [`fhec_ir::params::RoundKeyParams`]) when that is
//! cheaper, keeping the set of least estimated cost (main bootstraps × the cost of one plus
//! rounding bootstraps × theirs) for which every requirement's failure probability is at
//! most the per-bootstrap target. The per-bootstrap
//! target is the global one divided by the number of bootstraps (plus decryptions): the
//! probability that any of them fails is then at most the global target.

use fhec_ir::circuit::Circuit;
pub use fhec_ir::params::FheSetup;
use fhec_ir::params::{
    BootstrapMix, Decomposition, EncodingError, EncodingPlan, NoiseRequirement, RoundKeyParams, TfheParams, Variances,
    centered_ms_variance, failure_probability, min_secure_std,
};
use serde::{Deserialize, Serialize};

/// The failure targets.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParamOptions {
    /// Probability that any bootstrap of one inference fails.
    pub global_p_error: f64,
    /// Per-bootstrap target instead (overrides the global one when set).
    pub p_error: Option<f64>,
}

impl Default for ParamOptions {
    fn default() -> Self {
        ParamOptions { global_p_error: (-40.0f64).exp2(), p_error: None }
    }
}

/// No parameters fit.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ParamError {
    /// The circuit cannot be encoded.
    #[error("cannot encode the circuit: {0}")]
    Encoding(#[from] EncodingError),
    /// Nothing in the search space meets the target.
    #[error(
        "no 128-bit parameters keep {count} bootstraps reading {read_bits} of {encoding_bits} bits (2-norm {norm2:.1}) under p_error {p:.3e}; lower --max-table-bits or the bit widths"
    )]
    Infeasible {
        /// The hardest requirement's read bits.
        read_bits: u32,
        /// Its encoding bits.
        encoding_bits: u32,
        /// Its 2-norm.
        norm2: f64,
        /// Its count.
        count: usize,
        /// The per-bootstrap target.
        p: f64,
    },
}

fn best_base(levels: u32, f: impl Fn(u32) -> f64) -> (u32, f64) {
    (1..=(62 / levels).min(40)).map(|b| (b, f(b))).min_by(|a, b| a.1.total_cmp(&b.1)).expect("non-empty")
}

/// Chooses parameters for a circuit.
pub fn select(c: &Circuit, opts: &ParamOptions) -> Result<FheSetup, ParamError> {
    let plan = EncodingPlan::plan(c).map_err(ParamError::Encoding)?;
    let reqs = plan.requirements(c);
    let operations: usize = reqs.iter().map(|r| r.count).sum::<usize>().max(1);
    let p_target = opts.p_error.unwrap_or(opts.global_p_error / operations as f64);
    let hardest = reqs
        .iter()
        .filter(|r| !r.decryption)
        .max_by(|a, b| {
            let key = |r: &NoiseRequirement| (r.read_bits, r.encoding_bits);
            key(a).cmp(&key(b))
        })
        .copied();
    let mix = BootstrapMix::of(&c.bootstrap_stats());
    let Some((cost, params)) = search(&reqs, p_target, mix) else {
        let h = hardest.unwrap_or(NoiseRequirement {
            encoding_bits: 0,
            read_bits: 0,
            norm2_sq: 0.0,
            extra_pbs: 0,
            extra_from_rounding: false,
            rounding_read: false,
            count: 0,
            decryption: false,
            approx: false,
        });
        return Err(ParamError::Infeasible {
            read_bits: h.read_bits,
            encoding_bits: h.encoding_bits,
            norm2: h.norm2_sq.sqrt(),
            count: h.count,
            p: p_target,
        });
    };
    let p_error = reqs.iter().map(|r| failure_probability(&params, r)).fold(0.0, f64::max);
    let global: f64 = reqs.iter().map(|r| r.count as f64 * failure_probability(&params, r)).sum::<f64>().min(1.0);
    Ok(FheSetup {
        params,
        plan,
        operations,
        p_error,
        global_p_error: global,
        security_bits: params.security_bits(),
        est_cost_ms: cost,
    })
}

/// Chooses the width of exact rounding's chunks together with the parameters: for every
/// chunk width from 1 bit to one more than the widest table ([`Circuit::round_chunks`]),
/// the cheapest parameters ([`select`]); keeps the width of least estimated server time
/// (wide chunks take fewer bootstraps but their reads may need larger parameters), sets
/// `c.round_chunk` to it and returns its parameters. Circuits without rounding: [`select`].
pub fn select_rounding(c: &mut Circuit, opts: &ParamOptions) -> Result<FheSetup, ParamError> {
    let default = c.default_round_chunk();
    if !c.has_exact_rounding() {
        return select(c, opts);
    }
    let mut best: Option<(u32, FheSetup)> = None;
    let mut default_err = None;
    for k in 1..=default {
        c.round_chunk = k;
        match select(c, opts) {
            Ok(s) => {
                if best.as_ref().is_none_or(|(_, b)| s.est_cost_ms < b.est_cost_ms) {
                    best = Some((k, s));
                }
            }
            Err(e) if k == default => default_err = Some(e),
            Err(_) => {}
        }
    }
    match best {
        Some((k, s)) => {
            c.round_chunk = k;
            Ok(s)
        }
        None => {
            c.round_chunk = default;
            Err(default_err.expect("the default width was tried"))
        }
    }
}

/// A rounding bootstrap [`search`] considers, with its output variance and cost for `n = 1`
/// (both are proportional to `n`).
struct RoundCandidate {
    key: RoundKeyParams,
    unit_var_pbs: f64,
    unit_pbs_cost: f64,
}

/// The rounding bootstraps [`search`] considers besides the main one: GLWE keys of
/// `k_r ≤ 8` polynomials of `N_r ∈ 2^8..=2^11` (flattened dimension 1024 to 4096), noise at
/// the 128-bit minimum, 1 to 4 levels with the base of least output variance; cheapest
/// first. Neither the best base nor the order depends on `n`, so the list is made once.
fn round_key_candidates() -> Vec<RoundCandidate> {
    let unit = |r: &RoundKeyParams| {
        TfheParams {
            lwe_dimension: 1,
            glwe_dimension: 1,
            polynomial_size: 1,
            lwe_noise_std: 1.0,
            glwe_noise_std: 1.0,
            pbs_base_log: 1,
            pbs_level: 1,
            ks_base_log: 1,
            ks_level: 1,
            round_key: Some(*r),
        }
        .rounding_bootstrap()
    };
    let mut out = vec![];
    for log_nr in 8..=11u32 {
        let nr = 1usize << log_nr;
        for kr in 1..=8usize {
            let dim = kr * nr;
            if !(1024..=4096).contains(&dim) {
                continue;
            }
            for level in 1..=4u32 {
                let r = RoundKeyParams {
                    glwe_dimension: kr,
                    polynomial_size: nr,
                    glwe_noise_std: min_secure_std(dim),
                    bootstrap: None,
                };
                let with_base = |base_log| RoundKeyParams { bootstrap: Some(Decomposition { base_log, level }), ..r };
                let (b, _) = best_base(level, |b| unit(&with_base(b)).var_pbs());
                let key = with_base(b);
                out.push(RoundCandidate {
                    key,
                    unit_var_pbs: unit(&key).var_pbs(),
                    unit_pbs_cost: unit(&key).pbs_cost(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.unit_pbs_cost.total_cmp(&b.unit_pbs_cost));
    out
}

/// The cheapest secure parameters (and their estimated time per inference, ms on one core,
/// [`TfheParams::mix_cost`] of `mix`) for which every requirement fails with probability at
/// most `p_target`. Rounding bootstraps may get a key of their own
/// ([`fhec_ir::params::RoundKeyParams`]) when that is cheaper.
pub fn search(reqs: &[NoiseRequirement], p_target: f64, mix: impl Into<BootstrapMix>) -> Option<(f64, TfheParams)> {
    let kappa = fhec_ir::params::kappa(p_target);
    let mix = mix.into();
    let (main_count, round_count) = (mix.main, mix.rounding);
    let on_input_key = mix.main_on_input_key + mix.rounding_on_input_key;
    let rounds = if round_count > 0 { round_key_candidates() } else { vec![] };
    // Without rounding bootstraps, an input key of half the big key's coefficients (no
    // bootstrap key of its own) still shortens the keyswitches of values under it, and the
    // result, switched to it, halves the download (its 128-bit noise at half the dimension
    // is small enough for wide scores, which a smaller prefix's is not).
    let prefix_only = round_count == 0;
    let mut best: Option<(f64, TfheParams)> = None;
    let beats = |best: &Option<(f64, TfheParams)>, cost: f64| best.as_ref().is_none_or(|(c0, _)| cost < *c0);
    // Every requirement met, the one that failed last checked first (most candidates fail,
    // and mostly on the same requirement as their neighbours).
    let fits = |v: &Variances, last_failed: &mut usize| {
        let ok = |i: usize| v.failure_probability(&reqs[i]) <= p_target;
        if reqs.is_empty() || !ok(*last_failed) {
            return reqs.is_empty();
        }
        match (0..reqs.len()).find(|&i| !ok(i)) {
            Some(i) => {
                *last_failed = i;
                false
            }
            None => true,
        }
    };
    let mut last_failed = 0usize;
    for k in [1usize, 2] {
        for log_n in 8..=16u32 {
            let big_n = 1usize << log_n;
            if k * big_n < 450 || (k > 1 && big_n > 2048) {
                continue;
            }
            let glwe_std = min_secure_std(k * big_n);
            for n in (450..=1400).step_by(10) {
                let base = TfheParams {
                    lwe_dimension: n,
                    glwe_dimension: k,
                    polynomial_size: big_n,
                    lwe_noise_std: min_secure_std(n),
                    glwe_noise_std: glwe_std,
                    pbs_base_log: 1,
                    pbs_level: 1,
                    ks_base_log: 1,
                    ks_level: 1,
                    round_key: None,
                };
                // The modulus switch alone must leave room for every read the main key does.
                let v_ms = base.var_ms();
                if reqs.iter().any(|r| {
                    let margin = -(r.read_bits as f64) - if r.approx { 1.0 } else { 2.0 };
                    !r.decryption && !r.rounding_read && v_ms >= (margin.exp2() / kappa).powi(2)
                }) {
                    continue;
                }
                for pl in 1..=6u32 {
                    let (pb, _) = best_base(pl, |b| TfheParams { pbs_base_log: b, pbs_level: pl, ..base }.var_pbs());
                    for kl in 1..=16u32 {
                        let (kb, _) = best_base(kl, |b| TfheParams { ks_base_log: b, ks_level: kl, ..base }.var_ks());
                        let p = TfheParams { pbs_base_log: pb, pbs_level: pl, ks_base_log: kb, ks_level: kl, ..base };
                        // The rounding with a key of its own (those cheaper than without one,
                        // cheapest first), else with the main bootstrap. A rounding key also
                        // shortens the keyswitches of values under the input key (its prefix).
                        let (nf, main_cost, ks) = (n as f64, p.cost(), p.ks_cost());
                        let without = main_count as f64 * main_cost + round_count as f64 * main_cost;
                        let half = p.big_dimension() / 2;
                        let prefix = (prefix_only && half >= 512).then(|| RoundCandidate {
                            key: RoundKeyParams::input_prefix(half, min_secure_std(half)),
                            unit_var_pbs: 0.0,
                            unit_pbs_cost: 0.0,
                        });
                        let mut with_key: Vec<(&RoundCandidate, f64)> = rounds
                            .iter()
                            .chain(prefix.iter())
                            .filter(|r| r.key.glwe_dimension * r.key.polynomial_size <= p.big_dimension())
                            .map(|r| {
                                let saved = 1.0
                                    - (r.key.glwe_dimension * r.key.polynomial_size) as f64 / p.big_dimension() as f64;
                                let cost = main_count as f64 * main_cost
                                    + round_count as f64 * (nf * r.unit_pbs_cost + ks)
                                    - on_input_key as f64 * saved * ks;
                                (r, cost)
                            })
                            .filter(|&(r, cost)| cost < without || !r.key.has_bootstrap_key())
                            .collect();
                        with_key.sort_by(|a, b| a.1.total_cmp(&b.1));
                        let floor = with_key.first().map_or(without, |&(_, c)| c);
                        if !beats(&best, floor) {
                            continue;
                        }
                        let v = Variances::of(&p);
                        let options = with_key
                            .into_iter()
                            .map(|(r, cost)| {
                                let rv = Variances {
                                    round_pbs: nf * r.unit_var_pbs,
                                    round_ms: centered_ms_variance(n, r.key.polynomial_size),
                                    fresh: r.key.glwe_noise_std.powi(2),
                                    ..v
                                };
                                (TfheParams { round_key: Some(r.key), ..p }, rv, cost)
                            })
                            .chain(std::iter::once((p, v, without)));
                        for (q, qv, cost) in options {
                            if !beats(&best, cost) {
                                break;
                            }
                            if fits(&qv, &mut last_failed) {
                                best = Some((cost, q));
                                break;
                            }
                        }
                    }
                }
            }
        }
    }
    best
}
