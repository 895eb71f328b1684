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

mod support;

use fhec_ir::artifact::ParametrizedCircuit;
use fhec_ir::params::{EncodingPlan, ResultForm, ResultKey, RoundKeyParams, TfheParams, min_secure_std, result_form};
use fhec_runtime::app::{Client, Server, load_client_part};
use fhec_runtime::fhe::files::{self, Kind, kind_of};
use fhec_runtime::fhe::{ClientKey, CompactCtTensor, SeededCtTensor};
use fhec_runtime::{encrypted_image_bytes, encrypted_result_bytes};
use support::*;

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
            bootstrap: Some(fhec_ir::params::Decomposition { base_log: 16, level: 2 }),
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
    let err = |b: &[u8]| server.classify(b).expect_err("must fail").to_string();
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
        bootstrap: Some(fhec_ir::params::Decomposition { base_log: 20, level: 1 }),
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
fn a_client_of_the_client_part_alone_talks_to_a_server_of_the_full_artifact() {
    // Parameters with a rounding key and a result keyswitch key: the client part says so,
    // and the evaluation key made from it holds both.
    let p = params_with_input_key();
    let c = identity_circuit(28, 28);
    let (art, _) = artifact(&c, p);
    let spec = load_client_part(&art).unwrap();
    assert!(spec.keys.rounding_bootstrap_key && spec.keys.result_keyswitch_key);
    assert_eq!((spec.keys.input_dimension, spec.output.result_form.key), (2048, ResultKey::Input));
    let part = spec.to_bytes();
    let client = Client::new(&part).unwrap();
    assert_eq!(client.spec(), &spec);
    let server = Server::new(&art, &client.evaluation_key()).unwrap();
    let px = pixels(784, 11);
    let res = server.classify(&client.encrypt(&px).unwrap()).unwrap();
    assert_eq!(client.decrypt(&res).unwrap().raw, want(&c, &px));
    // The same secret key serves a client of the full artifact.
    let full = Client::with_key(&art, &client.secret_key()).unwrap();
    assert_eq!(full.decrypt(&res).unwrap(), client.decrypt(&res).unwrap());
    // A client part is not a server's artifact, and neither is anything else a client part.
    let e = Server::new(&part, &client.evaluation_key()).err().expect("must fail").to_string();
    assert!(e.contains("holds a client part"), "{e}");
    let e = Client::new(&client.secret_key()).err().expect("must fail").to_string();
    assert_eq!(e, "not an fhec client part or artifact (bad magic bytes)");
    let e = Client::new(&part[..part.len() - 1]).err().expect("must fail").to_string();
    assert!(e.starts_with("client part: the file is truncated"), "{e}");
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
    let err = |b: &[u8]| client.decrypt(b).expect_err("must fail").to_string();

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
