//! Command-line arguments shared by several commands, and their parsers: every numeric flag
//! is checked here, with a message that gives the valid range.

use std::path::PathBuf;

use anyhow::{Result, bail};

use clap::ValueEnum;
use fhec_compiler::ImportOptions;
use fhec_compiler::fit::Objective;
use fhec_compiler::passes::ActivationPolicy;
use fhec_compiler::quantize::{QuantOptions, RangeMode, Rounding};
use fhec_driver::CompileOptions;
use fhec_ir::{Preprocess, Transform};
use fhec_runtime::dataset::{Dataset, DatasetKind, bundled_sample};

/// Where an image to encrypt comes from: a file, or one image of a test set
/// (`fhec encrypt`, `fhec remote classify`).
#[derive(clap::Args)]
pub struct ImageSource {
    /// A grayscale PNG or binary PGM image of the model's input size.
    #[arg(long, conflicts_with = "dataset")]
    pub image: Option<PathBuf>,
    /// Or a test set to take the image from.
    #[arg(long, value_parser = parse_dataset)]
    pub dataset: Option<DatasetKind>,
    /// IDX directory (default: the bundled sample).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Index of the image in the set.
    #[arg(long, default_value_t = 0)]
    pub index: usize,
}

impl ImageSource {
    /// The image's pixels for a model input of `shape`, and what it is (for messages).
    pub fn load(&self, shape: &[usize]) -> Result<(Vec<u8>, String)> {
        Ok(match (&self.image, self.dataset) {
            (Some(path), _) => {
                let (rows, cols) = (shape[shape.len().saturating_sub(2)], shape[shape.len() - 1]);
                let px = fhec_runtime::dataset::load_image(path, rows, cols)?;
                (px, path.display().to_string())
            }
            (None, Some(kind)) => {
                let ds = match &self.data {
                    Some(d) => Dataset::load_test(d, kind)?,
                    None => bundled_sample(kind),
                };
                let index = self.index;
                if index >= ds.len() {
                    bail!("image index {index} is out of range: the set has {} images", ds.len());
                }
                (ds.pixels(index).to_vec(), format!("{} image {index} (label {})", kind.dir_name(), ds.labels[index]))
            }
            (None, None) => bail!("give an image file (--image) or a dataset (--dataset, with --index)"),
        })
    }
}

#[derive(clap::Args, Clone)]
pub struct ImportArgs {
    /// Override the model's input shape, e.g. `1,1,28,28` (for symbolic image sizes).
    #[arg(long, value_delimiter = ',')]
    pub input_shape: Option<Vec<usize>>,
    /// The output holding the class scores, for a model with several outputs.
    #[arg(long)]
    pub output: Option<String>,
}

impl ImportArgs {
    /// The import options these flags give.
    pub fn options(&self) -> ImportOptions {
        ImportOptions { input_shape: self.input_shape.clone(), output: self.output.clone(), ..ImportOptions::default() }
    }
}

/// Options of the compilation of an ONNX model into a circuit.
#[derive(clap::Args, Clone)]
pub struct CompileArgs {
    #[command(flatten)]
    pub import: ImportArgs,
    /// Bits of the encrypted input values (8 keeps 8-bit pixels exact). By default the
    /// automatic fit chooses every width (per layer) that neither a flag nor the model's
    /// `fhec.compile.*` metadata names; a width given either way is kept. (With --no-fit:
    /// the metadata, else 8 / 7 / 7 / 11 for these four widths.)
    #[arg(long)]
    pub input_bits: Option<u32>,
    /// Bits of the weights (signed, per output channel), for every layer.
    #[arg(long)]
    pub weight_bits: Option<u32>,
    /// Bits of the activations (table outputs), for every table.
    #[arg(long)]
    pub act_bits: Option<u32>,
    /// Widest table read; wider accumulators are rounded first.
    #[arg(long)]
    pub max_table_bits: Option<u32>,
    /// What bounds the values a table reads: `calibrated` (what the calibration images
    /// produce, plus --range-margin; images outside are reported by the simulator) or
    /// `exact` (the worst case over all images; much coarser tables).
    #[arg(long, default_value_t = QuantOptions::default().ranges)]
    pub ranges: RangeMode,
    /// Margin around calibrated ranges, in percent of their span (default 10; the fit may
    /// choose another).
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub range_margin: Option<u32>,
    /// How accumulators wider than --max-table-bits are rounded before their table: `exact`
    /// (rounding bootstraps; encrypted equals simulated bit for bit) or `approximate` (the
    /// table reads the top bits directly, no rounding bootstraps; a read near a step
    /// boundary may be one step off, which `--mode simulate` samples). Default: the fit's
    /// choice (with --no-fit: exact).
    #[arg(long)]
    pub rounding: Option<Rounding>,
    /// Bits of the scores the client decrypts: their top N (4 to 62; default 12), the lower
    /// ones carrying the noise of the last layer, so a decrypted score may differ from the
    /// simulated one by a few units (`--mode simulate` samples it), which frees the
    /// parameters from what every last bit of a wide score demands; or `all`, every bit,
    /// exactly.
    #[arg(long, value_name = "N|all", value_parser = parse_score_bits)]
    pub score_bits: Option<u32>,
    /// Calibration (and validation) images of the model's input size: an IDX images file or
    /// a directory with an IDX set, a folder of PNG / PGM images, or a NumPy `.npy` array.
    /// The first --calib-limit images calibrate, the next --validation-limit validate the
    /// fit. Default: the bundled training sample of the model's dataset (--calib-dataset).
    #[arg(long)]
    pub calib: Option<PathBuf>,
    /// Which bundled sample calibrates a model without --calib (1,500 training images:
    /// 500 calibrate, 1,000 validate). Default: the model's `fhec.dataset` metadata or its
    /// entry in a `manifest.json` beside it; a model that says neither needs this flag or
    /// --calib.
    #[arg(long, value_parser = parse_dataset)]
    pub calib_dataset: Option<DatasetKind>,
    /// Use at most this many calibration images.
    #[arg(long, default_value_t = 500, value_parser = at_least_one)]
    pub calib_limit: usize,
    /// Validation images for the fit (same forms as --calib). Default: the images of
    /// --calib (or of the bundled sample) after the calibration ones.
    #[arg(long)]
    pub validation: Option<PathBuf>,
    /// The label of each output index, for a model trained on some classes only (say
    /// `0,1` for a digit-0-or-1 classifier): calibration, validation and accuracy keep the
    /// images of those classes. Default: the model's entry in a `manifest.json` beside it.
    #[arg(long, value_delimiter = ',')]
    pub classes: Option<Vec<u8>>,
    /// Use at most this many validation images.
    #[arg(long, default_value_t = 1000, value_parser = at_least_one)]
    pub validation_limit: usize,
    /// Largest loss of top-1 validation accuracy against the float model that the fit
    /// accepts, in points.
    #[arg(long, default_value_t = 0.5, allow_negative_numbers = true, value_parser = non_negative)]
    pub accuracy_budget: f64,
    /// Largest estimated server time per image (seconds on one core) that the fit accepts.
    #[arg(long, allow_negative_numbers = true, value_parser = positive)]
    pub max_server_time: Option<f64>,
    /// What the fit minimises: `time` (within the accuracy budget) or `accuracy` (within
    /// --max-server-time).
    #[arg(long, default_value_t = Objective::Time)]
    pub objective: Objective,
    /// Seed of the fit's read-noise draws (the search is deterministic for a seed).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Compile exactly the given widths (else the model's metadata, else the defaults),
    /// without the automatic fit.
    #[arg(long)]
    pub no_fit: bool,
    /// When no width choice gets 128-bit parameters, build a simulation-only artifact
    /// (the default widths, no keys can be made for it) instead of failing.
    #[arg(long)]
    pub allow_simulation_only: bool,
    /// Pixel scaling of the model's input (default: its `fhec.preprocess` metadata, else its
    /// entry in a `manifest.json` beside the model file, else unit).
    #[arg(long)]
    pub preprocess: Option<Preprocess>,
    /// Failure probability allowed for one whole inference (all bootstraps together).
    #[arg(long, default_value = "2^-40", allow_negative_numbers = true, value_parser = probability)]
    pub global_p_error: f64,
    /// Failure probability of each bootstrap instead (overrides --global-p-error).
    #[arg(long, allow_negative_numbers = true, value_parser = probability)]
    pub p_error: Option<f64>,
    /// Optimisation passes run before quantization, in order, comma-separated (`none`: the
    /// graph as imported). Passes: declutter (every rule group in one e-graph),
    /// canonical-activations, fuse-requant, fold-affine, merge-linear, sum-pooling, max-pool-order,
    /// argmax-tail, activations. Default: activations,declutter.
    #[arg(long)]
    pub passes: Option<String>,
    /// Activations: `table` (exact tables), `poly` (least-squares polynomials of
    /// --poly-degree on each activation's calibrated range), `auto` (the cost model's
    /// choice: an activation that is linear on its range becomes free, others stay tables).
    #[arg(long, default_value_t = ActivationPolicy::default())]
    pub activations: ActivationPolicy,
    /// Degree of the polynomials of `--activations poly`.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=8))]
    pub poly_degree: u32,
    /// The transform key file of a model trained on transformed images (one whose
    /// `fhec.transform` metadata names a keyed transform such as etc:4): calibration,
    /// validation and test images are transformed with it. Only read: the artifact and its
    /// client part name the scheme, never the key.
    #[arg(long)]
    pub transform_key: Option<PathBuf>,
    /// Fold a keyed transform (etc:B or skk) into a model trained on plain images: the
    /// circuit first undoes it (no bootstrap, same cost), so clients send images transformed
    /// with the --transform-key file. The artifact then holds the transform's map (whoever
    /// has it can undo the transform), not the key.
    #[arg(long, value_name = "SCHEME")]
    pub fold_transform: Option<Transform>,
}

impl CompileArgs {
    /// The compile options these flags give.
    pub fn options(&self) -> CompileOptions {
        CompileOptions {
            import: self.import.options(),
            input_bits: self.input_bits,
            weight_bits: self.weight_bits,
            act_bits: self.act_bits,
            max_table_bits: self.max_table_bits,
            ranges: self.ranges,
            range_margin: self.range_margin,
            rounding: self.rounding,
            score_bits: self.score_bits,
            calib: self.calib.clone(),
            transform_key: self.transform_key.clone(),
            fold_transform: self.fold_transform,
            calib_dataset: self.calib_dataset,
            calib_limit: self.calib_limit,
            validation: self.validation.clone(),
            classes: self.classes.clone(),
            validation_limit: self.validation_limit,
            accuracy_budget: self.accuracy_budget,
            max_server_time: self.max_server_time,
            objective: self.objective,
            seed: self.seed,
            no_fit: self.no_fit,
            allow_simulation_only: self.allow_simulation_only,
            preprocess: self.preprocess,
            global_p_error: self.global_p_error,
            p_error: self.p_error,
            passes: self.passes.clone(),
            activations: self.activations,
            poly_degree: self.poly_degree,
        }
    }
}

/// How `fhec eval` executes a model.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// The float interpreter of the NN IR.
    Float,
    /// The exact integer simulation of the compiled circuit.
    Simulate,
    #[cfg(feature = "fhe")]
    /// Encrypted execution (keys generated for the run; compared with simulation).
    Fhe,
}

/// A count of at least one.
pub fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// A dataset name.
pub fn parse_dataset(s: &str) -> Result<DatasetKind, String> {
    s.parse().map_err(|e: fhec_runtime::dataset::UnknownDataset| e.to_string())
}

/// A probability in (0, 1), written as a number (`1e-12`) or as a power of two (`2^-40`).
/// A value that looks like a log2 exponent (`40`, `-40`) gets a hint.
pub fn probability(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let p = match t.strip_prefix("2^") {
        Some(e) => e.parse::<f64>().map(f64::exp2).map_err(|_| format!("'{s}' is not a power of two like 2^-40"))?,
        None => t.parse::<f64>().map_err(|_| format!("'{s}' is not a number"))?,
    };
    if p > 0.0 && p < 1.0 {
        return Ok(p);
    }
    let hint = if p.is_finite() && p.abs() >= 1.0 && p.fract() == 0.0 {
        format!(" ({s} looks like a log2 exponent: write 2^-{} for {:e})", p.abs(), (-p.abs()).exp2())
    } else {
        String::new()
    };
    Err(format!("a probability must be in (0, 1), got {s}{hint}"))
}

/// A non-negative finite number (points of accuracy).
pub fn non_negative(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        Ok(_) => Err(format!("must be a finite number >= 0, got {s}")),
        Err(e) => Err(e.to_string()),
    }
}

/// A positive finite number (seconds).
pub fn positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        Ok(_) => Err(format!("must be a finite number > 0, got {s}")),
        Err(e) => Err(e.to_string()),
    }
}

/// `--score-bits`: `all` (every bit, 0 inside) or a width of 4 to 62 bits.
fn parse_score_bits(s: &str) -> Result<u32, String> {
    if s.eq_ignore_ascii_case("all") {
        return Ok(0);
    }
    match s.parse::<u32>() {
        Ok(b) if (4..=62).contains(&b) => Ok(b),
        _ => Err(format!("'{s}' is neither `all` nor a number of bits from 4 to 62")),
    }
}
