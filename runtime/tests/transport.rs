//! What travels between client and server.
//!
//! Seeded evaluation keys: the client sends the keyswitch and bootstrap keys' bodies plus
//! the seeds of their masks; the server regenerates the masks and converts the bootstrap
//! key to the Fourier domain, and bootstraps exactly as with the full key.
//! Seeded uploads: the client sends its encrypted image as one LWE body per value plus the
//! seed of the masks; the server regenerates the masks and evaluates the same ciphertexts.
//! Compact results: the server rounds every coefficient of the result to the fewest bytes
//! the output's noise allows. Round trips equal the simulation, the bytes are small and
//! exactly what the report announces, and truncated, corrupt, inconsistent or foreign
//! images and results are errors (never panics).
//!
//! The circuits here are the identity on the input (no bootstrap), so that the server's
//! whole path (load, decompress, evaluate, serialize) runs in milliseconds, except one
//! small table lookup that checks real bootstraps with a seeded key.

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
fn fhe_mnist_params() -> TfheParams {
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
fn small_params(lwe_dimension: usize) -> TfheParams {
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
fn identity_circuit(h: usize, w: usize) -> Circuit {
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
fn artifact(c: &Circuit, p: TfheParams) -> (Vec<u8>, EncodingPlan) {
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
fn pixels(n: usize, seed: u64) -> Vec<u8> {
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
fn reframe(b: &[u8], payload: &[u8]) -> Vec<u8> {
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
const VALUE: usize = 36;

/// `b` with another parameter fingerprint (checksum recomputed).
fn refingerprint(b: &[u8]) -> Vec<u8> {
    let mut m = b.to_vec();
    m[20] ^= 1;
    reframe(&m, &b[VALUE..b.len() - 8])
}

fn want(c: &Circuit, px: &[u8]) -> Vec<i64> {
    sim::simulate(c, sim::encode_image(c, px)).unwrap().iter().copied().collect()
}

#[test]
fn seeded_encryption_decompresses_to_fresh_ciphertexts() {
    let p = fhe_mnist_params();
    let ck = ClientKey::generate(&p);
    let size = p.big_dimension() + 1;
    let vals: Vec<i64> = (0..300).map(|i| (i * 37 % 256) - 128).collect();
    let s = ck.encrypt_seeded(&vals, &[3, 100], 9);
    assert_eq!(s.bodies.len(), 300);
    let ct = s.decompress(&p).unwrap();
    assert_eq!((ct.shape.as_slice(), ct.bits, ct.data.len()), (&[3usize, 100][..], 9, 300 * size));
    assert_eq!(ck.decrypt(&ct), vals);
    // The noise of a fresh encryption under the GLWE key (std 2^-49.9 of the torus, i.e.
    // 2^-40 of Δ at 9 bits), as for the unseeded encryption.
    let err = |t| ck.phases(t).iter().zip(&vals).map(|(ph, &v)| (ph - v as f64).abs()).fold(0.0, f64::max);
    assert!(err(&ct) < 1e-6, "{}", err(&ct));
    let full = ck.encrypt(&vals, &[3, 100], 9);
    assert_eq!(ck.decrypt(&full), vals);
    assert!(err(&full) < 1e-6);
    // Decompression is deterministic and keeps the bodies; the masks are random (another
    // encryption has another seed and other masks) and not zero.
    assert_eq!(s.decompress(&p).unwrap(), ct);
    assert!(ct.data.chunks_exact(size).zip(&s.bodies).all(|(c, b)| c[size - 1] == *b));
    assert!(ct.data.chunks_exact(size).all(|c| c[..size - 1].iter().filter(|&&m| m == 0).count() < 4));
    let s2 = ck.encrypt_seeded(&vals, &[3, 100], 9);
    assert_ne!(s2.seed, s.seed);
    assert_ne!(s2.decompress(&p).unwrap().data[..size - 1], ct.data[..size - 1]);
    // Serialized form: the exact size the report announces, and a lossless round trip.
    let b = s.to_bytes(&p);
    assert_eq!(kind_of(&b), Some(Kind::SeededImage));
    assert_eq!(b.len(), encrypted_image_bytes(&[3, 100]));
    assert_eq!(b.len(), files::SEEDED_OVERHEAD + 8 * 2 + 8 * 300);
    assert_eq!(SeededCtTensor::from_bytes(&b, &p).unwrap(), s);
    // Nothing to encrypt is not a panic either.
    let empty = ck.encrypt_seeded(&[], &[0], 9);
    assert_eq!(empty.decompress(&p).unwrap().data.len(), 0);
}

#[test]
fn with_a_rounding_key_inputs_are_encrypted_under_its_prefix_of_the_key() {
    // The rounding key shares the first k_r·N_r = 1024 coefficients of the big key: inputs
    // are encrypted there (with that dimension's 128-bit noise) and padded with zeros, so
    // the keyswitches of everything computed from them stop at coefficient 1024.
    let p = TfheParams {
        round_key: Some(RoundKeyParams {
            glwe_dimension: 1,
            polynomial_size: 1024,
            glwe_noise_std: min_secure_std(1024),
            pbs_base_log: 16,
            pbs_level: 2,
        }),
        ..fhe_mnist_params()
    };
    assert_eq!((p.input_dimension(), p.big_dimension()), (1024, 2048));
    assert!(p.is_secure() && p.var_fresh() == min_secure_std(1024).powi(2));
    let ck = ClientKey::generate(&p);
    let size = p.big_dimension() + 1;
    let vals: Vec<i64> = (0..200).map(|i| (i * 37 % 256) - 128).collect();
    let seeded = ck.encrypt_seeded(&vals, &[200], 9).decompress(&p).unwrap();
    let full = ck.encrypt(&vals, &[200], 9);
    for ct in [&seeded, &full] {
        assert_eq!(ct.data.len(), 200 * size);
        assert_eq!(ck.decrypt(ct), vals);
        assert!(ct.data.chunks_exact(size).all(|c| c[1024..size - 1].iter().all(|&m| m == 0)));
        assert!(ct.data.chunks_exact(size).all(|c| c[..1024].iter().filter(|&&m| m == 0).count() < 4));
        // Fresh noise at 1024 dimensions: std 2^-23.6 of the torus, 2^-14 of Δ at 9 bits.
        let err = ck.phases(ct).iter().zip(&vals).map(|(ph, &v)| (ph - v as f64).abs()).fold(0.0, f64::max);
        assert!(err < 1e-2, "{err}");
    }
    // The upload is as small as before: one body per value.
    assert_eq!(ck.encrypt_seeded(&vals, &[200], 9).to_bytes(&p).len(), encrypted_image_bytes(&[200]));
}

#[test]
fn a_seeded_28x28_image_for_fhe_mnist_parameters_is_under_16_kib() {
    let p = fhe_mnist_params();
    let c = identity_circuit(28, 28);
    let (art, plan) = artifact(&c, p);
    let client = Client::new(&art).unwrap();
    let px = pixels(784, 1);
    let up = client.encrypt(&px).unwrap();
    let ck = ClientKey::from_bytes(&client.secret_key(), &p).unwrap();
    let pc = ParametrizedCircuit::with_params(&c, &p, &plan).unwrap();
    let full = ck.encrypt_image(&pc, &px).unwrap().to_bytes(&p);
    eprintln!(
        "one 28x28 image at n=760 k=1 N=2048: seeded {} bytes ({:.2} KiB), full ciphertexts {} bytes ({:.2} MiB)",
        up.len(),
        up.len() as f64 / 1024.0,
        full.len(),
        full.len() as f64 / 1048576.0
    );
    assert!(up.len() < 16 * 1024, "{} bytes", up.len());
    assert_eq!(up.len(), encrypted_image_bytes(&[1, 1, 28, 28]));
    assert_eq!(up.len(), 6384);
    assert!(full.len() > 12 * 1024 * 1024);
    // The seeded image decrypts to what the simulation reads.
    let s = SeededCtTensor::from_bytes(&up, &p).unwrap();
    assert_eq!(ck.decrypt(&s.decompress_input(&pc).unwrap()), want(&c, &px));
}

#[test]
fn seeded_image_through_the_app_api_equals_simulation() {
    let p = small_params(450);
    let c = identity_circuit(28, 28);
    let (art, plan) = artifact(&c, p);
    let client = Client::new(&art).unwrap();
    let server = Server::new(&art, &client.evaluation_key()).unwrap();
    for seed in 0..3 {
        let px = pixels(784, seed);
        let up = client.encrypt(&px).unwrap();
        assert_eq!(kind_of(&up), Some(Kind::SeededImage));
        assert_eq!(up.len(), encrypted_image_bytes(c.input_shape()));
        let res = server.classify(&up).unwrap();
        assert_eq!(kind_of(&res), Some(Kind::CompactResult));
        assert_eq!(res.len(), encrypted_result_bytes(&[1, 1, 28, 28], &p, result_form(&p, &plan, &c)));
        let pred = client.decrypt(&res).unwrap();
        assert_eq!(pred.raw, want(&c, &px), "image {seed}");
        // Decrypting the image itself instead of a result is an error.
        let e = client.decrypt(&up).unwrap_err().to_string();
        assert!(e.contains("encrypted image, not this model's result"), "{e}");
    }
    // The unseeded form (full ciphertexts) is still accepted.
    let px = pixels(784, 7);
    let ck = ClientKey::from_bytes(&client.secret_key(), &p).unwrap();
    let pc = ParametrizedCircuit::with_params(&c, &p, &plan).unwrap();
    let full = ck.encrypt_image(&pc, &px).unwrap().to_bytes_bound(&p, ck.pair());
    assert_eq!(kind_of(&full), Some(Kind::Ciphertext));
    let pred = client.decrypt(&server.classify(&full).unwrap()).unwrap();
    assert_eq!(pred.raw, want(&c, &px));
}

#[test]
fn bad_seeded_images_are_errors() {
    let p = small_params(450);
    let c = identity_circuit(28, 28);
    let (art, plan) = artifact(&c, p);
    let client = Client::new(&art).unwrap();
    let server = Server::new(&art, &client.evaluation_key()).unwrap();
    let err = |b: &[u8]| server.classify(b).err().expect("must fail").to_string();
    let up = client.encrypt(&pixels(784, 3)).unwrap();

    // Truncated, at any length.
    let e = err(&up[..up.len() - 9]);
    assert!(e.starts_with("encrypted image:") && e.contains("truncated"), "{e}");
    for n in [0, 7, 8, 12, 31, 32, 39, 40, 100, up.len() / 2, up.len() - 1] {
        err(&up[..n]);
    }
    let mut long = up.clone();
    long.push(0);
    assert!(err(&long).contains("trailing data"));
    // Corrupt: a flipped bit anywhere in the payload or the checksum.
    for i in [32, 40, 60, 70, up.len() / 2, up.len() - 9, up.len() - 1] {
        let mut b = up.clone();
        b[i] ^= 4;
        let e = err(&b);
        assert!(e.contains("corrupt (checksum mismatch)"), "byte {i}: {e}");
    }
    // Another kind, version or parameters in the header.
    let mut b = up.clone();
    b[..8].copy_from_slice(&Kind::CompactResult.format().magic);
    assert!(err(&b).contains("holds an encrypted result but a seeded encrypted image is expected"));
    let mut b = up.clone();
    b[4] = b'?';
    assert!(err(&b).contains("not an fhec key or ciphertext file"));
    let mut b = up.clone();
    b[8] = 99;
    assert!(err(&b).contains("version 99 is not supported"));
    assert!(err(&refingerprint(&up)).contains("other TFHE parameters"));
    let e = err(&client.secret_key());
    assert!(e.contains("holds a client key but a seeded encrypted image is expected"), "{e}");
    assert!(err(b"not an image at all, just some bytes").contains("not an fhec key or ciphertext file"));

    // An image encrypted for other parameters.
    let (other_art, _) = artifact(&c, small_params(460));
    let other = Client::new(&other_art).unwrap().encrypt(&pixels(784, 3)).unwrap();
    let e = err(&other);
    assert!(e.contains("other TFHE parameters"), "{e}");
    assert!(SeededCtTensor::from_bytes(&up, &small_params(460)).is_err());

    // An image of another size under the same parameters: the value count does not match.
    let (small_art, _) = artifact(&identity_circuit(27, 28), p);
    let e = err(&Client::new(&small_art).unwrap().encrypt(&pixels(756, 3)).unwrap());
    assert!(e.contains("holds 756 values of shape [1, 1, 27, 28]") && e.contains("input is 784 values"), "{e}");

    // Framed correctly but inconsistent inside: bodies for another shape, wrong encoding
    // bits, a shape whose size overflows.
    let bits = plan.bits[0];
    let bad = |shape: Vec<usize>, bits: u32, n: usize| SeededCtTensor { shape, bits, seed: 5, bodies: vec![1; n] };
    let e = err(&bad(vec![1, 1, 28, 28], bits, 783).to_bytes(&p));
    assert!(e.contains("inconsistent (783 bodies for shape [1, 1, 28, 28]"), "{e}");
    assert!(err(&bad(vec![1, 1, 28, 28], 0, 784).to_bytes(&p)).contains("0 encoding bits"));
    assert!(err(&bad(vec![1, 1, 28, 28], 63, 784).to_bytes(&p)).contains("63 encoding bits"));
    let e = err(&bad(vec![1, 1, 28, 28], bits - 1, 784).to_bytes(&p));
    assert!(e.contains(&format!("on {} bits, but the circuit's input is 784 values", bits - 1)), "{e}");
    assert!(err(&bad(vec![usize::MAX, 3], bits, 0).to_bytes(&p)).contains("inconsistent"));
    assert!(bad(vec![usize::MAX, 3], bits, 3).decompress(&p).is_err());

    // A payload that does not decode, or decodes to anything: errors or (a changed seed or
    // body) a wrong but well-formed image, never a panic.
    let payload = &up[VALUE..up.len() - 8];
    let e = err(&reframe(&up, &payload[..payload.len() - 3]));
    assert!(e.contains("does not decode"), "{e}");
    let mut huge = payload.to_vec();
    huge[..8].copy_from_slice(&(1u64 << 60).to_le_bytes());
    assert!(err(&reframe(&up, &huge)).contains("does not decode"));
    for i in 0..72 {
        for v in [0x00, 0x01, 0x80, 0xff] {
            let mut m = payload.to_vec();
            m[i] = v;
            let _ = server.classify(&reframe(&up, &m));
        }
    }
}

/// Parameters shaped like `seedq_mnist`'s (`N = 4096`, a rounding key of two polynomials
/// of 1024 sharing the GLWE key's first 2048 coefficients), so that results can be switched
/// to that input key.
fn params_with_input_key() -> TfheParams {
    let r = RoundKeyParams {
        glwe_dimension: 2,
        polynomial_size: 1024,
        glwe_noise_std: min_secure_std(2048),
        pbs_base_log: 20,
        pbs_level: 1,
    };
    TfheParams { polynomial_size: 4096, glwe_noise_std: min_secure_std(4096), round_key: Some(r), ..fhe_mnist_params() }
}

#[test]
fn compact_results_keep_the_bits_the_output_noise_needs() {
    let p = params_with_input_key();
    let c = identity_circuit(28, 28);
    let plan = EncodingPlan::plan(&c).unwrap();
    // The identity's output is encoded on 9 bits with fresh noise. The result keyswitch (two
    // levels onto the 2048-coefficient input key) keeps it: the smallest reliable form is
    // under the input key, 2049 coefficients per value instead of 4097.
    assert_eq!(plan.bits[c.output], 9);
    assert_eq!(p.result_ks().map(|(_, l)| l), Some(2));
    let form = result_form(&p, &plan, &c);
    assert_eq!(form.key, ResultKey::Input);
    let glwe = ResultForm { key: ResultKey::Glwe, word_bits: 64 };
    assert!(form.data_bytes(&p, 784).unwrap() * 5 < glwe.data_bytes(&p, 784).unwrap());
    // The small key's keyswitch noise (std about 2^-11) is too much for a 9-bit output.
    let small = ResultForm { key: ResultKey::Small, word_bits: 64 };
    assert!(!small.decrypts_reliably(&p, &plan, &c));

    let ck = ClientKey::generate(&p);
    let sk = ck.server_key();
    let vals: Vec<i64> = (0..784).map(|i| (i * 37 % 511) - 255).collect();
    let ct = ck.encrypt(&vals, &[1, 1, 28, 28], 9);
    let res = sk.compact(&ct, form).unwrap();
    assert_eq!(res.data.len(), (784 * 2049 * form.word_bits as usize).div_ceil(8));
    assert_eq!(ck.decrypt_compact(&res).unwrap(), vals);
    // The full words under the GLWE key are the ciphertexts themselves.
    assert_eq!(ck.decrypt_compact(&sk.compact(&ct, glwe).unwrap()).unwrap(), vals);
    // Forms the noise model rejects do decrypt to errors: the small key, and one bit per
    // coefficient.
    let wrong = |f: ResultForm| {
        let got = ck.decrypt_compact(&sk.compact(&ct, f).unwrap()).unwrap();
        got.iter().zip(&vals).filter(|(a, b)| a != b).count()
    };
    assert!(wrong(small) > 100);
    assert!(wrong(ResultForm { key: ResultKey::Input, word_bits: 1 }) > 700);
    // Serialized: the size the report announces.
    let b = res.to_bytes(&p);
    assert_eq!(b.len(), encrypted_result_bytes(&[1, 1, 28, 28], &p, form));
    assert_eq!(CompactCtTensor::from_bytes(&b, &p).unwrap(), res);

    // Without a rounding key the input key is the GLWE key: no result keyswitch key.
    let q = fhe_mnist_params();
    assert_eq!(q.result_ks(), None);
    assert_eq!(result_form(&q, &plan, &c).key, ResultKey::Glwe);
    let input = ResultForm { key: ResultKey::Input, word_bits: 24 };
    assert!(!input.decrypts_reliably(&q, &plan, &c));
    assert_eq!(input.data_bytes(&q, 784), None);
}

#[test]
fn bad_results_are_errors() {
    // Parameters whose bootstrap noise is small enough for results to be compacted (the
    // server key takes a few seconds to generate).
    let p = fhe_mnist_params();
    let c = identity_circuit(28, 28);
    let (art, plan) = artifact(&c, p);
    let client = Client::new(&art).unwrap();
    let server = Server::new(&art, &client.evaluation_key()).unwrap();
    let px = pixels(784, 5);
    let res = server.classify(&client.encrypt(&px).unwrap()).unwrap();
    let err = |b: &[u8]| client.decrypt(b).err().expect("must fail").to_string();

    for n in [0, 8, 39, 40, 60, res.len() / 2, res.len() - 1] {
        assert!(err(&res[..n]).starts_with("encrypted result:"));
    }
    let mut b = res.clone();
    b[res.len() / 2] ^= 1;
    assert!(err(&b).contains("corrupt (checksum mismatch)"));
    // A result rounded below what the output's noise allows is refused, not misread.
    let ck = ClientKey::from_bytes(&client.secret_key(), &p).unwrap();
    let sk = ck.server_key();
    let full = ck.encrypt(&want(&c, &px), &[1, 1, 28, 28], plan.bits[c.output]);
    let form = result_form(&p, &plan, &c);
    let compact = |f: ResultForm| sk.compact(&full, f).unwrap();
    let e = err(&compact(ResultForm { word_bits: form.word_bits - 1, ..form }).to_bytes(&p));
    let fewer = format!("keeps {} bits per coefficient under the Glwe key, too few", form.word_bits - 1);
    assert!(e.contains(&fewer), "{e}");
    // Bytes that do not match the shape and parameters.
    let mut short = compact(form);
    short.data.truncate(short.data.len() - 3);
    let e = err(&short.to_bytes(&p));
    assert!(e.contains(&format!("not {} bits per coefficient of [1, 1, 28, 28] ciphertexts", form.word_bits)), "{e}");
    let mut wide = compact(form);
    wide.word_bits = 65;
    assert!(err(&wide.to_bytes(&p)).contains("65 bits per word"));
    // Under an input key these parameters do not have.
    let mut input = compact(form);
    input.key = ResultKey::Input;
    assert!(err(&input.to_bytes(&p)).contains("no result keyswitch"));
    assert!(sk.compact(&full, ResultForm { key: ResultKey::Input, word_bits: 24 }).is_err());
    // A result of other parameters; a key where the result is expected.
    let (other_art, _) = artifact(&c, small_params(460));
    let other = Client::new(&other_art).unwrap();
    assert!(err(&compact(form).to_bytes(&small_params(460))).contains("other TFHE parameters"));
    assert_eq!(result_form(&small_params(460), &plan, &c), ResultForm { key: ResultKey::Glwe, word_bits: 64 });
    assert!(other.decrypt(&res).unwrap_err().to_string().contains("other TFHE parameters"));
    assert!(err(&client.secret_key()).contains("holds a client key but an encrypted result is expected"));
    // Full ciphertexts (what servers returned before) are still accepted.
    assert_eq!(client.decrypt(&full.to_bytes_bound(&p, ck.pair())).unwrap().raw, want(&c, &px));
}

/// The parameters the compiler chooses for the seed networks (`seed_mnist`,
/// `seed_fashion`): n=890 k=1 N=8192 PBS 5x2^8 KS 9x2^2.
fn seed_params() -> TfheParams {
    TfheParams {
        lwe_dimension: 890,
        glwe_dimension: 1,
        polynomial_size: 8192,
        lwe_noise_std: min_secure_std(890),
        glwe_noise_std: min_secure_std(8192),
        pbs_base_log: 8,
        pbs_level: 5,
        ks_base_log: 2,
        ks_level: 9,
        round_key: None,
    }
}

/// A 4x4 image through one shared 3-bit table (16 bootstraps): pixel `p` is read as
/// `p / 32`, then mapped through a permutation of -4..4 (negative entries included: they
/// are two's complement on the torus).
fn table_circuit() -> Circuit {
    let table = vec![-1, 1, -4, 3, 2, -2, -3, 0];
    Circuit {
        name: "table".into(),
        metadata: Default::default(),
        nodes: vec![
            CNode {
                name: "input".into(),
                op: COp::Input { bits: 3 },
                inputs: vec![],
                shape: vec![1, 1, 4, 4],
                range: Range { min: 0, max: 7 },
                norm2: 1.0,
            },
            CNode {
                name: "table".into(),
                op: COp::Table { in_width: 3, index: TableIndex::Shared, tables: vec![table] },
                inputs: vec![0],
                shape: vec![1, 1, 4, 4],
                range: Range { min: -4, max: 3 },
                norm2: 1.0,
            },
        ],
        output: 1,
        input_quant: InputQuant { pixel_to_q: (0..256).map(|p| p / 32).collect() },
        output_quant: OutputQuant { scale: vec![1.0; 16], offset: vec![0.0; 16] },
        round_chunk: 1,
        output_bits: None,
    }
}

#[test]
fn seeded_evaluation_key_for_fhe_mnist_parameters_is_exact_small_and_bootstraps_like_the_full_key() {
    let p = fhe_mnist_params();
    let ck = ClientKey::generate(&p);
    let seeded = ck.seeded_server_key();
    let b = seeded.to_bytes();
    let full = ck.server_key();
    let full_bytes = full.to_bytes();
    let mib = |n: usize| n as f64 / 1048576.0;
    eprintln!(
        "evaluation key at n=760 k=1 N=2048 PBS 2x2^16 KS 8x2^2: seeded {} bytes ({:.1} MiB), full {} bytes ({:.1} MiB), {:.2}x smaller",
        b.len(),
        mib(b.len()),
        full_bytes.len(),
        mib(full_bytes.len()),
        full_bytes.len() as f64 / b.len() as f64
    );
    // Exactly what the report announces: kN·ℓ_ks keyswitch bodies, n·ℓ_pbs·(k+1)·N bootstrap
    // bodies, 8 bytes each.
    assert_eq!(kind_of(&b), Some(Kind::SeededServerKey));
    assert_eq!(b.len(), evaluation_key_bytes(&p));
    assert_eq!(b.len(), files::SEEDED_KEY_OVERHEAD + 8 * (2048 * 8 + 760 * 2 * 2 * 2048));
    assert_eq!((seeded.ksk_bodies.len(), seeded.bsk_bodies.len()), (2048 * 8, 760 * 2 * 2 * 2048));
    // The full key carries n + 1 words per keyswitch body and k + 1 polynomials per bootstrap
    // body: about four times as much here.
    let (bsk, ksk) = p.key_bytes();
    assert!(full_bytes.len() >= bsk + ksk && full_bytes.len() > 3 * b.len());
    assert!(b.len() < 48 * 1024 * 1024);
    assert_eq!(SeededServerKey::from_bytes(&b, &p).unwrap(), seeded);
    // Two keys have other seeds (and other bodies).
    let other = ck.seeded_server_key();
    assert!(other.ksk_seed != seeded.ksk_seed && other.bsk_seed != seeded.bsk_seed);
    assert_ne!(seeded.ksk_seed, seeded.bsk_seed);
    assert_ne!(other.ksk_bodies[..64], seeded.ksk_bodies[..64]);

    // Loaded (decompressed, converted to the Fourier domain), it bootstraps with the noise of
    // the full key: the variances of both keys' bootstrap outputs match the noise model.
    let sk = ServerKey::from_bytes(&b, &p).unwrap();
    sk.check(&p).unwrap();
    let out_bits = 6;
    let weights = [3i64, -2, 4, 1, -1, 1, 0, 1];
    let var = |v: &[f64]| v.iter().map(|e| e * e).sum::<f64>() / v.len() as f64;
    let predicted = p.var_pbs() * (2.0f64).powi(2 * (out_bits as i32 + 1));
    for (what, key) in [("seeded", &sk), ("full", &full)] {
        let (pbs, dot) = noise_samples(&ck, key, 3, out_bits, &weights, 160);
        assert!(pbs.iter().chain(&dot).all(|e| e.abs() < 0.25), "{what}: an error reached a quarter step");
        let m = var(&pbs);
        eprintln!("{what} key: bootstrap output variance {m:.3e} (model {predicted:.3e})");
        assert!(m < 3.0 * predicted && m > predicted / 3.0, "{what}: measured {m:e}, predicted {predicted:e}");
    }
    // The full form is still accepted.
    ServerKey::from_bytes(&full_bytes, &p).unwrap().check(&p).unwrap();
}

#[test]
fn a_table_lookup_with_the_seeded_evaluation_key_equals_simulation() {
    let p = fhe_mnist_params();
    let c = table_circuit();
    let (art, _) = artifact(&c, p);
    let client = Client::new(&art).unwrap();
    let ek = client.evaluation_key();
    assert_eq!(kind_of(&ek), Some(Kind::SeededServerKey));
    assert_eq!(ek.len(), evaluation_key_bytes(&p));
    let server = Server::new(&art, &ek).unwrap();
    assert_eq!(server.bootstraps(), 16);
    // A server built from the same client's full key (what clients sent before).
    let ck = ClientKey::from_bytes(&client.secret_key(), &p).unwrap();
    let full_server = Server::new(&art, &ck.server_key().to_bytes()).unwrap();
    for seed in 0..3 {
        let px = pixels(16, seed);
        let up = client.encrypt(&px).unwrap();
        let want = want(&c, &px);
        assert!(want.iter().any(|&v| v != want[0]));
        assert_eq!(client.decrypt(&server.classify(&up).unwrap()).unwrap().raw, want, "image {seed}");
        assert_eq!(client.decrypt(&full_server.classify(&up).unwrap()).unwrap().raw, want, "image {seed}, full key");
    }
}

#[test]
fn bad_seeded_evaluation_keys_are_errors() {
    let p = small_params(450);
    let c = identity_circuit(28, 28);
    let (art, _) = artifact(&c, p);
    let client = Client::new(&art).unwrap();
    let ek = client.evaluation_key();
    assert_eq!(ek.len(), evaluation_key_bytes(&p));
    let err = |b: &[u8]| Server::new(&art, b).err().expect("must fail").to_string();
    // The key itself loads, and the server it makes works.
    let server = Server::new(&art, &ek).unwrap();
    let px = pixels(784, 1);
    assert_eq!(client.decrypt(&server.classify(&client.encrypt(&px).unwrap()).unwrap()).unwrap().raw, want(&c, &px));

    // Truncated, at any length; trailing data.
    let e = err(&ek[..ek.len() - 9]);
    assert!(e.starts_with("evaluation key:") && e.contains("truncated"), "{e}");
    for n in [0, 7, 8, 11, 12, 31, 32, 39, 40, 100, ek.len() / 2, ek.len() - 1] {
        assert!(err(&ek[..n]).starts_with("evaluation key:"));
    }
    let mut long = ek.clone();
    long.push(0);
    assert!(err(&long).contains("trailing data"));
    // Corrupt: a flipped bit in the parameters, the seeds, the bodies or the checksum.
    for i in [32, 40, 90, 100, 120, 200, ek.len() / 2, ek.len() - 9, ek.len() - 1] {
        let mut b = ek.clone();
        b[i] ^= 4;
        let e = err(&b);
        assert!(e.contains("corrupt (checksum mismatch)"), "byte {i}: {e}");
    }
    // Another version or other parameters in the header.
    let mut b = ek.clone();
    b[8] = 99;
    assert!(err(&b).contains("version 99 is not supported"));
    assert!(err(&refingerprint(&ek)).contains("other TFHE parameters"));
    // A key made for other parameters.
    let (other_art, _) = artifact(&c, small_params(460));
    let other = Client::new(&other_art).unwrap().evaluation_key();
    let e = err(&other);
    assert!(e.starts_with("evaluation key:") && e.contains("other TFHE parameters"), "{e}");
    assert!(SeededServerKey::from_bytes(&ek, &small_params(460)).is_err());

    // Wrong kinds, each way round: the error names what the file holds.
    let e = err(&client.secret_key());
    assert!(e.contains("holds a client key but a server key is expected"), "{e}");
    let up = client.encrypt(&px).unwrap();
    let e = err(&up);
    assert!(e.contains("holds a seeded encrypted image but a server key is expected"), "{e}");
    let e = server.classify(&ek).unwrap_err().to_string();
    assert!(e.contains("holds a seeded server key but a seeded encrypted image is expected"), "{e}");
    let e = client.decrypt(&ek).unwrap_err().to_string();
    assert!(e.contains("holds a seeded server key but an encrypted result is expected"), "{e}");
    let e = Client::with_key(&art, &ek).err().expect("must fail").to_string();
    assert!(e.contains("holds a seeded server key but a client key is expected"), "{e}");
    assert!(SeededServerKey::from_bytes(&client.secret_key(), &p).unwrap_err().to_string().contains("client key"));
    // The header says "full key" over a seeded payload, or "seeded key" over a full one.
    let full = ClientKey::from_bytes(&client.secret_key(), &p).unwrap().server_key().to_bytes();
    let mut b = ek.clone();
    b[..8].copy_from_slice(&Kind::ServerKey.format().magic);
    let e = err(&b);
    assert!(e.contains("server key does not decode") || e.contains("does not match"), "{e}");
    let mut b = full.clone();
    b[..8].copy_from_slice(&Kind::SeededServerKey.format().magic);
    let e = err(&b);
    assert!(e.contains("seeded server key does not decode"), "{e}");

    // Framed correctly but inconsistent inside: body counts that do not match the
    // parameters, parameters other than the frame's.
    let seeded = SeededServerKey::from_bytes(&ek, &p).unwrap();
    let mut k = seeded.clone();
    k.ksk_bodies.pop();
    let e = err(&k.to_bytes());
    assert!(e.contains("holds 1023 keyswitch key bodies, not 1024 (kN = 1024 coefficients x 1 levels)"), "{e}");
    let mut k = seeded.clone();
    k.bsk_bodies.extend_from_slice(&[7; 1024]);
    let e = err(&k.to_bytes());
    assert!(
        e.contains("holds 922624 bootstrap key bodies, not 921600 (n = 450 x 1 levels x 2 polynomials of N = 1024)"),
        "{e}"
    );
    let mut k = seeded.clone();
    k.bsk_bodies.clear();
    assert!(err(&k.to_bytes()).contains("holds 0 bootstrap key bodies"));
    let mut k = seeded.clone();
    k.params.ks_level = 2;
    let payload = &k.to_bytes()[VALUE..];
    let e = err(&reframe(&ek, &payload[..payload.len() - 8]));
    assert!(e.contains("the seeded evaluation key was made for other TFHE parameters"), "{e}");
    // Keys whose parameters tfhe-rs would not accept are errors, not panics, even when
    // their body counts agree.
    for bad in [
        TfheParams { polynomial_size: 1000, ..p },
        TfheParams { ks_level: 0, ..p },
        TfheParams { pbs_level: 0, ..p },
        TfheParams { ks_base_log: 0, ..p },
        TfheParams { pbs_base_log: 33, pbs_level: 2, ..p },
        TfheParams { lwe_dimension: 0, ..p },
        TfheParams { glwe_dimension: 0, ..p },
    ] {
        let k = SeededServerKey {
            pair: Default::default(),
            params: bad,
            ksk_seed: 1,
            ksk_bodies: vec![0; bad.glwe_dimension * bad.polynomial_size * bad.ks_level as usize],
            bsk_seed: 2,
            bsk_bodies: vec![
                0;
                bad.lwe_dimension * bad.pbs_level as usize * (bad.glwe_dimension + 1) * bad.polynomial_size
            ],
            round_bsk_seed: 0,
            round_bsk_bodies: vec![],
            result_ksk_seed: 0,
            result_ksk_bodies: vec![],
        };
        let e = k.decompress().err().expect("invalid parameters").to_string();
        assert!(e.contains("the TFHE parameters are invalid"), "{bad:?}: {e}");
    }
    // Decompression of a consistent key is deterministic: any seed is valid.
    let mut k = seeded.clone();
    k.ksk_seed = u128::MAX;
    k.bsk_seed = 0;
    assert_eq!(k.clone().decompress().unwrap().to_bytes(), k.decompress().unwrap().to_bytes());

    // A payload whose lengths do not match its contents, or that does not decode.
    let payload = &ek[VALUE..ek.len() - 8];
    // The keyswitch bodies' length (after the 57 bytes of parameters and the 16 of the seed)
    // one short: the rest is read shifted, and the bootstrap bodies' length is garbage.
    let mut m = payload.to_vec();
    m[73..81].copy_from_slice(&1023u64.to_le_bytes());
    let e = err(&reframe(&ek, &m));
    assert!(e.contains("seeded server key does not decode"), "{e}");
    // One body more than the payload holds.
    let mut m = payload.to_vec();
    let at = 57 + 16 + 8 + 8 * 1024 + 16;
    assert_eq!(u64::from_le_bytes(m[at..at + 8].try_into().unwrap()), 921_600);
    m[at..at + 8].copy_from_slice(&921_601u64.to_le_bytes());
    assert!(err(&reframe(&ek, &m)).contains("seeded server key does not decode"));
    // Consistent lengths, one body short of the parameters.
    let bodies_end = at + 8 + 8 * 921_600;
    let mut m = [&payload[..bodies_end - 8], &payload[bodies_end..]].concat();
    m[at..at + 8].copy_from_slice(&921_599u64.to_le_bytes());
    assert!(err(&reframe(&ek, &m)).contains("holds 921599 bootstrap key bodies, not 921600"));
    assert!(err(&reframe(&ek, &payload[..payload.len() - 3])).contains("does not decode"));
    let mut huge = payload.to_vec();
    huge[73..81].copy_from_slice(&(1u64 << 60).to_le_bytes());
    assert!(err(&reframe(&ek, &huge)).contains("does not decode"));
    // Any byte of the parameters, seeds and lengths changed: an error or (a changed seed) a
    // well-formed other key, never a panic.
    let end = payload.len();
    for i in [
        0,
        8,
        24,
        40,
        48,
        52,
        55,
        56,
        57,
        64,
        72,
        73,
        74,
        80,
        81,
        at - 16,
        at - 1,
        at,
        at + 1,
        at + 7,
        at + 8,
        end - 24,
        end - 9,
        end - 8,
        end - 1,
    ] {
        for v in [0x00, 0x01, 0xff] {
            let mut m = payload.to_vec();
            m[i] = v;
            let _ = Server::new(&art, &reframe(&ek, &m));
        }
    }
}

/// Sizes and times of the evaluation key, seeded and full, for fhe_mnist's and the seed
/// networks' parameters (about a minute and 6 GB of memory; run with `--ignored
/// --nocapture`).
#[test]
#[ignore]
fn evaluation_key_sizes_and_times() {
    let mib = |n: usize| n as f64 / 1048576.0;
    for (name, p) in [("fhe_mnist", fhe_mnist_params()), ("seed networks", seed_params())] {
        let ck = ClientKey::generate(&p);
        let t = std::time::Instant::now();
        let seeded = ck.seeded_server_key();
        let t_seeded = t.elapsed().as_secs_f64();
        let b = seeded.to_bytes();
        drop(seeded);
        let t = std::time::Instant::now();
        let full = ck.server_key();
        let t_full = t.elapsed().as_secs_f64();
        let fb = full.to_bytes();
        drop(full);
        let t = std::time::Instant::now();
        let sk = ServerKey::from_bytes(&b, &p).unwrap();
        let t_load_seeded = t.elapsed().as_secs_f64();
        drop(sk);
        let t = std::time::Instant::now();
        let seeded = SeededServerKey::from_bytes(&b, &p).unwrap();
        let t_decode = t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        drop(seeded.decompress().unwrap());
        let t_decompress = t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        let sk = ServerKey::from_bytes(&fb, &p).unwrap();
        let t_load_full = t.elapsed().as_secs_f64();
        drop(sk);
        let (bsk, ksk) = p.key_bytes();
        assert_eq!(b.len(), evaluation_key_bytes(&p));
        eprintln!(
            "{name} ({}): evaluation key seeded {} bytes ({:.1} MiB), full {} bytes ({:.1} MiB), {:.2}x; in server memory {:.1} MiB\n  keygen: seeded {t_seeded:.2} s, full (incl. Fourier conversion) {t_full:.2} s\n  server load: seeded {t_load_seeded:.2} s (decode {t_decode:.2} s, then decompress + Fourier {t_decompress:.2} s), full (decode) {t_load_full:.2} s",
            p.summary(),
            b.len(),
            mib(b.len()),
            fb.len(),
            mib(fb.len()),
            fb.len() as f64 / b.len() as f64,
            mib(bsk + ksk),
        );
    }
}

#[test]
fn seeded_key_with_a_rounding_key_round_trips_and_bad_rounding_bodies_are_errors() {
    // Small parameters (quick keys) with a rounding key of two polynomials of 256 sharing the
    // main key's first 512 coefficients.
    let r = fhec_ir::params::RoundKeyParams {
        glwe_dimension: 2,
        polynomial_size: 256,
        glwe_noise_std: min_secure_std(512),
        pbs_base_log: 12,
        pbs_level: 1,
    };
    let p = TfheParams { round_key: Some(r), ..small_params(500) };
    let ck = ClientKey::generate(&p);
    let seeded = ck.seeded_server_key();
    assert_eq!(seeded.round_bsk_bodies.len(), 500 * 3 * 256);
    // The result keyswitch key: two levels for each of the 512 coefficients after the prefix.
    assert_eq!(seeded.result_ksk_bodies.len(), 512 * 2);
    let b = seeded.to_bytes();
    assert_eq!(b.len(), evaluation_key_bytes(&p));
    assert_eq!(
        b.len(),
        files::SEEDED_KEY_OVERHEAD
            + files::ROUND_KEY_PARAMS_BYTES
            + 8 * (1024 + 500 * 2 * 1024 + seeded.round_bsk_bodies.len() + seeded.result_ksk_bodies.len())
    );
    let back = SeededServerKey::from_bytes(&b, &p).unwrap();
    assert_eq!(back, seeded);
    back.decompress().unwrap().check(&p).unwrap();
    // A rounding key one body short, or missing, or present for parameters without one.
    let mut short = seeded.clone();
    short.round_bsk_bodies.pop();
    let e = short.decompress().err().expect("short").to_string();
    assert!(e.contains("rounding bootstrap key bodies, not 384000"), "{e}");
    let mut missing = seeded.clone();
    missing.round_bsk_bodies.clear();
    assert!(missing.decompress().err().expect("missing").to_string().contains("holds 0 rounding bootstrap key bodies"));
    let mut extra = seeded.clone();
    extra.params.round_key = None;
    let e = extra.decompress().err().expect("extra").to_string();
    assert!(e.contains("rounding bootstrap key bodies, not 0"), "{e}");
    // A result keyswitch key one body short.
    let mut result_short = seeded.clone();
    result_short.result_ksk_bodies.pop();
    let e = result_short.decompress().err().expect("result short").to_string();
    assert!(e.contains("holds 1023 result keyswitch key bodies, not 1024"), "{e}");
    // A rounding key wider than the main one is refused before tfhe-rs sees it.
    let mut wide = seeded;
    wide.params.round_key = Some(fhec_ir::params::RoundKeyParams { glwe_dimension: 8, ..r });
    assert!(wide.decompress().err().expect("wide").to_string().contains("the TFHE parameters are invalid"));
}

/// Batched bootstrap and keyswitch costs (16 per blind rotation or pass over the key, one
/// thread; what `evaluate` does) over parameter sets spanning the search space, against
/// `TfheParams::pbs_cost` and `ks_cost`: the data the cost model is fitted on (a few minutes and about 5 GB of memory; run with `--ignored
/// --nocapture` on an idle machine).
#[test]
#[ignore]
fn bootstrap_costs_for_the_cost_model() {
    use fhec_runtime::fhe::test_support::OneBootstrap;
    let sets: [(usize, usize, usize, u32, u32); 11] = [
        (700, 1, 1024, 1, 20),
        (760, 1, 2048, 3, 12),
        (800, 1, 2048, 1, 20),
        (800, 2, 1024, 2, 16),
        (830, 2, 1024, 2, 16),
        (800, 4, 512, 2, 16),
        (800, 2, 2048, 2, 16),
        (800, 1, 4096, 1, 20),
        (830, 1, 4096, 3, 12),
        (800, 1, 8192, 2, 15),
        (890, 1, 8192, 5, 8),
    ];
    for (n, k, big_n, l, b) in sets {
        let p = TfheParams {
            lwe_dimension: n,
            glwe_dimension: k,
            polynomial_size: big_n,
            lwe_noise_std: min_secure_std(n),
            glwe_noise_std: min_secure_std(k * big_n),
            pbs_base_log: b,
            pbs_level: l,
            ks_base_log: 2,
            ks_level: 8,
            round_key: None,
        };
        let ck = ClientKey::generate(&p);
        let sk = ck.server_key();
        let ct = ck.encrypt(&[1; 16], &[16], 2);
        let mut one = OneBootstrap::new(&sk, 2);
        one.keyswitch(&ct);
        one.bootstrap_batch();
        let ms = median_ms_per_16(5, &mut || {
            one.bootstrap_batch();
        });
        eprintln!("COST n={n} k={k} N={big_n} l={l}: batched {ms:.2} ms per bootstrap, model {:.2} ms", p.pbs_cost());
    }
    // Keyswitches, 16 in one pass over the key, against `TfheParams::ks_cost`.
    for (n, big_n, ks_level, ks_base_log) in
        [(760, 2048, 8, 2), (860, 4096, 5, 3), (830, 4096, 8, 2), (890, 8192, 9, 2)]
    {
        let p = TfheParams {
            lwe_dimension: n,
            glwe_dimension: 1,
            polynomial_size: big_n,
            lwe_noise_std: min_secure_std(n),
            glwe_noise_std: min_secure_std(big_n),
            pbs_base_log: 20,
            pbs_level: 1,
            ks_base_log,
            ks_level,
            round_key: None,
        };
        let ck = ClientKey::generate(&p);
        let sk = ck.server_key();
        let ct = ck.encrypt(&[1; 16], &[16], 2);
        let mut one = OneBootstrap::new(&sk, 2);
        one.keyswitch(&ct);
        let ms = median_ms_per_16(7, &mut || one.keyswitch(&ct));
        eprintln!("COST KS n={n} kN={big_n} l={ks_level}: {ms:.2} ms per keyswitch, model {:.2} ms", p.ks_cost());
    }
}

/// Median over `runs` runs of `f` (which handles 16 ciphertexts), in ms per ciphertext.
fn median_ms_per_16(runs: usize, f: &mut dyn FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = std::time::Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3 / 16.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[runs / 2]
}

/// Keys and ciphertexts carry their key pair: an image of another client, or a result
/// decrypted with another client's key, is an error naming the pairs, never a wrong class.
#[test]
fn files_of_another_key_pair_are_refused() {
    let c = identity_circuit(28, 28);
    let p = small_params(760);
    let (art, plan) = artifact(&c, p);
    let (a, b) = (Client::new(&art).unwrap(), Client::new(&art).unwrap());
    let server = Server::new(&art, &a.evaluation_key()).unwrap();
    // The pair survives the secret key's file.
    let a2 = Client::with_key(&art, &a.secret_key()).unwrap();
    let px = pixels(784, 2);
    let res = server.classify(&a2.encrypt(&px).unwrap()).unwrap();
    assert_eq!(a.decrypt(&res).unwrap().raw, a2.decrypt(&res).unwrap().raw);
    let e = server.classify(&b.encrypt(&px).unwrap()).unwrap_err().to_string();
    assert!(
        e.contains("the encrypted image belongs to key pair") && e.contains("evaluation key is of key pair"),
        "{e}"
    );
    let e = b.decrypt(&res).unwrap_err().to_string();
    assert!(e.contains("the encrypted result belongs to key pair") && e.contains("client key is of key pair"), "{e}");
    // A ciphertext written by the low-level API names no pair: refused by the app API.
    let ck = ClientKey::from_bytes(&a.secret_key(), &p).unwrap();
    let pc = ParametrizedCircuit::with_params(&c, &p, &plan).unwrap();
    let unbound = ck.encrypt_image(&pc, &px).unwrap().to_bytes(&p);
    assert!(server.classify(&unbound).unwrap_err().to_string().contains("not bound to a key pair"));
}
