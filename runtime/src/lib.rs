//! fhec runtime: what a client or server application links.
//!
//! * [`app`]: the application API, a `Client` and a `Server` that exchange only bytes
//!   (evaluation key, encrypted image, encrypted result).
//! * [`fhe`]: keys, ciphertexts and encrypted evaluation of circuits on tfhe-rs.
//! * [`sim`]: the exact integer simulator (what the encrypted evaluation must equal),
//!   re-exported from `fhec_ir`.
//! * [`dataset`]: reading image sets (IDX, PNG, PGM) for evaluation and calibration;
//!   [`image`]: reading and writing one PNG / PGM image of any size.
//!
//! Architecture Invariant: only this crate links tfhe-rs; it never depends on the
//! compiler or on ONNX.
#![warn(missing_docs)]

#[cfg(feature = "fhe")]
pub mod app;
pub mod dataset;
#[cfg(feature = "fhe")]
pub mod fhe;
pub mod image;
/// The exact integer simulator (it lives in the IR crate: it is the circuit's semantics).
pub use fhec_ir::sim;
pub use fhec_ir::wire::{encrypted_image_bytes, encrypted_result_bytes, evaluation_key_bytes};
