//! The `fhec` command line: output formats, exit codes and error messages.

use std::path::PathBuf;
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn fhec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fhec")).args(args).current_dir(root()).output().expect("run fhec")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn eval_float_prints_accuracy_last() {
    let o = fhec(&[
        "eval",
        "examples/models/cnn_mnist.onnx",
        "--dataset",
        "mnist",
        "--data",
        "examples/data",
        "--mode",
        "float",
        "--limit",
        "50",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let last = out.lines().last().unwrap();
    let (acc, counts) = last.strip_prefix("accuracy: ").unwrap().split_once(' ').unwrap();
    assert_eq!(acc.len(), 6, "four decimals: {last}");
    assert!(counts.starts_with('(') && counts.ends_with("/50)"), "{last}");
    let correct: usize = counts[1..counts.len() - 4].parse().unwrap();
    assert!(correct >= 45, "{last}");
    assert_eq!(format!("{:.4}", correct as f64 / 50.0), acc);
}

#[test]
fn eval_uses_the_models_preprocessing_and_accepts_an_override() {
    // cnn_mnist declares fhec.preprocess=unit in its ONNX metadata.
    let base =
        ["eval", "examples/models/cnn_mnist.onnx", "--dataset", "mnist", "--data", "examples/data", "--limit", "40"];
    let o = fhec(&base);
    assert!(text(&o.stdout).contains("preprocess: unit"));
    let mut args = base.to_vec();
    args.extend(["--preprocess", "raw255"]);
    let o2 = fhec(&args);
    assert!(text(&o2.stdout).contains("preprocess: raw255"));
    // Third-party models kept byte-exact have no metadata: the manifest beside them says.
    for (model, pre) in [("ort_int8_qlinear", "raw255"), ("burn_mnist_bn", "mnist-norm")] {
        let path = format!("examples/models/{model}.onnx");
        let o = fhec(&["eval", &path, "--dataset", "mnist", "--data", "examples/data", "--limit", "40"]);
        assert!(text(&o.stdout).contains(&format!("preprocess: {pre}")), "{model}: {}", text(&o.stdout));
        let acc: f64 =
            text(&o.stdout).trim().lines().last().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(acc >= 0.9, "{model}: accuracy {acc} with the manifest's preprocessing");
    }
    // An unrelated manifest.json beside a model is ignored, not an error.
    let dir = tmpdir("foreign-manifest");
    // (a model without preprocessing metadata, so the manifest is consulted)
    std::fs::copy(root().join("examples/models/ort_int8_qlinear.onnx"), dir.join("m.onnx")).unwrap();
    std::fs::write(dir.join("manifest.json"), r#"{"name": "some web app", "icons": []}"#).unwrap();
    let m = dir.join("m.onnx");
    let o = fhec(&["eval", m.to_str().unwrap(), "--dataset", "mnist", "--data", "examples/data", "--limit", "10"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("ignoring"), "{}", text(&o.stderr));
}

#[test]
fn eval_writes_predictions() {
    let dir = std::env::temp_dir().join(format!("fhec-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("preds.txt");
    let o = fhec(&[
        "eval",
        "examples/models/zoo_mnist8.onnx",
        "--dataset",
        "mnist",
        "--data",
        "examples/data",
        "--limit",
        "10",
        "--predictions",
        p.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let preds = std::fs::read_to_string(&p).unwrap();
    assert_eq!(preds.lines().count(), 10);
    assert!(preds.lines().all(|l| l.parse::<u8>().is_ok_and(|d| d < 10)));
}

#[test]
fn inspect_prints_ir_and_json() {
    let o = fhec(&["inspect", "examples/models/zoo_mnist8.onnx"]);
    assert!(o.status.success());
    assert!(text(&o.stdout).starts_with("graph \"CNTKGraph\" {"));
    let o = fhec(&["inspect", "examples/models/zoo_mnist8.onnx", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["op_counts"]["conv"], 2);
    assert_eq!(v["inputs"][0]["shape"], serde_json::json!([1, 1, 28, 28]));
    // 8*25 + 8 + 16*8*25 + 16 + 256*10 + 10
    assert_eq!(v["parameter_count"], 5_994);
}

#[test]
fn bad_inputs_exit_2_with_a_precise_message() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["inspect", "tests/fixtures/errors/unsupported_op.onnx"],
            "node 'gelu_erf' (Erf): operator Erf is not supported",
        ),
        (&["inspect", "no/such/model.onnx"], "cannot read model no/such/model.onnx"),
        (&["inspect", "Cargo.toml"], "malformed ONNX model"),
        (
            &["eval", "tests/fixtures/cli/input_32x32.onnx", "--dataset", "mnist", "--data", "examples/data"],
            "model input 'x' has shape [1, 1, 32, 32] (1024 values), but the dataset's images are 28x28 (784 values)",
        ),
        (
            &["eval", "examples/models/cnn_mnist.onnx", "--dataset", "mnist", "--data", "no/such/dir"],
            "no mnist test set in no/such/dir",
        ),
        (
            &[
                "eval",
                "examples/models/cnn_mnist.onnx",
                "--dataset",
                "mnist",
                "--data",
                "examples/data",
                "--preprocess",
                "bogus",
            ],
            "unknown preprocessing 'bogus'",
        ),
    ];
    for (args, needle) in cases {
        let o = fhec(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o.stderr));
        let err = text(&o.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn corrupt_dataset_is_an_error() {
    let dir = std::env::temp_dir().join(format!("fhec-cli-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("t10k-images-idx3-ubyte"),
        b"\x00\x00\x08\x03\x00\x00\x00\x05\x00\x00\x00\x1c\x00\x00\x00\x1c",
    )
    .unwrap();
    std::fs::write(dir.join("t10k-labels-idx1-ubyte"), b"\x00\x00\x08\x01\x00\x00\x00\x05abcde").unwrap();
    let o = fhec(&["eval", "examples/models/cnn_mnist.onnx", "--dataset", "mnist", "--data", dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("is not a valid IDX images file"), "{}", text(&o.stderr));
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fhec-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `fhec eval MODEL --mode simulate` on the first `limit` bundled MNIST images.
fn simulate(model: &str, limit: &str, extra: &[&str]) -> Output {
    let mut args =
        vec!["eval", model, "--dataset", "mnist", "--data", "examples/data", "--mode", "simulate", "--limit", limit];
    args.extend_from_slice(extra);
    fhec(&args)
}

#[test]
fn build_writes_an_artifact_that_eval_simulates() {
    let d = tmpdir("build");
    let art = d.join("cnn.fhec");
    let o = fhec(&["build", "examples/models/cnn_mnist.onnx", "-o", art.to_str().unwrap(), "--no-fit"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("bootstraps per inference:"), "{out}");
    assert!(out.contains("widest table read:"), "{out}");
    let o = simulate(art.to_str().unwrap(), "30", &[]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let last = text(&o.stdout).lines().last().unwrap().to_string();
    assert!(last.starts_with("accuracy: ") && last.ends_with("/30)"), "{last}");
    // The same accuracy when compiling on the fly from the ONNX file.
    let o2 = simulate("examples/models/cnn_mnist.onnx", "30", &["--no-fit"]);
    assert_eq!(text(&o2.stdout).lines().last().unwrap(), last);
    // Rebuilding over an artifact needs --force (checked before compiling).
    let o = fhec(&["build", "examples/models/cnn_mnist.onnx", "-o", art.to_str().unwrap(), "--no-fit"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("exists; refusing to overwrite it"), "{}", text(&o.stderr));
    assert!(
        fhec(&["build", "examples/models/cnn_mnist.onnx", "-o", art.to_str().unwrap(), "--no-fit", "--force"])
            .status
            .success()
    );
    // With approximate rounding, the simulation samples the read noise: it shows ten draws'
    // accuracies, then the first draw's, which the predictions file holds.
    let approx = d.join("approx.fhec");
    let o = fhec(&[
        "build",
        "examples/models/seed_mnist.onnx",
        "--rounding",
        "approximate",
        "--no-fit",
        "-o",
        approx.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let preds = d.join("approx.txt");
    let o = simulate(approx.to_str().unwrap(), "50", &["--predictions", preds.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("approximate rounding: 10 draws of the read noise give "), "{out}");
    let last = out.lines().last().unwrap();
    let correct: usize = last.split_once('(').unwrap().1.split_once('/').unwrap().0.parse().unwrap();
    let labels = fhec_runtime::dataset::Dataset::load_test(
        &root().join("examples/data"),
        fhec_runtime::dataset::DatasetKind::Mnist,
    )
    .unwrap()
    .labels;
    let written = std::fs::read_to_string(&preds).unwrap();
    let hits = written.lines().zip(&labels).filter(|(p, l)| p.parse::<usize>().ok() == Some(**l as usize)).count();
    assert_eq!(hits, correct, "{last}");
}

#[test]
fn build_json_report() {
    let d = tmpdir("json");
    let art = d.join("seed.fhec");
    let o = fhec(&[
        "build",
        "examples/models/seed_mnist.onnx",
        "-o",
        art.to_str().unwrap(),
        "--json",
        "--max-table-bits",
        "9",
        "--no-fit",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["max_table_width"], 9);
    // 4x8x8 conv outputs and 64 hidden units, one square table each.
    assert_eq!(v["table_bootstraps"], 320);
    assert!(v["artifact"]["bytes"].as_u64().unwrap() > 1000);
    assert!(v["layers"].as_array().unwrap().iter().any(|l| l["op"] == "table"));
}

#[test]
fn build_never_overwrites_user_files_and_rejects_bad_artifacts() {
    let d = tmpdir("guard");
    let precious = d.join("notes.txt");
    std::fs::write(&precious, "my notes").unwrap();
    let o = fhec(&["build", "examples/models/cnn_mnist.onnx", "-o", precious.to_str().unwrap(), "--no-fit"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("exists; refusing to overwrite it"), "{}", text(&o.stderr));
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "my notes");
    // Not even with --force when the output is the model itself.
    let model = d.join("model.onnx");
    std::fs::copy(root().join("examples/models/cnn_mnist.onnx"), &model).unwrap();
    let before = std::fs::read(&model).unwrap();
    let o = fhec(&["build", model.to_str().unwrap(), "-o", model.to_str().unwrap(), "--no-fit", "--force"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("is the same file as the input"), "{}", text(&o.stderr));
    assert_eq!(std::fs::read(&model).unwrap(), before);
    // A corrupt artifact is a clear error.
    let art = d.join("m.fhec");
    assert!(
        fhec(&["build", "examples/models/seed_mnist.onnx", "-o", art.to_str().unwrap(), "--no-fit"]).status.success()
    );
    let mut b = std::fs::read(&art).unwrap();
    let k = b.len() / 2;
    b[k] ^= 0x40;
    std::fs::write(&art, &b).unwrap();
    let o =
        fhec(&["eval", art.to_str().unwrap(), "--dataset", "mnist", "--data", "examples/data", "--mode", "simulate"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("artifact is corrupt (checksum mismatch)"), "{}", text(&o.stderr));
    let o = fhec(&["eval", art.to_str().unwrap(), "--dataset", "mnist", "--data", "examples/data", "--mode", "float"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("float mode needs the ONNX model"), "{}", text(&o.stderr));
}

#[test]
fn build_calibrates_on_a_folder_of_images() {
    let d = tmpdir("calib");
    let imgs = d.join("imgs");
    std::fs::create_dir_all(&imgs).unwrap();
    let ds = fhec_runtime::dataset::bundled_sample(fhec_runtime::dataset::DatasetKind::Mnist);
    for i in 0..20 {
        let mut pgm = b"P5\n28 28\n255\n".to_vec();
        pgm.extend_from_slice(ds.pixels(i));
        std::fs::write(imgs.join(format!("{i:03}.pgm")), pgm).unwrap();
    }
    let art = d.join("m.fhec");
    let o = fhec(&[
        "build",
        "examples/models/cnn_mnist.onnx",
        "-o",
        art.to_str().unwrap(),
        "--calib",
        imgs.to_str().unwrap(),
        "--no-fit",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("(20 images)"), "{}", text(&o.stdout));
}

/// The client / server commands on the bundled model made for encrypted inference: `fhec
/// build` writes the server's artifact and the client part; the client side (keys, an
/// encrypted image, decryption) works from the client part alone, in a directory without
/// the artifact; the server runs with the artifact and the evaluation key only; and the
/// errors a user meets (overwriting keys, a key of the wrong kind, a ciphertext of the
/// wrong model, a client part given to the server).
#[cfg(feature = "fhe")]
#[test]
fn keygen_encrypt_run_decrypt_round_trip() {
    let d = tmpdir("fhe");
    let p = |f: &str| d.join(f).display().to_string();
    let o = fhec(&["build", "examples/models/fhe_mnist.onnx", "-o", &p("m.fhec"), "--no-fit"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("m.client.fhec"), "{}", text(&o.stdout));
    let (art_bytes, part_bytes) =
        (std::fs::read(d.join("m.fhec")).unwrap(), std::fs::read(d.join("m.client.fhec")).unwrap());
    assert!(
        part_bytes.len() < 4096 && part_bytes.len() * 10 < art_bytes.len(),
        "{} vs {}",
        part_bytes.len(),
        art_bytes.len()
    );
    // The client part follows the output policy, checked before compiling.
    for (client_out, want) in
        [(p("m.fhec"), "m.fhec exists; refusing to overwrite it"), (p("m2.fhec"), "the artifact's own path")]
    {
        let o = fhec(&["build", "examples/models/fhe_mnist.onnx", "-o", &p("m2.fhec"), "--client-out", &client_out]);
        assert_eq!(o.status.code(), Some(2));
        assert!(text(&o.stderr).contains(want), "{}", text(&o.stderr));
    }
    assert!(!d.join("m2.fhec").exists());
    // The client's directory holds the client part only.
    std::fs::create_dir_all(d.join("client")).unwrap();
    std::fs::copy(d.join("m.client.fhec"), d.join("client/m.client.fhec")).unwrap();
    std::fs::remove_file(d.join("m.client.fhec")).unwrap();
    let part = p("client/m.client.fhec");
    let o = fhec(&["inspect", &part]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    for want in
        ["client part of fhe_mnist.onnx", "holds no weight", "input: shape [1, 1, 28, 28]", "output: shape [1, 10]"]
    {
        assert!(text(&o.stdout).contains(want), "missing {want:?} in {}", text(&o.stdout));
    }
    let o = fhec(&["keygen", &part, "--out", &p("client/keys")]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("evaluation key"), "{}", text(&o.stdout));
    // Keys are never overwritten silently.
    let o = fhec(&["keygen", &part, "--out", &p("client/keys")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("refusing to overwrite"), "{}", text(&o.stderr));
    let ck = p("client/keys/client.key");
    let sk = p("client/keys/server.key");
    let o = fhec(&["encrypt", &part, "--client-key", &ck, "--dataset", "mnist", "--index", "3", "-o", &p("img.ct")]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    // The server needs the full artifact: the client part is refused, naming the file.
    let o = fhec(&["run", &part, "--server-key", &sk, "--input", &p("img.ct"), "-o", &p("res.ct")]);
    assert_eq!(o.status.code(), Some(2));
    let e = text(&o.stderr);
    assert!(
        e.contains("client/m.client.fhec is a client part") && e.contains("needs the model's full artifact (m.fhec"),
        "{e}"
    );
    // And so do simulation and compilation.
    let o = fhec(&["eval", &part, "--dataset", "mnist", "--data", "examples/data", "--mode", "simulate"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("is a client part"), "{}", text(&o.stderr));
    // The server side refuses the secret key.
    let o = fhec(&["run", &p("m.fhec"), "--server-key", &ck, "--input", &p("img.ct"), "-o", &p("res.ct")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("holds a client key but a server key is expected"), "{}", text(&o.stderr));
    // An output that is one of the command's inputs is refused, even with --force, and
    // before the evaluation.
    let img = std::fs::read(d.join("img.ct")).unwrap();
    let o = fhec(&["run", &p("m.fhec"), "--server-key", &sk, "--input", &p("img.ct"), "-o", &p("img.ct"), "--force"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("is the same file as the input"), "{}", text(&o.stderr));
    assert_eq!(std::fs::read(d.join("img.ct")).unwrap(), img);
    let o = fhec(&["run", &p("m.fhec"), "--server-key", &sk, "--input", &p("img.ct"), "-o", &p("res.ct")]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = fhec(&["run", &p("m.fhec"), "--server-key", &sk, "--input", &p("img.ct"), "-o", &p("res.ct")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("res.ct exists; refusing to overwrite it"), "{}", text(&o.stderr));
    assert!(!text(&o.stderr).contains("fhec-tmp"), "{}", text(&o.stderr));
    // Decrypting the image instead of the result is an error, not a class.
    let o = fhec(&["decrypt", &part, "--client-key", &ck, "--input", &p("img.ct")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("not this model's result"), "{}", text(&o.stderr));
    let o = fhec(&["decrypt", &part, "--client-key", &ck, "--input", &p("res.ct")]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let class = text(&o.stdout).lines().last().unwrap().strip_prefix("class: ").unwrap().trim().to_string();
    // The full artifact still serves the client commands, with the same keys.
    let o2 = fhec(&["decrypt", &p("m.fhec"), "--client-key", &ck, "--input", &p("res.ct")]);
    assert!(o2.status.success(), "{}", text(&o2.stderr));
    assert_eq!(text(&o2.stdout), text(&o.stdout));
    // A file that is neither is refused by name.
    let o = fhec(&["keygen", "examples/models/fhe_mnist.onnx", "--out", &p("client/other")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("fhe_mnist.onnx is not an fhec client part or artifact"), "{}", text(&o.stderr));
    // The same image, simulated.
    let o = fhec(&[
        "eval",
        &p("m.fhec"),
        "--dataset",
        "mnist",
        "--data",
        "examples/data",
        "--mode",
        "simulate",
        "--limit",
        "4",
        "--predictions",
        &p("sim.txt"),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let sim = std::fs::read_to_string(d.join("sim.txt")).unwrap();
    assert_eq!(sim.lines().nth(3).unwrap(), class);
    // The predictions file follows the same policy: never the artifact, never silently replaced.
    let model = p("m.fhec");
    let eval = |out: &str, extra: &[&str]| {
        let mut args = vec!["eval", &model, "--dataset", "mnist", "--data", "examples/data", "--mode", "simulate"];
        args.extend(["--limit", "4", "--predictions", out]);
        args.extend_from_slice(extra);
        fhec(&args)
    };
    let art = std::fs::read(d.join("m.fhec")).unwrap();
    let o = eval(&p("m.fhec"), &["--force"]);
    assert!(text(&o.stderr).contains("is the same file as the input"), "{}", text(&o.stderr));
    assert_eq!(std::fs::read(d.join("m.fhec")).unwrap(), art);
    let o = eval(&p("sim.txt"), &[]);
    assert!(text(&o.stderr).contains("sim.txt exists; refusing to overwrite it"), "{}", text(&o.stderr));
    assert!(eval(&p("sim.txt"), &["--force"]).status.success());
    // No temporary file is left anywhere.
    let mut names: Vec<String> = std::fs::read_dir(d.join("client/keys"))
        .unwrap()
        .chain(std::fs::read_dir(d.join("client")).unwrap())
        .chain(std::fs::read_dir(&d).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["client", "client.key", "img.ct", "keys", "m.client.fhec", "m.fhec", "res.ct", "server.key", "sim.txt"]
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn build_prints_ir_after_every_pass_and_compares_bootstraps() {
    let dir = tmpdir("passes");
    let out = dir.join("burn.fhec");
    let o = fhec(&[
        "build",
        "examples/models/burn_mnist_bn.onnx",
        "-o",
        out.to_str().unwrap(),
        "--passes",
        "fold-affine,argmax-tail",
        "--print-ir-after-all",
        "--calib-limit",
        "20",
        "--no-fit",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let s = text(&o.stdout);
    let a = s.find("// ----- IR as imported").expect("imported IR");
    let b = s.find("// ----- IR after pass 'fold-affine'").expect("after fold-affine");
    let c = s.find("// ----- IR after pass 'argmax-tail'").expect("after argmax-tail");
    assert!(a < b && b < c, "in pipeline order");
    assert!(s[b..c].contains("rules fired: bn-to-affine"), "{}", &s[b..c]);
    assert!(s[..b].contains("log_softmax") && !s[c..].contains("log_softmax"), "the tail is dropped");
    assert!(s.contains("passes=fold-affine,argmax-tail"));
    let cmp = s.lines().find(|l| l.starts_with("passes: before ")).expect("before/after line");
    assert!(cmp.contains(" -> after "), "{cmp}");
    // Unknown pass and policy: errors that name them, nothing written.
    let bad = dir.join("bad.fhec");
    let o =
        fhec(&["build", "examples/models/fhe_mnist.onnx", "-o", bad.to_str().unwrap(), "--passes", "declutter,nope"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("unknown pass 'nope'"), "{}", text(&o.stderr));
    assert!(!bad.exists());
    let o = fhec(&["build", "examples/models/fhe_mnist.onnx", "-o", bad.to_str().unwrap(), "--activations", "cubic"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("table, poly or auto"), "{}", text(&o.stderr));
}

#[test]
fn eval_accepts_the_pass_flags() {
    let base = ["eval", "examples/models/cnn_mnist.onnx", "--dataset", "mnist", "--data", "examples/data"];
    for extra in
        [&["--passes", "none"][..], &["--activations", "poly", "--poly-degree", "3"], &["--activations", "auto"]]
    {
        let mut args = base.to_vec();
        args.extend(["--mode", "simulate", "--limit", "20", "--no-fit"]);
        args.extend(extra);
        let o = fhec(&args);
        assert!(o.status.success(), "{extra:?}: {}", text(&o.stderr));
        assert!(text(&o.stdout).trim().lines().last().unwrap().starts_with("accuracy: "));
    }
}

/// The README's quick start: the bundled demo model, really encrypted, evaluated with the
/// evaluation key only and decrypted (approximate rounding, so classes are compared).
#[cfg(feature = "fhe")]
#[test]
fn demo_classifies_a_bundled_image_encrypted() {
    let o = fhec(&["demo", "--images", "1"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    for want in [
        "mnist_c16f128_sq (examples/models/frontier/; fhec build --rounding approximate --accuracy-budget 2)",
        "1152 bootstraps per image",
        "security 128 bits",
        "agreement with simulation: 1/1 (same class",
        "encrypted accuracy 1/1",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    // A rounding mode the compiler does not have is refused before any work.
    let o = fhec(&["demo", "--rounding", "nearest"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("nearest"), "{}", text(&o.stderr));
}

#[test]
fn probabilities_are_checked_with_a_hint_for_log2_exponents() {
    for (value, want) in [
        ("40", "looks like a log2 exponent: write 2^-40"),
        ("-40", "looks like a log2 exponent: write 2^-40"),
        ("1", "a probability must be in (0, 1), got 1"),
        ("0", "a probability must be in (0, 1), got 0"),
        ("nan", "a probability must be in (0, 1)"),
        ("often", "'often' is not a number"),
    ] {
        for flag in ["--p-error", "--global-p-error"] {
            let o = fhec(&["build", "examples/models/fhe_mnist.onnx", "--no-fit", flag, value]);
            assert_eq!(o.status.code(), Some(2), "{flag} {value}");
            assert!(text(&o.stderr).contains(want), "{flag} {value}: {}", text(&o.stderr));
        }
    }
    for (flag, value, want) in [
        ("--accuracy-budget", "-1", "must be a finite number >= 0"),
        ("--max-server-time", "0", "must be a finite number > 0"),
        ("--max-server-time", "-1", "must be a finite number > 0"),
        ("--calib-limit", "0", "must be at least 1"),
        ("--validation-limit", "0", "must be at least 1"),
        ("--score-bits", "3", "'3' is neither `all` nor a number of bits from 4 to 62"),
        ("--score-bits", "most", "'most' is neither `all` nor a number of bits from 4 to 62"),
    ] {
        let o = fhec(&["build", "examples/models/fhe_mnist.onnx", flag, value]);
        assert_eq!(o.status.code(), Some(2), "{flag} {value}");
        assert!(text(&o.stderr).contains(want), "{flag} {value}: {}", text(&o.stderr));
    }
    // The power-of-two form is accepted.
    let d = tmpdir("p-error");
    let out = d.join("m.fhec");
    let o = fhec(
        &["build", "examples/models/fhe_mnist.onnx", "--no-fit", "--global-p-error", "2^-30", "-o"]
            .into_iter()
            .chain([out.to_str().unwrap()])
            .collect::<Vec<_>>(),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let _ = std::fs::remove_dir_all(&d);
}

/// Key generation writes both keys as a pair: a concurrent keygen into the same directory is
/// refused, and an interrupted one leaves the old pair intact with no stray file.
#[cfg(feature = "fhe")]
#[test]
fn keygen_is_locked_and_an_interrupted_one_leaves_the_old_pair() {
    let d = tmpdir("keygen");
    let p = |f: &str| d.join(f).display().to_string();
    let o = fhec(&["build", "examples/models/fhe_mnist.onnx", "-o", &p("m.fhec"), "--no-fit"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = fhec(&["keygen", &p("m.fhec"), "--out", &p("keys")]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let pair = |d: &std::path::Path| {
        (std::fs::read(d.join("keys/client.key")).unwrap(), std::fs::read(d.join("keys/server.key")).unwrap())
    };
    let old = pair(&d);
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_fhec"))
            .args(["keygen", &p("m.fhec"), "--out", &p("keys"), "--force"])
            .current_dir(root())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Interrupted while generating (kill -9: no cleanup code runs).
    let mut a = spawn();
    std::thread::sleep(std::time::Duration::from_millis(700));
    a.kill().unwrap();
    a.wait().unwrap();
    assert!(pair(&d) == old, "an interrupted keygen changed the keys");
    let mut names: Vec<String> = std::fs::read_dir(d.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["client.key", "server.key"]);
    // Two at once: the second is refused while the first holds the directory.
    let a = spawn();
    std::thread::sleep(std::time::Duration::from_millis(400));
    let b = spawn().wait_with_output().unwrap();
    let a = a.wait_with_output().unwrap();
    assert!(a.status.success(), "{}", text(&a.stderr));
    assert_eq!(b.status.code(), Some(2), "{}", text(&b.stdout));
    assert!(text(&b.stderr).contains("another fhec process is writing keys in"), "{}", text(&b.stderr));
    assert!(pair(&d) != old);
    // A client key of the old pair with the new evaluation key: an error naming both files,
    // not a wrong class.
    std::fs::write(d.join("old-client.key"), &old.0).unwrap();
    let o =
        fhec(&["encrypt", &p("m.fhec"), "--client-key", &p("old-client.key"), "--dataset", "mnist", "-o", &p("x.ct")]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o =
        fhec(&["run", &p("m.fhec"), "--server-key", &p("keys/server.key"), "--input", &p("x.ct"), "-o", &p("r.ct")]);
    assert_eq!(o.status.code(), Some(2));
    let e = text(&o.stderr);
    assert!(e.contains("x.ct") && e.contains("keys/server.key") && e.contains("belongs to key pair"), "{e}");
    assert!(!d.join("r.ct").exists());
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn bad_image_files_are_errors_that_name_their_kind() {
    let dir = tmpdir("bad-images");
    // An IDX header whose dimensions overflow when multiplied.
    let idx = dir.join("t10k-images-idx3-ubyte");
    std::fs::write(&idx, b"\x00\x00\x08\x03\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff").unwrap();
    let png = dir.join("x.png");
    std::fs::write(&png, b"not a png").unwrap();
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = dir.join("m.fhec");
    let cases: Vec<(Vec<&str>, String)> = vec![
        (vec!["--calib", idx.to_str().unwrap()], format!("{} is not a valid IDX images file", idx.display())),
        (vec!["--calib", png.to_str().unwrap()], format!("{} is not a valid PNG image file", png.display())),
        (vec!["--calib", dir.to_str().unwrap()], format!("{} is not a valid PNG image file", png.display())),
        (vec!["--calib", empty.to_str().unwrap()], format!("no images in {}", empty.display())),
        (vec!["--calib-limit", "0"], "must be at least 1".into()),
    ];
    for (extra, needle) in cases {
        let mut args = vec!["build", "examples/models/fhe_mnist.onnx", "--no-fit", "-o", out.to_str().unwrap()];
        args.extend(&extra);
        let o = fhec(&args);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {err}");
        assert!(err.contains(&needle), "{extra:?}: {err}");
        assert!(!err.contains("panicked") && !err.contains("IDX image file"), "{extra:?}: {err}");
        assert!(!out.exists(), "{extra:?}: an artifact was written");
    }
    // A cause the message already quotes is printed once.
    let o = fhec(&["build", "examples/models/fhe_mnist.onnx", "--no-fit", "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let trunc = dir.join("trunc.fhec");
    std::fs::write(&trunc, &std::fs::read(&out).unwrap()[..1000]).unwrap();
    let o = fhec(&["keygen", trunc.to_str().unwrap(), "--out", dir.join("keys").to_str().unwrap()]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.matches("the file is truncated").count(), 1, "a cause is printed twice: {err}");
}

#[test]
fn serve_token_and_remote_errors() {
    let dir = tmpdir("serve-token");
    let data = dir.join("data");
    let data = data.to_str().unwrap();
    let o = fhec(&["serve-token", "--data", data, "alice"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let token = text(&o.stdout);
    assert!(token.trim().starts_with("fhec_") && token.trim().len() == 69, "{token}");
    // Names are unique; the token itself is not stored.
    let o = fhec(&["serve-token", "--data", data, "alice"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("a token named \"alice\" exists"), "{}", text(&o.stderr));
    for f in std::fs::read_dir(dir.join("data")).unwrap().flatten().filter(|f| f.path().is_file()) {
        let bytes = std::fs::read(f.path()).unwrap();
        assert!(!bytes.windows(token.trim().len()).any(|w| w == token.trim().as_bytes()), "{:?}", f.path());
    }
    // A missing artifact, a client part, and a service that is not there are errors that say so.
    let o = fhec(&["serve", "--data", data, "missing.fhec"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("cannot serve missing.fhec"), "{}", text(&o.stderr));
    let o = fhec(&["remote", "--url", "http://127.0.0.1:9", "--token", token.trim(), "models"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("http://127.0.0.1:9/v1/models"), "{}", text(&o.stderr));
    // The address and the token from the environment (a token there is not in the process
    // list); without a token at all, the error asks for one.
    let remote = |envs: &[(&str, &str)]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_fhec"));
        c.args(["remote", "models"]).env_remove("FHEC_TOKEN").env_remove("FHEC_URL").current_dir(root());
        c.envs(envs.iter().copied()).output().expect("run fhec")
    };
    let o = remote(&[("FHEC_URL", "http://127.0.0.1:9"), ("FHEC_TOKEN", token.trim())]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("http://127.0.0.1:9/v1/models"), "{}", text(&o.stderr));
    let o = remote(&[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("--token"), "{}", text(&o.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}
