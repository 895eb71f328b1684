//! Encrypted execution (feature `fhe`, work in progress): the security curve against
//! tfhe-rs's estimator-checked sets, the noise model against real ciphertexts,
//! and end-to-end runs whose decrypted outputs must equal the exact simulation.
//! Every test here uses 128-bit parameters chosen by the compiler.

use fhec_compiler::params::{ParamOptions, select};
use fhec_ir::params::min_secure_std;
use fhec_runtime::fhe::{ClientKey, evaluate};
use fhec_runtime::sim;
use fhec_tests::{images, tiny_circuit};

#[test]
fn security_curve_agrees_with_tfhe_rs_parameter_sets() {
    // tfhe-rs's Gaussian parameter sets are checked with the lattice estimator (>= 128 bits).
    use tfhe::shortint::parameters::current_params::*;
    for p in [
        V1_8_PARAM_MESSAGE_1_CARRY_1_KS_PBS_GAUSSIAN_2M128,
        V1_8_PARAM_MESSAGE_2_CARRY_2_KS_PBS_GAUSSIAN_2M128,
        V1_8_PARAM_MESSAGE_3_CARRY_3_KS_PBS_GAUSSIAN_2M128,
    ] {
        let std = |d: tfhe::core_crypto::prelude::DynamicDistribution<u64>| match d {
            tfhe::core_crypto::prelude::DynamicDistribution::Gaussian(g) => g.std,
            other => panic!("{other:?}"),
        };
        let n = p.lwe_dimension.0;
        let big = p.glwe_dimension.0 * p.polynomial_size.0;
        // Our curve must not demand more than the estimator-checked sets use (small slack for the fit).
        assert!(std(p.lwe_noise_distribution) >= min_secure_std(n) * 0.5, "n={n}");
        assert!(std(p.glwe_noise_distribution) >= min_secure_std(big) * 0.5 || big >= 2048, "kN={big}");
    }
}

#[test]
fn encrypted_run_equals_simulation() {
    let c = tiny_circuit();
    let setup = select(&c, &ParamOptions::default()).unwrap();
    let ck = ClientKey::generate(&setup.params);
    let sk = ck.server_key();
    sk.check(&setup.params).unwrap();
    for px in images(3, 64, 99) {
        let ct = ck.encrypt_image(&c, &setup.plan, &px).unwrap();
        let out = evaluate(&sk, &c, &setup.plan, &ct).unwrap();
        let got = ck.decrypt(&out);
        let want: Vec<i64> = sim::simulate(&c, sim::encode_image(&c, &px)).unwrap().iter().copied().collect();
        assert_eq!(got, want);
    }
}

#[test]
fn measured_noise_matches_the_model() {
    // Bootstrap outputs, then a homomorphic dot product of 2-norm 6 over them: the measured
    // variances of the decrypted errors must match the model's prediction.
    let c = tiny_circuit();
    let p = select(&c, &ParamOptions::default()).unwrap().params;
    let ck = ClientKey::generate(&p);
    let sk = ck.server_key();
    let out_bits = 6;
    let weights = [3i64, -2, 4, 1, -1, 1, 0, 1]; // squared 2-norm 33
    let (pbs, dot) = fhec_runtime::fhe::test_support::noise_samples(&ck, &sk, 3, out_bits, &weights, 240);
    let var = |v: &[f64]| v.iter().map(|e| e * e).sum::<f64>() / v.len() as f64;
    // Errors are in units of Δ = 2^(63 - bits), i.e. 2^-(bits+1) of the torus.
    let to_delta = (2.0f64).powi(2 * (out_bits as i32 + 1));
    let predicted = p.var_pbs() * to_delta;
    let norm_sq: f64 = weights.iter().map(|w| (w * w) as f64).sum();
    let (m1, m2) = (var(&pbs), var(&dot));
    assert!(m1 < 3.0 * predicted && m1 > predicted / 3.0, "PBS output: measured {m1:e}, predicted {predicted:e}");
    assert!(
        m2 < 3.0 * norm_sq * predicted && m2 > norm_sq * predicted / 3.0,
        "dot product: measured {m2:e}, predicted {:e}",
        norm_sq * predicted
    );
}
