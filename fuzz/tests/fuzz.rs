//! The bounded CI campaign: every target for a few seconds (seeds first, then mutations,
//! with a fixed seed), and a replay of the committed corpus and of every saved crash
//! (`fuzz/crashes/`, the regression inputs of fixed bugs). The longer campaign is
//! `cargo fuzz-run` (see the README).
//!
//! The tests share the process-wide panic hook and heap counters, so they run one at a
//! time (`SERIAL`).

use std::sync::Mutex;
use std::time::Instant;

use fhec_fuzz::engine::{self, CaseResult, Config};
use fhec_fuzz::targets::{TARGETS, Target, repo_root, target};

#[global_allocator]
static ALLOC: fhec_fuzz::alloc::Counting = fhec_fuzz::alloc::Counting;

static SERIAL: Mutex<()> = Mutex::new(());

/// Seconds of mutation per target: all targets together stay well under two minutes in
/// the dev profile on two cores.
const SECONDS: f64 = 3.0;

fn campaign(t: &dyn Target) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cfg = Config { seconds: SECONDS, max_cases: Some(200_000), seed: 23, ..Config::default() };
    let r = engine::run_campaign(t, &cfg);
    eprintln!(
        "{}: {} executions in {:.1} s ({} seeds, {} accepted, {} outcomes, slowest {:.2} s, peak {} MiB)",
        r.target,
        r.executions,
        r.seconds,
        r.seeds,
        r.accepted,
        r.outcomes,
        r.slowest.as_secs_f64(),
        r.peak_mem >> 20
    );
    let findings: Vec<String> =
        r.findings.iter().map(|f| format!("{:?}: {} (saved as {})", f.kind, f.message, f.file.display())).collect();
    assert!(findings.is_empty(), "{}: {findings:#?}", r.target);
    // A stale seed corpus (a format changed) would leave the target fuzzing only its first checks.
    assert!(
        r.accepted > 0,
        "{}: no seed or mutation was accepted: regenerate the corpus (`fhec-fuzz corpus`)",
        r.target
    );
}

macro_rules! campaigns {
    ($($test:ident => $name:literal),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                campaign(target($name).expect($name));
            }
        )*

        #[test]
        fn every_target_has_a_campaign() {
            let tested = [$($name),*];
            for t in TARGETS {
                assert!(tested.contains(&t.name()), "target {} has no test here", t.name());
            }
        }
    };
}

campaigns! {
    onnx => "onnx",
    artifact => "artifact",
    client_part => "client-part",
    client_key => "client-key",
    server_key => "server-key",
    seeded_server_key => "seeded-server-key",
    ciphertext => "ciphertext",
    seeded_image => "seeded-image",
    compact_result => "compact-result",
    client_decrypt => "client-decrypt",
    server_classify => "server-classify",
    idx => "idx",
    png => "png",
    pgm => "pgm",
    npy => "npy",
}

#[test]
fn corpus_and_crashes_replay_cleanly() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let root = repo_root().join("fuzz");
    let mut files = engine::files_in(&root.join("crashes"));
    for t in TARGETS {
        files.extend(engine::files_in(&root.join("corpus").join(t.name())));
    }
    let mut broken = vec![];
    for f in &files {
        if f.extension().is_some_and(|e| e == "md") {
            continue;
        }
        let t = engine::target_of(f).unwrap_or_else(|| panic!("{}: no target of that name", f.display()));
        let bytes = std::fs::read(f).unwrap();
        match engine::run_case(t, &bytes) {
            CaseResult::Done(_) => {}
            CaseResult::Property(m) | CaseResult::Panic(m) => broken.push(format!("{}: {m}", f.display())),
        }
    }
    eprintln!("replayed {} files in {:.1} s", files.len(), t0.elapsed().as_secs_f64());
    assert!(broken.is_empty(), "{broken:#?}");
}
