//! The fhec compiler: the ONNX frontend, the passes over the NN IR, the quantizer to the
//! circuit IR, its analyses, the parameter search and the fit. [`build`] is the one-call
//! entry point; the `fhec` binary (crate `fhec`, through `fhec-driver`) is its front end.
//!
//! Architecture Invariant: only [`frontend`] knows ONNX op-type strings and protobufs;
//! the library does no file or network I/O (it takes bytes and returns values; the driver
//! reads and writes files), and it never links tfhe-rs (`.ci/run` checks).
#![warn(missing_docs)]

pub mod analysis;
pub mod build;
pub mod fit;
pub mod fold;
pub mod frontend;
pub mod manifest;
pub mod params;
pub mod passes;
pub mod quantize;
pub mod report;
pub mod summary;

pub use build::{BuildError, BuildOptions, build};
pub use frontend::{ImportError, ImportOptions, import_onnx};
