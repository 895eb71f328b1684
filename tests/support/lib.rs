//! Shared helpers of fhec's test suite: fixture discovery, tract as the reference
//! executor, and tolerance checks.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use fhec_compiler::{ImportOptions, import_onnx};
use fhec_ir::Graph;
use ndarray::{ArrayD, IxDyn};
use serde::Deserialize;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// `*.onnx` files in a directory under the root, sorted.
pub fn onnx_files(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "onnx"))
        .collect();
    v.sort();
    v
}

/// File stem as a string.
pub fn stem(p: &Path) -> String {
    p.file_stem().expect("file name").to_string_lossy().into_owned()
}

/// Imports an ONNX file with default options.
pub fn import(path: &Path) -> Result<Graph> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(import_onnx(&bytes, &ImportOptions::default())?)
}

/// Runs the ONNX file in tract (the reference executor) on one input.
pub fn tract_run(path: &Path, input: &ArrayD<f32>) -> Result<ArrayD<f32>> {
    use tract_onnx::prelude::*;
    let model = tract_onnx::onnx()
        .model_for_path(path)?
        .with_input_fact(0, f32::fact(input.shape()).into())?
        .into_optimized()?
        .into_runnable()?;
    let out = model.run(tvec!(Tensor::from(input.clone()).into()))?;
    Ok(out[0].to_plain_array_view::<f32>()?.to_owned())
}

/// The largest absolute difference divided by the reference's largest magnitude.
pub fn rel_err(got: &ArrayD<f32>, want: &ArrayD<f32>) -> f32 {
    assert_eq!(got.len(), want.len(), "sizes differ: {:?} vs {:?}", got.shape(), want.shape());
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    got.iter().zip(want.iter()).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale
}

/// A fixture's recorded input and onnxruntime output.
#[derive(Deserialize)]
pub struct Expected {
    /// What the fixture covers.
    pub note: String,
    /// Input shape.
    pub input_shape: Vec<usize>,
    /// Input values, row-major.
    pub input: Vec<f32>,
    /// Output shape.
    pub output_shape: Vec<usize>,
    /// onnxruntime's output, row-major.
    pub output: Vec<f32>,
}

impl Expected {
    /// Loads `NAME.json` beside `NAME.onnx`.
    pub fn for_model(onnx: &Path) -> Result<Expected> {
        let p = onnx.with_extension("json");
        Ok(serde_json::from_str(&std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?)?)
    }

    /// The input tensor.
    pub fn input(&self) -> ArrayD<f32> {
        ArrayD::from_shape_vec(IxDyn(&self.input_shape), self.input.clone()).expect("fixture input shape")
    }

    /// The expected output tensor.
    pub fn output(&self) -> ArrayD<f32> {
        ArrayD::from_shape_vec(IxDyn(&self.output_shape), self.output.clone()).expect("fixture output shape")
    }
}

/// A bundled model with its dataset and preprocessing (from `examples/models/manifest.json`).
pub struct Bundled {
    /// Path of the ONNX file.
    pub path: PathBuf,
    /// Its dataset.
    pub dataset: fhec_runtime::dataset::DatasetKind,
    /// Its preprocessing.
    pub preprocess: fhec_ir::Preprocess,
}

/// All bundled models, in manifest order.
pub fn bundled_models() -> Vec<Bundled> {
    let dir = root().join("examples/models");
    let text = std::fs::read_to_string(dir.join("manifest.json")).expect("manifest");
    fhec_compiler::manifest::Manifest::parse(&text)
        .expect("valid manifest")
        .models
        .into_iter()
        .map(|m| Bundled {
            path: dir.join(&m.file),
            dataset: m.dataset.parse().expect("dataset"),
            preprocess: m.preprocess,
        })
        .collect()
}

/// Compiles a bundled model at default options, calibrated on its bundled sample.
pub fn compile_default(b: &Bundled) -> fhec_ir::circuit::Circuit {
    let g = import(&b.path).expect("import");
    let ds = fhec_runtime::dataset::bundled_sample(b.dataset);
    let imgs: Vec<&[u8]> = (0..ds.len()).map(|i| ds.pixels(i)).collect();
    let opts = fhec_compiler::quantize::QuantOptions::for_model(&g).expect("metadata");
    fhec_compiler::quantize::compile_circuit(&g, b.preprocess, &imgs, &opts).expect("compile")
}

/// A small CNN on 8x8 images (for encrypted tests): conv 3x3 (2 channels) -> relu -> max pool 2x2 -> dense 32->3.
pub fn tiny_graph() -> fhec_ir::nn::Graph {
    tiny_graph_with_weights(0)
}

/// [`tiny_graph`] with other weights (`variant` 0 is `tiny_graph`'s): the same inputs,
/// outputs and layers.
pub fn tiny_graph_with_weights(variant: usize) -> fhec_ir::nn::Graph {
    let mut g = fhec_ir::nn::Graph::new("tiny");
    let x = g.add_input("x", vec![1, 1, 8, 8]);
    let w = ndarray::Array4::from_shape_fn((2, 1, 3, 3), |(o, _, a, b)| {
        ((o * 5 + a * 3 + b + variant) % 7) as f32 / 3.0 - 1.0
    });
    let c = g
        .add_op(
            "conv",
            fhec_ir::nn::Op::Conv(fhec_ir::nn::Conv {
                weight: w,
                bias: Some(ndarray::Array1::from(vec![0.1, -0.2])),
                strides: [1, 1],
                pads: [1, 1, 1, 1],
                dilations: [1, 1],
                groups: 1,
            }),
            &[x],
        )
        .unwrap();
    let r = g.add_op("relu", fhec_ir::nn::Op::Relu, &[c]).unwrap();
    let p = g
        .add_op(
            "pool",
            fhec_ir::nn::Op::MaxPool(fhec_ir::nn::Pool {
                kernel: [2, 2],
                strides: [2, 2],
                pads: [0; 4],
                dilations: [1, 1],
                ceil_mode: false,
            }),
            &[r],
        )
        .unwrap();
    let f = g.add_op_with_shape("flat", fhec_ir::nn::Op::Reshape, &[p], &[1, 32]).unwrap();
    let dw = ndarray::Array2::from_shape_fn((3, 32), |(o, k)| ((o * 7 + k * 3 + 2 * variant) % 11) as f32 / 5.0 - 1.0);
    let d = g
        .add_op(
            "fc",
            fhec_ir::nn::Op::Dense { weight: dw, bias: Some(ndarray::Array1::from(vec![0.0, 0.5, -0.5])) },
            &[f],
        )
        .unwrap();
    g.add_output(d);
    g
}

/// Deterministic pseudo-random 8-bit images.
pub fn images(n: usize, len: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            (0..len)
                .map(|_| {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (s >> 56) as u8
                })
                .collect()
        })
        .collect()
}

/// The tiny CNN compiled with narrow widths (4-bit input and weights, 3-bit activations,
/// 4-bit tables) and exact ranges (any image is in range), calibrated on pseudo-random images.
pub fn tiny_circuit() -> fhec_ir::circuit::Circuit {
    tiny_circuit_of(&tiny_graph())
}

/// [`tiny_circuit`]'s compilation of a graph.
pub fn tiny_circuit_of(g: &fhec_ir::nn::Graph) -> fhec_ir::circuit::Circuit {
    tiny_circuit_calibrated(g, &images(32, 64, 7))
}

/// [`tiny_circuit_of`] calibrated on the given input images.
pub fn tiny_circuit_calibrated(g: &fhec_ir::nn::Graph, calib: &[Vec<u8>]) -> fhec_ir::circuit::Circuit {
    let refs: Vec<&[u8]> = calib.iter().map(|v| v.as_slice()).collect();
    let opts = fhec_compiler::quantize::QuantOptions {
        input_bits: 4,
        weight_bits: 4,
        act_bits: 3,
        max_table_bits: 4,
        ranges: fhec_compiler::quantize::RangeMode::Exact,
        ..Default::default()
    };
    fhec_compiler::quantize::compile_circuit(g, fhec_ir::Preprocess::Unit, &refs, &opts).unwrap()
}
