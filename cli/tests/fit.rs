//! `fhec build` with no width flags: the automatic fit, on models as people export them
//! (a plain linear classifier, a 14x14-input model with two outputs), its determinism, the
//! widths it must keep, and its refusals.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fhec_runtime::dataset::{Dataset, DatasetKind, bundled_sample, bundled_train_sample, write_idx_gz};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Runs `fhec`; a `build` here may rebuild into its own earlier output (`--force`).
fn fhec(args: &[&str]) -> Output {
    let force: &[&str] = if args.first() == Some(&"build") { &["--force"] } else { &[] };
    Command::new(env!("CARGO_BIN_EXE_fhec")).args(args).args(force).current_dir(root()).output().expect("run fhec")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fhec-fit-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

const TWO: &str = "tests/fixtures/fit/two_outputs_14x14.onnx";

/// MNIST images downsampled to 14x14 by 2x2 averaging (how the 14x14 fixture was trained).
fn downsample(ds: &Dataset) -> Dataset {
    let mut px = Vec::with_capacity(ds.len() * 196);
    for i in 0..ds.len() {
        let p = ds.pixels(i);
        for y in 0..14 {
            for x in 0..14 {
                let s: u32 = [(0, 0), (0, 1), (1, 0), (1, 1)]
                    .iter()
                    .map(|(dy, dx)| p[(2 * y + dy) * 28 + 2 * x + dx] as u32)
                    .sum();
                px.push(((s + 2) / 4) as u8);
            }
        }
    }
    Dataset {
        pixels: ndarray::Array2::from_shape_vec((ds.len(), 196), px).unwrap(),
        rows: 14,
        cols: 14,
        labels: ds.labels.clone(),
    }
}

/// A labelled 14x14 training set (IDX) and test set in `dir`, and the same training images
/// as an unlabelled `.npy` array.
fn data_14x14(dir: &Path) -> PathBuf {
    let train = downsample(&bundled_train_sample(DatasetKind::Mnist));
    write_idx_gz(&dir.join("train-images-idx3-ubyte.gz"), &dir.join("train-labels-idx1-ubyte.gz"), &train).unwrap();
    let test = downsample(&bundled_sample(DatasetKind::Mnist));
    write_idx_gz(&dir.join("t10k-images-idx3-ubyte.gz"), &dir.join("t10k-labels-idx1-ubyte.gz"), &test).unwrap();
    let npy = dir.join("train14.npy");
    let header = format!("{{'descr': '|u1', 'fortran_order': False, 'shape': ({}, 14, 14), }}", train.len());
    let pad = 64 - (10 + header.len() + 1) % 64;
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&((header.len() + pad + 1) as u16).to_le_bytes());
    b.extend_from_slice(header.as_bytes());
    b.extend(std::iter::repeat_n(b' ', pad));
    b.push(b'\n');
    b.extend(train.pixels.iter());
    std::fs::write(&npy, b).unwrap();
    npy
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", text(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("json report")
}

#[test]
fn a_linear_classifier_compiles_to_a_bootstrap_free_circuit() {
    let d = tmpdir("linear");
    let art = d.join("linear.fhec");
    let o = fhec(&[
        "build",
        "tests/fixtures/fit/linear_mnist.onnx",
        "--calib-dataset",
        "mnist",
        "-o",
        art.to_str().unwrap(),
        "--json",
    ]);
    let v = json(&o);
    assert_eq!(v["total_bootstraps"], 0, "{v}");
    assert!(v["fhe"]["security_bits"].as_f64().unwrap() >= 128.0, "{v}");
    let fit = &v["fit"];
    let chosen = fit["chosen"].as_u64().unwrap() as usize;
    let acc = fit["candidates"][chosen]["accuracy"].as_f64().unwrap();
    assert!(acc >= fit["float_accuracy"].as_f64().unwrap() - 0.5, "{fit}");
    // The report names the calibration set it used.
    assert!(v["options"]["calibration"].as_str().unwrap().contains("bundled mnist training sample"), "{v}");
}

#[test]
fn a_model_without_a_dataset_or_of_another_size_asks_for_data() {
    let o = fhec(&["build", "tests/fixtures/fit/linear_mnist.onnx", "-o", "/tmp/fhec-fit-never-written.fhec"]);
    assert_eq!(o.status.code(), Some(2));
    let e = text(&o.stderr);
    assert!(e.contains("does not say which images it classifies") && e.contains("--calib-dataset"), "{e}");
    let o = fhec(&[
        "build",
        TWO,
        "--output",
        "logits",
        "--calib-dataset",
        "mnist",
        "-o",
        "/tmp/fhec-fit-never-written.fhec",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let e = text(&o.stderr);
    assert!(e.contains("takes 14x14 images") && e.contains("pass --calib"), "{e}");
}

#[test]
fn a_two_output_14x14_model_builds_from_its_own_data_and_simulates() {
    let d = tmpdir("two14");
    let npy = data_14x14(&d);
    let art = d.join("two.fhec");
    // Two outputs and no choice: the error lists them.
    let o = fhec(&["build", TWO, "--calib", d.to_str().unwrap(), "-o", art.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let e = text(&o.stderr);
    assert!(e.contains("2 outputs [\"logits\", \"probs\"]") && e.contains("--output NAME"), "{e}");
    assert!(!art.exists());
    // Labelled IDX data of its size.
    let o = fhec(&["build", TWO, "--output", "logits", "--calib", d.to_str().unwrap(), "-o", art.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("fit: chose") && out.contains("labelled"), "{out}");
    let o = fhec(&[
        "eval",
        art.to_str().unwrap(),
        "--dataset",
        "mnist",
        "--data",
        d.to_str().unwrap(),
        "--mode",
        "simulate",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let last = text(&o.stdout).lines().last().unwrap().to_string();
    let acc: f64 = last.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(acc >= 0.8, "{last}");
    // An unlabelled .npy array: the fit measures agreement with the float model.
    let o = fhec(&[
        "build",
        TWO,
        "--output",
        "logits",
        "--calib",
        npy.to_str().unwrap(),
        "--accuracy-budget",
        "2",
        "-o",
        art.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("agreement with the float model"), "{}", text(&o.stdout));
}

#[test]
fn the_fit_is_deterministic_and_keeps_the_widths_it_is_given() {
    let d = tmpdir("det");
    data_14x14(&d);
    let dir = d.display().to_string();
    let run = |tag: &str, extra: &[&str]| {
        let out = d.join(format!("{tag}.fhec")).display().to_string();
        let mut args = vec!["build", TWO, "--output", "logits", "--calib", &dir, "-o", &out, "--json"];
        args.extend_from_slice(extra);
        json(&fhec(&args))
    };
    let a = run("a", &["--seed", "3"]);
    let b = run("b", &["--seed", "3"]);
    assert_eq!(a["fit"]["candidates"], b["fit"]["candidates"]);
    assert_eq!(a["fit"]["chosen"], b["fit"]["chosen"]);
    // A width given on the command line stays, for every layer and candidate.
    let f = run("f", &["--weight-bits", "5"]);
    for c in f["fit"]["candidates"].as_array().unwrap() {
        let w = c["widths"].as_str().unwrap();
        assert!(w.contains(" w 5 ") && !w.contains(": w ") && !w.contains(" w 4") && !w.contains(" w 6"), "{w}");
    }
    assert_eq!(f["options"]["weight_bits"], "5");
    assert!(f["options"]["layer fc1"].as_str().unwrap().contains("weights 5 bits"), "{}", f["options"]);
}

#[test]
fn the_fit_refuses_what_it_cannot_fit_and_says_why() {
    let d = tmpdir("refuse");
    data_14x14(&d);
    let base = ["build", TWO, "--output", "logits", "--calib", d.to_str().unwrap()];
    let art = d.join("never.fhec");
    // Widths too narrow for the accuracy budget.
    let mut args = base.to_vec();
    args.extend(["--weight-bits", "2", "--max-table-bits", "2", "--act-bits", "2", "-o", art.to_str().unwrap()]);
    let o = fhec(&args);
    assert_eq!(o.status.code(), Some(2));
    let e = text(&o.stderr);
    assert!(e.contains("no width choice within the accuracy budget"), "{e}");
    assert!(e.contains("the nearest is") && e.contains("validation"), "{e}");
    assert!(e.contains("layer 'relu' limits it") && e.contains("noise 2-norm"), "{e}");
    assert!(e.contains("--accuracy-budget"), "{e}");
    assert!(!art.exists(), "nothing written");
    // A time limit no circuit meets.
    let mut args = base.to_vec();
    args.extend(["--max-server-time", "0.001", "-o", art.to_str().unwrap()]);
    let o = fhec(&args);
    assert_eq!(o.status.code(), Some(2));
    let e = text(&o.stderr);
    assert!(e.contains("no width choice meets --max-server-time 0.001 s"), "{e}");
    assert!(!art.exists());
}
