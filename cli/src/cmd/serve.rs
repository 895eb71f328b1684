//! `fhec serve` (the HTTP service over full artifacts, `fhec_serve`) and `fhec serve-token`
//! (the admin command that creates a client's API token in the service's data directory).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use fhec_driver::progress::size;
use fhec_serve::{Config, Model};

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
    /// The data directory: job queue and key records (SQLite) and the key, image and result
    /// files. Created on first start, with an admin token printed once.
    #[arg(long, default_value = "fhec-data")]
    data: PathBuf,
    /// Jobs classified at once (each uses every core).
    #[arg(long, default_value_t = 1)]
    workers: usize,
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
    /// Requests a minute each client token may make, sustained (0: no limit); beyond, HTTP
    /// 429 with `Retry-After`. `/healthz` and `/metrics` are not limited. Polling a job
    /// every 0.2 s is 300 a minute.
    #[arg(long, default_value_t = 600)]
    rate_per_minute: u32,
    /// Requests a client token may make at once above the sustained rate (its bucket's size).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..))]
    burst: u32,
}

/// Create an API token for a client of `fhec serve` (prints it once; only its hash is stored).
#[derive(clap::Args)]
pub struct TokenArgs {
    /// The service's data directory (as given to `fhec serve --data`).
    #[arg(long, default_value = "fhec-data")]
    data: PathBuf,
    /// The client's name (unique).
    name: String,
    /// An admin token.
    #[arg(long)]
    admin: bool,
}

/// Runs `fhec serve` until Ctrl-C.
pub fn run(a: Args) -> Result<()> {
    let models = a
        .artifacts
        .iter()
        .map(|p| Model::load(p).with_context(|| format!("cannot serve {}", p.display())))
        .collect::<Result<Vec<_>>>()?;
    let config = Config {
        listen: a.listen,
        data: a.data.clone(),
        workers: a.workers,
        max_queue: a.max_queue,
        max_key_bytes: a.max_key_mib.saturating_mul(1 << 20),
        key_memory: a.key_memory_mib.saturating_mul(1 << 20),
        rate_per_minute: a.rate_per_minute,
        burst: a.burst,
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
        println!("serving on http://{} (data in {}; Ctrl-C stops)", running.addr, a.data.display());
        if let Some(t) = &running.admin_token {
            println!("admin token (shown once, keep it): {t}");
            println!("create client tokens with `fhec serve-token --data {} NAME`", a.data.display());
        }
    })
    .with_context(|| format!("cannot serve on {}", a.listen))
}

/// Runs `fhec serve-token`.
pub fn token(a: TokenArgs) -> Result<()> {
    let t = fhec_serve::create_token_blocking(&a.data, &a.name, a.admin)
        .with_context(|| format!("cannot create a token in {}", a.data.display()))?;
    println!("{t}");
    eprintln!("token {:?} created (shown once: only its hash is stored)", a.name);
    Ok(())
}
