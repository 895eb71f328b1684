//! The client part of a compiled model (`fhec_ir::client::ClientSpec`): it holds no weight
//! of any bundled model, its size does not depend on the weights, it agrees with the full
//! artifact on everything a client reads, and a corrupt, truncated, foreign, newer or
//! inconsistent one is a clear error. (Encrypted runs from a client part are in `fhe.rs`.)

use fhec_ir::artifact::{Artifact, ArtifactError};
use fhec_ir::circuit::{COp, Circuit};
use fhec_ir::client::{self, ClientSide, ClientSpec, ClientSpecError};
use fhec_ir::nn::Op;
use fhec_ir::params::{EncodingPlan, FheSetup, TfheParams, min_secure_std};
use fhec_tests::{bundled_models, compile_default, import, stem, tiny_circuit_of, tiny_graph_with_weights};

/// A secure parameter set (the one the compiler picks for `fhe_mnist`). The client part
/// records the parameters as they are, so any set serves to derive one.
fn params() -> TfheParams {
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

/// An artifact of `c` under [`params`].
fn artifact(c: Circuit, source: &str) -> Artifact {
    let plan = EncodingPlan::plan(&c).unwrap();
    let setup = FheSetup {
        params: params(),
        plan,
        operations: 1,
        p_error: 0.0,
        global_p_error: 0.0,
        security_bits: 128.0,
        est_cost_ms: 0.0,
    };
    Artifact {
        fhec_version: "test".into(),
        source: source.into(),
        options: Default::default(),
        circuit: c,
        fhe: Some(setup),
    }
}

/// bincode's varint form of an `i64` (zigzag, then one byte below 251, else a marker byte
/// and 2, 4 or 8 little-endian bytes): how a client part would hold integers.
fn varint(v: i64) -> Vec<u8> {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    match z {
        0..251 => vec![z as u8],
        251..=0xffff => [&[251u8][..], &(z as u16).to_le_bytes()].concat(),
        0x1_0000..=0xffff_ffff => [&[252u8][..], &(z as u32).to_le_bytes()].concat(),
        _ => [&[253u8][..], &z.to_le_bytes()].concat(),
    }
}

/// Byte patterns of runs of `n` consecutive values of `values` (only runs of at least four
/// distinct values that are not an arithmetic progression: small integers are single bytes
/// in varint form, and a short or repetitive run could occur by chance among a file's
/// lengths and flags), in every form a weight could take in a file: bincode varints, 8-byte
/// integers and 8-byte floats.
fn patterns(values: &[i64], n: usize) -> Vec<Vec<u8>> {
    let mut out = vec![];
    for w in values.windows(n) {
        let mut distinct = w.to_vec();
        distinct.sort();
        distinct.dedup();
        let arithmetic = w.windows(2).all(|p| p[1] - p[0] == w[1] - w[0]);
        if distinct.len() < 4 || arithmetic {
            continue;
        }
        out.push(w.iter().flat_map(|&v| varint(v)).collect());
        out.push(w.iter().flat_map(|&v| v.to_le_bytes()).collect());
        out.push(w.iter().flat_map(|&v| (v as f64).to_le_bytes()).collect());
    }
    out
}

/// Byte patterns of runs of the ONNX model's float weights, as 4- and 8-byte floats.
fn float_patterns(values: &[f32], n: usize) -> Vec<Vec<u8>> {
    let mut out = vec![];
    for w in values.windows(n).filter(|w| w.iter().any(|&v| v != w[0])) {
        out.push(w.iter().flat_map(|&v| v.to_le_bytes()).collect());
        out.push(w.iter().flat_map(|&v| (v as f64).to_le_bytes()).collect());
    }
    out
}

/// The integer weights of a circuit: every convolution kernel, dense matrix and clear
/// addend, row-major.
fn circuit_weights(c: &Circuit) -> Vec<Vec<i64>> {
    c.nodes
        .iter()
        .filter_map(|n| match &n.op {
            COp::Conv { weight, .. } => Some(weight.iter().copied().collect()),
            COp::Dense { weight } => Some(weight.iter().copied().collect()),
            COp::AddClear(a) => Some(a.iter().copied().collect()),
            _ => None,
        })
        .collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn the_client_part_of_every_bundled_model_holds_no_weight() {
    for b in bundled_models() {
        let name = stem(&b.path);
        let c = compile_default(&b);
        let art = artifact(c.clone(), &format!("{name}.onnx"));
        let full = art.to_bytes();
        let part = art.client_part().unwrap().to_bytes();
        // No circuit weight, as integers or floats, in runs of twelve.
        let ints: Vec<Vec<u8>> = circuit_weights(&c).iter().flat_map(|w| patterns(w, 12)).collect();
        assert!(!ints.is_empty(), "{name}: no weights to look for");
        // The detector finds them where they are.
        assert!(ints.iter().any(|p| contains(&full, p)), "{name}: no weight run found in the full artifact");
        if let Some(p) = ints.iter().find(|p| contains(&part, p)) {
            panic!("{name}: the client part holds a run of circuit weights: {p:?}");
        }
        // Nor any run of four of the ONNX model's float weights.
        let g = import(&b.path).unwrap();
        for id in g.node_ids() {
            let w: Vec<f32> = match &g.node(id).op {
                Op::Conv(conv) => conv.weight.iter().copied().collect(),
                Op::Dense { weight, .. } => weight.iter().copied().collect(),
                _ => continue,
            };
            if let Some(p) = float_patterns(&w, 4).iter().find(|p| contains(&part, p)) {
                panic!("{name}: the client part holds a run of '{}' float weights: {p:?}", g.node(id).name);
            }
        }
        // Small: the input quantization (256 integers), two numbers per score, the parameters.
        let scores: usize = c.nodes[c.output].shape.iter().product();
        assert!(part.len() <= 2048 + 16 * scores, "{name}: client part of {} bytes", part.len());
        assert!(part.len() * 10 < full.len(), "{name}: client part {} bytes, artifact {}", part.len(), full.len());
        eprintln!("{name}: client part {} bytes, artifact {} bytes", part.len(), full.len());
    }
}

#[test]
fn the_client_part_does_not_depend_on_the_weights() {
    // Two models with the same input and output and other weights: client parts of one size.
    let (a, b) = (tiny_circuit_of(&tiny_graph_with_weights(0)), tiny_circuit_of(&tiny_graph_with_weights(3)));
    assert_ne!(circuit_weights(&a), circuit_weights(&b), "the weights differ");
    let (pa, pb) = (artifact(a, "a.onnx").client_part().unwrap(), artifact(b, "b.onnx").client_part().unwrap());
    assert_eq!(pa.to_bytes().len(), pb.to_bytes().len());
    assert_eq!(
        (&pa.params, &pa.input.shape, &pa.output.encoding.shape),
        (&pb.params, &pb.input.shape, &pb.output.encoding.shape)
    );
    // A bundled model whose every weight and table entry changes (nothing else): the same
    // client part, byte for byte.
    let c = compile_default(&bundled_models()[0]);
    let mut other = c.clone();
    for n in &mut other.nodes {
        match &mut n.op {
            COp::Conv { weight, .. } => weight.mapv_inplace(|v| -v + 1),
            COp::Dense { weight } => weight.mapv_inplace(|v| -v + 1),
            COp::AddClear(a) => a.mapv_inplace(|v| v + 7),
            COp::Table { tables, .. } => tables.iter_mut().flatten().for_each(|v| *v = -*v),
            _ => {}
        }
    }
    assert_ne!(c, other);
    let (x, y) = (artifact(c, "m.onnx"), artifact(other, "m.onnx"));
    assert_eq!(x.client_part().unwrap().to_bytes(), y.client_part().unwrap().to_bytes());
    assert_ne!(x.to_bytes(), y.to_bytes());
}

#[test]
fn the_client_part_agrees_with_the_full_artifact() {
    let b = bundled_models().into_iter().find(|b| stem(&b.path) == "fhe_mnist").unwrap();
    let art = artifact(compile_default(&b), "fhe_mnist.onnx");
    let spec = ClientSpec::of(&art).unwrap();
    assert_eq!(ClientSpec::from_bytes(&spec.to_bytes()).unwrap(), spec);
    let pc = art.parametrized().unwrap();
    // Everything key generation, encryption and decryption read.
    assert_eq!(ClientSide::params(&spec), ClientSide::params(&pc));
    assert_eq!(ClientSide::input_shape(&spec), ClientSide::input_shape(&pc));
    assert_eq!(ClientSide::input_bits(&spec), ClientSide::input_bits(&pc));
    assert_eq!(spec.input_quant(), pc.input_quant());
    assert_eq!(spec.output_encoding(), pc.output_encoding());
    assert_eq!(spec.output_quant(), pc.output_quant());
    let setup = art.fhe.as_ref().unwrap();
    assert_eq!(spec.output.result_form, fhec_ir::params::result_form(&setup.params, &setup.plan, &art.circuit));
    assert_eq!(spec.keys.fingerprint, params().fingerprint());
    assert_eq!(spec.input.preprocess, Some(fhec_ir::Preprocess::Unit));
    let text = spec.summary();
    for want in
        ["client part of fhe_mnist.onnx", "n=760 k=1 N=2048", "input: shape [1, 1, 28, 28]", "output: shape [1, 10]"]
    {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    // No parameters, no client part.
    let mut sim_only = art.clone();
    sim_only.fhe = None;
    assert!(matches!(sim_only.client_part(), Err(ArtifactError::NoParameters { .. })));
}

#[test]
fn corrupt_truncated_foreign_or_inconsistent_client_parts_are_errors() {
    let art = artifact(tiny_circuit_of(&tiny_graph_with_weights(0)), "tiny.onnx");
    let spec = art.client_part().unwrap();
    let bytes = spec.to_bytes();
    assert!(ClientSpec::sniff(&bytes) && !Artifact::sniff(&bytes));
    let err = |b: &[u8]| ClientSpec::from_bytes(b).unwrap_err();
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 1;
    let e = err(&flipped);
    assert!(matches!(e, ClientSpecError::Framing(_)) && e.to_string().contains("corrupt (checksum mismatch)"), "{e}");
    for n in [0, 7, 19, bytes.len() / 2, bytes.len() - 1] {
        let e = err(&bytes[..n]);
        assert!(e.to_string().contains("truncated") || e.to_string().contains("bad magic"), "{n}: {e}");
    }
    let mut newer = bytes.clone();
    newer[8] = client::FORMAT_VERSION as u8 + 1;
    let e = err(&newer);
    assert_eq!(
        e.to_string(),
        format!(
            "client part format version {} is not supported (this fhec reads version {})",
            client::FORMAT_VERSION + 1,
            client::FORMAT_VERSION
        )
    );
    // The full artifact, and something else entirely.
    let e = err(&art.to_bytes());
    assert!(e.to_string().contains("not an fhec client part (a full artifact"), "{e}");
    assert_eq!(err(b"\x08\x07onnx model").to_string(), "not an fhec client part (bad magic bytes)");
    // A well-framed payload that does not decode.
    let junk = client::FORMAT.frame(&[0xff; 40]);
    assert!(matches!(err(&junk), ClientSpecError::Decode(_)), "{}", err(&junk));
    // Well-formed but inconsistent: each one named.
    let cases: Vec<(Box<dyn Fn(&mut ClientSpec)>, &str)> = vec![
        (Box::new(|s| s.keys.fingerprint ^= 1), "key requirements"),
        (Box::new(|s| s.keys.rounding_bootstrap_key = true), "key requirements"),
        (Box::new(|s| s.params.lwe_noise_std /= 1e6), "not 128-bit secure"),
        (
            Box::new(|s| {
                s.input.quant.pixel_to_q.pop();
            }),
            "maps 255 pixel values",
        ),
        (Box::new(|s| s.input.shape = vec![1, 0, 8, 8]), "input shape"),
        (Box::new(|s| s.input.shape = vec![1 << 20, 1 << 20]), "input shape"),
        (Box::new(|s| s.input.bits = 63), "input is encoded on 63 bits"),
        (Box::new(|s| s.output.encoding.shape = vec![1, 4]), "3 scales and 3 offsets for 4"),
        (Box::new(|s| s.output.encoding.bits = 0), "output is encoded on 0 bits"),
        (Box::new(|s| s.output.encoding.read_bits = s.output.encoding.bits + 1), "and read on"),
        (Box::new(|s| s.output.encoding.norm2 = f64::NAN), "noise 2-norm"),
        (
            // One bit more than needed: reliable, but not the form a server sends.
            Box::new(|s| {
                let w = s.output.result_form.word_bits;
                s.output.result_form.word_bits = if w < 64 { w + 1 } else { w - 1 };
            }),
            "result form",
        ),
    ];
    for (change, want) in cases {
        let mut bad = spec.clone();
        change(&mut bad);
        let e = err(&bad.to_bytes());
        assert!(matches!(e, ClientSpecError::Invalid(_)) && e.to_string().contains(want), "want {want:?}: {e}");
    }
}
