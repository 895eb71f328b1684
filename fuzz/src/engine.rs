//! The campaign engine: time-bounded, seeded, reproducible runs of one target.
//!
//! A campaign loads the target's seeds (the committed corpus `fuzz/corpus/TARGET/`, the
//! target's seed directories and the seeds it makes in code), runs each, then loops: pick
//! an input of the pool, mutate it (the target's structure-aware mutation or byte-level
//! havoc, half and half), run it under `catch_unwind`. An input whose outcome is new (a
//! new error message, digits aside, or a new kind of accepted value) joins the pool: a
//! cheap stand-in for coverage feedback. Every random choice comes from one Xoshiro256++
//! stream seeded by `--seed` and the target's name, so a campaign is reproducible (the
//! seeds made in code hold fresh key material, which no parser's control flow depends on).
//!
//! Findings: a panic, a broken property (the target's `Err`), a case whose heap peak
//! exceeds the memory budget, a case slower than the time budget. Each is saved as
//! `fuzz/crashes/TARGET-HASH.bin` (FNV-1a of the input) and replays with `fhec-fuzz replay`.

use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fhec_ir::framing::checksum;
use rand::{RngExt, SeedableRng};

use crate::alloc;
use crate::mutate::{self, Rng};
use crate::targets::{Outcome, Target};

/// Seed files larger than this are skipped.
pub const MAX_SEED_LEN: usize = 300_000;
/// Most inputs kept in the pool (seeds included).
const MAX_POOL: usize = 2048;

/// A campaign's budgets and places.
#[derive(Clone, Debug)]
pub struct Config {
    /// Wall-clock budget of the mutation loop (seeds always run).
    pub seconds: f64,
    /// Most mutated cases (`None`: as many as fit in the time).
    pub max_cases: Option<u64>,
    /// The random seed.
    pub seed: u64,
    /// The corpus root (`TARGET/` below it).
    pub corpus: PathBuf,
    /// Where findings are saved.
    pub crashes: PathBuf,
    /// Write inputs with a new outcome to the corpus (to grow it).
    pub save_new: bool,
    /// A case whose heap peak grows by more than this many bytes (plus 64 per input byte)
    /// is a finding.
    pub max_mem: usize,
    /// A case slower than this is a finding.
    pub slow: Duration,
    /// Print progress.
    pub verbose: bool,
}

impl Default for Config {
    fn default() -> Self {
        let root = crate::targets::repo_root();
        Config {
            seconds: 10.0,
            max_cases: None,
            seed: 0,
            corpus: root.join("fuzz/corpus"),
            crashes: root.join("fuzz/crashes"),
            save_new: false,
            max_mem: 256 << 20,
            slow: Duration::from_secs(10),
            verbose: false,
        }
    }
}

/// What kind of finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The parser panicked.
    Panic,
    /// A property broke (an error without a message, a failed round trip, ...).
    Property,
    /// The heap peak exceeded the budget.
    Memory,
    /// The case exceeded the time budget.
    Slow,
}

/// One finding.
#[derive(Clone, Debug)]
pub struct Finding {
    /// What happened.
    pub kind: Kind,
    /// The panic message, the property broken, or the measurement.
    pub message: String,
    /// The saved input.
    pub file: PathBuf,
}

/// A campaign's results.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The target.
    pub target: String,
    /// Cases run (seeds included).
    pub executions: u64,
    /// Seeds run first.
    pub seeds: usize,
    /// Cases accepted by the parser.
    pub accepted: u64,
    /// Distinct outcomes seen.
    pub outcomes: usize,
    /// Inputs in the pool at the end.
    pub pool: usize,
    /// Wall-clock seconds (seeds and setup included).
    pub seconds: f64,
    /// Slowest case.
    pub slowest: Duration,
    /// Largest heap growth of one case, bytes.
    pub peak_mem: usize,
    /// Findings (deduplicated by message).
    pub findings: Vec<Finding>,
}

impl Report {
    /// Executions per second.
    pub fn rate(&self) -> f64 {
        self.executions as f64 / self.seconds.max(1e-9)
    }
}

/// What running one input gave.
#[derive(Clone, Debug)]
pub enum CaseResult {
    /// The target's outcome.
    Done(Outcome),
    /// A broken property.
    Property(String),
    /// A panic: its message and location.
    Panic(String),
}

static IN_CASE: AtomicBool = AtomicBool::new(false);
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Installs a panic hook that records panics inside cases (silently; with a backtrace on
/// stderr when `FHEC_FUZZ_BACKTRACE` is set) and leaves others to the previous hook.
fn install_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_CASE.load(Ordering::SeqCst) {
                let msg = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(non-string panic)".into());
                let loc = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
                if std::env::var_os("FHEC_FUZZ_BACKTRACE").is_some() {
                    eprintln!("panic: {msg}{loc}\n{}", std::backtrace::Backtrace::force_capture());
                }
                let mut last = LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner());
                last.get_or_insert(format!("{msg}{loc}"));
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs one input through `target`, catching panics.
pub fn run_case(target: &dyn Target, input: &[u8]) -> CaseResult {
    install_hook();
    *LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()) = None;
    IN_CASE.store(true, Ordering::SeqCst);
    let r = catch_unwind(AssertUnwindSafe(|| target.run(input)));
    IN_CASE.store(false, Ordering::SeqCst);
    match r {
        Ok(Ok(o)) => CaseResult::Done(o),
        Ok(Err(p)) => CaseResult::Property(p),
        Err(_) => {
            let m = LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()).take();
            CaseResult::Panic(m.unwrap_or_else(|| "panic".into()))
        }
    }
}

/// The first 48 characters of a message with every word that holds a digit (numbers, hex,
/// shapes) as `#`, so that messages differing only in numbers count as one.
fn blur(m: &str) -> String {
    let mut out = String::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.chars().any(|c| c.is_ascii_digit()) {
            out.push('#');
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in m.chars().take(48) {
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// The feedback signal of an outcome: whether it was accepted and its blurred message.
fn signal(o: &Outcome) -> String {
    match o {
        Outcome::Accepted(m) => format!("ok {}", blur(m)),
        Outcome::Rejected(m) => format!("err {}", blur(m)),
    }
}

/// The file a finding of `target` with `input` is saved as.
pub fn crash_path(dir: &Path, target: &str, input: &[u8]) -> PathBuf {
    dir.join(format!("{target}-{:016x}.bin", checksum(input)))
}

/// Files of a directory, sorted by name (none if it does not exist).
pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// The seeds of a target: the committed corpus, its seed directories, its seeds in code.
pub fn load_seeds(target: &dyn Target, corpus: &Path) -> Vec<Vec<u8>> {
    let mut files = files_in(&corpus.join(target.name()));
    for d in target.seed_dirs() {
        files.extend(files_in(&d).into_iter().filter(|p| p.extension().is_some_and(|e| e == "onnx")));
    }
    let mut seeds: Vec<Vec<u8>> =
        files.iter().filter_map(|f| std::fs::read(f).ok()).filter(|b| b.len() <= MAX_SEED_LEN).collect();
    seeds.extend(target.seeds());
    seeds
}

struct Campaign<'a> {
    target: &'a dyn Target,
    cfg: &'a Config,
    report: Report,
    seen: HashSet<String>,
    found: HashSet<String>,
    pool: Vec<Vec<u8>>,
}

impl Campaign<'_> {
    fn execute(&mut self, input: &[u8], is_seed: bool) {
        let path = crash_path(&self.cfg.crashes, self.target.name(), input);
        alloc::set_current(Some((path.clone(), input)));
        let base = alloc::reset_peak();
        let t0 = Instant::now();
        let r = run_case(self.target, input);
        let dt = t0.elapsed();
        let grew = alloc::peak().saturating_sub(base);
        alloc::set_current(None);
        self.report.executions += 1;
        self.report.slowest = self.report.slowest.max(dt);
        self.report.peak_mem = self.report.peak_mem.max(grew);
        let mut finding = |kind: Kind, message: String| {
            // One finding per place (a panic's location) or per message, digits aside.
            let place = match message.rsplit_once(" at ") {
                Some((_, location)) => location.to_string(),
                None => blur(&message),
            };
            let key = format!("{kind:?}: {place}");
            if self.found.insert(key) {
                let _ = std::fs::create_dir_all(&self.cfg.crashes);
                let _ = std::fs::write(&path, input);
                if self.cfg.verbose {
                    eprintln!("[{}] {kind:?}: {message} -> {}", self.target.name(), path.display());
                }
                self.report.findings.push(Finding { kind, message, file: path.clone() });
            }
        };
        let budget = self.cfg.max_mem.saturating_add(64 * input.len());
        if alloc::installed() && grew > budget {
            finding(
                Kind::Memory,
                format!("a case grew the heap by {} MiB ({} bytes of input)", grew >> 20, input.len()),
            );
        }
        if dt > self.cfg.slow {
            finding(Kind::Slow, format!("a case took {:.1} s", dt.as_secs_f64()));
        }
        match r {
            CaseResult::Panic(m) => finding(Kind::Panic, m),
            CaseResult::Property(m) => finding(Kind::Property, m),
            CaseResult::Done(o) => {
                if matches!(o, Outcome::Accepted(_)) {
                    self.report.accepted += 1;
                }
                if self.seen.insert(signal(&o)) && !is_seed {
                    self.keep(input);
                }
            }
        }
    }

    fn keep(&mut self, input: &[u8]) {
        if self.cfg.save_new && input.len() <= 100_000 {
            let dir = self.cfg.corpus.join(self.target.name());
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(dir.join(format!("found-{:016x}", checksum(input))), input);
        }
        if self.pool.len() < MAX_POOL {
            self.pool.push(input.to_vec());
        } else {
            let i = self.report.seeds + (checksum(input) as usize) % (MAX_POOL - self.report.seeds).max(1);
            if i < self.pool.len() {
                self.pool[i] = input.to_vec();
            }
        }
    }
}

/// Runs a campaign of `target` under `cfg`.
pub fn run_campaign(target: &dyn Target, cfg: &Config) -> Report {
    let t0 = Instant::now();
    let mut c = Campaign {
        target,
        cfg,
        report: Report { target: target.name().into(), ..Report::default() },
        seen: HashSet::new(),
        found: HashSet::new(),
        pool: load_seeds(target, &cfg.corpus),
    };
    c.report.seeds = c.pool.len();
    for i in 0..c.pool.len() {
        let input = c.pool[i].clone();
        c.execute(&input, true);
    }
    if c.pool.is_empty() {
        c.pool.push(Vec::new());
    }
    let mut rng = Rng::seed_from_u64(cfg.seed ^ checksum(target.name().as_bytes()));
    let start = Instant::now();
    let mut cases = 0u64;
    let mut last_print = Instant::now();
    while start.elapsed().as_secs_f64() < cfg.seconds && cfg.max_cases.is_none_or(|m| cases < m) {
        let base = c.pool[rng.random_range(0..c.pool.len())].clone();
        let other = c.pool[rng.random_range(0..c.pool.len())].clone();
        let input = if rng.random_bool(0.5) {
            target.mutate(&base, &other, &mut rng).unwrap_or_else(|| mutate::havoc(&base, &other, &mut rng))
        } else {
            mutate::havoc(&base, &other, &mut rng)
        };
        c.execute(&input, false);
        cases += 1;
        if cfg.verbose && last_print.elapsed() > Duration::from_secs(30) {
            last_print = Instant::now();
            eprintln!(
                "[{}] {} cases, {:.0}/s, {} outcomes, {} findings",
                target.name(),
                c.report.executions,
                c.report.executions as f64 / t0.elapsed().as_secs_f64(),
                c.seen.len(),
                c.report.findings.len()
            );
        }
    }
    c.report.outcomes = c.seen.len();
    c.report.pool = c.pool.len();
    c.report.seconds = t0.elapsed().as_secs_f64();
    c.report
}

/// The target a saved input belongs to: by its file name (`TARGET-HASH.bin`) or its
/// directory (`corpus/TARGET/`).
pub fn target_of(file: &Path) -> Option<&'static dyn Target> {
    let name = file.file_name()?.to_str()?;
    let by_name = crate::targets::TARGETS
        .iter()
        .copied()
        .filter(|t| name.strip_prefix(t.name()).is_some_and(|rest| rest.starts_with('-')))
        .max_by_key(|t| t.name().len());
    by_name.or_else(|| crate::targets::target(file.parent()?.file_name()?.to_str()?))
}
