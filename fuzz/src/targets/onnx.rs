//! The ONNX importer (`fhec_compiler::import_onnx`, what `fhec build` and `fhec inspect`
//! run on a model file), and what they do with the graph it returns: verify, print,
//! summarize, read the metadata (preprocessing, widths) and run the float interpreter.
//!
//! Seeds are the committed ONNX fixtures and bundled models (read where they are, see
//! [`Onnx::seed_dirs`]); mutations are byte-level (the engine's) and structure-aware on the
//! decoded protobuf ([`super::onnx_edit`]).
//!
//! Properties beyond "no panic": every refusal is an error with a message, and an accepted
//! graph passes the IR verifier.

use std::path::PathBuf;

use fhec_compiler::{ImportOptions, import_onnx};
use fhec_ir::nn::{interp, print, verify};
use ndarray::{ArrayD, IxDyn};
use rand::RngExt;

use super::{Outcome, Target, rejected, repo_root};
use crate::mutate::Rng;

/// The ONNX importer.
pub struct Onnx;

/// Graphs whose input holds at most this many values are run by the interpreter.
const MAX_RUN_VALUES: usize = 1 << 16;

impl Target for Onnx {
    fn name(&self) -> &'static str {
        "onnx"
    }

    fn about(&self) -> &'static str {
        "compiler::import_onnx (+ verify, print, summary, metadata, float run); seeds: the ONNX fixtures and bundled models"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        vec![Vec::new(), b"not a model".to_vec()]
    }

    fn seed_dirs(&self) -> Vec<PathBuf> {
        let r = repo_root();
        [
            "tests/fixtures/onnx",
            "tests/fixtures/errors",
            "tests/fixtures/cli",
            "tests/fixtures/fit",
            "examples/models",
            "examples/models/external",
        ]
        .iter()
        .map(|d| r.join(d))
        .collect()
    }

    fn mutate(&self, input: &[u8], _: &[u8], rng: &mut Rng) -> Option<Vec<u8>> {
        // Stack a few edits now and then: one edit often only reaches one check.
        let mut b = super::onnx_edit::mutate(input, rng)?;
        while rng.random_bool(0.3) {
            match super::onnx_edit::mutate(&b, rng) {
                Some(next) => b = next,
                None => break,
            }
        }
        Some(b)
    }

    fn run(&self, input: &[u8]) -> Result<Outcome, String> {
        let g = match import_onnx(input, &ImportOptions::default()) {
            Ok(g) => g,
            Err(e) => return rejected(e),
        };
        verify::verify(&g).map_err(|e| format!("the imported graph does not verify: {e}"))?;
        let _ = print::print(&g);
        let _ = fhec_compiler::summary::summarize(&g);
        if let Err(e) = fhec_compiler::build::preprocess_of(&g, None) {
            rejected(e)?;
        }
        if let Err(e) = fhec_compiler::quantize::QuantOptions::for_model(&g) {
            rejected(e)?;
        }
        let shape = g.node(g.inputs()[0]).shape.clone();
        if shape.iter().product::<usize>() <= MAX_RUN_VALUES {
            let x = ArrayD::from_elem(IxDyn(&shape), 0.5f32);
            if let Err(e) = interp::run(&g, &[x]) {
                let m = e.to_string();
                rejected(&m)?;
                return Ok(Outcome::Accepted(format!("imported; run fails: {m}")));
            }
        }
        Ok(Outcome::Accepted(format!("imported ({} nodes)", g.len())))
    }
}
