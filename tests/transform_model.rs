//! Models trained on transformed images (`fhec.transform` metadata): the artifact and its
//! client part name the scheme and never hold the key; the client transforms images with
//! its own key before encrypting, and the decrypted result equals the simulation of the
//! transformed image; a missing key, a key file of the wrong format and a model input that
//! is not the transform's output are clear errors; files of the previous formats are
//! refused.
//!
//! Folded transforms (`fhec_compiler::fold`): a model trained on plain images with EtC or
//! SKK folded into its circuit classifies transformed images exactly as the plain circuit
//! classifies the originals (simulated on the bundled seed network and random images, and
//! encrypted on the tiny CNN), at the same cost; Tanaka's scheme is refused. The bundled
//! transform-trained models classify images transformed with their (demo) key, and not
//! with another.

use fhec_compiler::params::{ParamOptions, select};
use fhec_ir::Transform;
use fhec_ir::artifact::Artifact;
use fhec_ir::client::ClientSpec;
use fhec_ir::framing::OVERHEAD;
use fhec_ir::transform::TransformKey;
use fhec_runtime::app::{AppError, Client, Server};
use fhec_runtime::sim;
use fhec_tests::{bundled_models, compile_default, images, tiny_circuit_calibrated, tiny_circuit_of, tiny_graph};

/// A key whose bytes are easy to find: 32 distinct values no file would hold by chance.
fn key() -> TransformKey {
    TransformKey::from_bytes(std::array::from_fn(|i| 0x9d ^ (i as u8).wrapping_mul(37)))
}

/// The tiny CNN (8x8 images) named as trained on `etc:2`, calibrated on images transformed
/// with [`key`], with 128-bit parameters: the full artifact's bytes.
fn transformed_artifact() -> Vec<u8> {
    let mut g = tiny_graph();
    g.metadata.insert(Transform::METADATA_KEY.into(), "etc:2".into());
    let t = Transform::Etc { block: 2 };
    let plan = t.plan(&key(), 8, 8).unwrap();
    let calib: Vec<Vec<u8>> = images(32, 64, 7).iter().map(|im| t.model_input(&plan, im).unwrap()).collect();
    let c = tiny_circuit_calibrated(&g, &calib);
    let fhe = Some(select(&c, &ParamOptions::default()).unwrap());
    Artifact {
        fhec_version: "test".into(),
        source: "tiny_etc.onnx".into(),
        options: Default::default(),
        circuit: c,
        fhe,
    }
    .to_bytes()
}

/// Whether `hay` holds any 8-byte window of `needle`.
fn holds_a_window(hay: &[u8], needle: &[u8]) -> bool {
    needle.windows(8).any(|w| hay.windows(8).any(|h| h == w))
}

#[test]
fn the_key_never_appears_in_the_artifact_or_its_client_part() {
    let bytes = transformed_artifact();
    let art = Artifact::from_bytes(&bytes).unwrap();
    assert_eq!(art.transform().unwrap(), Some(Transform::Etc { block: 2 }));
    let part = art.client_part().unwrap();
    assert_eq!(part.input.transform, Some(Transform::Etc { block: 2 }));
    assert!(part.summary().contains("input transform: etc:2"), "{}", part.summary());
    let part_bytes = part.to_bytes();
    assert_eq!(ClientSpec::from_bytes(&part_bytes).unwrap(), part);
    let k = key();
    for (what, b) in [("artifact", &bytes), ("client part", &part_bytes)] {
        assert!(!holds_a_window(b, k.bytes()), "the {what} holds 8 bytes of the key");
        assert!(!holds_a_window(b, &k.to_file_bytes()), "the {what} holds 8 bytes of the key file");
    }
    // Nor do the values derived from the key only through the transform's map (the plan is
    // the client's): the circuit's input quantization is the same as without a transform.
    let plain = tiny_circuit_of(&tiny_graph());
    assert_eq!(art.circuit.input_quant, plain.input_quant);
}

#[test]
fn encrypted_transformed_image_decrypts_to_the_simulation_of_the_transformed_image() {
    let bytes = transformed_artifact();
    let art = Artifact::from_bytes(&bytes).unwrap();
    let part = art.client_part().unwrap().to_bytes();
    let client = Client::new(&part).unwrap();
    // Without the key: an error naming the transform and how to give a key.
    let image = &images(1, 64, 11)[0];
    let e = client.encrypt(image).unwrap_err();
    assert!(matches!(e, AppError::TransformKeyMissing(Transform::Etc { block: 2 })), "{e}");
    let m = e.to_string();
    assert!(m.contains("etc:2") && m.contains("with_transform_key") && m.contains("--transform-key"), "{m}");
    let client = client.with_transform_key(key());
    assert_eq!(client.transform(), Some(Transform::Etc { block: 2 }));
    let server = Server::new(&bytes, &client.evaluation_key()).unwrap();
    let t = Transform::Etc { block: 2 };
    let plan = t.plan(&key(), 8, 8).unwrap();
    let c = &art.circuit;
    for (i, image) in images(2, 64, 12).iter().enumerate() {
        let values = t.model_input(&plan, image).unwrap();
        assert_eq!(client.input_values(image).unwrap(), values);
        assert_ne!(&values, image, "the transform changes the image");
        let pred = client.decrypt(&server.classify(&client.encrypt(image).unwrap()).unwrap()).unwrap();
        let want: Vec<i64> = sim::simulate(c, sim::encode_image(c, &values)).unwrap().iter().copied().collect();
        assert_eq!(pred.raw, want, "image {i}");
        assert_eq!(pred.class, sim::classify(c, &values).unwrap().0, "image {i}");
    }
    // An image of another size is an error naming the transform, not a panic.
    let e = client.encrypt(&[0u8; 10]).unwrap_err().to_string();
    assert!(e.contains("etc:2") && e.contains("10 values"), "{e}");
}

#[test]
fn a_model_input_that_is_not_the_transform_output_is_refused() {
    // Tanaka's output has two channels: the tiny CNN's one-channel input cannot take it.
    let mut g = tiny_graph();
    g.metadata.insert(Transform::METADATA_KEY.into(), "tanaka:2".into());
    let calib = images(4, 64, 7);
    let refs: Vec<&[u8]> = calib.iter().map(|v| v.as_slice()).collect();
    let e = fhec_compiler::build::build_graph(&g, "t.onnx", &refs, &Default::default()).unwrap_err().to_string();
    assert!(
        e.contains("fhec.transform")
            && e.contains("tanaka:2")
            && e.contains("2 channels")
            && e.contains("[1, 1, 8, 8]"),
        "{e}"
    );
    g.metadata.insert(Transform::METADATA_KEY.into(), "etc:3".into());
    let e = fhec_compiler::build::build_graph(&g, "t.onnx", &refs, &Default::default()).unwrap_err().to_string();
    assert!(e.contains("multiples of the block size 3"), "{e}");
    g.metadata.insert(Transform::METADATA_KEY.into(), "rot13".into());
    let e = fhec_compiler::build::build_graph(&g, "t.onnx", &refs, &Default::default()).unwrap_err().to_string();
    assert!(e.contains("unknown transform 'rot13'"), "{e}");
    // A client part or an artifact naming a transform its input does not take.
    let bytes = transformed_artifact();
    let mut art = Artifact::from_bytes(&bytes).unwrap();
    let mut part = art.client_part().unwrap();
    part.input.transform = Some(Transform::Tanaka { block: 2 });
    let e = ClientSpec::from_bytes(&part.to_bytes()).unwrap_err().to_string();
    assert!(e.contains("does not take the transform") && e.contains("tanaka:2"), "{e}");
    art.circuit.metadata.insert(Transform::METADATA_KEY.into(), "tanaka:2".into());
    let e = Artifact::from_bytes(&art.to_bytes()).unwrap_err().to_string();
    assert!(e.contains("tanaka:2"), "{e}");
}

#[test]
fn a_key_file_of_another_format_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("fhec-transform-model-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let part = Artifact::from_bytes(&transformed_artifact()).unwrap().client_part().unwrap().to_bytes();
    let wrong = dir.join("not-a-key");
    std::fs::write(&wrong, &part).unwrap();
    let e = format!("{:#}", fhec_driver::transform::read_key(&wrong).unwrap_err());
    assert!(e.contains("cannot load the transform key") && e.contains("not an fhec transform key"), "{e}");
    let missing = dir.join("missing.key");
    let e = format!("{:#}", fhec_driver::transform::read_key(&missing).unwrap_err());
    assert!(e.contains("missing.key"), "{e}");
    let good = dir.join("t.key");
    std::fs::write(&good, key().to_file_bytes()).unwrap();
    assert_eq!(fhec_driver::transform::read_key(&good).unwrap(), key());
    let e = fhec_driver::transform::key_for(std::path::Path::new("m.client.fhec"), Transform::Skk, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("m.client.fhec takes images through the keyed transform skk") && e.contains("--transform-key"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn files_of_the_previous_formats_are_refused() {
    let bytes = transformed_artifact();
    let part = Artifact::from_bytes(&bytes).unwrap().client_part().unwrap().to_bytes();
    assert!(bytes.len() > OVERHEAD && part.len() > OVERHEAD);
    let with_version = |b: &[u8], v: u32| [&b[..8], &v.to_le_bytes()[..], &b[12..]].concat();
    let e = Artifact::from_bytes(&with_version(&bytes, 7)).unwrap_err().to_string();
    assert_eq!(e, "artifact format version 7 is not supported (this fhec reads version 8)");
    let e = ClientSpec::from_bytes(&with_version(&part, 2)).unwrap_err().to_string();
    assert_eq!(e, "client part format version 2 is not supported (this fhec reads version 3)");
    let e = Client::new(&with_version(&part, 2)).err().expect("must fail").to_string();
    assert!(e.contains("version 2 is not supported"), "{e}");
}

/// The plain circuit and the same circuit with `t` folded in, both with parameters chosen
/// as `fhec build` chooses them.
fn folded(c: &fhec_ir::circuit::Circuit, t: Transform, h: usize, w: usize) -> (Artifact, Artifact) {
    let mut circuit = c.clone();
    let fhe = Some(fhec_compiler::params::select_rounding(&mut circuit, &ParamOptions::default()).unwrap());
    let plain = Artifact {
        fhec_version: "test".into(),
        source: "plain.onnx".into(),
        options: Default::default(),
        circuit,
        fhe,
    };
    let plan = t.plan(&key(), h, w).unwrap();
    let f = fhec_compiler::fold::fold_artifact(&plain, t, &plan, &ParamOptions::default()).unwrap();
    (plain, f)
}

#[test]
fn a_folded_model_on_transformed_images_equals_the_plain_model_on_the_originals() {
    let b = bundled_models().into_iter().find(|b| b.path.ends_with("seed_mnist.onnx")).expect("bundled");
    let c = compile_default(&b);
    for t in [Transform::Etc { block: 4 }, Transform::Skk, Transform::Etc { block: 7 }] {
        let (plain, f) = folded(&c, t, 28, 28);
        // The same bootstraps, parameters and estimated time: the gather costs nothing.
        assert_eq!(f.circuit.bootstrap_stats(), plain.circuit.bootstrap_stats(), "{t}");
        let (pf, pp) = (f.fhe.as_ref().unwrap(), plain.fhe.as_ref().unwrap());
        assert_eq!(pf.params, pp.params, "{t}");
        assert_eq!(pf.est_cost_ms, pp.est_cost_ms, "{t}");
        assert_eq!(f.transform().unwrap(), Some(t));
        assert_eq!(f.client_part().unwrap().input.transform, Some(t));
        let plan = t.plan(&key(), 28, 28).unwrap();
        // Random images (not digits): every pixel value, anywhere.
        for (i, image) in images(20, 784, 40).iter().enumerate() {
            let moved = t.model_input(&plan, image).unwrap();
            let run = |c: &fhec_ir::circuit::Circuit, px: &[u8]| sim::simulate(c, sim::encode_image(c, px)).unwrap();
            assert_eq!(run(&f.circuit, &moved), run(&plain.circuit, image), "{t}, image {i}");
        }
        // The key's bytes are not in the artifact (its map is: that is what folding means).
        let bytes = f.to_bytes();
        assert!(!holds_a_window(&bytes, key().bytes()), "{t}: the artifact holds 8 bytes of the key");
    }
    let e = fhec_compiler::fold::fold_transform(
        &c,
        Transform::Tanaka { block: 4 },
        &Transform::Tanaka { block: 4 }.plan(&key(), 28, 28).unwrap(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("tanaka:4 cannot be folded") && e.contains("train"), "{e}");
}

#[test]
fn an_encrypted_image_through_a_folded_model_decrypts_to_the_plain_simulation() {
    let c = tiny_circuit_of(&tiny_graph());
    let (plain, f) = folded(&c, Transform::Skk, 8, 8);
    let bytes = f.to_bytes();
    let client = Client::new(&f.client_part().unwrap().to_bytes()).unwrap().with_transform_key(key());
    let server = Server::new(&bytes, &client.evaluation_key()).unwrap();
    for (i, image) in images(2, 64, 13).iter().enumerate() {
        let pred = client.decrypt(&server.classify(&client.encrypt(image).unwrap()).unwrap()).unwrap();
        let pc = &plain.circuit;
        let want: Vec<i64> = sim::simulate(pc, sim::encode_image(pc, image)).unwrap().iter().copied().collect();
        assert_eq!(
            pred.raw, want,
            "image {i}: the folded circuit on the transformed image is the plain one on the original"
        );
    }
}

/// Simulated accuracy (exact rounding) of an artifact on a set; an image outside the
/// calibrated ranges counts as wrong.
fn simulated_accuracy(art: &Artifact, ds: &fhec_runtime::dataset::Dataset) -> f64 {
    let ok = (0..ds.len())
        .filter(|&i| sim::classify(&art.circuit, ds.pixels(i)).is_ok_and(|(c, _)| c == ds.labels[i] as usize));
    ok.count() as f64 / ds.len() as f64
}

#[test]
fn the_bundled_transform_models_classify_images_transformed_with_their_key_and_not_with_another() {
    use fhec_driver::{CompileOptions, compile_model, transform};
    use fhec_runtime::dataset::{DatasetKind, bundled_sample};
    let dir = fhec_tests::root().join("examples/models/transforms");
    let demo = dir.join("demo.key");
    let other = TransformKey::from_bytes([1; 32]);
    for (file, kind, t, at_least) in [
        ("etc4_seed_mnist.onnx", DatasetKind::Mnist, Transform::Etc { block: 4 }, 0.9),
        ("skk_seed_mnist.onnx", DatasetKind::Mnist, Transform::Skk, 0.9),
        ("tanaka4_seed_mnist.onnx", DatasetKind::Mnist, Transform::Tanaka { block: 4 }, 0.9),
        ("skk_seed_fashion.onnx", DatasetKind::FashionMnist, Transform::Skk, 0.75),
    ] {
        let options = CompileOptions {
            no_fit: true,
            calib_limit: 100,
            calib_dataset: Some(kind),
            transform_key: Some(demo.clone()),
            ..CompileOptions::default()
        };
        let (_, art) = compile_model(&dir.join(file), &options).unwrap();
        assert_eq!(art.transform().unwrap(), Some(t), "{file}");
        // The 200 bundled test images (never calibrated on), transformed as the client does.
        let test = bundled_sample(kind);
        let key = transform::read_key(&demo).unwrap();
        let right = simulated_accuracy(&art, &transform::transform_set(&test, t, &key).unwrap());
        let wrong = simulated_accuracy(&art, &transform::transform_set(&test, t, &other).unwrap());
        assert!(right >= at_least, "{file}: {right} with its key");
        assert!(wrong < right - 0.3, "{file}: {wrong} with another key, {right} with its own");
    }
}
