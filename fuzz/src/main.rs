//! `fhec-fuzz`: fuzzing campaigns over fhec's parsers of untrusted input (see the crate doc
//! of `fhec_fuzz`). `cargo fuzz-run` runs it in the release profile.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use fhec_fuzz::engine::{self, CaseResult, Config};
use fhec_fuzz::targets::{Outcome, TARGETS, Target, target};

#[global_allocator]
static ALLOC: fhec_fuzz::alloc::Counting = fhec_fuzz::alloc::Counting;

#[derive(Parser)]
#[command(name = "fhec-fuzz", about = "Fuzzing campaigns over fhec's parsers of untrusted input")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List the targets.
    List,
    /// Run time-bounded campaigns; exits with status 1 if anything is found.
    Run {
        /// A target name, or `all`.
        #[arg(long, default_value = "all")]
        target: String,
        /// Seconds of mutation per target (seeds run first, in addition).
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Most mutated cases per target.
        #[arg(long)]
        cases: Option<u64>,
        /// Random seed (with the target's name, fixes every choice of the campaign).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Corpus root (seeds in `DIR/TARGET/`).
        #[arg(long)]
        corpus: Option<PathBuf>,
        /// Where findings are saved.
        #[arg(long)]
        crashes: Option<PathBuf>,
        /// Save inputs with a new outcome into the corpus (to grow it).
        #[arg(long)]
        save_new: bool,
        /// Heap growth of one case (MiB, plus 64 bytes per input byte) that counts as a finding.
        #[arg(long, default_value_t = 256)]
        max_mem_mb: usize,
        /// Seconds of one case that count as a finding.
        #[arg(long, default_value_t = 10.0)]
        slow_secs: f64,
        /// Append the results as Markdown table rows to this file.
        #[arg(long)]
        log: Option<PathBuf>,
    },
    /// Run saved inputs (crash files, corpus files) and print what each does; exits with
    /// status 1 if any panics or breaks a property.
    Replay {
        /// The files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Their target (default: from `TARGET-HASH.bin` or the `corpus/TARGET/` directory).
        #[arg(long)]
        target: Option<String>,
    },
    /// Write every target's seeds made in code (and bundled-model artifacts) to the corpus.
    Corpus {
        /// A target name, or `all`.
        #[arg(long, default_value = "all")]
        target: String,
        /// Corpus root.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn targets(name: &str) -> Result<Vec<&'static dyn Target>> {
    if name == "all" {
        return Ok(TARGETS.to_vec());
    }
    name.split(',').map(|n| target(n).with_context(|| format!("no target '{n}' (see `fhec-fuzz list`)"))).collect()
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<bool> {
    match cli.cmd {
        Cmd::List => {
            for t in TARGETS {
                println!("{:<18} {}", t.name(), t.about());
            }
            Ok(true)
        }
        Cmd::Run { target, seconds, cases, seed, corpus, crashes, save_new, max_mem_mb, slow_secs, log } => {
            let d = Config::default();
            let cfg = Config {
                seconds,
                max_cases: cases,
                seed,
                corpus: corpus.unwrap_or(d.corpus),
                crashes: crashes.unwrap_or(d.crashes),
                save_new,
                max_mem: max_mem_mb << 20,
                slow: Duration::from_secs_f64(slow_secs),
                verbose: true,
            };
            let mut clean = true;
            let mut rows = String::new();
            println!(
                "target             | executions | seconds | exec/s | accepted | outcomes | findings | slowest s | peak MiB"
            );
            for t in targets(&target)? {
                let r = engine::run_campaign(t, &cfg);
                println!(
                    "{:<18} | {:>10} | {:>7.1} | {:>6.0} | {:>8} | {:>8} | {:>8} | {:>9.3} | {:>8}",
                    r.target,
                    r.executions,
                    r.seconds,
                    r.rate(),
                    r.accepted,
                    r.outcomes,
                    r.findings.len(),
                    r.slowest.as_secs_f64(),
                    r.peak_mem >> 20
                );
                for f in &r.findings {
                    println!("    {:?}: {} ({})", f.kind, f.message, f.file.display());
                }
                clean &= r.findings.is_empty();
                rows.push_str(&format!(
                    "| {} | {} | {:.0} | {:.0} | {} | {} | seed {seed} |\n",
                    r.target,
                    r.executions,
                    r.seconds,
                    r.rate(),
                    r.findings.len(),
                    r.findings.iter().map(|f| format!("{:?}: {}", f.kind, f.message)).collect::<Vec<_>>().join("; ")
                ));
            }
            if let Some(log) = log {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
                f.write_all(rows.as_bytes())?;
            }
            Ok(clean)
        }
        Cmd::Replay { files, target: name } => {
            // Replays print panics with the default hook too (set RUST_BACKTRACE=1 for a trace).
            let mut clean = true;
            for f in &files {
                let t = match &name {
                    Some(n) => target(n).with_context(|| format!("no target '{n}'"))?,
                    None => engine::target_of(f)
                        .with_context(|| format!("{}: cannot tell its target; give --target", f.display()))?,
                };
                let bytes = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
                let what = match engine::run_case(t, &bytes) {
                    CaseResult::Done(Outcome::Accepted(m)) => format!("accepted: {m}"),
                    CaseResult::Done(Outcome::Rejected(m)) => format!("refused: {m}"),
                    CaseResult::Property(m) => {
                        clean = false;
                        format!("PROPERTY BROKEN: {m}")
                    }
                    CaseResult::Panic(m) => {
                        clean = false;
                        format!("PANIC: {m}")
                    }
                };
                println!("{} [{}]: {what}", f.display(), t.name());
            }
            Ok(clean)
        }
        Cmd::Corpus { target, out } => {
            let out = out.unwrap_or(Config::default().corpus);
            for t in targets(&target)? {
                let files = fhec_fuzz::corpus::write(t, &out)?;
                let bytes: u64 = files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum();
                println!("{:<18} {} files, {} KiB", t.name(), files.len(), bytes / 1024);
            }
            Ok(true)
        }
    }
}
