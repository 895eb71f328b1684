//! Measured bootstrap failure rates against the noise model (feature `fhe`): for every kind
//! of bootstrap the runtime performs, parameters chosen by the search for an inflated
//! per-bootstrap target (`--p-error 2^-6`: small, noisy, still 128-bit secure parameters),
//! thousands of bootstraps on values read with the noise the model assumes, evaluated with
//! the server key only, every output decrypted; the failures counted must agree with the
//! model's prediction (`fhec_driver::reliability`; the fuller measurement over several
//! targets is `cargo bench-table reliability`, RELIABILITY.md). And the noise of the
//! keyswitch and of the (centered) modulus switch, which dominate these reads, against the
//! model's variances.

use fhec_driver::reliability::{Kind, Options, measure};
use fhec_ir::params::{TfheParams, min_secure_std};
use fhec_runtime::fhe::ClientKey;
use fhec_runtime::fhe::test_support::{keyswitch_noise, modulus_switch_noise};

/// The test's interval: 99.99% (a prediction outside it is a model error, not chance; the
/// benchmark's table uses 99.9%).
const CONFIDENCE: f64 = 0.9999;

/// Measures `kind` at 2^-6 on `values` values and checks every rate.
fn check(kind: Kind, values: usize) {
    let m = measure(kind, &Options { p_error: (-6.0f64).exp2(), values, seed: 23 }).unwrap();
    eprintln!("{} ({} bootstraps): {}", kind.name(), m.bootstraps_run, m.setup.params.summary());
    for r in &m.rows {
        eprintln!(
            "  {} ({:?}, {:?}): {} of {} = {:.5}, predicted {:.5}",
            r.what,
            r.event,
            r.bound,
            r.observed,
            r.bootstraps,
            r.rate(),
            r.predicted
        );
    }
    assert!(m.setup.params.is_secure(), "{}: insecure parameters", kind.name());
    for r in &m.rows {
        assert!(r.bootstraps >= values / 2, "{}: only {} bootstraps counted", r.what, r.bootstraps);
        assert!(
            r.agrees_at(CONFIDENCE),
            "{} ({:?}): observed {} of {} ({:.5}), the model predicts {:.5} ({:?})",
            r.what,
            r.event,
            r.observed,
            r.bootstraps,
            r.rate(),
            r.predicted,
            r.bound
        );
    }
    // Where the target binds, the measurement is not vacuous: failures are expected, and seen.
    let binding = m.rows.iter().filter(|r| r.predicted * r.bootstraps as f64 > 10.0).count();
    assert!(binding > 0, "{}: no rate is large enough to test the model", kind.name());
}

#[test]
fn table_lookup_failures_match_the_model() {
    check(Kind::Table, 1600);
}

#[test]
fn exact_rounding_failures_match_the_model() {
    check(Kind::ExactRounding, 1200);
}

#[test]
fn approximate_rounding_steps_and_failures_match_the_model() {
    check(Kind::ApproximateRounding, 1000);
}

#[test]
fn max_pooling_comparison_failures_match_the_model() {
    check(Kind::MaxPool, 1200);
}

#[test]
fn approximate_max_pooling_steps_and_failures_match_the_model() {
    check(Kind::ApproximateMaxPool, 600);
}

#[test]
fn keyswitch_noise_matches_the_model() {
    // tfhe-rs's balanced decomposition: the model's digit variance (`digit_square_sum`) is
    // what the batched keyswitch really adds, within the sampling error of 4000 samples
    // (2.2% on a variance) and the spread of the keys' Hamming weights.
    for (n, base_log, level) in [(680usize, 2u32, 6u32), (620, 1, 11)] {
        let p = TfheParams {
            lwe_dimension: n,
            glwe_dimension: 2,
            polynomial_size: 1024,
            lwe_noise_std: min_secure_std(n),
            glwe_noise_std: min_secure_std(2048),
            pbs_base_log: 23,
            pbs_level: 1,
            ks_base_log: base_log,
            ks_level: level,
            round_key: None,
        };
        assert!(p.is_secure());
        let ck = ClientKey::generate(&p);
        let e = keyswitch_noise(&ck, &ck.server_key(), 4000);
        let var = e.iter().map(|x| x * x).sum::<f64>() / e.len() as f64;
        let ratio = var / p.var_ks();
        eprintln!("KS {level}x2^{base_log}, n={n}: measured {var:e}, model {:e} ({ratio:.3})", p.var_ks());
        assert!((0.9..1.1).contains(&ratio), "KS {level}x2^{base_log}: measured {var:e}, model {:e}", p.var_ks());
    }
}

#[test]
fn centered_modulus_switch_halves_its_noise_as_the_model_says() {
    // The runtime centers every blind rotation's modulus switch: its error variance is the
    // model's `(n/48 + 1/12)/(2N)²`, half a plain switch's `(n/24 + 1/12)/(2N)²`, within the
    // sampling error of 20000 samples (1% on a variance) and the spread of the key's
    // Hamming weight.
    for (n, big_n) in [(790usize, 4096usize), (600, 1024)] {
        let p = TfheParams {
            lwe_dimension: n,
            glwe_dimension: 1,
            polynomial_size: big_n,
            lwe_noise_std: min_secure_std(n),
            glwe_noise_std: min_secure_std(big_n),
            pbs_base_log: 23,
            pbs_level: 1,
            ks_base_log: 2,
            ks_level: 6,
            round_key: None,
        };
        assert!(p.is_secure());
        let ck = ClientKey::generate(&p);
        let (plain, centered) = modulus_switch_noise(&ck, &ck.server_key(), 20000);
        let var = |e: &[f64]| e.iter().map(|x| x * x).sum::<f64>() / e.len() as f64;
        let two_n = 2.0 * big_n as f64;
        let plain_model = (n as f64 / 24.0 + 1.0 / 12.0) / (two_n * two_n);
        let (rc, rp) = (var(&centered) / p.var_ms(), var(&plain) / plain_model);
        eprintln!(
            "MS n={n} 2N={two_n}: centered {:e} ({rc:.3} of the model), plain {:e} ({rp:.3})",
            var(&centered),
            var(&plain)
        );
        assert!((0.93..1.07).contains(&rc), "centered switch: measured {:e}, model {:e}", var(&centered), p.var_ms());
        assert!((0.93..1.07).contains(&rp), "plain switch: measured {:e}, model {plain_model:e}", var(&plain));
        let mean = centered.iter().sum::<f64>() / centered.len() as f64;
        assert!(mean.abs() < 4.0 * (p.var_ms() / centered.len() as f64).sqrt(), "centered switch has a bias: {mean:e}");
    }
}
