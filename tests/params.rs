//! Parameter selection and the noise model (no tfhe-rs needed): chosen parameters are
//! secure and meet the failure target, over a grid of widths and 2-norms and on a real
//! compiled circuit.

use fhec_compiler::params::{ParamOptions, search, select, select_rounding};
use fhec_ir::params::{NoiseRequirement, TfheParams, failure_probability, is_secure, kappa, min_secure_std};
use fhec_tests::{bundled_models, compile_default, stem, tiny_circuit};

#[test]
fn selected_parameters_are_secure_and_meet_the_error_target() {
    let c = tiny_circuit();
    let setup = select(&c, &ParamOptions::default()).unwrap();
    assert!(setup.params.is_secure(), "{:?}", setup.params);
    assert!(setup.security_bits >= 128.0);
    assert!(setup.global_p_error <= (-40.0f64).exp2() * 1.0001, "{}", setup.global_p_error);
    insta::assert_snapshot!("params_tiny", format!("{:#?}", setup.params));
}

#[test]
fn parameter_grid_meets_security_and_error() {
    // Synthetic circuits reduced to their requirements: for each (width, 2-norm) the chosen
    // parameters must be secure and keep the failure probability under the target.
    for w in [1u32, 2, 3, 4, 5, 6] {
        for nu in [1.0f64, 4.0, 16.0, 64.0] {
            let req = NoiseRequirement {
                encoding_bits: w,
                read_bits: w,
                norm2_sq: nu * nu,
                extra_pbs: 0,
                extra_from_rounding: false,
                rounding_read: false,
                count: 1000,
                decryption: false,
                approx: false,
            };
            let (cost, p) = search(&[req], 1e-12, (1, 0)).unwrap_or_else(|| panic!("no parameters for w={w}, nu={nu}"));
            assert!(p.is_secure(), "w={w} nu={nu}: {p:?}");
            assert!(failure_probability(&p, &req) <= 1e-12);
            // The search is at least as good as a brute-force reference over a coarse grid.
            if let Some(r) = search_one(&req, 1e-12) {
                assert!(cost <= r.cost() * 1.0001, "w={w} nu={nu}: {cost} > {}", r.cost());
            }
        }
    }
}

/// A brute-force reference search over a coarse grid (k=1).
fn search_one(req: &NoiseRequirement, target: f64) -> Option<TfheParams> {
    let mut best: Option<TfheParams> = None;
    for log_n in 9..=14 {
        for n in (500..=1100).step_by(50) {
            for pl in 1..=4 {
                for pb in [6u32, 8, 10, 12, 15, 18, 22] {
                    for kl in 2..=10 {
                        for kb in [2u32, 3, 4, 5, 6] {
                            let p = TfheParams {
                                lwe_dimension: n,
                                glwe_dimension: 1,
                                polynomial_size: 1 << log_n,
                                lwe_noise_std: min_secure_std(n),
                                glwe_noise_std: min_secure_std(1 << log_n),
                                pbs_base_log: pb,
                                pbs_level: pl,
                                ks_base_log: kb,
                                ks_level: kl,
                                round_key: None,
                            };
                            if failure_probability(&p, req) <= target && best.is_none_or(|b| p.cost() < b.cost()) {
                                best = Some(p);
                            }
                        }
                    }
                }
            }
        }
    }
    best
}

#[test]
fn security_curve_and_kappa() {
    assert!(!is_secure(400, 1e-3), "below the minimal dimension");
    assert!(is_secure(742, min_secure_std(742)));
    assert!(!is_secure(742, min_secure_std(742) / 2.0));
    assert!((kappa(1e-9) - 6.109).abs() < 0.01, "kappa(1e-9) = {}", kappa(1e-9));
}

#[test]
fn wide_tables_are_reported_infeasible() {
    // An 11-bit table read (the default compile options) has no fast 128-bit parameters:
    // selection must fail with a message naming the widths, not pick insecure ones.
    let req_circuit = {
        let b = &fhec_tests::bundled_models()[0];
        fhec_tests::compile_default(b)
    };
    match select(&req_circuit, &ParamOptions::default()) {
        Ok(s) => assert!(s.params.is_secure()),
        Err(e) => assert!(e.to_string().contains("no 128-bit parameters"), "{e}"),
    }
}

#[test]
fn parameters_of_the_bundled_models() {
    // What the compiler chooses for every bundled model at its default compile options
    // (or why none exist: the post-training models' 11-bit tables), rounding chunks included.
    use std::fmt::Write;
    let mut out = String::new();
    for b in bundled_models() {
        // As `fhec build` does: the rounding chunks chosen with the parameters.
        let mut c = compile_default(&b);
        let chosen = select_rounding(&mut c, &ParamOptions::default());
        let st = c.bootstrap_stats();
        write!(
            out,
            "{} ({} bootstraps, widest table {} bits, rounding chunks of {} bits): ",
            stem(&b.path),
            st.total(),
            st.max_width(),
            c.round_chunk
        )
        .unwrap();
        match chosen {
            Ok(s) => {
                let p = &s.params;
                assert!(p.is_secure() && s.security_bits >= 128.0 && s.global_p_error <= (-40.0f64).exp2() * 1.0001);
                writeln!(
                    out,
                    "{}, security {:.0} bits, p_error 2^{:.1} per inference",
                    p.summary(),
                    s.security_bits,
                    s.global_p_error.log2()
                )
                .unwrap();
            }
            Err(e) => writeln!(out, "none: {e}").unwrap(),
        }
    }
    insta::assert_snapshot!("params_bundled", out);
}

#[test]
fn rounding_chunks_are_chosen_with_the_parameters_at_least_cost() {
    // For the bundled models that round: every chunk width from 1 bit to one more than the
    // widest table is costed with its own parameters, and the cheapest one is kept.
    for b in bundled_models().iter().filter(|b| ["fhe_mnist", "seed_mnist"].contains(&stem(&b.path).as_str())) {
        let name = stem(&b.path);
        let mut c = compile_default(b);
        let default = c.default_round_chunk();
        assert_eq!(c.round_chunk, default, "{}: lowering sets the default width", name);
        let one_bit = {
            let mut t = c.clone();
            t.round_chunk = 1;
            t.bootstrap_stats().rounding
        };
        let costs: Vec<(u32, f64)> = (1..=default)
            .filter_map(|k| {
                let mut t = c.clone();
                t.round_chunk = k;
                select(&t, &ParamOptions::default()).ok().map(|s| (k, s.est_cost_ms))
            })
            .collect();
        let best = costs.iter().map(|&(_, ms)| ms).fold(f64::INFINITY, f64::min);
        let chosen = select_rounding(&mut c, &ParamOptions::default()).unwrap();
        assert_eq!(chosen.est_cost_ms, best, "{}: {costs:?}", name);
        assert!(costs.contains(&(c.round_chunk, best)));
        assert!(chosen.security_bits >= 128.0 && chosen.global_p_error <= (-40.0f64).exp2() * 1.0001);
        // Wider chunks pay for the seed network (fewer rounding bootstraps than one per
        // removed bit, and less estimated time); fhe_mnist's one-level rounding bootstrap is
        // cheap enough that one-bit chunks win there.
        if name == "seed_mnist" {
            assert!(c.round_chunk > 1 && c.bootstrap_stats().rounding < one_bit, "{}: {costs:?}", name);
            assert!(best < 0.9 * costs[0].1, "{}: {costs:?}", name);
        }
    }
}

#[test]
fn rounding_gets_a_cheaper_bootstrap_of_its_own_where_it_pays() {
    // The seed network's exact rounding reads at most a chunk; its own bootstrap (a smaller
    // key sharing the main key's first coefficients) costs far less than a table's.
    let b = bundled_models().into_iter().find(|b| stem(&b.path) == "seed_mnist").expect("seed_mnist is bundled");
    let mut c = compile_default(&b);
    let setup = select_rounding(&mut c, &ParamOptions::default()).unwrap();
    let p = setup.params;
    let r = p.round_key.expect("a rounding key for the seed network");
    assert!(p.is_secure() && setup.security_bits >= 128.0);
    assert!(r.glwe_dimension * r.polynomial_size <= p.big_dimension());
    assert!(p.round_cost() < p.cost() / 3.0, "{}: {} vs {}", p.summary(), p.round_cost(), p.cost());
    assert!(setup.global_p_error <= (-40.0f64).exp2() * 1.0001);
    // Without it (everything on the main bootstrap) the same circuit is estimated slower.
    let plan = fhec_ir::params::EncodingPlan::plan(&c).unwrap();
    let st = c.bootstrap_stats();
    let reqs = plan.requirements(&c);
    let target = (-40.0f64).exp2() / reqs.iter().map(|r| r.count).sum::<usize>() as f64;
    let (main_only, _) = search(&reqs, target, (st.total(), 0)).unwrap();
    assert!(setup.est_cost_ms < main_only, "{} vs {main_only}", setup.est_cost_ms);
    // The conv layer's 256 tables and its 1024 rounding reads work on values computed from
    // the input and rounding outputs only: with the rounding key they are on its prefix of
    // the key, and their keyswitches are shorter (the fc layer's are not).
    assert_eq!((st.tables_on_input_key, st.rounding_on_input_key), (256, 1024), "{st:?}");
    let mix = fhec_ir::params::BootstrapMix::of(&st);
    let all_long = fhec_ir::params::BootstrapMix { main_on_input_key: 0, rounding_on_input_key: 0, ..mix };
    assert!(p.mix_cost(&mix) < p.mix_cost(&all_long));
    assert!((p.mix_cost(&mix) - setup.est_cost_ms).abs() < 1e-6 * setup.est_cost_ms);
}
