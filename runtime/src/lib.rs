//! fhec runtime: what a client or server application links.
//!
//! * [`app`]: the application API, a `Client` and a `Server` that exchange only bytes
//!   (evaluation key, encrypted image, encrypted result).
//! * [`fhe`]: keys, ciphertexts and encrypted evaluation of circuits on tfhe-rs.
//! * [`sim`]: the exact integer simulator (what the encrypted evaluation must equal).
//! * [`dataset`]: reading image sets (IDX, PNG, PGM) for evaluation and calibration.
//!
//! Architecture Invariant: only this crate links tfhe-rs; it never depends on the
//! compiler or on ONNX.
#![warn(missing_docs)]

#[cfg(feature = "fhe")]
pub mod app;
pub mod dataset;
#[cfg(feature = "fhe")]
pub mod fhe;
pub mod sim;

/// Bytes of one encrypted image as `app::Client::encrypt` produces it, for a circuit input
/// of `shape`: the framed seeded form (`fhe::SeededCtTensor`), 8 bytes per value plus 8 per
/// dimension of the shape plus 76. Independent of the TFHE parameters. Available without the
/// `fhe` feature, for size estimates (the compiler's build report).
pub fn encrypted_image_bytes(shape: &[usize]) -> usize {
    // frame 40 (magic 8, kind 4, version 4, fingerprint 8, length 8, checksum 8); payload:
    // shape (length 8 + 8 per dimension), bits 4, seed 16, bodies (length 8 + 8 per value).
    40 + 8 + 8 * shape.len() + 4 + 16 + 8 + 8 * shape.iter().product::<usize>()
}

/// Bytes of one encrypted result as `app::Server::classify` returns it: the framed compact
/// form (`fhe::CompactCtTensor`) for an output of `shape` under `p`, in `form`
/// (`fhec_ir::params::result_form`).
pub fn encrypted_result_bytes(
    shape: &[usize],
    p: &fhec_ir::params::TfheParams,
    form: fhec_ir::params::ResultForm,
) -> usize {
    // frame 40; payload: shape (8 + 8 per dimension), bits 4, key 4 (the variant's index),
    // word bits 4, data (8 + bytes).
    // (A form whose key `p` lacks, which no server sends, counts as full words.)
    let values = shape.iter().product::<usize>();
    let data = form.data_bytes(p, values).unwrap_or(values * (p.big_dimension() + 1) * 8);
    40 + 8 + 8 * shape.len() + 4 + 4 + 4 + 8 + data
}

/// Bytes of the evaluation key as `app::Client::evaluation_key` produces it for parameters
/// `p`: the framed seeded form (`fhe::SeededServerKey`), 8 bytes per keyswitch key body
/// (`kN·ℓ_ks`), per bootstrap key body (`n·ℓ_pbs·(k+1)·N`, and the rounding bootstrap
/// key's, if any) and per result keyswitch key body (`(kN - d)·ℓ`, if any) plus 193 (225
/// with a rounding key). What the server
/// holds in memory after decompression is `fhec_ir::params::TfheParams::key_bytes`.
/// Available without the `fhe` feature, for size estimates (the compiler's build report).
pub fn evaluation_key_bytes(p: &fhec_ir::params::TfheParams) -> usize {
    let ksk = p.big_dimension() * p.ks_level as usize;
    let bodies = |q: &fhec_ir::params::TfheParams| {
        q.lwe_dimension * q.pbs_level as usize * (q.glwe_dimension + 1) * q.polynomial_size
    };
    let (bsk, round_bsk) = (bodies(p), if p.has_rounding_bsk() { bodies(&p.rounding_bootstrap()) } else { 0 });
    // frame 40; payload: parameters 56 (3 x 8 dimensions, 2 x 8 deviations, 4 x 4
    // decompositions) + 1 (rounding key: none or some) + 32 (its 2 x 8 dimensions, 8
    // deviation, 2 x 4 decomposition), then per key a seed 16 and its bodies (length 8 + 8
    // per body; the rounding and result keys' are empty without them).
    let round_params = if p.round_key.is_some() { 32 } else { 0 };
    let result_ksk = p.result_ks().map_or(0, |(_, l)| (p.big_dimension() - p.input_dimension()) * l as usize);
    40 + 57
        + round_params
        + (16 + 8 + 8 * ksk)
        + (16 + 8 + 8 * bsk)
        + (16 + 8 + 8 * round_bsk)
        + (16 + 8 + 8 * result_ksk)
}
