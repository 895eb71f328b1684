//! Exact byte sizes of what travels between a client and a server, as the runtime frames
//! it (`fhec_runtime::app`): the evaluation key, an encrypted image, an encrypted result.
//! They depend only on the circuit and its parameters, so the compiler's build report gives
//! them without linking tfhe-rs; the runtime's tests check them against real bytes.

/// Bytes the runtime's file format adds to a bincode value: the shared frame
/// ([`crate::framing::OVERHEAD`]: magic 8, version 4, length 8, checksum 8) and the 8-byte
/// fingerprint of the parameters and the 8-byte key-pair identity at the start of the payload.
pub const FRAME_BYTES: usize = crate::framing::OVERHEAD + 16;

/// Bytes of one encrypted image as `app::Client::encrypt` produces it, for a circuit input
/// of `shape`: the framed seeded form (`fhec_runtime::fhe::SeededCtTensor`), 8 bytes per value plus 8 per
/// dimension of the shape plus 72. Independent of the TFHE parameters.
pub fn encrypted_image_bytes(shape: &[usize]) -> usize {
    // frame 44 (FRAME_BYTES); value:
    // shape (length 8 + 8 per dimension), bits 4, seed 16, bodies (length 8 + 8 per value).
    FRAME_BYTES + 8 + 8 * shape.len() + 4 + 16 + 8 + 8 * shape.iter().product::<usize>()
}

/// Bytes of one encrypted result as `app::Server::classify` returns it: the framed compact
/// form (`fhec_runtime::fhe::CompactCtTensor`) for an output of `shape` under `p`, in `form`
/// (`crate::params::result_form`).
pub fn encrypted_result_bytes(
    shape: &[usize],
    p: &crate::params::TfheParams,
    form: crate::params::ResultForm,
) -> usize {
    // frame 44 (FRAME_BYTES); value: shape (8 + 8 per dimension), bits 4, key 4 (the variant's index),
    // word bits 4, data (8 + bytes).
    // (A form whose key `p` lacks, which no server sends, counts as full words.)
    let values = shape.iter().product::<usize>();
    let data = form.data_bytes(p, values).unwrap_or(values * (p.big_dimension() + 1) * 8);
    FRAME_BYTES + 8 + 8 * shape.len() + 4 + 4 + 4 + 8 + data
}

/// Bytes of the evaluation key as `app::Client::evaluation_key` produces it for parameters
/// `p`: the framed seeded form (`fhec_runtime::fhe::SeededServerKey`), 8 bytes per keyswitch key body
/// (`kN·ℓ_ks`), per bootstrap key body (`n·ℓ_pbs·(k+1)·N`, and the rounding bootstrap
/// key's, if any) and per result keyswitch key body (`(kN - d)·ℓ`, if any) plus 197 (230
/// with a rounding key, 222 with an input prefix). What the server
/// holds in memory after decompression is `crate::params::TfheParams::key_bytes`.
///
pub fn evaluation_key_bytes(p: &crate::params::TfheParams) -> usize {
    let ksk = p.big_dimension() * p.ks_level as usize;
    let bodies = |q: &crate::params::TfheParams| {
        q.lwe_dimension * q.pbs_level as usize * (q.glwe_dimension + 1) * q.polynomial_size
    };
    let (bsk, round_bsk) = (bodies(p), p.rounding_bsk().map_or(0, |r| bodies(&r)));
    // frame 44 (FRAME_BYTES); value: parameters 56 (3 x 8 dimensions, 2 x 8 deviations, 4 x 4
    // decompositions) + 1 (rounding key: none or some) + 25 (its 2 x 8 dimensions, 8
    // deviation, 1 for its decomposition: none or some) + 8 (that decomposition, 2 x 4),
    // then per key a seed 16 and its bodies (length 8 + 8 per body; the rounding and result
    // keys' are empty without them).
    let round_params = p.round_key.map_or(0, |r| 25 + if r.has_bootstrap_key() { 8 } else { 0 });
    let result_ksk = p.result_ks().map_or(0, |(_, l)| (p.big_dimension() - p.input_dimension()) * l as usize);
    FRAME_BYTES
        + 57
        + round_params
        + (16 + 8 + 8 * ksk)
        + (16 + 8 + 8 * bsk)
        + (16 + 8 + 8 * round_bsk)
        + (16 + 8 + 8 * result_ksk)
}
