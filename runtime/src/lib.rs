//! fhec runtime: what a client or server application links.
//!
//! Today it holds the client's data path: reading image sets ([`dataset`]) and turning
//! pixels into model inputs ([`fhec_ir::Preprocess`]). The integer simulator and the
//! encrypted execution on tfhe-rs join it in later steps.
//!
//! [`fhe`] runs circuits on ciphertexts with tfhe-rs.
//!
//! Architecture Invariant: only this crate links tfhe-rs; it never depends on the
//! compiler or on ONNX.
#![warn(missing_docs)]

pub mod dataset;
#[cfg(feature = "fhe")]
pub mod fhe;
pub mod sim;
