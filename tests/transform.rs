//! The keyed image transforms (`fhec_ir::transform`) against the committed fixture
//! `tests/fixtures/transforms.json`, and the Python mirror `examples/train/transforms.py`
//! against the same fixture, so that images transformed for training in Python and by a
//! client in Rust agree byte for byte.
//!
//! The fixture is regenerated (only when the transforms change on purpose, which changes
//! every key's images) with `FHEC_UPDATE_FIXTURES=1 cargo test --workspace --test transform`.
//! The Python check runs with the interpreter `FHEC_TEST_PYTHON` names (`.ci/run` installs
//! Debian's numpy and sets it), else with `python3` when it imports numpy, else it is
//! skipped with a message.

use std::path::PathBuf;
use std::process::Command;

use fhec_ir::transform::{Transform, TransformKey};
use serde_json::{Value, json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn fixture_path() -> PathBuf {
    root().join("tests/fixtures/transforms.json")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A fixed key: bytes `31·seed + 17·i` (seed 0 with `i` itself: the unit tests' key).
fn key(seed: u32) -> TransformKey {
    TransformKey::from_bytes(std::array::from_fn(
        |i| if seed == 0 { i as u8 } else { (31 * seed + 17 * i as u32) as u8 },
    ))
}

/// A fixed image of `h x w` pixels (an LCG's top bytes).
fn image(seed: u64, h: usize, w: usize) -> Vec<u8> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..h * w)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 56) as u8
        })
        .collect()
}

/// The fixture's cases: every scheme at several block and image sizes, under several keys.
fn cases() -> Vec<(Transform, u32, usize, usize, Vec<u8>)> {
    let hand = |h, w| (0..h * w).map(|i| (16 * i + 1) as u8).collect::<Vec<u8>>();
    let e = |b| Transform::Etc { block: b };
    let t = |b| Transform::Tanaka { block: b };
    vec![
        (e(2), 0, 4, 4, vec![11, 12, 13, 14, 21, 22, 23, 24, 31, 32, 33, 34, 41, 42, 43, 44]),
        (Transform::Skk, 0, 3, 5, hand(3, 5)),
        (t(2), 0, 2, 4, vec![0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0]),
        (e(1), 1, 3, 5, image(1, 3, 5)),
        (e(4), 2, 8, 12, image(2, 8, 12)),
        (e(7), 3, 28, 28, image(3, 28, 28)),
        (e(4), 4, 28, 28, image(4, 28, 28)),
        (e(28), 5, 28, 28, image(5, 28, 28)),
        (Transform::Skk, 1, 1, 1, vec![200]),
        (Transform::Skk, 3, 28, 28, image(6, 28, 28)),
        (t(1), 1, 3, 5, image(7, 3, 5)),
        (t(4), 3, 28, 28, image(8, 28, 28)),
        (t(7), 2, 14, 21, image(9, 14, 21)),
    ]
}

/// The fixture as this build computes it.
fn expected() -> Value {
    let cases: Vec<Value> = cases()
        .into_iter()
        .map(|(t, k, h, w, img)| {
            let out = t.apply(&key(k), &img, h, w).unwrap();
            json!({
                "scheme": t.to_string(),
                "key": hex(key(k).bytes()),
                "h": h,
                "w": w,
                "shape": t.output_shape(h, w).unwrap(),
                "image": hex(&img),
                "output": hex(&out),
            })
        })
        .collect();
    json!({
        "about": "fhec_ir::transform outputs (hex bytes; output channel-major), checked by tests/transform.rs in Rust and by examples/train/transforms.py --check in Python; regenerate with FHEC_UPDATE_FIXTURES=1 cargo test --workspace --test transform",
        "key_file": { "key": hex(key(7).bytes()), "file": hex(&key(7).to_file_bytes()) },
        "cases": cases,
    })
}

#[test]
fn rust_matches_the_fixture() {
    let want = expected();
    let path = fixture_path();
    if std::env::var_os("FHEC_UPDATE_FIXTURES").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(&want).unwrap() + "\n").unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let got: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(got["key_file"], want["key_file"], "the key file's bytes changed");
    let (got, want) = (got["cases"].as_array().unwrap(), want["cases"].as_array().unwrap());
    assert_eq!(got.len(), want.len(), "case count");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g, w, "{} on {}x{}: this build differs from the fixture", w["scheme"], w["h"], w["w"]);
    }
    // The fixture's outputs invert to their images.
    for c in got {
        let t: Transform = c["scheme"].as_str().unwrap().parse().unwrap();
        let bytes = |f: &str| -> Vec<u8> {
            let s = c[f].as_str().unwrap();
            (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
        };
        let k: [u8; 32] = bytes("key").try_into().unwrap();
        let (h, w) = (c["h"].as_u64().unwrap() as usize, c["w"].as_u64().unwrap() as usize);
        assert_eq!(t.invert(&TransformKey::from_bytes(k), &bytes("output"), h, w).unwrap(), bytes("image"), "{t}");
    }
}

/// The interpreter to run the Python mirror with, or why there is none.
fn python() -> Result<String, String> {
    if let Ok(p) = std::env::var("FHEC_TEST_PYTHON") {
        return Ok(p);
    }
    match Command::new("python3").args(["-c", "import numpy"]).output() {
        Ok(o) if o.status.success() => Ok("python3".into()),
        Ok(_) => Err("python3 cannot import numpy".into()),
        Err(e) => Err(format!("cannot run python3: {e}")),
    }
}

#[test]
fn python_matches_the_fixture() {
    let py = match python() {
        Ok(p) => p,
        Err(why) => {
            eprintln!("{why} and FHEC_TEST_PYTHON is not set: the Python mirror is not checked");
            return;
        }
    };
    let script = root().join("examples/train/transforms.py");
    let o = Command::new(&py)
        .arg(&script)
        .arg("--check")
        .arg(fixture_path())
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {py}: {e}"));
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{} --check failed:\n{out}{err}", script.display());
    assert!(out.contains("cases agree with fhec byte for byte"), "{out}");
}
