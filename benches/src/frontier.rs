//! `fhec-bench frontier`: the accuracy / server-time frontier (issue 25). Every point is a
//! model compiled by fhec (the frontier models of `examples/models/frontier/`, trained for
//! the cost model by `examples/train/train_frontier.sh`, and bundled references), simulated
//! on the whole test set and run encrypted on its first images; beside them, in the same
//! run, TenSEAL's seed network and Concrete ML on the same ONNX files. Writes a table
//! (BENCHMARKS.md, section `frontier`) and one accuracy-vs-seconds picture per dataset
//! (`benches/figures/frontier-{mnist,fashion}.svg`, drawn with `plotters`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use fhec_compiler::manifest::{Manifest, ManifestEntry};
use fhec_driver::compile::{CompileOptions, compile_model};
use fhec_driver::encrypted::fhe_eval;
use fhec_driver::measure::{NOISE_DRAWS, measure_accuracy};
use fhec_driver::model::load_manifest;
use fhec_runtime::dataset::{Dataset, DatasetKind};
use plotters::prelude::*;

use crate::common::{cpu_model, machine_line, run_anchor, save_section};
use crate::speed::ModelSpec;

/// What `cargo bench-table frontier` measures and where it writes (see `Bench::Frontier`).
pub struct FrontierRun<'a> {
    pub models: &'a Path,
    pub points: &'a [String],
    pub data: &'a Path,
    pub images: usize,
    pub budget: f64,
    pub tenseal_python: &'a str,
    pub cml_python: &'a str,
    pub cml_models: &'a [String],
    pub cml_images: usize,
    pub cml_max_seconds: f64,
    /// The state dict of Concrete ML's own MNIST example (`cml_mnist_example.py`), or `none`.
    pub cml_example: &'a str,
    pub figures: &'a Path,
    pub out: &'a Path,
}

/// Which system a point is.
#[derive(Clone, Copy, PartialEq)]
enum System {
    Fhec,
    TenSeal,
    ConcreteMl,
}

/// One point of a picture: a system's accuracy and seconds per image on one model.
struct Point {
    system: System,
    dataset: DatasetKind,
    label: String,
    /// Measured seconds per encrypted image (both cores, median), if run encrypted; for a
    /// Concrete ML run killed at its limit, its own estimate (`estimated`).
    seconds: Option<f64>,
    /// `seconds` is Concrete ML's estimate, not a measurement (drawn hollow).
    estimated: bool,
    /// Accuracy of what the encrypted run computes, percent.
    accuracy: f64,
    /// The float model's accuracy, percent (fhec points).
    float: Option<f64>,
}

/// The frontier manifest's extra fields: how each model is built and trained.
#[derive(serde::Deserialize)]
struct FrontierEntry {
    file: String,
    #[serde(default)]
    train: Option<String>,
}

#[derive(serde::Deserialize)]
struct FrontierManifest {
    models: Vec<FrontierEntry>,
}

/// The manifest entry of a point's file (`frontier/NAME` in the frontier manifest, else the
/// bundled one), and how it was trained.
fn entry_of(models: &Path, file: &str) -> Result<(ManifestEntry, String)> {
    if let Some(name) = file.strip_prefix("frontier/") {
        let dir = models.join("frontier");
        let m = load_manifest(&dir)?;
        let text = std::fs::read_to_string(dir.join("manifest.json"))?;
        let extra: FrontierManifest = serde_json::from_str(&text).context("frontier manifest")?;
        let e = m
            .models
            .iter()
            .find(|e| e.file == name)
            .with_context(|| format!("{name} is not in {}", dir.join("manifest.json").display()))?;
        let train = extra.models.iter().find(|e| e.file == name).and_then(|e| e.train.clone());
        let mut e = e.clone();
        e.file = file.to_string();
        return Ok((e, train.unwrap_or_else(|| "—".into())));
    }
    let m: Manifest = load_manifest(models)?;
    let e = m
        .models
        .iter()
        .find(|e| e.file == file)
        .with_context(|| format!("{file} is not in {}", models.join("manifest.json").display()))?;
    Ok((e.clone(), "bundled (examples/models/README.md)".into()))
}

fn pct(k: f64, n: usize) -> f64 {
    100.0 * k / n as f64
}

pub fn bench_frontier(run: &FrontierRun) -> Result<()> {
    if run.images == 0 || run.cml_images == 0 {
        bail!("--images and --concrete-ml-images must be at least 1 (latencies are medians over the images)");
    }
    let specs = run.points.iter().map(|s| ModelSpec::parse(s)).collect::<Result<Vec<_>>>()?;
    let entries = specs.iter().map(|s| entry_of(run.models, s.file())).collect::<Result<Vec<_>>>()?;
    for s in &specs {
        s.apply(&mut CompileOptions::default()).with_context(|| format!("--points {}", s.label()))?;
    }
    if run.cml_python != "none" {
        // Every file Concrete ML is to run is checked before anything runs.
        for file in run.cml_models {
            entry_of(run.models, file)?;
        }
        if run.cml_example != "none" && !Path::new(run.cml_example).is_file() {
            bail!(
                "--concrete-ml-example {0}: no such file (make it with `{1} benches/anchors/cml_mnist_example.py train --data {2} --out {0}`, or pass --concrete-ml-example none)",
                run.cml_example,
                run.cml_python,
                run.data.display()
            );
        }
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (cpu, load_before) = (cpu_model(), machine_line());
    let mut points: Vec<Point> = vec![];
    let mut rows = vec![];
    for (spec, (m, train)) in specs.iter().zip(&entries) {
        let path = run.models.join(spec.file());
        let kind: DatasetKind = m.dataset.parse()?;
        let full = Dataset::load_test(run.data, kind)?;
        println!("== {} ==", spec.label());
        let args = spec.options(kind, m.preprocess)?;
        // A point the fit cannot compile within its budget is a row of the table, not the end
        // of the run.
        let (g, art) = match compile_model(&path, &args) {
            Ok(c) => c,
            Err(e) => {
                let why = fhec_driver::error_message(&e).replace(['\n', '|'], " ");
                println!("{}: {why}", spec.label());
                rows.push(format!(
                    "| {} | {} | — | — | — | — | — | does not compile: {why} | — | — | {train} |",
                    spec.label(),
                    m.dataset
                ));
                continue;
            }
        };
        let setup = art.fhe.as_ref().with_context(|| format!("{}: no 128-bit parameters fit", m.file))?;
        let acc = measure_accuracy(&g, &art, &full, m.preprocess)?;
        let (float, simulated) = (pct(acc.float as f64, full.len()), pct(acc.simulated, full.len()));
        let st = art.circuit.bootstrap_stats();
        let widths: Vec<String> = st.by_width.iter().map(|(w, k)| format!("{k} x {w}-bit")).collect();
        let est_s = setup.est_cost_ms / 1000.0;
        let n = run.images.min((run.budget / est_s.max(1e-9)).floor() as usize);
        let (seconds, encrypted) = if n == 0 {
            (None, format!("not run (estimated {est_s:.0} s per image on one core, over --budget)"))
        } else {
            let mut ds = full.clone();
            ds.truncate(n);
            let r = fhe_eval(&path, &art, &ds, kind)?;
            let how =
                if art.circuit.is_approximate() { "same class as the simulation" } else { "equal to the simulation" };
            (Some(r.evaluate_s), format!("{}/{n} {how}, {}/{n} correct", r.agree, r.correct))
        };
        let row = format!(
            "| {} | {} | {}, {} | {} ({}) | {}; failure 2^{:.1} / inference | {:.2}% | {:.2}%{} | {} | {} | {:.1} s | {} |",
            spec.label(),
            m.dataset,
            fhec_driver::measure::widths_of(&art),
            art.options.get("ranges").map_or("?", |v| v.as_str()),
            st.total(),
            widths.join(", "),
            setup.params.summary(),
            setup.global_p_error.max(1e-300).log2(),
            float,
            simulated,
            acc.spread(full.len() as f64).map_or(String::new(), |s| format!(" ({s})")),
            encrypted,
            seconds.map_or("—".into(), |s| format!("{s:.2} s")),
            est_s,
            train,
        );
        println!("{row}");
        rows.push(row);
        points.push(Point {
            system: System::Fhec,
            dataset: kind,
            label: spec.short_label(),
            seconds,
            accuracy: simulated,
            float: Some(float),
            estimated: false,
        });
    }

    // The anchors, in the same run: TenSEAL's seed network, Concrete ML on the same files.
    let mut anchor_rows = vec![];
    if run.tenseal_python != "none" {
        let seed = run.models.join("seed_mnist.onnx");
        println!("== TenSEAL anchor: seed network, {} images ==", run.images);
        let threads = cores.to_string();
        let v = run_anchor(
            run.tenseal_python,
            "tenseal_seed.py",
            (seed.as_path(), run.data, "mnist", run.images),
            &["--threads", &threads],
            "benches/anchors/setup.sh",
        )?;
        let s = v["median_evaluate_s"].as_f64().unwrap_or(f64::NAN);
        // CKKS evaluates the float network (up to its drift): its accuracy is the float one.
        let float = points
            .iter()
            .zip(&specs)
            .find(|(_, sp)| sp.file() == "seed_mnist.onnx")
            .and_then(|(p, _)| p.float)
            .unwrap_or(f64::NAN);
        anchor_rows.push(format!(
            "| TenSEAL {} (CKKS, {cores} threads) | seed_mnist.onnx (same weights) | {:.2}% (the float network's; CKKS drifts from it) | — (CKKS, no bootstrap; ~128 bits, SEAL default) | {}/{} correct | {s:.2} s |",
            v["tenseal_version"].as_str().unwrap_or("?"),
            float,
            v["correct"],
            v["images"],
        ));
        points.push(Point {
            system: System::TenSeal,
            dataset: DatasetKind::Mnist,
            label: "TenSEAL seed".into(),
            seconds: s.is_finite().then_some(s),
            accuracy: float,
            float: None,
            estimated: false,
        });
    }
    if run.cml_python != "none" {
        // (script, model file, dataset, what the model is, its point's label)
        let mut jobs: Vec<(&str, PathBuf, String, String, String)> = vec![];
        for file in run.cml_models {
            let (m, _) = entry_of(run.models, file)?;
            let label = format!("Concrete ML {}", file.trim_start_matches("frontier/").trim_end_matches(".onnx"));
            jobs.push(("concrete_ml.py", run.models.join(file), m.dataset, format!("{file} (same file)"), label));
        }
        if run.cml_example != "none" {
            jobs.push((
                "cml_mnist_example.py",
                PathBuf::from(run.cml_example),
                "mnist".into(),
                format!("its own MNIST example: Brevitas QAT FC 784-192x3-10, 2-bit, pruned ({})", run.cml_example),
                "Concrete ML's own MNIST example (FC 784-192x3, 2-bit)".into(),
            ));
        }
        for (script, model, dataset, what, label) in jobs {
            let (row, point) = concrete_ml_anchor(run, cores, script, &model, &dataset, &what, label)?;
            anchor_rows.push(row);
            points.extend(point);
        }
    }

    std::fs::create_dir_all(run.figures).with_context(|| format!("cannot create {}", run.figures.display()))?;
    let mut figures = vec![];
    // Each dataset's target (issue 25): MNIST 99% within 10 s, Fashion-MNIST 91% within 20 s.
    for (kind, name, target) in
        [(DatasetKind::Mnist, "MNIST", (10.0, 99.0)), (DatasetKind::FashionMnist, "Fashion-MNIST", (20.0, 91.0))]
    {
        let pts: Vec<&Point> = points.iter().filter(|p| p.dataset == kind && p.seconds.is_some()).collect();
        if pts.is_empty() {
            continue;
        }
        let file =
            run.figures.join(format!("frontier-{}.svg", if kind == DatasetKind::Mnist { "mnist" } else { "fashion" }));
        plot(&file, name, &pts, target)?;
        println!("wrote {}", file.display());
        figures.push(file);
    }

    let pictures: Vec<String> = figures
        .iter()
        .map(|f| {
            let rel = f.strip_prefix(run.out.parent().unwrap_or(Path::new(""))).unwrap_or(f);
            format!("![{}]({})", rel.display(), rel.display())
        })
        .collect();
    let cml_note = if run.cml_python == "none" {
        "Concrete ML was not run in this run (`--concrete-ml-python none`).".to_string()
    } else {
        let example = if run.cml_example == "none" {
            String::new()
        } else {
            format!(
                " Beside them, Concrete ML's own MNIST example (`benches/anchors/cml_mnist_example.py`: the network of its `use_case_examples/mnist`, a Brevitas QAT fully-connected 784-192-192-192-10 with 2-bit weights and activations and pruned layers, trained by the script's `train` mode into `{}`), compiled with `compile_brevitas_qat_model` and run the same way.",
                run.cml_example
            )
        };
        format!(
            "Concrete ML (`benches/anchors/concrete_ml.py`, as in the speed section) compiles the same ONNX files and runs {} image(s) each with its client/server API.{example} A model Concrete ML estimates at over an hour per image runs no encrypted image (`--skip-fhe-above 3600`); one estimated under it runs, and is killed at `--concrete-ml-max-seconds`. In the pictures, either is drawn hollow at Concrete ML's own estimate of its time.",
            run.cml_images
        )
    };
    let body = format!(
        "## Frontier: accuracy against server time per encrypted image\n\n\
Produced by `cargo bench-table frontier --data {} --images {}` (points: {}). A point is a \
model compiled by fhec with the flags after its name (with `--accuracy-budget`, `fhec build`'s \
fit within that budget, calibrated and validated on the bundled training sample; without it, \
`--no-fit`: the widths its metadata names), simulated on all 10,000 test images (with approximate rounding, the mean of {NOISE_DRAWS} read-noise draws, as in \
the speed section) and run encrypted on the first test images (client encrypts, server \
evaluates with the evaluation key only on both cores, client decrypts; *s / image* is the \
median; a model whose estimate exceeds `--budget` {} s on one core is simulated only). *est.*: \
the compiler's estimate on one core. The frontier models (`examples/models/frontier/`) are trained \
by `examples/train/train_frontier.sh`; the others are the bundled ones. TenSEAL's point is its \
CKKS evaluation of the seed network (`benches/anchors/tenseal_seed.py`) at the float network's \
accuracy. {cml_note} Machine: {cpu}; before the run: {load_before}; after: {}.\n\n{}\n\n\
| model (flags) | dataset | widths (in/w/act/table), ranges | bootstraps / image | parameters | float | simulated | encrypted sample | s / image (2 cores) | est. (1 core) | trained by |\n\
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n{}\n\n\
| anchor | model | accuracy | bootstraps / image; failure | encrypted sample | s / image (2 cores) |\n| --- | --- | --- | --- | --- | --- |\n{}\n",
        run.data.display(),
        run.images,
        run.points.join(","),
        run.budget,
        machine_line(),
        pictures.join("\n"),
        rows.join("\n"),
        anchor_rows.join("\n"),
    );
    save_section(run.out, "# fhec benchmarks", "frontier", &body)?;
    println!("wrote {}", run.out.display());
    Ok(())
}

/// Runs a Concrete ML anchor script (`concrete_ml.py`, or `cml_mnist_example.py` with the same
/// command line and JSON) on `model`: its row of the anchor table (`what` names the model) and
/// its point (`label`), none if the script failed: a model Concrete ML cannot take is a
/// finding of the run, not the end of it.
fn concrete_ml_anchor(
    run: &FrontierRun,
    cores: usize,
    script: &str,
    model: &Path,
    dataset: &str,
    what: &str,
    label: String,
) -> Result<(String, Option<Point>)> {
    println!("== Concrete ML anchor: {what}, {} images ==", run.cml_images);
    let v = match run_anchor(
        run.cml_python,
        script,
        (model, run.data, dataset, run.cml_images),
        &["--max-fhe-seconds", &run.cml_max_seconds.to_string()],
        "benches/anchors/setup.sh --concrete-ml",
    ) {
        Ok(v) => v,
        Err(e) => {
            let why = format!("{e:#}").replace(['\n', '|'], " ");
            println!("Concrete ML failed on {what}: {why}");
            return Ok((format!("| Concrete ML | {what} | — | — | failed: {why} | — |"), None));
        }
    };
    let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let s = f("median_evaluate_s");
    let acc = 100.0 * f("clear_accuracy");
    // An image over the limit is killed there: the row keeps the compile statistics and
    // Concrete ML's own estimate (its optimizer's cost times a measured rate).
    let time = if s.is_finite() {
        format!("{s:.2} s")
    } else if v["fhe_skipped"].as_bool() == Some(true) {
        format!(
            "not run: estimated {:.0} s per image, over an hour (rate probe: {})",
            f("fhe_estimate_s"),
            v["rate_probe"].as_str().unwrap_or("?")
        )
    } else if v["fhe_timed_out"].as_bool() == Some(true) {
        format!(
            "not measured: killed at {:.0} s in {} (estimated {:.0} s per image)",
            f("fhe_elapsed_s"),
            v["fhe_timeout_stage"].as_str().unwrap_or("?"),
            f("fhe_estimate_s")
        )
    } else {
        format!("not measured: {}", v["fhe_error"].as_str().unwrap_or("no time reported").replace('|', " "))
    };
    let correct = match v["correct"].as_u64() {
        Some(c) if s.is_finite() => format!("{c}/{} correct", run.cml_images),
        _ => "—".to_string(),
    };
    // A run killed at the limit is drawn at Concrete ML's estimate, hollow and labelled so.
    let estimate = f("fhe_estimate_s");
    let estimated = !s.is_finite() && estimate.is_finite();
    let label = if estimated { format!("{label} (estimated {estimate:.0} s)") } else { label };
    let rounding = v["rounding_threshold_bits"].as_u64().map_or("none".to_string(), |b| format!("{b} bits"));
    let row = format!(
        "| Concrete ML {} (TFHE, n_bits {}, rounding {rounding}, {cores} threads) | {what} | {acc:.2}% (clear-quantized, what its FHE computes) | {} (widest {} bits); failure 2^{:.1} / inference | {correct} | {time} |",
        v["concrete_ml_version"].as_str().unwrap_or("?"),
        v["n_bits"],
        v["bootstraps"],
        v["widest_integer_bits"],
        f("global_p_error").max(1e-300).log2(),
    );
    let point = Point {
        system: System::ConcreteMl,
        dataset: dataset.parse()?,
        label,
        seconds: if estimated { Some(estimate) } else { s.is_finite().then_some(s) },
        accuracy: acc,
        float: None,
        estimated,
    };
    Ok((row, Some(point)))
}

/// The fhec points no faster point beats in accuracy, fastest first.
fn pareto<'a>(pts: &[&'a Point]) -> Vec<&'a Point> {
    let mut fhec: Vec<&Point> = pts.iter().copied().filter(|p| p.system == System::Fhec).collect();
    fhec.sort_by(|a, b| a.seconds.unwrap_or(f64::MAX).total_cmp(&b.seconds.unwrap_or(f64::MAX)));
    let mut best = f64::NEG_INFINITY;
    fhec.into_iter()
        .filter(|p| {
            let keep = p.accuracy > best;
            best = best.max(p.accuracy);
            keep
        })
        .collect()
}

/// Draws one dataset's picture: seconds per image (log scale) against accuracy.
fn plot(file: &PathBuf, name: &str, pts: &[&Point], target: (f64, f64)) -> Result<()> {
    let secs: Vec<f64> = pts.iter().filter_map(|p| p.seconds).collect();
    let accs: Vec<f64> =
        pts.iter().flat_map(|p| [Some(p.accuracy), p.float]).flatten().filter(|a| a.is_finite()).collect();
    let (xlo, xhi) = secs.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &s| (lo.min(s), hi.max(s)));
    let (ylo, yhi) = accs.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &a| (lo.min(a), hi.max(a)));
    let (xlo, xhi) = (xlo / 2.0, xhi * 2.0);
    let (xlo, xhi) = (xlo.min(target.0 / 2.0), xhi.max(target.0 * 2.0));
    let (ylo, yhi) = ((ylo - 0.5).floor(), (yhi.max(target.1) + 0.5).ceil().min(100.0));
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("{}: {e}", file.display());
    let root = SVGBackend::new(file, (960, 620)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{name}: test accuracy against server time per encrypted image"), ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d((xlo..xhi).log_scale(), ylo..yhi)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("seconds per image on the server (2 cores, log scale)")
        .y_desc("top-1 accuracy on the 10,000 test images (%)")
        .draw()
        .map_err(|e| err(&e))?;
    let front: Vec<(f64, f64)> = pareto(pts).iter().map(|p| (p.seconds.unwrap_or(f64::NAN), p.accuracy)).collect();
    chart
        .draw_series(LineSeries::new(front, BLUE.stroke_width(2)))
        .map_err(|e| err(&e))?
        .label("fhec frontier (compiled circuit)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    let fhec: Vec<&&Point> = pts.iter().filter(|p| p.system == System::Fhec).collect();
    chart
        .draw_series(fhec.iter().map(|p| Circle::new((p.seconds.unwrap_or(f64::NAN), p.accuracy), 5, BLUE.filled())))
        .map_err(|e| err(&e))?;
    chart
        .draw_series(
            fhec.iter().filter_map(|p| {
                p.float.map(|f| Circle::new((p.seconds.unwrap_or(f64::NAN), f), 5, BLUE.stroke_width(1)))
            }),
        )
        .map_err(|e| err(&e))?
        .label("the same model in float")
        .legend(|(x, y)| Circle::new((x + 10, y), 5, BLUE.stroke_width(1)));
    // The issue-25 target: at least this accuracy within this time (the region above-left).
    let (tx, ty) = target;
    if tx > xlo && ty < yhi {
        let style = ShapeStyle::from(&BLACK.mix(0.5)).stroke_width(1);
        chart
            .draw_series(LineSeries::new(vec![(xlo, ty), (tx, ty), (tx, yhi)], style))
            .map_err(|e| err(&e))?
            .label(format!("target: >= {ty}% within {tx} s"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    let anchors: [(System, RGBColor, &str); 2] = [
        (System::TenSeal, RGBColor(0, 150, 0), "TenSEAL (CKKS)"),
        (System::ConcreteMl, RGBColor(200, 90, 0), "Concrete ML 1.9"),
    ];
    for (system, color, label) in anchors {
        let at = |estimated: bool| -> Vec<(f64, f64)> {
            pts.iter()
                .filter(|p| p.system == system && p.estimated == estimated)
                .map(|p| (p.seconds.unwrap_or(f64::NAN), p.accuracy))
                .collect()
        };
        let (measured, estimated) = (at(false), at(true));
        if !measured.is_empty() {
            chart
                .draw_series(measured.into_iter().map(|c| TriangleMarker::new(c, 8, color.filled())))
                .map_err(|e| err(&e))?
                .label(label)
                .legend(move |(x, y)| TriangleMarker::new((x + 10, y), 6, color.filled()));
        }
        if !estimated.is_empty() {
            // A triangle's outline (plotters fills its triangle markers whatever the style).
            let outline = move |r: i32| {
                PathElement::new(vec![(0, -r), (r, r * 2 / 3), (-r, r * 2 / 3), (0, -r)], color.stroke_width(2))
            };
            chart
                .draw_series(estimated.into_iter().map(|c| EmptyElement::at(c) + outline(8)))
                .map_err(|e| err(&e))?
                .label(format!("{label}: its estimate (run killed at the limit)"))
                .legend(move |(x, y)| EmptyElement::at((x + 10, y)) + outline(6));
        }
    }
    // Labels in pixels, each beside its point where it overlaps no other label or marker and
    // stays inside the plotting area.
    let marks: Vec<(i32, i32)> = pts
        .iter()
        .filter_map(|p| p.seconds.map(|s| chart.backend_coord(&(s, p.accuracy))))
        .chain(fhec.iter().filter_map(|p| Some(chart.backend_coord(&(p.seconds?, p.float?)))))
        .collect();
    let (xs, ys) = chart.plotting_area().get_pixel_range();
    let area = Rect { x0: xs.start, y0: ys.start, x1: xs.end, y1: ys.end };
    let labelled: Vec<&&Point> = pts.iter().filter(|p| p.seconds.is_some()).collect();
    let wanted: Vec<Label> = labelled
        .iter()
        .map(|p| (chart.backend_coord(&(p.seconds.unwrap_or(f64::NAN), p.accuracy)), label_size(&p.label)))
        .collect();
    for (p, at) in labelled.iter().zip(place_labels(&wanted, &marks, area)) {
        root.draw(&Text::new(p.label.clone(), at, ("sans-serif", LABEL_FONT))).map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// A label to place: its point and its size, pixels.
type Label = ((i32, i32), (i32, i32));

/// Font size of the point labels, pixels.
const LABEL_FONT: i32 = 12;

/// Estimated pixel size of a label at [`LABEL_FONT`] (SVG leaves the font to the viewer, so
/// the width is an average glyph's, generous enough for the sans-serif fonts viewers pick).
fn label_size(text: &str) -> (i32, i32) {
    ((text.chars().count() as f64 * LABEL_FONT as f64 * 0.58).ceil() as i32, LABEL_FONT + 2)
}

/// A pixel rectangle, `[x0, x1) × [y0, y1)`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Rect {
    x0: i32,
    y0: i32,
    x1: i32,
    y1: i32,
}

impl Rect {
    fn overlaps(&self, o: &Rect) -> bool {
        self.x0 < o.x1 && o.x0 < self.x1 && self.y0 < o.y1 && o.y0 < self.y1
    }

    fn inside(&self, o: &Rect) -> bool {
        self.x0 >= o.x0 && self.x1 <= o.x1 && self.y0 >= o.y0 && self.y1 <= o.y1
    }
}

/// Top-left corners for labels of `(point, (width, height))`, in order: for each, the first
/// of the positions around its point (right, left, then above and below, then further out)
/// where it stays inside `area` and overlaps no label placed before it and no marker of
/// `marks` (points drawn as circles or triangles of radius about 6); if none is free, the
/// position that overlaps the fewest.
fn place_labels(labels: &[Label], marks: &[(i32, i32)], area: Rect) -> Vec<(i32, i32)> {
    const R: i32 = 6;
    let mark_rects: Vec<Rect> =
        marks.iter().map(|&(x, y)| Rect { x0: x - R, y0: y - R, x1: x + R, y1: y + R }).collect();
    let mut placed: Vec<Rect> = vec![];
    let mut out = vec![];
    for &((x, y), (w, h)) in labels {
        let gap = R + 3;
        let mut candidates = vec![];
        for dy in [0, -h, h, -2 * h, 2 * h] {
            candidates.push((x + gap, y - h / 2 + dy));
            candidates.push((x - gap - w, y - h / 2 + dy));
        }
        candidates.push((x - w / 2, y - gap - h));
        candidates.push((x - w / 2, y + gap));
        let clashes = |r: &Rect| {
            placed.iter().chain(&mark_rects).filter(|o| o.overlaps(r)).count() + usize::from(!r.inside(&area)) * 100
        };
        let best = candidates
            .iter()
            .map(|&(cx, cy)| Rect { x0: cx, y0: cy, x1: cx + w, y1: cy + h })
            .min_by_key(|r| clashes(r))
            .expect("candidates");
        placed.push(best);
        out.push((best.x0, best.y0));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rects(labels: &[Label], at: &[(i32, i32)]) -> Vec<Rect> {
        labels.iter().zip(at).map(|(&(_, (w, h)), &(x, y))| Rect { x0: x, y0: y, x1: x + w, y1: y + h }).collect()
    }

    /// Points close together (as the seed network's rows at 6.6 s and 8.6 s are) get labels
    /// that overlap neither each other nor a marker, and a point at the right edge gets its
    /// label on its left instead of past the edge.
    #[test]
    fn labels_of_crowded_points_do_not_overlap_and_stay_inside() {
        let area = Rect { x0: 70, y0: 40, x1: 940, y1: 560 };
        let pts = [(355, 155), (388, 157), (356, 117), (408, 100), (410, 95), (565, 152), (855, 99), (825, 87)];
        let labels: Vec<Label> =
            pts.iter().enumerate().map(|(i, &p)| (p, label_size(&format!("a fairly long point label {i}")))).collect();
        let at = place_labels(&labels, &pts, area);
        let r = rects(&labels, &at);
        for (i, a) in r.iter().enumerate() {
            assert!(a.inside(&area), "label {i} at {a:?} leaves the area");
            for b in &r[i + 1..] {
                assert!(!a.overlaps(b), "{a:?} overlaps {b:?}");
            }
            for &(x, y) in &pts {
                assert!(!a.overlaps(&Rect { x0: x - 6, y0: y - 6, x1: x + 6, y1: y + 6 }), "{a:?} covers ({x}, {y})");
            }
        }
        let edge = labels.len() - 2;
        assert!(at[edge].0 < pts[edge].0, "the label of the rightmost point goes left: {:?}", at[edge]);
    }
}
