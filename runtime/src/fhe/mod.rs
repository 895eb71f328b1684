//! Encrypted execution of a circuit on tfhe-rs (`core_crypto`).
//!
//! Every circuit value is a tensor of LWE ciphertexts under the flattened GLWE key
//! (dimension `kN`), encoded as `v·Δ + e` with `Δ = 2^(63 - bits)` from the circuit's
//! [`EncodingPlan`](fhec_ir::params::EncodingPlan). Linear ops (integer convolutions and dense layers, clear additions,
//! sums, reshapes) work on the ciphertexts directly; every bootstrap is a keyswitch to the
//! small key (dimension `n`) followed by a programmable bootstrap back to the GLWE key.
//! A worker keyswitches up to 16 independent ciphertexts in one pass over the
//! keyswitch key (the elements of a table layer, or one step of exact rounding for a batch
//! of elements), so each key row serves the whole batch from cache.
//!
//! Inputs: with a rounding key, the client encrypts under its `k_r·N_r` prefix of the
//! flattened GLWE key ([`TfheParams::input_dimension`](fhec_ir::params::TfheParams::input_dimension), with that prefix's 128-bit noise),
//! zero-padded to `kN`. Rounding outputs are on the same prefix, so the conv layers before
//! the first table keyswitch only the prefix (a keyswitch stops at the last non-zero mask
//! coefficient).
//!
//! * Table: one PBS per element, its lookup table generated from the circuit's table.
//! * Exact rounding of `k` bits: for `j = 0..k`, the value times `2^(P-j)` puts bit `j` on
//!   the top of the torus; with a quarter-torus offset a constant lookup table returns `+C`
//!   or `-C` (negacyclic), from which `b_j·2^j·Δ` is subtracted. What is left is
//!   `2^k·floor(v/2^k)`: the same value read with `k` fewer bits.
//! * Max pooling: `m ← m + relu(x - m)` over each window, each relu one PBS.
//!
//! Keys: [`ClientKey`] holds the secrets and never leaves the client; [`ServerKey`] holds
//! only the keyswitch and bootstrap keys, and [`evaluate`] takes nothing else.
//!
//! The evaluation key travels in seeded form ([`ClientKey::seeded_server_key`], tfhe-rs's
//! seeded keyswitch and bootstrap keys): every mask of both keys is drawn from a CSPRNG
//! seeded by a public seed, so only the bodies and two seeds travel ([`SeededServerKey`]:
//! `8kN·ℓ_ks` bytes of keyswitch key instead of `8kN·ℓ_ks(n+1)`, `8n·ℓ_pbs(k+1)N` of
//! bootstrap key instead of `8n·ℓ_pbs(k+1)²N`). The server regenerates the masks in
//! parallel and converts the bootstrap key to the Fourier domain on load
//! ([`SeededServerKey::decompress`]): keys of the same secrets, decompositions, noise and
//! security as [`ClientKey::server_key`]'s.
//!
//! Uploads: the client encrypts its input in seeded form ([`ClientKey::encrypt_seeded`],
//! tfhe-rs's seeded LWE encryption): a fresh ciphertext's mask is drawn from a CSPRNG
//! seeded by a public compression seed, so only the seed and one body per value travel
//! ([`SeededCtTensor`], 8 bytes per value instead of `8(kN+1)`). The server regenerates
//! the masks from the seed ([`SeededCtTensor::decompress`]) and evaluates the same
//! [`CtTensor`] as before. Same key, same noise: only the transport changes.
//!
//! Modules: `keys` (the three keys, their generation, checks and decompression),
//! `layout` (the checks of key files and parameters before tfhe-rs reads them),
//! `ciphertext` (the three tensor forms, encryption and decryption, the server's compact
//! results), `schedule` (the per-thread worker that batches keyswitches and
//! bootstraps), `eval` (one function per circuit op, dispatched by
//! [`evaluate_with_progress`]), [`files`] (the framed byte forms), and with the `probes`
//! feature `probe` (bootstrap timings and test helpers).

mod ciphertext;
mod error;
mod eval;
pub mod files;
mod keys;
mod layout;
#[cfg(feature = "probes")]
mod probe;
mod schedule;

pub use ciphertext::{CompactCtTensor, CtTensor, SeededCtTensor};
pub use error::FheError;
pub use eval::{evaluate, evaluate_with_progress};
pub use keys::{ClientKey, KeyPairId, SeededServerKey, ServerKey};
#[cfg(feature = "probes")]
pub use probe::{one_bootstrap_seconds, one_rounding_bootstrap_seconds, test_support};

use tfhe::core_crypto::prelude::{CiphertextModulus, Gaussian, StandardDev};

/// The native 2^64 ciphertext modulus.
fn modulus() -> CiphertextModulus<u64> {
    CiphertextModulus::new_native()
}

/// Centred Gaussian noise of standard deviation `std` (torus).
fn gaussian(std: f64) -> Gaussian<f64> {
    Gaussian::from_dispersion_parameter(StandardDev(std), 0.0)
}

/// `Δ = 2^(63 - bits)`.
fn delta(bits: u32) -> u64 {
    1u64 << (63 - bits)
}

/// Number of elements of `shape`, `None` on overflow.
fn numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}
