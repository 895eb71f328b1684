//! Helpers shared by the runtime's integration tests (identity circuits, small parameters,
//! artifacts, reframing files).
#![allow(dead_code, unused_imports)]

use fhec_ir::artifact::{Artifact, ParametrizedCircuit};
use fhec_ir::circuit::{CNode, COp, Circuit, InputQuant, OutputQuant, Range, TableIndex};
use fhec_ir::params::{
    EncodingPlan, FheSetup, ResultForm, ResultKey, RoundKeyParams, TfheParams, min_secure_std, result_form,
};
use fhec_runtime::app::{Client, Server};
use fhec_runtime::fhe::files::{self, Kind, kind_of};
use fhec_runtime::fhe::test_support::noise_samples;
use fhec_runtime::fhe::{ClientKey, CompactCtTensor, SeededCtTensor, SeededServerKey, ServerKey};
use fhec_runtime::sim;
use fhec_runtime::{encrypted_image_bytes, encrypted_result_bytes, evaluation_key_bytes};

/// The parameters the compiler chooses for the bundled `fhe_mnist` (see
/// `tests/snapshots/params__params_bundled.snap`): n=760 k=1 N=2048 PBS 2x2^16 KS 8x2^2.
pub fn fhe_mnist_params() -> TfheParams {
    TfheParams {
        lwe_dimension: 760,
        glwe_dimension: 1,
        polynomial_size: 2048,
        lwe_noise_std: min_secure_std(760),
        glwe_noise_std: min_secure_std(2048),
        pbs_base_log: 16,
        pbs_level: 2,
        ks_base_log: 2,
        ks_level: 8,
        round_key: None,
    }
}

/// Small parameters on the 128-bit curve whose evaluation key is quick to generate (their
/// bootstraps would fail, but the identity circuits here have none).
pub fn small_params(lwe_dimension: usize) -> TfheParams {
    TfheParams {
        lwe_dimension,
        glwe_dimension: 1,
        polynomial_size: 1024,
        lwe_noise_std: min_secure_std(lwe_dimension),
        glwe_noise_std: min_secure_std(1024),
        pbs_base_log: 10,
        pbs_level: 1,
        ks_base_log: 4,
        ks_level: 1,
        round_key: None,
    }
}

/// The identity on an `h x w` image, reading pixel `p` as `255 - p`.
pub fn identity_circuit(h: usize, w: usize) -> Circuit {
    Circuit {
        name: "identity".into(),
        metadata: Default::default(),
        nodes: vec![CNode {
            name: "input".into(),
            op: COp::Input { bits: 8 },
            inputs: vec![],
            shape: vec![1, 1, h, w],
            range: Range { min: 0, max: 255 },
            norm2: 1.0,
        }],
        output: 0,
        input_quant: InputQuant { pixel_to_q: (0..256).rev().collect() },
        output_quant: OutputQuant { scale: vec![1.0; h * w], offset: vec![0.0; h * w] },
        round_chunk: 1,
        output_bits: None,
    }
}

/// An artifact of `c` with parameters `p`, and its encoding plan.
pub fn artifact(c: &Circuit, p: TfheParams) -> (Vec<u8>, EncodingPlan) {
    let plan = EncodingPlan::plan(c).unwrap();
    let setup = FheSetup {
        params: p,
        plan: plan.clone(),
        operations: 1,
        p_error: 0.0,
        global_p_error: 0.0,
        security_bits: 128.0,
        est_cost_ms: 0.0,
    };
    let art = Artifact {
        fhec_version: "test".into(),
        source: "identity".into(),
        options: Default::default(),
        circuit: c.clone(),
        fhe: Some(setup),
    };
    (art.to_bytes(), plan)
}

/// Pseudo-random pixels.
pub fn pixels(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 56) as u8
        })
        .collect()
}

/// `b` with its payload replaced by `payload` (length and checksum recomputed), so that
/// what follows the frame's checks is exercised.
/// The value keeps `b`'s parameter fingerprint.
pub fn reframe(b: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = b[..12].to_vec();
    let body = [&b[20..VALUE], payload].concat();
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&body);
    let fnv = body.iter().fold(0xcbf29ce484222325u64, |h, &x| (h ^ x as u64).wrapping_mul(0x100000001b3));
    out.extend_from_slice(&fnv.to_le_bytes());
    out
}

/// Offset of the bincode value in a framed file: magic 8, version 4, length 8, fingerprint 8,
/// key pair 8.
pub const VALUE: usize = 36;

/// `b` with another parameter fingerprint (checksum recomputed).
pub fn refingerprint(b: &[u8]) -> Vec<u8> {
    let mut m = b.to_vec();
    m[20] ^= 1;
    reframe(&m, &b[VALUE..b.len() - 8])
}

pub fn want(c: &Circuit, px: &[u8]) -> Vec<i64> {
    sim::simulate(c, sim::encode_image(c, px)).unwrap().iter().copied().collect()
}
