//! Compiling a model file: the options of `fhec build` (flags over the model's metadata over
//! the defaults), the calibration and validation images they name, and the build itself with
//! the automatic fit.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use fhec_compiler::BuildOptions;
use fhec_compiler::ImportOptions;
use fhec_compiler::build::{PassOptions, build_fitted, build_graph_with};
use fhec_compiler::fit::{FitData, FitError, FitOptions, FitReport, Fixed, Objective};
use fhec_compiler::params::ParamOptions;
use fhec_compiler::passes::{ActivationPolicy, Pipeline};
use fhec_compiler::quantize::{QuantOptions, RangeMode, Rounding};
use fhec_compiler::report::build_report;
use fhec_ir::artifact::Artifact;
use fhec_ir::client::ClientSpec;
use fhec_ir::{Graph, Preprocess, Transform};
use fhec_runtime::dataset::{Dataset, DatasetKind, bundled_train_sample};

use crate::model::{dataset_of, image_input_shape, image_size, import, manifest_entry, preprocess_of, read};

/// The options of a compilation (what `fhec build`'s flags say; `None` where a flag is
/// absent, so that the model's metadata or the fit decides). The CLI documents each one.
#[derive(Clone, Debug)]
pub struct CompileOptions {
    /// Input shape override and output selection.
    pub import: ImportOptions,
    /// Bits of the encrypted input values.
    pub input_bits: Option<u32>,
    /// Bits of the weights, every layer.
    pub weight_bits: Option<u32>,
    /// Bits of the activations (table outputs).
    pub act_bits: Option<u32>,
    /// Widest table read.
    pub max_table_bits: Option<u32>,
    /// Calibrated or exact ranges.
    pub ranges: RangeMode,
    /// Margin around calibrated ranges, percent.
    pub range_margin: Option<u32>,
    /// Exact or approximate rounding.
    pub rounding: Option<Rounding>,
    /// Bits of the scores the client reads (their top ones): `Some(0)` every bit, exactly;
    /// `None` the default ([`fhec_compiler::quantize::DEFAULT_SCORE_BITS`]).
    pub score_bits: Option<u32>,
    /// Calibration (and validation) images.
    pub calib: Option<PathBuf>,
    /// The bundled sample that calibrates a model without `calib`.
    pub calib_dataset: Option<DatasetKind>,
    /// Calibration images, at most (at least one).
    pub calib_limit: usize,
    /// Validation images for the fit.
    pub validation: Option<PathBuf>,
    /// The label of each output index, for a model of some classes only.
    pub classes: Option<Vec<u8>>,
    /// Validation images, at most (at least one).
    pub validation_limit: usize,
    /// Accuracy budget of the fit, points.
    pub accuracy_budget: f64,
    /// Largest estimated server time per image (one core, seconds) the fit accepts.
    pub max_server_time: Option<f64>,
    /// What the fit minimises.
    pub objective: Objective,
    /// Seed of the fit's read-noise draws.
    pub seed: u64,
    /// Compile the given widths without the fit.
    pub no_fit: bool,
    /// Build a simulation-only artifact when nothing fits.
    pub allow_simulation_only: bool,
    /// Pixel scaling of the input.
    pub preprocess: Option<Preprocess>,
    /// Failure probability of one whole inference.
    pub global_p_error: f64,
    /// Failure probability of each bootstrap instead.
    pub p_error: Option<f64>,
    /// The pass pipeline (`None`: the default one).
    pub passes: Option<String>,
    /// How activations are compiled.
    pub activations: ActivationPolicy,
    /// Degree of the polynomials of `ActivationPolicy::Poly`.
    pub poly_degree: u32,
    /// The transform key file of a model trained on transformed images (its
    /// `fhec.transform` metadata): the calibration and validation images are transformed
    /// with it. Read only; the artifact names the scheme, never the key.
    pub transform_key: Option<PathBuf>,
    /// Fold this keyed transform into the circuit of a model trained on plain images
    /// ([`fhec_compiler::fold`]; needs [`CompileOptions::transform_key`]): the artifact then
    /// takes transformed images and costs what the plain one costs.
    pub fold_transform: Option<Transform>,
}

impl Default for CompileOptions {
    /// What the command line gives without flags.
    fn default() -> CompileOptions {
        CompileOptions {
            import: ImportOptions::default(),
            input_bits: None,
            weight_bits: None,
            act_bits: None,
            max_table_bits: None,
            ranges: QuantOptions::default().ranges,
            range_margin: None,
            rounding: None,
            score_bits: None,
            calib: None,
            calib_dataset: None,
            calib_limit: 500,
            validation: None,
            classes: None,
            validation_limit: 1000,
            accuracy_budget: 0.5,
            max_server_time: None,
            objective: Objective::Time,
            seed: 0,
            no_fit: false,
            allow_simulation_only: false,
            preprocess: None,
            global_p_error: ParamOptions::default().global_p_error,
            p_error: None,
            passes: None,
            activations: ActivationPolicy::default(),
            poly_degree: 2,
            transform_key: None,
            fold_transform: None,
        }
    }
}

impl CompileOptions {
    /// Widest table read of the seed network's compilation ([`CompileOptions::seed_network`]):
    /// 6 bits keeps the seed network within 0.3 points of float with either rounding
    /// (BENCHMARKS.md, speed section).
    pub const SEED_TABLE_BITS: u32 = 6;

    /// How the bundled seed network (`seedq_mnist`) is compiled where a small, well-known
    /// model is served (the service's tests and load benchmark, the transforms benchmark):
    /// tables of at most [`CompileOptions::SEED_TABLE_BITS`] bits read with `rounding`, the
    /// model's widths without the fit, calibrated on the bundled MNIST sample.
    pub fn seed_network(rounding: Rounding) -> CompileOptions {
        CompileOptions {
            max_table_bits: Some(Self::SEED_TABLE_BITS),
            rounding: Some(rounding),
            no_fit: true,
            calib_dataset: Some(DatasetKind::Mnist),
            ..CompileOptions::default()
        }
    }

    /// The accuracy budget of `fhec demo`'s fit, points: room for approximate rounding on
    /// the demo model (which loses about 0.3 points to it on the test set).
    pub const DEMO_ACCURACY_BUDGET: f64 = 2.0;

    /// How `fhec demo` compiles its model (`examples/models/frontier/`, the fastest bundled
    /// model within 15 s per image that beats the seed network's accuracy): `fhec build`
    /// with the model's widths, `rounding`, and the fit choosing the calibrated ranges'
    /// margin within [`CompileOptions::DEMO_ACCURACY_BUDGET`], on the bundled MNIST sample.
    pub fn demo(rounding: Rounding) -> CompileOptions {
        CompileOptions {
            rounding: Some(rounding),
            accuracy_budget: Self::DEMO_ACCURACY_BUDGET,
            calib_dataset: Some(DatasetKind::Mnist),
            ..CompileOptions::default()
        }
    }

    /// The pass pipeline and its options.
    pub fn pass_options(&self) -> Result<PassOptions> {
        let pipeline = match &self.passes {
            None => PassOptions::default().pipeline,
            Some(spec) => Pipeline::parse(spec)?.names().iter().map(|s| s.to_string()).collect(),
        };
        Ok(PassOptions { pipeline, activations: self.activations, poly_degree: self.poly_degree as usize })
    }

    /// The widths: flags first, then the model's `fhec.compile.*` metadata (a model trained
    /// for given widths says so), then the defaults.
    pub fn quant_options(&self, g: &Graph) -> Result<QuantOptions> {
        Ok(self.quant_options_over(QuantOptions::for_model(g)?))
    }

    /// The flags over the widths of `m`.
    pub fn quant_options_over(&self, m: QuantOptions) -> QuantOptions {
        QuantOptions {
            input_bits: self.input_bits.unwrap_or(m.input_bits),
            weight_bits: self.weight_bits.unwrap_or(m.weight_bits),
            act_bits: self.act_bits.unwrap_or(m.act_bits),
            max_table_bits: self.max_table_bits.unwrap_or(m.max_table_bits),
            ranges: self.ranges,
            range_margin_pct: self.range_margin.unwrap_or(m.range_margin_pct),
            rounding: self.rounding.unwrap_or(m.rounding),
            output_bits: match self.score_bits {
                None => m.output_bits,
                Some(0) => None,
                Some(b) => Some(b),
            },
            ..m
        }
    }

    /// What the fit keeps: every width a flag or the model's metadata gives.
    pub fn fit_options(&self, g: &Graph) -> FitOptions {
        let meta = |k: &str| g.metadata.contains_key(&format!("fhec.compile.{k}"));
        FitOptions {
            accuracy_budget: self.accuracy_budget,
            max_server_time: self.max_server_time,
            objective: self.objective,
            seed: self.seed,
            fixed: Fixed {
                input_bits: self.input_bits.is_some() || meta("input_bits"),
                weight_bits: self.weight_bits.is_some() || meta("weight_bits"),
                act_bits: self.act_bits.is_some() || meta("act_bits"),
                table_bits: self.max_table_bits.is_some() || meta("max_table_bits"),
                rounding: self.rounding.is_some(),
                range_margin: self.range_margin.is_some(),
            },
            ..FitOptions::default()
        }
    }
}

/// The calibration and validation images of a build, and how to name them.
/// A model trained on transformed images (`fhec.transform`) gets them transformed with
/// [`CompileOptions::transform_key`] (an error without one).
pub fn build_images(model: &Path, g: &Graph, args: &CompileOptions) -> Result<(Dataset, Dataset, String)> {
    let transform =
        fhec_compiler::build::transform_of(g).with_context(|| format!("cannot compile {}", model.display()))?;
    if let Some(t) = transform {
        if args.transform_key.is_none() {
            bail!("{}", crate::transform::missing_key(&model.display().to_string(), t));
        }
        if args.fold_transform.is_some() {
            bail!(
                "cannot fold a transform into {}: {}",
                model.display(),
                fhec_compiler::fold::FoldError::AlreadyTransformed(t)
            );
        }
    }
    if let Some(t) = args.fold_transform {
        fhec_compiler::fold::foldable(t).with_context(|| format!("cannot fold {t} into {}", model.display()))?;
    }
    if let (Some(t), None) = (args.fold_transform, &args.transform_key) {
        bail!(
            "--fold-transform {t} needs the key file whose transform the clients apply: --transform-key FILE (`fhec transform-key -o FILE` makes one)"
        );
    }
    let (rows, cols) = match transform {
        Some(t) => t.image_size(&g.node(g.inputs()[0]).shape)?,
        None => image_size(g),
    };
    let kind = dataset_of(model, g, args.calib_dataset)?;
    let (mut calib, name) = match (&args.calib, kind) {
        (Some(path), _) => (
            fhec_runtime::dataset::load_images(path, rows, cols, kind.unwrap_or(DatasetKind::Mnist))?,
            path.display().to_string(),
        ),
        (None, Some(kind)) => {
            if (rows, cols) != (28, 28) {
                bail!(
                    "{} takes {rows}x{cols} images and the bundled {} sample is 28x28: pass --calib with images of the model's size (an IDX file or directory, a folder of PNG / PGM images, or a .npy array)",
                    model.display(),
                    kind.dir_name()
                );
            }
            (bundled_train_sample(kind), format!("bundled {} training sample", kind.dir_name()))
        }
        (None, None) => bail!(
            "{} does not say which images it classifies (no fhec.dataset metadata): pass --calib-dataset mnist|fashion-mnist to calibrate on a bundled sample, or --calib DATA with images of its input size ({rows}x{cols}; an IDX file or directory, a folder of PNG / PGM images, or a .npy array)",
            model.display()
        ),
    };
    let mut validation = match &args.validation {
        Some(path) => fhec_runtime::dataset::load_images(path, rows, cols, kind.unwrap_or(DatasetKind::Mnist))?,
        None => calib.split_off(args.calib_limit),
    };
    if let Some(classes) = classes_of(model, args)? {
        calib.keep_classes(&classes);
        validation.keep_classes(&classes);
    }
    calib.truncate(args.calib_limit);
    validation.truncate(args.validation_limit);
    let key = args.transform_key.as_deref();
    let calib = crate::transform::for_model(model, transform, key, calib)?;
    let validation = crate::transform::for_model(model, transform, key, validation)?;
    image_input_shape(g, &calib)?;
    Ok((calib, validation, name))
}

/// The classes of a model's outputs: the flag, else its manifest entry.
pub fn classes_of(model: &Path, args: &CompileOptions) -> Result<Option<Vec<u8>>> {
    if let Some(c) = &args.classes {
        return Ok(Some(c.clone()));
    }
    Ok(manifest_entry(model)?.and_then(|m| m.classes))
}

/// The message for a client part given where a model or a full artifact is needed.
pub fn not_a_model(path: &Path) -> String {
    format!(
        "{} is a client part (parameters and encodings for clients, no circuit); give the ONNX model or the full artifact",
        path.display()
    )
}

/// Imports, optimises, calibrates and quantizes a model: `fhec build` without the files.
///
/// ```
/// use fhec_driver::{CompileOptions, compile_model};
///
/// let model = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/models/fhe_mnist.onnx"));
/// // The widths the model's metadata names, calibrated on the bundled MNIST sample.
/// let options = CompileOptions { no_fit: true, calib_limit: 20, ..CompileOptions::default() };
/// let (graph, artifact) = compile_model(model, &options).unwrap();
/// assert_eq!(graph.node(graph.inputs()[0]).shape, [1, 1, 28, 28]);
/// assert!(artifact.fhe.is_some());
/// ```
pub fn compile_model(model: &Path, args: &CompileOptions) -> Result<(Graph, Artifact)> {
    let c = compile_model_with(model, args, &mut |_, _, _| {}, false)?;
    Ok((c.graph, c.artifact))
}

/// A compiled model: the imported graph, the artifact, the artifact of the same widths
/// without passes (when asked for), and the fit's report (when the fit chose the widths).
pub struct Compiled {
    /// The imported graph.
    pub graph: Graph,
    /// The artifact.
    pub artifact: Artifact,
    /// The same widths without passes.
    pub before_passes: Option<Artifact>,
    /// The fit's report.
    pub fit: Option<FitReport>,
}

/// [`compile_model`], showing the graph after each pass to `after`, and with `compare`,
/// also compiling the same widths without passes for the report. Unless `--no-fit`, the
/// automatic fit chooses the widths.
pub fn compile_model_with(
    model: &Path,
    args: &CompileOptions,
    after: &mut dyn FnMut(&str, &Graph, &[String]),
    compare: bool,
) -> Result<Compiled> {
    let bytes = read(model)?;
    if Artifact::sniff(&bytes) {
        bail!("{} is already a compiled artifact", model.display());
    }
    if ClientSpec::sniff(&bytes) {
        bail!("{}", not_a_model(model));
    }
    let g = import(model, &bytes, &args.import.clone())?;
    let pre = preprocess_of(model, &g, args.preprocess)?;
    let (calib, validation, calib_name) = build_images(model, &g, args)?;
    let images: Vec<&[u8]> = (0..calib.len()).map(|i| calib.pixels(i)).collect();
    let mut o = BuildOptions {
        import: args.import.clone(),
        quant: Some(args.quant_options(&g)?),
        preprocess: Some(pre),
        params: ParamOptions { global_p_error: args.global_p_error, p_error: args.p_error },
        calibration_name: calib_name,
        passes: args.pass_options()?,
    };
    let source = model.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let mut fit = None;
    let art = if args.no_fit {
        build_graph_with(&g, &source, &images, &o, after)
            .with_context(|| format!("cannot compile {}", model.display()))?
    } else {
        if validation.is_empty() {
            bail!(
                "no validation images for the fit: {} has only {} images (give more, or --validation DATA, or --no-fit)",
                o.calibration_name,
                calib.len()
            );
        }
        let val: Vec<&[u8]> = (0..validation.len()).map(|i| validation.pixels(i)).collect();
        let data = FitData {
            calibration: &images,
            validation: &val,
            labels: validation.has_labels().then_some(&validation.labels[..]),
        };
        let fo = args.fit_options(&g);
        let progress = indicatif::ProgressBar::new_spinner().with_message("fitting widths to the accuracy budget");
        progress.enable_steady_tick(std::time::Duration::from_millis(200));
        let fitted = build_fitted(&g, &source, &data, &o, &fo, after);
        progress.finish_and_clear();
        match fitted {
            Ok((art, report, quant)) => {
                o.quant = Some(quant);
                fit = Some(report);
                art
            }
            Err(fhec_compiler::BuildError::Fit(e @ FitError::Infeasible { .. })) if args.allow_simulation_only => {
                eprintln!("note: {e}; building the default widths for simulation only");
                build_graph_with(&g, &source, &images, &o, after)
                    .with_context(|| format!("cannot compile {}", model.display()))?
            }
            Err(fhec_compiler::BuildError::Fit(e)) => {
                if let Some(r) = e.report() {
                    eprint!("{}", r.to_text());
                }
                return Err(anyhow::Error::new(e).context(format!("cannot fit {}", model.display())));
            }
            Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot compile {}", model.display()))),
        }
    };
    let before = if compare && !o.passes.pipeline.is_empty() {
        let o = BuildOptions { passes: PassOptions::none(), ..o };
        Some(
            build_graph_with(&g, &source, &images, &o, &mut |_, _, _| {})
                .with_context(|| format!("cannot compile {} without passes", model.display()))?,
        )
    } else {
        None
    };
    let mut art = art;
    if let Some(t) = args.fold_transform {
        let key = crate::transform::key_for(model, t, args.transform_key.as_deref())?;
        art = crate::transform::fold(&art, t, &key, &o.params)
            .with_context(|| format!("cannot fold {t} into {}", model.display()))?;
    }
    if let Some(c) = classes_of(model, args)? {
        let c: Vec<String> = c.iter().map(|v| v.to_string()).collect();
        art.options.insert("classes".into(), c.join(","));
    }
    Ok(Compiled { graph: g, artifact: art, before_passes: before, fit })
}

/// One line comparing the circuit before and after the passes.
pub fn pass_comparison(before: &Artifact, after: &Artifact) -> String {
    let side = |a: &Artifact| {
        let r = build_report(&a.circuit, &a.options, a.fhe.as_ref());
        let mut widths: Vec<String> = r.tables_by_width.iter().map(|(w, n)| format!("{n} x {w}-bit")).collect();
        if widths.is_empty() {
            widths.push("no tables".into());
        }
        let est = match &r.fhe {
            Some(f) => format!("est. {:.0} s one core", f.est_latency_ms_one_core / 1000.0),
            None => "no 128-bit parameters".into(),
        };
        format!("{} bootstraps ({}; {} rounding), {est}", r.total_bootstraps, widths.join(", "), r.rounding_bootstraps)
    };
    format!("passes: before {} -> after {}", side(before), side(after))
}
