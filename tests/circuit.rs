//! The quantizer, the circuit IR and the exact simulator.
//!
//! * circuit snapshots of every bundled model (float exports and the onnxruntime-quantized
//!   import) at default options;
//! * the simulated circuit agrees with the float interpreter on >= 98% of the bundled sample
//!   (>= 90% for models compiled at the narrow widths their metadata names);
//! * range soundness with exact ranges: no simulated value leaves its declared range, on
//!   random images that cover the whole pixel range, not only calibration-like images;
//! * with calibrated ranges (the default), the calibration images stay in range and an image
//!   unlike them is reported as out of range, never a panic or a silent wrong value;
//! * artifacts round-trip, and corrupt ones are errors.

use fhec_compiler::quantize::{QuantError, QuantOptions, RangeMode, compile_circuit};
use fhec_ir::artifact::{Artifact, ArtifactError};
use fhec_ir::circuit::print;
use fhec_ir::nn::interp;
use fhec_runtime::dataset::bundled_sample;
use fhec_runtime::sim;
use fhec_tests::*;
use proptest::prelude::*;

#[test]
fn circuit_snapshots() {
    for b in bundled_models() {
        let c = compile_default(&b);
        insta::assert_snapshot!(format!("circuit_{}", stem(&b.path)), print::print(&c));
    }
}

#[test]
fn simulation_agrees_with_float_on_the_bundled_sample() {
    for b in bundled_models() {
        let g = import(&b.path).unwrap();
        let c = compile_default(&b);
        let ds = bundled_sample(b.dataset);
        let shape = g.node(g.inputs()[0]).shape.clone();
        let mut same = 0;
        for i in 0..ds.len() {
            let f = interp::run(&g, &[ds.input(i, b.preprocess, &shape)]).unwrap().remove(0);
            let fp = sim::argmax(&f.iter().map(|&v| v as f64).collect::<Vec<_>>());
            let (sp, _) = sim::classify(&c, ds.pixels(i)).unwrap();
            same += (fp == sp) as usize;
        }
        let rate = same as f64 / ds.len() as f64;
        // Models trained for narrow widths (4-bit tables) lose more to table resolution.
        let narrow = import(&b.path).unwrap().metadata.contains_key("fhec.compile.max_table_bits");
        let want = if narrow { 0.90 } else { 0.98 };
        assert!(rate >= want, "{}: simulation agrees with float on {same}/{} images", stem(&b.path), ds.len());
    }
}

fn check_image(c: &fhec_ir::circuit::Circuit, px: &[u8]) -> Result<(), TestCaseError> {
    let vals = sim::simulate_all(c, sim::encode_image(c, px)).map_err(|e| TestCaseError::fail(e.to_string()))?;
    sim::check_ranges(c, &vals).map_err(|e| TestCaseError::fail(e.to_string()))
}

/// A bundled model compiled with exact (worst-case) ranges.
fn compile_exact(b: &Bundled) -> fhec_ir::circuit::Circuit {
    let g = import(&b.path).unwrap();
    let ds = bundled_sample(b.dataset);
    let imgs: Vec<&[u8]> = (0..ds.len()).map(|i| ds.pixels(i)).collect();
    let opts = QuantOptions { ranges: RangeMode::Exact, ..QuantOptions::for_model(&g).unwrap() };
    compile_circuit(&g, b.preprocess, &imgs, &opts).unwrap()
}

#[test]
fn calibrated_ranges_hold_the_calibration_set_and_report_other_images() {
    for b in bundled_models() {
        let c = compile_default(&b);
        let ds = bundled_sample(b.dataset);
        for i in 0..ds.len() {
            let vals = sim::simulate_all(&c, sim::encode_image(&c, ds.pixels(i))).unwrap();
            sim::check_ranges(&c, &vals).unwrap_or_else(|e| panic!("{}: image {i}: {e}", stem(&b.path)));
        }
        // Images unlike digits: either computed exactly in range, or reported as out of range.
        let n: usize = c.input_shape().iter().product();
        for px in [vec![255u8; n], (0..n).map(|i| if i % 2 == 0 { 255 } else { 0 }).collect()] {
            match sim::simulate_all(&c, sim::encode_image(&c, &px)) {
                Ok(vals) => sim::check_ranges(&c, &vals).map(|_| ()).unwrap_or_else(|e| assert!(e.out_of_range, "{e}")),
                Err(e) => assert!(e.out_of_range, "{}: {e}", stem(&b.path)),
            }
        }
    }
}

#[test]
fn values_stay_in_their_declared_ranges_on_any_image() {
    for b in bundled_models() {
        let c = compile_exact(&b);
        let n: usize = c.input_shape().iter().product();
        // Extreme images first: all black, all white, checkerboards of both phases.
        for px in [
            vec![0u8; n],
            vec![255u8; n],
            (0..n).map(|i| if i % 2 == 0 { 255 } else { 0 }).collect(),
            (0..n).map(|i| if i % 2 == 1 { 255 } else { 0 }).collect(),
        ] {
            check_image(&c, &px).unwrap();
        }
        let cases =
            if c.nodes.iter().map(|x| x.shape.iter().product::<usize>()).sum::<usize>() > 50_000 { 8 } else { 32 };
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(cases));
        runner
            .run(&proptest::collection::vec(any::<u8>(), n..=n), |px| check_image(&c, &px))
            .unwrap_or_else(|e| panic!("{}: {e}", stem(&b.path)));
        // Sparse bright strokes on black, like digits but anywhere.
        runner
            .run(
                &proptest::collection::vec(prop_oneof![4 => Just(0u8), 1 => Just(255u8), 1 => any::<u8>()], n..=n),
                |px| check_image(&c, &px),
            )
            .unwrap_or_else(|e| panic!("{}: {e}", stem(&b.path)));
    }
}

#[test]
fn quantized_onnx_import_keeps_its_integer_semantics() {
    // The onnxruntime-quantized model's integer weights and uint8 grids come through
    // unchanged at 8-bit weights and wide tables: the circuit then equals the model's own
    // integer arithmetic, so it agrees with the float interpreter (which replays the grids).
    let b = bundled_models().into_iter().find(|b| stem(&b.path) == "ort_int8_qlinear").unwrap();
    let g = import(&b.path).unwrap();
    let ds = bundled_sample(b.dataset);
    let imgs: Vec<&[u8]> = (0..ds.len()).map(|i| ds.pixels(i)).collect();
    let opts = QuantOptions { weight_bits: 8, act_bits: 8, max_table_bits: 20, ..Default::default() };
    let c = compile_circuit(&g, b.preprocess, &imgs, &opts).unwrap();
    let conv = c.nodes.iter().find(|n| n.op.name() == "conv").unwrap();
    if let fhec_ir::circuit::COp::Conv { weight, .. } = &conv.op {
        assert_eq!(weight.iter().map(|v| v.abs()).max(), Some(127), "int8 weights kept");
    }
    let shape = g.node(g.inputs()[0]).shape.clone();
    let mut same = 0;
    for i in 0..ds.len() {
        let f = interp::run(&g, &[ds.input(i, b.preprocess, &shape)]).unwrap().remove(0);
        let fp = sim::argmax(&f.iter().map(|&v| v as f64).collect::<Vec<_>>());
        same += (fp == sim::classify(&c, ds.pixels(i)).unwrap().0) as usize;
    }
    assert!(same >= ds.len() - 1, "{same}/{}", ds.len());
}

#[test]
fn bad_options_and_unsupported_ops_are_errors() {
    let b = &bundled_models()[0];
    let g = import(&b.path).unwrap();
    let ds = bundled_sample(b.dataset);
    let imgs: Vec<&[u8]> = vec![ds.pixels(0)];
    let bad = QuantOptions { weight_bits: 1, ..Default::default() };
    let e = compile_circuit(&g, b.preprocess, &imgs, &bad).unwrap_err();
    assert!(matches!(e, QuantError::Options(_)), "{e}");
    let short: Vec<&[u8]> = vec![&ds.pixels(0)[..100]];
    let e = compile_circuit(&g, b.preprocess, &short, &Default::default()).unwrap_err();
    assert!(e.to_string().contains("has 100 pixels"), "{e}");
    // A product of two different computed tensors is not a table.
    let f = root().join("tests/fixtures/onnx/activations.onnx");
    let g = import(&f).unwrap();
    let e = compile_circuit(&g, b.preprocess, &imgs, &Default::default()).unwrap_err();
    insta::assert_snapshot!("quantize_error_activations", e.to_string());
}

#[test]
fn artifacts_round_trip_and_reject_corruption() {
    let c = compile_default(&bundled_models()[0]);
    let a = Artifact {
        fhec_version: "test".into(),
        source: "cnn_mnist.onnx".into(),
        options: Default::default(),
        circuit: c,
        fhe: None,
    };
    let bytes = a.to_bytes();
    assert_eq!(Artifact::from_bytes(&bytes).unwrap(), a);
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 1;
    assert!(matches!(Artifact::from_bytes(&flipped), Err(ArtifactError::Checksum)));
    assert!(matches!(Artifact::from_bytes(&bytes[..bytes.len() - 3]), Err(ArtifactError::Size(_))));
    let mut v2 = bytes.clone();
    v2[8] = 9;
    assert!(matches!(Artifact::from_bytes(&v2), Err(ArtifactError::Version { found: 9 })));
    assert!(matches!(Artifact::from_bytes(b"PK\x03\x04 not an artifact"), Err(ArtifactError::Magic)));
    // A consistent checksum over a payload that does not decode.
    let mut junk = bytes[..20].to_vec();
    let payload = vec![0xffu8; 64];
    junk[12..20].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    junk.extend_from_slice(&payload);
    let h = payload.iter().fold(0xcbf29ce484222325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100000001b3));
    junk.extend_from_slice(&h.to_le_bytes());
    assert!(matches!(Artifact::from_bytes(&junk), Err(ArtifactError::Decode(_))));
}

#[test]
fn approximate_rounding_compiles_without_rounding_bootstraps() {
    use fhec_compiler::params::{ParamOptions, select};
    use fhec_compiler::quantize::Rounding;
    use fhec_ir::circuit::COp;
    for name in ["seed_mnist.onnx", "seedq_mnist.onnx"] {
        let b = bundled_models().into_iter().find(|b| b.path.ends_with(name)).expect("bundled");
        let g = import(&b.path).unwrap();
        let ds = bundled_sample(b.dataset);
        let imgs: Vec<&[u8]> = (0..ds.len()).map(|i| ds.pixels(i)).collect();
        let exact_opts = QuantOptions::for_model(&g).unwrap();
        let opts = QuantOptions { rounding: Rounding::Approximate, ..exact_opts.clone() };
        let exact = compile_circuit(&g, b.preprocess, &imgs, &exact_opts).unwrap();
        let c = compile_circuit(&g, b.preprocess, &imgs, &opts).unwrap();
        fhec_ir::circuit::verify::verify(&c).unwrap();
        if name == "seed_mnist.onnx" {
            insta::assert_snapshot!("circuit_seed_mnist_approx", print::print(&c));
        }
        // Same tables, no rounding bootstraps; every rounded value keeps its guard steps.
        let (s, e) = (c.bootstrap_stats(), exact.bootstrap_stats());
        assert!(e.rounding > 0 && s.rounding == 0, "{name}: {} rounding bootstraps", s.rounding);
        assert_eq!(s.by_width.values().sum::<usize>(), e.by_width.values().sum::<usize>());
        assert!(c.has_approx_rounding() && !c.has_exact_rounding());
        for (id, n) in c.nodes.iter().enumerate() {
            if let COp::Round { mode, .. } = n.op {
                assert!(mode == Rounding::Approximate && n.range.min >= 1, "%{id}: {:?}", n.range);
            }
        }
        // With the read noise of the chosen parameters sampled, the circuit still agrees
        // with the float model on the bundled sample nearly as often as the exact one.
        let setup = select(&c, &ParamOptions::default()).unwrap();
        assert!(setup.est_cost_ms < select(&exact, &ParamOptions::default()).unwrap().est_cost_ms / 2.0);
        let sigma = setup.approx_round_sigma(&c);
        let rate = setup.approx_step_rate(&c);
        assert!(rate > 0.0 && rate < 0.25, "{name}: {rate} of reads off");
        let shape = g.node(g.inputs()[0]).shape.clone();
        let (mut same, mut same_exact) = (0, 0);
        for i in 0..ds.len() {
            let f = interp::run(&g, &[ds.input(i, b.preprocess, &shape)]).unwrap().remove(0);
            let fp = sim::argmax(&f.iter().map(|&v| v as f64).collect::<Vec<_>>());
            same += (sim::classify_noisy(&c, ds.pixels(i), &sigma).unwrap().0 == fp) as usize;
            same_exact += (sim::classify(&exact, ds.pixels(i)).unwrap().0 == fp) as usize;
        }
        assert!(same + 6 >= same_exact, "{name}: {same} (approximate) vs {same_exact} (exact) of {}", ds.len());
        // Each draw of the read noise is reproducible, draw 0 is `classify_noisy`'s, and
        // other draws sample other noise.
        let scores = |i: usize, d: u64| sim::classify_noisy_draw(&c, ds.pixels(i), &sigma, d).unwrap().1;
        assert_eq!(scores(0, 0), sim::classify_noisy(&c, ds.pixels(0), &sigma).unwrap().1);
        assert_eq!(scores(0, 3), scores(0, 3));
        assert!((0..ds.len()).any(|i| scores(i, 1) != scores(i, 2)), "{name}: draws 1 and 2 agree on every image");
    }
}

/// The tiny CNN with calibrated ranges (6-bit input, 4-bit weights and tables, 3-bit
/// activations), calibrated on pseudo-random images: the fixture of the analyses' snapshot.
fn analysis_fixture(rounding: fhec_compiler::quantize::Rounding) -> (fhec_ir::circuit::Circuit, Vec<Vec<u8>>) {
    // Dark images (pixels below 64), so that calibration narrows the exact ranges.
    let calib: Vec<Vec<u8>> = images(32, 64, 7).into_iter().map(|v| v.into_iter().map(|p| p / 4).collect()).collect();
    let refs: Vec<&[u8]> = calib.iter().map(|v| v.as_slice()).collect();
    let opts =
        QuantOptions { input_bits: 6, weight_bits: 4, act_bits: 3, max_table_bits: 4, rounding, ..Default::default() };
    (compile_circuit(&tiny_graph(), fhec_ir::Preprocess::Unit, &refs, &opts).unwrap(), calib)
}

#[test]
fn every_analysis_verifies_and_recomputes_the_compiled_circuit() {
    use fhec_compiler::analysis::{self, AnalysisKind, calibrate, noise, range};
    use fhec_compiler::quantize::Rounding;
    let mut snap = String::new();
    for rounding in [Rounding::Exact, Rounding::Approximate] {
        let (c, calib) = analysis_fixture(rounding);
        let refs: Vec<&[u8]> = calib.iter().map(|v| v.as_slice()).collect();
        analysis::verify(&c, &refs).unwrap();
        let (ranges, hulls) = range::analyze_checked(&c).unwrap();
        assert_eq!(ranges, range::analyze(&c));
        let vars = noise::analyze(&c);
        let seen = calibrate::observe(&c, &refs).unwrap();
        snap += &format!("=== {rounding} rounding\n");
        for kind in AnalysisKind::ALL {
            snap += &format!("--- {}\n", kind.name());
            for (id, n) in c.nodes.iter().enumerate() {
                let v = match kind {
                    AnalysisKind::Range => {
                        let h = hulls[id];
                        let note = if h != n.range {
                            format!(" (calibrated, within [{}, {}])", h.min, h.max)
                        } else {
                            String::new()
                        };
                        format!("[{}, {}]{note}", n.range.min, n.range.max)
                    }
                    AnalysisKind::Calibrate => {
                        let s = seen[id].unwrap();
                        format!("[{}, {}]", s.min, s.max)
                    }
                    AnalysisKind::Noise => format!("{:.3}", noise::norm2(&vars[id])),
                };
                snap += &format!("%{id} {}: {v}\n", n.name);
            }
        }
        // Each verifier rejects what it checks.
        let conv = c.nodes.iter().position(|n| matches!(n.op, fhec_ir::circuit::COp::Conv { .. })).unwrap();
        let mut bad = c.clone();
        bad.nodes[conv].range.max += 1;
        assert!(AnalysisKind::Range.verify(&bad, &refs).is_err());
        let mut bad = c.clone();
        bad.nodes[conv].norm2 *= 2.0;
        assert!(AnalysisKind::Noise.verify(&bad, &refs).is_err());
        let declared = (0..c.nodes.len())
            .find(|&id| hulls[id] != c.nodes[id].range)
            .unwrap_or_else(|| panic!("no calibrated declaration:\n{}", print::print(&c)));
        let mut bad = c.clone();
        bad.nodes[declared].range.max = bad.nodes[declared].range.min;
        assert!(AnalysisKind::Calibrate.verify(&bad, &refs).is_err());
    }
    insta::assert_snapshot!("analyses_tiny", snap);
}
