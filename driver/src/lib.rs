//! fhec's session layer, between the user-facing binaries (the `fhec` CLI, the benchmark
//! harness) and the libraries (`fhec-compiler`, `fhec-runtime`): what a model file implies
//! (its manifest entry, dataset, preprocessing, classes, image size), compiling it with the
//! automatic fit and the right calibration data, measuring accuracy, encrypted evaluation
//! runs, and the one policy for writing the user's files.
//!
//! It holds the defaults a user sees, so that every front end resolves them the same way;
//! the binaries above it only parse arguments, print and dispatch.
#![warn(missing_docs)]

pub mod compile;
#[cfg(feature = "fhe")]
pub mod encrypted;
pub mod files;
pub mod measure;
pub mod model;
pub mod progress;
#[cfg(feature = "fhe")]
pub mod reliability;

pub use compile::{CompileOptions, Compiled, compile_model, compile_model_with};
