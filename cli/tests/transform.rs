//! `fhec transform-key` and `fhec transform`: the key file, the image files each scheme
//! writes (equal to the library's transform), inversion, and the errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fhec_ir::transform::{Transform, TransformKey};
use fhec_runtime::image::{self, GrayImage};

fn fhec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fhec")).args(args).output().expect("run fhec")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fhec-transform-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Writes an 8-bit PGM of `rows x cols` with distinct-ish pixels.
fn write_pgm(path: &Path, rows: usize, cols: usize) -> Vec<u8> {
    let px: Vec<u8> = (0..rows * cols).map(|i| (i * 53 % 251) as u8).collect();
    let mut b = format!("P5\n{cols} {rows}\n255\n").into_bytes();
    b.extend_from_slice(&px);
    std::fs::write(path, b).unwrap();
    px
}

#[test]
fn transform_key_writes_a_new_key_and_never_overwrites() {
    let d = tmpdir("key");
    let k = d.join("t.key");
    let o = fhec(&["transform-key", "-o", s(&k)]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("secret"), "{}", text(&o.stdout));
    let first = std::fs::read(&k).unwrap();
    assert!(first.starts_with(b"FHECTKEY"));
    let key = TransformKey::from_file_bytes(&first).unwrap();
    let o = fhec(&["transform-key", "-o", s(&k)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("exists; refusing to overwrite it"), "{}", text(&o.stderr));
    assert_eq!(std::fs::read(&k).unwrap(), first);
    let o = fhec(&["transform-key", "-o", s(&k), "--force"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let second = TransformKey::from_file_bytes(&std::fs::read(&k).unwrap()).unwrap();
    assert_ne!(second, key, "a new random key");
}

#[test]
fn transform_writes_the_librarys_image_and_inverts_it() {
    let d = tmpdir("round-trip");
    let key = TransformKey::from_bytes([9; 32]);
    let k = d.join("t.key");
    std::fs::write(&k, key.to_file_bytes()).unwrap();
    let input = d.join("in.pgm");
    let (rows, cols) = (12, 8);
    let px = write_pgm(&input, rows, cols);
    for scheme in ["etc:4", "etc:2", "skk", "tanaka:4", "tanaka:1"] {
        let t: Transform = scheme.parse().unwrap();
        let want = t.apply(&key, &px, rows, cols).unwrap();
        for ext in ["png", "pgm"] {
            let out = d.join(format!("{}.{ext}", scheme.replace(':', "_")));
            let o = fhec(&["transform", "--scheme", scheme, "--key", s(&k), "--image", s(&input), "-o", s(&out)]);
            assert!(o.status.success(), "{scheme}: {}", text(&o.stderr));
            let img = image::read(&out).unwrap();
            let channels = t.output_shape(rows, cols).unwrap()[0];
            assert_eq!((img.rows, img.cols), (channels * rows, cols), "{scheme} {ext}");
            // Tanaka's 4-bit values read as 17·v.
            let scale = if channels == 2 { 17 } else { 1 };
            let got: Vec<u8> = img.pixels.iter().map(|p| p / scale).collect();
            assert_eq!(got, want, "{scheme} {ext}: the file holds the library's transform");
            let back = d.join(format!("{}.back.{ext}", scheme.replace(':', "_")));
            let o = fhec(&[
                "transform",
                "--scheme",
                scheme,
                "--key",
                s(&k),
                "--image",
                s(&out),
                "-o",
                s(&back),
                "--invert",
            ]);
            assert!(o.status.success(), "{scheme} --invert: {}", text(&o.stderr));
            assert_eq!(image::read(&back).unwrap(), GrayImage { rows, cols, pixels: px.clone() }, "{scheme} {ext}");
        }
    }
}

#[test]
fn transform_errors_name_the_file_and_the_problem() {
    let d = tmpdir("errors");
    let k = d.join("t.key");
    std::fs::write(&k, TransformKey::from_bytes([1; 32]).to_file_bytes()).unwrap();
    let input = d.join("in.pgm");
    write_pgm(&input, 6, 6);
    let out = d.join("out.png");
    let run = |args: &[&str]| {
        let mut v = vec!["transform"];
        v.extend(args);
        let o = fhec(&v);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o.stdout));
        text(&o.stderr)
    };
    let (ks, is, os) = (s(&k), s(&input), s(&out));
    let e = run(&["--scheme", "etc:4", "--key", ks, "--image", is, "-o", os]);
    assert!(
        e.contains(&format!(
            "cannot transform {is}: etc:4: the image's height (6) and width (6) must be multiples of the block size 4"
        )),
        "{e}"
    );
    let e = run(&["--scheme", "etc:0", "--key", ks, "--image", is, "-o", os]);
    assert!(e.contains("unknown transform 'etc:0'"), "{e}");
    let e = run(&["--scheme", "skk", "--key", is, "--image", is, "-o", os]);
    assert!(e.contains(&format!("cannot load the transform key {is}: not an fhec transform key")), "{e}");
    let e = run(&["--scheme", "skk", "--key", ks, "--image", is, "-o", s(&d.join("out.jpg"))]);
    assert!(e.contains("give a file name ending in .png or .pgm"), "{e}");
    let e = run(&["--scheme", "skk", "--key", ks, "--image", is, "-o", is, "--force"]);
    assert!(e.contains("refusing to overwrite an input"), "{e}");
    let e = run(&["--scheme", "tanaka:2", "--key", ks, "--image", is, "-o", os, "--invert"]);
    assert!(e.contains(&format!("cannot invert {is}: pixel")) && e.contains("is not a 4-bit value"), "{e}");
    let e = run(&["--scheme", "skk", "--key", ks, "--image", s(&d.join("missing.png")), "-o", os]);
    assert!(e.contains("missing.png"), "{e}");
    assert!(!out.exists(), "no output written on errors");
}

/// `model` with one more `metadata_props` entry (ModelProto field 14, a
/// StringStringEntryProto of key 1 and value 2): protobuf concatenates repeated fields.
fn with_metadata(model: &[u8], key: &str, value: &str) -> Vec<u8> {
    let mut entry = vec![0x0a, key.len() as u8];
    entry.extend_from_slice(key.as_bytes());
    entry.extend_from_slice(&[0x12, value.len() as u8]);
    entry.extend_from_slice(value.as_bytes());
    let mut out = model.to_vec();
    out.extend_from_slice(&[0x72, entry.len() as u8]);
    out.extend_from_slice(&entry);
    out
}

#[test]
fn a_model_trained_on_transformed_images_builds_and_runs_encrypted_with_the_clients_key() {
    let d = tmpdir("model");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let model = d.join("etc_mnist.onnx");
    let bytes = std::fs::read(root.join("examples/models/fhe_mnist.onnx")).unwrap();
    std::fs::write(&model, with_metadata(&bytes, "fhec.transform", "etc:4")).unwrap();
    let key = d.join("t.key");
    assert!(fhec(&["transform-key", "-o", s(&key)]).status.success());
    let key_bytes = TransformKey::from_file_bytes(&std::fs::read(&key).unwrap()).unwrap();
    // Without the key, the build cannot calibrate and says how to give it.
    let build = ["build", s(&model), "--no-fit", "--calib-limit", "20"];
    let o = fhec(&build);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stdout));
    let e = text(&o.stderr);
    assert!(e.contains("takes images through the keyed transform etc:4") && e.contains("--transform-key"), "{e}");
    let o = fhec(&[&build[..], &["--transform-key", s(&key)]].concat());
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("input transform: etc:4"), "{}", text(&o.stdout));
    let (art, part) = (d.join("etc_mnist.fhec"), d.join("etc_mnist.client.fhec"));
    for f in [&art, &part] {
        let b = std::fs::read(f).unwrap();
        assert!(!key_bytes.bytes().windows(8).any(|w| b.windows(8).any(|h| h == w)), "{} holds the key", f.display());
    }
    let o = fhec(&["inspect", s(&part)]);
    assert!(text(&o.stdout).contains("input transform: etc:4"), "{}", text(&o.stdout));
    let keys = d.join("keys");
    let o = fhec(&["keygen", s(&part), "--out", s(&keys)]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let ck = keys.join("client.key");
    let ct = d.join("image.ct");
    let encrypt = ["encrypt", s(&part), "--client-key", s(&ck), "--dataset", "mnist", "--index", "3", "-o", s(&ct)];
    // No transform key, then a file that is not one (the client key): clear errors.
    let o = fhec(&encrypt);
    assert_eq!(o.status.code(), Some(2));
    let e = text(&o.stderr);
    assert!(e.contains("etc_mnist.client.fhec takes images through the keyed transform etc:4"), "{e}");
    let o = fhec(&[&encrypt[..], &["--transform-key", s(&ck)]].concat());
    assert_eq!(o.status.code(), Some(2));
    let e = text(&o.stderr);
    assert!(e.contains("cannot load the transform key") && e.contains("not an fhec transform key"), "{e}");
    assert!(!ct.exists());
    let o = fhec(&[&encrypt[..], &["--transform-key", s(&key)]].concat());
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("transformed with etc:4"), "{}", text(&o.stdout));
    let res = d.join("result.ct");
    let o = fhec(&["run", s(&art), "--server-key", s(&keys.join("server.key")), "--input", s(&ct), "-o", s(&res)]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = fhec(&["decrypt", s(&part), "--client-key", s(&ck), "--input", s(&res)]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let class: usize = text(&o.stdout).lines().find_map(|l| l.strip_prefix("class: ")?.trim().parse().ok()).unwrap();
    // The simulation of the transformed image gives the same class.
    let a = fhec_ir::artifact::Artifact::from_bytes(&std::fs::read(&art).unwrap()).unwrap();
    let ds = fhec_runtime::dataset::bundled_sample(fhec_runtime::dataset::DatasetKind::Mnist);
    let t = Transform::Etc { block: 4 };
    let values = t.model_input(&t.plan(&key_bytes, 28, 28).unwrap(), ds.pixels(3)).unwrap();
    assert_eq!(class, fhec_runtime::sim::classify(&a.circuit, &values).unwrap().0);
    // fhec eval transforms the test set with the key, or says how to give one.
    let data = root.join("examples/data");
    for (m, mode) in [(&art, "simulate"), (&model, "float")] {
        let eval = ["eval", s(m), "--dataset", "mnist", "--data", s(&data), "--mode", mode, "--limit", "10"];
        let o = fhec(&eval);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o.stdout));
        assert!(text(&o.stderr).contains("takes images through the keyed transform etc:4"), "{}", text(&o.stderr));
        let o = fhec(&[&eval[..], &["--transform-key", s(&key)]].concat());
        assert!(o.status.success(), "{}", text(&o.stderr));
        assert!(text(&o.stdout).contains("accuracy: "), "{}", text(&o.stdout));
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_transform_folds_into_a_plain_model_at_the_same_cost_and_bad_folds_are_clear_errors() {
    let d = tmpdir("fold");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let plain = root.join("examples/models/fhe_mnist.onnx");
    let key = d.join("t.key");
    assert!(fhec(&["transform-key", "-o", s(&key)]).status.success());
    let out = d.join("plain.fhec");
    let build = ["build", s(&plain), "--no-fit", "--calib-limit", "20", "-o", s(&out)];
    assert!(fhec(&build).status.success());
    let folded = d.join("skk.fhec");
    let fold = ["build", s(&plain), "--no-fit", "--calib-limit", "20", "-o", s(&folded), "--fold-transform", "skk"];
    // No key: the error says which flag gives it, and nothing is written.
    let o = fhec(&fold);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("--fold-transform skk needs the key file"), "{}", text(&o.stderr));
    assert!(!folded.exists());
    // Tanaka's split is not linear; a model trained on a transform already takes one.
    let o = fhec(&[&fold[..7], &["--fold-transform", "tanaka:4", "--transform-key", s(&key)]].concat());
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("tanaka:4 cannot be folded"), "{}", text(&o.stderr));
    let trained = d.join("etc_mnist.onnx");
    std::fs::write(&trained, with_metadata(&std::fs::read(&plain).unwrap(), "fhec.transform", "etc:4")).unwrap();
    let o = fhec(&["build", s(&trained), "--no-fit", "--fold-transform", "skk", "--transform-key", s(&key)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("already takes images through the keyed transform etc:4"), "{}", text(&o.stderr));
    // The fold: the same bootstraps and estimated time as the plain build, the transform named.
    let o = fhec(&[&fold[..], &["--transform-key", s(&key)]].concat());
    assert!(o.status.success(), "{}", text(&o.stderr));
    let report = text(&o.stdout);
    assert!(report.contains("input transform: skk, folded into the circuit"), "{report}");
    let a = |p: &Path| fhec_ir::artifact::Artifact::from_bytes(&std::fs::read(p).unwrap()).unwrap();
    let (p, f) = (a(&out), a(&folded));
    assert_eq!(f.circuit.bootstrap_stats(), p.circuit.bootstrap_stats());
    assert_eq!(f.fhe.as_ref().unwrap().params, p.fhe.as_ref().unwrap().params);
    assert_eq!(f.transform().unwrap(), Some(Transform::Skk));
    // fhec eval transforms the test set with the key: the plain build's accuracy, exactly
    // (exact rounding: the simulation is deterministic).
    let data = root.join("examples/data");
    let accuracy = |m: &Path, key: Option<&Path>| {
        let mut args =
            vec!["eval", s(m), "--dataset", "mnist", "--data", s(&data), "--mode", "simulate", "--limit", "50"];
        if let Some(k) = key {
            args.extend(["--transform-key", s(k)]);
        }
        let o = fhec(&args);
        assert!(o.status.success(), "{}", text(&o.stderr));
        text(&o.stdout).lines().find(|l| l.starts_with("accuracy: ")).unwrap().to_string()
    };
    assert_eq!(accuracy(&folded, Some(&key)), accuracy(&out, None));
    let _ = std::fs::remove_dir_all(&d);
}
