//! Parameter selection: the cheapest 128-bit TFHE parameters that keep every bootstrap of
//! a circuit within the failure target.
//!
//! The noise model and the encoding plan live in [`fhec_ir::params`]; this module searches
//! `k ∈ {1, 2}`, `N ∈ {2^8..2^16}`, `n ∈ 450..=1400` (noise at the 128-bit security minimum
//! for each dimension), and for each the best bootstrap and keyswitch decompositions,
//! keeping the set of least estimated cost (`bootstraps × cost of one`) for which every
//! requirement's failure probability is at most the per-bootstrap target. The per-bootstrap
//! target is the global one divided by the number of bootstraps (plus decryptions): the
//! probability that any of them fails is then at most the global target.

use fhec_ir::circuit::Circuit;
pub use fhec_ir::params::FheSetup;
use fhec_ir::params::{EncodingPlan, NoiseRequirement, TfheParams, failure_probability, min_secure_std};
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
    Encoding(String),
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
    let Some((cost, params)) = search(&reqs, p_target) else {
        let h = hardest.unwrap_or(NoiseRequirement {
            encoding_bits: 0,
            read_bits: 0,
            norm2_sq: 0.0,
            extra_pbs: 0,
            count: 0,
            decryption: false,
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
    let bootstraps = c.bootstrap_stats().total();
    Ok(FheSetup {
        params,
        plan,
        operations,
        p_error,
        global_p_error: global,
        security_bits: params.security_bits(),
        est_cost_ms: cost * bootstraps as f64,
    })
}

/// Chooses the width of exact rounding's chunks together with the parameters: for every
/// chunk width from 1 bit to one more than the widest table ([`Circuit::round_chunks`]),
/// the cheapest parameters ([`select`]); keeps the width of least estimated server time
/// (wide chunks take fewer bootstraps but their reads may need larger parameters), sets
/// `c.round_chunk` to it and returns its parameters. Circuits without rounding: [`select`].
pub fn select_rounding(c: &mut Circuit, opts: &ParamOptions) -> Result<FheSetup, ParamError> {
    use fhec_ir::circuit::COp;
    let default = c.default_round_chunk();
    if !c.nodes.iter().any(|n| matches!(n.op, COp::Round { .. })) {
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

/// The cheapest secure parameters (and their cost per bootstrap) for which every
/// requirement fails with probability at most `p_target`.
pub fn search(reqs: &[NoiseRequirement], p_target: f64) -> Option<(f64, TfheParams)> {
    let kappa = fhec_ir::params::kappa(p_target);
    let mut best: Option<(f64, TfheParams)> = None;
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
                };
                // The modulus switch alone must leave room for every read.
                let v_ms = base.var_ms();
                if reqs.iter().any(|r| !r.decryption && v_ms >= ((-(r.read_bits as f64) - 2.0).exp2() / kappa).powi(2))
                {
                    continue;
                }
                for pl in 1..=6u32 {
                    let (pb, _) = best_base(pl, |b| TfheParams { pbs_base_log: b, pbs_level: pl, ..base }.var_pbs());
                    for kl in 1..=16u32 {
                        let (kb, _) = best_base(kl, |b| TfheParams { ks_base_log: b, ks_level: kl, ..base }.var_ks());
                        let p = TfheParams { pbs_base_log: pb, pbs_level: pl, ks_base_log: kb, ks_level: kl, ..base };
                        let cost = p.cost();
                        if best.as_ref().is_some_and(|(c0, _)| *c0 <= cost) {
                            continue;
                        }
                        if reqs.iter().all(|r| failure_probability(&p, r) <= p_target) {
                            best = Some((cost, p));
                        }
                    }
                }
            }
        }
    }
    best
}
