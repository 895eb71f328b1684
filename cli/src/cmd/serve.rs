//! `fhec serve` (the HTTP service over full artifacts, `fhec_serve`) and `fhec serve-token`
//! (the admin command that creates a client's API token in the service's data directory).

use std::net::SocketAddr;
use std::path::PathBuf;

use std::time::Duration;

use anyhow::{Context, Result, bail};
use fhec_driver::progress::size;
use fhec_serve::{Config, Location, Model};

/// Serve models over HTTP: clients upload an evaluation key once, then submit encrypted images.
#[derive(clap::Args)]
pub struct Args {
    /// The models' full artifacts (`MODEL.fhec` from `fhec build`), each served under its file
    /// name without `.fhec`.
    #[arg(required = true, value_name = "ARTIFACT")]
    artifacts: Vec<PathBuf>,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:8710")]
    listen: SocketAddr,
    #[command(flatten)]
    store: StoreArgs,
    /// Jobs classified at once (each uses every thread of --threads).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Threads the classifications of this process use (default: one per core). Give each of
    /// several `fhec serve` processes on one machine its share of the cores, so they do not
    /// oversubscribe them.
    #[arg(long, value_parser = crate::args::at_least_one)]
    threads: Option<usize>,
    /// Jobs waiting at most; a submission beyond is refused (HTTP 429).
    #[arg(long, default_value_t = 64, value_parser = crate::args::at_least_one)]
    max_queue: usize,
    /// Largest evaluation key upload, in MiB (HTTP 413 beyond).
    #[arg(long, default_value_t = 2048, value_parser = crate::args::at_least_one)]
    max_key_mib: usize,
    /// Memory for the expanded evaluation keys kept loaded, in MiB (least recently used out;
    /// one key stays loaded whatever its size).
    #[arg(long, default_value_t = 8192)]
    key_memory_mib: usize,
    /// Seconds a running job's worker may go without renewing its lease before another worker
    /// (of this process or another one sharing the database) takes the job over.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(2..))]
    lease_seconds: u64,
    /// Hours a finished job's result is kept for its client; 0 keeps results until the
    /// client deletes them.
    #[arg(long, default_value_t = 24)]
    retention_hours: u64,
    /// Seconds a job may wait while workers prefer the jobs whose evaluation key their process
    /// has loaded (so that several processes sharing a database do not each load every
    /// client's key); 0 takes jobs oldest first.
    #[arg(long, default_value_t = 60)]
    key_affinity_seconds: u64,
    /// Requests a minute each client token may make, sustained (0: no limit); beyond, HTTP
    /// 429 with `Retry-After`. `/healthz` and `/metrics` are not limited. Polling a job
    /// every 0.2 s is 300 a minute.
    #[arg(long, default_value_t = 600)]
    rate_per_minute: u32,
    /// Requests a client token may make at once above the sustained rate (its bucket's size).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..))]
    burst: u32,
}

/// Where the service's state lives.
#[derive(clap::Args)]
pub struct StoreArgs {
    /// The data directory: job queue and key records (SQLite) and the key, image and result
    /// files. Created on first start, with an admin token printed once.
    #[arg(long, default_value = "fhec-data")]
    data: PathBuf,
    /// A PostgreSQL database instead of the data directory (`postgres://USER:PASSWORD@HOST/DB`):
    /// queue, key records and blobs in it, shared by every `fhec serve` process given the
    /// same URL. Read from FHEC_DATABASE_URL when not given (a password on the command line is
    /// visible in the process list).
    #[arg(long, env = "FHEC_DATABASE_URL", value_name = "URL", hide_env_values = true)]
    database: Option<String>,
}

impl StoreArgs {
    fn location(&self) -> Result<Location> {
        match &self.database {
            None => Ok(Location::Dir(self.data.clone())),
            Some(url) => match Location::parse(url) {
                l @ Location::Postgres(_) => Ok(l),
                Location::Dir(_) => bail!("--database takes a postgres:// URL, not {url:?} (a directory is --data)"),
            },
        }
    }
}

/// Manage the API tokens of `fhec serve`'s clients: create one (printed once; only its hash is
/// stored), list them, or revoke one.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("action").required(true).args(["name", "list", "revoke"])))]
pub struct TokenArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Create a token for the client NAME (unique).
    name: Option<String>,
    /// The new token is an admin's.
    #[arg(long, requires = "name")]
    admin: bool,
    /// List the tokens (names, not the tokens: only their hashes are stored), with each
    /// client's keys and jobs.
    #[arg(long, conflicts_with_all = ["name", "revoke"])]
    list: bool,
    /// Revoke the token of the client NAME: it no longer authenticates, and its keys, jobs and
    /// results are deleted.
    #[arg(long, value_name = "NAME", conflicts_with = "name")]
    revoke: Option<String>,
}

/// Runs `fhec serve` until Ctrl-C.
pub fn run(a: Args) -> Result<()> {
    let models = a
        .artifacts
        .iter()
        .map(|p| Model::load(p).with_context(|| format!("cannot serve {}", p.display())))
        .collect::<Result<Vec<_>>>()?;
    if let Some(n) = a.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("cannot size the classification thread pool")?;
    }
    let location = a.store.location()?;
    let config = Config {
        listen: a.listen,
        workers: a.workers,
        max_queue: a.max_queue,
        max_key_bytes: a.max_key_mib.saturating_mul(1 << 20),
        key_memory: a.key_memory_mib.saturating_mul(1 << 20),
        lease: Duration::from_secs(a.lease_seconds),
        retention: (a.retention_hours > 0).then(|| Duration::from_secs(a.retention_hours.saturating_mul(3600))),
        key_affinity: Duration::from_secs(a.key_affinity_seconds),
        rate_per_minute: a.rate_per_minute,
        burst: a.burst,
        ..Config::at(location.clone())
    };
    let token_command = match &location {
        Location::Dir(d) => format!("fhec serve-token --data {} NAME", d.display()),
        Location::Postgres(_) => "fhec serve-token --database URL NAME".to_string(),
    };
    fhec_serve::serve_blocking(config, models, |running| {
        for m in &running.state.models {
            println!(
                "model {}: {} bootstraps per image, evaluation key {}, encrypted image {}",
                m.name,
                m.bootstraps,
                size(m.key_bytes),
                size(m.image_bytes)
            );
        }
        println!("serving on http://{} (state in {}; Ctrl-C stops)", running.addr, running.state.store.place());
        if let Some(t) = &running.admin_token {
            println!("admin token (shown once, keep it): {t}");
            println!("create client tokens with `{token_command}`");
        }
    })
    .with_context(|| format!("cannot serve on {}", a.listen))
}

/// Runs `fhec serve-token`.
pub fn token(a: TokenArgs) -> Result<()> {
    let location = a.store.location()?;
    let place = location.to_string();
    if let Some(name) = &a.revoke {
        let found = fhec_serve::with_store_blocking(&location, async |s| s.revoke_token(name).await)
            .with_context(|| format!("cannot revoke a token in {place}"))?;
        if !found {
            bail!("no token named {name:?} in {place} (`fhec serve-token --list` lists them)");
        }
        eprintln!("token {name:?} revoked; its keys, jobs and results are deleted");
    } else if a.list {
        let tokens = fhec_serve::with_store_blocking(&location, async |s| s.tokens().await)
            .with_context(|| format!("cannot list the tokens in {place}"))?;
        println!("{:<24} {:>5} {:>6} {:>6}", "name", "admin", "keys", "jobs");
        for (name, admin, keys, jobs) in tokens {
            println!("{name:<24} {:>5} {keys:>6} {jobs:>6}", if admin { "yes" } else { "" });
        }
    } else if let Some(name) = &a.name {
        let t = fhec_serve::with_store_blocking(&location, async |s| s.create_token(name, a.admin).await)
            .with_context(|| format!("cannot create a token in {place}"))?;
        println!("{t}");
        eprintln!("token {name:?} created (shown once: only its hash is stored)");
    }
    Ok(())
}
