//! The fuzz targets: one per parser of untrusted input, each with its seeds, its
//! structure-aware mutations and the properties it checks beyond "no panic" (which the
//! engine checks for all of them).
//!
//! | target | what it parses (and what then consumes the accepted value) |
//! | --- | --- |
//! | `onnx` | `compiler::import_onnx` (+ verify, print, summary, metadata, float run) |
//! | `artifact` | `Artifact::from_bytes` (+ round trip, print, simulation, wire sizes, `Client::new`) |
//! | `client-part` | `ClientSpec::from_bytes` (+ round trip, summary, `Client::for_spec`, encrypt) |
//! | `client-key` | `ClientKey::from_bytes` (+ round trip, encrypt/decrypt) |
//! | `server-key` | `ServerKey::from_bytes`, full and seeded forms (+ round trip, one evaluation) |
//! | `seeded-server-key` | `SeededServerKey::from_bytes` (+ round trip, `check`/`decompress` of any parameters) |
//! | `ciphertext` | `CtTensor::from_bytes` (+ round trip, decryption, compaction) |
//! | `seeded-image` | `SeededCtTensor::from_bytes` (+ round trip, decompression) |
//! | `compact-result` | `CompactCtTensor::from_bytes` (+ round trip, decryption) |
//! | `client-decrypt` | `app::Client::decrypt` of a result |
//! | `server-classify` | `app::Server::classify` of an encrypted image |
//! | `idx` | `Dataset::from_idx_bytes` (gzip or raw, images and labels) |
//! | `png`, `pgm` | `dataset::decode_image` |
//! | `npy` | `dataset::npy_from_bytes` |
//!
//! The key and ciphertext targets run under INSECURE toy parameters ([`toy`]): they fuzz
//! the files' framing and decoding, which do not depend on the parameters' security, with
//! keys small enough to generate per run. The app targets use a tiny circuit with
//! 128-bit parameters chosen by the compiler, as the runtime's own tests do.

pub mod app;
pub mod artifact;
pub mod client_part;
pub mod dataset;
pub mod keys;
pub mod onnx;
mod onnx_edit;
pub mod tensors;
pub mod toy;

use std::path::PathBuf;

use arbitrary::{Arbitrary, Unstructured};
use rand::Rng as _;

use crate::mutate::Rng;

/// What one input did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Parsed (and consumed): a short description of what was accepted, for the
    /// campaign's feedback (distinct descriptions are kept as new seeds).
    Accepted(String),
    /// Refused with an error: its message.
    Rejected(String),
}

/// One parser under test.
pub trait Target: Sync {
    /// The target's name (`--target NAME`, the corpus directory, crash file prefixes).
    fn name(&self) -> &'static str;

    /// What it parses, for `fhec-fuzz list`.
    fn about(&self) -> &'static str;

    /// Seeds made in code with the library itself (valid files, and near misses).
    fn seeds(&self) -> Vec<Vec<u8>>;

    /// Directories of seed files kept elsewhere in the repository (the ONNX fixtures), read
    /// besides the committed corpus `fuzz/corpus/NAME/`.
    fn seed_dirs(&self) -> Vec<PathBuf> {
        Vec::new()
    }

    /// A structure-aware mutation of `input` (`other` is a second input of the pool, to
    /// combine with), or `None` when none applies (the engine then mutates bytes).
    fn mutate(&self, input: &[u8], other: &[u8], rng: &mut Rng) -> Option<Vec<u8>>;

    /// Runs one input: `Ok` with what happened, or `Err` with the property it breaks (a
    /// failed round trip, an error without a message, ...). Panics are caught by the
    /// engine.
    fn run(&self, input: &[u8]) -> Result<Outcome, String>;
}

/// Every target, in campaign order.
pub static TARGETS: &[&dyn Target] = &[
    &onnx::Onnx,
    &artifact::ArtifactTarget,
    &client_part::ClientPartTarget,
    &keys::ClientKeyTarget,
    &keys::ServerKeyTarget,
    &keys::SeededServerKeyTarget,
    &tensors::CiphertextTarget,
    &tensors::SeededImageTarget,
    &tensors::CompactResultTarget,
    &app::ClientDecrypt,
    &app::ServerClassify,
    &dataset::Idx,
    &dataset::Png,
    &dataset::Pgm,
    &dataset::Npy,
];

/// The target named `name`.
pub fn target(name: &str) -> Option<&'static dyn Target> {
    TARGETS.iter().copied().find(|t| t.name() == name)
}

/// Draws a `T` from 1 KiB of random bytes (how targets pick a typed edit).
pub fn arb<T: for<'a> Arbitrary<'a>>(rng: &mut Rng) -> Option<T> {
    let mut bytes = [0u8; 1024];
    rng.fill_bytes(&mut bytes);
    T::arbitrary(&mut Unstructured::new(&bytes)).ok()
}

/// An error as an outcome: its message, which must not be empty.
pub fn rejected(e: impl std::fmt::Display) -> Result<Outcome, String> {
    let m = e.to_string();
    if m.trim().is_empty() { Err("an error without a message".into()) } else { Ok(Outcome::Rejected(m)) }
}

/// The repository's root (fixtures, corpus, crashes).
pub fn repo_root() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("fuzz/ is in the repository").to_path_buf()
}

/// Sets one TFHE parameter (`field`, any value: taken modulo the fields) to the awkward
/// value `v`, or drops / edits the rounding key; `None` when the field is absent.
pub fn edit_param(p: &mut fhec_ir::params::TfheParams, field: u8, v: u64) -> Option<()> {
    match field % 14 {
        0 => p.lwe_dimension = v as usize,
        1 => p.glwe_dimension = v as usize,
        2 => p.polynomial_size = v as usize,
        3 => p.pbs_base_log = v as u32,
        4 => p.pbs_level = v as u32,
        5 => p.ks_base_log = v as u32,
        6 => p.ks_level = v as u32,
        7 => p.glwe_noise_std = f64::from_bits(v),
        8 => p.lwe_noise_std = f64::from_bits(v),
        9 => p.round_key = None,
        10 => p.round_key.as_mut()?.polynomial_size = v as usize,
        11 => p.round_key.as_mut()?.bootstrap = None,
        12 => p.round_key.as_mut()?.bootstrap.as_mut()?.level = v as u32,
        _ => p.round_key.as_mut()?.glwe_dimension = v as usize,
    }
    Some(())
}
