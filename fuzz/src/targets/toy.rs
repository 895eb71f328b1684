//! INSECURE toy TFHE parameters and keys, for fuzzing the key and ciphertext files only.
//!
//! The file formats' framing and decoding do not depend on the parameters' security, and
//! keys of 128-bit parameters are tens to hundreds of MB: the key and ciphertext targets use
//! [`TOY`] (an 8-coefficient small key, a 64-coefficient GLWE key with a 32-coefficient
//! rounding key and result keyswitch, so every optional key is present), whose keys take
//! milliseconds to generate and a few KB to store. Nothing outside this crate may use them.

use std::sync::OnceLock;

use fhec_ir::circuit::{CNode, COp, Circuit, InputQuant, OutputQuant, Range, TableIndex};
use fhec_ir::params::{EncodingPlan, RoundKeyParams, TfheParams};
use fhec_runtime::fhe::{ClientKey, SeededServerKey, ServerKey};

/// INSECURE toy parameters (fuzzing of the key and ciphertext files only).
pub const TOY: TfheParams = TfheParams {
    lwe_dimension: 8,
    glwe_dimension: 1,
    polynomial_size: 64,
    lwe_noise_std: 1e-15,
    glwe_noise_std: 1e-15,
    pbs_base_log: 12,
    pbs_level: 2,
    ks_base_log: 4,
    ks_level: 3,
    round_key: Some(RoundKeyParams {
        glwe_dimension: 1,
        polynomial_size: 32,
        glwe_noise_std: 1e-15,
        bootstrap: Some(fhec_ir::params::Decomposition { base_log: 12, level: 1 }),
    }),
};

/// Keys of [`TOY`] and a two-value circuit to evaluate with them.
pub struct Toy {
    /// A client key.
    pub client: ClientKey,
    /// Its evaluation key, full form.
    pub server: ServerKey,
    /// Its evaluation key, seeded form.
    pub seeded: SeededServerKey,
    /// `input (2 bits) -> 2-bit table` on two values.
    pub circuit: Circuit,
    /// The circuit's encoding plan.
    pub plan: EncodingPlan,
}

/// The toy keys (generated once per process).
pub fn toy() -> &'static Toy {
    static TOY_KEYS: OnceLock<Toy> = OnceLock::new();
    TOY_KEYS.get_or_init(|| {
        let client = ClientKey::generate(&TOY);
        let server = client.server_key();
        let seeded = client.seeded_server_key();
        let circuit = table_circuit();
        let plan = EncodingPlan::plan(&circuit).expect("the toy circuit has an encoding plan");
        Toy { client, server, seeded, circuit, plan }
    })
}

/// `input (2 bits, shape [1, 1, 1, 2]) -> table [0, 3, 1, 2]`: one bootstrap per value.
pub fn table_circuit() -> Circuit {
    let node = |name: &str, op, inputs, range| CNode {
        name: String::from(name),
        op,
        inputs,
        shape: vec![1, 1, 1, 2],
        range,
        norm2: 1.0,
    };
    let range = Range { min: 0, max: 3 };
    Circuit {
        name: "toy".into(),
        metadata: Default::default(),
        nodes: vec![
            node("input", COp::Input { bits: 2 }, vec![], range),
            node(
                "table",
                COp::Table { in_width: 2, index: TableIndex::Shared, tables: vec![vec![0, 3, 1, 2]] },
                vec![0],
                range,
            ),
        ],
        output: 1,
        input_quant: InputQuant { pixel_to_q: (0..256).map(|p| p / 64).collect() },
        output_quant: OutputQuant { scale: vec![1.0; 2], offset: vec![0.0; 2] },
        round_chunk: 1,
        output_bits: None,
    }
}
