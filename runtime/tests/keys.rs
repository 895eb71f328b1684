//! Evaluation keys between client and server: the seeded form (the keyswitch and bootstrap
//! keys' bodies plus the seeds of their masks; the server regenerates the masks and converts
//! the bootstrap key to the Fourier domain) bootstraps exactly as the full key, has exactly
//! the size the report announces, and bad keys are errors, never panics.

mod support;

use fhec_ir::circuit::{CNode, COp, Circuit, InputQuant, OutputQuant, Range, TableIndex};
use fhec_ir::params::{TfheParams, min_secure_std};
use fhec_runtime::app::{Client, Server};
use fhec_runtime::evaluation_key_bytes;
use fhec_runtime::fhe::files::{self, Kind, kind_of};
use fhec_runtime::fhe::test_support::noise_samples;
use fhec_runtime::fhe::{ClientKey, SeededServerKey, ServerKey};
use support::*;
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
        bootstrap: Some(fhec_ir::params::Decomposition { base_log: 12, level: 1 }),
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

/// Batched bootstrap costs (16 per blind rotation, one thread; what `evaluate` does) over
/// parameter sets spanning the search space, against `TfheParams::pbs_cost`: the data the
/// bootstrap part of the cost model is fitted on (a few minutes and about 5 GB of memory; run
/// on an idle machine in a release build, as `fhec_ir::cost` says: the test profile's
/// debug assertions in the FFT's dependencies make it about 15% slower).
#[test]
#[ignore]
fn bootstrap_costs_for_the_cost_model() {
    use fhec_runtime::fhe::test_support::OneBootstrap;
    let sets: [(usize, usize, usize, u32, u32); 12] = [
        (700, 1, 1024, 1, 20),
        (730, 1, 2048, 2, 16),
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
}

/// Keyswitch costs, 16 in one pass over the key (what `evaluate` does), against
/// `TfheParams::ks_cost`, over the decompositions the search picks (bases 2^1 to 2^3, 5 to 16
/// levels): the data the keyswitch part of the cost model is fitted on (run as
/// `bootstrap_costs_for_the_cost_model`).
#[test]
#[ignore]
fn keyswitch_costs_for_the_cost_model() {
    use fhec_runtime::fhe::test_support::OneBootstrap;
    for (n, big_n, ks_level, ks_base_log) in [
        (760, 2048, 8, 2),
        (740, 2048, 14, 1),
        (740, 2048, 16, 1),
        (760, 2048, 6, 3),
        (860, 4096, 5, 3),
        (830, 4096, 8, 2),
        (800, 4096, 16, 1),
        (890, 8192, 9, 2),
    ] {
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
        // Both cores at once, each keyswitching its own batches (as `evaluate` does a
        // layer's): the key streams from memory twice at the same time.
        let mut other = OneBootstrap::new(&sk, 2);
        let both = median_ms_per_16(7, &mut || {
            std::thread::scope(|s| {
                s.spawn(|| other.keyswitch(&ct));
                one.keyswitch(&ct);
            })
        });
        eprintln!(
            "COST KS n={n} kN={big_n} {ks_level}x2^{ks_base_log}: {ms:.3} ms per keyswitch alone, {both:.3} ms per pair on two cores, model {:.3} ms",
            p.ks_cost()
        );
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

/// INSECURE toy parameters (an 8-coefficient small key, a 64-coefficient GLWE key, with or
/// without a 32-coefficient rounding key and the result keyswitch key it brings): only for
/// the full evaluation key's file layout, which does not depend on the parameters' security.
fn insecure_toy_params(round_key: bool) -> TfheParams {
    TfheParams {
        lwe_dimension: 8,
        glwe_dimension: 1,
        polynomial_size: 64,
        lwe_noise_std: 1e-15,
        glwe_noise_std: 1e-15,
        pbs_base_log: 12,
        pbs_level: 2,
        ks_base_log: 4,
        ks_level: 3,
        round_key: round_key.then_some(fhec_ir::params::RoundKeyParams {
            glwe_dimension: 1,
            polynomial_size: 32,
            glwe_noise_std: 1e-15,
            bootstrap: Some(fhec_ir::params::Decomposition { base_log: 12, level: 1 }),
        }),
    }
}

/// The full evaluation key goes through tfhe-rs's deserializers only after a shadow of its
/// layout matches the parameters (`fhe::layout`): real keys round-trip, and any word of the
/// value set to a huge number (a length, a dimension, a polynomial size; the frame made
/// sound again) is refused or still a key of the right shape, never a panic or an
/// allocation of what the word claims. Under INSECURE toy parameters (see above).
#[test]
fn full_evaluation_keys_round_trip_and_bad_layouts_are_errors_under_insecure_toy_parameters() {
    for round in [false, true] {
        let p = insecure_toy_params(round);
        let sk = ClientKey::generate(&p).server_key();
        let b = sk.to_bytes();
        let back = ServerKey::from_bytes(&b, &p).unwrap();
        assert_eq!(back.to_bytes(), b, "round key: {round}");
        let format = Kind::ServerKey.format();
        let payload = format.unframe(&b).unwrap().to_vec();
        let mut refused = 0;
        // Every 8-byte word of the value's first 2 KiB (dimensions and lengths lead each key),
        // and of its last 400 bytes (the trailing dimensions and optional keys).
        let words = (16..payload.len() - 8).filter(|i| (i - 16) % 8 == 0 && (*i < 2048 || *i + 400 > payload.len()));
        for i in words {
            for v in [0u64, 1 << 40, u64::MAX] {
                let mut bad = payload.clone();
                bad[i..i + 8].copy_from_slice(&v.to_le_bytes());
                if ServerKey::from_bytes(&format.frame(&bad), &p).is_err() {
                    refused += 1;
                }
            }
        }
        // (Most words are key data: a key of the right shape with other data is still a key.)
        assert!(refused > 20, "only {refused} corrupted keys refused (round key: {round})");
    }
}
