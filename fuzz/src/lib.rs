//! fhec's fuzzing campaigns, on the stable toolchain.
//!
//! Every parser of untrusted input is a [`targets::Target`] (the table is
//! [`targets::TARGETS`]): the ONNX importer, artifacts, keys, ciphertexts, the app API's
//! client and server, and the image and dataset readers. The [`engine`] runs time-bounded,
//! seeded, reproducible campaigns that mutate a seed corpus (byte-level havoc from
//! [`mutate`], and each target's structure-aware edits: protobuf edits of ONNX models, typed
//! edits of decoded artifacts, keys and tensors re-framed with a sound checksum
//! ([`framed`]), chunk edits of PNGs, header edits of IDX, PGM and NPY files), catches
//! panics per case, measures each case's heap peak ([`alloc`]) and saves every finding as
//! `fuzz/crashes/TARGET-HASH.bin`.
//!
//! The `fhec-fuzz` binary runs campaigns (`run`), replays files (`replay`) and writes the
//! seeds made in code to the committed corpus (`corpus`); `fuzz/tests/fuzz.rs` is the
//! bounded CI campaign and replays the corpus and every saved crash.

pub mod alloc;
pub mod corpus;
pub mod engine;
pub mod framed;
pub mod mutate;
pub mod targets;

pub use engine::{Config, Report, run_campaign};
pub use targets::{TARGETS, Target, target};
