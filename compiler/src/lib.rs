//! The fhec compiler: ONNX frontend, passes over the IRs, and (in `bin/fhec.rs`) the CLI.
//!
//! Architecture Invariant: only [`frontend`] knows ONNX op-type strings and protobufs;
//! the library does no file or network I/O (it takes bytes and returns values; the CLI
//! reads and writes files).
#![warn(missing_docs)]

pub mod analysis;
pub mod build;
pub mod fit;
pub mod frontend;
pub mod manifest;
pub mod params;
pub mod passes;
pub mod quantize;
pub mod report;
pub mod summary;

pub use build::{BuildError, BuildOptions, build};
pub use frontend::{ImportError, ImportOptions, import_onnx};
