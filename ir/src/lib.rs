//! fhec's intermediate representations.
//!
//! * [`nn`]: the NN IR, a petgraph DAG of float tensor ops with static shapes, as the
//!   ONNX frontend produces it and as the float passes rewrite it. It has a verifier
//!   ([`nn::verify`]), a stable textual printer ([`nn::print`]) and a float interpreter
//!   ([`nn::interp`]).
//!
//! * [`circuit`]: the circuit IR, integer-only ops as a TFHE server evaluates them, with
//!   exact ranges and noise 2-norms, its verifier and printer, and integer kernels.
//!
//! * [`sim`]: the exact integer simulator of a circuit (its semantics, what encrypted
//!   evaluation must equal); [`wire`]: byte sizes of the client/server transport forms.
//!
//! * [`artifact`]: the compiled model (circuit, weights, parameters), the server's file;
//!   [`client`]: its client part (parameters, input encoding, output decoding, no weights),
//!   the file a client needs.
//!
//! * [`transform`]: keyed pixel transforms of images ("learnable image encryption": EtC,
//!   SKK, Tanaka), a client-side step before encryption; not encryption themselves.
//!
//! Architecture Invariant: this crate knows neither ONNX nor tfhe-rs. Ops are Rust enums,
//! never strings; every value has a static shape.
#![warn(missing_docs)]

pub mod artifact;
pub mod circuit;
pub mod client;
pub mod cost;
pub mod framing;
pub mod nn;
pub mod params;
pub mod sim;
pub mod transform;
pub mod wire;

pub use nn::{Graph, Node, Op, Shape};
pub mod preprocess;
pub use preprocess::Preprocess;
pub use transform::Transform;
