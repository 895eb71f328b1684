//! fhec runtime: what a client or server application links.
//!
//! Today it holds the client's data path: reading image sets ([`dataset`]) and turning
//! pixels into model inputs ([`fhec_ir::Preprocess`]). The integer simulator and the
//! encrypted execution on tfhe-rs join it in later steps.
//!
//! Architecture Invariant: only this crate will link tfhe-rs; it never depends on the
//! compiler or on ONNX.
#![warn(missing_docs)]

pub mod dataset;
pub mod sim;
