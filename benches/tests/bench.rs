//! `fhec-bench`, the harness that writes BENCHMARKS.md's tables: its sections and argument
//! checks (the benchmarks themselves run by hand, in release).

use std::path::PathBuf;
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fhec-bench")).args(args).current_dir(root()).output().expect("run fhec-bench")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fhec-bench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn bench_models_writes_one_row_per_bundled_model_and_keeps_the_rest_of_the_file() {
    let dir = tmpdir("bench-models");
    let out = dir.join("BENCH.md");
    std::fs::write(&out, "# mine\n\nkept text\n").unwrap();
    // No encrypted images (`--images 0`): accuracy, cost and parameters only.
    let args = ["models", "--data", "examples/data", "--images", "0", "--limit", "20", "--out", out.to_str().unwrap()];
    let o = bench(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let doc = std::fs::read_to_string(&out).unwrap();
    assert!(doc.starts_with("# mine\n\nkept text\n"), "{doc}");
    let manifest = std::fs::read_to_string(root().join("examples/models/manifest.json")).unwrap();
    let files = manifest.matches("\"file\"").count();
    let rows: Vec<&str> = doc.lines().filter(|l| l.starts_with("| ") && l.contains(".onnx |")).collect();
    assert_eq!(rows.len(), files, "{doc}");
    let header = doc.lines().find(|l| l.starts_with("| model |")).unwrap();
    for r in &rows {
        assert_eq!(r.matches(" |").count(), header.matches(" |").count(), "{r}");
    }
    // fhe_mnist has 128-bit parameters; an 11-bit-table model has none.
    assert!(rows.iter().any(|r| r.starts_with("| fhe_mnist.onnx") && r.contains("128 bits") && r.contains("not run")));
    assert!(rows.iter().any(|r| r.starts_with("| cnn_mnist.onnx") && r.contains("none at 128 bits")));
    // Rerunning replaces the section instead of appending a second one.
    assert_eq!(bench(&args).status.code(), Some(0));
    let again = std::fs::read_to_string(&out).unwrap();
    assert_eq!(again.matches("<!-- models:begin -->").count(), 1);
}

#[test]
fn bench_speed_checks_its_arguments_before_running_anything() {
    let dir = tmpdir("bench-speed");
    let out = dir.join("BENCH.md");
    std::fs::write(&out, "# mine\n").unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["speed", "--data", "examples/data", "--out", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        let o = bench(&args);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o.stdout));
        text(&o.stderr)
    };
    assert!(run(&["--images", "0"]).contains("--images must be at least 1"));
    let e = run(&["--only", "fhe_mnist.onnx,missing.onnx", "--python", "none"]);
    assert!(e.contains("missing.onnx is not in") && e.contains("manifest.json"), "{e}");
    let e = run(&["--only", "seedq_mnist.onnx:table-bits=6", "--python", "none"]);
    assert!(e.contains("unknown flag 'table-bits'") && e.contains("max-table-bits"), "{e}");
    let e = run(&["--only", "seedq_mnist.onnx:rounding=sometimes", "--python", "none"]);
    assert!(e.contains("unknown rounding 'sometimes'"), "{e}");
    let e = run(&["--only", "seedq_mnist.onnx:max-table-bits=1", "--python", "none"]);
    assert!(e.contains("seedq_mnist.onnx:max-table-bits=1") && e.contains("max table bits 1 must be in 2..=20"), "{e}");
    let e = run(&["--only", "seedq_mnist.onnx:max-table-bits", "--python", "none"]);
    assert!(e.contains("is not flag=value"), "{e}");
    let e = run(&["--only", "fhe_mnist.onnx", "--python", "/nonexistent/python3"]);
    assert!(e.contains("cannot run /nonexistent/python3") && e.contains("benches/anchors/setup.sh"), "{e}");
    assert!(run(&["--concrete-ml-images", "0"]).contains("--concrete-ml-images must be at least 1"));
    let e = run(&["--python", "none", "--concrete-ml-models", "missing.onnx"]);
    assert!(e.contains("missing.onnx is not in"), "{e}");
    let e = run(&["--only", "fhe_mnist.onnx", "--python", "none", "--concrete-ml-python", "/nonexistent/python3"]);
    assert!(e.contains("cannot run /nonexistent/python3") && e.contains("setup.sh --concrete-ml"), "{e}");
    // Nothing was written.
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "# mine\n");
}

#[test]
fn bench_transforms_checks_its_arguments_before_running_anything() {
    let dir = tmpdir("bench-transforms");
    let out = dir.join("BENCH.md");
    let o = bench(&["transforms", "--data", "examples/data", "--images", "0", "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("--images and --schemes must not be empty"), "{}", text(&o.stderr));
    let o = bench(&["transforms", "--data", "examples/data", "--schemes", "etc:0", "--out", out.to_str().unwrap()]);
    assert_ne!(o.status.code(), Some(0));
    assert!(text(&o.stderr).contains("unknown transform 'etc:0'"), "{}", text(&o.stderr));
    // A missing key file is an error naming it (no fallback for a key that was asked for).
    let missing = dir.join("none.key");
    let o = bench(&[
        "transforms",
        "--data",
        "examples/data",
        "--key",
        missing.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("none.key"), "{}", text(&o.stderr));
    assert!(!out.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bench_frontier_checks_its_arguments_before_running_anything() {
    let dir = tmpdir("bench-frontier-args");
    let out = dir.join("BENCH.md");
    std::fs::write(&out, "# mine\n").unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["frontier", "--data", "examples/data", "--figures", dir.to_str().unwrap()];
        args.extend_from_slice(&["--out", out.to_str().unwrap()]);
        args.extend_from_slice(extra);
        let o = bench(&args);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o.stdout));
        text(&o.stderr)
    };
    assert!(run(&["--images", "0"]).contains("--images and --concrete-ml-images must be at least 1"));
    let e = run(&["--points", "frontier/missing.onnx", "--python", "none"]);
    assert!(e.contains("missing.onnx is not in") && e.contains("frontier/manifest.json"), "{e}");
    let e = run(&["--points", "frontier/mnist_c2f16.onnx:accuracy-budget=lots", "--python", "none"]);
    assert!(e.contains("'lots' is not a number of points"), "{e}");
    let e = run(&["--points", "frontier/mnist_c2f16.onnx:range-margin=-5", "--python", "none"]);
    assert!(e.contains("'-5' is not a percentage"), "{e}");
    let e = run(&["--python", "none", "--concrete-ml-python", "python3", "--concrete-ml-models", "frontier/nope.onnx"]);
    assert!(e.contains("nope.onnx is not in"), "{e}");
    // Concrete ML's own MNIST example without its state dict: how to make it, or how to skip it.
    let e = run(&["--python", "none", "--concrete-ml-python", "python3", "--concrete-ml-example", "nope.pt"]);
    assert!(e.contains("nope.pt: no such file") && e.contains("cml_mnist_example.py train"), "{e}");
    assert!(e.contains("--concrete-ml-example none"), "{e}");
    // Nothing was written.
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "# mine\n");
    assert!(!dir.join("frontier-mnist.svg").exists());
}

/// One real point, encrypted: the table row, and a picture with the point, its float twin
/// and the target drawn (SVG text, so the labels can be checked).
#[test]
fn bench_frontier_writes_its_table_and_pictures() {
    let dir = tmpdir("bench-frontier");
    let out = dir.join("BENCH.md");
    std::fs::write(&out, "# mine\n").unwrap();
    let point = "frontier/mnist_c2f16.onnx:rounding=approximate:accuracy-budget=2";
    let args = [
        "frontier",
        "--data",
        "examples/data",
        "--images",
        "1",
        "--points",
        point,
        "--python",
        "none",
        "--concrete-ml-python",
        "none",
        "--figures",
        dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let o = bench(&args);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", text(&o.stdout), text(&o.stderr));
    let doc = std::fs::read_to_string(&out).unwrap();
    assert!(doc.starts_with("# mine\n"), "{doc}");
    assert_eq!(doc.matches("<!-- frontier:begin -->").count(), 1);
    assert!(doc.contains("Concrete ML was not run"), "{doc}");
    let row = doc
        .lines()
        .find(|l| l.starts_with("| frontier/mnist_c2f16.onnx (--rounding approximate --accuracy-budget 2) |"))
        .unwrap_or_else(|| panic!("no row in {doc}"));
    assert!(row.contains("144 (144 x 5-bit)") && row.contains("1/1 same class as the simulation"), "{row}");
    assert!(row.contains("train_frontier.sh"), "{row}");
    let svg = std::fs::read_to_string(dir.join("frontier-mnist.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    for want in ["mnist_c2f16 approx", "the same model in float", "target: &gt;= 99% within 10 s"] {
        assert!(svg.contains(want), "missing {want:?} in the picture");
    }
    // No Fashion-MNIST point, no Fashion-MNIST picture.
    assert!(!dir.join("frontier-fashion.svg").exists());
}
