//! From ONNX bytes to an artifact in one call: what `fhec build` does, for programs.
//!
//! Import, optimise (the pass pipeline), calibrate on the given images, quantize to a
//! circuit, choose TFHE parameters.
//! No file I/O: the caller supplies the model bytes and the calibration pixels.

use std::collections::BTreeMap;

use fhec_ir::artifact::Artifact;
use fhec_ir::{Graph, Preprocess};

use crate::fit::{FitData, FitOptions, FitReport};
use crate::params::{ParamOptions, select_rounding};
use crate::passes::egraph::{CostParams, Limits};
use crate::passes::{ActivationPolicy, DEFAULT_PIPELINE, PassContext, PassError, Pipeline};
use crate::quantize::{QuantError, QuantOptions, RangeMode, calibration_inputs, compile_circuit};
use crate::{ImportError, ImportOptions, import_onnx};

/// Options of a build.
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    /// Import options.
    pub import: ImportOptions,
    /// Bit widths and ranges (default: [`QuantOptions::for_model`]).
    pub quant: Option<QuantOptions>,
    /// Pixel scaling (default: the model's `fhec.preprocess` metadata, else unit).
    pub preprocess: Option<Preprocess>,
    /// Failure-probability target of the parameter search.
    pub params: ParamOptions,
    /// How the calibration set is described in the artifact's options.
    pub calibration_name: String,
    /// The optimisation passes.
    pub passes: PassOptions,
}

/// Which passes run before quantization, and their options.
#[derive(Clone, Debug)]
pub struct PassOptions {
    /// Pass names in order (empty: none).
    pub pipeline: Vec<String>,
    /// Policy of the `activations` pass.
    pub activations: ActivationPolicy,
    /// Degree of fitted polynomials.
    pub poly_degree: usize,
}

impl Default for PassOptions {
    fn default() -> Self {
        PassOptions {
            pipeline: DEFAULT_PIPELINE.iter().map(|s| s.to_string()).collect(),
            activations: ActivationPolicy::default(),
            poly_degree: 2,
        }
    }
}

impl PassOptions {
    /// No pass at all (the graph as imported).
    pub fn none() -> Self {
        PassOptions { pipeline: vec![], ..PassOptions::default() }
    }
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The model does not import.
    #[error(transparent)]
    Import(#[from] ImportError),
    /// The model does not quantize.
    #[error(transparent)]
    Quant(#[from] QuantError),
    /// A pass failed.
    #[error(transparent)]
    Pass(#[from] PassError),
    /// The automatic fit found nothing (see [`crate::fit::FitError`]).
    #[error(transparent)]
    Fit(#[from] crate::fit::FitError),
    /// The model's `fhec.transform` names no transform, or one its input does not take.
    #[error(transparent)]
    Transform(#[from] fhec_ir::transform::MetadataError),
    /// A keyed transform cannot be folded into the model ([`crate::fold`]).
    #[error(transparent)]
    Fold(#[from] crate::fold::FoldError),
    /// A metadata entry is malformed.
    #[error("model metadata {key}: {message}")]
    Metadata {
        /// The metadata key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// The keyed image transform a model was trained for (its `fhec.transform` metadata),
/// checked against its input shape: the circuit keeps the metadata, its artifact and client
/// part name the scheme (never a key), and calibration images must be transformed
/// ([`fhec_ir::Transform::model_input`]) with the key the model was trained with.
pub fn transform_of(g: &Graph) -> Result<Option<fhec_ir::Transform>, BuildError> {
    Ok(fhec_ir::Transform::of_metadata(&g.metadata, &g.node(g.inputs()[0]).shape)?)
}

/// The model's pixel scaling: `flag`, else its metadata, else unit.
pub fn preprocess_of(g: &Graph, flag: Option<Preprocess>) -> Result<Preprocess, BuildError> {
    if let Some(p) = flag {
        return Ok(p);
    }
    match g.metadata.get(Preprocess::METADATA_KEY) {
        None => Ok(Preprocess::Unit),
        Some(v) => v.parse().map_err(|e: fhec_ir::preprocess::UnknownPreprocess| BuildError::Metadata {
            key: Preprocess::METADATA_KEY.into(),
            message: e.to_string(),
        }),
    }
}

/// Compiles an imported graph: calibration on `calibration` (8-bit pixels of the model's
/// input size), quantization, parameter selection. A circuit without 128-bit parameters
/// still builds (the artifact says why in its `fhe` option) so that it can be simulated.
pub fn build_graph(g: &Graph, source: &str, calibration: &[&[u8]], o: &BuildOptions) -> Result<Artifact, BuildError> {
    build_graph_with(g, source, calibration, o, &mut |_, _, _| {})
}

/// The quantization options of a build: the given ones, else the model's defaults.
pub fn quant_options_of(g: &Graph, o: &BuildOptions) -> Result<QuantOptions, BuildError> {
    Ok(match &o.quant {
        Some(q) => q.clone(),
        None => QuantOptions::for_model(g)?,
    })
}

/// Runs the pass pipeline of `o` on `g`; `after` sees the graph after each pass.
pub fn optimize(
    g: &Graph,
    calibration: &[&[u8]],
    o: &BuildOptions,
    after: &mut dyn FnMut(&str, &Graph, &[String]),
) -> Result<Graph, BuildError> {
    if o.passes.pipeline.is_empty() {
        return Ok(g.clone());
    }
    let pre = preprocess_of(g, o.preprocess)?;
    let q = quant_options_of(g, o)?;
    let (a, b) = (pre.apply(0) as f64, pre.apply(255) as f64);
    let cx = PassContext {
        calibration: calibration_inputs(g, pre, calibration)?,
        cost: CostParams {
            input_bits: q.input_bits as f64,
            weight_bits: q.weight_bits as f64,
            act_bits: q.act_bits as f64,
            max_table_bits: q.max_table_bits as f64,
            input_range: (a.min(b), a.max(b)),
            approximate: q.rounding == crate::quantize::Rounding::Approximate,
        },
        activations: o.passes.activations,
        poly_degree: o.passes.poly_degree,
        limits: Limits::default(),
    };
    Ok(Pipeline::new(&o.passes.pipeline)?.run(g, &cx, after)?)
}

/// [`build_graph`], showing the graph after each pass to `after`.
pub fn build_graph_with(
    g: &Graph,
    source: &str,
    calibration: &[&[u8]],
    o: &BuildOptions,
    after: &mut dyn FnMut(&str, &Graph, &[String]),
) -> Result<Artifact, BuildError> {
    transform_of(g)?;
    let pre = preprocess_of(g, o.preprocess)?;
    let opts = quant_options_of(g, o)?;
    let optimized = optimize(g, calibration, o, after)?;
    let circuit = compile_circuit(&optimized, pre, calibration, &opts)?;
    let mut options = artifact_options(&opts, pre, o, calibration.len());
    let mut circuit = circuit;
    let fhe = match select_rounding(&mut circuit, &o.params) {
        Ok(s) => Some(s),
        Err(e) => {
            options.insert("fhe".into(), format!("unavailable: {e}"));
            None
        }
    };
    Ok(Artifact { fhec_version: env!("CARGO_PKG_VERSION").into(), source: source.into(), options, circuit, fhe })
}

/// The build options as the artifact records them (`name -> value`, for reports).
fn artifact_options(
    opts: &QuantOptions,
    pre: Preprocess,
    o: &BuildOptions,
    calibration: usize,
) -> BTreeMap<String, String> {
    let mut options = BTreeMap::new();
    options.insert("input_bits".into(), opts.input_bits.to_string());
    options.insert("weight_bits".into(), opts.weight_bits.to_string());
    options.insert("act_bits".into(), opts.act_bits.to_string());
    options.insert("max_table_bits".into(), opts.max_table_bits.to_string());
    options.insert(
        "ranges".into(),
        match opts.ranges {
            RangeMode::Exact => "exact".into(),
            RangeMode::Calibrated => format!("calibrated (+{}%)", opts.range_margin_pct),
        },
    );
    options.insert("rounding".into(), opts.rounding.to_string());
    if let Some(b) = opts.output_bits {
        options.insert("output_bits".into(), b.to_string());
    }
    options.insert("preprocess".into(), pre.to_string());
    options.insert(
        "passes".into(),
        if o.passes.pipeline.is_empty() { "none".into() } else { o.passes.pipeline.join(",") },
    );
    if o.passes.pipeline.iter().any(|p| p == "activations") {
        options.insert(
            "activations".into(),
            match o.passes.activations {
                ActivationPolicy::Poly => format!("poly (degree {})", o.passes.poly_degree),
                p => p.to_string(),
            },
        );
    }
    options.insert("calibration".into(), format!("{} ({calibration} images)", o.calibration_name));
    options
}

/// Builds with the widths chosen by the automatic fit ([`crate::fit`]): import options,
/// passes and parameters from `o`; the widths `o` gives (or the model's metadata names) are
/// the fit's base, and those in `fit.fixed` stay as given. Calibrates on
/// `data.calibration` and validates on `data.validation`.
pub fn build_fitted(
    g: &Graph,
    source: &str,
    data: &FitData,
    o: &BuildOptions,
    fit: &FitOptions,
    after: &mut dyn FnMut(&str, &Graph, &[String]),
) -> Result<(Artifact, FitReport, QuantOptions), BuildError> {
    transform_of(g)?;
    let pre = preprocess_of(g, o.preprocess)?;
    let base = quant_options_of(g, o)?;
    // The passes choose the graph's form with the cost model of what the fit will most
    // likely choose: approximate rounding and 6-bit tables, unless those are given.
    let mut typical = base.clone();
    if !fit.fixed.rounding {
        typical.rounding = crate::quantize::Rounding::Approximate;
    }
    if !fit.fixed.table_bits {
        typical.max_table_bits = 6;
    }
    let optimized = optimize(g, data.calibration, &BuildOptions { quant: Some(typical), ..o.clone() }, after)?;
    let fitted = crate::fit::fit(&optimized, g, pre, data, &base, &o.params, fit)?;
    let mut options = artifact_options(&fitted.quant, pre, o, data.calibration.len());
    for (layer, widths) in crate::fit::layer_widths(&fitted.quant, &fitted.circuit) {
        options.insert(format!("layer {layer}"), widths);
    }
    let r = &fitted.report;
    options.insert(
        "fit".into(),
        format!(
            "{} candidates; validation {:.2}% against float {:.2}% on {} images ({}), budget {} points; {} images outside the calibrated ranges",
            r.candidates.len(),
            r.chosen.and_then(|i| r.candidates[i].accuracy).unwrap_or(f64::NAN),
            r.float_accuracy,
            r.validation_images,
            if r.labelled { "labelled" } else { "agreement" },
            fit.accuracy_budget,
            r.chosen.and_then(|i| r.candidates[i].outside).map_or("?".into(), |k| k.to_string()),
        ),
    );
    let artifact = Artifact {
        fhec_version: env!("CARGO_PKG_VERSION").into(),
        source: source.into(),
        options,
        circuit: fitted.circuit,
        fhe: Some(fitted.setup),
    };
    Ok((artifact, fitted.report, fitted.quant))
}

/// [`build_graph`] from ONNX bytes.
///
/// ```
/// use fhec_compiler::{BuildOptions, build};
///
/// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/models");
/// let model = std::fs::read(format!("{dir}/fhe_mnist.onnx")).unwrap();
/// // Calibration images: 8-bit grayscale pixels of the model's input size.
/// let images: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i * 60; 28 * 28]).collect();
/// let calibration: Vec<&[u8]> = images.iter().map(|v| v.as_slice()).collect();
/// let artifact = build(&model, "fhe_mnist.onnx", &calibration, &BuildOptions::default()).unwrap();
/// assert!(artifact.circuit.bootstrap_stats().total() > 0);
/// assert!(artifact.fhe.is_some(), "128-bit parameters meeting the failure target exist");
/// let bytes = artifact.to_bytes();
/// assert_eq!(fhec_ir::artifact::Artifact::from_bytes(&bytes).unwrap(), artifact);
/// ```
pub fn build(model: &[u8], source: &str, calibration: &[&[u8]], o: &BuildOptions) -> Result<Artifact, BuildError> {
    let g = import_onnx(model, &o.import)?;
    build_graph(&g, source, calibration, o)
}
