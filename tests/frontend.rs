//! The ONNX frontend and the float interpreter against onnxruntime and tract.
//!
//! * `tests/fixtures/onnx/`: small models covering export styles (made by
//!   `tests/fixtures/make_fixtures.py`), each with onnxruntime's output for a random input;
//! * `examples/models/`: the bundled models, run on the bundled sample images;
//! * `tests/fixtures/errors/`: models that must be rejected with a precise message.
//!
//! Outputs must agree within 1e-4, relative to the reference output's largest magnitude.

use fhec_compiler::{ImportError, ImportOptions, import_onnx};
use fhec_ir::Preprocess;
use fhec_ir::nn::{interp, print, verify};
use fhec_runtime::dataset::{Dataset, DatasetKind};
use fhec_tests::*;

const TOL: f32 = 1e-4;

#[test]
fn fixtures_match_onnxruntime_and_tract() {
    let files = onnx_files("tests/fixtures/onnx");
    assert!(files.len() >= 15, "fixtures missing: {files:?}");
    for f in files {
        let name = stem(&f);
        let exp = Expected::for_model(&f).unwrap();
        let g = import(&f).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        verify::verify(&g).unwrap();
        let x = exp.input();
        let got = interp::run(&g, std::slice::from_ref(&x)).unwrap().remove(0);
        let t = tract_run(&f, &x).unwrap_or_else(|e| panic!("{name}: tract: {e:#}"));
        let (e_ort, e_tract) = (rel_err(&got, &exp.output()), rel_err(&got, &t));
        assert!(
            e_ort <= TOL && e_tract <= TOL,
            "{name} ({}): rel. error vs onnxruntime {e_ort}, vs tract {e_tract} (tract vs onnxruntime {})",
            exp.note,
            rel_err(&t, &exp.output())
        );
    }
}

#[test]
fn fixture_ir_snapshots() {
    for f in onnx_files("tests/fixtures/onnx") {
        let g = import(&f).unwrap();
        insta::assert_snapshot!(format!("fixture_{}", stem(&f)), print::print(&g));
    }
}

fn bundled() -> Vec<(std::path::PathBuf, Preprocess)> {
    let models = bundled_models();
    assert_eq!(models.len(), onnx_files("examples/models").len(), "every bundled model is in the manifest");
    models.into_iter().map(|b| (b.path, b.preprocess)).collect()
}

#[test]
fn bundled_models_ir_snapshots() {
    for (f, _) in bundled() {
        insta::assert_snapshot!(format!("model_{}", stem(&f)), print::print(&import(&f).unwrap()));
    }
}

#[test]
fn bundled_models_match_tract_on_sample_images() {
    let ds = Dataset::load_test(&root().join("examples/data"), DatasetKind::Mnist).unwrap();
    let models = bundled();
    assert!(models.len() >= 3);
    for (f, pre) in models {
        let g = import(&f).unwrap();
        let shape = g.node(g.inputs()[0]).shape.clone();
        // Models tract cannot run (onnxruntime's contrib ops; per-channel QDQ weights) are
        // checked against onnxruntime's recorded outputs instead (tests/fixtures/reference/).
        let recorded = root().join(format!("tests/fixtures/reference/{}.json", stem(&f)));
        let recorded: Option<serde_json::Value> =
            recorded.exists().then(|| serde_json::from_str(&std::fs::read_to_string(&recorded).unwrap()).unwrap());
        for i in 0..12 {
            let x = ds.input(i, pre, &shape);
            let got = interp::run(&g, std::slice::from_ref(&x)).unwrap().remove(0);
            match &recorded {
                None => {
                    let want = tract_run(&f, &x).unwrap();
                    let e = rel_err(&got, &want);
                    assert!(e <= TOL, "{}: image {i}: rel. error {e}", stem(&f));
                }
                Some(r) => {
                    let want: Vec<f32> =
                        r["outputs"][i].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
                    let want = ndarray::ArrayD::from_shape_vec(got.raw_dim(), want).unwrap();
                    let e = rel_err(&got, &want);
                    assert!(e <= TOL, "{}: image {i}: rel. error {e} against onnxruntime", stem(&f));
                }
            }
        }
    }
}

#[test]
fn error_message_snapshots() {
    let mut report = String::new();
    for f in onnx_files("tests/fixtures/errors") {
        let err = import(&f).expect_err(&stem(&f));
        report.push_str(&format!("{}: {err:#}\n", stem(&f)));
    }
    insta::assert_snapshot!("import_errors", report);
}

#[test]
fn malformed_bytes_are_errors_not_panics() {
    let good = std::fs::read(root().join("examples/models/zoo_mnist8.onnx")).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("text", b"this is not a model".to_vec()),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("garbage", (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect()),
    ];
    for (name, bytes) in cases {
        let r = import_onnx(&bytes, &ImportOptions::default());
        assert!(r.is_err(), "{name}: accepted");
    }
    // Flipping bytes anywhere in a real model must never panic.
    for k in (0..good.len()).step_by(97) {
        let mut b = good.clone();
        b[k] ^= 0xA5;
        let _ = import_onnx(&b, &ImportOptions::default());
    }
}

#[test]
fn unsupported_op_error_names_node_and_op() {
    let err = import(&root().join("tests/fixtures/errors/unsupported_op.onnx")).unwrap_err();
    let e = err.downcast::<ImportError>().unwrap();
    match e {
        ImportError::UnsupportedOp { node, op_type, supported, .. } => {
            assert_eq!((node.as_str(), op_type.as_str()), ("gelu_erf", "Erf"));
            assert!(supported.contains("Conv"));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn input_shape_override_resolves_symbolic_dimensions() {
    let bytes = std::fs::read(root().join("tests/fixtures/errors/symbolic_height.onnx")).unwrap();
    let opts = ImportOptions { input_shape: Some(vec![1, 1, 28, 28]), ..ImportOptions::default() };
    let g = import_onnx(&bytes, &opts).unwrap();
    assert_eq!(g.node(g.outputs()[0]).shape, vec![1, 1, 28, 28]);
}

#[test]
fn torch_exports_with_and_without_folding_agree() {
    // Constant folding changes the graph, not the function.
    for opset in [9, 11, 13, 18] {
        let a = import(&root().join(format!("tests/fixtures/onnx/torch_opset{opset}_folded.onnx"))).unwrap();
        let b = import(&root().join(format!("tests/fixtures/onnx/torch_opset{opset}_unfolded.onnx"))).unwrap();
        let x = Expected::for_model(&root().join(format!("tests/fixtures/onnx/torch_opset{opset}_folded.onnx")))
            .unwrap()
            .input();
        let ya = interp::run(&a, std::slice::from_ref(&x)).unwrap().remove(0);
        let yb = interp::run(&b, &[x]).unwrap().remove(0);
        assert!(rel_err(&ya, &yb) <= TOL, "opset {opset}");
    }
}

/// Sizes read from a model file or a flag are checked arithmetic: huge input shapes and
/// paddings are errors naming what is too large, never an overflow panic.
#[test]
fn huge_shapes_and_paddings_are_errors_not_panics() {
    use prost::Message;
    use tract_onnx::pb::{AttributeProto, ModelProto};
    let bytes = std::fs::read(root().join("examples/models/cnn_mnist.onnx")).unwrap();
    for shape in
        [vec![1, 1, 1 << 40, 1 << 40], vec![1, 1, 1 << 62, 4], vec![1, 1, 0, 28], vec![1, 1, 4096, 4096 * 4096]]
    {
        let opts = ImportOptions { input_shape: Some(shape.clone()), ..ImportOptions::default() };
        let e = import_onnx(&bytes, &opts).unwrap_err().to_string();
        assert!(e.contains("too large") || e.contains("has no values"), "{shape:?}: {e}");
    }
    let model = ModelProto::decode(&bytes[..]).unwrap();
    for pad in [1i64 << 40, 1 << 62, i64::MAX] {
        let mut m = model.clone();
        let conv = m.graph.as_mut().unwrap().node.iter_mut().find(|n| n.op_type == "Conv").unwrap();
        conv.attribute.retain(|a| a.name != "pads");
        // Attribute type 7 is INTS.
        conv.attribute.push(AttributeProto {
            name: "pads".into(),
            r#type: 7,
            ints: vec![pad; 4],
            ..Default::default()
        });
        let e = import_onnx(&m.encode_to_vec(), &ImportOptions::default()).unwrap_err().to_string();
        assert!(e.contains("too large") || e.contains("overflow") || e.contains("pad"), "pads {pad}: {e}");
    }
}
