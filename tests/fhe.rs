//! Encrypted execution (feature `fhe`): the security curve against tfhe-rs's
//! estimator-checked sets, the noise model against real ciphertexts, end-to-end runs whose
//! decrypted outputs must equal the exact simulation (a small CNN, and the bundled
//! `fhe_mnist` through the byte-only app API), and mismatched or corrupt keys and
//! ciphertexts rejected with errors.
//! Every test here uses 128-bit parameters chosen by the compiler.

use fhec_compiler::params::{ParamOptions, select};
use fhec_ir::artifact::{Artifact, ParametrizedCircuit};
use fhec_ir::params::min_secure_std;
use fhec_runtime::app::{Client, Server};
use fhec_runtime::dataset::{DatasetKind, bundled_sample};
use fhec_runtime::fhe::{ClientKey, evaluate};
use fhec_runtime::sim;
use fhec_tests::{bundled_models, compile_default, images, stem, tiny_circuit};

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
    let pc = ParametrizedCircuit::new(&c, &setup).unwrap();
    for px in images(3, 64, 99) {
        let ct = ck.encrypt_image(&pc, &px).unwrap();
        let out = evaluate(&sk, &pc, &ct).unwrap();
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

/// The bundled network made for encrypted inference, compiled with its metadata's widths.
fn fhe_mnist_artifact() -> (fhec_ir::circuit::Circuit, Vec<u8>) {
    let b = bundled_models().into_iter().find(|b| stem(&b.path) == "fhe_mnist").expect("fhe_mnist is bundled");
    let c = compile_default(&b);
    let setup = select(&c, &ParamOptions::default()).expect("128-bit parameters exist for fhe_mnist");
    assert!(setup.security_bits >= 128.0 && setup.global_p_error <= (-40.0f64).exp2());
    let art = Artifact {
        fhec_version: "test".into(),
        source: "fhe_mnist.onnx".into(),
        options: Default::default(),
        circuit: c.clone(),
        fhe: Some(setup),
    };
    (c, art.to_bytes())
}

#[test]
fn bundled_model_encrypted_through_the_app_api_equals_simulation() {
    // Client and server exchange only bytes: evaluation key, encrypted image, encrypted result.
    let (c, art) = fhe_mnist_artifact();
    let client = Client::new(&art).unwrap();
    let server = Server::new(&art, &client.evaluation_key()).unwrap();
    let ds = bundled_sample(DatasetKind::Mnist);
    for i in 0..2 {
        let px = ds.pixels(i);
        let result = server.classify(&client.encrypt(px).unwrap()).unwrap();
        let pred = client.decrypt(&result).unwrap();
        let want: Vec<i64> = sim::simulate(&c, sim::encode_image(&c, px)).unwrap().iter().copied().collect();
        assert_eq!(pred.raw, want, "image {i}");
        assert_eq!(pred.class, sim::classify(&c, px).unwrap().0);
    }
}

#[test]
fn mismatched_or_corrupt_keys_and_ciphertexts_are_errors() {
    let (_, art) = fhe_mnist_artifact();
    let tiny = tiny_circuit();
    let tiny_setup = select(&tiny, &ParamOptions::default()).unwrap();
    let tiny_art = Artifact {
        fhec_version: "test".into(),
        source: "tiny".into(),
        options: Default::default(),
        circuit: tiny.clone(),
        fhe: Some(tiny_setup),
    }
    .to_bytes();
    let tiny_client = Client::new(&tiny_art).unwrap();
    // An evaluation key made for another model's parameters.
    let e = Server::new(&art, &tiny_client.evaluation_key()).err().expect("must fail").to_string();
    assert!(e.contains("evaluation key") && e.contains("other TFHE parameters"), "{e}");
    // A secret key given where an evaluation key is expected.
    let e = Server::new(&tiny_art, &tiny_client.secret_key()).err().expect("must fail").to_string();
    assert!(e.contains("client key but a server key"), "{e}");
    // A corrupted and a truncated ciphertext; an image of the wrong size.
    let tiny_server = Server::new(&tiny_art, &tiny_client.evaluation_key()).unwrap();
    let mut ct = tiny_client.encrypt(&images(1, 64, 5)[0]).unwrap();
    let mid = ct.len() / 2;
    ct[mid] ^= 1;
    let e = tiny_server.classify(&ct).unwrap_err().to_string();
    assert!(e.contains("corrupt"), "{e}");
    let e = tiny_server.classify(&ct[..ct.len() - 9]).unwrap_err().to_string();
    assert!(e.contains("truncated"), "{e}");
    let e = tiny_client.encrypt(&[0u8; 10]).unwrap_err().to_string();
    assert!(e.contains("10 pixels"), "{e}");
    // A result decrypted with a key of other parameters, and an artifact without parameters.
    let e = Client::new(&art).unwrap().decrypt(&tiny_client.encrypt(&images(1, 64, 6)[0]).unwrap()).unwrap_err();
    assert!(e.to_string().contains("other TFHE parameters"), "{e}");
    let mut no_params = Artifact::from_bytes(&tiny_art).unwrap();
    no_params.fhe = None;
    let e = Client::new(&no_params.to_bytes()).err().expect("must fail").to_string();
    assert!(e.contains("no TFHE parameters"), "{e}");
}

#[test]
fn keys_from_the_client_part_work_with_a_server_of_the_full_artifact() {
    // The model owner ships the client part (no weights) and keeps the artifact.
    let c = tiny_circuit();
    let setup = select(&c, &ParamOptions::default()).unwrap();
    assert!(setup.security_bits >= 128.0);
    let art = Artifact {
        fhec_version: "test".into(),
        source: "tiny".into(),
        options: Default::default(),
        circuit: c.clone(),
        fhe: Some(setup),
    };
    let (full, part) = (art.to_bytes(), art.client_part().unwrap().to_bytes());
    let client = Client::new(&part).unwrap();
    let server = Server::new(&full, &client.evaluation_key()).unwrap();
    let px = &images(1, 64, 41)[0];
    let result = server.classify(&client.encrypt(px).unwrap()).unwrap();
    let pred = client.decrypt(&result).unwrap();
    // Exactly the simulation of the full circuit, so the class of the full artifact's.
    let want: Vec<i64> = sim::simulate(&c, sim::encode_image(&c, px)).unwrap().iter().copied().collect();
    assert_eq!(pred.raw, want);
    assert_eq!(pred.class, sim::classify(&c, px).unwrap().0);
    // A client of the full artifact with the same secret key reads the same prediction: the
    // keys are the same either way.
    let full_client = Client::with_key(&full, &client.secret_key()).unwrap();
    assert_eq!(full_client.decrypt(&result).unwrap(), pred);
    assert_eq!(full_client.spec(), client.spec());
    // The server needs the full artifact.
    let e = Server::new(&part, &client.evaluation_key()).err().expect("must fail").to_string();
    assert!(e.contains("holds a client part") && e.contains("needs the full artifact"), "{e}");
}

/// `input (10 bits, in `input`) → round 6 bits off (`approx` or exact, to `rounded`) → 4-bit
/// shared `table` (values in `out`)` on a 4x4 image, the pixels mapped by `pixel_to_q`.
#[allow(clippy::too_many_arguments)]
fn round_then_table(
    name: &str,
    input: fhec_ir::circuit::Range,
    approx: bool,
    rounded: fhec_ir::circuit::Range,
    table: Vec<i64>,
    out: fhec_ir::circuit::Range,
    pixel_to_q: Vec<i64>,
    round_chunk: u32,
) -> fhec_ir::circuit::Circuit {
    use fhec_ir::circuit::{CNode, COp, Circuit, InputQuant, OutputQuant, Rounding, TableIndex};
    let node = |name: &str, op: COp, inputs: Vec<usize>, range| CNode {
        name: name.into(),
        op,
        inputs,
        shape: vec![1, 1, 4, 4],
        range,
        norm2: 1.0,
    };
    Circuit {
        name: name.into(),
        metadata: Default::default(),
        nodes: vec![
            node("input", COp::Input { bits: 10 }, vec![], input),
            node(
                "round",
                COp::Round { shift: 6, mode: if approx { Rounding::Approximate } else { Rounding::Exact } },
                vec![0],
                rounded,
            ),
            node("table", COp::Table { in_width: 4, index: TableIndex::Shared, tables: vec![table] }, vec![1], out),
        ],
        output: 2,
        input_quant: InputQuant { pixel_to_q },
        output_quant: OutputQuant { scale: vec![1.0; 16], offset: vec![0.0; 16] },
        round_chunk,
        output_bits: None,
    }
}

/// `input (10 bits) → round 6 bits off → 4-bit table` on a 4x4 image, with rounding chunks of
/// at most `chunk` bits. Pixel `p < 32` reads `64·(p/2)` or `64·(p/2) + 63` (both ends of
/// every rounding interval), other pixels spread over the range; the table has negative
/// entries.
fn rounding_circuit(chunk: u32) -> fhec_ir::circuit::Circuit {
    use fhec_ir::circuit::Range;
    round_then_table(
        "rounding",
        Range { min: 0, max: 1023 },
        false,
        Range { min: 0, max: 15 },
        (0..16).map(|i| (i * 5) % 16 - 8).collect(),
        Range { min: -8, max: 7 },
        (0..256i64).map(|p| if p < 32 { 64 * (p / 2) + 63 * (p % 2) } else { (p * 37) % 1024 }).collect(),
        chunk,
    )
}

#[test]
fn exact_rounding_in_chunks_of_every_width_equals_simulation() {
    use fhec_ir::params::{RoundKeyParams, TfheParams, failure_probability};
    // One key serves every chunk width: the parameters chosen for the widest chunks (their
    // reads are as wide as the table's) keep every width's bootstraps far from failing.
    let widest = rounding_circuit(5);
    assert_eq!(widest.default_round_chunk(), 5);
    let chosen = select(&widest, &ParamOptions::default()).unwrap().params;
    // The rounding bootstrap three ways: on the main key; on a key of two polynomials of
    // N/2 sharing the main key's coefficients (the prefix mapping of a multi-polynomial
    // key); and as the search chose it.
    let main_only = TfheParams { round_key: None, ..chosen };
    let half = chosen.polynomial_size / 2;
    let two_polys = RoundKeyParams {
        glwe_dimension: 2,
        polynomial_size: half,
        glwe_noise_std: min_secure_std(2 * half),
        bootstrap: Some(fhec_ir::params::Decomposition { base_log: 15, level: 2 }),
    };
    let shared = TfheParams { round_key: Some(two_polys), ..chosen };
    assert!(shared.is_secure());
    for params in [main_only, shared, chosen] {
        let ck = ClientKey::generate(&params);
        let sk = ck.server_key();
        sk.check(&params).unwrap();
        for (chunk, chunks, bootstraps) in
            [(1, vec![1; 6], 6), (2, vec![2, 2, 2], 6), (3, vec![3, 3], 4), (4, vec![4, 2], 4), (5, vec![5, 1], 3)]
        {
            let c = rounding_circuit(chunk);
            fhec_ir::circuit::verify::verify(&c).unwrap();
            assert_eq!(c.round_chunks(6), chunks);
            assert_eq!(c.bootstrap_stats().rounding, 16 * bootstraps);
            let plan = fhec_ir::params::EncodingPlan::plan(&c).unwrap();
            let global: f64 =
                plan.requirements(&c).iter().map(|r| r.count as f64 * failure_probability(&params, r)).sum();
            if global > (-30.0f64).exp2() {
                // Chunks this wide need a finer rounding bootstrap than the one under test.
                assert!(
                    params.round_key.is_some() && chunk > 2,
                    "{}: chunks of {chunk}: failure {global:e}",
                    params.summary()
                );
                continue;
            }
            for px in [(0u8..16).collect::<Vec<u8>>(), (16u8..32).collect(), (100u8..116).collect()] {
                let pc = ParametrizedCircuit::with_params(&c, &params, &plan).unwrap();
                let ct = ck.encrypt_image(&pc, &px).unwrap();
                let got = ck.decrypt(&evaluate(&sk, &pc, &ct).unwrap());
                let want: Vec<i64> = sim::simulate(&c, sim::encode_image(&c, &px)).unwrap().iter().copied().collect();
                assert_eq!(got, want, "{}: chunks of {chunk}, pixels {px:?}", params.summary());
            }
        }
    }
}

/// `input (10 bits, [64, 959]) → approximately round 6 bits off → 4-bit identity table`: the
/// table reads the input's top bits directly, with one step of guard on each side. Pixel
/// `p < 28` reads `64·(p/2 + 1)` or `64·(p/2 + 1) + 63` (both ends of a step), others the
/// middle of a step.
fn approx_rounding_circuit() -> fhec_ir::circuit::Circuit {
    use fhec_ir::circuit::Range;
    round_then_table(
        "approx_rounding",
        Range { min: 64, max: 959 },
        true,
        Range { min: 1, max: 14 },
        (0..16).collect(),
        Range { min: 0, max: 15 },
        (0..256i64).map(|p| if p < 28 { 64 * (p / 2 + 1) + 63 * (p % 2) } else { 64 * (1 + p % 14) + 32 }).collect(),
        1,
    )
}

#[test]
fn approximate_rounding_reads_are_exact_or_one_step_off() {
    let c = approx_rounding_circuit();
    fhec_ir::circuit::verify::verify(&c).unwrap();
    assert!(c.has_approx_rounding() && !c.has_exact_rounding());
    assert_eq!(c.bootstrap_stats().total(), 16, "one table bootstrap per value, none for rounding");
    let setup = select(&c, &ParamOptions::default()).unwrap();
    assert!(setup.params.is_secure() && !setup.params.has_rounding_bsk());
    let sigma = setup.approx_round_sigma(&c)[1];
    // The failure target keeps the noise well under a step (it fails at a whole step), so
    // the middle of a step (32 units from both boundaries) reads exactly almost always, and
    // a read half a unit from a boundary is close to a coin toss.
    assert!(sigma > 0.5 && sigma < 16.0, "sigma {sigma}");
    let ck = ClientKey::generate(&setup.params);
    let sk = ck.server_key();
    let (mut off, mut boundary_reads, mut middle_off) = (0, 0, 0);
    for px in [(0u8..16).collect::<Vec<u8>>(), (12u8..28).collect(), (100u8..116).collect()] {
        let pc = ParametrizedCircuit::new(&c, &setup).unwrap();
        let ct = ck.encrypt_image(&pc, &px).unwrap();
        let got = ck.decrypt(&evaluate(&sk, &pc, &ct).unwrap());
        let v = sim::encode_image(&c, &px);
        for (g, &v) in got.iter().zip(v.iter()) {
            let want = v >> 6;
            assert!((g - want).abs() <= 1, "input {v}: read {g}, exact {want}");
            if v % 64 == 32 {
                middle_off += (*g != want) as usize;
            } else {
                // An off-by-one goes across the nearer boundary only.
                let toward = if v % 64 == 0 { want - 1 } else { want + 1 };
                assert!(*g == want || *g == toward, "input {v}: read {g}");
                off += (*g != want) as usize;
                boundary_reads += 1;
            }
        }
    }
    // 32 units is about 4 sigma: at most one of the 16 middle reads may cross (p ~ 1e-4 each).
    assert!(middle_off <= 1, "{middle_off} of 16 reads in the middle of a step off");
    // Half a unit from a boundary: about half of the 32 reads cross (4 sd margins).
    assert_eq!(boundary_reads, 32);
    assert!((4..=28).contains(&off), "{off} of {boundary_reads} boundary reads off");
}

#[test]
fn simulator_samples_approximate_rounding_like_the_noise_model() {
    let c = approx_rounding_circuit();
    // The verifier wants a guard step at both ends and tables as the only readers.
    let mut no_guard = c.clone();
    no_guard.nodes[1].range.max = 15;
    let e = fhec_ir::circuit::verify::verify(&no_guard).unwrap_err().to_string();
    assert!(e.contains("no guard step"), "{e}");
    // A table wider than the rounded range needs (16 steps of a 5-bit table) reads one bit
    // more of the input than its range has: the plan widens the input's encoding.
    let mut wide = c.clone();
    wide.nodes[1].range.max = 15;
    wide.nodes[2].op = fhec_ir::circuit::COp::Table {
        in_width: 5,
        index: fhec_ir::circuit::TableIndex::Shared,
        tables: vec![(0..32).map(|i: i64| i.min(15)).collect()],
    };
    fhec_ir::circuit::verify::verify(&wide).unwrap();
    assert_eq!(fhec_ir::params::EncodingPlan::plan(&wide).unwrap().bits, vec![11, 5, 5]);
    let mut read_by_output = c.clone();
    read_by_output.output = 1;
    let e = fhec_ir::circuit::verify::verify(&read_by_output).unwrap_err().to_string();
    assert!(e.contains("only tables may read"), "{e}");
    // With no noise the simulator floors exactly.
    let px: Vec<u8> = (0..16).collect();
    let exact: Vec<i64> = sim::simulate(&c, sim::encode_image(&c, &px)).unwrap().iter().copied().collect();
    let floor: Vec<i64> = sim::encode_image(&c, &px).iter().map(|v| v >> 6).collect();
    assert_eq!(exact, floor);
    // With sigma = 8 units, a value spread evenly over its step crosses a boundary with
    // probability E|e| / 64 = 8·sqrt(2/pi) / 64 ≈ 10%; draws depend on the seed only.
    let sigma = [0.0, 8.0, 0.0];
    let (mut off, mut total) = (0usize, 0usize);
    for seed in 0..400u64 {
        let input = ndarray::ArrayD::from_shape_fn(ndarray::IxDyn(&[1, 1, 4, 4]), |i| {
            64 + ((seed as usize * 16 + i[2] * 4 + i[3]) * 7919 % 896) as i64
        });
        let a = sim::simulate_all_noisy(&c, input.clone(), &sigma, seed).unwrap();
        let b = sim::simulate_all_noisy(&c, input.clone(), &sigma, seed).unwrap();
        assert_eq!(a, b, "same seed, same draws");
        for (r, v) in a[1].iter().zip(input.iter()) {
            assert!((r - (v >> 6)).abs() <= 1);
            off += (*r != v >> 6) as usize;
            total += 1;
        }
    }
    let rate = off as f64 / total as f64;
    assert!((0.07..0.13).contains(&rate), "{off} of {total} reads one step off");
    // A read past the table's last step (which would wrap around the torus) is reported as
    // out of range, with or without noise; one in a guard step is computed.
    let past = ndarray::ArrayD::from_elem(ndarray::IxDyn(&[1, 1, 4, 4]), 1100i64);
    for sigma in [&sigma[..], &[]] {
        let e = sim::simulate_all_noisy(&c, past.clone(), sigma, 1).unwrap_err();
        assert!(e.out_of_range && e.message.contains("to step 17, outside the table's steps 0 to 15"), "{e}");
    }
    let guard = ndarray::ArrayD::from_elem(ndarray::IxDyn(&[1, 1, 4, 4]), 992i64);
    assert!(sim::simulate_all(&c, guard).unwrap()[2].iter().all(|&v| v == 15));
}
